"""The whole pipeline with recognisable fake secrets: none may appear in a log line, an HTTP answer or a stored item.

The secrets: the clinic's amoCRM token (registered for a fresh clinic; the stub amoCRM accepts it), the OpenAI key
and the database password (the package platform's, tests/api/conftest.py: the stub OpenAI accepts that key only,
the embedded PostgreSQL's socket ignores the password), the platform's API key, a wrong one (a 401) and a key of
another clinic (a 403). Every container logs at DEBUG for the run (``environment_set``), its stdout and stderr captured
(``capfd``: the containers started in the block write to it), the platform's own logging too (``caplog``).

The scan is shown able to fail: each channel holds this run's clinic id (the corpus is this run's, not empty), and
the same scan finds each stored secret in its own store (Secrets Manager; an API key's hash in DynamoDB).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from callsight.access import API_KEY_HEADER, api_key_hash
from callsight.dal.api_keys import ApiKeyRepository
from callsight.dal.table import Table
from callsight.logic.api_keys import ApiKeyIssuer
from callsight.processes import REPORT_PATH
from infra.platform import LocalPlatform
from tests.api.conftest import DATABASE_PASSWORD, OPENAI_KEY, PIPELINE, PIPELINE_STATUS, wait_finished

AMOCRM_TOKEN = f"amo-SECRET-token-{secrets.token_hex(12)}"

#: a channel's name and one text of it (a log line, an answer, an item)
Corpus = list[tuple[str, bytes]]


def _other_clinic_key(platform: LocalPlatform) -> str:
    """A key of another clinic, issued as callsight-admin does."""
    issuer = ApiKeyIssuer(ApiKeyRepository(Table(platform.table_name)), platform.boto3_client("apigateway"),
                          str(platform.usage_plan_id))
    key, _ = issuer.issue("secrets-test-other-clinic", ["secrets-test-other-clinic"], now=datetime.now(UTC))
    return key


def _found(corpus: Corpus, needle: str) -> list[str]:
    """The channels whose texts hold ``needle``."""
    wanted = needle.encode()
    return sorted({channel for channel, text in corpus if wanted in text})


def _leaks(corpus: Corpus, named: dict[str, str]) -> list[str]:
    return [f"{name} in {channel}" for name, value in named.items() for channel in _found(corpus, value)]


def _text(value: Any) -> bytes:
    return json.dumps(value, default=str, ensure_ascii=False).encode()


def _dynamodb_items(platform: LocalPlatform) -> Iterator[tuple[str, bytes]]:
    pages = platform.boto3_client("dynamodb").get_paginator("scan").paginate(TableName=platform.table_name)
    for page in pages:
        for item in page["Items"]:
            yield f"dynamodb {item['pk'].get('S')}", _text(item)


def _s3_objects(platform: LocalPlatform) -> Iterator[tuple[str, bytes]]:
    s3 = platform.boto3_client("s3")
    for bucket in s3.list_buckets()["Buckets"]:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
            for listed in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket["Name"], Key=listed["Key"])["Body"].read()
                yield f"s3 {listed['Key']}", listed["Key"].encode() + b"\n" + body


def _postgres_rows(platform: LocalPlatform) -> Iterator[tuple[str, bytes]]:
    assert platform.database_url
    with psycopg.connect(platform.database_url) as connection:
        tables = [row[0] for row in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "AND table_type = 'BASE TABLE'")]
        for table in tables:
            for (row,) in connection.execute(f'SELECT t::text FROM "{table}" t'):  # the catalogue's names
                yield f"postgres {table}", row.encode()


def _executions(platform: LocalPlatform, arns: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """Every state's input and output of the run's executions (Step Functions keeps them, as CloudWatch would)."""
    sfn = platform.boto3_client("stepfunctions")
    for arn in arns:
        yield f"stepfunctions {arn}", _text(sfn.describe_execution(executionArn=arn))
        for page in sfn.get_paginator("get_execution_history").paginate(executionArn=arn):
            yield f"stepfunctions history {arn}", _text(page["events"])


def _secrets_store(platform: LocalPlatform) -> Corpus:
    manager = platform.boto3_client("secretsmanager")
    names = [s["Name"] for page in manager.get_paginator("list_secrets").paginate() for s in page["SecretList"]]
    return [(f"secretsmanager {name}", manager.get_secret_value(SecretId=name).get("SecretString", "").encode())
            for name in names]


def test_no_secret_reaches_a_log_line_an_answer_or_a_stored_item(
        platform: LocalPlatform, new_client: Any, month: dict[str, str], capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    platform.amocrm.configure(latency_ms=0, fault_rate=0, broken_link_rate=0)
    platform.openai.configure(latency_ms=0, fault_rate=0)
    platform.amocrm.accept_token(AMOCRM_TOKEN)
    named = {"the amoCRM token": AMOCRM_TOKEN, "the OpenAI key": OPENAI_KEY, "the database password": DATABASE_PASSWORD,
             "the API key": platform.api_key, "the other clinic's API key": _other_clinic_key(platform),
             "a wrong API key": platform.api_key[:-4] + ("BBBB" if platform.api_key.endswith("AAAA") else "AAAA")}
    answers: Corpus = []

    def keep(response: httpx.Response) -> None:
        response.read()
        head = f"{response.status_code} {response.headers}\n".encode()
        answers.append((f"answer {response.request.method} {response.request.url.path}", head + response.content))

    caplog.set_level(logging.INFO)
    for name in ("infra", "callsight"):
        caplog.set_level(logging.DEBUG, logger=name)
    assert platform.dispatcher is not None
    with platform.dispatcher.environment_set({"POWERTOOLS_LOG_LEVEL": "DEBUG"}), \
            httpx.Client(base_url=platform.api_url, timeout=60, event_hooks={"response": [keep]},
                         headers=platform.api_headers) as api:
        client_id = new_client(token=AMOCRM_TOKEN)
        query = {"client_id": client_id, **month}
        started = api.post(PIPELINE, json=query)
        assert started.status_code == 202, started.text
        final = wait_finished(api, client_id, month, status_path=PIPELINE_STATUS, timeout=300)
        assert final["overall_status"] == "completed", final
        assert api.get(REPORT_PATH, params=query).status_code == 200
        markdown = api.get(REPORT_PATH, params={**query, "format": "md"})
        assert markdown.status_code == 200 and "Частые проблемы" in markdown.text
        for process_path in ("/api/calls-parallel-bulk/sync-by-date-range-status", "/api/analyze-by-date-range-status"):
            assert api.get(process_path, params=query).status_code == 200
        assert api.get("/api/nothing-here").status_code in (403, 404)
        for presented, status in (("", 401), (named["a wrong API key"], 401),
                                  (named["the other clinic's API key"], 403)):
            refused = api.get(PIPELINE_STATUS, params=query, headers={API_KEY_HEADER: presented})
            assert refused.status_code == status, refused.text
    captured = capfd.readouterr()
    containers: Corpus = [("container output", line.encode()) for line in (captured.out + captured.err).splitlines()]
    platform_logs: Corpus = [("log", line.encode()) for line in caplog.text.splitlines()]
    steps = [platform.execution_arn(p, s["execution_name"]) for p, s in final["steps"].items()]
    stored: Corpus = [*_dynamodb_items(platform), *_s3_objects(platform), *_postgres_rows(platform),
                      *_executions(platform, [platform.execution_arn("pipeline", final["execution_name"]), *steps])]
    corpus = containers + platform_logs + answers + stored

    leaks = _leaks(corpus, named)
    assert not leaks, leaks
    # the corpus is this run's: each channel holds the clinic's id, and it is not small
    holding = {channel.split(" ")[0] for channel in _found(corpus, client_id)}
    assert holding >= {"container", "log", "answer", "dynamodb", "s3", "postgres", "stepfunctions"}, holding
    assert len(containers) >= 20 and len(answers) >= 8 and len(stored) > 500, (len(containers), len(answers))
    # ... and the scan finds a secret where it is: in its own store (an API key: only its hash, in DynamoDB)
    store = _secrets_store(platform)
    for name in ("the amoCRM token", "the OpenAI key", "the database password"):
        assert _found(store, named[name]), name
    assert _found(stored, api_key_hash(platform.api_key)) == ["dynamodb APIKEYS"]

