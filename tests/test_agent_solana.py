"""The Solana agent (create_agent_app + SolanaBackend) against two simulated Agave nodes.

Each test runs two real simulator processes on loopback ports sharing a cluster dir; the agent
runs the fake `agave-validator` (`python -m responder.sim.agave`) as its `validator` command.
Every vote either node casts is recorded, so a test proves no slot got two votes.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient

from responder.agent.config import SolanaConfig
from responder.agent.server import create_agent_app
from responder.agent.solana import SolanaBackend, tower_name
from responder.config import Secret
from responder.lab import Proc, free_port
from responder.sim.solana import decode_tower, double_votes, read_votes, write_keypair

TOKEN = "agent-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
AGAVE = (sys.executable, "-m", "responder.sim.agave")


class Node:
    """One simulator process and what its agent needs to know about it."""

    def __init__(self, tmp: Path, name: str, staked: Path, active: bool, genesis: float) -> None:
        self.name = name
        self.ledger = tmp / name / "ledger"
        self.junk = tmp / f"{name}-junk.json"
        self.junk_pubkey = write_keypair(self.junk)
        self.staked = staked
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        argv = [
            sys.executable, "-m", "responder.sim", "solana", "--name", name,
            "--listen", f"127.0.0.1:{port}", "--ledger", str(self.ledger),
            "--cluster-dir", str(tmp / "cluster"), "--staked-keypair", str(staked),
            "--unstaked-keypair", str(self.junk), "--genesis-time", repr(genesis),
            "--slot-seconds", "0.1", "--hang-seconds", "10",
        ]  # fmt: skip
        if active:
            argv.append("--active")
        self.proc = Proc(f"sim-{name}", argv, tmp / f"{name}.log", self.url + "/sim/state")
        self.session = requests.Session()
        self.session.trust_env = False

    def state(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.session.get(self.url + "/sim/state", timeout=5).json()
        return answer

    def fault(self, name: str, on: bool = True) -> None:
        if on:
            resp = self.session.post(self.url + "/sim/faults", json={"fault": name}, timeout=5)
        else:
            resp = self.session.delete(f"{self.url}/sim/faults/{name}", timeout=5)
        resp.raise_for_status()

    def wait(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """Poll the real process's state until `predicate` holds (10 s at most)."""
        deadline = time.monotonic() + 10
        while True:
            state = self.state()
            if predicate(state):
                return state
            assert time.monotonic() < deadline, f"{self.name}: timed out waiting for {what}"
            time.sleep(0.05)


