"""python -m tests.chaos --scenarios 1000 --seed 20261126 [--etcd] | --replay SEED:INDEX [--etcd]

Runs a seeded, reproducible chaos campaign against the responder (see docs/safety.md) and exits
1 on any invariant violation. `--replay` re-runs exactly one scenario with its trace. `--etcd`
runs each responder incarnation as a replica on a real etcd (one per worker) and makes each
crash a leader kill; the real-process scenarios are skipped then.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

import responder
from tests.chaos import campaign, etcdmode
from tests.chaos import scenarios as S
from tests.chaos import world as w


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--scenarios", type=int, default=1000, help="how many (default 1000)")
    parser.add_argument("--seed", type=int, default=20261126, help="campaign seed")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--start", type=int, default=0, help="first scenario index")
    parser.add_argument(
        "--in-process-only", action="store_true", help="skip the real-process scenarios"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="DIM=VALUE",
        help="run only scenarios whose kind matches, e.g. primary=fence_lies (repeatable)",
    )
    parser.add_argument(
        "--etcd",
        action="store_true",
        help="replicas on a real etcd, crashes are leader kills (in-process scenarios only)",
    )
    parser.add_argument("--replay", metavar="SEED:INDEX", help="re-run one scenario, verbosely")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    print(f"responder under test: {responder.__file__}", flush=True)

    if args.replay:
        seed, _, index = args.replay.partition(":")
        campaign.quiet_logs(True)
        root = campaign.scratch_root()
        server = w.NodeServer().start()
        etcd = None
        try:
            if args.etcd:
                etcd = etcdmode.start(root / "etcd")
            r = campaign.run_one(
                int(seed),
                int(index),
                server,
                root,
                verbose=True,
                etcd_url=etcd.url if etcd is not None else None,
            )
        finally:
            server.stop()
            if etcd is not None:
                etcdmode.stop(etcd)
            shutil.rmtree(root, ignore_errors=True)
        print("\n".join(r.trace))
        for t in r.timings:
            print(f"  failover time {t.pair}: {t.seconds:.2f}s")
        for k in r.known:
            print(f"  known product gap (reported, not a violation): {k}")
        if args.etcd:
            print(
                f"  mode etcd: leader kills {r.leader_kills}; refused after the kill: "
                f"{r.refused_calls} node calls, {r.refused_writes} writes"
            )
        if r.violations:
            print(campaign.report(r, full_trace=False))
            return 1
        print(f"scenario {r.key}: no violation ({r.seconds:.1f}s)")
        return 0

    wanted = [tuple(o.split("=", 1)) for o in args.only]
    indices = []
    skipped = 0
    for i in range(args.start, args.start + args.scenarios):
        if args.in_process_only and S.is_real(i):
            continue
        if args.etcd and S.is_real(i):
            skipped += 1
            continue
        if wanted:
            kinds = S.generate(args.seed, i).kinds()
            if not all(kinds.get(k) == v or v in kinds.get(k, "") for k, v in wanted):
                continue
        indices.append(i)
    mode = "etcd" if args.etcd else "sqlite"
    if skipped:
        print(f"etcd mode: {skipped} real-process (gunicorn) scenarios skipped", flush=True)
    started = time.monotonic()
    results: list[campaign.Result] = []
    for r in campaign.run_many(args.seed, indices, args.jobs, etcd=args.etcd):
        results.append(r)
        if r.violations:
            print(campaign.report(r), flush=True)
        if not args.quiet and len(results) % 100 == 0:
            print(
                f"  ... {len(results)}/{len(indices)} scenarios, {time.monotonic() - started:.0f}s",
                flush=True,
            )
    results.sort(key=lambda r: r.index)
    print(
        campaign.summary(results, args.seed, time.monotonic() - started, mode=mode, skipped=skipped)
    )
    return 1 if any(r.violations for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
