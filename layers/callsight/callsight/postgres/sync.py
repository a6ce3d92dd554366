"""Process 5: one clinic's date range, from its DynamoDB call items (and S3 transcripts) into PostgreSQL for BI.

``PostgresSync(url).sync(...)`` connects (``connect_timeout``), applies the pending migrations, then upserts the
calls in batches (``batch_size`` calls with all their child rows), one transaction per batch: for each table the
batch is COPYed into a TEMP staging table (made once per session, emptied by each commit) and merged by ONE
``INSERT ... SELECT ... ON CONFLICT DO UPDATE ... WHERE (columns) IS DISTINCT FROM (excluded)`` (a plain INSERT
when none of the batch's calls is stored yet), so an unchanged row is not rewritten and a second run
over the same data leaves every data table byte-identical (each sync is recorded in ``sync_runs`` instead). Child
rows of the batch's calls that the items no longer have (a re-transcribed call with fewer lines, a criterion gone,
an analysis reset) are deleted in the same transaction; lines of a call whose transcript could not be *loaded*
(the loader raised) are left as they are and counted in ``transcripts_failed``. Calls absent from ``calls`` are
never deleted, and ``report=None`` leaves a stored report alone. Transcripts of a batch are loaded concurrently
(``transcript_workers`` threads; each is an S3 GET on AWS), the next batch's while the current one is written.

Concurrency: the whole sync holds a session advisory lock per clinic (``pg_advisory_lock(<namespace>,
hashtext(client_id))``), so two syncs of one clinic run one after the other and different clinics in parallel; the
migrations take their own lock before it, so the two never wait on each other. Session locks need a real session:
behind PgBouncer use session pooling (transaction pooling would break them).

The URL (``postgresql://USER:PASSWORD@HOST:PORT/DB?...`` or ``key=value`` conninfo) is passed to psycopg unchanged,
so TLS is whatever it says (``sslmode=require`` / ``verify-full``, ``sslrootcert=...``). A database that is down,
refuses the login or dies in the middle raises :class:`PostgresUnavailable`, one line naming host, port and
database and never the password (it is scrubbed from the driver's text, and the driver's exception is not chained).
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from operator import attrgetter
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from callsight.errors import CallsightError
from callsight.postgres.migrate import Migration, migrate
from callsight.postgres.rows import (
    AnalysisRow,
    CallRow,
    CallRows,
    ClinicRow,
    CriterionScoreRow,
    LineValues,
    RecommendationRow,
    ReportProblemRow,
    ReportRow,
    Row,
    Skip,
    TranscriptLineRow,
    call_rows,
    clinic_row,
    report_rows,
    transcript_line_values,
    zone,
)

#: first key of the per-clinic advisory lock (the second is hashtext(client_id)); int4 ("call")
CLINIC_LOCK_NAMESPACE = 0x63616C6C
TABLES = ("clinics", "calls", "transcript_lines", "analyses", "criterion_scores", "recommendations", "reports",
          "report_problems")
#: child tables whose rows the batch's calls no longer have are deleted
CHILD_TABLES = ("transcript_lines", "analyses", "criterion_scores", "recommendations")
JSONB_OID = 3802
#: calls in the first batch: it is mapped before anything can be written
FIRST_BATCH = 200

TranscriptLoader = Callable[[str], Mapping[str, Any] | None]
_Types = dict[str, dict[str, int]]


class PostgresUnavailable(CallsightError):
    """PostgreSQL is down, refused the login or the database, or the connection died; worth a later retry."""

    def __init__(self, message: str, *, host: str, port: str, database: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.host = host
        self.port = port
        self.database = database
        self.sqlstate = sqlstate


@dataclass(frozen=True)
class Target:
    """Where a URL points; the password is kept only to scrub it from messages and never shown."""

    host: str
    port: str
    database: str
    password: str = field(default="", repr=False)

    @classmethod
    def from_url(cls, url: str) -> Target:
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error:  # its message may quote the URL, password included
            raise PostgresUnavailable("PostgreSQL connection URL is malformed (not shown: it may hold a password)",
                                      host="?", port="?", database="?") from None
        host = str(params.get("host") or params.get("hostaddr") or "localhost")
        database = str(params.get("dbname") or params.get("user") or "postgres")
        return cls(host, str(params.get("port") or "5432"), database, str(params.get("password") or ""))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}/{self.database}"

    def scrub(self, text: str) -> str:
        if self.password:
            forms = {self.password, quote(self.password, safe=""), quote(self.password)}
            for form in sorted(forms, key=len, reverse=True):  # the longest first: one may contain another
                text = text.replace(form, "***")
        return text


@dataclass
class SyncSummary:
    """What one sync did; ``upserted`` = inserted + updated rows, ``unchanged`` = staged rows already equal."""

    client_id: str
    start_date: date
    end_date: date
    upserted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    unchanged: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    deleted: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*CHILD_TABLES, "report_problems"), 0))
    calls: int = 0
    skipped_items: dict[str, int] = field(default_factory=lambda: dict.fromkeys([s.value for s in Skip], 0))
    transcripts_missing: int = 0
    transcripts_failed: int = 0
    batches: int = 0
    migrations_applied: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows_written(self) -> int:
        return sum(self.upserted.values()) + sum(self.deleted.values())

    def as_dict(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "start_date": self.start_date.isoformat(),
                "end_date": self.end_date.isoformat(), "upserted": dict(self.upserted),
                "unchanged": dict(self.unchanged), "deleted": dict(self.deleted), "calls": self.calls,
                "skipped_items": dict(self.skipped_items), "transcripts_missing": self.transcripts_missing,
                "transcripts_failed": self.transcripts_failed, "batches": self.batches,
                "migrations_applied": list(self.migrations_applied), "seconds": round(self.seconds, 3)}


@dataclass
class _Batch:
    """One batch ready to write: its rows as COPY tuples per table (in merge order) and what its calls keep."""

    calls: list[CallRows]
    tables: list[tuple[type[Row], list[tuple[Any, ...]]]]
    lines_kept: dict[str, int]  # calls whose transcript is known (loaded, missing or none) -> their lines
    skipped: Counter[str]
    transcripts_missing: int = 0
    transcripts_failed: int = 0


def _prepare_batch(items: list[Any], clinic: ClinicRow, transcript: TranscriptLoader,
                   loads: ThreadPoolExecutor, workers: int) -> _Batch:
    """Map one batch's items (the later item of a repeated call wins) and load and map their transcripts."""
    tz = zone(clinic.timezone)
    mapped: dict[str, CallRows] = {}
    skipped: Counter[str] = Counter()
    for item in items:
        rows = call_rows(item, client_id=clinic.client_id, tz=tz)
        if isinstance(rows, Skip):
            skipped[rows.value] += 1
            continue
        if rows.call.call_id in mapped:
            skipped[Skip.DUPLICATE.value] += 1
        mapped[rows.call.call_id] = rows
    # one task per worker, each loading its share of the transcripts in turn: as many loads in flight as workers,
    # without a task (and a thread hand-off) per call
    wanted = [(call_id, rows.transcript_key) for call_id, rows in mapped.items() if rows.transcript_key is not None]
    shares = [loads.submit(_load_share, transcript, wanted[i::workers], clinic.client_id) for i in range(workers)]
    loaded = {call_id: result for share in shares for call_id, result in share.result().items()}
    calls = list(mapped.values())
    batch = _Batch(calls, [], {}, skipped)
    lines: list[LineValues] = []
    for call_id in mapped:
        if call_id not in loaded:
            batch.lines_kept[call_id] = 0
            continue
        outcome = loaded[call_id]
        if outcome is None:  # an unreadable transcript must not stop the clinic's sync; its lines stay as they are
            batch.transcripts_failed += 1
            continue
        missing, its_lines = outcome
        batch.transcripts_missing += missing
        lines.extend(its_lines)
        batch.lines_kept[call_id] = len(its_lines)
    analysed = [r for r in calls if r.analysis is not None]
    batch.tables = [(CallRow, _values(CallRow, [r.call for r in calls])),
                    (AnalysisRow, _values(AnalysisRow, [r.analysis for r in analysed])),
                    (CriterionScoreRow, _values(CriterionScoreRow, [c for r in analysed for c in r.criteria])),
                    (RecommendationRow, _values(RecommendationRow, [c for r in analysed for c in r.recommendations])),
                    (TranscriptLineRow, lines)]
    return batch


