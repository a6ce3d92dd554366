"""``infra.bench_support.DynamoReadMeter``: DynamoDB reads counted on moto's side, whoever sent them."""

from __future__ import annotations

import boto3
import pytest

from infra.bench_support import DynamoReadMeter, item_size
from infra.template import Template

BLOB = "a" * 5000


def _item(sk: str) -> dict[str, dict[str, str]]:
    return {"pk": {"S": "c#1"}, "sk": {"S": sk}, "blob": {"S": BLOB}}


# 'pk' + 'c#1' + 'sk' + one letter + 'blob' + 5,000 letters: just over one 4 KB read unit
ITEM_BYTES = 2 + 3 + 2 + 1 + 4 + 5000


def test_item_size_follows_dynamodbs_rules() -> None:
    assert item_size(_item("x")) == ITEM_BYTES
    # numbers: 1 byte per 2 significant digits + 1; a map or list 3 bytes + 1 per element
    assert item_size({"n": {"N": "-0012300"}, "m": {"M": {"k": {"BOOL": True}}}, "l": {"L": [{"S": "xy"}]}}) == (
        1 + 3) + (1 + 3 + 1 + 1 + 1) + (1 + 3 + 1 + 2)


def test_the_meter_counts_reads_items_bytes_and_capacity_of_every_client(aws: Template) -> None:
    name = aws.tables["CallsightTable"].name
    client = boto3.client("dynamodb")
    with DynamoReadMeter() as meter:
        for sk in ("x", "y"):
            client.put_item(TableName=name, Item=_item(sk))
        client.get_item(TableName=name, Key={"pk": {"S": "c#1"}, "sk": {"S": "x"}})  # eventually consistent
        client.get_item(TableName=name, Key={"pk": {"S": "c#1"}, "sk": {"S": "none"}})  # nothing found: still paid
        client.query(TableName=name, KeyConditionExpression="pk = :pk",
                     ExpressionAttributeValues={":pk": {"S": "c#1"}}, ConsistentRead=True)
        client.batch_get_item(RequestItems={name: {"Keys": [{"pk": {"S": "c#1"}, "sk": {"S": sk}} for sk in "xy"]}})
        cost = meter.take()
        assert meter.take().requests == {}  # take() starts over
    client.get_item(TableName=name, Key={"pk": {"S": "c#1"}, "sk": {"S": "x"}})  # after the block: not counted
    assert cost.requests == {"PutItem": 2, "GetItem": 2, "Query": 1, "BatchGetItem": 1}
    assert cost.items == 5
    assert cost.item_bytes == 5 * ITEM_BYTES
    # GetItem 2 units x 0.5 + a miss 0.5; Query 10,024 B consistent: 3; BatchGetItem 2 items x 2 units x 0.5
    assert cost.capacity_units == pytest.approx(1.0 + 0.5 + 3.0 + 2.0)
    assert meter.take().requests == {}
