"""`callsight-admin register-client`: secrets to Secrets Manager, the profile to DynamoDB, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from callsight.admin import main
from callsight.dal.clients import AmoCrmCredentialStore, ClientRepository
from callsight.dal.table import Table

PREFIX = "callsight/test/amocrm/"


@pytest.fixture
def admin_env(table: Table, monkeypatch: pytest.MonkeyPatch) -> Table:
    monkeypatch.setenv("CALLSIGHT_TABLE_NAME", table.name)
    monkeypatch.setenv("CALLSIGHT_AMOCRM_SECRET_PREFIX", PREFIX)
    return table


def test_register_a_clinic_with_a_long_lived_token(admin_env: Table, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "token.txt"
    token.write_text("long-lived-secret-token\n")
    code = main(["register-client", "--client-id", "clinic42", "--subdomain", "clinic42",
                 "--timezone", "Asia/Yekaterinburg", "--token-file", str(token)])
    assert code == 0
    profile = ClientRepository(admin_env).get("clinic42")
    assert profile.timezone == "Asia/Yekaterinburg" and profile.base_url == "https://clinic42.amocrm.ru"
    assert AmoCrmCredentialStore(PREFIX).load("clinic42").access_token.get_secret_value() == "long-lived-secret-token"
    item = boto3.resource("dynamodb").Table(admin_env.name).get_item(Key={"pk": "CLIENT#clinic42", "sk": "PROFILE"})
    assert "long-lived-secret-token" not in json.dumps(item["Item"], default=str)  # the token is not in DynamoDB
    assert "long-lived-secret-token" not in capsys.readouterr().out


def test_register_an_oauth_pair_and_update_it(admin_env: Table, tmp_path: Path) -> None:
    oauth = tmp_path / "oauth.json"
    oauth.write_text(json.dumps({"access_token": "a1", "refresh_token": "r1", "expires_at": 1,
                                 "oauth_client_id": "integration", "oauth_client_secret": "s"}))
    assert main(["register-client", "--client-id", "kommo1", "--subdomain", "kommo1",
                 "--base-url", "https://kommo1.kommo.com", "--oauth-file", str(oauth)]) == 0
    assert ClientRepository(admin_env).get("kommo1").auth_mode == "oauth"
    assert AmoCrmCredentialStore(PREFIX).load("kommo1").can_refresh
    # re-registering replaces both halves: now a long-lived token
    token = tmp_path / "token.txt"
    token.write_text("new-token")
    assert main(["register-client", "--client-id", "kommo1", "--subdomain", "kommo1", "--token-file", str(token)]) == 0
    assert ClientRepository(admin_env).get("kommo1").auth_mode == "long_lived"
    stored = AmoCrmCredentialStore(PREFIX).load("kommo1")
    assert stored.access_token.get_secret_value() == "new-token" and not stored.can_refresh


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timezone", "Mars/Olympus"], "unknown time zone"),
        (["--client-id", "bad id!"], "client_id"),
    ],
)
def test_bad_registrations_are_refused_with_a_reason(admin_env: Table, tmp_path: Path, args: list[str],
                                                     message: str, capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "token.txt"
    token.write_text("t")
    base = {"--client-id": "ok", "--subdomain": "ok", "--token-file": str(token)}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    code = main(["register-client", *[x for pair in base.items() for x in pair]])
    assert code == 2 and message in capsys.readouterr().err


def test_malformed_credentials_are_reported_without_quoting_the_secrets(admin_env: Table, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from callsight.errors import AmoCrmAuthError

    oauth = tmp_path / "oauth.json"
    oauth.write_text(json.dumps({"refresh_token": "very-secret-refresh", "oauth_client_secret": "s"}))
    assert main(["register-client", "--client-id", "leaky", "--subdomain", "leaky", "--oauth-file", str(oauth)]) == 2
    err = capsys.readouterr().err
    assert "access_token" in err and "very-secret-refresh" not in err
    # a secret broken in Secrets Manager: the run's error (shown by the status endpoint) names the problem only
    broken = json.dumps({"refresh_token": "very-secret-refresh"})
    boto3.client("secretsmanager").create_secret(Name=f"{PREFIX}leaky", SecretString=broken)
    with pytest.raises(AmoCrmAuthError) as failure:
        AmoCrmCredentialStore(PREFIX).load("leaky")
    assert "access_token" in str(failure.value) and "very-secret-refresh" not in str(failure.value)
