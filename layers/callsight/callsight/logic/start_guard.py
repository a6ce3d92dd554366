"""The clinic-level guard on starts, so that a mistake cannot spend a month's OpenAI budget.

- **Starts per hour**: at most ``starts_per_hour`` starts per clinic in each fixed UTC hour (12:00:00-12:59:59,
  then the count begins again; a clinic's profile may set its own ``starts_per_hour``). The count is one action of
  the transaction that takes the clinic's lock (``ClientLock.try_acquire(together=...)``): a start is counted
  exactly when it takes the lock, and a refused start (the limit reached, or the clinic busy: 409) takes nothing.
  Every process counts once, the pipeline too: its steps are started by its state machine (``begin_step``), never
  through here. A start whose execution could not start gives its count back.
- **Confirming a large force**: ``force`` re-running more than ``force_confirm_calls`` calls needs ``confirm_calls``
  of at least that number. How many calls a force re-runs: the range's calls counted for that process (the status
  endpoint's one Query of day counters; for sync and for the pipeline, which begins with a sync: the range's stored
  calls). A start without ``force`` reads nothing more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from callsight.dal.calls import CounterRepository
from callsight.dal.clients import ClientProfile
from callsight.dal.starts import HOUR, StartCounter, hour_of
from callsight.dal.table import Table
from callsight.dates import DateRange, utc_iso
from callsight.errors import ConfirmationRequired, TooManyStarts
from callsight.processes import Process

#: the process whose day counters hold the calls a force start re-runs (the pipeline's first step is the sync)
_COUNTED_AS = {Process.PIPELINE: Process.SYNC}


@dataclass(frozen=True)
class StartLimits:
    """The stack's limits (StartProcessConfig: StartsPerClinicPerHour, ForceConfirmCalls)."""

    starts_per_hour: int
    force_confirm_calls: int


class StartGuard:
    def __init__(self, table: Table, limits: StartLimits) -> None:
        self.limits = limits
        self.starts = StartCounter(table)
        self.counters = CounterRepository(table)

    def confirm_force(self, client_id: str, process: str, days: DateRange, *, confirm_calls: int | None) -> None:
        """ConfirmationRequired when a force start re-runs more than ``force_confirm_calls`` calls, unconfirmed."""
        counted = _COUNTED_AS.get(Process(process), Process(process))
        calls = self.counters.summed(client_id, counted.value, days)["total"]
        threshold = self.limits.force_confirm_calls
        if calls > threshold and (confirm_calls is None or confirm_calls < calls):
            raise ConfirmationRequired(client_id, f"{days.start.isoformat()}..{days.end.isoformat()}", calls=calls,
                                       threshold=threshold, confirmed=confirm_calls)

    def hourly_limit(self, profile: ClientProfile) -> int:
        return profile.starts_per_hour if profile.starts_per_hour is not None else self.limits.starts_per_hour

    def count_action(self, profile: ClientProfile, now: datetime) -> dict[str, Any]:
        """The lock transaction's action counting this start in ``now``'s hour (false at the clinic's limit)."""
        return self.starts.take_action(profile.client_id, hour_of(now), self.hourly_limit(profile))

    def refused(self, profile: ClientProfile, now: datetime) -> TooManyStarts:
        """The answer to a start refused by ``count_action``: when the next hour, and so the next start, begins."""
        next_hour = hour_of(now) + HOUR
        wait = max(1, math.ceil((next_hour - now).total_seconds()))
        return TooManyStarts(profile.client_id, self.hourly_limit(profile), utc_iso(next_hour), wait)

    def give_back(self, client_id: str, now: datetime) -> None:
        self.starts.give_back(client_id, hour_of(now))
