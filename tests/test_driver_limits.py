"""Node calls are bounded: a total deadline, a byte cap, TLS and proxies not taken from the env.

These tests talk to real servers on 127.0.0.1 (raw sockets where a server must misbehave in ways
an HTTP framework would not allow) and wait on real sockets.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from responder.config import (
    CommandDriverConfig,
    HttpDriverConfig,
    HttpFenceConfig,
    KeymanagerDriverConfig,
    LivenessConfig,
    PairConfig,
)
from responder.drivers import ActionContext, DriverError
from responder.drivers.command import COMMAND_MAX_BYTES, CommandDriver
from responder.drivers.http import HttpDriver, HttpFencer
from responder.drivers.keymanager import HISTORY_KEY, KeymanagerDriver
from responder.drivers.transport import (
    AGENT_MAX_BYTES,
    BEACON_MAX_BYTES,
    KEYMANAGER_BYTES_PER_KEY,
    KEYMANAGER_MAX_BYTES,
)
from responder.liveness import BeaconClient

ROOT = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"
KEYS = ["0x" + c * 96 for c in ("a", "b")]
KS = "/eth/v1/keystores"
DRIP_INTERVAL = 0.2  # seconds between bytes: shorter than every per-read timeout below
HUGE = 200 * 1024 * 1024  # what the huge server would send if nobody stopped reading
# every call site below: connect_timeout 0.5s + timeout 0.5s (liveness: timeout 1s)
TOTAL = 1.0
MARGIN = 0.5


def history() -> str:
    return json.dumps(
        {
            "metadata": {"interchange_format_version": "5", "genesis_validators_root": ROOT},
            "data": [{"pubkey": k, "signed_blocks": [], "signed_attestations": []} for k in KEYS],
        }
    )


CTX = ActionContext(
    pair="p",
    node="node-a",
    failover_id="p-1",
    source="node-a",
    target="node-b",
    reason="test",
    handoff={HISTORY_KEY: history()},
)


# ---- servers -------------------------------------------------------------------------------


def _read_request(conn: socket.socket) -> None:
    """Consume one request (headers and a Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk


class RawServer:
    """A TCP server on 127.0.0.1 that reads each request and then runs `answer(conn, stop)`."""

    def __init__(self, answer: Callable[[socket.socket, threading.Event], None]) -> None:
        self._answer = answer
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.stopped = threading.Event()
        self.connections = 0
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def start(self) -> RawServer:
        self._accepting.start()
        return self

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                _read_request(conn)
                self._answer(conn, self.stopped)
            except OSError:
                pass  # the client hung up: that is what these servers are for

    def stop(self) -> None:
        self.stopped.set()
        self._accepting.join(5)
        self._listener.close()
        for thread in self._threads:
            thread.join(5)


def _answer(body: bytes = b'{"signing": false}') -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def drip(whole: bool) -> Callable[[socket.socket, threading.Event], None]:
    """One byte every DRIP_INTERVAL: the whole answer (status line and headers too), or the
    headers at once and then the body. Stops after ~20s so a broken client fails, not hangs."""

    def answer(conn: socket.socket, stop: threading.Event) -> None:
        text = _answer(b'{"signing": false, "pad": "' + b"x" * 100 + b'"}')
        head, sep, body = text.partition(b"\r\n\r\n")
        if not whole:
            conn.sendall(head + sep)
            text = body
        for byte in text:
            if stop.wait(DRIP_INTERVAL):
                return
            conn.sendall(bytes([byte]))

    return answer


def huge(declared: bool) -> Callable[[socket.socket, threading.Event], None]:
    """A 200 MB body, with its Content-Length or close-delimited, sent as fast as it is read."""

    def answer(conn: socket.socket, stop: threading.Event) -> None:
        length = f"Content-Length: {HUGE}\r\n" if declared else "Connection: close\r\n"
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}\r\n".encode())
        block = b"[" * 65536  # also the worst JSON: nested beyond any parser's depth
        for _ in range(HUGE // len(block)):
            if stop.is_set():
                return
            conn.sendall(block)

    return answer


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket, threading.Event], None]], str]]:
    made: list[RawServer] = []

    def start(answer: Callable[[socket.socket, threading.Event], None]) -> str:
        server = RawServer(answer).start()
        made.append(server)
        return server.url

    yield start
    for server in made:
        server.stop()


