"""Forward-only, versioned SQL migrations of the BI schema, applied at the start of every sync.

A short runner instead of alembic or yoyo: alembic needs SQLAlchemy (heavy for a Lambda cold start) and we only
need forward SQL migrations. Files ``NNNN_name.sql`` (shipped in the layer next to this module) are applied in
version order, each in its own transaction together with its ``schema_migrations`` row, all under one session
advisory lock, so two syncs starting at once and a second run are safe. A file changed after it was applied is an
error naming it (checked before anything is applied); versions the database has but the code lacks are left alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import psycopg

from callsight.errors import CallsightError

LOCK_KEY = 0x63616C6C7369676E  # fixed bigint for pg_advisory_lock ("callsign")
_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


class MigrationError(CallsightError):
    """The migration files cannot be applied as they are (changed after being applied, duplicate version)."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # the file name
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Traversable | Path | None = None) -> list[Migration]:
    """The migrations in ``directory`` (default: the ones shipped with this package), by version."""
    folder = directory if directory is not None else resources.files("callsight.postgres") / "migrations"
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"migrations {found[version].name} and {entry.name} share version {version}")
        found[version] = Migration(version, entry.name, entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def migrate(conn: psycopg.Connection[Any], migrations: list[Migration] | None = None) -> list[str]:
    """Apply the pending migrations on an autocommit connection; returns the names of those applied now."""
    if not conn.autocommit:
        raise ValueError("migrate() needs an autocommit connection: each migration runs in its own transaction")
    todo = load_migrations() if migrations is None else migrations
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                     " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        rows = conn.execute("SELECT version, name, checksum FROM schema_migrations").fetchall()
        applied = {int(version): (str(name), str(checksum)) for version, name, checksum in rows}
        for migration in todo:
            if migration.version in applied and applied[migration.version][1] != migration.checksum:
                raise MigrationError(f"migration {migration.name} was changed after it was applied (as "
                                     f"{applied[migration.version][0]}); add a new migration instead of editing it")
        done: list[str] = []
        for migration in todo:
            if migration.version in applied:
                continue
            with conn.transaction():
                conn.execute(migration.sql)  # no parameters: several statements may run in one execute
                conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                             (migration.version, migration.name, migration.checksum))
            done.append(migration.name)
        return done
    finally:
        with contextlib.suppress(psycopg.Error):  # a dead session has released its lock already
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
