"""Drills (a read-only rehearsal of the failover a fault would start now) and switchovers
(a planned failover through the verified path whose old primary ends a standby).

Nodes are fakes: FakeNode agents, in-process keymanager simulators (responder.sim) and a
pytest-httpserver power switch, each on a free loopback port and stopped by its test. The
responder is the real app on a real SQLite store with a ManualClock (its sleeps advance time),
served on a loopback port when the real CLI drives it; the gunicorn `server` fixture where a
background runner must carry a switchover out.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from pytest_httpserver import HTTPServer
from werkzeug import Response
from werkzeug.serving import BaseWSGIServer, make_server

from responder.cli import main
from responder.clock import ManualClock
from responder.config import load_config
from responder.sim import MAINNET_GENESIS_ROOT, Sim, SimApp, overlaps
from responder.state import PairState
from tests.conftest import Harness, alert, base_config, notification, write_config
from tests.fakenode import FakeNode
from tests.serverproc import ServerProcess, free_port
from tests.tokens import NODE_TOKEN, OPERATOR_TOKEN, WEBHOOK_TOKEN

ROOT = MAINNET_GENESIS_ROOT
KEYS = ["0x" + c * 96 for c in ("a", "b")]
PASSWORDS = ["correct-horse-0-secret", "correct-horse-1-secret"]
PAIR = "/api/v1/pairs/mainnet-a"
SECRETS = (NODE_TOKEN, OPERATOR_TOKEN, WEBHOOK_TOKEN, *PASSWORDS, '"crypto"')
AFTER_FENCE = "after the fence is verified and every other node is verified silent"
SLOT = 12.0


# ---- plumbing -----------------------------------------------------------------------------


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve a WSGI app on a free loopback port for the test's duration."""
    server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def http_node(name: str, url: str, **extra: Any) -> dict[str, Any]:
    driver = {"type": "http", "url": url, "token_file": "./secrets/node-token", "timeout": "2s"}
    return {"name": name, "match": {"node": name}, "driver": driver} | extra


def km_node(name: str, url: str) -> dict[str, Any]:
    driver = {
        "type": "ethereum-keymanager",
        "url": url,
        "token_file": "./secrets/node-token",
        "timeout": "2s",
    }
    return {"name": name, "match": {"node": name}, "driver": driver}


def ethereum(directory: Path, **extra: Any) -> dict[str, Any]:
    """The pair's keys, with owner-only EIP-2335 keystore and password files."""
    keys_dir = directory / "keys"
    keys_dir.mkdir(parents=True)
    keystores = []
    for i, key in enumerate(KEYS):
        ks, pw = keys_dir / f"keystore-{i}.json", keys_dir / f"password-{i}.txt"
        body = {"pubkey": key[2:], "version": 4, "path": f"m/12381/3600/{i}/0/0"}
        ks.write_text(json.dumps(body | {"crypto": {"kdf": {}, "checksum": {}, "cipher": {}}}))
        pw.write_text(PASSWORDS[i] + "\n")
        ks.chmod(0o600)
        pw.chmod(0o600)
        keystores.append({"pubkey": key, "keystore_file": str(ks), "password_file": str(pw)})
    return {"genesis_validators_root": ROOT, "pubkeys": KEYS, "keystores": keystores} | extra


@pytest.fixture
def build(tmp_path: Path, clock: ManualClock) -> Iterator[Callable[..., Harness]]:
    """`build(name, nodes, **config)`: a Harness whose config and store live in tmp_path/name."""
    made: list[Harness] = []

    def make(name: str, nodes: list[dict[str, Any]], **overrides: Any) -> Harness:
        directory = tmp_path / name
        directory.mkdir(exist_ok=True)
        data = base_config(lambda n: "unused", nodes=nodes, **overrides)
        harness = Harness(load_config(write_config(directory, data)), clock)
        made.append(harness)
        return harness

    yield make
    for h in made:
        h.store.close()


def fake_pair(nodes: dict[str, FakeNode], **node_a: Any) -> list[dict[str, Any]]:
    return [
        http_node("node-a", nodes["node-a"].url, **node_a),
        http_node("node-b", nodes["node-b"].url),
    ]


def state(h: Harness) -> PairState:
    [found] = [s for s in h.store.list_pairs() if s.pair == "mainnet-a"]
    return found


