"""The CLI against a real responder under gunicorn: readable tables and control commands."""

from __future__ import annotations

import re

import pytest

from responder.cli import main
from tests.conftest import alert, notification
from tests.test_gunicorn import post

pytestmark = pytest.mark.e2e


def test_status_pause_resume_and_events(server, capsys) -> None:
    """status prints a table; pause/resume change the pair; events lists the trail newest first."""
    cfg = ["--config", str(server.config_path), "--url", server.url]
    server.wait_for(lambda p: all(n["observed"] for n in p["nodes"]), "the first probe round")
    assert main(["status", *cfg]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["PAIR", "PHASE", "ACTIVE", "CONSISTENCY", "MODE"]
    assert "mainnet-a  armed  node-a  consistent" in out
    assert re.search(r"mainnet-a  node-a  active    signing \([\d.]+s ago\)", out), out
    assert re.search(r"mainnet-a  node-b  standby   not signing \([\d.]+s ago\)", out), out
    assert "who signs (observed): node-a reports signing" in out

    assert main(["pause", "mainnet-a", *cfg]) == 0
    assert "paused by" in capsys.readouterr().out
    assert main(["status", *cfg]) == 0
    assert "paused" in capsys.readouterr().out
    assert main(["resume", "mainnet-a", *cfg]) == 0
    assert "resumed by" in capsys.readouterr().out

    assert main(["events", "--pair", "mainnet-a", *cfg]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["ID", "TIME", "PAIR", "KIND"]
    assert "operator:resume" in lines[1] and "operator:pause" in lines[2]


def test_failover_and_ack_commands(server, nodes, capsys) -> None:
    """`failover --to --yes` runs the safe path and waits for it; `ack` re-arms; errors exit 1 with the server's reason."""
    cfg = ["--config", str(server.config_path), "--url", server.url]
    assert main(["failover", "mainnet-a", "--to", "node-a", "--yes", *cfg]) == 1
    assert "already the active node" in capsys.readouterr().err
    assert main(["failover", "mainnet-a", "--to", "node-b", "--yes", *cfg]) == 0
    assert "manual failover" in capsys.readouterr().out
    server.wait_for(lambda p: p["active_node"] == "node-b", "manual failover done")
    assert nodes["node-b"].calls["activate"] == 1
    assert main(["ack", "mainnet-a", *cfg]) == 0
    assert "acknowledged" in capsys.readouterr().out


def test_wrong_token_is_a_clear_error(server, tmp_path, capsys) -> None:
    """A wrong operator token exits 1 and says 403."""
    bad = tmp_path / "bad-token"
    bad.write_text("nope\n")
    assert main(["status", "--url", server.url, "--token-file", str(bad)]) == 1
    assert "403" in capsys.readouterr().err


def test_webhook_then_status_shows_pending(server, capsys) -> None:
    """A delivered trigger shows up in `status` as a pending fault with its deadline."""
    server_cfg = ["--config", str(server.config_path), "--url", server.url]
    assert main(["pause", "mainnet-a", *server_cfg]) == 0
    assert post(server, notification(alert())) == 200
    server.wait_for(lambda p: p["phase"] == "pending", "pending fault")
    capsys.readouterr()
    assert main(["status", *server_cfg]) == 0
    out = capsys.readouterr().out
    assert "pending" in out
    assert re.search(r"mainnet-a  node-a  active .* ValidatorClientDown", out), out
