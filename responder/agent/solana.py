"""The Solana backend: Anza's documented identity hot-swap for an Agave validator.

Fence: (`wait-for-restart-window` for a planned switchover, then) `agave-validator -l LEDGER
set-identity UNSTAKED.json`, verified by RPC `getIdentity`; the hand-off is the staked identity's
tower file `tower-1_9-<STAKED>.bin`, read after the switch so that it holds the last vote.
Activate: write that tower into the tower directory, then `set-identity --require-tower
STAKED.json`, verified by `getIdentity`. Without a tower the activation is refused unless the
responder says who waived it (an operator, or the chain quiet for enough slots).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests

from ..drivers.base import DriverError
from ..drivers.command import run
from .base import HANDOFF_MAX_BYTES, AgentError, ChainStatus, Position, write_atomic
from .config import SolanaConfig

log = logging.getLogger("responder.agent.solana")

HANDOFF_KIND = "solana-tower"
RPC_MAX_BYTES = 1024 * 1024  # a filtered getVoteAccounts answer is a few hundred bytes
POLL_SECONDS = 0.2  # between getIdentity reads while a switch is verified
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58, as Solana prints public keys (leading zero bytes become '1')."""
    number = int.from_bytes(data, "big")
    digits: list[str] = []
    while number:
        number, rest = divmod(number, 58)
        digits.append(_B58_ALPHABET[rest])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(digits))


