"""The amoCRM client over real HTTP: against the demo stub (a whole account: paging, pacing, faults, OAuth), and
against a look-alike whose answers each test writes (odd shapes, paging that does not end, every error)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from callsight.amocrm import AmoCrmClient, LockoutBackoff, StoredToken
from callsight.amocrm.tokens import StaticToken
from callsight.dal.clients import AmoCrmCredentials, AmoCrmCredentialStore
from callsight.dal.table import Table
from callsight.errors import (
    AmoCrmAccountError,
    AmoCrmAuthError,
    AmoCrmError,
    AmoCrmLockedOut,
    AmoCrmPagingError,
    AmoCrmUnavailable,
)
from infra.stubs.amocrm import DEFAULT_ACCESS_TOKEN, AmoCrmStub
from tests.amocrm.lookalike import TOKEN, Answer, LookalikeAmoCrm, page, problem
from tests.clock import FakeClock

NOTES = "/api/v4/leads/notes"


# ---------------------------------------------------------------------------------------------- the demo stub
@pytest.fixture(scope="module")
def stub() -> Iterator[AmoCrmStub]:
    with AmoCrmStub(demo_calls=120) as server:
        yield server


@pytest.fixture
def demo(stub: AmoCrmStub) -> AmoCrmStub:
    stub.configure(latency_ms=0, fault_rate=0, rate_limit=7)
    stub.reset_stats()
    return stub


def _client(stub: AmoCrmStub, **kwargs: Any) -> AmoCrmClient:
    options: dict[str, Any] = {"requests_per_second": 50.0, "page_size": 25}
    options.update(kwargs)
    return AmoCrmClient(stub.url, StaticToken(DEFAULT_ACCESS_TOKEN), **options)


def _served_note_ids(stub: AmoCrmStub) -> list[int]:
    return sorted(f.note_id for c in stub.calls for f in c.filings)


def test_every_call_note_of_every_entity_type_across_pages(demo: AmoCrmStub) -> None:
    demo.configure(rate_limit=None)
    client = _client(demo)
    fetch = client.fetch_call_notes(updated_from=0)
    assert sorted(int(n.payload["id"]) for n in fetch.notes) == _served_note_ids(demo)
    assert {n.entity_type for n in fetch.notes} == {f.entity_type for c in demo.calls for f in c.filings}
    assert not fetch.rejected and not fetch.skipped_entities
    leads = sum(1 for c in demo.calls for f in c.filings if f.entity_type == "leads")
    assert client.requests_sent >= -(-leads // 25) + 3  # pages of 25 followed through _links.next


def test_nothing_to_fetch_is_a_204_and_an_empty_list(demo: AmoCrmStub) -> None:
    fetch = _client(demo).fetch_call_notes(updated_from=int(time.time()) + 86400)
    assert fetch.notes == [] and demo.stats()["by_status"].get(204, 0) == 4


def test_an_account_without_customers_skips_them_and_keeps_the_rest(demo: AmoCrmStub) -> None:
    demo.configure(customers_enabled=False)
    try:
        fetch = _client(demo).fetch_call_notes(updated_from=0)
    finally:
        demo.configure(customers_enabled=True)
    assert set(fetch.skipped_entities) == {"customers"} and "402" in fetch.skipped_entities["customers"]
    expected = sorted(f.note_id for c in demo.calls for f in c.filings if f.entity_type != "customers")
    assert sorted(int(n.payload["id"]) for n in fetch.notes) == expected


def test_paced_under_the_limit_no_429(demo: AmoCrmStub) -> None:
    client = _client(demo, requests_per_second=6.6, page_size=10)
    fetch = client.fetch_call_notes(updated_from=0)
    assert len(fetch.notes) == demo.note_count
    stats = demo.stats()
    assert stats["rate_limited"] == 0 and stats["requests"] >= 12


def test_a_stricter_limit_is_backed_off_and_every_note_still_arrives(demo: AmoCrmStub) -> None:
    demo.configure(rate_limit=3)  # amoCRM counting more than we do: 429s, held back, retried
    fetch = _client(demo, max_attempts=10).fetch_call_notes(updated_from=0)
    assert len(fetch.notes) == demo.note_count
    assert demo.stats()["rate_limited"] > 0


def test_faults_and_malformed_json_are_retried(demo: AmoCrmStub) -> None:
    demo.configure(rate_limit=None, fault_rate=0.3)
    fetch = _client(demo, page_size=10, max_attempts=10).fetch_call_notes(updated_from=0)
    assert sorted(int(n.payload["id"]) for n in fetch.notes) == _served_note_ids(demo)
    faults = demo.stats()["faults"]
    assert faults.get("malformed", 0) > 0 and sum(faults.values()) > 3


def test_a_service_that_keeps_failing_ends_in_amocrm_unavailable(demo: AmoCrmStub) -> None:
    demo.configure(rate_limit=None, fault_rate=1.0)
    with pytest.raises(AmoCrmUnavailable) as failure:
        _client(demo, max_attempts=3).entity_notes("leads", 0)
    assert DEFAULT_ACCESS_TOKEN not in str(failure.value) and "try again later" in str(failure.value)


def test_a_rejected_long_lived_token_is_an_auth_error_without_the_token(demo: AmoCrmStub) -> None:
    client = AmoCrmClient(demo.url, StaticToken("wrong-token-123"), requests_per_second=50)
    with pytest.raises(AmoCrmAuthError) as failure:
        client.fetch_call_notes(updated_from=0)
    message = str(failure.value)
    assert "wrong-token-123" not in message and "401" in message and "register-client" in message


def test_users_are_the_administrators(demo: AmoCrmStub) -> None:
    users = _client(demo).users()
    assert {c.responsible_user_id for c in demo.calls} <= set(users)
    assert all(name for name in users.values())


def test_oauth_token_is_refreshed_once_and_the_new_pair_persisted(demo: AmoCrmStub, table: Table) -> None:
    store = AmoCrmCredentialStore("callsight/test/amocrm/")
    store.save("oauth-clinic", AmoCrmCredentials(
        access_token=SecretStr("expired-access"), refresh_token=SecretStr("stub-refresh-0"),
        oauth_client_id="stub-client", oauth_client_secret=SecretStr("stub-secret"),
        redirect_uri="https://callsight.example/oauth"))
    with httpx.Client() as http:
        tokens = StoredToken("oauth-clinic", demo.url, store, table, http)
        client = AmoCrmClient(demo.url, tokens, requests_per_second=50, page_size=250, http=http)
        fetch = client.fetch_call_notes(updated_from=0)
    assert len(fetch.notes) == demo.note_count
    saved = store.load("oauth-clinic")
    assert saved.access_token.get_secret_value() != "expired-access"
    assert saved.refresh_token is not None
    new_refresh = saved.refresh_token.get_secret_value()
    assert new_refresh != "stub-refresh-0" and demo.refresh_tokens == {new_refresh}
    assert demo.stats()["token_refreshes"] == 1  # four entity types at once, one refresh


def test_a_revoked_refresh_token_is_an_auth_error(demo: AmoCrmStub, table: Table) -> None:
    store = AmoCrmCredentialStore("callsight/test/amocrm/")
    store.save("revoked", AmoCrmCredentials(
        access_token=SecretStr("expired"), refresh_token=SecretStr("long-gone"),
        oauth_client_id="stub-client", oauth_client_secret=SecretStr("stub-secret"),
        redirect_uri="https://callsight.example/oauth"))
    with httpx.Client() as http:
        client = AmoCrmClient(demo.url, StoredToken("revoked", demo.url, store, table, http), http=http,
                              requests_per_second=50)
        with pytest.raises(AmoCrmAuthError) as failure:
            client.entity_notes("leads", 0)
    assert "long-gone" not in str(failure.value)


# ---------------------------------------------------------------------------------------------- the look-alike
@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(now=1000.0)


def _lookalike_client(amo: LookalikeAmoCrm, clock: FakeClock, **kwargs: Any) -> AmoCrmClient:
    return AmoCrmClient(amo.url, StaticToken(TOKEN), clock=clock, sleep=clock.sleep, **kwargs)


#: what amoCRM's lockout looks like: nginx's own page, saying nothing about why
LOCKOUT_PAGE = Answer(403, "<html><head><title>403 Forbidden</title></head><body><center>nginx</center></body></html>")


def _next(number: int, entity: str = "leads") -> str:
    return f"{{base}}/api/v4/{entity}/notes?page={number}"


def _note(note_id: int) -> dict[str, Any]:
    return {"id": note_id, "note_type": "call_in", "params": {"uniq": f"u{note_id}", "duration": 30}}


def test_notes_are_asked_in_a_stable_order(clock: FakeClock) -> None:
    with LookalikeAmoCrm(notes={"leads": [page([_note(1)])]}) as amo:
        _lookalike_client(amo, clock).entity_notes("leads", 0)
        first = amo.requests[0]
    assert first.query["order[id]"] == ["asc"] and first.query["filter[note_type][]"] == ["call_in", "call_out"]


def test_a_self_looping_next_link_ends_with_a_paging_error(clock: FakeClock) -> None:
    looping = page([_note(1)], next_href=_next(1))  # page 1 links to page 1
    with LookalikeAmoCrm(notes={"leads": [looping]}) as amo:
        with pytest.raises(AmoCrmPagingError) as failure:
            _lookalike_client(amo, clock).fetch_call_notes(0)
        leads_requests = amo.paths().count(NOTES)
    message = str(failure.value)
    assert "leads" in message and "already fetched" in message
    assert leads_requests <= 2  # our first page, then the link's spelling of it: seen again, stop


def test_a_cycle_of_pages_ends_with_a_paging_error(clock: FakeClock) -> None:
    pages = [page([_note(1)], next_href=_next(2, "contacts")), page([_note(2)], next_href=_next(1, "contacts"))]
    with LookalikeAmoCrm(notes={"contacts": pages}) as amo:
        with pytest.raises(AmoCrmPagingError) as failure:
            _lookalike_client(amo, clock).fetch_call_notes(0)
        requests = amo.paths().count("/api/v4/contacts/notes")
    assert "contacts" in str(failure.value) and "leads back to page" in str(failure.value)
    assert requests <= 4


def test_a_next_link_to_another_host_is_not_followed(clock: FakeClock) -> None:
    elsewhere = page([_note(1)], next_href="https://collector.example/api/v4/leads/notes?page=2")
    with LookalikeAmoCrm(notes={"leads": [elsewhere]}) as amo:
        with pytest.raises(AmoCrmPagingError) as failure:
            _lookalike_client(amo, clock).entity_notes("leads", 0)
        assert amo.paths() == [NOTES]
    assert "collector.example" in str(failure.value) and "leads" in str(failure.value)


def test_more_pages_than_the_cap_is_a_paging_error(clock: FakeClock) -> None:
    endless = [page([_note(n)], next_href=_next(n + 1, "companies")) for n in range(1, 30)]
    with LookalikeAmoCrm(notes={"companies": endless}) as amo:
        with pytest.raises(AmoCrmPagingError) as failure:
            _lookalike_client(amo, clock, max_pages=5).entity_notes("companies", 0)
        assert len(amo.requests) == 5
    assert "more than 5 pages" in str(failure.value) and "companies" in str(failure.value)


def test_a_page_repeating_notes_already_seen_is_not_a_loop(clock: FakeClock) -> None:
    same = [_note(1), _note(2)]
    with LookalikeAmoCrm(notes={"leads": [page(same, next_href=_next(2)), page(same)]}) as amo:
        fetch = _lookalike_client(amo, clock).entity_notes("leads", 0)
    assert [n.payload["id"] for n in fetch.notes] == [1, 2, 1, 2]  # duplicates are the sync's to fold


def test_odd_page_shapes_are_counted_and_odd_notes_come_back_as_sent(clock: FakeClock) -> None:
    odd_notes = [7, "a call", None, {"id": 5, "params": "not an object"}, [1, 2]]
    leads = [
        {"_embedded": [_note(1)], "_links": {"next": {"href": _next(2)}}},  # _embedded a list
        {"_embedded": {"notes": None}, "_links": {"next": {"href": _next(3)}}},  # notes: null is an empty page
        page(odd_notes, next_href=_next(4)),
        {"_embedded": {"notes": {"id": 9}}, "_links": {"next": {"href": 42}}},  # notes an object, href a number
    ]
    # contacts: a page that is a list; companies: a page without _embedded or links (nothing, not a problem)
    notes: dict[str, list[Any]] = {"leads": leads, "contacts": [[_note(2)]], "companies": [{"_page": 1}]}
    with LookalikeAmoCrm(notes=notes) as amo:
        fetch = _lookalike_client(amo, clock).fetch_call_notes(0)
    assert [(n.entity_type, n.payload) for n in fetch.notes] == [("leads", p) for p in odd_notes]
    assert fetch.rejected == {"bad_page": 3, "bad_next_link": 1} and fetch.skipped_entities == {}


@pytest.mark.parametrize("status", [402, 403, 404])
def test_customers_refused_are_skipped_with_the_reason(clock: FakeClock, status: int) -> None:
    refusal = Answer(status, problem(status, "Customers are disabled in this account"))
    with LookalikeAmoCrm(notes={"leads": [page([_note(1)])]},
                         answers={"/api/v4/customers/notes": refusal}) as amo:
        fetch = _lookalike_client(amo, clock).fetch_call_notes(0)
    assert [n.payload["id"] for n in fetch.notes] == [1]
    assert list(fetch.skipped_entities) == ["customers"] and str(status) in fetch.skipped_entities["customers"]


@pytest.mark.parametrize(("answers", "error"), [
    ({"/api/v4/customers/notes": Answer(401, problem(401, "Invalid access token"))}, AmoCrmAuthError),
    ({"*": Answer(403, problem(403, "Your IP address is blocked: too many requests"))}, AmoCrmLockedOut),
], ids=["401", "lockout"])
def test_customers_failing_for_a_reason_of_the_account_fail_the_fetch(clock: FakeClock, answers: dict[str, Answer],
                                                                      error: type[Exception]) -> None:
    # only a refusal of customers themselves is skipped: a bad token or amoCRM's lockout still fails the sync
    with LookalikeAmoCrm(answers=answers) as amo:
        with pytest.raises(AmoCrmError) as failure:
            _lookalike_client(amo, clock).fetch_call_notes(0)
        assert "/api/v4/customers/notes" in amo.paths()
    assert type(failure.value) is error


def test_a_customers_refusal_after_the_lockout_lifted_is_a_refusal(clock: FakeClock) -> None:
    # a 429, then a 403 on every path: the lockout; once amoCRM answers again, customers' 403 is their own
    with LookalikeAmoCrm(notes={"leads": [page([_note(1)], next_href=_next(2)), page([_note(2)])]},
                         answers={"/api/v4/customers/notes": Answer(403, problem(403, "Access denied"))}) as amo:
        amo.queue("*", Answer(429, problem(429, "Too many requests")), LOCKOUT_PAGE)
        client = _lookalike_client(amo, clock)
        leads = client.entity_notes("leads", 0)
        customers = client.entity_notes("customers", 0)
    assert [n.payload["id"] for n in leads.notes] == [1, 2]
    assert list(customers.skipped_entities) == ["customers"] and customers.notes == []
    assert [round(s) for s in clock.sleeps if s >= 30] == [60]  # one lockout pause, then no more


def _token_echo(detail: str) -> str:
    return f"{detail} (request had Authorization: Bearer {TOKEN})"  # a server echoing the token: never repeated


@pytest.mark.parametrize(("answer", "error", "says"), [
    (Answer(401, problem(401, _token_echo("Invalid access token"))), AmoCrmAuthError,
     ["401", "register a new one with callsight-admin register-client"]),
    (Answer(402, problem(402, _token_echo("Payment required"))), AmoCrmAccountError, ["402", "not paid"]),
    (Answer(403, problem(403, _token_echo("Access denied"))), AmoCrmAuthError, ["403", "rights"]),
    (Answer(403, problem(403, _token_echo("Access to this account is prohibited from your IP address"))),
     AmoCrmAuthError, ["403", "IP allow-list"]),
    (Answer(404, problem(404, _token_echo("Account not found"))), AmoCrmAccountError,
     ["404", "subdomain", "base URL"]),
    (Answer(429, problem(429, _token_echo("Too many requests"))), AmoCrmUnavailable,
     ["429", "after 4 attempts", "try again later"]),
    (Answer(503, _token_echo("<html>503 Service Temporarily Unavailable</html>")), AmoCrmUnavailable,
     ["503", "after 4 attempts", "try again later"]),
    (Answer(200, '{"_embedded": {"notes": [', content_type="application/hal+json"), AmoCrmUnavailable,
     ["malformed JSON", "after 4 attempts"]),
    (Answer(400, problem(400, _token_echo("filter is invalid"))), AmoCrmError, ["400", "filter is invalid"]),
], ids=["401", "402", "403-rights", "403-ip", "404", "429", "503", "malformed", "400"])
def test_each_failure_says_what_to_do_without_the_token(clock: FakeClock, answer: Answer, error: type[Exception],
                                                        says: list[str]) -> None:
    with LookalikeAmoCrm(answers={NOTES: answer}) as amo, pytest.raises(AmoCrmError) as failure:
        _lookalike_client(amo, clock, max_attempts=4).entity_notes("leads", 0)
    message = str(failure.value)
    assert type(failure.value) is error, message
    assert all(s in message for s in says), message
    assert TOKEN not in message and NOTES in message


def test_a_401_refreshes_the_token_once_then_carries_on(clock: FakeClock) -> None:
    class Expiring:
        refreshed = 0

        def access_token(self) -> str:
            return TOKEN if self.refreshed else "expired-token"

        def refresh(self, rejected: str) -> str:
            self.refreshed += 1
            return TOKEN

    tokens = Expiring()
    with LookalikeAmoCrm(notes={"leads": [page([_note(1)], next_href=_next(2)), page([_note(2)])]}) as amo:
        client = AmoCrmClient(amo.url, tokens, clock=clock, sleep=clock.sleep)
        fetch = client.entity_notes("leads", 0)
        seen = [r.authorization for r in amo.requests]
    assert [n.payload["id"] for n in fetch.notes] == [1, 2] and tokens.refreshed == 1
    assert seen == ["Bearer expired-token", f"Bearer {TOKEN}", f"Bearer {TOKEN}"]


def test_a_lockout_after_429s_backs_off_long_and_gives_up(clock: FakeClock) -> None:
    with LookalikeAmoCrm(answers={"*": LOCKOUT_PAGE}) as amo:
        amo.queue("*", Answer(429, problem(429, "Too many requests")))
        began = clock.now
        with pytest.raises(AmoCrmLockedOut) as failure:
            _lookalike_client(amo, clock).entity_notes("leads", 0)
        requests = len(amo.requests)
    assert requests == 4  # the 429, then three lockout answers: never a tight loop
    long_waits = [s for s in clock.sleeps if s >= 30]
    assert [round(s) for s in long_waits] == [60, 120]  # doubling, and bounded
    assert 180 <= clock.now - began < 200
    message = str(failure.value)
    assert "403" in message and "locked" in message and TOKEN not in message


def test_a_lockout_that_lifts_resumes_the_fetch(clock: FakeClock) -> None:
    said = Answer(403, problem(403, "Your IP is blocked: too many requests"))  # the body says so: no 429 needed
    with LookalikeAmoCrm(notes={"leads": [page([_note(1)])]}) as amo:
        amo.queue(NOTES, said, said)
        fetch = _lookalike_client(amo, clock).entity_notes("leads", 0)
    assert [n.payload["id"] for n in fetch.notes] == [1]
    assert [round(s) for s in clock.sleeps if s >= 30] == [60, 120]


def test_every_entity_locked_out_at_once_waits_together(clock: FakeClock) -> None:
    blocked = Answer(403, problem(403, "IP address blocked: too many requests"))
    with LookalikeAmoCrm(answers={"*": blocked}) as amo:
        began = clock.now
        with pytest.raises(AmoCrmLockedOut):
            _lookalike_client(amo, clock, lockout=LockoutBackoff(first_pause=60, answers=3)).fetch_call_notes(0)
        requests = len(amo.requests)
    assert requests <= 3 * 4  # each pause is shared: at most one retry per entity type after each
    assert clock.now - began >= 180


def test_a_forbidden_answer_without_rate_limiting_fails_at_once(clock: FakeClock) -> None:
    with LookalikeAmoCrm(answers={NOTES: Answer(403, problem(403, "Access denied"))}) as amo:
        with pytest.raises(AmoCrmAuthError):
            _lookalike_client(amo, clock).entity_notes("leads", 0)
        assert len(amo.requests) == 1 and not [s for s in clock.sleeps if s >= 1]


def test_users_skip_entries_without_a_usable_id(clock: FakeClock) -> None:
    users = [{"id": 1, "name": "Анна"}, {"id": "12", "name": " Олег "}, "a string", 5, None, [],
             {"name": "no id"}, {"id": None, "name": "null id"}, {"id": True, "name": "a boolean"},
             {"id": "x1", "name": "not a number"}, {"id": 3, "name": None}, {"id": 4, "name": {"first": "Ива"}}]
    with LookalikeAmoCrm(users=users) as amo:
        assert _lookalike_client(amo, clock).users() == {1: "Анна", 12: "Олег", 3: "", 4: ""}


@pytest.mark.parametrize("body", [{"_embedded": []}, {"_embedded": {"users": {"id": 1}}}, [], '"users"', "null"])
def test_users_of_an_odd_shape_are_none(clock: FakeClock, body: Any) -> None:
    answer = Answer(200, body, content_type="application/hal+json")
    with LookalikeAmoCrm(answers={"/api/v4/users": answer}) as amo:
        assert _lookalike_client(amo, clock).users() == {}
