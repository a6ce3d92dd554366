"""Reproducible dependencies: the generated requirements are what uv.lock gives, the environment is what it
pins, and pyproject.toml's lower bounds are the oldest versions having what the code calls."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from infra import lock

ROOT = Path(__file__).resolve().parents[2]

#: runtime dependency -> (the oldest version having what we call, what). `make lowest` runs the unit tests on
#: these versions installed together; openai's was found by reading each release's
#: types/audio/transcription_create_params.py (2.49.0 has no `keywords`, 2.50.0 has both).
LOWER_BOUNDS = {
    "openai": ("2.50", "audio.transcriptions.create(keywords=, languages=) for gpt-transcribe; chat.completions.parse "
                       "(stable from 1.92), openai.omit (1.108.1), reasoning_effort"),
    "pydantic-settings": ("2.7", "NoDecode: comma-separated settings (config.py)"),
    "pydantic": ("2.8", "validators and ConfigDict as we use them; pydantic-settings 2.7 itself needs 2.7"),
    "httpx": ("0.27", "the sni_hostname extension the link checker connects with (httpcore 1.0)"),
    "aws-lambda-powertools": ("3.20", "APIGatewayRestResolver(enable_validation=True, json_body_deserializer=)"),
    "boto3": ("1.40", "no recent API: the version the project started on"),
    "psycopg": ("3.2.1", "cursor.copy (binary COPY), psycopg.sql, conninfo; 3.2.0's [binary] extra asks for "
                         "psycopg-binary 3.2.0.dev1, which PyPI does not have"),
}


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_generated_requirements_are_what_the_lock_gives() -> None:
    assert lock.stale() == [], "run `make lock` and commit uv.lock, requirements.lock and the layers' requirements"


def test_the_layers_install_the_runtime_dependencies_and_the_decoder() -> None:
    layer = {line.split("==")[0] for line in lock.CALLSIGHT_LAYER.read_text().splitlines()
             if line and not line.startswith("#")}
    runtime = {canonicalize_name(Requirement(dep).name) for dep in _pyproject()["project"]["dependencies"]}  # type: ignore[index]
    assert runtime <= layer and "psycopg-binary" in layer  # each with its own dependencies and extras
    assert not layer & {"moto", "pytest", "mypy", "ruff", "uv", "imageio-ffmpeg"}  # no dev tool, no decoder
    assert re.fullmatch(r"imageio-ffmpeg==0\.6\.0", lock.FFMPEG_LAYER.read_text().splitlines()[-1])


def _locked() -> dict[str, Requirement]:
    """requirements.lock's pins that apply to this machine."""
    pins: dict[str, Requirement] = {}
    for line in lock.REQUIREMENTS_LOCK.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            requirement = Requirement(line.rstrip(" \\"))
            if requirement.marker is None or requirement.marker.evaluate():
                pins[canonicalize_name(requirement.name)] = requirement
    return pins


def test_the_environment_has_the_locked_versions() -> None:
    wrong = []
    for name, requirement in _locked().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "none"
        if installed not in requirement.specifier:
            wrong.append(f"{name} {installed} (locked {requirement.specifier})")
    assert not wrong, f"run `make venv`: {wrong}"


def _lower_bounds() -> dict[str, str]:
    bounds = {}
    for dep in _pyproject()["project"]["dependencies"]:  # type: ignore[index]
        requirement = Requirement(dep)
        lower = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        assert len(lower) == 1, f"{dep}: one lower bound"
        assert any(spec.operator == "<" for spec in requirement.specifier), f"{dep}: an upper bound (next major)"
        bounds[canonicalize_name(requirement.name)] = lower[0]
    return bounds


def test_each_runtime_dependency_has_the_lower_bound_of_what_we_call() -> None:
    bounds = _lower_bounds()
    assert bounds == {name: version for name, (version, _) in LOWER_BOUNDS.items()}
    lowest = [Requirement(pin) for pin in lock.lowest()]  # what `make lowest` installs
    assert next(pin for pin in lowest if pin.name == "psycopg").extras == {"binary"}


def test_the_locked_versions_have_what_the_bounds_are_for() -> None:
    """What each lower bound is for exists in the versions we run (the bound's reason is not stale)."""
    import openai
    from openai.types.audio.transcription_create_params import TranscriptionCreateParamsBase
    from openai.types.chat.completion_create_params import CompletionCreateParamsBase
    from pydantic_settings import NoDecode  # noqa: F401

    assert {"keywords", "languages"} <= set(TranscriptionCreateParamsBase.__annotations__)
    assert "reasoning_effort" in CompletionCreateParamsBase.__annotations__
    assert callable(openai.OpenAI(api_key="x", base_url="http://127.0.0.1:9/v1").chat.completions.parse)
    assert openai.omit is not None
