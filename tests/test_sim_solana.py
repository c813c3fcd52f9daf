"""The simulated Agave validator: RPC, votes, tower and lockout, faults, metrics, its CLIs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client

from responder.agent.solana import keypair_pubkey, tower_name
from responder.lab import Proc, free_port
from responder.sim.solana import (
    ADMIN_URL_FILE,
    SolanaSim,
    SolanaSimApp,
    decode_tower,
    double_votes,
    read_votes,
    write_keypair,
)

GENESIS = 1_000_000.0
LOOPBACK = {"REMOTE_ADDR": "127.0.0.1"}  # the /sim and admin APIs answer loopback callers only


class LoopbackClient(Client):
    """A test client calling from 127.0.0.1 unless told otherwise."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("environ_base", LOOPBACK)
        return super().open(*args, **kwargs)


class Clock:
    """Wall-clock time stepped by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Pair:
    """Two in-process nodes sharing a cluster dir and a keypair, on one manual clock."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.clock = Clock(GENESIS + 10.5)  # slot 10
        self.cluster = tmp / "cluster"
        self.staked_file = tmp / "staked.json"
        self.staked = write_keypair(self.staked_file)
        self.a = self.node("node-a", active=True)
        self.b = self.node("node-b", active=False)
        self.ca, self.cb = (
            LoopbackClient(SolanaSimApp(self.a)),
            LoopbackClient(SolanaSimApp(self.b)),
        )

    def node(self, name: str, active: bool, **kw: Any) -> SolanaSim:
        junk = self.tmp / f"{name}-junk.json"
        write_keypair(junk)
        return SolanaSim(
            name,
            ledger=self.tmp / name / "ledger",
            cluster_dir=self.cluster,
            staked_keypair=self.staked_file,
            unstaked_keypair=junk,
            active=active,
            genesis_time=GENESIS,
            slot_seconds=1.0,
            health_slot_distance=5,
            delinquent_slot_distance=5,
            hang_seconds=0.05,
            clock=self.clock,
            **kw,
        )

    def step(self, slots: int = 1) -> None:
        for _ in range(slots):
            self.clock.now += 1.0
            self.a.tick()
            self.b.tick()


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    return Pair(tmp_path)


