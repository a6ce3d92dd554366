"""The HTTP contract's models: start requests, status answers (see the frontend status guide)."""

from __future__ import annotations

import re
from datetime import date
from typing import Any, Final, Literal
from urllib.parse import urlencode

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from callsight.dates import DateRange, supported_day
from callsight.processes import Process

CLIENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_day(value: Any, field: str) -> date:
    if isinstance(value, date):
        return supported_day(value, field)
    if not isinstance(value, str) or not _DATE.match(value.strip()):
        raise ValueError(f"{field} must be a date as YYYY-MM-DD, got {value!r}")
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{field} is not a real calendar date: {value!r}") from None
    return supported_day(day, field)


def range_query(client_id: str, days: DateRange) -> str:
    """The query string of a range's GET endpoints (status, report), in the short date spelling."""
    return urlencode({"client_id": client_id, "start_date": days.start.isoformat(), "end_date": days.end.isoformat()})


#: each date's second spelling, accepted as well (the frontend guide sends ``start_date_str`` to some routes)
DATE_ALIASES: Final = {"start_date": "start_date_str", "end_date": "end_date_str"}


def _document_date_aliases(schema: dict[str, Any]) -> None:
    """The JSON schema (the OpenAPI description) says what validation accepts: each date in either spelling."""
    properties, required = schema.get("properties", {}), schema.get("required", [])
    either = []
    for name, alias in DATE_ALIASES.items():
        if name in properties:
            properties[alias] = {**properties[name], "title": alias.replace("_", " ").title(),
                                 "description": f"The same as `{name}` (used when `{name}` is absent)."}
        if name in required:
            required.remove(name)
            either.append({"anyOf": [{"required": [name]}, {"required": [alias]}]})
    if either:
        schema["allOf"] = either


class RangeRequest(BaseModel):
    """``client_id`` and a date range; dates spelled ``start_date`` or ``start_date_str`` (both accepted)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, populate_by_name=True,
                              json_schema_extra=_document_date_aliases)

    client_id: str = Field(
        min_length=1, max_length=64, pattern=CLIENT_ID_PATTERN,
        description="The clinic's id, as registered with `callsight-admin register-client`.",
    )
    start_date: date = Field(
        validation_alias=AliasChoices("start_date", DATE_ALIASES["start_date"]),
        description="First day of the range (YYYY-MM-DD), in the clinic's time zone.",
    )
    end_date: date = Field(
        validation_alias=AliasChoices("end_date", DATE_ALIASES["end_date"]),
        description="Last day of the range (YYYY-MM-DD), inclusive.",
    )

    @field_validator("start_date", "end_date", mode="before")
    @classmethod
    def _iso_day(cls, value: Any, info: Any) -> date:
        return parse_day(value, info.field_name)

    @model_validator(mode="after")
    def _valid_range(self) -> RangeRequest:
        DateRange(self.start_date, self.end_date)  # raises ValueError naming the problem
        return self

    @property
    def range(self) -> DateRange:
        return DateRange(self.start_date, self.end_date)


class StartRequest(RangeRequest):
    force: bool = Field(default=False, description="Redo calls that already succeeded.")
    confirm_calls: int | None = Field(
        default=None, ge=0,
        description="With `force` over more than ForceConfirmCalls calls: the number of calls it re-runs (the 409 "
                    "`confirmation_required` answer names it), to confirm the spend.",
    )

    @field_validator("confirm_calls", mode="before")
    @classmethod
    def _a_number(cls, value: Any) -> Any:
        # a count the client read off the 409: pydantic's lax int would take true as 1 and "500" as 500
        if isinstance(value, bool | str):
            raise ValueError("must be a number (the calls the 409 confirmation_required answer names)")
        return value


class RunTask(StartRequest):
    """A state machine task's event about one run: the execution's input plus the run's id (its name)."""

    process: Process
    run_id: str = Field(min_length=1)


class ChunkTask(BaseModel):
    """A Map item's event: one chunk (S3 key of a list of calls) of a run, and the run's range (a worker's claims
    hold only while that range's run is this one and still running)."""

    client_id: str = Field(pattern=CLIENT_ID_PATTERN)
    process: Process
    run_id: str = Field(min_length=1)
    chunk_key: str = Field(min_length=1)
    start_date: date
    end_date: date

    @property
    def range(self) -> DateRange:
        return DateRange(self.start_date, self.end_date)


class TaskError(BaseModel):
    """A Step Functions Catch result: the error's name and its cause (for a Lambda error, its JSON body with
    ``errorType`` and ``errorMessage``; for ``States.Timeout``, text)."""

    model_config = ConfigDict(populate_by_name=True)

    error: str = Field(default="States.TaskFailed", alias="Error", min_length=1)
    cause: str | None = Field(default=None, alias="Cause")