# ---- every place that calls a node -------------------------------------------------------


def keymanager(url: str, tmp_path: Path, **driver: Any) -> KeymanagerDriver:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(exist_ok=True)
    keystores = []
    for i, key in enumerate(KEYS):
        ks = keys_dir / f"keystore-{i}.json"
        ks.write_text(json.dumps({"pubkey": key[2:], "version": 4, "crypto": {}}))
        pw = keys_dir / f"password-{i}.txt"
        pw.write_text(f"pw-{i}\n")
        keystores.append({"pubkey": key, "keystore_file": str(ks), "password_file": str(pw)})
    node_driver = {"type": "ethereum-keymanager", "url": url} | driver
    pair = PairConfig.model_validate(
        {
            "name": "p",
            "nodes": [
                {"name": n, "match": {"node": n}, "driver": node_driver}
                for n in ("node-a", "node-b")
            ],
            "policy": {"triggers": ["X"]},
            "ethereum": {"genesis_validators_root": ROOT, "pubkeys": KEYS, "keystores": keystores},
        }
    )
    assert isinstance(pair.nodes[0].driver, KeymanagerDriverConfig)
    return KeymanagerDriver("node-a", pair.nodes[0].driver, pair)


def beacon(url: str, **tls: Any) -> BeaconClient:
    config = LivenessConfig.model_validate(
        {"beacon_url": url, "validator_indices": [7], "timeout": TOTAL} | tls
    )
    return BeaconClient(config, ROOT)


def http_driver(url: str, **extra: Any) -> HttpDriver:
    return HttpDriver(
        "node-a",
        HttpDriverConfig(type="http", url=url, connect_timeout=0.5, timeout=0.5, **extra),
    )


SITES: dict[str, Callable[[str, Path], Callable[[], object]]] = {
    "http-status": lambda url, _t: http_driver(url).status,
    "http-fence": lambda url, _t: lambda: http_driver(url).fence(CTX),
    "http-activate": lambda url, _t: lambda: http_driver(url).activate(CTX),
    "http-fence-level": lambda url, _t: (
        lambda: HttpFencer(
            "node-a",
            0,
            HttpFenceConfig(type="http", url=url + "/off", connect_timeout=0.5, timeout=0.5),
        ).fence(CTX)
    ),
    "keymanager-get": lambda url, t: keymanager(url, t, connect_timeout=0.5, timeout=0.5).status,
    "keymanager-delete": lambda url, t: (
        lambda: keymanager(url, t, connect_timeout=0.5, timeout=0.5).fence(CTX)
    ),
    "keymanager-post": lambda url, t: (
        lambda: keymanager(url, t, connect_timeout=0.5, timeout=0.5).activate(CTX)
    ),
    "beacon-genesis": lambda url, _t: beacon(url).chain,
    "beacon-liveness": lambda url, _t: lambda: beacon(url).liveness(5),
}
CAPS = {
    "http": AGENT_MAX_BYTES,
    "keymanager": KEYMANAGER_MAX_BYTES + KEYMANAGER_BYTES_PER_KEY * len(KEYS),
    "beacon": BEACON_MAX_BYTES,
}


def timed(call: Callable[[], object]) -> tuple[DriverError, float]:
    start = time.monotonic()
    with pytest.raises(DriverError) as info:
        call()
    return info.value, time.monotonic() - start