def cli(url: str, token_file: Path, *args: str) -> int:
    return main([*args, "--url", url, "--token-file", str(token_file)])


def op_token(h: Harness) -> Path:
    return h.config.auth.operator_token_file  # type: ignore[union-attr]


def drill(h: Harness, fault: str | None = None) -> dict[str, Any]:
    resp = h.op("POST", f"{PAIR}/drill", json={"fault": fault} if fault else None)
    assert resp.status_code == 200, resp.get_json()
    body: dict[str, Any] = resp.get_json()
    return body


def metric(h: Harness, name: str) -> float | None:
    text = h.client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("pair") == "mainnet-a":
                return float(sample.value)
    return None


def no_secrets(*docs: Any) -> None:
    text = json.dumps(docs)
    for secret in SECRETS:
        assert secret not in text, secret


def methods(server: HTTPServer) -> set[str]:
    return {request.method for request, _ in server.log}


def failover_body(h: Harness, failover_id: str) -> dict[str, Any]:
    resp = h.op("GET", f"/api/v1/failovers/{failover_id}")
    assert resp.status_code == 200
    body: dict[str, Any] = resp.get_json()
    return body


def switchover(h: Harness, target: str, **extra: Any) -> str:
    resp = h.op("POST", f"{PAIR}/switchover", json={"target": target} | extra)
    assert resp.status_code == 200, resp.get_json()
    failover_id: str = resp.get_json()["failover_id"]
    return failover_id


# ---- a power switch (an http fence level) --------------------------------------------------


class Pdu:
    """A power switch on pytest-httpserver: its outlet-off call and a read-only state check."""

    def __init__(self, server: HTTPServer, check_status: int = 200) -> None:
        self.server = server
        self.off_url = server.url_for("/pdu/outlet/1/off")
        self.state_url = server.url_for("/pdu/outlet/1")
        server.expect_request("/pdu/outlet/1", method="GET").respond_with_response(
            Response('{"state": "on"}', status=check_status, content_type="application/json")
        )
        server.expect_request("/pdu/outlet/1/off").respond_with_json({"state": "off"})

    def level(self, *, check: bool = True) -> dict[str, Any]:
        level: dict[str, Any] = {
            "type": "http",
            "url": self.off_url,
            "token_file": "./secrets/node-token",
            "body": {"outlet": 1},
        }
        if check:
            level["check"] = {"url": self.state_url}
        return level


# ---- keymanager simulators ----------------------------------------------------------------


class Sims:
    """Two simulated validator clients (local keymanager mode) on loopback ports."""

    def __init__(self, stack: ExitStack, *, slots_per_epoch: int, genesis_time: int) -> None:
        self.nodes: dict[str, Sim] = {}
        self.urls: dict[str, str] = {}
        for name, signing in (("node-a", True), ("node-b", False)):
            sim = Sim(
                name,
                "mainnet-a",
                signing=signing,
                token=NODE_TOKEN,
                keymanager="local",
                genesis_validators_root=ROOT,
                pubkeys=KEYS,
                slots_per_epoch=slots_per_epoch,
                genesis_time=genesis_time,
            )
            stack.callback(sim.stop)
            self.nodes[name] = sim
            self.urls[name] = stack.enter_context(serving(SimApp(sim)))

    def __getitem__(self, name: str) -> Sim:
        return self.nodes[name]

    def slots(self, n: int) -> None:
        """n slots of one chain pass on both nodes: whichever holds the keys signs."""
        for _ in range(n):
            for sim in self.nodes.values():
                sim.tick()

    def config_nodes(self) -> list[dict[str, Any]]:
        return [km_node(name, url) for name, url in self.urls.items()]

    def no_overlap(self) -> None:
        a, b = self["node-a"].signing_intervals, self["node-b"].signing_intervals
        assert overlaps(a, b) == [], (a, b)

    def writes(self) -> dict[str, tuple[int, int]]:
        return {n: (s.calls["km_delete"], s.calls["km_post"]) for n, s in self.nodes.items()}


@pytest.fixture
def sims(clock: ManualClock) -> Iterator[Callable[..., Sims]]:
    with ExitStack() as stack:

        def start(*, slots_per_epoch: int = 4, genesis_time: int | None = None) -> Sims:
            genesis = int(clock.now()) if genesis_time is None else genesis_time
            return Sims(stack, slots_per_epoch=slots_per_epoch, genesis_time=genesis)

        yield start


