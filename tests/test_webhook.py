"""The webhook: auth, validation and durable recording, with real Alertmanager 0.25 deliveries."""

from __future__ import annotations

import json

import pytest

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
