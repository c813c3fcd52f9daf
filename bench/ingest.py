"""Webhook ingestion measured from outside, on loopback, beside a bare baseline.

Rows (issue 12): throughput of 1-, 100- and 1,000-alert deliveries as a ratio to a bare Flask
app doing one durable SQLite insert per request (bench/baseline_app.py, same gunicorn
settings), rounds alternating baseline and responder, median of the ratios; p99 at a paced
200 deliveries/s of 100 alerts; one 10,000-alert delivery with the default settings (time to
the answer, peak worker RSS) and a body above the default limit (is the 413 seen?); the
database's growth per delivery and what the notifications retention keeps.

Load comes from wrk (bench/wrk/webhook.lua): every request carries a new, distinct
Alertmanager v4 delivery for the configured pair, with alerts that are not triggers, so
everything is recorded and processed and no failover starts. The responder runs as users
run it (`python -m responder serve --workers 2`), its nodes unreachable (never called here).

Run: python bench/ingest.py   (about 2.5 minutes; `--quick`, as the smoke test runs it: 30 s)
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import baseline_app, report  # noqa: E402
from bench.report import Row  # noqa: E402
from responder.config import load_config  # noqa: E402
from responder.lab import Proc  # noqa: E402
from tests.conftest import base_config, write_config  # noqa: E402
from tests.serverproc import ServerProcess, free_port  # noqa: E402
from tests.tokens import WEBHOOK_TOKEN  # noqa: E402

SCRIPT = ROOT / "bench" / "wrk" / "webhook.lua"
PAIR = "mainnet-a"
NODES = ("node-a", "node-b")
ALERTNAME = "PeersLow"  # routed to the pair, not one of its triggers: nothing fails over
SIZES = (1, 100, 1_000)
RATIO_GOALS = {1: 0.9, 100: 0.8, 1_000: 0.8}
WORKERS = 2
PACED_RATE = 200.0  # deliveries/s
PACED_P99_GOAL_MS = 20.0
BIG_ALERTS = 10_000
BIG_SECONDS_GOAL = 1.0
BIG_RSS_GOAL_MB = 200.0
STORED_GOAL = 600.0


@dataclass(frozen=True)
class Settings:
    """How hard and how long: the full run and the smoke test's quick variant."""

    rounds: int
    seconds: int  # each throughput run
    paced_seconds: int
    big_alerts: int
    stored: int  # deliveries posted to measure the database's growth
    drain_timeout: float

    @staticmethod
    def of(quick: bool) -> Settings:
        if quick:
            return Settings(
                rounds=1, seconds=1, paced_seconds=2, big_alerts=1_000, stored=200,
                drain_timeout=30.0,
            )  # fmt: skip
        return Settings(
            rounds=3, seconds=5, paced_seconds=10, big_alerts=BIG_ALERTS, stored=2_000,
            drain_timeout=60.0,
        )  # fmt: skip


# -- deliveries --------------------------------------------------------------------------


def alert(index: int, fingerprint: str) -> dict[str, Any]:
    """One firing alert as Alertmanager 0.25 sends it: ~470 bytes (10,000 make 4.7 MB)."""
    node = NODES[index % len(NODES)]
    return {
        "status": "firing",
        "labels": {
            "alertname": ALERTNAME,
            "instance": f"{node}:8008",
            "job": "beacon",
            "node": node,
            "pair": PAIR,
            "severity": "warning",
            "peer_group": f"g{index:05d}",
        },
        "annotations": {
            "summary": f"few peers on {node}",
            "description": f"{node} has had fewer than 10 peers for 5 minutes",
        },
        "startsAt": f"2026-11-25T18:{index // 60 % 60:02d}:{index % 60:02d}.908132859Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=libp2p_peers+%3C+10&g0.tab=1",
        "fingerprint": fingerprint,
    }


def delivery(alerts: int, prefix: str) -> bytes:
    """A v4 notification of `alerts` firing alerts; fingerprints are `prefix` + 6 hex digits.

    With a prefix of 10 hex digits a fingerprint has Alertmanager's 16.
    """
    body = {
        "receiver": "responder",
        "status": "firing",
        "alerts": [alert(i, f"{prefix}{i:06x}") for i in range(alerts)],
        "groupLabels": {"alertname": ALERTNAME, "pair": PAIR},
        "commonLabels": {"alertname": ALERTNAME, "job": "beacon", "pair": PAIR},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{ALERTNAME}", pair="{PAIR}"}}',
        "truncatedAlerts": 0,
    }
    return json.dumps(body, separators=(",", ":")).encode()  # compact, as Go encodes it


