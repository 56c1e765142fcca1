"""The Lambda handler end to end against a moto server over HTTP: S3 logs, Athena via awswrangler, CloudWatch.

moto runs no SQL, so a botocore hook on StartQueryExecution checks that the handler sent exactly the query and
execution parameters expected from sql/ and the files in S3, runs that very query on DuckDB over the same files
and injects the result into moto before the query starts."""

from __future__ import annotations

import gzip
import json
import random
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from job.adapters.duckdb_engine import DuckDBEngine
from job.core.errors import ConfigError
from job.core.files import Layout, LogFile, parse_relative_path
from job.demo.moto_server import moto_server
from job.demo.sample_logs import generate, write_log_file
from job.handler import lambda_handler
from job.query.sql_files import MINUTE_METRICS, SqlFile
from job.query.sql_values import SqlValue, Varchar, VarcharList
from tests.moto_athena import results_body
from tests.reference import Reference

HOUR = timedelta(hours=1)
LOG_BUCKET, RESULTS_BUCKET, PREFIX, WORKGROUP, NAMESPACE = "cf-logs", "cf-results", "cloudfront/", "cfm", "Test/Handler"


class FakeContext:
    aws_request_id = "test-request"

    def __init__(self, remaining_ms: int = 600_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def reference_requests(paths: list[Path]) -> Counter[datetime]:
    """Plain Python: valid requests per minute (the job's malformed rule: date/time parse and a result type)."""
    counts: Counter[datetime] = Counter()
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines):
                fields = line.rstrip("\n").split("\t")
                if number < 2 or len(fields) < 14 or fields[13] in ("", "-"):
                    continue
                try:
                    when = datetime.strptime(f"{fields[0]} {fields[1]}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                except ValueError:
                    continue
                counts[when.replace(second=0)] += 1
    return counts


class AthenaTwin:
    """Answers the handler's Athena queries with DuckDB, after checking the query and its parameters."""

    def __init__(self, endpoint: str, s3: Any, download_dir: Path) -> None:
        self.endpoint, self.s3, self.download_dir = endpoint, s3, download_dir
        self.query = SqlFile.load(MINUTE_METRICS)
        self.engine = DuckDBEngine()
        self.answered: set[str] = set()
        self.queries = 0

    def files_in_s3(self, distribution_id: str) -> list[LogFile]:
        found = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=LOG_BUCKET, Prefix=PREFIX):
            for item in page.get("Contents", ()):
                parsed = parse_relative_path(item["Key"][len(PREFIX) :])
                if parsed and parsed.distribution_id == distribution_id:
                    local = self.download_dir / item["Key"].replace("/", "_")
                    self.s3.download_file(LOG_BUCKET, item["Key"], str(local))
                    uri = f"s3://{LOG_BUCKET}/{item['Key']}"
                    found.append(LogFile(distribution_id, parsed.hour, uri, item["Size"], Layout.PLAIN, str(local)))
        return sorted(found)

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        literals: list[str] = params.get("ExecutionParameters", [])
        distribution_id = literals[0].strip("'")
        new = [f for f in self.files_in_s3(distribution_id) if f.uri not in self.answered]
        expected: dict[str, SqlValue] = {
            "distribution_id": Varchar(distribution_id),
            **{
                column: VarcharList(tuple(sorted({f"{f.hour:{form}}" for f in new})))
                for column, form in (("years", "%Y"), ("months", "%m"), ("days", "%d"), ("hours", "%H"))
            },
            "files": VarcharList(tuple(f.uri for f in new)),
        }
        rendered = self.query.render_placeholders(expected)
        assert params["QueryString"] == rendered.text, "the handler's SQL differs from sql/minute_metrics.sql"
        assert literals == rendered.literal_parameters(), "the handler's execution parameters differ"
        rows = self.engine.query(self.query, expected, new).rows
        self.answered |= {f.uri for f in new}
        self.queries += 1
        self.inject(rows)

    def inject(self, rows: list[dict[str, Any]]) -> None:
        body = results_body(rows)
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/static/athena/query-results", data=body, method="POST"
        )
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request) as answer:
            assert answer.status == 201


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[AthenaTwin, Any]]:
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "LOG_BUCKET": LOG_BUCKET,
        "LOG_PREFIX": PREFIX,
        "LOG_LAYOUT": "plain",
        "NAMESPACE": NAMESPACE,
        "ATHENA_WORKGROUP": WORKGROUP,
        "ATHENA_DATABASE": "cloudfront",
        "RESULTS_BUCKET": RESULTS_BUCKET,
        "LOOKBACK_HOURS": "26",
        # these tests name made-up distributions; the check itself: tests/test_hostile_input.py
        "CHECK_DISTRIBUTIONS": "false",
        # the twin answers through moto's one queue of injected results, in query order: one query at a time
        "QUERY_CONCURRENCY": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3")
    for bucket in (LOG_BUCKET, RESULTS_BUCKET):
        s3.create_bucket(Bucket=bucket)
    athena = boto3.client("athena")
    if WORKGROUP not in [w["Name"] for w in athena.list_work_groups()["WorkGroups"]]:
        output: Any = {"ResultConfiguration": {"OutputLocation": f"s3://{RESULTS_BUCKET}/athena-results/"}}
        athena.create_work_group(Name=WORKGROUP, Configuration=output)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    twin = AthenaTwin(endpoint, s3, downloads)
    real_session = boto3.session.Session

    def session_with_twin(*args: Any, **kwargs: Any) -> boto3.Session:
        session = real_session(*args, **kwargs)
        session.events.register("before-parameter-build.athena.StartQueryExecution", twin)
        return session

    monkeypatch.setattr(boto3.session, "Session", session_with_twin)
    yield twin, s3
    for bucket in (LOG_BUCKET, RESULTS_BUCKET):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", ()):
                s3.delete_object(Bucket=bucket, Key=item["Key"])


