"""CometBFT (Cosmos) backend: stop the signer, hand its sign state over, start it elsewhere.

The signer is whatever signs with the validator key on this host: the node itself (the key in
priv_validator_key.json), tmkms or Horcrux. The operator's commands stop, start and query it
(`systemctl stop gaiad`, `systemctl is-active --quiet tmkms`); the sign state file
(`priv_validator_state.json`, or the remote signer's own state file) is the signer's high-water
mark: it never signs at or below the (height, round, step) recorded there.

fence: run `stop`; `is_running` must exit non-zero within verify_timeout; then, when the node's
  RPC answers and still shows our validator address, the chain must show no signature by our
  address above this signer's last signed height (the state file), once two heights have
  passed: a signature there means another signer holds the key, and the fence fails. The
  hand-off is {"kind": "cometbft-sign-state", "state": <the file's JSON>, "sha256": <sha256 of
  its canonical JSON>, "validator_address", "chain_id"}.
  A sign state that cannot be read after a verified stop: the node IS fenced, so the fence
  succeeds, but with no hand-off ({}): the responder then treats the activation as one without
  a hand-off, which waits for an operator or the pair's quiet gate (`handoff.without`).
activate: refuse (409) unless config.toml has [consensus] double_sign_check_height > 0; verify
  the hand-off (kind, sha256, validator, chain; 409) or refuse without one unless waived; write
  max(own state, handed state) by (height, round, step) atomically, never lowering it; run
  `start`; `is_running` must exit 0 and /status must show our validator address within
  verify_timeout (504). The double-sign check makes a started signer wait until our key has not
  signed for double_sign_check_height heights: verify_timeout must cover that.
position: the RPC's latest height, and the last of the latest `signatures_lookback` heights
  whose commit carries our signature.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import tomllib
from collections.abc import Callable, Mapping
from typing import Any

import requests

from ..drivers.base import DriverError
from ..drivers.command import run
from .base import AgentError, ChainStatus, Position, write_atomic
from .config import CosmosConfig

log = logging.getLogger("responder.agent")

HANDOFF_KIND = "cometbft-sign-state"
RPC_MAX_BYTES = 4 * 1024 * 1024  # a /commit of a large validator set is a few hundred KiB
STATE_MAX_BYTES = 64 * 1024  # a sign state is a few hundred bytes
POLL_SECONDS = 0.2
QUIET_HEIGHTS = 2  # heights the fence watches for a signature by another signer

HRS = tuple[int, int, int]


def canonical_sha256(state: Mapping[str, Any]) -> str:
    """sha256 (hex) of the state's canonical JSON: sorted keys, no spaces, ASCII."""
    text = json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def hrs_of(state: Mapping[str, Any]) -> HRS:
    """(height, round, step) of a sign state; ValueError if one is missing or not a number.

    CometBFT writes the height as a string; tmkms and Horcrux write the round as one too.
    """

    def number(key: str) -> int:
        value = state.get(key)
        if isinstance(value, bool):
            raise ValueError(f"{key} is not a number")
        if isinstance(value, int) and value >= 0:
            return value
        if isinstance(value, str) and value.isdigit() and len(value) <= 20:
            return int(value)
        raise ValueError(f"{key} is {json.dumps(value)[:40]}, not a non-negative integer")

    return number("height"), number("round"), number("step")


def _hrs_text(hrs: HRS) -> str:
    return f"{hrs[0]}/{hrs[1]}/{hrs[2]}"


