"""Run the template's Lambda handlers like Lambda does: in execution environments of their own, within limits.

``LambdaDispatcher`` maps a function's logical id, name or ARN to its handler (``CodeUri/<module>.py`` +
``Handler``) and runs every invocation in a **container**: a worker process of that function
(``infra/container.py``, forked by one preloaded zygote process per dispatcher) that imports the handler once
(cold start: CodeUri and Layers on ``sys.path``, the platform's environment with the function's own
``Environment`` on top, the refuse-real-AWS guard) and then serves one invocation at a time. An idle container
is reused (warm); overlapping invocations start more, up to ``MAX_CONTAINERS`` per function, then wait.
Handlers' output goes to the platform's stdout and stderr.

Limits are the template's (``Timeout``, ``MemorySize``, with ``Globals``) unless ``function_limits`` overrides
them (a test knob). An invocation past its timeout is killed (``SIGKILL`` to the container's process group) and
answered ``Sandbox.Timedout``; one monitor thread polls the resident memory of every busy container's process
tree (the handler's children, e.g. ffmpeg, count as on Lambda) every ``MEMORY_POLL_S`` and kills one that passes
``MemorySize``: ``Runtime.OutOfMemory``; a container that dies otherwise: ``Runtime.ExitError``. After each
invocation Lambda's ``REPORT`` line is logged and kept: ``reports(logical_id)``.

``install()`` replaces ``moto.awslambda_simple``'s ``invoke`` so Step Functions Lambda tasks (and any boto3
``lambda.invoke`` against moto) go through the same containers; errors come back as Lambda's
``{"errorType", "errorMessage"}`` with ``X-Amz-Function-Error: Unhandled``, which Retry/Catch match on.
``drain(seconds)`` refuses new invocations, waits a bounded time for the running ones, then kills every
container (this ends a stuck handler too).
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from infra.container import FAULT_ENV, HANDLER_ENV, LAYERS_ENV, receive_message, send_message
from infra.iam import POLICY_ENV as IAM_POLICY_ENV
from infra.template import ACCOUNT_ID, REGION, Template

log = logging.getLogger("infra.lambdas")

#: how long stopping the platform waits for running invocations before it kills them (``--stop-timeout``)
DRAIN_SECONDS = 10.0
#: containers one function may run at once; further invocations wait for one to be free
MAX_CONTAINERS = 16
#: how often the memory monitor samples each busy container's process tree
MEMORY_POLL_S = 0.025
#: ... and looks for new children of it every this many samples
TREE_EVERY = 8
#: a container's import of its handler (cold start) must end within this (Lambda's own init limit is 10 s; a
#: loaded development machine imports openai and boto3 much slower than Lambda)
INIT_TIMEOUT_S = 60.0
#: invocation reports kept per function (``reports()``)
REPORTS_KEPT = 200
CONTAINER_SCRIPT = Path(__file__).with_name("container.py")
#: the test-only wrappers ``faults_injected`` can put around a handler inside its container
FAULTS_MODULE = Path(__file__).with_name("faults.py")

@dataclass(frozen=True)
class FunctionLimits:
    """A test's override of a function's limits; None keeps the template's value."""

    timeout_s: float | None = None
    memory_mb: int | None = None


@dataclass(frozen=True)
class HandlerSpec:
    """Where one function's handler lives and how it is configured."""

    logical_id: str
    code_dir: Path
    handler: str  # "<module path>.<function>", e.g. "app.lambda_handler"
    function_name: str = ""
    timeout_s: float = 30
    memory_mb: int = 128
    layer_dirs: tuple[Path, ...] = ()
    #: the function's template ``Environment`` (set on top of the platform's environment)
    environment: Mapping[str, str] = field(default_factory=dict)
    #: the IAM policy document its containers enforce (``infra.iam``); None: AWS calls are not checked
    iam_policy: str | None = None

    @property
    def name(self) -> str:
        return self.function_name or self.logical_id


