"""The webhook: auth, validation and durable recording, with real Alertmanager 0.25 deliveries."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from tests.conftest import OPERATOR_TOKEN, WEBHOOK_TOKEN, alert, fixture_delivery, notification


def _snapshot(h):
    return (h.store.pending_notifications(), h.responder.status(), len(h.events()))


def test_real_delivery_with_headers_is_recorded(make_harness) -> None:
    """A captured Alertmanager 0.25 delivery, its own headers included, is recorded with 200."""
    h = make_harness()
    delivery = fixture_delivery("firing-single-bearer.json")
    headers = dict(delivery["headers"])
    headers["Authorization"] = f"Bearer {WEBHOOK_TOKEN}"
    headers.pop("Content-Length")
    resp = h.client.post(delivery["path"], data=json.dumps(delivery["body"]), headers=headers)
    assert resp.status_code == 200, resp.json
    assert resp.json["status"] == "recorded"
    assert h.store.pending_notifications() == 1


@pytest.mark.parametrize(
    "name", ["firing-single-bearer.json", "firing-group-two-nodes.json", "resolved-single.json"]
)
def test_every_fixture_is_accepted(make_harness, name) -> None:
    """Each captured delivery parses and is recorded, then processed without error."""
    h = make_harness()
    resp = h.post_alert(fixture_delivery(name)["body"])
    assert resp.status_code == 200, resp.json
    assert h.responder.process_notifications() == 1
    assert h.store.pending_notifications() == 0


def test_truncated_delivery_is_counted(make_harness) -> None:
    """truncatedAlerts > 0 is counted in a metric; the alerts present are still recorded."""
    h = make_harness()
    resp = h.post_alert(fixture_delivery("firing-truncated-basic-auth.json")["body"])
    assert resp.status_code == 200
    metrics = h.client.get("/metrics").get_data(as_text=True)
    assert "responder_truncated_notifications_total 1.0" in metrics


def test_missing_token_is_401_and_changes_nothing(make_harness) -> None:
    """No Authorization header (or Basic auth, as in the captured basic_auth delivery) is 401."""
    h = make_harness()
    before = _snapshot(h)
    resp = h.post_alert(notification(alert()), token=None)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    basic = fixture_delivery("firing-truncated-basic-auth.json")
    resp = h.client.post(
        "/webhook", json=basic["body"], headers={"Authorization": basic["headers"]["Authorization"]}
    )
    assert resp.status_code == 401
    assert _snapshot(h) == before


def test_wrong_token_is_403_and_changes_nothing(make_harness) -> None:
    """A wrong bearer token (even the operator's) is 403 and records nothing."""
    h = make_harness()
    before = _snapshot(h)
    assert h.post_alert(notification(alert()), token="nope").status_code == 403
    assert h.post_alert(notification(alert()), token=OPERATOR_TOKEN).status_code == 403
    assert _snapshot(h) == before


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (json.dumps(notification(alert()) | {"version": "3"}).encode(), "version"),
        (
            json.dumps({k: v for k, v in notification(alert()).items() if k != "alerts"}).encode(),
            "alerts",
        ),
        (
            json.dumps(
                notification({k: v for k, v in alert().items() if k != "fingerprint"})
            ).encode(),
            "fingerprint",
        ),
        (json.dumps(notification(alert() | {"status": "exploded"})).encode(), "status"),
    ],
    ids=["bad-json", "array", "version-3", "no-alerts", "no-fingerprint", "bad-status"],
)
def test_malformed_payload_is_400_naming_the_problem(make_harness, body, needle) -> None:
    """Malformed payloads get a 400 whose message names the problem; nothing is stored."""
    h = make_harness()
    before = _snapshot(h)
    resp = h.client.post(
        "/webhook",
        data=body,
        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"},
    )
    assert resp.status_code == 400
    assert needle in resp.json["error"]
    assert _snapshot(h) == before


def test_oversized_body_is_413(make_harness) -> None:
    """A body over max_body_bytes is refused with 413 and nothing stored."""
    h = make_harness(max_body_bytes=4096)
    before = _snapshot(h)
    big = notification(*[alert(fingerprint=f"fp{i}") for i in range(100)])
    resp = h.post_alert(big)
    assert resp.status_code == 413
    assert "max_body_bytes" in resp.json["error"]
    assert _snapshot(h) == before


