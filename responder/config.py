"""Configuration: parsed once into frozen, typed objects; errors name the key path.

Relative paths in the file are resolved against the directory of the config file, so the
same file works wherever the process is started from.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ConfigError(Exception):
    """The config file is unusable; `problems` lists one 'key.path: message' per entry."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def parse_duration(value: Any) -> float:
    """Accept Prometheus-style durations ('20s', '1h30m', '500ms') or plain seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 20s, 5m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            raise ValueError(f"{value!r} is not a duration such as 20s, 5m or 1h")
    else:
        raise ValueError("expected a duration such as 20s, 5m or 1h")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _resolve(value: Any, info: ValidationInfo) -> Any:
    base = (info.context or {}).get("base_dir")
    if isinstance(value, str | Path) and str(value) and base is not None:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (Path(base) / path)
    return value


ConfigPath = Annotated[Path, BeforeValidator(_resolve)]


def _freeze(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


# A read-only mapping: config objects are frozen all the way down, no raw dict leaves here.
FrozenStrMap = Annotated[Mapping[str, str], AfterValidator(_freeze)]
FrozenMap = Annotated[Mapping[str, Any], AfterValidator(_freeze)]


_URL_ADVICE = "use token_file"


def _no_userinfo(value: str, advice: str) -> str:
    """Refuse `user:password@` in a URL: URLs are shown in events, the journal, logs, the
    API and the state database. The error never repeats the value."""
    authority = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)", value)
    if authority is not None and "@" in authority.group(1):
        raise ValueError(f"must not contain a user or password; {advice}")
    return value


def _check_url(value: str, advice: str = _URL_ADVICE) -> str:
    """An http(s) base URL, without a trailing slash (paths are appended to it)."""
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("must be an http:// or https:// URL")
    return _no_userinfo(value, advice).rstrip("/")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TlsConfig(_Frozen):
    """How to verify an https:// node API (Teku and Web3Signer serve TLS by default)."""

    ca_file: ConfigPath | None = None  # trust this CA (or self-signed certificate) file
    insecure_skip_verify: bool = False  # lab only: accept any certificate


class HttpPaths(_Frozen):
    """Endpoints of the generic node-agent contract, relative to the driver url."""

    status: str = "/status"
    fence: str = "/fence"
    activate: str = "/activate"
    liveness: str = "/liveness"


class HttpDriverConfig(_Frozen):
    """A node agent speaking the generic http contract (see docs/configuration.md)."""

    type: Literal["http"]
    url: str
    token_file: ConfigPath | None = None
    connect_timeout: Duration = 2.0
    timeout: Duration = 5.0
    paths: HttpPaths = HttpPaths()
    tls: TlsConfig = TlsConfig()  # private CA or self-signed agent certificate
    # required: activating this node needs what the fence handed over (a Solana tower, a
    # CometBFT sign state); without it the pair's `handoff.without` gate decides
    handoff: Literal["none", "required"] = "none"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)


class CommandDriverConfig(_Frozen):
    """Local commands (argv, no shell); exit status 0 claims a step, `status` verifies it.

    `status` is required: the responder never takes a command's exit status alone as proof
    that a node stopped or started signing.
    """

    type: Literal["command"]
    status: tuple[str, ...]
    fence: tuple[str, ...]
    activate: tuple[str, ...]
    timeout: Duration = 30.0
    env: FrozenStrMap = Field(default_factory=lambda: MappingProxyType({}))

    @field_validator("status", "fence", "activate")
    @classmethod
    def _argv(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError("must be a non-empty argv list")
        return value


HEX_ROOT = r"^0x[0-9a-fA-F]{64}$"
HEX_PUBKEY = r"^0x[0-9a-fA-F]{96}$"


class KeymanagerDriverConfig(_Frozen):
    """A validator client (or Web3Signer) speaking the standard Ethereum Keymanager API."""

    type: Literal["ethereum-keymanager"]
    url: str
    token_file: ConfigPath | None = None  # every client but Web3Signer requires one
    mode: Literal["local", "remote"] = "local"
    tls: TlsConfig = TlsConfig()
    connect_timeout: Duration = 2.0
    timeout: Duration = 10.0
    # the beacon node this validator client uses: readiness checks its chain and sync state
    beacon_url: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)

    @field_validator("beacon_url")
    @classmethod
    def _beacon(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value)


DriverConfig = Annotated[
    HttpDriverConfig | CommandDriverConfig | KeymanagerDriverConfig, Field(discriminator="type")
]


class HttpCheckConfig(_Frozen):
    """A read-only request proving an http fence level could act (e.g. the PDU outlet's
    state): readiness and drills send it; it must not change anything."""

    url: str
    method: Literal["GET", "HEAD"] = "GET"
    expect_status: tuple[int, ...] = (200,)
    expect_json: FrozenMap | None = None
    token_file: ConfigPath | None = None  # default: the level's own token_file
    timeout: Duration = 5.0

    @model_validator(mode="after")
    def _body_for_json(self) -> HttpCheckConfig:
        if self.method == "HEAD" and self.expect_json is not None:
            raise ValueError("expect_json needs method GET: a HEAD answer has no body")
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return _no_userinfo(value, _URL_ADVICE)


