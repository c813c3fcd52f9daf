"""Fault -> standby active, end to end, on the lab's fast profile, broken down by stage.

Simulated nodes, real Prometheus and Alertmanager with the shipped rules and routing, and the
responder under gunicorn (responder.lab): scrape every 1 s, rules `for: 3s`, group_wait 1 s,
hold 3 s. Each run starts a fresh lab, stops the primary's validator client and waits for the
failover to finish; the stages come from the failover's journal (`Lab.timeline`). Everything
but the responder's own work is set by those timers, so the figure is context, not a goal;
the responder's share (from its hold deadline to the standby answering active) is printed
beside it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report
from responder.lab import Lab, LabSettings, Timeline

RUNS = 5
SETTINGS = LabSettings()  # the fast profile: scrape 1s, for 3s, group_wait 1s, hold 3s
HOLD = float(SETTINGS.hold.removesuffix("s"))


@dataclass(frozen=True)
class Run:
    timeline: Timeline
    outcome: str

    @property
    def responder_share(self) -> float:
        """Seconds from the hold deadline to the standby answering active."""
        return self.timeline.active - self.timeline.responder_received - HOLD


def one_run() -> Run:
    """A fresh lab; the primary's validator client stops; the failover runs to its end."""
    with Lab(SETTINGS) as lab:
        lab.wait_until_watching()
        injected = lab.inject("node-a", "vc_down")

        def finished() -> bool:
            failover = lab.pair()["failover"]
            return failover is not None and failover["step"] in ("done", "failed", "aborted")

        lab.wait_for("the failover to finish", finished, timeout=90)
        failover = lab.pair()["failover"]
        return Run(lab.timeline(failover["id"], injected), failover["step"])


def measure(runs: int = RUNS) -> list[Run]:
    return [one_run() for _ in range(runs)]


def to_rows(runs: list[Run]) -> list[report.Row]:
    done = [r for r in runs if r.outcome == "done"]
    what = (
        f"fault -> standby active, fast profile (scrape 1s, for: {SETTINGS.rule_for}, "
        f"group_wait {SETTINGS.group_wait}, hold {SETTINGS.hold}), median of {len(runs)}"
    )
    if not done:
        outcomes = ", ".join(r.outcome for r in runs)
        return [report.Row(what, "no failover done", "context", None, f"outcomes: {outcomes}")]
    totals = [r.timeline.total for r in done]
    names = [name for name, _ in done[0].timeline.stages()]
    per_stage = {
        name: report.median([dict(r.timeline.stages())[name] for r in done]) for name in names
    }
    share = [r.responder_share for r in done]
    lines = [f"{name:<48} {secs:7.3f} s (median)" for name, secs in per_stage.items()]
    lines.append(
        f"total min {min(totals):.2f} s, max {max(totals):.2f} s; {len(done)} of {len(runs)} "
        "runs ended done"
    )
    lines.append(
        f"the responder's own share (hold deadline -> standby active): median "
        f"{report.median(share) * 1000:.0f} ms, max {max(share) * 1000:.0f} ms"
    )
    numbers = {f"stage: {name}": secs for name, secs in per_stage.items()}
    numbers |= {
        "total_median_s": report.median(totals),
        "total_min_s": min(totals),
        "total_max_s": max(totals),
        "responder_share_median_s": report.median(share),
        "runs_done": float(len(done)),
    }
    return [
        report.Row(
            what, f"{report.median(totals):.2f} s", "context", None, "\n".join(lines), numbers
        )
    ]


def rows(quick: bool = False) -> list[report.Row]:
    return to_rows(measure(1 if quick else RUNS))


def main() -> None:
    started = time.monotonic()
    print(report.header())
    print(report.render(rows(quick="--quick" in sys.argv)))
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
