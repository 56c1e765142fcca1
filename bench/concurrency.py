"""Issue 13's target: one scheduled run over 100 distributions behind an Athena that takes 3-5 s a query.

    python -m bench.concurrency                  100 distributions at 8 queries at once, 10 at 1 (x10: before)
    python -m bench.concurrency --write-docs     the same, and rewrites its block in docs/BENCHMARKS.md

The Lambda handler itself (job.handler.lambda_handler, QUERY_CONCURRENCY from the environment) runs against a moto
server over HTTP (its own process): S3 holds the logs (2-3 small gzip files per distribution in the last two
partition hours, job.demo.sample_logs), the S3 ledger and Athena's results; CloudWatch receives the metrics;
Athena is moto's API reached through the real adapter (awswrangler). moto runs no SQL, so botocore hooks on the
handler's session (as tests/test_handler_moto.py does):

- before StartQueryExecution: check the query text and execution parameters against what sql/minute_metrics.sql
  renders for that distribution's files, and queue that distribution's result, computed beforehand by
  job.adapters.duckdb_engine.DuckDBEngine running the same query over the same files. moto hands its queued
  results to queries in the order they start, so each start holds a lock from queuing its result until moto has
  answered (the engine also starts its queries one at a time, under its own lock); after the run every query id's
  result is read back and checked to be its own distribution's;
- after GetQueryExecution: report the query RUNNING until its latency (3-5 s, seeded per distribution) has passed
  since its StartQueryExecution, as Athena would; the adapter polls once a second (athena_engine.POLL_SECONDS).

The published Requests of every distribution (moto's CloudWatch, GetMetricData) must equal the lines written.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3

from job.adapters.duckdb_engine import DuckDBEngine
from job.core.files import Layout, LogFile
from job.core.window import floor_hour
from job.demo.moto_server import moto_server
from job.demo.sample_logs import write_log_file
from job.handler import lambda_handler
from job.query.sql_files import MINUTE_METRICS, SqlFile
from job.query.sql_values import SqlValue, Varchar, VarcharList
from tests.moto_athena import results_body

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "BENCHMARKS.md"
BEGIN = "<!-- bench-concurrency:begin (written by `make bench`; edits between these markers are overwritten) -->"
END = "<!-- bench-concurrency:end -->"
LOG_BUCKET, RESULTS_BUCKET, PREFIX, WORKGROUP, NAMESPACE = "bench-logs", "bench-results", "cf/", "bench", "Bench/Q"
LATENCY_SECONDS = (3.0, 5.0)
TARGET_SECONDS = 120.0  # issue 13: one scheduled run over 100 distributions within 2 minutes
SEED = 13
CHECKED = 10  # distributions whose published Requests are read back from moto's CloudWatch


class FakeContext:
    """A Lambda context with 15 minutes left throughout (the handler stops early below its query timeout + 30 s)."""

    aws_request_id = "bench-concurrency"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@dataclass
class Expected:
    """A distribution's query as the handler must send it, and the result Athena would give (by DuckDB)."""

    text: str
    literals: list[str]
    body: bytes  # moto's /moto-api/static/athena/query-results payload
    requests: int  # the sum of its minute rows' `requests` (grouping_id 7): the distribution's valid lines


def expected_query(query: SqlFile, engine: DuckDBEngine, files: Sequence[LogFile]) -> Expected:
    params: dict[str, SqlValue] = {
        "distribution_id": Varchar(files[0].distribution_id),
        **{
            column: VarcharList(tuple(sorted({f"{f.hour:{form}}" for f in files})))
            for column, form in (("years", "%Y"), ("months", "%m"), ("days", "%d"), ("hours", "%H"))
        },
        "files": VarcharList(tuple(f.uri for f in files)),
    }
    rendered = query.render_placeholders(params)
    rows = engine.query(query, params, files).rows
    body = results_body(rows)
    requests = sum(int(row["requests"]) for row in rows if int(row["grouping_id"]) == 7)
    return Expected(rendered.text, rendered.literal_parameters(), body, requests)


