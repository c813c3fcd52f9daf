"""Request and response checks built from the Ethereum Keymanager API's own OpenAPI files.

The files in `tests/specs/keymanager-APIs/` (ethereum/keymanager-APIs, CC0 1.0) are loaded with
PyYAML, every `$ref` is resolved across files, and the OpenAPI 3.0 schemas are turned into JSON
Schema Draft 4 (the dialect OpenAPI 3.0 schemas derive from; `nullable: true` becomes a `null`
alternative). Only the `/eth/v1/keystores` and `/eth/v1/remotekeys` operations are covered.

`handler()` builds a pytest-httpserver handler that checks what the client sends and what the
fake answers. A failed check raises `AssertionError`: pytest-httpserver records it, answers 500
and re-raises it from `httpserver.check_assertions()`, which a test calls at its end.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft4Validator
from werkzeug import Request, Response

SPEC_DIR = Path(__file__).resolve().parent / "specs" / "keymanager-APIs"
ROOT_FILE = SPEC_DIR / "keymanager-oapi.yaml"
PATHS = ("/eth/v1/keystores", "/eth/v1/remotekeys")
METHODS = ("GET", "POST", "DELETE")

# Keywords whose value is one schema, a list of schemas, or a map of name -> schema.
_SCHEMA_ONE = ("items", "not", "additionalProperties")
_SCHEMA_LIST = ("allOf", "anyOf", "oneOf")
_SCHEMA_MAP = ("properties",)


@cache
def _load(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def _pointer(doc: Any, fragment: str, ref: str) -> Any:
    node = doc
    for token in fragment.split("/")[1:] if fragment else []:
        key = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            raise AssertionError(f"spec: $ref {ref!r} does not resolve (no {key!r})")
    return node


def _deref(node: Any, base: Path, seen: tuple[str, ...] = ()) -> Any:
    """A deep copy of `node` (found in file `base`) with every `$ref` replaced by its target."""
    if isinstance(node, list):
        return [_deref(item, base, seen) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:  # OpenAPI 3.0: siblings of $ref are ignored
        ref = node["$ref"]
        file_part, _, fragment = ref.partition("#")
        target_file = (base.parent / file_part).resolve() if file_part else base
        key = f"{target_file}#{fragment}"
        if key in seen:
            raise AssertionError(f"spec: circular $ref {ref!r}")
        target = _pointer(_load(target_file), fragment, ref)
        return _deref(target, target_file, (*seen, key))
    return {k: _deref(v, base, seen) for k, v in node.items()}


def to_json_schema(schema: Any) -> Any:
    """An OpenAPI 3.0 schema object as JSON Schema Draft 4 (`nullable` handled)."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "nullable":  # other OpenAPI-only keywords (example, ...) are ignored by Draft 4
            continue
        if key in _SCHEMA_ONE:
            out[key] = to_json_schema(value)
        elif key in _SCHEMA_LIST:
            out[key] = [to_json_schema(s) for s in value]
        elif key in _SCHEMA_MAP:
            out[key] = {name: to_json_schema(s) for name, s in value.items()}
        else:
            out[key] = value
    if schema.get("nullable") is True:
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        for combinator in _SCHEMA_LIST:
            if combinator in out:
                out = {"anyOf": [out, {"type": "null"}]}
                break
    return out


@cache
def _spec() -> dict[str, Any]:
    root = _load(ROOT_FILE.resolve())
    paths = {path: _deref(root["paths"][path], ROOT_FILE.resolve()) for path in PATHS}
    return {"paths": paths}


def operation(method: str, path: str) -> dict[str, Any]:
    """The fully resolved OpenAPI operation object for `method path`."""
    if path not in PATHS:
        raise AssertionError(f"{method} {path}: not one of the covered paths {PATHS}")
    op = _spec()["paths"][path].get(method.lower())
    if op is None:
        raise AssertionError(f"{method} {path}: the spec defines no such operation")
    return copy.deepcopy(op)  # callers may not alter the cached spec


