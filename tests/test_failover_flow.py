"""Webhook to fence to activate, against fake nodes on one HTTP server.

Most tests use ordered expectations: every request, status reads included, must come in the
exact order given. Where the number of status reads depends on time (a settle loop), a stateful
fake (`Agents`) answers instead and the test checks the order of calls from the server log.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from responder.clock import ManualClock
from tests.conftest import NODE_TOKEN, alert, notification

AUTH = {"Authorization": f"Bearer {NODE_TOKEN}"}
SETTLE = 4.0  # the http driver's settle time in the shared config: connect_timeout 2s + timeout 2s


def expect_status(
    httpserver: HTTPServer, node: str, *, healthy: bool = True, signing: bool = False
) -> None:
    httpserver.expect_ordered_request(
        f"/{node}/status", method="GET", headers=AUTH
    ).respond_with_json({"healthy": healthy, "signing": signing})


def expect_fence(httpserver: HTTPServer, node: str) -> None:
    """A fence that claims success, then the independent read verifying the node is silent."""
    httpserver.expect_ordered_request(
        f"/{node}/fence", method="POST", headers=AUTH
    ).respond_with_json({"signing": False})
    expect_status(httpserver, node)


def expect_activate(httpserver: HTTPServer, node: str, *, others: tuple[str, ...]) -> None:
    """Every other node read not signing right before, the one activation, then the read
    verifying the target signs."""
    for other in others:
        expect_status(httpserver, other)
    httpserver.expect_ordered_request(
        f"/{node}/activate", method="POST", headers=AUTH
    ).respond_with_json({"signing": True})
    expect_status(httpserver, node, signing=True)


def paths(httpserver: HTTPServer, method: str | None = None) -> list[str]:
    return [r.path for r, _ in httpserver.log if method is None or r.method == method]


def answers(httpserver: HTTPServer) -> list[tuple[str, str]]:
    """Every request in order as (path, what it answered): status reads as 'signing',
    'not signing' or 'unreachable', other calls as their HTTP status code."""
    out = []
    for request, response in httpserver.log:
        said = str(response.status_code)
        if request.path.endswith("/status"):
            said = "unreachable" if response.status_code != 200 else Agents._said(response)
        out.append((request.path, said))
    return out


class Agents:
    """Stateful node agents (and node-a's power switch) behind the one test server.

    In the style of tests/fakenode.py: each node keeps whether it signs and whether it answers
    at all, so any number of status reads gets a consistent answer. A path in `fail` answers that
    HTTP error and changes nothing, unless it is also in `lands_late`: then it takes effect
    anyway, just before the node's next status answer (a call landing after the caller gave up).
    Every request is recorded with the responder's monotonic clock and what it answered.
    """

    def __init__(self, httpserver: HTTPServer, clock: ManualClock) -> None:
        self.clock = clock
        self.signing = {"node-a": True, "node-b": False}
        self.powered = {"node-a": True, "node-b": True}
        self.fail: dict[str, int] = {}
        self.lands_late: set[str] = set()
        self.landing: dict[str, bool] = {}
        self.calls: list[tuple[float, str, str]] = []  # (monotonic, path, answer)
        httpserver.expect_request(re.compile(r"^/(node-[ab]|pdu)/")).respond_with_handler(self)

    def __call__(self, request: Request) -> Response:
        response = self._answer(request)
        said = str(response.status_code)
        if request.path.endswith("/status"):
            said = "unreachable" if response.status_code != 200 else self._said(response)
        self.calls.append((self.clock.monotonic(), request.path, said))
        return response

    def _answer(self, request: Request) -> Response:
        if request.path == "/pdu/outlet/1/off":
            self.powered["node-a"] = False
            self.signing["node-a"] = False
            return Response("ok")
        node, action = request.path.strip("/").split("/")
        if action == "status":
            if node in self.landing:
                self.signing[node] = self.landing.pop(node)
            if not self.powered[node]:
                return Response("powered off", status=503)
            return self._json({"healthy": True, "signing": self.signing[node]})
        want = action == "activate"
        if request.path in self.fail:
            if request.path in self.lands_late:
                self.landing[node] = want
            return Response("boom", status=self.fail[request.path])
        self.signing[node] = want
        return self._json({"signing": want})

    @staticmethod
    def _json(body: dict[str, Any]) -> Response:
        return Response(json.dumps(body), status=200, content_type="application/json")

    @staticmethod
    def _said(response: Response) -> str:
        return "signing" if json.loads(response.get_data())["signing"] else "not signing"

    def reads_after(self, path: str, node: str) -> list[tuple[float, str]]:
        """(time, answer) of each status read of `node` after the last call to `path`."""
        last = max(i for i, (_, p, _) in enumerate(self.calls) if p == path)
        return [(t, said) for t, p, said in self.calls[last + 1 :] if p == f"/{node}/status"]


def span(reads: list[tuple[float, str]]) -> float:
    """Seconds of responder time from the first to the last of these reads."""
    return reads[-1][0] - reads[0][0]


def test_held_fault_fences_then_activates_exactly_once(
    make_harness, clock, httpserver: HTTPServer
) -> None:
    """A trigger held past `hold` fences node-a once, then activates node-b once, in that order."""
    h = make_harness()
    expect_status(httpserver, "node-b")
    expect_fence(httpserver, "node-a")
    expect_activate(httpserver, "node-b", others=("node-a",))

    assert h.post_alert(notification(alert())).status_code == 200
    h.responder.step()
    assert h.pair()["phase"] == "pending"
    clock.advance(19.9)
    h.responder.step()
    assert len(httpserver.log) == 0
    clock.advance(0.2)
    h.responder.step()

    httpserver.check_assertions()
    assert answers(httpserver) == [
        ("/node-b/status", "not signing"),  # the target is probed first
        ("/node-a/fence", "200"),
        ("/node-a/status", "not signing"),  # the fence is verified by an independent read
        ("/node-a/status", "not signing"),  # every other node is silent right before activation
        ("/node-b/activate", "200"),
        ("/node-b/status", "signing"),  # the activation is verified by an independent read
    ]
    assert h.roles() == {"node-a": "fenced", "node-b": "active"}
    assert h.pair()["active_node"] == "node-b"
    # later steps and repeated deliveries change nothing
    h.post_alert(notification(alert()))
    clock.advance(3600 * 2)
    h.responder.step()
    assert len(httpserver.log) == 6
    assert paths(httpserver, "POST") == ["/node-a/fence", "/node-b/activate"]


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


def _fence_claims_but_still_signs(httpserver: HTTPServer) -> None:
    httpserver.expect_ordered_request("/node-a/fence", method="POST").respond_with_json(
        {"signing": False}
    )
    expect_status(httpserver, "node-a", signing=True)


def _fence_claims_but_no_answer(httpserver: HTTPServer) -> None:
    httpserver.expect_ordered_request("/node-a/fence", method="POST").respond_with_json(
        {"signing": False}
    )
    httpserver.expect_ordered_request("/node-a/status", method="GET").respond_with_data(
        "", status=500
    )


@pytest.mark.parametrize(
    ("break_fence", "expected"),
    [
        (_fence_500, "answered 500"),
        (_fence_still_signing, "'signing' is true"),
        (_fence_timeout, "timed out"),
        (
            _fence_claims_but_still_signs,
            "the fence claimed success but node-a then answered: signing",
        ),
        (
            _fence_claims_but_no_answer,
            "the fence claimed success but node-a then answered: unreachable",
        ),
    ],
    ids=["http-500", "still-signing", "timeout", "unverified-signing", "unverified-unreachable"],
)
def test_failed_fence_never_activates_and_blocks(
    make_harness, clock, httpserver: HTTPServer, break_fence, expected
) -> None:
    """Every way a fence can fail, a claim the status read contradicts included, leaves the standby untouched, fails and blocks until ack."""
    h = make_harness()
    expect_status(httpserver, "node-b")
    break_fence(httpserver)
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    [failover] = h.responder.step()

    httpserver.check_assertions()
    seen = paths(httpserver)
    assert "/node-b/activate" not in seen
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
    assert paths(httpserver) == seen

    # an operator acknowledgement re-arms automation
    resp = h.op("POST", "/api/v1/pairs/mainnet-a/ack")
    assert resp.status_code == 200, resp.json
    # the new episode has been firing for hours, so re-armed automation acts on it at once
    assert h.pair()["phase"] == "failing_over"


def test_extra_fence_level_confirms_when_driver_fence_fails(
    make_harness, clock, httpserver: HTTPServer, tmp_path
) -> None:
    """When the driver's fence fails, a power switch may confirm it, once node-a stays unreachable for the settle time."""
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
    agents = Agents(httpserver, clock)
    agents.fail["/node-a/fence"] = 503
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    [failover] = h.responder.step()
    httpserver.check_assertions()
    assert failover.step.value == "done"
    assert h.roles() == {"node-a": "fenced", "node-b": "active"}
    assert paths(httpserver, "POST") == ["/node-a/fence", "/pdu/outlet/1/off", "/node-b/activate"]
    calls = answers(httpserver)
    assert calls[0] == ("/node-b/status", "not signing")
    # between the power-off and the activation node-a is only read, and never answers:
    # the failed driver fence may still land, so its silence must hold for the settle time
    off, activate = (
        calls.index(("/pdu/outlet/1/off", "200")),
        calls.index(("/node-b/activate", "200")),
    )
    between = calls[off + 1 : activate]
    assert len(between) >= 2 and set(between) == {("/node-a/status", "unreachable")}
    assert calls[activate + 1 :] == [("/node-b/status", "signing")]
    quiet = agents.reads_after("/pdu/outlet/1/off", "node-a")
    assert {said for _, said in quiet} == {"unreachable"}
    assert span(quiet[:-1]) >= SETTLE  # the last read is the one right before activation
    journal = h.store.journal(failover.id)
    ends = [j.detail for j in journal if j.step == "fencing" and j.phase == "end"]
    assert [e["confirmed"] for e in ends] == [False, True]
    verified = [j.detail for j in journal if j.phase == "note" and "verified" in j.detail]
    assert verified[-1]["level"] == 1 and verified[-1]["verified"] is True


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
    expect_fence(httpserver, "node-a")
    expect_activate(httpserver, "node-b", others=("node-a",))
    h.post_alert(
        notification(alert(node="node-b", alertname="BeaconNodeStalled", status="resolved"))
    )
    h.responder.step()
    httpserver.check_assertions()
    assert len(httpserver.log) == 6
    assert h.roles() == {"node-a": "fenced", "node-b": "active"}


def _three_nodes(httpserver: HTTPServer) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "match": {"node": name},
            "driver": {
                "type": "http",
                "url": httpserver.url_for(f"/{name}"),
                "token_file": "./secrets/node-token",
                "timeout": "2s",
            },
        }
        for name in ("node-a", "node-b", "node-c")
    ]


