"""Analysis, task 2 (one Map item): classify and score one chunk of calls with an LLM, a few at a time."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import AnalyzeCallsConfig
from callsight.dal.clients import ClientRepository
from callsight.dal.recordings import ObjectStore
from callsight.dal.table import Table
from callsight.llm import openai_client
from callsight.logic.analyze import AnalysisSettings, Analyzer
from callsight.logic.steps import run_chunk
from callsight.models import ChunkTask

CONFIG = AnalyzeCallsConfig()
logger = Logger()
tracer = Tracer()
table = Table(CONFIG.table_name)
store = ObjectStore(CONFIG.bucket)
settings = AnalysisSettings(model=CONFIG.analysis_model, attempts=CONFIG.analysis_attempts)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    task = ChunkTask.model_validate(event)
    logger.append_keys(client_id=task.client_id, run_id=task.run_id, chunk=task.chunk_key)
    client = openai_client(CONFIG)
    clinic = ClientRepository(table).get(task.client_id).analysis  # the clinic's prompt, rubric, model
    return run_chunk(task, table=table, store=store,
                     concurrency=CONFIG.worker_concurrency,
                     work_for=lambda calls: Analyzer(store=store, client=client, settings=settings,
                                                     clinic_settings=clinic).analyze,
                     remaining_ms=context.get_remaining_time_in_millis,
                     margin_seconds=CONFIG.worker_deadline_margin_seconds)
