"""The pure policy engine, driven by hand: every test steps `now` itself (no clock, no sleep)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from responder.alerts import Alert
from responder.config import PairConfig, parse_config
from responder.policy import (
    Acknowledge,
    AlertsReceived,
    Decision,
    Event,
    FailoverEnded,
    IllegalTransition,
    ManualFailover,
    NodeFenced,
    Pause,
    Rejected,
    Resume,
    StartFailover,
    Tick,
    Unfence,
    decide,
    reconcile,
)
from responder.state import Attempt, PairState, Phase, Role, Signal

T0 = 1_795_000_000.0  # an arbitrary wall-clock start; every test steps from here by hand
DOWN = "ValidatorClientDown"
STALLED = "BeaconNodeStalled"
OTHER = "PeersLow"  # not a trigger
STARTS = "2026-11-25T18:28:07.908132859Z"
STARTS_2 = "2026-11-25T19:02:41.118000000Z"


# ---- helpers --------------------------------------------------------------------------------


def make_pair(nodes: tuple[str, ...] = ("node-a", "node-b"), **policy: Any) -> PairConfig:
    """A PairConfig parsed the way the service parses it (README defaults, overridable)."""
    data = {
        "auth": "none",
        "pairs": [
            {
                "name": "mainnet-a",
                "nodes": [
                    {
                        "name": name,
                        "match": {"node": name},
                        "driver": {"type": "http", "url": f"http://127.0.0.1:{18001 + i}"},
                    }
                    for i, name in enumerate(nodes)
                ],
                "policy": {
                    "triggers": [DOWN, STALLED],
                    "hold": "20s",
                    "quorum": 1,
                    "cooldown": "1h",
                    "max_failovers": 1,
                    "max_failovers_window": "24h",
                }
                | policy,
            }
        ],
    }
    return parse_config(data, Path("/etc/responder")).pairs[0]


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def initial(pair: PairConfig, now: float = T0) -> PairState:
    return PairState.initial(pair, now)


def alert(
    node: str = "node-a",
    name: str = DOWN,
    *,
    status: str = "firing",
    starts_at: str = STARTS,
    fingerprint: str | None = None,
) -> tuple[Alert, str]:
    """One alert already mapped to its node, as the service hands it to the policy."""
    labels = {"alertname": name, "node": node, "pair": "mainnet-a"}
    fp = fingerprint or f"fp-{name}-{node}"
    return Alert(status=status, labels=labels, starts_at=starts_at, fingerprint=fp), node  # type: ignore[arg-type]


def firing(node: str = "node-a", name: str = DOWN, **kw: Any) -> AlertsReceived:
    return AlertsReceived((alert(node, name, **kw),))


def resolved(node: str = "node-a", name: str = DOWN, **kw: Any) -> AlertsReceived:
    return AlertsReceived((alert(node, name, status="resolved", **kw),))


def step(state: PairState, event: Event, now: float, pair: PairConfig) -> Decision:
    """decide(), plus the invariant every test relies on: a change always says why."""
    decision = decide(state, event, now, pair)
    if decision.changed:
        assert decision.reason.strip(), f"changed decision without a reason for {event!r}"
    return decision


def only_start(decision: Decision) -> StartFailover:
    assert len(decision.actions) == 1, decision.reason
    action = decision.actions[0]
    assert isinstance(action, StartFailover)
    return action


def complete(
    state: PairState, action: StartFailover, now: float, pair: PairConfig, *, dry_run: bool = False
) -> PairState:
    """Run the in-flight `action` to "done" the way the executor reports it (fence, then activate)."""
    fid, source = action.failover_id, action.source
    assert state.phase is Phase.FAILING_OVER and state.failover_id == fid
    fenced: tuple[str, ...] = ()
    if source is not None and not dry_run:
        state = step(state, NodeFenced(fid, source), now, pair).state
        fenced = (source,)
    ended = FailoverEnded(fid, "done", "target confirmed signing", action.target, dry_run, fenced)
    return step(state, ended, now, pair).state


def failed_over(
    pair: PairConfig, fault_node: str = "node-a", at: float = T0
) -> tuple[PairState, float]:
    """A pair whose automatic failover away from `fault_node` has completed; returns (state, now)."""
    state = step(initial(pair, at), firing(fault_node), at, pair).state
    now = at + pair.policy.hold
    decision = step(state, Tick(), now, pair)
    return complete(decision.state, only_start(decision), now, pair), now


# ---- hold and deadline ----------------------------------------------------------------------


def test_firing_trigger_on_active_sets_deadline_at_first_seen_plus_hold() -> None:
    """A firing trigger on the active node makes the pair PENDING with deadline first-seen + hold."""
    pair = make_pair()
    d = step(initial(pair), firing(), T0, pair)
    assert d.changed
    assert d.actions == ()
    assert d.state.phase is Phase.PENDING
    assert d.state.deadline == T0 + 20.0
    assert f"failover at {iso(T0 + 20.0)} unless resolved" in d.reason


def test_tick_before_deadline_does_nothing() -> None:
    """A tick just before first-seen + hold starts nothing and changes nothing."""
    pair = make_pair()
    state = step(initial(pair), firing(), T0, pair).state
    d = step(state, Tick(), T0 + 19.999, pair)
    assert d.actions == ()
    assert not d.changed
    assert d.state == state


def test_failover_is_due_exactly_at_deadline() -> None:
    """A tick at exactly first-seen + hold starts one automatic failover from active to standby."""
    pair = make_pair()
    state = step(initial(pair), firing(), T0, pair).state
    d = step(state, Tick(), T0 + 20.0, pair)
    action = only_start(d)
    assert action.source == "node-a"
    assert action.target == "node-b"
    assert action.automatic
    assert d.state.phase is Phase.FAILING_OVER
    assert d.state.failover_id == action.failover_id == "mainnet-a-1"
    assert d.state.deadline is None
    assert action.reason == d.reason and "node-b" in d.reason


def test_hold_counts_from_first_seen_not_from_alert_starts_at() -> None:
    """An alert whose startsAt lies long in the past still waits the full hold from first sight."""
    pair = make_pair()
    state = step(initial(pair), firing(starts_at="2020-01-01T00:00:00Z"), T0, pair).state
    assert state.deadline == T0 + 20.0
    assert step(state, Tick(), T0 + 19.0, pair).actions == ()


def test_repeated_delivery_does_not_extend_or_shorten_hold() -> None:
    """Alertmanager re-sending the firing alert mid-hold keeps the original deadline."""
    pair = make_pair()
    state = step(initial(pair), firing(), T0, pair).state
    d = step(state, firing(), T0 + 15.0, pair)
    assert d.state.deadline == T0 + 20.0
    only_start(step(d.state, Tick(), T0 + 20.0, pair))


def test_zero_hold_fails_over_on_the_notification_itself() -> None:
    """With hold 0 the notification that reports the fault starts the failover immediately."""
    pair = make_pair(hold=0)
    d = step(initial(pair), firing(), T0, pair)
    assert only_start(d).target == "node-b"


def test_idle_tick_without_deadline_changes_nothing() -> None:
    """A tick on an armed pair with no fault is a no-op."""
    pair = make_pair()
    state = initial(pair)
    d = step(state, Tick(), T0 + 1e6, pair)
    assert not d.changed
    assert d.actions == ()
    assert d.state == state


# ---- debounce -------------------------------------------------------------------------------


def test_resolved_before_deadline_cancels_the_failover() -> None:
    """A resolved notification before the deadline re-arms the pair ("debounced") and nothing runs."""
    pair = make_pair()
    state = step(initial(pair), firing(), T0, pair).state
    d = step(state, resolved(), T0 + 10.0, pair)
    assert d.changed
    assert "debounced" in d.reason
    assert d.state.phase is Phase.ARMED
    assert d.state.deadline is None
    assert d.state.signals == ()
    later = step(d.state, Tick(), T0 + 20.0, pair)
    assert later.actions == ()
    assert step(later.state, Tick(), T0 + 3600.0, pair).actions == ()


def test_resolving_one_of_two_triggers_keeps_the_other_pending() -> None:
    """With quorum 1, resolving the first trigger re-derives the deadline from the one still firing."""
    pair = make_pair()
    state = step(initial(pair), firing(name=DOWN), T0, pair).state
    state = step(state, firing(name=STALLED), T0 + 5.0, pair).state
    assert state.deadline == T0 + 20.0
    d = step(state, resolved(name=DOWN), T0 + 10.0, pair)
    assert d.state.phase is Phase.PENDING
    assert d.state.deadline == T0 + 25.0
    assert step(d.state, Tick(), T0 + 24.0, pair).actions == ()
    assert only_start(step(d.state, Tick(), T0 + 25.0, pair)).target == "node-b"


# ---- quorum ---------------------------------------------------------------------------------


def test_quorum_two_is_not_met_by_one_alertname() -> None:
    """With quorum 2 one firing trigger alertname is not a fault: no deadline, no failover."""
    pair = make_pair(quorum=2)
    d = step(initial(pair), firing(name=DOWN), T0, pair)
    assert d.state.phase is Phase.ARMED
    assert d.state.deadline is None
    assert step(d.state, Tick(), T0 + 3600.0, pair).actions == ()


def test_quorum_two_is_not_met_by_two_alerts_of_the_same_alertname() -> None:
    """Two alerts (two fingerprints) with the same alertname on the active node do not make quorum 2."""
    pair = make_pair(quorum=2)
    both = AlertsReceived(
        (
            alert(name=DOWN, fingerprint="fp-instance-1"),
            alert(name=DOWN, fingerprint="fp-instance-2"),
        )
    )
    d = step(initial(pair), both, T0, pair)
    assert len(d.state.signals) == 2
    assert d.state.phase is Phase.ARMED
    assert d.state.deadline is None
    assert step(d.state, Tick(), T0 + 3600.0, pair).actions == ()


def test_quorum_two_is_due_hold_after_the_second_distinct_alertname() -> None:
    """With quorum 2 the deadline counts from when the second distinct trigger alertname appeared."""
    pair = make_pair(quorum=2)
    state = step(initial(pair), firing(name=DOWN), T0, pair).state
    d = step(state, firing(name=STALLED), T0 + 5.0, pair)
    assert d.state.phase is Phase.PENDING
    assert d.state.deadline == T0 + 25.0
    assert "quorum 2" in d.reason
    assert step(d.state, Tick(), T0 + 24.9, pair).actions == ()
    assert only_start(step(d.state, Tick(), T0 + 25.0, pair)).source == "node-a"


def test_quorum_counts_only_the_active_node() -> None:
    """One trigger on the active node and another on the standby do not add up to quorum 2."""
    pair = make_pair(quorum=2)
    state = step(initial(pair), firing("node-a", DOWN), T0, pair).state
    d = step(state, firing("node-b", STALLED), T0 + 1.0, pair)
    assert d.state.phase is Phase.ARMED
    assert step(d.state, Tick(), T0 + 3600.0, pair).actions == ()


# ---- duplicates and episodes ----------------------------------------------------------------


def test_duplicate_firing_delivery_changes_nothing_and_is_counted() -> None:
    """The same alert (fingerprint + startsAt) delivered again is a counted no-op."""
    pair = make_pair()
    state = step(initial(pair), firing(), T0, pair).state
    d = step(state, firing(), T0 + 1.0, pair)
    assert not d.changed
    assert d.duplicates == 1
    assert d.actions == ()
    assert d.state == state
    assert "duplicate" in d.reason


def test_every_duplicate_in_a_notification_is_counted() -> None:
    """A repeated group of two alerts counts two duplicates and changes nothing."""
    pair = make_pair()
    group = AlertsReceived((alert("node-a", DOWN), alert("node-a", STALLED)))
    state = step(initial(pair), group, T0, pair).state
    d = step(state, group, T0 + 2.0, pair)
    assert (d.changed, d.duplicates, d.state) == (False, 2, state)


def test_new_alert_alongside_duplicates_counts_only_the_duplicates() -> None:
    """A group that repeats one alert and adds another records the new one and counts one duplicate."""
    pair = make_pair()
    state = step(initial(pair), firing(name=DOWN), T0, pair).state
    d = step(state, AlertsReceived((alert(name=DOWN), alert(name=STALLED))), T0 + 3.0, pair)
    assert d.changed
    assert d.duplicates == 1
    assert {s.alertname for s in d.state.signals} == {DOWN, STALLED}
    assert d.state.deadline == T0 + 20.0


def test_duplicate_resolved_delivery_is_counted_no_op() -> None:
    """A resolved notification delivered twice (HA Alertmanagers) changes nothing the second time."""
    pair = make_pair()
    state = step(initial(pair), firing(), T0, pair).state
    state = step(state, resolved(), T0 + 5.0, pair).state
    d = step(state, resolved(), T0 + 6.0, pair)
    assert (d.changed, d.duplicates, d.state) == (False, 1, state)


def test_late_firing_duplicate_after_resolve_does_not_revive_the_signal() -> None:
    """A firing delivery of an already-resolved episode (same fingerprint + startsAt) is ignored."""
    pair = make_pair()
    state = step(initial(pair), firing(), T0, pair).state
    state = step(state, resolved(), T0 + 5.0, pair).state
    d = step(state, firing(), T0 + 7.0, pair)
    assert not d.changed
    assert d.duplicates == 1
    assert d.state.signals == ()
    assert d.state.phase is Phase.ARMED
    assert step(d.state, Tick(), T0 + 3600.0, pair).actions == ()


def test_resolve_arriving_before_its_firing_still_prevents_revival() -> None:
    """A resolve seen before its firing (out-of-order HA delivery) keeps the late firing from counting."""
    pair = make_pair()
    state = initial(pair)
    d = step(state, resolved(), T0, pair)
    assert d.actions == ()
    late = step(d.state, firing(), T0 + 1.0, pair)
    assert late.state.signals == ()
    assert late.state.phase is Phase.ARMED
    assert step(late.state, Tick(), T0 + 3600.0, pair).actions == ()


def test_new_starts_at_after_resolve_is_a_new_episode() -> None:
    """The same fingerprint firing again with a new startsAt is a new fault with a fresh hold."""
    pair = make_pair()
    state = step(initial(pair), firing(), T0, pair).state
    state = step(state, resolved(), T0 + 5.0, pair).state
    d = step(state, firing(starts_at=STARTS_2), T0 + 100.0, pair)
    assert d.changed
    assert d.duplicates == 0
    assert [s.starts_at for s in d.state.signals] == [STARTS_2]
    assert d.state.deadline == T0 + 120.0
    assert step(d.state, Tick(), T0 + 119.0, pair).actions == ()
    assert only_start(step(d.state, Tick(), T0 + 120.0, pair)).target == "node-b"


def test_new_starts_at_replaces_an_unresolved_episode() -> None:
    """A new startsAt while the old episode was never resolved replaces it (one signal per fingerprint)."""
    pair = make_pair()
    state = step(initial(pair), firing(), T0, pair).state
    d = step(state, firing(starts_at=STARTS_2), T0 + 10.0, pair)
    assert d.changed
    assert [s.starts_at for s in d.state.signals] == [STARTS_2]
    # resolving the new episode clears the fault entirely
    after = step(d.state, resolved(starts_at=STARTS_2), T0 + 12.0, pair)
    assert after.state.signals == ()
    assert after.state.phase is Phase.ARMED


def test_late_delivery_of_a_superseded_episode_does_not_stick() -> None:
    """An HA peer re-sending the older episode after the newer one cannot leave a fault behind."""
    pair = make_pair()
    state = step(initial(pair), firing(starts_at=STARTS), T0, pair).state
    state = step(state, firing(starts_at=STARTS_2), T0 + 5.0, pair).state
    late = step(state, firing(starts_at=STARTS), T0 + 6.0, pair)
    assert late.duplicates == 1
    assert [s.starts_at for s in late.state.signals] == [STARTS_2]
    d = step(late.state, resolved(starts_at=STARTS_2), T0 + 8.0, pair)
    assert d.state.signals == ()
    assert d.state.phase is Phase.ARMED
    assert step(d.state, Tick(), T0 + 3600.0, pair).actions == ()


def test_older_episode_first_seen_after_the_newer_one_is_ignored() -> None:
    """An older startsAt arriving after a newer one (never seen before) neither replaces nor sticks."""
    pair = make_pair()
    state = step(initial(pair), firing(starts_at=STARTS_2), T0, pair).state
    late = step(state, firing(starts_at=STARTS), T0 + 1.0, pair)
    assert [s.starts_at for s in late.state.signals] == [STARTS_2]
    assert late.state.deadline == T0 + 20.0
    state = step(late.state, resolved(starts_at=STARTS_2), T0 + 2.0, pair).state
    again = step(state, firing(starts_at=STARTS), T0 + 3.0, pair)
    assert again.state.signals == ()
    assert step(again.state, Tick(), T0 + 3600.0, pair).actions == ()


def test_episode_order_follows_time_not_string_order() -> None:
    """startsAt values are ordered as instants (trimmed nanoseconds), not as strings."""
    pair = make_pair()
    newer, older = "2026-11-25T18:28:07.91Z", "2026-11-25T18:28:07.9081Z"
    state = step(initial(pair), firing(starts_at=older), T0, pair).state
    state = step(state, firing(starts_at=newer), T0 + 1.0, pair).state
    late = step(state, firing(starts_at=older), T0 + 2.0, pair)
    assert [s.starts_at for s in late.state.signals] == [newer]
    whole, fraction = "2026-11-25T18:28:07Z", "2026-11-25T18:28:07.5Z"
    state = step(initial(pair), firing(starts_at=whole), T0, pair).state
    state = step(state, firing(starts_at=fraction), T0 + 1.0, pair).state
    late = step(state, firing(starts_at=whole), T0 + 2.0, pair)
    assert [s.starts_at for s in late.state.signals] == [fraction]


def test_resolve_of_an_unknown_episode_does_not_clear_the_current_one() -> None:
    """A resolve carrying a different startsAt than the firing episode leaves the fault pending."""
    pair = make_pair()
    state = step(initial(pair), firing(starts_at=STARTS_2), T0, pair).state
    d = step(state, resolved(starts_at=STARTS), T0 + 5.0, pair)
    assert [s.starts_at for s in d.state.signals] == [STARTS_2]
    assert d.state.deadline == T0 + 20.0
    assert only_start(step(d.state, Tick(), T0 + 20.0, pair)).target == "node-b"


def test_non_trigger_alertnames_are_ignored() -> None:
    """An alert whose alertname is not in `triggers` is neither recorded nor acted on."""
    pair = make_pair()
    state = initial(pair)
    d = step(state, firing(name=OTHER), T0, pair)
    assert not d.changed
    assert d.duplicates == 0
    assert d.state == state
    assert "no trigger" in d.reason
    assert step(d.state, Tick(), T0 + 3600.0, pair).actions == ()


def test_non_trigger_in_a_mixed_notification_is_skipped() -> None:
    """A notification mixing a trigger and a non-trigger records only the trigger."""
    pair = make_pair()
    d = step(initial(pair), AlertsReceived((alert(name=OTHER), alert(name=DOWN))), T0, pair)
    assert [s.alertname for s in d.state.signals] == [DOWN]


def test_truncated_notification_does_not_resolve_absent_alerts() -> None:
    """A truncated notification that omits a firing alert leaves that fault in place."""
    pair = make_pair()
    state = step(initial(pair), firing(name=DOWN), T0, pair).state
    d = step(state, AlertsReceived((alert(name=OTHER),), truncated=3), T0 + 5.0, pair)
    assert [s.alertname for s in d.state.signals] == [DOWN]
    assert only_start(step(d.state, Tick(), T0 + 20.0, pair)).target == "node-b"


def test_resolved_tombstones_expire_after_a_week() -> None:
    """Resolved episodes are forgotten after the tombstone TTL, so state does not grow forever."""
    pair = make_pair()
    state = step(initial(pair), firing(), T0, pair).state
    state = step(state, resolved(), T0 + 5.0, pair).state
    assert len(state.resolved) == 1
    d = step(state, Tick(), T0 + 8 * 86400.0, pair)
    assert d.state.resolved == {}


# ---- standby health -------------------------------------------------------------------------


def test_trigger_on_standby_alone_is_not_a_fault() -> None:
    """A firing trigger on a standby does not schedule a failover of the active node."""
    pair = make_pair()
    d = step(initial(pair), firing("node-b"), T0, pair)
    assert d.state.phase is Phase.ARMED
    assert d.state.deadline is None
    assert [s.node for s in d.state.signals] == ["node-b"]


def test_unhealthy_only_standby_blocks_failover_with_reason() -> None:
    """With the only standby firing a trigger, the held fault blocks with a reason naming it."""
    pair = make_pair()
    state = step(initial(pair), firing("node-b", STALLED), T0, pair).state
    state = step(state, firing("node-a", DOWN), T0, pair).state
    d = step(state, Tick(), T0 + 20.0, pair)
    assert d.actions == ()
    assert d.state.phase is Phase.PENDING
    assert d.state.deadline is None
    assert "no healthy standby" in d.reason
    assert f"node-b unhealthy ({STALLED})" in d.reason
    assert step(d.state, Tick(), T0 + 3600.0, pair).actions == ()


def test_standby_recovering_releases_a_blocked_failover() -> None:
    """When the unhealthy standby's trigger resolves, the overdue failover starts at once."""
    pair = make_pair()
    state = step(initial(pair), firing("node-b", STALLED), T0, pair).state
    state = step(state, firing("node-a", DOWN), T0, pair).state
    state = step(state, Tick(), T0 + 20.0, pair).state
    d = step(state, resolved("node-b", STALLED), T0 + 30.0, pair)
    action = only_start(d)
    assert (action.source, action.target) == ("node-a", "node-b")


