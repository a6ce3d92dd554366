"""Shared fixtures: AWS resources built from template.yaml in moto (in-process, per test)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from callsight.dal import clients as clients_module
from callsight.dal import recordings as recordings_module
from callsight.dal import table as table_module
from callsight.dal.table import Table
from infra.aws import create_resources, install_dynamodb_lock, uninstall_dynamodb_lock
from infra.template import Template

AWS_ENV = {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def clear_client_caches() -> None:
    table_module.dynamodb_resource.cache_clear()
    clients_module._secrets_client.cache_clear()
    recordings_module._s3.cache_clear()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Template]:
    """moto (in-process) holding the template's table, bucket and secrets; yields the template."""
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    clear_client_caches()
    install_dynamodb_lock()  # moto alone is not linearizable: our code runs threads against it
    try:
        with mock_aws():
            template = Template()
            create_resources(template, boto3.client)
            yield template
    finally:
        uninstall_dynamodb_lock()
        clear_client_caches()


@pytest.fixture
def table(aws: Template) -> Table:
    return Table(aws.tables["CallsightTable"].name)


@pytest.fixture
def bucket(aws: Template) -> str:
    return aws.buckets["RecordingsBucket"].name