def upload(s3: Any, root: Path) -> list[Path]:
    paths = sorted(p for p in root.rglob("*.gz"))
    for path in paths:
        s3.upload_file(str(path), LOG_BUCKET, PREFIX + path.relative_to(root).as_posix())
    return paths


def cloudwatch_sums(
    distribution_id: str,
    start: datetime,
    end: datetime,
    metric: str = "Requests",
    extra: tuple[tuple[str, str], ...] = (),
    stat: str = "Sum",
) -> Counter[datetime]:
    client = boto3.client("cloudwatch")
    dimensions = [{"Name": "DistributionId", "Value": distribution_id}]
    dimensions += [{"Name": name, "Value": value} for name, value in extra]
    query: Any = {
        "Id": "r",
        "MetricStat": {
            "Metric": {"Namespace": NAMESPACE, "MetricName": metric, "Dimensions": dimensions},
            "Period": 60,
            "Stat": stat,
        },
    }
    sums: Counter[datetime] = Counter()
    for page in client.get_paginator("get_metric_data").paginate(
        MetricDataQueries=[query], StartTime=start, EndTime=end
    ):
        for result in page["MetricDataResults"]:
            for stamp, value in zip(result["Timestamps"], result["Values"], strict=True):
                sums[stamp.astimezone(UTC)] += int(value)
    return sums


def test_handler_publishes_each_file_once(aws: tuple[AthenaTwin, Any], tmp_path: Path) -> None:
    twin, s3 = aws
    now = datetime.now(UTC).replace(minute=5, second=0, microsecond=0)
    first = now.replace(minute=0) - timedelta(hours=3)
    root = tmp_path / "logs"
    generate(root, ["E1HANDLER", "E2HANDLER"], first, hours=2, lines_per_hour=600, files_per_hour=2)
    paths = upload(s3, root)
    event = {"scheduled_time": now.strftime("%Y-%m-%dT%H:%M:%SZ")}

    summary = lambda_handler(event, FakeContext())
    assert summary["status"] == "ok"
    assert summary["files_processed"] == len(paths)
    assert twin.queries == 2  # one query per distribution, each over exactly its new files

    window = (first - timedelta(hours=1), now + timedelta(hours=1))
    for distribution_id in ("E1HANDLER", "E2HANDLER"):
        expected = reference_requests([p for p in paths if distribution_id in p.name])
        assert cloudwatch_sums(distribution_id, *window) == expected

    again = lambda_handler(event, FakeContext())  # a retried or duplicated event
    assert again["files_new"] == 0 and again["requests"] == 0
    assert twin.queries == 2

    late = write_log_file(root, "E1HANDLER", first, 137, random.Random(3), suffix="late")
    upload(s3, root)
    recent = lambda_handler(event, FakeContext())  # this hour's full listing is done: the recent hours only
    assert recent["listing"] == "recent" and recent["files_new"] == 0
    next_hour = {"scheduled_time": (now + HOUR).strftime("%Y-%m-%dT%H:%M:%SZ")}
    late_run = lambda_handler(next_hour, FakeContext())  # the next hour's first run lists the whole look-back
    assert late_run["listing"] == "full" and late_run["files_processed"] == 1
    assert lambda_handler(next_hour, FakeContext())["listing"] == "recent"
    e1_paths = [p for p in paths if "E1HANDLER" in p.name] + [late.path]
    assert cloudwatch_sums("E1HANDLER", *window) == reference_requests(e1_paths)


