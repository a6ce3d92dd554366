"""The ffmpeg that decodes and splits recordings: the static binary shipped in the ``imageio-ffmpeg`` wheel.

On Lambda it comes from the FfmpegLayer (``layers/ffmpeg``, built by ``sam build`` from the lock file), which
only the transcription function has; locally from the same package in the development environment. It is
never one found on ``PATH``: the machine's own ffmpeg would hide, in tests, what Lambda lacks.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import imageio_ffmpeg

#: where the wheel keeps its binary (``ffmpeg-linux-aarch64-v7.0.2`` on Lambda's arm64, ``...-x86_64-...`` here)
BINARIES = Path(imageio_ffmpeg.__file__).resolve().parent / "binaries"


class FfmpegMissing(RuntimeError):
    """The imageio-ffmpeg package is there without its binary (a wheel for another platform)."""


@cache
def ffmpeg_path() -> str:
    """The packaged ffmpeg binary's path; :class:`FfmpegMissing` when the package carries none."""
    found = sorted(path for path in BINARIES.glob("ffmpeg-*") if path.is_file() and os.access(path, os.X_OK))
    if not found:
        raise FfmpegMissing(f"no ffmpeg binary in {BINARIES}: install the imageio-ffmpeg wheel for this platform")
    return str(found[-1])
