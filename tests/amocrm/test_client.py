"""The amoCRM client against the stub amoCRM server: the same client, over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from callsight.amocrm import AmoCrmClient, StoredToken
from callsight.amocrm.tokens import StaticToken
from callsight.dal.clients import AmoCrmCredentials, AmoCrmCredentialStore
from callsight.dal.table import Table
from callsight.errors import AmoCrmAuthError, AmoCrmUnavailable
from infra.stubs.amocrm import DEFAULT_ACCESS_TOKEN, AmoCrmStub


@pytest.fixture(scope="module")
def stub() -> Iterator[AmoCrmStub]:
    with AmoCrmStub(demo_calls=120) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(stub: AmoCrmStub) -> None:
    stub.configure(latency_ms=0, fault_rate=0, rate_limit=7)
    stub.reset_stats()


def _client(stub: AmoCrmStub, **kwargs: object) -> AmoCrmClient:
    options: dict[str, object] = {"requests_per_second": 50.0, "page_size": 25, "sleep": time.sleep}
    options.update(kwargs)
    return AmoCrmClient(stub.url, StaticToken(DEFAULT_ACCESS_TOKEN), **options)  # type: ignore[arg-type]


def test_every_call_note_of_every_entity_type_across_pages(stub: AmoCrmStub) -> None:
    stub.configure(rate_limit=None)
    client = _client(stub)
    notes = client.all_call_notes(updated_from=0)
    assert sorted(n["id"] for n in notes) == sorted(c.note_id for c in stub.calls)
    assert {n["entity_type"] for n in notes} == {c.entity_type for c in stub.calls}
    # pages of 25 were followed through _links.next: more requests than entity types
    leads = sum(1 for c in stub.calls if c.entity_type == "leads")
    assert client.requests_sent >= -(-leads // 25) + 2


def test_nothing_to_fetch_is_a_204_and_an_empty_list(stub: AmoCrmStub) -> None:
    client = _client(stub)
    assert client.all_call_notes(updated_from=int(time.time()) + 86400) == []
    assert stub.stats()["by_status"].get(204, 0) == 3


def test_paced_under_the_limit_no_429(stub: AmoCrmStub) -> None:
    client = _client(stub, requests_per_second=6.6, page_size=10)
    notes = client.all_call_notes(updated_from=0)
    assert len(notes) == len(stub.calls)
    stats = stub.stats()
    assert stats["rate_limited"] == 0 and stats["requests"] >= 12


def test_429_is_backed_off_and_every_note_still_arrives(stub: AmoCrmStub) -> None:
    # pacing deliberately over amoCRM's limit: the stub answers 429, the client waits and retries
    client = _client(stub, requests_per_second=40.0, page_size=5, max_attempts=10)
    notes = client.all_call_notes(updated_from=0)
    assert len(notes) == len(stub.calls)
    assert stub.stats()["rate_limited"] > 0


def test_faults_and_malformed_json_are_retried(stub: AmoCrmStub) -> None:
    stub.configure(rate_limit=None, fault_rate=0.3)
    client = _client(stub, page_size=10, max_attempts=10)
    notes = client.all_call_notes(updated_from=0)
    assert sorted(n["id"] for n in notes) == sorted(c.note_id for c in stub.calls)
    faults = stub.stats()["faults"]
    assert faults.get("malformed", 0) > 0 and sum(faults.values()) > 3


def test_a_service_that_keeps_failing_ends_in_amocrm_unavailable(stub: AmoCrmStub) -> None:
    stub.configure(rate_limit=None, fault_rate=1.0)
    with pytest.raises(AmoCrmUnavailable) as failure:
        list(_client(stub, max_attempts=3).call_notes("leads", 0))
    assert DEFAULT_ACCESS_TOKEN not in str(failure.value)


def test_a_rejected_long_lived_token_is_an_auth_error_without_the_token(stub: AmoCrmStub) -> None:
    client = AmoCrmClient(stub.url, StaticToken("wrong-token-123"), requests_per_second=50)
    with pytest.raises(AmoCrmAuthError) as failure:
        client.all_call_notes(updated_from=0)
    assert "wrong-token-123" not in str(failure.value) and "401" in str(failure.value)


def test_users_are_the_administrators(stub: AmoCrmStub) -> None:
    users = _client(stub).users()
    assert {c.responsible_user_id for c in stub.calls} <= set(users)
    assert all(name for name in users.values())


def test_oauth_token_is_refreshed_once_and_the_new_pair_persisted(stub: AmoCrmStub, table: Table) -> None:
    store = AmoCrmCredentialStore("callsight/test/amocrm/")
    store.save("oauth-clinic", AmoCrmCredentials(
        access_token=SecretStr("expired-access"), refresh_token=SecretStr("stub-refresh-0"),
        oauth_client_id="stub-client", oauth_client_secret=SecretStr("stub-secret"),
        redirect_uri="https://callsight.example/oauth"))
    with httpx.Client() as http:
        tokens = StoredToken("oauth-clinic", stub.url, store, table, http)
        client = AmoCrmClient(stub.url, tokens, requests_per_second=50, page_size=250, http=http)
        notes = client.all_call_notes(updated_from=0)
    assert len(notes) == len(stub.calls)
    saved = store.load("oauth-clinic")
    assert saved.access_token.get_secret_value() != "expired-access"
    assert saved.refresh_token is not None
    new_refresh = saved.refresh_token.get_secret_value()
    assert new_refresh != "stub-refresh-0" and stub.refresh_tokens == {new_refresh}
    assert stub.stats()["token_refreshes"] == 1  # three entity types, one refresh


def test_a_revoked_refresh_token_is_an_auth_error(stub: AmoCrmStub, table: Table) -> None:
    store = AmoCrmCredentialStore("callsight/test/amocrm/")
    store.save("revoked", AmoCrmCredentials(
        access_token=SecretStr("expired"), refresh_token=SecretStr("long-gone"),
        oauth_client_id="stub-client", oauth_client_secret=SecretStr("stub-secret")))
    with httpx.Client() as http:
        client = AmoCrmClient(stub.url, StoredToken("revoked", stub.url, store, table, http), http=http,
                              requests_per_second=50)
        with pytest.raises(AmoCrmAuthError) as failure:
            list(client.call_notes("leads", 0))
    assert "long-gone" not in str(failure.value)