def template(alerts: int, directory: Path) -> Path:
    """The body wrk posts: "@ID@" in each fingerprint, replaced per request by the script."""
    path = directory / f"body-{alerts}.json"
    path.write_bytes(delivery(alerts, "@ID@"))
    return path


def body_size(alerts: int) -> int:
    return len(delivery(alerts, "0" * 10))


def _prefix(tag: int, serial: int) -> str:
    """Ten hex digits, never produced by the Lua script (whose first byte is a run < 0xf0)."""
    return f"f{tag:01x}{serial:08x}"


# -- wrk -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run saw; `problems` is empty only if every request was answered 2xx."""

    argv: tuple[str, ...]
    requests: int
    seconds: float
    non2xx: int
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def problems(self) -> list[str]:
        found = [f"{count} {kind} errors" for kind, count in self.errors.items() if count]
        if self.non2xx:
            found.append(f"{self.non2xx} non-2xx answers")
        if not self.requests:
            found.append("no request completed")
        return found

    def command(self, tmp: Path | None = None) -> str:
        text = shlex.join(["wrk", *self.argv[1:]]).replace(str(ROOT) + "/", "")
        return text.replace(str(tmp), "$TMP") if tmp is not None else text


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk not found: apt-get install -y wrk")
    return found


def run_wrk(
    url: str,
    body: Path,
    *,
    run: int,
    seconds: int,
    threads: int = 1,
    connections: int = 8,
    interval_ms: float | None = None,
) -> WrkResult:
    """Post distinct deliveries from `body` for `seconds`; `interval_ms` paces each thread."""
    argv = [
        wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
        "-s", str(SCRIPT), f"{url}/webhook", "--", str(body), WEBHOOK_TOKEN, str(run),
    ]  # fmt: skip
    if interval_ms is not None:
        argv.append(f"{interval_ms:g}")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    return parse_wrk(argv, done.stdout, done.stderr)


def parse_wrk(argv: list[str], stdout: str, stderr: str = "") -> WrkResult:
    """Read the script's WRK-RESULT line; anything else wrong is an error, not a zero."""
    for line in stdout.splitlines():
        if line.startswith("WRK-RESULT "):
            data = json.loads(line.removeprefix("WRK-RESULT "))
            break
    else:
        raise RuntimeError(f"wrk printed no result:\n{stdout}\n{stderr}")
    # wrk counts a status >= 400 as an error; the script also counts any answer outside 2xx
    return WrkResult(
        argv=tuple(argv),
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        non2xx=max(int(data["non2xx"]), int(data["status"])),
        errors={k: int(data[k]) for k in ("connect", "read", "write", "timeout")},
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
    )


# -- servers -------------------------------------------------------------------------------


class Responder:
    """The responder as users run it, with a fresh state directory."""

    def __init__(self, directory: Path, **overrides: Any) -> None:
        directory.mkdir(parents=True)
        # nodes on the discard port: nothing here should call them, and nothing waits if it does
        data = base_config(lambda n: f"http://127.0.0.1:9/{n}", **overrides)
        self.config_path = write_config(directory, data)
        self.config = load_config(self.config_path)
        self.server = ServerProcess(
            self.config_path, free_port(), directory / "responder.log", workers=WORKERS
        )

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def master_pid(self) -> int:
        popen = self.server.proc.popen
        assert popen is not None, "not started"
        return popen.pid  # `responder serve` execs gunicorn: this is its master

    def start(self) -> Responder:
        self.server.start(timeout=60)
        return self

    def stop(self) -> None:
        self.server.stop()

    def pending(self) -> int:
        resp = requests.get(self.url + "/healthz", timeout=10)
        resp.raise_for_status()
        return int(resp.json()["pending_notifications"])

    def drain(self, timeout: float) -> float | None:
        """Wait until every recorded delivery is processed; seconds taken, None on timeout."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.pending() == 0:
                return time.monotonic() - started
            time.sleep(0.05)
        return None


class Baseline:
    """bench/baseline_app.py under gunicorn with the responder's own gunicorn settings."""

    def __init__(self, directory: Path, responder_config: Path) -> None:
        directory.mkdir(parents=True)
        self.db = directory / "baseline.sqlite3"
        baseline_app.init_db(self.db)
        self.port = free_port()
        gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or "gunicorn"
        env = dict(os.environ)
        env.update(
            BASELINE_DB=str(self.db),
            RESPONDER_CONFIG=str(responder_config),
            RESPONDER_WORKERS=str(WORKERS),
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        )
        argv = [
            gunicorn, "-c", "python:bench.baseline_app", "--chdir", str(ROOT),
            "--bind", f"127.0.0.1:{self.port}", "bench.baseline_app:app",
        ]  # fmt: skip
        self.proc = Proc("baseline", argv, directory / "baseline.log", self.url + "/healthz", env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Baseline:
        self.proc.start(timeout=60)
        return self

    def stop(self) -> None:
        self.proc.stop()


@contextmanager
def servers(directory: Path) -> Iterator[tuple[Baseline, Responder]]:
    """A fresh baseline and responder, started and stopped side by side (stopped whatever
    happens)."""
    responder = Responder(directory / "responder")
    baseline = Baseline(directory / "baseline", responder.config_path)
    try:
        _together(baseline.start, responder.start)
        yield baseline, responder
    finally:
        _together(baseline.stop, responder.stop)


def _together(*calls: Callable[[], object]) -> None:
    """Run the calls in parallel, wait for all of them, then raise the first failure."""
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
    for future in futures:
        future.result()


def post(url: str, body: bytes, timeout: float = 30.0) -> requests.Response:
    headers = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}
    return requests.post(url + "/webhook", data=body, headers=headers, timeout=timeout)


