"""alerting/grafana/responder.json: importable as is, and every panel's query finds data in the lab.

The lab run is one failover (node-a's validator client down), one drill and one readiness round,
scraped by a real Prometheus; then each panel's PromQL is asked of that Prometheus as Grafana
would ask it, with the dashboard's variables substituted.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from responder.lab import PAIR, Lab, LabSettings

DASHBOARD = Path(__file__).resolve().parent.parent / "alerting" / "grafana" / "responder.json"
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
# what Grafana substitutes: the pair variable's "All" is its allValue; one scrape interval of
# the lab is 1 s, so any rate window of a few dozen samples stands in for $__rate_interval
VARIABLES = {"$pair": ".*", "$__rate_interval": "1m"}


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def test_dashboard_is_importable_with_a_datasource_variable() -> None:
    """The JSON asks for a Prometheus data source on import and every panel and query uses the variable."""
    dashboard = load()
    assert dashboard["id"] is None and dashboard["uid"] and dashboard["title"]
    (ds_input,) = dashboard["__inputs"]
    assert ds_input["type"] == "datasource" and ds_input["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == "${" + ds_input["name"] + "}"
    assert variables["pair"]["datasource"] == DATASOURCE_REF
    assert variables["pair"]["includeAll"] and variables["pair"]["allValue"] == ".*"

    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    required = {p["id"] for p in dashboard["__requires"] if p["type"] == "panel"}
    for panel in panels:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid) and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in required, panel["title"]
        assert panel["datasource"] == DATASOURCE_REF, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE_REF, panel["title"]
            assert target["expr"].strip(), panel["title"]
    # no two panels overlap on the 24-column grid
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        g = panel["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, panel["title"]
        cells |= mine


def test_dashboard_covers_the_responders_metrics() -> None:
    """Phase, roles, observed signing, failovers, steps, fences, notifications, webhook latency, readiness and drills each have a panel."""
    exprs = " ".join(t["expr"] for p in query_panels(load()) for t in p["targets"])
    for metric in (
        "responder_pair_state",
        "responder_node_role",
        "responder_node_observed_signing",
        "responder_failovers_total",
        "responder_failover_step_seconds_bucket",
        "responder_fence_attempts_total",
        "responder_notifications_total",
        "responder_webhook_duration_seconds_bucket",
        "responder_failover_ready",
        "responder_failover_ready_check",
        "responder_drill_ok",
    ):
        assert re.search(rf"\b{metric}\b", exprs), metric


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab(LabSettings(readiness_interval="2s")) as lab:
        lab.wait_until_watching()
        yield lab


def prometheus_query(lab: Lab, expr: str) -> list[dict[str, Any]]:
    resp = requests.get(lab.url("prometheus") + "/api/v1/query", params={"query": expr}, timeout=5)
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "success", (expr, body)
    assert body["data"]["resultType"] == "vector", (expr, body["data"]["resultType"])
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def readiness_at(lab: Lab) -> str:
    at: str = (lab.pair().get("readiness") or {}).get("at") or ""
    return at


def has_data(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


@pytest.mark.e2e
def test_every_panel_query_returns_data_after_a_failover(lab: Lab) -> None:
    """After a failover, a drill and a readiness round, each query of each panel returns a finite sample."""
    lab.inject("node-a", "vc_down")
    lab.wait_for(
        "the failover to finish",
        lambda: (lab.pair()["failover"] or {}).get("step") in ("done", "failed", "aborted"),
        timeout=90,
    )
    assert lab.pair()["failover"]["step"] == "done", lab.pair()
    lab.post(f"/api/v1/pairs/{PAIR}/drill")
    before = readiness_at(lab)  # ISO 8601 timestamps of one format: they sort as text
    lab.wait_for("a readiness round after the drill", lambda: readiness_at(lab) > before, 30)

    queries = [
        (panel["title"], target["refId"], substitute(target["expr"]))
        for panel in query_panels(load())
        for target in panel["targets"]
    ]
    # Prometheus scrapes every second: wait until the scrape after the readiness round is in
    missing: list[tuple[str, str, str]] = []

    def all_have_data() -> bool:
        missing[:] = [q for q in queries if not has_data(prometheus_query(lab, q[2]))]
        return not missing

    try:
        lab.wait_for("every panel's query to return data", all_have_data, timeout=20)
    except Exception:
        pytest.fail(f"panels without data: {missing}", pytrace=False)
