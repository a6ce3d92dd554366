"""GET /api/...-status: a process's progress for a clinic and a range (polled every 5 s).

Kept light for a cold start: boto3 and pydantic only; per request two GetItem (clinic, run) and one Query.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import ProcessStatusConfig
from callsight.dal.clients import ClientRepository
from callsight.dal.table import Table
from callsight.http import rest_api
from callsight.logic.runs import build_status
from callsight.models import RangeRequest, StatusResponse
from callsight.processes import Process

CONFIG = ProcessStatusConfig()
logger = Logger()
app = rest_api(CONFIG.allowed_origin)
table = Table(CONFIG.table_name)
clients = ClientRepository(table)


def _status(process: Process) -> StatusResponse:
    query = RangeRequest.model_validate(app.current_event.query_string_parameters or {})
    clients.get(query.client_id)  # 404 for an unknown clinic
    return build_status(table, client_id=query.client_id, process=process.value, days=query.range)


@app.get("/api/calls-parallel-bulk/sync-by-date-range-status")
def sync_status() -> StatusResponse:
    return _status(Process.SYNC)


@app.get("/api/calls/transcribe-by-date-range-status")
def transcription_status() -> StatusResponse:
    return _status(Process.TRANSCRIBE)


@app.get("/api/analyze-by-date-range-status")
def analysis_status() -> StatusResponse:
    return _status(Process.ANALYZE)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
