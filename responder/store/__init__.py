"""The store interface: durable notifications, per-pair state, events and failover journals.

Everything the policy relies on for safety lives behind `Store.transaction()`: one
serialisable, all-or-nothing unit across threads, processes (gunicorn workers) and, with a
distributed backend, replicas. SQLite implements it in `store.sqlite`, etcd in `store.etcd`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from ..alerts import Notification
from ..clock import Timebase
from ..config import RetentionConfig
from ..failover import Failover
from ..observation import NodeObservation
from ..state import PairState

log = logging.getLogger("responder.store")

T = TypeVar("T")


class InFlightError(Exception):
    """A second unfinished failover for a pair was about to be stored."""


class LeaseLost(Exception):
    """This process no longer owns the failover it is executing; it must stop at once."""


class StateUnreadable(Exception):
    """A pair's stored state cannot be decoded (hand-edited, or written by a newer version)."""


class StoreUnavailable(OSError):
    """The store cannot be reached now (a distributed backend's servers); nothing was written.
    Unlike StoreReplaced it may come back: callers retry, and acknowledge nothing meanwhile."""


class StoreReplaced(OSError):
    """The database file was deleted or replaced while the store had it open.

    Whatever is written after that is lost on the next start (or lands in a file that is not
    the one the responder opened), so nothing more may be acknowledged: every write, every
    recorded delivery and the health check raise this until the responder is restarted.
    """


@dataclass(frozen=True)
class PruneCounts:
    """Rows deleted by one `Store.prune`; `more` is True when a limit stopped it early."""

    notifications: int = 0
    events: int = 0
    failovers: int = 0
    journal: int = 0
    more: bool = False

    @property
    def total(self) -> int:
        return self.notifications + self.events + self.failovers + self.journal


@dataclass(frozen=True)
class EventRecord:
    """One line of the audit trail."""

    ts: float
    pair: str
    kind: str
    reason: str
    node: str | None = None
    failover_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": self.ts,
            "pair": self.pair,
            "kind": self.kind,
            "reason": self.reason,
            "node": self.node,
            "failover_id": self.failover_id,
            "data": dict(self.data),
        }


@dataclass(frozen=True)
class JournalEntry:
    failover_id: str
    seq: int
    ts: float
    step: str
    phase: str  # "begin" | "end" | "note" | "would_call"
    detail: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """`ts` (Unix seconds) for arithmetic, `at` (ISO 8601, UTC, milliseconds: steps take
        less than a second) for people, as everything else the API shows."""
        at = datetime.fromtimestamp(self.ts, UTC).isoformat(timespec="milliseconds")
        return {
            "seq": self.seq,
            "ts": self.ts,
            "at": at,
            "step": self.step,
            "phase": self.phase,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True)
class StoredNotification:
    id: int
    received_at: float
    notification: Notification


@dataclass(frozen=True)
class PairFault:
    """Work for one pair that raised: retried with backoff, quarantined after a bound.

    `source` is what failed ("notification", "deadline", "failover", "observation") and `ref`
    which one (a notification id, a failover id, or "" for the pair as a whole).
    """

    pair: str
    source: str
    ref: str
    attempts: int
    next_at: float
    error: str
    quarantined: bool
    first_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "pair": self.pair,
            "source": self.source,
            "ref": self.ref,
            "attempts": self.attempts,
            "next_at": self.next_at,
            "error": self.error,
            "quarantined": self.quarantined,
            "first_at": self.first_at,
        }


