"""The pure policy engine: decide(state, event, now, pair) -> Decision.

No I/O and no clock: every input arrives in the event or as `now`, every effect leaves as an
action in the Decision. The service persists the new state and carries the actions out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from .alerts import Alert
from .config import PairConfig
from .observation import NodeObservation
from .state import Attempt, Consistency, PairState, Phase, Role, Signal

TOMBSTONE_TTL = 7 * 86400.0  # resolved episodes remembered so a late duplicate cannot revive them
TOMBSTONE_MAX = 500  # the newest are kept: a late duplicate is most likely of a recent episode
NOTES_SHOWN = 10  # alert changes named in one reason; a storm is summarised
SIGNALS_PER_NODE_MAX = 200  # firing trigger alerts remembered per node (see _prune)


class IllegalTransition(Exception):
    """An event that the pair's current phase does not allow (the caller's error)."""


class Rejected(Exception):
    """An operator request refused for a reason the operator can act on."""


# ---- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertsReceived:
    """The alerts of one notification that concern this pair, each already mapped to a node."""

    alerts: tuple[tuple[Alert, str], ...]
    truncated: int = 0
    received_at: float | None = None  # when the delivery was recorded; hold counts from here


@dataclass(frozen=True)
class Tick:
    """Time passed: re-check deadlines."""


@dataclass(frozen=True)
class NodeFenced:
    failover_id: str
    node: str


@dataclass(frozen=True)
class NodeInDoubt:
    """A call to `node` failed in a way that may still take effect: it may be signing."""

    failover_id: str
    node: str
    why: str


@dataclass(frozen=True)
class FailoverEnded:
    failover_id: str
    outcome: str  # "done" | "failed" | "aborted"
    reason: str
    activated: str | None
    dry_run: bool
    fenced_nodes: tuple[str, ...] = ()
    # nodes left in doubt (a call was cut and no verified answer held), with why
    unknown_nodes: Mapping[str, str] = field(default_factory=dict)
    # nodes whose "not signing" answers held for their settle time: any doubt is lifted
    verified_silent: tuple[str, ...] = ()
    # a switchover's old primary, verified not signing and healthy after it: a standby again
    standby_nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pause:
    by: str


@dataclass(frozen=True)
class Resume:
    by: str


@dataclass(frozen=True)
class Abort:
    """An operator stops the failover in flight before its activation."""

    by: str


@dataclass(frozen=True)
class Acknowledge:
    by: str


@dataclass(frozen=True)
class ManualFailover:
    target: str
    by: str
    # a switchover: nothing is wrong with the active node; it does not start a cooldown and
    # its old primary becomes a standby once verified silent and healthy
    planned: bool = False


@dataclass(frozen=True)
class Observed:
    """A round of read-only probes: what each node said, and how long each must stay quiet
    (its driver's settle time) before a doubt about it is lifted."""

    observations: tuple[NodeObservation, ...]
    settle: Mapping[str, float] = field(default_factory=dict)
    # the pair's failover_seq and roles when the round began: a round that a failover
    # overtook describes a world that is gone, and is not judged
    basis_seq: int | None = None
    basis_roles: Mapping[str, Role] | None = None


@dataclass(frozen=True)
class Adopt:
    """An operator records `node` as the active signer; `probes` are what every node said just
    before (None for a node that gave no answer)."""

    node: str
    by: str
    probes: Mapping[str, bool | None]


@dataclass(frozen=True)
class Unfence:
    node: str
    by: str
    probe_signing: bool | None  # what the node reported just before; None: it did not answer


Event = (
    AlertsReceived
    | Tick
    | NodeFenced
    | NodeInDoubt
    | FailoverEnded
    | Pause
    | Resume
    | Acknowledge
    | ManualFailover
    | Unfence
    | Observed
    | Adopt
    | Abort
)


# ---- actions and the decision ---------------------------------------------------------------


@dataclass(frozen=True)
class StartFailover:
    failover_id: str
    source: str | None
    target: str
    automatic: bool
    reason: str
    signals: tuple[Signal, ...] = ()  # the faults that made it due (empty when manual)


Action = StartFailover


@dataclass(frozen=True)
class Decision:
    state: PairState
    actions: tuple[Action, ...]
    reason: str
    changed: bool  # False when the event changed nothing (a duplicate, an idle tick)
    duplicates: int = 0


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reconcile(state: PairState, pair: PairConfig) -> PairState:
    """Adapt a stored state to the current config: new nodes join as standbys.

    A node believed active that is gone from the config (renamed, removed) may still sign under
    another name: the pair is held until an operator adopts the node that really signs.
    """
    names = [n.name for n in pair.nodes]
    roles = {name: state.roles.get(name, Role.STANDBY) for name in names}
    signals = tuple(s for s in state.signals if s.node in roles)
    uncertain = {n: why for n, why in state.uncertain.items() if n in roles}
    vanished = sorted(n for n, r in state.roles.items() if r is Role.ACTIVE and n not in roles)
    held = state.held_reason
    if vanished and held is None:
        held = (
            f"{', '.join(vanished)}, believed active, is no longer in the config (renamed or "
            f"removed) and may still be signing; automation held: find the node that signs and "
            f"run `responder adopt {pair.name} NODE`"
        )
    if (
        roles == dict(state.roles)
        and signals == state.signals
        and uncertain == dict(state.uncertain)
        and held == state.held_reason
    ):
        return state
    new = state.evolve(roles=roles, signals=signals, uncertain=uncertain, held_reason=held)
    if held is not None and state.phase in (Phase.ARMED, Phase.PENDING):
        new = new.evolve(phase=Phase.HELD, deadline=None, reason=held)
    return new


def decide(state: PairState, event: Event, now: float, pair: PairConfig) -> Decision:
    """Apply one event to one pair's state; the state it returns is bounded (see _prune)."""
    decision = _decide(_prune(state, now), event, now, pair)
    bounded = _prune(decision.state, now)
    if bounded is decision.state:
        return decision
    return replace(decision, state=bounded)


def _decide(state: PairState, event: Event, now: float, pair: PairConfig) -> Decision:
    if isinstance(event, AlertsReceived):
        return _alerts(state, event, now, pair)
    if isinstance(event, Tick):
        if state.deadline is not None and now >= state.deadline:
            return _evaluate(state, now, pair, cause="deadline reached")
        return Decision(state, (), state.reason, changed=False)
    if isinstance(event, NodeFenced):
        return _node_fenced(state, event, now)
    if isinstance(event, NodeInDoubt):
        _in_flight(state, event.failover_id)
        reason = f"failover {event.failover_id}: {event.node} may be signing: {event.why}"
        new = state.evolve(uncertain={**state.uncertain, event.node: event.why})
        return Decision(_say(new, reason, now), (), reason, changed=True)
    if isinstance(event, FailoverEnded):
        return _failover_ended(state, event, now, pair)
    if isinstance(event, Pause):
        if state.paused:
            return Decision(state, (), "already paused", changed=False)
        reason = f"paused by {event.by}: alerts are recorded, nothing new is acted on"
        if state.phase is Phase.FAILING_OVER:
            reason += (
                f"; failover {state.failover_id} is already in flight and continues: "
                f"`responder abort {state.pair}` stops it before its activation"
            )
        return Decision(_say(state.evolve(paused=True), reason, now), (), reason, changed=True)
    if isinstance(event, Abort):
        return _abort(state, event, now)
    if isinstance(event, Resume):
        if not state.paused:
            return Decision(state, (), "not paused", changed=False)
        return _evaluate(state.evolve(paused=False), now, pair, cause=f"resumed by {event.by}")
    if isinstance(event, Acknowledge):
        return _acknowledge(state, event, now, pair)
    if isinstance(event, ManualFailover):
        return _manual(state, event, now, pair)
    if isinstance(event, Unfence):
        return _unfence(state, event, now)
    if isinstance(event, Observed):
        return _observed(state, event, now, pair)
    if isinstance(event, Adopt):
        return _adopt(state, event, now, pair)
    raise IllegalTransition(f"unknown event {event!r}")


def _say(state: PairState, reason: str, now: float) -> PairState:
    return state.evolve(reason=reason, reason_at=now)


def _prune(state: PairState, now: float) -> PairState:
    """Bound a pair's state: expire and cap resolved tombstones, cap the signals per node.

    Tombstones older than TOMBSTONE_TTL go; beyond TOMBSTONE_MAX the oldest go.

    Signals: a flood of distinct fingerprints firing on one node keeps at most
    SIGNALS_PER_NODE_MAX of them. Kept first, whatever the cap: the signal with the earliest
    `since` of every alertname on the node (signals exist only for configured triggers, so these
    are at most as many as the triggers). The rest of the room goes to the earliest of the
    others; the newest are dropped. This is safe because the policy reads signals only as
    (a) per alertname, the earliest `since` on the active node (the debounce deadline and the
    quorum count) and (b) the set of alertnames firing on a node (standby health). Both are
    exactly what they would be without the cap, so no deadline moves and no trigger needed
    for a quorum is ever crowded out (keeping the oldest N regardless of alertname would drop
    a second trigger arriving after a flood of the first and stall a quorum-2 failover). The
    only difference appears after the kept earliest signal of an alertname resolves while a
    dropped one still fires: the deadline then rests on a later kept signal, or on the
    dropped one once Alertmanager delivers it again (each notification repeats the whole
    group), i.e. the failover comes later, never earlier, than without the cap.
    """
    resolved = state.resolved
    if resolved:
        kept = {k: t for k, t in resolved.items() if now - t < TOMBSTONE_TTL}
        if len(kept) > TOMBSTONE_MAX:
            kept = dict(sorted(kept.items(), key=lambda kv: kv[1])[-TOMBSTONE_MAX:])
        if len(kept) != len(resolved):
            resolved = kept
    per_node: dict[str, list[Signal]] = {}
    for s in state.signals:
        per_node.setdefault(s.node, []).append(s)
    signals = state.signals
    if any(len(group) > SIGNALS_PER_NODE_MAX for group in per_node.values()):
        keep: set[str] = set()
        for group in per_node.values():
            ordered = sorted(group, key=lambda s: (s.since, s.fingerprint))
            first: dict[str, Signal] = {}
            for s in ordered:
                first.setdefault(s.alertname, s)
            chosen = [s.fingerprint for s in first.values()]
            room = max(0, SIGNALS_PER_NODE_MAX - len(chosen))
            rest = [s.fingerprint for s in ordered if first[s.alertname] is not s]
            keep.update(chosen, rest[:room])
        signals = tuple(s for s in state.signals if s.fingerprint in keep)
    if resolved is state.resolved and signals is state.signals:
        return state
    return state.evolve(resolved=resolved, signals=signals)


def _alerts(state: PairState, event: AlertsReceived, now: float, pair: PairConfig) -> Decision:
    triggers = set(pair.policy.triggers)
    signals = {s.fingerprint: s for s in state.signals}
    resolved = dict(state.resolved)
    duplicates = 0
    notes: list[str] = []
    for alert, node in event.alerts:
        if alert.alertname not in triggers:
            continue
        current = signals.get(alert.fingerprint)
        if alert.status == "firing":
            if alert.key in resolved or (current and current.starts_at == alert.starts_at):
                duplicates += 1
                continue
            if current and _starts_before(alert.starts_at, current.starts_at):
                # a late delivery of an episode this fingerprint has moved past: it is over
                resolved[alert.key] = now
                duplicates += 1
                notes.append(f"{alert.alertname} on {node}: late delivery of an earlier episode")
                continue
            if current:
                resolved[current.key] = now  # superseded by the newer episode
            signals[alert.fingerprint] = Signal(
                alertname=alert.alertname,
                fingerprint=alert.fingerprint,
                starts_at=alert.starts_at,
                node=node,
                since=now if event.received_at is None else min(now, event.received_at),
            )
            notes.append(f"{alert.alertname} firing on {node}")
        else:
            if alert.key in resolved:
                duplicates += 1
                continue
            resolved[alert.key] = now
            if current and current.starts_at == alert.starts_at:
                del signals[alert.fingerprint]
                notes.append(f"{alert.alertname} resolved on {node}")
            else:
                # Not seen firing (out-of-order HA delivery, or a superseded episode): keep the
                # tombstone in the new state so a late firing of this episode cannot revive it.
                notes.append(f"{alert.alertname} on {node} resolved before it was seen firing")
    if not notes:
        why = "duplicate delivery, nothing new" if duplicates else "no trigger alerts for this pair"
        return Decision(state, (), why, changed=False, duplicates=duplicates)
    new = state.evolve(
        signals=tuple(sorted(signals.values(), key=lambda s: (s.since, s.fingerprint))),
        resolved=resolved,
    )
    shown = (
        notes
        if len(notes) <= NOTES_SHOWN
        else [
            *notes[:NOTES_SHOWN],
            f"... and {len(notes) - NOTES_SHOWN} more",
        ]
    )
    decision = _evaluate(new, now, pair, cause="; ".join(shown))
    return Decision(decision.state, decision.actions, decision.reason, True, duplicates)


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d)[Tt](\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)")


