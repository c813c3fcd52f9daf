"""What a node said to a read-only probe: the observation every safety decision rests on.

The record of roles is what the responder believes; an observation is what a node answered, with
the time. Unreachable or "cannot tell" is kept as such (signing None), never read as silence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NodeObservation:
    """What one node said to a read-only probe, and since when it has been quiet.

    `signing` None means the responder does not know: the node did not answer, or its answer
    cannot tell. `quiet_since` is when the current run of "not signing" answers began.
    """

    pair: str
    node: str
    at: float  # responder time
    at_wall: float
    reachable: bool
    healthy: bool | None
    signing: bool | None
    detail: str
    quiet_since: float | None = None
    chain: str | None = None  # the chain the node named, when its driver tells

    def to_json(self) -> dict[str, Any]:
        return {
            "pair": self.pair,
            "node": self.node,
            "at": self.at,
            "at_wall": self.at_wall,
            "reachable": self.reachable,
            "healthy": self.healthy,
            "signing": self.signing,
            "detail": self.detail,
            "quiet_since": self.quiet_since,
            "chain": self.chain,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeObservation:
        return cls(
            pair=data["pair"],
            node=data["node"],
            at=float(data["at"]),
            at_wall=float(data["at_wall"]),
            reachable=bool(data["reachable"]),
            healthy=data["healthy"],
            signing=data["signing"],
            detail=str(data["detail"]),
            quiet_since=data.get("quiet_since"),
            chain=data.get("chain"),
        )

    @property
    def says(self) -> str:
        """The answer in plain words, as status shows it."""
        if not self.reachable:
            return "unreachable"
        if self.signing is None:
            return "answers, cannot tell whether it signs"
        text = "signing" if self.signing else "not signing"
        return text if self.healthy is not False else f"{text}, unhealthy"
