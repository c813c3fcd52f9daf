"""SQLite implementation of the Store: one file in state_dir, WAL, BEGIN IMMEDIATE.

Connections are per thread and per process (safe across gunicorn's fork); BEGIN IMMEDIATE
takes the write lock up front, so read-decide-write sequences are serialised across workers.

The store remembers which file it opened (device and inode). A file deleted or replaced under
a running responder keeps working through the connections already open, but everything written
to it is gone on the next start: before every write, after recording a delivery and in the
health check, the path is compared with the file opened, and StoreReplaced is raised on any
difference. The database is created only when the store is constructed, never re-created
behind the back of a running one.

The schema has a version (`PRAGMA user_version`). Opening the store applies the migrations
the file lacks, in order, in the same transaction that records the new version; a file from
a newer responder is refused (SchemaTooNew) rather than used by code that does not know it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from ..alerts import Alert, Notification
from ..failover import Failover
from ..observation import NodeObservation
from ..state import PairState
from . import (
    EventRecord,
    InFlightError,
    JournalEntry,
    LeaseLost,
    PairFault,
    PruneCounts,
    StateUnreadable,
    StoredNotification,
    StoreReplaced,
)
from .locks import WriterLock

log = logging.getLogger("responder.store")
T = TypeVar("T")

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
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
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
CREATE TABLE IF NOT EXISTS reports (
    pair TEXT NOT NULL,
    kind TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (pair, kind)
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


class SchemaTooNew(RuntimeError):
    """The database was written by a newer responder, whose schema this one does not know.

    Using it anyway could misread its rows or drop what the newer version records, so the
    store refuses to open it: run the newer version again, or restore a backup from before.
    """


def _has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return column in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _baseline(conn: sqlite3.Connection) -> None:
    """Version 1: every table of SCHEMA, and failovers.wake_at (gated activation).

    Databases from before schema versions (user_version 0) may lack later tables and the
    wake_at column; a new database is created by this same step.
    """
    for statement in SCHEMA.split(";"):
        if "notifications_unprocessed" in statement and not _has_column(
            conn, "notifications", "processed"
        ):
            continue  # a file of version 4 or later stamped 0: its queue is a table
        if statement.strip():
            conn.execute(statement)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(failovers)")}
    if "wake_at" not in columns:
        conn.execute("ALTER TABLE failovers ADD COLUMN wake_at REAL")


def _compact_deliveries(conn: sqlite3.Connection) -> None:
    """Version 2: a delivery keeps only what the responder acts on (alerts' status,
    fingerprint, startsAt, labels) in `alerts`, not the whole body beside it (`raw` goes)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(notifications)")}
    if "raw" in columns:
        conn.execute("ALTER TABLE notifications DROP COLUMN raw")


