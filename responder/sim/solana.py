"""A simulated Agave validator: Solana JSON-RPC, solana-exporter metrics, votes and a tower.

One process per node. The nodes of a pair share a `--genesis-time` (so they agree on the slot:
floor((now - genesis) / slot_seconds)) and a `--cluster-dir`, where each node appends every vote
it casts (`votes-<name>.jsonl`: node, identity, slot, wall-clock time) and keeps its last one
(`last-vote-<name>.json`): the RPC answers the cluster's view of the vote account from those,
and tests read them to prove that one identity never voted on two nodes in one slot.

A node running the staked identity, healthy and not faulted votes once per slot and writes its
tower `LEDGER/tower-1_9-<STAKED>.bin` (its last voted slot). It never votes at or below the
slot of the tower it loaded (lockout). `set-identity` comes over the loopback admin API (the
stand-in for Agave's admin socket) from the fake CLI `python -m responder.sim.agave`, which
finds the node through `LEDGER/sim-admin-url`; `--require-tower` refuses to switch to the
staked identity without a readable tower. Switched to the unstaked identity, it stops voting
at once.

Faults (POST /sim/faults {"fault": name}; DELETE /sim/faults/<name>; POST /sim/faults/clear):
  crash              the process is dead: every endpoint answers 503 at once, no votes
  hang               the process is wedged: every endpoint hangs (then 503), votes go on
  stalled            the node stops following the chain (getSlot freezes, it falls behind)
  delinquent         the staked identity runs but casts no votes
  tower_unreadable   the tower path cannot be read (a directory stands in its place)
  set_identity_fail  the admin set-identity call fails
  identity_stuck     set-identity answers ok but the identity does not change
  no_restart_window  wait-for-restart-window keeps waiting (until the fault clears)

Run: python -m responder.sim solana --name node-a --listen 127.0.0.1:0 --ledger DIR
     --cluster-dir DIR --staked-keypair F --unstaked-keypair F [--active] --genesis-time T
     [--slot-seconds 0.4] [--vote-account B58]
     python -m responder.sim solana keygen FILE   (a random keypair; prints its pubkey)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from ..agent.solana import b58encode, tower_name
from .common import METRICS_CONTENT_TYPE, _is_loopback, _json, _listen, _positive, serve

FAULTS: tuple[str, ...] = (
    "crash",
    "hang",
    "stalled",
    "delinquent",
    "tower_unreadable",
    "set_identity_fail",
    "identity_stuck",
    "no_restart_window",
)
NOT_VOTING_FAULTS = frozenset({"crash", "stalled", "delinquent"})
TOWER_MAGIC = b"SIMTOWR1"  # + 32 bytes identity + u64 little-endian last voted slot
ADMIN_URL_FILE = "sim-admin-url"
HEALTH_SLOT_DISTANCE = 128  # getHealth: unhealthy when more slots behind than this
DELINQUENT_SLOT_DISTANCE = 128  # getVoteAccounts: delinquent when the last vote is older

log = logging.getLogger("responder.sim.solana")


# -- keypairs, towers, the cluster's vote records -------------------------------------------


def write_keypair(path: Path) -> str:
    """A random keypair file (64 bytes as a JSON array; no real ed25519); its base58 pubkey."""
    raw = os.urandom(64)
    path.write_text(json.dumps(list(raw)) + "\n", encoding="utf-8")
    return b58encode(raw[32:])


def read_keypair(path: Path) -> bytes:
    """The 32 public-key bytes of a keypair file; ValueError or OSError if it is not one."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if (
        not isinstance(data, list)
        or len(data) != 64
        or not all(isinstance(b, int) and 0 <= b <= 255 for b in data)
    ):
        raise ValueError(f"{path}: not a keypair (a JSON array of 64 byte values)")
    return bytes(data[32:])


