"""What operators read: reasons without `None` or repeats, start-up and shutdown logs, ISO
timestamps in the journal, and errors that say how to call the API (issue 11, item 6)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from pytest_httpserver import HTTPServer

from responder.clock import ManualClock
from responder.config import load_config, parse_config
from responder.policy import AlertsReceived, decide
from responder.state import PairState, Role
from responder.wsgi import startup_summary
from tests.conftest import Harness, alert, base_config, notification, write_config
from tests.fakenode import FakeNode
from tests.serverproc import ServerProcess, free_port
from tests.test_policy import alert as policy_alert
from tests.test_policy import make_pair
from tests.tokens import NODE_TOKEN

T0 = 1_795_000_000.0


def test_alert_with_no_active_node_says_so_without_none() -> None:
    """With no node recorded active, an alert's reason says that, never 'active node None'."""
    pair = make_pair()
    state = PairState.initial(pair, T0)
    state = state.evolve(roles={"node-a": Role.FENCED, "node-b": Role.STANDBY})
    decision = decide(state, AlertsReceived((policy_alert("node-b"),)), T0 + 1, pair)
    assert "None" not in decision.reason
    assert "no node is recorded active" in decision.reason
    assert "responder adopt mainnet-a NODE" in decision.reason


def dry_run_failover(h: Harness, clock: ManualClock, httpserver: HTTPServer) -> str:
    """Run one dry-run failover from node-a to node-b; its id."""
    httpserver.expect_request("/node-b/status", method="GET").respond_with_json(
        {"healthy": True, "signing": False}
    )
    httpserver.expect_request("/node-a/status", method="GET").respond_with_json(
        {"healthy": False, "signing": True}
    )
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    [failover] = h.responder.step()
    assert failover.step.value == "done"
    return failover.id


def test_dry_run_reasons_say_dry_run_once(make_harness, clock, httpserver: HTTPServer) -> None:
    """A dry-run's reasons say 'dry-run' once each: no 'dry-run complete: dry-run:' and no None."""
    h = make_harness(dry_run=True)
    dry_run_failover(h, clock, httpserver)
    reasons = [e["reason"] for e in h.events()] + [h.pair()["reason"]]
    assert any("dry-run complete: would have activated node-b" in r for r in reasons), reasons
    for reason in reasons:
        assert reason.count("dry-run") <= 1, reason
        assert "None" not in reason, reason


def test_manual_failover_without_active_node_names_no_none(
    tmp_path: Path, clock: ManualClock
) -> None:
    """A manual failover when no node is recorded active reads 'no active node to fence'."""
    nodes = {
        "node-a": FakeNode("node-a", signing=False, token=NODE_TOKEN).start(),
        "node-b": FakeNode("node-b", signing=False, token=NODE_TOKEN).start(),
    }
    try:
        h = Harness(load_config(write_config(tmp_path, base_config(lambda n: nodes[n].url))), clock)
        try:
            h.responder.status()  # creates the pair's initial state
            with h.store.transaction() as txn:
                stored = txn.load_pair("mainnet-a")
                assert stored is not None
                fenced = {"node-a": Role.FENCED, "node-b": Role.STANDBY}
                txn.save_pair(stored.evolve(roles=fenced))
            resp = h.op("POST", "/api/v1/pairs/mainnet-a/failover", json={"target": "node-b"})
            assert resp.status_code == 200, resp.json
            [failover] = h.responder.step()
            assert failover.step.value == "done", failover.outcome_reason
            assert failover.outcome_reason == (
                "no active node to fence, node-b active (verified signing)"
            )
            for text in [e["reason"] for e in h.events()]:
                assert "None" not in text, text
        finally:
            h.store.close()
    finally:
        for node in nodes.values():
            node.stop()


def test_journal_entries_carry_an_iso_timestamp(
    make_harness, clock, httpserver: HTTPServer
) -> None:
    """Each journal entry the API shows has `at` (ISO 8601, UTC) equal to its Unix `ts`."""
    h = make_harness(dry_run=True)
    failover_id = dry_run_failover(h, clock, httpserver)
    body = h.op("GET", f"/api/v1/failovers/{failover_id}").json
    assert body["journal"]
    for entry in body["journal"]:
        at = datetime.fromisoformat(entry["at"])
        assert entry["at"].endswith("+00:00")
        assert abs(at.timestamp() - entry["ts"]) < 0.001