@dataclass(frozen=True)
class InvocationReport:
    """What Lambda's ``REPORT`` line says about one invocation, and how it ended."""

    function: str  # logical id
    request_id: str
    duration_ms: float
    memory_size_mb: int
    max_memory_used_mb: int
    #: the cold start's import time; None when a warm container served it
    init_duration_ms: float | None
    #: "success", "error" (the handler raised), "timeout", "out_of_memory" or "exit" (the container died)
    outcome: str
    error_type: str | None = None

    @property
    def billed_duration_ms(self) -> int:
        return max(1, math.ceil(self.duration_ms))

    def line(self) -> str:
        parts = [f"REPORT RequestId: {self.request_id}", f"Duration: {self.duration_ms:.2f} ms",
                 f"Billed Duration: {self.billed_duration_ms} ms", f"Memory Size: {self.memory_size_mb} MB",
                 f"Max Memory Used: {self.max_memory_used_mb} MB"]
        if self.init_duration_ms is not None:
            parts.append(f"Init Duration: {self.init_duration_ms:.2f} ms")
        if self.outcome == "timeout":
            parts.append("Status: timeout")
        elif self.outcome != "success":
            parts.append("Status: error")
            if self.error_type:
                parts.append(f"Error Type: {self.error_type}")
        return "\t".join(parts)


class FunctionNotFound(KeyError):
    """No function of the dispatcher has that name, ARN or logical id."""


class PlatformStopping(RuntimeError):
    """The dispatcher is draining: no new invocation starts."""


class FunctionError(RuntimeError):
    """``call()``: the invocation ended with Lambda's error body ``payload`` (``errorType``, ``errorMessage``)."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(f"{payload.get('errorType')}: {payload.get('errorMessage')}")
        self.payload = payload


@dataclass(frozen=True)
class InvocationResult:
    payload: Any  # the handler's return value, or the error body
    error: bool = False


_ARN = re.compile(r"^(?:arn:[^:]+:lambda:[^:]*:)?(?:\d{12}:)?(?:function:)?(?P<name>[^:]+)(?::(?P<qualifier>.+))?$")


def _fd(stream: TextIO | None, default: int) -> int:
    """The file descriptor behind ``stream`` now (``infra.serve`` points stdout at stderr after its ready line)."""
    try:
        return stream.fileno() if stream is not None else default
    except (OSError, ValueError, AttributeError):  # pytest's capsys, a closed stream
        return default


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (only ``pid`` where ``/proc`` lists no children)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            for task in os.scandir(f"/proc/{current}/task"):
                pending.extend(int(child) for child in Path(task.path, "children").read_text().split())
        except (OSError, ValueError):
            continue  # it ended meanwhile, or not Linux
    return found


def rss_kb(pids: list[int]) -> int:
    """The processes' resident memory in KiB (those that ended count 0)."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_KB
        except (OSError, ValueError, IndexError):
            if not _PROC:
                total += _psutil_rss_kb(pid)
    return total


_PROC = Path("/proc/self/statm").exists()
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024 if _PROC else 4


def _psutil_rss_kb(pid: int) -> int:
    """Where there is no ``/proc`` (macOS): the process and its children through psutil."""
    import psutil

    try:
        root = psutil.Process(pid)
        return int(sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])) // 1024
    except psutil.Error:
        return 0