# ---- 1. a drill lists the exact requests and changes nothing --------------------------------


@pytest.fixture
def pdu_server() -> Iterator[HTTPServer]:
    """A PDU of this test's own, threaded: a connection another test left open on the shared
    session server cannot hold up its read-only check."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


def test_drill_lists_the_failover_requests_in_order_and_changes_nothing(
    build: Callable[..., Harness], nodes: dict[str, FakeNode], pdu_server: HTTPServer
) -> None:
    """A drill lists fence level 0, each extra level with its condition, then the activation, redacted, and changes no state, failover or node."""
    httpserver = pdu_server
    pdu = Pdu(httpserver)
    command = {"type": "command", "argv": ["true", "--outlet", "1"], "check": {"command": ["true"]}}
    h = build("h", fake_pair(nodes, fence_levels=[pdu.level(), command]))
    before = state(h)
    events_before = len(h.events())

    report = drill(h)

    assert report["ok"] is True, report
    assert report["verdict"] == "a real failover from node-a to node-b would succeed"
    assert (report["source"], report["target"], report["blockers"]) == ("node-a", "node-b", [])
    a, b = nodes["node-a"].url, nodes["node-b"].url
    assert [(r["node"], r["action"], r["description"], r["when"]) for r in report["requests"]] == [
        ("node-a", "fence", f"POST {a}/fence", "level 0, first"),
        ("node-a", "fence", f"POST {pdu.off_url}", "level 1, only if level 0 fails"),
        ("node-a", "fence", "run true --outlet 1", "level 2, only if level 1 fails"),
        ("node-b", "activate", f"POST {b}/activate", AFTER_FENCE),
    ]
    fence0, fence1, _, activate = (r["request"] for r in report["requests"])
    for request in (fence0, fence1, activate):
        assert request["headers"]["Authorization"] == "Bearer ***"
    assert fence1["json"] == {"outlet": 1} and fence1["method"] == "POST"
    assert fence0["json"]["pair"] == "mainnet-a" and activate["url"] == f"{b}/activate"
    checks = {c["name"]: c["ok"] for c in report["checks"]}
    assert checks["node-a:fence-level-1"] is True, report["checks"]
    assert checks["node-a:fence-level-2"] is True, report["checks"]
    assert checks["node-b:target"] is True

    no_secrets(report, h.events())
    after = state(h)
    assert after.roles == before.roles and after.phase is before.phase
    assert (after.failover_seq, after.attempts) == (before.failover_seq, before.attempts)
    assert h.roles() == {"node-a": "active", "node-b": "standby"}
    assert h.store.list_failovers("mainnet-a") == []
    for node in nodes.values():
        assert (node.calls["fence"], node.calls["activate"]) == (0, 0)
        assert methods(node.server) == {"GET"}
    assert methods(httpserver) == {"GET"}  # the PDU's state was read, its outlet left alone
    assert nodes["node-a"].signing and not nodes["node-b"].signing
    new = h.events()[: len(h.events()) - events_before]
    assert [e["kind"] for e in new] == ["drill:passed"]


def test_keymanager_drill_lists_delete_then_redacted_post(
    build: Callable[..., Harness], sims: Callable[..., Sims], tmp_path: Path
) -> None:
    """Against keymanager sims the drill lists DELETE on the primary, then POST on the standby with keystores and passwords redacted; no key moves."""
    pair = sims()
    h = build("h", pair.config_nodes(), pair={"ethereum": ethereum(tmp_path / "h")})

    report = drill(h)

    assert report["ok"] is True, report
    a, b = pair.urls["node-a"], pair.urls["node-b"]
    assert [(r["node"], r["action"], r["description"], r["when"]) for r in report["requests"]] == [
        ("node-a", "fence", f"DELETE {a}/eth/v1/keystores", "level 0, first"),
        ("node-b", "activate", f"POST {b}/eth/v1/keystores", AFTER_FENCE),
    ]
    delete, post = (r["request"] for r in report["requests"])
    assert delete["json"] == {"pubkeys": KEYS}
    assert post["json"]["keystores"] == ["***", "***"]
    assert post["json"]["passwords"] == ["***", "***"]
    assert post["headers"] == {"Authorization": "Bearer ***"}
    no_secrets(report, h.events())
    assert pair.writes() == {"node-a": (0, 0), "node-b": (0, 0)}
    assert sorted(pair["node-a"].loaded) == KEYS and not pair["node-b"].loaded
    assert h.store.list_failovers("mainnet-a") == []


@pytest.mark.e2e
def test_drill_cli_against_the_running_responder(
    server: ServerProcess, nodes: dict[str, FakeNode], capsys: pytest.CaptureFixture[str]
) -> None:
    """`responder drill` against gunicorn exits 0 and prints the requests in order; no node is fenced or activated."""
    token = server.config_path.parent / "secrets" / "operator-token"
    assert cli(server.url, token, "drill", "mainnet-a") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "drill mainnet-a: a real failover from node-a to node-b would succeed"
    a, b = nodes["node-a"].url, nodes["node-b"].url
    assert f"  1. fence node-a: POST {a}/fence [level 0, first]" in lines, out
    assert f"  2. activate node-b: POST {b}/activate [{AFTER_FENCE}]" in lines, out
    assert "blockers: none" in lines
    assert lines[-1].endswith("nothing was changed on any node")
    assert NODE_TOKEN not in out and OPERATOR_TOKEN not in out
    for node in nodes.values():
        assert (node.calls["fence"], node.calls["activate"]) == (0, 0)
    assert server.pair()["active_node"] == "node-a"
    assert server.pair()["drill"]["ok"] is True


# ---- 2. broken fence levels ---------------------------------------------------------------


def test_broken_fence_level_blocks_only_when_no_level_checks_out(
    build: Callable[..., Harness],
    nodes: dict[str, FakeNode],
    pdu_server: HTTPServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Level 1's check answering 500 blocks (exit 3, naming node-a:fence-level-1) with node-a's API down, and only warns (exit 0) with it up."""
    httpserver = pdu_server
    pdu = Pdu(httpserver, check_status=500)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: node-a's API is down
    nodes_down = [
        http_node("node-a", dead, fence_levels=[pdu.level()]),
        http_node("node-b", nodes["node-b"].url),
    ]
    down = build("down", nodes_down)
    with serving(down.app) as url:
        assert cli(url, op_token(down), "drill", "mainnet-a") == 3
    out = capsys.readouterr().out
    assert "drill mainnet-a: a real failover would NOT succeed" in out
    report = down.store.reports("mainnet-a")["drill"]
    level1 = f"node-a:fence-level-1: check GET {pdu.state_url} answered 500"
    assert any(b.startswith(level1) for b in report["blockers"]), report["blockers"]
    assert "no fence level of node-a could be verified" in report["blockers"]
    assert f"  {level1}" in out
    assert report["outcome"] == "failed"

    up = build("up", fake_pair(nodes, fence_levels=[pdu.level()]))
    with serving(up.app) as url:
        assert cli(url, op_token(up), "drill", "mainnet-a") == 0
    out = capsys.readouterr().out
    report = up.store.reports("mainnet-a")["drill"]
    assert report["ok"] is True and report["blockers"] == []
    assert any(w.startswith(level1) for w in report["warnings"]), report["warnings"]
    assert "blockers: none" in out and f"  {level1}" in out
    assert methods(httpserver) == {"GET"}