def warm_up(url: str, alerts: int, tag: int, count: int = 8) -> None:
    """A few deliveries first, so neither server's first run pays for lazy imports."""
    for i in range(count):
        resp = post(url, delivery(alerts, _prefix(tag, i)))
        resp.raise_for_status()


# -- process memory ------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Direct children of `pid` (gunicorn's workers, for its master)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def settled_workers(master: int, timeout: float = 30.0) -> list[int]:
    """gunicorn's workers once all of them run and their memory has stopped growing (the
    server answers as soon as its first worker is up; the others may still be importing)."""
    end = time.monotonic() + timeout
    last: dict[int, float] = {}
    while time.monotonic() < end:
        pids = children(master)
        if len(pids) == WORKERS:
            now = {pid: peak_rss_mb(pid) for pid in pids}
            if now == last:
                return pids
            last = now
        time.sleep(0.5)
    raise RuntimeError(f"gunicorn {master}: {WORKERS} settled workers not seen in {timeout:g} s")


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


# -- raw HTTP, for the 413 ------------------------------------------------------------------


@dataclass(frozen=True)
class RawAnswer:
    status: int | None  # None: no answer read
    sent: int  # body bytes the server took before the connection ended (or all of them)
    total: int
    error: str = ""

    @property
    def whole_body_sent(self) -> bool:
        return self.sent == self.total


def post_raw(port: int, body: bytes, timeout: float = 30.0) -> RawAnswer:
    """Send the whole request as a client that writes before it reads (as most do), then read.

    Counts what was sent, so a server that answers early and cuts the connection (the client
    sees a broken pipe, not the answer) is told from one that reads and discards the body.
    """
    head = (
        f"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {WEBHOOK_TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    sent, error = 0, ""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(head)
            view = memoryview(body)
            while sent < len(body):
                sent += sock.send(view[sent : sent + 65536])
        except OSError as exc:
            error = f"{type(exc).__name__} after {sent:,} of {len(body):,} body bytes"
        answer = b""
        try:
            while b"\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except OSError as exc:
            error = (error + "; " if error else "") + f"reading the answer: {type(exc).__name__}"
    status_line = answer.split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) >= 2 and status_line[1].isdigit() else None
    return RawAnswer(status, sent, len(body), error)


# -- the database ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DbSize:
    total: int  # page_count * page_size: the file's size once the WAL is checkpointed
    free: int  # bytes on the freelist (reusable, still on disk)
    by_table: dict[str, int]  # table or index name -> bytes of its pages


