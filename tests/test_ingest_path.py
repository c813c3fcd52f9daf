"""The way from a delivery to the policy: the pending queue, claims across workers, trigger
routing, and connections spread over the gunicorn workers."""

from __future__ import annotations

import http.client
import json
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from responder.alerts import Alert, Notification
from responder.config import load_config
from responder.policy import AlertsReceived, decide
from responder.state import PairState
from responder.store.sqlite import SCHEMA, SCHEMA_VERSION, SqliteStore
from tests.conftest import base_config, write_config
from tests.serverproc import ServerProcess, free_port

T0 = 1_764_000_000.0


def _note(fingerprint: str, alertname: str = "ValidatorClientDown") -> Notification:
    alert = Alert(
        status="firing",
        labels={"alertname": alertname, "node": "node-a", "pair": "mainnet-a"},
        starts_at="2026-11-25T18:28:07Z",
        fingerprint=fingerprint,
    )
    return Notification("responder", "firing", "g", (alert,), 0, "")


def _pending(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT id FROM pending_notifications ORDER BY id")]
    finally:
        conn.close()


def test_a_delivery_two_workers_peek_is_claimed_by_one(tmp_path: Path) -> None:
    """Two stores on one file (two workers) both read the same pending deliveries; each
    delivery is claimed by exactly one of them, and a claimed one is no longer pending."""
    path = tmp_path / "s.sqlite3"
    one, two = SqliteStore(path), SqliteStore(path)
    ids = [one.record_notification(T0, _note(f"fp-{i}")) for i in range(3)]
    assert [s.id for s in one.peek_notifications(10)] == ids
    assert [s.id for s in two.peek_notifications(10)] == ids
    with two.transaction() as txn:
        assert txn.claim_notifications(ids[:2]) == set(ids[:2])
    with one.transaction() as txn:
        assert txn.claim_notifications(ids) == {ids[2]}
    assert one.pending_notifications() == two.pending_notifications() == 0
    assert one.peek_notifications(10) == []
    with one.transaction() as txn:
        assert txn.claim_notifications(ids) == set()
    one.close()
    two.close()


def test_a_rolled_back_claim_leaves_the_delivery_pending(tmp_path: Path) -> None:
    """A claim is part of its transaction: if applying raises, the delivery stays queued."""
    store = SqliteStore(tmp_path / "s.sqlite3")
    record_id = store.record_notification(T0, _note("fp"))
    with pytest.raises(RuntimeError), store.transaction() as txn:
        assert txn.claim_notifications([record_id]) == {record_id}
        raise RuntimeError("applying failed")
    assert [s.id for s in store.peek_notifications(10)] == [record_id]
    store.close()


def test_claims_beyond_sqlite_variable_limit(tmp_path: Path) -> None:
    """More ids than one statement may bind are claimed in parts, all of them."""
    store = SqliteStore(tmp_path / "s.sqlite3")
    ids = [store.record_notification(T0, _note(f"fp-{i}")) for i in range(1_200)]
    with store.transaction() as txn:
        assert txn.claim_notifications(ids) == set(ids)
    assert store.pending_notifications() == 0
    store.close()


def test_version_1_flags_become_the_pending_queue(tmp_path: Path) -> None:
    """A database whose deliveries carry a `processed` flag migrates to the pending table:
    exactly the unprocessed ones stay pending, in order, and the flag column is gone."""
    path = tmp_path / "responder.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    alerts = json.dumps(
        [{"status": "firing", "labels": {"alertname": "X"}, "startsAt": "2026-11-25T18:28:07Z",
          "fingerprint": "fp"}]
    )  # fmt: skip
    for processed in (1, 0, 1, 0):
        conn.execute(
            "INSERT INTO notifications(received_at, receiver, group_key, status, truncated, "
            "alerts, raw, processed) VALUES (?, 'responder', 'g', 'firing', 0, ?, '{}', ?)",
            (T0, alerts, processed),
        )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    assert [s.id for s in store.peek_notifications(10)] == [2, 4] == _pending(path)
    assert store.pending_notifications() == 2
    store.close()
    conn = sqlite3.connect(path)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(notifications)")}
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()
    assert "processed" not in columns and version == SCHEMA_VERSION


def test_applying_a_delivery_does_not_rewrite_its_row(tmp_path: Path) -> None:
    """Claiming a big delivery writes a few pages, not its alerts a second time."""
    path = tmp_path / "s.sqlite3"
    store = SqliteStore(path)
    big = Notification(
        "responder", "firing", "g",
        tuple(_note(f"fp-{i:04d}").alerts[0] for i in range(2_000)), 0, "",
    )  # fmt: skip
    record_id = store.record_notification(T0, big)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with store.transaction() as txn:
        txn.claim_notifications([record_id])
    wal = path.with_name(path.name + "-wal").stat().st_size
    conn.close()
    store.close()
    assert wal < 64 * 1024, f"claiming wrote {wal} bytes of WAL for a 2,000-alert delivery"


