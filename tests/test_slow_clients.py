"""Slow clients (a byte a second, no token) against the real responder under gunicorn.

Each slow connection sends the start of a request (a head, a body, a chunked body, the next
request on a kept-alive connection, ...) and then one byte a second. A valid delivery must still
be answered at once, and the server must close every slow connection once its request is overdue
(responder.worker.BufferingThreadWorker).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from types import TracebackType

import pytest
import requests

from responder.worker import BufferingThreadWorker
from tests.conftest import WEBHOOK_TOKEN, alert, notification
from tests.serverproc import ServerProcess

pytestmark = pytest.mark.e2e

# What each kind of slow connection sends before its byte a second.
PREFIXES = {
    # The request line, then one header byte a second (a head that never ends).
    "header": b"POST /webhook HTTP/1.1\r\nX-Slow: ",
    # A complete head announcing 1000 bytes, then one body byte a second.
    "body": (
        b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n"
    ),
    # A complete request on a kept-alive connection, then the next request's head, slowly.
    "keepalive": (
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nPOST /webhook HTTP/1.1\r\nX-Slow: "
    ),
    # A chunked body whose first chunk-size line arrives a byte a second.
    "chunked": (
        b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    ),
    # A body too large to buffer (answered 401 unread), then a byte a second.
    "large": (
        b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2000000\r\n\r\n"
    ),
    # A request whose answer closes the connection, then a byte a second the server must drain.
    "close": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
}


class SlowClients:
    """`count` loopback connections that send a request prefix, then one byte a second.

    A background thread sends the bytes for at most `max_seconds`; leaving the context stops it
    and closes every socket. `open_count()` says how many the server has not closed yet.
    """

    def __init__(self, port: int, count: int, kind: str, max_seconds: float = 60.0) -> None:
        self.port = port
        self.count = count
        self.prefix = PREFIXES[kind]
        self.max_seconds = max_seconds
        self.socks: list[socket.socket] = []
        self.closed_at: dict[int, float] = {}  # socket index -> seconds after start
        self.started = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)

    def __enter__(self) -> SlowClients:
        self.started = time.monotonic()
        try:
            for _ in range(self.count):
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                sock.settimeout(None)  # blocking, so that MSG_DONTWAIT below does not wait
                self.socks.append(sock)
                sock.sendall(self.prefix)
        except BaseException:
            self.close()
            raise
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for sock in self.socks:
            sock.close()

    def _trickle(self) -> None:
        end = self.started + self.max_seconds
        while not self._stop.wait(1.0) and time.monotonic() < end:
            for i, sock in enumerate(self.socks):
                if not self._closed(i):
                    try:
                        sock.send(b"a")
                    except OSError:
                        self._mark_closed(i)

    def _closed(self, i: int) -> bool:
        with self._lock:
            return i in self.closed_at

    def _mark_closed(self, i: int) -> None:
        with self._lock:
            self.closed_at.setdefault(i, time.monotonic() - self.started)

    def open_count(self) -> int:
        """How many connections the server has neither closed nor reset (answers are discarded)."""
        for i, sock in enumerate(self.socks):
            if self._closed(i):
                continue
            try:
                while sock.recv(65536, socket.MSG_DONTWAIT):
                    pass
                self._mark_closed(i)  # end of file: closed by the server
            except BlockingIOError:
                pass
            except OSError:
                self._mark_closed(i)
        with self._lock:
            return self.count - len(self.closed_at)


def deliver(server: ServerProcess) -> tuple[int, float]:
    """Post a valid delivery on a new connection: (status, seconds to the answer)."""
    body = json.dumps(notification(alert()))
    headers = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}
    started = time.perf_counter()
    try:
        resp = requests.post(server.url + "/webhook", data=body, headers=headers, timeout=10)
    except requests.Timeout:
        return 0, time.perf_counter() - started
    return resp.status_code, time.perf_counter() - started


@pytest.mark.parametrize(
    ("kind", "count"), [("header", 8), ("body", 8), ("header", 32), ("body", 32)]
)
def test_delivery_is_answered_while_slow_clients_are_open(
    server: ServerProcess, kind: str, count: int
) -> None:
    """A valid delivery gets its 200 within 2 s while 8 or 32 slow-header or slow-body connections are open."""
    with SlowClients(server.port, count, kind) as slow:
        time.sleep(1.5)  # the slow requests are under way (real time is the point here)
        answers = [deliver(server) for _ in range(3)]
        still_open = slow.open_count()
    print(f"\n{count} slow {kind} connections: answers in " + ", ".join(
        f"{seconds * 1000:.0f} ms" for _, seconds in answers
    ))  # fmt: skip
    assert [status for status, _ in answers] == [200, 200, 200]
    assert max(seconds for _, seconds in answers) < 2.0
    assert still_open == count, "the slow connections were dropped before the deliveries"


def test_overdue_requests_are_dropped_and_closes_do_not_stall(server: ServerProcess) -> None:
    """Incomplete heads and bodies are closed at their deadline, answered slow clients soon after; none delays a delivery."""
    worker = BufferingThreadWorker
    limits = {
        "header": worker.head_timeout + 3,
        "keepalive": worker.head_timeout + 3,
        "body": worker.body_timeout + 3,
        "chunked": worker.body_timeout + 3,
        "large": worker.linger_timeout + 3,
        "close": worker.linger_timeout + 3,
    }
    with contextlib.ExitStack() as stack:
        groups = {kind: stack.enter_context(SlowClients(server.port, 8, kind)) for kind in limits}
        time.sleep(0.5)
        status, seconds = deliver(server)
        end = time.monotonic() + max(limits.values()) + 3
        while sum([g.open_count() for g in groups.values()]) and time.monotonic() < end:
            time.sleep(0.2)
    print(f"\nanswer with 8 slow connections of each kind open: {seconds * 1000:.0f} ms")
    assert status == 200 and seconds < 2.0
    for kind, group in groups.items():
        times = sorted(group.closed_at.values())
        assert len(times) == 8, f"{8 - len(times)} slow {kind} connections still open"
        print(f"slow {kind}: closed by the server after {times[0]:.1f}-{times[-1]:.1f} s")
        assert times[-1] < limits[kind], kind


def test_stop_is_not_held_up_by_slow_clients(server: ServerProcess) -> None:
    """SIGTERM with 32 slow connections open stops the responder within a few seconds."""
    with (
        SlowClients(server.port, 16, "header") as heads,
        SlowClients(server.port, 16, "body") as bodies,
    ):
        time.sleep(1.0)
        assert heads.open_count() + bodies.open_count() == 32
        started = time.monotonic()
        server.stop()
        seconds = time.monotonic() - started
    print(f"\nstopped in {seconds:.1f} s with 32 slow connections open")
    assert seconds < BufferingThreadWorker.stop_grace + 3


def test_split_pipelined_and_chunked_requests_are_served(server: ServerProcess) -> None:
    """Requests arriving in pieces, pipelined on one connection, or chunked are answered as usual."""
    body = json.dumps(notification(alert())).encode()
    start = (
        f"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {WEBHOOK_TOKEN}\r\n"
        "Content-Type: application/json\r\n"
    ).encode()
    sized = start + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    chunked = (
        start
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + f"{100:x};ext=1\r\n".encode()
        + body[:100]
        + f"\r\n{len(body) - 100:X}\r\n".encode()
        + body[100:]
        + b"\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    healthz = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    stream = sized + chunked + healthz + healthz
    cuts = [0, 10, len(start) + 5, len(sized) - 50, len(sized) + len(start) + 40]
    cuts += [len(sized) + len(chunked) - 8, len(sized) + len(chunked) + 5, len(stream)]
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        for begin, end in itertools.pairwise(cuts):
            sock.sendall(stream[begin:end])
            time.sleep(0.2)
        answers = b""
        while len(re.findall(rb"HTTP/1\.1 \d{3} ", answers)) < 4:
            data = sock.recv(65536)
            assert data, f"connection closed after {answers!r}"
            answers += data
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"200"] * 4

    def chunks() -> Iterator[bytes]:
        yield body[:100]
        yield body[100:]

    with requests.Session() as session:
        headers = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}
        for _ in range(2):
            resp = session.post(server.url + "/webhook", data=chunks(), headers=headers, timeout=5)
            assert resp.status_code == 200, resp.text
