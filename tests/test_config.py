"""Config parsing: frozen typed objects, errors that name the key path, and `check-config`."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from responder.cli import main
from responder.config import (
    CommandDriverConfig,
    Config,
    ConfigError,
    HttpDriverConfig,
    HttpFenceConfig,
    load_config,
    load_secrets,
    parse_config,
    parse_duration,
)
from tests.conftest import base_config, write_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "responder.yml"
BASE = Path("/etc/responder")


def example() -> dict[str, Any]:
    """A fresh, mutable copy of the README example document."""
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return copy.deepcopy(data)


def problems(data: Any, base: Path = BASE) -> list[str]:
    """The key-path problems parse_config reports for `data` (fails if it validates)."""
    with pytest.raises(ConfigError) as info:
        parse_config(data, base)
    assert info.value.problems, "ConfigError without problems"
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def with_secrets(directory: Path, *, skip: str = "", empty: str = "") -> None:
    secrets = directory / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    for name in ("webhook-token", "operator-token", "node-token"):
        if name == skip:
            continue
        (secrets / name).write_text("" if name == empty else f"{name}-value\n")
        (secrets / name).chmod(0o600)


def example_dir(tmp_path: Path, data: dict[str, Any] | None = None, **secrets: str) -> Path:
    """The example config (or `data`) written to tmp_path with its token files; returns its path."""
    path = tmp_path / "responder.yml"
    if data is None:
        shutil.copy(EXAMPLE, path)
    else:
        path.write_text(yaml.safe_dump(data))
    with_secrets(tmp_path, **secrets)
    return path


# ---- the example ----------------------------------------------------------------------------


def test_readme_example_validates_with_the_documented_values() -> None:
    """examples/responder.yml parses into typed values: durations in seconds, URLs, triggers."""
    config = load_config(EXAMPLE)
    assert config.listen == "127.0.0.1:9095"
    assert config.dry_run is False
    assert len(config.pairs) == 1
    pair = config.pairs[0]
    assert pair.name == "mainnet-a"
    assert [n.name for n in pair.nodes] == ["node-a", "node-b"]
    assert dict(pair.nodes[0].match) == {"node": "node-a"}
    driver = pair.nodes[1].driver
    assert isinstance(driver, HttpDriverConfig)
    assert driver.url == "http://127.0.0.1:18002"
    p = pair.policy
    assert p.triggers == ("ValidatorClientDown", "BeaconNodeStalled")
    assert (p.hold, p.quorum, p.cooldown) == (20.0, 1, 3600.0)
    assert (p.max_failovers, p.max_failovers_window) == (1, 86400.0)


def test_readme_config_block_is_the_example_file() -> None:
    """The YAML config shown in the README is the same document as examples/responder.yml."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, flags=re.DOTALL)
    configs = [yaml.safe_load(b) for b in blocks if "pairs:" in b]
    assert configs, "README shows no responder config block"
    assert configs[0] == yaml.safe_load(EXAMPLE.read_text())
    parse_config(configs[0], BASE)


def test_example_paths_resolve_against_the_config_directory() -> None:
    """Relative state_dir and token files in the example resolve under examples/, not the cwd."""
    config = load_config(EXAMPLE)
    examples = EXAMPLE.parent
    assert config.state_dir == examples / "var"
    assert config.db_path == examples / "var" / "responder.sqlite3"
    assert config.auth != "none"
    assert config.auth.webhook_token_file == examples / "secrets" / "webhook-token"
    assert config.auth.operator_token_file == examples / "secrets" / "operator-token"
    driver = config.pairs[0].nodes[0].driver
    assert isinstance(driver, HttpDriverConfig)
    assert driver.token_file == examples / "secrets" / "node-token"


def test_defaults_fill_omitted_keys() -> None:
    """A minimal config gets the documented defaults."""
    data = example()
    for key in ("listen", "dry_run", "state_dir"):
        del data[key]
    data["pairs"][0]["policy"] = {"triggers": ["ValidatorClientDown"]}
    config = parse_config(data, BASE)
    assert config.listen == "127.0.0.1:9095"
    assert config.state_dir == BASE / "var"
    assert config.workers == 2
    p = config.pairs[0].policy
    assert (p.hold, p.quorum, p.cooldown, p.max_failovers, p.max_failovers_window) == (
        20.0,
        1,
        3600.0,
        1,
        86400.0,
    )


# ---- unknown keys ---------------------------------------------------------------------------


