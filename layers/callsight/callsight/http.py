"""What the API handlers share: error answers that name the field and the problem, never a 500."""

from __future__ import annotations

import base64
import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from pydantic import ValidationError

from callsight.errors import ClientNotFound, ProcessAlreadyRunning
from callsight.models import ErrorResponse

logger = Logger(child=True)

#: the validation error of a body nested too deeply for the JSON parser
JSON_TOO_DEEP = "json_too_deep"


def error(status: int, code: str, message: str, errors: list[dict[str, str]] | None = None) -> Response[Any]:
    body = ErrorResponse(error=code, message=message, errors=errors or [])
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body.model_dump_json())


def too_large(limit: int) -> dict[str, Any]:
    """A proxy answer for a body over ``limit`` bytes, given before any parsing."""
    body = ErrorResponse(error="body_too_large", message=f"the request body is over {limit} bytes",
                         errors=[{"field": "body", "problem": f"larger than {limit} bytes"}])
    return {"statusCode": 413, "headers": {"Content-Type": content_types.APPLICATION_JSON},
            "body": body.model_dump_json()}


def as_json_request(event: dict[str, Any]) -> dict[str, Any]:
    """The body is read as JSON whatever Content-Type the client sent (curl's default is a form)."""
    headers = {k: v for k, v in (event.get("headers") or {}).items() if k.lower() != "content-type"}
    multi = {k: v for k, v in (event.get("multiValueHeaders") or {}).items() if k.lower() != "content-type"}
    return {**event, "headers": {**headers, "Content-Type": content_types.APPLICATION_JSON},
            "multiValueHeaders": {**multi, "Content-Type": [content_types.APPLICATION_JSON]}}


def parse_json_body(text: str) -> Any:
    """A request body as JSON; one nested too deeply for the parser (``[[[...]]]``) is bad input, not our fault."""
    try:
        return json.loads(text)
    except RecursionError:
        raise RequestValidationError([{"type": JSON_TOO_DEEP, "loc": ("body",),
                                       "msg": "the JSON is nested too deeply"}]) from None


def body_is_undecodable(event: APIGatewayProxyEvent) -> bool:
    """The request's body is base64 (API Gateway's form for bytes that are not text) of bytes that are not UTF-8."""
    if not event.is_base64_encoded or not event.body:
        return False
    try:
        base64.b64decode(event.body).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError both are
        return True
    return False


def _field_errors(raw: Any) -> list[dict[str, str]]:
    problems = []
    for item in raw:
        raw_loc = [str(p) for p in item.get("loc", ())]
        loc = [p for p in raw_loc if p not in ("body", "query")]
        kind = item.get("type", "")
        message = str(item.get("msg") or kind or "invalid").removeprefix("Value error, ")
        not_an_object = kind in ("json_invalid", "model_attributes_type", "model_type", "dict_type")
        if not_an_object or (raw_loc == ["body"] and kind == "missing"):
            field, message = "body", "the body must be a JSON object with client_id, start_date and end_date"
        elif kind == JSON_TOO_DEEP:
            field = "body"
        elif not loc:  # a check across fields: the range itself
            field = "end_date"
        else:
            field = ".".join(loc)
        problems.append({"field": field, "problem": message})
    return problems


def rest_api(allowed_origin: str) -> APIGatewayRestResolver:
    """An API handler's resolver: validated requests, every answer with the frontend's CORS headers
    (the browser reads nothing without them), and the error answers below."""
    app = APIGatewayRestResolver(enable_validation=True, cors=CORSConfig(allow_origin=allowed_origin, max_age=600),
                                 json_body_deserializer=parse_json_body)
    install_error_handlers(app)
    return app


def install_error_handlers(app: APIGatewayRestResolver) -> None:
    """Bad input answers 400 naming each field; domain errors their own 4xx; nothing answers a bare 500."""

    @app.exception_handler([RequestValidationError, ValidationError])
    def _invalid(exc: RequestValidationError | ValidationError) -> Response[Any]:
        problems = _field_errors(exc.errors())
        return error(400, "invalid_request", "; ".join(f"{p['field']}: {p['problem']}" for p in problems), problems)

    @app.exception_handler(ClientNotFound)
    def _unknown_client(exc: ClientNotFound) -> Response[Any]:
        return error(404, "client_not_found", f"{exc}; register it with callsight-admin register-client",
                     [{"field": "client_id", "problem": "unknown client"}])

    @app.exception_handler(ProcessAlreadyRunning)
    def _busy(exc: ProcessAlreadyRunning) -> Response[Any]:
        return error(409, "process_running", str(exc), [{"field": "client_id", "problem": f"{exc.process} is running"}])

    @app.exception_handler(UnicodeDecodeError)
    def _not_text(exc: UnicodeDecodeError) -> Response[Any]:
        if not body_is_undecodable(app.current_event):  # not the request's fault
            return _unavailable()
        return error(400, "invalid_request", "body: the request body is not UTF-8 text",
                     [{"field": "body", "problem": "not UTF-8 text"}])

    @app.not_found
    def _not_found(exc: Exception) -> Response[Any]:
        return error(404, "not_found", "no such endpoint")

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response[Any]:
        return _unavailable()


def _unavailable() -> Response[Any]:
    """503 for a fault of ours (logged with its traceback; the answer says nothing of it)."""
    logger.exception("unexpected error")
    return error(503, "temporarily_unavailable",
                 "the service could not handle the request right now; try again in a minute")