def _instant(starts_at: str) -> tuple[datetime, int] | None:
    """An Alertmanager startsAt (RFC 3339, up to nanoseconds) as a comparable instant."""
    m = _RFC3339.fullmatch(starts_at)
    if m is None:
        return None
    zone = "+00:00" if m.group(4) in ("Z", "z") else m.group(4)
    try:
        instant = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}{zone}")
        return instant, int((m.group(3) or "").ljust(9, "0"))
    except ValueError:  # year 0, month 13, 30 February, hour 24: never comparable
        return None


def _starts_before(a: str, b: str) -> bool:
    """True when episode `a` began before episode `b` (False when either cannot be read)."""
    ia, ib = _instant(a), _instant(b)
    return ia is not None and ib is not None and ia < ib


def _fault(state: PairState, pair: PairConfig) -> tuple[str | None, list[tuple[str, float]]]:
    """The active node and, per firing trigger alertname on it, since when it has fired."""
    active = state.active_node
    earliest: dict[str, float] = {}
    if active is not None:
        for s in state.signals_on(active):
            earliest[s.alertname] = min(s.since, earliest.get(s.alertname, s.since))
    return active, sorted(earliest.items(), key=lambda kv: kv[1])


def _unhealthy(state: PairState, node: str) -> list[str]:
    return sorted({s.alertname for s in state.signals_on(node)})


