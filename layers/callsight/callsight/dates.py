"""Date ranges of a request, and their mapping to instants in a clinic's time zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

MAX_RANGE_DAYS = 366
#: the days a range may name: calls are Unix times (none before 1970), and a range's end plus one day, in any
#: time zone, must still be a date Python can hold (9999-12-31 + 1 day overflows)
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(9998, 12, 31)


def supported_day(day: date, field: str) -> date:
    """``day`` itself, or ValueError naming ``field`` when it is outside FIRST_DAY..LAST_DAY."""
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ValueError(f"{field} must be between {FIRST_DAY.isoformat()} and {LAST_DAY.isoformat()}, "
                         f"got {day.isoformat()}")
    return day


@dataclass(frozen=True, slots=True)
class DateRange:
    """An inclusive range of local calendar days."""

    start: date
    end: date

    def __post_init__(self) -> None:
        supported_day(self.start, "start_date")
        supported_day(self.end, "end_date")
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


def utc_iso(moment: datetime) -> str:
    """An instant as the stored ISO UTC text (``2026-11-28T12:00:00Z``)."""
    return moment.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now_iso() -> str:
    return utc_iso(datetime.now(ZoneInfo("UTC")))