def _alerts(rng: random.Random, names: list[str]) -> tuple[tuple[Alert, str], ...]:
    out = []
    for i in range(rng.randint(0, 12)):
        node = rng.choice(["node-a", "node-b"])
        alert = Alert(
            status=rng.choice(["firing", "firing", "resolved"]),
            labels={"alertname": rng.choice(names), "node": node},
            starts_at=f"2026-11-25T18:{rng.randint(0, 5):02d}:00Z",
            fingerprint=f"fp-{rng.randint(0, 6)}-{i % 3}",
        )
        out.append((alert, node))
    return tuple(out)


def test_alerts_that_are_no_trigger_change_no_decision(tmp_path: Path) -> None:
    """Routing passes the policy only trigger alerts; that is sound because, for any state
    and any mix, the policy decides the same with and without the other alerts."""
    config = load_config(write_config(tmp_path, base_config(lambda n: f"http://127.0.0.1:9/{n}")))
    pair = config.pairs[0]
    triggers = list(pair.policy.triggers)
    names = [*triggers, "PeersLow", "DiskFilling", "Watchdog"]
    rng = random.Random(20261126)
    checked = 0
    for _ in range(300):
        state = PairState.initial(pair, T0)
        now = T0
        for _ in range(rng.randint(1, 6)):
            now += rng.choice([0.0, 1.0, 30.0, 400.0])
            mixed = _alerts(rng, names)
            only = tuple((a, n) for a, n in mixed if a.labels["alertname"] in triggers)
            full = decide(state, AlertsReceived(mixed, 0, received_at=now), now, pair)
            kept = decide(state, AlertsReceived(only, 0, received_at=now), now, pair)
            assert (full.state, full.actions, full.changed, full.duplicates) == (
                kept.state, kept.actions, kept.changed, kept.duplicates,
            )  # fmt: skip
            checked += len(mixed) - len(only)
            state = full.state
    assert checked > 500  # the mixes did carry many non-trigger alerts


def _established(port: int, pid: int, states: tuple[str, ...] = ("01",)) -> int:
    """Connections to `port` whose socket `pid` holds, ESTABLISHED unless `states` says
    otherwise (from /proc, no tools needed)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[3] in states and fields[9] in inodes:
            count += 1
    return count


_ANY_STATE = tuple(f"{n:02X}" for n in range(1, 12) if n != 0x0A)  # all but LISTEN


def _workers(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(int(c) for c in children)


def _burst(port: int, workers: list[int]) -> list[int]:
    """Open 8 connections as a load generator does (connect and ask, then the next), read
    the answers, and count each worker's; all are closed again."""
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(8)]
    try:
        for conn in conns:
            conn.request("GET", "/healthz")
        for conn in conns:  # each is answered, and stays open (keep-alive)
            assert conn.getresponse().read()
        return [_established(port, pid) for pid in workers]
    finally:
        for conn in conns:
            conn.close()


def test_bursts_of_keepalive_connections_are_spread_over_the_workers(tmp_path: Path) -> None:
    """8 connections opened at once land on both workers, every time, not all on the first
    to wake (which then served every request on one interpreter while the other idled)."""
    path = write_config(tmp_path, base_config(lambda n: f"http://127.0.0.1:9/{n}"))
    server = ServerProcess(path, free_port(), tmp_path / "responder.log", workers=2).start()
    try:
        popen = server.proc.popen
        assert popen is not None
        end = time.monotonic() + 15  # the second worker may still be starting at first
        workers = _workers(popen.pid)
        while len(workers) < 2 and time.monotonic() < end:
            time.sleep(0.05)
            workers = _workers(popen.pid)
        assert len(workers) == 2
        while min(_burst(server.port, workers)) < 2 and time.monotonic() < end:
            time.sleep(0.2)
        seen = []
        for _ in range(4):
            # once both workers have closed the last burst's connections (any TCP state)
            while time.monotonic() < end + 15 and any(
                _established(server.port, pid, _ANY_STATE) for pid in workers
            ):
                time.sleep(0.05)
            seen.append(_burst(server.port, workers))
    finally:
        server.stop()
    assert all(min(counts) >= 2 for counts in seen), f"connections per worker: {seen}"


def test_a_worker_settles_its_start_up_heap() -> None:
    """After start-up a worker's objects are frozen out of the collector's full passes and
    young objects are collected less often, so a big delivery is not slowed by walks of
    the whole heap."""
    code = (
        "import gc; from responder import wsgi; wsgi._settle_heap(); "
        "print(gc.get_freeze_count(), gc.get_threshold()[0], wsgi.GC_THRESHOLD)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    frozen, threshold, wanted = (int(x) for x in out)
    assert frozen > 10_000 and threshold == wanted > 700
