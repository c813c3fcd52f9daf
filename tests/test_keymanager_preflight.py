"""Failover readiness of the ethereum-keymanager driver (preflight) and the proposer-duty check.

The nodes are fakes (pytest-httpserver, or the simulator served on a loopback port); every
check must be read-only, so each test also proves that only GETs reached the fakes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response
from werkzeug.serving import BaseWSGIServer, make_server

from responder.config import LivenessConfig, load_config
from responder.drivers.base import Check, DriverError
from responder.drivers.keymanager import KeymanagerDriver
from responder.liveness import BeaconClient, Chain, proposal_ahead
from responder.sim import Sim, SimApp
from tests.conftest import base_config, write_config
from tests.test_sim import free_port
from tests.tokens import NODE_TOKEN

ROOT = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"
OTHER_ROOT = "0xd8ea171f3c94aea21ebc42a1ed61052acf3f9209c00e4efbaaddac09ed9b8078"
KEYS = ["0x" + c * 96 for c in ("a", "b", "c")]
STRANGER = "0x" + "d" * 96
PASSWORD = "hunter2-very-secret"
KS = "/eth/v1/keystores"
GENESIS = "/beacon/eth/v1/beacon/genesis"
SYNCING = "/beacon/eth/v1/node/syncing"
NAMES = ["node-a:token", "node-a:keys", "node-a:keystores", "node-a:chain", "node-a:sync"]


def keystore_json(pubkey: str) -> str:
    """An EIP-2335 keystore as a client writes it (pubkey hex without 0x)."""
    return json.dumps(
        {
            "version": 4,
            "uuid": "9f75a3fa-1e5a-49f9-be3d-f5a19779c6fa",
            "path": "m/12381/3600/0/0/0",
            "pubkey": pubkey[2:],
            "crypto": {"kdf": {}, "checksum": {}, "cipher": {}},
        }
    )


class Setup:
    """A pair's config files in tmp_path; `driver()` builds node-a's driver from them."""

    def __init__(self, tmp_path: Path, url: str, beacon_url: str | None) -> None:
        self.tmp_path = tmp_path
        self.url = url
        self.beacon_url = beacon_url
        keys_dir = tmp_path / "keys"
        keys_dir.mkdir()
        self.keystores: list[Path] = []
        self.passwords: list[Path] = []
        for i, key in enumerate(KEYS):
            ks, pw = keys_dir / f"keystore-{i}.json", keys_dir / f"password-{i}.txt"
            ks.write_text(keystore_json(key))
            pw.write_text(PASSWORD + "\n")
            ks.chmod(0o600)
            pw.chmod(0o600)
            self.keystores.append(ks)
            self.passwords.append(pw)
        self.token_file = tmp_path / "secrets" / "node-token"

    def driver(self, **driver_extra: Any) -> KeymanagerDriver:
        mode = driver_extra.get("mode", "local")
        driver: dict[str, Any] = {
            "type": "ethereum-keymanager",
            "url": self.url,
            "token_file": "./secrets/node-token",
            "connect_timeout": "1s",
            "timeout": "1s",
        }
        if self.beacon_url is not None:
            driver["beacon_url"] = self.beacon_url
        driver = {k: v for k, v in (driver | driver_extra).items() if v is not None}
        standby = driver | {"url": f"{driver['url']}-standby"}  # only node-a is asked
        nodes = [
            {"name": "node-a", "match": {"node": "node-a"}, "driver": driver},
            {"name": "node-b", "match": {"node": "node-b"}, "driver": standby},
        ]
        eth: dict[str, Any] = {"genesis_validators_root": ROOT, "pubkeys": KEYS}
        if mode == "local":
            eth["keystores"] = [
                {"pubkey": k, "keystore_file": str(ks), "password_file": str(pw)}
                for k, ks, pw in zip(KEYS, self.keystores, self.passwords, strict=True)
            ]
        else:
            eth["remote_signer_url"] = "http://127.0.0.1:9000"
        data = base_config(lambda n: "unused", nodes=nodes, pair={"ethereum": eth})
        config = load_config(write_config(self.tmp_path, data))
        pair = config.pairs[0]
        node = pair.node("node-a")
        assert node.driver.type == "ethereum-keymanager"
        return KeymanagerDriver("node-a", node.driver, pair)  # type: ignore[arg-type]


def by_name(checks: tuple[Check, ...]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def methods(httpserver: HTTPServer) -> set[str]:
    return {r.method for r, _ in httpserver.log}


def no_secrets(checks: tuple[Check, ...]) -> None:
    for check in checks:
        assert PASSWORD not in check.reason and NODE_TOKEN not in check.reason, check
        assert '"crypto"' not in check.reason, check


def listing_handler(keys: list[str]) -> Callable[..., Response]:
    """GET /eth/v1/keystores listing `keys`, for the right Bearer token only."""

    def handle(request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {NODE_TOKEN}":
            return Response('{"message": "bad token"}', status=403, mimetype="application/json")
        data = [
            {"validating_pubkey": k, "derivation_path": "m/12381/3600/0/0/0", "readonly": False}
            for k in keys
        ]
        return Response(json.dumps({"data": data}), mimetype="application/json")

    return handle


def serve(
    httpserver: HTTPServer,
    *,
    keys: list[str] | None = KEYS,
    root: str = ROOT,
    syncing: dict[str, Any] | None = None,
) -> None:
    """A healthy node by default: the keymanager at /node-a, its beacon node at /beacon.

    `keys=None` leaves the listing to the test (handlers registered first answer first).
    """
    if keys is not None:
        httpserver.expect_request(f"/node-a{KS}").respond_with_handler(listing_handler(keys))
    genesis = {"genesis_time": "1606824023", "genesis_validators_root": root}
    httpserver.expect_request(GENESIS).respond_with_json({"data": genesis})
    sync = {"head_slot": "9000", "sync_distance": "0", "is_syncing": False, "el_offline": False}
    httpserver.expect_request(SYNCING).respond_with_json({"data": sync | (syncing or {})})


@pytest.fixture
def setup(tmp_path: Path, httpserver: HTTPServer) -> Setup:
    return Setup(tmp_path, httpserver.url_for("/node-a"), httpserver.url_for("/beacon"))


# ---- everything passing ------------------------------------------------------------------


def test_healthy_setup_passes_every_check(setup: Setup, httpserver: HTTPServer) -> None:
    """A sound setup passes token, keys, keystores, chain and sync, with GETs only."""
    serve(httpserver)
    checks = setup.driver().preflight()
    assert [c.name for c in checks] == NAMES
    assert all(c.ok is True for c in checks), checks
    found = by_name(checks)
    assert found["node-a:keys"].reason == "all 3 keys loaded: this node signs"
    assert ROOT in found["node-a:chain"].reason
    assert "head slot 9000" in found["node-a:sync"].reason
    assert methods(httpserver) == {"GET"}
    no_secrets(checks)


def test_beacon_calls_never_carry_the_keymanager_token(
    setup: Setup, httpserver: HTTPServer
) -> None:
    """The Keymanager token goes to the validator client only, never to the beacon node."""
    serve(httpserver)
    setup.driver().preflight()
    beacon = [r for r, _ in httpserver.log if r.path.startswith("/beacon")]
    assert {r.path for r in beacon} == {GENESIS, SYNCING}
    assert all("Authorization" not in r.headers for r in beacon)


def test_no_keys_loaded_is_a_clean_standby(setup: Setup, httpserver: HTTPServer) -> None:
    """A node holding none of the pair's keys passes: it is a ready standby."""
    serve(httpserver, keys=[STRANGER])
    found = by_name(setup.driver().preflight())
    assert found["node-a:keys"].ok is True
    assert found["node-a:keys"].reason == "none of the 3 keys loaded"


