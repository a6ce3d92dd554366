"""Typed rows of the BI tables and the pure functions mapping DynamoDB call items (and S3 JSON) to them.

Lenient by design, because one odd item must not stop a clinic's sync: a missing field, a value of the wrong type
(``"abc"`` where an int is expected; a numeric string such as ``"42"`` is read as the number), an integer outside
the column's range, a non-finite float, an unparsable date all become NULL; empty strings become NULL; NUL
characters (which PostgreSQL text cannot hold) are removed. Only a call item without ``call_id`` (or not a mapping,
or of another clinic, or repeated in a batch) is skipped, and the caller counts it by :class:`Skip` reason.

The phone is never stored: ``phone_hash`` is the sha256 hex of ``"<client_id>:<digits of the phone>"``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar, TypeGuard
from zoneinfo import ZoneInfo

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
REAL_MAX = 3.4e38
RECORDING_STATUSES = ("downloaded", "no_recording", "too_short", "failed", "pending")
_NON_DIGITS = re.compile(r"\D+")


class Skip(StrEnum):
    """Why a call item was not synced."""

    NOT_A_MAPPING = "not_a_mapping"
    NO_CALL_ID = "no_call_id"
    OTHER_CLIENT = "other_client"
    DUPLICATE = "duplicate"  # the same call_id again in one batch: the later item wins


# ---------------------------------------------------------------------------------------------------------- rows
@dataclass(frozen=True, slots=True)
class Row:
    """A row of ``TABLE``; ``KEY`` is its primary key, the fields are its columns in order."""

    TABLE: ClassVar[str]
    KEY: ClassVar[tuple[str, ...]]

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True, slots=True)
class ClinicRow(Row):
    TABLE: ClassVar[str] = "clinics"
    KEY: ClassVar[tuple[str, ...]] = ("client_id",)
    client_id: str
    name: str | None = None
    timezone: str | None = None
    amocrm_subdomain: str | None = None


@dataclass(frozen=True, slots=True)
class CallRow(Row):
    TABLE: ClassVar[str] = "calls"
    KEY: ClassVar[tuple[str, ...]] = ("client_id", "call_id")
    client_id: str
    call_id: str
    call_time: datetime | None
    local_day: date | None
    direction: str | None
    duration_s: int | None
    administrator: str | None
    responsible_user_id: int | None
    phone_hash: str | None
    amo_call_status: int | None
    call_result: str | None
    entity_type: str | None
    entity_id: int | None
    amo_note_id: int | None
    recording_status: str
    recording_error: str | None
    transcribe_status: str | None
    transcribe_error: str | None
    analyze_status: str | None
    analyze_error: str | None


@dataclass(frozen=True, slots=True)
class TranscriptLineRow(Row):
    TABLE: ClassVar[str] = "transcript_lines"
    KEY: ClassVar[tuple[str, ...]] = ("client_id", "call_id", "line_no")
    client_id: str
    call_id: str
    line_no: int
    speaker: str | None
    start_s: float | None
    end_s: float | None
    text: str | None


@dataclass(frozen=True, slots=True)
class AnalysisRow(Row):
    TABLE: ClassVar[str] = "analyses"
    KEY: ClassVar[tuple[str, ...]] = ("client_id", "call_id")
    client_id: str
    call_id: str
    call_type: str | None
    booked: bool | None
    booking_reason: str | None
    overall_score: int | None
    patient_sentiment: str | None
    summary: str | None
    model: str | None
    analyzed_at: datetime | None


@dataclass(frozen=True, slots=True)
class CriterionScoreRow(Row):
    TABLE: ClassVar[str] = "criterion_scores"
    KEY: ClassVar[tuple[str, ...]] = ("client_id", "call_id", "criterion")
    client_id: str
    call_id: str
    criterion: str
    score: int | None
    evidence: str | None


@dataclass(frozen=True, slots=True)
class RecommendationRow(Row):
    TABLE: ClassVar[str] = "recommendations"
    KEY: ClassVar[tuple[str, ...]] = ("client_id", "call_id", "position")
    client_id: str
    call_id: str
    position: int
    text: str | None


@dataclass(frozen=True, slots=True)
class ReportRow(Row):
    TABLE: ClassVar[str] = "reports"
    KEY: ClassVar[tuple[str, ...]] = ("client_id", "start_date", "end_date")
    client_id: str
    start_date: date
    end_date: date
    generated_at: datetime | None
    total_calls: int | None
    analysed_calls: int | None
    report: str | None  # the whole report as JSON text (a jsonb column)
    markdown: str | None


@dataclass(frozen=True, slots=True)
class ReportProblemRow(Row):
    TABLE: ClassVar[str] = "report_problems"
    KEY: ClassVar[tuple[str, ...]] = ("client_id", "start_date", "end_date", "rank")
    client_id: str
    start_date: date
    end_date: date
    rank: int
    title: str | None
    calls: int | None
    share: float | None


@dataclass(frozen=True, slots=True)
class CallRows:
    """Everything one call item maps to, except its transcript lines (their JSON is in S3 at ``transcript_key``)."""

    call: CallRow
    analysis: AnalysisRow | None
    criteria: tuple[CriterionScoreRow, ...]
    recommendations: tuple[RecommendationRow, ...]
    transcript_key: str | None


# ------------------------------------------------------------------------------------------------------ mapping
def clinic_row(clinic: ClinicRow | Mapping[str, Any]) -> ClinicRow:
    """The clinic's row; raises ValueError when it has no ``client_id`` (the sync cannot be attributed)."""
    if isinstance(clinic, ClinicRow):
        return clinic
    client_id = _text(clinic.get("client_id")) if isinstance(clinic, Mapping) else None
    if client_id is None:
        raise ValueError("the clinic has no client_id")
    return ClinicRow(client_id, _text(clinic.get("name")), _text(clinic.get("timezone")),
                     _text(clinic.get("amocrm_subdomain")))