def db_size(path: Path, checkpoint: bool = False) -> DbSize:
    """The database's size as committed (WAL included); checkpoint=True folds the WAL in first
    and needs the file to be otherwise unused."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        if checkpoint:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                raise RuntimeError(f"{path}: checkpoint blocked")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
    finally:
        conn.close()
    return DbSize(pages * page_size, free * page_size, {name: int(size) for name, size in rows})


# -- rows ----------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"


def _rates(values: list[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


def throughput_row(alerts: int, settings: Settings, tmp: Path) -> Row:
    """Rounds of (baseline, responder) on fresh servers; the headline is the median ratio."""
    body = template(alerts, tmp)
    goal = RATIO_GOALS[alerts]
    base_runs: list[WrkResult] = []
    ours: list[WrkResult] = []
    drains: list[float | None] = []
    with servers(tmp / f"servers-{alerts}") as (baseline, responder):
        warm_up(baseline.url, alerts, tag=0)
        warm_up(responder.url, alerts, tag=0)
        drains.append(responder.drain(settings.drain_timeout))
        for run in range(settings.rounds):
            base_runs.append(run_wrk(baseline.url, body, run=run, seconds=settings.seconds))
            ours.append(run_wrk(responder.url, body, run=run, seconds=settings.seconds))
            drains.append(responder.drain(settings.drain_timeout))
    ratios = [o.rate / b.rate if b.rate else 0.0 for o, b in zip(ours, base_runs, strict=True)]
    ratio = report.median(ratios)
    problems = [
        f"{who} round {i + 1}: {', '.join(r.problems)}"
        for who, runs in (("baseline", base_runs), ("responder", ours))
        for i, r in enumerate(runs)
        if r.problems
    ]
    if None in drains:
        problems.append(f"responder backlog not processed within {settings.drain_timeout:g} s")
    ours_rate = report.median([r.rate for r in ours])
    base_rate = report.median([r.rate for r in base_runs])
    drained = [d for d in drains if d is not None]
    detail = [
        f"ratio per round (responder / baseline req/s): {', '.join(f'{r:.2f}' for r in ratios)}"
        f"; {settings.rounds} round(s), each baseline then responder, {settings.seconds} s each",
        f"responder: {_rates([r.rate for r in ours])} deliveries/s (median {ours_rate:,.0f}"
        f" = {ours_rate * alerts:,.0f} alerts/s), p99 {_ms(report.median([r.p99_ms for r in ours]))}",
        f"baseline:  {_rates([r.rate for r in base_runs])} deliveries/s (median {base_rate:,.0f}"
        f"), p99 {_ms(report.median([r.p99_ms for r in base_runs]))}",
        f"body: {alerts:,} alert(s), {body_size(alerts):,} bytes, a new fingerprint per alert;"
        f" responder backlog processed {max(drained, default=0):.1f} s after a run at most",
        f"command (the baseline's differs in its port only): {ours[0].command(tmp)}",
    ]
    detail += [f"ERROR: {p}" for p in problems]
    return Row(
        what=f"ingestion, {alerts:,}-alert deliveries, vs bare Flask + one SQLite WAL insert",
        value=f"{ratio:.2f}x",
        goal=f"≥ {goal:g}x",
        holds=ratio >= goal and not problems,
        detail="\n".join(detail),
        numbers={
            "ratio": ratio,
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "responder_per_s": ours_rate,
            "baseline_per_s": base_rate,
            "errors": float(sum(len(r.problems) for r in [*ours, *base_runs])),
        },
    )


def paced_row(settings: Settings, tmp: Path) -> Row:
    """p99 while 200 deliveries/s of 100 alerts arrive, paced by wrk's delay()."""
    alerts, threads, connections = 100, 1, 8
    interval = threads * 1000 / PACED_RATE
    body = template(alerts, tmp)
    with servers(tmp / "servers-paced") as (baseline, responder):
        warm_up(baseline.url, alerts, tag=1)
        warm_up(responder.url, alerts, tag=1)
        responder.drain(settings.drain_timeout)
        base = run_wrk(
            baseline.url, body, run=0, seconds=settings.paced_seconds, threads=threads,
            connections=connections, interval_ms=interval,
        )  # fmt: skip
        ours = run_wrk(
            responder.url, body, run=0, seconds=settings.paced_seconds, threads=threads,
            connections=connections, interval_ms=interval,
        )  # fmt: skip
        drained = responder.drain(settings.drain_timeout)
    both = (("baseline", base), ("responder", ours))
    problems = [f"{who}: {', '.join(r.problems)}" for who, r in both if r.problems]
    for who, r in both:
        if abs(r.rate - PACED_RATE) > 0.05 * PACED_RATE:
            problems.append(f"{who} ran at {r.rate:.0f}/s, not {PACED_RATE:.0f}/s")
    if drained is None:
        problems.append(f"responder backlog not processed within {settings.drain_timeout:g} s")
    detail = [
        f"closed loop with pacing: wrk's delay() starts one request every {interval:g} ms over "
        f"{connections} connections, each waiting for its answer; {settings.paced_seconds} s",
        f"responder: {ours.rate:.1f} deliveries/s achieved ({ours.requests:,}), p50 "
        f"{_ms(ours.p50_ms)}, p90 {_ms(ours.p90_ms)}, p99 {_ms(ours.p99_ms)}, max {_ms(ours.max_ms)}",
        f"baseline at the same pace: {base.rate:.1f}/s, p50 {_ms(base.p50_ms)}, p99 "
        f"{_ms(base.p99_ms)}, max {_ms(base.max_ms)}",
        f"command (the baseline's differs in its port only): {ours.command(tmp)}",
    ]
    detail += [f"ERROR: {p}" for p in problems]
    return Row(
        what=f"p99 at a fixed {PACED_RATE:.0f} deliveries/s of {alerts} alerts",
        value=f"{_ms(ours.p99_ms)} (max {_ms(ours.max_ms)})",
        goal=f"≤ {PACED_P99_GOAL_MS:g} ms",
        holds=ours.p99_ms <= PACED_P99_GOAL_MS and not problems,
        detail="\n".join(detail),
        numbers={
            "p99_ms": ours.p99_ms,
            "max_ms": ours.max_ms,
            "rate": ours.rate,
            "baseline_p99_ms": base.p99_ms,
            "baseline_rate": base.rate,
            "errors": float(len(ours.problems) + len(base.problems)),
        },
    )


