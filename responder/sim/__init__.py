"""The validator node simulator: one module per chain, plus what they share (common).

Test and demo equipment only: the product never imports it. `python -m responder.sim` runs an
Ethereum node (the default), `python -m responder.sim solana ...` or `... cosmos ...` the others.
"""

from __future__ import annotations

from .common import Interval, overlaps
from .ethereum import (
    FAULTS,
    KEY_FAULTS,
    MAINNET_GENESIS_ROOT,
    SEPOLIA_GENESIS_ROOT,
    UNHEALTHY_FAULTS,
    Sim,
    SimApp,
)

__all__ = [
    "FAULTS",
    "KEY_FAULTS",
    "MAINNET_GENESIS_ROOT",
    "SEPOLIA_GENESIS_ROOT",
    "UNHEALTHY_FAULTS",
    "Interval",
    "Sim",
    "SimApp",
    "overlaps",
]
