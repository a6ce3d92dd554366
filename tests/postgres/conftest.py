"""Process 5 against a real embedded PostgreSQL: one server per session, a fresh database per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from infra.bench_postgres import TABLE_KEYS, SyntheticRange, create_database, drop_database
from infra.postgres import LocalPostgres

_names = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    server = LocalPostgres(url="")  # url="": always the embedded server, never an external DATABASE_URL
    server.start()
    yield server
    server.stop()


@pytest.fixture
def new_db(pg_server: LocalPostgres) -> Iterator[Callable[[], str]]:
    """Creates fresh databases on the session's server (dropped after the test); returns their URLs."""
    made: list[str] = []
    assert pg_server.url is not None

    def make() -> str:
        name = f"cs_{os.getpid()}_{next(_names)}"
        made.append(name)
        return create_database(str(pg_server.url), name)

    yield make
    for name in made:
        drop_database(str(pg_server.url), name)


@pytest.fixture
def db_url(new_db: Callable[[], str]) -> str:
    return new_db()


def expected_counts(data: SyntheticRange) -> dict[str, int]:
    """Rows per table that syncing ``data`` must write, computed from the items themselves."""
    calls = {c["call_id"]: c for c in data.calls if isinstance(c, dict) and c.get("call_id")}.values()
    analysed = [c for c in calls if isinstance(c.get("analysis"), dict)]
    lines = sum(len(data.transcripts[c["transcript_key"]]["lines"]) for c in calls
                if c.get("transcript_key") in data.transcripts)
    return {
        "clinics": 1, "calls": len(calls), "transcript_lines": lines, "analyses": len(analysed),
        "criterion_scores": sum(len(c["analysis"]["criteria"]) for c in analysed),
        "recommendations": sum(len(c["analysis"]["recommendations"]) for c in analysed),
        "reports": 1 if data.report is not None else 0,
        "report_problems": len(data.report["problems"]) if data.report is not None else 0,
    }


def table_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every data table's rows (as Python values), ordered by key."""
    with psycopg.connect(url) as conn:
        return {table: conn.execute(sql.SQL("SELECT * FROM {} ORDER BY {}").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, key)))).fetchall()
            for table, key in TABLE_KEYS.items()}


def row_versions(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Each row's key and xmin: unchanged xmin means the row was not rewritten."""
    with psycopg.connect(url) as conn:
        return {table: conn.execute(sql.SQL("SELECT {}, xmin::text FROM {} ORDER BY {}").format(
            sql.SQL(", ").join(map(sql.Identifier, key)), sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, key)))).fetchall()
            for table, key in TABLE_KEYS.items()}
