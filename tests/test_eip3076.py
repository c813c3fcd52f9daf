"""EIP-3076 interchange parsing: accepted documents round-trip, broken ones say where they break."""

from __future__ import annotations

import copy
import json
from functools import reduce
from operator import getitem
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from responder.eip3076 import InterchangeError, as_text, check_handoff, parse_interchange
from tests.keymanager_spec import SPEC_DIR

UINT64_MAX = 2**64 - 1
MISSING = object()  # a mutation that removes the key

PK_A = "0x" + "a1" * 48
PK_B = "0x" + "b2" * 48
PK_C = "0x" + "c3" * 48
MAINNET_ROOT = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"
OTHER_ROOT = "0xd8ea171f3c94aea21ebc42a1ed61052acf3f9209c00e4efbaaddac09ed9b8078"

# --- strategies ---


def _mixed_case(digits: str, upper: int) -> str:
    return "".join(c.upper() if upper >> i & 1 else c for i, c in enumerate(digits))


def hex_string(nchars: int) -> st.SearchStrategy[str]:
    """0x followed by `nchars` hex digits, each in either case."""
    size = (nchars + 1) // 2
    return st.builds(
        lambda raw, upper: "0x" + _mixed_case(raw.hex()[:nchars], upper),
        st.binary(min_size=size, max_size=size),
        st.integers(0, 2**nchars - 1),
    )


def extras(
    known: tuple[str, ...], values: st.SearchStrategy[Any]
) -> st.SearchStrategy[dict[str, Any]]:
    """Unknown extra fields for an object whose own fields are `known`."""
    return st.dictionaries(st.text(max_size=12), values, max_size=2).map(
        lambda d: {k: v for k, v in d.items() if k not in known}
    )


def with_extras(
    fields: dict[str, st.SearchStrategy[Any]], values: st.SearchStrategy[Any]
) -> st.SearchStrategy[dict[str, Any]]:
    """An object with `fields`, plus unknown extra fields whose values come from `values`."""
    return st.builds(
        lambda known, more: more | known,
        st.fixed_dictionaries(fields),
        extras(tuple(fields), values),
    )


pubkeys = hex_string(96)
roots = hex_string(64)
uint64s = st.integers(0, UINT64_MAX).map(str)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=6), inner, max_size=2)
    ),
    max_leaves=4,
)
# signing_root is optional: absent, a hex root, or an explicit null
signing_roots = st.one_of(
    st.just({}), roots.map(lambda r: {"signing_root": r}), st.just({"signing_root": None})
)
signed_blocks = st.builds(
    lambda known, root, more: more | known | root,
    st.fixed_dictionaries({"slot": uint64s}),
    signing_roots,
    extras(("slot", "signing_root"), json_scalars),
)
signed_attestations = st.builds(
    lambda known, root, more: more | known | root,
    st.fixed_dictionaries({"source_epoch": uint64s, "target_epoch": uint64s}),
    signing_roots,
    extras(("source_epoch", "target_epoch", "signing_root"), json_scalars),
)
validators = with_extras(
    {
        "pubkey": pubkeys,
        "signed_blocks": st.lists(signed_blocks, max_size=3),
        "signed_attestations": st.lists(signed_attestations, max_size=3),
    },
    json_values,
)
# A valid EIP-3076 version 5 document, unknown extra fields possible at every level.
documents = with_extras(
    {
        "metadata": with_extras(
            {"interchange_format_version": st.just("5"), "genesis_validators_root": roots},
            json_values,
        ),
        "data": st.lists(validators, max_size=3),
    },
    json_values,
)


@st.composite
def _broken_hex(draw: st.DrawFn, nchars: int) -> Any:
    good = draw(hex_string(nchars))
    position = draw(st.integers(2, nchars + 1))
    return draw(
        st.one_of(
            st.integers(0, nchars + 4).filter(lambda n: n != nchars).flatmap(hex_string),
            st.sampled_from("gGxz :-\u0660").map(
                lambda c: good[:position] + c + good[position + 1 :]
            ),
            st.just(good[2:]),
            st.just("0X" + good[2:]),
            st.sampled_from(["\n", " ", "\x00"]).map(lambda c: good + c),
            st.just(" " + good),
            st.integers(),
            st.just([good]),
        )
    )


