"""Request models and date ranges: both date spellings, and every bad input named by field."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from callsight.dates import DateRange
from callsight.models import RangeRequest, StartRequest


def test_both_date_spellings_are_accepted() -> None:
    a = StartRequest.model_validate({"client_id": "demo", "start_date_str": "2026-11-01", "end_date_str": "2026-11-30"})
    b = StartRequest.model_validate({"client_id": "demo", "start_date": "2026-11-01", "end_date": "2026-11-30"})
    assert a.range == b.range == DateRange(date(2026, 11, 1), date(2026, 11, 30))
    assert a.force is False


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"start_date": "2026-11-01", "end_date": "2026-11-02"}, "client_id", "required"),
        ({"client_id": "", "start_date": "2026-11-01", "end_date": "2026-11-02"}, "client_id", "at least 1"),
        ({"client_id": "a b", "start_date": "2026-11-01", "end_date": "2026-11-02"}, "client_id", "pattern"),
        ({"client_id": "demo", "start_date": "01.11.2026", "end_date": "2026-11-02"}, "start_date", "YYYY-MM-DD"),
        ({"client_id": "demo", "start_date": "2026-02-30", "end_date": "2026-11-02"}, "start_date", "calendar"),
        ({"client_id": "demo", "start_date": "2026-11-05", "end_date": "2026-11-02"}, "", "before start_date"),
        ({"client_id": "demo", "start_date": "2025-01-01", "end_date": "2026-11-02"}, "", "at most 366"),
    ],
)
def test_bad_input_names_the_field_and_the_problem(payload: dict[str, str], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RangeRequest.model_validate(payload)
    errors = caught.value.errors()
    assert any(".".join(str(p) for p in e["loc"]) == field and words in e["msg"] for e in errors), errors


def test_range_bounds_follow_the_clinics_time_zone() -> None:
    days = DateRange(date(2026, 11, 1), date(2026, 11, 1))
    moscow = days.bounds("Europe/Moscow")
    yekaterinburg = days.bounds("Asia/Yekaterinburg")
    assert moscow[1] - moscow[0] == 86400
    assert moscow[0] - yekaterinburg[0] == 2 * 3600  # UTC+3 vs UTC+5
    assert days.days == 1 and DateRange(date(2026, 1, 1), date(2026, 12, 31)).days == 365
