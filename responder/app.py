"""The Flask app: webhook, health, metrics, status and the operator control API."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .alerts import PayloadError, parse_notification
from .clock import Clock
from .config import Config, Secret, Secrets
from .drivers import NodeHandle
from .metrics import Metrics, StateCollector, exposition
from .policy import Acknowledge, Pause, Rejected, Resume
from .service import Responder, failover_summary
from .store import Store

log = logging.getLogger("responder.app")


def _bearer_check(secret: Secret | None) -> Callable[[], tuple[int, str] | None]:
    """Return a checker: None when allowed, else (status, message). Constant-time compare."""

    def check() -> tuple[int, str] | None:
        if secret is None:
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return 401, "missing bearer token (Authorization: Bearer <token>)"
        if not hmac.compare_digest(token.strip().encode(), secret.value.encode()):
            return 403, "wrong bearer token"
        return None

    return check


def _error(status: int, message: str) -> Response:
    resp = jsonify({"error": message})
    resp.status_code = status
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="responder"'
    return resp


def create_app(
    config: Config,
    *,
    store: Store,
    nodes: dict[tuple[str, str], NodeHandle],
    registry: CollectorRegistry,
    clock: Clock,
    secrets: Secrets,
    owner: str = "local",
    on_recorded: Callable[[], None] | None = None,
) -> Flask:
    """Build the app around injected dependencies; starts no threads and touches no network."""
    metrics = Metrics(registry)
    responder = Responder(config, store, nodes, metrics, clock, owner=owner)
    state_collector = StateCollector(config, store)
    webhook_auth = _bearer_check(secrets.webhook)
    operator_auth = _bearer_check(secrets.operator)

    app = Flask("responder")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.extensions["responder"] = responder

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return _error(exc.code or 500, exc.description or exc.name)

    @app.post("/webhook")
    def webhook() -> Response:
        started = time.perf_counter()
        try:
            denied = webhook_auth()
            if denied:
                outcome = "unauthorized" if denied[0] == 401 else "forbidden"
                metrics.notifications.labels(outcome=outcome).inc()
                log.warning("webhook %s: %s", outcome, denied[1], extra={"status": denied[0]})
                return _error(*denied)
            try:
                body = request.get_data(cache=False)
            except RequestEntityTooLarge:
                metrics.notifications.labels(outcome="too_large").inc()
                return _error(413, f"body exceeds max_body_bytes ({config.max_body_bytes} bytes)")
            try:
                notification = parse_notification(body)
            except PayloadError as exc:
                metrics.notifications.labels(outcome="bad_request").inc()
                log.warning("webhook rejected: %s", exc, extra={"status": 400})
                return _error(400, f"not an Alertmanager v4 notification: {exc}")
            try:
                record_id = responder.receive(notification, body.decode("utf-8"))
            except Exception:
                metrics.notifications.labels(outcome="error").inc()
                log.exception("could not record notification; Alertmanager will redeliver")
                return _error(503, "could not record the notification; retry")
            metrics.notifications.labels(outcome="recorded").inc()
            if on_recorded is not None:
                on_recorded()
            return jsonify({"status": "recorded", "id": record_id})
        finally:
            metrics.webhook_seconds.observe(time.perf_counter() - started)

    @app.get("/healthz")
    def healthz() -> Response:
        try:
            pending = store.pending_notifications()
        except Exception as exc:
            return _error(503, f"store unavailable: {type(exc).__name__}")
        return jsonify({"status": "ok", "pending_notifications": pending})

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        return Response(exposition(registry, state_collector), mimetype=CONTENT_TYPE_LATEST)

    def operator_guard() -> Response | None:
        denied = operator_auth()
        return _error(*denied) if denied else None

    def operator_name() -> str:
        return request.headers.get("X-Responder-Operator", "operator")[:64] or "operator"

    @app.get("/api/v1/pairs")
    def pairs() -> Response:
        if (denied := operator_guard()) is not None:
            return denied
        return jsonify({"pairs": responder.status()})

    @app.get("/api/v1/events")
    def events() -> Response:
        if (denied := operator_guard()) is not None:
            return denied
        pair = request.args.get("pair")
        if pair is not None and pair not in {p.name for p in config.pairs}:
            return _error(404, f"unknown pair {pair!r}")
        try:
            limit = min(max(int(request.args.get("limit", "100")), 1), 1000)
            before = request.args.get("before")
            before_id = int(before) if before is not None else None
        except ValueError:
            return _error(400, "limit and before must be integers")
        rows = store.list_events(pair=pair, limit=limit, before=before_id)
        return jsonify({"events": [e.to_json() for e in rows]})

    @app.get("/api/v1/failovers/<failover_id>")
    def failover(failover_id: str) -> Response:
        if (denied := operator_guard()) is not None:
            return denied
        found = store.get_failover(failover_id)
        if found is None:
            return _error(404, f"unknown failover {failover_id!r}")
        body = failover_summary(found)
        body["journal"] = [j.to_json() for j in store.journal(failover_id)]
        return jsonify(body)

    def control(pair: str, run: Callable[[str], Any]) -> Response:
        if (denied := operator_guard()) is not None:
            return denied
        if pair not in {p.name for p in config.pairs}:
            return _error(404, f"unknown pair {pair!r}")
        try:
            outcome = run(operator_name())
        except Rejected as exc:
            return _error(409, str(exc))
        if on_recorded is not None:
            on_recorded()
        return jsonify(
            {"pair": outcome.pair, "reason": outcome.reason, "failover_id": outcome.failover_id}
        )

    @app.post("/api/v1/pairs/<pair>/pause")
    def pause(pair: str) -> Response:
        return control(pair, lambda by: responder.operator(pair, Pause(by)))

    @app.post("/api/v1/pairs/<pair>/resume")
    def resume(pair: str) -> Response:
        return control(pair, lambda by: responder.operator(pair, Resume(by)))

    @app.post("/api/v1/pairs/<pair>/ack")
    def ack(pair: str) -> Response:
        return control(pair, lambda by: responder.operator(pair, Acknowledge(by)))

    @app.post("/api/v1/pairs/<pair>/failover")
    def manual(pair: str) -> Response:
        body = request.get_json(silent=True)
        target = body.get("target") if isinstance(body, dict) else None
        if not isinstance(target, str) or not target:
            if (denied := operator_guard()) is not None:
                return denied
            return _error(400, 'body must be {"target": "<node name>"}')
        return control(pair, lambda by: responder.manual_failover(pair, target, by))

    @app.post("/api/v1/pairs/<pair>/confirm")
    def confirm(pair: str) -> Response:
        return control(pair, lambda by: responder.confirm(pair, by))

    @app.post("/api/v1/pairs/<pair>/abort")
    def abort(pair: str) -> Response:
        return control(pair, lambda by: responder.abort(pair, by))

    @app.post("/api/v1/pairs/<pair>/adopt")
    def adopt(pair: str) -> Response:
        if (denied := operator_guard()) is not None:
            return denied
        body = request.get_json(silent=True)
        node = body.get("node") if isinstance(body, dict) else None
        if not isinstance(node, str) or not node:
            return _error(400, 'body must be {"node": "<node name>"}')
        return control(pair, lambda by: responder.adopt(pair, node, by))

    @app.post("/api/v1/pairs/<pair>/nodes/<node>/unfence")
    def unfence(pair: str, node: str) -> Response:
        return control(pair, lambda by: responder.unfence(pair, node, by))

    return app