def _read(node: str, signing: bool | None) -> tuple[str, dict[str, Any] | None]:
    return node, None if signing is None else {"healthy": True, "signing": signing}


@pytest.mark.parametrize(
    ("last_reads", "problem"),
    [
        ((_read("node-a", True), _read("node-c", False)), "node-a signing"),
        ((_read("node-a", False), _read("node-c", True)), "node-c signing"),
        ((_read("node-a", False), _read("node-c", None)), "node-c unreachable"),
    ],
    ids=["fenced-source-signs-again", "other-standby-signs", "other-standby-unreachable"],
)
def test_activation_refused_unless_every_other_node_is_verified_silent(
    make_harness, clock, httpserver: HTTPServer, last_reads, problem
) -> None:
    """Right before activation every other node is read; one signing or not answering means failed, nothing activated."""
    h = make_harness(nodes=_three_nodes(httpserver))
    expect_status(httpserver, "node-b")
    expect_fence(httpserver, "node-a")
    for node, body in last_reads:
        expected = httpserver.expect_ordered_request(f"/{node}/status", method="GET", headers=AUTH)
        if body is None:
            expected.respond_with_data("down", status=503)
        else:
            expected.respond_with_json(body)
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    [failover] = h.responder.step()
    httpserver.check_assertions()
    assert paths(httpserver) == [
        "/node-b/status",
        "/node-a/fence",
        "/node-a/status",
        "/node-a/status",
        "/node-c/status",
    ]
    assert failover.target == "node-b" and failover.step.value == "failed"
    assert failover.outcome_reason == (
        "activation of node-b refused: every other node must be verified silent, "
        f"but {problem}; nothing was activated"
    )
    assert h.roles() == {"node-a": "fenced", "node-b": "standby", "node-c": "standby"}
    assert h.pair()["phase"] == "blocked"


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
    """Dry-run probes target and source for real but sends no fence or activate; the events
    show the full plan."""
    h = make_harness(dry_run=True)
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
    assert failover.step.value == "done" and failover.dry_run
    assert [(r.method, r.path) for r, _ in httpserver.log] == [
        ("GET", "/node-b/status"),
        ("GET", "/node-a/status"),
    ]
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


