"""`make demo`: the whole loop once, on loopback, narrated.

Starts two simulated validator nodes, real Prometheus and Alertmanager with the shipped rules
and routing, and the responder under gunicorn (SQLite state). Then it stops the primary's
validator client, prints what happens as it happens, the per-stage timing, the final
`responder status`, and stops everything it started. Exit status 0 means the standby took over
after the primary was fenced and the two never signed at the same time.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime

from .cli import format_status
from .lab import Lab, LabError, LabSettings
from .sim import overlaps

SETTINGS = LabSettings(
    rule_for="5s", hold="5s", scrape_interval="1s", group_wait="1s", group_interval="2s"
)


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S.%f")[:-3]


def run() -> int:
    print("responder demo: two simulated validator nodes, Prometheus, Alertmanager, responder")
    print(
        f"timers: scrape 1s, rule for: {SETTINGS.rule_for}, group_wait {SETTINGS.group_wait}, "
        f"responder hold {SETTINGS.hold} (production: see alerting/README.md)\n"
    )
    with Lab(SETTINGS) as lab:
        for proc in lab.procs:
            print(f"  started {proc.name:<13} {lab.url(proc.name)}")
        print("\nwaiting for Prometheus to scrape every target ...")
        lab.wait_until_watching()
        print(format_status([lab.pair()]) + "\n")

        injected = lab.inject("node-a", "vc_down")
        print(f"{_clock(injected)}  FAULT: validator client on node-a (the primary) stops\n")
        seen: set[int] = set()

        def show_events() -> None:
            for event in reversed(lab.events()):
                if event["id"] in seen:
                    continue
                seen.add(event["id"])
                if event["ts"] < injected:
                    continue
                print(
                    f"{_clock(event['ts'])}  +{event['ts'] - injected:5.2f}s  {event['kind']}: {event['reason']}"
                )

        def done() -> bool:
            show_events()
            failover = lab.pair()["failover"]
            return failover is not None and failover["step"] in ("done", "failed", "aborted")

        lab.wait_for("the failover to finish", done, timeout=120)
        time.sleep(0.3)
        show_events()
        pair = lab.pair()
        failover = pair["failover"]
        print(f"\nfailover {failover['id']}: {failover['step']}: {failover['outcome_reason']}\n")
        if failover["step"] != "done":
            return 1
        print("where the time went:")
        print(lab.timeline(failover["id"], injected).render() + "\n")

        recovered = time.time()
        lab.clear("node-a", "vc_down")
        print(f"{_clock(recovered)}  node-a's validator client is back; the alert resolves:")

        def resolved() -> bool:
            show_events()
            return not any(n["firing"] for n in lab.pair()["nodes"] if n["name"] == "node-a")

        lab.wait_for("the alert on node-a to resolve", resolved, timeout=60)
        print()
        a, b = lab.sim("node-a"), lab.sim("node-b")
        print("responder status:")
        print(format_status([lab.pair()]) + "\n")
        clash = overlaps(a["signing_intervals"], b["signing_intervals"])
        print(
            f"node-a signing now: {a['signing']} (fenced: running again, but it stays off until an operator un-fences it)\n"
            f"node-b signing now: {b['signing']}\n"
            f"signing intervals overlapping: {len(clash)}"
        )
        if clash or a["signing"] or not b["signing"]:
            return 1
    print("\nall processes stopped; demo complete")
    return 0


def main() -> None:
    try:
        sys.exit(run())
    except LabError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
