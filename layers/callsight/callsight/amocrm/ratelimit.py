"""Pacing of amoCRM requests, shared by threads: evenly spaced starts that can never put more than the
limit into any sliding window at amoCRM, whatever the scheduling jitter.

amoCRM allows 7 requests in a second and counts them when they arrive. A request arrives after we start
it and before its answer reaches us, so the limiter starts a request only when fewer than ``per_window``
earlier requests may still be inside amoCRM's window: unanswered ones, and answered ones whose answer came
less than ``window`` ago. A request held up by the GIL, a loaded machine or the network therefore delays the
requests after it instead of making them arrive 8 in a second. Starts are also spaced ``1 / rate`` apart so
nothing is sent in bursts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

#: what amoCRM allows: requests per sliding second (per integration)
AMOCRM_REQUESTS_PER_WINDOW = 7
AMOCRM_WINDOW_SECONDS = 1.0
#: polling step while every blocking request is still unanswered (rare: needs a request in flight for ~1 s)
_POLL_SECONDS = 0.02
#: the longest hold after repeated 429s (a Retry-After longer than the window is honoured as sent)
_MAX_THROTTLE_SECONDS = 8.0


@dataclass
class Slot:
    """One request's place in the window: when it started and when its answer (or failure) came back."""

    started: float
    answered: float | None = None
    throttled: bool = False
    retry_after: float | None = None

    def rate_limited(self, retry_after: float | None = None) -> None:
        """amoCRM answered 429 (``retry_after``: its Retry-After header, in seconds)."""
        self.throttled = True
        self.retry_after = retry_after


class RateLimiter:
    def __init__(self, rate: float, *, per_window: int = AMOCRM_REQUESTS_PER_WINDOW,
                 window: float = AMOCRM_WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0 or per_window < 1 or window <= 0:
            raise ValueError("rate, per_window and window must be positive")
        self.interval = 1.0 / rate
        self.per_window = per_window
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._slots: list[Slot] = []  # the requests that may still be inside amoCRM's window
        self._last_start = float("-inf")
        self._hold_until = float("-inf")
        self._throttled_in_a_row = 0

    @contextmanager
    def request(self) -> Iterator[Slot]:
        """Waits for a safe moment, yields the request's slot; leaving the block records its answer."""
        slot = self.acquire()
        try:
            yield slot
        finally:
            self.release(slot)

    def acquire(self) -> Slot:
        """Waits until a request may start; every acquired slot must be released (``request()`` does it)."""
        while True:
            with self._lock:
                now = self._clock()
                ready = self._ready_at(now)
                if ready <= now:
                    slot = Slot(started=now)
                    self._slots.append(slot)
                    self._last_start = now
                    return slot
            self._sleep(ready - now)

    def release(self, slot: Slot) -> None:
        with self._lock:
            now = self._clock()
            slot.answered = now
            if not slot.throttled:
                self._throttled_in_a_row = 0
                return
            # amoCRM counted more than we did (another client of the limit, or its own clock): hold every start,
            # briefly for one 429 (its window frees within a slot or two), doubling for each one in a row
            self._throttled_in_a_row += 1
            hold = min(self.interval * 2 ** (self._throttled_in_a_row - 1), _MAX_THROTTLE_SECONDS)
            if slot.retry_after is not None and slot.retry_after > self.window:
                hold = max(hold, slot.retry_after)  # a real wait; "1" (whole seconds) only names the window
            self._hold_until = max(self._hold_until, now + hold)

    def pause(self, seconds: float) -> None:
        """Holds every request back for ``seconds`` from now (amoCRM's lockout)."""
        with self._lock:
            self._hold_until = max(self._hold_until, self._clock() + seconds)

    def _ready_at(self, now: float) -> float:
        """The earliest moment a new request may start (``now`` when it may start at once)."""
        horizon = now - self.window
        self._slots = [s for s in self._slots if s.answered is None or s.answered > horizon]
        ready = max(now, self._last_start + self.interval, self._hold_until)
        excess = len(self._slots) - (self.per_window - 1)
        if excess > 0:  # that many of them must leave the window first
            leaving = sorted(s.answered + self.window for s in self._slots if s.answered is not None)
            ready = max(ready, leaving[excess - 1] if len(leaving) >= excess else now + _POLL_SECONDS)
        return ready
