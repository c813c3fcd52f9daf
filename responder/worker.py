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
  is drained on the poller, not by the thread. Everything else (thread pool, keep-alive,
  graceful shutdown, gunicorn hooks such as child_exit) is gthread's own.

A body above max_body_bytes is answered 413 without being read (a Content-Length one is
never buffered, and its answer says `Connection: close`). Closing the socket on a client
still sending would reset the connection and the client would report a broken pipe, not the
413: the rest of the body is read and discarded on the poller first, bounded in bytes and
time (see `_linger`), as nginx's lingering close does.

A worker that already has a connection per thread leaves new connections to the other
workers for a moment (see `accept`), so a burst of keep-alive connections does not all land on
the first worker to wake.

It relies on the gthread design of gunicorn 24.1 and later (a main-thread event loop driven by
enqueue_req/finish_request); TLS, HTTP/2 and the uwsgi protocol fall back to plain gthread.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from functools import partial
from typing import Any

import gunicorn
from gunicorn.http.body import ChunkedReader
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
    from_socket = 0  # bytes this request's thread read from the socket itself
    unsent: int | None = 0  # of the body, not read by the loop (None: chunked, unknown)
    chunked_done = False  # the thread read a chunked body to its last chunk

    def chunk(self, *args: Any) -> bytes:
        data: bytes
        if self.answered:
            self.expired = True
            return b""
        if self.deadline is None:
            data = super().chunk(*args)
            self.from_socket += len(data)
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
        self.from_socket += len(data)
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


class _Linger:
    """A closing connection drained on the loop (see BufferingThreadWorker._linger)."""

    __slots__ = ("budget", "deadline", "drained", "last_deadline")

    def __init__(self, deadline: float, last_deadline: float, budget: int) -> None:
        self.deadline = deadline  # closed once past it
        self.last_deadline = last_deadline  # how far progress may push `deadline`
        self.budget = budget  # bytes drained at most
        self.drained = 0


