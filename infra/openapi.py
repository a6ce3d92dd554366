"""The API's OpenAPI description, generated from the handlers' routes and pydantic models (``make openapi``).

Every function of template.yaml with ``Type: Api`` events is imported by its path (its environment from the
template, AWS pointed at a closed local port so an import that called AWS would fail here, never reach it) and
Powertools describes its resolver's routes; the descriptions are merged into one OpenAPI 3.1 document, and what
API Gateway itself does is added from the template: the ``x-api-key`` security scheme on every route the authorizer
guards (``security: []`` on the others) and the gateway's own answers (401, 403, 429, 500, 502, 504) with the
ErrorResponse schema. Powertools' 422 answers are dropped: validation errors answer 400 (callsight.http).
The output is deterministic (sorted keys, two-space indent, a final newline) and committed as
functions/api_docs/openapi.json, which the docs function serves.

    python -m infra.openapi            # write functions/api_docs/openapi.json
    python -m infra.openapi --check    # exit 1 naming what differs from the committed file
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from callsight.access import API_KEY_HEADER
from callsight.http import ERROR_STATUSES
from infra.template import DEFAULT_TEMPLATE, REGION, REPO_ROOT, FunctionSpec, Template

DESCRIPTION_FILE: Final = REPO_ROOT / "functions" / "api_docs" / "openapi.json"
SECURITY_SCHEME: Final = "ApiKey"
#: what API Gateway answers itself on a route its authorizer guards (unauthorized, denied, invalid usage key,
#: throttled, authorizer failure, no valid answer from the function, its 29 s integration timeout)
GATEWAY_STATUSES: Final = (401, 403, 429, 500, 502, 504)
#: ... and on a route without an authorizer (the stage's throttle, the integration's failures)
OPEN_GATEWAY_STATUSES: Final = (429, 502, 504)
#: the meaning of a status a route's handler never answers (ERROR_STATUSES' text also names the handlers' answers)
GATEWAY_ONLY: Final = {
    429: "Too many requests: API Gateway's throttle (the usage plan's, per API key).",
    502: "API Gateway got no valid answer from the function.",
}
#: every 429 carries it: the handlers' too_many_starts and API Gateway's THROTTLED (template.yaml GatewayResponses)
RETRY_AFTER: Final = {"Retry-After": {
    "description": "Seconds to wait before trying again (`too_many_starts`: until the next start is allowed)",
    "schema": {"type": "integer", "minimum": 1}}}
_ERROR_REF: Final = {"$ref": "#/components/schemas/ErrorResponse"}
#: no AWS call may happen while a handler module is imported: any would go to a closed port and fail
_NO_AWS: Final = {
    "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "openapi-generator", "AWS_SECRET_ACCESS_KEY": "openapi-generator",
    "POWERTOOLS_TRACE_DISABLED": "true",
}
TAGS: Final = [
    {"name": "start", "description": "Start a process for a clinic and a date range (one process per clinic at once)"},
    {"name": "status", "description": "A process's progress, polled every 5 s"},
    {"name": "report", "description": "The recommendations report of a range"},
    {"name": "docs", "description": "This description and Swagger UI (no API key)"},
]
DESCRIPTION: Final = (
    f"Every `/api` route but the two docs routes needs an API key in the `{API_KEY_HEADER}` header "
    "(`callsight-admin create-key`); a key is scoped to its clinics. Every error answer is JSON "
    '`{"error", "message", "errors": [{"field", "problem"}]}`, API Gateway\'s own included.'
)


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _resolver(function: FunctionSpec) -> Any:
    """The function's Powertools resolver (``app``), its module imported by path as Lambda would (CodeUri/Handler)."""
    module_name, _, _ = function.handler.rpartition(".")
    path = function.code_dir / f"{module_name}.py"
    spec = importlib.util.spec_from_file_location(f"_openapi_{function.logical_id}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{function.logical_id}: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    with _environment({**function.environment, **_NO_AWS}):
        spec.loader.exec_module(module)
    return module.app


def _version() -> str:
    return str(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"])


def _gateway_response(status: int) -> dict[str, Any]:
    """API Gateway's own answer on a route whose handler does not give that status."""
    description = GATEWAY_ONLY.get(status, ERROR_STATUSES[status])
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


def _merge(document: dict[str, Any], part: dict[str, Any], source: str) -> None:
    for path, item in part.get("paths", {}).items():
        for method, operation in item.items():
            if method in document["paths"].setdefault(path, {}):
                raise SystemExit(f"{source}: {method.upper()} {path} is described twice")
            document["paths"][path][method] = operation
    schemas = document["components"]["schemas"]
    for name, schema in part.get("components", {}).get("schemas", {}).items():
        if schemas.setdefault(name, schema) != schema:
            raise SystemExit(f"{source}: two different models are both named {name}")


def _plain_query_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``str | None`` parameters: a query value is never JSON null, so the description drops that branch."""
    branches = [b for b in schema.get("anyOf", []) if b != {"type": "null"}]
    if "anyOf" not in schema or len(branches) != 1:
        return schema
    plain = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**branches[0], **plain}


def _refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str):
                yield item.rsplit("/", 1)[-1]
            else:
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def _used_schemas(document: dict[str, Any]) -> set[str]:
    schemas = document["components"]["schemas"]
    used: set[str] = set()
    pending = list(_refs(document["paths"]))
    while pending:
        name = pending.pop()
        if name not in used:
            used.add(name)
            pending.extend(_refs(schemas.get(name, {})))
    return used


def generate(template_path: Path = DEFAULT_TEMPLATE) -> dict[str, Any]:
    """The OpenAPI document of the template's API routes, as a JSON-ready dict."""
    template = Template(template_path)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Callsight API", "version": _version(), "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "tags": TAGS,
        "paths": {},
        "components": {"schemas": {}, "securitySchemes": {
            SECURITY_SCHEME: {"type": "apiKey", "in": "header", "name": API_KEY_HEADER,
                              "description": "An API key from `callsight-admin create-key`, scoped to its clinics"}}},
    }
    guarded: dict[tuple[str, str], bool] = {}
    for function in template.functions.values():
        if not function.api_routes:
            continue
        part = json.loads(_resolver(function).get_openapi_json_schema(title="Callsight API", version=_version()))
        _merge(document, part, function.logical_id)
        guarded.update({(route.method.lower(), route.path): route.authorizer is not None
                        for route in function.api_routes})
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if (method, path) not in guarded:
                raise SystemExit(f"{method.upper()} {path} is a route of a handler but not of template.yaml")
            responses = operation["responses"]
            responses.pop("422", None)  # Powertools' validation answer: ours is 400
            secured = guarded[method, path]
            operation["security"] = [{SECURITY_SCHEME: []}] if secured else []
            for status in GATEWAY_STATUSES if secured else OPEN_GATEWAY_STATUSES:
                responses.setdefault(str(status), _gateway_response(status))
            if "429" in responses:
                responses["429"].setdefault("headers", RETRY_AFTER)
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query":
                    parameter["schema"] = _plain_query_schema(parameter["schema"])
    missing = sorted(f"{method.upper()} {path}" for method, path in guarded
                     if method not in document["paths"].get(path, {}))
    if missing:
        raise SystemExit(f"template.yaml routes no handler describes: {', '.join(missing)}")
    used = _used_schemas(document)
    document["components"]["schemas"] = {name: schema for name, schema in document["components"]["schemas"].items()
                                         if name in used}
    return document


def render(document: dict[str, Any]) -> str:
    """The committed file's text: sorted keys, two-space indent, a final newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _differences(old: Any, new: Any, where: str = "") -> Iterator[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys()):
            here = f"{where}/{key}"
            if key not in new:
                yield f"{here}: not generated any more"
            elif key not in old:
                yield f"{here}: new"
            else:
                yield from _differences(old[key], new[key], here)
    elif old != new:
        yield f"{where or '/'}: changed"


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def drift(path: Path = DESCRIPTION_FILE) -> list[str]:
    """What the committed description lacks or has beyond the generated one (JSON pointers); [] when equal."""
    if not path.exists():
        return [f"{_shown(path)}: missing"]
    generated = generate()
    text = path.read_text(encoding="utf-8")
    if text == render(generated):
        return []
    try:
        committed = json.loads(text)
    except ValueError:
        return [f"{_shown(path)}: not JSON"]
    return list(_differences(committed, generated)) or [f"{_shown(path)}: formatted differently"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare with the committed file; exit 1 if stale")
    args = parser.parse_args(argv)
    if args.check:
        problems = drift()
        for problem in problems[:50]:
            print(problem, file=sys.stderr)
        if problems:
            print(f"{_shown(DESCRIPTION_FILE)} is not what the code describes: run `make openapi` "
                  "and commit it", file=sys.stderr)
        return 1 if problems else 0
    if not DESCRIPTION_FILE.exists():  # the docs function reads it at import
        DESCRIPTION_FILE.write_text("{}\n", encoding="utf-8")
    text = render(generate())
    if DESCRIPTION_FILE.read_text(encoding="utf-8") != text:
        DESCRIPTION_FILE.write_text(text, encoding="utf-8")
        print(f"wrote {_shown(DESCRIPTION_FILE)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
