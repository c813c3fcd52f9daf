"""Which replica acts: the sole one on SQLite, the holder of the etcd leader key otherwise.

Every worker of a replica asks the same question of the same key, so they all answer alike;
one worker per replica (the holder of a local file lock) campaigns for the key and keeps
the replica's lease alive, and another worker takes that over if it dies (any client may
renew a lease it knows the id of). The runner acts only while `acting()`; the store's
epoch-conditioned writes and the node-call guard hold even when this view is stale.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .store.etcd import EtcdStore, EtcdUnavailable, Leader

log = logging.getLogger("responder.leadership")


class Leadership(Protocol):
    def acting(self) -> bool:
        """True while this replica may run deadlines, failovers and rounds."""
        ...

    def view(self) -> dict[str, Any]:
        """For /healthz, status and metrics: role, leader, since, and why not, if so."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class SoleReplica:
    """SQLite: one replica, always the leader."""

    def acting(self) -> bool:
        return True

    def view(self) -> dict[str, Any]:
        return {"role": "leader", "backend": "sqlite"}

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None


@dataclass(frozen=True)
class _Seen:
    leader: Leader | None
    error: str | None
    at: float  # monotonic


class EtcdLeadership:
    """Campaigns for the leader key (one worker per replica) and watches it (every worker)."""

    def __init__(
        self,
        store: EtcdStore,
        lock_path: Path,
        *,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.replica = store.replica
        self.lock_path = lock_path
        self.interval = min(1.0, store.state.lease_ttl / 3)
        self._now = now
        self._monotonic = monotonic
        self._seen = _Seen(None, "not checked yet", monotonic())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._was_leading = False

    def _campaigner(self) -> bool:
        """Whether this worker campaigns for the replica: it holds the replica's file lock."""
        if self._lock_fd is not None:
            return True
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)  # plain gunicorn: maybe new
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def round(self) -> _Seen:
        """One look (and, for the campaigning worker, one campaign or renewal)."""
        try:
            campaigning = self._campaigner()
            leader = self.store.campaign(self._now()) if campaigning else self.store.leader()
            seen = _Seen(leader, None, self._monotonic())
        except EtcdUnavailable as exc:
            seen = _Seen(None, f"etcd unavailable: {exc}", self._monotonic())
        leading = seen.leader is not None and seen.leader.replica == self.replica
        if leading != self._was_leading or (seen.error and not self._seen.error):
            if leading:
                log.warning("replica %s is the leader: it acts", self.replica)
            elif seen.error:
                log.error("replica %s stops acting: %s", self.replica, seen.error)
            else:
                who = seen.leader.replica if seen.leader else "no replica"
                log.warning("replica %s follows (%s leads): it does not act", self.replica, who)
        self._was_leading = leading
        self._seen = seen
        return seen

    def acting(self) -> bool:
        seen = self._seen
        fresh = self._monotonic() - seen.at < self.store.state.lease_ttl / 2
        return fresh and seen.leader is not None and seen.leader.replica == self.replica

    def view(self) -> dict[str, Any]:
        """Read live, so every worker of a replica answers alike."""
        try:
            leader = self.store.leader()
            error = None
        except EtcdUnavailable as exc:
            leader, error = None, f"etcd unavailable: {exc}"
        doc: dict[str, Any] = {
            "role": "leader"
            if leader is not None and leader.replica == self.replica
            else "follower",
            "backend": "etcd",
            "replica": self.replica,
            "leader": leader.replica if leader else None,
            "leader_since": leader.since if leader else None,
        }
        if error:
            doc["error"] = error
        return doc

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.round()
            self._stop.wait(self.interval)

    def start(self) -> None:
        self.round()
        self._thread = threading.Thread(target=self._loop, name="leadership", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops watching. The lease is left to expire, not revoked: one worker stopping
        (gunicorn replaces workers) is not the replica stopping, and a sibling renews it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
