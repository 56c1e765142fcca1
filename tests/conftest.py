"""Shared fixtures: one local moto server for the session, dummy AWS credentials, a CloudWatch reader.

moto's GetMetricData ignores the namespace of a query that names dimensions (moto 5.2: it filters by metric name
and dimensions only), so a unique namespace per test is not enough to keep tests apart on the shared server:
each test also uses its own distribution ids (`unique_distribution`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from job.cli import main
from job.demo.moto_server import moto_server
from tests.reference import Reference

REGION = "us-east-1"
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
# The documented x-edge-result-type values; the job publishes any other one as ResultType=Other.
DOCUMENTED_TYPES = (
    "Hit", "RefreshHit", "Miss", "LimitExceeded", "CapacityExceeded", "Error", "Redirect", "LambdaExecutionError",
)  # fmt: skip
Dimensions = Sequence[tuple[str, str]]


@pytest.fixture(scope="session")
def aws_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Dummy credentials and region for the session; no shared config or profile is read. Restored at the end."""
    nowhere = tmp_path_factory.mktemp("aws-config") / "absent"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_SESSION_TOKEN", "testing")
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        patch.setenv("AWS_REGION", REGION)
        patch.setenv("AWS_CONFIG_FILE", str(nowhere))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere))
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        patch.delenv("AWS_PROFILE", raising=False)
        patch.delenv("AWS_DEFAULT_PROFILE", raising=False)
        yield


@pytest.fixture(scope="session")
def moto_endpoint(aws_environment: None) -> Iterator[str]:
    """A moto server (its own process, loopback only) for the whole session: its endpoint URL."""
    with moto_server() as url:
        yield url


def cloudwatch_client(endpoint: str) -> Any:
    return boto3.session.Session(region_name=REGION).client("cloudwatch", endpoint_url=endpoint)


@pytest.fixture
def cloudwatch(moto_endpoint: str) -> Any:
    """A boto3 CloudWatch client for the moto server."""
    return cloudwatch_client(moto_endpoint)


def _slug(text: str, limit: int) -> str:
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return re.sub(r"[^0-9A-Za-z._-]", "_", text)[:limit] + "-" + digest


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    """A CloudWatch namespace of this test alone."""
    return "Test/" + _slug(request.node.nodeid, 200)


def unique_distribution(scope: str, label: str) -> str:
    """A valid distribution id ([A-Z0-9]) unique to (scope, label): 'E' + 13 hex digits, upper case."""
    return "E" + hashlib.sha1(f"{scope}|{label}".encode()).hexdigest()[:13].upper()


def floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


@dataclass(frozen=True)
class MetricQuery:
    metric: str
    dimensions: Dimensions
    stat: str = "Sum"


class MetricReader:
    """Reads datapoints of one namespace back with GetMetricData (Period=60): {minute: value} per query."""

    # moto scans every datapoint of the range once per query and period: short ranges keep reads fast.
    CHUNK = timedelta(minutes=30)

    def __init__(self, client: Any, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def read(self, queries: Sequence[MetricQuery], start: datetime, end: datetime) -> list[dict[datetime, float]]:
        """GetMetricData for all queries over [start, end) (floored to the minute), in chunks of CHUNK."""
        start, end = floor_minute(start), floor_minute(end)
        if end <= start:
            end = start + MINUTE
        results: list[dict[datetime, float]] = [{} for _ in queries]
        while start < end:
            stop = min(end, start + self.CHUNK)
            for index, found in enumerate(self._read(queries, start, stop)):
                results[index].update(found)
            start = stop
        return results

    def _read(self, queries: Sequence[MetricQuery], start: datetime, end: datetime) -> list[dict[datetime, float]]:
        stats = [
            {
                "Id": f"q{i}",
                "MetricStat": {
                    "Metric": {
                        "Namespace": self.namespace,
                        "MetricName": q.metric,
                        "Dimensions": [{"Name": n, "Value": v} for n, v in q.dimensions],
                    },
                    "Period": 60,
                    "Stat": q.stat,
                },
                "ReturnData": True,
            }
            for i, q in enumerate(queries)
        ]
        results: list[dict[datetime, float]] = [{} for _ in queries]
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"MetricDataQueries": stats, "StartTime": start, "EndTime": end}
            if token:
                kwargs["NextToken"] = token
            answer = self.client.get_metric_data(**kwargs)
            for result in answer["MetricDataResults"]:
                index = int(result["Id"][1:])
                for when, value in zip(result["Timestamps"], result["Values"], strict=True):
                    minute = floor_minute(when.astimezone(UTC))
                    results[index][minute] = results[index].get(minute, 0.0) + float(value)
            token = answer.get("NextToken")
            if not token:
                return results

    def sums(
        self, metric: str, dimensions: Dimensions, start: datetime, end: datetime, stat: str = "Sum"
    ) -> dict[datetime, float]:
        return self.read([MetricQuery(metric, dimensions, stat)], start, end)[0]