def big_rows(settings: Settings, tmp: Path) -> list[Row]:
    """One large delivery with the default settings, then a body above the default limit."""
    alerts = settings.big_alerts
    body = delivery(alerts, _prefix(2, 0))
    responder = Responder(tmp / "responder-big")
    limit = responder.config.max_body_bytes
    workers_before: list[int] = []
    try:
        responder.start()
        workers_before = settled_workers(responder.master_pid)
        rss_before = {pid: peak_rss_mb(pid) for pid in workers_before}
        started = time.perf_counter()
        status: int | None = None
        failure = ""
        try:
            status = post(responder.url, body).status_code
        except requests.RequestException as exc:
            failure = f"{type(exc).__name__}: {exc}"
        answered = time.perf_counter() - started
        drained = responder.drain(settings.drain_timeout)
        workers_after = children(responder.master_pid)
        rss_after = {pid: peak_rss_mb(pid) for pid in workers_after}
        over = None if limit is None else post_raw(responder.server.port, _oversized(limit))
    finally:
        responder.stop()
    peak = max(rss_after.values(), default=0.0)
    accepted = status == 200
    if accepted:
        value = f"accepted in {answered:.2f} s, RSS {peak:.0f} MB"
    elif status is not None:
        value = f"refused: HTTP {status}"
    else:
        value = "refused: connection cut"
    detail = [
        f"{alerts:,} alerts, {len(body):,} bytes, default max_body_bytes "
        f"{'none' if limit is None else f'{limit:,}'}; answer "
        f"({status or failure}) after {answered:.2f} s",
        "worker peak RSS (VmHWM) before -> after: "
        + ", ".join(
            f"{rss_before.get(pid, 0):.0f} -> {rss_after[pid]:.0f} MB" for pid in workers_after
        ),
        "backlog processed "
        + ("in time" if drained is not None else "NOT within the timeout")
        + (f" ({drained:.1f} s after the answer)" if drained is not None else ""),
    ]
    if sorted(workers_before) != workers_after:
        detail.append(f"ERROR: workers changed during the run: {workers_before} -> {workers_after}")
    holds = (
        accepted and answered < BIG_SECONDS_GOAL and peak < BIG_RSS_GOAL_MB
        and sorted(workers_before) == workers_after
    )  # fmt: skip
    rows = [
        Row(
            what=f"one {alerts:,}-alert ({len(body) / 1e6:.1f} MB) delivery, default settings",
            value=value,
            goal=f"accepted in < {BIG_SECONDS_GOAL:g} s, worker RSS < {BIG_RSS_GOAL_MB:g} MB",
            holds=holds,
            detail="\n".join(detail),
            numbers={
                "seconds": answered,
                "rss_mb": peak,
                "status": float(status or 0),
                "bytes": float(len(body)),
            },
        )
    ]
    if over is not None:
        seen = over.status == 413 and over.whole_body_sent and not over.error
        if seen:
            what = "413, read by the client after the whole body"
        elif over.status is not None:
            what = f"HTTP {over.status}, body cut at {over.sent:,} of {over.total:,} bytes"
        else:
            what = f"no answer: {over.error or 'connection closed'}"
        rows.append(
            Row(
                what=f"a body above the default limit ({over.total:,} bytes)",
                value=what if seen else "NOT seen",
                goal="413 seen by a client that sends the whole body",
                holds=seen,
                detail=(
                    f"{what}; the body is {OVER_LIMIT // 2**20} MiB over the limit, beyond what "
                    "socket buffers absorb; the client sends it all, then reads"
                    + (f"; {over.error}" if over.error and not seen else "")
                ),
                numbers={"status": float(over.status or 0), "sent": float(over.sent)},
            )
        )
    return rows


