"""infra.template: short tags, Globals, intrinsics, parameters and ASL loading (no AWS needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from callsight.processes import DOCS_PATH, OPENAPI_PATH, PROCESSES, REPORT_PATH
from infra.template import (
    DEFAULT_TEMPLATE,
    REPO_ROOT,
    Template,
    TemplateError,
    load_state_machine_definitions,
    load_yaml,
)

ACCOUNT = "123456789012"
REGION = "us-east-1"


def write_template(tmp_path: Path, text: str, files: dict[str, str] | None = None) -> Path:
    for name, content in (files or {}).items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    path = tmp_path / "template.yaml"
    path.write_text(text, encoding="utf-8")
    return path


SMALL = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage: {Type: String, Default: dev, AllowedPattern: "[a-z0-9-]+"}
  Level: {Type: String, Default: INFO, AllowedValues: [DEBUG, INFO]}
  Width: {Type: Number, Default: 3}
Globals:
  Function:
    Runtime: python3.12
    MemorySize: 512
    Timeout: 30
    Layers: [!Ref Lib]
    Environment:
      Variables:
        LEVEL: !Ref Level
        TABLE: !Ref Things
Resources:
  Lib:
    Type: AWS::Serverless::LayerVersion
    Properties: {LayerName: !Sub "lib-${Stage}", ContentUri: lib}
  Things:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
      TimeToLiveSpecification: {AttributeName: ttl, Enabled: true}
  Files:
    Type: AWS::S3::Bucket
  Key:
    Type: AWS::SecretsManager::Secret
    Properties: {Name: !Sub "app/${Stage}/key", Description: a key}
  First:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/first
      Handler: app.lambda_handler
      MemorySize: 128
      Layers: [arn:aws:lambda:us-east-1:999999999999:layer:external:1]
      Environment:
        Variables:
          MACHINE: !Ref Flow
          MACHINE_NAME: !GetAtt Flow.Name
          SELF: !Sub "${AWS::Partition}:${AWS::Region}:${AWS::AccountId}:${Files}:${Files.Arn}:${!Literal}"
          JOINED: !Join ["/", [a, !Ref Stage, !Select [1, [x, y]]]]
          CHOSEN: !If [IsDev, dev-mode, other-mode]
          SPLIT_LAST: !Select [2, !Split [",", "p,q,r"]]
      Events:
        Get:
          Type: Api
          Properties: {Path: "/things/{id}", Method: get}
        Ended:
          Type: EventBridgeRule
          Properties:
            Pattern:
              source: [aws.states]
              detail: {stateMachineArn: [!Ref Flow]}
  Second:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/second
      Handler: pkg.mod.handle
      Timeout: 900
  Flow:
    Type: AWS::Serverless::StateMachine
    Properties:
      DefinitionUri: flow.asl.json
      DefinitionSubstitutions:
        FirstArn: !GetAtt First.Arn
        Width: !Ref Width
Conditions:
  IsDev: !Equals [!Ref Stage, dev]
Outputs:
  Url: {Value: !Sub "https://${Files}.example/${Stage}"}
"""

FLOW = """{"StartAt": "A", "States": {"A": {"Type": "Map", "MaxConcurrency": ${Width},
  "ItemProcessor": {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
  "Parameters": {"FunctionName": "${FirstArn}", "Payload.$": "$"}, "End": true}}}, "End": true}}}"""


@pytest.fixture
def small(tmp_path: Path) -> Template:
    return Template(write_template(tmp_path, SMALL, {"flow.asl.json": FLOW}), stack_name="stack")


# ---------------------------------------------------------------------------------------- YAML
def test_short_tags_become_long_form() -> None:
    loaded = load_yaml("a: !Ref X\nb: !GetAtt R.Arn\nc: !Sub [\"${x}\", {x: 1}]\nd: !If [C, 1, 2]\ne: !Join [',', [a]]")
    assert loaded == {"a": {"Ref": "X"}, "b": {"Fn::GetAtt": ["R", "Arn"]}, "c": {"Fn::Sub": ["${x}", {"x": 1}]},
                      "d": {"Fn::If": ["C", 1, 2]}, "e": {"Fn::Join": [",", ["a"]]}}


def test_unknown_tag_is_an_explicit_error() -> None:
    with pytest.raises(TemplateError, match="!Bogus"):
        load_yaml("a: !Bogus x")


