"""Pacing of requests: starts spaced evenly at ``rate`` per second, shared by threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Evenly spaced request starts. amoCRM counts requests per second, so bursts are never sent:
    at 6.6/s any sliding second holds at most 7 starts, with room for network jitter."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = 0.0

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self._sleep(start - now)

    def pause(self, seconds: float) -> None:
        """Hold every request back (after a 429) for ``seconds`` from now."""
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)
