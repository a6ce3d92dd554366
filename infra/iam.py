"""Least privilege, locally: each function's template ``Policies`` enforced on every AWS call of its container.

A function's policy document (``policy_document``: its statements, resolved from template.yaml by
``infra.template``, and the names it needs to build ARNs) reaches its container in ``POLICY_ENV``.
``install_from_environment()`` (``infra/container.py`` calls it before the handler module is imported) then makes
every botocore client the container creates (boto3's default session, powertools' own sessions, s3transfer's
threads: all clients come from ``botocore.session.Session.create_client``) check each call on botocore's
``before-parameter-build`` event, before anything is serialised or sent: the operation and its parameters are
mapped to the IAM action(s) and resource ARN(s) AWS authorises (``requests_for``: a TransactWriteItems is one
PutItem/UpdateItem/DeleteItem/ConditionCheckItem per item, a HeadObject is s3:GetObject, an upload part is
s3:PutObject, ...) and a call some statement does not allow raises botocore's ``ClientError`` with AWS's
``AccessDenied`` code and message, naming the role, the action and the resource. As S3 does, a GetObject or
HeadObject of a missing object answers 404 only when the policy also allows ``s3:ListBucket`` on the bucket, else
403 (``on_answer``, botocore's ``after-call``; recorded as a refused ListBucket).

Statements are evaluated as IAM does for an identity policy: an explicit Deny wins, else some Allow must match
the action (case-insensitive) and the resource, ``*`` and ``?`` as wildcards, and every condition. Conditions:
``dynamodb:LeadingKeys`` (the partition key values the call touches, when they are in its parameters) and
``s3:prefix`` (ListBucket's ``Prefix``), with ``StringEquals``/``StringLike`` and their ``ForAllValues:`` /
``ForAnyValue:`` forms. Any other condition key or operator is a ``PolicyError`` when the template is read (the
platform cannot check it, so nobody may write it); a condition key the call does not provide is not satisfied
(stricter than AWS's ``ForAllValues`` on an empty set, never looser).

With ``USAGE_DIR_ENV`` set (a test sets it before the platform starts), each container appends every request it
made (action, resource, condition keys, allowed or refused), once, to ``<dir>/<logical id>.<pid>.jsonl``;
``read_usage(dir)`` gathers them. The admin CLI and the tests' own clients run outside containers: not checked.

Standard library and botocore only, and no ``infra`` import: the container loads this file by its path.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.session
from botocore.exceptions import ClientError

#: the JSON policy document (``policy_document``) of the function a container runs
POLICY_ENV = "CALLSIGHT_LOCAL_IAM_POLICY"
#: where containers record the calls their policy allowed (unset: not recorded)
USAGE_DIR_ENV = "CALLSIGHT_LOCAL_IAM_USAGE_DIR"
#: the condition keys the platform evaluates, lower case (IAM's keys are case-insensitive)
LEADING_KEYS = "dynamodb:leadingkeys"
S3_PREFIX = "s3:prefix"
SUPPORTED_CONDITION_KEYS = frozenset({LEADING_KEYS, S3_PREFIX})
_KEY_NAMES = {LEADING_KEYS: "dynamodb:LeadingKeys"}
SUPPORTED_OPERATORS = frozenset({"StringEquals", "StringLike"})
#: a secret named by its name: Secrets Manager's ARN ends with ``-`` and 6 random characters, unknown locally
SECRET_SUFFIX = "-??????"  # noqa: S105 - a wildcard, not a secret


class PolicyError(ValueError):
    """A statement the local platform cannot evaluate (so it refuses to run with it)."""


# ---------------------------------------------------------------------------------------- the policy
@functools.cache
def wildcard(pattern: str, *, ignore_case: bool) -> re.Pattern[str]:
    """IAM's wildcards: ``*`` any run of characters, ``?`` one character; nothing else is special."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(f"^{body}\\Z", re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _strings(value: Any, what: str) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise PolicyError(f"{what} must be a string or a non-empty list of strings, not {value!r}")
    return tuple(values)


