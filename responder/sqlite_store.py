"""SQLite implementation of the Store: one file in state_dir, WAL, BEGIN IMMEDIATE.

Connections are per thread and per process (safe across gunicorn's fork); BEGIN IMMEDIATE
takes the write lock up front, so read-decide-write sequences are serialised across workers.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from .alerts import Alert, Notification
from .failover import Failover
from .observation import NodeObservation
from .state import PairState
from .store import (
    EventRecord,
    InFlightError,
    JournalEntry,
    LeaseLost,
    PairFault,
    StateUnreadable,
    StoredNotification,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    receiver TEXT NOT NULL,
    group_key TEXT NOT NULL,
    status TEXT NOT NULL,
    truncated INTEGER NOT NULL,
    alerts TEXT NOT NULL,
    raw TEXT NOT NULL,
    processed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS notifications_unprocessed ON notifications(processed, id);
CREATE TABLE IF NOT EXISTS pairs (
    pair TEXT PRIMARY KEY,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    pair TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    node TEXT,
    failover_id TEXT,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_pair ON events(pair, id);
CREATE TABLE IF NOT EXISTS failovers (
    id TEXT PRIMARY KEY,
    pair TEXT NOT NULL,
    step TEXT NOT NULL,
    doc TEXT NOT NULL,
    owner TEXT,
    lease_until REAL,
    wake_at REAL,
    created_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS one_failover_in_flight ON failovers(pair)
    WHERE step NOT IN ('done', 'aborted', 'failed');
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS faults (
    pair TEXT NOT NULL,
    source TEXT NOT NULL,
    ref TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at REAL NOT NULL,
    error TEXT NOT NULL,
    quarantined INTEGER NOT NULL DEFAULT 0,
    first_at REAL NOT NULL,
    PRIMARY KEY (pair, source, ref)
);
CREATE TABLE IF NOT EXISTS observations (
    pair TEXT NOT NULL,
    node TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (pair, node)
);
CREATE TABLE IF NOT EXISTS observe_schedule (
    pair TEXT PRIMARY KEY,
    next_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS journal (
    failover_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    step TEXT NOT NULL,
    phase TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (failover_id, seq)
);
"""

_TERMINAL = ("done", "aborted", "failed")
BACKOFF_BASE = 2.0  # seconds before the first retry of a failed unit of work
BACKOFF_MAX = 300.0


def backoff(attempts: int) -> float:
    """Seconds to wait after `attempts` failures: 2, 4, 8 ... up to 5 minutes."""
    return float(min(BACKOFF_MAX, BACKOFF_BASE * 2 ** max(0, attempts - 1)))


