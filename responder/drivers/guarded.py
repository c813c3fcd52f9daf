"""Node calls that first prove the caller still leads (replicas on etcd, docs/ha.md).

Wraps a node's driver and fence levels: before each call that reaches the node, the lease
guard renews the leader lease and raises LeaseLost unless it holds for the call's whole
deadline. A replica paused or cut off past its lease therefore sends nothing when it
resumes; `plan` and the config-only properties pass through untouched.
"""

from __future__ import annotations

from typing import Protocol

from ..store import LeaseLost
from .base import (
    Action,
    ActionContext,
    ChainPosition,
    Check,
    Fencer,
    NodeDriver,
    NodeStatus,
    PlannedCall,
    StepResult,
)


class LeaseGuard(Protocol):
    def check_lease(self, needed: float) -> None:
        """Raise LeaseLost unless this replica leads for at least `needed` more seconds."""
        ...


class GuardedDriver:
    """A NodeDriver whose node calls each pass the lease guard first."""

    def __init__(self, inner: NodeDriver, guard: LeaseGuard, node: str) -> None:
        self._inner = inner
        self._guard = guard
        self._node = node

    @property
    def settle_time(self) -> float:
        return self._inner.settle_time

    @property
    def needs_handoff(self) -> bool:
        return self._inner.needs_handoff

    def status(self) -> NodeStatus:
        self._guard.check_lease(self._inner.settle_time)
        return self._inner.status()

    def fence(self, ctx: ActionContext) -> StepResult:
        self._guard.check_lease(self._inner.settle_time)
        return self._inner.fence(ctx)

    def activate(self, ctx: ActionContext) -> StepResult:
        self._guard.check_lease(self._inner.settle_time)
        return self._inner.activate(ctx)

    def chain_position(self) -> ChainPosition:
        self._guard.check_lease(self._inner.settle_time)
        return self._inner.chain_position()

    def plan(self, action: Action, ctx: ActionContext) -> PlannedCall:
        return self._inner.plan(action, ctx)

    def preflight(self) -> tuple[Check, ...]:
        """Never raises by contract: a lost lease is one failing check, and nothing is sent."""
        try:
            self._guard.check_lease(self._inner.settle_time)
        except LeaseLost as exc:
            return (Check(f"{self._node}:lease", False, f"not checked: {exc}"),)
        return self._inner.preflight()


class GuardedFencer:
    """A fence level whose fence and check calls each pass the lease guard first."""

    def __init__(self, inner: Fencer, deadline: float, guard: LeaseGuard, check_name: str) -> None:
        self._inner = inner
        self._deadline = deadline
        self._guard = guard
        self._check_name = check_name

    @property
    def name(self) -> str:
        return self._inner.name

    def fence(self, ctx: ActionContext) -> StepResult:
        self._guard.check_lease(self._deadline)
        return self._inner.fence(ctx)

    def plan(self, ctx: ActionContext) -> PlannedCall:
        return self._inner.plan(ctx)

    def check(self) -> Check:
        """Never raises by contract: a lost lease is a failing check, and nothing is sent."""
        try:
            self._guard.check_lease(self._deadline)
        except LeaseLost as exc:
            return Check(self._check_name, False, f"not checked: {exc}")
        return self._inner.check()
