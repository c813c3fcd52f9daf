"""Bounded HTTP calls to node APIs: every answer has a byte cap and a total deadline.

A plain HTTP client bounds neither: its timeout applies to each socket read (a node dripping
one byte a second keeps a call open forever) and it reads a whole body into memory. Every
driver and the liveness client therefore call nodes through `Transport`, which

- streams the answer and stops at `max_bytes` (a larger answer is refused, not truncated);
- enforces one deadline for the whole call, connect + send + headers + body, of
  `connect_timeout + timeout` seconds: every wait on the call's socket (connect, TLS
  handshake, each send and each read) is bounded by the time left, so a drip in the status
  line, the headers, the TLS handshake or the body ends the call when the deadline passes.
  No thread is involved: a call costs what its socket calls cost;
- uses a fresh connection per call (`Connection: close`, no pool: node calls are a few a
  minute, and no call ever inherits a socket another call left in an unknown state);
- verifies TLS as configured and ignores the environment: no REQUESTS_CA_BUNDLE,
  CURL_CA_BUNDLE or SSL_CERT_FILE replaces `tls.ca_file` / `insecure_skip_verify`, no
  HTTP(S)_PROXY sends keystores, passwords and tokens through a proxy, no ~/.netrc adds
  credentials. Node APIs sit on private networks or loopback and are reached directly;
- never follows a redirect, and asks for the identity encoding.

Deadlines use the real monotonic clock, not the injected one: they bound real socket waits.

Error answers from nodes are never copied verbatim into reasons (a client echoing its request
would leak keystores and passwords): `error_summary` keeps at most a short, scrubbed summary.
"""

from __future__ import annotations

import functools
import http.client
import io
import json
import os
import re
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import certifi
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from .base import DriverError

MiB = 1024 * 1024
AGENT_MAX_BYTES = 1 * MiB  # http node agent and http fence levels: small JSON objects
KEYMANAGER_MAX_BYTES = 4 * MiB  # keymanager answers: a listing of every key the client holds
KEYMANAGER_BYTES_PER_KEY = 256 * 1024  # ...plus, per pair key, its EIP-3076 history
BEACON_MAX_BYTES = 1 * MiB  # beacon genesis and liveness answers
_CHUNK = 64 * 1024
_USER_AGENT = "responder"
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def tls_verify(ca_file: Path | None, insecure: bool) -> bool | str:
    """The transport's `verify`: a CA file, or False only when explicitly asked for (lab use)."""
    if insecure:
        return False
    return str(ca_file) if ca_file is not None else True


@dataclass(frozen=True)
class Limits:
    """How long a call may take and how large its answer may be."""

    connect_timeout: float
    timeout: float  # per socket read
    max_bytes: int
    # the longest a call takes, start to last byte (what settle_time must cover);
    # 0 means connect_timeout + timeout
    total: float = 0.0

    def __post_init__(self) -> None:
        if self.total <= 0:
            object.__setattr__(self, "total", self.connect_timeout + self.timeout)


@dataclass(frozen=True)
class Answer:
    """A complete answer, read within the limits."""

    status: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON; ValueError if it is not (or nests too deeply to parse)."""
        try:
            return json.loads(self.body)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


# ---- one call's socket, bounded by its deadline --------------------------------------------


class _Bounded:
    """The socket of one call, as http.client sees it: every wait ends by the deadline.

    Each send and read first sets the socket timeout to the smaller of its own limit and the
    time left, so no single wait (nor any sequence of them) outlasts the call's deadline.
    """

    __slots__ = ("capped", "deadline", "limit", "sock")

    def __init__(self, sock: socket.socket, deadline: float, limit: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.limit = limit
        self.capped = False  # the last wait was bounded by the deadline, not by `limit`

    def arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.capped = True
            raise TimeoutError("deadline passed")
        self.capped = left <= self.limit
        self.sock.settimeout(self.limit if left > self.limit else left)

    def sendall(self, data: bytes) -> None:
        view = memoryview(data).cast("B")
        while view:
            self.arm()
            view = view[self.sock.send(view) :]

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_Reader(self))

    def close(self) -> None:
        """http.client closes its side; the call closes the real socket when it ends."""


class _Reader(io.RawIOBase):
    def __init__(self, bounded: _Bounded) -> None:
        super().__init__()
        self._bounded = bounded

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._bounded.arm()
        return self._bounded.sock.recv_into(buffer)


class _Connection(http.client.HTTPConnection):
    """http.client's request writing and answer parsing over a socket the call made."""

    def __init__(self, host: str, port: int, bounded: _Bounded) -> None:
        super().__init__(host, port)
        self.sock = bounded  # what http.client uses of a socket: sendall, makefile, close

    def connect(self) -> None:  # never reconnects: one connection per call
        raise http.client.NotConnected("connection already used")