def test_unhealthy_standby_is_skipped_for_a_healthy_one() -> None:
    """With three nodes, an unhealthy first standby is passed over for the healthy second one."""
    pair = make_pair(nodes=("node-a", "node-b", "node-c"))
    state = step(initial(pair), firing("node-b", DOWN), T0, pair).state
    state = step(state, firing("node-a", DOWN), T0, pair).state
    action = only_start(step(state, Tick(), T0 + 20.0, pair))
    assert action.target == "node-c"


def test_first_healthy_standby_in_config_order_is_the_target() -> None:
    """With several healthy standbys the first one in config order is chosen."""
    pair = make_pair(nodes=("node-a", "node-c", "node-b"))
    state = step(initial(pair), firing("node-a"), T0, pair).state
    assert only_start(step(state, Tick(), T0 + 20.0, pair)).target == "node-c"


# ---- cooldown and max_failovers -------------------------------------------------------------


def test_cooldown_defers_failover_until_the_gate_opens() -> None:
    """A fault held during cooldown waits; the deadline moves to the cooldown end, where it fires."""
    pair = make_pair(nodes=("node-a", "node-b", "node-c"), max_failovers=5)
    state, first = failed_over(pair)
    assert state.roles == {"node-a": Role.FENCED, "node-b": Role.ACTIVE, "node-c": Role.STANDBY}
    state = step(state, firing("node-b"), first + 100.0, pair).state
    d = step(state, Tick(), first + 120.0, pair)
    assert d.actions == ()
    assert d.state.phase is Phase.PENDING
    assert d.state.deadline == first + 3600.0
    assert "cooldown until" in d.reason
    assert step(d.state, Tick(), first + 3599.0, pair).actions == ()
    action = only_start(step(d.state, Tick(), first + 3600.0, pair))
    assert (action.source, action.target) == ("node-b", "node-c")