def rpc(client: Client, method: str, params: list[Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 7, "method": method}
    if params is not None:
        body["params"] = params
    resp = client.post("/", json=body)
    assert resp.status_code == 200, resp.text
    answer: dict[str, Any] = resp.get_json()
    assert answer["id"] == 7
    return answer


def result(client: Client, method: str, params: list[Any] | None = None) -> Any:
    return rpc(client, method, params)["result"]


def metrics(client: Client) -> dict[str, list[tuple[dict[str, str], float]]]:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def set_identity(client: Client, keypair: Path, require_tower: bool = False) -> Any:
    return client.post(
        "/sim/admin/set-identity", json={"keypair": str(keypair), "require_tower": require_tower}
    )


def fault(client: Client, name: str) -> None:
    assert client.post("/sim/faults", json={"fault": name}).status_code == 200


# -- RPC ----------------------------------------------------------------------------------------


def test_rpc_answers_identity_slot_genesis_and_health(pair: Pair) -> None:
    """getIdentity shows the running identity, getSlot follows the shared genesis clock,
    both nodes share a genesis hash, and getHealth is "ok"."""
    assert result(pair.ca, "getIdentity") == {"identity": pair.staked}
    assert result(pair.cb, "getIdentity") == {"identity": pair.b.unstaked}
    assert result(pair.ca, "getSlot") == result(pair.cb, "getSlot") == 10
    assert result(pair.ca, "getGenesisHash") == result(pair.cb, "getGenesisHash")
    assert result(pair.ca, "getHealth") == "ok"


def test_rpc_unknown_method_and_bad_request_are_json_rpc_errors(pair: Pair) -> None:
    """An unknown method answers -32601 and a body without a method -32600."""
    assert rpc(pair.ca, "getBalance")["error"]["code"] == -32601
    assert pair.ca.post("/", data="nope").get_json()["error"]["code"] == -32600


def test_keypair_pubkey_is_base58_of_the_public_half(tmp_path: Path) -> None:
    """The generated keypair's pubkey is base58 of bytes 32..64 (the agent reads it alike)."""
    path = tmp_path / "k.json"
    pubkey = write_keypair(path)
    raw = json.loads(path.read_text())
    assert len(raw) == 64 and keypair_pubkey(path) == pubkey
    assert 32 <= len(pubkey) <= 44


# -- votes and the tower ---------------------------------------------------------------------


def test_active_node_votes_once_per_slot_and_keeps_its_tower(pair: Pair) -> None:
    """The staked node votes once per slot (ticks within one slot add nothing), the unstaked
    node never votes, and the tower holds the last voted slot."""
    pair.a.tick()
    pair.a.tick()
    pair.step(3)
    votes = read_votes(pair.cluster)
    assert [v["slot"] for v in votes] == [10, 11, 12, 13]
    assert {v["node"] for v in votes} == {"node-a"}
    assert decode_tower(pair.a.tower_path.read_bytes()) == (pair.staked, 13)
    assert not pair.b.tower_path.exists()


def test_cluster_view_reports_the_last_vote_from_every_node(pair: Pair) -> None:
    """getVoteAccounts on the standby shows the vote account's last vote cast by the primary;
    a filter for another account answers empty lists."""
    pair.step(2)
    accounts = result(pair.cb, "getVoteAccounts", [{"votePubkey": pair.a.vote_account}])
    assert accounts["delinquent"] == []
    [entry] = accounts["current"]
    assert entry["votePubkey"] == pair.a.vote_account == pair.b.vote_account
    assert entry["nodePubkey"] == pair.staked
    assert entry["lastVote"] == 12
    assert result(pair.cb, "getVoteAccounts", [{"votePubkey": "Other111"}]) == {
        "current": [],
        "delinquent": [],
    }


def test_switch_to_unstaked_stops_voting_at_once(pair: Pair) -> None:
    """set-identity to the junk key stops votes in the same slot and closes the interval."""
    pair.step(1)
    assert set_identity(pair.ca, pair.tmp / "node-a-junk.json").status_code == 200
    pair.a.tick()
    pair.step(3)
    assert max(v["slot"] for v in read_votes(pair.cluster)) == 11
    state = pair.ca.get("/sim/state").get_json()
    assert state["signing"] is False and state["identity"] == pair.a.unstaked
    assert state["intervals"][-1][1] is not None


def test_require_tower_refuses_without_a_tower(pair: Pair) -> None:
    """--require-tower without a tower file is refused and the identity does not change."""
    resp = set_identity(pair.cb, pair.staked_file, require_tower=True)
    assert resp.status_code == 409
    assert "require-tower" in resp.get_json()["error"]
    assert result(pair.cb, "getIdentity") == {"identity": pair.b.unstaked}


def test_handed_tower_locks_the_standby_out_of_voted_slots(pair: Pair) -> None:
    """With the primary's tower the standby never votes at or below its last slot, so the
    pair's votes never overlap even when the switch lands in the same slot."""
    pair.step(2)  # a votes 10..12
    set_identity(pair.ca, pair.tmp / "node-a-junk.json")
    pair.b.tower_path.write_bytes(pair.a.tower_path.read_bytes())
    assert set_identity(pair.cb, pair.staked_file, require_tower=True).status_code == 200
    pair.b.tick()  # still slot 12: locked out
    assert pair.b.last_vote is None
    pair.step(2)
    assert pair.b.first_vote == 13 and pair.b.last_vote == 14
    assert double_votes(pair.cluster) == []


def test_fresh_tower_can_double_vote_and_the_check_sees_it(pair: Pair) -> None:
    """Switching the standby to the staked identity without a tower while the primary still
    votes produces a double vote, and double_votes reports it (the check tests rely on)."""
    pair.step(1)
    set_identity(pair.cb, pair.staked_file)
    pair.step(1)
    assert double_votes(pair.cluster) == [(pair.staked, 12, ["node-a", "node-b"])]


# -- faults --------------------------------------------------------------------------------


def test_crash_answers_nothing_and_stops_votes(pair: Pair) -> None:
    """crash: RPC, metrics and the admin API answer 503 and the node casts no votes."""
    fault(pair.ca, "crash")
    assert pair.ca.post("/", json={"method": "getIdentity"}).status_code == 503
    assert pair.ca.get("/metrics").status_code == 503
    assert set_identity(pair.ca, pair.staked_file).status_code == 503
    pair.step(2)
    assert read_votes(pair.cluster) == []
    assert pair.ca.get("/sim/state").get_json()["faults"] == ["crash"]


def test_hang_holds_requests_but_the_node_keeps_voting(pair: Pair) -> None:
    """hang: requests are held and then fail, yet the wedged node goes on voting."""
    fault(pair.ca, "hang")
    started = time.monotonic()
    assert pair.ca.post("/", json={"method": "getIdentity"}).status_code == 503
    assert time.monotonic() - started >= 0.04
    pair.step(2)
    assert [v["slot"] for v in read_votes(pair.cluster)] == [11, 12]


def test_stalled_node_falls_behind_and_turns_unhealthy(pair: Pair) -> None:
    """stalled: getSlot freezes, no votes, getHealth errors past the distance, metrics agree;
    clearing the fault catches up."""
    fault(pair.ca, "stalled")
    pair.step(6)
    assert result(pair.ca, "getSlot") == 10
    health = rpc(pair.ca, "getHealth")["error"]
    assert health["code"] == -32005 and health["data"]["numSlotsBehind"] == 6
    m = metrics(pair.ca)
    assert m["solana_node_is_healthy"] == [({}, 0.0)]
    assert m["solana_node_num_slots_behind"] == [({}, 6.0)]
    assert read_votes(pair.cluster) == []
    assert pair.ca.post("/sim/faults/clear").status_code == 200
    assert result(pair.ca, "getSlot") == 16 and result(pair.ca, "getHealth") == "ok"


def test_delinquent_node_runs_staked_but_does_not_vote(pair: Pair) -> None:
    """delinquent: the identity stays staked, no votes land, and after the distance the
    cluster lists the vote account as delinquent (metric 1 on every node)."""
    pair.step(1)
    fault(pair.ca, "delinquent")
    pair.step(6)
    assert result(pair.ca, "getIdentity") == {"identity": pair.staked}
    accounts = result(pair.ca, "getVoteAccounts")
    assert accounts["current"] == [] and accounts["delinquent"][0]["lastVote"] == 11
    labels = {"votekey": pair.a.vote_account, "nodekey": pair.staked}
    assert metrics(pair.ca)["solana_validator_delinquent"] == [(labels, 1.0)]
    assert metrics(pair.cb)["solana_validator_delinquent"] == [(labels, 1.0)]


def test_tower_unreadable_blocks_reads_and_clearing_restores_it(pair: Pair) -> None:
    """tower_unreadable: the tower path cannot be read, --require-tower is refused; the node
    keeps voting, and clearing the fault restores the tower with its newest vote."""
    pair.step(1)
    fault(pair.cb, "tower_unreadable")
    with pytest.raises(OSError):
        pair.b.tower_path.read_bytes()
    assert set_identity(pair.cb, pair.staked_file, require_tower=True).status_code == 409
    fault(pair.ca, "tower_unreadable")
    with pytest.raises(OSError):
        pair.a.tower_path.read_bytes()
    pair.step(2)
    assert pair.ca.delete("/sim/faults/tower_unreadable").status_code == 200
    assert decode_tower(pair.a.tower_path.read_bytes()) == (pair.staked, 13)


def test_set_identity_fail_and_identity_stuck(pair: Pair) -> None:
    """set_identity_fail: the admin call errors; identity_stuck: it answers ok and nothing
    changes."""
    fault(pair.ca, "set_identity_fail")
    assert set_identity(pair.ca, pair.tmp / "node-a-junk.json").status_code == 500
    pair.ca.post("/sim/faults/clear")
    fault(pair.ca, "identity_stuck")
    assert set_identity(pair.ca, pair.tmp / "node-a-junk.json").status_code == 200
    assert result(pair.ca, "getIdentity") == {"identity": pair.staked}


def test_fault_api_rejects_unknown_faults_and_remote_callers(pair: Pair) -> None:
    """Unknown faults answer 400; the /sim and admin APIs refuse non-loopback callers."""
    assert pair.ca.post("/sim/faults", json={"fault": "nope"}).status_code == 400
    remote = Client(SolanaSimApp(pair.a))
    env = {"REMOTE_ADDR": "10.0.0.9"}
    assert remote.post("/sim/faults", json={"fault": "crash"}, environ_base=env).status_code == 403
    assert remote.post("/sim/admin/set-identity", json={}, environ_base=env).status_code == 403
    assert remote.post("/", json={"method": "getSlot"}, environ_base=env).status_code == 200


# -- metrics -------------------------------------------------------------------------------


def test_metrics_carry_the_labels_the_solana_rules_use(pair: Pair) -> None:
    """solana_node_is_active{identity} is 1 on the staked node and 0 (junk identity) on the
    other, as rules/solana.yml's split-brain rule expects; delinquent carries votekey/nodekey."""
    pair.step(1)
    ma, mb = metrics(pair.ca), metrics(pair.cb)
    assert ma["solana_node_is_active"] == [({"identity": pair.staked}, 1.0)]
    assert mb["solana_node_is_active"] == [({"identity": pair.b.unstaked}, 0.0)]
    labels = {"votekey": pair.a.vote_account, "nodekey": pair.staked}
    assert ma["solana_validator_delinquent"] == [(labels, 0.0)]
    assert ma["solana_node_is_healthy"] == [({}, 1.0)]
    assert ma["solana_node_num_slots_behind"] == [({}, 0.0)]


# -- the processes -------------------------------------------------------------------------


def start_node(tmp: Path, *extra: str) -> tuple[Proc, str, Path]:
    port = free_port()
    ledger = tmp / "ledger"
    staked, junk = tmp / "staked.json", tmp / "junk.json"
    write_keypair(staked)
    write_keypair(junk)
    argv = [
        sys.executable, "-m", "responder.sim", "solana", "--name", "node-a",
        "--listen", f"127.0.0.1:{port}", "--ledger", str(ledger),
        "--cluster-dir", str(tmp / "cluster"), "--staked-keypair", str(staked),
        "--unstaked-keypair", str(junk), "--genesis-time", str(time.time()),
        "--slot-seconds", "0.1", *extra,
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    proc = Proc("sim-solana", argv, tmp / "sim.log", url + "/sim/state")
    proc.start(20)
    return proc, url, ledger


def agave(ledger: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "responder.sim.agave", "-l", str(ledger), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_process_and_fake_cli_switch_identity(tmp_path: Path) -> None:
    """The sim process writes its admin URL into the ledger; the fake agave-validator CLI
    finds it there, switches identities and waits for a restart window."""
    proc, url, ledger = start_node(tmp_path, "--active")
    try:
        assert (ledger / ADMIN_URL_FILE).read_text().strip() == url
        session = requests.Session()
        session.trust_env = False

        def identity() -> str:
            body = {"jsonrpc": "2.0", "id": 1, "method": "getIdentity"}
            answer = session.post(url, json=body, timeout=5).json()
            return str(answer["result"]["identity"])

        staked = keypair_pubkey(tmp_path / "staked.json")
        assert identity() == staked
        deadline = time.monotonic() + 10
        while not (ledger / tower_name(staked)).exists():
            assert time.monotonic() < deadline, "the active node never wrote its tower"
            time.sleep(0.05)
        done = agave(ledger, "wait-for-restart-window", "--min-idle-time", "2",
                     "--skip-new-snapshot-check")  # fmt: skip
        assert done.returncode == 0, done.stderr
        done = agave(ledger, "set-identity", str(tmp_path / "junk.json"))
        assert done.returncode == 0, done.stderr
        assert identity() == keypair_pubkey(tmp_path / "junk.json")
        refused = agave(ledger, "set-identity", "--require-tower", str(tmp_path / "nope.json"))
        assert refused.returncode == 1 and "cannot read keypair" in refused.stderr
        state = session.get(url + "/sim/state", timeout=5).json()
        assert state["calls"]["wait-for-restart-window"] == 1
        assert state["calls"]["set-identity"] == 1
    finally:
        proc.stop()
    assert not (ledger / ADMIN_URL_FILE).exists()


def test_fake_cli_fails_without_a_running_node(tmp_path: Path) -> None:
    """Without a node behind the ledger the CLI exits 1 with a reason."""
    done = agave(tmp_path, "set-identity", str(tmp_path / "k.json"))
    assert done.returncode == 1 and "cannot reach the validator" in done.stderr


def test_keygen_prints_the_pubkey(tmp_path: Path) -> None:
    """`python -m responder.sim solana keygen FILE` writes a keypair and prints its pubkey."""
    path = tmp_path / "id.json"
    done = subprocess.run(
        [sys.executable, "-m", "responder.sim", "solana", "keygen", str(path)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == keypair_pubkey(path)