def _json_content_schema(holder: dict[str, Any], what: str) -> Any:
    content = holder.get("content", {})
    if "application/json" not in content:
        raise AssertionError(f"{what}: the spec defines no application/json body")
    return to_json_schema(content["application/json"]["schema"])


def request_schema(method: str, path: str) -> Any | None:
    """The JSON Schema of the request body, or None if the operation takes no body."""
    body = operation(method, path).get("requestBody")
    if body is None:
        return None
    return _json_content_schema(body, f"{method} {path} request")


def response_statuses(method: str, path: str) -> list[int]:
    """The HTTP statuses the spec documents for the operation."""
    return sorted(int(s) for s in operation(method, path)["responses"] if s.isdigit())


def response_schema(method: str, path: str, status: int) -> Any | None:
    """The JSON Schema of the response body for `status`, or None if it has no body."""
    responses = operation(method, path)["responses"]
    response = responses.get(str(status), responses.get("default"))
    if response is None:
        raise AssertionError(
            f"{method} {path}: status {status} is not in the spec "
            f"(documented: {', '.join(map(str, response_statuses(method, path)))})"
        )
    if "content" not in response:
        return None
    return _json_content_schema(response, f"{method} {path} {status} response")


def _check(schema: Any, body: object, what: str) -> None:
    validator = Draft4Validator(schema)
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n".join(f"  at {e.json_path}: {e.message}" for e in errors)
        raise AssertionError(f"{what} does not match the Keymanager API spec:\n{lines}")


def validate_request(method: str, path: str, body: object) -> None:
    """Raise AssertionError unless `body` (None: no body) is a valid request for `method path`."""
    method = method.upper()
    schema = request_schema(method, path)
    what = f"{method} {path} request body"
    if schema is None:
        if body is not None:
            raise AssertionError(f"{what}: the spec defines no body, got {body!r}")
        return
    if body is None:
        raise AssertionError(f"{what}: required by the spec, but there is none")
    _check(schema, body, what)


def validate_response(method: str, path: str, status: int, body: object) -> None:
    """Raise AssertionError unless `body` is a valid `status` response for `method path`."""
    method = method.upper()
    schema = response_schema(method, path, status)
    what = f"{method} {path} {status} response body"
    if schema is None:
        if body is not None:
            raise AssertionError(f"{what}: the spec defines no body, got {body!r}")
        return
    _check(schema, body, what)


def handler(
    method: str,
    path: str,
    respond: Callable[[dict[str, Any]], tuple[int, dict[str, Any]]],
    *,
    quirk: bool = False,
) -> Callable[[Request], Response]:
    """A pytest-httpserver handler for `method path` that checks both directions against the spec.

    It checks the `Authorization: Bearer <token>` header and the JSON request body, calls
    `respond(body)` (`{}` for a request without body) for `(status, response_body)`, checks that
    response against the spec for that status unless `quirk=True` (a test deliberately simulating
    a non-conforming client), and sends it as JSON.
    """
    method = method.upper()
    operation(method, path)  # fail fast on an operation the spec does not have

    def handle(request: Request) -> Response:
        what = f"{method} {path}"
        if request.method != method or request.path != path:
            raise AssertionError(f"{what}: handler got {request.method} {request.path}")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not token.strip():
            shown = f"scheme {scheme!r}" if scheme else "no Authorization header"
            raise AssertionError(f"{what}: expected 'Authorization: Bearer <token>', got {shown}")
        raw = request.get_data()
        body: Any = None
        if raw:
            if request.mimetype != "application/json":
                raise AssertionError(
                    f"{what}: body sent with Content-Type {request.content_type!r}, "
                    "expected application/json"
                )
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise AssertionError(f"{what}: request body is not JSON: {exc}") from None
        validate_request(method, path, body)
        status, out = respond({} if body is None else body)
        if not quirk:
            validate_response(method, path, status, out)
        return Response(json.dumps(out), status=status, mimetype="application/json")

    return handle