@dataclass(frozen=True)
class Request:
    """One authorisation AWS makes for a call: an action on a resource, with the condition keys it provides."""

    action: str
    resource: str
    #: condition key (lower case) -> its values in this request
    keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Condition:
    quantifier: str  # "", "ForAllValues" or "ForAnyValue"
    operator: str  # StringEquals or StringLike
    key: str  # lower case
    values: tuple[str, ...]

    def holds(self, request: Request) -> bool:
        given = request.keys.get(self.key)
        if not given:
            return False  # the call does not provide the key: never allowed by a condition on it
        if self.operator == "StringLike":
            patterns = [wildcard(v, ignore_case=False) for v in self.values]
            matches = [any(p.match(g) for p in patterns) for g in given]
        else:
            matches = [g in self.values for g in given]
        return any(matches) if self.quantifier == "ForAnyValue" else all(matches)


@dataclass(frozen=True)
class Statement:
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    conditions: tuple[Condition, ...] = ()

    @classmethod
    def parse(cls, raw: Any) -> Statement:
        if not isinstance(raw, dict):
            raise PolicyError(f"a statement must be a mapping, not {raw!r}")
        unsupported = sorted(set(raw) - {"Sid", "Effect", "Action", "Resource", "Condition"})
        if unsupported:
            raise PolicyError(f"statement {raw.get('Sid', raw.get('Action'))!r}: {', '.join(unsupported)} is not "
                              "supported locally (write Effect, Action, Resource and Condition)")
        effect = raw.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise PolicyError(f"statement {raw.get('Action')!r}: Effect must be Allow or Deny, not {effect!r}")
        actions = _strings(raw.get("Action"), "Action")
        bad_actions = [a for a in actions if a != "*" and not re.fullmatch(r"[A-Za-z0-9-]+:[A-Za-z0-9*?]+", a)]
        if bad_actions:
            raise PolicyError(f"actions {bad_actions} are not of the form service:Action")
        resources = _strings(raw.get("Resource"), f"Resource of {list(actions)}")
        return cls(effect, actions, resources, tuple(_conditions(raw.get("Condition") or {}, actions)))

    def matches(self, request: Request) -> bool:
        return (any(wildcard(a, ignore_case=True).match(request.action) for a in self.actions)
                and any(wildcard(r, ignore_case=False).match(request.resource) for r in self.resources)
                and all(c.holds(request) for c in self.conditions))


def _conditions(raw: Any, actions: tuple[str, ...]) -> Iterator[Condition]:
    if not isinstance(raw, dict):
        raise PolicyError(f"the Condition of {list(actions)} must be a mapping, not {raw!r}")
    for name, block in raw.items():
        quantifier, _, operator = str(name).rpartition(":")
        if quantifier not in ("", "ForAllValues", "ForAnyValue") or operator not in SUPPORTED_OPERATORS:
            raise PolicyError(f"the condition operator {name} of {list(actions)} cannot be checked locally "
                              f"(supported: {sorted(SUPPORTED_OPERATORS)}, optionally ForAllValues:/ForAnyValue:)")
        if not isinstance(block, dict):
            raise PolicyError(f"the {name} condition of {list(actions)} must map keys to values")
        for key, values in block.items():
            if str(key).lower() not in SUPPORTED_CONDITION_KEYS:
                raise PolicyError(f"the condition key {key} of {list(actions)} cannot be checked locally "
                                  f"(supported: dynamodb:LeadingKeys, s3:prefix)")
            yield Condition(quantifier, operator, str(key).lower(), _strings(values, f"the values of {key}"))