def _pick_target(state: PairState, pair: PairConfig) -> tuple[str | None, str]:
    """First standby in config order with no firing trigger; else why there is none."""
    notes = []
    for node in pair.nodes:
        role = state.roles.get(node.name)
        if role is not Role.STANDBY:
            continue
        bad = _unhealthy(state, node.name)
        if bad:
            notes.append(f"{node.name} unhealthy ({', '.join(bad)})")
            continue
        return node.name, ""
    return None, "no healthy standby" + (f": {'; '.join(notes)}" if notes else "")


def _evaluate(
    state: PairState, now: float, pair: PairConfig, cause: str, *, may_start: bool = True
) -> Decision:
    """Re-derive what is due from the signals; start a failover when every gate is open.

    With may_start False a due failover is left PENDING with its deadline at `now`, so the
    next Tick starts it (the executor reporting an outcome does not plan new failovers).
    """
    if state.phase is Phase.FAILING_OVER:
        reason = f"{cause}; failover {state.failover_id} in flight"
        return Decision(_say(state, reason, now), (), reason, changed=True)
    if state.phase is Phase.BLOCKED:
        reason = f"{cause}; automation blocked until acknowledged: {state.blocked_reason}"
        return Decision(_say(state, reason, now), (), reason, changed=True)
    if state.held_reason is not None:
        reason = f"{cause}; automation held: {state.held_reason}"
        new = state.evolve(phase=Phase.HELD, deadline=None)
        return Decision(_say(new, reason, now), (), reason, changed=True)
    policy = pair.policy
    active, firing = _fault(state, pair)
    if len(firing) < policy.quorum:
        if active is None:
            reason = (
                f"{cause}; no node is recorded active, so no failover can start: run "
                f"`responder adopt {state.pair} NODE` for the node that signs"
            )
        elif state.phase is Phase.PENDING:
            reason = f"{cause}; debounced: fault on {active} cleared before failover"
        else:
            reason = f"{cause}; no fault on the active node {active}"
        new = state.evolve(phase=Phase.ARMED, deadline=None)
        return Decision(_say(new, reason, now), (), reason, changed=True)
    names = ", ".join(name for name, _ in firing)
    due = firing[policy.quorum - 1][1] + policy.hold
    if now < due:
        reason = (
            f"{cause}; fault on {active} ({names}): failover at {_ts(due)} "
            f"unless resolved (hold {policy.hold:g}s, quorum {policy.quorum})"
        )
        new = state.evolve(phase=Phase.PENDING, deadline=due)
        return Decision(_say(new, reason, now), (), reason, changed=True)
    gate, retry_at = _gate(state, now, pair)
    if gate:
        reason = f"{cause}; fault on {active} ({names}) held {policy.hold:g}s but {gate}"
        new = state.evolve(phase=Phase.PENDING, deadline=retry_at)
        return Decision(_say(new, reason, now), (), reason, changed=True)
    target, why = _pick_target(state, pair)
    if target is None:
        reason = f"{cause}; fault on {active} ({names}) but failover blocked: {why}"
        new = state.evolve(phase=Phase.PENDING, deadline=None)
        return Decision(_say(new, reason, now), (), reason, changed=True)
    reason = f"{cause}; fault on {active} ({names}) held {policy.hold:g}s: fail over to {target}"
    if not may_start:
        reason += " on the next tick"
        new = state.evolve(phase=Phase.PENDING, deadline=now)
        return Decision(_say(new, reason, now), (), reason, changed=True)
    return _start(state, now, active, target, automatic=True, reason=reason)


