"""alerting/: the example Alertmanager and Prometheus configs, checked and exercised with the real tools."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
ALERTING = ROOT / "alerting"
AM_CONFIG = ALERTING / "alertmanager.yml"
PROM_CONFIG = ALERTING / "prometheus.yml"
RESPONDER_URL = "http://127.0.0.1:9095/webhook"
OPERATORS_URL = "http://127.0.0.1:5001/alerts"


def binary(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.fail(
        f"{' / '.join(names)} not found on PATH: run `make test`, which installs the Debian "
        "packages `prometheus` and `prometheus-alertmanager` (scripts/system-packages.sh)",
        pytrace=False,
    )


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"{' '.join(proc.args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rules() -> list[dict[str, Any]]:
    found = []
    for path in sorted((ROOT / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            found += [r for r in group["rules"] if "alert" in r]
    return found


# --------------------------------------------------------------------------- static checks


def test_amtool_check_config() -> None:
    """`amtool check-config` accepts alerting/alertmanager.yml (the token file need not exist)."""
    proc = run([binary("amtool"), "check-config", str(AM_CONFIG.relative_to(ROOT))])
    assert proc.returncode == 0, explain(proc)
    assert "SUCCESS" in proc.stdout, explain(proc)


def test_promtool_check_config() -> None:
    """`promtool check config` accepts alerting/prometheus.yml and finds all five rule files in ../rules."""
    proc = run([binary("promtool"), "check", "config", str(PROM_CONFIG.relative_to(ROOT))])
    assert proc.returncode == 0, explain(proc)
    assert "SUCCESS: 5 rule files found" in proc.stdout, explain(proc)


def test_responder_receiver_settings() -> None:
    """The responder receiver sends resolutions, never truncates, and authenticates with a Bearer token file."""
    config = yaml.safe_load(AM_CONFIG.read_text())
    (receiver,) = [r for r in config["receivers"] if r["name"] == "responder"]
    (hook,) = receiver["webhook_configs"]
    assert hook["url"] == RESPONDER_URL
    assert hook["send_resolved"] is True
    assert hook["max_alerts"] == 0
    auth = hook["http_config"]["authorization"]
    assert auth.get("type", "Bearer") == "Bearer"
    assert auth["credentials_file"] and "credentials" not in auth
    (route,) = [r for r in config["route"]["routes"] if r["receiver"] == "responder"]
    assert route["group_by"] == ["pair", "alertname"]
    assert route["continue"] is True


ROUTE_CASES = [
    pytest.param(
        {"alertname": r["alert"], "pair": "mainnet-a", "node": "node-a", **r["labels"]},
        "responder,operators" if r["labels"]["failover_trigger"] == "true" else "operators",
        id=f"rule-{r['alert']}",
    )
    for r in rules()
] + [
    pytest.param(
        {
            "alertname": "ValidatorClientDown",
            "pair": "p",
            "node": "n",
            "severity": "critical",
            "failover_trigger": "true",
        },
        "responder,operators",
        id="trigger-reaches-responder-and-people",
    ),
    pytest.param(
        {
            "alertname": "BeaconNodePeersLow",
            "pair": "p",
            "node": "n",
            "severity": "warning",
            "failover_trigger": "false",
        },
        "operators",
        id="warning-reaches-people-only",
    ),
    pytest.param(
        {
            "alertname": "ExecutionClientDown",
            "pair": "p",
            "node": "n",
            "severity": "critical",
            "failover_trigger": "false",
        },
        "operators",
        id="critical-non-trigger-reaches-people-only",
    ),
    pytest.param(
        {"alertname": "ValidatorClientDown", "pair": "p", "node": "n", "severity": "critical"},
        "operators",
        id="unlabelled-alert-is-not-a-trigger",
    ),
    pytest.param(
        {
            "alertname": "ResponderSplitBrain",
            "pair": "p",
            "node": "monitor",
            "severity": "critical",
            "component": "responder",
            "failover_trigger": "false",
        },
        "operators",
        id="responder-readiness-alert-reaches-people-only",
    ),
    pytest.param(
        {  # absent() gives it only job: no pair or node to group or route on
            "alertname": "ResponderNotScraped",
            "job": "responder",
            "severity": "warning",
            "component": "responder",
            "failover_trigger": "false",
        },
        "operators",
        id="responder-not-scraped-without-pair-reaches-people-only",
    ),
]


@pytest.mark.parametrize(("labels", "receivers"), ROUTE_CASES)
def test_amtool_routes(labels: dict[str, str], receivers: str) -> None:
    """`amtool config routes test` sends failover triggers to the responder and people, the rest to people."""
    argv = [
        binary("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={AM_CONFIG.relative_to(ROOT)}",
        f"--verify.receivers={receivers}",
        *(f"{k}={v}" for k, v in labels.items()),
    ]
    proc = run(argv)
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout.strip() == receivers, explain(proc)


def test_inhibition_never_targets_a_trigger() -> None:
    """No inhibit rule can mute a failover trigger (inhibition silences the responder's receiver too)."""
    config = yaml.safe_load(AM_CONFIG.read_text())
    triggers = {r["alert"] for r in rules() if r["labels"]["failover_trigger"] == "true"}
    for inhibit in config.get("inhibit_rules", []):
        for matcher in inhibit["target_matchers"]:
            assert "failover_trigger" not in matcher, matcher
            for name in triggers:
                assert name not in matcher, (name, matcher)


# ------------------------------------------------------------------ real Alertmanager


class Capture:
    """A loopback HTTP server that records every POST (path, headers, JSON body)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        captured = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                captured.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def capture() -> Iterator[Capture]:
    server = Capture()
    yield server
    server.close()


def start(argv: list[str], cwd: Path, ready_url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{argv[0]} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(ready_url, timeout=0.5).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.1)
    stop(proc)
    pytest.fail(f"{argv[0]} did not become ready:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def test_real_alertmanager_delivers_trigger_with_bearer_token(
    tmp_path: Path, capture: Capture
) -> None:
    """A real Alertmanager on this config posts a trigger, not a warning, to the responder with the token file's Bearer."""
    text = AM_CONFIG.read_text()
    assert RESPONDER_URL in text and OPERATORS_URL in text
    text = text.replace(RESPONDER_URL, f"http://127.0.0.1:{capture.port}/responder")
    text = text.replace(OPERATORS_URL, f"http://127.0.0.1:{capture.port}/operators")
    (tmp_path / "alerting").mkdir()
    (tmp_path / "alerting" / "alertmanager.yml").write_text(text)
    # the same layout as the repository, so the relative credentials_file resolves; a trailing
    # newline as `print()` writes it (examples/secrets/README.md)
    secrets = tmp_path / "examples" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "webhook-token").write_text("test-webhook-token\n")

    port = free_port()
    am = start(
        [
            binary("prometheus-alertmanager", "alertmanager"),
            "--config.file=alerting/alertmanager.yml",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        cwd=tmp_path,
        ready_url=f"http://127.0.0.1:{port}/-/ready",
        log=tmp_path / "alertmanager.log",
    )
    try:
        common = {"pair": "mainnet-a", "node": "node-a"}
        alerts = [
            {
                "labels": {
                    "alertname": "ValidatorClientDown",
                    "severity": "critical",
                    "failover_trigger": "true",
                    **common,
                }
            },
            {
                "labels": {
                    "alertname": "BeaconNodePeersLow",
                    "severity": "warning",
                    "failover_trigger": "false",
                    **common,
                }
            },
        ]
        resp = requests.post(f"http://127.0.0.1:{port}/api/v2/alerts", json=alerts, timeout=5)
        assert resp.status_code == 200, resp.text
        deadline = time.monotonic() + 20  # group_wait is 5 s
        while time.monotonic() < deadline and not any(
            p == "/responder" for p, _, _ in capture.requests
        ):
            time.sleep(0.1)
        time.sleep(1.0)  # anything else that was coming
    finally:
        stop(am)

    log = (tmp_path / "alertmanager.log").read_text()
    to_responder = [(h, b) for p, h, b in capture.requests if p == "/responder"]
    assert len(to_responder) == 1, (capture.requests, log[-3000:])
    headers, body = to_responder[0]
    assert headers["Authorization"] == "Bearer test-webhook-token"
    assert body["receiver"] == "responder"
    assert body["groupLabels"] == {"alertname": "ValidatorClientDown", "pair": "mainnet-a"}
    assert [a["labels"]["alertname"] for a in body["alerts"]] == ["ValidatorClientDown"]
    assert body["truncatedAlerts"] == 0


# --------------------------------------------------------------------- real Prometheus


def test_real_prometheus_loads_rules_and_labels_every_target(tmp_path: Path) -> None:
    """A real Prometheus on the example config loads every rule and gives every target `node` and `pair`."""
    for path in (ROOT / "rules").glob("*.yml"):
        (tmp_path / "rules").mkdir(exist_ok=True)
        shutil.copy(path, tmp_path / "rules" / path.name)
    config = yaml.safe_load(PROM_CONFIG.read_text())
    assert config["rule_files"] == ["../rules/*.yml"]
    config["alerting"] = {"alertmanagers": []}  # alert nobody while testing
    validator = next(job for job in config["scrape_configs"] if job["job_name"] == "validator")
    # a target with no labels at all: the shared relabelling must still give it node and pair
    config["scrape_configs"].append(
        {
            "job_name": "unlabelled",
            "static_configs": [{"targets": ["127.0.0.1:1"]}],
            "relabel_configs": validator["relabel_configs"],
        }
    )
    (tmp_path / "alerting").mkdir()
    (tmp_path / "alerting" / "prometheus.yml").write_text(yaml.safe_dump(config))

    port = free_port()
    prom = start(
        [
            binary("prometheus"),
            "--config.file=alerting/prometheus.yml",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        cwd=tmp_path,
        ready_url=f"http://127.0.0.1:{port}/-/ready",
        log=tmp_path / "prometheus.log",
    )
    try:
        api = f"http://127.0.0.1:{port}/api/v1"
        expected = sum(
            len(sc["targets"]) for job in config["scrape_configs"] for sc in job["static_configs"]
        )
        deadline = time.monotonic() + 30  # target discovery is applied a few seconds after start
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline and len(targets) < expected:
            time.sleep(0.5)
            targets = requests.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
        groups = requests.get(f"{api}/rules", params={"type": "alert"}, timeout=5).json()["data"][
            "groups"
        ]
    finally:
        stop(prom)

    labels = {(t["labels"]["job"], t["labels"]["instance"]): t["labels"] for t in targets}
    assert len(labels) == expected, sorted(labels)
    for key, target in labels.items():
        assert target.get("node") and target.get("pair"), (key, target)
    assert {k: labels[("validator", "10.0.0.1:5064")][k] for k in ("node", "pair")} == {
        "node": "node-a",
        "pair": "mainnet-a",
    }
    assert {k: labels[("validator", "10.0.0.2:5064")][k] for k in ("node", "pair")} == {
        "node": "node-b",
        "pair": "mainnet-a",
    }
    assert {k: labels[("unlabelled", "127.0.0.1:1")][k] for k in ("node", "pair")} == {
        "node": "127.0.0.1",
        "pair": "unassigned",
    }

    loaded = sorted(r["name"] for g in groups for r in g["rules"])
    assert loaded == sorted(r["alert"] for r in rules())
