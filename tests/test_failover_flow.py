"""Webhook to fence to activate, against fake nodes on one HTTP server (ordered expectations)."""

from __future__ import annotations

import time

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.conftest import NODE_TOKEN, alert, notification

AUTH = {"Authorization": f"Bearer {NODE_TOKEN}"}


def expect_status(httpserver: HTTPServer, node: str, *, healthy: bool = True, signing: bool = False) -> None:
    httpserver.expect_ordered_request(f"/{node}/status", method="GET", headers=AUTH).respond_with_json(
        {"healthy": healthy, "signing": signing}
    )


def test_held_fault_fences_then_activates_exactly_once(make_harness, clock, httpserver: HTTPServer) -> None:
    """A trigger held past `hold` fences node-a once, then activates node-b once, in that order."""
    h = make_harness()
    expect_status(httpserver, "node-b")
    httpserver.expect_ordered_request("/node-a/fence", method="POST", headers=AUTH).respond_with_json({"signing": False})
    httpserver.expect_ordered_request("/node-b/activate", method="POST", headers=AUTH).respond_with_json({"signing": True})

    assert h.post_alert(notification(alert())).status_code == 200
    h.responder.step()
    assert h.pair()["phase"] == "pending"
    clock.advance(19.9)
    h.responder.step()
    assert len(httpserver.log) == 0
    clock.advance(0.2)
    h.responder.step()

    httpserver.check_assertions()
    assert [r.path for r, _ in httpserver.log] == ["/node-b/status", "/node-a/fence", "/node-b/activate"]
    assert h.roles() == {"node-a": "fenced", "node-b": "active"}
    assert h.pair()["active_node"] == "node-b"
    # later steps and repeated deliveries change nothing
    h.post_alert(notification(alert()))
    clock.advance(3600 * 2)
    h.responder.step()
    assert len(httpserver.log) == 3