def _gate(state: PairState, now: float, pair: PairConfig) -> tuple[str, float | None]:
    """Why automation may not act now, and when to look again (None: on the next change)."""
    policy = pair.policy
    if state.paused:
        return "the pair is paused", None
    unplanned = [a.at for a in state.attempts if not a.planned]
    if unplanned:
        last = max(unplanned)
        if now < last + policy.cooldown:
            return f"cooldown until {_ts(last + policy.cooldown)}", last + policy.cooldown
    recent = sorted(
        a.at for a in state.attempts if a.automatic and now - a.at < policy.max_failovers_window
    )
    if len(recent) >= policy.max_failovers:
        if policy.max_failovers == 0:
            return "automatic failover is disabled (max_failovers: 0)", None
        until = recent[-policy.max_failovers] + policy.max_failovers_window
        return (
            f"max_failovers {policy.max_failovers} reached in the window, until {_ts(until)}",
            until,
        )
    return "", None


def _start(
    state: PairState,
    now: float,
    source: str | None,
    target: str,
    *,
    automatic: bool,
    reason: str,
    planned: bool = False,
) -> Decision:
    seq = state.failover_seq + 1
    failover_id = f"{state.pair}-{seq}"
    attempt = Attempt(at=now, automatic=automatic, failover_id=failover_id, planned=planned)
    new = state.evolve(
        phase=Phase.FAILING_OVER,
        deadline=None,
        failover_id=failover_id,
        failover_seq=seq,
        attempts=(*state.attempts, attempt),
    )
    signals = state.signals_on(source) if (source is not None and automatic) else ()
    action = StartFailover(failover_id, source, target, automatic, reason, signals)
    return Decision(_say(new, reason, now), (action,), reason, changed=True)


