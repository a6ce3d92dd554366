"""Per-call step, task 1: put the range's calls that need the step in pending; chunks to S3."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import PlanCallsConfig
from callsight.dal.calls import CallRepository
from callsight.dal.recordings import ObjectStore
from callsight.dal.table import Table
from callsight.logic.steps import ELIGIBLE, plan_calls
from callsight.models import StartRequest

CONFIG = PlanCallsConfig()
logger = Logger()
tracer = Tracer()
table = Table(CONFIG.table_name)
store = ObjectStore(CONFIG.bucket)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = StartRequest.model_validate(event)
    process, run_id = event["process"], event["run_id"]
    logger.append_keys(client_id=request.client_id, run_id=run_id, step=process)
    return plan_calls(CallRepository(table, request.client_id), store, process=process, days=request.range,
                      run_id=run_id, force=request.force, eligible=ELIGIBLE[process],
                      chunk_size=CONFIG.calls_per_chunk)
