"""The agent's HTTP side: the `http` driver contract, a bearer token, one step at a time.

    GET  /status    {"healthy", "signing", "chain", "detail"}
    POST /fence     {"signing": false, "handoff": {...}, "detail"}    body: {"planned": bool, ...}
    POST /activate  {"signing": true, "detail"}   body: {"handoff": {...} | null, "handoff_waived": str | null}
    GET  /liveness  {"unit", "current", "last_signed"}

Errors answer {"error": reason} with the backend's status (409 refused, 502, 504); the
responder treats any of them as a step that is not confirmed and verifies with /status.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request

from ..config import Secret
from .base import HANDOFF_MAX_BYTES, AgentError, Backend, handoff_size

log = logging.getLogger("responder.agent")

MAX_BODY = HANDOFF_MAX_BYTES + 64 * 1024


def _error(status: int, message: str) -> Response:
    resp = jsonify({"error": message})
    resp.status_code = status
    return resp


def create_agent_app(backend: Backend, token: Secret | Callable[[], Secret]) -> Flask:
    """The agent app around one backend; `token` may be re-read per request (rotation)."""
    app = Flask("responder-agent")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    steps = threading.Lock()  # a fence and an activation never run at once on one host

    def secret() -> Secret:
        return token() if callable(token) else token

    @app.before_request
    def _auth() -> Response | None:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return _error(401, "missing bearer token")
        if not hmac.compare_digest(given.strip().encode(), secret().value.encode()):
            return _error(403, "wrong bearer token")
        return None

    def body() -> dict[str, Any]:
        data = request.get_json(silent=True)
        return data if isinstance(data, dict) else {}

    def step(name: str, run: Callable[[], dict[str, Any]]) -> Response:
        if not steps.acquire(timeout=1.0):
            return _error(409, "another step is running on this node; retry")
        try:
            answer = run()
        except AgentError as exc:
            log.error("%s failed: %s", name, exc)
            return _error(exc.status, str(exc))
        except Exception as exc:
            log.exception("%s raised", name)
            return _error(500, f"{name} raised {type(exc).__name__}; see the agent log")
        finally:
            steps.release()
        log.info("%s confirmed: %s", name, answer.get("detail", ""))
        return jsonify(answer)

    @app.get("/status")
    def status() -> Response:
        try:
            s = backend.status()
        except AgentError as exc:
            return _error(exc.status, str(exc))
        return jsonify(
            {"healthy": s.healthy, "signing": s.signing, "chain": s.chain, "detail": s.detail}
        )

    @app.post("/fence")
    def fence() -> Response:
        planned = body().get("planned") is True

        def run() -> dict[str, Any]:
            handoff = dict(backend.fence(planned))
            size = handoff_size(handoff)
            if size > HANDOFF_MAX_BYTES:
                raise AgentError(
                    f"the hand-off is {size} bytes, more than {HANDOFF_MAX_BYTES}; "
                    "the node is fenced, the activation must wait for an operator"
                )
            detail = "fenced and verified"
            if not handoff:
                detail += (
                    "; no hand-off could be read (see the agent log): the activation waits "
                    "for an operator or a quiet chain"
                )
            return {"signing": False, "handoff": handoff, "detail": detail}

        return step("fence", run)

    @app.post("/activate")
    def activate() -> Response:
        data = body()
        handoff, waived = data.get("handoff"), data.get("handoff_waived")
        if handoff is not None and not isinstance(handoff, dict):
            return _error(400, "handoff must be a JSON object or null")
        if waived is not None and not isinstance(waived, str):
            return _error(400, "handoff_waived must be a string or null")

        def run() -> dict[str, Any]:
            detail = backend.activate(handoff, waived)
            return {"signing": True, "detail": detail}

        return step("activate", run)

    @app.get("/liveness")
    def liveness() -> Response:
        try:
            p = backend.position()
        except AgentError as exc:
            return _error(exc.status, str(exc))
        return jsonify({"unit": p.unit, "current": p.current, "last_signed": p.last_signed})

    return app
