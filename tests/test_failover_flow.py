"""Webhook to fence to activate, against fake nodes on one HTTP server (ordered expectations)."""

from __future__ import annotations

import time

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.conftest import NODE_TOKEN, alert, notification

AUTH = {"Authorization": f"Bearer {NODE_TOKEN}"}


def expect_status(
    httpserver: HTTPServer, node: str, *, healthy: bool = True, signing: bool = False
) -> None:
    httpserver.expect_ordered_request(
        f"/{node}/status", method="GET", headers=AUTH
    ).respond_with_json({"healthy": healthy, "signing": signing})


def test_held_fault_fences_then_activates_exactly_once(
    make_harness, clock, httpserver: HTTPServer
) -> None:
    """A trigger held past `hold` fences node-a once, then activates node-b once, in that order."""
    h = make_harness()
    expect_status(httpserver, "node-b")
    httpserver.expect_ordered_request(
        "/node-a/fence", method="POST", headers=AUTH
    ).respond_with_json({"signing": False})
    httpserver.expect_ordered_request(
        "/node-b/activate", method="POST", headers=AUTH
    ).respond_with_json({"signing": True})

    assert h.post_alert(notification(alert())).status_code == 200
    h.responder.step()
    assert h.pair()["phase"] == "pending"
    clock.advance(19.9)
    h.responder.step()
    assert len(httpserver.log) == 0
    clock.advance(0.2)
    h.responder.step()

    httpserver.check_assertions()
    assert [r.path for r, _ in httpserver.log] == [
        "/node-b/status",
        "/node-a/fence",
        "/node-b/activate",
    ]
    assert h.roles() == {"node-a": "fenced", "node-b": "active"}
    assert h.pair()["active_node"] == "node-b"
    # later steps and repeated deliveries change nothing
    h.post_alert(notification(alert()))
    clock.advance(3600 * 2)
    h.responder.step()
    assert len(httpserver.log) == 3


def test_resolved_before_deadline_calls_no_node(
    make_harness, clock, httpserver: HTTPServer
) -> None:
    """A fault resolved before `hold` elapses is debounced: no node is called at all."""
    h = make_harness()
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(10)
    h.post_alert(notification(alert(status="resolved")))
    h.responder.step()
    clock.advance(60)
    h.responder.step()
    assert httpserver.log == []
    assert h.pair()["phase"] == "armed"
    assert "debounced" in h.pair()["reason"]
    assert h.roles() == {"node-a": "active", "node-b": "standby"}


def _fence_500(httpserver: HTTPServer) -> None:
    httpserver.expect_ordered_request("/node-a/fence", method="POST").respond_with_data(
        "boom", status=500
    )


def _fence_still_signing(httpserver: HTTPServer) -> None:
    httpserver.expect_ordered_request("/node-a/fence", method="POST").respond_with_json(
        {"signing": True}
    )


def _fence_timeout(httpserver: HTTPServer) -> None:
    def slow(_request: Request) -> Response:
        time.sleep(2.5)  # the fake node hangs past the driver's 2s timeout
        return Response('{"signing": false}', status=200, content_type="application/json")

    httpserver.expect_ordered_request("/node-a/fence", method="POST").respond_with_handler(slow)


import pytest  # noqa: E402


