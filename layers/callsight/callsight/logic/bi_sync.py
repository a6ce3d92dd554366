"""Process 5: a range's calls, transcripts, analyses and report from DynamoDB and S3 into PostgreSQL (for BI).

Run by the recommendations state machine's last task, and alone by ``callsight-admin sync-postgres``.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities import parameters

from callsight.dal.calls import CallRepository
from callsight.dal.clients import ClientRepository
from callsight.dal.recordings import ObjectStore, report_key
from callsight.dal.runs import RunRepository
from callsight.dal.table import Table
from callsight.dates import DateRange, utc_now_iso
from callsight.errors import CallsightError
from callsight.models import PostgresSyncStatus, RunTask
from callsight.postgres import PostgresSync, PostgresUnavailable

logger = Logger(child=True)


class DatabaseNotConfigured(CallsightError):
    """No PostgreSQL URL where the deployment keeps it (the operator sets the secret once)."""


def database_url_from_secret(secret_name: str) -> str:
    """The URL in the Secrets Manager secret ``secret_name`` (cached 5 minutes); never logged."""
    try:
        value = str(parameters.get_secret(secret_name, max_age=300) or "").strip()
    except parameters.exceptions.GetParameterError:
        value = ""
    if not value:
        raise DatabaseNotConfigured(
            f"no PostgreSQL URL in the secret {secret_name}: set it with `aws secretsmanager put-secret-value "
            f"--secret-id {secret_name} --secret-string postgresql://USER:PASSWORD@HOST:5432/DB?sslmode=require`")
    return value


def sync_range_to_postgres(*, table: Table, store: ObjectStore, client_id: str, days: DateRange, database_url: str,
                           batch_size: int = 1000) -> dict[str, Any]:
    """Upsert the clinic, the range's calls (with transcripts, analyses, scores, recommendations) and its report."""
    clinic = ClientRepository(table).get(client_id)
    calls = CallRepository(table, client_id).in_range(days)
    start, end = days.start.isoformat(), days.end.isoformat()
    report = store.get_json_or_none(report_key(client_id, start, end, "json"))
    markdown = store.get_text_or_none(report_key(client_id, start, end, "md"))
    summary = PostgresSync(database_url, batch_size=batch_size).sync(
        clinic={"client_id": clinic.client_id, "name": clinic.name, "timezone": clinic.timezone,
                "amocrm_subdomain": clinic.amocrm_subdomain},
        start_date=days.start, end_date=days.end, calls=calls,
        transcript=store.get_json_or_none, report=report, report_markdown=markdown)
    result = summary.as_dict()
    # the range's rows in each table now: written by this sync, or already equal
    result["rows"] = {table: summary.upserted.get(table, 0) + summary.unchanged.get(table, 0)
                      for table in summary.upserted}
    return result


def sync_run_to_postgres(*, table: Table, store: ObjectStore, runs: RunRepository, task: RunTask, database_url: str,
                         batch_size: int) -> dict[str, Any]:
    """The run's last task: the sync, with its state on the run (the status answer's ``postgres_sync``)."""
    def state(**fields: Any) -> None:
        stored = PostgresSyncStatus(**fields).model_dump(exclude_none=True)
        runs.set_fields(task.client_id, task.process.value, task.range, execution_name=task.run_id,
                        fields={"postgres": stored})

    started = utc_now_iso()
    state(status="processing", started_at=started)
    try:
        summary = sync_range_to_postgres(table=table, store=store, client_id=task.client_id, days=task.range,
                                         database_url=database_url, batch_size=batch_size)
    except PostgresUnavailable as exc:
        state(status="failed", error=str(exc), started_at=started, finished_at=utc_now_iso())
        raise
    state(status="completed", rows=summary["rows"], upserted=summary["upserted"], started_at=started,
          finished_at=utc_now_iso())
    logger.info("PostgreSQL sync done", extra=summary)
    return summary
