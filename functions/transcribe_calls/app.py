"""Transcription, task 2 (one Map item): transcribe one chunk of calls, a few at a time."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import TranscribeCallsConfig
from callsight.dal.clients import ClientRepository
from callsight.dal.recordings import ObjectStore
from callsight.dal.table import Table
from callsight.llm import RetryPolicy, openai_client
from callsight.logic.steps import run_chunk
from callsight.logic.transcribe import Transcriber, TranscriptionSettings, remove_leftover_workdirs
from callsight.models import ChunkTask

CONFIG = TranscribeCallsConfig()
logger = Logger()
tracer = Tracer()
remove_leftover_workdirs()  # what a worker stopped mid-call left in this sandbox's /tmp
table = Table(CONFIG.table_name)
store = ObjectStore(CONFIG.bucket)
settings = TranscriptionSettings(
    model=CONFIG.transcription_model, language=CONFIG.transcription_language, prompt=CONFIG.transcription_prompt,
    response_format=CONFIG.transcription_response_format, max_upload_bytes=CONFIG.max_upload_bytes,
    max_audio_seconds=CONFIG.max_audio_seconds, keywords=CONFIG.transcription_keywords,
    part_concurrency=CONFIG.transcription_part_concurrency, retry=RetryPolicy(attempts=CONFIG.transcription_attempts))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    task = ChunkTask.model_validate(event)
    logger.append_keys(client_id=task.client_id, run_id=task.run_id, chunk=task.chunk_key)
    client = openai_client(CONFIG)
    clinic = ClientRepository(table).get(task.client_id).transcription  # the clinic's model, vocabulary, prompt
    return run_chunk(task, table=table, store=store,
                     concurrency=CONFIG.worker_concurrency, remaining_ms=context.get_remaining_time_in_millis,
                     margin_seconds=CONFIG.worker_deadline_margin_seconds,
                     work_for=lambda calls: Transcriber(calls=calls, store=store, client=client, settings=settings,
                                                        clinic_settings=clinic).transcribe)
