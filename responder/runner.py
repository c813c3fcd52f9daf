"""The background loops of a serving process: deliveries, deadlines, failovers, observation.

Several processes may run them against one store; the store's transactions and failover leases
make sure each delivery is processed once and each failover is executed by one owner, and the
schedules make one process probe each pair (and run its preflight and scheduled drills) per
interval. These read-only rounds run on a pool of their own, apart from deliveries, deadlines
and failovers, so a node that hangs never delays any of those; at worst, as many hanging nodes
as the pool has threads delay other pairs' rounds by their timeout. Failovers run on their own
pool too (see MAX_FAILOVER_THREADS).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from .config import ETCD_OPS_PER_PAIR
from .failover import Failover
from .leadership import Leadership, SoleReplica
from .service import Responder
from .store import LeaseLost, Pruner, StoreReplaced

log = logging.getLogger("responder.runner")

# Failovers one process executes at once. Each runs in a thread of its own (a slow fence on
# one pair never delays another), from a pool: 1,000 pairs faulted together start within a
# second instead of waiting for 2,000 thread starts. Failovers beyond it stay unclaimed, for
# another worker or the next free thread.
MAX_FAILOVER_THREADS = 512
# A thread waiting for the interpreter lock gets it after at most this long (CPython's default
# is 5 ms): a deadline or a fence step never waits behind a busy request thread for longer.
GIL_SWITCH_INTERVAL = 0.001
TICK_CHUNK = 50  # deadlines decided per transaction when many fall due at once
NOTIFICATION_BATCH = 20  # deliveries applied per transaction
# Read-only rounds (probes, preflight, drills) one process runs at once: each waits on nodes
# in a thread of its own, but 1,000 pairs' rounds never become 2,000 threads that crowd out
# a failover. A round waiting for a thread is not asked for again until it has run.
ROUND_THREADS = 32
ROUND_DEFER_MAX = 10.0  # seconds new rounds wait while this process runs failovers
SPREAD_ABOVE = 30  # read-only rounds: spread the first ones when there are more than this


class Runner:
    def __init__(
        self,
        responder: Responder,
        *,
        poll_interval: float,
        lease: float,
        leadership: Leadership | None = None,
    ) -> None:
        self.responder = responder
        self.leadership = leadership or SoleReplica()
        self.poll_interval = poll_interval
        self.lease = lease
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: threading.Thread | None = None
        self._probing: set[str] = set()
        self._probing_lock = threading.Lock()
        self._look_again: dict[str, float] = {}  # monotonic time to ask the schedule again
        self._pruner = Pruner(responder.store, responder.config.retention)
        self._store_gone = False
        self._pool = ThreadPoolExecutor(MAX_FAILOVER_THREADS, thread_name_prefix="failover")
        self._rounds = ThreadPoolExecutor(ROUND_THREADS, thread_name_prefix="round")
        self._running: set[str] = set()  # failover ids this process executes now
        self._running_lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._rounds_wait_until = 0.0  # monotonic: rounds queued earlier skip until then
        self._led = False  # pair states ensured since this replica last became the leader
        # a store that bounds a transaction's writes (etcd) gets smaller units of work
        max_ops = getattr(responder.store, "max_ops", None)
        per_unit = max(1, max_ops // ETCD_OPS_PER_PAIR) if isinstance(max_ops, int) else None
        self._tick_chunk = min(TICK_CHUNK, per_unit) if per_unit else TICK_CHUNK
        self._batch = min(NOTIFICATION_BATCH, per_unit) if per_unit else NOTIFICATION_BATCH

    def wake(self) -> None:
        """Called after a delivery or operator request is recorded."""
        self._wake.set()

    def start(self) -> None:
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self._thread = threading.Thread(target=self._loop, name="responder-runner", daemon=True)
        self._thread.start()
        self._observer = threading.Thread(
            target=self._observe_loop, name="responder-observer", daemon=True
        )
        self._observer.start()
        self._renewer = threading.Thread(target=self._renew_loop, name="lease-renewer", daemon=True)
        self._renewer.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._observer is not None:
            self._observer.join(timeout)
        if self._renewer is not None:
            self._renewer.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._rounds.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.leadership.acting():  # a follower records deliveries, nothing more
                self._led = False
                self._wake.wait(self.poll_interval)
                self._wake.clear()
                continue
            try:
                if not self._led:  # this replica just became the leader
                    self.responder.ensure_pairs()
                    self._led = True
                while self.responder.process_notifications(self._batch) > 0:
                    pass  # drain a burst in short transactions before looking at deadlines
                self.responder.retry_faults()
                while self.responder.tick(self._tick_chunk) >= self._tick_chunk:
                    pass  # short transactions: deliveries are recorded in between
                self._start_failovers()
                self._pruner.maybe_prune(self.responder.time)
                self._store_gone = False
                timeout = self.poll_interval
                deadline = self.responder.next_deadline()
                if deadline is not None:
                    timeout = max(0.01, min(timeout, deadline - self.responder.time.now()))
            except StoreReplaced as exc:
                if not self._store_gone:  # said once, not a traceback every poll
                    log.error("state database unusable, nothing is acted on: %s", exc)
                self._store_gone = True
                timeout = self.poll_interval
            except Exception:
                log.exception("background loop error; retrying")
                timeout = self.poll_interval
            self._wake.wait(timeout)
            self._wake.clear()

    def _start_failovers(self) -> None:
        for failover in self.responder.claim_failovers(self._free_threads()):
            self._spawn(failover)

    def _free_threads(self) -> int:
        with self._running_lock:
            return MAX_FAILOVER_THREADS - len(self._running)

    def _spawn(self, failover: Failover) -> None:
        """Execute a claimed failover on a pool thread; the renewer keeps its lease."""
        with self._running_lock:
            self._running.add(failover.id)

        def execute() -> None:
            try:
                self.responder.execute(failover)
            except LeaseLost as exc:  # another replica leads now: it resumes this failover
                log.warning(
                    "failover stopped before its next step: %s",
                    exc,
                    extra={"failover_id": failover.id},
                )
            except Exception:
                log.exception("failover stopped; another owner resumes it after the lease")
            finally:
                with self._running_lock:
                    self._running.discard(failover.id)
                self._wake.set()

        self._pool.submit(execute)

    def _renew_loop(self) -> None:
        """Renew the leases of every failover this process runs, together, each lease/3."""
        store, owner = self.responder.store, self.responder.owner
        while not self._stop.wait(self.lease / 3):
            with self._running_lock:
                running = set(self._running)
            if not running:
                continue
            until = self.responder.time.now() + self.lease
            try:
                held = store.renew_leases(running, owner, until)
            except Exception:
                log.exception("could not renew failover leases")
                continue
            with self._running_lock:
                lost = (running - held) & self._running  # ended meanwhile: not lost
            for failover_id in sorted(lost):
                current = store.get_failover(failover_id)
                if current is not None and current.step.terminal:
                    continue  # it ended between the snapshot and the renewal
                log.error("lease lost", extra={"failover_id": failover_id})

    def _jobs(self) -> list[tuple[str, float, Callable[[], object]]]:
        """(schedule key, interval, run it): the read-only rounds of every pair. The keys are
        those `Responder.claim_rounds` (and observation_due, readiness_due, drill_due) claim."""
        r = self.responder
        jobs: list[tuple[str, float, Callable[[], object]]] = []
        for pair in r.config.pairs:
            name = pair.name
            jobs.append((name, pair.observe.interval, partial(r.observe_pair, name)))
            jobs.append(
                (f"readiness:{name}", pair.readiness.interval, partial(r.check_readiness, name))
            )
            if pair.readiness.drill_every is not None:
                jobs.append(
                    (
                        f"drill:{name}",
                        pair.readiness.drill_every,
                        partial(r.drill, name, None, "schedule"),
                    )
                )
        return jobs

    def _observe_loop(self) -> None:
        """Start every read-only round that is due (probes, preflight, scheduled drills), each
        in its own thread. The schedules of every round worth asking about are claimed in one
        transaction; with many pairs, the first rounds are spread over a few seconds rather
        than all started in the same instant."""
        jobs = self._jobs()
        if len(jobs) > SPREAD_ABOVE:
            start = time.monotonic()
            for i, (key, interval, _run) in enumerate(jobs):
                self._look_again[key] = start + min(interval / 2, 5.0) * i / len(jobs)
        deferred_since: float | None = None
        while not self._stop.is_set():
            if not self.leadership.acting():  # followers run no rounds (drills mutate)
                self._stop.wait(min(1.0, self.poll_interval))
                continue
            now = time.monotonic()
            with self._running_lock:
                busy = bool(self._running)
            if busy and (deferred_since is None or now - deferred_since < ROUND_DEFER_MAX):
                # failovers first: they probe their own pairs, and the rounds of the others
                # can wait a few seconds for the CPU and the store
                if deferred_since is None:
                    deferred_since = now
                    self._rounds_wait_until = now + ROUND_DEFER_MAX
                self._stop.wait(min(1.0, self.poll_interval))
                continue
            deferred_since = None
            self._rounds_wait_until = 0.0
            with self._probing_lock:
                asking = [
                    (key, interval, run_fn)
                    for key, interval, run_fn in jobs
                    if key not in self._probing  # the last round still waits on a node
                    and self._look_again.get(key, 0.0) <= now  # else: ran recently
                ]
            if asking:
                try:
                    due = self.responder.claim_rounds([(k, i) for k, i, _ in asking])
                except Exception:
                    log.exception("schedules unavailable")
                    due = set()
                    asking = []
                for key, interval, run_fn in asking:
                    self._look_again[key] = now + min(interval / 2, 5.0)
                    if key not in due:
                        continue
                    with self._probing_lock:
                        self._probing.add(key)
                    self._rounds.submit(self._round, key, run_fn)
            self._stop.wait(min(1.0, self.poll_interval))

    def _round(self, key: str, run: Callable[[], object]) -> None:
        try:
            with self._running_lock:
                busy = bool(self._running)
            if busy and time.monotonic() < self._rounds_wait_until:
                return  # queued before a storm of failovers began: this interval is skipped
            run()
        except Exception:
            log.exception("%s round failed", key, extra={"pair": key.rsplit(":", maxsplit=1)[-1]})
        finally:
            with self._probing_lock:
                self._probing.discard(key)
