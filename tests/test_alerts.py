"""Alertmanager 0.25 webhook payloads: the real captured deliveries parse; bad ones name the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from responder.alerts import Alert, Notification, PayloadError, parse_notification

FIXTURES = Path(__file__).parent / "fixtures" / "alertmanager-0.25"
CAPTURED = sorted(p.name for p in FIXTURES.glob("*.json"))


def body_of(name: str) -> dict[str, Any]:
    """The JSON body Alertmanager sent in one captured delivery."""
    delivery = json.loads((FIXTURES / name).read_text())
    body = delivery["body"]
    if isinstance(body, str):  # tolerate a capture that kept the raw text
        body = json.loads(body)
    assert isinstance(body, dict)
    return body


def raw(body: Any) -> bytes:
    return json.dumps(body).encode()


def parse(name: str) -> Notification:
    return parse_notification(raw(body_of(name)))


def error_of(body: bytes) -> str:
    with pytest.raises(PayloadError) as info:
        parse_notification(body)
    return str(info.value)


# ---- the captured deliveries ----------------------------------------------------------------


def test_all_four_captures_are_present() -> None:
    """The four Alertmanager 0.25 captures the suite relies on are in tests/fixtures."""
    assert CAPTURED == [
        "firing-group-two-nodes.json",
        "firing-single-bearer.json",
        "firing-truncated-basic-auth.json",
        "resolved-single.json",
    ]


@pytest.mark.parametrize("name", CAPTURED)
def test_every_captured_delivery_parses(name: str) -> None:
    """Each real delivery parses into a Notification whose alerts mirror the body's alerts."""
    body = body_of(name)
    n = parse(name)
    assert n.receiver == body["receiver"]
    assert n.status == body["status"]
    assert n.group_key == body["groupKey"]
    assert n.external_url == body["externalURL"]
    assert len(n.alerts) == len(body["alerts"])
    for alert, src in zip(n.alerts, body["alerts"], strict=True):
        assert alert.status == src["status"]
        assert dict(alert.labels) == src["labels"]
        assert alert.starts_at == src["startsAt"]
        assert alert.fingerprint == src["fingerprint"]
        assert alert.key == f"{src['fingerprint']}@{src['startsAt']}"


def test_single_firing_capture() -> None:
    """The single-alert firing capture yields one firing ValidatorClientDown on node-a."""
    n = parse("firing-single-bearer.json")
    assert n.status == "firing"
    assert n.truncated_alerts == 0
    (alert,) = n.alerts
    assert alert.status == "firing"
    assert alert.alertname == "ValidatorClientDown"
    assert alert.labels["instance"] == "node-a:5064"
    assert alert.fingerprint == "e16386ccbfaaa5a8"
    assert alert.starts_at == "2026-11-25T18:28:07.908132859Z"


def test_group_capture_carries_one_alert_per_node() -> None:
    """The grouped capture has two BeaconNodeStalled alerts with distinct fingerprints per node."""
    n = parse("firing-group-two-nodes.json")
    assert [a.alertname for a in n.alerts] == ["BeaconNodeStalled", "BeaconNodeStalled"]
    assert [a.labels["instance"] for a in n.alerts] == ["node-a:8008", "node-b:8008"]
    assert len({a.fingerprint for a in n.alerts}) == 2
    assert n.group_key == '{}:{alertname="BeaconNodeStalled", pair="mainnet-a"}'


def test_truncated_alerts_is_read() -> None:
    """truncatedAlerts from a max_alerts-limited delivery is carried into the Notification."""
    n = parse("firing-truncated-basic-auth.json")
    assert n.truncated_alerts == 1
    assert len(n.alerts) == 2
    assert n.receiver == "responder-truncated"


def test_resolved_capture_has_the_same_episode_key_as_the_firing_one() -> None:
    """The resolved delivery names the same fingerprint + startsAt as the firing one it ends."""
    firing = parse("firing-single-bearer.json").alerts[0]
    resolved = parse("resolved-single.json")
    assert resolved.status == "resolved"
    (alert,) = resolved.alerts
    assert alert.status == "resolved"
    assert alert.key == firing.key


def test_missing_truncated_alerts_defaults_to_zero() -> None:
    """A body without truncatedAlerts is read as nothing truncated."""
    body = body_of("firing-single-bearer.json")
    del body["truncatedAlerts"]
    assert parse_notification(raw(body)).truncated_alerts == 0


def test_unknown_extra_fields_are_ignored() -> None:
    """Fields a later Alertmanager might add do not break parsing."""
    body = body_of("firing-single-bearer.json")
    body["newTopLevelField"] = {"x": 1}
    body["alerts"][0]["silencedBy"] = []
    assert parse_notification(raw(body)).alerts[0].fingerprint == "e16386ccbfaaa5a8"


def test_parsed_objects_are_frozen() -> None:
    """Notification and Alert are immutable."""
    n = parse("firing-single-bearer.json")
    with pytest.raises(AttributeError):
        n.status = "resolved"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        n.alerts[0].fingerprint = "x"  # type: ignore[misc]


def test_alert_json_round_trip() -> None:
    """Alert.to_json/from_json round-trips (the form stored with a recorded notification)."""
    for name in CAPTURED:
        for alert in parse(name).alerts:
            again = Alert.from_json(json.loads(json.dumps(alert.to_json())))
            assert again == alert
            assert again.key == alert.key