@pytest.fixture
def served_sim() -> Iterator[tuple[Sim, str]]:
    """The simulator (local keymanager, signing KEYS, token) served on a loopback port."""
    sim = Sim(
        "node-a",
        "mainnet-a",
        signing=True,
        token=NODE_TOKEN,
        keymanager="local",
        genesis_validators_root=ROOT,
        pubkeys=KEYS,
    )
    server: BaseWSGIServer = make_server("127.0.0.1", 0, SimApp(sim), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield sim, f"http://127.0.0.1:{server.server_port}"
    finally:
        sim.stop()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_healthy_sim_passes_every_check(tmp_path: Path, served_sim: tuple[Sim, str]) -> None:
    """Against the simulator, every check passes and the node's keys are left as they were."""
    sim, url = served_sim
    driver = Setup(tmp_path, url, url).driver()
    checks = driver.preflight()
    assert [c.name for c in checks] == NAMES
    assert all(c.ok is True for c in checks), checks
    state = sim.state()
    assert state["calls"]["km_get"] == 1
    assert state["calls"]["km_delete"] == state["calls"]["km_post"] == 0
    assert sorted(sim.loaded) == KEYS


def test_sim_stalled_head_fails_sync(tmp_path: Path, served_sim: tuple[Sim, str]) -> None:
    """The simulator's stall_head fault makes its beacon node report syncing."""
    sim, url = served_sim
    sim.set_fault("stall_head", True)
    sim.tick()
    sim.tick()
    found = by_name(Setup(tmp_path, url, url).driver().preflight())
    assert found["node-a:sync"].ok is False
    assert found["node-a:sync"].reason == "beacon node is syncing, 2 slots behind"
    assert found["node-a:chain"].ok is True


# ---- token --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_refused_token_fails_keys(setup: Setup, httpserver: HTTPServer, status: int) -> None:
    """A listing answered 401 or 403 fails the keys check saying the token was refused."""
    httpserver.expect_request(f"/node-a{KS}").respond_with_json({"message": "no"}, status=status)
    serve(httpserver, keys=None)
    found = by_name(setup.driver().preflight())
    keys = found["node-a:keys"]
    assert keys.ok is False
    assert f"answered {status}" in keys.reason and "token was refused" in keys.reason
    assert found["node-a:token"].ok is True  # the file is sound; the node refused its value
    assert methods(httpserver) == {"GET"}


def test_token_file_readable_by_others_fails(setup: Setup, httpserver: HTTPServer) -> None:
    """A token file with mode 0644 fails the token check and says to chmod 600 it."""
    serve(httpserver)
    driver = setup.driver()
    setup.token_file.chmod(0o644)
    token = by_name(driver.preflight())["node-a:token"]
    assert token.ok is False
    assert "chmod 600" in token.reason and str(setup.token_file) in token.reason
    assert methods(httpserver) == {"GET"}


def test_missing_token_file_fails_token_and_keys(setup: Setup, httpserver: HTTPServer) -> None:
    """A token file that vanished fails the token check and the listing that needs it."""
    serve(httpserver)
    driver = setup.driver()
    setup.token_file.unlink()
    found = by_name(driver.preflight())
    assert found["node-a:token"].ok is False and "cannot read" in found["node-a:token"].reason
    assert found["node-a:keys"].ok is False
    assert not [r for r, _ in httpserver.log if r.path.startswith("/node-a")]


# ---- keys ---------------------------------------------------------------------------------


def test_partial_key_set_fails(setup: Setup, httpserver: HTTPServer) -> None:
    """A node holding some but not all of the pair's keys fails the keys check."""
    serve(httpserver, keys=[*KEYS[:2], STRANGER])
    keys = by_name(setup.driver().preflight())["node-a:keys"]
    assert keys.ok is False
    assert keys.reason.startswith("2 of 3 keys loaded: a partial set;")
    assert KEYS[2][:12] in keys.reason
    assert methods(httpserver) == {"GET"}


def test_listing_error_fails_keys_without_quoting_the_body(
    setup: Setup, httpserver: HTTPServer
) -> None:
    """A listing answered 500 fails the keys check; the other checks still run."""
    httpserver.expect_request(f"/node-a{KS}").respond_with_json(
        {"message": f"internal error, token {NODE_TOKEN}"}, status=500
    )
    serve(httpserver, keys=None)
    checks = setup.driver().preflight()
    found = by_name(checks)
    assert found["node-a:keys"].ok is False and "answered 500" in found["node-a:keys"].reason
    assert found["node-a:chain"].ok is True and found["node-a:sync"].ok is True
    no_secrets(checks)


def test_listing_timeout_fails_keys(setup: Setup, httpserver: HTTPServer) -> None:
    """A validator client that never answers the listing fails the keys check in time."""
    release = threading.Event()

    def hang(_request: Request) -> Response:
        release.wait(5)
        return Response("{}", mimetype="application/json")

    httpserver.expect_request(f"/node-a{KS}").respond_with_handler(hang)
    serve(httpserver, keys=None)
    try:
        keys = by_name(setup.driver(timeout="0.2s", connect_timeout="0.2s").preflight())
    finally:
        release.set()
    assert keys["node-a:keys"].ok is False
    assert "within" in keys["node-a:keys"].reason or "timed out" in keys["node-a:keys"].reason


# ---- keystores ----------------------------------------------------------------------------


def test_missing_password_file_fails_keystores(setup: Setup, httpserver: HTTPServer) -> None:
    """A password file that is gone fails the keystores check, naming its path."""
    serve(httpserver)
    driver = setup.driver()
    setup.passwords[1].unlink()
    checks = driver.preflight()
    keystores = by_name(checks)["node-a:keystores"]
    assert keystores.ok is False
    assert str(setup.passwords[1]) in keystores.reason and "cannot read" in keystores.reason
    assert str(setup.passwords[0]) not in keystores.reason
    no_secrets(checks)


def test_keystore_with_wrong_pubkey_fails(setup: Setup, httpserver: HTTPServer) -> None:
    """A keystore holding another key fails the keystores check, naming both keys."""
    serve(httpserver)
    setup.keystores[0].write_text(keystore_json(STRANGER))
    checks = setup.driver().preflight()
    keystores = by_name(checks)["node-a:keystores"]
    assert keystores.ok is False
    assert str(setup.keystores[0]) in keystores.reason
    assert f"holds pubkey {STRANGER}, not {KEYS[0]}" in keystores.reason
    no_secrets(checks)


def test_keystore_pubkey_match_ignores_prefix_and_case(
    setup: Setup, httpserver: HTTPServer
) -> None:
    """A keystore pubkey with a 0x prefix or in upper case still matches its key."""
    serve(httpserver)
    doc = json.loads(keystore_json(KEYS[0]))
    setup.keystores[0].write_text(json.dumps(doc | {"pubkey": "0x" + KEYS[0][2:].upper()}))
    assert by_name(setup.driver().preflight())["node-a:keystores"].ok is True


def test_each_keystore_problem_is_named(setup: Setup, httpserver: HTTPServer) -> None:
    """Not JSON, no crypto object, group-readable files, an empty password: each is named."""
    serve(httpserver)
    setup.keystores[0].write_text("not json " + PASSWORD)
    doc = json.loads(keystore_json(KEYS[1]))
    del doc["crypto"]
    setup.keystores[1].write_text(json.dumps(doc))
    setup.keystores[2].chmod(0o640)
    setup.passwords[2].write_text("\n")
    checks = setup.driver().preflight()
    reason = by_name(checks)["node-a:keystores"].reason
    assert by_name(checks)["node-a:keystores"].ok is False
    assert f"keystore {setup.keystores[0]}: not a JSON object" in reason
    assert f"keystore {setup.keystores[1]}: no crypto object" in reason
    assert f"keystore {setup.keystores[2]}: accessible by group/others (mode 640)" in reason
    assert f"{setup.passwords[2]} is empty" in reason
    no_secrets(checks)


def test_remote_mode_has_no_keystores_check(setup: Setup, httpserver: HTTPServer) -> None:
    """Remote-signer mode without a token (Web3Signer) checks keys, chain and sync only."""
    httpserver.expect_request("/node-a/eth/v1/remotekeys").respond_with_json(
        {"data": [{"pubkey": k, "url": "http://127.0.0.1:9000", "readonly": False} for k in KEYS]}
    )
    serve(httpserver, keys=None)
    checks = setup.driver(mode="remote", token_file=None).preflight()
    assert [c.name for c in checks] == ["node-a:keys", "node-a:chain", "node-a:sync"]
    assert all(c.ok is True for c in checks), checks
    assert methods(httpserver) == {"GET"}


# ---- chain and sync -----------------------------------------------------------------------


def test_beacon_on_another_chain_fails_chain(setup: Setup, httpserver: HTTPServer) -> None:
    """A beacon node with another genesis_validators_root fails the chain check, naming both."""
    serve(httpserver, root=OTHER_ROOT.upper().replace("0X", "0x"))
    found = by_name(setup.driver().preflight())
    assert found["node-a:chain"].ok is False
    assert OTHER_ROOT in found["node-a:chain"].reason and ROOT in found["node-a:chain"].reason
    assert found["node-a:sync"].ok is True
    assert methods(httpserver) == {"GET"}


def test_root_comparison_ignores_case(setup: Setup, httpserver: HTTPServer) -> None:
    """A beacon node reporting the pair's root in upper case is on the pair's chain."""
    serve(httpserver, root="0x" + ROOT[2:].upper())
    assert by_name(setup.driver().preflight())["node-a:chain"].ok is True


def test_syncing_beacon_fails_sync(setup: Setup, httpserver: HTTPServer) -> None:
    """A beacon node that is syncing fails the sync check, saying how far behind it is."""
    serve(httpserver, syncing={"is_syncing": True, "sync_distance": "42"})
    sync = by_name(setup.driver().preflight())["node-a:sync"]
    assert (sync.ok, sync.reason) == (False, "beacon node is syncing, 42 slots behind")
    assert methods(httpserver) == {"GET"}


def test_execution_client_offline_fails_sync(setup: Setup, httpserver: HTTPServer) -> None:
    """A synced beacon node whose execution client is offline fails the sync check."""
    serve(httpserver, syncing={"el_offline": True})
    sync = by_name(setup.driver().preflight())["node-a:sync"]
    assert sync.ok is False and "execution client offline" in sync.reason


def test_unreachable_beacon_fails_chain_and_sync(tmp_path: Path, httpserver: HTTPServer) -> None:
    """A beacon node nobody answers at fails chain and sync; the other checks still pass."""
    beacon = f"http://127.0.0.1:{free_port()}"
    serve(httpserver)
    checks = Setup(tmp_path, httpserver.url_for("/node-a"), beacon).driver().preflight()
    found = by_name(checks)
    assert [c.name for c in checks] == NAMES
    assert found["node-a:chain"].ok is False and beacon in found["node-a:chain"].reason
    assert found["node-a:sync"].ok is False and "not asked" in found["node-a:sync"].reason
    assert all(found[n].ok is True for n in NAMES[:3])


def test_garbled_beacon_answers_fail_without_raising(setup: Setup, httpserver: HTTPServer) -> None:
    """Non-JSON or shapeless beacon answers are failing checks, never an exception."""
    httpserver.expect_request(f"/node-a{KS}").respond_with_handler(listing_handler(KEYS))
    httpserver.expect_request(GENESIS).respond_with_json({"data": {"genesis_time": "1"}})
    httpserver.expect_request(SYNCING).respond_with_data("<html>", content_type="text/html")
    found = by_name(setup.driver().preflight())
    assert found["node-a:chain"].ok is False and "no genesis_validators_root" in (
        found["node-a:chain"].reason
    )
    assert found["node-a:sync"].ok is False and "not JSON" in found["node-a:sync"].reason


def test_no_beacon_url_makes_chain_unverifiable(tmp_path: Path, httpserver: HTTPServer) -> None:
    """Without beacon_url the chain check is unverifiable and nothing asks a beacon node."""
    serve(httpserver)
    checks = Setup(tmp_path, httpserver.url_for("/node-a"), None).driver().preflight()
    assert [c.name for c in checks] == NAMES[:4]
    chain = by_name(checks)["node-a:chain"]
    assert chain.ok is None and chain.verdict == "unverifiable"
    assert chain.reason == "no beacon_url configured: the chain of this node cannot be checked"
    assert not [r for r, _ in httpserver.log if r.path.startswith("/beacon")]


# ---- proposer duties ----------------------------------------------------------------------

CHAIN = Chain(genesis_time=1000.0, seconds_per_slot=12.0, slots_per_epoch=32)
AT_SLOT_5 = 1000.0 + 5 * 12 + 3  # 3 s into slot 5


def test_chain_slot_follows_genesis() -> None:
    """Chain.slot counts whole slots since genesis and is 0 before it."""
    assert CHAIN.slot(AT_SLOT_5) == 5
    assert CHAIN.slot(1000.0 + 12 * 32) == 32
    assert CHAIN.slot(0.0) == 0
    assert CHAIN.slot_start(6) == 1072.0


def test_proposal_in_the_current_slot_is_found() -> None:
    """A proposal by one of our keys in the current slot is returned with the slot's end."""
    assert proposal_ahead(CHAIN, {5: KEYS[0]}, KEYS, AT_SLOT_5, 0) == (5, 1072.0)


def test_proposal_window_is_inclusive() -> None:
    """The last slot of the window counts; one slot beyond it does not."""
    duties = {9: KEYS[1]}
    assert proposal_ahead(CHAIN, duties, KEYS, AT_SLOT_5, 4) == (9, 1000.0 + 10 * 12)
    assert proposal_ahead(CHAIN, duties, KEYS, AT_SLOT_5, 3) is None


def test_earliest_of_our_proposals_wins() -> None:
    """With several proposals ahead, the first one by our keys is returned."""
    duties = {6: STRANGER, 7: KEYS[2], 8: KEYS[0]}
    assert proposal_ahead(CHAIN, duties, KEYS, AT_SLOT_5, 10) == (7, 1000.0 + 8 * 12)


def test_past_and_foreign_proposals_are_ignored() -> None:
    """Proposals before the current slot or by other validators make a switchover safe."""
    duties = {4: KEYS[0], 6: STRANGER}
    assert proposal_ahead(CHAIN, duties, KEYS, AT_SLOT_5, 32) is None
    assert proposal_ahead(CHAIN, {}, KEYS, AT_SLOT_5, 32) is None


def test_proposal_pubkeys_compare_case_insensitively() -> None:
    """Duties and pubkeys match whatever their hex case."""
    duties = {6: "0x" + KEYS[0][2:].upper()}
    assert proposal_ahead(CHAIN, duties, [KEYS[0]], AT_SLOT_5, 1) == (6, 1084.0)


def test_negative_window_is_refused() -> None:
    """A negative window is a caller's bug, not 'no proposal'."""
    with pytest.raises(ValueError):
        proposal_ahead(CHAIN, {}, KEYS, AT_SLOT_5, -1)


def beacon_client(url: str, slots_per_epoch: int = 32) -> BeaconClient:
    config = LivenessConfig(
        beacon_url=url, validator_indices=(1,), slots_per_epoch=slots_per_epoch, timeout=2.0
    )
    return BeaconClient(config, ROOT)


def test_proposer_duties_maps_slots_to_pubkeys(httpserver: HTTPServer) -> None:
    """proposer_duties reads the epoch's duties into slot -> lower-cased pubkey."""
    rows = [
        {"pubkey": "0x" + KEYS[0][2:].upper(), "validator_index": "1", "slot": "64"},
        {"pubkey": STRANGER, "validator_index": "7", "slot": "70"},
    ]
    httpserver.expect_request(
        "/eth/v1/validator/duties/proposer/2", method="GET"
    ).respond_with_json({"dependent_root": ROOT, "execution_optimistic": False, "data": rows})
    assert beacon_client(httpserver.url_for("")).proposer_duties(2) == {
        64: KEYS[0],
        70: STRANGER,
    }


@pytest.mark.parametrize(
    ("status", "body", "why"),
    [
        (200, {"data": {}}, "no data list"),
        (200, {"data": [{"pubkey": KEYS[0], "slot": "x"}]}, "bad entry"),
        (200, {"data": [{"pubkey": KEYS[0]}]}, "bad entry"),
        (200, {"data": [{"pubkey": "0x12", "slot": "64"}]}, "bad pubkey"),
        (200, {"data": [{"pubkey": KEYS[0], "slot": "96"}]}, "name slot 96"),
        (503, {"code": 503, "message": "syncing"}, "answered 503"),
    ],
)
def test_proposer_duties_refuses_bad_answers(
    httpserver: HTTPServer, status: int, body: dict[str, Any], why: str
) -> None:
    """An unusable duties answer raises DriverError saying what was wrong."""
    httpserver.expect_request("/eth/v1/validator/duties/proposer/2").respond_with_json(
        body, status=status
    )
    with pytest.raises(DriverError, match=why):
        beacon_client(httpserver.url_for("")).proposer_duties(2)


def test_sim_duties_reach_proposal_ahead(served_sim: tuple[Sim, str]) -> None:
    """Duties set on the simulator over /sim/duties are what proposal_ahead decides on."""
    sim, url = served_sim
    client = beacon_client(url, slots_per_epoch=sim.slots_per_epoch)
    chain = Chain(float(sim.genesis_time), sim.slot_seconds, sim.slots_per_epoch)
    now = sim.genesis_time + 40.5 * sim.slot_seconds  # slot 40, epoch 1
    duties = [
        {"slot": "42", "pubkey": KEYS[1], "validator_index": "11"},
        {"slot": 70, "pubkey": STRANGER, "validator_index": 12},
    ]
    resp = requests.post(url + "/sim/duties", json=duties, timeout=5)
    assert resp.status_code == 200, resp.text
    epoch = client.proposer_duties(chain.epoch(now))
    assert epoch == {42: KEYS[1]}
    assert proposal_ahead(chain, epoch, KEYS, now, 1) is None
    assert proposal_ahead(chain, epoch, KEYS, now, 2) == (42, chain.slot_start(43))
    assert client.proposer_duties(2) == {70: STRANGER}
