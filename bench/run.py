"""`make bench`: every figure of docs/benchmarks.md, the goal beside it, and whether it holds.

Runs, in this order: ingestion side by side with its baseline (wrk), the failover path against
instant fake nodes, start-up with many pairs, and fault -> activation end to end with real
Prometheus and Alertmanager. Prints one table with the machine's core count and the exact
command, and with --json writes the rows for docs/benchmarks.md. A goal that does not hold
is reported, not an error; the exit status is non-zero only when a benchmark could not run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report

SECTIONS = ("ingest", "failover", "startup", "e2e")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="small, fast variants (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    sections = args.only.split(",") if args.only else list(SECTIONS)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    print(report.header(), flush=True)
    rows: list[report.Row] = []
    failed = False
    for name in sections:
        started = time.monotonic()
        print(f"\n== {name} ...", flush=True)
        try:
            module = importlib.import_module(f"bench.{name}")
            got = module.rows(quick=args.quick)
        except Exception as exc:
            traceback.print_exc()
            failed = True
            got = [report.Row(f"{name}: could not run", type(exc).__name__, "-", False, str(exc))]
        print(report.render(got), flush=True)
        print(f"({name}: {time.monotonic() - started:.0f} s)", flush=True)
        rows.extend(got)
    print("\n== all figures\n" + report.header() + "\n")
    print(report.render(rows))
    if args.json is not None:
        report.save(rows, args.json)
        print(f"\nwritten to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
