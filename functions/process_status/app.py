"""GET /api/...-status: a process's progress for a clinic and a range (polled every 5 s).

Kept light for a cold start: boto3 and pydantic only. Per request: the clinic, the run (two GetItem)
and one Query of the day counters; the pipeline's status reads that for each of its steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import ProcessStatusConfig
from callsight.dal.clients import ClientRepository
from callsight.dal.table import Table
from callsight.http import rest_api
from callsight.logic.pipeline import pipeline_status
from callsight.logic.runs import build_status
from callsight.models import PipelineStatusResponse, RangeRequest, StatusResponse
from callsight.processes import PIPELINE_STEPS, Process

CONFIG = ProcessStatusConfig()
logger = Logger()
app = rest_api(CONFIG.allowed_origin)
table = Table(CONFIG.table_name)
clients = ClientRepository(table)


def _query() -> RangeRequest:
    query = RangeRequest.model_validate(app.current_event.query_string_parameters or {})
    clients.get(query.client_id)  # 404 for an unknown clinic
    return query


def _route(process: Process) -> Callable[[], StatusResponse]:
    def status() -> StatusResponse:
        query = _query()
        return build_status(table, client_id=query.client_id, process=process.value, days=query.range)

    status.__name__ = f"{process.value}_status"
    return status


for _process in PIPELINE_STEPS:
    app.get(_process.spec.status_path)(_route(_process))


@app.get(Process.PIPELINE.spec.status_path)
def pipeline() -> PipelineStatusResponse:
    query = _query()
    return pipeline_status(table, client_id=query.client_id, days=query.range)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
