"""The five processes Callsight runs for a clinic and a date range."""

from __future__ import annotations

from enum import StrEnum


class Process(StrEnum):
    SYNC = "sync"
    TRANSCRIBE = "transcribe"
    ANALYZE = "analyze"
    RECOMMENDATIONS = "recommendations"

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Process.SYNC: "call sync from amoCRM",
    Process.TRANSCRIBE: "transcription",
    Process.ANALYZE: "call analysis",
    Process.RECOMMENDATIONS: "recommendations report",
}


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
