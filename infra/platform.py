"""``LocalPlatform``: the whole Callsight stack from template.yaml on one machine, no AWS account.

Starts, in order: PostgreSQL (embedded, optional; it comes up in the background while the next pieces
start), the amoCRM stub (unless a real demo amoCRM is configured), moto with the template's resources,
the process environment, the Lambda dispatcher, the EventBridge emulation (status-change rules and the
template's schedules) and the API Gateway emulation; then registers the demo clinic and writes
``.local/platform.json`` (how ``python -m infra.admin`` finds it). ``stop()`` undoes all of it (ports freed,
environment restored, the state file removed). One platform per process at a time: the environment and moto's
patches are process-wide.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit, urlunsplit

from callsight.access import ALL_CLINICS, API_KEY_HEADER, KEY_FORMAT, parse_api_key
from infra.apigw import ApiGateway
from infra.aws import LocalAws
from infra.events import ExecutionEventWatcher
from infra.isolation import ISOLATED_AWS_ENVIRONMENT
from infra.lambdas import DRAIN_SECONDS, FunctionLimits, HandlerSpec, LambdaDispatcher
from infra.local_state import STATE_FILE, remove_state, write_state
from infra.postgres import LocalPostgres
from infra.schedules import ScheduleEmulator
from infra.template import DEFAULT_TEMPLATE, REPO_ROOT, Template, TemplateError, UsagePlanSpec

log = logging.getLogger("infra.platform")

DEMO_CLIENT_ID = "demo"
DEMO_CLIENT_NAME = "Клиника «Здоровье» (демо)"
DEMO_TIMEZONE = "Europe/Moscow"
REAL_AMOCRM_SUBDOMAIN_ENV = "CALLSIGHT_DEMO_AMOCRM_SUBDOMAIN"
REAL_AMOCRM_TOKEN_ENV = "CALLSIGHT_DEMO_AMOCRM_TOKEN"  # noqa: S105 - a variable's name
#: the template's secrets the platform fills (logical id -> value; the database URL is added at start)
OPENAI_SECRET_ID = "OpenAIApiKeySecret"  # noqa: S105 - a logical id
DATABASE_SECRET_ID = "DatabaseUrlSecret"  # noqa: S105 - a logical id
STUB_OPENAI_KEY = "stub-openai-key"
REAL_OPENAI_KEY_ENV = "OPENAI_API_KEY"
REAL_OPENAI_BASE_URL_ENV = "OPENAI_BASE_URL"
#: the template's API (the local API Gateway serves it) and the variable naming its usage plan's id
API_ID = "CallsightApi"
USAGE_PLAN_ID_ENV = "CALLSIGHT_USAGE_PLAN_ID"
#: the template parameter listing the private hosts recording links may reach (the stub's is added)
RECORDING_PRIVATE_HOSTS = "RecordingPrivateHosts"
DEFAULT_STUB_TOKEN = "stub-long-lived-token"  # noqa: S105 - the stub's documented demo token
#: the demo API key (every clinic) is this variable's when it is set, else a new one each start
API_KEY_ENV = "CALLSIGHT_API_KEY"
DEMO_KEY_NAME = "local-demo"
#: a state file there (gitignored) may hold the demo key
PRIVATE_STATE_DIR = REPO_ROOT / ".local"

_active_lock = threading.Lock()


class PlatformError(RuntimeError):
    pass


class LocalPlatform:
    """Context manager: ``with LocalPlatform(port=0) as p: httpx.get(p.api_url + "/")``."""

    #: the platform running in this process, if any
    active: ClassVar[LocalPlatform | None] = None

    def __init__(self, *, port: int = 0, demo_calls: int = 200, amocrm_latency_ms: int = 0,
                 amocrm_fault_rate: float = 0.0, openai_latency_ms: int = 0, openai_fault_rate: float = 0.0,
                 postgres: bool = True, stage: str = "local",
                 parameter_overrides: dict[str, Any] | None = None, template_path: str | Path = DEFAULT_TEMPLATE,
                 handler_overrides: Mapping[str, HandlerSpec | tuple[str | Path, str]] | None = None,
                 state_file: str | Path | None = STATE_FILE,
                 function_limits: Mapping[str, FunctionLimits] | None = None,
                 openai_api_key: str = STUB_OPENAI_KEY, database_password: str | None = None) -> None:
        """``state_file``: where the running platform describes itself for ``python -m infra.admin`` (None: no
        file). ``function_limits``: a test knob, per logical id the Timeout/MemorySize to enforce instead of the
        template's (``FunctionLimits(timeout_s=3)``). ``openai_api_key``: the key the stub OpenAI accepts (and the
        OpenAI secret holds); ``database_password``: a password written into the embedded PostgreSQL's URL (the
        database secret), which its socket, trusting every local login, ignores. Both for tests that look for
        secrets where none may be."""
        self.port = port
        self.demo_calls = demo_calls
        self.amocrm_latency_ms = amocrm_latency_ms
        self.amocrm_fault_rate = amocrm_fault_rate
        self.openai_latency_ms = openai_latency_ms
        self.openai_fault_rate = openai_fault_rate
        self.openai: Any = None
        self.stub_openai_key = openai_api_key
        self._openai_key = openai_api_key
        self.database_password = database_password
        self.use_postgres = postgres
        self.stage = stage
        self.parameter_overrides = {"Stage": stage, **(parameter_overrides or {})}
        self._given_private_hosts = str(self.parameter_overrides.get(RECORDING_PRIVATE_HOSTS, ""))
        self.template_path = Path(template_path)
        self.handler_overrides = dict(handler_overrides or {})
        self.function_limits = dict(function_limits or {})
        self.template: Template = Template(self.template_path, parameter_overrides=self.parameter_overrides,
                                           stack_name=f"callsight-{stage}")
        self.env: dict[str, str] = {}
        self.amocrm: Any = None
        self.amocrm_url: str | None = None
        self._amocrm_token = DEFAULT_STUB_TOKEN
        self.database_url: str | None = None
        self.aws = LocalAws()
        self.dispatcher: LambdaDispatcher | None = None
        self.events: ExecutionEventWatcher | None = None
        self.schedules: ScheduleEmulator | None = None
        self.state_file = Path(state_file) if state_file is not None else None
        self.api: ApiGateway | None = None
        #: the id moto gave the template's usage plan (``CALLSIGHT_USAGE_PLAN_ID``), once the platform runs
        self.usage_plan_id: str | None = None
        self._api_key: str | None = None
        self._postgres: LocalPostgres | None = None
        self._postgres_thread: threading.Thread | None = None
        self._postgres_error: BaseException | None = None
        self._saved_env: dict[str, str | None] = {}
        self._added_sys_path: list[str] = []
        self._started = False

    # ------------------------------------------------------------------ public surface
    @property
    def api_url(self) -> str:
        if self.api is None:
            raise PlatformError("the platform is not running")
        return self.api.url

    @property
    def api_key(self) -> str:
        """The demo API key (every clinic): ``CALLSIGHT_API_KEY``'s, or the one made at start."""
        if self._api_key is None:
            raise PlatformError("the platform is not running")
        return self._api_key

    @property
    def api_headers(self) -> dict[str, str]:
        """The headers a request to the API needs: the demo key."""
        return {API_KEY_HEADER: self.api_key}

    @property
    def moto_url(self) -> str:
        return self.aws.url

    @property
    def allowed_origin(self) -> str:
        """The frontend origin the API answers CORS for (the template's AllowedOrigin; locally
        ``infra.template.LOCAL_PARAMETER_VALUES`` unless ``parameter_overrides`` names another)."""
        return self.template.parameters["AllowedOrigin"]

    @property
    def _usage_plan(self) -> UsagePlanSpec | None:
        """The template's usage plan of the API (API keys are its keys)."""
        plans = [plan for plan in self.template.usage_plans.values() if plan.api == API_ID]
        if len(plans) > 1:
            raise TemplateError(f"{len(plans)} usage plans on {API_ID}: the local API Gateway emulates one")
        return plans[0] if plans else None

    @property
    def table_name(self) -> str:
        return self.env["CALLSIGHT_TABLE_NAME"]

    def state_machine_arn(self, process: str) -> str:
        """The ARN of a process's state machine (``callsight.processes`` names it, the template defines it)."""
        from callsight.processes import Process

        return self.template.arn(Process(process).spec.state_machine)

    def execution_arn(self, process: str, execution_name: str) -> str:
        from callsight.logic.runs import execution_arn

        return execution_arn(self.state_machine_arn(process), execution_name)

    def boto3_client(self, service: str) -> Any:
        """A boto3 client of the embedded AWS (moto)."""
        return self.aws.client(service)

    def boto3_resource(self, service: str) -> Any:
        """A boto3 resource of the embedded AWS (moto)."""
        return self.aws.resource(service)

    def __enter__(self) -> LocalPlatform:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @staticmethod
    def _require(value: Any) -> Any:
        if value is None:
            raise PlatformError("the platform is not running")
        return value

    # ------------------------------------------------------------------ start / stop
    def start(self) -> None:
        with _active_lock:
            if LocalPlatform.active is self:
                raise PlatformError("this LocalPlatform is already running")
            if LocalPlatform.active is not None:
                raise PlatformError("another LocalPlatform is running in this process (the environment and "
                                    "moto patches are process-wide): stop it first")
            LocalPlatform.active = self
        self._started = True
        try:
            self._start()
        except BaseException:
            try:
                self.stop()
            except PlatformError:
                log.exception("cleaning up after a failed start")
            raise

    def _start(self) -> None:
        given_key = _api_key_from_environment()  # a bad one fails the start before anything runs
        if self.use_postgres:
            # PostgreSQL starts in the background (initdb and pg_ctl are other processes) while moto comes up;
            # the platform waits for it before it needs the URL (the database secret)
            self._postgres = LocalPostgres()
            self._postgres_thread = threading.Thread(target=self._start_postgres, name="postgres-start", daemon=True)
            self._postgres_thread.start()
        else:
            self.database_url = os.environ.get("DATABASE_URL") or None
        self._start_amocrm()
        self._start_openai()
        self._apply_environment()  # moto itself reads AWS_PROFILE & co. when it creates its backends
        self.aws.start()
        created = self.aws.create_resources(self.template)
        self.usage_plan_id = created.get(self._usage_plan.logical_id) if self._usage_plan else None
        self._apply_environment()  # now with the endpoint (and the usage plan's id)
        self._wait_for_postgres()
        self._fill_secrets()
        dispatcher = LambdaDispatcher.from_template(self.template, function_limits=self.function_limits)
        for logical_id, override in self.handler_overrides.items():
            if logical_id not in dispatcher.specs:
                raise TemplateError(f"handler override for {logical_id}, which the template does not define")
            base = dispatcher.specs[logical_id]
            if isinstance(override, HandlerSpec):
                dispatcher.specs[logical_id] = override
            else:
                code_dir, handler = override
                dispatcher.specs[logical_id] = dataclasses.replace(base, code_dir=Path(code_dir), handler=handler)
        for logical_id, spec in dispatcher.specs.items():
            source = spec.code_dir / (spec.handler.rpartition(".")[0].replace(".", "/") + ".py")
            if not source.is_file():
                log.warning("%s: %s does not exist yet (invoking it will fail)", logical_id, source)
        dispatcher.install()
        self.dispatcher = dispatcher
        self.events = ExecutionEventWatcher(self.template.event_rules, self._deliver_event,
                                            region=self.template.region, account_id=self.template.account_id)
        self.events.start()
        self.schedules = ScheduleEmulator(self.template.schedules, self._deliver_schedule,
                                          region=self.template.region, account_id=self.template.account_id)
        self.schedules.start()
        plan, plan_id = self._usage_plan, self.usage_plan_id
        self.api = ApiGateway(
            self.template.api_routes, self._invoke_api, port=self.port, cors=self.template.api_cors,
            stage=self.template.api_stage, region=self.template.region, account_id=self.template.account_id,
            api_id=self.template.ref(API_ID) if API_ID in self.template.resources else "local",
            authorizers=self.template.api_authorizers, gateway_responses=self.template.gateway_responses,
            usage_plan=plan, usage_plan_keys=(lambda: self.aws.usage_plan_key_values(plan_id)) if plan_id else None)
        self.api.start()
        self._register_demo_client()
        self._issue_demo_key(given_key)
        self._write_state_file()
        log.info("local platform ready: API %s, moto %s", self.api.url, self.aws.url)

    def stop(self, *, drain_seconds: float = DRAIN_SECONDS) -> int:
        """Stop everything that runs, free every port, restore the environment (idempotent).

        Once nothing new can start (API, events, schedules stopped, executions aborted), running invocations get
        ``drain_seconds`` to end before moto stops. Returns how many were still running: their containers are
        killed then (``infra.lambdas``)."""
        if not self._started:
            return 0
        errors: list[BaseException] = []
        unfinished = 0

        def drain_invocations() -> None:
            nonlocal unfinished
            unfinished = self._drain(drain_seconds)

        for step in (self._remove_state_file, self._stop_api, self._stop_events, self._stop_schedules,
                     drain_invocations, self.aws.stop, self._stop_dispatcher, self._restore_environment,
                     self._stop_amocrm, self._stop_openai, self._stop_postgres):
            try:
                step()
            except Exception as exc:
                log.exception("stopping the platform: %s failed", getattr(step, "__name__", step))
                errors.append(exc)
        self._started = False
        self._api_key = None
        with _active_lock:
            if LocalPlatform.active is self:
                LocalPlatform.active = None
        if errors:
            raise PlatformError(f"the platform stopped with {len(errors)} error(s); first: {errors[0]!r}")
        return unfinished

    def _drain(self, seconds: float) -> int:
        """Abort the running executions, refuse new invocations, wait up to ``seconds`` for the running ones."""
        if self.aws.running:
            self.aws.abort_running_executions("the local platform stopped")
        if self.dispatcher is None:
            return 0
        unfinished = self.dispatcher.drain(seconds)
        if unfinished:
            log.warning("%d invocation(s) still running after %.0f s: their containers were killed",
                        unfinished, seconds)
        return unfinished

    def _stop_api(self) -> None:
        if self.api is not None:
            self.api.stop()
            self.api = None

    def _stop_events(self) -> None:
        if self.events is not None:
            self.events.stop()
            self.events = None

    def _stop_schedules(self) -> None:
        if self.schedules is not None:
            self.schedules.stop()
            self.schedules = None

    def _write_state_file(self) -> None:
        if self.state_file is None:
            return
        state = {"moto_url": self.aws.url, "region": self.template.region, "api_url": self.api_url,
                 "amocrm_url": self.amocrm_url,
                 "environment": {k: v for k, v in self.env.items() if k.startswith("CALLSIGHT_")}}
        if self.state_file.resolve().is_relative_to(PRIVATE_STATE_DIR.resolve()):  # gitignored: the demo key too
            state["api_key"] = self.api_key
        if not write_state(state, self.state_file):
            log.warning("%s describes another running platform: `python -m infra.admin` finds that one, not this",
                        self.state_file)

    def _remove_state_file(self) -> None:
        if self.state_file is not None and self.aws.running:
            remove_state(self.aws.url, self.state_file)

    def _stop_dispatcher(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.uninstall()
            self.dispatcher.unload()
            self.dispatcher = None

    def _stop_amocrm(self) -> None:
        if self.amocrm is not None:
            stub, self.amocrm = self.amocrm, None
            stub.stop()
        self.amocrm_url = None

    def _start_postgres(self) -> None:
        try:
            postgres = self._require(self._postgres)
            url = postgres.start()
            password = self.database_password if postgres.embedded else None
            self.database_url = _with_password(url, password) if password else url
        except BaseException as exc:
            self._postgres_error = exc

    def _wait_for_postgres(self) -> None:
        if self._postgres_thread is not None:
            self._postgres_thread.join()
            self._postgres_thread = None
        if self._postgres_error is not None:
            error, self._postgres_error = self._postgres_error, None
            raise PlatformError(f"the embedded PostgreSQL did not start: {error}") from error

    def _stop_postgres(self) -> None:
        if self._postgres_thread is not None:
            self._postgres_thread.join()
            self._postgres_thread = None
        self._postgres_error = None
        if self._postgres is not None:
            postgres, self._postgres = self._postgres, None
            postgres.stop()
        self.database_url = None

    # ------------------------------------------------------------------ pieces
    def _start_amocrm(self) -> None:
        subdomain = os.environ.get(REAL_AMOCRM_SUBDOMAIN_ENV)
        token = os.environ.get(REAL_AMOCRM_TOKEN_ENV)
        if subdomain and token:
            self.amocrm = None
            self.amocrm_url = None  # https://<subdomain>.amocrm.ru
            log.info("demo client uses the real amoCRM account %s.amocrm.ru (no stub)", subdomain)
            return
        try:
            from infra.stubs import amocrm as stub_module
        except ImportError as exc:
            raise PlatformError(f"the amoCRM stub (infra/stubs/amocrm.py) cannot be imported ({exc}); set "
                                f"{REAL_AMOCRM_SUBDOMAIN_ENV} and {REAL_AMOCRM_TOKEN_ENV} to use a real "
                                "amoCRM account instead") from exc
        stub = stub_module.AmoCrmStub(demo_calls=self.demo_calls, port=0, latency_ms=self.amocrm_latency_ms,
                                      fault_rate=self.amocrm_fault_rate)
        stub.start()
        self.amocrm = stub
        self.amocrm_url = str(stub.url)
        self._amocrm_token = str(getattr(stub, "access_token", None)
                                 or getattr(stub_module, "DEFAULT_ACCESS_TOKEN", DEFAULT_STUB_TOKEN))
        self._allow_recording_host(urlsplit(self.amocrm_url).netloc)
        log.info("amoCRM stub on %s (%d demo calls)", self.amocrm_url, self.demo_calls)

    def _allow_recording_host(self, host_port: str) -> None:
        """Recording links may reach ``host_port`` (the stub serves the demo recordings on 127.0.0.1), as a clinic's
        private PBX is allowed on AWS: exactly that host and port, besides the entries the caller passed, so a link
        to any other local port is refused here as it is there."""
        if RECORDING_PRIVATE_HOSTS not in (self.template.raw.get("Parameters") or {}):
            return
        given = [entry.strip() for entry in self._given_private_hosts.split(",")]
        self.parameter_overrides[RECORDING_PRIVATE_HOSTS] = ",".join([host_port, *filter(None, given)])
        self.template = Template(self.template_path, parameter_overrides=self.parameter_overrides,
                                 stack_name=f"callsight-{self.stage}")

    def _start_openai(self) -> None:
        """The stub OpenAI, unless OPENAI_API_KEY is set: then the real service (or OPENAI_BASE_URL's)."""
        real_key = os.environ.get(REAL_OPENAI_KEY_ENV)
        base_url = os.environ.get(REAL_OPENAI_BASE_URL_ENV, "") if real_key else ""
        if not real_key:
            from infra.stubs.openai import OpenAIStub

            stub = OpenAIStub(port=0, api_key=self.stub_openai_key, latency_ms=self.openai_latency_ms,
                              fault_rate=self.openai_fault_rate)
            stub.start()
            self.openai = stub
            base_url = f"{stub.url}/v1"
            log.info("OpenAI stub on %s", stub.url)
        self._openai_key = real_key or self.stub_openai_key
        # the template's OpenAIBaseUrl parameter is how the workers find it, as on AWS
        self.parameter_overrides["OpenAIBaseUrl"] = base_url
        self.template = Template(self.template_path, parameter_overrides=self.parameter_overrides,
                                 stack_name=f"callsight-{self.stage}")

    def _stop_openai(self) -> None:
        if self.openai is not None:
            self.openai.stop()
            self.openai = None

    def _fill_secrets(self) -> None:
        values: dict[str, str] = {}
        secrets = self.template.secrets
        if OPENAI_SECRET_ID in secrets:
            values[OPENAI_SECRET_ID] = self._openai_key
        if DATABASE_SECRET_ID in secrets:
            if self.database_url:
                values[DATABASE_SECRET_ID] = self.database_url
            else:
                log.info("no PostgreSQL (postgres=False and no DATABASE_URL): %s has no value",
                            secrets[DATABASE_SECRET_ID].name)
        self.aws.put_secret_values(self.template, values)

    def computed_environment(self) -> dict[str, str | None]:
        """What the platform sets (None: removed) before any handler is imported."""
        env: dict[str, str | None] = dict(self.template.function_environment_union())
        running = self.aws.running  # before moto runs, an inherited endpoint must not be used either
        env["AWS_ENDPOINT_URL"] = self.aws.url if running else None
        env["MOTO_PORT"] = str(self.aws.port) if running else None
        env.update({
            "AWS_DEFAULT_REGION": self.template.region,
            "AWS_REGION": self.template.region,
            **ISOLATED_AWS_ENVIRONMENT,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "CALLSIGHT_LOCAL_PLATFORM": "1",
        })
        if self.usage_plan_id:  # callsight-admin create-key adds keys to it
            env[USAGE_PLAN_ID_ENV] = self.usage_plan_id
        for name in os.environ:  # per-service endpoints would bypass moto
            if name.startswith("AWS_ENDPOINT_URL_"):
                env[name] = None
        return env

    def _apply_environment(self) -> None:
        computed = self.computed_environment()
        for name, value in computed.items():
            if name not in self._saved_env:
                self._saved_env[name] = os.environ.get(name)
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self.env = {name: value for name, value in computed.items() if value is not None}
        for fn in self.template.functions.values():
            for layer in fn.layer_dirs:
                if str(layer) not in sys.path:
                    sys.path.append(str(layer))
                    self._added_sys_path.append(str(layer))
        _clear_layer_caches(self.template)

    def _restore_environment(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        for entry in self._added_sys_path:
            if entry in sys.path:
                sys.path.remove(entry)
        self._added_sys_path.clear()
        _clear_layer_caches(self.template)

    def _register_demo_client(self) -> None:
        from pydantic import SecretStr

        from callsight.admin import register_client
        from callsight.dal.clients import AmoCrmCredentials, ClientProfile

        if self.amocrm is not None:
            subdomain, base_url = "demo", self.amocrm_url
            token = self._amocrm_token
        else:
            subdomain, base_url = os.environ[REAL_AMOCRM_SUBDOMAIN_ENV], None
            token = os.environ[REAL_AMOCRM_TOKEN_ENV]
        profile = ClientProfile(client_id=DEMO_CLIENT_ID, name=DEMO_CLIENT_NAME, amocrm_subdomain=subdomain,
                                amocrm_base_url=base_url, timezone=DEMO_TIMEZONE)
        register_client(profile, AmoCrmCredentials(access_token=SecretStr(token)), table_name=self.table_name,
                        secret_prefix=self.env["CALLSIGHT_AMOCRM_SECRET_PREFIX"])
        log.info("registered client %s (%s)", DEMO_CLIENT_ID, profile.base_url)

    def _issue_demo_key(self, given: str | None) -> None:
        """The demo key, for every clinic: in the table and, when the template has a usage plan, in API Gateway
        (moto) as ``callsight-admin create-key`` makes keys."""
        from callsight.dal.api_keys import ApiKeyRepository
        from callsight.dal.table import Table
        from callsight.logic.api_keys import ApiKeyIssuer

        repo, now = ApiKeyRepository(Table(self.table_name)), datetime.now(UTC)
        if self.usage_plan_id:
            issuer = ApiKeyIssuer(repo, self.aws.client("apigateway"), self.usage_plan_id)
            self._api_key, record = issuer.issue(DEMO_KEY_NAME, [ALL_CLINICS], now=now, key=given)
        else:
            self._api_key, record = repo.create(DEMO_KEY_NAME, [ALL_CLINICS], now=now, key=given)
        log.info("API key %s (%s, every clinic)%s", record.key_id, DEMO_KEY_NAME,
                 f" from {API_KEY_ENV}" if given else "")

    # ------------------------------------------------------------------ handler entry points
    def _invoke_api(self, function: str, event: dict[str, Any], request_id: str) -> Any:
        return self._require(self.dispatcher).call(function, event, request_id=request_id)

    def run_schedule(self, function: str, event_name: str | None = None) -> Any:
        """Deliver a function's template schedule now (as EventBridge would at its time); the handler's answer."""
        return self._require(self.schedules).run_now(function, event_name)

    def _deliver_schedule(self, function: str, event: Any) -> Any:
        result = self._require(self.dispatcher).invoke(function, event)
        if result.error:
            raise PlatformError(f"scheduled {function} failed: {result.payload.get('errorType')}: "
                                f"{result.payload.get('errorMessage')}")
        return result.payload

    def _deliver_event(self, function: str, event: dict[str, Any]) -> None:
        result = self._require(self.dispatcher).invoke(function, event)
        if result.error:
            log.error("EventBridge target %s failed: %s", function, result.payload)


def _api_key_from_environment() -> str | None:
    """``CALLSIGHT_API_KEY`` when set; PlatformError, naming the variable and never its value, when malformed."""
    given = os.environ.get(API_KEY_ENV) or None
    if given is not None and parse_api_key(given) is None:
        raise PlatformError(f"{API_KEY_ENV} is not a Callsight API key ({KEY_FORMAT}): set a key of that form, or "
                            "unset it for a new key at each start")
    return given


def _clear_layer_caches(template: Template) -> None:
    """Forget functools caches (boto3 clients bound to an old endpoint) in the layers' loaded modules."""
    roots = {str(layer) for fn in template.functions.values() for layer in fn.layer_dirs}
    for module in list(sys.modules.values()):
        filename = getattr(module, "__file__", None) or ""
        if not any(filename.startswith(root + os.sep) for root in roots):
            continue
        for value in list(vars(module).values()):
            clear = getattr(value, "cache_clear", None)
            if callable(clear) and getattr(value, "__module__", None) == module.__name__:
                clear()


def _with_password(url: str, password: str) -> str:
    """``url`` (``postgresql://user:@/db?host=/socket``) with ``password`` as its user's password."""
    parts = urlsplit(url)
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    netloc = f"{quote(parts.username or 'postgres', safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))
