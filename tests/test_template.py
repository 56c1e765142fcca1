"""The deployment template, offline: cfn-lint, SAM's transform, least-privilege IAM, the Glue table against the DDL,
the build target, and the optional legacy log mover."""

from __future__ import annotations

import base64
import copy
import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
from botocore.exceptions import ClientError

from job.core.files import Layout, LogFormat, parse_relative_path
from job.core.metrics import DEFAULT_EDGE_LOCATION_CAP, DEFAULT_METRIC_GROUPS, DEFAULT_NAMESPACE
from job.handler import HandlerConfig
from job.legacy_mover import MoverConfig, Outcome, lambda_handler, move_one, object_refs, partitioned_key
from job.query.ddl import LOG_RELATION, NORMALISING_VIEW, V2_TABLE, TableSpec, ddl_name, table_spec, v2_table
from job.query.sql_files import TABLE_DDL, SqlFile

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yml"
CFN_LINT = Path(sys.executable).with_name("cfn-lint")
SAM_CLI = ROOT / ".venv-sam" / "bin" / "sam"

PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "cfm",
    "AWS::URLSuffix": "amazonaws.com",
}
# The values the template resolves to "{LogicalId}" placeholders (the handler reads them as plain strings).
HANDLER_BASE_ENV = {"LOG_BUCKET": "my-logs", "ATHENA_WORKGROUP": "wg", "ATHENA_DATABASE": "db", "RESULTS_BUCKET": "r"}
# What the handler reads (the contract with job/handler.py).
HANDLER_ENV = {
    "ACCEPT_CHANGED_SQL",
    "METRIC_GROUPS",
    "EDGE_LOCATION_CAP",
    "LOG_BUCKET",
    "LOG_PREFIX",
    "LOG_LAYOUT",
    "LOG_FORMAT",
    "DISTRIBUTIONS",
    "NAMESPACE",
    "ATHENA_WORKGROUP",
    "ATHENA_DATABASE",
    "ATHENA_TABLE",
    "RESULTS_BUCKET",
    "RESULTS_PREFIX",
    "LEDGER_PREFIX",
    "LOOKBACK_HOURS",
    "QUERY_TIMEOUT_SECONDS",
    "FILES_PER_QUERY",
    "QUERY_CONCURRENCY",
    "LOG_LEVEL",
}
BASE = {"LogBucketName": "my-logs", "LogPrefix": "cf/"}
WORKGROUP_ARN = "arn:aws:athena:us-east-1:123456789012:workgroup/{AthenaWorkGroup}"
GLUE_ARNS = {
    "arn:aws:glue:us-east-1:123456789012:catalog",
    "arn:aws:glue:us-east-1:123456789012:database/{GlueDatabase}",
    "arn:aws:glue:us-east-1:123456789012:table/{GlueDatabase}/cloudfront_logs",
}
# The v2 table under the view cloudfront_logs: readable only when LogFormat is a v2 format.
GLUE_V2_TABLE_ARN = "arn:aws:glue:us-east-1:123456789012:table/{GlueDatabase}/cloudfront_logs_v2"
MIN_ATHENA_CUTOFF = 10 * 1024 * 1024


# -- loading and transforming ---------------------------------------------------------------------------------
def load_template() -> dict[str, Any]:
    """template.yml with its short-form tags (!Ref, !Sub, ...) as the long-form dicts CloudFormation sees."""
    yaml_helper = importlib.import_module("samtranslator.yaml_helper")
    parsed: dict[str, Any] = yaml_helper.yaml_parse(TEMPLATE.read_text(encoding="utf-8"))
    return parsed


class _NoManagedPolicies:
    """Stands in for samtranslator's IAM-backed loader: the template names no managed policy."""

    def load(self) -> dict[str, str]:
        return {}


@cache
def _transformed_json() -> str:
    template = load_template()
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://placeholder-bucket/code.zip"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        module = importlib.import_module("samtranslator.translator.transform")
        transformed: dict[str, Any] = module.transform(template, {}, _NoManagedPolicies())
    return json.dumps(transformed)


def transformed() -> dict[str, Any]:
    """The template after SAM's transform (a fresh copy: tests may mutate it)."""
    result: dict[str, Any] = json.loads(_transformed_json())
    return result


# -- a small evaluator for the intrinsic functions the template uses ------------------------------------------
class _NoValue:
    """AWS::NoValue: the property or list item disappears."""


NO_VALUE = _NoValue()