def test_dry_run_of_a_dead_primary_without_other_fence_levels_says_it_would_fail(
    make_harness, clock, httpserver: HTTPServer
) -> None:
    """Dry-run with the primary's API down and no other fence level: a real failover could not
    fence it, so the dry-run ends failed, naming the level, with nothing sent."""
    h = make_harness(dry_run=True)
    httpserver.expect_request("/node-b/status", method="GET").respond_with_json(
        {"healthy": True, "signing": False}
    )
    httpserver.expect_request("/node-a/status", method="GET").respond_with_data("", status=500)
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    [failover] = h.responder.step()
    assert failover.step.value == "failed" and failover.dry_run
    assert "every fence level of node-a fails its check" in (failover.outcome_reason or "")
    assert "level 0" in (failover.outcome_reason or "")
    assert {r.method for r, _ in httpserver.log} == {"GET"}
    assert h.roles() == {"node-a": "active", "node-b": "standby"}


@pytest.mark.parametrize("lands_late", [False, True], ids=["never-lands", "lands-late"])
def test_failed_activation_fences_target_and_pages(
    make_harness, clock, httpserver: HTTPServer, lands_late: bool
) -> None:
    """A failed activation is fenced back (again whenever it answers signing) until silence holds for the settle time: both fenced, blocked."""
    h = make_harness()
    agents = Agents(httpserver, clock)
    agents.fail["/node-b/activate"] = 500
    if lands_late:  # the activation takes effect after the fence back: only a re-fence stops it
        agents.lands_late.add("/node-b/activate")
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    [failover] = h.responder.step()
    httpserver.check_assertions()
    assert failover.step.value == "failed"
    refence = ["/node-b/fence"] if lands_late else []
    assert paths(httpserver, "POST") == [
        "/node-a/fence",
        "/node-b/activate",
        "/node-b/fence",
        *refence,
    ]
    calls = answers(httpserver)
    activate = calls.index(("/node-b/activate", "500"))
    assert calls[:activate] == [
        ("/node-b/status", "not signing"),
        ("/node-a/fence", "200"),
        ("/node-a/status", "not signing"),
        ("/node-a/status", "not signing"),
    ]
    assert calls[activate + 1] == ("/node-b/fence", "200")  # fenced back at once
    settle = calls[activate + 2 :]  # then only reads of node-b (and a re-fence)
    assert {p for p, _ in settle} <= {"/node-b/status", "/node-b/fence"}
    if lands_late:
        assert settle[:2] == [("/node-b/status", "signing"), ("/node-b/fence", "200")]
    assert settle[-1] == ("/node-b/status", "not signing")
    quiet = agents.reads_after("/node-b/fence", "node-b")  # since the last fence
    assert {said for _, said in quiet} == {"not signing"} and span(quiet) >= SETTLE
    assert agents.signing == {"node-a": False, "node-b": False}
    reason = failover.outcome_reason or ""
    assert "node-b was fenced back and node-b verified not signing for" in reason
    assert "(settle 4s)" in reason and "fail over by hand" in reason
    assert h.roles() == {"node-a": "fenced", "node-b": "fenced"}
    pair = h.pair()
    assert pair["active_node"] is None
    assert pair["phase"] == "blocked"
    assert [n["may_be_signing"] for n in pair["nodes"]] == [None, None]


