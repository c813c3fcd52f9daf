"""The agent's own config and command line: clear errors naming the key, no token in clear
over a network, one chain section per agent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from responder.agent.__main__ import main
from responder.agent.config import load_agent_config
from responder.config import ConfigError


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    token = tmp_path / "token"
    token.write_text("s3cret-agent-token\n")
    token.chmod(0o600)
    path = tmp_path / "agent.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def solana(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "token_file": "token",
        "chain": "solana",
        "solana": {
            "ledger": "ledger",
            "staked_identity": "staked.json",
            "unstaked_identity": "junk.json",
        },
    }
    return data | over


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_agent_config(path)
    return caught.value.problems


def test_a_valid_config_resolves_paths_against_its_directory(tmp_path: Path) -> None:
    """Relative paths are the config file's; defaults are loopback and the stock CLI name."""
    config = load_agent_config(write(tmp_path, solana()))
    assert config.listen == "127.0.0.1:9100" and config.tls is None
    assert config.solana is not None and config.solana.ledger == tmp_path / "ledger"
    assert config.solana.validator == ("agave-validator",)
    assert config.token_file == tmp_path / "token"


def test_listening_beyond_loopback_needs_tls(tmp_path: Path) -> None:
    """A bearer token must never cross a network in clear: a wide listen without tls is
    refused, with tls it is accepted."""
    found = problems(write(tmp_path, solana(listen="0.0.0.0:9100")))
    assert len(found) == 1 and "configure `tls`" in found[0]
    tls = {"cert_file": "agent.crt", "key_file": "agent.key"}
    config = load_agent_config(write(tmp_path, solana(listen="0.0.0.0:9100", tls=tls)))
    assert config.tls is not None and config.tls.cert_file == tmp_path / "agent.crt"


def test_chain_and_section_must_agree(tmp_path: Path) -> None:
    """`chain: solana` needs a `solana` section and no `cosmos` one."""
    assert "needs a `cosmos` section" in problems(write(tmp_path, solana(chain="cosmos")))[0]
    both = solana(cosmos={"home": "h", "stop": ["x"], "start": ["y"], "is_running": ["z"],
                          "validator_address": "AB" * 20})  # fmt: skip
    assert "remove the `cosmos` section" in problems(write(tmp_path, both))[0]


def test_unknown_keys_and_bad_values_name_their_path(tmp_path: Path) -> None:
    """An unknown key, an empty argv and a malformed validator address each name their key."""
    data = solana()
    data["solana"] |= {"ledgr": "x", "validator": []}
    found = problems(write(tmp_path, data))
    assert "solana.ledgr: unknown key" in found
    assert any(p.startswith("solana.validator: ") for p in found)
    cosmos = {
        "token_file": "token",
        "chain": "cosmos",
        "cosmos": {"home": "h", "stop": ["x"], "start": ["y"], "is_running": ["z"],
                   "validator_address": "not-hex"},
    }  # fmt: skip
    assert any("cosmos.validator_address" in p for p in problems(write(tmp_path, cosmos)))


def test_check_flag_validates_config_and_token(tmp_path: Path, capsys: Any) -> None:
    """`responder-agent --check` exits 0 on a sound config and 1 with the problems listed,
    including an unreadable token file, without starting a server."""
    path = write(tmp_path, solana())
    assert main(["--config", str(path), "--check"]) == 0
    assert "ok (solana, listen 127.0.0.1:9100)" in capsys.readouterr().out
    (tmp_path / "token").unlink()
    assert main(["--config", str(path), "--check"]) == 1
    assert "token_file: cannot read" in capsys.readouterr().err