class BufferingThreadWorker(gthread.ThreadWorker):  # type: ignore[misc]
    """gthread that reads request heads and bodies on its event loop (see the module doc)."""

    head_timeout = 5.0
    body_timeout = 10.0
    max_head = 64 * 1024  # larger heads go to the parser (and its limits) as they are
    max_buffered_body = 1024 * 1024  # larger bodies are read by the thread
    max_body = 16 * 1024 * 1024  # the config's max_body_bytes (gunicorn_conf.post_fork sets it)
    buffer_budget = 64 * 1024 * 1024  # all requests being read by one worker
    linger_timeout = 2.0  # after the answer, drain the client at most this long, then close
    linger_max = 64 * 1024
    discard_factor = 4  # a refused body is drained up to this many times max_body
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
        self._handoff: dict[Any, tuple[bytes, float, int | None]] = {}
        self._unsent: dict[socket.socket, tuple[int | None, float]] = {}  # see _linger
        self._lingering: dict[socket.socket, _Linger] = {}
        self._stop_deadline: float | None = None
        self._accept_paused_until = 0.0  # see accept

    # --- spreading connections over the workers ---------------------------------------------

    accept_yield = 0.01  # seconds a busy worker leaves new connections to the others
    resume_batch = 64  # connections taken at most when the yield ends (the rest: events)

    def accept(self, listener: Any) -> None:
        """Take a new connection, unless this worker already has one per thread and others
        run beside it: then it stops watching the listener for `accept_yield`, so an idle
        worker takes what arrives meanwhile, and takes whatever is still waiting afterwards
        (a busy worker adds at most `accept_yield` to a connect).

        All workers watch one listening socket and the first to wake takes each connection:
        a burst of keep-alive connections (Alertmanager's, a load generator's) all landed on
        one worker, which then did every request on one interpreter while the other idled.
        """
        if self.cfg.workers > 1 and self.nr_conns >= self.cfg.threads:
            self._accept_paused_until = time.monotonic() + self.accept_yield
            self.set_accept_enabled(False)
            timer = threading.Timer(
                self.accept_yield, self.method_queue.defer, (self._resume_accepting, listener)
            )
            timer.daemon = True
            timer.start()
            return
        super().accept(listener)

    def _resume_accepting(self, listener: Any) -> None:
        """On the loop, once the yield is over: what no other worker took is this one's."""
        if not self.alive:
            return
        for _ in range(self.resume_batch):
            if self.nr_conns >= self.worker_connections:
                break
            before = self.nr_conns
            super().accept(listener)  # gthread's: nothing waiting (EAGAIN) takes nothing
            if self.nr_conns == before:
                break
        self.set_accept_enabled(self.nr_conns < self.worker_connections)

    def set_accept_enabled(self, enabled: bool) -> None:
        if enabled and time.monotonic() < self._accept_paused_until:
            return  # yielding to the other workers (see accept)
        super().set_accept_enabled(enabled)

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
            length, buffer = self._body_length(bytes(data[:end]))
            reading.deadline = time.monotonic() + self.body_timeout
            reading.body_start = reading.chunk_pos = end + 4
            if length is None:
                reading.need = len(data)  # nothing to drain: the parser answers and closes
            elif length != _CHUNKED:
                reading.need = end + 4 + length
            if not buffer:
                self._dispatch(conn, reading.deadline)
                return
        if reading.need is None:  # chunked
            end = self._chunked_end(reading)
            if end == 0:
                if len(data) - reading.body_start <= self._buffer_limit:
                    return
            elif end > 0:
                reading.need = end
        if reading.need is None or len(data) >= reading.need:
            self._dispatch(conn, reading.deadline)

    @property
    def _buffer_limit(self) -> int:
        """The largest body read on the loop: a body the app refuses is never buffered."""
        return min(self.max_buffered_body, self.max_body)

    @staticmethod
    def _bare_lf(data: bytearray, start: int) -> bool:
        """Whether a line of the head from `start` on ends in LF alone (the parser rejects it)."""
        i = data.find(b"\n", start)
        while i >= 0:
            if i == 0 or data[i - 1] != 0x0D:
                return True
            i = data.find(b"\n", i + 1)
        return False

    def _body_length(self, head: bytes) -> tuple[int | None, bool]:
        """(the body's Content-Length or _CHUNKED, None when the parser must judge it;
        whether the loop buffers it or leaves it to the thread)."""
        length: int | None = None
        chunked = expect = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip()
            if name == b"expect":  # the client waits for gunicorn's 100 Continue
                expect = True
            elif name == b"transfer-encoding":
                if chunked or value.lower() != b"chunked":
                    return None, False  # gunicorn's parser answers anything else
                chunked = True
            elif name == b"content-length":
                if length is not None or not value.isdigit():
                    return None, False  # ambiguous or invalid: gunicorn's parser answers it
                length = int(value)
        if chunked:
            return (None, False) if length is not None else (_CHUNKED, not expect)
        if length is None:
            return 0, True
        return length, not expect and length <= self._buffer_limit

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
        """Hand the connection to a thread, with what the loop read and what is still to
        come of the body (None: a chunked body, of unknown length)."""
        reading = self._forget(conn)
        unsent = None if reading.need is None else max(0, reading.need - len(reading.data))
        self._handoff[conn] = (bytes(reading.data), deadline, unsent)
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
        for sock, linger in list(self._lingering.items()):
            if now >= linger.deadline:
                self._close_lingering(sock)

    # --- the thread: serve what the loop read -----------------------------------------------

    def handle(self, conn: Any) -> Any:
        handoff = self._handoff.pop(conn, None)
        if handoff is None:
            return super().handle(conn)
        data, deadline, unsent = handoff
        conn.init()
        unreader = conn.parser.unreader
        if not isinstance(unreader, _DeadlineUnreader):  # the connection's first request
            unreader = _DeadlineUnreader(conn.sock)
            conn.parser.unreader = unreader
        unreader.unread(data)
        unreader.deadline, unreader.answered, unreader.expired = deadline, False, False
        unreader.from_socket, unreader.unsent, unreader.chunked_done = 0, unsent, False
        result = super().handle(conn)
        unreader.deadline, unreader.answered = None, False
        if unreader.expired or not result:  # closing: is part of the body still to come?
            if unsent is None:
                left = 0 if unreader.chunked_done else None
            else:
                left = unsent - unreader.from_socket
            if left is None or left > 0:
                self._unsent[conn.sock] = (left, deadline)
            return False
        return result

    def handle_request(self, req: Any, conn: Any) -> Any:
        unreader = conn.parser.unreader
        unknown = isinstance(unreader, _DeadlineUnreader) and unreader.unsent is None
        if unknown or self._declared_length(req) > self.max_body:
            # a body that may be refused unread (413): the answer says the connection closes,
            # and it is drained first (see _linger)
            req.must_close = True
        try:
            return super().handle_request(req, conn)
        finally:
            if isinstance(unreader, _DeadlineUnreader):
                unreader.answered = True
                reader = getattr(getattr(req, "body", None), "reader", None)
                unreader.chunked_done = isinstance(reader, ChunkedReader) and reader.parser is None

    @staticmethod
    def _declared_length(req: Any) -> int:
        for name, value in getattr(req, "headers", ()):
            if name == "CONTENT-LENGTH" and value.isdigit():
                return int(value)
        return 0

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
        self._unsent.pop(conn.sock, None)
        super().finish_request(conn, fs)

    def _linger(self, sock: socket.socket) -> None:
        """Send FIN, then read what the client still sends until it closes (RFC 9112 9.6).

        A client still sending a body that was answered unread (a 413, a 401) would get a
        reset, not the answer, if the socket closed with its bytes unread: its body is read and
        discarded here, up to `discard_factor` x max_body bytes and the body's deadline, as
        long as at least `linger_max` bytes arrive every `linger_timeout` seconds; a Content-
        Length body is closed as soon as all of it has arrived (one declared larger than that
        bound is not read at all). Anything else gets at most `linger_max` bytes and
        `linger_timeout` seconds.
        """
        left, body_deadline = self._unsent.pop(sock, (0, 0.0))
        now = time.monotonic()
        cap = self.discard_factor * self.max_body
        if left is None:
            budget = cap
        elif 0 < left <= cap:
            budget = left
        else:  # nothing left, or more than is worth reading before the reset anyway
            budget = self.linger_max
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            self.poller.register(sock, selectors.EVENT_READ, self._linger_readable)
        except (OSError, ValueError, KeyError):
            with contextlib.suppress(OSError):
                sock.close()
            return
        self._lingering[sock] = _Linger(now + self.linger_timeout, body_deadline, budget)

    def _linger_readable(self, sock: socket.socket) -> None:
        linger = self._lingering.get(sock)
        if linger is None:
            return
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        before = linger.drained
        linger.drained += len(data)
        if not data or linger.drained >= linger.budget:
            self._close_lingering(sock)
        elif linger.drained // self.linger_max > before // self.linger_max:
            # another linger_max bytes: a client sending its body, not dripping it
            extended = min(time.monotonic() + self.linger_timeout, linger.last_deadline)
            linger.deadline = max(linger.deadline, extended)

    def _close_lingering(self, sock: socket.socket) -> None:
        del self._lingering[sock]
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(sock)
        with contextlib.suppress(OSError):
            sock.close()
