"""The lock file and the files generated from it (``make lock`` runs this; ``make venv`` installs the result).

``uv.lock`` (uv's universal lock: every platform and Python >= 3.11, with hashes) pins every package
pyproject.toml asks for, its extras included. From it, offline (``uv export --frozen``):

- ``requirements.lock``: all of it (runtime, ``dev``, ``audio``) with hashes, what ``make venv`` installs
  with ``pip install -r requirements.lock`` before ``pip install --no-deps -e .``;
- ``layers/callsight/requirements.txt``: the runtime dependencies, what ``sam build`` installs into the
  shared layer. boto3 and botocore are pinned too although the Lambda runtime has them: the tracer
  (aws-xray-sdk) requires botocore, so pip installs it into the layer anyway, where it shadows the
  runtime's; pinning boto3 beside it keeps the pair the tests ran;
- ``layers/ffmpeg/requirements.txt``: what the ``audio`` extra adds (imageio-ffmpeg), the transcription
  function's own layer.

    python -m infra.lock            # resolve again (reaches PyPI), then write the files
    python -m infra.lock --lowest   # the runtime dependencies at pyproject.toml's lower bounds (`make lowest`)
"""

from __future__ import annotations

import argparse
import subprocess
import tomllib
from pathlib import Path
from typing import Final

import uv
from packaging.requirements import Requirement

ROOT: Final = Path(__file__).resolve().parent.parent
LOCK: Final = ROOT / "uv.lock"
REQUIREMENTS_LOCK: Final = ROOT / "requirements.lock"
CALLSIGHT_LAYER: Final = ROOT / "layers" / "callsight" / "requirements.txt"
FFMPEG_LAYER: Final = ROOT / "layers" / "ffmpeg" / "requirements.txt"

_HEADER: Final = "# Generated from uv.lock by `make lock` (python -m infra.lock): do not edit by hand.\n"
_COMMENTS: Final = {
    REQUIREMENTS_LOCK: (
        "# Everything pyproject.toml asks for (runtime, dev, audio), pinned with hashes, every platform:\n"
        "# `make venv` installs it (pip install -r requirements.lock, then pip install --no-deps -e .).\n"),
    CALLSIGHT_LAYER: (
        "# The shared layer's packages, installed by `sam build` (BuildMethod python3.12, arm64). boto3 and\n"
        "# botocore are pinned although the runtime has them: aws-xray-sdk (the tracer) requires botocore,\n"
        "# so it is installed into the layer anyway; pinned with boto3 it is the pair the tests ran.\n"
        "# psycopg's binary wheels (libpq inside) need no system libpq.\n"),
    FFMPEG_LAYER: "# The transcription function's own layer: a static ffmpeg inside the wheel (the `audio` extra).\n",
}


def _uv(*args: str) -> str:
    done = subprocess.run([uv.find_uv_bin(), *args], cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"uv {' '.join(args)} failed:\n{done.stderr.strip()}")
    return done.stdout


def _export(*args: str) -> str:
    return _uv("export", "--frozen", "--no-emit-project", "--no-header", "--format", "requirements-txt", *args)


def _pins(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def expected() -> dict[Path, str]:
    """Each generated file's text, from uv.lock alone (no network)."""
    runtime = _pins(_export("--no-hashes", "--no-annotate"))
    with_audio = _pins(_export("--no-hashes", "--no-annotate", "--extra", "audio"))
    audio_only = [pin for pin in with_audio if pin not in runtime]
    texts = {
        REQUIREMENTS_LOCK: _export("--all-extras"),
        CALLSIGHT_LAYER: "\n".join(runtime) + "\n",
        FFMPEG_LAYER: "\n".join(audio_only) + "\n",
    }
    return {path: _HEADER + _COMMENTS[path] + text for path, text in texts.items()}


def stale() -> list[str]:
    """The generated files that are not what uv.lock gives, and uv.lock itself when pyproject.toml changed
    since it was written (offline)."""
    found = []
    check = subprocess.run([uv.find_uv_bin(), "lock", "--check", "--offline"], cwd=ROOT, capture_output=True,
                           text=True, check=False, timeout=120)
    if check.returncode != 0:
        found.append(f"{LOCK.name}: not what pyproject.toml asks for ({check.stderr.strip().splitlines()[0]})")
    for path, text in expected().items():
        if not path.exists() or path.read_text() != text:
            found.append(f"{path.relative_to(ROOT)}: not what uv.lock gives")
    return found


def lowest() -> list[str]:
    """Each runtime dependency of pyproject.toml at its lower bound (``name[extras]==version``)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = []
    for line in project["dependencies"]:
        requirement = Requirement(line)
        bounds = [spec.version for spec in requirement.specifier if spec.operator in (">=", "==", "~=")]
        if len(bounds) != 1:
            raise SystemExit(f"{requirement.name}: no single lower bound in pyproject.toml ({line})")
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        pins.append(f"{requirement.name}{extras}=={bounds[0]}")
    return pins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upgrade", action="store_true", help="newest versions pyproject.toml allows")
    parser.add_argument("--lowest", action="store_true", help="print the runtime dependencies at their lower bounds")
    args = parser.parse_args(argv)
    if args.lowest:
        print(" ".join(lowest()))
        return 0
    _uv("lock", *(["--upgrade"] if args.upgrade else []))
    for path, text in expected().items():
        if path.exists() and path.read_text() == text:
            continue  # unchanged: left as it is (make's venv depends on requirements.lock's time)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
