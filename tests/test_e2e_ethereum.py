"""The whole loop with the Ethereum driver: simulated Keymanager APIs, real Prometheus and
Alertmanager, the responder under gunicorn. Keys and their slashing-protection history move
from the primary to the standby; the two never sign at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from responder.lab import PUBKEYS, Lab, LabSettings
from responder.sim import overlaps

pytestmark = pytest.mark.e2e


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab(LabSettings(ethereum=True, slot_seconds=0.5, failover_lease="3s")) as lab:
        lab.wait_until_watching()
        lab.wait_for(
            "the primary to sign a few epochs",
            lambda: all((k["attestations"] or 0) >= 3 for k in lab.sim("node-a")["keys"].values()),
            timeout=30,
        )
        yield lab


def finished(lab: Lab) -> bool:
    failover = lab.pair()["failover"]
    return failover is not None and failover["step"] in ("done", "failed", "aborted")


def _keys_moved_with_history(lab: Lab, primary_marks: dict[str, int]) -> None:
    a, b = lab.sim("node-a"), lab.sim("node-b")
    assert not any(k["loaded"] for k in a["keys"].values())
    assert all(b["keys"][k]["loaded"] for k in PUBKEYS)
    assert overlaps(a["signing_intervals"], b["signing_intervals"]) == []
    lab.wait_for(
        "the standby to sign past the primary's history",
        lambda: all(
            (lab.sim("node-b")["keys"][k]["max_target_epoch"] or -1) > primary_marks[k]
            for k in PUBKEYS
        ),
        timeout=30,
    )


def test_keys_and_history_move_to_the_standby(lab: Lab) -> None:
    """A sustained fault: DELETE on the primary, POST with its history on the standby, no overlap."""
    lab.inject("node-a", "vc_down")
    lab.wait_for("the failover to finish", lambda: finished(lab), timeout=90)
    pair = lab.pair()
    assert pair["failover"]["step"] == "done", pair
    failover = lab.api(f"/api/v1/failovers/{pair['failover']['id']}")
    assert "slashing_protection" in failover["data"]["handoff"]
    a = lab.sim("node-a")
    marks = {k: a["keys"][k]["max_target_epoch"] for k in PUBKEYS}
    assert a["calls"]["km_delete"] == 1 and lab.sim("node-b")["calls"]["km_post"] == 1
    lab.clear("node-a", "vc_down")
    _keys_moved_with_history(lab, marks)


def test_sigkill_during_delete_resumes_with_a_repeated_delete(lab: Lab) -> None:
    """Killed while the primary's DELETE is in flight, the restarted responder repeats it
    (answered not_active with the history) and hands that history over."""
    lab.inject("node-a", "km_slow")
    lab.inject("node-a", "vc_down")
    lab.wait_for(
        "the DELETE to reach the primary",
        lambda: lab.sim("node-a")["calls"]["km_delete"] >= 1,
        timeout=60,
    )
    lab.proc("responder").stop_hard()
    lab.clear("node-a", "km_slow")  # the held DELETE now completes on the node; nobody hears it
    lab.wait_for(
        "the keys to leave the primary",
        lambda: not any(k["loaded"] for k in lab.sim("node-a")["keys"].values()),
    )
    assert lab.sim("node-b")["calls"]["km_post"] == 0
    lab.restart("responder")
    lab.wait_for("the resumed failover to finish", lambda: finished(lab), timeout=60)
    assert lab.pair()["failover"]["step"] == "done", lab.pair()
    a = lab.sim("node-a")
    assert a["calls"]["km_delete"] == 2
    assert lab.sim("node-b")["calls"]["km_post"] == 1
    lab.clear("node-a", "vc_down")
    _keys_moved_with_history(lab, {k: a["keys"][k]["max_target_epoch"] for k in PUBKEYS})


def test_sigkill_during_import_does_not_import_twice(lab: Lab) -> None:
    """Killed while the standby's POST is in flight, the restarted responder sees the keys loaded and stops."""
    lab.inject("node-b", "km_slow_writes")
    lab.inject("node-a", "vc_down")
    lab.wait_for(
        "the POST to reach the standby",
        lambda: lab.sim("node-b")["calls"]["km_post"] >= 1,
        timeout=60,
    )
    lab.proc("responder").stop_hard()
    lab.clear("node-b", "km_slow_writes")
    lab.wait_for(
        "the keys to land on the standby",
        lambda: all(k["loaded"] for k in lab.sim("node-b")["keys"].values()),
    )
    lab.restart("responder")
    lab.wait_for("the resumed failover to finish", lambda: finished(lab), timeout=60)
    pair = lab.pair()
    assert (
        pair["failover"]["step"] == "done" and "not repeated" in pair["failover"]["outcome_reason"]
    )
    assert lab.sim("node-b")["calls"]["km_post"] == 1
    assert lab.sim("node-a")["calls"]["km_delete"] == 1
