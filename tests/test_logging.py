"""Logs: one JSON object a line, with pair, failover id and reason; secrets never appear."""

from __future__ import annotations

import json
import logging

from pytest_httpserver import HTTPServer

from responder.logs import JsonFormatter
from tests.conftest import NODE_TOKEN, OPERATOR_TOKEN, WEBHOOK_TOKEN, alert, notification


def test_failover_logs_are_json_with_context_and_no_secrets(
    make_harness, clock, httpserver: HTTPServer, caplog
) -> None:
    """A full failover logs JSON lines carrying pair, failover_id and reason, and no token."""
    h = make_harness()
    httpserver.expect_request("/node-b/status").respond_with_json(
        {"healthy": True, "signing": False}
    )
    httpserver.expect_request("/node-a/fence").respond_with_json({"signing": False})
    httpserver.expect_request("/node-b/activate").respond_with_json({"signing": True})
    caplog.set_level(logging.INFO, logger="responder")
    h.post_alert(notification(alert()), token="wrong")
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    h.responder.step()
    fmt = JsonFormatter()
    lines = [json.loads(fmt.format(r)) for r in caplog.records]
    done = [
        line for line in lines if line.get("failover_id") == "mainnet-a-1" and "done" in line["msg"]
    ]
    assert done and done[0]["pair"] == "mainnet-a" and "node-b active" in done[0]["reason"]
    text = "\n".join(fmt.format(r) for r in caplog.records)
    for secret in (WEBHOOK_TOKEN, OPERATOR_TOKEN, NODE_TOKEN):
        assert secret not in text
    dump = json.dumps([e for e in h.events()]) + json.dumps(
        [j.to_json() for j in h.store.journal("mainnet-a-1")]
    )
    assert NODE_TOKEN not in dump
