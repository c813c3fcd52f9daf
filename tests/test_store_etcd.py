"""The etcd store against a real etcd: deliveries shared by replicas, writes only by the leader.

Each test has its own key prefix on one etcd started for the module, so tests never share
state; the replicas here are stores in this process, as the service uses them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from responder.alerts import Alert, Notification
from responder.config import HttpDriverConfig, StateConfig
from responder.drivers import ActionContext
from responder.drivers.guarded import GuardedDriver
from responder.drivers.http import HttpDriver
from responder.failover import Failover, Step
from responder.store import EventRecord, InFlightError, LeaseLost
from responder.store.etcd import DEDUP_WINDOW, EtcdStore, EtcdUnavailable, NotLeader
from tests.etcdproc import EtcdProcess
from tests.fakenode import FakeNode
from tests.serverproc import free_port
from tests.tokens import NODE_TOKEN

T0 = 1_800_000_000.0
_serial = itertools.count()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    server = EtcdProcess(tmp_path_factory.mktemp("etcd")).start()
    yield server
    server.stop()


@pytest.fixture
def state(etcd: EtcdProcess) -> StateConfig:
    return StateConfig(
        backend="etcd", endpoints=(etcd.url,), prefix=f"/test{next(_serial)}/", lease_ttl=10.0
    )


def replica(state: StateConfig, name: str, tmp_path: Path) -> EtcdStore:
    return EtcdStore(state, name, tmp_path / name)


def note(fingerprint: str = "fp-1", status: str = "firing") -> Notification:
    alert = Alert(
        status=status,
        labels={"alertname": "ValidatorClientDown", "node": "node-a"},
        starts_at="2026-11-25T18:28:07Z",
        fingerprint=fingerprint,
    )
    return Notification(
        receiver="responder",
        status=status,
        group_key='{}:{pair="mainnet-a"}',
        alerts=(alert,),
        truncated_alerts=0,
        external_url="",
    )


def failover(fid: str, pair: str = "mainnet-a", step: Step = Step.PLANNED) -> Failover:
    return Failover(
        id=fid,
        pair=pair,
        source="node-a",
        target="node-b",
        automatic=True,
        dry_run=False,
        reason="test",
        step=step,
        created_at=T0,
        updated_at=T0,
    )


def revoke(store: EtcdStore) -> None:
    """What a killed leader's lease does after its TTL, at once."""
    leader = store.leader()
    assert leader is not None
    store.client.call("/lease/revoke", {"ID": str(leader.lease)})


def test_the_same_delivery_from_every_replica_is_recorded_once(
    state: StateConfig, tmp_path: Path
) -> None:
    r1, r2, r3 = (replica(state, n, tmp_path) for n in ("r1", "r2", "r3"))
    ids = {r.record_notification(T0 + i, note()) for i, r in enumerate((r1, r2, r3))}
    assert len(ids) == 1
    assert r1.pending_notifications() == 1
    assert [n.notification for n in r2.peek_notifications(10)] == [note()]
    other = r3.record_notification(T0 + 3, note("fp-2"))
    assert other not in ids and r1.pending_notifications() == 2
    # the same content long after is a new delivery (Alertmanager re-sends a group)
    again = r1.record_notification(T0 + DEDUP_WINDOW + 10, note())
    assert again not in ids | {other}


def test_a_follower_writes_nothing(state: StateConfig, tmp_path: Path) -> None:
    leader, follower = replica(state, "r1", tmp_path), replica(state, "r2", tmp_path)
    assert leader.campaign(T0) is not None
    assert follower.campaign(T0) == leader.leader()  # the key is taken: it follows
    nid = follower.record_notification(T0, note())  # deliveries: every replica records
    with pytest.raises(NotLeader, match="r1 leads"), follower.transaction() as txn:
        txn.add_event(EventRecord(T0, "mainnet-a", "test", "from a follower"))
        assert txn.claim_notifications([nid]) == {nid}
    assert leader.list_events() == []
    assert leader.pending_notifications() == 1
    with leader.transaction() as txn:
        assert txn.claim_notifications([nid]) == {nid}
    assert follower.pending_notifications() == 0


