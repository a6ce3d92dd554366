"""A run stopped mid-way (StopExecution): once it is recorded finished, its chunk workers still in flight claim
nothing more (the rest of the range stays pending for the next run) and nothing is left processing."""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from callsight.processes import Process
from infra.platform import LocalPlatform

SYNC, SYNC_STATUS = Process.SYNC.spec.start_path, Process.SYNC.spec.status_path
TRANSCRIBE, TRANSCRIBE_STATUS = Process.TRANSCRIBE.spec.start_path, Process.TRANSCRIBE.spec.status_path


def _status(api: httpx.Client, path: str, days: dict[str, str]) -> dict[str, Any]:
    status: dict[str, Any] = api.get(path, params=days).json()
    breakdown = status["status_breakdown"]
    assert sum(breakdown.values()) == status["total_calls"], status
    return status


def _until(api: httpx.Client, path: str, days: dict[str, str], done: Any, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not done(status := _status(api, path, days)):
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    return status


@pytest.mark.platform
def test_a_stopped_run_changes_nothing_once_recorded_finished() -> None:
    today = date.today()
    days = {"client_id": "demo", "start_date": (today - timedelta(days=30)).isoformat(),
            "end_date": today.isoformat()}
    # chunks of 40 calls, 4 at a time, 0.7 s each at the OpenAI stub: a chunk takes ~7 s, so the stop finds its
    # workers with most of their chunk still to claim, well after the run's end is recorded (~2 s)
    with LocalPlatform(port=0, postgres=False, demo_calls=120, openai_latency_ms=700, state_file=None,
                       parameter_overrides={"LogLevel": "WARNING", "CallsPerChunk": 40}) as platform, \
            httpx.Client(base_url=platform.api_url, headers=platform.api_headers, timeout=60) as api:
        assert api.post(SYNC, json=days).status_code in (200, 202)
        _until(api, SYNC_STATUS, days, lambda s: s["overall_status"] != "processing")
        started = api.post(TRANSCRIBE, json=days)
        assert started.status_code == 202, started.text
        _until(api, TRANSCRIBE_STATUS, days, lambda s: s["status_breakdown"]["success"] >= 4)
        platform.boto3_client("stepfunctions").stop_execution(
            executionArn=platform.execution_arn("transcribe", started.json()["execution_name"]))

        # recorded finished, and done failing the calls it had in progress (till then it reads processing)
        recorded = _until(api, TRANSCRIBE_STATUS, days,
                          lambda s: s["finished_at"] is not None and s["overall_status"] != "processing", timeout=30)
        assert recorded["status_breakdown"]["processing"] == 0, recorded
        assert recorded["overall_status"] == "failed" and "ABORTED" in (recorded["error"] or "")
        assert recorded["status_breakdown"]["pending"] > 0, recorded  # it was stopped mid-way
        deadline = time.monotonic() + 5  # longer than a call takes: claims after the end would show by then
        while time.monotonic() < deadline:
            now = _status(api, TRANSCRIBE_STATUS, days)
            assert now["status_breakdown"]["pending"] == recorded["status_breakdown"]["pending"], now
            assert now["total_calls"] == recorded["total_calls"]
            time.sleep(0.25)
        final = _until(api, TRANSCRIBE_STATUS, days, lambda s: s["status_breakdown"]["processing"] == 0, timeout=30)
        assert final["status_breakdown"]["pending"] == recorded["status_breakdown"]["pending"], final
