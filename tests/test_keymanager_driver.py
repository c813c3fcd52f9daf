"""The ethereum-keymanager driver against spec-checked fake Keymanager APIs (ordered expectations)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from responder.clock import ManualClock
from responder.config import load_config
from tests.conftest import Harness, alert, base_config, notification, write_config
from tests.keymanager_spec import validate_request, validate_response

ROOT = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"
OTHER_ROOT = "0x" + "11" * 32
KEYS = ["0x" + c * 96 for c in ("a", "b")]
KS = "/eth/v1/keystores"


def history(pubkeys=KEYS, root=ROOT, target=1200) -> dict[str, Any]:
    return {
        "metadata": {"interchange_format_version": "5", "genesis_validators_root": root},
        "data": [
            {
                "pubkey": k,
                "signed_blocks": [{"slot": str(target * 32 + 5)}],
                "signed_attestations": [
                    {"source_epoch": str(target - 1), "target_epoch": str(target)}
                ],
            }
            for k in pubkeys
        ],
    }


def keymanager_nodes(httpserver: HTTPServer, **node_a_extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "match": {"node": name},
            "driver": {
                "type": "ethereum-keymanager",
                "url": httpserver.url_for(f"/{name}"),
                "token_file": "./secrets/node-token",
                "timeout": "1s",
            },
        }
        | (node_a_extra if name == "node-a" else {})
        for name in ("node-a", "node-b")
    ]


def ethereum_section(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(exist_ok=True)
    keystores = []
    for i, key in enumerate(KEYS):
        ks = keys_dir / f"keystore-{i}.json"
        ks.write_text(
            json.dumps(
                {
                    "pubkey": key[2:],
                    "version": 4,
                    "crypto": {"kdf": {}, "cipher": {}},
                    "path": f"m/12381/3600/{i}/0/0",
                }
            )
        )
        pw = keys_dir / f"password-{i}.txt"
        pw.write_text(f"hunter{i}-secret\n")
        ks.chmod(0o600)
        pw.chmod(0o600)
        keystores.append({"pubkey": key, "keystore_file": str(ks), "password_file": str(pw)})
    return {"genesis_validators_root": ROOT, "pubkeys": KEYS, "keystores": keystores} | extra


@pytest.fixture
def eth_harness(tmp_path: Path, clock: ManualClock, httpserver: HTTPServer):
    made: list[Harness] = []

    def make(nodes=None, dry_run: bool = False, **eth_extra: Any) -> Harness:
        data = base_config(
            lambda n: "unused",
            nodes=nodes or keymanager_nodes(httpserver),
            pair={"ethereum": ethereum_section(tmp_path, **eth_extra), "dry_run": dry_run},
        )
        harness = Harness(load_config(write_config(tmp_path, data)), clock)
        made.append(harness)
        return harness

    yield make
    for h in made:
        h.store.close()


@pytest.fixture
def eth_dry_harness(eth_harness):
    return lambda **kw: eth_harness(dry_run=True, **kw)


def spec_json(
    node: str, method: str, respond, *, quirk: bool = False, captured: list | None = None
):
    """A handler validating request and (unless quirk) response against the Keymanager spec."""

    def handle(request: Request) -> Response:
        assert request.headers.get("Authorization", "").startswith("Bearer ")
        body = json.loads(request.get_data()) if request.get_data() else None
        validate_request(method, KS, body)
        if captured is not None:
            captured.append(body)
        status, out = respond(body)
        if not quirk:
            validate_response(method, KS, status, out)
        return Response(json.dumps(out), status=status, mimetype="application/json")

    return handle


def listing(keys: list[str]) -> tuple[int, dict[str, Any]]:
    return 200, {
        "data": [
            {"validating_pubkey": k, "derivation_path": "m/12381/3600/0/0/0", "readonly": False}
            for k in keys
        ]
    }


def deleted(statuses=("deleted", "deleted"), hist: Any = None, field: str = "slashing_protection"):
    """A DELETE answer; the history is a JSON string (the spec) unless given as an object."""
    doc = json.dumps(history()) if hist is None else hist

    def respond(_body):
        return 200, {"data": [{"status": s, "message": ""} for s in statuses], field: doc}

    return respond


def expect_listing(httpserver: HTTPServer, node: str, loaded: list[str] | None = None) -> None:
    """The next ordered request is a GET of `node`'s listing, answered with `loaded`."""
    keys = list(loaded or [])
    httpserver.expect_ordered_request(f"/{node}{KS}", method="GET").respond_with_handler(
        spec_json(node, "GET", lambda _b: listing(keys))
    )