def test_a_leader_whose_lease_expired_writes_nothing_and_calls_no_node(
    state: StateConfig, tmp_path: Path
) -> None:
    old, new = replica(state, "r1", tmp_path), replica(state, "r2", tmp_path)
    old.campaign(T0)
    node = FakeNode("node-a", signing=True, token=NODE_TOKEN).start()
    try:
        token = tmp_path / "node-token"
        token.write_text(NODE_TOKEN)
        driver = GuardedDriver(
            HttpDriver(
                "node-a",
                HttpDriverConfig(type="http", url=node.url, token_file=token, timeout=2.0),
            ),
            old,
            "node-a",
        )
        assert driver.status().signing is True  # leading: calls go through
        revoke(old)  # the lease ran out (a pause, a partition)
        assert new.campaign(T0 + 20) is not None and new.leader().replica == "r2"
        with pytest.raises(LeaseLost):
            driver.fence(
                ActionContext(
                    pair="mainnet-a",
                    node="node-a",
                    failover_id="f1",
                    source="node-a",
                    target="node-b",
                    reason="test",
                )
            )
        with pytest.raises(LeaseLost):
            driver.status()
        (check,) = driver.preflight()  # never raises: one failing check, nothing sent
        assert (
            check.name == "node-a:lease" and check.ok is False and "no longer leads" in check.reason
        )
        assert node.calls == {"status": 1, "fence": 0, "activate": 0}
        with pytest.raises(NotLeader), old.transaction() as txn:
            txn.insert_failover(failover("f1"))
        assert old.get_failover("f1") is None
    finally:
        node.stop()


def test_the_guard_refuses_a_call_longer_than_the_lease(state: StateConfig, tmp_path: Path) -> None:
    store = replica(state, "r1", tmp_path)
    store.campaign(T0)
    store.check_lease(5.0)  # renewed to 10s, minus the margin
    with pytest.raises(LeaseLost, match="less than the call"):
        store.check_lease(state.lease_ttl)


def test_a_new_leader_takes_over_a_failover_at_once(state: StateConfig, tmp_path: Path) -> None:
    old, new = replica(state, "r1", tmp_path), replica(state, "r2", tmp_path)
    old.campaign(T0)
    with old.transaction() as txn:
        txn.insert_failover(failover("f1"))
    claimed = old.claim_failovers("r1:1", T0, 3600.0, ["mainnet-a"], 10)
    assert [f.id for f in claimed] == ["f1"]
    revoke(old)
    new.campaign(T0 + 1)
    # the old claim runs for an hour, but it was made under a leader that is gone
    taken = new.claim_failovers("r2:1", T0 + 1, 15.0, ["mainnet-a"], 10)
    assert [f.id for f in taken] == ["f1"]
    with pytest.raises(LeaseLost), new.transaction() as txn:
        txn.update_failover(failover("f1", step=Step.FENCING), "r1:1")
    with new.transaction() as txn:
        txn.update_failover(failover("f1", step=Step.FENCING), "r2:1")
    got = new.get_failover("f1")
    assert got is not None and got.step is Step.FENCING


def test_one_failover_in_flight_per_pair(state: StateConfig, tmp_path: Path) -> None:
    store = replica(state, "r1", tmp_path)
    store.campaign(T0)
    with store.transaction() as txn:
        txn.insert_failover(failover("f1"))
    with pytest.raises(InFlightError), store.transaction() as txn:
        txn.insert_failover(failover("f2"))
    assert store.get_failover("f2") is None
    store.claim_failovers("me", T0, 15.0, ["mainnet-a"], 1)
    with store.transaction() as txn:
        txn.update_failover(failover("f1", step=Step.DONE), "me")
    with store.transaction() as txn:
        txn.insert_failover(failover("f2"))  # the pair is free again
    assert {f.id for f in store.list_failovers()} == {"f1", "f2"}


