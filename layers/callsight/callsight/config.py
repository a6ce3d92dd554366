"""Configuration of each function: one pydantic-settings model per function, read once at import.

Every variable is prefixed ``CALLSIGHT_`` and set by template.yaml (the local platform reads the
same template). Secrets are never configuration values: only the names of the secrets are.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from callsight.processes import PROCESSES, Process


class _Config(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CALLSIGHT_", frozen=True, extra="ignore")

    table_name: str = Field(min_length=1)


class _ApiConfig(_Config):
    #: the frontend's origin, answered in Access-Control-Allow-Origin (template parameter AllowedOrigin)
    allowed_origin: str = Field(default="*", min_length=1)


class StartProcessConfig(_ApiConfig):
    #: each process's state machine ARN (JSON object, process -> ARN; template.yaml sets it)
    state_machine_arns: dict[Process, str]
    max_body_bytes: int = 16 * 1024
    #: a lock whose execution never started (crash between lock and StartExecution) is stale after this
    lock_grace_seconds: int = 60


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


class DownloadRecordingsConfig(_Config):
    bucket: str = Field(min_length=1)
    download_concurrency: int = Field(default=8, ge=1, le=64)
    download_timeout_seconds: float = 60.0
    max_recording_bytes: int = 200 * 1024 * 1024
    #: private networks (10.20.0.0/16) and host:port pairs (pbx.clinic.local:8080) recording links may reach
    #: (template parameter RecordingPrivateHosts, comma-separated; callsight.links.PrivateHosts reads them);
    #: by default links are fetched from public addresses only
    recording_private_hosts: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("recording_private_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(entry.strip() for entry in value.split(",") if entry.strip())
        return value


class FinishRunConfig(_Config):
    pass


class PlanCallsConfig(_Config):
    bucket: str = Field(min_length=1)
    #: calls per worker task (one Map item): fewer, larger items cut Step Functions transitions
    calls_per_chunk: int = Field(default=12, ge=1, le=500)
    #: the recommendations process cuts its chunks by size: estimated tokens of recommendations per chunk
    report_chunk_tokens: int = Field(default=12_000, ge=500)


class OpenAIConfig(_Config):
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
    #: ``json`` works with every model; ``verbose_json`` (whisper-1) adds timed segments
    transcription_response_format: str = "json"
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    max_audio_seconds: float = Field(default=1400.0, gt=0)


class AnalyzeCallsConfig(OpenAIConfig):
    analysis_model: str = "gpt-4.1-mini"
    #: a response that fails validation is asked again this many times in all, then the call fails
    analysis_attempts: int = Field(default=3, ge=1, le=10)


class _ReportConfig(OpenAIConfig):
    #: the report's model: the analysis model unless a clinic's analysis settings name another
    analysis_model: str = "gpt-4.1-mini"
    #: estimated tokens of one theming prompt; larger inputs are split (map) and merged (reduce)
    report_chunk_tokens: int = Field(default=12_000, ge=500)
    #: an answer failing validation is asked again this many times in all
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


class AdminConfig(_Config):
    amocrm_secret_prefix: str = Field(min_length=1)


class AdminSyncPostgresConfig(SyncPostgresConfig):
    """``callsight-admin sync-postgres``: the function's settings; the secret (callsight/<stage>/database-url) is
    needed only when neither --database-url nor DATABASE_URL is given."""

    database_url_secret: str = ""
