"""The responder's own share of a failover, measured from outside with instant fake nodes.

The responder runs as users run it (`python -m responder serve --workers 2`); the nodes are
bench/fakenodes.py, one process answering in about a tenth of a millisecond, recording when each
request arrived and when its answer left. Three figures:

1. hold deadline -> fence request at the primary, p99, over 100 pairs faulted one at a time
   (each in its own delivery, hold 1 s, 0.4 s apart: deadlines never meet a delivery);
2. fence confirmed (the fake primary sent its fence answer) -> activate request at the
   standby, p99, over the same failovers;
3. 1,000 pairs faulted in one Alertmanager delivery: deadline -> fence, p99 over the pairs.

The deadline is the one the responder computed: the failover record keeps the signal it
acted on, whose `since` is when the delivery was recorded, in responder time (the monotonic
clock plus an offset fixed when the responder started), and the deadline is `since + hold`.
The status API shows deadlines as wall-clock ISO times to the second only, too coarse here.
The benchmark reads the monotonic clock's offset from the wall clock just before starting the
responder, so deadlines and the fakes' monotonic stamps compare exactly; each `since` is
checked to lie between the benchmark sending that delivery and receiving its 2xx. Where the
time went is printed beside each figure, from the failover's journal and the fakes' stamps.

`python bench/failover.py` (about 90 s; `--quick`: 5 pairs and 20 in one delivery, ~10 s).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report
from bench.fakenodes import FakeNodes
from tests.conftest import base_config, write_config
from tests.serverproc import ServerProcess, free_port
from tests.tokens import NODE_TOKEN, OPERATOR_TOKEN, WEBHOOK_TOKEN

HOLD = 1.0  # seconds: short, so a run is quick; the responder's work does not depend on it
SPACING = 0.4  # seconds between faults: deadlines fall between deliveries, never on them
SINGLE_PAIRS = 100
STORM_HOLD = 5.0  # the 1,000-alert delivery is processed within it, so the deadline is shared
TRIGGER = "ValidatorClientDown"
STORM_WAIT = 60.0  # seconds after the deadline; a pair not fenced by then counts as never
SETTLE_LIMIT = 30.0  # seconds at most for the first probe round of every node
JOURNALS = 50  # failovers of the storm whose journals are read for the stage breakdown

GOAL_FENCE_MS = 10.0
GOAL_ACTIVATE_MS = 5.0
GOAL_STORM_S = 1.0


# ---- one failover, as seen from outside ------------------------------------------------------


@dataclass
class Sample:
    """One pair's failover: every time on the system-wide monotonic clock, in seconds."""

    pair: str
    sent: float  # the benchmark sent the delivery
    acked: float  # ... and had its 2xx
    deadline: float | None = None  # the hold deadline the responder computed
    fence_arrived: float | None = None
    fence_answered: float | None = None
    activate_arrived: float | None = None
    fences: int = 0
    activations: int = 0
    stamps: dict[str, float] = field(default_factory=dict)  # journal steps, monotonic
    hold: float = HOLD

    @property
    def complete(self) -> bool:
        return None not in (
            self.deadline,
            self.fence_arrived,
            self.fence_answered,
            self.activate_arrived,
        )

    @property
    def to_fence(self) -> float:
        assert self.fence_arrived is not None and self.deadline is not None
        return self.fence_arrived - self.deadline

    @property
    def to_activate(self) -> float:
        assert self.activate_arrived is not None and self.fence_answered is not None
        return self.activate_arrived - self.fence_answered

    @property
    def deadline_in_delivery(self) -> bool:
        """The recorded delivery time lies within the benchmark's send and 2xx (clock check)."""
        if self.deadline is None:
            return False
        since = self.deadline - self.hold
        return self.sent - 0.001 <= since <= self.acked + 0.001


