"""Alertmanager webhook payloads (version 4): strict validation into frozen objects.

Unknown extra fields are ignored (Alertmanager may add some); missing or mistyped fields the
responder relies on are rejected with a message naming the field. Bodies are decoded strictly
(UTF-8, valid Unicode strings, bounded nesting and integers): whatever cannot be recorded as text
is the sender's error (400), never the responder's (5xx, which Alertmanager would retry).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)",
    re.ASCII,  # \d must not match other scripts' digits (fullwidth or Arabic-Indic years)
)
EARLIEST_YEAR, LATEST_YEAR = 2000, 2199  # an alert outside these years cannot be right
GO_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of a firing alert
MAX_JSON_DEPTH = 32  # a notification nests 4 deep (body, alerts, alert, labels)
MAX_INT_DIGITS = 100  # far past any real value; Python refuses 4300 with an internal hint
MAX_TRUNCATED_ALERTS = 2**31  # truncatedAlerts must stay far inside SQLite's 64-bit INTEGER
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_timestamp(value: str, *, allow_zero: bool = False) -> str:
    """An RFC 3339 timestamp that is a real instant between 2000 and 2199, or ValueError."""
    if allow_zero and value == GO_ZERO_TIME:
        return value
    if len(value) > _LONGEST_TIMESTAMP or not _timestamp_ok(value):
        _timestamp_problem(value)  # raises: says what is wrong
    return value


_LONGEST_TIMESTAMP = 40  # 35 at most (nanoseconds and an offset); longer is never cached


@lru_cache(maxsize=65536)
def _timestamp_ok(value: str) -> bool:
    """Cached: Alertmanager repeats every alert of a group in each delivery of that group."""
    try:
        _timestamp_problem(value)
    except ValueError:
        return False
    return True


def _timestamp_problem(value: str) -> None:
    m = _RFC3339.fullmatch(value)
    if m is None:
        raise ValueError(f"{value!r} is not an RFC 3339 timestamp (e.g. 2026-11-25T18:28:07Z)")
    zone = m.group(8).upper()
    try:
        y, mo, d, h, mi, sec = map(int, m.group(1, 2, 3, 4, 5, 6))
        datetime(y, mo, d, h, mi, sec)
        if zone != "Z" and (int(zone[1:3]) > 23 or int(zone[4:6]) > 59):
            raise ValueError("bad offset")
    except ValueError:
        raise ValueError(f"{value!r} is not a real date and time") from None
    if not EARLIEST_YEAR <= y <= LATEST_YEAR:
        raise ValueError(f"{value!r} is outside {EARLIEST_YEAR}-{LATEST_YEAR}")


class PayloadError(ValueError):
    """The request body is not usable JSON, or not a usable Alertmanager v4 notification."""


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise PayloadError(f"body has an integer of more than {MAX_INT_DIGITS} digits")
    return int(text)


def _no_constant(name: str) -> Any:
    raise PayloadError(f"body is not valid JSON: {name} is not a JSON value")


def _check_tree(data: Any) -> None:
    """Bound nesting and refuse lone surrogates ("\\ud800" escapes), without recursion."""
    stack: list[tuple[Any, int]] = [([data], 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise PayloadError(f"body nests deeper than {MAX_JSON_DEPTH} levels")
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        for item in items:
            if isinstance(item, str):
                if not item.isascii() and _SURROGATE.search(item):
                    raise PayloadError(
                        'body has a string with a lone surrogate (e.g. "\\ud800"); '
                        "strings must be valid Unicode"
                    )
            elif isinstance(item, dict | list):
                stack.append((item, depth + 1))


def decode_json(body: bytes) -> Any:
    """Decode a request body as strict JSON; raise PayloadError naming the problem.

    UTF-8 only (RFC 8259; Alertmanager sends nothing else), no NaN/Infinity, integers of at most
    MAX_INT_DIGITS digits, nesting at most MAX_JSON_DEPTH deep, strings valid Unicode: anything else could
    not be stored as text, or would exhaust the recursion limit, further on.
    """
    if b"\x00" in body:
        raise PayloadError("body is not valid JSON: it must be UTF-8 (NUL bytes: UTF-16 or -32?)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(
            f"body is not valid JSON: it must be UTF-8 (invalid UTF-8 at byte {exc.start})"
        ) from None
    try:
        data = json.loads(text, parse_int=_bounded_int, parse_constant=_no_constant)
    except PayloadError:
        raise
    except RecursionError:
        raise PayloadError(f"body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from None
    _check_tree(data)
    return data


class _AlertModel(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str = Field(min_length=1)
    endsAt: str = ""
    generatorURL: str = ""
    fingerprint: str = Field(min_length=1)

    @field_validator("startsAt")
    @classmethod
    def _starts(cls, value: str) -> str:
        return check_timestamp(value)

    @field_validator("endsAt")
    @classmethod
    def _ends(cls, value: str) -> str:
        return check_timestamp(value, allow_zero=True) if value else value


class _NotificationModel(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    version: Literal["4"]
    receiver: str
    status: Literal["firing", "resolved"]
    alerts: list[_AlertModel]
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    groupKey: str
    truncatedAlerts: int = Field(default=0, ge=0, lt=MAX_TRUNCATED_ALERTS)


class Alert(NamedTuple):
    """One alert of a delivery, as the responder acts on it.

    A named tuple: built and stored (as a JSON array) in C by msgspec, at thousands per
    delivery. Field order is the stored order.
    """

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    starts_at: str
    fingerprint: str

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def key(self) -> str:
        """Identity of one firing episode: repeated deliveries share it."""
        return f"{self.fingerprint}@{self.starts_at}"

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "labels": dict(self.labels),
            "startsAt": self.starts_at,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Alert:
        return cls(
            status=data["status"],
            labels=dict(data["labels"]),
            starts_at=data["startsAt"],
            fingerprint=data["fingerprint"],
        )


@dataclass(frozen=True)
class Notification:
    receiver: str
    status: str
    group_key: str
    alerts: tuple[Alert, ...]
    truncated_alerts: int
    external_url: str


def _describe(err: Mapping[str, Any]) -> str:
    loc = ""
    for item in err["loc"]:
        loc += f"[{item}]" if isinstance(item, int) else (f".{item}" if loc else str(item))
    return f"{loc or 'body'}: {err['msg']}"


class _FastAlert(msgspec.Struct):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    startsAt: Annotated[str, msgspec.Meta(min_length=1)]
    fingerprint: Annotated[str, msgspec.Meta(min_length=1)]
    annotations: dict[str, str] = {}
    endsAt: str = ""
    generatorURL: str = ""


class _FastNotification(msgspec.Struct):
    version: Literal["4"]
    receiver: str
    status: Literal["firing", "resolved"]
    alerts: list[_FastAlert]
    groupKey: str
    groupLabels: dict[str, str] = {}
    commonLabels: dict[str, str] = {}
    externalURL: str = ""
    truncatedAlerts: Annotated[int, msgspec.Meta(ge=0, lt=MAX_TRUNCATED_ALERTS)] = 0


_FAST = msgspec.json.Decoder(_FastNotification)


def _parse_fast(body: bytes) -> Notification | None:
    """One pass in C over a valid body; None for anything it refuses, which the thorough
    path then explains. Strict the same way (types, literals, UTF-8, Unicode, no NaN); fields
    the responder ignores are skipped unread, so their nesting and numbers cannot hurt."""
    try:
        if not body.isascii():
            body.decode("utf-8")  # skipped fields are not checked by the decoder
        model = _FAST.decode(body)
    except (msgspec.DecodeError, RecursionError, UnicodeError):
        return None
    given = model.alerts
    ends = {a.endsAt for a in given} - {"", GO_ZERO_TIME}  # a firing alert's, or absent
    stamps = {a.startsAt for a in given} | ends  # a start is never the zero time
    ok = _timestamp_ok
    if any(len(t) > _LONGEST_TIMESTAMP or not ok(t) for t in stamps):
        return None
    make = tuple.__new__  # a named tuple without its Python-level __new__: 3x faster
    alerts = [make(Alert, (a.status, a.labels, a.startsAt, a.fingerprint)) for a in given]
    return Notification(
        receiver=model.receiver,
        status=model.status,
        group_key=model.groupKey,
        alerts=tuple(alerts),
        truncated_alerts=model.truncatedAlerts,
        external_url=model.externalURL,
    )


def parse_notification(body: bytes) -> Notification:
    """Decode and validate one webhook body; raise PayloadError with the first problems.

    The fast path accepts exactly the valid notifications; whatever it refuses goes through
    the thorough path, which accepts it or names the problems.
    """
    if b"\x00" not in body:  # NUL bytes: UTF-16 or -32, which the thorough path names
        fast = _parse_fast(body)
        if fast is not None:
            return fast
    return _parse_thorough(body)


def _parse_thorough(body: bytes) -> Notification:
    """Every check in Python, naming the first problems; the reference the fast path matches."""
    data = decode_json(body)
    if not isinstance(data, dict):
        raise PayloadError("body must be a JSON object (an Alertmanager v4 notification)")
    if "version" in data and data["version"] != "4":
        raise PayloadError(
            f"version: unsupported webhook version {repr(data['version'])[:40]}, expected '4'"
        )
    try:
        model = _NotificationModel.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors()[:5]]
        raise PayloadError("; ".join(problems)) from None
    return Notification(
        receiver=model.receiver,
        status=model.status,
        group_key=model.groupKey,
        alerts=tuple(
            Alert(status=a.status, labels=a.labels, starts_at=a.startsAt, fingerprint=a.fingerprint)
            for a in model.alerts
        ),
        truncated_alerts=model.truncatedAlerts,
        external_url=model.externalURL,
    )