class _Zygote:
    """The process that forks containers (``infra.container.zygote``) and tells their exit statuses."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-P", str(CONTAINER_SCRIPT), "--zygote", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=_fd(sys.stderr, 2),
                start_new_session=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        self._spawn_lock = threading.Lock()
        self._pids: queue.Queue[int] = queue.Queue()
        self._exits: dict[int, int] = {}
        self._changed = threading.Condition()
        self.alive = True
        threading.Thread(target=self._read, name="lambda-zygote", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                with self._changed:
                    self.alive = False
                    self._changed.notify_all()
                self._pids.put(-1)
                return
            message = json.loads(data)
            if "pid" in message:
                self._pids.put(int(message["pid"]))
            else:
                with self._changed:
                    self._exits[int(message["exited"])] = int(message["code"])
                    self._changed.notify_all()

    def spawn(self, env: Mapping[str, str], cwd: Path, fds: list[int]) -> int:
        """Fork a container; its pid."""
        with self._spawn_lock:
            if not self.alive:
                raise RuntimeError("the container zygote has ended")
            socket.send_fds(self.sock, [json.dumps({"env": dict(env), "cwd": str(cwd)}).encode()], fds)
            try:
                pid = self._pids.get(timeout=INIT_TIMEOUT_S)
            except queue.Empty:
                raise RuntimeError(f"the container zygote forked nothing in {INIT_TIMEOUT_S:g} s") from None
        if pid < 0:
            raise RuntimeError("the container zygote has ended")
        return pid

    def exit_code(self, pid: int, timeout: float = 0) -> int | None:
        """The container's exit code (negative: the signal) once it ended, waiting up to ``timeout``."""
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exits or not self.alive, timeout=timeout)
            return self._exits.get(pid)

    def close(self) -> None:
        with suppress(OSError):
            self.sock.close()
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


class _Container:
    """One worker process of a function, and what the dispatcher knows about its current invocation."""

    def __init__(self, spec: HandlerSpec, generation: int, zygote: _Zygote, pid: int, sock: socket.socket) -> None:
        self.spec = spec
        self.generation = generation
        self.zygote = zygote
        self.pid = pid
        self.sock = sock
        self.init_ms: float | None = None
        self.memory_limit_kb = 0
        self.busy = False
        self.peak_kb = 0
        self.tree = [pid]
        self.killed_for: str | None = None
        #: the container's own /tmp (TMPDIR), as a Lambda sandbox has: kept while it lives, removed when it ends
        self.tmp_dir: str | None = None
        self._lock = threading.Lock()

    def kill(self, reason: str) -> bool:
        """SIGKILL the process group (the handler's children too); False if it was already killed."""
        with self._lock:
            if self.killed_for is not None:
                return False
            self.killed_for = reason
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # not yet in a group of its own, or gone
            with suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        return True

    def alive(self) -> bool:
        return self.zygote.exit_code(self.pid) is None and self.zygote.alive

    def reap(self) -> int | None:
        """Close the connection; the exit code once the process ended (killed or not, it ends promptly)."""
        with suppress(OSError):
            self.sock.close()
        code = self.zygote.exit_code(self.pid, timeout=10)
        if self.tmp_dir is not None:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
        return code


@dataclass
class _Pool:
    idle: list[_Container] = field(default_factory=list)
    live: int = 0


