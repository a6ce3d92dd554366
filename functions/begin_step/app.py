"""Pipeline task: record the process run a pipeline step starts and name its execution."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import BeginStepConfig
from callsight.dal.table import Table
from callsight.logic.pipeline import begin_step
from callsight.models import BeginStepTask

CONFIG = BeginStepConfig()
logger = Logger()
table = Table(CONFIG.table_name)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = BeginStepTask.model_validate(event)
    logger.append_keys(client_id=task.client_id, run_id=task.pipeline_run_id, step=task.process.value)
    step = begin_step(table, client_id=task.client_id, process=task.process, days=task.range, force=task.force,
                      pipeline_run_id=task.pipeline_run_id, pipeline_execution_arn=task.pipeline_execution_arn,
                      state_machine_arn=task.state_machine_arn)
    logger.info("pipeline step begins", extra={"execution": step["execution_name"]})
    return step
