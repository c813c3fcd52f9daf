"""The gunicorn worker: gthread, but a thread only ever gets a request that has arrived.

gunicorn's gthread worker hands a connection to a pool thread as soon as its first byte
arrives; the thread then blocks in the HTTP parser until the head is complete, and in the
application until the body is. A client sending a byte a second holds a thread as long as it
likes: 8 of them held all 2x4 threads and a valid delivery waited 35 s (Alertmanager 0.25 has
no request timeout, so it just waits). Since gunicorn 26 the worker also closes a finished
connection by draining the client for up to 2 s *on its event loop*, so each slow client whose
answer closes the connection stalls accepting for everyone.

Options weighed:
- more threads: the attacker opens more connections; every thread is one more to fill.
- a socket timeout on accepted connections (e.g. a 5 s head deadline): bounds how long each
  slow connection holds a thread, but while it does the thread is gone: 8 slow connections
  still delay every delivery by up to 5 s, and reconnecting keeps it so.
- limit_request_line / limit_request_fields bound sizes, not time: a header at a byte a
  second stays under them for hours. keepalive only governs idle connections between
  requests, which gthread already parks on its poller without a thread.
- chosen: the worker's event loop reads each request head and body (Content-Length or
  chunked, up to 1 MiB) without blocking, as nginx buffers requests, and submits the
  connection to the pool only once the request is in memory: a slow client costs a socket and
  a buffer, never a thread. A head must arrive within `head_timeout` (5 s), a body within
  `body_timeout` (10 s) of its head, or the connection is closed. Larger bodies and
  `Expect: 100-continue` are read by the thread against the same deadline; once a request is
  answered the thread does not wait for what the client still sends: a closing connection
  is drained on the poller, not on the loop. Everything else (thread pool, keep-alive,
  graceful shutdown, gunicorn hooks such as child_exit) is gthread's own.

It relies on the gthread design of gunicorn 24.1 and later (a main-thread event loop driven by
enqueue_req/finish_request); TLS, HTTP/2 and the uwsgi protocol fall back to plain gthread.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from functools import partial
from typing import Any

import gunicorn
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers import gthread

if not hasattr(gthread, "PollableMethodQueue"):
    raise ImportError(
        f"responder.worker needs gunicorn >= 24.1 (installed: {gunicorn.__version__})"
    )


class _DeadlineUnreader(SocketUnreader):  # type: ignore[misc]
    """gunicorn's socket reader with an absolute deadline: once past it, reads end (b"").

    Once the request is answered, nothing more is waited for: what the application left
    unread is drained by the event loop as the connection closes, not by a thread.
    """

    deadline: float | None = None
    answered = False
    expired = False  # a read was cut short: the connection must close

    def chunk(self, *args: Any) -> bytes:
        data: bytes
        if self.answered:
            self.expired = True
            return b""
        if self.deadline is None:
            data = super().chunk(*args)
            return data
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.expired = True
            return b""
        prior = self.sock.gettimeout()
        self.sock.settimeout(min(prior, remaining) if prior else remaining)
        try:
            data = super().chunk(*args)
        except TimeoutError:
            self.expired = True
            return b""
        finally:
            self.sock.settimeout(prior)
        return data


_HEX = frozenset(b"0123456789abcdefABCDEF")
_CHUNKED = -1  # the body length of a chunked body


class _Reading:
    """A request being read on the event loop."""

    __slots__ = ("body_start", "chunk_pos", "data", "deadline", "need", "scanned")

    def __init__(self, data: bytes, deadline: float) -> None:
        self.data = bytearray(data)
        self.deadline = deadline  # of the head, then of the body
        self.scanned = 0  # bytes of the head already searched for its end
        self.body_start: int | None = None  # once the head is in
        self.need: int | None = None  # head + Content-Length body
        self.chunk_pos = 0  # a chunked body: where its next chunk-size line starts


class BufferingThreadWorker(gthread.ThreadWorker):  # type: ignore[misc]
    """gthread that reads request heads and bodies on its event loop (see the module doc)."""

    head_timeout = 5.0
    body_timeout = 10.0
    max_head = 64 * 1024  # larger heads go to the parser (and its limits) as they are
    max_buffered_body = 1024 * 1024  # the default max_body_bytes
    buffer_budget = 64 * 1024 * 1024  # all requests being read by one worker
    linger_timeout = 2.0  # after the answer, drain the client at most this long, then close
    linger_max = 64 * 1024
    stop_grace = 1.0  # once stopping, requests still being read get at most this long

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        self._buffering = (
            not cfg.is_ssl
            and getattr(cfg, "http2_cleartext", "off") == "off"
            and getattr(cfg, "protocol", "http") == "http"
        )
        self._reading: dict[Any, _Reading] = {}
        self._buffered = 0
        self._handoff: dict[Any, tuple[bytes, float]] = {}
        self._lingering: dict[socket.socket, tuple[float, int]] = {}
        self._stop_deadline: float | None = None

    # --- the event loop: read requests without a thread -------------------------------------

    def enqueue_req(self, conn: Any) -> None:
        """Read a new or kept-alive connection's next request on the loop before a thread serves it."""
        if not self._buffering:
            super().enqueue_req(conn)
            return
        data = b""
        if conn.parser is not None:  # bytes read ahead: a pipelined request
            data = conn.parser.unreader.buf.getvalue()
            conn.parser.unreader.buf.seek(0)
            conn.parser.unreader.buf.truncate()
        reading = _Reading(data, time.monotonic() + self.head_timeout)
        self._reading[conn] = reading
        self._buffered += len(data)
        conn.sock.setblocking(False)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))
        if data:
            self._advance(conn, reading)
        if conn in self._reading:  # what has arrived already (a kept-alive connection's request)
            self._readable(conn, conn.sock)

    def _readable(self, conn: Any, _sock: socket.socket) -> None:
        reading = self._reading.get(conn)
        if reading is None:
            return
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before its request was complete
            self._drop(conn)
            return
        reading.data += data
        self._buffered += len(data)
        if self._buffered > self.buffer_budget:
            self.log.warning("dropping a connection: requests being read exceed the buffer budget")
            self._drop(conn)
            return
        self._advance(conn, reading)

    def _advance(self, conn: Any, reading: _Reading) -> None:
        """Hand the connection to a thread once its request is in (or is not ours to buffer)."""
        data = reading.data
        if reading.body_start is None:
            end = data.find(b"\r\n\r\n", max(reading.scanned - 3, 0))
            if end < 0:
                if self._bare_lf(data, reading.scanned) or len(data) > self.max_head:
                    self._dispatch(conn, reading.deadline)  # for the parser to reject
                else:
                    reading.scanned = len(data)
                return
            length = self._body_length(bytes(data[:end]))
            reading.deadline = time.monotonic() + self.body_timeout
            if length is None:
                self._dispatch(conn, reading.deadline)
                return
            reading.body_start = reading.chunk_pos = end + 4
            if length != _CHUNKED:
                reading.need = end + 4 + length
        if reading.need is None:  # chunked
            end = self._chunked_end(reading)
            if end == 0:
                if len(data) - reading.body_start <= self.max_buffered_body:
                    return
            elif end > 0:
                reading.need = end
        if reading.need is None or len(data) >= reading.need:
            self._dispatch(conn, reading.deadline)

    @staticmethod
    def _bare_lf(data: bytearray, start: int) -> bool:
        """Whether a line of the head from `start` on ends in LF alone (the parser rejects it)."""
        i = data.find(b"\n", start)
        while i >= 0:
            if i == 0 or data[i - 1] != 0x0D:
                return True
            i = data.find(b"\n", i + 1)
        return False

    def _body_length(self, head: bytes) -> int | None:
        """The body to buffer: its Content-Length or _CHUNKED; None to leave it to the thread."""
        length: int | None = None
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip()
            if name == b"expect":  # the client waits for gunicorn's 100 Continue
                return None
            if name == b"transfer-encoding":
                if chunked or value.lower() != b"chunked":
                    return None  # gunicorn's parser answers anything else
                chunked = True
            elif name == b"content-length":
                if length is not None or not value.isdigit():
                    return None  # ambiguous or invalid: gunicorn's parser answers it
                length = int(value)
        if chunked:
            return None if length is not None else _CHUNKED
        if length is None:
            return 0
        return length if length <= self.max_buffered_body else None

    def _chunked_end(self, reading: _Reading) -> int:
        """Where the chunked body ends: 0 while incomplete, -1 when malformed or too large."""
        data, pos = reading.data, reading.chunk_pos
        while True:
            eol = data.find(b"\r\n", pos, pos + 1024)
            if eol < 0:
                return -1 if len(data) - pos >= 1024 else 0
            size_field = bytes(data[pos:eol]).split(b";", 1)[0].strip()
            if not size_field or not _HEX.issuperset(size_field):
                return -1
            size = int(size_field, 16)
            if size == 0:  # the last chunk, then trailer fields up to an empty line
                end = data.find(b"\r\n\r\n", eol, eol + 8192)
                if end < 0:
                    return -1 if len(data) - eol >= 8192 else 0
                return end + 4
            if size > self.max_buffered_body:
                return -1
            pos = eol + 2 + size + 2
            if pos > len(data):
                return 0
            if data[pos - 2 : pos] != b"\r\n":
                return -1
            reading.chunk_pos = pos

    def _dispatch(self, conn: Any, deadline: float) -> None:
        reading = self._forget(conn)
        self._handoff[conn] = (bytes(reading.data), deadline)
        super().enqueue_req(conn)

    def _forget(self, conn: Any) -> _Reading:
        reading = self._reading.pop(conn)
        self._buffered -= len(reading.data)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)
        return reading

    def _drop(self, conn: Any) -> None:
        self._forget(conn)
        self.nr_conns -= 1
        conn.close()

    def murder_keepalived(self, *args: Any, **kwargs: Any) -> None:
        """gthread's keep-alive expiry, then drop overdue requests and end lingering closes."""
        super().murder_keepalived(*args, **kwargs)
        now = time.monotonic()
        if not self.alive and self._stop_deadline is None:
            self._stop_deadline = now + self.stop_grace
        for conn, reading in list(self._reading.items()):
            if now >= min(reading.deadline, self._stop_deadline or reading.deadline):
                self.log.debug("dropping a connection: request not received in time")
                self._drop(conn)
        for sock, (deadline, _) in list(self._lingering.items()):
            if now >= deadline:
                self._close_lingering(sock)

    # --- the thread: serve what the loop read -----------------------------------------------

    def handle(self, conn: Any) -> Any:
        handoff = self._handoff.pop(conn, None)
        if handoff is None:
            return super().handle(conn)
        data, deadline = handoff
        conn.init()
        unreader = conn.parser.unreader
        if not isinstance(unreader, _DeadlineUnreader):  # the connection's first request
            unreader = _DeadlineUnreader(conn.sock)
            conn.parser.unreader = unreader
        unreader.unread(data)
        unreader.deadline, unreader.answered, unreader.expired = deadline, False, False
        result = super().handle(conn)
        unreader.deadline, unreader.answered = None, False
        if unreader.expired:  # the request was not read to its end: close
            return False
        return result

    def handle_request(self, req: Any, conn: Any) -> Any:
        try:
            return super().handle_request(req, conn)
        finally:
            unreader = conn.parser.unreader
            if isinstance(unreader, _DeadlineUnreader):
                unreader.answered = True

    # --- closing: linger on the loop, not in it -----------------------------------------------

    def finish_request(self, conn: Any, fs: Any) -> None:
        """As gthread, but a connection to close drains its client from the poller."""
        if (
            self._buffering
            and not fs.cancelled()
            and fs.exception() is None
            and fs.result() is False
        ):
            self.nr_conns -= 1
            self._linger(conn.sock)
            return
        super().finish_request(conn, fs)

    def _linger(self, sock: socket.socket) -> None:
        """Send FIN, then read what the client still sends until it closes (RFC 9112 9.6)."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            self.poller.register(sock, selectors.EVENT_READ, self._linger_readable)
        except (OSError, ValueError, KeyError):
            with contextlib.suppress(OSError):
                sock.close()
            return
        self._lingering[sock] = (time.monotonic() + self.linger_timeout, 0)

    def _linger_readable(self, sock: socket.socket) -> None:
        if sock not in self._lingering:
            return
        deadline, drained = self._lingering[sock]
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        drained += len(data)
        if not data or drained >= self.linger_max:
            self._close_lingering(sock)
        else:
            self._lingering[sock] = (deadline, drained)

    def _close_lingering(self, sock: socket.socket) -> None:
        del self._lingering[sock]
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(sock)
        with contextlib.suppress(OSError):
            sock.close()