@dataclass
class SlowAthena:
    """botocore hooks that answer the handler's Athena queries from `expected` and make each take 3-5 s."""

    endpoint: str
    expected: Mapping[str, Expected]  # by distribution id
    seed: int = SEED
    started: dict[str, str] = field(default_factory=dict)  # query id -> distribution id
    ready_at: dict[str, float] = field(default_factory=dict)  # query id -> time.monotonic() it is done
    latency: dict[str, float] = field(default_factory=dict)  # distribution id -> seconds
    running_at_once: Counter[int] = field(default_factory=Counter)  # queries running -> how many starts saw it
    _start: threading.Lock = field(default_factory=threading.Lock)

    def register(self, session: Any) -> None:
        events = session.events
        events.register("before-parameter-build.athena.StartQueryExecution", self.check)
        events.register("before-call.athena.StartQueryExecution", self.queue_result)
        events.register("after-call.athena.StartQueryExecution", self.started_query)
        events.register("after-call-error.athena.StartQueryExecution", self.release)
        events.register("after-call.athena.GetQueryExecution", self.still_running)

    def check(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        literals: list[str] = params.get("ExecutionParameters", [])
        distribution_id = literals[0].strip("'")
        expected = self.expected[distribution_id]
        assert params["QueryString"] == expected.text, "the handler's SQL differs from sql/minute_metrics.sql"
        assert literals == expected.literals, f"{distribution_id}: the execution parameters differ"
        context["bench_distribution"] = distribution_id

    def queue_result(self, context: dict[str, Any], **_: Any) -> None:
        if not self._start.acquire(timeout=60):
            raise RuntimeError("a StartQueryExecution held the bench's lock for 60 s")
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/static/athena/query-results",
            data=self.expected[context["bench_distribution"]].body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request) as answer:
            assert answer.status == 201

    def started_query(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        try:
            distribution_id = context["bench_distribution"]
            rng = random.Random(f"{self.seed}:{distribution_id}")
            self.latency[distribution_id] = rng.uniform(*LATENCY_SECONDS)
            now = time.monotonic()
            query_id = parsed["QueryExecutionId"]
            self.running_at_once[sum(1 for t in self.ready_at.values() if t > now) + 1] += 1
            self.started[query_id] = distribution_id
            self.ready_at[query_id] = now + self.latency[distribution_id]
        finally:
            self._start.release()

    def release(self, **_: Any) -> None:
        self._start.release()

    def still_running(self, parsed: dict[str, Any], **_: Any) -> None:
        execution = parsed.get("QueryExecution", {})
        ready = self.ready_at.get(execution.get("QueryExecutionId", ""))
        if ready is not None and time.monotonic() < ready:
            execution.setdefault("Status", {})["State"] = "RUNNING"

    def check_results(self) -> None:
        """Every query id's result, read back from moto, is its own distribution's."""
        athena = boto3.client("athena", endpoint_url=self.endpoint)
        for query_id, distribution_id in self.started.items():
            rows = []
            for page in athena.get_paginator("get_query_results").paginate(QueryExecutionId=query_id):
                rows += page["ResultSet"]["Rows"]
            want = json.loads(self.expected[distribution_id].body)["results"][0]["rows"]
            assert rows == want, f"query {query_id} of {distribution_id} got another query's result"


@dataclass(frozen=True)
class Measured:
    distributions: int
    concurrency: int
    files: int
    lines: int
    queries: int
    seconds: float
    handler_seconds: float
    mean_latency: float
    max_running: int
    listing: str
    checked: int


def _env(endpoint: str, concurrency: int) -> dict[str, str]:
    return {
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
        "CHECK_DISTRIBUTIONS": "false",  # made-up distributions (moto's CloudFront has none)
        "QUERY_CONCURRENCY": str(concurrency),
        "LOG_LEVEL": "WARNING",
    }


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _hooked_sessions(twin: SlowAthena) -> Iterator[None]:
    """Every boto3 session made meanwhile (the handler's, through job.adapters.aws) carries the twin's hooks."""
    real = boto3.session.Session

    def session_with_twin(*args: Any, **kwargs: Any) -> Any:
        made = real(*args, **kwargs)
        twin.register(made)
        return made

    boto3.session.Session = session_with_twin  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        boto3.session.Session = real  # type: ignore[misc]


def distribution_ids(count: int) -> list[str]:
    return [f"E{n:03d}BENCHCONC" for n in range(count)]


def write_logs(root: Path, distributions: Sequence[str], now: datetime) -> dict[str, list[LogFile]]:
    """2 or 3 small gzip files per distribution, in the last two partition hours before `now`'s."""
    rng = random.Random(SEED)
    hours = (floor_hour(now) - timedelta(hours=2), floor_hour(now) - timedelta(hours=1))
    files: dict[str, list[LogFile]] = {}
    for distribution_id in distributions:
        mine = []
        for n in range(rng.choice((2, 3))):
            hour = hours[n % 2]
            sample = write_log_file(root, distribution_id, hour, rng.randint(150, 450), rng, suffix=f"{n:04x}")
            key = PREFIX + sample.path.relative_to(root).as_posix()
            uri = f"s3://{LOG_BUCKET}/{key}"
            mine.append(LogFile(distribution_id, hour, uri, sample.path.stat().st_size, Layout.PLAIN, str(sample.path)))
        files[distribution_id] = sorted(mine)
    return files


def published_requests(endpoint: str, distributions: Sequence[str], start: datetime, end: datetime) -> Counter[str]:
    """The Requests published per distribution (dimension DistributionId alone), summed over the window; one
    GetMetricData request each (moto scans every datapoint it holds per query: 100 in one request take minutes)."""
    from botocore.config import Config

    config = Config(read_timeout=600, retries={"max_attempts": 1})
    cloudwatch = boto3.client("cloudwatch", endpoint_url=endpoint, config=config)
    sums: Counter[str] = Counter()
    for distribution_id in distributions:
        query: Any = {
            "Id": "r",
            "MetricStat": {
                "Metric": {
                    "Namespace": NAMESPACE,
                    "MetricName": "Requests",
                    "Dimensions": [{"Name": "DistributionId", "Value": distribution_id}],
                },
                "Period": 60,
                "Stat": "Sum",
            },
        }
        pages = cloudwatch.get_paginator("get_metric_data").paginate(
            MetricDataQueries=[query], StartTime=start, EndTime=end
        )
        for page in pages:
            for result in page["MetricDataResults"]:
                sums[distribution_id] += int(sum(result["Values"]))
    return sums


def measure(count: int, concurrency: int) -> Measured:
    """One scheduled run of the handler over `count` distributions, on a fresh moto server."""
    now = floor_hour(datetime.now(UTC)) + timedelta(minutes=7)
    distributions = distribution_ids(count)
    with tempfile.TemporaryDirectory() as tmp, moto_server() as endpoint, _environment(_env(endpoint, concurrency)):
        root = Path(tmp) / "logs"
        files = write_logs(root, distributions, now)
        query, engine = SqlFile.load(MINUTE_METRICS), DuckDBEngine()
        expected = {d: expected_query(query, engine, files[d]) for d in distributions}
        lines = {d: sum(1 for f in files[d] for _ in _lines(Path(str(f.local_path)))) for d in distributions}
        for d in distributions:
            assert expected[d].requests == lines[d], f"{d}: DuckDB counts {expected[d].requests}, wrote {lines[d]}"
        s3 = boto3.client("s3", endpoint_url=endpoint)
        for bucket in (LOG_BUCKET, RESULTS_BUCKET):
            s3.create_bucket(Bucket=bucket)
        for mine in files.values():
            for log_file in mine:
                s3.upload_file(str(log_file.local_path), LOG_BUCKET, log_file.uri.removeprefix(f"s3://{LOG_BUCKET}/"))
        output: Any = {"ResultConfiguration": {"OutputLocation": f"s3://{RESULTS_BUCKET}/athena-results/"}}
        boto3.client("athena", endpoint_url=endpoint).create_work_group(Name=WORKGROUP, Configuration=output)
        twin = SlowAthena(endpoint, expected)
        event = {"scheduled_time": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
        with _hooked_sessions(twin):
            started = time.perf_counter()
            summary = lambda_handler(event, FakeContext())
            seconds = time.perf_counter() - started
        n_files = sum(len(mine) for mine in files.values())
        assert summary["status"] == "ok", summary
        assert summary["files_processed"] == n_files, (summary["files_processed"], n_files)
        assert sorted(twin.started.values()) == sorted(distributions), "expected one query per distribution"
        twin.check_results()
        # read back from CloudWatch: at most CHECKED distributions, spread evenly (moto's GetMetricData is slow);
        # every query id's result was checked to be its own distribution's above
        checked = distributions[:: max(1, len(distributions) // CHECKED)]
        started = time.perf_counter()
        published = published_requests(endpoint, checked, now - timedelta(hours=4), now + timedelta(hours=1))
        print(f"read back {len(checked)} distributions in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        assert published == Counter({d: lines[d] for d in checked}), "the Requests published differ from the lines"
        assert summary["lines"] == sum(lines.values()), (summary["lines"], sum(lines.values()))
    return Measured(
        count, concurrency, n_files, sum(lines.values()), len(twin.started), seconds, float(summary["duration_s"]),
        sum(twin.latency.values()) / len(twin.latency), max(twin.running_at_once), str(summary["listing"]),
        len(checked),
    )  # fmt: skip


def _lines(path: Path) -> Iterator[str]:
    """The request lines of a gzip log file (sample_logs writes only valid ones), its two header lines left out."""
    import gzip

    with gzip.open(path, "rt", encoding="utf-8") as text:
        for line in text:
            if not line.startswith("#"):
                yield line


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=False, cwd=REPO)
    return done.stdout.strip()


def report(command: str, load_before: str, after: Measured, before: Measured, scale: float) -> str:
    extrapolated = before.seconds * scale
    verdict = "meets the target" if after.seconds <= TARGET_SECONDS else "misses the target"
    if after.distributions < 100:
        verdict = "— (the target is for 100)"
    rows = [
        (f"{after.concurrency} at once", after, f"{after.seconds:.1f} s", verdict),
        (f"1 at a time (before; {before.distributions} distributions)", before, f"{before.seconds:.1f} s", "—"),
    ]
    lines = [
        f"Command: `{command}`; commit {_git('rev-parse', '--short', 'HEAD') or '?'}; {os.cpu_count()} cores "
        f"(nproc), load average {load_before} before, {'{:.2f} {:.2f} {:.2f}'.format(*os.getloadavg())} after; "
        f"{datetime.now(UTC):%Y-%m-%d}.",
        "",
        f"One scheduled run of the Lambda handler (job.handler.lambda_handler, S3 ledger, CloudWatch) against moto "
        f"over HTTP, each distribution with 2-3 new small gzip files in the last two partition hours; Athena through "
        f"the real adapter (awswrangler), every query held RUNNING for {LATENCY_SECONDS[0]:.0f}-"
        f"{LATENCY_SECONDS[1]:.0f} s (seeded per distribution) and answered with its own distribution's result, "
        "computed by DuckDB from the same SQL and files (bench/concurrency.py). Checked after each run: every "
        "query id's result, read back from moto, is its own distribution's; the handler's lines equal the lines "
        "written; the Requests read back from moto's CloudWatch equal the lines written for "
        f"{after.checked} of the {after.distributions} distributions (spread evenly; moto's GetMetricData is slow) "
        f"and {before.checked} of the {before.distributions}. Target (issue 13): 100 distributions within 2 "
        f"minutes (≤ {TARGET_SECONDS:.0f} s).",
        "",
        "| queries | distributions | files | lines | Athena queries | mean latency | most running at once | "
        "listing | wall time | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for label, m, wall, mark in rows:
        lines.append(
            f"| {label} | {m.distributions} | {m.files} | {m.lines:,} | {m.queries} | {m.mean_latency:.1f} s | "
            f"{m.max_running} | {m.listing} | {wall} | {mark} |"
        )
    lines += [
        "",
        f"Before, one query at a time, extrapolated to {after.distributions} distributions: {before.seconds:.1f} s × "
        f"{scale:g} = {extrapolated:.0f} s; {after.concurrency} at once: {after.seconds:.1f} s "
        f"({extrapolated / after.seconds:.1f}× faster). Simulated, unlike Athena: the latency is a fixed draw per "
        "query (seen done at the adapter's next poll, up to 1 s later), not queueing against the account's "
        "active-DML quota; no S3 scan: results come from moto's queue. moto (S3, the S3 ledger, CloudWatch's "
        "PutMetricData) is one process on the same cores, and its time counts in the wall time.",
    ]
    return "\n".join(lines)


def write_docs(section: str) -> None:
    text = DOCS.read_text(encoding="utf-8")
    if END not in text:
        text = text.rstrip("\n") + f"\n\n## Query concurrency\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOCS.write_text(f"{head}{BEGIN}\n{section}\n{END}{tail}", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.concurrency", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--distributions", type=int, default=100, help="distributions of the concurrent run")
    parser.add_argument("--concurrency", type=int, default=8, help="QUERY_CONCURRENCY of the concurrent run")
    parser.add_argument("--before-distributions", type=int, default=10, help="distributions of the run at 1")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the block in docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    command = ".venv/bin/python -m bench.concurrency " + " ".join(argv if argv is not None else sys.argv[1:])
    load_before = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    after = measure(args.distributions, args.concurrency)
    print(f"{args.concurrency} at once, {args.distributions} distributions: {after.seconds:.1f} s", file=sys.stderr)
    before = measure(args.before_distributions, 1)
    print(f"1 at a time, {args.before_distributions} distributions: {before.seconds:.1f} s", file=sys.stderr)
    section = report(command.strip(), load_before, after, before, args.distributions / args.before_distributions)
    print(section)
    if args.write_docs:
        write_docs(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