def test_alert_without_alertname_label_has_empty_alertname() -> None:
    """An alert with no alertname label reads as alertname '' (never a trigger)."""
    body = body_of("firing-single-bearer.json")
    del body["alerts"][0]["labels"]["alertname"]
    assert parse_notification(raw(body)).alerts[0].alertname == ""


# ---- rejected bodies ------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"version": "4"', b"\xff\xfe\x00"])
def test_malformed_json_is_rejected(body: bytes) -> None:
    """A body that is not JSON (or not UTF-8) is a PayloadError saying so."""
    assert "not valid JSON" in error_of(body)


@pytest.mark.parametrize("body", [b"[]", b'[{"version": "4"}]', b'"4"', b"42", b"null"])
def test_non_object_json_is_rejected(body: bytes) -> None:
    """A JSON array or scalar is a PayloadError asking for an object."""
    assert "JSON object" in error_of(body)


@pytest.mark.parametrize("version", ["3", "5", 4, None])
def test_wrong_version_is_rejected_naming_version(version: Any) -> None:
    """A payload version other than the string "4" is refused, naming the version field."""
    body = body_of("firing-single-bearer.json")
    body["version"] = version
    msg = error_of(raw(body))
    assert msg.startswith("version")
    assert repr(version) in msg


def test_missing_version_is_rejected_naming_version() -> None:
    """A payload without a version is refused, naming the field."""
    body = body_of("firing-single-bearer.json")
    del body["version"]
    assert "version: Field required" in error_of(raw(body))


@pytest.mark.parametrize("field", ["alerts", "groupKey", "status", "receiver"])
def test_missing_required_field_is_rejected_naming_it(field: str) -> None:
    """Each field the responder relies on is required and named when absent."""
    body = body_of("firing-single-bearer.json")
    del body[field]
    assert f"{field}: Field required" in error_of(raw(body))


def test_alerts_not_a_list_is_rejected() -> None:
    """alerts given as an object is refused, naming alerts."""
    body = body_of("firing-single-bearer.json")
    body["alerts"] = body["alerts"][0]
    assert error_of(raw(body)).startswith("alerts")


@pytest.mark.parametrize("field", ["fingerprint", "startsAt", "status", "labels"])
def test_alert_missing_field_is_rejected_naming_it(field: str) -> None:
    """An alert without fingerprint, startsAt, status or labels names alerts[i].<field>."""
    body = body_of("firing-group-two-nodes.json")
    del body["alerts"][1][field]
    assert f"alerts[1].{field}: Field required" in error_of(raw(body))


@pytest.mark.parametrize("field", ["fingerprint", "startsAt"])
def test_alert_empty_identity_field_is_rejected(field: str) -> None:
    """An empty fingerprint or startsAt (the dedup identity) is refused, naming the field."""
    body = body_of("firing-single-bearer.json")
    body["alerts"][0][field] = ""
    assert f"alerts[0].{field}:" in error_of(raw(body))


@pytest.mark.parametrize("status", ["pending", "FIRING", "", 1, None])
def test_bad_alert_status_is_rejected_naming_it(status: Any) -> None:
    """An alert status other than firing/resolved is refused, naming alerts[0].status."""
    body = body_of("firing-single-bearer.json")
    body["alerts"][0]["status"] = status
    assert "alerts[0].status:" in error_of(raw(body))


def test_bad_notification_status_is_rejected_naming_it() -> None:
    """A top-level status other than firing/resolved is refused, naming status."""
    body = body_of("resolved-single.json")
    body["status"] = "ok"
    assert error_of(raw(body)).startswith("status:")


def test_non_string_label_is_rejected_naming_it() -> None:
    """Labels must be strings (strict): a number is refused, naming the label."""
    body = body_of("firing-single-bearer.json")
    body["alerts"][0]["labels"]["severity"] = 2
    assert "alerts[0].labels.severity:" in error_of(raw(body))


@pytest.mark.parametrize("value", [-1, "1", 1.5])
def test_bad_truncated_alerts_is_rejected(value: Any) -> None:
    """truncatedAlerts must be a non-negative integer."""
    body = body_of("firing-truncated-basic-auth.json")
    body["truncatedAlerts"] = value
    assert error_of(raw(body)).startswith("truncatedAlerts:")


def test_error_message_lists_several_problems() -> None:
    """Several bad fields are reported together (up to five), each by name."""
    body = body_of("firing-group-two-nodes.json")
    broken = copy.deepcopy(body)
    del broken["alerts"][0]["fingerprint"]
    broken["alerts"][1]["status"] = "pending"
    msg = error_of(raw(broken))
    assert "alerts[0].fingerprint" in msg
    assert "alerts[1].status" in msg


def test_payload_error_is_a_value_error() -> None:
    """PayloadError is a ValueError, so callers can map it to 400 generically."""
    assert issubclass(PayloadError, ValueError)


def test_go_zero_time_is_an_end_never_a_start() -> None:
    """Alertmanager's zero time marks a firing alert's endsAt; as a startsAt it is refused,
    on the fast path as on the thorough one."""
    body = body_of("firing-single-bearer.json")
    body["alerts"][0]["startsAt"] = "0001-01-01T00:00:00Z"
    assert "alerts[0].startsAt" in error_of(raw(body))
    body["alerts"][0]["startsAt"] = "2026-11-25T18:28:07Z"
    body["alerts"][0]["endsAt"] = "0001-01-01T00:00:00Z"
    assert parse_notification(raw(body)).alerts[0].starts_at == "2026-11-25T18:28:07Z"
