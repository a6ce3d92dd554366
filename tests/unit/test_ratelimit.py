"""The request pacer: evenly spaced starts, shared by threads, held back after a 429."""

from __future__ import annotations

import itertools
import threading

from callsight.amocrm import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def test_starts_are_spaced_by_the_interval() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5.0, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(11):
        limiter.acquire()
        starts.append(clock.now)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(abs(g - 0.2) < 1e-9 for g in gaps)
    # any 1-second window holds at most 5 starts
    assert max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts) == 5


def test_pause_holds_every_request_back() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    limiter.pause(2.0)
    before = clock.now
    limiter.acquire()
    assert clock.now - before >= 2.0


def test_threads_share_one_pace() -> None:
    limiter = RateLimiter(200.0)
    stamps: list[float] = []
    import time

    def worker() -> None:
        for _ in range(10):
            limiter.acquire()
            stamps.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stamps.sort()
    assert len(stamps) == 40
    # 40 starts at 200/s cannot take less than 39 intervals of 5 ms
    assert stamps[-1] - stamps[0] >= 39 * 0.005 * 0.95