def test_duplicate_deliveries_change_nothing(make_harness, clock) -> None:
    """The same alert delivered many times yields one signal and the rest counted as duplicates."""
    h = make_harness()
    for _ in range(5):
        assert h.post_alert(notification(alert())).status_code == 200
    h.responder.step()
    pending = h.pair()["pending"]
    assert len(pending["signals"]) == 1
    metrics = h.client.get("/metrics").get_data(as_text=True)
    assert "responder_alerts_deduplicated_total 4.0" in metrics


def test_control_api_requires_operator_token(make_harness) -> None:
    """Control and status endpoints refuse missing (401) and wrong (403) tokens, including the webhook's."""
    h = make_harness()
    assert h.client.get("/api/v1/pairs").status_code == 401
    wrong = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    assert h.client.post("/api/v1/pairs/mainnet-a/pause", headers=wrong).status_code == 403
    assert not h.pair()["paused"]
    assert h.op("GET", "/api/v1/pairs").status_code == 200
    assert h.op("POST", "/api/v1/pairs/nope/pause").status_code == 404


def test_status_and_events_show_pending_fault_with_deadline(make_harness, clock) -> None:
    """Status shows roles, the pending fault and its deadline; events are newest first and filterable."""
    h = make_harness()
    h.post_alert(notification(alert()))
    h.responder.step()
    body = h.op("GET", "/api/v1/pairs").json["pairs"][0]
    assert body["active_node"] == "node-a"
    assert {n["name"]: n["role"] for n in body["nodes"]} == {
        "node-a": "active",
        "node-b": "standby",
    }
    assert body["phase"] == "pending"
    assert body["pending"]["seconds_left"] == 20.0
    assert "ValidatorClientDown" in body["reason"]
    events = h.op("GET", "/api/v1/events?pair=mainnet-a").json["events"]
    assert events[0]["id"] > events[-1]["id"]
    assert events[0]["reason"] == body["reason"]
    assert h.op("GET", "/api/v1/events?pair=unknown").status_code == 404


def test_healthz_and_metrics(make_harness) -> None:
    """/healthz answers ok; /metrics exposes responder_ metrics including pair state and dry-run."""
    h = make_harness()
    assert h.client.get("/healthz").json["status"] == "ok"
    text = h.client.get("/metrics").get_data(as_text=True)
    assert 'responder_pair_state{pair="mainnet-a",phase="armed"} 1.0' in text
    assert 'responder_dry_run{pair="mainnet-a"} 0.0' in text
    assert 'responder_node_role{node="node-a",pair="mainnet-a",role="active"} 1.0' in text


def test_a_burst_of_deliveries_is_processed_in_one_pass(make_harness) -> None:
    """More deliveries than one processing batch are all handled in the same pass, in order."""
    h = make_harness()
    for i in range(45):
        assert (
            h.post_alert(notification(alert(fingerprint=f"burst-{i}", node="node-b"))).status_code
            == 200
        )
    h.responder.step()
    assert h.store.pending_notifications() == 0
    [node_b] = [n for n in h.pair()["nodes"] if n["name"] == "node-b"]
    assert node_b["firing"] == ["ValidatorClientDown"]


# Client errors found by probing the running server: each a 4xx with a JSON message, nothing
# stored, no traceback logged.

DEEP_ARRAY = b"[" * 10_000 + b"]" * 10_000
DEEP_OBJECT = b'{"a":' * 10_000 + b"1" + b"}" * 10_000


def _post_raw(h, body: bytes):
    headers = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}
    return h.client.post("/webhook", data=body, headers=headers)


def _no_traceback(caplog) -> bool:
    return not any(r.exc_info for r in caplog.records)


