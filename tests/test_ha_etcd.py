"""Replicas on etcd: three `responder serve` against a real etcd, one of them acting.

Every replica records deliveries; only the holder of the leader key decides, fences and
activates. The leader killed mid-failover is replaced within its lease; etcd gone stops every
replica; a leader frozen past its lease writes nothing and calls no node when it resumes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from responder.config import ConfigError, StateConfig, parse_config
from tests.conftest import alert, base_config, notification, write_config
from tests.etcdproc import EtcdProcess
from tests.fakenode import FakeNode
from tests.serverproc import ServerProcess, free_port
from tests.tokens import OPERATOR_TOKEN, WEBHOOK_TOKEN

LEASE_TTL = 6  # seconds: node calls take at most 0.5s + 1s, etcd requests 1s (1.5 + 2 + 1 <= 6)


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdProcess]:
    server = EtcdProcess(tmp_path / "etcd").start()
    yield server
    server.resume()
    server.stop()


class Replicas:
    """Three replicas of one responder, each its own `responder serve` with two workers."""

    def __init__(
        self, root: Path, etcd: EtcdProcess, nodes: dict[str, FakeNode], hold: str = "1s"
    ) -> None:
        self.servers: dict[str, ServerProcess] = {}
        for name in ("r1", "r2", "r3"):
            directory = root / name
            directory.mkdir()
            data = base_config(
                lambda n: nodes[n].url,
                policy={"hold": hold},
                state_dir="./var",
                state={
                    "backend": "etcd",
                    "endpoints": [etcd.url],
                    "prefix": "/responder/test/",
                    "lease_ttl": f"{LEASE_TTL}s",
                    "timeout": "1s",
                    "replica": name,
                },
                nodes=[
                    {
                        "name": node,
                        "match": {"node": node},
                        "driver": {
                            "type": "http",
                            "url": nodes[node].url,
                            "token_file": "./secrets/node-token",
                            "connect_timeout": "0.5s",
                            "timeout": "1s",
                        },
                    }
                    for node in ("node-a", "node-b")
                ],
                poll_interval="0.2s",
            )
            port = free_port()
            self.servers[name] = ServerProcess(
                write_config(directory, data), port, directory / "serve.log", workers=2
            )

    def start(self) -> Replicas:
        for server in self.servers.values():
            server.start(timeout=30)
        return self

    def stop(self) -> None:
        for server in self.servers.values():
            if server.proc.popen is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.proc.popen.pid, signal.SIGCONT)
            server.stop()

    def health(self, name: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
        resp = requests.get(self.servers[name].url + "/healthz", timeout=timeout)
        return resp.status_code, resp.json()

    def roles(self) -> dict[str, str | None]:
        """Each live replica's role; a killed or frozen one is left out."""
        roles = {}
        for name in self.servers:
            try:
                roles[name] = self.health(name, timeout=1.0)[1].get("role")
            except requests.RequestException:
                continue
        return roles

    def leader(self, timeout: float = 30.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            roles = self.roles()
            leaders = [name for name, role in roles.items() if role == "leader"]
            if len(leaders) == 1:
                return leaders[0]
            time.sleep(0.2)
        raise AssertionError(f"no single leader after {timeout:g}s: {roles}")

    def deliver(self, name: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(
            self.servers[name].url + "/webhook",
            json=body,
            headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
            timeout=10,
        )


@pytest.fixture
def replicas(tmp_path: Path, etcd: EtcdProcess, nodes: dict[str, FakeNode]) -> Iterator[Replicas]:
    group = Replicas(tmp_path, etcd, nodes)
    try:
        yield group.start()
    finally:
        group.stop()


def wait_until(predicate: Any, what: str, timeout: float) -> float:
    """Seconds it took; AssertionError naming `what` after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout:g}s")


FAULT = notification(alert("ValidatorClientDown", "node-a"))


def test_duplicates_to_all_replicas_make_one_failover(
    replicas: Replicas, nodes: dict[str, FakeNode]
) -> None:
    leader = replicas.leader()
    # every worker of every replica names the same leader, and each answers 200
    for name in replicas.servers:
        for _ in range(6):
            status, body = replicas.health(name)
            assert status == 200, body
            assert body["role"] == ("leader" if name == leader else "follower"), body
            assert body["leader"] == leader
    follower = next(name for name in replicas.servers if name != leader)
    # operator changes go to the leader; a follower refuses them and names it
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    refused = requests.post(
        replicas.servers[follower].url + "/api/v1/pairs/mainnet-a/pause", headers=headers, timeout=5
    )
    assert refused.status_code == 503 and leader in refused.json()["error"], refused.text
    assert replicas.servers[follower].api("/api/v1/leader")["leader"] == leader
    metrics = requests.get(replicas.servers[leader].url + "/metrics", timeout=5).text
    assert f'responder_replica_leader{{replica="{leader}"}} 1.0' in metrics
    metrics = requests.get(replicas.servers[follower].url + "/metrics", timeout=5).text
    assert f'responder_replica_leader{{replica="{follower}"}} 0.0' in metrics
    assert f'responder_leader_since_timestamp_seconds{{leader="{leader}"}}' in metrics
    browser = requests.Session()  # the status page names the leader on every replica
    browser.post(
        replicas.servers[follower].url + "/login", data={"token": OPERATOR_TOKEN}, timeout=5
    )
    page = browser.get(replicas.servers[follower].url + "/", timeout=5).text
    assert f"leader: replica {leader} since" in page and f"not this one ({follower})" in page
    ids = set()
    for name in replicas.servers:  # Alertmanager's HA peers each send the same group
        resp = replicas.deliver(name, FAULT)
        assert resp.status_code == 200, resp.text
        ids.add(resp.json()["id"])
    assert len(ids) == 1, f"one delivery, recorded once: {ids}"
    wait_until(lambda: nodes["node-b"].signing, "standby activated", 30)
    time.sleep(2)  # would a second failover start? (the followers hold the same delivery)
    assert nodes["node-a"].calls["fence"] == 1
    assert nodes["node-b"].calls["activate"] == 1
    assert not nodes["node-a"].signing


def _hold_after_fence(primary: FakeNode, standby: FakeNode) -> threading.Event:
    """Block the standby's first status answer once the primary is fenced, until released:
    the leader is then between a confirmed fence and the standby's activation."""
    release = threading.Event()
    reached = threading.Event()

    def hook() -> None:
        if primary.calls["fence"] >= 1 and not primary.signing and not reached.is_set():
            reached.set()
            release.wait(60)

    standby.before_reply["status"] = hook
    release.reached = reached  # type: ignore[attr-defined]
    return release


def test_leader_killed_between_fence_and_activate(
    replicas: Replicas, nodes: dict[str, FakeNode]
) -> None:
    leader = replicas.leader()
    release = _hold_after_fence(nodes["node-a"], nodes["node-b"])
    assert replicas.deliver(leader, FAULT).status_code == 200
    wait_until(release.reached.is_set, "leader fenced the primary", 30)  # type: ignore[attr-defined]
    replicas.servers[leader].kill()
    killed = time.monotonic()
    release.set()
    took = wait_until(lambda: nodes["node-b"].signing, "another replica activates", LEASE_TTL + 10)
    assert replicas.leader() != leader
    time.sleep(2)
    assert nodes["node-b"].calls["activate"] == 1, "activated exactly once"
    assert nodes["node-a"].calls["fence"] == 1, "the confirmed fence is not repeated"
    assert time.monotonic() - killed <= LEASE_TTL + 10, took


def test_etcd_stopped_no_replica_acts(
    replicas: Replicas, etcd: EtcdProcess, nodes: dict[str, FakeNode]
) -> None:
    replicas.leader()
    etcd.stop()
    for name in replicas.servers:
        resp = replicas.deliver(name, FAULT)
        assert resp.status_code == 503, resp.text  # not recorded: Alertmanager retries
    time.sleep(LEASE_TTL / 2)
    for name in replicas.servers:
        status, body = replicas.health(name)
        assert status == 503, body
        assert body["role"] == "follower" and "etcd" in body["error"], body
    assert nodes["node-a"].calls["fence"] == 0
    assert nodes["node-b"].calls["activate"] == 0
    assert nodes["node-a"].signing and not nodes["node-b"].signing


def test_a_replica_started_while_etcd_is_down_waits_for_it(
    replicas: Replicas, etcd: EtcdProcess, nodes: dict[str, FakeNode]
) -> None:
    """Starting (or a gunicorn worker restarting) without etcd is not fatal: the replica
    answers 503 and acts on nothing until etcd is back, then joins as before."""
    replicas.leader()
    etcd.stop()
    late = replicas.servers["r3"]
    late.stop()
    with late.log_path.open("ab") as out:
        late.proc.popen = subprocess.Popen(
            late.proc.argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
        )

    def answers_503() -> bool:
        assert late.proc.popen is not None and late.proc.popen.poll() is None, late.proc.tail()
        try:
            status, body = replicas.health("r3", timeout=5)
        except requests.RequestException:
            return False
        return status == 503 and "etcd unavailable" in body.get("error", "")

    wait_until(answers_503, "r3 up without etcd, saying why it does not act", 30)
    assert replicas.deliver("r3", FAULT).status_code == 503  # nothing acknowledged
    etcd.restart()
    wait_until(lambda: replicas.health("r3")[0] == 200, "r3 healthy once etcd is back", 30)
    leader = replicas.leader()
    assert replicas.deliver("r3", FAULT).status_code == 200
    wait_until(lambda: nodes["node-b"].signing, "the leader fails over", 30)
    assert nodes["node-a"].calls["fence"] == 1 and nodes["node-b"].calls["activate"] == 1
    assert leader in replicas.servers


def test_fault_recorded_then_etcd_lost_before_deadline_no_action(
    tmp_path: Path, etcd: EtcdProcess, nodes: dict[str, FakeNode]
) -> None:
    """A fault is recorded and its hold runs; etcd hangs before the deadline: nobody acts."""
    group = Replicas(tmp_path, etcd, nodes, hold="2s").start()
    try:
        leader = group.leader()
        resp = group.deliver(leader, FAULT)
        assert resp.status_code == 200, resp.text  # recorded: the hold runs
        etcd.pause()  # etcd hangs: requests time out, nobody can renew or write
        time.sleep(2 + LEASE_TTL + 1)  # past the deadline and past the lease
        assert nodes["node-a"].calls["fence"] == 0
        assert nodes["node-b"].calls["activate"] == 0
        assert nodes["node-a"].signing and not nodes["node-b"].signing
        status, body = group.health(leader, timeout=15)
        assert status == 503 and "etcd unavailable" in body["error"], body
    finally:
        etcd.resume()
        group.stop()


def test_leader_frozen_past_its_lease_sends_nothing_after(
    replicas: Replicas, nodes: dict[str, FakeNode]
) -> None:
    leader = replicas.leader()
    release = _hold_after_fence(nodes["node-a"], nodes["node-b"])
    assert replicas.deliver(leader, FAULT).status_code == 200
    wait_until(release.reached.is_set, "leader fenced the primary", 30)  # type: ignore[attr-defined]
    frozen = replicas.servers[leader].proc.popen
    assert frozen is not None
    os.killpg(frozen.pid, signal.SIGSTOP)  # master and workers, mid-failover
    release.set()
    wait_until(lambda: nodes["node-b"].signing, "another replica activates", LEASE_TTL + 10)
    new_leader = replicas.leader()
    assert new_leader != leader
    calls = dict(nodes["node-a"].calls), dict(nodes["node-b"].calls)
    os.killpg(frozen.pid, signal.SIGCONT)
    time.sleep(LEASE_TTL / 2)  # the resumed replica's thread returns from its held call
    assert nodes["node-a"].calls["fence"] == calls[0]["fence"], "no fence from the resumed"
    assert nodes["node-b"].calls["activate"] == calls[1]["activate"] == 1
    assert replicas.leader() == new_leader
    text = replicas.servers[leader].log_path.read_text()
    assert "failover stopped before its next step" in text, text[-3000:]


def test_timing_rule_is_checked_at_config_time() -> None:
    """lease_ttl must cover the longest node call plus two etcd timeouts (cf. Patroni)."""
    data = base_config(
        lambda n: f"http://127.0.0.1:1/{n}",
        state={"backend": "etcd", "endpoints": ["http://127.0.0.1:2379"], "lease_ttl": "5s"},
    )
    with pytest.raises(ConfigError) as err:
        parse_config(data, Path("."))
    text = " ".join(err.value.problems)
    assert "lease_ttl" in text and "pairs[0].nodes[0].driver" in text
    data["state"]["lease_ttl"] = "9s"  # 2s connect + 2s timeout + 2 x 2s + 1s
    assert parse_config(data, Path(".")).state == StateConfig(
        backend="etcd", endpoints=("http://127.0.0.1:2379",), lease_ttl=9.0
    )


def test_a_config_with_more_pairs_than_one_etcd_transaction_holds_is_warned() -> None:
    from responder.config import config_warnings  # noqa: PLC0415

    def pair(i: int) -> dict[str, Any]:
        nodes = [
            {
                "name": f"n{i}{side}",
                "match": {"node": f"n{i}{side}"},
                "driver": {"type": "http", "url": f"http://10.0.{i}.{side}:1", "timeout": "2s"},
            }
            for side in (1, 2)
        ]
        return {"name": f"p{i}", "nodes": nodes, "policy": {"triggers": ["Down"]}}

    state = {"backend": "etcd", "endpoints": ["http://127.0.0.1:2379"]}
    few = parse_config(
        base_config(lambda n: "", pairs=[pair(i) for i in range(5)], state=state), Path(".")
    )
    assert config_warnings(few) == []
    many = parse_config(
        base_config(lambda n: "", pairs=[pair(i) for i in range(30)], state=state), Path(".")
    )
    (warning,) = config_warnings(many)
    assert "--max-txn-ops 196" in warning and "state.max_txn_ops" in warning
    state["max_txn_ops"] = 256
    roomy = parse_config(
        base_config(lambda n: "", pairs=[pair(i) for i in range(30)], state=state), Path(".")
    )
    assert config_warnings(roomy) == []
