"""The lean transport keeps every bound of the old one: what it sends, how it reads, when it stops.

A node call is a plain socket exchange: no thread per call, no pool, no environment. These tests
pin what the driver-limits tests do not reach: the exact request on the wire, a truncated or
compressed answer, a send the node never reads, a TLS handshake dripped byte by byte, and many
calls cut at their deadlines at once. Real sockets on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from responder.drivers import DriverError
from responder.drivers.transport import Limits, Transport

Answer = Callable[[socket.socket, bytes], None]  # the connection and the request it read
DRIP = 0.2  # seconds between bytes: shorter than every per-read timeout below
MARGIN = 0.5


def _request(conn: socket.socket) -> bytes:
    """One whole request: headers and a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


class Server:
    """Accepts connections on 127.0.0.1; `read_first` reads the request before `answer` runs."""

    def __init__(self, answer: Answer, read_first: bool = True) -> None:
        self._answer = answer
        self._read_first = read_first
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._listener.settimeout(0.1)
        self.stop = threading.Event()
        self.requests: list[bytes] = []
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                request = _request(conn) if self._read_first else b""
                self.requests.append(request)
                self._answer(conn, request)
            except OSError:
                pass  # the client hung up: what these servers are for

    def close(self) -> None:
        self.stop.set()
        self._accepting.join(5)
        self._listener.close()
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def start(answer: Answer, read_first: bool = True) -> Server:
        made.append(Server(answer, read_first))
        return made[-1]

    yield start
    for server in made:
        server.close()


def reply(raw: bytes) -> Answer:
    def answer(conn: socket.socket, _request: bytes) -> None:
        conn.sendall(raw)

    return answer


def http(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body)
    return head + b"".join(h + b"\r\n" for h in extra) + b"\r\n" + body


def transport(total: float = 1.0, cap: int = 1024 * 1024, **kw: bool | str) -> Transport:
    half = total / 2
    return Transport(limits=Limits(connect_timeout=half, timeout=half, max_bytes=cap), **kw)  # type: ignore[arg-type]


def timed(call: Callable[[], object]) -> tuple[DriverError, float]:
    start = time.monotonic()
    with pytest.raises(DriverError) as info:
        call()
    return info.value, time.monotonic() - start


# ---- what goes on the wire ------------------------------------------------------------------


def test_the_request_on_the_wire(serve: Callable[..., Server]) -> None:
    """JSON body with its length, identity encoding, Connection: close, the caller's headers win."""
    server = serve(reply(http(b'{"signing": false}')))
    url = f"http://127.0.0.1:{server.port}/fence?x=1"
    headers = {"User-Agent": "responder", "Authorization": "Bearer t0ken", "Accept": "a/b"}
    answer = transport().request("POST", url, headers=headers, body={"pair": "p"})
    assert answer.status == 200 and answer.json() == {"signing": False}
    [raw] = server.requests
    head, _, body = raw.partition(b"\r\n\r\n")
    line, *fields = head.decode().split("\r\n")
    sent = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
    assert line == "POST /fence?x=1 HTTP/1.1"
    assert json.loads(body) == {"pair": "p"}
    assert sent == {
        "host": f"127.0.0.1:{server.port}",
        "accept-encoding": "identity",
        "user-agent": "responder",
        "authorization": "Bearer t0ken",
        "accept": "a/b",
        "content-type": "application/json",
        "content-length": str(len(body)),
        "connection": "close",
    }


def test_every_call_has_its_own_connection_and_no_thread(serve: Callable[..., Server]) -> None:
    """Three calls, three connections; no call leaves or starts a thread of its own."""
    server = serve(reply(http(b"{}", b"Connection: keep-alive")))
    client = transport()
    before = threading.active_count()
    for _ in range(3):
        assert client.request("GET", f"http://127.0.0.1:{server.port}/", headers={}).status == 200
    assert len(server.requests) == 3
    assert threading.active_count() - before <= 3  # the server's own handler threads at most
    assert not [t for t in threading.enumerate() if t.name.startswith("responder-")]


def test_a_header_with_a_line_break_is_refused(serve: Callable[..., Server]) -> None:
    """A token read from a file with CR/LF in it cannot inject headers: the call is refused."""
    server = serve(reply(http(b"{}")))
    url = f"http://127.0.0.1:{server.port}/"
    with pytest.raises(DriverError, match="failed: InvalidHeader"):
        transport().request("GET", url, headers={"Authorization": "Bearer a\r\nX-Evil: 1"})
    assert server.requests == []