class FailChunkTask(ChunkTask):
    """A Map item whose worker died (after its retries): the chunk, and the error Step Functions caught."""

    error: TaskError = Field(default_factory=TaskError)


class BuildReportTask(RunTask):
    """The report's reduce task: the run and the plan's chunk keys (each chunk's themes are stored beside it)."""

    chunks: list[str] = Field(default_factory=list)


class BeginStepTask(StartRequest):
    """A pipeline step about to start: its process, the pipeline execution, and the step's state machine."""

    process: Process
    pipeline_run_id: str = Field(min_length=1)
    pipeline_execution_arn: str | None = None
    state_machine_arn: str = Field(min_length=1)


#: the report's formats: JSON (the default) or Markdown with Russian headings
ReportFormat = Literal["json", "md"]


class ReportQuery(RangeRequest):
    format: ReportFormat = Field(default="json", description="json (default) or md (Markdown, Russian)")


class StatusBreakdown(BaseModel):
    pending: int = 0
    processing: int = 0
    success: int = 0
    failed: int = 0


OverallStatus = Literal["pending", "processing", "completed", "partial", "failed"]


class PostgresSyncStatus(BaseModel):
    """The PostgreSQL sync that ends a recommendations run, as stored on the run (``postgres``)."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["pending", "processing", "completed", "failed"] = "pending"
    rows: dict[str, int] = Field(default_factory=dict, description="the range's rows in each table after the sync")
    upserted: dict[str, int] = Field(default_factory=dict, description="rows this sync inserted or changed")
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


class SyncNotes(BaseModel):
    """sync: every amoCRM note the fetch returned and what became of it, as recorded on the run (``fetched``):
    ``notes_scanned == calls_in_range + duplicates_merged + repeated_notes + out_of_range + rejected_notes``."""

    model_config = ConfigDict(extra="ignore")

    notes_scanned: int = 0
    calls_in_range: int = 0
    duplicates_merged: int = Field(default=0, description="notes of a call filed on several entities, merged")
    repeated_notes: int = Field(default=0, description="the same note returned again by the API")
    out_of_range: int = Field(default=0, description="notes whose call time is outside the range")
    rejected_notes: int = Field(default=0, description="notes not stored; by reason in `rejected`")


class StatusResponse(BaseModel):
    """The status endpoints' answer: the guide's fields first, then what a person needs to follow a run."""

    overall_status: OverallStatus
    total_calls: int
    status_breakdown: StatusBreakdown
    progress_percentage: float = Field(
        description="Finished calls (success + failed) / total * 100, 2 decimals: 100 once a run ended."
    )
    client_id: str
    process: str
    start_date: str
    end_date: str
    skipped: dict[str, int] = Field(default_factory=dict, description="Successes not eligible for the next step.")
    execution_name: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    console_url: str | None = None
    report_url: str | None = Field(default=None, description="recommendations: the range's report, once built")
    postgres_sync: PostgresSyncStatus | None = Field(
        default=None, description="recommendations: the PostgreSQL sync that ends the run")
    rejected: dict[str, int] = Field(
        default_factory=dict, description="sync: amoCRM notes (and pages) not stored, by reason (bad_params...)")
    skipped_entities: dict[str, str] = Field(
        default_factory=dict, description="sync: amoCRM entity types not scanned, and why")
    notes: SyncNotes | None = Field(default=None, description="sync: the notes fetched and what became of them")


class PipelineStatusResponse(BaseModel):
    """The pipeline's status: its own state, the step that runs, and each step's status answer."""

    overall_status: OverallStatus
    current_step: str | None = Field(description="the process the pipeline runs now (null when not running)")
    progress_percentage: float = Field(description="the steps' progress, averaged: 100 once every step ended")
    client_id: str
    process: str = "pipeline"
    start_date: str
    end_date: str
    execution_name: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    console_url: str | None = None
    steps: dict[str, StatusResponse]


class StartResponse(BaseModel):
    status: Literal["accepted", "completed", "partial"]
    message: str
    client_id: str
    process: str
    start_date: str
    end_date: str
    execution_name: str
    status_url: str
    poll_interval_seconds: int = 5
    summary: dict[str, Any] | None = None
    console_url: str | None = None


class FieldProblem(BaseModel):
    field: str = Field(description="what was wrong: a body field, a query parameter, `body` or the `x-api-key` header")
    problem: str


class ErrorResponse(BaseModel):
    """Every error answer, the handlers' and API Gateway's own (401, 403, 429, 504...)."""

    error: str = Field(description="a stable code: invalid_request, unauthorized, forbidden, client_not_found, ...")
    message: str = Field(description="what happened and what to do, for a person")
    errors: list[FieldProblem] = Field(default_factory=list, description="each field's problem (a form shows them)")
