"""The body limit under real gunicorn: whole alert groups are admitted by default, and a body
above max_body_bytes gets a 413 the client actually reads (issue 12, point 3).

Alertmanager with `max_alerts: 0` sends a group whole: 10,000 alerts are ~4.7 MB, within the
16 MiB default. Above the limit the answer is sent without reading the body, and the rest of
the body is read and discarded (bounded in bytes and time) before the connection closes: a
socket closed on a client still sending resets the connection, and the client reports a broken
pipe instead of the 413.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from responder.worker import BufferingThreadWorker
from tests.conftest import WEBHOOK_TOKEN, base_config, write_config
from tests.serverproc import ServerProcess, free_port

pytestmark = pytest.mark.e2e

DEFAULT_LIMIT = 16 * 1024 * 1024


def start(directory: Path, **overrides: Any) -> ServerProcess:
    data = base_config(lambda n: f"http://127.0.0.1:9/{n}", **overrides)
    path = write_config(directory, data)
    return ServerProcess(path, free_port(), directory / "responder.log").start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The responder with the default settings (its nodes are never called)."""
    proc = start(tmp_path_factory.mktemp("default"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """max_body_bytes: 1 MiB, so that 4x the limit is a few megabytes."""
    proc = start(tmp_path_factory.mktemp("small"), max_body_bytes=1024 * 1024)
    yield proc
    proc.stop()


def group(alerts: int) -> bytes:
    """One Alertmanager v4 delivery of `alerts` firing alerts (~470 bytes each), compact as
    Go encodes it; not a trigger of the pair, so nothing fails over."""
    body = {
        "receiver": "responder",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": "PeersLow",
                    "instance": f"node-a:{8000 + i % 1000}",
                    "job": "beacon",
                    "node": "node-a",
                    "pair": "mainnet-a",
                    "severity": "warning",
                    "peer_group": f"g{i:05d}",
                },
                "annotations": {
                    "summary": "few peers on node-a",
                    "description": "node-a has had fewer than 10 peers for 5 minutes",
                },
                "startsAt": f"2026-11-25T18:{i // 60 % 60:02d}:{i % 60:02d}.908132859Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph?g0.expr=libp2p_peers+%3C+10",
                "fingerprint": f"{i:016x}",
            }
            for i in range(alerts)
        ],
        "groupLabels": {"alertname": "PeersLow", "pair": "mainnet-a"},
        "commonLabels": {"alertname": "PeersLow", "pair": "mainnet-a"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": '{}:{alertname="PeersLow", pair="mainnet-a"}',
        "truncatedAlerts": 0,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def head(framing: str, length: int) -> bytes:
    size = f"Content-Length: {length}" if framing == "length" else "Transfer-Encoding: chunked"
    return (
        f"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {WEBHOOK_TOKEN}\r\n"
        f"Content-Type: application/json\r\n{size}\r\n\r\n"
    ).encode()


def pieces(framing: str, length: int, piece: int = 64 * 1024) -> Iterator[bytes]:
    """`length` bytes of body, framed; chunked in `piece`-byte chunks with the last chunk."""
    for start in range(0, length, piece):
        data = b"x" * min(piece, length - start)
        yield data if framing == "length" else b"%x\r\n%s\r\n" % (len(data), data)
    if framing == "chunked":
        yield b"0\r\n\r\n"


class Exchange:
    """What a client that sends its whole request before reading (as Python's http.client
    does) saw: whether sending failed, and the raw answer up to the server's close."""

    def __init__(self, port: int, request_head: bytes, body: Iterator[bytes]) -> None:
        self.send_error: OSError | None = None
        self.answer = b""
        self.closed = False
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            try:
                sock.sendall(request_head)
                for part in body:
                    sock.sendall(part)
            except OSError as exc:
                self.send_error = exc
            try:
                while data := sock.recv(65536):
                    self.answer += data
                self.closed = True
            except OSError:
                pass
        self.seconds = time.monotonic() - started

    @property
    def status(self) -> int:
        return int(self.answer.split(b" ", 2)[1]) if self.answer else 0

    @property
    def headers(self) -> dict[str, str]:
        lines = self.answer.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]
        return {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}

    def json(self) -> Any:
        return json.loads(self.answer.split(b"\r\n\r\n", 1)[1])


