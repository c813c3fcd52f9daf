"""WSGI entry point for gunicorn: `gunicorn 'responder.wsgi:app_from_env()'`.

Reads the config path from RESPONDER_CONFIG, builds the real dependencies and starts the
background runner in this (worker) process.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid

from flask import Flask
from prometheus_client import CollectorRegistry

from .app import create_app
from .clock import SystemClock
from .config import (
    ConfigError,
    check_driver_files,
    load_config,
    load_secrets,
    permission_warnings,
)
from .drivers import build_nodes
from .logs import setup_logging
from .runner import Runner
from .sqlite_store import SqliteStore

log = logging.getLogger("responder.wsgi")


def app_from_env() -> Flask:
    path = os.environ.get("RESPONDER_CONFIG")
    if not path:
        sys.exit("RESPONDER_CONFIG must name the config file")
    try:
        config = load_config(path)
        secrets = load_secrets(config)
        problems = check_driver_files(config)
        if problems:
            raise ConfigError(problems)
    except ConfigError as exc:
        sys.exit(f"invalid config {path}:\n{exc}")
    setup_logging(config.log_level)
    for warning in permission_warnings(config):
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
    log.info("worker started", extra={"event": "start"})
    return app
