"""POST /api/...: start a process for a clinic and a date range (202, or 200 when a sync ends quickly).

One route per process of ``callsight.processes.PROCESSES``; a process's state machine comes from the
template (``CALLSIGHT_STATE_MACHINE_ARNS``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import StartProcessConfig
from callsight.dal.table import Table
from callsight.http import as_json_request, error, error_responses, require_key_for, rest_api, too_large
from callsight.logic.runs import RunStarter, console_url
from callsight.logic.start_guard import StartLimits
from callsight.models import StartRequest, StartResponse, range_query
from callsight.processes import PROCESSES, ProcessSpec

CONFIG = StartProcessConfig()
logger = Logger()
tracer = Tracer()
app = rest_api(CONFIG.allowed_origin)
sfn = boto3.client("stepfunctions")
starter = RunStarter(Table(CONFIG.table_name), sfn, lock_grace_seconds=CONFIG.lock_grace_seconds,
                     limits=StartLimits(CONFIG.starts_per_hour, CONFIG.force_confirm_calls))


def _route(spec: ProcessSpec) -> Callable[[StartRequest], Response[Any]]:
    def start(request: Annotated[StartRequest, Body()]) -> Response[Any]:
        return _start(spec, request)

    start.__name__ = f"start_{spec.process.value}"
    return start


def _responses(spec: ProcessSpec) -> dict[int, Any]:
    """The start route's answers for the OpenAPI description (API Gateway's own are added by infra/openapi.py)."""
    answer = {"application/json": {"model": StartResponse}}
    accepted = {202: {"description": "Started: poll `status_url`", "content": answer}}
    if spec.wait_seconds <= 0:
        return {**accepted, **error_responses(400, 401, 403, 404, 409, 413, 429, 503)}
    ended = {200: {"description": f"The run ended within {spec.wait_seconds:g} s: its summary", "content": answer}}
    return {**ended, **accepted, **error_responses(400, 401, 403, 404, 409, 413, 429, 502, 503)}


for _spec in PROCESSES.values():
    _waits = f"200 with the summary if it ends within {_spec.wait_seconds:g} s, else " if _spec.wait_seconds else ""
    app.post(_spec.start_path, operation_id=f"start{_spec.process.value.title()}", tags=["start"],
             summary=f"Start the {_spec.label} for a clinic and a range",
             description=f"Answers {_waits}202 with the execution's name and its status URL.",
             responses=_responses(_spec))(_route(_spec))


def _start(spec: ProcessSpec, request: StartRequest) -> Response[Any]:
    process = spec.process
    require_key_for(app, request.client_id)  # 403 for another clinic's key (before 404: no probing)
    run = starter.start(client_id=request.client_id, process=process.value, days=request.range,
                        state_machine_arn=CONFIG.state_machine_arns[process], force=request.force,
                        confirm_calls=request.confirm_calls)
    logger.info("run started", extra={"pipeline_process": process.value, "execution": run.execution_name})
    query = range_query(request.client_id, request.range)
    answer = StartResponse(
        status="accepted", message=f"{process.label} started; poll the status URL every 5 s",
        client_id=request.client_id, process=process.value, start_date=request.start_date.isoformat(),
        end_date=request.end_date.isoformat(), execution_name=run.execution_name,
        status_url=f"{spec.status_path}?{query}", console_url=console_url(run.execution_arn),
    )
    described = starter.wait_for_end(run.execution_arn, spec.wait_seconds) if spec.wait_seconds > 0 else None
    if described is None:
        return _json(202, answer)
    if described["status"] != "SUCCEEDED":
        run_record = starter.runs.get(request.client_id, process.value, request.range) or {}
        reason = run_record.get("error") or f"the execution ended {described['status']}"
        return error(502, "run_failed", f"the {process.label} failed: {reason}",
                     [{"field": "execution", "problem": f"{run.execution_name} ended {described['status']}"}])
    summary = json.loads(described.get("output") or "{}")
    status = "partial" if summary.get("status_breakdown", {}).get("failed") else "completed"
    return _json(200, answer.model_copy(update={"status": status, "message": f"{process.label} finished",
                                                "summary": summary}))


def _json(status: int, body: StartResponse) -> Response[Any]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON,
                    body=body.model_dump_json(exclude_none=True))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if len(event.get("body") or "") > CONFIG.max_body_bytes:
        return too_large(CONFIG.max_body_bytes)
    return app.resolve(as_json_request(event), context)
