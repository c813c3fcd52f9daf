"""The failover benchmarks measure what they claim, in their small variants.

The goals are not asserted (the machine is shared and noisy); what is: every figure is a
real positive measurement, every failover fenced its primary before its standby was asked
to activate, and the fake nodes answer as the http driver's contract says.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests

from bench import e2e, failover
from bench.fakenodes import FakeNodes
from tests.tokens import NODE_TOKEN

pytestmark = pytest.mark.e2e


def test_fake_nodes_answer_as_the_contract_says_and_record_each_call(tmp_path: Path) -> None:
    """Status, fence and activate change and report signing as tests/fakenode.py does; a
    wrong token is refused; each call is recorded with its arrival before its answer."""
    with FakeNodes(tmp_path, NODE_TOKEN) as fakes:
        auth = {"Authorization": f"Bearer {NODE_TOKEN}"}
        a, b = f"{fakes.url}/p1-node-a", f"{fakes.url}/p1-node-b"
        assert requests.get(a + "/status", headers=auth, timeout=5).json() == {
            "signing": True,
            "healthy": True,
        }
        assert requests.get(b + "/status", headers=auth, timeout=5).json()["signing"] is False
        bad = {"Authorization": "Bearer wrong"}
        assert requests.post(a + "/fence", headers=bad, timeout=5).status_code == 401
        assert requests.post(a + "/fence", headers=auth, timeout=5).json() == {"signing": False}
        assert requests.get(a + "/status", headers=auth, timeout=5).json()["signing"] is False
        assert requests.post(b + "/activate", headers=auth, timeout=5).json() == {"signing": True}
        calls = fakes.calls()
        assert [c["action"] for c in calls["p1-node-a"]] == ["status", "fence", "fence", "status"]
        assert [c["status"] for c in calls["p1-node-a"]] == [200, 401, 200, 200]
        for call in calls["p1-node-a"] + calls["p1-node-b"]:
            assert call["arrived_mono"] <= call["answered_mono"]
        assert fakes.counts()["fence"] == 1 and fakes.counts()["activate"] == 1


def test_failover_bench_measures_every_row_and_each_fence_precedes_its_activation() -> None:
    """The quick variant fails over 5 pairs one at a time and 20 in one delivery; every
    figure is positive and each primary answered its fence before its standby was asked."""
    single, many = failover.measure(quick=True)
    for run in (single, many):
        assert len(run.complete) == run.pairs, [s for s in run.samples if not s.complete]
        for sample in run.complete:
            assert sample.fences == 1 and sample.activations == 1, sample
            assert sample.fence_answered is not None and sample.activate_arrived is not None
            assert sample.fence_answered < sample.activate_arrived, sample
            assert sample.to_fence > 0 and sample.to_activate > 0, sample
            assert sample.deadline_in_delivery, sample  # the clock conversion holds
    rows = [*failover.fence_rows(single), failover.storm_row(many)]
    assert len(rows) == 3
    for row in rows:
        assert row.holds is not None and row.numbers, row
        assert all(v > 0 for v in row.numbers.values()), row


@pytest.mark.skipif(
    not (shutil.which("prometheus") and shutil.which("prometheus-alertmanager")),
    reason="needs Prometheus and Alertmanager (make test installs them)",
)
def test_e2e_bench_breaks_one_failover_down_by_stage() -> None:
    """One lab run: a failover that ends done, stages that are positive and add up."""
    runs = e2e.measure(1)
    assert [r.outcome for r in runs] == ["done"]
    timeline = runs[0].timeline
    stages = dict(timeline.stages())
    assert all(secs > 0 for secs in stages.values()), stages
    assert timeline.fenced <= timeline.activation_started
    assert sum(stages.values()) <= timeline.total + 0.001
    [row] = e2e.to_rows(runs)
    assert row.holds is None and row.numbers["total_median_s"] == pytest.approx(timeline.total)
