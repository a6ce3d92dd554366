"""Per-call step, task 1: put the range's calls that need the step in pending; chunks to S3.

The recommendations process rebuilds its report whole: every analysed call of the range is planned
(as with ``force``), in chunks cut by the estimated tokens of their recommendations (one prompt each). The
transcription's chunks are cut by the calls' audio seconds too (and at CallsPerChunk calls).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import PlanCallsConfig
from callsight.dal.calls import CallRepository
from callsight.dal.recordings import ObjectStore
from callsight.dal.table import Table
from callsight.logic.steps import ELIGIBLE, audio_seconds, plan_calls
from callsight.models import RunTask
from callsight.processes import Process
from callsight.report import recommendation_tokens

CONFIG = PlanCallsConfig()
logger = Logger()
tracer = Tracer()
table = Table(CONFIG.table_name)
store = ObjectStore(CONFIG.bucket)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = RunTask.model_validate(event)
    logger.append_keys(client_id=task.client_id, run_id=task.run_id, step=task.process.value)
    report = task.process == Process.RECOMMENDATIONS
    weighed = {Process.RECOMMENDATIONS: (recommendation_tokens, CONFIG.report_chunk_tokens, None),
               Process.TRANSCRIBE: (audio_seconds, CONFIG.transcribe_chunk_audio_seconds, CONFIG.calls_per_chunk)}
    weigh, budget, weighed_chunk_size = weighed.get(task.process, (None, 0, None))
    return plan_calls(CallRepository(table, task.client_id), store, process=task.process.value, days=task.range,
                      run_id=task.run_id, force=task.force or report, eligible=ELIGIBLE[task.process.value],
                      chunk_size=CONFIG.calls_per_chunk, weigh=weigh, budget=budget,
                      weighed_chunk_size=weighed_chunk_size)
