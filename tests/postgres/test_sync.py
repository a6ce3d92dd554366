"""PostgresSync against a real embedded PostgreSQL: exact rows, idempotence, concurrency, outages, odd input."""

from __future__ import annotations

import copy
import hashlib
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from callsight.errors import CallsightError
from callsight.postgres import PostgresSync, PostgresUnavailable, SyncSummary, migrate
from callsight.postgres.rows import CallRows, Skip, call_rows, report_rows, transcript_line_rows
from infra.bench_postgres import SyntheticRange, database_url, dump_tables, synthetic_range
from infra.postgres import LocalPostgres
from tests.postgres.conftest import expected_counts, row_versions, table_rows

SECRET = "Sup3r-Secret-pw"
CHILDREN = ("transcript_lines", "analyses", "criterion_scores", "recommendations")


def sync(url: str, data: SyntheticRange, **options: Any) -> SyncSummary:
    summary: SyncSummary = data.sync(PostgresSync(url, **options))
    return summary


def run_in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = target()
        except BaseException as exc:  # inspected by the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def socket_host(url: str) -> str:
    return str(conninfo_to_dict(url)["host"])


# -------------------------------------------------------------------------------------------- rows and reruns
def test_a_sync_writes_exactly_the_rows_of_the_items_and_a_second_run_changes_nothing(db_url: str) -> None:
    data = synthetic_range(230, seed=1)
    expected = expected_counts(data)
    first = sync(db_url, data, batch_size=64)
    assert first.upserted == expected
    assert first.unchanged == dict.fromkeys(expected, 0)
    assert set(first.deleted.values()) == {0}
    assert first.batches == -(-len(data.calls) // 64) and first.calls == len(data.calls)
    assert first.migrations_applied == ["0001_initial.sql"]
    assert {t: len(rows) for t, rows in table_rows(db_url).items()} == expected
    dumps, versions = dump_tables(db_url), row_versions(db_url)

    second = sync(db_url, data, batch_size=64)
    assert second.upserted == dict.fromkeys(expected, 0)
    assert second.unchanged == expected
    assert set(second.deleted.values()) == {0} and second.migrations_applied == []
    assert dump_tables(db_url) == dumps  # byte-identical COPY text of every table
    assert row_versions(db_url) == versions  # and no row was even rewritten (same xmin)

    with psycopg.connect(db_url) as conn:
        runs = conn.execute("SELECT client_id, start_date, end_date, status, batches, rows_written, rows_unchanged,"
                            " finished_at >= started_at FROM sync_runs ORDER BY id").fetchall()
    clinic = data.clinic["client_id"]
    assert runs == [(clinic, data.start_date, data.end_date, "succeeded", first.batches, first.upserted,
                     first.unchanged, True),
                    (clinic, data.start_date, data.end_date, "succeeded", second.batches, second.upserted,
                     second.unchanged, True)]
    assert set(first.as_dict()) == {"client_id", "start_date", "end_date", "upserted", "unchanged", "deleted",
                                    "calls", "skipped_items", "transcripts_missing", "transcripts_failed",
                                    "batches", "migrations_applied", "seconds"}


def test_call_columns_follow_the_items_and_the_phone_is_only_hashed(db_url: str) -> None:
    data = synthetic_range(120, seed=2)
    sync(db_url, data)
    with psycopg.connect(db_url) as conn:
        stored = {r[0]: r for r in conn.execute(
            "SELECT call_id, call_time, local_day, duration_s, administrator, phone_hash, recording_status,"
            " recording_error, transcribe_status, analyze_status, entity_id FROM calls")}
    client = data.clinic["client_id"]
    for item in data.calls:
        status = ("no_recording" if item.get("sync_skip") == "no_recording" else
                  "too_short" if item.get("sync_skip") == "too_short" else
                  "failed" if item["sync_status"] == "failed" else
                  "downloaded" if item.get("recording_key") else "pending")
        digits = re.sub(r"\D", "", item["phone"])
        assert stored[item["call_id"]][1:] == (
            datetime.fromisoformat(item["call_time"]), date.fromisoformat(item["day"]), item["duration"],
            item["administrator"] or None, hashlib.sha256(f"{client}:{digits}".encode()).hexdigest(), status,
            item.get("sync_error"), item.get("transcribe_status"), item.get("analyze_status"), item["entity_id"])
    everything = b"".join(dump_tables(db_url).values())
    assert not any(re.sub(r"\D", "", c["phone"]).encode() in everything for c in data.calls)


def test_bi_views_aggregate_the_analysed_calls(db_url: str) -> None:
    data = synthetic_range(300, seed=3)
    sync(db_url, data)
    analysed = [c for c in data.calls if "analysis" in c]
    daily: dict[date, list[bool]] = defaultdict(list)
    types: dict[str, list[dict[str, Any]]] = defaultdict(list)
    weekly: dict[tuple[str | None, date], list[dict[str, Any]]] = defaultdict(list)
    for c in data.calls:
        day = date.fromisoformat(c["day"])
        monday = date.fromordinal(day.toordinal() - day.weekday())
        weekly[(c["administrator"] or None, monday)].append(c)
    for c in analysed:
        daily[date.fromisoformat(c["day"])].append(c["booked"])
        types[c["call_type"]].append(c)
    with psycopg.connect(db_url) as conn:
        got_daily = {r[0]: r[1:] for r in conn.execute(
            "SELECT local_day, analysed_calls, booked, conversion FROM v_booking_conversion_daily")}
        got_types = {r[0]: r[1:] for r in conn.execute(
            "SELECT call_type, calls, booked_share, average_score FROM v_call_types")}
        got_weekly = {(r[0], r[1]): r[2:] for r in conn.execute(
            "SELECT administrator, week_start, calls, analysed_calls, booked_share, average_score"
            " FROM v_admin_weekly")}
    assert {d: (n, b, round(float(conv), 9)) for d, (n, b, conv) in got_daily.items()} == {
        d: (len(v), sum(v), round(sum(v) / len(v), 9)) for d, v in daily.items()}
    assert {t: (n, round(float(s), 9), round(float(a), 9)) for t, (n, s, a) in got_types.items()} == {
        t: (len(v), round(sum(c["booked"] for c in v) / len(v), 9),
            round(sum(c["overall_score"] for c in v) / len(v), 9)) for t, v in types.items()}
    expected_weekly = {}
    for key, calls in weekly.items():
        done = [c for c in calls if "analysis" in c]
        expected_weekly[key] = (len(calls), len(done),
                                round(sum(c["booked"] for c in done) / len(done), 9) if done else None,
                                round(sum(c["overall_score"] for c in done) / len(done), 9) if done else None)
    assert {k: (n, a, None if s is None else round(float(s), 9), None if v is None else round(float(v), 9))
            for k, (n, a, s, v) in got_weekly.items()} == expected_weekly


# -------------------------------------------------------------------------------------------- concurrency
def test_two_syncs_of_one_range_at_once_end_as_one_sync(new_db: Callable[[], str]) -> None:
    url, clean = new_db(), new_db()
    data = synthetic_range(200, seed=4)
    expected = expected_counts(data)
    start = threading.Barrier(2)

    def one() -> SyncSummary:
        start.wait()
        return sync(url, data, batch_size=40)

    runs = [run_in_thread(one) for _ in range(2)]
    for thread, _ in runs:
        thread.join(60)
    assert [box.get("error") for _, box in runs] == [None, None]
    summaries = [box["result"] for _, box in runs]
    # the clinic lock serialised them: one wrote every row, the other found them all in place
    assert sorted(sum(s.upserted.values()) for s in summaries) == [0, sum(expected.values())]
    assert {t: len(rows) for t, rows in table_rows(url).items()} == expected
    sync(clean, data)
    assert dump_tables(url) == dump_tables(clean)


def test_different_clinics_sync_in_parallel_and_one_clinic_waits_its_turn(db_url: str) -> None:
    a, b = synthetic_range(60, client_id="clinic-a", seed=5), synthetic_range(60, client_id="clinic-b", seed=6)
    paused, release = threading.Event(), threading.Event()

    def hold(batch: int) -> None:
        if batch == 1:
            paused.set()
            release.wait(30)

    first_a, first_box = run_in_thread(lambda: sync(db_url, a, batch_size=20, after_batch=hold))
    assert paused.wait(30), "clinic A's sync did not reach its first batch"
    other, other_box = run_in_thread(lambda: sync(db_url, b, batch_size=20))
    other.join(30)
    assert not other.is_alive() and "error" not in other_box  # clinic B did not wait for clinic A
    second_a, second_box = run_in_thread(lambda: sync(db_url, a, batch_size=20))
    deadline = time.monotonic() + 10
    waiting = 0
    with psycopg.connect(db_url) as conn:
        while waiting == 0 and time.monotonic() < deadline:
            waiting = int(conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                       " AND NOT granted").fetchone()[0])  # type: ignore[index]
            time.sleep(0.05)
    assert waiting == 1 and second_a.is_alive()  # the second sync of clinic A waits for the first
    release.set()
    for thread in (first_a, second_a):
        thread.join(30)
    assert "error" not in first_box and "error" not in second_box
    assert sum(second_box["result"].upserted.values()) == 0
    with psycopg.connect(db_url) as conn:
        per_clinic = dict(conn.execute("SELECT client_id, count(*) FROM calls GROUP BY client_id").fetchall())
    assert per_clinic == {"clinic-a": len(a.calls), "clinic-b": len(b.calls)}