def expect_probe(httpserver: HTTPServer, loaded: list[str] | None = None) -> None:
    expect_listing(httpserver, "node-b", loaded)


def expect_source_silent(httpserver: HTTPServer) -> None:
    """node-a lists none of the keys: the read verifying its fence, then the pre-activation check."""
    expect_listing(httpserver, "node-a")  # the fence verified by an independent read
    expect_listing(httpserver, "node-a")  # every other node silent right before the POST


def expect_activation_verified(httpserver: HTTPServer) -> None:
    """node-b lists the keys when read right after the POST."""
    expect_listing(httpserver, "node-b", KEYS)


def mutations(httpserver: HTTPServer) -> list[str]:
    return [f"{r.method} {r.path}" for r, _ in httpserver.log if r.method != "GET"]


class FakeKeys:
    """The pair's keys one fake client holds, so every GET lists what DELETE and POST left.

    `sticky`: DELETE answers `deleted` but the keys stay loaded (a client that never unloads).
    Keys imported with `late=True` appear only at the next listing (an import finishing after
    its request failed).
    """

    def __init__(self, loaded: list[str] | None = None, *, sticky: bool = False) -> None:
        self.loaded = [k for k in KEYS if k in (loaded or [])]
        self.landing: list[str] = []
        self.sticky = sticky

    def get(self, _body: Any) -> tuple[int, dict[str, Any]]:
        self.loaded += [k for k in self.landing if k not in self.loaded]
        self.landing = []
        return listing(self.loaded)

    def delete(self, body: Any, answer=None) -> tuple[int, dict[str, Any]]:
        """Unload the keys asked for; answer per key (or with `answer`, a fixed reply)."""
        asked = body["pubkeys"]
        held = [k for k in asked if k in self.loaded]
        if not self.sticky:
            self.loaded = [k for k in self.loaded if k not in asked]
        if answer is not None:
            return answer(body)
        statuses = ["deleted" if k in held else "not_found" for k in asked]
        return deleted(statuses, hist=json.dumps(history(pubkeys=held)))(body)

    def post(
        self,
        statuses: tuple[str, ...],
        *,
        fail: bool = False,
        late: bool = False,
        load: bool = True,
    ):
        """A POST answer with `statuses`; the `imported` keys load (even when the answer is a
        500) unless `load` is False (a client claiming an import it did not do)."""

        def respond(body: Any) -> tuple[int, dict[str, Any]]:
            keys = ["0x" + json.loads(k)["pubkey"] for k in body["keystores"]]
            new = [k for k, s in zip(keys, statuses, strict=True) if s == "imported" and load]
            (self.landing if late else self.loaded).extend(new)
            if fail:
                return 500, {"message": "internal error"}
            return 200, {"data": [{"status": s, "message": ""} for s in statuses]}

        return respond


def run_failover(h: Harness, clock: ManualClock):
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    return h.responder.step()


def test_fence_hands_exact_history_to_activation(
    eth_harness, clock, httpserver: HTTPServer
) -> None:
    """DELETE on the primary, verified by its listing, precedes POST on the standby with exactly the returned history."""
    h = eth_harness()
    text = json.dumps(history(), indent=1)  # odd formatting: must be forwarded byte for byte
    posted: list[dict] = []
    expect_probe(httpserver)
    httpserver.expect_ordered_request(f"/node-a{KS}", method="DELETE").respond_with_handler(
        spec_json("node-a", "DELETE", deleted(hist=text))
    )
    expect_source_silent(httpserver)
    httpserver.expect_ordered_request(f"/node-b{KS}", method="POST").respond_with_handler(
        spec_json(
            "node-b",
            "POST",
            lambda b: (
                200,
                {"data": [{"status": "imported", "message": ""}] * len(b["keystores"])},
            ),
            captured=posted,
        )
    )
    expect_activation_verified(httpserver)
    [failover] = run_failover(h, clock)
    httpserver.check()
    assert failover.step.value == "done", failover.outcome_reason
    assert [r.method + " " + r.path for r, _ in httpserver.log] == [
        f"GET /node-b{KS}",  # the target's probe
        f"DELETE /node-a{KS}",
        f"GET /node-a{KS}",  # the fence verified
        f"GET /node-a{KS}",  # node-a silent right before activation
        f"POST /node-b{KS}",
        f"GET /node-b{KS}",  # the activation verified
    ]
    [body] = posted
    assert body["slashing_protection"] == text
    assert [json.loads(k)["pubkey"] for k in body["keystores"]] == [k[2:] for k in KEYS]
    assert body["passwords"] == ["hunter0-secret", "hunter1-secret"]
    assert h.roles() == {"node-a": "fenced", "node-b": "active"}
    # the history was persisted with the fence, before activation
    assert h.store.get_failover(failover.id).data["handoff"]["slashing_protection"] == text
    # passwords, keystores and tokens appear nowhere in the events, journal or metrics
    trail = json.dumps(h.events()) + json.dumps([j.to_json() for j in h.store.journal(failover.id)])
    trail += h.client.get("/metrics").get_data(as_text=True)
    for secret in ("hunter0-secret", "hunter1-secret", '"crypto"', "node-secret-token"):
        assert secret not in trail