@dataclass(frozen=True)
class Policy:
    statements: tuple[Statement, ...]

    @classmethod
    def parse(cls, statements: Iterable[Any]) -> Policy:
        return cls(tuple(Statement.parse(s) for s in statements))

    def allows(self, request: Request) -> bool:
        """IAM's evaluation of one identity policy: an explicit Deny wins, else some Allow must match."""
        matching = [s for s in self.statements if s.matches(request)]
        return bool(matching) and all(s.effect == "Allow" for s in matching)


# ---------------------------------------------------------------------------------------- calls -> requests
@dataclass(frozen=True)
class Account:
    region: str
    account_id: str
    #: table name -> its partition key attribute (dynamodb:LeadingKeys are that attribute's values)
    partition_keys: Mapping[str, str] = field(default_factory=dict)

    def arn(self, service: str, resource: str, *, regional: bool = True) -> str:
        where = f"{self.region}:{self.account_id}" if regional else ":"
        return f"arn:aws:{service}:{where}:{resource}"


def _attribute_text(value: Any) -> str:
    """A key attribute's value as text, typed (``{"S": "x"}``, as botocore sends it) or plain."""
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
    return value.decode() if isinstance(value, bytes) else str(value)


def _leading(account: Account, table: str, item: Any) -> dict[str, tuple[str, ...]]:
    hash_key = account.partition_keys.get(table)
    if not hash_key or not isinstance(item, dict) or hash_key not in item:
        return {}
    return {LEADING_KEYS: (_attribute_text(item[hash_key]),)}