def zone(name: str | None) -> tzinfo:
    """The clinic's time zone (UTC when missing or unknown): naive timestamps are read in it."""
    try:
        return ZoneInfo(name) if name else UTC
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError; odd names raise ValueError
        return UTC


def call_rows(item: Any, *, client_id: str, tz: tzinfo = UTC) -> CallRows | Skip:
    """The rows of one DynamoDB call item, or why it is skipped."""
    if not isinstance(item, Mapping):
        return Skip.NOT_A_MAPPING
    call_id = _text(item.get("call_id"))
    if call_id is None:
        return Skip.NO_CALL_ID
    if item.get("client_id") is not None and _text(item.get("client_id")) != client_id:
        return Skip.OTHER_CLIENT
    call_time = _timestamp(item.get("call_time"), tz)
    call = CallRow(
        client_id=client_id, call_id=call_id, call_time=call_time, local_day=_local_day(item, call_time),
        direction=_text(item.get("direction")), duration_s=_int(item.get("duration")),
        administrator=_text(item.get("administrator")),
        responsible_user_id=_int(item.get("responsible_user_id"), INT64),
        phone_hash=phone_hash(client_id, item.get("phone")), amo_call_status=_int(item.get("call_status")),
        call_result=_text(item.get("call_result")), entity_type=_text(item.get("entity_type")),
        entity_id=_int(item.get("entity_id"), INT64), amo_note_id=_int(item.get("amo_note_id"), INT64),
        recording_status=recording_status(item), recording_error=_text(item.get("sync_error")),
        transcribe_status=_text(item.get("transcribe_status")), transcribe_error=_text(item.get("transcribe_error")),
        analyze_status=_text(item.get("analyze_status")), analyze_error=_text(item.get("analyze_error")),
    )
    analysis, criteria, recommendations = _analysis_rows(item, client_id, call_id)
    return CallRows(call, analysis, criteria, recommendations, _text(item.get("transcript_key")))


