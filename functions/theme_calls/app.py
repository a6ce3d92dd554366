"""Recommendations, map step (one Map item): the LLM groups one chunk of calls' recommendations into themes."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import ThemeCallsConfig
from callsight.dal.calls import CallRepository
from callsight.dal.clients import ClientRepository
from callsight.dal.recordings import ObjectStore
from callsight.dal.table import Table
from callsight.llm import openai_client
from callsight.logic.recommendations import ThemeChunkWorker
from callsight.models import ChunkTask
from callsight.report import ThemeWriter

CONFIG = ThemeCallsConfig()
logger = Logger()
tracer = Tracer()
table = Table(CONFIG.table_name)
store = ObjectStore(CONFIG.bucket)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    task = ChunkTask.model_validate(event)
    logger.append_keys(client_id=task.client_id, run_id=task.run_id, chunk=task.chunk_key)
    model = str(ClientRepository(table).get(task.client_id).analysis.get("model") or CONFIG.analysis_model)
    writer = ThemeWriter(openai_client(CONFIG), model=model, attempts=CONFIG.report_attempts,
                         max_prompt_tokens=CONFIG.report_chunk_tokens)
    return ThemeChunkWorker(calls=CallRepository(table, task.client_id), store=store, writer=writer).run(task)
