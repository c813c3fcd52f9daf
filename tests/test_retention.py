"""Bounded growth: per-pair state stays small under floods, and the store forgets on schedule."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from responder.alerts import Alert, Notification, parse_notification
from responder.clock import ManualClock, Timebase
from responder.config import ConfigError, PairConfig, RetentionConfig, parse_config
from responder.failover import Failover, Step
from responder.policy import (
    SIGNALS_PER_NODE_MAX,
    TOMBSTONE_MAX,
    AlertsReceived,
    Tick,
    decide,
)
from responder.state import PairState, Phase
from responder.store import PRUNE_BATCH, PRUNE_SLICE, EventRecord, Pruner
from responder.store.sqlite import SqliteStore
from tests.conftest import Harness, alert, base_config, notification

NOW = 1_800_000_000.0
DAY = 86400.0
KEEP = {"notifications": 7 * DAY, "events": 30 * DAY, "failovers": 90 * DAY}
DOWN, STALLED = "ValidatorClientDown", "BeaconNodeStalled"

STATE_BOUND = 200_000  # bytes of one pair's stored state under a 10,000-fingerprint flood
PAIRS_BOUND = 100_000  # bytes of GET /api/v1/pairs under the same flood


# ---- the per-pair state under a flood (the real responder) ----------------------------------


def _flood(h: Harness, status: str, total: int = 10_000, per_delivery: int = 50) -> None:
    """Deliver `total` distinct fingerprints on node-a, `per_delivery` per notification."""
    for start in range(0, total, per_delivery):
        alerts = [
            alert(status=status, fingerprint=f"flood-{i:05d}")
            for i in range(start, start + per_delivery)
        ]
        assert h.post_alert(notification(*alerts)).status_code == 200
        h.clock.advance(0.05)  # deliveries arrive over 10 s, inside the 20 s hold
    while h.responder.process_notifications() > 0:
        pass


def _stored_state_bytes(h: Harness) -> int:
    (state,) = h.store.list_pairs()
    return len(json.dumps(state.to_json()))


def test_firing_flood_keeps_pair_state_and_status_small_and_the_deadline(
    make_harness: Callable[..., Harness],
) -> None:
    """10,000 distinct firing fingerprints on one node keep the stored state and /api/v1/pairs under bounds, deadline unchanged."""
    h = make_harness()
    first = h.responder.time.now()
    _flood(h, "firing")

    (state,) = h.store.list_pairs()
    size = _stored_state_bytes(h)
    pairs = h.op("GET", "/api/v1/pairs")
    print(
        f"firing flood: state {size} bytes, {len(state.signals)} signals; pairs {len(pairs.data)} bytes"
    )

    assert len(state.signals) <= SIGNALS_PER_NODE_MAX  # every decision's state is bounded
    assert size < STATE_BOUND
    assert pairs.status_code == 200 and len(pairs.data) < PAIRS_BOUND
    assert state.phase is Phase.PENDING
    assert state.deadline == pytest.approx(first + 20.0, abs=1e-6)  # the earliest still sets it


def test_resolved_flood_keeps_tombstones_bounded(make_harness: Callable[..., Harness]) -> None:
    """10,000 distinct resolved fingerprints leave at most TOMBSTONE_MAX (plus one delivery) tombstones."""
    h = make_harness()
    _flood(h, "resolved")

    (state,) = h.store.list_pairs()
    size = _stored_state_bytes(h)
    print(f"resolved flood: state {size} bytes, {len(state.resolved)} tombstones")

    assert len(state.resolved) <= TOMBSTONE_MAX
    assert size < STATE_BOUND


def test_one_huge_delivery_leaves_a_bounded_state_and_a_short_reason(
    make_harness: Callable[..., Harness],
) -> None:
    """A single delivery of 2,000 firing fingerprints is bounded at once: at most
    SIGNALS_PER_NODE_MAX signals, and the reason names ten changes and counts the rest."""
    h = make_harness()
    alerts = [alert(fingerprint=f"storm-{i}") for i in range(2000)]
    assert h.post_alert(notification(*alerts)).status_code == 200
    h.responder.step()
    (state,) = h.store.list_pairs()
    assert len(state.signals) <= SIGNALS_PER_NODE_MAX
    assert "... and 1990 more" in state.reason and len(state.reason) < 2000
    assert _stored_state_bytes(h) < STATE_BOUND


# ---- the signal cap is safe (the pure policy) -----------------------------------------------


def _pair(**policy: Any) -> PairConfig:
    data = base_config(lambda n: f"http://127.0.0.1:1/{n}", policy=policy, auth="none")
    return parse_config(data, Path("/etc/responder")).pairs[0]


def _firing(name: str, fingerprint: str) -> AlertsReceived:
    labels = {"alertname": name, "node": "node-a", "pair": "mainnet-a"}
    a = Alert(
        status="firing",
        labels=labels,
        starts_at="2026-11-25T18:28:07.908132859Z",
        fingerprint=fingerprint,
    )
    return AlertsReceived(((a, "node-a"),))


def test_flood_of_one_trigger_does_not_crowd_out_the_second_for_quorum() -> None:
    """With quorum 2, a second trigger arriving after 300 signals of the first is kept and makes the failover due."""
    pair = _pair(quorum=2)
    state = PairState.initial(pair, NOW)
    for i in range(300):
        state = decide(state, _firing(DOWN, f"down-{i}"), NOW + i, pair).state
    state = decide(state, _firing(STALLED, "stalled-1"), NOW + 300, pair).state
    state = decide(state, Tick(), NOW + 301, pair).state  # prunes
    state = decide(state, _firing(DOWN, "down-late"), NOW + 302, pair).state  # prunes again

    names = [s.alertname for s in state.signals_on("node-a")]
    assert len(state.signals) <= SIGNALS_PER_NODE_MAX + 1
    assert STALLED in names
    assert state.phase is Phase.PENDING
    assert state.deadline == NOW + 300 + 20.0  # the quorum-th trigger's first signal + hold
    decision = decide(state, Tick(), NOW + 320, pair)
    assert decision.actions and decision.actions[0].target == "node-b"


def test_signal_cap_keeps_the_earliest_so_the_deadline_never_moves() -> None:
    """Capping 1,000 signals keeps the earliest ones: the deadline is the first signal's since + hold."""
    pair = _pair(hold="1h")
    state = PairState.initial(pair, NOW)
    for i in range(1000):
        state = decide(state, _firing(DOWN, f"down-{i:04d}"), NOW + i, pair).state
    assert len(state.signals) <= SIGNALS_PER_NODE_MAX + 1
    assert min(s.since for s in state.signals) == NOW
    assert sorted(s.fingerprint for s in state.signals)[:3] == [
        "down-0000",
        "down-0001",
        "down-0002",
    ]
    assert state.deadline == NOW + 3600.0


