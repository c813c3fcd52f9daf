"""The `http` driver's hand-off: what an agent's fence returns (a Solana tower, a CometBFT sign
state) is persisted with the fence and passed, unchanged, to the activation; without it the
pair's `handoff.without` gate decides (an operator, or the chain seen through the target agent).
"""

from __future__ import annotations

import json
import re
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from responder.clock import ManualClock
from tests.conftest import alert, notification

BLOB = {"kind": "test-state", "state": {"height": "1234", "round": 0, "step": 3}, "sha256": "ab"}


class Agent:
    """Two stateful node agents (and node-a's power switch) behind one test server."""

    def __init__(self, httpserver: HTTPServer) -> None:
        self.signing = {"node-a": True, "node-b": False}
        self.powered = {"node-a": True, "node-b": True}
        self.handoff: Any = BLOB
        self.fence_fails = False
        self.position = {"unit": "height", "current": 100, "last_signed": 99}
        self.bodies: list[tuple[str, dict[str, Any]]] = []
        httpserver.expect_request(re.compile(r"^/(node-[ab]|pdu)/")).respond_with_handler(self)

    def __call__(self, request: Request) -> Response:
        path = request.path.strip("/")
        body = json.loads(request.get_data() or b"{}")
        self.bodies.append((request.path, body))
        if path == "pdu/off":
            self.powered["node-a"] = self.signing["node-a"] = False
            return Response("ok")
        node, action = path.split("/")
        if not self.powered[node]:
            return Response("off", status=503)
        if action == "status":
            return self._json({"healthy": True, "signing": self.signing[node]})
        if action == "liveness":
            return self._json(self.position)
        if action == "fence":
            if self.fence_fails:
                return Response("no", status=500)
            self.signing[node] = False
            answer: dict[str, Any] = {"signing": False}
            if self.handoff is not None:
                answer["handoff"] = self.handoff
            return self._json(answer)
        self.signing[node] = True
        return self._json({"signing": True})

    @staticmethod
    def _json(body: Any) -> Response:
        return Response(json.dumps(body), content_type="application/json")

    def sent(self, path: str) -> list[dict[str, Any]]:
        return [b for p, b in self.bodies if p == path]


def agent_nodes(httpserver: HTTPServer, *, power: bool = False) -> list[dict[str, Any]]:
    def node(name: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": name,
            "match": {"node": name},
            "driver": {
                "type": "http",
                "url": httpserver.url_for(f"/{name}"),
                "timeout": "1s",
                "connect_timeout": "1s",
                "handoff": "required",
            },
        }
        if power and name == "node-a":
            out["fence_levels"] = [{"type": "http", "url": httpserver.url_for("/pdu/off")}]
        return out

    return [node("node-a"), node("node-b")]


def fail_over(h: Any, clock: ManualClock) -> Any:
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    return h.responder.step()


def test_the_fence_hand_off_reaches_the_activation_unchanged(
    make_harness, clock: ManualClock, httpserver: HTTPServer
) -> None:
    """What the agent's fence returned is persisted with the fence and sent, unchanged, in the
    activation request; the journal keeps its size, not its content."""
    agent = Agent(httpserver)
    h = make_harness(nodes=agent_nodes(httpserver))
    [failover] = fail_over(h, clock)
    assert failover.step.value == "done", failover.outcome_reason
    [activate] = agent.sent("/node-b/activate")
    assert activate["handoff"] == BLOB and activate["handoff_waived"] is None
    assert activate["planned"] is False
    assert (failover.data or {})["handoff"] == {"agent": BLOB, "from": "node-a"}
    ends = [j.detail for j in h.store.journal(failover.id) if j.phase == "end"]
    fence_end = next(e for e in ends if e.get("confirmed") is True and "level" in e)
    assert "handoff" not in fence_end["data"] and fence_end["data"]["handoff_bytes"] > 0