def test_cooldown_gate_does_not_fire_if_the_fault_cleared() -> None:
    """A fault that resolves during cooldown is dropped; the gate opening then starts nothing."""
    pair = make_pair(nodes=("node-a", "node-b", "node-c"), max_failovers=5)
    state, first = failed_over(pair)
    state = step(state, firing("node-b"), first + 100.0, pair).state
    state = step(state, Tick(), first + 120.0, pair).state
    d = step(state, resolved("node-b"), first + 200.0, pair)
    assert d.state.phase is Phase.ARMED
    assert d.state.deadline is None
    assert step(d.state, Tick(), first + 3600.0, pair).actions == ()


def test_max_failovers_window_defers_until_the_oldest_attempt_expires() -> None:
    """After the cooldown, max_failovers 1 in 24h moves the deadline to the window end, then acts."""
    pair = make_pair(nodes=("node-a", "node-b", "node-c"))
    state, first = failed_over(pair)
    state = step(state, firing("node-b"), first + 100.0, pair).state
    state = step(state, Tick(), first + 120.0, pair).state
    assert state.deadline == first + 3600.0
    d = step(state, Tick(), first + 3600.0, pair)
    assert d.actions == ()
    assert d.state.deadline == first + 86400.0
    assert "max_failovers 1 reached" in d.reason
    assert step(d.state, Tick(), first + 86399.0, pair).actions == ()
    action = only_start(step(d.state, Tick(), first + 86400.0, pair))
    assert (action.source, action.target) == ("node-b", "node-c")


