"""A real etcd (Debian's etcd-server) on free loopback ports, for the HA tests."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

from responder.lab import Proc, free_port

__all__ = ["EtcdProcess", "etcd_binary"]


def etcd_binary() -> str:
    found = shutil.which("etcd")
    if found is None:
        raise RuntimeError("etcd not found: `make test` installs it (Debian package etcd-server)")
    return found


class EtcdProcess:
    """One etcd member with its data in `directory`, stopped (or killed) by the test."""

    def __init__(self, directory: Path, name: str = "etcd") -> None:
        self.directory = directory
        self.client_port = free_port()
        self.peer_port = free_port()
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [
            etcd_binary(), "--name", name, "--data-dir", str(directory / "data"),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{name}={peer}", "--initial-cluster-state", "new",
            "--log-level", "warn",
        ]  # fmt: skip
        directory.mkdir(parents=True, exist_ok=True)
        self.proc = Proc(name, argv, directory / "etcd.log", self.url + "/health")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 30.0) -> EtcdProcess:
        self.proc.start(timeout)
        return self

    def stop(self) -> None:
        self.proc.stop()

    def restart(self, timeout: float = 30.0) -> EtcdProcess:
        """Start again on the same ports and data: the same cluster, back."""
        self.proc.start(timeout)
        return self

    def pause(self) -> None:
        """SIGSTOP: etcd stops answering, connections hang (a partition, seen from here)."""
        if self.proc.popen is not None:
            self.proc.popen.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc.popen is not None:
            self.proc.popen.send_signal(signal.SIGCONT)
