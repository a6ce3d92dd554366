"""API Gateway REQUEST authorizer of every /api route: the ``x-api-key`` header against the stored keys' hashes.

A valid key is allowed on the whole API stage (API Gateway caches the answer by the header for ApiKeyCacheSeconds)
with its clinics as the context the handlers check, and its usage plan key for the per-key throttling. Anything
else raises ``Unauthorized``, which API Gateway answers as 401. Runs on every uncached request: one GetItem and one
UpdateItem (the key's last use, best effort); boto3, pydantic and the logger only. The key is never logged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import AuthorizeRequestConfig
from callsight.dal.api_keys import ApiKeyRepository
from callsight.dal.table import Table
from callsight.errors import NotAuthenticated
from callsight.logic.api_keys import AuthorizerRequest, authenticate, authorizer_answer

CONFIG = AuthorizeRequestConfig()
logger = Logger()
keys = ApiKeyRepository(Table(CONFIG.table_name))


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = AuthorizerRequest.model_validate(event)
    now = datetime.now(UTC)
    try:
        scope = authenticate(keys, request.api_key, now=now)
    except NotAuthenticated as refused:
        logger.info("API key refused", extra={"reason": refused.reason, "key_id": refused.key_id})
        raise Exception("Unauthorized") from None  # the exact error API Gateway answers as 401
    keys.touch(scope.key_id, now=now)
    logger.info("API key allowed", extra={"key_id": scope.key_id, "key_name": scope.key_name})
    return authorizer_answer(scope, request)
