"""Least privilege: the template's IAM test, and the local platform's enforcement of each function's policy.

Static (template.yaml through ``infra.template``): every function's ``Policies`` are explicit statements (no SAM
policy template, no managed policy), no action has a wildcard, and no resource is ``*`` unless the action cannot
name one. Dynamic (a whole pipeline and the paths around it on a local platform that enforces the policies): every
action granted to a function was used by it in that run, except the few that only error paths use
(``ERROR_PATHS``, each with its path), and a call outside a policy is refused as AWS refuses it.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from callsight.admin import register_client
from callsight.dal.clients import AmoCrmCredentials, ClientProfile
from callsight.processes import PIPELINE_STEPS, REPORT_PATH, Process
from infra.iam import (
    LEADING_KEYS,
    S3_PREFIX,
    USAGE_DIR_ENV,
    Account,
    Enforcer,
    Policy,
    PolicyError,
    Request,
    policy_document,
    read_usage,
    requests_for,
)
from infra.lambdas import HandlerSpec, LambdaDispatcher
from infra.platform import LocalPlatform
from infra.template import Template, TemplateError
from tests.api.conftest import wait_finished
from tests.unit.test_token_refresh import oauth_pair

#: actions that may have ``Resource: "*"``: they name no resource (EC2's Describe calls) or Lambda creates the
#: network interfaces of a function in a VPC before its ARN exists (AWSLambdaVPCAccessExecutionRole's own grants)
RESOURCE_STAR_ACTIONS = frozenset({
    "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses",
})
#: the parameters that add the functions' VPC statements (their VpcConfig's network interfaces)
IN_VPC = {"DatabaseSubnetIds": "subnet-1", "DatabaseSecurityGroupIds": "sg-1",
          "RecordingSubnetIds": "subnet-2", "RecordingSecurityGroupIds": "sg-2"}
#: SAM policy templates whose grants are exact (one action, one named function or state machine): state machines
#: may keep them (their definitions are not run in containers, so nothing locally checks what they use)
EXACT_SAM_TEMPLATES = frozenset({"LambdaInvokePolicy", "StepFunctionsExecutionPolicy"})

#: (function, action) granted for a path the dynamic run does not take, and that path
ERROR_PATHS: dict[tuple[str, str], str] = {
    # s3transfer aborts the multipart upload of a recording (over 8 MB) whose download fails mid-way
    ("DownloadRecordingsFunction", "s3:AbortMultipartUpload"): "logic/download.py: a recording's stream fails",
    # a start whose execution could not start releases the lock it took (and a stale lock is taken over)
    ("StartProcessFunction", "dynamodb:DeleteItem"): "logic/runs.py RunStarter.start: start_execution failed",
    # a worker's claim that fails (the call is another run's, or a delivery repeated) re-reads that call
    ("DownloadRecordingsFunction", "dynamodb:GetItem"): "logic/steps.py ChunkWorker: a claim refused",
    # a dead chunk's call that changed since the chunk's batch read (or is not stored) is read again
    ("FailChunkFunction", "dynamodb:GetItem"): "logic/steps.py end_unfinished: a transition refused",
    # a theme chunk whose worker died left no themes: S3 says 404 (not 403) only to a role that may list the bucket
    ("BuildReportFunction", "s3:ListBucket"): "logic/recommendations.py build_range_report: a chunk's themes missing",
    # ... and a range whose report is not built, or a transcript no longer stored, is synced without it
    ("SyncPostgresFunction", "s3:ListBucket"): "logic/bi_sync.py sync_range_to_postgres: a report or transcript gone",
}


def templates() -> list[Template]:
    return [Template(), Template(parameter_overrides=IN_VPC)]


# ---------------------------------------------------------------------------------------- static: the template
def test_every_functions_policies_are_explicit_statements() -> None:
    for template in templates():
        for lid in template.functions:
            entries = template.resolve(template.properties(lid).get("Policies") or [])
            for entry in entries if isinstance(entries, list) else [entries]:
                assert isinstance(entry, dict) and set(entry) <= {"Statement", "Version"}, (lid, entry)
        assert not template.function("ApiDocsFunction").policy_statements  # the API's description: no AWS access


def test_no_wildcard_action_and_no_star_resource_where_one_can_be_named() -> None:
    for template in templates():
        for lid, fn in template.functions.items():
            for statement in fn.policy_statements:
                actions = _listed(statement["Action"])
                assert all("*" not in a and "?" not in a for a in actions), (lid, actions)
                if "*" in _listed(statement["Resource"]):
                    assert set(actions) <= RESOURCE_STAR_ACTIONS, (lid, actions)
                for resource in _listed(statement["Resource"]):
                    assert resource == "*" or resource.startswith("arn:aws:"), (lid, resource)


def test_state_machines_use_only_exact_policy_templates_or_checked_statements() -> None:
    template = Template()
    for lid in template.state_machines:
        for entry in template.resolve(template.properties(lid).get("Policies") or []):
            (name, body), = entry.items()
            if name == "Statement":
                Policy.parse(body)
                assert all("*" not in a for s in body for a in _listed(s["Action"])), (lid, body)
                assert all(r != "*" for s in body for r in _listed(s["Resource"])), (lid, body)
            else:
                assert name in EXACT_SAM_TEMPLATES and len(body) == 1, (lid, entry)


def test_a_sam_policy_template_on_a_function_is_a_template_error(tmp_path: Path) -> None:
    text = Path(Template().path).read_text(encoding="utf-8")
    marker = "      Policies:\n        - Statement:\n"
    assert marker in text
    broken = tmp_path / "template.yaml"
    broken.write_text(text.replace(marker, "      Policies:\n        - DynamoDBCrudPolicy:\n"
                                           "            TableName: !Ref CallsightTable\n        - Statement:\n", 1))
    with pytest.raises(TemplateError, match=r"DynamoDBCrudPolicy.*SAM policy template"):
        _ = Template(broken).functions


# ---------------------------------------------------------------------------------------- the matcher
ACCOUNT = Account("us-east-1", "123456789012", {"things": "pk"})
TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/things"


def _allow(action: Any, resource: Any, condition: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **({"Condition": condition} if condition
                                                                          else {})}


def test_a_transaction_is_authorised_item_by_item_with_each_items_partition() -> None:
    requests = requests_for("dynamodb", "TransactWriteItems", {"TransactItems": [
        {"Update": {"TableName": "things", "Key": {"pk": {"S": "CALLS#a"}, "sk": {"S": "1"}}}},
        {"ConditionCheck": {"TableName": "things", "Key": {"pk": {"S": "RUN#a#sync"}, "sk": {"S": "x"}}}},
        {"Put": {"TableName": "things", "Item": {"pk": "COUNTS#a#sync", "sk": "d"}}},
    ]}, ACCOUNT)
    assert [(r.action, r.resource, r.keys[LEADING_KEYS]) for r in requests] == [
        ("dynamodb:UpdateItem", TABLE, ("CALLS#a",)), ("dynamodb:ConditionCheckItem", TABLE, ("RUN#a#sync",)),
        ("dynamodb:PutItem", TABLE, ("COUNTS#a#sync",))]
    policy = Policy.parse([_allow(["dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:ConditionCheckItem"], TABLE,
                                  {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["CALLS#*", "COUNTS#*"]}})])
    assert [policy.allows(r) for r in requests] == [True, False, True]  # RUN# is outside the partitions


def test_query_partition_comes_from_the_key_condition_and_batch_gets_from_every_key() -> None:
    (query,) = requests_for("dynamodb", "Query", {
        "TableName": "things", "KeyConditionExpression": "#p = :pk AND sk BETWEEN :a AND :b",
        "ExpressionAttributeNames": {"#p": "pk"},
        "ExpressionAttributeValues": {":pk": {"S": "CLIENTS"}, ":a": {"S": "0"}, ":b": {"S": "~"}}}, ACCOUNT)
    assert (query.action, query.keys[LEADING_KEYS]) == ("dynamodb:Query", ("CLIENTS",))
    (batch,) = requests_for("dynamodb", "BatchGetItem", {"RequestItems": {"things": {"Keys": [
        {"pk": {"S": "CALLS#a"}, "sk": {"S": "1"}}, {"pk": {"S": "APIKEYS"}, "sk": {"S": "KEY#1"}}]}}}, ACCOUNT)
    policy = Policy.parse([_allow("dynamodb:BatchGetItem", TABLE,
                                  {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["CALLS#*"]}})])
    assert batch.keys[LEADING_KEYS] == ("CALLS#a", "APIKEYS") and not policy.allows(batch)
    any_value = Policy.parse([_allow("dynamodb:BatchGetItem", TABLE,
                                     {"ForAnyValue:StringEquals": {"dynamodb:LeadingKeys": ["APIKEYS"]}})])
    assert any_value.allows(batch)


def test_s3_operations_map_to_the_actions_iam_checks() -> None:
    def one(operation: str, **params: Any) -> tuple[str, str, dict[str, tuple[str, ...]]]:
        (request,) = requests_for("s3", operation, {"Bucket": "b", **params}, ACCOUNT)
        return request.action, request.resource, dict(request.keys)

    assert one("HeadObject", Key="runs/x.json") == ("s3:GetObject", "arn:aws:s3:::b/runs/x.json", {})
    assert one("UploadPart", Key="recordings/a.mp3")[0] == one("CreateMultipartUpload", Key="k")[0] == "s3:PutObject"
    assert one("AbortMultipartUpload", Key="k")[0] == "s3:AbortMultipartUpload"
    assert one("ListObjectsV2", Prefix="runs/a/") == ("s3:ListBucket", "arn:aws:s3:::b", {S3_PREFIX: ("runs/a/",)})
    assert one("PutBucketLifecycleConfiguration")[:2] == ("s3:PutBucketLifecycleConfiguration", "arn:aws:s3:::b")
    deleted = requests_for("s3", "DeleteObjects", {"Bucket": "b", "Delete": {"Objects": [{"Key": "1"}, {"Key": "2"}]}},
                           ACCOUNT)
    assert [(r.action, r.resource) for r in deleted] == [("s3:DeleteObject", "arn:aws:s3:::b/1"),
                                                        ("s3:DeleteObject", "arn:aws:s3:::b/2")]
    listing = Policy.parse([_allow("s3:ListBucket", "arn:aws:s3:::b", {"StringLike": {"s3:prefix": ["runs/*"]}})])
    assert listing.allows(Request("s3:ListBucket", "arn:aws:s3:::b", {S3_PREFIX: ("runs/a/",)}))
    assert not listing.allows(Request("s3:ListBucket", "arn:aws:s3:::b", {S3_PREFIX: ("recordings/",)}))
    assert not listing.allows(Request("s3:ListBucket", "arn:aws:s3:::b"))  # no prefix: the whole bucket


def test_each_step_functions_operation_is_its_own_action() -> None:
    machine = "arn:aws:states:us-east-1:123456789012:stateMachine:m"
    execution = "arn:aws:states:us-east-1:123456789012:execution:m:run-1"
    assert [(r.action, r.resource) for op, params in (
        ("StartExecution", {"stateMachineArn": machine}), ("StartSyncExecution", {"stateMachineArn": machine}),
        ("DescribeExecution", {"executionArn": execution})) for r in requests_for("states", op, params, ACCOUNT)] == [
        ("states:StartExecution", machine), ("states:StartSyncExecution", machine),
        ("states:DescribeExecution", execution)]


def test_wildcards_case_and_an_explicit_deny() -> None:
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:callsight/prod/openai-api-key-??????"
    policy = Policy.parse([_allow("secretsmanager:getsecretvalue", [secret]),
                           _allow("s3:GetObject", "arn:aws:s3:::b/reports/*"),
                           {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/reports/secret*"}])
    (by_name,) = requests_for("secretsmanager", "GetSecretValue", {"SecretId": "callsight/prod/openai-api-key"},
                              ACCOUNT)
    assert policy.allows(by_name)
    assert policy.allows(Request("secretsmanager:GetSecretValue", secret.replace("??????", "AbC12d")))
    assert not policy.allows(Request("secretsmanager:GetSecretValue", secret.replace("??????", "AbC12")))  # 5 chars
    assert not policy.allows(Request("secretsmanager:PutSecretValue", secret.replace("??????", "AbC12d")))
    assert policy.allows(Request("s3:GetObject", "arn:aws:s3:::b/reports/c/1.json"))
    assert not policy.allows(Request("s3:GetObject", "arn:aws:s3:::b/reports/secret.json"))
    assert not policy.allows(Request("s3:GetObject", "arn:aws:s3:::b/recordings/1.mp3"))


@pytest.mark.parametrize(("statement", "problem"), [
    (_allow("dynamodb:GetItem", TABLE, {"StringEquals": {"aws:SourceIp": ["10.0.0.1"]}}), "aws:SourceIp"),
    (_allow("dynamodb:GetItem", TABLE, {"NumericLessThan": {"dynamodb:LeadingKeys": ["1"]}}), "NumericLessThan"),
    ({"Effect": "Allow", "NotAction": "s3:DeleteObject", "Resource": "*"}, "NotAction"),
    (_allow("GetItem", TABLE), "service:Action"),
])
def test_a_statement_the_platform_cannot_check_is_refused(statement: dict[str, Any], problem: str) -> None:
    with pytest.raises(PolicyError, match=problem):
        Policy.parse([statement])


# ---------------------------------------------------------------------------------------- dynamic: one run
def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _month() -> dict[str, str]:
    today = date.today()
    return {"start_date": (today - timedelta(days=31)).isoformat(), "end_date": today.isoformat()}


@pytest.fixture(scope="module")
def usage_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("iam-usage")


@pytest.fixture(scope="module")
def platform(usage_dir: Path) -> Iterator[LocalPlatform]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(USAGE_DIR_ENV, str(usage_dir))  # the containers inherit it: each records what it used
        with LocalPlatform(port=0, demo_calls=8, postgres=True, state_file=None,
                           parameter_overrides={"LogLevel": "WARNING"}) as running:
            yield running


def _api(platform: LocalPlatform) -> httpx.Client:
    return httpx.Client(base_url=platform.api_url, timeout=60, headers=platform.api_headers)


def _register(platform: LocalPlatform, client_id: str, credentials: AmoCrmCredentials) -> None:
    register_client(ClientProfile(client_id=client_id, amocrm_subdomain="demo", amocrm_base_url=platform.amocrm.url,
                                  auth_mode="oauth" if credentials.can_refresh else "long_lived"),
                    credentials, table_name=platform.table_name,
                    secret_prefix=platform.env["CALLSIGHT_AMOCRM_SECRET_PREFIX"])


def _oauth(platform: LocalPlatform, http: httpx.Client, *, expired: bool) -> AmoCrmCredentials:
    pair = oauth_pair(platform.amocrm.url, platform.amocrm.issue_authorization_code(), http)
    if expired:
        pair["expires_at"] = int(time.time()) - 60
    return AmoCrmCredentials.model_validate(pair)


def _until(check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while not (answer := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)
    return answer


@pytest.fixture(scope="module")
def run(platform: LocalPlatform, usage_dir: Path) -> dict[str, list[Request]]:
    """The whole pipeline and the paths around it; what each function used."""
    month = _month()
    demo = {"client_id": "demo", **month}
    with _api(platform) as api, httpx.Client(timeout=30) as http:
        # all five processes (the authorizer, the starts, the status polls, every worker, FinishRun's success)
        started = api.post(Process.PIPELINE.spec.start_path, json=demo)
        assert started.status_code == 202, started.text
        final = _until(lambda: (s := api.get(Process.PIPELINE.spec.status_path, params=demo).json())["overall_status"]
                       in ("completed", "partial", "failed") and s, timeout=300)
        assert final["overall_status"] == "completed", final
        for process in PIPELINE_STEPS:
            assert api.get(process.spec.status_path, params=demo).status_code == 200
        for kind in ("json", "md"):
            assert api.get(REPORT_PATH, params={**demo, "format": kind}).status_code == 200
        assert api.get("/api/openapi.json").status_code == 200  # the docs function: no AWS access at all
        # a range without a report: 404 needs s3:ListBucket (without it S3 answers the missing object with 403)
        no_report = {**demo, "start_date": "2020-01-01", "end_date": "2020-01-31"}
        missing = api.get(REPORT_PATH, params=no_report)
        assert missing.status_code == 404 and missing.json()["error"] == "report_not_found", missing.text

        # a chunk whose worker dies: FailChunk fails its calls
        assert platform.dispatcher is not None
        with platform.dispatcher.faults_injected("AnalyzeCallsFunction", "exit_on_chunk", client_id="demo",
                                                 chunk_suffix="analyze-00000.json"):
            dying = api.post(Process.ANALYZE.spec.start_path, json={**demo, "force": True})
            assert dying.status_code == 202, dying.text
            dead = wait_finished(api, "demo", month, status_path=Process.ANALYZE.spec.status_path, timeout=120)
        assert dead["overall_status"] in ("partial", "failed") and dead["status_breakdown"]["failed"] > 0, dead

        # a run stopped mid-way: FinishRun closes it from the execution's status change (ABORTED)
        platform.openai.configure(latency_ms=1500)
        try:
            stopped = api.post(Process.TRANSCRIBE.spec.start_path, json={**demo, "force": True})
            assert stopped.status_code == 202, stopped.text
            status_path = Process.TRANSCRIBE.spec.status_path
            _until(lambda: api.get(status_path, params=demo).json()["status_breakdown"]["processing"] > 0)
            platform.boto3_client("stepfunctions").stop_execution(
                executionArn=platform.execution_arn("transcribe", stopped.json()["execution_name"]))
            ended = _until(lambda: (s := api.get(status_path, params=demo).json())["finished_at"]
                           and s["overall_status"] != "processing" and s)
            assert "ABORTED" in (ended["error"] or ""), ended
        finally:
            platform.openai.configure(latency_ms=0)

        # OAuth clinics: a sync refreshes an expired pair under the lease; the daily schedule rotates a stale one
        _register(platform, "iam-oauth-sync", _oauth(platform, http, expired=True))
        _register(platform, "iam-oauth-idle", _oauth(platform, http, expired=False))
        synced = api.post(Process.SYNC.spec.start_path, json={"client_id": "iam-oauth-sync", **month})
        assert synced.status_code in (200, 202), synced.text
        assert wait_finished(api, "iam-oauth-sync", month)["overall_status"] == "completed"
        outcomes = {c["client_id"]: c["outcome"] for c in platform.run_schedule("RefreshTokensFunction")["clients"]}
        assert outcomes["iam-oauth-idle"] == "refreshed" and outcomes["iam-oauth-sync"] == "skipped", outcomes
    assert not read_usage(usage_dir, refused=True), "the run made calls its functions' policies refuse"
    return read_usage(usage_dir)


@pytest.mark.platform
def test_every_action_granted_to_a_function_is_used_by_it(platform: LocalPlatform,
                                                         run: dict[str, list[Request]]) -> None:
    unused: dict[str, list[str]] = {}
    for lid, fn in platform.template.functions.items():
        granted = {a for s in fn.policy_statements if s["Effect"] == "Allow" for a in _listed(s["Action"])}
        used = {r.action for r in run.get(lid, [])}
        assert used <= granted, (lid, used - granted)  # else the enforcement let something through
        missing = sorted(a for a in granted - used if (lid, a) not in ERROR_PATHS)
        if missing:
            unused[lid] = missing
    assert not unused, f"granted but not used in the run (remove them, or name their error path): {unused}"
    assert platform.dispatcher is not None and platform.dispatcher.reports("ApiDocsFunction")
    assert "ApiDocsFunction" not in run  # it ran, and made no AWS call (it may make none)
    stale = [key for key in ERROR_PATHS
             if key[1] not in {a for s in platform.template.function(key[0]).policy_statements
                               for a in _listed(s["Action"])}]
    assert not stale, f"ERROR_PATHS entries no longer granted: {stale}"


@pytest.mark.platform
def test_every_s3_prefix_and_table_partition_granted_to_a_function_is_used_by_it(
        platform: LocalPlatform, run: dict[str, list[Request]]) -> None:
    """Each S3 key prefix of a statement, and each partition of its dynamodb:LeadingKeys, matched a call the
    function made (the statement narrowed to that prefix or partition allowed it)."""
    bucket = platform.template.arn("RecordingsBucket")
    unused: dict[str, list[str]] = {}
    for lid, fn in platform.template.functions.items():
        for statement in fn.policy_statements:
            if all((lid, a) in ERROR_PATHS for a in _listed(statement["Action"])):
                continue
            narrowed = [({**statement, "Resource": r}, r.removeprefix(bucket)) for r in _listed(statement["Resource"])
                        if r.startswith(bucket + "/")]
            for operator, keys in (statement.get("Condition") or {}).items():
                for partition in _listed(keys.get("dynamodb:LeadingKeys", [])):
                    narrowed.append(({**statement, "Condition": {operator: {"dynamodb:LeadingKeys": [partition]}}},
                                     partition))
            for one, name in narrowed:
                if not any(Policy.parse([one]).allows(r) for r in run.get(lid, [])):
                    unused.setdefault(lid, []).append(name)
    assert not unused, f"S3 prefixes or partitions granted but not used in the run: {unused}"


PROBE = """
    import boto3
    from botocore.exceptions import ClientError

    def call(operation):
        try:
            operation()
        except ClientError as exc:
            return [exc.response["Error"]["Code"], exc.response["Error"]["Message"]]
        return ["ok", ""]

    def lambda_handler(event, context):
        s3, table = boto3.client("s3"), boto3.resource("dynamodb").Table(event["table"])
        return {
            "report": call(lambda: s3.get_object(Bucket=event["bucket"], Key="reports/none/x.json")),
            "recording": call(lambda: s3.get_object(Bucket=event["bucket"], Key="recordings/demo/x.mp3")),
            "profile": call(lambda: table.get_item(Key={"pk": "CLIENT#demo", "sk": "PROFILE"})),
            "api_keys": call(lambda: table.get_item(Key={"pk": "APIKEYS", "sk": "KEY#0"})),
            "scan": call(lambda: table.scan(Limit=1)),
        }
