"""The running local platform's state file (``.local/platform.json``): written by ``LocalPlatform`` once it is
ready, removed when it stops, read by ``python -m infra.admin`` to find the platform by itself.

It holds what a separate process needs to reach the embedded AWS (moto's loopback URL, the region) and the
``CALLSIGHT_*`` names the functions get (table, bucket, secret names: never a secret). A platform never
overwrites the file of another live process's platform, and removes only its own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from infra.template import REPO_ROOT

STATE_FILE = REPO_ROOT / ".local" / "platform.json"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def read_state(path: Path = STATE_FILE) -> dict[str, Any] | None:
    """The state file's content; None when there is none (or it is not a state file)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def write_state(state: dict[str, Any], path: Path = STATE_FILE) -> bool:
    """Write ``state`` (with this process's pid) atomically; False when another live process's platform owns it."""
    current = read_state(path)
    if current and isinstance(current.get("pid"), int) and current["pid"] != os.getpid() \
            and process_alive(current["pid"]):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps({**state, "pid": os.getpid()}, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
    return True


def remove_state(moto_url: str, path: Path = STATE_FILE) -> None:
    """Remove the file if it is this process's platform's (the one at ``moto_url``)."""
    current = read_state(path)
    if current and current.get("pid") == os.getpid() and current.get("moto_url") == moto_url:
        path.unlink(missing_ok=True)
