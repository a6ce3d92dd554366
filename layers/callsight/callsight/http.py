"""What the API handlers share: error answers that name the field and the problem, never a 500."""

from __future__ import annotations

import base64
import json
from functools import cache
from typing import Annotated, Any, Final

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from pydantic import ValidationError

from callsight.access import (
    API_KEY_HEADER,
    CLIENT_DENIED_PROBLEM,
    NOT_AUTHENTICATED_MESSAGE,
    NOT_AUTHENTICATED_PROBLEM,
    require_client_access,
)
from callsight.errors import (
    ClientAccessDenied,
    ClientNotFound,
    ConfirmationRequired,
    NotAuthenticated,
    ProcessAlreadyRunning,
    TooManyStarts,
)
from callsight.models import DATE_ALIASES, ErrorResponse, RangeRequest, ReportFormat, ReportQuery

logger = Logger(child=True)

#: the validation error of a body nested too deeply for the JSON parser
JSON_TOO_DEEP = "json_too_deep"


def error(status: int, code: str, message: str, errors: list[dict[str, str]] | None = None, *,
          headers: dict[str, str] | None = None) -> Response[Any]:
    body = ErrorResponse(error=code, message=message, errors=errors or [])
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body.model_dump_json(),
                    headers=headers)


def require_key_for(app: APIGatewayRestResolver, client_id: str) -> None:
    """The request's API key (its authorizer context) must allow ``client_id``: 401 without one, 403 for another
    clinic. The authorizer checks the key; this checks the clinic (its answer is cached per key, not per clinic)."""
    context = (app.current_event.raw_event.get("requestContext") or {}).get("authorizer")
    require_client_access(context, client_id)


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
    # Retry-After is not a CORS-safelisted header: without exposing it the frontend's script cannot read it
    cors = CORSConfig(allow_origin=allowed_origin, expose_headers=["Retry-After"], max_age=600)
    app = APIGatewayRestResolver(enable_validation=True, cors=cors, json_body_deserializer=parse_json_body)
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

    @app.exception_handler(NotAuthenticated)
    def _unauthenticated(exc: NotAuthenticated) -> Response[Any]:
        return error(401, "unauthorized", NOT_AUTHENTICATED_MESSAGE,
                     [{"field": API_KEY_HEADER, "problem": NOT_AUTHENTICATED_PROBLEM}])

    @app.exception_handler(ClientAccessDenied)
    def _forbidden(exc: ClientAccessDenied) -> Response[Any]:
        return error(403, "forbidden", str(exc), [{"field": "client_id", "problem": CLIENT_DENIED_PROBLEM}])

    @app.exception_handler(ProcessAlreadyRunning)
    def _busy(exc: ProcessAlreadyRunning) -> Response[Any]:
        return error(409, "process_running", str(exc), [{"field": "client_id", "problem": f"{exc.process} is running"}])

    @app.exception_handler(ConfirmationRequired)
    def _unconfirmed(exc: ConfirmationRequired) -> Response[Any]:
        given = "missing" if exc.confirmed is None else f"{exc.confirmed} is fewer than the {exc.calls} calls"
        return error(409, "confirmation_required", str(exc),
                     [{"field": "confirm_calls", "problem": f"{given}: force re-runs {exc.calls} calls"}])

    @app.exception_handler(TooManyStarts)
    def _too_many_starts(exc: TooManyStarts) -> Response[Any]:
        return error(429, "too_many_starts", str(exc),
                     [{"field": "client_id", "problem": f"{exc.limit} starts per hour reached; the next start is "
                                                        f"allowed at {exc.retry_at}"}],
                     headers={"Retry-After": str(exc.retry_after)})

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


# ------------------------------------------------------------------------------- the OpenAPI description
#: every error status of the API, and when it is answered: routes list theirs (``error_responses``); infra/openapi.py
#: adds API Gateway's own (401, 403, 429, 500, 502, 504) to every route the authorizer guards
ERROR_STATUSES: Final[dict[int, str]] = {
    400: "Bad input (`invalid_request`): `errors` names each field and its problem.",
    401: "No API key in the `x-api-key` header, or an unknown or revoked one (`unauthorized`).",
    403: "The API key may not use this clinic (`forbidden`).",
    404: "Unknown clinic (`client_not_found`), or no report for the range yet (`report_not_found`).",
    409: "Another process of the clinic is running (`process_running`, the message names it), or `force` re-runs more "
         "calls than the confirmation threshold without `confirm_calls` (`confirmation_required`).",
    413: "The request body is over the size the message names (`body_too_large`).",
    429: "Too many requests for this API key (API Gateway's usage plan), or too many starts of the clinic this hour "
         "(`too_many_starts`, with `Retry-After`).",
    500: "API Gateway: the authorizer failed.",
    502: "The sync's run failed before the answer (`run_failed`), or API Gateway got no valid answer from the "
         "function.",
    503: "A fault of ours (`temporarily_unavailable`): try again in a minute.",
    504: "API Gateway: the function did not answer within its 29 s.",
}


def error_responses(*statuses: int) -> dict[int, OpenAPIResponse]:
    """A route's ``responses=`` entries for its error statuses, each with ERROR_STATUSES' text and ErrorResponse."""
    return {status: {"description": ERROR_STATUSES[status], "content": {"application/json": {"model": ErrorResponse}}}
            for status in statuses}


@cache
def _properties(model: type[RangeRequest]) -> dict[str, Any]:
    """The model's JSON schema properties, built once per model (six query declarations read them at cold start)."""
    properties: dict[str, Any] = model.model_json_schema()["properties"]
    return properties


def _query(model: type[RangeRequest], name: str, note: str = "") -> Query:
    """A query parameter documented as ``model`` validates it (pattern, format); the handler validates the query
    with ``model`` itself, so what it accepts is the model's rule, not this declaration's."""
    schema = dict(_properties(model)[name])
    description = f"{schema.pop('description', '')}{note}"
    return Query(description=description, json_schema_extra={k: v for k, v in schema.items() if k != "title"})


_START, _END = DATE_ALIASES["start_date"], DATE_ALIASES["end_date"]
#: the query of the status and report routes, as RangeRequest / ReportQuery read it (either spelling of a date)
ClientIdQuery = Annotated[str, _query(RangeRequest, "client_id")]
StartDateQuery = Annotated[str | None, _query(RangeRequest, "start_date", f" Required, or `{_START}`.")]
EndDateQuery = Annotated[str | None, _query(RangeRequest, "end_date", f" Required, or `{_END}`.")]
StartDateAliasQuery = Annotated[str | None, _query(RangeRequest, _START)]
EndDateAliasQuery = Annotated[str | None, _query(RangeRequest, _END)]
FormatQuery = Annotated[ReportFormat, _query(ReportQuery, "format")]
