"""S3: recordings, and the run plans (chunks of calls) the state machines pass by reference."""

from __future__ import annotations

import json
from functools import cache
from typing import IO, Any

import boto3

from callsight.dal.table import CLIENT_CONFIG


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

    def get_bytes(self, key: str) -> bytes:
        body: bytes = _s3().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def upload(self, key: str, stream: IO[bytes], content_type: str) -> None:
        _s3().upload_fileobj(stream, self.bucket, key, ExtraArgs={"ContentType": content_type})


def recording_key(client_id: str, day: str, call_id: str, extension: str) -> str:
    return f"recordings/{client_id}/{day}/{call_id}.{extension}"


def transcript_key(client_id: str, day: str, call_id: str) -> str:
    return f"transcripts/{client_id}/{day}/{call_id}.json"


def plan_key(client_id: str, run_id: str, name: str) -> str:
    return f"runs/{client_id}/{run_id}/{name}.json"
