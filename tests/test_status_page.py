"""The status page at `/`: who may read it, and what an operator reads there.

Flask's test client against the real app and store; the nodes are one stateful fake behind
pytest-httpserver, the clock is stepped by hand.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from responder.clock import ManualClock
from responder.config import ConfigError, load_config, load_secrets
from responder.store import EventRecord
from tests.conftest import (
    OPERATOR_TOKEN,
    Harness,
    alert,
    base_config,
    notification,
    write_config,
)

READONLY_TOKEN = "readonly-secret-token"


class Nodes:
    """node-a signs, node-b stands by; a fence silences a node, an activation makes it sign.

    Each answer takes `took` seconds of the manual clock, so a failover's steps last a while.
    """

    def __init__(self, httpserver: HTTPServer, clock: ManualClock) -> None:
        self.clock = clock
        self.took = 0.0
        self.signing = {"node-a": True, "node-b": False}
        httpserver.expect_request(re.compile(r"^/node-[ab]/")).respond_with_handler(self)

    def __call__(self, request: Request) -> Response:
        self.clock.advance(self.took)
        node, action = request.path.strip("/").split("/")
        if action != "status":
            self.signing[node] = action == "activate"
        body = {"healthy": True, "signing": self.signing[node]}
        return Response(json.dumps(body), content_type="application/json")


@pytest.fixture
def nodes(httpserver: HTTPServer, clock: ManualClock) -> Nodes:
    return Nodes(httpserver, clock)


@pytest.fixture
def h(make_harness: Any, tmp_path: Path, nodes: Nodes) -> Harness:
    """The harness with a read-only token configured and the fake nodes answering."""
    secrets = tmp_path / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    (secrets / "readonly-token").write_text(READONLY_TOKEN + "\n")
    (secrets / "readonly-token").chmod(0o600)
    harness: Harness = make_harness(
        auth={
            "webhook_token_file": "./secrets/webhook-token",
            "operator_token_file": "./secrets/operator-token",
            "readonly_token_file": "./secrets/readonly-token",
        }
    )
    return harness


def text(resp: Any) -> str:
    """The page's visible text, tags dropped and whitespace collapsed."""
    body = resp.get_data(as_text=True)
    body = re.sub(r"<style>.*?</style>", " ", body, flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", body)).split())


def log_in(h: Harness, token: str) -> Any:
    return h.client.post("/login", data={"token": token})


def test_without_login_the_page_redirects_to_the_login_form(h: Harness) -> None:
    """No cookie and no header: a redirect to /login, whose form needs no JavaScript."""
    resp = h.client.get("/")
    assert resp.status_code == 302
    assert resp.headers["Location"].endswith("/login")
    form = h.client.get("/login")
    assert form.status_code == 200
    body = form.get_data(as_text=True)
    assert '<form method="post" action="/login">' in body
    assert 'name="token"' in body and "<script" not in body


def test_operator_token_logs_in_with_a_strict_http_only_cookie(h: Harness) -> None:
    """The operator token logs in; the session cookie is HttpOnly, SameSite=Strict, token-free."""
    resp = log_in(h, OPERATOR_TOKEN)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/")
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("responder_session=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert OPERATOR_TOKEN not in cookie
    page = h.client.get("/")
    assert page.status_code == 200
    assert "logged in: operator" in text(page)
    assert OPERATOR_TOKEN not in page.get_data(as_text=True)


def test_readonly_token_logs_in_to_the_page_only(h: Harness) -> None:
    """The read-only token opens the page but is refused by the control and JSON APIs."""
    assert log_in(h, READONLY_TOKEN).status_code == 302
    page = h.client.get("/")
    assert page.status_code == 200 and "logged in: read-only" in text(page)
    assert READONLY_TOKEN not in page.get_data(as_text=True)
    bearer = {"Authorization": f"Bearer {READONLY_TOKEN}"}
    assert h.client.post("/api/v1/pairs/mainnet-a/pause", headers=bearer).status_code == 403
    assert h.client.get("/api/v1/pairs", headers=bearer).status_code == 403
    assert h.pair()["paused"] is False


def test_wrong_token_is_a_403_page_that_says_so(h: Harness) -> None:
    """A wrong token gets a 403 HTML page with a plain message and the form again, no session."""
    resp = log_in(h, "not-the-token")
    assert resp.status_code == 403
    assert resp.mimetype == "text/html"
    assert "Wrong token: it is neither the operator token nor the read-only token" in text(resp)
    assert "not-the-token" not in resp.get_data(as_text=True)
    assert h.client.get("/").status_code == 302
    assert log_in(h, "  ").status_code == 400


def test_bearer_header_reads_the_page_without_a_session(h: Harness) -> None:
    """`Authorization: Bearer` works for scripts and curl; a wrong one is a 403 page."""
    ok = h.client.get("/", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    assert ok.status_code == 200 and "Set-Cookie" not in ok.headers
    ro = h.client.get("/", headers={"Authorization": f"Bearer {READONLY_TOKEN}"})
    assert ro.status_code == 200 and "logged in: read-only" in text(ro)
    bad = h.client.get("/", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 403 and "Wrong token in the Authorization header" in text(bad)


def test_the_session_lives_on_the_page_only(h: Harness) -> None:
    """Requests outside the page carry no session: a logged-in cookie does not open one
    there (no cookie is set or refreshed), and the page still knows the login after them."""
    log_in(h, OPERATOR_TOKEN)
    for path in ("/healthz", "/metrics", "/api/v1/pairs"):
        resp = h.client.get(path)
        assert "Set-Cookie" not in resp.headers, path
    assert h.client.get("/api/v1/pairs").status_code == 401  # the cookie is no credential here
    page = h.client.get("/")
    assert page.status_code == 200 and "logged in: operator" in text(page)


def test_logout_ends_the_session(h: Harness) -> None:
    """After /logout the page asks for a login again."""
    log_in(h, OPERATOR_TOKEN)
    assert h.client.get("/").status_code == 200
    assert h.client.post("/logout").status_code == 302
    assert h.client.get("/").status_code == 302


def test_a_session_from_before_a_token_rotation_is_refused(h: Harness, tmp_path: Path) -> None:
    """A cookie from before the operator token changed does not open the page after a restart."""
    log_in(h, OPERATOR_TOKEN)
    cookie = h.client.get_cookie("responder_session")
    assert cookie is not None
    (tmp_path / "secrets" / "operator-token").write_text("a-new-operator-token\n")
    restarted = Harness(h.config, h.clock)
    try:
        restarted.client.set_cookie("responder_session", cookie.value)
        assert restarted.client.get("/").status_code == 302
    finally:
        restarted.store.close()


def test_pending_fault_shows_a_countdown_and_each_nodes_answer(
    h: Harness, clock: ManualClock
) -> None:
    """While a fault is held the page says when the failover will start, in seconds and as a time."""
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(8)
    h.responder.step()
    h.responder.observe_pair("mainnet-a")
    log_in(h, OPERATOR_TOKEN)
    page = text(h.client.get("/"))
    deadline = datetime.fromtimestamp(1_800_000_020, UTC).strftime("%H:%M:%SZ")
    assert f"failover in 12 s, at {deadline}" in page
    assert "pending" in page and "active node: node-a" in page
    assert "fault on node-a: ValidatorClientDown" in page
    assert re.search(r"node-a active signing \{.*?\} signing 0.0 s ago ValidatorClientDown", page)
    assert re.search(r"node-b standby not signing \{.*?\} not signing 0.0 s ago none", page)


def test_unobserved_node_is_shown_as_may_be_signing(h: Harness) -> None:
    """Before any answer from the nodes, signing is unknown and the page says MAY BE SIGNING."""
    page = text(h.client.get("/", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}))
    assert page.count("not observed yet MAY BE SIGNING") == 2


def test_finished_failover_shows_outcome_and_step_timings(
    h: Harness, clock: ManualClock, nodes: Nodes
) -> None:
    """After a failover the page shows node-b active, outcome done, and seconds per step."""
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    nodes.took = 0.5
    [failover] = h.responder.step()
    assert failover.step.value == "done"
    log_in(h, OPERATOR_TOKEN)
    resp = h.client.get("/")
    page = text(resp)
    assert "active node: node-b" in page
    assert f"{failover.id} : node-a → node-b, automatic, outcome done" in page
    # each node answer takes 0.5 s: target read; fence and its check; other read, activate, check
    steps = "step seconds planned 0.500 fencing 1.000 fenced 0.000 activating 1.500 total 3.000"
    assert steps in page
    assert "node-a fenced" in page and "node-b active" in page
    assert '<meta http-equiv="refresh" content="5">' in resp.get_data(as_text=True)


def test_recent_events_newest_first_and_limited(h: Harness, clock: ManualClock) -> None:
    """The events table lists the newest 20 with their reasons, newest first."""
    with h.store.transaction() as txn:
        for i in range(30):
            txn.add_event(EventRecord(clock.now() + i, "mainnet-a", "note", f"event number {i}"))
    page = text(h.client.get("/", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}))
    shown = [int(n) for n in re.findall(r"event number ([0-9]+)", page)]
    assert shown == list(range(29, 9, -1))


def test_hostile_text_is_escaped(h: Harness, clock: ManualClock) -> None:
    """A reason carrying markup is shown as text, never as HTML; the page forbids scripts."""
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    with h.store.transaction() as txn:
        txn.add_event(EventRecord(clock.now(), "mainnet-a", "note", hostile))
    resp = h.client.get("/", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    body = resp.get_data(as_text=True)
    assert "<script" not in body and "<img" not in body
    assert (
        "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in body
    )
    assert hostile in text(resp)
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]


def test_not_ready_lists_the_failing_checks(h: Harness, clock: ManualClock) -> None:
    """A failed preflight shows NOT READY and each failing check with its reason."""
    h.store.save_report(
        "mainnet-a",
        "readiness",
        {
            "ready": False,
            "at": clock.now(),
            "summary": "not ready: 1 of 3 checks failing",
            "checks": [
                {"name": "node-b:api", "ok": False, "verdict": "FAIL", "reason": "timed out"},
                {"name": "node-a:api", "ok": True, "verdict": "ok", "reason": "answered"},
            ],
        },
    )
    page = text(h.client.get("/", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}))
    assert "NOT READY not ready: 1 of 3 checks failing" in page
    assert "node-b:api : timed out" in page
    assert "node-a:api : answered" not in page


def test_auth_none_needs_no_login(make_harness: Any, nodes: Nodes) -> None:
    """With `auth: none` the page opens without a login and offers no logout."""
    h = make_harness(auth="none")
    resp = h.client.get("/")
    assert resp.status_code == 200
    assert "logged in: no login (auth: none)" in text(resp)
    assert "Log out" not in text(resp)
    assert h.client.get("/login").status_code == 302


def test_a_read_only_token_equal_to_the_operator_token_is_refused(tmp_path: Path) -> None:
    """A read-only token that is the operator (or webhook) token would act: the config is
    refused, naming the key."""
    path = write_config(tmp_path, base_config(lambda n: f"http://127.0.0.1:1/{n}"))
    config = load_config(path)
    assert config.auth != "none"
    same = tmp_path / "readonly-token"
    same.write_text(config.auth.operator_token_file.read_text())
    data = base_config(lambda n: f"http://127.0.0.1:1/{n}")
    data["auth"]["readonly_token_file"] = str(same)
    with pytest.raises(ConfigError) as caught:
        load_secrets(load_config(write_config(tmp_path, data)))
    assert "auth.readonly_token_file: holds the same token" in caught.value.problems[0]
