"""Configuration of each function: one pydantic-settings model per function, read once at import.

Every variable is prefixed ``CALLSIGHT_`` and set by template.yaml (the local platform reads the
same template). Secrets are never configuration values: only the names of the secrets are.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from callsight.processes import PROCESSES, Process


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return tuple(entry.strip() for entry in value.split(",") if entry.strip())
    return value


#: a setting given as one comma-separated string ("a, b,c") read as ("a", "b", "c")
CommaSeparated = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split_commas)]


class _Config(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CALLSIGHT_", frozen=True, extra="ignore")

    table_name: str = Field(min_length=1)


class _ApiConfig(_Config):
    #: the frontend's origin, answered in Access-Control-Allow-Origin (template parameter AllowedOrigin, required:
    #: no origin is allowed unless it is named)
    allowed_origin: str = Field(min_length=1)


class StartProcessConfig(_ApiConfig):
    #: each process's state machine ARN (JSON object, process -> ARN; template.yaml sets it)
    state_machine_arns: dict[Process, str]
    max_body_bytes: int = 16 * 1024
    #: a lock whose execution never started (crash between lock and StartExecution) is stale after this
    lock_grace_seconds: int = 60
    #: starts per clinic in each fixed UTC hour (template parameter StartsPerClinicPerHour; a clinic's profile may
    #: set its own ``starts_per_hour``)
    starts_per_hour: int = Field(default=30, ge=1)
    #: a ``force`` start re-running more calls than this needs ``confirm_calls`` (template parameter ForceConfirmCalls)
    force_confirm_calls: int = Field(default=500, ge=0)


    @field_validator("state_machine_arns")
    @classmethod
    def _every_process(cls, value: dict[Process, str]) -> dict[Process, str]:
        missing = sorted(set(PROCESSES) - {p for p, arn in value.items() if arn})
        if missing:
            raise ValueError(f"no state machine ARN for {', '.join(missing)}")
        return value


class ProcessStatusConfig(_ApiConfig):
    pass


class GetReportConfig(_ApiConfig):
    bucket: str = Field(min_length=1)


class ApiDocsConfig(_ApiConfig):
    """GET /api/openapi.json and /api/docs: only the frontend's origin (the description ships with the function)."""


class AuthorizeRequestConfig(_Config):
    """The API's REQUEST authorizer: the table holding the keys' hashes."""


class BeginStepConfig(_Config):
    pass


class SyncCallsConfig(_Config):
    bucket: str = Field(min_length=1)
    amocrm_secret_prefix: str = Field(min_length=1)
    amocrm_requests_per_second: float = Field(default=6.6, gt=0, le=7)
    amocrm_page_size: int = Field(default=250, ge=1, le=250)
    #: pages of one entity type's notes before the sync stops with an error (paging that never ends); the
    #: client's MAX_PAGES (500,000 notes at 250 a page)
    amocrm_max_pages_per_entity: int = Field(default=2000, ge=1)
    min_recording_seconds: int = Field(default=10, ge=0)
    #: calls per download task (one Map item)
    download_chunk_size: int = Field(default=50, ge=1, le=500)


class _WorkerConfig(_Config):
    """A chunk worker (one Map item): it starts no call with less than this left of its Lambda timeout (a call
    started later would likely be stopped with it); the calls not started end failed saying so."""

    worker_deadline_margin_seconds: float = Field(default=120.0, ge=0)


class DownloadRecordingsConfig(_WorkerConfig):
    bucket: str = Field(min_length=1)
    download_concurrency: int = Field(default=8, ge=1, le=64)
    download_timeout_seconds: float = 60.0
    max_recording_bytes: int = 200 * 1024 * 1024
    #: private networks (10.20.0.0/16) and host:port pairs (pbx.clinic.local:8080) recording links may reach
    #: (template parameter RecordingPrivateHosts, comma-separated; callsight.links.PrivateHosts reads them);
    #: by default links are fetched from public addresses only
    recording_private_hosts: CommaSeparated = ()


class FinishRunConfig(_Config):
    pass


class FailChunkConfig(_Config):
    """Closes the chunk of a worker that died: reads the chunk's call list, fails its unfinished calls."""

    bucket: str = Field(min_length=1)


class PlanCallsConfig(_Config):
    bucket: str = Field(min_length=1)
    #: calls per worker task (one Map item): fewer, larger items cut Step Functions transitions
    calls_per_chunk: int = Field(default=12, ge=1, le=500)
    #: the recommendations process cuts its chunks by size: estimated tokens of recommendations per chunk
    report_chunk_tokens: int = Field(default=12_000, ge=500)
    #: the transcription cuts its chunks by audio too: at most this many seconds of recordings (amoCRM's durations)
    #: per chunk (and at most calls_per_chunk calls), so a chunk of hour-long calls does not outrun the task's 900 s
    transcribe_chunk_audio_seconds: int = Field(default=2 * 3600, ge=60)


