"""Config checks that catch risky set-ups before `serve` meets them (issue 11, item 5)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from responder.cli import main
from responder.config import ConfigError, load_config, parse_config
from tests.conftest import base_config, write_config

ROOT = "0x" + "ab" * 32
KEY = "0x" + "cd" * 48


def example(**overrides: Any) -> dict[str, Any]:
    """The README example config, with nodes on two distinct loopback ports."""
    ports = {"node-a": 18001, "node-b": 18002}
    return base_config(lambda n: f"http://127.0.0.1:{ports[n]}/{n}", **overrides)


def problems(data: dict[str, Any], base: Path = Path("/etc/responder")) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(data, base)
    return exc.value.problems


def check(
    tmp_path: Path, data: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """Run `responder check-config` on `data` written with its token files; (exit, output)."""
    path = write_config(tmp_path, data)
    code = main(["check-config", str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err


# ---- state_dir --------------------------------------------------------------------------------


def test_state_dir_that_cannot_be_created_fails_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state_dir under a regular file cannot be created: check-config says so (not ok)."""
    (tmp_path / "blocker").write_text("a file, not a directory\n")
    code, out = check(tmp_path, example(state_dir="./blocker/var"), capsys)
    assert code == 1
    assert f"state_dir: cannot create {tmp_path}/blocker/var: {tmp_path}/blocker is not a" in out
    assert "ok" not in out.split("invalid")[0]


