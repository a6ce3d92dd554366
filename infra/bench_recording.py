"""``make bench BENCH_ARGS=long-recording``: one 60-minute telephony MP3 transcribed with its parts sent at once
against one after another, side by side in one run.

The recording (8 kHz mono 24 kbit/s MP3, ~10.8 MB, a dialogue spread over the hour, encoded by the packaged ffmpeg)
is in an in-process moto S3; the production :class:`callsight.logic.transcribe.Transcriber` streams it to disk,
splits it (stream copy: the model takes at most 1,400 s a request) and sends its parts to the stub OpenAI, whose
answer takes ``latency_ms_per_audio_minute`` per minute of the uploaded audio (the real service takes a few seconds
a minute). The two settings alternate, ``repeats`` times each; the ratio is sequential / concurrent.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws
from openai import OpenAI

from callsight.dal.calls import CallKey, CallRepository
from callsight.dal.recordings import ObjectStore, transcript_key
from callsight.dal.table import Table
from callsight.llm import RetryPolicy
from callsight.logic.transcribe import Transcriber, TranscriptionSettings
from infra.stubs.audio import build_recording, speech_timeline
from infra.stubs.openai import DEFAULT_API_KEY, OpenAIStub

BUCKET = "bench-long-recording"
SECONDS = 3600.0
_SCRIPT = [("administrator", "Клиника «Здоровье», администратор Анна, здравствуйте."),
           ("patient", "Здравствуйте, я хотела бы записаться к кардиологу на следующей неделе."),
           ("administrator", "Минутку, посмотрю расписание врача и свободные окна."),
           ("patient", "Хорошо, я подожду на линии.")] * 30


def long_recording(folder: Path) -> Path:
    lines = speech_timeline(_SCRIPT, SECONDS, "bench-long-recording")
    data = build_recording({"lines": lines}, seconds=SECONDS, lines=lines, seed="bench-long-recording", fmt="mp3",
                           bitrate_kbps=24)
    path = folder / "call-60min.mp3"
    path.write_bytes(data)
    return path


def bench_long_recording(*, ms_per_audio_minute: float, repeats: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="callsight-bench-"))
    recording = long_recording(folder)
    stub = OpenAIStub(latency_ms_per_audio_minute=ms_per_audio_minute)
    stub.start()
    try:
        result = _transcribe_both_ways(stub, recording, folder, repeats)
    finally:
        stub.stop()
    return {"bytes": recording.stat().st_size, **result, "max_in_flight": stub.stats()["max_transcriptions_in_flight"]}


def _transcribe_both_ways(stub: OpenAIStub, recording: Path, folder: Path, repeats: int) -> dict[str, Any]:
    times: dict[int, list[float]] = {1: [], 4: []}
    parts = 0
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # the adapters' clients take the region from it
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        store = ObjectStore(BUCKET)
        with recording.open("rb") as handle:
            store.upload("recordings/bench/2026-11-10/call-60min.mp3", handle, "audio/mpeg")
        client = OpenAI(api_key=DEFAULT_API_KEY, base_url=stub.base_url, max_retries=0, timeout=600)
        calls = CallRepository(Table("bench-unused"), "bench")
        call = {"call_id": "call-60min", "recording_key": "recordings/bench/2026-11-10/call-60min.mp3",
                "direction": "incoming"}
        for _ in range(repeats):
            for concurrency in (1, 4):
                settings = TranscriptionSettings(
                    model="gpt-transcribe", language="ru", prompt="", response_format="",
                    max_upload_bytes=25 * 1024 * 1024, max_audio_seconds=None, part_concurrency=concurrency,
                    retry=RetryPolicy(attempts=1), workdir=str(folder))
                transcriber = Transcriber(calls=calls, store=store, client=client, settings=settings)
                began = time.perf_counter()
                transcriber.transcribe(CallKey("2026-11-10", "call-60min"), call)
                times[concurrency].append(time.perf_counter() - began)
                parts = len(store.get_json(transcript_key("bench", "2026-11-10", "call-60min"))["part_list"])
    return {"parts": parts, "sequential_s": times[1], "concurrent_s": times[4]}


def print_long_recording(result: dict[str, Any], ms_per_audio_minute: float) -> None:
    sequential, concurrent = statistics.median(result["sequential_s"]), statistics.median(result["concurrent_s"])
    print(f"long-recording: one 60-minute MP3 ({result['bytes'] / 1e6:.1f} MB) in {result['parts']} parts, the stub "
          f"at {ms_per_audio_minute:.0f} ms per audio minute")
    print("  parts one after another: " + ", ".join(f"{t:.1f}" for t in result["sequential_s"]) + " s")
    print("  parts at once (4):       " + ", ".join(f"{t:.1f}" for t in result["concurrent_s"]) + " s")
    print(f"  median {sequential:.1f} s vs {concurrent:.1f} s: {sequential / concurrent:.2f} x faster "
          f"(most parts in flight at once: {result['max_in_flight']})")
