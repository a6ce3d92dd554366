"""Test-only faults a handler can be wrapped in inside its container (``LambdaDispatcher.faults_injected``).

Each wrapper takes the real handler and JSON-able keyword arguments and returns the handler to run.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

Handler = Callable[[Any, Any], Any]


def crash_for_client(handler: Handler, *, client_id: str, message: str = "injected crash",
                     process: str | None = None) -> Handler:
    """Raise ``RuntimeError(message)`` for every event of ``client_id`` (and of ``process``, when given) as a bug
    would."""
    def crashing(event: Any, context: Any) -> Any:
        if isinstance(event, dict) and event.get("client_id") == client_id and process in (None, event.get("process")):
            raise RuntimeError(message)
        return handler(event, context)
    return crashing


def exit_on_chunk(handler: Handler, *, client_id: str, chunk_suffix: str, after_s: float = 0.0) -> Handler:
    """End the container (``os._exit(1)``: Lambda answers ``Runtime.ExitError``) on the Map item of ``client_id``
    whose ``chunk_key`` ends with ``chunk_suffix``, ``after_s`` into the real handler's work on it (a worker that
    dies mid-way: some calls done, some in progress, some not started); every other event runs as usual."""
    def exiting(event: Any, context: Any) -> Any:
        if not (isinstance(event, dict) and event.get("client_id") == client_id
                and str(event.get("chunk_key", "")).endswith(chunk_suffix)):
            return handler(event, context)
        threading.Thread(target=handler, args=(event, context), daemon=True).start()
        time.sleep(after_s)
        os._exit(1)
    return exiting
