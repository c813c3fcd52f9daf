"""A simulated CometBFT validator node (the node, its signer and the bits of the chain it sees).

The agent's tests and the lab start one per host of a pair. The signer (the node's own key, or
tmkms / Horcrux in front of it) is a service the fake service manager `responder.sim.cometctl`
starts and stops through the loopback control API; the node's RPC keeps answering while the signer
is stopped, as it does with a remote signer.

What it models, because the failover procedure depends on it:

- Chain time: height = floor((now - genesis_time) / block_seconds), the same on every node of a
  pair; a node under the `stalled` fault stops at its height and reports catching up.
- The sign state: HOME/data/priv_validator_state.json ({"height": "H", "round": 0, "step": 3,
  "signature", "signbytes"}) is read when the signer starts, and the signer never signs at or
  below it: a state handed over from the old primary makes the standby resume after the
  primary's last signature. Each signature writes the file first (atomically), then is recorded.
- The cluster: every node appends the heights it signed to CLUSTER/signatures-NAME.jsonl, so
  GET /commit?height=H answers the chain's commit at H (our validator's signature if any node of
  the pair signed H, plus one other validator), and tests find heights signed twice.
- CometBFT's double-sign check: a signer started with `double_sign_check_height` N > 0 (read from
  HOME/config/config.toml at start) does not sign while the validator's signature is in the
  chain's last N heights; it stays "activating", as a node crash-looping under systemd
  `Restart=on-failure` does, and runs once N quiet heights have passed.

Run: python -m responder.sim cosmos --name node-a --listen 127.0.0.1:0 --home DIR
     --cluster-dir DIR --validator-address HEX --chain-id test-1 [--signing]
     [--genesis-time T] [--block-seconds 0.5] [--double-sign-check-height 10]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from .common import METRICS_CONTENT_TYPE, Interval, _is_loopback, _json, _listen, _positive, serve

FAULTS: tuple[str, ...] = (
    "crash",  # the node process died: RPC hangs then fails, the signer is "failed"
    "hang",  # the node is wedged: RPC hangs then fails, the process still "runs", no signing
    "stalled",  # height stops advancing on this node, catching_up true, blocksync syncing
    "state_unreadable",  # the sign-state file holds garbage: nobody can read it, no signing
    "start_fails",  # the service manager fails to start the signer
    "stop_fails",  # the service manager fails to stop the signer (it keeps running)
    "stop_ignored",  # stop reports success but the signer keeps running (a lying unit)
    "other_key",  # the node runs with another validator key (another address in /status)
    "drop_peers",  # p2p peers fall to 2
)
SIGNER_STATES = ("stopped", "waiting", "running")
STEP_PRECOMMIT = 3
PEERS = 20
ADMIN_URL_FILE = "sim-admin-url"  # HOME/sim-admin-url: where cometctl finds this node
STATE_PATH = ("data", "priv_validator_state.json")
CONFIG_PATH = ("config", "config.toml")
ADDRESS_RE = re.compile(r"^[0-9A-F]{40}$")

log = logging.getLogger("responder.sim")


def chain_height(now: float, genesis_time: float, block_seconds: float) -> int:
    """The chain's height at wall-clock `now`: the same on every node sharing the genesis."""
    return max(0, math.floor((now - genesis_time) / block_seconds))


def hrs_of(state: Mapping[str, Any]) -> tuple[int, int, int]:
    """(height, round, step) of a sign state; numbers may be JSON numbers or decimal strings
    (CometBFT writes the height as a string, tmkms and Horcrux the round too)."""

    def number(key: str) -> int:
        value = state.get(key)
        if isinstance(value, bool):
            raise ValueError(f"{key} is not a number")
        if isinstance(value, int) and value >= 0:
            return value
        if isinstance(value, str) and value.isdigit() and len(value) <= 20:
            return int(value)
        raise ValueError(f"{key} is {json.dumps(value)}, not a non-negative integer")

    return number("height"), number("round"), number("step")


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so a reader sees the old or the new content, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_signatures(cluster_dir: Path) -> list[dict[str, Any]]:
    """Every signature every node of the pair recorded: {"height", "address", "node", "time"}."""
    found: list[dict[str, Any]] = []
    for file in sorted(Path(cluster_dir).glob("signatures-*.jsonl")):
        try:
            text = file.read_text(encoding="utf-8")
        except OSError:
            continue
        for line in text.splitlines():
            with contextlib.suppress(ValueError):  # a line being appended right now
                record = json.loads(line)
                if isinstance(record, dict):
                    found.append(record)
    return found


