"""Read template.yaml (the one source of truth) into typed local specs.

A YAML loader for CloudFormation short tags, SAM ``Globals.Function`` merging, the intrinsic
functions this template uses (Ref, Fn::GetAtt, Fn::Sub, Fn::Join, Fn::If, Fn::Select, Fn::Split,
Fn::Equals/Not/And/Or, Condition) resolved to local names and ARNs, and the state machines'
ASL files with their ``DefinitionSubstitutions`` applied. The API's access control is read too: its Lambda
REQUEST authorizers, each route's ``Auth`` (SAM's defaults applied), the ``GatewayResponses`` and the usage plan's
throttle, for the local API Gateway (``infra.apigw``). Each function's ``Policies`` are read as IAM statements (SAM
policy templates refused) that its containers enforce (``infra.iam``). Anything else is an explicit error.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from infra.iam import Policy, PolicyError, policy_document

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE = REPO_ROOT / "template.yaml"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
PARTITION = "aws"

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
SERVERLESS_STATE_MACHINE = "AWS::Serverless::StateMachine"
SERVERLESS_LAYER = "AWS::Serverless::LayerVersion"
SERVERLESS_API = "AWS::Serverless::Api"
DYNAMODB_TABLE = "AWS::DynamoDB::Table"
S3_BUCKET = "AWS::S3::Bucket"
SECRET = "AWS::SecretsManager::Secret"  # noqa: S105 - a resource type
USAGE_PLAN = "AWS::ApiGateway::UsagePlan"
#: values the local platform gives the parameters a deploy must set (no Default in the template): the local
#: frontend's origin is a dev server's (Vite's default port)
LOCAL_PARAMETER_VALUES: dict[str, str] = {"AllowedOrigin": "http://localhost:5173"}
#: API Gateway's gateway response types and the status each answers when the template does not set one
#: (None: DEFAULT_4XX and DEFAULT_5XX keep the status of the response they stand in for)
GATEWAY_RESPONSE_STATUS: dict[str, int | None] = {
    "ACCESS_DENIED": 403, "API_CONFIGURATION_ERROR": 500, "AUTHORIZER_CONFIGURATION_ERROR": 500,
    "AUTHORIZER_FAILURE": 500, "BAD_REQUEST_PARAMETERS": 400, "BAD_REQUEST_BODY": 400, "DEFAULT_4XX": None,
    "DEFAULT_5XX": None, "EXPIRED_TOKEN": 403, "INTEGRATION_FAILURE": 504, "INTEGRATION_TIMEOUT": 504,
    "INVALID_API_KEY": 403, "INVALID_SIGNATURE": 403, "MISSING_AUTHENTICATION_TOKEN": 403, "QUOTA_EXCEEDED": 429,
    "REQUEST_TOO_LARGE": 413, "RESOURCE_NOT_FOUND": 404, "THROTTLED": 429, "UNAUTHORIZED": 401,
    "UNSUPPORTED_MEDIA_TYPE": 415, "WAF_FILTERED": 403,
}
#: the ``$context`` variables the local gateway substitutes in a gateway response's template
GATEWAY_CONTEXT_VARIABLES = frozenset({
    "requestId", "extendedRequestId", "apiId", "stage", "httpMethod", "resourcePath", "path",
    "error.message", "error.messageString", "error.responseType",
})
_CONTEXT_VARIABLE = re.compile(r"\$context\.([A-Za-z]+(?:\.[A-Za-z]+)*)")
#: API Gateway's authorizer cache time when ``ReauthorizeEvery`` is not given, and its maximum
DEFAULT_AUTHORIZER_TTL_S = 300
MAX_AUTHORIZER_TTL_S = 3600


class TemplateError(ValueError):
    """The template uses something the local platform does not understand, or is inconsistent."""


# ---------------------------------------------------------------------------------------- YAML loading
_SHORT_TAGS: dict[str, str] = {
    "Ref": "Ref",
    "Condition": "Condition",
    **{name: f"Fn::{name}" for name in (
        "GetAtt", "Sub", "Join", "If", "Select", "Split", "Equals", "Not", "And", "Or", "FindInMap",
        "Base64", "GetAZs", "ImportValue", "Cidr", "Length", "ToJsonString", "Transform",
    )},
}


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns ``!Tag value`` into CloudFormation's long form ``{"Fn::Tag": value}``."""


def _construct_short_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = _SHORT_TAGS.get(tag_suffix)
    if name is None:
        raise TemplateError(f"unknown CloudFormation tag !{tag_suffix} at {node.start_mark}")
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if name == "Fn::GetAtt":  # !GetAtt Resource.Attribute
            resource, _, attribute = str(value).partition(".")
            value = [resource, attribute]
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - yaml has no other node kinds
        raise TemplateError(f"unexpected node for !{tag_suffix} at {node.start_mark}")
    return {name: value}


CfnLoader.add_multi_constructor("!", _construct_short_tag)


def load_yaml(text: str) -> Any:
    """Parse CloudFormation YAML (short tags become long-form intrinsics)."""
    return yaml.load(text, Loader=CfnLoader)  # noqa: S506 - CfnLoader is a SafeLoader


