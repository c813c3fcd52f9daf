"""The responder: records deliveries, feeds the policy in store transactions, runs failovers.

Each public method is one unit of work that the web app, the background runner or a test calls.
Nothing here sleeps; time comes from the injected clock.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from .alerts import Alert, Notification
from .clock import Clock, Timebase
from .config import Config, PairConfig
from .drivers import Check, NodeHandle
from .executor import Executor, Rehearsal
from .failover import Failover, Step
from .metrics import Metrics
from .observation import NodeObservation
from .policy import (
    Abort,
    Acknowledge,
    Adopt,
    AlertsReceived,
    Decision,
    DrillPlan,
    Event,
    ManualFailover,
    Observed,
    Rejected,
    StartFailover,
    Tick,
    Unfence,
    decide,
    drill_plan,
    reconcile,
)
from .readiness import Readiness, check_json, preflight
from .state import PairState, Phase
from .store import (
    EventRecord,
    JournalEntry,
    LeaseLost,
    PairFault,
    StateUnreadable,
    Store,
    StoreTxn,
    StoreUnavailable,
)

MAX_ATTEMPTS = 5  # a unit of work that raised this many times is quarantined

log = logging.getLogger("responder.service")


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Outcome:
    """What an operator request did."""

    pair: str
    reason: str
    failover_id: str | None = None


def _event_kind(decision: Decision) -> str:
    if decision.actions:
        return "failover_planned"
    return f"decision:{decision.state.phase.value}"


_ABSENT = object()  # stands for a missing label: equal to no match value


RECENT_DELIVERIES = 1024  # deliveries kept parsed for this process's own loop


class _RouteIndex:
    """Which node of which pair an alert belongs to, by lookup rather than by trying every
    node: nodes are grouped by the names of their `match` labels, and an alert's values for
    those names are one dict key. Same answer as trying each pair in order and, within a
    pair, its first node whose labels all match."""

    def __init__(self, config: Config) -> None:
        self._by_keys: dict[tuple[str, ...], dict[tuple[object, ...], list[tuple[int, int]]]] = {}
        self._names: list[tuple[str, list[str]]] = []
        for p_index, pair in enumerate(config.pairs):
            self._names.append((pair.name, [n.name for n in pair.nodes]))
            for n_index, node in enumerate(pair.nodes):
                keys = tuple(sorted(node.match))
                values = tuple(node.match[k] for k in keys)
                self._by_keys.setdefault(keys, {}).setdefault(values, []).append((p_index, n_index))

        # the usual config: every node matches on the same label names, so the answer for
        # each combination of their values is known in advance
        self._single: dict[tuple[object, ...], list[tuple[str, str]]] | None = None
        self._single_keys: tuple[str, ...] = ()
        if len(self._by_keys) == 1:
            [(self._single_keys, table)] = self._by_keys.items()
            self._single = {values: self._resolve(hits) for values, hits in table.items()}

    def _resolve(self, hits: Iterable[tuple[int, int]]) -> list[tuple[str, str]]:
        best: dict[int, int] = {}
        for p_index, n_index in hits:
            if n_index < best.get(p_index, n_index + 1):
                best[p_index] = n_index
        out = []
        for p_index in sorted(best):
            pair, nodes = self._names[p_index]
            out.append((pair, nodes[best[p_index]]))
        return out

    def route(self, labels: Mapping[str, str]) -> list[tuple[str, str]]:
        """(pair, node) for every pair the alert belongs to, in config order."""
        if self._single is not None:
            values = tuple(labels.get(k, _ABSENT) for k in self._single_keys)
            return self._single.get(values, [])
        hits: list[tuple[int, int]] = []
        for keys, table in self._by_keys.items():
            hits.extend(table.get(tuple(labels.get(k, _ABSENT) for k in keys), ()))
        return self._resolve(hits)


class Responder:
    def __init__(
        self,
        config: Config,
        store: Store,
        nodes: dict[tuple[str, str], NodeHandle],
        metrics: Metrics,
        clock: Clock,
        *,
        owner: str,
    ) -> None:
        self.config = config
        self.store = store
        self.nodes = nodes
        self.metrics = metrics
        self.clock = clock
        self.owner = owner
        self.time = Timebase(clock, store.clock_anchor)
        self.executor = Executor(
            config, store, nodes, metrics, clock, owner=owner, timebase=self.time
        )
        self._configured = frozenset(p.name for p in config.pairs)
        self._routes = _RouteIndex(config)
        # the policy reads only these alerts (a pair's triggers); routing the rest is waste
        self._triggers = frozenset(t for p in config.pairs for t in p.policy.triggers)
        self._tick_offset = zlib.crc32(owner.encode())
        self._recent: dict[int, Notification] = {}  # recorded here, not yet processed
        self._recent_lock = threading.Lock()
        try:
            self.ensure_pairs()
        except LeaseLost as exc:  # a follower replica: the leader keeps the pairs' states
            log.info("pair states left to the leader: %s", exc)
        except StoreUnavailable as exc:  # etcd down at start: the runner does it once it leads
            log.warning("pair states not checked at start: %s", exc)

    # ---- state plumbing -------------------------------------------------------------------

    def ensure_pairs(self) -> None:
        """Every configured pair has a state, reconciled with the config (at start-up, and
        again by a replica that becomes the leader)."""
        now = self.time.now()
        with self.store.transaction() as txn:
            for pair in self.config.pairs:
                try:
                    current = txn.load_pair(pair.name)
                except StateUnreadable as exc:
                    log.error("%s: %s", pair.name, exc, extra={"pair": pair.name})
                    continue
                if current is None:
                    txn.save_pair(PairState.initial(pair, now))
                    txn.add_event(
                        EventRecord(
                            self.clock.now(), pair.name, "pair_created", "armed: initial state"
                        )
                    )
                else:
                    updated = reconcile(current, pair)
                    if updated != current:
                        txn.save_pair(updated)

    def _apply(
        self,
        txn: StoreTxn,
        pair: PairConfig,
        event: Event,
        now: float,
        kind: str | None = None,
        *,
        failover_data: dict[str, Any] | None = None,
    ) -> Decision:
        """Decide one event for one pair inside `txn`, persisting state, events and failovers.

        `failover_data` goes into the record of a failover the decision starts (a switchover's
        options)."""
        state = txn.load_pair(pair.name) or PairState.initial(pair, now)
        decision = decide(reconcile(state, pair), event, now, pair)
        if not decision.changed:
            return decision
        txn.save_pair(decision.state)
        if kind is None and isinstance(event, Observed):
            kind = f"observation:{decision.state.consistency.value}"
        txn.add_event(
            EventRecord(
                ts=self.clock.now(),  # records carry wall time; `now` is responder time
                pair=pair.name,
                kind=kind or _event_kind(decision),
                reason=decision.reason,
                failover_id=decision.state.failover_id if decision.actions else None,
            )
        )
        for action in decision.actions:
            self._plan_failover(txn, pair, action, self.clock.now(), failover_data)
        return decision

    def _plan_failover(
        self,
        txn: StoreTxn,
        pair: PairConfig,
        action: StartFailover,
        now: float,
        extra: dict[str, Any] | None = None,
    ) -> None:
        failover = Failover(
            id=action.failover_id,
            pair=pair.name,
            source=action.source,
            target=action.target,
            automatic=action.automatic,
            dry_run=self.config.pair_dry_run(pair),
            reason=action.reason,
            step=Step.PLANNED,
            created_at=now,
            updated_at=now,
            data={"signals": [s.__dict__ for s in action.signals], **(extra or {})},
        )
        txn.insert_failover(failover)
        txn.append_journal(failover.id, now, Step.PLANNED.value, "note", {"reason": action.reason})

    def _after(self, pair: str, decision: Decision) -> None:
        """Metrics and logs once a decision is committed."""
        if decision.duplicates:
            self.metrics.alerts_deduplicated.inc(decision.duplicates)
        if not decision.changed:
            return
        action = "start_failover" if decision.actions else decision.state.phase.value
        self.metrics.decisions.labels(pair=pair, action=action).inc()
        extra: dict[str, Any] = {"pair": pair, "reason": decision.reason}
        if decision.actions:
            extra["failover_id"] = decision.actions[0].failover_id
        log.info("decision", extra=extra)

    # ---- webhook --------------------------------------------------------------------------

    def receive(self, notification: Notification) -> int:
        """Durably record one delivery; the background loop acts on it."""
        if notification.truncated_alerts:
            self.metrics.truncated.inc()
            log.warning(
                "notification truncated by max_alerts: %d alerts dropped; absent alerts are "
                "not assumed resolved",
                notification.truncated_alerts,
            )
        record_id = self.store.record_notification(self.time.now(), notification)
        with self._recent_lock:  # this process's runner need not decode it again
            self._recent[record_id] = notification
            while len(self._recent) > RECENT_DELIVERIES:
                del self._recent[next(iter(self._recent))]
        return record_id

    def _route(self, alerts: Iterable[Alert]) -> dict[str, list[tuple[Alert, str]]]:
        """Trigger alerts per pair, each with the node whose `match` labels it carries.

        An alert no pair has as a trigger changes no state (the policy skips it), so it is
        not routed: a storm of informational alerts costs a set lookup each."""
        routed: dict[str, list[tuple[Alert, str]]] = {}
        triggers = self._triggers
        for alert in alerts:
            if alert.labels.get("alertname") not in triggers:
                continue
            for pair, node in self._routes.route(alert.labels):
                routed.setdefault(pair, []).append((alert, node))
        return routed

    def _fault(self, txn: StoreTxn, pair: str, source: str, ref: str, exc: Exception) -> PairFault:
        """Record a failure of one pair's work, in the open transaction; others go on."""
        error = f"{type(exc).__name__}: {exc}"
        fault = txn.record_fault(
            pair, source, ref, error, self.time.now(), max_attempts=MAX_ATTEMPTS
        )
        self.metrics.processing_errors.labels(pair=pair, source=source).inc()
        if fault.quarantined:
            kind = "quarantined"
            reason = (
                f"{source} {ref} failed {fault.attempts} times and is quarantined ({error}); "
                f"other pairs are unaffected; see the logs, then `responder ack {pair}` to retry"
            ).replace(" ''", "")
        else:
            kind = "error"
            reason = (
                f"{source} {ref} failed ({error}); retry {fault.attempts + 1} of {MAX_ATTEMPTS} "
                f"in {fault.next_at - self.time.now():.0f}s"
            )
        txn.add_event(EventRecord(self.clock.now(), pair, kind, reason, data=fault.to_json()))
        log.error("%s for %s: %s", kind, source, error, extra={"pair": pair, "reason": reason})
        return fault

    def _apply_guarded(
        self,
        txn: StoreTxn,
        pair: PairConfig,
        event: Event,
        source: str,
        ref: str,
    ) -> Decision | None:
        """_apply inside a savepoint: a raise undoes only this pair's writes and is recorded."""
        try:
            with txn.savepoint():
                decision = self._apply(txn, pair, event, self.time.now())
                txn.clear_fault(pair.name, source, ref)
                return decision
        except Exception as exc:
            log.exception("processing %s %s for %s raised", source, ref, pair.name)
            self._fault(txn, pair.name, source, ref, exc)
            return None

    def _alerts_event(self, stored: Any, alerts: list[tuple[Alert, str]]) -> AlertsReceived:
        note = stored.notification
        return AlertsReceived(tuple(alerts), note.truncated_alerts, received_at=stored.received_at)

    def process_notifications(self, batch: int = 20) -> int:
        """Feed recorded, unprocessed deliveries to the policy; returns how many were looked at.

        They are read, decoded and routed before the right to write is taken, so webhooks
        keep committing meanwhile; the transaction then claims those no other worker has
        claimed since and applies them in order. Each pair's share of a delivery is applied
        on its own: one that raises is kept for a retry with backoff, and the other pairs'
        shares go on.
        """
        with self._recent_lock:
            known = dict(self._recent)
        peeked = self.store.peek_notifications(batch, known)
        if not peeked:
            return 0  # nothing recorded since: no write transaction
        done: list[tuple[str, Decision]] = []
        routed = [(stored, self._route(stored.notification.alerts)) for stored in peeked]
        with self.store.transaction() as txn:
            claimed = txn.claim_notifications([stored.id for stored in peeked])
            for stored, per_pair in routed:
                if stored.id not in claimed:
                    continue  # another worker applied it
                for pair_name, alerts in per_pair.items():
                    pair = self.config.pair(pair_name)
                    event = self._alerts_event(stored, alerts)
                    decision = self._apply_guarded(txn, pair, event, "notification", str(stored.id))
                    if decision is not None:
                        done.append((pair_name, decision))
        with self._recent_lock:
            for stored in peeked:
                self._recent.pop(stored.id, None)
        for pair_name, decision in done:
            self._after(pair_name, decision)
        return len(peeked)

    def retry_faults(self) -> int:
        """Retry the deliveries and deadlines that raised, once their backoff has passed."""
        now = self.time.now()
        due = [
            f
            for f in self.store.list_faults()
            if not f.quarantined and f.next_at <= now and f.pair in self._configured
        ]
        retried = 0
        for fault in due:
            pair = self.config.pair(fault.pair)
            if fault.source == "notification":
                with self.store.transaction() as txn:
                    stored = txn.load_notification(int(fault.ref))
                    if stored is None:
                        txn.clear_fault(fault.pair, fault.source, fault.ref)
                        continue
                    alerts = self._route(stored.notification.alerts).get(pair.name, [])
                    event = self._alerts_event(stored, alerts)
                    decision = self._apply_guarded(txn, pair, event, fault.source, fault.ref)
                retried += 1
                if decision is not None:
                    self._after(pair.name, decision)
        return retried

    def _blocked_by_fault(self, pair: str, source: str, now: float) -> bool:
        for fault in self.store.list_faults(pair):
            if fault.source == source and (fault.quarantined or fault.next_at > now):
                return True
        return False

    def tick(self, limit: int | None = None) -> int:
        """Act on configured pairs whose deadline has passed, each on its own (in a savepoint
        of one transaction: a pair that raises is recorded, the others go on); at most
        `limit` of them, so that the failovers of the first can start while the next are
        decided. Returns how many were acted on.

        A pair removed from the config is left as it was, shown by check-config.
        """
        now = self.time.now()
        due = self.store.due_pairs(now, self._configured)
        if not due:
            return 0
        blocked = {
            f.pair
            for f in self.store.list_faults()
            if f.source == "deadline" and (f.quarantined or f.next_at > now)
        }
        due = [s for s in due if s.pair not in blocked]
        if limit is not None and len(due) > limit:
            # each process starts at its own place: two workers share a storm of deadlines
            # instead of deciding the same pairs one after the other
            start = self._tick_offset % len(due)
            due = (due[start:] + due[:start])[:limit]
        done: list[tuple[str, Decision]] = []
        with self.store.transaction() as txn:
            for state in due:
                pair = self.config.pair(state.pair)
                decision = self._apply_guarded(txn, pair, Tick(), "deadline", "")
                if decision is not None:
                    done.append((pair.name, decision))
        for name, decision in done:
            self._after(name, decision)
        return len(due)

    def next_deadline(self) -> float | None:
        return self.store.next_deadline(self._configured)

    # ---- observation ----------------------------------------------------------------------

    def observation_due(self, pair: str) -> bool:
        """True for one process per pair and interval: that one probes the pair's nodes."""
        interval = self.config.pair(pair).observe.interval
        return self.store.claim_observation(pair, self.time.now(), interval)

    def observe_pair(self, pair_name: str) -> Decision | None:
        """Probe every node of a pair (read-only) and judge what they say against the record."""
        pair = self.config.pair(pair_name)
        basis = self.store.get_pair(pair_name)
        observations = tuple(self.executor.observe(pair_name, n.name) for n in pair.nodes)
        self.metrics.observations.labels(pair=pair_name).inc()
        settle = self._settle_times(pair)
        event = Observed(
            observations,
            settle,
            basis_seq=basis.failover_seq if basis else None,
            basis_roles=dict(basis.roles) if basis else None,
        )
        with self.store.transaction() as txn:
            decision = self._apply_guarded(txn, pair, event, "observation", "")
        if decision is not None and decision.changed:
            self._after(pair_name, decision)
            state = decision.state
            if state.consistency.value == "split_brain":
                log.critical("split brain: %s", state.consistency_reason, extra={"pair": pair_name})
        return decision

    def _settle_times(self, pair: PairConfig) -> dict[str, float]:
        """Each node's driver settle time: how long quiet answers must hold to lift a doubt."""
        return {n.name: self.nodes[(pair.name, n.name)].driver.settle_time for n in pair.nodes}

    # ---- failovers ------------------------------------------------------------------------

    def claim_failover(self) -> Failover | None:
        """Take the lease of one runnable failover (new, or abandoned by a dead owner)."""
        return self.store.claim_failover(
            self.owner, self.time.now(), self.config.failover_lease, pairs=self._configured
        )

    def claim_failovers(self, limit: int) -> list[Failover]:
        """Take the leases of up to `limit` runnable failovers in one transaction."""
        if limit <= 0:
            return []
        return self.store.claim_failovers(
            self.owner, self.time.now(), self.config.failover_lease, self._configured, limit
        )

    def execute(self, failover: Failover) -> Failover:
        """Run a claimed failover to a terminal step (resuming from its journal).

        A raise that is not a lost lease is recorded against the pair and retried with
        backoff; after MAX_ATTEMPTS the failover ends as failed, so the pair's operator
        commands work again (never a 409 loop).
        """
        try:
            result = self.executor.run(failover)
        except LeaseLost:
            raise
        except Exception as exc:
            log.exception("failover %s raised", failover.id, extra={"pair": failover.pair})
            with self.store.transaction() as txn:
                fault = self._fault(txn, failover.pair, "failover", failover.id, exc)
            current = self.store.get_failover(failover.id) or failover
            if fault.quarantined:
                reason = (
                    f"failover stopped after {fault.attempts} internal errors ({fault.error}); "
                    "the nodes' state is unknown: check them by hand, then adopt the signer"
                )
                unknown = {
                    n: "a failover step raised" for n in (current.source, current.target) if n
                }
                ended = self.executor._end(current, Step.FAILED, reason, unknown_nodes=unknown)
                self.store.clear_faults(failover.pair)
                return ended
            with self.store.transaction() as txn:
                txn.update_failover(
                    replace(current, wake_at=fault.next_at, updated_at=self.clock.now()),
                    self.owner,
                )
            self.store.release_lease(failover.id, self.owner)
            raise
        if any(
            f.source == "failover" and f.ref == failover.id
            for f in self.store.list_faults(failover.pair)
        ):  # an earlier attempt raised: it is over now
            self.store.batched(lambda txn: txn.clear_fault(failover.pair, "failover", failover.id))
        if result.step.terminal:
            self._judge_latest(result.pair)
        return result

    def _judge_latest(self, pair_name: str) -> None:
        """Judge the answers the failover itself just read, so consistency is current at once."""
        pair = self.config.pair(pair_name)
        observations = tuple(self.store.observations(pair_name).values())
        if not observations:
            return
        settle = self._settle_times(pair)
        decision = self.store.batched(  # shared with other failovers' commits
            lambda txn: self._apply_guarded(
                txn, pair, Observed(observations, settle), "observation", ""
            )
        )
        if decision is not None:
            self._after(pair_name, decision)

    def run_failovers(self) -> list[Failover]:
        """Claim every runnable failover and execute it here, one after the other."""
        finished: list[Failover] = []
        while (failover := self.claim_failover()) is not None:
            finished.append(self.execute(failover))
        return finished

    def step(self) -> list[Failover]:
        """One full synchronous pass: deliveries, deadlines, failovers."""
        while self.process_notifications() > 0:
            pass
        self.tick()
        return self.run_failovers()

    # ---- operator requests ----------------------------------------------------------------

    def _operator(
        self, pair_name: str, event: Event, kind: str, failover_data: dict[str, Any] | None = None
    ) -> Outcome:
        try:
            pair = self.config.pair(pair_name)
        except KeyError:
            raise Rejected(f"unknown pair {pair_name!r}") from None
        with self.store.transaction() as txn:
            decision = self._apply(
                txn, pair, event, self.time.now(), kind, failover_data=failover_data
            )
        self._after(pair_name, decision)
        failover_id = decision.actions[0].failover_id if decision.actions else None
        return Outcome(pair_name, decision.reason, failover_id)

    def operator(self, pair: str, event: Event) -> Outcome:
        """Pause, resume, acknowledge or manual failover; raises Rejected with a reason.

        An acknowledgement also releases the pair's quarantined work for another try.
        """
        kind = f"operator:{type(event).__name__.lower()}"
        if isinstance(event, Acknowledge) and pair in self._configured:
            cleared = self.store.clear_faults(pair)
            if cleared:
                note = f"{event.by} released {cleared} quarantined or retrying work items"
                with self.store.transaction() as txn:
                    txn.add_event(EventRecord(self.clock.now(), pair, kind, note))
                try:
                    return self._operator(pair, event, kind)
                except Rejected:
                    return Outcome(pair, note)
        return self._operator(pair, event, kind)

    def abort(self, pair_name: str, by: str) -> Outcome:
        """Stop the failover in flight before its activation.

        A running executor checks the request before fencing, after the fence and right before
        the activation; a failover waiting in `awaiting` is ended here and now.
        """
        outcome = self._operator(pair_name, Abort(by), "operator:abort")
        state = self.store.get_pair(pair_name)
        if state is None or state.failover_id is None:
            return outcome
        current = self.store.get_failover(state.failover_id)
        if current is None or current.step is not Step.AWAITING:
            return outcome
        claimed = self.store.claim_failover(
            self.owner, self.time.now(), self.config.failover_lease, failover_id=current.id
        )
        if claimed is None:
            return outcome  # its owner is checking the gate right now and will see the request
        ended = self.execute(claimed)
        return Outcome(pair_name, ended.outcome_reason or outcome.reason, ended.id)

    def adopt(self, pair_name: str, node: str, by: str) -> Outcome:
        """Record `node` as the active signer once every node's answer says it is the only one."""
        try:
            pair = self.config.pair(pair_name)
        except KeyError:
            raise Rejected(f"unknown pair {pair_name!r}") from None
        if node not in {n.name for n in pair.nodes}:
            raise Rejected(f"{node} is not a node of {pair_name}")
        probes = {n.name: self.executor.observe(pair_name, n.name).signing for n in pair.nodes}
        return self._operator(pair_name, Adopt(node, by, probes), "operator:adopt")

    def unfence(self, pair_name: str, node: str, by: str) -> Outcome:
        """Probe the node first (it must say it is not signing), then mark it standby."""
        try:
            handle = self.nodes[(pair_name, node)]
        except KeyError:
            raise Rejected(f"unknown node {node!r} in pair {pair_name!r}") from None
        del handle
        signing = self.executor.observe(pair_name, node).signing
        return self._operator(pair_name, Unfence(node, by, signing), "operator:unfence")

    def confirm(self, pair_name: str, by: str) -> Outcome:
        """An operator allows an activation that waits for confirmation (no hand-off came)."""
        try:
            self.config.pair(pair_name)
        except KeyError:
            raise Rejected(f"unknown pair {pair_name!r}") from None
        state = self.store.get_pair(pair_name)
        if state is None or state.phase is not Phase.FAILING_OVER or state.failover_id is None:
            raise Rejected("no failover in flight; nothing to confirm")
        current = self.store.get_failover(state.failover_id)
        if current is None or current.step is not Step.AWAITING:
            step = current.step.value if current else "missing"
            raise Rejected(f"failover {state.failover_id} is {step}, not awaiting confirmation")
        now = self.clock.now()
        claimed = self.store.claim_failover(
            self.owner, self.time.now(), self.config.failover_lease, failover_id=current.id
        )
        if claimed is None:
            raise Rejected(f"failover {current.id} is being checked right now; retry in a moment")
        try:
            data = {**(claimed.data or {}), "confirmed_by": by, "confirmed_at": now}
            updated = replace(claimed, data=data, wake_at=self.time.now(), updated_at=now)
            reason = f"{by} confirmed activation of {claimed.target} without a hand-off"
            with self.store.transaction() as txn:
                txn.update_failover(updated, self.owner)
                txn.append_journal(
                    claimed.id, now, claimed.step.value, "note", {"confirmed_by": by}
                )
                txn.add_event(
                    EventRecord(now, pair_name, "operator:confirm", reason, failover_id=claimed.id)
                )
        finally:
            self.store.release_lease(claimed.id, self.owner)
        log.warning(reason, extra={"pair": pair_name, "failover_id": claimed.id})
        return Outcome(pair_name, reason, claimed.id)

    def manual_failover(self, pair: str, target: str, by: str) -> Outcome:
        return self.operator(pair, ManualFailover(target, by))

    def switchover(
        self, pair_name: str, target: str, by: str, *, safe_slots: int = 0, timeout: float = 600.0
    ) -> Outcome:
        """A planned failover through the verified path; the old primary ends a standby.

        With `safe_slots`, it first waits (up to `timeout`) until no key of the pair proposes
        a block within that many slots; past the timeout it ends with nothing changed.
        """
        try:
            pair = self.config.pair(pair_name)
        except KeyError:
            raise Rejected(f"unknown pair {pair_name!r}") from None
        if safe_slots and (pair.ethereum is None or pair.ethereum.liveness is None):
            raise Rejected(
                "a safe moment needs a beacon node to read proposal duties from "
                "(ethereum.liveness in the pair's config); retry without safe_slots"
            )
        if safe_slots and pair.ethereum and pair.ethereum.liveness:
            per_epoch = pair.ethereum.liveness.slots_per_epoch
            if safe_slots > per_epoch:
                raise Rejected(
                    f"safe_slots {safe_slots} reaches past the next epoch, whose proposal "
                    f"duties beacon nodes do not know yet; use at most {per_epoch}"
                )
        data = {
            "switchover": True,
            "safe_slots": safe_slots,
            "wait_until": self.clock.now() + timeout,
        }
        event = ManualFailover(target, by, planned=True)
        return self._operator(pair_name, event, "operator:switchover", data)

    # ---- readiness and drills -------------------------------------------------------------

    def claim_rounds(self, rounds: list[tuple[str, float]]) -> set[str]:
        """Which of these read-only rounds (schedule key, interval) this process runs now:
        one transaction for all of them. Keys are the pair (observation), `readiness:PAIR`
        and `drill:PAIR`, as `observation_due`, `readiness_due` and `drill_due` claim them."""
        return self.store.claim_schedules(rounds, self.time.now())

    def readiness_due(self, pair: str) -> bool:
        """True for one process per pair and `readiness.interval`: that one runs preflight."""
        interval = self.config.pair(pair).readiness.interval
        return self.store.claim_schedule(f"readiness:{pair}", self.time.now(), interval)

    def drill_due(self, pair: str) -> bool:
        """True for one process per pair and `readiness.drill_every` (never when unset)."""
        every = self.config.pair(pair).readiness.drill_every
        if every is None:
            return False
        return self.store.claim_schedule(f"drill:{pair}", self.time.now(), every)

    def _state(self, pair: PairConfig) -> PairState:
        found = self.store.get_pair(pair.name)
        return reconcile(found, pair) if found else PairState.initial(pair, self.time.now())

    def check_readiness(self, pair_name: str) -> Readiness:
        """One read-only preflight round; an event when the verdict or failing checks change."""
        pair = self.config.pair(pair_name)
        checks = preflight(
            pair,
            self._state(pair),
            self.nodes,
            lambda node: self.executor.observe(pair_name, node),
        )
        report = Readiness(pair_name, self.clock.now(), checks)
        before = self.store.reports(pair_name).get("readiness")
        self.store.save_report(pair_name, "readiness", report.to_json())
        failing = sorted(c.name for c in report.failing)
        was = None
        if before is not None:
            was = sorted(c["name"] for c in before.get("checks", []) if c.get("ok") is False)
        if was != failing:
            kind = "readiness:ready" if report.ready else "readiness:not_ready"
            data = {"failing": [check_json(c) for c in report.failing]}
            with self.store.transaction() as txn:
                txn.add_event(EventRecord(report.at, pair_name, kind, report.summary, data=data))
            level = logging.INFO if report.ready else logging.WARNING
            log.log(level, "readiness: %s", report.summary, extra={"pair": pair_name})
        return report

    def drill(self, pair_name: str, fault: str | None, by: str) -> dict[str, Any]:
        """Answer "what would happen if `fault` failed now" by walking the failover's decision
        and dry-run path against the real nodes: every probe and read-only check, the requests
        a real failover would send in order, what would block it. Changes nothing on a node."""
        try:
            pair = self.config.pair(pair_name)
        except KeyError:
            raise Rejected(f"unknown pair {pair_name!r}") from None
        started, t0 = self.clock.now(), self.clock.monotonic()
        plan = drill_plan(self._state(pair), pair, fault, self.time.now())
        checks: list[Check] = []
        requests: list[dict[str, Any]] = []
        steps: list[dict[str, Any]] = []
        outcome, outcome_reason = None, None
        if plan.source is not None and plan.target is not None:
            rehearsal = Rehearsal(
                self.config,
                self.store,
                self.nodes,
                self.metrics,
                self.clock,
                owner=self.owner,
                timebase=self.time,
            )
            seq = self.store.list_events(pair=pair_name, limit=1)
            ended = rehearsal.run(
                Failover(
                    id=f"{pair_name}-drill-{seq[0].id if seq else 0}",
                    pair=pair_name,
                    source=plan.source,
                    target=plan.target,
                    automatic=True,
                    dry_run=True,
                    reason=f"drill by {by}: what if {plan.source} failed now",
                    step=Step.PLANNED,
                    created_at=started,
                    updated_at=started,
                    data={},
                )
            )
            checks, requests, steps = rehearsal.checks, rehearsal.requests, rehearsal.steps
            outcome, outcome_reason = ended.step.value, ended.outcome_reason
        blockers, warnings = _drill_verdict(plan, checks, outcome, outcome_reason)
        if self.config.pair_dry_run(pair):
            warnings.append("the pair runs in dry-run: a real alert would only rehearse")
        ok = not blockers
        if plan.source is None and not blockers:
            verdict = "no failover would start"
        elif ok:
            verdict = f"a real failover from {plan.source} to {plan.target} would succeed"
        else:
            verdict = "a real failover would NOT succeed"
        report = {
            "pair": pair_name,
            "fault": plan.source or fault,
            "source": plan.source,
            "target": plan.target,
            "by": by,
            "at": started,
            "duration_seconds": round(self.clock.monotonic() - t0, 3),
            "ok": ok,
            "verdict": verdict,
            "blockers": blockers,
            "warnings": warnings,
            "notes": list(plan.notes),
            "outcome": outcome,
            "outcome_reason": outcome_reason,
            "checks": [check_json(c) for c in checks],
            "requests": requests,
            "steps": steps,
        }
        self.store.save_report(pair_name, "drill", report)
        if ok:
            self.store.save_report(pair_name, "drill_success", {"at": started, "by": by})
        reason = verdict + (f": {'; '.join(blockers)}" if blockers else "")
        if warnings and ok:
            reason += f" ({len(warnings)} warnings)"
        with self.store.transaction() as txn:
            txn.add_event(
                EventRecord(
                    started,
                    pair_name,
                    "drill:passed" if ok else "drill:failed",
                    reason,
                    data={k: report[k] for k in ("fault", "target", "by", "blockers", "warnings")},
                )
            )
        log.log(
            logging.INFO if ok else logging.WARNING, "drill: %s", reason, extra={"pair": pair_name}
        )
        return report

    # ---- read side ------------------------------------------------------------------------

    def _wall(self, t: float | None) -> str | None:
        """A responder time as an ISO wall-clock time."""
        return None if t is None else iso(self.time.to_wall(t))

    def _node_view(
        self, pair: PairConfig, state: PairState, obs: dict[str, NodeObservation], now: float
    ) -> list[dict[str, Any]]:
        nodes = []
        for n in pair.nodes:
            if n.name not in state.roles:
                continue
            seen = obs.get(n.name)
            observed = None
            if seen is not None:
                observed = {
                    "says": seen.says,
                    "signing": seen.signing,
                    "reachable": seen.reachable,
                    "healthy": seen.healthy,
                    "detail": seen.detail,
                    "at": iso(seen.at_wall),
                    "age_seconds": round(max(0.0, now - seen.at), 1),
                }
            nodes.append(
                {
                    "name": n.name,
                    "role": state.roles[n.name].value,
                    "observed": observed,
                    "may_be_signing": state.uncertain.get(n.name),
                    "firing": sorted({s.alertname for s in state.signals_on(n.name)}),
                }
            )
        return nodes

    def _who_signs(
        self, state: PairState, obs: dict[str, NodeObservation], pair: PairConfig
    ) -> str:
        """Who signs, in plain words, from observations only; says so when it does not know."""
        doubts = [f"{n} may be signing ({why})" for n, why in sorted(state.uncertain.items())]
        seen = [obs[n.name] for n in pair.nodes if n.name in obs]
        if not seen:
            return "; ".join(["not observed yet: who signs is unknown", *doubts])
        signing = [o.node for o in seen if o.signing is True]
        unknown = [o.node for o in seen if o.signing is None]
        unknown += [n.name for n in pair.nodes if n.name not in obs]
        if signing:
            verb = "report" if len(signing) > 1 else "reports"
            text = f"{' and '.join(signing)} {verb} signing"
        elif unknown:
            text = "no node reports signing"
        else:
            text = "no node signs (every node answered not signing)"
        if unknown:
            text += f"; unknown for {', '.join(unknown)}"
        return "; ".join([text, *doubts])

    def status(self) -> list[dict[str, Any]]:
        now = self.time.now()
        states = {s.pair: s for s in self.store.list_pairs()}
        unreadable = self.store.unreadable_pairs()
        faults: dict[str, list[dict[str, Any]]] = {}
        for fault in self.store.list_faults():
            faults.setdefault(fault.pair, []).append(
                {
                    "source": fault.source,
                    "ref": fault.ref,
                    "attempts": fault.attempts,
                    "error": fault.error,
                    "quarantined": fault.quarantined,
                    "next_retry": None if fault.quarantined else self._wall(fault.next_at),
                }
            )
        out = []
        for pair in self.config.pairs:
            state = states.get(pair.name) or PairState.initial(pair, now)
            obs = self.store.observations(pair.name)
            failover = self.store.get_failover(state.failover_id) if state.failover_id else None
            cooldown_until = None
            if state.attempts:
                end = max((a.at for a in state.attempts if not a.planned), default=-1e18)
                end += pair.policy.cooldown
                cooldown_until = end if end > now else None
            pending = None
            if state.phase is Phase.PENDING:
                pending = {
                    "node": state.active_node,
                    "signals": [
                        {
                            "alertname": s.alertname,
                            "fingerprint": s.fingerprint,
                            "since": self._wall(s.since),
                        }
                        for s in state.signals_on(state.active_node or "")
                    ],
                    "deadline": self._wall(state.deadline),
                    "seconds_left": None
                    if state.deadline is None
                    else round(max(0.0, state.deadline - now), 3),
                }
            view = {
                "name": pair.name,
                "active_node": state.active_node,
                "nodes": self._node_view(pair, state, obs, now),
                "phase": state.phase.value,
                "paused": state.paused,
                "dry_run": self.config.pair_dry_run(pair),
                "pending": pending,
                "cooldown_until": self._wall(cooldown_until),
                "blocked_reason": state.blocked_reason,
                "held_reason": state.held_reason,
                "consistency": state.consistency.value,
                "consistency_reason": state.consistency_reason,
                "who_signs": self._who_signs(state, obs, pair),
                "faults": faults.get(pair.name, []),
                "reason": state.reason,
                "reason_at": self._wall(state.reason_at),
                "failover": None if failover is None else failover_summary(failover),
                **_readiness_view(self.store.reports(pair.name)),
            }
            if pair.name in unreadable:
                view |= {
                    "phase": "unreadable",
                    "active_node": None,
                    "reason": unreadable[pair.name],
                    "who_signs": "unknown: the pair's stored state cannot be read",
                }
            out.append(view)
        return out


