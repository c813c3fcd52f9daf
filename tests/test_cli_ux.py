"""The CLI as operators type it: version and help, URLs without a scheme, token variables,
bounded event paging, maintenance mode for all pairs, and failovers that ask and then wait.

Most tests drive `responder.cli.main` against the real app (a Harness on a real store) served
on a free loopback port by werkzeug and stopped by the test; the two that wait for a failover's
outcome use the gunicorn `server` fixture, whose background runner carries the failover out.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug.serving import BaseWSGIServer, make_server

from responder import __version__, cli
from responder.cli import build_parser, main
from tests.conftest import Harness
from tests.fakenode import FakeNode
from tests.serverproc import ServerProcess
from tests.tokens import OPERATOR_TOKEN

Start = Callable[..., tuple[Harness, str]]
ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve a WSGI app on a free loopback port for the test's duration."""
    server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def start(make_harness: Callable[..., Harness]) -> Iterator[Start]:
    """Build a Harness and serve its app; every server is stopped when the test ends."""
    with ExitStack() as stack:

        def run(**overrides: Any) -> tuple[Harness, str]:
            h = make_harness(**overrides)
            return h, stack.enter_context(serving(h.app))

        yield run


@pytest.fixture(autouse=True)
def no_client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's own shell settings must not leak into these tests."""
    for name in ("RESPONDER_URL", "RESPONDER_TOKEN", "RESPONDER_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)


class Terminal(io.StringIO):
    """Standard input that is a terminal, with what the operator will type."""

    def isatty(self) -> bool:
        return True


class Pipe(io.StringIO):
    """Standard input that is not a terminal (a script, cron, CI)."""

    def isatty(self) -> bool:
        return False


def token_file(h: Harness) -> str:
    return str(h.config.auth.operator_token_file)  # type: ignore[union-attr]


def op(h: Harness, url: str, *args: str) -> int:
    return main([*args, "--url", url, "--token-file", token_file(h)])


def two_pairs(httpserver: HTTPServer) -> list[dict[str, Any]]:
    def node(name: str) -> dict[str, Any]:
        driver = {
            "type": "http",
            "url": httpserver.url_for(f"/{name}"),
            "token_file": "./secrets/node-token",
            "timeout": "2s",
        }
        return {"name": name, "match": {"node": name}, "driver": driver}

    policy = {"triggers": ["ValidatorClientDown"], "hold": "20s", "cooldown": "1h"}
    return [
        {"name": "mainnet-a", "nodes": [node("node-a"), node("node-b")], "policy": policy},
        {"name": "mainnet-b", "nodes": [node("node-c"), node("node-d")], "policy": policy},
    ]


# ---- on the PATH, version and help ----------------------------------------------------------


def test_readme_says_how_to_put_the_installed_commands_on_the_path() -> None:
    """The Quick start names the line that puts .venv/bin on the PATH, and `responder` found there runs."""
    readme = (ROOT / "README.md").read_text()
    quick = readme[readme.index("## Quick start") : readme.index("## How it decides")]
    assert ". .venv/bin/activate" in quick and 'export PATH="$PWD/.venv/bin:$PATH"' in quick
    assert "`responder-agent`" in quick and "responder --version" in quick
    bindir = Path(sys.executable).parent  # .venv/bin of `make test`
    assert os.access(bindir / "responder-agent", os.X_OK)
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(
        ["responder", "--version"], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout == f"responder {importlib.metadata.version('responder')}\n"


def test_version_comes_from_the_installed_distribution(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--version` prints the installed version, and the package's own from a bare source tree."""
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"responder {importlib.metadata.version('responder')}\n"

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(cli.importlib.metadata, "version", not_installed)
    assert cli.version() == __version__


def test_every_command_and_argument_has_help() -> None:
    """Walking the whole argparse tree finds no subcommand and no argument without help text."""
    missing: list[str] = []

    def walk(parser: argparse.ArgumentParser, where: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not choice.help:
                        missing.append(f"{where} {choice.dest}")
                for name, child in action.choices.items():
                    walk(child, f"{where} {name}")
            elif not action.help:
                missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "responder")
    assert missing == []
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"failover", "switchover", "pause", "resume", "events"} <= set(commands)
    token_help = next(a.help for a in commands["status"]._actions if a.dest == "token_file")
    assert token_help is not None and token_help.startswith("a file holding the operator token")


# ---- URL and tokens -----------------------------------------------------------------------


def test_url_without_a_scheme_means_http(
    start: Start, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--url 127.0.0.1:PORT` and RESPONDER_URL=127.0.0.1:PORT reach the responder over http."""
    h, url = start()
    bare = url.removeprefix("http://")
    assert op(h, bare, "status") == 0
    assert "mainnet-a" in capsys.readouterr().out
    monkeypatch.setenv("RESPONDER_URL", bare + "/")
    assert main(["status", "--token-file", token_file(h)]) == 0
    assert "mainnet-a" in capsys.readouterr().out


def test_other_url_schemes_are_refused_by_name(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ftp:// or unix:// URL is a clear usage error naming the scheme, not InvalidSchema."""
    with pytest.raises(SystemExit) as stop:
        main(["status", "--url", "ftp://responder:9095"])
    assert stop.value.code == 2
    assert "use http:// or https://, not ftp://" in capsys.readouterr().err
    monkeypatch.setenv("RESPONDER_URL", "unix:///run/responder.sock")
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    assert "RESPONDER_URL" in err and "not unix://" in err and "InvalidSchema" not in err


def test_token_variables_say_which_is_which(
    start: Start,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """RESPONDER_TOKEN is the token, RESPONDER_TOKEN_FILE a file; a path in RESPONDER_TOKEN gets a 403 with a hint."""
    h, url = start()
    monkeypatch.setenv("RESPONDER_TOKEN_FILE", token_file(h))
    assert main(["status", "--url", url]) == 0
    capsys.readouterr()

    monkeypatch.delenv("RESPONDER_TOKEN_FILE")
    monkeypatch.setenv("RESPONDER_TOKEN", OPERATOR_TOKEN)
    assert main(["status", "--url", url]) == 0
    capsys.readouterr()

    monkeypatch.setenv("RESPONDER_TOKEN", token_file(h))  # the habit the old help taught
    assert main(["status", "--url", url]) == 1
    err = capsys.readouterr().err
    assert "403: wrong bearer token" in err
    assert "RESPONDER_TOKEN holds the token itself; for a file use RESPONDER_TOKEN_FILE" in err, err

    monkeypatch.setenv("RESPONDER_TOKEN", "not-a-path-and-wrong")
    assert main(["status", "--url", url]) == 1
    err = capsys.readouterr().err
    assert "403" in err and "hint" not in err

    monkeypatch.setenv("RESPONDER_TOKEN_FILE", token_file(h))
    assert main(["status", "--url", url]) == 1
    assert "unset one" in capsys.readouterr().err


# ---- events -------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["-5", "0", "1001", "ten"])
def test_events_limit_out_of_range_is_a_usage_error(
    limit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`events --limit` outside 1..1000 (or not a number) exits 2 before any request."""
    with pytest.raises(SystemExit) as stop:
        main(["events", "--limit", limit, "--url", "127.0.0.1:9"])
    assert stop.value.code == 2
    assert "argument --limit" in capsys.readouterr().err


def test_events_before_pages_back_through_the_trail(
    start: Start, capsys: pytest.CaptureFixture[str]
) -> None:
    """`events --limit 2` names the next page; `--before ID` shows only older events."""
    h, url = start()
    for action in ("pause", "resume", "pause", "resume"):
        assert h.op("POST", f"/api/v1/pairs/mainnet-a/{action}").status_code == 200
    ids = [e["id"] for e in h.events()]  # newest first
    assert op(h, url, "events", "--limit", "2") == 0
    page = capsys.readouterr()
    shown = [int(line.split()[0]) for line in page.out.splitlines()[1:]]
    assert shown == ids[:2]
    assert f"older: --before {ids[1]}" in page.err
    assert op(h, url, "events", "--limit", "2", "--before", str(ids[1])) == 0
    shown = [int(line.split()[0]) for line in capsys.readouterr().out.splitlines()[1:]]
    assert shown == ids[2:4]


# ---- maintenance mode ---------------------------------------------------------------------


def test_pause_and_resume_all_pairs(
    start: Start, httpserver: HTTPServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`pause --all` pauses every pair with one line each, `resume --all` resumes them all."""
    h, url = start(pairs=two_pairs(httpserver))
    assert op(h, url, "pause", "--all") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["mainnet-a", "mainnet-b"]
    assert all("paused by" in line for line in lines)
    assert h.pair("mainnet-a")["paused"] and h.pair("mainnet-b")["paused"]

    assert h.op("POST", "/api/v1/pairs/mainnet-b/resume").status_code == 200
    assert op(h, url, "pause", "--all") == 0  # one already paused: still fine, and said
    assert "mainnet-a: already paused" in capsys.readouterr().out

    assert op(h, url, "resume", "--all") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("resumed by" in line for line in lines)
    assert not h.pair("mainnet-a")["paused"] and not h.pair("mainnet-b")["paused"]


@pytest.mark.parametrize("args", [["pause"], ["resume", "mainnet-a", "--all"]])
def test_pause_needs_a_pair_or_all(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`pause`/`resume` with neither a pair nor --all, or with both, is a usage error."""
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    assert "give a pair or --all" in capsys.readouterr().err


# ---- failover and switchover: ask, then wait ------------------------------------------------


@pytest.mark.parametrize("command", ["failover", "switchover"])
def test_no_terminal_and_no_yes_refuses_and_changes_nothing(
    command: str,
    start: Start,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a terminal to ask on and without --yes, nothing is sent: exit 2, no failover."""
    h, url = start()
    monkeypatch.setattr("sys.stdin", Pipe("y\n"))
    assert op(h, url, command, "mainnet-a", "--to", "node-b") == 2
    assert "pass --yes" in capsys.readouterr().err
    assert h.pair()["failover"] is None and h.pair()["active_node"] == "node-a"


@pytest.mark.parametrize(("command", "verb"), [("failover", "fail"), ("switchover", "switch")])
def test_terminal_asks_and_no_changes_nothing(
    command: str,
    verb: str,
    start: Start,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a terminal the CLI asks "... from X to NODE? [y/N]"; any answer but yes changes nothing."""
    h, url = start()
    monkeypatch.setattr("sys.stdin", Terminal("\n"))
    assert op(h, url, command, "mainnet-a", "--to", "node-b") == 1
    err = capsys.readouterr().err
    assert f"{verb} over mainnet-a from node-a to node-b? [y/N]" in err
    assert "nothing was changed" in err
    assert h.pair()["failover"] is None


@pytest.mark.parametrize(
    ("command", "stdin", "extra", "said"),
    [
        ("failover", Terminal("y\n"), [], "manual failover"),
        ("switchover", Pipe(""), ["--yes"], "switchover by"),
    ],
    ids=["terminal-y", "script-yes"],
)
def test_yes_starts_it_and_no_wait_returns_at_once(
    command: str,
    stdin: io.StringIO,
    extra: list[str],
    said: str,
    start: Start,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Answering y on a terminal, or --yes in a script, starts it; --no-wait returns 0 once it is planned."""
    h, url = start()
    monkeypatch.setattr("sys.stdin", stdin)
    assert op(h, url, command, "mainnet-a", "--to", "node-b", "--no-wait", *extra) == 0
    assert said in capsys.readouterr().out
    failover = h.pair()["failover"]
    assert failover["target"] == "node-b" and failover["step"] == "planned"


@pytest.mark.e2e
def test_failover_waits_shows_each_step_and_exits_0_when_done(
    server: ServerProcess, nodes: dict[str, FakeNode], capsys: pytest.CaptureFixture[str]
) -> None:
    """`failover --yes` follows the journal step by step to `done`, prints timings and exits 0."""
    token = server.config_path.parent / "secrets" / "operator-token"
    argv = ["failover", "mainnet-a", "--to", "node-b", "--yes"]
    assert main([*argv, "--url", server.url, "--token-file", str(token)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "manual failover" in out[0]
    steps = {line.split()[1] for line in out[1:] if line.startswith("  ")}
    assert {"fencing", "activating"} <= steps, out
    assert any(line.startswith("mainnet-a-1: done:") for line in out), out
    assert any(line.startswith("timings: ") for line in out), out
    assert nodes["node-b"].calls["activate"] == 1
    assert server.pair()["active_node"] == "node-b"


@pytest.mark.e2e
def test_failover_that_fails_exits_non_zero(
    server: ServerProcess, nodes: dict[str, FakeNode], capsys: pytest.CaptureFixture[str]
) -> None:
    """A failover whose fence does not hold ends `failed`; the waiting CLI says so and exits 1."""
    nodes["node-a"].fence_lies = True  # answers "not signing" to the fence and keeps signing
    token = server.config_path.parent / "secrets" / "operator-token"
    argv = ["failover", "mainnet-a", "--to", "node-b", "--yes"]
    assert main([*argv, "--url", server.url, "--token-file", str(token)]) == 1
    out = capsys.readouterr().out
    assert "mainnet-a-1: failed:" in out, out
    assert nodes["node-b"].calls["activate"] == 0


class ScriptedApi(cli.Client):
    """A control API that answers GET /api/v1/failovers/<id> from a script, in order."""

    def __init__(self, answers: list[dict[str, Any] | BaseException]) -> None:
        super().__init__("http://127.0.0.1:9", None)
        self.answers = answers

    def call(self, method: str, path: str, **kw: Any) -> Any:
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def failover_body(step: str, journal: int, **extra: Any) -> dict[str, Any]:
    entry = {"ts": 1.0, "step": "fencing", "phase": "end", "detail": {"reason": "node-a fenced"}}
    return {
        "id": "mainnet-a-1",
        "pair": "mainnet-a",
        "step": step,
        "outcome_reason": None if step == "awaiting" else f"it is {step}",
        "data": {"waiting": "no history was handed over"},
        "timings": {"total": 1.5},
        "journal": [entry] * journal,
    } | extra


def test_follow_names_the_operator_step_and_ctrl_c_leaves_the_failover_running(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Waiting says once that an operator must confirm or abort; Ctrl-C exits 130 saying the failover goes on."""
    api = ScriptedApi(
        [failover_body("awaiting", 1), failover_body("awaiting", 1), failover_body("aborted", 2)]
    )
    assert cli._follow(api, "mainnet-a-1", interval=0) == 1
    out = capsys.readouterr().out
    assert out.count("WAITING for an operator: no history was handed over") == 1
    assert "responder confirm mainnet-a or responder abort mainnet-a" in out
    assert out.count("node-a fenced") == 2 and "mainnet-a-1: aborted: it is aborted" in out

    api = ScriptedApi([failover_body("fencing", 0), KeyboardInterrupt()])
    assert cli._follow(api, "mainnet-a-1", interval=0) == 130
    assert "stopped following mainnet-a-1; it goes on" in capsys.readouterr().err
