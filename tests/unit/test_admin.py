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


OAUTH_PAIR = {"access_token": "a1", "refresh_token": "r1", "expires_at": 1, "oauth_client_id": "integration",
              "oauth_client_secret": "s", "redirect_uri": "https://callsight.example/oauth"}


def test_register_an_oauth_pair_and_update_it(admin_env: Table, tmp_path: Path) -> None:
    oauth = tmp_path / "oauth.json"
    oauth.write_text(json.dumps(OAUTH_PAIR))
    assert main(["register-client", "--client-id", "kommo1", "--subdomain", "kommo1",
                 "--base-url", "https://kommo1.kommo.com", "--oauth-file", str(oauth)]) == 0
    repository = ClientRepository(admin_env)
    assert repository.get("kommo1").auth_mode == "oauth"
    assert AmoCrmCredentialStore(PREFIX).load("kommo1").redirect_uri == "https://callsight.example/oauth"
    # the registry entry the scheduled refresh lists: a new pair is due at the next pass
    entries = {e.client_id: e for e in repository.registered()}
    assert entries["kommo1"].auth_mode == "oauth" and entries["kommo1"].token_refreshed_at is None
    repository.record_token_refresh("kommo1", 1_000)
    # re-registering replaces both halves: now a long-lived token, which the schedule leaves alone
    token = tmp_path / "token.txt"
    token.write_text("new-token")
    assert main(["register-client", "--client-id", "kommo1", "--subdomain", "kommo1", "--token-file", str(token)]) == 0
    assert repository.get("kommo1").auth_mode == "long_lived"
    stored = AmoCrmCredentialStore(PREFIX).load("kommo1")
    assert stored.access_token.get_secret_value() == "new-token" and not stored.can_refresh
    entries = {e.client_id: e for e in repository.registered()}
    assert entries["kommo1"].auth_mode == "long_lived" and entries["kommo1"].token_refreshed_at is None


@pytest.mark.parametrize("redirect", [None, "", "callsight.example/oauth", "ftp://callsight.example/oauth"])
def test_an_oauth_pair_without_its_redirect_uri_is_refused(admin_env: Table, tmp_path: Path, redirect: str | None,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    oauth = tmp_path / "oauth.json"
    oauth.write_text(json.dumps({**OAUTH_PAIR, "refresh_token": "very-secret-refresh", "redirect_uri": redirect}))
    with pytest.raises(SystemExit) as refused:
        main(["register-client", "--client-id", "noredirect", "--subdomain", "x", "--oauth-file", str(oauth)])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "needs redirect_uri" in err and "very-secret-refresh" not in err
    assert ClientRepository(admin_env).registered() == []  # nothing written


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


# ------------------------------------------------------------------ `make admin`: finding the local platform
def _admin_says(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    from infra.admin import main as local_admin

    assert local_admin(list(args)) == 2
    return capsys.readouterr().err


def test_the_local_admin_says_when_no_platform_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess
    import sys

    missing = tmp_path / "platform.json"
    err = _admin_says(capsys, "--state-file", str(missing), "register-client", "--help")
    assert "no local platform is running" in err and "make serve" in err
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    missing.write_text(json.dumps({"pid": gone.pid, "moto_url": "http://127.0.0.1:1"}))
    assert "is no longer running" in _admin_says(capsys, "--state-file", str(missing), "register-client")


def test_the_local_admin_never_sends_aws_requests_off_loopback(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import httpx

    monkeypatch.setattr(httpx, "get", lambda *a, **k: pytest.fail("no request may leave for that address"))
    state = tmp_path / "platform.json"
    state.write_text(json.dumps({"pid": os.getpid(), "moto_url": "https://dynamodb.us-east-1.amazonaws.com"}))
    assert "not a loopback address" in _admin_says(capsys, "--state-file", str(state), "register-client")


def test_a_platform_never_takes_over_a_live_platforms_state_file(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from infra.local_state import read_state, remove_state, write_state

    path = tmp_path / "platform.json"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        path.write_text(json.dumps({"pid": other.pid, "moto_url": "http://127.0.0.1:5001"}))
        assert write_state({"moto_url": "http://127.0.0.1:5002"}, path) is False
        remove_state("http://127.0.0.1:5001", path)  # not this process's: kept
        assert read_state(path) == {"pid": other.pid, "moto_url": "http://127.0.0.1:5001"}
    finally:
        other.kill()
        other.wait()
    assert write_state({"moto_url": "http://127.0.0.1:5002"}, path) is True  # its owner is gone
    assert read_state(path) == {"moto_url": "http://127.0.0.1:5002", "pid": os.getpid()}
    remove_state("http://127.0.0.1:5003", path)  # another platform of this process: kept
    assert path.exists()
    remove_state("http://127.0.0.1:5002", path)
    assert not path.exists()
