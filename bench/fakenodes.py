"""Instant fake node agents for the failover benchmarks: many nodes in one server process.

Every node lives under a path prefix, `http://HOST:PORT/<node-id>`, and speaks the generic
`http` driver's contract exactly as tests/fakenode.py answers it: `GET /status` gives
`{"signing", "healthy": true}`, `POST /fence` stops signing and answers `{"signing": false}`,
`POST /activate` starts it and answers `{"signing": true}`, all behind a bearer token (401
otherwise). A node whose id ends with `--signing-suffix` (default `node-a`) starts signing,
every other one as a standby; nodes come into being on their first call.

It runs as its own process (so it never shares the benchmark's or the responder's GIL) on one
asyncio loop with a hand-written HTTP/1.1 parser: an answer costs about 0.1 ms, so
what a benchmark measures is the responder. For every call it records when the request had
fully arrived and when the answer was handed to the socket, on the wall clock and on the
system-wide monotonic clock (comparable with other processes' `time.monotonic()`):

- `GET /_calls[?node=ID]` every recorded call, per node;
- `GET /_counts` how many fence, activate and status calls were answered in all, and how
  many nodes answered a status call at least once (`nodes_probed`);
- `GET /_health` 200 once serving (no token: the admin paths are for the benchmark).

Run: `python bench/fakenodes.py --listen 127.0.0.1:PORT --token-file FILE`, or from a
benchmark `with FakeNodes(workdir, token) as fakes: ...`, which starts and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from responder.lab import Proc, free_port

ACTIONS = {("GET", "status"), ("POST", "fence"), ("POST", "activate")}
MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024


@dataclass
class Node:
    signing: bool
    calls: list[dict[str, Any]] = field(default_factory=list)


class Farm:
    """The nodes, their state and their call records (one event loop: no locks needed)."""

    def __init__(self, token: str, signing_suffix: str) -> None:
        self.expected = f"Bearer {token}"
        self.signing_suffix = signing_suffix
        self.nodes: dict[str, Node] = {}
        self.counts = {"status": 0, "fence": 0, "activate": 0, "refused": 0, "other": 0}
        self.probed: set[str] = set()  # nodes that answered at least one status call

    def node(self, name: str) -> Node:
        found = self.nodes.get(name)
        if found is None:
            found = self.nodes[name] = Node(signing=name.endswith(self.signing_suffix))
        return found

    def handle(
        self, method: str, target: str, headers: dict[str, str]
    ) -> tuple[int, Any, Node | None, str]:
        """(status, JSON body, the node called or None, the action) for one request."""
        url = urlsplit(target)
        parts = url.path.strip("/").split("/")
        if parts[0].startswith("_"):
            status, answer = self._admin(parts[0], parse_qs(url.query))
            return status, answer, None, ""
        if len(parts) != 2 or (method, parts[1]) not in ACTIONS:
            self.counts["other"] += 1
            return 404, {"error": f"no {method} {url.path}"}, None, ""
        name, action = parts
        node = self.node(name)
        if headers.get("authorization") != self.expected:
            self.counts["refused"] += 1
            return 401, {"error": "unauthorized"}, node, action
        if action == "fence":
            node.signing = False
        elif action == "activate":
            node.signing = True
        self.counts[action] += 1
        body: dict[str, Any] = {"signing": node.signing}
        if action == "status":
            body["healthy"] = True
            self.probed.add(name)
        return 200, body, node, action

    def _admin(self, what: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        if what == "_health":
            return 200, {"status": "ok", "nodes": len(self.nodes)}
        if what == "_counts":
            return 200, {**self.counts, "nodes_probed": len(self.probed)}
        if what == "_calls":
            wanted = query.get("node")
            nodes = {
                name: node.calls
                for name, node in self.nodes.items()
                if wanted is None or name in wanted
            }
            return 200, {"nodes": nodes}
        return 404, {"error": f"no admin path {what}"}


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}


class Connection(asyncio.Protocol):
    """One client connection: requests parsed as they complete, answered in order."""

    def __init__(self, farm: Farm) -> None:
        self.farm = farm
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None and not self.transport.is_closing():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self._answer(400, {"error": "header too large"}, close=True)
                return
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            try:
                method, target, version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    key, _, value = line.partition(":")
                    headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
            except ValueError:
                self._answer(400, {"error": "bad request"}, close=True)
                return
            if length > MAX_BODY:
                self._answer(400, {"error": "body too large"}, close=True)
                return
            if len(self.buffer) < end + 4 + length:
                return  # the body is still on its way
            arrived, arrived_mono = time.time(), time.monotonic()
            del self.buffer[: end + 4 + length]
            status, body, node, action = self.farm.handle(method, target, headers)
            close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
            self._answer(status, body, close=close)
            if node is not None:
                node.calls.append(
                    {
                        "action": action,
                        "status": status,
                        "signing": node.signing,
                        "arrived": arrived,
                        "answered": time.time(),
                        "arrived_mono": arrived_mono,
                        "answered_mono": time.monotonic(),
                    }
                )

    def _answer(self, status: int, body: Any, *, close: bool) -> None:
        assert self.transport is not None
        payload = json.dumps(body).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
        )
        self.transport.write(head.encode("latin-1") + payload)
        if close:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int, farm: Farm) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(farm), host, port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


class FakeNodes:
    """The fake-node server as a child process in its own process group."""

    def __init__(self, workdir: Path, token: str) -> None:
        self.port = free_port()
        token_file = workdir / "fakenodes-token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        self.token = token
        argv = [
            sys.executable, __file__, "--listen", f"127.0.0.1:{self.port}",
            "--token-file", str(token_file),
        ]  # fmt: skip
        self.proc = Proc("fakenodes", argv, workdir / "fakenodes.log", self.url + "/_health")
        self.session = requests.Session()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeNodes:
        try:
            self.proc.start(30)
        except BaseException:
            self.proc.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()
        self.proc.stop()

    def _get(self, path: str) -> Any:
        resp = self.session.get(self.url + path, timeout=60)
        resp.raise_for_status()
        return resp.json()

    def counts(self) -> dict[str, int]:
        """Answered calls by action, over every node."""
        counts: dict[str, int] = self._get("/_counts")
        return counts

    def calls(self) -> dict[str, list[dict[str, Any]]]:
        """Every recorded call, per node id."""
        nodes: dict[str, list[dict[str, Any]]] = self._get("/_calls")["nodes"]
        return nodes

    def round_trips(self, count: int) -> list[float]:
        """Seconds per status call from here, each on a fresh connection as the responder's
        drivers make them: what the fakes add to a failover's time."""
        times = []
        headers = {"Authorization": f"Bearer {self.token}"}
        for _ in range(count):
            started = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", "/_rtt-probe/status", headers=headers)
                conn.getresponse().read()
            finally:
                conn.close()
            times.append(time.perf_counter() - started)
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--signing-suffix", default="node-a")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    farm = Farm(args.token_file.read_text().strip(), args.signing_suffix)
    asyncio.run(serve(host, int(port), farm))


if __name__ == "__main__":
    main()
