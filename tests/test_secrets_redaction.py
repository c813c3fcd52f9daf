"""Secrets stay out of everything the responder keeps or shows; the config refuses shared keys.

A node's error answer may echo the request (keystores, passwords) or the token: reasons keep the
status code and at most a scrubbed summary. URLs with `user:password@` are refused at start-up,
since URLs appear in events, the journal, logs, the API and the state database.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from responder.clock import ManualClock
from responder.config import (
    ConfigError,
    HttpDriverConfig,
    KeymanagerDriverConfig,
    PairConfig,
    load_config,
    parse_config,
)
from responder.drivers import ActionContext, DriverError
from responder.drivers.http import HttpDriver
from responder.drivers.keymanager import HISTORY_KEY, KeymanagerDriver
from responder.drivers.transport import SUMMARY_CHARS
from tests.conftest import Harness, alert, base_config, notification, write_config
from tests.tokens import NODE_TOKEN

ROOT = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"
KEYS = ["0x" + c * 96 for c in ("a", "b")]
KS = "/eth/v1/keystores"
PASSWORDS = [f"correct-horse-battery-{i}" for i in range(len(KEYS))]
CIPHERTEXTS = [hashlib.sha256(f"ciphertext-{i}".encode()).hexdigest() for i in range(len(KEYS))]
SALTS = [hashlib.sha256(f"salt-{i}".encode()).hexdigest() for i in range(len(KEYS))]
SECRETS = [*PASSWORDS, *CIPHERTEXTS, *SALTS, NODE_TOKEN]


def keystore(i: int) -> dict[str, Any]:
    """An EIP-2335 keystore shaped like the real thing (scrypt, aes-128-ctr)."""
    return {
        "crypto": {
            "kdf": {
                "function": "scrypt",
                "params": {"dklen": 32, "n": 262144, "p": 1, "r": 8, "salt": SALTS[i]},
                "message": "",
            },
            "checksum": {"function": "sha256", "params": {}, "message": "9f" * 32},
            "cipher": {
                "function": "aes-128-ctr",
                "params": {"iv": "0a" * 16},
                "message": CIPHERTEXTS[i],
            },
        },
        "description": "",
        "pubkey": KEYS[i][2:],
        "path": f"m/12381/3600/{i}/0/0",
        "uuid": f"00000000-0000-4000-8000-00000000000{i}",
        "version": 4,
    }


def history(pubkeys: list[str] = KEYS) -> str:
    return json.dumps(
        {
            "metadata": {"interchange_format_version": "5", "genesis_validators_root": ROOT},
            "data": [
                {
                    "pubkey": k,
                    "signed_blocks": [{"slot": "38405"}],
                    "signed_attestations": [{"source_epoch": "1199", "target_epoch": "1200"}],
                }
                for k in pubkeys
            ],
        }
    )


def ethereum_section(tmp_path: Path) -> dict[str, Any]:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(exist_ok=True)
    entries = []
    for i, key in enumerate(KEYS):
        ks, pw = keys_dir / f"keystore-{i}.json", keys_dir / f"password-{i}.txt"
        ks.write_text(json.dumps(keystore(i)))
        pw.write_text(PASSWORDS[i] + "\n")
        ks.chmod(0o600)
        pw.chmod(0o600)
        entries.append({"pubkey": key, "keystore_file": str(ks), "password_file": str(pw)})
    return {"genesis_validators_root": ROOT, "pubkeys": KEYS, "keystores": entries}


def keymanager_nodes(url: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "match": {"node": name},
            "driver": {
                "type": "ethereum-keymanager",
                "url": url(name),
                "token_file": "./secrets/node-token",
                "timeout": "1s",
            },
        }
        for name in ("node-a", "node-b")
    ]


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


# ---- the drivers' reasons -------------------------------------------------------------------


def echo(status: int, style: str):
    """A fake node answering `status`, echoing the request back (a real failure mode)."""

    def handle(request: Request) -> Response:
        sent = request.get_data(as_text=True)
        auth = request.headers.get("Authorization", "")
        if style == "raw":
            return Response(sent + auth, status=status, mimetype="text/plain")
        if style == "message":
            out = {"message": f"cannot import: {sent} ({auth})"}
        elif style == "prose":  # no JSON to cut at: the secrets sit in a sentence
            body = json.loads(sent) if sent else {}
            words = " ".join([*body.get("passwords", []), *CIPHERTEXTS, *SALTS])
            out = {"message": f"decryption failed with password {words} token {auth}"}
        else:  # a message made of nothing but a long secret-looking run
            out = {"message": " ".join([*CIPHERTEXTS, *SALTS, auth.removeprefix("Bearer ")])}
        return Response(json.dumps(out), status=status, mimetype="application/json")

    return handle


def keymanager_driver(tmp_path: Path, url: str) -> KeymanagerDriver:
    token = tmp_path / "node-token"
    token.write_text(NODE_TOKEN + "\n")
    nodes = keymanager_nodes(lambda _name: url)
    for node in nodes:
        node["driver"]["token_file"] = str(token)
    pair = PairConfig.model_validate(
        {
            "name": "p",
            "nodes": nodes,
            "policy": {"triggers": ["X"]},
            "ethereum": ethereum_section(tmp_path),
        }
    )
    assert isinstance(pair.nodes[1].driver, KeymanagerDriverConfig)
    return KeymanagerDriver("node-b", pair.nodes[1].driver, pair)


CTX = ActionContext(
    pair="p",
    node="node-b",
    failover_id="p-1",
    source="node-a",
    target="node-b",
    reason="test",
    handoff={HISTORY_KEY: history()},
)


@pytest.mark.parametrize("style", ["raw", "message", "prose", "runs"])
@pytest.mark.parametrize("status", [400, 500])
@pytest.mark.parametrize("method", ["POST", "DELETE", "GET"])
def test_keymanager_error_echo_leaks_no_secret(
    httpserver: HTTPServer, tmp_path: Path, method: str, status: int, style: str
) -> None:
    """A keymanager error answer echoing the request (keystores, passwords, token) leaves none of them in the DriverError."""
    httpserver.expect_request(KS, method=method).respond_with_handler(echo(status, style))
    driver = keymanager_driver(tmp_path, httpserver.url_for(""))
    call = {"POST": lambda: driver.activate(CTX), "DELETE": lambda: driver.fence(CTX)}
    with pytest.raises(DriverError) as info:
        call.get(method, driver.status)()
    text = f"{info.value} {info.value!r}"
    assert f"{method} {httpserver.url_for(KS)} answered {status}" in text
    assert leaks(text) == []
    assert len(str(info.value)) < 200 + SUMMARY_CHARS
    if method == "POST":  # the request really carried the secrets the answer echoed
        [(request, _)] = httpserver.log
        sent = request.get_data(as_text=True)
        assert all(s in sent for s in [*PASSWORDS, *CIPHERTEXTS])


def test_keymanager_error_keeps_a_harmless_message(httpserver: HTTPServer, tmp_path: Path) -> None:
    """A plain error message is still reported, short and quoted, next to the status code."""
    httpserver.expect_request(KS, method="GET").respond_with_json(
        {"message": "database locked\nretry later"}, status=503
    )
    with pytest.raises(DriverError) as info:
        keymanager_driver(tmp_path, httpserver.url_for("")).status()
    assert str(info.value).endswith("answered 503: 'database locked retry later'")


@pytest.mark.parametrize("style", ["raw", "message", "prose", "runs"])
def test_http_agent_error_echo_leaks_no_secret(
    httpserver: HTTPServer, tmp_path: Path, style: str
) -> None:
    """An http agent's error answer echoing the request and token leaves no token in the DriverError."""
    token = tmp_path / "token"
    token.write_text(NODE_TOKEN)
    httpserver.expect_request("/fence", method="POST").respond_with_handler(echo(500, style))
    driver = HttpDriver(
        "node-a", HttpDriverConfig(type="http", url=httpserver.url_for(""), token_file=token)
    )
    with pytest.raises(DriverError) as info:
        driver.fence(CTX)
    assert "answered 500" in str(info.value)
    assert NODE_TOKEN not in f"{info.value} {info.value!r}"


