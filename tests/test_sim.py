"""The validator node simulator (responder.sim), run as a real subprocess like the e2e tests do."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client

from responder.sim import FAULTS, Sim, SimApp, overlaps

TOKEN = "sim-test-token"
NO_KM_CALLS = {"km_get": 0, "km_delete": 0, "km_post": 0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(pred: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class SimProc:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def state(self) -> dict[str, Any]:
        resp = requests.get(self.url + "/sim/state", timeout=5)
        assert resp.status_code == 200
        data: dict[str, Any] = resp.json()
        return data

    def fault(self, name: str, pubkey: str | None = None) -> requests.Response:
        body = {"fault": name} | ({"pubkey": pubkey} if pubkey else {})
        return requests.post(self.url + "/sim/faults", json=body, timeout=5)

    def clear(self, name: str | None = None) -> requests.Response:
        path = "/sim/faults" + (f"/{name}" if name else "")
        return requests.delete(self.url + path, timeout=5)

    def agent(
        self, method: str, path: str, token: str | None = None, **kw: Any
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kw.setdefault("timeout", 5)
        return requests.request(method, self.url + path, headers=headers, **kw)


@contextlib.contextmanager
def running_sims(tmp_path: Path) -> Iterator[Callable[..., SimProc]]:
    """Start `python -m responder.sim` subprocesses; every one is terminated and reaped."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*extra: str, name: str = "node-a", slot_seconds: float = 0.05) -> SimProc:
        port = free_port()
        log = tmp_path / f"{name}-{len(procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "responder.sim",
                    "--name",
                    name,
                    "--pair",
                    "mainnet-a",
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--slot-seconds",
                    str(slot_seconds),
                    *extra,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        line = f"sim {name} listening on 127.0.0.1:{port}"

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            return line in log.read_text()

        wait_until(ready, f"{line!r}", timeout=15)
        return SimProc(proc, f"http://127.0.0.1:{port}", log)

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def start_sim(tmp_path: Path) -> Iterator[Callable[..., SimProc]]:
    """Start `python -m responder.sim` subprocesses; every one is terminated and reaped."""
    with running_sims(tmp_path) as start:
        yield start


def _token(tmp_path: Path) -> Path:
    path = tmp_path / "node-token"
    path.write_text(TOKEN + "\n")
    return path


def metrics(resp: requests.Response) -> dict[str, float]:
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(resp.text):
        assert family.type == "gauge", family.name
        assert family.documentation, family.name
        for sample in family.samples:
            assert sample.labels == {}, sample
            out[sample.name] = sample.value
    return out


