"""Scenario generation: every scenario is a pure function of (campaign seed, scenario index).

A scenario is data: the pairs and their nodes, node fault windows, the deliveries Alertmanager
makes (with duplicates, reordering, truncation, poison), what the responder suffers (a crash at
a chosen node call, a restart with a renamed node, a concurrent manual failover, a wall-clock
step), and what must happen (nothing, or a failover to a given node within a bound). The runners
in `campaign` and `realproc` carry it out; `invariants` judges what the nodes saw.

Times are scenario seconds: manual-clock seconds in-process, wall seconds for real processes.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

from tests.chaos import world as w

HOLDS = (3.0, 5.0, 10.0, 20.0)
LEASE = 3.0  # failover_lease of in-process scenarios
OBSERVE = 5.0  # observe.interval of in-process scenarios
CONNECT_TIMEOUT, TIMEOUT = 0.5, 1.0  # driver timeouts: settle time 1.5 s
SETTLE = CONNECT_TIMEOUT + TIMEOUT
BOUND = 5.0  # a sustained fault fails over within hold + BOUND ...
CRASH_BOUND = LEASE + 3.0  # ... plus this when the responder crashed on the way
REAL_EVERY, REAL_AT = 50, 7  # scenario i runs against real processes when i % 50 == 7
TRIGGERS = ("ValidatorClientDown", "BeaconNodeStalled")
BASE_EPOCH = 1_800_000_000  # the ManualClock's starting wall time
POISON = (
    "0000-01-01T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-11-25T24:00:00Z",
    "yesterday",
    "1999-12-31T23:59:59Z",
    "2300-01-01T00:00:00Z",
)

PRIMARY_FAULTS = ("none", w.DOWN, w.AGENT_DOWN, w.HANG, w.ERR500, w.FENCE_LIES)
STANDBY_FAULTS = (
    "none",
    "unhealthy_alert",
    "unhealthy_status",
    "activate_500",
    "activate_late",
    "activate_loaded",
    "activate_loaded_fence_lies",
)
DELIVERY_FAULTS = ("duplicates", "reorder", "two_am", "truncated", "resolved_first", "poison")
RESPONDER_FAULTS = (
    "none",
    "crash_in_failover",
    "crash_before_claim",
    "crash_after_ack",
    "restart_renamed",
    "concurrent_manual",
    "wall_step",
)
EPISODES = ("sustained", "blip", "flap", "flap_then_sustained")
# Product features mixed into the fault kinds above (drawn from a separate random stream, so a
# scenario whose feature is "none" is exactly the scenario it was before features existed).
FEATURES = (
    "none",
    "switchover",  # an operator's switchover to the standby, before the fault episodes
    "switchover_back",  # ... and once it is done, a second one back to the old primary
    "switchover_sick",  # a switchover asked while the primary is sick, before the deadline
    "switchover_race",  # a switchover from a second worker racing the automatic decision
    "drill",  # 2-5 drills at random moments (during failovers too), on any pair
    "dry_run_pair",  # a `dry_run: true` pair beside the real ones, with its own fault
    "handoff_operator",  # hand-off required; without one, activation waits for `confirm`
    "handoff_chain",  # hand-off required; without one, it waits for `quiet` quiet heights
)
FEATURE_WEIGHTS = (80, 3, 2.5, 2.5, 2.5, 3.5, 3, 2.5, 2.5)
SWITCHOVER_BOUND = 6.0  # a switchover on a healthy pair is done within this many seconds
TOPOLOGIES = ("pair2", "pair3", "two_pairs")


@dataclass(frozen=True)
class AlertSpec:
    alertname: str
    node: str  # the `node` label
    pair: str
    status: str  # firing | resolved
    starts_at: str
    episode: int  # which episode of the scenario (for reading traces)

    def payload(self) -> dict[str, Any]:
        firing = self.status == "firing"
        return {
            "status": self.status,
            "labels": {
                "alertname": self.alertname,
                "node": self.node,
                "pair": self.pair,
                "severity": "critical",
            },
            "annotations": {"summary": f"{self.alertname} on {self.node}"},
            "startsAt": self.starts_at,
            "endsAt": "0001-01-01T00:00:00Z" if firing else "2027-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": f"fp-{self.alertname}-{self.node}",
        }


@dataclass(frozen=True)
class Delivery:
    t: float
    pair: str
    alerts: tuple[AlertSpec, ...]
    truncated: int = 0
    poison: str | None = None  # a startsAt that cannot be right: must be a 400
    sustained: bool = False  # carries the firing of the pair's sustained episode
    note: str = ""

    def body(self) -> dict[str, Any]:
        alerts = [a.payload() for a in self.alerts]
        if self.poison is not None:
            alerts[0]["startsAt"] = self.poison
        firing = any(a["status"] == "firing" for a in alerts)
        return {
            "receiver": "responder",
            "status": "firing" if firing else "resolved",
            "alerts": alerts,
            "groupLabels": {"pair": self.pair},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "version": "4",
            "groupKey": f'{{}}:{{pair="{self.pair}"}}',
            "truncatedAlerts": self.truncated,
        }

    def what(self) -> str:
        parts = [f"{a.alertname}@{a.node}:{a.status}(ep{a.episode})" for a in self.alerts]
        extra = f" truncated={self.truncated}" if self.truncated else ""
        extra += f" POISON startsAt={self.poison!r}" if self.poison else ""
        extra += f" [{self.note}]" if self.note else ""
        return f"deliver {self.pair}: {', '.join(parts)}{extra}"

    def brief(self) -> str:
        return f"t={self.t:.2f} {self.what()}"


@dataclass
class PairPlan:
    name: str
    slots: tuple[str, ...]  # world node names, in config order (the first is active)
    names: tuple[str, ...]  # config node names
    pdu: bool
    expect: (
        str  # "failover" (to `target` within the bound) | "quiet" (no fence, no activate) | "safe"
    )
    target: str | None = None  # slot expected to become active
    fault_node: str = ""  # config name of the faulty primary
    dry_run: bool = False  # `dry_run: true`: never a mutating request, roles never change
    handoff: str | None = None  # "operator" | "chain": the driver requires a hand-off
    quiet: int = 0  # handoff.quiet (heights) of the chain gate

    def slot_of(self, name: str) -> str:
        return self.slots[self.names.index(name)]


@dataclass
class Scenario:
    seed: int
    index: int
    real: bool
    topology: str
    hold: float
    episode: str
    primary_fault: str
    recovers: bool
    pdu: bool
    standby_fault: str
    delivery_faults: tuple[str, ...]
    responder_fault: str
    pairs: list[PairPlan]
    node_faults: dict[str, list[w.Fault]]
    late_by: dict[str, float]
    deliveries: list[Delivery]
    end: float
    real_hang: bool = False
    crash_nth: int = 0
    crash_landed: bool = False
    restart_at: float | None = None
    restart_delay: float = 0.0
    rename: str | None = None  # "active" | "standby"
    manual_at: float | None = None
    wall_step_at: float | None = None
    wall_step: float = 0.0
    bound: float = BOUND
    recover_at: float | None = None  # the primary recovers by itself then
    troubled_hang: bool = False  # two pairs: the troubled pair's primary hangs throughout
    feature: str = "none"
    switchover_at: float | None = None  # an operator asks for a switchover of mainnet-a then
    switchover_back: bool = False  # ... and a second one back once the first is done
    switchover_done: bool = False  # the (first) switchover must end done, source a standby
    race_switchover: bool = False  # `manual_at` sends a switchover, not a manual failover
    drills: list[tuple[float, str, str | None]] = field(default_factory=list)  # (t, pair, fault)
    pdu_lag: float = 0.0  # handoff: the primary's power switch cuts the power this late
    confirm_delay: float = 0.0  # handoff_operator: the operator confirms this long after
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.seed}:{self.index}"

    def kinds(self) -> dict[str, str]:
        """The scenario's fault kinds, for the campaign summary."""
        real = [n.split(":", 1)[1] for n in self.notes if n.startswith("real:")]
        return {
            "real": real[0] if real else "",
            "mode": "real-process" if self.real else "in-process",
            "topology": self.topology,
            "episode": self.episode,
            "primary": self.primary_fault + ("+recovers" if self.recovers else ""),
            "fence": "driver+pdu" if self.pdu else "driver",
            "standby": self.standby_fault,
            "responder": self.responder_fault
            + (f"({self.rename})" if self.rename and self.responder_fault != "none" else ""),
            "feature": self.feature,
        }

    def describe(self) -> str:
        lines = [f"scenario {self.key}: " + ", ".join(f"{k}={v}" for k, v in self.kinds().items())]
        lines.append(
            f"  hold={self.hold:g}s delivery faults: {', '.join(self.delivery_faults) or '-'}"
        )
        for p in self.pairs:
            target = f" -> {p.target}" if p.target else ""
            lines.append(
                f"  pair {p.name}: nodes {list(zip(p.names, p.slots, strict=True))} pdu={p.pdu} "
                f"expect={p.expect}{target}"
            )
        for slot, faults in sorted(self.node_faults.items()):
            for f in faults:
                lines.append(f"  node {slot}: {f.kind} [{f.start:.2f}, {f.end:.2f})")
        if self.responder_fault != "none":
            lines.append(
                f"  responder: {self.responder_fault} nth={self.crash_nth} "
                f"landed={self.crash_landed} restart_at={self.restart_at} rename={self.rename} "
                f"manual_at={self.manual_at} wall_step={self.wall_step:+g}@{self.wall_step_at}"
            )
        if self.feature != "none":
            lines.append(
                f"  feature: {self.feature} switchover_at={self.switchover_at} "
                f"back={self.switchover_back} must_be_done={self.switchover_done} "
                f"race={self.race_switchover} pdu_lag={self.pdu_lag:.2f} "
                f"confirm_delay={self.confirm_delay:.2f} "
                f"drills={[(round(t, 2), p, f) for t, p, f in self.drills]}"
            )
        lines.extend(f"  {d.brief()}" for d in self.deliveries)
        lines.append(f"  end at t={self.end:.2f}; bound hold+{self.bound:g}s")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def starts_at(offset: float) -> str:
    """An RFC 3339 startsAt `offset` seconds after the scenario's base epoch."""
    nanos_total = round((BASE_EPOCH + offset) * 1e9)
    whole, nanos = divmod(nanos_total, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def is_real(index: int) -> bool:
    return index % REAL_EVERY == REAL_AT


def generate(seed: int, index: int) -> Scenario:
    """The scenario numbered `index` of the campaign `seed`; the same inputs, the same scenario."""
    rng = random.Random(f"responder-chaos:{seed}:{index}")
    if is_real(index):
        return _real(rng, seed, index)
    frng = random.Random(f"responder-chaos-feature:{seed}:{index}")
    feature = frng.choices(FEATURES, weights=FEATURE_WEIGHTS)[0]
    topology = rng.choices(TOPOLOGIES, weights=(6, 2, 2))[0]
    episode = rng.choices(EPISODES, weights=(6, 2, 1, 1))[0]
    hold = rng.choice(HOLDS)
    primary = rng.choice(PRIMARY_FAULTS)
    sustained = episode in ("sustained", "flap_then_sustained")
    recovers = (
        sustained and primary in (w.DOWN, w.AGENT_DOWN, w.HANG, w.ERR500) and rng.random() < 0.3
    )
    pdu = rng.random() < 0.5
    standby = rng.choices(STANDBY_FAULTS, weights=(8, 1, 1, 1, 1, 1, 1))[0] if sustained else "none"
    delivery = tuple(f for f in DELIVERY_FAULTS if rng.random() < 0.25)
    responder_choices = list(RESPONDER_FAULTS)
    if not sustained:  # nothing to crash into, no failover to race
        responder_choices = ["none", "crash_after_ack", "restart_renamed", "wall_step"]
    responder = rng.choice(responder_choices)
    if feature.startswith(("switchover", "handoff")) and responder in (
        "restart_renamed",
        "concurrent_manual",
    ):
        responder = "none"  # the operator's own request is the race here
    if feature.startswith("handoff") and not pdu and frng.random() < 0.7:
        pdu = True  # mostly an out-of-band level: a fence without a hand-off

    names = ["node-a", "node-b"] + (["node-c"] if topology == "pair3" else [])
    subject = PairPlan(
        "mainnet-a",
        tuple(f"a{i}" for i in range(len(names))),
        tuple(names),
        pdu,
        "safe",
        fault_node="node-a",
    )
    pairs = [subject]
    sc = Scenario(
        seed=seed,
        index=index,
        real=False,
        topology=topology,
        hold=hold,
        episode=episode,
        primary_fault=primary,
        recovers=recovers,
        pdu=pdu,
        standby_fault=standby,
        delivery_faults=delivery,
        responder_fault=responder,
        pairs=pairs,
        node_faults={},
        late_by={},
        deliveries=[],
        end=0.0,
    )
    alertname = rng.choice(TRIGGERS)
    fault_at = rng.uniform(2.0, 8.0)
    last = _episodes(rng, sc, subject, alertname, fault_at)

    # ---- the primary's node fault, aligned with the episode windows
    a0 = subject.slots[0]
    windows = _windows(sc, subject)
    if primary != "none":
        for start, end in windows:
            if primary == w.FENCE_LIES:
                sc.node_faults.setdefault(a0, []).append(w.Fault(w.FENCE_LIES))
                break
            sc.node_faults.setdefault(a0, []).append(w.Fault(primary, start - 1.0, end))
    sc.real_hang = primary == w.HANG and rng.random() < 0.5

    # ---- the standby's
    b = subject.slots[1]
    if standby == "unhealthy_status":
        sc.node_faults.setdefault(b, []).append(w.Fault(w.UNHEALTHY))
    elif standby == "activate_500":
        sc.node_faults.setdefault(b, []).append(w.Fault(w.ACTIVATE_500))
    elif standby == "activate_late":
        sc.node_faults.setdefault(b, []).append(w.Fault(w.ACTIVATE_LATE))
        sc.late_by[b] = rng.uniform(0.2, SETTLE - 0.4)
    elif standby == "activate_loaded":
        sc.node_faults.setdefault(b, []).append(w.Fault(w.ACTIVATE_500_LOADED))
    elif standby == "activate_loaded_fence_lies":
        sc.node_faults.setdefault(b, []).extend(
            [w.Fault(w.ACTIVATE_500_LOADED), w.Fault(w.FENCE_LIES)]
        )
    elif standby == "unhealthy_alert":
        sick = AlertSpec(alertname, "node-b", subject.name, "firing", starts_at(fault_at - 30), 9)
        sc.deliveries.append(
            Delivery(max(0.1, fault_at - 1.5), subject.name, (sick,), note="standby sick")
        )

    # ---- responder faults
    if responder == "crash_in_failover":
        sc.crash_nth = rng.randint(1, 7)
        sc.crash_landed = rng.random() < 0.5
        sc.rename = "standby" if rng.random() < 0.15 else None
        sc.restart_delay = LEASE + rng.uniform(0.2, 1.5)
    elif responder in ("crash_before_claim", "crash_after_ack"):
        sc.restart_delay = rng.uniform(0.0, 2.0)
    elif responder == "restart_renamed":
        sc.rename = rng.choice(("active", "standby"))
        sc.restart_at = rng.uniform(0.5, fault_at + hold * 0.8)
    manual_share = rng.choice((0.5, 1.0))
    wall_share, wall_step = rng.uniform(-0.2, 0.9), rng.choice((3600.0, -3600.0))
    if responder in ("crash_in_failover", "crash_before_claim", "crash_after_ack"):
        sc.bound = BOUND + CRASH_BOUND

    _delivery_faults(rng, sc, subject)
    # timed from the first delivery that really carries the fault (truncation, flaps move it)
    seen = min((d.t for d in sc.deliveries if d.sustained), default=fault_at)
    if responder == "concurrent_manual":
        sc.manual_at = seen + hold * manual_share  # halfway through the hold, or at its end
    elif responder == "wall_step":
        sc.wall_step_at, sc.wall_step = max(0.1, seen + hold * wall_share), wall_step

    # ---- the other pair, healthy, with a sustained fault of its own: it must fail over on time
    if topology == "two_pairs":
        other = PairPlan(
            "mainnet-b", ("b0", "b1"), ("b-node-a", "b-node-b"), False, "failover", "b1"
        )
        other.fault_node = "b-node-a"
        pairs.append(other)
        t = rng.uniform(1.0, fault_at + hold)
        fire = AlertSpec(
            rng.choice(TRIGGERS), "b-node-a", other.name, "firing", starts_at(t - 60), 1
        )
        sc.deliveries.append(Delivery(t, other.name, (fire,), sustained=True, note="other pair"))
        last = max(last, t)
        if rng.random() < 0.5:  # the troubled pair's agent also hangs on every call
            sc.node_faults.setdefault(a0, []).append(w.Fault(w.HANG, 0.0, t + hold + 3))
            sc.troubled_hang = True
            sc.notes.append("troubled pair's primary hangs while the other pair fails over")

    _expectations(sc, subject)
    sc.feature = feature
    if feature != "none":
        _feature(frng, sc, subject, fault_at)
    sc.deliveries.sort(key=lambda d: d.t)
    sc.end = max(last, max((d.t for d in sc.deliveries), default=0.0)) + hold + 12.0
    if sc.restart_at is not None:
        sc.end = max(sc.end, sc.restart_at + hold + 12.0)
    return sc


def _feature(rng: random.Random, sc: Scenario, subject: PairPlan, fault_at: float) -> None:
    """Mix a product feature into the scenario (switchover, drill, dry-run pair, hand-off)."""
    sustained = sc.episode in ("sustained", "flap_then_sustained")
    seen = min(
        (d.t for d in sc.deliveries if d.sustained and d.pair == subject.name), default=fault_at
    )
    feature = sc.feature
    if feature == "switchover_race" and not sustained:
        feature = "switchover_sick"
    if feature == "switchover_sick" and not sustained:
        feature = "switchover"
    sc.feature = feature
    a0 = subject.slots[0]
    if feature in ("switchover", "switchover_back"):
        # before the primary's fault windows (they open 1 s before the first episode)
        sc.switchover_at = rng.uniform(0.3, max(0.4, fault_at - 1.2))
        sc.switchover_back = feature == "switchover_back"
        healthy = (
            sc.primary_fault != w.FENCE_LIES  # its other faults open after the switchover
            and sc.standby_fault == "none"
            and not sc.troubled_hang
            and sc.responder_fault in ("none", "wall_step")
        )
        sc.switchover_done = healthy
        if subject.expect != "safe":
            sc.notes.append(f"a switchover moves signing first: {subject.expect} not owed")
        subject.expect, subject.target = "safe", None
    elif feature == "switchover_sick":
        sc.switchover_at = seen + sc.hold * rng.uniform(0.15, 0.6)
    elif feature == "switchover_race":
        sc.manual_at, sc.race_switchover = seen + sc.hold, True
    elif feature == "dry_run_pair":
        dry = PairPlan(
            "mainnet-d",
            ("d0", "d1"),
            ("d-node-a", "d-node-b"),
            rng.random() < 0.5,
            "dry",
            fault_node="d-node-a",
            dry_run=True,
        )
        sc.pairs.append(dry)
        t = rng.uniform(1.0, fault_at + sc.hold)
        fire = AlertSpec(rng.choice(TRIGGERS), "d-node-a", dry.name, "firing", starts_at(t - 60), 1)
        sc.deliveries.append(Delivery(t, dry.name, (fire,), note="dry-run pair"))
        kind = rng.choice(PRIMARY_FAULTS)
        if kind == w.FENCE_LIES:
            sc.node_faults["d0"] = [w.Fault(w.FENCE_LIES)]
        elif kind != "none":
            sc.node_faults["d0"] = [w.Fault(kind, t - 1.0, t + rng.uniform(2.0, 30.0))]
        sc.notes.append(f"dry-run pair mainnet-d: d-node-a {kind} from t={t - 1.0:.2f}")
    elif feature.startswith("handoff"):
        subject.handoff = feature.removeprefix("handoff_")
        subject.quiet = rng.choice((2, 3, 5))
        lagging = sc.primary_fault in (w.AGENT_DOWN, w.ERR500, w.HANG) and rng.random() < 0.6
        if lagging:  # the validator keeps signing after the outlet-off answer
            sc.pdu_lag = rng.uniform(0.5, 4.0)
            sc.node_faults.setdefault(a0, []).append(w.Fault(w.PDU_SLOW))
            sc.notes.append(f"the primary's power goes off {sc.pdu_lag:.2f}s after the switch")
        sc.confirm_delay = rng.uniform(0.3, 3.0)
        if subject.expect == "failover":
            sc.bound += subject.quiet + sc.pdu_lag + sc.confirm_delay + 3.0
    # drills: a few in a drill scenario, one in every other feature scenario
    n = rng.randint(2, 5) if feature == "drill" else 1
    for _ in range(n):
        plan = rng.choice(sc.pairs)
        fault = rng.choice((None, plan.names[0], plan.names[1]))
        sc.drills.append((rng.uniform(0.3, fault_at + sc.hold + 8.0), plan.name, fault))


def _episodes(rng: random.Random, sc: Scenario, pair: PairPlan, alertname: str, t: float) -> float:
    """The subject pair's fault episodes as deliveries; returns when the last one began."""
    node = pair.fault_node
    n_flaps = rng.randint(2, 4) if sc.episode in ("flap", "flap_then_sustained") else 0
    if sc.episode == "blip":
        n_flaps = 1
    for i in range(n_flaps):
        duration = rng.uniform(0.2, sc.hold - 1.0)
        s = starts_at(t - 60 + i)
        fire = AlertSpec(alertname, node, pair.name, "firing", s, i + 1)
        gone = AlertSpec(alertname, node, pair.name, "resolved", s, i + 1)
        sc.deliveries.append(Delivery(t, pair.name, (fire,), note="blip"))
        sc.deliveries.append(Delivery(t + duration, pair.name, (gone,), note="blip over"))
        t += duration + rng.uniform(0.3, 2.0)
    if sc.episode in ("sustained", "flap_then_sustained"):
        s = starts_at(t - 30)
        fire = AlertSpec(alertname, node, pair.name, "firing", s, 10)
        sc.deliveries.append(Delivery(t, pair.name, (fire,), sustained=True, note="sustained"))
        if sc.recovers:
            back = t + sc.hold + rng.uniform(0.2, 3.0)
            sc.recover_at = back
            sc.notes.append(f"primary recovers by itself at t={back:.2f}")
            gone = AlertSpec(alertname, node, pair.name, "resolved", s, 10)
            sc.deliveries.append(
                Delivery(back + rng.uniform(0.5, 2.0), pair.name, (gone,), note="recovered")
            )
    return t


def _windows(sc: Scenario, pair: PairPlan) -> list[tuple[float, float]]:
    """When the primary is really sick: each blip, and the sustained episode."""
    out: list[tuple[float, float]] = []
    fires = {}
    for d in sc.deliveries:
        for a in d.alerts:
            if a.node == pair.fault_node and a.episode >= 1:
                if a.status == "firing":
                    fires[a.episode] = d.t
                elif a.episode in fires:
                    out.append((fires.pop(a.episode), d.t))
    for ep, start in fires.items():
        end = sc.recover_at if sc.recover_at is not None and ep == 10 else 1e9
        out.append((start, end))
    return out


def _delivery_faults(rng: random.Random, sc: Scenario, pair: PairPlan) -> None:
    faults = set(sc.delivery_faults)
    extra: list[Delivery] = []
    if "truncated" in faults:
        for i, d in enumerate(sc.deliveries):
            if not d.sustained:
                continue
            other = AlertSpec(
                "DiskSpaceLow", pair.fault_node, pair.name, "firing", d.alerts[0].starts_at, 0
            )
            if rng.random() < 0.5:  # the trigger is in the group, another alert was dropped
                sc.deliveries[i] = Delivery(
                    d.t, d.pair, d.alerts, 1, sustained=True, note="truncated"
                )
            else:  # the trigger itself was dropped: only the next full group carries it
                sc.deliveries[i] = Delivery(
                    d.t, d.pair, (other,), 1, note="truncated, trigger dropped"
                )
                extra.append(
                    Delivery(
                        d.t + rng.uniform(2.0, 6.0),
                        d.pair,
                        d.alerts,
                        sustained=True,
                        note="full group",
                    )
                )
            break
    if "resolved_first" in faults:
        t = rng.uniform(0.2, 1.5)
        s = starts_at(-300)
        old_fire = AlertSpec(TRIGGERS[0], pair.fault_node, pair.name, "firing", s, 0)
        old_gone = AlertSpec(TRIGGERS[0], pair.fault_node, pair.name, "resolved", s, 0)
        extra.append(Delivery(t, pair.name, (old_gone,), note="resolved before firing"))
        extra.append(
            Delivery(
                t + rng.uniform(0.1, 1.0),
                pair.name,
                (old_fire,),
                note="late firing of a resolved episode",
            )
        )
    if "reorder" in faults:
        moved = []
        for d in sc.deliveries:
            if d.pair == pair.name and rng.random() < 0.5:
                t = max(0.05, d.t + rng.uniform(-2.0, 2.0))
                note = d.note + " (reordered)"
                moved.append(
                    Delivery(t, d.pair, d.alerts, d.truncated, d.poison, d.sustained, note)
                )
            else:
                moved.append(d)
        sc.deliveries = moved
    if "duplicates" in faults:
        for d in list(sc.deliveries) + extra:
            for _ in range(rng.randint(0, 2)):
                extra.append(
                    Delivery(
                        d.t + rng.uniform(0.05, 6.0),
                        d.pair,
                        d.alerts,
                        d.truncated,
                        None,
                        d.sustained,
                        "duplicate",
                    )
                )
    if "two_am" in faults:
        for d in list(sc.deliveries) + extra:
            extra.append(
                Delivery(
                    d.t + rng.uniform(0.0, 0.5),
                    d.pair,
                    d.alerts,
                    d.truncated,
                    None,
                    d.sustained,
                    "second alertmanager",
                )
            )
    if "poison" in faults:
        for _ in range(rng.randint(1, 2)):
            a = AlertSpec(TRIGGERS[0], pair.fault_node, pair.name, "firing", starts_at(0), 0)
            extra.append(
                Delivery(
                    rng.uniform(0.1, 10.0),
                    pair.name,
                    (a,),
                    poison=rng.choice(POISON),
                    note="poison",
                )
            )
    sc.deliveries.extend(extra)
    _keep_blips_short(sc, pair)


def _keep_blips_short(sc: Scenario, pair: PairPlan) -> None:
    """A blip must end (as the responder sees it) before its hold: the earliest resolved of an
    episode is delivered less than hold - 0.75 s after the earliest firing of it."""
    first_fire: dict[int, float] = {}
    for d in sc.deliveries:
        for a in d.alerts:
            if d.pair == pair.name and d.poison is None and a.status == "firing":
                first_fire[a.episode] = min(first_fire.get(a.episode, 1e9), d.t)
    for i, d in enumerate(sc.deliveries):
        if d.pair != pair.name or not d.alerts or d.alerts[0].status != "resolved":
            continue
        ep = d.alerts[0].episode
        if ep in first_fire and ep != 10 and d.t - first_fire[ep] > sc.hold - 0.75:
            sc.deliveries[i] = Delivery(
                first_fire[ep] + sc.hold - 0.75,
                d.pair,
                d.alerts,
                d.truncated,
                d.poison,
                d.sustained,
                d.note + " (kept short)",
            )


def _expectations(sc: Scenario, pair: PairPlan) -> None:
    """What must happen on the subject pair; safety is checked in every scenario."""
    sustained = sc.episode in ("sustained", "flap_then_sustained")
    if not sustained or sc.rename == "active":
        pair.expect = "quiet"  # a blip; or held until an operator adopts the renamed signer
        return
    fires = [d.t for d in sc.deliveries if d.pair == pair.name and d.sustained]
    ends = [
        d.t
        for d in sc.deliveries
        if d.pair == pair.name and any(a.episode == 10 and a.status == "resolved" for a in d.alerts)
    ]
    if fires and ends and min(ends) - min(fires) < sc.hold + 0.5:
        sc.notes.append("the recovery is delivered before the hold ends: no failover is owed")
        return
    # the primary's agent answers a fence truthfully, or a power switch fences it
    fence_works = sc.pdu or (sc.primary_fault == "none" and not sc.troubled_hang)
    target: str | None = pair.slots[1]
    if sc.standby_fault == "unhealthy_alert":
        target = pair.slots[2] if len(pair.slots) > 2 else None
    elif sc.standby_fault != "none":
        target = None
    if sc.rename == "standby" and sc.responder_fault == "crash_in_failover":
        target = None  # the target vanishes mid-failover: it ends as failed
    if sc.rename == "standby" and sc.standby_fault == "unhealthy_alert":
        target = None  # the sick standby's alert names its old name: the renamed one looks well
    if fence_works and target is not None:
        pair.expect, pair.target = "failover", target


def _real(rng: random.Random, seed: int, index: int) -> Scenario:
    """A scenario against real processes: the responder under gunicorn, real time."""
    kind = ("sustained_dup", "blip", "sigkill", "lying_fence", "two_pairs_hang")[
        (index // REAL_EVERY) % 5
    ]
    pairs = [
        PairPlan("mainnet-a", ("a0", "a1"), ("node-a", "node-b"), False, "failover", "a1", "node-a")
    ]
    node_faults: dict[str, list[w.Fault]] = {}
    sc = Scenario(
        seed=seed,
        index=index,
        real=True,
        topology="two_pairs" if kind == "two_pairs_hang" else "pair2",
        hold=2.0,
        episode="blip" if kind == "blip" else "sustained",
        primary_fault=w.FENCE_LIES if kind == "lying_fence" else "none",
        recovers=False,
        pdu=False,
        standby_fault="none",
        delivery_faults=("duplicates", "two_am") if kind == "sustained_dup" else (),
        responder_fault={"sigkill": "crash_in_failover"}.get(kind, "none"),
        pairs=pairs,
        node_faults=node_faults,
        late_by={},
        deliveries=[],
        end=0.0,
    )
    sc.notes.append(f"real:{kind}")
    sc.crash_nth = rng.choice((1, 2))  # held: 1 = the fence, 2 = the activation
    sc.crash_landed = True  # the held request took effect; its answer is what the kill loses
    sc.end = 20.0
    if kind == "blip":
        pairs[0].expect, pairs[0].target = "quiet", None
    if kind == "lying_fence":
        node_faults["a0"] = [w.Fault(w.FENCE_LIES)]
        pairs[0].expect, pairs[0].target = "safe", None
    if kind == "sigkill":
        sc.bound = BOUND + 10.0  # gunicorn restart and the lease
    if kind == "two_pairs_hang":
        pairs[0].expect, pairs[0].target = "safe", None
        node_faults["a0"] = [w.Fault(w.HANG)]
        pairs.append(
            PairPlan(
                "mainnet-b",
                ("b0", "b1"),
                ("b-node-a", "b-node-b"),
                False,
                "failover",
                "b1",
                "b-node-a",
            )
        )
    return sc
