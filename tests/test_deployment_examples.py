"""The deployment examples are valid: the Ethereum config, the systemd units, the pinned image deps."""

from __future__ import annotations

import configparser
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from responder.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ROOT / "examples" / "systemd" / name, encoding="utf-8")
    return parser


def test_ethereum_example_config_parses() -> None:
    """examples/ethereum-responder.yml is a valid config: a local-keystore keymanager pair in /var/lib/responder."""
    config = load_config(ROOT / "examples" / "ethereum-responder.yml")
    (pair,) = config.pairs
    assert [node.driver.type for node in pair.nodes] == ["ethereum-keymanager"] * 2
    assert pair.ethereum is not None
    assert len(pair.ethereum.keystores) == len(pair.ethereum.pubkeys) == 2
    assert config.db_path.parent == Path("/var/lib/responder")


def test_responder_unit_serves_the_config_and_may_write_only_the_state_dir() -> None:
    """The unit runs `responder serve` as its own user, hardened, writable only in /var/lib/responder."""
    service = unit("responder.service")["Service"]
    assert service["ExecStart"].endswith("responder serve --config /etc/responder/responder.yml")
    assert service["User"] == "responder"
    assert service["NoNewPrivileges"] == "true"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/responder"
    assert service["PrivateTmp"] == "true"
    assert service["Restart"] == "on-failure"
    assert int(service["TimeoutStopSec"]) > 10  # gunicorn's graceful_timeout


def test_agent_unit_runs_as_the_validator_user() -> None:
    """The agent's unit runs responder-agent as the validator's user, not root or a user of its own."""
    service = unit("responder-agent.service")["Service"]
    assert "responder-agent --config" in service["ExecStart"]
    assert service["User"] not in ("root", "responder")
    assert service["ProtectSystem"] == "strict"


def test_constraints_pin_every_runtime_dependency_within_its_range() -> None:
    """constraints.txt pins each dependency in pyproject.toml exactly, to a version its range allows."""
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip())
            assert match, f"not an exact pin: {line!r}"
            pins[canonicalize_name(match[1])] = match[2]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} outside {spec}"


def test_ha_example_is_a_valid_etcd_replica_config() -> None:
    """examples/ha/responder.yml: an etcd replica whose lease covers its node calls."""
    config = load_config(ROOT / "examples" / "ha" / "responder.yml")
    assert config.state.backend == "etcd"
    assert config.state.replica == "responder-1"
    assert config.state.lease_ttl == 15.0 and config.state.prefix == "/responder/mainnet/"


def test_ha_alertmanager_receiver_lists_three_replicas() -> None:
    """examples/ha/alertmanager-receiver.yml passes amtool and sends to every replica."""
    import shutil  # noqa: PLC0415 - amtool only here
    import subprocess  # noqa: PLC0415

    import yaml  # noqa: PLC0415

    path = ROOT / "examples" / "ha" / "alertmanager-receiver.yml"
    amtool = shutil.which("amtool")
    assert amtool is not None, "make test installs amtool (prometheus-alertmanager)"
    proc = subprocess.run(
        [amtool, "check-config", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    receivers = {r["name"]: r for r in yaml.safe_load(path.read_text())["receivers"]}
    urls = [w["url"] for w in receivers["responder"]["webhook_configs"]]
    assert urls == [f"http://responder-{i}:9095/webhook" for i in (1, 2, 3)]