# -------------------------------------------------------------------------------------------- outages
def test_database_stopped_between_batches_then_rerun_gives_the_rows_of_a_clean_run(tmp_path: Path) -> None:
    datadir = tmp_path / "pgdata"
    server = LocalPostgres(url="", datadir=datadir)
    base = server.start()
    restarted: LocalPostgres | None = None
    try:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute("CREATE DATABASE outage")
            conn.execute("CREATE DATABASE clean")
        url = database_url(base, "outage")
        data = synthetic_range(150, seed=7)

        def stop_after_first(batch: int) -> None:
            if batch == 1:
                server.stop()

        with pytest.raises(PostgresUnavailable) as caught:
            sync(url, data, batch_size=50, after_batch=stop_after_first)
        message = str(caught.value)
        assert "\n" not in message and f"{socket_host(url)}:5432/outage" in message
        assert caught.value.database == "outage" and caught.value.host == socket_host(url)
        assert isinstance(caught.value, CallsightError)

        restarted = LocalPostgres(url="", datadir=datadir)
        base = restarted.start()
        url = database_url(base, "outage")
        with psycopg.connect(url) as conn:  # the first batch committed whole, nothing after it
            assert conn.execute("SELECT count(*) FROM calls").fetchone() == (50,)
            assert conn.execute("SELECT status, finished_at FROM sync_runs").fetchall() == [("running", None)]
        again = sync(url, data, batch_size=50)
        assert again.unchanged["calls"] == 50 and again.upserted["calls"] == len(data.calls) - 50
        clean = database_url(base, "clean")
        sync(clean, data, batch_size=50)
        assert dump_tables(url) == dump_tables(clean)
    finally:
        (restarted or server).stop()
        server.stop()


