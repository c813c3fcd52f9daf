"""The invariants every scenario is judged by, from what the fake nodes saw.

Each check reads the world's record (every request each node received, in one global order, and
every interval during which each node signed), the scenario's expectations, and what the runner
saw (acknowledged deliveries, when a sustained fault was first acknowledged). A violation is a
readable sentence; any violation fails the campaign.

Definitions (docs/safety.md states them for users):

- two signers: the signing intervals of two nodes of a pair never overlap (responder.sim.overlaps,
  half-open intervals on the world's global sequence, so order is exact).
- activation without a verified fence: every activation request that reached a node T found no
  other node of the pair signing; and for every other node N that signed before it, after the start
  of N's last signing interval there was a fence of N (its agent's fence or its power switch) and,
  after that fence, a status read of N answering "not signing" (or, after a power-switch fence, N
  not answering at all).
- quiet: a scenario whose fault was shorter than `hold` (or whose pair is held) sees no fence, power
  switch or activation request on that pair.
- liveness: a sustained fault with a healthy standby and a working fence makes the expected standby
  sign within hold + bound seconds of the first acknowledged delivery that carried the fault.
- no repeated activation: no activation request of a failover reaches a node after an earlier
  activation request of the same failover took effect.
- one failover in flight: the mutating requests (fence, activate) of two failovers of one pair
  never interleave.
- drills and dry-run pairs send nothing that changes a node: no fence, activation or power-switch
  request carries a drill's token, and none is sent to a node of a `dry_run: true` pair (sent,
  whether it reached the node or not).
- activation without a hand-off (a pair whose driver requires one): every activation request of
  such a pair carries a hand-off some fence of the pair answered, or comes after the last fence
  of the pair's other nodes and after either an operator's confirm of that pair, or liveness
  answers of the target (after that fence) showing `quiet` heights without a signature: the
  last answer's height minus the later of (the first answer's height, the last signature any
  answer reported) is at least `quiet`.
- a killed leader sends nothing (etcd mode, `--etcd`): once a replica's leader lease was revoked
  (a leader kill), no request of that replica reaches any node: the lease guard refuses every
  node call of a replica that no longer leads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from responder.sim import overlaps
from tests.chaos import world as w
from tests.chaos.scenarios import PairPlan, Scenario


@dataclass(frozen=True)
class Timing:
    pair: str
    seconds: float  # from the first acknowledged delivery of the fault to the target signing
    real: bool
    hold: float = 0.0


def signing_at(node: w.Node, seq: int) -> bool:
    return any(s is not None and s < seq and (e is None or e > seq) for s, e in node.intervals_seq)


# Formerly a product gap (seed 20261126, scenarios 1267, 2633, 3304; seed 7, scenario 609): an
# activation that failed before a crash was sent again by the owner that resumed it. A resumed
# failover whose journal shows a failed activation now only cleans up; a repeat is a violation.
KNOWN_GAP_RETRIED_ACTIVATION = "a failed activation is sent again after a restart"


@dataclass
class Verdict:
    violations: list[str]
    known: list[str]  # hits of known, reported product gaps
    timings: list[Timing]


def check(
    sc: Scenario,
    world: w.World,
    fault_seen: dict[str, float],
    resolved_seen: dict[str, float] | None = None,
    down: Sequence[tuple[float, float]] = (),
    *,
    real: bool = False,
    confirms: Sequence[tuple[str, int]] = (),
) -> Verdict:
    """The violations, known gaps and failover timings of one finished scenario.

    `down` lists the intervals during which no responder ran (crash to restart).
    """
    out: list[str] = []
    known: list[str] = []
    timings: list[Timing] = []
    by_pair: dict[str, list[w.Node]] = {}
    for node in world.nodes.values():
        by_pair.setdefault(node.pair, []).append(node)
    calls = sorted(world.calls, key=lambda c: c.seq)

    # 1. never two signers at once
    for pair, nodes in by_pair.items():
        for i, a in enumerate(nodes):
            for b in nodes[i + 1 :]:
                found = overlaps(a.intervals_seq, b.intervals_seq)
                if found:
                    ta, tb = _times(a, found[0][0]), _times(b, found[0][1])
                    out.append(
                        f"two signers: {a.name} and {b.name} of {pair} signed at once "
                        f"({a.name} during t={ta}, {b.name} during t={tb})"
                    )

    # 2. no activation without a verified fence of every signer
    for c in calls:
        if c.kind != "activate" or not c.reached:
            continue
        for n in by_pair[world.nodes[c.node].pair]:
            if n.name == c.node:
                continue
            if signing_at(n, c.seq):
                out.append(
                    f"activation without verified fence: activate {c.node} (#{c.seq}, "
                    f"t={c.t:.2f}) while {n.name} was signing"
                )
                continue
            starts = [s for s, _ in n.intervals_seq if s is not None and s < c.seq]
            if not starts:
                continue
            why = _verified_fence(calls, n.name, max(starts), c.seq)
            if why:
                out.append(
                    f"activation without verified fence: activate {c.node} (#{c.seq}, "
                    f"t={c.t:.2f}) but {n.name}, which signed since #{max(starts)}, {why}"
                )

    # 3. a fault shorter than hold (or a held pair) changes nothing
    for plan in sc.pairs:
        if plan.expect != "quiet":
            continue
        acted = [
            c
            for c in calls
            if c.reached and c.kind in ("fence", "activate", "pdu") and c.node in plan.slots
        ]
        if acted:
            out.append(
                f"failover from a fault shorter than hold (or on a held pair) on {plan.name}: "
                + "; ".join(c.brief() for c in acted[:4])
            )

    # 4. a sustained fault fails over within hold + bound (and 7: on time beside a troubled pair)
    for plan in sc.pairs:
        if plan.expect != "failover" or plan.target is None:
            continue
        seen = fault_seen.get(plan.name)
        if seen is None:
            out.append(f"{plan.name}: the sustained fault was never acknowledged by the webhook")
            continue
        # the first moment a responder could act on the deadline (later if it was down then)
        due = seen + sc.hold
        due = next((up for crashed, up in down if crashed <= due < up), due)
        ended = (resolved_seen or {}).get(plan.name)
        if ended is not None and ended <= due + 1e-9:
            continue  # its end was acknowledged before anyone could act: nothing is owed
        node = world.nodes[plan.target]
        started = [t for t, _ in node.intervals_t if t is not None and t >= seen]
        limit = sc.hold + sc.bound
        other = (
            " (another pair's trouble delayed it)"
            if len(sc.pairs) > 1 and plan is not sc.pairs[0]
            else ""
        )
        if not started:
            out.append(
                f"no failover: {plan.name}'s sustained fault (acknowledged at t={seen:.2f}) "
                f"never made {plan.target} sign (bound: hold {sc.hold:g}s + {sc.bound:g}s){other}"
            )
            continue
        took = started[0] - seen
        timings.append(Timing(plan.name, took, real, sc.hold))
        if took > limit + 1e-6:
            out.append(
                f"late failover: {plan.name} took {took:.2f}s from the fault to {plan.target} "
                f"signing, more than hold {sc.hold:g}s + {sc.bound:g}s{other}"
            )
        wrong = [
            n.name
            for n in by_pair[plan.name]
            if n.name not in (plan.target, plan.slots[0]) and n.intervals_seq
        ]
        if wrong:
            out.append(f"{plan.name}: activated {wrong}, expected only {plan.target}")

    # 5. no completed activation repeated
    landed: dict[str, w.Call] = {}
    for c in calls:
        if c.kind == "activate" and c.landed_seq is not None and c.failover_id is not None:
            landed.setdefault(c.failover_id, c)
    for c in calls:
        if c.kind != "activate" or not c.reached or c.failover_id is None:
            continue
        first = landed.get(c.failover_id)
        if first is None or first.landed_seq is None or c.seq <= first.landed_seq:
            continue
        text = (
            f"activation repeated: failover {c.failover_id} sent {c.brief()} after its "
            f"activation {first.brief()} had already taken effect"
        )
        out.append(text)

    # 6. one failover in flight per pair
    for pair, nodes in by_pair.items():
        names = {n.name for n in nodes}
        spans: dict[str, list[int]] = {}
        for c in calls:
            if c.reached and c.node in names and c.failover_id and c.kind in ("fence", "activate"):
                span = spans.setdefault(c.failover_id, [c.seq, c.seq])
                span[1] = c.seq
        ordered = sorted(spans.items(), key=lambda kv: kv[1][0])
        for (fa, (_, ea)), (fb, (sb, _)) in pairwise(ordered):
            if sb < ea:
                out.append(f"two failovers in flight on {pair}: {fa} and {fb} interleave")

    # 7. drills and dry-run pairs never send a mutating request
    dry = {slot for plan in sc.pairs if plan.dry_run for slot in plan.slots}
    for c in calls:
        if c.kind not in w.MUTATING:
            continue
        if c.incarnation >= w.DRILL_INCARNATION:
            out.append(f"a drill sent a mutating request: {c.brief()}")
        elif c.node in dry:
            out.append(f"a dry-run pair's node got a mutating request: {c.brief()}")

    # 8. an activation without a hand-off waits for a confirm or `quiet` quiet heights
    for plan in sc.pairs:
        if plan.handoff is not None:
            out.extend(_handoff_gate(plan, calls, [s for p, s in confirms if p == plan.name]))

    # 13. a replica whose leader lease was revoked sends no request to any node
    for c in calls:
        if c.after_kill:
            out.append(f"a killed leader's request reached a node: {c.brief()}")
    return Verdict(out, known, timings)


def _handoff_gate(plan: PairPlan, calls: Sequence[w.Call], confirms: Sequence[int]) -> list[str]:
    out: list[str] = []
    given = {c.seq for c in calls if c.kind == "fence" and c.handoff is not None}
    for c in calls:
        if c.kind != "activate" or c.node not in plan.slots or not c.reached:
            continue
        if c.handoff is not None:
            blob = c.handoff if isinstance(c.handoff, dict) else {}
            if blob.get("fence") not in given:
                out.append(f"activation carried a hand-off no fence answered: {c.brief()}")
            continue
        fences = [
            f.seq
            for f in calls
            if f.reached
            and f.kind in ("fence", "pdu")
            and f.node in plan.slots
            and f.node != c.node
            and f.seq < c.seq
        ]
        if not fences:
            continue  # nothing was fenced: no node was active to hand anything over
        fence = max(fences)
        if any(fence < s < c.seq for s in confirms):
            continue
        views = [
            v.chain
            for v in calls
            if v.kind == "liveness" and v.node == c.node and fence < v.seq < c.seq and v.chain
        ]
        quiet = 0
        if views:
            start = views[0][0]
            last = max((v[1] for v in views if v[1] is not None), default=start)
            quiet = views[-1][0] - max(start, last)
        if quiet < plan.quiet:
            out.append(
                f"activation without a hand-off: {c.brief()} (waived: {c.waived!r}) came "
                f"after the fence #{fence} with no operator confirm and {quiet} of "
                f"{plan.quiet} quiet heights seen ({len(views)} liveness answers)"
            )
    return out


def _verified_fence(calls: Sequence[w.Call], node: str, since: int, before: int) -> str:
    """'' when a fence of `node` after `since` was verified by a read before `before`."""
    fences = [
        c
        for c in calls
        if c.node == node and c.reached and c.kind in ("fence", "pdu") and since < c.seq < before
    ]
    if not fences:
        return "was never fenced before it"
    for f in fences:
        for r in calls:
            if r.node != node or r.kind != "status" or not f.seq < r.seq < before:
                continue
            if r.reached and r.signing is False:
                return ""
            if f.kind == "pdu" and r.outcome == "dropped":  # powered off: no answer
                return ""
    return "was fenced but no later status read verified it silent"


def _times(node: w.Node, seq_iv: Sequence[float | None]) -> str:
    i = [list(map(float, (s or 0, e or 0))) for s, e in node.intervals_seq].index(
        [float(seq_iv[0] or 0), float(seq_iv[1] or 0)]
    )
    s, e = node.intervals_t[i]
    return f"[{s:.2f}, {'...' if e is None else f'{e:.2f}'})"