def test_unknown_top_level_key_is_rejected_with_its_name() -> None:
    """A misspelt top-level key is refused as `listn: unknown key`."""
    data = example()
    data["listn"] = "0.0.0.0:1"
    assert problems(data) == ["listn: unknown key"]


def test_unknown_policy_key_is_rejected_with_its_path() -> None:
    """A misspelt policy key is refused as `pairs[0].policy.holdd: unknown key`, and only that."""
    data = example()
    data["pairs"][0]["policy"]["holdd"] = "20s"
    assert problems(data) == ["pairs[0].policy.holdd: unknown key"]


def test_unknown_driver_key_on_second_node_is_rejected_with_its_path() -> None:
    """An unknown key inside pairs[0].nodes[1].driver names exactly that path (no union noise)."""
    data = example()
    data["pairs"][0]["nodes"][1]["driver"]["tokenfile"] = "./x"
    assert problems(data) == ["pairs[0].nodes[1].driver.tokenfile: unknown key"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["pairs"][0].update(polcy={}), "pairs[0].polcy: unknown key"),
        (
            lambda d: d["pairs"][0]["nodes"][0].update(labels={}),
            "pairs[0].nodes[0].labels: unknown key",
        ),
        (
            lambda d: d["pairs"][0]["nodes"][0]["driver"].update(
                paths={"fence": "/f", "stop": "/s"}
            ),
            "pairs[0].nodes[0].driver.paths.stop: unknown key",
        ),
        (
            lambda d: d["pairs"][0]["nodes"][0].update(
                driver={
                    "type": "command",
                    "status": ["s"],
                    "fence": ["f"],
                    "activate": ["a"],
                    "shell": True,
                }
            ),
            "pairs[0].nodes[0].driver.shell: unknown key",
        ),
        (
            lambda d: d["pairs"][0]["nodes"][0].update(
                fence_levels=[{"type": "http", "url": "http://pdu.lan/off", "verb": "POST"}]
            ),
            "pairs[0].nodes[0].fence_levels[0].verb: unknown key",
        ),
        (
            lambda d: d["pairs"][0]["nodes"][1].update(
                fence_levels=[
                    {"type": "command", "argv": ["ipmitool", "off"]},
                    {"type": "command", "argv": ["x"], "retries": 3},
                ]
            ),
            "pairs[0].nodes[1].fence_levels[1].retries: unknown key",
        ),
    ],
)
def test_unknown_nested_keys_are_rejected_with_their_path(mutate: Any, expected: str) -> None:
    """Unknown keys at any depth (pair, node, driver, paths, fence levels) name their full path."""
    data = example()
    mutate(data)
    assert problems(data) == [expected]


def test_unknown_key_in_auth_names_the_auth_path() -> None:
    """An unknown key under auth is reported as auth.<key>: unknown key."""
    data = example()
    data["auth"]["webhook_token"] = "s3cret"
    found = problems(data)
    assert "auth.webhook_token: unknown key" in found
    assert all(p.startswith("auth") for p in found)


def test_several_problems_are_all_reported() -> None:
    """Every bad key is listed, not only the first one."""
    data = example()
    data["listn"] = 1
    data["pairs"][0]["policy"]["holdd"] = 1
    data["pairs"][0]["nodes"][0]["driver"]["url"] = "ftp://x"
    found = problems(data)
    assert "listn: unknown key" in found
    assert "pairs[0].policy.holdd: unknown key" in found
    assert any(p.startswith("pairs[0].nodes[0].driver.url:") for p in found)


def test_nested_error_does_not_claim_the_list_is_too_short() -> None:
    """A bad node in a two-node list is not also reported as 'fewer than 2 nodes' or 'no pairs'."""
    data = example()
    data["pairs"][0]["nodes"][0]["driver"]["url"] = "not a url"
    found = problems(data)
    assert len(found) == 1
    assert found[0].startswith("pairs[0].nodes[0].driver.url:")


def test_top_level_must_be_a_mapping() -> None:
    """A YAML list or scalar is refused at the top level."""
    assert problems(["listen"]) == ["(top level): the config must be a YAML mapping"]
    assert problems(None)[0].startswith("(top level)")


# ---- bad values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["abc", "20", "20x", "20 s", "s20", "-5s", "", " ", "1h 30m", True, [20]]
)
def test_bad_durations_are_rejected_with_the_key_path(value: Any) -> None:
    """Values that are not Prometheus-style durations are refused at pairs[0].policy.hold."""
    data = example()
    data["pairs"][0]["policy"]["hold"] = value
    found = problems(data)
    assert len(found) == 1
    assert found[0].startswith("pairs[0].policy.hold: ")
    assert "duration" in found[0]


