"""Failover readiness: each broken thing flips readiness to 0 with the right reason, and
repairing it flips it back; no check ever sends a mutating request.

Nodes are stateful fake agents (tests.fakenode, extended here so a test can make one unhealthy
or refuse a token with 401 or 403) or the node simulator in keymanager mode; fence levels
point at a fake power switch (pytest-httpserver). Every server is on a loopback port and
stopped by the test, and every test ends by proving the fakes saw only reads.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response
from werkzeug.serving import BaseWSGIServer, make_server

from responder.cli import format_status
from responder.clock import ManualClock
from responder.config import ConfigError, load_config, parse_config
from responder.readiness import Readiness
from responder.runner import Runner
from responder.sim import Sim, SimApp
from tests.conftest import Harness, base_config, write_config
from tests.fakenode import FakeNode
from tests.serverproc import free_port
from tests.test_keymanager_preflight import KEYS, ROOT, keystore_json
from tests.tokens import NODE_TOKEN

PAIR = "mainnet-a"
PDU_TOKEN = "pdu-secret-token"
HTTP_NAMES = [
    "node-a:api",
    "node-b:api",
    "signer",
    "node-b:standby",
    "automation",
    "node-a:token",
    "node-a:fence-level-1",
    "node-b:token",
    "node-b:fence-level-1",
]


class Agent(FakeNode):
    """A FakeNode whose health can be set and whose refusal of a wrong token is 401 or 403."""

    def __init__(self, name: str, *, signing: bool, token: str) -> None:
        self.healthy = True
        self.refuse_with = 401
        super().__init__(name, signing=signing, token=token)

    def _status(self, request: Request) -> Response:
        with self.lock:
            self.calls["status"] += 1
        if not self._authorized(request):
            body = json.dumps({"message": "token expired"})
            return Response(body, status=self.refuse_with, content_type="application/json")
        body = json.dumps({"healthy": self.healthy, "signing": self.signing})
        return Response(body, status=200, content_type="application/json")


@pytest.fixture
def agents() -> Iterator[dict[str, Agent]]:
    """A signing node-a and a silent node-b, stopped when the test ends."""
    made = {
        "node-a": Agent("node-a", signing=True, token=NODE_TOKEN),
        "node-b": Agent("node-b", signing=False, token=NODE_TOKEN),
    }
    for agent in made.values():
        agent.start()
    yield made
    for agent in made.values():
        agent.stop()


class Pdu:
    """A fake power switch: its outlet-state GET is the fence level's read-only check."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.answer: dict[str, Any] = {"controllable": True}
        server.expect_request("/outlets/node-a").respond_with_handler(self._outlet)
        server.expect_request("/outlets/node-b").respond_with_handler(self._outlet)

    def _outlet(self, request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {PDU_TOKEN}":
            return Response("", status=401)
        return Response(json.dumps(self.answer), content_type="application/json")

    def level(self, node: str, **check: Any) -> dict[str, Any]:
        """An http fence level switching `node`'s outlet off, checked by reading its state."""
        url = self.server.url_for(f"/outlets/{node}")
        return {
            "type": "http",
            "url": url + "/off",
            "token_file": "./secrets/pdu-token",
            "timeout": "2s",
            "check": {"url": url, "expect_json": {"controllable": True}, "timeout": "2s"} | check,
        }

    def methods(self) -> set[str]:
        return {r.method for r, _ in self.server.log}


@pytest.fixture
def pdu(httpserver: HTTPServer) -> Pdu:
    return Pdu(httpserver)


def agent_node(name: str, url: str, levels: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "match": {"node": name},
        "driver": {
            "type": "http",
            "url": url,
            "token_file": "./secrets/node-token",
            "timeout": "2s",
        },
        "fence_levels": levels or [],
    }


def build(tmp_path: Path, clock: ManualClock, nodes: list[dict[str, Any]], **over: Any) -> Harness:
    data = base_config(lambda n: "", nodes=nodes, **over)
    path = write_config(tmp_path, data)
    pdu_token = tmp_path / "secrets" / "pdu-token"
    pdu_token.write_text(PDU_TOKEN + "\n")
    pdu_token.chmod(0o600)
    return Harness(load_config(path), clock)


@pytest.fixture
def made(tmp_path: Path, clock: ManualClock) -> Iterator[Callable[..., Harness]]:
    """Build Harnesses (real app, service, SQLite store); their stores close at the end."""
    harnesses: list[Harness] = []

    def make(nodes: list[dict[str, Any]], **over: Any) -> Harness:
        h = build(tmp_path, clock, nodes, **over)
        harnesses.append(h)
        return h

    yield make
    for h in harnesses:
        h.store.close()


def http_pair(agents: dict[str, Agent], pdu: Pdu | None = None) -> list[dict[str, Any]]:
    return [
        agent_node(n, a.url, [pdu.level(n)] if pdu is not None else None) for n, a in agents.items()
    ]


def check_round(h: Harness) -> Readiness:
    return h.responder.check_readiness(PAIR)


def failing(report: Readiness) -> dict[str, str]:
    return {c.name: c.reason for c in report.failing}


def by_name(report: Readiness) -> dict[str, Any]:
    return {c.name: c for c in report.checks}


def metrics(h: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The readiness samples of GET /metrics: (name, sorted labels) -> value."""
    text = h.client.get("/metrics").get_data(as_text=True)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("responder_failover_ready")
    }


def ready_metric(h: Harness) -> float:
    return metrics(h)[("responder_failover_ready", (("pair", PAIR),))]


def check_metrics(h: Harness) -> dict[str, float]:
    return {
        dict(labels)["check"]: value
        for (name, labels), value in metrics(h).items()
        if name == "responder_failover_ready_check"
    }


def readiness_events(h: Harness) -> list[str]:
    """Kinds of the pair's readiness events, oldest first (the store lists newest first)."""
    return [e["kind"] for e in reversed(h.events()) if str(e["kind"]).startswith("readiness:")]


def only_reads(agents: dict[str, Agent], pdu: Pdu | None = None) -> None:
    """No agent was asked to fence or activate, and every request anyone saw was a read."""
    for agent in agents.values():
        assert agent.calls["fence"] == agent.calls["activate"] == 0, agent.calls
        assert {r.method for r, _ in agent.server.log} <= {"GET"}, agent.name
    if pdu is not None:
        assert pdu.methods() <= {"GET", "HEAD"}
        assert not [r for r, _ in pdu.server.log if r.path.endswith("/off")]


def flips(
    h: Harness,
    clock: ManualClock,
    break_it: Callable[[], None],
    repair: Callable[[], None],
    expect_failing: set[str],
) -> dict[str, str]:
    """Ready, then broken (exactly `expect_failing` fail, metrics 0), then repaired (ready,
    metrics 1, a second `readiness:ready` event). Returns the broken round's reasons."""
    assert check_round(h).ready
    assert ready_metric(h) == 1.0
    break_it()
    clock.advance(60)
    broken = check_round(h)
    assert not broken.ready
    reasons = failing(broken)
    assert set(reasons) == expect_failing, broken.summary
    assert ready_metric(h) == 0.0
    per_check = check_metrics(h)
    assert all(per_check[name] == 0.0 for name in expect_failing)
    assert all(v == 1.0 for n, v in per_check.items() if n not in expect_failing)
    assert broken.summary.startswith("NOT READY: ")
    repair()
    clock.advance(60)
    repaired = check_round(h)
    assert repaired.ready, repaired.summary
    assert ready_metric(h) == 1.0
    assert set(check_metrics(h).values()) == {1.0}
    assert readiness_events(h) == ["readiness:ready", "readiness:not_ready", "readiness:ready"]
    return reasons


# ---- 1. a healthy pair -------------------------------------------------------------------


def test_healthy_pair_is_ready_names_every_check_and_records_one_event(
    made: Callable[..., Harness], clock: ManualClock, agents: dict[str, Agent], pdu: Pdu
) -> None:
    """A healthy http pair is ready, names every check, exports 1s, and records one event."""
    h = made(http_pair(agents, pdu))
    report = check_round(h)
    assert report.ready, report.summary
    assert [c.name for c in report.checks] == HTTP_NAMES
    assert all(c.ok is True for c in report.checks)
    assert report.summary == f"ready: {len(HTTP_NAMES)} checks pass"
    assert "node-a signs as recorded" in by_name(report)["signer"].reason
    found = metrics(h)
    assert found[("responder_failover_ready", (("pair", PAIR),))] == 1.0
    assert found[("responder_failover_ready_timestamp_seconds", (("pair", PAIR),))] == clock.now()
    assert check_metrics(h) == dict.fromkeys(HTTP_NAMES, 1.0)
    assert readiness_events(h) == ["readiness:ready"]
    clock.advance(60)
    again = check_round(h)
    assert again.ready
    assert readiness_events(h) == ["readiness:ready"]
    assert metrics(h)[("responder_failover_ready_timestamp_seconds", (("pair", PAIR),))] == (
        clock.now()
    )
    only_reads(agents, pdu)
    assert pdu.methods() == {"GET"}


# ---- 2a. a rotated token -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "status", "expect"),
    [
        ("node-a", 401, {"node-a:api"}),
        ("node-b", 403, {"node-b:api", "node-b:standby", "standby"}),
    ],
)
def test_rotated_token_fails_the_nodes_api_and_repair_restores_it(
    made: Callable[..., Harness],
    clock: ManualClock,
    agents: dict[str, Agent],
    node: str,
    status: int,
    expect: set[str],
) -> None:
    """An agent refusing the token (401/403) fails {node}:api naming the status, until fixed."""
    h = made(http_pair(agents))
    agent = agents[node]
    agent.refuse_with = status

    def rotate() -> None:
        agent.token = "rotated-token"

    def restore() -> None:
        agent.token = NODE_TOKEN

    reasons = flips(h, clock, rotate, restore, expect)
    assert f"answered {status}" in reasons[f"{node}:api"]
    assert "/status" in reasons[f"{node}:api"]
    assert NODE_TOKEN not in json.dumps(reasons) and "rotated-token" not in json.dumps(reasons)
    only_reads(agents)


# ---- 2b. a standby out of sync -------------------------------------------------------------


def test_unhealthy_standby_fails_standby_and_recovers(
    made: Callable[..., Harness], clock: ManualClock, agents: dict[str, Agent]
) -> None:
    """A standby reporting healthy=false fails node-b:standby (and `standby`), until healthy."""
    h = made(http_pair(agents))

    def sick() -> None:
        agents["node-b"].healthy = False

    def well() -> None:
        agents["node-b"].healthy = True

    reasons = flips(h, clock, sick, well, {"node-b:standby", "standby"})
    assert reasons["node-b:standby"].startswith("unhealthy, so a failover to it would be refused")
    assert reasons["standby"] == "no standby is ready: a failover has no target"
    only_reads(agents)


# ---- 2c. two signers ------------------------------------------------------------------------


def test_both_nodes_signing_fails_signer_with_split_brain(
    made: Callable[..., Harness], clock: ManualClock, agents: dict[str, Agent]
) -> None:
    """Both nodes reporting signing fail `signer` with "split brain", until one stops."""
    h = made(http_pair(agents))

    def second_signer() -> None:
        agents["node-b"].signing = True

    def stop_it() -> None:
        agents["node-b"].signing = False

    reasons = flips(h, clock, second_signer, stop_it, {"signer", "node-b:standby", "standby"})
    assert reasons["signer"] == "split brain: node-a and node-b all report signing"
    assert reasons["node-b:standby"] == "a standby that reports signing: two signers"
    only_reads(agents)


# ---- 2f. paused ------------------------------------------------------------------------------


def test_paused_pair_fails_automation_until_resumed(
    made: Callable[..., Harness], clock: ManualClock, agents: dict[str, Agent]
) -> None:
    """A paused pair fails `automation` (an alert would not be acted on); resume clears it."""
    h = made(http_pair(agents))

    def pause() -> None:
        assert h.op("POST", f"/api/v1/pairs/{PAIR}/pause").status_code == 200

    def resume() -> None:
        assert h.op("POST", f"/api/v1/pairs/{PAIR}/resume").status_code == 200

    reasons = flips(h, clock, pause, resume, {"automation"})
    assert reasons["automation"] == "paused: alerts are recorded but not acted on"
    only_reads(agents)


# ---- 2e. fence levels ------------------------------------------------------------------------


def test_fence_probe_on_a_closed_port_fails_until_something_answers(
    made: Callable[..., Harness], clock: ManualClock, agents: dict[str, Agent], pdu: Pdu
) -> None:
    """A fence check whose URL nobody listens on fails fence-level-1; a PDU there fixes it."""
    port = free_port()
    closed = f"http://127.0.0.1:{port}/outlets/node-a"
    nodes = http_pair(agents)
    nodes[0]["fence_levels"] = [pdu.level("node-a", url=closed)]
    h = made(nodes)
    first = check_round(h)
    assert not first.ready
    reasons = failing(first)
    assert set(reasons) == {"node-a:fence-level-1"}
    assert reasons["node-a:fence-level-1"].startswith(f"check: GET {closed} failed to connect")
    assert "failed to connect" in reasons["node-a:fence-level-1"]
    assert ready_metric(h) == 0.0
    assert check_metrics(h)["node-a:fence-level-1"] == 0.0
    assert readiness_events(h) == ["readiness:not_ready"]

    moved = HTTPServer(host="127.0.0.1", port=port)
    Pdu(moved)
    moved.start()
    try:
        clock.advance(60)
        fixed = check_round(h)
        seen = {r.method for r, _ in moved.log}
    finally:
        moved.clear()
        moved.stop()
    assert fixed.ready, fixed.summary
    assert by_name(fixed)["node-a:fence-level-1"].reason == f"check GET {closed} answered 200"
    assert readiness_events(h) == ["readiness:not_ready", "readiness:ready"]
    assert seen == {"GET"}
    only_reads(agents, pdu)


def test_fence_check_answering_the_wrong_json_fails_until_it_matches(
    made: Callable[..., Harness], clock: ManualClock, agents: dict[str, Agent], pdu: Pdu
) -> None:
    """A fence check answering an unexpected expect_json value fails, naming both values."""
    h = made(http_pair(agents, pdu))

    def locked() -> None:
        pdu.answer = {"controllable": False}

    def unlocked() -> None:
        pdu.answer = {"controllable": True}

    reasons = flips(h, clock, locked, unlocked, {"node-a:fence-level-1", "node-b:fence-level-1"})
    reason = reasons["node-a:fence-level-1"]
    assert 'expected {"controllable": true}' in reason and 'got {"controllable": false}' in reason
    assert pdu.server.url_for("/outlets/node-a") in reason
    assert all(r.headers.get("Authorization") == f"Bearer {PDU_TOKEN}" for r, _ in pdu.server.log)
    only_reads(agents, pdu)


def test_head_check_and_wrong_status_are_judged_by_expect_status(
    made: Callable[..., Harness], agents: dict[str, Agent], pdu: Pdu
) -> None:
    """A HEAD check passes on an expected status; a check answered 401 fails naming it."""
    nodes = http_pair(agents)
    nodes[0]["fence_levels"] = [pdu.level("node-a", method="HEAD", expect_json=None)]
    nodes[1]["fence_levels"] = [pdu.level("node-b", token_file="./secrets/node-token")]
    h = made(nodes)
    found = by_name(check_round(h))
    assert found["node-a:fence-level-1"].ok is True
    assert found["node-b:fence-level-1"].ok is False
    assert found["node-b:fence-level-1"].reason.endswith("answered 401")
    assert pdu.methods() == {"HEAD", "GET"}
    only_reads(agents, pdu)


def test_level_without_check_is_unverifiable_and_the_pair_still_ready(
    made: Callable[..., Harness], agents: dict[str, Agent], pdu: Pdu
) -> None:
    """A fence level with no `check:` is unverifiable (never "fine"), absent from the
    per-check metric, and does not make the pair not ready."""
    nodes = http_pair(agents, pdu)
    del nodes[1]["fence_levels"][0]["check"]
    h = made(nodes)
    report = check_round(h)
    assert report.ready
    level = by_name(report)["node-b:fence-level-1"]
    assert level.ok is None and level.verdict == "unverifiable"
    assert "no check configured" in level.reason
    assert report.summary == (
        f"ready: {len(HTTP_NAMES) - 1} checks pass, 1 unverifiable (node-b:fence-level-1)"
    )
    assert "node-b:fence-level-1" not in check_metrics(h)
    assert check_metrics(h)["node-a:fence-level-1"] == 1.0
    assert ready_metric(h) == 1.0
    assert not [r for r, _ in pdu.server.log if r.path.startswith("/outlets/node-b")]
    only_reads(agents, pdu)


def test_command_level_checks_run_the_check_never_the_fence(
    made: Callable[..., Harness], clock: ManualClock, tmp_path: Path, agents: dict[str, Agent]
) -> None:
    """A command level checked by `false` fails and by `true` passes; a check that tests a
    file flips with it; the fence command itself never runs."""
    fenced = tmp_path / "fence-ran"
    switch = tmp_path / "switch-reachable"
    fence = [sys.executable, "-c", f"open({str(fenced)!r}, 'w')"]

    def level(check: list[str]) -> dict[str, Any]:
        return {"type": "command", "argv": fence, "timeout": "5s", "check": {"command": check}}

    nodes = http_pair(agents)
    nodes[0]["fence_levels"] = [level(["false"]), level(["true"])]
    nodes[1]["fence_levels"] = [level(["test", "-e", str(switch)])]
    h = made(nodes)
    switch.touch()
    first = check_round(h)
    found = by_name(first)
    assert found["node-a:fence-level-1"].ok is False
    assert found["node-a:fence-level-1"].reason.startswith("check false exited 1")
    assert found["node-a:fence-level-2"].ok is True
    assert found["node-a:fence-level-2"].reason == "check true exited 0"
    assert found["node-b:fence-level-1"].ok is True
    assert set(failing(first)) == {"node-a:fence-level-1"}

    switch.unlink()
    clock.advance(60)
    assert set(failing(check_round(h))) == {"node-a:fence-level-1", "node-b:fence-level-1"}
    switch.touch()
    clock.advance(60)
    assert set(failing(check_round(h))) == {"node-a:fence-level-1"}
    assert check_metrics(h)["node-b:fence-level-1"] == 1.0
    assert not fenced.exists()
    only_reads(agents)


# ---- 2b, 2d. a keymanager pair on the simulator ---------------------------------------------


class SimNode:
    """A simulator (local keymanager, token) and its beacon API on one loopback port."""

    def __init__(self, name: str, *, signing: bool) -> None:
        self.sim = Sim(
            name,
            PAIR,
            signing=signing,
            token=NODE_TOKEN,
            keymanager="local",
            genesis_validators_root=ROOT,
            pubkeys=KEYS,
        )
        self.app = SimApp(self.sim)
        self.methods: list[str] = []  # every request's method, beacon calls included
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}
        )
        self.thread.start()

    def _wsgi(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        self.methods.append(str(environ["REQUEST_METHOD"]))
        return self.app(environ, start_response)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.sim.stop()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def sims() -> Iterator[dict[str, SimNode]]:
    made = {"node-a": SimNode("node-a", signing=True), "node-b": SimNode("node-b", signing=False)}
    yield made
    for node in made.values():
        node.stop()


def keymanager_harness(
    tmp_path: Path, made: Callable[..., Harness], sims: dict[str, SimNode]
) -> tuple[Harness, list[Path]]:
    """A local-mode keymanager pair on the simulators; returns it and the password files."""
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    keystores = []
    passwords = []
    for i, key in enumerate(KEYS):
        ks, pw = keys_dir / f"keystore-{i}.json", keys_dir / f"password-{i}.txt"
        ks.write_text(keystore_json(key))
        pw.write_text("hunter2-very-secret\n")
        ks.chmod(0o600)
        pw.chmod(0o600)
        keystores.append({"pubkey": key, "keystore_file": str(ks), "password_file": str(pw)})
        passwords.append(pw)
    nodes = [
        {
            "name": name,
            "match": {"node": name},
            "driver": {
                "type": "ethereum-keymanager",
                "url": node.url,
                "beacon_url": node.url,
                "token_file": "./secrets/node-token",
                "connect_timeout": "2s",
                "timeout": "2s",
            },
        }
        for name, node in sims.items()
    ]
    eth = {"genesis_validators_root": ROOT, "pubkeys": KEYS, "keystores": keystores}
    return made(nodes, pair={"ethereum": eth}), passwords


def sim_only_reads(sims: dict[str, SimNode]) -> None:
    for node in sims.values():
        calls = node.sim.state()["calls"]
        assert calls["km_delete"] == calls["km_post"] == 0, calls
        assert calls["fence"] == calls["activate"] == 0, calls
        assert calls["km_get"] > 0
        assert set(node.methods) == {"GET"}, node.methods


KM_NAMES = [
    "node-a:api",
    "node-b:api",
    "signer",
    "node-b:standby",
    "automation",
    *(
        f"{n}:{c}"
        for n in ("node-a", "node-b")
        for c in ("token", "keys", "keystores", "chain", "sync")
    ),
]


def test_keymanager_pair_on_the_simulator_is_ready(
    tmp_path: Path, made: Callable[..., Harness], sims: dict[str, SimNode]
) -> None:
    """A keymanager pair on two simulators is ready, names every driver check, and the
    simulators saw only listings and beacon reads (their keys stay where they were)."""
    h, _ = keymanager_harness(tmp_path, made, sims)
    report = check_round(h)
    assert report.ready, report.summary
    assert [c.name for c in report.checks] == KM_NAMES
    assert all(c.ok is True for c in report.checks), report.summary
    assert sorted(sims["node-a"].sim.loaded) == KEYS and not sims["node-b"].sim.loaded
    sim_only_reads(sims)


def test_stalled_beacon_head_fails_sync_until_it_follows_again(
    tmp_path: Path, made: Callable[..., Harness], clock: ManualClock, sims: dict[str, SimNode]
) -> None:
    """The simulator's stall_head fault on the standby's beacon node fails node-b:sync with
    how far behind it is; clearing it restores readiness."""
    h, _ = keymanager_harness(tmp_path, made, sims)
    sim = sims["node-b"].sim

    def stall() -> None:
        sim.set_fault("stall_head", True)
        sim.tick()
        sim.tick()

    def follow() -> None:
        sim.set_fault("stall_head", False)

    reasons = flips(h, clock, stall, follow, {"node-b:sync"})
    assert reasons["node-b:sync"] == "beacon node is syncing, 2 slots behind"
    sim_only_reads(sims)


def test_missing_password_file_fails_keystores_naming_the_file(
    tmp_path: Path, made: Callable[..., Harness], clock: ManualClock, sims: dict[str, SimNode]
) -> None:
    """A password file that vanished fails every node's keystores check, naming the file;
    putting it back (owner-only) restores readiness. The password never appears."""
    h, passwords = keymanager_harness(tmp_path, made, sims)
    gone = passwords[1]

    def remove() -> None:
        gone.unlink()

    def restore() -> None:
        gone.write_text("hunter2-very-secret\n")
        gone.chmod(0o600)

    reasons = flips(h, clock, remove, restore, {"node-a:keystores", "node-b:keystores"})
    for reason in reasons.values():
        assert str(gone) in reason and "cannot read" in reason
        assert str(passwords[0]) not in reason
        assert "hunter2" not in reason
    sim_only_reads(sims)


# ---- 4. the schedule -----------------------------------------------------------------------


def test_readiness_is_due_once_per_interval_for_one_process(
    tmp_path: Path, clock: ManualClock, agents: dict[str, Agent]
) -> None:
    """Two responders on one store: one claims each readiness round; after `interval` the
    round is due again, again for one of them only."""
    nodes = http_pair(agents)
    first = build(tmp_path, clock, nodes, pair={"readiness": {"interval": "30s"}})
    second = Harness(first.config, clock, owner="other")
    try:
        assert first.config.pair(PAIR).readiness.interval == 30.0
        assert first.responder.readiness_due(PAIR) is True
        assert second.responder.readiness_due(PAIR) is False
        assert first.responder.readiness_due(PAIR) is False
        clock.advance(29)
        assert not first.responder.readiness_due(PAIR)
        assert not second.responder.readiness_due(PAIR)
        clock.advance(1)
        assert second.responder.readiness_due(PAIR) is True
        assert first.responder.readiness_due(PAIR) is False
        clock.advance(30)
        assert [first.responder.readiness_due(PAIR), second.responder.readiness_due(PAIR)] == [
            True,
            False,
        ]
    finally:
        first.store.close()
        second.store.close()
    assert all(a.calls["status"] == 0 for a in agents.values())


def test_scheduled_drills_are_off_by_default_and_due_once_per_drill_every(
    tmp_path: Path, clock: ManualClock, agents: dict[str, Agent]
) -> None:
    """Without `drill_every` no drill is ever due and the runner has no drill job; with it, one
    process runs a drill per interval, the drill metrics appear, and the interval is exported
    for the overdue alert."""
    nodes = http_pair(agents)
    off = build(tmp_path / "off", clock, nodes)
    try:
        assert off.config.pair(PAIR).readiness.drill_every is None
        assert off.responder.drill_due(PAIR) is False
        runner = Runner(off.responder, poll_interval=1.0, lease=15.0)
        assert [key for key, *_ in runner._jobs()] == [PAIR, f"readiness:{PAIR}"]
    finally:
        off.store.close()
    on = build(tmp_path / "on", clock, nodes, pair={"readiness": {"drill_every": "24h"}})
    other = Harness(on.config, clock, owner="other")
    try:
        runner = Runner(on.responder, poll_interval=1.0, lease=15.0)
        assert f"drill:{PAIR}" in [key for key, *_ in runner._jobs()]
        assert on.responder.drill_due(PAIR) is True
        assert other.responder.drill_due(PAIR) is False
        report = on.responder.drill(PAIR, None, "schedule")
        assert report["ok"] is True, report["blockers"]
        metrics = on.client.get("/metrics").get_data(as_text=True)
        assert f'responder_drill_ok{{pair="{PAIR}"}} 1.0' in metrics
        assert f'responder_drill_every_seconds{{pair="{PAIR}"}} 86400.0' in metrics
        clock.advance(86400)
        assert other.responder.drill_due(PAIR) is True
        assert on.responder.drill_due(PAIR) is False
    finally:
        on.store.close()
        other.store.close()
    assert all(a.calls["fence"] == 0 and a.calls["activate"] == 0 for a in agents.values())


# ---- 5. status, API and CLI ----------------------------------------------------------------


def test_api_and_cli_status_carry_the_failing_reasons(
    made: Callable[..., Harness], clock: ManualClock, agents: dict[str, Agent]
) -> None:
    """GET /api/v1/pairs carries readiness with each failing reason, and `format_status`
    prints the NOT READY summary."""
    h = made(http_pair(agents))

    def pairs() -> list[dict[str, Any]]:
        resp = h.op("GET", "/api/v1/pairs")
        assert resp.status_code == 200
        found: list[dict[str, Any]] = resp.get_json()["pairs"]
        return found

    assert pairs()[0]["readiness"] is None
    agents["node-b"].healthy = False
    check_round(h)
    readiness = pairs()[0]["readiness"]
    assert readiness["ready"] is False
    assert readiness["summary"].startswith("NOT READY: node-b:standby: unhealthy")
    assert readiness["at"] is not None
    bad = {c["name"]: c for c in readiness["checks"] if c["ok"] is False}
    assert set(bad) == {"node-b:standby", "standby"}
    assert bad["node-b:standby"]["verdict"] == "FAIL"
    assert bad["standby"]["reason"] == "no standby is ready: a failover has no target"
    text = format_status(pairs())
    line = next(x for x in text.splitlines() if "readiness (" in x)
    assert "NOT READY: node-b:standby: unhealthy" in line
    assert "standby: no standby is ready" in line
    event = next(e for e in h.events() if e["kind"] == "readiness:not_ready")
    assert "node-b:standby" in json.dumps(event)
    only_reads(agents)


# ---- 6. config errors ----------------------------------------------------------------------

LEVEL = "pairs[0].nodes[0].fence_levels[0]"


def problems_of(tmp_path: Path, *, level: dict[str, Any] | None = None, **over: Any) -> list[str]:
    """The problems ConfigError names for the example config, changed by `over` and with
    `level` as node-a's one fence level."""
    data = base_config(lambda n: f"http://127.0.0.1:1/{n}", **over)
    if level is not None:
        data["pairs"][0]["nodes"][0]["fence_levels"] = [level]
    with pytest.raises(ConfigError) as caught:
        parse_config(data, tmp_path)
    return caught.value.problems


def test_fence_check_with_a_mutating_method_is_refused(tmp_path: Path) -> None:
    """A fence level `check` with method POST is refused, naming the key path."""
    check = {"url": "http://pdu/state", "method": "POST"}
    problems = problems_of(
        tmp_path, level={"type": "http", "url": "http://pdu/off", "check": check}
    )
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{LEVEL}.check.method: ")
    assert "GET" in problems[0] and "HEAD" in problems[0]


def test_unknown_key_under_check_is_refused(tmp_path: Path) -> None:
    """An unknown key under an http or command level's `check` is refused by key path."""
    http = {"type": "http", "url": "http://pdu/off", "check": {"url": "http://pdu/s", "body": {}}}
    assert problems_of(tmp_path, level=http) == [f"{LEVEL}.check.body: unknown key"]
    command = {"type": "command", "argv": ["true"], "check": {"command": ["true"], "env": {}}}
    assert problems_of(tmp_path, level=command) == [f"{LEVEL}.check.env: unknown key"]


def test_zero_readiness_interval_is_refused(tmp_path: Path) -> None:
    """`readiness.interval: 0` is refused, naming the key path."""
    problems = problems_of(tmp_path, pair={"readiness": {"interval": 0}})
    assert len(problems) == 1, problems
    assert problems[0].startswith("pairs[0].readiness.interval: ")
    problems = problems_of(tmp_path, pair={"readiness": {"interval": "1m", "bogus": 1}})
    assert problems == ["pairs[0].readiness.bogus: unknown key"]


def test_head_check_expecting_json_is_refused(tmp_path: Path) -> None:
    """A HEAD check with `expect_json` could never pass (a HEAD answer has no body): refused."""
    check = {"url": "http://pdu/state", "method": "HEAD", "expect_json": {"state": "on"}}
    problems = problems_of(
        tmp_path, level={"type": "http", "url": "http://pdu/off", "check": check}
    )
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{LEVEL}.check: ")
    assert "expect_json needs method GET" in problems[0]
