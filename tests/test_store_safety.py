"""The store never acknowledges what it cannot keep, and a locked database never stops start-up."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from responder.store import StoreReplaced
from responder.store.sqlite import SqliteStore
from tests.conftest import WEBHOOK_TOKEN, Harness, alert, notification
from tests.serverproc import ServerProcess

SUFFIXES = ("", "-wal", "-shm")


def delete_database(path: Path) -> None:
    """Remove the database and its WAL files, as a mistaken cleanup would."""
    for suffix in SUFFIXES:
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def replace_database(path: Path) -> None:
    """Move a different, valid responder database into place, as restoring a backup would."""
    other = path.parent / "other.sqlite3"
    SqliteStore(other).close()
    for suffix in SUFFIXES[1:]:  # the old WAL would be replayed onto the new file
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    os.replace(other, path)


def stored_notifications(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM notifications").fetchone()[0])
    finally:
        conn.close()


# ---- deleted or replaced under a running responder ------------------------------------------


def test_deleted_database_under_the_app_answers_503_and_is_not_recreated(
    make_harness: Callable[..., Harness],
) -> None:
    """Deliveries and /healthz answer 503 once the database files are deleted, and no file reappears."""
    h = make_harness()
    path = h.config.db_path
    first = h.post_alert(notification(alert()))
    assert first.status_code == 200
    assert h.client.get("/healthz").status_code == 200

    delete_database(path)
    codes = [h.post_alert(notification(alert(fingerprint=f"fp-{i}"))).status_code for i in range(5)]
    health = h.client.get("/healthz")

    assert codes == [503] * 5
    assert health.status_code == 503
    assert "StoreReplaced" in health.get_json()["error"]
    with pytest.raises(StoreReplaced, match="was deleted"):
        h.responder.process_notifications()
    assert not any(Path(f"{path}{s}").exists() for s in SUFFIXES)


def test_replaced_database_under_the_app_answers_503_and_stays_untouched(
    make_harness: Callable[..., Harness],
) -> None:
    """A different SQLite file moved into place gets no write: deliveries and /healthz answer 503."""
    h = make_harness()
    path = h.config.db_path
    assert h.post_alert(notification(alert())).status_code == 200

    replace_database(path)
    codes = [h.post_alert(notification(alert(fingerprint=f"fp-{i}"))).status_code for i in range(5)]

    assert codes == [503] * 5
    assert h.client.get("/healthz").status_code == 503
    with pytest.raises(StoreReplaced, match="was replaced"):
        h.store.clock_anchor("another-boot", 1.0)
    assert stored_notifications(path) == 0


def test_new_thread_after_deletion_does_not_recreate_the_database(tmp_path: Path) -> None:
    """A thread's first use of the store after the file was deleted raises instead of creating a new file."""
    path = tmp_path / "db.sqlite3"
    store = SqliteStore(path)
    delete_database(path)
    errors: list[BaseException] = []

    def use() -> None:
        try:
            store.pending_notifications()
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=use)
    worker.start()
    worker.join()
    store.close()

    assert len(errors) == 1 and isinstance(errors[0], StoreReplaced)
    assert isinstance(errors[0], OSError) and str(path) in str(errors[0])
    assert not path.exists()


def test_store_refuses_to_recreate_a_database_that_existed(tmp_path: Path) -> None:
    """A store opened where its database was deleted raises instead of starting empty; a new directory starts."""
    path = tmp_path / "var" / "db.sqlite3"
    SqliteStore(path).close()
    delete_database(path)

    with pytest.raises(StoreReplaced, match="is missing, but one was created here before"):
        SqliteStore(path)
    assert not path.exists()

    (tmp_path / "var" / ".db.sqlite3.created").unlink()  # the operator chooses an empty start
    store = SqliteStore(path)
    assert store.pending_notifications() == 0
    store.close()


def _wait_for_workers(server: ServerProcess, count: int, timeout: float = 20.0) -> None:
    """Wait until `count` gunicorn workers have opened the store (real processes starting)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        started = re.findall(r'"msg": "worker \d+ started"', server.log_path.read_text())
        if len(started) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} workers did not start; log tail:\n{server.proc.tail()}")


def _post(server: ServerProcess, body: dict[str, Any]) -> int:
    resp = requests.post(
        server.url + "/webhook",
        data=json.dumps(body),
        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"},
        timeout=10,
    )
    return resp.status_code


@pytest.mark.e2e
@pytest.mark.parametrize("damage", ["deleted", "replaced"])
def test_damaged_database_under_gunicorn_acknowledges_nothing(
    server: ServerProcess, damage: str
) -> None:
    """Under gunicorn, a deleted or replaced database makes every delivery and /healthz answer 503."""
    path = server.config_path.parent / "var" / "responder.sqlite3"
    _wait_for_workers(server, 2)
    assert _post(server, notification(alert())) == 200

    if damage == "deleted":
        delete_database(path)
    else:
        replace_database(path)
    codes = [_post(server, notification(alert(fingerprint=f"fp-{i}"))) for i in range(20)]
    health = [requests.get(server.url + "/healthz", timeout=5).status_code for _ in range(6)]
    server.stop()

    assert codes == [503] * 20, server.proc.tail()
    assert health == [503] * 6
    if damage == "deleted":
        assert not path.exists()
    else:
        assert stored_notifications(path) == 0


# ---- start-up against a locked database -----------------------------------------------------


def _hold_lock(path: Path, journal_mode: str, seconds: float) -> tuple[threading.Thread, float]:
    """Take the database's write lock from another connection; release it after `seconds`."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    conn.execute("CREATE TABLE IF NOT EXISTS other (x)")
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("INSERT INTO other VALUES (1)")
    released_at = time.monotonic() + seconds

    def release() -> None:
        time.sleep(seconds)  # the lock holder is another party; nothing here waits on logic
        conn.execute("COMMIT")
        conn.close()

    holder = threading.Thread(target=release)
    holder.start()
    return holder, released_at


@pytest.mark.parametrize("journal_mode", ["DELETE", "WAL"])
def test_store_opens_once_a_lock_held_at_start_is_released(
    tmp_path: Path, journal_mode: str
) -> None:
    """Opening a store while another connection holds the lock for 1 s waits and succeeds (no error)."""
    path = tmp_path / "db.sqlite3"
    holder, released_at = _hold_lock(path, journal_mode, 1.0)
    try:
        store = SqliteStore(path, busy_timeout=0.05)  # SQLite's own wait alone gives up at once
        opened_at = time.monotonic()
        assert store.clock_anchor("boot", 1.0) == 1.0
        assert store.pending_notifications() == 0
        store.close()
    finally:
        holder.join()
    assert opened_at >= released_at - 0.05  # it really met the lock


def _open_and_write(path: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        store = SqliteStore(path)
        store.clock_anchor("boot", float(os.getpid()))
        store.close()
        results.put("ok")
    except Exception as exc:
        results.put(repr(exc))


def test_many_workers_opening_a_new_database_together_all_start(tmp_path: Path) -> None:
    """Eight processes opening one new database at the same instant all start (30 rounds)."""
    ctx = multiprocessing.get_context("fork")
    failures: list[str] = []
    for round_ in range(30):
        path = tmp_path / f"db-{round_}.sqlite3"
        barrier, results = ctx.Barrier(8), ctx.Queue()
        procs = [
            ctx.Process(target=_open_and_write, args=(str(path), barrier, results))
            for _ in range(8)
        ]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(10)
        failures += [f"round {round_}: {o}" for o in outcomes if o != "ok"]
    assert failures == []
