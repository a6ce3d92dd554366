"""S3: recordings, transcripts, reports, and the run plans (chunks of calls) the state machines pass by reference."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import IO, Any

import boto3

from callsight.dal.table import CLIENT_CONFIG

#: what :meth:`ObjectStore.download_to` holds in memory at a time
_DOWNLOAD_BLOCK_BYTES = 1024 * 1024


@cache
def _s3() -> Any:
    return boto3.client("s3", config=CLIENT_CONFIG)


class ObjectStore:
    def __init__(self, bucket: str) -> None:
        self.bucket = bucket

    def put_json(self, key: str, value: Any) -> None:
        _s3().put_object(Bucket=self.bucket, Key=key, Body=json.dumps(value, ensure_ascii=False).encode(),
                         ContentType="application/json")

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        _s3().put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def get_json(self, key: str) -> Any:
        return json.loads(_s3().get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def get_text_or_none(self, key: str) -> str | None:
        """The object as UTF-8 text, or None when there is no such object."""
        try:
            body: bytes = _s3().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except _s3().exceptions.NoSuchKey:
            return None
        return body.decode("utf-8")

    def get_json_or_none(self, key: str) -> Any:
        text = self.get_text_or_none(key)
        return None if text is None else json.loads(text)

    def put_text(self, key: str, text: str, content_type: str) -> None:
        _s3().put_object(Bucket=self.bucket, Key=key, Body=text.encode("utf-8"), ContentType=content_type)

    def upload(self, key: str, stream: IO[bytes], content_type: str) -> None:
        _s3().upload_fileobj(stream, self.bucket, key, ExtraArgs={"ContentType": content_type})

    def download_to(self, key: str, path: Path) -> int:
        """The object streamed into the file at ``path`` in blocks (memory does not grow with its size); its size."""
        body = _s3().get_object(Bucket=self.bucket, Key=key)["Body"]
        written = 0
        with path.open("wb") as handle:
            for block in body.iter_chunks(_DOWNLOAD_BLOCK_BYTES):
                handle.write(block)
                written += len(block)
        return written


def recording_key(client_id: str, day: str, call_id: str, extension: str) -> str:
    return f"recordings/{client_id}/{day}/{call_id}.{extension}"


def transcript_key(client_id: str, day: str, call_id: str) -> str:
    return f"transcripts/{client_id}/{day}/{call_id}.json"


def plan_key(client_id: str, run_id: str, name: str) -> str:
    return f"runs/{client_id}/{run_id}/{name}.json"


def report_key(client_id: str, start: str, end: str, extension: str) -> str:
    """The range's recommendations report (``json`` or ``md``): one per clinic and range, the latest run's."""
    return f"reports/{client_id}/{start}_{end}.{extension}"
