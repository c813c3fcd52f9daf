"""The whole loop: simulated nodes, real Prometheus and Alertmanager, the responder under gunicorn.

Rules are the shipped ones with `for:` shortened (responder.lab), so each scenario takes
seconds. Each test starts and stops its own processes on free loopback ports.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from responder.lab import Lab, LabSettings
from responder.sim import overlaps

pytestmark = pytest.mark.e2e


def start_lab(**settings) -> Iterator[Lab]:
    with Lab(LabSettings(**settings)) as lab:
        lab.wait_until_watching()
        yield lab


@pytest.fixture
def lab() -> Iterator[Lab]:
    yield from start_lab()


@pytest.fixture
def dry_lab() -> Iterator[Lab]:
    yield from start_lab(dry_run=True)


@pytest.fixture
def slow_hold_lab() -> Iterator[Lab]:
    yield from start_lab(hold="8s")


def finished(lab: Lab) -> bool:
    failover = lab.pair()["failover"]
    return failover is not None and failover["step"] in ("done", "failed", "aborted")


def test_sustained_primary_fault_fences_then_activates(lab: Lab, capsys) -> None:
    """A sustained fault on the primary: fenced first, standby activated, signing never overlaps."""
    injected = lab.inject("node-a", "vc_down")
    lab.wait_for("the failover to finish", lambda: finished(lab), timeout=90)
    pair = lab.pair()
    assert pair["failover"]["step"] == "done", pair
    assert pair["active_node"] == "node-b"
    assert {n["name"]: n["role"] for n in pair["nodes"]} == {"node-a": "fenced", "node-b": "active"}

    lab.clear("node-a", "vc_down")  # the primary's validator client comes back ...
    a, b = lab.sim("node-a"), lab.sim("node-b")
    assert a["signing"] is False  # ... but stays fenced
    assert b["signing"] is True
    assert a["calls"]["fence"] == 1 and b["calls"]["activate"] == 1
    assert overlaps(a["signing_intervals"], b["signing_intervals"]) == []
    fence_done = lab.timeline(pair["failover"]["id"], injected)
    assert fence_done.fenced <= fence_done.activation_started
    with capsys.disabled():
        print(
            f"\nfault injection to activation (rule for: 3s, hold 3s, group_wait 1s):\n{fence_done.render()}"
        )


def test_blip_shorter_than_for_plus_hold_does_not_fail_over(slow_hold_lab: Lab) -> None:
    """A fault that outlasts `for:` but clears within the hold reaches the responder and is debounced."""
    lab = slow_hold_lab
    lab.inject("node-a", "vc_down")
    lab.wait_for(
        "the trigger to reach the responder",
        lambda: any("ValidatorClientDown firing on node-a" in e["reason"] for e in lab.events()),
        timeout=30,
    )
    lab.clear("node-a", "vc_down")
    lab.wait_for(
        "the resolution to debounce it",
        lambda: any("debounced" in e["reason"] for e in lab.events()),
        timeout=30,
    )
    pair = lab.pair()
    assert pair["phase"] == "armed" and pair["active_node"] == "node-a"
    assert lab.sim("node-a")["calls"]["fence"] == 0
    assert lab.sim("node-b")["calls"]["activate"] == 0
    assert lab.sim("node-a")["signing"] is True


def test_fault_on_standby_leaves_primary_alone(lab: Lab) -> None:
    """A fault on the standby marks it unhealthy and never touches the healthy primary."""
    lab.inject("node-b", "vc_down")
    lab.wait_for(
        "the standby's fault to reach the responder",
        lambda: any(n["firing"] for n in lab.pair()["nodes"] if n["name"] == "node-b"),
        timeout=30,
    )
    time.sleep(5)  # a further hold (3s) and more: give a wrong decision time to show
    pair = lab.pair()
    assert pair["active_node"] == "node-a" and pair["phase"] == "armed"
    assert pair["failover"] is None
    a = lab.sim("node-a")
    assert a["signing"] is True and a["calls"]["fence"] == 0


def test_dry_run_changes_no_node_and_shows_the_plan(dry_lab: Lab) -> None:
    """In dry-run the same fault walks the path, the events show fence and activate, no node changes."""
    lab = dry_lab
    lab.inject("node-a", "vc_down")
    lab.wait_for("the dry-run failover to finish", lambda: finished(lab), timeout=90)
    pair = lab.pair()
    assert pair["failover"]["dry_run"] and pair["failover"]["step"] == "done"
    assert pair["active_node"] == "node-a"
    would = [
        (e["data"]["action"], e["node"])
        for e in reversed(lab.events())
        if e["kind"] == "would_call"
    ]
    assert would == [("fence", "node-a"), ("activate", "node-b")]
    a, b = lab.sim("node-a"), lab.sim("node-b")
    assert a["calls"]["fence"] == 0 and b["calls"]["activate"] == 0
    assert a["enabled"] is True and b["enabled"] is False


def test_lying_fence_is_caught_by_the_status_read_and_nothing_is_activated(lab: Lab) -> None:
    """A stalled beacon node fails over, but the primary's fence claims success while it keeps
    signing: the verification read catches it, the standby is never activated, no overlap."""
    lab.inject("node-a", "fence_lie")
    lab.inject("node-a", "stall_head")
    lab.wait_for("the failover to finish", lambda: finished(lab), timeout=90)
    pair = lab.pair()
    assert pair["failover"]["step"] == "failed", pair
    assert (
        "the fence claimed success but node-a then answered: signing"
        in (pair["failover"]["outcome_reason"])
    )
    assert pair["phase"] == "blocked" and pair["active_node"] == "node-a"
    a, b = lab.sim("node-a"), lab.sim("node-b")
    assert a["signing"] is True and a["calls"]["fence"] == 1
    assert b["signing"] is False and b["calls"]["activate"] == 0
    assert overlaps(a["signing_intervals"], b["signing_intervals"]) == []
