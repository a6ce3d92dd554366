"""``make demo``: the main job end to end on the local platform, through the HTTP API as the frontend does.

Starts the platform, then for the demo clinic's last 30 days runs sync, transcription and analysis in
turn: each started, then its status endpoint polled with a progress bar. Prints each summary and a
few analysed calls, and exits 0 on success (1 if a run failed, 2 if one finished with failed calls).
``--keep-serving`` leaves the platform up afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from infra.platform import LocalPlatform

DEMO_CLIENT = "demo"
FINISHED = ("completed", "partial", "failed")
PROCESSES = (  # label, start path, status path, the body's date spelling (as the frontend guide sends it)
    ("sync", "/api/calls-parallel-bulk/sync-by-date-range", "/api/calls-parallel-bulk/sync-by-date-range-status",
     "_str"),
    ("transcribe", "/api/calls/transcribe-by-date-range", "/api/calls/transcribe-by-date-range-status", ""),
    ("analyze", "/api/analyze-by-date-range", "/api/analyze-by-date-range-status", "_str"),
)


def demo_range(days: int = 31, tz: str = "Europe/Moscow") -> tuple[str, str]:
    today = datetime.now(ZoneInfo(tz)).date()
    return (today - timedelta(days=days)).isoformat(), today.isoformat()


def progress_bar(label: str, status: dict[str, Any], width: int = 32) -> str:
    pct = float(status.get("progress_percentage") or 0)
    filled = round(width * pct / 100)
    b = status.get("status_breakdown", {})
    return (f"{label:<13} [{'#' * filled}{'.' * (width - filled)}] {pct:6.2f}%  "
            f"{b.get('success', 0) + b.get('failed', 0)}/{status.get('total_calls', 0)} calls "
            f"(failed {b.get('failed', 0)})")


def run_process(api: httpx.Client, label: str, start_path: str, status_path: str, *, body: dict[str, Any],
                poll_seconds: float) -> dict[str, Any]:
    """Start one process and poll its status to the end, drawing a progress bar; the final status."""
    answer = api.post(start_path, json=body)
    if answer.status_code not in (200, 202):
        raise SystemExit(f"{label}: start refused: HTTP {answer.status_code} {answer.text}")
    started = answer.json()
    print(f"{label}: {started['message']} (execution {started['execution_name']})")
    query = {"client_id": body["client_id"], "start_date": body.get("start_date") or body["start_date_str"],
             "end_date": body.get("end_date") or body["end_date_str"]}  # status queries use the short spelling
    tty = sys.stdout.isatty()
    last_line = ""
    while True:
        status = api.get(status_path, params=query).json()
        line = progress_bar(label, status)
        if tty:
            print("\r" + line, end="", flush=True)
        elif line != last_line:
            print(line, flush=True)
        last_line = line
        if status.get("overall_status") in FINISHED:
            break
        time.sleep(poll_seconds)
    if tty:
        print()
    return dict(status)


def print_summary(label: str, status: dict[str, Any]) -> None:
    b = status["status_breakdown"]
    line = (f"  {label}: {status['overall_status']}, {status['total_calls']} calls: {b['success']} succeeded, "
            f"{b['failed']} failed")
    skipped = status.get("skipped") or {}
    if skipped:
        line += " (" + ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(skipped.items())) + ")"
    print(line)
    if status.get("error"):
        print(f"    error: {status['error']}")


def print_analysed_calls(platform: LocalPlatform, limit: int = 3) -> None:
    table = platform.boto3_resource("dynamodb").Table(platform.env["CALLSIGHT_TABLE_NAME"])
    items = table.query(KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": f"CALLS#{DEMO_CLIENT}"},
                        ScanIndexForward=False)["Items"]
    analysed = sorted((i for i in items if i.get("analysis")), key=lambda i: str(i["call_time"]), reverse=True)
    print(f"\nLatest analysed calls ({len(analysed)} in all):")
    for item in analysed[:limit]:
        a = item["analysis"]
        print(f"\n  {str(item['call_time'])[:16].replace('T', ' ')}  {item['direction']}, {int(item['duration'])} s, "
              f"administrator {item.get('administrator') or '-'}")
        print(f"  type {a['call_type']}, booked: {'yes' if a['outcome']['booked'] else 'no'} "
              f"({a['outcome']['reason']}), score {a['overall_score']}/100, patient {a['patient_sentiment']}")
        print(f"  {a['summary']}")
        for advice in a["recommendations"][:3]:
            print(f"   - {advice}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep-serving", action="store_true", help="keep the platform up after the demo")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "0")))
    parser.add_argument("--demo-calls", type=int, default=int(os.environ.get("DEMO_CALLS", "200")))
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between status polls (frontend: 5)")
    args = parser.parse_args(argv)

    start, end = demo_range()
    overrides = {"LogLevel": os.environ.get("LOG_LEVEL", "WARNING")}  # handlers' JSON logs would hide the bar
    with LocalPlatform(port=args.port, demo_calls=args.demo_calls, parameter_overrides=overrides) as platform:
        print(f"Callsight local platform ready at {platform.api_url}")
        finals: list[tuple[str, dict[str, Any]]] = []
        with httpx.Client(base_url=platform.api_url, timeout=60) as api:
            for label, start_path, status_path, spelling in PROCESSES:
                body = {"client_id": DEMO_CLIENT, f"start_date{spelling}": start, f"end_date{spelling}": end}
                finals.append((label, run_process(api, label, start_path, status_path, body=body,
                                                  poll_seconds=args.poll)))
                if finals[-1][1]["overall_status"] == "failed":
                    break
        print(f"\nDemo clinic, {start}..{end}:")
        for label, status in finals:
            print_summary(label, status)
        print_analysed_calls(platform)
        outcomes = {status["overall_status"] for _, status in finals}
        code = 1 if "failed" in outcomes else 2 if outcomes - {"completed"} else 0
        if args.keep_serving:
            print(f"\nServing at {platform.api_url} - Ctrl-C to stop.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return code


if __name__ == "__main__":
    raise SystemExit(main())