OVER_LIMIT = 8 * 1024 * 1024  # more than loopback's socket buffers hold between the two ends


def _oversized(limit: int) -> bytes:
    """A valid delivery OVER_LIMIT bytes above `limit` (whole alerts: only its size is wrong).

    Far enough over that a server which stops reading at the limit cannot hide it in socket
    buffers: the client's send fails instead of completing.
    """
    per_alert = body_size(2) - body_size(1)
    return delivery((limit + OVER_LIMIT) // per_alert + 1, _prefix(3, 0))


def stored_rows(settings: Settings, tmp: Path) -> list[Row]:
    """The database's growth per 1-alert delivery, and what retention keeps of it."""
    count = settings.stored
    responder = Responder(tmp / "responder-stored")
    db = responder.config.db_path
    retention = responder.config.retention.notifications
    failed: list[int] = []
    try:
        responder.start()
        before = db_size(db)

        def send(i: int) -> None:
            status = post(responder.url, delivery(1, _prefix(4, i)), timeout=60).status_code
            if status // 100 != 2:
                failed.append(status)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(send, range(count)))
        drained = responder.drain(settings.drain_timeout)
    finally:
        responder.stop()
    after = db_size(db, checkpoint=True)
    per = (after.total - before.total) / count
    tables = sorted(set(before.by_table) | set(after.by_table))
    growth = {
        name: (after.by_table.get(name, 0) - before.by_table.get(name, 0)) / count
        for name in tables
    }
    largest = [(k, v) for k, v in sorted(growth.items(), key=lambda kv: -kv[1]) if abs(v) >= 1]
    notif = sum(v for k, v in growth.items() if "notification" in k)
    kept = retention * notif  # at 1 delivery/s
    problems = [f"{len(failed)} deliveries answered {sorted(set(failed))}"] if failed else []
    if drained is None:
        problems.append(f"backlog not processed within {settings.drain_timeout:g} s")
    detail = [
        f"{count:,} distinct 1-alert deliveries ({body_size(1):,} bytes each); growth after "
        f"stopping and PRAGMA wal_checkpoint(TRUNCATE): {after.total - before.total:,} bytes "
        f"(page_count x page_size; {after.free:,} bytes on the freelist)",
        "per delivery by table/index: " + ", ".join(f"{k} {v:,.0f}" for k, v in largest),
    ]
    detail += [f"ERROR: {p}" for p in problems]
    days = retention / 86400
    return [
        Row(
            what="stored bytes per delivery",
            value=f"{per:,.0f}",
            goal=f"≤ {STORED_GOAL:g}, with retention",
            holds=per <= STORED_GOAL and not problems,
            detail="\n".join(detail),
            numbers={
                "bytes_per_delivery": per,
                "notifications_bytes_per_delivery": notif,
                "deliveries": float(count),
                "failed": float(len(failed)),
            },
        ),
        Row(
            what="notifications kept at 1 delivery/s (retention.notifications)",
            value=f"{kept / 1e6:,.0f} MB",
            goal="-",
            holds=None,
            detail=(
                f"retention.notifications {days:g} days (default) x 86,400/day x {notif:,.0f} "
                f"bytes (the notification tables' share per delivery); {notif * 86400 / 1e6:,.0f}"
                f" MB a day at 1/s, {10 * notif * 86400 / 1e6:,.0f} MB at 10/s; pruned after "
                f"{days:g} days, so the table stops growing there"
            ),
            numbers={"kept_bytes": kept, "per_day_bytes": notif * 86400},
        ),
    ]


def rows(quick: bool = False) -> list[Row]:
    settings = Settings.of(quick)
    wrk_binary()
    found: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as name:
        tmp = Path(name)
        for alerts in SIZES:
            found.append(throughput_row(alerts, settings, tmp))
        found.append(paced_row(settings, tmp))
        found += big_rows(settings, tmp)
        found += stored_rows(settings, tmp)
    return found


def main() -> None:
    print(report.header())
    print(report.render(rows(quick="--quick" in sys.argv[1:])))


if __name__ == "__main__":
    main()