# ---- retention: Store.prune against a real SQLite file --------------------------------------


def _note(fingerprint: str) -> Notification:
    return parse_notification(json.dumps(notification(alert(fingerprint=fingerprint))).encode())


def _record(store: SqliteStore, at: float, fingerprint: str) -> int:
    return store.record_notification(at, _note(fingerprint))


def _exists(store: SqliteStore, notification_id: int) -> bool:
    with store.transaction() as txn:
        return txn.load_notification(notification_id) is not None


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = SqliteStore(tmp_path / "db.sqlite3")
    yield s
    s.close()


def test_prune_deletes_only_old_processed_notifications_without_a_fault(
    store: SqliteStore,
) -> None:
    """Processed notifications past retention go; recent, unprocessed and fault-referenced ones stay."""
    old = _record(store, NOW - 8 * DAY, "old")
    recent = _record(store, NOW - 6 * DAY, "recent")
    faulted = _record(store, NOW - 30 * DAY, "faulted")
    with store.transaction() as txn:
        assert len(txn.claim_notifications([old, recent, faulted])) == 3
        txn.record_fault("mainnet-a", "notification", str(faulted), "boom", NOW, max_attempts=5)
    pending = _record(store, NOW - 100 * DAY, "pending")  # never processed: never deleted

    counts = store.prune(NOW, **KEEP)

    assert counts.notifications == 1 and not counts.more
    assert not _exists(store, old)
    assert all(_exists(store, i) for i in (recent, faulted, pending))
    assert store.pending_notifications() == 1


def test_prune_measures_notifications_in_responder_time(store: SqliteStore) -> None:
    """Notification age is counted on responder time (what received_at holds), not wall time."""
    note = _record(store, NOW - 8 * DAY, "n")
    with store.transaction() as txn:
        assert txn.claim_notifications([note]) == {note}

    assert store.prune(NOW + 30 * DAY, **KEEP, now_responder=NOW - 2 * DAY).notifications == 0
    assert _exists(store, note)
    assert store.prune(NOW - 2 * DAY, **KEEP, now_responder=NOW).notifications == 1


def test_prune_deletes_events_past_their_retention(store: SqliteStore) -> None:
    """Events older than retention.events are deleted, newer ones kept."""
    with store.transaction() as txn:
        txn.add_event(EventRecord(NOW - 31 * DAY, "mainnet-a", "old", "old"))
        txn.add_event(EventRecord(NOW - 29 * DAY, "mainnet-a", "recent", "recent"))

    counts = store.prune(NOW, **KEEP)

    assert counts.events == 1
    assert [e.kind for e in store.list_events()] == ["recent"]


