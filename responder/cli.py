"""Command line: `serve`, `check-config`, and the control API client (status, pause, ...)."""

from __future__ import annotations

import argparse
import getpass
import importlib.metadata
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from . import __version__
from .config import (
    Config,
    ConfigError,
    check_config_file,
    load_config,
    parse_duration,
    read_secret,
)
from .policy import config_drift
from .store.etcd import EtcdStore, EtcdUnavailable
from .store.sqlite import inspect_states

DEFAULT_URL = "http://127.0.0.1:9095"


def _drift(config: Config, state_dir: str | None) -> list[str]:
    """What the config would hold against an existing state (empty when there is none)."""
    if config.state.backend == "etcd":
        store = EtcdStore(config.state, "check-config", config.state_dir)
        try:
            states = {s.pair: s for s in store.list_pairs()}
            return config_drift(states, store.unfinished(), config.pairs)
        except EtcdUnavailable as exc:
            print(f"warning: stored state not compared: {exc}", file=sys.stderr)
            return []
    db = Path(state_dir) / config.db_path.name if state_dir else config.db_path
    if not db.exists():
        return []
    states, unfinished = inspect_states(db)
    return config_drift(states, unfinished, config.pairs)


def _check_config(path: str, state_dir: str | None = None) -> int:
    """Print every problem (schema, files, state dir) and warning at once; 1 when invalid."""
    checked = check_config_file(path)
    for warning in checked.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    config = checked.config
    if checked.problems or config is None:
        print(f"{path}: invalid", file=sys.stderr)
        for problem in checked.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    pairs = ", ".join(f"{p.name} ({len(p.nodes)} nodes)" for p in config.pairs)
    mode = " [dry-run]" if config.dry_run else ""
    auth = " [auth: none - lab only]" if config.auth == "none" else ""
    drift = _drift(config, state_dir)
    if drift:
        print(f"{path}: valid{mode}{auth}: {pairs}; against the stored state it would hold:")
        for line in drift:
            print(f"  {line}")
        return 3
    print(f"{path}: ok{mode}{auth}: {pairs}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    """Check the config, then become gunicorn's master in this process.

    The master and the workers it forks keep the config checked here (see config._reuse): a
    thousand pairs are parsed once, not once by the CLI, once by gunicorn and once per worker.
    """
    if _check_config(args.config) != 0:
        return 1
    config = load_config(args.config)  # what the check just validated, not parsed again
    if config.auth == "none":
        print("warning: auth: none - webhook and control API are unauthenticated", file=sys.stderr)
    metrics_dir = config.state_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    try:
        metrics_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"{args.config}: invalid", file=sys.stderr)
        print(f"  state_dir: cannot create {metrics_dir}: {exc.strerror}", file=sys.stderr)
        return 1
    # the file the check read (abspath, not resolve(): a symlinked config keeps its directory)
    os.environ["RESPONDER_CONFIG"] = os.path.abspath(args.config)
    if args.bind:
        os.environ["RESPONDER_BIND"] = args.bind
    if args.workers:
        os.environ["RESPONDER_WORKERS"] = str(args.workers)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    import gunicorn  # noqa: PLC0415 - serve only
    from gunicorn.app.wsgiapp import WSGIApplication  # noqa: PLC0415

    script = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or str(
        Path(gunicorn.__file__).parent / "__main__.py"
    )
    argv = [script, "-c", "python:responder.gunicorn_conf", "responder.wsgi:app_from_env()"]
    if "prometheus_client" in sys.modules:
        # it chose how to keep values before PROMETHEUS_MULTIPROC_DIR was set: start afresh
        os.execv(sys.executable, [sys.executable, *argv])  # noqa: S606 - fixed argv, no shell
    sys.argv = argv  # what gunicorn parses, and what it re-executes on USR2
    WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]", prog="gunicorn").run()
    return 0  # not reached: the master exits through SystemExit


def _iso(ts: float | None) -> str:
    """A wall-clock time as the API shows it (service.iso, without importing the service:
    `serve` must not load prometheus_client before it sets PROMETHEUS_MULTIPROC_DIR)."""
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(low: int, high: int) -> Any:
    """An argparse type for an integer in [low, high]: `--limit -5` is a mistake, not 1."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return parse


def normalise_url(text: str) -> str:
    """The responder's base URL; `localhost:9095` means http:// as it does for curl.

    Any scheme but http(s) is refused by name rather than left to fail inside requests.
    """
    url = text.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"{text!r}: use http:// or https://, not {parts.scheme}://")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError(f"{text!r}: the port is not a number") from None
    if not parts.hostname:
        raise ValueError(f"{text!r}: no host")
    return url.rstrip("/")


