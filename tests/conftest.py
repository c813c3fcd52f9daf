"""Shared fixtures: a real SQLite store in tmp_path, a manual clock, fake nodes over HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry
from pytest_httpserver import HTTPServer

from responder.app import create_app
from responder.clock import ManualClock
from responder.config import Config, load_config, load_secrets
from responder.drivers import NodeHandle, build_nodes
from responder.service import Responder
from responder.store import Store
from responder.store.sqlite import SqliteStore
from tests.fakenode import FakeNode
from tests.serverproc import ServerProcess, free_port
from tests.tokens import NODE_TOKEN, OPERATOR_TOKEN, WEBHOOK_TOKEN

__all__ = ["NODE_TOKEN", "OPERATOR_TOKEN", "WEBHOOK_TOKEN"]

FIXTURES = Path(__file__).parent / "fixtures" / "alertmanager-0.25"


def fixture_delivery(name: str) -> dict[str, Any]:
    """A captured Alertmanager 0.25 delivery: {'path', 'headers', 'body'}."""
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def base_config(node_url: Callable[[str], str], **overrides: Any) -> dict[str, Any]:
    """The README example config, pointed at fake nodes."""
    policy = {
        "triggers": ["ValidatorClientDown", "BeaconNodeStalled"],
        "hold": "20s",
        "quorum": 1,
        "cooldown": "1h",
        "max_failovers": 1,
        "max_failovers_window": "24h",
    } | overrides.pop("policy", {})
    nodes = overrides.pop(
        "nodes",
        [
            {
                "name": name,
                "match": {"node": name},
                "driver": {
                    "type": "http",
                    "url": node_url(name),
                    "token_file": "./secrets/node-token",
                    "timeout": "2s",
                },
            }
            for name in ("node-a", "node-b")
        ],
    )
    pair = {"name": "mainnet-a", "nodes": nodes, "policy": policy} | overrides.pop("pair", {})
    return {
        "listen": "127.0.0.1:9095",
        "dry_run": False,
        "state_dir": "./var",
        "auth": {
            "webhook_token_file": "./secrets/webhook-token",
            "operator_token_file": "./secrets/operator-token",
        },
        "pairs": [pair],
    } | overrides


def write_config(directory: Path, data: dict[str, Any]) -> Path:
    secrets = directory / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    for name, value in (
        ("webhook-token", WEBHOOK_TOKEN),
        ("operator-token", OPERATOR_TOKEN),
        ("node-token", NODE_TOKEN),
    ):
        (secrets / name).write_text(value + "\n")
        (secrets / name).chmod(0o600)
    path = directory / "responder.yml"
    path.write_text(yaml.safe_dump(data))
    return path


class Harness:
    """The real app and service on a real store, driven by a manual clock."""

    def __init__(
        self,
        config: Config,
        clock: ManualClock,
        owner: str = "local",
        *,
        store: Store | None = None,
        wrap_nodes: Callable[[dict[tuple[str, str], NodeHandle]], dict[tuple[str, str], NodeHandle]]
        | None = None,
    ) -> None:
        """On `store` (default: SQLite in config.db_path); `wrap_nodes` wraps the node handles
        (e.g. guard_nodes for a replica on etcd)."""
        self.config = config
        self.clock = clock
        self.store: Store = store if store is not None else SqliteStore(config.db_path)
        self.registry = CollectorRegistry()
        nodes = build_nodes(config)
        self.app: Flask = create_app(
            config,
            store=self.store,
            nodes=wrap_nodes(nodes) if wrap_nodes is not None else nodes,
            registry=self.registry,
            clock=clock,
            secrets=load_secrets(config),
            owner=owner,
        )
        self.client: FlaskClient = self.app.test_client()
        self.responder: Responder = self.app.extensions["responder"]

    def post_alert(self, body: dict[str, Any], token: str | None = WEBHOOK_TOKEN) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.post("/webhook", json=body, headers=headers)

    def op(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        return self.client.open(path, method=method, headers=headers, **kw)

    def pair(self, name: str = "mainnet-a") -> dict[str, Any]:
        for p in self.responder.status():
            if p["name"] == name:
                return p
        raise KeyError(name)

    def roles(self, name: str = "mainnet-a") -> dict[str, str]:
        return {n["name"]: n["role"] for n in self.pair(name)["nodes"]}

    def events(self, pair: str = "mainnet-a") -> list[dict[str, Any]]:
        return [e.to_json() for e in self.store.list_events(pair=pair, limit=1000)]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_harness(
    tmp_path: Path, clock: ManualClock, httpserver: HTTPServer
) -> Iterator[Callable[..., Harness]]:
    """Build a Harness whose nodes live under one fake server at /<node-name>/..."""
    made: list[Harness] = []

    def make(**overrides: Any) -> Harness:
        data = base_config(lambda n: httpserver.url_for(f"/{n}"), **overrides)
        config = load_config(write_config(tmp_path, data))
        harness = Harness(config, clock)
        made.append(harness)
        return harness

    yield make
    for h in made:
        h.store.close()


def alert(
    alertname: str = "ValidatorClientDown",
    node: str = "node-a",
    *,
    status: str = "firing",
    fingerprint: str | None = None,
    starts_at: str = "2026-11-25T18:28:07.908132859Z",
    pair: str = "mainnet-a",
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": alertname, "node": node, "pair": pair, "severity": "critical"},
        "annotations": {"summary": f"{alertname} on {node}"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-25T18:40:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint or f"fp-{alertname}-{node}",
    }


def notification(*alerts: dict[str, Any], truncated: int = 0) -> dict[str, Any]:
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "receiver": "responder",
        "status": "firing" if firing else "resolved",
        "alerts": list(alerts),
        "groupLabels": {"pair": "mainnet-a"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": '{}:{pair="mainnet-a"}',
        "truncatedAlerts": truncated,
    }


@pytest.fixture
def nodes() -> Iterator[dict[str, FakeNode]]:
    pair = {
        "node-a": FakeNode("node-a", signing=True, token=NODE_TOKEN).start(),
        "node-b": FakeNode("node-b", signing=False, token=NODE_TOKEN).start(),
    }
    yield pair
    for node in pair.values():
        node.stop()


@pytest.fixture
def server(tmp_path: Path, nodes: dict[str, FakeNode]) -> Iterator[ServerProcess]:
    data = base_config(
        lambda n: nodes[n].url, policy={"hold": "1s"}, failover_lease="2s", poll_interval="0.2s"
    )
    path = write_config(tmp_path, data)
    proc = ServerProcess(path, free_port(), tmp_path / "responder.log").start()
    yield proc
    proc.stop()
