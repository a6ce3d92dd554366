"""The processes Callsight runs for a clinic and a date range, and the one table of their facts.

Handlers, the demo, the benchmarks and the tests read a process's paths, label and state machine from
``PROCESSES``; template.yaml stays the definition of the resources themselves (a test checks that
its API routes are exactly these paths).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Process(StrEnum):
    SYNC = "sync"
    TRANSCRIBE = "transcribe"
    ANALYZE = "analyze"
    RECOMMENDATIONS = "recommendations"
    #: all of the above in one execution (the recommendations run ends with the PostgreSQL sync)
    PIPELINE = "pipeline"

    @property
    def spec(self) -> ProcessSpec:
        return PROCESSES[self]

    @property
    def label(self) -> str:
        return PROCESSES[self].label


@dataclass(frozen=True)
class ProcessSpec:
    process: Process
    label: str
    start_path: str
    status_path: str
    #: the template's logical id of the process's state machine
    state_machine: str
    #: the date spelling of the frontend guide's start body for this process ("_str": start_date_str)
    guide_date_suffix: str = ""
    #: how long the start request waits for the run to end (and then answers 200 with its summary)
    wait_seconds: float = 0.0


PROCESSES: dict[Process, ProcessSpec] = {spec.process: spec for spec in (
    ProcessSpec(Process.SYNC, "call sync from amoCRM", "/api/calls-parallel-bulk/sync-by-date-range",
                "/api/calls-parallel-bulk/sync-by-date-range-status", "SyncStateMachine", "_str", wait_seconds=20.0),
    ProcessSpec(Process.TRANSCRIBE, "transcription", "/api/calls/transcribe-by-date-range",
                "/api/calls/transcribe-by-date-range-status", "TranscribeStateMachine"),
    ProcessSpec(Process.ANALYZE, "call analysis", "/api/analyze-by-date-range", "/api/analyze-by-date-range-status",
                "AnalyzeStateMachine", "_str"),
    ProcessSpec(Process.RECOMMENDATIONS, "recommendations report and PostgreSQL sync",
                "/api/recommendations/analyze-by-date-range", "/api/recommendations/analyze-by-date-range-status",
                "RecommendationsStateMachine", "_str"),
    ProcessSpec(Process.PIPELINE, "full pipeline (sync, transcription, analysis, report, PostgreSQL)",
                "/api/pipeline/run-by-date-range", "/api/pipeline/run-by-date-range-status", "PipelineStateMachine"),
)}

#: the pipeline's steps, in order: each is a process run of its own (its own execution and status)
PIPELINE_STEPS: tuple[Process, ...] = (Process.SYNC, Process.TRANSCRIBE, Process.ANALYZE, Process.RECOMMENDATIONS)

#: GET: the range's recommendations report (JSON, or Markdown with format=md)
REPORT_PATH = "/api/recommendations/report"
#: GET, no API key: the API's OpenAPI description (functions/api_docs/openapi.json, `make openapi`) and Swagger UI
OPENAPI_PATH = "/api/openapi.json"
DOCS_PATH = "/api/docs"


class CallStatus(StrEnum):
    """A call's status within one process: pending -> processing -> success | failed."""

    PENDING = "pending"
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILED = "failed"


class SkipReason(StrEnum):
    """Why a synced call will not be transcribed (it still counts as a sync success)."""

    NO_RECORDING = "no_recording"
    TOO_SHORT = "too_short"