@contextlib.contextmanager
def _serving(app) -> Iterator[int]:
    """The app on werkzeug's threaded server, on a free loopback port: what a socket sees."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.port
    finally:
        server.shutdown()
        thread.join(timeout=10)


def _exchange(port: int, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send raw bytes from a thread (an answer may come before the body ends); read one answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:

        def send() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(request)
                sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < int(
                _header(answer, b"content-length") or 0
            ):
                if not (chunk := sock.recv(65536)):
                    break
                answer += chunk
        sender.join(timeout=20)
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _header(answer: bytes, name: bytes) -> bytes | None:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _chunked(path: str, token: str, chunks: list[bytes]) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: responder\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    return head + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
def test_deeply_nested_body_is_400(make_harness, caplog, body) -> None:
    """A 10,000-deep nested JSON body is a 400 naming the nesting, not a RecursionError 500."""
    h = make_harness()
    before = _snapshot(h)
    resp = _post_raw(h, body)
    assert resp.status_code == 400
    assert "nests deeper than 32 levels" in resp.json["error"]
    assert _snapshot(h) == before
    assert _no_traceback(caplog)


@pytest.mark.parametrize(
    ("encode", "needle"),
    [
        (lambda s: s.encode("utf-16"), "UTF-8"),
        (lambda s: s.encode("utf-32"), "UTF-8"),
        (lambda s: s.encode("utf-16-le"), "UTF-8"),
        (lambda s: s.encode("latin-1"), "UTF-8"),
        (lambda s: s.replace("responder", "\ud800").encode("utf-8", "surrogatepass"), "UTF-8"),
        (lambda s: s.replace("responder", "\\ud800").encode(), "valid Unicode"),
        (lambda s: s.replace("ValidatorClientDown", "\\udfff\\ud800").encode(), "valid Unicode"),
    ],
    ids=["utf-16", "utf-32", "utf-16-le-no-bom", "latin-1", "utf-8-surrogate", "escape", "label"],
)
def test_non_utf8_or_lone_surrogate_body_is_400(make_harness, caplog, encode, needle) -> None:
    """UTF-16/32 bodies and strings with lone surrogates are a 400 naming the problem, not a 503."""
    h = make_harness()
    before = _snapshot(h)
    text = json.dumps(notification(alert()), ensure_ascii=False).replace(" on ", " é on ")
    resp = _post_raw(h, encode(text))
    assert resp.status_code == 400
    assert needle in resp.json["error"]
    assert _snapshot(h) == before
    assert _no_traceback(caplog)


def test_valid_surrogate_pair_is_accepted(make_harness) -> None:
    """An escaped surrogate pair is one valid character (an emoji), so the body is recorded."""
    h = make_harness()
    body = json.dumps(notification(alert())).replace('"responder"', '"\\ud83d\\ude00"')
    resp = _post_raw(h, body.encode())
    assert resp.status_code == 200
    assert h.store.pending_notifications() == 1


@pytest.mark.parametrize("value", [2**31, 2**63, 2**64])
def test_truncated_alerts_beyond_bound_is_400(make_harness, caplog, value) -> None:
    """truncatedAlerts ≥ 2^31 is a 400 naming the field, not a SQLite overflow 503."""
    h = make_harness()
    before = _snapshot(h)
    resp = h.post_alert(notification(alert(), truncated=value))
    assert resp.status_code == 400
    assert "truncatedAlerts" in resp.json["error"]
    assert _snapshot(h) == before
    assert _no_traceback(caplog)
    assert h.post_alert(notification(alert(), truncated=2**31 - 1)).status_code == 200


@pytest.mark.parametrize(
    "literal",
    ["9" * 101, "-" + "9" * 5000, "NaN", "-Infinity"],
    ids=["101-digits", "5000-digits", "nan", "inf"],
)
def test_oversized_integer_or_non_json_constant_is_400(make_harness, caplog, literal) -> None:
    """Integers over 100 digits (Python refuses 4300 with a ValueError 500) and NaN are a 400."""
    h = make_harness()
    before = _snapshot(h)
    body = json.dumps(notification(alert(), truncated=12345)).replace("12345", literal)
    resp = _post_raw(h, body.encode())
    assert resp.status_code == 400
    assert "integer" in resp.json["error"] or "not a JSON value" in resp.json["error"]
    assert _snapshot(h) == before
    assert _no_traceback(caplog)


@pytest.mark.parametrize(
    "value", ["9" * 5000, "[" * 40 + "]" * 40, "1e999"], ids=["5000-digits", "deep", "huge"]
)
def test_fields_the_responder_ignores_are_skipped_unread(make_harness, value) -> None:
    """A field the responder does not use is skipped without being built: a 5,000-digit
    number or 40 levels of nesting there cannot hurt, so the delivery is recorded."""
    h = make_harness()
    body = json.dumps(notification(alert()) | {"extra": 0}).replace(
        '"extra": 0', f'"extra": {value}'
    )
    resp = _post_raw(h, body.encode())
    assert resp.status_code == 200, resp.json
    assert h.store.pending_notifications() == 1


def test_non_ascii_digits_in_timestamp_are_400(make_harness) -> None:
    """A startsAt written in fullwidth or Arabic-Indic digits is not RFC 3339, so a 400."""
    h = make_harness()
    before = _snapshot(h)
    for starts in ["\uff12\uff10\uff12\uff16-11-25T18:28:07Z", "2026-11-25T18:28:\u0660\u0667Z"]:
        resp = h.post_alert(notification(alert(starts_at=starts)))
        assert resp.status_code == 400
        assert "startsAt" in resp.json["error"]
    assert _snapshot(h) == before


def test_malformed_chunk_size_is_400_under_werkzeug(make_harness, caplog) -> None:
    """A chunk size that is not hex, through werkzeug's server, is a 400 saying so; nothing stored."""
    h = make_harness()
    before = _snapshot(h)
    body = json.dumps(notification(alert())).encode()
    request = _chunked("/webhook", WEBHOOK_TOKEN, [body]).replace(b"%x\r\n" % len(body), b"zz\r\n")
    with _serving(h.app) as port:
        status, answer = _exchange(port, request)
    assert status == 400
    assert "chunked framing" in answer["error"]
    assert _snapshot(h) == before
    assert _no_traceback(caplog)


