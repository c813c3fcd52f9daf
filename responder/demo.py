"""`make demo`: the whole loop once, on loopback, narrated.

Starts two simulated Ethereum validator nodes (Keymanager API, two validator keys), real
Prometheus and Alertmanager with the shipped rules and routing, and the responder under
gunicorn (SQLite state) with the `ethereum-keymanager` driver. Then it stops the primary's
validator client, prints what happens as it happens, the per-stage timing, where the keys and
their slashing-protection history went, the final `responder status`, and stops everything it
started. Exit status 0 means the standby took over the keys after the primary was fenced, with
the primary's history, and the two never signed at the same time.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import Any

from .cli import format_drill, format_status
from .lab import DEMO_FAULT, PAIR, Lab, LabError, LabSettings
from .sim import overlaps

SETTINGS = LabSettings(
    rule_for="5s",
    hold="5s",
    scrape_interval="1s",
    group_wait="1s",
    group_interval="2s",
    ethereum=True,
    slot_seconds=0.5,
    slots_per_epoch=4,
)


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S.%f")[:-3]


def _keys(lab: Lab) -> str:
    """Where each validator key is loaded, and how far each node's history reaches."""
    lines = []
    for node in ("node-a", "node-b"):
        keys = lab.sim(node)["keys"]
        for pubkey, key in sorted(keys.items()):
            lines.append(
                f"  {node}  key {pubkey[:10]}…  loaded={key['loaded']!s:<5}  "
                f"last attested target epoch={key['max_target_epoch']}"
            )
    return "validator keys:\n" + "\n".join(lines)


def run() -> int:
    print(
        "responder demo: two simulated Ethereum validator nodes (Keymanager API), "
        "Prometheus, Alertmanager, responder"
    )
    print(
        f"timers: scrape 1s, rule for: {SETTINGS.rule_for}, group_wait {SETTINGS.group_wait}, "
        f"responder hold {SETTINGS.hold} (production: see alerting/README.md)\n"
    )
    with Lab(SETTINGS) as lab:
        for proc in lab.procs:
            print(f"  started {proc.name:<13} {lab.url(proc.name)}")
        print("\nwaiting for Prometheus to scrape every target ...")
        lab.wait_until_watching()
        lab.wait_for(
            "the primary to sign a few epochs",
            lambda: all(k["attestations"] >= 2 for k in lab.sim("node-a")["keys"].values()),
            timeout=30,
        )
        print(format_status([lab.pair()]) + "\n")
        print(_keys(lab) + "\n")
        print("before any fault: responder drill mainnet-a (what if node-a failed now?)")
        print(format_drill(lab.post(f"/api/v1/pairs/{PAIR}/drill")) + "\n")

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
                if event["data"].get("detail"):  # what the node answered, e.g. the DELETE
                    print(f"{'':24}{event['data']['detail']}")

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
        lab.wait_for(
            "the standby to sign past the primary's history",
            lambda: all(
                (lab.sim("node-b")["keys"][k]["max_target_epoch"] or -1)
                > (lab.sim("node-a")["keys"][k]["max_target_epoch"] or -1)
                for k in lab.sim("node-a")["keys"]
            ),
            timeout=60,
        )
        print(_keys(lab) + "\n")
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


AGENT_CHAINS = {
    "solana": ("Solana (Agave) validator nodes, hot-swapped between the staked and an unstaked "
               "identity", "the primary falls behind the cluster (stalled)", "tower"),
    "cosmos": ("CometBFT validator nodes, each signer stopped and started by the agent",
               "the primary's node crashes", "sign state"),
}  # fmt: skip


