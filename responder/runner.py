"""The background loop of a serving process: act on deliveries, deadlines and failovers.

Several processes may run it against one store; the store's transactions and failover leases
make sure each delivery is processed once and each failover is executed by one owner.
"""

from __future__ import annotations

import logging
import threading

from .failover import Failover
from .service import Responder

log = logging.getLogger("responder.runner")


class Runner:
    def __init__(self, responder: Responder, *, poll_interval: float, lease: float) -> None:
        self.responder = responder
        self.poll_interval = poll_interval
        self.lease = lease
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """Called after a delivery or operator request is recorded."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="responder-runner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                while self.responder.process_notifications() > 0:
                    pass  # drain a burst in short transactions before looking at deadlines
                self.responder.tick()
                while (failover := self.responder.claim_failover()) is not None:
                    self._spawn(failover)
                timeout = self.poll_interval
                deadline = self.responder.next_deadline()
                if deadline is not None:
                    timeout = max(0.01, min(timeout, deadline - self.responder.clock.now()))
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
                until = self.responder.clock.now() + self.lease
                if not store.renew_lease(failover.id, owner, until) and not done.is_set():
                    log.error("lease lost", extra={"failover_id": failover.id})
                    return

        threading.Thread(target=execute, name=f"failover-{failover.id}", daemon=True).start()
        threading.Thread(target=renew, name=f"lease-{failover.id}", daemon=True).start()
