"""The report's figures: equal to an independent recomputation over generated call items; odd items skipped.

``make_calls`` (varied call items as DynamoDB holds them) is shared by the other report tests.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from callsight.analysis.models import CallType, QualityCriteria
from callsight.report import (
    BOOKING_POSSIBLE_TYPES,
    NO_BOOKING_OFFER_MAX_SCORE,
    ReportStats,
    compute_stats,
    estimate_tokens,
    recommendations_of,
)

START = date(2026, 11, 1)
END = date(2026, 11, 30)
ADMINS = ("Анна Смирнова", "Ольга Кузнецова", "Игорь Петров", "Мария Васильева", "")
CRITERIA = tuple(QualityCriteria.model_fields)
TYPES = tuple(t.value for t in CallType)
#: texts matching the stub's themes and texts that do not, with variants identical once normalised
REC_POOL = (
    "Начинайте разговор с приветствия, названия клиники и своего имени.",
    "начинайте разговор с приветствия, названия клиники и своего имени",
    "Представляйтесь в начале звонка.",
    "Выясняйте потребность пациента открытым вопросом.",
    "Называйте специализацию врача и стоимость приёма.",
    "Отрабатывайте возражения: предложите альтернативу.",
    "Предлагайте запись на конкретное время.",
    "Предлагайте  запись на конкретное время!",
    "Завершайте звонок следующим шагом: SMS-напоминание.",
    "Следите за тоном, говорите «пожалуйста».",
    "Не перебивайте пациента.",
    "Не перебивайте пациента",
    "Уточняйте номер полиса ОМС.",
    "Говорите медленнее и разборчивее.",
    "Сверяйте фамилию пациента по карте.",
    "Не оставляйте пациента на линии дольше минуты без объяснений.",
)


def _analysis(rng: random.Random, index: int, pool: Sequence[str]) -> dict[str, Any]:
    call_type = rng.choice(TYPES)
    criteria = {name: {"score": rng.randrange(11), "evidence": rng.choice(["", f"цитата {index} {name}"])}
                for name in CRITERIA}
    return {
        "call_type": call_type,
        "outcome": {"booked": call_type != "spam" and rng.random() < 0.45, "reason": f"причина {index}"},
        "criteria": criteria,
        "overall_score": rng.randrange(101),
        "patient_sentiment": rng.choice(["positive", "neutral", "negative"]),
        "summary": f"Резюме звонка {index}.",
        "recommendations": rng.sample(list(pool), k=rng.choice([0, 1, 2, 3, 3, 4, 5])),
    }


def make_calls(count: int, seed: int = 1, pool: Sequence[str] = REC_POOL) -> list[dict[str, Any]]:
    """Varied call items: administrators (and none), every call type, booked or not, answered or missed
    incoming calls at every hour, unanalysed and failed calls, and some missing or odd fields."""
    rng = random.Random(seed)
    calls: list[dict[str, Any]] = []
    for index in range(count):
        day = START + timedelta(days=rng.randrange((END - START).days + 1))
        hour = rng.randrange(24) if rng.random() < 0.2 else rng.randrange(8, 21)
        status = rng.choice([4, 4, 4, 4, 4, 1, 2, 3, 5])
        duration = 0 if status != 4 or rng.random() < 0.05 else rng.randrange(5, 900)
        item: dict[str, Any] = {
            "pk": "CALLS#c", "sk": f"{day.isoformat()}#leads-{100_000 + index}",
            "call_id": f"leads-{100_000 + index}", "day": day.isoformat(),
            "call_time": f"{day.isoformat()}T{hour:02d}:{rng.randrange(60):02d}:00+03:00",
            "direction": rng.choice(["incoming", "incoming", "incoming", "outgoing"]),
            "duration": duration, "call_status": status, "administrator": rng.choice(ADMINS),
            "sync_status": "success",
        }
        if duration == 0:
            item["sync_skip"] = "no_recording"
        elif duration < 10:
            item["sync_skip"] = "too_short"
        elif rng.random() < 0.85:
            item["analyze_status"] = "success"
            item["analysis"] = _analysis(rng, index, pool)
        else:
            item["analyze_status"] = rng.choice(["failed", "pending"])
        oddity = rng.random()
        if oddity < 0.03:
            del item["call_time"]
        elif oddity < 0.05:
            item["call_time"] = "вчера утром"
        elif oddity < 0.07:
            del item["administrator"]
        elif oddity < 0.09:
            item["call_status"] = None
        elif oddity < 0.10:
            del item["duration"]
        calls.append(item)
    return calls


def odd_items(calls: list[dict[str, Any]]) -> list[Any]:
    """Items a report must survive: not dicts, no call_id, a duplicate, outside the range, an analysis
    that is not a dict, broken analysis fields."""
    first = calls[0]
    return [
        None, "leads-1", 42, [], {}, {"call_id": ""}, {"call_id": 7}, dict(first),
        {"call_id": "leads-out", "day": "2026-10-31", "direction": "incoming", "call_status": 3},
        {"call_id": "leads-bad-analysis", "day": "2026-11-05", "analyze_status": "success", "analysis": "oops"},
        {"call_id": "leads-odd", "day": "not a day", "call_time": 17, "direction": "incoming", "duration": "abc",
         "call_status": "four", "administrator": ["x"], "analyze_status": "success",
         "analysis": {"call_type": "appointment", "outcome": "yes", "criteria": {"greeting": {"score": 40},
                                                                                  "politeness": "bad"},
                      "overall_score": 140, "summary": None, "recommendations": ["  ", 5, None, "Будьте вежливее."]}},
        {"call_id": "leads-odd-2", "analyze_status": "success", "analysis": {"recommendations": "text"}},
        {"call_id": "leads-decimal", "day": "2026-11-06", "call_time": "2026-11-06", "direction": "incoming",
         "call_status": Decimal("4"), "duration": Decimal("sNaN")},
    ]


# ---------------------------------------------------------------------------- the recomputation


def _answered(item: dict[str, Any]) -> bool:
    return item.get("call_status") == 4 and (item.get("duration") or 0) > 0


def _analysed(item: dict[str, Any]) -> bool:
    return item.get("analyze_status") == "success" and isinstance(item.get("analysis"), dict)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _approx(value: float | None, expected: float | None, places: float = 0.00005) -> bool:
    if value is None or expected is None:
        return value is expected
    return math.isclose(value, expected, abs_tol=places + 1e-9)  # the figures are rounded


def _check(stats: ReportStats, calls: list[dict[str, Any]]) -> None:
    analysed = [c for c in calls if _analysed(c)]
    assert stats.total_calls == len(calls)
    assert stats.analysed_calls == len(analysed)
    assert stats.calls_with_recommendations == sum(1 for c in analysed if c["analysis"]["recommendations"])

    # administrators
    by_admin: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in calls:
        by_admin[call.get("administrator", "")].append(call)
    assert {a.administrator for a in stats.administrators} == set(by_admin)
    for admin in stats.administrators:
        group = by_admin[admin.administrator]
        done = [c for c in group if _analysed(c)]
        booked = sum(1 for c in done if c["analysis"]["outcome"]["booked"])
        assert (admin.calls, admin.analysed, admin.booked) == (len(group), len(done), booked)
        assert _approx(admin.booked_share, _share(booked, len(done)))
        scores = [c["analysis"]["overall_score"] for c in done]
        assert _approx(admin.average_score, sum(scores) / len(scores) if scores else None, 0.005)
        if done:
            averages = {name: sum(c["analysis"]["criteria"][name]["score"] for c in done) / len(done)
                        for name in CRITERIA}
            lowest = min(averages.values())
            assert admin.weakest_criterion_score == pytest.approx(lowest, abs=0.005 + 1e-9)
            assert admin.weakest_criterion == next(n for n in CRITERIA if math.isclose(averages[n], lowest))
        else:
            assert admin.weakest_criterion is None
    assert [a.calls for a in stats.administrators] == sorted((a.calls for a in stats.administrators), reverse=True)

    # call types
    by_type = Counter(c["analysis"]["call_type"] for c in analysed)
    assert {t.call_type: t.calls for t in stats.call_types} == dict(by_type)
    for row in stats.call_types:
        group = [c for c in analysed if c["analysis"]["call_type"] == row.call_type]
        booked = sum(1 for c in group if c["analysis"]["outcome"]["booked"])
        assert _approx(row.share, len(group) / len(analysed))
        assert row.booked == booked and _approx(row.booked_share, booked / len(group))
        assert _approx(row.average_score, sum(c["analysis"]["overall_score"] for c in group) / len(group), 0.005)
    assert sum(t.share for t in stats.call_types) == pytest.approx(1, abs=0.001)

    # booking conversion
    eligible = [c for c in analysed if c["analysis"]["call_type"] in ("booking", "reschedule", "price_question")]
    booked = sum(1 for c in eligible if c["analysis"]["outcome"]["booked"])
    assert (stats.booking.eligible_calls, stats.booking.booked_calls) == (len(eligible), booked)
    assert _approx(stats.booking.conversion, _share(booked, len(eligible)))
    assert stats.booking.booked_all_types == sum(1 for c in analysed if c["analysis"]["outcome"]["booked"])

    # missed opportunities
    answered = [c for c in eligible if _answered(c)]
    missed = [c for c in answered if not c["analysis"]["outcome"]["booked"]
              and c["analysis"]["criteria"]["booking_offer"]["score"] <= NO_BOOKING_OFFER_MAX_SCORE]
    opportunities = stats.missed_opportunities
    assert (opportunities.eligible_calls, opportunities.count) == (len(answered), len(missed))
    assert _approx(opportunities.share, _share(len(missed), len(answered)))
    assert len(opportunities.examples) == min(3, len(missed))
    assert {e.call_id for e in opportunities.examples} <= {c["call_id"] for c in missed}

    # missed incoming calls by hour
    incoming = [c for c in calls if c.get("direction") == "incoming"]
    per_hour: dict[int, list[dict[str, Any]]] = defaultdict(list)
    without_time = 0
    for call in incoming:
        time = call.get("call_time")
        if isinstance(time, str) and len(time) >= 13 and time[10] == "T" and time[11:13].isdigit():
            per_hour[int(time[11:13])].append(call)
        else:
            without_time += 1
    hours = stats.missed_by_hour
    assert [h.hour for h in hours.hours] == sorted(per_hour)
    for hour in hours.hours:
        group = per_hour[hour.hour]
        lost = sum(1 for c in group if not _answered(c))
        assert (hour.incoming, hour.missed) == (len(group), lost)
        assert _approx(hour.missed_share, lost / len(group))
    lost_all = sum(1 for c in incoming if not _answered(c))
    assert (hours.incoming, hours.missed, hours.without_time) == (len(incoming), lost_all, without_time)
    assert _approx(hours.missed_share, _share(lost_all, len(incoming)))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_figures_equal_an_independent_recomputation(seed: int) -> None:
    calls = make_calls(700, seed)
    stats = compute_stats(calls)
    _check(stats, calls)
    assert stats.booking.call_types == list(BOOKING_POSSIBLE_TYPES)
    # the generator is varied enough for the checks to mean something
    assert len(stats.administrators) == len(ADMINS) and len(stats.call_types) == len(TYPES)
    assert stats.missed_opportunities.count > 0 and stats.missed_by_hour.missed > 0
    assert stats.missed_by_hour.without_time > 0 and len(stats.missed_by_hour.hours) >= 20
    assert 0 < stats.analysed_calls < stats.total_calls
    assert stats.skipped["incoming_without_time"] == stats.missed_by_hour.without_time


def test_odd_items_are_skipped_and_counted() -> None:
    calls = make_calls(200, 9)
    odd = odd_items(calls)
    stats = compute_stats([*calls, *odd], start_date=START, end_date=END)
    # counted: leads-bad-analysis (not analysed), leads-odd (analysed, broken fields), leads-odd-2 (no day)
    # and leads-decimal (incoming, a day but no time of day, a duration that is no number: not answered)
    valid = [*calls, odd[9], odd[10], odd[11], odd[12]]
    assert stats.total_calls == len(valid)
    assert stats.skipped["item_not_a_dict"] == 4
    assert stats.skipped["item_without_call_id"] == 3
    assert stats.skipped["item_duplicate"] == 1
    assert stats.skipped["item_outside_range"] == 1
    assert stats.skipped["analysis_unusable"] == 1
    assert stats.skipped["recommendation_unusable"] == 3
    assert stats.skipped["recommendations_unusable"] == 1
    assert stats.analysed_calls == sum(1 for c in calls if _analysed(c)) + 2
    unknown = next(t for t in stats.call_types if t.call_type == "unknown")
    assert unknown.calls == 2 and unknown.average_score is None and unknown.booked == 0
    # the odd analysed call counts as incoming without time, not answered, not a missed opportunity
    assert stats.missed_by_hour.without_time == sum(
        1 for c in calls if c.get("direction") == "incoming" and not str(c.get("call_time", "")).startswith("2026")
    ) + 2
    assert stats.missed_by_hour.missed == sum(
        1 for c in calls if c.get("direction") == "incoming" and not _answered(c)) + 2
    assert recommendations_of(odd[10])[0].text == "Будьте вежливее." and recommendations_of(odd[10])[0].position == 3
    assert compute_stats([]).total_calls == 0 and compute_stats(odd[:7]).total_calls == 0


def test_recommendations_of_an_analysed_call_only() -> None:
    calls = make_calls(120, 4)
    for call in calls:
        recs = recommendations_of(call)
        if not _analysed(call):
            assert recs == []
            continue
        texts = call["analysis"]["recommendations"]
        assert [r.position for r in recs] == list(range(len(texts)))
        assert [r.text for r in recs] == [" ".join(t.split()) for t in texts]
        assert {r.call_id for r in recs} <= {call["call_id"]}
    failed = {**calls[0], "analyze_status": "failed", "analysis": {"recommendations": ["Совет."]}}
    assert recommendations_of(failed) == []


def test_token_estimate_is_conservative_for_russian() -> None:
    text = "Предлагайте запись на приём с конкретной датой и временем."
    assert estimate_tokens("") == 0 and estimate_tokens("а") == 1
    assert estimate_tokens(text) == math.ceil(len(text) / 3)
    assert estimate_tokens(text * 100) >= len(text * 100) / 4  # o200k averages ~4 characters a token in Russian
