"""EventBridge emulation for the template's ``Type: Schedule`` events.

``ScheduleEmulator`` invokes each enabled ``rate(...)`` schedule's function on its cadence (the first time one
period after the platform started, as a new EventBridge rule does) with the Scheduled Event EventBridge sends,
each delivery in a thread of its own. ``cron(...)`` expressions are checked but fire only when triggered:
``run_now(function)`` delivers any schedule at once and returns what the handler answered (tests use it).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from infra.template import ACCOUNT_ID, REGION, ScheduleEvent, TemplateError

log = logging.getLogger("infra.schedules")

_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float | None:
    """The period of ``rate(N unit)`` in seconds; None for a ``cron(...)`` expression; TemplateError otherwise."""
    text = expression.strip()
    if text.startswith("cron(") and text.endswith(")"):
        if len(text[5:-1].split()) != 6:
            raise TemplateError(f"{expression!r}: EventBridge cron takes 6 fields (minutes hours day month weekday "
                                "year)")
        return None
    match = _RATE.match(text)
    if not match:
        raise TemplateError(f"{expression!r} is not an EventBridge schedule (rate(5 minutes), rate(1 day), cron(...))")
    value, unit = int(match.group(1)), match.group(2)
    if value < 1 or (value == 1) != (not unit.endswith("s")):  # EventBridge: "1 day", "2 days"
        raise TemplateError(f"{expression!r}: use a positive value, the singular unit for 1 and the plural otherwise")
    return float(value * _UNIT_SECONDS[unit.rstrip("s")])


def scheduled_event(schedule: ScheduleEvent, *, region: str = REGION, account_id: str = ACCOUNT_ID,
                    now: datetime | None = None) -> Any:
    """What EventBridge delivers for the schedule: its ``Input`` when set, else the Scheduled Event."""
    if schedule.input is not None:
        return json.loads(schedule.input)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account_id,
        "time": (now or datetime.now(tz=UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{account_id}:rule/{schedule.rule_name}"],
        "detail": {},
    }


class ScheduleEmulator:
    """Fires the rate schedules while started; ``deliver(function_logical_id, event)`` runs the function."""

    def __init__(self, schedules: Sequence[ScheduleEvent], deliver: Callable[[str, Any], Any], *,
                 region: str = REGION, account_id: str = ACCOUNT_ID, period_scale: float = 1.0) -> None:
        """``period_scale`` shortens the periods (a test's rate(1 minute) every 0.1 s: 1/600)."""
        self.schedules = list(schedules)
        self.deliver = deliver
        self.region = region
        self.account_id = account_id
        self._periods: dict[tuple[str, str], float | None] = {}
        for s in self.schedules:
            period = rate_seconds(s.expression)
            self._periods[(s.function, s.event_name)] = None if period is None else period * period_scale
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        for schedule in self.schedules:
            period = self._periods[(schedule.function, schedule.event_name)]
            if not schedule.enabled:
                log.info("schedule %s.%s is disabled: it runs only when triggered", schedule.function,
                         schedule.event_name)
            elif period is None:
                log.info("schedule %s.%s (%s) runs locally only when triggered (run_schedule)", schedule.function,
                         schedule.event_name, schedule.expression)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="eventbridge-schedules", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None

    def find(self, function: str, event_name: str | None = None) -> ScheduleEvent:
        for schedule in self.schedules:
            if schedule.function == function and event_name in (None, schedule.event_name):
                return schedule
        known = ", ".join(f"{s.function}.{s.event_name}" for s in self.schedules) or "none"
        raise KeyError(f"no schedule {function}{'.' + event_name if event_name else ''} in the template "
                       f"(schedules: {known})")

    def run_now(self, function: str, event_name: str | None = None) -> Any:
        """Deliver the function's schedule now, in this thread; the handler's answer."""
        schedule = self.find(function, event_name)
        return self.deliver(schedule.function, self._event(schedule))

    def _event(self, schedule: ScheduleEvent) -> Any:
        return scheduled_event(schedule, region=self.region, account_id=self.account_id)

    def _run(self) -> None:
        started = time.monotonic()
        due = {s: started + period for s in self.schedules
               if s.enabled and (period := self._periods[(s.function, s.event_name)]) is not None}
        while due:
            schedule, when = min(due.items(), key=lambda item: item[1])
            if self._stop.wait(max(0.0, when - time.monotonic())):
                return
            period = self._periods[(schedule.function, schedule.event_name)]
            assert period is not None
            due[schedule] = when + period
            log.info("schedule %s.%s (%s): invoking %s", schedule.function, schedule.event_name,
                     schedule.expression, schedule.function)
            threading.Thread(target=self._deliver, args=(schedule,), name=f"schedule-{schedule.function}",
                             daemon=True).start()
        self._stop.wait()

    def _deliver(self, schedule: ScheduleEvent) -> None:
        try:
            self.deliver(schedule.function, self._event(schedule))
        except Exception:
            log.exception("schedule %s.%s: %s failed", schedule.function, schedule.event_name, schedule.function)