@dataclass
class Measurement:
    """A run's samples, with what is needed to read them."""

    pairs: int
    samples: list[Sample]
    hold: float
    fake_rtt: list[float] = field(default_factory=list)
    ready_after: float = 0.0  # seconds from start until the first round of probes was over
    delivery_ack: float = 0.0  # seconds to the 2xx of the (largest) delivery
    waited: float = 0.0  # seconds after the deadline the run waited for the last activation

    @property
    def complete(self) -> list[Sample]:
        return [s for s in self.samples if s.complete]


# ---- deliveries -------------------------------------------------------------------------------


def _alert(pair: str, starts_at: str) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": TRIGGER, "node": "node-a", "pair": pair, "severity": "critical"},
        "annotations": {"summary": f"{TRIGGER} on node-a of {pair}"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": f"fp-{pair}",
    }


def delivery(pairs: list[str], group: dict[str, str]) -> dict[str, Any]:
    """An Alertmanager 0.25 webhook body carrying one firing trigger per pair's primary."""
    starts_at = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    common = {"alertname": TRIGGER, "severity": "critical", "node": "node-a"}
    if len(pairs) == 1:
        common["pair"] = pairs[0]
    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(group.items()))
    return {
        "receiver": "responder",
        "status": "firing",
        "alerts": [_alert(p, starts_at) for p in pairs],
        "groupLabels": group,
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": '{}/{failover_trigger="true"}:{' + labels + "}",
        "truncatedAlerts": 0,
    }


# ---- the responder with many pairs ----------------------------------------------------------


def pair_names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(count)]


def write_pairs(directory: Path, fakes: FakeNodes, names: list[str], hold: float) -> Path:
    """A config of `names` pairs, node-a signing and node-b standby, nodes on the fakes."""
    pairs = [
        {
            "name": name,
            "nodes": [
                {
                    "name": node,
                    "match": {"pair": name, "node": node},
                    "driver": {
                        "type": "http",
                        "url": f"{fakes.url}/{name}-{node}",
                        "token_file": "./secrets/node-token",
                        "timeout": "2s",
                    },
                }
                for node in ("node-a", "node-b")
            ],
            "policy": {
                "triggers": [TRIGGER],
                "hold": f"{hold:g}s",
                "quorum": 1,
                "cooldown": "1h",
                "max_failovers": 1,
                "max_failovers_window": "24h",
            },
        }
        for name in names
    ]
    data = base_config(lambda n: "", pairs=pairs)
    return write_config(directory, data)


@contextlib.contextmanager
def responder(
    directory: Path, config: Path, startup: float
) -> Iterator[tuple[ServerProcess, float]]:
    """The responder serving `config`, and its clock offset (wall minus monotonic)."""
    offset = time.time() - time.monotonic()
    server = ServerProcess(config, free_port(), directory / "responder.log").start(startup)
    try:
        yield server, offset
    finally:
        server.stop()


def wait_probed(fakes: FakeNodes, base: int, nodes: int, timeout: float) -> float:
    """Wait until the responder's first probe round has reached `nodes` more nodes than the
    `base` probed before it started, and the status calls paused (half a second without one,
    or two seconds after the last new node: with many pairs the background probes never
    pause), at most `timeout`; seconds waited."""
    started = time.monotonic()
    last, quiet_since, all_since = -1, started, None
    while time.monotonic() - started < timeout:
        counts = fakes.counts()
        now = time.monotonic()
        if counts["status"] != last:
            last, quiet_since = counts["status"], now
        if all_since is None and counts["nodes_probed"] - base >= nodes:
            all_since = now
        if all_since is not None and (now - quiet_since >= 0.5 or now - all_since >= 2.0):
            break
        time.sleep(0.1)
    return time.monotonic() - started


def post(
    session: requests.Session, server: ServerProcess, body: dict[str, Any]
) -> tuple[float, float]:
    """Deliver `body`; (sent, acknowledged) on the monotonic clock."""
    data = json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}
    sent = time.monotonic()
    resp = session.post(server.url + "/webhook", data=data, headers=headers, timeout=60)
    acked = time.monotonic()
    resp.raise_for_status()
    return sent, acked


