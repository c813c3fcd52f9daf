"""The `ethereum-keymanager` driver: moves validator keys with the standard Keymanager API.

Fence: DELETE the pair's keys on the primary; confirmed only when every key is reported
stopped and (local keystores) the returned EIP-3076 history is valid for exactly these keys
on this chain. Activate: POST the keys to the standby with that very history (or, remote
signer mode, the signer URL). Tokens, keystores and passwords never leave this module except
in the requests themselves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..config import ConfigError, EthereumConfig, KeymanagerDriverConfig, PairConfig, read_secret
from ..eip3076 import InterchangeError, as_text, check_handoff, parse_interchange
from .base import Action, ActionContext, DriverError, NodeStatus, PlannedCall, StepResult
from .transport import (
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
            raise DriverError(f"{method} {url} answered {answer.status}: check the API token")
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
