"""``make bench``: benchmarks measured side by side in one run on the local platform (no timed assertions).

    python -m infra.bench [sync-rate|status|overhead|e2e|postgres|report|long-recording|all ...]   (default: all)

sync-rate: the sync of N demo calls (default 2,000) through the HTTP API, with amoCRM pages of 50
notes (amoCRM's recommended size, so the run makes enough requests to measure a rate). From the stub
amoCRM's own log of request start times it reports the achieved request rate against amoCRM's limit
of 7 requests/s (goal: at least 90 % of it) and the number of 429 answers (goal: zero).

status: two clinics on one platform, 100 and 10,000 recorded calls in the same 31-day range in the middle
of a transcription run (seeded through the DAL; seeding is not measured). The transcription status endpoint
is requested over HTTP alternately for each clinic (warm-up first): median and p95 latency of each and
their ratio (goal: 10,000 / 100 at most 1.2), and the cost of one status request counted on moto's side (the
DynamoDB requests its server answers, in a pass where only status requests run): requests, items and bytes
returned, read capacity units.

overhead: the platform's own cost per call beyond the OpenAI stub's latency. The same calls (seeded as a
finished sync leaves them: items through the DAL, the stub's WAVs in S3) are transcribed with ``force``
three times, the stub at 0 ms, at --latency-ms, at 0 ms again: per run the execution's time, the floor the
stub's latency alone imposes (requests x latency / requests in flight), (execution - floor) per call, the
platform process's CPU time per call (moto, the Step Functions interpreter, the stubs; not the containers), the
chunk tasks' time per call (their Lambda REPORT durations summed / calls) and the stub's time per call.

e2e: a 10,000-call range of the demo clinic (stub amoCRM) transcribed and then analysed end to end through
the HTTP API with the OpenAI stub at 0 ms. The calls are seeded as the sync leaves them (a 10,000-call sync
through the API takes ~10 more minutes; ``--e2e-source sync`` does it). Wall time and calls/s of each
process, final statuses, the execution's history event count (limit 25,000), its largest state payload
(limit 256 KiB) and the time of each top-level state.

postgres: rows per second of the PostgreSQL sync (batched: COPY into staging tables, one upsert per table and
batch) syncing 10,000 synthetic analysed calls into the embedded PostgreSQL, against a plain row-by-row INSERT of
the same rows, side by side in one run, and their ratio (goal: at least 10 x).

report: the recommendations process for 10,000 analysed calls (seeded through the DAL with the stub's analyses)
through the HTTP API: LLM requests made, the largest prompt in tokens (the stub's usage), wall time, and the
PostgreSQL sync that ends the run.

long-recording: one 60-minute telephony MP3 transcribed by the production Transcriber with its parts sent at once
(4) against one after another, the stub OpenAI answering in time proportional to the audio (infra/bench_recording.py).
"""

from __future__ import annotations

import argparse
import time
from datetime import date
from typing import Any

import httpx

from callsight.dates import DateRange
from callsight.processes import REPORT_PATH, Process
from infra.bench_postgres import bench_postgres, print_postgres
from infra.bench_recording import bench_long_recording, print_long_recording
from infra.bench_support import (
    HISTORY_EVENT_LIMIT,
    PAYLOAD_LIMIT_BYTES,
    Durations,
    DynamoReadMeter,
    ReadCost,
    days_back,
    describe,
    history_stats,
    mean,
    min_recording_seconds,
    percentile,
    register_clinic,
    run_process,
    seed_analysed,
    seed_synced,
    seed_transcription_snapshot,
    synced_items,
    timed_method,
)
from infra.demo import DEMO_CLIENT, demo_range
from infra.lambdas import REPORTS_KEPT
from infra.platform import LocalPlatform

AMOCRM_LIMIT = 7.0
QUIET = {"LogLevel": "WARNING"}
#: the status benchmark sends hundreds of requests back to back with the demo key: its usage plan's throttle lifted
#: (no 429) and the authorizer's answer cached for the whole run, so it measures the status handler alone
STATUS_PARAMETERS = {**QUIET, "ApiKeyRateLimit": "100000", "ApiKeyBurstLimit": "100000", "ApiKeyCacheSeconds": "3600"}
BENCHES = ("sync-rate", "status", "overhead", "e2e", "postgres", "report", "long-recording")