def _in_flight(state: PairState, failover_id: str) -> None:
    if state.phase is not Phase.FAILING_OVER or state.failover_id != failover_id:
        raise IllegalTransition(
            f"failover {failover_id} is not the one in flight for {state.pair} "
            f"(phase {state.phase.value}, in flight {state.failover_id})"
        )


def _node_fenced(state: PairState, event: NodeFenced, now: float) -> Decision:
    _in_flight(state, event.failover_id)
    roles = dict(state.roles)
    roles[event.node] = Role.FENCED
    reason = f"failover {event.failover_id}: {event.node} fenced"
    return Decision(_say(state.evolve(roles=roles), reason, now), (), reason, changed=True)


def _failover_ended(
    state: PairState, event: FailoverEnded, now: float, pair: PairConfig
) -> Decision:
    _in_flight(state, event.failover_id)
    state = state.evolve(abort_requested=None)
    roles = dict(state.roles)
    for node in event.fenced_nodes:
        roles[node] = Role.FENCED
    if event.outcome == "done" and not event.dry_run:
        for node in event.standby_nodes:
            if roles.get(node) is Role.FENCED:
                roles[node] = Role.STANDBY
    uncertain = {
        n: why for n, why in state.uncertain.items() if n not in event.verified_silent
    } | dict(event.unknown_nodes)
    if event.outcome == "done":
        held = state.held_reason
        if event.activated is not None and not event.dry_run:
            for name, role in roles.items():
                if role is Role.ACTIVE and name != event.activated:
                    raise IllegalTransition(
                        f"{name} still active while activating {event.activated}"
                    )
            roles[event.activated] = Role.ACTIVE
            uncertain.pop(event.activated, None)
            held = None  # every other node was verified silent just before the activation
            state = state.evolve(
                consistency=Consistency.CONSISTENT,
                consistency_reason=(
                    f"{event.activated} verified signing after the failover; the others were "
                    "verified silent just before it"
                ),
            )
        label = "dry-run complete" if event.dry_run else "completed"
        new = state.evolve(
            phase=Phase.ARMED, roles=roles, deadline=None, uncertain=uncertain, held_reason=held
        )
        # the executor's dry-run reasons say "dry-run: ..." themselves; the label says it once
        cause = f"failover {event.failover_id} {label}: {event.reason.removeprefix('dry-run: ')}"
        return _evaluate(new, now, pair, cause=cause, may_start=False)
    planned = any(a.planned for a in state.attempts if a.failover_id == event.failover_id)
    if planned and event.outcome == "aborted":
        # a switchover stopped before it changed anything: the pair is as it was, protected
        new = state.evolve(phase=Phase.ARMED, roles=roles, deadline=None, uncertain=uncertain)
        cause = f"switchover {event.failover_id} aborted, nothing was changed: {event.reason}"
        return _evaluate(new, now, pair, cause=cause, may_start=False)
    reason = (
        f"failover {event.failover_id} {event.outcome}: {event.reason}; "
        "automation blocked until an operator acknowledges"
    )
    new = state.evolve(
        phase=Phase.BLOCKED,
        roles=roles,
        deadline=None,
        blocked_reason=event.reason,
        uncertain=uncertain,
    )
    return Decision(_say(new, reason, now), (), reason, changed=True)


