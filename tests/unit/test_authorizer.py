"""The REQUEST authorizer (functions/authorize_request): API Gateway's answer for a valid key, ``Unauthorized`` for
any other, the key's last use recorded, and never the key in a log line."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from callsight.access import ALL_CLINICS, new_api_key, usage_identifier
from callsight.dal.api_keys import ApiKeyRepository
from callsight.dal.table import Table

APP = Path(__file__).resolve().parents[2] / "functions" / "authorize_request" / "app.py"
SAMPLE = json.loads((APP.parents[2] / "events" / "authorize_request.json").read_text(encoding="utf-8"))
NOW = datetime(2026, 11, 28, 11, 5, 1, tzinfo=UTC)


@dataclass
class Context:
    function_name: str = "AuthorizeRequestFunction"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:eu-central-1:123456789012:function:AuthorizeRequestFunction"
    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"


@dataclass
class Authorizer:
    app: ModuleType
    log: io.StringIO

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        return dict(self.app.lambda_handler(event, Context()))

    def lines(self) -> list[dict[str, Any]]:
        """The JSON log lines written since the last call."""
        text, _ = self.log.getvalue(), self.log.seek(0)
        self.log.truncate()
        return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def authorizer(table: Table, monkeypatch: pytest.MonkeyPatch) -> Authorizer:
    """The handler module, imported as Lambda does, against moto's table; its logger (one of its own) writes its
    JSON lines to a buffer."""
    monkeypatch.setenv("CALLSIGHT_TABLE_NAME", table.name)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", f"authorizer-test-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "INFO")
    spec = importlib.util.spec_from_file_location("authorize_request_app", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    log = io.StringIO()
    handler = logging.getLogger(module.logger.service).handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(log)
    return Authorizer(module, log)


def _event(headers: dict[str, str] | None) -> dict[str, Any]:
    return {**SAMPLE, "headers": headers, "multiValueHeaders": {k: [v] for k, v in (headers or {}).items()}}


def test_a_valid_key_is_allowed_on_the_whole_stage_with_its_scope(authorizer: Authorizer, table: Table) -> None:
    repo = ApiKeyRepository(table)
    key, record = repo.create("clinic frontend", ["demo", "clinic-b"], now=NOW)
    for header in ("x-api-key", "X-Api-Key", "X-API-KEY"):  # header names in any case
        answer = authorizer(_event({"Host": "abc123.example", header: key}))
        assert answer == {
            "principalId": record.key_id,
            "policyDocument": {"Version": "2012-10-17", "Statement": [{
                "Action": "execute-api:Invoke", "Effect": "Allow",
                "Resource": "arn:aws:execute-api:eu-central-1:123456789012:abc123/prod/*/*"}]},
            "context": {"key_id": record.key_id, "key_name": "clinic frontend", "client_ids": "clinic-b,demo"},
            "usageIdentifierKey": usage_identifier(record.key_id),
        }
    touched = repo.find(record.key_id)
    assert touched is not None and touched.last_used_at is not None and touched.last_used_at >= record.created_at
    lines = authorizer.lines()
    assert [line["message"] for line in lines] == ["API key allowed"] * 3 and lines[0]["key_id"] == record.key_id
    assert key not in json.dumps(lines)


def test_the_resource_is_the_stage_of_the_method_arn(authorizer: Authorizer, table: Table) -> None:
    key, _ = ApiKeyRepository(table).create("agency", [ALL_CLINICS], now=NOW)
    arn = "arn:aws-cn:execute-api:cn-north-1:210987654321:zz9api/local/POST/api/pipeline/run-by-date-range"
    answer = authorizer({**_event({"x-api-key": key}), "methodArn": arn})
    assert answer["policyDocument"]["Statement"][0]["Resource"] == "arn:aws-cn:execute-api:cn-north-1:210987654321:" \
                                                                   "zz9api/local/*/*"
    assert answer["context"]["client_ids"] == "*"
    colon = "arn:aws:execute-api:eu-central-1:123456789012:abc123/prod/GET/api/a:b/c"  # a colon in the path
    answer = authorizer({**_event({"x-api-key": key}), "methodArn": colon})
    assert answer["policyDocument"]["Statement"][0]["Resource"] == "arn:aws:execute-api:eu-central-1:123456789012:" \
                                                                   "abc123/prod/*/*"


def test_every_other_key_is_unauthorized_and_never_logged(authorizer: Authorizer, table: Table) -> None:
    repo = ApiKeyRepository(table)
    key, record = repo.create("front", ["demo"], now=NOW)
    revoked_key, revoked = repo.create("old", ["demo"], now=NOW)
    repo.revoke(revoked.key_id, now=NOW)
    wrong_secret = key[:-1] + ("A" if key[-1] != "A" else "B")
    presented = {None: "missing", "": "missing", "Bearer " + key: "malformed", new_api_key(): "unknown key_id",
                 wrong_secret: "wrong secret", revoked_key: "revoked"}
    for value, reason in presented.items():
        with pytest.raises(Exception, match=r"^Unauthorized$") as refused:
            authorizer(_event(None if value is None else {"x-api-key": value}))
        assert type(refused.value) is Exception and refused.value.__cause__ is None
        lines = authorizer.lines()
        assert [(line["message"], line["reason"]) for line in lines] == [("API key refused", reason)]
        text = json.dumps(lines)
        assert not value or value not in text
    assert repo.find(record.key_id).last_used_at is None  # type: ignore[union-attr]
    assert repo.find(revoked.key_id).last_used_at is None  # type: ignore[union-attr]


def test_a_failed_last_use_write_does_not_refuse_the_key(authorizer: Authorizer, table: Table,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import ClientError

    key, record = ApiKeyRepository(table).create("front", ["demo"], now=NOW)

    def throttled(*args: Any, **kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                          "UpdateItem")

    monkeypatch.setattr(authorizer.app.keys.table, "update", throttled)
    answer = authorizer(_event({"x-api-key": key}))
    assert answer["principalId"] == record.key_id
