"""Virtual time for the limiter and backoff tests: ``clock()`` reads it, ``clock.sleep(s)`` records the wait and moves
time on at once."""

from __future__ import annotations

import threading


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.lock = threading.Lock()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)
            self.now += seconds
