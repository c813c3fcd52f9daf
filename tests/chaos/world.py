"""Stateful fake node agents for the chaos campaign, served over loopback HTTP.

One `NodeServer` per campaign worker serves every fake node at `/n/<node>/{status,fence,activate}`
(the generic `http` driver contract) and a fake power switch at `/pdu/<node>/off` (an
out-of-band fence level). Each scenario attaches a fresh `World` to the server, so the server
(and its port) is reused across scenarios.

The world keeps what a real node would: whether its keys are loaded, whether its host is up and
powered. A node signs when its keys are loaded, its host is up and it has power. Faults are
windows of scenario time during which a node misbehaves (host down, agent unreachable, hanging,
answering 500, a fence that lies, an activation that fails or lands late). Time is the world
clock's monotonic time (the scenario's ManualClock in-process, the real clock for real
processes); every change of the signing state is recorded as an interval both on that clock and
on a logical sequence shared by all nodes, so "two signers at once" is an exact question of
order, not of clock resolution.

Every request is logged with the responder incarnation that sent it (told apart by bearer
token): a crashed incarnation's later requests never reach a node, as with a killed process.
A *deposed* incarnation (a replica on etcd whose leader lease was revoked: `--etcd`) is not
silenced here: its requests are answered as any other, and marked `after_kill`, for the
invariants to count (the lease guard must stop them before they are sent).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Node fault kinds (agent behaviour during a window of scenario time).
DOWN = "down"  # host down: agent unreachable, validator not signing; resumes signing when back
AGENT_DOWN = "agent_down"  # agent unreachable; the validator keeps doing what it did
HANG = "hang"  # every agent call blocks past the driver timeout; nothing takes effect
ERR500 = "err500"  # every agent call answers 500; nothing takes effect
FENCE_LIES = "fence_lies"  # a fence answers {"signing": false} and changes nothing
UNHEALTHY = "unhealthy"  # status answers healthy=false
ACTIVATE_500 = "activate_500"  # activation answers 500; keys are not loaded
ACTIVATE_500_LOADED = "activate_500_loaded"  # activation answers 500, but the keys did load
ACTIVATE_LATE = "activate_late"  # activation cut; the keys load `late_by` seconds later
PDU_SLOW = "pdu_slow"  # the power switch answers at once; the power goes off `pdu_lag` s later

NODE_FAULTS = (
    DOWN,
    AGENT_DOWN,
    HANG,
    ERR500,
    FENCE_LIES,
    UNHEALTHY,
    ACTIVATE_500,
    ACTIVATE_500_LOADED,
    ACTIVATE_LATE,
    PDU_SLOW,
)
BLOCK_TIME = 1.0  # the chain view of GET /liveness: one height per scenario second
MUTATING = ("fence", "activate", "pdu")  # requests that change a node (everything else reads)
DRILL_INCARNATION = 1000  # tokens of incarnation >= this belong to an operator's drills


@dataclass(frozen=True)
class Fault:
    """A node misbehaves with `kind` during [start, end) of scenario time."""

    kind: str
    start: float = -math.inf
    end: float = math.inf

    def active(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass
class Call:
    """One request as the node (or its power switch) saw it."""

    seq: int
    t: float  # scenario time
    node: str
    kind: str  # status | fence | activate | pdu | liveness (reads the chain) | pdu_state (reads)
    incarnation: int  # which responder incarnation sent it (0: unknown token)
    failover_id: str | None
    reached: bool  # the agent received it (False: host down, agent down, sender dead)
    outcome: str  # ok | 500 | dropped (unreachable) | sender dead | hang | lie | late | crash-held
    signing: bool | None = None  # what the answer said about signing (None: no usable answer)
    effect: str | None = None  # fenced | activated | powered_off | scheduled | None
    landed_seq: int | None = None  # for an activation: when its keys loaded
    healthy: bool | None = None  # what a status answer said about health
    handoff: Any = None  # fence: the hand-off it answered; activate: the hand-off it carried
    waived: str | None = None  # activate: the handoff_waived it carried
    chain: tuple[int, int | None] | None = None  # liveness: (current, last_signed) answered
    after_kill: bool = False  # sent by an incarnation whose leader lease was already revoked

    def brief(self) -> str:
        said = "" if self.signing is None else f" signing={str(self.signing).lower()}"
        if self.chain is not None:
            said += f" current={self.chain[0]} last_signed={self.chain[1]}"
        if self.kind in ("fence", "activate") and self.handoff is not None:
            said += " +handoff"
        eff = f" -> {self.effect}" if self.effect else ""
        who = f" fo={self.failover_id}" if self.failover_id else ""
        who += " AFTER ITS LEADER WAS KILLED" if self.after_kill else ""
        return (
            f"#{self.seq} t={self.t:.2f} inc{self.incarnation} {self.kind} {self.node}: "
            f"{self.outcome}{said}{eff}{who}"
        )


@dataclass
class Node:
    name: str
    pair: str
    keys: bool  # validator keys loaded
    faults: list[Fault] = field(default_factory=list)
    late_by: float = 0.5  # ACTIVATE_LATE: seconds until the keys load
    pdu_lag: float = 0.0  # PDU_SLOW: seconds from the outlet-off answer to the power going off
    handoff: bool = False  # its fence answers a hand-off (the driver's `handoff: required`)
    powered: bool = True
    signing: bool = False
    intervals_seq: list[list[int | None]] = field(default_factory=list)
    intervals_t: list[list[float | None]] = field(default_factory=list)
    changes: list[tuple[int, str]] = field(default_factory=list)  # (seq, cause) of each change

    def faulty(self, kind: str, t: float) -> bool:
        return any(f.kind == kind and f.active(t) for f in self.faults)

    def up(self, t: float) -> bool:
        return self.powered and not self.faulty(DOWN, t)

    def reachable(self, t: float) -> bool:
        return self.up(t) and not self.faulty(AGENT_DOWN, t)

    def would_sign(self, t: float) -> bool:
        return self.keys and self.up(t)


@dataclass
class CrashPlan:
    """Hold the n-th request of one incarnation open: its sender is 'killed' mid-call."""

    incarnation: int
    nth: int
    landed: bool  # the held call takes effect before the crash (its reply is what is lost)
    kind: str | None = None  # count only requests of this kind (status, fence, activate)
    nodes: set[str] | None = None  # count only requests to these nodes (one pair's)
    count: int = 0
    hit: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    call: Call | None = None


class Drop(Exception):
    """Close the connection without an answer."""


class World:
    """The nodes of one scenario, their faults, and every request they saw."""

    def __init__(
        self,
        clock: Callable[[], float],
        nodes: Iterable[Node],
        *,
        real_hangs: int = 1,
        hang_seconds: float = 1.2,
    ) -> None:
        self._clock = clock
        self.t0 = clock()
        self.nodes = {n.name: n for n in nodes}
        self.lock = threading.RLock()
        self.seq = 0
        self.calls: list[Call] = []
        self.tokens: dict[str, int] = {}
        self.killed: set[int] = set()
        self.deposed: set[int] = set()
        self.crash: CrashPlan | None = None
        self.real_hangs = real_hangs
        self.hang_seconds = hang_seconds
        self.closed = False
        self._pending: list[tuple[float, int, str, Call]] = []  # (due, order, node, call)
        self._synced = -math.inf
        for node in self.nodes.values():
            node.signing = False
            self._set_signing(node, node.would_sign(0.0), 0.0, cause="start")

    # ---- time and state ----------------------------------------------------------------------

    def now(self) -> float:
        """Scenario time: seconds on the world clock since the scenario began."""
        return self._clock() - self.t0

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _set_signing(self, node: Node, on: bool, t: float, *, cause: str) -> None:
        if on == node.signing:
            return
        node.signing = on
        s = self._next_seq()
        if on:
            node.intervals_seq.append([s, None])
            node.intervals_t.append([t, None])
        else:
            node.intervals_seq[-1][1] = s
            node.intervals_t[-1][1] = t
        node.changes.append((s, cause))

    def sync(self) -> float:
        """Apply every fault boundary and late landing up to now, in time order."""
        with self.lock:
            now = self.now()
            points = sorted(
                {
                    b
                    for n in self.nodes.values()
                    for f in n.faults
                    for b in (f.start, f.end)
                    if self._synced < b <= now and math.isfinite(b)
                }
                | {due for due, *_ in self._pending if due <= now}
            )
            for t in [*points, now]:
                for item in sorted(p for p in self._pending if p[0] <= t):
                    self._pending.remove(item)
                    _, _, name, call = item
                    node = self.nodes[name]
                    if call.kind == "pdu":  # a slow power switch: the power goes off now
                        node.powered = False
                        self._set_signing(node, False, t, cause="pdu")
                        continue
                    node.keys = True
                    self._set_signing(node, node.would_sign(t), t, cause="landing")
                    call.landed_seq = self.seq
                for node in self.nodes.values():
                    self._set_signing(node, node.would_sign(t), t, cause="fault window")
            self._synced = now
            return now

    def truth(self, within: float = 0.0) -> dict[str, bool]:
        """Who signs now, counting late landings due within `within` seconds (nothing applied)."""
        with self.lock:
            now = self.sync()
            late = {
                name
                for due, _, name, c in self._pending
                if due <= now + within and c.kind == "activate"
            }
            return {
                n.name: n.signing or (n.name in late and n.up(now)) for n in self.nodes.values()
            }

    def fresh(self, name: str) -> bool:
        """True when nothing but a late landing changed the node since its last status answer."""
        with self.lock:
            answered = [
                c.seq
                for c in self.calls
                if c.node == name and c.kind == "status" and c.signing is not None
            ]
            if not answered:
                return False
            last = answered[-1]
            return all(cause == "landing" for s, cause in self.nodes[name].changes if s > last)

    def pending_for(self, name: str) -> bool:
        """A late activation of this node has been accepted and has not landed yet."""
        with self.lock:
            return any(n == name and c.kind == "activate" for _, _, n, c in self._pending)

    def has_pending(self) -> bool:
        with self.lock:
            return any(c.kind == "activate" for *_, c in self._pending)

    # ---- the chain, as a node's agent sees it -------------------------------------------------

    def chain_view(self, pair: str, t: float) -> tuple[int, int | None]:
        """(current height, last height a validator of `pair` signed at), from the truth:
        a height h counts as signed when some node of the pair signed during [h, h + 1)."""
        current = math.floor(t / BLOCK_TIME)
        last: int | None = None
        for node in self.nodes.values():
            if node.pair != pair:
                continue
            for s, e in node.intervals_t:
                if s is None:
                    continue
                end = t if e is None else min(e, t)
                if end < s or (e is not None and e <= s):
                    continue
                top = math.floor(end / BLOCK_TIME) if e is None else math.ceil(end / BLOCK_TIME) - 1
                top = min(top, current)
                if top >= math.floor(s / BLOCK_TIME):
                    last = top if last is None else max(last, top)
        return current, last

    # ---- incarnations and crashes ------------------------------------------------------------

    def token_for(self, incarnation: int) -> str:
        token = f"chaos-node-token-{incarnation}"
        self.tokens[token] = incarnation
        return token

    def arm_crash(
        self,
        incarnation: int,
        nth: int,
        landed: bool,
        kind: str | None = None,
        nodes: set[str] | None = None,
    ) -> CrashPlan:
        with self.lock:
            self.crash = CrashPlan(incarnation, nth, landed, kind, nodes)
            return self.crash

    def kill(self, incarnation: int) -> None:
        """Every later request of this incarnation is lost (the process is dead)."""
        with self.lock:
            self.killed.add(incarnation)

    def depose(self, incarnation: int) -> None:
        """This incarnation's leader lease was revoked (etcd mode): its later requests are
        still answered, each marked `after_kill` (an invariant violation: the lease guard
        must refuse every node call of a replica that no longer leads)."""
        with self.lock:
            self.deposed.add(incarnation)

    def release_all(self) -> None:
        """Let every held request go (as dropped): the scenario is over."""
        with self.lock:
            self.closed = True
            if self.crash is not None:
                self.crash.release.set()

    # ---- requests ------------------------------------------------------------------------------

    def handle(self, node_name: str, kind: str, token: str | None, body: Any) -> tuple[int, Any]:
        """Answer one request: (status, JSON body); raises Drop for no answer at all."""
        hold: CrashPlan | None = None
        sleep = 0.0
        with self.lock:
            if self.closed:
                raise Drop
            t = self.sync()
            node = self.nodes.get(node_name)
            incarnation = self.tokens.get(token or "", -1)
            if node is None or incarnation < 0:
                return 401 if node is not None else 404, {"error": "no"}
            failover_id = body.get("failover_id") if isinstance(body, dict) else None
            call = Call(self._next_seq(), t, node_name, kind, incarnation, failover_id, True, "ok")
            if kind == "activate" and isinstance(body, dict):
                call.handoff, call.waived = body.get("handoff"), body.get("handoff_waived")
            self.calls.append(call)
            if incarnation in self.killed:
                call.reached, call.outcome = False, "sender dead"
                raise Drop
            call.after_kill = incarnation in self.deposed
            plan = self.crash
            if (
                plan is not None
                and plan.incarnation == incarnation
                and plan.kind in (None, kind)
                and (plan.nodes is None or node_name in plan.nodes)
                and (kind == "pdu" or node.reachable(t))  # a refused connection is never held
                and not plan.hit.is_set()
            ):
                plan.count += 1
                if plan.count == plan.nth:
                    plan.call = call
                    if plan.landed:  # the node handles it as it would; only the answer is lost
                        self._answer(node, call, t)
                    call.outcome = f"crash-held ({call.outcome})" if plan.landed else "crash-held"
                    hold = plan
            if hold is None:
                status, answer, sleep = self._answer(node, call, t)
        if hold is not None:
            hold.hit.set()
            hold.release.wait(120)
            raise Drop
        if sleep > 0:
            time.sleep(sleep)
        if status == 0:
            raise Drop
        return status, answer

    def _answer(self, node: Node, call: Call, t: float) -> tuple[int, Any, float]:
        """(status, body, seconds to block first); status 0 means drop the connection."""
        kind = call.kind
        if kind == "pdu":
            if node.faulty(PDU_SLOW, t) and node.pdu_lag > 0:
                call.effect = "scheduled"
                self._pending.append((t + node.pdu_lag, call.seq, node.name, call))
                return 200, {"outlet": "off"}, 0.0
            node.powered = False
            call.effect = "powered_off"
            self._set_signing(node, False, t, cause="pdu")
            return 200, {"outlet": "off"}, 0.0
        if kind == "pdu_state":  # the power switch's read-only check
            return 200, {"outlet": "on" if node.powered else "off"}, 0.0
        if not node.reachable(t):
            call.reached, call.outcome = False, "dropped"
            return 0, None, 0.0
        if node.faulty(HANG, t):
            call.outcome = "hang"
            if self.real_hangs > 0:
                self.real_hangs -= 1
                return 0, None, self.hang_seconds
            return 0, None, 0.0
        if node.faulty(ERR500, t):
            call.outcome = "500"
            return 500, {"error": "agent failed"}, 0.0
        if kind == "status":
            call.signing = node.signing
            call.healthy = not node.faulty(UNHEALTHY, t)
            return 200, {"healthy": call.healthy, "signing": node.signing}, 0.0
        if kind == "liveness":
            current, last = self.chain_view(node.pair, t)
            call.chain = (current, last)
            return 200, {"unit": "height", "current": current, "last_signed": last}, 0.0
        if kind == "fence":
            if node.faulty(FENCE_LIES, t):
                call.outcome, call.signing = "lie", False
                answer: dict[str, Any] = {"signing": False}
            else:
                self._apply(node, call, t)
                call.signing = node.signing
                answer = {"signing": node.signing}
            if node.handoff:
                call.handoff = {"kind": "chaos-sign-state", "from": node.name, "fence": call.seq}
                answer["handoff"] = call.handoff
            return 200, answer, 0.0
        # activate
        if node.faulty(ACTIVATE_500, t):
            call.outcome = "500"
            return 500, {"error": "import failed"}, 0.0
        if node.faulty(ACTIVATE_500_LOADED, t):
            call.outcome = "500"
            self._apply(node, call, t)
            return 500, {"error": "agent crashed mid-import"}, 0.0
        if node.faulty(ACTIVATE_LATE, t):
            call.outcome, call.effect = "late", "scheduled"
            self._pending.append((t + node.late_by, call.seq, node.name, call))
            return 0, None, 0.0
        self._apply(node, call, t)
        call.signing = node.signing
        return 200, {"signing": node.signing}, 0.0

    def _apply(self, node: Node, call: Call, t: float) -> None:
        if call.kind == "fence":
            node.keys = False
            call.effect = "fenced"
        elif call.kind == "activate":
            node.keys = True
            call.effect = "activated"
        elif call.kind == "pdu":
            node.powered = False
            call.effect = "powered_off"
        self._set_signing(node, node.would_sign(t), t, cause=call.kind)
        if call.kind == "activate":
            call.landed_seq = self.seq

    # ---- reading the record ----------------------------------------------------------------------

    def trace(self, last: int = 40) -> list[str]:
        with self.lock:
            return [c.brief() for c in self.calls[-last:]]


AGENT_PATHS = ("status", "fence", "activate", "liveness")


class _Handler(BaseHTTPRequestHandler):
    server: NodeServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        parts = self.path.strip("/").split("/")
        world = self.server.world
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        try:
            if world is None:
                raise Drop
            if len(parts) == 3 and parts[0] == "n" and parts[2] in AGENT_PATHS:
                status, answer = world.handle(parts[1], parts[2], token, body)
            elif len(parts) == 3 and parts[0] == "pdu" and parts[2] == "off":
                status, answer = world.handle(parts[1], "pdu", token, body)
            elif len(parts) == 3 and parts[0] == "pdu" and parts[2] == "state":
                status, answer = world.handle(parts[1], "pdu_state", token, body)
            else:
                status, answer = 404, {"error": "unknown path"}
        except Drop:
            self.close_connection = True
            return
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _serve
    do_POST = _serve


class NodeServer(ThreadingHTTPServer):
    """Serves the current World on 127.0.0.1; reused by every scenario of a worker."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.world: World | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self.serve_forever, name="chaos-nodes", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def node_url(self, node: str) -> str:
        return f"{self.url}/n/{node}"

    def pdu_url(self, node: str) -> str:
        return f"{self.url}/pdu/{node}/off"

    def pdu_state_url(self, node: str) -> str:
        return f"{self.url}/pdu/{node}/state"

    def start(self) -> NodeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.shutdown()
        self.server_close()
        self._thread.join(5)
