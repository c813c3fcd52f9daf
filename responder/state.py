"""The per-pair state the policy engine reads and writes: plain data, JSON round-trippable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from .config import PairConfig


class Phase(StrEnum):
    """Where a pair's automation stands."""

    ARMED = "armed"  # watching, no fault pending
    PENDING = "pending"  # a fault is being held (deadline) or gated (cooldown, pause, no standby)
    FAILING_OVER = "failing_over"  # a failover is in flight
    BLOCKED = "blocked"  # the last failover failed or aborted: automation waits for an ack


class Role(StrEnum):
    ACTIVE = "active"  # the one node allowed to sign
    STANDBY = "standby"  # not signing, eligible as a failover target
    FENCED = "fenced"  # confirmed unable to sign; stays so until an operator un-fences it


@dataclass(frozen=True)
class Signal:
    """A firing trigger alert, remembered from the first time it was seen."""

    alertname: str
    fingerprint: str
    starts_at: str
    node: str
    since: float

    @property
    def key(self) -> str:
        return f"{self.fingerprint}@{self.starts_at}"


@dataclass(frozen=True)
class Attempt:
    """A failover attempt, for cooldown and max-failovers accounting."""

    at: float
    automatic: bool
    failover_id: str


@dataclass(frozen=True)
class PairState:
    pair: str
    roles: Mapping[str, Role]
    phase: Phase = Phase.ARMED
    paused: bool = False
    signals: tuple[Signal, ...] = ()
    resolved: Mapping[str, float] = field(default_factory=dict)
    deadline: float | None = None
    failover_id: str | None = None
    failover_seq: int = 0
    attempts: tuple[Attempt, ...] = ()
    blocked_reason: str | None = None
    reason: str = "armed"
    reason_at: float = 0.0

    @classmethod
    def initial(cls, pair: PairConfig, now: float) -> PairState:
        """The first configured node starts as the active signer; the rest are standbys."""
        roles = {
            n.name: (Role.ACTIVE if i == 0 else Role.STANDBY) for i, n in enumerate(pair.nodes)
        }
        return cls(pair=pair.name, roles=roles, reason="armed: initial state", reason_at=now)

    @property
    def active_node(self) -> str | None:
        for name, role in self.roles.items():
            if role is Role.ACTIVE:
                return name
        return None

    def signals_on(self, node: str) -> tuple[Signal, ...]:
        return tuple(s for s in self.signals if s.node == node)

    def evolve(self, **changes: Any) -> PairState:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "pair": self.pair,
            "roles": {k: v.value for k, v in self.roles.items()},
            "phase": self.phase.value,
            "paused": self.paused,
            "signals": [s.__dict__ for s in self.signals],
            "resolved": dict(self.resolved),
            "deadline": self.deadline,
            "failover_id": self.failover_id,
            "failover_seq": self.failover_seq,
            "attempts": [a.__dict__ for a in self.attempts],
            "blocked_reason": self.blocked_reason,
            "reason": self.reason,
            "reason_at": self.reason_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PairState:
        return cls(
            pair=data["pair"],
            roles={k: Role(v) for k, v in data["roles"].items()},
            phase=Phase(data["phase"]),
            paused=bool(data["paused"]),
            signals=tuple(Signal(**s) for s in data["signals"]),
            resolved=dict(data["resolved"]),
            deadline=data["deadline"],
            failover_id=data["failover_id"],
            failover_seq=int(data["failover_seq"]),
            attempts=tuple(Attempt(**a) for a in data["attempts"]),
            blocked_reason=data["blocked_reason"],
            reason=data["reason"],
            reason_at=float(data["reason_at"]),
        )