def double_signed(cluster_dir: Path) -> dict[int, list[str]]:
    """Heights at which one validator address was signed by more than one node: slashable."""
    by_key: dict[tuple[int, str], set[str]] = {}
    for rec in read_signatures(cluster_dir):
        by_key.setdefault((int(rec["height"]), str(rec["address"])), set()).add(str(rec["node"]))
    return {h: sorted(nodes) for (h, _), nodes in sorted(by_key.items()) if len(nodes) > 1}


def _other_address(*parts: str) -> str:
    return hashlib.sha256(":".join(parts).encode()).hexdigest()[:40].upper()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CosmosSim:
    """The node's state; every field is guarded by `cond` (a lock plus wake-ups for hangs).

    `clock` is the wall clock (chain time follows it); tests pass their own and call `tick`.
    """

    def __init__(
        self,
        name: str,
        home: Path,
        cluster_dir: Path,
        validator_address: str,
        chain_id: str,
        *,
        signing: bool = False,
        genesis_time: float | None = None,
        block_seconds: float = 1.0,
        double_sign_check_height: int = 0,
        hang_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        address = validator_address.upper()
        if not ADDRESS_RE.match(address):
            raise ValueError(f"validator address must be 40 hex digits, got {validator_address!r}")
        self.name = name
        self.home = Path(home)
        self.cluster_dir = Path(cluster_dir)
        self.address = address
        self.other_key_address = _other_address("other-key", name, address)
        self.peer_validator = _other_address("peer-validator", chain_id)
        self.chain_id = chain_id
        self.clock = clock
        self.genesis_time = clock() if genesis_time is None else genesis_time
        self.block_seconds = block_seconds
        self.hang_seconds = hang_seconds
        self.cond = threading.Condition(threading.RLock())
        self.faults: set[str] = set()
        self.signer = "stopped"
        self.double_sign_check_height = 0  # as read from config.toml when the signer started
        self.hwm: tuple[int, int, int] | None = None  # the sign state loaded at signer start
        self.state_bytes: bytes | None = None  # what the file held before state_unreadable
        self.height = chain_height(clock(), self.genesis_time, block_seconds)
        self.last_seen = self.height
        self.signed: list[int] = []  # heights this node signed, in order
        self.last_signed_height: int | None = None
        self.missed_blocks = 0
        self.skipped_at_or_below_state = 0  # heights not signed: at or below the sign state
        self.double_sign_waits = 0  # heights the double-sign check held the signer back
        self.signing_intervals: list[Interval] = []
        self._signing = False
        self.calls = {"status": 0, "commit": 0, "metrics": 0, "start": 0, "stop": 0}
        self.stopping = False
        self._ticker: threading.Thread | None = None
        self.prepare_home(double_sign_check_height)
        if signing:
            with self.cond:
                self.start_signer()

    # -- files ----------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.home.joinpath(*STATE_PATH)

    @property
    def config_file(self) -> Path:
        return self.home.joinpath(*CONFIG_PATH)

    @property
    def signatures_file(self) -> Path:
        return self.cluster_dir / f"signatures-{self.name}.jsonl"

    def prepare_home(self, double_sign_check_height: int) -> None:
        """Write config.toml and an initial sign state unless they exist (as `init` does)."""
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.cluster_dir.mkdir(parents=True, exist_ok=True)
        if not self.config_file.exists():
            text = (
                "# CometBFT config written by the responder's simulator (the keys it reads)\n"
                f'moniker = "{self.name}"\n\n'
                "[consensus]\n"
                f'timeout_commit = "{int(self.block_seconds * 1000)}ms"\n'
                "# heights searched for this validator's signature before the node signs\n"
                f"double_sign_check_height = {double_sign_check_height}\n\n"
                "[instrumentation]\n"
                "prometheus = true\n"
            )
            write_atomic(self.config_file, text.encode())
        if not self.state_file.exists():
            initial = {"height": "0", "round": 0, "step": 0}
            write_atomic(self.state_file, (json.dumps(initial, indent=2) + "\n").encode())

    def read_config_check_height(self) -> int:
        """[consensus] double_sign_check_height from config.toml; ValueError if unreadable."""
        try:
            data = tomllib.loads(self.config_file.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read {self.config_file}: {exc}") from None
        value = data.get("consensus", {}).get("double_sign_check_height", 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"double_sign_check_height is {value!r}")
        return value

    def read_state(self) -> tuple[int, int, int]:
        """The sign state file's high-water mark; ValueError if it cannot be read."""
        try:
            data = json.loads(self.state_file.read_bytes())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {self.state_file}: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{self.state_file} is not a JSON object")
        return hrs_of(data)

    # -- state (call with self.cond held) -------------------------------------------------

    def can_sign_locked(self) -> bool:
        return self.signer == "running" and not (
            {"crash", "hang", "stalled", "state_unreadable"} & self.faults
        )

    def record_signing_locked(self) -> None:
        """Open or close a signing interval whenever the effective state flips."""
        now = self.can_sign_locked()
        if now == self._signing:
            return
        self._signing = now
        if now:
            self.signing_intervals.append([self.clock(), None])
        else:
            self.signing_intervals[-1][1] = self.clock()
        log.info("%s signing=%s", self.name, now)

    def service_state_locked(self) -> str:
        """What `systemctl is-active` would print for the signer's unit."""
        if self.signer == "running":
            return "failed" if "crash" in self.faults else "active"
        return "activating" if self.signer == "waiting" else "inactive"

    def double_sign_risk_locked(self, height: int) -> int | None:
        """The latest height in the chain's last N heights that carries our signature, or None."""
        n = self.double_sign_check_height
        if n <= 0:
            return None
        found = [
            int(rec["height"])
            for rec in read_signatures(self.cluster_dir)
            if rec.get("address") == self.address and height - n < int(rec["height"]) <= height
        ]
        return max(found) if found else None

    def _sign_locked(self, height: int) -> None:
        now = self.clock()
        address = self.other_key_address if "other_key" in self.faults else self.address
        if address == self.address:
            if self.hwm is not None and (height, 0, STEP_PRECOMMIT) <= self.hwm:
                self.skipped_at_or_below_state += 1
                return
            digest = hashlib.sha256(f"{self.chain_id}:{address}:{height}".encode())
            state = {
                "height": str(height),
                "round": 0,
                "step": STEP_PRECOMMIT,
                "signature": base64.b64encode(digest.digest()).decode(),
                "signbytes": digest.hexdigest().upper(),
            }
            # CometBFT persists the state before it releases the signature
            write_atomic(self.state_file, (json.dumps(state, indent=2) + "\n").encode())
            self.hwm = (height, 0, STEP_PRECOMMIT)
            self.signed.append(height)
            self.last_signed_height = height
        record = {"height": height, "address": address, "node": self.name, "time": now}
        with open(self.signatures_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    # -- public operations ----------------------------------------------------------------

    @property
    def signing(self) -> bool:
        with self.cond:
            return self._signing

    def tick(self) -> None:
        """Follow the chain to the wall-clock height and sign a new height if allowed."""
        with self.cond:
            if "stalled" not in self.faults:
                self.height = max(
                    self.height, chain_height(self.clock(), self.genesis_time, self.block_seconds)
                )
            height = self.height
            new = height > self.last_seen
            self.last_seen = height
            if self.signer == "waiting" and new:
                if self.double_sign_risk_locked(height) is None:
                    self.signer = "running"
                    log.info("%s signer running (double-sign check passed)", self.name)
                else:
                    self.double_sign_waits += 1
            self.record_signing_locked()
            if new and self.signer == "running" and height > 0:
                if self.can_sign_locked():
                    self._sign_locked(height)
                else:
                    self.missed_blocks += 1

    def start_signer(self) -> str:
        """The service manager's start: read config and sign state as the node does at start.

        Raises ValueError when the start fails (start_fails, unreadable config or state).
        """
        with self.cond:
            self.calls["start"] += 1
            if "start_fails" in self.faults:
                raise ValueError("start_fails injected: the unit failed to start")
            if self.signer != "stopped":
                return self.signer
            self.double_sign_check_height = self.read_config_check_height()
            self.hwm = self.read_state()
            self.signer = "waiting"
            risk = self.double_sign_risk_locked(self.height)
            if risk is None:
                self.signer = "running"
            else:
                self.double_sign_waits += 1
                log.info(
                    "%s signer waiting: validator signed at height %d, within the last %d",
                    self.name,
                    risk,
                    self.double_sign_check_height,
                )
            self.last_seen = self.height  # sign from the next height on
            self.record_signing_locked()
            log.info("%s signer %s (sign state %s)", self.name, self.signer, self.hwm)
            return self.signer

    def stop_signer(self) -> str:
        """The service manager's stop; ValueError when it fails (stop_fails)."""
        with self.cond:
            self.calls["stop"] += 1
            if "stop_fails" in self.faults:
                raise ValueError("stop_fails injected: the unit could not be stopped")
            if "stop_ignored" in self.faults:
                log.info("%s stop ignored (stop_ignored): the signer keeps running", self.name)
                return "stopped"
            self.signer = "stopped"
            self.record_signing_locked()
            return self.signer

    def set_fault(self, fault: str, on: bool) -> None:
        with self.cond:
            if on and fault not in self.faults:
                self.faults.add(fault)
                if fault == "state_unreadable":
                    with contextlib.suppress(OSError):
                        self.state_bytes = self.state_file.read_bytes()
                    write_atomic(self.state_file, b"\x00\x13 not json: state_unreadable\n")
            elif not on and fault in self.faults:
                self.faults.discard(fault)
                if fault == "state_unreadable" and self.state_bytes is not None:
                    write_atomic(self.state_file, self.state_bytes)
                    self.state_bytes = None
            log.info("%s fault %s %s", self.name, fault, "on" if on else "off")
            self.record_signing_locked()
            self.cond.notify_all()

    def clear_faults(self) -> None:
        with self.cond:
            for fault in sorted(self.faults):
                self.set_fault(fault, False)

    def hang(self, fault: str) -> None:
        """Sleep like a dead host: until hang_seconds pass, the fault clears, or we stop."""
        with self.cond:
            self.cond.wait_for(
                lambda: self.stopping or fault not in self.faults, timeout=self.hang_seconds
            )

    def start_ticker(self) -> None:
        interval = min(0.25, self.block_seconds / 4)

        def run() -> None:
            while True:
                with self.cond:
                    if self.cond.wait_for(lambda: self.stopping, timeout=interval):
                        return
                try:
                    self.tick()
                except OSError:
                    log.exception("%s tick failed", self.name)

        self._ticker = threading.Thread(target=run, name=f"sim-{self.name}-heights", daemon=True)
        self._ticker.start()

    def stop(self) -> None:
        """Wake every hanging request and the ticker so the process can exit promptly."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        if self._ticker is not None:
            self._ticker.join(timeout=5)

    # -- answers --------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self.cond:
            return {
                "name": self.name,
                "chain_id": self.chain_id,
                "validator_address": self.address,
                "signer": self.signer,
                "service": self.service_state_locked(),
                "signing": self._signing,
                "faults": sorted(self.faults),
                "height": self.height,
                "sign_state": list(self.hwm) if self.hwm is not None else None,
                "double_sign_check_height": self.double_sign_check_height,
                "signed": list(self.signed),
                "last_signed_height": self.last_signed_height,
                "missed_blocks": self.missed_blocks,
                "skipped_at_or_below_state": self.skipped_at_or_below_state,
                "double_sign_waits": self.double_sign_waits,
                "signing_intervals": [list(iv) for iv in self.signing_intervals],
                "calls": dict(self.calls),
            }

    def status(self) -> dict[str, Any]:
        """CometBFT's /status result."""
        with self.cond:
            address = self.other_key_address if "other_key" in self.faults else self.address
            height = self.height
            return {
                "node_info": {
                    "id": hashlib.sha256(self.name.encode()).hexdigest()[:40],
                    "network": self.chain_id,
                    "moniker": self.name,
                    "version": "0.38.12-sim",
                },
                "sync_info": {
                    "latest_block_height": str(height),
                    "latest_block_time": _iso(self.genesis_time + height * self.block_seconds),
                    "catching_up": "stalled" in self.faults,
                },
                "validator_info": {
                    "address": address,
                    "pub_key": {
                        "type": "tendermint/PubKeyEd25519",
                        "value": base64.b64encode(bytes.fromhex(address) * 2)[:44].decode(),
                    },
                    "voting_power": "1000",
                },
            }

    def commit(self, height: int) -> dict[str, Any]:
        """CometBFT's /commit result at `height` (<= this node's height): the signatures the
        pair recorded there, plus the other validator's."""
        with self.cond:
            chain_id, genesis, bs = self.chain_id, self.genesis_time, self.block_seconds
            peer = self.peer_validator
        addresses = sorted(
            {
                str(rec["address"])
                for rec in read_signatures(self.cluster_dir)
                if rec.get("height") == height
            }
        )
        at = _iso(genesis + height * bs)
        block_hash = hashlib.sha256(f"{chain_id}:block:{height}".encode()).hexdigest().upper()
        signatures = [
            {
                "block_id_flag": 2,
                "validator_address": address,
                "timestamp": at,
                "signature": base64.b64encode(
                    hashlib.sha256(f"{address}:{height}".encode()).digest()
                ).decode(),
            }
            for address in [peer, *addresses]
        ]
        return {
            "signed_header": {
                "header": {"chain_id": chain_id, "height": str(height), "time": at},
                "commit": {
                    "height": str(height),
                    "round": 0,
                    "block_id": {"hash": block_hash},
                    "signatures": signatures,
                },
            },
            "canonical": True,
        }

    def metrics(self) -> bytes:
        """CometBFT's own metrics (namespace cometbft), as rules/cosmos.yml reads them."""
        with self.cond:
            chain = {"chain_id": self.chain_id}
            validator = chain | {"validator_address": self.address}
            items: list[tuple[str, str, dict[str, str], float]] = [
                ("cometbft_consensus_height", "Height of the chain.", chain, self.height),
                (
                    "cometbft_blocksync_syncing",
                    "Whether or not a node is block syncing. 1 if yes, 0 if no.",
                    chain,
                    1 if "stalled" in self.faults else 0,
                ),
                (
                    "cometbft_p2p_peers",
                    "Number of peers.",
                    chain,
                    2 if "drop_peers" in self.faults else PEERS,
                ),
            ]
            # only a node whose key has signed exports the validator's series (the standby's
            # key is not in the validator set until it signs); a fenced node keeps its values
            if self.last_signed_height is not None or self.missed_blocks:
                items.append(
                    (
                        "cometbft_consensus_validator_last_signed_height",
                        "Last height signed by this validator if the node is a validator.",
                        validator,
                        self.last_signed_height or 0,
                    )
                )
                items.append(
                    (
                        "cometbft_consensus_validator_missed_blocks",
                        "Total missed blocks for a validator.",
                        validator,
                        self.missed_blocks,
                    )
                )
        return _labelled_gauges(items)


def _labelled_gauges(items: Iterable[tuple[str, str, Mapping[str, str], float]]) -> bytes:
    lines: list[str] = []
    for name, help_text, labels, value in items:
        rendered = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines += [
            f"# HELP {name} {help_text}",
            f"# TYPE {name} gauge",
            f"{name}{{{rendered}}} {int(value)}",
        ]
    return ("\n".join(lines) + "\n").encode()


def _rpc(result: Any) -> Response:
    return _json({"jsonrpc": "2.0", "id": -1, "result": result})


def _rpc_error(message: str, data: str, status: int = 500) -> Response:
    return _json(
        {"jsonrpc": "2.0", "id": -1, "error": {"code": -32603, "message": message, "data": data}},
        status,
    )


Handler = Callable[..., Response]
SIM_ENDPOINTS = frozenset(
    {"fault_on", "fault_off", "faults_clear", "state", "signer", "signer_start", "signer_stop"}
)


class CosmosSimApp:
    """The WSGI app: CometBFT RPC (/status, /commit, /health), /metrics, the control API."""

    def __init__(self, sim: CosmosSim) -> None:
        self.sim = sim
        self.url_map = Map(
            [
                Rule("/status", methods=["GET"], endpoint="status"),
                Rule("/commit", methods=["GET"], endpoint="commit"),
                Rule("/health", methods=["GET"], endpoint="health"),
                Rule("/metrics", methods=["GET"], endpoint="metrics"),
                Rule("/sim/faults", methods=["POST"], endpoint="fault_on"),
                Rule("/sim/faults", methods=["DELETE"], endpoint="faults_clear"),
                Rule("/sim/faults/clear", methods=["POST"], endpoint="faults_clear"),
                Rule("/sim/faults/<name>", methods=["DELETE"], endpoint="fault_off"),
                Rule("/sim/state", methods=["GET"], endpoint="state"),
                Rule("/sim/signer", methods=["GET"], endpoint="signer"),
                Rule("/sim/signer/start", methods=["POST"], endpoint="signer_start"),
                Rule("/sim/signer/stop", methods=["POST"], endpoint="signer_stop"),
            ]
        )
        self.handlers: dict[str, Handler] = {
            "status": self.status,
            "commit": self.commit,
            "health": self.health,
            "metrics": self.metrics,
            "fault_on": self.fault_on,
            "fault_off": self.fault_off,
            "faults_clear": self.faults_clear,
            "state": self.state,
            "signer": self.signer,
            "signer_start": self.signer_start,
            "signer_stop": self.signer_stop,
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

    # -- the node -------------------------------------------------------------------------

    def _down(self, call: str) -> Response | None:
        """A crashed or hung node holds the request open, then fails; else count the call."""
        with self.sim.cond:
            fault = next((f for f in ("crash", "hang") if f in self.sim.faults), None)
            self.sim.calls[call] += 1
        if fault is None:
            return None
        self.sim.hang(fault)
        return Response(f"{fault}\n", status=503, content_type="text/plain")

    def status(self, request: Request) -> Response:
        if (down := self._down("status")) is not None:
            return down
        return _rpc(self.sim.status())

    def health(self, request: Request) -> Response:
        if (down := self._down("status")) is not None:
            return down
        return _rpc({})

    def commit(self, request: Request) -> Response:
        if (down := self._down("commit")) is not None:
            return down
        with self.sim.cond:
            latest = self.sim.height
        raw = request.args.get("height", "").strip('"')
        if not raw:
            height = latest
        elif raw.isdigit() and len(raw) <= 20:
            height = int(raw)
        else:
            return _rpc_error("Invalid params", f"height {raw!r} is not an integer", 400)
        if height < 1 or height > latest:
            return _rpc_error(
                "Internal error",
                f"height {height} must be less than or equal to the current blockchain height "
                f"{latest}",
            )
        return _rpc(self.sim.commit(height))

    def metrics(self, request: Request) -> Response:
        if (down := self._down("metrics")) is not None:
            return down
        return Response(self.sim.metrics(), content_type=METRICS_CONTENT_TYPE)

    # -- control API (loopback) -----------------------------------------------------------

    def _unknown(self, name: object) -> Response:
        return _json(
            {"error": f"unknown fault {json.dumps(name)}; valid: {', '.join(FAULTS)}"}, 400
        )

    def fault_on(self, request: Request) -> Response:
        body = request.get_json(silent=True, force=True)
        name = body.get("fault") if isinstance(body, dict) else None
        if name not in FAULTS:
            return self._unknown(name)
        self.sim.set_fault(str(name), True)
        return _json({"faults": self.sim.state()["faults"]})

    def fault_off(self, request: Request, name: str) -> Response:
        if name not in FAULTS:
            return self._unknown(name)
        self.sim.set_fault(name, False)
        return _json({"faults": self.sim.state()["faults"]})

    def faults_clear(self, request: Request) -> Response:
        self.sim.clear_faults()
        return _json({"faults": []})

    def state(self, request: Request) -> Response:
        return _json(self.sim.state())

    def _signer(self) -> dict[str, Any]:
        with self.sim.cond:
            service = self.sim.service_state_locked()
            return {"signer": self.sim.signer, "service": service, "active": service == "active"}

    def signer(self, request: Request) -> Response:
        return _json(self._signer())

    def signer_start(self, request: Request) -> Response:
        try:
            self.sim.start_signer()
        except ValueError as exc:
            return _json({"error": str(exc)} | self._signer(), 500)
        return _json(self._signer())

    def signer_stop(self, request: Request) -> Response:
        try:
            self.sim.stop_signer()
        except ValueError as exc:
            return _json({"error": str(exc)} | self._signer(), 500)
        return _json(self._signer())


def _address(value: str) -> str:
    if not ADDRESS_RE.match(value.upper()):
        raise argparse.ArgumentTypeError(f"expected 40 hex digits, got {value!r}")
    return value.upper()


def _non_negative_int(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value!r}")
    return int(value)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m responder.sim cosmos", description="A simulated CometBFT validator node."
    )
    parser.add_argument("--name", required=True)
    parser.add_argument("--listen", required=True, type=_listen, help="HOST:PORT (port 0: any)")
    parser.add_argument("--home", required=True, type=Path, help="the node home (config/, data/)")
    parser.add_argument(
        "--cluster-dir", required=True, type=Path, help="shared by the pair: who signed what"
    )
    parser.add_argument("--validator-address", required=True, type=_address)
    parser.add_argument("--chain-id", required=True)
    parser.add_argument("--signing", action="store_true", help="start with the signer running")
    parser.add_argument(
        "--genesis-time", type=float, help="Unix seconds (default: now); the same for a pair"
    )
    parser.add_argument("--block-seconds", type=_positive, default=1.0)
    parser.add_argument(
        "--double-sign-check-height",
        type=_non_negative_int,
        default=0,
        help="written into a new config.toml (default 0, CometBFT's own default)",
    )
    parser.add_argument("--hang-seconds", type=_positive, default=30.0)
    parser.add_argument("--log-requests", action="store_true", help="log every HTTP request")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.log_requests else logging.WARNING)
    sim = CosmosSim(
        args.name,
        args.home,
        args.cluster_dir,
        args.validator_address,
        args.chain_id,
        signing=args.signing,
        genesis_time=args.genesis_time,
        block_seconds=args.block_seconds,
        double_sign_check_height=args.double_sign_check_height,
        hang_seconds=args.hang_seconds,
    )
    return serve(
        args.name,
        CosmosSimApp(sim),
        args.listen,
        start=sim.start_ticker,
        stop=sim.stop,
        admin_dir=args.home,
    )


if __name__ == "__main__":
    sys.exit(main())
