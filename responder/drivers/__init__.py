"""Driver registry: one explicit dict per kind, no discovery."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import Config, KeymanagerDriverConfig, NodeConfig, PairConfig
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