def recording_status(item: Mapping[str, Any]) -> str:
    skip = item.get("sync_skip")
    if skip in ("no_recording", "too_short"):
        return str(skip)
    status = item.get("sync_status")
    if status == "failed":
        return "failed"
    if status == "success" and item.get("recording_key"):
        return "downloaded"
    return "pending"


def phone_hash(client_id: str, phone: Any) -> str | None:
    if isinstance(phone, bool) or not isinstance(phone, str | int):
        return None
    digits = _NON_DIGITS.sub("", str(phone))
    return hashlib.sha256(f"{client_id}:{digits}".encode()).hexdigest() if digits else None


def transcript_line_rows(client_id: str, call_id: str, transcript: Any) -> tuple[TranscriptLineRow, ...]:
    """One row per entry of the transcript's ``lines`` (1-based ``line_no``); nothing for an odd transcript."""
    return tuple(TranscriptLineRow(*values) for values in transcript_line_values(client_id, call_id, transcript))


#: a transcript line's columns, in TranscriptLineRow's order
LineValues = tuple[str, str, int, str | None, float | None, float | None, str | None]


def transcript_line_values(client_id: str, call_id: str, transcript: Any) -> list[LineValues]:
    """``transcript_line_rows`` as plain tuples, what COPY sends: most of a sync's rows are transcript lines, so
    the common case (strings and floats) is checked inline and the general helpers only see the odd values."""
    lines = transcript.get("lines") if _is_mapping(transcript) else None
    if not isinstance(lines, list | tuple):
        return []
    values: list[LineValues] = []
    append = values.append
    for line_no, line in enumerate(lines, start=1):
        if type(line) is dict or _is_mapping(line):
            speaker, start, end, text = line.get("speaker"), line.get("start"), line.get("end"), line.get("text")
            append((client_id, call_id, line_no,
                    (speaker.replace("\x00", "") or None) if type(speaker) is str else _text(speaker),
                    None if start is None else start if type(start) is float and -REAL_MAX <= start <= REAL_MAX
                    else _float(start),
                    None if end is None else end if type(end) is float and -REAL_MAX <= end <= REAL_MAX
                    else _float(end),
                    (text.replace("\x00", "") or None) if type(text) is str else _text(text)))
        else:
            append((client_id, call_id, line_no, None, None, None,
                    (line.replace("\x00", "") or None) if isinstance(line, str) else None))
    return values


def report_rows(client_id: str, start_date: date, end_date: date, report: Any,
                markdown: str | None = None) -> tuple[ReportRow, tuple[ReportProblemRow, ...]]:
    """The range's report row (the whole report as jsonb) and one row per problem (by rank, first one wins)."""
    body = report if isinstance(report, Mapping) else {}
    row = ReportRow(client_id, start_date, end_date, _timestamp(body.get("generated_at"), UTC),
                    _int(body.get("total_calls")), _int(body.get("analysed_calls")),
                    json_text(report) if report is not None else None, _text(markdown))
    problems: dict[int, ReportProblemRow] = {}
    listed = body.get("problems")
    for position, problem in enumerate(listed if isinstance(listed, list | tuple) else (), start=1):
        if not isinstance(problem, Mapping):
            continue
        rank = _int(problem.get("rank"))
        rank = position if rank is None else rank
        if rank not in problems:
            problems[rank] = ReportProblemRow(client_id, start_date, end_date, rank, _text(problem.get("title")),
                                              _int(problem.get("calls")), _float(problem.get("share")))
    return row, tuple(problems.values())


