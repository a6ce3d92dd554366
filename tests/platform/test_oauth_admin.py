"""On a running local platform: `make admin` (python -m infra.admin) registers clinics from another process, and
the token-refresh schedule rotates OAuth pairs at the stub amoCRM, skipping fresh and long-lived ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest

from callsight.admin import register_client
from callsight.dal.clients import AmoCrmCredentials, AmoCrmCredentialStore, ClientProfile, ClientRepository
from callsight.dal.table import Table
from callsight.errors import ClientNotFound
from infra.platform import LocalPlatform
from infra.stubs.amocrm import DEFAULT_ACCESS_TOKEN, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from tests.api.conftest import SYNC, SYNC_STATUS, wait_finished
from tests.unit.test_token_refresh import REDIRECT, oauth_pair

pytestmark = pytest.mark.platform

REPO = Path(__file__).resolve().parents[2]
#: what a developer's shell may hold: none of it may be used by the local admin
DEVELOPER_SHELL = {
    "AWS_PROFILE": "developer-production", "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",  # AWS docs example key
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS_SESSION_TOKEN": "developer-session",
    "AWS_ENDPOINT_URL": "https://dynamodb.eu-central-1.amazonaws.com",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER": "https://secretsmanager.eu-central-1.amazonaws.com",
    "CALLSIGHT_TABLE_NAME": "callsight-prod-table", "CALLSIGHT_AMOCRM_SECRET_PREFIX": "callsight/prod/amocrm/",
}


@pytest.fixture(scope="module")
def state_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local") / "platform.json"


@pytest.fixture(scope="module")
def platform(state_file: Path) -> Iterator[LocalPlatform]:
    with LocalPlatform(port=0, demo_calls=6, postgres=False, state_file=state_file,
                       parameter_overrides={"LogLevel": "WARNING"}) as running:
        running.amocrm.configure(rate_limit=None)
        running.amocrm.oauth_redirect_uri = REDIRECT
        yield running
    assert not state_file.exists(), "a stopped platform removes its state file"


def admin(state_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra.admin", "--state-file", str(state_file), *args], check=False,
                          cwd=REPO, env={**os.environ, **DEVELOPER_SHELL}, capture_output=True, text=True, timeout=120)


def table(platform: LocalPlatform) -> Table:
    return Table(platform.table_name)


def last_week() -> dict[str, str]:
    start = date.today() - timedelta(days=8)
    return {"start_date": start.isoformat(), "end_date": (start + timedelta(days=7)).isoformat()}


def synced(platform: LocalPlatform, client_id: str) -> dict[str, object]:
    with httpx.Client(base_url=platform.api_url, headers=platform.api_headers, timeout=60) as api:
        started = api.post(SYNC, json={"client_id": client_id, **last_week()})
        assert started.status_code in (200, 202), started.text
        return wait_finished(api, client_id, last_week(), status_path=SYNC_STATUS)


def test_the_running_platform_describes_itself(platform: LocalPlatform, state_file: Path) -> None:
    state = json.loads(state_file.read_text())
    assert state["pid"] == os.getpid() and state["moto_url"] == platform.moto_url
    assert state["environment"]["CALLSIGHT_TABLE_NAME"] == platform.table_name
    assert state["environment"]["CALLSIGHT_AMOCRM_SECRET_PREFIX"] == platform.env["CALLSIGHT_AMOCRM_SECRET_PREFIX"]
    assert state["amocrm_url"] == platform.amocrm.url and state["api_url"] == platform.api_url
    assert "api_key" not in state and platform.api_key not in state_file.read_text()  # not under .local/: no key


def test_make_admin_registers_a_clinic_on_the_running_platform(platform: LocalPlatform, state_file: Path,
                                                              tmp_path: Path) -> None:
    token = tmp_path / "tok.txt"
    token.write_text(DEFAULT_ACCESS_TOKEN + "\n")
    done = admin(state_file, "register-client", "--client-id", "lab1", "--subdomain", "lab1",
                 "--base-url", platform.amocrm.url, "--token-file", str(token))
    assert done.returncode == 0, done.stderr
    assert "registered client lab1" in done.stdout and DEFAULT_ACCESS_TOKEN not in done.stdout + done.stderr
    # written to the platform's embedded AWS (not the developer's table or secrets), and usable at once
    assert ClientRepository(table(platform)).get("lab1").base_url == platform.amocrm.url
    prefix = platform.env["CALLSIGHT_AMOCRM_SECRET_PREFIX"]
    assert AmoCrmCredentialStore(prefix).load("lab1").access_token.get_secret_value() == DEFAULT_ACCESS_TOKEN
    assert synced(platform, "lab1")["overall_status"] == "completed"


def test_the_schedule_rotates_stale_pairs_and_leaves_the_others(platform: LocalPlatform, state_file: Path,
                                                               tmp_path: Path) -> None:
    stub = platform.amocrm
    prefix = platform.env["CALLSIGHT_AMOCRM_SECRET_PREFIX"]
    with httpx.Client(timeout=10) as http:
        live = tmp_path / "oauth.json"
        live.write_text(json.dumps(oauth_pair(stub.url, stub.issue_authorization_code(), http)))
        fresh = oauth_pair(stub.url, stub.issue_authorization_code(), http)
    done = admin(state_file, "register-client", "--client-id", "oauth-live", "--subdomain", "demo",
                 "--base-url", stub.url, "--oauth-file", str(live))
    assert done.returncode == 0, done.stderr
    for client_id, pair in (("oauth-fresh", fresh), ("oauth-revoked", {**fresh, "refresh_token": "revoked-secret"})):
        register_client(ClientProfile(client_id=client_id, amocrm_subdomain="demo", amocrm_base_url=stub.url,
                                      auth_mode="oauth"), AmoCrmCredentials.model_validate(pair),
                        table_name=platform.table_name, secret_prefix=prefix)
    ClientRepository(table(platform)).record_token_refresh("oauth-fresh", int(time.time()) - 3600)
    store = AmoCrmCredentialStore(prefix)
    old = json.loads(live.read_text())["refresh_token"]

    report = platform.run_schedule("RefreshTokensFunction")

    lines = {line["client_id"]: line for line in report["clients"]}
    assert lines["oauth-live"]["outcome"] == "refreshed"
    assert lines["oauth-fresh"] == {"client_id": "oauth-fresh", "outcome": "skipped",
                                    "reason": "pair exchanged 0.0 days ago"}
    assert lines["demo"]["outcome"] == "skipped" and "long-lived" in lines["demo"]["reason"]
    assert lines["oauth-revoked"]["outcome"] == "failed" and "refused" in lines["oauth-revoked"]["reason"]
    assert "revoked-secret" not in json.dumps(report)
    # the old refresh token is revoked at amoCRM; the new pair is stored and works
    rotated = store.load("oauth-live")
    assert rotated.refresh_token is not None and rotated.refresh_token.get_secret_value() in stub.refresh_tokens
    assert old not in stub.refresh_tokens
    reuse = httpx.post(f"{stub.url}/oauth2/access_token", json={
        "client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET, "grant_type": "refresh_token",
        "refresh_token": old, "redirect_uri": REDIRECT})
    assert reuse.status_code == 400 and reuse.json()["hint"] == "Token has been revoked"
    assert synced(platform, "oauth-live")["overall_status"] == "completed"
    assert store.load("oauth-live").refresh_token == rotated.refresh_token  # the sync had no reason to refresh
    # the next day's pass leaves the new pair alone
    again = {line["client_id"]: line for line in platform.run_schedule("RefreshTokensFunction")["clients"]}
    assert again["oauth-live"]["outcome"] == "skipped"
    assert store.load("oauth-live").refresh_token == rotated.refresh_token


def test_the_schedule_handler_takes_the_sample_event(platform: LocalPlatform) -> None:
    event = (REPO / "events" / "refresh_tokens.json").read_bytes()
    answer = platform.boto3_client("lambda").invoke(FunctionName="RefreshTokensFunction", Payload=event)
    body = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer, body
    assert {"refreshed", "skipped", "failed", "clients"} <= set(body)
    assert any(line["client_id"] == "demo" for line in body["clients"])


def test_a_long_lived_clinic_registered_without_a_token_is_refused(platform: LocalPlatform, state_file: Path) -> None:
    done = admin(state_file, "register-client", "--client-id", "lab2", "--subdomain", "lab2",
                 "--token-file", "/nonexistent/tok.txt")
    assert done.returncode == 2 and "No such file" in done.stderr
    with pytest.raises(ClientNotFound):
        ClientRepository(table(platform)).get("lab2")