def test_negative_seconds_are_rejected() -> None:
    """A negative number of seconds is not a duration."""
    data = example()
    data["pairs"][0]["policy"]["cooldown"] = -1
    assert problems(data) == [
        "pairs[0].policy.cooldown: Value error, a duration cannot be negative"
    ]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("20s", 20.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("2d", 172800.0),
        ("1.5m", 90.0),
        (15, 15.0),
        (0, 0.0),
    ],
)
def test_durations_parse_to_seconds(value: Any, seconds: float) -> None:
    """Prometheus-style durations and plain numbers become float seconds."""
    assert parse_duration(value) == seconds
    data = example()
    data["pairs"][0]["policy"]["max_failovers_window"] = value
    assert parse_config(data, BASE).pairs[0].policy.max_failovers_window == seconds


def test_quorum_above_distinct_triggers_is_rejected() -> None:
    """quorum may not exceed the number of distinct trigger alertnames (repeats do not count)."""
    data = example()
    data["pairs"][0]["policy"].update(
        triggers=["ValidatorClientDown", "ValidatorClientDown"], quorum=2
    )
    found = problems(data)
    assert found == ["pairs[0].policy: Value error, quorum 2 exceeds the 1 distinct triggers"]


def test_quorum_equal_to_distinct_triggers_is_accepted() -> None:
    """quorum 2 with two distinct triggers is valid."""
    data = example()
    data["pairs"][0]["policy"]["quorum"] = 2
    assert parse_config(data, BASE).pairs[0].policy.quorum == 2


@pytest.mark.parametrize(("key", "value"), [("quorum", 0), ("max_failovers", -1), ("triggers", [])])
def test_out_of_range_policy_values_are_rejected(key: str, value: Any) -> None:
    """quorum < 1, max_failovers < 0 and an empty trigger list are refused at their key."""
    data = example()
    data["pairs"][0]["policy"][key] = value
    found = problems(data)
    assert len(found) == 1
    assert found[0].startswith(f"pairs[0].policy.{key}: ")


def test_duplicate_node_names_are_rejected() -> None:
    """Two nodes with the same name in a pair are refused, naming the repeated name."""
    data = example()
    data["pairs"][0]["nodes"][1]["name"] = "node-a"
    assert problems(data) == [
        "pairs[0].nodes: Value error, node names must be unique; repeated: node-a"
    ]


def test_duplicate_pair_names_are_rejected() -> None:
    """Two pairs with the same name are refused."""
    data = example()
    data["pairs"].append(copy.deepcopy(data["pairs"][0]))
    found = problems(data)
    assert found == ["pairs: Value error, pair names must be unique; repeated: mainnet-a"]


@pytest.mark.parametrize("count", [0, 1])
def test_fewer_than_two_nodes_are_rejected(count: int) -> None:
    """A pair needs at least two nodes (an active signer and a standby)."""
    data = example()
    data["pairs"][0]["nodes"] = data["pairs"][0]["nodes"][:count]
    found = problems(data)
    assert len(found) == 1
    assert found[0].startswith("pairs[0].nodes: ")
    assert "at least two nodes" in found[0]


def test_no_pairs_is_rejected() -> None:
    """A config without pairs is refused."""
    data = example()
    data["pairs"] = []
    found = problems(data)
    assert len(found) == 1
    assert found[0].startswith("pairs: ")


@pytest.mark.parametrize(
    "listen",
    ["9095", "127.0.0.1", ":9095", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "host:http"],
)
def test_bad_listen_is_rejected(listen: str) -> None:
    """listen must be host:port with a port in 1..65535."""
    data = example()
    data["listen"] = listen
    assert problems(data) == ["listen: Value error, must be host:port, e.g. 127.0.0.1:9095"]


@pytest.mark.parametrize("listen", ["0.0.0.0:9095", "[::1]:9095", "responder.internal:1"])
def test_good_listen_is_accepted(listen: str) -> None:
    """IPv4, bracketed IPv6 and host names with a port are valid listen values."""
    data = example()
    data["listen"] = listen
    assert parse_config(data, BASE).listen == listen