def test_a_redirect_is_returned_not_followed(serve: Callable[..., Server]) -> None:
    """A 307 to elsewhere is the answer: a node call never lands anywhere but the node."""
    elsewhere = serve(reply(http(b"{}")))
    location = b"Location: http://127.0.0.1:%d/" % elsewhere.port
    server = serve(
        reply(b"HTTP/1.1 307 Temporary\r\n" + location + b"\r\nContent-Length: 0\r\n\r\n")
    )
    answer = transport().request("POST", f"http://127.0.0.1:{server.port}/", headers={}, body={})
    assert answer.status == 307
    assert elsewhere.requests == []


# ---- what comes back --------------------------------------------------------------------------


def test_an_answer_shorter_than_its_content_length_is_refused(serve: Callable[..., Server]) -> None:
    """A node that closes after half the declared body gave no answer, not a truncated one."""
    server = serve(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b'{"signing": '))
    with pytest.raises(DriverError, match="failed: ProtocolError"):
        transport().request("GET", f"http://127.0.0.1:{server.port}/", headers={})


def test_a_compressed_answer_is_decoded_within_the_cap(serve: Callable[..., Server]) -> None:
    """A node that gzips despite `identity` is read; a gzip bomb stops at the cap, decoded."""
    small = gzip.compress(b'{"signing": true}')
    server = serve(reply(http(small, b"Content-Encoding: gzip")))
    url = f"http://127.0.0.1:{server.port}/"
    assert transport().request("GET", url, headers={}).json() == {"signing": True}
    bomb = gzip.compress(b" " * (64 * 1024 * 1024))  # 64 KiB on the wire
    server = serve(reply(http(bomb, b"Content-Encoding: gzip")))
    url = f"http://127.0.0.1:{server.port}/"
    with pytest.raises(DriverError, match="answer larger than 1048576 bytes"):
        transport().request("GET", url, headers={})


# ---- when it stops ----------------------------------------------------------------------------


def test_a_send_the_node_never_reads_ends_at_the_deadline(serve: Callable[..., Server]) -> None:
    """A node that accepts and never reads blocks a large send: the call still ends in time."""
    stop = threading.Event()

    def never_read(_conn: socket.socket, _request: bytes) -> None:
        stop.wait(10)

    server = serve(never_read, read_first=False)
    body = {"slashing_protection": "x" * (64 * 1024 * 1024)}  # more than loopback buffers hold
    url = f"http://127.0.0.1:{server.port}/eth/v1/keystores"
    try:
        error, elapsed = timed(lambda: transport().request("POST", url, headers={}, body=body))
    finally:
        stop.set()
    assert "no complete answer within 1s" in str(error) or "timed out after 0.5s" in str(error)
    assert elapsed <= 1.0 + MARGIN, elapsed


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    cert = directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
         str(directory / "key.pem"), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert


def drip_handshake(conn: socket.socket, _request: bytes) -> None:
    """A TLS record header announcing a ServerHello, then its bytes one per DRIP."""
    conn.sendall(b"\x16\x03\x03\x00\x40")
    for _ in range(0x40):
        time.sleep(DRIP)
        conn.sendall(b"\x02")


@pytest.mark.parametrize("total", [1.0, 0.3], ids=["connect-timeout", "total-below-it"])
def test_a_dripped_tls_handshake_ends_in_time(
    serve: Callable[..., Server], certificate: Path, total: float
) -> None:
    """The handshake is bounded by connect_timeout and by the total deadline, whichever is first."""
    server = serve(drip_handshake, read_first=False)
    limits = Limits(connect_timeout=0.5, timeout=0.5, max_bytes=1024, total=total)
    client = Transport(limits=limits, verify=str(certificate))
    url = f"https://127.0.0.1:{server.port}/"
    error, elapsed = timed(lambda: client.request("GET", url, headers={}))
    bound = min(total, 0.5)
    assert bound - 0.05 <= elapsed <= bound + MARGIN, elapsed
    expected = "timed out connecting after 0.5s" if total > 0.5 else "no complete answer within"
    assert expected in str(error)


def test_many_dripped_calls_at_once_each_end_at_their_deadline(
    serve: Callable[..., Server],
) -> None:
    """Fifty calls dripped in parallel: each is cut at its own deadline, none outlives it."""
    stop = threading.Event()

    def drip(conn: socket.socket, _request: bytes) -> None:
        for byte in http(b'{"signing": false}'):
            if stop.wait(DRIP):
                return
            conn.sendall(bytes([byte]))

    server = serve(drip)
    client = transport()
    url = f"http://127.0.0.1:{server.port}/status"
    results: list[tuple[str, float]] = []

    def call() -> None:
        error, elapsed = timed(lambda: client.request("GET", url, headers={}))
        results.append((str(error), elapsed))

    threads = [threading.Thread(target=call) for _ in range(50)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    finally:
        stop.set()
    assert len(results) == 50
    for error, elapsed in results:
        assert "no complete answer within 1s" in error
        assert 1.0 - 0.05 <= elapsed <= 1.0 + 2 * MARGIN, elapsed
