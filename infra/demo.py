"""``make demo``: the main job end to end on the local platform, through the HTTP API as a frontend does.

Starts the platform, then for the demo clinic's last 30 days starts the pipeline (sync, transcription,
analysis, recommendations report, PostgreSQL sync: all five processes in one execution) and polls its
status with a progress bar per process. Prints each summary, the report's highlights, the rows written to
PostgreSQL and how to connect to the database; exits 0 on success (1 if a run failed, 2 if one finished
with failed calls). ``--keep-serving`` leaves the platform (and its database) up afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from callsight.postgres.sync import TABLES as BI_TABLES
from callsight.processes import PIPELINE_STEPS, REPORT_PATH, Process
from infra.platform import LocalPlatform

DEMO_CLIENT = "demo"
FINISHED = ("completed", "partial", "failed")


def demo_range(days: int = 31, tz: str = "Europe/Moscow") -> tuple[str, str]:
    today = datetime.now(ZoneInfo(tz)).date()
    return (today - timedelta(days=days)).isoformat(), today.isoformat()


def progress_bar(label: str, status: dict[str, Any], width: int = 32) -> str:
    pct = float(status.get("progress_percentage") or 0)
    filled = round(width * pct / 100)
    b = status.get("status_breakdown", {})
    return (f"{label:<16} [{'#' * filled}{'.' * (width - filled)}] {pct:6.2f}%  "
            f"{b.get('success', 0) + b.get('failed', 0)}/{status.get('total_calls', 0)} calls "
            f"(failed {b.get('failed', 0)})  {status.get('overall_status', '')}")


def postgres_bar(status: dict[str, Any], width: int = 32) -> str:
    sync = status.get("postgres_sync") or {}
    state = str(sync.get("status") or "pending")
    filled = width if state == "completed" else 0
    rows = sum(int(v) for v in (sync.get("rows") or {}).values())
    return f"{'postgres sync':<16} [{'#' * filled}{'.' * (width - filled)}] {rows:,} rows  {state}"


def draw(lines: list[str], previous: list[str], tty: bool) -> None:
    if tty:
        if previous:
            print(f"\x1b[{len(previous)}F", end="")
        for line in lines:
            print("\x1b[2K" + line)
        sys.stdout.flush()
    else:
        for line, before in zip(lines, previous or [""] * len(lines), strict=True):
            if line != before:
                print(line, flush=True)


def run_pipeline(api: httpx.Client, body: dict[str, Any], *, poll_seconds: float) -> dict[str, Any]:
    """Start the pipeline and poll its status to the end, a progress bar per process; the final status."""
    spec = Process.PIPELINE.spec
    answer = api.post(spec.start_path, json=body)
    if answer.status_code not in (200, 202):
        raise SystemExit(f"pipeline: start refused: HTTP {answer.status_code} {answer.text}")
    started = answer.json()
    print(f"{started['message']} (execution {started['execution_name']})")
    query = {"client_id": body["client_id"], "start_date": body["start_date"], "end_date": body["end_date"]}
    tty = sys.stdout.isatty()
    previous: list[str] = []
    while True:
        status = api.get(spec.status_path, params=query).json()
        steps = status.get("steps") or {}
        lines = [progress_bar(p.value, steps.get(p.value, {})) for p in PIPELINE_STEPS]
        lines.append(postgres_bar(steps.get(Process.RECOMMENDATIONS.value, {})))
        draw(lines, previous, tty)
        previous = lines
        if status.get("overall_status") in FINISHED:
            return dict(status)
        time.sleep(poll_seconds)


def print_summary(label: str, status: dict[str, Any]) -> None:
    b = status["status_breakdown"]
    line = (f"  {label}: {status['overall_status']}, {status['total_calls']} calls: {b['success']} succeeded, "
            f"{b['failed']} failed")
    skipped = status.get("skipped") or {}
    if skipped:
        line += " (" + ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(skipped.items())) + ")"
    print(line)
    notes = status.get("notes")
    if notes:  # the sync: what became of every amoCRM note
        rejected = status.get("rejected") or {}
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(rejected.items()))
        print(f"    amoCRM: {notes['notes_scanned']} notes: {notes['calls_in_range']} calls in the range, "
              f"{notes['duplicates_merged']} duplicates merged (a call filed on several entities), "
              f"{notes['repeated_notes']} repeated, {notes['out_of_range']} outside the range, "
              f"{notes['rejected_notes']} notes rejected" + (f"; rejected: {reasons}" if reasons else ""))
    for entity, why in sorted((status.get("skipped_entities") or {}).items()):
        print(f"    {entity} not scanned: {why}")
    if status.get("error"):
        print(f"    error: {status['error']}")


def print_report(api: httpx.Client, query: dict[str, str]) -> None:
    answer = api.get(REPORT_PATH, params=query)
    if answer.status_code != 200:
        print(f"\nNo report: HTTP {answer.status_code} {answer.text}")
        return
    report = answer.json()
    booking = report.get("booking") or {}
    print(f"\nRecommendations report ({report['analysed_calls']} analysed calls of {report['total_calls']}):")
    if booking.get("conversion") is not None:
        print(f"  booking conversion: {float(booking['conversion']) * 100:.1f} %")
    print("  most frequent problems:")
    for problem in report["problems"][:3]:
        print(f"   {problem['rank']}. {problem['title']}: {problem['calls']} calls ({problem['share'] * 100:.1f} %)")
    print("  first actions for the manager:")
    for action in (report.get("actions") or [])[:3]:
        print(f"   - {action['action']}")
    print(f"  the whole report: GET {REPORT_PATH}?client_id={query['client_id']}&start_date={query['start_date']}"
          f"&end_date={query['end_date']}&format=md")


def print_postgres(url: str | None, client_id: str) -> None:
    if not url:
        print("\nNo PostgreSQL (DATABASE_URL unset and the embedded one off).")
        return
    import psycopg

    with psycopg.connect(url, connect_timeout=5) as connection:
        counts = {table: connection.execute(f"SELECT count(*) FROM {table} WHERE client_id = %s",  # noqa: S608
                                            (client_id,)).fetchone() for table in BI_TABLES}
    print("\nRows in PostgreSQL: " + ", ".join(f"{table} {row[0] if row else 0:,}" for table, row in counts.items()))
    psql = shutil.which("psql") or "psql"
    print(f"Connect (while the platform runs: make demo DEMO_ARGS=--keep-serving):\n  {psql} '{url}'")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep-serving", action="store_true", help="keep the platform up after the demo")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "0")))
    parser.add_argument("--demo-calls", type=int, default=int(os.environ.get("DEMO_CALLS", "200")))
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between status polls (frontend: 5)")
    args = parser.parse_args(argv)

    start, end = demo_range()
    overrides = {"LogLevel": os.environ.get("LOG_LEVEL", "WARNING")}  # handlers' JSON logs would hide the bars
    with LocalPlatform(port=args.port, demo_calls=args.demo_calls, parameter_overrides=overrides) as platform:
        print(f"Callsight local platform ready at {platform.api_url} (API key: {platform.api_key})")
        query = {"client_id": DEMO_CLIENT, "start_date": start, "end_date": end}
        with httpx.Client(base_url=platform.api_url, headers=platform.api_headers, timeout=60) as api:
            final = run_pipeline(api, query, poll_seconds=args.poll)
            print(f"\nDemo clinic, {start}..{end}: pipeline {final['overall_status']}")
            if final.get("error"):
                print(f"  error: {final['error']}")
            steps = final.get("steps") or {}
            for process in PIPELINE_STEPS:
                if process.value in steps:
                    print_summary(process.value, steps[process.value])
            print_report(api, query)
        print_postgres(platform.database_url, DEMO_CLIENT)
        outcome = final["overall_status"]
        code = 1 if outcome == "failed" else 2 if outcome != "completed" else 0
        if args.keep_serving:
            print(f"\nServing at {platform.api_url} (send x-api-key: {platform.api_key}) - Ctrl-C to stop.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return code


if __name__ == "__main__":
    raise SystemExit(main())
