"""The scheduled keep-alive of OAuth pairs, against the stub amoCRM's OAuth server (real HTTP) and moto."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from callsight.admin import register_client
from callsight.amocrm import StoredToken
from callsight.dal.clients import AmoCrmCredentials, AmoCrmCredentialStore, ClientProfile, ClientRepository
from callsight.dal.table import Table
from callsight.errors import AmoCrmAuthError
from callsight.logic.token_refresh import TokenRefreshReport, refresh_stale_pairs
from infra.stubs.amocrm import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, AmoCrmStub

PREFIX = "callsight/test/amocrm/"
REDIRECT = "https://callsight.example/oauth"
WEEK = timedelta(days=7)


@pytest.fixture(scope="module")
def stub() -> Iterator[AmoCrmStub]:
    with AmoCrmStub(demo_calls=1, rate_limit=None) as server:
        server.oauth_redirect_uri = REDIRECT
        yield server


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def oauth_pair(url: str, code: str, http: httpx.Client) -> dict[str, Any]:
    """An OAuth file's content, got the way an operator gets it: an authorization code exchanged at amoCRM."""
    answer = http.post(f"{url}/oauth2/access_token", json={
        "client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET, "grant_type": "authorization_code",
        "code": code, "redirect_uri": REDIRECT})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return {"access_token": body["access_token"], "refresh_token": body["refresh_token"],
            "expires_at": int(time.time()) + body["expires_in"], "oauth_client_id": DEFAULT_CLIENT_ID,
            "oauth_client_secret": DEFAULT_CLIENT_SECRET, "redirect_uri": REDIRECT}


def authorise(stub: AmoCrmStub, http: httpx.Client) -> AmoCrmCredentials:
    return AmoCrmCredentials.model_validate(oauth_pair(stub.url, stub.issue_authorization_code(), http))


def register(table: Table, stub: AmoCrmStub, client_id: str, credentials: AmoCrmCredentials) -> None:
    mode = "oauth" if credentials.can_refresh else "long_lived"
    register_client(ClientProfile(client_id=client_id, amocrm_subdomain="demo", amocrm_base_url=stub.url,
                                  auth_mode=mode), credentials, table_name=table.name, secret_prefix=PREFIX)


def refresh_token_of(client_id: str) -> str:
    token = AmoCrmCredentialStore(PREFIX).load(client_id).refresh_token
    assert token is not None
    return token.get_secret_value()


def outcomes(report: TokenRefreshReport) -> dict[str, tuple[str, str]]:
    return {line.client_id: (line.outcome, line.reason) for line in report.clients}


def run(table: Table, http: httpx.Client, **kwargs: Any) -> TokenRefreshReport:
    return refresh_stale_pairs(clients=ClientRepository(table), store=AmoCrmCredentialStore(PREFIX), http=http,
                               refresh_after=WEEK, **kwargs)