def test_form_encoded_failover_names_the_header_and_the_body(make_harness) -> None:
    """`curl -d target=node-b` (a form) gets a 400 naming the JSON body and the header."""
    h = make_harness()
    resp = h.op(
        "POST",
        "/api/v1/pairs/mainnet-a/failover",
        data="target=node-b",
        content_type="application/x-www-form-urlencoded",
    )
    assert resp.status_code == 400
    error = resp.json["error"]
    assert '{"target": "<node>"}' in error
    assert "Content-Type: application/json" in error
    assert "application/x-www-form-urlencoded" in error


def test_json_without_content_type_is_still_accepted(make_harness) -> None:
    """`curl -d '{"target": ...}'` without the header still works: the body decides."""
    h = make_harness()
    resp = h.op(
        "POST",
        "/api/v1/pairs/mainnet-a/failover",
        data='{"target": "node-a"}',
        content_type="application/x-www-form-urlencoded",
    )
    assert resp.status_code == 409  # parsed: node-a is already active
    assert "already the active node" in resp.json["error"]


def test_unfence_unknown_node_is_404_like_an_unknown_pair(make_harness) -> None:
    """An unknown node on unfence is 404 (as an unknown pair), a known one is judged (409)."""
    h = make_harness()
    node = h.op("POST", "/api/v1/pairs/mainnet-a/nodes/node-z/unfence")
    assert node.status_code == 404
    assert node.json["error"] == "unknown node 'node-z' in pair 'mainnet-a'"
    pair = h.op("POST", "/api/v1/pairs/nope/nodes/node-a/unfence")
    assert pair.status_code == 404 and "unknown pair" in pair.json["error"]
    known = h.op("POST", "/api/v1/pairs/mainnet-a/nodes/node-a/unfence")
    assert known.status_code == 409
    anonymous = h.client.post("/api/v1/pairs/mainnet-a/nodes/node-z/unfence")
    assert anonymous.status_code == 401  # the config's node names are not shown to strangers


def test_startup_summary_names_address_pairs_dry_run_and_state(tmp_path: Path) -> None:
    """The start-up line says where it listens, its pairs and nodes, dry-run and the store."""
    data = base_config(lambda n: f"http://127.0.0.1:{18001 if n == 'node-a' else 18002}")
    data["pairs"][0]["dry_run"] = True
    config = parse_config(data, tmp_path)
    line = startup_summary(config, "127.0.0.1:9095", 2)
    assert line.startswith("responder listening on http://127.0.0.1:9095 with 2 workers")
    assert "pairs: mainnet-a (node-a, node-b) [dry-run]" in line
    assert "dry-run: on for mainnet-a" in line
    assert f"state: sqlite {tmp_path}/var/responder.sqlite3" in line


def log_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for raw in path.read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            out.append(json.loads(raw))
    return out


def test_server_logs_its_start_once_and_its_stop(tmp_path: Path) -> None:
    """Under gunicorn with two workers, the start-up summary is logged once, then a stop line."""
    data = base_config(lambda n: f"http://127.0.0.1:{18001 if n == 'node-a' else 18002}")
    path = write_config(tmp_path, data)
    server = ServerProcess(path, free_port(), tmp_path / "responder.log").start()
    server.stop()
    lines = log_lines(server.log_path)
    ready = [line for line in lines if line.get("event") == "ready"]
    assert len(ready) == 1, lines
    assert f"listening on http://127.0.0.1:{server.port} with 2 workers" in ready[0]["msg"]
    assert "pairs: mainnet-a (node-a, node-b)" in ready[0]["msg"]
    assert "dry-run: off" in ready[0]["msg"]
    assert [line["msg"] for line in lines if line.get("event") == "stop"] == [
        "responder stopped: every worker has exited"
    ]