class Cluster:
    """A pair of simulated nodes (a votes, b stands by) and agents for them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.cluster_dir = tmp / "cluster"
        self.staked_file = tmp / "staked.json"
        self.staked = write_keypair(self.staked_file)
        genesis = time.time()
        self.a = Node(tmp, "node-a", self.staked_file, True, genesis)
        self.b = Node(tmp, "node-b", self.staked_file, False, genesis)

    def config(self, node: Node, **overrides: Any) -> SolanaConfig:
        fields: dict[str, Any] = {
            "ledger": node.ledger,
            "validator": AGAVE,
            "rpc_url": node.url,
            "staked_identity": self.staked_file,
            "unstaked_identity": node.junk,
            "vote_account": node.state()["vote_account"],
            "timeout": 15.0,
            "rpc_timeout": 2.0,
            "verify_timeout": 3.0,
        }
        return SolanaConfig.model_validate(fields | overrides)

    def agent(self, node: Node, **overrides: Any) -> FlaskClient:
        backend = SolanaBackend(self.config(node, **overrides))
        return create_agent_app(backend, Secret(TOKEN)).test_client()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        c.a.proc.start(20)
        c.b.proc.start(20)
        c.a.wait(lambda s: s["votes"] >= 2, "the primary's first votes")
        yield c
    finally:
        c.a.proc.stop()
        c.b.proc.stop()


def post(client: FlaskClient, path: str, body: dict[str, Any] | None = None) -> Any:
    return client.post(path, json=body or {}, headers=AUTH)


def fence(client: FlaskClient, planned: bool = False) -> dict[str, Any]:
    resp = post(client, "/fence", {"planned": planned})
    assert resp.status_code == 200, resp.get_json()
    answer: dict[str, Any] = resp.get_json()
    return answer


def assert_no_double_votes(c: Cluster) -> None:
    assert double_votes(c.cluster_dir) == []


# -- the procedure -------------------------------------------------------------------------


def test_status_reports_the_voter_and_the_standby(cluster: Cluster) -> None:
    """/status: the staked node signs, the junk-identity node does not, both on one chain."""
    a = cluster.agent(cluster.a).get("/status", headers=AUTH).get_json()
    b = cluster.agent(cluster.b).get("/status", headers=AUTH).get_json()
    assert a["signing"] is True and b["signing"] is False
    assert a["healthy"] is True and b["healthy"] is True
    assert a["chain"] == b["chain"] and a["chain"]


def test_fence_then_activate_hands_the_tower_over_without_overlap(cluster: Cluster) -> None:
    """The fence verifies the switch and hands over the tower byte-identical; the standby
    writes it, takes the staked identity with --require-tower, and votes only after the
    primary's last vote: no slot has two votes."""
    answer = fence(cluster.agent(cluster.a))
    assert answer["signing"] is False
    handoff = answer["handoff"]
    tower_file = cluster.a.ledger / tower_name(cluster.staked)
    data = base64.b64decode(handoff["data"])
    assert data == tower_file.read_bytes()
    assert handoff["kind"] == "solana-tower" and handoff["identity"] == cluster.staked
    assert handoff["file"] == tower_name(cluster.staked)
    assert handoff["sha256"] == hashlib.sha256(data).hexdigest()
    _, tower_slot = decode_tower(data)
    a_state = cluster.a.state()
    assert a_state["identity"] == cluster.a.junk_pubkey and a_state["last_vote"] == tower_slot

    resp = post(cluster.agent(cluster.b), "/activate", {"handoff": handoff, "handoff_waived": None})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["signing"] is True
    b_state = cluster.b.wait(lambda s: s["votes"] >= 3, "the standby's votes")
    assert b_state["switches"][-1]["tower"] is True
    assert b_state["first_vote"] > tower_slot
    assert cluster.a.state()["last_vote"] == tower_slot  # the old primary stayed silent
    assert_no_double_votes(cluster)
    voters = [v["node"] for v in read_votes(cluster.cluster_dir)]
    assert voters == sorted(voters)  # all of node-a's votes, then all of node-b's


def test_fence_and_activate_are_idempotent(cluster: Cluster) -> None:
    """A repeated fence verifies again and hands over the same tower; a repeated activation
    confirms without switching again."""
    agent_a = cluster.agent(cluster.a)
    first = fence(agent_a)["handoff"]
    assert fence(agent_a)["handoff"] == first
    agent_b = cluster.agent(cluster.b)
    assert post(agent_b, "/activate", {"handoff": first}).status_code == 200
    again = post(agent_b, "/activate", {"handoff": first})
    assert again.status_code == 200 and "already" in again.get_json()["detail"]
    assert cluster.b.state()["calls"]["set-identity"] == 1
    assert cluster.a.state()["calls"]["set-identity"] == 1


def test_planned_fence_waits_for_the_restart_window(cluster: Cluster) -> None:
    """A planned fence runs wait-for-restart-window first; an unplanned one and one with the
    wait disabled do not."""
    fence(cluster.agent(cluster.a), planned=True)
    assert cluster.a.state()["calls"]["wait-for-restart-window"] == 1
    post(cluster.agent(cluster.b), "/activate", {"handoff": None, "handoff_waived": "test"})
    fence(cluster.agent(cluster.b), planned=False)
    fence(cluster.agent(cluster.b, wait_for_restart_window=False), planned=True)
    assert "wait-for-restart-window" not in cluster.b.state()["calls"]


