"""Analysis, task 2 (one Map item): classify and score one chunk of calls with an LLM, a few at a time."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import AnalyzeCallsConfig
from callsight.dal.calls import CallRepository
from callsight.dal.clients import ClientRepository
from callsight.dal.recordings import ObjectStore
from callsight.dal.table import Table
from callsight.llm import openai_client
from callsight.logic.analyze import AnalysisSettings, Analyzer
from callsight.logic.steps import ChunkWorker
from callsight.processes import Process

CONFIG = AnalyzeCallsConfig()
logger = Logger()
tracer = Tracer()
table = Table(CONFIG.table_name)
store = ObjectStore(CONFIG.bucket)
settings = AnalysisSettings(model=CONFIG.analysis_model, attempts=CONFIG.analysis_attempts)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    client_id, run_id = event["client_id"], event["run_id"]
    logger.append_keys(client_id=client_id, run_id=run_id, chunk=event["chunk_key"])
    calls = CallRepository(table, client_id)
    client = openai_client(secret_name=CONFIG.openai_api_key_secret, base_url=CONFIG.openai_base_url,
                           timeout=CONFIG.openai_timeout_seconds, max_retries=CONFIG.openai_max_retries)
    analyzer = Analyzer(calls=calls, store=store, client=client, settings=settings,
                        clinic_settings=ClientRepository(table).get(client_id).analysis)
    worker = ChunkWorker(process=Process.ANALYZE.value, run_id=run_id, calls=calls,
                         concurrency=CONFIG.worker_concurrency, work=analyzer.analyze)
    result = worker.run(store.get_json(event["chunk_key"]))
    logger.info("chunk analysed", extra=result)
    return result