class CosmosBackend:
    """One CometBFT validator host: see the module docstring for the procedure."""

    def __init__(self, config: CosmosConfig) -> None:
        self.config = config

    # -- commands ---------------------------------------------------------------------------

    def _run(self, name: str, argv: tuple[str, ...]) -> tuple[int, str]:
        """Exit status and a short stderr; AgentError (502) if the command could not finish."""
        try:
            proc = run(argv, {}, self.config.timeout)
        except DriverError as exc:
            raise AgentError(f"{name} command: {exc}", 502) from None
        return proc.returncode, (proc.stderr.strip() or proc.stdout.strip())[-300:]

    def _running(self) -> bool:
        """The is_running command exits 0: the signer runs."""
        code, _ = self._run("is_running", self.config.is_running)
        return code == 0

    # -- RPC --------------------------------------------------------------------------------

    def _rpc(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """GET a CometBFT RPC endpoint; its `result` object, or AgentError (502)."""
        url = self.config.rpc_url.rstrip("/") + path
        timeout = self.config.rpc_timeout
        deadline = time.monotonic() + timeout
        try:
            with requests.Session() as session:
                session.trust_env = False  # never a proxy from the environment
                with session.get(url, params=params, timeout=timeout, stream=True) as resp:
                    body = bytearray()
                    for chunk in resp.iter_content(65536):
                        body += chunk
                        if len(body) > RPC_MAX_BYTES:
                            raise AgentError(f"RPC {path}: answer over {RPC_MAX_BYTES} bytes", 502)
                        if time.monotonic() > deadline:
                            raise AgentError(f"RPC {path}: answer took over {timeout:g}s", 502)
                    status = resp.status_code
        except requests.RequestException as exc:
            raise AgentError(f"RPC {path}: {type(exc).__name__}", 502) from None
        if status != 200:
            raise AgentError(f"RPC {path} answered {status}", 502)
        try:
            data = json.loads(body)
        except ValueError:
            raise AgentError(f"RPC {path}: answer is not JSON", 502) from None
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, dict):
            raise AgentError(f"RPC {path}: answer has no result object", 502)
        return result

    def _node(self) -> tuple[int, bool, str | None, str | None]:
        """/status: latest height, catching up, chain id, validator address (upper-case hex)."""
        result = self._rpc("/status")
        sync = result.get("sync_info")
        node = result.get("node_info")
        validator = result.get("validator_info")
        raw = sync.get("latest_block_height") if isinstance(sync, dict) else None
        catching_up = sync.get("catching_up") if isinstance(sync, dict) else None
        if not (isinstance(raw, str | int) and str(raw).isdigit()) or not isinstance(
            catching_up, bool
        ):
            raise AgentError("RPC /status: no usable sync_info", 502)
        height = int(str(raw))
        chain = node.get("network") if isinstance(node, dict) else None
        address = validator.get("address") if isinstance(validator, dict) else None
        return (
            height,
            catching_up,
            chain if isinstance(chain, str) and chain else None,
            address.upper() if isinstance(address, str) and address else None,
        )

    def _signers_at(self, height: int) -> set[str]:
        """The validator addresses whose signature is in the commit at `height`."""
        result = self._rpc("/commit", {"height": str(height)})
        header = result.get("signed_header")
        commit = header.get("commit") if isinstance(header, dict) else None
        sigs = commit.get("signatures") if isinstance(commit, dict) else None
        if not isinstance(sigs, list):
            raise AgentError(f"RPC /commit?height={height}: no signatures list", 502)
        return {
            str(s["validator_address"]).upper()
            for s in sigs
            if isinstance(s, dict) and s.get("validator_address")
        }

    def _poll(self, check: Callable[[], tuple[bool, str]], timeout: float) -> tuple[bool, str]:
        """Call `check` until it holds or `timeout` passes; its last reason either way."""
        deadline = time.monotonic() + timeout
        while True:
            ok, why = check()
            remaining = deadline - time.monotonic()
            if ok or remaining <= 0:
                return ok, why
            time.sleep(min(POLL_SECONDS, remaining))

    # -- files ------------------------------------------------------------------------------

    def _read_state(self) -> dict[str, Any]:
        """The sign state file as JSON; ValueError naming why it cannot be used."""
        path = self.config.sign_state
        try:
            with open(path, "rb") as f:
                raw = f.read(STATE_MAX_BYTES + 1)
        except FileNotFoundError:
            raise ValueError(f"{path} does not exist") from None
        except OSError as exc:
            raise ValueError(f"{path} cannot be read: {exc.strerror}") from None
        if len(raw) > STATE_MAX_BYTES:
            raise ValueError(f"{path} is over {STATE_MAX_BYTES} bytes: not a sign state")
        try:
            data = json.loads(raw)
        except ValueError:
            raise ValueError(f"{path} is not JSON") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a JSON object")
        hrs_of(data)  # ValueError if height/round/step are unusable
        return data

    def _double_sign_check_height(self) -> int:
        path = self.config.node_config
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise AgentError(f"cannot read {path}: {exc.strerror}", 409) from None
        except tomllib.TOMLDecodeError as exc:
            raise AgentError(f"{path} is not valid TOML: {exc}", 409) from None
        consensus = data.get("consensus")
        value = consensus.get("double_sign_check_height") if isinstance(consensus, dict) else None
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise AgentError(
                f"{path}: [consensus] double_sign_check_height is {value!r}; set it above 0 "
                "(e.g. 10) so the node refuses to sign while the key signed in the last heights",
                409,
            )
        return value

    # -- Backend ----------------------------------------------------------------------------

    def status(self) -> ChainStatus:
        signing = self._running()
        try:
            height, catching_up, chain, address = self._node()
        except AgentError as exc:
            return ChainStatus(
                healthy=False,
                signing=signing,
                detail=f"signer {'running' if signing else 'stopped'}; node RPC: {exc}",
            )
        ours = "ours" if address == self.config.validator_address else "NOT ours"
        return ChainStatus(
            healthy=not catching_up,
            signing=signing,
            chain=chain,
            detail=(
                f"signer {'running' if signing else 'stopped'}; height {height}"
                f"{', catching up' if catching_up else ''}; validator address {address} ({ours})"
            ),
        )

    def fence(self, planned: bool) -> Mapping[str, Any]:
        code, output = self._run("stop", self.config.stop)
        if code != 0 and self._running():
            raise AgentError(f"stop exited {code} ({output!r}) and the signer still runs", 502)
        timeout = self.config.verify_timeout
        stopped, _ = self._poll(lambda: (not self._running(), ""), timeout)
        if not stopped:
            raise AgentError(
                f"the signer still runs {timeout:g}s after stop exited {code}: "
                "is_running keeps exiting 0",
                504,
            )
        try:
            state: dict[str, Any] | None = self._read_state()
            problem = ""
        except ValueError as exc:
            state, problem = None, str(exc)
        last = hrs_of(state)[0] if state is not None else None
        chain_note, chain = self._chain_silent(last)
        if state is None:
            log.warning(
                "fence: the signer is stopped, but its sign state is unusable (%s): no hand-off;"
                " the activation waits for an operator or the pair's quiet gate",
                problem,
            )
            return {}
        log.info("fence: signer stopped at %s; %s", _hrs_text(hrs_of(state)), chain_note)
        return {
            "kind": HANDOFF_KIND,
            "state": state,
            "sha256": canonical_sha256(state),
            "validator_address": self.config.validator_address,
            "chain_id": chain,
        }

    def _chain_silent(self, last: int | None) -> tuple[str, str | None]:
        """After the signer stopped: when the node's RPC answers and still shows our address,
        no signature by our address may appear above `last` (the state's height; unknown:
        the height at the stop + 1) once QUIET_HEIGHTS more heights passed. AgentError (504)
        if one does; a note when the check could not be made (the process check stands)."""
        ours = self.config.validator_address
        try:
            height, catching_up, chain, address = self._node()
        except AgentError as exc:
            return f"chain check skipped, node RPC: {exc}", None
        if address != ours:
            return f"the node shows validator address {address}, not ours", chain
        if catching_up:
            return "chain check skipped: the node is catching up", chain
        base = last if last is not None else height + 1
        target = base + QUIET_HEIGHTS

        def advanced() -> tuple[bool, str]:
            nonlocal height
            try:
                height = self._node()[0]
            except AgentError as exc:
                return False, str(exc)
            return height >= target, ""

        if height < target:
            self._poll(advanced, self.config.verify_timeout)
        first = max(base + 1, height - self.config.signatures_lookback + 1)
        if first > height:
            return f"chain check inconclusive: the node did not pass height {target}", chain
        try:
            found = [h for h in range(first, height + 1) if ours in self._signers_at(h)]
        except AgentError as exc:
            return f"chain check skipped, node RPC: {exc}", chain
        if found:
            raise AgentError(
                f"the signer here is stopped (its last signed height is {last}), but the chain "
                f"shows signatures by {ours} at heights {found}: another signer holds the key; "
                "not fenced",
                504,
            )
        return f"no signature by {ours} at heights {first}..{height}", chain

    def _verify_handoff(self, handoff: Mapping[str, Any]) -> tuple[dict[str, Any], HRS]:
        if handoff.get("kind") != HANDOFF_KIND:
            raise AgentError(
                f"hand-off kind is {json.dumps(handoff.get('kind'))[:60]}, not {HANDOFF_KIND}",
                409,
            )
        state = handoff.get("state")
        if not isinstance(state, dict):
            raise AgentError("hand-off has no state object", 409)
        if handoff.get("sha256") != canonical_sha256(state):
            raise AgentError("hand-off sha256 does not match its state: refusing it", 409)
        try:
            hrs = hrs_of(state)
        except ValueError as exc:
            raise AgentError(f"hand-off state: {exc}", 409) from None
        address = handoff.get("validator_address")
        if address is not None and str(address).upper() != self.config.validator_address:
            raise AgentError(
                f"hand-off is for validator {address}, not {self.config.validator_address}", 409
            )
        chain = handoff.get("chain_id")
        if chain is not None:
            try:
                ours = self._node()[2]
            except AgentError:
                ours = None  # the node is not up yet: the verification after start covers it
            if ours is not None and chain != ours:
                raise AgentError(f"hand-off is from chain {chain}, this node is on {ours}", 409)
        return state, hrs

    def _shows_our_address(self) -> tuple[bool, str]:
        try:
            address = self._node()[3]
        except AgentError as exc:
            return False, str(exc)
        if address != self.config.validator_address:
            return False, f"/status shows validator address {address}, not ours"
        return True, f"/status shows validator address {address}"

    def activate(self, handoff: Mapping[str, Any] | None, waived: str | None) -> str:
        check_height = self._double_sign_check_height()
        handed = self._verify_handoff(handoff) if handoff else None
        if handed is None and not waived:
            raise AgentError(
                "no sign state handed over and no waiver: refusing to start a signer that "
                "cannot know the old primary's last signature",
                409,
            )
        timeout = self.config.verify_timeout
        if self._running():
            ok, why = self._poll(self._shows_our_address, timeout)
            if not ok:
                raise AgentError(f"the signer already runs, but {why}", 504)
            return f"already running; {why}"
        merged = self._merge(handed)
        code, output = self._run("start", self.config.start)
        if code != 0:
            raise AgentError(f"start exited {code} ({output!r})", 502)

        def up() -> tuple[bool, str]:
            if not self._running():
                return False, (
                    "is_running does not exit 0 (with double_sign_check_height "
                    f"{check_height}, the node waits until our key has not signed for that many "
                    "heights)"
                )
            return self._shows_our_address()

        ok, why = self._poll(up, timeout)
        if not ok:
            raise AgentError(f"not confirmed {timeout:g}s after start: {why}", 504)
        suffix = f"; waived: {waived}" if handed is None else ""
        return f"signing; {merged}; {why}{suffix}"

    def _merge(self, handed: tuple[dict[str, Any], HRS] | None) -> str:
        """Write max(own, handed) by (height, round, step); never lower the mark."""
        path = self.config.sign_state
        try:
            own: dict[str, Any] | None = self._read_state()
        except ValueError as exc:
            if path.exists() or handed is None:
                raise AgentError(f"own sign state: {exc}; repair it first", 409) from None
            own = None
        if handed is None:
            assert own is not None
            return f"kept own sign state {_hrs_text(hrs_of(own))} (no hand-off)"
        state, hrs = handed
        if own is not None and hrs_of(own) >= hrs:
            return f"kept own sign state {_hrs_text(hrs_of(own))} (hand-off {_hrs_text(hrs)})"
        try:
            write_atomic(path, (json.dumps(state, indent=2) + "\n").encode())
            written = self._read_state()
        except (OSError, ValueError) as exc:
            raise AgentError(f"could not write {path}: {exc}", 502) from None
        if hrs_of(written) != hrs:
            raise AgentError(f"{path} reads back as {_hrs_text(hrs_of(written))}", 502)
        before = _hrs_text(hrs_of(own)) if own is not None else "none"
        return f"wrote the hand-off's sign state {_hrs_text(hrs)} (own was {before})"

    def position(self) -> Position:
        current = self._node()[0]
        ours = self.config.validator_address
        first = max(1, current - self.config.signatures_lookback + 1)
        for height in range(current, first - 1, -1):
            if ours in self._signers_at(height):
                return Position("height", current, height)
        return Position("height", current, None)