@pytest.mark.parametrize(
    ("respond", "label"),
    [
        (deleted(hist=history()), "object-history"),
        (deleted(hist=json.dumps(history()), field="slashingProtection"), "camelCase-field"),
        (deleted(statuses=("deleted", "not_found")), "not_found-with-history"),
        (deleted(statuses=("not_active", "not_active")), "repeated-delete"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_known_client_quirks_are_tolerated(
    eth_harness, clock, httpserver: HTTPServer, respond, label
) -> None:
    """History as an object, `slashingProtection`, not_found with its history, and not_active all confirm the fence."""
    h = eth_harness()
    posted: list[dict] = []
    expect_probe(httpserver)
    httpserver.expect_ordered_request(f"/node-a{KS}", method="DELETE").respond_with_handler(
        spec_json("node-a", "DELETE", respond, quirk=True)
    )
    expect_source_silent(httpserver)
    httpserver.expect_ordered_request(f"/node-b{KS}", method="POST").respond_with_handler(
        spec_json(
            "node-b",
            "POST",
            lambda b: (200, {"data": [{"status": "imported"}] * 2}),
            captured=posted,
        )
    )
    expect_activation_verified(httpserver)
    [failover] = run_failover(h, clock)
    httpserver.check()
    assert failover.step.value == "done", failover.outcome_reason
    assert json.loads(posted[0]["slashing_protection"]) == history()


def _status_error(_b):
    return 200, {
        "data": [{"status": "deleted"}, {"status": "error", "message": "busy"}],
        "slashing_protection": json.dumps(history()),
    }


def _not_found_without_history(_b):
    return 200, {
        "data": [{"status": "deleted"}, {"status": "not_found"}],
        "slashing_protection": json.dumps(history(pubkeys=KEYS[:1])),
    }


def _slow(_b):
    time.sleep(1.5)  # the fake client hangs past the driver's 1s timeout
    return deleted()(_b)


@pytest.mark.parametrize(
    ("respond", "needle"),
    [
        (_status_error, "status error"),
        (lambda _b: (401, {"message": "no token"}), "401"),
        (lambda _b: (403, {"message": "bad token"}), "403"),
        (lambda _b: (500, {"message": "boom"}), "500"),
        (_slow, "timed out"),
        (deleted(hist="{not json"), "not valid JSON"),
        (deleted(hist=history(pubkeys=KEYS[:1])), "misses pubkeys"),
        (deleted(hist=history(root=OTHER_ROOT)), "not this pair's chain"),
        (_not_found_without_history, "misses pubkeys"),
    ],
    ids=[
        "key-error",
        "401",
        "403",
        "500",
        "timeout",
        "unparsable",
        "missing-key",
        "foreign-root",
        "not_found-no-history",
    ],
)
def test_every_fence_failure_blocks_activation(
    eth_harness, clock, httpserver: HTTPServer, respond, needle
) -> None:
    """Any DELETE failure (status, HTTP, timeout, bad history) fails the failover; no POST is sent."""
    h = eth_harness()
    expect_probe(httpserver)
    httpserver.expect_ordered_request(f"/node-a{KS}", method="DELETE").respond_with_handler(
        spec_json("node-a", "DELETE", respond, quirk=True)
    )
    [failover] = run_failover(h, clock)
    assert failover.step.value == "failed"
    assert needle in failover.outcome_reason
    assert all(r.method != "POST" for r, _ in httpserver.log)
    assert h.pair()["phase"] == "blocked"
    assert h.roles() == {"node-a": "active", "node-b": "standby"}


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (lambda _b: listing(KEYS), "signing"),
        (lambda _b: listing(KEYS[1:]), "signing"),
        (lambda _b: (500, {"message": "boom"}), "unreachable"),
    ],
    ids=["both-listed", "one-listed", "listing-fails"],
)
def test_fence_not_confirmed_by_the_listing_blocks_activation(
    eth_harness, clock, httpserver: HTTPServer, answer, says
) -> None:
    """A DELETE claiming success counts only if the listing then shows none of the keys; otherwise no POST is sent."""
    h = eth_harness()
    expect_probe(httpserver)
    httpserver.expect_ordered_request(f"/node-a{KS}", method="DELETE").respond_with_handler(
        spec_json("node-a", "DELETE", deleted())
    )
    httpserver.expect_ordered_request(f"/node-a{KS}", method="GET").respond_with_handler(
        spec_json("node-a", "GET", answer)
    )
    [failover] = run_failover(h, clock)
    httpserver.check()
    assert failover.step.value == "failed"
    assert f"the fence claimed success but node-a then answered: {says}" in failover.outcome_reason
    assert "nothing was activated" in failover.outcome_reason
    assert mutations(httpserver) == [f"DELETE /node-a{KS}"]
    assert h.pair()["phase"] == "blocked"
    assert h.roles() == {"node-a": "active", "node-b": "standby"}


def test_keys_back_on_the_primary_refuse_activation(
    eth_harness, clock, httpserver: HTTPServer
) -> None:
    """Keys listed again on the fenced primary right before the POST (a client reloading them) refuse the activation."""
    h = eth_harness()
    expect_probe(httpserver)
    httpserver.expect_ordered_request(f"/node-a{KS}", method="DELETE").respond_with_handler(
        spec_json("node-a", "DELETE", deleted())
    )
    expect_listing(httpserver, "node-a")  # the fence verified
    expect_listing(httpserver, "node-a", KEYS)  # ...then the keys are back
    [failover] = run_failover(h, clock)
    httpserver.check()
    assert failover.step.value == "failed"
    assert (
        "activation of node-b refused: every other node must be verified silent, "
        "but node-a signing; nothing was activated"
    ) in failover.outcome_reason
    assert mutations(httpserver) == [f"DELETE /node-a{KS}"]
    assert h.pair()["phase"] == "blocked"
    pair = h.pair()
    assert pair["who_signs"].startswith("node-a reports signing")  # the probe, kept as observed
    doubt = {n["name"]: n["may_be_signing"] for n in pair["nodes"]}
    assert doubt == {"node-a": "answered signing just before an activation", "node-b": None}
    assert pair["nodes"][0]["role"] == "fenced"  # recorded fenced, yet seen signing:
    assert pair["consistency"] == "diverged"  # the record and the node disagree, said plainly
    assert "node-a reports signing" in pair["held_reason"]


def test_duplicate_import_confirmed_only_when_listed(
    eth_harness, clock, httpserver: HTTPServer
) -> None:
    """`duplicate` counts as imported only when the keys then appear in the standby's listing."""
    h = eth_harness()
    expect_probe(httpserver)
    httpserver.expect_ordered_request(f"/node-a{KS}", method="DELETE").respond_with_handler(
        spec_json("node-a", "DELETE", deleted())
    )
    expect_source_silent(httpserver)
    httpserver.expect_ordered_request(f"/node-b{KS}", method="POST").respond_with_handler(
        spec_json(
            "node-b",
            "POST",
            lambda _b: (200, {"data": [{"status": "duplicate"}, {"status": "imported"}]}),
        )
    )
    expect_listing(httpserver, "node-b", KEYS)  # the driver's own check of `duplicate`
    expect_activation_verified(httpserver)
    [failover] = run_failover(h, clock)
    httpserver.check()
    assert failover.step.value == "done", failover.outcome_reason


def expect_failed_activation(
    httpserver: HTTPServer, node_b: FakeKeys, post, *, read_after_post: bool = False
) -> None:
    """Probe, fence and verify node-a, then a POST answered by `post` (and, if it claims
    success, the read verifying it) and the fence-back DELETE.

    Every later read or re-fence of node-b (the settle loop: as many as it takes) is answered
    from `node_b`'s keys; the order of the mutating calls is asserted from the log.
    """
    httpserver.expect_ordered_request(f"/node-b{KS}", method="GET").respond_with_handler(
        spec_json("node-b", "GET", node_b.get)
    )
    httpserver.expect_ordered_request(f"/node-a{KS}", method="DELETE").respond_with_handler(
        spec_json("node-a", "DELETE", deleted())
    )
    expect_source_silent(httpserver)
    httpserver.expect_ordered_request(f"/node-b{KS}", method="POST").respond_with_handler(
        spec_json("node-b", "POST", post)
    )
    if read_after_post:
        httpserver.expect_ordered_request(f"/node-b{KS}", method="GET").respond_with_handler(
            spec_json("node-b", "GET", node_b.get)
        )
    httpserver.expect_ordered_request(f"/node-b{KS}", method="DELETE").respond_with_handler(
        spec_json("node-b", "DELETE", node_b.delete)
    )
    httpserver.expect_request(f"/node-b{KS}", method="GET").respond_with_handler(
        spec_json("node-b", "GET", node_b.get)
    )
    httpserver.expect_request(f"/node-b{KS}", method="DELETE").respond_with_handler(
        spec_json("node-b", "DELETE", node_b.delete)
    )


def after_fence_back(httpserver: HTTPServer) -> list[str]:
    """The calls after the first DELETE on node-b (the fence back): the settle loop."""
    calls = [f"{r.method} {r.path}" for r, _ in httpserver.log]
    return calls[calls.index(f"DELETE /node-b{KS}") + 1 :]


# settle time of these nodes: connect_timeout 2s + timeout 1s + 1s per key (2 keys)
SETTLED = "node-b verified not signing for 5.0s (settle 5s)"


def test_failed_import_leaves_both_sides_fenced(eth_harness, clock, httpserver: HTTPServer) -> None:
    """An `error` on import fails the failover; the standby is fenced back and verified silent for its settle time."""
    h = eth_harness()
    node_b = FakeKeys()
    expect_failed_activation(httpserver, node_b, node_b.post(("imported", "error")))
    [failover] = run_failover(h, clock)
    httpserver.check()
    assert failover.step.value == "failed"
    assert "keys not imported" in failover.outcome_reason
    assert f"node-b was fenced back and {SETTLED}" in failover.outcome_reason
    assert mutations(httpserver) == [
        f"DELETE /node-a{KS}",
        f"POST /node-b{KS}",  # never retried
        f"DELETE /node-b{KS}",
    ]
    settle = after_fence_back(httpserver)
    assert len(settle) > 1 and set(settle) == {f"GET /node-b{KS}"}  # re-read, never re-fenced
    assert node_b.loaded == []
    assert h.roles() == {"node-a": "fenced", "node-b": "fenced"}
    assert h.pair()["phase"] == "blocked"


def test_import_claimed_but_not_listed_is_a_failed_activation(
    eth_harness, clock, httpserver: HTTPServer
) -> None:
    """`imported` for every key counts only if the standby then lists them; otherwise it is fenced back and verified silent."""
    h = eth_harness()
    node_b = FakeKeys()
    post = node_b.post(("imported", "imported"), load=False)
    expect_failed_activation(httpserver, node_b, post, read_after_post=True)
    [failover] = run_failover(h, clock)
    httpserver.check()
    assert failover.step.value == "failed"
    reason = failover.outcome_reason
    assert "the activation claimed success but node-b then answered: not signing" in reason
    assert f"node-b was fenced back and {SETTLED}" in reason
    assert mutations(httpserver) == [
        f"DELETE /node-a{KS}",
        f"POST /node-b{KS}",
        f"DELETE /node-b{KS}",
    ]
    assert h.roles() == {"node-a": "fenced", "node-b": "fenced"}


def test_import_landing_after_its_failed_post_is_fenced_again(
    eth_harness, clock, httpserver: HTTPServer
) -> None:
    """Keys that show up after a failed POST and the fence back are deleted again before the standby counts as silent."""
    h = eth_harness()
    node_b = FakeKeys()
    post = node_b.post(("imported", "imported"), fail=True, late=True)
    expect_failed_activation(httpserver, node_b, post)
    [failover] = run_failover(h, clock)
    httpserver.check()
    assert failover.step.value == "failed"
    assert "answered 500" in failover.outcome_reason
    assert f"node-b was fenced back and {SETTLED}" in failover.outcome_reason
    assert mutations(httpserver) == [
        f"DELETE /node-a{KS}",
        f"POST /node-b{KS}",
        f"DELETE /node-b{KS}",  # fence back: the keys have not landed yet
        f"DELETE /node-b{KS}",  # re-fence: the first read after it listed them
    ]
    settle = after_fence_back(httpserver)
    assert settle[:2] == [f"GET /node-b{KS}", f"DELETE /node-b{KS}"]
    assert len(settle) > 3 and set(settle[2:]) == {f"GET /node-b{KS}"}
    assert node_b.loaded == []
    assert h.roles() == {"node-a": "fenced", "node-b": "fenced"}


def test_standby_keeping_its_keys_is_reported_may_be_signing(
    eth_harness, clock, httpserver: HTTPServer
) -> None:
    """A standby still listing the keys after every re-fence ends the failover with it marked MAY BE SIGNING."""
    h = eth_harness()
    node_b = FakeKeys(sticky=True)
    expect_failed_activation(httpserver, node_b, node_b.post(("imported", "imported"), fail=True))
    [failover] = run_failover(h, clock)
    httpserver.check()
    assert failover.step.value == "failed"
    reason = failover.outcome_reason
    assert "node-b MAY BE SIGNING" in reason
    # the loop gives up after max(4 x settle, settle + 5s) = 20s
    assert "could not be verified silent within 20s (last answer: signing)" in reason
    settle = after_fence_back(httpserver)
    assert mutations(httpserver)[:2] == [f"DELETE /node-a{KS}", f"POST /node-b{KS}"]
    # every read that listed the keys was followed by another DELETE
    assert settle.count(f"GET /node-b{KS}") > 2
    for i, call in enumerate(settle[:-1]):
        if call == f"GET /node-b{KS}":
            assert settle[i + 1] == f"DELETE /node-b{KS}"
    assert node_b.loaded == KEYS
    nodes = {n["name"]: n for n in h.pair()["nodes"]}
    assert nodes["node-b"]["may_be_signing"]
    assert not nodes["node-a"]["may_be_signing"]
    assert sum(1 for r, _ in httpserver.log if r.method == "POST") == 1


def _power_fence_nodes(httpserver: HTTPServer) -> list[dict[str, Any]]:
    return keymanager_nodes(httpserver, fence_levels=[{"type": "command", "argv": ["true"]}])


def test_unreachable_primary_waits_for_operator_then_activates_without_history(
    eth_harness, clock, httpserver: HTTPServer
) -> None:
    """Fenced by a stronger level and verified unreachable for the settle time, no history came: activation waits for `confirm`, then POSTs without history."""
    h = eth_harness(nodes=_power_fence_nodes(httpserver))
    expect_probe(httpserver)
    httpserver.expect_ordered_request(f"/node-a{KS}", method="DELETE").respond_with_data(
        "", status=503
    )
    # powered off: every later read of node-a fails, as many as the settle loop takes
    httpserver.expect_request(f"/node-a{KS}", method="GET").respond_with_data("", status=503)
    [failover] = run_failover(h, clock)
    httpserver.check()
    assert failover.step.value == "awaiting"
    assert "responder confirm" in failover.data["waiting"]
    assert h.roles() == {"node-a": "fenced", "node-b": "standby"}
    calls = [f"{r.method} {r.path}" for r, _ in httpserver.log]
    assert calls[:2] == [f"GET /node-b{KS}", f"DELETE /node-a{KS}"]
    # the DELETE failed (it may still land), so "unreachable" had to hold for the settle time
    assert len(calls) > 3 and set(calls[2:]) == {f"GET /node-a{KS}"}
    notes = [j.detail.get("verification") for j in h.store.journal(failover.id)]
    assert "node-a verified unreachable for 5.0s (settle 5s)" in notes
    clock.advance(3600)
    assert h.responder.step() == []  # nothing happens on its own
    assert all(r.method != "POST" for r, _ in httpserver.log)

    posted: list[dict] = []
    seen = len(httpserver.log)
    httpserver.expect_ordered_request(f"/node-a{KS}", method="GET").respond_with_data(
        "", status=503
    )  # still off right before activation
    httpserver.expect_ordered_request(f"/node-b{KS}", method="POST").respond_with_handler(
        spec_json(
            "node-b",
            "POST",
            lambda _b: (200, {"data": [{"status": "imported"}] * 2}),
            captured=posted,
        )
    )
    expect_activation_verified(httpserver)
    resp = h.op("POST", "/api/v1/pairs/mainnet-a/confirm")
    assert resp.status_code == 200, resp.json
    [done] = h.responder.step()
    httpserver.check()
    assert done.step.value == "done"
    assert [f"{r.method} {r.path}" for r, _ in httpserver.log[seen:]] == [
        f"GET /node-a{KS}",
        f"POST /node-b{KS}",
        f"GET /node-b{KS}",
    ]
    assert "slashing_protection" not in posted[0]
    assert h.roles() == {"node-a": "fenced", "node-b": "active"}


def test_liveness_gate_activates_after_quiet_epochs(
    eth_harness, clock, httpserver: HTTPServer
) -> None:
    """With without_history: liveness, activation follows N consecutive not-live epochs after the fence."""
    genesis = clock.now() - 100 * 384 - 10  # 10 s into epoch 100
    liveness = {
        "beacon_url": httpserver.url_for("/beacon"),
        "validator_indices": [7, 9],
        "epochs": 2,
    }
    h = eth_harness(
        nodes=_power_fence_nodes(httpserver), without_history="liveness", liveness=liveness
    )
    httpserver.expect_request("/beacon/eth/v1/beacon/genesis").respond_with_json(
        {
            "data": {
                "genesis_time": str(int(genesis)),
                "genesis_validators_root": ROOT,
                "genesis_fork_version": "0x00000000",
            }
        }
    )
    asked: list[int] = []
    live_epochs = {101}

    def live(request: Request) -> Response:
        epoch = int(request.path.rsplit("/", 1)[1])
        asked.append(epoch)
        assert json.loads(request.get_data()) == ["7", "9"]
        return Response(
            json.dumps(
                {"data": [{"index": i, "is_live": epoch in live_epochs} for i in ("7", "9")]}
            ),
            mimetype="application/json",
        )

    httpserver.expect_request("/beacon/eth/v1/validator/liveness/101").respond_with_handler(live)
    httpserver.expect_request("/beacon/eth/v1/validator/liveness/102").respond_with_handler(live)
    httpserver.expect_request("/beacon/eth/v1/validator/liveness/103").respond_with_handler(live)
    node_b = FakeKeys()
    httpserver.expect_request(f"/node-b{KS}", method="GET").respond_with_handler(
        spec_json("node-b", "GET", node_b.get)
    )
    httpserver.expect_request(f"/node-a{KS}", method="DELETE").respond_with_data("", status=503)
    # powered off by the command level: node-a no longer answers
    httpserver.expect_request(f"/node-a{KS}", method="GET").respond_with_data("", status=503)
    httpserver.expect_request(f"/node-b{KS}", method="POST").respond_with_handler(
        spec_json("node-b", "POST", node_b.post(("imported", "imported")))
    )
    [failover] = run_failover(h, clock)  # fenced in epoch 100
    assert failover.step.value == "awaiting"
    for _ in range(4):  # epoch 100 completes; 101 live (restart); 102, 103 quiet
        clock.advance(384)
        h.responder.step()
    assert asked == [101, 102, 103]
    f = h.store.get_failover(failover.id)
    assert f.step.value == "done", f
    assert "not live for 2 epochs" in f.data["handoff_waived"]
    assert node_b.loaded == KEYS
    assert mutations(httpserver).count(f"POST /node-b{KS}") == 1
    httpserver.check()


def test_dry_run_sends_only_gets_and_redacts(
    eth_dry_harness, clock, httpserver: HTTPServer
) -> None:
    """Dry-run: GETs run on both nodes (the source is probed too), DELETE and POST are recorded
    with redacted bodies and not sent."""
    httpserver.expect_request(f"/node-b{KS}", method="GET").respond_with_handler(
        spec_json("node-b", "GET", lambda _b: listing([]))
    )
    httpserver.expect_request(f"/node-a{KS}", method="GET").respond_with_handler(
        spec_json("node-a", "GET", lambda _b: listing(KEYS))
    )
    dry = eth_dry_harness()
    [failover] = run_failover(dry, clock)
    assert failover.step.value == "done" and failover.dry_run, failover.outcome_reason
    assert {r.method for r, _ in httpserver.log} == {"GET"}
    assert {r.path for r, _ in httpserver.log} == {f"/node-b{KS}", f"/node-a{KS}"}
    would = [e for e in dry.events() if e["kind"] == "would_call"]
    bodies = {e["data"]["action"]: e["data"]["request"]["json"] for e in would}
    assert bodies["fence"] == {"pubkeys": KEYS}
    assert bodies["activate"]["passwords"] == ["***", "***"] and bodies["activate"][
        "keystores"
    ] == ["***", "***"]
    dump = json.dumps(dry.events()) + json.dumps(
        [j.to_json() for j in dry.store.journal(failover.id)]
    )
    assert "hunter0-secret" not in dump and "crypto" not in dump


def test_restarted_responder_activates_with_the_persisted_history(
    tmp_path: Path, clock: ManualClock
) -> None:
    """A second process resuming after the fence re-checks the nodes and POSTs the history it finds in the store, without a second DELETE."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)  # one request may hang
    server.start()
    try:
        nodes = keymanager_nodes(server)
        for node in nodes:
            node["driver"]["timeout"] = "30s"
        data = base_config(
            lambda n: "unused", nodes=nodes, pair={"ethereum": ethereum_section(tmp_path)}
        )
        config = load_config(write_config(tmp_path, data))
        text = json.dumps(history(), indent=2)
        posted: list[str] = []
        arrived, release = threading.Event(), threading.Event()
        node_a, node_b = FakeKeys(KEYS), FakeKeys()
        imported = node_b.post(("imported", "imported"))

        def post(body: Any) -> tuple[int, dict[str, Any]]:
            posted.append(body["slashing_protection"])
            if len(posted) == 1:  # the first responder dies while this request is in flight
                arrived.set()
                release.wait(20)
            return imported(body)

        server.expect_request(f"/node-b{KS}", method="GET").respond_with_handler(
            spec_json("node-b", "GET", node_b.get)
        )
        server.expect_request(f"/node-a{KS}", method="GET").respond_with_handler(
            spec_json("node-a", "GET", node_a.get)
        )
        server.expect_request(f"/node-a{KS}", method="DELETE").respond_with_handler(
            spec_json("node-a", "DELETE", lambda b: node_a.delete(b, deleted(hist=text)))
        )
        server.expect_request(f"/node-b{KS}", method="POST").respond_with_handler(
            spec_json("node-b", "POST", post)
        )

        first = Harness(config, clock, owner="first")
        first.post_alert(notification(alert()))
        first.responder.step()
        clock.advance(21)
        errors: list[BaseException] = []

        def run_first() -> None:
            try:
                first.responder.step()
            except BaseException as exc:  # the dead owner's late write must be refused
                errors.append(exc)

        thread = threading.Thread(target=run_first, daemon=True)
        thread.start()
        assert arrived.wait(10)
        assert first.store.get_failover("mainnet-a-1").step.value == "activating"
        clock.advance(config.failover_lease + 1)  # the first owner's lease runs out
        second = Harness(config, clock, owner="second")
        [failover] = second.responder.step()
        release.set()
        thread.join(10)

        assert failover.step.value == "done", failover.outcome_reason
        assert posted == [text, text]  # the second process got the history from the store
        assert [f"{r.method} {r.path}" for r, _ in server.log] == [
            f"GET /node-b{KS}",
            f"DELETE /node-a{KS}",  # the only DELETE
            f"GET /node-a{KS}",  # the fence verified
            f"GET /node-a{KS}",  # node-a silent before the first POST
            f"GET /node-b{KS}",  # the second process: is node-b already signing?
            f"GET /node-a{KS}",  # node-a still silent before the second POST
            f"POST /node-b{KS}",
            f"GET /node-b{KS}",  # the activation verified
            f"POST /node-b{KS}",  # the first POST, logged when it was finally answered
        ]
        assert [type(e).__name__ for e in errors] == ["LeaseLost"]
        server.check()
        first.store.close()
        second.store.close()
    finally:
        server.clear()
        server.stop()
