"""The report's figures, computed from the call items only (no LLM).

A call item is what DynamoDB holds for a call (Decimals already converted). Any field may be absent or
odd: such an item or field is skipped and counted in ``ReportStats.skipped``, never an error.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

from callsight.analysis.models import CallType, QualityCriteria
from callsight.report.models import (
    AdministratorStats,
    BookingStats,
    CallTypeStats,
    Example,
    HourStats,
    MissedByHour,
    MissedOpportunities,
    Recommendation,
    ReportStats,
)

#: Call types where a booking is possible: the denominator of the booking conversion.
BOOKING_POSSIBLE_TYPES: Final = (CallType.BOOKING.value, CallType.RESCHEDULE.value, CallType.PRICE_QUESTION.value)
#: A booking counts as not offered when ``criteria.booking_offer.score`` is at most this.
NO_BOOKING_OFFER_MAX_SCORE: Final = 3
#: amoCRM ``call_status`` "the conversation took place".
CONVERSATION_STATUS: Final = 4
#: The rubric's criteria, in the order of ``QualityCriteria`` (the order breaks ties).
CRITERIA: Final = tuple(QualityCriteria.model_fields)
UNKNOWN_CALL_TYPE: Final = "unknown"
_CALL_TYPES: Final = tuple(t.value for t in CallType)
_EXAMPLES: Final = 3


def estimate_tokens(text: str) -> int:
    """A conservative token count for Russian text: one token per three characters (rounded up)."""
    return math.ceil(len(text) / 3) if text else 0


def recommendation_tokens(call: Any) -> int:
    """A call's weight in a theming prompt: its recommendations' estimated tokens (a numbered line each)."""
    return sum(estimate_tokens(rec.text) + 4 for rec in recommendations_of(call))


@dataclass(frozen=True, slots=True)
class CallView:
    """What the report uses of one call item, read defensively."""

    call_id: str
    call_time: str | None  # the item's ISO string, when it parses
    hour: int | None  # the local hour of call_time
    incoming: bool
    answered: bool  # call_status == 4 and duration > 0
    administrator: str
    analysed: bool
    call_type: str | None  # analysed calls: a CallType value or "unknown"
    booked: bool
    overall_score: int | None
    scores: dict[str, int]
    evidence: dict[str, str]
    summary: str
    reason: str
    recommendations: tuple[Recommendation, ...]

    @property
    def booking_possible(self) -> bool:
        return self.call_type in BOOKING_POSSIBLE_TYPES

    @property
    def missed_opportunity(self) -> bool:
        offer = self.scores.get("booking_offer")
        return (self.analysed and self.answered and self.booking_possible and not self.booked
                and offer is not None and offer <= NO_BOOKING_OFFER_MAX_SCORE)

    def quote(self) -> str:
        """The evidence of the weakest criterion (the lowest score, the rubric's order among equals) when
        it has evidence, else the summary, else the outcome's reason."""
        ranked = sorted((score, CRITERIA.index(name), name) for name, score in self.scores.items())
        weakest = self.evidence.get(ranked[0][2], "") if ranked else ""
        return weakest or self.summary or self.reason

    def example(self, quote: str | None = None) -> Example:
        return Example(call_id=self.call_id, call_time=self.call_time, administrator=self.administrator,
                       quote=self.quote() if quote is None else quote)


@dataclass(frozen=True, slots=True)
class CallData:
    calls: list[CallView]
    skipped: dict[str, int]


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _text(value: Any) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def _time(value: Any) -> tuple[str | None, int | None]:
    if not isinstance(value, str) or len(value.strip()) <= 10:  # no time of day in it
        return None, None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None, None
    return value.strip(), moment.hour  # the offset is the clinic's: the hour is local


def _day(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        return None


def _recommendations(call_id: str, analysis: dict[str, Any], skipped: Counter[str]) -> tuple[Recommendation, ...]:
    raw = analysis.get("recommendations")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        skipped["recommendations_unusable"] += 1
        return ()
    found: list[Recommendation] = []
    for position, item in enumerate(raw):
        text = _text(item)
        if text:
            found.append(Recommendation(call_id=call_id, position=position, text=text))
        else:
            skipped["recommendation_unusable"] += 1
    return tuple(found)


def _view(item: dict[str, Any], call_id: str, skipped: Counter[str]) -> CallView:
    call_time, hour = _time(item.get("call_time"))
    duration = _int(item.get("duration")) or 0
    answered = _int(item.get("call_status")) == CONVERSATION_STATUS and duration > 0
    incoming = item.get("direction") == "incoming"
    if incoming and hour is None:
        skipped["incoming_without_time"] += 1
    administrator = _text(item.get("administrator"))
    analysis = item.get("analysis")
    analysed = item.get("analyze_status") == "success" and isinstance(analysis, dict)
    if item.get("analyze_status") == "success" and not isinstance(analysis, dict):
        skipped["analysis_unusable"] += 1
    base: dict[str, Any] = {"call_id": call_id, "call_time": call_time, "hour": hour, "incoming": incoming,
                            "answered": answered, "administrator": administrator}
    if not analysed or not isinstance(analysis, dict):
        return CallView(**base, analysed=False, call_type=None, booked=False, overall_score=None, scores={},
                        evidence={}, summary="", reason="", recommendations=())
    call_type = analysis.get("call_type")
    if call_type not in _CALL_TYPES:
        call_type = UNKNOWN_CALL_TYPE
    outcome = analysis.get("outcome")
    booked_value = outcome.get("booked") if isinstance(outcome, dict) else None
    if not isinstance(booked_value, bool):
        booked_value = item.get("booked")
    score = _int(analysis.get("overall_score"))
    if score is not None and not 0 <= score <= 100:
        score = None
    scores: dict[str, int] = {}
    evidence: dict[str, str] = {}
    criteria = analysis.get("criteria")
    if isinstance(criteria, dict):
        for name in CRITERIA:
            criterion = criteria.get(name)
            if not isinstance(criterion, dict):
                continue
            value = _int(criterion.get("score"))
            if value is not None and 0 <= value <= 10:
                scores[name] = value
                evidence[name] = _text(criterion.get("evidence"))
    reason = _text(outcome.get("reason")) if isinstance(outcome, dict) else ""
    return CallView(**base, analysed=True, call_type=str(call_type), booked=booked_value is True, overall_score=score,
                    scores=scores, evidence=evidence, summary=_text(analysis.get("summary")), reason=reason,
                    recommendations=_recommendations(call_id, analysis, skipped))


def read_calls(calls: Iterable[Any], *, start_date: date | None = None, end_date: date | None = None) -> CallData:
    """The usable calls, each once (the first item of a ``call_id``); items whose ``day`` is outside the
    range (when given) are left out. What is left out or unusable is counted by reason."""
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    views: list[CallView] = []
    for item in calls:
        if not isinstance(item, dict):
            skipped["item_not_a_dict"] += 1
            continue
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or not call_id.strip():
            skipped["item_without_call_id"] += 1
            continue
        call_id = call_id.strip()
        if call_id in seen:
            skipped["item_duplicate"] += 1
            continue
        day = _day(item.get("day"))
        if day is not None and ((start_date and day < start_date) or (end_date and day > end_date)):
            skipped["item_outside_range"] += 1
            continue
        seen.add(call_id)
        views.append(_view(item, call_id, skipped))
    return CallData(views, dict(sorted(skipped.items())))


def recommendations_of(call: dict[str, Any]) -> list[Recommendation]:
    """The recommendations of an analysed call (``analyze_status == "success"``), blank ones left out;
    ``position`` is the index in ``analysis.recommendations``. Any other call: none."""
    if not isinstance(call, dict):
        return []
    call_id = call.get("call_id")
    if not isinstance(call_id, str) or not call_id.strip():
        return []
    return list(_view(call, call_id.strip(), Counter()).recommendations)


# ---------------------------------------------------------------------------------------- figures


def share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _mean(values: Sequence[int]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def _administrators(calls: Sequence[CallView]) -> list[AdministratorStats]:
    by_admin: dict[str, list[CallView]] = defaultdict(list)
    for call in calls:
        by_admin[call.administrator].append(call)
    result: list[AdministratorStats] = []
    for name, group in by_admin.items():
        analysed = [c for c in group if c.analysed]
        booked = sum(1 for c in analysed if c.booked)
        averages = {criterion: _mean([c.scores[criterion] for c in analysed if criterion in c.scores])
                    for criterion in CRITERIA}
        known = [(value, CRITERIA.index(name), name) for name, value in averages.items() if value is not None]
        weakest = min(known) if known else None
        result.append(AdministratorStats(
            administrator=name, calls=len(group), analysed=len(analysed), booked=booked,
            booked_share=share(booked, len(analysed)),
            average_score=_mean([c.overall_score for c in analysed if c.overall_score is not None]),
            weakest_criterion=weakest[2] if weakest else None,
            weakest_criterion_score=weakest[0] if weakest else None))
    return sorted(result, key=lambda a: (-a.calls, a.administrator == "", a.administrator))


def _call_types(analysed: Sequence[CallView]) -> list[CallTypeStats]:
    by_type: dict[str, list[CallView]] = defaultdict(list)
    for call in analysed:
        by_type[call.call_type or UNKNOWN_CALL_TYPE].append(call)
    order = [*_CALL_TYPES, UNKNOWN_CALL_TYPE]
    result = []
    for call_type, group in by_type.items():
        booked = sum(1 for c in group if c.booked)
        result.append(CallTypeStats(
            call_type=call_type, calls=len(group), share=share(len(group), len(analysed)) or 0.0, booked=booked,
            booked_share=share(booked, len(group)),
            average_score=_mean([c.overall_score for c in group if c.overall_score is not None])))
    return sorted(result, key=lambda t: (-t.calls, order.index(t.call_type)))


def _booking(analysed: Sequence[CallView]) -> BookingStats:
    eligible = [c for c in analysed if c.booking_possible]
    booked = sum(1 for c in eligible if c.booked)
    return BookingStats(call_types=list(BOOKING_POSSIBLE_TYPES), eligible_calls=len(eligible), booked_calls=booked,
                        conversion=share(booked, len(eligible)),
                        booked_all_types=sum(1 for c in analysed if c.booked))


def _missed_opportunities(analysed: Sequence[CallView]) -> MissedOpportunities:
    eligible = [c for c in analysed if c.answered and c.booking_possible]
    missed = [c for c in eligible if c.missed_opportunity]
    chosen = sorted(missed, key=lambda c: (c.overall_score if c.overall_score is not None else 101,
                                           c.call_time or "", c.call_id))[:_EXAMPLES]
    return MissedOpportunities(booking_offer_max_score=NO_BOOKING_OFFER_MAX_SCORE, eligible_calls=len(eligible),
                               count=len(missed), share=share(len(missed), len(eligible)),
                               examples=[c.example(c.summary or c.reason) for c in chosen])


def _missed_by_hour(calls: Sequence[CallView]) -> MissedByHour:
    incoming = [c for c in calls if c.incoming]
    per_hour: dict[int, list[CallView]] = defaultdict(list)
    for call in incoming:
        if call.hour is not None:
            per_hour[call.hour].append(call)
    hours = []
    for hour in sorted(per_hour):
        missed = sum(1 for c in per_hour[hour] if not c.answered)
        hours.append(HourStats(hour=hour, incoming=len(per_hour[hour]), missed=missed,
                               missed_share=share(missed, len(per_hour[hour])) or 0.0))
    missed_all = sum(1 for c in incoming if not c.answered)
    return MissedByHour(incoming=len(incoming), missed=missed_all, missed_share=share(missed_all, len(incoming)),
                        without_time=sum(1 for c in incoming if c.hour is None), hours=hours)


def stats_of(data: CallData) -> ReportStats:
    analysed = [c for c in data.calls if c.analysed]
    return ReportStats(
        total_calls=len(data.calls), analysed_calls=len(analysed),
        calls_with_recommendations=sum(1 for c in analysed if c.recommendations), skipped=dict(data.skipped),
        administrators=_administrators(data.calls), call_types=_call_types(analysed), booking=_booking(analysed),
        missed_opportunities=_missed_opportunities(analysed), missed_by_hour=_missed_by_hour(data.calls))


def compute_stats(calls: Sequence[Any], *, start_date: date | None = None,
                  end_date: date | None = None) -> ReportStats:
    """Every figure of the report except the problems (see ``definitions()`` for how each is computed).

    A call is counted once per ``call_id``; with ``start_date``/``end_date``, items whose ``day`` is
    outside the range are left out. *Analysed*: ``analyze_status == "success"`` with an ``analysis``.
    *Answered*: ``call_status == 4`` (conversation) and ``duration > 0``.

    - booking conversion = booked / analysed calls of the types where a booking is possible
      (``BOOKING_POSSIBLE_TYPES``: booking, reschedule, price_question);
    - missed opportunity = an answered, analysed call of such a type, not booked, where no booking was
      offered (``criteria.booking_offer.score <= NO_BOOKING_OFFER_MAX_SCORE``); its share is of the
      answered, analysed calls of those types;
    - missed incoming call = incoming and not answered; grouped by the local hour of ``call_time``.
    """
    return stats_of(read_calls(calls, start_date=start_date, end_date=end_date))


def definitions() -> dict[str, str]:
    """How each figure is computed, in Russian (the report carries these)."""
    types = ", ".join(BOOKING_POSSIBLE_TYPES)
    return {
        "total_calls": "Звонки за период: каждый звонок (call_id) считается один раз.",
        "analysed_calls": "Проанализированные звонки: анализ завершён успешно (analyze_status = success).",
        "calls_with_recommendations": "С рекомендациями — проанализированные звонки, в которых модель дала хотя бы "
                                      "одну рекомендацию.",
        "folded_calls": "Вошли в темы — проанализированные звонки, рекомендации которых вошли в темы отчёта.",
        "answered": "Состоявшийся разговор: статус звонка в amoCRM «Разговор состоялся» (4) и длительность больше 0 с.",
        "problems": "Проблема — тема, объединяющая похожие рекомендации. Звонков — сколько разных проанализированных "
                    "звонков содержат рекомендацию этой темы; доля — от всех проанализированных звонков. "
                    "Темы сформулированы моделью, числа посчитаны по данным.",
        "administrators": "По администратору: звонков всего, проанализировано, записано (среди проанализированных), "
                          "доля записанных, средняя общая оценка (0–100) и самый слабый критерий — с наименьшей "
                          "средней оценкой (0–10) по его проанализированным звонкам.",
        "call_types": "Тип звонка определяет модель; доля — от проанализированных звонков, доля записанных — "
                      "от звонков этого типа.",
        "booking_conversion": f"Конверсия в запись = записанные / проанализированные звонки типов, в которых "
                              f"запись возможна ({types}).",
        "missed_opportunities": f"Упущенная возможность — состоявшийся проанализированный звонок типа {types}, "
                                f"в котором пациент не записан и запись не предлагалась (оценка критерия "
                                f"«предложение записи» не выше {NO_BOOKING_OFFER_MAX_SCORE} из 10). Доля — от "
                                f"состоявшихся проанализированных звонков этих типов.",
        "missed_by_hour": "Пропущенный звонок — входящий, в котором разговор не состоялся (статус не 4 или "
                          "длительность 0 с). Час — местное время звонка; доля — от входящих звонков этого часа.",
        "skipped": "Записи и поля, которые не удалось использовать (нет call_id, повтор, вне периода, "
                   "нечитаемый анализ или время), по причинам.",
    }