@pytest.mark.parametrize("whole", [True, False], ids=["drip-status-line", "drip-body"])
@pytest.mark.parametrize("site", list(SITES))
def test_node_answer_dripped_ends_at_the_total_deadline(
    raw_server, tmp_path: Path, site: str, whole: bool
) -> None:
    """An answer dripped one byte per 0.2s (per-read timeout never fires) is cut at connect_timeout + timeout."""
    call = SITES[site](raw_server(drip(whole)), tmp_path)
    error, elapsed = timed(call)
    assert f"no complete answer within {TOTAL:g}s" in str(error)
    assert TOTAL - 0.05 <= elapsed <= TOTAL + MARGIN, elapsed


@pytest.mark.parametrize("site", list(SITES))
def test_node_answer_huge_is_refused_with_bounded_memory(
    raw_server, tmp_path: Path, site: str
) -> None:
    """A 200 MB close-delimited answer is refused at the driver's byte cap; memory stays near the cap."""
    cap = CAPS[site.split("-", maxsplit=1)[0]]
    call = SITES[site](raw_server(huge(declared=False)), tmp_path)
    tracemalloc.start()
    try:
        error, elapsed = timed(call)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"answer larger than {cap} bytes" in str(error)
    assert elapsed < TOTAL + MARGIN
    assert peak < 2 * cap + 1024 * 1024, peak  # the body read so far, never the body
    assert peak < HUGE // 20


@pytest.mark.parametrize("site", ["http-status", "keymanager-delete", "beacon-liveness"])
def test_node_answer_declared_too_large_is_refused_before_reading(
    raw_server, tmp_path: Path, site: str
) -> None:
    """A Content-Length above the cap is refused from the headers, without reading the body."""
    call = SITES[site](raw_server(huge(declared=True)), tmp_path)
    tracemalloc.start()
    try:
        error, _ = timed(call)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"(Content-Length {HUGE})" in str(error)
    assert peak < 1024 * 1024, peak


