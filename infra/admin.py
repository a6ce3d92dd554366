"""``python -m infra.admin ARGS`` (``make admin ARGS="..."``): ``callsight-admin`` against the running local platform.

    make admin ARGS="register-client --client-id clinic7 --subdomain clinic7 \\
        --base-url http://127.0.0.1:9999 --token-file token.txt"

Finds the platform by itself through the state file it writes when ready (``.local/platform.json``; another
with ``--state-file PATH`` before the command), points boto3 at its embedded AWS (moto, on loopback) with dummy
credentials, never the developer's AWS credentials, profile or endpoints, sets the ``CALLSIGHT_*`` names the
functions use, and runs ``callsight.admin.main`` with the remaining arguments.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from infra.isolation import ISOLATED_AWS_ENVIRONMENT, is_loopback, refuse_real_aws
from infra.local_state import STATE_FILE, process_alive, read_state

PROG = "python -m infra.admin"


class NoPlatform(RuntimeError):
    """No running local platform to talk to (the message says why and what to do)."""


def platform_environment(state_file: Path = STATE_FILE) -> dict[str, str | None]:
    """The variables (None: removed) that point boto3 and callsight's settings at the running platform."""
    state = read_state(state_file)
    if state is None:
        raise NoPlatform(f"no local platform is running ({_shown(state_file)} does not exist): start one with "
                         "`make serve` (or `make demo DEMO_ARGS=--keep-serving`)")
    pid, moto_url = state.get("pid"), str(state.get("moto_url") or "")
    if not isinstance(pid, int) or not process_alive(pid):
        raise NoPlatform(f"the local platform of {_shown(state_file)} (pid {pid}) is no longer running: start one "
                         "with `make serve`")
    if not is_loopback(urlsplit(moto_url).hostname):
        raise NoPlatform(f"{_shown(state_file)} names {moto_url!r}, not a loopback address: refusing to send AWS "
                         "requests there")
    try:
        httpx.get(f"{moto_url}/moto-api/", timeout=3.0)
    except httpx.HTTPError as exc:
        raise NoPlatform(f"the local platform's AWS ({moto_url}) does not answer ({type(exc).__name__})") from None
    env: dict[str, str | None] = {name: None for name in os.environ if name.startswith(("AWS_", "BOTO_", "CALLSIGHT_"))}
    env.update({str(k): str(v) for k, v in (state.get("environment") or {}).items() if str(k).startswith("CALLSIGHT_")})
    region = str(state.get("region") or "us-east-1")
    env.update({**ISOLATED_AWS_ENVIRONMENT, "AWS_ENDPOINT_URL": moto_url, "AWS_DEFAULT_REGION": region,
                "AWS_REGION": region})
    return env


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    state_file = STATE_FILE
    if args[:1] == ["--state-file"] and len(args) >= 2:
        state_file, args = Path(args[1]), args[2:]
    try:
        env = platform_environment(state_file)
    except NoPlatform as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    refuse_real_aws()  # and botocore sends nothing beyond loopback, whatever happens next
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    from callsight.admin import main as admin_main  # after the environment: its clients are made on first use

    return admin_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