class CommandCheckConfig(_Frozen):
    """A read-only command proving a command fence level could act (exit 0: it could)."""

    command: tuple[str, ...] = Field(min_length=1)
    timeout: Duration = 10.0


class HttpFenceConfig(_Frozen):
    """An extra fence level over HTTP, e.g. a power switch outlet-off call."""

    type: Literal["http"]
    url: str
    method: Literal["POST", "PUT", "DELETE", "PATCH"] = "POST"
    token_file: ConfigPath | None = None
    body: FrozenMap | None = None
    expect_status: tuple[int, ...] = (200,)
    expect_json: FrozenMap | None = None
    connect_timeout: Duration = 2.0
    timeout: Duration = 10.0
    tls: TlsConfig = TlsConfig()
    check: HttpCheckConfig | None = None  # without one, readiness reports it unverifiable

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return _no_userinfo(
            value,
            f"{_URL_ADVICE}, or a `command` level that reads credentials from a file "
            "(e.g. curl --netrc-file)",
        )


class CommandFenceConfig(_Frozen):
    """An extra fence level as a command (argv, no shell); exit 0 confirms the fence."""

    type: Literal["command"]
    argv: tuple[str, ...] = Field(min_length=1)
    timeout: Duration = 60.0
    env: FrozenStrMap = Field(default_factory=lambda: MappingProxyType({}))
    check: CommandCheckConfig | None = None  # without one, readiness reports it unverifiable


FenceLevelConfig = Annotated[HttpFenceConfig | CommandFenceConfig, Field(discriminator="type")]


