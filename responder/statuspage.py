"""The read-only status page at `/`: server-rendered HTML, no JavaScript, for people.

It shows what `Responder.status()` and the store already hold (the JSON API stays the source
for tools). Who may read it: anyone holding the operator token or the optional read-only token,
by a login form (kept in Flask's signed session cookie) or an `Authorization: Bearer` header;
with `auth: none`, everyone. The read-only token opens this page only, never the control API.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.wrappers import Response as BaseResponse

from .config import Config, Secret, Secrets
from .service import Responder, iso, step_timings
from .store import Store

RECENT_EVENTS = 20
REFRESH_SECONDS = 5
SESSION_LIFETIME = timedelta(hours=12)
_KEY_LABEL = b"responder status page session v1"

# The page has no script and loads nothing: the policy says so, so an injected tag could not run.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


_PAGE_PATHS = frozenset({"/", "/login", "/logout"})


class _PageSessions(SecureCookieSessionInterface):
    """Sessions for the status page's own paths only. Flask opens one for every request,
    building a signer from the key each time: a webhook delivery or an API call paid for a
    cookie it never carries."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path not in _PAGE_PATHS:
            return None  # Flask then uses its null session, which is never saved
        return super().open_session(app, request)


def _tag(key: bytes, secret: Secret) -> str:
    """What a session stores about the token it logged in with: a keyed digest, not the token.

    A session is valid only while its token is still configured, so rotating a token (and
    restarting) logs out whoever used the old one.
    """
    return hmac.new(key, secret.value.encode(), hashlib.sha256).hexdigest()[:32]


def _clock_time(value: str | None) -> str | None:
    """An ISO time as "10:41:03Z" (the page says the date once, at the top)."""
    if value is None:
        return None
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%H:%M:%SZ")


def _node_rows(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each node's believed role beside its own last answer; unknown signing is said loudly."""
    rows = []
    for node in nodes:
        seen = node["observed"]
        signing = None if seen is None else seen["signing"]
        text = "MAY BE SIGNING" if signing is None else "signing" if signing else "not signing"
        unknown = signing is None or bool(node["may_be_signing"])
        rows.append(node | {"signing_text": text, "signing_unknown": unknown})
    return rows


def _failover_view(store: Store, failover: dict[str, Any] | None) -> dict[str, Any] | None:
    """The pair's last failover with the seconds spent in each step (from its journal)."""
    if failover is None:
        return None
    timings = step_timings(store.journal(failover["id"]))
    total = timings.pop("total", None)
    return failover | {"timings": list(timings.items()), "total_seconds": total}


def _events(store: Store, pair: str) -> list[dict[str, Any]]:
    return [
        {"at": iso(e.ts), "kind": e.kind, "node": e.node, "reason": e.reason}
        for e in store.list_events(pair=pair, limit=RECENT_EVENTS)
    ]


def _leader_line(leadership: Any) -> str | None:
    """Replicas on etcd: who leads, since when, and whether this replica is it."""
    if leadership is None:
        return None
    view = leadership.view()
    if view.get("backend") != "etcd":
        return None
    if "error" in view:
        return f"replica {view['replica']}: {view['error']}; no replica acts through it"
    if view.get("leader") is None:
        return f"replica {view['replica']}: no replica leads now"
    since = iso(float(view["leader_since"]))
    this = "this replica" if view["role"] == "leader" else f"not this one ({view['replica']})"
    return f"leader: replica {view['leader']} since {since} ({this})"


def register_status_page(
    app: Flask, responder: Responder, store: Store, secrets: Secrets, config: Config
) -> None:
    """Add `/`, `/login` and `/logout` to the app.

    The session key is derived from the operator token (HMAC), so every gunicorn worker agrees
    on it without another secret to manage; a new operator token ends every session.
    """
    operator = secrets.operator
    logins: list[tuple[str, Secret]] = []
    key = b""
    if operator is not None:
        logins.append(("operator", operator))
        if secrets.readonly is not None:
            logins.append(("read-only", secrets.readonly))
        key = hmac.new(operator.value.encode(), _KEY_LABEL, hashlib.sha256).digest()
        app.secret_key = key
        app.session_interface = _PageSessions()
        app.config.update(
            SESSION_COOKIE_NAME="responder_session",
            SESSION_COOKIE_HTTPONLY=True,
            SESSION_COOKIE_SAMESITE="Strict",
            PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        )
    tags = {_tag(key, secret): role for role, secret in logins}

    def role_of_token(token: str) -> str | None:
        """The role a token logs in as; every configured token is compared, in constant time."""
        found = None
        for role, secret in logins:
            if hmac.compare_digest(token.encode(), secret.value.encode()) and found is None:
                found = role
        return found

    page = Blueprint("status_page", __name__, template_folder="templates")

    def html(template: str, status: int = 200, **context: Any) -> Response:
        body = render_template(
            template, auth=operator is not None, refresh=REFRESH_SECONDS, **context
        )
        resp = Response(body, status=status, mimetype="text/html")
        resp.headers.update(_HEADERS)
        return resp

    def denied(message: str) -> Response:
        return html("status/login.html", 403, error=message)

    @page.get("/")
    def index() -> BaseResponse:
        role = "no login (auth: none)"
        if operator is not None:
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            if header:
                found = role_of_token(token.strip()) if scheme.lower() == "bearer" else None
                if found is None:
                    return denied("Wrong token in the Authorization header.")
                role = found
            else:
                found = tags.get(str(session.get("login", "")))
                if found is None:
                    session.clear()
                    return redirect(url_for("status_page.login"))
                role = found
        pairs = []
        for pair in responder.status():
            pending = pair["pending"]
            if pending is not None:
                pending = pending | {"deadline_clock": _clock_time(pending["deadline"])}
            pairs.append(
                pair
                | {
                    "nodes": _node_rows(pair["nodes"]),
                    "pending": pending,
                    "failover": _failover_view(store, pair["failover"]),
                    "events": _events(store, pair["name"]),
                }
            )
        return html(
            "status/page.html",
            pairs=pairs,
            role=role,
            dry_run=config.dry_run,
            generated=iso(responder.clock.now()),
            leader=_leader_line(current_app.extensions.get("leadership")),
        )

    @page.route("/login", methods=["GET", "POST"])
    def login() -> BaseResponse:
        if operator is None:
            return redirect(url_for("status_page.index"))
        if request.method == "GET":
            return html("status/login.html")
        token = request.form.get("token", "").strip()
        if not token:
            return html("status/login.html", 400, error="Enter a token.")
        role = role_of_token(token)
        if role is None:
            session.clear()
            return denied(
                "Wrong token: it is neither the operator token nor the read-only token. "
                "Nothing was changed; try again."
            )
        session.clear()
        session["login"] = _tag(key, dict(logins)[role])
        session.permanent = True
        return redirect(url_for("status_page.index"))

    @page.route("/logout", methods=["GET", "POST"])
    def logout() -> BaseResponse:
        session.clear()
        target = "status_page.login" if operator is not None else "status_page.index"
        return redirect(url_for(target))

    app.register_blueprint(page)
