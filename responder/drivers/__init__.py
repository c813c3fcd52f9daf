"""Driver registry: one explicit dict per kind, no discovery."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import Config, HttpFenceConfig, KeymanagerDriverConfig, NodeConfig, PairConfig
from .base import (
    ActionContext,
    Check,
    DriverError,
    Fencer,
    NodeDriver,
    NodeStatus,
    PlannedCall,
    StepResult,
)
from .command import CommandDriver, CommandFencer
from .guarded import GuardedDriver, GuardedFencer, LeaseGuard
from .http import HttpDriver, HttpFencer
from .keymanager import KeymanagerDriver

__all__ = [
    "ActionContext",
    "Check",
    "DriverError",
    "Fencer",
    "NodeDriver",
    "NodeHandle",
    "NodeStatus",
    "PlannedCall",
    "StepResult",
    "build_nodes",
    "guard_nodes",
]

DRIVERS: dict[str, Callable[[PairConfig, NodeConfig], NodeDriver]] = {
    "http": lambda _pair, node: HttpDriver(node.name, node.driver),  # type: ignore[arg-type]
    "command": lambda _pair, node: CommandDriver(node.name, node.driver),  # type: ignore[arg-type]
    "ethereum-keymanager": lambda pair, node: KeymanagerDriver(node.name, _keymanager(node), pair),
}


def _keymanager(node: NodeConfig) -> KeymanagerDriverConfig:
    assert isinstance(node.driver, KeymanagerDriverConfig)
    return node.driver


FENCERS: dict[str, Callable[[str, int, Any], Fencer]] = {
    "http": HttpFencer,
    "command": CommandFencer,
}


@dataclass(frozen=True)
class NodeHandle:
    """A node's driver plus its extra fence levels, in the order they are tried."""

    driver: NodeDriver
    fencers: tuple[Fencer, ...]


def build_node(pair: PairConfig, node: NodeConfig) -> NodeHandle:
    driver = DRIVERS[node.driver.type](pair, node)
    fencers = tuple(
        FENCERS[level.type](node.name, i, level) for i, level in enumerate(node.fence_levels)
    )
    return NodeHandle(driver=driver, fencers=fencers)


def build_nodes(config: Config) -> dict[tuple[str, str], NodeHandle]:
    """(pair, node) -> handle, for every configured node."""
    return {
        (pair.name, node.name): build_node(pair, node)
        for pair in config.pairs
        for node in pair.nodes
    }


def guard_nodes(
    config: Config, nodes: dict[tuple[str, str], NodeHandle], guard: LeaseGuard
) -> dict[tuple[str, str], NodeHandle]:
    """The same handles, each node call first proving the lease (replicas on etcd)."""
    guarded = {}
    for pair in config.pairs:
        for node in pair.nodes:
            handle = nodes[(pair.name, node.name)]
            fencers = tuple(
                GuardedFencer(
                    fencer,
                    level.timeout
                    + (level.connect_timeout if isinstance(level, HttpFenceConfig) else 0.0),
                    guard,
                    f"{node.name}:fence-level-{index + 1}",
                )
                for index, (fencer, level) in enumerate(
                    zip(handle.fencers, node.fence_levels, strict=True)
                )
            )
            guarded[(pair.name, node.name)] = NodeHandle(
                driver=GuardedDriver(handle.driver, guard, node.name), fencers=fencers
            )
    return guarded
