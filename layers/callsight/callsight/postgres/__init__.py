"""Process 5: the PostgreSQL sync for BI (schema migrations, row mapping, batched upserts)."""

from callsight.postgres.migrate import Migration, MigrationError, load_migrations, migrate
from callsight.postgres.rows import ClinicRow, Skip
from callsight.postgres.sync import PostgresSync, PostgresUnavailable, SyncSummary

__all__ = ["ClinicRow", "Migration", "MigrationError", "PostgresSync", "PostgresUnavailable", "Skip", "SyncSummary",
           "load_migrations", "migrate"]
