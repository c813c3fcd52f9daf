"""Run `responder serve` (gunicorn, real workers) as a subprocess on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from tests.tokens import OPERATOR_TOKEN


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    def __init__(self, config_path: Path, port: int, log_path: Path, workers: int = 2) -> None:
        self.config_path = config_path
        self.port = port
        self.log_path = log_path
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        log = self.log_path.open("ab")
        argv = [
            sys.executable,
            "-m",
            "responder",
            "serve",
            "--config",
            str(self.config_path),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
        ]
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        log.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"responder exited {self.proc.returncode}: {self.log_path.read_text()[-3000:]}"
                )
            try:
                if requests.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"responder did not become healthy: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole process group (master and workers): a crash, not a shutdown."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._wait_group_gone()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._wait_group_gone()
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self._wait_group_gone()

    def _wait_group_gone(self) -> None:
        assert self.proc is not None
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.killpg(self.proc.pid, signal.SIGKILL)

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
            f"timed out waiting for {what}; last status {pair}; log tail:\n{self.log_path.read_text()[-3000:]}"
        )