# ---------------------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class ApiRoute:
    """One ``Type: Api`` event: METHOD path -> function, and who may call it."""

    function: str
    event_name: str
    path: str
    method: str  # upper case, or ANY
    #: the API's authorizer that runs first (its name in the Api's ``Auth.Authorizers``); None: no authorizer
    authorizer: str | None = None
    #: the method needs an API key of the API's usage plan (``ApiKeyRequired``)
    api_key_required: bool = False


@dataclass(frozen=True)
class ApiAuthorizer:
    """A Lambda REQUEST authorizer of the API: its function, the headers whose values are its identity (and the
    cache key of its answer) and how long API Gateway caches an answer (``ReauthorizeEvery``, 0: never)."""

    name: str
    function: str  # logical id
    identity_headers: tuple[str, ...]  # lower case
    ttl_s: int


@dataclass(frozen=True)
class GatewayResponse:
    """One of the API's ``GatewayResponses``: API Gateway's own answer of that type."""

    type: str
    status: int | None  # None: the type's own status
    headers: dict[str, str]  # static values, unquoted
    templates: dict[str, str]  # content type -> body template (``$context`` variables substituted)


@dataclass(frozen=True)
class UsagePlanSpec:
    """An ``AWS::ApiGateway::UsagePlan`` on an API stage: its throttle per API key (None: not throttled)."""

    logical_id: str
    name: str
    api: str  # the Api's logical id
    stage: str
    rate_limit: float | None
    burst_limit: int | None


@dataclass(frozen=True)
class EventRule:
    """One ``Type: EventBridgeRule`` event of a function, its pattern resolved."""

    function: str
    event_name: str
    pattern: dict[str, Any]


@dataclass(frozen=True)
class ScheduleEvent:
    """One ``Type: Schedule`` event of a function: ``rate(...)`` or ``cron(...)``, as EventBridge takes it."""

    function: str
    event_name: str
    expression: str
    rule_name: str
    enabled: bool = True
    #: the ``Input`` property: the JSON text delivered instead of the Scheduled Event
    input: str | None = None


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    runtime: str
    memory_mb: int
    timeout_s: int
    environment: dict[str, str]
    layer_dirs: tuple[Path, ...]
    api_routes: tuple[ApiRoute, ...] = ()
    event_rules: tuple[EventRule, ...] = ()
    schedules: tuple[ScheduleEvent, ...] = ()
    #: the statements of its ``Policies`` (resolved; checked to be evaluable by ``infra.iam``)
    policy_statements: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class TableSpec:
    logical_id: str
    name: str
    key_schema: list[dict[str, str]]
    attribute_definitions: list[dict[str, str]]
    billing_mode: str
    ttl_attribute: str | None = None
    global_secondary_indexes: list[dict[str, Any]] = field(default_factory=list)
    local_secondary_indexes: list[dict[str, Any]] = field(default_factory=list)
    provisioned_throughput: dict[str, int] | None = None


@dataclass(frozen=True)
class BucketSpec:
    logical_id: str
    name: str


@dataclass(frozen=True)
class SecretSpec:
    logical_id: str
    name: str
    description: str = ""


@dataclass(frozen=True)
class StateMachineSpec:
    logical_id: str
    name: str
    arn: str
    type: str
    definition_path: Path
    substitutions: dict[str, str]


# ---------------------------------------------------------------------------------------- template
_SUB_VARIABLE = re.compile(r"\$\{([^}!]+)\}")
_SUB_LITERAL = re.compile(r"\$\{!([^}]*)\}")


def _merge_globals(global_value: Any, local_value: Any) -> Any:
    """SAM's Globals semantics: maps merge recursively, lists concatenate, scalars are overridden."""
    if isinstance(global_value, dict) and isinstance(local_value, dict):
        if _is_intrinsic(global_value) or _is_intrinsic(local_value):
            return copy.deepcopy(local_value)
        merged = copy.deepcopy(global_value)
        for key, value in local_value.items():
            merged[key] = _merge_globals(merged[key], value) if key in merged else copy.deepcopy(value)
        return merged
    if isinstance(global_value, list) and isinstance(local_value, list):
        return copy.deepcopy(global_value) + copy.deepcopy(local_value)
    return copy.deepcopy(local_value)