def test_stale_pairs_are_rotated_and_fresh_and_long_lived_ones_left_alone(
        table: Table, stub: AmoCrmStub, http: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    for client_id in ("new", "stale", "fresh"):
        register(table, stub, client_id, authorise(stub, http))
    register(table, stub, "longlived", AmoCrmCredentials(access_token=SecretStr("long-lived-token")))
    now = time.time()
    ClientRepository(table).record_token_refresh("stale", int(now - 10 * 86400))
    ClientRepository(table).record_token_refresh("fresh", int(now - 86400))
    before = {c: refresh_token_of(c) for c in ("new", "stale", "fresh")}
    monkeypatch.setattr(table.table, "scan", lambda **_: pytest.fail("the clinics are listed with a Query"))

    report = run(table, http, now=now)

    result = outcomes(report)
    assert result["new"] == ("refreshed", "new pair stored (not exchanged since registration)")
    assert result["stale"] == ("refreshed", "new pair stored (last exchanged 10.0 days ago)")
    assert result["fresh"] == ("skipped", "pair exchanged 1.0 days ago")
    assert result["longlived"] == ("skipped", "long-lived token: nothing to refresh")
    assert (report.refreshed, report.skipped, report.failed) == (2, 2, 0)
    valid = stub.refresh_tokens
    for client_id in ("new", "stale"):  # the old refresh token is revoked at amoCRM, the new one stored
        assert before[client_id] not in valid and refresh_token_of(client_id) in valid
    assert refresh_token_of("fresh") == before["fresh"] in valid
    entries = {e.client_id: e for e in ClientRepository(table).registered()}
    assert entries["new"].token_refreshed_at is not None and entries["new"].token_refreshed_at >= int(now)
    assert entries["longlived"].token_refreshed_at is None
    assert "long-lived-token" not in report.model_dump_json()


def test_a_second_pass_sends_nothing(table: Table, stub: AmoCrmStub, http: httpx.Client) -> None:
    register(table, stub, "once", authorise(stub, http))
    assert outcomes(run(table, http))["once"][0] == "refreshed"
    exchanges = stub.stats()["token_refreshes"]
    assert outcomes(run(table, http))["once"] == ("skipped", "pair exchanged 0.0 days ago")
    assert stub.stats()["token_refreshes"] == exchanges


def test_one_clinics_refusal_does_not_stop_the_others(table: Table, stub: AmoCrmStub, http: httpx.Client) -> None:
    revoked = authorise(stub, http).model_copy(update={"refresh_token": SecretStr("revoked-refresh-secret")})
    register(table, stub, "a-revoked", revoked)
    other_redirect = authorise(stub, http).model_copy(update={"redirect_uri": "https://elsewhere.example/cb"})
    register(table, stub, "b-redirect", other_redirect)
    register(table, stub, "c-good", authorise(stub, http))
    register(table, stub, "d-unreachable", authorise(stub, http))
    ClientRepository(table).put(ClientProfile(client_id="d-unreachable", amocrm_subdomain="demo",
                                              amocrm_base_url="http://127.0.0.1:9", auth_mode="oauth"))

    report = run(table, http)

    result = outcomes(report)
    assert result["a-revoked"][0] == "failed" and "refused the token refresh (HTTP 400)" in result["a-revoked"][1]
    assert result["b-redirect"][0] == "failed" and "HTTP 401" in result["b-redirect"][1]
    assert result["d-unreachable"][0] == "failed" and "token refresh failed: ConnectError" in result["d-unreachable"][1]
    assert result["c-good"][0] == "refreshed"
    assert (report.refreshed, report.failed) == (1, 3)
    assert "revoked-refresh-secret" not in report.model_dump_json()
    assert DEFAULT_CLIENT_SECRET not in report.model_dump_json()
    # a failed clinic keeps its pair and is tried again by the next pass
    assert refresh_token_of("a-revoked") == "revoked-refresh-secret"
    assert outcomes(run(table, http))["a-revoked"][0] == "failed"


def test_a_clinic_whose_secret_is_gone_is_reported_not_fatal(table: Table, stub: AmoCrmStub,
                                                             http: httpx.Client) -> None:
    ClientRepository(table).put(ClientProfile(client_id="ghost", amocrm_subdomain="demo", amocrm_base_url=stub.url,
                                              auth_mode="oauth"))
    register(table, stub, "real", authorise(stub, http))
    result = outcomes(run(table, http))
    assert result["ghost"] == ("failed", "client 'ghost' is not registered")
    assert result["real"][0] == "refreshed"


def test_a_pair_rotated_by_a_sync_meanwhile_is_not_exchanged_again(table: Table, stub: AmoCrmStub,
                                                                  http: httpx.Client) -> None:
    register(table, stub, "busy", authorise(stub, http))
    scheduled = StoredToken("busy", stub.url, AmoCrmCredentialStore(PREFIX), table, http)
    syncing = StoredToken("busy", stub.url, AmoCrmCredentialStore(PREFIX), table, http)
    syncing.refresh(syncing.access_token())  # a sync's 401 made it refresh first
    exchanges = stub.stats()["token_refreshes"]
    assert scheduled.rotate() is False  # under the lease it re-reads the secret: the pair is fresh
    assert stub.stats()["token_refreshes"] == exchanges
    assert scheduled.access_token() == syncing.access_token()
    # a sync's refresh is recorded too: the schedule then leaves the pair alone
    entry = {e.client_id: e for e in ClientRepository(table).registered()}["busy"]
    assert entry.token_refreshed_at is not None and entry.token_refreshed_at >= int(time.time()) - 60


def test_a_refresh_never_sends_an_empty_redirect_uri(table: Table, stub: AmoCrmStub, http: httpx.Client) -> None:
    register(table, stub, "noredirect", authorise(stub, http).model_copy(update={"redirect_uri": None}))
    requests = stub.stats()["requests"]
    tokens = StoredToken("noredirect", stub.url, AmoCrmCredentialStore(PREFIX), table, http)
    with pytest.raises(AmoCrmAuthError, match="no redirect_uri"):
        tokens.refresh(tokens.access_token())
    assert stub.stats()["requests"] == requests  # refused before anything was sent
    result = outcomes(run(table, http))["noredirect"]
    assert result[0] == "failed" and "redirect_uri" in result[1]
    assert table.get("CLIENT#noredirect", "TOKEN_REFRESH") is None  # the lease was released