def vote_account_of(staked: bytes) -> str:
    """The default vote account of an identity: a stable stand-in derived from its key."""
    return b58encode(hashlib.sha256(b"vote-account:" + staked).digest())


def encode_tower(identity: bytes, slot: int) -> bytes:
    return TOWER_MAGIC + identity + struct.pack("<Q", slot)


def decode_tower(data: bytes) -> tuple[str, int]:
    """(identity, last voted slot) of a tower file; ValueError if it is not one."""
    if len(data) != len(TOWER_MAGIC) + 40 or not data.startswith(TOWER_MAGIC):
        raise ValueError("not a simulated tower file")
    identity = data[len(TOWER_MAGIC) : len(TOWER_MAGIC) + 32]
    (slot,) = struct.unpack("<Q", data[-8:])
    return b58encode(identity), int(slot)


def read_votes(cluster_dir: Path) -> list[dict[str, Any]]:
    """Every vote of every node of the cluster, in slot order."""
    votes: list[dict[str, Any]] = []
    for file in sorted(cluster_dir.glob("votes-*.jsonl")):
        for line in file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                votes.append(json.loads(line))
    return sorted(votes, key=lambda v: (v["slot"], v["t"]))


def double_votes(cluster_dir: Path) -> list[tuple[str, int, list[str]]]:
    """(identity, slot, nodes) wherever one identity voted on more than one node in a slot:
    the failure the whole product exists to prevent."""
    by_slot: dict[tuple[str, int], set[str]] = {}
    for vote in read_votes(cluster_dir):
        by_slot.setdefault((vote["identity"], vote["slot"]), set()).add(vote["node"])
    return [(i, s, sorted(n)) for (i, s), n in sorted(by_slot.items()) if len(n) > 1]


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -- the node -------------------------------------------------------------------------------


