"""One function's execution environment ("container") of the local platform: a worker process of its own.

Containers are forked by a **zygote**, ``python -P infra/container.py --zygote <fd>``, which ``infra.lambdas``
starts once per dispatcher: it imports the third-party libraries every handler imports (``PRELOAD``: boto3,
pydantic, powertools: about a CPU second each cold start would otherwise pay) and forks a container per
request, in a session of its own, with the function's environment, its CodeUri as the working directory, the
given stdout/stderr and a Unix socket to the dispatcher; it reports each container's exit status. This module is
self-contained on purpose (standard library and botocore only, no ``infra`` package import: moto alone would cost
each process half a second and 20 MB; the moto-free ``infra/isolation.py`` is loaded by its path).

Like Lambda's Python runtime it first initialises (cold start): CodeUri then the layers on ``sys.path``, the
handler module imported once, and answers ``{"ready": init_ms}`` or ``{"init_error": {...}}`` (then exits).
Then it serves one invocation at a time: a request ``{"event", "request_id", "deadline_ms", ...}`` in, a
``{"result"}`` or ``{"error": {"errorType", "errorMessage", "stackTrace"}}`` answer out, each with the process's
own memory peak during the invocation (``VmHWM``, reset per invocation through ``/proc/self/clear_refs``).
Timeouts and the memory limit are the dispatcher's business: it kills the process group.

Before the handler is imported, botocore is made to refuse any host that is not loopback and to resolve only
dummy credentials (``infra/isolation.py``, the guard the platform's own process gets, loaded by its path), so no
code in a container can reach real AWS; and every botocore client it creates checks each call against the
function's template policy (``infra/iam.py``, loaded by its path: AWS's AccessDenied for a call the policy does not
allow). The process ends itself when its parent dies.

Test-only: ``CALLSIGHT_LOCAL_FAULT`` (set by ``LambdaDispatcher.faults_injected``) names a wrapper
(``{"path", "name", "kwargs"}``, e.g. one of ``infra/faults.py``) that wraps the handler after its import.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import re
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: what the dispatcher puts in the container's environment
HANDLER_ENV = "CALLSIGHT_CONTAINER_HANDLER"  # "<module path>.<function>"
LAYERS_ENV = "CALLSIGHT_CONTAINER_LAYERS"  # os.pathsep-separated layer directories
FAULT_ENV = "CALLSIGHT_LOCAL_FAULT"
#: how often the container checks that the platform that started it still runs
PARENT_CHECK_S = 0.5
#: what the zygote imports once for every container it forks: only what every function imports anyway, so a
#: function's own heavy imports (openai, psycopg) still cost its cold start and its memory, as on Lambda
PRELOAD = ("boto3", "botocore.session", "botocore.httpsession", "pydantic", "pydantic_settings",
           "aws_lambda_powertools", "aws_lambda_powertools.logging", "aws_lambda_powertools.utilities.parameters")
_HEADER = struct.Struct("!I")


# ---------------------------------------------------------------------------------------- framing (both sides)
def send_message(sock: socket.socket, message: Any) -> None:
    """One length-prefixed JSON message."""
    data = json.dumps(message).encode("utf-8")
    sock.sendall(_HEADER.pack(len(data)) + data)


def receive_message(sock: socket.socket) -> Any:
    """The next message; ``EOFError`` when the other side is gone (``socket.timeout`` propagates)."""
    (size,) = _HEADER.unpack(_receive_exactly(sock, _HEADER.size))
    return json.loads(_receive_exactly(sock, size))


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    parts: list[bytes] = []
    while size:
        part = sock.recv(min(size, 1 << 20))
        if not part:
            raise EOFError("the other side closed the connection")
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


# ---------------------------------------------------------------------------------------- the guard
#: ``infra/isolation.py`` and ``infra/iam.py``: loaded by their paths, the container's ``sys.path`` has no
#: ``infra`` (``python -P``)
ISOLATION_MODULE = Path(__file__).with_name("isolation.py")
IAM_MODULE = Path(__file__).with_name("iam.py")


def _load_by_path(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def refuse_real_aws() -> None:
    """The platform's guard (``infra.isolation.refuse_real_aws``): botocore sends nothing beyond loopback and
    resolves only dummy keys."""
    _load_by_path("_callsight_local_isolation", ISOLATION_MODULE).refuse_real_aws()


def enforce_iam_policy() -> None:
    """The function's template policy on every AWS call (``infra.iam.install_from_environment``), when the
    dispatcher gave one."""
    _load_by_path("_callsight_local_iam", IAM_MODULE).install_from_environment()


# ---------------------------------------------------------------------------------------- the runtime
class LambdaContext:
    """The attributes and method of the Python runtime's context object that handlers use."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.function_name = str(request["function_name"])
        self.function_version = "$LATEST"
        self.invoked_function_arn = str(request["invoked_function_arn"])
        self.memory_limit_in_mb = int(request["memory_limit_in_mb"])
        self.aws_request_id = str(request["request_id"])
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None
        self._deadline_ms = int(request["deadline_ms"])

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


