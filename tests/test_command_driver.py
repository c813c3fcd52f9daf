"""The `command` driver and fence level: argv without a shell, env context, timeouts, output."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from responder.config import CommandDriverConfig, CommandFenceConfig
from responder.drivers import ActionContext, DriverError
from responder.drivers.command import CommandDriver, CommandFencer

CTX = ActionContext(
    pair="p", node="a", failover_id="p-1", source="a", target="b", reason="ValidatorClientDown held"
)


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


QUIET = py("print('{\"signing\": false}')")


def driver(**kw) -> CommandDriver:
    cfg = CommandDriverConfig(
        type="command",
        status=kw.pop("status", QUIET),
        fence=kw.pop("fence", py("pass")),
        activate=kw.pop("activate", py("pass")),
        **kw,
    )
    return CommandDriver("a", cfg)


def test_exit_zero_confirms_and_passes_context(tmp_path: Path) -> None:
    """Exit 0 confirms a step; the alert context arrives as RESPONDER_* variables, config env too."""
    out = tmp_path / "env.txt"
    code = f"import os; open({str(out)!r}, 'w').write(os.environ['RESPONDER_ACTION'] + ' ' + os.environ['RESPONDER_FAILOVER_ID'] + ' ' + os.environ['RESPONDER_TARGET'] + ' ' + os.environ['EXTRA'])"
    result = driver(fence=py(code), env={"EXTRA": "x"}).fence(CTX)
    assert result.data["exit"] == 0
    assert out.read_text() == "fence p-1 b x"


def test_non_zero_exit_fails_with_stderr() -> None:
    """A non-zero exit is a failed step whose reason carries the exit status and stderr."""
    with pytest.raises(DriverError, match=r"exited 3.*no power"):
        driver(activate=py("import sys; sys.stderr.write('no power'); sys.exit(3)")).activate(CTX)


def test_timeout_kills_and_fails() -> None:
    """A command running past its timeout is killed and the step fails."""
    with pytest.raises(DriverError, match="timed out"):
        driver(fence=py("import time; time.sleep(30)"), timeout=0.3).fence(CTX)


def test_missing_binary_fails_clearly() -> None:
    """A binary that does not exist is a failed step, not a crash."""
    with pytest.raises(DriverError, match="could not run"):
        driver(fence=["/nonexistent/fence-it"]).fence(CTX)


def test_no_shell_interpretation(tmp_path: Path) -> None:
    """Arguments are passed verbatim: shell metacharacters are not interpreted."""
    marker = tmp_path / "pwned"
    result = driver(
        fence=[sys.executable, "-c", "import sys; print(sys.argv[1])", f"; touch {marker}"]
    ).fence(CTX)
    assert not marker.exists()
    assert f"; touch {marker}" in result.data["stdout"]


def test_output_is_truncated() -> None:
    """Long output is kept, truncated, for the journal."""
    result = driver(fence=py("print('x' * 100000)")).fence(CTX)
    assert 0 < len(result.data["stdout"]) <= 2000


def test_status_reads_signing_from_json_stdout() -> None:
    """A status command printing {"signing": ...} reports it; exit non-zero means no answer; other output cannot tell."""
    ok = driver(status=py("print('{\"signing\": false}')")).status()
    assert ok.healthy and ok.signing is False
    on = driver(status=py("print('{\"signing\": true}')")).status()
    assert on.signing is True
    with pytest.raises(DriverError):
        driver(status=py("import sys; sys.exit(1)")).status()
    # an answer that does not say signing true or false is no verification either way
    assert driver(status=py("print('running')")).status().signing is None
    assert driver(status=py('print(\'{"signing": "no"}\')')).status().signing is None


def test_fence_level_plan_sends_nothing(tmp_path: Path) -> None:
    """A command fence level's plan describes argv and env without running it."""
    marker = tmp_path / "ran"
    fencer = CommandFencer("a", 0, CommandFenceConfig(type="command", argv=("touch", str(marker))))
    plan = fencer.plan(CTX)
    assert plan.request["argv"] == ["touch", str(marker)]
    assert plan.request["env"]["RESPONDER_NODE"] == "a"
    assert not marker.exists()
    fencer.fence(CTX)
    assert marker.exists()