# ---------------------------------------------------------------------------------------------- sync-rate
def bench_sync_rate(calls: int, page_size: int) -> dict[str, Any]:
    start, end = demo_range()
    with LocalPlatform(port=0, demo_calls=calls, postgres=False,
                       parameter_overrides={"AmoCrmPageSize": str(page_size), **QUIET}) as platform:
        stub = platform.amocrm
        assert stub is not None, "the sync-rate benchmark needs the stub amoCRM"
        stub.reset_stats()
        began = time.monotonic()
        with httpx.Client(base_url=platform.api_url, headers=platform.api_headers, timeout=60) as api:
            body = {"client_id": DEMO_CLIENT, "start_date": start, "end_date": end}
            answer = api.post(Process.SYNC.spec.start_path, json=body)
            answer.raise_for_status()
            while True:
                status = api.get(Process.SYNC.spec.status_path, params=body).json()
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


def print_sync_rate(args: argparse.Namespace) -> None:
    print(f"sync-rate: syncing {args.calls} demo calls, amoCRM pages of {args.page_size} notes ...", flush=True)
    r = bench_sync_rate(args.calls, args.page_size)
    verdict = "met" if r["ratio"] >= 0.9 and r["rate_limited"] == 0 else "NOT met"
    print(f"  measured: {r['requests']} amoCRM API requests (notes pages of leads, contacts, companies and "
          f"customers, users) answered 2xx, first to last arrival over {r['span_s']:.2f} s")
    print(f"  achieved rate {r['rate']:.2f} req/s = {r['ratio'] * 100:.1f} % of the {AMOCRM_LIMIT:.0f}/s limit; "
          f"429 answers: {r['rate_limited']}; calls synced: {r['calls']} ({r['overall_status']}); "
          f"whole sync {r['wall_s']:.1f} s")
    print(f"  goal (>= 90 % of the limit, zero 429): {verdict}")


# ---------------------------------------------------------------------------------------------- status
STATUS_PATH = Process.TRANSCRIBE.spec.status_path


