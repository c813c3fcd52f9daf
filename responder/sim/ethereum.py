"""A simulated validator node (validator client, beacon node and node agent in one process).

End-to-end tests and the demo start one per node so that real Prometheus can scrape it, real
Alertmanager can fire on it, and the responder's `http` driver can fence and activate it. Faults are
injected over a loopback-only API, and every signing interval is recorded so a test can prove
that two nodes never signed at once.

Its beacon node answers the few beacon API calls the responder makes: genesis (the chain, and a
`genesis_time` from which the wall-clock slot follows), syncing (syncing while `stall_head` is
on) and proposer duties (whatever a test set with POST /sim/duties).

With `--keymanager local|remote` the node also speaks the standard Ethereum Keymanager API
(`/eth/v1/keystores` or `/eth/v1/remotekeys`): its loaded validator keys are what it signs with, and
a per-key slashing-protection database accumulates one attestation per epoch and a block every 8th
slot while it signs, exported as EIP-3076 by DELETE and merged from the history a POST carries.

Run: python -m responder.sim [ethereum] --name node-a --pair mainnet-a --listen 127.0.0.1:PORT [--signing]
     [--keymanager local --pubkeys 0x...,0x...]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from ..eip3076 import InterchangeError, parse_interchange
from .common import (
    METRICS_CONTENT_TYPE,
    Interval,
    _gauges,
    _is_loopback,
    _json,
    _listen,
    _positive,
    _positive_int,
    serve,
)

FAULTS: tuple[str, ...] = (
    "vc_down",
    "beacon_down",
    "stall_head",
    "drop_peers",
    "crash",
    "fence_fail",
    "fence_hang",
    "fence_lie",
    "activate_fail",
    "activate_hang",
    "km_key_error",
    "km_500",
    "km_slow",
    "km_slow_writes",
    "km_quirk_not_found",
    "km_quirk_camel",
    "km_quirk_object",
    "km_foreign_root",
)
UNHEALTHY_FAULTS = frozenset({"vc_down", "beacon_down", "stall_head", "drop_peers"})
KEY_FAULTS = frozenset({"km_key_error"})  # the faults that can target one pubkey
SLOTS_PER_EPOCH = 32
BLOCK_EVERY = 8  # a simulated proposal every 8th slot
MAINNET_GENESIS_ROOT = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"
SEPOLIA_GENESIS_ROOT = "0xd8ea171f3c94aea21ebc42a1ed61052acf3f9209c00e4efbaaddac09ed9b8078"
DERIVATION_PATH = "m/12381/3600/0/0/0"
DEFAULT_SIGNER_URL = "http://127.0.0.1:9000"
KEYMANAGER_MODES = ("local", "remote")
PUBKEY_RE = re.compile(r"^0x[0-9a-f]{96}$")
ROOT_RE = re.compile(r"^0x[0-9a-f]{64}$")
PEERS = 50

log = logging.getLogger("responder.sim")


def _root_of(*parts: object) -> str:
    """A deterministic stand-in for a signing root: sha256 over the parts."""
    text = ":".join(str(p) for p in parts)
    return "0x" + hashlib.sha256(text.encode()).hexdigest()


@dataclass
class KeyHistory:
    """One key's slashing-protection database, plus when it last tried to sign."""

    attestations: set[tuple[int, int, str | None]] = field(default_factory=set)
    blocks: set[tuple[int, str | None]] = field(default_factory=set)
    max_source: int | None = None
    max_target: int | None = None
    max_slot: int | None = None
    last_att_epoch: int | None = None  # the epoch of the last attestation attempt
    last_block_slot: int | None = None  # the slot of the last proposal attempt

    def add_attestation(self, source: int, target: int, root: str | None) -> None:
        self.attestations.add((source, target, root))
        self.max_source = source if self.max_source is None else max(self.max_source, source)
        self.max_target = target if self.max_target is None else max(self.max_target, target)

    def add_block(self, slot: int, root: str | None) -> None:
        self.blocks.add((slot, root))
        self.max_slot = slot if self.max_slot is None else max(self.max_slot, slot)

    def may_attest(self, source: int, target: int) -> bool:
        """Minimal EIP-3076 rule: strictly above the target mark, never below the source mark."""
        if self.max_target is not None and target <= self.max_target:
            return False
        return self.max_source is None or source >= self.max_source

    def may_propose(self, slot: int) -> bool:
        return self.max_slot is None or slot > self.max_slot

    def to_json(self, pubkey: str) -> dict[str, Any]:
        def with_root(obj: dict[str, Any], root: str | None) -> dict[str, Any]:
            return obj if root is None else obj | {"signing_root": root}

        return {
            "pubkey": pubkey,
            "signed_blocks": [
                with_root({"slot": str(slot)}, root)
                for slot, root in sorted(self.blocks, key=lambda b: (b[0], b[1] or ""))
            ],
            "signed_attestations": [
                with_root({"source_epoch": str(src), "target_epoch": str(tgt)}, root)
                for src, tgt, root in sorted(
                    self.attestations, key=lambda a: (a[1], a[0], a[2] or "")
                )
            ],
        }


@dataclass(frozen=True)
class ProposerDuty:
    """A block proposal the simulated beacon node reports for a slot."""

    pubkey: str
    validator_index: int

    def to_json(self, slot: int) -> dict[str, str]:
        return {
            "pubkey": self.pubkey,
            "validator_index": str(self.validator_index),
            "slot": str(slot),
        }


