"""The driver contract: what the executor may ask of a node, and what an answer means."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Action = Literal["fence", "activate"]


class DriverError(Exception):
    """The node gave no usable answer, or did not confirm the step. Carries a readable reason."""


@dataclass(frozen=True)
class NodeStatus:
    healthy: bool
    signing: bool | None  # None: the driver cannot tell
    detail: str = ""
    chain: str | None = None  # the chain the node says it is on (genesis root, chain id), if told


@dataclass(frozen=True)
class Check:
    """One read-only readiness check: passing, failing, or unverifiable (`ok` None).

    `name` is short and stable (a metric label: "node-a:api", "node-a:fence-1");
    `reason` says in plain words what was seen.
    """

    name: str
    ok: bool | None
    reason: str

    @property
    def verdict(self) -> str:
        return {True: "ok", False: "FAIL", None: "unverifiable"}[self.ok]


@dataclass(frozen=True)
class ActionContext:
    """Why an action runs; passed to nodes (command env, request logs), never secrets."""

    pair: str
    node: str
    failover_id: str
    source: str | None
    target: str
    reason: str
    # what the fence handed over for the activation (e.g. slashing-protection history)
    handoff: Mapping[str, Any] = field(default_factory=dict)
    # set when activation may proceed without a hand-off, saying who or what allowed it
    handoff_waived: str | None = None
    planned: bool = False  # a switchover: the node may wait for a safe moment to fence


@dataclass(frozen=True)
class StepResult:
    """A confirmed step, with what the node said (kept in the journal)."""

    detail: str
    data: Mapping[str, Any] = field(default_factory=dict)
    handoff: Mapping[str, Any] | None = None  # persisted before activation, passed to it


@dataclass(frozen=True)
class ChainPosition:
    """How far the chain is as a node sees it, and the last slot or height the validator's
    key signed (None: not seen recently)."""

    unit: str  # "slot" | "height"
    current: int
    last_signed: int | None


@dataclass(frozen=True)
class PlannedCall:
    """The exact mutating request a step would send; secrets are redacted."""

    description: str
    request: Mapping[str, Any]


class NodeDriver(Protocol):
    """Talks to one node.

    Idempotency: repeating `fence` on a fenced node, or `activate` on an active node, confirms
    again without harm; the executor repeats the step it was in after a crash.
    Limits: every call returns or raises within one total deadline (HTTP drivers:
    connect_timeout + timeout for connect, send and the whole answer; commands: timeout), and
    an answer larger than the driver's byte cap is refused, never truncated (see transport.py).
    Secrets: HTTP drivers never quote a node's answer body in a reason, at most a scrubbed
    short summary of its message (transport.error_summary).
    Raising: `status` raises DriverError when the node gives no usable answer; `fence` and
    `activate` return only once the node confirmed the step, and raise DriverError otherwise
    (the step may or may not have happened: the executor treats it as failed).
    Trust: the executor never takes a mutating call's word alone; it verifies with `status`.
    `plan` never sends anything: it describes what `fence`/`activate` would send (dry-run).
    """

    @property
    def settle_time(self) -> float:
        """Seconds a "not signing" answer must hold after a call that failed before the node
        counts as silent: at least the longest a call of this driver can take to land (for
        HTTP drivers, the transport's total deadline connect_timeout + timeout)."""
        ...

    def status(self) -> NodeStatus: ...

    def fence(self, ctx: ActionContext) -> StepResult: ...

    def activate(self, ctx: ActionContext) -> StepResult: ...

    def plan(self, action: Action, ctx: ActionContext) -> PlannedCall: ...

    @property
    def needs_handoff(self) -> bool:
        """True when activating this node is unsafe without what a confirmed fence hands over."""
        ...

    def chain_position(self) -> ChainPosition:
        """Read-only: the chain's progress and the validator's last signature as this node
        sees it, for the `handoff.without: chain` gate. DriverError when it cannot tell."""
        ...

    def preflight(self) -> tuple[Check, ...]:
        """Read-only checks of what this node's fence and activation need beyond `status`:
        the files an activation reads (tokens, keystores, passwords: present, parseable, not
        readable by group or others), the commands it runs, the keys where a listing shows
        them, the chain and sync state when the driver can ask. Never mutates a node; never
        raises (a call that fails is a failing check). Check names start with the node name.
        """
        ...


class Fencer(Protocol):
    """An extra fence level (power switch, stop command), tried after the driver's own fence.

    Same rules as NodeDriver.fence: return only when the fence is confirmed, raise DriverError
    otherwise; idempotent; bounded by its total deadline and byte cap. `plan` sends nothing.
    """

    @property
    def name(self) -> str: ...

    def fence(self, ctx: ActionContext) -> StepResult: ...

    def plan(self, ctx: ActionContext) -> PlannedCall: ...

    def check(self) -> Check:
        """The level's configured read-only check (`check:` in its config): ok when it
        answers as expected, failing when not, unverifiable (ok None) when none is configured.
        Never mutates, never raises; bounded like `fence`."""
        ...