def wait_activations(fakes: FakeNodes, want: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and fakes.counts()["activate"] < want:
        time.sleep(0.1)


def operator_get(session: requests.Session, server: ServerProcess, path: str) -> Any:
    resp = session.get(
        server.url + path, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}, timeout=120
    )
    resp.raise_for_status()
    return resp.json()


def fill(
    samples: dict[str, Sample],
    fakes: FakeNodes,
    server: ServerProcess,
    offset: float,
    hold: float,
    journals: int | None = None,
) -> None:
    """Complete each sample from the fakes' records and the responder's failover records.

    `journals`: read at most that many failovers' journals (evenly spread), for the stages.
    """
    calls = fakes.calls()
    for name, sample in samples.items():
        fences = [c for c in calls.get(f"{name}-node-a", []) if c["action"] == "fence"]
        activations = [c for c in calls.get(f"{name}-node-b", []) if c["action"] == "activate"]
        sample.fences, sample.activations = len(fences), len(activations)
        if fences:
            sample.fence_arrived = fences[0]["arrived_mono"]
            sample.fence_answered = fences[0]["answered_mono"]
        if activations:
            sample.activate_arrived = activations[0]["arrived_mono"]
        sample.hold = hold
    with requests.Session() as session:
        ids: dict[str, str] = {}
        for pair in operator_get(session, server, "/api/v1/pairs")["pairs"]:
            found = samples.get(pair["name"])
            failover = pair.get("failover")
            if found is None or not failover:
                continue
            ids[pair["name"]] = failover["id"]
            signals = (failover.get("data") or {}).get("signals") or []
            since = [float(s["since"]) for s in signals if s.get("node") == "node-a"]
            if since:  # responder time is monotonic + offset
                found.deadline = min(since) + hold - offset
        names = sorted(ids)
        if journals is not None and len(names) > journals:
            step = len(names) / journals
            names = [names[int(i * step)] for i in range(journals)]
        for name in names:
            doc = operator_get(session, server, f"/api/v1/failovers/{ids[name]}")
            for entry in doc.get("journal", []):
                key = f"{entry['step']}/{entry['phase']}"
                samples[name].stamps.setdefault(key, float(entry["ts"]) - offset)


# ---- the runs -----------------------------------------------------------------------------------


def one_at_a_time(fakes: FakeNodes, count: int) -> Measurement:
    """Rows 1 and 2: `count` pairs, each faulted in its own delivery, SPACING apart."""
    names = pair_names("seq", count)
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        config = write_pairs(Path(tmp), fakes, names, HOLD)
        before = fakes.counts()
        with responder(Path(tmp), config, 30) as (server, offset):
            ready = wait_probed(fakes, before["nodes_probed"], 2 * count, 30)
            samples: dict[str, Sample] = {}
            acks = []
            with requests.Session() as session:
                start = time.monotonic() + 0.1
                for i, name in enumerate(names):
                    time.sleep(max(0.0, start + i * SPACING - time.monotonic()))
                    sent, acked = post(session, server, delivery([name], {"pair": name}))
                    samples[name] = Sample(name, sent, acked)
                    acks.append(acked - sent)
            wait_activations(fakes, before["activate"] + count, HOLD + 20)
            fill(samples, fakes, server, offset, HOLD)
    return Measurement(
        count, list(samples.values()), HOLD, ready_after=ready, delivery_ack=max(acks)
    )


