"""Carries out one failover, journaling each step before and after it runs.

Journal writes are made durable together: right before each call that changes a node (its
"begin" and everything since), right after it (its outcome), before each read of a node (so
the answers read so far outlive a crash during it), before any wait, and when the run ends.
A lost lease is found at each of these commits, so a process that lost it calls no node after
the call it was in.

Order is the safety property: the target is probed, the source is fenced (levels in order
until one confirms and an independent read verifies it), every other node of the pair is probed
silent, and only then is the target activated. A call that failed may still land: the node is
then unknown until a "not signing" answer has held for its driver's settle time. In dry-run
every read-only probe runs and every mutating call is recorded as "would call" instead of sent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from .clock import Clock, Timebase
from .config import Config
from .drivers import ActionContext, Check, DriverError, NodeHandle, PlannedCall
from .failover import Failover, Step
from .liveness import BeaconClient, liveness_step, proposal_ahead
from .metrics import Metrics
from .observation import NodeObservation
from .policy import Event, FailoverEnded, NodeFenced, NodeInDoubt, decide, reconcile
from .readiness import check_json, guarded
from .state import PairState
from .store import EventRecord, LeaseLost, Store, StoreTxn

log = logging.getLogger("responder.executor")

T = TypeVar("T")
FOREVER = 4102444800.0  # 2100-01-01: "until someone acts on it"
SETTLE_LIMIT_FACTOR = 4.0  # a settle loop gives up (node unknown) after this many settle times


def _guard(call: Callable[[], T]) -> T:
    """Run a driver call; any exception is a failed step, never a failover stuck mid-way."""
    try:
        return call()
    except (DriverError, LeaseLost):
        raise  # a lost lease stops the failover here: no further call, no step recorded
    except Exception as exc:
        log.exception("driver raised %s; treated as a failed step", type(exc).__name__)
        raise DriverError(f"{type(exc).__name__}: {exc}") from exc


class Executor:
    def __init__(
        self,
        config: Config,
        store: Store,
        nodes: Mapping[tuple[str, str], NodeHandle],
        metrics: Metrics,
        clock: Clock,
        *,
        owner: str,
        timebase: Timebase | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.nodes = nodes
        self.metrics = metrics
        self.clock = clock
        self.owner = owner
        self.time = timebase or Timebase(clock, store.clock_anchor)
        self._local = threading.local()  # each failover thread's writes not yet committed

    # ---- journal --------------------------------------------------------------------------

    def _write(self, op: Callable[[StoreTxn], object], f: Failover | None = None) -> None:
        """A write of this run: queued until the next flush while a run is under way, else
        committed at once. With `f`, the failover's record becomes f in the same commit,
        proving this process still holds its lease (LeaseLost otherwise)."""
        pending: list[Callable[[StoreTxn], object]] | None = getattr(self._local, "pending", None)
        if pending is not None:
            pending.append(op)
            if f is not None:
                self._local.latest = f  # only its last version is written, once per flush
            return

        def both(txn: StoreTxn) -> None:
            if f is not None:
                txn.update_failover(f, self.owner)
            op(txn)

        self.store.batched(both)

    def _flush(self) -> None:
        """Commit every queued write in one transaction (in order), after the failover's
        latest record; before a node is changed, after it was, and when the run ends."""
        pending: list[Callable[[StoreTxn], object]] | None = getattr(self._local, "pending", None)
        if not pending:
            return
        ops = list(pending)
        pending.clear()
        latest: Failover | None = getattr(self._local, "latest", None)
        self._local.latest = None

        def run_all(txn: StoreTxn) -> None:
            if latest is not None:
                txn.update_failover(latest, self.owner)
            for op in ops:
                op(txn)

        self.store.batched(run_all)  # shared with other failovers' commits

    def _journal(self, f: Failover, phase: str, detail: Mapping[str, Any]) -> None:
        """Append to the journal, proving in the same transaction that we still own f."""
        now = self.clock.now()

        def op(txn: StoreTxn) -> None:
            txn.append_journal(f.id, now, f.step.value, phase, detail)

        self._write(op, f)

    def _advance(
        self,
        f: Failover,
        step: Step,
        detail: Mapping[str, Any],
        *,
        pair_event: Event | None = None,
        outcome_reason: str | None = None,
        event_kind: str | None = None,
        data_update: Mapping[str, Any] | None = None,
        wake_at: float | None = None,
    ) -> Failover:
        """Move f to `step` and, atomically with it, tell the policy (roles, phase).

        `data_update` lands in the failover record in the same transaction: what a fence
        hands to the activation is durable before the step that needs it can start.
        """
        now = self.clock.now()
        rt = self.time.now()
        new = f.advance(
            step,
            now,
            outcome_reason=outcome_reason or f.outcome_reason,
            data={**(f.data or {}), **(data_update or {})},
            wake_at=wake_at,
        )
        pair = self.config.pair(f.pair)
        fallback = outcome_reason or detail.get("reason") or f"failover {f.id}: {step.value}"

        def op(txn: StoreTxn) -> None:
            reason = fallback
            txn.append_journal(f.id, now, step.value, "begin", detail)
            if pair_event is not None:
                state = txn.load_pair(f.pair) or PairState.initial(pair, rt)
                decision = decide(reconcile(state, pair), pair_event, rt, pair)
                txn.save_pair(decision.state)
                reason = decision.reason
            txn.add_event(
                EventRecord(
                    ts=now,
                    pair=f.pair,
                    kind=event_kind or f"failover:{step.value}",
                    reason=str(reason),
                    failover_id=f.id,
                    data=dict(detail),
                )
            )
            log.info(
                "failover step %s",
                step.value,
                extra={"pair": f.pair, "failover_id": f.id, "reason": reason},
            )

        self._write(op, new)
        return new

    def _would_call(
        self, f: Failover, node: str, what: str, plan: PlannedCall, when: str = ""
    ) -> None:
        now = self.clock.now()
        data = {"node": node, "action": what, "request": dict(plan.request), "when": when}

        def op(txn: StoreTxn) -> None:
            txn.append_journal(f.id, now, f.step.value, "would_call", data)
            txn.add_event(
                EventRecord(
                    ts=now,
                    pair=f.pair,
                    kind="would_call",
                    reason=f"dry-run: would {what} {node}: {plan.description}"
                    + (f" ({when})" if when else ""),
                    node=node,
                    failover_id=f.id,
                    data=data,
                )
            )

        self._write(op, f)

    def _check(self, f: Failover, check: Check) -> Check:
        """Journal a read-only check made in dry-run (what a real failover would meet)."""
        self._journal(f, "note", {"check": check_json(check)})
        return check

    def _fence_metric(self, pair: str, level: str, result: str) -> None:
        self.metrics.fence_attempts.labels(pair=pair, level=level, result=result).inc()

    # ---- the sequence ---------------------------------------------------------------------

    def run(self, f: Failover) -> Failover:
        """Run f from the step its journal reached until it ends or waits for a gate.

        A failover left waiting (step `awaiting`) is released, to be claimed again at its
        `wake_at` or when an operator confirms it.
        """
        self._local.pending = []
        self._local.latest = None
        try:
            result = self._run(f)
            self._flush()
            return result
        except BaseException:
            try:
                self._flush()  # what happened before the raise is still worth keeping
            except Exception:
                log.exception("could not journal the steps before an error", extra={"pair": f.pair})
            raise
        finally:
            self._local.pending = None
            self._local.latest = None

    def _run(self, f: Failover) -> Failover:
        resumed = f.step not in (Step.PLANNED, Step.AWAITING)
        if resumed:
            self._journal(f, "note", {"resumed_by": self.owner, "from_step": f.step.value})
        missing = self._missing_nodes(f)
        if missing:
            return self._vanished(f, missing)
        if f.step is Step.PLANNED and (f.data or {}).get("switchover"):
            f = self._safe_moment(f)
        if f.step is Step.PLANNED:
            f = self._probe(f)
        if f.step is Step.FENCING and (why := self._abort_requested(f)):
            f = self._stopped(f, why, resumed=resumed)
        if f.step is Step.FENCING:
            f = self._fence(f, self._context(f))
        if f.step in (Step.FENCED, Step.AWAITING) and (why := self._abort_requested(f)):
            f = self._stopped(f, why, resumed=resumed)
        if f.step is Step.FENCED:
            f = self._after_fence(f)
            resumed = False
        if f.step is Step.AWAITING:
            f = self._check_gate(f)
            if f.step is Step.AWAITING:
                self._flush()
                self.store.release_lease(f.id, self.owner)
                return f
            resumed = False
        if f.step is Step.ACTIVATING:
            f = self._activate(f, self._context(f), resumed=resumed)
        if f.step.terminal:
            self._count(f)
        return f

    def _count(self, f: Failover) -> None:
        outcome = "dry_run" if f.dry_run and f.step is Step.DONE else f.step.value
        self.metrics.failovers.labels(pair=f.pair, outcome=outcome).inc()

    def _abort_requested(self, f: Failover) -> str | None:
        """An operator's abort request for this failover, read from the pair's state."""
        state = self.store.get_pair(f.pair)
        request = state.abort_requested if state is not None else None
        if request is not None and request.startswith(f"{f.id} by "):
            return request
        return None

    def _stopped(self, f: Failover, request: str, *, resumed: bool) -> Failover:
        """End a failover an operator aborted, saying exactly what was and was not done."""
        by = request.split(" by ", 1)[1]
        if f.step is Step.FENCING and resumed:
            reason = (
                f"aborted by {by} before the fence of {f.source} was confirmed: nothing was "
                f"activated; a fence sent before the restart may have landed on {f.source}"
            )
            ended = self._end(f, Step.FAILED, reason)
        elif f.step in (Step.PLANNED, Step.FENCING):
            reason = f"aborted by {by} before any fence was sent: nothing was changed"
            ended = self._end(f, Step.ABORTED if f.step is Step.PLANNED else Step.FAILED, reason)
        else:
            fenced = f"after {f.source} was fenced" if f.source else "before the activation"
            reason = (
                f"aborted by {by} {fenced}: nothing was activated, so no node signs; fail over "
                "by hand (`responder failover`) or un-fence when ready"
            )
            ended = self._end(f, Step.FAILED, reason)
        return ended

    def _context(self, f: Failover) -> ActionContext:
        data = f.data or {}
        return ActionContext(
            pair=f.pair,
            node=f.target,
            failover_id=f.id,
            source=f.source,
            target=f.target,
            reason=f.reason,
            handoff=dict(data.get("handoff") or {}),
            handoff_waived=data.get("handoff_waived"),
            planned=bool(data.get("switchover")),
        )

    # ---- between fence and activation -----------------------------------------------------

    def _after_fence(self, f: Failover) -> Failover:
        """Activate next, unless the target needs a hand-off the fence did not provide."""
        target = self.nodes[(f.pair, f.target)].driver
        data = f.data or {}
        if f.dry_run and target.needs_handoff:
            self._check(f, self._handoff_check(f))
        if f.dry_run or not target.needs_handoff or data.get("handoff"):
            return self._advance(f, Step.ACTIVATING, {"target": f.target})
        gate = self._gate_kind(f.pair)
        what = (
            "slashing-protection history"
            if gate == "liveness" or self._is_eth(f.pair)
            else "hand-off"
        )
        why = (
            f"no {what} was handed over by the fence of {f.source}"
            if f.source is not None
            else f"no node was active to fence, so no {what} was handed over"
        )
        if gate == "operator":
            waiting = f"{why}: activation of {f.target} waits for an operator (responder confirm {f.pair})"
            wake = FOREVER
        elif gate == "chain":
            quiet = self.config.pair(f.pair).handoff.quiet
            waiting = (
                f"{why}: activation of {f.target} waits until {f.target} sees no signature of "
                f"the validator for {quiet} slots or heights after the fence"
            )
            wake = self.time.now()
        else:
            waiting = f"{why}: activation of {f.target} waits until the chain shows the validators not live"
            wake = self.time.now()
        log.warning(waiting, extra={"pair": f.pair, "failover_id": f.id})
        return self._advance(
            f,
            Step.AWAITING,
            {"reason": waiting, "gate": gate},
            data_update={"gate": gate, "waiting": waiting, "fenced_at": self.clock.now()},
            wake_at=wake,
        )

    def _is_eth(self, pair: str) -> bool:
        return self.config.pair(pair).ethereum is not None

    def _gate_kind(self, pair: str) -> str:
        """How an activation that needs a hand-off proceeds without one: operator, liveness
        (Ethereum: the beacon node's liveness API) or chain (the target agent's view)."""
        eth = self.config.pair(pair).ethereum
        return eth.without_history if eth is not None else self.config.pair(pair).handoff.without

    def _check_gate(self, f: Failover) -> Failover:
        data = dict(f.data or {})
        if data.get("confirmed_by"):
            waiver = f"confirmed by operator {data['confirmed_by']}"
            return self._advance(
                f,
                Step.ACTIVATING,
                {"target": f.target, "handoff_waived": waiver},
                data_update={"handoff_waived": waiver},
            )
        if data.get("gate") == "chain":
            return self._chain_gate(f, data)
        if data.get("gate") != "liveness":
            return f
        eth = self.config.pair(f.pair).ethereum
        assert eth is not None and eth.liveness is not None
        now = self.clock.now()
        client = BeaconClient(eth.liveness, eth.genesis_validators_root)
        try:
            chain = client.chain()
            step = liveness_step(
                data.get("liveness") or {},
                fenced_at=float(data.get("fenced_at", f.updated_at)),
                now=now,
                chain=chain,
                required=eth.liveness.epochs,
                query=client.liveness,
            )
        except (DriverError, OSError) as exc:
            retry = self.time.now() + 30.0
            self._wait(
                f, data, {"liveness_error": str(exc)}, retry, f"liveness check failed: {exc}"
            )
            return replace(f, wake_at=retry)
        data["liveness"] = step.progress
        if step.done:
            waiver = f"liveness: validators not live for {eth.liveness.epochs} epochs after the fence ({step.note})"
            return self._advance(
                f,
                Step.ACTIVATING,
                {"target": f.target, "handoff_waived": waiver},
                data_update={"handoff_waived": waiver, "liveness": step.progress},
            )
        wake = self.time.from_wall(step.wake_at)  # an epoch boundary, on the wall clock
        self._wait(f, data, step.progress, wake, step.note)
        return replace(f, data=data, wake_at=wake)

    def _chain_gate(self, f: Failover, data: dict[str, Any]) -> Failover:
        """Activate without a hand-off once the target sees no signature of the validator for
        `quiet` slots or heights, counted from the first look after the fence (so a stalled
        view, or a signature older than the agent can see, never shortens the wait)."""
        handoff = self.config.pair(f.pair).handoff
        driver = self.nodes[(f.pair, f.target)].driver
        try:
            pos = _guard(driver.chain_position)
        except DriverError as exc:
            retry = self.time.now() + handoff.poll
            self._wait(f, data, {"chain_error": str(exc)}, retry, f"chain check failed: {exc}")
            return replace(f, wake_at=retry)
        start = int(data.get("chain_start", pos.current))
        since = max(start, pos.last_signed if pos.last_signed is not None else start)
        quiet = pos.current - since
        progress = {
            "chain_start": start,
            "chain_current": pos.current,
            "chain_last": pos.last_signed,
        }
        if quiet >= handoff.quiet:
            waiver = (
                f"chain: no signature of the validator seen by {f.target} for {quiet} "
                f"{pos.unit}s after the fence (last at {pos.last_signed})"
            )
            return self._advance(
                f,
                Step.ACTIVATING,
                {"target": f.target, "handoff_waived": waiver},
                data_update={"handoff_waived": waiver, **progress},
            )
        retry = self.time.now() + handoff.poll
        note = f"{quiet} of {handoff.quiet} quiet {pos.unit}s (current {pos.current}, last signature {pos.last_signed})"
        data |= progress
        self._wait(f, data, progress, retry, note)
        return replace(f, data=data, wake_at=retry)

    def _wait(
        self,
        f: Failover,
        data: Mapping[str, Any],
        detail: Mapping[str, Any],
        wake_at: float,
        note: str,
    ) -> None:
        new = replace(f, data=dict(data), wake_at=wake_at, updated_at=self.clock.now())
        now = self.clock.now()

        def op(txn: StoreTxn) -> None:
            txn.append_journal(f.id, now, f.step.value, "note", {**detail, "note": note})

        self._write(op, new)

    def _timed(self, step: str, started: float) -> None:
        self.metrics.step_seconds.labels(step=step).observe(time.perf_counter() - started)

    def _end(self, f: Failover, step: Step, reason: str, **kw: Any) -> Failover:
        activated = f.target if step is Step.DONE else None
        event = FailoverEnded(
            failover_id=f.id,
            outcome=step.value,
            reason=reason,
            activated=activated,
            dry_run=f.dry_run,
            fenced_nodes=tuple(kw.pop("fenced_nodes", ())),
            unknown_nodes=dict(kw.pop("unknown_nodes", {})),
            verified_silent=tuple(kw.pop("verified_silent", ())),
            standby_nodes=tuple(kw.pop("standby_nodes", ())),
        )
        level = logging.INFO if step is Step.DONE else logging.ERROR
        log.log(
            level,
            "failover %s: %s",
            step.value,
            reason,
            extra={"pair": f.pair, "failover_id": f.id, "reason": reason, "outcome": step.value},
        )
        return self._advance(
            f, step, {"reason": reason, **kw}, pair_event=event, outcome_reason=reason
        )

    # ---- observing -------------------------------------------------------------------------

    def _missing_nodes(self, f: Failover) -> list[str]:
        """Nodes this failover names that the current config no longer has."""
        names = [n for n in (f.source, f.target) if n is not None]
        return [n for n in names if (f.pair, n) not in self.nodes]

    def _vanished(self, f: Failover, missing: list[str]) -> Failover:
        """A node renamed or removed mid-failover: end it, never loop on it."""
        reason = (
            f"{', '.join(missing)} is no longer in the config (renamed or removed during the "
            "failover); nothing more is done: verify which node signs, then `responder adopt`"
        )
        step = Step.ABORTED if f.step is Step.PLANNED else Step.FAILED
        unknown = (
            {f.target: "renamed or removed during a failover"}
            if f.step in (Step.ACTIVATING,)
            else {}
        )
        return self._end(f, step, reason, unknown_nodes=unknown)

    def observe(self, pair: str, node: str) -> NodeObservation:
        """One read-only probe of a node, kept as the node's latest observation.

        Within a run, what was queued is committed first: the answers read so far (a fence
        just verified, say) are never left to die with a process that stops during this call,
        where an older answer would then speak for the node."""
        if getattr(self._local, "pending", None):
            self._flush()
        handle = self.nodes[(pair, node)]
        at, wall = self.time.now(), self.clock.now()
        try:
            status = _guard(handle.driver.status)
        except DriverError as exc:
            obs = NodeObservation(pair, node, at, wall, False, None, None, str(exc)[:500])
        else:
            obs = NodeObservation(
                pair,
                node,
                at,
                wall,
                True,
                status.healthy,
                status.signing,
                status.detail[:500],
                chain=status.chain,
            )
        if getattr(self._local, "pending", None) is not None:  # within a run: with its writes
            self._write(lambda txn: txn.save_observation(obs))
            return obs
        try:
            return self.store.save_observation(obs)
        except Exception:  # the probe itself is what matters here; the record is best effort
            log.exception("could not store an observation", extra={"pair": pair, "node": node})
            return obs

    def _settle(
        self,
        f: Failover,
        node: str,
        *,
        accept_unreachable: bool,
        refence: Callable[[], object] | None,
    ) -> tuple[bool, str]:
        """Probe `node` until "not signing" has held for its driver's settle time.

        A call to the node failed or timed out, so it may still land: one quiet answer proves
        nothing. Whenever the node answers signing, it is fenced again. Gives up (the node is
        unknown) after SETTLE_LIMIT_FACTOR settle times.
        """
        handle = self.nodes[(f.pair, node)]
        settle = handle.driver.settle_time
        interval = max(0.2, min(1.0, settle / 5))
        start = self.clock.monotonic()
        limit = start + max(SETTLE_LIMIT_FACTOR * settle, settle + 5.0)
        quiet_since: float | None = None
        last = "no answer yet"
        while True:
            obs = self.observe(f.pair, node)
            t = self.clock.monotonic()
            if obs.signing is False or (accept_unreachable and not obs.reachable):
                quiet_since = t if quiet_since is None else quiet_since
                if t - quiet_since >= settle:
                    note = f"{node} verified {obs.says} for {t - quiet_since:.1f}s (settle {settle:g}s)"
                    self._journal(f, "note", {"settle": node, "verified": True, "note": note})
                    return True, note
            else:
                quiet_since = None
                last = obs.says
                if obs.signing is True and refence is not None:
                    self._flush()
                    try:
                        _guard(refence)
                        self._journal(f, "note", {"settle": node, "refenced": True})
                    except DriverError as exc:
                        self._journal(f, "note", {"settle": node, "refence_error": str(exc)})
                    self._flush()
            if t >= limit:
                note = (
                    f"{node} could not be verified silent within {t - start:.0f}s "
                    f"(last answer: {last})"
                )
                self._journal(f, "note", {"settle": node, "verified": False, "note": note})
                return False, note
            self._flush()
            self.clock.sleep(interval)

    def _verify_fence(
        self, f: Failover, node: str, *, out_of_band: bool, after_doubt: bool
    ) -> tuple[bool, str]:
        """An independent read after a fence that claims success.

        The driver's own fence counts when the node says it is not signing; an out-of-band
        level (power, stop command) also when the node no longer answers. After an earlier
        level failed (its call may still land), the answer must hold for the settle time.
        """
        if after_doubt:
            return self._settle(f, node, accept_unreachable=out_of_band, refence=None)
        obs = self.observe(f.pair, node)
        if obs.signing is False:
            return True, f"{node} verified not signing ({obs.detail[:200]})"
        if out_of_band and not obs.reachable:
            return True, f"{node} verified unreachable after an out-of-band fence"
        return False, f"the fence claimed success but {node} then answered: {obs.says}"

    def _others_silent(self, f: Failover) -> tuple[bool, str, dict[str, str]]:
        """Every node but the target is verified silent right now (fenced in this failover,
        or answering "not signing"); else why not, and the nodes now in doubt."""
        pair = self.config.pair(f.pair)
        data = f.data or {}
        problems, notes = [], []
        doubts: dict[str, str] = {}
        for node in pair.nodes:
            if node.name == f.target:
                continue
            if f.dry_run and node.name == f.source:
                notes.append(f"{node.name}: would be fenced")
                continue
            obs = self.observe(f.pair, node.name)
            fenced_here = node.name == f.source and data.get("fence_verified") is True
            if obs.signing is False:
                notes.append(f"{node.name}: not signing")
            elif fenced_here and data.get("fence_level", 0) > 0 and not obs.reachable:
                notes.append(f"{node.name}: fenced out-of-band in this failover, unreachable")
            else:
                problems.append(f"{node.name} {obs.says}")
                doubts[node.name] = f"answered {obs.says} just before an activation"
        if problems:
            return False, "; ".join(problems), doubts
        return True, "; ".join(notes) or "no other node", {}

    # ---- the steps -------------------------------------------------------------------------

    def _probe(self, f: Failover) -> Failover:
        self._journal(f, "begin", {"probe": f.target})
        started = time.perf_counter()
        obs = self.observe(f.pair, f.target)
        self._timed("probe", started)
        if f.dry_run:
            usable = obs.reachable and obs.healthy is not False and obs.signing is not True
            self._check(f, Check(f"{f.target}:target", usable, f"target {f.target} {obs.says}"))
        if not obs.reachable:
            self._journal(f, "end", {"probe": f.target, "error": obs.detail})
            return self._end(
                f, Step.ABORTED, f"target {f.target} did not answer its probe: {obs.detail}"
            )
        self._journal(
            f,
            "end",
            {"probe": f.target, "healthy": obs.healthy, "signing": obs.signing},
        )
        if not obs.healthy:
            return self._end(f, Step.ABORTED, f"target {f.target} reports unhealthy: {obs.detail}")
        if obs.signing:
            return self._end(
                f,
                Step.ABORTED,
                f"target {f.target} already reports signing; refusing to risk two signers",
            )
        if f.source is None:
            return self._advance(f, Step.FENCED, {"reason": "no active node to fence"})
        return self._advance(f, Step.FENCING, {"source": f.source})

    def _fence(self, f: Failover, ctx: ActionContext) -> Failover:
        assert f.source is not None
        handle = self.nodes[(f.pair, f.source)]
        src_ctx = ActionContext(**{**ctx.__dict__, "node": f.source})
        levels: list[tuple[str, Any, Any]] = [
            ("driver", handle.driver.fence, lambda: handle.driver.plan("fence", src_ctx))
        ]
        for fencer in handle.fencers:
            levels.append((fencer.name, fencer.fence, lambda fencer=fencer: fencer.plan(src_ctx)))
        if f.dry_run:
            return self._rehearse_fence(f, handle, levels)
        failures: list[str] = []
        for index, (name, fence, _plan) in enumerate(levels):
            label = f"{index}:{name.split(':')[0]}"
            self._journal(f, "begin", {"level": index, "method": name})
            self._flush()
            started = time.perf_counter()
            try:
                result = _guard(lambda fence=fence: fence(src_ctx))  # type: ignore[misc]
            except DriverError as exc:
                self._timed("fence", started)
                failures.append(f"level {index} ({name}): {exc}")
                self._fence_metric(f.pair, label, "failed")
                self._journal(f, "end", {"level": index, "confirmed": False, "error": str(exc)})
                self._flush()
                log.warning(
                    "fence level %d failed: %s",
                    index,
                    exc,
                    extra={"pair": f.pair, "node": f.source, "failover_id": f.id},
                )
                continue
            self._timed("fence", started)
            self._journal(
                f,
                "end",
                {
                    "level": index,
                    "confirmed": True,
                    "detail": result.detail,
                    "data": dict(result.data),
                },
            )
            self._flush()  # what the node did is durable before anything else happens
            verified, why = self._verify_fence(
                f, f.source, out_of_band=index > 0, after_doubt=bool(failures)
            )
            self._journal(f, "note", {"level": index, "verified": verified, "verification": why})
            if not verified:
                failures.append(f"level {index} ({name}): {why}")
                self._fence_metric(f.pair, label, "unverified")
                log.warning(
                    "fence level %d not verified: %s",
                    index,
                    why,
                    extra={"pair": f.pair, "node": f.source, "failover_id": f.id},
                )
                continue
            self._fence_metric(f.pair, label, "confirmed")
            handoff = dict(result.handoff) if result.handoff else None
            return self._advance(
                f,
                Step.FENCED,
                {
                    "level": index,
                    "method": name,
                    "detail": result.detail,
                    "verification": why,
                    "handoff": sorted(handoff) if handoff else None,
                },
                pair_event=NodeFenced(f.id, f.source),
                data_update={"handoff": handoff, "fence_level": index, "fence_verified": True},
            )
        return self._end(
            f,
            Step.FAILED,
            f"every fence level failed on {f.source}; nothing was activated: "
            + "; ".join(failures),
        )

    # ---- dry-run: every read-only probe and check, every request listed --------------------

    def _rehearse_fence(
        self, f: Failover, handle: NodeHandle, levels: list[tuple[str, Any, Any]]
    ) -> Failover:
        """Probe the source, run every level's read-only check, and list the request each level
        would send, in the order a real fence tries them. A level that checks out would fence;
        unverifiable levels leave the outcome open; when every level fails its check, a real
        failover would fail too."""
        assert f.source is not None
        obs = self.observe(f.pair, f.source)
        said = f"{f.source} {obs.says}" if obs.reachable else f"{f.source}: {obs.detail}"
        self._check(f, Check(f"{f.source}:api", obs.reachable, said))
        checks: list[Check] = []
        for index, (name, _fence, plan) in enumerate(levels):
            label = f"{index}:{name.split(':')[0]}"
            if index == 0:
                why = (
                    "the driver's own fence, through the API that just answered"
                    if obs.reachable
                    else "its API did not answer, so this level would fail"
                )
                check = Check(f"{f.source}:fence-level-0", obs.reachable, f"{name}: {why}")
            else:
                check = guarded(f"{f.source}:fence-level-{index}", handle.fencers[index - 1].check)[
                    0
                ]
            checks.append(self._check(f, check))
            when = (
                "level 0, first"
                if index == 0
                else f"level {index}, only if level {index - 1} fails"
            )
            self._would_call(f, f.source, "fence", plan(), when=when)
            self._fence_metric(f.pair, label, "dry_run")
        verified = [i for i, c in enumerate(checks) if c.ok]
        if verified:
            first = verified[0]
            return self._advance(
                f,
                Step.FENCED,
                {"level": first, "method": levels[first][0], "dry_run": True},
                data_update={"fence_level": first},
            )
        listing = "; ".join(f"level {i}: {c.reason}" for i, c in enumerate(checks))
        if any(c.ok is None for c in checks):
            note = (
                f"no fence level of {f.source} could be verified; a real failover would try "
                f"them in order ({listing})"
            )
            self._check(f, Check(f"{f.source}:fence", None, note))
            first_open = next(i for i, c in enumerate(checks) if c.ok is None)
            return self._advance(
                f,
                Step.FENCED,
                {"dry_run": True, "unverified": True, "reason": note},
                data_update={"fence_level": first_open},
            )
        return self._end(
            f,
            Step.FAILED,
            f"dry-run: every fence level of {f.source} fails its check, so a real failover "
            f"would activate nothing: {listing}",
        )

    def _handoff_check(self, f: Failover) -> Check:
        """Whether the fence a real failover would use hands over what the target needs."""
        name = f"{f.target}:handoff"
        level = int((f.data or {}).get("fence_level", 0))
        if f.source is None:
            return Check(name, None, f"no node to fence: the activation of {f.target} would wait")
        if level == 0:
            return Check(
                name, True, f"the fence of {f.source} would hand its state over to {f.target}"
            )
        gate = self._gate_kind(f.pair)
        waits = {
            "operator": "an operator (responder confirm)",
            "chain": "the validator's signatures to stop on the chain",
        }.get(gate, "the chain to show the validators not live")
        return Check(
            name,
            None,
            f"fence level {level} hands over no history: the activation of {f.target} would "
            f"wait for {waits}",
        )

    def _rehearse_activation(self, f: Failover, ctx: ActionContext, handle: NodeHandle) -> Failover:
        """The target's own preflight (files, keys, chain), then the request it would get."""
        problems = []
        for check in guarded(f"{f.target}:preflight", handle.driver.preflight):
            if self._check(f, check).ok is False:
                problems.append(f"{check.name}: {check.reason}")
        when = "after the fence is verified and every other node is verified silent"
        self._would_call(f, f.target, "activate", handle.driver.plan("activate", ctx), when=when)
        if problems:
            return self._end(
                f,
                Step.FAILED,
                f"dry-run: the activation of {f.target} would fail: {'; '.join(problems)}",
            )
        return self._end(f, Step.DONE, f"dry-run: would have activated {f.target}")

    # ---- switchover: a safe moment --------------------------------------------------------

    def _safe_moment(self, f: Failover) -> Failover:
        """A switchover that asked to avoid block proposals waits until none of the pair's
        keys proposes within `safe_slots` slots, up to its deadline; past it, it ends with
        nothing changed."""
        data = f.data or {}
        slots = int(data.get("safe_slots") or 0)
        if slots <= 0:
            return f
        eth = self.config.pair(f.pair).ethereum
        if eth is None or eth.liveness is None:
            return self._end(
                f,
                Step.ABORTED,
                "switchover asked to avoid proposals, but no beacon node is configured "
                "(ethereum.liveness); nothing was changed",
            )
        until = float(data.get("wait_until") or 0.0)
        client = BeaconClient(eth.liveness, eth.genesis_validators_root)
        while True:
            if (request := self._abort_requested(f)) is not None:
                return self._stopped(f, request, resumed=False)
            now = self.clock.now()
            wake = now + eth.liveness.seconds_per_slot
            try:
                chain = client.chain()
                # every epoch the window touches must be read: a window whose duties are
                # unknown is never called clear (a beacon node answering only for the
                # current epoch makes the switchover wait for a window inside it)
                first = chain.slot(now) // chain.slots_per_epoch
                last = (chain.slot(now) + slots) // chain.slots_per_epoch
                duties: dict[int, str] = {}
                for epoch in range(first, last + 1):
                    duties |= client.proposer_duties(epoch)
                ahead = proposal_ahead(chain, duties, eth.pubkeys, now, slots)
            except DriverError as exc:
                note = f"cannot read proposal duties ({exc}); asking again"
            else:
                if ahead is None:
                    self._journal(
                        f,
                        "note",
                        {
                            "safe_moment": True,
                            "note": f"no proposal by the pair's keys in the next {slots} slots",
                        },
                    )
                    return f
                wake = ahead[1]
                note = f"a proposal is due at slot {ahead[0]}: waiting until it has passed"
            if wake > until:
                return self._end(
                    f,
                    Step.ABORTED,
                    f"no safe moment before the switchover's deadline ({note}); nothing was changed",
                )
            self._journal(f, "note", {"safe_moment": False, "note": note})
            self._flush()
            self.clock.sleep(max(0.0, wake - now))

    def _activate(self, f: Failover, ctx: ActionContext, *, resumed: bool) -> Failover:
        handle = self.nodes[(f.pair, f.target)]
        if resumed and not f.dry_run and (earlier := self._failed_before(f)) is not None:
            # the activation failed before a restart: never send it again, finish the clean-up
            return self._failed_activation(f, ctx, handle, DriverError(earlier))
        if resumed and not f.dry_run:
            obs = self.observe(f.pair, f.target)
            if not obs.reachable:
                self._journal(f, "note", {"resume_probe_error": obs.detail})
            if obs.signing is True:
                return self._end(
                    f,
                    Step.DONE,
                    f"{f.target} already signing after restart; activation not repeated",
                )
        if not resumed and (request := self._abort_requested(f)) is not None:
            return self._stopped(f, request, resumed=False)
        silent, why, doubts = self._others_silent(f)
        self._journal(f, "note", {"others_silent": silent, "others": why})
        if f.dry_run:
            self._check(f, Check("others-silent", silent, why))
        if not silent:
            return self._end(
                f,
                Step.FAILED,
                f"activation of {f.target} refused: every other node must be verified silent, "
                f"but {why}; nothing was activated",
                unknown_nodes=doubts,
            )
        if f.dry_run:
            return self._rehearse_activation(f, ctx, handle)
        # from here on the target may start signing at any moment: say so until verified
        self._pair_event(f, NodeInDoubt(f.id, f.target, "its activation is in progress"))
        self._journal(f, "begin", {"activate": f.target})
        self._flush()
        started = time.perf_counter()
        try:
            result = _guard(lambda: handle.driver.activate(ctx))
        except DriverError as exc:
            self._timed("activate", started)
            self._journal(f, "end", {"activate": f.target, "confirmed": False, "error": str(exc)})
            self._flush()
            return self._failed_activation(f, ctx, handle, exc)
        self._timed("activate", started)
        self._journal(f, "end", {"activate": f.target, "confirmed": True, "detail": result.detail})
        self._flush()
        obs = self.observe(f.pair, f.target)
        self._journal(f, "note", {"verify_activation": f.target, "observed": obs.says})
        if obs.signing is not True:
            claim = DriverError(
                f"the activation claimed success but {f.target} then answered: {obs.says}"
            )
            return self._failed_activation(f, ctx, handle, claim)
        fenced = f"{f.source} fenced" if f.source is not None else "no active node to fence"
        done = f"{fenced}, {f.target} active (verified signing)"
        if (f.data or {}).get("switchover") and f.source is not None:
            return self._switched(f, done)
        return self._end(f, Step.DONE, done)

    def _switched(self, f: Failover, done: str) -> Failover:
        """A switchover's old primary had nothing wrong: once its fence is verified and it
        answers healthy and not signing, it is a standby again (so signing can move back)."""
        assert f.source is not None
        obs = self.observe(f.pair, f.source)
        if obs.reachable and obs.healthy and obs.signing is False:
            reason = (
                f"{done}; switchover: {f.source} verified not signing and healthy, now a standby"
            )
            return self._end(f, Step.DONE, reason, standby_nodes=(f.source,))
        reason = f"{done}; switchover: {f.source} stays fenced (it answered: {obs.says})"
        return self._end(f, Step.DONE, reason)

    def _failed_before(self, f: Failover) -> str | None:
        """Why the journal says this failover's activation already failed, if it does."""
        self._flush()
        for entry in self.store.journal(f.id):
            detail = entry.detail
            if detail.get("activate") == f.target and detail.get("confirmed") is False:
                return f"before a restart: {detail.get('error', 'the activation failed')}"
            if detail.get("verify_activation") == f.target and detail.get("observed") != "signing":
                return f"before a restart: {f.target} then answered {detail.get('observed')}"
        return None

    def _pair_event(self, f: Failover, event: Event) -> None:
        """Tell the policy something mid-step (the record changes at once), journaled."""
        now, rt = self.clock.now(), self.time.now()
        pair = self.config.pair(f.pair)

        def op(txn: StoreTxn) -> None:
            state = txn.load_pair(f.pair) or PairState.initial(pair, rt)
            decision = decide(reconcile(state, pair), event, rt, pair)
            txn.save_pair(decision.state)
            txn.append_journal(f.id, now, f.step.value, "note", {"pair_event": decision.reason})
            txn.add_event(
                EventRecord(
                    now,
                    f.pair,
                    f"failover:{type(event).__name__.lower()}",
                    decision.reason,
                    failover_id=f.id,
                )
            )

        self._write(op, f)

    def _failed_activation(
        self, f: Failover, ctx: ActionContext, handle: NodeHandle, exc: DriverError
    ) -> Failover:
        """Leave the pair stuck but safe: fence the target back and verify it stays silent.

        The failed call may still land (a slow import finishing after the timeout), so the
        target is unknown until "not signing" has held for its settle time, fencing it again
        whenever it answers signing. Only a verified answer becomes advice to an operator.
        """
        self._pair_event(
            f, NodeInDoubt(f.id, f.target, f"its activation failed ({exc}) and may still land")
        )
        self._flush()
        try:
            _guard(lambda: handle.driver.fence(ctx))
            self._journal(f, "note", {"fence_back": f.target, "claimed": True})
        except DriverError as fence_exc:
            self._journal(f, "note", {"fence_back": f.target, "error": str(fence_exc)})
        self._flush()
        verified, why = self._settle(
            f, f.target, accept_unreachable=False, refence=lambda: handle.driver.fence(ctx)
        )
        if verified:
            reason = (
                f"activation of {f.target} failed ({exc}); {f.target} was fenced back and "
                f"{why}, so no node signs: repair it, then fail over by hand"
            )
            return self._end(
                f, Step.FAILED, reason, fenced_nodes=(f.target,), verified_silent=(f.target,)
            )
        reason = (
            f"activation of {f.target} failed ({exc}) and {f.target} MAY BE SIGNING: {why}. "
            f"Check {f.target} by hand before anything else"
        )
        return self._end(f, Step.FAILED, reason, unknown_nodes={f.target: why})


