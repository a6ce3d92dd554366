"""The request pacer: evenly spaced starts that never let 8 requests reach amoCRM within a second, whatever
the jitter, held back after a 429 (briefly once, longer for each in a row) and during a lockout pause."""

from __future__ import annotations

import itertools
import random
import threading
import time

from callsight.amocrm import RateLimiter
from callsight.amocrm.ratelimit import Slot
from tests.clock import FakeClock


def _limiter(rate: float, clock: FakeClock) -> RateLimiter:
    return RateLimiter(rate, clock=clock, sleep=clock.sleep)


def _request(limiter: RateLimiter, clock: FakeClock, rtt: float = 0.0, *, throttled: bool = False,
             retry_after: float | None = None) -> Slot:
    with limiter.request() as slot:
        clock.sleep(rtt)
        if throttled:
            slot.rate_limited(retry_after)
    return slot


def test_starts_are_spaced_by_the_interval() -> None:
    clock = FakeClock()
    limiter = _limiter(5.0, clock)
    starts = [_request(limiter, clock).started for _ in range(11)]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(abs(g - 0.2) < 1e-9 for g in gaps)


def test_no_more_than_seven_starts_in_a_second_at_any_rate() -> None:
    clock = FakeClock()
    limiter = _limiter(100.0, clock)  # asked for 100/s: the window still allows 7 per second
    starts = [_request(limiter, clock).started for _ in range(22)]
    assert max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts) == 7
    assert starts[7] - starts[0] >= 1.0


def test_a_late_answer_delays_the_request_seven_starts_later() -> None:
    clock = FakeClock()
    limiter = _limiter(6.6, clock)
    first = _request(limiter, clock, rtt=0.3)  # its arrival at amoCRM may have been as late as its answer
    later = [_request(limiter, clock, rtt=0.001) for _ in range(7)]
    assert first.answered is not None
    assert later[5].started < first.answered + 1.0 <= later[6].started


def test_a_quick_service_is_paced_at_the_full_rate() -> None:
    clock = FakeClock()
    limiter = _limiter(6.6, clock)
    starts = [_request(limiter, clock, rtt=0.02).started for _ in range(50)]
    assert starts[-1] - starts[0] <= 49 / 6.6 + 1e-6  # no hold beyond the spacing while answers come quickly


def test_jittery_threads_never_put_eight_arrivals_in_a_window() -> None:
    # the guarantee, with real threads and clock: wherever a request arrived between its start and its answer,
    # amoCRM's sliding window (7 per second, here scaled to 0.2 s) is never exceeded
    window = 0.2
    limiter = RateLimiter(200.0, window=window)
    slots: list[Slot] = []
    rng = random.Random(7)
    delays = [[rng.uniform(0, 0.03) for _ in range(12)] for _ in range(4)]

    def worker(mine: list[float]) -> None:
        for delay in mine:
            with limiter.request() as slot:
                time.sleep(delay)
            slots.append(slot)

    threads = [threading.Thread(target=worker, args=(d,)) for d in delays]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(slots) == 48
    arrivals = sorted(rng.uniform(s.started, s.answered or s.started) for s in slots)
    counted: list[float] = []  # the stub's counter: arrivals within the last window
    for arrival in arrivals:
        counted = [a for a in counted if a > arrival - window]
        assert len(counted) < 7, "an 8th request arrived within the window"
        counted.append(arrival)


def test_pause_holds_every_request_back() -> None:
    clock = FakeClock()
    limiter = _limiter(10.0, clock)
    _request(limiter, clock)
    limiter.pause(60.0)
    before = clock.now
    _request(limiter, clock)
    assert clock.now - before >= 60.0


def test_a_429_holds_briefly_and_longer_for_each_in_a_row() -> None:
    clock = FakeClock()
    limiter = _limiter(5.0, clock)

    def holds(count: int) -> list[float]:
        """The wait between each 429 answer and the next start (a Retry-After of 1 only names the window)."""
        gaps = []
        previous = _request(limiter, clock, throttled=True, retry_after=1.0)
        for _ in range(count):
            following = _request(limiter, clock, throttled=True, retry_after=1.0)
            assert previous.answered is not None
            gaps.append(round(following.started - previous.answered, 6))
            previous = following
        return gaps

    assert holds(8) == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 8.0, 8.0]  # from one interval, doubling, capped
    _request(limiter, clock)  # a success ends the run of 429s
    assert holds(1) == [0.2]


def test_a_retry_after_longer_than_the_window_is_honoured() -> None:
    clock = FakeClock()
    limiter = _limiter(5.0, clock)
    answered = _request(limiter, clock, throttled=True, retry_after=5.0).answered
    assert answered is not None and _request(limiter, clock).started - answered >= 5.0


def test_threads_share_one_pace() -> None:
    limiter = RateLimiter(200.0, per_window=1000)
    stamps: list[float] = []

    def worker() -> None:
        for _ in range(10):
            with limiter.request() as slot:
                stamps.append(slot.started)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    stamps.sort()
    assert len(stamps) == 40
    assert all(b - a >= 0.005 - 1e-9 for a, b in itertools.pairwise(stamps))  # never two starts within 5 ms
