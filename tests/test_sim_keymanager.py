"""The simulator's Ethereum Keymanager API (responder.sim --keymanager), mostly as real subprocesses."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.test import Client

from responder.eip3076 import Interchange, InterchangeError, check_handoff, parse_interchange
from responder.sim import (
    FAULTS,
    MAINNET_GENESIS_ROOT,
    SEPOLIA_GENESIS_ROOT,
    Sim,
    SimApp,
    overlaps,
)
from responder.sim.ethereum import parse_args
from tests.test_sim import TOKEN, SimProc, running_sims, wait_until

SPE = 4  # slots per epoch in these tests: with 0.05 s slots an epoch is 0.2 s
ROOT_HEX = re.compile(r"^0x[0-9a-f]{64}$")


def pubkey(i: int) -> str:
    return "0x" + f"{i:02x}" * 48


K1, K2, K3 = pubkey(0xA1), pubkey(0xB2), pubkey(0xC3)


def keystore(pk: str, *, prefix: bool = False, path: str = "m/12381/3600/0/0/0") -> str:
    """An EIP-2335 keystore as the JSON string the API carries (pubkey hex without 0x)."""
    return json.dumps(
        {
            "version": 4,
            "uuid": "9f75a3fa-1e5a-49f9-be3d-f5a19779c6fa",
            "path": path,
            "pubkey": pk if prefix else pk[2:],
            "crypto": {
                "kdf": {"function": "pbkdf2", "params": {}, "message": ""},
                "checksum": {"function": "sha256", "params": {}, "message": ""},
                "cipher": {"function": "aes-128-ctr", "params": {}, "message": ""},
            },
        }
    )


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., SimProc]]:
    """Start keymanager sims: `start(mode, keys, signing=..., *extra)`; all are stopped."""
    with running_sims(tmp_path) as run:

        def start_km(
            mode: str | None = "local",
            keys: tuple[str, ...] = (K1, K2),
            *extra: str,
            signing: bool = True,
            name: str = "node-a",
        ) -> SimProc:
            argv = ["--slots-per-epoch", str(SPE), *extra]
            if mode is not None:
                argv += ["--keymanager", mode]
            if keys:
                argv += ["--pubkeys", ",".join(keys)]
            if signing:
                argv.append("--signing")
            return run(*argv, name=name)

        yield start_km


def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "km-token"
    path.write_text(TOKEN + "\n")
    return path


def km(sim: SimProc, method: str, path: str = "/eth/v1/keystores", **kw: Any) -> Any:
    """A Keymanager call that must answer 200; returns the JSON body."""
    resp = sim.agent(method, path, **kw)
    assert resp.status_code == 200, resp.text
    return resp.json()


def delete(sim: SimProc, *keys: str) -> dict[str, Any]:
    body: dict[str, Any] = km(sim, "DELETE", json={"pubkeys": list(keys)})
    return body


def statuses(body: dict[str, Any]) -> list[str]:
    return [item["status"] for item in body["data"]]


def history(body: dict[str, Any]) -> Interchange:
    raw = body["slashing_protection"]
    assert isinstance(raw, str), "the current spec carries the history as a JSON string"
    return parse_interchange(raw)


def keys_state(sim: SimProc) -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = sim.state()["keys"]
    return data


def wait_history(sim: SimProc, keys: tuple[str, ...], atts: int, blocks: int = 0) -> None:
    def enough() -> bool:
        state = keys_state(sim)
        return all(
            k in state and state[k]["attestations"] >= atts and state[k]["blocks"] >= blocks
            for k in keys
        )

    wait_until(enough, f"{atts} attestations and {blocks} blocks for {len(keys)} keys", 10)


def wait_slots(sim: SimProc, n: int) -> None:
    """Let n slots pass (the head moves, or the stalled distance grows)."""
    first = sim.state()
    mark = first["head_slot"] + first["sync_distance"]
    wait_until(
        lambda: (s := sim.state())["head_slot"] + s["sync_distance"] >= mark + n, f"{n} slots"
    )


def test_keymanager_endpoints_404_unless_enabled(start: Callable[..., SimProc]) -> None:
    """Without --keymanager both APIs answer 404; each mode serves only its own API."""
    plain = start(None, ())
    local = start("local")
    remote = start("remote")
    for sim, path in (
        (plain, "/eth/v1/keystores"),
        (plain, "/eth/v1/remotekeys"),
        (local, "/eth/v1/remotekeys"),
        (remote, "/eth/v1/keystores"),
    ):
        resp = sim.agent("GET", path)
        assert resp.status_code == 404, (sim.url, path)
        assert "message" in resp.json()
    assert local.agent("GET", "/eth/v1/keystores").status_code == 200
    assert remote.agent("GET", "/eth/v1/remotekeys").status_code == 200
    assert plain.state()["keys"] == {}


def test_cli_validates_keymanager_flags() -> None:
    """--pubkeys needs --keymanager, --signing needs keys, and keys/roots must be well-formed."""
    base = ["--name", "n", "--pair", "p", "--listen", "127.0.0.1:0"]
    for bad in (
        ["--pubkeys", K1],
        ["--keymanager", "local", "--signing"],
        ["--keymanager", "local", "--pubkeys", "0x1234"],
        ["--keymanager", "vault"],
        ["--genesis-validators-root", "0x00"],
        ["--slots-per-epoch", "0"],
    ):
        with pytest.raises(SystemExit):
            parse_args([*base, *bad])
    args = parse_args([*base, "--keymanager", "local", "--pubkeys", f"0x{K1[2:].upper()},{K2}"])
    assert (args.pubkeys, args.genesis_validators_root, args.slots_per_epoch) == (
        [K1, K2],
        MAINNET_GENESIS_ROOT,
        32,
    )


def test_export_history_in_process_is_exact() -> None:
    """Driving the slots by hand gives one attestation per epoch and a block every 8th slot."""
    sim = Sim(
        "node-a", "mainnet-a", keymanager="local", signing=True, pubkeys=[K1], slots_per_epoch=4
    )
    for _ in range(40):  # slots 1..40: epochs 0..10
        sim.tick()
    doc = sim.export_history([K1, K3])
    parsed = parse_interchange(json.dumps(doc))
    check_handoff(parsed, genesis_validators_root=MAINNET_GENESIS_ROOT, pubkeys=(K1,))
    [entry] = parsed.data
    assert [(a.source_epoch, a.target_epoch) for a in entry.signed_attestations] == [
        (str(max(0, e - 1)), str(e)) for e in range(11)
    ]
    assert [b.slot for b in entry.signed_blocks] == ["8", "16", "24", "32", "40"]
    roots = [a.signing_root for a in entry.signed_attestations]
    roots += [b.signing_root for b in entry.signed_blocks]
    assert all(r is not None and ROOT_HEX.match(r) for r in roots)
    assert len(set(roots)) == len(roots)
    # the same slots on another node yield the same roots: deterministic
    again = Sim(
        "node-b", "mainnet-a", keymanager="local", signing=True, pubkeys=[K1], slots_per_epoch=4
    )
    for _ in range(40):
        again.tick()
    assert again.export_history([K1]) == doc

    # a node importing that history refuses everything at or below its marks
    standby = Sim("node-b", "mainnet-a", keymanager="local", pubkeys=[K1], slots_per_epoch=4)
    standby.import_history(json.dumps(doc))
    with standby.cond:
        standby.set_enabled_locked(True)
    for _ in range(48):  # slots 1..48: epochs 0..12
        standby.tick()
    state = standby.state()["keys"][K1]
    assert (state["max_target_epoch"], state["max_block_slot"]) == (12, 48)
    assert (state["attestations"], state["blocks"]) == (13, 6)
    # refused: attestation attempts at epochs 0..10, blocks at slots 8..40
    assert standby.state()["refused_signings"] == 11 + 5


def test_list_local_keys(start: Callable[..., SimProc]) -> None:
    """GET lists the loaded keys with a derivation path; a standby lists none and is not signing."""
    primary = start("local", (K1, K2))
    standby = start("local", (K1, K2), signing=False, name="node-b")
    assert km(primary, "GET") == {
        "data": [
            {"validating_pubkey": k, "derivation_path": "m/12381/3600/0/0/0", "readonly": False}
            for k in (K1, K2)
        ]
    }
    state = primary.state()
    assert (state["enabled"], state["signing"], state["keymanager"]) == (True, True, "local")
    assert {k: v["loaded"] for k, v in state["keys"].items()} == {K1: True, K2: True}
    assert state["calls"]["km_get"] == 1
    assert km(standby, "GET") == {"data": []}
    idle = standby.state()
    assert (idle["enabled"], idle["signing"], idle["keys"], idle["signing_intervals"]) == (
        False,
        False,
        {},
        [],
    )


def test_delete_exports_real_history_and_stops_signing(start: Callable[..., SimProc]) -> None:
    """DELETE answers deleted with a valid EIP-3076 history of real signing, and signing stops."""
    sim = start("local", (K1, K2))
    wait_history(sim, (K1, K2), atts=3, blocks=1)
    body = delete(sim, K2, K1)
    assert statuses(body) == ["deleted", "deleted"]
    doc = history(body)
    check_handoff(doc, genesis_validators_root=MAINNET_GENESIS_ROOT, pubkeys=(K1, K2))
    assert [v.pubkey for v in doc.data] == [K2, K1]
    for entry in doc.data:
        targets = [int(a.target_epoch) for a in entry.signed_attestations]
        assert len(targets) >= 3
        assert targets == sorted(set(targets))
        assert all(
            int(a.source_epoch) == max(0, int(a.target_epoch) - 1)
            for a in entry.signed_attestations
        )
        assert entry.signed_blocks and all(int(b.slot) % 8 == 0 for b in entry.signed_blocks)
    state = sim.state()
    assert (state["enabled"], state["signing"]) == (False, False)
    assert all(end is not None for _, end in state["signing_intervals"])
    assert {k: v["loaded"] for k, v in state["keys"].items()} == {K1: False, K2: False}
    assert km(sim, "GET") == {"data": []}
    counts = {k: (v["attestations"], v["blocks"]) for k, v in state["keys"].items()}
    wait_slots(sim, 3 * SPE)  # epochs pass, nothing more is signed
    assert {k: (v["attestations"], v["blocks"]) for k, v in keys_state(sim).items()} == counts
    assert sim.state()["calls"]["km_delete"] == 1


def test_repeated_delete_answers_not_active_with_history(start: Callable[..., SimProc]) -> None:
    """A repeated DELETE answers not_active with the same history; unknown keys are not_found."""
    sim = start("local", (K1, K2))
    wait_history(sim, (K1, K2), atts=2)
    first = history(delete(sim, K1, K2))
    again = delete(sim, K1, K2)
    assert statuses(again) == ["not_active", "not_active"]
    assert history(again).to_json() == first.to_json()
    mixed = delete(sim, K3, K1)
    assert statuses(mixed) == ["not_found", "not_active"]
    assert history(mixed).pubkeys == {K1}


def test_delete_unknown_key_is_not_found(start: Callable[..., SimProc]) -> None:
    """An unknown key is not_found with an empty history, and the loaded keys keep signing."""
    sim = start("local", (K1,))
    body = delete(sim, K3)
    assert statuses(body) == ["not_found"]
    assert history(body).data == ()
    assert sim.state()["signing"] is True
    assert [k["validating_pubkey"] for k in km(sim, "GET")["data"]] == [K1]
    for bad in ({"pubkeys": ["0x1234"]}, {"keys": [K1]}, [K1]):
        resp = sim.agent("DELETE", "/eth/v1/keystores", json=bad)
        assert resp.status_code == 400 and "message" in resp.json(), bad
    assert sim.state()["signing"] is True


def test_post_history_resumes_only_above_the_imported_marks(
    start: Callable[..., SimProc],
) -> None:
    """The standby imports the history, refuses at or below its marks, then signs above them."""
    primary = start("local", (K1, K2))
    standby = start("local", (K1, K2), signing=False, name="node-b")
    standby.fault("stall_head")  # freeze the standby's head well below the primary's marks
    wait_history(primary, (K1, K2), atts=6, blocks=2)
    body = delete(primary, K1, K2)
    sp = body["slashing_protection"]
    marks = {v.pubkey: v for v in history(body).data}
    imported = keys_state(primary)
    frozen = standby.state()["head_slot"]
    assert frozen // SPE < min(v["max_target_epoch"] for v in imported.values())

    resp = km(
        standby,
        "POST",
        json={
            "keystores": [keystore(K1), keystore(K2)],
            "passwords": ["pw1", "pw2"],
            "slashing_protection": sp,
        },
    )
    assert statuses(resp) == ["imported", "imported"]
    after = keys_state(standby)
    for k in (K1, K2):
        for field in ("max_target_epoch", "max_block_slot", "attestations", "blocks"):
            assert after[k][field] == imported[k][field], (k, field)
    assert standby.state()["signing"] is True
    # while the head is frozen it tries once per key at its epoch, and is refused
    wait_until(lambda: standby.state()["refused_signings"] >= 2, "the refused attempts")
    wait_slots(standby, 2 * SPE)
    assert standby.state()["refused_signings"] == 2 + 2 * (frozen > 0 and frozen % 8 == 0)
    assert all(
        v["attestations"] == imported[k]["attestations"] for k, v in keys_state(standby).items()
    )

    standby.clear("stall_head")

    def above_marks() -> bool:
        state = keys_state(standby)
        return all(state[k]["max_target_epoch"] > imported[k]["max_target_epoch"] for k in (K1, K2))

    wait_until(above_marks, "signing above the imported marks", timeout=10)
    state = keys_state(standby)
    refused = 0
    for k in (K1, K2):
        mark_target, mark_slot = imported[k]["max_target_epoch"], imported[k]["max_block_slot"]
        # every own attestation is above the imported mark: one per epoch from mark + 1
        assert state[k]["attestations"] == imported[k]["attestations"] + (
            state[k]["max_target_epoch"] - mark_target
        )
        refused += mark_target - frozen // SPE + 1
        refused += sum(1 for s in range(max(frozen, 1), mark_slot + 1) if s % 8 == 0)
        assert state[k]["blocks"] - imported[k]["blocks"] == sum(
            1 for s in range(mark_slot + 1, (state[k]["max_block_slot"] or 0) + 1) if s % 8 == 0
        )
    assert standby.state()["refused_signings"] == refused

    # the standby's own export extends the primary's: nothing was lost, nothing is below the marks
    mine = history(delete(standby, K1, K2))
    for entry in mine.data:
        own = {(a.source_epoch, a.target_epoch) for a in entry.signed_attestations} - {
            (a.source_epoch, a.target_epoch) for a in marks[entry.pubkey].signed_attestations
        }
        assert own and min(int(t) for _, t in own) > imported[entry.pubkey]["max_target_epoch"]
        assert all(a in entry.signed_attestations for a in marks[entry.pubkey].signed_attestations)
    assert (
        overlaps(primary.state()["signing_intervals"], standby.state()["signing_intervals"]) == []
    )


def test_post_duplicate_and_per_key_errors(start: Callable[..., SimProc]) -> None:
    """A second POST answers duplicate; bad keystores and empty passwords answer error in order."""
    sim = start("local", (K1,))
    resp = km(
        sim,
        "POST",
        json={
            "keystores": [
                keystore(K2, prefix=True, path="m/12381/3600/7/0/0"),
                keystore(K1),
                "{not json",
                json.dumps({"version": 4}),
                keystore(K3),
            ],
            "passwords": ["pw", "pw", "pw", "pw", ""],
        },
    )
    assert statuses(resp) == ["imported", "duplicate", "error", "error", "error"]
    assert all(item["message"] for item in resp["data"])
    listed = {k["validating_pubkey"]: k["derivation_path"] for k in km(sim, "GET")["data"]}
    assert listed == {K1: "m/12381/3600/0/0/0", K2: "m/12381/3600/7/0/0"}
    again = km(sim, "POST", json={"keystores": [keystore(K2)], "passwords": ["pw"]})
    assert statuses(again) == ["duplicate"]
    assert sim.state()["calls"]["km_post"] == 2


def test_post_rejects_bad_requests_and_foreign_history(start: Callable[..., SimProc]) -> None:
    """Length mismatch, unparsable or foreign-chain history reject the whole POST with 400."""
    primary = start("local", (K1,))
    wait_history(primary, (K1,), atts=1)
    sp = delete(primary, K1)["slashing_protection"]
    other = start(
        "local",
        (K1,),
        "--genesis-validators-root",
        SEPOLIA_GENESIS_ROOT,
        signing=False,
        name="node-b",
    )
    for bad in (
        {"keystores": [keystore(K1)], "passwords": []},
        {"keystores": [keystore(K1)], "passwords": ["pw"], "slashing_protection": "{nope"},
        {"keystores": [keystore(K1)], "passwords": ["pw"], "slashing_protection": sp},
        {"keystores": [keystore(K1)], "passwords": ["pw"], "slashing_protection": 5},
        {"passwords": ["pw"]},
    ):
        resp = other.agent("POST", "/eth/v1/keystores", json=bad)
        assert resp.status_code == 400, bad
        assert resp.json()["message"]
    assert (
        "genesis_validators_root"
        in other.agent(
            "POST",
            "/eth/v1/keystores",
            json={"keystores": [keystore(K1)], "passwords": ["pw"], "slashing_protection": sp},
        ).json()["message"]
    )
    state = other.state()
    assert (state["keys"], state["signing"]) == ({}, False)


def test_generic_fence_and_activate_in_keymanager_mode(start: Callable[..., SimProc]) -> None:
    """/fence unloads every key but keeps its history; /activate reloads the --pubkeys."""
    sim = start("local", (K1, K2))
    wait_history(sim, (K1, K2), atts=1)
    assert sim.agent("POST", "/fence").json() == {"signing": False}
    assert km(sim, "GET") == {"data": []}
    assert statuses(body := delete(sim, K1, K2)) == ["not_active", "not_active"]
    assert history(body).pubkeys == {K1, K2}
    assert sim.agent("POST", "/activate").json() == {"signing": True}
    assert [k["validating_pubkey"] for k in km(sim, "GET")["data"]] == [K1, K2]
    assert sim.state()["enabled"] is True


def test_km_key_error_keeps_the_key(start: Callable[..., SimProc]) -> None:
    """km_key_error on one key answers error for it, keeps it loaded and out of the history."""
    sim = start("local", (K1, K2))
    resp = sim.fault("km_key_error", K1)
    assert resp.json() == {"faults": [], "key_faults": {"km_key_error": [K1]}}
    body = delete(sim, K1, K2)
    assert statuses(body) == ["error", "deleted"]
    assert body["data"][0]["message"]
    assert history(body).pubkeys == {K2}
    assert [k["validating_pubkey"] for k in km(sim, "GET")["data"]] == [K1]
    assert sim.state()["signing"] is True
    sim.fault("km_key_error", K2)
    post = km(sim, "POST", json={"keystores": [keystore(K2)], "passwords": ["pw"]})
    assert statuses(post) == ["error"]
    assert keys_state(sim)[K2]["loaded"] is False
    one = requests.delete(f"{sim.url}/sim/faults/km_key_error", params={"pubkey": K1}, timeout=5)
    assert one.json() == {"faults": [], "key_faults": {"km_key_error": [K2]}}
    assert sim.clear("km_key_error").json() == {"faults": []}
    assert statuses(km(sim, "POST", json={"keystores": [keystore(K2)], "passwords": ["pw"]})) == [
        "imported"
    ]
    sim.fault("km_key_error")  # without a pubkey: every key
    assert statuses(delete(sim, K1, K2)) == ["error", "error"]
    assert sim.state()["signing"] is True
    refused = sim.fault("km_500", K1)
    assert refused.status_code == 400 and "km_key_error" in refused.json()["error"]
    assert sim.fault("km_key_error", "0x12").status_code == 400


def test_km_500_fails_every_keymanager_call(start: Callable[..., SimProc]) -> None:
    """km_500 answers 500 on GET, POST and DELETE and changes nothing until cleared."""
    sim = start("local", (K1,))
    sim.fault("km_500")
    for method, body in (
        ("GET", None),
        ("DELETE", {"pubkeys": [K1]}),
        ("POST", {"keystores": [keystore(K2)], "passwords": ["pw"]}),
    ):
        resp = sim.agent(method, "/eth/v1/keystores", json=body)
        assert resp.status_code == 500 and resp.json()["message"], method
    state = sim.state()
    assert state["signing"] is True and list(state["keys"]) == [K1]
    assert (state["calls"]["km_get"], state["calls"]["km_delete"], state["calls"]["km_post"]) == (
        1,
        1,
        1,
    )
    sim.clear("km_500")
    assert statuses(delete(sim, K1)) == ["deleted"]


def test_km_slow_holds_until_cleared(start: Callable[..., SimProc]) -> None:
    """km_slow holds keymanager calls open; clearing it mid-wait lets the DELETE complete."""
    sim = start("local", (K1,), "--hang-seconds", "30")
    sim.fault("km_slow")
    with pytest.raises(requests.ReadTimeout):
        sim.agent("GET", "/eth/v1/keystores", timeout=0.3)
    result: dict[str, requests.Response] = {}
    thread = threading.Thread(
        target=lambda: result.update(
            r=sim.agent("DELETE", "/eth/v1/keystores", json={"pubkeys": [K1]}, timeout=10)
        )
    )
    thread.start()
    wait_until(lambda: sim.state()["calls"]["km_delete"] == 1, "the DELETE to be held")
    assert sim.state()["signing"] is True
    sim.clear("km_slow")
    thread.join(5)
    assert not thread.is_alive()
    assert result["r"].status_code == 200
    assert statuses(result["r"].json()) == ["deleted"]
    assert sim.state()["signing"] is False


def test_km_slow_writes_holds_only_delete_and_post(start: Callable[..., SimProc]) -> None:
    """km_slow_writes leaves the GET listing fast and holds a DELETE until cleared."""
    sim = start("local", (K1,), "--hang-seconds", "30")
    sim.fault("km_slow_writes")
    assert km(sim, "GET")["data"][0]["validating_pubkey"] == K1
    with pytest.raises(requests.ReadTimeout):
        sim.agent("DELETE", "/eth/v1/keystores", json={"pubkeys": [K1]}, timeout=0.3)
    sim.clear("km_slow_writes")
    wait_until(lambda: sim.state()["signing"] is False, "the held DELETE to complete")


def test_km_slow_gives_up_after_hang_seconds(start: Callable[..., SimProc]) -> None:
    """Uncleared, km_slow answers normally after --hang-seconds."""
    sim = start("local", (K1,), "--hang-seconds", "0.3")
    sim.fault("km_slow")
    t0 = time.monotonic()
    assert km(sim, "GET")["data"][0]["validating_pubkey"] == K1
    assert time.monotonic() - t0 >= 0.25


def test_km_quirk_not_found_still_returns_history(start: Callable[..., SimProc]) -> None:
    """With km_quirk_not_found a repeated DELETE answers not_found but still carries the history."""
    sim = start("local", (K1,))
    wait_history(sim, (K1,), atts=1)
    first = history(delete(sim, K1))
    sim.fault("km_quirk_not_found")
    again = delete(sim, K1)
    assert statuses(again) == ["not_found"]
    assert history(again).to_json() == first.to_json()
    assert statuses(delete(sim, K3)) == ["not_found"]


def test_km_quirk_camel_renames_the_history_field(start: Callable[..., SimProc]) -> None:
    """With km_quirk_camel the history comes as `slashingProtection`."""
    sim = start("local", (K1,))
    wait_history(sim, (K1,), atts=1)
    sim.fault("km_quirk_camel")
    body = delete(sim, K1)
    assert "slashing_protection" not in body
    doc = parse_interchange(body["slashingProtection"])
    check_handoff(doc, genesis_validators_root=MAINNET_GENESIS_ROOT, pubkeys=(K1,))


def test_km_quirk_object_sends_the_history_as_an_object(start: Callable[..., SimProc]) -> None:
    """With km_quirk_object the history is a JSON object, as older clients send it."""
    sim = start("local", (K1,))
    wait_history(sim, (K1,), atts=1)
    sim.fault("km_quirk_object")
    raw = delete(sim, K1)["slashing_protection"]
    assert isinstance(raw, dict)
    check_handoff(
        parse_interchange(raw), genesis_validators_root=MAINNET_GENESIS_ROOT, pubkeys=(K1,)
    )


def test_km_foreign_root_exports_another_chain(start: Callable[..., SimProc]) -> None:
    """With km_foreign_root the exported history names another chain and fails the handoff check."""
    sim = start("local", (K1,))
    wait_history(sim, (K1,), atts=1)
    sim.fault("km_foreign_root")
    doc = history(delete(sim, K1))
    assert doc.genesis_validators_root == SEPOLIA_GENESIS_ROOT
    with pytest.raises(InterchangeError, match="genesis_validators_root"):
        check_handoff(doc, genesis_validators_root=MAINNET_GENESIS_ROOT, pubkeys=(K1,))


def test_remote_mode_get_post_delete(start: Callable[..., SimProc]) -> None:
    """Remote mode lists, imports and deletes signer definitions; DELETE carries no history."""
    signer = "https://signer.example:9000"
    sim = start("remote", (K1,), "--signer-url", signer)
    assert km(sim, "GET", "/eth/v1/remotekeys") == {
        "data": [{"pubkey": K1, "url": signer, "readonly": False}]
    }
    post = km(
        sim,
        "POST",
        "/eth/v1/remotekeys",
        json={
            "remote_keys": [
                {"pubkey": K2, "url": signer},
                {"pubkey": K1, "url": signer},
                {"pubkey": "0x12", "url": signer},
                {"pubkey": K3},
            ]
        },
    )
    assert statuses(post) == ["imported", "duplicate", "error", "error"]
    assert [k["pubkey"] for k in km(sim, "GET", "/eth/v1/remotekeys")["data"]] == [K1, K2]
    sim.fault("km_key_error", K2)
    body = km(sim, "DELETE", "/eth/v1/remotekeys", json={"pubkeys": [K1, K2, K3]})
    assert set(body) == {"data"}
    assert statuses(body) == ["deleted", "error", "not_found"]
    assert sim.state()["signing"] is True
    sim.clear("km_key_error")
    body = km(sim, "DELETE", "/eth/v1/remotekeys", json={"pubkeys": [K2, K1]})
    assert statuses(body) == ["deleted", "not_found"]
    state = sim.state()
    assert (state["signing"], state["enabled"]) == (False, False)
    calls = state["calls"]
    assert (calls["km_get"], calls["km_post"], calls["km_delete"]) == (2, 1, 2)

    standby = start("remote", (), signing=False, name="node-b")
    assert standby.state()["signing"] is False
    post = km(
        standby, "POST", "/eth/v1/remotekeys", json={"remote_keys": [{"pubkey": K1, "url": signer}]}
    )
    assert statuses(post) == ["imported"]
    assert standby.state()["signing"] is True
    assert overlaps(state["signing_intervals"], standby.state()["signing_intervals"]) == []


def test_keymanager_requires_the_token(start: Callable[..., SimProc], tmp_path: Path) -> None:
    """With --token-file every keymanager call answers 401 without and 403 with a wrong token."""
    token = str(token_file(tmp_path))
    local = start("local", (K1,), "--token-file", token)
    remote = start("remote", (K1,), "--token-file", token, name="node-b")
    for sim, path in ((local, "/eth/v1/keystores"), (remote, "/eth/v1/remotekeys")):
        for method in ("GET", "POST", "DELETE"):
            missing = sim.agent(method, path, json={"pubkeys": [K1]})
            assert missing.status_code == 401 and missing.json()["message"], (path, method)
            assert missing.headers["WWW-Authenticate"] == "Bearer"
            wrong = sim.agent(method, path, token="wrong", json={"pubkeys": [K1]})
            assert wrong.status_code == 403 and wrong.json()["message"], (path, method)
        state = sim.state()
        assert state["signing"] is True
        assert (
            state["calls"]["km_get"],
            state["calls"]["km_post"],
            state["calls"]["km_delete"],
        ) == (0, 0, 0)
    assert km(local, "GET", token=TOKEN)["data"][0]["validating_pubkey"] == K1
    assert statuses(
        km(remote, "DELETE", "/eth/v1/remotekeys", token=TOKEN, json={"pubkeys": [K1]})
    ) == ["deleted"]


def test_new_faults_are_listed() -> None:
    """The keymanager faults are valid fault names."""
    for name in (
        "km_key_error",
        "km_500",
        "km_slow",
        "km_quirk_not_found",
        "km_quirk_camel",
        "km_quirk_object",
        "km_foreign_root",
    ):
        assert name in FAULTS


# ---- the simulated beacon node API (in process) ------------------------------------------


LOOPBACK = {"REMOTE_ADDR": "127.0.0.1"}  # the /sim API answers loopback callers only


def beacon_sim(**kw: Any) -> tuple[Sim, Client]:
    sim = Sim("node-a", "mainnet-a", slots_per_epoch=SPE, **kw)
    return sim, Client(SimApp(sim))


def test_beacon_genesis_serves_the_chain_and_a_genesis_time() -> None:
    """GET genesis carries the sim's root and genesis time; the head starts at the wall slot."""
    before = time.time()
    sim, client = beacon_sim(genesis_validators_root=SEPOLIA_GENESIS_ROOT, genesis_time=1000)
    after = time.time()
    data = client.get("/eth/v1/beacon/genesis").get_json()["data"]
    assert data == {
        "genesis_time": "1000",
        "genesis_validators_root": SEPOLIA_GENESIS_ROOT,
        "genesis_fork_version": "0x00000000",
    }
    assert int(before - 1000) <= sim.head_slot <= int(after - 1000)  # 1 s slots
    default = Sim("node-b", "mainnet-a")  # genesis: its start, in whole seconds
    assert 0 <= time.time() - default.genesis_time < 5
    assert default.head_slot <= 1  # 1 s slots: at most one slot since genesis


