"""A worker's memory does not grow with the recording: Transcriber.transcribe of 200 MB recordings, in a child Python
process whose peak RSS (VmHWM) is measured; S3 is a moto server and OpenAI the stub, both in this process, so neither
holds the recording in the child's memory. The child runs the production code path: ObjectStore.download_to over
HTTP, the split from disk, the parts uploaded from their files by the official client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from infra.stubs.openai import OpenAIStub
from tests.unit.test_audio_parts import big_recordings

MB = 1024 * 1024
BUCKET = "memory-test-recordings"
#: the child's peak, whatever the recordings' size: measured 83 MB for one 200 MB WAV (imports: 65 MB), 129 MB for
#: four calls at once (three 200 MB WAVs and an OGG), four parts of each in flight; reading one recording whole
#: would add 200 MB
PEAK_BOUND_MB = 200
#: what transcribing adds to the imports' baseline (threads, their malloc arenas, httpx buffers, 1 MB copy blocks):
#: measured 18 MB for one call, 64 MB for four at once
ONE_CALL_GROWTH_BOUND_MB = 40
FOUR_CALLS_GROWTH_BOUND_MB = 100
#: ffmpeg's own peak re-encoding a 32-minute OGG, measured 37 MB (a child of the worker: on Lambda it counts too)
FFMPEG_BOUND_MB = 80

CHILD = textwrap.dedent("""
    import json, os, sys, threading
    from concurrent.futures import ThreadPoolExecutor

    from openai import OpenAI

    from callsight.dal.calls import CallKey
    from callsight.dal.recordings import ObjectStore
    from callsight.llm import RetryPolicy
    from callsight.logic.transcribe import Transcriber, TranscriptionSettings

    def status_kb(pid, field):
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        except OSError:  # ended
            return 0
        return 0

    def high_water_kb():
        return status_kb("self", "VmHWM")

    # ffmpeg's own memory, sampled while it runs (a child's ru_maxrss would count the fork of this process)
    ffmpeg = {"peak_kb": 0, "together_kb": 0}
    stop = threading.Event()

    def watch_children():
        me = str(os.getpid())
        while not stop.wait(0.02):
            together = 0
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        stat = open(f"/proc/{entry}/stat").read()
                    except OSError:
                        continue
                    if stat.rsplit(")", 1)[-1].split()[1] == me and "(ffmpeg" in stat:
                        ffmpeg["peak_kb"] = max(ffmpeg["peak_kb"], status_kb(entry, "VmHWM"))
                        together += status_kb(entry, "VmRSS")
            ffmpeg["together_kb"] = max(ffmpeg["together_kb"], together)

    watcher = threading.Thread(target=watch_children, daemon=True)
    watcher.start()

    job = json.loads(sys.argv[1])
    store = ObjectStore(job["bucket"])
    client = OpenAI(api_key="stub-openai-key", base_url=job["openai"], max_retries=0, timeout=120)

    class Calls:
        client_id = "c"

    settings = TranscriptionSettings(model="gpt-transcribe", language="ru", prompt="", response_format="",
                                     max_upload_bytes=25 * 1024 * 1024, max_audio_seconds=None,
                                     part_concurrency=job["part_concurrency"], retry=RetryPolicy(attempts=2),
                                     workdir=job["workdir"])
    transcriber = Transcriber(calls=Calls(), store=store, client=client, settings=settings)
    baseline = high_water_kb()

    def one(index_key):
        index, key = index_key
        call = {"call_id": f"call-{index}", "recording_key": key, "direction": "incoming"}
        result = transcriber.transcribe(CallKey("2026-11-10", f"call-{index}"), call)
        return store.get_json(result["transcript_key"])["parts"]

    with ThreadPoolExecutor(max_workers=len(job["keys"])) as pool:
        parts = list(pool.map(one, enumerate(job["keys"])))
    stop.set()
    watcher.join()
    print(json.dumps({"baseline_kb": baseline, "peak_kb": high_water_kb(), "parts": parts,
                      "ffmpeg_peak_kb": ffmpeg["peak_kb"], "ffmpeg_together_kb": ffmpeg["together_kb"]}))
""")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, Any]]:
    """A moto server (its own HTTP endpoint) with the bucket."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield url, client
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


