"""The right to write, one writer at a time across threads and forked worker processes.

A thread takes a re-entrant lock, then its process takes an flock on a lock file: waiters
queue in the kernel and are woken at release, instead of polling (SQLite's busy handler
sleeps 1, 2, 5 ... 100 ms between tries, far past the fraction of a millisecond a write
holds the lock). Each process opens its own descriptor (a forked child too).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class WriterLock:
    """Re-entrant in one thread; exclusive against every other thread and process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.RLock()
        self._local = threading.local()
        self._fd: tuple[int, int] | None = None  # (pid, fd): one per process

    def _descriptor(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._fd[0] != pid:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._fd = (pid, fd)
        return self._fd[1]

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._thread_lock:
            depth = getattr(self._local, "depth", 0)
            fd = self._descriptor() if depth == 0 else -1
            if depth == 0:
                fcntl.flock(fd, fcntl.LOCK_EX)
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth = depth
                if depth == 0:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close this process's descriptor (a forked child's is its own)."""
        if self._fd is not None and self._fd[0] == os.getpid():
            os.close(self._fd[1])
            self._fd = None