def test_planned_fence_without_a_restart_window_changes_nothing(cluster: Cluster) -> None:
    """No restart window within restart_window_timeout: 409, set-identity never ran, the
    primary still votes."""
    cluster.a.fault("no_restart_window")
    agent = cluster.agent(cluster.a, restart_window_timeout=1.0)
    resp = post(agent, "/fence", {"planned": True})
    assert resp.status_code == 409 and "no restart window" in resp.get_json()["error"]
    cluster.a.fault("no_restart_window", on=False)
    state = cluster.a.state()
    assert state["signing"] is True and "set-identity" not in state["calls"]


# -- the waiting rule ----------------------------------------------------------------------


def test_activation_without_a_tower_is_refused_unless_waived(cluster: Cluster) -> None:
    """No hand-off and no waiver: 409 and the standby stays on its junk identity; with a
    waiver it takes the staked identity without --require-tower."""
    fence(cluster.agent(cluster.a))
    agent_b = cluster.agent(cluster.b)
    refused = post(agent_b, "/activate", {"handoff": None, "handoff_waived": None})
    assert refused.status_code == 409 and "no tower" in refused.get_json()["error"]
    assert cluster.b.state()["identity"] == cluster.b.junk_pubkey
    waived = post(agent_b, "/activate", {"handoff": None, "handoff_waived": "operator alice"})
    assert waived.status_code == 200, waived.get_json()
    assert "waived by operator alice" in waived.get_json()["detail"]
    state = cluster.b.wait(lambda s: s["votes"] >= 1, "the standby's votes")
    assert state["switches"][-1]["tower"] is False
    assert_no_double_votes(cluster)


def test_liveness_shows_the_votes_stop_after_the_fence(cluster: Cluster) -> None:
    """/liveness reports the slot and the vote account's last vote; after the fence the last
    vote stays while the slot moves on (what the responder's chain-quiet gate waits on)."""
    agent_b = cluster.agent(cluster.b)
    before = agent_b.get("/liveness", headers=AUTH).get_json()
    assert before["unit"] == "slot" and before["last_signed"] is not None
    assert before["current"] - before["last_signed"] <= 10  # the primary votes every slot
    handoff = fence(cluster.agent(cluster.a))["handoff"]
    _, tower_slot = decode_tower(base64.b64decode(handoff["data"]))
    cluster.b.wait(lambda s: s["slot"] >= tower_slot + 5, "five quiet slots")
    after = agent_b.get("/liveness", headers=AUTH).get_json()
    assert after["last_signed"] == tower_slot and after["current"] - tower_slot >= 5


def test_liveness_needs_a_vote_account(cluster: Cluster) -> None:
    """Without vote_account /liveness refuses (409) rather than guess."""
    resp = cluster.agent(cluster.b, vote_account=None).get("/liveness", headers=AUTH)
    assert resp.status_code == 409 and "vote_account" in resp.get_json()["error"]


def test_liveness_refuses_an_unknown_vote_account(cluster: Cluster) -> None:
    """A vote account the cluster does not list is an error, never 'no vote seen' (which
    would read as a quiet chain and let the tower be waived)."""
    agent = cluster.agent(cluster.b, vote_account="Unknown1111111111111111111111111111")
    resp = agent.get("/liveness", headers=AUTH)
    assert resp.status_code == 502 and "not in getVoteAccounts" in resp.get_json()["error"]


# -- every failure blocks the activation -----------------------------------------------------


def test_fence_fails_when_set_identity_fails(cluster: Cluster) -> None:
    """set-identity exiting non-zero: the fence answers 502 and the primary still votes."""
    cluster.a.fault("set_identity_fail")
    resp = post(cluster.agent(cluster.a), "/fence")
    assert resp.status_code == 502 and "set-identity exited 1" in resp.get_json()["error"]
    assert cluster.a.state()["signing"] is True


