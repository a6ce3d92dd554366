"""Run the template's Lambda handlers in-process.

``LambdaDispatcher`` maps a function's logical id, name or ARN to its handler
(``CodeUri/<module>.py`` + ``Handler``), imports each handler module once under a unique module
name (every function's module is ``app.py``) with its layers on ``sys.path``, and calls it with a
Lambda-like context. ``install()`` replaces ``moto.awslambda_simple``'s ``invoke`` so Step Functions
Lambda tasks (and any boto3 ``lambda.invoke`` against moto) run the real handlers; errors come
back as Lambda's ``{"errorType", "errorMessage"}`` with ``X-Amz-Function-Error: Unhandled``.
``drain(seconds)`` refuses new invocations and waits a bounded time for the running ones (stopping
the platform); Python cannot end a thread, so what still runs then is left to its thread.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from infra.template import ACCOUNT_ID, REGION, Template

log = logging.getLogger("infra.lambdas")

MODULE_PREFIX = "_callsight_local_fn_"
#: how long stopping the platform waits for running invocations before it leaves them (``--stop-timeout``)
DRAIN_SECONDS = 10.0

Handler = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class HandlerSpec:
    """Where one function's handler lives and how it is configured."""

    logical_id: str
    code_dir: Path
    handler: str  # "<module path>.<function>", e.g. "app.lambda_handler"
    function_name: str = ""
    timeout_s: int = 30
    memory_mb: int = 128
    layer_dirs: tuple[Path, ...] = ()

    @property
    def name(self) -> str:
        return self.function_name or self.logical_id


class LambdaContext:
    """The attributes and method of the Python runtime's context object that handlers use."""

    def __init__(self, *, function_name: str, invoked_function_arn: str, memory_limit_in_mb: int,
                 timeout_s: int, aws_request_id: str | None = None) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = invoked_function_arn
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = aws_request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class FunctionNotFound(KeyError):
    """No function of the dispatcher has that name, ARN or logical id."""


class HandlerImportError(RuntimeError):
    """The handler's module or attribute cannot be loaded."""


class PlatformStopping(RuntimeError):
    """The dispatcher is draining: no new invocation starts."""


@dataclass(frozen=True)
class InvocationResult:
    payload: Any  # the handler's return value, or the error body
    error: bool = False


_ARN = re.compile(r"^(?:arn:[^:]+:lambda:[^:]*:)?(?:\d{12}:)?(?:function:)?(?P<name>[^:]+)(?::(?P<qualifier>.+))?$")


