"""A simulated validator node (validator client, beacon node and node agent in one process).

End-to-end tests and the demo start one per node so that real Prometheus can scrape it, real
Alertmanager can fire on it, and the responder's `http` driver can fence and activate it. Faults are
injected over a loopback-only API, and every signing interval is recorded so a test can prove
that two nodes never signed at once.

Run: python -m responder.sim --name node-a --pair mainnet-a --listen 127.0.0.1:PORT [--signing]
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

FAULTS: tuple[str, ...] = (
    "vc_down",
    "beacon_down",
    "stall_head",
    "drop_peers",
    "crash",
    "fence_fail",
    "fence_hang",
    "fence_lie",
    "activate_fail",
    "activate_hang",
)
UNHEALTHY_FAULTS = frozenset({"vc_down", "beacon_down", "stall_head", "drop_peers"})
SLOTS_PER_EPOCH = 32
PEERS = 50
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Interval = list[float | None]

log = logging.getLogger("responder.sim")


def overlaps(
    a: Sequence[Sequence[float | None]], b: Sequence[Sequence[float | None]]
) -> list[tuple[Interval, Interval]]:
    """Pairs of intervals (one from each list) that share time: two signers at once.

    Intervals are half-open [start, end): one ending exactly when the other starts is a clean
    handover, not an overlap. An end of None (still signing) counts as +infinity.
    """

    def bounds(iv: Sequence[float | None]) -> tuple[float, float]:
        start, end = iv[0], iv[1]
        return (
            -math.inf if start is None else float(start),
            math.inf if end is None else float(end),
        )

    found: list[tuple[Interval, Interval]] = []
    for x in a:
        xs, xe = bounds(x)
        for y in b:
            ys, ye = bounds(y)
            if xs < ye and ys < xe:
                found.append((list(x), list(y)))
    return found


class Sim:
    """The node's state; every field is guarded by `cond` (a lock plus wake-ups for hangs)."""

    def __init__(
        self,
        name: str,
        pair: str,
        *,
        signing: bool = False,
        token: str | None = None,
        slot_seconds: float = 1.0,
        hang_seconds: float = 30.0,
    ) -> None:
        self.name = name
        self.pair = pair
        self.token = token
        self.slot_seconds = slot_seconds
        self.hang_seconds = hang_seconds
        self.cond = threading.Condition(threading.RLock())  # re-entrant: `signing` nests
        self.enabled = signing
        self.faults: set[str] = set()
        self.head_slot = 0
        self.stalled_slots = 0  # slots elapsed since stall_head went on
        self.signing_intervals: list[Interval] = []
        self.calls = {"status": 0, "fence": 0, "activate": 0}
        self.stopping = False
        self._signing = False
        self._ticker: threading.Thread | None = None
        with self.cond:
            self.record_signing_locked()

    # -- state (call with self.cond held) -----------------------------------------------

    def _effective_signing(self) -> bool:
        return self.enabled and not ({"vc_down", "crash"} & self.faults)

    def record_signing_locked(self) -> None:
        """Open or close a signing interval whenever the effective state flips."""
        now = self._effective_signing()
        if now == self._signing:
            return
        self._signing = now
        if now:
            self.signing_intervals.append([time.time(), None])
        else:
            self.signing_intervals[-1][1] = time.time()
        log.info("%s signing=%s", self.name, now)

    def healthy_locked(self) -> bool:
        return not (UNHEALTHY_FAULTS & self.faults)

    # -- public operations --------------------------------------------------------------

    @property
    def signing(self) -> bool:
        with self.cond:
            return self._signing

    def set_fault(self, fault: str, on: bool) -> None:
        with self.cond:
            if on and fault not in self.faults:
                self.faults.add(fault)
                if fault == "stall_head":
                    self.stalled_slots = 0
            elif not on:
                self.faults.discard(fault)
                if fault == "stall_head":
                    self.stalled_slots = 0
            log.info("%s fault %s %s", self.name, fault, "on" if on else "off")
            self.record_signing_locked()
            self.cond.notify_all()

    def clear_faults(self) -> None:
        with self.cond:
            self.faults.clear()
            self.stalled_slots = 0
            log.info("%s faults cleared", self.name)
            self.record_signing_locked()
            self.cond.notify_all()

    def hang(self, fault: str) -> None:
        """Sleep like a dead host: until hang_seconds pass, the fault clears, or we stop."""
        with self.cond:
            self.cond.wait_for(
                lambda: self.stopping or fault not in self.faults, timeout=self.hang_seconds
            )

    def tick(self) -> None:
        """One simulated slot: the head follows unless stalled."""
        with self.cond:
            if "stall_head" in self.faults:
                self.stalled_slots += 1
            else:
                self.head_slot += 1

    def start_ticker(self) -> None:
        def run() -> None:
            next_at = time.monotonic() + self.slot_seconds
            while True:
                with self.cond:
                    if self.cond.wait_for(
                        lambda: self.stopping, timeout=max(0.0, next_at - time.monotonic())
                    ):
                        return
                self.tick()
                next_at += self.slot_seconds

        self._ticker = threading.Thread(target=run, name=f"sim-{self.name}-slots", daemon=True)
        self._ticker.start()

    def stop(self) -> None:
        """Wake every hanging request and the ticker so the process can exit promptly."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        if self._ticker is not None:
            self._ticker.join(timeout=5)

    def state(self) -> dict[str, Any]:
        with self.cond:
            return {
                "name": self.name,
                "pair": self.pair,
                "enabled": self.enabled,
                "signing": self._signing,
                "healthy": self.healthy_locked(),
                "faults": sorted(self.faults),
                "head_slot": self.head_slot,
                "sync_distance": self.stalled_slots,
                "signing_intervals": [list(iv) for iv in self.signing_intervals],
                "calls": dict(self.calls),
            }

    def vc_metrics(self) -> bytes:
        with self.cond:
            stalled = "stall_head" in self.faults
            return _gauges(
                [
                    ("validator_sim_signing", "1 while this simulated node signs.", self._signing),
                    (
                        "vc_beacon_nodes_synced_count",
                        "Synced beacon nodes the validator client is connected to.",
                        0 if stalled else 1,
                    ),
                ]
            )

    def beacon_metrics(self) -> bytes:
        with self.cond:
            stalled = "stall_head" in self.faults
            peers = 0 if "drop_peers" in self.faults else PEERS
            head = self.head_slot
            return _gauges(
                [
                    ("beacon_head_slot", "Slot of the head block.", head),
                    ("beacon_head_state_slot", "Slot of the head state.", head),
                    (
                        "beacon_finalized_epoch",
                        "Latest finalized epoch.",
                        max(0, head // SLOTS_PER_EPOCH - 2),
                    ),
                    ("eth_con_sync_is_syncing", "1 while the node is syncing.", stalled),
                    (
                        "eth_con_sync_distance",
                        "Slots the head is behind the wall clock.",
                        self.stalled_slots if stalled else 0,
                    ),
                    ("sync_eth2_synced", "1 when the node is synced.", not stalled),
                    ("libp2p_peers", "Connected libp2p peers.", peers),
                    ("eth_con_peers", "Connected peers.", peers),
                    ("libp2p_peer_connected_total", "Connected libp2p peers.", peers),
                ]
            )


def _gauges(items: Iterable[tuple[str, str, float | bool]]) -> bytes:
    lines: list[str] = []
    for name, help_text, value in items:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {int(value)}"]
    return ("\n".join(lines) + "\n").encode()


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body) + "\n", status=status, content_type="application/json")


def _is_loopback(addr: str | None) -> bool:
    if not addr:
        return False
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


Handler = Callable[..., Response]
SIM_ENDPOINTS = frozenset({"fault_on", "fault_off", "faults_clear", "state"})


class SimApp:
    """The WSGI app: scrape targets, the node-agent contract, and the fault-injection API."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.url_map = Map(
            [
                Rule("/metrics", methods=["GET"], endpoint="vc_metrics"),
                Rule("/beacon/metrics", methods=["GET"], endpoint="beacon_metrics"),
                Rule("/status", methods=["GET"], endpoint="status"),
                Rule("/fence", methods=["POST"], endpoint="fence"),
                Rule("/activate", methods=["POST"], endpoint="activate"),
                Rule("/sim/faults", methods=["POST"], endpoint="fault_on"),
                Rule("/sim/faults", methods=["DELETE"], endpoint="faults_clear"),
                Rule("/sim/faults/<name>", methods=["DELETE"], endpoint="fault_off"),
                Rule("/sim/state", methods=["GET"], endpoint="state"),
            ]
        )
        self.handlers: dict[str, Handler] = {
            "vc_metrics": self.vc_metrics,
            "beacon_metrics": self.beacon_metrics,
            "status": self.status,
            "fence": self.fence,
            "activate": self.activate,
            "fault_on": self.fault_on,
            "faults_clear": self.faults_clear,
            "fault_off": self.fault_off,
            "state": self.state,
        }

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            endpoint, args = self.url_map.bind_to_environ(environ).match()
            if endpoint in SIM_ENDPOINTS and not _is_loopback(request.remote_addr):
                refused = _json({"error": "the /sim API is loopback-only"}, 403)
                return refused(environ, start_response)
            response = self.handlers[str(endpoint)](request, **args)
        except HTTPException as exc:
            return exc(environ, start_response)
        return response(environ, start_response)

    # -- scrape targets -----------------------------------------------------------------

    def _crashed(self) -> bool:
        """A crashed host answers nothing: hold the request open, then give up with 503."""
        with self.sim.cond:
            crashed = "crash" in self.sim.faults
        if crashed:
            self.sim.hang("crash")
        return crashed

    def _scrape(self, down_fault: str, body: Callable[[], bytes]) -> Response:
        if self._crashed():
            return Response("crashed\n", status=503, content_type="text/plain")
        with self.sim.cond:
            down = down_fault in self.sim.faults
        if down:
            return Response(f"{down_fault}\n", status=503, content_type="text/plain")
        return Response(body(), content_type=METRICS_CONTENT_TYPE)

    def vc_metrics(self, request: Request) -> Response:
        return self._scrape("vc_down", self.sim.vc_metrics)

    def beacon_metrics(self, request: Request) -> Response:
        return self._scrape("beacon_down", self.sim.beacon_metrics)

    # -- node-agent contract ------------------------------------------------------------

    def _auth(self, request: Request, call: str) -> Response | None:
        """Crash, then Bearer auth, then count the call; a Response means stop here."""
        if self._crashed():
            return _json({"error": "crashed"}, 503)
        token = self.sim.token
        if token is not None:
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                resp = _json({"error": "missing bearer token"}, 401)
                resp.headers["WWW-Authenticate"] = "Bearer"
                return resp
            if not hmac.compare_digest(given.strip().encode(), token.encode()):
                return _json({"error": "wrong bearer token"}, 403)
        with self.sim.cond:
            self.sim.calls[call] += 1
        return None

    def status(self, request: Request) -> Response:
        if (refused := self._auth(request, "status")) is not None:
            return refused
        with self.sim.cond:
            return _json({"healthy": self.sim.healthy_locked(), "signing": self.sim.signing})

    def _mutate(self, request: Request, action: str) -> Response:
        if (refused := self._auth(request, action)) is not None:
            return refused
        sim = self.sim
        with sim.cond:
            faults = set(sim.faults)
        if f"{action}_fail" in faults:
            log.info("%s %s: injected failure", sim.name, action)
            return _json({"error": f"{action}_fail injected"}, 500)
        if f"{action}_hang" in faults:
            log.info("%s %s: hanging", sim.name, action)
            sim.hang(f"{action}_hang")
            return _json({"error": f"{action}_hang injected"}, 500)
        if action == "fence" and "fence_lie" in faults:
            log.info("%s fence: lying", sim.name)
            return _json({"signing": True})
        with sim.cond:
            sim.enabled = action == "activate"
            sim.record_signing_locked()
            log.info("%s %s: enabled=%s signing=%s", sim.name, action, sim.enabled, sim.signing)
            return _json({"signing": sim.signing})

    def fence(self, request: Request) -> Response:
        return self._mutate(request, "fence")

    def activate(self, request: Request) -> Response:
        return self._mutate(request, "activate")

    # -- fault injection ----------------------------------------------------------------

    def _unknown(self, name: object) -> Response:
        return _json(
            {"error": f"unknown fault {json.dumps(name)}; valid: {', '.join(FAULTS)}"}, 400
        )

    def fault_on(self, request: Request) -> Response:
        body = request.get_json(silent=True, force=True)
        name = body.get("fault") if isinstance(body, dict) else None
        if name not in FAULTS:
            return self._unknown(name)
        self.sim.set_fault(str(name), True)
        return _json({"faults": self.sim.state()["faults"]})

    def fault_off(self, request: Request, name: str) -> Response:
        if name not in FAULTS:
            return self._unknown(name)
        self.sim.set_fault(name, False)
        return _json({"faults": self.sim.state()["faults"]})

    def faults_clear(self, request: Request) -> Response:
        self.sim.clear_faults()
        return _json({"faults": []})

    def state(self, request: Request) -> Response:
        return _json(self.sim.state())


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value!r}")
    return number


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m responder.sim", description="A simulated validator node for tests."
    )
    parser.add_argument("--name", required=True)
    parser.add_argument("--pair", required=True)
    parser.add_argument("--listen", required=True, type=_listen, help="HOST:PORT (port 0: any)")
    parser.add_argument("--signing", action="store_true", help="start as the active signer")
    parser.add_argument("--token-file", type=Path, help="require this Bearer token on the agent")
    parser.add_argument("--slot-seconds", type=_positive, default=1.0)
    parser.add_argument("--hang-seconds", type=_positive, default=30.0)
    parser.add_argument("--log-requests", action="store_true", help="log every HTTP request")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.log_requests else logging.WARNING)
    token: str | None = None
    if args.token_file is not None:
        token = args.token_file.read_text(encoding="utf-8").strip()
        if not token:
            print(f"sim: {args.token_file} is empty", file=sys.stderr)
            return 2
    sim = Sim(
        args.name,
        args.pair,
        signing=args.signing,
        token=token,
        slot_seconds=args.slot_seconds,
        hang_seconds=args.hang_seconds,
    )
    host, port = args.listen
    server: BaseWSGIServer = make_server(host, port, SimApp(sim), threaded=True)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    sim.start_ticker()
    serving = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="sim-http", daemon=True
    )
    serving.start()
    print(f"sim {args.name} listening on {host}:{server.server_port}", flush=True)
    while not stop.wait(0.1):  # a timed wait so the signal handler gets to run
        pass
    sim.stop()
    server.shutdown()
    server.server_close()
    log.info("%s stopped", args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