def test_fence_not_confirmed_in_time_is_504(cluster: Cluster) -> None:
    """set-identity reporting success while getIdentity still shows the staked key: 504."""
    cluster.a.fault("identity_stuck")
    resp = post(cluster.agent(cluster.a, verify_timeout=1.0), "/fence")
    assert resp.status_code == 504 and "did not show" in resp.get_json()["error"]
    assert cluster.a.state()["identity"] == cluster.staked


def test_fence_with_an_unreadable_tower_fails_though_the_node_is_fenced(cluster: Cluster) -> None:
    """The switch is verified but the tower cannot be read: 502 naming the fenced node, no
    hand-off, and /status observes the node not signing."""
    cluster.a.fault("tower_unreadable")
    agent_a = cluster.agent(cluster.a)
    resp = post(agent_a, "/fence")
    assert resp.status_code == 502
    assert "is fenced" in resp.get_json()["error"] and "cannot be read" in resp.get_json()["error"]
    assert agent_a.get("/status", headers=AUTH).get_json()["signing"] is False


def test_fence_of_a_crashed_or_wedged_node_is_not_confirmed(cluster: Cluster) -> None:
    """A crashed node (RPC and admin dead) and a wedged one (still voting) both fail the fence:
    nothing confirms the switch, so the responder must not activate."""
    cluster.a.fault("crash")
    resp = post(cluster.agent(cluster.a), "/fence")
    assert resp.status_code == 502
    cluster.a.fault("crash", on=False)
    cluster.a.fault("hang")
    started = time.monotonic()
    resp = post(cluster.agent(cluster.a, rpc_timeout=0.5, timeout=1.0), "/fence")
    assert resp.status_code == 502 and "timed out" in resp.get_json()["error"]
    assert time.monotonic() - started < 8
    cluster.a.fault("hang", on=False)
    assert cluster.a.state()["signing"] is True


def test_activation_refuses_a_tampered_or_foreign_handoff(cluster: Cluster) -> None:
    """A tower whose sha256 does not match, of another identity, or of another kind: 409 and
    the standby is not touched."""
    handoff = fence(cluster.agent(cluster.a))["handoff"]
    agent_b = cluster.agent(cluster.b)
    data = bytearray(base64.b64decode(handoff["data"]))
    data[-1] ^= 0xFF
    tampered = handoff | {"data": base64.b64encode(bytes(data)).decode()}
    foreign = handoff | {"identity": cluster.b.junk_pubkey}
    other_kind = handoff | {"kind": "cometbft-sign-state"}
    for bad in (tampered, foreign, other_kind):
        resp = post(agent_b, "/activate", {"handoff": bad})
        assert resp.status_code == 409, resp.get_json()
    state = cluster.b.state()
    assert state["identity"] == cluster.b.junk_pubkey and "set-identity" not in state["calls"]
    assert not (cluster.b.ledger / tower_name(cluster.staked)).exists()


def test_activation_fails_when_the_standby_rpc_is_down(cluster: Cluster) -> None:
    """The standby's RPC down: the activation answers 502 before switching anything."""
    handoff = fence(cluster.agent(cluster.a))["handoff"]
    cluster.b.fault("crash")
    resp = post(cluster.agent(cluster.b), "/activate", {"handoff": handoff})
    assert resp.status_code == 502 and "getIdentity" in resp.get_json()["error"]
    cluster.b.fault("crash", on=False)
    assert cluster.b.state()["identity"] == cluster.b.junk_pubkey


def test_activation_writes_the_tower_before_set_identity_and_fails_with_it(
    cluster: Cluster,
) -> None:
    """The tower lands byte-identical in the standby's ledger before set-identity runs; when
    set-identity fails the activation answers 502 and nothing votes."""
    handoff = fence(cluster.agent(cluster.a))["handoff"]
    cluster.b.fault("set_identity_fail")
    resp = post(cluster.agent(cluster.b), "/activate", {"handoff": handoff})
    assert resp.status_code == 502
    written = (cluster.b.ledger / tower_name(cluster.staked)).read_bytes()
    assert written == base64.b64decode(handoff["data"])
    assert cluster.b.state()["signing"] is False


