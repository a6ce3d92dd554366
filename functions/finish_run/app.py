"""Record how a run ended and release the clinic's lock.

Invoked by the state machine's last state (success or failure path) and by the EventBridge rule on
Step Functions status changes (aborted, timed out), so no run stays locked or half-finished.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import FinishRunConfig
from callsight.dal.table import Table
from callsight.dates import DateRange
from callsight.logic.pipeline import end_failed_pipeline
from callsight.logic.runs import describe_error, finish_run
from callsight.models import parse_day
from callsight.processes import Process

CONFIG = FinishRunConfig()
logger = Logger()
table = Table(CONFIG.table_name)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    error: str | None = None
    if event.get("detail-type") == "Step Functions Execution Status Change":
        detail = EventBridgeEvent(event).detail
        run = json.loads(detail.get("input") or "{}")
        run_id, outcome = detail["name"], detail["status"]
        error = describe_error({"Error": detail.get("error") or outcome, "Cause": detail.get("cause")})
    else:
        run, run_id, outcome = event, event["run_id"], event["outcome"]
        error = describe_error(event["error"]) if event.get("error") else None
    days = DateRange(parse_day(run["start_date"], "start_date"), parse_day(run["end_date"], "end_date"))
    logger.append_keys(client_id=run["client_id"], run_id=run_id, outcome=outcome)
    if run["process"] == Process.PIPELINE and outcome != "SUCCEEDED":  # the failed step's own words
        error = end_failed_pipeline(table, client_id=run["client_id"], days=days, run_id=run_id, outcome=outcome,
                                    fallback=error)
    summary = finish_run(table, client_id=run["client_id"], process=run["process"], days=days, run_id=run_id,
                         outcome=outcome, error=error)
    logger.info("run finished", extra={"summary": summary})
    return summary