def _column_types(conn: psycopg.Connection[Any]) -> _Types:
    """Table -> column -> type oid of our tables, for binary COPY (read once per sync, after the migrations)."""
    types: _Types = {}
    for relname, attname, oid in conn.execute(
            "SELECT c.relname, a.attname, a.atttypid::int FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
            " WHERE c.relname = ANY(%s) AND c.relnamespace = current_schema()::regnamespace AND a.attnum > 0"
            " AND NOT a.attisdropped", (list(TABLES),)):
        types.setdefault(str(relname), {})[str(attname)] = int(oid)
    return types


def _load_share(transcript: TranscriptLoader, share: list[tuple[str, str]],
                client_id: str) -> dict[str, tuple[bool, list[LineValues]] | None]:
    """call_id -> (no transcript stored, its lines), or None when loading it failed."""
    loaded: dict[str, tuple[bool, list[LineValues]] | None] = {}
    for call_id, key in share:
        try:
            found = transcript(key)
            loaded[call_id] = found is None, transcript_line_values(client_id, call_id, found)
        except Exception:
            loaded[call_id] = None
    return loaded


def _values(table: type[Row], rows: Sequence[Any]) -> list[tuple[Any, ...]]:
    values = attrgetter(*table.columns())
    return [values(row) for row in rows]


