"""EIP-3076 slashing-protection interchange documents: strict parsing and hand-off checks.

The responder never rewrites a history: it forwards the exact text the primary exported. It
parses it only to refuse a hand-off that would not protect the standby (wrong chain, keys
missing, malformed data). Unknown extra fields are kept, so an accepted document round-trips
unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_ROOT = re.compile(r"^0x[0-9a-fA-F]{64}\Z")
_PUBKEY = re.compile(r"^0x[0-9a-fA-F]{96}\Z")
_UINT = re.compile(r"^(0|[1-9][0-9]{0,19})\Z")  # at most 20 digits, then checked <= 2**64-1
_UINT64_MAX = 2**64 - 1


class InterchangeError(ValueError):
    """The document is not a usable EIP-3076 interchange; the message says where and why."""


def _uint(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _UINT.match(value) or int(value) > _UINT64_MAX:
        raise InterchangeError(f"{where}: expected a decimal uint64 string, got {value!r}")
    return value


def _root(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _ROOT.match(value):
        raise InterchangeError(f"{where}: expected 0x-prefixed 32-byte hex, got {value!r}")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InterchangeError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise InterchangeError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _extra(obj: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in known}


@dataclass(frozen=True)
class SignedBlock:
    slot: str
    signing_root: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"slot": self.slot}
        if self.signing_root is not None:
            out["signing_root"] = self.signing_root
        return out | dict(self.extra)


@dataclass(frozen=True)
class SignedAttestation:
    source_epoch: str
    target_epoch: str
    signing_root: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source_epoch": self.source_epoch, "target_epoch": self.target_epoch}
        if self.signing_root is not None:
            out["signing_root"] = self.signing_root
        return out | dict(self.extra)


@dataclass(frozen=True)
class ValidatorHistory:
    pubkey: str
    signed_blocks: tuple[SignedBlock, ...]
    signed_attestations: tuple[SignedAttestation, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "pubkey": self.pubkey,
            "signed_blocks": [b.to_json() for b in self.signed_blocks],
            "signed_attestations": [a.to_json() for a in self.signed_attestations],
        } | dict(self.extra)


@dataclass(frozen=True)
class Interchange:
    version: str
    genesis_validators_root: str
    data: tuple[ValidatorHistory, ...]
    metadata_extra: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        metadata = {
            "interchange_format_version": self.version,
            "genesis_validators_root": self.genesis_validators_root,
        } | dict(self.metadata_extra)
        return {"metadata": metadata, "data": [v.to_json() for v in self.data]} | dict(self.extra)

    @property
    def pubkeys(self) -> set[str]:
        return {v.pubkey.lower() for v in self.data}


def _block(raw: Any, where: str) -> SignedBlock:
    obj = _object(raw, where)
    if "slot" not in obj:
        raise InterchangeError(f"{where}.slot: missing")
    root = obj.get("signing_root")
    return SignedBlock(
        slot=_uint(obj["slot"], f"{where}.slot"),
        signing_root=None if root is None else _root(root, f"{where}.signing_root"),
        extra=_extra(obj, ("slot",) if root is None else ("slot", "signing_root")),
    )


def _attestation(raw: Any, where: str) -> SignedAttestation:
    obj = _object(raw, where)
    for key in ("source_epoch", "target_epoch"):
        if key not in obj:
            raise InterchangeError(f"{where}.{key}: missing")
    root = obj.get("signing_root")
    return SignedAttestation(
        source_epoch=_uint(obj["source_epoch"], f"{where}.source_epoch"),
        target_epoch=_uint(obj["target_epoch"], f"{where}.target_epoch"),
        signing_root=None if root is None else _root(root, f"{where}.signing_root"),
        extra=_extra(
            obj, ("source_epoch", "target_epoch", *(() if root is None else ("signing_root",)))
        ),
    )


def _history(raw: Any, where: str) -> ValidatorHistory:
    obj = _object(raw, where)
    pubkey = obj.get("pubkey")
    if not isinstance(pubkey, str) or not _PUBKEY.match(pubkey):
        raise InterchangeError(f"{where}.pubkey: expected 0x-prefixed 48-byte hex, got {pubkey!r}")
    for key in ("signed_blocks", "signed_attestations"):
        if key not in obj:
            raise InterchangeError(f"{where}.{key}: missing")
    blocks = _list(obj["signed_blocks"], f"{where}.signed_blocks")
    atts = _list(obj["signed_attestations"], f"{where}.signed_attestations")
    return ValidatorHistory(
        pubkey=pubkey,
        signed_blocks=tuple(_block(b, f"{where}.signed_blocks[{i}]") for i, b in enumerate(blocks)),
        signed_attestations=tuple(
            _attestation(a, f"{where}.signed_attestations[{i}]") for i, a in enumerate(atts)
        ),
        extra=_extra(obj, ("pubkey", "signed_blocks", "signed_attestations")),
    )


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_interchange(raw: str | Mapping[str, Any]) -> Interchange:
    """Parse a document given as JSON text (current spec) or as an object (older clients)."""
    if isinstance(raw, str):
        try:
            doc = json.loads(raw, parse_constant=_not_json)
        except ValueError as exc:
            raise InterchangeError(f"not valid JSON: {exc}") from None
    else:
        doc = raw
    obj = _object(doc, "document")
    metadata = _object(obj.get("metadata"), "metadata")
    version = metadata.get("interchange_format_version")
    if version != "5":
        raise InterchangeError(
            f'metadata.interchange_format_version: expected "5", got {version!r}'
        )
    root = _root(metadata.get("genesis_validators_root"), "metadata.genesis_validators_root")
    data = _list(obj.get("data"), "data")
    return Interchange(
        version=version,
        genesis_validators_root=root,
        data=tuple(_history(v, f"data[{i}]") for i, v in enumerate(data)),
        metadata_extra=_extra(metadata, ("interchange_format_version", "genesis_validators_root")),
        extra=_extra(obj, ("metadata", "data")),
    )


def as_text(raw: Any) -> str:
    """The history as JSON text: a string is kept byte for byte, an object is serialised."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, dict):
        return json.dumps(raw, separators=(",", ":"))
    raise InterchangeError(
        f"slashing_protection: expected a JSON string or object, got {type(raw).__name__}"
    )


def check_handoff(
    doc: Interchange, *, genesis_validators_root: str, pubkeys: tuple[str, ...]
) -> None:
    """Refuse a history for another chain, or one that does not cover exactly the pair's keys."""
    if doc.genesis_validators_root.lower() != genesis_validators_root.lower():
        raise InterchangeError(
            f"genesis_validators_root {doc.genesis_validators_root} is not this pair's chain "
            f"({genesis_validators_root})"
        )
    wanted = {k.lower() for k in pubkeys}
    missing = wanted - doc.pubkeys
    if missing:
        raise InterchangeError(f"history misses pubkeys: {', '.join(sorted(missing))}")
    foreign = doc.pubkeys - wanted
    if foreign:
        raise InterchangeError(
            f"history has pubkeys this pair does not manage: {', '.join(sorted(foreign))}"
        )