def bench_status(sizes: tuple[int, int], requests: int, warmup: int) -> dict[str, Any]:
    days = days_back(31)
    with LocalPlatform(port=0, demo_calls=0, postgres=False, parameter_overrides=STATUS_PARAMETERS) as platform:
        clinics = {size: f"bench-{size}-calls" for size in sizes}
        seeded: dict[int, Any] = {}
        latencies: dict[int, list[float]] = {size: [] for size in sizes}
        costs: dict[int, list[ReadCost]] = {size: [] for size in sizes}
        totals: dict[int, dict[str, Any]] = {}
        seed_s = 0.0
        small, large = sizes
        with httpx.Client(base_url=platform.api_url, headers=platform.api_headers, timeout=60) as api:
            def get(size: int) -> tuple[float, dict[str, Any]]:
                params = {"client_id": clinics[size], "start_date": days.start.isoformat(),
                          "end_date": days.end.isoformat()}
                t0 = time.perf_counter()
                answer = api.get(STATUS_PATH, params=params)
                elapsed = time.perf_counter() - t0
                answer.raise_for_status()
                return elapsed, answer.json()

            def seed(size: int) -> float:
                began = time.monotonic()
                register_clinic(platform, clinics[size])
                seeded[size] = seed_transcription_snapshot(platform, clinics[size], size, days)
                return time.monotonic() - began

            # a side measure: the small clinic while it is alone in the table (moto's Query cost grows with the
            # whole table, DynamoDB's does not: see the note printed)
            seed_s += seed(small)
            for _ in range(warmup):
                get(small)
            alone = [get(small)[0] for _ in range(max(1, requests // 4))]
            seed_s += seed(large)
            for _ in range(warmup):
                for size in sizes:
                    get(size)
            floor = []
            for _ in range(requests):  # the API emulation alone: its index, no Lambda
                t0 = time.perf_counter()
                api.get("/").raise_for_status()
                floor.append(time.perf_counter() - t0)
            for i in range(requests):  # latency, without any hook installed
                for size in sizes if i % 2 == 0 else sizes[::-1]:  # alternate who goes first
                    latencies[size].append(get(size)[0])
            with DynamoReadMeter() as meter:  # cost: a separate, shorter pass of status requests alone
                meter.take()
                for _ in range(max(1, requests // 10)):
                    for size in sizes:
                        totals[size] = get(size)[1]
                        costs[size].append(meter.take())
    return {"sizes": sizes, "latencies": latencies, "costs": costs, "answers": totals, "seeded": seeded,
            "floor": percentile(floor, 50), "alone": (percentile(alone, 50), len(alone)),
            "seed_s": seed_s, "days": days}


def print_status(args: argparse.Namespace) -> None:
    small, large = args.status_sizes
    print(f"status: GET {STATUS_PATH} over HTTP, clinics of {small:,} and {large:,} calls in one 31-day range, "
          f"{args.status_requests} requests each, alternating ...", flush=True)
    r = bench_status((small, large), args.status_requests, args.status_warmup)
    print(f"  seeded through the DAL in {r['seed_s']:.1f} s (not measured): range {r['days'].start}..{r['days'].end}, "
          f"calls mid-transcription, run recorded as running")
    medians = {}
    for size in r["sizes"]:
        lat = r["latencies"][size]
        costs: list[ReadCost] = r["costs"][size]
        medians[size] = (percentile(lat, 50), percentile(lat, 95))
        first = costs[0]
        same = all(c.requests == first.requests and c.items == first.items for c in costs)
        ops = ", ".join(f"{n} {op}" for op, n in sorted(first.requests.items()))
        answer = r["answers"][size]
        print(f"  {size:>6,} calls: median {medians[size][0] * 1000:6.1f} ms, p95 {medians[size][1] * 1000:6.1f} ms; "
              f"reads per request: {ops} = {first.items} items, {first.item_bytes:,} B, "
              f"{first.capacity_units:g} RCU{'' if same else ' (varied!)'}")
        print(f"{'':15}(answer: {describe(answer)})")
    ratio50 = medians[large][0] / medians[small][0]
    ratio95 = medians[large][1] / medians[small][1]
    verdict = "met" if ratio50 <= 1.2 else "NOT met"
    first_small, first_large = r["costs"][small][0], r["costs"][large][0]
    same_reads = (first_small.requests == first_large.requests
                  and first_small.capacity_units == first_large.capacity_units)
    print(f"  ratio {large:,} / {small:,}: median {ratio50:.2f}, p95 {ratio95:.2f} (goal: median <= 1.2: {verdict}); "
          f"the read requests and RCU {'are the same' if same_reads else 'DIFFER'} at both sizes")
    print(f"  for scale: GET / of the API emulation (no Lambda) {r['floor'] * 1000:.1f} ms; the {small:,}-call clinic "
          f"alone in the table, before the other was seeded: {r['alone'][0] * 1000:.1f} ms")
    print("  reads: counted on moto's side (its DynamoDB handler) in a separate pass of status requests alone: "
          "requests, items and\n  their DynamoDB size from the answers, RCU by 4 KB units (eventually consistent: "
          "half); items: the clinic's profile, the run, one counter per day with calls")


# ---------------------------------------------------------------------------------------------- overhead
def _concurrency(platform: LocalPlatform) -> tuple[int, int, int]:
    p = platform.template.parameters
    return int(p["OpenAIMapConcurrency"]), int(p["WorkerConcurrency"]), int(p["CallsPerChunk"])


#: the function that works through the transcription's chunks (``ChunkWorker``), in its containers
CHUNK_FUNCTION = "TranscribeCallsFunction"


def bench_overhead(demo_calls: int, latency_ms: int) -> dict[str, Any]:
    days = DateRange(*(date.fromisoformat(d) for d in demo_range()))
    with LocalPlatform(port=0, demo_calls=demo_calls, postgres=False, parameter_overrides=QUIET) as platform:
        dispatcher = platform.dispatcher
        assert dispatcher is not None
        items = synced_items(platform.amocrm.calls, client_id=DEMO_CLIENT, days=days, base_url=platform.amocrm.url,
                             min_seconds=min_recording_seconds(platform))
        seeded = seed_synced(platform, DEMO_CLIENT, items)
        stub_time = Durations()
        runs: list[dict[str, Any]] = []
        with httpx.Client(base_url=platform.api_url, headers=platform.api_headers, timeout=60) as api, \
                timed_method(platform.openai, "handle", stub_time):
            warm = run_process(api, platform, "transcribe", DEMO_CLIENT, days, poll_seconds=0.25)  # cold starts
            for latency in (0, latency_ms, 0):  # 0 ms twice, around the other: drift shows
                platform.openai.configure(latency_ms=latency)
                stub_time.take()
                seen = {report.request_id for report in dispatcher.reports(CHUNK_FUNCTION)}
                before = platform.openai.stats()["transcriptions"]
                cpu = time.process_time()
                run = run_process(api, platform, "transcribe", DEMO_CLIENT, days, force=True, poll_seconds=0.25)
                tasks = [r for r in dispatcher.reports(CHUNK_FUNCTION) if r.request_id not in seen]
                runs.append({"latency_ms": latency, "run": run, "stub": stub_time.take(), "tasks": tasks,
                             "tasks_complete": len(tasks) < REPORTS_KEPT,
                             "requests": platform.openai.stats()["transcriptions"] - before,
                             "cpu_s": time.process_time() - cpu})
            platform.openai.configure(latency_ms=0)
        return {"seeded": seeded, "warm": warm, "runs": runs, "concurrency": _concurrency(platform)}


def print_overhead(args: argparse.Namespace) -> None:
    print(f"overhead: the recorded calls of {args.overhead_demo_calls} demo calls (seeded as synced) transcribed with "
          f"force, OpenAI stub at 0 ms, {args.latency_ms} ms, 0 ms ...", flush=True)
    r = bench_overhead(args.overhead_demo_calls, args.latency_ms)
    maps, workers, chunk = r["concurrency"]
    inflight = maps * workers
    print(f"  {r['seeded']['recordings']} calls ({r['seeded']['recording_bytes'] / 1e6:.1f} MB of WAV); {chunk} calls "
          f"a chunk task, {maps} tasks x {workers} calls at once = at most {inflight} stub requests in flight; "
          f"warm-up run with cold starts {r['warm'].execution_s:.1f} s")
    print("  stub latency | execution | calls/s | floor = req x latency / in flight | (execution - floor) / call | "
          "platform CPU / call | chunk tasks | task time / call (stub / call)")
    per_call: dict[int, list[float]] = {}
    for entry in r["runs"]:
        run, latency, tasks = entry["run"], entry["latency_ms"], entry["tasks"]
        calls = run.status["total_calls"]
        wall = run.execution_s or run.wall_s
        floor = entry["requests"] * latency / 1000 / inflight
        per_call.setdefault(latency, []).append((wall - floor) / calls)
        task_ms = sum(t.duration_ms for t in tasks) / calls
        failed = sum(t.outcome != "success" for t in tasks)
        print(f"  {latency:>9} ms | {wall:7.1f} s | {calls / wall:7.1f} | {floor:32.1f} s | "
              f"{(wall - floor) / calls * 1000:21.1f} ms | {entry['cpu_s'] / calls * 1000:16.1f} ms | "
              f"{len(tasks):>5}{'' if entry['tasks_complete'] else '+'}{f' ({failed} failed)' if failed else ''} | "
              f"{task_ms:8.0f} ms ({sum(entry['stub']) / calls * 1000:.0f} ms)  [{run.status['overall_status']}]")
    zero = mean(per_call[0]) * 1000
    loaded = mean(per_call[args.latency_ms]) * 1000
    print(f"  platform overhead beyond the stub's latency: {zero:.0f} ms of wall time per call at 0 ms, "
          f"{loaded:.0f} ms at {args.latency_ms} ms: the stub's latency hides behind the platform's own work")
    print(f"  task time / call: the chunk tasks' durations (their Lambda REPORT lines) summed / calls; a task works on "
          f"{workers} calls at once, so one call's time in its worker thread is up to {workers} x that")
    print("  per call: 2 DynamoDB transactions (claim, finish), S3 get (recording) and put (transcript), "
          "the OpenAI client's upload and the stub's parsing; per chunk: one BatchGetItem of its calls, moto's Step "
          "Functions interpreter, Lambda dispatch to a container, the worker's set-up. The platform's process (moto, "
          "the interpreter, the stubs) and the containers share the cores, each AWS call over HTTP to moto")


# ---------------------------------------------------------------------------------------------- e2e
def bench_e2e(demo_calls: int, source: str) -> dict[str, Any]:
    days = DateRange(*(date.fromisoformat(d) for d in demo_range()))
    with LocalPlatform(port=0, demo_calls=demo_calls, postgres=False, parameter_overrides=QUIET) as platform:
        result: dict[str, Any] = {"source": source, "days": days, "concurrency": _concurrency(platform)}
        with httpx.Client(base_url=platform.api_url, headers=platform.api_headers, timeout=120) as api:
            began = time.monotonic()
            if source == "sync":
                sync = run_process(api, platform, "sync", DEMO_CLIENT, days, poll_seconds=5)
                result["sync"] = sync
            else:
                items = synced_items(platform.amocrm.calls, client_id=DEMO_CLIENT, days=days,
                                     base_url=platform.amocrm.url, min_seconds=min_recording_seconds(platform))
                result["seeded"] = seed_synced(platform, DEMO_CLIENT, items)
            result["prepare_s"] = time.monotonic() - began
            for process in ("transcribe", "analyze"):
                print(f"  {process} ...", flush=True)
                run = run_process(api, platform, process, DEMO_CLIENT, days, poll_seconds=5)
                result[process] = run
                result[f"{process}_history"] = history_stats(platform, run.execution_arn)
                print(f"  {process}: {describe(run.status)} in {run.wall_s:.0f} s", flush=True)
        return result


def print_e2e(args: argparse.Namespace) -> None:
    how = ("synced through the API from the stub amoCRM" if args.e2e_source == "sync" else
           "seeded as a finished sync leaves them (items through the DAL, the stub's WAVs in S3)")
    print(f"e2e: {args.e2e_calls:,} demo calls {how}; then transcribed and analysed through the HTTP API, OpenAI "
          f"stub at 0 ms (this takes a while) ...", flush=True)
    r = bench_e2e(args.e2e_calls, args.e2e_source)
    if "sync" in r:
        sync = r["sync"]
        print(f"  sync: {describe(sync.status)} in {sync.wall_s:.0f} s "
              f"({sync.status['total_calls'] / sync.wall_s:.1f} calls/s)")
    else:
        s = r["seeded"]
        print(f"  seeded {s['calls']:,} calls, {s['recordings']:,} recordings "
              f"({s['recording_bytes'] / 1e6:.0f} MB) in {r['prepare_s']:.0f} s (not measured)")
    maps, workers, chunk = r["concurrency"]
    print(f"  range {r['days'].start}..{r['days'].end}; {chunk} calls per chunk, {maps} chunks x {workers} calls "
          "at once")
    total = 0.0
    for process in ("transcribe", "analyze"):
        run = r[process]
        hist = r[f"{process}_history"]
        calls = run.status["total_calls"]
        total += run.wall_s
        verdict = "ok" if run.status["overall_status"] == "completed" else "NOT completed"
        print(f"  {process:<10}: {describe(run.status)} ({verdict}); wall {run.wall_s:,.0f} s, polled (execution "
              f"{(run.execution_s or 0):,.0f} s), {calls / (run.execution_s or run.wall_s):.1f} calls/s")
        print(f"{'':14}history {hist.events:,} events = {hist.events / HISTORY_EVENT_LIMIT * 100:.1f} % of "
              f"{HISTORY_EVENT_LIMIT:,}; largest payload {hist.largest_bytes:,} B = "
              f"{hist.largest_bytes / PAYLOAD_LIMIT_BYTES * 100:.2f} % of 256 KiB ({hist.largest_where})")
        print(f"{'':14}states: " + ", ".join(f"{name} {seconds:,.0f} s" for name, seconds in hist.phases.items()))
    print(f"  transcription + analysis: {total:,.0f} s wall ({total / 60:.1f} min)")


# ---------------------------------------------------------------------------------------------- report
def bench_report(calls: int) -> dict[str, Any]:
    days = days_back(31)
    client_id = "bench-report"
    with LocalPlatform(port=0, demo_calls=10, parameter_overrides=QUIET) as platform:
        register_clinic(platform, client_id)
        began = time.monotonic()
        seeded = seed_analysed(platform, client_id, calls, days)
        result: dict[str, Any] = {"seeded": seeded, "seed_s": time.monotonic() - began,
                                  "chunk_tokens": int(platform.template.parameters["ReportChunkTokens"])}
        platform.openai.reset_stats()
        with httpx.Client(base_url=platform.api_url, headers=platform.api_headers, timeout=120) as api:
            run = run_process(api, platform, "recommendations", client_id, days, poll_seconds=2)
            result["run"] = run
            result["history"] = history_stats(platform, run.execution_arn)
            report = api.get(REPORT_PATH, params={"client_id": client_id, "start_date": days.start.isoformat(),
                                                  "end_date": days.end.isoformat()}).json()
        result["problems"] = len(report.get("problems") or [])
        result["openai"] = platform.openai.stats()
    return result


def print_report(args: argparse.Namespace) -> None:
    print(f"report: the recommendations process (theme map, merge, counts, PostgreSQL sync) through the HTTP API "
          f"for {args.report_calls:,} analysed calls seeded through the DAL; OpenAI stub at 0 ms ...", flush=True)
    r = bench_report(args.report_calls)
    run, ai, hist = r["run"], r["openai"], r["history"]
    postgres = run.status.get("postgres_sync") or {}
    print(f"  seeded {r['seeded']:,} analysed calls in {r['seed_s']:.0f} s (not measured)")
    print(f"  {describe(run.status)}; wall {run.wall_s:,.0f} s (execution {(run.execution_s or 0):,.0f} s); "
          f"{r['problems']} problems in the report; PostgreSQL sync {postgres.get('status')}, "
          f"{sum((postgres.get('rows') or {}).values()):,} rows")
    print(f"  LLM requests: {ai['completions']:,} ({ai['prompt_tokens']:,} prompt tokens in all); largest prompt "
          f"{ai.get('largest_prompt_tokens', 0):,} tokens (chunk budget {r['chunk_tokens']:,})")
    print(f"  history {hist.events:,} events; largest payload {hist.largest_bytes:,} B "
          f"({hist.largest_where}); states: " + ", ".join(f"{n} {s:,.0f} s" for n, s in hist.phases.items()))


def print_postgres_bench(args: argparse.Namespace) -> None:
    print(f"postgres: {args.postgres_calls:,} analysed calls upserted into the embedded PostgreSQL in batches "
          "(COPY + one INSERT ... ON CONFLICT per table), against a plain row-by-row INSERT of the same rows ...",
          flush=True)
    print_postgres(bench_postgres(args.postgres_calls))


# ---------------------------------------------------------------------------------------------- command line
def print_long_recording_bench(args: argparse.Namespace) -> None:
    print_long_recording(bench_long_recording(ms_per_audio_minute=args.ms_per_audio_minute,
                                              repeats=args.recording_repeats), args.ms_per_audio_minute)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench", nargs="*", metavar="{" + ",".join([*BENCHES, "all"]) + "}",
                        help="which benchmarks to run (default: all)")
    parser.add_argument("--calls", type=int, default=2000, help="sync-rate: demo calls")
    parser.add_argument("--page-size", type=int, default=50, help="sync-rate: amoCRM page size")
    parser.add_argument("--status-sizes", type=int, nargs=2, default=(100, 10_000), metavar=("SMALL", "LARGE"),
                        help="status: calls of the two clinics")
    parser.add_argument("--status-requests", type=int, default=200, help="status: measured requests per clinic")
    parser.add_argument("--status-warmup", type=int, default=20, help="status: warm-up requests per clinic")
    parser.add_argument("--overhead-demo-calls", type=int, default=300,
                        help="overhead: demo calls (about 60 %% have a recording to transcribe)")
    parser.add_argument("--latency-ms", type=int, default=200, help="overhead: the stub's latency of the second run")
    parser.add_argument("--e2e-calls", type=int, default=10_000, help="e2e: demo calls in the range")
    parser.add_argument("--e2e-source", choices=("seed", "sync"), default="seed",
                        help="e2e: seed the synced calls directly (default) or sync them through the API")
    parser.add_argument("--postgres-calls", type=int, default=10_000, help="postgres: analysed calls synced")
    parser.add_argument("--report-calls", type=int, default=10_000, help="report: analysed calls in the range")
    parser.add_argument("--ms-per-audio-minute", type=float, default=1000.0,
                        help="long-recording: the stub's latency per minute of uploaded audio")
    parser.add_argument("--recording-repeats", type=int, default=2, help="long-recording: runs of each setting")
    args = parser.parse_args(argv)
    unknown = set(args.bench) - {*BENCHES, "all"}
    if unknown:  # checked here: argparse rejects an empty list against choices (nargs="*")
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    chosen = [b for b in BENCHES if b in args.bench] if args.bench and "all" not in args.bench else list(BENCHES)
    runners = {"sync-rate": print_sync_rate, "status": print_status, "overhead": print_overhead, "e2e": print_e2e,
               "postgres": print_postgres_bench, "report": print_report,
               "long-recording": print_long_recording_bench}
    for i, name in enumerate(chosen):
        if i:
            print()
        began = time.monotonic()
        runners[name](args)
        print(f"  ({name}: {time.monotonic() - began:.0f} s in all)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
