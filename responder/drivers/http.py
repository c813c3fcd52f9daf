"""The generic `http` node-agent driver and the `http` extra fence level."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import (
    ConfigError,
    HttpDriverConfig,
    HttpFenceConfig,
    read_secret,
    secret_file_problem,
)
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
    AGENT_MAX_BYTES,
    SUMMARY_CHARS,
    Answer,
    Limits,
    Transport,
    error_summary,
    tls_verify,
)

_MAX_KEEP = 2000  # characters of a response body kept in the journal
HANDOFF_KEY = "agent"  # where an agent's hand-off sits in the persisted fence result


def _token(token_file: Path | None, what: str) -> str | None:
    if token_file is None:
        return None
    try:
        return read_secret(token_file, what).value
    except ConfigError as exc:
        raise DriverError(str(exc)) from None


def _headers(token: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": "responder"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _planned_headers(token_file: Path | None) -> dict[str, str]:
    """The headers a request would carry, with the token shown as ***."""
    headers = {"Content-Type": "application/json", "User-Agent": "responder"}
    if token_file is not None:
        headers["Authorization"] = "Bearer ***"
    return headers


def _json_object(answer: Answer, what: str) -> dict[str, Any]:
    """The answer as a JSON object; the body is never quoted (it may echo secrets)."""
    try:
        data = answer.json()
    except ValueError:
        raise DriverError(f"{what}: response is not JSON") from None
    if not isinstance(data, dict):
        raise DriverError(f"{what}: response is not a JSON object")
    return data


def _short(value: Any) -> str:
    """A value from an answer, as JSON, cut to a readable length."""
    text = json.dumps(value)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


class HttpDriver:
    """GET /status, POST /fence, POST /activate on a small agent next to the node."""

    def __init__(self, node: str, config: HttpDriverConfig) -> None:
        self.node = node
        self.config = config
        self._transport = Transport(
            limits=Limits(config.connect_timeout, config.timeout, AGENT_MAX_BYTES),
            verify=tls_verify(config.tls.ca_file, config.tls.insecure_skip_verify),
        )

    def _url(self, action: str) -> str:
        path = getattr(self.config.paths, action)
        return f"{self.config.url}{path}"

    def _call(self, method: str, url: str, body: Any = None) -> Answer:
        token = _token(self.config.token_file, f"{self.node} driver.token_file")
        answer = self._transport.request(method, url, headers=_headers(token), body=body)
        if answer.status in (401, 403):
            raise DriverError(
                f"{method} {url} answered {answer.status}: the token was refused; check "
                "driver.token_file"
            )
        if answer.status != 200:
            summary = error_summary(answer, [token] if token else [])
            raise DriverError(f"{method} {url} answered {answer.status}{summary}")
        return answer

    def status(self) -> NodeStatus:
        url = self._url("status")
        data = _json_object(self._call("GET", url), f"GET {url}")
        healthy, signing = data.get("healthy"), data.get("signing")
        if not isinstance(healthy, bool) or not isinstance(signing, bool):
            raise DriverError(
                f"GET {url}: expected boolean 'healthy' and 'signing', got "
                f"healthy={_short(healthy)}, signing={_short(signing)}"
            )
        chain = data.get("chain")
        return NodeStatus(
            healthy=healthy,
            signing=signing,
            detail=json.dumps(data)[:_MAX_KEEP],
            chain=chain if isinstance(chain, str) and chain else None,
        )

    def preflight(self) -> tuple[Check, ...]:
        """The token file every call reads; the agent's own answers are checked by status."""
        if self.config.token_file is None:
            return ()
        problem = secret_file_problem(self.config.token_file)
        name = f"{self.node}:token"
        if problem is not None:
            return (Check(name, False, f"driver.token_file: {problem}"),)
        return (Check(name, True, "token file readable, owner-only"),)

    def _mutate(self, action: Action, ctx: ActionContext) -> StepResult:
        url = self._url(action)
        want = action == "activate"
        data = _json_object(self._call("POST", url, self._body(action, ctx)), f"POST {url}")
        signing = data.get("signing")
        if signing is not want:
            raise DriverError(
                f"POST {url} answered 200 but 'signing' is {_short(signing)}, "
                f"so the {action} is not confirmed"
            )
        blob = data.get("handoff") if action == "fence" else None
        if blob is not None and not isinstance(blob, dict):
            raise DriverError(f"POST {url}: 'handoff' must be a JSON object")
        kept = {k: v for k, v in data.items() if k != "handoff"}  # the journal keeps the rest
        if blob:
            kept["handoff_bytes"] = len(json.dumps(blob))
        return StepResult(
            detail=f"POST {url}: signing={json.dumps(signing)}"
            + (" (hand-off received)" if blob else ""),
            data=kept,
            handoff={HANDOFF_KEY: blob, "from": self.node} if blob else None,
        )

    def _body(self, action: Action, ctx: ActionContext) -> dict[str, Any]:
        body: dict[str, Any] = {
            "pair": ctx.pair,
            "failover_id": ctx.failover_id,
            "reason": ctx.reason,
            "planned": ctx.planned,
        }
        if action == "activate":
            body["handoff"] = ctx.handoff.get(HANDOFF_KEY)
            body["handoff_waived"] = ctx.handoff_waived
        return body

    def chain_position(self) -> ChainPosition:
        url = self._url("liveness")
        data = _json_object(self._call("GET", url), f"GET {url}")
        unit, current, last = data.get("unit"), data.get("current"), data.get("last_signed")
        if (
            unit not in ("slot", "height")
            or not isinstance(current, int)
            or isinstance(current, bool)
            or not (last is None or (isinstance(last, int) and not isinstance(last, bool)))
        ):
            raise DriverError(
                f"GET {url}: expected unit slot|height, integer current, integer or null "
                f"last_signed; got {_short(data)}"
            )
        return ChainPosition(unit=str(unit), current=current, last_signed=last)

    def fence(self, ctx: ActionContext) -> StepResult:
        return self._mutate("fence", ctx)

    def activate(self, ctx: ActionContext) -> StepResult:
        return self._mutate("activate", ctx)

    @property
    def needs_handoff(self) -> bool:
        return self.config.handoff == "required"

    @property
    def settle_time(self) -> float:
        """connect_timeout + timeout: the transport's total deadline for a call, so a request
        the agent accepted lands within that or the responder had cut it."""
        return self._transport.limits.total

    def plan(self, action: Action, ctx: ActionContext) -> PlannedCall:
        url = self._url(action)
        headers = _planned_headers(self.config.token_file)
        body = self._body(action, ctx)
        if action == "activate" and self.needs_handoff:
            body["handoff"] = "<the hand-off returned by the fence>"
        return PlannedCall(
            description=f"POST {url}",
            request={"method": "POST", "url": url, "headers": headers, "json": body},
        )