@pytest.mark.parametrize(
    ("break_fence", "expected"),
    [
        (_fence_500, "answered 500"),
        (_fence_still_signing, "'signing' is true"),
        (_fence_timeout, "timed out"),
    ],
    ids=["http-500", "still-signing", "timeout"],
)
def test_failed_fence_never_activates_and_blocks(
    make_harness, clock, httpserver: HTTPServer, break_fence, expected
) -> None:
    """Every way a fence can fail leaves the standby untouched, fails the failover and blocks until ack."""
    h = make_harness()
    expect_status(httpserver, "node-b")
    break_fence(httpserver)
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    [failover] = h.responder.step()

    paths = [r.path for r, _ in httpserver.log]
    assert "/node-b/activate" not in paths
    assert failover.step.value == "failed"
    assert expected in (failover.outcome_reason or "")
    pair = h.pair()
    assert pair["phase"] == "blocked"
    assert expected in pair["blocked_reason"]
    assert h.roles() == {"node-a": "active", "node-b": "standby"}

    # still blocked: a new fault episode is recorded but nothing is acted on
    h.post_alert(notification(alert(starts_at="2026-11-25T19:00:00Z")))
    clock.advance(3 * 3600)
    h.responder.step()
    assert [r.path for r, _ in httpserver.log] == paths

    # an operator acknowledgement re-arms automation
    resp = h.op("POST", "/api/v1/pairs/mainnet-a/ack")
    assert resp.status_code == 200, resp.json
    # the new episode has been firing for hours, so re-armed automation acts on it at once
    assert h.pair()["phase"] == "failing_over"


def test_extra_fence_level_confirms_when_driver_fence_fails(
    make_harness, clock, httpserver: HTTPServer, tmp_path
) -> None:
    """When the driver's fence fails, the next fence level (a power switch over HTTP) may confirm it."""
    nodes = [
        {
            "name": "node-a",
            "match": {"node": "node-a"},
            "driver": {"type": "http", "url": httpserver.url_for("/node-a"), "timeout": "2s"},
            "fence_levels": [
                {"type": "http", "url": httpserver.url_for("/pdu/outlet/1/off"), "method": "POST"},
            ],
        },
        {
            "name": "node-b",
            "match": {"node": "node-b"},
            "driver": {"type": "http", "url": httpserver.url_for("/node-b"), "timeout": "2s"},
        },
    ]
    h = make_harness(nodes=nodes)
    httpserver.expect_ordered_request("/node-b/status").respond_with_json(
        {"healthy": True, "signing": False}
    )
    httpserver.expect_ordered_request("/node-a/fence").respond_with_data("", status=503)
    httpserver.expect_ordered_request("/pdu/outlet/1/off", method="POST").respond_with_data("ok")
    httpserver.expect_ordered_request("/node-b/activate").respond_with_json({"signing": True})
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    [failover] = h.responder.step()
    httpserver.check_assertions()
    assert failover.step.value == "done"
    assert h.roles() == {"node-a": "fenced", "node-b": "active"}
    journal = h.store.journal(failover.id)
    ends = [j.detail for j in journal if j.step == "fencing" and j.phase == "end"]
    assert [e["confirmed"] for e in ends] == [False, True]


def test_every_fence_level_failing_aborts_with_reasons(
    make_harness, clock, httpserver: HTTPServer, tmp_path
) -> None:
    """All fence levels failing (driver, then a command) means failed, nothing activated."""
    nodes = [
        {
            "name": "node-a",
            "match": {"node": "node-a"},
            "driver": {"type": "http", "url": httpserver.url_for("/node-a"), "timeout": "2s"},
            "fence_levels": [{"type": "command", "argv": ["false"]}],
        },
        {
            "name": "node-b",
            "match": {"node": "node-b"},
            "driver": {"type": "http", "url": httpserver.url_for("/node-b"), "timeout": "2s"},
        },
    ]
    h = make_harness(nodes=nodes)
    httpserver.expect_ordered_request("/node-b/status").respond_with_json(
        {"healthy": True, "signing": False}
    )
    httpserver.expect_ordered_request("/node-a/fence").respond_with_data("", status=500)
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    [failover] = h.responder.step()
    assert failover.step.value == "failed"
    assert "level 0" in failover.outcome_reason and "level 1" in failover.outcome_reason
    assert "/node-b/activate" not in [r.path for r, _ in httpserver.log]
    assert h.pair()["phase"] == "blocked"


