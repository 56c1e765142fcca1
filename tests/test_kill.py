"""SIGKILL at every step: the real `cfmetrics run` in a subprocess kills itself at a chosen point (see
tests/kill_runner.py), then a normal rerun must end with exactly the reference's figures.

Each case has its own distributions and namespace on the shared moto server (moto's GetMetricData ignores the
namespace of a query that names dimensions) and its own hour of data: moto answers GetMetricData in time
proportional to queries x minutes x every datapoint stored in the range, so the read-back of an interrupted request
stays fast only if the range holds that case's data alone. Requests are capped at 60 datums (--max-datums): 3
distributions x 1 hour make three batches of several requests, so "between two requests" exists in every batch.

The rerun uses --in-flight-settle 0: moto shows a datapoint as soon as PutMetricData returns.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from job.adapters.sqlite_ledger import LocalLedger
from job.core.batch import PendingBatch, Target
from job.core.window import floor_hour
from job.demo.sample_logs import generate
from job.query.sql_files import MINUTE_METRICS
from tests.conftest import (
    HOUR,
    CliResult,
    MetricReader,
    as_float_map,
    assert_cloudwatch_matches,
    cloudwatch_client,
    other_mapping,
    parse_summary,
    run_args,
    run_cli,
    unique_distribution,
)
from tests.kill_runner import JSONL_CASES, KILL_CASES, KILLED_MARK, Point, require, resolve
from tests.reference import Reference, scan_tree

REPO = Path(__file__).resolve().parent.parent
MAX_DATUMS = 60
# This module's data lives 12 days back (others use the last two days), one hour per case.
BASE_HOUR = floor_hour(datetime.now(UTC)) - timedelta(days=12)
_HOURS = itertools.count()


def case_hour() -> datetime:
    return BASE_HOUR + timedelta(hours=next(_HOURS))


# How the rerun must decide the request left in flight, by kill point (None: nothing was in flight).
VERDICTS = {
    ("mark_in_flight", "after"): "had not arrived",
    ("put", "before"): "had not arrived",
    ("put", "after"): "had arrived",
    ("mark_sent", "mid"): "had arrived",
}


def make_logs(root: Path, scope: str) -> tuple[list[str], Reference]:
    ids = [unique_distribution(scope, x) for x in "abc"]
    generate(root, ids, case_hour(), hours=1, lines_per_hour=300, seed=29, files_per_hour=3)
    return ids, scan_tree(root)


def kill_runner(*args: str, max_datums: int = MAX_DATUMS) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tests.kill_runner", "--max-datums", str(max_datums), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=REPO, env=dict(os.environ))


def assert_killed(done: subprocess.CompletedProcess[str], point: Point) -> None:
    require(done.returncode == -9, f"not killed at {point} (exit {done.returncode}):\n{done.stderr}")
    require(f"{KILLED_MARK} {point}" in done.stderr, done.stderr)


def pending(state: Path, sink_key: str, namespace: str) -> list[PendingBatch]:
    ledger = LocalLedger(state)
    try:
        return ledger.pending(Target(MINUTE_METRICS, sink_key, namespace))
    finally:
        ledger.close()


@pytest.fixture(scope="module")
def shape(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, int]:
    """(requests, batches) of an uninterrupted run over the data set, to place the kill points."""
    base = tmp_path_factory.mktemp("kill-shape")
    ids, reference = make_logs(base / "logs", "kill-shape")
    out = base / "out.jsonl"
    done = kill_runner("--", "run", "--logs", str(base / "logs"), "--sink", f"jsonl:{out}", "--state", str(base / "s"))
    assert done.returncode == 0, done.stderr
    summary = parse_summary(done.stderr)
    batches = sum(1 for line in done.stderr.splitlines() if line.split(":")[0] in ids)
    assert summary["lines"] == sum(reference.lines.values())
    assert batches == 3 and summary["requests"] >= 4 * batches  # several requests in every batch
    return summary["requests"], batches


def window(reference: Reference) -> tuple[datetime, datetime]:
    minutes = [m for _, m in reference.minutes]
    return min(minutes), max(minutes) + timedelta(minutes=1)


# `make test` runs one case of every kind of kill point; `make reliability` runs every case of KILL_CASES.
QUICK = [
    c for c in KILL_CASES
    if ":".join(c[:3]) in {
        "begin:after:last", "mark_in_flight:mid:middle", "mark_in_flight:after:first", "put:before:last",
        "put:after:middle", "mark_sent:mid:middle", "mark_sent:after:middle", "commit:before:first",
        "commit:mid:last",
    }
]  # fmt: skip


@pytest.mark.parametrize(("step", "phase", "which", "leaves"), QUICK, ids=[":".join(c[:3]) for c in QUICK])
def test_sigkill_then_rerun_is_exact_on_cloudwatch(
    moto_endpoint: str, tmp_path: Path, namespace: str, shape: tuple[int, int], step: str, phase: str, which: str,
    leaves: str,
) -> None:  # fmt: skip
    point = resolve(step, phase, which, *shape)
    root, state = tmp_path / "logs", tmp_path / "state"
    _ids, reference = make_logs(root, namespace)
    args = run_args(root, moto_endpoint, namespace, state, "--in-flight-settle", "0")
    assert_killed(kill_runner("--kill", str(point), "--", *args), point)

    sink_key = f"cloudwatch@{moto_endpoint}"
    left = pending(state, sink_key, namespace)
    verdict = VERDICTS.get((step, phase))
    if verdict is not None:
        assert [p.in_flight is not None for p in left] == [True], f"{leaves}: one request in flight"
    rerun = run_cli(*args)
    assert rerun.code == 0, rerun.err
    if verdict is not None:
        in_flight = left[0].in_flight
        assert in_flight is not None and f"request {in_flight + 1} {verdict}" in rerun.err, rerun.err
    assert ("resumed 1 interrupted batch" in rerun.err) == bool(left), rerun.err
    again = parse_summary(run_cli(*args).err)
    assert (again["new"], again["requests"]) == (0, 0)
    assert pending(state, sink_key, namespace) == []
    reader = MetricReader(cloudwatch_client(moto_endpoint), namespace)
    assert_cloudwatch_matches(reader, reference, *window(reference))


def jsonl_counts(path: Path) -> tuple[Counter[tuple[str, str, datetime]], int]:
    """Requests per (distribution, result type or '', minute), TimeTaken samples (result type '#'), Requests by
    StatusClass ('status:5xx'), TimeToFirstByte samples ('ttfb#') and BytesDownloaded ('bytes') from the jsonl
    file, skipping a line that is not whole JSON; and the number of such lines."""
    counts: Counter[tuple[str, str, datetime]] = Counter()
    torn = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue  # a blank line holds no datum (the readers of the jsonl export skip them)
        try:
            record: dict[str, Any] = json.loads(line)
        except ValueError:
            torn += 1
            continue
        dims = {d["Name"]: d["Value"] for d in record["Dimensions"]}
        minute = datetime.strptime(record["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if record["MetricName"] == "Requests" and "StatusClass" in dims:
            counts[(dims["DistributionId"], "status:" + dims["StatusClass"], minute)] += int(record["Value"])
        elif record["MetricName"] == "Requests":
            counts[(dims["DistributionId"], dims.get("ResultType", ""), minute)] += int(record["Value"])
        elif record["MetricName"] == "TimeTaken":
            counts[(dims["DistributionId"], "#", minute)] += int(sum(record["Counts"]))
        elif record["MetricName"] == "TimeToFirstByte":
            counts[(dims["DistributionId"], "ttfb#", minute)] += int(sum(record["Counts"]))
        elif record["MetricName"] == "BytesDownloaded":
            counts[(dims["DistributionId"], "bytes", minute)] += int(record["Value"])
    return counts, torn


def reference_counts(reference: Reference) -> Counter[tuple[str, str, datetime]]:
    mapping = other_mapping(reference)
    expected: Counter[tuple[str, str, datetime]] = Counter()
    for d in reference.distributions:
        for minute, n in as_float_map(reference.requests(d)).items():
            expected[(d, "", minute)] += int(n)
        for result_type, per_minute in reference.requests_by_type(d, mapping).items():
            for minute, n in per_minute.items():
                expected[(d, result_type, minute)] += n
        for minute, n in reference.time_taken_counts(d).items():
            expected[(d, "#", minute)] += n
        for status_class, per_minute in reference.requests_by_status_class(d).items():
            for minute, n in per_minute.items():
                expected[(d, "status:" + status_class, minute)] += n
        for minute, values in reference.ttfb_values(d).items():
            expected[(d, "ttfb#", minute)] += len(values)
        for minute, n in reference.bytes_downloaded(d).items():
            expected[(d, "bytes", minute)] += n
    return expected


def jsonl_case(tmp_path: Path, point: Point) -> tuple[list[str], Reference, Path, Path, CliResult]:
    root, state, out = tmp_path / "logs", tmp_path / "state", tmp_path / "out.jsonl"
    ids, reference = make_logs(root, str(tmp_path))
    args = ["run", "--logs", str(root), "--sink", f"jsonl:{out}", "--state", str(state)]
    assert_killed(kill_runner("--kill", str(point), "--", *args), point)
    return ids, reference, out, state, run_cli(*args)


ON_JSONL = [
    *(c for c in KILL_CASES if ":".join(c[:3]) in ("put:after:middle", "mark_in_flight:after:middle")),
    *(c for c in JSONL_CASES if c[1] == "first-line"),
]


@pytest.mark.parametrize(("step", "phase", "which", "leaves"), ON_JSONL, ids=[":".join(c[:3]) for c in ON_JSONL])
def test_sigkill_then_rerun_is_exact_on_jsonl(
    tmp_path: Path, shape: tuple[int, int], step: str, phase: str, which: str, leaves: str
) -> None:
    point = resolve(step, phase, which, *shape)
    _ids, reference, out, _state, rerun = jsonl_case(tmp_path, point)
    assert rerun.code == 0, rerun.err
    assert "resumed 1 interrupted batch" in rerun.err
    counts, torn = jsonl_counts(out)
    assert torn == 0, "the rerun drops a line cut short before it appends"
    assert counts == reference_counts(reference), leaves


TORN_MID_REQUEST = [c for c in JSONL_CASES if c[1] != "first-line"]


def rerun_args(out: Path, state: Path, tmp_path: Path) -> list[str]:
    return ["run", "--logs", str(tmp_path / "logs"), "--sink", f"jsonl:{out}", "--state", str(state)]


@pytest.mark.parametrize(("step", "phase", "which", "leaves"), TORN_MID_REQUEST, ids=[c[1] for c in TORN_MID_REQUEST])
def test_jsonl_request_torn_after_whole_lines_then_rerun_is_exact(
    tmp_path: Path, shape: tuple[int, int], step: str, phase: str, which: str, leaves: str
) -> None:
    """Some datums of the request in flight are in the file and its receipt (the request's last line) is not: the
    rerun drops that tail before it appends, finds no receipt, and sends the request again: exact."""
    point = resolve(step, phase, which, *shape)
    _ids, reference, out, _state, rerun = jsonl_case(tmp_path, point)
    assert rerun.code == 0, rerun.err
    assert "had not arrived" in rerun.err, rerun.err
    counts, torn = jsonl_counts(out)
    assert (counts, torn) == (reference_counts(reference), 0)


# --- the S3 ledger: kill after the n-th S3 write (lease, journal, progress, partition objects, deletes) -------


@pytest.fixture(scope="module")
def buckets(moto_endpoint: str) -> tuple[Any, str, str]:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    logs, state = "kill-logs", "kill-state"
    for bucket in (logs, state):
        s3.create_bucket(Bucket=bucket)
    return s3, logs, state


def expire_lease(s3: Any, bucket: str, prefix: str) -> bool:
    """What 20 minutes do to the lease a killed run left: its expiry passes. True if there was one."""
    key = f"{prefix}lease.json"
    try:
        body = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return False
    body["expires"] = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(body).encode())
    return True


# Two batches of one request each, one partition hour: the run's S3 writes are 1 the lease, 2 the ledger's id, 3 the
# fingerprint, 4 the metrics' owners, then per batch the journal, its progress, the lease renewed, in flight, sent,
# the lease renewed, the partition object, the done copy, the progress deleted, the journal deleted (5-14 and
# 15-24), and 25 the lease released.
S3_WRITES = {
    1: ("put", "lease.json"), 2: ("put", "ledger-id.json"), 4: ("put", "/owners/"), 5: ("put", ".batch.json"),
    7: ("put", "lease.json"), 8: ("put", ".progress.json"), 9: ("put", ".progress.json"), 10: ("put", "lease.json"),
    11: ("put", "/files/"), 12: ("put", ".batch.json"), 13: ("delete", ".progress.json"),
    14: ("delete", ".batch.json"), 18: ("put", ".progress.json"), 25: ("delete", "lease.json"),
}  # fmt: skip
LAST_S3_WRITE = 25


@pytest.mark.parametrize("n", [8, 9, 11])  # `make reliability` kills after every S3 write, 1 to 25
def test_sigkill_with_the_s3_ledger_then_rerun_is_exact(
    moto_endpoint: str, buckets: tuple[Any, str, str], tmp_path: Path, namespace: str, n: int
) -> None:
    s3, logs_bucket, state_bucket = buckets
    root = tmp_path / "logs"
    ids = [unique_distribution(namespace, x) for x in "ab"]
    hour = case_hour()
    generate(root, ids, hour, hours=1, lines_per_hour=60, seed=31)
    reference = scan_tree(root)
    prefix = f"{namespace.split('/')[-1]}/"
    for path in sorted(root.rglob("*.gz")):
        s3.upload_file(str(path), logs_bucket, prefix + path.relative_to(root).as_posix())
    args = [
        "run", "--logs", f"s3://{logs_bucket}/{prefix}", "--state", f"s3://{state_bucket}/{prefix}ledger/",
        "--s3-endpoint-url", moto_endpoint, "--engine", "duckdb", "--from", f"{hour:%Y-%m-%dT%H}",
        "--to", f"{hour:%Y-%m-%dT%H}", "--endpoint-url", moto_endpoint, "--region", "us-east-1",
        "--namespace", namespace, "--in-flight-settle", "0",
    ]  # fmt: skip
    point = Point("s3write", "after", n)
    killed = kill_runner("--kill", str(point), "--", *args, max_datums=1000)
    assert_killed(killed, point)
    operation, key_end = S3_WRITES[n]
    detail = killed.stderr.split(f"{KILLED_MARK} {point} ")[1].split()
    assert detail[0] == operation and key_end in detail[1], detail
    stale = expire_lease(s3, state_bucket, f"{prefix}ledger/")
    assert stale == (n < LAST_S3_WRITE), "a killed run leaves its lease behind until it expires"
    rerun = run_cli(*args)
    assert rerun.code == 0, rerun.err
    again = parse_summary(run_cli(*args).err)
    assert (again["new"], again["requests"]) == (0, 0)
    reader = MetricReader(cloudwatch_client(moto_endpoint), namespace)
    assert_cloudwatch_matches(reader, reference, hour, hour + HOUR + timedelta(minutes=1))
