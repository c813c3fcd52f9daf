"""Starting without webhook authentication needs an explicit `auth: none` and warns loudly."""

from __future__ import annotations

import pytest
import yaml

from responder.cli import main
from tests.conftest import base_config, write_config
from tests.serverproc import ServerProcess, free_port


def test_config_without_auth_is_refused(tmp_path, capsys) -> None:
    """Leaving out `auth` is an error naming the key, not a silent open webhook."""
    data = base_config(lambda n: f"http://127.0.0.1:1/{n}")
    del data["auth"]
    path = write_config(tmp_path, data)
    assert main(["check-config", str(path)]) == 1
    assert "auth: Field required" in capsys.readouterr().err


@pytest.mark.e2e
def test_auth_none_serves_and_warns(tmp_path) -> None:
    """`auth: none` starts, accepts unauthenticated requests, and logs a start-up warning."""
    data = base_config(lambda n: f"http://127.0.0.1:1/{n}") | {"auth": "none"}
    path = write_config(tmp_path, data)
    assert yaml.safe_load(path.read_text())["auth"] == "none"
    proc = ServerProcess(path, free_port(), tmp_path / "log", workers=1).start()
    try:
        assert proc.api("/api/v1/pairs")["pairs"][0]["name"] == "mainnet-a"
    finally:
        proc.stop()
    log = (tmp_path / "log").read_text()
    assert "auth: none" in log and '"level": "warning"' in log
