"""The simulated CometBFT node: RPC, signing and its sign state, the double-sign check, faults,
metrics and the fake service manager. In-process, with a hand-stepped wall clock."""

from __future__ import annotations

import json
import threading
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

import pytest
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.serving import make_server
from werkzeug.test import Client

from responder.sim import cometctl
from responder.sim.cosmos import (
    ADMIN_URL_FILE,
    CosmosSim,
    CosmosSimApp,
    double_signed,
    read_signatures,
)

ADDR = "5A1B2C3D5A1B2C3D5A1B2C3D5A1B2C3D5A1B2C3D"
GENESIS = 1_700_000_000.0
BLOCK = 1.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(GENESIS + 100.5)  # height 100


def make_sim(
    tmp_path: Path, clock: Clock, name: str = "a", *, signing: bool = False, check: int = 3
) -> CosmosSim:
    return CosmosSim(
        name,
        tmp_path / name,
        tmp_path / "cluster",
        ADDR.lower(),
        "test-1",
        signing=signing,
        genesis_time=GENESIS,
        block_seconds=BLOCK,
        double_sign_check_height=check,
        hang_seconds=0.05,
        clock=clock,
    )


def local(sim: CosmosSim) -> Client:
    """A test client calling from loopback, as the tests and cometctl do."""
    app = CosmosSimApp(sim)

    def loopback(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ["REMOTE_ADDR"] = "127.0.0.1"
        return app(environ, start_response)

    return Client(loopback)


def advance(clock: Clock, sims: list[CosmosSim], heights: int) -> None:
    """Step chain time one height at a time; every sim ticks at each height."""
    for _ in range(heights):
        clock.now += BLOCK
        for sim in sims:
            sim.tick()


def rpc(client: Client, path: str) -> Any:
    resp = client.get(path)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()["result"]


def test_home_is_prepared_like_init_and_kept_when_present(tmp_path: Path, clock: Clock) -> None:
    """A new home gets config.toml with double_sign_check_height and a zero sign state; an
    existing config is not overwritten."""
    sim = make_sim(tmp_path, clock, check=7)
    config = tomllib.loads(sim.config_file.read_text())
    assert config["consensus"]["double_sign_check_height"] == 7
    assert json.loads(sim.state_file.read_text()) == {"height": "0", "round": 0, "step": 0}
    sim.config_file.write_text("[consensus]\ndouble_sign_check_height = 0\n")
    again = make_sim(tmp_path, clock, check=7)
    assert "= 0" in again.config_file.read_text()


def test_status_follows_chain_time(tmp_path: Path, clock: Clock) -> None:
    """/status has CometBFT's shape; the height follows the shared genesis and block time."""
    sim = make_sim(tmp_path, clock)
    client = local(sim)
    result = rpc(client, "/status")
    assert result["node_info"]["network"] == "test-1"
    assert result["sync_info"] == result["sync_info"] | {
        "latest_block_height": "100",
        "catching_up": False,
    }
    assert result["validator_info"]["address"] == ADDR
    advance(clock, [sim], 5)
    assert rpc(client, "/status")["sync_info"]["latest_block_height"] == "105"


def test_signer_signs_each_height_writing_state_first(tmp_path: Path, clock: Clock) -> None:
    """A running signer signs every new height: state file, cluster record and /commit agree."""
    sim = make_sim(tmp_path, clock, signing=True)
    client = local(sim)
    advance(clock, [sim], 3)
    assert sim.state()["signed"] == [101, 102, 103]
    state = json.loads(sim.state_file.read_text())
    assert (state["height"], state["round"], state["step"]) == ("103", 0, 3)
    assert state["signature"] and state["signbytes"]
    assert [r["height"] for r in read_signatures(tmp_path / "cluster")] == [101, 102, 103]
    sigs = rpc(client, "/commit?height=102")["signed_header"]["commit"]["signatures"]
    assert ADDR in {s["validator_address"] for s in sigs}
    assert len(sigs) == 2  # ours plus the other validator's


def test_commit_shows_the_pairs_signatures_to_every_node(tmp_path: Path, clock: Clock) -> None:
    """A standby's /commit shows the primary's signatures (one chain), not only its own."""
    primary = make_sim(tmp_path, clock, "a", signing=True)
    standby = make_sim(tmp_path, clock, "b")
    advance(clock, [primary, standby], 2)
    sigs = rpc(local(standby), "/commit?height=102")["signed_header"]["commit"]
    assert ADDR in {s["validator_address"] for s in sigs["signatures"]}
    assert standby.state()["signed"] == []


def test_commit_above_the_node_height_is_an_rpc_error(tmp_path: Path, clock: Clock) -> None:
    """/commit above the node's height answers CometBFT's JSON-RPC error, not a made-up block."""
    client = local(make_sim(tmp_path, clock))
    resp = client.get("/commit?height=500")
    assert resp.status_code == 500
    assert "current blockchain height 100" in resp.get_json()["error"]["data"]
    assert client.get("/commit?height=abc").status_code == 400
    assert rpc(client, "/commit")["signed_header"]["header"]["height"] == "100"


def test_signer_never_signs_at_or_below_its_sign_state(tmp_path: Path, clock: Clock) -> None:
    """A sign state handed over before start makes the signer resume after that height."""
    sim = make_sim(tmp_path, clock)
    sim.state_file.write_text(json.dumps({"height": "104", "round": 0, "step": 3}))
    sim.start_signer()
    advance(clock, [sim], 6)
    assert sim.state()["signed"] == [105, 106]
    assert sim.state()["skipped_at_or_below_state"] == 4


def test_double_sign_check_holds_a_started_signer(tmp_path: Path, clock: Clock) -> None:
    """With double_sign_check_height 3 a signer started while the key signs elsewhere waits,
    signs nothing, and runs only once 3 heights passed without our signature."""
    primary = make_sim(tmp_path, clock, "a", signing=True)
    standby = make_sim(tmp_path, clock, "b", check=3)
    advance(clock, [primary, standby], 2)
    assert standby.start_signer() == "waiting"
    assert standby.state()["service"] == "activating"
    advance(clock, [primary, standby], 3)
    assert standby.state()["signer"] == "waiting"
    primary.stop_signer()
    last = primary.state()["last_signed_height"]
    advance(clock, [primary, standby], 2)
    assert standby.state()["signer"] == "waiting"
    advance(clock, [primary, standby], 2)
    assert standby.state()["signer"] == "running"
    assert standby.state()["signed"][0] - last >= 3
    assert double_signed(tmp_path / "cluster") == {}


def test_without_the_double_sign_check_both_sign(tmp_path: Path, clock: Clock) -> None:
    """With double_sign_check_height 0 (CometBFT's default) a second signer starts at once and
    the same height is signed twice: why the agent refuses to activate such a node."""
    primary = make_sim(tmp_path, clock, "a", signing=True)
    standby = make_sim(tmp_path, clock, "b", check=0)
    assert standby.start_signer() == "running"
    advance(clock, [primary, standby], 2)
    assert double_signed(tmp_path / "cluster") == {101: ["a", "b"], 102: ["a", "b"]}


def test_config_is_read_when_the_signer_starts(tmp_path: Path, clock: Clock) -> None:
    """Editing config.toml takes effect at the next start, as with the real node."""
    primary = make_sim(tmp_path, clock, "a", signing=True)
    standby = make_sim(tmp_path, clock, "b", check=0)
    advance(clock, [primary, standby], 1)
    standby.config_file.write_text("[consensus]\ndouble_sign_check_height = 5\n")
    assert standby.start_signer() == "waiting"


def test_crash_hangs_rpc_and_stops_signing(tmp_path: Path, clock: Clock) -> None:
    """crash: RPC and metrics hang then fail, the unit is failed, nothing is signed."""
    sim = make_sim(tmp_path, clock, signing=True)
    client = local(sim)
    sim.set_fault("crash", True)
    assert client.get("/status").status_code == 503
    assert client.get("/metrics").status_code == 503
    assert sim.state()["service"] == "failed"
    advance(clock, [sim], 2)
    assert sim.state()["signed"] == []
    sim.set_fault("crash", False)
    advance(clock, [sim], 1)
    assert sim.state()["signed"] == [103]


def test_hang_keeps_the_unit_active_but_nothing_answers(tmp_path: Path, clock: Clock) -> None:
    """hang: the process still runs (is-active) but RPC hangs and nothing is signed."""
    sim = make_sim(tmp_path, clock, signing=True)
    sim.set_fault("hang", True)
    assert local(sim).get("/status").status_code == 503
    assert sim.state()["service"] == "active"
    advance(clock, [sim], 2)
    assert sim.state()["signed"] == []
    assert sim.state()["missed_blocks"] == 2


def test_stalled_node_is_catching_up_and_misses_blocks(tmp_path: Path, clock: Clock) -> None:
    """stalled: the height stops, catching_up is true, the signer misses every height."""
    sim = make_sim(tmp_path, clock, signing=True)
    client = local(sim)
    sim.set_fault("stalled", True)
    advance(clock, [sim], 3)
    sync = rpc(client, "/status")["sync_info"]
    assert (sync["latest_block_height"], sync["catching_up"]) == ("100", True)
    assert sim.state()["signed"] == []
    sim.set_fault("stalled", False)
    advance(clock, [sim], 1)
    assert sim.state()["signed"] == [104]


def test_state_unreadable_garbles_the_file_until_cleared(tmp_path: Path, clock: Clock) -> None:
    """state_unreadable: the file is not JSON, nothing is signed, a start fails; clearing the
    fault restores the content."""
    sim = make_sim(tmp_path, clock, signing=True)
    advance(clock, [sim], 1)
    before = sim.state_file.read_bytes()
    sim.set_fault("state_unreadable", True)
    with pytest.raises(ValueError):
        json.loads(sim.state_file.read_bytes())
    advance(clock, [sim], 2)
    assert sim.state()["signed"] == [101]
    sim.stop_signer()
    with pytest.raises(ValueError, match="cannot read"):
        sim.start_signer()
    sim.set_fault("state_unreadable", False)
    assert sim.state_file.read_bytes() == before


def test_service_faults(tmp_path: Path, clock: Clock) -> None:
    """start_fails and stop_fails fail the service call; stop_ignored claims success and keeps
    signing; other_key shows another validator address and signs with it."""
    sim = make_sim(tmp_path, clock, signing=True)
    client = local(sim)
    sim.set_fault("stop_fails", True)
    assert client.post("/sim/signer/stop").status_code == 500
    assert sim.state()["signer"] == "running"
    sim.clear_faults()
    sim.set_fault("stop_ignored", True)
    assert client.post("/sim/signer/stop").status_code == 200
    assert sim.state()["signer"] == "running"
    sim.clear_faults()
    assert client.post("/sim/signer/stop").get_json()["service"] == "inactive"
    sim.set_fault("start_fails", True)
    assert client.post("/sim/signer/start").status_code == 500
    assert sim.state()["signer"] == "stopped"
    sim.clear_faults()
    sim.set_fault("other_key", True)
    assert client.post("/sim/signer/start").get_json()["service"] == "active"
    assert rpc(client, "/status")["validator_info"]["address"] != ADDR
    advance(clock, [sim], 1)
    assert sim.state()["signed"] == []
    assert {r["address"] for r in read_signatures(tmp_path / "cluster")} == {sim.other_key_address}


def test_fault_api_and_loopback_only(tmp_path: Path, clock: Clock) -> None:
    """Faults are set and cleared over /sim, unknown ones are refused, /sim is loopback-only."""
    sim = make_sim(tmp_path, clock)
    client = local(sim)
    assert client.post("/sim/faults", json={"fault": "stalled"}).get_json() == {
        "faults": ["stalled"]
    }
    assert client.post("/sim/faults", json={"fault": "nope"}).status_code == 400
    assert client.delete("/sim/faults/stalled").get_json() == {"faults": []}
    client.post("/sim/faults", json={"fault": "drop_peers"})
    assert client.post("/sim/faults/clear").get_json() == {"faults": []}
    resp = Client(CosmosSimApp(sim)).post(
        "/sim/signer/start", environ_base={"REMOTE_ADDR": "10.0.0.9"}
    )
    assert resp.status_code == 403
    assert sim.state()["signer"] == "stopped"


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def test_metrics_have_the_names_and_labels_the_rules_use(tmp_path: Path, clock: Clock) -> None:
    """The series rules/cosmos.yml reads, with chain_id and validator_address labels; a node
    whose key never signed exports no validator series; a stopped signer keeps its last value."""
    rules = (Path(__file__).parent.parent / "rules" / "cosmos.yml").read_text()
    primary = make_sim(tmp_path, clock, "a", signing=True)
    standby = make_sim(tmp_path, clock, "b")
    advance(clock, [primary, standby], 3)
    metrics = _samples(local(primary).get("/metrics").get_data(as_text=True))
    for name in (
        "cometbft_consensus_height",
        "cometbft_consensus_validator_last_signed_height",
        "cometbft_consensus_validator_missed_blocks",
        "cometbft_blocksync_syncing",
        "cometbft_p2p_peers",
    ):
        assert name in rules
        assert metrics[name][0][0]["chain_id"] == "test-1"
    assert metrics["cometbft_consensus_validator_last_signed_height"] == [
        ({"chain_id": "test-1", "validator_address": ADDR}, 103.0)
    ]
    assert metrics["cometbft_consensus_height"][0][1] == 103.0
    standby_metrics = _samples(local(standby).get("/metrics").get_data(True))
    assert "cometbft_consensus_validator_last_signed_height" not in standby_metrics
    primary.stop_signer()
    primary.set_fault("stalled", True)
    primary.set_fault("drop_peers", True)
    advance(clock, [primary], 2)
    metrics = _samples(local(primary).get("/metrics").get_data(as_text=True))
    assert metrics["cometbft_consensus_validator_last_signed_height"][0][1] == 103.0
    assert metrics["cometbft_blocksync_syncing"][0][1] == 1.0
    assert metrics["cometbft_p2p_peers"][0][1] == 2.0


@pytest.fixture
def served(tmp_path: Path, clock: Clock) -> Iterator[CosmosSim]:
    """A sim served on a loopback port with HOME/sim-admin-url written, as main() does."""
    sim = make_sim(tmp_path, clock, signing=True)
    server = make_server("127.0.0.1", 0, CosmosSimApp(sim), threaded=True)
    (sim.home / ADMIN_URL_FILE).write_text(f"http://127.0.0.1:{server.server_port}\n")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield sim
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_cometctl_speaks_like_systemctl(
    served: CosmosSim, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """cometctl is-active exits 0 only while active (3 otherwise), stop/start exit 0 or 1, and
    a home without a running sim is exit 4."""
    home = ["--home", str(served.home)]
    assert cometctl.main([*home, "is-active"]) == 0
    assert cometctl.main([*home, "stop"]) == 0
    assert cometctl.main([*home, "is-active"]) == 3
    assert "inactive" in capsys.readouterr().out
    served.set_fault("start_fails", True)
    assert cometctl.main([*home, "start"]) == 1
    served.set_fault("start_fails", False)
    assert cometctl.main([*home, "start"]) == 0
    assert cometctl.main([*home, "is-active"]) == 0
    assert cometctl.main(["--home", str(tmp_path / "nowhere"), "is-active"]) == 4