def test_beacon_syncing_follows_stall_head() -> None:
    """Syncing answers synced normally, and syncing N slots behind while stall_head is on."""
    sim, client = beacon_sim()
    synced = client.get("/eth/v1/node/syncing").get_json()["data"]
    assert synced["is_syncing"] is False and synced["el_offline"] is False
    assert synced["sync_distance"] == "0" and synced["head_slot"] == str(sim.head_slot)
    sim.set_fault("stall_head", True)
    for _ in range(3):
        sim.tick()
    behind = client.get("/eth/v1/node/syncing").get_json()["data"]
    assert (behind["is_syncing"], behind["sync_distance"]) == (True, "3")
    sim.set_fault("stall_head", False)
    assert client.get("/eth/v1/node/syncing").get_json()["data"]["is_syncing"] is False


def test_beacon_down_answers_503_on_the_beacon_api() -> None:
    """beacon_down makes every beacon API call answer 503."""
    sim, client = beacon_sim()
    sim.set_fault("beacon_down", True)
    for path in (
        "/eth/v1/beacon/genesis",
        "/eth/v1/node/syncing",
        "/eth/v1/validator/duties/proposer/0",
    ):
        assert client.get(path).status_code == 503, path


def test_proposer_duties_are_set_over_the_sim_api() -> None:
    """POST /sim/duties replaces the duties; the beacon API lists those of the asked epoch."""
    _sim, client = beacon_sim()
    assert client.get("/eth/v1/validator/duties/proposer/1").get_json()["data"] == []
    duties = [
        {"slot": "5", "pubkey": K1.upper().replace("0X", "0x"), "validator_index": "3"},
        {"slot": 4, "pubkey": K2},
        {"slot": 9, "pubkey": K3, "validator_index": 9},
    ]
    resp = client.post("/sim/duties", json=duties, environ_base=LOOPBACK)
    assert resp.status_code == 200 and resp.get_json() == {"duties": 3}
    body = client.get("/eth/v1/validator/duties/proposer/1").get_json()
    assert body["data"] == [
        {"pubkey": K2, "validator_index": "0", "slot": "4"},
        {"pubkey": K1, "validator_index": "3", "slot": "5"},
    ]
    assert ROOT_HEX.match(body["dependent_root"]) and body["execution_optimistic"] is False
    assert client.post("/sim/duties", json=[], environ_base=LOOPBACK).get_json() == {"duties": 0}
    assert client.get("/eth/v1/validator/duties/proposer/2").get_json()["data"] == []