def test_unhealthy_standby_by_alert_blocks_failover(
    make_harness, clock, httpserver: HTTPServer
) -> None:
    """A trigger firing on the standby makes it ineligible; with no other standby, failover is blocked."""
    h = make_harness()
    h.post_alert(notification(alert(node="node-b", alertname="BeaconNodeStalled")))
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(25)
    h.responder.step()
    assert httpserver.log == []
    pair = h.pair()
    assert pair["phase"] == "pending"
    assert "no healthy standby" in pair["reason"] and "node-b" in pair["reason"]
    # once the standby recovers, the failover proceeds
    expect_status(httpserver, "node-b")
    httpserver.expect_ordered_request("/node-a/fence").respond_with_json({"signing": False})
    httpserver.expect_ordered_request("/node-b/activate").respond_with_json({"signing": True})
    h.post_alert(
        notification(alert(node="node-b", alertname="BeaconNodeStalled", status="resolved"))
    )
    h.responder.step()
    httpserver.check_assertions()
    assert h.roles() == {"node-a": "fenced", "node-b": "active"}


def test_standby_unhealthy_by_probe_aborts(make_harness, clock, httpserver: HTTPServer) -> None:
    """The target's status probe saying unhealthy aborts before anything is fenced."""
    h = make_harness()
    expect_status(httpserver, "node-b", healthy=False)
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    [failover] = h.responder.step()
    assert failover.step.value == "aborted"
    assert "unhealthy" in failover.outcome_reason
    assert [r.path for r, _ in httpserver.log] == ["/node-b/status"]
    assert h.pair()["phase"] == "blocked"
    assert h.roles() == {"node-a": "active", "node-b": "standby"}


def test_dry_run_sends_no_mutating_request_and_records_plan(
    make_harness, clock, httpserver: HTTPServer
) -> None:
    """Dry-run probes for real but sends no fence or activate; the events show the full plan."""
    h = make_harness(dry_run=True)
    httpserver.expect_request("/node-b/status", method="GET").respond_with_json(
        {"healthy": True, "signing": False}
    )
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    [failover] = h.responder.step()
    assert failover.step.value == "done" and failover.dry_run
    assert [r.method for r, _ in httpserver.log] == ["GET"]
    assert h.roles() == {"node-a": "active", "node-b": "standby"}
    would = [e for e in h.events() if e["kind"] == "would_call"]
    assert [(e["data"]["action"], e["node"]) for e in reversed(would)] == [
        ("fence", "node-a"),
        ("activate", "node-b"),
    ]
    request = would[-1]["data"]["request"]
    assert request["method"] == "POST" and request["url"].endswith("/node-a/fence")
    assert request["headers"]["Authorization"] == "Bearer ***"
    assert NODE_TOKEN not in str(h.events())


def test_failed_activation_fences_target_and_pages(
    make_harness, clock, httpserver: HTTPServer
) -> None:
    """Activation failing leaves both nodes fenced (stuck but safe) and blocks automation."""
    h = make_harness()
    expect_status(httpserver, "node-b")
    httpserver.expect_ordered_request("/node-a/fence").respond_with_json({"signing": False})
    httpserver.expect_ordered_request("/node-b/activate").respond_with_data("no", status=500)
    httpserver.expect_ordered_request("/node-b/fence").respond_with_json({"signing": False})
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    [failover] = h.responder.step()
    httpserver.check_assertions()
    assert failover.step.value == "failed"
    assert h.roles() == {"node-a": "fenced", "node-b": "fenced"}
    assert h.pair()["active_node"] is None
    assert h.pair()["phase"] == "blocked"