"""


@pytest.mark.platform
def test_a_container_refuses_a_call_outside_its_functions_policy(platform: LocalPlatform, tmp_path: Path) -> None:
    """A handler in a container with GetReportFunction's policy from the template, against the platform's AWS."""
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "app.py").write_text(textwrap.dedent(PROBE))
    lid = "GetReportFunction"
    dispatcher = LambdaDispatcher({lid: HandlerSpec(lid, tmp_path / "probe", "app.lambda_handler",
                                                    iam_policy=platform.template.iam_policy(lid))})
    try:
        answer = dispatcher.call(lid, {"table": platform.table_name, "bucket": platform.env["CALLSIGHT_BUCKET"]})
    finally:
        dispatcher.unload()
    assert answer["report"][0] == "NoSuchKey" and answer["profile"] == ["ok", ""]  # allowed: moto answered
    role = f"arn:aws:sts::{platform.template.account_id}:assumed-role/{lid}Role/{lid}"
    bucket_arn = platform.template.arn("RecordingsBucket")
    assert answer["recording"] == [
        "AccessDenied", f"User: {role} is not authorized to perform: s3:GetObject on resource: {bucket_arn}"
                        "/recordings/demo/x.mp3 because no identity-based policy allows the s3:GetObject action"]
    table_arn = platform.template.arn("CallsightTable")
    for name, action in (("api_keys", "dynamodb:GetItem"), ("scan", "dynamodb:Scan")):
        assert answer[name][0] == "AccessDeniedException", answer
        assert f"perform: {action} on resource: {table_arn} " in answer[name][1], answer


def test_a_missing_object_is_403_unless_the_policy_may_list_the_bucket(tmp_path: Path) -> None:
    """S3 answers a GetObject/HeadObject of a missing key with 404 only to a caller with s3:ListBucket on the
    bucket; to any other with 403, as if denied (the enforcer's ``after-call`` rewrites moto's 404)."""
    def enforcer(*statements: dict[str, Any]) -> Enforcer:
        document = policy_document(logical_id="GetReportFunction", function_name="r", region=ACCOUNT.region,
                                   account_id=ACCOUNT.account_id, partition_keys={}, statements=list(statements))
        return Enforcer(json.loads(document), str(tmp_path))

    def answer(checker: Enforcer, operation: str, status: int = 404) -> dict[str, Any]:
        model = SimpleNamespace(name=operation, service_model=SimpleNamespace(signing_name="s3"))
        context: dict[str, Any] = {}
        checker.on_call({"Bucket": "b", "Key": "reports/x.json"}, model, context=context)
        parsed: dict[str, Any] = {"Error": {"Code": "NoSuchKey" if operation == "GetObject" else "404"},
                                  "ResponseMetadata": {"HTTPStatusCode": status}}
        checker.on_answer(SimpleNamespace(status_code=status), parsed, model, context=context)
        return parsed

    read = _allow("s3:GetObject", "arn:aws:s3:::b/reports/*")
    may_list = enforcer(read, _allow("s3:ListBucket", "arn:aws:s3:::b"))
    assert answer(may_list, "GetObject")["Error"] == {"Code": "NoSuchKey"}
    assert answer(may_list, "HeadObject")["Error"] == {"Code": "404"}
    assert read_usage(tmp_path)["GetReportFunction"] == [Request("s3:GetObject", "arn:aws:s3:::b/reports/x.json"),
                                                         Request("s3:ListBucket", "arn:aws:s3:::b")]
    read_only = enforcer(read, _allow("s3:ListBucket", "arn:aws:s3:::b", {"StringLike": {"s3:prefix": ["runs/*"]}}))
    denied = answer(read_only, "GetObject")
    assert denied == {"Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                      "ResponseMetadata": {"HTTPStatusCode": 403}}
    assert answer(read_only, "HeadObject")["Error"] == {"Code": "403", "Message": "Forbidden"}
    assert answer(read_only, "GetObject", status=500)["Error"] == {"Code": "NoSuchKey"}  # only a 404 is rewritten
    assert read_usage(tmp_path, refused=True) == {"GetReportFunction": [Request("s3:ListBucket", "arn:aws:s3:::b")]}


def test_the_enforcer_refuses_as_aws_does_and_records_each_request_once(tmp_path: Path) -> None:
    document = policy_document(
        logical_id="FinishRunFunction", function_name="callsight-prod-FinishRun", region=ACCOUNT.region,
        account_id=ACCOUNT.account_id, partition_keys=ACCOUNT.partition_keys, statements=[_allow(
            "dynamodb:GetItem", TABLE, {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["RUN#*"]}})])
    enforcer = Enforcer(json.loads(document), str(tmp_path))
    run_item = {"TableName": "things", "Key": {"pk": {"S": "RUN#a#sync"}, "sk": {"S": "x"}}}
    for _ in range(2):
        enforcer.check("dynamodb", "GetItem", run_item)
    with pytest.raises(ClientError) as refused:
        enforcer.check("dynamodb", "GetItem", {"TableName": "things", "Key": {"pk": "APIKEYS", "sk": "KEY#1"}})
    assert refused.value.response["Error"] == {"Code": "AccessDeniedException", "Message": (
        "User: arn:aws:sts::123456789012:assumed-role/FinishRunFunctionRole/callsight-prod-FinishRun is not "
        f"authorized to perform: dynamodb:GetItem on resource: {TABLE} because no identity-based policy allows the "
        "dynamodb:GetItem action")}
    with pytest.raises(ClientError, match="s3:DeleteObject on resource: arn:aws:s3:::b/runs/x"):
        enforcer.check("s3", "DeleteObject", {"Bucket": "b", "Key": "runs/x"})
    assert read_usage(tmp_path) == {"FinishRunFunction": [
        Request("dynamodb:GetItem", TABLE, {LEADING_KEYS: ("RUN#a#sync",)})]}
    assert read_usage(tmp_path, refused=True) == {"FinishRunFunction": [
        Request("dynamodb:GetItem", TABLE, {LEADING_KEYS: ("APIKEYS",)}),
        Request("s3:DeleteObject", "arn:aws:s3:::b/runs/x")]}
