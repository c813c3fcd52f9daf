"""The state database carries a schema version: old files are migrated on open, newer ones refused."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from responder.failover import Failover, Step
from responder.store import EventRecord
from responder.store import sqlite as sqlite_store
from responder.store.sqlite import SCHEMA, SCHEMA_VERSION, SchemaTooNew, SqliteStore

T0 = 1_700_000_000.0
# The schema as databases from before versions had it: no failovers.wake_at.
OLD_SCHEMA = SCHEMA.replace("    wake_at REAL,\n", "")


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def failover_columns(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[1] for row in conn.execute("PRAGMA table_info(failovers)")}
    finally:
        conn.close()


def set_user_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"PRAGMA user_version = {version:d}")
        conn.commit()
    finally:
        conn.close()


def in_flight(pair: str = "mainnet-a") -> Failover:
    return Failover(
        id="f-1",
        pair=pair,
        source="node-a",
        target="node-b",
        automatic=True,
        dry_run=False,
        reason="ValidatorClientDown on node-a",
        step=Step.FENCING,
        created_at=T0,
        updated_at=T0,
    )


def make_old_database(path: Path) -> None:
    """A version-0 file written by a responder from before wake_at, holding a failover and an event."""
    assert OLD_SCHEMA != SCHEMA
    doc = in_flight().to_json()
    del doc["wake_at"]
    conn = sqlite3.connect(path)
    try:
        conn.executescript(OLD_SCHEMA)
        conn.execute(
            "INSERT INTO failovers(id, pair, step, doc, owner, lease_until, created_at) "
            "VALUES (?, ?, ?, ?, NULL, NULL, ?)",
            ("f-1", "mainnet-a", "fencing", json.dumps(doc), T0),
        )
        conn.execute(
            "INSERT INTO events(ts, pair, kind, reason, node, failover_id, data) "
            "VALUES (?, 'mainnet-a', 'failover', 'started', 'node-a', 'f-1', '{}')",
            (T0,),
        )
        conn.commit()
    finally:
        conn.close()
    assert user_version(path) == 0
    assert "wake_at" not in failover_columns(path)


def test_new_database_gets_the_latest_schema_version(tmp_path: Path) -> None:
    """A database created by the store is stamped with SCHEMA_VERSION and has every column."""
    path = tmp_path / "responder.sqlite3"
    SqliteStore(path).close()
    assert user_version(path) == SCHEMA_VERSION
    assert "wake_at" in failover_columns(path)


def test_old_database_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    """A version-0 file without wake_at gains it, is stamped, and its failover and events still work."""
    path = tmp_path / "responder.sqlite3"
    make_old_database(path)
    store = SqliteStore(path)
    try:
        assert user_version(path) == SCHEMA_VERSION
        assert "wake_at" in failover_columns(path)
        assert [f.id for f in store.list_failovers()] == ["f-1"]
        assert [(e.kind, e.reason) for e in store.list_events()] == [("failover", "started")]
        claimed = store.claim_failover("owner-1", T0 + 1, 30.0)  # the query reads wake_at
        assert claimed is not None and claimed.id == "f-1"
        with store.transaction() as txn:
            txn.update_failover(claimed.advance(Step.FENCED, T0 + 2), "owner-1")
        assert store.list_failovers()[0].step is Step.FENCED
    finally:
        store.close()


def test_unversioned_database_that_has_wake_at_is_only_stamped(tmp_path: Path) -> None:
    """A version-0 file from a responder that already had wake_at opens and is stamped as it is."""
    path = tmp_path / "responder.sqlite3"
    SqliteStore(path).close()
    set_user_version(path, 0)
    store = SqliteStore(path)
    store.close()
    assert user_version(path) == SCHEMA_VERSION


def test_newer_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """A file stamped by a newer responder raises SchemaTooNew naming both versions; nothing is written."""
    path = tmp_path / "responder.sqlite3"
    store = SqliteStore(path)
    with store.transaction() as txn:
        txn.add_event(EventRecord(ts=T0, pair="mainnet-a", kind="note", reason="before"))
    store.close()
    set_user_version(path, SCHEMA_VERSION + 1)
    with pytest.raises(SchemaTooNew, match=rf"schema version {SCHEMA_VERSION + 1}, newer"):
        SqliteStore(path)
    assert user_version(path) == SCHEMA_VERSION + 1
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT reason FROM events").fetchall() == [("before",)]
    finally:
        conn.close()


def test_migration_runs_once_across_restarts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the first open migrates; later opens find the latest version and change nothing."""
    path = tmp_path / "responder.sqlite3"
    make_old_database(path)
    caplog.set_level(logging.INFO, logger="responder.store")
    for _ in range(3):
        store = SqliteStore(path)
        assert [f.id for f in store.list_failovers()] == ["f-1"]
        store.close()
    migrated = [r.getMessage() for r in caplog.records if "schema version" in r.getMessage()]
    assert migrated == [f"state database {path}: schema version 0 -> {SCHEMA_VERSION}"]
    assert user_version(path) == SCHEMA_VERSION


def test_failed_migration_leaves_the_old_database_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration that raises rolls back every step before it: version and columns unchanged."""
    path = tmp_path / "responder.sqlite3"
    make_old_database(path)

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x INTEGER)")
        raise sqlite3.DatabaseError("disk says no")

    migrations = (*sqlite_store.MIGRATIONS, broken)
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", migrations)
    monkeypatch.setattr(sqlite_store, "SCHEMA_VERSION", len(migrations))
    with pytest.raises(sqlite3.DatabaseError, match="disk says no"):
        SqliteStore(path)
    assert user_version(path) == 0
    assert "wake_at" not in failover_columns(path)
    conn = sqlite3.connect(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert "half_done" not in tables


def test_version_1_deliveries_keep_working_after_the_raw_body_is_dropped(tmp_path: Path) -> None:
    """A version-1 file (each delivery's whole body beside its alerts as objects) migrates to
    version 2: `raw` is gone, and its unprocessed delivery is still taken with its alerts."""
    path = tmp_path / "responder.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    alerts = [
        {
            "status": "firing",
            "labels": {"alertname": "ValidatorClientDown", "node": "node-a"},
            "startsAt": "2026-11-25T18:28:07Z",
            "fingerprint": "fp-1",
        }
    ]
    conn.execute(
        "INSERT INTO notifications(received_at, receiver, group_key, status, truncated, alerts, "
        "raw) VALUES (?, 'responder', 'g', 'firing', 0, ?, '{}')",
        (T0, json.dumps(alerts)),
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    taken = store.peek_notifications(10)
    store.close()
    assert user_version(path) == SCHEMA_VERSION >= 2
    conn = sqlite3.connect(path)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(notifications)")}
    finally:
        conn.close()
    assert "raw" not in columns
    [stored] = taken
    [alert] = stored.notification.alerts
    assert (alert.fingerprint, alert.starts_at, alert.status) == (
        "fp-1",
        "2026-11-25T18:28:07Z",
        "firing",
    )
    assert dict(alert.labels) == {"alertname": "ValidatorClientDown", "node": "node-a"}