@pytest.fixture(scope="module")
def recording_200_mb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 200 MB PCM WAV: 44.1 kHz stereo 16-bit, 19.8 minutes (written in blocks, never held whole)."""
    path = tmp_path_factory.mktemp("memory") / "long-call.wav"
    data_bytes = 200 * MB - 44
    rate, channels, width = 44100, 2, 2
    header = (b"RIFF" + (36 + data_bytes).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
              + (1).to_bytes(2, "little") + channels.to_bytes(2, "little") + rate.to_bytes(4, "little")
              + (rate * channels * width).to_bytes(4, "little") + (channels * width).to_bytes(2, "little")
              + (width * 8).to_bytes(2, "little") + b"data" + data_bytes.to_bytes(4, "little"))
    block = bytes(range(256)) * 4096  # 1 MB
    with path.open("wb") as out:
        out.write(header)
        left = data_bytes
        while left:
            out.write(block[: min(left, len(block))])
            left -= min(left, len(block))
    assert path.stat().st_size == 200 * MB
    return path


def _upload(client: Any, path: Path, key: str) -> str:
    client.upload_file(str(path), BUCKET, key)
    return key


def _measure(s3: tuple[str, Any], stub: OpenAIStub, workdir: Path, keys: list[str]) -> dict[str, Any]:
    env = {**os.environ, "AWS_ENDPOINT_URL": s3[0], "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    job = {"bucket": BUCKET, "openai": f"{stub.url}/v1", "workdir": str(workdir), "part_concurrency": 4,
           "keys": keys}
    completed = subprocess.run([sys.executable, "-c", CHILD, json.dumps(job)], env=env, capture_output=True,
                               timeout=600, check=False, cwd=Path(__file__).resolve().parents[2])
    assert completed.returncode == 0, completed.stderr.decode()[-3000:]
    figures: dict[str, Any] = json.loads(completed.stdout.decode().strip().splitlines()[-1])
    print(f"\nmemory of {len(keys)} call(s) at once: baseline {figures['baseline_kb'] / 1024:.0f} MB, "
          f"peak {figures['peak_kb'] / 1024:.0f} MB; ffmpeg {figures['ffmpeg_peak_kb'] / 1024:.0f} MB "
          f"(all at once {figures['ffmpeg_together_kb'] / 1024:.0f} MB); "
          f"parts {figures['parts']}")
    assert list(workdir.iterdir()) == []  # every recording and part removed
    return figures


def test_one_200_mb_recording_stays_within_the_bound(s3: tuple[str, Any], stub: OpenAIStub,
                                                     recording_200_mb: Path, tmp_path: Path) -> None:
    key = _upload(s3[1], recording_200_mb, "recordings/c/2026-11-10/long-call.wav")
    figures = _measure(s3, stub, tmp_path, [key])
    assert figures["parts"] == [9]  # 200 MB in parts of at most 25 MB (of 19.8 minutes: the bytes limit)
    assert figures["peak_kb"] < PEAK_BOUND_MB * 1024
    assert figures["peak_kb"] - figures["baseline_kb"] < ONE_CALL_GROWTH_BOUND_MB * 1024
    assert figures["ffmpeg_peak_kb"] == 0  # a PCM WAV is cut in Python


def test_four_200_mb_recordings_at_once_stay_within_the_same_bound(s3: tuple[str, Any], stub: OpenAIStub,
                                                                   recording_200_mb: Path, tmp_path: Path) -> None:
    """The worst case of one worker: WorkerConcurrency 4 calls at once (three 200 MB WAVs and a 32-minute OGG that
    ffmpeg re-encodes), each with TranscriptionPartConcurrency 4 parts in flight."""
    keys = [_upload(s3[1], recording_200_mb, f"recordings/c/2026-11-10/call-{n}.wav") for n in range(3)]
    ogg = big_recordings(tmp_path / "big")["ogg"]
    keys.append(_upload(s3[1], ogg, "recordings/c/2026-11-10/call-ogg.ogg"))
    workdir = tmp_path / "work"
    workdir.mkdir()
    figures = _measure(s3, stub, workdir, keys)
    assert figures["parts"][:3] == [9, 9, 9] and figures["parts"][3] >= 2
    assert figures["peak_kb"] < PEAK_BOUND_MB * 1024
    assert figures["peak_kb"] - figures["baseline_kb"] < FOUR_CALLS_GROWTH_BOUND_MB * 1024
    assert 0 < figures["ffmpeg_peak_kb"] < FFMPEG_BOUND_MB * 1024