def _pair_deadlines(conn: sqlite3.Connection) -> None:
    """Version 3: each pair's deadline in a column of its own, so the loop finds the due
    pairs with one indexed query instead of decoding every pair's state."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(pairs)")}
    if "deadline" not in columns:
        conn.execute("ALTER TABLE pairs ADD COLUMN deadline REAL")
    conn.execute(
        "UPDATE pairs SET deadline = CASE WHEN json_valid(state) "
        "THEN json_extract(state, '$.deadline') END"
    )
    conn.execute("CREATE INDEX IF NOT EXISTS pairs_deadline ON pairs(deadline)")


def _pending_queue(conn: sqlite3.Connection) -> None:
    """Version 4: the deliveries still to apply are ids in a table of their own. A flag in
    the delivery's row made applying one rewrite the whole row (its alerts, hundreds of
    kilobytes for a big group), a second full write of every delivery."""
    conn.execute("CREATE TABLE IF NOT EXISTS pending_notifications (id INTEGER PRIMARY KEY)")
    if _has_column(conn, "notifications", "processed"):
        conn.execute(
            "INSERT OR IGNORE INTO pending_notifications(id) "
            "SELECT id FROM notifications WHERE processed = 0"
        )
        conn.execute("DROP INDEX IF EXISTS notifications_unprocessed")
        conn.execute("ALTER TABLE notifications DROP COLUMN processed")


# The schema versions in order: MIGRATIONS[n - 1] brings a database from version n - 1 to n.
# SCHEMA above is version 1's shape and stays as it is; a change to the schema is a new
# function appended here (never an edit of an old one), and every database, new or old, is
# brought to the last version by the same steps on open.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _baseline,
    _compact_deliveries,
    _pair_deadlines,
    _pending_queue,
)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    """The database's schema version (`PRAGMA user_version`; 0 before versions existed)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: Path | str) -> int:
    """Bring the database to SCHEMA_VERSION; return the version it had. Call inside a write
    transaction, so that the steps and the new version commit together or not at all."""
    found = schema_version(conn)
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the database {path} has schema version {found}, newer than {SCHEMA_VERSION}, the "
            "latest this responder knows: a newer responder wrote it. Run that version (or a "
            "newer one), or restore a backup taken before the upgrade; this one will not use it"
        )
    if found == SCHEMA_VERSION:
        return found
    for version in range(found + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[version - 1](conn)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
    log.info("state database %s: schema version %d -> %d", path, found, SCHEMA_VERSION)
    return found


_TERMINAL = ("done", "aborted", "failed")
BACKOFF_BASE = 2.0  # seconds before the first retry of a failed unit of work
BACKOFF_MAX = 300.0
OPEN_TIMEOUT = 30.0  # seconds a starting store retries a database another process has locked


def _transient(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds a lock it will release."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _retry_locked(action: Callable[[], T], timeout: float, what: str) -> T:
    """Run `action`, retrying with jittered backoff while the database is locked or busy.

    Some lock conflicts are reported at once, without SQLite's busy handler: converting a new
    database to WAL while another process opens it, or reading it during another's recovery.
    Several gunicorn workers starting together meet exactly these.
    """
    deadline = time.monotonic() + timeout
    delay = 0.01
    attempts = 0
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            attempts += 1
            left = deadline - time.monotonic()
            if not _transient(exc) or left <= 0:
                if _transient(exc):
                    raise sqlite3.OperationalError(
                        f"{what}: {exc} for {timeout:g}s ({attempts} attempts); another process "
                        "keeps the database locked"
                    ) from exc
                raise
            if attempts == 1 or attempts % 20 == 0:
                log.warning("%s: %s; retrying (attempt %d)", what, exc, attempts)
            time.sleep(min(left, delay * random.uniform(0.5, 1.0)))  # noqa: S311 (jitter)
            delay = min(delay * 2, 1.0)


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


_SQL_VARS = 500  # ids per statement, far below SQLite's limit (32,766 since 3.32)

# A delivery's alerts as stored: [status, labels, startsAt, fingerprint] each (Alert's own
# field order), compact JSON, encoded and decoded in C.
_ALERTS_DECODER = msgspec.json.Decoder(list[Alert])
_ENCODER = msgspec.json.Encoder()


def encode_alerts(alerts: Collection[Alert]) -> str:
    return _ENCODER.encode(list(alerts)).decode("utf-8")


def decode_alerts(text: str) -> tuple[Alert, ...]:
    """Both forms: compact rows, and the objects of databases from before version 2."""
    if text.startswith("[["):
        return tuple(_ALERTS_DECODER.decode(text))
    return tuple(Alert.from_json(a) for a in json.loads(text))


def _notification(row: Any) -> StoredNotification:
    alerts = decode_alerts(row[6])
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

    @property
    def conn(self) -> sqlite3.Connection:
        return self._c

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

    def save_observation(self, obs: NodeObservation) -> NodeObservation:
        row = self._c.execute(
            "SELECT doc FROM observations WHERE pair = ? AND node = ?", (obs.pair, obs.node)
        ).fetchone()
        quiet_since = None
        if obs.signing is False:
            before = NodeObservation.from_json(json.loads(row[0])) if row else None
            quiet_since = obs.at
            if before is not None and before.signing is False and before.quiet_since:
                quiet_since = min(obs.at, before.quiet_since)
        stored = replace(obs, quiet_since=quiet_since)
        self._c.execute(
            "INSERT OR REPLACE INTO observations(pair, node, doc) VALUES (?, ?, ?)",
            (obs.pair, obs.node, json.dumps(stored.to_json())),
        )
        return stored

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
            "INSERT INTO pairs(pair, state, deadline) VALUES (?, ?, ?) "
            "ON CONFLICT(pair) DO UPDATE SET state = excluded.state, deadline = excluded.deadline",
            (state.pair, json.dumps(state.to_json()), state.deadline),
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

    def claim_notifications(self, ids: Collection[int]) -> set[int]:
        ids = list(ids)
        claimed: set[int] = set()
        for start in range(0, len(ids), _SQL_VARS):  # within SQLite's variable limit
            part = ids[start : start + _SQL_VARS]
            marks = ",".join("?" * len(part))
            rows = self._c.execute(
                f"DELETE FROM pending_notifications WHERE id IN ({marks}) RETURNING id",  # noqa: S608 (only ? marks)
                part,
            ).fetchall()
            claimed.update(int(r[0]) for r in rows)
        return claimed

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


class _Entry:
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[_Txn], Any]) -> None:
        self.fn = fn
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class _GroupCommit:
    """Group commit without a thread of its own: the first caller to find no commit under
    way runs every unit queued so far in one transaction, each in a savepoint of its own (a
    unit that raises is undone alone, as its own transaction would be), commits once, and
    answers each caller only then. Writers queued while a commit is under way form the next.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[_Entry] = []
        self._writing = False

    def submit(self, fn: Callable[[_Txn], T], commit: Callable[[list[_Entry]], None]) -> T:
        entry = _Entry(fn)
        with self._cond:
            self._queue.append(entry)
            while self._writing and not entry.done:
                self._cond.wait()
            lead = not entry.done  # nobody is writing and ours is still queued
            if lead:
                batch, self._queue, self._writing = self._queue, [], True
        if lead:
            try:
                commit(batch)
            except BaseException as exc:
                for e in batch:
                    if e.error is None:
                        e.error = exc
                        e.result = None
            finally:
                with self._cond:
                    for e in batch:
                        e.done = True
                    self._writing = False
                    self._cond.notify_all()
        if entry.error is not None:
            raise entry.error
        result: T = entry.result
        return result


class SqliteStore:
    """A Store in one SQLite file; safe for threads and for forked worker processes."""

    def __init__(
        self, path: Path | str, *, busy_timeout: float = 30.0, open_timeout: float = OPEN_TIMEOUT
    ) -> None:
        """Open the database, creating it on the first start only; retry while it is locked.

        A database that existed here once (its marker file says so) and is gone now is not
        created again: StoreReplaced says what happened and what to do.
        """
        self.path = Path(path)
        self.marker = self.path.with_name(f".{self.path.name}.created")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        # Writers queue on the writer lock (a thread lock, then an flock) and only then take
        # SQLite's write lock, which is therefore free: no polling in SQLite's busy handler.
        self.lockfile = self.path.with_name(f".{self.path.name}.lock")
        self._lock = WriterLock(self.lockfile)
        self._group = _GroupCommit()
        self._identity: tuple[int, int] | None = None
        # the marker is looked at before the database: a concurrent first start writes it only
        # after the database exists, so "marker, no database" always means a lost database
        if self.marker.exists() and not self.path.exists():
            raise StoreReplaced(
                f"the database {self.path} is missing, but one was created here before "
                f"({self.marker} says when): it was deleted or moved, and starting from an "
                "empty one would forget which node signs, fenced nodes and failovers in flight. "
                f"Restore it, or delete {self.marker} to start from an empty database"
            )
        _retry_locked(self._open, open_timeout, f"opening {self.path}")
        self._mark_created()

    def _mark_created(self) -> None:
        try:
            fd = os.open(self.marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(
                f"{self.path.name} was first opened here at "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}. While this file exists, "
                "the responder refuses to start without that database instead of silently "
                "creating an empty one. Delete this file only to start from an empty database.\n"
            )

    def _open(self) -> None:
        try:
            conn = self._conn()
            conn.execute("PRAGMA journal_mode=WAL")
            with self._write(conn):
                migrate(conn, self.path)
        except BaseException:
            self.close()  # a fresh connection for the next attempt
            raise

    def _stat(self) -> tuple[int, int]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise StoreReplaced(
                f"the database {self.path} was deleted while the responder had it open; "
                "nothing can be recorded durably any more: restore the file and restart the "
                f"responder (it refuses to start without it while {self.marker.name} exists)"
            ) from None
        return st.st_dev, st.st_ino

    def check_file(self) -> None:
        """Raise StoreReplaced unless `path` is still the file this store opened."""
        if self._identity is None:
            return  # still opening: the file is being created
        found = self._stat()
        if found != self._identity:
            raise StoreReplaced(
                f"the database {self.path} was replaced while the responder had it open "
                f"(opened device:inode {self._identity[0]}:{self._identity[1]}, now "
                f"{found[0]}:{found[1]}); refusing to record anything: restart the responder "
                "once the right file is in place"
            )

    def _conn(self) -> sqlite3.Connection:
        pid = os.getpid()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != pid:
            if self._identity is None:
                target: str = str(self.path)  # opening the store: create the file if absent
                uri = False
            else:
                self.check_file()  # never re-create a file deleted under a running store
                quoted = urllib.parse.quote(os.path.abspath(self.path))
                target, uri = f"file:{quoted}?mode=rw", True
            conn = sqlite3.connect(
                target,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=True,
                uri=uri,
            )
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            if self._identity is None:
                self._identity = self._stat()
            self._local.conn = conn
            self._local.pid = pid
        return conn

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """The right to write, in this thread, against every thread and process of this
        store (see locks.py)."""
        with self._lock.held():
            yield

    @contextmanager
    def _write(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        self.check_file()
        with self._exclusive():
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

    def record_notification(self, received_at: float, notification: Notification) -> int:
        """Group commit: deliveries arriving while one commit is under way are written
        together in the next, each caller answered only once its own commit is durable."""
        row = (
            received_at,
            notification.receiver,
            notification.group_key,
            notification.status,
            notification.truncated_alerts,
            encode_alerts(notification.alerts),
        )

        def insert(txn: _Txn) -> int:
            cur = txn.conn.execute(
                "INSERT INTO notifications(received_at, receiver, group_key, status, "
                "truncated, alerts) VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )
            assert cur.lastrowid is not None
            txn.conn.execute("INSERT INTO pending_notifications(id) VALUES (?)", (cur.lastrowid,))
            return cur.lastrowid

        return self.batched(insert)

    def batched(self, fn: Callable[[_Txn], T]) -> T:
        """Run `fn` in a transaction shared with other threads' units (group commit);
        returns once it is durable. Same outcome as `with transaction() as txn: fn(txn)`."""
        return self._group.submit(fn, self._commit_group)

    def _commit_group(self, batch: list[_Entry]) -> None:
        with self._write(self._conn()) as conn:
            txn = _Txn(conn)
            for entry in batch:
                conn.execute("SAVEPOINT unit")
                try:
                    entry.result = entry.fn(txn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO unit")
                    entry.error = exc
                finally:
                    conn.execute("RELEASE unit")
        self.check_file()  # committed, but to the file that is still there? else no 2xx

    def pending_notifications(self) -> int:
        self.check_file()
        row = self._conn().execute("SELECT COUNT(*) FROM pending_notifications")
        return int(row.fetchone()[0])

    def peek_notifications(
        self, limit: int, known: Mapping[int, Notification] | None = None
    ) -> list[StoredNotification]:
        self.check_file()
        rows = (
            self._conn()
            .execute(
                "SELECT n.id, n.received_at, n.receiver, n.group_key, n.status, n.truncated, "
                "n.alerts FROM pending_notifications p JOIN notifications n ON n.id = p.id "
                "ORDER BY p.id LIMIT ?",
                (limit,),
            )
            .fetchall()
        )
        known = known or {}
        return [
            StoredNotification(row[0], row[1], known[row[0]])
            if row[0] in known
            else _notification(row)
            for row in rows
        ]

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

    def get_pair(self, pair: str) -> PairState | None:
        row = self._conn().execute("SELECT state FROM pairs WHERE pair = ?", (pair,)).fetchone()
        if row is None:
            return None
        try:
            return _decode_state(row[0])
        except StateUnreadable:
            return None

    def due_pairs(self, now: float, pairs: Collection[str]) -> list[PairState]:
        wanted = set(pairs)
        rows = (
            self._conn()
            .execute(
                "SELECT pair, state FROM pairs WHERE deadline IS NOT NULL AND deadline <= ? "
                "ORDER BY deadline",
                (now,),
            )
            .fetchall()
        )
        states = []
        for pair, raw in rows:
            if pair not in wanted:
                continue
            try:
                states.append(_decode_state(raw))
            except StateUnreadable:
                continue
        return states

    def next_deadline(self, pairs: Collection[str]) -> float | None:
        wanted = set(pairs)
        rows = self._conn().execute(
            "SELECT pair, deadline FROM pairs WHERE deadline IS NOT NULL ORDER BY deadline"
        )
        for pair, deadline in rows:
            if pair in wanted:
                return float(deadline)
        return None

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
        return self.batched(lambda txn: txn.save_observation(obs))

    def observations(self, pair: str) -> dict[str, NodeObservation]:
        rows = (
            self._conn()
            .execute("SELECT node, doc FROM observations WHERE pair = ?", (pair,))
            .fetchall()
        )
        return {r[0]: NodeObservation.from_json(json.loads(r[1])) for r in rows}

    def claim_observation(self, pair: str, now: float, interval: float) -> bool:
        return self.claim_schedule(pair, now, interval)

    def claim_schedule(self, key: str, now: float, interval: float) -> bool:
        return key in self.claim_schedules([(key, interval)], now)

    def claim_schedules(self, schedules: Collection[tuple[str, float]], now: float) -> set[str]:
        def claim(txn: _Txn) -> set[str]:
            claimed = set()
            for key, interval in schedules:
                row = txn.conn.execute(
                    "SELECT next_at FROM observe_schedule WHERE pair = ?", (key,)
                ).fetchone()
                if row is not None and float(row[0]) > now and float(row[0]) - now <= interval:
                    continue  # due later (a schedule far in the future came from another boot)
                txn.conn.execute(
                    "INSERT OR REPLACE INTO observe_schedule(pair, next_at) VALUES (?, ?)",
                    (key, now + interval),
                )
                claimed.add(key)
            return claimed

        return self.batched(claim)

    def save_report(self, pair: str, kind: str, doc: Mapping[str, Any]) -> None:
        with self._write(self._conn()) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO reports(pair, kind, doc) VALUES (?, ?, ?)",
                (pair, kind, json.dumps(dict(doc))),
            )

    def reports(self, pair: str) -> dict[str, dict[str, Any]]:
        rows = (
            self._conn().execute("SELECT kind, doc FROM reports WHERE pair = ?", (pair,)).fetchall()
        )
        out: dict[str, dict[str, Any]] = {}
        for kind, doc in rows:
            try:
                out[kind] = json.loads(doc)
            except ValueError:
                continue  # a damaged report is shown as absent; the next round rewrites it
        return out

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

    def claim_failovers(
        self, owner: str, now: float, lease: float, pairs: Collection[str], limit: int
    ) -> list[Failover]:
        wanted = set(pairs)
        claimed: list[Failover] = []
        runnable = (
            self._conn()
            .execute(  # most loops find none: no write lock for that
                "SELECT 1 FROM failovers INDEXED BY one_failover_in_flight "
                "WHERE step NOT IN ('done', 'aborted', 'failed') "
                "AND (owner IS NULL OR lease_until < ?) AND (wake_at IS NULL OR wake_at <= ?) LIMIT 1",
                (now, now),
            )
            .fetchone()
        )
        if runnable is None:
            return claimed
        with self._write(self._conn()) as conn:
            rows = conn.execute(
                # the literal list lets SQLite use the partial index of unfinished failovers
                "SELECT id, pair, doc FROM failovers INDEXED BY one_failover_in_flight "
                "WHERE step NOT IN ('done', 'aborted', 'failed') "
                "AND (owner IS NULL OR lease_until < ?) AND (wake_at IS NULL OR wake_at <= ?) "
                "ORDER BY created_at",
                (now, now),
            ).fetchall()
            for fid, pair, doc in rows:
                if pair not in wanted:
                    continue
                conn.execute(
                    "UPDATE failovers SET owner = ?, lease_until = ? WHERE id = ?",
                    (owner, now + lease, fid),
                )
                claimed.append(Failover.from_json(json.loads(doc)))
                if len(claimed) >= limit:
                    break
        return claimed

    def renew_leases(self, failover_ids: Collection[str], owner: str, until: float) -> set[str]:
        held = set()
        with self._write(self._conn()) as conn:
            for fid in failover_ids:
                cur = conn.execute(
                    "UPDATE failovers SET lease_until = ? WHERE id = ? AND owner = ?",
                    (until, fid, owner),
                )
                if cur.rowcount == 1:
                    held.add(fid)
        return held

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
        """See Store.prune. Each batch is its own short write transaction."""
        since_responder = now_wall if now_responder is None else now_responder
        note_cutoff = since_responder - notifications
        event_cutoff = now_wall - events
        failover_cutoff = now_wall - failovers
        more = False

        def drain(delete: Callable[[sqlite3.Connection], int]) -> int:
            nonlocal more
            total, rounds = 0, 0
            while True:
                if max_batches is not None and rounds >= max_batches:
                    more = True
                    return total
                with self._write(self._conn()) as conn:
                    n = delete(conn)
                total, rounds = total + n, rounds + 1
                if n < batch:
                    return total

        def old_notifications(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM notifications WHERE id IN (SELECT n.id FROM notifications n "
                "WHERE n.received_at < ? AND NOT EXISTS (SELECT 1 FROM pending_notifications p "
                "WHERE p.id = n.id) AND NOT EXISTS (SELECT 1 FROM faults f "
                "WHERE f.source = 'notification' AND f.ref = CAST(n.id AS TEXT)) "
                "ORDER BY n.id LIMIT ?)",
                (note_cutoff, batch),
            ).rowcount

        def old_events(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM events WHERE id IN "
                "(SELECT id FROM events WHERE ts < ? ORDER BY ts LIMIT ?)",
                (event_cutoff, batch),
            ).rowcount

        journal = 0

        def old_failovers(conn: sqlite3.Connection) -> int:
            nonlocal journal
            named: set[str] = set()  # a pair's state still points at these: status shows them
            unreadable: set[str] = set()
            for pair, raw in conn.execute("SELECT pair, state FROM pairs").fetchall():
                try:
                    named.add(str(json.loads(raw)["failover_id"]))
                except (ValueError, KeyError, TypeError):
                    unreadable.add(pair)  # cannot tell which it names: keep all of the pair's
            rows = conn.execute(
                "SELECT id, pair, doc FROM failovers WHERE step IN (?, ?, ?) AND created_at < ? "
                "ORDER BY created_at",
                (*_TERMINAL, failover_cutoff),
            ).fetchall()
            doomed: list[str] = []
            for fid, pair, doc in rows:
                if fid in named or pair in unreadable:
                    continue
                try:
                    updated = float(json.loads(doc)["updated_at"])
                except (ValueError, KeyError, TypeError):
                    continue  # unreadable record: keep it for a human
                if updated < failover_cutoff:
                    doomed.append(fid)
                if len(doomed) >= batch:
                    break
            for fid in doomed:
                journal += conn.execute(
                    "DELETE FROM journal WHERE failover_id = ?", (fid,)
                ).rowcount
                conn.execute(
                    "DELETE FROM failovers WHERE id = ? AND step IN (?, ?, ?)", (fid, *_TERMINAL)
                )
            return len(doomed)

        pruned_notifications = drain(old_notifications)
        pruned_events = drain(old_events)
        pruned_failovers = drain(old_failovers)  # counts `journal` as it goes
        return PruneCounts(
            notifications=pruned_notifications,
            events=pruned_events,
            failovers=pruned_failovers,
            journal=journal,
            more=more,
        )

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        self._lock.close()


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