def _failover(fid: str, step: Step, created: float, updated: float) -> Failover:
    return Failover(
        fid, "mainnet-a", "node-a", "node-b", True, False, "test", step, created, updated
    )


def test_prune_deletes_old_finished_failovers_and_their_journal_only(
    store: SqliteStore, tmp_path: Path
) -> None:
    """Finished failovers past retention go with their journal; unfinished, recent, long-running and current ones stay."""
    old = _failover("mainnet-a-1", Step.DONE, NOW - 200 * DAY, NOW - 100 * DAY)
    long_running = _failover("mainnet-a-2", Step.FAILED, NOW - 200 * DAY, NOW - 10 * DAY)
    current = _failover("mainnet-a-3", Step.ABORTED, NOW - 150 * DAY, NOW - 150 * DAY)
    unfinished = _failover("mainnet-a-4", Step.AWAITING, NOW - 300 * DAY, NOW - 300 * DAY)
    pair = _pair()
    with store.transaction() as txn:
        for f in (old, long_running, current, unfinished):
            txn.insert_failover(f)
            txn.append_journal(f.id, f.created_at, "planned", "note", {})
            txn.append_journal(f.id, f.updated_at, f.step.value, "end", {})
        txn.save_pair(PairState.initial(pair, NOW).evolve(failover_id=current.id))

    counts = store.prune(NOW, **KEEP)

    assert (counts.failovers, counts.journal) == (1, 2)
    assert store.get_failover(old.id) is None and store.journal(old.id) == []
    for kept in (long_running, current, unfinished):
        assert store.get_failover(kept.id) is not None
        assert len(store.journal(kept.id)) == 2


def test_prune_in_slices_reports_more_until_done(store: SqliteStore) -> None:
    """A prune limited to 2 batches of 10 deletes 20 of 25 old rows, says `more`, and the next call ends it."""
    with store.transaction() as txn:
        for i in range(25):
            txn.add_event(EventRecord(NOW - 40 * DAY + i, "mainnet-a", f"e{i}", "old"))

    first = store.prune(NOW, **KEEP, batch=10, max_batches=2)
    second = store.prune(NOW, **KEEP, batch=10, max_batches=2)

    assert (first.events, first.more) == (20, True)
    assert (second.events, second.more) == (5, False)
    assert store.list_events() == []


def test_pruner_runs_hourly_and_returns_soon_while_a_backlog_remains(store: SqliteStore) -> None:
    """The Pruner prunes when due, not again within the hour, and again after 1 s while more is left."""
    clock = ManualClock(start=NOW)
    pruner = Pruner(store, RetentionConfig())
    timebase = Timebase(clock, store.clock_anchor)
    backlog = PRUNE_SLICE * PRUNE_BATCH + 1
    with store.transaction() as txn:
        for i in range(backlog):
            txn.add_event(EventRecord(NOW - 31 * DAY, "mainnet-a", f"e{i}", "old"))

    first = pruner.maybe_prune(timebase)
    assert first is not None and first.events == PRUNE_SLICE * PRUNE_BATCH and first.more
    clock.advance(1.0)
    second = pruner.maybe_prune(timebase)
    assert second is not None and second.events == 1 and not second.more

    with store.transaction() as txn:
        txn.add_event(EventRecord(clock.now() - 31 * DAY, "mainnet-a", "late", "old"))
    clock.advance(3500.0)
    assert pruner.maybe_prune(timebase) is None  # not due within the hour
    assert len(store.list_events()) == 1
    clock.advance(100.0)
    third = pruner.maybe_prune(timebase)
    assert third is not None and third.events == 1


# ---- retention config -----------------------------------------------------------------------


def _config(**retention: Any) -> Any:
    data = base_config(lambda n: f"http://127.0.0.1:1/{n}", auth="none")
    if retention:
        data["retention"] = retention
    return parse_config(data, Path("/etc/responder"))


def test_retention_defaults_and_durations() -> None:
    """retention defaults to 7d / 30d / 90d and accepts durations."""
    assert _config().retention == RetentionConfig(
        notifications=7 * DAY, events=30 * DAY, failovers=90 * DAY
    )
    assert _config(events="1d12h").retention.events == 1.5 * DAY


@pytest.mark.parametrize(
    ("retention", "problem"),
    [
        ({"events": "0s"}, "retention.events: Input should be greater than 0"),
        (
            {"notifications": "soon"},
            "retention.notifications: Value error, 'soon' is not a duration",
        ),
        ({"journal": "1d"}, "retention.journal: unknown key"),
    ],
)
def test_bad_retention_names_the_key(retention: dict[str, str], problem: str) -> None:
    """A bad retention value is rejected with its key path."""
    with pytest.raises(ConfigError) as err:
        _config(**retention)
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems
