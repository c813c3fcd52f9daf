"""Safety decisions rest on what the nodes say, not on the record: one regression test per hole.

Nodes are stateful fake agents (tests.fakenode) that record every signing interval, so each
scenario also proves that two nodes never signed at once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from responder.alerts import Alert, Notification
from responder.cli import main as cli_main
from responder.clock import ManualClock, SystemClock
from responder.config import load_config
from responder.runner import Runner
from responder.sim import overlaps
from responder.store import LeaseLost
from tests.conftest import NODE_TOKEN, Harness, alert, base_config, notification, write_config
from tests.fakenode import FakeNode
from tests.serverproc import ServerProcess, free_port

PAIR = "mainnet-a"


def fake_pair(prefix: str = "") -> Iterator[dict[str, FakeNode]]:
    """A signing node-a and a silent node-b, stopped when the test ends."""
    made = {
        "node-a": FakeNode(f"{prefix}node-a", signing=True, token=NODE_TOKEN).start(),
        "node-b": FakeNode(f"{prefix}node-b", signing=False, token=NODE_TOKEN).start(),
    }
    yield made
    for node in made.values():
        node.stop()


@pytest.fixture
def fakes() -> Iterator[dict[str, FakeNode]]:
    yield from fake_pair()


def node_entry(name: str, url: str, **driver: Any) -> dict[str, Any]:
    return {
        "name": name,
        "match": {"node": name},
        "driver": {
            "type": "http",
            "url": url,
            "token_file": "./secrets/node-token",
            "timeout": "2s",
            **driver,
        },
    }


def build(
    tmp_path: Path, clock: Any, nodes: list[dict[str, Any]], owner: str = "local", **over: Any
) -> Harness:
    data = base_config(lambda n: "", nodes=nodes, **over)
    return Harness(load_config(write_config(tmp_path, data)), clock, owner=owner)


def default_nodes(fakes: dict[str, FakeNode]) -> list[dict[str, Any]]:
    return [node_entry(n, f.url) for n, f in fakes.items()]


def no_overlap(fakes: dict[str, FakeNode]) -> bool:
    nodes = list(fakes.values())
    return all(
        overlaps(a.intervals, b.intervals) == []
        for i, a in enumerate(nodes)
        for b in nodes[i + 1 :]
    )


def fail_over(h: Harness, clock: ManualClock) -> list[Any]:
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    return h.responder.step()


# ---- 1. a renamed active node ------------------------------------------------------------------


def test_rename_of_the_active_node_holds_the_pair_and_never_makes_two_signers(
    tmp_path: Path, clock: ManualClock, fakes: dict[str, FakeNode], capsys: Any
) -> None:
    """Renaming the signing node holds the pair; a manual failover then refuses to activate the
    standby while the renamed node still signs; check-config names the hold; adopt resolves it."""
    first = build(tmp_path, clock, default_nodes(fakes))
    first.responder.observe_pair(PAIR)
    first.store.close()

    renamed = [
        node_entry("node-a2", fakes["node-a"].url),
        node_entry("node-b", fakes["node-b"].url),
    ]
    data = base_config(lambda n: "", nodes=renamed)
    path = write_config(tmp_path, data)
    assert cli_main(["check-config", str(path)]) == 3
    out = capsys.readouterr().out
    assert "would be held" in out and "node-a, believed active" in out

    h = Harness(load_config(path), clock)
    pair = h.pair()
    assert pair["phase"] == "held"
    assert "node-a, believed active, is no longer in the config" in pair["held_reason"]

    h.responder.observe_pair(PAIR)
    assert "node-a2 reports signing" in h.pair()["who_signs"]

    outcome = h.op("POST", f"/api/v1/pairs/{PAIR}/failover", json={"target": "node-b"})
    assert outcome.status_code == 200, outcome.get_json()
    [failover] = h.responder.run_failovers()
    assert failover.step.value == "failed"
    assert "node-a2 signing" in (failover.outcome_reason or "")
    assert fakes["node-b"].calls["activate"] == 0
    assert fakes["node-b"].signing is False and fakes["node-a"].signing is True

    h.op("POST", f"/api/v1/pairs/{PAIR}/ack")
    refused = h.op("POST", f"/api/v1/pairs/{PAIR}/adopt", json={"node": "node-b"})
    assert refused.status_code == 409 and "does not report signing" in refused.get_json()["error"]
    adopted = h.op("POST", f"/api/v1/pairs/{PAIR}/adopt", json={"node": "node-a2"})
    assert adopted.status_code == 200, adopted.get_json()
    assert h.pair()["active_node"] == "node-a2"
    assert h.pair()["phase"] == "armed"
    assert no_overlap(fakes)


# ---- 2. a fence that lies ----------------------------------------------------------------------


@pytest.mark.parametrize("extra_level", [False, True], ids=["driver-only", "with-command-level"])
def test_lying_fence_is_a_failed_level_and_the_standby_stays_untouched(
    tmp_path: Path, clock: ManualClock, fakes: dict[str, FakeNode], extra_level: bool
) -> None:
    """A fence answering {"signing": false} while the node's status still says signing is a
    failed level (as is an out-of-band level after which it still answers signing): no activation."""
    fakes["node-a"].fence_lies = True
    nodes = default_nodes(fakes)
    if extra_level:
        nodes[0]["fence_levels"] = [{"type": "command", "argv": ["true"]}]
    h = build(tmp_path, clock, nodes)
    [failover] = fail_over(h, clock)
    assert failover.step.value == "failed"
    assert "the fence claimed success but node-a then answered: signing" in (
        failover.outcome_reason or ""
    )
    assert fakes["node-b"].calls["activate"] == 0
    assert fakes["node-a"].signing is True and fakes["node-b"].signing is False
    journal = h.store.journal(failover.id)
    claims = [j.detail for j in journal if j.detail.get("confirmed") is True]
    checks = [j.detail for j in journal if "verification" in j.detail]
    assert len(claims) == (2 if extra_level else 1)  # the claim is journaled ...
    assert [c["verified"] for c in checks] == [False] * len(claims)  # ... and so is its refutation
    assert no_overlap(fakes)


# ---- 3. an activation that lands after its timeout --------------------------------------------


def test_slow_import_that_lands_after_the_timeout_is_caught_and_reported_truthfully(
    tmp_path: Path, fakes: dict[str, FakeNode]
) -> None:
    """An activation that answers after the driver gave up, then lands, is fenced again by the
    settle loop; the record then says what the nodes say and the signing never overlaps."""
    clock = SystemClock()  # the fake node lands its import on the real clock
    fakes["node-b"].activate_lands_after = 1.3
    nodes = [node_entry(n, f.url, timeout="1s", connect_timeout="0.5s") for n, f in fakes.items()]
    h = build(tmp_path, clock, nodes, policy={"hold": "0s"})
    h.post_alert(notification(alert()))
    [failover] = h.responder.step()

    assert failover.step.value == "failed"
    assert fakes["node-b"].calls["fence"] >= 1  # the import landed and was fenced again
    assert fakes["node-b"].signing is False and fakes["node-a"].signing is False
    assert len(fakes["node-b"].intervals) == 1  # it did sign, briefly, after its timeout
    reason = failover.outcome_reason or ""
    assert "verified not signing" in reason and "no node signs" in reason
    pair = h.pair()
    assert pair["who_signs"] == "no node signs (every node answered not signing)"
    assert {n["name"]: n["may_be_signing"] for n in pair["nodes"]} == {
        "node-a": None,
        "node-b": None,
    }
    assert no_overlap(fakes)


def test_activation_that_never_settles_leaves_the_node_unknown_not_silent(
    tmp_path: Path, clock: ManualClock, fakes: dict[str, FakeNode]
) -> None:
    """When the target keeps answering signing after failed activation and fence-back, the
    failover says it MAY BE SIGNING, and status never calls it silent."""
    h = build(tmp_path, clock, default_nodes(fakes))

    def broken_activation() -> None:
        raise RuntimeError("agent crashed mid-import")  # werkzeug answers 500, keys loaded

    fakes["node-b"].before_reply["activate"] = broken_activation
    fakes["node-b"].fence_lies = True  # and fencing it back changes nothing
    [failover] = fail_over(h, clock)
    assert failover.step.value == "failed"
    assert "node-b MAY BE SIGNING" in (failover.outcome_reason or "")
    pair = h.pair()
    doubt = {n["name"]: n["may_be_signing"] for n in pair["nodes"]}
    assert doubt["node-a"] is None and "could not be verified silent" in doubt["node-b"]
    assert "node-b may be signing" in pair["who_signs"]
    assert "no node signs" not in pair["who_signs"]


def test_doubt_is_lifted_only_after_quiet_answers_span_the_settle_time(
    tmp_path: Path, clock: ManualClock, fakes: dict[str, FakeNode]
) -> None:
    """A node left unknown stays unknown after one quiet probe; quiet answers spanning its
    settle time (connect 2s + timeout 2s) lift the doubt."""
    h = build(tmp_path, clock, default_nodes(fakes))
    fakes["node-b"].before_reply["activate"] = lambda: (_ for _ in ()).throw(RuntimeError("x"))
    fakes["node-b"].fence_lies = True
    fail_over(h, clock)
    fakes["node-b"].fence_lies = False
    fakes["node-b"].signing = False  # repaired by hand
    h.responder.observe_pair(PAIR)
    assert h.pair()["nodes"][1]["may_be_signing"] is not None
    clock.advance(2)
    h.responder.observe_pair(PAIR)
    assert h.pair()["nodes"][1]["may_be_signing"] is not None
    clock.advance(2.5)
    h.responder.observe_pair(PAIR)
    assert h.pair()["nodes"][1]["may_be_signing"] is None


# ---- 4. poison deliveries and state, removed pairs ----------------------------------------------


def two_pairs(fakes_a: dict[str, FakeNode], fakes_b: dict[str, FakeNode]) -> dict[str, Any]:
    data = base_config(lambda n: "", nodes=default_nodes(fakes_a))
    second = dict(data["pairs"][0])
    second["name"] = "mainnet-b"
    second["nodes"] = [
        {**node_entry(f"b-{n}", f.url), "match": {"node": f"b-{n}"}} for n, f in fakes_b.items()
    ]
    data["pairs"].append(second)
    return data


@pytest.fixture
def fakes_b() -> Iterator[dict[str, FakeNode]]:
    yield from fake_pair("b-")


@pytest.mark.parametrize(
    "starts_at",
    [
        "0000-01-01T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-11-25T24:00:00Z",
        "yesterday",
    ],
)
def test_poison_starts_at_is_refused_and_a_healthy_pair_still_fails_over_on_time(
    tmp_path: Path,
    clock: ManualClock,
    fakes: dict[str, FakeNode],
    fakes_b: dict[str, FakeNode],
    starts_at: str,
) -> None:
    """A startsAt that cannot be right is a 400 naming the field with nothing recorded; the same
    value already stored (by an older version) does not stop the other pair's failover."""
    h = Harness(load_config(write_config(tmp_path, two_pairs(fakes, fakes_b))), clock)
    bad = alert(starts_at=starts_at)
    resp = h.post_alert(notification(bad))
    assert resp.status_code == 400
    assert "alerts[0].startsAt" in resp.get_json()["error"]
    assert h.store.pending_notifications() == 0

    # as a database written before the door checked it would hold it
    h.store.record_notification(clock.now(), _notification_obj(bad))
    h.post_alert(notification(alert(node="b-node-a", pair="mainnet-b")))
    h.responder.step()
    clock.advance(20.5)
    finished = {f.pair: f.step.value for f in h.responder.step()}
    assert finished["mainnet-b"] == "done"
    assert h.pair("mainnet-b")["active_node"] == "b-node-b"
    assert h.store.list_faults() == []
    assert no_overlap(fakes_b)


def _notification_obj(raw_alert: dict[str, Any]) -> Notification:
    return Notification(
        receiver="responder",
        status="firing",
        group_key="{}",
        alerts=(
            Alert(
                status="firing",
                labels=raw_alert["labels"],
                starts_at=raw_alert["startsAt"],
                fingerprint=raw_alert["fingerprint"],
            ),
        ),
        truncated_alerts=0,
        external_url="",
    )


def test_unreadable_pair_state_is_retried_then_quarantined_while_the_other_pair_fails_over(
    tmp_path: Path, clock: ManualClock, fakes: dict[str, FakeNode], fakes_b: dict[str, FakeNode]
) -> None:
    """Work for a pair whose stored state cannot be read is recorded against that pair, retried
    with backoff, quarantined after 5 attempts; the other pair fails over on time throughout."""
    h = Harness(load_config(write_config(tmp_path, two_pairs(fakes, fakes_b))), clock)
    conn = sqlite3.connect(h.config.db_path)
    conn.execute("UPDATE pairs SET state = '{\"pair\": 1}' WHERE pair = ?", (PAIR,))
    conn.commit()
    conn.close()

    h.post_alert(notification(alert()))
    h.post_alert(notification(alert(node="b-node-a", pair="mainnet-b")))
    h.responder.step()
    clock.advance(20.5)
    finished = h.responder.step()
    assert [(f.pair, f.step.value) for f in finished] == [("mainnet-b", "done")]
    assert fakes["node-a"].calls["fence"] == 0

    for _ in range(10):
        clock.advance(301)
        h.responder.retry_faults()
    [fault] = h.store.list_faults(PAIR)
    assert fault.quarantined and fault.attempts == 5
    kinds = [e["kind"] for e in h.events()]
    assert kinds.count("error") == 4 and kinds.count("quarantined") == 1
    status = h.pair()
    assert status["phase"] == "unreadable" and status["faults"][0]["quarantined"] is True
    assert "responder_processing_errors_total" in h.client.get("/metrics").text


def test_pair_removed_while_pending_leaves_it_alone_and_other_pairs_keep_working(
    tmp_path: Path, clock: ManualClock, fakes: dict[str, FakeNode], fakes_b: dict[str, FakeNode]
) -> None:
    """Removing a pair with a pending deadline neither acts on it nor stops any other pair."""
    data = two_pairs(fakes, fakes_b)
    h = Harness(load_config(write_config(tmp_path, data)), clock)
    h.post_alert(notification(alert()))
    h.post_alert(notification(alert(node="b-node-a", pair="mainnet-b")))
    h.responder.step()
    assert h.pair()["phase"] == "pending" and h.pair("mainnet-b")["phase"] == "pending"
    h.store.close()

    data["pairs"] = data["pairs"][1:]
    path = write_config(tmp_path, data)
    h2 = Harness(load_config(path), clock)
    clock.advance(21)
    finished = h2.responder.step()
    assert [(f.pair, f.step.value) for f in finished] == [("mainnet-b", "done")]
    assert fakes["node-a"].calls["fence"] == 0 and fakes["node-a"].signing is True
    assert cli_main(["check-config", str(path)]) == 3


def test_node_replaced_during_an_in_flight_failover_ends_it_and_operators_can_act(
    tmp_path: Path, clock: ManualClock, fakes: dict[str, FakeNode]
) -> None:
    """A failover whose target is renamed while it is in flight ends as failed (no 409 loop);
    what really happened is then observed, held, and adopted."""
    h = build(tmp_path, clock, default_nodes(fakes), owner="first")
    release = threading.Event()
    fakes["node-b"].before_reply["activate"] = lambda: release.wait(10)
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    h.responder.tick()
    claimed = h.responder.claim_failover()
    assert claimed is not None
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            h.responder.execute(claimed)
        except LeaseLost as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    while fakes["node-b"].calls["activate"] == 0:
        worker.join(0.01)  # wait until the activation request is in flight
    renamed = [node_entry("node-a", fakes["node-a"].url), node_entry("node-c", fakes["node-b"].url)]
    h2 = build(tmp_path, clock, renamed, owner="second")
    clock.advance(60)  # the first owner's lease runs out
    [ended] = h2.responder.run_failovers()
    assert ended.step.value == "failed"
    assert "node-b is no longer in the config" in (ended.outcome_reason or "")
    release.set()
    worker.join(10)
    assert len(outcome) == 1  # the stale owner could not record anything

    assert h2.op("POST", f"/api/v1/pairs/{PAIR}/ack").status_code == 200
    h2.responder.observe_pair(PAIR)
    pair = h2.pair()
    assert pair["consistency"] == "diverged" and pair["phase"] == "held"
    assert h2.op("POST", f"/api/v1/pairs/{PAIR}/adopt", json={"node": "node-c"}).status_code == 200
    assert h2.pair()["active_node"] == "node-c"
    assert no_overlap(fakes)


# ---- 5. wall-clock steps -----------------------------------------------------------------------


@pytest.mark.parametrize(("hold", "step"), [(120, 3600.0), (2, -3600.0)], ids=["+1h", "-1h"])
def test_wall_clock_step_during_a_hold_neither_skips_nor_stretches_it(
    tmp_path: Path, clock: ManualClock, fakes: dict[str, FakeNode], hold: int, step: float
) -> None:
    """A wall-clock step of an hour either way during a hold changes nothing: the failover
    happens when `hold` seconds have really elapsed."""
    h = build(tmp_path, clock, default_nodes(fakes), policy={"hold": f"{hold}s"})
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(1)
    clock.step_wall(step)
    assert h.responder.step() == []
    clock.advance(hold - 1.5)
    assert h.responder.step() == []
    assert h.pair()["phase"] == "pending"
    clock.advance(1)
    [failover] = h.responder.step()
    assert failover.step.value == "done"
    assert no_overlap(fakes)


# ---- 6. observation ----------------------------------------------------------------------------


def test_serve_against_absent_nodes_reports_them_unreachable_not_healthy(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Nodes that do not exist show as unreachable, node_up 0, and 'who signs' unknown."""
    dead = [node_entry(n, f"http://127.0.0.1:9/{n}") for n in ("node-a", "node-b")]
    h = build(tmp_path, clock, dead)
    assert "not observed yet" in h.pair()["who_signs"]
    h.responder.observe_pair(PAIR)
    pair = h.pair()
    assert [n["observed"]["says"] for n in pair["nodes"]] == ["unreachable", "unreachable"]
    assert pair["consistency"] == "unknown"
    assert pair["who_signs"] == "no node reports signing; unknown for node-a, node-b"
    metrics = h.client.get("/metrics").text
    assert 'responder_node_up{node="node-a",pair="mainnet-a"} 0.0' in metrics
    assert 'responder_pair_consistent{pair="mainnet-a"} 0.0' in metrics
    assert "responder_node_observed_signing{" not in metrics


def test_two_signers_observed_is_split_brain_and_stops_automation(
    tmp_path: Path, clock: ManualClock, fakes: dict[str, FakeNode]
) -> None:
    """Two nodes answering signing is split brain: a critical event and metric at once, and no
    failover on the next fault; adopt refuses while both sign."""
    fakes["node-b"].signing = True
    h = build(tmp_path, clock, default_nodes(fakes))
    h.responder.observe_pair(PAIR)
    pair = h.pair()
    assert pair["consistency"] == "split_brain" and pair["phase"] == "held"
    assert 'responder_pair_split_brain{pair="mainnet-a"} 1.0' in h.client.get("/metrics").text
    [event] = [e for e in h.events() if e["kind"] == "observation:split_brain"]
    assert "split brain: node-a and node-b both report signing" in event["reason"]
    assert fail_over(h, clock) == []
    assert fakes["node-a"].calls["fence"] == 0
    refused = h.op("POST", f"/api/v1/pairs/{PAIR}/adopt", json={"node": "node-a"})
    assert refused.status_code == 409 and "split brain" in refused.get_json()["error"]


def test_out_of_band_change_is_diverged_and_adopt_records_the_observed_signer(
    tmp_path: Path, clock: ManualClock, fakes: dict[str, FakeNode]
) -> None:
    """A standby activated by hand (and the primary stopped) diverges from the record: automation
    is held with the reason until `adopt` records the observed signer."""
    fakes["node-a"].signing = False
    fakes["node-b"].signing = True
    h = build(tmp_path, clock, default_nodes(fakes))
    h.responder.observe_pair(PAIR)
    pair = h.pair()
    assert pair["phase"] == "held"
    assert (
        "diverged: node-b reports signing, but the record says node-a is active"
        in (pair["held_reason"])
    )
    assert fail_over(h, clock) == []
    ok = h.op("POST", f"/api/v1/pairs/{PAIR}/adopt", json={"node": "node-b"})
    assert ok.status_code == 200
    pair = h.pair()
    assert pair["active_node"] == "node-b" and pair["phase"] == "armed"
    assert pair["held_reason"] is None and pair["consistency"] == "consistent"


def test_no_node_signing_is_reported_as_an_outage_without_acting_on_it(
    tmp_path: Path, clock: ManualClock, fakes: dict[str, FakeNode]
) -> None:
    """Every node answering not signing is an outage: reported, and nothing is activated."""
    fakes["node-a"].signing = False
    h = build(tmp_path, clock, default_nodes(fakes))
    h.responder.observe_pair(PAIR)
    pair = h.pair()
    assert pair["consistency"] == "outage" and pair["phase"] == "armed"
    assert "outage: no node signs" in pair["consistency_reason"]
    clock.advance(3600)
    assert h.responder.step() == []
    assert fakes["node-b"].calls["activate"] == 0


def wait_real(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Wait on real concurrency (threads, processes); returns the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def test_a_hanging_node_probe_never_delays_another_pairs_failover(
    tmp_path: Path, fakes: dict[str, FakeNode], fakes_b: dict[str, FakeNode]
) -> None:
    """While every probe of one pair's node hangs, another pair's delivery is processed and its
    failover completes at once: observation runs beside deliveries, deadlines and failovers."""
    data = two_pairs(fakes, fakes_b)
    for pair in data["pairs"]:
        pair["policy"] = {**pair["policy"], "hold": "0s"}
        pair["observe"] = {"interval": "0.2s"}
    release = threading.Event()
    fakes["node-a"].before_reply["status"] = lambda: release.wait(30)
    h = Harness(load_config(write_config(tmp_path, data)), SystemClock())
    runner = Runner(h.responder, poll_interval=0.05, lease=15)
    runner.start()
    try:
        wait_real("a probe of node-a to hang", lambda: fakes["node-a"].calls["status"] > 0, 10)
        h.post_alert(notification(alert(node="b-node-a", pair="mainnet-b")))
        runner.wake()

        def done() -> bool:
            failover = h.pair("mainnet-b")["failover"]
            return failover is not None and failover["step"] == "done"

        took = wait_real("mainnet-b's failover", done, 20)
        assert took < 10  # far below the 30 s the hanging probe holds its thread
        assert not release.is_set() and fakes_b["node-b"].signing is True
    finally:
        release.set()
        runner.stop()
    assert no_overlap(fakes_b)


@pytest.mark.e2e
def test_serve_against_absent_nodes_shows_unreachable_under_gunicorn(tmp_path: Path) -> None:
    """`responder serve` against nodes that do not exist reports them unreachable from its first
    probe round, instead of an armed, healthy-looking pair."""
    dead = [node_entry(n, f"http://127.0.0.1:{free_port()}") for n in ("node-a", "node-b")]
    data = base_config(lambda n: "", nodes=dead, poll_interval="0.2s")
    server = ServerProcess(write_config(tmp_path, data), free_port(), tmp_path / "serve.log")
    server.start()
    try:
        pair = server.wait_for(
            lambda p: all(n["observed"] for n in p["nodes"]), "the first probe round"
        )
        assert [n["observed"]["says"] for n in pair["nodes"]] == ["unreachable", "unreachable"]
        assert pair["who_signs"] == "no node reports signing; unknown for node-a, node-b"
        metrics = requests.get(server.url + "/metrics", timeout=5).text
        assert 'responder_node_up{node="node-a",pair="mainnet-a"} 0.0' in metrics
    finally:
        server.stop()


# ---- pause and abort while a failover is in flight ---------------------------------------------


def test_pause_during_an_in_flight_failover_says_it_continues_and_abort_stops_it(
    tmp_path: Path, clock: ManualClock, fakes: dict[str, FakeNode]
) -> None:
    """Pausing while a failover is in flight says that failover continues; `abort` then stops
    it after the fence and before the activation, and status says what was done."""
    h = build(tmp_path, clock, default_nodes(fakes))
    release = threading.Event()
    fakes["node-a"].before_reply["fence"] = lambda: release.wait(10)
    h.post_alert(notification(alert()))
    h.responder.step()
    clock.advance(21)
    h.responder.tick()
    claimed = h.responder.claim_failover()
    assert claimed is not None
    worker = threading.Thread(target=h.responder.execute, args=(claimed,))
    worker.start()
    try:
        wait_real("the fence to be in flight", lambda: fakes["node-a"].calls["fence"] == 1, 10)
        paused = h.op("POST", f"/api/v1/pairs/{PAIR}/pause").get_json()["reason"]
        assert "nothing new is acted on" in paused
        assert f"failover {claimed.id} is already in flight and continues" in paused
        aborted = h.op("POST", f"/api/v1/pairs/{PAIR}/abort")
        assert aborted.status_code == 200
        assert "stops before its activation" in aborted.get_json()["reason"]
    finally:
        release.set()
        worker.join(10)
    pair = h.pair()
    assert pair["failover"]["step"] == "failed"
    assert (
        "aborted by operator after node-a was fenced: nothing was activated"
        in (pair["failover"]["outcome_reason"])
    )
    assert pair["phase"] == "blocked"
    assert {n["name"]: n["role"] for n in pair["nodes"]} == {
        "node-a": "fenced",
        "node-b": "standby",
    }
    assert fakes["node-b"].calls["activate"] == 0 and fakes["node-b"].signing is False
    assert fakes["node-a"].signing is False
    kinds = [e["kind"] for e in h.events()]
    assert "operator:pause" in kinds and "operator:abort" in kinds
    assert no_overlap(fakes)


def test_abort_without_a_failover_in_flight_is_refused(
    tmp_path: Path, clock: ManualClock, fakes: dict[str, FakeNode]
) -> None:
    """`abort` with nothing in flight is a 409 with the reason, and changes nothing."""
    h = build(tmp_path, clock, default_nodes(fakes))
    before = h.pair()
    refused = h.op("POST", f"/api/v1/pairs/{PAIR}/abort")
    assert refused.status_code == 409
    assert refused.get_json()["error"] == "no failover in flight; nothing to abort"
    assert h.pair() == before
