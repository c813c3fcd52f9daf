"""The generic `http` node-agent driver and the `http` extra fence level."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from ..config import HttpDriverConfig, HttpFenceConfig, read_secret
from .base import Action, ActionContext, DriverError, NodeStatus, PlannedCall, StepResult

_MAX_KEEP = 2000  # characters of a response body kept in the journal


def _headers(token_file: Path | None, what: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": "responder"}
    if token_file is not None:
        headers["Authorization"] = f"Bearer {read_secret(token_file, what).value}"
    return headers


def _planned_headers(token_file: Path | None) -> dict[str, str]:
    """The headers a request would carry, with the token shown as ***."""
    headers = {"Content-Type": "application/json", "User-Agent": "responder"}
    if token_file is not None:
        headers["Authorization"] = "Bearer ***"
    return headers


def _send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    body: Any,
    timeouts: tuple[float, float],
) -> requests.Response:
    try:
        return session.request(
            method, url, headers=dict(headers), json=body, timeout=timeouts, allow_redirects=False
        )
    except requests.Timeout:
        raise DriverError(f"{method} {url} timed out after {timeouts[1]:g}s") from None
    except requests.ConnectionError as exc:
        raise DriverError(f"{method} {url} failed to connect: {type(exc).__name__}") from None
    except requests.RequestException as exc:
        raise DriverError(f"{method} {url} failed: {type(exc).__name__}") from None


def _json_object(resp: requests.Response, what: str) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        raise DriverError(f"{what}: response is not JSON: {resp.text[:200]!r}") from None
    if not isinstance(data, dict):
        raise DriverError(f"{what}: response is not a JSON object")
    return data


class HttpDriver:
    """GET /status, POST /fence, POST /activate on a small agent next to the node."""

    def __init__(
        self, node: str, config: HttpDriverConfig, session: requests.Session | None = None
    ):
        self.node = node
        self.config = config
        self._session = session or requests.Session()

    def _url(self, action: str) -> str:
        path = getattr(self.config.paths, action)
        return f"{self.config.url}{path}"

    def _timeouts(self) -> tuple[float, float]:
        return (self.config.connect_timeout, self.config.timeout)

    def _headers(self) -> dict[str, str]:
        return _headers(self.config.token_file, f"{self.node} driver.token_file")

    def status(self) -> NodeStatus:
        url = self._url("status")
        resp = _send(
            self._session, "GET", url, headers=self._headers(), body=None, timeouts=self._timeouts()
        )
        if resp.status_code != 200:
            raise DriverError(f"GET {url} answered {resp.status_code}")
        data = _json_object(resp, f"GET {url}")
        healthy, signing = data.get("healthy"), data.get("signing")
        if not isinstance(healthy, bool) or not isinstance(signing, bool):
            raise DriverError(f"GET {url}: expected boolean 'healthy' and 'signing', got {data}")
        return NodeStatus(healthy=healthy, signing=signing, detail=json.dumps(data)[:_MAX_KEEP])

    def _mutate(self, action: Action, ctx: ActionContext) -> StepResult:
        url = self._url(action)
        want = action == "activate"
        resp = _send(
            self._session,
            "POST",
            url,
            headers=self._headers(),
            body=self._body(ctx),
            timeouts=self._timeouts(),
        )
        if resp.status_code != 200:
            raise DriverError(f"POST {url} answered {resp.status_code}: {resp.text[:200]!r}")
        data = _json_object(resp, f"POST {url}")
        signing = data.get("signing")
        if signing is not want:
            raise DriverError(
                f"POST {url} answered 200 but 'signing' is {json.dumps(signing)}, "
                f"so the {action} is not confirmed"
            )
        return StepResult(detail=f"POST {url}: signing={json.dumps(signing)}", data=data)

    def _body(self, ctx: ActionContext) -> dict[str, Any]:
        return {"pair": ctx.pair, "failover_id": ctx.failover_id, "reason": ctx.reason}

    def fence(self, ctx: ActionContext) -> StepResult:
        return self._mutate("fence", ctx)

    def activate(self, ctx: ActionContext) -> StepResult:
        return self._mutate("activate", ctx)

    needs_handoff = False

    @property
    def settle_time(self) -> float:
        """connect_timeout + timeout: a request the agent accepted lands within that."""
        return self.config.connect_timeout + self.config.timeout

    def plan(self, action: Action, ctx: ActionContext) -> PlannedCall:
        url = self._url(action)
        headers = _planned_headers(self.config.token_file)
        return PlannedCall(
            description=f"POST {url}",
            request={"method": "POST", "url": url, "headers": headers, "json": self._body(ctx)},
        )


class HttpFencer:
    """An extra fence level over HTTP (e.g. a PDU's outlet-off call)."""

    def __init__(
        self,
        node: str,
        index: int,
        config: HttpFenceConfig,
        session: requests.Session | None = None,
    ):
        self._name = f"http:{config.method} {config.url}"
        self.node = node
        self.index = index
        self.config = config
        self._session = session or requests.Session()

    @property
    def name(self) -> str:
        return self._name

    def fence(self, ctx: ActionContext) -> StepResult:
        cfg = self.config
        headers = _headers(cfg.token_file, f"{self.node} fence_levels[{self.index}].token_file")
        body = dict(cfg.body) if cfg.body is not None else None
        resp = _send(
            self._session,
            cfg.method,
            cfg.url,
            headers=headers,
            body=body,
            timeouts=(cfg.connect_timeout, cfg.timeout),
        )
        if resp.status_code not in cfg.expect_status:
            raise DriverError(f"{cfg.method} {cfg.url} answered {resp.status_code}")
        if cfg.expect_json is not None:
            data = _json_object(resp, f"{cfg.method} {cfg.url}")
            wrong = {k: data.get(k) for k, v in cfg.expect_json.items() if data.get(k) != v}
            if wrong:
                raise DriverError(
                    f"{cfg.method} {cfg.url}: expected {dict(cfg.expect_json)}, got {wrong}"
                )
        return StepResult(detail=f"{cfg.method} {cfg.url} answered {resp.status_code}")

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
