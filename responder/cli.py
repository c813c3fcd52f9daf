"""Command line: `serve`, `check-config`, and the control API client (status, pause, ...)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

from .config import (
    ConfigError,
    check_driver_files,
    load_config,
    load_secrets,
    parse_duration,
    permission_warnings,
    read_secret,
)
from .policy import config_drift
from .service import iso
from .sqlite_store import inspect_states

DEFAULT_URL = "http://127.0.0.1:9095"


def _drift(config_path: str, state_dir: str | None) -> list[str]:
    """What the config would hold against an existing state dir (empty when there is none)."""
    config = load_config(config_path)
    db = Path(state_dir) / config.db_path.name if state_dir else config.db_path
    if not db.exists():
        return []
    states, unfinished = inspect_states(db)
    return config_drift(states, unfinished, config.pairs)


def _check_config(path: str, state_dir: str | None = None) -> int:
    try:
        config = load_config(path)
        load_secrets(config)
    except ConfigError as exc:
        print(f"{path}: invalid", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    problems = check_driver_files(config)
    if problems:
        print(f"{path}: invalid", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    for warning in permission_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    pairs = ", ".join(f"{p.name} ({len(p.nodes)} nodes)" for p in config.pairs)
    mode = " [dry-run]" if config.dry_run else ""
    auth = " [auth: none - lab only]" if config.auth == "none" else ""
    drift = _drift(path, state_dir)
    if drift:
        print(f"{path}: valid{mode}{auth}: {pairs}; against the stored state it would hold:")
        for line in drift:
            print(f"  {line}")
        return 3
    print(f"{path}: ok{mode}{auth}: {pairs}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    if _check_config(args.config) != 0:
        return 1
    config = load_config(args.config)
    if config.auth == "none":
        print("warning: auth: none - webhook and control API are unauthenticated", file=sys.stderr)
    env = dict(os.environ)
    env["RESPONDER_CONFIG"] = str(Path(args.config).resolve())
    if args.bind:
        env["RESPONDER_BIND"] = args.bind
    if args.workers:
        env["RESPONDER_WORKERS"] = str(args.workers)
    metrics_dir = config.state_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or "gunicorn"
    argv = [gunicorn, "-c", "python:responder.gunicorn_conf", "responder.wsgi:app_from_env()"]
    os.execvpe(gunicorn, argv, env)  # noqa: S606 - argv is fixed, no shell
    return 0  # not reached


def _seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class ApiError(Exception):
    pass


class Client:
    """A thin client for the control API."""

    def __init__(self, url: str, token: str | None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
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
            raise ApiError(f"{resp.status_code}: {body.get('error', body)}")
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
        details.append(f"{p['name']}: {p['reason']} (at {p.get('reason_at')})")
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
            details.append(
                f"  last failover {f['id']}: {f['source']} -> {f['target']} step={f['step']}"
                + (" [dry-run]" if f["dry_run"] else "")
                + (f": {f['outcome_reason']}" if f["outcome_reason"] else "")
            )
            if f["step"] == "awaiting":
                details.append(f"  WAITING: {f['data'].get('waiting', '')}")
    return _table(rows) + "\n\n" + _table(node_rows) + "\n\n" + "\n".join(details)


def format_events(events: list[dict[str, Any]]) -> str:
    rows = [["ID", "TIME", "PAIR", "KIND", "REASON"]]
    for e in events:
        rows.append([str(e["id"]), iso(e["ts"]) or "", e["pair"], e["kind"], e["reason"]])
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
    return f"  {iso(entry['ts'])}  {entry['step']:<10} {entry['phase']:<5} {text}"


def _follow(client: Client, failover_id: str, *, interval: float = 0.5) -> int:
    """Print a failover's journal as it grows until it ends; 0 when it is done."""
    seen = 0
    while True:
        body = client.call("GET", f"/api/v1/failovers/{failover_id}")
        for entry in body["journal"][seen:]:
            print(_journal_line(entry), flush=True)
        seen = len(body["journal"])
        if body["step"] in ("done", "failed", "aborted"):
            timings = ", ".join(f"{k} {v:g}s" for k, v in body.get("timings", {}).items())
            print(f"{failover_id}: {body['step']}: {body['outcome_reason']}")
            print(f"timings: {timings}")
            return 0 if body["step"] == "done" else 1
        time.sleep(interval)