def test_state_dir_that_is_a_file_fails_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state_dir that exists as a file is reported as such."""
    (tmp_path / "var").write_text("")
    code, out = check(tmp_path, example(state_dir="./var"), capsys)
    assert code == 1
    assert f"state_dir: {tmp_path}/var exists and is not a directory" in out


def test_serve_refuses_an_unusable_state_dir_with_the_same_message_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`serve` stops before gunicorn with check-config's words, not a Python traceback."""
    (tmp_path / "blocker").write_text("")
    path = write_config(tmp_path, example(state_dir="./blocker/var"))
    assert main(["serve", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: invalid" in err
    assert "state_dir: cannot create" in err
    assert "Traceback" not in err


# ---- nodes an alert or a call could not tell apart -----------------------------------------------


def two_pairs() -> dict[str, Any]:
    data = example()
    second = copy.deepcopy(data["pairs"][0])
    second["name"] = "mainnet-b"
    for i, node in enumerate(second["nodes"]):
        node["name"] = f"node-{'cd'[i]}"
        node["match"] = {"node": node["name"]}
        node["driver"]["url"] = f"http://127.0.0.1:{18003 + i}"
    data["pairs"].append(second)
    return data


def test_two_nodes_of_a_pair_with_the_same_match_are_an_error_naming_both() -> None:
    """Within a pair, a repeated `match` would route every alert to the first node."""
    data = example()
    data["pairs"][0]["nodes"][1]["match"] = {"node": "node-a"}
    found = problems(data)
    assert len(found) == 1
    assert found[0].startswith(
        "pairs[0].nodes[1].match: the same labels as pairs[0].nodes[0].match"
    )
    assert "every alert would go to node-a (the first), never to node-b" in found[0]


def test_a_match_shadowed_by_an_earlier_wider_one_is_an_error() -> None:
    """An earlier node whose labels are a subset of a later one's takes all its alerts."""
    data = example()
    data["pairs"][0]["nodes"][0]["match"] = {"job": "validator"}
    data["pairs"][0]["nodes"][1]["match"] = {"job": "validator", "node": "node-b"}
    [found] = problems(data)
    assert found.startswith("pairs[0].nodes[1].match: every alert that matches pairs[0].nodes[1]")
    assert "also matches pairs[0].nodes[0].match" in found
    assert "node-b would never get an alert" in found


def test_the_same_match_in_two_pairs_is_an_error_naming_both() -> None:
    """Across pairs, one alert would count as a fault in both pairs."""
    data = two_pairs()
    data["pairs"][1]["nodes"][0]["match"] = {"node": "node-a"}
    [found] = problems(data)
    assert found.startswith("pairs[1].nodes[0].match: the same labels as pairs[0].nodes[0].match")
    assert "mainnet-a/node-a" in found and "mainnet-b/node-c" in found


def test_the_same_driver_url_within_a_pair_is_an_error_naming_both() -> None:
    """Two nodes behind one URL: fencing one would stop the other."""
    data = example()
    nodes = data["pairs"][0]["nodes"]
    nodes[1]["driver"]["url"] = nodes[0]["driver"]["url"] + "/"
    [found] = problems(data)
    assert found.startswith("pairs[0].nodes[1].driver.url: the same URL as pairs[0].nodes[0]")
    assert "fencing one would stop the other" in found


def test_the_same_driver_url_in_two_pairs_is_an_error_naming_both() -> None:
    """Two pairs driving one node would both fence and activate it."""
    data = two_pairs()
    data["pairs"][1]["nodes"][1]["driver"]["url"] = data["pairs"][0]["nodes"][0]["driver"]["url"]
    [found] = problems(data)
    assert found.startswith("pairs[1].nodes[1].driver.url: the same URL as pairs[0].nodes[0]")
    assert "pairs mainnet-a and mainnet-b would both fence and activate it" in found


def test_distinct_nodes_in_two_pairs_pass() -> None:
    """Distinct labels and URLs in two pairs raise nothing."""
    config = parse_config(two_pairs(), Path("/etc/responder"))
    assert [p.name for p in config.pairs] == ["mainnet-a", "mainnet-b"]


# ---- risky policy ---------------------------------------------------------------------------------


def test_hold_and_cooldown_both_zero_warn_but_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hold 0s with cooldown 0s is allowed, with a warning; the exit status stays 0."""
    code, out = check(tmp_path, example(policy={"hold": "0s", "cooldown": "0s"}), capsys)
    assert code == 0, out
    assert "warning: pairs[0].policy: hold 0s with cooldown 0s" in out
    assert ": ok" in out


def test_hold_zero_alone_does_not_warn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A cooldown still bounds a zero hold: no warning."""
    code, out = check(tmp_path, example(policy={"hold": "0s"}), capsys)
    assert code == 0 and "warning" not in out


# ---- every missing file in one run --------------------------------------------------------------


def with_every_file(data: dict[str, Any]) -> dict[str, Any]:
    """Name a file of every kind: CA file, fence level and check tokens, keystore, password."""
    nodes = data["pairs"][0]["nodes"]
    nodes[0]["driver"]["tls"] = {"ca_file": "./missing/ca.pem"}
    nodes[0]["fence_levels"] = [
        {
            "type": "http",
            "url": "http://127.0.0.1:18100/outlet/1/off",
            "token_file": "./missing/pdu-token",
            "check": {"url": "http://127.0.0.1:18100/outlet/1", "token_file": "./missing/check"},
        }
    ]
    nodes[1]["driver"] = {
        "type": "ethereum-keymanager",
        "url": "https://127.0.0.1:18002",
        "token_file": "./missing/km-token",
    }
    nodes[0]["driver"] = {**nodes[0]["driver"], "token_file": "./missing/node-token"}
    data["pairs"][0]["ethereum"] = {
        "genesis_validators_root": ROOT,
        "pubkeys": [KEY],
        "keystores": [
            {
                "pubkey": KEY,
                "keystore_file": "./missing/keystore.json",
                "password_file": "./missing/password",
            }
        ],
    }
    data["auth"] = {
        "webhook_token_file": "./missing/webhook-token",
        "operator_token_file": "./secrets/operator-token",
    }
    return data


EVERY_MISSING = [
    "auth.webhook_token_file",
    "pairs[0].nodes[0].driver.token_file",
    "pairs[0].nodes[0].driver.tls.ca_file",
    "pairs[0].nodes[0].fence_levels[0].token_file",
    "pairs[0].nodes[0].fence_levels[0].check.token_file",
    "pairs[0].nodes[1].driver.token_file",
    "pairs[0].ethereum.keystores[0].keystore_file",
    "pairs[0].ethereum.keystores[0].password_file",
]


def test_every_missing_file_is_reported_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tokens, keystores, passwords, CA files and check tokens: all named at once."""
    code, out = check(tmp_path, with_every_file(example()), capsys)
    assert code == 1
    for key in EVERY_MISSING:
        assert f"  {key}: cannot read {tmp_path}/missing/" in out, key
    assert "auth.operator_token_file" not in out


def test_missing_files_are_reported_with_schema_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config that does not validate still gets its missing files listed in the same run."""
    data = with_every_file(example())
    data["pairs"][0]["policy"]["hodl"] = "20s"
    code, out = check(tmp_path, data, capsys)
    assert code == 1
    assert "pairs[0].policy.hodl: unknown key" in out
    for key in EVERY_MISSING:
        assert f"  {key}: cannot read {tmp_path}/missing/" in out, key


def test_schema_errors_come_with_an_unusable_state_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The state_dir check also runs on a config that does not validate."""
    (tmp_path / "blocker").write_text("")
    code, out = check(tmp_path, example(state_dir="./blocker/var", listen="nope"), capsys)
    assert code == 1
    assert "listen: Value error, must be host:port" in out
    assert "state_dir: cannot create" in out


# ---- words ------------------------------------------------------------------------------------


def test_yaml_syntax_error_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A YAML syntax error says file:line:column like a compiler, in both entry points."""
    path = tmp_path / "responder.yml"
    path.write_text("listen: 127.0.0.1:9095\npairs:\n  - name: [unclosed\n    nodes: []\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    [problem] = exc.value.problems
    assert problem.startswith(f"{path}:4:")
    assert "not valid YAML" in problem and "<unicode string>" not in problem
    assert main(["check-config", str(path)]) == 1
    assert f"{path}:4:" in capsys.readouterr().err


def test_one_node_pair_error_is_in_plain_words() -> None:
    """A one-node pair says what a pair needs and how many nodes it has."""
    data = example()
    data["pairs"][0]["nodes"] = data["pairs"][0]["nodes"][:1]
    assert problems(data) == [
        "pairs[0].nodes: a pair needs at least two nodes (a primary and a standby); pairs[0] has 1"
    ]


def test_valid_config_still_says_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README example passes every new check (exit 0, no warning)."""
    code, out = check(tmp_path, example(), capsys)
    assert code == 0 and "warning" not in out
    assert yaml.safe_load((tmp_path / "responder.yml").read_text())["state_dir"] == "./var"