def test_connection_killed_inside_a_batch_rolls_the_batch_back(new_db: Callable[[], str]) -> None:
    url, clean = new_db(), new_db()
    data = synthetic_range(80, seed=8)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    blocker = psycopg.connect(url)
    try:
        blocker.execute("LOCK TABLE recommendations IN EXCLUSIVE MODE")  # the batch stops at its recommendations
        thread, box = run_in_thread(lambda: sync(url, data, batch_size=1000))
        deadline, pid = time.monotonic() + 15, None
        with psycopg.connect(url, autocommit=True) as admin:
            while pid is None and time.monotonic() < deadline:
                row = admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name ="
                                    " 'callsight-postgres-sync' AND wait_event_type = 'Lock'").fetchone()
                pid = row[0] if row else None
                time.sleep(0.02)
            assert pid is not None, "the sync never waited on the locked table"
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            thread.join(30)
    finally:
        blocker.close()
    assert isinstance(box.get("error"), PostgresUnavailable)
    assert "lost the connection" in str(box["error"]) and f":5432/{conninfo_to_dict(url)['dbname']}" in str(
        box["error"])
    with psycopg.connect(url) as conn:  # the calls it had already upserted were rolled back with the batch
        assert conn.execute("SELECT count(*) FROM calls").fetchone() == (0,)
    sync(url, data)
    sync(clean, data)
    assert dump_tables(url) == dump_tables(clean)