class OpenAIConfig(_WorkerConfig):
    bucket: str = Field(min_length=1)
    #: an OpenAI-compatible endpoint (vLLM, faster-whisper servers...); empty means OpenAI itself
    openai_base_url: str = ""
    openai_api_key_secret: str = Field(min_length=1)
    #: with the retries and WorkerConcurrency, a chunk of CallsPerChunk calls must fit Lambda's 900 s
    openai_timeout_seconds: float = Field(default=90.0, gt=0)
    #: retries of 408/409/429/5xx inside the OpenAI client (it honours retry-after)
    openai_max_retries: int = Field(default=2, ge=0, le=10)
    #: calls worked on at once inside one worker task
    worker_concurrency: int = Field(default=4, ge=1, le=32)


class TranscribeCallsConfig(OpenAIConfig):
    transcription_model: str = "gpt-transcribe"
    transcription_language: str = "ru"
    transcription_prompt: str = ""
    #: the clinic vocabulary (comma-separated): ``keywords`` for gpt-transcribe, the prompt for the others
    transcription_keywords: CommaSeparated = ()
    #: used when the model answers it (callsight.transcription.models); empty or one it does not answer: the model's
    #: own default (``verbose_json``, timed segments, for whisper-1; ``json`` for the gpt-4o models and gpt-transcribe)
    transcription_response_format: str = ""
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    #: a cap on each part's length; unset: the model's own limit (1,400 s for the gpt-4o models, none for whisper-1)
    max_audio_seconds: float | None = Field(default=None, gt=0)
    #: parts of one recording transcribed at once (each of the worker_concurrency calls has its own pool)
    transcription_part_concurrency: int = Field(default=4, ge=1, le=16)
    #: attempts of one part's request when the answer is unreadable or the connection failed (callsight.llm)
    transcription_attempts: int = Field(default=4, ge=1, le=10)
    #: one part is up to 1,400 s of audio (25 MB): its answer can take minutes, where a chat answer takes seconds
    openai_timeout_seconds: float = Field(default=300.0, gt=0)


#: the analysis's and the report's chat model unless a clinic's analysis settings name another: the mini tier of
#: a family with no announced shutdown (README "Models": how to change it when OpenAI retires one)
DEFAULT_ANALYSIS_MODEL: Final = "gpt-5.4-mini"


class _ChatConfig(OpenAIConfig):
    #: empty (e.g. a template parameter left blank) means DEFAULT_ANALYSIS_MODEL
    analysis_model: str = DEFAULT_ANALYSIS_MODEL

    @field_validator("analysis_model", mode="before")
    @classmethod
    def _default_model(cls, value: object) -> object:
        return DEFAULT_ANALYSIS_MODEL if isinstance(value, str) and not value.strip() else value


class AnalyzeCallsConfig(_ChatConfig):
    #: requests at most for one call's analysis, whatever went wrong (callsight.analysis.chat_models.RequestBudget:
    #: an unreadable answer or a lost connection is sent again after a backoff, one failing validation at once)
    analysis_attempts: int = Field(default=3, ge=1, le=10)


class _ReportConfig(_ChatConfig):
    #: estimated tokens of one theming prompt; larger inputs are split (map) and merged (reduce)
    report_chunk_tokens: int = Field(default=12_000, ge=500)
    #: requests at most for one answer of the report, as analysis_attempts
    report_attempts: int = Field(default=3, ge=1, le=10)


class ThemeCallsConfig(_ReportConfig):
    pass


class BuildReportConfig(_ReportConfig):
    pass


class SyncPostgresConfig(_Config):
    bucket: str = Field(min_length=1)
    #: the Secrets Manager secret holding the PostgreSQL URL (postgresql://USER:PASSWORD@HOST:5432/DB?sslmode=...)
    database_url_secret: str = Field(min_length=1)
    postgres_batch_size: int = Field(default=1000, ge=1, le=20_000)


class RefreshTokensConfig(_Config):
    amocrm_secret_prefix: str = Field(min_length=1)
    #: the scheduled keep-alive exchanges an OAuth pair last exchanged longer ago than this (amoCRM's refresh
    #: tokens expire after about 3 months unused; the schedule runs daily)
    token_refresh_after_days: int = Field(default=7, ge=1, le=60)


class AdminKeysConfig(_Config):
    """``callsight-admin create-key / list-keys / revoke-key``: the table, and the API Gateway usage plan a new key
    joins (the stack's output UsagePlanId; needed by create-key only)."""

    usage_plan_id: str = ""


class AdminConfig(AdminKeysConfig):
    amocrm_secret_prefix: str = Field(min_length=1)


class AdminSyncPostgresConfig(SyncPostgresConfig):
    """``callsight-admin sync-postgres``: the function's settings; the secret (callsight/<stage>/database-url) is
    needed only when neither --database-url nor DATABASE_URL is given."""

    database_url_secret: str = ""
