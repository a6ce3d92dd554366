"""Scheduled (EventBridge, daily): keep every OAuth clinic's amoCRM pair alive (refresh tokens expire unused).

Reports per clinic ``refreshed`` / ``skipped`` / ``failed`` with the reason; one clinic's failure never stops
the others. Any event starts a pass (the schedule's, or a manual invoke with ``{}``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import RefreshTokensConfig
from callsight.dal.clients import AmoCrmCredentialStore, ClientRepository
from callsight.dal.table import Table
from callsight.logic.token_refresh import refresh_stale_pairs

CONFIG = RefreshTokensConfig()
logger = Logger()
tracer = Tracer()
clients = ClientRepository(Table(CONFIG.table_name))
credentials = AmoCrmCredentialStore(CONFIG.amocrm_secret_prefix)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(scheduled_time=event.get("time") if isinstance(event, dict) else None)
    with httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0)) as http:
        report = refresh_stale_pairs(clients=clients, store=credentials, http=http,
                                     refresh_after=timedelta(days=CONFIG.token_refresh_after_days))
    for line in report.clients:
        (logger.error if line.outcome == "failed" else logger.info)("token refresh", extra=line.model_dump())
    logger.info("token refresh done", extra={"refreshed": report.refreshed, "skipped": report.skipped,
                                             "failed": report.failed})
    return report.model_dump()
