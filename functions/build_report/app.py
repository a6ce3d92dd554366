"""Recommendations, reduce step: merge the chunks' themes, count from the data, store the report (JSON, Markdown)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import BuildReportConfig
from callsight.dal.calls import CallRepository
from callsight.dal.clients import ClientRepository
from callsight.dal.recordings import ObjectStore
from callsight.dal.runs import RunRepository
from callsight.dal.table import Table
from callsight.llm import openai_client
from callsight.logic.recommendations import build_range_report
from callsight.models import BuildReportTask
from callsight.report import ThemeWriter

CONFIG = BuildReportConfig()
logger = Logger()
tracer = Tracer()
table = Table(CONFIG.table_name)
store = ObjectStore(CONFIG.bucket)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = BuildReportTask.model_validate(event)
    logger.append_keys(client_id=task.client_id, run_id=task.run_id)
    model = str(ClientRepository(table).get(task.client_id).analysis.get("model") or CONFIG.analysis_model)
    writer = ThemeWriter(openai_client(CONFIG), model=model, attempts=CONFIG.report_attempts,
                         max_prompt_tokens=CONFIG.report_chunk_tokens)
    return build_range_report(calls=CallRepository(table, task.client_id), store=store, runs=RunRepository(table),
                              days=task.range, run_id=task.run_id, chunk_keys=task.chunks, writer=writer, model=model)