class SolanaSim:
    """The node's state; every field is guarded by `cond` (a lock plus wake-ups for hangs)."""

    def __init__(
        self,
        name: str,
        *,
        ledger: Path,
        cluster_dir: Path,
        staked_keypair: Path,
        unstaked_keypair: Path,
        active: bool = False,
        genesis_time: float,
        slot_seconds: float = 0.4,
        vote_account: str | None = None,
        genesis_hash: str | None = None,
        health_slot_distance: int = HEALTH_SLOT_DISTANCE,
        delinquent_slot_distance: int = DELINQUENT_SLOT_DISTANCE,
        hang_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.ledger = ledger
        self.cluster_dir = cluster_dir
        self._staked_bytes = read_keypair(staked_keypair)
        self.staked = b58encode(self._staked_bytes)
        self.unstaked = b58encode(read_keypair(unstaked_keypair))
        self.vote_account = vote_account or vote_account_of(self._staked_bytes)
        self.genesis_time = genesis_time
        self.slot_seconds = slot_seconds
        self.genesis_hash = genesis_hash or b58encode(
            hashlib.sha256(f"sim-solana-genesis:{genesis_time:g}".encode()).digest()
        )
        self.health_slot_distance = health_slot_distance
        self.delinquent_slot_distance = delinquent_slot_distance
        self.hang_seconds = hang_seconds
        self.clock = clock
        self.cond = threading.Condition()
        self.faults: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.identity = self.unstaked
        self.tower_slot: int | None = None  # the loaded tower's last vote (lockout)
        self.last_vote: int | None = None  # this node's own last vote
        self.first_vote: int | None = None
        self.vote_count = 0
        self.stalled_at: int | None = None
        self.intervals: list[list[float | None]] = []  # wall-clock [start, end) of voting
        self.switches: list[dict[str, Any]] = []
        self.stopping = False
        self._ticker: threading.Thread | None = None
        self.ledger.mkdir(parents=True, exist_ok=True)
        self.cluster_dir.mkdir(parents=True, exist_ok=True)
        if active:
            with self.cond:
                self.tower_slot = self._load_tower_locked(required=False)
                self.identity = self.staked
                self._record_voting_locked()

    # paths
    @property
    def tower_path(self) -> Path:
        return self.ledger / tower_name(self.staked)

    @property
    def _tower_aside(self) -> Path:
        return self.ledger / f".{tower_name(self.staked)}.unreadable"

    @property
    def votes_file(self) -> Path:
        return self.cluster_dir / f"votes-{self.name}.jsonl"

    # chain time
    def chain_slot(self) -> int:
        return max(0, math.floor((self.clock() - self.genesis_time) / self.slot_seconds))

    def node_slot_locked(self) -> int:
        return self.stalled_at if self.stalled_at is not None else self.chain_slot()

    def behind_locked(self) -> int:
        return self.chain_slot() - self.node_slot_locked()

    def healthy_locked(self) -> bool:
        return self.behind_locked() <= self.health_slot_distance

    def voting_locked(self) -> bool:
        return self.identity == self.staked and not (NOT_VOTING_FAULTS & self.faults)

    def _record_voting_locked(self) -> None:
        """Open or close the current voting interval to match whether the node votes."""
        now = self.clock()
        open_ = bool(self.intervals) and self.intervals[-1][1] is None
        if self.voting_locked() and not open_:
            self.intervals.append([now, None])
        elif not self.voting_locked() and open_:
            self.intervals[-1][1] = now

    # the tower
    def _load_tower_locked(self, required: bool) -> int | None:
        """The last voted slot of the staked identity's tower; without `required`, a missing or
        unreadable tower starts a fresh one (None), as Agave does."""
        try:
            identity, slot = decode_tower(self.tower_path.read_bytes())
            if identity != self.staked:
                raise ValueError(f"the tower is of {identity}, not {self.staked}")
        except (OSError, ValueError) as exc:
            if required:
                raise
            log.info("%s: no usable tower (%s): starting a fresh one", self.name, exc)
            return None
        return slot

    def _write_tower_locked(self, slot: int) -> None:
        target = self._tower_aside if "tower_unreadable" in self.faults else self.tower_path
        _replace(target, encode_tower(self._staked_bytes, slot))

    def _set_tower_unreadable_locked(self, on: bool) -> None:
        if on:
            if self.tower_path.is_file():
                os.replace(self.tower_path, self._tower_aside)
            self.tower_path.mkdir(exist_ok=True)
        else:
            if self.tower_path.is_dir():
                shutil.rmtree(self.tower_path)
            if self._tower_aside.exists():
                os.replace(self._tower_aside, self.tower_path)

    # votes
    def _vote_locked(self, slot: int) -> None:
        now = self.clock()
        line = {"node": self.name, "identity": self.staked, "slot": slot, "t": now}
        with self.votes_file.open("a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
        summary = {"identity": self.staked, "vote_account": self.vote_account, "slot": slot}
        _replace(self.cluster_dir / f"last-vote-{self.name}.json", json.dumps(summary).encode())
        self._write_tower_locked(slot)
        self.tower_slot = slot
        self.last_vote = slot
        self.first_vote = slot if self.first_vote is None else self.first_vote
        self.vote_count += 1

    def tick(self) -> None:
        """Vote for the node's current slot if it votes and its tower's lockout allows it."""
        with self.cond:
            self._record_voting_locked()
            if not self.voting_locked():
                return
            slot = self.node_slot_locked()
            if self.tower_slot is not None and slot <= self.tower_slot:
                return  # lockout: never at or below the tower's last vote
            self._vote_locked(slot)

    def cluster_last_vote_locked(self) -> int | None:
        """The newest vote of the staked identity that any node of the cluster cast."""
        best = self.last_vote
        for file in self.cluster_dir.glob("last-vote-*.json"):
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if data.get("identity") == self.staked and isinstance(data.get("slot"), int):
                best = data["slot"] if best is None else max(best, data["slot"])
        return best

    # admin
    def set_identity(self, keypair: Path, require_tower: bool) -> str:
        """Switch identities like Agave's admin RPC; ValueError (refused) or OSError."""
        pubkey = b58encode(read_keypair(keypair))
        with self.cond:
            self.calls["set-identity"] += 1
            if "identity_stuck" in self.faults:
                log.info("%s: set-identity %s accepted but stuck (fault)", self.name, pubkey)
                return pubkey
            if pubkey == self.identity:
                return pubkey
            if pubkey == self.staked:
                try:
                    self.tower_slot = self._load_tower_locked(required=require_tower)
                except (OSError, ValueError) as exc:
                    raise ValueError(
                        f"--require-tower: cannot load {self.tower_path}: {exc}"
                    ) from None
            self.identity = pubkey
            self.switches.append({"identity": pubkey, "t": self.clock(), "tower": require_tower})
            self._record_voting_locked()
            log.info(
                "%s: identity now %s (%s)",
                self.name,
                pubkey,
                "staked" if pubkey == self.staked else "not staked",
            )
            return pubkey

    # faults
    def set_fault(self, fault: str, on: bool) -> None:
        with self.cond:
            if on and fault not in self.faults:
                if fault == "stalled":
                    self.stalled_at = self.node_slot_locked()
                if fault == "tower_unreadable":
                    self._set_tower_unreadable_locked(True)
                self.faults.add(fault)
            elif not on and fault in self.faults:
                self.faults.discard(fault)
                if fault == "stalled":
                    self.stalled_at = None
                if fault == "tower_unreadable":
                    self._set_tower_unreadable_locked(False)
            log.info("%s fault %s %s", self.name, fault, "on" if on else "off")
            self._record_voting_locked()
            self.cond.notify_all()

    def clear_faults(self) -> None:
        with self.cond:
            faults = sorted(self.faults)
        for fault in faults:
            self.set_fault(fault, False)

    def hang(self, fault: str) -> None:
        """Hold a request like a wedged process: until hang_seconds pass, the fault clears,
        or the node stops."""
        with self.cond:
            self.cond.wait_for(
                lambda: self.stopping or fault not in self.faults, timeout=self.hang_seconds
            )

    def start_ticker(self) -> None:
        def run() -> None:
            while True:
                with self.cond:
                    following = self.chain_slot() + 1
                    wait = self.genesis_time + following * self.slot_seconds - self.clock()
                    if self.cond.wait_for(lambda: self.stopping, timeout=max(0.0, wait)):
                        return
                self.tick()

        self.tick()
        self._ticker = threading.Thread(target=run, name=f"sim-{self.name}-slots", daemon=True)
        self._ticker.start()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        if self._ticker is not None:
            self._ticker.join(timeout=5)

    def state(self) -> dict[str, Any]:
        with self.cond:
            return {
                "name": self.name,
                "identity": self.identity,
                "staked": self.staked,
                "unstaked": self.unstaked,
                "vote_account": self.vote_account,
                "signing": self.voting_locked(),
                "active": self.identity == self.staked,
                "healthy": self.healthy_locked(),
                "slot": self.node_slot_locked(),
                "chain_slot": self.chain_slot(),
                "tower_slot": self.tower_slot,
                "first_vote": self.first_vote,
                "last_vote": self.last_vote,
                "votes": self.vote_count,
                "intervals": [list(iv) for iv in self.intervals],
                "switches": list(self.switches),
                "faults": sorted(self.faults),
                "calls": dict(self.calls),
            }

    # RPC and metrics views
    def health(self) -> dict[str, Any] | str:
        with self.cond:
            behind = self.behind_locked()
            if behind <= self.health_slot_distance:
                return "ok"
        return {
            "code": -32005,
            "message": f"Node is behind by {behind} slots",
            "data": {"numSlotsBehind": behind},
        }

    def vote_accounts(self, only: str | None) -> dict[str, list[dict[str, Any]]]:
        with self.cond:
            last = self.cluster_last_vote_locked()
            slot = self.node_slot_locked()
        entry = {
            "votePubkey": self.vote_account,
            "nodePubkey": self.staked,
            "activatedStake": 42_000_000_000_000,
            "epochVoteAccount": True,
            "commission": 5,
            "lastVote": last or 0,
            "rootSlot": max(0, (last or 0) - 31),
            "epochCredits": [],
        }
        if only is not None and only != self.vote_account:
            return {"current": [], "delinquent": []}
        delinquent = last is None or slot - last > self.delinquent_slot_distance
        return {
            "current": [] if delinquent else [entry],
            "delinquent": [entry] if delinquent else [],
        }

    def metrics(self) -> bytes:
        with self.cond:
            healthy = self.healthy_locked()
            behind = self.behind_locked()
            slot = self.node_slot_locked()
            identity = self.identity
        accounts = self.vote_accounts(None)
        delinquent = bool(accounts["delinquent"])
        keys = f'votekey="{self.vote_account}",nodekey="{self.staked}"'
        lines = [
            "# HELP solana_node_is_healthy Whether the node is healthy (getHealth)",
            "# TYPE solana_node_is_healthy gauge",
            f"solana_node_is_healthy {int(healthy)}",
            "# HELP solana_node_num_slots_behind How many slots the node is behind the cluster",
            "# TYPE solana_node_num_slots_behind gauge",
            f"solana_node_num_slots_behind {behind}",
            "# HELP solana_node_slot_height The node's current slot",
            "# TYPE solana_node_slot_height gauge",
            f"solana_node_slot_height {slot}",
            "# HELP solana_validator_delinquent Whether the validator is delinquent",
            "# TYPE solana_validator_delinquent gauge",
            f"solana_validator_delinquent{{{keys}}} {int(delinquent)}",
            "# HELP solana_node_is_active Whether the node runs the active (staked) identity",
            "# TYPE solana_node_is_active gauge",
            f'solana_node_is_active{{identity="{identity}"}} {int(identity == self.staked)}',
        ]
        return ("\n".join(lines) + "\n").encode()


# -- the WSGI app ---------------------------------------------------------------------------

SIM_ENDPOINTS = frozenset(
    {"fault_on", "fault_off", "faults_clear", "state", "set_identity", "restart_window"}
)
ADMIN_ENDPOINTS = frozenset({"set_identity", "restart_window"})


def _rpc_result(request_id: object, result: object) -> Response:
    return _json({"jsonrpc": "2.0", "id": request_id, "result": result})


def _rpc_error(request_id: object, code: int, message: str, data: object = None) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return _json({"jsonrpc": "2.0", "id": request_id, "error": error})


class SolanaSimApp:
    """JSON-RPC on POST /, metrics on GET /metrics, the admin and /sim control APIs."""

    def __init__(self, sim: SolanaSim) -> None:
        self.sim = sim
        self.url_map = Map(
            [
                Rule("/", methods=["POST"], endpoint="rpc"),
                Rule("/metrics", methods=["GET"], endpoint="metrics"),
                Rule("/sim/faults", methods=["POST"], endpoint="fault_on"),
                Rule("/sim/faults", methods=["DELETE"], endpoint="faults_clear"),
                Rule("/sim/faults/clear", methods=["POST"], endpoint="faults_clear"),
                Rule("/sim/faults/<name>", methods=["DELETE"], endpoint="fault_off"),
                Rule("/sim/state", methods=["GET"], endpoint="state"),
                Rule("/sim/admin/set-identity", methods=["POST"], endpoint="set_identity"),
                Rule(
                    "/sim/admin/wait-for-restart-window",
                    methods=["POST"],
                    endpoint="restart_window",
                ),
            ]
        )
        self.handlers: dict[str, Callable[..., Response]] = {
            "rpc": self.rpc,
            "metrics": self.metrics,
            "fault_on": self.fault_on,
            "fault_off": self.fault_off,
            "faults_clear": self.faults_clear,
            "state": self.state,
            "set_identity": self.set_identity,
            "restart_window": self.restart_window,
        }

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            endpoint, args = self.url_map.bind_to_environ(environ).match()
            if endpoint in SIM_ENDPOINTS and not _is_loopback(request.remote_addr):
                refused = _json({"error": "the /sim API is loopback-only"}, 403)
                return refused(environ, start_response)
            if (endpoint not in SIM_ENDPOINTS or endpoint in ADMIN_ENDPOINTS) and (
                down := self._down()
            ) is not None:
                return down(environ, start_response)
            response = self.handlers[str(endpoint)](request, **args)
        except HTTPException as exc:
            return exc(environ, start_response)
        return response(environ, start_response)

    def _down(self) -> Response | None:
        """crash: 503 at once (nothing listens); hang: hold the request, then 503."""
        with self.sim.cond:
            faults = set(self.sim.faults)
        if "crash" in faults:
            return Response("crashed\n", status=503, content_type="text/plain")
        if "hang" in faults:
            self.sim.hang("hang")
            return Response("hung\n", status=503, content_type="text/plain")
        return None

    # -- JSON-RPC --------------------------------------------------------------------------

    def rpc(self, request: Request) -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("method"), str):
            return _rpc_error(None, -32600, "Invalid request")
        request_id, method = body.get("id"), body["method"]
        params = body.get("params")
        sim = self.sim
        with sim.cond:
            sim.calls[method] += 1
        if method == "getIdentity":
            with sim.cond:
                return _rpc_result(request_id, {"identity": sim.identity})
        if method == "getHealth":
            health = sim.health()
            if isinstance(health, str):
                return _rpc_result(request_id, health)
            return _rpc_error(request_id, health["code"], health["message"], health["data"])
        if method == "getSlot":
            with sim.cond:
                return _rpc_result(request_id, sim.node_slot_locked())
        if method == "getGenesisHash":
            return _rpc_result(request_id, sim.genesis_hash)
        if method == "getVoteAccounts":
            only: str | None = None
            if isinstance(params, list) and params and isinstance(params[0], dict):
                wanted = params[0].get("votePubkey")
                only = wanted if isinstance(wanted, str) else None
            return _rpc_result(request_id, sim.vote_accounts(only))
        return _rpc_error(request_id, -32601, "Method not found")

    def metrics(self, request: Request) -> Response:
        return Response(self.sim.metrics(), content_type=METRICS_CONTENT_TYPE)

    # -- admin (the stand-in for Agave's admin socket) ----------------------------------------

    def set_identity(self, request: Request) -> Response:
        body = request.get_json(silent=True)
        keypair = body.get("keypair") if isinstance(body, dict) else None
        if not isinstance(keypair, str) or not keypair:
            return _json({"error": "keypair (a path) is required"}, 400)
        require_tower = bool(body.get("require_tower")) if isinstance(body, dict) else False
        with self.sim.cond:
            failing = "set_identity_fail" in self.sim.faults
            if failing:
                self.sim.calls["set-identity"] += 1
        if failing:
            return _json({"error": "set_identity_fail injected: admin RPC error"}, 500)
        try:
            identity = self.sim.set_identity(Path(keypair), require_tower)
        except OSError as exc:
            return _json({"error": f"cannot read keypair {keypair}: {exc.strerror}"}, 400)
        except ValueError as exc:
            return _json({"error": str(exc)}, 409)
        return _json({"identity": identity})

    def restart_window(self, request: Request) -> Response:
        body = request.get_json(silent=True)
        args = body if isinstance(body, dict) else {}
        with self.sim.cond:
            self.sim.calls["wait-for-restart-window"] += 1
            waiting = "no_restart_window" in self.sim.faults
        if waiting:
            self.sim.hang("no_restart_window")
            return _json({"error": "no restart window found"}, 503)
        return _json(
            {
                "restart_window": "now",
                "min_idle_time": args.get("min_idle_time"),
                "skip_new_snapshot_check": args.get("skip_new_snapshot_check"),
            }
        )

    # -- fault injection and state -----------------------------------------------------------

    def fault_on(self, request: Request) -> Response:
        body = request.get_json(silent=True)
        name = body.get("fault") if isinstance(body, dict) else None
        if name not in FAULTS:
            return _json(
                {"error": f"unknown fault {json.dumps(name)}; valid: {', '.join(FAULTS)}"}, 400
            )
        self.sim.set_fault(str(name), True)
        return _json({"faults": self.sim.state()["faults"]})

    def fault_off(self, request: Request, name: str) -> Response:
        if name not in FAULTS:
            return _json({"error": f"unknown fault {json.dumps(name)}"}, 400)
        self.sim.set_fault(name, False)
        return _json({"faults": self.sim.state()["faults"]})

    def faults_clear(self, request: Request) -> Response:
        self.sim.clear_faults()
        return _json({"faults": []})

    def state(self, request: Request) -> Response:
        return _json(self.sim.state())


# -- the process ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m responder.sim solana", description="A simulated Agave validator."
    )
    parser.add_argument("--name", required=True)
    parser.add_argument("--listen", required=True, type=_listen, help="HOST:PORT (port 0: any)")
    parser.add_argument("--ledger", required=True, type=Path, help="its ledger (tower, admin url)")
    parser.add_argument(
        "--cluster-dir", required=True, type=Path, help="shared by the pair: the vote records"
    )
    parser.add_argument("--staked-keypair", required=True, type=Path)
    parser.add_argument("--unstaked-keypair", required=True, type=Path)
    parser.add_argument("--active", action="store_true", help="start on the staked identity")
    parser.add_argument(
        "--genesis-time", required=True, type=float, help="Unix seconds; the same for the pair"
    )
    parser.add_argument("--slot-seconds", type=_positive, default=0.4)
    parser.add_argument("--vote-account", help="base58 (default: derived from the identity)")
    parser.add_argument("--genesis-hash", help="getGenesisHash (default: from --genesis-time)")
    parser.add_argument("--health-slot-distance", type=int, default=HEALTH_SLOT_DISTANCE)
    parser.add_argument("--delinquent-slot-distance", type=int, default=DELINQUENT_SLOT_DISTANCE)
    parser.add_argument("--hang-seconds", type=_positive, default=30.0)
    parser.add_argument("--log-requests", action="store_true", help="log every HTTP request")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["keygen"]:
        if len(argv) != 2:
            print("usage: python -m responder.sim solana keygen FILE", file=sys.stderr)
            return 2
        print(write_keypair(Path(argv[1])))
        return 0
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.log_requests else logging.WARNING)
    try:
        sim = SolanaSim(
            args.name,
            ledger=args.ledger,
            cluster_dir=args.cluster_dir,
            staked_keypair=args.staked_keypair,
            unstaked_keypair=args.unstaked_keypair,
            active=args.active,
            genesis_time=args.genesis_time,
            slot_seconds=args.slot_seconds,
            vote_account=args.vote_account,
            genesis_hash=args.genesis_hash,
            health_slot_distance=args.health_slot_distance,
            delinquent_slot_distance=args.delinquent_slot_distance,
            hang_seconds=args.hang_seconds,
        )
    except (OSError, ValueError) as exc:
        print(f"sim: {exc}", file=sys.stderr)
        return 2
    return serve(
        args.name,
        SolanaSimApp(sim),
        args.listen,
        start=sim.start_ticker,
        stop=sim.stop,
        admin_dir=args.ledger,
    )


if __name__ == "__main__":
    sys.exit(main())
