"""One table for every benchmark: the figure, the goal beside it, and whether it holds.

Each bench module returns `Row`s; `bench/run.py` prints them together with the machine's core
count and the exact command, and writes them as JSON for docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Row:
    """One measured figure. `holds` is None when there is no goal (context only)."""

    what: str
    value: str
    goal: str
    holds: bool | None
    detail: str = ""
    numbers: dict[str, float] = field(default_factory=dict)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank: a figure one of the samples really had."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


def machine() -> str:
    return (
        f"{os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def command() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def render(rows: Iterable[Row]) -> str:
    rows = list(rows)
    width = max([len(r.what) for r in rows] + [4])
    vwidth = max([len(r.value) for r in rows] + [5])
    gwidth = max([len(r.goal) for r in rows] + [4])
    lines = [
        f"{'what':<{width}}  {'value':>{vwidth}}  {'goal':<{gwidth}}  holds",
        "-" * (width + vwidth + gwidth + 11),
    ]
    for r in rows:
        mark = "-" if r.holds is None else ("yes" if r.holds else "NO")
        lines.append(f"{r.what:<{width}}  {r.value:>{vwidth}}  {r.goal:<{gwidth}}  {mark}")
        if r.detail:
            for part in r.detail.splitlines():
                lines.append(f"    {part}")
    return "\n".join(lines)


def header() -> str:
    return f"machine: {machine()}\ncommand: {command()}"


def save(rows: Iterable[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"machine": machine(), "command": command(), "rows": [asdict(r) for r in rows]}
    path.write_text(json.dumps(doc, indent=2) + "\n")