# Anything that is not 0x + exactly 64 (96) hex digits. None is a bad root only where the root is
# required: an explicit "signing_root": null is accepted.
bad_roots = _broken_hex(64)
bad_pubkeys = _broken_hex(96) | st.none()


bad_uints = st.one_of(
    st.integers(0, UINT64_MAX),  # a JSON number, not a decimal string
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(max_value=-1).map(str),
    st.integers(UINT64_MAX + 1, 2**80).map(str),
    st.integers(1, 10**9).map(lambda n: "0" + str(n)),
    st.integers(0, 10**9).map(lambda n: f"{n}\n"),
    st.integers(0, 10**9).map(lambda n: f" {n}"),
    st.integers(0, 10**9).map(lambda n: f"+{n}"),
    st.integers(0, 10**9).map(lambda n: f"{n}.0"),
    st.integers(0, 10**9).map(hex),
    st.sampled_from(["", "1e3", "1_000", "\u0661", "-0", "9" * 21, "1" * 5000]),
    st.booleans(),
    st.none(),
    st.just(MISSING),
)
bad_versions = st.one_of(
    st.sampled_from(["4", "6", "", "5.0", " 5", "5\n", "05", 5, 5.0, None, ["5"], MISSING]),
    st.text(max_size=3).filter(lambda s: s != "5"),
)
not_objects = st.one_of(
    st.text(max_size=5), st.integers(), st.none(), st.lists(st.integers(), max_size=2)
)
not_lists = st.one_of(
    st.text(max_size=5),
    st.integers(),
    st.none(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def where(tokens: tuple[str | int, ...]) -> str:
    """The path notation the parser uses: data[0].signed_blocks[1].slot."""
    out = ""
    for token in tokens:
        out += f"[{token}]" if isinstance(token, int) else (f".{token}" if out else token)
    return out


@st.composite
def broken_documents(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid document with exactly one thing broken, and the path of that thing."""
    doc = draw(documents)
    sites: list[tuple[tuple[str | int, ...], st.SearchStrategy[Any]]] = [
        (("metadata",), not_objects | st.just(MISSING)),
        (("metadata", "interchange_format_version"), bad_versions),
        (("metadata", "genesis_validators_root"), bad_roots | st.none() | st.just(MISSING)),
        (("data",), not_lists | st.just(MISSING)),
    ]
    for i, entry in enumerate(doc["data"]):
        sites += [
            (("data", i), not_objects),
            (("data", i, "pubkey"), bad_pubkeys | st.just(MISSING)),
            (("data", i, "signed_blocks"), not_lists | st.just(MISSING)),
            (("data", i, "signed_attestations"), not_lists | st.just(MISSING)),
        ]
        for j in range(len(entry["signed_blocks"])):
            block = ("data", i, "signed_blocks", j)
            sites += [
                (block, not_objects),
                ((*block, "slot"), bad_uints),
                ((*block, "signing_root"), bad_roots),
            ]
        for j in range(len(entry["signed_attestations"])):
            att = ("data", i, "signed_attestations", j)
            sites += [
                (att, not_objects),
                ((*att, "source_epoch"), bad_uints),
                ((*att, "target_epoch"), bad_uints),
                ((*att, "signing_root"), bad_roots),
            ]
    tokens, values = draw(st.sampled_from(sites))
    bad = draw(values)
    parent = reduce(getitem, tokens[:-1], doc)
    if bad is MISSING:
        del parent[tokens[-1]]
    else:
        parent[tokens[-1]] = bad
    return doc, where(tokens)


def document(*pubkeys: str, root: str = MAINNET_ROOT) -> dict[str, Any]:
    """A small valid document for `pubkeys` on the chain `root`."""
    return {
        "metadata": {"interchange_format_version": "5", "genesis_validators_root": root},
        "data": [
            {
                "pubkey": pk,
                "signed_blocks": [{"slot": "81952", "signing_root": "0x" + "44" * 32}],
                "signed_attestations": [
                    {"source_epoch": "2290", "target_epoch": "3007"},
                    {
                        "source_epoch": "2290",
                        "target_epoch": "3008",
                        "signing_root": "0x" + "55" * 32,
                    },
                ],
            }
            for pk in pubkeys
        ],
    }


def reason(raw: Any) -> str:
    """The InterchangeError message parse_interchange gives for `raw`."""
    with pytest.raises(InterchangeError) as exc:
        parse_interchange(raw)
    return str(exc.value)


# --- accepted documents round-trip ---


@given(documents)
def test_text_form_round_trips(doc: dict[str, Any]) -> None:
    """Any valid document given as JSON text parses back to exactly the same object."""
    assert parse_interchange(json.dumps(doc)).to_json() == doc


@given(documents, st.sampled_from([None, 0, 2]), st.booleans())
def test_text_form_round_trips_in_any_layout(
    doc: dict[str, Any], indent: int | None, ascii_only: bool
) -> None:
    """Whitespace and escaping choices of the exporting client do not matter."""
    text = json.dumps(doc, indent=indent, ensure_ascii=ascii_only)
    assert parse_interchange(text).to_json() == doc


@given(documents)
def test_object_form_round_trips(doc: dict[str, Any]) -> None:
    """Any valid document given as an object (older clients) parses back unchanged, untouched."""
    before = copy.deepcopy(doc)
    assert parse_interchange(doc).to_json() == before
    assert doc == before


@given(documents, st.sampled_from([None, 1, 4]))
def test_as_text_keeps_a_string_byte_for_byte(doc: dict[str, Any], indent: int | None) -> None:
    """A history that arrived as a string is forwarded as exactly that string."""
    text = json.dumps(doc, indent=indent, ensure_ascii=False)
    forwarded = as_text(text)
    assert forwarded is text
    assert forwarded.encode() == text.encode()


@given(documents)
def test_as_text_serialises_an_object_faithfully(doc: dict[str, Any]) -> None:
    """A history that arrived as an object becomes JSON text of the same document."""
    text = as_text(doc)
    assert isinstance(text, str)
    assert json.loads(text) == doc
    assert parse_interchange(text).to_json() == doc


@pytest.mark.parametrize("bad", [None, ["x"], b"{}", 5])
def test_as_text_refuses_other_types(bad: Any) -> None:
    """slashing_protection that is neither a string nor an object is refused, naming the field."""
    with pytest.raises(
        InterchangeError, match=r"^slashing_protection: expected a JSON string or object"
    ):
        as_text(bad)


def test_spec_example_parses_and_round_trips() -> None:
    """The Keymanager spec's own slashing_protection example is accepted and round-trips."""
    example = yaml.safe_load((SPEC_DIR / "types" / "slashing_protection.yaml").read_text())[
        "example"
    ]
    doc = parse_interchange(example)
    assert doc.to_json() == json.loads(example)
    assert as_text(example) == example
    check_handoff(
        doc, genesis_validators_root=doc.genesis_validators_root, pubkeys=tuple(doc.pubkeys)
    )


def test_signing_root_null_round_trips() -> None:
    """An explicit "signing_root": null is accepted and kept, not silently dropped."""
    doc = document(PK_A)
    doc["data"][0]["signed_blocks"][0]["signing_root"] = None
    doc["data"][0]["signed_attestations"][0]["signing_root"] = None
    parsed = parse_interchange(json.dumps(doc))
    assert parsed.data[0].signed_blocks[0].signing_root is None
    assert parsed.to_json() == doc


def test_uint64_bounds() -> None:
    """0 and 2**64-1 are accepted; 2**64 is not."""
    doc = document(PK_A)
    doc["data"][0]["signed_blocks"] = [{"slot": "0"}, {"slot": str(UINT64_MAX)}]
    assert parse_interchange(doc).to_json() == doc
    doc["data"][0]["signed_blocks"][1]["slot"] = str(UINT64_MAX + 1)
    assert reason(doc).startswith("data[0].signed_blocks[1].slot: expected a decimal uint64 string")


# --- malformed documents are rejected, saying where ---


@settings(max_examples=200)
@given(broken_documents())
def test_one_broken_field_is_rejected_with_its_path(case: tuple[dict[str, Any], str]) -> None:
    """A single invalid field, in text or object form, is refused with its path in the reason."""
    doc, path = case
    assert reason(json.dumps(doc)).startswith(f"{path}:")
    assert reason(doc).startswith(f"{path}:")


@given(documents, st.data())
def test_truncated_json_text_is_rejected(doc: dict[str, Any], data: st.DataObject) -> None:
    """Any proper prefix of a document's text is refused as invalid JSON."""
    text = json.dumps(doc)
    cut = data.draw(st.integers(0, len(text) - 1))
    assert reason(text[:cut]).startswith("not valid JSON")


@given(documents, st.sampled_from(["x", "}", ",", "{}", "\x00"]))
def test_trailing_garbage_is_rejected(doc: dict[str, Any], junk: str) -> None:
    """Text after the document makes it invalid JSON."""
    assert reason(json.dumps(doc) + junk).startswith("not valid JSON")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_rejected(constant: str) -> None:
    """NaN and Infinity, which Python's json would accept, are not JSON and are refused."""
    text = json.dumps(document(PK_A))[:-1] + f', "x": {constant}}}'
    assert reason(text).startswith("not valid JSON")


@pytest.mark.parametrize("raw", ["[]", '"text"', "5", "null", [], "x"])
def test_document_must_be_an_object(raw: Any) -> None:
    """A top level that is not a JSON object is refused."""
    message = reason(raw)
    assert message.startswith(("document: expected an object", "not valid JSON"))


def test_reason_names_a_deep_path() -> None:
    """A bad target_epoch names its exact place in the document."""
    doc = document(PK_A, PK_B)
    doc["data"][1]["signed_attestations"][1]["target_epoch"] = 3008
    assert reason(doc) == (
        "data[1].signed_attestations[1].target_epoch: expected a decimal uint64 string, got 3008"
    )


def test_version_other_than_5_is_rejected() -> None:
    """Only interchange_format_version "5" is accepted."""
    doc = document(PK_A)
    doc["metadata"]["interchange_format_version"] = "4"
    assert reason(doc) == "metadata.interchange_format_version: expected \"5\", got '4'"


def test_missing_signed_blocks_is_rejected() -> None:
    """signed_blocks is required even when there were none."""
    doc = document(PK_A)
    del doc["data"][0]["signed_blocks"]
    assert reason(doc) == "data[0].signed_blocks: missing"


@pytest.mark.parametrize(
    ("tokens", "value"),
    [
        (("metadata", "genesis_validators_root"), MAINNET_ROOT + "\n"),
        (("data", 0, "pubkey"), PK_A + "\n"),
        (("data", 0, "signed_blocks", 0, "slot"), "81952\n"),
        (("data", 0, "signed_blocks", 0, "signing_root"), "0x" + "44" * 32 + "\n"),
    ],
)
def test_trailing_newline_is_rejected(tokens: tuple[str | int, ...], value: str) -> None:
    """A value with a trailing newline is not a valid hex or decimal string."""
    doc = document(PK_A)
    reduce(getitem, tokens[:-1], doc)[tokens[-1]] = value
    assert reason(doc).startswith(f"{where(tokens)}:")


def test_huge_decimal_is_rejected_cleanly() -> None:
    """A decimal string of thousands of digits is an InterchangeError, not a crash."""
    doc = document(PK_A)
    doc["data"][0]["signed_blocks"][0]["slot"] = "1" * 5000
    assert reason(json.dumps(doc)).startswith("data[0].signed_blocks[0].slot:")


# --- check_handoff ---


def test_handoff_with_matching_document_passes() -> None:
    """A history for this chain covering exactly the pair's keys is accepted, in any order."""
    doc = parse_interchange(document(PK_A, PK_B))
    check_handoff(doc, genesis_validators_root=MAINNET_ROOT, pubkeys=(PK_B, PK_A))


def test_handoff_with_wrong_genesis_root_is_refused() -> None:
    """A history from another chain is refused, naming both roots."""
    doc = parse_interchange(document(PK_A, root=OTHER_ROOT))
    with pytest.raises(InterchangeError) as exc:
        check_handoff(doc, genesis_validators_root=MAINNET_ROOT, pubkeys=(PK_A,))
    assert "genesis_validators_root" in str(exc.value)
    assert OTHER_ROOT in str(exc.value)
    assert MAINNET_ROOT in str(exc.value)


def test_handoff_missing_a_pubkey_is_refused() -> None:
    """A history lacking one of the pair's keys is refused, naming that key."""
    doc = parse_interchange(document(PK_A))
    with pytest.raises(InterchangeError, match=f"history misses pubkeys: {PK_B}"):
        check_handoff(doc, genesis_validators_root=MAINNET_ROOT, pubkeys=(PK_A, PK_B))


def test_handoff_with_foreign_pubkey_is_refused() -> None:
    """A history carrying a key the pair does not manage is refused, naming that key."""
    doc = parse_interchange(document(PK_A, PK_C))
    with pytest.raises(InterchangeError, match=f"pubkeys this pair does not manage: {PK_C}"):
        check_handoff(doc, genesis_validators_root=MAINNET_ROOT, pubkeys=(PK_A,))


def test_handoff_with_empty_history_is_refused() -> None:
    """A history with no data at all misses every managed key."""
    doc = parse_interchange(document())
    with pytest.raises(InterchangeError, match="history misses pubkeys"):
        check_handoff(doc, genesis_validators_root=MAINNET_ROOT, pubkeys=(PK_A,))


def test_handoff_tolerates_case_differences() -> None:
    """Hex case differences in pubkeys and the genesis root do not matter."""
    doc = parse_interchange(document("0x" + PK_A[2:].upper(), root="0x" + MAINNET_ROOT[2:].upper()))
    check_handoff(doc, genesis_validators_root=MAINNET_ROOT, pubkeys=(PK_A,))


@given(documents, st.data())
def test_handoff_accepts_any_document_for_its_own_chain_and_keys(
    doc: dict[str, Any], data: st.DataObject
) -> None:
    """Any valid document passes against its own root and keys, whatever their case."""
    parsed = parse_interchange(doc)
    keys = tuple(v["pubkey"] for v in doc["data"])
    swapped = tuple(
        k.swapcase().replace("0X", "0x") if data.draw(st.booleans()) else k for k in keys
    )
    root = doc["metadata"]["genesis_validators_root"]
    check_handoff(parsed, genesis_validators_root=root.lower(), pubkeys=swapped)


@given(documents.filter(lambda d: len(d["data"]) > 0), st.data())
def test_handoff_refuses_any_key_set_mismatch(doc: dict[str, Any], data: st.DataObject) -> None:
    """Dropping a key from the pair, or adding one, makes any document fail the check."""
    parsed = parse_interchange(doc)
    keys = sorted(parsed.pubkeys)
    root = doc["metadata"]["genesis_validators_root"]
    dropped = data.draw(st.sampled_from(keys))
    with pytest.raises(InterchangeError, match="does not manage"):
        check_handoff(
            parsed, genesis_validators_root=root, pubkeys=tuple(k for k in keys if k != dropped)
        )
    extra = data.draw(pubkeys.filter(lambda k: k.lower() not in parsed.pubkeys))
    with pytest.raises(InterchangeError, match="misses"):
        check_handoff(parsed, genesis_validators_root=root, pubkeys=(*keys, extra))