class StoreTxn(Protocol):
    """Reads and writes inside one transaction; nothing is visible to others until commit."""

    def savepoint(self) -> AbstractContextManager[None]:
        """A nested unit: an exception inside undoes only its own writes."""
        ...

    def load_notification(self, notification_id: int) -> StoredNotification | None: ...

    def record_fault(
        self, pair: str, source: str, ref: str, error: str, now: float, *, max_attempts: int
    ) -> PairFault:
        """Count one more failure; back off exponentially; quarantine at `max_attempts`."""
        ...

    def clear_fault(self, pair: str, source: str, ref: str) -> None: ...

    def load_pair(self, pair: str) -> PairState | None: ...

    def save_observation(self, obs: NodeObservation) -> NodeObservation:
        """As Store.save_observation, inside this transaction."""
        ...

    def save_pair(self, state: PairState) -> None: ...

    def add_event(self, event: EventRecord) -> None: ...

    def claim_notifications(self, ids: Collection[int]) -> set[int]:
        """Mark these notifications processed on commit; returns those not processed before
        (another worker may have claimed some since they were peeked)."""
        ...

    def load_failover(self, failover_id: str) -> Failover | None: ...

    def insert_failover(self, failover: Failover) -> None:
        """Raise InFlightError if the pair already has an unfinished failover."""
        ...

    def update_failover(self, failover: Failover, owner: str) -> None:
        """Raise LeaseLost unless `owner` holds the failover's lease."""
        ...

    def append_journal(
        self, failover_id: str, ts: float, step: str, phase: str, detail: Mapping[str, Any]
    ) -> None: ...


class Store(Protocol):
    def transaction(self) -> AbstractContextManager[StoreTxn]:
        """Serialised against every other transaction on the same store; rolls back on error."""
        ...

    def batched(self, fn: Callable[[StoreTxn], T]) -> T:
        """Run `fn` in a transaction, durable on return; concurrent callers share one commit
        (each undone alone if it raises). Same outcome as its own transaction, cheaper."""
        ...

    def record_notification(self, received_at: float, notification: Notification) -> int:
        """Durably store one delivery (what the responder acts on, not the whole body);
        returns once it survives a crash."""
        ...

    def pending_notifications(self) -> int:
        """Recorded deliveries not processed yet; raises when the store is unusable (health)."""
        ...

    def peek_notifications(
        self, limit: int, known: Mapping[int, Notification] | None = None
    ) -> list[StoredNotification]:
        """Unprocessed notifications, oldest first, read (and decoded) without holding the
        right to write; claim them in a transaction. Those in `known` (recorded by this
        process, by id) are not decoded again."""
        ...

    def clock_anchor(self, boot_id: str, proposed: float) -> float:
        """The responder-time offset for this boot: `proposed` unless one is stored already."""
        ...

    def list_pairs(self) -> list[PairState]:
        """Every readable pair state; unreadable ones are in `unreadable_pairs`."""
        ...

    def get_pair(self, pair: str) -> PairState | None:
        """One pair's committed state; None when absent or unreadable."""
        ...

    def due_pairs(self, now: float, pairs: Collection[str]) -> list[PairState]:
        """The readable states among `pairs` whose deadline is at or before `now`."""
        ...

    def next_deadline(self, pairs: Collection[str]) -> float | None:
        """The earliest deadline among `pairs`, or None."""
        ...

    def unreadable_pairs(self) -> dict[str, str]:
        """pair -> why its stored state cannot be decoded."""
        ...

    def list_faults(self, pair: str | None = None) -> list[PairFault]: ...

    def clear_faults(self, pair: str) -> int:
        """Forget a pair's faults and quarantines (an operator acknowledged them)."""
        ...

    def save_observation(self, obs: NodeObservation) -> NodeObservation:
        """Store a probe's answer, carrying `quiet_since` over a run of "not signing"."""
        ...

    def observations(self, pair: str) -> dict[str, NodeObservation]: ...

    def claim_observation(self, pair: str, now: float, interval: float) -> bool:
        """True for exactly one caller per pair and interval: that one probes the nodes."""
        ...

    def claim_schedule(self, key: str, now: float, interval: float) -> bool:
        """True for exactly one caller per `key` ("readiness:PAIR", "drill:PAIR") and
        interval: that one runs the scheduled work."""
        ...

    def claim_schedules(self, schedules: Collection[tuple[str, float]], now: float) -> set[str]:
        """claim_schedule for each (key, interval), in one transaction; the keys claimed."""
        ...

    def save_report(self, pair: str, kind: str, doc: Mapping[str, Any]) -> None:
        """Keep the latest report of a kind for a pair ("readiness", "drill", "drill_success")."""
        ...

    def reports(self, pair: str) -> dict[str, dict[str, Any]]:
        """The latest report of each kind for a pair."""
        ...

    def list_events(
        self, pair: str | None = None, limit: int = 100, before: int | None = None
    ) -> list[EventRecord]: ...

    def get_failover(self, failover_id: str) -> Failover | None: ...

    def list_failovers(self, pair: str | None = None, limit: int = 20) -> list[Failover]: ...

    def journal(self, failover_id: str) -> list[JournalEntry]: ...

    def claim_failover(
        self,
        owner: str,
        now: float,
        lease: float,
        failover_id: str | None = None,
        pairs: Collection[str] | None = None,
    ) -> Failover | None:
        """Take the lease of one unfinished failover nobody holds (or whose lease expired).

        Without `failover_id`, only one that is due (`wake_at` unset or past); with it, that
        failover whatever its `wake_at` (an operator acting on it). With `pairs`, only
        failovers of those pairs (a pair removed from the config is left alone).
        """
        ...

    def claim_failovers(
        self, owner: str, now: float, lease: float, pairs: Collection[str], limit: int
    ) -> list[Failover]:
        """Up to `limit` due failovers of `pairs`, oldest first, in one transaction."""
        ...

    def renew_lease(self, failover_id: str, owner: str, until: float) -> bool: ...

    def renew_leases(self, failover_ids: Collection[str], owner: str, until: float) -> set[str]:
        """Renew several leases in one transaction; returns the ids still held."""
        ...

    def release_lease(self, failover_id: str, owner: str) -> None: ...

    def prune(
        self,
        now_wall: float,
        *,
        notifications: float,
        events: float,
        failovers: float,
        now_responder: float | None = None,
        batch: int = 1000,
        max_batches: int | None = None,
    ) -> PruneCounts:
        """Delete what is older than its retention (seconds), in short transactions.

        Processed notifications received more than `notifications` ago (responder time:
        `now_responder`, default `now_wall`), unless a fault still refers to them; events
        older than `events`; finished failovers last updated more than `failovers` ago, with
        their journals, unless a pair's state still names them. Never an unprocessed
        notification, never an unfinished failover or its journal. At most `max_batches`
        transactions of `batch` rows per kind (None: until done); `more` says one stopped early.
        """
        ...

    def close(self) -> None: ...


