"""What a chain backend of the agent must do, and what its answers mean."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

# the most a fence may hand over (a Solana tower is a few KiB, a CometBFT sign state < 1 KiB)
HANDOFF_MAX_BYTES = 256 * 1024


class AgentError(Exception):
    """A step that is not confirmed, with a reason for the responder's journal.

    `status` is the HTTP status the agent answers: 409 refused before anything was done (a
    precondition failed), 502 the node gave no usable answer, 504 it did not confirm in time.
    """

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ChainStatus:
    healthy: bool
    signing: bool
    chain: str | None = None  # genesis hash / chain id, compared across a pair's nodes
    detail: str = ""


@dataclass(frozen=True)
class Position:
    """How far the chain is, and the last slot or height the validator's key signed (None:
    not seen): the responder waits on this when a fence brought no hand-off."""

    unit: str  # "slot" | "height"
    current: int
    last_signed: int | None


class Backend(Protocol):
    """One chain's procedure on one host.

    `fence` returns only once the node is verified unable to sign, with what the standby needs
    (the hand-off, a JSON object); it is idempotent: fencing a fenced node verifies again and
    hands over the same state. `activate` returns only once the node is verified signing with
    the validator's key; without a hand-off it refuses unless `waived` says who allowed it.
    Every command and RPC call is bounded by the backend's timeouts; a failure raises
    AgentError, and the step may or may not have happened (the responder verifies).
    """

    def status(self) -> ChainStatus: ...

    def fence(self, planned: bool) -> Mapping[str, Any]: ...

    def activate(self, handoff: Mapping[str, Any] | None, waived: str | None) -> str: ...

    def position(self) -> Position: ...


def handoff_size(handoff: Mapping[str, Any]) -> int:
    return len(json.dumps(handoff, separators=(",", ":")).encode())


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename over, fsync the directory. The file
    keeps the old one's mode and (where permitted) owner: the validator or signer that owns
    it (a tower, a sign state) must still read and write it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        old = path.stat()
    except FileNotFoundError:
        old = None
    try:
        with open(tmp, "wb") as f:
            if old is not None:
                os.fchmod(f.fileno(), stat.S_IMODE(old.st_mode))
                with contextlib.suppress(PermissionError):
                    os.fchown(f.fileno(), old.st_uid, old.st_gid)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