def _is_intrinsic(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and (
        next(iter(value)) in ("Ref", "Condition") or next(iter(value)).startswith("Fn::"))


class Template:
    """template.yaml resolved for the local platform (names, ARNs, parameters, Globals)."""

    def __init__(self, path: str | Path = DEFAULT_TEMPLATE, *,
                 parameter_overrides: Mapping[str, Any] | None = None,
                 stack_name: str = "callsight-local", region: str = REGION, account_id: str = ACCOUNT_ID) -> None:
        self.path = Path(path).resolve()
        self.root = self.path.parent
        self.stack_name = stack_name
        self.region = region
        self.account_id = account_id
        raw = load_yaml(self.path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or not isinstance(raw.get("Resources"), dict):
            raise TemplateError(f"{self.path}: not a CloudFormation template (no Resources)")
        self.raw: dict[str, Any] = raw
        self.resources: dict[str, dict[str, Any]] = raw["Resources"]
        self.parameters: dict[str, str] = self._resolve_parameters(dict(parameter_overrides or {}))
        self._conditions: dict[str, Any] = raw.get("Conditions") or {}
        self._function_globals: dict[str, Any] = (raw.get("Globals") or {}).get("Function") or {}

    # ------------------------------------------------------------------ parameters
    def _resolve_parameters(self, overrides: dict[str, Any]) -> dict[str, str]:
        declared: dict[str, Any] = self.raw.get("Parameters") or {}
        unknown = sorted(set(overrides) - set(declared))
        if unknown:
            raise TemplateError(f"unknown parameter override(s) {unknown}; the template declares {sorted(declared)}")
        values: dict[str, str] = {}
        for name, declared_spec in declared.items():
            spec = declared_spec or {}
            if name in overrides:
                value = overrides[name]
            elif "Default" in spec:
                value = spec["Default"]
            elif name in LOCAL_PARAMETER_VALUES:
                value = LOCAL_PARAMETER_VALUES[name]
            else:
                raise TemplateError(f"parameter {name} has no Default: pass it in parameter_overrides")
            text = _scalar_text(value)
            allowed = spec.get("AllowedValues")
            if allowed is not None and text not in [_scalar_text(v) for v in allowed]:
                raise TemplateError(f"parameter {name}={text!r} is not one of {allowed}")
            pattern = spec.get("AllowedPattern")
            if pattern is not None and not re.fullmatch(pattern, text):
                raise TemplateError(f"parameter {name}={text!r} does not match {pattern!r}")
            if spec.get("Type") == "Number":
                try:
                    float(text)
                except ValueError:
                    raise TemplateError(f"parameter {name}={text!r} is not a number") from None
            values[name] = text
        return values

    # ------------------------------------------------------------------ resources
    def resource(self, logical_id: str) -> dict[str, Any]:
        try:
            return self.resources[logical_id]
        except KeyError:
            raise TemplateError(f"no resource {logical_id!r} in {self.path.name}") from None

    def logical_ids(self, resource_type: str) -> list[str]:
        return [lid for lid, res in self.resources.items() if res.get("Type") == resource_type]

    def properties(self, logical_id: str) -> dict[str, Any]:
        """The resource's raw Properties (Globals applied to functions), intrinsics unresolved."""
        resource = self.resource(logical_id)
        props: dict[str, Any] = resource.get("Properties") or {}
        if resource.get("Type") == SERVERLESS_FUNCTION:
            merged: dict[str, Any] = _merge_globals(self._function_globals, props)
            return merged
        return props

    def physical_name(self, logical_id: str) -> str:
        """The local name Ref returns for a named resource."""
        resource = self.resource(logical_id)
        kind = resource.get("Type")
        props = resource.get("Properties") or {}
        explicit = {
            DYNAMODB_TABLE: "TableName", S3_BUCKET: "BucketName", SECRET: "Name",
            SERVERLESS_FUNCTION: "FunctionName", SERVERLESS_STATE_MACHINE: "Name", USAGE_PLAN: "UsagePlanName",
        }.get(str(kind))
        if explicit and props.get(explicit) is not None:
            return str(self.resolve(props[explicit]))
        if kind == SERVERLESS_FUNCTION:
            return logical_id
        if kind == S3_BUCKET:
            return f"{self.stack_name}-{logical_id}".lower()
        return f"{self.stack_name}-{logical_id}"

    def arn(self, logical_id: str) -> str:
        kind = self.resource(logical_id).get("Type")
        name = self.physical_name(logical_id)
        prefix = f"arn:{PARTITION}"
        where = f"{self.region}:{self.account_id}"
        if kind == SERVERLESS_FUNCTION:
            return f"{prefix}:lambda:{where}:function:{name}"
        if kind == SERVERLESS_STATE_MACHINE:
            return f"{prefix}:states:{where}:stateMachine:{name}"
        if kind == DYNAMODB_TABLE:
            return f"{prefix}:dynamodb:{where}:table/{name}"
        if kind == S3_BUCKET:
            return f"{prefix}:s3:::{name}"
        if kind == SECRET:
            return f"{prefix}:secretsmanager:{where}:secret:{name}"
        if kind == SERVERLESS_LAYER:
            layer = self.resolve((self.resource(logical_id).get("Properties") or {}).get("LayerName", logical_id))
            return f"{prefix}:lambda:{where}:layer:{layer}:1"
        raise TemplateError(f"no local ARN for {logical_id} ({kind})")

    def ref(self, name: str) -> str:
        pseudo = {"AWS::Region": self.region, "AWS::AccountId": self.account_id, "AWS::Partition": PARTITION,
                  "AWS::StackName": self.stack_name, "AWS::URLSuffix": "amazonaws.com",
                  "AWS::StackId": f"arn:{PARTITION}:cloudformation:{self.region}:{self.account_id}:stack/"
                                  f"{self.stack_name}/local"}
        if name in pseudo:
            return pseudo[name]
        if name == "AWS::NoValue":
            return cast(str, NO_VALUE)  # resolve() drops it
        if name.endswith(".Stage") and name.removesuffix(".Stage") in self.logical_ids(SERVERLESS_API):
            return self._api_stage(name.removesuffix(".Stage"))  # SAM: !Ref MyApi.Stage is the API's stage
        if name in self.parameters:
            declared = (self.raw.get("Parameters") or {}).get(name) or {}
            if declared.get("Type") == "CommaDelimitedList":  # CloudFormation: "" is [""], as Join expects
                return cast(str, self.parameters[name].split(","))  # a list, which Fn::Join and properties take
            return self.parameters[name]
        kind = self.resource(name).get("Type")
        if kind in (SERVERLESS_STATE_MACHINE, SERVERLESS_LAYER):
            return self.arn(name)
        if kind == SERVERLESS_API:
            return f"local-{name}".lower()
        return self.physical_name(name)

    def get_att(self, logical_id: str, attribute: str) -> str:
        kind = self.resource(logical_id).get("Type")
        if attribute == "Arn":
            return self.arn(logical_id)
        if attribute == "Name" and kind in (SERVERLESS_STATE_MACHINE, DYNAMODB_TABLE, SECRET):
            return self.physical_name(logical_id)
        if attribute == "RootResourceId" and kind == SERVERLESS_API:
            return "root"
        raise TemplateError(f"!GetAtt {logical_id}.{attribute} has no local meaning ({kind})")

    # ------------------------------------------------------------------ intrinsics
    def resolve(self, value: Any) -> Any:
        """Resolve every intrinsic function inside ``value`` (recursively)."""
        if isinstance(value, list):
            return [r for r in (self.resolve(v) for v in value) if r is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if not _is_intrinsic(value):
            return {k: r for k, r in ((k, self.resolve(v)) for k, v in value.items()) if r is not NO_VALUE}
        (fn, arg), = value.items()
        if fn == "Ref":
            return self.ref(str(arg))
        if fn == "Fn::GetAtt":
            parts = arg.split(".", 1) if isinstance(arg, str) else list(arg)
            if len(parts) != 2:
                raise TemplateError(f"bad Fn::GetAtt {arg!r}")
            return self.get_att(str(self.resolve(parts[0])), str(self.resolve(parts[1])))
        if fn == "Fn::Sub":
            return self._sub(arg)
        if fn == "Fn::Join":
            delimiter, items = arg
            return str(delimiter).join(_scalar_text(v) for v in self._flat_list(self.resolve(items)))
        if fn == "Fn::Select":
            index, items = arg
            return self._flat_list(self.resolve(items))[int(self.resolve(index))]
        if fn == "Fn::Split":
            delimiter, text = arg
            return str(self.resolve(text)).split(str(delimiter))
        if fn == "Fn::If":
            condition, when_true, when_false = arg
            chosen = when_true if self.condition(str(condition)) else when_false
            return self.resolve(chosen)
        if fn in ("Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Condition"):
            return self._evaluate_condition(value)
        raise TemplateError(f"intrinsic function {fn} is not supported by the local platform")

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            raise TemplateError(f"unknown condition {name!r}")
        return self._evaluate_condition(self._conditions[name])

    def _evaluate_condition(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if not _is_intrinsic(value):
            raise TemplateError(f"not a condition: {value!r}")
        (fn, arg), = value.items()
        if fn == "Condition":
            return self.condition(str(arg))
        if fn == "Fn::Equals":
            left, right = (_scalar_text(self.resolve(v)) for v in arg)
            return left == right
        if fn == "Fn::Not":
            return not self._evaluate_condition(arg[0])
        if fn == "Fn::And":
            return all(self._evaluate_condition(v) for v in arg)
        if fn == "Fn::Or":
            return any(self._evaluate_condition(v) for v in arg)
        raise TemplateError(f"{fn} is not a condition function")

    @staticmethod
    def _flat_list(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise TemplateError(f"expected a list, got {value!r}")
        return value

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], {k: self.resolve(v) for k, v in (arg[1] or {}).items()}
        else:
            text, variables = arg, {}
        if not isinstance(text, str):
            raise TemplateError(f"Fn::Sub needs a string, got {text!r}")

        def replace(match: re.Match[str]) -> str:
            name = match.group(1).strip()
            if name in variables:
                return _scalar_text(variables[name])
            if "." in name and not name.startswith("AWS::"):
                resource, attribute = name.split(".", 1)
                return self.get_att(resource, attribute)
            return self.ref(name)

        resolved = _SUB_VARIABLE.sub(replace, text)
        return _SUB_LITERAL.sub(lambda m: "${" + m.group(1) + "}", resolved)

    # ------------------------------------------------------------------ typed views
    @property
    def functions(self) -> dict[str, FunctionSpec]:
        return {lid: self.function(lid) for lid in self.logical_ids(SERVERLESS_FUNCTION)}

    def function(self, logical_id: str) -> FunctionSpec:
        props = self.properties(logical_id)
        for required in ("CodeUri", "Handler"):
            if required not in props:
                raise TemplateError(f"function {logical_id} has no {required}")
        variables = ((props.get("Environment") or {}).get("Variables")) or {}
        environment = {str(k): _scalar_text(self.resolve(v)) for k, v in variables.items()}
        routes: list[ApiRoute] = []
        rules: list[EventRule] = []
        schedules: list[ScheduleEvent] = []
        for event_name, event in (props.get("Events") or {}).items():
            event_props = event.get("Properties") or {}
            if event.get("Type") == "Api":
                authorizer, api_key_required = self._route_auth(f"{logical_id}.{event_name}", event_props)
                routes.append(ApiRoute(function=logical_id, event_name=event_name,
                                       path=str(self.resolve(event_props["Path"])),
                                       method=str(self.resolve(event_props["Method"])).upper(),
                                       authorizer=authorizer, api_key_required=api_key_required))
            elif event.get("Type") in ("EventBridgeRule", "CloudWatchEvent"):
                rules.append(EventRule(function=logical_id, event_name=event_name,
                                       pattern=self.resolve(event_props["Pattern"])))
            elif event.get("Type") == "Schedule":
                state = str(self.resolve(event_props.get("State", "ENABLED"))).upper()
                enabled = _truthy(self.resolve(event_props.get("Enabled", True))) and state == "ENABLED"
                given_input = self.resolve(event_props.get("Input"))
                schedules.append(ScheduleEvent(
                    function=logical_id, event_name=event_name, expression=str(self.resolve(event_props["Schedule"])),
                    rule_name=str(self.resolve(event_props.get("Name", f"{self.stack_name}-{logical_id}{event_name}"))),
                    enabled=enabled, input=None if given_input is None else str(given_input)))
        return FunctionSpec(
            logical_id=logical_id,
            name=self.physical_name(logical_id),
            arn=self.arn(logical_id),
            code_dir=(self.root / str(self.resolve(props["CodeUri"]))).resolve(),
            handler=str(self.resolve(props["Handler"])),
            runtime=str(self.resolve(props.get("Runtime", "python3.12"))),
            memory_mb=int(self.resolve(props.get("MemorySize", 128))),
            timeout_s=int(self.resolve(props.get("Timeout", 3))),
            environment=environment,
            layer_dirs=tuple(self._layer_dirs(props.get("Layers") or [])),
            api_routes=tuple(routes),
            event_rules=tuple(rules),
            schedules=tuple(schedules),
            policy_statements=self._policy_statements(logical_id, props.get("Policies")),
        )

    def _policy_statements(self, logical_id: str, policies: Any) -> tuple[dict[str, Any], ...]:
        """A function's ``Policies`` as IAM statements: inline documents only (``- Statement: [...]``); a SAM policy
        template or a managed policy is an error, its grants being more than the code uses or unknown here."""
        resolved = self.resolve(policies if policies is not None else [])
        statements: list[dict[str, Any]] = []
        for entry in resolved if isinstance(resolved, list) else [resolved]:
            if not isinstance(entry, dict) or "Statement" not in entry:
                name = next(iter(entry)) if isinstance(entry, dict) and entry else entry
                raise TemplateError(f"function {logical_id}: Policies entry {name!r} is a SAM policy template or a "
                                    "managed policy; write explicit `- Statement:` entries (exact actions, narrowest "
                                    "resources)")
            given = entry["Statement"]
            statements.extend(given if isinstance(given, list) else [given])
        try:
            Policy.parse(statements)
        except PolicyError as exc:
            raise TemplateError(f"function {logical_id}: {exc}") from None
        return tuple(statements)

    def iam_policy(self, logical_id: str) -> str:
        """The policy document a function's container enforces (``infra.iam.POLICY_ENV``)."""
        fn = self.function(logical_id)
        partition_keys = {t.name: k["AttributeName"] for t in self.tables.values() for k in t.key_schema
                          if k.get("KeyType") == "HASH"}
        return policy_document(logical_id=logical_id, function_name=fn.name, statements=fn.policy_statements,
                               region=self.region, account_id=self.account_id, partition_keys=partition_keys)

    def _layer_dirs(self, layers: list[Any]) -> Iterator[Path]:
        for layer in layers:
            if isinstance(layer, dict) and set(layer) == {"Ref"} and layer["Ref"] in self.resources:
                resource = self.resource(layer["Ref"])
                if resource.get("Type") == SERVERLESS_LAYER:
                    content = (self.root / str(self.resolve(resource["Properties"]["ContentUri"]))).resolve()
                    # a built layer keeps its packages under python/; the source tree has them at the top
                    yield content / "python" if (content / "python").is_dir() else content

    @property
    def api_routes(self) -> list[ApiRoute]:
        return [route for fn in self.functions.values() for route in fn.api_routes]

    @property
    def event_rules(self) -> list[EventRule]:
        return [rule for fn in self.functions.values() for rule in fn.event_rules]

    @property
    def schedules(self) -> list[ScheduleEvent]:
        return [schedule for fn in self.functions.values() for schedule in fn.schedules]

    @property
    def api_stage(self) -> str:
        for lid in self.logical_ids(SERVERLESS_API):
            if self.properties(lid).get("StageName") is not None:
                return self._api_stage(lid)
        return self.parameters.get("Stage", "local")

    def _api_stage(self, api: str) -> str:
        stage = self.properties(api).get("StageName")
        if stage is None:
            raise TemplateError(f"{api} has no StageName")
        return str(self.resolve(stage))

    # ------------------------------------------------------------------ the API's access control
    _API_AUTH_KEYS = frozenset({"DefaultAuthorizer", "Authorizers", "ApiKeyRequired",
                                "AddDefaultAuthorizerToCorsPreflight", "AddApiKeyRequiredToCorsPreflight"})
    _AUTHORIZER_KEYS = frozenset({"FunctionArn", "FunctionPayloadType", "Identity", "FunctionInvokeRole"})

    def _api_auth(self, rest_api_id: Any) -> tuple[str | None, dict[str, Any]]:
        """The Api an event belongs to (None: SAM's implicit API, which has no Auth here) and its ``Auth``."""
        if rest_api_id is None:
            return None, {}
        if not (isinstance(rest_api_id, dict) and set(rest_api_id) == {"Ref"}
                and rest_api_id["Ref"] in self.logical_ids(SERVERLESS_API)):
            raise TemplateError(f"RestApiId {rest_api_id!r}: only !Ref to an AWS::Serverless::Api is supported")
        api = str(rest_api_id["Ref"])
        auth = self.properties(api).get("Auth") or {}
        if not isinstance(auth, dict):
            raise TemplateError(f"{api}.Auth must be a mapping")
        unsupported = sorted(set(auth) - self._API_AUTH_KEYS)
        if unsupported:
            raise TemplateError(f"{api}.Auth: {unsupported} not supported by the local platform")
        return api, auth

    def _route_auth(self, where: str, event_props: Mapping[str, Any]) -> tuple[str | None, bool]:
        """SAM's rules: an event's ``Auth.Authorizer`` (``NONE``: none) else the Api's ``DefaultAuthorizer``; its
        ``Auth.ApiKeyRequired`` else the Api's."""
        api, api_auth = self._api_auth(event_props.get("RestApiId"))
        own = self.resolve(event_props.get("Auth")) or {}
        if not isinstance(own, dict) or set(own) - {"Authorizer", "ApiKeyRequired"}:
            raise TemplateError(f"{where}: Auth {own!r} - only Authorizer and ApiKeyRequired are supported locally")
        name = own.get("Authorizer", api_auth.get("DefaultAuthorizer"))
        authorizer = None if name in (None, "NONE") else str(self.resolve(name))
        if authorizer is not None and authorizer not in (api_auth.get("Authorizers") or {}):
            raise TemplateError(f"{where}: authorizer {authorizer!r} is not one of {api}'s Auth.Authorizers "
                                "(AWS_IAM and Cognito are not emulated)")
        key_required = _truthy(self.resolve(own.get("ApiKeyRequired", api_auth.get("ApiKeyRequired", False))))
        if key_required:
            source = str(self.resolve(self.properties(str(api)).get("ApiKeySourceType", "HEADER")))
            if source != "AUTHORIZER":
                raise TemplateError(f"{where}: ApiKeyRequired with ApiKeySourceType {source}: only AUTHORIZER (the "
                                    "authorizer names the usage plan's key) is emulated")
        return authorizer, key_required

    @property
    def api_authorizers(self) -> dict[str, ApiAuthorizer]:
        """The Lambda REQUEST authorizers of the template's APIs, by name."""
        found: dict[str, ApiAuthorizer] = {}
        for api in self.logical_ids(SERVERLESS_API):
            for name, config in ((self._api_auth({"Ref": api})[1].get("Authorizers")) or {}).items():
                if name in found:
                    raise TemplateError(f"authorizer {name} is defined by two APIs")
                found[name] = self._authorizer(f"{api}.Auth.Authorizers.{name}", name, config)
        return found

    def _authorizer(self, where: str, name: str, config: Any) -> ApiAuthorizer:
        if not isinstance(config, dict) or set(config) - self._AUTHORIZER_KEYS:
            raise TemplateError(f"{where}: only Lambda REQUEST authorizers ({sorted(self._AUTHORIZER_KEYS)}) "
                                "are supported locally")
        if str(self.resolve(config.get("FunctionPayloadType", "TOKEN"))) != "REQUEST":
            raise TemplateError(f"{where}: FunctionPayloadType must be REQUEST (TOKEN is not emulated)")
        arn = config.get("FunctionArn")
        target = arn.get("Fn::GetAtt") if isinstance(arn, dict) and set(arn) == {"Fn::GetAtt"} else None
        parts = target.split(".", 1) if isinstance(target, str) else target
        if not (isinstance(parts, list) and len(parts) == 2 and parts[1] == "Arn"
                and parts[0] in self.logical_ids(SERVERLESS_FUNCTION)):
            raise TemplateError(f"{where}: FunctionArn must be !GetAtt <a function of this template>.Arn")
        identity = config.get("Identity") or {}
        if not isinstance(identity, dict) or set(identity) - {"Headers", "ReauthorizeEvery"}:
            raise TemplateError(f"{where}: Identity supports Headers and ReauthorizeEvery only locally")
        headers = self.resolve(identity.get("Headers") or [])
        if not headers or not all(isinstance(h, str) and h for h in headers):
            raise TemplateError(f"{where}: Identity.Headers must name at least one header")
        ttl = int(self.resolve(identity.get("ReauthorizeEvery", DEFAULT_AUTHORIZER_TTL_S)))
        if not 0 <= ttl <= MAX_AUTHORIZER_TTL_S:
            raise TemplateError(f"{where}: ReauthorizeEvery {ttl} is not within 0..{MAX_AUTHORIZER_TTL_S}")
        return ApiAuthorizer(name=name, function=str(parts[0]), identity_headers=tuple(h.lower() for h in headers),
                             ttl_s=ttl)

    @property
    def gateway_responses(self) -> dict[str, GatewayResponse]:
        """The APIs' ``GatewayResponses`` by type (static header values unquoted, templates checked)."""
        found: dict[str, GatewayResponse] = {}
        for api in self.logical_ids(SERVERLESS_API):
            for kind, config in (self.resolve(self.properties(api).get("GatewayResponses")) or {}).items():
                found[kind] = self._gateway_response(f"{api}.GatewayResponses.{kind}", str(kind), config)
        return found

    def _gateway_response(self, where: str, kind: str, config: Any) -> GatewayResponse:
        if kind not in GATEWAY_RESPONSE_STATUS:
            raise TemplateError(f"{where}: not an API Gateway response type")
        if not isinstance(config, dict) or set(config) - {"StatusCode", "ResponseParameters", "ResponseTemplates"}:
            raise TemplateError(f"{where}: only StatusCode, ResponseParameters and ResponseTemplates are supported")
        parameters = config.get("ResponseParameters") or {}
        if set(parameters) - {"Headers"}:
            raise TemplateError(f"{where}: ResponseParameters other than Headers are not emulated")
        headers: dict[str, str] = {}
        for header, value in (parameters.get("Headers") or {}).items():
            text = str(value)
            if len(text) < len("''") or not (text.startswith("'") and text.endswith("'")):
                raise TemplateError(f"{where}: header {header} must be a static 'quoted' value locally")
            headers[str(header)] = text[1:-1]
        templates = {str(k): str(v) for k, v in (config.get("ResponseTemplates") or {}).items()}
        for content_type, text in templates.items():
            unknown = sorted(set(_CONTEXT_VARIABLE.findall(text)) - GATEWAY_CONTEXT_VARIABLES)
            if unknown:
                raise TemplateError(f"{where}: $context variables {unknown} are not emulated")
            if content_type == "application/json":
                sample = render_gateway_template(text, {"error.message": "x", "error.messageString": '"x"'})
                try:
                    json.loads(sample)
                except json.JSONDecodeError as exc:
                    raise TemplateError(f"{where}: the application/json template is not JSON: {exc}") from None
        status = config.get("StatusCode")
        return GatewayResponse(type=kind, status=None if status is None else int(status), headers=headers,
                               templates=templates)

    @property
    def usage_plans(self) -> dict[str, UsagePlanSpec]:
        """The template's usage plans, each on one API stage, with its throttle."""
        plans: dict[str, UsagePlanSpec] = {}
        for lid in self.logical_ids(USAGE_PLAN):
            props = self.properties(lid)
            unsupported = sorted(set(props) - {"UsagePlanName", "Description", "ApiStages", "Throttle", "Tags"})
            if unsupported:
                raise TemplateError(f"usage plan {lid}: {unsupported} not emulated (a Quota, say)")
            stages = props.get("ApiStages") or []
            if len(stages) != 1:
                raise TemplateError(f"usage plan {lid}: exactly one of ApiStages is supported locally")
            api_ref = stages[0].get("ApiId")
            if not (isinstance(api_ref, dict) and set(api_ref) == {"Ref"}
                    and api_ref["Ref"] in self.logical_ids(SERVERLESS_API)):
                raise TemplateError(f"usage plan {lid}: ApiId must be !Ref to an AWS::Serverless::Api")
            throttle = self.resolve(props.get("Throttle")) or {}
            rate, burst = throttle.get("RateLimit"), throttle.get("BurstLimit")
            plans[lid] = UsagePlanSpec(
                logical_id=lid, name=self.physical_name(lid), api=str(api_ref["Ref"]),
                stage=str(self.resolve(stages[0].get("Stage"))),
                rate_limit=None if rate is None else float(rate), burst_limit=None if burst is None else int(burst))
        return plans

    @property
    def api_cors(self) -> dict[str, str] | None:
        """The preflight answer headers of the API's ``Cors`` property (SAM's quoted values unquoted)."""
        for lid in self.logical_ids(SERVERLESS_API):
            cors = self.resolve(self.properties(lid).get("Cors"))
            if cors is None:
                continue
            if not isinstance(cors, dict):
                cors = {"AllowOrigin": cors}
            self._check_open_preflight(lid)
            headers = {"AllowOrigin": "Access-Control-Allow-Origin", "AllowMethods": "Access-Control-Allow-Methods",
                       "AllowHeaders": "Access-Control-Allow-Headers", "MaxAge": "Access-Control-Max-Age",
                       "AllowCredentials": "Access-Control-Allow-Credentials"}
            return {headers[key]: str(value).strip("'") for key, value in cors.items() if key in headers}
        return None

    def _check_open_preflight(self, api: str) -> None:
        """The local gateway answers the CORS preflight without authorization; SAM puts the default authorizer and
        the API key requirement on it unless told not to (both defaults True), and a browser's preflight carries no
        key, so such a template would fail on AWS where it works locally: an error here."""
        auth = self._api_auth({"Ref": api})[1]
        given = {"DefaultAuthorizer": auth.get("DefaultAuthorizer") not in (None, "NONE"),
                 "ApiKeyRequired": _truthy(self.resolve(auth.get("ApiKeyRequired", False)))}
        for needs, flag in (("DefaultAuthorizer", "AddDefaultAuthorizerToCorsPreflight"),
                            ("ApiKeyRequired", "AddApiKeyRequiredToCorsPreflight")):
            if given[needs] and _truthy(self.resolve(auth.get(flag, True))):
                raise TemplateError(f"{api}.Auth: with Cors and {needs}, set {flag}: false (SAM's default true puts "
                                    "it on the preflight, which carries no key; the local gateway answers it open)")

    @property
    def tables(self) -> dict[str, TableSpec]:
        tables: dict[str, TableSpec] = {}
        for lid in self.logical_ids(DYNAMODB_TABLE):
            props = self.resolve(self.properties(lid))
            ttl = props.get("TimeToLiveSpecification") or {}
            tables[lid] = TableSpec(
                logical_id=lid, name=self.physical_name(lid), key_schema=props["KeySchema"],
                attribute_definitions=props["AttributeDefinitions"],
                billing_mode=props.get("BillingMode", "PROVISIONED"),
                ttl_attribute=ttl.get("AttributeName") if _truthy(ttl.get("Enabled")) else None,
                global_secondary_indexes=props.get("GlobalSecondaryIndexes") or [],
                local_secondary_indexes=props.get("LocalSecondaryIndexes") or [],
                provisioned_throughput={k: int(v) for k, v in props["ProvisionedThroughput"].items()}
                if props.get("ProvisionedThroughput") else None,
            )
        return tables

    @property
    def buckets(self) -> dict[str, BucketSpec]:
        return {lid: BucketSpec(lid, self.physical_name(lid)) for lid in self.logical_ids(S3_BUCKET)}

    @property
    def secrets(self) -> dict[str, SecretSpec]:
        return {lid: SecretSpec(lid, self.physical_name(lid),
                                str(self.resolve(self.properties(lid).get("Description", ""))))
                for lid in self.logical_ids(SECRET)}

    @property
    def state_machines(self) -> dict[str, StateMachineSpec]:
        machines: dict[str, StateMachineSpec] = {}
        for lid in self.logical_ids(SERVERLESS_STATE_MACHINE):
            props = self.properties(lid)
            if "DefinitionUri" not in props:
                raise TemplateError(f"state machine {lid}: only DefinitionUri (an ASL file) is supported locally")
            machines[lid] = StateMachineSpec(
                logical_id=lid, name=self.physical_name(lid), arn=self.arn(lid),
                type=str(self.resolve(props.get("Type", "STANDARD"))),
                definition_path=(self.root / str(self.resolve(props["DefinitionUri"]))).resolve(),
                substitutions={str(k): _scalar_text(self.resolve(v))
                               for k, v in (props.get("DefinitionSubstitutions") or {}).items()},
            )
        return machines

    @property
    def outputs(self) -> dict[str, str]:
        return {name: _scalar_text(self.resolve(out["Value"])) for name, out in (self.raw.get("Outputs") or {}).items()}

    def function_environment_union(self) -> dict[str, str]:
        """Every function's Environment.Variables in one dict; a name set to two values is an error."""
        union: dict[str, str] = {}
        origin: dict[str, str] = {}
        for lid, fn in self.functions.items():
            for name, value in fn.environment.items():
                if name in union and union[name] != value:
                    raise TemplateError(
                        f"environment variable {name} is {union[name]!r} in {origin[name]} but {value!r} in {lid}: "
                        "the local platform runs every function in one process and needs one value")
                union[name] = value
                origin.setdefault(name, lid)
        return union


def render_gateway_template(text: str, variables: Mapping[str, str]) -> str:
    """A gateway response's template with its ``$context.<name>`` variables replaced (absent ones: empty), as API
    Gateway substitutes them (it runs no other VTL in these templates)."""
    return _CONTEXT_VARIABLE.sub(lambda match: variables.get(match.group(1), ""), text)


#: ``!Ref AWS::NoValue``: the property or list item holding it is removed
NO_VALUE: Any = type("NoValue", (), {"__repr__": lambda self: "AWS::NoValue"})()


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise TemplateError(f"expected a scalar value, got {value!r}")


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


# ---------------------------------------------------------------------------------------- ASL
_ASL_VARIABLE = re.compile(r"\$\{([A-Za-z0-9_.:-]+)\}")


def render_state_machine_definition(spec: StateMachineSpec) -> str:
    """The ASL file with ``${Name}`` substituted as text, checked to be JSON with nothing left over."""
    text = spec.definition_path.read_text(encoding="utf-8")

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in spec.substitutions:
            raise TemplateError(f"{spec.definition_path.name}: ${{{name}}} has no DefinitionSubstitutions entry")
        return spec.substitutions[name]

    rendered = _ASL_VARIABLE.sub(replace, text)
    try:
        json.loads(rendered)
    except json.JSONDecodeError as exc:
        raise TemplateError(f"{spec.definition_path.name} is not JSON after substitution: {exc}") from None
    return rendered


def load_state_machine_definitions(template: Template | str | Path = DEFAULT_TEMPLATE) -> dict[str, dict[str, Any]]:
    """Each state machine's definition (substituted, parsed), by logical id."""
    if not isinstance(template, Template):
        template = Template(template)
    definitions: dict[str, dict[str, Any]] = {}
    for lid, spec in template.state_machines.items():
        definitions[lid] = json.loads(render_state_machine_definition(spec))
    return definitions
