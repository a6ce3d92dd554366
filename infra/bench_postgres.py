"""The PostgreSQL sync (process 5) against one embedded pgserver, and the synthetic data its tests reuse.

    python -m infra.bench_postgres [--calls N]     (default 10,000)

Measured side by side in one run, each into a fresh, already migrated database of the same server:
``PostgresSync`` syncing N synthetic analysed calls (~20 transcript lines each, 7 criteria, 2-4 recommendations,
plus the range's report), the same sync again (nothing changed: every row compared, none written), and a plain
row-by-row insert of the same rows (the same mapping, one ``INSERT`` execute per row, all in one transaction).
Both timings include mapping the items to rows; the two databases are checked to hold identical rows. The goal is
a sync at least 10x the row-by-row rate.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from callsight.postgres import PostgresSync, migrate
from callsight.postgres.rows import (
    CallRows,
    Row,
    call_rows,
    clinic_row,
    report_rows,
    transcript_line_rows,
    zone,
)
from infra.postgres import LocalPostgres

CRITERIA = ("greeting", "need_discovery", "doctor_and_service", "objection_handling", "booking_offer", "next_step",
            "politeness")
CALL_TYPES = ("booking", "reschedule", "cancellation", "price_question", "test_results", "complaint", "other")
ADMINISTRATORS = ("Анна Петрова", "Мария Иванова", "Ольга Смирнова", "Елена Кузнецова", "")
#: data tables and their primary keys, in dependency order (dumps compare them in this order)
TABLE_KEYS = {
    "clinics": ("client_id",),
    "calls": ("client_id", "call_id"),
    "transcript_lines": ("client_id", "call_id", "line_no"),
    "analyses": ("client_id", "call_id"),
    "criterion_scores": ("client_id", "call_id", "criterion"),
    "recommendations": ("client_id", "call_id", "position"),
    "reports": ("client_id", "start_date", "end_date"),
    "report_problems": ("client_id", "start_date", "end_date", "rank"),
}
PHRASES = ("Здравствуйте, клиника «Здоровье», меня зовут Анна.", "Добрый день, я хотела бы записаться к терапевту.",
           "Подскажите, пожалуйста, сколько стоит приём?", "Первичный приём стоит две тысячи рублей.",
           "Есть свободное время в четверг в десять утра.", "Да, давайте, мне подходит.",
           "Назовите, пожалуйста, вашу фамилию и дату рождения.", "Спасибо, вы записаны, ждём вас.")


# ------------------------------------------------------------------------------------------------ synthetic data
@dataclass
class SyntheticRange:
    """One clinic's range as process 5 receives it: call items, transcripts by S3 key, the report."""

    clinic: dict[str, Any]
    start_date: date
    end_date: date
    calls: list[dict[str, Any]]
    transcripts: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    markdown: str | None = None

    def load(self, key: str) -> dict[str, Any] | None:
        """The transcript loader (an S3 GET on AWS)."""
        return self.transcripts.get(key)

    def sync(self, target: PostgresSync) -> Any:
        return target.sync(self.clinic, self.start_date, self.end_date, self.calls, self.load, self.report,
                           self.markdown)


