"""Transcription, task 2 (one Map item): transcribe one chunk of calls, a few at a time."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import TranscribeCallsConfig
from callsight.dal.recordings import ObjectStore
from callsight.dal.table import Table
from callsight.llm import openai_client
from callsight.logic.steps import run_chunk
from callsight.logic.transcribe import Transcriber, TranscriptionSettings
from callsight.models import ChunkTask

CONFIG = TranscribeCallsConfig()
logger = Logger()
tracer = Tracer()
table = Table(CONFIG.table_name)
store = ObjectStore(CONFIG.bucket)
settings = TranscriptionSettings(
    model=CONFIG.transcription_model, language=CONFIG.transcription_language, prompt=CONFIG.transcription_prompt,
    response_format=CONFIG.transcription_response_format, max_upload_bytes=CONFIG.max_upload_bytes,
    max_audio_seconds=CONFIG.max_audio_seconds)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    task = ChunkTask.model_validate(event)
    logger.append_keys(client_id=task.client_id, run_id=task.run_id, chunk=task.chunk_key)
    client = openai_client(CONFIG)
    return run_chunk(task, table=table, store=store,
                     concurrency=CONFIG.worker_concurrency,
                     work_for=lambda calls: Transcriber(calls=calls, store=store, client=client,
                                                        settings=settings).transcribe)
