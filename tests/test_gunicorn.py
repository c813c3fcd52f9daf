"""The real responder under gunicorn with two workers: concurrency and crash safety."""

from __future__ import annotations

import json
import threading

import pytest
import requests

from responder.store.sqlite import SqliteStore
from tests.conftest import WEBHOOK_TOKEN, alert, notification
from tests.fakenode import FakeNode
from tests.serverproc import ServerProcess

pytestmark = pytest.mark.e2e


def post(server: ServerProcess, body: dict) -> int:
    resp = requests.post(
        server.url + "/webhook",
        data=json.dumps(body),
        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"},
        timeout=10,
    )
    return resp.status_code


def test_twenty_concurrent_deliveries_make_one_failover(
    server: ServerProcess, nodes: dict[str, FakeNode]
) -> None:
    """The same alert delivered 20 times at once to 2 gunicorn workers causes exactly one failover."""
    body = notification(alert())
    barrier = threading.Barrier(20)
    codes: list[int] = []

    def deliver() -> None:
        barrier.wait()
        codes.append(post(server, body))

    threads = [threading.Thread(target=deliver) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 20
    server.wait_for(
        lambda p: p["active_node"] == "node-b" and p["phase"] != "failing_over", "node-b active"
    )
    assert nodes["node-a"].calls["fence"] == 1
    assert nodes["node-b"].calls["activate"] == 1
    events = server.api("/api/v1/events?pair=mainnet-a&limit=1000")["events"]
    assert [e["kind"] for e in events].count("failover_planned") == 1
    metrics = requests.get(server.url + "/metrics", timeout=5).text
    assert 'responder_notifications_total{outcome="recorded"} 20.0' in metrics


def _held(node: FakeNode, what: str) -> tuple[threading.Event, threading.Event]:
    """Make `what` take effect on the node, then hold the reply until released."""
    arrived, release = threading.Event(), threading.Event()

    def hook() -> None:
        arrived.set()
        release.wait(30)

    node.before_reply[what] = hook
    return arrived, release


def test_sigkill_between_fence_and_activate_activates_exactly_once(
    server: ServerProcess, nodes: dict[str, FakeNode]
) -> None:
    """Killed after the primary was fenced but before activation, a restarted responder activates once."""
    arrived, release = _held(nodes["node-a"], "fence")
    assert post(server, notification(alert())) == 200
    assert arrived.wait(20), "fence never reached node-a"
    server.kill()
    nodes["node-a"].before_reply.clear()
    release.set()
    assert nodes["node-b"].calls["activate"] == 0 and not nodes["node-a"].signing

    server.start()
    server.wait_for(lambda p: p["active_node"] == "node-b", "node-b active after restart")
    assert nodes["node-b"].calls["activate"] == 1
    assert nodes["node-a"].signing is False and nodes["node-b"].signing is True
    store = SqliteStore(server.config_path.parent / "var" / "responder.sqlite3")
    journal = store.journal("mainnet-a-1")
    store.close()
    resumed = [j.detail for j in journal if "resumed_by" in j.detail]
    assert [r["from_step"] for r in resumed] == ["fencing"]
    assert nodes["node-a"].calls["fence"] == 2  # the unconfirmed fence is repeated (idempotent)


def test_sigkill_during_activation_does_not_repeat_it(
    server: ServerProcess, nodes: dict[str, FakeNode]
) -> None:
    """Killed after the standby applied the activation but before its answer, restart does not activate again."""
    arrived, release = _held(nodes["node-b"], "activate")
    assert post(server, notification(alert())) == 200
    assert arrived.wait(20), "activation never reached node-b"
    server.kill()
    nodes["node-b"].before_reply.clear()
    release.set()

    server.start()
    pair = server.wait_for(lambda p: p["active_node"] == "node-b", "node-b active after restart")
    assert nodes["node-b"].calls["activate"] == 1
    assert "not repeated" in pair["failover"]["outcome_reason"]