class LambdaDispatcher:
    """Loads and calls handlers in-process; optionally serves moto's Lambda ``invoke``."""

    def __init__(self, handlers: Mapping[str, HandlerSpec | tuple[str | Path, str]], *,
                 region: str = REGION, account_id: str = ACCOUNT_ID) -> None:
        self.region = region
        self.account_id = account_id
        self.specs: dict[str, HandlerSpec] = {}
        for logical_id, given in handlers.items():
            if isinstance(given, HandlerSpec):
                self.specs[logical_id] = given
            else:
                code_dir, handler = given
                self.specs[logical_id] = HandlerSpec(logical_id=logical_id, code_dir=Path(code_dir), handler=handler)
        self._by_name: dict[str, str] = {}
        for logical_id, spec in self.specs.items():
            self._by_name[logical_id] = logical_id
            self._by_name[spec.name] = logical_id
        self._modules: dict[str, ModuleType] = {}
        self._handlers: dict[str, Handler] = {}
        self._load_locks = {logical_id: threading.Lock() for logical_id in self.specs}
        self._original_invoke: Any = None
        self._running = 0
        self._draining = False
        self._running_changed = threading.Condition()

    @classmethod
    def from_template(cls, template: Template) -> LambdaDispatcher:
        return cls({lid: HandlerSpec(logical_id=lid, code_dir=fn.code_dir, handler=fn.handler, function_name=fn.name,
                                     timeout_s=fn.timeout_s, memory_mb=fn.memory_mb, layer_dirs=fn.layer_dirs)
                    for lid, fn in template.functions.items()},
                   region=template.region, account_id=template.account_id)

    # ------------------------------------------------------------------ lookup and loading
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

    def module_name(self, logical_id: str) -> str:
        return MODULE_PREFIX + re.sub(r"\W", "_", logical_id)

    def handler(self, logical_id: str) -> Handler:
        """The handler callable; its module is imported on first use (cold start) and kept."""
        loaded = self._handlers.get(logical_id)
        if loaded is not None:
            return loaded
        with self._load_locks[logical_id]:
            loaded = self._handlers.get(logical_id)
            if loaded is None:
                loaded = self._import(self.specs[logical_id])
                self._handlers[logical_id] = loaded
        return loaded

    def _import(self, spec: HandlerSpec) -> Handler:
        module_path, _, attribute = spec.handler.rpartition(".")
        if not module_path or not attribute:
            raise HandlerImportError(f"{spec.logical_id}: Handler {spec.handler!r} is not <module>.<function>")
        source = spec.code_dir.joinpath(*module_path.split(".")).with_suffix(".py")
        if not source.is_file():
            raise HandlerImportError(f"{spec.logical_id}: handler module {source} does not exist")
        for layer in spec.layer_dirs:
            if str(layer) not in sys.path:
                sys.path.append(str(layer))
        name = self.module_name(spec.logical_id)
        module_spec = importlib.util.spec_from_file_location(name, source)
        if module_spec is None or module_spec.loader is None:  # pragma: no cover - a .py file always has one
            raise HandlerImportError(f"{spec.logical_id}: cannot import {source}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # pydantic/dataclasses look their module up while it executes
        started = time.perf_counter()
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        log.info("cold start %s (%s) in %.0f ms", spec.logical_id, source, (time.perf_counter() - started) * 1000)
        function = getattr(module, attribute, None)
        if not callable(function):
            sys.modules.pop(name, None)
            raise HandlerImportError(f"{spec.logical_id}: {source} has no callable {attribute!r}")
        self._modules[spec.logical_id] = module
        handler: Handler = function
        return handler

    @contextmanager
    def replaced(self, logical_id: str, wrap: Callable[[Handler], Handler]) -> Iterator[None]:
        """Within the block, the function runs ``wrap(its handler)`` (a test's fault injection), then its own."""
        real = self.handler(logical_id)
        self._handlers[logical_id] = wrap(real)
        try:
            yield
        finally:
            self._handlers[logical_id] = real

    def unload(self) -> None:
        """Forget the imported handler modules (the next platform gets cold starts again)."""
        for logical_id in list(self._modules):
            sys.modules.pop(self.module_name(logical_id), None)
        self._modules.clear()
        self._handlers.clear()

    # ------------------------------------------------------------------ invocation
    def context(self, spec: HandlerSpec, request_id: str | None = None) -> LambdaContext:
        return LambdaContext(function_name=spec.name, invoked_function_arn=self.function_arn(spec),
                             memory_limit_in_mb=spec.memory_mb, timeout_s=spec.timeout_s, aws_request_id=request_id)

    def call(self, name_or_arn: str, event: Any, *, request_id: str | None = None) -> Any:
        """Run the handler; its exceptions propagate (the API emulation maps them to 502)."""
        spec = self.resolve(name_or_arn)
        with self._invocation(spec):
            handler = self.handler(spec.logical_id)
            context = self.context(spec, request_id)
            started = time.monotonic()
            try:
                return handler(event, context)
            finally:
                elapsed = time.monotonic() - started
                if elapsed > spec.timeout_s:
                    log.warning("%s ran %.1f s, over its %d s Timeout (on AWS it would have been killed)",
                                spec.logical_id, elapsed, spec.timeout_s)

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

    @property
    def running(self) -> int:
        """Invocations running now."""
        return self._running

    def drain(self, seconds: float) -> int:
        """Refuse new invocations from now on; wait up to ``seconds`` for the running ones. Returns how many still
        run (Python cannot stop them: their threads go on)."""
        with self._running_changed:
            self._draining = True
            self._running_changed.wait_for(lambda: self._running == 0, timeout=seconds)
            return self._running

    def invoke(self, name_or_arn: str, event: Any) -> InvocationResult:
        """Run the handler the way Lambda reports it: a result, or an ``errorType``/``errorMessage`` body."""
        spec = self.resolve(name_or_arn)
        try:
            result = self.call(spec.logical_id, event)
        except Exception as exc:
            log.error("%s failed: %s", spec.logical_id, "".join(traceback.format_exception(exc)).rstrip())
            return InvocationResult({"errorType": type(exc).__name__, "errorMessage": str(exc)}, error=True)
        try:
            json.dumps(result)
        except (TypeError, ValueError) as exc:
            log.error("%s returned a value that is not JSON: %s", spec.logical_id, exc)
            return InvocationResult({"errorType": "Runtime.MarshalError",
                                     "errorMessage": f"Unable to marshal response: {exc}"}, error=True)
        return InvocationResult(result)

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

    def uninstall(self) -> None:
        from moto.awslambda_simple.models import LambdaSimpleBackend

        if self._original_invoke is None:
            return
        if getattr(LambdaSimpleBackend.invoke, "_callsight_dispatcher", None) is self:
            LambdaSimpleBackend.invoke = self._original_invoke  # type: ignore[method-assign]
        self._original_invoke = None


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return None if value is None else str(value)
