"""The `command` driver and fence level: argv without a shell, bounded by a timeout.

A command's output is bounded like a node's HTTP answer (its stdout may be a node's, e.g. over
ssh): at most COMMAND_MAX_BYTES of stdout and of stderr are read; more fails the step. On a
timeout or too much output the command's whole process group is killed, so a script's children
(ssh, curl) do not outlive it.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import IO

from ..config import CommandDriverConfig, CommandFenceConfig
from .base import (
    Action,
    ActionContext,
    ChainPosition,
    Check,
    DriverError,
    NodeStatus,
    PlannedCall,
    StepResult,
)

_KEEP = 2000  # characters of stdout/stderr kept in the journal
_PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
COMMAND_MAX_BYTES = 1024 * 1024  # of stdout, and of stderr, per command


def context_env(ctx: ActionContext | None, action: str, node: str) -> dict[str, str]:
    """The alert context a command receives, as RESPONDER_* variables."""
    env = {"RESPONDER_ACTION": action, "RESPONDER_NODE": node}
    if ctx is not None:
        env |= {
            "RESPONDER_PAIR": ctx.pair,
            "RESPONDER_FAILOVER_ID": ctx.failover_id,
            "RESPONDER_SOURCE": ctx.source or "",
            "RESPONDER_TARGET": ctx.target,
            "RESPONDER_REASON": ctx.reason,
        }
    return env


def run(
    argv: Sequence[str], extra_env: Mapping[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run argv; raise DriverError on a missing binary, a timeout or too much output (the
    command and everything it started in its process group are killed)."""
    env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ} | dict(extra_env)
    deadline = time.monotonic() + timeout
    try:
        proc = subprocess.Popen(
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, killed as a whole
        )
    except OSError as exc:
        raise DriverError(f"{argv[0]} could not run: {exc.strerror}") from None
    assert proc.stdout is not None and proc.stderr is not None
    try:
        out, err = _collect(argv[0], proc.stdout, proc.stderr, deadline, timeout)
        try:
            code = proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise _timed_out(argv[0], timeout) from None
    except DriverError:
        _kill_group(proc)
        raise
    finally:
        proc.stdout.close()
        proc.stderr.close()
    return subprocess.CompletedProcess(
        list(argv),
        code,
        out.decode("utf-8", errors="replace"),
        err.decode("utf-8", errors="replace"),
    )


def _timed_out(name: str, timeout: float) -> DriverError:
    return DriverError(f"{name} timed out after {timeout:g}s and was killed")


def _collect(
    name: str, stdout: IO[bytes], stderr: IO[bytes], deadline: float, timeout: float
) -> tuple[bytes, bytes]:
    """Read both pipes to their end, within the deadline and the byte cap."""
    bufs = {stdout.fileno(): bytearray(), stderr.fileno(): bytearray()}
    with selectors.DefaultSelector() as sel:
        for pipe in (stdout, stderr):
            sel.register(pipe, selectors.EVENT_READ)
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timed_out(name, timeout)
            for key, _ in sel.select(remaining):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = bufs[key.fd]
                if len(buf) + len(chunk) > COMMAND_MAX_BYTES:
                    which = "stdout" if key.fileobj is stdout else "stderr"
                    raise DriverError(
                        f"{name} wrote more than {COMMAND_MAX_BYTES} bytes to {which} and was killed"
                    )
                buf += chunk
    return bytes(bufs[stdout.fileno()]), bytes(bufs[stderr.fileno()])


def missing_program(argv: Sequence[str], extra_env: Mapping[str, str]) -> str | None:
    """Why argv[0] could not be started (not found, not executable), or None: what `run`
    would find on the PATH it passes."""
    path = dict(extra_env).get("PATH", os.environ.get("PATH", os.defpath))
    program = argv[0]
    if os.sep in program:
        if not os.path.isfile(program):
            return f"{program} does not exist"
        if not os.access(program, os.X_OK):
            return f"{program} is not executable"
        return None
    return None if shutil.which(program, path=path) else f"{program} is not on the PATH"


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _outcome(proc: subprocess.CompletedProcess[str]) -> dict[str, str | int]:
    return {
        "exit": proc.returncode,
        "stdout": proc.stdout[-_KEEP:],
        "stderr": proc.stderr[-_KEEP:],
    }