class InitError(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def load_handler(code_dir: str, handler: str, layers: list[str]) -> Callable[[Any, Any], Any]:
    """CodeUri first, then the layers on ``sys.path``; the handler module imported as Lambda's runtime does."""
    module_path, _, attribute = handler.rpartition(".")
    if not module_path or not attribute:
        raise InitError("Runtime.MalformedHandlerName", f"Bad handler '{handler}': not <module>.<function>")
    sys.path[:0] = [code_dir, *layers]
    try:
        module = importlib.import_module(module_path)
    except SyntaxError as exc:
        raise InitError("Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_path}': {exc}") from exc
    except ImportError as exc:
        raise InitError("Runtime.ImportModuleError", f"Unable to import module '{module_path}': {exc}") from exc
    function = getattr(module, attribute, None)
    if not callable(function):
        raise InitError("Runtime.HandlerNotFound", f"Handler '{attribute}' missing on module '{module_path}'")
    return _with_fault(function)


def _with_fault(function: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    raw = os.environ.get(FAULT_ENV)
    if not raw:
        return function
    fault = json.loads(raw)
    spec = importlib.util.spec_from_file_location("_callsight_local_fault", fault["path"])
    if spec is None or spec.loader is None:
        raise InitError("Runtime.ImportModuleError", f"cannot load the fault module {fault['path']}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    wrapped: Callable[[Any, Any], Any] = getattr(module, fault["name"])(function, **fault.get("kwargs", {}))
    return wrapped


def _error(exc: BaseException, error_type: str | None = None) -> dict[str, Any]:
    return {"errorType": error_type or type(exc).__name__, "errorMessage": str(exc),
            "stackTrace": traceback.format_exception(exc)}


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as file:  # "5": VmHWM := VmRSS
            file.write("5")
    except OSError:
        pass


def own_peak_kb() -> int:
    """This process's resident-memory high-water mark since the last reset (0 where /proc has none)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmHWM:\s+(\d+)\s+kB", status, re.MULTILINE)
    return int(found.group(1)) if found else 0


def invoke(handler: Callable[[Any, Any], Any], request: dict[str, Any]) -> dict[str, Any]:
    _reset_peak()
    try:
        result = handler(request["event"], LambdaContext(request))
    except Exception as exc:
        answer: dict[str, Any] = {"error": _error(exc)}
    else:
        try:
            json.dumps(result)
            answer = {"result": result}
        except (TypeError, ValueError) as exc:
            answer = {"error": {"errorType": "Runtime.MarshalError",
                                "errorMessage": f"Unable to marshal response: {exc}", "stackTrace": []}}
    sys.stdout.flush()
    sys.stderr.flush()
    answer["peak_kb"] = own_peak_kb()
    return answer


def _end_with_parent(parent: int) -> None:
    while True:
        time.sleep(PARENT_CHECK_S)
        if os.getppid() != parent:
            os.killpg(os.getpgid(0), signal.SIGKILL)  # the handler's children (ffmpeg) too


def serve(sock: socket.socket) -> int:
    """The container's life: init, then one invocation after another until the dispatcher goes."""
    threading.Thread(target=_end_with_parent, args=(os.getppid(),), name="parent-watch", daemon=True).start()
    os.environ.setdefault("AWS_LAMBDA_LOG_STREAM_NAME", time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex)
    started = time.perf_counter()
    try:
        refuse_real_aws()
        enforce_iam_policy()
        layers = [entry for entry in os.environ.get(LAYERS_ENV, "").split(os.pathsep) if entry]
        handler = load_handler(os.getcwd(), os.environ[HANDLER_ENV], layers)
    except InitError as exc:
        send_message(sock, {"init_error": _error(exc, exc.error_type)})
        return 1
    except Exception as exc:
        send_message(sock, {"init_error": _error(exc)})
        return 1
    send_message(sock, {"ready": (time.perf_counter() - started) * 1000})
    while True:
        try:
            request = receive_message(sock)
        except EOFError:
            return 0
        send_message(sock, invoke(handler, request))


# ---------------------------------------------------------------------------------------- the zygote
def zygote(control: socket.socket) -> int:
    """Preload, then fork a container for each ``{"env", "cwd"}`` request (its socket, stdout and stderr come as
    file descriptors); answer ``{"pid"}``, and ``{"exited": pid, "code"}`` when one ends (negative: a signal)."""
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: S112 - a library a handler lacks is not preloaded, nothing else
            continue
    parent = os.getppid()
    children: set[int] = set()
    while os.getppid() == parent:
        _reap(control, children)
        ready, _, _ = select.select([control], [], [], 0.05)
        if not ready:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(control, 1 << 20, 3)
        except OSError:
            return 0
        if not data:
            return 0  # the dispatcher is gone
        request = json.loads(data)
        pid = os.fork()
        if pid == 0:
            control.close()
            _container(request, *fds)  # never returns
        for fd in fds:
            os.close(fd)
        children.add(pid)
        control.send(json.dumps({"pid": pid}).encode())
    return 0


def _reap(control: socket.socket, children: set[int]) -> None:
    for pid in list(children):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if done:
            children.discard(pid)
            with contextlib.suppress(OSError):
                control.send(json.dumps({"exited": pid, "code": os.waitstatus_to_exitcode(status)}).encode())


def _container(request: dict[str, Any], sock_fd: int, stdout_fd: int, stderr_fd: int) -> None:
    code = 1
    try:
        os.setsid()  # its own process group: a kill ends the handler's children too
        os.dup2(stdout_fd, 1)
        os.dup2(stderr_fd, 2)
        os.close(stdout_fd)
        os.close(stderr_fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        code = serve(socket.socket(fileno=sock_fd))
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--zygote"]:
        raise SystemExit(zygote(socket.socket(fileno=int(sys.argv[2]))))
    raise SystemExit(serve(socket.socket(fileno=int(sys.argv[1]))))