def storm(fakes: FakeNodes, count: int, hold: float = STORM_HOLD) -> Measurement:
    """Row 3: `count` pairs faulted in one delivery of `count` trigger alerts."""
    names = pair_names("storm", count)
    with tempfile.TemporaryDirectory(prefix="bench-storm-") as tmp:
        config = write_pairs(Path(tmp), fakes, names, hold)
        before = fakes.counts()
        with responder(Path(tmp), config, 120) as (server, offset):
            ready = wait_probed(fakes, before["nodes_probed"], 2 * count, SETTLE_LIMIT)
            with requests.Session() as session:
                body = delivery(names, {"alertname": TRIGGER})
                sent, acked = post(session, server, body)
            wait_activations(fakes, before["activate"] + count, hold + STORM_WAIT)
            waited = time.monotonic() - (acked + hold)
            samples = {name: Sample(name, sent, acked) for name in names}
            fill(samples, fakes, server, offset, hold, journals=JOURNALS)
    return Measurement(
        count,
        list(samples.values()),
        hold,
        ready_after=ready,
        delivery_ack=acked - sent,
        waited=waited,
    )


# ---- figures ------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def stages(samples: list[Sample]) -> str:
    """Where the time from deadline to activation went (medians), from the journal steps
    and the fakes' stamps."""
    marks: list[tuple[str, Any]] = [
        ("deadline", lambda s: s.deadline),
        ("planned", lambda s: s.stamps.get("planned/note")),
        ("fencing", lambda s: s.stamps.get("fencing/begin")),
        ("fence arrives", lambda s: s.fence_arrived),
        ("fence answered", lambda s: s.fence_answered),
        ("fenced", lambda s: s.stamps.get("fenced/begin")),
        ("activating", lambda s: s.stamps.get("activating/begin")),
        ("activate arrives", lambda s: s.activate_arrived),
    ]
    parts = []
    for (a, fa), (b, fb) in itertools.pairwise(marks):
        gaps = [fb(s) - fa(s) for s in samples if fa(s) is not None and fb(s) is not None]
        if gaps:
            parts.append(f"{a} -> {b} {report.median(gaps) * 1000:.1f}")
    return "stages (median ms): " + "; ".join(parts) if parts else ""


def fence_rows(m: Measurement) -> list[report.Row]:
    done = m.complete
    wrong = [s.pair for s in m.samples if s.fences != 1 or s.activations != 1]
    clock_off = [s.pair for s in done if not s.deadline_in_delivery]
    rtt = (
        f"fake nodes: loopback round trip p50 {ms(report.median(m.fake_rtt))}, "
        f"p99 {ms(report.percentile(m.fake_rtt, 99))} (fresh connection per call)"
        if m.fake_rtt
        else ""
    )
    notes = [
        f"{len(done)} of {m.pairs} pairs failed over, one delivery each, {SPACING:g} s apart, "
        f"hold {m.hold:g} s, 2 workers; probes settled {m.ready_after:.1f} s after start",
        rtt,
    ]
    if wrong:
        notes.append(f"not exactly one fence and one activation: {', '.join(wrong[:5])}")
    if clock_off:
        notes.append(
            f"deadline outside its delivery's send..2xx window: {', '.join(clock_off[:5])}"
        )
    rows = []
    if done:
        fence = [s.to_fence for s in done]
        act = [s.to_activate for s in done]
        p_fence, p_act = report.percentile(fence, 99), report.percentile(act, 99)
        missing = len(done) < m.pairs
        rows.append(
            report.Row(
                "hold deadline -> fence request at the primary, p99 (instant fake nodes)",
                ms(p_fence),
                f"<= {GOAL_FENCE_MS:g} ms",
                p_fence * 1000 <= GOAL_FENCE_MS and not missing,
                "\n".join(
                    [
                        f"median {ms(report.median(fence))}, p95 "
                        f"{ms(report.percentile(fence, 95))}, max {ms(max(fence))}, n={len(fence)}",
                        *[n for n in notes if n],
                        stages(done),
                    ]
                ),
                {
                    "p99_ms": p_fence * 1000,
                    "median_ms": report.median(fence) * 1000,
                    "max_ms": max(fence) * 1000,
                    "n": len(fence),
                },
            )
        )
        rows.append(
            report.Row(
                "fence confirmed -> activate request at the standby, p99",
                ms(p_act),
                f"<= {GOAL_ACTIVATE_MS:g} ms",
                p_act * 1000 <= GOAL_ACTIVATE_MS and not missing,
                f"median {ms(report.median(act))}, p95 {ms(report.percentile(act, 95))}, "
                f"max {ms(max(act))}, n={len(act)}; from the "
                "fake primary sending its fence answer to the standby receiving the activation",
                {
                    "p99_ms": p_act * 1000,
                    "median_ms": report.median(act) * 1000,
                    "max_ms": max(act) * 1000,
                    "n": len(act),
                },
            )
        )
    else:
        for what, goal in (
            ("hold deadline -> fence request at the primary, p99 (instant fake nodes)", "<= 10 ms"),
            ("fence confirmed -> activate request at the standby, p99", "<= 5 ms"),
        ):
            rows.append(
                report.Row(what, "no failover", goal, False, "\n".join(n for n in notes if n))
            )
    return rows