# ---- a whole failover -----------------------------------------------------------------------


class Node:
    """One fake validator client: what it holds, and a POST answered `status`, echoing."""

    def __init__(self, loaded: list[str], post_status: int = 200, post_style: str = "") -> None:
        self.loaded = list(loaded)
        self.post_status = post_status
        self.post_style = post_style
        self.posted: list[str] = []

    def handle(self, request: Request) -> Response:
        body = json.loads(request.get_data()) if request.get_data() else None
        if request.method == "GET":
            out: dict[str, Any] = {
                "data": [
                    {"validating_pubkey": k, "derivation_path": "", "readonly": False}
                    for k in self.loaded
                ]
            }
        elif request.method == "DELETE":
            held = [k for k in body["pubkeys"] if k in self.loaded]
            self.loaded = [k for k in self.loaded if k not in body["pubkeys"]]
            statuses = ["deleted" if k in held else "not_active" for k in body["pubkeys"]]
            out = {
                "data": [{"status": s, "message": ""} for s in statuses],
                "slashing_protection": history(),
            }
        else:
            self.posted.append(request.get_data(as_text=True))
            if self.post_status != 200:
                return echo(self.post_status, self.post_style)(request)
            self.loaded += ["0x" + json.loads(k)["pubkey"] for k in body["keystores"]]
            out = {"data": [{"status": "imported", "message": ""} for _ in body["keystores"]]}
        return Response(json.dumps(out), status=200, mimetype="application/json")