def test_keymanager_accepts_an_answer_above_the_agent_cap(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    """The keymanager cap leaves room for large clients: a 3 MiB listing (the http agent's cap is 1 MiB) is read."""
    others = [
        {"validating_pubkey": f"0x{i:096x}", "derivation_path": "m/12381/3600/0/0/0"}
        for i in range(20_000)
    ]
    others.append({"validating_pubkey": KEYS[0], "derivation_path": "m/12381/3600/0/0/0"})
    body = json.dumps({"data": others})
    assert AGENT_MAX_BYTES < len(body) < KEYMANAGER_MAX_BYTES
    httpserver.expect_request(KS, method="GET").respond_with_data(
        body, content_type="application/json"
    )
    status = keymanager(httpserver.url_for(""), tmp_path).status()
    assert status.signing is True and status.detail == "1 of 2 keys loaded"


def test_settle_time_covers_the_total_deadline(tmp_path: Path) -> None:
    """settle_time is at least the longest a call can now take: connect_timeout + timeout."""
    http = HttpDriver(
        "a", HttpDriverConfig(type="http", url="http://127.0.0.1:1", connect_timeout=2, timeout=3)
    )
    assert http.settle_time == 5
    km = keymanager("http://127.0.0.1:1", tmp_path, connect_timeout=2, timeout=3)
    assert km.settle_time == 5 + len(KEYS)  # plus one second per key imported


# ---- TLS and proxies are the config's, not the environment's ------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def https_server(certificate: tuple[Path, Path]) -> Iterator[HTTPServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.mark.parametrize("env", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
@pytest.mark.parametrize("tls", ["insecure_skip_verify", "ca_file"])
def test_tls_settings_are_not_overridden_by_the_environment(
    https_server: HTTPServer,
    certificate: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: str,
    tls: str,
) -> None:
    """With a bogus REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE set, the keymanager, beacon and http agent calls still use tls.ca_file / insecure_skip_verify."""
    monkeypatch.setenv(env, str(tmp_path / "no-such-ca.pem"))
    setting: dict[str, Any] = (
        {"insecure_skip_verify": True}
        if tls == "insecure_skip_verify"
        else {"ca_file": certificate[0]}
    )
    https_server.expect_request(KS, method="GET").respond_with_json(
        {"data": [{"validating_pubkey": KEYS[0]}]}
    )
    https_server.expect_request("/eth/v1/beacon/genesis").respond_with_json(
        {"data": {"genesis_time": "1606824023", "genesis_validators_root": ROOT}}
    )
    url = https_server.url_for("").rstrip("/")
    assert url.startswith("https://")
    https_server.expect_request("/status").respond_with_json({"healthy": True, "signing": True})
    assert keymanager(url, tmp_path, tls=setting).status().signing is True
    assert beacon(url, tls=setting).chain().genesis_time == 1606824023
    assert http_driver(url, tls=setting).status().signing is True


def test_tls_verification_stays_on_without_tls_settings(
    https_server: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ca_file or insecure_skip_verify a self-signed certificate is refused, env or not."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "no-such-ca.pem"))
    url = https_server.url_for("").rstrip("/")
    with pytest.raises(DriverError, match=r"TLS verification failed \(see tls.ca_file\)"):
        keymanager(url, tmp_path).status()


def test_environment_proxies_do_not_reach_node_calls(
    raw_server, httpserver: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP(S)_PROXY in the environment is ignored: node calls go straight to the node."""
    proxied: list[bool] = []

    def proxy(conn: socket.socket, _stop: threading.Event) -> None:
        proxied.append(True)

    proxy_url = raw_server(proxy)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, proxy_url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    httpserver.expect_request("/status").respond_with_json({"healthy": True, "signing": False})
    httpserver.expect_request(KS).respond_with_json({"data": []})
    assert http_driver(httpserver.url_for("")).status().signing is False
    assert keymanager(httpserver.url_for(""), tmp_path).status().signing is False
    assert proxied == []


# ---- commands --------------------------------------------------------------------------------


def command(status: list[str], timeout: float = 5) -> CommandDriver:
    return CommandDriver(
        "a",
        CommandDriverConfig(
            type="command", status=status, fence=["true"], activate=["true"], timeout=timeout
        ),
    )


def test_command_output_without_limits_is_refused() -> None:
    """A status command printing 200 MB is killed at the output cap; memory stays near the cap."""
    code = "import sys\nblock = b'x' * 65536\nfor _ in range(3200): sys.stdout.buffer.write(block)"
    tracemalloc.start()
    try:
        error, elapsed = timed(command([sys.executable, "-c", code]).status)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"wrote more than {COMMAND_MAX_BYTES} bytes to stdout" in str(error)
    assert elapsed < 5
    assert peak < 3 * COMMAND_MAX_BYTES, peak


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie no one reaped yet is dead too


def test_command_timeout_kills_what_it_started(tmp_path: Path) -> None:
    """On timeout the command's whole process group dies: a child holding its stdout does not outlive it."""
    pidfile = tmp_path / "child.pid"
    script = f"sleep 30 & echo $! > {pidfile}; wait"
    error, elapsed = timed(command(["/bin/sh", "-c", script], timeout=0.5).status)
    assert "timed out after 0.5s and was killed" in str(error)
    assert elapsed < 0.5 + MARGIN
    child = int(pidfile.read_text())
    for _ in range(50):
        if _gone(child):
            break
        time.sleep(0.05)
    assert _gone(child), f"child {child} survived"


def test_no_leftover_threads_from_finished_calls(httpserver: HTTPServer) -> None:
    """A call that finished in time leaves no deadline watchdog behind."""
    httpserver.expect_request("/status").respond_with_json({"healthy": True, "signing": True})
    driver = http_driver(httpserver.url_for(""))
    for _ in range(5):
        driver.status()
    time.sleep(0.1)
    assert not [t for t in threading.enumerate() if t.name == "responder-deadline"]