def storm_row(m: Measurement) -> report.Row:
    what = f"{m.pairs:,} pairs faulted in one notification: deadline -> fence, p99"
    goal = f"<= {GOAL_STORM_S:g} s"
    fenced = [s for s in m.samples if s.fence_arrived is not None and s.deadline is not None]
    detail = [
        f"one delivery of {m.pairs:,} {TRIGGER} alerts (2xx in {ms(m.delivery_ack)}), hold "
        f"{m.hold:g} s, {m.pairs:,} pairs of 2 nodes, 2 workers; first probe round of every "
        f"node took {m.ready_after:.1f} s",
    ]
    if len(fenced) < m.pairs:
        detail.append(
            f"only {len(fenced)} of {m.pairs:,} primaries fenced within {m.waited:.0f} s of "
            "the deadline (the others count as later than that)"
        )
    clock_off = [s.pair for s in fenced if not s.deadline_in_delivery]
    if clock_off:
        detail.append(f"deadline outside the delivery's send..2xx window: {clock_off[:5]}")
    if not fenced:
        return report.Row(what, "no fence", goal, False, "\n".join(detail))
    lat = [s.to_fence for s in fenced]
    every = lat + [math.inf] * (m.pairs - len(fenced))
    p99 = report.percentile(every, 99)
    acts = [s.to_activate for s in fenced if s.activate_arrived is not None and s.fence_answered]
    detail.insert(
        0,
        f"first fence {ms(min(lat))}, median {report.percentile(every, 50):.2f} s, last "
        f"{max(lat):.2f} s after the deadline"
        + (f"; fence -> activate median {ms(report.median(acts))}" if acts else ""),
    )
    sampled = [s for s in fenced if s.stamps]
    line = stages(sampled)
    if line:
        detail.append(line.replace("stages", f"stages of {len(sampled)} sampled failovers"))
    numbers = {"fenced": float(len(fenced)), "pairs": float(m.pairs), "first_s": min(lat)}
    if math.isfinite(p99):
        numbers |= {"p99_s": p99, "median_s": report.percentile(every, 50), "max_s": max(lat)}
    return report.Row(
        what,
        f"{p99:.2f} s" if math.isfinite(p99) else f"> {m.waited:.0f} s",
        goal,
        p99 <= GOAL_STORM_S,
        "\n".join(detail),
        numbers,
    )


def measure(quick: bool = False) -> tuple[Measurement, Measurement]:
    """Both runs against one fake-node process: (one at a time, storm)."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-fakes-") as tmp,
        FakeNodes(Path(tmp), NODE_TOKEN) as fakes,
    ):
        rtt = fakes.round_trips(200)
        single = one_at_a_time(fakes, 5 if quick else SINGLE_PAIRS)
        single.fake_rtt = rtt
        many = storm(fakes, 20, hold=2.0) if quick else storm(fakes, 1000)
    return single, many


def rows(quick: bool = False) -> list[report.Row]:
    single, many = measure(quick)
    return [*fence_rows(single), storm_row(many)]


def main() -> None:
    print(report.header())
    print(report.render(rows(quick="--quick" in sys.argv)))


if __name__ == "__main__":
    main()