def _verdict(
    state: PairState, observations: tuple[NodeObservation, ...]
) -> tuple[Consistency, str]:
    """Compare what the nodes said with the record of who signs."""
    believed = state.active_node
    signing = sorted(o.node for o in observations if o.signing is True)
    silent = [o.node for o in observations if o.signing is False]
    unsure = sorted(f"{o.node} ({o.says})" for o in observations if o.signing is None)
    if len(signing) >= 2:
        every = "both" if len(signing) == 2 else "all"
        return Consistency.SPLIT_BRAIN, (
            f"split brain: {' and '.join(signing)} {every} report signing"
        )
    if len(signing) == 1:
        if signing[0] != believed:
            return Consistency.DIVERGED, (
                f"diverged: {signing[0]} reports signing, but the record says "
                f"{believed or 'no node'} is active"
            )
        if unsure:
            return Consistency.CONSISTENT, (
                f"{believed} signs as recorded; cannot confirm the others: {', '.join(unsure)}"
            )
        return Consistency.CONSISTENT, f"{believed} signs as recorded; the others are silent"
    if unsure:
        return Consistency.UNKNOWN, (
            f"no node reports signing, but some cannot be checked: {', '.join(unsure)}"
        )
    return Consistency.OUTAGE, f"outage: no node signs ({', '.join(sorted(silent))} answered)"


def _observed(state: PairState, event: Observed, now: float, pair: PairConfig) -> Decision:
    """Record the verdict of a probe round; split brain and divergence hold automation."""
    stale = (event.basis_seq is not None and event.basis_seq != state.failover_seq) or (
        event.basis_roles is not None and dict(event.basis_roles) != dict(state.roles)
    )
    if stale:
        return Decision(state, (), "probe round overtaken by a failover; not judged", False)
    configured = {n.name for n in pair.nodes}
    observations = tuple(o for o in event.observations if o.node in configured)
    verdict, why = _verdict(state, observations)
    uncertain = dict(state.uncertain)
    notes = []
    for o in observations:
        settle = event.settle.get(o.node, 0.0)
        quiet = o.signing is False and o.quiet_since is not None
        in_flight_now = state.phase is Phase.FAILING_OVER  # its settle loop decides
        if (
            o.node in uncertain
            and quiet
            and not in_flight_now
            and o.at - (o.quiet_since or o.at) >= settle
        ):
            del uncertain[o.node]
            notes.append(f"{o.node} verified not signing for {o.at - (o.quiet_since or o.at):.0f}s")
    held = state.held_reason
    phase = state.phase
    in_flight = state.phase is Phase.FAILING_OVER
    if verdict in (Consistency.SPLIT_BRAIN, Consistency.DIVERGED) and not in_flight:
        if held is None:
            held = f"{why}; automation held: check the nodes, then run `responder adopt {pair.name} NODE`"
        if phase in (Phase.ARMED, Phase.PENDING):
            phase = Phase.HELD
    changed = (
        verdict is not state.consistency
        or why != state.consistency_reason
        or uncertain != dict(state.uncertain)
        or held != state.held_reason
        or phase is not state.phase
    )
    if not changed:
        return Decision(state, (), why, changed=False)
    new = state.evolve(
        consistency=verdict,
        consistency_reason=why,
        uncertain=uncertain,
        held_reason=held,
        phase=phase,
        deadline=None if phase is Phase.HELD else state.deadline,
    )
    reason = "; ".join([why, *notes])
    if phase is not state.phase or held != state.held_reason:
        new = _say(new, reason, now)
    return Decision(new, (), reason, changed=True)