def test_journal_and_savepoints(state: StateConfig, tmp_path: Path) -> None:
    store = replica(state, "r1", tmp_path)
    store.campaign(T0)
    with store.transaction() as txn:
        txn.append_journal("f1", T0, "fencing", "begin", {"level": 0})
    with store.transaction() as txn:
        txn.append_journal("f1", T0 + 1, "fencing", "end", {"confirmed": True})
        with pytest.raises(RuntimeError), txn.savepoint():
            txn.append_journal("f1", T0 + 2, "activating", "begin", {})
            raise RuntimeError("undone alone")
        txn.add_event(EventRecord(T0 + 1, "mainnet-a", "fenced", "kept"))
    entries = store.journal("f1")
    assert [(e.seq, e.step, e.phase) for e in entries] == [
        (1, "fencing", "begin"),
        (2, "fencing", "end"),
    ]
    assert [e.reason for e in store.list_events()] == ["kept"]


def test_a_transaction_too_big_for_etcd_says_so_and_writes_nothing(
    state: StateConfig, tmp_path: Path
) -> None:
    store = replica(state, "r1", tmp_path)
    store.campaign(T0)
    with pytest.raises(EtcdUnavailable, match="max_txn_ops"), store.transaction() as txn:
        for i in range(state.max_txn_ops + 1):
            txn.add_event(EventRecord(T0, "mainnet-a", "flood", str(i)))
    assert store.list_events() == []


def test_prune_forgets_what_is_old_and_keeps_what_is_pending(
    state: StateConfig, tmp_path: Path
) -> None:
    store = replica(state, "r1", tmp_path)
    store.campaign(T0)
    done = store.record_notification(T0, note("old"))
    pending = store.record_notification(T0, note("pending"))
    with store.transaction() as txn:
        txn.claim_notifications([done])
        txn.add_event(EventRecord(T0, "mainnet-a", "old", "old event"))
        txn.insert_failover(failover("f-old", step=Step.DONE))
        txn.append_journal("f-old", T0, "done", "end", {})
    counts = store.prune(
        T0 + 10 * 86400, notifications=86400, events=86400, failovers=86400, batch=1000
    )
    assert (counts.notifications, counts.events, counts.failovers, counts.journal) == (1, 1, 1, 1)
    assert [n.id for n in store.peek_notifications(10)] == [pending]
    assert store.list_events() == [] and store.journal("f-old") == []
    # the pruned delivery's dedup entry went with it: the same content records anew
    assert store.record_notification(T0 + 10 * 86400, note("old")) not in (done, pending)


def test_no_etcd_no_acknowledgement(tmp_path: Path) -> None:
    dead = StateConfig(backend="etcd", endpoints=(f"http://127.0.0.1:{free_port()}",), timeout=0.5)
    store = replica(dead, "r1", tmp_path)
    with pytest.raises(EtcdUnavailable, match="no etcd endpoint answered"):
        store.record_notification(T0, note())
    with pytest.raises(EtcdUnavailable):
        store.campaign(T0)


def test_the_epoch_condition_refuses_a_commit_raced_by_a_new_leader(
    state: StateConfig, tmp_path: Path
) -> None:
    """The leader's own view may be stale when it commits: etcd's condition decides."""
    old, new = replica(state, "r1", tmp_path), replica(state, "r2", tmp_path)
    old.campaign(T0)
    with old.transaction() as txn:
        txn.add_event(EventRecord(T0, "mainnet-a", "first", "while leading"))
    revoke(old)
    new.campaign(T0 + 1)
    with pytest.raises(NotLeader, match="lost the leader key"), old.transaction() as txn:
        txn.add_event(EventRecord(T0 + 2, "mainnet-a", "late", "after the lease"))
    assert [e.reason for e in new.list_events()] == ["while leading"]
    with pytest.raises(NotLeader, match="r2 leads"), old.transaction() as txn:
        txn.add_event(EventRecord(T0 + 3, "mainnet-a", "later", "asks etcd again"))


