"""A fake `agave-validator` CLI for the simulated Solana node (test and lab equipment).

    python -m responder.sim.agave -l LEDGER set-identity [--require-tower] KEYPAIR.json
    python -m responder.sim.agave -l LEDGER wait-for-restart-window [--min-idle-time N]
        [--skip-new-snapshot-check]

Like the real CLI talking to the validator's admin socket in the ledger, it finds its node
through `LEDGER/sim-admin-url` (written by `python -m responder.sim solana`) and calls the
node's loopback admin API. Exit 0 on success; 1 with the node's reason on stderr otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .solana import ADMIN_URL_FILE

TIMEOUT = 120.0  # the agent bounds the whole command with its own timeout


def _call(ledger: Path, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST to the node's admin API; RuntimeError with a readable reason on any failure."""
    try:
        base = (ledger / ADMIN_URL_FILE).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise RuntimeError(
            f"cannot reach the validator: {ledger / ADMIN_URL_FILE}: {exc.strerror} "
            "(is the validator running with this ledger?)"
        ) from None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(  # noqa: S310 - a loopback http:// URL the sim wrote
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with opener.open(request, timeout=TIMEOUT) as resp:
            answer: Any = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", errors="replace")
        try:
            reason = json.loads(text).get("error", text)
        except (ValueError, AttributeError):
            reason = text.strip() or exc.reason
        raise RuntimeError(f"admin RPC error (HTTP {exc.code}): {reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RuntimeError(f"cannot reach the validator's admin API at {base}: {exc}") from None
    return answer if isinstance(answer, dict) else {}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agave-validator (simulated)")
    parser.add_argument("-l", "--ledger", required=True, type=Path)
    commands = parser.add_subparsers(dest="command", required=True)
    identity = commands.add_parser("set-identity", help="switch the validator's identity")
    identity.add_argument("--require-tower", action="store_true")
    identity.add_argument("keypair", type=Path)
    window = commands.add_parser("wait-for-restart-window", help="wait for an idle window")
    window.add_argument("--min-idle-time", type=int, default=10, help="minutes")
    window.add_argument("--skip-new-snapshot-check", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "set-identity":
            answer = _call(
                args.ledger,
                "/sim/admin/set-identity",
                {"keypair": str(args.keypair.resolve()), "require_tower": args.require_tower},
            )
            print(f"identity set to {answer.get('identity')}")
        else:
            _call(
                args.ledger,
                "/sim/admin/wait-for-restart-window",
                {
                    "min_idle_time": args.min_idle_time,
                    "skip_new_snapshot_check": args.skip_new_snapshot_check,
                },
            )
            print("Ready to restart")
    except RuntimeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
