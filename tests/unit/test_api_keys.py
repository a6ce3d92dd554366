"""API keys: stored as hashes, checked by ``authenticate``, issued and revoked in the table and API Gateway (moto),
and ``callsight-admin create-key / list-keys / revoke-key``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from pydantic import ValidationError

from callsight.access import (
    ALL_CLINICS,
    KeyScope,
    new_api_key,
    parse_api_key,
    require_client_access,
    usage_identifier,
)
from callsight.admin import main
from callsight.dal.api_keys import API_KEYS_PK, ApiKeyRepository
from callsight.dal.table import Table
from callsight.errors import ApiKeyNotFound, CallsightError, ClientAccessDenied, NotAuthenticated
from callsight.logic.api_keys import ApiKeyIssuer, authenticate, gateway_key_name

NOW = datetime(2026, 11, 28, 11, 5, 1, tzinfo=UTC)


@pytest.fixture
def repo(table: Table) -> ApiKeyRepository:
    return ApiKeyRepository(table)


@pytest.fixture
def usage_plan(table: Table) -> str:
    return str(boto3.client("apigateway").create_usage_plan(name="callsight-test-usage")["id"])


def _parts(key: str) -> tuple[str, str]:
    parsed = parse_api_key(key)
    assert parsed is not None
    return parsed


def _stored_items(table: Table) -> list[dict[str, Any]]:
    return list(boto3.resource("dynamodb").Table(table.name).scan()["Items"])


# ------------------------------------------------------------------ the key format and the scope
def test_new_keys_are_random_and_parse_into_their_id() -> None:
    keys = {new_api_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        parsed = parse_api_key(key)
        assert parsed is not None and key == f"csk_{parsed[0]}_{parsed[1]}"


@pytest.mark.parametrize("text", [None, "", "csk_", "csk_0123456789ab_short", "CSK_0123456789ab_" + "a" * 43,
                                  "csk_0123456789AB_" + "a" * 43, "csk_0123456789ab_" + "a" * 44,
                                  "csk_0123456789ab_" + "a" * 42 + "=", " csk_0123456789ab_" + "a" * 43,
                                  "csk_0123456789ab_" + "a" * 43 + "\n"])
def test_anything_but_a_well_formed_key_does_not_parse(text: str | None) -> None:
    assert parse_api_key(text) is None


def test_a_scope_travels_through_the_authorizer_context() -> None:
    scope = KeyScope.of("0123456789ab", "front", ["clinic-b", "clinic-a"])
    context = scope.to_context()
    assert context == {"key_id": "0123456789ab", "key_name": "front", "client_ids": "clinic-a,clinic-b"}
    assert KeyScope.from_context({**context, "principalId": "0123456789ab"}) == scope
    assert require_client_access(context, "clinic-a") == scope
    with pytest.raises(ClientAccessDenied) as denied:
        require_client_access(context, "clinic-c")
    assert str(denied.value) == "this API key may not use clinic clinic-c"
    every = KeyScope.of("ba9876543210", "agency", [ALL_CLINICS])
    assert every.client_ids is None and every.to_context()["client_ids"] == "*"
    assert require_client_access(every.to_context(), "any-clinic").allows("another")


@pytest.mark.parametrize("context", [None, {}, {"key_id": "0123456789ab"}, {"client_ids": "a"},
                                     {"key_id": "", "client_ids": "a"}, {"key_id": "0123456789ab", "client_ids": ""}])
def test_no_authorizer_context_is_not_authenticated(context: dict[str, str] | None) -> None:
    with pytest.raises(NotAuthenticated):
        require_client_access(context, "clinic-a")


# ------------------------------------------------------------------ the repository
def test_create_find_list_revoke(repo: ApiKeyRepository, table: Table) -> None:
    key, record = repo.create("clinic A frontend", ["clinic-a"], now=NOW)
    other_key, other = repo.create("agency", [ALL_CLINICS], now=NOW)
    assert _parts(key)[0] == record.key_id
    assert repo.find(record.key_id) == record and record.created_at == "2026-11-28T11:05:01Z"
    assert repo.find("ffffffffffff") is None
    assert {r.key_id for r in repo.list()} == {record.key_id, other.key_id}
    # the stored items hold the hash, never the key
    items = _stored_items(table)
    assert {i["sk"] for i in items if i["pk"] == API_KEYS_PK} == {f"KEY#{record.key_id}", f"KEY#{other.key_id}"}
    dumped = json.dumps(items, default=str)
    assert key not in dumped and other_key not in dumped and _parts(key)[1] not in dumped
    revoked = repo.revoke(record.key_id, now=NOW + timedelta(hours=1))
    assert revoked.revoked and revoked.revoked_at == "2026-11-28T12:05:01Z"
    # revoking again keeps the first time
    assert repo.revoke(record.key_id, now=NOW + timedelta(days=1)).revoked_at == "2026-11-28T12:05:01Z"
    with pytest.raises(ApiKeyNotFound):
        repo.revoke("ffffffffffff", now=NOW)
    assert [r.key_id for r in repo.list() if not r.revoked] == [other.key_id]


def test_a_given_key_is_stored_as_its_hash_and_never_twice(repo: ApiKeyRepository, table: Table) -> None:
    given = new_api_key()
    key, record = repo.create("local-demo", [ALL_CLINICS], now=NOW, key=given)
    assert key == given and _parts(given)[0] == record.key_id
    assert given not in json.dumps(_stored_items(table), default=str)
    with pytest.raises(CallsightError, match="stored already"):
        repo.create("again", ["clinic-a"], now=NOW, key=given)
    assert repo.find(record.key_id) == record  # not overwritten
    with pytest.raises(ValueError, match="not in the format") as bad:
        repo.create("bad", ["clinic-a"], now=NOW, key="not-a-key-but-a-secret")
    assert "not-a-key-but-a-secret" not in str(bad.value)


@pytest.mark.parametrize(("name", "client_ids", "field"), [
    ("", ["clinic-a"], "name"), ("   ", ["clinic-a"], "name"), ("x" * 101, ["clinic-a"], "name"),
    ("tab\tname", ["clinic-a"], "name"), ("ok", [], "client_ids"), ("ok", ["bad id!"], "client_ids"),
    ("ok", ["-starts-with-a-dash"], "client_ids"), ("ok", ["*", "clinic-a"], "client_ids"),
])
def test_bad_names_and_clinics_are_refused(repo: ApiKeyRepository, table: Table, name: str, client_ids: list[str],
                                           field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        repo.create(name, client_ids, now=NOW)
    assert {str(e["loc"][0]) for e in refused.value.errors()} == {field}
    assert repo.list() == []


def test_touch_records_the_last_use_and_never_raises(repo: ApiKeyRepository) -> None:
    _, record = repo.create("front", ["clinic-a"], now=NOW)
    assert repo.touch(record.key_id, now=NOW + timedelta(minutes=5)) is True
    assert repo.find(record.key_id).last_used_at == "2026-11-28T11:10:01Z"  # type: ignore[union-attr]
    assert repo.touch("ffffffffffff", now=NOW) is False  # unknown: no item is made up
    assert repo.find("ffffffffffff") is None


# ------------------------------------------------------------------ authenticate
def test_authenticate_answers_the_keys_scope(repo: ApiKeyRepository) -> None:
    key, record = repo.create("front", ["clinic-a", "clinic-b"], now=NOW)
    scope = authenticate(repo, key, now=NOW)
    assert scope == KeyScope(record.key_id, "front", frozenset({"clinic-a", "clinic-b"}))


def test_authenticate_refuses_every_other_key(repo: ApiKeyRepository) -> None:
    key, record = repo.create("front", ["clinic-a"], now=NOW)
    secret = _parts(key)[1]
    wrong_secret = f"csk_{record.key_id}_{'A' if secret[0] != 'A' else 'B'}{secret[1:]}"
    unknown = new_api_key()
    cases = {None: "missing", "": "missing", "Bearer " + key: "malformed", key[:-1]: "malformed",
             unknown: "unknown key_id", wrong_secret: "wrong secret"}
    for presented, reason in cases.items():
        with pytest.raises(NotAuthenticated) as refused:
            authenticate(repo, presented, now=NOW)
        assert refused.value.reason == reason
        assert secret not in str(refused.value) and (presented or "x") not in str(refused.value)
    repo.revoke(record.key_id, now=NOW)
    with pytest.raises(NotAuthenticated) as revoked:
        authenticate(repo, key, now=NOW)
    assert revoked.value.reason == "revoked" and revoked.value.key_id == record.key_id


# ------------------------------------------------------------------ issuing and revoking with API Gateway
def _plan_key_names(usage_plan: str) -> set[str]:
    items = boto3.client("apigateway").get_usage_plan_keys(usagePlanId=usage_plan)["items"]
    return {item["name"] for item in items}


def _gateway_keys() -> dict[str, dict[str, Any]]:
    items = boto3.client("apigateway").get_api_keys(includeValues=True)["items"]
    return {item["name"]: item for item in items}


def test_the_issuer_creates_the_usage_plan_key_and_revokes_it(repo: ApiKeyRepository, usage_plan: str) -> None:
    issuer = ApiKeyIssuer(repo, boto3.client("apigateway"), usage_plan)
    key, record = issuer.issue("front", ["clinic-a"], now=NOW)
    gateway = _gateway_keys()[gateway_key_name(record.key_id)]
    assert gateway["value"] == usage_identifier(record.key_id) and gateway["enabled"] is True
    assert key not in json.dumps(gateway, default=str)  # API Gateway holds the usage identifier, not the key
    assert _plan_key_names(usage_plan) == {gateway_key_name(record.key_id)}
    assert authenticate(repo, key, now=NOW).key_id == record.key_id
    assert issuer.revoke(record.key_id, now=NOW).revoked
    assert gateway_key_name(record.key_id) not in _gateway_keys()
    assert issuer.revoke(record.key_id, now=NOW).revoked  # again: nothing left to delete, no error
    with pytest.raises(ApiKeyNotFound):
        issuer.revoke("ffffffffffff", now=NOW)


def test_the_issuer_leaves_nothing_half_made(repo: ApiKeyRepository, usage_plan: str) -> None:
    issuer = ApiKeyIssuer(repo, boto3.client("apigateway"), usage_plan)
    with pytest.raises(ValidationError):  # refused before any write
        issuer.issue("", ["clinic-a"], now=NOW)
    assert _gateway_keys() == {} and repo.list() == []
    key, record = repo.create("stored before", ["clinic-a"], now=NOW)
    with pytest.raises(CallsightError, match="stored already"):  # the table refuses it: the API Gateway key goes too
        issuer.issue("again", ["clinic-b"], now=NOW, key=key)
    assert _gateway_keys() == {} and repo.list() == [record]


# ------------------------------------------------------------------ callsight-admin
@pytest.fixture
def admin_env(table: Table, usage_plan: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CALLSIGHT_TABLE_NAME", table.name)
    monkeypatch.setenv("CALLSIGHT_USAGE_PLAN_ID", usage_plan)
    return usage_plan


def test_admin_creates_lists_and_revokes_keys(admin_env: str, repo: ApiKeyRepository,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["create-key", "--name", "clinic A frontend", "--client-id", "clinic-a",
                 "--client-id", "clinic-b"]) == 0
    out, err = capsys.readouterr()
    key = out.strip().splitlines()[-1]
    parsed = parse_api_key(key)
    assert parsed is not None and "shown this once" in out and f"created API key {parsed[0]}" in out
    assert "clinic clinic-a is not registered" in err  # a typo would show here
    assert authenticate(repo, key, now=NOW).client_ids == {"clinic-a", "clinic-b"}
    assert _plan_key_names(admin_env) == {gateway_key_name(parsed[0])}
    assert main(["create-key", "--name", "agency", "--all-clients"]) == 0
    agency = capsys.readouterr().out
    assert "for every clinic" in agency
    assert main(["list-keys"]) == 0
    listing = capsys.readouterr().out
    lines = listing.splitlines()
    assert lines[0].split() == ["KEY_ID", "NAME", "CLINICS", "CREATED", "LAST", "USED", "REVOKED"] and len(lines) == 3
    assert any(parsed[0] in line and "clinic-a,clinic-b" in line for line in lines)
    record = repo.find(parsed[0])
    assert record is not None and record.key_hash not in listing and key not in listing
    assert main(["revoke-key", "--key-id", parsed[0]]) == 0
    assert f"revoked API key {parsed[0]}" in capsys.readouterr().out
    with pytest.raises(NotAuthenticated):
        authenticate(repo, key, now=NOW)
    assert gateway_key_name(parsed[0]) not in _gateway_keys() and len(_gateway_keys()) == 1  # the agency's is left
    assert main(["list-keys"]) == 0
    assert any(parsed[0] in line and line.rstrip().endswith("Z") for line in capsys.readouterr().out.splitlines())


def test_admin_key_errors_name_the_problem(admin_env: str, repo: ApiKeyRepository, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list-keys"]) == 0 and "no API keys" in capsys.readouterr().out
    assert main(["revoke-key", "--key-id", "ffffffffffff"]) == 1
    assert "no API key with key_id ffffffffffff" in capsys.readouterr().err
    key = new_api_key()
    assert main(["revoke-key", "--key-id", key]) == 2  # the key itself given: refused without echoing it
    err = capsys.readouterr().err
    assert "12-character key_id" in err and key not in err
    assert main(["create-key", "--name", "x" * 101, "--client-id", "clinic-a"]) == 2
    assert "name" in capsys.readouterr().err
    assert main(["create-key", "--name", "ok", "--client-id", "bad id!"]) == 2
    assert "client_ids" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["create-key", "--name", "ok"])  # neither --client-id nor --all-clients
    assert usage.value.code == 2
    capsys.readouterr()
    monkeypatch.delenv("CALLSIGHT_USAGE_PLAN_ID")
    assert main(["create-key", "--name", "ok", "--client-id", "clinic-a"]) == 2
    assert "CALLSIGHT_USAGE_PLAN_ID is unset" in capsys.readouterr().err
    assert repo.list() == [] and _gateway_keys() == {}


# ------------------------------------------------------------------ the local platform's demo key
def test_a_malformed_demo_key_fails_the_platform_naming_the_variable_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from infra.platform import API_KEY_ENV, LocalPlatform, PlatformError

    monkeypatch.setenv(API_KEY_ENV, "csk_0123456789ab_a-secret-that-is-far-too-short")
    platform = LocalPlatform(port=0, postgres=False, state_file=None)
    with pytest.raises(PlatformError) as refused:
        platform.start()  # refused before anything starts
    assert API_KEY_ENV in str(refused.value) and "a-secret" not in str(refused.value)
    assert LocalPlatform.active is None and platform.amocrm is None and not platform.aws.running