def test_without_a_hand_off_the_activation_waits_for_an_operator(
    make_harness, clock: ManualClock, httpserver: HTTPServer
) -> None:
    """A node that needs a hand-off is not activated after a fence that brought none: the
    failover waits until an operator confirms, then the activation says who waived it."""
    agent = Agent(httpserver)
    agent.fence_fails = True  # the power switch fences node-a: no hand-off
    h = make_harness(nodes=agent_nodes(httpserver, power=True))
    [failover] = fail_over(h, clock)
    assert failover.step.value == "awaiting", failover.outcome_reason
    assert agent.sent("/node-b/activate") == []
    assert "no hand-off was handed over by the fence of node-a" in str(
        (failover.data or {})["waiting"]
    )
    assert h.op("POST", "/api/v1/pairs/mainnet-a/confirm").status_code == 200
    [done] = h.responder.run_failovers()
    assert done.step.value == "done", done.outcome_reason
    [activate] = agent.sent("/node-b/activate")
    assert activate["handoff"] is None
    assert activate["handoff_waived"].startswith("confirmed by operator")


def test_chain_gate_waits_for_quiet_heights_counted_from_the_fence(
    make_harness, clock: ManualClock, httpserver: HTTPServer
) -> None:
    """With `handoff.without: chain`, the activation waits until the target sees no signature
    for `quiet` heights after the first look; a view that does not advance never lets it go."""
    agent = Agent(httpserver)
    agent.fence_fails = True
    h = make_harness(
        nodes=agent_nodes(httpserver, power=True),
        pair={"handoff": {"without": "chain", "quiet": 10, "poll": "2s"}},
    )
    [failover] = fail_over(h, clock)
    assert failover.step.value == "awaiting"
    for _ in range(5):  # stalled at height 100: never quiet enough
        clock.advance(2)
        assert h.responder.run_failovers()[0].step.value == "awaiting"
    agent.position = {"unit": "height", "current": 105, "last_signed": 99}
    clock.advance(2)
    assert h.responder.run_failovers()[0].step.value == "awaiting"  # 5 of 10 since the fence
    agent.position = {"unit": "height", "current": 110, "last_signed": 99}
    clock.advance(2)
    [done] = h.responder.run_failovers()
    assert done.step.value == "done", done.outcome_reason
    [activate] = agent.sent("/node-b/activate")
    assert activate["handoff"] is None
    assert activate["handoff_waived"].startswith("chain: no signature of the validator")


def test_a_signature_after_the_fence_restarts_the_quiet_count(
    make_harness, clock: ManualClock, httpserver: HTTPServer
) -> None:
    """A signature seen after the fence proves the old primary may still sign: the quiet
    heights count from it, not from the fence."""
    agent = Agent(httpserver)
    agent.fence_fails = True
    h = make_harness(
        nodes=agent_nodes(httpserver, power=True),
        pair={"handoff": {"without": "chain", "quiet": 10, "poll": "2s"}},
    )
    assert fail_over(h, clock)[0].step.value == "awaiting"
    agent.position = {"unit": "height", "current": 112, "last_signed": 108}
    clock.advance(2)
    assert h.responder.run_failovers()[0].step.value == "awaiting"
    assert agent.sent("/node-b/activate") == []
    agent.position = {"unit": "height", "current": 118, "last_signed": 108}
    clock.advance(2)
    assert h.responder.run_failovers()[0].step.value == "done"


def test_a_hand_off_that_is_not_an_object_fails_the_fence_level(
    make_harness, clock: ManualClock, httpserver: HTTPServer
) -> None:
    """An agent answering a fence with a malformed hand-off is not a confirmed fence."""
    agent = Agent(httpserver)
    agent.handoff = "not an object"
    h = make_harness(nodes=agent_nodes(httpserver))
    [failover] = fail_over(h, clock)
    assert failover.step.value == "failed"
    assert "'handoff' must be a JSON object" in str(failover.outcome_reason)
    assert agent.sent("/node-b/activate") == []


def test_a_switchover_tells_the_agent_it_is_planned(
    make_harness, clock: ManualClock, httpserver: HTTPServer
) -> None:
    """The fence of a switchover carries planned: true (a Solana agent then waits for a
    restart window first); the hand-off still reaches the activation."""
    agent = Agent(httpserver)
    h = make_harness(nodes=agent_nodes(httpserver))
    resp = h.op("POST", "/api/v1/pairs/mainnet-a/switchover", json={"target": "node-b"})
    assert resp.status_code == 200, resp.get_json()
    [done] = h.responder.run_failovers()
    assert done.step.value == "done", done.outcome_reason
    [fence] = agent.sent("/node-a/fence")
    assert fence["planned"] is True
    assert agent.sent("/node-b/activate")[0]["handoff"] == BLOB