# ---- what a URL and a verify setting resolve to, made once --------------------------------


class _Target(NamedTuple):
    tls: bool
    authority: str  # the Host header: host (IPv6 in brackets) and a port that is not the default
    address: str  # what to connect to and verify: no brackets, no trailing dot
    port: int
    path: str  # path and query, percent-encoded


@functools.lru_cache(maxsize=4096)
def _target(url: str) -> _Target:
    parsed = parse_url(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise LocationParseError(url)
    if parsed.auth:  # the config refuses credentials in URLs; never send them
        raise LocationParseError("credentials in the URL")
    tls = parsed.scheme == "https"
    address = parsed.host.strip("[]").rstrip(".")
    default = 443 if tls else 80
    port = parsed.port if parsed.port is not None else default
    authority = parsed.host if port == default else f"{parsed.host}:{port}"
    return _Target(tls, authority, address, port, parsed.request_uri)


_CONTEXTS: dict[tuple[bool | str, int, int], ssl.SSLContext] = {}
_CONTEXTS_LOCK = threading.Lock()


def _tls_context(verify: bool | str) -> ssl.SSLContext:
    """One context per verify setting and CA file version: loading a CA bundle costs
    milliseconds, and a CA file replaced on disk is still picked up by the next call."""
    if verify is False:
        key: tuple[bool | str, int, int] = (False, 0, 0)
    else:
        cafile = certifi.where() if verify is True else verify
        stat = os.stat(cafile)
        key = (cafile, stat.st_mtime_ns, stat.st_size)
    context = _CONTEXTS.get(key)
    if context is not None:
        return context
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_TICKET
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cafile=str(key[0]))
    with _CONTEXTS_LOCK:
        if len(_CONTEXTS) > 64:  # CA files rewritten over and over: drop the old versions
            _CONTEXTS.clear()
        return _CONTEXTS.setdefault(key, context)