def test_bad_proposer_duties_are_refused() -> None:
    """Malformed duties, two proposers for one slot, or a non-loopback caller are refused."""
    sim, client = beacon_sim()
    for bad in (
        {"slot": 1, "pubkey": K1},
        [{"slot": -1, "pubkey": K1}],
        [{"slot": "x", "pubkey": K1}],
        [{"slot": 1, "pubkey": "0x12"}],
        [{"slot": 1, "pubkey": K1, "validator_index": True}],
        [{"slot": 1, "pubkey": K1}, {"slot": "1", "pubkey": K2}],
    ):
        assert client.post("/sim/duties", json=bad, environ_base=LOOPBACK).status_code == 400, bad
    remote = client.post(
        "/sim/duties", json=[{"slot": 1, "pubkey": K1}], environ_base={"REMOTE_ADDR": "10.1.2.3"}
    )
    assert remote.status_code == 403
    assert sim.proposer_duties == {}


def test_genesis_time_flag_is_parsed() -> None:
    """--genesis-time sets the beacon genesis; it must be a positive integer."""
    base = ["--name", "a", "--pair", "p", "--listen", "127.0.0.1:0"]
    assert parse_args([*base, "--genesis-time", "1606824023"]).genesis_time == 1606824023
    assert parse_args(base).genesis_time is None
    with pytest.raises(SystemExit):
        parse_args([*base, "--genesis-time", "-5"])