@pytest.fixture(scope="module")
def password_role(pg_server: LocalPostgres) -> str:
    """Role ``bi`` (password 'the-right-one') that must log in with a password over the server's socket."""
    url = str(pg_server.url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS bi")
        conn.execute("CREATE ROLE bi LOGIN PASSWORD 'the-right-one'")
        hba = Path(str(conn.execute("SHOW hba_file").fetchone()[0]))  # type: ignore[index]
        hba.write_text("local all bi scram-sha-256\n" + hba.read_text())
        conn.execute("SELECT pg_reload_conf()")
    wrong = f"postgresql://bi:wrong@/postgres?host={socket_host(url)}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the reload is asynchronous
        try:
            psycopg.connect(wrong).close()
        except psycopg.OperationalError:
            break
        time.sleep(0.05)
    return "bi"


@pytest.mark.parametrize("case", ["nothing listening", "unknown database", "login refused",
                                  "password in the driver's message"])
def test_unreachable_database_is_named_without_the_password(case: str, pg_server: LocalPostgres,
                                                            password_role: str) -> None:
    socket = socket_host(str(pg_server.url))
    url, host, port, database, problem = {
        "nothing listening": (f"postgresql://bi:{SECRET}@127.0.0.1:1/callsight", "127.0.0.1", "1", "callsight",
                              "is unreachable: connection refused"),
        "unknown database": (f"postgresql://postgres:{SECRET}@/no_such_db?host={socket}", socket, "5432",
                             "no_such_db", 'refused the connection: database "no_such_db" does not exist'),
        "login refused": (f"postgresql://{password_role}:{SECRET}@/postgres?host={socket}", socket, "5432",
                          "postgres", f'refused the login: password authentication failed for user "{password_role}"'),
        "password in the driver's message": (f"postgresql://{SECRET}:{SECRET}@/postgres?host={socket}", socket,
                                             "5432", "postgres", 'refused the login: role "***" does not exist'),
    }[case]
    target = PostgresSync(url, connect_timeout=3)
    with pytest.raises(PostgresUnavailable) as caught:
        synthetic_range(3).sync(target)
    error = caught.value
    assert str(error) == f"PostgreSQL at {host}:{port}/{database} {problem}"
    assert (error.host, error.port, error.database) == (host, port, database)
    assert SECRET not in str(error) and SECRET not in repr(error) and SECRET not in repr(target)
    assert error.__cause__ is None and error.__suppress_context__  # the driver's exception is not chained


def test_a_url_encoded_password_and_a_malformed_url_are_never_shown() -> None:
    url = "postgresql://S3cr%40t-pw:S3cr%40t-pw@127.0.0.1:1/callsight"  # user and password "S3cr@t-pw"
    with pytest.raises(PostgresUnavailable) as caught:
        PostgresSync(url, connect_timeout=2).connect()
    assert "S3cr@t" not in str(caught.value) and "S3cr%40t" not in str(caught.value)
    with pytest.raises(PostgresUnavailable) as malformed:
        PostgresSync(f"host=db.example password='{SECRET}")  # unterminated quote
    assert "malformed" in str(malformed.value) and SECRET not in str(malformed.value)


def test_the_url_reaches_the_driver_unchanged_so_tls_settings_apply() -> None:
    url = f"postgresql://bi:{SECRET}@db.example:6432/callsight?sslmode=verify-full&sslrootcert=/opt/rds.pem"
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def connect(*args: Any, **kwargs: Any) -> psycopg.Connection[Any]:
        seen.append((args, kwargs))
        raise psycopg.OperationalError(f"SSL error: certificate verify failed (password {SECRET})")

    with pytest.raises(PostgresUnavailable) as caught:
        PostgresSync(url, connect_timeout=4.2, connect=connect).connect()
    assert seen[0][0] == (url,) and seen[0][1]["connect_timeout"] == 5 and seen[0][1]["autocommit"] is True
    assert str(caught.value) == ("PostgreSQL at db.example:6432/callsight is unreachable: "
                                 "SSL error: certificate verify failed (password ***)")


# -------------------------------------------------------------------------------------------- changes
def test_a_changed_call_updates_exactly_its_rows_and_removes_stale_children(new_db: Callable[[], str]) -> None:
    url, clean = new_db(), new_db()
    data = synthetic_range(40, seed=9, analysed_only=True)
    sync(url, data)
    before = table_rows(url)
    changed = copy.deepcopy(data)
    shorter, rescored, fewer, reset, longer = (c for c in changed.calls[:5])
    lines = changed.transcripts[shorter["transcript_key"]]["lines"]
    cut = len(lines) - 5
    del lines[5:]
    criteria = rescored["analysis"]["criteria"]
    criteria["greeting"]["score"] = (criteria["greeting"]["score"] + 1) % 11
    criteria["empathy"] = {"score": 7, "evidence": "Понимаю вас."}
    dropped = len(fewer["analysis"]["recommendations"]) - 1
    del fewer["analysis"]["recommendations"][1:]
    reset_criteria, reset_advice = len(reset["analysis"]["criteria"]), len(reset["analysis"]["recommendations"])
    for key in ("analysis", "call_type", "booked", "overall_score", "patient_sentiment", "analysis_model",
                "analyzed_at"):
        del reset[key]
    reset["analyze_status"] = "pending"
    longer["duration"] += 30

    summary = sync(url, changed)
    assert summary.upserted == {**dict.fromkeys(summary.upserted, 0), "calls": 2, "criterion_scores": 2}
    assert summary.deleted == {"transcript_lines": cut, "analyses": 1, "criterion_scores": reset_criteria,
                               "recommendations": dropped + reset_advice, "report_problems": 0}
    after = table_rows(url)
    tables = (*CHILDREN, "calls")
    gone = {t: set(before[t]) - set(after[t]) for t in tables}
    new = {t: set(after[t]) - set(before[t]) for t in tables}
    ids = {c["call_id"] for c in changed.calls[:5]}
    assert all(row[1] in ids for t in tables for row in gone[t] | new[t])  # only those calls' rows changed
    assert {row[1] for row in new["calls"]} == {reset["call_id"], longer["call_id"]}
    assert {(row[1], row[2]) for row in new["criterion_scores"]} == {(rescored["call_id"], "greeting"),
                                                                     (rescored["call_id"], "empathy")}
    assert not new["transcript_lines"] and not new["recommendations"] and not new["analyses"]
    assert {row[2] for row in gone["transcript_lines"]} == set(range(6, 6 + cut))
    sync(clean, changed)
    assert dump_tables(url) == dump_tables(clean)


def test_an_unreadable_transcript_keeps_its_lines_and_a_missing_one_removes_them(db_url: str) -> None:
    data = synthetic_range(30, seed=10, analysed_only=True)
    sync(db_url, data)
    broken, missing = data.calls[0], data.calls[1]
    before = table_rows(db_url)["transcript_lines"]

    def load(key: str) -> dict[str, Any] | None:
        if key == broken["transcript_key"]:
            raise TimeoutError("S3 read timed out")
        return None if key == missing["transcript_key"] else data.load(key)

    summary = PostgresSync(db_url).sync(data.clinic, data.start_date, data.end_date, data.calls, load)
    assert (summary.transcripts_failed, summary.transcripts_missing) == (1, 1)
    removed = len(data.transcripts[missing["transcript_key"]]["lines"])
    assert summary.deleted["transcript_lines"] == removed
    after = table_rows(db_url)["transcript_lines"]
    assert after == [row for row in before if row[1] != missing["call_id"]]


def test_report_rows_follow_the_report_and_no_report_leaves_it_alone(db_url: str) -> None:
    data = synthetic_range(20, seed=11)
    assert data.report is not None
    sync(db_url, data)
    fewer = copy.deepcopy(data)
    assert fewer.report is not None
    fewer.report["problems"] = fewer.report["problems"][:2]
    fewer.report["problems"][0]["title"] = "Новая формулировка"
    summary = sync(db_url, fewer)
    assert summary.deleted["report_problems"] == len(data.report["problems"]) - 2
    assert summary.upserted["report_problems"] == 1 and summary.upserted["reports"] == 1  # the jsonb changed
    kept = table_rows(db_url)
    assert [r[3:5] for r in kept["report_problems"]] == [(1, "Новая формулировка"), (2, data.report["problems"][1][
        "title"])]
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT report FROM reports").fetchone() == (fewer.report,)
    fewer.report, fewer.markdown = None, None
    sync(db_url, fewer)
    assert table_rows(db_url)["reports"] == kept["reports"]


# -------------------------------------------------------------------------------------------- odd input
def odd_items(client: str) -> list[Any]:
    good = synthetic_range(1, client_id=client, seed=12, analysed_only=True).calls[0]
    return [
        good,
        {"client_id": client, "day": "2026-11-02"},  # no call_id
        {"call_id": "", "client_id": client},  # an empty call_id
        None, "leads-1", 42,  # not items at all
        {**good, "call_id": "leads-9", "client_id": "another-clinic"},
        {"call_id": "leads-odd", "client_id": client, "duration": "abc", "entity_id": "12", "call_status": 4.5,
         "amo_note_id": 10**20, "call_time": "not a time", "sk": "2026-11-03#leads-odd", "phone": None,
         "administrator": 7, "direction": "incoming\x00", "analysis": "oops", "transcript_key": "t/odd.json"},
        {"call_id": "leads-half", "client_id": client, "call_time": "2026-11-04T09:30:00", "sync_status": "success",
         "recording_key": "r.mp3", "analysis": {"criteria": ["greeting"], "recommendations": "Один совет",
                                                 "overall_score": "high", "outcome": None, "call_type": 5},
         "booked": "true", "analyzed_at": "yesterday", "transcript_key": "t/half.json"},
        {"call_id": "leads-dup", "client_id": client, "duration": 10},
        {"call_id": "leads-dup", "client_id": client, "duration": 20},  # the later one wins
        {"call_id": "leads-bare"},  # nothing else at all (and no client_id: it is the clinic's)
    ]


ODD_TRANSCRIPTS: dict[str, Any] = {
    "t/odd.json": {"lines": {"speaker": "administrator"}},  # lines not a list
    "t/half.json": {"lines": [{"speaker": "patient", "text": "Ал\x00ло", "start": "x", "end": float("nan")},
                              "just text", 17, {"speaker": None, "start": 1.5, "end": 1e39}]},
}


def test_odd_items_are_mapped_to_nulls_or_skipped_with_a_count(db_url: str) -> None:
    client = "odd-clinic"
    items = odd_items(client)
    data = synthetic_range(1, client_id=client, seed=12, analysed_only=True)
    transcripts = {**data.transcripts, **ODD_TRANSCRIPTS}
    report = {"generated_at": 5, "total_calls": "many", "problems": [
        {"title": "без ранга", "calls": 2, "share": float("nan")}, "oops", {"rank": 1, "title": "дубль"}]}
    summary = PostgresSync(db_url).sync({"client_id": client, "timezone": "No/Such_Zone"}, data.start_date,
                                        data.end_date, items, transcripts.get, report, None)
    no_call_id = sum(1 for i in items if isinstance(i, dict) and not i.get("call_id"))
    assert summary.skipped_items == {Skip.NOT_A_MAPPING.value: sum(1 for i in items if not isinstance(i, dict)),
                                     Skip.NO_CALL_ID.value: no_call_id, Skip.OTHER_CLIENT.value: 1,
                                     Skip.DUPLICATE.value: 1}
    rows = table_rows(db_url)
    assert sorted(r[1] for r in rows["calls"]) == sorted(["leads-bare", "leads-dup", "leads-half", "leads-odd",
                                                          items[0]["call_id"]])
    with psycopg.connect(db_url) as conn:
        odd = conn.execute("SELECT duration_s, entity_id, amo_call_status, amo_note_id, call_time, local_day,"
                           " phone_hash, administrator, direction, recording_status FROM calls"
                           " WHERE call_id = 'leads-odd'").fetchone()
        half = conn.execute("SELECT c.call_time, c.local_day, a.call_type, a.booked, a.overall_score,"
                            " a.booking_reason, a.analyzed_at FROM calls c JOIN analyses a USING (client_id, call_id)"
                            " WHERE call_id = 'leads-half'").fetchone()
        dup = conn.execute("SELECT duration_s FROM calls WHERE call_id = 'leads-dup'").fetchone()
        children = {t: conn.execute(f"SELECT count(*) FROM {t} WHERE call_id = 'leads-odd'").fetchone()
                    for t in CHILDREN}
        half_lines = conn.execute("SELECT line_no, speaker, start_s, end_s, text FROM transcript_lines"
                                  " WHERE call_id = 'leads-half' ORDER BY line_no").fetchall()
        half_advice = conn.execute("SELECT position, text FROM recommendations WHERE call_id = 'leads-half'").fetchall()
        problems = conn.execute("SELECT rank, title, calls, share FROM report_problems ORDER BY rank").fetchall()
        report_row = conn.execute("SELECT generated_at, total_calls, report FROM reports").fetchone()
    assert odd == (None, 12, None, None, None, date(2026, 11, 3), None, "7", "incoming", "pending")
    assert half[0] == datetime.fromisoformat("2026-11-04T09:30:00+00:00")  # naive, in the (unknown -> UTC) zone
    assert half[1:] == (date(2026, 11, 4), "5", True, None, None, None)
    assert dup == (20,)
    assert children == dict.fromkeys(CHILDREN, (0,))
    assert half_lines == [(1, "patient", None, None, "Алло"), (2, None, None, None, "just text"),
                          (3, None, None, None, None), (4, None, 1.5, None, None)]
    assert half_advice == [(1, "Один совет")]
    assert problems == [(1, "без ранга", 2, None)]  # the first of rank 1 wins, NaN share is NULL
    assert report_row == (datetime.fromtimestamp(5, UTC), None, {**report, "problems": [
        {"title": "без ранга", "calls": 2, "share": None}, "oops", {"rank": 1, "title": "дубль"}]})


@pytest.mark.parametrize("item", [None, [], {"call_id": None}, {"call_id": 12.5, "duration": True},
                                  {"call_id": "x", "analysis": {"criteria": {"a": {"score": "11"}, "b": 3.0}}},
                                  {"call_id": "x", "call_time": 10**30, "analyzed_at": float("inf")}])
def test_mapping_never_raises(item: Any) -> None:
    mapped = call_rows(item, client_id="c")
    assert isinstance(mapped, CallRows | Skip)
    if isinstance(mapped, CallRows):
        assert all(c.score is None or 0 <= c.score <= 10 for c in mapped.criteria)
    assert transcript_line_rows("c", "x", item) is not None
    assert report_rows("c", date(2026, 1, 1), date(2026, 1, 31), item)[0].client_id == "c"