@pytest.fixture
def metrics(cloudwatch: Any, namespace: str) -> MetricReader:
    """Reads this test's namespace back from the moto server."""
    return MetricReader(cloudwatch, namespace)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*args: str) -> CliResult:
    """job.cli.main in-process, with its stdout and stderr captured (an argparse error exits with code 2)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return CliResult(code, out.getvalue(), err.getvalue())


# The run summary the CLI prints last, e.g. "3 file(s) already published, 2 new; 1,234 lines (5 malformed) ->
# 3,456 datums in 4 PutMetricData request(s)" (the older "2 new file(s), 3 already published; ..." also parses).
_SUMMARIES = (
    re.compile(
        r"(?P<already>[\d,]+) file\(s\) already published, (?P<new>[\d,]+) new; (?P<lines>[\d,]+) lines "
        r"\((?P<malformed>[\d,]+) malformed\) -> (?P<datums>[\d,]+) datums in (?P<requests>[\d,]+) PutMetricData"
    ),
    re.compile(
        r"(?P<new>[\d,]+) new file\(s\), (?P<already>[\d,]+) already published; (?P<lines>[\d,]+) lines "
        r"\((?P<malformed>[\d,]+) malformed\) -> (?P<datums>[\d,]+) datums in (?P<requests>[\d,]+) PutMetricData"
    ),
)


def parse_summary(text: str) -> dict[str, int]:
    """The figures of the last run summary line in the CLI's output."""
    matches = [(m.start(), m) for pattern in _SUMMARIES for m in pattern.finditer(text)]
    assert matches, f"no run summary in output:\n{text}"
    last = max(matches, key=lambda item: item[0])[1]
    return {k: int(v.replace(",", "")) for k, v in last.groupdict().items()}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The datums a jsonl: sink wrote, one JSON object a line."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _minute(record: dict[str, Any]) -> datetime:
    return datetime.strptime(record["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _dims(record: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((d["Name"], d["Value"]) for d in record["Dimensions"])


def jsonl_sums(records: Sequence[dict[str, Any]], metric: str, dimensions: Dimensions) -> dict[datetime, float]:
    """Sum of Value per minute of the datums with this metric name and exactly these dimensions."""
    wanted = tuple(dimensions)
    sums: dict[datetime, float] = defaultdict(float)
    for record in records:
        if record["MetricName"] == metric and _dims(record) == wanted:
            sums[_minute(record)] += float(record["Value"])
    return dict(sums)


def jsonl_values(records: Sequence[dict[str, Any]], metric: str, dimensions: Dimensions) -> dict[datetime, list[float]]:
    """Every single Value per minute (for metrics published once per minute, such as TimeTakenP50)."""
    wanted = tuple(dimensions)
    found: dict[datetime, list[float]] = defaultdict(list)
    for record in records:
        if record["MetricName"] == metric and _dims(record) == wanted:
            found[_minute(record)].append(float(record["Value"]))
    return dict(found)


def jsonl_distributions(
    records: Sequence[dict[str, Any]], metric: str, dimensions: Dimensions
) -> dict[datetime, dict[float, float]]:
    """Values/Counts datums merged per minute, as CloudWatch merges them: {minute: {value: count}}."""
    wanted = tuple(dimensions)
    found: dict[datetime, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for record in records:
        if record["MetricName"] == metric and _dims(record) == wanted:
            values, counts = record["Values"], record["Counts"]
            assert len(values) == len(counts) <= 150, "a datum carries at most 150 values, one count each"
            for value, count in zip(values, counts, strict=True):
                found[_minute(record)][float(value)] += float(count)
    return {minute: dict(histogram) for minute, histogram in found.items()}


def as_float_map(counts: dict[datetime, int]) -> dict[datetime, float]:
    """Counts as the floats CloudWatch returns (exact: every count here is far below 2**53)."""
    return {k: float(v) for k, v in counts.items()}


def last_midnight() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def other_mapping(reference: Reference) -> dict[str, str]:
    """The job's contract: an undocumented x-edge-result-type is published as ResultType=Other."""
    seen = {t for counts in reference.minutes.values() for t in counts.by_result_type}
    return {t: (t if t in DOCUMENTED_TYPES else "Other") for t in seen}


def run_args(root: Path, endpoint: str, namespace: str, state: Path, *extra: str) -> list[str]:
    return [
        "run", "--logs", str(root), "--endpoint-url", endpoint, "--region", "us-east-1",
        "--namespace", namespace, "--state", str(state), *extra,
    ]  # fmt: skip


def assert_cloudwatch_matches(reader: MetricReader, reference: Reference, start: datetime, end: datetime) -> None:
    """Requests [DistributionId], Requests [DistributionId, ResultType] and TimeTaken SampleCount per minute."""
    mapping = other_mapping(reference)
    queries: list[MetricQuery] = []
    expected: list[dict[datetime, float]] = []
    for distribution_id in reference.distributions:
        base = (("DistributionId", distribution_id),)
        queries.append(MetricQuery("Requests", base))
        expected.append(as_float_map(reference.requests(distribution_id)))
        queries.append(MetricQuery("TimeTaken", base, "SampleCount"))
        expected.append(as_float_map(reference.time_taken_counts(distribution_id)))
        by_type = reference.requests_by_type(distribution_id, mapping)
        for result_type in sorted(set(DOCUMENTED_TYPES) | {"Other"}):
            queries.append(MetricQuery("Requests", (*base, ("ResultType", result_type))))
            expected.append(as_float_map(by_type.get(result_type, {})))
    found = reader.read(queries, start, end)
    for query, want, got in zip(queries, expected, found, strict=True):
        assert got == want, f"{query.metric} {query.stat} {dict(query.dimensions)}: CloudWatch differs"


def age_past_retry(path: Path, hours: float = 2.0) -> None:
    """Set a file's modification time `hours` back: older than the run's retry period for young unreadable files."""
    import os
    import time

    then = time.time() - hours * 3600
    os.utime(path, (then, then))


def create_distributions(client: Any, count: int) -> list[str]:
    """Create `count` CloudFront distributions (on moto) and return their ids, as ListDistributions gives them."""
    ids = []
    for number in range(count):
        config = {
            "CallerReference": f"cfmetrics-test-{number}-{datetime.now(UTC).timestamp()}",
            "Comment": "cfmetrics test",
            "Enabled": True,
            "Origins": {"Quantity": 1, "Items": [{"Id": "o", "DomainName": "origin.example.com",
                                                  "CustomOriginConfig": {"HTTPPort": 80, "HTTPSPort": 443,
                                                                         "OriginProtocolPolicy": "https-only"}}]},
            "DefaultCacheBehavior": {"TargetOriginId": "o", "ViewerProtocolPolicy": "allow-all",
                                     "MinTTL": 0, "ForwardedValues": {"QueryString": False,
                                                                      "Cookies": {"Forward": "none"}}},
        }  # fmt: skip
        ids.append(str(client.create_distribution(DistributionConfig=config)["Distribution"]["Id"]))
    return ids