@pytest.mark.e2e
def test_malformed_chunk_size_is_400_under_gunicorn(server) -> None:
    """Under gunicorn (whose InvalidChunkSize is no OSError) a bad chunk size is a 400, not a 500."""
    body = json.dumps(notification(alert())).encode()
    request = _chunked("/webhook", WEBHOOK_TOKEN, [body]).replace(b"%x\r\n" % len(body), b"zz\r\n")
    status, answer = _exchange(server.port, request)
    assert status == 400, answer
    assert "malformed" in answer["error"]
    assert requests.get(server.url + "/healthz", timeout=5).json()["pending_notifications"] == 0
    assert "Traceback" not in server.proc.tail(20_000)


@pytest.mark.parametrize(
    "query",
    [
        "before=99999999999999999999999",
        f"before={2**63}",
        f"before={-(2**63) - 1}",
        "limit=99999999999999999999999",
        "limit=1_000",
        "before=١٢",
        "before=",
    ],
)
def test_event_query_integers_beyond_64_bits_are_400(make_harness, caplog, query) -> None:
    """limit and before outside the 64-bit range (or not plain ASCII integers) are a 400, not a 500."""
    h = make_harness()
    resp = h.op("GET", f"/api/v1/events?{query}")
    assert resp.status_code == 400
    assert "must be an integer" in resp.json["error"]
    assert _no_traceback(caplog)


def test_event_query_accepts_64_bit_bounds(make_harness) -> None:
    """The largest and smallest 64-bit values are accepted as before and limit."""
    h = make_harness()
    assert h.op("GET", f"/api/v1/events?before={2**63 - 1}&limit={-(2**63)}").status_code == 200
    assert h.op("GET", f"/api/v1/events?before={-(2**63)}").json == {"events": []}


def test_chunked_body_over_max_body_bytes_is_413(make_harness) -> None:
    """A 3 MB body sent chunked is a 413 (not a 400 about truncated JSON); nothing is stored."""
    h = make_harness(max_body_bytes=1024 * 1024)
    before = _snapshot(h)
    pad = json.dumps(notification(alert()) | {"pad": "x" * 3_000_000}).encode()
    request = _chunked(
        "/webhook", WEBHOOK_TOKEN, [pad[i : i + 65536] for i in range(0, len(pad), 65536)]
    )
    with _serving(h.app) as port:
        status, answer = _exchange(port, request)
    assert status == 413
    assert "max_body_bytes" in answer["error"]
    assert _snapshot(h) == before