class NodeConfig(_Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    match: FrozenStrMap = Field(min_length=1)
    driver: DriverConfig
    fence_levels: tuple[FenceLevelConfig, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """An alert belongs to this node when every `match` label is equal."""
        return all(labels.get(key) == value for key, value in self.match.items())


class PolicyConfig(_Frozen):
    triggers: tuple[str, ...] = Field(min_length=1)
    hold: Duration = 20.0
    quorum: int = Field(default=1, ge=1)
    cooldown: Duration = 3600.0
    max_failovers: int = Field(default=1, ge=0)
    max_failovers_window: Duration = 86400.0

    @model_validator(mode="after")
    def _quorum(self) -> PolicyConfig:
        if self.quorum > len(set(self.triggers)):
            raise ValueError(
                f"quorum {self.quorum} exceeds the {len(set(self.triggers))} distinct triggers"
            )
        return self


class KeystoreConfig(_Frozen):
    """One EIP-2335 keystore and its password, read from disk only at activation."""

    pubkey: str = Field(pattern=HEX_PUBKEY)
    keystore_file: ConfigPath
    password_file: ConfigPath


class LivenessConfig(_Frozen):
    """A beacon node asked whether the pair's validators were live after the fence."""

    beacon_url: str
    validator_indices: tuple[int, ...] = Field(min_length=1)
    epochs: int = Field(default=2, ge=1)
    seconds_per_slot: float = Field(default=12.0, gt=0)
    slots_per_epoch: int = Field(default=32, ge=1)
    token_file: ConfigPath | None = None
    tls: TlsConfig = TlsConfig()
    timeout: Duration = 5.0

    @field_validator("beacon_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)


class EthereumConfig(_Frozen):
    """The validator keys a pair moves between its nodes, and how to hand them over."""

    genesis_validators_root: str = Field(pattern=HEX_ROOT)
    pubkeys: tuple[str, ...] = Field(min_length=1)
    keystores: tuple[KeystoreConfig, ...] = ()
    remote_signer_url: str | None = None
    without_history: Literal["operator", "liveness"] = "operator"
    liveness: LivenessConfig | None = None

    @field_validator("pubkeys")
    @classmethod
    def _pubkeys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [k for k in value if not re.match(HEX_PUBKEY, k)]
        if bad:
            raise ValueError(f"not a 0x-prefixed 48-byte hex BLS pubkey: {', '.join(bad)}")
        lowered = [k.lower() for k in value]
        if len(set(lowered)) != len(lowered):
            raise ValueError("pubkeys must be unique")
        return tuple(lowered)

    @field_validator("remote_signer_url")
    @classmethod
    def _signer(cls, value: str | None) -> str | None:
        advice = "it is sent to the validator clients and shown in events"
        return None if value is None else _check_url(value, advice)

    @model_validator(mode="after")
    def _consistent(self) -> EthereumConfig:
        if self.without_history == "liveness" and self.liveness is None:
            raise ValueError("without_history: liveness needs a `liveness` section")
        keyed = {k.pubkey.lower() for k in self.keystores}
        if len(keyed) != len(self.keystores):
            raise ValueError("keystores: one entry per pubkey (a pubkey is listed twice)")
        extra = keyed - set(self.pubkeys)
        if extra:
            raise ValueError(f"keystores for pubkeys not in `pubkeys`: {', '.join(sorted(extra))}")
        return self

    def keystore(self, pubkey: str) -> KeystoreConfig | None:
        for entry in self.keystores:
            if entry.pubkey.lower() == pubkey:
                return entry
        return None


class ObserveConfig(_Frozen):
    """The background read-only probe of every node of a pair."""

    interval: Duration = Field(default=15.0, gt=0)


class HandoffConfig(_Frozen):
    """What an activation that needs a hand-off does when the fence brought none (an
    out-of-band level such as a power switch fenced the primary)."""

    # operator: wait for `responder confirm`; chain: wait until the target's agent sees no
    # vote or signature from the validator for `quiet` slots or heights after the fence
    without: Literal["operator", "chain"] = "operator"
    quiet: int = Field(default=200, ge=1)
    poll: Duration = Field(default=5.0, gt=0)


class ReadinessConfig(_Frozen):
    """Continuous preflight of the failover path, and optional scheduled drills."""

    interval: Duration = Field(default=60.0, gt=0)  # read-only preflight checks
    drill_every: Duration | None = Field(default=None, gt=0)  # None: no scheduled drills


class PairConfig(_Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    nodes: tuple[NodeConfig, ...] = Field(min_length=2)
    policy: PolicyConfig
    observe: ObserveConfig = ObserveConfig()
    readiness: ReadinessConfig = ReadinessConfig()
    handoff: HandoffConfig = HandoffConfig()
    dry_run: bool | None = None
    ethereum: EthereumConfig | None = None

    @model_validator(mode="after")
    def _ethereum(self) -> PairConfig:
        modes = {n.driver.mode for n in self.nodes if isinstance(n.driver, KeymanagerDriverConfig)}
        if not modes:
            return self
        if self.ethereum is None:
            raise ValueError("nodes with ethereum-keymanager drivers need an `ethereum` section")
        if len(modes) > 1:
            raise ValueError("all ethereum-keymanager nodes of a pair must use the same mode")
        if "local" in modes:
            missing = set(self.ethereum.pubkeys) - {
                k.pubkey.lower() for k in self.ethereum.keystores
            }
            if missing:
                raise ValueError(
                    "local mode needs ethereum.keystores for every pubkey; missing: "
                    + ", ".join(sorted(missing))
                )
        if "remote" in modes and self.ethereum.remote_signer_url is None:
            raise ValueError("remote mode needs ethereum.remote_signer_url")
        return self

    @field_validator("nodes")
    @classmethod
    def _unique_nodes(cls, nodes: tuple[NodeConfig, ...]) -> tuple[NodeConfig, ...]:
        names = [n.name for n in nodes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"node names must be unique; repeated: {', '.join(dupes)}")
        return nodes

    def node(self, name: str) -> NodeConfig:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


class AuthConfig(_Frozen):
    webhook_token_file: ConfigPath
    operator_token_file: ConfigPath
    readonly_token_file: ConfigPath | None = None  # logs in to the status page only


class RetentionConfig(_Frozen):
    """How long the store keeps what it no longer needs (see docs/configuration.md)."""

    notifications: Duration = Field(default=7 * 86400.0, gt=0)  # processed deliveries
    events: Duration = Field(default=30 * 86400.0, gt=0)  # the audit trail
    failovers: Duration = Field(default=90 * 86400.0, gt=0)  # finished ones and their journals


class EtcdTlsConfig(_Frozen):
    """TLS to etcd: a private CA, and a client certificate when etcd runs --client-cert-auth
    (etcd then authenticates the replica by the certificate's common name)."""

    ca_file: ConfigPath | None = None
    cert_file: ConfigPath | None = None
    key_file: ConfigPath | None = None

    @model_validator(mode="after")
    def _pair(self) -> EtcdTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(
                "cert_file and key_file go together (a client certificate and its key)"
            )
        return self


ETCD_MARGIN = 1.0  # seconds: etcd reports a lease's time left rounded up to whole seconds


class StateConfig(_Frozen):
    """Where the responder keeps its state: the embedded SQLite file in `state_dir` (one
    machine), or etcd shared by several replicas of which one acts (docs/ha.md)."""

    backend: Literal["sqlite", "etcd"] = "sqlite"
    endpoints: tuple[str, ...] = ()  # etcd client URLs, tried in order
    prefix: str = Field(default="/responder/", pattern=r"^/[^\s]*/$")
    lease_ttl: Duration = Field(default=15.0, ge=5.0, le=3600.0)  # whole seconds
    timeout: Duration = Field(default=2.0, gt=0)  # one etcd request
    replica: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    max_txn_ops: int = Field(default=128, ge=16)  # etcd's --max-txn-ops (default 128)
    tls: EtcdTlsConfig = EtcdTlsConfig()

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not re.match(r"^https?://[^/\s]+$", url.rstrip("/")):
                raise ValueError(f"{url!r} must be an http:// or https:// URL without a path")
        return tuple(url.rstrip("/") for url in value)

    @field_validator("lease_ttl")
    @classmethod
    def _whole(cls, value: float) -> float:
        if value != int(value):
            raise ValueError("etcd grants leases in whole seconds, e.g. 15s")
        return value

    @model_validator(mode="after")
    def _backend_keys(self) -> StateConfig:
        if self.backend == "etcd" and not self.endpoints:
            raise ValueError("backend etcd needs endpoints, e.g. [http://127.0.0.1:2379]")
        if self.backend == "sqlite" and (
            self.endpoints or self.replica or self.tls != EtcdTlsConfig()
        ):
            raise ValueError(
                "endpoints, replica and tls are for backend: etcd; the sqlite backend keeps its "
                "file in state_dir"
            )
        return self


class Config(_Frozen):
    listen: str = "127.0.0.1:9095"
    dry_run: bool = False
    state_dir: ConfigPath = Field(default="var", validate_default=True)
    state: StateConfig = StateConfig()
    auth: AuthConfig | Literal["none"]
    pairs: tuple[PairConfig, ...] = Field(min_length=1)
    # Alertmanager with max_alerts: 0 sends whole groups: 10,000 alerts are ~4.7 MB
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    failover_lease: Duration = 15.0
    poll_interval: Duration = 1.0
    workers: int = Field(default=2, ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    retention: RetentionConfig = RetentionConfig()

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port, e.g. 127.0.0.1:9095")
        return value

    @field_validator("pairs")
    @classmethod
    def _unique_pairs(cls, pairs: tuple[PairConfig, ...]) -> tuple[PairConfig, ...]:
        names = [p.name for p in pairs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"pair names must be unique; repeated: {', '.join(dupes)}")
        return pairs

    @field_validator("pairs")
    @classmethod
    def _one_pair_per_pubkey(cls, pairs: tuple[PairConfig, ...]) -> tuple[PairConfig, ...]:
        """A validator key moved by two pairs could be activated on two standbys at once."""
        owners: dict[str, list[str]] = {}
        for pair in pairs:
            for key in pair.ethereum.pubkeys if pair.ethereum is not None else ():
                owners.setdefault(key, []).append(pair.name)
        shared = [(key, names) for key, names in owners.items() if len(names) > 1]
        if shared:
            raise ValueError(
                "a validator key may belong to one pair only (two pairs could activate it on "
                "two nodes at once); "
                + "; ".join(f"{key} is in pairs {' and '.join(names)}" for key, names in shared)
            )
        return pairs

    @model_validator(mode="after")
    def _lease_covers_calls(self) -> Config:
        """With etcd, the leader's lease must outlast any node call it starts (like Patroni's
        loop_wait + 2 * retry_timeout <= ttl): before each call the lease is renewed, and the
        call is refused unless the lease holds for the call's whole deadline."""
        if self.state.backend != "etcd":
            return self
        longest, where = node_call_deadline(self)
        needed = longest + 2 * self.state.timeout + ETCD_MARGIN
        if needed > self.state.lease_ttl:
            raise ValueError(
                f"state.lease_ttl {self.state.lease_ttl:g}s is too short for {where}, a node "
                f"call of up to {longest:g}s: it needs lease_ttl >= longest node call + 2 x "
                f"state.timeout + {ETCD_MARGIN:g}s = {needed:g}s (raise lease_ttl or lower "
                "that timeout)"
            )
        return self

    def pair(self, name: str) -> PairConfig:
        found = self._pairs_by_name.get(name)
        if found is None:
            raise KeyError(name)
        return found

    @cached_property
    def _pairs_by_name(self) -> dict[str, PairConfig]:
        """Looked up at every step of every failover: a dict, not a walk of 1,000 pairs."""
        return {pair.name: pair for pair in self.pairs}

    def pair_dry_run(self, pair: PairConfig) -> bool:
        """Global dry-run wins; otherwise the pair's own setting."""
        return self.dry_run or bool(pair.dry_run)

    @property
    def db_path(self) -> Path:
        return self.state_dir / "responder.sqlite3"


def node_call_deadline(config: Config) -> tuple[float, str]:
    """The longest a single node call of a failover can take (a driver call, or a fence
    level), and which key sets it."""
    longest, where = 0.0, ""
    for p_i, pair in enumerate(config.pairs):
        for n_i, node in enumerate(pair.nodes):
            d = node.driver
            total = d.timeout + (0.0 if isinstance(d, CommandDriverConfig) else d.connect_timeout)
            if total > longest:
                longest, where = total, f"pairs[{p_i}].nodes[{n_i}].driver"
            for l_i, level in enumerate(node.fence_levels):
                total = level.timeout + (
                    level.connect_timeout if isinstance(level, HttpFenceConfig) else 0.0
                )
                if total > longest:
                    longest, where = total, f"pairs[{p_i}].nodes[{n_i}].fence_levels[{l_i}]"
    return longest, where


_UNION_TAGS = {"http", "command", "ethereum-keymanager"}


def _format_loc(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif (
            item in _UNION_TAGS
            and i > 0
            and (loc[i - 1] == "driver" or isinstance(loc[i - 1], int))
        ):
            continue  # the discriminator tag of a driver or fence level
        elif item in ("AuthConfig", "literal['none']", "function-after[_quorum(), PolicyConfig]"):
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _is_noise(err: ErrorDetails) -> bool:
    """Errors pydantic adds as a side effect of another error, which would mislead the reader."""
    given = err.get("input")
    if err["type"] == "too_short" and isinstance(given, list | tuple):
        # pydantic counts only the items that validated: a bad item is not a missing one
        return len(given) >= int(err.get("ctx", {}).get("min_length", 0))
    # `auth` given as a mapping with a bad key: the alternative "should be 'none'" is noise
    auth_alternative = tuple(err["loc"]) == ("auth", "literal['none']")
    return err["type"] == "literal_error" and auth_alternative and isinstance(given, dict)


def parse_config(data: Any, base_dir: Path) -> Config:
    """Validate a parsed YAML document; raise ConfigError naming each bad key path."""
    if not isinstance(data, dict):
        raise ConfigError(["(top level): the config must be a YAML mapping"])
    try:
        config = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if _is_noise(err):
                continue
            loc = _format_loc(tuple(err["loc"]))
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            if err["type"] == "missing" and loc.endswith("driver.status"):
                msg = (
                    'required: a command that prints {"signing": true|false}; every fence and '
                    "activation is verified with it"
                )
            if err["type"] == "too_short" and re.fullmatch(r"pairs\[\d+\]\.nodes", loc):
                given = err.get("input")
                count = len(given) if isinstance(given, list | tuple) else 0
                msg = (
                    "a pair needs at least two nodes (a primary and a standby); "
                    f"{loc.removesuffix('.nodes')} has {count}"
                )
            problems.append(f"{loc}: {msg}")
        raise ConfigError(sorted(set(problems))) from None
    overlaps = _overlap_problems(config)
    if overlaps:
        raise ConfigError(overlaps)
    return config


def _labels(match: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(match.items())) + "}"


def _overlap_problems(config: Config) -> list[str]:
    """Nodes an alert or a call could not tell apart: one `match` covering another's (an
    alert would be routed to the wrong node, or count against two pairs), or two nodes behind
    one driver URL (fencing one would stop the other). Each problem names both key paths.

    Only the nodes that share a URL or whose label sets are equal or nested are compared, found
    through indexes: a thousand pairs are checked in milliseconds, not in pairs-squared time.
    """
    nodes = [
        (f"pairs[{p_i}].nodes[{n_i}]", pair.name, node)
        for p_i, pair in enumerate(config.pairs)
        for n_i, node in enumerate(pair.nodes)
    ]
    labels = [frozenset(node.match.items()) for _, _, node in nodes]
    by_labels: dict[frozenset[tuple[str, str]], list[int]] = {}
    by_url: dict[str, list[int]] = {}
    for i, (_, _, node) in enumerate(nodes):
        by_labels.setdefault(labels[i], []).append(i)
        if (url := _driver_url(node)) is not None:
            by_url.setdefault(url, []).append(i)
    suspects: set[tuple[int, int]] = set()
    for group in (*by_labels.values(), *by_url.values()):
        suspects.update(itertools.combinations(group, 2))  # ascending: groups are in node order
    for j, mine in enumerate(labels):
        for smaller in _proper_subsets(mine, by_labels):
            suspects.update((min(i, j), max(i, j)) for i in by_labels[smaller])
    problems = []
    for i, j in sorted(suspects):
        problems.extend(_node_overlap(nodes[i], nodes[j]))
    return problems


def _proper_subsets(
    labels: frozenset[tuple[str, str]], known: Mapping[frozenset[tuple[str, str]], list[int]]
) -> list[frozenset[tuple[str, str]]]:
    """The label sets in `known` strictly inside `labels`: by enumerating the subsets of a
    small set, or by testing every known set when that is fewer."""
    if 2 ** len(labels) > len(known):
        return [other for other in known if other < labels]
    items = sorted(labels)
    subsets = (
        frozenset(combo)
        for size in range(1, len(items))
        for combo in itertools.combinations(items, size)
    )
    return [s for s in subsets if s in known]


def _node_overlap(
    earlier: tuple[str, str, NodeConfig], later: tuple[str, str, NodeConfig]
) -> list[str]:
    """What makes two nodes indistinguishable, `earlier` coming first in the file."""
    (first_at, first_pair, first), (at, pair, node) = earlier, later
    problems = []
    same_pair = pair == first_pair
    mine, theirs = set(node.match.items()), set(first.match.items())
    if mine == theirs:
        consequence = (
            f"every alert would go to {first.name} (the first), never to {node.name}"
            if same_pair
            else f"one alert would count as a fault of {first_pair}/{first.name} and "
            f"of {pair}/{node.name}"
        )
        problems.append(
            f"{at}.match: the same labels as {first_at}.match "
            f"({_labels(node.match)}): {consequence}"
        )
    elif theirs < mine or (not same_pair and mine < theirs):
        wide, narrow = (first_at, at) if theirs < mine else (at, first_at)
        consequence = (
            f"{first.name} comes first, so {node.name} would never get an alert"
            if same_pair
            else "one alert would count as a fault in both pairs"
        )
        problems.append(
            f"{at}.match: every alert that matches {narrow}.match also matches "
            f"{wide}.match: {consequence}; add a label that tells them apart"
        )
    url, first_url = _driver_url(node), _driver_url(first)
    if url is not None and url == first_url:
        consequence = (
            "fencing one would stop the other, and no probe could tell them apart"
            if same_pair
            else f"pairs {first_pair} and {pair} would both fence and activate it"
        )
        problems.append(
            f"{at}.driver.url: the same URL as {first_at}.driver.url ({url}): {consequence}"
        )
    return problems


def _driver_url(node: NodeConfig) -> str | None:
    """The node's API URL, compared case-insensitively in scheme and host."""
    driver = node.driver
    if not isinstance(driver, HttpDriverConfig | KeymanagerDriverConfig):
        return None
    scheme, _, rest = driver.url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}{slash}{path}".rstrip("/")


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read: {exc.strerror}"]) from None
    if (config := _reuse(file, text)) is not None:
        return config
    # abspath, not resolve(): a symlinked config (e.g. a ConfigMap mount) keeps its own directory
    config = parse_config(_parse_yaml(file, text), Path(os.path.abspath(file)).parent)
    _remember(file, text, config)
    return config


# The last config this process validated: its absolute path, its text, the result. Parsing
# 1,000 pairs takes a few hundred milliseconds; `serve` checks the file, gunicorn's master
# loads it and every worker (forked from the master, so inheriting this) checks it again.
# Reading the file is cheap, so a hit needs the very same text: an edited file (e.g. before
# a HUP) is parsed afresh. Configs are frozen, so one object can be handed to every caller.
_validated: dict[str, tuple[str, Config]] = {}


def _reuse(file: Path, text: str) -> Config | None:
    hit = _validated.get(os.path.abspath(file))
    return hit[1] if hit is not None and hit[0] == text else None


def _remember(file: Path, text: str, config: Config) -> None:
    _validated.clear()  # one config file per process: keep the latest only
    _validated[os.path.abspath(file)] = (text, config)


# libyaml's loader when PyYAML was built with it: ~10x faster on a config with 1,000 pairs.
# Both are safe loaders and report the same line and column.
_YAML_LOADER: type[yaml.SafeLoader | yaml.CSafeLoader] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)


def _parse_yaml(file: Path, text: str) -> Any:
    """The YAML document; a syntax error names the file, line and column like a compiler."""
    try:
        return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(file)
        what = "; ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise ConfigError([f"{where}: not valid YAML: {what or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{file}: not valid YAML: {exc}"]) from None


@dataclass(frozen=True)
class Secret:
    """A token read from a file; its repr never shows the value."""

    value: str

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


_SECRETS: dict[str, tuple[tuple[int, int, int, int], Secret]] = {}


def read_secret(path: Path, what: str) -> Secret:
    """Read a token file (whitespace stripped); raise ConfigError if absent or empty.

    Read again whenever the file changed (another inode, size or modification time): a
    rotated token is used at the next call, and an unchanged one costs a stat, not a read
    (node calls ask for theirs every time).
    """
    try:
        st = os.stat(path)
        identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        cached = _SECRETS.get(str(path))
        if cached is not None and cached[0] == identity:
            return cached[1]
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError([f"{what}: cannot read {path}: {exc.strerror}"]) from None
    if not value:
        raise ConfigError([f"{what}: {path} is empty"])
    secret = Secret(value)
    _SECRETS[str(path)] = (identity, secret)
    return secret


def secret_file_problem(path: Path) -> str | None:
    """Why a secret file an activation or a call needs would fail or leak, or None if sound:
    missing, unreadable, empty, or readable by group or others."""
    try:
        mode = path.stat().st_mode
        empty = not path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        return f"{path}: cannot read ({exc.strerror})"
    except UnicodeDecodeError:
        return f"{path}: not UTF-8 text"
    if empty:
        return f"{path} is empty"
    if mode & 0o077:
        return f"{path} is accessible by group/others (mode {mode & 0o777:o}); chmod 600 it"
    return None


@dataclass(frozen=True)
class Secrets:
    """The tokens the server needs; None means unauthenticated (auth: none)."""

    webhook: Secret | None
    operator: Secret | None
    readonly: Secret | None = None  # the status page's read-only login; never the control API


def load_secrets(config: Config) -> Secrets:
    """Read the auth token files named in the config, reporting every unreadable one."""
    if config.auth == "none":
        return Secrets(webhook=None, operator=None)
    problems: list[str] = []
    found: list[Secret | None] = []
    for key, path in (
        ("auth.webhook_token_file", config.auth.webhook_token_file),
        ("auth.operator_token_file", config.auth.operator_token_file),
        ("auth.readonly_token_file", config.auth.readonly_token_file),
    ):
        if path is None:
            found.append(None)
            continue
        try:
            found.append(read_secret(path, key))
        except ConfigError as exc:
            problems.extend(exc.problems)
            found.append(None)
    readonly = found[2]
    if readonly is not None and readonly.value in {s.value for s in found[:2] if s is not None}:
        problems.append(
            "auth.readonly_token_file: holds the same token as the webhook or operator token; "
            "a read-only login must not be able to act"
        )
    if problems:
        raise ConfigError(problems)
    return Secrets(webhook=found[0], operator=found[1], readonly=readonly)


def secret_files(config: Config) -> list[tuple[str, Path, bool]]:
    """Every secret file the config names: (key path, path, is a token read at start-up)."""
    out: list[tuple[str, Path, bool]] = []
    if config.auth != "none":
        out.append(("auth.webhook_token_file", config.auth.webhook_token_file, True))
        out.append(("auth.operator_token_file", config.auth.operator_token_file, True))
        if config.auth.readonly_token_file is not None:
            out.append(("auth.readonly_token_file", config.auth.readonly_token_file, True))
    for p_i, pair in enumerate(config.pairs):
        for n_i, node in enumerate(pair.nodes):
            where = f"pairs[{p_i}].nodes[{n_i}]"
            driver = node.driver
            if isinstance(driver, HttpDriverConfig | KeymanagerDriverConfig) and driver.token_file:
                out.append((f"{where}.driver.token_file", driver.token_file, True))
            for f_i, level in enumerate(node.fence_levels):
                if isinstance(level, HttpFenceConfig) and level.token_file:
                    out.append((f"{where}.fence_levels[{f_i}].token_file", level.token_file, True))
                check = level.check if isinstance(level, HttpFenceConfig) else None
                if check is not None and check.token_file is not None:
                    at = f"{where}.fence_levels[{f_i}].check.token_file"
                    out.append((at, check.token_file, True))
        eth = pair.ethereum
        if eth is not None:
            for k_i, key in enumerate(eth.keystores):
                where = f"pairs[{p_i}].ethereum.keystores[{k_i}]"
                out.append((f"{where}.keystore_file", key.keystore_file, False))
                out.append((f"{where}.password_file", key.password_file, False))
            if eth.liveness is not None and eth.liveness.token_file is not None:
                out.append(
                    (f"pairs[{p_i}].ethereum.liveness.token_file", eth.liveness.token_file, True)
                )
    return out


def check_driver_files(config: Config) -> list[str]:
    """Driver, fence-level and keystore files that cannot be read.

    Tokens are read and must be non-empty; keystores and passwords are only checked for
    readability here (their contents are read when an activation needs them).
    """
    problems = []
    for key, path, is_token in secret_files(config):
        if key.startswith("auth."):
            continue
        if is_token:
            try:
                read_secret(path, key)
            except ConfigError as exc:
                problems.extend(exc.problems)
        elif not os.access(path, os.R_OK):
            problems.append(f"{key}: cannot read {path}")
    return problems


def permission_warnings(config: Config) -> list[str]:
    """Secret files that group or others may read: worth fixing, not fatal."""
    warnings = []
    for key, path, _ in secret_files(config):
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & 0o077:
            warnings.append(
                f"{key}: {path} is accessible by group/others (mode {mode & 0o777:o}); chmod 600 it"
            )
    return warnings


def _tls_files(config: Config) -> list[tuple[str, Path]]:
    """Every TLS CA file the config names, with its key path."""
    out: list[tuple[str, Path]] = []
    for p_i, pair in enumerate(config.pairs):
        for n_i, node in enumerate(pair.nodes):
            where = f"pairs[{p_i}].nodes[{n_i}]"
            driver = node.driver
            tls = driver.tls if not isinstance(driver, CommandDriverConfig) else None
            if tls is not None and tls.ca_file is not None:
                out.append((f"{where}.driver.tls.ca_file", tls.ca_file))
            for f_i, level in enumerate(node.fence_levels):
                if isinstance(level, HttpFenceConfig) and level.tls.ca_file is not None:
                    out.append((f"{where}.fence_levels[{f_i}].tls.ca_file", level.tls.ca_file))
        live = pair.ethereum.liveness if pair.ethereum is not None else None
        if live is not None and live.tls.ca_file is not None:
            out.append((f"pairs[{p_i}].ethereum.liveness.tls.ca_file", live.tls.ca_file))
    return out


def _unreadable(path: Path) -> str | None:
    """Why a file the responder will open cannot be read, or None."""
    if path.is_dir():
        return "is a directory"
    try:
        with path.open("rb"):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def file_problems(config: Config) -> list[str]:
    """Every file the config names that cannot be used, all in one list: tokens (read, must
    not be empty), keystores, passwords and TLS CA files (must be readable)."""
    problems = []
    sound: set[Path] = set()  # token files read once, however many nodes share one
    for key, path, is_token in secret_files(config):
        if is_token:
            if path in sound:
                continue
            try:
                read_secret(path, key)
                sound.add(path)
            except ConfigError as exc:
                problems.extend(exc.problems)
        elif (why := _unreadable(path)) is not None:
            problems.append(f"{key}: cannot read {path}: {why}")
    for key, path in _tls_files(config):
        if (why := _unreadable(path)) is not None:
            problems.append(f"{key}: cannot read {path}: {why}")
    return problems


def state_dir_problem(state_dir: Path) -> str | None:
    """Why the state directory cannot be created or written, or None: checked without
    creating anything, so `check-config` fails where `serve` would."""
    uid = os.getuid()
    if state_dir.exists():
        if not state_dir.is_dir():
            return f"state_dir: {state_dir} exists and is not a directory"
        if not os.access(state_dir, os.W_OK | os.X_OK):
            return f"state_dir: {state_dir} is not writable by this user (uid {uid})"
        db = state_dir / "responder.sqlite3"
        if db.exists() and not os.access(db, os.R_OK | os.W_OK):
            return f"state_dir: {db} is not writable by this user (uid {uid})"
        return None
    parent = state_dir.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"state_dir: cannot create {state_dir}: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return (
            f"state_dir: cannot create {state_dir}: {parent} is not writable by this user "
            f"(uid {uid})"
        )
    return None


def _raw_file_problems(data: Any, base_dir: Path, at: str = "") -> list[str]:
    """For a config that does not validate: every `*_file` key (and `state_dir`) in the raw
    document that names an unusable path, so one run reports them with the schema errors."""
    problems: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            where = f"{at}.{key}" if at else str(key)
            if isinstance(value, str) and value and str(key).endswith("_file"):
                path = Path(value).expanduser()
                path = path if path.is_absolute() else base_dir / path
                if (why := _unreadable(path)) is not None:
                    problems.append(f"{where}: cannot read {path}: {why}")
            elif isinstance(value, str) and value and key == "state_dir" and not at:
                path = Path(value).expanduser()
                if problem := state_dir_problem(path if path.is_absolute() else base_dir / path):
                    problems.append(problem)
            else:
                problems.extend(_raw_file_problems(value, base_dir, where))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            problems.extend(_raw_file_problems(item, base_dir, f"{at}[{i}]"))
    return problems


def policy_warnings(config: Config) -> list[str]:
    """Policies that work but invite an unwanted failover: worth a warning, not fatal."""
    warnings = []
    for p_i, pair in enumerate(config.pairs):
        policy = pair.policy
        if policy.hold == 0 and policy.cooldown == 0:
            warnings.append(
                f"pairs[{p_i}].policy: hold 0s with cooldown 0s: the first alert fails over at "
                "once and a flapping alert can fail over again at once (only max_failovers "
                f"{policy.max_failovers} per {policy.max_failovers_window:g}s stops it); "
                "set a hold (e.g. 20s) or a cooldown (e.g. 1h)"
            )
    return warnings


def config_warnings(config: Config) -> list[str]:
    """Everything worth fixing in a usable config: file permissions and risky policies."""
    return permission_warnings(config) + policy_warnings(config) + etcd_warnings(config)


ETCD_OPS_PER_PAIR = 6  # writes one pair's decision may take: state, events, failover, journal


def etcd_warnings(config: Config) -> list[str]:
    """One delivery (or deadline round) is one etcd transaction: a group that names every
    pair needs room for each pair's writes."""
    if config.state.backend != "etcd":
        return []
    needed = ETCD_OPS_PER_PAIR * len(config.pairs) + 16
    if needed <= config.state.max_txn_ops:
        return []
    return [
        f"state.max_txn_ops {config.state.max_txn_ops} leaves no room for a delivery that "
        f"names all {len(config.pairs)} pairs (about {needed} writes in one transaction): start "
        f"etcd with --max-txn-ops {needed} or more and set state.max_txn_ops to match, or "
        "group alerts so that one delivery names fewer pairs"
    ]


@dataclass(frozen=True)
class ConfigCheck:
    """The outcome of checking a config file: `config` is None when it does not validate."""

    config: Config | None
    problems: list[str]
    warnings: list[str]


def check_config_file(path: str | Path) -> ConfigCheck:
    """Everything `check-config` and `serve` refuse, in one run: the schema, every file the
    config names, and the state directory. Schema errors come with the file problems that can
    still be found in the raw document."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        return ConfigCheck(None, [f"{file}: cannot read: {exc.strerror}"], [])
    config = _reuse(file, text)
    if config is None:
        try:
            data = _parse_yaml(file, text)
        except ConfigError as exc:
            return ConfigCheck(None, exc.problems, [])
        base_dir = Path(os.path.abspath(file)).parent
        try:
            config = parse_config(data, base_dir)
        except ConfigError as exc:
            return ConfigCheck(None, exc.problems + _raw_file_problems(data, base_dir), [])
        _remember(file, text, config)
    # the files it names are checked every time: they change without the config changing
    problems = file_problems(config)
    if (problem := state_dir_problem(config.state_dir)) is not None:
        problems.append(problem)
    return ConfigCheck(config, problems, config_warnings(config))
