"""Runs one scenario in-process: the real app and service on a real SQLite store, a ManualClock,
and the fake nodes of `world` over loopback HTTP.

The loop does what the background runner does (drain deliveries, retry faults, check deadlines,
run failovers, observe every pair each `observe.interval`) but jumps the manual clock straight to
the next thing that can happen: a delivery, a deadline, an observation round, a restart. Settle
loops sleep on the manual clock, so they take no real time. A crash is a thread blocked inside a
node call (the world holds that request open), its incarnation killed (its later requests never
reach a node), and a fresh Harness with another owner on the same state dir, started once the
clock has passed the failover lease. The blocked thread is let go only when the scenario ends.

With `--etcd` (tests/chaos/etcdmode.py) each incarnation is a replica on a real etcd, under the
scenario's own key prefix, with its node calls behind the lease guard; it campaigns for the
leader key before it acts. A crash is then a leader kill: the replica's leader lease is revoked,
and the next incarnation (another replica) takes over without waiting for the failover lease.
Whatever the killed replica tries afterwards must be refused, writes (NotLeader) and node calls
(the lease guard): its thread that was in the held call goes on once the driver's timeout
(real seconds) gives up on it, and the killed replica runs one more round of its runner, right
after the kill and again once the next leader leads. A request of it that reaches a node, or a
write of it that etcd takes, is a violation.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from responder.clock import ManualClock
from responder.config import Config, StateConfig, load_config
from responder.drivers import guard_nodes
from responder.failover import Failover
from responder.store import LeaseLost
from responder.store.etcd import EtcdClient, EtcdStore
from tests.chaos import etcdmode
from tests.chaos import scenarios as S
from tests.chaos import world as w
from tests.chaos.scenarios import Delivery, PairPlan, Scenario
from tests.conftest import Harness
from tests.tokens import OPERATOR_TOKEN, WEBHOOK_TOKEN

# Formerly a product gap (seed 20261126, scenarios 463, 470, 483; seed 7, scenario 85): while an
# activation was in flight or cut, status called the target silent. The target is now "may be
# signing" from the moment its activation is sent until an answer verifies it; a claim that
# differs from the truth is a violation again. The name is kept for the summary's report.
KNOWN_GAP_IN_FLIGHT_CUT = "who_signs calls a node silent while a cut activation to it may land"
DRILL_INCARNATION = w.DRILL_INCARNATION  # + the incarnation: the drills' own node token

MAX_STEP = 2.0  # the loop never jumps the clock further than this at once
MAX_ITERATIONS = 5000
JOIN_TIMEOUT = 30.0  # real seconds a failover thread may take before the run is declared stuck


@dataclass
class Run:
    """What a scenario run saw, for the invariant checks."""

    scenario: Scenario
    world: w.World
    fault_seen: dict[str, float] = field(default_factory=dict)  # pair -> when acknowledged
    resolved_seen: dict[str, float] = field(default_factory=dict)  # pair -> its end acknowledged
    acked: list[int] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)  # found while running
    events: list[str] = field(default_factory=list)  # what the runner did, for the trace
    failovers: list[dict[str, Any]] = field(default_factory=list)
    claims_checked: int = 0
    known: list[str] = field(default_factory=list)  # hits of known gaps, reported, not violations
    down: list[tuple[float, float]] = field(
        default_factory=list
    )  # no responder ran (crash, restart)
    confirms: list[tuple[str, int]] = field(default_factory=list)  # (pair, world seq) of confirms
    drills: int = 0  # drills run
    switchovers: list[str] = field(default_factory=list)  # what each switchover request did
    leader_kills: int = 0  # etcd mode: crashes, each a revoked leader lease
    refused_calls: int = 0  # etcd mode: node calls of killed leaders the lease guard refused
    refused_writes: int = 0  # etcd mode: their writes refused (NotLeader, a lost failover lease)


def node_entry(
    name: str, url: str, pdu: str | None, *, handoff: bool = False, pdu_check: str | None = None
) -> dict[str, Any]:
    driver: dict[str, Any] = {
        "type": "http",
        "url": url,
        "token_file": "./secrets/node-token",
        "connect_timeout": f"{S.CONNECT_TIMEOUT}s",
        "timeout": f"{S.TIMEOUT}s",
    }
    if handoff:
        driver["handoff"] = "required"
    entry: dict[str, Any] = {"name": name, "match": {"node": name}, "driver": driver}
    if pdu is not None:
        level: dict[str, Any] = {
            "type": "http",
            "url": pdu,
            "token_file": "./secrets/node-token",
            "connect_timeout": f"{S.CONNECT_TIMEOUT}s",
            "timeout": f"{S.TIMEOUT}s",
        }
        if pdu_check is not None:  # read-only: drills and dry-run pairs send it
            level["check"] = {"url": pdu_check, "expect_json": {"outlet": "on"}}
        entry["fence_levels"] = [level]
    return entry


def config_data(
    sc: Scenario,
    node_url: Callable[[str], str],
    pdu_url: Callable[[str], str],
    state_dir: Path,
    renamed: dict[str, str],
    *,
    lease: float = S.LEASE,
    observe: float = S.OBSERVE,
    poll: float = 0.2,
    pdu_check_url: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    pairs = []
    for plan in sc.pairs:
        nodes = [
            node_entry(
                renamed.get(name, name),
                node_url(slot),
                pdu_url(slot) if plan.pdu else None,
                handoff=plan.handoff is not None,
                pdu_check=pdu_check_url(slot) if pdu_check_url and sc.feature != "none" else None,
            )
            for name, slot in zip(plan.names, plan.slots, strict=True)
        ]
        extra: dict[str, Any] = {}
        if plan.dry_run:
            extra["dry_run"] = True
        if plan.handoff is not None:
            extra["handoff"] = {"without": plan.handoff, "quiet": plan.quiet, "poll": "0.5s"}
        pairs.append(
            extra
            | {
                "name": plan.name,
                "nodes": nodes,
                "policy": {
                    "triggers": list(S.TRIGGERS),
                    "hold": f"{sc.hold:g}s",
                    "quorum": 1,
                    "cooldown": "1h",
                    "max_failovers": 1,
                    "max_failovers_window": "24h",
                },
                "observe": {"interval": f"{observe:g}s"},
            }
        )
    return {
        "listen": "127.0.0.1:9095",
        "dry_run": False,
        "state_dir": str(state_dir),
        "auth": {
            "webhook_token_file": "./secrets/webhook-token",
            "operator_token_file": "./secrets/operator-token",
        },
        "failover_lease": f"{lease:g}s",
        "poll_interval": f"{poll:g}s",
        "pairs": pairs,
    }


def write_config(directory: Path, data: dict[str, Any], node_token: str) -> Path:
    secrets = directory / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    for name, value in (
        ("webhook-token", WEBHOOK_TOKEN),
        ("operator-token", OPERATOR_TOKEN),
        ("node-token", node_token),
    ):
        (secrets / name).write_text(value + "\n")
        (secrets / name).chmod(0o600)
    path = directory / "responder.yml"
    path.write_text(yaml.safe_dump(data))
    return path


# ---- who signs, as the responder says it --------------------------------------------------------

_SIGNERS = re.compile(r"(?P<who>[A-Za-z0-9_.-]+(?: and [A-Za-z0-9_.-]+)*) reports? signing")
_UNKNOWN = re.compile(r"unknown for (?P<who>[A-Za-z0-9_.-]+(?:, [A-Za-z0-9_.-]+)*)")


def claims(status: dict[str, Any]) -> dict[str, bool] | None:
    """The facts `who_signs` states, node -> signing; None when it states none at all.

    Nodes that are "unknown" or "may be signing" are left out: those are not facts.
    Raises ValueError when the text has a shape this parser does not know.
    """
    text: str = status["who_signs"]
    names = [n["name"] for n in status["nodes"]]
    doubted = {n["name"] for n in status["nodes"] if n.get("may_be_signing")}
    head = text.split("; ", 1)[0]
    if head.startswith("not observed yet") or head.startswith("unknown:"):
        return None
    m = _SIGNERS.fullmatch(head)
    if m is not None:
        signers = set(m.group("who").split(" and "))
    elif head in ("no node reports signing", "no node signs (every node answered not signing)"):
        signers = set()
    else:
        raise ValueError(f"who_signs has an unknown shape: {text!r}")
    u = _UNKNOWN.search(text)
    unknown = set(u.group("who").split(", ")) if u else set()
    return {n: n in signers for n in names if n not in doubted and n not in unknown}


class Killed(BaseException):
    """Unwinds a thread of a killed responder incarnation (no `except Exception` catches it)."""


class SimClock(ManualClock):
    """A ManualClock whose sleeps in failover threads wait for the scenario loop to move time.

    The scenario loop is the only one that advances time while failovers run, as the runner's
    threads would see it: a failover sleeping in a settle loop does not hold back another
    pair's deadline, and the loop never jumps past a sleeper's wake-up. Threads of a killed
    incarnation are frozen: they never wake again until the scenario ends, then unwind.
    """

    def __init__(self) -> None:
        super().__init__()
        self.cv = threading.Condition(threading.RLock())
        self.sleepers: dict[int, float] = {}  # thread -> monotonic wake-up
        self.tracked: set[int] = set()
        self.frozen: set[int] = set()
        self.thawed = False

    def advance(self, seconds: float) -> None:
        with self.cv:
            super().advance(seconds)
            self.cv.notify_all()

    def sleep(self, seconds: float) -> None:
        me = threading.get_ident()
        with self.cv:
            if me not in self.tracked:
                super().advance(max(0.0, seconds))
                self.cv.notify_all()
                return
            wake = self.monotonic() + max(0.0, seconds)
            self.sleepers[me] = wake
            self.cv.notify_all()
            try:
                while True:
                    if me in self.frozen:
                        if self.thawed:
                            raise Killed
                    elif self.monotonic() >= wake:
                        return
                    self.cv.wait(1.0)
            finally:
                self.sleepers.pop(me, None)

    def next_wake(self) -> float | None:
        with self.cv:
            wakes = [t for i, t in self.sleepers.items() if i not in self.frozen]
            return min(wakes) if wakes else None

    def idle(self, thread: threading.Thread) -> bool:
        """The thread ended, or sleeps until later (or for good, frozen)."""
        with self.cv:
            if not thread.is_alive():
                return True
            ident = thread.ident or -1
            wake = self.sleepers.get(ident)
            return wake is not None and (ident in self.frozen or wake > self.monotonic())


@dataclass
class Running:
    """A failover executing in its own thread, as the background runner runs it."""

    failover: Failover
    harness: Harness
    thread: threading.Thread
    incarnation: int
    result: list[Failover | str] = field(default_factory=list)
    # set (under the clock's lock) as the thread ends: its ident is then free for reuse by a
    # later thread, so it is dropped from the clock's tracked and frozen sets, never added
    ended: threading.Event = field(default_factory=threading.Event)

    def freeze(self, clock: SimClock) -> None:
        """Freeze this thread where it next sleeps (call with clock.cv held)."""
        if self.thread.ident is not None and not self.ended.is_set():
            clock.frozen.add(self.thread.ident)


class InProcess:
    def __init__(
        self,
        sc: Scenario,
        server: w.NodeServer,
        root: Path,
        verbose: bool,
        etcd_url: str | None = None,
    ) -> None:
        self.sc = sc
        self.server = server
        self.root = root
        self.verbose = verbose
        self.etcd_url = etcd_url  # etcd mode: each incarnation a replica on this etcd
        self.prefix = etcdmode.prefix_for(sc.seed, sc.index)
        self.leader: EtcdStore | None = None  # etcd mode: the store of the leading replica
        self.killed_h: Harness | None = None  # etcd mode: the last killed leader, until replaced
        self.renewed_at = 0.0  # real monotonic time of its last campaign
        self.clock = SimClock()
        nodes = [
            w.Node(
                slot,
                plan.name,
                keys=i == 0,
                faults=list(sc.node_faults.get(slot, [])),
                late_by=sc.late_by.get(slot, 0.5),
                pdu_lag=sc.pdu_lag if i == 0 and plan is sc.pairs[0] else 0.0,
                handoff=plan.handoff is not None,
            )
            for plan in sc.pairs
            for i, slot in enumerate(plan.slots)
        ]
        self.world = w.World(
            self.clock.monotonic,
            nodes,
            real_hangs=1 if sc.real_hang else 0,
            hang_seconds=S.TIMEOUT + 0.3,
        )
        server.world = self.world
        self.run = Run(sc, self.world)
        self.state_dir = root / "state"
        self.incarnation = 0
        self.harnesses: list[Harness] = []
        self.running: list[Running] = []
        self.stale: list[Running] = []
        self.plan: w.CrashPlan | None = None
        self.doomed: Running | None = None
        self.renamed: dict[str, str] = {}
        self.h: Harness | None = None
        self.crash_pending = sc.responder_fault in (
            "crash_in_failover",
            "crash_before_claim",
            "crash_after_ack",
        )
        self.restart_at: float | None = None
        self.adopt_at: float | None = None
        self.held_back: list[Delivery] = []
        self.crashed_at = 0.0
        self.drill_h: Harness | None = None  # the operator's drills: own node token
        self.confirm_at: float | None = None  # handoff_operator: when the operator confirms
        self.back_at: float | None = None  # switchover_back: when the second one is asked
        self.switchover_ids: list[str] = []
        self.done_at: dict[str, float] = {}  # switchover id -> when the runner saw it done
        self.initial_roles: dict[str, dict[str, str]] = {}
        self.client: EtcdClient | None = None
        if etcd_url is not None:
            self.client = EtcdClient(StateConfig(backend="etcd", endpoints=(etcd_url,)))
            etcdmode.drop(self.client, self.prefix)  # a replay starts from an empty prefix
        self._start()
        for plan in sc.pairs:
            assert self.h is not None
            self.initial_roles[plan.name] = self.h.roles(plan.name)

    # ---- incarnations ----------------------------------------------------------------------------

    def note(self, text: str) -> None:
        self.run.events.append(f"t={self.world.now():.2f} {text}")

    def _start(self) -> Harness:
        if self.h is None and self.incarnation:
            self.run.down.append((self.crashed_at, self.world.now()))
        self.incarnation += 1
        token = self.world.token_for(self.incarnation)
        replica = f"inc{self.incarnation}"
        data = config_data(
            self.sc,
            self.server.node_url,
            self.server.pdu_url,
            # a replica has its own state_dir (its lock files), as on its own machine
            self.state_dir if self.etcd_url is None else self.root / replica / "var",
            self.renamed,
            pdu_check_url=self.server.pdu_state_url,
        )
        if self.etcd_url is not None:
            data["state"] = etcdmode.state(self.etcd_url, self.prefix, replica)
        path = write_config(self.root / replica, data, token)
        h = self._harness(load_config(path), replica, lead=True)
        self.h = h
        self.drill_h = None
        self.config_data = data
        self.note(f"responder incarnation {self.incarnation} started (renamed: {self.renamed})")
        return h

    def _harness(self, config: Config, owner: str, *, lead: bool = False) -> Harness:
        """A worker of the running incarnation; in etcd mode on its own EtcdStore of the
        incarnation's replica (`lead`: it campaigns first, as the replica's first worker)."""
        if self.etcd_url is None:
            h = Harness(config, self.clock, owner=owner)
        else:
            replica = config.state.replica
            assert replica is not None
            store = EtcdStore(config.state, replica, config.state_dir)
            if lead:
                etcdmode.lead(store)
                self.leader, self.renewed_at = store, time.monotonic()
            h = Harness(
                config,
                self.clock,
                owner=owner,
                store=store,
                wrap_nodes=lambda nodes: guard_nodes(config, nodes, store),
            )
        self.harnesses.append(h)
        return h

    def _keep_leading(self) -> None:
        """The leading replica renews its lease now and then (its leadership loop would);
        every guarded node call renews it too."""
        store = self.leader
        if store is None or time.monotonic() - self.renewed_at < etcdmode.RENEW_EVERY:
            return
        leader = store.campaign(time.time())
        self.renewed_at = time.monotonic()
        if leader is None or leader.replica != store.replica:
            self.run.violations.append(
                f"replica {store.replica} lost its leader lease though nobody killed it "
                f"({leader} leads): the campaign's renewals came too late"
            )
            self.leader = None

    def _quiesce(self) -> None:
        """Wait until every running failover thread sleeps (frozen), ended, or is blocked in
        the held node call: a leader kill then cuts no node call between its guard and its
        send (a real kill's lease expires a whole TTL later; the guard covers that call)."""
        end = time.monotonic() + JOIN_TIMEOUT
        held = self.plan.call.seq if self.plan is not None and self.plan.call else None
        while time.monotonic() < end:
            with self.clock.cv:
                busy = [
                    r
                    for r in self.running
                    if r.thread.is_alive()
                    and r.thread.ident not in self.clock.sleepers
                    and not (r is self.doomed and held is not None)
                ]
                if not busy:
                    return
                self.clock.cv.wait(0.005)
        self.run.violations.append(
            f"failover threads did not stop for the leader kill: {[r.failover.id for r in busy]}"
        )

    def _crash(self, why: str, delay: float, *, kill: bool = True) -> None:
        """Kill the running incarnation: its requests never reach a node again, its threads
        never run again (frozen where they sleep, or blocked in the held node call).

        In etcd mode the incarnation is a replica: its leader lease is revoked (`kill`: a
        leader kill; else a clean stop, which resigns), and its later requests still reach
        the world, each one a violation (the lease guard must have refused it)."""
        if self.etcd_url is None:
            self.world.kill(self.incarnation)
        with self.clock.cv:
            for r in self.running:
                r.freeze(self.clock)
            self.clock.cv.notify_all()
        if self.etcd_url is not None:
            self._quiesce()
            store = self.leader
            if store is not None:
                if kill:
                    lease = etcdmode.kill(store)
                    self.run.leader_kills += 1
                    why += f"; LEADER KILLED, lease {lease:x} revoked" if lease else ""
                else:
                    store.resign()
                    why += "; the replica resigned"
            self.world.depose(self.incarnation)
            self.world.depose(DRILL_INCARNATION + self.incarnation)
            self.leader = None
            if kill and self.h is not None:
                self.killed_h = self.h
                self._stale_round(self.h, "right after its kill (nobody leads)")
            if kill and self.sc.responder_fault == "crash_in_failover":
                delay = max(0.0, delay - S.LEASE)  # an older epoch's claims are void at once
        self.stale.extend(self.running)
        self.running = []
        self.h = None
        self.drill_h = None
        self.crashed_at = self.world.now()
        self.crash_pending = False
        self.restart_at = self.world.now() + delay
        self.note(
            f"responder incarnation {self.incarnation} CRASHED ({why}); restart in {delay:.2f}s"
        )

    def _stale_round(self, old: Harness, when: str) -> None:
        """A killed leader whose runner still believes it leads (its view of the leader key
        lags up to lease_ttl / 2) runs one more round: an observation of every pair (node
        calls, which the lease guard must refuse), then the deliveries, the deadlines and a
        claim (writes, which the epoch condition must refuse). A node it reaches is a
        violation (the world marks it); so is any write: nothing else runs meanwhile (the
        live leader's failovers sleep on the scenario clock), so etcd's revision must stay."""
        assert self.client is not None
        before = etcdmode.revision(self.client)
        steps: list[tuple[str, Callable[[], object], bool]] = [
            (f"observe {p.name}", functools.partial(old.responder.observe_pair, p.name), True)
            for p in self.sc.pairs
        ]
        steps += [
            ("deliveries", old.responder.process_notifications, False),
            ("deadlines", old.responder.tick, False),
            ("claim", old.responder.claim_failover, False),
        ]
        said = []
        for what, step, node_call in steps:
            try:
                step()
            except LeaseLost as exc:
                if node_call:
                    self.run.refused_calls += 1
                else:
                    self.run.refused_writes += 1
                said.append(f"{what} refused ({type(exc).__name__})")
            else:
                said.append(f"{what} did nothing")
        after = etcdmode.revision(self.client)
        if after != before:
            self.run.violations.append(
                f"the killed leader {old.responder.owner} wrote to etcd {when}: revision "
                f"{before} -> {after}"
            )
        self.note(f"killed leader {old.responder.owner}, one more round {when}: {'; '.join(said)}")

    def _names(self) -> dict[str, str]:
        """Config node name -> world slot, for the running incarnation."""
        return {
            self.renamed.get(name, name): slot
            for plan in self.sc.pairs
            for name, slot in zip(plan.names, plan.slots, strict=True)
        }

    # ---- the loop -----------------------------------------------------------------------------------

    def execute(self) -> Run:
        sc = self.sc
        actions: list[tuple[float, int, str, Any]] = []
        for i, d in enumerate(sc.deliveries):
            actions.append((d.t, i, "deliver", d))
        if sc.restart_at is not None:
            actions.append((sc.restart_at, 0, "rename_restart", sc.rename))
        if sc.manual_at is not None:
            actions.append((sc.manual_at, 0, "manual", None))
        if sc.wall_step_at is not None:
            actions.append((sc.wall_step_at, 0, "wall_step", sc.wall_step))
        if sc.switchover_at is not None:
            actions.append((sc.switchover_at, 0, "switchover", "node-b"))
        for t, pair, fault in sc.drills:
            actions.append((t, 1, "drill", (pair, fault)))
        k = 0
        while k * S.OBSERVE <= sc.end:
            actions.append((k * S.OBSERVE, 10_000, "observe", None))
            k += 1
        actions.sort(key=lambda a: (a[0], a[1]))
        pos = 0
        try:
            for _ in range(MAX_ITERATIONS):
                now = self.world.now()
                if self.restart_at is not None and now >= self.restart_at - 1e-9:
                    self.restart_at = None
                    self._start()
                    if self.killed_h is not None:
                        self._stale_round(self.killed_h, f"once inc{self.incarnation} leads")
                        self.killed_h = None
                    for d in self.held_back:  # Alertmanager retried while we were down
                        self._deliver(d)
                    self.held_back = []
                if self.adopt_at is not None and now >= self.adopt_at - 1e-9 and self.h:
                    self.adopt_at = None
                    resp = self.h.op(
                        "POST", "/api/v1/pairs/mainnet-a/adopt", json={"node": "node-a2"}
                    )
                    self.note(f"operator adopt node-a2 -> {resp.status_code} {resp.get_json()}")
                if self.back_at is not None and now >= self.back_at - 1e-9 and self.h:
                    self.back_at = None
                    self._switchover("node-a")
                if self.sc.feature.startswith("handoff") and self.h is not None:
                    self._operator_confirm(now)
                while pos < len(actions) and actions[pos][0] <= now + 1e-9:
                    self._action(actions[pos][2], actions[pos][3])
                    pos += 1
                if self.h is not None:
                    self._cycle()
                self._wait_idle()
                if now >= sc.end and self.restart_at is None and not self._in_flight():
                    break
                self.clock.advance(self._next(now, actions, pos) - now)
            else:
                self.run.violations.append("harness: the scenario loop did not terminate")
            self._finish()
        except Exception:
            self.run.violations.append("exception while running:\n" + traceback.format_exc(limit=8))
            self._release()
        finally:
            self._close()
        return self.run

    def _next(self, now: float, actions: list[Any], pos: int) -> float:
        candidates = [now + MAX_STEP, max(self.sc.end, now + 0.01)]
        if pos < len(actions):
            candidates.append(actions[pos][0])
        for t in (self.restart_at, self.adopt_at, self.confirm_at, self.back_at):
            if t is not None:
                candidates.append(t)
        if self.h is not None and self.sc.feature.startswith("handoff"):
            rt = self.h.responder.time.now()
            for f in self.h.store.list_failovers(limit=20):
                if f.step.value == "awaiting" and f.wake_at is not None and f.wake_at < rt + 60:
                    candidates.append(now + max(0.0, f.wake_at - rt))
        wake = self.clock.next_wake()
        if wake is not None:
            candidates.append(now + (wake - self.clock.monotonic()))
        if self.h is not None:
            deadline = self.h.responder.next_deadline()
            if deadline is not None:
                delay = deadline - self.h.responder.time.now()
                if delay > 0:
                    candidates.append(now + delay)
        return max(now + 0.001, min(candidates))

    def _in_flight(self) -> bool:
        if self.h is None or self.running:
            return True
        return any(not f.step.terminal for f in self.h.store.list_failovers(limit=50))

    def _action(self, kind: str, arg: Any) -> None:
        if kind == "deliver":
            if self.h is None:
                self.held_back.append(arg)
            else:
                self._deliver(arg)
        elif kind == "observe":
            if self.h is not None:
                for plan in self.sc.pairs:
                    self.h.responder.observe_pair(plan.name)
                    self._check_claims(plan.name, "after an observation round")
        elif kind == "wall_step":
            with self.clock.cv:
                self.clock.step_wall(arg)
            self.note(f"wall clock stepped {arg:+g}s")
        elif kind == "rename_restart":
            old = "node-a" if arg == "active" else "node-b"
            self.renamed[old] = old + "2"
            if self.h is not None:
                self._crash("stopped for a config change", 0.0, kill=False)
                self.restart_at = None
                self._start()
            else:
                self.note("config changed while the responder is down")
            if arg == "active":
                self.adopt_at = self.world.now() + 1.0
        elif kind == "manual":
            self._concurrent_manual()
        elif kind == "switchover":
            self._switchover(arg)
        elif kind == "drill":
            self._drill(*arg)

    # ---- the new features: switchover, drill, hand-off confirm --------------------------------

    def _switchover(self, target: str) -> None:
        """An operator asks mainnet-a to switch signing over to `target` (a config name)."""
        if self.h is None:
            return
        name = self.renamed.get(target, target)
        resp = self.h.op("POST", "/api/v1/pairs/mainnet-a/switchover", json={"target": name})
        body = resp.get_json()
        self.note(f"operator switchover to {name} -> {resp.status_code} {body}")
        self.run.switchovers.append(f"{name}:{resp.status_code}")
        if resp.status_code >= 500:
            self.run.violations.append(f"switchover answered {resp.status_code}: {body}")
        elif resp.status_code == 200 and body.get("failover_id"):
            self.switchover_ids.append(body["failover_id"])

    def _drill(self, pair: str, fault: str | None) -> None:
        """A drill from the operator, with its own node token: it must send no mutating
        request to any node and leave the pair's state (and every failover) as it was."""
        self._wait_idle()  # the failovers in flight are parked: the state is theirs to change
        if self.h is None:
            return
        if self.drill_h is None:
            token = self.world.token_for(DRILL_INCARNATION + self.incarnation)
            path = write_config(self.root / f"drill{self.incarnation}", self.config_data, token)
            self.drill_h = self._harness(load_config(path), f"inc{self.incarnation}-drill")
        fault = None if fault is None else self.renamed.get(fault, fault)
        before = self._pair_snapshot(pair)
        body = None if fault is None else {"fault": fault}
        resp = self.drill_h.op("POST", f"/api/v1/pairs/{pair}/drill", json=body)
        after = self._pair_snapshot(pair)
        self.run.drills += 1
        answer = resp.get_json() or {}
        self.note(
            f"operator drill of {pair} (fault {fault}) -> {resp.status_code} "
            f"{answer.get('verdict') or answer}"
        )
        if resp.status_code not in (200, 409):
            self.run.violations.append(f"drill of {pair} answered {resp.status_code}: {answer}")
        if before != after:
            self.run.violations.append(
                f"drill changed the state of {pair}: before {before}, after {after}"
            )

    def _pair_snapshot(self, pair: str) -> tuple[Any, ...]:
        """What a drill must never change: roles, phase, failover_seq, attempts, failovers."""
        assert self.h is not None
        state = next((st for st in self.h.store.list_pairs() if st.pair == pair), None)
        failovers = [(f.id, f.step.value) for f in self.h.store.list_failovers(limit=50)]
        if state is None:
            return (None, failovers)
        return (
            dict(state.roles),
            state.phase,
            state.failover_seq,
            state.attempts,
            failovers,
        )

    def _operator_confirm(self, now: float) -> None:
        """handoff_operator: once a failover awaits a confirmation, the operator checks by hand
        (waits until no other node of the pair signs), then confirms."""
        if self.sc.feature != "handoff_operator" or self.h is None:
            return
        waiting = [
            f
            for f in self.h.store.list_failovers(limit=20)
            if f.step.value == "awaiting" and f.pair == "mainnet-a"
        ]
        if not waiting:
            self.confirm_at = None
            return
        if self.confirm_at is None:
            self.confirm_at = now + self.sc.confirm_delay
            return
        if now < self.confirm_at - 1e-9:
            return
        names = self._names()
        target = names.get(waiting[0].target or "")
        truth = self.world.truth()
        if any(truth[slot] for slot in self.sc.pairs[0].slots if slot != target):
            self.confirm_at = now + 0.5  # by hand: the old primary still signs, look again
            return
        seq = self.world.seq
        resp = self.h.op("POST", "/api/v1/pairs/mainnet-a/confirm")
        self.note(f"operator confirm -> {resp.status_code} {resp.get_json()}")
        if resp.status_code == 200:
            self.run.confirms.append(("mainnet-a", seq))
            self.confirm_at = None
        else:
            self.confirm_at = now + 0.5

    def _deliver(self, d: Delivery) -> None:
        h = self.h
        assert h is not None
        before = self._snapshot(h) if d.poison else None
        resp = h.post_alert(d.body())
        self.run.events.append(f"t={self.world.now():.2f} {d.what()} -> {resp.status_code}")
        if d.poison is not None:
            if resp.status_code != 400:
                self.run.violations.append(
                    f"poison delivery (startsAt {d.poison!r}) answered {resp.status_code}, not 400"
                )
            elif self._snapshot(h) != before:
                self.run.violations.append(f"poison delivery (startsAt {d.poison!r}) changed state")
            return
        if resp.status_code != 200:
            self.run.violations.append(f"delivery answered {resp.status_code}: {resp.get_json()}")
            return
        self.run.acked.append(int(resp.get_json()["id"]))
        if d.sustained and d.pair not in self.run.fault_seen:
            self.run.fault_seen[d.pair] = self.world.now()
        if any(a.episode == 10 and a.status == "resolved" for a in d.alerts):
            self.run.resolved_seen.setdefault(d.pair, self.world.now())
        if self.crash_pending and self.sc.responder_fault == "crash_after_ack" and d.sustained:
            self._crash("right after acknowledging a delivery", self.sc.restart_delay)

    def _snapshot(self, h: Harness) -> tuple[Any, ...]:
        if isinstance(h.store, EtcdStore):
            counts = tuple(
                etcdmode.count(h.store.client, f"{self.prefix}{t}/")
                for t in ("notes", "events", "failovers")
            )
            return counts, [s.to_json() for s in h.store.list_pairs()]
        conn = sqlite3.connect(f"file:{h.config.db_path}?mode=ro", uri=True)
        try:
            counts = tuple(
                conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("notifications", "events", "failovers")
            )
        finally:
            conn.close()
        return counts, [s.to_json() for s in h.store.list_pairs()]

    def _cycle(self, claim: bool = True) -> list[Failover]:
        """One pass of the background loop: deliveries, retries, deadlines, failovers."""
        h = self.h
        assert h is not None
        self._keep_leading()
        while h.responder.process_notifications() > 0:
            pass
        h.responder.retry_faults()
        for r in self.running:  # the runner's renew thread keeps the leases of running failovers
            r.harness.store.renew_lease(
                r.failover.id, r.harness.responder.owner, h.responder.time.now() + S.LEASE
            )
        h.responder.tick()
        if (
            self.crash_pending
            and self.sc.responder_fault == "crash_before_claim"
            and any(not f.step.terminal for f in h.store.list_failovers(limit=50))
        ):
            self._crash("with a failover planned, before claiming it", self.sc.restart_delay)
            return []
        claimed: list[Failover] = []
        while claim and (f := h.responder.claim_failover()) is not None:
            claimed.append(f)
        for f in claimed:
            self._spawn(h, f)
        return claimed

    def _spawn(self, h: Harness, f: Failover) -> None:
        """Execute a claimed failover in its own thread, as the background runner does."""
        if self.crash_pending and self.sc.responder_fault == "crash_in_failover" and not self.plan:
            plan = next(p for p in self.sc.pairs if p.name == f.pair)
            self.plan = self.world.arm_crash(
                self.incarnation, self.sc.crash_nth, self.sc.crash_landed, nodes=set(plan.slots)
            )
        result: list[Failover | str] = []
        ended = threading.Event()
        clock = self.clock

        def run() -> None:
            me = threading.get_ident()
            with clock.cv:
                clock.tracked.add(me)
            try:
                result.append(h.responder.execute(f))
            except Killed:
                result.append("killed")
            except Exception:
                result.append(traceback.format_exc(limit=6))
            finally:
                with clock.cv:
                    # a later thread may get this ident: it must not inherit a freeze
                    clock.tracked.discard(me)
                    clock.frozen.discard(me)
                    ended.set()
                    clock.cv.notify_all()

        thread = threading.Thread(target=run, name=f"failover-{f.id}", daemon=True)
        r = Running(f, h, thread, self.incarnation, result, ended)
        self.running.append(r)
        thread.start()
        if self.plan is not None and self.doomed is None:
            self.doomed = r

    def _crash_hit(self) -> bool:
        """The armed crash point was reached and the incarnation is not dead yet."""
        return (
            self.crash_pending
            and self.plan is not None
            and self.plan.hit.is_set()
            and self.h is not None
        )

    def _wait_idle(self) -> None:
        """Let every running failover reach a sleep or its end (or the crash point)."""
        end = time.monotonic() + JOIN_TIMEOUT
        while True:
            crashed = self._crash_hit()
            busy = [
                r
                for r in self.running
                if not self.clock.idle(r.thread) and not (crashed and r is self.doomed)
            ]
            if not busy:
                break
            if time.monotonic() > end:
                self.run.violations.append(
                    f"failover threads stuck: {[r.failover.id for r in busy]}"
                )
                break
            with self.clock.cv:
                self.clock.cv.wait(0.005)
        if self._crash_hit():
            assert self.plan is not None
            held = self.plan.call.brief() if self.plan.call else "?"
            landed = "landed" if self.sc.crash_landed else "lost"
            self._crash(f"during node call {held} ({landed})", self.sc.restart_delay)
            if self.sc.rename == "standby":
                self.renamed["node-b"] = "node-b2"  # restarted with the target renamed
            return
        for r in [r for r in self.running if not r.thread.is_alive()]:
            self.running.remove(r)
            for item in r.result:
                if isinstance(item, Failover):
                    self.note(f"failover {item.id} ended {item.step.value}: {item.outcome_reason}")
                    if item.step.terminal:
                        self._check_claims(item.pair, f"right after failover {item.id} ended")
                    if item.step.value == "done" and (item.data or {}).get("switchover"):
                        self._check_switchover(item)
                elif item != "killed":
                    self.run.violations.append(f"failover {r.failover.id} raised:\n{item}")
        if (
            self.plan is not None
            and self.doomed is not None
            and self.doomed not in self.running
            and not self.plan.hit.is_set()
            and self.crash_pending
        ):
            self.world.crash = None
            self.crash_pending = False
            self.note(f"the failover made fewer than {self.sc.crash_nth} node calls: no crash")

    def _check_switchover(self, f: Failover) -> None:
        """A switchover that ends done leaves exactly one signer, its target; its old primary is
        a standby only if a status read after its last fence answered healthy, not signing."""
        self.done_at.setdefault(f.id, self.world.now())
        if self.h is None:
            return
        names = self._names()
        plan = next(p for p in self.sc.pairs if p.name == f.pair)
        target = names.get(f.target or "")
        truth = self.world.truth(within=S.SETTLE)
        signers = sorted(slot for slot in plan.slots if truth[slot])
        if signers != [target]:
            self.run.violations.append(
                f"switchover {f.id} ended done, but the signers of {f.pair} are {signers}, "
                f"not exactly its target {f.target} ({target})"
            )
        roles = self.h.roles(f.pair)
        source = names.get(f.source or "")
        if source is None or roles.get(f.source or "") != "standby":
            return
        with self.world.lock:
            calls = [c for c in self.world.calls if c.node == source]
        fences = [
            c.seq for c in calls if c.reached and c.kind in w.MUTATING and c.kind != "activate"
        ]
        last_fence = max(fences, default=0)
        verified = [
            c
            for c in calls
            if c.kind == "status" and c.seq > last_fence and c.signing is False and c.healthy
        ]
        if truth[source] or not verified or self.world.nodes[source].powered is False:
            self.run.violations.append(
                f"switchover {f.id} made {f.source} a standby without verifying it silent: "
                f"signing now {truth[source]}, powered {self.world.nodes[source].powered}, "
                f"healthy not-signing answers since its last fence (#{last_fence}): {len(verified)}"
            )
        elif self.sc.switchover_back and f.target == self.renamed.get("node-b", "node-b"):
            self.back_at = self.world.now() + 2.0
            self.note("the operator will switch back to node-a in 2s")

    def _concurrent_manual(self) -> None:
        """An operator's manual failover from a second worker, racing the automatic decision."""
        h = self.h
        if h is None:
            return
        plan = self.sc.pairs[0]
        target = plan.names[plan.slots.index(plan.target)] if plan.target else plan.names[1]
        target = self.renamed.get(target, target)
        other = self._harness(h.config, f"inc{self.incarnation}-operator")
        barrier = threading.Barrier(2)
        errors: list[str] = []
        answers: list[Any] = []
        claimed: list[tuple[Harness, Failover]] = []

        def automatic() -> None:
            try:
                barrier.wait(10)
                self._cycle(claim=False)  # deliveries, deadlines: the automatic decision
                while (f := h.responder.claim_failover()) is not None:
                    claimed.append((h, f))
            except Exception:
                errors.append("automatic side raised:\n" + traceback.format_exc(limit=6))

        def manual() -> None:
            try:
                barrier.wait(10)
                what = "switchover" if self.sc.race_switchover else "failover"
                resp = other.op(
                    "POST", f"/api/v1/pairs/{plan.name}/{what}", json={"target": target}
                )
                answers.append((resp.status_code, resp.get_json()))
                while (f := other.responder.claim_failover()) is not None:
                    claimed.append((other, f))
            except Exception:
                errors.append("manual side raised:\n" + traceback.format_exc(limit=6))

        threads = [threading.Thread(target=automatic), threading.Thread(target=manual)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(JOIN_TIMEOUT)
        what = "switchover" if self.sc.race_switchover else "manual failover"
        self.note(f"concurrent {what} to {target}: {answers}")
        self.run.violations.extend(errors)
        for owner, f in claimed:
            self._spawn(owner, f)

    # ---- claims about who signs -------------------------------------------------------------------

    def _check_claims(self, pair: str, when: str) -> None:
        """Every fact `who_signs` states matches what the nodes say after the settle time.

        A fact about a node is judged only if nothing but a late landing changed the node
        since its last answered status call: a change the responder could not have seen (a
        fault window, a fence whose reply was lost in a crash) is not its claim to make.
        """
        if self.h is None:
            return
        status = self.h.pair(pair)
        try:
            facts = claims(status)
        except ValueError as exc:
            self.run.violations.append(str(exc))
            return
        if not facts:
            return
        names = self._names()
        truth = self.world.truth(within=S.SETTLE)
        for name, claimed in facts.items():
            slot = names.get(name)
            if slot is None or not self.world.fresh(slot):
                continue
            self.run.claims_checked += 1
            if truth[slot] != claimed:
                said = "signing" if claimed else "not signing"
                really = "signs" if truth[slot] else "does not sign"
                self.run.violations.append(
                    f"who_signs {when} says {name} is {said}, but {name} ({slot}) {really} "
                    f"after the settle time: {status['who_signs']!r}"
                )

    # ---- the end ------------------------------------------------------------------------------------

    def _release(self) -> None:
        """The dead incarnations' threads: the held call is dropped, frozen sleepers unwind."""
        if self.plan is not None:
            self.plan.release.set()
        with self.clock.cv:
            for r in self.running:  # a run cut short by an error: unwind its threads too
                r.freeze(self.clock)
            self.clock.thawed = True
            self.clock.cv.notify_all()
        for r in self.stale + self.running:
            r.thread.join(JOIN_TIMEOUT)
            if r.thread.is_alive():
                self.run.violations.append(f"the thread of failover {r.failover.id} did not stop")

    def _finish(self) -> None:
        before = etcdmode.revision(self.client) if self.client is not None else 0
        self._release()
        if self.client is not None:
            # nothing but the killed (or stopped) replicas' threads ran during the release
            after = etcdmode.revision(self.client)
            if after != before:
                self.run.violations.append(
                    f"a replica that no longer led wrote to etcd: revision {before} -> {after} "
                    "while only its threads ran"
                )
            for r in self.stale:
                for item in r.result:
                    if isinstance(item, str) and ("NotLeader" in item or "LeaseLost" in item):
                        last = item.strip().splitlines()[-1]
                        if "no node call" in last:  # the lease guard's words
                            self.run.refused_calls += 1
                        else:
                            self.run.refused_writes += 1
                        self.note(f"killed inc{r.incarnation}'s failover {r.failover.id}: {last}")
        # one last restart, once everything has ended: a finished failover is never resumed
        # (no activation repeated) and every acknowledged delivery is still in the store
        self._crash("stopped at the end of the scenario", S.LEASE + 0.5, kill=False)
        self.clock.advance(S.LEASE + 0.5)
        self.restart_at = None
        self._start()
        for _ in range(100):
            self._cycle()
            self._wait_idle()
            if not self._in_flight():
                break
            now = self.world.now()
            self.clock.advance(min(MAX_STEP, self._next(now, [], 0) - now))
        h = self.h
        assert h is not None
        self.world.sync()
        for plan in self.sc.pairs:
            h.responder.observe_pair(plan.name)
            self._check_claims(plan.name, "at the end (fresh observation)")
        for plan in self.sc.pairs:
            if plan.dry_run and h.roles(plan.name) != self.initial_roles[plan.name]:
                self.run.violations.append(
                    f"dry-run pair {plan.name} changed roles: {self.initial_roles[plan.name]} "
                    f"-> {h.roles(plan.name)}"
                )
        if self.sc.switchover_done:
            ended = {f.id: f for f in h.store.list_failovers(limit=100)}
            first = ended.get(self.switchover_ids[0]) if self.switchover_ids else None
            if first is None or first.step.value != "done":
                self.run.violations.append(
                    "switchover on a healthy pair did not end done: "
                    f"{self.run.switchovers}, "
                    f"{first.step.value + ': ' + str(first.outcome_reason) if first else 'no failover'}"
                )
            elif self.sc.switchover_at is not None:
                took = self.done_at.get(first.id, 1e9) - self.sc.switchover_at
                if "standby" not in (first.outcome_reason or ""):
                    self.run.violations.append(
                        f"switchover on a healthy pair left the old primary fenced: "
                        f"{first.outcome_reason}"
                    )
                if took > S.SWITCHOVER_BOUND:
                    self.run.violations.append(
                        f"switchover on a healthy pair took {took:.2f}s (bound "
                        f"{S.SWITCHOVER_BOUND:g}s)"
                    )
        with h.store.transaction() as txn:
            lost = [i for i in self.run.acked if txn.load_notification(i) is None]
        if lost:
            self.run.violations.append(
                f"acknowledged deliveries missing from the store after restarts: {lost}"
            )
        for f in h.store.list_failovers(limit=100):
            self.run.failovers.append(f.to_json())

    def _close(self) -> None:
        self.world.release_all()
        if self.client is not None:
            if self.leader is not None:
                self.leader.resign()
            etcdmode.drop(self.client, self.prefix)
        for h in self.harnesses:
            h.store.close()


def run_in_process(
    sc: Scenario,
    server: w.NodeServer,
    root: Path,
    verbose: bool = False,
    etcd_url: str | None = None,
) -> Run:
    """Run one in-process scenario; with `etcd_url`, each incarnation a replica on that etcd."""
    root.mkdir(parents=True, exist_ok=True)
    return InProcess(sc, server, root, verbose, etcd_url).execute()


__all__ = ["PairPlan", "Run", "claims", "config_data", "run_in_process", "write_config"]