def test_max_failovers_counts_only_automatic_attempts() -> None:
    """A manual failover does not use up the automatic max_failovers budget (cooldown 0)."""
    pair = make_pair(nodes=("node-a", "node-b", "node-c"), cooldown=0)
    d = step(initial(pair), ManualFailover("node-b", by="alice"), T0, pair)
    state = complete(d.state, only_start(d), T0, pair)
    state = step(state, firing("node-b"), T0 + 10.0, pair).state
    action = only_start(step(state, Tick(), T0 + 30.0, pair))
    assert action.automatic and action.target == "node-c"


def test_cooldown_applies_after_a_manual_failover() -> None:
    """Any attempt, manual included, starts the cooldown for automatic failover."""
    pair = make_pair(nodes=("node-a", "node-b", "node-c"))
    d = step(initial(pair), ManualFailover("node-b", by="alice"), T0, pair)
    state = complete(d.state, only_start(d), T0, pair)
    state = step(state, firing("node-b"), T0 + 10.0, pair).state
    d = step(state, Tick(), T0 + 30.0, pair)
    assert d.actions == ()
    assert d.state.deadline == T0 + 3600.0
    assert "cooldown" in d.reason


def test_max_failovers_zero_disables_automatic_failover() -> None:
    """max_failovers 0 never starts an automatic failover and says why; no timer is set."""
    pair = make_pair(max_failovers=0)
    state = step(initial(pair), firing(), T0, pair).state
    d = step(state, Tick(), T0 + 20.0, pair)
    assert d.actions == ()
    assert d.state.phase is Phase.PENDING
    assert d.state.deadline is None
    assert "max_failovers: 0" in d.reason
    assert step(d.state, Tick(), T0 + 30 * 86400.0, pair).actions == ()


def test_max_failovers_zero_still_allows_manual_failover() -> None:
    """With automation disabled an operator can still fail over by hand."""
    pair = make_pair(max_failovers=0)
    state = step(initial(pair), firing(), T0, pair).state
    action = only_start(step(state, ManualFailover("node-b", by="alice"), T0 + 30.0, pair))
    assert not action.automatic


# ---- pause / resume -------------------------------------------------------------------------


def test_paused_pair_records_signals_but_does_not_act() -> None:
    """While paused, trigger alerts are recorded and the hold passes without any failover."""
    pair = make_pair()
    d = step(initial(pair), Pause(by="alice"), T0, pair)
    assert d.changed and d.state.paused
    assert "alice" in d.reason
    state = step(d.state, firing(), T0 + 1.0, pair).state
    assert [s.alertname for s in state.signals] == [DOWN]
    d = step(state, Tick(), T0 + 21.0, pair)
    assert d.actions == ()
    assert "paused" in d.reason
    assert step(d.state, Tick(), T0 + 3600.0, pair).actions == ()


def test_resume_acts_on_a_fault_held_while_paused() -> None:
    """Resuming a pair whose fault outlasted the hold starts the failover immediately."""
    pair = make_pair()
    state = step(initial(pair), Pause(by="alice"), T0, pair).state
    state = step(state, firing(), T0 + 1.0, pair).state
    state = step(state, Tick(), T0 + 21.0, pair).state
    d = step(state, Resume(by="bob"), T0 + 100.0, pair)
    assert not d.state.paused
    assert "bob" in d.reason
    assert only_start(d).target == "node-b"


def test_resume_after_fault_cleared_just_re_arms() -> None:
    """Resuming after the fault resolved during the pause starts nothing."""
    pair = make_pair()
    state = step(initial(pair), Pause(by="alice"), T0, pair).state
    state = step(state, firing(), T0 + 1.0, pair).state
    state = step(state, resolved(), T0 + 5.0, pair).state
    d = step(state, Resume(by="bob"), T0 + 100.0, pair)
    assert d.actions == ()
    assert d.state.phase is Phase.ARMED
    assert not d.state.paused