def _everything_kept(h: Harness, failover_id: str, caplog: pytest.LogCaptureFixture) -> str:
    """Every place a secret could end up: events, journal, API answers, logs, metrics, SQLite."""
    parts = [
        json.dumps(h.events()),
        json.dumps([j.to_json() for j in h.store.journal(failover_id)]),
        h.op("GET", "/api/v1/pairs").get_data(as_text=True),
        h.op("GET", "/api/v1/events").get_data(as_text=True),
        h.op("GET", f"/api/v1/failovers/{failover_id}").get_data(as_text=True),
        h.client.get("/metrics").get_data(as_text=True),
    ]
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.__dict__))
    parts.append(caplog.text)
    db = h.config.db_path
    for file in db.parent.glob(db.name + "*"):  # the database and its WAL
        parts.append(file.read_bytes().decode("latin-1"))
    return "\n".join(parts)


@pytest.mark.parametrize(
    ("status", "style"), [(500, "prose"), (400, "message"), (400, "raw"), (200, "")]
)
def test_failover_leaks_no_password_anywhere(
    tmp_path: Path,
    clock: ManualClock,
    httpserver: HTTPServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    style: str,
) -> None:
    """A failover whose POST fails with an echo of the keystores and passwords (or succeeds) leaves no password, keystore or token in events, journal, API, logs, metrics or SQLite."""
    monkeypatch.setattr(logging.getLogger("responder"), "propagate", True)
    caplog.set_level(logging.DEBUG)
    node_a, node_b = Node(KEYS), Node([], post_status=status, post_style=style)
    for name, node in (("node-a", node_a), ("node-b", node_b)):
        httpserver.expect_request(f"/{name}{KS}").respond_with_handler(node.handle)
    data = base_config(
        lambda n: "unused",
        nodes=keymanager_nodes(lambda n: httpserver.url_for(f"/{n}")),
        pair={"ethereum": ethereum_section(tmp_path)},
    )
    h = Harness(load_config(write_config(tmp_path, data)), clock)
    try:
        h.post_alert(notification(alert()))
        h.responder.step()
        clock.advance(21)
        [failover] = h.responder.step()
        assert node_b.posted and all(p in node_b.posted[0] for p in PASSWORDS)
        if status == 200:
            assert failover.step.value == "done", failover.outcome_reason
        else:
            assert failover.step.value == "failed"
            assert f"answered {status}" in (failover.outcome_reason or "")
        kept = _everything_kept(h, failover.id, caplog)
    finally:
        h.store.close()
    assert "node-a" in kept and caplog.records  # the trail is really there
    assert leaks(kept) == []


# ---- the config -------------------------------------------------------------------------------


def _config(tmp_path: Path) -> dict[str, Any]:
    return base_config(lambda n: f"http://10.0.0.1/{n}")