def synthetic_range(calls: int, *, client_id: str = "bench-clinic", seed: int = 0, analysed_only: bool = False,
                    start_date: date = date(2026, 11, 1), days: int = 30) -> SyntheticRange:
    """``calls`` call items of a clinic over ``days`` days. ``analysed_only``: every call recorded, transcribed
    (~20 lines) and analysed (7 criteria, 2-4 recommendations); otherwise a realistic mix: some without a recording
    or too short, some failed to download, transcribe or analyse, some not analysed yet."""
    rnd = random.Random(seed)
    tz = "Europe/Moscow"
    clinic = {"client_id": client_id, "name": f"Клиника {client_id}", "timezone": tz,
              "amocrm_subdomain": f"{client_id}-amo"}
    data = SyntheticRange(clinic, start_date, start_date + timedelta(days=days - 1), [])
    for n in range(calls):
        moment = datetime.combine(start_date, datetime.min.time(), ZoneInfo(tz)) + timedelta(
            days=rnd.randrange(days), hours=8 + rnd.randrange(11), minutes=rnd.randrange(60))
        day = moment.date().isoformat()
        call_id = f"leads-{100_000 + n}"
        item: dict[str, Any] = {
            "pk": f"CLIENT#{client_id}", "sk": f"{day}#{call_id}", "client_id": client_id, "call_id": call_id,
            "day": day, "call_time": moment.isoformat(), "amo_note_id": 100_000 + n,
            "amo_created_at": int(moment.timestamp()), "entity_type": "leads", "entity_id": 5_000 + n // 3,
            "direction": rnd.choice(("incoming", "incoming", "outgoing")), "duration": rnd.randrange(20, 600),
            "phone": f"+7 (9{rnd.randrange(10)}{rnd.randrange(10)}) {rnd.randrange(1000):03}-{rnd.randrange(10000):04}",
            "call_status": 4, "call_result": "", "responsible_user_id": 1_000 + n % 5,
            "administrator": ADMINISTRATORS[n % len(ADMINISTRATORS)], "recording_url": f"https://rec.example/{n}.mp3",
            "sync_status": "success",
        }
        fate = "analysed" if analysed_only else rnd.choices(
            ("analysed", "no_recording", "too_short", "download_failed", "transcribe_failed", "analyze_failed",
             "not_analysed"), weights=(70, 6, 6, 3, 3, 4, 8))[0]
        if fate in ("no_recording", "too_short"):
            item["sync_skip"] = fate
            if fate == "no_recording":
                del item["recording_url"]
        elif fate == "download_failed":
            item.update(sync_status="failed", sync_error="HTTP 404 from the recording URL")
        else:
            item["recording_key"] = f"recordings/{client_id}/{day}/{call_id}.mp3"
            if fate == "transcribe_failed":
                item.update(transcribe_status="failed", transcribe_error="audio could not be decoded")
            else:
                key = f"transcripts/{client_id}/{day}/{call_id}.json"
                item.update(transcribe_status="success", transcript_key=key)
                data.transcripts[key] = synthetic_transcript(rnd, call_id)
                if fate == "analyze_failed":
                    item.update(analyze_status="failed", analyze_error="analysis failed validation")
                elif fate == "analysed":
                    item.update(synthetic_analysis(rnd, moment))
        data.calls.append(item)
    data.report = synthetic_report(rnd, data)
    data.markdown = f"# Отчёт {client_id}\n\n{len(data.calls)} звонков за период."
    return data


def synthetic_transcript(rnd: random.Random, call_id: str) -> dict[str, Any]:
    lines, clock = [], 0.0
    for i in range(rnd.randrange(16, 25)):
        length = round(rnd.uniform(1.0, 8.0), 2)
        line: dict[str, Any] = {"speaker": ("administrator", "patient")[i % 2], "text": rnd.choice(PHRASES)}
        if rnd.random() < 0.9:  # some lines come without timings
            line.update(start=round(clock, 2), end=round(clock + length, 2))
        clock += length
        lines.append(line)
    return {"call_id": call_id, "model": "gpt-4o-transcribe", "language": "ru",
            "text": " ".join(str(line["text"]) for line in lines),
            "segments": [{"start": line.get("start", 0.0), "end": line.get("end", 0.0), "text": line["text"]}
                         for line in lines], "lines": lines, "parts": 1}


def synthetic_analysis(rnd: random.Random, moment: datetime) -> dict[str, Any]:
    booked = rnd.random() < 0.55
    analysis = {
        "call_type": rnd.choice(CALL_TYPES),
        "outcome": {"booked": booked, "reason": "Пациент записан на удобное время." if booked
                    else "Пациента не устроила цена."},
        "criteria": {name: {"score": rnd.randrange(11), "evidence": rnd.choice(PHRASES)} for name in CRITERIA},
        "overall_score": rnd.randrange(101),
        "patient_sentiment": rnd.choice(("positive", "neutral", "negative")),
        "summary": "Пациент звонил узнать о записи. Администратор предложил время.",
        "recommendations": [f"Совет {k + 1}: уточнять потребность пациента." for k in range(rnd.randrange(2, 5))],
    }
    analyzed = (moment + timedelta(minutes=30)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"analyze_status": "success", "analysis": analysis, "call_type": analysis["call_type"], "booked": booked,
            "overall_score": analysis["overall_score"], "patient_sentiment": analysis["patient_sentiment"],
            "analysis_model": "gpt-4.1-mini", "analyzed_at": analyzed}


