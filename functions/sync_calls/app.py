"""Sync step 1 (state machine task): fetch the range's call notes from amoCRM, store the calls, plan downloads."""

from __future__ import annotations

from typing import Any

import httpx
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.amocrm import AmoCrmClient, StoredToken
from callsight.config import SyncCallsConfig
from callsight.dal.calls import CallRepository
from callsight.dal.clients import AmoCrmCredentialStore, ClientRepository
from callsight.dal.recordings import ObjectStore
from callsight.dal.table import Table
from callsight.logic.sync import SyncSettings, fetch_and_plan
from callsight.models import StartRequest

CONFIG = SyncCallsConfig()
logger = Logger()
tracer = Tracer()
table = Table(CONFIG.table_name)
store = ObjectStore(CONFIG.bucket)
credentials = AmoCrmCredentialStore(CONFIG.amocrm_secret_prefix)
settings = SyncSettings(min_recording_seconds=CONFIG.min_recording_seconds, chunk_size=CONFIG.download_chunk_size)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = StartRequest.model_validate(event)
    logger.append_keys(client_id=request.client_id, run_id=event["run_id"])
    client = ClientRepository(table).get(request.client_id)
    with httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0)) as http:
        tokens = StoredToken(client.client_id, client.base_url, credentials, table, http)
        amocrm = AmoCrmClient(client.base_url, tokens, requests_per_second=CONFIG.amocrm_requests_per_second,
                              page_size=CONFIG.amocrm_page_size, max_pages=CONFIG.amocrm_max_pages_per_entity,
                              http=http)
        return fetch_and_plan(client=client, days=request.range, run_id=event["run_id"], force=request.force,
                              amocrm=amocrm, calls=CallRepository(table, client.client_id), store=store,
                              settings=settings)