def test_chunked_body_of_exactly_max_body_bytes_is_recorded(make_harness) -> None:
    """The cap is inclusive for streamed bodies too: max_body_bytes is recorded, one more is 413."""
    h = make_harness(max_body_bytes=4096)
    body = json.dumps(notification(alert())).encode()
    exact = body + b" " * (4096 - len(body))
    with _serving(h.app) as port:
        status, answer = _exchange(
            port, _chunked("/webhook", WEBHOOK_TOKEN, [exact[:100], exact[100:]])
        )
        assert (status, answer["status"]) == (200, "recorded")
        status, answer = _exchange(port, _chunked("/webhook", WEBHOOK_TOKEN, [exact + b" "]))
        assert status == 413
    assert h.store.pending_notifications() == 1


CONTROL_POSTS = [
    "pause",
    "resume",
    "ack",
    "failover",
    "confirm",
    "abort",
    "adopt",
    "nodes/node-b/unfence",
]


@pytest.mark.parametrize("action", CONTROL_POSTS)
def test_control_endpoints_check_auth_before_reading_the_body(make_harness, caplog, action) -> None:
    """Without a token, a 10,000-deep or oversized body to any control endpoint is a 401, unread."""
    h = make_harness(max_body_bytes=4096)
    before = _snapshot(h)
    path = f"/api/v1/pairs/mainnet-a/{action}"
    for body in [DEEP_ARRAY, b"x" * 10_000]:
        resp = h.client.post(path, data=body, headers={"Content-Type": "application/json"})
        assert resp.status_code == 401
        assert "bearer token" in resp.json["error"]
    assert _snapshot(h) == before
    assert _no_traceback(caplog)


@pytest.mark.parametrize("action", ["failover", "adopt"])
@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"[" * 2000 + b"]" * 2000, 400, "nests deeper"),
        (b'{"target": "node-b", "node": "node-a"}'.decode().encode("utf-16"), 400, "UTF-8"),
        (b'{"target": "\\ud800", "node": "\\ud800"}', 400, "valid Unicode"),
        (b'{"target": "node-b", "node": "node-a", "n": ' + b"9" * 200 + b"}", 400, "integer"),
        (
            b'{"target": "node-b", "node": "node-a", "pad": "' + b"x" * 5000 + b'"}',
            413,
            "max_body_bytes",
        ),
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "body must be"),
    ],
    ids=["deep", "utf-16", "surrogate", "huge-int", "too-large", "bad-json", "empty"],
)
def test_control_body_is_read_with_the_webhook_caps(
    make_harness, caplog, action, body, status, needle
) -> None:
    """Failover and adopt bodies get the webhook's caps: bad input is a 4xx naming it; nothing changes."""
    h = make_harness(max_body_bytes=4096)
    before = _snapshot(h)
    resp = h.op("POST", f"/api/v1/pairs/mainnet-a/{action}", data=body)
    assert resp.status_code == status
    assert needle in resp.json["error"]
    assert _snapshot(h) == before
    assert _no_traceback(caplog)


def test_operator_name_that_is_not_unicode_is_400_and_changes_nothing(make_harness) -> None:
    """A UnicodeError while handling a request (an unstorable operator name) is a 400, rolled back."""
    h = make_harness()
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}", "X-Responder-Operator": "\ud800"}
    resp = h.client.post("/api/v1/pairs/mainnet-a/pause", headers=headers)
    assert resp.status_code == 400
    assert "not valid Unicode" in resp.json["error"]
    assert not h.pair()["paused"]


def test_unexpected_error_is_json_500_without_internals(make_harness, caplog) -> None:
    """An unforeseen failure (the events table is gone) is a JSON 500 that names no internals."""
    h = make_harness()
    with contextlib.closing(sqlite3.connect(h.config.db_path)) as conn:
        conn.execute("DROP TABLE events")
    resp = h.op("GET", "/api/v1/events")
    assert resp.status_code == 500
    assert resp.json == {"error": "internal error; the responder log has the details"}
    assert any(r.exc_info for r in caplog.records)