class HttpFencer:
    """An extra fence level over HTTP (e.g. a PDU's outlet-off call)."""

    def __init__(
        self,
        node: str,
        index: int,
        config: HttpFenceConfig,
    ) -> None:
        self._name = f"http:{config.method} {config.url}"
        self.node = node
        self.index = index
        self.config = config
        self._transport = Transport(
            limits=Limits(config.connect_timeout, config.timeout, AGENT_MAX_BYTES),
            verify=tls_verify(config.tls.ca_file, config.tls.insecure_skip_verify),
        )

    @property
    def name(self) -> str:
        return self._name

    def fence(self, ctx: ActionContext) -> StepResult:
        cfg = self.config
        token = _token(cfg.token_file, f"{self.node} fence_levels[{self.index}].token_file")
        body = dict(cfg.body) if cfg.body is not None else None
        answer = self._transport.request(cfg.method, cfg.url, headers=_headers(token), body=body)
        if answer.status not in cfg.expect_status:
            summary = error_summary(answer, [token] if token else [])
            raise DriverError(f"{cfg.method} {cfg.url} answered {answer.status}{summary}")
        if cfg.expect_json is not None:
            data = _json_object(answer, f"{cfg.method} {cfg.url}")
            wrong = {k: data.get(k) for k, v in cfg.expect_json.items() if data.get(k) != v}
            if wrong:
                raise DriverError(
                    f"{cfg.method} {cfg.url}: expected {_short(dict(cfg.expect_json))}, "
                    f"got {_short(wrong)}"
                )
        return StepResult(detail=f"{cfg.method} {cfg.url} answered {answer.status}")

    def check(self) -> Check:
        name = f"{self.node}:fence-level-{self.index + 1}"
        check = self.config.check
        if check is None:
            return Check(
                name,
                None,
                f"{self._name}: no check configured, so whether it works is unknown until "
                "it is needed (add `check: {url: ...}`)",
            )
        token_file = check.token_file or self.config.token_file
        what = f"{check.method} {check.url}"
        try:
            token = _token(token_file, f"{self.node} fence_levels[{self.index}] check token")
            transport = Transport(
                limits=Limits(check.timeout, check.timeout, AGENT_MAX_BYTES, total=check.timeout),
                verify=self._transport.verify,
            )
            answer = transport.request(check.method, check.url, headers=_headers(token))
            if answer.status not in check.expect_status:
                summary = error_summary(answer, [token] if token else [])
                return Check(name, False, f"check {what} answered {answer.status}{summary}")
            if check.expect_json is not None:
                data = _json_object(answer, what)
                wrong = {k: data.get(k) for k, v in check.expect_json.items() if data.get(k) != v}
                if wrong:
                    return Check(
                        name,
                        False,
                        f"check {what}: expected {_short(dict(check.expect_json))}, "
                        f"got {_short(wrong)}",
                    )
        except DriverError as exc:
            return Check(name, False, f"check: {exc}")
        return Check(name, True, f"check {what} answered {answer.status}")

    def plan(self, ctx: ActionContext) -> PlannedCall:
        cfg = self.config
        headers = _planned_headers(cfg.token_file)
        return PlannedCall(
            description=f"{cfg.method} {cfg.url}",
            request={
                "method": cfg.method,
                "url": cfg.url,
                "headers": headers,
                "json": dict(cfg.body) if cfg.body is not None else None,
            },
        )