def test_a_delivery_too_big_for_etcd_keeps_its_trigger_alerts(
    state: StateConfig, tmp_path: Path
) -> None:
    """Alertmanager with max_alerts: 0 sends whole groups; etcd takes 1.5 MiB per request."""
    labels = {"node": "node-a", "instance": "10.0.0.1:5054", "job": "validator", "x": "y" * 80}
    alerts = tuple(
        Alert(
            status="firing",
            labels={**labels, "alertname": "ValidatorClientDown" if i % 2000 == 0 else "Noise"},
            starts_at="2026-11-25T18:28:07Z",
            fingerprint=f"{i:016x}",
        )
        for i in range(10_000)
    )
    big = Notification("responder", "firing", "{}:{}", alerts, 0, "")
    store = EtcdStore(state, "r1", tmp_path / "r1", triggers={"ValidatorClientDown"})
    nid = store.record_notification(T0, big)
    (stored,) = store.peek_notifications(1)
    assert stored.id == nid
    assert [a.fingerprint for a in stored.notification.alerts] == [
        f"{i:016x}" for i in range(0, 10_000, 2000)
    ]
    assert stored.notification.status == "firing"
    blind = EtcdStore(state, "r2", tmp_path / "r2")  # no trigger list: a clear refusal
    with pytest.raises(EtcdUnavailable, match="max_alerts"):
        blind.record_notification(T0, replace(big, group_key="other"))


def test_peek_returns_exactly_the_pending_deliveries_in_order(
    state: StateConfig, tmp_path: Path
) -> None:
    store = replica(state, "r1", tmp_path)
    store.campaign(T0)
    ids = [store.record_notification(T0, note(f"fp-{i}")) for i in range(10)]
    with store.transaction() as txn:
        txn.claim_notifications(ids[1:4])  # dense: read as one range
    assert [n.id for n in store.peek_notifications(100)] == [ids[0], *ids[4:]]
    with store.transaction() as txn:
        txn.claim_notifications(ids[4:9])  # sparse: the first and the last are left
    peeked = store.peek_notifications(100)
    assert [n.id for n in peeked] == [ids[0], ids[9]]
    assert [n.notification.alerts[0].fingerprint for n in peeked] == ["fp-0", "fp-9"]
    assert [n.id for n in store.peek_notifications(1)] == [ids[0]]


def test_an_endpoint_that_does_not_answer_is_skipped(etcd: EtcdProcess, tmp_path: Path) -> None:
    """endpoints are tried in order: a dead first member does not stop the replica."""
    state = StateConfig(
        backend="etcd",
        endpoints=(f"http://127.0.0.1:{free_port()}", etcd.url),
        prefix=f"/test{next(_serial)}/",
        timeout=0.5,
    )
    store = replica(state, "r1", tmp_path)
    assert store.campaign(T0) is not None
    nid = store.record_notification(T0, note())
    assert [n.id for n in store.peek_notifications(10)] == [nid]


def test_leadership_campaigns_from_a_state_dir_not_created_yet(
    state: StateConfig, tmp_path: Path
) -> None:
    """Under plain gunicorn nothing creates state_dir first: the campaign lock's folder is
    made on demand, and the replica leads."""
    from responder.leadership import EtcdLeadership  # noqa: PLC0415

    fresh = tmp_path / "not" / "yet"
    store = EtcdStore(state, "r1", fresh)
    leadership = EtcdLeadership(store, fresh / "campaign.lock")
    seen = leadership.round()
    assert seen.leader is not None and seen.leader.replica == "r1"
    assert leadership.acting() and leadership.view()["role"] == "leader"
    leadership.stop()
