"""The Flask app: webhook, health, metrics, status and the operator control API."""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from werkzeug.exceptions import BadRequest, ClientDisconnected, HTTPException, RequestEntityTooLarge
from werkzeug.wsgi import get_input_stream

from .alerts import PayloadError, decode_json, parse_notification
from .clock import Clock
from .config import Config, Secret, Secrets
from .drivers import NodeHandle
from .leadership import Leadership, SoleReplica
from .metrics import LeaderCollector, Metrics, StateCollector, exposition
from .policy import Acknowledge, Pause, Rejected, Resume
from .service import Responder, failover_summary, step_timings
from .statuspage import register_status_page
from .store import LeaseLost, Store

log = logging.getLogger("responder.app")

_INT64 = re.compile(r"-?[0-9]{1,19}")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # SQLite INTEGER


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


def _read_body(cap: int) -> bytes:
    """The whole request body, however it is framed; 413 beyond `cap` bytes, 400 if malformed.

    Werkzeug's max_content_length stops a streamed (chunked) body at the limit and returns the
    truncated prefix; reading up to one byte past `cap` tells "too large" from "exactly cap".
    A server failing to deframe the body is the client's error, whatever it raises (gunicorn's
    InvalidChunkSize is no OSError, so werkzeug lets it through as a 500).
    """
    too_large = RequestEntityTooLarge(f"body exceeds max_body_bytes ({cap} bytes)")
    length = request.content_length
    if length is not None and "chunked" not in request.headers.get("Transfer-Encoding", ""):
        if length > cap:
            raise too_large
        # One read of the declared length from the server's stream: werkzeug's wrapper would
        # read it 64 KiB at a time, and each step copies what the server still buffers.
        try:
            body = request.environ["wsgi.input"].read(length) if length else b""
        except Exception as exc:
            raise BadRequest(f"request body is malformed ({type(exc).__name__})") from None
        if len(body) != length:
            raise BadRequest(
                f"request body is incomplete: {len(body)} of the {length} bytes announced"
            )
        return body
    chunks: list[bytes] = []
    size = 0
    try:
        stream = get_input_stream(request.environ, max_content_length=cap + 1)
        while size <= cap:
            chunk = stream.read(min(64 * 1024, cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except RequestEntityTooLarge:
        raise too_large from None
    except ClientDisconnected:
        raise BadRequest("request body is incomplete or its chunked framing is malformed") from None
    except Exception as exc:
        raise BadRequest(f"request body is malformed ({type(exc).__name__})") from None
    if size > cap:
        raise too_large
    return b"".join(chunks)


def _query_int(name: str) -> int | None:
    """A query argument as a 64-bit integer, None when absent; 400 otherwise (SQLite overflows)."""
    raw = request.args.get(name)
    if raw is None:
        return None
    if _INT64.fullmatch(raw) is None or not INT64_MIN <= int(raw) <= INT64_MAX:
        raise BadRequest(f"{name} must be an integer between -2^63 and 2^63-1")
    return int(raw)


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
    leadership: Leadership | None = None,
) -> Flask:
    """Build the app around injected dependencies; starts no threads and touches no network."""
    metrics = Metrics(registry)
    metrics.prime(config)
    responder = Responder(config, store, nodes, metrics, clock, owner=owner)
    state_collector = StateCollector(config, store)
    webhook_auth = _bearer_check(secrets.webhook)
    operator_auth = _bearer_check(secrets.operator)

    leader_view = leadership or SoleReplica()
    app = Flask("responder")
    app.extensions["leadership"] = leader_view
    leader_collector = LeaderCollector(leader_view.view)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.extensions["responder"] = responder

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return _error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        """Safety net: no internals reach the client; input that cannot be decoded is a 400."""
        if isinstance(exc, RecursionError | UnicodeError):
            log.warning(
                "request refused: %s while decoding it",
                type(exc).__name__,
                extra={"status": 400, "path": request.path},
            )
            return _error(
                400, "request could not be decoded (nested too deep or not valid Unicode)"
            )
        if isinstance(exc, LeaseLost):  # a follower replica was asked to change something
            log.warning("request refused: %s", exc, extra={"status": 503, "path": request.path})
            view = leader_view.view()
            return _error(
                503,
                f"this replica does not lead, so it changes nothing: {exc}; send the request "
                f"to the leader ({view.get('leader') or 'none now'})",
            )
        log.exception("unexpected error", extra={"status": 500, "path": request.path})
        return _error(500, "internal error; the responder log has the details")

    def json_body(expect: str) -> Any:
        """The request body as strict JSON with the webhook's caps; None when empty.

        A body that is not JSON gets a 400 naming the body `expect`ed and the header: `curl -d`
        sends a form (application/x-www-form-urlencoded) unless told otherwise.
        """
        raw = _read_body(config.max_body_bytes)
        if not raw.strip():
            return None
        try:
            return decode_json(raw)
        except PayloadError as exc:
            sent = request.mimetype or "no Content-Type"
            raise BadRequest(
                f"body must be JSON {expect} with the header Content-Type: application/json "
                f"(this request sent {sent}): {exc}"
            ) from None

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
                body = _read_body(config.max_body_bytes)
            except HTTPException as exc:
                outcome = "too_large" if exc.code == 413 else "bad_request"
                metrics.notifications.labels(outcome=outcome).inc()
                log.warning("webhook rejected: %s", exc.description, extra={"status": exc.code})
                return _error(exc.code or 400, exc.description or exc.name)
            try:
                notification = parse_notification(body)
            except PayloadError as exc:
                metrics.notifications.labels(outcome="bad_request").inc()
                log.warning("webhook rejected: %s", exc, extra={"status": 400})
                return _error(400, f"not an Alertmanager v4 notification: {exc}")
            try:
                record_id = responder.receive(notification)
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
        view = leader_view.view()
        if "error" in view:  # etcd unreachable: this replica neither records nor acts
            resp = jsonify({**view, "status": "unavailable"})
            resp.status_code = 503
            return resp
        try:
            pending = store.pending_notifications()
        except Exception as exc:
            resp = jsonify({**view, "error": f"store unavailable: {type(exc).__name__}"})
            resp.status_code = 503
            return resp
        return jsonify({"status": "ok", "pending_notifications": pending, **view})

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        return Response(
            exposition(registry, state_collector, leader_collector), mimetype=CONTENT_TYPE_LATEST
        )

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

    @app.get("/api/v1/leader")
    def leader() -> Response:
        """Which replica leads and since when (on SQLite: this one, always)."""
        if (denied := operator_guard()) is not None:
            return denied
        return jsonify(leader_view.view())

    @app.get("/api/v1/events")
    def events() -> Response:
        if (denied := operator_guard()) is not None:
            return denied
        pair = request.args.get("pair")
        if pair is not None and pair not in {p.name for p in config.pairs}:
            return _error(404, f"unknown pair {pair!r}")
        asked = _query_int("limit")
        limit = min(max(100 if asked is None else asked, 1), 1000)
        rows = store.list_events(pair=pair, limit=limit, before=_query_int("before"))
        return jsonify({"events": [e.to_json() for e in rows]})

    @app.get("/api/v1/failovers/<failover_id>")
    def failover(failover_id: str) -> Response:
        if (denied := operator_guard()) is not None:
            return denied
        found = store.get_failover(failover_id)
        if found is None:
            return _error(404, f"unknown failover {failover_id!r}")
        body = failover_summary(found)
        journal = store.journal(failover_id)
        body["journal"] = [j.to_json() for j in journal]
        body["timings"] = step_timings(journal)
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
        if (denied := operator_guard()) is not None:
            return denied
        body = json_body('{"target": "<node>"}')
        target = body.get("target") if isinstance(body, dict) else None
        if not isinstance(target, str) or not target:
            return _error(400, 'body must be {"target": "<node name>"}')
        return control(pair, lambda by: responder.manual_failover(pair, target, by))

    @app.post("/api/v1/pairs/<pair>/switchover")
    def switchover(pair: str) -> Response:
        if (denied := operator_guard()) is not None:
            return denied
        body = json_body('{"target": "<node>", "safe_slots": <int>, "timeout": <seconds>}')
        target = body.get("target") if isinstance(body, dict) else None
        if not isinstance(target, str) or not target:
            return _error(
                400, 'body must be {"target": "<node>", "safe_slots": <int>, "timeout": <seconds>}'
            )
        assert isinstance(body, dict)
        slots, timeout = body.get("safe_slots", 0), body.get("timeout", 600)
        if isinstance(slots, bool) or not isinstance(slots, int) or not 0 <= slots <= 10_000:
            return _error(400, "safe_slots must be an integer between 0 and 10000")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= 86_400
        ):
            return _error(400, "timeout must be a number of seconds between 0 and 86400")
        return control(
            pair,
            lambda by: responder.switchover(
                pair, target, by, safe_slots=slots, timeout=float(timeout)
            ),
        )

    @app.post("/api/v1/pairs/<pair>/drill")
    def drill(pair: str) -> Response:
        """Runs the drill in the request (read-only probes, bounded by the drivers' limits)."""
        if (denied := operator_guard()) is not None:
            return denied
        if pair not in {p.name for p in config.pairs}:
            return _error(404, f"unknown pair {pair!r}")
        body = json_body('{"fault": "<node>"} (or no body)')
        fault = body.get("fault") if isinstance(body, dict) else None
        if body is not None and (
            not isinstance(body, dict) or (fault is not None and not isinstance(fault, str))
        ):
            return _error(400, 'body must be empty or {"fault": "<node>"}')
        try:
            return jsonify(responder.drill(pair, fault, operator_name()))
        except Rejected as exc:
            return _error(409, str(exc))

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
        body = json_body('{"node": "<node>"}')
        node = body.get("node") if isinstance(body, dict) else None
        if not isinstance(node, str) or not node:
            return _error(400, 'body must be {"node": "<node name>"}')
        return control(pair, lambda by: responder.adopt(pair, node, by))

    @app.post("/api/v1/pairs/<pair>/nodes/<node>/unfence")
    def unfence(pair: str, node: str) -> Response:
        if (denied := operator_guard()) is not None:
            return denied
        known = {n.name for p in config.pairs if p.name == pair for n in p.nodes}
        if known and node not in known:  # an unknown pair is control()'s 404
            return _error(404, f"unknown node {node!r} in pair {pair!r}")
        return control(pair, lambda by: responder.unfence(pair, node, by))

    register_status_page(app, responder, store, secrets, config)
    return app
