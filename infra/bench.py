"""``make bench``: benchmarks measured side by side in one run on the local platform (no timed assertions).

sync-rate: the sync of N demo calls (default 2,000) through the HTTP API, with amoCRM pages of 50
notes (amoCRM's recommended size, so the run makes enough requests to measure a rate). From the stub
amoCRM's own log of request start times it reports the achieved request rate against amoCRM's limit
of 7 requests/s (goal: at least 90 % of it) and the number of 429 answers (goal: zero).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import httpx

from infra.demo import DEMO_CLIENT, demo_range
from infra.platform import LocalPlatform

AMOCRM_LIMIT = 7.0


def bench_sync_rate(calls: int, page_size: int) -> dict[str, Any]:
    start, end = demo_range()
    with LocalPlatform(port=0, demo_calls=calls, postgres=False,
                       parameter_overrides={"AmoCrmPageSize": str(page_size), "LogLevel": "WARNING"}) as platform:
        stub = platform.amocrm
        assert stub is not None, "the sync-rate benchmark needs the stub amoCRM"
        stub.reset_stats()
        began = time.monotonic()
        with httpx.Client(base_url=platform.api_url, timeout=60) as api:
            body = {"client_id": DEMO_CLIENT, "start_date": start, "end_date": end}
            answer = api.post("/api/calls-parallel-bulk/sync-by-date-range", json=body)
            answer.raise_for_status()
            while True:
                status = api.get("/api/calls-parallel-bulk/sync-by-date-range-status", params=body).json()
                if status["overall_status"] in ("completed", "partial", "failed"):
                    break
                time.sleep(0.5)
        wall = time.monotonic() - began
        stats = stub.stats()
    times = sorted(stats["request_times"])
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    rate = (len(times) - 1) / span if span else 0.0
    return {"calls": status["total_calls"], "overall_status": status["overall_status"], "requests": len(times),
            "span_s": span, "rate": rate, "ratio": rate / AMOCRM_LIMIT, "rate_limited": stats["rate_limited"],
            "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--page-size", type=int, default=50)
    args = parser.parse_args(argv)

    print(f"sync-rate: syncing {args.calls} demo calls, amoCRM pages of {args.page_size} notes ...", flush=True)
    r = bench_sync_rate(args.calls, args.page_size)
    verdict = "met" if r["ratio"] >= 0.9 and r["rate_limited"] == 0 else "NOT met"
    print(f"  measured: {r['requests']} amoCRM API requests (notes pages of leads, contacts and companies, "
          f"users) answered 2xx, first to last start over {r['span_s']:.2f} s")
    print(f"  achieved rate {r['rate']:.2f} req/s = {r['ratio'] * 100:.1f} % of the {AMOCRM_LIMIT:.0f}/s limit; "
          f"429 answers: {r['rate_limited']}; calls synced: {r['calls']} ({r['overall_status']}); "
          f"whole sync {r['wall_s']:.1f} s")
    print(f"  goal (>= 90 % of the limit, zero 429): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