def test_loader_is_safe() -> None:
    with pytest.raises(yaml.YAMLError):
        load_yaml("a: !!python/object/apply:os.system ['true']")


def test_unsupported_intrinsic_is_an_error_when_resolved(tmp_path: Path) -> None:
    text = SMALL.replace("CHOSEN: !If [IsDev, dev-mode, other-mode]", "CHOSEN: !ImportValue shared")
    template = Template(write_template(tmp_path, text, {"flow.asl.json": FLOW}))
    with pytest.raises(TemplateError, match="Fn::ImportValue"):
        template.function("First")


# ---------------------------------------------------------------------------------------- resolution
def test_globals_are_merged_into_each_function(small: Template) -> None:
    first, second = small.function("First"), small.function("Second")
    assert (first.runtime, first.memory_mb, first.timeout_s) == ("python3.12", 128, 30)
    assert (second.memory_mb, second.timeout_s, second.handler) == (512, 900, "pkg.mod.handle")
    assert first.layer_dirs == (small.root / "lib",)  # the external layer ARN has no local code
    assert second.layer_dirs == (small.root / "lib",)
    assert second.environment == {"LEVEL": "INFO", "TABLE": "stack-Things"}
    assert first.code_dir == small.root / "fn" / "first"


def test_intrinsics_resolve_to_local_names_and_arns(small: Template) -> None:
    env = small.function("First").environment
    flow_arn = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:stack-Flow"
    assert env["MACHINE"] == flow_arn
    assert env["MACHINE_NAME"] == "stack-Flow"
    assert env["SELF"] == f"aws:{REGION}:{ACCOUNT}:stack-files:arn:aws:s3:::stack-files:${{Literal}}"
    assert env["JOINED"] == "a/dev/y"
    assert env["CHOSEN"] == "dev-mode"
    assert env["SPLIT_LAST"] == "r"
    assert small.function("First").arn == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:First"
    assert small.secrets["Key"].name == "app/dev/key"
    assert small.tables["Things"].ttl_attribute == "ttl"
    assert small.tables["Things"].billing_mode == "PAY_PER_REQUEST"
    assert small.outputs == {"Url": "https://stack-files.example/dev"}


