"""Failover readiness: read-only checks that the path a failover takes works *now*.

A failover path that is never exercised breaks silently: a token expires, a standby falls out
of sync, a power switch moves, a password file is rotated. `preflight` probes every node and
every fence level's read-only check, and `judge` turns the answers into checks a person can act
on. Nothing here sends a mutating request; unverifiable is reported as such, never as fine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import PairConfig
from .drivers import Check, NodeHandle
from .observation import NodeObservation
from .state import PairState, Phase, Role


@dataclass(frozen=True)
class Readiness:
    """The outcome of one preflight round of a pair."""

    pair: str
    at: float  # wall clock
    checks: tuple[Check, ...]

    @property
    def ready(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    @property
    def failing(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.ok is False)

    @property
    def unverifiable(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.ok is None)

    @property
    def summary(self) -> str:
        if self.failing:
            return "NOT READY: " + "; ".join(f"{c.name}: {c.reason}" for c in self.failing)
        text = f"ready: {sum(1 for c in self.checks if c.ok)} checks pass"
        if self.unverifiable:
            text += f", {len(self.unverifiable)} unverifiable (" + ", ".join(
                c.name for c in self.unverifiable
            )
            text += ")"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "pair": self.pair,
            "at": self.at,
            "ready": self.ready,
            "summary": self.summary,
            "checks": [check_json(c) for c in self.checks],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Readiness:
        checks = tuple(
            Check(str(c["name"]), c["ok"], str(c["reason"])) for c in data.get("checks", [])
        )
        return cls(pair=str(data["pair"]), at=float(data["at"]), checks=checks)


def check_json(check: Check) -> dict[str, Any]:
    return {"name": check.name, "ok": check.ok, "verdict": check.verdict, "reason": check.reason}


def guarded(name: str, run: Callable[[], Iterable[Check] | Check]) -> tuple[Check, ...]:
    """Run checks that promise never to raise; a bug in one is a failing check, not a crash."""
    try:
        found = run()
        return (found,) if isinstance(found, Check) else tuple(found)
    except Exception as exc:  # a failing check, not a crash
        return (Check(name, False, f"the check itself raised {type(exc).__name__}: {exc}"),)


def judge(
    pair: PairConfig,
    state: PairState,
    observations: Mapping[str, NodeObservation],
    extra: Iterable[Check] = (),
) -> tuple[Check, ...]:
    """Checks from what every node just said, compared with the record of who signs. Pure."""
    checks: list[Check] = []
    for node in pair.nodes:
        obs = observations[node.name]
        if obs.reachable:
            checks.append(Check(f"{node.name}:api", True, f"answered: {_answer(obs)}"))
        else:
            checks.append(Check(f"{node.name}:api", False, f"no usable answer: {obs.detail}"))
    if state.phase is Phase.FAILING_OVER:
        # who signs is changing by design: judged again once the failover has ended
        checks.extend(_chains(pair, observations))
        checks.append(_automation(state))
        checks.extend(extra)
        return tuple(checks)
    checks.append(_signer(state, observations))
    standbys = [n.name for n in pair.nodes if state.roles.get(n.name) is Role.STANDBY]
    ready_standbys = []
    for name in standbys:
        check = _standby(name, observations[name])
        checks.append(check)
        if check.ok:
            ready_standbys.append(name)
    if not standbys:
        checks.append(Check("standby", False, "no node is a standby: a failover has no target"))
    elif not ready_standbys:
        checks.append(Check("standby", False, "no standby is ready: a failover has no target"))
    checks.extend(_chains(pair, observations))
    checks.append(_automation(state))
    checks.extend(extra)
    return tuple(checks)


def _answer(obs: NodeObservation) -> str:
    health = "healthy" if obs.healthy else "unhealthy"
    return f"{health}, {obs.says}"


def _signer(state: PairState, observations: Mapping[str, NodeObservation]) -> Check:
    """Exactly one node signs, and it is the one the record calls active."""
    active = state.active_node
    signing = sorted(n for n, o in observations.items() if o.signing is True)
    unknown = sorted(n for n, o in observations.items() if o.signing is None)
    if len(signing) >= 2:
        return Check("signer", False, f"split brain: {' and '.join(signing)} all report signing")
    if len(signing) == 1 and signing[0] != active:
        return Check(
            "signer",
            False,
            f"{signing[0]} reports signing but the record says {active or 'no node'} is active "
            f"(run `responder adopt {state.pair} {signing[0]}` once verified)",
        )
    if len(signing) == 1:
        if unknown:
            return Check(
                "signer",
                None,
                f"{active} signs as recorded; cannot tell for {', '.join(unknown)}",
            )
        return Check("signer", True, f"{active} signs as recorded and is the only signer")
    if unknown:
        return Check(
            "signer", None, f"no node reports signing; cannot tell for {', '.join(unknown)}"
        )
    return Check("signer", False, "no node signs: the validator is offline")


def _standby(name: str, obs: NodeObservation) -> Check:
    check = f"{name}:standby"
    if not obs.reachable:
        return Check(check, False, f"no usable answer, so it cannot take over: {obs.detail}")
    if obs.signing is True:
        return Check(check, False, "a standby that reports signing: two signers")
    if not obs.healthy:
        return Check(check, False, f"unhealthy, so a failover to it would be refused: {obs.detail}")
    if obs.signing is None:
        return Check(check, None, "healthy, but its driver cannot tell whether it signs")
    return Check(check, True, "healthy and not signing: ready to take over")


def _chains(pair: PairConfig, observations: Mapping[str, NodeObservation]) -> list[Check]:
    """Every node that names its chain names the same one (the pair's, for Ethereum)."""
    told = {n: o.chain for n, o in observations.items() if o.chain}
    if not told:
        return []
    expected = pair.ethereum.genesis_validators_root.lower() if pair.ethereum else None
    chains = {c.lower() for c in told.values()}
    if expected is not None and chains - {expected}:
        wrong = sorted(n for n, c in told.items() if c.lower() != expected)
        return [Check("chain", False, f"{', '.join(wrong)} on another chain than {expected}")]
    if len(chains) > 1:
        said = ", ".join(f"{n}: {c}" for n, c in sorted(told.items()))
        return [Check("chain", False, f"nodes are on different chains ({said})")]
    return [Check("chain", True, f"{', '.join(sorted(told))} on chain {next(iter(chains))}")]


def _automation(state: PairState) -> Check:
    """Whether an alert would lead to a failover at all."""
    if state.phase is Phase.BLOCKED:
        return Check("automation", False, f"blocked until acknowledged: {state.blocked_reason}")
    if state.held_reason is not None:
        return Check("automation", False, f"held: {state.held_reason}")
    if state.paused:
        return Check("automation", False, "paused: alerts are recorded but not acted on")
    if state.phase is Phase.FAILING_OVER:
        return Check(
            "automation",
            None,
            f"failover {state.failover_id} in flight: signer and standbys are checked after it",
        )
    return Check("automation", True, f"{state.phase.value}: an alert would be acted on")


def preflight(
    pair: PairConfig,
    state: PairState,
    handles: Mapping[tuple[str, str], NodeHandle],
    observe: Callable[[str], NodeObservation],
) -> tuple[Check, ...]:
    """Probe every node, run every driver's preflight and every fence level's check."""
    observations = {n.name: observe(n.name) for n in pair.nodes}
    extra: list[Check] = []
    for node in pair.nodes:
        handle = handles[(pair.name, node.name)]
        extra.extend(guarded(f"{node.name}:preflight", handle.driver.preflight))
        for i, fencer in enumerate(handle.fencers):
            extra.extend(guarded(f"{node.name}:fence-level-{i + 1}", fencer.check))
    return judge(pair, state, observations, extra)
