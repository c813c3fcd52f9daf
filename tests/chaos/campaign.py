"""The campaign: run scenarios (seed, 0..N-1) on worker processes, judge each, summarise.

Each worker starts one fake-node server and reuses it for every scenario it runs. A scenario's
result carries its violations with a short trace; the summary counts scenarios by fault kind,
the violations, and failover-time percentiles (manual-clock seconds in-process, wall seconds
for real processes).

In etcd mode (`--etcd`) each worker also starts one real etcd, and its in-process scenarios run
their incarnations as replicas on it (tests/chaos/etcdmode.py); the real-process ones are left
out.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.util
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos import etcdmode
from tests.chaos import scenarios as S
from tests.chaos import world as w
from tests.chaos.inprocess import KNOWN_GAP_IN_FLIGHT_CUT, run_in_process
from tests.chaos.invariants import KNOWN_GAP_RETRIED_ACTIVATION, Timing, check
from tests.chaos.realproc import run_real


@dataclass
class Result:
    key: str
    index: int
    real: bool
    kinds: dict[str, str]
    delivery_faults: tuple[str, ...]
    violations: list[str]
    timings: list[Timing]
    seconds: float
    claims_checked: int = 0
    drills: int = 0
    known: list[str] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)
    mode: str = "sqlite"  # sqlite | etcd
    leader_kills: int = 0  # etcd mode: crashes that revoked the leader's lease
    refused_calls: int = 0  # etcd mode: killed leaders' node calls the lease guard refused
    refused_writes: int = 0  # etcd mode: killed leaders' writes refused


def quiet_logs(verbose: bool) -> None:
    """The product logs every failed fence level; a campaign would drown in them."""
    level = logging.WARNING if verbose else logging.CRITICAL + 1
    for name in ("responder", "werkzeug"):
        logging.getLogger(name).setLevel(level)


def run_one(
    seed: int,
    index: int,
    server: w.NodeServer,
    root: Path,
    *,
    verbose: bool = False,
    etcd_url: str | None = None,
) -> Result:
    """Generate, run and judge one scenario (with `etcd_url`: in etcd mode, on that etcd)."""
    started = time.monotonic()
    sc = S.generate(seed, index)
    if sc.real and etcd_url is not None:
        raise ValueError(f"scenario {sc.key} runs real processes: not in etcd mode")
    where = root / f"scenario-{index}"
    violations: list[str] = []
    timings: list[Timing] = []
    trace: list[str] = [sc.describe()]
    claims = 0
    drills = 0
    known: list[str] = []
    kills = refused_calls = refused_writes = 0
    try:
        run = (
            run_real(sc, server, where)
            if sc.real
            else run_in_process(sc, server, where, verbose, etcd_url)
        )
        verdict = check(
            sc,
            run.world,
            run.fault_seen,
            run.resolved_seen,
            run.down,
            real=sc.real,
            confirms=run.confirms,
        )
        violations = run.violations + verdict.violations
        timings = verdict.timings
        claims = run.claims_checked
        drills = run.drills
        known = run.known + verdict.known
        kills, refused_calls, refused_writes = (
            run.leader_kills,
            run.refused_calls,
            run.refused_writes,
        )
        trace += ["  runner:"] + [f"    {e}" for e in run.events]
        trace += ["  node calls (last 60):"] + [f"    {c}" for c in run.world.trace(60)]
        for node in run.world.nodes.values():
            ivs = ", ".join(
                f"[{s:.2f}, {'...' if e is None else f'{e:.2f}'})" for s, e in node.intervals_t
            )
            trace.append(f"  {node.name} signed: {ivs or 'never'}")
    except Exception:
        violations.append("harness error:\n" + traceback.format_exc(limit=10))
    finally:
        server.world = None
        shutil.rmtree(where, ignore_errors=True)
    return Result(
        key=sc.key,
        index=index,
        real=sc.real,
        kinds=sc.kinds(),
        delivery_faults=sc.delivery_faults,
        violations=violations,
        timings=timings,
        seconds=time.monotonic() - started,
        claims_checked=claims,
        drills=drills,
        known=known,
        trace=trace,
        mode="sqlite" if etcd_url is None else "etcd",
        leader_kills=kills,
        refused_calls=refused_calls,
        refused_writes=refused_writes,
    )


# ---- worker processes -----------------------------------------------------------------------

_worker: dict[str, Any] = {}  # this process's fake-node server, etcd and scratch root


def _init(root: str, etcd: bool = False, pool: bool = True) -> None:
    quiet_logs(False)
    server = w.NodeServer().start()
    _worker["server"] = server
    _worker["root"] = Path(root)
    # stopped when the worker exits (run_many closes and joins the pool before leaving it)
    multiprocessing.util.Finalize(server, server.stop, exitpriority=10)
    if etcd:
        try:
            proc = etcdmode.start(Path(root) / f"etcd-{os.getpid()}")
        except Exception as exc:  # a raising initializer would make the pool respawn forever
            _worker["etcd_error"] = f"{type(exc).__name__}: {exc}"
            return
        _worker["etcd"] = proc
        multiprocessing.util.Finalize(proc, etcdmode.stop, args=(proc,), exitpriority=10)
        if pool:  # a terminated pool (an interrupted campaign) still stops its etcd
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


def _stop_worker() -> None:
    _worker.pop("server").stop()
    proc = _worker.pop("etcd", None)
    if proc is not None:
        etcdmode.stop(proc)


def _work(job: tuple[int, int]) -> Result:
    if "etcd_error" in _worker:
        raise RuntimeError(f"etcd did not start in this worker: {_worker['etcd_error']}")
    etcd = _worker.get("etcd")
    return run_one(
        job[0], job[1], _worker["server"], _worker["root"], etcd_url=etcd.url if etcd else None
    )


def scratch_root() -> Path:
    """Scratch space on tmpfs when there is one: the store fsyncs every transaction."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="responder-chaos-", dir=base))


