"""Date ranges of a request, and their mapping to instants in a clinic's time zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

MAX_RANGE_DAYS = 366


@dataclass(frozen=True, slots=True)
class DateRange:
    """An inclusive range of local calendar days."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError("end_date is before start_date")
        if self.days > MAX_RANGE_DAYS:
            raise ValueError(f"the range spans {self.days} days; at most {MAX_RANGE_DAYS} are allowed")

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def bounds(self, tz: str) -> tuple[int, int]:
        """Unix seconds [from, to) covering the range in time zone ``tz``."""
        zone = ZoneInfo(tz)
        begin = datetime.combine(self.start, time.min, tzinfo=zone)
        finish = datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=zone)
        return int(begin.timestamp()), int(finish.timestamp())

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


def local_day(unix_seconds: int, tz: str) -> date:
    return datetime.fromtimestamp(unix_seconds, ZoneInfo(tz)).date()


def local_iso(unix_seconds: int, tz: str) -> str:
    return datetime.fromtimestamp(unix_seconds, ZoneInfo(tz)).isoformat()


def utc_now_iso() -> str:
    return datetime.now(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")