def test_activation_not_confirmed_in_time_is_504(cluster: Cluster) -> None:
    """getIdentity not showing the staked key within verify_timeout: 504."""
    handoff = fence(cluster.agent(cluster.a))["handoff"]
    cluster.b.fault("identity_stuck")
    resp = post(cluster.agent(cluster.b, verify_timeout=1.0), "/activate", {"handoff": handoff})
    assert resp.status_code == 504
    assert cluster.b.state()["signing"] is False


def test_activation_fails_when_the_tower_cannot_be_written(cluster: Cluster) -> None:
    """The standby's tower path unusable: 502 and no set-identity."""
    handoff = fence(cluster.agent(cluster.a))["handoff"]
    cluster.b.fault("tower_unreadable")
    resp = post(cluster.agent(cluster.b), "/activate", {"handoff": handoff})
    assert resp.status_code == 502 and "cannot write the tower" in resp.get_json()["error"]
    assert "set-identity" not in cluster.b.state()["calls"]


def test_an_unknown_identity_is_an_error(cluster: Cluster, tmp_path: Path) -> None:
    """A node running neither configured identity: /status 502, fence and activate 409."""
    other = tmp_path / "other.json"
    write_keypair(other)
    agent = cluster.agent(cluster.a, staked_identity=other)
    assert agent.get("/status", headers=AUTH).status_code == 502
    assert post(agent, "/fence").status_code == 409
    assert post(agent, "/activate", {"handoff": None, "handoff_waived": "x"}).status_code == 409
    assert cluster.a.state()["signing"] is True


# -- the HTTP side -------------------------------------------------------------------------


def test_bearer_token_is_required(cluster: Cluster) -> None:
    """No token: 401; a wrong one: 403; neither reaches the node."""
    agent = cluster.agent(cluster.a)
    assert agent.post("/fence", json={}).status_code == 401
    assert (
        agent.post("/fence", json={}, headers={"Authorization": "Bearer nope"}).status_code == 403
    )
    assert agent.get("/status").status_code == 401
    assert "set-identity" not in cluster.a.state()["calls"]


def test_identity_link_follows_the_role_so_a_restart_never_votes_twice(cluster: Cluster) -> None:
    """With `identity_link`, the fence points the link at the unstaked keypair (before the
    switch) and the activation points the standby's link at the staked one: a node restarted
    from its link keeps the role it has now."""
    link_a = cluster.tmp / "identity-a.json"
    link_b = cluster.tmp / "identity-b.json"
    link_a.symlink_to(cluster.staked_file)
    link_b.symlink_to(cluster.b.junk)
    handoff = fence(cluster.agent(cluster.a, identity_link=link_a))["handoff"]
    assert link_a.resolve() == cluster.a.junk.resolve()
    resp = post(
        cluster.agent(cluster.b, identity_link=link_b),
        "/activate",
        {"handoff": handoff, "handoff_waived": None},
    )
    assert resp.status_code == 200, resp.get_json()
    assert link_b.resolve() == cluster.staked_file.resolve()
    assert link_a.is_symlink() and link_b.is_symlink()


def test_fence_refuses_when_the_identity_link_cannot_be_written(cluster: Cluster) -> None:
    """A link that cannot be pointed at the unstaked keypair fails the fence before the
    switch (the node would come back staked on restart): the next fence level takes over."""
    blocked = cluster.tmp / "not-a-dir" / "identity.json"
    (cluster.tmp / "not-a-dir").write_text("a file, not a directory\n")
    resp = post(cluster.agent(cluster.a, identity_link=blocked), "/fence", {"planned": False})
    assert resp.status_code == 502 and "cannot point" in resp.get_json()["error"]
    assert cluster.a.state()["identity"] == cluster.staked  # nothing was switched
