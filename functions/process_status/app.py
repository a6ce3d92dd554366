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
from callsight.http import (
    ClientIdQuery,
    EndDateAliasQuery,
    EndDateQuery,
    StartDateAliasQuery,
    StartDateQuery,
    error_responses,
    require_key_for,
    rest_api,
)
from callsight.logic.pipeline import pipeline_status
from callsight.logic.runs import build_status
from callsight.models import PipelineStatusResponse, RangeRequest, StatusResponse
from callsight.processes import PIPELINE_STEPS, Process

CONFIG = ProcessStatusConfig()
logger = Logger()
app = rest_api(CONFIG.allowed_origin)
table = Table(CONFIG.table_name)
clients = ClientRepository(table)


#: the status routes' error answers (the OpenAPI description; API Gateway's own are added by infra/openapi.py)
ERRORS = error_responses(400, 401, 403, 404, 503)


def _query() -> RangeRequest:
    # the query as the routes declare it (client_id, start_date or start_date_str, end_date or end_date_str)
    query = RangeRequest.model_validate(app.current_event.query_string_parameters or {})
    require_key_for(app, query.client_id)  # 403 for another clinic's key (before 404: no probing)
    clients.get(query.client_id)  # 404 for an unknown clinic
    return query


def _route(process: Process) -> Callable[..., StatusResponse]:
    def status(*, client_id: ClientIdQuery, start_date: StartDateQuery = None, end_date: EndDateQuery = None,
               start_date_str: StartDateAliasQuery = None, end_date_str: EndDateAliasQuery = None) -> StatusResponse:
        query = _query()
        return build_status(table, client_id=query.client_id, process=process.value, days=query.range)

    status.__name__ = f"{process.value}_status"
    return status


for _process in PIPELINE_STEPS:
    app.get(_process.spec.status_path, operation_id=f"{_process.value}Status", tags=["status"],
            summary=f"Progress of the {_process.label} for a clinic and a range",
            description="Poll every 5 s until `overall_status` is `completed`, `partial` or `failed`.",
            responses={200: {"description": "The status (`pending` when nothing ran on the range)"}, **ERRORS},
            )(_route(_process))


@app.get(Process.PIPELINE.spec.status_path, operation_id="pipelineStatus", tags=["status"],
         summary="The full pipeline's progress: its own state, the running step and each step's status",
         responses={200: {"description": "The pipeline's status"}, **ERRORS})
def pipeline(*, client_id: ClientIdQuery, start_date: StartDateQuery = None, end_date: EndDateQuery = None,
             start_date_str: StartDateAliasQuery = None, end_date_str: EndDateAliasQuery = None,
             ) -> PipelineStatusResponse:
    query = _query()
    return pipeline_status(table, client_id=query.client_id, days=query.range)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
