"""Sync step 2 (one Map item): download one chunk's recordings to S3 with bounded concurrency."""

from __future__ import annotations

from typing import Any

import httpx
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import DownloadRecordingsConfig
from callsight.dal.calls import CallRepository
from callsight.dal.recordings import ObjectStore
from callsight.dal.table import Table
from callsight.links import LinkFetcher, LinkPolicy, PrivateHosts
from callsight.logic.download import RecordingDownloader
from callsight.models import ChunkTask

CONFIG = DownloadRecordingsConfig()
LINKS = LinkPolicy(PrivateHosts.parse(CONFIG.recording_private_hosts))
logger = Logger()
tracer = Tracer()
table = Table(CONFIG.table_name)
store = ObjectStore(CONFIG.bucket)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    task = ChunkTask.model_validate(event)
    logger.append_keys(client_id=task.client_id, run_id=task.run_id, chunk=task.chunk_key)
    limits = httpx.Limits(max_connections=CONFIG.download_concurrency)
    with httpx.Client(timeout=CONFIG.download_timeout_seconds, limits=limits) as http:
        downloader = RecordingDownloader(client_id=task.client_id, run_id=task.run_id, days=task.range,
                                         calls=CallRepository(table, task.client_id), store=store,
                                         links=LinkFetcher(http, LINKS), concurrency=CONFIG.download_concurrency,
                                         max_bytes=CONFIG.max_recording_bytes,
                                         remaining_ms=context.get_remaining_time_in_millis,
                                         margin_seconds=CONFIG.worker_deadline_margin_seconds)
        result = downloader.run(store.get_json(task.chunk_key))
    logger.info("chunk downloaded", extra=result)
    return result