def _client(args: argparse.Namespace) -> Client:
    url = args.url or os.environ.get("RESPONDER_URL")
    token = os.environ.get("RESPONDER_TOKEN")
    token_file = args.token_file
    if args.config:
        config = load_config(args.config)
        url = url or f"http://{config.listen}"
        if not token_file and config.auth != "none":
            token_file = str(config.auth.operator_token_file)
    if token_file:
        token = read_secret(Path(token_file), "--token-file").value
    return Client(url or DEFAULT_URL, token)


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
        body = client.call("GET", "/api/v1/events", params=params)
        print(json.dumps(body, indent=2) if args.json else format_events(body["events"]))
        return 0
    if cmd == "drill":
        client.timeout = 300.0  # every probe and check, each bounded by its driver's limits
        payload = {"fault": args.fault} if args.fault else None
        body = client.call("POST", f"/api/v1/pairs/{args.pair}/drill", json=payload)
        print(json.dumps(body, indent=2) if args.json else format_drill(body))
        return 0 if body["ok"] else 3
    if cmd == "switchover":
        payload = {"target": args.to, "safe_slots": args.safe_slots, "timeout": args.timeout}
        body = client.call("POST", f"/api/v1/pairs/{args.pair}/switchover", json=payload)
        if args.json and args.no_wait:
            print(json.dumps(body, indent=2))
            return 0
        print(body["reason"], flush=True)
        if args.no_wait:
            return 0
        return _follow(client, body["failover_id"])
    if cmd == "failover":
        body = client.call("POST", f"/api/v1/pairs/{args.pair}/failover", json={"target": args.to})
    elif cmd == "unfence":
        body = client.call("POST", f"/api/v1/pairs/{args.pair}/nodes/{args.node}/unfence")
    elif cmd == "adopt":
        body = client.call("POST", f"/api/v1/pairs/{args.pair}/adopt", json={"node": args.node})
    else:
        body = client.call("POST", f"/api/v1/pairs/{args.pair}/{cmd}")
    print(json.dumps(body, indent=2) if args.json else body["reason"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="responder", description="Slashing-safe failover for validator nodes."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check-config", help="validate a config file and its token files")
    check.add_argument("file", nargs="?")
    check.add_argument("--config", dest="config_opt")
    check.add_argument(
        "--state-dir",
        help="compare against this state dir (default: the config's own, when it exists); "
        "exit 3 when the config would hold pairs there",
    )

    serve = sub.add_parser("serve", help="run the responder under gunicorn")
    serve.add_argument("--config", required=True)
    serve.add_argument("--bind", help="override listen (host:port)")
    serve.add_argument("--workers", type=int, help="override workers")

    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--url", help=f"responder URL (env RESPONDER_URL, default {DEFAULT_URL})")
    client.add_argument("--token-file", help="operator token file (or env RESPONDER_TOKEN)")
    client.add_argument("--config", help="take URL and operator token file from this config")
    client.add_argument("--json", action="store_true", help="print the raw JSON answer")

    sub.add_parser("status", parents=[client], help="pairs, roles, pending faults, reasons")
    events = sub.add_parser("events", parents=[client], help="the audit trail, newest first")
    events.add_argument("--pair")
    events.add_argument("--limit", type=int, default=30)
    for name, text in (
        ("pause", "stop acting on alerts for a pair (they are still recorded)"),
        ("resume", "act on alerts again"),
        ("ack", "acknowledge a failed or finished failover and re-arm automation"),
        ("confirm", "allow an activation waiting for an operator (no history was handed over)"),
        ("abort", "stop the failover in flight before its activation"),
    ):
        sub.add_parser(name, parents=[client], help=text).add_argument("pair")
    failover = sub.add_parser("failover", parents=[client], help="fail over by hand to a standby")
    failover.add_argument("pair")
    failover.add_argument("--to", required=True, help="the standby to activate")
    unfence = sub.add_parser("unfence", parents=[client], help="return a repaired node to standby")
    unfence.add_argument("pair")
    unfence.add_argument("node")
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
        "ends a standby; waits for the outcome",
    )
    switch.add_argument("pair", help="the pair to switch over")
    switch.add_argument("--to", required=True, help="the standby to activate")
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
    adopt = sub.add_parser(
        "adopt",
        parents=[client],
        help="record the node that really signs as active (probed: it must be the only signer)",
    )
    adopt.add_argument("pair")
    adopt.add_argument("node", help="the node every probe shows signing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