def too_large_count(server: ServerProcess) -> float:
    text = requests.get(server.url + "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith('responder_notifications_total{outcome="too_large"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# ---- admitted ----------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_10000_alert_group_is_recorded_with_the_default_limit(
    server: ServerProcess, framing: str
) -> None:
    """A 4.7 MB delivery of 10,000 alerts, with Content-Length or chunked, is answered 200."""
    body = group(10_000)
    assert 4_500_000 < len(body) < 5_000_000
    data: Any = (
        body
        if framing == "length"
        else iter([body[i : i + 65536] for i in range(0, len(body), 65536)])
    )
    headers = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}
    resp = requests.post(server.url + "/webhook", data=data, headers=headers, timeout=120)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "recorded"


# ---- refused, and seen ---------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_body_above_the_limit_gets_a_413_the_client_reads(
    server: ServerProcess, framing: str
) -> None:
    """17 MiB over the 16 MiB default: the client sends all of it without a broken pipe, then
    reads a 413 with a JSON error, and the connection closes cleanly."""
    before = too_large_count(server)
    size = DEFAULT_LIMIT + 1024 * 1024
    seen = Exchange(server.port, head(framing, size), pieces(framing, size))
    assert seen.send_error is None, "the server stopped reading: the client saw " + repr(
        seen.send_error
    )
    assert seen.status == 413, seen.answer[:300]
    assert seen.json() == {"error": f"body exceeds max_body_bytes ({DEFAULT_LIMIT} bytes)"}
    assert seen.headers["connection"] == "close"
    assert seen.closed  # the answer ends the exchange, no reset
    assert too_large_count(server) == before + 1  # answered by the app, counted as refused


def test_requests_and_curl_like_clients_see_the_413(small: ServerProcess) -> None:
    """With max_body_bytes 1 MiB, `requests` posting 3 MB gets the 413 and its message."""
    headers = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}
    resp = requests.post(small.url + "/webhook", data=b"x" * 3_000_000, headers=headers, timeout=30)
    assert resp.status_code == 413
    assert resp.json()["error"] == "body exceeds max_body_bytes (1048576 bytes)"


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_what_is_discarded_is_bounded(small: ServerProcess, framing: str) -> None:
    """A body far beyond 4x the limit is not read to its end: the server closes the connection
    and the client's sending fails, long before 64 MiB have gone."""
    size = 64 * 1024 * 1024
    seen = Exchange(small.port, head(framing, size), pieces(framing, size))
    assert isinstance(seen.send_error, ConnectionError | BrokenPipeError), seen.send_error
    assert seen.seconds < BufferingThreadWorker.body_timeout + 5


def test_a_refused_body_that_stops_arriving_is_closed_soon(server: ServerProcess) -> None:
    """A client that declared 20 MiB, sent 256 KiB and then drips gets its 413 at once, and
    the server stops reading about `linger_timeout` later, long before the body deadline."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head("length", 20 * 1024 * 1024))
        sock.sendall(b"x" * 256 * 1024)
        answer = b""
        while data := sock.recv(65536):  # the answer, then the server's end of sending
            answer += data
        assert answer.startswith(b"HTTP/1.1 413 ")
        stalled = time.monotonic()
        while time.monotonic() - stalled < BufferingThreadWorker.body_timeout + 5:
            try:  # discarded while the server drains; refused (reset) once it has closed
                sock.send(b"x")
            except OSError:
                break
            time.sleep(0.1)
        closed_after = time.monotonic() - stalled
    # it kept reading (old: closed at once, 64 KiB being all it drained), then stopped
    assert BufferingThreadWorker.linger_timeout - 1 < closed_after
    assert closed_after < BufferingThreadWorker.linger_timeout + 2
