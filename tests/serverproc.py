"""Run `responder serve` (gunicorn, real workers) as a subprocess on a free loopback port."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import requests

from responder.lab import Proc, free_port
from tests.tokens import OPERATOR_TOKEN

__all__ = ["ServerProcess", "free_port"]


class ServerProcess:
    """The responder as its users run it, stopped (or killed) as a whole process group."""

    def __init__(self, config_path: Path, port: int, log_path: Path, workers: int = 2) -> None:
        self.config_path = config_path
        self.port = port
        argv = [
            sys.executable, "-m", "responder", "serve", "--config", str(config_path),
            "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
        ]  # fmt: skip
        self.proc = Proc("responder", argv, log_path, self.url + "/healthz")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.proc.log

    def start(self, timeout: float = 20.0) -> ServerProcess:
        self.proc.start(timeout)
        return self

    def kill(self) -> None:
        """SIGKILL master and workers at once: a crash, not a shutdown."""
        self.proc.stop_hard()

    def stop(self) -> None:
        self.proc.stop()

    def api(self, path: str) -> Any:
        resp = requests.get(
            self.url + path, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}, timeout=5
        )
        resp.raise_for_status()
        return resp.json()

    def pair(self, name: str = "mainnet-a") -> dict[str, Any]:
        for p in self.api("/api/v1/pairs")["pairs"]:
            if p["name"] == name:
                return dict(p)
        raise KeyError(name)

    def wait_for(self, predicate: Any, what: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the running system's status until `predicate(pair)` holds."""
        end = time.monotonic() + timeout
        pair: dict[str, Any] = {}
        while time.monotonic() < end:
            try:
                pair = self.pair()
                if predicate(pair):
                    return pair
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(
            f"timed out waiting for {what}; last status {pair}; log tail:\n{self.proc.tail()}"
        )
