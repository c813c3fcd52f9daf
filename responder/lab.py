"""A complete loop on loopback: simulated nodes, real Prometheus and Alertmanager, the responder.

Used by the end-to-end tests and by `make demo`. Every process listens on a free 127.0.0.1
port, lives in its own process group, and is stopped by `Lab.stop()` (or the context manager).
The shipped rules are loaded with their `for:` shortened to `rule_for`, so a run takes seconds
rather than minutes; everything else (expressions, labels, routing) is as shipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
import yaml

from .sim.cosmos import double_signed
from .sim.solana import double_votes, read_keypair, vote_account_of, write_keypair

REPO = Path(__file__).resolve().parents[1]
PAIR = "mainnet-a"
NODES = ("node-a", "node-b")


class LabError(RuntimeError):
    """A component failed to start or the loop did not reach an expected state."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def find_binary(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise LabError(
        f"{' or '.join(names)} not found: run `make test` or `make demo`, which install it"
    )


@dataclass
class Proc:
    """One child process in its own process group, with its output in a log file."""

    name: str
    argv: list[str]
    log: Path
    ready_url: str
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None
    ready_headers: dict[str, str] | None = None

    def start(self, timeout: float = 30.0) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=self.env,
            )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.popen.poll() is not None:
                raise LabError(f"{self.name} exited {self.popen.returncode}:\n{self.tail()}")
            try:
                ready = requests.get(self.ready_url, headers=self.ready_headers, timeout=1)
                if ready.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise LabError(f"{self.name} not ready after {timeout:g}s:\n{self.tail()}")

    def stop_hard(self) -> None:
        """SIGKILL the whole process group: a crash, not a shutdown."""
        self.stop(signal.SIGKILL)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Stop the whole process group and wait until no member is left."""
        if self.popen is None:
            return
        pgid = self.popen.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.popen.wait(5)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def fast_rules(source: Path, target: Path, rule_for: str) -> None:
    """Copy a rules file with every `for:` set to rule_for (keep_firing_for dropped)."""
    doc = yaml.safe_load(source.read_text())
    for group in doc["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = rule_for
            rule.pop("keep_firing_for", None)
    target.write_text(yaml.safe_dump(doc, sort_keys=False))


def parse_time(value: str) -> float:
    """RFC 3339 with up to nanoseconds, as epoch seconds."""
    head, _, frac = value.rstrip("Z").partition(".")
    base = datetime.fromisoformat(head + "+00:00").timestamp()
    return base + (float("0." + frac[:6]) if frac else 0.0)


@dataclass(frozen=True)
class Handover:
    """The primary's last vote or signature, the standby's first and last, and how many
    slots or heights both signed (must be 0)."""

    unit: str
    primary_last: int | None
    standby_first: int | None
    standby_last: int | None
    both: int

    @property
    def clean(self) -> bool:
        return (
            self.both == 0
            and self.primary_last is not None
            and self.standby_first is not None
            and self.standby_first > self.primary_last
        )

    def render(self) -> str:
        return (
            f"node-a last signed at {self.unit} {self.primary_last}; node-b first signed at "
            f"{self.unit} {self.standby_first} (now {self.standby_last}); "
            f"{self.unit}s signed by both: {self.both}"
        )


@dataclass
class Timeline:
    """Where the time from fault injection to activation went."""

    injected: float
    prometheus_fired: float
    responder_received: float
    failover_planned: float
    fence_started: float
    fenced: float
    activation_started: float
    active: float

    def stages(self) -> list[tuple[str, float]]:
        return [
            ("detection by Prometheus (scrape, rule, for:)", self.prometheus_fired - self.injected),
            ("Alertmanager delivery (group_wait)", self.responder_received - self.prometheus_fired),
            ("responder hold", self.failover_planned - self.responder_received),
            ("probe of the standby", self.fence_started - self.failover_planned),
            ("fence of the primary", self.fenced - self.fence_started),
            ("activation of the standby", self.active - self.activation_started),
        ]

    @property
    def total(self) -> float:
        return self.active - self.injected

    def render(self) -> str:
        lines = [f"  {name:<48} {secs:7.2f} s" for name, secs in self.stages()]
        lines.append(f"  {'fault injection -> standby active':<48} {self.total:7.2f} s")
        return "\n".join(lines)


@dataclass
class LabSettings:
    chain: str = "ethereum"  # ethereum | solana | cosmos (these two through responder-agent)
    dry_run: bool = False
    rule_for: str = "3s"
    hold: str = "3s"
    scrape_interval: str = "1s"
    group_wait: str = "1s"
    group_interval: str = "2s"
    slot_seconds: float = 1.0
    workers: int = 2
    rules: tuple[str, ...] = ("ethereum.yml", "node.yml")
    ethereum: bool = False  # keymanager driver and simulated keys instead of the http agent
    slots_per_epoch: int = 4
    failover_lease: str = "5s"
    block_seconds: float = 0.5  # solana slots and cometbft heights
    readiness_interval: str | None = None  # the pair's readiness.interval; None: the default

    @property
    def rule_files(self) -> tuple[str, ...]:
        return self.rules if self.chain == "ethereum" else (f"{self.chain}.yml",)


GENESIS_ROOT = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"
COSMOS_VALIDATOR = "C0FFEE00" * 5
COSMOS_CHAIN_ID = "lab-1"
DEMO_FAULT = {"solana": "stalled", "cosmos": "crash"}  # a fault the shipped triggers catch
TRIGGERS = {
    "ethereum": ("ValidatorClientDown", "BeaconNodeStalled"),
    "solana": ("SolanaNodeUnhealthy", "SolanaNodeDown"),
    "cosmos": ("CometBFTNodeDown", "CometBFTValidatorNotSigning"),
}
PUBKEYS = ("0x" + "a1" * 48, "0x" + "b2" * 48)


@dataclass
class Lab:
    settings: LabSettings = field(default_factory=LabSettings)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="responder-lab-")))
    keep_workdir: bool = False
    procs: list[Proc] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    operator_token: str = ""
    webhook_token: str = ""
    node_token: str = ""
    identity: str = ""  # solana: the staked identity's pubkey

    # ---- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self) -> None:
        prometheus = find_binary("prometheus")
        alertmanager = find_binary("prometheus-alertmanager", "alertmanager")
        for name in (*NODES, "prometheus", "alertmanager", "responder"):
            self.ports[name] = free_port()
        self._write_secrets()
        if self.settings.chain == "ethereum":
            self._start_ethereum_nodes()
        else:
            self._start_agent_nodes()
        self._write_responder_config()
        self._start(
            "responder",
            [
                sys.executable,
                "-m",
                "responder",
                "serve",
                "--config",
                str(self.workdir / "responder.yml"),
                "--workers",
                str(self.settings.workers),
            ],
            self.url("responder") + "/healthz",
        )
        self._write_alertmanager_config()
        self._start(
            "alertmanager",
            [
                alertmanager,
                f"--config.file={self.workdir / 'alertmanager.yml'}",
                f"--storage.path={self.workdir / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{self.ports['alertmanager']}",
                "--cluster.listen-address=",  # no gossip port: a single, loopback-only instance
            ],
            self.url("alertmanager") + "/-/ready",
        )
        self._write_prometheus_config()
        self._start(
            "prometheus",
            [
                prometheus,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{self.ports['prometheus']}",
            ],
            self.url("prometheus") + "/-/ready",
        )

    def _start_ethereum_nodes(self) -> None:
        for i, node in enumerate(NODES):
            argv = [
                sys.executable, "-m", "responder.sim", "--name", node, "--pair", PAIR,
                "--listen", f"127.0.0.1:{self.ports[node]}",
                "--token-file", str(self.workdir / "secrets" / "node-token"),
                "--slot-seconds", str(self.settings.slot_seconds),
            ] + (["--signing"] if i == 0 else [])  # fmt: skip
            if self.settings.ethereum:
                argv += [
                    "--keymanager", "local",
                    "--genesis-validators-root", GENESIS_ROOT,
                    "--pubkeys", ",".join(PUBKEYS),
                    "--slots-per-epoch", str(self.settings.slots_per_epoch),
                ]  # fmt: skip
            self._start(node, argv, self.url(node) + "/sim/state")

    def _start_agent_nodes(self) -> None:
        """Two simulated Solana or CometBFT nodes sharing one cluster record, each with a
        responder-agent next to it that runs the chain's fake CLI against it."""
        s = self.settings
        cluster = self.workdir / "cluster"
        keys = self.workdir / "keys"
        for directory in (cluster, keys):
            directory.mkdir(parents=True, exist_ok=True)
        genesis = int(time.time()) - 2
        staked = keys / "staked.json"
        if s.chain == "solana":
            self.identity = write_keypair(staked)
        for i, node in enumerate(NODES):
            self.ports[f"agent-{node}"] = free_port()
            home = self.workdir / f"{node}-home"
            home.mkdir(exist_ok=True)
            common = [
                sys.executable, "-m", "responder.sim", s.chain, "--name", node,
                "--listen", f"127.0.0.1:{self.ports[node]}", "--cluster-dir", str(cluster),
                "--genesis-time", str(genesis), "--hang-seconds", "2",
            ]  # fmt: skip
            section: dict[str, Any]
            if s.chain == "solana":
                unstaked = keys / f"unstaked-{node}.json"
                write_keypair(unstaked)
                argv = [
                    *common, "--ledger", str(home), "--staked-keypair", str(staked),
                    "--unstaked-keypair", str(unstaked), "--slot-seconds", str(s.block_seconds),
                    "--health-slot-distance", "4",
                ] + (["--active"] if i == 0 else [])  # fmt: skip
                section = {
                    "ledger": str(home),
                    "validator": [sys.executable, "-m", "responder.sim.agave"],
                    "rpc_url": self.url(node),
                    "staked_identity": str(staked),
                    "unstaked_identity": str(unstaked),
                    "vote_account": vote_account_of(read_keypair(staked)),
                    "wait_for_restart_window": False,
                    "verify_timeout": "10s",
                }
            else:
                argv = [
                    *common, "--home", str(home), "--validator-address", COSMOS_VALIDATOR,
                    "--chain-id", COSMOS_CHAIN_ID, "--block-seconds", str(s.block_seconds),
                    "--double-sign-check-height", "2",
                ] + (["--signing"] if i == 0 else [])  # fmt: skip
                ctl = [sys.executable, "-m", "responder.sim.cometctl", "--home", str(home)]
                section = {
                    "home": str(home),
                    "stop": [*ctl, "stop"],
                    "start": [*ctl, "start"],
                    "is_running": [*ctl, "is-active"],
                    "rpc_url": self.url(node),
                    "validator_address": COSMOS_VALIDATOR,
                    "rpc_timeout": "2s",
                    "verify_timeout": "20s",
                }
            self._start(node, argv, self.url(node) + "/sim/state")
            agent = {
                "listen": f"127.0.0.1:{self.ports[f'agent-{node}']}",
                "token_file": str(self.workdir / "secrets" / "node-token"),
                "chain": s.chain,
                s.chain: section,
            }
            path = self.workdir / f"agent-{node}.yml"
            path.write_text(yaml.safe_dump(agent, sort_keys=False))
            self._start(
                f"agent-{node}",
                [sys.executable, "-m", "responder.agent", "--config", str(path)],
                self.url(f"agent-{node}") + "/status",
                ready_headers={"Authorization": f"Bearer {self.node_token}"},
            )

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _start(
        self,
        name: str,
        argv: list[str],
        ready: str,
        env: dict[str, str] | None = None,
        ready_headers: dict[str, str] | None = None,
    ) -> None:
        log = self.workdir / f"{name}.log"
        proc = Proc(name, argv, log, ready, env, ready_headers=ready_headers)
        self.procs.append(proc)
        proc.start()

    def restart(self, name: str) -> None:
        """Start a stopped component again with the same command line, ports and state."""
        proc = self.proc(name)
        proc.start()

    def proc(self, name: str) -> Proc:
        for proc in self.procs:
            if proc.name == name:
                return proc
        raise KeyError(name)

    # ---- generated configs ----------------------------------------------------------------

    def _write_secrets(self) -> None:
        directory = self.workdir / "secrets"
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("webhook", "operator", "node"):
            token = secrets.token_urlsafe(24)
            setattr(self, f"{name}_token", token)
            path = directory / f"{name}-token"
            path.write_text(token + "\n")
            path.chmod(0o600)

    def _write_responder_config(self) -> None:
        config = {
            "listen": f"127.0.0.1:{self.ports['responder']}",
            "dry_run": self.settings.dry_run,
            "state_dir": "./state",
            "poll_interval": "0.2s",
            "failover_lease": self.settings.failover_lease,
            "auth": {
                "webhook_token_file": "./secrets/webhook-token",
                "operator_token_file": "./secrets/operator-token",
            },
            "pairs": [
                {
                    "name": PAIR,
                    "nodes": [
                        {
                            "name": node,
                            "match": {"node": node},
                            "driver": self._driver(node),
                        }
                        for node in NODES
                    ],
                    **({"ethereum": self._ethereum_section()} if self.settings.ethereum else {}),
                    **(
                        {"readiness": {"interval": self.settings.readiness_interval}}
                        if self.settings.readiness_interval
                        else {}
                    ),
                    "policy": {
                        "triggers": list(TRIGGERS[self.settings.chain]),
                        "hold": self.settings.hold,
                        "quorum": 1,
                        "cooldown": "1h",
                        "max_failovers": 1,
                        "max_failovers_window": "24h",
                    },
                }
            ],
        }
        (self.workdir / "responder.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    def _driver(self, node: str) -> dict[str, Any]:
        if self.settings.chain != "ethereum":  # the node's agent, which hands over its state
            return {
                "type": "http",
                "url": self.url(f"agent-{node}"),
                "token_file": "./secrets/node-token",
                "timeout": "25s",
                "handoff": "required",
            }
        return {
            "type": "ethereum-keymanager" if self.settings.ethereum else "http",
            "url": self.url(node),
            "token_file": "./secrets/node-token",
            "timeout": "3s",
            # the simulated node serves its beacon API on the same port
            **({"beacon_url": self.url(node)} if self.settings.ethereum else {}),
        }

    def _ethereum_section(self) -> dict[str, Any]:
        """Keystore and password files for the simulated keys (the sim does not decrypt)."""
        keys = self.workdir / "keys"
        keys.mkdir(exist_ok=True)
        keystores = []
        for i, pubkey in enumerate(PUBKEYS):
            keystore = keys / f"keystore-{i}.json"
            keystore.write_text(
                json.dumps(
                    {
                        "version": 4,
                        "pubkey": pubkey[2:],
                        "path": f"m/12381/3600/{i}/0/0",
                        "crypto": {"kdf": {}, "checksum": {}, "cipher": {}},
                    }
                )
            )
            password = keys / f"password-{i}.txt"
            password.write_text(secrets.token_urlsafe(16) + "\n")
            for path in (keystore, password):
                path.chmod(0o600)
            keystores.append(
                {"pubkey": pubkey, "keystore_file": str(keystore), "password_file": str(password)}
            )
        return {
            "genesis_validators_root": GENESIS_ROOT,
            "pubkeys": list(PUBKEYS),
            "keystores": keystores,
        }

    def _write_alertmanager_config(self) -> None:
        s = self.settings
        config = {
            "route": {
                "receiver": "operators",
                "group_by": ["pair", "alertname"],
                "group_wait": "30s",
                "group_interval": "5m",
                "repeat_interval": "4h",
                "routes": [
                    {
                        "receiver": "responder",
                        "matchers": ['failover_trigger="true"'],
                        "group_by": ["pair", "alertname"],
                        "group_wait": s.group_wait,
                        "group_interval": s.group_interval,
                        "repeat_interval": "1h",
                    }
                ],
            },
            "receivers": [
                {
                    "name": "responder",
                    "webhook_configs": [
                        {
                            "url": self.url("responder") + "/webhook",
                            "send_resolved": True,
                            "max_alerts": 0,
                            "http_config": {
                                "authorization": {
                                    "type": "Bearer",
                                    "credentials_file": str(
                                        self.workdir / "secrets" / "webhook-token"
                                    ),
                                }
                            },
                        }
                    ],
                },
                {"name": "operators"},
            ],
        }
        (self.workdir / "alertmanager.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    def _write_prometheus_config(self) -> None:
        s = self.settings
        rules_dir = self.workdir / "rules"
        rules_dir.mkdir(exist_ok=True)
        for name in s.rule_files:
            fast_rules(REPO / "rules" / name, rules_dir / name, s.rule_for)

        def job(name: str, path: str) -> dict[str, Any]:
            return {
                "job_name": name,
                "metrics_path": path,
                "scrape_interval": s.scrape_interval,
                "scrape_timeout": s.scrape_interval,
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{self.ports[node]}"],
                        "labels": {"node": node, "pair": PAIR},
                    }
                    for node in NODES
                ],
            }

        config = {
            "global": {"scrape_interval": s.scrape_interval, "evaluation_interval": "1s"},
            "rule_files": [str(rules_dir / name) for name in s.rule_files],
            "alerting": {
                "alertmanagers": [
                    {"static_configs": [{"targets": [f"127.0.0.1:{self.ports['alertmanager']}"]}]}
                ]
            },
            "scrape_configs": [
                *(job(name, path) for name, path in self.jobs),
                {
                    # the responder's own /metrics (the dashboard, rules/responder.yml); its
                    # series carry their own `pair`, which honor_labels keeps
                    "job_name": "responder",
                    "honor_labels": True,
                    "scrape_interval": s.scrape_interval,
                    "scrape_timeout": s.scrape_interval,
                    "static_configs": [{"targets": [f"127.0.0.1:{self.ports['responder']}"]}],
                },
            ],
        }
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    @property
    def jobs(self) -> list[tuple[str, str]]:
        """Scrape jobs of the nodes, named as the shipped rules expect (validator*, beacon*,
        solana*, cometbft*); the responder's own job comes on top."""
        if self.settings.chain == "solana":
            return [("solana", "/metrics")]
        if self.settings.chain == "cosmos":
            return [("cometbft", "/metrics")]
        return [("validator", "/metrics"), ("beacon", "/beacon/metrics")]

    # ---- driving and observing ------------------------------------------------------------

    def inject(self, node: str, fault: str) -> float:
        """Turn a fault on in a simulated node; returns the wall-clock time it took effect."""
        resp = requests.post(self.url(node) + "/sim/faults", json={"fault": fault}, timeout=5)
        resp.raise_for_status()
        return time.time()

    def clear(self, node: str, fault: str | None = None) -> None:
        path = "/sim/faults" + (f"/{fault}" if fault else "")
        requests.delete(self.url(node) + path, timeout=5).raise_for_status()

    def sim(self, node: str) -> dict[str, Any]:
        resp = requests.get(self.url(node) + "/sim/state", timeout=5)
        resp.raise_for_status()
        state: dict[str, Any] = resp.json()
        return state

    def api(self, path: str) -> Any:
        resp = requests.get(
            self.url("responder") + path,
            headers={"Authorization": f"Bearer {self.operator_token}"},
            timeout=5,
        )
        resp.raise_for_status()
        return resp.json()

    def post(self, path: str, body: Any = None, timeout: float = 60.0) -> Any:
        resp = requests.post(
            self.url("responder") + path,
            headers={"Authorization": f"Bearer {self.operator_token}"},
            json=body,
            timeout=timeout,
        )
        resp.raise_for_status()
        return resp.json()

    def pair(self) -> dict[str, Any]:
        pair: dict[str, Any] = self.api("/api/v1/pairs")["pairs"][0]
        return pair

    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.api(f"/api/v1/events?pair={PAIR}&limit=1000")["events"]
        return events

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
        """Poll the running system until check() holds; LabError with the logs otherwise."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if check():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        logs = "\n".join(f"--- {p.name}\n{p.tail(1500)}" for p in self.procs)
        raise LabError(f"timed out after {timeout:g}s waiting for {what}\n{logs}")

    def wait_until_watching(self, timeout: float = 30.0) -> None:
        """Prometheus has scraped every target up (the nodes' and the responder's own), so a
        fault now is detected from a clean state."""

        def all_up() -> bool:
            resp = requests.get(
                self.url("prometheus") + "/api/v1/query", params={"query": "up"}, timeout=5
            )
            result = resp.json()["data"]["result"]
            every = len(self.jobs) * len(NODES) + 1  # + the responder job
            return len(result) == every and all(r["value"][1] == "1" for r in result)

        self.wait_for("Prometheus to see every target up", all_up, timeout)

    # ---- solana and cosmos: what each node voted or signed ---------------------------------

    def handover(self) -> Handover:
        """Where signing passed from node-a to node-b, from the nodes' own records."""
        cluster = self.workdir / "cluster"
        a, b = self.sim("node-a"), self.sim("node-b")
        if self.settings.chain == "solana":
            return Handover(
                unit="slot",
                primary_last=a["last_vote"],
                standby_first=b["first_vote"],
                standby_last=b["last_vote"],
                both=len(double_votes(cluster)),
            )
        signed_b = b["signed"]
        return Handover(
            unit="height",
            primary_last=a["last_signed_height"],
            standby_first=signed_b[0] if signed_b else None,
            standby_last=b["last_signed_height"],
            both=len(double_signed(cluster)),
        )

    def timeline(self, failover_id: str, injected: float) -> Timeline:
        failover = self.api(f"/api/v1/failovers/{failover_id}")
        journal = failover["journal"]

        def ts(step: str, phase: str = "begin") -> float:
            for entry in journal:
                if entry["step"] == step and entry["phase"] == phase:
                    return float(entry["ts"])
            raise LabError(f"journal of {failover_id} has no {step}/{phase}: {json.dumps(journal)}")

        signal_ = failover["data"]["signals"][0]
        return Timeline(
            injected=injected,
            prometheus_fired=parse_time(signal_["starts_at"]),
            responder_received=float(signal_["since"]),
            failover_planned=ts("planned", "note"),
            fence_started=ts("fencing"),
            fenced=ts("fenced"),
            activation_started=ts("activating"),
            active=ts("done"),
        )
