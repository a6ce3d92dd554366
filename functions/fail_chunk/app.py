"""A worker chunk that died (timeout, out of memory, a crash): fail its unfinished calls with the reason.

Invoked by the per-call and sync state machines' Map items when their worker task still fails after its retries,
so that chunk's calls end failed and the rest of the run goes on (the run ends partial, not failed).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import FailChunkConfig
from callsight.dal.recordings import ObjectStore
from callsight.dal.table import Table
from callsight.logic.steps import fail_chunk
from callsight.models import FailChunkTask

CONFIG = FailChunkConfig()
logger = Logger()
table = Table(CONFIG.table_name)
store = ObjectStore(CONFIG.bucket)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    task = FailChunkTask.model_validate(event)
    logger.append_keys(client_id=task.client_id, run_id=task.run_id, chunk=task.chunk_key)
    return fail_chunk(task, task.error, table=table, store=store)
