"""`make demo`'s program runs the whole loop, exits 0 and leaves no process behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def _lab_processes() -> list[str]:
    out = subprocess.run(
        ["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True
    ).stdout
    return [line for line in out.splitlines() if "responder-lab-" in line]


def test_demo_runs_the_loop_and_cleans_up() -> None:
    """The demo moves the keys with their history, narrates each stage, prints status, exits 0, stops everything."""
    before = _lab_processes()
    proc = subprocess.run(
        [sys.executable, "-m", "responder.demo"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for needle in (
        "drill mainnet-a: a real failover from node-a to node-b would succeed",
        "1. fence node-a: DELETE http",
        "nothing was changed on any node",
        "FAULT: validator client on node-a",
        "failover_planned",
        "failover:fenced",
        "failover mainnet-a-1: done",
        "detection by Prometheus",
        "fault injection -> standby active",
        "mainnet-a  armed  node-b  consistent",
        "mainnet-a  node-a  fenced    not signing",
        "mainnet-a  node-b  active    signing",
        "who signs (observed): node-b reports signing",
        "ValidatorClientDown resolved on node-a",
        "signing intervals overlapping: 0",
        "2 deleted; history for 2 keys verified",
        "node-b  key 0xa1a1a1a1…  loaded=True",
        "all processes stopped",
    ):
        assert needle in out, f"{needle!r} missing from:\n{out}"
    assert _lab_processes() == before


@pytest.mark.parametrize("chain", ["solana", "cosmos"])
def test_demo_runs_for_the_agent_chains(chain: str) -> None:
    """`make demo CHAIN=...` fails a Solana or CometBFT pair over through the agents, prints
    the same timeline, shows the hand-off and a clean handover, and stops everything."""
    before = _lab_processes()
    proc = subprocess.run(
        [sys.executable, "-m", "responder.demo", "--chain", chain],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    kind, unit = {"solana": ("solana-tower", "slot"), "cosmos": ("cometbft-sign-state", "height")}[
        chain
    ]
    for needle in (
        "a real failover from node-a to node-b would succeed",
        "failover mainnet-a-1: done",
        f"hand-off from node-a's fence to node-b's activation: {kind}",
        "detection by Prometheus",
        "fault injection -> standby active",
        f"{unit}s signed by both: 0",
        "mainnet-a  node-b  active    signing",
        "all processes stopped",
    ):
        assert needle in proc.stdout, f"{needle!r} missing from:\n{proc.stdout}"
    assert _lab_processes() == before


def test_demo_help_does_not_run_the_demo() -> None:
    """`python -m responder.demo --help` prints usage and starts nothing."""
    proc = subprocess.run(
        [sys.executable, "-m", "responder.demo", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0 and "--chain" in proc.stdout
    assert "started" not in proc.stdout
