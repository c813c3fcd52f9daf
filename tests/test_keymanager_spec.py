"""The Keymanager API spec checks: they accept what the spec shows and reject what it forbids."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from jsonschema import Draft4Validator
from pytest_httpserver import HTTPServer
from werkzeug import Request
from werkzeug.test import EnvironBuilder

from tests.keymanager_spec import (
    METHODS,
    PATHS,
    SPEC_DIR,
    handler,
    request_schema,
    response_schema,
    response_statuses,
    to_json_schema,
    validate_request,
    validate_response,
)

KEYSTORES = "/eth/v1/keystores"
REMOTEKEYS = "/eth/v1/remotekeys"
PUBKEY = "0x93247f2209abcacf57b75a51dafae777f9dd38bc7053d1af526f220a7489a6d3a2753e5f3e8b1cfe39b56f43611df74a"
HISTORY = json.dumps(
    {
        "metadata": {
            "interchange_format_version": "5",
            "genesis_validators_root": "0x" + "cf" * 32,
        },
        "data": [{"pubkey": PUBKEY, "signed_blocks": [], "signed_attestations": []}],
    }
)
OPERATIONS = [(m, p) for p in PATHS for m in METHODS]


def example_of(schema: dict[str, Any]) -> Any:
    """An instance built from the spec's own `example` values (first enum value otherwise)."""
    if "example" in schema:
        return schema["example"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {name: example_of(s) for name, s in schema.get("properties", {}).items()}
    if kind == "array":
        return [example_of(schema["items"])]
    return {"boolean": True, "string": "text"}[kind]


def request(method: str, path: str, body: Any = None, **headers: str) -> Request:
    """A werkzeug request as a client would send it."""
    headers.setdefault("Authorization", "Bearer secret-token")
    kw: dict[str, Any] = {} if body is None else {"json": body}
    return EnvironBuilder(method=method, path=path, headers=headers, **kw).get_request()


def error_message(exc: pytest.ExceptionInfo[AssertionError]) -> str:
    """The text of a caught AssertionError."""
    return str(exc.value)


# --- the spec's own examples are accepted ---


def test_spec_files_are_self_contained() -> None:
    """The copied spec carries its source, commit and CC0 licence note."""
    assert (SPEC_DIR / "COMMIT").read_text().strip()
    assert "CC0" in (SPEC_DIR / "LICENSE").read_text()
    assert "ethereum/keymanager-APIs" in (SPEC_DIR / "SOURCE").read_text()


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_every_schema_is_valid_draft4(method: str, path: str) -> None:
    """Every resolved request and response schema is a well-formed Draft 4 schema without $ref."""
    schemas = [request_schema(method, path)] + [
        response_schema(method, path, s) for s in response_statuses(method, path)
    ]
    for schema in schemas:
        if schema is not None:
            Draft4Validator.check_schema(schema)
            assert "$ref" not in json.dumps(schema)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_spec_example_request_is_accepted(method: str, path: str) -> None:
    """A request body made of the spec's examples passes (GET: no body)."""
    schema = request_schema(method, path)
    validate_request(method, path, None if schema is None else example_of(schema))


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_spec_example_responses_are_accepted(method: str, path: str) -> None:
    """A response made of the spec's examples passes for every documented status."""
    for status in response_statuses(method, path):
        schema = response_schema(method, path, status)
        assert schema is not None
        validate_response(method, path, status, example_of(schema))


@pytest.mark.parametrize(
    ("path", "statuses"),
    [
        (KEYSTORES, ["deleted", "not_active", "not_found", "error"]),
        (REMOTEKEYS, ["deleted", "not_found", "error"]),
    ],
)
def test_every_delete_status_in_the_enum_is_accepted(path: str, statuses: list[str]) -> None:
    """Each per-key DELETE status the spec lists passes, with or without a message."""
    for status in statuses:
        body: dict[str, Any] = {"data": [{"status": status}, {"status": status, "message": "m"}]}
        if path == KEYSTORES:
            body["slashing_protection"] = HISTORY
        validate_response("DELETE", path, 200, body)


def test_listing_with_optional_fields_is_accepted() -> None:
    """GET listings pass with only the required pubkey and with every optional field."""
    validate_response("GET", KEYSTORES, 200, {"data": [{"validating_pubkey": PUBKEY}]})
    validate_response(
        "GET",
        KEYSTORES,
        200,
        {
            "data": [
                {
                    "validating_pubkey": PUBKEY,
                    "derivation_path": "m/12381/3600/0/0/0",
                    "readonly": False,
                }
            ]
        },
    )
    validate_response(
        "GET", REMOTEKEYS, 200, {"data": [{"pubkey": PUBKEY, "url": "https://s", "readonly": True}]}
    )


def test_pubkeys_are_case_insensitive() -> None:
    """An upper-case hex pubkey is a valid pubkey, as the spec says."""
    validate_request("DELETE", KEYSTORES, {"pubkeys": ["0x" + PUBKEY[2:].upper()]})


# --- wrong bodies are rejected, naming where ---


def test_delete_without_pubkeys_is_rejected() -> None:
    """A DELETE body without `pubkeys` fails, naming the missing property."""
    with pytest.raises(AssertionError) as exc:
        validate_request("DELETE", KEYSTORES, {"pubkey": [PUBKEY]})
    assert "'pubkeys' is a required property" in error_message(exc)
    assert "DELETE /eth/v1/keystores request body" in error_message(exc)


@pytest.mark.parametrize("bad", [PUBKEY[:-1], PUBKEY[2:], PUBKEY[:-1] + "g", 42])
def test_malformed_pubkey_in_request_is_rejected(bad: object) -> None:
    """A pubkey that is not 0x + 96 hex digits fails at its array position."""
    for path in PATHS:
        with pytest.raises(AssertionError, match=r"at \$\.pubkeys\[1\]"):
            validate_request("DELETE", path, {"pubkeys": [PUBKEY, bad]})


def test_status_outside_the_enum_is_rejected() -> None:
    """A per-key status the spec does not list fails, naming the item."""
    body = {"data": [{"status": "deleted"}, {"status": "gone"}], "slashing_protection": HISTORY}
    with pytest.raises(AssertionError) as exc:
        validate_response("DELETE", KEYSTORES, 200, body)
    assert "at $.data[1].status: 'gone' is not one of" in error_message(exc)


def test_not_active_is_not_a_remotekeys_status() -> None:
    """`not_active` is only defined for local keystores, not for remote keys."""
    with pytest.raises(AssertionError, match=r"\$\.data\[0\]\.status"):
        validate_response("DELETE", REMOTEKEYS, 200, {"data": [{"status": "not_active"}]})


def test_slashing_protection_as_object_is_rejected() -> None:
    """The current spec wants slashing_protection as a JSON string, so an object fails."""
    body = {"data": [{"status": "deleted"}], "slashing_protection": json.loads(HISTORY)}
    with pytest.raises(AssertionError) as exc:
        validate_response("DELETE", KEYSTORES, 200, body)
    assert "at $.slashing_protection:" in error_message(exc)
    assert "is not of type 'string'" in error_message(exc)


def test_camel_case_slashing_protection_is_rejected() -> None:
    """The `slashingProtection` quirk leaves the required `slashing_protection` missing."""
    body = {"data": [{"status": "deleted"}], "slashingProtection": HISTORY}
    with pytest.raises(AssertionError, match="'slashing_protection' is a required property"):
        validate_response("DELETE", KEYSTORES, 200, body)


def test_import_with_keystore_objects_is_rejected() -> None:
    """POST keystores must carry each EIP-2335 keystore as a string, with passwords."""
    with pytest.raises(AssertionError, match=r"at \$\.keystores\[0\]: .* is not of type 'string'"):
        validate_request("POST", KEYSTORES, {"keystores": [{"version": 4}], "passwords": ["p"]})
    with pytest.raises(AssertionError, match="'passwords' is a required property"):
        validate_request("POST", KEYSTORES, {"keystores": ["{}"]})


def test_import_status_outside_the_enum_is_rejected() -> None:
    """An import status other than imported/duplicate/error fails."""
    for path in PATHS:
        with pytest.raises(AssertionError, match=r"\$\.data\[0\]\.status"):
            validate_response("POST", path, 200, {"data": [{"status": "deleted"}]})


def test_remote_key_without_pubkey_is_rejected() -> None:
    """POST remotekeys needs a pubkey in each remote key."""
    with pytest.raises(AssertionError, match=r"at \$\.remote_keys\[0\]: 'pubkey' is a required"):
        validate_request("POST", REMOTEKEYS, {"remote_keys": [{"url": "https://signer"}]})


def test_listing_errors_are_rejected() -> None:
    """A listing without `data` or with a non-boolean `readonly` fails."""
    with pytest.raises(AssertionError, match="'data' is a required property"):
        validate_response("GET", KEYSTORES, 200, {"keys": []})
    with pytest.raises(AssertionError, match=r"\$\.data\[0\]\.readonly"):
        validate_response(
            "GET", KEYSTORES, 200, {"data": [{"validating_pubkey": PUBKEY, "readonly": "no"}]}
        )


def test_every_error_is_reported() -> None:
    """All mismatches of one body are listed, not only the first."""
    body = {"data": [{"status": "x"}, {"status": "y"}], "slashing_protection": 1}
    with pytest.raises(AssertionError) as exc:
        validate_response("DELETE", KEYSTORES, 200, body)
    for where in ("$.data[0].status", "$.data[1].status", "$.slashing_protection"):
        assert f"at {where}:" in error_message(exc)


def test_error_response_needs_a_message() -> None:
    """401/403/500 bodies follow ErrorResponse: a string `message` is required."""
    validate_response("DELETE", KEYSTORES, 401, {"message": "no token"})
    with pytest.raises(AssertionError, match="'message' is a required property"):
        validate_response("DELETE", KEYSTORES, 403, {"error": "bad token"})


def test_undocumented_status_is_rejected() -> None:
    """A status the spec does not document for the operation fails (DELETE never 404s)."""
    with pytest.raises(AssertionError, match="status 404 is not in the spec"):
        validate_response("DELETE", KEYSTORES, 404, {"message": "not found"})
    with pytest.raises(AssertionError, match="status 400 is not in the spec"):
        validate_response("POST", REMOTEKEYS, 400, {"message": "bad"})


def test_body_presence_follows_the_spec() -> None:
    """GET takes no body; POST and DELETE require one."""
    with pytest.raises(AssertionError, match="defines no body"):
        validate_request("GET", KEYSTORES, {"pubkeys": []})
    with pytest.raises(AssertionError, match="required by the spec"):
        validate_request("DELETE", KEYSTORES, None)


def test_unknown_operation_is_rejected() -> None:
    """A method or path outside the covered operations fails loudly."""
    with pytest.raises(AssertionError, match="no such operation"):
        validate_request("PUT", KEYSTORES, {})
    with pytest.raises(AssertionError, match="not one of the covered paths"):
        validate_response("GET", "/eth/v1/validator/x/feerecipient", 200, {})


def test_nullable_admits_null() -> None:
    """An OpenAPI `nullable: true` schema accepts null as well as its type."""
    schema = to_json_schema(
        {"type": "object", "properties": {"a": {"type": "string", "nullable": True}}}
    )
    Draft4Validator(schema).validate({"a": None})
    Draft4Validator(schema).validate({"a": "x"})
    assert not Draft4Validator(schema).is_valid({"a": 1})
    assert not Draft4Validator(to_json_schema({"type": "string"})).is_valid(None)


# --- the request handler for pytest-httpserver ---


def test_handler_serves_a_conforming_exchange() -> None:
    """A valid request reaches `respond` and its valid answer is sent as JSON."""
    seen: list[dict[str, Any]] = []

    def respond(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        seen.append(body)
        return 200, {"data": [{"status": "deleted"}], "slashing_protection": HISTORY}

    response = handler("DELETE", KEYSTORES, respond)(
        request("DELETE", KEYSTORES, {"pubkeys": [PUBKEY]})
    )
    assert seen == [{"pubkeys": [PUBKEY]}]
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == {"data": [{"status": "deleted"}], "slashing_protection": HISTORY}


def test_handler_passes_an_empty_dict_for_get() -> None:
    """A GET has no body; `respond` gets `{}`."""
    seen: list[dict[str, Any]] = []
    h = handler("GET", REMOTEKEYS, lambda b: (seen.append(b), (200, {"data": []}))[1])
    assert h(request("GET", REMOTEKEYS)).get_json() == {"data": []}
    assert seen == [{}]


@pytest.mark.parametrize(
    ("auth", "shown"),
    [
        (None, "no Authorization header"),
        ("Basic dTpw", "scheme 'Basic'"),
        ("Bearer ", "scheme 'Bearer'"),
    ],
)
def test_handler_requires_a_bearer_token(auth: str | None, shown: str) -> None:
    """A request without `Authorization: Bearer <token>` fails before `respond` runs."""
    called: list[object] = []
    h = handler("GET", KEYSTORES, lambda b: (called.append(b), (200, {"data": []}))[1])
    req = request("GET", KEYSTORES)
    environ = dict(req.environ)
    environ.pop("HTTP_AUTHORIZATION")
    if auth is not None:
        environ["HTTP_AUTHORIZATION"] = auth
    with pytest.raises(AssertionError, match="expected 'Authorization: Bearer <token>'") as exc:
        h(Request(environ))
    assert shown in error_message(exc)
    assert called == []


def test_handler_rejects_a_bad_request_before_responding() -> None:
    """An invalid request body fails and `respond` is never called."""
    called: list[object] = []
    h = handler("DELETE", KEYSTORES, lambda b: (called.append(b), (200, {}))[1])
    with pytest.raises(AssertionError, match="'pubkeys' is a required property"):
        h(request("DELETE", KEYSTORES, {}))
    with pytest.raises(AssertionError, match="expected application/json"):
        h(_text_request())
    assert called == []


def _text_request() -> Request:
    """A DELETE whose JSON body is sent as text/plain."""
    return EnvironBuilder(
        method="DELETE",
        path=KEYSTORES,
        data=json.dumps({"pubkeys": [PUBKEY]}),
        content_type="text/plain",
        headers={"Authorization": "Bearer t"},
    ).get_request()


def test_handler_refuses_a_non_conforming_answer() -> None:
    """A fake whose answer breaks the spec fails instead of sending it."""
    h = handler("DELETE", KEYSTORES, lambda b: (200, {"data": [{"status": "deleted"}]}))
    with pytest.raises(AssertionError, match="'slashing_protection' is a required property"):
        h(request("DELETE", KEYSTORES, {"pubkeys": [PUBKEY]}))


def test_handler_quirk_sends_a_non_conforming_answer() -> None:
    """With quirk=True a deliberate client quirk (camelCase, object history) is sent as is."""
    quirky = {"data": [{"status": "deleted"}], "slashingProtection": json.loads(HISTORY)}
    h = handler("DELETE", KEYSTORES, lambda b: (200, quirky), quirk=True)
    assert h(request("DELETE", KEYSTORES, {"pubkeys": [PUBKEY]})).get_json() == quirky


def test_handler_still_checks_requests_under_quirk() -> None:
    """quirk=True relaxes only the answer; the client's request is still checked."""
    h = handler("DELETE", KEYSTORES, lambda b: (200, {}), quirk=True)
    with pytest.raises(AssertionError, match=r"\$\.pubkeys\[0\]"):
        h(request("DELETE", KEYSTORES, {"pubkeys": ["0x00"]}))


def test_handler_rejects_unknown_operations_up_front() -> None:
    """Building a handler for an operation the spec lacks fails immediately."""
    with pytest.raises(AssertionError, match="no such operation"):
        handler("PATCH", KEYSTORES, lambda b: (200, {}))


def test_handler_works_with_pytest_httpserver(httpserver: HTTPServer) -> None:
    """Ordered DELETE-then-POST expectations served by the handler round-trip over HTTP."""
    httpserver.expect_ordered_request(KEYSTORES, method="DELETE").respond_with_handler(
        handler(
            "DELETE",
            KEYSTORES,
            lambda b: (200, {"data": [{"status": "deleted"}], "slashing_protection": HISTORY}),
        )
    )
    httpserver.expect_ordered_request(KEYSTORES, method="POST").respond_with_handler(
        handler(
            "POST",
            KEYSTORES,
            lambda b: (200, {"data": [{"status": "imported"}] * len(b["keystores"])}),
        )
    )
    auth = {"Authorization": "Bearer secret-token"}
    fenced = requests.delete(
        httpserver.url_for(KEYSTORES), json={"pubkeys": [PUBKEY]}, headers=auth, timeout=5
    )
    assert fenced.status_code == 200
    body = {
        "keystores": ["{}"],
        "passwords": ["p"],
        "slashing_protection": fenced.json()["slashing_protection"],
    }
    imported = requests.post(httpserver.url_for(KEYSTORES), json=body, headers=auth, timeout=5)
    assert imported.json() == {"data": [{"status": "imported"}]}
    httpserver.check_assertions()


def test_handler_failure_surfaces_through_pytest_httpserver(httpserver: HTTPServer) -> None:
    """A spec violation inside the handler becomes a 500 and check_assertions() raises it."""
    httpserver.expect_request(KEYSTORES, method="GET").respond_with_handler(
        handler("GET", KEYSTORES, lambda b: (200, {"data": [{"pubkey": PUBKEY}]}))
    )
    reply = requests.get(
        httpserver.url_for(KEYSTORES), headers={"Authorization": "Bearer t"}, timeout=5
    )
    assert reply.status_code == 500
    with pytest.raises(AssertionError, match="'validating_pubkey' is a required property"):
        httpserver.check_assertions()
