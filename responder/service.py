"""The responder: records deliveries, feeds the policy in store transactions, runs failovers.

Each public method is one unit of work that the web app, the background runner or a test calls.
Nothing here sleeps; time comes from the injected clock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from .alerts import Alert, Notification
from .clock import Clock
from .config import Config, PairConfig
from .drivers import NodeHandle
from .executor import Executor
from .failover import Failover, Step
from .metrics import Metrics
from .policy import (
    AlertsReceived,
    Decision,
    Event,
    ManualFailover,
    Rejected,
    StartFailover,
    Tick,
    Unfence,
    decide,
    reconcile,
)
from .state import PairState, Phase
from .store import EventRecord, Store, StoreTxn

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
        self.executor = Executor(config, store, nodes, metrics, clock, owner=owner)
        self._ensure_pairs()

    # ---- state plumbing -------------------------------------------------------------------

    def _ensure_pairs(self) -> None:
        now = self.clock.now()
        with self.store.transaction() as txn:
            for pair in self.config.pairs:
                current = txn.load_pair(pair.name)
                if current is None:
                    txn.save_pair(PairState.initial(pair, now))
                    txn.add_event(
                        EventRecord(now, pair.name, "pair_created", "armed: initial state")
                    )
                else:
                    updated = reconcile(current, pair)
                    if updated != current:
                        txn.save_pair(updated)

    def _apply(
        self, txn: StoreTxn, pair: PairConfig, event: Event, now: float, kind: str | None = None
    ) -> Decision:
        """Decide one event for one pair inside `txn`, persisting state, events and failovers."""
        state = txn.load_pair(pair.name) or PairState.initial(pair, now)
        decision = decide(reconcile(state, pair), event, now, pair)
        if not decision.changed:
            return decision
        txn.save_pair(decision.state)
        txn.add_event(
            EventRecord(
                ts=now,
                pair=pair.name,
                kind=kind or _event_kind(decision),
                reason=decision.reason,
                failover_id=decision.state.failover_id if decision.actions else None,
            )
        )
        for action in decision.actions:
            self._plan_failover(txn, pair, action, now)
        return decision

    def _plan_failover(
        self, txn: StoreTxn, pair: PairConfig, action: StartFailover, now: float
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
            data={"signals": [s.__dict__ for s in action.signals]},
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

    def receive(self, notification: Notification, raw: str) -> int:
        """Durably record one delivery; the background loop acts on it."""
        if notification.truncated_alerts:
            self.metrics.truncated.inc()
            log.warning(
                "notification truncated by max_alerts: %d alerts dropped; absent alerts are "
                "not assumed resolved",
                notification.truncated_alerts,
            )
        return self.store.record_notification(self.clock.now(), notification, raw)

    def _route(self, alerts: Iterable[Alert]) -> dict[str, list[tuple[Alert, str]]]:
        """Alerts per pair, each with the node whose `match` labels it carries."""
        routed: dict[str, list[tuple[Alert, str]]] = {}
        for alert in alerts:
            for pair in self.config.pairs:
                for node in pair.nodes:
                    if node.matches(alert.labels):
                        routed.setdefault(pair.name, []).append((alert, node.name))
                        break
        return routed

    def process_notifications(self, batch: int = 20) -> int:
        """Feed recorded, unprocessed deliveries to the policy; returns how many were taken."""
        done: list[tuple[str, Decision]] = []
        with self.store.transaction() as txn:
            now = self.clock.now()
            taken = txn.take_notifications(batch)
            for stored in taken:
                note = stored.notification
                for pair_name, alerts in self._route(note.alerts).items():
                    pair = self.config.pair(pair_name)
                    event = AlertsReceived(
                        tuple(alerts), note.truncated_alerts, received_at=stored.received_at
                    )
                    done.append((pair_name, self._apply(txn, pair, event, now)))
        for pair_name, decision in done:
            self._after(pair_name, decision)
        return len(taken)

    def tick(self) -> None:
        """Act on every pair whose deadline has passed."""
        now = self.clock.now()
        for state in self.store.list_pairs():
            if state.deadline is None or now < state.deadline:
                continue
            pair = self.config.pair(state.pair)
            with self.store.transaction() as txn:
                decision = self._apply(txn, pair, Tick(), now)
            self._after(pair.name, decision)

    def next_deadline(self) -> float | None:
        deadlines = [s.deadline for s in self.store.list_pairs() if s.deadline is not None]
        return min(deadlines) if deadlines else None

    # ---- failovers ------------------------------------------------------------------------

    def claim_failover(self) -> Failover | None:
        """Take the lease of one runnable failover (new, or abandoned by a dead owner)."""
        return self.store.claim_failover(self.owner, self.clock.now(), self.config.failover_lease)

    def execute(self, failover: Failover) -> Failover:
        """Run a claimed failover to a terminal step (resuming from its journal)."""
        return self.executor.run(failover)

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

    def _operator(self, pair_name: str, event: Event, kind: str) -> Outcome:
        try:
            pair = self.config.pair(pair_name)
        except KeyError:
            raise Rejected(f"unknown pair {pair_name!r}") from None
        with self.store.transaction() as txn:
            decision = self._apply(txn, pair, event, self.clock.now(), kind)
        self._after(pair_name, decision)
        failover_id = decision.actions[0].failover_id if decision.actions else None
        return Outcome(pair_name, decision.reason, failover_id)

    def operator(self, pair: str, event: Event) -> Outcome:
        """Pause, resume, acknowledge or manual failover; raises Rejected with a reason."""
        kind = f"operator:{type(event).__name__.lower()}"
        return self._operator(pair, event, kind)

    def unfence(self, pair_name: str, node: str, by: str) -> Outcome:
        """Probe the node first (it must say it is not signing), then mark it standby."""
        try:
            handle = self.nodes[(pair_name, node)]
        except KeyError:
            raise Rejected(f"unknown node {node!r} in pair {pair_name!r}") from None
        signing: bool | None
        try:
            signing = handle.driver.status().signing
        except Exception as exc:
            log.warning("unfence probe failed: %s", exc, extra={"pair": pair_name, "node": node})
            signing = None
        return self._operator(pair_name, Unfence(node, by, signing), "operator:unfence")

    def confirm(self, pair_name: str, by: str) -> Outcome:
        """An operator allows an activation that waits for confirmation (no hand-off came)."""
        try:
            self.config.pair(pair_name)
        except KeyError:
            raise Rejected(f"unknown pair {pair_name!r}") from None
        state = next((s for s in self.store.list_pairs() if s.pair == pair_name), None)
        if state is None or state.phase is not Phase.FAILING_OVER or state.failover_id is None:
            raise Rejected("no failover in flight; nothing to confirm")
        current = self.store.get_failover(state.failover_id)
        if current is None or current.step is not Step.AWAITING:
            step = current.step.value if current else "missing"
            raise Rejected(f"failover {state.failover_id} is {step}, not awaiting confirmation")
        now = self.clock.now()
        claimed = self.store.claim_failover(
            self.owner, now, self.config.failover_lease, failover_id=current.id
        )
        if claimed is None:
            raise Rejected(f"failover {current.id} is being checked right now; retry in a moment")
        try:
            data = {**(claimed.data or {}), "confirmed_by": by, "confirmed_at": now}
            updated = replace(claimed, data=data, wake_at=now, updated_at=now)
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

    # ---- read side ------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        now = self.clock.now()
        states = {s.pair: s for s in self.store.list_pairs()}
        out = []
        for pair in self.config.pairs:
            state = states.get(pair.name) or PairState.initial(pair, now)
            failover = self.store.get_failover(state.failover_id) if state.failover_id else None
            cooldown_until = None
            if state.attempts:
                end = max(a.at for a in state.attempts) + pair.policy.cooldown
                cooldown_until = end if end > now else None
            nodes = [
                {
                    "name": n.name,
                    "role": state.roles[n.name].value,
                    "firing": sorted({s.alertname for s in state.signals_on(n.name)}),
                }
                for n in pair.nodes
                if n.name in state.roles
            ]
            pending = None
            if state.phase is Phase.PENDING:
                pending = {
                    "node": state.active_node,
                    "signals": [
                        {
                            "alertname": s.alertname,
                            "fingerprint": s.fingerprint,
                            "since": iso(s.since),
                        }
                        for s in state.signals_on(state.active_node or "")
                    ],
                    "deadline": iso(state.deadline),
                    "seconds_left": None
                    if state.deadline is None
                    else round(max(0.0, state.deadline - now), 3),
                }
            out.append(
                {
                    "name": pair.name,
                    "active_node": state.active_node,
                    "nodes": nodes,
                    "phase": state.phase.value,
                    "paused": state.paused,
                    "dry_run": self.config.pair_dry_run(pair),
                    "pending": pending,
                    "cooldown_until": iso(cooldown_until),
                    "blocked_reason": state.blocked_reason,
                    "reason": state.reason,
                    "reason_at": iso(state.reason_at),
                    "failover": None if failover is None else failover_summary(failover),
                }
            )
        return out


def failover_summary(failover: Failover) -> dict[str, Any]:
    data = failover.to_json()
    data["created_at"] = iso(failover.created_at)
    data["updated_at"] = iso(failover.updated_at)
    return data