def json_text(value: Any) -> str | None:
    """JSON for a jsonb column: NUL characters and non-finite floats (jsonb rejects both) removed; None if unusable."""
    try:
        return json.dumps(_json_safe(value), ensure_ascii=False, sort_keys=True, default=str, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None


# ------------------------------------------------------------------------------------------------------ helpers
def _analysis_rows(item: Mapping[str, Any], client_id: str, call_id: str) -> tuple[
        AnalysisRow | None, tuple[CriterionScoreRow, ...], tuple[RecommendationRow, ...]]:
    raw = item.get("analysis")
    analysis: Mapping[str, Any] = raw if _is_mapping(raw) else {}
    if not analysis and all(item.get(k) is None for k in ("call_type", "booked", "overall_score")):
        return None, (), ()
    outcome = analysis.get("outcome")
    outcome = outcome if _is_mapping(outcome) else {}
    booked = _bool(outcome.get("booked"))
    score = _int(analysis.get("overall_score"), (0, 100))
    row = AnalysisRow(
        client_id=client_id, call_id=call_id,
        call_type=_text(analysis.get("call_type")) or _text(item.get("call_type")),
        booked=booked if booked is not None else _bool(item.get("booked")),
        booking_reason=_text(outcome.get("reason")),
        overall_score=score if score is not None else _int(item.get("overall_score"), (0, 100)),
        patient_sentiment=_text(analysis.get("patient_sentiment")) or _text(item.get("patient_sentiment")),
        summary=_text(analysis.get("summary")), model=_text(item.get("analysis_model")),
        analyzed_at=_timestamp(item.get("analyzed_at"), UTC),
    )
    criteria = analysis.get("criteria")
    scores = []
    for name, value in (criteria.items() if _is_mapping(criteria) else ()):
        criterion = _text(name)
        if criterion is None:
            continue
        if _is_mapping(value):
            scores.append(CriterionScoreRow(client_id, call_id, criterion, _int(value.get("score"), (0, 10)),
                                            _text(value.get("evidence"))))
        else:
            scores.append(CriterionScoreRow(client_id, call_id, criterion, _int(value, (0, 10)), None))
    advice = analysis.get("recommendations")
    texts: Iterable[Any] = advice if isinstance(advice, list | tuple) else [advice] if isinstance(advice, str) else ()
    recommendations = tuple(RecommendationRow(client_id, call_id, position, _text(text))
                            for position, text in enumerate(texts, start=1))
    return row, tuple(scores), recommendations


def _is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    return type(value) is dict or isinstance(value, Mapping)


def _text(value: Any) -> str | None:
    if type(value) is str:  # the common case first: this runs for every field of every row
        return value.replace("\x00", "") or None
    if isinstance(value, str):
        text = value
    elif isinstance(value, int | float | Decimal):  # a number where text is expected: its text
        text = str(value)
    else:
        return None
    return text.replace("\x00", "") or None


def _int(value: Any, bounds: tuple[int, int] = INT32) -> int | None:
    number: int | None = None
    if type(value) is int:
        return value if bounds[0] <= value <= bounds[1] else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float | Decimal):
        number = int(value) if math.isfinite(value) and value == int(value) else None
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            as_float = _float(value)
            number = int(as_float) if as_float is not None and as_float.is_integer() else None
    if number is None or not bounds[0] <= number <= bounds[1]:
        return None
    return number


def _float(value: Any) -> float | None:
    if type(value) is float:  # NaN and the infinities fail the comparison
        return value if -REAL_MAX <= value <= REAL_MAX else None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) and abs(number) <= REAL_MAX else None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, int | Decimal) and value in (0, 1):
        return bool(value)
    return None


def _timestamp(value: Any, tz: tzinfo) -> datetime | None:
    """An ISO 8601 string (naive ones in ``tz``) or a unix time; None when unparsable."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=tz)
    try:
        if isinstance(value, str) and value.strip():
            moment = datetime.fromisoformat(value.strip())
            return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)
        if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
            return datetime.fromtimestamp(float(value), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    return None


def _date(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        return None


def _local_day(item: Mapping[str, Any], call_time: datetime | None) -> date | None:
    """The item's ``day``, else the day in its ``sk`` ("<day>#<call_id>"), else the call time's own date."""
    day = _date(item.get("day"))
    if day is None and isinstance(item.get("sk"), str):
        day = _date(item["sk"].partition("#")[0])
    if day is None and call_time is not None:
        day = call_time.date()
    return day


def _json_safe(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {str(k).replace("\x00", ""): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