def keypair_pubkey(path: Path) -> str:
    """The base58 public key of a Solana keypair file (a JSON array of 64 byte values: the
    secret key, then the public key); ValueError or OSError if it is not one."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if (
        not isinstance(data, list)
        or len(data) != 64
        or not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in data)
    ):
        raise ValueError("not a keypair: expected a JSON array of 64 byte values")
    return b58encode(bytes(data[32:]))


def tower_name(identity: str) -> str:
    return f"tower-1_9-{identity}.bin"


class SolanaBackend:
    """One Agave validator host; see the module docstring for the procedure.

    Every RPC call is bounded by `rpc_timeout`, every command by `timeout` (the restart window
    by `restart_window_timeout`), and each switch is verified by polling `getIdentity` for up
    to `verify_timeout`. `clock` and `sleep` are injectable for tests.
    """

    def __init__(
        self,
        config: SolanaConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._clock = clock
        self._sleep = sleep
        self._session = requests.Session()
        self._session.trust_env = False  # no proxies from the environment for a local RPC

    # -- identities and the tower ------------------------------------------------------

    def _pubkey(self, path: Path, what: str) -> str:
        try:
            return keypair_pubkey(path)
        except (OSError, ValueError) as exc:
            raise AgentError(f"cannot read the {what} keypair {path}: {exc}", 409) from None

    def _identities(self) -> tuple[str, str]:
        staked = self._pubkey(self.config.staked_identity, "staked identity")
        unstaked = self._pubkey(self.config.unstaked_identity, "unstaked identity")
        if staked == unstaked:
            raise AgentError("staked_identity and unstaked_identity are the same key", 409)
        return staked, unstaked

    @property
    def tower_dir(self) -> Path:
        return self.config.tower_dir or self.config.ledger

    # -- RPC -----------------------------------------------------------------------------

    def _rpc(self, method: str, params: list[Any] | None = None) -> Any:
        """The JSON-RPC `result`; a JSON-RPC error object is returned as {"error": {...}} only
        for getHealth (whose errors are its answer); anything else unusable raises 502."""
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
        if params is not None:
            body["params"] = params
        url = self.config.rpc_url
        try:
            with self._session.post(
                url, json=body, timeout=self.config.rpc_timeout, stream=True
            ) as resp:
                raw = resp.raw.read(RPC_MAX_BYTES + 1, decode_content=True)
                status = resp.status_code
        except requests.RequestException as exc:
            raise AgentError(f"RPC {method} at {url} failed: {type(exc).__name__}") from None
        if len(raw) > RPC_MAX_BYTES:
            raise AgentError(f"RPC {method} answered more than {RPC_MAX_BYTES} bytes")
        try:
            answer = json.loads(raw)
        except ValueError:
            raise AgentError(f"RPC {method} answered HTTP {status} without JSON") from None
        if not isinstance(answer, dict):
            raise AgentError(f"RPC {method} answered a JSON {type(answer).__name__}")
        if "error" in answer:
            if method == "getHealth":
                return {"error": answer["error"]}
            raise AgentError(f"RPC {method} answered an error: {_short(answer['error'])}")
        if "result" not in answer:
            raise AgentError(f"RPC {method} answered HTTP {status} without a result")
        return answer["result"]

    def _identity(self) -> str:
        result = self._rpc("getIdentity")
        identity = result.get("identity") if isinstance(result, dict) else None
        if not isinstance(identity, str) or not identity:
            raise AgentError(f"RPC getIdentity answered no identity: {_short(result)}")
        return identity

    def _await_identity(self, want: str, what: str) -> None:
        """Poll getIdentity until it shows `want`; 504 if it does not within verify_timeout."""
        deadline = self._clock() + self.config.verify_timeout
        last = "no answer"
        while True:
            try:
                seen = self._identity()
            except AgentError as exc:
                last = str(exc)
            else:
                if seen == want:
                    return
                last = f"getIdentity shows {seen}"
            if self._clock() >= deadline:
                raise AgentError(
                    f"{what}: getIdentity did not show {want} within "
                    f"{self.config.verify_timeout:g}s ({last})",
                    504,
                )
            self._sleep(POLL_SECONDS)

    # -- commands ------------------------------------------------------------------------

    def _agave(self, args: list[str], timeout: float) -> str:
        argv = [*self.config.validator, "-l", str(self.config.ledger), *args]
        shown = " ".join([*self.config.validator[-1:], *args[:1]])
        try:
            proc = run(argv, {}, timeout)
        except DriverError as exc:
            raise AgentError(f"{shown}: {exc}") from None
        if proc.returncode != 0:
            tail = (proc.stderr.strip() or proc.stdout.strip())[-300:]
            raise AgentError(f"{shown} exited {proc.returncode}: {tail}")
        return proc.stdout.strip()[-300:]

    # -- Backend -------------------------------------------------------------------------

    def status(self) -> ChainStatus:
        staked, unstaked = self._identities()
        identity = self._identity()
        if identity not in (staked, unstaked):
            raise AgentError(
                f"the node runs identity {identity}, neither the staked {staked} nor the "
                f"unstaked {unstaked}: check the agent's keypairs"
            )
        detail = f"identity {identity} ({'staked' if identity == staked else 'unstaked'})"
        healthy = True
        try:
            health = self._rpc("getHealth")
        except AgentError as exc:
            healthy, detail = False, f"{detail}; {exc}"
        else:
            if health != "ok":
                healthy, detail = False, f"{detail}; getHealth: {_short(health)}"
        chain: str | None = None
        try:
            genesis = self._rpc("getGenesisHash")
            chain = genesis if isinstance(genesis, str) and genesis else None
        except AgentError as exc:
            detail = f"{detail}; {exc}"
        return ChainStatus(healthy=healthy, signing=identity == staked, chain=chain, detail=detail)

    def fence(self, planned: bool) -> Mapping[str, Any]:
        staked, unstaked = self._identities()
        try:
            current: str | None = self._identity()
        except AgentError as exc:
            # switching to the unstaked identity is safe whatever the node runs: try it, and
            # let getIdentity confirm it (or not) afterwards
            log.warning("fence: getIdentity failed before the switch (%s); switching anyway", exc)
            current = None
        if current is not None and current not in (staked, unstaked):
            raise AgentError(
                f"the node runs identity {current}, neither the staked {staked} nor the "
                f"unstaked {unstaked}: refusing to touch it; check the agent's keypairs",
                409,
            )
        if current == unstaked:
            log.info("fence: already on the unstaked identity %s; handing the tower over", current)
            self._link(self.config.unstaked_identity)
        else:
            if planned and self.config.wait_for_restart_window:
                self._restart_window()
            # first the link: a node that restarts from here on comes back unstaked
            self._link(self.config.unstaked_identity)
            self._agave(["set-identity", str(self.config.unstaked_identity)], self.config.timeout)
        self._await_identity(unstaked, "fence")
        handoff = self._read_tower(staked, unstaked)
        log.info("fence: verified on %s; tower %s handed over", unstaked, handoff["file"])
        return handoff

    def _restart_window(self) -> None:
        """A planned switchover waits for a window without leader slots; none found in time
        refuses the fence (409) before anything changed, so the operator retries later."""
        try:
            self._agave(
                [
                    "wait-for-restart-window",
                    "--min-idle-time",
                    str(self.config.min_idle_time),
                    "--skip-new-snapshot-check",
                ],
                self.config.restart_window_timeout,
            )
        except AgentError as exc:
            raise AgentError(f"no restart window, nothing was changed: {exc}", 409) from None

    def _read_tower(self, staked: str, unstaked: str) -> dict[str, Any]:
        """The hand-off, read after the verified switch. Unreadable: the node IS fenced, but the
        fence answers 502 so that no activation follows it as if a tower were handed over;
        the responder's other levels or the operator decide (see docs/solana.md)."""
        path = self.tower_dir / tower_name(staked)
        try:
            with path.open("rb") as tower:
                data = tower.read(HANDOFF_MAX_BYTES + 1)
        except OSError as exc:
            raise AgentError(
                f"the node is fenced (getIdentity shows the unstaked {unstaked}) but its tower "
                f"{path} cannot be read ({exc.strerror or exc}): no hand-off, so the activation "
                "must wait for an operator or for the chain to be quiet",
                502,
            ) from None
        if not data or len(data) > HANDOFF_MAX_BYTES:
            raise AgentError(
                f"the node is fenced (getIdentity shows the unstaked {unstaked}) but its tower "
                f"{path} is {'empty' if not data else 'too large'}: no hand-off",
                502,
            )
        return {
            "kind": HANDOFF_KIND,
            "identity": staked,
            "file": path.name,
            "data": base64.b64encode(data).decode("ascii"),
            "sha256": hashlib.sha256(data).hexdigest(),
        }

    def _check_handoff(self, handoff: Mapping[str, Any], staked: str) -> tuple[str, bytes]:
        """The tower file name and bytes, or 409 if the hand-off is not this validator's."""
        if handoff.get("kind") != HANDOFF_KIND:
            raise AgentError(
                f"the hand-off is of kind {handoff.get('kind')!r}, not {HANDOFF_KIND!r}", 409
            )
        if handoff.get("identity") != staked:
            raise AgentError(
                f"the hand-off is the tower of {handoff.get('identity')!r}, not of the staked "
                f"identity {staked}",
                409,
            )
        name = handoff.get("file")
        if name != tower_name(staked):
            raise AgentError(f"the hand-off names file {name!r}, not {tower_name(staked)}", 409)
        encoded, digest = handoff.get("data"), handoff.get("sha256")
        if not isinstance(encoded, str) or not isinstance(digest, str):
            raise AgentError("the hand-off carries no tower data or no sha256", 409)
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise AgentError("the hand-off's tower data is not base64", 409) from None
        if not data:
            raise AgentError("the hand-off's tower is empty", 409)
        if hashlib.sha256(data).hexdigest() != digest.lower():
            raise AgentError("the hand-off's tower does not match its sha256", 409)
        return name, data

    def activate(self, handoff: Mapping[str, Any] | None, waived: str | None) -> str:
        staked, unstaked = self._identities()
        current = self._identity()
        if current == staked:  # a repeated activation changes nothing
            return f"already voting as {staked}" + self._link_after_activation()
        if current != unstaked:
            raise AgentError(
                f"the node runs identity {current}, neither the staked {staked} nor the "
                f"unstaked {unstaked}: refusing to touch it; check the agent's keypairs",
                409,
            )
        tower: tuple[str, bytes] | None = None
        if handoff is not None:
            tower = self._check_handoff(handoff, staked)
        elif not waived:
            raise AgentError(
                "no tower was handed over: refusing to vote without one; the responder waits "
                "for an operator or for the chain to be quiet, then sends a waiver",
                409,
            )
        if tower is not None:
            name, data = tower
            path = self.tower_dir / name
            try:
                write_atomic(path, data)
            except OSError as exc:
                raise AgentError(
                    f"cannot write the tower {path} ({exc.strerror or exc}); not activated"
                ) from None
            self._agave(
                ["set-identity", "--require-tower", str(self.config.staked_identity)],
                self.config.timeout,
            )
            how = f"with the handed-over tower ({len(data)} bytes)"
        else:
            log.warning("activate without a tower, waived by: %s", waived)
            self._agave(["set-identity", str(self.config.staked_identity)], self.config.timeout)
            how = f"without a tower, waived by {waived}"
        self._await_identity(staked, "activate")
        return f"voting as {staked} {how}" + self._link_after_activation()

    def _link_after_activation(self) -> str:
        """The node votes: a link that cannot follow is an outage risk on restart, not a
        second voter, so it is reported, not a failed activation."""
        try:
            self._link(self.config.staked_identity)
        except AgentError as exc:
            log.error("activate: %s", exc)
            return f"; WARNING: {exc}"
        return ""

    def _link(self, keypair: Path) -> None:
        """Point `identity_link` at `keypair` atomically (a restart then keeps the role)."""
        link = self.config.identity_link
        if link is None:
            return
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        try:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(keypair)
            os.replace(tmp, link)
        except OSError as exc:
            raise AgentError(
                f"cannot point {link} at {keypair} ({exc.strerror or exc}); nothing was switched",
                502,
            ) from None

    def position(self) -> Position:
        vote_account = self.config.vote_account
        if vote_account is None:
            raise AgentError("vote_account not configured: the agent cannot see votes", 409)
        slot = self._rpc("getSlot")
        if not isinstance(slot, int) or isinstance(slot, bool) or slot < 0:
            raise AgentError(f"RPC getSlot answered {_short(slot)}")
        accounts = self._rpc("getVoteAccounts", [{"votePubkey": vote_account}])
        if not isinstance(accounts, dict):
            raise AgentError(f"RPC getVoteAccounts answered {_short(accounts)}")
        for entry in [*_list(accounts.get("current")), *_list(accounts.get("delinquent"))]:
            if isinstance(entry, dict) and entry.get("votePubkey") == vote_account:
                last = entry.get("lastVote")
                if not isinstance(last, int) or isinstance(last, bool) or last < 0:
                    raise AgentError(f"vote account {vote_account}: lastVote is {_short(last)}")
                return Position("slot", slot, last or None)
        # Not "never voted": an unknown account (a typo, an unstaked account) would read as a
        # quiet chain forever and let the responder waive the tower; say we cannot see it.
        raise AgentError(f"vote account {vote_account} is not in getVoteAccounts", 502)


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _short(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:200] + "..."