class Resolver:
    """Evaluates Ref, Fn::Sub, Fn::GetAtt, Fn::If, Fn::Join and the condition functions for one set of
    parameter values. A resource's Ref renders as "{Name}", an attribute as "{Name.Attr}"."""

    def __init__(self, template: Mapping[str, Any], overrides: Mapping[str, str] | None = None) -> None:
        self.template = template
        self.params: dict[str, str] = {
            name: str(spec["Default"]) for name, spec in template.get("Parameters", {}).items() if "Default" in spec
        }
        self.params.update(overrides or {})
        unknown = set(overrides or {}) - set(template.get("Parameters", {}))
        assert not unknown, f"not parameters of the template: {unknown}"
        self.params.update(PSEUDO)

    def condition(self, name: str) -> bool:
        return bool(self.value(self.template["Conditions"][name]))

    def resources(self) -> dict[str, dict[str, Any]]:
        """The resources that exist for these parameter values."""
        return {
            name: resource
            for name, resource in self.template["Resources"].items()
            if "Condition" not in resource or self.condition(resource["Condition"])
        }

    def _name(self, name: str) -> str:
        if name in self.params:
            return self.params[name]
        if "." in name:
            return "{" + name + "}"
        assert name in self.template["Resources"], f"unknown reference {name}"
        return "{" + name + "}"

    def _sub(self, text: str, variables: Mapping[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            inner = match.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in variables:
                return str(self.value(variables[inner]))
            return self._name(inner)

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.value(item) for item in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return NO_VALUE if arg == "AWS::NoValue" else self._name(arg)
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                return self._sub(text, variables)
            if key == "Fn::GetAtt":
                name, attr = arg.split(".", 1) if isinstance(arg, str) else arg
                return "{" + f"{name}.{attr}" + "}"
            if key == "Fn::If":
                return self.value(arg[1] if self.condition(arg[0]) else arg[2])
            if key == "Fn::Base64":
                return base64.b64encode(str(self.value(arg)).encode()).decode()
            if key == "Fn::Join":
                return str(arg[0]).join(str(v) for v in self.value(arg[1]))
            if key == "Fn::Split":
                return str(self.value(arg[1])).split(str(arg[0]))
            if key == "Fn::Select":
                return self.value(arg[1])[int(arg[0])]
            if key == "Fn::Equals":
                return self.value(arg[0]) == self.value(arg[1])
            if key == "Fn::Not":
                return not self.value(arg[0])
            if key == "Fn::And":
                return all(self.value(a) for a in arg)
            if key == "Fn::Or":
                return any(self.value(a) for a in arg)
            if key == "Condition":
                return self.condition(arg)
        return {k: v for k, v in ((k, self.value(v)) for k, v in node.items()) if v is not NO_VALUE}


def resolved(overrides: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """The transformed template's existing resources with every intrinsic function evaluated."""
    template = transformed()
    resolver = Resolver(template, {**BASE, **(overrides or {})})
    return {name: resolver.value(resource) for name, resource in resolver.resources().items()}


def of_type(resources: Mapping[str, dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def the_one(resources: Mapping[str, dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_type(resources, kind)
    assert len(found) == 1, f"expected one {kind}, found {sorted(found)}"
    properties: dict[str, Any] = next(iter(found.values()))["Properties"]
    return properties


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Statement:
    role: str
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    condition: dict[str, Any]


def statements(resources: Mapping[str, dict[str, Any]], role: str | None = None) -> list[Statement]:
    """Every statement of every identity policy (inline role policies and IAM policies) in the stack."""
    found: list[Statement] = []
    for name, resource in resources.items():
        documents: list[dict[str, Any]] = []
        if resource["Type"] == "AWS::IAM::Role":
            documents = [p["PolicyDocument"] for p in resource["Properties"].get("Policies", [])]
        elif resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents = [resource["Properties"]["PolicyDocument"]]
        for document in documents:
            for raw in as_list(document["Statement"]):
                assert "NotAction" not in raw and "NotResource" not in raw, f"{name}: {raw}"
                found.append(
                    Statement(
                        name,
                        raw["Effect"],
                        tuple(as_list(raw["Action"])),
                        tuple(as_list(raw["Resource"])),
                        raw.get("Condition", {}),
                    )
                )
    return [s for s in found if role is None or s.role == role]


def grants(found: list[Statement]) -> set[tuple[str, str]]:
    return {(action, resource) for s in found for action in s.actions for resource in s.resources}


PARAMETER_SETS: list[dict[str, str]] = [
    {},
    {"LogPrefix": ""},
    {"LogLayout": "hive", "Distributions": "E2EXAMPLE1ABCD,E3EXAMPLE"},
    {"EnableLegacyMover": "true", "LegacySourcePrefix": "legacy/"},
    {"EnableLegacyMover": "true", "LegacySourceBucketName": "old-logs", "LogPrefix": ""},
    {"PandasLayerArn": "arn:aws:lambda:me-central-1:593833071574:layer:AWSSDKPandas-Python312-Arm64:19"},
    {"LogFormat": "json"},
    {"LogFormat": "parquet", "LogLayout": "hive"},
    {"LogFormat": "w3c", "LogPrefix": ""},
]


# -- (1) cfn-lint, (2) SAM transform, (5) sam validate ----------------------------------------------------------
def test_cfn_lint_reports_nothing() -> None:
    run = subprocess.run([str(CFN_LINT), str(TEMPLATE)], capture_output=True, text=True, check=False, cwd=ROOT)
    assert (run.returncode, run.stdout + run.stderr) == (0, "")


def test_sam_transforms_offline_into_plain_cloudformation() -> None:
    kinds = {r["Type"] for r in transformed()["Resources"].values()}
    assert not {k for k in kinds if k.startswith("AWS::Serverless::")}
    assert {"AWS::Lambda::Function", "AWS::Scheduler::Schedule", "AWS::Lambda::EventInvokeConfig"} <= kinds


@pytest.mark.skipif(not SAM_CLI.exists(), reason="no .venv-sam: `make template-check` creates it and runs this check")
def test_sam_validate_lint_passes(tmp_path: Path) -> None:
    run = subprocess.run(
        [str(SAM_CLI), "validate", "--lint", "--region", "us-east-1", "-t", str(TEMPLATE)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={"SAM_CLI_TELEMETRY": "0", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert run.returncode == 0, run.stdout + run.stderr


# -- (3) the function, its schedule and its failure handling -------------------------------------------------------
def metrics_function(resources: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    properties: dict[str, Any] = resources["CfMetricsFunction"]["Properties"]
    return properties


def test_function_runtime_architecture_concurrency_and_handler() -> None:
    function = metrics_function(resolved())
    assert function["Runtime"] == "python3.12"
    assert function["Architectures"] == ["arm64"]
    assert function["Handler"] == "job.handler.lambda_handler"
    assert function["ReservedConcurrentExecutions"] == 1
    assert function["FunctionName"] == "cfm-metrics"
    assert int(function["Timeout"]) >= int(function["Environment"]["Variables"]["QUERY_TIMEOUT_SECONDS"]) + 60


def test_function_uses_the_managed_pandas_layer_for_its_region_or_the_given_arn() -> None:
    default = metrics_function(resolved())["Layers"]
    assert default == ["arn:aws:lambda:us-east-1:336392948345:layer:AWSSDKPandas-Python312-Arm64:20"]
    assert metrics_function(resolved({"PandasLayerVersion": "26"}))["Layers"][0].endswith("-Python312-Arm64:26")
    arn = "arn:aws:lambda:me-central-1:593833071574:layer:AWSSDKPandas-Python312-Arm64:19"
    assert metrics_function(resolved({"PandasLayerArn": arn}))["Layers"] == [arn]


def test_function_environment_is_the_handler_contract() -> None:
    variables = metrics_function(resolved())["Environment"]["Variables"]
    assert set(variables) == HANDLER_ENV
    spec = table_spec(SqlFile.load(TABLE_DDL))
    assert variables["ATHENA_TABLE"] == spec.name == "cloudfront_logs"
    assert variables["NAMESPACE"] == DEFAULT_NAMESPACE
    assert (variables["RESULTS_PREFIX"], variables["LEDGER_PREFIX"]) == ("athena-results/", "ledger/")
    assert (variables["LOOKBACK_HOURS"], variables["QUERY_TIMEOUT_SECONDS"]) == ("26", "240")
    assert (variables["LOG_BUCKET"], variables["LOG_PREFIX"], variables["LOG_LAYOUT"]) == ("my-logs", "cf/", "plain")
    assert variables["DISTRIBUTIONS"] == ""
    assert variables["ATHENA_WORKGROUP"] == "{AthenaWorkGroup}"
    assert variables["ATHENA_DATABASE"] == "{GlueDatabase}"
    assert variables["RESULTS_BUCKET"] == "{ResultsBucket}"
    assert variables["LOG_FORMAT"] == "legacy"
    # the template's default metric groups and edge cap are the handler's, and the handler reads what it sets
    config = HandlerConfig.from_env({**variables, **HANDLER_BASE_ENV})
    assert (config.metric_groups, config.edge_location_cap) == (DEFAULT_METRIC_GROUPS, DEFAULT_EDGE_LOCATION_CAP)
    other = metrics_function(resolved({"LogLayout": "hive", "Distributions": "E1,E2", "MetricNamespace": "My/NS"}))
    assert {k: other["Environment"]["Variables"][k] for k in ("LOG_LAYOUT", "DISTRIBUTIONS", "NAMESPACE")} == {
        "LOG_LAYOUT": "hive",
        "DISTRIBUTIONS": "E1,E2",
        "NAMESPACE": "My/NS",
    }


def test_async_retries_are_limited_and_failures_go_to_the_dead_letter_queue() -> None:
    resources = resolved()
    config = the_one(resources, "AWS::Lambda::EventInvokeConfig")
    assert config["FunctionName"] == "{CfMetricsFunction}"
    assert 0 <= int(config["MaximumRetryAttempts"]) <= 1
    assert 60 <= int(config["MaximumEventAgeInSeconds"]) <= 3600
    assert config["DestinationConfig"]["OnFailure"]["Destination"] == "{DeadLetterQueue.Arn}"
    assert resources["DeadLetterQueue"]["Type"] == "AWS::SQS::Queue"


def test_schedule_passes_the_scheduled_time_and_retries() -> None:
    resources = resolved()
    schedule = the_one(resources, "AWS::Scheduler::Schedule")
    assert (schedule["ScheduleExpression"], schedule["State"]) == ("rate(5 minutes)", "ENABLED")
    assert "Name" not in schedule, "a fixed schedule name collides between stacks"
    target = schedule["Target"]
    assert target["Arn"] == "{CfMetricsFunction.Arn}"
    assert json.loads(target["Input"]) == {"scheduled_time": "<aws.scheduler.scheduled-time>"}
    assert {"MaximumRetryAttempts", "MaximumEventAgeInSeconds"} <= set(target["RetryPolicy"])
    assert target["DeadLetterConfig"]["Arn"] == "{DeadLetterQueue.Arn}"
    role = target["RoleArn"].strip("{}").removesuffix(".Arn")
    assert grants(statements(resources, role)) == {
        ("lambda:InvokeFunction", "{CfMetricsFunction.Arn}"),
        ("sqs:SendMessage", "{DeadLetterQueue.Arn}"),
    }
    custom = the_one(
        resolved({"ScheduleExpression": "rate(10 minutes)", "ScheduleState": "DISABLED"}), "AWS::Scheduler::Schedule"
    )
    assert (custom["ScheduleExpression"], custom["State"]) == ("rate(10 minutes)", "DISABLED")


def test_log_group_is_the_functions_with_retention() -> None:
    resources = resolved({"LogRetentionDays": "14"})
    function = metrics_function(resources)
    group = resources["CfMetricsLogGroup"]["Properties"]
    assert group["LogGroupName"] == "/aws/lambda/" + function["FunctionName"]
    assert group["RetentionInDays"] == "14"
    assert function["LoggingConfig"]["LogGroup"] == "{CfMetricsLogGroup}"


def test_alarms_on_function_errors_and_dead_letter_queue() -> None:
    resources = resolved({"AlarmTopicArn": "arn:aws:sns:us-east-1:123456789012:ops"})
    alarms = [r["Properties"] for r in of_type(resources, "AWS::CloudWatch::Alarm").values()]
    watched = {(a["Namespace"], a["MetricName"], a["Dimensions"][0]["Value"]) for a in alarms}
    assert ("AWS/Lambda", "Errors", "{CfMetricsFunction}") in watched
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "{DeadLetterQueue.QueueName}") in watched
    assert all(a["AlarmActions"] == ["arn:aws:sns:us-east-1:123456789012:ops"] for a in alarms)
    assert all("AlarmActions" not in r["Properties"] for r in of_type(resolved(), "AWS::CloudWatch::Alarm").values())


def test_outputs_name_the_function_workgroup_results_bucket_and_where_to_look() -> None:
    template = transformed()
    resolver = Resolver(template, BASE)
    outputs = {name: resolver.value(o["Value"]) for name, o in template["Outputs"].items() if "Condition" not in o}
    assert outputs["FunctionName"] == "{CfMetricsFunction}"
    assert outputs["AthenaWorkGroupName"] == "{AthenaWorkGroup}"
    assert outputs["ResultsBucketName"] == "{ResultsBucket}"
    assert outputs["MetricsNamespace"] == DEFAULT_NAMESPACE
    assert outputs["MetricsConsoleUrl"].startswith("https://us-east-1.console.aws.amazon.com/cloudwatch/")


# -- (3) least privilege ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", PARAMETER_SETS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "-")
def test_no_wildcard_action_and_only_allows_in_identity_policies(overrides: dict[str, str]) -> None:
    resources = resolved(overrides)
    found = statements(resources)
    assert found
    for statement in found:
        assert statement.effect == "Allow", statement
        assert all("*" not in action for action in statement.actions), statement
        star = "*" in statement.resources
        # these take no resource-level permissions (IAM's service authorization reference): "*" only
        star_only = {
            "cloudwatch:PutMetricData", "cloudwatch:GetMetricData", "cloudwatch:ListMetrics",
            "cloudfront:ListDistributions",
        }  # fmt: skip
        assert not star or set(statement.actions) <= star_only, statement
    for name, role in of_type(resources, "AWS::IAM::Role").items():
        assert "ManagedPolicyArns" not in role["Properties"], name


def test_put_metric_data_only_in_the_namespace() -> None:
    found = [s for s in statements(resolved({"MetricNamespace": "My/NS"})) if "cloudwatch:PutMetricData" in s.actions]
    assert len(found) == 1
    assert found[0].actions == ("cloudwatch:PutMetricData",)
    assert found[0].condition == {"StringEquals": {"cloudwatch:namespace": "My/NS"}}
    reads = [s for s in statements(resolved()) if "cloudwatch:GetMetricData" in s.actions]
    assert [s.actions for s in reads] == [("cloudwatch:GetMetricData", "cloudwatch:ListMetrics")]


def expected_metrics_grants(log_prefix: str, log_format: str = "legacy") -> set[tuple[str, str]]:
    results_objects = {"{ResultsBucket.Arn}/athena-results/*", "{ResultsBucket.Arn}/ledger/*"}
    writes = (
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
    )
    athena = ("StartQueryExecution", "GetQueryExecution", "GetQueryResults", "StopQueryExecution", "GetWorkGroup")
    return {
        ("logs:CreateLogStream", "{CfMetricsLogGroup.Arn}"),
        ("logs:PutLogEvents", "{CfMetricsLogGroup.Arn}"),
        ("cloudwatch:PutMetricData", "*"),
        ("cloudwatch:GetMetricData", "*"),
        ("cloudwatch:ListMetrics", "*"),
        ("cloudfront:ListDistributions", "*"),  # only distributions that exist are published (issue 11)
        ("s3:GetBucketLocation", "arn:aws:s3:::my-logs"),
        ("s3:ListBucket", "arn:aws:s3:::my-logs"),
        ("s3:GetObject", f"arn:aws:s3:::my-logs/{log_prefix}*"),
        ("s3:GetBucketLocation", "{ResultsBucket.Arn}"),
        ("s3:ListBucket", "{ResultsBucket.Arn}"),
        *((action, resource) for action in writes for resource in results_objects),
        *((f"athena:{action}", WORKGROUP_ARN) for action in athena),
        *(
            (f"glue:{action}", arn)
            for action in ("GetDatabase", "GetTable", "GetPartition", "GetPartitions")
            for arn in (GLUE_ARNS if log_format == "legacy" else GLUE_ARNS | {GLUE_V2_TABLE_ARN})
        ),
        ("sqs:SendMessage", "{DeadLetterQueue.Arn}"),
    }


@pytest.mark.parametrize("log_prefix", ["cf/", "", "a/b/"])
def test_metrics_role_grants_exactly_what_the_job_needs(log_prefix: str) -> None:
    found = statements(resolved({"LogPrefix": log_prefix}), "CfMetricsRole")
    assert grants(found) == expected_metrics_grants(log_prefix)
    for statement in found:
        if "s3:ListBucket" not in statement.actions:
            continue
        prefixes = as_list(statement.condition.get("StringLike", {}).get("s3:prefix", []))
        if statement.resources == ("arn:aws:s3:::my-logs",):
            assert prefixes == ([f"{log_prefix}*"] if log_prefix else []), statement
        else:
            assert sorted(prefixes) == ["athena-results/*", "ledger/*"], statement


@pytest.mark.parametrize("log_format", [f.value for f in LogFormat])
def test_metrics_role_reads_the_v2_table_only_for_a_v2_format(log_format: str) -> None:
    found = statements(resolved({"LogFormat": log_format}), "CfMetricsRole")
    assert grants(found) == expected_metrics_grants("cf/", log_format)


def test_nothing_writes_to_the_log_bucket_except_the_optional_mover() -> None:
    writes = {"s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}
    for overrides in PARAMETER_SETS:
        for statement in statements(resolved(overrides)):
            if writes & set(statement.actions) and statement.role != "LegacyMoverRole":
                assert all(r.startswith("{ResultsBucket.Arn}/") for r in statement.resources), statement


def test_athena_and_glue_are_limited_to_the_workgroup_and_the_log_table() -> None:
    for log_format in LogFormat:
        allowed = GLUE_ARNS if log_format is LogFormat.LEGACY else GLUE_ARNS | {GLUE_V2_TABLE_ARN}
        for statement in statements(resolved({"LogFormat": log_format.value})):
            services = {action.split(":")[0] for action in statement.actions}
            if "athena" in services:
                assert services == {"athena"} and statement.resources == (WORKGROUP_ARN,), statement
            if "glue" in services:
                assert services == {"glue"} and set(statement.resources) <= allowed, statement


def test_legacy_mover_is_off_by_default_and_least_privilege_when_on() -> None:
    assert not {name for name in resolved() if name.startswith("LegacyMover")}
    resources = resolved({"EnableLegacyMover": "true", "LegacySourcePrefix": "legacy/"})
    assert grants(statements(resources, "LegacyMoverRole")) == {
        ("logs:CreateLogStream", "{LegacyMoverLogGroup.Arn}"),
        ("logs:PutLogEvents", "{LegacyMoverLogGroup.Arn}"),
        ("s3:GetObject", "arn:aws:s3:::my-logs/legacy/*"),
        ("s3:DeleteObject", "arn:aws:s3:::my-logs/legacy/*"),
        ("s3:ListBucket", "arn:aws:s3:::my-logs"),
        ("s3:PutObject", "arn:aws:s3:::my-logs/cf/*"),
    }
    listing = [s for s in statements(resources, "LegacyMoverRole") if "s3:ListBucket" in s.actions]
    assert [s.condition for s in listing] == [{"StringLike": {"s3:prefix": "legacy/*"}}]
    mover = resources["LegacyMoverFunction"]["Properties"]
    assert (mover["Handler"], mover["Runtime"], mover["Architectures"]) == (
        "job.legacy_mover.lambda_handler",
        "python3.12",
        ["arm64"],
    )
    assert mover["Environment"]["Variables"] == {
        "SOURCE_BUCKET": "my-logs",
        "SOURCE_PREFIX": "legacy/",
        "DEST_BUCKET": "my-logs",
        "DEST_PREFIX": "cf/",
        "LOG_LAYOUT": "plain",
        "LOG_LEVEL": "INFO",
    }
    rule = the_one(resources, "AWS::Events::Rule")
    assert rule["EventPattern"] == {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": ["my-logs"]}, "object": {"key": [{"prefix": "legacy/"}]}},
    }
    other = resolved({"EnableLegacyMover": "true", "LegacySourceBucketName": "old-logs"})
    assert the_one(other, "AWS::Events::Rule")["EventPattern"]["detail"] == {"bucket": {"name": ["old-logs"]}}


# -- (3) the results bucket and the workgroup ------------------------------------------------------------------------
def test_results_bucket_is_private_encrypted_tls_only_and_expires_only_athena_results() -> None:
    resources = resolved()
    bucket = resources["ResultsBucket"]["Properties"]
    assert bucket["PublicAccessBlockConfiguration"] == dict.fromkeys(
        ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"), True
    )
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    # the ledger lives here: every earlier version of its objects is kept for 30 days (docs/RELIABILITY.md)
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = bucket["LifecycleConfiguration"]["Rules"]
    (versions,) = [r for r in rules if "NoncurrentVersionExpiration" in r]
    assert versions["NoncurrentVersionExpiration"]["NoncurrentDays"] >= 30
    assert set(versions) <= {"Id", "Status", "NoncurrentVersionExpiration", "ExpiredObjectDeleteMarker"}, versions
    expiring = [r for r in rules if "ExpirationInDays" in r or "ExpirationDate" in r]
    assert [r["Prefix"] for r in expiring] == ["athena-results/", "ledger/done/"]
    for r in (r for r in rules if r is not versions):
        prefix = r.get("Prefix", r.get("Filter", {}).get("Prefix", ""))
        assert prefix and not "ledger/".startswith(prefix), f"a lifecycle rule reaches the ledger: {r}"
        assert not prefix.startswith(("ledger/files", "ledger/batches", "ledger/lease")), r
    assert resources["ResultsBucket"]["DeletionPolicy"] == "Retain"

    policy = the_one(resources, "AWS::S3::BucketPolicy")
    assert policy["Bucket"] == "{ResultsBucket}"
    (deny,) = policy["PolicyDocument"]["Statement"]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "s3:*")
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert set(deny["Resource"]) == {"{ResultsBucket.Arn}", "{ResultsBucket.Arn}/*"}


def test_workgroup_engine_v3_enforced_results_location_encryption_and_scan_cutoff() -> None:
    resources = resolved()
    workgroup = resources["AthenaWorkGroup"]["Properties"]["WorkGroupConfiguration"]
    assert workgroup["EngineVersion"]["SelectedEngineVersion"] == "Athena engine version 3"
    assert workgroup["EnforceWorkGroupConfiguration"] is True
    results = workgroup["ResultConfiguration"]
    prefix = metrics_function(resources)["Environment"]["Variables"]["RESULTS_PREFIX"]
    assert results["OutputLocation"] == "s3://{ResultsBucket}/" + prefix
    assert results["EncryptionConfiguration"] == {"EncryptionOption": "SSE_S3"}
    assert int(workgroup["BytesScannedCutoffPerQuery"]) >= MIN_ATHENA_CUTOFF
    cutoff = transformed()["Parameters"]["BytesScannedCutoffPerQuery"]
    assert int(cutoff["MinValue"]) == MIN_ATHENA_CUTOFF


# -- (4) the Glue table against sql/cloudfront_logs_table.sql -------------------------------------------------------
def glue_table_differences(table_input: Mapping[str, Any], spec: TableSpec, location: str) -> list[str]:
    """Every way the resolved TableInput differs from the parsed DDL; empty when they match exactly."""
    found: list[str] = []

    def check(what: str, got: Any, want: Any) -> None:
        if got != want:
            found.append(f"{what}: template has {got!r}, the DDL has {want!r}")

    storage = table_input["StorageDescriptor"]
    columns = storage["Columns"]
    check("columns", [c["Name"] for c in columns], list(spec.columns))
    check("column types", {c["Type"] for c in columns}, {"string"})
    keys = table_input["PartitionKeys"]
    check("partition keys", [k["Name"] for k in keys], list(spec.partition_columns))
    check("partition key types", {k["Type"] for k in keys}, {"string"})
    serde = storage["SerdeInfo"]
    check("serde", serde["SerializationLibrary"], "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe")
    check("field.delim", serde["Parameters"].get("field.delim"), spec.delimiter)
    check("serialization.format", serde["Parameters"].get("serialization.format"), spec.delimiter)
    check("location", storage["Location"], location)
    parameters = table_input["Parameters"]
    check("skip.header.line.count", parameters.get("skip.header.line.count"), str(spec.header_lines))
    wanted = {k: v for k, v in spec.properties if k.startswith("projection.") or k == "storage.location.template"}
    got = {k: v for k, v in parameters.items() if k.startswith("projection.") or k == "storage.location.template"}
    for key in sorted(set(wanted) | set(got)):
        check(key, got.get(key), wanted.get(key))
    check("table name", table_input["Name"], spec.name)
    return found


def glue_table_input(overrides: Mapping[str, str]) -> dict[str, Any]:
    table: dict[str, Any] = resolved(overrides)["CloudFrontLogsTable"]["Properties"]["TableInput"]
    return table


@pytest.mark.parametrize("layout", list(Layout))
@pytest.mark.parametrize("prefix", ["cf/", "", "a/b/"])
def test_glue_table_matches_the_ddl_for_each_layout(layout: Layout, prefix: str) -> None:
    location = f"s3://my-logs/{prefix}"
    spec = table_spec(SqlFile.load(TABLE_DDL), location, layout.athena_template(location))
    table = glue_table_input({"LogLayout": layout.value, "LogPrefix": prefix})
    assert glue_table_differences(table, spec, location) == []


def test_glue_table_template_locates_the_files_the_job_lists() -> None:
    for layout in Layout:
        template = glue_table_input({"LogLayout": layout.value})["Parameters"]["storage.location.template"]
        hour = datetime(2026, 11, 28, 7, tzinfo=UTC)
        filled = (
            template.replace("${distributionid}", "E2EXAMPLE1ABCD")
            .replace("${year}", "2026")
            .replace("${month}", "11")
            .replace("${day}", "28")
            .replace("${hour}", "07")
        )
        relative = filled.removeprefix("s3://my-logs/cf/") + "file.gz"
        parsed = parse_relative_path(relative)
        assert parsed is not None and (parsed.layout, parsed.distribution_id, parsed.hour) == (
            layout,
            "E2EXAMPLE1ABCD",
            hour,
        )


def _mutations() -> Iterator[tuple[str, Any]]:
    def rename_column(t: dict[str, Any]) -> None:
        t["StorageDescriptor"]["Columns"][18]["Name"] = "timetaken"

    def drop_column(t: dict[str, Any]) -> None:
        del t["StorageDescriptor"]["Columns"][-1]

    def swap_partition_keys(t: dict[str, Any]) -> None:
        keys = t["PartitionKeys"]
        keys[1], keys[2] = keys[2], keys[1]

    def change_projection(t: dict[str, Any]) -> None:
        t["Parameters"]["projection.hour.digits"] = "1"

    def extra_projection(t: dict[str, Any]) -> None:
        t["Parameters"]["projection.minute.type"] = "integer"

    def other_layout(t: dict[str, Any]) -> None:
        t["Parameters"]["storage.location.template"] = Layout.HIVE.athena_template("s3://my-logs/cf/")

    def header_lines(t: dict[str, Any]) -> None:
        t["Parameters"]["skip.header.line.count"] = "1"

    def delimiter(t: dict[str, Any]) -> None:
        t["StorageDescriptor"]["SerdeInfo"]["Parameters"]["field.delim"] = ","

    for mutate in (
        rename_column,
        drop_column,
        swap_partition_keys,
        change_projection,
        extra_projection,
        other_layout,
        header_lines,
        delimiter,
    ):
        yield mutate.__name__, mutate


@pytest.mark.parametrize(("name", "mutate"), list(_mutations()), ids=[n for n, _ in _mutations()])
def test_glue_table_comparison_catches_a_difference(name: str, mutate: Any) -> None:
    location = "s3://my-logs/cf/"
    spec = table_spec(SqlFile.load(TABLE_DDL), location, Layout.PLAIN.athena_template(location))
    table = copy.deepcopy(glue_table_input({}))
    assert glue_table_differences(table, spec, location) == []
    mutate(table)
    assert glue_table_differences(table, spec, location), name


# -- (4b) the v2 Glue table and the view against sql/cloudfront_logs_v2_*.sql -----------------------------------------
V2_TABLE_RESOURCES = {
    LogFormat.JSON: "CloudFrontLogsV2JsonTable",
    LogFormat.PARQUET: "CloudFrontLogsV2ParquetTable",
    LogFormat.W3C: "CloudFrontLogsV2W3cTable",
}
V2_STORAGE = {  # (input format, output format, SerDe) as Athena's CREATE TABLE sets them for each DDL
    LogFormat.JSON: (
        "org.apache.hadoop.mapred.TextInputFormat",
        "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
        "org.openx.data.jsonserde.JsonSerDe",
    ),
    LogFormat.PARQUET: (
        "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
        "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
        "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
    ),
    LogFormat.W3C: (
        "org.apache.hadoop.mapred.TextInputFormat",
        "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
        "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe",
    ),
}


def ddl_properties(log_format: LogFormat, location: str, template: str) -> tuple[dict[str, str], dict[str, str]]:
    """(TBLPROPERTIES, SERDEPROPERTIES) of a v2 DDL rendered with these values, read with sqlglot here."""
    import sqlglot
    from sqlglot import exp

    from job.query.sql_values import Varchar

    ddl = SqlFile.load(ddl_name(log_format))
    text = ddl.render_literal({"location": Varchar(location), "location_template": Varchar(template)})
    create = sqlglot.parse_one(text, read="athena")
    table: dict[str, str] = {}
    serde: dict[str, str] = {}
    for prop in create.args["properties"].expressions:
        if isinstance(prop, exp.RowFormatSerdeProperty):
            serde = {p.name: p.text("value") for p in prop.args["serde_properties"].expressions}
        elif isinstance(prop, exp.RowFormatDelimitedProperty):
            delimiter = prop.args["fields"].this.encode().decode("unicode_escape")
            serde = {"field.delim": delimiter, "serialization.format": delimiter}
        elif type(prop) is exp.Property:
            table[prop.name] = prop.text("value")
        elif isinstance(prop, exp.LocationProperty):
            table["LOCATION"] = prop.this.name
    return table, serde


def v2_glue_differences(
    table_input: Mapping[str, Any], log_format: LogFormat, location: str, template: str
) -> list[str]:
    """Every way the resolved TableInput differs from the v2 DDL; empty when they match exactly."""
    found: list[str] = []

    def check(what: str, got: Any, want: Any) -> None:
        if got != want:
            found.append(f"{what}: template has {got!r}, the DDL has {want!r}")

    table = v2_table(SqlFile.load(ddl_name(log_format)), log_format)
    properties, serde_properties = ddl_properties(log_format, location, template)
    storage = table_input["StorageDescriptor"]
    check("table name", table_input["Name"], table.name)
    check("table type", table_input["TableType"], "EXTERNAL_TABLE")
    check("columns", [c["Name"] for c in storage["Columns"]], list(table.columns))
    check("column types", {c["Type"] for c in storage["Columns"]}, {"string"})
    check("partition keys", [k["Name"] for k in table_input["PartitionKeys"]], list(table.partition_columns))
    check("partition key types", {k["Type"] for k in table_input["PartitionKeys"]}, {"string"})
    check("location", storage["Location"], properties.pop("LOCATION"))
    storage_kind = (storage["InputFormat"], storage["OutputFormat"], storage["SerdeInfo"]["SerializationLibrary"])
    check("input/output format and SerDe", storage_kind, V2_STORAGE[log_format])
    got_serde = dict(storage["SerdeInfo"].get("Parameters", {}))
    if log_format is LogFormat.PARQUET:
        got_serde.pop("serialization.format", None)  # Glue's default for Parquet, not a DDL property
    check("SerDe properties", got_serde, serde_properties)
    parameters = {k: v for k, v in table_input["Parameters"].items() if k != "EXTERNAL"}
    check("table properties", parameters, properties)
    return found


@pytest.mark.parametrize("log_format", list(V2_TABLE_RESOURCES), ids=lambda f: f.value)
@pytest.mark.parametrize("layout", list(Layout), ids=lambda layout: layout.value)
def test_v2_glue_table_matches_its_ddl(log_format: LogFormat, layout: Layout) -> None:
    location = "s3://my-logs/cf/"
    resources = resolved({"LogFormat": log_format.value, "LogLayout": layout.value})
    table = resources[V2_TABLE_RESOURCES[log_format]]["Properties"]["TableInput"]
    assert v2_glue_differences(table, log_format, location, layout.athena_template(location)) == []
    # the comparison sees a difference
    changed = copy.deepcopy(table)
    changed["StorageDescriptor"]["Columns"][3]["Name"] = "renamed"
    assert v2_glue_differences(changed, log_format, location, layout.athena_template(location))
    other = v2_glue_differences(table, log_format, location, Layout.HIVE.athena_template("s3://other/"))
    assert other


def presto_view(table_input: Mapping[str, Any]) -> dict[str, Any]:
    """The view definition Athena keeps in a Glue VIRTUAL_VIEW: base64 JSON inside '/* Presto View: ... */'."""
    match = re.fullmatch(r"/\* Presto View: (\S+) \*/", table_input["ViewOriginalText"])
    assert match, table_input["ViewOriginalText"][:80]
    definition: dict[str, Any] = json.loads(base64.b64decode(match.group(1)))
    return definition


@pytest.mark.parametrize("log_format", list(V2_TABLE_RESOURCES), ids=lambda f: f.value)
def test_view_matches_the_normalising_view_sql(log_format: LogFormat) -> None:
    import sqlglot

    resources = resolved({"LogFormat": log_format.value})
    view = resources["CloudFrontLogsView"]["Properties"]
    assert view["DatabaseName"] == "{GlueDatabase}"
    table_input = view["TableInput"]
    assert (table_input["Name"], table_input["TableType"]) == (LOG_RELATION, "VIRTUAL_VIEW")
    assert table_input["Parameters"] == {"presto_view": "true", "comment": "Presto View"}
    definition = presto_view(table_input)
    sql = sqlglot.parse_one(SqlFile.load(NORMALISING_VIEW).text, read="athena")
    stored = sqlglot.parse_one(definition["originalSql"], read="athena")
    assert stored == sql.expression, "the view in the template differs from sql/cloudfront_logs_v2_view.sql"
    assert (definition["catalog"], definition["schema"]) == ("awsdatacatalog", "{GlueDatabase}")
    names = sql.expression.named_selects
    assert definition["columns"] == [{"name": n, "type": "varchar"} for n in names]
    assert [c["Name"] for c in table_input["StorageDescriptor"]["Columns"]] == names
    assert V2_TABLE in definition["originalSql"]


@pytest.mark.parametrize("log_format", list(LogFormat), ids=lambda f: f.value)
def test_one_log_relation_per_format_and_the_function_reads_it(log_format: LogFormat) -> None:
    resources = resolved({"LogFormat": log_format.value})
    tables = {name: r["Properties"]["TableInput"]["Name"] for name, r in of_type(resources, "AWS::Glue::Table").items()}
    if log_format is LogFormat.LEGACY:
        assert tables == {"CloudFrontLogsTable": LOG_RELATION}
    else:
        assert tables == {V2_TABLE_RESOURCES[log_format]: V2_TABLE, "CloudFrontLogsView": LOG_RELATION}
    variables = metrics_function(resources)["Environment"]["Variables"]
    assert (variables["ATHENA_TABLE"], variables["LOG_FORMAT"]) == (LOG_RELATION, log_format.value)


def test_function_queries_the_database_and_table_the_template_creates() -> None:
    resources = resolved()
    assert resources["CloudFrontLogsTable"]["Properties"]["DatabaseName"] == "{GlueDatabase}"
    variables = metrics_function(resources)["Environment"]["Variables"]
    assert variables["ATHENA_DATABASE"] == "{GlueDatabase}"
    assert variables["ATHENA_TABLE"] == resources["CloudFrontLogsTable"]["Properties"]["TableInput"]["Name"]


# -- the build target `sam build` runs ----------------------------------------------------------------------------
# -- the optional legacy mover (job/legacy_mover.py) --------------------------------------------------------------
@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        (Layout.PLAIN, "cf/E2EXAMPLE1ABCD/2026/11/28/07/E2EXAMPLE1ABCD.2026-11-28-07.a1b2c3d4.gz"),
        (
            Layout.HIVE,
            "cf/DistributionId=E2EXAMPLE1ABCD/year=2026/month=11/day=28/hour=07/E2EXAMPLE1ABCD.2026-11-28-07.a1b2c3d4.gz",
        ),
    ],
)
def test_legacy_key_maps_to_the_partitioned_key(layout: Layout, expected: str) -> None:
    key = partitioned_key("legacy/E2EXAMPLE1ABCD.2026-11-28-07.a1b2c3d4.gz", "legacy/", "cf/", layout)
    assert key == expected
    parsed = parse_relative_path(key.removeprefix("cf/"))
    assert parsed is not None and parsed.layout is layout and parsed.hour == datetime(2026, 11, 28, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    "key",
    [
        "other/E2EXAMPLE1ABCD.2026-11-28-07.a1b2c3d4.gz",  # outside the source prefix
        "legacy/E2EXAMPLE1ABCD/2026/11/28/07/E2EXAMPLE1ABCD.2026-11-28-07.a1b2c3d4.gz",  # already partitioned
        "legacy/e2example1abcd.2026-11-28-07.a1b2c3d4.gz",  # not a distribution id
        "legacy/E2EXAMPLE1ABCD.2026-13-28-07.a1b2c3d4.gz",  # month 13
        "legacy/E2EXAMPLE1ABCD.2026-02-30-07.a1b2c3d4.gz",  # no such day
        "legacy/E2EXAMPLE1ABCD.2026-11-28-24.a1b2c3d4.gz",  # hour 24
        "legacy/E2EXAMPLE1ABCD.2026-11-28-07.a1b2c3d4",  # not gzip
        "legacy/E2EXAMPLE1ABCD.2026-11-28-07.gz",  # no unique id
        "legacy/notes.txt",
        "legacy/",
    ],
)
def test_keys_that_are_not_legacy_files_map_to_none(key: str) -> None:
    assert partitioned_key(key, "legacy/", "cf/", Layout.PLAIN) is None


class FakeS3:
    """Just enough of an S3 client for the mover: HEAD, conditional copy, delete."""

    def __init__(self, objects: dict[tuple[str, str], bytes]) -> None:
        self.objects = dict(objects)
        self.calls: list[str] = []

    @staticmethod
    def _etag(body: bytes) -> str:
        return f'"{len(body)}-{hash(body) & 0xFFFF:x}"'

    def head_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        self.calls.append(f"head {Key}")
        if (Bucket, Key) not in self.objects:
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
        body = self.objects[Bucket, Key]
        return {"ContentLength": len(body), "ETag": self._etag(body)}

    def copy_object(self, Bucket: str, Key: str, CopySource: dict[str, str], CopySourceIfMatch: str) -> None:
        self.calls.append(f"copy {CopySource['Key']} -> {Key}")
        source = (CopySource["Bucket"], CopySource["Key"])
        if source not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "CopyObject")
        if self._etag(self.objects[source]) != CopySourceIfMatch:
            raise ClientError({"Error": {"Code": "PreconditionFailed", "Message": "changed"}}, "CopyObject")
        self.objects[Bucket, Key] = self.objects[source]

    def delete_object(self, Bucket: str, Key: str) -> None:
        self.calls.append(f"delete {Key}")
        self.objects.pop((Bucket, Key), None)


MOVER_ENV = {
    "SOURCE_BUCKET": "my-logs",
    "SOURCE_PREFIX": "legacy/",
    "DEST_BUCKET": "my-logs",
    "DEST_PREFIX": "cf/",
    "LOG_LAYOUT": "plain",
}
LEGACY = "legacy/E2EXAMPLE1ABCD.2026-11-28-07.a1b2c3d4.gz"
MOVED = "cf/E2EXAMPLE1ABCD/2026/11/28/07/E2EXAMPLE1ABCD.2026-11-28-07.a1b2c3d4.gz"


def eventbridge_event(bucket: str, key: str) -> dict[str, Any]:
    return {
        "source": "aws.s3",
        "detail-type": "Object Created",
        "detail": {"bucket": {"name": bucket}, "object": {"key": key}},
    }


def test_mover_copies_then_deletes_and_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in MOVER_ENV.items():
        monkeypatch.setenv(name, value)
    s3 = FakeS3({("my-logs", LEGACY): b"log lines"})
    client = cast("S3Client", s3)
    assert lambda_handler(eventbridge_event("my-logs", LEGACY), None, s3=client) == {
        "moved": 1,
        "already_moved": 0,
        "ignored": 0,
    }
    assert s3.objects == {("my-logs", MOVED): b"log lines"}
    assert s3.calls == [f"head {LEGACY}", f"copy {LEGACY} -> {MOVED}", f"delete {LEGACY}"]
    # The same event again (EventBridge delivers at least once): nothing to do, nothing lost.
    again = lambda_handler(eventbridge_event("my-logs", LEGACY), None, s3=client)
    assert again == {"moved": 0, "already_moved": 1, "ignored": 0}
    assert s3.objects == {("my-logs", MOVED): b"log lines"}
    # The moved file's own "Object Created" event, and files that are no legacy log, are left alone.
    for bucket, key in [("my-logs", MOVED), ("my-logs", "legacy/readme.txt"), ("elsewhere", LEGACY)]:
        assert lambda_handler(eventbridge_event(bucket, key), None, s3=client)["ignored"] == 1
    assert s3.objects == {("my-logs", MOVED): b"log lines"}


def test_mover_treats_a_file_moved_by_a_concurrent_run_as_done() -> None:
    config = MoverConfig.from_env(MOVER_ENV)

    class Racing(FakeS3):
        def copy_object(self, Bucket: str, Key: str, CopySource: dict[str, str], CopySourceIfMatch: str) -> None:
            self.objects.pop((CopySource["Bucket"], CopySource["Key"]))  # the other run finished first
            super().copy_object(Bucket, Key, CopySource, CopySourceIfMatch)

    s3 = Racing({("my-logs", LEGACY): b"x"})
    assert move_one(cast("S3Client", s3), config, "my-logs", LEGACY).outcome is Outcome.ALREADY_MOVED


def test_mover_reads_s3_notifications_too_with_url_encoded_keys() -> None:
    event = {"Records": [{"s3": {"bucket": {"name": "my-logs"}, "object": {"key": "legacy/a+b%3D.gz"}}}]}
    assert object_refs(event) == [("my-logs", "legacy/a b=.gz")]
    assert object_refs(eventbridge_event("my-logs", LEGACY)) == [("my-logs", LEGACY)]
    assert object_refs({"detail": {}}) == []
