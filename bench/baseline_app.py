"""The baseline the webhook's ingestion is measured against: bare Flask, one durable insert.

Each POST reads the body and inserts it, as one transaction, into SQLite in WAL mode with
`synchronous=FULL` (the durability the responder promises before it answers), then answers
a small JSON 200. No validation, no routing, no background work: what is left is the cost of
HTTP under gunicorn plus one fsync'd commit, the floor any webhook that records durably pays.

Also the gunicorn config module (`gunicorn -c python:bench.baseline_app`): the settings are
the responder's own (`responder.gunicorn_conf`, which reads RESPONDER_CONFIG), so both servers
run the same worker class, workers, threads and keep-alive. Set BASELINE_DB to the database
file; `init_db` creates it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from flask import Flask, Response, jsonify, request

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS deliveries "
    "(id INTEGER PRIMARY KEY, received REAL NOT NULL, body BLOB NOT NULL)"
)

if os.environ.get("RESPONDER_CONFIG"):
    from responder import gunicorn_conf as _responder

    workers = _responder.workers
    worker_class = _responder.worker_class
    threads = _responder.threads
    keepalive = _responder.keepalive
    timeout = _responder.timeout
    graceful_timeout = _responder.graceful_timeout
    preload_app = _responder.preload_app
    accesslog = None
    errorlog = "-"
    loglevel = "warning"


def init_db(path: Path) -> None:
    """Create the database in WAL mode (a property of the file, kept by later connections)."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(_SCHEMA)
    conn.close()


_local = threading.local()


def _connection() -> sqlite3.Connection:
    """One connection per server thread, opened on first use (never in the gunicorn master)."""
    conn: sqlite3.Connection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(os.environ["BASELINE_DB"], timeout=30, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
        _local.conn = conn
    return conn


app = Flask("baseline")


@app.post("/webhook")
def webhook() -> Response:
    body = request.get_data()
    cursor = _connection().execute(
        "INSERT INTO deliveries (received, body) VALUES (?, ?)", (time.time(), body)
    )
    return jsonify({"status": "recorded", "id": cursor.lastrowid})


@app.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})
