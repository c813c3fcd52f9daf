"""A fake service manager for the simulated CometBFT signer, shaped like systemctl.

    python -m responder.sim.cometctl --home HOME start|stop|is-active

It finds its node through HOME/sim-admin-url (written by `python -m responder.sim cosmos`) and
calls the node's loopback control API. Exit status as systemctl's: 0 done (is-active: active),
1 start/stop failed, 3 is-active: not active (it prints inactive, activating or failed), 4 the
node cannot be reached (no such unit).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

from .cosmos import ADMIN_URL_FILE

TIMEOUT = 5.0
EXIT_FAILED = 1
EXIT_INACTIVE = 3
EXIT_NO_UNIT = 4


def _call(home: Path, method: str, path: str) -> tuple[int, dict[str, Any]]:
    url = (home / ADMIN_URL_FILE).read_text(encoding="utf-8").strip()
    with requests.Session() as session:
        session.trust_env = False  # loopback: never through a proxy from the environment
        resp = session.request(method, url + path, timeout=TIMEOUT)
    try:
        body = resp.json()
    except ValueError:
        body = {}
    return resp.status_code, body if isinstance(body, dict) else {}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m responder.sim.cometctl",
        description="Start, stop or query the simulated CometBFT signer (a fake systemctl).",
    )
    parser.add_argument("--home", required=True, type=Path, help="the simulated node's home")
    parser.add_argument("command", choices=("start", "stop", "is-active"))
    args = parser.parse_args(argv)
    try:
        if args.command == "is-active":
            status, body = _call(args.home, "GET", "/sim/signer")
        else:
            status, body = _call(args.home, "POST", f"/sim/signer/{args.command}")
    except (OSError, requests.RequestException) as exc:
        print(f"cometctl: node at {args.home} unreachable: {exc}", file=sys.stderr)
        return EXIT_NO_UNIT
    if args.command == "is-active":
        print(body.get("service", "unknown"))
        return 0 if status == 200 and body.get("active") is True else EXIT_INACTIVE
    if status != 200:
        print(f"cometctl: {args.command} failed: {body.get('error', status)}", file=sys.stderr)
        return EXIT_FAILED
    print(body.get("service", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
