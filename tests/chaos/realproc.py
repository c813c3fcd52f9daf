"""Runs one scenario against real processes: `responder serve` (gunicorn, two workers, the
background runner in each) with the campaign's fake nodes, on real time.

Five kinds rotate through the real-process share of a campaign:

- sustained_dup: a sustained fault delivered 10 times at once (and by a second Alertmanager):
  exactly one failover, within hold + bound wall seconds.
- blip: a fault resolved well before the hold: no fence, no activation.
- sigkill: the whole responder is SIGKILLed while the primary's fence (or the standby's
  activation) is in flight, then restarted: one activation, never repeated.
- lying_fence: the primary's agent claims the fence and keeps signing: nothing is activated.
- two_pairs_hang: every call to one pair's primary hangs past the driver timeout while the other
  pair's sustained fault must fail over on time.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import requests

from responder.store.sqlite import SqliteStore
from tests.chaos import scenarios as S
from tests.chaos import world as w
from tests.chaos.inprocess import Run, claims, config_data, write_config
from tests.chaos.scenarios import AlertSpec, Delivery, Scenario
from tests.serverproc import ServerProcess, free_port
from tests.tokens import OPERATOR_TOKEN, WEBHOOK_TOKEN

HOLD = 2.0
WAIT = 30.0  # wall seconds any one wait may take


def _kind(sc: Scenario) -> str:
    return next(n.split(":", 1)[1] for n in sc.notes if n.startswith("real:"))


class Real:
    def __init__(self, sc: Scenario, server: w.NodeServer, root: Path) -> None:
        sc.hold = HOLD
        self.sc = sc
        self.kind = _kind(sc)
        nodes = [
            w.Node(slot, plan.name, keys=i == 0, faults=list(sc.node_faults.get(slot, [])))
            for plan in sc.pairs
            for i, slot in enumerate(plan.slots)
        ]
        self.world = w.World(time.monotonic, nodes, real_hangs=1000, hang_seconds=S.TIMEOUT + 0.5)
        server.world = self.world
        self.run = Run(sc, self.world)
        self.root = root
        data = config_data(
            sc, server.node_url, server.pdu_url, root / "state", {}, lease=2.0, observe=1.0
        )
        self.config = write_config(root / "cfg", data, self.world.token_for(1))
        self.proc = ServerProcess(self.config, free_port(), root / "responder.log")

    def note(self, text: str) -> None:
        self.run.events.append(f"t={self.world.now():.2f} {text}")

    def deliver(self, d: Delivery) -> int:
        # a fresh connection each time: gunicorn closes idle keep-alive connections after 2 s,
        # and a request racing that close is the client's problem, not the responder's
        resp = requests.post(
            self.proc.url + "/webhook",
            data=json.dumps(d.body()),
            headers={
                "Authorization": f"Bearer {WEBHOOK_TOKEN}",
                "Content-Type": "application/json",
                "Connection": "close",
            },
            timeout=10,
        )
        if resp.status_code == 200:
            self.run.acked.append(int(resp.json()["id"]))
            if d.sustained and d.pair not in self.run.fault_seen:
                self.run.fault_seen[d.pair] = self.world.now()
        else:
            self.run.violations.append(f"delivery answered {resp.status_code}: {resp.text[:200]}")
        return resp.status_code

    def api(self, path: str) -> Any:
        resp = requests.get(
            self.proc.url + path,
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}", "Connection": "close"},
            timeout=10,
        )
        resp.raise_for_status()
        return resp.json()

    def pair(self, name: str) -> dict[str, Any]:
        return next(p for p in self.api("/api/v1/pairs")["pairs"] if p["name"] == name)

    def settled(self, name: str) -> dict[str, Any]:
        """Wait until the pair's last failover has ended (or none started)."""
        end = time.monotonic() + WAIT
        while True:
            p = self.pair(name)
            if p["phase"] != "failing_over" and (
                p["failover"] is None or p["failover"]["step"] in ("done", "failed", "aborted")
            ):
                return p
            if time.monotonic() > end:
                self.run.violations.append(
                    f"{name}: failover still in flight after {WAIT:g}s: {p['failover']}"
                )
                return p
            time.sleep(0.1)

    def fire(self, pair: str, node: str, status: str = "firing", starts: float = -60.0) -> Delivery:
        a = AlertSpec(S.TRIGGERS[0], node, pair, status, S.starts_at(starts), 10)
        return Delivery(self.world.now(), pair, (a,), sustained=status == "firing")

    # ---- the kinds ----------------------------------------------------------------------------------

    def execute(self) -> Run:
        self.proc.start()
        self.note("responder started under gunicorn")
        try:
            getattr(self, f"_{self.kind}")()
            for plan in self.sc.pairs:
                self.settled(plan.name)
                self.check_claims(plan.name)
        finally:
            self.world.release_all()
            self.proc.stop()
        store = SqliteStore(self.root / "state" / "responder.sqlite3")
        try:
            with store.transaction() as txn:
                lost = [i for i in self.run.acked if txn.load_notification(i) is None]
        finally:
            store.close()
        if lost:
            self.run.violations.append(f"acknowledged deliveries missing from the store: {lost}")
        return self.run

    def _wait_signing(self, slot: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.world.truth()[slot]:
                return True
            time.sleep(0.05)
        return False

    def _sustained_dup(self) -> None:
        d = self.fire("mainnet-a", "node-a")
        barrier = threading.Barrier(10)
        codes: list[int] = []

        def one() -> None:
            barrier.wait(10)
            codes.append(self.deliver(d))

        threads = [threading.Thread(target=one) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        self.deliver(d)  # the second Alertmanager
        self.note(f"delivered 11 times: {sorted(codes)}")
        self._wait_signing("a1", HOLD + S.BOUND + 2)
        self.settled("mainnet-a")
        kinds = [e["kind"] for e in self.api("/api/v1/events?pair=mainnet-a&limit=1000")["events"]]
        if kinds.count("failover_planned") != 1:
            self.run.violations.append(
                f"11 deliveries of one alert planned {kinds.count('failover_planned')} failovers"
            )

    def _blip(self) -> None:
        self.deliver(self.fire("mainnet-a", "node-a"))
        time.sleep(0.5)
        self.deliver(self.fire("mainnet-a", "node-a", "resolved"))
        time.sleep(HOLD + 2.0)
        self.note("waited past the hold")

    def _lying_fence(self) -> None:
        self.deliver(self.fire("mainnet-a", "node-a"))
        time.sleep(HOLD)
        self.settled("mainnet-a")

    def _sigkill(self) -> None:
        what = "fence" if self.sc.crash_nth == 1 else "activate"
        plan = self.world.arm_crash(1, 1, landed=True, kind=what)
        self.deliver(self.fire("mainnet-a", "node-a"))
        if not plan.hit.wait(HOLD + WAIT):
            self.run.violations.append(f"the {what} never reached the node")
            return
        self.proc.kill()
        self.world.kill(1)
        self.note(f"SIGKILLed the responder while its {what} was in flight (it landed)")
        (self.config.parent / "secrets" / "node-token").write_text(self.world.token_for(2) + "\n")
        self.proc.start()
        self.note("responder restarted")
        self._wait_signing("a1", WAIT)

    def _two_pairs_hang(self) -> None:
        self.deliver(self.fire("mainnet-a", "node-a"))
        time.sleep(S.TIMEOUT)  # the troubled pair's probes and fence are hanging by now
        self.deliver(self.fire("mainnet-b", "b-node-a"))
        self._wait_signing("b1", HOLD + S.BOUND + 2)

    # ---- claims -------------------------------------------------------------------------------------

    def check_claims(self, name: str) -> None:
        status = self.pair(name)
        try:
            facts = claims(status)
        except ValueError as exc:
            self.run.violations.append(str(exc))
            return
        plan = next(p for p in self.sc.pairs if p.name == name)
        truth = self.world.truth(within=S.SETTLE)
        for node, claimed in (facts or {}).items():
            slot = plan.slot_of(node)
            if not self.world.fresh(slot):
                continue
            self.run.claims_checked += 1
            if truth[slot] != claimed:
                self.run.violations.append(
                    f"who_signs says {node} is {'signing' if claimed else 'not signing'}, but "
                    f"it is not so: {status['who_signs']!r}"
                )


def run_real(sc: Scenario, server: w.NodeServer, root: Path) -> Run:
    root.mkdir(parents=True, exist_ok=True)
    return Real(sc, server, root).execute()
