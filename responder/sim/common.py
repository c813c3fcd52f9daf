"""What the simulated nodes of every chain share: overlap checks, small HTTP helpers, args.

The simulator is test and demo equipment: the product never imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import math
import os
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any
from wsgiref.types import WSGIApplication

from werkzeug.serving import make_server
from werkzeug.wrappers import Response

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Interval = list[float | None]
ADMIN_URL_FILE = "sim-admin-url"  # in a node's ledger or home: where its fake CLI finds it

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


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value!r}")
    return int(value)


def serve(
    name: str,
    app: WSGIApplication,
    listen: tuple[str, int],
    *,
    start: Callable[[], None],
    stop: Callable[[], None],
    admin_dir: Path | None = None,
) -> int:
    """Serve one simulated node until SIGTERM or SIGINT, then stop it cleanly.

    With `admin_dir`, the node's URL is written to ADMIN_URL_FILE there (atomically) for the
    fake chain CLIs, and removed on the way out.
    """
    host, port = listen
    server = make_server(host, port, app, threaded=True)
    admin_file = admin_dir / ADMIN_URL_FILE if admin_dir is not None else None
    if admin_file is not None:
        shown = f"[{host}]" if ":" in host else host
        tmp = admin_file.with_name(f".{admin_file.name}.{os.getpid()}.tmp")
        tmp.write_text(f"http://{shown}:{server.server_port}\n", encoding="utf-8")
        os.replace(tmp, admin_file)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    start()
    serving = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="sim-http", daemon=True
    )
    serving.start()
    print(f"sim {name} listening on {host}:{server.server_port}", flush=True)
    while not done.wait(0.1):  # a timed wait so the signal handler gets to run
        pass
    stop()
    server.shutdown()
    server.server_close()
    if admin_file is not None:
        with contextlib.suppress(OSError):
            admin_file.unlink()
    log.info("%s stopped", name)
    return 0
