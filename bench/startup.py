"""Start-up time with 1, 100 and 1,000 pairs configured, measured from outside.

The clock starts when `python -m responder serve --config X --bind 127.0.0.1:P --workers 2`
is launched and stops when the responder answers /healthz with 200 and every worker has
logged that it started (each worker logs it once its app is built and its background runner,
which acts on deliveries, deadlines and failovers, is running). Each start uses a fresh state
directory (the first start: the database is created and every pair stored); the 1,000-pair
row also shows a restart on the state the previous start left. Figures are medians of 3.

Every pair has two nodes with distinct names, `match` labels and URLs behind the http driver,
one shared token file: the shape `tests/conftest.py` uses, repeated. Nodes are never called.

Run: python bench/startup.py   (about 30 s; `--quick`, one start of each size: about 10 s)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.report import Row  # noqa: E402
from tests.conftest import base_config, write_config  # noqa: E402
from tests.serverproc import free_port  # noqa: E402

SIZES = (1, 100, 1_000)
GOAL_PAIRS = 1_000
GOAL_SECONDS = 1.5
WORKERS = 2
RUNS = 3
TIMEOUT = 60.0  # a start slower than this is reported as failed


def config(pairs: int) -> dict[str, Any]:
    """`pairs` pairs of two http-driver nodes, told apart by name, labels and URL."""
    data = base_config(lambda n: f"http://127.0.0.1:9/{n}")
    template = data["pairs"][0]
    data["pairs"] = [
        {
            "name": f"pair-{p:04d}",
            "policy": template["policy"],
            "nodes": [
                {
                    "name": f"node-{side}",
                    "match": {"pair": f"pair-{p:04d}", "node": f"node-{side}"},
                    "driver": {
                        "type": "http",
                        "url": f"http://10.{p // 250}.{p % 250}.{i + 1}:9000",
                        "token_file": "./secrets/node-token",
                        "timeout": "2s",
                    },
                }
                for i, side in enumerate(("a", "b"))
            ],
        }
        for p in range(pairs)
    ]
    return data


def argv(config_path: Path, port: int) -> list[str]:
    return [
        sys.executable, "-m", "responder", "serve", "--config", str(config_path),
        "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS),
    ]  # fmt: skip


def workers_started(log: Path) -> int:
    """Workers that logged their start (one JSON line each, event "start")."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return 0
    return text.count('"event": "start"')


def start_once(config_path: Path, log: Path) -> float:
    """Seconds from launch to /healthz 200 with every worker started; the server is stopped
    (SIGTERM to its process group, then SIGKILL) before returning."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    log.write_bytes(b"")
    with log.open("ab") as out:
        started = time.monotonic()
        proc = subprocess.Popen(
            argv(config_path, port),
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        healthy = False
        while time.monotonic() - started < TIMEOUT:
            if proc.poll() is not None:
                raise RuntimeError(f"responder exited {proc.returncode}: {tail(log)}")
            if not healthy:
                with contextlib.suppress(requests.RequestException):
                    healthy = requests.get(url, timeout=1).status_code == 200
            if healthy and workers_started(log) >= WORKERS:
                return time.monotonic() - started
            time.sleep(0.01)
        raise RuntimeError(f"not ready after {TIMEOUT:g} s: {tail(log)}")
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def tail(log: Path, chars: int = 1500) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def measure(pairs: int, runs: int, tmp: Path) -> tuple[list[float], float | None]:
    """Start times on a fresh state directory each, and one restart on the last one's state
    (for the goal size only)."""
    times = []
    directory = tmp
    for run in range(runs):
        directory = tmp / f"pairs-{pairs}-run-{run}"
        path = write_config(directory, config(pairs))
        times.append(start_once(path, directory / "responder.log"))
    restart = None
    if pairs == GOAL_PAIRS:
        restart = start_once(directory / "responder.yml", directory / "restart.log")
    return times, restart


def rows(quick: bool = False) -> list[Row]:
    runs = 1 if quick else RUNS
    found = []
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        for pairs in SIZES:
            times, restart = measure(pairs, runs, Path(tmp))
            value = report.median(times)
            detail = (
                f"median of {len(times)} (" + ", ".join(f"{t:.2f}" for t in times) + " s): "
                f"launch to /healthz 200 with {WORKERS} workers started, fresh state dir"
            )
            numbers = {"seconds": value, "pairs": float(pairs)}
            if restart is not None:
                detail += f"; restart on that state: {restart:.2f} s"
                numbers["restart_seconds"] = restart
            goal = pairs == GOAL_PAIRS
            found.append(
                Row(
                    what=f"start-up with {pairs:,} pair{'s' if pairs > 1 else ''} configured",
                    value=f"{value:.2f} s",
                    goal=f"<= {GOAL_SECONDS:g} s" if goal else "",
                    holds=(value <= GOAL_SECONDS) if goal else None,
                    detail=detail,
                    numbers=numbers,
                )
            )
    return found


def main() -> None:
    print(report.header())
    print(report.render(rows(quick="--quick" in sys.argv[1:])))


if __name__ == "__main__":
    main()
