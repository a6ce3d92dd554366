"""A recording link is untrusted, on the local platform as on AWS: the platform allows exactly its stub amoCRM's
host:port, so a note whose link points at another local port fails that call alone and the sync completes."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from infra.platform import LocalPlatform
from tests.api.conftest import SYNC, assert_invariant, wait_finished
from tests.recording_links import LinkServer, Route


@pytest.mark.platform
def test_a_link_to_another_local_port_fails_that_call_and_the_rest_of_the_sync_completes(
        api: httpx.Client, platform: LocalPlatform, new_client: Callable[..., str], month: dict[str, str]) -> None:
    stub = platform.amocrm
    call = next(c for c in stub.calls if c.has_recording and c.duration >= 60)
    original = f"{stub.url}{call.recording_path}"
    with LinkServer({"/internal-secret": Route(body=b"internal-secret", content_type="text/plain")}) as internal:
        stub.update_note(call.note_id, link=f"{internal.url}/internal-secret")
        try:
            client_id = new_client()
            started = api.post(SYNC, json={"client_id": client_id, **month})
            assert started.status_code in (200, 202), started.text
            status = wait_finished(api, client_id, month)
        finally:
            stub.update_note(call.note_id, link=original)  # the other tests share the stub's notes
        assert internal.requests == []  # refused before any connection

    assert_invariant(status)
    breakdown = status["status_breakdown"]
    assert status["overall_status"] == "partial" and breakdown["failed"] == 1
    assert breakdown["success"] == status["total_calls"] - 1
    table = platform.boto3_resource("dynamodb").Table(platform.table_name)
    items = table.query(KeyConditionExpression="pk = :pk",
                        ExpressionAttributeValues={":pk": f"CALLS#{client_id}"})["Items"]
    failed = [i for i in items if i["sync_status"] == "failed"]
    assert [int(i["amo_note_id"]) for i in failed] == [call.note_id] and "recording_key" not in failed[0]
    assert f"{internal.host_port} is a loopback address" in str(failed[0]["sync_error"])
    # every other call with a recording was downloaded from the stub (its host:port is the one allowed)
    to_download = [i for i in items if i["sync_status"] == "success" and not i.get("sync_skip")]
    assert to_download and all(i.get("recording_key") for i in to_download)