def _readiness_view(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The latest preflight and drill of a pair, as status shows them."""
    ready = reports.get("readiness")
    drill = reports.get("drill")
    success = reports.get("drill_success")
    readiness = None
    if ready is not None:
        readiness = {
            "ready": ready.get("ready"),
            "at": iso(ready.get("at")),
            "summary": ready.get("summary"),
            "checks": ready.get("checks", []),
        }
    last_drill = None
    if drill is not None:
        last_drill = {
            key: drill.get(key)
            for key in ("ok", "verdict", "fault", "target", "by", "blockers", "warnings")
        }
        last_drill["at"] = iso(drill.get("at"))
    if success is not None:
        last_drill = (last_drill or {}) | {"last_success_at": iso(success.get("at"))}
    return {"readiness": readiness, "drill": last_drill}


def _drill_verdict(
    plan: DrillPlan, checks: list[Check], outcome: str | None, outcome_reason: str | None
) -> tuple[list[str], list[str]]:
    """Blockers and warnings of a drill.

    The faulted node is the one assumed broken: its own failing API or fence levels are
    warnings while another of its levels checks out, and a blocker when none does.
    """
    source = plan.source
    blockers = list(plan.blockers)
    warnings: list[str] = []

    def of_source(check: Check) -> bool:
        return source is not None and (
            check.name in (f"{source}:api", f"{source}:fence")
            or check.name.startswith(f"{source}:fence-level-")
        )

    fence = [c for c in checks if source and c.name.startswith(f"{source}:fence-level-")]
    verified = any(c.ok for c in fence)
    for check in checks:
        line = f"{check.name}: {check.reason}"
        if check.ok is None or (check.ok is False and of_source(check) and verified):
            warnings.append(line)
        elif check.ok is False:
            blockers.append(line)
    if fence and not verified:
        blockers.append(f"no fence level of {source} could be verified")
    if outcome not in (None, "done") and outcome_reason and not blockers:
        blockers.append(outcome_reason)
    return blockers, warnings


def step_timings(journal: list[JournalEntry]) -> dict[str, float]:
    """Seconds a failover spent in each step, from its journal, and in total."""
    firsts: dict[str, float] = {}
    for entry in journal:
        firsts.setdefault(entry.step, entry.ts)
    order = sorted(firsts.items(), key=lambda kv: kv[1])
    out = {step: round(nxt - t, 3) for (step, t), (_, nxt) in pairwise(order)}
    if order:
        out["total"] = round(order[-1][1] - order[0][1], 3)
    return out


def failover_summary(failover: Failover) -> dict[str, Any]:
    data = failover.to_json()
    data["created_at"] = iso(failover.created_at)
    data["updated_at"] = iso(failover.updated_at)
    return data
