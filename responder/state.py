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
    HELD = "held"  # what the nodes say contradicts the record: automation waits for `adopt`


class Consistency(StrEnum):
    """How the nodes' own answers compare with the record of who signs."""

    UNOBSERVED = "unobserved"  # no probe round yet
    CONSISTENT = "consistent"  # exactly the believed active node signs
    SPLIT_BRAIN = "split_brain"  # two or more nodes say they sign
    DIVERGED = "diverged"  # one node signs, and it is not the believed active one
    OUTAGE = "outage"  # every node answered, none signs
    UNKNOWN = "unknown"  # no node says it signs, and some did not answer or cannot tell


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
    planned: bool = False  # a switchover: no cooldown follows it


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
    held_reason: str | None = None  # set: automation does nothing until an operator adopts
    consistency: Consistency = Consistency.UNOBSERVED
    consistency_reason: str = "not probed yet"
    # nodes that may be signing although the record says otherwise, with why (a call to them
    # was cut or timed out and nothing verified them silent since)
    uncertain: Mapping[str, str] = field(default_factory=dict)
    abort_requested: str | None = None  # "<failover id> by <operator>": stop before activating

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
            "held_reason": self.held_reason,
            "consistency": self.consistency.value,
            "consistency_reason": self.consistency_reason,
            "uncertain": dict(self.uncertain),
            "abort_requested": self.abort_requested,
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
            held_reason=data.get("held_reason"),
            consistency=Consistency(data.get("consistency", "unobserved")),
            consistency_reason=str(data.get("consistency_reason", "not probed yet")),
            uncertain=dict(data.get("uncertain") or {}),
            abort_requested=data.get("abort_requested"),
        )