def _decode_state(raw: str) -> PairState:
    try:
        return PairState.from_json(json.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        raise StateUnreadable(f"stored state unreadable ({type(exc).__name__}: {exc})") from None


def _fault(row: Any) -> PairFault:
    return PairFault(
        pair=row[0],
        source=row[1],
        ref=row[2],
        attempts=int(row[3]),
        next_at=float(row[4]),
        error=row[5],
        quarantined=bool(row[6]),
        first_at=float(row[7]),
    )


def _notification(row: Any) -> StoredNotification:
    alerts = tuple(Alert.from_json(a) for a in json.loads(row[6]))
    note = Notification(
        receiver=row[2],
        status=row[4],
        group_key=row[3],
        alerts=alerts,
        truncated_alerts=row[5],
        external_url="",
    )
    return StoredNotification(id=row[0], received_at=row[1], notification=note)


class _Txn:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        self._c.execute("SAVEPOINT unit")
        try:
            yield
        except BaseException:
            self._c.execute("ROLLBACK TO unit")
            self._c.execute("RELEASE unit")
            raise
        else:
            self._c.execute("RELEASE unit")

    def load_pair(self, pair: str) -> PairState | None:
        row = self._c.execute("SELECT state FROM pairs WHERE pair = ?", (pair,)).fetchone()
        return _decode_state(row[0]) if row else None

    def load_notification(self, notification_id: int) -> StoredNotification | None:
        row = self._c.execute(
            "SELECT id, received_at, receiver, group_key, status, truncated, alerts "
            "FROM notifications WHERE id = ?",
            (notification_id,),
        ).fetchone()
        return _notification(row) if row else None

    def record_fault(
        self, pair: str, source: str, ref: str, error: str, now: float, *, max_attempts: int
    ) -> PairFault:
        row = self._c.execute(
            "SELECT pair, source, ref, attempts, next_at, error, quarantined, first_at FROM faults WHERE pair = ? AND source = ? AND ref = ?",
            (pair, source, ref),
        ).fetchone()
        attempts = (int(row[3]) if row else 0) + 1
        first_at = float(row[7]) if row else now
        quarantined = attempts >= max_attempts
        fault = PairFault(
            pair,
            source,
            ref,
            attempts,
            now + backoff(attempts),
            error[:2000],
            quarantined,
            first_at,
        )
        self._c.execute(
            "INSERT OR REPLACE INTO faults(pair, source, ref, attempts, next_at, error, quarantined, first_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (pair, source, ref, attempts, fault.next_at, fault.error, int(quarantined), first_at),
        )
        return fault

    def clear_fault(self, pair: str, source: str, ref: str) -> None:
        self._c.execute(
            "DELETE FROM faults WHERE pair = ? AND source = ? AND ref = ?", (pair, source, ref)
        )

    def save_pair(self, state: PairState) -> None:
        self._c.execute(
            "INSERT INTO pairs(pair, state) VALUES (?, ?) "
            "ON CONFLICT(pair) DO UPDATE SET state = excluded.state",
            (state.pair, json.dumps(state.to_json())),
        )

    def add_event(self, event: EventRecord) -> None:
        self._c.execute(
            "INSERT INTO events(ts, pair, kind, reason, node, failover_id, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                event.ts,
                event.pair,
                event.kind,
                event.reason,
                event.node,
                event.failover_id,
                json.dumps(dict(event.data)),
            ),
        )

    def take_notifications(self, limit: int) -> list[StoredNotification]:
        rows = self._c.execute(
            "SELECT id, received_at, receiver, group_key, status, truncated, alerts "
            "FROM notifications WHERE processed = 0 ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        out = [_notification(row) for row in rows]
        if rows:
            self._c.execute(
                "UPDATE notifications SET processed = 1 WHERE processed = 0 AND id <= ?",
                (rows[-1][0],),
            )
        return out

    def load_failover(self, failover_id: str) -> Failover | None:
        row = self._c.execute("SELECT doc FROM failovers WHERE id = ?", (failover_id,)).fetchone()
        return Failover.from_json(json.loads(row[0])) if row else None

    def insert_failover(self, failover: Failover) -> None:
        try:
            self._c.execute(
                "INSERT INTO failovers(id, pair, step, doc, created_at) VALUES (?, ?, ?, ?, ?)",
                (
                    failover.id,
                    failover.pair,
                    failover.step.value,
                    json.dumps(failover.to_json()),
                    failover.created_at,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise InFlightError(
                f"{failover.pair} already has a failover in flight (or id {failover.id} exists)"
            ) from exc

    def update_failover(self, failover: Failover, owner: str) -> None:
        cur = self._c.execute(
            "UPDATE failovers SET step = ?, doc = ?, wake_at = ? WHERE id = ? AND owner = ?",
            (
                failover.step.value,
                json.dumps(failover.to_json()),
                failover.wake_at,
                failover.id,
                owner,
            ),
        )
        if cur.rowcount != 1:
            raise LeaseLost(f"{owner} does not hold the lease of failover {failover.id}")
        if failover.step.terminal:
            self._c.execute(
                "UPDATE failovers SET owner = NULL, lease_until = NULL WHERE id = ?",
                (failover.id,),
            )

    def append_journal(
        self, failover_id: str, ts: float, step: str, phase: str, detail: Mapping[str, Any]
    ) -> None:
        self._c.execute(
            "INSERT INTO journal(failover_id, seq, ts, step, phase, detail) VALUES "
            "(?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM journal WHERE failover_id = ?), ?, ?, ?, ?)",
            (failover_id, failover_id, ts, step, phase, json.dumps(dict(detail))),
        )


class SqliteStore:
    """A Store in one SQLite file; safe for threads and for forked worker processes."""

    def __init__(self, path: Path | str, *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        conn = self._conn()
        conn.execute("PRAGMA journal_mode=WAL")
        with self._write(conn):
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(failovers)")}
            if "wake_at" not in columns:  # databases created before gated activation existed
                conn.execute("ALTER TABLE failovers ADD COLUMN wake_at REAL")

    def _conn(self) -> sqlite3.Connection:
        pid = os.getpid()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != pid:
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=True
            )
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            self._local.pid = pid
        return conn

    @contextmanager
    def _write(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[_Txn]:
        with self._write(self._conn()) as conn:
            yield _Txn(conn)

    def record_notification(self, received_at: float, notification: Notification, raw: str) -> int:
        with self._write(self._conn()) as conn:
            cur = conn.execute(
                "INSERT INTO notifications(received_at, receiver, group_key, status, truncated, "
                "alerts, raw) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    received_at,
                    notification.receiver,
                    notification.group_key,
                    notification.status,
                    notification.truncated_alerts,
                    json.dumps([a.to_json() for a in notification.alerts]),
                    raw,
                ),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def pending_notifications(self) -> int:
        row = self._conn().execute("SELECT COUNT(*) FROM notifications WHERE processed = 0")
        return int(row.fetchone()[0])

    def clock_anchor(self, boot_id: str, proposed: float) -> float:
        key = f"clock_offset:{boot_id}"
        with self._write(self._conn()) as conn:
            conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (key, repr(proposed))
            )
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return float(row[0])

    def _pair_rows(self) -> list[tuple[str, str]]:
        rows = self._conn().execute("SELECT pair, state FROM pairs ORDER BY pair").fetchall()
        return [(r[0], r[1]) for r in rows]

    def list_pairs(self) -> list[PairState]:
        states = []
        for _pair, raw in self._pair_rows():
            try:
                states.append(_decode_state(raw))
            except StateUnreadable:
                continue
        return states

    def unreadable_pairs(self) -> dict[str, str]:
        bad = {}
        for pair, raw in self._pair_rows():
            try:
                _decode_state(raw)
            except StateUnreadable as exc:
                bad[pair] = str(exc)
        return bad

    def list_faults(self, pair: str | None = None) -> list[PairFault]:
        query = (
            "SELECT pair, source, ref, attempts, next_at, error, quarantined, first_at FROM faults"
        )
        args: list[Any] = []
        if pair is not None:
            query += " WHERE pair = ?"
            args.append(pair)
        rows = self._conn().execute(query + " ORDER BY first_at", args).fetchall()
        return [_fault(r) for r in rows]

    def clear_faults(self, pair: str) -> int:
        with self._write(self._conn()) as conn:
            return conn.execute("DELETE FROM faults WHERE pair = ?", (pair,)).rowcount

    def save_observation(self, obs: NodeObservation) -> NodeObservation:
        with self._write(self._conn()) as conn:
            row = conn.execute(
                "SELECT doc FROM observations WHERE pair = ? AND node = ?", (obs.pair, obs.node)
            ).fetchone()
            quiet_since = None
            if obs.signing is False:
                before = NodeObservation.from_json(json.loads(row[0])) if row else None
                quiet_since = obs.at
                if before is not None and before.signing is False and before.quiet_since:
                    quiet_since = min(obs.at, before.quiet_since)
            stored = replace(obs, quiet_since=quiet_since)
            conn.execute(
                "INSERT OR REPLACE INTO observations(pair, node, doc) VALUES (?, ?, ?)",
                (obs.pair, obs.node, json.dumps(stored.to_json())),
            )
            return stored

    def observations(self, pair: str) -> dict[str, NodeObservation]:
        rows = (
            self._conn()
            .execute("SELECT node, doc FROM observations WHERE pair = ?", (pair,))
            .fetchall()
        )
        return {r[0]: NodeObservation.from_json(json.loads(r[1])) for r in rows}

    def claim_observation(self, pair: str, now: float, interval: float) -> bool:
        with self._write(self._conn()) as conn:
            row = conn.execute(
                "SELECT next_at FROM observe_schedule WHERE pair = ?", (pair,)
            ).fetchone()
            if row is not None and float(row[0]) > now and float(row[0]) - now <= interval:
                return False  # due later (a schedule far in the future came from another boot)
            conn.execute(
                "INSERT OR REPLACE INTO observe_schedule(pair, next_at) VALUES (?, ?)",
                (pair, now + interval),
            )
            return True

    def list_events(
        self, pair: str | None = None, limit: int = 100, before: int | None = None
    ) -> list[EventRecord]:
        query = "SELECT id, ts, pair, kind, reason, node, failover_id, data FROM events WHERE 1=1"
        args: list[Any] = []
        if pair is not None:
            query += " AND pair = ?"
            args.append(pair)
        if before is not None:
            query += " AND id < ?"
            args.append(before)
        query += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [
            EventRecord(
                id=r[0],
                ts=r[1],
                pair=r[2],
                kind=r[3],
                reason=r[4],
                node=r[5],
                failover_id=r[6],
                data=json.loads(r[7]),
            )
            for r in self._conn().execute(query, args).fetchall()
        ]

    def get_failover(self, failover_id: str) -> Failover | None:
        row = (
            self._conn()
            .execute("SELECT doc FROM failovers WHERE id = ?", (failover_id,))
            .fetchone()
        )
        return Failover.from_json(json.loads(row[0])) if row else None

    def list_failovers(self, pair: str | None = None, limit: int = 20) -> list[Failover]:
        query = "SELECT doc FROM failovers"
        args: list[Any] = []
        if pair is not None:
            query += " WHERE pair = ?"
            args.append(pair)
        query += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        args.append(limit)
        rows = self._conn().execute(query, args).fetchall()
        return [Failover.from_json(json.loads(r[0])) for r in rows]

    def journal(self, failover_id: str) -> list[JournalEntry]:
        rows = (
            self._conn()
            .execute(
                "SELECT seq, ts, step, phase, detail FROM journal WHERE failover_id = ? ORDER BY seq",
                (failover_id,),
            )
            .fetchall()
        )
        return [JournalEntry(failover_id, r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def claim_failover(
        self,
        owner: str,
        now: float,
        lease: float,
        failover_id: str | None = None,
        pairs: Collection[str] | None = None,
    ) -> Failover | None:
        with self._write(self._conn()) as conn:
            query = (
                "SELECT id, doc FROM failovers WHERE step NOT IN (?, ?, ?) "
                "AND (owner IS NULL OR lease_until < ?)"
            )
            args: list[Any] = [*_TERMINAL, now]
            if pairs is not None:
                names = sorted(pairs)
                query += f" AND pair IN ({', '.join('?' for _ in names)})"
                args.extend(names)
            if failover_id is None:
                query += " AND (wake_at IS NULL OR wake_at <= ?)"
                args.append(now)
            else:
                query += " AND id = ?"
                args.append(failover_id)
            row = conn.execute(query + " ORDER BY created_at LIMIT 1", args).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE failovers SET owner = ?, lease_until = ? WHERE id = ?",
                (owner, now + lease, row[0]),
            )
            return Failover.from_json(json.loads(row[1]))

    def renew_lease(self, failover_id: str, owner: str, until: float) -> bool:
        with self._write(self._conn()) as conn:
            cur = conn.execute(
                "UPDATE failovers SET lease_until = ? WHERE id = ? AND owner = ?",
                (until, failover_id, owner),
            )
            return cur.rowcount == 1

    def release_lease(self, failover_id: str, owner: str) -> None:
        with self._write(self._conn()) as conn:
            conn.execute(
                "UPDATE failovers SET owner = NULL, lease_until = NULL WHERE id = ? AND owner = ?",
                (failover_id, owner),
            )

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def inspect_states(path: Path) -> tuple[dict[str, PairState], dict[str, tuple[str | None, str]]]:
    """Pair states and unfinished failovers (source, target) of a database, read-only."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        states = {}
        for pair, raw in conn.execute("SELECT pair, state FROM pairs").fetchall():
            try:
                states[pair] = _decode_state(raw)
            except StateUnreadable:
                continue
        unfinished = {}
        rows = conn.execute(
            "SELECT pair, doc FROM failovers WHERE step NOT IN (?, ?, ?)", _TERMINAL
        ).fetchall()
        for pair, doc in rows:
            f = Failover.from_json(json.loads(doc))
            unfinished[pair] = (f.source, f.target)
        return states, unfinished
    finally:
        conn.close()