def test_manual_failover_and_unfence(make_harness, clock, httpserver: HTTPServer) -> None:
    """An operator fails over by hand through the same path, then un-fences the repaired node."""
    h = make_harness()
    expect_status(httpserver, "node-b")
    httpserver.expect_ordered_request("/node-a/fence").respond_with_json({"signing": False})
    httpserver.expect_ordered_request("/node-b/activate").respond_with_json({"signing": True})
    resp = h.op("POST", "/api/v1/pairs/mainnet-a/failover", json={"target": "node-b"})
    assert resp.status_code == 200, resp.json
    assert resp.json["failover_id"] == "mainnet-a-1"
    # a second request while one is in flight is refused
    again = h.op("POST", "/api/v1/pairs/mainnet-a/failover", json={"target": "node-b"})
    assert again.status_code == 409
    h.responder.step()
    httpserver.check_assertions()
    assert h.roles() == {"node-a": "fenced", "node-b": "active"}

    httpserver.expect_ordered_request("/node-a/status").respond_with_json(
        {"healthy": True, "signing": True}
    )
    refused = h.op("POST", "/api/v1/pairs/mainnet-a/nodes/node-a/unfence")
    assert refused.status_code == 409 and "signing" in refused.json["error"]
    assert h.roles()["node-a"] == "fenced"
    httpserver.expect_ordered_request("/node-a/status").respond_with_json(
        {"healthy": True, "signing": False}
    )
    ok = h.op("POST", "/api/v1/pairs/mainnet-a/nodes/node-a/unfence")
    assert ok.status_code == 200, ok.json
    assert h.roles() == {"node-a": "standby", "node-b": "active"}


def test_pause_records_but_does_not_act(make_harness, clock, httpserver: HTTPServer) -> None:
    """A paused pair keeps tracking alerts but calls no node; resume acts on a fault still firing."""
    h = make_harness()
    assert h.op("POST", "/api/v1/pairs/mainnet-a/pause").status_code == 200
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(60)
    h.responder.step()
    assert httpserver.log == []
    assert h.pair()["paused"] and "paused" in h.pair()["reason"]
    expect_status(httpserver, "node-b")
    httpserver.expect_ordered_request("/node-a/fence").respond_with_json({"signing": False})
    httpserver.expect_ordered_request("/node-b/activate").respond_with_json({"signing": True})
    assert h.op("POST", "/api/v1/pairs/mainnet-a/resume").status_code == 200
    h.responder.step()
    httpserver.check_assertions()
    assert h.roles()["node-b"] == "active"


def test_unreadable_token_file_fails_the_fence_instead_of_hanging(
    make_harness, clock, httpserver: HTTPServer, tmp_path
) -> None:
    """A node token file removed at run time is a failed fence step: the failover ends failed, nothing activated."""
    h = make_harness()
    expect_status(httpserver, "node-b")
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    (tmp_path / "secrets" / "node-token").write_text("")
    # node-b's probe uses the same token file, so the failover aborts at the probe, cleanly
    [failover] = h.responder.step()
    assert failover.step.value in ("aborted", "failed")
    assert "node-token" in failover.outcome_reason
    assert h.pair()["phase"] == "blocked"
    assert "/node-b/activate" not in [r.path for r, _ in httpserver.log]


def test_hold_counts_from_receipt_and_failover_records_its_signals(
    make_harness, clock, httpserver: HTTPServer
) -> None:
    """Hold runs from when the delivery was recorded, even if processed later; the failover keeps its triggers."""
    h = make_harness()
    h.post_alert(notification(alert()))
    clock.advance(5)  # recorded, not yet processed (e.g. a busy or restarting worker)
    h.responder.process_notifications()
    assert h.pair()["pending"]["seconds_left"] == 15.0
    expect_status(httpserver, "node-b")
    httpserver.expect_ordered_request("/node-a/fence").respond_with_json({"signing": False})
    httpserver.expect_ordered_request("/node-b/activate").respond_with_json({"signing": True})
    clock.advance(15)
    [failover] = h.responder.step()
    [signal] = failover.data["signals"]
    assert (signal["alertname"], signal["node"], signal["starts_at"]) == (
        "ValidatorClientDown",
        "node-a",
        "2026-11-25T18:28:07.908132859Z",
    )
    assert signal["since"] == failover.created_at - 20
