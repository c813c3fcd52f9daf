"""The node agent's CometBFT backend against two simulated nodes of one pair (real subprocesses
on loopback ports, their signer started and stopped by `responder.sim.cometctl` as systemctl
would): fence, hand-off, activation and every failure that must block the activation."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient

from responder.agent.config import CosmosConfig
from responder.agent.cosmos import CosmosBackend, canonical_sha256
from responder.agent.server import create_agent_app
from responder.config import Secret
from responder.lab import Proc, free_port
from responder.sim.common import overlaps
from responder.sim.cosmos import double_signed
from tests.tokens import NODE_TOKEN

ADDR = "5A1B2C3D5A1B2C3D5A1B2C3D5A1B2C3D5A1B2C3D"
CHAIN = "test-1"
BLOCK = 0.25  # seconds per height
CHECK = 3  # double_sign_check_height of both nodes
AUTH = {"Authorization": f"Bearer {NODE_TOKEN}"}


def _http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


HTTP = _http()


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll until predicate() is truthy; fail naming `what` at the deadline."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Node:
    """One simulated CometBFT host: the sim process and an agent (in-process) in front of it."""

    name: str
    home: Path
    url: str
    proc: Proc
    config: dict[str, Any] = field(default_factory=dict)

    def ctl(self, command: str) -> tuple[str, ...]:
        return (sys.executable, "-m", "responder.sim.cometctl", "--home", str(self.home), command)

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = HTTP.get(self.url + "/sim/state", timeout=5).json()
        return data

    def fault(self, name: str) -> None:
        HTTP.post(self.url + "/sim/faults", json={"fault": name}, timeout=5).raise_for_status()

    @property
    def state_file(self) -> Path:
        return self.home / "data" / "priv_validator_state.json"

    @property
    def config_file(self) -> Path:
        return self.home / "config" / "config.toml"

    def backend(self, **overrides: Any) -> CosmosBackend:
        settings: dict[str, Any] = {
            "home": self.home,
            "stop": self.ctl("stop"),
            "start": self.ctl("start"),
            "is_running": self.ctl("is-active"),
            "rpc_url": self.url,
            "validator_address": ADDR,
            "timeout": 10.0,
            "rpc_timeout": 1.0,
            "verify_timeout": 8.0,
        }
        return CosmosBackend(CosmosConfig(**(settings | overrides)))

    def agent(self, **overrides: Any) -> FlaskClient:
        return create_agent_app(self.backend(**overrides), Secret(NODE_TOKEN)).test_client()

    def wait_height(self, height: int) -> None:
        wait_until(lambda: self.state()["height"] >= height, f"{self.name} at height {height}")


def start_node(tmp_path: Path, name: str, genesis: float, *, signing: bool, check: int) -> Node:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable, "-m", "responder.sim", "cosmos", "--name", name,
        "--listen", f"127.0.0.1:{port}", "--home", str(tmp_path / name),
        "--cluster-dir", str(tmp_path / "cluster"), "--validator-address", ADDR,
        "--chain-id", CHAIN, "--genesis-time", repr(genesis), "--block-seconds", str(BLOCK),
        "--double-sign-check-height", str(check), "--hang-seconds", "3",
    ] + (["--signing"] if signing else [])  # fmt: skip
    proc = Proc(name, argv, tmp_path / f"{name}.log", url + "/sim/state")
    proc.start(20)
    return Node(name, tmp_path / name, url, proc)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    """node-a signs, node-b is the standby; both with double_sign_check_height 3."""
    genesis = time.time() - 40 * BLOCK
    nodes: list[Node] = []
    try:
        nodes.append(start_node(tmp_path, "node-a", genesis, signing=True, check=CHECK))
        nodes.append(start_node(tmp_path, "node-b", genesis, signing=False, check=CHECK))
        a, b = nodes
        wait_until(lambda: len(a.state()["signed"]) >= 2, "node-a signing")
        yield a, b
    finally:
        for node in nodes:
            node.proc.stop()


def fence(node: Node, **overrides: Any) -> Any:
    return node.agent(**overrides).post("/fence", json={"planned": True}, headers=AUTH)


def activate(node: Node, handoff: Any, waived: str | None = None, **overrides: Any) -> Any:
    return node.agent(**overrides).post(
        "/activate", json={"handoff": handoff, "handoff_waived": waived}, headers=AUTH
    )


def handed_over(primary: Node) -> dict[str, Any]:
    resp = fence(primary)
    assert resp.status_code == 200, resp.get_json()
    handoff: dict[str, Any] = resp.get_json()["handoff"]
    return handoff


def test_status_shows_signer_health_and_chain(pair: tuple[Node, Node]) -> None:
    """/status: the primary signs, the stopped standby is still healthy, both on chain test-1."""
    a, b = pair
    sa = a.agent().get("/status", headers=AUTH).get_json()
    sb = b.agent().get("/status", headers=AUTH).get_json()
    assert (sa["signing"], sa["healthy"], sa["chain"]) == (True, True, CHAIN)
    assert (sb["signing"], sb["healthy"], sb["chain"]) == (False, True, CHAIN)
    a.fault("stalled")
    assert a.agent().get("/status", headers=AUTH).get_json()["healthy"] is False


def test_fence_stops_verifies_and_hands_over_the_state_byte_identical(
    pair: tuple[Node, Node],
) -> None:
    """The fence stops the signer, verifies it, and hands over exactly the state file's content
    with its sha256; a repeated fence verifies again and hands over the same state."""
    a, _ = pair
    resp = fence(a)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["signing"] is False
    handoff = body["handoff"]
    on_disk = json.loads(a.state_file.read_bytes())
    assert handoff["kind"] == "cometbft-sign-state"
    assert handoff["state"] == on_disk
    canonical = json.dumps(on_disk, sort_keys=True, separators=(",", ":")).encode()
    assert handoff["sha256"] == hashlib.sha256(canonical).hexdigest()
    assert (handoff["validator_address"], handoff["chain_id"]) == (ADDR, CHAIN)
    state = a.state()
    assert state["service"] == "inactive"
    assert max(state["signed"]) == int(handoff["state"]["height"])
    again = fence(a)
    assert again.status_code == 200
    assert again.get_json()["handoff"] == handoff


def test_failover_standby_signs_only_after_the_primary(
    pair: tuple[Node, Node], tmp_path: Path
) -> None:
    """After fence + activation with the hand-off, the standby's state is at or above the
    handed one, it signs only heights above the primary's last signature, no height is
    signed by both and the signing intervals do not overlap."""
    a, b = pair
    handoff = handed_over(a)
    last = int(handoff["state"]["height"])
    resp = activate(b, handoff)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["signing"] is True
    assert "wrote the hand-off's sign state" in resp.get_json()["detail"]
    wait_until(lambda: len(b.state()["signed"]) >= 3, "node-b signing")
    sb = b.state()
    assert min(sb["signed"]) > last
    assert min(sb["signed"]) - last >= CHECK  # the double-sign check held it that long
    assert double_signed(tmp_path / "cluster") == {}
    assert overlaps(a.state()["signing_intervals"], sb["signing_intervals"]) == []
    liveness = b.agent().get("/liveness", headers=AUTH).get_json()
    assert liveness["unit"] == "height"
    assert liveness["last_signed"] >= min(sb["signed"])
    again = activate(b, handoff)
    assert again.status_code == 200
    assert again.get_json()["detail"].startswith("already running")


def test_activation_never_lowers_the_standbys_own_state(pair: tuple[Node, Node]) -> None:
    """A standby whose own sign state is above the hand-off keeps it: the file is not lowered
    and the started signer signs nothing at or below it."""
    a, b = pair
    high = b.state()["height"] + 1000
    b.state_file.write_text(json.dumps({"height": str(high), "round": 0, "step": 3}))
    handoff = handed_over(a)
    resp = activate(b, handoff)
    assert resp.status_code == 200, resp.get_json()
    assert "kept own sign state" in resp.get_json()["detail"]
    assert json.loads(b.state_file.read_text())["height"] == str(high)
    b.wait_height(b.state()["height"] + CHECK + 3)
    assert b.state()["signed"] == []


def test_without_a_handoff_activation_waits_for_a_waiver_and_quiet_heights(
    pair: tuple[Node, Node], tmp_path: Path
) -> None:
    """Without a hand-off the activation is refused until waived; /liveness shows the heights
    since the key's last signature (the responder's quiet gate), and the waived standby signs
    only after those heights."""
    a, b = pair
    a.fault("state_unreadable")
    resp = fence(a)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["handoff"] == {}
    last = max(a.state()["signed"])
    refused = activate(b, None)
    assert refused.status_code == 409
    assert "no sign state handed over" in refused.get_json()["error"]
    assert b.state()["calls"]["start"] == 0

    def quiet() -> bool:
        live = b.agent().get("/liveness", headers=AUTH).get_json()
        assert live["last_signed"] in (last, None)
        return bool(live["last_signed"] is None or live["current"] - live["last_signed"] >= CHECK)

    wait_until(quiet, f"{CHECK} quiet heights")
    resp = activate(b, None, waived="operator alice: primary state lost")
    assert resp.status_code == 200, resp.get_json()
    assert "waived: operator alice" in resp.get_json()["detail"]
    wait_until(lambda: b.state()["signed"], "node-b signing")
    assert min(b.state()["signed"]) - last >= CHECK
    assert double_signed(tmp_path / "cluster") == {}


@pytest.mark.parametrize("config", ["[consensus]\ndouble_sign_check_height = 0\n", None])
def test_activation_refused_without_the_double_sign_check(
    pair: tuple[Node, Node], config: str | None
) -> None:
    """A standby whose config.toml has double_sign_check_height 0 (or no readable config) is
    refused with 409 before anything is written or started."""
    a, b = pair
    if config is None:
        b.config_file.unlink()
    else:
        b.config_file.write_text(config)
    before = b.state_file.read_bytes()
    resp = activate(b, handed_over(a))
    assert resp.status_code == 409
    assert (
        "double_sign_check_height" in resp.get_json()["error"]
        or "cannot read" in (resp.get_json()["error"])
    )
    assert b.state_file.read_bytes() == before
    assert b.state()["calls"]["start"] == 0


def test_stop_failing_fails_the_fence(pair: tuple[Node, Node]) -> None:
    """A stop command that fails while the signer still runs fails the fence (502)."""
    a, _ = pair
    a.fault("stop_fails")
    resp = fence(a)
    assert resp.status_code == 502
    assert "still runs" in resp.get_json()["error"]
    assert a.state()["signing"] is True


def test_signer_still_running_after_stop_is_not_fenced(pair: tuple[Node, Node]) -> None:
    """stop exits 0 but is_running keeps exiting 0: not confirmed within verify_timeout (504)."""
    a, _ = pair
    a.fault("stop_ignored")
    started = time.monotonic()
    resp = fence(a, verify_timeout=1.0)
    assert resp.status_code == 504
    assert time.monotonic() - started >= 1.0
    assert a.state()["signing"] is True


def test_unreadable_state_after_a_verified_stop_hands_over_nothing(
    pair: tuple[Node, Node],
) -> None:
    """A stopped signer whose state cannot be read is fenced (the node is stopped) with an
    empty hand-off, so the activation cannot proceed without a waiver."""
    a, b = pair
    a.fault("state_unreadable")
    resp = fence(a)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == resp.get_json() | {"signing": False, "handoff": {}}
    assert a.state()["service"] == "inactive"
    assert activate(b, None).status_code == 409
    assert b.state()["calls"]["start"] == 0


def _tamper(handoff: dict[str, Any], how: str) -> dict[str, Any]:
    bad: dict[str, Any] = json.loads(json.dumps(handoff))
    if how == "sha":
        bad["state"]["height"] = str(int(bad["state"]["height"]) + 1)
    elif how == "kind":
        bad["kind"] = "solana-tower"
    elif how == "validator":
        bad["validator_address"] = "AB" * 20
    elif how == "chain":
        bad["chain_id"] = "other-chain"
    return bad


@pytest.mark.parametrize("how", ["sha", "kind", "validator", "chain"])
def test_a_tampered_or_foreign_handoff_is_refused(pair: tuple[Node, Node], how: str) -> None:
    """A hand-off whose sha256 does not match, of another kind, validator or chain is refused
    (409) before the standby's state is touched or its signer started."""
    a, b = pair
    before = b.state_file.read_bytes()
    resp = activate(b, _tamper(handed_over(a), how))
    assert resp.status_code == 409, resp.get_json()
    assert b.state_file.read_bytes() == before
    assert b.state()["calls"]["start"] == 0


