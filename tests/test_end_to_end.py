"""`cfmetrics` end to end: generated logs in both layouts -> DuckDB -> CloudWatch on a local moto server.

Every expected figure comes from tests/reference.py, which reads the .gz files itself.

Percentiles: the reference uses the nearest-rank definition (the ceil(p * n)-th smallest value). DuckDB's
quantile_disc, which the DuckDB adapter puts in place of the SQL's approx_percentile, returns exactly that, so the
TimeTakenP50/P90/P99 datums must equal it. The TimeTaken Values/Counts histogram (buckets within 1.5 % above
100 ms) gives percentiles within 2 % or 1 ms of the raw values' nearest-rank percentiles.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from job.core.files import Layout
from job.demo.sample_logs import HEADER, generate, log_line, write_log_file
from tests.conftest import (
    HOUR,
    CliResult,
    MetricReader,
    as_float_map,
    assert_cloudwatch_matches,
    cloudwatch_client,
    jsonl_distributions,
    jsonl_sums,
    jsonl_values,
    last_midnight,
    other_mapping,
    parse_summary,
    read_jsonl,
    run_args,
    run_cli,
    unique_distribution,
)
from tests.reference import Reference, nearest_rank, scan_tree, weighted_nearest_rank

PERCENTILES = {"TimeTakenP50": 0.5, "TimeTakenP90": 0.9, "TimeTakenP99": 0.99}


@dataclass(frozen=True)
class Published:
    """The main data set, published once to moto and once to a jsonl file."""

    root: Path
    state: Path
    namespace: str
    endpoint: str
    start: datetime
    end: datetime
    reference: Reference
    files: int
    first_run: CliResult
    jsonl: Path
    jsonl_run: CliResult


@pytest.fixture(scope="module")
def published(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Published:
    base = tmp_path_factory.mktemp("e2e-main")
    root, state, jsonl = base / "logs", base / "state", base / "out" / "datums.jsonl"
    a, b, c = (unique_distribution("e2e-main", x) for x in "ABC")
    # Four hours across the last midnight (recent: CloudWatch takes two weeks back, two hours ahead).
    first = last_midnight() - 2 * HOUR
    written = generate(root, [a, b], first, hours=4, lines_per_hour=160, seed=11)
    written += generate(root, [c], first, hours=4, lines_per_hour=120, seed=12, layout=Layout.HIVE)
    rng = random.Random(13)
    # One distribution in both layouts, and one dense hour for percentiles over dozens of values a minute.
    written.append(write_log_file(root, a, first + HOUR, 90, rng, layout=Layout.HIVE, suffix="hive"))
    written.append(write_log_file(root, b, first + 2 * HOUR, 4200, rng, suffix="dense"))
    namespace = "Test/e2e-main"
    first_run = run_cli(*run_args(root, moto_endpoint, namespace, state))
    jsonl_run = run_cli("run", "--logs", str(root), "--sink", f"jsonl:{jsonl}", "--state", str(state))
    return Published(
        root=root,
        state=state,
        namespace=namespace,
        endpoint=moto_endpoint,
        start=first,
        end=first + 4 * HOUR + 2 * timedelta(minutes=1),
        reference=scan_tree(root),
        files=len(written),
        first_run=first_run,
        jsonl=jsonl,
        jsonl_run=jsonl_run,
    )


@pytest.fixture(scope="module")
def main_reader(published: Published) -> MetricReader:
    return MetricReader(cloudwatch_client(published.endpoint), published.namespace)


def test_first_run_reports_every_file_and_line(published: Published) -> None:
    assert published.first_run.code == 0, published.first_run.err
    summary = parse_summary(published.first_run.err)
    ref = published.reference
    assert summary["new"] == published.files == 26
    assert summary["already"] == 0
    assert summary["lines"] == sum(ref.lines.values())
    assert summary["malformed"] == ref.total_malformed() == 0
    assert len(ref.distributions) == 3


def test_requests_and_time_taken_counts_per_minute_equal_reference(
    published: Published, main_reader: MetricReader
) -> None:
    assert published.first_run.code == 0, published.first_run.err
    assert_cloudwatch_matches(main_reader, published.reference, published.start, published.end)
    # The day boundary is inside the data: minutes on both sides were published.
    midnight = published.start + 2 * HOUR
    minutes = {m for (_, m) in published.reference.minutes}
    assert min(minutes) < midnight <= max(minutes)


def test_only_expected_metrics_and_dimensions_exist(published: Published, main_reader: MetricReader) -> None:
    client = main_reader.client
    found: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for page in client.get_paginator("list_metrics").paginate(Namespace=published.namespace):
        for metric in page["Metrics"]:
            found.add((metric["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in metric["Dimensions"]))))
    ref = published.reference
    mapping = other_mapping(ref)
    expected: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for d in ref.distributions:
        for name in ("Requests", "TimeTaken", *PERCENTILES):
            expected.add((name, (("DistributionId", d),)))
        for result_type in ref.requests_by_type(d, mapping):
            expected.add(("Requests", (("DistributionId", d), ("ResultType", result_type))))
        # the default metric groups beside core and percentiles: status, bytes, ttfb (not edge)
        for status_class in ref.requests_by_status_class(d):
            expected.add(("Requests", (("DistributionId", d), ("StatusClass", status_class))))
        expected |= {("BytesDownloaded", (("DistributionId", d),)), ("TimeToFirstByte", (("DistributionId", d),))}
    # and one receipt metric for the query and its ledger (job/core/receipts.py)
    receipts = {f for f in found if f[0] == "PublishReceipt"}
    assert len(receipts) == 1 and [n for n, _ in next(iter(receipts))[1]] == ["Ledger", "Query"]
    assert found - receipts == expected


def test_jsonl_export_carries_the_same_counts(published: Published) -> None:
    assert published.jsonl_run.code == 0, published.jsonl_run.err
    # The ledger keeps each destination apart: the same --state publishes every file again to the jsonl sink.
    assert parse_summary(published.jsonl_run.err)["new"] == published.files
    records = read_jsonl(published.jsonl)
    ref = published.reference
    for d in ref.distributions:
        assert jsonl_sums(records, "Requests", [("DistributionId", d)]) == as_float_map(ref.requests(d))
        histograms = jsonl_distributions(records, "TimeTaken", [("DistributionId", d)])
        counts = {m: sum(h.values()) for m, h in histograms.items()}
        assert counts == as_float_map(ref.time_taken_counts(d))


def test_percentiles_from_values_counts_are_within_two_percent(published: Published) -> None:
    records = read_jsonl(published.jsonl)
    ref = published.reference
    checked = dense = 0
    for d in ref.distributions:
        histograms = jsonl_distributions(records, "TimeTaken", [("DistributionId", d)])
        raw = ref.time_taken_values(d)
        assert set(histograms) == set(raw)
        for minute, values in raw.items():
            histogram = histograms[minute]
            for q in PERCENTILES.values():
                want = nearest_rank(values, q)
                got = weighted_nearest_rank(list(histogram), list(histogram.values()), q)
                assert abs(got - want) <= max(1.0, 0.02 * want), f"{d} {minute} p{q}: {got} vs {want}"
                checked += 1
            dense += len(values) >= 60
    assert checked > 1000 and dense >= 50


def test_percentile_datums_equal_nearest_rank(published: Published) -> None:
    """TimeTakenP50/P90/P99 (quantile_disc on DuckDB) equal the nearest-rank percentile of the raw values."""
    records = read_jsonl(published.jsonl)
    ref = published.reference
    for d in ref.distributions:
        raw = ref.time_taken_values(d)
        for metric, q in PERCENTILES.items():
            got = jsonl_values(records, metric, [("DistributionId", d)])
            want = {m: [float(nearest_rank(v, q))] for m, v in raw.items()}
            assert got == want, f"{d} {metric}"


def test_rerun_through_console_script_publishes_nothing(published: Published, main_reader: MetricReader) -> None:
    script = shutil.which("cfmetrics", path=str(Path(sys.executable).parent))
    assert script is not None, "the cfmetrics console script is not installed next to this Python"
    args = run_args(published.root, published.endpoint, published.namespace, published.state)
    done = subprocess.run([script, *args], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    summary = parse_summary(done.stderr)
    assert (summary["new"], summary["already"], summary["requests"]) == (0, published.files, 0)
    assert "done: " in done.stderr
    assert_cloudwatch_matches(main_reader, published.reference, published.start, published.end)


def test_late_file_adds_exactly_its_lines(moto_endpoint: str, tmp_path: Path, namespace: str) -> None:
    root, state = tmp_path / "logs", tmp_path / "state"
    d1, d2 = unique_distribution(namespace, "1"), unique_distribution(namespace, "2")
    first = last_midnight() - 5 * HOUR
    generate(root, [d1, d2], first, hours=2, lines_per_hour=60, seed=21)
    start, end = first, first + 2 * HOUR + timedelta(minutes=2)
    reader = MetricReader(cloudwatch_client(moto_endpoint), namespace)
    assert run_cli(*run_args(root, moto_endpoint, namespace, state)).code == 0
    before = scan_tree(root)
    assert_cloudwatch_matches(reader, before, start, end)

    late = write_log_file(root, d1, first, 40, random.Random(22), suffix="late")
    rerun = run_cli(*run_args(root, moto_endpoint, namespace, state))
    assert rerun.code == 0, rerun.err
    assert (parse_summary(rerun.err)["new"], parse_summary(rerun.err)["lines"]) == (1, 40)
    late_only = Reference()
    late_only.add_file(d1, late.path)
    after = scan_tree(root)
    assert after.total_requests() == before.total_requests() + 40
    assert_cloudwatch_matches(reader, after, start, end)
    # Exactly the late file's minutes changed, each by that file's lines.
    got = reader.sums("Requests", [("DistributionId", d1)], start, end)
    old, added = before.requests(d1), late_only.requests(d1)
    for minute in set(old) | set(added):
        assert got.get(minute, 0.0) == old.get(minute, 0) + added.get(minute, 0)
    assert reader.sums("Requests", [("DistributionId", d2)], start, end) == as_float_map(before.requests(d2))


def _fields(line: str) -> list[str]:
    return line.split("\t")


def write_mixed_file(path: Path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as out:
        out.write(HEADER.encode() + b"".join(line + b"\n" for line in lines))


def mixed_lines(hour: datetime, seed: int) -> tuple[list[bytes], int]:
    """Valid lines of every shape the job must count, and malformed lines it must skip: (lines, malformed)."""
    rng = random.Random(seed)
    host = "d111111abcdef8.cloudfront.net"

    def valid(minute: int) -> list[str]:
        return _fields(log_line(rng, hour + timedelta(minutes=minute, seconds=rng.randint(0, 59)), host))

    def join(fields: list[str]) -> bytes:
        return "\t".join(fields).encode()

    good: list[bytes] = [join(valid(m % 60)) for m in range(0, 120, 3)]
    special: list[list[str]] = []
    f = valid(5)
    f[7], f[12], f[10] = "/a#b/#frag", 'k="v#1"; x=#2', "Agent%20#1"  # '#' inside fields is data
    special.append(f)
    f = valid(5)
    f[18] = "-"  # a request without time-taken
    special.append(f)
    f = valid(6)
    f[18] = "-0.005"  # negative: a request outside the distribution
    special.append(f)
    f = valid(6)
    f[13] = f[22] = f[28] = "FutureResultType"  # unknown type: published as ResultType=Other
    special.append(f)
    special.append(valid(7)[:19])  # 2015 layout: ends at time-taken
    special.append([*valid(7), ""])  # trailing TAB
    f = valid(8)
    f[10] = 'Mozilla/5.0 (X11; "quoted") \\x20'  # spaces, quotes and a backslash in a field
    special.append(f)
    good += [join(f) for f in special]

    date = f"{hour:%Y-%m-%d}"
    bad: list[bytes] = [
        f"{date}\t{hour:%H}:10:00\tIAD89-C1".encode(),  # too few fields
        join(valid(10)[:13]),  # ends before the result type
        join(valid(10)[:12]),  # the 2012 layout: no result type
        join(["2026-02-30", *valid(11)[1:]]),  # no such date
        join([date, "25:61:00", *valid(11)[2:]]),  # no such time
        join([f"{date}T{hour:%H}:11:00", *valid(11)[1:]]),  # date and time in one field
        join([*valid(12)[:13], "-", *valid(12)[14:]]),  # '-' result type
        join([*valid(12)[:13], "", *valid(12)[14:]]),  # empty result type
        b"\x00\x01\x02\x7f junk \x1b[31m\x1b[0m \xc3\xa9\xe2\x82\xac",  # binary junk (valid UTF-8, no TAB)
        HEADER.splitlines()[1].encode(),  # a '#Fields' header in the middle (concatenated files)
        b"#" + join(valid(13)),  # a line commented out: '#2026-...' is no date
        b"\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t",  # only TABs
    ]
    lines = good + bad
    rng.shuffle(lines)
    return lines, len(bad)


def test_malformed_lines_are_skipped_and_valid_lines_counted(
    moto_endpoint: str, tmp_path: Path, namespace: str, metrics: MetricReader
) -> None:
    root, state = tmp_path / "logs", tmp_path / "state"
    d = unique_distribution(namespace, "mixed")
    hour = last_midnight() - 6 * HOUR
    lines, malformed = mixed_lines(hour, seed=31)
    write_mixed_file(root / f"{d}/{hour:%Y/%m/%d/%H}/{d}.{hour:%Y-%m-%d-%H}.mixed.gz", lines)
    ref = scan_tree(root)
    assert ref.total_malformed() == malformed  # the reference classifies the lines as intended

    result = run_cli(*run_args(root, moto_endpoint, namespace, state))
    assert result.code == 0, result.err
    summary = parse_summary(result.err)
    assert (summary["lines"], summary["malformed"]) == (len(lines), malformed)
    assert "FutureResultType" in result.err  # the unknown type is reported
    assert_cloudwatch_matches(metrics, ref, hour, hour + 2 * HOUR)
    other = metrics.sums("Requests", [("DistributionId", d), ("ResultType", "Other")], hour, hour + 2 * HOUR)
    assert sum(other.values()) == 1


def test_line_with_invalid_utf8_does_not_stop_the_run(tmp_path: Path) -> None:
    root, out = tmp_path / "logs", tmp_path / "datums.jsonl"
    d = "EINVALIDUTF8"
    hour = datetime(2026, 1, 2, 3, tzinfo=UTC)
    lines, _ = mixed_lines(hour, seed=32)
    lines.insert(3, b"\xff\xfe\x80 binary junk \x81\x82")
    write_mixed_file(root / f"{d}/{hour:%Y/%m/%d/%H}/{d}.{hour:%Y-%m-%d-%H}.junk.gz", lines)
    ref = scan_tree(root)
    result = run_cli("run", "--logs", str(root), "--sink", f"jsonl:{out}", "--state", str(tmp_path / "state"))
    assert result.code == 0, result.err
    assert jsonl_sums(read_jsonl(out), "Requests", [("DistributionId", d)]) == as_float_map(ref.requests(d))


def test_line_with_invalid_utf8_counts_as_malformed(tmp_path: Path) -> None:
    root, out = tmp_path / "logs", tmp_path / "datums.jsonl"
    d = "EINVALIDUTF8"
    hour = datetime(2026, 1, 2, 3, tzinfo=UTC)
    lines, malformed = mixed_lines(hour, seed=32)
    lines.insert(3, b"\xff\xfe\x80 binary junk \x81\x82")
    write_mixed_file(root / f"{d}/{hour:%Y/%m/%d/%H}/{d}.{hour:%Y-%m-%d-%H}.junk.gz", lines)
    assert scan_tree(root).total_malformed() == malformed + 1
    result = run_cli("run", "--logs", str(root), "--sink", f"jsonl:{out}", "--state", str(tmp_path / "state"))
    assert result.code == 0, result.err
    summary = parse_summary(result.err)
    assert (summary["lines"], summary["malformed"]) == (len(lines), malformed + 1)


def test_log_root_with_question_mark_in_path(tmp_path: Path) -> None:
    root, out = tmp_path / "logs?v=1", tmp_path / "datums.jsonl"
    d = "EQUESTIONMARK"
    generate(root, [d], datetime(2026, 1, 2, 3, tzinfo=UTC), hours=1, lines_per_hour=30, seed=33)
    ref = scan_tree(root)
    result = run_cli("run", "--logs", str(root), "--sink", f"jsonl:{out}", "--state", str(tmp_path / "state"))
    assert result.code == 0, result.err
    assert jsonl_sums(read_jsonl(out), "Requests", [("DistributionId", d)]) == as_float_map(ref.requests(d))


def test_log_root_with_quote_space_and_brackets_in_path(tmp_path: Path) -> None:
    root, out = tmp_path / "it's [logs] {a,b} *", tmp_path / "datums.jsonl"
    d = "EODDPATH"
    generate(root, [d], datetime(2026, 1, 2, 3, tzinfo=UTC), hours=2, lines_per_hour=30, seed=34)
    ref = scan_tree(root)
    result = run_cli("run", "--logs", str(root), "--sink", f"jsonl:{out}", "--state", str(tmp_path / "state"))
    assert result.code == 0, result.err
    assert jsonl_sums(read_jsonl(out), "Requests", [("DistributionId", d)]) == as_float_map(ref.requests(d))


def test_dry_run_publishes_and_records_nothing(
    moto_endpoint: str, tmp_path: Path, namespace: str, metrics: MetricReader
) -> None:
    root, state, out = tmp_path / "logs", tmp_path / "state", tmp_path / "dry.jsonl"
    d = unique_distribution(namespace, "dry")
    hour = last_midnight() - 7 * HOUR
    generate(root, [d], hour, hours=1, lines_per_hour=50, seed=41)
    ref = scan_tree(root)
    window = (hour, hour + 2 * HOUR)

    dry = run_cli(*run_args(root, moto_endpoint, namespace, state, "--dry-run"))
    assert dry.code == 0, dry.err
    assert f"# request 1: PutMetricData {namespace}" in dry.out
    printed = [line for line in dry.out.splitlines() if line.startswith("{")]
    assert len(printed) == parse_summary(dry.err)["datums"] > 0
    assert "dry run, nothing published" in dry.err
    assert metrics.client.list_metrics(Namespace=namespace)["Metrics"] == []
    assert metrics.sums("Requests", [("DistributionId", d)], *window) == {}
    dry_jsonl = run_cli("run", "--logs", str(root), "--sink", f"jsonl:{out}", "--state", str(state), "--dry-run")
    assert dry_jsonl.code == 0 and not out.exists()

    # Nothing was recorded: the real run publishes every file.
    real = run_cli(*run_args(root, moto_endpoint, namespace, state))
    assert real.code == 0, real.err
    assert parse_summary(real.err)["new"] == 2
    assert metrics.sums("Requests", [("DistributionId", d)], *window) == as_float_map(ref.requests(d))


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--distribution", "E1' OR 1=1"], "E1' OR 1=1"),
        (["--distribution", "e2example"], "'e2example'"),
        (["--namespace", "AWS/x"], "'AWS/x'"),
        (["--namespace", "a;b"], "'a;b'"),
        (["--from", "2026-13-01"], "'2026-13-01'"),
        (["--to", "2026-11-28T25"], "'2026-11-28T25'"),
        (["--from", "yesterday"], "'yesterday'"),
        (["--sink", "foo"], "'foo'"),
        (["--sink", "jsonl:"], "'jsonl:'"),
        (["--query", "../etc/passwd"], "'../etc/passwd'"),
        (["--threads", "many"], "'many'"),
    ],
)
def test_bad_parameters_exit_nonzero_naming_the_value(
    moto_endpoint: str, tmp_path: Path, extra: list[str], named: str
) -> None:
    (tmp_path / "logs").mkdir()
    result = run_cli(*run_args(tmp_path / "logs", moto_endpoint, "Test/bad-params", tmp_path / "state", *extra))
    assert result.code != 0
    assert named in result.err
    assert extra[0] in result.err, "the CLI names its own flag (the core's message is neutral)"
    assert "Traceback" not in result.err


def test_missing_log_root_is_named(moto_endpoint: str, tmp_path: Path) -> None:
    result = run_cli(*run_args(tmp_path / "absent", moto_endpoint, "Test/absent", tmp_path / "state"))
    assert result.code == 1
    assert str(tmp_path / "absent") in result.err


def test_cloudwatch_refuses_from_older_than_two_weeks_but_jsonl_takes_it(moto_endpoint: str, tmp_path: Path) -> None:
    root, out = tmp_path / "logs", tmp_path / "old.jsonl"
    old = last_midnight() - timedelta(days=20)
    d = "EOLDLOGS"
    generate(root, [d], old, hours=1, lines_per_hour=40, seed=51)
    since = f"{old:%Y-%m-%dT%H}"
    refused = run_cli(*run_args(root, moto_endpoint, "Test/old", tmp_path / "state", "--from", since))
    assert refused.code == 1
    assert "jsonl" in refused.err and since in refused.err
    taken = run_cli("run", "--logs", str(root), "--sink", f"jsonl:{out}", "--state", str(tmp_path / "s2"))
    assert taken.code == 0, taken.err
    assert jsonl_sums(read_jsonl(out), "Requests", [("DistributionId", d)]) == as_float_map(scan_tree(root).requests(d))


def _literals(tree: exp.Expression) -> set[str]:
    return {lit.this for lit in tree.find_all(exp.Literal) if lit.is_string}


def test_sql_command_prints_athena_sql_with_literals() -> None:
    result = run_cli(
        "sql", "--distribution", "E2EXAMPLE", "--from", "2026-11-28T15", "--to", "2026-11-28T17:30",
        "--file", "s3://b/k.gz", "--file", "s3://b/it's.gz",
    )  # fmt: skip
    assert result.code == 0, result.err
    tree = sqlglot.parse_one(result.out, read="athena")
    assert isinstance(tree, exp.Select)
    assert {"E2EXAMPLE", "2026", "11", "28", "15", "16", "17", "s3://b/k.gz", "s3://b/it's.gz"} <= _literals(tree)
    assert tree.find(exp.Placeholder) is None  # no :name or ? left outside comments
    paths = [node for node in tree.find_all(exp.In) if node.this.name == "$path"]
    assert len(paths) == 1
    assert [e.this for e in paths[0].expressions] == ["s3://b/k.gz", "s3://b/it's.gz"]


def test_sql_command_refuses_bad_values() -> None:
    bad = run_cli("sql", "--distribution", "E1' OR 1=1", "--from", "2026-11-28", "--to", "2026-11-28", "--file", "x")
    assert bad.code == 1 and "E1' OR 1=1" in bad.err and bad.out == ""
    no_files = run_cli("sql", "--distribution", "E2EXAMPLE", "--from", "2026-11-28", "--to", "2026-11-28")
    assert no_files.code == 1 and "--file" in no_files.err


@pytest.mark.parametrize(
    ("layout", "template"),
    [
        ("plain", "s3://bkt/p/${distributionid}/${year}/${month}/${day}/${hour}/"),
        ("hive", "s3://bkt/p/DistributionId=${distributionid}/year=${year}/month=${month}/day=${day}/hour=${hour}/"),
    ],
)
def test_sql_ddl_prints_the_table(layout: str, template: str) -> None:
    # S3 bucket names have 3-63 characters, so the location is s3://bkt/p/ (s3://b/p/ is refused, see below).
    result = run_cli("sql", "--ddl", "--location", "s3://bkt/p", "--layout", layout)
    assert result.code == 0, result.err
    tree = sqlglot.parse_one(result.out, read="athena")
    assert isinstance(tree, exp.Create)
    assert "CREATE EXTERNAL TABLE" in result.out.upper()
    assert {"s3://bkt/p/", template} <= _literals(tree)
    columns = [c.name for c in tree.this.expressions]
    assert columns[:2] == ["date", "time"] and columns[13] == "x_edge_result_type" and columns[18] == "time_taken"


@pytest.mark.parametrize("location", ["s3://bkt/p' OR 1=1", "s3://b/p/", "s3://Bucket/p/", "https://bkt/p/"])
def test_sql_ddl_refuses_a_bad_location(location: str) -> None:
    result = run_cli("sql", "--ddl", "--location", location)
    assert result.code == 1 and location in result.err and result.out == ""


def test_help_and_version_through_the_module(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "job.cli", "run", "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0 and "--logs" in done.stdout and "--dry-run" in done.stdout
