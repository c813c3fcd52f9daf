"""Start-up with many pairs: the config is parsed once and handed on, and what it checks per
pair costs the same for 1,000 pairs as it did for one (issue 12). No timing is asserted here:
bench/startup.py measures it."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from responder import config as config_module
from responder.clock import ManualClock
from responder.config import (
    Config,
    ConfigError,
    HttpDriverConfig,
    KeymanagerDriverConfig,
    NodeConfig,
    check_config_file,
    file_problems,
    load_config,
    parse_config,
)
from tests.conftest import Harness, base_config, write_config

ROOT = Path(__file__).resolve().parents[1]


def many_pairs(count: int) -> dict[str, Any]:
    """`count` pairs of two http nodes with their own names, labels and URLs, one token file."""
    data = base_config(lambda n: f"http://127.0.0.1:9/{n}")
    policy = data["pairs"][0]["policy"]
    data["pairs"] = [
        {
            "name": f"pair-{p}",
            "policy": policy,
            "nodes": [
                {
                    "name": f"node-{side}",
                    "match": {"pair": f"pair-{p}", "node": f"node-{side}"},
                    "driver": {
                        "type": "http",
                        "url": f"http://10.0.{p // 200}.{p % 200}:{9000 + i}",
                        "token_file": "./secrets/node-token",
                    },
                }
                for i, side in enumerate("ab")
            ],
        }
        for p in range(count)
    ]
    return data


# ---- parsed once, handed on -------------------------------------------------------------------


def test_an_unchanged_file_is_validated_once_per_process(tmp_path: Path) -> None:
    """`serve` checks the file, gunicorn loads it, each worker checks it: one parse, one object."""
    path = write_config(tmp_path, many_pairs(3))
    checked = check_config_file(path)
    assert checked.problems == [] and checked.config is not None
    assert load_config(path) is checked.config
    assert check_config_file(path).config is checked.config


def test_an_edited_file_is_parsed_again(tmp_path: Path) -> None:
    """After an edit (e.g. before a HUP) the new text is what counts, not the remembered one."""
    path = write_config(tmp_path, many_pairs(3))
    first = load_config(path)
    path.write_text(yaml.safe_dump(many_pairs(4)))
    second = load_config(path)
    assert second is not first and len(second.pairs) == 4


def test_a_forked_worker_reuses_the_masters_config(tmp_path: Path) -> None:
    """gunicorn forks its workers from the master: a worker's check returns the master's
    object (no parse), and still checks the files the config names."""
    path = write_config(tmp_path, many_pairs(3))
    master = load_config(path)
    pid = os.fork()
    if pid == 0:  # the worker
        code = 1
        try:
            checked = check_config_file(path)
            code = 0 if checked.config is master and checked.problems == [] else 2
            (tmp_path / "secrets" / "node-token").unlink()
            missing = check_config_file(path)
            code = code or (0 if missing.config is master and len(missing.problems) == 6 else 3)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_an_invalid_file_is_not_remembered(tmp_path: Path) -> None:
    """A config that does not validate is reported each time, never served from memory."""
    data = many_pairs(2)
    data["pairs"][1]["name"] = "pair-0"
    path = write_config(tmp_path, data)
    for _ in range(2):
        with pytest.raises(ConfigError, match="pair names must be unique"):
            load_config(path)


def test_the_cli_does_not_load_prometheus_client() -> None:
    """`serve` runs gunicorn in its own process after setting PROMETHEUS_MULTIPROC_DIR, which
    prometheus_client reads when it is imported: the CLI must not have imported it yet."""
    code = "import sys, responder.cli; print('prometheus_client' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == "False"


# ---- the YAML loader ----------------------------------------------------------------------------


def test_libyaml_loader_is_used_when_pyyaml_has_it() -> None:
    """The C loader parses a 1,000-pair config ~10x faster than the pure-Python one."""
    if not yaml.__with_libyaml__:
        pytest.skip("PyYAML built without libyaml")
    assert config_module._YAML_LOADER is yaml.CSafeLoader


@pytest.mark.parametrize("loader", [yaml.SafeLoader, getattr(yaml, "CSafeLoader", None)])
@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("listen: 127.0.0.1:9095\npairs:\n  - name: [unclosed\n    nodes: []\n", ":4:"),
        ("listen: a\n  state_dir: b\n", ":2:"),
        ("pairs:\n  - &a {name: x}\n  - *b\n", ":3:"),
        ("auth: !!python/object:os.system x\n", ":1:"),
    ],
)
def test_yaml_errors_name_file_line_and_column_with_either_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loader: Any, text: str, where: str
) -> None:
    """A syntax error, an unknown alias or an unsafe tag says file:line:column, C loader or not."""
    if loader is None:
        pytest.skip("PyYAML built without libyaml")
    monkeypatch.setattr(config_module, "_YAML_LOADER", loader)
    path = tmp_path / "responder.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    [problem] = exc.value.problems
    assert problem.startswith(f"{path}{where}"), problem
    assert "not valid YAML" in problem


def test_both_loaders_read_a_config_alike(tmp_path: Path) -> None:
    """Anchors, merge keys, numbers, booleans and quoted strings mean the same to both loaders."""
    text = (
        "defaults: &d {timeout: 2s, connect_timeout: 1}\n"
        "a: {<<: *d, url: 'http://x', on: yes, n: 012, f: 1.5e3, s: '123', nil: ~}\n"
        "list: [1, two, 'three', null, true]\n"
    )
    assert yaml.load(text, Loader=config_module._YAML_LOADER) == yaml.safe_load(text)


# ---- per-pair checks stay per pair ----------------------------------------------------------------


def test_a_thousand_pairs_validate_with_every_file_checked(tmp_path: Path) -> None:
    """1,000 pairs sharing one token file: valid, no warning, and the token file still checked."""
    path = write_config(tmp_path, many_pairs(1000))
    checked = check_config_file(path)
    assert checked.problems == [] and checked.warnings == []
    assert checked.config is not None and len(checked.config.pairs) == 1000
    (tmp_path / "secrets" / "node-token").write_text("\n")
    problems = file_problems(checked.config)
    assert len(problems) == 2000  # one per node that names it, each with its key path
    assert problems[0].startswith("pairs[0].nodes[0].driver.token_file: ")
    assert problems[-1].startswith("pairs[999].nodes[1].driver.token_file: ")


def test_duplicates_among_a_thousand_pairs_are_still_found() -> None:
    """A shared URL, a repeated match and a match covering another's, far apart in a
    1,000-pair config, are each reported naming both key paths."""
    data = many_pairs(1000)
    pairs = data["pairs"]
    pairs[700]["nodes"][1]["driver"]["url"] = pairs[3]["nodes"][0]["driver"]["url"] + "/"
    pairs[999]["nodes"][0]["match"] = dict(pairs[10]["nodes"][1]["match"])
    pairs[500]["nodes"][1]["match"] = {"pair": "pair-20", "node": "node-a", "dc": "x"}
    with pytest.raises(ConfigError) as exc:
        parse_config(data, Path("/etc/responder"))
    problems = exc.value.problems
    assert len(problems) == 3, problems  # in the order of their first node in the file
    assert problems[0].startswith(
        "pairs[700].nodes[1].driver.url: the same URL as pairs[3].nodes[0].driver.url"
    )
    assert problems[1].startswith(
        "pairs[999].nodes[0].match: the same labels as pairs[10].nodes[1].match"
    )
    assert problems[2].startswith(
        "pairs[500].nodes[1].match: every alert that matches pairs[500].nodes[1].match also "
        "matches pairs[20].nodes[0].match"
    )


def _reference_overlaps(config: Config) -> list[str]:
    """Every node against every other, as the check was first written (pairs squared)."""
    nodes = [
        (f"pairs[{p_i}].nodes[{n_i}]", pair.name, node)
        for p_i, pair in enumerate(config.pairs)
        for n_i, node in enumerate(pair.nodes)
    ]
    problems = []
    for i, (first_at, first_pair, first) in enumerate(nodes):
        for at, pair, node in nodes[i + 1 :]:
            same_pair = pair == first_pair
            mine, theirs = set(node.match.items()), set(first.match.items())
            if mine == theirs:
                what = (
                    f"every alert would go to {first.name} (the first), never to {node.name}"
                    if same_pair
                    else f"one alert would count as a fault of {first_pair}/{first.name} and "
                    f"of {pair}/{node.name}"
                )
                problems.append(
                    f"{at}.match: the same labels as {first_at}.match "
                    f"({_labels(node.match)}): {what}"
                )
            elif theirs < mine or (not same_pair and mine < theirs):
                wide, narrow = (first_at, at) if theirs < mine else (at, first_at)
                what = (
                    f"{first.name} comes first, so {node.name} would never get an alert"
                    if same_pair
                    else "one alert would count as a fault in both pairs"
                )
                problems.append(
                    f"{at}.match: every alert that matches {narrow}.match also matches "
                    f"{wide}.match: {what}; add a label that tells them apart"
                )
            url, first_url = _url(node), _url(first)
            if url is not None and url == first_url:
                what = (
                    "fencing one would stop the other, and no probe could tell them apart"
                    if same_pair
                    else f"pairs {first_pair} and {pair} would both fence and activate it"
                )
                problems.append(
                    f"{at}.driver.url: the same URL as {first_at}.driver.url ({url}): {what}"
                )
    return problems


def _labels(match: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(match.items())) + "}"


def _url(node: NodeConfig) -> str | None:
    if not isinstance(node.driver, HttpDriverConfig | KeymanagerDriverConfig):
        return None
    scheme, _, rest = node.driver.url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}{slash}{path}".rstrip("/")


def test_indexed_overlap_check_reports_what_comparing_every_pair_did() -> None:
    """On 600 random configs (labels equal, nested, crossing; shared URLs in other spellings;
    command drivers) the indexed check finds the same problems, in the same order, as
    comparing every node with every other."""
    rng = random.Random(12)
    keys, values = "abcdef", "12"
    urls = ["http://h1", "http://H1/", "https://h1", "http://h1/x", "http://h2:80"]
    with_problems = 0
    for _ in range(600):
        pairs = []
        for p in range(rng.randint(1, 6)):
            nodes = []
            for n in range(rng.randint(2, 3)):
                match = {k: rng.choice(values) for k in rng.sample(keys, rng.randint(1, 6))}
                driver: dict[str, Any] = (
                    {"type": "http", "url": rng.choice(urls)}
                    if rng.random() < 0.8
                    else {"type": "command", "status": ["s"], "fence": ["f"], "activate": ["a"]}
                )
                nodes.append({"name": f"n{n}", "match": match, "driver": driver})
            pairs.append({"name": f"p{p}", "nodes": nodes, "policy": {"triggers": ["X"]}})
        config = Config.model_validate(
            {"auth": "none", "pairs": pairs}, context={"base_dir": Path("/etc")}
        )
        expected = _reference_overlaps(config)
        with_problems += bool(expected)
        assert config_module._overlap_problems(config) == expected
    assert 100 < with_problems < 600  # both kinds of config were tried


# ---- metrics -------------------------------------------------------------------------------------


def failover_samples(text: str) -> dict[tuple[str, str], float]:
    found = {}
    for line in text.splitlines():
        if line.startswith("responder_failovers_total{"):
            labels, _, value = line.partition("} ")
            parts = dict(item.split("=") for item in labels.split("{", 1)[1].split(","))
            found[(parts["pair"].strip('"'), parts["outcome"].strip('"'))] = float(value)
    return found


def test_every_pairs_failover_counters_are_scraped_at_zero(tmp_path: Path) -> None:
    """Each configured pair shows its four failover counters at 0 from the first scrape,
    without a series set up per pair at start; a counted one shows its count, once."""
    config = load_config(write_config(tmp_path, many_pairs(3)))
    h = Harness(config, ManualClock())
    try:
        samples = failover_samples(h.client.get("/metrics").get_data(as_text=True))
        outcomes = ("done", "dry_run", "failed", "aborted")
        expected = {(f"pair-{p}", o): 0.0 for p, o in itertools.product(range(3), outcomes)}
        assert samples == expected
        h.responder.metrics.failovers.labels(pair="pair-1", outcome="failed").inc()
        text = h.client.get("/metrics").get_data(as_text=True)
        assert text.count('responder_failovers_total{outcome="failed",pair="pair-1"}') == 1
        assert failover_samples(text) == expected | {("pair-1", "failed"): 1.0}
    finally:
        h.store.close()
