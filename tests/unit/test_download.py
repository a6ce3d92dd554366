"""The recordings download (sync step 2) against a real local server and moto: only audio is stored, under the
sniffed format; every other answer is that call's own error naming the host, and the counters stay exact."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from datetime import date

import boto3
import httpx
import pytest

from callsight.dal.calls import CallKey, CallRepository, CounterRepository
from callsight.dal.recordings import ObjectStore
from callsight.dal.table import Table
from callsight.dates import DateRange
from callsight.links import LinkFetcher, LinkPolicy, PrivateHosts
from callsight.logic.download import RecordingDownloader, media_type
from callsight.transcription.audio import UPLOAD_FORMATS
from callsight.transcription.sniff import FORMATS, SNIFF_BYTES, sniff_audio
from tests.recording_links import LinkServer, Route

DAY = "2026-11-10"
MAX_BYTES = 4000


def _wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(b"\x01\x00" * 800)
    return buffer.getvalue()


WAV = _wav()
MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + bytes(400)
MP3_FRAME = b"\xff\xfb\x90\x64" + bytes(400)
OGG = b"OggS\x00\x02" + bytes(300)
M4A = b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00" + bytes(300)
WEBM = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81" + bytes(300)
FLAC = b"fLaC\x00\x00\x00\x22" + bytes(300)


@pytest.mark.parametrize(("data", "extension"), [
    (WAV, "wav"), (MP3, "mp3"), (MP3_FRAME, "mp3"), (OGG, "ogg"), (M4A, "m4a"), (WEBM, "webm"), (FLAC, "flac")])
def test_audio_is_recognised_by_its_first_bytes(data: bytes, extension: str) -> None:
    audio = sniff_audio(data[:SNIFF_BYTES])
    assert audio is not None and audio.extension == extension


@pytest.mark.parametrize("data", [
    b"internal-secret", b"<!DOCTYPE html><html>", b'{"error": "expired"}', b"<?xml version='1.0'?>",
    b"\xff\xf1\x50\x80\x02\x1f\xfc",  # ADTS AAC: MPEG sync but layer 0, not MP3
    b"\xff\xfb\xf0\x00",  # bitrate index 15: not a frame
    b"RIFF\x24\x00\x00\x00AVI LIST", b"", bytes(12)])
def test_other_bytes_are_not_audio(data: bytes) -> None:
    assert sniff_audio(data[:SNIFF_BYTES]) is None


def test_every_recognised_format_is_one_the_transcription_accepts() -> None:
    assert {f.extension for f in FORMATS} <= UPLOAD_FORMATS


def test_media_types_are_read_leniently_and_garbage_is_not_one() -> None:
    assert media_type("Audio/MPEG; charset=binary") == "audio/mpeg"
    assert media_type(None) == "" and media_type("  ") == ""
    assert media_type("<script>") is None and media_type("audio/" + "x" * 200) is None


def _chunked(data: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (data[:1000], data[1000:])) + b"0\r\n\r\n"


@pytest.fixture
def server() -> Iterator[LinkServer]:
    routes = {
        "/a.wav": Route(body=WAV, content_type="audio/wav"),
        "/b.wav": Route(body=MP3, content_type="application/octet-stream"),  # the URL says .wav: the bytes say MP3
        "/c": Route(body=OGG, content_type=None),
        "/secret.mp3": Route(body=b"internal-secret", content_type="text/plain"),
        "/page.mp3": Route(body=b"<!DOCTYPE html><html><body>Log in</body></html>", content_type="audio/mpeg"),
        "/error.mp3": Route(body=b'{"error": "expired"}', content_type="application/json"),
        "/empty.wav": Route(body=b"", content_type="audio/wav"),
        "/big.mp3": Route(body=MP3 + bytes(MAX_BYTES), content_type="audio/mpeg"),
        "/stream.mp3": Route(body=_chunked(MP3 + bytes(MAX_BYTES)), content_type="audio/mpeg",
                             headers={"Transfer-Encoding": "chunked"}),
        "/signed.mp3": Route(403, b"<Error>AccessDenied</Error>", "application/xml"),
    }
    with LinkServer(routes) as running:
        yield running


def test_only_audio_is_stored_and_every_other_answer_is_its_calls_own_error(
        server: LinkServer, table: Table, bucket: str) -> None:
    with LinkServer({"/internal-secret": Route(body=b"internal-secret", content_type="text/plain")}) as internal:
        links = {
            "wav": f"{server.url}/a.wav",
            "mp3-as-octet-stream": f"{server.url}/b.wav",
            "ogg-without-type": f"{server.url}/c",
            "text": f"{server.url}/secret.mp3",
            "html-as-audio": f"{server.url}/page.mp3",
            "json": f"{server.url}/error.mp3",
            "empty": f"{server.url}/empty.wav",
            "too-large": f"{server.url}/big.mp3",
            "too-large-streamed": f"{server.url}/stream.mp3",
            "expired": f"{server.url}/signed.mp3?X-Amz-Signature=deadbeef",
            "missing": f"{server.url}/nothing.mp3",
            "private": f"{internal.url}/internal-secret",
            "not-http": "ftp://pbx.example/r.mp3",
        }
        calls = CallRepository(table, "demo")
        calls.insert_many("sync", [{"client_id": "demo", "call_id": name, "day": DAY, "sync_status": "pending",
                                    "recording_url": link} for name, link in links.items()])
        store = ObjectStore(bucket)
        policy = LinkPolicy(PrivateHosts.parse([server.host_port]))  # the "PBX"; the internal server is not allowed
        with httpx.Client(timeout=10) as http:
            downloader = RecordingDownloader(client_id="demo", run_id="run-1", calls=calls, store=store,
                                             links=LinkFetcher(http, policy), concurrency=4, max_bytes=MAX_BYTES)
            result = downloader.run([{"sk": CallKey(DAY, name).sk} for name in links])
        assert internal.requests == []

    assert result == {"downloaded": 3, "failed": len(links) - 3, "not_pending": 0}
    stored = {name: calls.get(CallKey(DAY, name)) or {} for name in links}
    host = server.host_port
    expected_errors = {
        "text": f"{host} answered text/plain, not audio",
        "html-as-audio": f"{host} answered a body that is not audio (as audio/mpeg;",
        "json": f"{host} answered application/json, not audio",
        "empty": f"empty file from {host}",
        "too-large": f"larger than {MAX_BYTES} bytes ({host})",
        "too-large-streamed": f"larger than {MAX_BYTES} bytes ({host})",
        "expired": f"HTTP 403 from {host}",
        "missing": f"HTTP 404 from {host}",
        "private": f"{internal.host_port} is a loopback address",
        "not-http": "only http and https are fetched",
    }
    for name, error in expected_errors.items():
        call = stored[name]
        assert call["sync_status"] == "failed" and "recording_key" not in call, name
        assert call["sync_error"].startswith("recording download failed: ") and error in call["sync_error"], (
            name, call["sync_error"])
        assert "deadbeef" not in call["sync_error"] and "Signature" not in call["sync_error"]

    s3 = boto3.client("s3")
    objects = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="recordings/demo/").get("Contents", [])}
    expected = {"wav": ("wav", "audio/wav", WAV), "mp3-as-octet-stream": ("mp3", "audio/mpeg", MP3),
                "ogg-without-type": ("ogg", "audio/ogg", OGG)}
    assert objects == {f"recordings/demo/{DAY}/{name}.{extension}" for name, (extension, _, _) in expected.items()}
    for name, (extension, content_type, body) in expected.items():
        call = stored[name]
        assert call["sync_status"] == "success" and call["recording_key"].endswith(f"/{name}.{extension}")
        assert call["recording_content_type"] == content_type and call["recording_bytes"] == len(body)
        head = s3.get_object(Bucket=bucket, Key=call["recording_key"])
        assert head["ContentType"] == content_type and head["Body"].read() == body

    day = date.fromisoformat(DAY)
    counts = CounterRepository(table).summed("demo", "sync", DateRange(day, day))
    assert (counts["total"], counts["success"], counts["failed"]) == (len(links), 3, len(links) - 3)
    assert counts["pending"] == counts["processing"] == 0