def test_activation_that_cannot_be_verified_silent_is_reported_may_be_signing(
    make_harness, clock, httpserver: HTTPServer
) -> None:
    """A failed activation that lands and cannot be fenced back is given up after the settle limit: MAY BE SIGNING, blocked."""
    h = make_harness()
    agents = Agents(httpserver, clock)
    agents.fail |= {"/node-b/activate": 500, "/node-b/fence": 500}
    agents.lands_late.add("/node-b/activate")
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    [failover] = h.responder.step()
    httpserver.check_assertions()
    assert failover.step.value == "failed"
    assert "MAY BE SIGNING" in (failover.outcome_reason or "")
    calls = answers(httpserver)
    activate = calls.index(("/node-b/activate", "500"))
    assert calls[activate + 1] == ("/node-b/fence", "500")  # the fence back fails too
    settle = calls[activate + 2 :]
    # every "signing" answer is met by another fence attempt
    reads = [said for p, said in settle if p == "/node-b/status"]
    assert reads and set(reads) == {"signing"}
    assert settle.count(("/node-b/fence", "500")) == len(reads)
    # it gives up only after max(4 x settle, settle + 5s) of probing
    assert span(agents.reads_after("/node-b/activate", "node-b")) >= max(4 * SETTLE, SETTLE + 5)
    assert "/node-b/activate" in paths(httpserver) and agents.signing["node-b"]
    pair = h.pair()
    assert pair["phase"] == "blocked"
    [b] = [n for n in pair["nodes"] if n["name"] == "node-b"]
    assert isinstance(b["may_be_signing"], str) and b["may_be_signing"]
    assert "may be signing" in pair["who_signs"]