def iter_journal_steps(entries: list[JournalEntry]) -> Iterator[tuple[str, str]]:
    """(step, phase) pairs in journal order; handy for assertions and status output."""
    for entry in entries:
        yield entry.step, entry.phase


PRUNE_EVERY = 3600.0  # seconds between two prunes of one process
PRUNE_AGAIN = 1.0  # seconds before the next slice when a prune stopped at its limit
PRUNE_RETRY = 60.0  # seconds before trying again after a prune raised
PRUNE_SLICE = 10  # transactions of PRUNE_BATCH rows per kind per call
PRUNE_BATCH = 1000


class Pruner:
    """Applies the retention config to a store, at most once an hour per process.

    Call `maybe_prune` from a background loop as often as it likes: it does nothing until the
    next prune is due. A large backlog (the first prune after an upgrade) is deleted in slices
    of a few short transactions, one slice per call, so the loop and the webhook never wait on
    a long write. Several processes may each run one: deleting is idempotent.
    """

    def __init__(self, store: Store, retention: RetentionConfig) -> None:
        self.store = store
        self.retention = retention
        self._next: float | None = None  # monotonic

    def maybe_prune(self, timebase: Timebase) -> PruneCounts | None:
        """Prune if due (None if not); raises what the store raises, and retries in a minute."""
        mono = timebase.clock.monotonic()
        if self._next is not None and mono < self._next:
            return None
        self._next = mono + PRUNE_RETRY
        counts = self.store.prune(
            timebase.clock.now(),
            notifications=self.retention.notifications,
            events=self.retention.events,
            failovers=self.retention.failovers,
            now_responder=timebase.now(),
            batch=PRUNE_BATCH,
            max_batches=PRUNE_SLICE,
        )
        self._next = mono + (PRUNE_AGAIN if counts.more else PRUNE_EVERY)
        if counts.total:
            log.info(
                "pruned %d notifications, %d events, %d failovers (%d journal entries)%s",
                counts.notifications,
                counts.events,
                counts.failovers,
                counts.journal,
                "; more to prune" if counts.more else "",
            )
        return counts