def test_drill_with_no_verifiable_fence_level_fails(
    build: Callable[..., Harness],
    nodes: dict[str, FakeNode],
    pdu_server: HTTPServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """API down and the only extra level without a check: exit 3, "no fence level of node-a could be verified", the level a warning."""
    httpserver = pdu_server
    pdu = Pdu(httpserver)
    dead = f"http://127.0.0.1:{free_port()}"
    h = build(
        "h",
        [
            http_node("node-a", dead, fence_levels=[pdu.level(check=False)]),
            http_node("node-b", nodes["node-b"].url),
        ],
    )
    with serving(h.app) as url:
        assert cli(url, op_token(h), "drill", "mainnet-a") == 3
    out = capsys.readouterr().out
    report = h.store.reports("mainnet-a")["drill"]
    assert "no fence level of node-a could be verified" in report["blockers"]
    assert "  no fence level of node-a could be verified" in out.splitlines()
    assert any(
        w.startswith("node-a:fence-level-1:") and "no check configured" in w
        for w in report["warnings"]
    ), report["warnings"]
    assert httpserver.log == []  # without a check nothing may be sent to the power switch
    assert h.events()[0]["kind"] == "drill:failed"


# ---- 3. gates, metrics and events ---------------------------------------------------------


def test_drill_gates_metrics_and_events(
    build: Callable[..., Harness],
    nodes: dict[str, FakeNode],
    clock: ManualClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A standby fault starts no failover (exit 0), an unknown node is 409 (exit 1), a paused pair is blocked (exit 3); metrics and events follow."""
    h = build("h", fake_pair(nodes))
    with serving(h.app) as url:
        token = op_token(h)
        assert cli(url, token, "drill", "mainnet-a", "--fault", "node-b") == 0
        out = capsys.readouterr().out
        assert out.splitlines()[0] == "drill mainnet-a: no failover would start"
        assert "node-b is standby: its failure would start no failover" in out
        standby = h.store.reports("mainnet-a")["drill"]
        assert standby["requests"] == [] and standby["ok"] is True
        passed_at = clock.now()
        assert metric(h, "responder_drill_ok") == 1.0
        assert metric(h, "responder_drill_last_success_timestamp_seconds") == passed_at

        assert cli(url, token, "drill", "mainnet-a", "--fault", "node-z") == 1
        err = capsys.readouterr().err
        assert "409" in err and "node-z is not a node of mainnet-a" in err

        clock.advance(60)
        assert h.op("POST", f"{PAIR}/pause").status_code == 200
        assert cli(url, token, "drill", "mainnet-a") == 3
        out = capsys.readouterr().out
    report = h.store.reports("mainnet-a")["drill"]
    assert "the pair is paused" in report["blockers"]
    assert "  the pair is paused" in out.splitlines()
    assert not nodes["node-a"].calls["fence"] and not nodes["node-b"].calls["activate"]

    assert metric(h, "responder_drill_ok") == 0.0
    assert metric(h, "responder_drill_last_run_timestamp_seconds") == clock.now()
    assert metric(h, "responder_drill_last_success_timestamp_seconds") == passed_at
    drills = [e for e in h.events() if e["kind"].startswith("drill:")]
    assert [e["kind"] for e in drills] == ["drill:failed", "drill:passed"]  # newest first
    assert "the pair is paused" in drills[0]["data"]["blockers"]
    assert drills[1]["data"]["fault"] == "node-b"
    assert h.pair()["drill"]["ok"] is False  # status shows the latest drill


def test_drill_on_a_dry_run_pair_warns(
    build: Callable[..., Harness], nodes: dict[str, FakeNode]
) -> None:
    """On a dry-run pair the drill passes but warns that a real alert would only rehearse."""
    h = build("h", fake_pair(nodes), pair={"dry_run": True})
    report = drill(h)
    assert report["ok"] is True
    assert "the pair runs in dry-run: a real alert would only rehearse" in report["warnings"]
    assert h.events()[0]["kind"] == "drill:passed"


# ---- 4. switchovers on keymanager simulators ----------------------------------------------


def test_switchover_moves_keys_and_history_and_back_without_overlap(
    build: Callable[..., Harness], sims: Callable[..., Sims], tmp_path: Path
) -> None:
    """Two switchovers move keys and slashing history there and back, old primary a standby each time, never two signers, with step timings."""
    pair = sims()
    h = build("h", pair.config_nodes(), pair={"ethereum": ethereum(tmp_path / "h")})
    pair.slots(12)  # node-a signs three epochs and a block
    a_marks = {k: pair["node-a"].db[k].max_target for k in KEYS}
    assert all(m is not None and m >= 2 for m in a_marks.values()), a_marks

    first = switchover(h, "node-b")
    [done] = h.responder.step()
    assert done.id == first and done.step.value == "done", done.outcome_reason
    assert "node-a verified not signing and healthy, now a standby" in str(done.outcome_reason)
    assert h.roles() == {"node-a": "standby", "node-b": "active"}
    assert pair.writes() == {"node-a": (1, 0), "node-b": (0, 1)}
    assert not pair["node-a"].loaded and sorted(pair["node-b"].loaded) == KEYS
    for k in KEYS:  # the standby holds the primary's history before it signs
        assert pair["node-b"].db[k].max_target == a_marks[k]
    body = failover_body(h, first)
    assert body["data"]["switchover"] is True and body["automatic"] is False
    assert "slashing_protection" in body["data"]["handoff"]
    assert set(body["timings"]) == {"planned", "fencing", "fenced", "activating", "total"}
    assert all(v >= 0 for v in body["timings"].values())
    assert h.pair()["cooldown_until"] is None

    pair.slots(8)  # node-b signs two more epochs
    b_marks = {k: pair["node-b"].db[k].max_target for k in KEYS}
    assert all(b_marks[k] > a_marks[k] for k in KEYS)
    second = switchover(h, "node-a")
    [back] = h.responder.step()
    assert back.id == second and back.step.value == "done", back.outcome_reason
    assert h.roles() == {"node-a": "active", "node-b": "standby"}
    assert pair.writes() == {"node-a": (1, 1), "node-b": (1, 1)}
    assert sorted(pair["node-a"].loaded) == KEYS and not pair["node-b"].loaded
    for k in KEYS:
        assert pair["node-a"].db[k].max_target == b_marks[k]
    assert set(failover_body(h, second)["timings"]) >= {"fencing", "activating", "total"}

    pair.slots(8)
    assert all(pair["node-a"].db[k].max_target > b_marks[k] for k in KEYS)  # signs on
    pair.no_overlap()
    assert len(pair["node-a"].signing_intervals) == 2
    assert len(pair["node-b"].signing_intervals) == 1
    no_secrets(h.events(), [j.to_json() for j in h.store.journal(first)])


@pytest.mark.e2e
def test_switchover_cli_follows_the_journal_and_prints_timings(
    server: ServerProcess, nodes: dict[str, FakeNode], capsys: pytest.CaptureFixture[str]
) -> None:
    """`responder switchover --to` follows the journal, prints timings and exits 0, there and back; no overlap, the old primary a standby."""
    token = server.config_path.parent / "secrets" / "operator-token"
    assert cli(server.url, token, "switchover", "mainnet-a", "--to", "node-b", "--yes") == 0
    out = capsys.readouterr().out
    assert "switchover by" in out.splitlines()[0]
    assert "mainnet-a-1: done:" in out and "node-a verified not signing and healthy" in out
    [timings] = [line for line in out.splitlines() if line.startswith("timings: ")]
    assert "fencing " in timings and "activating " in timings and "total " in timings
    pair = server.pair()
    assert {n["name"]: n["role"] for n in pair["nodes"]} == {
        "node-a": "standby",
        "node-b": "active",
    }

    assert cli(server.url, token, "switchover", "mainnet-a", "--to", "node-a", "--yes") == 0
    out = capsys.readouterr().out
    assert "mainnet-a-2: done:" in out and "node-b verified not signing and healthy" in out
    pair = server.pair()
    assert {n["name"]: n["role"] for n in pair["nodes"]} == {
        "node-a": "active",
        "node-b": "standby",
    }
    assert overlaps(nodes["node-a"].intervals, nodes["node-b"].intervals) == []
    assert nodes["node-a"].calls["fence"] == 1 and nodes["node-b"].calls["fence"] == 1
    assert nodes["node-a"].calls["activate"] == 1 and nodes["node-b"].calls["activate"] == 1
    failover = server.api("/api/v1/failovers/mainnet-a-2")
    assert failover["timings"]["total"] >= 0 and failover["step"] == "done"


# ---- 5. no cooldown after a switchover ----------------------------------------------------


def test_switchover_starts_no_cooldown_but_a_manual_failover_does(
    build: Callable[..., Harness], nodes: dict[str, FakeNode], clock: ManualClock
) -> None:
    """A trigger on the new primary fails over after the hold following a switchover, but waits for the cooldown after a manual failover."""
    h = build("switch", fake_pair(nodes))
    switchover(h, "node-b")
    assert [f.step.value for f in h.responder.step()] == ["done"]
    assert h.roles() == {"node-a": "standby", "node-b": "active"}
    assert h.pair()["cooldown_until"] is None
    assert h.post_alert(notification(alert(node="node-b"))).status_code == 200
    assert h.responder.step() == []
    assert h.pair()["phase"] == "pending"
    clock.advance(21)
    [auto] = h.responder.step()
    assert auto.automatic and auto.step.value == "done", auto.outcome_reason
    assert (auto.source, auto.target) == ("node-b", "node-a")
    assert h.roles() == {"node-a": "active", "node-b": "fenced"}

    for node, signing in (("node-a", True), ("node-b", False)):
        nodes[node].signing = signing  # the same nodes, a fresh responder
    m = build("manual", fake_pair(nodes))
    resp = m.op("POST", f"{PAIR}/failover", json={"target": "node-b"})
    assert resp.status_code == 200, resp.get_json()
    assert [f.step.value for f in m.responder.step()] == ["done"]
    assert m.roles() == {"node-a": "fenced", "node-b": "active"}
    assert m.pair()["cooldown_until"] is not None
    assert m.op("POST", f"{PAIR}/nodes/node-a/unfence").status_code == 200
    assert m.post_alert(notification(alert(node="node-b"))).status_code == 200
    m.responder.step()
    clock.advance(21)
    assert m.responder.step() == []
    assert m.pair()["phase"] == "pending" and "cooldown" in m.pair()["reason"]
    assert m.roles() == {"node-a": "standby", "node-b": "active"}
    assert any(b.startswith("cooldown until") for b in drill(m)["blockers"])


# ---- 6. a safe moment ---------------------------------------------------------------------


def _liveness_harness(
    build: Callable[..., Harness], sims: Callable[..., Sims], clock: ManualClock, tmp_path: Path
) -> tuple[Harness, Sims, float]:
    """Keymanager sims 3 s into slot 100 of a 32-slot-epoch chain, a pair key proposing at
    slot 101, and ethereum.liveness reading duties from node-a's beacon API."""
    genesis = int(clock.now()) - 100 * int(SLOT) - 3
    pair = sims(slots_per_epoch=32, genesis_time=genesis)
    liveness = {"beacon_url": pair.urls["node-a"], "validator_indices": [1], "timeout": "2s"}
    eth = ethereum(tmp_path / "h", liveness=liveness)
    h = build("h", pair.config_nodes(), pair={"ethereum": eth})
    duties = [{"slot": 101, "pubkey": KEYS[1], "validator_index": 1}]
    resp = requests.post(pair.urls["node-a"] + "/sim/duties", json=duties, timeout=5)
    assert resp.status_code == 200, resp.text
    return h, pair, float(genesis)


def test_switchover_waits_for_the_proposal_slot_to_pass(
    build: Callable[..., Harness], sims: Callable[..., Sims], clock: ManualClock, tmp_path: Path
) -> None:
    """With safe_slots, a pair key's proposal in the next slots makes the switchover wait on the clock until that slot ends, then proceed."""
    h, pair, genesis = _liveness_harness(build, sims, clock, tmp_path)
    slot_102 = genesis + 102 * SLOT
    failover_id = switchover(h, "node-b", safe_slots=2, timeout=600)
    [done] = h.responder.step()
    assert done.step.value == "done", done.outcome_reason
    assert clock.now() >= slot_102
    assert h.roles() == {"node-a": "standby", "node-b": "active"}
    journal = h.store.journal(failover_id)
    notes = [j.detail.get("note") for j in journal]
    assert "a proposal is due at slot 101: waiting until it has passed" in notes
    assert "no proposal by the pair's keys in the next 2 slots" in notes
    fencing = [j for j in journal if j.step == "fencing"]
    assert fencing and min(j.ts for j in fencing) >= slot_102  # nothing moved before
    assert pair.writes() == {"node-a": (1, 0), "node-b": (0, 1)}
    pair.no_overlap()


def test_switchover_without_a_safe_moment_in_time_changes_nothing(
    build: Callable[..., Harness], sims: Callable[..., Sims], clock: ManualClock, tmp_path: Path
) -> None:
    """A timeout shorter than the wait for the proposal ends the switchover aborted with no mutating request sent to any node."""
    h, pair, _ = _liveness_harness(build, sims, clock, tmp_path)
    started = clock.now()
    failover_id = switchover(h, "node-b", safe_slots=2, timeout=10)
    [ended] = h.responder.step()
    assert ended.id == failover_id and ended.step.value == "aborted"
    reason = str(ended.outcome_reason)
    assert "no safe moment before the switchover's deadline" in reason
    assert "a proposal is due at slot 101" in reason and "nothing was changed" in reason
    assert clock.now() - started < 10
    assert pair.writes() == {"node-a": (0, 0), "node-b": (0, 0)}
    assert sorted(pair["node-a"].loaded) == KEYS and not pair["node-b"].loaded
    assert h.roles() == {"node-a": "active", "node-b": "standby"}
    assert len(pair["node-a"].signing_intervals) == 1 and not pair["node-b"].signing_intervals


def test_switchover_without_a_safe_moment_leaves_automation_armed(
    build: Callable[..., Harness], sims: Callable[..., Sims], clock: ManualClock, tmp_path: Path
) -> None:
    """A switchover that found no safe moment changed nothing, so the pair stays armed for automatic failover (no acknowledgement needed)."""
    h, _, _ = _liveness_harness(build, sims, clock, tmp_path)
    switchover(h, "node-b", safe_slots=2, timeout=10)
    [ended] = h.responder.step()
    assert ended.step.value == "aborted"
    assert h.pair()["phase"] == "armed", h.pair()["reason"]
    assert drill(h)["ok"] is True


def test_safe_slots_beyond_the_duty_horizon_is_not_reported_clear(
    build: Callable[..., Harness], sims: Callable[..., Sims], clock: ManualClock, tmp_path: Path
) -> None:
    """A window reaching past the next epoch (whose duties no beacon node knows) is refused
    with 409 and nothing planned, never reported clear."""
    h, pair, _ = _liveness_harness(build, sims, clock, tmp_path)
    duties = [{"slot": 165, "pubkey": KEYS[0], "validator_index": 1}]  # epoch 5; now: epoch 3
    assert requests.post(pair.urls["node-a"] + "/sim/duties", json=duties, timeout=5).ok
    resp = h.op("POST", f"{PAIR}/switchover", json={"target": "node-b", "safe_slots": 70})
    assert resp.status_code == 409
    assert "use at most 32" in resp.get_json()["error"]
    assert h.store.list_failovers("mainnet-a") == []
    assert pair.writes() == {"node-a": (0, 0), "node-b": (0, 0)}


def test_safe_slots_without_liveness_config_is_409(
    build: Callable[..., Harness], nodes: dict[str, FakeNode]
) -> None:
    """safe_slots on a pair without ethereum.liveness is refused with 409; nothing is planned."""
    h = build("h", fake_pair(nodes))
    resp = h.op("POST", f"{PAIR}/switchover", json={"target": "node-b", "safe_slots": 2})
    assert resp.status_code == 409
    assert "ethereum.liveness" in resp.get_json()["error"]
    assert h.store.list_failovers("mainnet-a") == [] and state(h).failover_seq == 0


# ---- 7. an old primary that is not healthy stays fenced -----------------------------------


class AilingNode(FakeNode):
    """A FakeNode whose status reports healthy false once it has been fenced."""

    def _reply(self, what: str, signing: bool | None = None) -> Response:
        response = super()._reply(what, signing)
        if what == "status" and self.calls["fence"] > 0:
            body = json.loads(response.get_data()) | {"healthy": False}
            response.set_data(json.dumps(body))
        return response


def test_switchover_old_primary_unhealthy_after_fence_stays_fenced(
    build: Callable[..., Harness],
) -> None:
    """A switchover whose old primary answers unhealthy after its fence completes but leaves that node fenced, not a standby."""
    node_a = AilingNode("node-a", signing=True, token=NODE_TOKEN).start()
    node_b = FakeNode("node-b", signing=False, token=NODE_TOKEN).start()
    try:
        h = build("h", fake_pair({"node-a": node_a, "node-b": node_b}))
        switchover(h, "node-b")
        [done] = h.responder.step()
        assert done.step.value == "done", done.outcome_reason
        assert "switchover: node-a stays fenced" in str(done.outcome_reason)
        assert h.roles() == {"node-a": "fenced", "node-b": "active"}
        assert overlaps(node_a.intervals, node_b.intervals) == []
        back = h.op("POST", f"{PAIR}/switchover", json={"target": "node-a"})
        assert back.status_code == 409
        assert "fenced, not a standby" in back.get_json()["error"]
    finally:
        node_a.stop()
        node_b.stop()