def test_manual_failover_and_unfence(make_harness, clock, httpserver: HTTPServer) -> None:
    """An operator fails over by hand through the same path, then un-fences the repaired node."""
    h = make_harness()
    expect_status(httpserver, "node-b")
    expect_fence(httpserver, "node-a")
    expect_activate(httpserver, "node-b", others=("node-a",))
    resp = h.op("POST", "/api/v1/pairs/mainnet-a/failover", json={"target": "node-b"})
    assert resp.status_code == 200, resp.json
    assert resp.json["failover_id"] == "mainnet-a-1"
    # a second request while one is in flight is refused
    again = h.op("POST", "/api/v1/pairs/mainnet-a/failover", json={"target": "node-b"})
    assert again.status_code == 409
    h.responder.step()
    httpserver.check_assertions()
    assert len(httpserver.log) == 6
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
    expect_fence(httpserver, "node-a")
    expect_activate(httpserver, "node-b", others=("node-a",))
    assert h.op("POST", "/api/v1/pairs/mainnet-a/resume").status_code == 200
    h.responder.step()
    httpserver.check_assertions()
    assert len(httpserver.log) == 6
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
    expect_fence(httpserver, "node-a")
    expect_activate(httpserver, "node-b", others=("node-a",))
    clock.advance(15)
    [failover] = h.responder.step()
    httpserver.check_assertions()
    assert failover.step.value == "done"
    [signal] = failover.data["signals"]
    assert (signal["alertname"], signal["node"], signal["starts_at"]) == (
        "ValidatorClientDown",
        "node-a",
        "2026-11-25T18:28:07.908132859Z",
    )
    assert signal["since"] == failover.created_at - 20