@pytest.mark.parametrize("url", ["ftp://127.0.0.1", "127.0.0.1:18001", "http://", "node-a", ""])
def test_bad_driver_url_is_rejected(url: str) -> None:
    """An http driver url that is not http(s)://host is refused at its key path."""
    data = example()
    data["pairs"][0]["nodes"][1]["driver"]["url"] = url
    found = problems(data)
    assert len(found) == 1
    assert found[0].startswith("pairs[0].nodes[1].driver.url: ")


def test_driver_url_trailing_slash_is_dropped() -> None:
    """A driver url ending in / is normalised so paths join cleanly."""
    data = example()
    data["pairs"][0]["nodes"][0]["driver"]["url"] = "https://agent.lan:8443/"
    driver = parse_config(data, BASE).pairs[0].nodes[0].driver
    assert isinstance(driver, HttpDriverConfig)
    assert driver.url == "https://agent.lan:8443"


def test_unknown_driver_type_is_rejected() -> None:
    """A driver type that is not registered is refused at the driver path, naming the valid ones."""
    data = example()
    data["pairs"][0]["nodes"][0]["driver"]["type"] = "ssh"
    found = problems(data)
    assert len(found) == 1
    assert found[0].startswith("pairs[0].nodes[0].driver: ")
    assert "'http'" in found[0] and "'command'" in found[0]


def test_command_driver_needs_non_empty_argv() -> None:
    """A command driver with an empty fence argv is refused at its key."""
    data = example()
    data["pairs"][0]["nodes"][0]["driver"] = {
        "type": "command",
        "status": ["s"],
        "fence": [],
        "activate": ["a"],
    }
    found = problems(data)
    assert len(found) == 1
    assert found[0].startswith("pairs[0].nodes[0].driver.fence: ")


def test_command_driver_without_status_is_refused() -> None:
    """A command driver without a `status` command is refused at its key: nothing could verify a fence."""
    data = example()
    data["pairs"][0]["nodes"][0]["driver"] = {"type": "command", "fence": ["f"], "activate": ["a"]}
    [found] = problems(data)
    assert found.startswith(
        'pairs[0].nodes[0].driver.status: required: a command that prints {"signing": true|false}'
    )


def test_command_driver_and_fence_levels_parse() -> None:
    """A command driver and both kinds of fence level parse into their typed objects."""
    data = example()
    node = data["pairs"][0]["nodes"][0]
    node["driver"] = {
        "type": "command",
        "status": ["vc-status", "--json"],
        "fence": ["systemctl", "stop", "vc"],
        "activate": ["true"],
    }
    node["fence_levels"] = [
        {
            "type": "http",
            "url": "http://pdu.lan/outlet/3",
            "method": "PUT",
            "expect_status": [200, 204],
        },
        {"type": "command", "argv": ["ipmitool", "power", "off"], "timeout": "2m"},
    ]
    parsed = parse_config(data, BASE).pairs[0].nodes[0]
    assert isinstance(parsed.driver, CommandDriverConfig)
    assert parsed.driver.status == ("vc-status", "--json")
    assert parsed.driver.fence == ("systemctl", "stop", "vc")
    http_level, cmd_level = parsed.fence_levels
    assert isinstance(http_level, HttpFenceConfig)
    assert http_level.expect_status == (200, 204)
    assert cmd_level.timeout == 120.0


def test_bad_node_name_is_rejected() -> None:
    """Node names are restricted to a safe character set."""
    data = example()
    data["pairs"][0]["nodes"][0]["name"] = "node a/../b"
    found = problems(data)
    assert len(found) == 1
    assert found[0].startswith("pairs[0].nodes[0].name: ")


def test_missing_auth_is_rejected() -> None:
    """Without an auth section the config is refused (no silent unauthenticated start)."""
    data = example()
    del data["auth"]
    assert problems(data) == ["auth: Field required"]


def test_auth_none_is_accepted() -> None:
    """auth: none is an explicit lab mode: it validates and needs no token files."""
    data = example()
    data["auth"] = "none"
    config = parse_config(data, BASE)
    assert config.auth == "none"
    secrets = load_secrets(config)
    assert secrets.webhook is None and secrets.operator is None


def test_auth_other_string_is_rejected() -> None:
    """auth must be a mapping of token files or exactly 'none'."""
    data = example()
    data["auth"] = "off"
    found = problems(data)
    assert found
    assert all(p.startswith("auth: ") for p in found)


# ---- paths ----------------------------------------------------------------------------------