def test_pause_and_resume_are_idempotent() -> None:
    """Pausing a paused pair or resuming a running one changes nothing."""
    pair = make_pair()
    state = initial(pair)
    assert not step(state, Resume(by="a"), T0, pair).changed
    paused = step(state, Pause(by="a"), T0, pair).state
    again = step(paused, Pause(by="b"), T0 + 1.0, pair)
    assert not again.changed
    assert again.state == paused


# ---- failover outcomes ----------------------------------------------------------------------


def test_completed_failover_updates_roles_and_re_arms() -> None:
    """FailoverEnded done: old primary fenced, target active, phase armed, no deadline."""
    pair = make_pair()
    state, _ = failed_over(pair)
    assert state.roles == {"node-a": Role.FENCED, "node-b": Role.ACTIVE}
    assert state.active_node == "node-b"
    assert state.phase is Phase.ARMED
    assert state.deadline is None
    assert "completed" in state.reason


def test_node_fenced_marks_the_source_fenced_mid_flight() -> None:
    """NodeFenced for the in-flight failover records the fence before the activation ends."""
    pair = make_pair(hold=0)
    d = step(initial(pair), firing(), T0, pair)
    fid = only_start(d).failover_id
    d = step(d.state, NodeFenced(fid, "node-a"), T0 + 1.0, pair)
    assert d.state.roles["node-a"] is Role.FENCED
    assert d.state.phase is Phase.FAILING_OVER
    assert d.state.active_node is None


def test_done_while_source_still_active_is_illegal() -> None:
    """Reporting an activation while the old primary is still ACTIVE raises instead of making two signers."""
    pair = make_pair(hold=0)
    d = step(initial(pair), firing(), T0, pair)
    fid = only_start(d).failover_id
    ended = FailoverEnded(fid, "done", "ok", activated="node-b", dry_run=False)
    with pytest.raises(IllegalTransition):
        decide(d.state, ended, T0 + 1.0, pair)


def test_dry_run_completion_leaves_roles_unchanged() -> None:
    """A dry-run failover that completes changes no roles and is then held back by the cooldown."""
    pair = make_pair(hold=0)
    d = step(initial(pair), firing(), T0, pair)
    state = complete(d.state, only_start(d), T0 + 1.0, pair, dry_run=True)
    assert state.roles == {"node-a": Role.ACTIVE, "node-b": Role.STANDBY}
    assert state.phase is Phase.PENDING
    assert "dry-run complete" in state.reason
    assert state.deadline == T0 + 3600.0


def test_outcome_report_never_starts_a_failover_itself() -> None:
    """A fault still due when a failover ends is scheduled for the next Tick, not started by the report."""
    pair = make_pair(hold=0, cooldown=0, max_failovers=5)
    d = step(initial(pair), firing(), T0, pair)
    state = complete(d.state, only_start(d), T0 + 1.0, pair, dry_run=True)
    assert state.phase is Phase.PENDING
    assert state.deadline == T0 + 1.0
    assert "next tick" in state.reason
    action = only_start(step(state, Tick(), T0 + 1.0, pair))
    assert action.failover_id == "mainnet-a-2"


def test_new_primary_faulty_at_completion_waits_for_the_tick() -> None:
    """If the new primary is already faulty when activation completes, the next Tick moves on."""
    pair = make_pair(nodes=("node-a", "node-b", "node-c"), hold=0, cooldown=0, max_failovers=5)
    d = step(initial(pair), firing("node-a"), T0, pair)
    action = only_start(d)
    state = step(d.state, firing("node-b"), T0 + 1.0, pair).state  # target degrades mid-flight
    end = step(state, NodeFenced(action.failover_id, "node-a"), T0 + 2.0, pair).state
    d = step(
        end,
        FailoverEnded(action.failover_id, "done", "ok", "node-b", False, ("node-a",)),
        T0 + 2.0,
        pair,
    )
    assert d.actions == ()
    assert d.state.active_node == "node-b"
    assert (d.state.phase, d.state.deadline) == (Phase.PENDING, T0 + 2.0)
    nxt = only_start(step(d.state, Tick(), T0 + 2.0, pair))
    assert (nxt.source, nxt.target) == ("node-b", "node-c")


@pytest.mark.parametrize("outcome", ["failed", "aborted"])
def test_failed_failover_blocks_automation_until_acknowledged(outcome: str) -> None:
    """A failed or aborted failover blocks the pair; faults and ticks do nothing until an ack."""
    pair = make_pair(hold=0, cooldown=0, max_failovers=5)
    d = step(initial(pair), firing(), T0, pair)
    fid = only_start(d).failover_id
    ended = FailoverEnded(fid, outcome, "fence returned 500", activated=None, dry_run=False)
    d = step(d.state, ended, T0 + 5.0, pair)
    assert d.state.phase is Phase.BLOCKED
    assert d.state.blocked_reason == "fence returned 500"
    assert "acknowledge" in d.reason
    assert d.state.roles == {"node-a": Role.ACTIVE, "node-b": Role.STANDBY}
    d = step(d.state, firing(name=STALLED), T0 + 10.0, pair)
    assert d.actions == ()
    assert "blocked" in d.reason
    d = step(d.state, Tick(), T0 + 86400.0 * 3, pair)
    assert d.actions == ()
    assert d.state.phase is Phase.BLOCKED


def test_acknowledge_re_arms_after_a_failure() -> None:
    """Acknowledge clears the block; with the fault gone the pair is armed again."""
    pair = make_pair(hold=0)
    d = step(initial(pair), firing(), T0, pair)
    fid = only_start(d).failover_id
    state = step(d.state, FailoverEnded(fid, "failed", "boom", None, False), T0 + 5.0, pair).state
    state = step(state, resolved(), T0 + 6.0, pair).state
    d = step(state, Acknowledge(by="alice"), T0 + 7.0, pair)
    assert d.state.phase is Phase.ARMED
    assert d.state.blocked_reason is None
    assert d.actions == ()
    assert "acknowledged by alice" in d.reason


def test_acknowledged_pair_acts_on_a_fault_still_held() -> None:
    """After an ack, re-armed automation fails over again if the fault is still held."""
    pair = make_pair(hold=0)
    d = step(initial(pair), firing(), T0, pair)
    fid = only_start(d).failover_id
    state = step(d.state, FailoverEnded(fid, "failed", "boom", None, False), T0 + 5.0, pair).state
    d = step(state, Acknowledge(by="alice"), T0 + 60.0, pair)
    action = only_start(d)
    assert action.failover_id == "mainnet-a-2"
    assert action.target == "node-b"


def test_failure_after_fence_leaves_the_source_fenced() -> None:
    """A failover that fenced the primary but failed to activate keeps it fenced and no node active."""
    pair = make_pair(hold=0)
    d = step(initial(pair), firing(), T0, pair)
    fid = only_start(d).failover_id
    ended = FailoverEnded(fid, "failed", "activate timed out", None, False, ("node-a",))
    d = step(d.state, ended, T0 + 5.0, pair)
    assert d.state.roles == {"node-a": Role.FENCED, "node-b": Role.STANDBY}
    assert d.state.active_node is None
    assert d.state.phase is Phase.BLOCKED


