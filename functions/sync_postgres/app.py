"""Process 5 (the recommendations run's last task): the range's results upserted into PostgreSQL for BI."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import SyncPostgresConfig
from callsight.dal.recordings import ObjectStore
from callsight.dal.runs import RunRepository
from callsight.dal.table import Table
from callsight.logic.bi_sync import database_url_from_secret, sync_run_to_postgres
from callsight.models import RunTask

CONFIG = SyncPostgresConfig()
logger = Logger()
tracer = Tracer()
table = Table(CONFIG.table_name)
store = ObjectStore(CONFIG.bucket)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = RunTask.model_validate(event)
    logger.append_keys(client_id=task.client_id, run_id=task.run_id)
    return sync_run_to_postgres(table=table, store=store, runs=RunRepository(table), task=task,
                                database_url=database_url_from_secret(CONFIG.database_url_secret),
                                batch_size=CONFIG.postgres_batch_size)