class PostgresSync:
    """Upserts one clinic's range into PostgreSQL; see the module docstring. Dependencies come in here; an instance
    keeps no state between syncs (several may run at once from threads)."""

    def __init__(self, url: str, *, batch_size: int = 1000, connect_timeout: float = 10,
                 transcript_workers: int = 16, migrations: list[Migration] | None = None,
                 connect: Callable[..., psycopg.Connection[Any]] = psycopg.connect,
                 after_batch: Callable[[int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if batch_size < 1 or transcript_workers < 1:
            raise ValueError("batch_size and transcript_workers must be at least 1")
        self._url = url
        self.target = Target.from_url(url)
        self.batch_size = batch_size
        self.connect_timeout = connect_timeout
        self.transcript_workers = transcript_workers
        self.migrations = migrations
        self._connect_fn = connect
        self.after_batch = after_batch
        self.clock = clock

    def __repr__(self) -> str:
        return f"PostgresSync({self.target}, batch_size={self.batch_size})"

    # ---------------------------------------------------------------------------------------------------- sync
    def sync(self, clinic: ClinicRow | Mapping[str, Any], start_date: date, end_date: date,  # noqa: PLR0917
             calls: Iterable[Any], transcript: TranscriptLoader, report: Mapping[str, Any] | None = None,
             report_markdown: str | None = None) -> SyncSummary:
        began = self.clock()
        row = clinic_row(clinic)
        summary = SyncSummary(row.client_id, start_date, end_date)
        conn = self.connect()
        run_id: int | None = None
        try:
            summary.migrations_applied = migrate(conn, self.migrations)
            types = _column_types(conn)
            for table in (ClinicRow, CallRow, TranscriptLineRow, AnalysisRow, CriterionScoreRow, RecommendationRow,
                          ReportRow, ReportProblemRow):
                conn.execute(_upsert_sql(table)[0])
            conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (CLINIC_LOCK_NAMESPACE, row.client_id))
            with conn.transaction(), conn.cursor() as cur:
                self._upsert(cur, ClinicRow, _values(ClinicRow, [row]), summary, types)
                cur.execute("INSERT INTO sync_runs (client_id, start_date, end_date) VALUES (%s, %s, %s)"
                            " RETURNING id", (row.client_id, start_date, end_date))
                run_id = int(_first(cur.fetchone()))
            self._sync_calls(conn, row, calls, transcript, summary=summary, types=types)
            with conn.cursor() as cur:
                self._analyse_if_never(cur, list(CHILD_TABLES))
            if report is not None:
                with conn.transaction(), conn.cursor() as cur:
                    self._write_report(cur, *report_rows(row.client_id, start_date, end_date, report,
                                                         report_markdown), summary, types)
            summary.seconds = self.clock() - began
            self._finish(conn, run_id, summary, "succeeded", None)
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (CLINIC_LOCK_NAMESPACE, row.client_id))
        except BaseException as exc:
            if run_id is not None and not conn.broken:  # e.g. a lock timeout: the session still works
                with contextlib.suppress(psycopg.Error):
                    summary.seconds = self.clock() - began
                    self._finish(conn, run_id, summary, "failed", self.target.scrub(_one_line(repr(exc))))
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                raise self._unavailable(exc, connecting=False) from None
            raise
        finally:
            conn.close()  # also releases the session's advisory locks
        return summary

    def connect(self) -> psycopg.Connection[Any]:
        """An autocommit session in UTC, or PostgresUnavailable."""
        params = _conninfo(self._url)
        options: dict[str, Any] = {"autocommit": True, "connect_timeout": max(1, math.ceil(self.connect_timeout))}
        if "application_name" not in params:
            options["application_name"] = "callsight-postgres-sync"
        if not self.target.host.startswith("/") and "keepalives_idle" not in params:  # notice a dead peer
            options.update(keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
        try:
            conn = self._connect_fn(self._url, **options)
            conn.execute("SET TIME ZONE 'UTC'")
            if "random_page_cost" not in str(params.get("options", "")):
                # SSD storage (RDS, Aurora): at the default 4.0 the planner prefers scanning all of a clinic's
                # rows to 1,000 index probes for a batch's deletes until the tables are very large
                conn.execute("SET random_page_cost = 1.1")
        except psycopg.Error as exc:
            raise self._unavailable(exc, connecting=True) from None
        return conn

    # ------------------------------------------------------------------------------------------------- batches
    def _sync_calls(self, conn: psycopg.Connection[Any], clinic: ClinicRow, calls: Iterable[Any],
                    transcript: TranscriptLoader, *, summary: SyncSummary, types: _Types) -> None:
        """Batch n+1 is mapped and its transcripts loaded (worker threads) while batch n is written."""
        loads = ThreadPoolExecutor(self.transcript_workers, thread_name_prefix="pg-transcripts")
        mapper = ThreadPoolExecutor(1, thread_name_prefix="pg-map")
        try:
            ready: Future[_Batch] | None = None
            for items in _chunks(calls, self.batch_size, first=min(self.batch_size, FIRST_BATCH)):
                upcoming = mapper.submit(_prepare_batch, items, clinic, transcript, loads, self.transcript_workers)
                if ready is not None:
                    self._write_batch(conn, clinic.client_id, ready.result(), summary, types)
                ready = upcoming
            if ready is not None:
                self._write_batch(conn, clinic.client_id, ready.result(), summary, types)
        finally:
            mapper.shutdown(wait=True, cancel_futures=True)
            loads.shutdown(wait=True, cancel_futures=True)

    def _write_batch(self, conn: psycopg.Connection[Any], client_id: str, batch: _Batch, summary: SyncSummary,
                     types: _Types) -> None:
        with conn.transaction(), conn.cursor() as cur:
            # only calls already stored can have child rows to delete (a first sync deletes nothing)
            cur.execute("SELECT call_id FROM calls WHERE client_id = %s AND call_id = ANY(%s)",
                        (client_id, [r.call.call_id for r in batch.calls]))
            stored = {str(row[0]) for row in cur.fetchall()}
            for table, values in batch.tables:
                self._upsert(cur, table, values, summary, types, all_new=not stored)
                if table is CallRow and summary.batches == 0:
                    self._analyse_if_never(cur, ["calls"])
            old = [r for r in batch.calls if r.call.call_id in stored]
            lines_kept = {call_id: n for call_id, n in batch.lines_kept.items() if call_id in stored}
            # what each stored call keeps; lines and recommendations are numbered 1..n
            stale: list[tuple[sql.Composed | sql.SQL, tuple[Any, ...], str]] = [
                (_DELETE_BEYOND.format(table=sql.Identifier("transcript_lines"), numbered=sql.Identifier("line_no")),
                 (list(lines_kept), list(lines_kept.values()), client_id), "transcript_lines"),
                (_DELETE_BEYOND.format(table=sql.Identifier("recommendations"), numbered=sql.Identifier("position")),
                 ([r.call.call_id for r in old], [len(r.recommendations) for r in old], client_id),
                 "recommendations"),
                (_DELETE_CRITERIA, ([r.call.call_id for r in old], client_id,
                                    Jsonb({r.call.call_id: [c.criterion for c in r.criteria] for r in old})),
                 "criterion_scores"),
                (_DELETE_ANALYSES, ([r.call.call_id for r in old if r.analysis is None], client_id), "analyses"),
            ]
            for statement, params, table_name in stale:
                if params[0]:
                    cur.execute(statement, params)
                    summary.deleted[table_name] += cur.rowcount
        for reason, count in batch.skipped.items():
            summary.skipped_items[reason] += count
        summary.transcripts_missing += batch.transcripts_missing
        summary.transcripts_failed += batch.transcripts_failed
        summary.calls += len(batch.calls)
        summary.batches += 1
        if self.after_batch is not None:
            self.after_batch(summary.batches)

    def _write_report(self, cur: psycopg.Cursor[Any], report: ReportRow, problems: tuple[ReportProblemRow, ...],
                      summary: SyncSummary, types: _Types) -> None:
        self._upsert(cur, ReportRow, _values(ReportRow, [report]), summary, types)
        self._upsert(cur, ReportProblemRow, _values(ReportProblemRow, problems), summary, types)
        cur.execute("DELETE FROM report_problems WHERE client_id = %s AND start_date = %s AND end_date = %s"
                    " AND rank <> ALL(%s)", (report.client_id, report.start_date, report.end_date,
                                             [p.rank for p in problems]))
        summary.deleted["report_problems"] += cur.rowcount

    @staticmethod
    def _upsert(cur: psycopg.Cursor[Any], table: type[Row], values: Sequence[tuple[Any, ...]], summary: SyncSummary,
                types: _Types, *, all_new: bool = False) -> None:
        """COPY ``values`` (rows as tuples) into the staging table and merge it into ``table`` in one statement.

        ``all_new``: none of these rows' calls is stored yet (checked in this transaction, under the clinic's
        lock, which every writer of the clinic's rows holds), so a plain INSERT does, ~30 % cheaper than the
        ON CONFLICT merge's speculative insertion."""
        _, copy_sql, merge = _upsert_sql(table)  # the staging table was made when the session began
        if all_new:
            merge = _insert_sql(table)
        if not values:
            return
        oids = [types[table.TABLE][column] for column in table.columns()]
        binary = JSONB_OID not in oids  # binary COPY would dump our JSON text as a JSON string
        with cur.copy(copy_sql + sql.SQL(" (FORMAT BINARY)") if binary else copy_sql) as copy:
            if binary:
                copy.set_types(oids)
            for row in values:
                copy.write_row(row)
        cur.execute(merge)
        summary.upserted[table.TABLE] += cur.rowcount
        summary.unchanged[table.TABLE] += len(values) - cur.rowcount

    @staticmethod
    def _analyse_if_never(cur: psycopg.Cursor[Any], tables: list[str]) -> None:
        """ANALYZE the tables that never had statistics. Without them the planner cannot tell the primary key from
        other indexes on client_id: every foreign-key check (a cached generic plan) would scan the clinic's calls,
        and the deletes its lines, making a first sync into a fresh database quadratic. Autovacuum keeps them up to
        date afterwards. Inside a batch's transaction, ANALYZE counts the transaction's own new rows."""
        cur.execute("SELECT relname FROM pg_class WHERE relname = ANY(%s) AND relkind = 'r' AND reltuples < 0"
                    " AND relnamespace = current_schema()::regnamespace", (tables,))
        never = [str(row[0]) for row in cur.fetchall()]
        if never:
            cur.execute(sql.SQL("ANALYZE {}").format(sql.SQL(", ").join(map(sql.Identifier, never))))

    def _finish(self, conn: psycopg.Connection[Any], run_id: int | None, summary: SyncSummary, status: str,
                error: str | None) -> None:
        if run_id is None:
            return
        conn.execute("UPDATE sync_runs SET finished_at = now(), status = %s, batches = %s, rows_written = %s,"
                     " rows_unchanged = %s, rows_deleted = %s, skipped_items = %s, error = %s WHERE id = %s",
                     (status, summary.batches, Jsonb(summary.upserted), Jsonb(summary.unchanged),
                      Jsonb(summary.deleted), Jsonb(summary.skipped_items), error, run_id))

    # -------------------------------------------------------------------------------------------------- errors
    def _unavailable(self, exc: BaseException, *, connecting: bool) -> PostgresUnavailable:
        detail = _one_line(str(exc)) or type(exc).__name__
        lowered = detail.lower()
        sqlstate = getattr(exc, "sqlstate", None)
        if not connecting:
            what = "lost the connection" if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) \
                else "failed"
        elif sqlstate in ("28P01", "28000") or any(
                s in lowered for s in ("authentication failed", "no pg_hba.conf entry", "role \"")):
            what = "refused the login"
        elif sqlstate == "3D000" or ("database \"" in lowered and "does not exist" in lowered):
            what = "refused the connection"
        else:
            what = "is unreachable"
        message = self.target.scrub(f"PostgreSQL at {self.target} {what}: {detail}")
        return PostgresUnavailable(message, host=self.target.host, port=self.target.port,
                                   database=self.target.database, sqlstate=sqlstate)


# ------------------------------------------------------------------------------------------------------- helpers
# Deletes driven by the batch's calls (unnest: one index probe per call, whatever the statistics say; a NOT EXISTS
# against an un-analysed staging table can be planned as a quadratic nested loop)
_DELETE_BEYOND = sql.SQL("DELETE FROM {table} t USING unnest(%s::text[], %s::int[]) AS k(call_id, kept)"
                         " WHERE t.client_id = %s AND t.call_id = k.call_id AND t.{numbered} > k.kept")
_DELETE_CRITERIA = sql.SQL("DELETE FROM criterion_scores t USING unnest(%s::text[]) AS k(call_id)"
                           " WHERE t.client_id = %s AND t.call_id = k.call_id"
                           " AND NOT coalesce((%s::jsonb -> t.call_id) ? t.criterion, false)")
_DELETE_ANALYSES = sql.SQL("DELETE FROM analyses t USING unnest(%s::text[]) AS k(call_id)"
                           " WHERE t.client_id = %s AND t.call_id = k.call_id")
_UPSERT_SQL: dict[str, tuple[sql.Composed, sql.Composed, sql.Composed]] = {}


def _upsert_sql(table: type[Row]) -> tuple[sql.Composed, sql.Composed, sql.Composed]:
    if table.TABLE not in _UPSERT_SQL:
        _UPSERT_SQL[table.TABLE] = _build_upsert_sql(table)
    return _UPSERT_SQL[table.TABLE]


def _build_upsert_sql(table: type[Row]) -> tuple[sql.Composed, sql.Composed, sql.Composed]:
    target, stage = sql.Identifier(table.TABLE), sql.Identifier(f"stage_{table.TABLE}")
    columns = table.columns()
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    others = [c for c in columns if c not in table.KEY]
    # made once per session and emptied by each commit: creating it for every batch cost more than its COPY
    create = sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DELETE ROWS").format(stage, target)
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(stage, names)
    merge = sql.SQL("INSERT INTO {} AS t ({}) SELECT {} FROM {} ON CONFLICT ({}) DO UPDATE SET {}"
                    " WHERE ROW({}) IS DISTINCT FROM ROW({})").format(
        target, names, names, stage, sql.SQL(", ").join(map(sql.Identifier, table.KEY)),
        sql.SQL(", ").join(sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in others),
        sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in others),
        sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in others))
    return create, copy, merge