def at(moment: datetime) -> dict[str, str]:
    """A scheduled event at `moment`."""
    return {"scheduled_time": moment.strftime("%Y-%m-%dT%H:%M:%SZ")}


def test_a_late_file_is_published_once_by_the_next_full_listing(
    aws: tuple[AthenaTwin, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    twin, s3 = aws
    now = datetime.now(UTC).replace(minute=5, second=0, microsecond=0)
    root = tmp_path / "logs"
    generate(root, ["E1LATE"], now.replace(minute=0) - HOUR, hours=1, lines_per_hour=50, files_per_hour=1)
    upload(s3, root)
    first = lambda_handler(at(now), FakeContext())
    assert first["listing"] == "full" and first["files_processed"] == 1
    assert lambda_handler(at(now + timedelta(minutes=5)), FakeContext())["listing"] == "recent"

    late_hour = now.replace(minute=0) - 20 * HOUR  # delivered 20 h after its hour, after the recent-only run
    late = write_log_file(root, "E1LATE", late_hour, 91, random.Random(5), suffix="late")
    upload(s3, root)
    recent = lambda_handler(at(now + timedelta(minutes=10)), FakeContext())
    assert recent["listing"] == "recent" and recent["files_new"] == 0  # outside the recent hours

    from job.runner import Job

    def failing(*_: Any, **__: Any) -> None:
        raise RuntimeError("injected: the query failed")

    next_hour = now + HOUR
    with monkeypatch.context() as patch:
        patch.setattr(Job, "_process", failing)
        with pytest.raises(RuntimeError):
            lambda_handler(at(next_hour), FakeContext())  # the full listing found the file, then failed
    retried = lambda_handler(at(next_hour + timedelta(minutes=5)), FakeContext())
    assert retried["listing"] == "full", "a failed run leaves the full listing due"
    assert retried["files_processed"] == 1
    assert lambda_handler(at(next_hour + timedelta(minutes=10)), FakeContext())["listing"] == "recent"
    again = lambda_handler(at(next_hour + 2 * HOUR), FakeContext())  # the hour after: full again, nothing new
    assert again["listing"] == "full" and again["files_new"] == 0
    window = (late_hour - HOUR, late_hour + 2 * HOUR)
    assert cloudwatch_sums("E1LATE", *window) == reference_requests([late.path])
    assert twin.queries == 2  # the first run's file and the late one, each queried once


def test_handler_stops_before_the_timeout(aws: tuple[AthenaTwin, Any], tmp_path: Path) -> None:
    twin, s3 = aws
    now = datetime.now(UTC).replace(minute=5, second=0, microsecond=0)
    root = tmp_path / "logs"
    generate(root, ["E3HANDLER"], now.replace(minute=0) - timedelta(hours=2), hours=1, lines_per_hour=50)
    upload(s3, root)
    event = {"scheduled_time": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
    summary = lambda_handler(event, FakeContext(remaining_ms=10_000))
    assert summary["status"] == "stopped-early" and summary["files_processed"] == 0 and twin.queries == 0
    assert lambda_handler(event, FakeContext())["files_processed"] == summary["files_left"]


def test_handler_rejects_bad_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_BUCKET", LOG_BUCKET)
    monkeypatch.setenv("DISTRIBUTIONS", "E1OK,e2'; DROP")
    with pytest.raises(Exception, match="distribution id"):
        lambda_handler({}, FakeContext())


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DISTRIBUTIONS", "E1OK,e2'; DROP", 'environment variable DISTRIBUTIONS: distribution id "e2\'; DROP"'),
        ("NAMESPACE", "AWS/CloudFront", "environment variable NAMESPACE: namespace 'AWS/CloudFront'"),
        ("RESULT_TYPES", "Hit,Mi ss", "environment variable RESULT_TYPES: result types"),
        ("LOG_LAYOUT", "flat", "environment variable LOG_LAYOUT='flat': expected one of 'plain', 'hive'"),
        ("LOOKBACK_HOURS", "-3", "environment variable LOOKBACK_HOURS='-3': expected a positive number"),
    ],
)
def test_handler_errors_name_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    """The core's messages are neutral; the handler names the variable an operator sets, never a CLI flag."""
    for name in ("LOG_BUCKET", "ATHENA_WORKGROUP", "ATHENA_DATABASE", "RESULTS_BUCKET"):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as error:
        lambda_handler({}, FakeContext())
    assert str(error.value).startswith(expected), str(error.value)
    assert "--" not in str(error.value)


def test_handler_default_lookback_covers_cloudfronts_delivery_delay() -> None:
    from job.core.limits import MAX_LOG_DELIVERY_DELAY
    from job.handler import DEFAULT_LOOKBACK, HandlerConfig

    config = HandlerConfig.from_env({"LOG_BUCKET": "b", "ATHENA_WORKGROUP": "w", "ATHENA_DATABASE": "d",
                                     "RESULTS_BUCKET": "r"})  # fmt: skip
    assert config.lookback_hours == DEFAULT_LOOKBACK.total_seconds() / 3600 == 26
    assert DEFAULT_LOOKBACK > MAX_LOG_DELIVERY_DELAY


def _log_lines(text: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    for line in lines:  # what a Lambda user expects of every line
        assert {"level", "timestamp", "message", "cold_start", "function_request_id", "service"} <= set(line), line
        datetime.strptime(line["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
    return lines


def test_handler_logs_json_lines_with_level_request_id_and_one_summary(
    aws: tuple[AthenaTwin, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, s3 = aws
    now = datetime.now(UTC).replace(minute=5, second=0, microsecond=0)
    root = tmp_path / "logs"
    generate(root, ["E4HANDLER"], now.replace(minute=0) - timedelta(hours=2), hours=1, lines_per_hour=40)
    paths = upload(s3, root)
    event = json.loads((Path(__file__).parents[1] / "events" / "schedule.json").read_text())
    event["scheduled_time"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    capsys.readouterr()

    monkeypatch.setenv("LOG_LEVEL", "INFO")
    summary = lambda_handler(event, FakeContext())
    lines = _log_lines(capsys.readouterr().out)
    finished = [line for line in lines if line["message"] == "run finished"]
    assert len(finished) == 1 and finished[0]["level"] == "INFO"
    assert finished[0]["files_processed"] == summary["files_processed"] == len(paths)
    assert {line["function_request_id"] for line in lines} == {"test-request"}
    assert lines[-1] is finished[0]

    monkeypatch.setenv("LOG_LEVEL", "WARNING")  # honoured: the INFO lines, the summary included, are gone
    assert lambda_handler(event, FakeContext())["files_new"] == 0
    assert capsys.readouterr().out == ""


def test_handler_logs_an_error_line_and_warns_of_a_bad_log_level(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LOG_BUCKET", raising=False)
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    capsys.readouterr()
    with pytest.raises(ConfigError):
        lambda_handler({}, FakeContext())
    lines = _log_lines(capsys.readouterr().out)
    assert [line["level"] for line in lines] == ["WARNING", "ERROR"]
    assert "LOG_LEVEL 'LOUD': expected one of DEBUG, INFO, WARNING, ERROR" in lines[0]["message"]
    assert "LOG_BUCKET" in lines[1]["error"]


def test_handler_logs_cold_start_on_the_first_invocation_only() -> None:
    """A fresh interpreter is a fresh execution environment: cold_start is true once, then false."""
    import subprocess
    import sys

    script = (
        "from job.handler import lambda_handler\n"
        "class C: aws_request_id = 'r-1'\n"
        "for _ in range(2):\n"
        "    try: lambda_handler({}, C())\n"
        "    except Exception: pass\n"
    )
    env = {"PATH": "/usr/bin:/bin", "LOG_LEVEL": "INFO"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).parents[1])  # fmt: skip
    lines = _log_lines(done.stdout)
    assert [(line["cold_start"], line["function_request_id"]) for line in lines] == [(True, "r-1"), (False, "r-1")]


@pytest.mark.parametrize("remaining_ms", [60_000, 900_000])
def test_handler_leases_the_s3_ledger_for_its_own_timeout_plus_a_margin(
    monkeypatch: pytest.MonkeyPatch, remaining_ms: int
) -> None:
    import job.handler as handler_module
    from job.adapters.s3_ledger import LEASE_MARGIN

    seen: list[Any] = []

    class Stop(Exception):
        pass

    def capture(settings: Any, **_: Any) -> Any:
        seen.append(settings)
        raise Stop

    for name, value in {"LOG_BUCKET": LOG_BUCKET, "ATHENA_WORKGROUP": WORKGROUP, "ATHENA_DATABASE": "d",
                        "RESULTS_BUCKET": RESULTS_BUCKET}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(handler_module, "build_job", capture)
    with pytest.raises(Stop):
        lambda_handler({}, FakeContext(remaining_ms))
    (settings,) = seen
    assert settings.lease == timedelta(milliseconds=remaining_ms) + LEASE_MARGIN
    assert settings.state.startswith("s3://")


def test_handler_publishes_the_metric_groups_through_athena(
    aws: tuple[AthenaTwin, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every metric group, read back from CloudWatch after the Athena path (CSV results through awswrangler),
    equals the plain-Python reference: status classes, bytes and edge locations exactly (the cap applied), the
    time to first byte's sample counts exactly; no batch percentiles when their group is off."""
    twin, s3 = aws
    monkeypatch.setenv("METRIC_GROUPS", "core,status,bytes,ttfb,edge")
    monkeypatch.setenv("EDGE_LOCATION_CAP", "3")
    now = datetime.now(UTC).replace(minute=5, second=0, microsecond=0)
    first = now.replace(minute=0) - timedelta(hours=2)
    root = tmp_path / "logs"
    distribution_id = "E3HANDLERGROUPS"
    generate(root, [distribution_id], first, hours=1, lines_per_hour=900, files_per_hour=1, seed=21)
    paths = upload(s3, root)
    summary = lambda_handler({"scheduled_time": now.strftime("%Y-%m-%dT%H:%M:%SZ")}, FakeContext())
    assert summary["status"] == "ok" and twin.queries == 1

    reference = Reference()
    for path in paths:
        reference.add_file(distribution_id, path)
    window = (first - timedelta(hours=1), now + timedelta(hours=1))
    status = reference.requests_by_status_class(distribution_id)
    assert {"0xx", "2xx", "3xx", "4xx", "5xx"} <= set(status)
    for status_class, per_minute in status.items():
        got = cloudwatch_sums(distribution_id, *window, extra=(("StatusClass", status_class),))
        assert got == Counter(per_minute), status_class
    assert cloudwatch_sums(distribution_id, *window, "BytesDownloaded") == Counter(
        reference.bytes_downloaded(distribution_id)
    )
    edges = reference.requests_by_edge(distribution_id, 3)
    assert len(edges) == 4 and "Other" in edges  # six edge locations in the data: three by name, the rest Other
    for edge, per_minute in edges.items():
        assert cloudwatch_sums(distribution_id, *window, extra=(("EdgeLocation", edge),)) == Counter(per_minute)
    ttfb = reference.ttfb_values(distribution_id)
    got_counts = cloudwatch_sums(distribution_id, *window, "TimeToFirstByte", stat="SampleCount")
    assert got_counts == Counter({m: len(v) for m, v in ttfb.items()})
    assert cloudwatch_sums(distribution_id, *window, "TimeTakenP99", stat="SampleCount") == Counter()


@pytest.mark.parametrize(("value", "accepted"), [(None, False), ("false", False), ("true", True)])
def test_handler_accepts_a_changed_query_only_when_told(
    monkeypatch: pytest.MonkeyPatch, value: str | None, accepted: bool
) -> None:
    import job.handler as handler_module

    seen: list[Any] = []

    class Stop(Exception):
        pass

    def capture(settings: Any, **_: Any) -> Any:
        seen.append(settings)
        raise Stop

    for name, given in {"LOG_BUCKET": LOG_BUCKET, "ATHENA_WORKGROUP": WORKGROUP, "ATHENA_DATABASE": "d",
                        "RESULTS_BUCKET": RESULTS_BUCKET}.items():  # fmt: skip
        monkeypatch.setenv(name, given)
    if value is not None:
        monkeypatch.setenv("ACCEPT_CHANGED_SQL", value)
    monkeypatch.setattr(handler_module, "build_job", capture)
    with pytest.raises(Stop):
        lambda_handler({}, FakeContext())
    assert seen[0].accept_changed_sql is accepted