def _adopt(state: PairState, event: Adopt, now: float, pair: PairConfig) -> Decision:
    """Record the node that really signs as active, once every node's answer says so."""
    if state.phase is Phase.FAILING_OVER:
        raise Rejected(f"failover {state.failover_id} is in flight; adopt when it ends")
    if event.node not in state.roles:
        raise Rejected(f"{event.node} is not a node of {state.pair}")
    answer = event.probes.get(event.node)
    if answer is not True:
        said = "no answer" if answer is None else "not signing"
        raise Rejected(f"{event.node} does not report signing ({said}); adopt only the signer")
    others = {n: event.probes.get(n) for n in state.roles if n != event.node}
    loud = sorted(n for n, v in others.items() if v is True)
    if loud:
        raise Rejected(f"{', '.join(loud)} also report signing: split brain, fence by hand first")
    unsure = sorted(n for n, v in others.items() if v is None)
    if unsure:
        raise Rejected(f"cannot verify {', '.join(unsure)} is silent (no answer); adopt refused")
    roles = {
        n: Role.ACTIVE if n == event.node else (Role.FENCED if r is Role.FENCED else Role.STANDBY)
        for n, r in state.roles.items()
    }
    new = state.evolve(
        roles=roles,
        phase=Phase.ARMED,
        blocked_reason=None,
        held_reason=None,
        uncertain={},
        consistency=Consistency.CONSISTENT,
        consistency_reason=f"{event.node} signs as adopted; the others are silent",
        deadline=None,
    )
    cause = f"{event.node} adopted as active by {event.by} (probed: the only node signing)"
    return _evaluate(new, now, pair, cause=cause, may_start=False)


def _acknowledge(state: PairState, event: Acknowledge, now: float, pair: PairConfig) -> Decision:
    if state.phase is Phase.FAILING_OVER:
        raise Rejected(f"failover {state.failover_id} is still in flight; nothing to acknowledge")
    if state.phase is not Phase.BLOCKED and not state.attempts:
        if state.held_reason is not None:
            raise Rejected(f"the pair is held, not blocked: {state.held_reason}")
        raise Rejected("nothing to acknowledge: no failed or finished failover")
    new = state.evolve(phase=Phase.ARMED, blocked_reason=None, attempts=())
    return _evaluate(new, now, pair, cause=f"acknowledged by {event.by}; automation re-armed")


def _manual(state: PairState, event: ManualFailover, now: float, pair: PairConfig) -> Decision:
    if state.phase is Phase.FAILING_OVER:
        raise Rejected(f"failover {state.failover_id} is already in flight")
    role = state.roles.get(event.target)
    if role is None:
        raise Rejected(f"{event.target} is not a node of {state.pair}")
    if role is Role.ACTIVE:
        raise Rejected(f"{event.target} is already the active node; choose a standby")
    if role is not Role.STANDBY:
        raise Rejected(f"{event.target} is fenced, not a standby; un-fence it first")
    bad = _unhealthy(state, event.target)
    if bad:
        raise Rejected(f"{event.target} is unhealthy: {', '.join(bad)} firing")
    source = state.active_node
    others = [n for n, r in state.roles.items() if r is Role.STANDBY and n != event.target]
    what = "switchover" if event.planned else "manual failover"
    reason = (
        f"{what} by {event.by}: "
        + (
            f"fence {source}, then activate {event.target}"
            if source
            else f"activate {event.target}"
        )
        + (f" (standbys {', '.join(others)} stay standby)" if others else "")
    )
    if state.held_reason is not None:
        reason += f" (pair held: {state.held_reason}; every other node is verified silent first)"
    if event.planned and source is not None:
        reason += f"; {source} becomes a standby once verified silent and healthy"
    new = state.evolve(phase=Phase.ARMED, blocked_reason=None)
    return _start(
        new, now, source, event.target, automatic=False, reason=reason, planned=event.planned
    )


def _abort(state: PairState, event: Abort, now: float) -> Decision:
    """Ask the failover in flight to stop before its activation (the executor checks)."""
    if state.phase is not Phase.FAILING_OVER or state.failover_id is None:
        raise Rejected("no failover in flight; nothing to abort")
    if state.abort_requested is not None:
        return Decision(state, (), f"abort already requested ({state.abort_requested})", False)
    reason = (
        f"abort of failover {state.failover_id} requested by {event.by}: it stops before its "
        "activation (an activation already sent cannot be called back)"
    )
    new = state.evolve(abort_requested=f"{state.failover_id} by {event.by}")
    return Decision(_say(new, reason, now), (), reason, changed=True)