def test_acknowledge_with_nothing_to_acknowledge_is_rejected() -> None:
    """Acknowledging a pair that never failed over is refused with a reason."""
    pair = make_pair()
    with pytest.raises(Rejected, match="nothing to acknowledge"):
        decide(initial(pair), Acknowledge(by="alice"), T0, pair)


def test_acknowledge_during_a_failover_is_rejected() -> None:
    """Acknowledging while a failover is in flight is refused."""
    pair = make_pair(hold=0)
    d = step(initial(pair), firing(), T0, pair)
    with pytest.raises(Rejected, match="in flight"):
        decide(d.state, Acknowledge(by="alice"), T0 + 1.0, pair)


def test_acknowledge_clears_the_cooldown_of_a_finished_failover() -> None:
    """Acknowledging a finished failover re-arms automation: the cooldown no longer applies."""
    pair = make_pair(nodes=("node-a", "node-b", "node-c"))
    state, first = failed_over(pair)
    state = step(state, Acknowledge(by="alice"), first + 10.0, pair).state
    assert state.attempts == ()
    state = step(state, firing("node-b"), first + 20.0, pair).state
    assert only_start(step(state, Tick(), first + 40.0, pair)).target == "node-c"


def test_events_arriving_while_in_flight_do_not_start_another_failover() -> None:
    """While a failover is in flight, new faults and ticks start nothing."""
    pair = make_pair(nodes=("node-a", "node-b", "node-c"), hold=0, cooldown=0, max_failovers=9)
    d = step(initial(pair), firing("node-a"), T0, pair)
    only_start(d)
    d = step(d.state, firing("node-a", STALLED), T0 + 1.0, pair)
    assert d.actions == ()
    assert "in flight" in d.reason
    assert step(d.state, Tick(), T0 + 999.0, pair).actions == ()


# ---- no automatic failback ------------------------------------------------------------------


def test_fault_on_fenced_old_primary_does_nothing() -> None:
    """After a completed failover, trigger alerts on the fenced old primary start nothing."""
    pair = make_pair(cooldown=0, max_failovers=9)
    state, now = failed_over(pair)
    d = step(state, firing("node-a", STALLED), now + 10.0, pair)
    assert d.actions == ()
    assert d.state.phase is Phase.ARMED
    assert d.state.deadline is None
    assert step(d.state, Tick(), now + 86400.0, pair).actions == ()


def test_old_primary_is_never_a_failover_target() -> None:
    """A fault on the new primary of a two-node pair cannot fail back to the fenced old primary."""
    pair = make_pair(cooldown=0, max_failovers=9)
    state, now = failed_over(pair)
    state = step(state, resolved("node-a"), now + 1.0, pair).state  # old primary looks healthy
    state = step(state, firing("node-b"), now + 10.0, pair).state
    d = step(state, Tick(), now + 30.0, pair)
    assert d.actions == ()
    assert "no healthy standby" in d.reason
    assert d.state.roles["node-a"] is Role.FENCED


def test_unfenced_old_primary_becomes_eligible_again() -> None:
    """Once an operator un-fences the old primary it is a standby and can be chosen."""
    pair = make_pair(cooldown=0, max_failovers=9)
    state, now = failed_over(pair)
    state = step(state, resolved("node-a"), now + 1.0, pair).state
    state = step(state, Unfence("node-a", by="alice", probe_signing=False), now + 2.0, pair).state
    state = step(state, firing("node-b"), now + 10.0, pair).state
    action = only_start(step(state, Tick(), now + 30.0, pair))
    assert (action.source, action.target) == ("node-b", "node-a")


# ---- manual failover ------------------------------------------------------------------------


def test_manual_failover_starts_a_non_automatic_failover() -> None:
    """A manual failover to a healthy standby starts at once, naming the operator."""
    pair = make_pair()
    d = step(initial(pair), ManualFailover("node-b", by="alice"), T0, pair)
    action = only_start(d)
    assert (action.source, action.target, action.automatic) == ("node-a", "node-b", False)
    assert "manual failover by alice" in d.reason
    assert d.state.phase is Phase.FAILING_OVER


def test_manual_failover_while_in_flight_is_rejected() -> None:
    """A second failover (manual) while one is in flight is refused."""
    pair = make_pair(nodes=("node-a", "node-b", "node-c"))
    d = step(initial(pair), ManualFailover("node-b", by="alice"), T0, pair)
    with pytest.raises(Rejected, match="already in flight"):
        decide(d.state, ManualFailover("node-c", by="bob"), T0 + 1.0, pair)


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("node-a", "already the active node"),
        ("node-z", "is not a node of mainnet-a"),
    ],
)
def test_manual_failover_to_active_or_unknown_node_is_rejected(target: str, match: str) -> None:
    """Manual failover to the active node or to an unknown node is refused with the reason."""
    pair = make_pair()
    with pytest.raises(Rejected, match=match):
        decide(initial(pair), ManualFailover(target, by="alice"), T0, pair)


def test_manual_failover_to_fenced_node_is_rejected() -> None:
    """Manual failover to a fenced node is refused until it is un-fenced."""
    pair = make_pair()
    state, now = failed_over(pair)
    with pytest.raises(Rejected, match="is fenced, not a standby"):
        decide(state, ManualFailover("node-a", by="alice"), now + 1.0, pair)


def test_manual_failover_to_unhealthy_standby_is_rejected() -> None:
    """Manual failover to a standby with a firing trigger is refused, naming the alert."""
    pair = make_pair()
    state = step(initial(pair), firing("node-b", STALLED), T0, pair).state
    with pytest.raises(Rejected, match=f"unhealthy: {STALLED}"):
        decide(state, ManualFailover("node-b", by="alice"), T0 + 1.0, pair)


def test_manual_failover_while_blocked_is_allowed_and_clears_the_block() -> None:
    """An operator may fail over by hand from BLOCKED; the block reason is cleared."""
    pair = make_pair(hold=0)
    d = step(initial(pair), firing(), T0, pair)
    fid = only_start(d).failover_id
    state = step(d.state, FailoverEnded(fid, "failed", "boom", None, False), T0 + 5.0, pair).state
    d = step(state, ManualFailover("node-b", by="alice"), T0 + 10.0, pair)
    assert only_start(d).failover_id == "mainnet-a-2"
    assert d.state.blocked_reason is None


def test_failover_ids_are_sequential_per_pair() -> None:
    """Each started failover gets the next id of the pair."""
    pair = make_pair(cooldown=0, max_failovers=9)
    d = step(initial(pair), ManualFailover("node-b", by="a"), T0, pair)
    state = complete(d.state, only_start(d), T0 + 1.0, pair)
    state = step(state, Unfence("node-a", by="a", probe_signing=False), T0 + 2.0, pair).state
    d = step(state, ManualFailover("node-a", by="a"), T0 + 3.0, pair)
    assert only_start(d).failover_id == "mainnet-a-2"


# ---- un-fence -------------------------------------------------------------------------------


def test_unfence_with_probe_not_signing_makes_a_standby() -> None:
    """Un-fencing a node whose probe says it is not signing returns it to standby."""
    pair = make_pair()
    state, now = failed_over(pair)
    d = step(state, Unfence("node-a", by="alice", probe_signing=False), now + 5.0, pair)
    assert d.state.roles["node-a"] is Role.STANDBY
    assert "un-fenced by alice" in d.reason


