"""Bounded HTTP calls to node APIs: every answer has a byte cap and a total deadline.

`requests` alone bounds neither: its timeout applies to each socket read (a node dripping one
byte a second keeps a call open forever) and it reads a whole body into memory. Every driver
and the liveness client therefore call nodes through `Transport`, which

- streams the answer and stops at `max_bytes` (a larger answer is refused, not truncated);
- enforces one deadline for the whole call, connect + send + headers + body, of
  `connect_timeout + timeout` seconds: a watchdog shuts the socket down when it passes, so a
  drip in the status line, the headers, the TLS handshake or the body ends the call too;
- uses a fresh connection per call (no keep-alive: the watchdog may only ever cut the socket
  of its own call, and node calls are a few a minute);
- passes `verify` explicitly and ignores the environment (`trust_env = False`): with
  REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE set, requests would otherwise replace the configured
  `tls.ca_file` / `insecure_skip_verify`; HTTP(S)_PROXY would send keystores, passwords and
  tokens through a proxy; and ~/.netrc would add credentials. Node APIs sit on private
  networks or loopback and are reached directly.

Deadlines use the real monotonic clock, not the injected one: they bound real socket waits.

Error answers from nodes are never copied verbatim into reasons (a client echoing its request
would leak keystores and passwords): `error_summary` keeps at most a short, scrubbed summary.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .base import DriverError

MiB = 1024 * 1024
AGENT_MAX_BYTES = 1 * MiB  # http node agent and http fence levels: small JSON objects
KEYMANAGER_MAX_BYTES = 4 * MiB  # keymanager answers: a listing of every key the client holds
KEYMANAGER_BYTES_PER_KEY = 256 * 1024  # ...plus, per pair key, its EIP-3076 history
BEACON_MAX_BYTES = 1 * MiB  # beacon genesis and liveness answers
_CHUNK = 64 * 1024
_CUT_RETRY = 0.05  # seconds between attempts to cut a call whose socket is not open yet


def tls_verify(ca_file: Path | None, insecure: bool) -> bool | str:
    """requests' `verify`: a CA file, or False only when explicitly asked for (lab use)."""
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


# ---- the watchdog ------------------------------------------------------------------------


class _Watchdog:
    """Cuts the sockets of one call when its deadline passes."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[object] = []
        self.fired = False
        self._thread = threading.Thread(target=self._run, name="responder-deadline", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def attach(self, conn: object) -> None:
        with self._lock:
            self._conns.append(conn)

    def finish(self) -> None:
        """The call is over: never cut anything from now on."""
        with self._lock:
            self._done.set()

    def _run(self) -> None:
        if self._done.wait(self._seconds):
            return
        while True:  # the socket may not exist yet (name resolution): retry until the call ends
            with self._lock:
                if self._done.is_set():
                    return
                self.fired = True
                for conn in self._conns:
                    sock = getattr(conn, "sock", None)
                    if isinstance(sock, socket.socket):
                        # the plain socket's shutdown: wakes a blocked recv/send, TLS too
                        with contextlib.suppress(OSError):
                            socket.socket.shutdown(sock, socket.SHUT_RDWR)
            if self._done.wait(_CUT_RETRY):
                return


_active = threading.local()  # the watchdog of the call running on this thread


def _watch(conn: object) -> None:
    watchdog: _Watchdog | None = getattr(_active, "watchdog", None)
    if watchdog is not None:
        watchdog.attach(conn)


class _HTTPPool(HTTPConnectionPool):
    """Hands each connection to the running call's watchdog; never reuses a connection."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)
        _watch(conn)
        return conn

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            conn.close()
        super()._put_conn(None)


class _HTTPSPool(HTTPSConnectionPool):
    """As _HTTPPool, for https."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)
        _watch(conn)
        return conn

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            conn.close()
        super()._put_conn(None)


class _Adapter(HTTPAdapter):
    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


# ---- the transport -----------------------------------------------------------------------


class Transport:
    """Bounded calls to one node API (see the module docstring)."""

    def __init__(self, *, limits: Limits, verify: bool | str = True, tls_hint: str = "") -> None:
        self.limits = limits
        self.verify = verify
        self._tls_hint = tls_hint
        self._session = requests.Session()
        self._session.trust_env = False  # no env CA bundle, proxy or netrc (module docstring)
        self._session.verify = verify
        adapter = _Adapter()
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: Any = None
    ) -> Answer:
        """Send one request; return the complete answer or raise DriverError saying why not."""
        limits = self.limits
        what = f"{method} {url}"
        deadline = time.monotonic() + limits.total
        watchdog = _Watchdog(limits.total)
        _active.watchdog = watchdog
        watchdog.start()
        resp: requests.Response | None = None
        try:
            try:
                resp = self._session.request(
                    method,
                    url,
                    headers={"Accept-Encoding": "identity", **headers},
                    json=body,
                    timeout=(limits.connect_timeout, limits.timeout),
                    allow_redirects=False,
                    stream=True,
                    verify=self.verify,
                    proxies={},
                )
            except requests.RequestException as exc:
                raise self._failure(what, exc, watchdog) from None
            except OSError as exc:  # e.g. an unreadable tls.ca_file
                raise DriverError(f"{what} failed: {exc}{self._tls_hint}") from None
            finally:
                _active.watchdog = None
            data = self._read(what, resp, watchdog, deadline)
            return Answer(status=resp.status_code, body=data)
        finally:
            watchdog.finish()
            if resp is not None:
                resp.close()

    def _read(
        self, what: str, resp: requests.Response, watchdog: _Watchdog, deadline: float
    ) -> bytes:
        cap = self.limits.max_bytes
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise DriverError(
                f"{what}: answer larger than {cap} bytes (Content-Length {declared}); "
                "connection closed"
            )
        buf = bytearray()
        try:
            for chunk in resp.raw.stream(_CHUNK, decode_content=True):
                if len(buf) + len(chunk) > cap:
                    raise DriverError(f"{what}: answer larger than {cap} bytes; connection closed")
                buf += chunk
                if watchdog.fired or time.monotonic() > deadline:
                    raise self._late(what)
        except urllib3.exceptions.HTTPError as exc:
            raise self._failure(what, exc, watchdog) from None
        except OSError as exc:
            raise self._failure(what, exc, watchdog) from None
        if watchdog.fired:  # a cut socket reads as a clean end of a close-delimited body
            raise self._late(what)
        return bytes(buf)

    def _late(self, what: str) -> DriverError:
        return DriverError(
            f"{what}: no complete answer within {self.limits.total:g}s; connection closed"
        )

    def _failure(self, what: str, exc: BaseException, watchdog: _Watchdog) -> DriverError:
        if watchdog.fired:
            return self._late(what)
        lim = self.limits
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return DriverError(f"{what} timed out connecting after {lim.connect_timeout:g}s")
        if isinstance(exc, requests.Timeout | urllib3.exceptions.ReadTimeoutError):
            return DriverError(f"{what} timed out after {lim.timeout:g}s")
        if isinstance(exc, requests.exceptions.SSLError | urllib3.exceptions.SSLError):
            return DriverError(f"{what}: TLS verification failed{self._tls_hint}")
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        if isinstance(reason, urllib3.exceptions.NewConnectionError):
            return DriverError(f"{what} failed to connect: {type(reason).__name__}")
        return DriverError(f"{what} failed: {type(exc).__name__}")


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
