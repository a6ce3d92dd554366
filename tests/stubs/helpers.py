"""Helpers the stub tests share."""

from __future__ import annotations

import io
import subprocess
import sys
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def running_cli(module: str, *args: str) -> Iterator[str]:
    """Runs ``python -m <module> <args>`` from the repository root and yields the URL its first line names.

    After the block the process gets SIGTERM and must exit with status 0; it is killed if it is still
    running (the block failed, or it did not stop).
    """
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        yield next(word for word in line.split() if word.startswith("http://"))
        process.terminate()
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def silence_wav(seconds: float) -> bytes:
    """``seconds`` of silence as an 8 kHz 16-bit mono WAV."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(bytes(2 * int(8000 * seconds)))
    return buffer.getvalue()