def test_metrics_parse(start_sim: Callable[..., SimProc]) -> None:
    """Both scrape targets serve parseable gauges with the documented names and values."""
    sim = start_sim("--signing")
    vc = metrics(requests.get(sim.url + "/metrics", timeout=5))
    assert vc == {"validator_sim_signing": 1.0, "vc_beacon_nodes_synced_count": 1.0}
    bn = metrics(requests.get(sim.url + "/beacon/metrics", timeout=5))
    assert set(bn) == {
        "beacon_head_slot",
        "beacon_head_state_slot",
        "beacon_finalized_epoch",
        "eth_con_sync_is_syncing",
        "eth_con_sync_distance",
        "sync_eth2_synced",
        "libp2p_peers",
        "eth_con_peers",
        "libp2p_peer_connected_total",
    }
    assert bn["beacon_head_state_slot"] == bn["beacon_head_slot"]
    assert bn["beacon_finalized_epoch"] == max(0, bn["beacon_head_slot"] // 32 - 2)
    assert (bn["eth_con_sync_is_syncing"], bn["eth_con_sync_distance"]) == (0, 0)
    assert bn["sync_eth2_synced"] == 1
    assert bn["libp2p_peers"] == bn["eth_con_peers"] == bn["libp2p_peer_connected_total"] == 50


def test_head_slot_advances(start_sim: Callable[..., SimProc]) -> None:
    """The head slot advances every slot, and the finalized epoch follows it."""
    sim = start_sim(slot_seconds=0.01)
    first = sim.state()["head_slot"]
    wait_until(lambda: sim.state()["head_slot"] >= first + 3, "head to advance")
    wait_until(
        lambda: (
            metrics(requests.get(sim.url + "/beacon/metrics", timeout=5))["beacon_finalized_epoch"]
            >= 1
        ),
        "finalized epoch to advance",
        timeout=10,
    )


def test_stall_head_freezes_head(start_sim: Callable[..., SimProc]) -> None:
    """stall_head freezes the head, reports syncing and a growing distance, and is unhealthy."""
    sim = start_sim()
    assert sim.fault("stall_head").status_code == 200
    frozen = sim.state()["head_slot"]

    def distance() -> float:
        return metrics(requests.get(sim.url + "/beacon/metrics", timeout=5))[
            "eth_con_sync_distance"
        ]

    wait_until(lambda: distance() >= 5, "sync distance to grow")
    bn = metrics(requests.get(sim.url + "/beacon/metrics", timeout=5))
    assert bn["beacon_head_slot"] == frozen
    assert (bn["eth_con_sync_is_syncing"], bn["sync_eth2_synced"]) == (1, 0)
    vc = metrics(requests.get(sim.url + "/metrics", timeout=5))
    assert vc["vc_beacon_nodes_synced_count"] == 0
    assert sim.agent("GET", "/status").json() == {"healthy": False, "signing": False}
    assert sim.clear("stall_head").status_code == 200
    wait_until(lambda: sim.state()["head_slot"] > frozen, "head to move again")
    assert distance() == 0


def test_vc_down_stops_and_resumes_signing(start_sim: Callable[..., SimProc]) -> None:
    """vc_down answers 503 and closes the signing interval; clearing it opens a new one."""
    sim = start_sim("--signing")
    before = sim.state()
    assert before["signing"] is True
    assert len(before["signing_intervals"]) == 1
    assert before["signing_intervals"][0][1] is None
    sim.fault("vc_down")
    assert requests.get(sim.url + "/metrics", timeout=5).status_code == 503
    assert requests.get(sim.url + "/beacon/metrics", timeout=5).status_code == 200
    down = sim.state()
    assert down["signing"] is False
    assert down["enabled"] is True
    [[start, end]] = down["signing_intervals"]
    assert end is not None and start <= end
    assert sim.agent("GET", "/status").json() == {"healthy": False, "signing": False}
    sim.clear("vc_down")
    up = sim.state()
    assert up["signing"] is True
    assert len(up["signing_intervals"]) == 2
    assert up["signing_intervals"][1][0] >= end
    assert up["signing_intervals"][1][1] is None
    assert metrics(requests.get(sim.url + "/metrics", timeout=5))["validator_sim_signing"] == 1


def test_fenced_node_never_resumes(start_sim: Callable[..., SimProc]) -> None:
    """A fenced node stays off even after its fault clears; only activate turns it back on."""
    sim = start_sim("--signing")
    sim.fault("vc_down")
    resp = sim.agent("POST", "/fence", json={"pair": "mainnet-a"})
    assert (resp.status_code, resp.json()) == (200, {"signing": False})
    sim.clear()
    state = sim.state()
    assert (state["enabled"], state["signing"], state["faults"]) == (False, False, [])
    assert all(end is not None for _, end in state["signing_intervals"])
    assert state["calls"] == {"status": 0, "fence": 1, "activate": 0} | NO_KM_CALLS
    assert sim.agent("GET", "/status").json() == {"healthy": True, "signing": False}


def test_activate_starts_signing(start_sim: Callable[..., SimProc]) -> None:
    """activate on a standby loads the keys and opens a signing interval."""
    sim = start_sim()
    assert sim.state()["signing_intervals"] == []
    resp = sim.agent("POST", "/activate", json={})
    assert (resp.status_code, resp.json()) == (200, {"signing": True})
    state = sim.state()
    assert state["enabled"] is True
    assert [end for _, end in state["signing_intervals"]] == [None]
    assert state["calls"]["activate"] == 1


def test_activate_under_vc_down_reports_not_signing(start_sim: Callable[..., SimProc]) -> None:
    """activate with the validator client down answers signing=false (not confirmed)."""
    sim = start_sim()
    sim.fault("vc_down")
    assert sim.agent("POST", "/activate").json() == {"signing": False}
    assert sim.state()["enabled"] is True
    sim.clear("vc_down")
    assert sim.state()["signing"] is True


def test_fence_fail_and_lie_change_nothing(start_sim: Callable[..., SimProc]) -> None:
    """fence_fail answers 500 and fence_lie claims success (signing=false); both leave the node
    signing, as its status says."""
    sim = start_sim("--signing")
    sim.fault("fence_fail")
    assert sim.agent("POST", "/fence").status_code == 500
    assert sim.state()["signing"] is True
    sim.clear()
    sim.fault("fence_lie")
    resp = sim.agent("POST", "/fence")
    assert (resp.status_code, resp.json()) == (200, {"signing": False})
    assert sim.agent("GET", "/status").json()["signing"] is True
    state = sim.state()
    assert (state["enabled"], state["signing"]) == (True, True)
    assert state["calls"]["fence"] == 2


def test_activate_fail_changes_nothing(start_sim: Callable[..., SimProc]) -> None:
    """activate_fail answers 500 and the standby stays off."""
    sim = start_sim()
    sim.fault("activate_fail")
    assert sim.agent("POST", "/activate").status_code == 500
    state = sim.state()
    assert (state["enabled"], state["signing"], state["signing_intervals"]) == (False, False, [])
    assert state["calls"]["activate"] == 1


def test_fence_hang_holds_until_cleared(start_sim: Callable[..., SimProc]) -> None:
    """fence_hang holds the request open, then answers 500 without fencing once cleared."""
    sim = start_sim("--signing", "--hang-seconds", "30")
    sim.fault("fence_hang")
    with pytest.raises(requests.ReadTimeout):
        sim.agent("POST", "/fence", timeout=0.3)
    result: dict[str, requests.Response] = {}
    thread = threading.Thread(target=lambda: result.update(r=sim.agent("POST", "/fence")))
    thread.start()
    wait_until(lambda: sim.state()["calls"]["fence"] == 2, "the second fence to arrive")
    sim.clear("fence_hang")
    thread.join(5)
    assert not thread.is_alive()
    assert result["r"].status_code == 500
    assert sim.state()["signing"] is True


def test_activate_hang_times_out_to_500(start_sim: Callable[..., SimProc]) -> None:
    """activate_hang gives up after --hang-seconds with a 500 and no activation."""
    sim = start_sim("--hang-seconds", "0.3")
    sim.fault("activate_hang")
    t0 = time.monotonic()
    assert sim.agent("POST", "/activate").status_code == 500
    assert time.monotonic() - t0 >= 0.25
    assert sim.state()["signing"] is False


def test_crash_hangs_everything_but_sim_api(
    start_sim: Callable[..., SimProc], tmp_path: Path
) -> None:
    """crash stops signing and holds every scrape and agent call open; clearing restores it."""
    sim = start_sim("--signing", "--hang-seconds", "0.5", "--token-file", str(_token(tmp_path)))
    sim.fault("crash")
    for method, path in (
        ("GET", "/metrics"),
        ("GET", "/beacon/metrics"),
        ("GET", "/status"),
        ("POST", "/fence"),
    ):
        with pytest.raises(requests.ReadTimeout):
            sim.agent(method, path, token=TOKEN, timeout=0.2)
    assert requests.get(sim.url + "/metrics", timeout=5).status_code == 503
    state = sim.state()
    assert (state["enabled"], state["signing"]) == (True, False)
    assert state["calls"] == {"status": 0, "fence": 0, "activate": 0} | NO_KM_CALLS
    sim.clear("crash")
    assert sim.agent("GET", "/status", token=TOKEN).json() == {"healthy": True, "signing": True}


def test_beacon_down_and_drop_peers(start_sim: Callable[..., SimProc]) -> None:
    """beacon_down answers 503 on the beacon target; drop_peers zeroes the peer gauges."""
    sim = start_sim("--signing")
    sim.fault("beacon_down")
    assert requests.get(sim.url + "/beacon/metrics", timeout=5).status_code == 503
    assert requests.get(sim.url + "/metrics", timeout=5).status_code == 200
    assert sim.agent("GET", "/status").json() == {"healthy": False, "signing": True}
    sim.clear()
    sim.fault("drop_peers")
    bn = metrics(requests.get(sim.url + "/beacon/metrics", timeout=5))
    assert bn["libp2p_peers"] == bn["eth_con_peers"] == bn["libp2p_peer_connected_total"] == 0
    assert sim.agent("GET", "/status").json() == {"healthy": False, "signing": True}


def test_token_required(start_sim: Callable[..., SimProc], tmp_path: Path) -> None:
    """With --token-file the agent answers 401 without a token and 403 with a wrong one."""
    sim = start_sim("--signing", "--token-file", str(_token(tmp_path)))
    for method, path in (("GET", "/status"), ("POST", "/fence"), ("POST", "/activate")):
        assert sim.agent(method, path).status_code == 401
        assert sim.agent(method, path, token="wrong").status_code == 403
    assert sim.state()["calls"] == {"status": 0, "fence": 0, "activate": 0} | NO_KM_CALLS
    assert sim.state()["signing"] is True
    resp = sim.agent("GET", "/status", token=TOKEN)
    assert (resp.status_code, resp.json()) == (200, {"healthy": True, "signing": True})
    assert requests.get(sim.url + "/metrics", timeout=5).status_code == 200
    assert sim.fault("vc_down").status_code == 200


def test_unknown_fault_is_400(start_sim: Callable[..., SimProc]) -> None:
    """An unknown fault name is refused with 400 listing the valid names."""
    sim = start_sim()
    for resp in (sim.fault("meteor"), sim.clear("meteor")):
        assert resp.status_code == 400
        assert all(name in resp.json()["error"] for name in FAULTS)
    assert sim.state()["faults"] == []
    assert sim.fault("drop_peers").json() == {"faults": ["drop_peers"]}
    assert sim.fault("crash").json() == {"faults": ["crash", "drop_peers"]}
    assert sim.clear().json() == {"faults": []}


def test_sigterm_exits_promptly_with_a_hanging_request(start_sim: Callable[..., SimProc]) -> None:
    """SIGTERM exits 0 promptly even while a fence request hangs."""
    sim = start_sim("--signing", "--hang-seconds", "30")
    sim.fault("fence_hang")

    def hanging_fence() -> None:
        with contextlib.suppress(requests.RequestException):
            sim.agent("POST", "/fence", timeout=10)

    thread = threading.Thread(target=hanging_fence, daemon=True)
    thread.start()
    wait_until(lambda: sim.state()["calls"]["fence"] == 1, "the fence to be hanging")
    t0 = time.monotonic()
    sim.proc.send_signal(signal.SIGTERM)
    assert sim.proc.wait(5) == 0
    assert time.monotonic() - t0 < 3
    thread.join(5)
    assert not thread.is_alive()


def test_fault_api_refuses_non_loopback() -> None:
    """The /sim API answers 403 to a non-loopback client and works from loopback."""
    client = Client(SimApp(Sim("node-a", "mainnet-a")))
    remote = {"REMOTE_ADDR": "10.1.2.3"}
    assert client.get("/sim/state", environ_base=remote).status_code == 403
    assert (
        client.post("/sim/faults", json={"fault": "crash"}, environ_base=remote).status_code == 403
    )
    assert client.delete("/sim/faults", environ_base=remote).status_code == 403
    for addr in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert client.get("/sim/state", environ_base={"REMOTE_ADDR": addr}).status_code == 200
    assert client.get("/status", environ_base=remote).status_code == 200


def test_overlaps_finds_overlapping_pairs() -> None:
    """overlaps returns each pair of intervals that share time."""
    a: list[list[float | None]] = [[0.0, 10.0], [20.0, 30.0]]
    b: list[list[float | None]] = [[5.0, 6.0], [12.0, 15.0], [29.0, 31.0]]
    assert overlaps(a, b) == [([0.0, 10.0], [5.0, 6.0]), ([20.0, 30.0], [29.0, 31.0])]
    assert overlaps([[0.0, 1.0]], []) == []


def test_overlaps_touching_is_a_clean_handover() -> None:
    """An interval ending exactly when the other starts is not an overlap."""
    assert overlaps([[0.0, 5.0]], [[5.0, 9.0]]) == []
    assert overlaps([[5.0, 9.0]], [[0.0, 5.0]]) == []
    assert overlaps([[0.0, 5.0]], [[4.999, 9.0]]) == [([0.0, 5.0], [4.999, 9.0])]


def test_overlaps_open_interval_is_infinite() -> None:
    """An interval still open (end None) overlaps anything starting after it began."""
    assert overlaps([[0.0, None]], [[1e12, 1e12 + 1]]) == [([0.0, None], [1e12, 1e12 + 1])]
    assert overlaps([[10.0, None]], [[0.0, 10.0]]) == []
    assert overlaps([[10.0, None]], [[20.0, None]]) == [([10.0, None], [20.0, None])]


def test_two_sims_fence_then_activate_never_overlap(start_sim: Callable[..., SimProc]) -> None:
    """A fence-then-activate handover between two real sims leaves no overlapping intervals."""
    primary = start_sim("--signing", name="node-a")
    standby = start_sim(name="node-b")
    assert primary.agent("POST", "/fence").json() == {"signing": False}
    assert standby.agent("POST", "/activate").json() == {"signing": True}
    a, b = primary.state()["signing_intervals"], standby.state()["signing_intervals"]
    assert overlaps(a, b) == []
    # and the checker does catch the unsafe order
    primary.agent("POST", "/activate")
    assert len(overlaps(primary.state()["signing_intervals"], b)) == 1