def test_start_failing_fails_the_activation(pair: tuple[Node, Node]) -> None:
    """A start command that fails is not an activation (502)."""
    a, b = pair
    b.fault("start_fails")
    resp = activate(b, handed_over(a))
    assert resp.status_code == 502
    assert "start exited 1" in resp.get_json()["error"]
    assert b.state()["signing"] is False


def test_rpc_showing_another_address_fails_the_activation(pair: tuple[Node, Node]) -> None:
    """A started node whose /status shows another validator address is not confirmed (504)."""
    a, b = pair
    b.fault("other_key")
    resp = activate(b, handed_over(a), verify_timeout=CHECK * BLOCK + 2.0)
    assert resp.status_code == 504
    assert "not ours" in resp.get_json()["error"]


def test_fence_fails_while_another_signer_holds_the_key(pair: tuple[Node, Node]) -> None:
    """When the chain shows our signatures above the stopped signer's last height, another
    signer holds the key: the fence is not confirmed (504) and hands nothing over."""
    a, b = pair
    b.config_file.write_text("[consensus]\ndouble_sign_check_height = 0\n")
    HTTP.post(b.url + "/sim/signer/start", timeout=5).raise_for_status()  # misconfigured
    resp = fence(a)
    assert resp.status_code == 504
    assert "another signer holds the key" in resp.get_json()["error"]


def test_fence_of_a_crashed_node_hands_over_its_state(pair: tuple[Node, Node]) -> None:
    """A crashed node (RPC hangs, unit failed) is fenced on the process check alone and hands
    over its last state."""
    a, _ = pair
    a.fault("crash")
    resp = fence(a, rpc_timeout=0.5)
    assert resp.status_code == 200, resp.get_json()
    handoff = resp.get_json()["handoff"]
    assert handoff["state"] == json.loads(a.state_file.read_bytes())
    assert handoff["sha256"] == canonical_sha256(handoff["state"])


def test_bearer_token_is_required(pair: tuple[Node, Node]) -> None:
    """No token is 401, a wrong one 403, and neither stops or starts anything."""
    a, b = pair
    agent = a.agent()
    assert agent.post("/fence", json={}).status_code == 401
    assert agent.post("/fence", json={}, headers={"Authorization": "Bearer nope"}).status_code == (
        403
    )
    assert b.agent().post("/activate", json={"handoff": None}).status_code == 401
    assert a.state()["calls"]["stop"] == 0
    assert b.state()["calls"]["start"] == 0
    assert a.state()["signing"] is True
