"""Hostile input (issue 11) never blocks a run and never runs up the bill: lines CloudWatch refuses, file names with
glob characters, files that change, young unreadable files, gzip bombs, made-up distributions, many unknown result
types, queries too long for Athena.

Expected figures come from a plain-Python reading of the same lines (tests/reference.py's reader), with the range
rule restated here from CloudFront's and CloudWatch's documentation, never taken from job/.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from job.core.timerange import check_rows, cloudwatch_takes, line_range
from job.demo.sample_logs import HEADER, generate
from job.handler import lambda_handler
from job.query.sql_files import query_parameters
from tests import test_handler_moto as harness
from tests.conftest import (
    MetricReader,
    age_past_retry,
    create_distributions,
    jsonl_sums,
    parse_summary,
    read_jsonl,
    run_args,
    run_cli,
    unique_distribution,
)
from tests.reference import classify, read_lines, scan_tree

DIST = "E11HOSTILE01"
HOUR = datetime(2026, 11, 27, 22, tzinfo=UTC)
PARTITION = f"{DIST}/2026/11/27/22"
FIELDS = "\tIAD89\t100\t1.2.3.4\tGET\th\t/\t200\t-\tua\t-\t-\t{type}\tid\th\thttps\t10\t0.120"


def line(when: datetime, result_type: str = "Hit") -> str:
    return f"{when:%Y-%m-%d}\t{when:%H:%M:%S}" + FIELDS.format(type=result_type)


def write_log(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress((HEADER + "".join(f"{x}\n" for x in lines)).encode()))
    return path


# The rule restated from the documents (not imported): CloudFront files a request under the hour it occurred and
# stamps it when the response finished (at most a day later, the project's bound on time-taken), an hour of slack
# before; CloudWatch takes timestamps from two weeks ago to two hours ahead.
BEFORE, AFTER = timedelta(hours=1), timedelta(hours=1) + timedelta(days=1)


def expected_counts(root: Path, now: datetime | None) -> tuple[Counter[datetime], Counter[datetime], int]:
    """(requests per minute, out-of-range lines per partition hour, lines) over every .gz file under `root`."""
    requests: Counter[datetime] = Counter()
    out: Counter[datetime] = Counter()
    total = 0
    for path in sorted(root.rglob("*.gz")):
        year, month, day, hour = path.relative_to(root).parts[1:5]
        partition = datetime(int(year), int(month), int(day), int(hour), tzinfo=UTC)
        for raw in read_lines_or_none(path):
            total += 1
            minute = classify(raw.split(b"\t")).minute
            if minute is None:
                continue
            in_slack = partition - BEFORE <= minute < partition + AFTER
            taken = now is None or now - timedelta(days=14) <= minute <= now + timedelta(hours=2)
            if in_slack and taken:
                requests[minute] += 1
            else:
                out[partition] += 1
    return requests, out, total


def jsonl_run(tmp_path: Path, root: Path | str, *extra: str) -> tuple[int, str, list[dict[str, Any]]]:
    out = tmp_path / "out.jsonl"
    result = run_cli("run", "--logs", str(root), "--sink", f"jsonl:{out}", "--state", str(tmp_path / "state"), *extra)
    # the publish receipts (one per request, job/core/receipts.py) are the job's bookkeeping, not figures
    return result.code, result.err, [r for r in read_jsonl(out) if r["MetricName"] != "PublishReceipt"]


def status(tmp_path: Path, root: Path) -> str:
    result = run_cli("status", "--logs", str(root), "--sink", f"jsonl:{tmp_path / 'out.jsonl'}", "--state",
                     str(tmp_path / "state"))  # fmt: skip
    assert result.code == 0, result.err
    return result.out


BASE = (("DistributionId", DIST),)


# -- the rule itself, on values ---------------------------------------------------------------------------------
def test_line_range_and_cloudwatch_limits_as_documented() -> None:
    assert line_range(HOUR) == (HOUR - timedelta(hours=1), HOUR + timedelta(hours=25))
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert cloudwatch_takes(now - timedelta(days=14), now) and not cloudwatch_takes(
        now - timedelta(days=14, minutes=1), now
    )
    assert cloudwatch_takes(now + timedelta(hours=2), now) and not cloudwatch_takes(
        now + timedelta(hours=2, minutes=1), now
    )
    rows: list[dict[str, Any]] = [
        {"grouping_id": 7, "minute": HOUR + timedelta(minutes=5), "requests": 4},
        {"grouping_id": 3, "minute": HOUR + timedelta(minutes=5), "requests": 4, "result_type": "Hit"},
        {"grouping_id": 7, "minute": datetime(2099, 1, 1, tzinfo=UTC), "requests": 2},
        {"grouping_id": 3, "minute": datetime(2099, 1, 1, tzinfo=UTC), "requests": 2, "result_type": "Hit"},
        {"grouping_id": 7, "minute": None, "requests": 1},  # malformed lines: kept, counted by their file
        {"grouping_id": 14, "minute": None, "file": "f", "requests": 7, "valid_requests": 6},
    ]
    checked = check_rows(rows, [HOUR], None)
    assert checked.out_of_range_lines == 2
    assert checked.out_of_range_minutes == (datetime(2099, 1, 1, tzinfo=UTC),)
    assert [r for r in rows if r not in checked.rows] == rows[2:4]


# -- lines out of range -------------------------------------------------------------------------------------------
def test_out_of_range_lines_are_skipped_and_counted_for_jsonl(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    generate(root, [DIST], HOUR, hours=2, lines_per_hour=300, files_per_hour=3)
    write_log(root / PARTITION / f"{DIST}.2026-11-27-22.hostile.gz", [
        line(HOUR - timedelta(days=20)),          # weeks before its partition
        line(datetime(2099, 1, 1, 0, 0, tzinfo=UTC)),
        line(HOUR - timedelta(hours=2)),          # before the hour of slack
        line(HOUR + timedelta(hours=3)),          # within the slack: published (jsonl takes any age)
        line(HOUR + timedelta(minutes=10)),
    ])  # fmt: skip
    requests, out, total = expected_counts(root, None)
    assert out == {HOUR: 3}
    code, err, records = jsonl_run(tmp_path, root)
    assert code == 0, err
    assert jsonl_sums(records, "Requests", BASE) == {m: float(n) for m, n in requests.items()}
    assert jsonl_sums(records, "OutOfRangeLines", BASE) == {HOUR: 3.0}
    assert "MalformedLines" not in {r["MetricName"] for r in records}
    summary = parse_summary(err)
    assert summary["lines"] == total and summary["malformed"] == 0
    assert "3 line(s) out of range" in err and f"OUT OF RANGE {(root / PARTITION).resolve()}" in err
    again_code, again_err, again = jsonl_run(tmp_path, root)
    assert again_code == 0 and "0 new" in again_err and len(again) == len(records)
    rows = [x.split() for x in status(tmp_path, root).splitlines() if x.strip().startswith("2026-11-27T22")]
    assert rows and rows[0][4] == "3"  # hour, files, lines, malformed, out of range


def test_lines_cloudwatch_refuses_are_counted_and_the_run_goes_on(
    tmp_path: Path, moto_endpoint: str, namespace: str, metrics: MetricReader
) -> None:
    distribution_id = unique_distribution("hostile", "cloudwatch-range")
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    root = tmp_path / "logs"
    generate(root, [distribution_id], hour, hours=1, lines_per_hour=200, files_per_hour=2)
    write_log(root / f"{distribution_id}/{hour:%Y/%m/%d/%H}" / f"{distribution_id}.{hour:%Y-%m-%d-%H}.x.gz", [
        line(now + timedelta(hours=3)),      # within CloudFront's slack, beyond CloudWatch's two hours ahead
        line(now - timedelta(days=20)),      # beyond both
        line(hour + timedelta(minutes=30)),
    ])  # fmt: skip
    requests, out, total = expected_counts(root, now)
    assert out == {hour: 2}
    result = run_cli(*run_args(root, moto_endpoint, namespace, tmp_path / "state", "--in-flight-settle", "0"))
    assert result.code == 0, result.err
    assert parse_summary(result.err)["lines"] == total and "2 line(s) out of range" in result.err
    base = (("DistributionId", distribution_id),)
    span = (hour - timedelta(hours=1), now + timedelta(hours=2))
    assert metrics.sums("Requests", base, *span) == {m: float(n) for m, n in requests.items()}
    assert metrics.sums("OutOfRangeLines", base, *span) == {hour: 2.0}


# -- file names ---------------------------------------------------------------------------------------------------
HOSTILE_NAMES = ["*", "a*b", "q?x", "[1]", "[ab]", "{a,b}", "a,b", "quote'", 'dq"', "sp ace", "pct%41%",
                 "dollar$HOME", "ünïcødé", "new\nline", "back\\slash", "tab\tbed"]  # fmt: skip


def hostile_tree(root: Path, names: list[str] = HOSTILE_NAMES) -> None:
    """Files named with every character class, each with its own number of lines, beside plain ones."""
    generate(root, [DIST], HOUR, hours=1, lines_per_hour=120, files_per_hour=2)
    for number, name in enumerate(names):
        stamps = [HOUR + timedelta(minutes=number, seconds=s) for s in range(number + 1)]
        write_log(root / PARTITION / f"{DIST}.2026-11-27-22.{name}.gz", [line(t) for t in stamps])
    (root / PARTITION / "1").write_bytes(b"")  # what the glob [1] would match


def test_every_file_is_read_exactly_once_whatever_its_name(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    hostile_tree(root)
    reference = scan_tree(root)
    code, err, records = jsonl_run(tmp_path, root)
    assert code == 0, err
    assert jsonl_sums(records, "Requests", BASE) == {m: float(n) for m, n in reference.requests(DIST).items()}
    assert parse_summary(err)["lines"] == sum(reference.lines.values())


def test_every_s3_object_is_read_exactly_once_whatever_its_name(tmp_path: Path, moto_endpoint: str) -> None:
    root = tmp_path / "logs"
    # moto's PutObject takes no control character in a key (S3 itself does): those names are tested locally only
    hostile_tree(root, [n for n in HOSTILE_NAMES if n.isprintable()])
    reference = scan_tree(root)
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    bucket = "cfmetrics-hostile-names"
    s3.create_bucket(Bucket=bucket)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, "logs/" + path.relative_to(root).as_posix())
    code, err, records = jsonl_run(
        tmp_path, f"s3://{bucket}/logs/", "--engine", "duckdb", "--s3-endpoint-url", moto_endpoint,
        "--region", "us-east-1",
    )  # fmt: skip
    assert code == 0, err
    assert jsonl_sums(records, "Requests", BASE) == {m: float(n) for m, n in reference.requests(DIST).items()}
    assert parse_summary(err)["lines"] == sum(reference.lines.values())


# -- files that change --------------------------------------------------------------------------------------------
def test_a_recorded_file_that_changes_is_reported_never_published_twice(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    generate(root, [DIST], HOUR, hours=1, lines_per_hour=200, files_per_hour=2)
    code, err, records = jsonl_run(tmp_path, root)
    assert code == 0, err
    changed = sorted((root / PARTITION).glob("*.gz"))[0]
    with changed.open("ab") as handle:  # caught half-written: the rest arrives later
        handle.write(gzip.compress((line(HOUR + timedelta(minutes=1)) + "\n").encode()))
    code, err, again = jsonl_run(tmp_path, root)
    assert code == 0, err
    assert f"CHANGED {changed.resolve()}" in err and "1 changed file(s)" in err
    assert again == records  # nothing published again
    assert f"changed since recorded: {changed.resolve()}" in status(tmp_path, root)


def test_an_s3_object_rewritten_with_the_same_size_is_reported_by_its_etag(tmp_path: Path, moto_endpoint: str) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    bucket = "cfmetrics-hostile-etag"
    s3.create_bucket(Bucket=bucket)
    body = (HEADER + line(HOUR + timedelta(minutes=3)) + "\n").encode()
    key = f"logs/{PARTITION}/{DIST}.2026-11-27-22.same-size.gz"
    first, second = gzip.compress(body, mtime=1), gzip.compress(body, mtime=2)
    assert len(first) == len(second) and first != second
    s3.put_object(Bucket=bucket, Key=key, Body=first)
    args = ("--engine", "duckdb", "--s3-endpoint-url", moto_endpoint, "--region", "us-east-1")
    code, err, records = jsonl_run(tmp_path, f"s3://{bucket}/logs/", *args)
    assert code == 0, err
    assert jsonl_sums(records, "Requests", BASE) == {HOUR + timedelta(minutes=3): 1.0}
    s3.put_object(Bucket=bucket, Key=key, Body=second)
    code, err, again = jsonl_run(tmp_path, f"s3://{bucket}/logs/", *args)
    assert code == 0, err
    assert f"CHANGED s3://{bucket}/{key}" in err and "ETag" in err
    assert again == records


# -- unreadable files: young ones, and files that exhaust the engine ----------------------------------------------
def test_a_young_unreadable_file_is_retried_then_recorded(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    generate(root, [DIST], HOUR, hours=1, lines_per_hour=200)
    junk = root / PARTITION / f"{DIST}.2026-11-27-22.copying.gz"
    junk.write_bytes(gzip.compress((HEADER + line(HOUR) + "\n").encode())[:40])  # a copy still under way
    code, err, records = jsonl_run(tmp_path, root)
    assert code == 0, err
    assert f"RETRY LATER {junk.resolve()}" in err and "UNREADABLE" not in err
    assert "UnreadableFiles" not in {r["MetricName"] for r in records}
    assert "unreadable:" not in status(tmp_path, root)
    age_past_retry(junk)  # still broken an hour later: recorded for good
    code, err, records = jsonl_run(tmp_path, root)
    assert code == 0, err
    assert f"UNREADABLE {junk.resolve()}" in err
    assert jsonl_sums(records, "UnreadableFiles", BASE) == {HOUR: 1.0}
    assert f"unreadable: {junk.resolve()}" in status(tmp_path, root)


def test_a_gzip_bomb_times_out_and_is_recorded_while_the_rest_is_published(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    generate(root, [DIST], HOUR, hours=1, lines_per_hour=200, files_per_hour=3)
    reference = scan_tree(root)
    bomb = root / PARTITION / f"{DIST}.2026-11-27-22.bomb.gz"
    chunk = ((line(HOUR + timedelta(minutes=7)) + "\n") * 20_000).encode()
    with gzip.open(bomb, "wb", compresslevel=1) as handle:  # ~8 MB that expands to 1 GiB
        handle.write(HEADER.encode())
        for _ in range((1 << 30) // len(chunk)):
            handle.write(chunk)
    code, err, records = jsonl_run(tmp_path, root, "--query-timeout", "1.5")
    assert code == 0, err
    assert f"UNREADABLE {bomb.resolve()}: timed out" in err
    assert jsonl_sums(records, "Requests", BASE) == {m: float(n) for m, n in reference.requests(DIST).items()}
    assert jsonl_sums(records, "UnreadableFiles", BASE) == {HOUR: 1.0}
    assert f"unreadable: {bomb.resolve()}: timed out" in status(tmp_path, root)
    bomb.unlink()


def test_athena_query_timeout_is_a_query_timed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    import awswrangler as wr

    from job.adapters.athena_engine import AthenaEngine
    from job.core.errors import QueryTimedOut

    stopped: list[str] = []
    monkeypatch.setattr(wr.athena, "get_query_execution", lambda *a, **k: {"Status": {"State": "RUNNING"}})
    monkeypatch.setattr(wr.athena, "stop_query_execution", lambda query_id, **k: stopped.append(query_id))
    clock = iter(range(0, 10_000, 100))
    engine = AthenaEngine("db", "wg", "s3://r/", None, timeout_seconds=240, sleep=lambda s: None,
                          monotonic=lambda: float(next(clock)))  # fmt: skip
    with pytest.raises(QueryTimedOut, match="TIMED OUT"):
        engine._wait("q-1")
    assert stopped == ["q-1"]


# -- cardinality ----------------------------------------------------------------------------------------------------
def test_check_distributions_skips_folders_of_no_distribution(
    tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    (real,) = create_distributions(boto3.client("cloudfront", endpoint_url=moto_endpoint), 1)
    made_up = [f"E9MADEUP{n:04d}" for n in range(30)]
    root = tmp_path / "logs"
    generate(root, [real, *made_up], HOUR, hours=1, lines_per_hour=40, files_per_hour=1)
    reference = scan_tree(root)
    code, err, records = jsonl_run(tmp_path, root, "--check-distributions", "--region", "us-east-1")
    assert code == 0, err
    published = {dict((d["Name"], d["Value"]) for d in r["Dimensions"])["DistributionId"] for r in records}
    assert published == {real}
    assert jsonl_sums(records, "Requests", (("DistributionId", real),)) == {
        m: float(n) for m, n in reference.requests(real).items()
    }
    assert err.count("do not exist in the account") == 1 and "30 unknown distribution(s) skipped" in err
    shutil.rmtree(tmp_path / "state")
    os.remove(tmp_path / "out.jsonl")
    code, err, records = jsonl_run(tmp_path, root)  # without the option: today's behaviour, every folder
    published = {dict((d["Name"], d["Value"]) for d in r["Dimensions"])["DistributionId"] for r in records}
    assert code == 0 and published == {real, *made_up}


def test_unknown_result_types_are_logged_once_per_run(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    kinds = [f"Weird{n}" for n in range(500)]
    for number in range(3):  # several files and queries, one log line
        write_log(root / PARTITION / f"{DIST}.2026-11-27-22.f{number}.gz",
                  [line(HOUR + timedelta(seconds=i), k) for i, k in enumerate(kinds)])  # fmt: skip
    code, err, records = jsonl_run(tmp_path, root, "--files-per-query", "1")
    assert code == 0, err
    logged = [x for x in err.splitlines() if "unknown x-edge-result-type" in x]
    assert len(logged) == 1 and "500 unknown" in logged[0] and "'Weird0'" in logged[0]
    other = jsonl_sums(records, "Requests", (*BASE, ("ResultType", "Other")))
    assert sum(other.values()) == 3 * len(kinds)


def test_sql_warns_past_athenas_query_text_limit_and_says_how_many_files_fit() -> None:
    files = [f"s3://my-logs/cloudfront/{DIST}/2026/11/28/10/{DIST}.2026-11-28-10.{n:08x}.gz" for n in range(4000)]
    base = ("sql", "--distribution", DIST, "--from", "2026-11-28T10", "--to", "2026-11-28T10")
    result = run_cli(*base, *(a for f in files for a in ("--file", f)))
    assert result.code == 0
    assert "262,144 bytes" in result.err
    fit = int(result.err.split(" of these ")[0].rsplit(" ", 1)[-1].replace(",", ""))

    def size(count: int) -> int:
        out = run_cli(*base, *(a for f in files[:count] for a in ("--file", f))).out
        return len(out.encode()) - 1  # print's newline

    assert size(fit) <= 262_144 < size(fit + 1)
    small = run_cli(*base, "--file", files[0])
    assert small.code == 0 and "warning" not in small.err


# -- the Athena path (the Lambda on moto, answered by DuckDB over the files each query names) -----------------------
endpoint = harness.endpoint
moto_aws = harness.aws


class NamedFilesTwin(harness.AthenaTwin):
    """Answers each query over exactly the files its "$path" parameter names, so the runner may halve a batch."""

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        literals: list[str] = params.get("ExecutionParameters", [])
        distribution_id = literals[0].strip("'")
        named = {x.strip("'") for x in literals if x.startswith("'s3://")}
        files = [f for f in self.files_in_s3(distribution_id) if f.uri in named]
        assert {f.uri for f in files} == named, "the query names files that are not in S3"
        params_of = query_parameters(distribution_id, [f.hour for f in files], [f.uri for f in files])
        self.queries += 1
        self.inject(self.engine.query(self.query, params_of, files).rows)


def test_the_lambda_on_athena_counts_out_of_range_lines_and_publishes_the_rest(
    moto_aws: tuple[harness.AthenaTwin, Any], tmp_path: Path
) -> None:
    twin, s3 = moto_aws
    twin.__class__ = NamedFilesTwin
    distribution_id = unique_distribution("hostile", "athena-range")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    hour = now.replace(minute=0) - timedelta(hours=2)
    root = tmp_path / "logs"
    generate(root, [distribution_id], hour, hours=2, lines_per_hour=200, files_per_hour=2)
    write_log(root / f"{distribution_id}/{hour:%Y/%m/%d/%H}" / f"{distribution_id}.{hour:%Y-%m-%d-%H}.x.gz", [
        line(now + timedelta(hours=3)),
        line(datetime(2099, 1, 1, tzinfo=UTC)),
        line(hour + timedelta(minutes=30)),
    ])  # fmt: skip
    requests, out, total = expected_counts(root, now)
    assert out == {hour: 2}
    harness.upload(s3, root)
    summary = lambda_handler({"scheduled_time": now.strftime("%Y-%m-%dT%H:%M:%SZ")}, harness.FakeContext())
    assert summary["status"] == "ok" and summary["out_of_range_lines"] == 2 and summary["lines"] == total
    assert twin.queries > 1  # the batch was halved until the file stood alone
    reader = MetricReader(boto3.client("cloudwatch"), harness.NAMESPACE)
    base = (("DistributionId", distribution_id),)
    span = (hour - timedelta(hours=1), now + timedelta(hours=2))
    assert reader.sums("Requests", base, *span) == {m: float(n) for m, n in requests.items()}
    assert reader.sums("OutOfRangeLines", base, *span) == {hour: 2.0}


def test_a_root_holding_every_kind_at_once_completes_and_accounts_for_every_line(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    hostile_tree(root)
    write_log(root / PARTITION / f"{DIST}.2026-11-27-22.range*.gz",
              [line(datetime(2099, 1, 1, tzinfo=UTC)), line(HOUR - timedelta(days=20)), line(HOUR)])  # fmt: skip
    write_log(root / PARTITION / f"{DIST}.2026-11-27-22.malformed.gz", ["not-a-date\tx", line(HOUR, "-")])
    junk = root / PARTITION / f"{DIST}.2026-11-27-22.junk[1].gz"
    junk.write_bytes(b"\x1f\x8b\x08\x00truncated")
    age_past_retry(junk)
    requests, out, total = expected_counts(root, None)
    code, err, records = jsonl_run(tmp_path, root)
    assert code == 0, err
    assert jsonl_sums(records, "Requests", BASE) == {m: float(n) for m, n in requests.items()}
    assert jsonl_sums(records, "OutOfRangeLines", BASE) == {HOUR: float(out[HOUR])} == {HOUR: 2.0}
    assert jsonl_sums(records, "MalformedLines", BASE) == {HOUR: 2.0}
    assert jsonl_sums(records, "UnreadableFiles", BASE) == {HOUR: 1.0}
    summary = parse_summary(err)
    assert summary["lines"] == total == sum(requests.values()) + 2 + 2  # valid, out of range, malformed
    assert summary["malformed"] == 2 and "2 line(s) out of range" in err and "1 unreadable file(s)" in err


def read_lines_or_none(path: Path) -> list[bytes]:
    """The record lines of a .gz file, or none when it cannot be read (the unreadable file has no lines)."""
    try:
        return read_lines(path)
    except (OSError, EOFError):
        return []
