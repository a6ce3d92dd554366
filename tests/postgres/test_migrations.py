"""The versioned migration runner: once, never twice, safe when runners race, and strict about edited files."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import psycopg
import pytest

from callsight.postgres import MigrationError, load_migrations, migrate

EXPECTED_TABLES = {"clinics", "calls", "transcript_lines", "analyses", "criterion_scores", "recommendations",
                   "reports", "report_problems", "sync_runs", "schema_migrations"}
EXPECTED_VIEWS = {"v_admin_weekly", "v_call_types", "v_booking_conversion_daily"}


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def applied(url: str) -> list[tuple[int, str, str]]:
    with psycopg.connect(url) as conn:
        return [(int(v), str(n), str(c)) for v, n, c in
                conn.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY version")]


def test_shipped_migrations_apply_once_then_none(db_url: str) -> None:
    shipped = load_migrations()
    assert shipped[0].name == "0001_initial.sql"
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert migrate(conn) == [m.name for m in shipped]
        assert migrate(conn) == []
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
        views = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.views WHERE table_schema = 'public'")}
    assert tables >= EXPECTED_TABLES
    assert views >= EXPECTED_VIEWS
    source = Path(__file__).parents[2] / "layers/callsight/callsight/postgres/migrations"
    assert applied(db_url) == [(m.version, m.name, hashlib.sha256((source / m.name).read_bytes()).hexdigest())
                               for m in shipped]


def test_runners_at_once_apply_each_migration_exactly_once(db_url: str, tmp_path: Path) -> None:
    # not idempotent on purpose: a second application fails (CREATE TABLE) or leaves a second log row
    folder = write(tmp_path / "m", {
        "0001_log.sql": "SELECT pg_sleep(0.3); CREATE TABLE log (name text); INSERT INTO log VALUES ('0001');",
        "0002_more.sql": "CREATE TABLE more (id int); INSERT INTO log VALUES ('0002');",
        "0003_last.sql": "INSERT INTO log VALUES ('0003');",
    })
    migrations = load_migrations(folder)
    runners = 4
    start = threading.Barrier(runners)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                start.wait()
                results.append(migrate(conn, migrations))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(runners)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(name for result in results for name in result) == [m.name for m in migrations]
    with psycopg.connect(db_url) as conn:
        assert sorted(r[0] for r in conn.execute("SELECT name FROM log")) == ["0001", "0002", "0003"]
    assert [v for v, _, _ in applied(db_url)] == [1, 2, 3]


def test_a_changed_applied_file_is_refused_naming_it(db_url: str, tmp_path: Path) -> None:
    folder = write(tmp_path / "m", {"0001_a.sql": "CREATE TABLE a (id int);",
                                    "0002_b.sql": "CREATE TABLE b (id int);"})
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn, load_migrations(folder))
        write(folder, {"0002_b.sql": "CREATE TABLE b (id bigint);", "0003_c.sql": "CREATE TABLE c (id int);"})
        with pytest.raises(MigrationError, match=r"0002_b\.sql"):
            migrate(conn, load_migrations(folder))
        # nothing after the refusal: the pending 0003 was not applied either
        assert conn.execute("SELECT to_regclass('c')").fetchone() == (None,)
    assert [v for v, _, _ in applied(db_url)] == [1, 2]


def test_a_failing_migration_leaves_nothing_behind_and_a_fixed_one_applies(db_url: str, tmp_path: Path) -> None:
    folder = write(tmp_path / "m", {"0001_a.sql": "CREATE TABLE a (id int);",
                                    "0002_bad.sql": "CREATE TABLE half (id int); SELECT no_such_function();"})
    with psycopg.connect(db_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedFunction):
            migrate(conn, load_migrations(folder))
        assert conn.execute("SELECT to_regclass('half')").fetchone() == (None,)  # its transaction rolled back
        assert [v for v, _, _ in applied(db_url)] == [1]
        write(folder, {"0002_bad.sql": "CREATE TABLE half (id int);"})
        assert migrate(conn, load_migrations(folder)) == ["0002_bad.sql"]
        # the lock was released despite the failure: another session can take it at once
        with psycopg.connect(db_url, autocommit=True) as other:
            assert migrate(other, load_migrations(folder)) == []


def test_two_files_with_one_version_are_refused(tmp_path: Path) -> None:
    folder = write(tmp_path / "m", {"0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 2;", "notes.txt": "x"})
    with pytest.raises(MigrationError, match=r"0001_a\.sql|0001_b\.sql"):
        load_migrations(folder)
