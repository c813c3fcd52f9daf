"""A failover's journaled steps, as data: one Enum and one transition table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any


class Step(StrEnum):
    PLANNED = "planned"  # decided; the target is probed next
    FENCING = "fencing"  # fence levels are being tried on the source
    FENCED = "fenced"  # the source's fence is confirmed (or there was no source)
    AWAITING = "awaiting"  # fenced, but activation waits for a gate (operator, chain liveness)
    ACTIVATING = "activating"  # the target's activation was requested
    DONE = "done"  # the target is the active signer (or, in dry-run, the plan is complete)
    ABORTED = "aborted"  # stopped before anything was changed
    FAILED = "failed"  # stopped after a change; a human must look

    @property
    def terminal(self) -> bool:
        return self in (Step.DONE, Step.ABORTED, Step.FAILED)


TRANSITIONS: Mapping[Step, frozenset[Step]] = {
    Step.PLANNED: frozenset({Step.FENCING, Step.FENCED, Step.ABORTED}),
    Step.FENCING: frozenset({Step.FENCED, Step.FAILED}),
    Step.FENCED: frozenset({Step.ACTIVATING, Step.AWAITING, Step.FAILED}),
    Step.AWAITING: frozenset({Step.ACTIVATING, Step.FAILED}),
    Step.ACTIVATING: frozenset({Step.DONE, Step.FAILED}),
    Step.DONE: frozenset(),
    Step.ABORTED: frozenset(),
    Step.FAILED: frozenset(),
}


class IllegalStep(Exception):
    """A step change the table does not allow: a bug, never something to continue past."""


def check_transition(current: Step, new: Step) -> None:
    if new not in TRANSITIONS[current]:
        raise IllegalStep(f"illegal failover step {current.value} -> {new.value}")


@dataclass(frozen=True)
class Failover:
    id: str
    pair: str
    source: str | None
    target: str
    automatic: bool
    dry_run: bool
    reason: str
    step: Step
    created_at: float
    updated_at: float
    outcome_reason: str | None = None
    data: Mapping[str, Any] | None = None
    wake_at: float | None = None  # an unowned failover is not resumed before this time

    def advance(self, step: Step, now: float, **changes: Any) -> Failover:
        check_transition(self.step, step)
        return replace(self, step=step, updated_at=now, **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pair": self.pair,
            "source": self.source,
            "target": self.target,
            "automatic": self.automatic,
            "dry_run": self.dry_run,
            "reason": self.reason,
            "step": self.step.value,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "outcome_reason": self.outcome_reason,
            "data": dict(self.data or {}),
            "wake_at": self.wake_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Failover:
        return cls(
            id=data["id"],
            pair=data["pair"],
            source=data["source"],
            target=data["target"],
            automatic=bool(data["automatic"]),
            dry_run=bool(data["dry_run"]),
            reason=data["reason"],
            step=Step(data["step"]),
            created_at=float(data["created_at"]),
            updated_at=float(data["updated_at"]),
            outcome_reason=data.get("outcome_reason"),
            data=dict(data.get("data") or {}),
            wake_at=data.get("wake_at"),
        )