def synthetic_report(rnd: random.Random, data: SyntheticRange) -> dict[str, Any]:
    analysed = sum(1 for c in data.calls if "analysis" in c)
    problems = [{"rank": r, "title": f"Проблема {r}", "calls": rnd.randrange(1, max(2, analysed)),
                 "share": round(rnd.random(), 3), "examples": [c["call_id"] for c in data.calls[:2]]}
                for r in range(1, 6)]
    return {"client_id": data.clinic["client_id"], "start_date": data.start_date.isoformat(),
            "end_date": data.end_date.isoformat(), "generated_at": "2026-12-01T09:00:00Z",
            "total_calls": len(data.calls), "analysed_calls": analysed, "problems": problems}


# ------------------------------------------------------------------------------------------------ databases
def database_url(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    if url.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(url)
        return urlunsplit(parts._replace(path=f"/{name}"))
    return make_conninfo(url, dbname=name)


def create_database(url: str, name: str) -> str:
    """A fresh (empty) database ``name`` on ``url``'s server; returns its URL."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(url, name)


def drop_database(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def dump_tables(url: str) -> dict[str, bytes]:
    """Every data table as COPY text, ordered by its key: equal dumps mean byte-identical rows."""
    dumps: dict[str, bytes] = {}
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        for table, key in TABLE_KEYS.items():
            query = sql.SQL("COPY (SELECT * FROM {} ORDER BY {}) TO STDOUT").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, key)))
            with cur.copy(query) as copy:
                dumps[table] = b"".join(bytes(chunk) for chunk in copy)
    return dumps


def row_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {table: int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
                           .fetchone()[0])  # type: ignore[index]
                for table in TABLE_KEYS}


# ------------------------------------------------------------------------------------------------ baseline
def insert_row_by_row(url: str, data: SyntheticRange) -> int:
    """The same rows as PostgresSync, one INSERT execute per row, all in one transaction; returns the rows.

    Parents first (the clinic, every call, ``ANALYZE calls``, then the children), on the same footing as
    PostgresSync: without statistics the planner cannot tell the primary key of ``calls`` from its other indexes
    on client_id, and every cached foreign-key check scans the clinic's calls (quadratic; a naive call-by-call
    order measured ~600 rows/s at 10,000 calls)."""
    clinic = clinic_row(data.clinic)
    tz = zone(clinic.timezone)
    rows: int = 0
    statements: dict[str, sql.Composed] = {}

    def insert(cur: psycopg.Cursor[Any], row: Row) -> None:
        nonlocal rows
        columns = row.columns()
        if row.TABLE not in statements:
            statements[row.TABLE] = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(row.TABLE), sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.SQL(", ").join(sql.Placeholder() * len(columns)))
        cur.execute(statements[row.TABLE], tuple(getattr(row, c) for c in columns))
        rows += 1

    with psycopg.connect(url) as conn, conn.transaction(), conn.cursor() as cur:
        insert(cur, clinic)
        mapped = [m for m in (call_rows(item, client_id=clinic.client_id, tz=tz) for item in data.calls)
                  if isinstance(m, CallRows)]
        for call in mapped:
            insert(cur, call.call)
        cur.execute("ANALYZE calls")
        for call in mapped:
            for child in (call.analysis, *call.criteria, *call.recommendations):
                if child is not None:
                    insert(cur, child)
        for call in mapped:
            if call.transcript_key is not None:
                for line in transcript_line_rows(clinic.client_id, call.call.call_id, data.load(call.transcript_key)):
                    insert(cur, line)
        if data.report is not None:
            report, problems = report_rows(clinic.client_id, data.start_date, data.end_date, data.report,
                                           data.markdown)
            for row in (report, *problems):
                insert(cur, row)
    return rows


def round_trip_seconds(url: str, samples: int = 300) -> float:
    """The median time of one ``SELECT 1`` execute: the per-statement floor a row-by-row insert pays per row."""
    times = []
    with psycopg.connect(url) as conn:
        for _ in range(samples):
            began = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            times.append(time.perf_counter() - began)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------------ the bench
def bench_postgres(calls: int = 10_000) -> dict[str, Any]:
    data = synthetic_range(calls, analysed_only=True)
    server = LocalPostgres(url="")  # always the embedded server: both sides on the same footing
    url = server.start()
    try:
        urls = {name: create_database(url, f"bench_{name}") for name in ("sync", "rows")}
        for target in urls.values():
            with psycopg.connect(target, autocommit=True) as conn:
                migrate(conn)  # not measured on either side
        counting = StatementCounter()
        began = time.perf_counter()
        first = data.sync(PostgresSync(urls["sync"], connect=counting.connect))
        sync_s = time.perf_counter() - began
        began = time.perf_counter()
        second = data.sync(PostgresSync(urls["sync"]))
        resync_s = time.perf_counter() - began
        began = time.perf_counter()
        baseline_rows = insert_row_by_row(urls["rows"], data)
        rows_s = time.perf_counter() - began
        round_trip = round_trip_seconds(urls["rows"])
        counts = row_counts(urls["sync"])
        identical = dump_tables(urls["sync"]) == dump_tables(urls["rows"])
        for name in urls:
            drop_database(url, f"bench_{name}")
    finally:
        server.stop()
    synced_rows = sum(first.upserted.values())
    return {
        "calls": calls, "rows": counts, "identical": identical,
        "sync": {"rows": synced_rows, "seconds": sync_s, "rows_per_s": synced_rows / sync_s,
                 "batches": first.batches},
        "resync": {"rows": sum(second.unchanged.values()), "written": sum(second.upserted.values()),
                   "seconds": resync_s, "rows_per_s": sum(second.unchanged.values()) / resync_s},
        "row_by_row": {"rows": baseline_rows, "seconds": rows_s, "rows_per_s": baseline_rows / rows_s},
        "ratio": (synced_rows / sync_s) / (baseline_rows / rows_s),
        "round_trip_s": round_trip, "sync_statements": counting.statements,
    }


def estimated_ratio(result: dict[str, Any], network_rtt_s: float) -> float:
    """The ratio if every statement also paid ``network_rtt_s`` (an estimate: a server across a network)."""
    sync_s = result["sync"]["seconds"] + result["sync_statements"] * network_rtt_s
    rows_s = result["row_by_row"]["seconds"] + result["row_by_row"]["rows"] * network_rtt_s
    return float((result["sync"]["rows"] / sync_s) / (result["row_by_row"]["rows"] / rows_s))


class StatementCounter:
    """A ``connect`` for PostgresSync whose connections count the statements their cursors send (COPY included;
    BEGIN/COMMIT are counted as two more per transaction by the caller's estimate, so they are left out here)."""

    def __init__(self) -> None:
        self.statements = 0
        counter = self

        class Counting(psycopg.Cursor[Any]):
            def execute(self, *args: Any, **kwargs: Any) -> Any:
                counter.statements += 1
                return super().execute(*args, **kwargs)

            def copy(self, *args: Any, **kwargs: Any) -> Any:
                counter.statements += 1
                return super().copy(*args, **kwargs)

        self._cursor = Counting

    def connect(self, *args: Any, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(*args, cursor_factory=self._cursor, **kwargs)


def print_postgres(result: dict[str, Any]) -> None:
    r = result
    tables = ", ".join(f"{table} {n:,}" for table, n in r["rows"].items())
    print(f"postgres: {r['calls']:,} synthetic analysed calls into one embedded PostgreSQL ({tables})")
    s, again, b = r["sync"], r["resync"], r["row_by_row"]
    print(f"  PostgresSync (COPY + one merge per table and batch): {s['rows']:,} rows in {s['seconds']:.2f} s = "
          f"{s['rows_per_s']:,.0f} rows/s ({s['batches']} batches)")
    print(f"  same sync again (nothing changed): {again['rows']:,} rows compared, {again['written']} written, in "
          f"{again['seconds']:.2f} s = {again['rows_per_s']:,.0f} rows/s")
    print(f"  row by row (one INSERT per row, one transaction): {b['rows']:,} rows in {b['seconds']:.2f} s = "
          f"{b['rows_per_s']:,.0f} rows/s")
    verdict = "met" if r["ratio"] >= 10 else "NOT met"
    print(f"  ratio {r['ratio']:.1f}x (goal >= 10x: {verdict}); both databases hold identical rows: "
          f"{'yes' if r['identical'] else 'NO'}")
    per_row = b["seconds"] / b["rows"]
    print(f"  for scale: one SELECT 1 over the local socket takes {r['round_trip_s'] * 1e6:.0f} us, one row-by-row "
          f"INSERT {per_row * 1e6:.0f} us; PostgresSync sent {r['sync_statements']:,} statements in all. Estimate "
          f"(not measured) if each statement also paid a 0.5 ms network round trip (a same-AZ RDS): ratio "
          f"{estimated_ratio(r, 0.0005):.0f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10_000, help="synthetic analysed calls (default 10,000)")
    args = parser.parse_args(argv)
    print_postgres(bench_postgres(args.calls))


if __name__ == "__main__":
    main()