def run_many(
    seed: int, indices: Iterable[int], jobs: int, progress: bool = True, etcd: bool = False
) -> Iterator[Result]:
    """Run the scenarios on `jobs` worker processes (each with its own etcd in etcd mode)."""
    root = scratch_root()
    todo = list(indices)
    # the real-process scenarios take longest: start them first so they never trail the run
    todo.sort(key=lambda i: (not S.is_real(i), i))
    try:
        if jobs <= 1:
            _init(str(root), etcd, pool=False)
            try:
                for i in todo:
                    yield _work((seed, i))
            finally:
                _stop_worker()
            return
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(jobs, initializer=_init, initargs=(str(root), etcd)) as pool:
            yield from pool.imap_unordered(_work, [(seed, i) for i in todo], chunksize=1)
            pool.close()
            pool.join()
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---- the summary ----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(
    results: list[Result], seed: int, seconds: float, *, mode: str = "sqlite", skipped: int = 0
) -> str:
    """`skipped`: real-process scenarios left out (etcd mode runs only in-process ones)."""
    kills = sum(r.leader_kills for r in results)
    lines = [
        f"chaos campaign, seed {seed}, mode {mode}: {len(results)} scenarios in {seconds:.1f}s, "
        f"leader kills {kills}"
    ]
    real = sum(r.real for r in results)
    lines.append(f"  in-process {len(results) - real}, real-process (gunicorn) {real}")
    if mode == "etcd":
        lines.append(
            f"  etcd mode: every incarnation a replica on a real etcd; {kills} leader kills "
            "(a crash revokes the leader's lease); refused after the kill: "
            f"{sum(r.refused_calls for r in results)} node calls (lease guard), "
            f"{sum(r.refused_writes for r in results)} writes (NotLeader, failover lease lost); "
            f"real-process scenarios skipped: {skipped}"
        )
    dims = ["topology", "episode", "primary", "fence", "standby", "responder", "feature"]
    for dim in dims:
        counts = Counter(r.kinds[dim] for r in results if not r.real)
        lines.append(f"  {dim}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    delivery = Counter(f for r in results if not r.real for f in r.delivery_faults)
    lines.append("  delivery: " + ", ".join(f"{k} {v}" for k, v in sorted(delivery.items())))
    kinds = Counter(r.kinds.get("real", "") for r in results if r.real)
    if real:
        lines.append("  real-process: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    lines.append(f"  who_signs facts checked: {sum(r.claims_checked for r in results)}")
    lines.append(f"  drills run: {sum(r.drills for r in results)}")
    for label, is_real, unit in (
        ("in-process", False, "manual-clock s"),
        ("real-process", True, "wall s"),
    ):
        times = [t.seconds for r in results for t in r.timings if t.real == is_real]
        beyond = [t.seconds - t.hold for r in results for t in r.timings if t.real == is_real]
        if times:
            lines.append(
                f"  failover time {label} ({unit}, fault acknowledged -> standby signing, "
                f"n={len(times)}): p50 {percentile(times, 0.5):.2f}, "
                f"p95 {percentile(times, 0.95):.2f}, max {max(times):.2f}; beyond the hold: "
                f"p50 {percentile(beyond, 0.5):.2f}, p95 {percentile(beyond, 0.95):.2f}, "
                f"max {max(beyond):.2f}"
            )
    slow = sorted(results, key=lambda r: -r.seconds)[:3]
    lines.append("  slowest scenarios: " + ", ".join(f"{r.key} {r.seconds:.1f}s" for r in slow))
    for gap in (KNOWN_GAP_IN_FLIGHT_CUT, KNOWN_GAP_RETRIED_ACTIVATION):
        hit = [r for r in results if any(k.startswith(gap) for k in r.known)]
        if hit:
            lines.append(
                f"  known product gap (reported, not counted as a violation): {gap}: "
                f"{len(hit)} scenarios, e.g. " + ", ".join(f"--replay {r.key}" for r in hit[:3])
            )
    bad = [r for r in results if r.violations]
    lines.append(f"  violations: {sum(len(r.violations) for r in bad)} in {len(bad)} scenarios")
    return "\n".join(lines)


def report(r: Result, *, full_trace: bool = True) -> str:
    lines = [f"VIOLATION in scenario {r.key} (replay: python -m tests.chaos --replay {r.key})"]
    lines += [f"  - {v}" for v in r.violations]
    if full_trace:
        lines += r.trace
    return "\n".join(lines)
