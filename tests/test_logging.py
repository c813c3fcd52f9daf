"""Logs: one JSON object a line, with pair, failover id and reason; secrets never appear."""

from __future__ import annotations

import json
import logging
import re

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from responder.logs import JsonFormatter
from tests.conftest import NODE_TOKEN, OPERATOR_TOKEN, WEBHOOK_TOKEN, alert, notification


def test_failover_logs_are_json_with_context_and_no_secrets(
    make_harness, clock, httpserver: HTTPServer, caplog
) -> None:
    """A full failover logs JSON lines carrying pair, failover_id and reason, and no token."""
    h = make_harness()
    signing = {"node-a": True, "node-b": False}

    def agent(request: Request) -> Response:
        """A node agent that remembers whether it signs: a fence and an activation are verified."""
        node, action = request.path.strip("/").split("/")
        if action != "status":
            signing[node] = action == "activate"
        body = {"healthy": True, "signing": signing[node]}
        return Response(json.dumps(body), status=200, content_type="application/json")

    httpserver.expect_request(
        re.compile(r"^/node-[ab]/(status|fence|activate)$")
    ).respond_with_handler(agent)
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
    posts = [r.path for r, _ in httpserver.log if r.method == "POST"]
    assert posts == ["/node-a/fence", "/node-b/activate"]
    text = "\n".join(fmt.format(r) for r in caplog.records)
    for secret in (WEBHOOK_TOKEN, OPERATOR_TOKEN, NODE_TOKEN):
        assert secret not in text
    dump = json.dumps([e for e in h.events()]) + json.dumps(
        [j.to_json() for j in h.store.journal("mainnet-a-1")]
    )
    assert NODE_TOKEN not in dump