def _query_partition(account: Account, params: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The partition a Query reads: ``<hash key> = :value`` in its KeyConditionExpression (or KeyConditions)."""
    table = str(params.get("TableName", ""))
    hash_key = account.partition_keys.get(table)
    if not hash_key or params.get("IndexName"):  # an index's partition key is another attribute
        return {}
    legacy = (params.get("KeyConditions") or {}).get(hash_key)
    if legacy:
        return {LEADING_KEYS: tuple(_attribute_text(v) for v in legacy.get("AttributeValueList", []))}
    expression = params.get("KeyConditionExpression")
    if not isinstance(expression, str):
        return {}
    names: Mapping[str, str] = params.get("ExpressionAttributeNames") or {}
    values: Mapping[str, Any] = params.get("ExpressionAttributeValues") or {}
    for left, right in re.findall(r"([#:]?[A-Za-z0-9_.]+)\s*=\s*([#:]?[A-Za-z0-9_.]+)", expression):
        for name, placeholder in ((left, right), (right, left)):
            if names.get(name, name) == hash_key and placeholder in values:
                return {LEADING_KEYS: (_attribute_text(values[placeholder]),)}
    return {}


_TRANSACT_ACTIONS = {"Put": "dynamodb:PutItem", "Update": "dynamodb:UpdateItem", "Delete": "dynamodb:DeleteItem",
                     "ConditionCheck": "dynamodb:ConditionCheckItem", "Get": "dynamodb:GetItem"}


def _dynamodb(account: Account, operation: str, params: Mapping[str, Any]) -> list[Request]:
    def table_arn(name: Any, index: Any = None) -> str:
        return account.arn("dynamodb", f"table/{name}" + (f"/index/{index}" if index else ""))

    table = params.get("TableName")
    if operation in ("GetItem", "UpdateItem", "DeleteItem"):
        return [Request(f"dynamodb:{operation}", table_arn(table), _leading(account, str(table), params.get("Key")))]
    if operation == "PutItem":
        return [Request("dynamodb:PutItem", table_arn(table), _leading(account, str(table), params.get("Item")))]
    if operation in ("Query", "Scan"):
        keys = _query_partition(account, params) if operation == "Query" else {}
        return [Request(f"dynamodb:{operation}", table_arn(table, params.get("IndexName")), keys)]
    if operation in ("TransactWriteItems", "TransactGetItems"):
        requests = []
        for entry in params.get("TransactItems") or []:
            for kind, body in entry.items():
                name = str(body.get("TableName"))
                requests.append(Request(_TRANSACT_ACTIONS.get(kind, f"dynamodb:{kind}"), table_arn(name),
                                        _leading(account, name, body.get("Key", body.get("Item")))))
        return requests
    if operation in ("BatchGetItem", "BatchWriteItem"):
        requests = []
        for name, body in (params.get("RequestItems") or {}).items():
            items = (body.get("Keys") or []) if operation == "BatchGetItem" else [
                (w.get("PutRequest") or {}).get("Item") or (w.get("DeleteRequest") or {}).get("Key") for w in body]
            values = tuple(v for item in items for v in _leading(account, str(name), item).get(LEADING_KEYS, ()))
            requests.append(Request(f"dynamodb:{operation}", table_arn(name), {LEADING_KEYS: values} if values else {}))
        return requests
    return [Request(f"dynamodb:{operation}", table_arn(table) if table else "*")]


_S3_OBJECT_ACTIONS = {
    "GetObject": "s3:GetObject", "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject", "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject", "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListParts": "s3:ListMultipartUploadParts", "DeleteObject": "s3:DeleteObject",
}
#: S3's answer for a missing object to a caller without ``s3:ListBucket`` on the bucket (GetObject, HeadObject)
_S3_MISSING_OBJECT = {"GetObject": {"Code": "AccessDenied", "Message": "Access Denied"},
                      "HeadObject": {"Code": "403", "Message": "Forbidden"}}
_BUCKET_CONTEXT = "callsight_local_iam_bucket"
_S3_BUCKET_ACTIONS = {"ListObjects": "s3:ListBucket", "ListObjectsV2": "s3:ListBucket", "HeadBucket": "s3:ListBucket",
                      "ListObjectVersions": "s3:ListBucketVersions",
                      "ListMultipartUploads": "s3:ListBucketMultipartUploads"}


def _s3(account: Account, operation: str, params: Mapping[str, Any]) -> list[Request]:
    bucket = params.get("Bucket")
    bucket_arn = f"arn:aws:s3:::{bucket}"
    if operation in _S3_OBJECT_ACTIONS:
        return [Request(_S3_OBJECT_ACTIONS[operation], f"{bucket_arn}/{params.get('Key')}")]
    if operation in ("CopyObject", "UploadPartCopy"):
        source = params.get("CopySource")
        source_text = f"{source.get('Bucket')}/{source.get('Key')}" if isinstance(source, dict) else str(source)
        return [Request("s3:PutObject", f"{bucket_arn}/{params.get('Key')}"),
                Request("s3:GetObject", f"arn:aws:s3:::{source_text.lstrip('/').split('?')[0]}")]
    if operation == "DeleteObjects":
        return [Request("s3:DeleteObject", f"{bucket_arn}/{o.get('Key')}")
                for o in (params.get("Delete") or {}).get("Objects") or []]
    if operation in _S3_BUCKET_ACTIONS:
        prefix = params.get("Prefix")
        return [Request(_S3_BUCKET_ACTIONS[operation], bucket_arn, {S3_PREFIX: (str(prefix),)} if prefix else {})]
    return [Request(f"s3:{operation}", bucket_arn if bucket else "*")]


def _secretsmanager(account: Account, operation: str, params: Mapping[str, Any]) -> list[Request]:
    secret = params.get("SecretId", params.get("Name"))
    if secret is None:
        return [Request(f"secretsmanager:{operation}", "*")]
    text = str(secret)
    arn = text if text.startswith("arn:") else account.arn("secretsmanager", f"secret:{text}{SECRET_SUFFIX}")
    return [Request(f"secretsmanager:{operation}", arn)]


def _states(account: Account, operation: str, params: Mapping[str, Any]) -> list[Request]:
    # each operation is its own action (StartSyncExecution is states:StartSyncExecution, not StartExecution)
    resource = params.get("executionArn", params.get("stateMachineArn", "*"))
    return [Request(f"states:{operation}", str(resource))]


def _lambda(account: Account, operation: str, params: Mapping[str, Any]) -> list[Request]:
    name = str(params.get("FunctionName", "*"))
    arn = name if name.startswith("arn:") or name == "*" else account.arn("lambda", f"function:{name}")
    return [Request("lambda:InvokeFunction" if operation in ("Invoke", "InvokeAsync") else f"lambda:{operation}",
                    arn)]


_MAPPERS = {"dynamodb": _dynamodb, "s3": _s3, "secretsmanager": _secretsmanager, "states": _states,
            "lambda": _lambda}
#: calls AWS authorises without any permission
_NO_PERMISSION_NEEDED = frozenset({("sts", "GetCallerIdentity")})


def requests_for(service: str, operation: str, params: Mapping[str, Any], account: Account) -> list[Request]:
    """What IAM authorises for one API call of ``service`` (its signing name: ``dynamodb``, ``s3``, ``states``)."""
    if (service, operation) in _NO_PERMISSION_NEEDED:
        return []
    mapper = _MAPPERS.get(service)
    if mapper is None:
        return [Request(f"{service}:{operation}", "*")]
    return mapper(account, operation, params)


# ---------------------------------------------------------------------------------------- the document
def policy_document(*, logical_id: str, function_name: str, statements: Iterable[Mapping[str, Any]], region: str,
                    account_id: str, partition_keys: Mapping[str, str]) -> str:
    """What a container needs to enforce its function's policy (``POLICY_ENV``), checked to be evaluable."""
    statements = [dict(s) for s in statements]
    Policy.parse(statements)
    return json.dumps({"logical_id": logical_id, "function_name": function_name, "region": region,
                       "account_id": account_id, "partition_keys": dict(partition_keys), "statements": statements})


class Enforcer:
    """One container's check of its calls against its function's policy."""

    def __init__(self, document: Mapping[str, Any], usage_dir: str | None = None) -> None:
        self.logical_id = str(document["logical_id"])
        self.function_name = str(document["function_name"])
        self.account = Account(str(document["region"]), str(document["account_id"]),
                               dict(document.get("partition_keys") or {}))
        self.policy = Policy.parse(document.get("statements") or [])
        # the session of the execution role SAM creates for the function (``<LogicalId>Role``)
        self.principal = (f"arn:aws:sts::{self.account.account_id}:assumed-role/{self.logical_id}Role/"
                          f"{self.function_name}")
        self._usage_path = Path(usage_dir, f"{self.logical_id}.{os.getpid()}.jsonl") if usage_dir else None
        self._used: set[str] = set()
        self._lock = threading.Lock()

    def check(self, service: str, operation: str, params: Mapping[str, Any]) -> None:
        """Raise AWS's AccessDenied ClientError unless the policy allows every request of the call."""
        requests = requests_for(service, operation, params, self.account)
        for request in requests:
            if not self.policy.allows(request):
                self._record([request], refused=True)
                raise self.denied(service, operation, request)
        self._record(requests)

    def denied(self, service: str, operation: str, request: Request) -> ClientError:
        message = (f"User: {self.principal} is not authorized to perform: {request.action} on resource: "
                   f"{request.resource} because no identity-based policy allows the {request.action} action")
        keys = "".join(f" ({_KEY_NAMES.get(key, key)}: {', '.join(values)})" for key, values in request.keys.items())
        print(f"local IAM refused a call of {self.logical_id}{keys}: {message}", file=sys.stderr, flush=True)
        code, status = ("AccessDenied", 403) if service == "s3" else ("AccessDeniedException", 400)
        response: Any = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return ClientError(response, operation)

    def _record(self, requests: list[Request], *, refused: bool = False) -> None:
        if self._usage_path is None:
            return
        with self._lock:
            new = [e for e in dict.fromkeys(_usage_entry(r, refused) for r in requests) if e not in self._used]
            if not new:
                return
            self._used.update(new)
            with self._usage_path.open("a", encoding="utf-8") as file:
                file.writelines(entry + "\n" for entry in new)

    def on_call(self, params: Mapping[str, Any], model: Any, context: Any = None, **_: Any) -> None:
        """botocore's ``before-parameter-build`` handler."""
        self.check(model.service_model.signing_name, model.name, params)
        if model.service_model.signing_name == "s3" and model.name in _S3_MISSING_OBJECT and isinstance(context, dict):
            context[_BUCKET_CONTEXT] = params.get("Bucket")

    def on_answer(self, http_response: Any, parsed: Any, model: Any, context: Any = None, **_: Any) -> None:
        """botocore's ``after-call`` handler: S3 says an object is missing (404) only to a caller that may list the
        bucket (``s3:ListBucket`` on it); to any other it answers 403 as if the read were denied, as here."""
        answer = _S3_MISSING_OBJECT.get(model.name)
        if answer is None or getattr(http_response, "status_code", None) != 404 or not isinstance(parsed, dict):
            return
        bucket = context.get(_BUCKET_CONTEXT) if isinstance(context, dict) else None
        listing = Request("s3:ListBucket", f"arn:aws:s3:::{bucket}")
        if self.policy.allows(listing):
            self._record([listing])
            return
        self._record([listing], refused=True)
        print(f"local IAM: {self.logical_id} read a missing object of {bucket} without s3:ListBucket on the bucket: "
              f"S3 answers 403, not 404", file=sys.stderr, flush=True)
        parsed["Error"] = dict(answer)
        parsed.setdefault("ResponseMetadata", {})["HTTPStatusCode"] = 403


def install(enforcer: Enforcer) -> None:
    """Every botocore client created from now on in this process checks its calls with ``enforcer`` (once per
    process: a container runs one function)."""
    original = botocore.session.Session.create_client
    if getattr(original, "_callsight_enforcer", None) is not None:
        raise RuntimeError("a local IAM policy is already enforced in this process")

    def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = original(self, *args, **kwargs)
        # last: after boto3's own handlers (the DynamoDB resource's value serialisation) have run
        client.meta.events.register_last("before-parameter-build", enforcer.on_call)
        client.meta.events.register_last("after-call.s3", enforcer.on_answer)
        return client

    create_client._callsight_enforcer = enforcer  # type: ignore[attr-defined]
    botocore.session.Session.create_client = create_client  # type: ignore[method-assign]


def install_from_environment() -> Enforcer | None:
    """The container's hook: enforce ``POLICY_ENV``'s policy (when the dispatcher gave one); the variables are
    taken out of the environment, which the handler sees as on Lambda."""
    raw = os.environ.pop(POLICY_ENV, None)
    usage_dir = os.environ.pop(USAGE_DIR_ENV, None)
    if not raw:
        return None
    enforcer = Enforcer(json.loads(raw), usage_dir)
    install(enforcer)
    return enforcer


def _usage_entry(request: Request, refused: bool) -> str:
    return json.dumps({"action": request.action, "resource": request.resource, "refused": refused,
                       "keys": {k: list(v) for k, v in sorted(request.keys.items())}}, sort_keys=True)


def read_usage(directory: str | Path, *, refused: bool = False) -> dict[str, list[Request]]:
    """Per logical id, every request (action, resource, condition keys) its containers recorded in ``directory``
    as allowed (``refused``: as refused), each once."""
    used: dict[str, dict[str, Request]] = {}
    for path in sorted(Path(directory).glob("*.jsonl")):
        logical_id = path.name.split(".", 1)[0]
        for line in path.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line) if line.strip() else None
            if entry is not None and entry["refused"] == refused:
                used.setdefault(logical_id, {})[line] = Request(
                    entry["action"], entry["resource"], {k: tuple(v) for k, v in entry["keys"].items()})
    return {logical_id: list(requests.values()) for logical_id, requests in used.items()}