@dataclass(frozen=True)
class DrillPlan:
    """What the policy would do if a node failed now: the failover, or what would stop it."""

    source: str | None
    target: str | None
    blockers: tuple[str, ...]
    notes: tuple[str, ...]


def drill_plan(state: PairState, pair: PairConfig, fault: str | None, now: float) -> DrillPlan:
    """The decision a trigger alert on `fault` (default: the active node) would meet now,
    with every gate an automatic failover passes. Pure: nothing is changed or started."""
    if fault is not None and fault not in state.roles:
        raise Rejected(f"{fault} is not a node of {state.pair}")
    active = state.active_node
    fault = fault or active
    policy = pair.policy
    notes = [
        f"an alert on it is held {policy.hold:g}s (quorum {policy.quorum} of "
        f"{', '.join(policy.triggers)}) before the failover starts"
    ]
    if fault is None:
        return DrillPlan(
            None,
            None,
            (
                "no node is recorded active, so a fault has nothing to fail over from; "
                f"run `responder adopt {state.pair} NODE` for the node that signs",
            ),
            (),
        )
    role = state.roles[fault]
    if role is not Role.ACTIVE:
        return DrillPlan(
            None, None, (), (f"{fault} is {role.value}: its failure would start no failover",)
        )
    blockers = []
    if state.phase is Phase.FAILING_OVER:
        blockers.append(f"failover {state.failover_id} is in flight")
    if state.phase is Phase.BLOCKED:
        blockers.append(f"automation is blocked until acknowledged: {state.blocked_reason}")
    if state.held_reason is not None:
        blockers.append(f"automation is held: {state.held_reason}")
    gate, _ = _gate(state, now, pair)
    if gate:
        blockers.append(gate)
    target, why = _pick_target(state, pair)
    if target is None:
        blockers.append(why)
    return DrillPlan(fault, target, tuple(blockers), tuple(notes))


def config_drift(
    states: Mapping[str, PairState],
    unfinished: Mapping[str, tuple[str | None, str]],
    pairs: tuple[PairConfig, ...],
) -> list[str]:
    """What applying `pairs` to a stored state would hold or leave alone, one line each.

    `unfinished` maps a pair to the (source, target) of its failover in flight.
    """
    lines = []
    configured = {p.name: p for p in pairs}
    for name in sorted(set(states) - set(configured)):
        state = states[name]
        what = f"active {state.active_node}" if state.active_node else "no active node"
        extra = f", failover {state.failover_id} in flight" if name in unfinished else ""
        lines.append(
            f"pair {name} ({what}{extra}) is not in the config: its state is kept and nothing "
            "is done for it"
        )
    for name, pair in configured.items():
        if name not in states:
            continue
        held = reconcile(states[name], pair)
        if held.held_reason is not None and states[name].held_reason is None:
            lines.append(f"pair {name} would be held: {held.held_reason}")
        if name in unfinished:
            gone = [n for n in unfinished[name] if n is not None and n not in held.roles]
            if gone:
                lines.append(
                    f"pair {name}: the failover in flight names {', '.join(gone)}, no longer in "
                    "the config: it would end as failed"
                )
    return lines


def _unfence(state: PairState, event: Unfence, now: float) -> Decision:
    if state.phase is Phase.FAILING_OVER:
        raise Rejected(f"failover {state.failover_id} is in flight; try again when it ends")
    role = state.roles.get(event.node)
    if role is None:
        raise Rejected(f"{event.node} is not a node of {state.pair}")
    if role is not Role.FENCED:
        raise Rejected(f"{event.node} is {role.value}, not fenced")
    if event.probe_signing is None:
        raise Rejected(
            f"{event.node} did not answer its status probe; cannot confirm it is not signing"
        )
    if event.probe_signing:
        raise Rejected(f"{event.node} reports that it is signing; refusing to mark it standby")
    roles = dict(state.roles)
    roles[event.node] = Role.STANDBY
    reason = f"{event.node} un-fenced by {event.by}: now a standby (probe: not signing)"
    return Decision(_say(state.evolve(roles=roles), reason, now), (), reason, changed=True)
