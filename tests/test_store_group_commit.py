"""Writers queue for the store instead of polling it, and deliveries share durable commits."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from responder.alerts import Alert, Notification
from responder.store import EventRecord
from responder.store.sqlite import SqliteStore, _Entry, _GroupCommit

T0 = 1_700_000_000.0


def _note(fingerprint: str) -> Notification:
    alert = Alert(
        "firing", {"alertname": "PeersLow", "node": "node-a"}, "2026-11-25T18:28:07Z", fingerprint
    )
    return Notification("responder", "firing", "g", (alert,), 0, "")


def _wait_until(predicate: Any, what: str) -> None:
    """Threads reaching a state (not logic): bounded, fails loudly."""
    end = time.monotonic() + 10
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def test_units_queued_during_a_commit_share_the_next_one() -> None:
    """While one commit is under way, later units queue; the next commit runs them all at
    once, and each caller gets its own result only after that commit."""
    group = _GroupCommit()
    release = threading.Event()
    sizes: list[int] = []

    def commit(batch: list[Any]) -> None:
        sizes.append(len(batch))
        if len(sizes) == 1:
            release.wait(10)
        for entry in batch:
            entry.result = entry.fn(None)

    results: dict[str, str] = {}

    def submit(name: str) -> None:
        results[name] = group.submit(lambda _txn: name.upper(), commit)

    first = threading.Thread(target=submit, args=("a",))
    first.start()
    _wait_until(lambda: len(sizes) == 1, "the first commit to start")
    others = [threading.Thread(target=submit, args=(n,)) for n in ("b", "c", "d")]
    for t in others:
        t.start()
    _wait_until(lambda: len(group._queue) == 3, "three units to queue")
    assert results == {}  # nobody is answered before their commit
    release.set()
    for t in [first, *others]:
        t.join(10)
    assert sizes == [1, 3]
    assert results == {"a": "A", "b": "B", "c": "C", "d": "D"}


def test_a_failed_commit_fails_every_unit_in_it() -> None:
    """No unit of a commit that failed is acknowledged; the next submit writes afresh."""
    group = _GroupCommit()

    def broken(batch: list[Any]) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    def works(batch: list[Any]) -> None:
        for entry in batch:
            entry.result = entry.fn(None)

    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        group.submit(lambda _txn: 1, broken)
    assert group.submit(lambda _txn: 7, works) == 7


def test_a_unit_that_raises_is_undone_alone(tmp_path: Path) -> None:
    """In a shared commit, a unit that raises leaves nothing behind and gets its error; the
    units beside it are committed."""
    store = SqliteStore(tmp_path / "s.sqlite3")

    def good(txn: Any) -> int:
        txn.add_event(EventRecord(T0, "mainnet-a", "note", "kept"))
        return 1

    def bad(txn: Any) -> int:
        txn.add_event(EventRecord(T0, "mainnet-a", "note", "undone"))
        raise ValueError("this unit fails")

    units = [_Entry(good), _Entry(bad), _Entry(good)]
    store._commit_group(units)  # one transaction, as a leader runs a queued batch
    assert [u.result for u in units] == [1, None, 1]
    assert isinstance(units[1].error, ValueError)
    assert units[0].error is None and units[2].error is None
    assert [e.reason for e in store.list_events()] == ["kept", "kept"]
    assert store.batched(good) == 1


def test_concurrent_deliveries_are_all_durable_with_distinct_ids(tmp_path: Path) -> None:
    """16 threads recording at once: every id distinct, every row readable by another
    connection as soon as its call returned."""
    store = SqliteStore(tmp_path / "s.sqlite3")
    ids: list[int] = []
    lock = threading.Lock()
    unseen: list[int] = []

    def worker(n: int) -> None:
        check = sqlite3.connect(tmp_path / "s.sqlite3")
        for i in range(25):
            record_id = store.record_notification(T0, _note(f"{n}-{i}"))
            row = check.execute("SELECT id FROM notifications WHERE id = ?", (record_id,))
            if row.fetchone() is None:
                with lock:
                    unseen.append(record_id)
            with lock:
                ids.append(record_id)
        check.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert unseen == []
    assert len(ids) == len(set(ids)) == 400
    assert store.pending_notifications() == 400
    taken = store.peek_notifications(1000)
    assert sorted(s.notification.alerts[0].fingerprint for s in taken) == sorted(
        f"{n}-{i}" for n in range(16) for i in range(25)
    )


def _hammer(path: str, worker: int, n: int, errors: Any, start: Any) -> None:
    store = SqliteStore(path, busy_timeout=0.0)  # SQLite's own waiting is off
    start.wait(30)
    try:
        for i in range(n):
            with store.transaction() as txn:
                txn.add_event(EventRecord(T0, "mainnet-a", "note", f"{worker}-{i}"))
    except Exception as exc:
        errors.put(f"{type(exc).__name__}: {exc}")
    finally:
        store.close()


def test_writers_of_several_processes_queue_rather_than_collide(tmp_path: Path) -> None:
    """With SQLite's busy wait switched off, three processes writing at once never meet a
    locked database: they queue on the store's lock file."""
    path = str(tmp_path / "s.sqlite3")
    SqliteStore(path).close()
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    start = ctx.Barrier(3)
    procs = [ctx.Process(target=_hammer, args=(path, w, 400, errors, start)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
    assert all(p.exitcode == 0 for p in procs)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1200
    finally:
        conn.close()


def test_schedules_are_claimed_together_and_by_one_store_per_interval(tmp_path: Path) -> None:
    """Several rounds' schedules are claimed in one call; a second process asking within the
    interval gets none of them, and after it each key is due again."""
    path = tmp_path / "s.sqlite3"
    first, second = SqliteStore(path), SqliteStore(path)
    rounds = [("mainnet-a", 10.0), ("readiness:mainnet-a", 60.0), ("drill:mainnet-a", 3600.0)]
    assert first.claim_schedules(rounds, T0) == {k for k, _ in rounds}
    assert second.claim_schedules(rounds, T0 + 5) == set()
    assert second.claim_schedules(rounds, T0 + 10) == {"mainnet-a"}
    assert first.claim_schedules(rounds, T0 + 61) == {"mainnet-a", "readiness:mainnet-a"}
