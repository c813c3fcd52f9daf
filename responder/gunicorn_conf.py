"""Gunicorn settings derived from the responder config (RESPONDER_CONFIG).

Use: gunicorn -c python:responder.gunicorn_conf 'responder.wsgi:app_from_env()'

The master validates the config here; the workers it forks inherit the result and do not
parse the file again unless it changed (config._reuse). Under `responder serve` this runs in
the process that already checked it, so the file is parsed once in all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any

from prometheus_client import multiprocess

from .config import ConfigError, load_config
from .logs import setup_logging
from .wsgi import startup_summary

if not os.environ.get("RESPONDER_CONFIG"):
    sys.exit("RESPONDER_CONFIG must name the responder config file")
try:
    _config = load_config(os.environ["RESPONDER_CONFIG"])
except ConfigError as exc:
    sys.exit(f"invalid config {os.environ['RESPONDER_CONFIG']}:\n{exc}")

bind = os.environ.get("RESPONDER_BIND", _config.listen)
workers = int(os.environ.get("RESPONDER_WORKERS", _config.workers))
# gthread that reads each request on its event loop before a thread serves it: slow clients
# cost a socket, not a thread, and are dropped after 5 s (head) / 10 s (body). See worker.py.
worker_class = "responder.worker.BufferingThreadWorker"
threads = 4
keepalive = 2  # seconds an idle connection waits for its next request (gunicorn's default)
timeout = 30
graceful_timeout = 10
accesslog = None
errorlog = "-"
loglevel = "warning"
preload_app = False


def post_fork(server: Any, worker: Any) -> None:
    """Give the worker the body limit it enforces while reading requests (see worker.py).

    The config as the worker will serve it: after a HUP the file may have changed since the
    master read it (load_config parses it again only then). An invalid config is left to the
    app, which says why.
    """
    with contextlib.suppress(ConfigError):
        worker.max_body = load_config(os.environ["RESPONDER_CONFIG"]).max_body_bytes


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live metrics files (prometheus_client multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def when_ready(server: Any) -> None:
    """Log once, from the master, what this responder serves (each worker logs its start)."""
    setup_logging(_config.log_level)
    logging.getLogger("responder.server").info(
        startup_summary(_config, bind, workers), extra={"event": "ready"}
    )


def on_exit(server: Any) -> None:
    """The last line of a clean stop, after every worker has exited."""
    logging.getLogger("responder.server").info(
        "responder stopped: every worker has exited", extra={"event": "stop"}
    )
