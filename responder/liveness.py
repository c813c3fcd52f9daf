"""Chain-side evidence from the beacon node API: liveness and proposer duties.

Liveness is used only when a fence confirmed without handing over slashing-protection history
(a power switch cut the primary): the standby is activated once the pair's validators were
seen not live for N consecutive whole epochs after the fence. Proposer duties tell a planned
switchover whether one of the pair's validators is about to propose (`proposal_ahead`): moving
the keys across that slot would miss the block.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import ConfigError, LivenessConfig, read_secret
from .drivers.base import DriverError
from .drivers.transport import BEACON_MAX_BYTES, Limits, Transport, tls_verify

_PUBKEY = re.compile(r"^0x[0-9a-fA-F]{96}\Z")


@dataclass(frozen=True)
class Chain:
    genesis_time: float
    seconds_per_slot: float = 12.0
    slots_per_epoch: int = 32

    @property
    def epoch_seconds(self) -> float:
        return self.seconds_per_slot * self.slots_per_epoch

    def epoch(self, t: float) -> int:
        return max(0, int((t - self.genesis_time) // self.epoch_seconds))

    def epoch_start(self, epoch: int) -> float:
        return self.genesis_time + epoch * self.epoch_seconds

    def slot(self, t: float) -> int:
        """The slot running at wall time `t` (0 before genesis)."""
        return max(0, int((t - self.genesis_time) // self.seconds_per_slot))

    def slot_start(self, slot: int) -> float:
        return self.genesis_time + slot * self.seconds_per_slot


def proposal_ahead(
    chain: Chain, duties: Mapping[int, str], pubkeys: Iterable[str], now: float, within_slots: int
) -> tuple[int, float] | None:
    """The first slot from the current one to `within_slots` later (inclusive) in which one
    of `pubkeys` proposes, with the wall time that slot ends; None when none does (a
    switchover now misses no block). Pure: `duties` maps slot to proposer pubkey."""
    if within_slots < 0:
        raise ValueError(f"within_slots must be >= 0, got {within_slots}")
    ours = {k.lower() for k in pubkeys}
    current = chain.slot(now)
    for slot in range(current, current + within_slots + 1):
        proposer = duties.get(slot)
        if proposer is not None and proposer.lower() in ours:
            return slot, chain.slot_start(slot + 1)
    return None


@dataclass(frozen=True)
class GateStep:
    done: bool
    progress: dict[str, Any]
    wake_at: float
    note: str


def liveness_step(
    progress: Mapping[str, Any],
    *,
    fenced_at: float,
    now: float,
    chain: Chain,
    required: int,
    query: Callable[[int], Mapping[int, bool]],
) -> GateStep:
    """One look at the chain: extend or restart the run of quiet epochs; pure but for `query`.

    Only the last complete epoch is asked about (the API answers for the current epoch ±1), so
    an epoch missed while the responder was down breaks the run and it starts again.
    """
    current = chain.epoch(now)
    first = int(progress.get("first", chain.epoch(fenced_at) + 1))
    quiet = [int(e) for e in progress.get("quiet", [])]
    target = current - 1
    note = f"waiting for epoch {first} to complete"
    if target >= first and target not in quiet:
        if quiet and target != quiet[-1] + 1:
            quiet = []
        live = query(target)
        awake = sorted(i for i, is_live in live.items() if is_live)
        if awake:
            quiet, first = [], target + 1
            note = (
                f"validators {awake} were live in epoch {target}: the fence is not proven, waiting"
            )
        else:
            quiet.append(target)
            note = f"not live in epochs {quiet[0]}..{quiet[-1]} ({len(quiet)} of {required})"
    elif quiet:
        note = f"not live in epochs {quiet[0]}..{quiet[-1]} ({len(quiet)} of {required})"
    done = len(quiet) >= required
    return GateStep(
        done=done,
        progress={"first": first, "quiet": quiet},
        wake_at=chain.epoch_start(current + 1) + 1.0,
        note=note,
    )


class BeaconClient:
    """The beacon-node API calls the gate and switchovers need; verifies it is the pair's chain."""

    def __init__(self, config: LivenessConfig, genesis_validators_root: str) -> None:
        self.config = config
        self.root = genesis_validators_root.lower()
        # `timeout` bounds the whole call: connect, send and the complete answer
        t = config.timeout
        self._transport = Transport(
            limits=Limits(connect_timeout=t, timeout=t, max_bytes=BEACON_MAX_BYTES, total=t),
            verify=tls_verify(config.tls.ca_file, config.tls.insecure_skip_verify),
            tls_hint=" (see liveness.tls.ca_file)",
        )

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        url = self.config.beacon_url + path
        headers = {"Accept": "application/json"}
        if self.config.token_file is not None:
            try:
                token = read_secret(self.config.token_file, "liveness.token_file").value
            except ConfigError as exc:
                raise DriverError(str(exc)) from None
            headers["Authorization"] = f"Bearer {token}"
        answer = self._transport.request(method, url, headers=headers, body=body)
        if answer.status != 200:
            raise DriverError(f"{method} {url} answered {answer.status}")
        try:
            return answer.json()
        except ValueError:
            raise DriverError(f"{method} {url}: response is not JSON") from None

    def chain(self) -> Chain:
        body = self._call("GET", "/eth/v1/beacon/genesis")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise DriverError("beacon genesis answer has no data object")
        root = str(data.get("genesis_validators_root", "")).lower()
        if root != self.root:
            raise DriverError(f"beacon node is on chain {root or '?'}, not this pair's {self.root}")
        try:
            genesis = float(data["genesis_time"])
        except (KeyError, ValueError, TypeError):
            raise DriverError("beacon node genesis has no usable genesis_time") from None
        return Chain(genesis, self.config.seconds_per_slot, self.config.slots_per_epoch)

    def liveness(self, epoch: int) -> dict[int, bool]:
        indices = [str(i) for i in self.config.validator_indices]
        body = self._call("POST", f"/eth/v1/validator/liveness/{epoch}", indices)
        rows = body.get("data") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise DriverError("liveness answer has no data list")
        out = {}
        for row in rows:
            try:
                out[int(row["index"])] = bool(row["is_live"])
            except (KeyError, ValueError, TypeError):
                raise DriverError(f"liveness answer has a bad entry: {row!r:.120}") from None
        missing = set(self.config.validator_indices) - set(out)
        if missing:
            raise DriverError(f"liveness answer misses indices {sorted(missing)}")
        return out

    def proposer_duties(self, epoch: int) -> dict[int, str]:
        """Slot -> lower-cased proposer pubkey for `epoch` (beacon nodes answer for the
        current and the next epoch only); DriverError on an answer that is not usable."""
        body = self._call("GET", f"/eth/v1/validator/duties/proposer/{epoch}")
        rows = body.get("data") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise DriverError("proposer duties answer has no data list")
        spe = self.config.slots_per_epoch
        out: dict[int, str] = {}
        for row in rows:
            try:
                slot = int(row["slot"])
                pubkey = row["pubkey"]
            except (KeyError, ValueError, TypeError):
                raise DriverError(f"proposer duties answer has a bad entry: {row!r:.120}") from None
            if not isinstance(pubkey, str) or not _PUBKEY.match(pubkey):
                raise DriverError(f"proposer duties answer has a bad pubkey: {pubkey!r:.120}")
            if slot // spe != epoch:
                raise DriverError(f"proposer duties for epoch {epoch} name slot {slot}")
            out[slot] = pubkey.lower()
        return out