@pytest.mark.parametrize(
    ("probe", "match"), [(True, "reports that it is signing"), (None, "did not answer")]
)
def test_unfence_requires_a_probe_saying_not_signing(probe: bool | None, match: str) -> None:
    """Un-fencing is refused when the node says it signs or did not answer the probe."""
    pair = make_pair()
    state, now = failed_over(pair)
    with pytest.raises(Rejected, match=match):
        decide(state, Unfence("node-a", by="alice", probe_signing=probe), now + 5.0, pair)


@pytest.mark.parametrize(("node", "match"), [("node-b", "not fenced"), ("node-z", "not a node")])
def test_unfence_of_unfenced_or_unknown_node_is_rejected(node: str, match: str) -> None:
    """Only a fenced node of the pair can be un-fenced."""
    pair = make_pair()
    with pytest.raises(Rejected, match=match):
        decide(initial(pair), Unfence(node, by="alice", probe_signing=False), T0, pair)


def test_unfence_while_in_flight_is_rejected() -> None:
    """Un-fencing during a failover is refused (the fence may be part of it)."""
    pair = make_pair(hold=0)
    d = step(initial(pair), firing(), T0, pair)
    fid = only_start(d).failover_id
    state = step(d.state, NodeFenced(fid, "node-a"), T0 + 1.0, pair).state
    with pytest.raises(Rejected, match="in flight"):
        decide(state, Unfence("node-a", by="alice", probe_signing=False), T0 + 2.0, pair)


# ---- illegal transitions --------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        NodeFenced("mainnet-a-1", "node-a"),
        FailoverEnded("mainnet-a-1", "done", "ok", "node-b", False),
    ],
)
def test_executor_events_without_a_failover_in_flight_are_illegal(event: Event) -> None:
    """NodeFenced / FailoverEnded on an armed pair raise IllegalTransition."""
    pair = make_pair()
    with pytest.raises(IllegalTransition):
        decide(initial(pair), event, T0, pair)


@pytest.mark.parametrize(
    "event",
    [
        NodeFenced("mainnet-a-7", "node-a"),
        FailoverEnded("mainnet-a-7", "failed", "x", None, False),
    ],
)
def test_executor_events_for_another_failover_id_are_illegal(event: Event) -> None:
    """NodeFenced / FailoverEnded naming a different failover than the one in flight raise."""
    pair = make_pair(hold=0)
    d = step(initial(pair), firing(), T0, pair)
    assert d.state.failover_id == "mainnet-a-1"
    with pytest.raises(IllegalTransition, match="mainnet-a-7"):
        decide(d.state, event, T0 + 1.0, pair)


def test_second_failover_ended_for_a_finished_failover_is_illegal() -> None:
    """Reporting the end of an already finished failover raises (no double completion)."""
    pair = make_pair()
    state, now = failed_over(pair)
    with pytest.raises(IllegalTransition):
        decide(state, FailoverEnded("mainnet-a-1", "done", "again", "node-b", False), now, pair)


def test_unknown_event_is_illegal() -> None:
    """An object that is not a policy event raises IllegalTransition."""
    pair = make_pair()
    with pytest.raises(IllegalTransition):
        decide(initial(pair), "not an event", T0, pair)  # type: ignore[arg-type]


# ---- reconcile ------------------------------------------------------------------------------


def test_reconcile_adds_new_nodes_as_standbys_and_drops_removed_ones() -> None:
    """A stored state meets a changed config: new nodes join as standbys, removed nodes vanish."""
    old = make_pair(nodes=("node-a", "node-b"))
    state = step(initial(old), firing("node-b"), T0, old).state
    new = make_pair(nodes=("node-a", "node-c"))
    r = reconcile(state, new)
    assert r.roles == {"node-a": Role.ACTIVE, "node-c": Role.STANDBY}
    assert r.signals == ()
    assert reconcile(r, new) is r


# ---- state JSON -----------------------------------------------------------------------------


def test_state_json_round_trip_after_real_decisions() -> None:
    """A state with signals, tombstones, attempts and a block survives to_json/from_json via JSON text."""
    pair = make_pair(hold=0)
    d = step(initial(pair), AlertsReceived((alert(name=DOWN), alert(name=STALLED))), T0, pair)
    fid = only_start(d).failover_id
    state = step(d.state, resolved(name=STALLED), T0 + 1.0, pair).state
    state = step(state, FailoverEnded(fid, "failed", "boom", None, False), T0 + 2.0, pair).state
    assert state.signals and state.resolved and state.attempts and state.blocked_reason
    text = json.dumps(state.to_json())
    assert PairState.from_json(json.loads(text)) == state


_names = st.text(alphabet="abcdefgh-0123456789", min_size=1, max_size=8)
_times = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)
_signals = st.builds(
    Signal,
    alertname=_names,
    fingerprint=_names,
    starts_at=_names,
    node=_names,
    since=_times,
)
_attempts = st.builds(Attempt, at=_times, automatic=st.booleans(), failover_id=_names)
_states = st.builds(
    PairState,
    pair=_names,
    roles=st.dictionaries(_names, st.sampled_from(Role), min_size=1, max_size=4),
    phase=st.sampled_from(Phase),
    paused=st.booleans(),
    signals=st.lists(_signals, max_size=4).map(tuple),
    resolved=st.dictionaries(_names, _times, max_size=4),
    deadline=st.none() | _times,
    failover_id=st.none() | _names,
    failover_seq=st.integers(min_value=0, max_value=10_000),
    attempts=st.lists(_attempts, max_size=3).map(tuple),
    blocked_reason=st.none() | st.text(max_size=30),
    reason=st.text(max_size=60),
    reason_at=_times,
)


@given(_states)
def test_state_json_round_trip_property(state: PairState) -> None:
    """Any PairState survives to_json -> JSON text -> from_json unchanged."""
    assert PairState.from_json(json.loads(json.dumps(state.to_json()))) == state


# ---- property: safety under arbitrary event sequences ---------------------------------------

NODES = ("node-a", "node-b", "node-c")
NAMES = (DOWN, STALLED, OTHER)
EPISODES = (STARTS, STARTS_2)

_alert_op = st.tuples(
    st.sampled_from(["fire", "fire", "resolve"]),
    st.sampled_from(NODES),
    st.sampled_from(NAMES),
    st.sampled_from(EPISODES),
)
_alerts_op = st.tuples(st.just("alerts"), st.lists(_alert_op, min_size=1, max_size=4))
_tick_op = st.tuples(
    st.just("tick"), st.sampled_from([0.0, 1.0, 19.0, 20.0, 600.0, 3600.0, 86400.0])
)
_end_op = st.tuples(
    st.just("end"),
    st.sampled_from(["done", "done", "done", "failed", "aborted"]),
    st.booleans(),  # dry run
    st.booleans(),  # source fenced before a failed end
)
_OP_STRATEGIES: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "alerts": _alerts_op,
    "fault": st.tuples(st.just("fault"), st.sampled_from(EPISODES)),
    "tick": _tick_op,
    "end": _end_op,
    "fence": st.tuples(st.just("fence")),
    "manual": st.tuples(st.just("manual"), st.sampled_from((*NODES, "node-z"))),
    "ack": st.tuples(st.just("ack")),
    "pause": st.tuples(st.just("pause")),
    "resume": st.tuples(st.just("resume")),
    "unfence": st.tuples(
        st.just("unfence"), st.sampled_from(NODES), st.sampled_from([False, True, None])
    ),
}
# weighted: alerts, ticks and failover outcomes are what move a pair through its phases
_OP_WEIGHTS = (
    ["alerts"] * 5
    + ["fault"] * 3
    + ["tick"] * 4
    + ["end"] * 4
    + ["fence", "manual", "ack", "pause", "resume", "unfence"]
)
_ops = st.sampled_from(_OP_WEIGHTS).flatmap(_OP_STRATEGIES.__getitem__)