def _insert_sql(table: type[Row]) -> sql.Composed:
    names = sql.SQL(", ").join(map(sql.Identifier, table.columns()))
    return sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
        sql.Identifier(table.TABLE), names, names, sql.Identifier(f"stage_{table.TABLE}"))


def _chunks(items: Iterable[Any], size: int, first: int | None = None) -> Iterator[list[Any]]:
    """Chunks of ``size`` items; the first of ``first`` (a small first batch starts the writes sooner: the next
    batch is mapped while the current one is written)."""
    chunk: list[Any] = []
    limit = first or size
    for item in items:
        chunk.append(item)
        if len(chunk) == limit:
            yield chunk
            chunk, limit = [], size
    if chunk:
        yield chunk


def _conninfo(url: str) -> dict[str, Any]:
    try:
        return dict(conninfo_to_dict(url))
    except psycopg.Error:
        return {}


def _first(row: Sequence[Any] | None) -> Any:
    if row is None:
        raise psycopg.InterfaceError("the query returned no row")
    return row[0]


_PREFIXES = re.compile(r'^(?:connection failed: |connection is bad: )?(?:connection to server (?:at "[^"]*"'
                       r'(?:, port \d+)?|on socket "[^"]*") failed: )?(?:FATAL: |ERROR: )?\s*')


def _one_line(text: str) -> str:
    """The driver's message on one line: the libpq prefixes and the indented hints dropped, duplicates once."""
    parts: list[str] = []
    for line in text.splitlines():
        if not line.strip() or line[:1].isspace():
            continue
        part = _PREFIXES.sub("", line.strip()).strip()
        if part and part not in parts:
            parts.append(part)
    joined = "; ".join(parts)[:300]
    if len(joined) > 1 and joined[0].isupper() and joined[1].islower():
        joined = joined[0].lower() + joined[1:]
    return joined
