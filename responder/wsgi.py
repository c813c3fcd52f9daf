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

from flask import Flask
from prometheus_client import CollectorRegistry

from .app import create_app
from .clock import SystemClock
from .config import Config, check_config_file, load_secrets
from .drivers import build_nodes
from .logs import setup_logging
from .runner import Runner
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
    store = SqliteStore(config.db_path)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    runner_box: list[Runner] = []
    app = create_app(
        config,
        store=store,
        nodes=build_nodes(config),
        registry=CollectorRegistry(),
        clock=SystemClock(),
        secrets=secrets,
        owner=owner,
        on_recorded=lambda: runner_box[0].wake() if runner_box else None,
    )
    runner = Runner(
        app.extensions["responder"], poll_interval=config.poll_interval, lease=config.failover_lease
    )
    runner_box.append(runner)
    runner.start()
    _settle_heap()
    log.info("worker %d started", os.getpid(), extra={"event": "start"})
    return app


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
    return (
        f"responder listening on http://{bind} with {workers} workers; pairs: {pairs}; "
        f"dry-run: {dry}; state: sqlite {config.db_path}; auth: {auth}"
    )