@dataclass
class LoadedKey:
    """A validator key the node has loaded: a local keystore or a remote-signer definition."""

    derivation_path: str = DERIVATION_PATH
    url: str | None = None


class Sim:
    """The node's state; every field is guarded by `cond` (a lock plus wake-ups for hangs)."""

    def __init__(
        self,
        name: str,
        pair: str,
        *,
        signing: bool = False,
        token: str | None = None,
        slot_seconds: float = 1.0,
        hang_seconds: float = 30.0,
        keymanager: str | None = None,
        genesis_validators_root: str = MAINNET_GENESIS_ROOT,
        pubkeys: Sequence[str] = (),
        slots_per_epoch: int = SLOTS_PER_EPOCH,
        signer_url: str = DEFAULT_SIGNER_URL,
        genesis_time: int | None = None,
    ) -> None:
        if keymanager is not None and keymanager not in KEYMANAGER_MODES:
            raise ValueError(f"keymanager must be one of {KEYMANAGER_MODES}, got {keymanager!r}")
        self.name = name
        self.pair = pair
        self.token = token
        self.slot_seconds = slot_seconds
        self.hang_seconds = hang_seconds
        self.keymanager = keymanager
        self.genesis_validators_root = genesis_validators_root.lower()
        self.pubkeys = tuple(dict.fromkeys(pk.lower() for pk in pubkeys))
        self.slots_per_epoch = slots_per_epoch
        self.signer_url = signer_url
        # whole seconds, as the beacon API serves it; default: now, so slot 0 is starting
        started = time.time()
        self.genesis_time = math.floor(started) if genesis_time is None else genesis_time
        self.cond = threading.Condition(threading.RLock())  # re-entrant: `signing` nests
        self.enabled = signing  # the generic agent's switch; keymanager mode uses `loaded`
        self.loaded: dict[str, LoadedKey] = {}
        self.db: dict[str, KeyHistory] = {}
        self.refused_signings = 0
        self.faults: set[str] = set()
        self.key_faults: dict[str, set[str]] = {}  # fault -> the pubkeys it targets
        # the head starts at the wall-clock slot, so head_slot + sync_distance follows genesis
        self.head_slot = max(0, int((started - self.genesis_time) // slot_seconds))
        self.stalled_slots = 0  # slots elapsed since stall_head went on
        # slot -> the proposal the beacon API reports there (POST /sim/duties sets them)
        self.proposer_duties: dict[int, ProposerDuty] = {}
        self.signing_intervals: list[Interval] = []
        self.calls = {
            "status": 0,
            "fence": 0,
            "activate": 0,
            "km_get": 0,
            "km_delete": 0,
            "km_post": 0,
        }
        self.stopping = False
        self._signing = False
        self._ticker: threading.Thread | None = None
        with self.cond:
            if keymanager is not None and signing:
                for pk in self.pubkeys:
                    self.load_key_locked(pk, self._default_key())
            self.record_signing_locked()

    # -- state (call with self.cond held) -----------------------------------------------

    def enabled_locked(self) -> bool:
        """Keys loaded (keymanager mode) or the agent's switch on (generic mode)."""
        return bool(self.loaded) if self.keymanager is not None else self.enabled

    def _effective_signing(self) -> bool:
        return self.enabled_locked() and not ({"vc_down", "crash"} & self.faults)

    def record_signing_locked(self) -> None:
        """Open or close a signing interval whenever the effective state flips."""
        now = self._effective_signing()
        if now == self._signing:
            return
        self._signing = now
        if now:
            self.signing_intervals.append([time.time(), None])
        else:
            self.signing_intervals[-1][1] = time.time()
        log.info("%s signing=%s", self.name, now)

    def healthy_locked(self) -> bool:
        return not (UNHEALTHY_FAULTS & self.faults)

    def key_fault_locked(self, fault: str, pubkey: str) -> bool:
        """A fault on for every key, or for this one."""
        return fault in self.faults or pubkey in self.key_faults.get(fault, set())

    def _default_key(self) -> LoadedKey:
        return LoadedKey(url=self.signer_url if self.keymanager == "remote" else None)

    def load_key_locked(self, pubkey: str, key: LoadedKey) -> None:
        """Load a key: it signs from the next slot on, after a fresh attempt at this epoch."""
        self.loaded[pubkey] = key
        history = self.db.setdefault(pubkey, KeyHistory())
        history.last_att_epoch = None
        history.last_block_slot = None

    def set_enabled_locked(self, on: bool) -> None:
        """The generic agent's fence/activate: unload every key, or reload the --pubkeys."""
        if self.keymanager is None:
            self.enabled = on
        elif on:
            for pk in self.pubkeys:
                if pk not in self.loaded:
                    self.load_key_locked(pk, self._default_key())
        else:
            self.loaded.clear()
        self.record_signing_locked()

    def _sign_locked(self) -> None:
        """Every loaded key attests once per epoch and proposes every 8th slot, if safe."""
        slot = self.head_slot
        epoch = slot // self.slots_per_epoch
        for pk in self.loaded:
            history = self.db.setdefault(pk, KeyHistory())
            if history.last_att_epoch != epoch:
                history.last_att_epoch = epoch
                source, target = max(0, epoch - 1), epoch
                if history.may_attest(source, target):
                    history.add_attestation(source, target, _root_of(pk, "attestation", slot))
                else:
                    self.refused_signings += 1
                    log.info("%s %s: refused attestation target %d", self.name, pk[:10], target)
            if slot > 0 and slot % BLOCK_EVERY == 0 and history.last_block_slot != slot:
                history.last_block_slot = slot
                if history.may_propose(slot):
                    history.add_block(slot, _root_of(pk, "block", slot))
                else:
                    self.refused_signings += 1
                    log.info("%s %s: refused block at slot %d", self.name, pk[:10], slot)

    def export_history(self, pubkeys: Iterable[str]) -> dict[str, Any]:
        """An EIP-3076 document for those of `pubkeys` the database knows, in request order."""
        with self.cond:
            root = self.genesis_validators_root
            if "km_foreign_root" in self.faults:
                root = (
                    SEPOLIA_GENESIS_ROOT if root != SEPOLIA_GENESIS_ROOT else MAINNET_GENESIS_ROOT
                )
            wanted = dict.fromkeys(pk.lower() for pk in pubkeys)
            return {
                "metadata": {"interchange_format_version": "5", "genesis_validators_root": root},
                "data": [self.db[pk].to_json(pk) for pk in wanted if pk in self.db],
            }

    def import_history(self, raw: str | dict[str, Any]) -> None:
        """Merge an EIP-3076 document into the database; InterchangeError if it is unusable."""
        doc = parse_interchange(raw)
        if doc.genesis_validators_root.lower() != self.genesis_validators_root:
            raise InterchangeError(
                f"genesis_validators_root {doc.genesis_validators_root} is not this node's "
                f"chain ({self.genesis_validators_root})"
            )
        with self.cond:
            for entry in doc.data:
                history = self.db.setdefault(entry.pubkey.lower(), KeyHistory())
                for att in entry.signed_attestations:
                    history.add_attestation(
                        int(att.source_epoch), int(att.target_epoch), att.signing_root
                    )
                for block in entry.signed_blocks:
                    history.add_block(int(block.slot), block.signing_root)

    # -- public operations --------------------------------------------------------------

    @property
    def signing(self) -> bool:
        with self.cond:
            return self._signing

    def set_fault(self, fault: str, on: bool, pubkey: str | None = None) -> None:
        with self.cond:
            if pubkey is not None:
                targets = self.key_faults.setdefault(fault, set())
                if on:
                    targets.add(pubkey)
                else:
                    targets.discard(pubkey)
                if not targets:
                    del self.key_faults[fault]
            elif on and fault not in self.faults:
                self.faults.add(fault)
                if fault == "stall_head":
                    self.stalled_slots = 0
            elif not on:
                self.faults.discard(fault)
                self.key_faults.pop(fault, None)
                if fault == "stall_head":
                    self.stalled_slots = 0
            log.info(
                "%s fault %s%s %s",
                self.name,
                fault,
                f" ({pubkey})" if pubkey else "",
                "on" if on else "off",
            )
            self.record_signing_locked()
            self.cond.notify_all()

    def set_duties(self, duties: dict[int, ProposerDuty]) -> None:
        """Replace the proposer duties the beacon API reports (an empty dict clears them)."""
        with self.cond:
            self.proposer_duties = dict(duties)
            log.info("%s proposer duties: %d slots", self.name, len(duties))

    def duties_in(self, epoch: int) -> list[dict[str, str]]:
        """The beacon API's `data` for proposer duties in `epoch`, by slot."""
        with self.cond:
            first = epoch * self.slots_per_epoch
            return [
                self.proposer_duties[slot].to_json(slot)
                for slot in range(first, first + self.slots_per_epoch)
                if slot in self.proposer_duties
            ]

    def syncing(self) -> dict[str, Any]:
        """The beacon API's `data` for /eth/v1/node/syncing: behind while stall_head is on."""
        with self.cond:
            stalled = "stall_head" in self.faults
            return {
                "head_slot": str(self.head_slot),
                "sync_distance": str(self.stalled_slots if stalled else 0),
                "is_syncing": stalled,
                "is_optimistic": False,
                "el_offline": False,
            }

    def clear_faults(self) -> None:
        with self.cond:
            self.faults.clear()
            self.key_faults.clear()
            self.stalled_slots = 0
            log.info("%s faults cleared", self.name)
            self.record_signing_locked()
            self.cond.notify_all()

    def hang(self, fault: str) -> None:
        """Sleep like a dead host: until hang_seconds pass, the fault clears, or we stop."""
        with self.cond:
            self.cond.wait_for(
                lambda: self.stopping or fault not in self.faults, timeout=self.hang_seconds
            )

    def tick(self) -> None:
        """One simulated slot: the head follows unless stalled, and the loaded keys sign."""
        with self.cond:
            if "stall_head" in self.faults:
                self.stalled_slots += 1
            else:
                self.head_slot += 1
            if self._signing and self.keymanager is not None:
                self._sign_locked()

    def start_ticker(self) -> None:
        def run() -> None:
            next_at = time.monotonic() + self.slot_seconds
            while True:
                with self.cond:
                    if self.cond.wait_for(
                        lambda: self.stopping, timeout=max(0.0, next_at - time.monotonic())
                    ):
                        return
                self.tick()
                next_at += self.slot_seconds

        self._ticker = threading.Thread(target=run, name=f"sim-{self.name}-slots", daemon=True)
        self._ticker.start()

    def stop(self) -> None:
        """Wake every hanging request and the ticker so the process can exit promptly."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        if self._ticker is not None:
            self._ticker.join(timeout=5)

    def state(self) -> dict[str, Any]:
        with self.cond:
            return {
                "name": self.name,
                "pair": self.pair,
                "enabled": self.enabled_locked(),
                "signing": self._signing,
                "healthy": self.healthy_locked(),
                "faults": sorted(self.faults),
                "key_faults": {f: sorted(pks) for f, pks in sorted(self.key_faults.items())},
                "head_slot": self.head_slot,
                "sync_distance": self.stalled_slots,
                "signing_intervals": [list(iv) for iv in self.signing_intervals],
                "calls": dict(self.calls),
                "keymanager": self.keymanager,
                "keys": {
                    pk: {
                        "loaded": pk in self.loaded,
                        "max_target_epoch": history.max_target,
                        "max_block_slot": history.max_slot,
                        "attestations": len(history.attestations),
                        "blocks": len(history.blocks),
                    }
                    for pk, history in sorted(self.db.items())
                },
                "refused_signings": self.refused_signings,
            }

    def vc_metrics(self) -> bytes:
        with self.cond:
            stalled = "stall_head" in self.faults
            return _gauges(
                [
                    ("validator_sim_signing", "1 while this simulated node signs.", self._signing),
                    (
                        "vc_beacon_nodes_synced_count",
                        "Synced beacon nodes the validator client is connected to.",
                        0 if stalled else 1,
                    ),
                ]
            )

    def beacon_metrics(self) -> bytes:
        with self.cond:
            stalled = "stall_head" in self.faults
            peers = 0 if "drop_peers" in self.faults else PEERS
            head = self.head_slot
            return _gauges(
                [
                    ("beacon_head_slot", "Slot of the head block.", head),
                    ("beacon_head_state_slot", "Slot of the head state.", head),
                    (
                        "beacon_finalized_epoch",
                        "Latest finalized epoch.",
                        max(0, head // self.slots_per_epoch - 2),
                    ),
                    ("eth_con_sync_is_syncing", "1 while the node is syncing.", stalled),
                    (
                        "eth_con_sync_distance",
                        "Slots the head is behind the wall clock.",
                        self.stalled_slots if stalled else 0,
                    ),
                    ("sync_eth2_synced", "1 when the node is synced.", not stalled),
                    ("libp2p_peers", "Connected libp2p peers.", peers),
                    ("eth_con_peers", "Connected peers.", peers),
                    ("libp2p_peer_connected_total", "Connected libp2p peers.", peers),
                ]
            )


def _error(message: str, status: int) -> Response:
    """A Keymanager API error: the spec's ErrorResponse, `{"message": ...}`."""
    return _json({"message": message}, status)


def _pubkey(value: object) -> str | None:
    """A pubkey in canonical form (lowercase, 0x + 96 hex), or None if it is not one."""
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    return value if PUBKEY_RE.match(value) else None


def _uint(value: object) -> int | None:
    """A non-negative integer given as an int or a decimal string, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isdigit() and len(value) <= 20:
        return int(value)
    return None


def _status(status: str, message: str) -> dict[str, str]:
    return {"status": status, "message": message}


Handler = Callable[..., Response]
SIM_ENDPOINTS = frozenset({"fault_on", "fault_off", "faults_clear", "state", "duties_set"})


class SimApp:
    """The WSGI app: scrape targets, the node-agent contract, the Keymanager API, and faults."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.url_map = Map(
            [
                Rule("/metrics", methods=["GET"], endpoint="vc_metrics"),
                Rule("/beacon/metrics", methods=["GET"], endpoint="beacon_metrics"),
                Rule("/status", methods=["GET"], endpoint="status"),
                Rule("/fence", methods=["POST"], endpoint="fence"),
                Rule("/activate", methods=["POST"], endpoint="activate"),
                Rule("/sim/faults", methods=["POST"], endpoint="fault_on"),
                Rule("/sim/faults", methods=["DELETE"], endpoint="faults_clear"),
                Rule("/sim/faults/<name>", methods=["DELETE"], endpoint="fault_off"),
                Rule("/sim/state", methods=["GET"], endpoint="state"),
                Rule("/sim/duties", methods=["POST"], endpoint="duties_set"),
                Rule("/eth/v1/beacon/genesis", methods=["GET"], endpoint="beacon_genesis"),
                Rule("/eth/v1/node/syncing", methods=["GET"], endpoint="beacon_syncing"),
                Rule(
                    "/eth/v1/validator/duties/proposer/<int:epoch>",
                    methods=["GET"],
                    endpoint="beacon_proposer_duties",
                ),
                Rule("/eth/v1/keystores", methods=["GET"], endpoint="keystores_get"),
                Rule("/eth/v1/keystores", methods=["POST"], endpoint="keystores_post"),
                Rule("/eth/v1/keystores", methods=["DELETE"], endpoint="keystores_delete"),
                Rule("/eth/v1/remotekeys", methods=["GET"], endpoint="remotekeys_get"),
                Rule("/eth/v1/remotekeys", methods=["POST"], endpoint="remotekeys_post"),
                Rule("/eth/v1/remotekeys", methods=["DELETE"], endpoint="remotekeys_delete"),
            ]
        )
        self.handlers: dict[str, Handler] = {
            "vc_metrics": self.vc_metrics,
            "beacon_metrics": self.beacon_metrics,
            "status": self.status,
            "fence": self.fence,
            "activate": self.activate,
            "fault_on": self.fault_on,
            "faults_clear": self.faults_clear,
            "fault_off": self.fault_off,
            "state": self.state,
            "duties_set": self.duties_set,
            "beacon_genesis": self.beacon_genesis,
            "beacon_syncing": self.beacon_syncing,
            "beacon_proposer_duties": self.beacon_proposer_duties,
            "keystores_get": self.keystores_get,
            "keystores_post": self.keystores_post,
            "keystores_delete": self.keystores_delete,
            "remotekeys_get": self.remotekeys_get,
            "remotekeys_post": self.remotekeys_post,
            "remotekeys_delete": self.remotekeys_delete,
        }

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            endpoint, args = self.url_map.bind_to_environ(environ).match()
            if endpoint in SIM_ENDPOINTS and not _is_loopback(request.remote_addr):
                refused = _json({"error": "the /sim API is loopback-only"}, 403)
                return refused(environ, start_response)
            response = self.handlers[str(endpoint)](request, **args)
        except HTTPException as exc:
            return exc(environ, start_response)
        return response(environ, start_response)

    # -- scrape targets -----------------------------------------------------------------

    def _crashed(self) -> bool:
        """A crashed host answers nothing: hold the request open, then give up with 503."""
        with self.sim.cond:
            crashed = "crash" in self.sim.faults
        if crashed:
            self.sim.hang("crash")
        return crashed

    def _scrape(self, down_fault: str, body: Callable[[], bytes]) -> Response:
        if self._crashed():
            return Response("crashed\n", status=503, content_type="text/plain")
        with self.sim.cond:
            down = down_fault in self.sim.faults
        if down:
            return Response(f"{down_fault}\n", status=503, content_type="text/plain")
        return Response(body(), content_type=METRICS_CONTENT_TYPE)

    def vc_metrics(self, request: Request) -> Response:
        return self._scrape("vc_down", self.sim.vc_metrics)

    def beacon_metrics(self, request: Request) -> Response:
        return self._scrape("beacon_down", self.sim.beacon_metrics)

    # -- node-agent contract ------------------------------------------------------------

    def _auth(self, request: Request, call: str, field: str = "error") -> Response | None:
        """Crash, then Bearer auth, then count the call; a Response means stop here.

        `field` names the error body's key: "error" on the agent, "message" on the Keymanager API.
        """
        if self._crashed():
            return _json({field: "crashed"}, 503)
        token = self.sim.token
        if token is not None:
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                resp = _json({field: "missing bearer token"}, 401)
                resp.headers["WWW-Authenticate"] = "Bearer"
                return resp
            if not hmac.compare_digest(given.strip().encode(), token.encode()):
                return _json({field: "wrong bearer token"}, 403)
        with self.sim.cond:
            self.sim.calls[call] += 1
        return None

    def status(self, request: Request) -> Response:
        if (refused := self._auth(request, "status")) is not None:
            return refused
        with self.sim.cond:
            return _json({"healthy": self.sim.healthy_locked(), "signing": self.sim.signing})

    def _mutate(self, request: Request, action: str) -> Response:
        if (refused := self._auth(request, action)) is not None:
            return refused
        sim = self.sim
        with sim.cond:
            faults = set(sim.faults)
        if f"{action}_fail" in faults:
            log.info("%s %s: injected failure", sim.name, action)
            return _json({"error": f"{action}_fail injected"}, 500)
        if f"{action}_hang" in faults:
            log.info("%s %s: hanging", sim.name, action)
            sim.hang(f"{action}_hang")
            return _json({"error": f"{action}_hang injected"}, 500)
        if action == "fence" and "fence_lie" in faults:
            log.info("%s fence: lying (claims done, keeps signing)", sim.name)
            return _json({"signing": False})
        with sim.cond:
            sim.set_enabled_locked(action == "activate")
            log.info(
                "%s %s: enabled=%s signing=%s", sim.name, action, sim.enabled_locked(), sim.signing
            )
            return _json({"signing": sim.signing})

    def fence(self, request: Request) -> Response:
        return self._mutate(request, "fence")

    def activate(self, request: Request) -> Response:
        return self._mutate(request, "activate")

    # -- fault injection ----------------------------------------------------------------

    def _unknown(self, name: object) -> Response:
        return _json(
            {"error": f"unknown fault {json.dumps(name)}; valid: {', '.join(FAULTS)}"}, 400
        )

    def _target(self, name: str, raw: object) -> tuple[str | None, Response | None]:
        """The pubkey a per-key fault targets (None: every key), or a 400."""
        if raw is None:
            return None, None
        if name not in KEY_FAULTS:
            valid = ", ".join(sorted(KEY_FAULTS))
            return None, _json({"error": f"{name} cannot target one key; per-key: {valid}"}, 400)
        pubkey = _pubkey(raw)
        if pubkey is None:
            return None, _json({"error": f"pubkey must be 0x + 96 hex, got {raw!r}"}, 400)
        return pubkey, None

    def _faults(self) -> Response:
        state = self.sim.state()
        body: dict[str, Any] = {"faults": state["faults"]}
        if state["key_faults"]:
            body["key_faults"] = state["key_faults"]
        return _json(body)

    def fault_on(self, request: Request) -> Response:
        """`{"fault": name}`, or `{"fault": "km_key_error", "pubkey": "0x..."}` for one key."""
        body = request.get_json(silent=True, force=True)
        name = body.get("fault") if isinstance(body, dict) else None
        if name not in FAULTS:
            return self._unknown(name)
        assert isinstance(body, dict)
        pubkey, refused = self._target(str(name), body.get("pubkey"))
        if refused is not None:
            return refused
        self.sim.set_fault(str(name), True, pubkey)
        return self._faults()

    def fault_off(self, request: Request, name: str) -> Response:
        """Clear a fault for every key, or with `?pubkey=0x...` for that key only."""
        if name not in FAULTS:
            return self._unknown(name)
        pubkey, refused = self._target(name, request.args.get("pubkey"))
        if refused is not None:
            return refused
        self.sim.set_fault(name, False, pubkey)
        return self._faults()

    def faults_clear(self, request: Request) -> Response:
        self.sim.clear_faults()
        return _json({"faults": []})

    def state(self, request: Request) -> Response:
        return _json(self.sim.state())

    def duties_set(self, request: Request) -> Response:
        """Replace the proposer duties: a JSON list of {"slot", "pubkey", "validator_index"?}
        (numbers as integers or decimal strings); `[]` clears them."""
        body = request.get_json(silent=True, force=True)
        if not isinstance(body, list):
            return _json({"error": 'expected a JSON list of {"slot", "pubkey"} objects'}, 400)
        duties: dict[int, ProposerDuty] = {}
        for item in body:
            entry = item if isinstance(item, dict) else {}
            slot, index = _uint(entry.get("slot")), _uint(entry.get("validator_index", 0))
            pubkey = _pubkey(entry.get("pubkey"))
            if slot is None or index is None or pubkey is None:
                return _json(
                    {
                        "error": f"bad duty {item!r:.200}: slot and validator_index are "
                        "non-negative integers, pubkey 0x + 96 hex"
                    },
                    400,
                )
            if slot in duties:
                return _json({"error": f"slot {slot} has two proposers"}, 400)
            duties[slot] = ProposerDuty(pubkey, index)
        self.sim.set_duties(duties)
        return _json({"duties": len(duties)})

    # -- beacon node API ----------------------------------------------------------------

    def _beacon(self) -> Response | None:
        """A crashed host hangs; beacon_down answers 503 (the beacon API's error shape)."""
        if self._crashed():
            return _json({"code": 503, "message": "crashed"}, 503)
        with self.sim.cond:
            down = "beacon_down" in self.sim.faults
        if down:
            return _json({"code": 503, "message": "beacon_down injected"}, 503)
        return None

    def beacon_genesis(self, request: Request) -> Response:
        if (stop := self._beacon()) is not None:
            return stop
        data = {
            "genesis_time": str(self.sim.genesis_time),
            "genesis_validators_root": self.sim.genesis_validators_root,
            "genesis_fork_version": "0x00000000",
        }
        return _json({"data": data})

    def beacon_syncing(self, request: Request) -> Response:
        if (stop := self._beacon()) is not None:
            return stop
        return _json({"data": self.sim.syncing()})

    def beacon_proposer_duties(self, request: Request, epoch: int) -> Response:
        if (stop := self._beacon()) is not None:
            return stop
        root = _root_of(self.sim.genesis_validators_root, "dependent", epoch)
        body = {"dependent_root": root, "execution_optimistic": False}
        return _json(body | {"data": self.sim.duties_in(epoch)})

    # -- Ethereum Keymanager API --------------------------------------------------------

    def _km(self, request: Request, mode: str, call: str) -> Response | None:
        """Mode, crash, auth and the call count, then km_slow and km_500; a Response stops."""
        sim = self.sim
        if sim.keymanager != mode:
            return _error(f"not found: the keymanager API here is {sim.keymanager or 'off'}", 404)
        if (refused := self._auth(request, call, field="message")) is not None:
            return refused
        with sim.cond:
            slow = next(
                (
                    f
                    for f in ("km_slow", "km_slow_writes")
                    if f in sim.faults and (f == "km_slow" or call != "km_get")
                ),
                None,
            )
        if slow is not None:  # km_slow_writes holds DELETE and POST, not the GET listing
            log.info("%s %s: slow", sim.name, call)
            sim.hang(slow)
        with sim.cond:
            if sim.stopping:
                return _error("shutting down", 503)
            if "km_500" in sim.faults:
                log.info("%s %s: injected 500", sim.name, call)
                return _error("km_500 injected", 500)
        return None

    @staticmethod
    def _pubkeys_body(request: Request) -> tuple[list[str], Response | None]:
        """The `pubkeys` of a DELETE body, canonical and in request order, or a 400."""
        body = request.get_json(silent=True, force=True)
        raw = body.get("pubkeys") if isinstance(body, dict) else None
        if not isinstance(raw, list):
            return [], _error('request body must be a JSON object with a "pubkeys" list', 400)
        pubkeys: list[str] = []
        for item in raw:
            pubkey = _pubkey(item)
            if pubkey is None:
                return [], _error(f"invalid pubkey {item!r}: expected 0x + 96 hex", 400)
            pubkeys.append(pubkey)
        return pubkeys, None

    def keystores_get(self, request: Request) -> Response:
        if (stop := self._km(request, "local", "km_get")) is not None:
            return stop
        with self.sim.cond:
            data = [
                {"validating_pubkey": pk, "derivation_path": key.derivation_path, "readonly": False}
                for pk, key in self.sim.loaded.items()
            ]
        return _json({"data": data})

    def keystores_delete(self, request: Request) -> Response:
        """Stop signing with the keys, unload them, and export their history, atomically."""
        if (stop := self._km(request, "local", "km_delete")) is not None:
            return stop
        pubkeys, bad = self._pubkeys_body(request)
        if bad is not None:
            return bad
        sim = self.sim
        results: list[dict[str, str]] = []
        exported: list[str] = []
        with sim.cond:
            for pk in pubkeys:
                if sim.key_fault_locked("km_key_error", pk):
                    results.append(_status("error", "km_key_error injected: the key is in use"))
                elif pk in sim.loaded:
                    del sim.loaded[pk]
                    results.append(_status("deleted", "key deleted; signing stopped"))
                    exported.append(pk)
                elif pk in sim.db:
                    quirk = "km_quirk_not_found" in sim.faults
                    results.append(
                        _status("not_found" if quirk else "not_active", "key not active")
                    )
                    exported.append(pk)
                else:
                    results.append(_status("not_found", "no key and no history"))
            sim.record_signing_locked()
            doc = sim.export_history(exported)
            field = (
                "slashingProtection" if "km_quirk_camel" in sim.faults else "slashing_protection"
            )
            history: Any = doc if "km_quirk_object" in sim.faults else json.dumps(doc)
        log.info(
            "%s DELETE keystores: %s",
            sim.name,
            ", ".join(f"{pk[:10]}={r['status']}" for pk, r in zip(pubkeys, results, strict=True)),
        )
        return _json({"data": results, field: history})

    def _import_keystore_locked(self, keystore: object, password: object) -> dict[str, str]:
        sim = self.sim
        if not isinstance(keystore, str):
            return _status("error", "keystore must be an EIP-2335 JSON string")
        try:
            obj = json.loads(keystore)
        except ValueError:
            return _status("error", "keystore is not valid JSON")
        raw = obj.get("pubkey") if isinstance(obj, dict) else None
        if not isinstance(raw, str):
            return _status("error", "keystore has no pubkey")
        pubkey = _pubkey(raw if raw.lower().startswith("0x") else "0x" + raw)
        if pubkey is None:
            return _status("error", "keystore pubkey is not 48-byte hex")
        if not isinstance(password, str) or not password:
            return _status("error", "empty password: cannot decrypt the keystore")
        if sim.key_fault_locked("km_key_error", pubkey):
            return _status("error", "km_key_error injected: could not import the key")
        if pubkey in sim.loaded:
            return _status("duplicate", "key already loaded")
        path = obj.get("path") if isinstance(obj, dict) else None
        sim.load_key_locked(
            pubkey,
            LoadedKey(derivation_path=path if isinstance(path, str) and path else DERIVATION_PATH),
        )
        return _status("imported", "key imported")

    def keystores_post(self, request: Request) -> Response:
        """Merge the slashing history first, then load each keystore."""
        if (stop := self._km(request, "local", "km_post")) is not None:
            return stop
        body = request.get_json(silent=True, force=True)
        if not isinstance(body, dict):
            return _error("request body must be a JSON object", 400)
        keystores, passwords = body.get("keystores"), body.get("passwords")
        if not isinstance(keystores, list) or not isinstance(passwords, list):
            return _error('"keystores" and "passwords" must be lists', 400)
        if len(keystores) != len(passwords):
            return _error(
                f"{len(keystores)} keystores but {len(passwords)} passwords: lengths must match",
                400,
            )
        history = body.get("slashing_protection")
        if history is not None and not isinstance(history, str | dict):
            return _error("slashing_protection must be an EIP-3076 JSON string", 400)
        sim = self.sim
        with sim.cond:
            if history is not None:
                try:
                    sim.import_history(history)
                except InterchangeError as exc:
                    return _error(f"slashing_protection: {exc}", 400)
            results = [
                self._import_keystore_locked(ks, pw)
                for ks, pw in zip(keystores, passwords, strict=True)
            ]
            sim.record_signing_locked()
        log.info(
            "%s POST keystores: %s (history %s)",
            sim.name,
            ", ".join(r["status"] for r in results),
            "merged" if history is not None else "none",
        )
        return _json({"data": results})

    def remotekeys_get(self, request: Request) -> Response:
        if (stop := self._km(request, "remote", "km_get")) is not None:
            return stop
        with self.sim.cond:
            data = [
                {"pubkey": pk, "url": key.url, "readonly": False}
                for pk, key in self.sim.loaded.items()
            ]
        return _json({"data": data})

    def remotekeys_post(self, request: Request) -> Response:
        if (stop := self._km(request, "remote", "km_post")) is not None:
            return stop
        body = request.get_json(silent=True, force=True)
        remote_keys = body.get("remote_keys") if isinstance(body, dict) else None
        if not isinstance(remote_keys, list):
            return _error('request body must be a JSON object with a "remote_keys" list', 400)
        sim = self.sim
        results: list[dict[str, str]] = []
        with sim.cond:
            for item in remote_keys:
                pubkey = _pubkey(item.get("pubkey")) if isinstance(item, dict) else None
                url = item.get("url") if isinstance(item, dict) else None
                if pubkey is None:
                    results.append(_status("error", "pubkey must be 0x + 96 hex"))
                elif not isinstance(url, str) or not url:
                    results.append(_status("error", "url of the remote signer is required"))
                elif sim.key_fault_locked("km_key_error", pubkey):
                    results.append(_status("error", "km_key_error injected: could not import"))
                elif pubkey in sim.loaded:
                    results.append(_status("duplicate", "key already loaded"))
                else:
                    sim.load_key_locked(pubkey, LoadedKey(url=url))
                    results.append(_status("imported", "remote key imported"))
            sim.record_signing_locked()
        log.info("%s POST remotekeys: %s", sim.name, ", ".join(r["status"] for r in results))
        return _json({"data": results})

    def remotekeys_delete(self, request: Request) -> Response:
        if (stop := self._km(request, "remote", "km_delete")) is not None:
            return stop
        pubkeys, bad = self._pubkeys_body(request)
        if bad is not None:
            return bad
        sim = self.sim
        results: list[dict[str, str]] = []
        with sim.cond:
            for pk in pubkeys:
                if sim.key_fault_locked("km_key_error", pk):
                    results.append(_status("error", "km_key_error injected: the key is in use"))
                elif pk in sim.loaded:
                    del sim.loaded[pk]
                    results.append(_status("deleted", "remote key deleted; signing stopped"))
                else:
                    results.append(_status("not_found", "no such remote key"))
            sim.record_signing_locked()
        log.info("%s DELETE remotekeys: %s", sim.name, ", ".join(r["status"] for r in results))
        return _json({"data": results})


def _genesis_root(value: str) -> str:
    root = value.strip().lower()
    if not ROOT_RE.match(root):
        raise argparse.ArgumentTypeError(f"expected 0x + 64 hex, got {value!r}")
    return root


def _pubkey_list(value: str) -> list[str]:
    keys: list[str] = []
    for item in value.split(","):
        if not item.strip():
            continue
        pubkey = _pubkey(item)
        if pubkey is None:
            raise argparse.ArgumentTypeError(f"expected 0x + 96 hex per key, got {item!r}")
        keys.append(pubkey)
    return list(dict.fromkeys(keys))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m responder.sim", description="A simulated validator node for tests."
    )
    parser.add_argument("--name", required=True)
    parser.add_argument("--pair", required=True)
    parser.add_argument("--listen", required=True, type=_listen, help="HOST:PORT (port 0: any)")
    parser.add_argument("--signing", action="store_true", help="start as the active signer")
    parser.add_argument("--token-file", type=Path, help="require this Bearer token on the agent")
    parser.add_argument("--slot-seconds", type=_positive, default=1.0)
    parser.add_argument("--hang-seconds", type=_positive, default=30.0)
    parser.add_argument("--log-requests", action="store_true", help="log every HTTP request")
    parser.add_argument(
        "--keymanager",
        choices=KEYMANAGER_MODES,
        help="serve the Keymanager API: /eth/v1/keystores (local) or /eth/v1/remotekeys (remote)",
    )
    parser.add_argument(
        "--genesis-validators-root",
        type=_genesis_root,
        default=MAINNET_GENESIS_ROOT,
        help="the chain of the slashing-protection history (default: mainnet)",
    )
    parser.add_argument(
        "--pubkeys",
        type=_pubkey_list,
        default=[],
        help="0xPUBKEY,...: keys loaded at start with --signing (and by /activate)",
    )
    parser.add_argument(
        "--slots-per-epoch",
        type=_positive_int,
        default=SLOTS_PER_EPOCH,
        help="slots per epoch (attestations are one per epoch)",
    )
    parser.add_argument(
        "--genesis-time",
        type=_positive_int,
        help="beacon genesis, Unix seconds (default: start time); give sims of one chain the same",
    )
    parser.add_argument(
        "--signer-url",
        default=DEFAULT_SIGNER_URL,
        help="remote mode: the signer URL of the --pubkeys",
    )
    args = parser.parse_args(argv)
    if args.pubkeys and args.keymanager is None:
        parser.error("--pubkeys needs --keymanager")
    if args.signing and args.keymanager is not None and not args.pubkeys:
        parser.error("--signing with --keymanager needs --pubkeys (the keys it signs with)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.log_requests else logging.WARNING)
    token: str | None = None
    if args.token_file is not None:
        token = args.token_file.read_text(encoding="utf-8").strip()
        if not token:
            print(f"sim: {args.token_file} is empty", file=sys.stderr)
            return 2
    sim = Sim(
        args.name,
        args.pair,
        signing=args.signing,
        token=token,
        slot_seconds=args.slot_seconds,
        hang_seconds=args.hang_seconds,
        keymanager=args.keymanager,
        genesis_validators_root=args.genesis_validators_root,
        pubkeys=args.pubkeys,
        slots_per_epoch=args.slots_per_epoch,
        signer_url=args.signer_url,
        genesis_time=args.genesis_time,
    )
    return serve(args.name, SimApp(sim), args.listen, start=sim.start_ticker, stop=sim.stop)


if __name__ == "__main__":
    sys.exit(main())
