"""One local platform for the API tests: the real template, handlers, ASL, stub amoCRM, over HTTP."""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr

from callsight.admin import register_client
from callsight.dal.clients import AmoCrmCredentials, ClientProfile
from callsight.processes import Process
from infra.platform import LocalPlatform
from infra.stubs.amocrm import DEFAULT_ACCESS_TOKEN

SYNC, SYNC_STATUS = Process.SYNC.spec.start_path, Process.SYNC.spec.status_path
TRANSCRIBE, TRANSCRIBE_STATUS = Process.TRANSCRIBE.spec.start_path, Process.TRANSCRIBE.spec.status_path
ANALYZE, ANALYZE_STATUS = Process.ANALYZE.spec.start_path, Process.ANALYZE.spec.status_path
RECOMMENDATIONS = Process.RECOMMENDATIONS.spec.start_path
RECOMMENDATIONS_STATUS = Process.RECOMMENDATIONS.spec.status_path
PIPELINE, PIPELINE_STATUS = Process.PIPELINE.spec.start_path, Process.PIPELINE.spec.status_path
DEMO_CALLS = 60


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: the package platform's fake secrets, recognisable wherever they might leak (tests/api/test_secrets.py looks)
OPENAI_KEY = f"sk-test-SECRET-openai-{secrets.token_hex(12)}"
DATABASE_PASSWORD = f"db-SECRET-password-{secrets.token_hex(12)}"

#: a loopback port the package's platform accepts recording links from, as it would a clinic's PBX on a private
#: network (RecordingPrivateHosts): tests serve recordings there; any other local port is refused
PBX_PORT = _free_port()


@pytest.fixture(scope="package")
def platform() -> Iterator[LocalPlatform]:
    with LocalPlatform(port=0, demo_calls=DEMO_CALLS, postgres=True, openai_api_key=OPENAI_KEY,
                       database_password=DATABASE_PASSWORD,
                       parameter_overrides={"LogLevel": "WARNING",
                                            "RecordingPrivateHosts": f"127.0.0.1:{PBX_PORT}",
                                            # a revoked key stops within seconds (test_access); the package's
                                            # requests in quick succession are not throttled (test_gateway_auth is)
                                            "ApiKeyCacheSeconds": 2, "ApiKeyRateLimit": 1000,
                                            "ApiKeyBurstLimit": 2000}) as running:
        yield running


@pytest.fixture
def api(platform: LocalPlatform) -> Iterator[httpx.Client]:
    platform.amocrm.configure(latency_ms=0, fault_rate=0, broken_link_rate=0)
    platform.openai.configure(latency_ms=0, fault_rate=0)
    with httpx.Client(base_url=platform.api_url, headers=platform.api_headers, timeout=60) as client:
        yield client


@pytest.fixture
def month() -> dict[str, str]:
    today = datetime.now(ZoneInfo("Europe/Moscow")).date()
    return {"start_date": (today - timedelta(days=31)).isoformat(), "end_date": today.isoformat()}


@pytest.fixture
def new_client(platform: LocalPlatform) -> Callable[..., str]:
    """Registers another clinic on the stub amoCRM (its own calls, token and time zone)."""
    counter = iter(range(10_000))

    def register(token: str | None = None, tz: str = "Europe/Moscow") -> str:
        client_id = f"clinic-{next(counter)}-{int(time.time() * 1000) % 100000}"
        register_client(
            ClientProfile(client_id=client_id, amocrm_subdomain="demo", amocrm_base_url=platform.amocrm.url,
                          timezone=tz),
            AmoCrmCredentials(access_token=SecretStr(token or DEFAULT_ACCESS_TOKEN)),
            table_name=platform.table_name, secret_prefix=platform.env["CALLSIGHT_AMOCRM_SECRET_PREFIX"])
        return client_id

    return register


def wait_finished(api: httpx.Client, client_id: str, days: dict[str, str], *, timeout: float = 120,
                  on_poll: Callable[[dict[str, Any]], None] | None = None,
                  status_path: str = SYNC_STATUS) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = api.get(status_path, params={"client_id": client_id, **days}).json()
        if on_poll:
            on_poll(status)
        if status["overall_status"] in ("completed", "partial", "failed"):
            return dict(status)
        time.sleep(0.2)
    raise AssertionError(f"the run did not finish in {timeout} s")


def assert_invariant(status: dict[str, Any]) -> None:
    b = status["status_breakdown"]
    assert b["pending"] + b["processing"] + b["success"] + b["failed"] == status["total_calls"], status