def _url_arg(text: str) -> str:
    try:
        return normalise_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def version() -> str:
    """The installed distribution's version; the package's own when run from a source tree."""
    try:
        return importlib.metadata.version("responder")
    except importlib.metadata.PackageNotFoundError:
        return __version__


class ApiError(Exception):
    pass


class Client:
    """A thin client for the control API.

    `auth_hint` is added to a 401/403 answer: the likely cause known only on this side.
    """

    def __init__(
        self, url: str, token: str | None, timeout: float = 10.0, auth_hint: str | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.auth_hint = auth_hint
        self.headers = {"X-Responder-Operator": getpass.getuser()}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = requests.request(
                method, self.url + path, headers=self.headers, timeout=self.timeout, **kw
            )
        except requests.RequestException as exc:
            raise ApiError(f"cannot reach {self.url}: {type(exc).__name__}") from None
        try:
            body = resp.json()
        except ValueError:
            body = {"error": resp.text[:200]}
        if resp.status_code >= 400:
            hint = ""
            if resp.status_code in (401, 403) and self.auth_hint:
                hint = f"\nhint: {self.auth_hint}"
            raise ApiError(f"{resp.status_code}: {body.get('error', body)}{hint}")
        return body


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _observed(node: dict[str, Any]) -> str:
    seen = node.get("observed")
    if node.get("may_be_signing"):
        return "MAY BE SIGNING"
    if seen is None:
        return "not observed yet"
    return f"{seen['says']} ({seen['age_seconds']:g}s ago)"


def format_status(pairs: list[dict[str, Any]]) -> str:
    rows = [["PAIR", "PHASE", "ACTIVE", "CONSISTENCY", "MODE"]]
    node_rows = [["PAIR", "NODE", "BELIEVED", "OBSERVED", "FIRING"]]
    details = []
    for p in pairs:
        mode = (
            ",".join(
                m for m, on in (("paused", p.get("paused")), ("dry-run", p.get("dry_run"))) if on
            )
            or "-"
        )
        rows.append(
            [
                p["name"],
                p["phase"],
                p["active_node"] or "(none)",
                p.get("consistency", "-"),
                mode,
            ]
        )
        for n in p["nodes"]:
            node_rows.append(
                [p["name"], n["name"], n["role"], _observed(n), ",".join(n["firing"]) or "-"]
            )
        details.append(f"{p['name']}: {p['reason']} (at {p.get('reason_at') or 'unknown'})")
        details.append(f"  who signs (observed): {p['who_signs']}")
        if p.get("held_reason"):
            details.append(f"  HELD: {p['held_reason']}")
        for n in p["nodes"]:
            if n.get("may_be_signing"):
                details.append(f"  UNKNOWN: {n['name']} {n['may_be_signing']}")
        for fault in p.get("faults", []):
            state = "QUARANTINED" if fault["quarantined"] else f"retry at {fault['next_retry']}"
            details.append(
                f"  {state}: {fault['source']} {fault['ref']} failed {fault['attempts']}x: "
                f"{fault['error']}"
            )
        if p["phase"] == "unreadable":
            continue
        ready = p.get("readiness")
        if ready:
            details.append(f"  readiness ({ready['at']}): {ready['summary']}")
        drill = p.get("drill")
        if drill and drill.get("verdict"):
            details.append(
                f"  last drill ({drill['at']}, by {drill['by']}): {drill['verdict']}"
                + (f"; blockers: {'; '.join(drill['blockers'])}" if drill.get("blockers") else "")
            )
        if p["pending"] and p["pending"]["deadline"]:
            details.append(
                f"  pending: failover at {p['pending']['deadline']} "
                f"({p['pending']['seconds_left']}s left)"
            )
        if p["cooldown_until"]:
            details.append(f"  cooldown until {p['cooldown_until']}")
        if p["blocked_reason"]:
            details.append(f"  BLOCKED: {p['blocked_reason']} (run: responder ack {p['name']})")
        f = p["failover"]
        if f:
            source = f["source"] or "(no active node)"
            reason = (f["outcome_reason"] or "").removeprefix("dry-run: ")
            details.append(
                f"  last failover {f['id']}: {source} -> {f['target']} step={f['step']}"
                + (" [dry-run]" if f["dry_run"] else "")
                + (f": {reason}" if reason else "")
            )
            if f["step"] == "awaiting":
                details.append(f"  WAITING: {f['data'].get('waiting', '')}")
    return _table(rows) + "\n\n" + _table(node_rows) + "\n\n" + "\n".join(details)


def format_events(events: list[dict[str, Any]]) -> str:
    rows = [["ID", "TIME", "PAIR", "KIND", "REASON"]]
    for e in events:
        rows.append([str(e["id"]), _iso(e["ts"]), e["pair"], e["kind"], e["reason"]])
    return _table(rows)


def format_drill(report: dict[str, Any]) -> str:
    """A drill report for a terminal: verdict first, then what was checked and sent."""
    mark = {True: "ok  ", False: "FAIL", None: "??  "}
    lines = [f"drill {report['pair']}: {report['verdict']}"]
    if report.get("source"):
        lines.append(
            f"  fault on {report['source']} -> failover to {report.get('target') or '(none)'}"
        )
    lines += [f"  note: {n}" for n in report.get("notes", [])]
    if report.get("checks"):
        lines.append("checks (read-only):")
        lines += [f"  {mark[c['ok']]} {c['name']}: {c['reason']}" for c in report["checks"]]
    if report.get("requests"):
        lines.append("requests a real failover would send, in order (secrets redacted):")
        for i, r in enumerate(report["requests"], 1):
            when = f" [{r['when']}]" if r.get("when") else ""
            lines.append(f"  {i}. {r['action']} {r['node']}: {r['description']}{when}")
            body = r["request"].get("json")
            if body is not None:
                lines.append(f"     body: {json.dumps(body)[:300]}")
    lines.append("blockers: " + ("none" if not report["blockers"] else ""))
    lines += [f"  {b}" for b in report["blockers"]]
    if report.get("warnings"):
        lines.append("warnings:")
        lines += [f"  {w}" for w in report["warnings"]]
    lines.append(f"took {report['duration_seconds']}s; nothing was changed on any node")
    return "\n".join(lines)


def _journal_line(entry: dict[str, Any]) -> str:
    detail = entry["detail"]
    text = (
        detail.get("reason")
        or detail.get("note")
        or detail.get("verification")
        or detail.get("error")
        or ", ".join(f"{k}={v}" for k, v in detail.items() if not isinstance(v, dict | list))
    )
    return f"  {_when(entry['ts'])}  {entry['step']:<10} {entry['phase']:<5} {text}"


def _when(ts: float | str | None) -> str:
    """A timestamp as ISO 8601, whether the API sent Unix seconds or already ISO text."""
    return ts if isinstance(ts, str) else _iso(ts)


def _follow(
    client: Client, failover_id: str, *, interval: float = 0.5, as_json: bool = False
) -> int:
    """Print a failover's journal as it grows until it ends; 0 when it is done.

    Ctrl-C stops the following, never the failover: it says so and how to look again.
    """
    seen, told_waiting = 0, False
    try:
        while True:
            body = client.call("GET", f"/api/v1/failovers/{failover_id}")
            if not as_json:
                for entry in body["journal"][seen:]:
                    print(_journal_line(entry), flush=True)
            seen = len(body["journal"])
            if body["step"] == "awaiting" and not told_waiting and not as_json:
                told_waiting = True
                waiting = (body.get("data") or {}).get("waiting", "")
                print(
                    f"WAITING for an operator: {waiting} "
                    f"(in another terminal: responder confirm {body['pair']} "
                    f"or responder abort {body['pair']})",
                    flush=True,
                )
            if body["step"] in ("done", "failed", "aborted"):
                if as_json:
                    print(json.dumps(body, indent=2))
                else:
                    timings = ", ".join(f"{k} {v:g}s" for k, v in body.get("timings", {}).items())
                    print(f"{failover_id}: {body['step']}: {body['outcome_reason']}")
                    print(f"timings: {timings}")
                return 0 if body["step"] == "done" else 1
            time.sleep(interval)
    except KeyboardInterrupt:
        print(
            f"\nstopped following {failover_id}; it goes on without this command "
            f"(responder status, or responder abort before its activation)",
            file=sys.stderr,
        )
        return 130


def _client(args: argparse.Namespace) -> Client:
    """URL and token: options first, then the environment, then what `--config` names.

    `RESPONDER_TOKEN` is the token itself, `RESPONDER_TOKEN_FILE` a file holding it; a
    RESPONDER_TOKEN that names an existing file is kept as sent, with a hint on a 401/403.
    """
    config = load_config(args.config) if args.config else None
    url = args.url
    if url is None and os.environ.get("RESPONDER_URL"):
        try:
            url = normalise_url(os.environ["RESPONDER_URL"])
        except ValueError as exc:
            raise ApiError(f"RESPONDER_URL {exc}") from None
    if url is None and config is not None:
        url = f"http://{config.listen}"
    token_value = os.environ.get("RESPONDER_TOKEN", "").strip() or None
    token_file, origin = args.token_file, "--token-file"
    if token_file is None and os.environ.get("RESPONDER_TOKEN_FILE"):
        if token_value:
            raise ApiError(
                "both RESPONDER_TOKEN (the token itself) and RESPONDER_TOKEN_FILE "
                "(a file holding it) are set: unset one"
            )
        token_file, origin = os.environ["RESPONDER_TOKEN_FILE"], "RESPONDER_TOKEN_FILE"
    if token_file is None and token_value is None and config and config.auth != "none":
        token_file = str(config.auth.operator_token_file)
        origin = f"operator_token_file of {args.config}"
    hint = None
    if token_file is not None:
        token: str | None = read_secret(Path(token_file), origin).value
    else:
        token = token_value
        if token_value and Path(token_value).expanduser().is_file():
            hint = (
                f"RESPONDER_TOKEN is {token_value!r}, an existing file; RESPONDER_TOKEN holds "
                "the token itself; for a file use RESPONDER_TOKEN_FILE"
            )
    return Client(url or DEFAULT_URL, token, auth_hint=hint)


def _confirm(client: Client, args: argparse.Namespace, verb: str) -> int | None:
    """Ask before moving a validator key; None to go ahead, else the exit code.

    Without a terminal and without --yes it refuses (exit 2), as patronictl does without
    --force: a script must say --yes, so a stray or mistyped command never moves signing.
    """
    if args.yes:
        return None
    if not sys.stdin.isatty():
        print(
            f"error: refusing to {verb} {args.pair} without confirmation: stdin is not a "
            "terminal; pass --yes",
            file=sys.stderr,
        )
        return 2
    pairs = {p["name"]: p for p in client.call("GET", "/api/v1/pairs")["pairs"]}
    if args.pair not in pairs:
        raise ApiError(f"unknown pair {args.pair!r} (known: {', '.join(sorted(pairs))})")
    source = pairs[args.pair]["active_node"] or "(no active node)"
    print(f"{verb} {args.pair} from {source} to {args.to}? [y/N] ", end="", file=sys.stderr)
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() in ("y", "yes"):
        return None
    print("not confirmed; nothing was changed", file=sys.stderr)
    return 1


def _each_pair(client: Client, action: str, as_json: bool) -> int:
    """`pause --all` / `resume --all`: every pair, one line each; 1 when any failed."""
    failed, answers = 0, []
    for pair in client.call("GET", "/api/v1/pairs")["pairs"]:
        name = pair["name"]
        try:
            body = client.call("POST", f"/api/v1/pairs/{name}/{action}")
        except ApiError as exc:
            failed += 1
            print(f"{name}: error: {exc}", file=sys.stderr)
            continue
        answers.append(body)
        if not as_json:
            print(f"{name}: {body['reason']}", flush=True)
    if as_json:
        print(json.dumps({"results": answers}, indent=2))
    return 1 if failed else 0


def _control(args: argparse.Namespace) -> int:
    client = _client(args)
    cmd = args.command
    if cmd == "status":
        body = client.call("GET", "/api/v1/pairs")
        print(json.dumps(body, indent=2) if args.json else format_status(body["pairs"]))
        return 0
    if cmd == "events":
        params: dict[str, Any] = {"limit": args.limit}
        if args.pair:
            params["pair"] = args.pair
        if args.before is not None:
            params["before"] = args.before
        body = client.call("GET", "/api/v1/events", params=params)
        print(json.dumps(body, indent=2) if args.json else format_events(body["events"]))
        if not args.json and body["events"] and len(body["events"]) == args.limit:
            print(f"older: --before {body['events'][-1]['id']}", file=sys.stderr)
        return 0
    if cmd == "drill":
        client.timeout = 300.0  # every probe and check, each bounded by its driver's limits
        payload = {"fault": args.fault} if args.fault else None
        body = client.call("POST", f"/api/v1/pairs/{args.pair}/drill", json=payload)
        print(json.dumps(body, indent=2) if args.json else format_drill(body))
        return 0 if body["ok"] else 3
    if cmd in ("switchover", "failover"):
        refused = _confirm(client, args, "switch over" if cmd == "switchover" else "fail over")
        if refused is not None:
            return refused
        move: dict[str, Any] = {"target": args.to}
        if cmd == "switchover":
            move |= {"safe_slots": args.safe_slots, "timeout": args.timeout}
        body = client.call("POST", f"/api/v1/pairs/{args.pair}/{cmd}", json=move)
        if args.json and (args.no_wait or not body.get("failover_id")):
            print(json.dumps(body, indent=2))
            return 0
        if not args.json:
            print(body["reason"], flush=True)
        if args.no_wait or not body.get("failover_id"):
            return 0
        return _follow(client, body["failover_id"], as_json=args.json)
    if cmd in ("pause", "resume") and args.all:
        return _each_pair(client, cmd, args.json)
    if cmd == "unfence":
        body = client.call("POST", f"/api/v1/pairs/{args.pair}/nodes/{args.node}/unfence")
    elif cmd == "adopt":
        body = client.call("POST", f"/api/v1/pairs/{args.pair}/adopt", json={"node": args.node})
    else:
        body = client.call("POST", f"/api/v1/pairs/{args.pair}/{cmd}")
    print(json.dumps(body, indent=2) if args.json else body["reason"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="responder",
        description="Slashing-safe failover for validator nodes. Control commands take "
        "--url/--token-file/--config after the command; see `responder COMMAND --help`.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check-config", help="validate a config file and its token files")
    check.add_argument("file", nargs="?", help="the config file to check")
    check.add_argument("--config", dest="config_opt", help="the config file (same as FILE)")
    check.add_argument(
        "--state-dir",
        help="compare against this state dir (default: the config's own, when it exists); "
        "exit 3 when the config would hold pairs there",
    )

    serve = sub.add_parser("serve", help="run the responder under gunicorn")
    serve.add_argument("--config", required=True, help="the config file to serve")
    serve.add_argument("--bind", help="override listen (host:port)")
    serve.add_argument("--workers", type=int, help="override workers")

    client = argparse.ArgumentParser(add_help=False)
    client.add_argument(
        "--url",
        type=_url_arg,
        help=f"the responder's URL; host:port means http:// "
        f"(else env RESPONDER_URL, else the listen address of --config, else {DEFAULT_URL})",
    )
    client.add_argument(
        "--token-file",
        metavar="FILE",
        help="a file holding the operator token (else env RESPONDER_TOKEN_FILE, a file; "
        "else env RESPONDER_TOKEN, the token itself; else the config's operator_token_file)",
    )
    client.add_argument(
        "--config", metavar="FILE", help="take URL and operator token file from this config"
    )
    client.add_argument("--json", action="store_true", help="print the raw JSON answer")

    sub.add_parser("status", parents=[client], help="pairs, roles, pending faults, reasons")
    events = sub.add_parser("events", parents=[client], help="the audit trail, newest first")
    events.add_argument("--pair", metavar="PAIR", help="only this pair's events")
    events.add_argument(
        "--limit",
        type=_count(1, 1000),
        default=30,
        metavar="N",
        help="how many events, 1 to 1000 (default 30)",
    )
    events.add_argument(
        "--before",
        type=_count(1, 2**63 - 1),
        metavar="ID",
        help="only events older than this id (the next page: the last id shown)",
    )
    for name, text in (
        ("pause", "stop acting on alerts for a pair, or every pair with --all (still recorded)"),
        ("resume", "act on alerts again, for a pair or every pair with --all"),
    ):
        each = sub.add_parser(name, parents=[client], help=text)
        each.add_argument("pair", nargs="?", help="the pair (omit with --all)")
        each.add_argument(
            "--all", action="store_true", help=f"{name} every pair, one line per pair"
        )
    for name, text in (
        ("ack", "acknowledge a failed or finished failover and re-arm automation"),
        ("confirm", "allow an activation waiting for an operator (no history was handed over)"),
        ("abort", "stop the failover in flight before its activation"),
    ):
        sub.add_parser(name, parents=[client], help=text).add_argument("pair", help="the pair")
    failover = sub.add_parser(
        "failover",
        parents=[client],
        help="fail over by hand to a standby through the safe path; asks first on a terminal, "
        "then waits for the outcome (exit 1 when it fails)",
    )
    failover.add_argument("pair", help="the pair to fail over")
    failover.add_argument("--to", required=True, metavar="NODE", help="the standby to activate")
    failover.add_argument(
        "--no-wait", action="store_true", help="return once the failover is planned"
    )
    failover.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="do not ask for confirmation (needed when stdin is not a terminal)",
    )
    unfence = sub.add_parser("unfence", parents=[client], help="return a repaired node to standby")
    unfence.add_argument("pair", help="the pair")
    unfence.add_argument("node", help="the repaired node, verified not signing")
    drill = sub.add_parser(
        "drill",
        parents=[client],
        help="what would happen if a node failed now: a read-only rehearsal on the real nodes "
        "(exit 3 when a real failover would not succeed)",
    )
    drill.add_argument("pair", help="the pair to drill")
    drill.add_argument("--fault", help="the node assumed to fail (default: the active node)")
    switch = sub.add_parser(
        "switchover",
        parents=[client],
        help="a planned failover to a standby (maintenance, game days); the old primary "
        "ends a standby; asks first on a terminal, then waits for the outcome",
    )
    switch.add_argument("pair", help="the pair to switch over")
    switch.add_argument("--to", required=True, metavar="NODE", help="the standby to activate")
    switch.add_argument(
        "--safe-slots",
        type=int,
        default=0,
        help="Ethereum: first wait until no key of the pair proposes within this many slots "
        "(needs ethereum.liveness for the beacon node)",
    )
    switch.add_argument(
        "--timeout",
        type=_seconds,
        default=600.0,
        help="give up waiting for a safe moment after this long (e.g. 10m), changing nothing",
    )
    switch.add_argument(
        "--no-wait", action="store_true", help="return once the switchover is planned"
    )
    switch.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="do not ask for confirmation (needed when stdin is not a terminal)",
    )
    adopt = sub.add_parser(
        "adopt",
        parents=[client],
        help="record the node that really signs as active (probed: it must be the only signer)",
    )
    adopt.add_argument("pair", help="the pair")
    adopt.add_argument("node", help="the node every probe shows signing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("pause", "resume") and (args.pair is None) == (not args.all):
        parser.error(f"{args.command}: give a pair or --all (not both)")
    if args.command == "check-config":
        path = args.file or args.config_opt
        if not path:
            print("check-config needs a file", file=sys.stderr)
            return 2
        return _check_config(path, args.state_dir)
    if args.command == "serve":
        return _serve(args)
    try:
        return _control(args)
    except (ApiError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