def test_events_become_routes_and_rules(small: Template) -> None:
    (route,) = small.api_routes
    assert (route.function, route.path, route.method) == ("First", "/things/{id}", "GET")
    (rule,) = small.event_rules
    assert rule.pattern == {"source": ["aws.states"], "detail": {"stateMachineArn": [
        f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:stack-Flow"]}}


def test_parameter_overrides_and_validation(tmp_path: Path) -> None:
    path = write_template(tmp_path, SMALL, {"flow.asl.json": FLOW})
    template = Template(path, parameter_overrides={"Stage": "qa", "Level": "DEBUG", "Width": 7})
    assert template.secrets["Key"].name == "app/qa/key"
    assert template.function("Second").environment["LEVEL"] == "DEBUG"
    assert template.function("First").environment["CHOSEN"] == "other-mode"
    with pytest.raises(TemplateError, match="unknown parameter"):
        Template(path, parameter_overrides={"Nope": "x"})
    with pytest.raises(TemplateError, match="not one of"):
        Template(path, parameter_overrides={"Level": "TRACE"})
    with pytest.raises(TemplateError, match="does not match"):
        Template(path, parameter_overrides={"Stage": "Bad Stage"})
    with pytest.raises(TemplateError, match="not a number"):
        Template(path, parameter_overrides={"Width": "wide"})


def test_conflicting_environment_values_are_an_error(tmp_path: Path) -> None:
    text = SMALL.replace("      Timeout: 900\n", "      Timeout: 900\n      Environment: {Variables: {LEVEL: other}}\n")
    template = Template(write_template(tmp_path, text, {"flow.asl.json": FLOW}))
    with pytest.raises(TemplateError, match="LEVEL"):
        template.function_environment_union()


def test_getatt_without_local_meaning_is_an_error(small: Template) -> None:
    with pytest.raises(TemplateError, match=r"Things\.StreamArn"):
        small.resolve({"Fn::GetAtt": ["Things", "StreamArn"]})
    with pytest.raises(TemplateError, match="no resource"):
        small.resolve({"Ref": "Missing"})


# ---------------------------------------------------------------------------------------- ASL
def test_definition_substitutions_are_textual_and_numbers_stay_numbers(small: Template, tmp_path: Path) -> None:
    definition = load_state_machine_definitions(small)["Flow"]
    assert definition["States"]["A"]["MaxConcurrency"] == 3
    task = definition["States"]["A"]["ItemProcessor"]["States"]["T"]
    assert task["Parameters"]["FunctionName"] == small.function("First").arn
    (tmp_path / "flow.asl.json").write_text(FLOW.replace("${Width}", "${Missing}"), encoding="utf-8")
    with pytest.raises(TemplateError, match="Missing"):
        load_state_machine_definitions(small)


# ---------------------------------------------------------------------------------------- the real template
@pytest.fixture(scope="module")
def real() -> Template:
    return Template()


def _raw_props(template: Template, logical_id: str) -> dict[str, Any]:
    props: dict[str, Any] = template.resources[logical_id].get("Properties") or {}
    return props


def test_real_template_functions_resolve(real: Template) -> None:
    globals_fn = real.raw["Globals"]["Function"]
    assert real.functions, "the template declares functions"
    for lid, fn in real.functions.items():
        raw = _raw_props(real, lid)
        assert fn.name == lid
        assert fn.arn == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{lid}"
        assert fn.code_dir == (REPO_ROOT / raw["CodeUri"]).resolve()
        assert fn.handler == raw["Handler"]
        assert fn.memory_mb == raw.get("MemorySize", globals_fn.get("MemorySize"))
        assert fn.timeout_s == raw.get("Timeout", globals_fn.get("Timeout"))
        assert fn.layer_dirs and all(layer.is_dir() for layer in fn.layer_dirs)
        for name in globals_fn["Environment"]["Variables"]:
            assert name in fn.environment
        raw_env = {**globals_fn["Environment"]["Variables"], **(raw.get("Environment") or {}).get("Variables", {})}
        may_be_empty = [{"Ref": p} for p, d in real.raw["Parameters"].items() if d.get("Default") == ""]
        for name, value in fn.environment.items():
            optional = raw_env[name] in may_be_empty
            assert "${" not in value and (value or optional), f"{lid}.{name} unresolved: {value!r}"


def test_real_template_environment_union(real: Template) -> None:
    env = real.function_environment_union()
    table = next(iter(real.tables.values()))
    assert env["CALLSIGHT_TABLE_NAME"] == table.name
    arns = json.loads(env["CALLSIGHT_STATE_MACHINE_ARNS"])
    # every process of callsight.processes starts the state machine the table names, and no other
    assert arns == {spec.process.value: real.arn(spec.state_machine) for spec in PROCESSES.values()}
    assert set(arns.values()) <= {sm.arn for sm in real.state_machines.values()}
    assert env["CALLSIGHT_BUCKET"] in {b.name for b in real.buckets.values()}


def test_real_template_stage_names_the_secrets() -> None:
    template = Template(parameter_overrides={"Stage": "qa"})
    assert template.secrets
    assert all("/qa/" in secret.name for secret in template.secrets.values())
    assert "/qa/" in template.function_environment_union()["CALLSIGHT_AMOCRM_SECRET_PREFIX"]


def test_real_template_routes_and_rules(real: Template) -> None:
    declared = [(lid, ev["Properties"]["Path"], ev["Properties"]["Method"].upper())
                for lid in real.functions for ev in (_raw_props(real, lid).get("Events") or {}).values()
                if ev["Type"] == "Api"]
    assert sorted((r.function, r.path, r.method) for r in real.api_routes) == sorted(declared)
    for rule in real.event_rules:
        flattened = json.dumps(rule.pattern)
        assert "Fn::" not in flattened and "'Ref'" not in flattened and '"Ref"' not in flattened


def test_real_state_machines_load(real: Template) -> None:
    definitions = load_state_machine_definitions(DEFAULT_TEMPLATE)
    assert definitions.keys() == real.state_machines.keys()
    function_arns = {fn.arn for fn in real.functions.values()}

    def tasks(states: dict[str, Any]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for state in states.values():
            if state.get("Type") == "Task":
                found.append(state)
            processor = state.get("ItemProcessor") or state.get("Iterator")
            if processor:
                found.extend(tasks(processor["States"]))
            for branch in state.get("Branches", []):
                found.extend(tasks(branch["States"]))
        return found

    for lid, definition in definitions.items():
        text = json.dumps(definition)
        assert not re.search(r"\$\{[A-Za-z]", text), f"{lid}: unsubstituted variable left"
        for task in tasks(definition["States"]):
            name = task.get("Parameters", {}).get("FunctionName")
            if name is not None:
                assert name in function_arns
        substitutions = real.state_machines[lid].substitutions
        for state in definition["States"].values():
            if state.get("Type") == "Map" and isinstance(state.get("MaxConcurrency"), int):
                assert str(state["MaxConcurrency"]) in substitutions.values()


def test_real_state_machine_numeric_substitution_follows_parameters(real: Template) -> None:
    """An unquoted ``"Field": ${Name}`` whose value is a Number parameter becomes that number (overridable)."""
    numeric = {name for name, spec in (real.raw.get("Parameters") or {}).items() if spec.get("Type") == "Number"}
    checked = 0
    for lid, sm in real.state_machines.items():
        original = sm.definition_path.read_text(encoding="utf-8")
        for key, value in (_raw_props(real, lid).get("DefinitionSubstitutions") or {}).items():
            if not (isinstance(value, dict) and value.get("Ref") in numeric):
                continue
            fields = set(re.findall(r'"(\w+)"\s*:\s*\$\{' + re.escape(key) + r"\}", original))
            template = Template(parameter_overrides={value["Ref"]: 2})
            found = [v for field in fields for v in _values_of(load_state_machine_definitions(template)[lid], field)]
            assert found and all(v == 2 for v in found), (key, fields, found)
            checked += 1
    assert checked, "the template has no numeric substitution to check"


def _values_of(node: Any, field: str) -> list[Any]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == field] + [x for v in node.values() for x in _values_of(v, field)]
    if isinstance(node, list):
        return [x for v in node for x in _values_of(v, field)]
    return []


def test_real_template_routes_are_the_process_table(real: Template) -> None:
    """The API's routes are exactly the processes' start and status paths (and the report, the OpenAPI description
    and its Swagger UI): one source of facts."""
    routes = {(route.method, route.path) for route in real.api_routes}
    expected = ({("POST", spec.start_path) for spec in PROCESSES.values()}
                | {("GET", spec.status_path) for spec in PROCESSES.values()} | {("GET", REPORT_PATH)}
                | {("GET", OPENAPI_PATH), ("GET", DOCS_PATH)})
    assert routes == expected


def test_real_template_finish_run_hears_every_process_state_machine(real: Template) -> None:
    """An aborted or timed-out execution of any process releases the clinic's lock (EventBridge rule)."""
    rules = [rule for rule in real.event_rules if rule.function == "FinishRunFunction"]
    watched = {arn for rule in rules for arn in rule.pattern["detail"]["stateMachineArn"]}
    assert watched == {real.arn(spec.state_machine) for spec in PROCESSES.values()}


@pytest.mark.parametrize(("function", "subnets", "groups"), [
    ("DownloadRecordingsFunction", "RecordingSubnetIds", "RecordingSecurityGroupIds"),
    ("SyncPostgresFunction", "DatabaseSubnetIds", "DatabaseSecurityGroupIds"),
])
def test_a_function_joins_its_vpc_only_when_its_subnets_are_given(function: str, subnets: str, groups: str) -> None:
    plain = Template(DEFAULT_TEMPLATE).resolve(Template(DEFAULT_TEMPLATE).properties(function))
    # the network-interface statement Lambda needs in a VPC (tests/platform/test_iam.py checks every statement)
    assert "VpcConfig" not in plain and "ec2:CreateNetworkInterface" not in json.dumps(plain.get("Policies"))
    in_vpc = Template(DEFAULT_TEMPLATE, parameter_overrides={subnets: "subnet-a,subnet-b", groups: "sg-1"})
    properties = in_vpc.resolve(in_vpc.properties(function))
    assert properties["VpcConfig"] == {"SubnetIds": ["subnet-a", "subnet-b"], "SecurityGroupIds": ["sg-1"]}
    assert "ec2:CreateNetworkInterface" in json.dumps(properties["Policies"])