class _Failed(Exception):
    """A call ended without a complete answer; `message` follows "METHOD URL"; `late`: it
    ended because the deadline passed."""

    def __init__(self, message: str, late: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.late = late


# ---- the transport -----------------------------------------------------------------------


class Transport:
    """Bounded calls to one node API (see the module docstring)."""

    def __init__(self, *, limits: Limits, verify: bool | str = True, tls_hint: str = "") -> None:
        self.limits = limits
        self.verify = verify
        self._tls_hint = tls_hint

    def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: Any = None
    ) -> Answer:
        """Send one request; return the complete answer or raise DriverError saying why not."""
        what = f"{method} {url}"
        deadline = time.monotonic() + self.limits.total
        sock: socket.socket | None = None
        try:
            try:
                target = _target(url)
            except LocationParseError:
                raise _Failed(" failed: InvalidURL") from None
            payload = self._payload(body)
            context = self._context() if target.tls else None
            sock = self._connect(target, context, deadline)
            return self._exchange(
                what, method, target, headers=headers, payload=payload, sock=sock, deadline=deadline
            )
        except _Failed as failed:
            if failed.late or time.monotonic() >= deadline:
                raise self._late(what) from None
            raise DriverError(what + failed.message) from None
        finally:
            if sock is not None:
                sock.close()

    @staticmethod
    def _payload(body: Any) -> bytes | None:
        if body is None:
            return None
        try:
            return json.dumps(body, allow_nan=False).encode("utf-8")
        except ValueError:
            raise _Failed(" failed: InvalidJSONError") from None

    def _context(self) -> ssl.SSLContext:
        try:
            return _tls_context(self.verify)
        except ssl.SSLError:
            raise _Failed(f": TLS verification failed{self._tls_hint}") from None
        except OSError as exc:  # e.g. an unreadable tls.ca_file
            raise _Failed(f" failed: {exc}{self._tls_hint}") from None

    def _connect(
        self, target: _Target, context: ssl.SSLContext | None, deadline: float
    ) -> socket.socket:
        """A connected socket (TLS verified), within connect_timeout and the deadline."""
        limit = min(self.limits.connect_timeout, max(deadline - time.monotonic(), 0.001))
        timed_out = f" timed out connecting after {self.limits.connect_timeout:g}s"
        try:
            sock = socket.create_connection((target.address, target.port), timeout=limit)
        except TimeoutError:
            raise _Failed(timed_out) from None
        except socket.gaierror:
            raise _Failed(" failed to connect: NameResolutionError") from None
        except OSError:
            raise _Failed(" failed to connect: NewConnectionError") from None
        bounded = _Bounded(sock, deadline, self.limits.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is None:
                return sock
            bounded.arm()  # the whole handshake is one wait (the ssl module's own deadline)
            return context.wrap_socket(sock, server_hostname=target.address)
        except TimeoutError:
            sock.close()
            raise _Failed(timed_out, late=bounded.capped) from None
        except ssl.SSLError:
            sock.close()
            raise _Failed(f": TLS verification failed{self._tls_hint}") from None
        except OSError:
            sock.close()
            raise _Failed(" failed: ConnectionError") from None

    def _exchange(
        self,
        what: str,
        method: str,
        target: _Target,
        *,
        headers: Mapping[str, str],
        payload: bytes | None,
        sock: socket.socket,
        deadline: float,
    ) -> Answer:
        """Send the request and read the complete answer, within the deadline."""
        bounded = _Bounded(sock, deadline, self.limits.timeout)
        conn = _Connection(target.address, target.port, bounded)
        sent = {"accept-encoding", "host"}
        try:
            conn.putrequest(method, target.path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", target.authority)
            conn.putheader("Accept-Encoding", "identity")
            for name, value in headers.items():
                lower = name.lower()
                if lower in ("host", "accept-encoding", "connection", "content-length"):
                    continue
                sent.add(lower)
                conn.putheader(name, value)
            if "user-agent" not in sent:
                conn.putheader("User-Agent", _USER_AGENT)
            if "accept" not in sent:
                conn.putheader("Accept", "*/*")
            if payload is not None and "content-type" not in sent:
                conn.putheader("Content-Type", "application/json")
            if payload is not None or method not in _NO_BODY_METHODS:
                conn.putheader("Content-Length", str(len(payload or b"")))
            conn.putheader("Connection", "close")
        except http.client.InvalidURL:  # a path http.client refuses (spaces, controls)
            raise _Failed(" failed: InvalidURL") from None
        except ValueError:  # a header http.client refuses (CR/LF: header injection)
            raise _Failed(" failed: InvalidHeader") from None
        try:
            conn.endheaders(payload)
            resp = conn.getresponse()
        except (http.client.HTTPException, OSError) as exc:
            raise self._failure(exc, bounded, " failed: ConnectionError") from None
        try:
            return Answer(resp.status, self._read(what, resp, deadline))
        except (http.client.HTTPException, OSError, zlib.error) as exc:
            raise self._failure(exc, bounded, " failed: ProtocolError") from None
        finally:
            resp.close()

    def _read(self, what: str, resp: http.client.HTTPResponse, deadline: float) -> bytes:
        """The whole body, refused (never truncated) above max_bytes."""
        cap = self.limits.max_bytes
        declared = resp.getheader("Content-Length", "") or ""
        if declared.isdigit() and int(declared) > cap:
            raise DriverError(
                f"{what}: answer larger than {cap} bytes (Content-Length {declared}); "
                "connection closed"
            )
        decoder = _decoder(resp.getheader("Content-Encoding", "") or "")
        buf = bytearray()
        while True:
            chunk = resp.read(_CHUNK)
            if not chunk:
                break
            if decoder is not None:
                chunk = decoder.decompress(chunk, cap - len(buf) + 1)
            if len(buf) + len(chunk) > cap:
                raise DriverError(f"{what}: answer larger than {cap} bytes; connection closed")
            buf += chunk
            if time.monotonic() > deadline:
                raise self._late(what)
        if resp.length:  # the connection closed before the declared length arrived
            raise http.client.IncompleteRead(bytes(buf), resp.length)
        if decoder is not None:
            buf += decoder.flush()
            if len(buf) > cap:
                raise DriverError(f"{what}: answer larger than {cap} bytes; connection closed")
        return bytes(buf)

    def _late(self, what: str) -> DriverError:
        return DriverError(
            f"{what}: no complete answer within {self.limits.total:g}s; connection closed"
        )

    def _failure(self, exc: BaseException, bounded: _Bounded, otherwise: str) -> _Failed:
        if isinstance(exc, TimeoutError):
            if bounded.capped:  # the deadline, not the read timeout, ended the wait
                return _Failed("", late=True)
            return _Failed(f" timed out after {self.limits.timeout:g}s")
        if isinstance(exc, ssl.SSLError):
            return _Failed(f": TLS verification failed{self._tls_hint}")
        return _Failed(otherwise)


def _decoder(encoding: str) -> Any:
    """A bounded decompressor for a node that compresses despite `identity`, or None."""
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    return None


# ---- what an error answer may tell -------------------------------------------------------

SUMMARY_CHARS = 120
# a word after which a node's message may quote secret material: the rest is dropped
_SENSITIVE = re.compile(
    r"(?i)(passwords?|passphrase|keystores?|secret|token|mnemonic|private[ _-]?key|crypto"
    r"|cipher|bearer|authorization|signature)"
)
_LONG_RUN = re.compile(r"[A-Za-z0-9+/=_\-]{24,}")  # hex / base64: keys, ciphertext, tokens
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """A node-supplied message made safe to keep: no known secret, nothing after a word that
    announces one, no JSON echo, no long hex/base64 run; at most SUMMARY_CHARS characters."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _CONTROL.sub(" ", text)
    text = re.split(r"[{\[]", text, maxsplit=1)[0]  # an echoed JSON document
    match = _SENSITIVE.search(text)
    if match is not None:
        text = text[: match.end()] + " …"
    text = _LONG_RUN.sub("…", text)
    text = " ".join(text.split())
    if len(text) > SUMMARY_CHARS:
        text = text[: SUMMARY_CHARS - 1] + "…"
    return text


def error_summary(answer: Answer, secrets: Iterable[str] = ()) -> str:
    """': <scrubbed message>' from a JSON error answer's "message" field, or ''.

    The body itself is never quoted: only a JSON "message" string, scrubbed.
    """
    try:
        data = answer.json()
    except ValueError:
        return ""
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, str):
        return ""
    text = scrub(message, secrets)
    return f": {text!r}" if text else ""


__all__ = [
    "AGENT_MAX_BYTES",
    "BEACON_MAX_BYTES",
    "KEYMANAGER_BYTES_PER_KEY",
    "KEYMANAGER_MAX_BYTES",
    "SUMMARY_CHARS",
    "Answer",
    "Limits",
    "Transport",
    "error_summary",
    "scrub",
    "tls_verify",
]
