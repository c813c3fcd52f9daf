"""Injected time: logic asks a Clock, so tests step time by hand instead of sleeping.

Two clocks, two jobs. The wall clock (`now`) stamps records and tells chain time; it can step
when NTP or an operator corrects it. Durations (holds, cooldowns, leases, settle times) are
measured on the monotonic clock, which never jumps. `Timebase` turns the monotonic clock into
"responder time": seconds that read like wall time when nothing stepped, shared by every process
on one host through an anchor kept in the store, and immune to wall-clock steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch: for records, chain time and display."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never steps: for every duration."""
        ...

    def boot_id(self) -> str:
        """Names the monotonic clock's epoch; it changes when the host reboots."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait (settle loops); a manual clock just moves on."""
        ...


class SystemClock:
    """The real clocks. CLOCK_MONOTONIC is system-wide, so every gunicorn worker shares it."""

    def __init__(self) -> None:
        self._boot: str | None = None

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def boot_id(self) -> str:
        """Read once: a process never outlives its boot (and responder time is asked for at
        every step, where reading a file each time cost an eighth of a busy worker's CPU)."""
        if self._boot is None:
            try:
                self._boot = _BOOT_ID.read_text(encoding="ascii").strip()
            except OSError:
                self._boot = "no-boot-id"
        return self._boot

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


class ManualClock:
    """Clocks that move only when told to; for tests and simulations.

    `advance` moves both clocks (time passes); `step_wall` moves only the wall clock, either
    way, as an NTP correction or a mis-set clock would.
    """

    def __init__(self, start: float = 1_800_000_000.0, *, boot: str = "manual") -> None:
        self._now = start
        self._mono = 1000.0
        self._boot = boot

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def boot_id(self) -> str:
        return self._boot

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards; use step_wall for a clock correction")
        self._now += seconds
        self._mono += seconds

    def step_wall(self, seconds: float) -> None:
        self._now += seconds

    def reboot(self, boot: str) -> None:
        """A new boot: the monotonic clock restarts near zero."""
        self._boot = boot
        self._mono = 10.0

    def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))


class Timebase:
    """Responder time: the monotonic clock plus an offset shared through the store.

    The offset is fixed once per boot (wall minus monotonic at the first look), so responder
    time reads like wall time, but a wall-clock step afterwards changes nothing it measures.
    `anchor(boot_id, proposed)` stores `proposed` for a boot unless one is stored already, and
    returns the stored one: every process on the host then agrees.
    """

    def __init__(self, clock: Clock, anchor: Callable[[str, float], float]) -> None:
        self.clock = clock
        self._anchor = anchor
        self._boot: str | None = None
        self._offset = 0.0

    def _current_offset(self) -> float:
        boot = self.clock.boot_id()
        if boot != self._boot:
            proposed = self.clock.now() - self.clock.monotonic()
            self._offset = self._anchor(boot, proposed)
            self._boot = boot
        return self._offset

    def now(self) -> float:
        """Responder time: compare it only with other responder times."""
        return self.clock.monotonic() + self._current_offset()

    def to_wall(self, t: float) -> float:
        """A responder time as the wall-clock time it corresponds to now (for display)."""
        return t - self.now() + self.clock.now()

    def from_wall(self, wall: float) -> float:
        """A wall-clock instant (e.g. an epoch boundary) as responder time."""
        return wall - self.clock.now() + self.now()