def test_relative_paths_resolve_against_base_dir(tmp_path: Path) -> None:
    """Relative paths resolve against the given base dir; absolute paths are kept as written."""
    data = example()
    data["state_dir"] = "state/here"
    data["auth"]["operator_token_file"] = "/run/secrets/op"
    config = parse_config(data, tmp_path)
    assert config.state_dir == tmp_path / "state" / "here"
    assert config.auth != "none"
    assert config.auth.webhook_token_file == tmp_path / "secrets" / "webhook-token"
    assert config.auth.operator_token_file == Path("/run/secrets/op")


def test_home_relative_paths_expand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ~/ path expands to the user's home, not the config directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data = example()
    data["state_dir"] = "~/responder-state"
    assert parse_config(data, BASE).state_dir == tmp_path / "home" / "responder-state"


def test_load_config_resolves_against_the_file_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_config resolves relative paths from the config file's directory wherever we run from."""
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    path = example_dir(conf_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(path)
    assert config.state_dir == conf_dir / "var"
    assert config.auth != "none"
    assert config.auth.webhook_token_file == conf_dir / "secrets" / "webhook-token"


def test_load_config_reports_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    """An unreadable file or invalid YAML is a ConfigError naming the file."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("listen: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


# ---- frozen ---------------------------------------------------------------------------------


def test_config_objects_are_frozen() -> None:
    """Assigning to any config object raises: top level, pair, node, driver and policy."""
    config = parse_config(example(), BASE)
    pair = config.pairs[0]
    with pytest.raises(ValidationError):
        config.listen = "0.0.0.0:1"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        pair.name = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        pair.policy.hold = 0.0  # type: ignore[misc]
    with pytest.raises(ValidationError):
        pair.nodes[0].driver.url = "http://evil"  # type: ignore[misc,union-attr]
    assert config.listen == "127.0.0.1:9095"
    assert pair.policy.hold == 20.0


def test_config_collections_are_immutable() -> None:
    """Lists become tuples and label maps cannot be changed in place (no raw dicts leak)."""
    data = example()
    data["pairs"][0]["nodes"][0]["driver"] = {
        "type": "command",
        "status": ["s"],
        "fence": ["f"],
        "activate": ["a"],
        "env": {"NETWORK": "mainnet"},
    }
    config = parse_config(data, BASE)
    pair = config.pairs[0]
    assert isinstance(config.pairs, tuple)
    assert isinstance(pair.nodes, tuple)
    assert isinstance(pair.policy.triggers, tuple)
    with pytest.raises(TypeError):
        pair.nodes[1].match["node"] = "node-a"  # type: ignore[index]
    driver = pair.nodes[0].driver
    assert isinstance(driver, CommandDriverConfig)
    with pytest.raises(TypeError):
        driver.env["NETWORK"] = "testnet"  # type: ignore[index]
    assert dict(driver.env) == {"NETWORK": "mainnet"}
    assert pair.nodes[1].matches({"node": "node-b", "job": "vc"})
    assert not pair.nodes[1].matches({"node": "node-a"})


def test_parsed_config_does_not_alias_the_input_document() -> None:
    """Mutating the YAML document after parsing does not change the parsed config."""
    data = example()
    config = parse_config(data, BASE)
    data["pairs"][0]["nodes"][0]["match"]["node"] = "changed"
    data["pairs"][0]["policy"]["triggers"].append("Other")
    assert dict(config.pairs[0].nodes[0].match) == {"node": "node-a"}
    assert "Other" not in config.pairs[0].policy.triggers


def test_config_is_a_config() -> None:
    """parse_config returns the typed Config object, not a dict."""
    assert isinstance(parse_config(example(), BASE), Config)


# ---- responder check-config -----------------------------------------------------------------


def test_check_config_accepts_the_example(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`responder check-config FILE` exits 0 on the example with its token files present."""
    path = example_dir(tmp_path)
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "ok" in out
    assert "mainnet-a (2 nodes)" in out
    assert err == ""


def test_check_config_accepts_the_config_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`responder check-config --config FILE` works like the positional form."""
    path = example_dir(tmp_path)
    assert main(["check-config", "--config", str(path)]) == 0
    assert "ok" in capsys.readouterr().out


def test_check_config_rejects_unknown_keys_with_their_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad file exits non-zero and lists each problem with its key path on stderr."""
    data = example()
    data["pairs"][0]["policy"]["holdd"] = "20s"
    data["pairs"][0]["nodes"][1]["driver"]["tokenfile"] = "./x"
    path = example_dir(tmp_path, data)
    assert main(["check-config", str(path)]) != 0
    out, err = capsys.readouterr()
    assert "pairs[0].policy.holdd: unknown key" in err
    assert "pairs[0].nodes[1].driver.tokenfile: unknown key" in err
    assert "invalid" in err
    assert "ok" not in out


def test_check_config_rejects_bad_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad duration makes check-config fail naming the key path."""
    data = example()
    data["pairs"][0]["policy"]["hold"] = "soon"
    path = example_dir(tmp_path, data)
    assert main(["check-config", str(path)]) != 0
    assert "pairs[0].policy.hold:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("secret", "key"),
    [("webhook-token", "auth.webhook_token_file"), ("operator-token", "auth.operator_token_file")],
)
def test_check_config_fails_on_missing_auth_token_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], secret: str, key: str
) -> None:
    """A missing auth token file makes check-config fail, naming the key."""
    path = example_dir(tmp_path, skip=secret)
    assert main(["check-config", str(path)]) != 0
    err = capsys.readouterr().err
    assert key in err
    assert "cannot read" in err


def test_check_config_fails_on_empty_token_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty (whitespace-only) token file is as bad as a missing one."""
    path = example_dir(tmp_path)
    (tmp_path / "secrets" / "webhook-token").write_text("  \n")
    assert main(["check-config", str(path)]) != 0
    err = capsys.readouterr().err
    assert "auth.webhook_token_file" in err
    assert "is empty" in err


@pytest.mark.parametrize("how", ["skip", "empty"])
def test_check_config_fails_on_bad_driver_token_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    """A missing or empty driver token file fails check-config, naming each node's key path."""
    path = example_dir(tmp_path, **{how: "node-token"})
    assert main(["check-config", str(path)]) != 0
    err = capsys.readouterr().err
    assert "pairs[0].nodes[0].driver.token_file" in err
    assert "pairs[0].nodes[1].driver.token_file" in err


def test_check_config_fails_on_bad_fence_level_token_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fence level's unreadable token file is reported with its key path."""
    data = example()
    data["pairs"][0]["nodes"][0]["fence_levels"] = [
        {"type": "http", "url": "http://pdu.lan/off", "token_file": "./secrets/pdu-token"}
    ]
    path = example_dir(tmp_path, data)
    assert main(["check-config", str(path)]) != 0
    assert "pairs[0].nodes[0].fence_levels[0].token_file" in capsys.readouterr().err


def test_check_config_with_auth_none_needs_no_auth_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """auth: none validates without webhook/operator token files and says it is lab-only."""
    data = example()
    data["auth"] = "none"
    path = example_dir(tmp_path, data, skip="webhook-token")
    (tmp_path / "secrets" / "operator-token").unlink()
    assert main(["check-config", str(path)]) == 0
    assert "auth: none" in capsys.readouterr().out


def test_check_config_fails_on_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config path that does not exist fails with a message naming it."""
    missing = tmp_path / "nope.yml"
    assert main(["check-config", str(missing)]) != 0
    assert str(missing) in capsys.readouterr().err


def test_check_config_without_a_file_fails(capsys: pytest.CaptureFixture[str]) -> None:
    """check-config with no file at all is a usage error."""
    assert main(["check-config"]) != 0
    assert "needs a file" in capsys.readouterr().err


def test_default_state_dir_is_beside_the_config_file(tmp_path, monkeypatch) -> None:
    """Without state_dir the database lives in ./var beside the config file, not the working directory."""
    data = base_config(lambda n: f"http://127.0.0.1:1/{n}")
    del data["state_dir"]
    path = write_config(tmp_path / "etc", data)
    monkeypatch.chdir(tmp_path)
    config = load_config(path)
    assert config.state_dir == tmp_path / "etc" / "var"


def test_check_config_warns_about_secret_files_others_can_read(tmp_path, capsys) -> None:
    """A token file readable by group/others is a warning naming it; 0600 is quiet; neither fails."""
    path = write_config(tmp_path, base_config(lambda n: f"http://127.0.0.1:1/{n}"))
    for token in (tmp_path / "secrets").iterdir():
        token.chmod(0o600)
    assert main(["check-config", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err
    (tmp_path / "secrets" / "node-token").chmod(0o644)
    assert main(["check-config", str(path)]) == 0
    err = capsys.readouterr().err
    assert "pairs[0].nodes[0].driver.token_file" in err and "chmod 600" in err
