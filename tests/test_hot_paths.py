"""Lookups made fast for storms keep the answers of the simple versions they replaced."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from responder.config import ConfigError, load_config, read_secret
from responder.service import _RouteIndex
from tests.conftest import base_config, write_config


def _route_by_trying(config, labels):
    """The original routing: each pair in order, its first node whose labels all match."""
    out = []
    for pair in config.pairs:
        for node in pair.nodes:
            if node.matches(labels):
                out.append((pair.name, node.name))
                break
    return out


@pytest.mark.parametrize("seed", range(20))
def test_route_index_answers_as_trying_every_node(tmp_path: Path, seed: int) -> None:
    """Random pairs matching on different label names (one, two or none in common), random
    alerts: the index gives the same (pair, node) list, in the same order, as trying them."""
    rng = random.Random(seed)
    names = ["node", "instance", "pair", "job"]
    values = ["a", "b", "c"]
    pairs = []
    matches = []
    for p in range(rng.randint(1, 6)):
        nodes = []
        for n in range(rng.randint(2, 3)):
            keys = rng.sample(names, rng.randint(1, 2))
            match = {keys[0]: f"{p}{n}"} | {k: rng.choice(values) for k in keys[1:]}
            matches.append(match)
            nodes.append(
                {
                    "name": f"n{n}",
                    "match": match,
                    "driver": {
                        "type": "http",
                        "url": f"http://127.0.0.1:9/{p}/{n}",
                        "token_file": "./secrets/node-token",
                    },
                }
            )
        pairs.append({"name": f"p{p}", "nodes": nodes, "policy": {"triggers": ["X"]}})
    config = load_config(write_config(tmp_path, base_config(lambda n: "", pairs=pairs)))
    index = _RouteIndex(config)
    hits = 0
    for _ in range(300):
        labels = dict(rng.choice(matches)) if rng.random() < 0.7 else {}
        for key in rng.sample(names, rng.randint(0, 2)):  # add, change or drop labels
            if key in labels and rng.random() < 0.5:
                del labels[key]
            else:
                labels[key] = rng.choice([*values, f"{rng.randint(0, 5)}{rng.randint(0, 2)}"])
        expected = _route_by_trying(config, labels)
        hits += bool(expected)
        assert index.route(labels) == expected
    assert hits > 30  # the draws do reach nodes


def test_a_rotated_token_is_read_at_the_next_call(tmp_path: Path) -> None:
    """An unchanged token file is not read again, but a rewritten or replaced one is."""
    path = tmp_path / "token"
    path.write_text("first\n")
    assert read_secret(path, "t").value == "first"
    path.write_text("second-token\n")
    assert read_secret(path, "t").value == "second-token"
    fresh = tmp_path / "token.new"
    fresh.write_text("third-token!\n")
    os.replace(fresh, path)  # how tools rotate secrets: a new file renamed over the old
    assert read_secret(path, "t").value == "third-token!"
    path.unlink()
    with pytest.raises(ConfigError, match="cannot read"):
        read_secret(path, "t")


def test_pairs_are_found_by_name(tmp_path: Path) -> None:
    """Config.pair finds every configured pair and refuses an unknown one."""
    data = base_config(lambda n: f"http://127.0.0.1:9/{n}")
    config = load_config(write_config(tmp_path, data))
    assert config.pair("mainnet-a") is config.pairs[0]
    with pytest.raises(KeyError):
        config.pair("mainnet-b")
