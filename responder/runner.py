"""The background loops of a serving process: deliveries, deadlines, failovers, observation.

Several processes may run them against one store; the store's transactions and failover leases
make sure each delivery is processed once and each failover is executed by one owner, and the
observation schedule makes one process probe each pair per interval. Probes run in their own
threads, one pair each, so a node that hangs never delays a delivery, a deadline, a failover or
another pair.
"""

from __future__ import annotations

import logging
import threading
import time

from .failover import Failover
from .service import Responder
from .store import Pruner, StoreReplaced

log = logging.getLogger("responder.runner")


class Runner:
    def __init__(self, responder: Responder, *, poll_interval: float, lease: float) -> None:
        self.responder = responder
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

    def wake(self) -> None:
        """Called after a delivery or operator request is recorded."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="responder-runner", daemon=True)
        self._thread.start()
        self._observer = threading.Thread(
            target=self._observe_loop, name="responder-observer", daemon=True
        )
        self._observer.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._observer is not None:
            self._observer.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                while self.responder.process_notifications() > 0:
                    pass  # drain a burst in short transactions before looking at deadlines
                self.responder.retry_faults()
                self.responder.tick()
                while (failover := self.responder.claim_failover()) is not None:
                    self._spawn(failover)
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

    def _spawn(self, failover: Failover) -> None:
        """Execute a claimed failover in its own thread, renewing its lease until it ends.

        Its own thread, so that a slow fence on one pair never delays deliveries or deadlines.
        """
        done = threading.Event()

        def execute() -> None:
            try:
                self.responder.execute(failover)
            except Exception:
                log.exception("failover stopped; another owner resumes it after the lease")
            finally:
                done.set()
                self._wake.set()

        def renew() -> None:
            store, owner = self.responder.store, self.responder.owner
            while not done.wait(self.lease / 3):
                until = self.responder.time.now() + self.lease
                if not store.renew_lease(failover.id, owner, until) and not done.is_set():
                    log.error("lease lost", extra={"failover_id": failover.id})
                    return

        threading.Thread(target=execute, name=f"failover-{failover.id}", daemon=True).start()
        threading.Thread(target=renew, name=f"lease-{failover.id}", daemon=True).start()

    def _observe_loop(self) -> None:
        """Start a probe round for every pair that is due, each in its own thread."""
        while not self._stop.is_set():
            for pair in self.responder.config.pairs:
                with self._probing_lock:
                    if pair.name in self._probing:
                        continue  # the last round of this pair is still waiting on a node
                now = time.monotonic()
                if self._look_again.get(pair.name, 0.0) > now:
                    continue  # another process probed it recently: no store write needed yet
                try:
                    due = self.responder.observation_due(pair.name)
                except Exception:
                    log.exception("observation schedule unavailable", extra={"pair": pair.name})
                    continue
                self._look_again[pair.name] = now + min(pair.observe.interval / 2, 5.0)
                if due:
                    with self._probing_lock:
                        self._probing.add(pair.name)
                    threading.Thread(
                        target=self._observe,
                        args=(pair.name,),
                        name=f"observe-{pair.name}",
                        daemon=True,
                    ).start()
            self._stop.wait(min(1.0, self.poll_interval))

    def _observe(self, pair: str) -> None:
        try:
            self.responder.observe_pair(pair)
        except Exception:
            log.exception("observation round failed", extra={"pair": pair})
        finally:
            with self._probing_lock:
                self._probing.discard(pair)