def _to_events(
    op: tuple[Any, ...], state: PairState, in_flight: StartFailover | None
) -> list[Event]:
    kind = op[0]
    if kind == "fault":  # both triggers on whichever node is active now
        active = state.active_node or "node-a"
        return [
            AlertsReceived(
                (alert(active, DOWN, starts_at=op[1]), alert(active, STALLED, starts_at=op[1]))
            )
        ]
    if kind == "alerts":
        return [
            AlertsReceived(
                tuple(
                    alert(
                        node, name, status="firing" if verb == "fire" else "resolved", starts_at=ep
                    )
                    for verb, node, name, ep in op[1]
                )
            )
        ]
    if kind == "tick":
        return [Tick()]
    if kind in ("fence", "end"):
        if in_flight is None:
            return []
        fid, source, target = in_flight.failover_id, in_flight.source, in_flight.target
        if kind == "fence":
            return [NodeFenced(fid, source)] if source else []
        outcome, dry_run, fenced_first = op[1], op[2], op[3]
        events: list[Event] = []
        fenced: tuple[str, ...] = ()
        if source and not dry_run and (outcome == "done" or fenced_first):
            events.append(NodeFenced(fid, source))
            fenced = (source,)
        activated = target if outcome == "done" else None
        events.append(FailoverEnded(fid, outcome, "outcome " + outcome, activated, dry_run, fenced))
        return events
    if kind == "manual":
        return [ManualFailover(op[1], by="op")]
    if kind == "ack":
        return [Acknowledge(by="op")]
    if kind == "pause":
        return [Pause(by="op")]
    if kind == "resume":
        return [Resume(by="op")]
    return [Unfence(op[1], by="op", probe_signing=op[2])]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(_ops, min_size=10, max_size=60),
    hold=st.sampled_from([0, 5, 20]),
    quorum=st.sampled_from([1, 2]),
    cooldown=st.sampled_from([0, 30, 3600]),
    max_failovers=st.sampled_from([5, 2, 1, 0]),  # simplest first: hypothesis favours it
    n_nodes=st.sampled_from([3, 2]),
)
def test_random_event_sequences_keep_the_safety_invariants(
    ops: list[tuple[Any, ...]],
    hold: int,
    quorum: int,
    cooldown: int,
    max_failovers: int,
    n_nodes: int,
) -> None:
    """Any event sequence: one failover in flight, one ACTIVE node, starts only to healthy standbys."""
    pair = make_pair(
        nodes=NODES[:n_nodes],
        hold=hold,
        quorum=quorum,
        cooldown=cooldown,
        max_failovers=max_failovers,
    )
    triggers = set(pair.policy.triggers)
    now = T0
    state = initial(pair, now)
    in_flight: StartFailover | None = None
    starts = 0
    for op in ops:
        if op[0] == "tick":
            now += op[1]
        else:
            now += 1.0
        for ev in _to_events(op, state, in_flight):
            before = state
            try:
                d = decide(before, ev, now, pair)
            except Rejected:
                assert isinstance(ev, ManualFailover | Acknowledge | Unfence)
                continue
            state = d.state
            if d.changed:
                assert d.reason.strip()
            else:
                assert state == before or isinstance(ev, AlertsReceived | Tick)
            assert len(d.actions) <= 1
            for action in d.actions:
                assert isinstance(action, StartFailover)
                assert before.phase is not Phase.FAILING_OVER
                assert in_flight is None
                assert before.roles.get(action.target) is Role.STANDBY
                assert state.roles.get(action.target) is Role.STANDBY
                assert not [s for s in state.signals_on(action.target) if s.alertname in triggers]
                assert action.source == before.active_node
                assert action.target != action.source
                if action.automatic:
                    assert not state.paused
                    assert action.source is not None
                    fired = {s.alertname for s in state.signals_on(action.source)}
                    assert len(fired) >= pair.policy.quorum
                in_flight = action
                starts += 1
            if isinstance(ev, FailoverEnded):
                in_flight = None
            # invariants on every state
            actives = [n for n, r in state.roles.items() if r is Role.ACTIVE]
            assert len(actives) <= 1
            assert (state.phase is Phase.FAILING_OVER) == (in_flight is not None)
            if in_flight is not None:
                assert state.failover_id == in_flight.failover_id
            assert set(state.roles) == set(NODES[:n_nodes])
            assert all(s.alertname in triggers for s in state.signals)
            assert PairState.from_json(json.loads(json.dumps(state.to_json()))) == state
    event(f"failovers started: {min(starts, 3)}{'+' if starts > 3 else ''}")


_STARTS_POOL = (
    "2026-11-25T18:28:07Z",
    "2026-11-25T18:28:07.5Z",
    STARTS,
    "2026-11-25T18:28:07.91Z",
    STARTS_2,
)


@settings(max_examples=300, deadline=None)
@given(
    sent=st.lists(
        st.tuples(
            st.sampled_from(["fire", "resolve"]),
            st.sampled_from(NODES[:2]),
            st.sampled_from((DOWN, STALLED)),
            st.sampled_from(_STARTS_POOL),
        ),
        min_size=1,
        max_size=25,
    ),
    resolve_order=st.randoms(use_true_random=False),
    replay_order=st.randoms(use_true_random=False),
)
def test_resolving_every_episode_leaves_no_fault_even_with_replays(
    sent: list[tuple[str, str, str, str]], resolve_order: Any, replay_order: Any
) -> None:
    """Deliveries in any order, then a resolve for every episode: no signal survives late replays."""
    pair = make_pair(hold=3600)  # long hold: no failover interferes with the bookkeeping
    now = T0
    state = initial(pair, now)
    for verb, node, name, starts in sent:
        now += 1.0
        status = "firing" if verb == "fire" else "resolved"
        state = step(
            state, AlertsReceived((alert(node, name, status=status, starts_at=starts),)), now, pair
        ).state
    episodes = sorted({(node, name, starts) for _, node, name, starts in sent})
    resolve_order.shuffle(episodes)
    for node, name, starts in episodes:
        now += 1.0
        state = step(state, resolved(node, name, starts_at=starts), now, pair).state
    assert state.signals == ()
    replay_order.shuffle(episodes)
    for node, name, starts in episodes:
        now += 1.0
        d = step(state, firing(node, name, starts_at=starts), now, pair)
        assert d.duplicates == 1
        state = d.state
    assert state.signals == ()
    assert state.phase is Phase.ARMED
    assert step(state, Tick(), now + 86400.0, pair).actions == ()