def run_agent_chain(chain: str) -> int:
    """The same loop for Solana or CometBFT: the responder talks to a responder-agent on each
    host, which carries out the chain's own procedure and hands the tower or sign state over."""
    what, fault_text, state = AGENT_CHAINS[chain]
    settings = LabSettings(
        chain=chain,
        rule_for=SETTINGS.rule_for,
        hold=SETTINGS.hold,
        scrape_interval=SETTINGS.scrape_interval,
        group_wait=SETTINGS.group_wait,
        group_interval=SETTINGS.group_interval,
        block_seconds=0.4,
    )
    print(
        f"responder demo ({chain}): two simulated {what}, a responder-agent on each, "
        "Prometheus, Alertmanager, responder"
    )
    print(
        f"timers: scrape 1s, rule for: {settings.rule_for}, group_wait {settings.group_wait}, "
        f"responder hold {settings.hold} (production: see docs/{chain}.md)\n"
    )
    with Lab(settings) as lab:
        for proc in lab.procs:
            print(f"  started {proc.name:<13} {lab.url(proc.name)}")
        print("\nwaiting for Prometheus to scrape every target ...")
        lab.wait_until_watching()
        lab.wait_for(
            "the primary to sign", lambda: (lab.handover().primary_last or 0) > 3, timeout=30
        )
        print(format_status([lab.pair()]) + "\n")
        print(f"before any fault: responder drill {PAIR} (what if node-a failed now?)")
        print(format_drill(lab.post(f"/api/v1/pairs/{PAIR}/drill")) + "\n")
        injected = lab.inject("node-a", DEMO_FAULT[chain])
        print(f"{_clock(injected)}  FAULT: {fault_text}\n")
        failover = _follow(lab, injected)
        if failover["step"] != "done":
            return 1
        data = lab.api(f"/api/v1/failovers/{failover['id']}")["data"]
        agent = (data.get("handoff") or {}).get("agent") or {}
        print(f"hand-off from node-a's fence to node-b's activation: {agent.get('kind')}, sha256 "
              f"{str(agent.get('sha256'))[:16]}…\n")  # fmt: skip
        print("where the time went:")
        print(lab.timeline(failover["id"], injected).render() + "\n")
        lab.wait_for(
            "the standby to sign a few times",
            lambda: (lab.handover().standby_last or 0) >= (lab.handover().standby_first or 0) + 3,
            timeout=30,
        )
        handover = lab.handover()
        print(f"with the handed-over {state}: {handover.render()}\n")
        print("responder status:")
        print(format_status([lab.pair()]) + "\n")
        if not handover.clean:
            return 1
    print("\nall processes stopped; demo complete")
    return 0


def _follow(lab: Lab, injected: float) -> dict[str, Any]:
    """Print the responder's events as they come until the failover ends; return it."""
    seen: set[int] = set()

    def show() -> None:
        for event in reversed(lab.events()):
            if event["id"] in seen or event["ts"] < injected:
                seen.add(event["id"])
                continue
            seen.add(event["id"])
            print(
                f"{_clock(event['ts'])}  +{event['ts'] - injected:5.2f}s  "
                f"{event['kind']}: {event['reason']}"
            )

    def done() -> bool:
        show()
        failover = lab.pair()["failover"]
        return failover is not None and failover["step"] in ("done", "failed", "aborted")

    lab.wait_for("the failover to finish", done, timeout=120)
    time.sleep(0.3)
    show()
    failover: dict[str, Any] = lab.pair()["failover"]
    print(f"\nfailover {failover['id']}: {failover['step']}: {failover['outcome_reason']}\n")
    return failover


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m responder.demo",
        description="The whole loop once, on loopback: simulated nodes, real Prometheus and "
        "Alertmanager, the responder; a fault on the primary and the failover, narrated.",
    )
    parser.add_argument(
        "--chain",
        choices=("ethereum", "solana", "cosmos"),
        default="ethereum",
        help="ethereum (Keymanager API, the default), solana or cosmos (through responder-agent)",
    )
    args = parser.parse_args(argv)
    try:
        sys.exit(run() if args.chain == "ethereum" else run_agent_chain(args.chain))
    except LabError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
