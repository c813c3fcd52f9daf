"""The chaos campaign (tests/chaos, docs/safety.md): a smoke share passes, and a broken build fails.

The full campaign is `make chaos` (1,000 scenarios). Here a small share of it runs (and another
in etcd mode, `--etcd`: replicas on a real etcd, crashes as leader kills), and the
checker is proven on four mutants of the executor: each copy of the `responder` package is
patched, the campaign runs against the copy in a subprocess (PYTHONPATH puts the copy first),
and it must exit non-zero naming the broken invariant.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chaos import scenarios as S
from tests.chaos import world as w
from tests.chaos.campaign import quiet_logs, run_one
from tests.chaos.invariants import check

REPO = Path(__file__).resolve().parents[1]


def campaign(*args: str, cwd: Path = REPO, pythonpath: str | None = None) -> tuple[int, str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.run(
        [sys.executable, "-m", "tests.chaos", "--jobs", "2", "--quiet", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.e2e
def test_smoke_share_of_the_campaign_has_no_violation() -> None:
    """30 in-process scenarios and 1 against gunicorn (index 7) break no invariant."""
    code, out = campaign("--scenarios", "31", "--seed", "20261126")
    assert "31 scenarios" in out and "real-process (gunicorn) 1" in out, out[-3000:]
    assert code == 0, out[-6000:]
    assert "violations: 0 in 0 scenarios" in out


def test_etcd_mode_smoke_share_kills_leaders_and_breaks_no_invariant() -> None:
    """11 in-process scenarios with every incarnation a replica on a real etcd (one per worker),
    each crash a leader kill: at least one kill, and no invariant broken (index 7, a
    real-process scenario, is skipped in etcd mode; `make chaos` runs 300)."""
    code, out = campaign("--etcd", "--scenarios", "12", "--seed", "20261126")
    assert "mode etcd: 11 scenarios" in out, out[-3000:]
    assert "etcd mode: 1 real-process (gunicorn) scenarios skipped" in out, out[-3000:]
    kills = re.search(r"leader kills (\d+)", out)
    assert kills is not None and int(kills.group(1)) >= 1, out[-3000:]
    refused = re.search(r"refused after the kill: (\d+) node calls \(lease guard\)", out)
    assert refused is not None and int(refused.group(1)) >= 1, out[-3000:]
    assert code == 0, out[-6000:]
    assert "violations: 0 in 0 scenarios" in out


def test_a_request_of_a_killed_leader_is_a_violation() -> None:
    """The check behind etcd mode's leader kills: once an incarnation is deposed (its leader
    lease revoked), any request of it that reaches a node is a violation; the new leader's
    are not."""
    sc = S.generate(20261126, 0)
    nodes = [
        w.Node(slot, plan.name, keys=i == 0)
        for plan in sc.pairs
        for i, slot in enumerate(plan.slots)
    ]
    world = w.World(lambda: 0.0, nodes)
    old, new = world.token_for(1), world.token_for(2)
    slot = sc.pairs[0].slots[0]
    world.handle(slot, "status", old, None)
    world.depose(1)
    world.handle(slot, "status", new, None)
    assert not [v for v in check(sc, world, {}).violations if "killed leader" in v]
    world.handle(slot, "status", old, None)
    found = [v for v in check(sc, world, {}).violations if "killed leader" in v]
    assert len(found) == 1 and f"inc1 status {slot}" in found[0], found


# (exact text, replacement, campaign filter)
MUTANTS = {
    # the standby is activated before the primary's fence is even sent
    "activate-before-fence": (
        "        if f.step is Step.FENCING:\n            f = self._fence(f, self._context(f))\n",
        "        if f.step is Step.FENCING:\n"
        "            _guard(lambda: self.nodes[(f.pair, f.target)].driver.activate(self._context(f)))\n"
        "            f = self._fence(f, self._context(f))\n",
        (),
    ),
    # a fence's claim is believed: no verifying read, no check that the others are silent
    "believe-the-fence": (
        "        if after_doubt:\n            return self._settle(",
        '        return True, "believed"\n        if after_doubt:\n            return self._settle(',
        ("--only", "primary=fence_lies"),
    ),
}


# a drill that really sends the fence it should only list (a drill must never mutate a node)
DRILL_SENDS = (
    "        self.requests.append(\n",
    '        if what == "fence":\n'
    "            try:\n"
    "                _guard(lambda: self.nodes[(f.pair, node)].driver.fence(self._context(f)))\n"
    "            except DriverError:\n"
    "                pass\n"
    "        self.requests.append(\n",
)
# a dry-run failover that skips the rehearsal and fences for real
DRY_RUN_FENCES = (
    "        if f.dry_run:\n            return self._rehearse_fence(f, handle, levels)\n",
    "",
)
# the hand-off gate skipped: activation without a hand-off, a confirm or quiet heights
SKIP_GATE = (
    '        if f.dry_run or not target.needs_handoff or data.get("handoff"):\n',
    "        if True:\n",
)
NEW_MUTANTS = {
    "activate-without-hand-off": (
        *SKIP_GATE,
        ("--only", "feature=handoff"),
        "activation without a hand-off",
    ),
    "drill-sends-a-fence": (*DRILL_SENDS, ("--only", "feature=drill"), "a drill sent a mutating"),
    "dry-run-fences": (
        *DRY_RUN_FENCES,
        ("--only", "feature=dry_run_pair"),
        "a dry-run pair's node got a mutating request",
    ),
}


@pytest.mark.parametrize("mutant", sorted(NEW_MUTANTS))
def test_campaign_catches_a_drill_dry_run_or_gate_that_breaks_its_promise(
    tmp_path: Path, mutant: str
) -> None:
    """Against a responder whose drills (or dry-run pairs) send a real fence, or whose hand-off
    gate lets an activation through, the campaign exits non-zero naming the broken invariant."""
    old, new, only, expected = NEW_MUTANTS[mutant]
    shutil.copytree(REPO / "responder", tmp_path / "responder")
    executor = tmp_path / "responder" / "executor.py"
    text = executor.read_text()
    assert text.count(old) == 1, "the mutation no longer applies: update it to the executor"
    executor.write_text(text.replace(old, new))
    code, out = campaign(
        "--scenarios",
        "300",
        "--seed",
        "1",
        "--in-process-only",
        *only,
        cwd=tmp_path,
        pythonpath=f"{tmp_path}{os.pathsep}{REPO}",
    )
    assert f"responder under test: {tmp_path / 'responder' / '__init__.py'}" in out, out[:2000]
    assert code == 1, out[-4000:]
    assert expected in out, out[-4000:]
    assert "VIOLATION in scenario 1:" in out and "--replay 1:" in out


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_campaign_catches_a_build_that_activates_without_a_verified_fence(
    tmp_path: Path, mutant: str
) -> None:
    """Against a responder whose executor does not wait for a verified fence, the campaign exits
    non-zero reporting two signers or an activation without a verified fence."""
    old, new, only = MUTANTS[mutant]
    shutil.copytree(REPO / "responder", tmp_path / "responder")
    executor = tmp_path / "responder" / "executor.py"
    text = executor.read_text()
    assert text.count(old) == 1, "the mutation no longer applies: update it to the executor"
    if mutant == "believe-the-fence":
        silent = "        if problems:\n            return False, "
        assert text.count(silent) == 1, "the mutation no longer applies: update it"
        text = text.replace(silent, '        return True, "unchecked", {}\n' + silent)
    executor.write_text(text.replace(old, new))

    code, out = campaign(
        "--scenarios",
        "200" if only else "40",
        "--seed",
        "1",
        "--in-process-only",
        *only,
        cwd=tmp_path,
        pythonpath=f"{tmp_path}{os.pathsep}{REPO}",
    )
    assert f"responder under test: {tmp_path / 'responder' / '__init__.py'}" in out, out[:2000]
    assert code == 1, out[-4000:]
    assert "two signers" in out or "activation without verified fence" in out, out[-4000:]
    assert "VIOLATION in scenario 1:" in out and "--replay 1:" in out


# Bugs the campaign found, each replayed from its seed (docs/safety.md, "Bugs the campaign found").
FOUND = {
    # the target read "not signing" while its cut activation could still land: status called it
    # silent (it is now "may be signing" from the moment its activation is sent until verified)
    "20261126:463": "target_unknown_while_its_activation_may_land",
    "20261126:470": "target_unknown_while_its_activation_may_land",
    "20261126:483": "target_unknown_while_its_activation_may_land",
    # an activation that failed before a crash was sent again by the owner that resumed it
    "20261126:1267": "failed_activation_not_sent_again_after_restart",
    "20261126:2633": "failed_activation_not_sent_again_after_restart",
    "20261126:3304": "failed_activation_not_sent_again_after_restart",
}


@pytest.mark.parametrize("key", sorted(FOUND), ids=[f"{k}-{v}" for k, v in sorted(FOUND.items())])
def test_chaos_scenario_found_earlier_now_holds_every_invariant(key: str, tmp_path: Path) -> None:
    """Each scenario in which the campaign once found a bug now breaks no invariant."""
    seed, index = (int(part) for part in key.split(":"))
    loggers = [logging.getLogger(name) for name in ("responder", "werkzeug")]
    levels = [lg.level for lg in loggers]
    quiet_logs(verbose=False)
    server = w.NodeServer().start()
    try:
        result = run_one(seed, index, server, tmp_path)
    finally:
        server.stop()
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)  # later tests capture the product's logs
    assert result.violations == [], "\n".join(result.violations + result.trace)