class LambdaDispatcher:
    """Runs handlers in per-function worker processes; optionally serves moto's Lambda ``invoke``."""

    def __init__(self, handlers: Mapping[str, HandlerSpec | tuple[str | Path, str]], *,
                 region: str = REGION, account_id: str = ACCOUNT_ID,
                 function_limits: Mapping[str, FunctionLimits] | None = None,
                 max_containers: int = MAX_CONTAINERS) -> None:
        """``function_limits``: per logical id, limits that replace the template's (a test knob)."""
        self.region = region
        self.account_id = account_id
        self.max_containers = max_containers
        self.specs: dict[str, HandlerSpec] = {}
        for logical_id, given in handlers.items():
            if isinstance(given, HandlerSpec):
                self.specs[logical_id] = given
            else:
                code_dir, handler = given
                self.specs[logical_id] = HandlerSpec(logical_id=logical_id, code_dir=Path(code_dir), handler=handler)
        self.function_limits = dict(function_limits or {})
        unknown = set(self.function_limits) - set(self.specs)
        if unknown:
            raise FunctionNotFound(f"function_limits for functions the dispatcher does not have: {sorted(unknown)}")
        self._by_name: dict[str, str] = {}
        for logical_id, spec in self.specs.items():
            self._by_name[logical_id] = logical_id
            self._by_name[spec.name] = logical_id
        self._original_invoke: Any = None
        self._running = 0
        self._draining = False
        self._running_changed = threading.Condition()
        self._pools_lock = threading.Condition()
        self._pools: dict[str, _Pool] = {}
        self._generation: dict[str, int] = {}
        self._extra_env: dict[str, dict[str, str]] = {}
        self._env_of_all: dict[str, str] = {}
        self._containers: set[_Container] = set()
        self._reports: dict[str, deque[InvocationReport]] = {}
        self._monitor: threading.Thread | None = None
        self._closed = threading.Event()
        self._zygote: _Zygote | None = None
        self._zygote_lock = threading.Lock()

    @classmethod
    def from_template(cls, template: Template, *,
                      function_limits: Mapping[str, FunctionLimits] | None = None) -> LambdaDispatcher:
        return cls({lid: HandlerSpec(logical_id=lid, code_dir=fn.code_dir, handler=fn.handler, function_name=fn.name,
                                     timeout_s=fn.timeout_s, memory_mb=fn.memory_mb, layer_dirs=fn.layer_dirs,
                                     environment=dict(fn.environment), iam_policy=template.iam_policy(lid))
                    for lid, fn in template.functions.items()},
                   region=template.region, account_id=template.account_id, function_limits=function_limits)

    # ------------------------------------------------------------------ lookup
    def resolve(self, name_or_arn: str) -> HandlerSpec:
        """A logical id, function name, partial or full ARN (a qualifier is ignored)."""
        match = _ARN.match(name_or_arn)
        name = match.group("name") if match else name_or_arn
        logical_id = self._by_name.get(name) or self._by_name.get(name_or_arn)
        if logical_id is None:
            raise FunctionNotFound(name_or_arn)
        return self.specs[logical_id]

    def function_arn(self, spec: HandlerSpec) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{spec.name}"

    def limits(self, logical_id: str) -> tuple[float, int]:
        """(timeout in seconds, memory in MB) the function runs with: the template's unless overridden."""
        spec, override = self.specs[logical_id], self.function_limits.get(logical_id, FunctionLimits())
        return (spec.timeout_s if override.timeout_s is None else override.timeout_s,
                spec.memory_mb if override.memory_mb is None else override.memory_mb)

    def reports(self, logical_id: str) -> list[InvocationReport]:
        """The function's last ``REPORTS_KEPT`` invocation reports, oldest first."""
        with self._pools_lock:
            return list(self._reports.get(self.resolve(logical_id).logical_id, ()))

    # ------------------------------------------------------------------ test knobs
    def recycle(self, logical_id: str | None = None) -> None:
        """New containers from now on for one function (or all): idle ones end now, busy ones after their
        invocation, as when a Lambda's configuration changes (e.g. a test changed a secret a handler caches)."""
        stale: list[_Container] = []
        with self._pools_lock:
            for lid in [logical_id] if logical_id else list(self.specs):
                self._generation[lid] = self._generation.get(lid, 0) + 1
                pool = self._pools.get(lid)
                if pool is not None:
                    stale += pool.idle
                    pool.live -= len(pool.idle)
                    pool.idle = []
            self._containers.difference_update(stale)
            self._pools_lock.notify_all()
        for container in stale:
            container.kill("recycled")
            container.reap()

    @contextmanager
    def environment_set(self, variables: Mapping[str, str]) -> Iterator[None]:
        """Test-only: within the block every function's new containers get ``variables`` on top of their environment
        (``POWERTOOLS_LOG_LEVEL=DEBUG``: the most a stack can be made to log); all containers are recycled on entry
        and on exit."""
        self._env_of_all = dict(variables)
        self.recycle()
        try:
            yield
        finally:
            self._env_of_all = {}
            self.recycle()

    @contextmanager
    def faults_injected(self, logical_id: str, wrapper: str, **kwargs: Any) -> Iterator[None]:
        """Test-only: within the block the function's new containers wrap its handler in ``infra/faults.py``'s
        ``wrapper(handler, **kwargs)``; the function's containers are recycled on entry and on exit."""
        lid = self.resolve(logical_id).logical_id
        fault = json.dumps({"path": str(FAULTS_MODULE), "name": wrapper, "kwargs": kwargs})
        self._extra_env[lid] = {FAULT_ENV: fault}
        self.recycle(lid)
        try:
            yield
        finally:
            self._extra_env.pop(lid, None)
            self.recycle(lid)

    # ------------------------------------------------------------------ containers
    def _environment(self, spec: HandlerSpec, memory_mb: int) -> dict[str, str]:
        env = {**os.environ, **spec.environment, **self._env_of_all, **self._extra_env.get(spec.logical_id, {})}
        env.update({
            HANDLER_ENV: spec.handler,
            LAYERS_ENV: os.pathsep.join(str(layer) for layer in spec.layer_dirs),
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "LAMBDA_TASK_ROOT": str(spec.code_dir),
        })
        if spec.iam_policy is not None:
            env[IAM_POLICY_ENV] = spec.iam_policy
        return env

    def _start_container(self, spec: HandlerSpec, generation: int) -> _Container:
        """A new container that has imported its handler (cold start); raises FunctionError if that failed."""
        _, memory_mb = self.limits(spec.logical_id)
        if not spec.code_dir.is_dir():
            raise FunctionError({"errorType": "Runtime.ImportModuleError",
                                 "errorMessage": f"{spec.logical_id}: CodeUri {spec.code_dir} does not exist"})
        zygote = self._zygote_process()
        ours, theirs = socket.socketpair()
        tmp_dir = tempfile.mkdtemp(prefix=f"callsight-{spec.logical_id}-tmp-")
        try:
            pid = zygote.spawn({**self._environment(spec, memory_mb), "TMPDIR": tmp_dir}, spec.code_dir,
                               [theirs.fileno(), _fd(sys.stdout, 1), _fd(sys.stderr, 2)])
        except BaseException:
            ours.close()
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        finally:
            theirs.close()
        container = _Container(spec, generation, zygote, pid, ours)
        container.tmp_dir = tmp_dir
        container.memory_limit_kb = memory_mb * 1024
        with self._pools_lock:
            self._containers.add(container)
        self._ensure_monitor()
        container.busy = True  # the monitor watches the cold start too
        try:
            ours.settimeout(INIT_TIMEOUT_S)
            message = receive_message(ours)
        except (TimeoutError, EOFError, OSError) as exc:
            container.kill("init")
            self._forget(container)
            code = container.reap()
            ended = isinstance(exc, EOFError)
            raise FunctionError({"errorType": "Runtime.ExitError" if ended else "Sandbox.Timedout",
                                 "errorMessage": f"{spec.logical_id}: the container ended during its init "
                                                 f"({_exit_text(code) if ended else exc})"}) from exc
        finally:
            container.busy = False
        if "init_error" in message:
            self._forget(container)
            container.reap()
            error = message["init_error"]
            log.error("%s init failed: %s", spec.logical_id, "".join(error.get("stackTrace") or []).rstrip())
            raise FunctionError({"errorType": error["errorType"], "errorMessage": error["errorMessage"]})
        container.init_ms = float(message["ready"])
        log.info("cold start %s (%s) in %.0f ms", spec.logical_id, spec.code_dir, container.init_ms)
        return container

    def _zygote_process(self) -> _Zygote:
        with self._zygote_lock:
            if self._zygote is None or not self._zygote.alive:
                self._zygote = _Zygote()
            return self._zygote

    def _forget(self, container: _Container) -> None:
        with self._pools_lock:
            self._containers.discard(container)

    def _acquire(self, spec: HandlerSpec) -> _Container:
        lid = spec.logical_id
        with self._pools_lock:
            pool = self._pools.setdefault(lid, _Pool())
            waited = False
            while not pool.idle and pool.live >= self.max_containers:
                if not waited:
                    log.info("%s: %d containers busy, the invocation waits for one", lid, pool.live)
                    waited = True
                self._pools_lock.wait()
                if self._draining:
                    raise PlatformStopping(f"{lid} not invoked: the local platform is stopping")
            if pool.idle:
                return pool.idle.pop()
            pool.live += 1
            generation = self._generation.get(lid, 0)
        try:
            return self._start_container(spec, generation)
        except BaseException:
            with self._pools_lock:
                pool.live = max(0, pool.live - 1)  # a stop may have counted it out already
                self._pools_lock.notify_all()
            raise

    def _release(self, container: _Container) -> None:
        lid = container.spec.logical_id
        with self._pools_lock:
            keep = (container.killed_for is None and container.alive() and not self._draining
                    and container.generation == self._generation.get(lid, 0))
            if container in self._containers:  # else a stop or a recycle already counted it out
                if keep:
                    self._pools[lid].idle.append(container)
                else:
                    self._pools[lid].live -= 1
                    self._containers.discard(container)
            self._pools_lock.notify_all()
        if not keep:
            container.kill("retired")
            container.reap()

    def _ensure_monitor(self) -> None:
        with self._pools_lock:
            if self._monitor is None or not self._monitor.is_alive():
                self._closed.clear()
                self._monitor = threading.Thread(target=self._watch_memory, name="lambda-memory", daemon=True)
                self._monitor.start()

    def _watch_memory(self) -> None:
        ticks = 0
        while not self._closed.wait(MEMORY_POLL_S):
            ticks += 1
            with self._pools_lock:
                busy = [c for c in self._containers if c.busy and c.killed_for is None]
            for container in busy:
                if ticks % TREE_EVERY == 0 or len(container.tree) == 1:  # children (ffmpeg) come and go
                    container.tree = process_tree(container.pid) if _PROC else [container.pid]
                rss = rss_kb(container.tree)
                container.peak_kb = max(container.peak_kb, rss)
                if rss > container.memory_limit_kb and container.kill("memory"):
                    log.warning("%s: %d MB resident, over its %d MB: container killed", container.spec.logical_id,
                                rss // 1024, container.memory_limit_kb // 1024)

    # ------------------------------------------------------------------ invocation
    def call(self, name_or_arn: str, event: Any, *, request_id: str | None = None) -> Any:
        """The handler's answer; ``FunctionError`` (Lambda's error body) otherwise (the API emulation: 502)."""
        result = self._run(self.resolve(name_or_arn), event, request_id or str(uuid.uuid4()))
        if result.error:
            raise FunctionError(result.payload)
        return result.payload

    def invoke(self, name_or_arn: str, event: Any) -> InvocationResult:
        """Run the handler the way Lambda reports it: a result, or an ``errorType``/``errorMessage`` body."""
        spec = self.resolve(name_or_arn)
        try:
            return self._run(spec, event, str(uuid.uuid4()))
        except Exception as exc:
            log.error("%s failed: %s", spec.logical_id, "".join(traceback.format_exception(exc)).rstrip())
            return InvocationResult({"errorType": type(exc).__name__, "errorMessage": str(exc)}, error=True)

    def _run(self, spec: HandlerSpec, event: Any, request_id: str) -> InvocationResult:
        with self._invocation(spec):
            try:
                container = self._acquire(spec)
            except FunctionError as exc:
                memory_mb = self.limits(spec.logical_id)[1]
                self._record(InvocationReport(spec.logical_id, request_id, 0.0, memory_mb, 0, None, "error",
                                              exc.payload.get("errorType")))
                return InvocationResult(exc.payload, error=True)
            try:
                return self._run_in(container, event, request_id)
            finally:
                self._release(container)

    def _run_in(self, container: _Container, event: Any, request_id: str) -> InvocationResult:
        spec = container.spec
        timeout_s, memory_mb = self.limits(spec.logical_id)
        init_ms, container.init_ms = container.init_ms, None
        request = {"event": event, "request_id": request_id, "function_name": spec.name,
                   "invoked_function_arn": self.function_arn(spec), "memory_limit_in_mb": memory_mb,
                   "deadline_ms": int((time.time() + timeout_s) * 1000)}
        container.peak_kb = 0
        container.busy = True
        started = time.monotonic()
        answer: dict[str, Any] | None = None
        try:
            send_message(container.sock, request)
            container.sock.settimeout(max(0.001, timeout_s - (time.monotonic() - started)))
            answer = receive_message(container.sock)
        except TimeoutError:
            container.kill("timeout")
        except (EOFError, OSError):
            pass  # killed (memory, the stop) or it died
        finally:
            container.busy = False
        duration_ms = (time.monotonic() - started) * 1000
        peak_kb = max(container.peak_kb, int((answer or {}).get("peak_kb", 0)))
        if answer is not None and peak_kb > container.memory_limit_kb:  # grew and shrank between two samples
            container.kill("memory")
            answer = None
        outcome, payload = self._outcome(container, answer, request_id, timeout_s)
        report = InvocationReport(spec.logical_id, request_id, duration_ms, memory_mb, math.ceil(peak_kb / 1024),
                                  init_ms, outcome, payload.get("errorType") if outcome != "success" else None)
        self._record(report)
        return InvocationResult(payload, error=outcome != "success")

    def _outcome(self, container: _Container, answer: dict[str, Any] | None, request_id: str,
                 timeout_s: float) -> tuple[str, Any]:
        lid = container.spec.logical_id
        if answer is not None:
            if "error" not in answer:
                return "success", answer.get("result")
            error = answer["error"]
            log.error("%s failed: %s", lid, "".join(error.get("stackTrace") or []).rstrip()
                      or f"{error['errorType']}: {error['errorMessage']}")
            return "error", {"errorType": error["errorType"], "errorMessage": error["errorMessage"]}
        container.kill("exit")  # no-op if killed already; ends a process that only closed its socket
        code = container.zygote.exit_code(container.pid, timeout=10)
        reason = container.killed_for
        if reason == "timeout":
            log.error("%s: Task timed out after %.2f seconds (container killed)", lid, timeout_s)
            return "timeout", {"errorType": "Sandbox.Timedout",
                               "errorMessage": f"RequestId: {request_id} Error: Task timed out after "
                                               f"{timeout_s:.2f} seconds"}
        if reason == "memory":
            return "out_of_memory", {"errorType": "Runtime.OutOfMemory",
                                     "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: "
                                                     "signal: killed"}
        text = "the local platform stopped" if reason == "stopped" else _exit_text(code)
        log.error("%s: the container ended during the invocation (%s)", lid, text)
        return "exit", {"errorType": "Runtime.ExitError",
                        "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: {text}"}

    def _record(self, report: InvocationReport) -> None:
        with self._pools_lock:
            self._reports.setdefault(report.function, deque(maxlen=REPORTS_KEPT)).append(report)
        log.getChild(report.function).info("%s", report.line())

    @contextmanager
    def _invocation(self, spec: HandlerSpec) -> Iterator[None]:
        with self._running_changed:
            if self._draining:
                raise PlatformStopping(f"{spec.logical_id} not invoked: the local platform is stopping")
            self._running += 1
        try:
            yield
        finally:
            with self._running_changed:
                self._running -= 1
                self._running_changed.notify_all()

    def drain(self, seconds: float) -> int:
        """Refuse new invocations from now on; wait up to ``seconds`` for the running ones, then kill every
        container. Returns how many invocations were still running (they are answered ``Runtime.ExitError``)."""
        with self._running_changed:
            self._draining = True
            self._running_changed.wait_for(lambda: self._running == 0, timeout=seconds)
            unfinished = self._running
        with self._pools_lock:
            self._pools_lock.notify_all()  # invocations waiting for a container give up
        self._kill_all("stopped")
        with self._running_changed:
            self._running_changed.wait_for(lambda: self._running == 0, timeout=10)
        return unfinished

    def _kill_all(self, reason: str) -> None:
        with self._pools_lock:
            containers = list(self._containers)
            self._containers.clear()
            for pool in self._pools.values():
                pool.idle.clear()
                pool.live = 0
            self._pools_lock.notify_all()
        for container in containers:
            container.kill(reason)
        for container in containers:
            container.reap()

    def unload(self) -> None:
        """End every container (the next invocation cold-starts)."""
        self._kill_all("stopped")
        self._closed.set()
        with self._zygote_lock:
            if self._zygote is not None:
                self._zygote.close()
                self._zygote = None

    def invoke_payload(self, name_or_arn: str, body: bytes | str | None,
                       response_headers: dict[str, Any]) -> bytes:
        """moto's invoke contract: request body in, response payload out, error flag in the headers."""
        raw = body.decode("utf-8") if isinstance(body, bytes) else body
        try:
            event = json.loads(raw) if raw else {}
        except json.JSONDecodeError as exc:
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": "InvalidRequestContentException",
                               "errorMessage": f"Could not parse request body into json: {exc}"}).encode()
        result = self.invoke(name_or_arn, event)
        if result.error:
            response_headers["x-amz-function-error"] = "Unhandled"
        return json.dumps(result.payload).encode("utf-8")

    # ------------------------------------------------------------------ moto
    def install(self) -> None:
        """Serve moto's Lambda ``invoke`` for this dispatcher's functions (others keep moto's behaviour)."""
        from moto.awslambda_simple.models import LambdaSimpleBackend

        if self._original_invoke is not None:
            return
        if getattr(LambdaSimpleBackend.invoke, "_callsight_dispatcher", None) is not None:
            raise RuntimeError("another LambdaDispatcher is installed in moto: uninstall it first")
        original = LambdaSimpleBackend.invoke
        dispatcher = self

        def invoke(backend: Any, function_name: str, qualifier: str | None, body: Any, headers: Any,  # noqa: PLR0917
                   response_headers: Any) -> str | bytes | None:
            try:
                dispatcher.resolve(function_name)
            except FunctionNotFound:
                return original(backend, function_name, qualifier, body, headers, response_headers)
            if _header(headers, "X-Amz-Invocation-Type") == "Event":
                threading.Thread(target=dispatcher.invoke_payload, args=(function_name, body, {}),
                                 name=f"lambda-event-{function_name}", daemon=True).start()
                return b""
            payload = dispatcher.invoke_payload(function_name, body, response_headers)
            response_headers["Content-Length"] = str(len(payload))
            return payload

        invoke._callsight_dispatcher = self  # type: ignore[attr-defined]
        self._original_invoke = original
        LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign, assignment]
        self._zygote_process()  # its preload runs while the platform finishes starting

    def uninstall(self) -> None:
        from moto.awslambda_simple.models import LambdaSimpleBackend

        if self._original_invoke is None:
            return
        if getattr(LambdaSimpleBackend.invoke, "_callsight_dispatcher", None) is self:
            LambdaSimpleBackend.invoke = self._original_invoke  # type: ignore[method-assign]
        self._original_invoke = None


def _exit_text(code: int | None) -> str:
    if code is None:
        return "unknown"
    if code < 0:
        return f"signal: {(signal.strsignal(-code) or str(-code)).lower()}"  # as Lambda (Go) writes it
    return f"exit status {code}"


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return None if value is None else str(value)
