"""On a running local platform: the demo API key (``CALLSIGHT_API_KEY``'s), the template's authorizer answering for
it, and `make admin` (python -m infra.admin) creating, listing and revoking keys that open and then no longer open
the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from callsight.access import ALL_CLINICS, API_KEY_HEADER, new_api_key, parse_api_key, usage_identifier
from callsight.dal.api_keys import ApiKeyRepository
from callsight.dal.table import Table
from callsight.logic.api_keys import gateway_key_name
from callsight.processes import Process
from infra.platform import API_KEY_ENV, DEMO_KEY_NAME, PRIVATE_STATE_DIR, LocalPlatform

pytestmark = pytest.mark.platform

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "events" / "authorize_request.json"
#: the demo key this module's platform is given
GIVEN_KEY = new_api_key()
STATUS = Process.SYNC.spec.status_path
RANGE = {"start_date": "2026-11-01", "end_date": "2026-11-07"}


@pytest.fixture(scope="module")
def state_file() -> Iterator[Path]:
    """A state file under .local/ (gitignored): the platform writes its demo key there too."""
    path = PRIVATE_STATE_DIR / f"test-admin-keys-{os.getpid()}.json"
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def platform(state_file: Path) -> Iterator[LocalPlatform]:
    before = os.environ.get(API_KEY_ENV)
    os.environ[API_KEY_ENV] = GIVEN_KEY
    try:
        with LocalPlatform(port=0, demo_calls=4, postgres=False, state_file=state_file,
                           parameter_overrides={"LogLevel": "WARNING", "ApiKeyCacheSeconds": "0"}) as running:
            yield running
    finally:
        if before is None:
            os.environ.pop(API_KEY_ENV, None)
        else:
            os.environ[API_KEY_ENV] = before


def admin(state_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if name != API_KEY_ENV}
    return subprocess.run([sys.executable, "-m", "infra.admin", "--state-file", str(state_file), *args], check=False,
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def authorize(platform: LocalPlatform, key: str) -> dict[str, Any]:
    """The template's authorizer, invoked with the sample event carrying ``key``."""
    event = json.loads(SAMPLE.read_text(encoding="utf-8"))
    event["headers"]["X-Api-Key"] = event["multiValueHeaders"]["X-Api-Key"][0] = key
    answer = platform.boto3_client("lambda").invoke(FunctionName="AuthorizeRequestFunction",
                                                    Payload=json.dumps(event).encode())
    body = json.loads(answer["Payload"].read())
    return {"error": body.get("errorMessage")} if answer.get("FunctionError") else dict(body)


def test_the_demo_key_is_the_environments_for_every_clinic(platform: LocalPlatform, state_file: Path) -> None:
    assert platform.api_key == GIVEN_KEY and platform.api_headers == {API_KEY_HEADER: GIVEN_KEY}
    parsed = parse_api_key(GIVEN_KEY)
    assert parsed is not None
    record = ApiKeyRepository(Table(platform.table_name)).find(parsed[0])
    assert record is not None and record.name == DEMO_KEY_NAME and record.client_ids == [ALL_CLINICS]
    # its API Gateway key, in the template's usage plan (what the local API Gateway throttles by)
    assert platform.usage_plan_id and platform.aws.usage_plan_key_values(platform.usage_plan_id) == {
        usage_identifier(parsed[0])}
    assert json.loads(state_file.read_text())["api_key"] == GIVEN_KEY  # under .local/, gitignored
    allowed = authorize(platform, GIVEN_KEY)
    assert allowed["principalId"] == parsed[0] and allowed["context"]["client_ids"] == ALL_CLINICS
    assert allowed["usageIdentifierKey"] == usage_identifier(parsed[0])
    assert authorize(platform, new_api_key()) == {"error": "Unauthorized"}


def test_make_admin_creates_lists_and_revokes_keys(platform: LocalPlatform, state_file: Path) -> None:
    created = admin(state_file, "create-key", "--name", "demo frontend", "--client-id", "demo")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    parsed = parse_api_key(key)
    assert parsed is not None and "shown this once" in created.stdout and key not in created.stderr
    gateway_keys = platform.boto3_client("apigateway").get_api_keys()["items"]
    assert gateway_key_name(parsed[0]) in {k["name"] for k in gateway_keys}
    with httpx.Client(base_url=platform.api_url, timeout=30) as api:
        assert api.get(STATUS, params={"client_id": "demo", **RANGE}, headers={API_KEY_HEADER: key}).status_code == 200
        listed = admin(state_file, "list-keys")
        assert listed.returncode == 0, listed.stderr
        rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
        assert set(rows) == {parsed[0], parse_api_key(GIVEN_KEY)[0]}  # type: ignore[index]
        assert "demo frontend" in rows[parsed[0]] and key not in listed.stdout
        revoked = admin(state_file, "revoke-key", "--key-id", parsed[0])
        assert revoked.returncode == 0, revoked.stderr
        refused = api.get(STATUS, params={"client_id": "demo", **RANGE}, headers={API_KEY_HEADER: key})
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        assert authorize(platform, key) == {"error": "Unauthorized"}
        assert api.get(STATUS, params={"client_id": "demo", **RANGE}, headers=platform.api_headers).status_code == 200
