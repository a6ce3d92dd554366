"""One process at a time per clinic, and the hold ends however the execution ends."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from infra.platform import LocalPlatform
from tests.api.conftest import SYNC, SYNC_STATUS, assert_invariant, wait_finished


def test_ten_concurrent_starts_give_exactly_one_run(api: httpx.Client, platform: LocalPlatform, new_client: Any,
                                                    month: dict[str, str]) -> None:
    client_id = new_client()
    platform.amocrm.configure(latency_ms=150)  # the run lasts long enough for every start to meet it
    body = {"client_id": client_id, **month}
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: api.post(SYNC, json=body), range(10)))
    accepted = [a for a in answers if a.status_code in (200, 202)]
    refused = [a for a in answers if a.status_code == 409]
    assert len(accepted) == 1 and len(refused) == 9, [a.status_code for a in answers]
    running = accepted[0].json()["execution_name"]
    for answer in refused:
        body409 = answer.json()
        assert body409["error"] == "process_running" and "sync" in body409["message"] and running in body409["message"]
    status = wait_finished(api, client_id, month)
    assert status["execution_name"] == running and status["overall_status"] == "completed"
    # the hold ended with the run: the next start is accepted
    platform.amocrm.configure(latency_ms=0)
    assert api.post(SYNC, json=body).status_code in (200, 202)
    wait_finished(api, client_id, month)


def test_an_aborted_run_releases_the_clinic_and_leaves_no_call_processing(
        api: httpx.Client, platform: LocalPlatform, new_client: Any, month: dict[str, str]) -> None:
    client_id = new_client()
    platform.amocrm.configure(latency_ms=1000)
    sfn = platform.boto3_client("stepfunctions")
    with ThreadPoolExecutor(1) as pool:
        starting = pool.submit(api.post, SYNC, json={"client_id": client_id, **month})
        deadline = time.monotonic() + 10
        while not (running := api.get(SYNC_STATUS, params={"client_id": client_id, **month}).json()).get(
                "execution_name"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert running["overall_status"] == "processing"
        arn = platform.execution_arn("sync", running["execution_name"])
        sfn.stop_execution(executionArn=arn, cause="operator stopped it")
        started = starting.result()
    assert started.status_code == 502 and "ABORTED" in started.text, started.text
    status = wait_finished(api, client_id, month, timeout=30, on_poll=assert_invariant)
    assert status["overall_status"] == "failed" and "ABORTED" in status["error"]
    assert status["status_breakdown"]["processing"] == 0
    platform.amocrm.configure(latency_ms=0)
    deadline = time.monotonic() + 20
    while (again := api.post(SYNC, json={"client_id": client_id, **month})).status_code == 409:
        assert time.monotonic() < deadline, again.text
        time.sleep(0.3)
    assert again.status_code in (200, 202), again.text
    assert wait_finished(api, client_id, month)["overall_status"] == "completed"


def test_rejected_credentials_fail_the_run_with_a_clear_error(api: httpx.Client, new_client: Any,
                                                              month: dict[str, str]) -> None:
    client_id = new_client(token="revoked-token-0123")
    answer = api.post(SYNC, json={"client_id": client_id, **month})
    assert answer.status_code == 502, answer.text
    assert "401" in answer.json()["message"] and "revoked-token-0123" not in answer.text
    status = api.get(SYNC_STATUS, params={"client_id": client_id, **month}).json()
    assert status["overall_status"] == "failed" and "AmoCrmAuthError" in status["error"]
    assert "revoked-token-0123" not in str(status)
    # not stuck: the clinic can start again at once (and fails again, for the same reason)
    assert api.post(SYNC, json={"client_id": client_id, **month}).status_code == 502
