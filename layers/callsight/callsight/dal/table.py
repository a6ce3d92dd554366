"""The single DynamoDB table: key layout and the few primitives every repository shares.

Item kinds (pk / sk):
- client profile      ``CLIENT#<client>``              / ``PROFILE``
- one-process lock    ``CLIENT#<client>``              / ``LOCK``
- run of a process    ``RUN#<client>#<process>``       / ``<start>#<end>``
- call                ``CALLS#<client>``               / ``<local day>#<call id>``
- status counters     ``COUNTS#<client>#<process>``    / ``<local day>``
- starts in an hour   ``CLIENT#<client>``              / ``STARTS#<UTC hour>`` (callsight.dal.starts)
- clinic registry     ``CLIENTS``                      / ``<client>`` (callsight.dal.clients)
- API key             ``APIKEYS``                      / ``KEY#<key id>`` (callsight.dal.api_keys)
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from functools import cache
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

#: why DynamoDB cancels a transaction when trying again can succeed: another transaction held one of
#: its items (every status change also updates its day's counter item), or a throughput limit
_TRANSIENT_CANCELLATIONS = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded",
                                      "RequestLimitExceeded"})
#: attempts of a transaction cancelled for a transient reason (backoff 25 ms doubling, jittered, capped at 1 s)
TRANSACT_ATTEMPTS = 8

#: the workers' threads share one client per service: room for all of them (botocore's default is 10)
CLIENT_CONFIG = Config(max_pool_connections=32)


@cache
def dynamodb_resource() -> Any:
    return boto3.resource("dynamodb", config=CLIENT_CONFIG)


def client_pk(client_id: str) -> str:
    return f"CLIENT#{client_id}"


def run_pk(client_id: str, process: str) -> str:
    return f"RUN#{client_id}#{process}"


def calls_pk(client_id: str) -> str:
    return f"CALLS#{client_id}"


def call_sk(day: date | str, call_id: str) -> str:
    return f"{day}#{call_id}"


def counts_pk(client_id: str, process: str) -> str:
    return f"COUNTS#{client_id}#{process}"


class ConditionFailed(Exception):
    """A conditional write (or one action of a transaction) found the item in another state; ``actions``: in a
    transaction, the positions of the actions whose condition was false."""

    def __init__(self, message: str, actions: frozenset[int] = frozenset()) -> None:
        super().__init__(message)
        self.actions = actions


def plain(value: Any) -> Any:
    """DynamoDB's Decimals back to int/float, recursively."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@contextmanager
def _condition_failed() -> Iterator[None]:
    """DynamoDB's ConditionalCheckFailedException as ConditionFailed."""
    try:
        yield
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            raise ConditionFailed(str(exc)) from exc
        raise


class Table:
    """A thin wrapper of one table: typed-value calls through the resource's client."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.table = dynamodb_resource().Table(name)
        self.client = dynamodb_resource().meta.client

    def get(self, pk: str, sk: str, *, consistent: bool = True) -> dict[str, Any] | None:
        item = self.table.get_item(Key={"pk": pk, "sk": sk}, ConsistentRead=consistent).get("Item")
        return plain(item) if item else None

    def query(self, pk: str, sk_from: str, sk_to: str, *, consistent: bool = True) -> list[dict[str, Any]]:
        """Every item of ``pk`` whose sk is between the two bounds (inclusive), all pages."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :a AND :b",
            "ExpressionAttributeValues": {":pk": pk, ":a": sk_from, ":b": sk_to},
            "ConsistentRead": consistent,
        }
        while True:
            page = self.table.query(**kwargs)
            items.extend(plain(i) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def put(self, item: dict[str, Any], *, condition: str | None = None, values: dict[str, Any] | None = None,
            names: dict[str, str] | None = None) -> None:
        kwargs: dict[str, Any] = {"Item": item}
        if condition:
            kwargs["ConditionExpression"] = condition
        if values:
            kwargs["ExpressionAttributeValues"] = values
        if names:
            kwargs["ExpressionAttributeNames"] = names
        with _condition_failed():
            self.table.put_item(**kwargs)

    def delete(self, pk: str, sk: str, *, condition: str | None = None, values: dict[str, Any] | None = None) -> None:
        kwargs: dict[str, Any] = {"Key": {"pk": pk, "sk": sk}}
        if condition:
            kwargs["ConditionExpression"] = condition
        if values:
            kwargs["ExpressionAttributeValues"] = values
        with _condition_failed():
            self.table.delete_item(**kwargs)

    def update(self, pk: str, sk: str, expression: str, *, values: dict[str, Any] | None = None,
               names: dict[str, str] | None = None, condition: str | None = None) -> None:
        kwargs: dict[str, Any] = {"Key": {"pk": pk, "sk": sk}, "UpdateExpression": expression}
        if values:
            kwargs["ExpressionAttributeValues"] = values
        if names:
            kwargs["ExpressionAttributeNames"] = names
        if condition:
            kwargs["ConditionExpression"] = condition
        with _condition_failed():
            self.table.update_item(**kwargs)

    def transact(self, actions: list[dict[str, Any]]) -> None:
        """One TransactWriteItems; actions are ``{"Put"|"Update"|...: {...}}`` without TableName.

        ConditionFailed when a condition was false; a transaction cancelled by a conflict with another
        one (or throttled) is tried again, and any other cancellation is raised as it came.
        """
        items = [{kind: {"TableName": self.name, **body}} for a in actions for kind, body in a.items()]
        for attempt in range(TRANSACT_ATTEMPTS):
            try:
                self.client.transact_write_items(TransactItems=items)
                return
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                listed = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
                reasons = set(listed)
                if "ConditionalCheckFailed" in reasons:
                    failed = frozenset(i for i, code in enumerate(listed) if code == "ConditionalCheckFailed")
                    raise ConditionFailed(str(exc), failed) from exc
                if not reasons & _TRANSIENT_CANCELLATIONS or attempt == TRANSACT_ATTEMPTS - 1:
                    raise  # never taken for "the condition is false": the caller would skip the call silently
            time.sleep(random.uniform(0, min(1.0, 0.025 * 2 ** attempt)))

    def batch_get(self, keys: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Items for the keys that exist (any order), 100 keys a request, unprocessed keys retried."""
        found: list[dict[str, Any]] = []
        for i in range(0, len(keys), 100):
            pending: dict[str, Any] = {
                self.name: {"Keys": [{"pk": pk, "sk": sk} for pk, sk in keys[i:i + 100]], "ConsistentRead": True}
            }
            while pending:
                answer = dynamodb_resource().batch_get_item(RequestItems=pending)
                found.extend(plain(item) for item in answer["Responses"].get(self.name, []))
                pending = answer.get("UnprocessedKeys") or {}
        return found
