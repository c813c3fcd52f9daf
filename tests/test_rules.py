"""Alert rules: promtool checks and unit-tests them; every rule is documented as the responder needs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
RULE_FILES = sorted(RULES.glob("*.yml"))
TEST_FILES = sorted((RULES / "tests").glob("*.test.yml"))
EXAMPLE_CONFIG = ROOT / "examples" / "responder.yml"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found on PATH: run `make test`, which installs the Debian packages "
            "`prometheus` and `prometheus-alertmanager` (scripts/system-packages.sh)",
            pytrace=False,
        )
    return path


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"{' '.join(proc.args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def alerting_rules() -> list[tuple[str, dict[str, Any]]]:
    rules = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [(path.name, r) for r in group["rules"] if "alert" in r]
    return rules


ALL_RULES = alerting_rules()
RULE_IDS = [f"{name}:{rule['alert']}" for name, rule in ALL_RULES]


def test_rule_and_test_files_exist() -> None:
    """The five rule files ship, each with a unit-test file of the same name."""
    assert [p.name for p in RULE_FILES] == [
        "cosmos.yml",
        "ethereum.yml",
        "node.yml",
        "responder.yml",
        "solana.yml",
    ]
    assert [p.name for p in TEST_FILES] == [p.stem + ".test.yml" for p in RULE_FILES]


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    """`promtool check rules` accepts the rule file (keep_firing_for included, Prometheus 2.42)."""
    proc = run([promtool(), "check", "rules", str(path.relative_to(ROOT))])
    assert proc.returncode == 0, explain(proc)
    assert "SUCCESS" in proc.stdout, explain(proc)


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(path: Path) -> None:
    """`promtool test rules` passes: each alert fires after `for:`, ignores blips, renders as documented."""
    proc = run([promtool(), "test", "rules", str(path.relative_to(ROOT))])
    assert proc.returncode == 0, explain(proc)
    assert "SUCCESS" in proc.stdout, explain(proc)


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_unit_tests_set_their_intervals(path: Path) -> None:
    """Every unit-test file sets evaluation_interval and every test group its interval."""
    doc = yaml.safe_load(path.read_text())
    assert "evaluation_interval" in doc
    for test in doc["tests"]:
        assert "interval" in test, test.get("name")


@pytest.mark.parametrize(("filename", "rule"), ALL_RULES, ids=RULE_IDS)
def test_rule_is_documented(filename: str, rule: dict[str, Any]) -> None:
    """The rule has for:, severity, summary, description and agreeing failover_trigger label and annotation."""
    assert rule.get("for"), "every rule needs a for:"
    labels, annotations = rule.get("labels", {}), rule.get("annotations", {})
    assert labels.get("severity") in {"critical", "warning"}
    assert annotations.get("summary") and annotations.get("description")
    trigger = labels.get("failover_trigger")
    assert trigger in {"true", "false"}, (
        "label failover_trigger must be the string 'true' or 'false'"
    )
    assert annotations.get("failover_trigger") == trigger
    said = "Failover trigger: yes" if trigger == "true" else "Failover trigger: no"
    assert said in " ".join(annotations["description"].split())


@pytest.mark.parametrize(("filename", "rule"), ALL_RULES, ids=RULE_IDS)
def test_alert_keeps_node_and_pair(filename: str, rule: dict[str, Any]) -> None:
    """Every firing of the alert in its unit tests carries `node` and `pair`, which the responder matches on."""
    # absent() can only carry its selector's labels (ResponderNotScraped: job="responder")
    from_absent = rule["expr"].lstrip().startswith("absent(")
    test_file = RULES / "tests" / (Path(filename).stem + ".test.yml")
    seen = 0
    for test in yaml.safe_load(test_file.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            if case["alertname"] != rule["alert"]:
                continue
            for expected in case.get("exp_alerts") or []:
                seen += 1
                labels = expected["exp_labels"]
                if from_absent:
                    assert labels.get("job"), (case["eval_time"], labels)
                else:
                    assert labels.get("node") and labels.get("pair"), (case["eval_time"], labels)
                assert labels["failover_trigger"] == rule["labels"]["failover_trigger"]
                assert labels["severity"] == rule["labels"]["severity"]
    assert seen, f"no unit test shows {rule['alert']} firing"


@pytest.mark.parametrize(("filename", "rule"), ALL_RULES, ids=RULE_IDS)
def test_trigger_has_no_keep_firing_for(filename: str, rule: dict[str, Any]) -> None:
    """A failover trigger resolves as soon as the fault clears, so the responder's hold can debounce it."""
    if rule["labels"]["failover_trigger"] == "true":
        assert "keep_firing_for" not in rule


@pytest.mark.parametrize(("filename", "rule"), ALL_RULES, ids=RULE_IDS)
def test_every_alert_is_unit_tested_both_ways(filename: str, rule: dict[str, Any]) -> None:
    """The alert's unit tests include a case where it fires and a case where it must stay silent."""
    test_file = RULES / "tests" / (Path(filename).stem + ".test.yml")
    fires = silent = False
    for test in yaml.safe_load(test_file.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            if case["alertname"] == rule["alert"]:
                fires |= bool(case.get("exp_alerts"))
                silent |= not case.get("exp_alerts")
    assert fires, f"no unit test shows {rule['alert']} firing"
    assert silent, f"no unit test shows {rule['alert']} staying silent"


def test_responder_alerts_are_about_the_responder() -> None:
    """rules/responder.yml: health, outcome and readiness alerts, labelled component="responder", none a trigger."""
    rules = {rule["alert"]: rule for name, rule in ALL_RULES if name == "responder.yml"}
    assert sorted(rules) == sorted(
        [
            "FailoverNotReady",
            "FailoverReadinessStale",
            "ResponderSplitBrain",
            "FailoverDrillFailed",
            "FailoverDrillOverdue",
            "ResponderDown",
            "ResponderNotScraped",
            "FailoverFailed",
            "PairBlocked",
            "PairHeld",
            "NotificationErrors",
        ]
    )
    for name, rule in rules.items():
        assert rule["labels"]["component"] == "responder", name
        assert rule["labels"]["failover_trigger"] == "false", name
    assert rules["ResponderSplitBrain"]["for"] == "0m"
    assert rules["FailoverDrillFailed"]["for"] == "0m"
    assert rules["FailoverFailed"]["for"] == "0m"  # a failed failover pages at once
    assert rules["NotificationErrors"]["for"] == "0m"
    assert rules["ResponderDown"]["expr"] == 'up{job="responder"} == 0'
    assert rules["ResponderNotScraped"]["expr"] == 'absent(up{job="responder"})'
    assert "responder ack" in rules["FailoverFailed"]["annotations"]["description"]
    assert "responder ack" in rules["PairBlocked"]["annotations"]["description"]
    assert "responder adopt" in rules["PairHeld"]["annotations"]["description"]
    assert "responder adopt" in rules["ResponderSplitBrain"]["annotations"]["description"]
    assert "responder status" in rules["FailoverNotReady"]["annotations"]["description"]


def test_example_triggers_are_failover_trigger_rules() -> None:
    """Each alertname in the example responder config's policy.triggers is a rule labelled as a trigger."""
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    by_name = {rule["alert"]: rule for _, rule in ALL_RULES}
    triggers = {t for pair in config["pairs"] for t in pair["policy"]["triggers"]}
    assert {"ValidatorClientDown", "BeaconNodeStalled"} <= triggers
    for name in sorted(triggers):
        assert name in by_name, f"{name} is a responder trigger but no rule defines it"
        assert by_name[name]["labels"]["failover_trigger"] == "true", name
