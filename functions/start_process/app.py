"""POST /api/...: start a process for a clinic and a date range (202, or 200 when sync ends quickly)."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import urlencode

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import StartProcessConfig
from callsight.dal.table import Table
from callsight.http import as_json_request, error, rest_api, too_large
from callsight.logic.runs import RunStarter, console_url
from callsight.models import StartRequest, StartResponse
from callsight.processes import Process

CONFIG = StartProcessConfig()
logger = Logger()
tracer = Tracer()
app = rest_api(CONFIG.allowed_origin)
sfn = boto3.client("stepfunctions")
starter = RunStarter(Table(CONFIG.table_name), sfn, lock_grace_seconds=CONFIG.lock_grace_seconds)

STATUS_PATHS = {
    Process.SYNC: "/api/calls-parallel-bulk/sync-by-date-range-status",
    Process.TRANSCRIBE: "/api/calls/transcribe-by-date-range-status",
    Process.ANALYZE: "/api/analyze-by-date-range-status",
}


@app.post("/api/calls-parallel-bulk/sync-by-date-range")
def start_sync(request: Annotated[StartRequest, Body()]) -> Response[Any]:
    return _start(Process.SYNC, CONFIG.sync_state_machine_arn, request, wait=CONFIG.sync_wait_seconds)


@app.post("/api/calls/transcribe-by-date-range")
def start_transcription(request: Annotated[StartRequest, Body()]) -> Response[Any]:
    return _start(Process.TRANSCRIBE, CONFIG.transcribe_state_machine_arn, request, wait=0)


@app.post("/api/analyze-by-date-range")
def start_analysis(request: Annotated[StartRequest, Body()]) -> Response[Any]:
    return _start(Process.ANALYZE, CONFIG.analyze_state_machine_arn, request, wait=0)


def _start(process: Process, state_machine_arn: str, request: StartRequest, *, wait: float) -> Response[Any]:
    run = starter.start(client_id=request.client_id, process=process.value, days=request.range,
                        state_machine_arn=state_machine_arn, force=request.force)
    logger.info("run started", extra={"pipeline_process": process.value, "execution": run.execution_name})
    query = urlencode({"client_id": request.client_id, "start_date": request.start_date.isoformat(),
                       "end_date": request.end_date.isoformat()})
    answer = StartResponse(
        status="accepted", message=f"{process.label} started; poll the status URL every 5 s",
        client_id=request.client_id, process=process.value, start_date=request.start_date.isoformat(),
        end_date=request.end_date.isoformat(), execution_name=run.execution_name,
        status_url=f"{STATUS_PATHS[process]}?{query}", console_url=console_url(run.execution_arn),
    )
    described = starter.wait_for_end(run.execution_arn, wait) if wait > 0 else None
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