class Rehearsal(Executor):
    """The executor's dry-run path reporting to memory instead of the journal: a drill walks
    every decision, probe and read-only check a real failover would, lists the requests it
    would send, and changes nothing but the observations it records."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.steps: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.checks: list[Check] = []

    def _record(self, step: str, phase: str, detail: Mapping[str, Any]) -> None:
        self.steps.append({"at": self.clock.now(), "step": step, "phase": phase, **detail})

    def _journal(self, f: Failover, phase: str, detail: Mapping[str, Any]) -> None:
        self._record(f.step.value, phase, detail)

    def _advance(
        self,
        f: Failover,
        step: Step,
        detail: Mapping[str, Any],
        *,
        outcome_reason: str | None = None,
        data_update: Mapping[str, Any] | None = None,
        wake_at: float | None = None,
        **_: Any,
    ) -> Failover:
        new = f.advance(
            step,
            self.clock.now(),
            outcome_reason=outcome_reason or f.outcome_reason,
            data={**(f.data or {}), **(data_update or {})},
            wake_at=wake_at,
        )
        self._record(step.value, "begin", detail)
        return new

    def _end(self, f: Failover, step: Step, reason: str, **_: Any) -> Failover:
        return self._advance(f, step, {"reason": reason}, outcome_reason=reason)

    def _would_call(
        self, f: Failover, node: str, what: str, plan: PlannedCall, when: str = ""
    ) -> None:
        self.requests.append(
            {
                "node": node,
                "action": what,
                "description": plan.description,
                "request": dict(plan.request),
                "when": when,
            }
        )

    def _check(self, f: Failover, check: Check) -> Check:
        self.checks.append(check)
        return check

    def _fence_metric(self, pair: str, level: str, result: str) -> None:
        return None

    def _timed(self, step: str, started: float) -> None:
        return None

    def _count(self, f: Failover) -> None:
        return None
