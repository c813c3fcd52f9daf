"""The whole loop for Solana and CometBFT: two simulated nodes per chain, a responder-agent next
to each, real Prometheus with the shipped rules, real Alertmanager, the responder under gunicorn.
A sustained fault fails over; the standby votes or signs only after the primary's last vote or
signature, with the handed-over tower or sign state, and the two records never overlap.
"""

from __future__ import annotations

import pytest

from responder.lab import DEMO_FAULT, Lab, LabSettings

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("chain", ["solana", "cosmos"])
def test_sustained_fault_fails_over_with_the_hand_off_and_no_overlap(chain: str) -> None:
    """The shipped trigger fires, the agent fences the primary and hands its state over, the
    standby signs strictly after the primary's last signature; no slot or height signed twice."""
    settings = LabSettings(chain=chain, rule_for="3s", hold="3s", block_seconds=0.4)
    with Lab(settings) as lab:
        lab.wait_until_watching()
        lab.wait_for(
            "the primary to sign",
            lambda: (lab.handover().primary_last or 0) > 0,
            timeout=30,
        )
        lab.inject("node-a", DEMO_FAULT[chain])

        def finished() -> bool:
            failover = lab.pair()["failover"]
            return failover is not None and failover["step"] in ("done", "failed", "aborted")

        lab.wait_for("the failover to finish", finished, timeout=90)
        pair = lab.pair()
        assert pair["failover"]["step"] == "done", pair["failover"]["outcome_reason"]
        assert {n["name"]: n["role"] for n in pair["nodes"]} == {
            "node-a": "fenced",
            "node-b": "active",
        }
        failover = lab.api(f"/api/v1/failovers/{pair['failover']['id']}")
        handoff = failover["data"]["handoff"]
        assert handoff["from"] == "node-a"
        kind = {"solana": "solana-tower", "cosmos": "cometbft-sign-state"}[chain]
        assert handoff["agent"]["kind"] == kind and handoff["agent"]["sha256"]
        lab.wait_for(
            "the standby to sign a few times",
            lambda: (lab.handover().standby_last or 0) >= (lab.handover().standby_first or 0) + 3,
            timeout=30,
        )
        handover = lab.handover()
        assert handover.clean, handover.render()
        assert lab.sim("node-a")["signing"] is False
