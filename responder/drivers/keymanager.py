"""The `ethereum-keymanager` driver: moves validator keys with the standard Keymanager API.

Fence: DELETE the pair's keys on the primary; confirmed only when every key is reported
stopped and (local keystores) the returned EIP-3076 history is valid for exactly these keys
on this chain. Activate: POST the keys to the standby with that very history (or, remote
signer mode, the signer URL). Preflight: read-only checks of the token, the key listing, the
keystores an activation would read, and (with `beacon_url`) the beacon node's chain and sync
state. Tokens, keystores and passwords never leave this module except in the requests
themselves.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import (
    ConfigError,
    EthereumConfig,
    KeymanagerDriverConfig,
    PairConfig,
    read_secret,
    secret_file_problem,
)
from ..eip3076 import InterchangeError, as_text, check_handoff, parse_interchange
from .base import (
    Action,
    ActionContext,
    ChainPosition,
    Check,
    DriverError,
    NodeStatus,
    PlannedCall,
    StepResult,
)
from .transport import (
    BEACON_MAX_BYTES,
    KEYMANAGER_BYTES_PER_KEY,
    KEYMANAGER_MAX_BYTES,
    Limits,
    Transport,
    error_summary,
    tls_verify,
)

HISTORY_KEY = "slashing_protection"
# a spec-conforming DELETE answers these per key when the key no longer signs here
_STOPPED = {"local": {"deleted", "not_active"}, "remote": {"deleted", "not_found"}}

log = logging.getLogger(__name__)


class KeymanagerDriver:
    def __init__(
        self,
        node: str,
        config: KeymanagerDriverConfig,
        pair: PairConfig,
    ) -> None:
        if pair.ethereum is None:  # the config validator guarantees it; keep mypy honest
            raise ConfigError([f"pair {pair.name}: ethereum section required"])
        self.node = node
        self.config = config
        self.eth: EthereumConfig = pair.ethereum
        self.pubkeys = tuple(k.lower() for k in self.eth.pubkeys)
        # a listing of every key the client holds, or the pair's keys' EIP-3076 history
        cap = KEYMANAGER_MAX_BYTES + KEYMANAGER_BYTES_PER_KEY * len(self.pubkeys)
        self._transport = Transport(
            limits=Limits(config.connect_timeout, config.timeout, cap),
            verify=tls_verify(config.tls.ca_file, config.tls.insecure_skip_verify),
            tls_hint=" (see tls.ca_file)",
        )
        # preflight only: the beacon node this client uses (genesis and syncing answers)
        self._beacon = Transport(
            limits=Limits(config.connect_timeout, config.timeout, BEACON_MAX_BYTES),
            verify=tls_verify(config.tls.ca_file, config.tls.insecure_skip_verify),
            tls_hint=" (see tls.ca_file)",
        )

    @property
    def needs_handoff(self) -> bool:
        return self.config.mode == "local"

    @property
    def settle_time(self) -> float:
        """connect_timeout + timeout (the transport's total deadline for a call), plus 1 s per
        key in local mode: clients decrypt about one keystore a second, so an import the
        responder gave up on can land that much later."""
        per_key = 1.0 * len(self.pubkeys) if self.config.mode == "local" else 0.0
        return self._transport.limits.total + per_key

    @property
    def _path(self) -> str:
        return "/eth/v1/keystores" if self.config.mode == "local" else "/eth/v1/remotekeys"

    def _request(self, method: str, body: Any = None, secrets: Sequence[str] = ()) -> Any:
        """One call; a non-200 answer is reported by its status and at most a scrubbed summary
        of its "message" (never the body: a client echoing the request would leak `secrets`)."""
        url = self.config.url + self._path
        headers = {"Accept": "application/json"}
        token = None
        if self.config.token_file is not None:
            try:
                token = read_secret(self.config.token_file, f"{self.node} driver.token_file").value
            except ConfigError as exc:
                raise DriverError(str(exc)) from None
            headers["Authorization"] = f"Bearer {token}"
        answer = self._transport.request(method, url, headers=headers, body=body)
        if answer.status in (401, 403):
            raise DriverError(
                f"{method} {url} answered {answer.status}: the API token was refused; "
                "check the API token"
            )
        if answer.status != 200:
            known = [*secrets, token] if token else list(secrets)
            raise DriverError(
                f"{method} {url} answered {answer.status}{error_summary(answer, known)}"
            )
        try:
            return answer.json()
        except ValueError:
            raise DriverError(f"{method} {url}: response is not JSON") from None

    def _listing(self) -> set[str]:
        body = self._request("GET")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise DriverError(f"GET {self._path}: expected {{'data': [...]}}")
        field = "validating_pubkey" if self.config.mode == "local" else "pubkey"
        return {str(item.get(field, "")).lower() for item in data if isinstance(item, dict)}

    def status(self) -> NodeStatus:
        loaded = self._listing() & set(self.pubkeys)
        return NodeStatus(
            healthy=True,
            signing=bool(loaded),
            detail=f"{len(loaded)} of {len(self.pubkeys)} keys loaded",
        )

    # ---- preflight ------------------------------------------------------------------------

    def chain_position(self) -> ChainPosition:
        raise DriverError("this driver cannot tell the chain's progress")

    def preflight(self) -> tuple[Check, ...]:
        """Token, keys, keystores (local mode), chain and sync: GETs and file reads only.

        Each check runs on its own, so one failing (or raising by surprise) never hides the
        others; the chain and sync checks ask the beacon node the validator client uses.
        """
        checks: list[Check] = []
        if self.config.token_file is not None:
            checks.append(self._guard("token", self._check_token))
        checks.append(self._guard("keys", self._check_keys))
        if self.config.mode == "local":
            checks.append(self._guard("keystores", self._check_keystores))
        checks.extend(self._beacon_checks())
        return tuple(checks)

    def _guard(self, what: str, check: Callable[[], Check]) -> Check:
        """Run one check; a DriverError or any surprise is a failing check, never a raise."""
        name = f"{self.node}:{what}"
        try:
            return check()
        except DriverError as exc:
            return Check(name, False, str(exc))
        except Exception as exc:  # a bug here must not stop the other checks or the caller
            log.warning("%s preflight crashed", name, exc_info=True)
            return Check(name, False, f"the check itself failed ({type(exc).__name__})")

    def _check_token(self) -> Check:
        name = f"{self.node}:token"
        assert self.config.token_file is not None  # only called with a token file
        problem = secret_file_problem(self.config.token_file)
        if problem is not None:
            return Check(name, False, f"driver.token_file: {problem}")
        return Check(name, True, "token file readable, not empty, owner-only")

    def _check_keys(self) -> Check:
        """One listing: all of the pair's keys or none is a clean state; a partial set is not."""
        name = f"{self.node}:keys"
        loaded = self._listing() & set(self.pubkeys)
        total = len(self.pubkeys)
        if len(loaded) == total:
            return Check(name, True, f"all {total} keys loaded: this node signs")
        if not loaded:
            return Check(name, True, f"none of the {total} keys loaded")
        missing = ", ".join(k[:12] + "…" for k in self.pubkeys if k not in loaded)
        return Check(
            name,
            False,
            f"{len(loaded)} of {total} keys loaded: a partial set; missing {missing}. "
            "A failover moves every key: settle which node signs by hand first",
        )

    def _check_keystores(self) -> Check:
        """The files an activation reads: present, parseable, the right key, owner-only."""
        name = f"{self.node}:keystores"
        problems: list[str] = []
        for key in self.pubkeys:
            entry = self.eth.keystore(key)
            if entry is None:
                problems.append(f"no keystore configured for {key}")
                continue
            problem = _keystore_problem(entry.keystore_file, key)
            if problem is not None:
                problems.append(problem)
            problem = secret_file_problem(entry.password_file)
            if problem is not None:
                problems.append(f"password {problem}")
        if problems:
            return Check(name, False, "; ".join(problems))
        total = len(self.pubkeys)
        return Check(
            name,
            True,
            f"{total} keystores and passwords readable, owner-only, matching their pubkeys",
        )

    def _beacon_get(self, path: str) -> dict[str, Any]:
        """A GET on the beacon node (no token: the Keymanager token is not the beacon's)."""
        assert self.config.beacon_url is not None  # only called with a beacon_url
        url = self.config.beacon_url + path
        answer = self._beacon.request("GET", url, headers={"Accept": "application/json"})
        if answer.status != 200:
            raise DriverError(f"GET {url} answered {answer.status}{error_summary(answer)}")
        try:
            body = answer.json()
        except ValueError:
            raise DriverError(f"GET {url}: response is not JSON") from None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise DriverError(f"GET {url}: expected {{'data': {{...}}}}")
        return data

    def _beacon_checks(self) -> list[Check]:
        """Chain, then sync; a beacon node that fails the first call is not asked again (it
        would only double the wait), and both checks fail with its reason."""
        chain, sync = f"{self.node}:chain", f"{self.node}:sync"
        if self.config.beacon_url is None:
            reason = "no beacon_url configured: the chain of this node cannot be checked"
            return [Check(chain, None, reason)]
        try:
            genesis = self._beacon_get("/eth/v1/beacon/genesis")
        except DriverError as exc:
            return [Check(chain, False, str(exc)), Check(sync, False, f"not asked: {exc}")]
        except Exception as exc:  # never raise from preflight
            log.warning("%s preflight crashed", chain, exc_info=True)
            reason = f"the check itself failed ({type(exc).__name__})"
            return [Check(chain, False, reason), Check(sync, False, reason)]
        return [
            self._guard("chain", lambda: self._check_chain(genesis)),
            self._guard("sync", self._check_sync),
        ]

    def _check_chain(self, genesis: Mapping[str, Any]) -> Check:
        name = f"{self.node}:chain"
        root = genesis.get("genesis_validators_root")
        want = self.eth.genesis_validators_root.lower()
        if not isinstance(root, str) or not root:
            return Check(name, False, "beacon genesis answer has no genesis_validators_root")
        if root.lower() != want:
            reason = f"beacon node is on chain {_hex(root, 32)}, not this pair's {want}"
            return Check(name, False, reason)
        return Check(name, True, f"beacon node is on this pair's chain ({want})")

    def _check_sync(self) -> Check:
        name = f"{self.node}:sync"
        data = self._beacon_get("/eth/v1/node/syncing")
        syncing = data.get("is_syncing")
        if not isinstance(syncing, bool):
            return Check(name, False, "beacon syncing answer has no boolean is_syncing")
        if syncing:
            distance = _uint_text(data.get("sync_distance"))
            return Check(name, False, f"beacon node is syncing, {distance} slots behind")
        if data.get("el_offline") is True:
            return Check(name, False, "execution client offline: the beacon node cannot follow")
        head = _uint_text(data.get("head_slot"))
        optimistic = data.get("is_optimistic") is True
        note = " (optimistic: its execution client is catching up)" if optimistic else ""
        return Check(name, True, f"beacon node synced at head slot {head}{note}")

    # ---- fence ----------------------------------------------------------------------------

    def _statuses(self, body: Any, what: str) -> list[str]:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or len(data) != len(self.pubkeys):
            raise DriverError(f"{what}: expected one status per pubkey ({len(self.pubkeys)})")
        statuses = []
        for item in data:
            status = item.get("status") if isinstance(item, dict) else None
            if not isinstance(status, str):
                raise DriverError(f"{what}: a status entry has no status")
            statuses.append(status)
        return statuses

    def fence(self, ctx: ActionContext) -> StepResult:
        body = self._request("DELETE", {"pubkeys": list(self.pubkeys)})
        what = f"DELETE {self._path} on {self.node}"
        statuses = self._statuses(body, what)
        per_key = dict(zip(self.pubkeys, statuses, strict=True))
        errors = {k: s for k, s in per_key.items() if s == "error"}
        if errors:
            raise DriverError(
                f"{what}: could not stop signing with {', '.join(errors)} (status error)"
            )
        if self.config.mode == "remote":
            bad = {k: s for k, s in per_key.items() if s not in _STOPPED["remote"]}
            if bad:
                raise DriverError(f"{what}: unexpected statuses {bad}")
            return StepResult(detail=f"{what}: {_summary(statuses)}", data={"statuses": per_key})
        history_text, quirks = self._history(body, ctx, what)
        covered = parse_interchange(history_text).pubkeys
        for key, status in per_key.items():
            if status in _STOPPED["local"]:
                continue
            if status == "not_found" and key in covered:
                quirks.append(f"{key[:12]}… answered not_found with its history (accepted)")
                continue
            raise DriverError(f"{what}: {key} answered {status!r}; the fence is not confirmed")
        detail = f"{what}: {_summary(statuses)}; history for {len(covered)} keys verified"
        return StepResult(
            detail=detail,
            data={"statuses": per_key, "quirks": quirks},
            handoff={HISTORY_KEY: history_text, "from": self.node},
        )

    def _history(self, body: Any, ctx: ActionContext, what: str) -> tuple[str, list[str]]:
        """The verified history text from a DELETE answer (or one persisted earlier)."""
        quirks: list[str] = []
        raw = body.get(HISTORY_KEY) if isinstance(body, dict) else None
        if raw is None and isinstance(body, dict) and "slashingProtection" in body:
            raw = body["slashingProtection"]
            quirks.append("history under the field name slashingProtection (accepted)")
        if raw is None:
            stored = ctx.handoff.get(HISTORY_KEY)
            if not isinstance(stored, str):
                raise DriverError(f"{what}: no slashing_protection in the answer")
            raw = stored
            quirks.append("no history in the answer; using the one persisted earlier")
        if isinstance(raw, dict):
            quirks.append("history as a JSON object rather than a string (accepted)")
        try:
            text = as_text(raw)
            doc = parse_interchange(text)
            check_handoff(
                doc, genesis_validators_root=self.eth.genesis_validators_root, pubkeys=self.pubkeys
            )
        except InterchangeError as exc:
            raise DriverError(f"{what}: slashing-protection history refused: {exc}") from None
        return text, quirks

    # ---- activate -------------------------------------------------------------------------

    def _activation_body(self, ctx: ActionContext) -> dict[str, Any]:
        if self.config.mode == "remote":
            url = self.eth.remote_signer_url
            return {"remote_keys": [{"pubkey": k, "url": url} for k in self.pubkeys]}
        keystores, passwords = [], []
        for key in self.pubkeys:
            entry = self.eth.keystore(key)
            if entry is None:
                raise DriverError(f"no keystore configured for {key}")
            try:
                text = entry.keystore_file.read_text(encoding="utf-8")
                password = entry.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise DriverError(
                    f"cannot read the keystore or password for {key}: {exc.strerror}"
                ) from None
            try:
                stored_pubkey = str(json.loads(text).get("pubkey", "")).lower()
            except (ValueError, AttributeError):
                raise DriverError(f"{entry.keystore_file} is not an EIP-2335 keystore") from None
            if stored_pubkey.removeprefix("0x") != key.removeprefix("0x"):
                raise DriverError(
                    f"{entry.keystore_file} holds pubkey 0x{stored_pubkey.removeprefix('0x')}, not {key}"
                )
            keystores.append(text)
            passwords.append(password)
        body: dict[str, Any] = {"keystores": keystores, "passwords": passwords}
        history = ctx.handoff.get(HISTORY_KEY)
        if isinstance(history, str):
            body[HISTORY_KEY] = history
        elif ctx.handoff_waived is None:
            raise DriverError("no slashing-protection history from the fence; activation refused")
        return body

    def activate(self, ctx: ActionContext) -> StepResult:
        body = self._activation_body(ctx)
        secrets = [*body.get("keystores", ()), *body.get("passwords", ())]
        answer = self._request("POST", body, secrets)
        what = f"POST {self._path} on {self.node}"
        statuses = self._statuses(answer, what)
        per_key = dict(zip(self.pubkeys, statuses, strict=True))
        bad = {k: s for k, s in per_key.items() if s not in ("imported", "duplicate")}
        if bad:
            raise DriverError(f"{what}: keys not imported: {bad}")
        duplicates = [k for k, s in per_key.items() if s == "duplicate"]
        if duplicates:
            missing = set(duplicates) - self._listing()
            if missing:
                raise DriverError(
                    f"{what}: 'duplicate' keys not listed afterwards: {sorted(missing)}"
                )
        note = (
            f" (without history: {ctx.handoff_waived})"
            if HISTORY_KEY not in body and self.config.mode == "local"
            else ""
        )
        return StepResult(detail=f"{what}: {_summary(statuses)}{note}", data={"statuses": per_key})

    def plan(self, action: Action, ctx: ActionContext) -> PlannedCall:
        url = self.config.url + self._path
        headers = {"Authorization": "Bearer ***"}
        if action == "fence":
            body: dict[str, Any] = {"pubkeys": list(self.pubkeys)}
            return PlannedCall(
                f"DELETE {url}", {"method": "DELETE", "url": url, "headers": headers, "json": body}
            )
        if self.config.mode == "remote":
            body = {
                "remote_keys": [
                    {"pubkey": k, "url": self.eth.remote_signer_url} for k in self.pubkeys
                ]
            }
        else:
            body = {
                "keystores": ["***"] * len(self.pubkeys),
                "passwords": ["***"] * len(self.pubkeys),
                HISTORY_KEY: "<the EIP-3076 history returned by the fence>",
            }
        return PlannedCall(
            f"POST {url}", {"method": "POST", "url": url, "headers": headers, "json": body}
        )


def _summary(statuses: Sequence[str]) -> str:
    counts: Mapping[str, int] = {s: statuses.count(s) for s in sorted(set(statuses))}
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def _hex(value: str, size: int) -> str:
    """A root or pubkey from a node or file, quoted only when it is `size` bytes of hex."""
    text = value.lower()
    return text if re.fullmatch(f"0x[0-9a-f]{{{2 * size}}}", text) else f"(not {size}-byte hex)"


def _uint_text(value: Any) -> str:
    """A decimal slot count from a beacon answer, or '?' when it is not one."""
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    return text if text.isdigit() and len(text) <= 20 else "?"


def _keystore_problem(path: Path, pubkey: str) -> str | None:
    """Why the keystore an activation reads would fail or leak, or None. Never quotes it."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return f"keystore {path}: cannot read ({exc.strerror})"
    except UnicodeDecodeError:
        return f"keystore {path}: not UTF-8 text"
    problems: list[str] = []
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        problems.append("not a JSON object (EIP-2335 keystore expected)")
    else:
        if not isinstance(doc.get("crypto"), dict):
            problems.append("no crypto object")
        stored = doc.get("pubkey")
        if not isinstance(stored, str) or not stored:
            problems.append("no pubkey")
        elif stored.lower().removeprefix("0x") != pubkey.removeprefix("0x"):
            held = _hex(stored if stored.lower().startswith("0x") else "0x" + stored, 48)
            problems.append(f"holds pubkey {held}, not {pubkey}")
    if mode & 0o077:
        problems.append(f"accessible by group/others (mode {mode & 0o777:o}); chmod 600 it")
    if not problems:
        return None
    return f"keystore {path}: {', '.join(problems)}"