class CommandDriver:
    """status / fence / activate as commands; exit status 0 confirms."""

    def __init__(self, node: str, config: CommandDriverConfig) -> None:
        self.node = node
        self.config = config

    def _env(self, ctx: ActionContext | None, action: str) -> dict[str, str]:
        return dict(self.config.env) | context_env(ctx, action, self.node)

    def status(self) -> NodeStatus:
        proc = run(self.config.status, self._env(None, "status"), self.config.timeout)
        if proc.returncode != 0:
            raise DriverError(f"status command exited {proc.returncode}: {proc.stderr[-200:]!r}")
        signing: bool | None = None
        healthy, chain = True, None
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            data = None
        if isinstance(data, dict):
            if isinstance(data.get("signing"), bool):
                signing = data["signing"]
            if isinstance(data.get("healthy"), bool):
                healthy = data["healthy"]
            if isinstance(data.get("chain"), str) and data["chain"]:
                chain = data["chain"]
        return NodeStatus(
            healthy=healthy, signing=signing, detail=proc.stdout[-_KEEP:], chain=chain
        )

    def chain_position(self) -> ChainPosition:
        raise DriverError("this driver cannot tell the chain's progress")

    def preflight(self) -> tuple[Check, ...]:
        """The fence and activate programs can be started (status runs in every probe)."""
        problems = [
            f"{action}: {why}"
            for action, argv in (("fence", self.config.fence), ("activate", self.config.activate))
            if (why := missing_program(argv, self.config.env)) is not None
        ]
        name = f"{self.node}:commands"
        if problems:
            return (Check(name, False, "; ".join(problems)),)
        return (Check(name, True, "fence and activate programs found and executable"),)

    def _mutate(self, action: Action, ctx: ActionContext) -> StepResult:
        argv = self.config.fence if action == "fence" else self.config.activate
        proc = run(argv, self._env(ctx, action), self.config.timeout)
        if proc.returncode != 0:
            raise DriverError(f"{action} command exited {proc.returncode}: {proc.stderr[-200:]!r}")
        return StepResult(detail=f"{action} command exited 0", data=_outcome(proc))

    def fence(self, ctx: ActionContext) -> StepResult:
        return self._mutate("fence", ctx)

    def activate(self, ctx: ActionContext) -> StepResult:
        return self._mutate("activate", ctx)

    needs_handoff = False

    @property
    def settle_time(self) -> float:
        """The command timeout: a killed command's side effects land within it or not at all."""
        return self.config.timeout

    def plan(self, action: Action, ctx: ActionContext) -> PlannedCall:
        argv = self.config.fence if action == "fence" else self.config.activate
        return PlannedCall(
            description=f"run {' '.join(argv)}",
            request={
                "argv": list(argv),
                "env": self._env(ctx, action),
                "timeout": self.config.timeout,
            },
        )


class CommandFencer:
    """An extra fence level as a command (e.g. a power-off or service-stop script)."""

    def __init__(self, node: str, index: int, config: CommandFenceConfig) -> None:
        self.node = node
        self.index = index
        self.config = config

    @property
    def name(self) -> str:
        return f"command:{self.config.argv[0]}"

    def _env(self, ctx: ActionContext) -> dict[str, str]:
        return dict(self.config.env) | context_env(ctx, "fence", self.node)

    def fence(self, ctx: ActionContext) -> StepResult:
        proc = run(self.config.argv, self._env(ctx), self.config.timeout)
        if proc.returncode != 0:
            raise DriverError(f"fence command exited {proc.returncode}: {proc.stderr[-200:]!r}")
        return StepResult(detail="fence command exited 0", data=_outcome(proc))

    def check(self) -> Check:
        name = f"{self.node}:fence-level-{self.index + 1}"
        check = self.config.check
        missing = missing_program(self.config.argv, self.config.env)
        if missing is not None:
            return Check(name, False, f"the fence command cannot run: {missing}")
        if check is None:
            return Check(
                name,
                None,
                f"{self.name}: no check configured, so whether it works is unknown until it "
                "is needed (add `check: {command: [...]}`)",
            )
        env = dict(self.config.env) | context_env(None, "check", self.node)
        try:
            proc = run(check.command, env, check.timeout)
        except DriverError as exc:
            return Check(name, False, f"check {check.command[0]}: {exc}")
        if proc.returncode != 0:
            return Check(
                name,
                False,
                f"check {check.command[0]} exited {proc.returncode}: {proc.stderr[-200:]!r}",
            )
        return Check(name, True, f"check {check.command[0]} exited 0")

    def plan(self, ctx: ActionContext) -> PlannedCall:
        return PlannedCall(
            description=f"run {' '.join(self.config.argv)}",
            request={
                "argv": list(self.config.argv),
                "env": self._env(ctx),
                "timeout": self.config.timeout,
            },
        )
