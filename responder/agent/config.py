"""The agent's config: parsed once into frozen objects; errors name the key path."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from ..config import ConfigError, ConfigPath, Duration, _check_url, _Frozen

ARGV = tuple[str, ...]


class AgentTls(_Frozen):
    """Serve HTTPS with this certificate; without it, listen on loopback behind a tunnel."""

    cert_file: ConfigPath
    key_file: ConfigPath


class SolanaConfig(_Frozen):
    """An Agave validator hot-swapped between its staked and an unstaked identity."""

    ledger: ConfigPath
    validator: ARGV = ("agave-validator",)  # argv prefix; `-l LEDGER ...` is appended
    rpc_url: str = "http://127.0.0.1:8899"
    staked_identity: ConfigPath  # the validator identity keypair (JSON array of 64 bytes)
    unstaked_identity: ConfigPath  # the node's junk identity keypair
    vote_account: str | None = None  # base58; lets the responder wait for votes to stop
    tower_dir: ConfigPath | None = None  # where tower-1_9-<identity>.bin lives; default ledger
    # the symlink the validator's unit starts with (`--identity LINK`): pointed at the unstaked
    # keypair before a fence and at the staked one after a verified activation, so a restart
    # of a fenced node comes back unstaked (never a second voter)
    identity_link: ConfigPath | None = None
    wait_for_restart_window: bool = True  # before a planned switchover's fence
    min_idle_time: int = Field(default=2, ge=0)  # minutes, for wait-for-restart-window
    restart_window_timeout: Duration = 600.0
    timeout: Duration = 30.0  # per command
    rpc_timeout: Duration = 5.0  # per RPC call
    verify_timeout: Duration = 15.0  # how long getIdentity may take to show a switch

    @field_validator("rpc_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)

    @field_validator("validator")
    @classmethod
    def _argv(cls, value: ARGV) -> ARGV:
        if not value:
            raise ValueError("must be a non-empty argv list")
        return value


class CosmosConfig(_Frozen):
    """A CometBFT validator whose signer (the node itself, tmkms or Horcrux) is stopped and
    started by commands, with its sign state handed from one host to the other."""

    home: ConfigPath  # the node home (config/, data/)
    stop: ARGV  # e.g. [systemctl, stop, gaiad]
    start: ARGV
    is_running: ARGV  # exit 0 while the signer runs, e.g. [systemctl, is-active, --quiet, gaiad]
    rpc_url: str = "http://127.0.0.1:26657"
    validator_address: str  # hex, as /status validator_info.address shows it
    state_file: ConfigPath | None = None  # default: HOME/data/priv_validator_state.json
    config_file: ConfigPath | None = None  # default: HOME/config/config.toml
    timeout: Duration = 30.0  # per command
    rpc_timeout: Duration = 5.0
    verify_timeout: Duration = 30.0  # how long stop/start may take to show
    signatures_lookback: int = Field(default=20, ge=1)  # heights searched for our signature

    @field_validator("rpc_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)

    @field_validator("validator_address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9A-Fa-f]{40}", value):
            raise ValueError("must be 40 hex digits (the validator address /status shows)")
        return value.upper()

    @field_validator("stop", "start", "is_running")
    @classmethod
    def _argv(cls, value: ARGV) -> ARGV:
        if not value:
            raise ValueError("must be a non-empty argv list")
        return value

    @property
    def sign_state(self) -> Path:
        return self.state_file or self.home / "data" / "priv_validator_state.json"

    @property
    def node_config(self) -> Path:
        return self.config_file or self.home / "config" / "config.toml"


class AgentConfig(_Frozen):
    listen: str = "127.0.0.1:9100"
    token_file: ConfigPath
    tls: AgentTls | None = None
    chain: Literal["solana", "cosmos"]
    solana: SolanaConfig | None = None
    cosmos: CosmosConfig | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _section(self) -> AgentConfig:
        if getattr(self, self.chain) is None:
            raise ValueError(f"chain {self.chain} needs a `{self.chain}` section")
        other = "cosmos" if self.chain == "solana" else "solana"
        if getattr(self, other) is not None:
            raise ValueError(f"chain is {self.chain}: remove the `{other}` section")
        return self

    @model_validator(mode="after")
    def _exposed(self) -> AgentConfig:
        host = self.listen.rpartition(":")[0].strip("[]")
        if self.tls is None and host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(
                "listen is not loopback: configure `tls` (cert_file, key_file) or listen on "
                "127.0.0.1 behind a tunnel; the bearer token must never cross a network in clear"
            )
        return self


def load_agent_config(path: str | Path) -> AgentConfig:
    """Read and validate the agent's YAML config; raise ConfigError naming each bad key."""
    file = Path(path)
    try:
        data: Any = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{file}: not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(["(top level): the config must be a YAML mapping"])
    base = Path(os.path.abspath(file)).parent
    try:
        return AgentConfig.model_validate(data, context={"base_dir": base})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{loc}: {msg}")
        raise ConfigError(sorted(set(problems))) from None