def _with(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    where: Any = data
    for part in parents:
        where = where[int(part)] if part.isdigit() else where[part]
    where[last] = value
    return data


def _ethereum_pair(tmp_path: Path, **ethereum: Any) -> dict[str, Any]:
    data = base_config(
        lambda n: "unused",
        nodes=keymanager_nodes(lambda n: f"http://10.0.0.1/{n}"),
        pair={"ethereum": ethereum_section(tmp_path) | ethereum},
    )
    return data


PASSWORD_URL = "http://admin:S3cretPDU@10.0.0.9/outlets/7/off"


@pytest.mark.parametrize(
    ("build", "key_path", "advice"),
    [
        (
            lambda t: _with(_config(t), "pairs.0.nodes.0.driver.url", PASSWORD_URL),
            "pairs[0].nodes[0].driver.url",
            "use token_file",
        ),
        (
            lambda t: _with(
                _config(t),
                "pairs.0.nodes.1.fence_levels",
                [{"type": "http", "url": PASSWORD_URL}],
            ),
            "pairs[0].nodes[1].fence_levels[0].url",
            "use token_file, or a `command` level",
        ),
        (
            lambda t: _with(_ethereum_pair(t), "pairs.0.nodes.0.driver.url", PASSWORD_URL),
            "pairs[0].nodes[0].driver.url",
            "use token_file",
        ),
        (
            lambda t: _ethereum_pair(
                t,
                without_history="liveness",
                liveness={
                    "beacon_url": "https://u:S3cretPDU@10.0.0.30:5052",
                    "validator_indices": [1],
                },
            ),
            "pairs[0].ethereum.liveness.beacon_url",
            "use token_file",
        ),
        (
            lambda t: _ethereum_pair(
                t, remote_signer_url="https://signer:S3cretPDU@10.0.0.40:9000"
            ),
            "pairs[0].ethereum.remote_signer_url",
            "sent to the validator clients",
        ),
    ],
    ids=["driver-url", "fence-level-url", "keymanager-url", "beacon-url", "remote-signer-url"],
)
def test_password_in_a_configured_url_is_refused(
    tmp_path: Path, build: Any, key_path: str, advice: str
) -> None:
    """A URL with user:password@ is refused with an error naming its key path, never repeating the password."""
    with pytest.raises(ConfigError) as info:
        parse_config(build(tmp_path), tmp_path)
    [problem] = [p for p in info.value.problems if p.startswith(key_path + ":")]
    assert "must not contain a user or password" in problem and advice in problem
    assert "S3cretPDU" not in str(info.value)


def test_url_with_an_at_sign_in_its_path_is_accepted(tmp_path: Path) -> None:
    """Only the authority is checked: '@' in a path or query is not a password."""
    data = _with(_config(tmp_path), "pairs.0.nodes.0.driver.url", "http://10.0.0.1/api/@node?x=a@b")
    assert parse_config(data, tmp_path).pairs[0].nodes[0].driver.url.endswith("?x=a@b")  # type: ignore[union-attr]


def test_same_pubkey_in_two_pairs_is_refused(tmp_path: Path) -> None:
    """A validator key listed in two pairs is refused, the error naming the key and both pairs."""
    first = _ethereum_pair(tmp_path)["pairs"][0]
    second = copy.deepcopy(first) | {"name": "mainnet-b"}
    second["ethereum"] = dict(second["ethereum"])
    second["ethereum"]["pubkeys"] = [KEYS[1].upper().replace("0X", "0x"), "0x" + "c" * 96]
    second["ethereum"]["keystores"] = []
    for node in second["nodes"]:
        node["driver"]["mode"] = "remote"
        node["match"] = {"node": node["name"] + "-b"}
        node["driver"]["url"] += "-b"  # two pairs never share a node
    second["ethereum"]["remote_signer_url"] = "https://10.0.0.40:9000"
    data = _ethereum_pair(tmp_path) | {"pairs": [first, second]}
    with pytest.raises(ConfigError) as info:
        parse_config(data, tmp_path)
    [problem] = [p for p in info.value.problems if KEYS[1] in p]
    assert problem.startswith("pairs:")
    assert f"{KEYS[1]} is in pairs mainnet-a and mainnet-b" in problem
    assert KEYS[0] not in problem  # only the shared key is named
    second["ethereum"]["pubkeys"] = ["0x" + "c" * 96]  # the pairs now share nothing
    assert len(parse_config(data | {"pairs": [first, second]}, tmp_path).pairs) == 2
