"""WSGI entry point for gunicorn: `gunicorn 'responder.wsgi:app_from_env()'`.

Reads the config path from RESPONDER_CONFIG, builds the real dependencies and starts the
background runner in this (worker) process.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
import uuid
from typing import Any

from flask import Flask
from prometheus_client import CollectorRegistry

from .app import create_app
from .clock import SystemClock
from .config import Config, check_config_file, load_secrets
from .drivers import build_nodes, guard_nodes
from .leadership import EtcdLeadership, Leadership, SoleReplica
from .logs import setup_logging
from .runner import Runner
from .store import Store
from .store.etcd import EtcdStore
from .store.sqlite import SqliteStore

log = logging.getLogger("responder.wsgi")

GC_THRESHOLD = 10_000  # young objects before a collection (Python's default: 700)


def _settle_heap() -> None:
    """Move everything built at start-up out of the garbage collector's sight.

    A big delivery allocates thousands of dicts, each allocation counts towards a collection,
    and every full collection walks every live object: the config, the app, the imported
    modules. Frozen, those are never walked again (they live as long as the worker anyway),
    and a higher first threshold collects the young objects of a delivery in fewer, larger
    passes. Cycles are still collected; only how often and over what changes.
    """
    gc.freeze()  # without a full collection first: with 1,000 pairs that delays start-up
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


def app_from_env() -> Flask:
    path = os.environ.get("RESPONDER_CONFIG")
    if not path:
        sys.exit("RESPONDER_CONFIG must name the config file")
    checked = check_config_file(path)
    config = checked.config
    if checked.problems or config is None:
        sys.exit(f"invalid config {path}:\n" + "\n".join(checked.problems))
    secrets = load_secrets(config)
    setup_logging(config.log_level)
    for warning in checked.warnings:
        log.warning(warning)
    if secrets.webhook is None:
        log.warning(
            "auth: none - the webhook and the control API accept unauthenticated requests; "
            "use this only in a lab"
        )
    store, nodes, leadership = _state(config)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    runner_box: list[Runner] = []
    app = create_app(
        config,
        store=store,
        nodes=nodes,
        leadership=leadership,
        registry=CollectorRegistry(),
        clock=SystemClock(),
        secrets=secrets,
        owner=owner,
        on_recorded=lambda: runner_box[0].wake() if runner_box else None,
    )
    runner = Runner(
        app.extensions["responder"],
        poll_interval=config.poll_interval,
        lease=config.failover_lease,
        leadership=leadership,
    )
    runner_box.append(runner)
    leadership.start()
    runner.start()
    _settle_heap()
    log.info("worker %d started", os.getpid(), extra={"event": "start"})
    return app


def replica_name(config: Config) -> str:
    """state.replica, else this host and the port it serves: unique per `responder serve`."""
    if config.state.replica:
        return config.state.replica
    bind = os.environ.get("RESPONDER_BIND", config.listen)
    return f"{socket.gethostname()}:{bind.rpartition(':')[2]}"


def _state(config: Config) -> tuple[Store, dict[tuple[str, str], Any], Leadership]:
    """The store, the node handles and who acts, for the configured backend."""
    nodes = build_nodes(config)
    if config.state.backend == "etcd":
        triggers = {t for pair in config.pairs for t in pair.policy.triggers}
        etcd = EtcdStore(config.state, replica_name(config), config.state_dir, triggers=triggers)
        leadership = EtcdLeadership(etcd, etcd.lockfile.with_suffix(".campaign"))
        return etcd, guard_nodes(config, nodes, etcd), leadership
    return SqliteStore(config.db_path), nodes, SoleReplica()


def startup_summary(config: Config, bind: str, workers: int) -> str:
    """The one line an operator reads first: where it listens, what it guards, how it acts."""
    pairs = "; ".join(
        f"{p.name} ({', '.join(n.name for n in p.nodes)})"
        + (" [dry-run]" if config.pair_dry_run(p) else "")
        for p in config.pairs
    )
    dry = (
        "on for every pair"
        if config.dry_run
        else (
            "on for " + ", ".join(p.name for p in config.pairs if p.dry_run)
            if any(p.dry_run for p in config.pairs)
            else "off"
        )
    )
    auth = "none (unauthenticated, lab only)" if config.auth == "none" else "bearer tokens"
    state = (
        f"etcd {', '.join(config.state.endpoints)} prefix {config.state.prefix} as replica "
        f"{replica_name(config)} (lease {config.state.lease_ttl:g}s)"
        if config.state.backend == "etcd"
        else f"sqlite {config.db_path}"
    )
    return (
        f"responder listening on http://{bind} with {workers} workers; pairs: {pairs}; "
        f"dry-run: {dry}; state: {state}; auth: {auth}"
    )
