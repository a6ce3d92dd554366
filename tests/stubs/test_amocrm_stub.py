"""The stub amoCRM server over real HTTP: pagination, filters, auth, OAuth, rate limit, faults, recordings."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from infra.stubs.amocrm import AmoCrmStub
from infra.stubs.audio import read_metadata
from infra.stubs.clinic_calls import ADMINISTRATORS, RECORDING_CONTENT_TYPES, DemoCall, generate_calls
from tests.stubs.helpers import running_cli

NOW = datetime(2026, 11, 28, tzinfo=UTC)
TOKEN = "stub-long-lived-token"
CALL_TYPES = {"filter[note_type][]": ["call_in", "call_out"]}


@pytest.fixture(scope="module")
def demo() -> list[DemoCall]:
    return generate_calls(120, now=NOW)


@pytest.fixture
def stub(demo: list[DemoCall]) -> Iterator[AmoCrmStub]:
    with AmoCrmStub(calls=demo, rate_limit=None) as server:
        yield server


@pytest.fixture
def api(stub: AmoCrmStub) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stub.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
        yield client


def _filed(stub: AmoCrmStub, entity_type: str) -> list[tuple[DemoCall, int]]:
    """Each note the stub files on ``entity_type`` (a call filed on several entities has a note on each), with its
    call, by note id."""
    return sorted(((c, f.note_id) for c in stub.calls for f in c.filings if f.entity_type == entity_type),
                  key=lambda pair: pair[1])


def _ids(notes: list[dict[str, Any]]) -> list[int]:
    return [int(n["id"]) for n in notes]  # some notes carry their ids as strings, as some integrations write them


def _all_pages(client: httpx.Client, first: str, params: Any = None) -> tuple[list[dict[str, Any]], int]:
    notes: list[dict[str, Any]] = []
    pages = 0
    response = client.get(first, params=params)
    while response.status_code == 200:
        pages += 1
        body = response.json()
        notes.extend(body["_embedded"]["notes"])
        if "next" not in body["_links"]:
            break
        response = client.get(body["_links"]["next"]["href"])
    assert response.status_code in (200, 204)
    return notes, pages


# ------------------------------------------------------------------------------------------- notes


def test_pagination_follows_next_links(stub: AmoCrmStub, api: httpx.Client) -> None:
    expected = [note_id for _, note_id in _filed(stub, "leads")]
    assert len(expected) > 50
    first = api.get("/api/v4/leads/notes", params={**CALL_TYPES, "limit": 25})
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("application/hal+json")
    body = first.json()
    assert body["_page"] == 1
    assert body["_links"]["self"]["href"].startswith(f"{stub.url}/api/v4/leads/notes?")
    next_href = body["_links"]["next"]["href"]
    assert next_href.startswith(stub.url)
    assert "page=2" in next_href and "limit=25" in next_href and "call_out" in next_href

    notes, pages = _all_pages(api, "/api/v4/leads/notes", {**CALL_TYPES, "limit": 25})
    assert _ids(notes) == expected, "every lead note once, ordered by id"
    assert pages == math.ceil(len(expected) / 25)
    last = api.get("/api/v4/leads/notes", params={**CALL_TYPES, "limit": 25, "page": pages})
    assert "next" not in last.json()["_links"]
    assert last.json()["_page"] == pages

    empty = api.get("/api/v4/leads/notes", params={**CALL_TYPES, "limit": 25, "page": pages + 1})
    assert empty.status_code == 204
    assert empty.content == b""


def test_every_entity_type_together_holds_every_call(stub: AmoCrmStub, api: httpx.Client) -> None:
    seen: list[int] = []
    uniqs: Counter[str] = Counter()
    for entity in ("leads", "contacts", "companies", "customers"):
        notes, _ = _all_pages(api, f"/api/v4/{entity}/notes", {**CALL_TYPES, "limit": 250})
        assert notes, entity
        seen.extend(_ids(notes))
        uniqs.update(n["params"]["uniq"] for n in notes)
        for note in notes:
            assert note["note_type"] in ("call_in", "call_out")
            assert note["account_id"] > 0 and note["group_id"] == 0
            assert note["params"]["source"] == "Mango Office"
    assert sorted(seen) == sorted(f.note_id for c in stub.calls for f in c.filings) and len(seen) == stub.note_count
    assert set(uniqs) == {c.uniq for c in stub.calls}, "every call; one filed on several entities has one uniq"
    assert set(uniqs.values()) >= {1, 2}, "some calls are filed on a lead and its contact"
    by_id = {note_id: c for c, note_id in _filed(stub, "contacts")}
    notes, _ = _all_pages(api, "/api/v4/contacts/notes", {"limit": 250})
    for note in notes:
        call = by_id[int(note["id"])]
        assert ("link" in note["params"]) == call.has_recording
        if call.has_recording:
            assert note["params"]["link"] == f"{stub.url}/recordings/{call.uniq}.{call.recording_format}"


def test_notes_carry_the_shapes_real_accounts_send(stub: AmoCrmStub, api: httpx.Client) -> None:
    names = {a.name for a in ADMINISTRATORS}
    phones = {a.phone for a in ADMINISTRATORS}
    seen: Counter[str] = Counter()
    for entity in ("leads", "contacts", "companies", "customers"):
        by_id = {note_id: c for c, note_id in _filed(stub, entity)}
        notes, _ = _all_pages(api, f"/api/v4/{entity}/notes", {"limit": 250})
        for note in notes:
            call, params = by_id[int(note["id"])], note["params"]
            responsible = params["call_responsible"]
            expected = {"id": call.responsible_user_id, "id_text": str(call.responsible_user_id),
                        "name": next(a.name for a in ADMINISTRATORS if a.id == call.responsible_user_id),
                        "phone": next(a.phone for a in ADMINISTRATORS if a.id == call.responsible_user_id)}
            assert responsible == expected[call.responsible_as]
            kind = "name" if responsible in names else "phone" if responsible in phones else type(responsible).__name__
            seen[kind] += 1
            duration = params["duration"]
            assert int(float(duration)) == call.duration
            seen[f"duration {type(duration).__name__}{'.5' if str(duration).endswith('.5') else ''}"] += 1
            seen[f"id {type(note['id']).__name__}"] += 1
            assert isinstance(note["id"], str) == isinstance(note["entity_id"], str) == call.ids_as_text
    assert set(seen) == {"name", "phone", "int", "str", "duration int", "duration str", "duration str.5", "id int",
                         "id str"}, seen


def test_an_account_without_customers_answers_an_error_for_them(stub: AmoCrmStub, api: httpx.Client) -> None:
    assert api.get("/api/v4/account").json()["customers_mode"] == "periodicity"
    on_customers = [c for c in stub.calls if c.entity_type == "customers"]
    assert on_customers and len(stub.served_calls()) == len(stub.calls)
    stub.configure(customers_enabled=False)
    refused = api.get("/api/v4/customers/notes", params=CALL_TYPES)
    assert refused.status_code == 402 and refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["status"] == 402 and "ustomers" in refused.json()["detail"]
    assert api.get(f"/api/v4/customers/notes/{on_customers[0].note_id}").status_code == 402
    assert api.get("/api/v4/leads/notes", params=CALL_TYPES).status_code == 200
    assert api.get("/api/v4/account").json()["customers_mode"] == "disabled"
    assert len(stub.served_calls()) == len(stub.calls) - len(on_customers)


def test_note_type_filters(stub: AmoCrmStub, api: httpx.Client) -> None:
    leads = _filed(stub, "leads")
    for params, wanted in (
        ({"filter[note_type]": "call_in"}, {"call_in"}),
        ({"filter[note_type][0]": "call_out"}, {"call_out"}),
        ({"filter[note_type][]": "call_in"}, {"call_in"}),
        ({"filter[note_type][0]": "call_in", "filter[note_type][1]": "call_out"}, {"call_in", "call_out"}),
        ({"filter[note_type]": "call_in,call_out"}, {"call_in", "call_out"}),
    ):
        notes, _ = _all_pages(api, "/api/v4/leads/notes", {**params, "limit": 250})
        assert _ids(notes) == [note_id for c, note_id in leads if c.note_type in wanted], params
    none = api.get("/api/v4/leads/notes", params={"filter[note_type][]": "common"})
    assert none.status_code == 204


def test_updated_at_filters(stub: AmoCrmStub, api: httpx.Client) -> None:
    leads = _filed(stub, "leads")
    stamps = sorted(c.updated_at for c, _ in leads)
    low, high = stamps[len(stamps) // 4], stamps[len(stamps) // 2]
    notes, _ = _all_pages(
        api,
        "/api/v4/leads/notes",
        {
            **CALL_TYPES,
            "filter[updated_at][from]": low,
            "filter[updated_at][to]": high,
            "limit": 250,
        },
    )
    expected = [note_id for c, note_id in leads if low <= c.updated_at <= high]
    assert _ids(notes) == expected
    assert 0 < len(expected) < len(leads)
    notes, _ = _all_pages(api, "/api/v4/leads/notes", {"filter[updated_at]": high, "limit": 250})
    assert _ids(notes) == [note_id for c, note_id in leads if c.updated_at >= high]
    assert api.get("/api/v4/leads/notes", params={"filter[updated_at][from]": stamps[-1] + 1}).status_code == 204


def test_bad_queries_answer_400_json(api: httpx.Client) -> None:
    assert api.get("/api/v4/leads/notes", params={"limit": 250}).status_code == 200
    for params in ({"limit": 251}, {"limit": 0}, {"page": 0}, {"page": "x"}, {"filter[updated_at][from]": "yesterday"}):
        response = api.get("/api/v4/leads/notes", params=params)
        assert response.status_code == 400, params
        problem = response.json()
        assert problem["status"] == 400 and problem["title"] == "Bad Request" and problem["detail"]
    assert "250" in api.get("/api/v4/leads/notes", params={"limit": 1000}).json()["detail"]
    assert api.get("/api/v4/tasks/notes").status_code == 404
    assert api.get("/api/v4/nothing").json()["status"] == 404
    assert api.post("/api/v4/leads/notes", json=[{"note_type": "common"}]).status_code == 405
    assert api.get("/favicon.ico").status_code == 404


def test_users_and_account(stub: AmoCrmStub, api: httpx.Client) -> None:
    users = api.get("/api/v4/users").json()["_embedded"]["users"]
    assert len(users) >= 4
    assert {u["id"] for u in users} == {a.id for a in ADMINISTRATORS}
    assert {c.responsible_user_id for c in stub.calls} <= {u["id"] for u in users}
    assert all(u["name"] for u in users)
    account = api.get("/api/v4/account").json()
    assert account["name"] == "Клиника «Здоровье»"
    assert account["subdomain"] == "demo"
    assert account["timezone"] == "Europe/Moscow"
    assert isinstance(account["id"], int)


# -------------------------------------------------------------------------------------------- auth


def test_api_needs_a_valid_bearer_token(stub: AmoCrmStub) -> None:
    with httpx.Client(base_url=stub.url) as client:
        for headers in (
            {},
            {"Authorization": "Bearer nope"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": "Bearer"},
        ):
            response = client.get("/api/v4/leads/notes", headers=headers)
            assert response.status_code == 401, headers
            problem = response.json()
            assert problem["title"] == "Unauthorized" and problem["status"] == 401 and problem["detail"]
        assert client.get("/api/v4/account", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def _refresh(client: httpx.Client, token: str, *, secret: str = "stub-secret", as_form: bool = False) -> httpx.Response:
    payload = {
        "client_id": "stub-client",
        "client_secret": secret,
        "grant_type": "refresh_token",
        "refresh_token": token,
        "redirect_uri": "https://callsight.example/oauth",
    }
    if as_form:
        return client.post("/oauth2/access_token", data=payload)
    return client.post("/oauth2/access_token", json=payload)


def test_oauth_refresh_tokens_are_single_use(stub: AmoCrmStub) -> None:
    with httpx.Client(base_url=stub.url) as client:
        first = _refresh(client, "stub-refresh-0")
        assert first.status_code == 200
        pair = first.json()
        assert pair["token_type"] == "Bearer" and pair["expires_in"] == 86400
        assert pair["refresh_token"] != "stub-refresh-0"
        bearer = {"Authorization": f"Bearer {pair['access_token']}"}
        assert client.get("/api/v4/account", headers=bearer).status_code == 200

        reused = _refresh(client, "stub-refresh-0")
        assert reused.status_code == 400
        assert reused.json()["hint"] == "Token has been revoked"
        assert _refresh(client, "made-up").status_code == 400
        assert _refresh(client, pair["refresh_token"], secret="wrong").status_code == 401

        second = _refresh(client, pair["refresh_token"], as_form=True)
        assert second.status_code == 200, second.text
        assert stub.refresh_tokens == {second.json()["refresh_token"]}
        assert _refresh(client, pair["refresh_token"]).json()["hint"] == "Token has been revoked"

        stub.expire_access_tokens()
        expired = client.get("/api/v4/account", headers={"Authorization": f"Bearer {second.json()['access_token']}"})
        assert expired.status_code == 401

        code = {
            "client_id": "stub-client",
            "client_secret": "stub-secret",
            "grant_type": "authorization_code",
            "code": "stub-auth-code",
            "redirect_uri": "https://callsight.example/oauth",
        }
        assert client.post("/oauth2/access_token", json=code).status_code == 200
        assert client.post("/oauth2/access_token", json=code).status_code == 400
        assert (
            client.post(
                "/oauth2/access_token", content=b"{not json", headers={"Content-Type": "application/json"}
            ).status_code
            == 400
        )
        assert client.post("/oauth2/access_token", json={**code, "grant_type": "password"}).status_code == 400
    assert stub.stats()["token_refreshes"] == 3


def test_concurrent_refreshes_with_one_token_succeed_once(stub: AmoCrmStub) -> None:
    results: list[int] = []
    barrier = threading.Barrier(6)

    def refresh() -> None:
        with httpx.Client(base_url=stub.url) as client:
            barrier.wait()
            results.append(_refresh(client, "stub-refresh-0").status_code)

    threads = [threading.Thread(target=refresh) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [200, 400, 400, 400, 400, 400]


# ------------------------------------------------------------------------------ rate limit, faults


def test_rate_limit_rejects_bursts_and_allows_six_per_second(demo: list[DemoCall]) -> None:
    with AmoCrmStub(calls=demo, rate_limit=7) as stub:
        barrier = threading.Barrier(12)
        statuses: list[int] = []

        def hit() -> None:
            with httpx.Client(base_url=stub.url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
                barrier.wait()
                statuses.append(client.get("/api/v4/account").status_code)

        threads = [threading.Thread(target=hit) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert Counter(statuses) == {200: 7, 429: 5}
        stats = stub.stats()
        assert stats["rate_limited"] == 5 and stats["requests"] == 12 and stats["by_status"] == {200: 7, 429: 5}

        time.sleep(1.05)
        stub.reset_stats()
        with httpx.Client(base_url=stub.url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            start = time.monotonic()
            for i in range(13):
                time.sleep(max(0.0, start + i / 6 - time.monotonic()))
                response = client.get("/api/v4/leads/notes", params={"limit": 5})
                assert response.status_code == 200, response.text
            # recordings are the telephony provider's: outside the API rate limit
            recorded = [c for c in stub.calls if c.has_recording][:12]
            assert all(client.get(c.recording_path).status_code == 200 for c in recorded)
        stats = stub.stats()
        assert stats["rate_limited"] == 0 and stats["requests"] == 13
        times = stats["request_times"]
        assert len(times) == 13
        assert all(sum(1 for t in times if s <= t < s + 1.0) <= 7 for s in times)


def test_fault_injection_produces_every_kind(stub: AmoCrmStub, api: httpx.Client) -> None:
    stub.configure(fault_rate=1.0)
    kinds: Counter[str] = Counter()
    for _ in range(60):
        response = api.get("/api/v4/leads/notes", params={"limit": 10})
        if response.status_code == 200:
            with pytest.raises(json.JSONDecodeError):
                json.loads(response.content)
            kinds["malformed"] += 1
        else:
            kinds[str(response.status_code)] += 1
            if response.status_code == 502:
                assert b"<html>" in response.content
    assert set(kinds) == {"500", "502", "503", "429", "malformed"}
    assert stub.stats()["faults"] == dict(kinds)
    assert stub.stats()["rate_limited"] == 0, "injected 429s are faults, not rate limiting"

    stub.configure(fault_rate=0.3)
    statuses = [api.get("/api/v4/account").status_code for _ in range(100)]
    failures = sum(1 for s in statuses if s != 200)
    assert 10 <= failures <= 50
    stub.configure(fault_rate=0.0)
    assert all(api.get("/api/v4/account").status_code == 200 for _ in range(20))


def test_latency_is_applied_to_api_requests(stub: AmoCrmStub, api: httpx.Client) -> None:
    api.get("/api/v4/account")
    stub.configure(latency_ms=200)
    start = time.monotonic()
    assert api.get("/api/v4/account").status_code == 200
    assert time.monotonic() - start >= 0.2
    stub.configure(latency_ms=0)
    start = time.monotonic()
    api.get("/api/v4/account")
    assert time.monotonic() - start < 0.15
    with pytest.raises(TypeError):
        stub.configure(latency=5)
    with pytest.raises(ValueError):
        stub.configure(fault_rate=2)


# -------------------------------------------------------------------------------------- recordings


def test_recordings_are_served_in_their_format(stub: AmoCrmStub, api: httpx.Client) -> None:
    notes, _ = _all_pages(api, "/api/v4/leads/notes", {**CALL_TYPES, "limit": 250})
    by_uniq = {c.uniq: c for c in stub.calls}
    with_link = sorted((n for n in notes if "link" in n["params"]), key=lambda n: by_uniq[n["params"]["uniq"]].duration)
    one_of_each = list({by_uniq[n["params"]["uniq"]].recording_format: n for n in reversed(with_link)}.values())
    assert len(one_of_each) == 3, "MP3, WAV and OGG recordings"
    requests_before = stub.stats()["requests"]
    with httpx.Client() as plain:  # no Authorization: recording links are the provider's
        for note in one_of_each:
            call = by_uniq[note["params"]["uniq"]]
            response = plain.get(note["params"]["link"])
            assert response.status_code == 200
            assert note["params"]["link"].endswith(f".{call.recording_format}")
            assert response.headers["content-type"] == RECORDING_CONTENT_TYPES[call.recording_format]
            assert response.content[:4] == {"mp3": b"ID3\x04", "wav": b"RIFF", "ogg": b"OggS"}[call.recording_format]
            assert f'filename="{call.uniq}.{call.recording_format}"' in response.headers["content-disposition"]
            metadata = read_metadata(response.content, call.recording_format)
            assert metadata is not None
            assert metadata["uniq"] == note["params"]["uniq"]
            assert metadata["scenario"]["script"]
            assert plain.get(note["params"]["link"]).content == response.content, "the same file again"
        assert plain.get(f"{stub.url}/recordings/00000000-0000-4000-8000-000000000000.mp3").status_code == 404
        unrecorded = next(c for c in stub.calls if not c.has_recording)
        assert plain.get(f"{stub.url}{unrecorded.recording_path}").status_code == 404
    stats = stub.stats()
    assert stats["recording_downloads"] == 6
    assert stats["requests"] == requests_before, "downloads are not API requests"


def test_broken_links_are_a_deterministic_share(stub: AmoCrmStub) -> None:
    stub.configure(broken_link_rate=0.5)
    recorded = [c for c in stub.calls if c.has_recording]
    with httpx.Client(base_url=stub.url) as client:
        first = {c.uniq: client.get(c.recording_path).status_code for c in recorded}
        again = {c.uniq: client.get(c.recording_path).status_code for c in recorded}
    assert first == again
    counts = Counter(first.values())
    assert set(counts) == {200, 403, 404}
    assert 0.3 <= (counts[403] + counts[404]) / len(recorded) <= 0.7
    assert all((first[c.uniq] != 200) == stub.is_link_broken(c.uniq) for c in recorded)
    stub.configure(broken_link_rate=0.0)
    with httpx.Client(base_url=stub.url) as client:
        assert all(client.get(c.recording_path).status_code == 200 for c in recorded[:5])


# ----------------------------------------------------------------------------------- data changes


def test_update_note_bumps_updated_at_for_resync(stub: AmoCrmStub, api: httpx.Client) -> None:
    target = next(c for c in stub.calls if c.entity_type == "leads" and c.has_recording and not c.copies
                  and not c.ids_as_text and c.duration_as == "int")
    since = int(time.time())
    changed = stub.update_note(target.note_id, duration=target.duration + 42, call_result="Перезвонить")
    assert changed.updated_at >= since and changed.updated_at > target.updated_at
    notes, _ = _all_pages(api, "/api/v4/leads/notes", {**CALL_TYPES, "filter[updated_at][from]": since})
    assert [n["id"] for n in notes] == [target.note_id]
    assert notes[0]["params"]["duration"] == target.duration + 42
    assert notes[0]["params"]["call_result"] == "Перезвонить"
    assert notes[0]["updated_at"] == changed.updated_at

    stub.update_note(target.note_id, link=None)
    note = api.get(f"/api/v4/leads/notes/{target.note_id}").json()
    assert "link" not in note["params"]
    assert api.get(target.recording_path).status_code == 404

    extra = generate_calls(3, now=NOW, seed=99)
    stub.add_calls(extra)
    assert {c.note_id for c in extra} <= {c.note_id for c in stub.calls}
    entity = extra[0].entity_type
    notes, _ = _all_pages(api, f"/api/v4/{entity}/notes", {"limit": 250})
    assert extra[0].note_id in _ids(notes)
    with pytest.raises(KeyError):
        stub.update_note(1, duration=5)


# -------------------------------------------------------------------------------------- lifecycle


def test_stop_frees_the_port_and_the_server_is_quiet(demo: list[DemoCall], capfd: pytest.CaptureFixture[str]) -> None:
    stub = AmoCrmStub(calls=demo).start()
    port = stub.port
    with httpx.Client(base_url=stub.url) as client:
        assert client.get("/api/v4/account").status_code == 401
        assert client.get("/api/v4/account", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert client.get("/oops%zz?%%%").status_code in (400, 404)
        stub.stop()
        with pytest.raises(httpx.TransportError):
            client.get("/api/v4/account", headers={"Authorization": f"Bearer {TOKEN}"})
    with AmoCrmStub(calls=demo[:3], port=port) as again:  # the port is free for the next server
        assert again.port == port
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_cli_serves_until_sigterm() -> None:
    with running_cli("infra.stubs.amocrm", "--port", "0", "--calls", "30") as url:
        response = httpx.get(
            f"{url}/api/v4/contacts/notes", params={"limit": 250}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert response.status_code in (200, 204)
        users = httpx.get(f"{url}/api/v4/users", headers={"Authorization": f"Bearer {TOKEN}"})
        assert users.status_code == 200
