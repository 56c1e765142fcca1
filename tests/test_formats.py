"""Standard logging v2 (JSON, Parquet, w3c/plain) through the whole job, in both path layouts.

Generated v2 files (job/demo/sample_logs.py) plus hand-written malformed lines go through the CLI (`cfmetrics run
--log-format ... --sink jsonl:`); the expected figures come from plain-Python readers written here for each format
(json, gzip, pyarrow: no job code parses a line). The rule they implement is the job's: a line's minute is its
date + time when the line has both, else its `timestamp` (epoch seconds, UTC); a line is malformed when that does
not parse or its x-edge-result-type is missing, '' or '-'; a JSON line that is not a UTF-8 JSON object is
malformed; time-taken counts in the distribution when it is a number in [0, 86400) seconds.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import re
import shutil
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from job.adapters.duckdb_engine import DuckDBEngine
from job.core.errors import ConfigError, SqlTemplateError
from job.core.files import Layout, LogFormat
from job.demo.sample_logs import V2_FIELDS, generate_v2, write_v2_log_file
from job.handler import HandlerConfig, lambda_handler
from job.query.ddl import LOG_RELATION, NORMALISING_VIEW, V2_TABLE, column_name, ddl_name, table_spec, v2_table
from job.query.sql_files import DEFAULT_SQL_DIR, TABLE_DDL, SqlFile
from job.query.sql_values import Varchar
from tests import test_handler_moto as harness
from tests.conftest import (
    DOCUMENTED_TYPES,
    age_past_retry,
    jsonl_distributions,
    jsonl_sums,
    jsonl_values,
    parse_summary,
    read_jsonl,
)
from tests.conftest import run_cli as cli
from tests.test_handler_moto import LOG_BUCKET, PREFIX, AthenaTwin, FakeContext, cloudwatch_sums

FIRST_HOUR = datetime(2026, 3, 1, 23, tzinfo=UTC)  # two hours across midnight
WINDOW = ("--from", "2026-03-01T23", "--to", "2026-03-02T00")
DISTRIBUTIONS = ("E1V2FORMATS", "E2V2FORMATS")
PARTITIONS = ("distributionid", "year", "month", "day", "hour")
FIXTURES = Path(os.environ.get("CFMETRICS_REAL_LINES", "/work/shared/fixtures/real-cloudfront-lines/lines.tsv"))
# The fields of the real v2 line (fixture 30), in its order: timestamp, DistributionId, the 33 legacy fields, then
# timestamp(ms), origin-fbl, origin-lbl, asn (written out here, not taken from the job).
REAL_V2_HEADER = (
    "timestamp DistributionId date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status "
    "cs(Referer) cs(User-Agent) cs-uri-query cs(Cookie) x-edge-result-type x-edge-request-id x-host-header "
    "cs-protocol cs-bytes time-taken x-forwarded-for ssl-protocol ssl-cipher x-edge-response-result-type "
    "cs-protocol-version fle-status fle-encrypted-fields c-port time-to-first-byte x-edge-detailed-result-type "
    "sc-content-type sc-content-len sc-range-start sc-range-end timestamp(ms) origin-fbl origin-lbl asn"
)
# A delivery that leaves out date and time (the minute comes from timestamp), in an order of its own.
NO_DATE_TIME = ("timestamp", "DistributionId", "time-taken", "sc-status", "x-edge-result-type", "cs-uri-stem",
                "c-ip", "x-edge-location", "cs(User-Agent)", "sc-bytes", "time-to-first-byte")  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# the independent reference


@dataclass
class Expected:
    """Per (distribution, minute): requests, requests per result type, time-taken values (ms)."""

    requests: Counter[tuple[str, datetime]] = field(default_factory=Counter)
    by_type: Counter[tuple[str, datetime, str]] = field(default_factory=Counter)
    taken: dict[tuple[str, datetime], list[int]] = field(default_factory=dict)
    lines: int = 0
    malformed: int = 0

    def add(self, distribution_id: str, get: Callable[[str], str | None]) -> None:
        """One record; `get(field)` is the v2 field's value or None when the record lacks it."""
        self.lines += 1
        minute: datetime | None = None
        date, time = get("date"), get("time")
        if date is not None and time is not None:
            try:
                minute = datetime.strptime(f"{date} {time}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            except ValueError:
                minute = None
        else:
            try:
                seconds = float(get("timestamp") or "")
                minute = datetime.fromtimestamp(seconds, UTC) if math.isfinite(seconds) else None
            except (ValueError, OverflowError, OSError):
                minute = None
        result_type = get("x-edge-result-type")
        if minute is None or result_type in (None, "", "-"):
            self.malformed += 1
            return
        assert result_type is not None
        minute = minute.replace(second=0, microsecond=0)
        self.requests[(distribution_id, minute)] += 1
        self.by_type[(distribution_id, minute, result_type)] += 1
        try:
            seconds = float(get("time-taken") or "")
        except ValueError:
            return
        if math.isfinite(seconds) and 0 <= seconds < 86400:
            self.taken.setdefault((distribution_id, minute), []).append(round(seconds * 1000))

    def of(self, distribution_id: str) -> dict[datetime, float]:
        return {m: float(n) for (d, m), n in self.requests.items() if d == distribution_id}

    def of_type(self, distribution_id: str, published: str) -> dict[datetime, float]:
        out: Counter[datetime] = Counter()
        for (d, m, t), n in self.by_type.items():
            if d == distribution_id and (t if t in DOCUMENTED_TYPES else "Other") == published:
                out[m] += n
        return {m: float(n) for m, n in out.items()}

    def timed(self, distribution_id: str) -> dict[datetime, list[int]]:
        return {m: sorted(v) for (d, m), v in self.taken.items() if d == distribution_id}


_PATH = re.compile(r"^(?:DistributionId=)?([A-Z0-9]+)/(?:year=)?\d{4}/(?:month=)?\d\d/(?:day=)?\d\d/(?:hour=)?\d\d/")


def distribution_of(root: Path, path: Path) -> str:
    match = _PATH.match(path.relative_to(root).as_posix())
    assert match, path
    return match.group(1)


def gunzip_lines(path: Path) -> list[bytes]:
    with gzip.open(path, "rb") as handle:
        lines = handle.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def add_json_file(expected: Expected, distribution_id: str, path: Path) -> None:
    for raw in gunzip_lines(path):
        if not raw.strip():
            continue  # an empty line is no record
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            record = {}
        if not isinstance(record, dict):
            record = {}

        def get(name: str, record: Mapping[str, Any] = record) -> str | None:
            value = record.get(name)
            return None if value is None else str(value)

        expected.add(distribution_id, get)


def add_w3c_file(expected: Expected, distribution_id: str, path: Path, plain_fields: Sequence[str]) -> None:
    """Header lines start with '#'; the '#Fields:' line names the fields (split on whitespace), a file without
    one has `plain_fields`. Records split on TAB if the first record has as many TAB-separated cells as there
    are fields, else on a space. A field whose bytes are not UTF-8 reads as if missing (DuckDB sets the line
    aside); a missing trailing field reads as None."""
    lines = gunzip_lines(path)
    fields: Sequence[str] = plain_fields
    while lines and lines[0].startswith(b"#"):
        header = lines.pop(0).decode()
        if header.startswith("#Fields:"):
            fields = header[len("#Fields:") :].split()
    delimiter = b"\t" if lines and len(lines[0].split(b"\t")) == len(fields) else b" "
    for raw in lines:
        cells = raw.split(delimiter)
        try:
            decoded = [c.decode("utf-8") for c in cells]
        except UnicodeDecodeError:
            decoded = []  # set aside whole: malformed
        values = dict(zip(fields, decoded, strict=False))
        expected.add(distribution_id, values.get)


def add_parquet_file(expected: Expected, distribution_id: str, path: Path) -> None:
    """Columns are the v2 field names with underscores, matched case-insensitively."""
    pq = pytest.importorskip("pyarrow.parquet")
    for row in pq.read_table(path).to_pylist():
        by_name = {name.lower(): value for name, value in row.items()}

        def get(name: str, by_name: Mapping[str, Any] = by_name) -> str | None:
            value = by_name.get(name.lower().replace("(", "_").replace(")", "").replace("-", "_"))
            return None if value is None else str(value)

        expected.add(distribution_id, get)


def scan(root: Path, log_format: LogFormat, skip: Sequence[Path] = (), plain_fields: Sequence[str] = ()) -> Expected:
    expected = Expected()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p not in skip):
        distribution_id = distribution_of(root, path)
        if log_format is LogFormat.JSON:
            add_json_file(expected, distribution_id, path)
        elif log_format is LogFormat.PARQUET:
            add_parquet_file(expected, distribution_id, path)
        else:
            add_w3c_file(expected, distribution_id, path, plain_fields)
    return expected


def nearest_rank(values: Sequence[int], q: str) -> float:
    ordered = sorted(values)
    return float(ordered[max(1, math.ceil(Fraction(q) * len(ordered))) - 1])


def assert_published(out: Path, expected: Expected, distributions: Sequence[str]) -> None:
    """Requests per minute, per ResultType, TimeTaken sample counts and p50/p99 as the reference says."""
    records = read_jsonl(out)
    assert records, "nothing published"
    for d in distributions:
        base = [("DistributionId", d)]
        assert jsonl_sums(records, "Requests", base) == expected.of(d), d
        assert sum(expected.of(d).values()) > 0
        for published in (*DOCUMENTED_TYPES, "Other"):
            got = jsonl_sums(records, "Requests", [*base, ("ResultType", published)])
            assert got == expected.of_type(d, published), (d, published)
        histograms = jsonl_distributions(records, "TimeTaken", base)
        timed = expected.timed(d)
        assert {m: sum(h.values()) for m, h in histograms.items()} == {m: float(len(v)) for m, v in timed.items()}
        assert jsonl_values(records, "TimeTakenP50", base) == {m: [nearest_rank(v, "0.5")] for m, v in timed.items()}
        assert jsonl_values(records, "TimeTakenP99", base) == {m: [nearest_rank(v, "0.99")] for m, v in timed.items()}


def run(root: Path, tmp_path: Path, log_format: LogFormat, *extra: str) -> dict[str, int]:
    out, state = tmp_path / "datums.jsonl", tmp_path / "state"
    result = cli("run", "--logs", str(root), "--sink", f"jsonl:{out}", "--state", str(state),
                 "--log-format", log_format.value, *WINDOW, *extra)  # fmt: skip
    assert result.code == 0, result.err
    return parse_summary(result.err)


def epoch(moment: datetime) -> str:
    return str(int(moment.timestamp()))


# ---------------------------------------------------------------------------------------------------------------
# malformed and unusual lines, per format


def json_junk(path: Path) -> int:
    """Lines next to good ones: each a case of the rule (comments say what each one counts as)."""
    t = FIRST_HOUR + timedelta(minutes=42, seconds=5)
    lines = [
        json.dumps({"timestamp": epoch(t), "x-edge-result-type": "Hit", "time-taken": "0.004"}),  # valid, from ts
        json.dumps({"timestamp": f"{t.timestamp() + 0.937:.3f}", "x-edge-result-type": "Wibble"}),  # Other, no tt
        json.dumps(
            {"date": f"{t:%Y-%m-%d}", "time": f"{t:%H:%M:%S}", "x-edge-result-type": "Miss", "time-taken": "-"}
        ),  # valid without timestamp, no time-taken
        json.dumps({"timestamp": epoch(t), "date": f"{t:%Y-%m-%d}", "time": "25:99:00", "x-edge-result-type": "Hit"}),
        json.dumps({"timestamp": epoch(t), "x-edge-result-type": "-", "time-taken": "0.1"}),  # malformed
        json.dumps({"timestamp": "not-a-number", "x-edge-result-type": "Hit"}),  # malformed
        json.dumps({"timestamp": "1e300", "x-edge-result-type": "Hit"}),  # malformed (out of range)
        json.dumps({"timestamp": epoch(t), "time-taken": "0.2"}),  # malformed: no result type
        "this is not JSON",  # malformed
        "",  # no record
    ]
    body = "\n".join(lines).encode() + b'\n{"timestamp":"' + epoch(t).encode() + b'","x-edge-result-type":"H\xffit"}\n'
    body += b'{"timestamp":"' + epoch(t).encode() + b'","x-edge-result-type":"Hit"'  # cut short: malformed
    with gzip.open(path, "wb") as handle:
        handle.write(body)
    return 11  # nine records above (the empty line is none), the one with invalid UTF-8, the one cut short


def w3c_junk(path: Path) -> int:
    t = FIRST_HOUR + timedelta(hours=1, minutes=3, seconds=59)
    header = "#Version: 1.0\n#Fields: timestamp DistributionId x-edge-result-type time-taken sc-status\n"
    rows = [
        f"{epoch(t)}\tEX\tHit\t0.010\t200",  # valid
        f"{t.timestamp() + 0.5:.3f}\tEX\tRedirect\t-\t301",  # valid, fractional timestamp, no time-taken
        f"{epoch(t)}\tEX\t-\t0.010\t200",  # malformed: result type '-'
        "garbage\tEX\tHit\t0.010\t200",  # malformed: timestamp
        f"{epoch(t)}\tEX",  # malformed: too few fields
        f"{epoch(t)}\tEX\tMiss\t0.25\t200\textra\tcells",  # valid: extra trailing cells are ignored
        f"{epoch(t)}\tEX\tFancyNewType\t1.5\t200",  # valid, published as Other
    ]
    body = (header + "\n".join(rows) + "\n").encode() + epoch(t).encode() + b"\tEX\tM\xffiss\t0.1\t200\n"
    with gzip.open(path, "wb") as handle:
        handle.write(body)
    return 8


def parquet_junk(path: Path) -> int:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    t = FIRST_HOUR + timedelta(minutes=59, seconds=59)
    columns = {
        "timestamp": [epoch(t), epoch(t), None, "bad", epoch(t), f"{t.timestamp() + 0.999:.3f}"],
        "date": [None, f"{t:%Y-%m-%d}", f"{t:%Y-%m-%d}", None, None, None],
        "time": [None, f"{t:%H:%M:%S}", f"{t:%H:%M:%S}", None, None, None],
        "x_edge_result_type": ["Hit", None, "Error", "Hit", "", "LimitExceeded"],
        "time_taken": ["0.001", "0.5", "86400.0", "0.1", "0.1", "0.3"],
    }  # valid, malformed, valid (time-taken out of range), malformed, malformed, valid
    pq.write_table(pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()}), path)
    return 6


JUNK = {
    LogFormat.JSON: (json_junk, "gz"),
    LogFormat.W3C: (w3c_junk, "gz"),
    LogFormat.PARQUET: (parquet_junk, "parquet"),
}


def add_junk(root: Path, log_format: LogFormat, layout: Layout) -> tuple[Path, int]:
    writer, extension = JUNK[log_format]
    hour = FIRST_HOUR + timedelta(hours=1)
    folder = root / layout.partition_prefix(DISTRIBUTIONS[0], hour)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{DISTRIBUTIONS[0]}.{hour:%Y-%m-%d-%H}.junk.{extension}"
    count = writer(path)
    return path, count


# ---------------------------------------------------------------------------------------------------------------
# every format in both layouts, through the CLI

CASES = [
    pytest.param(fmt, layout, id=f"{fmt.value}-{layout.value}")
    for fmt in (LogFormat.JSON, LogFormat.PARQUET, LogFormat.W3C)
    for layout in (Layout.PLAIN, Layout.HIVE)
]


@pytest.mark.parametrize(("log_format", "layout"), CASES)
def test_v2_format_through_the_cli(log_format: LogFormat, layout: Layout, tmp_path: Path) -> None:
    if log_format is LogFormat.PARQUET:
        pytest.importorskip("pyarrow")
    root = tmp_path / "logs"
    # w3c: files alternate between the full field list (TAB) and one without date/time in an order of its own
    # (a space-delimited delivery); JSON and Parquet: between all fields and the same subset.
    orders = (V2_FIELDS, NO_DATE_TIME)
    delimiter = "\t"
    files = generate_v2(root, log_format, DISTRIBUTIONS, FIRST_HOUR, hours=2, lines_per_hour=160, seed=11,
                        files_per_hour=2, layout=layout, field_orders=orders, delimiter=delimiter)  # fmt: skip
    if log_format is LogFormat.W3C:
        rng = random.Random(5)
        # a space-delimited file without date/time, and a plain file: no header, the DDL's own field order
        files.append(write_v2_log_file(root, DISTRIBUTIONS[1], FIRST_HOUR, 70, rng, log_format, layout,
                                       NO_DATE_TIME, delimiter=" ", suffix="space"))  # fmt: skip
        files.append(write_v2_log_file(root, DISTRIBUTIONS[1], FIRST_HOUR, 50, rng, log_format, layout,
                                       V2_FIELDS, header=False, suffix="plain"))  # fmt: skip
    _, junk_lines = add_junk(root, log_format, layout)
    expected = scan(root, log_format, plain_fields=V2_FIELDS)
    assert expected.lines == sum(f.lines for f in files) + junk_lines
    assert 0 < expected.malformed < junk_lines

    summary = run(root, tmp_path, log_format)
    assert summary["new"] == len(files) + 1
    assert (summary["lines"], summary["malformed"]) == (expected.lines, expected.malformed)
    assert_published(tmp_path / "datums.jsonl", expected, DISTRIBUTIONS)

    again = run(root, tmp_path, log_format)  # exactly once: a rerun publishes nothing
    assert (again["new"], again["lines"], again["datums"]) == (0, 0, 0)


def test_minutes_from_timestamp_equal_minutes_from_date_and_time(tmp_path: Path) -> None:
    """The same requests written with date/time and without: the published figures are identical."""
    published = []
    for fields in (V2_FIELDS, NO_DATE_TIME):
        root, work = tmp_path / f"logs-{len(fields)}", tmp_path / f"work-{len(fields)}"
        work.mkdir()
        generate_v2(root, LogFormat.W3C, DISTRIBUTIONS[:1], FIRST_HOUR, hours=2, lines_per_hour=300, seed=3,
                    field_orders=(fields,))  # fmt: skip
        summary = run(root, work, LogFormat.W3C)
        assert summary["malformed"] == 0
        records = [r for r in read_jsonl(work / "datums.jsonl") if r["MetricName"] != "PublishReceipt"]
        published.append(sorted(json.dumps(r, sort_keys=True) for r in records))
    assert published[0] == published[1]
    assert len(published[0]) > 100


# ---------------------------------------------------------------------------------------------------------------
# the real v2 line


def real_v2_line() -> bytes:
    for row in FIXTURES.read_bytes().split(b"\n")[1:]:
        if row.startswith(b"30\t"):
            return row.split(b"\t", 5)[5]
    raise AssertionError("fixture line 30 not found")


@pytest.mark.skipif(not FIXTURES.exists(), reason=f"real-line fixtures not found at {FIXTURES}")
@pytest.mark.parametrize("layout", [Layout.PLAIN, Layout.HIVE], ids=lambda layout: layout.value)
def test_real_v2_line_in_a_w3c_file_counts(layout: Layout, tmp_path: Path) -> None:
    raw = real_v2_line()
    cells = raw.split(b"\t")
    assert len(cells) == 39 == len(REAL_V2_HEADER.split())
    distribution_id, date, time = (c.decode() for c in cells[1:4])
    hour = datetime.strptime(f"{date} {time[:2]}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    root = tmp_path / "logs"
    folder = root / layout.partition_prefix(distribution_id, hour)
    folder.mkdir(parents=True)
    path = folder / f"{distribution_id}.{hour:%Y-%m-%d-%H}.real.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(f"#Version: 1.0\n#Fields: {REAL_V2_HEADER}\n".encode() + raw + b"\n")
    expected = scan(root, LogFormat.W3C)
    assert (expected.lines, expected.malformed) == (1, 0)
    minute = datetime.strptime(f"{date} {time}", "%Y-%m-%d %H:%M:%S").replace(second=0, tzinfo=UTC)
    assert expected.of(distribution_id) == {minute: 1.0}
    assert expected.timed(distribution_id) == {minute: [500]}  # time-taken 0.500

    out_window = ("--from", f"{hour:%Y-%m-%dT%H}", "--to", f"{hour:%Y-%m-%dT%H}")
    summary = run(root, tmp_path, LogFormat.W3C, *out_window)
    assert (summary["lines"], summary["malformed"]) == (1, 0)
    records = read_jsonl(tmp_path / "datums.jsonl")
    base = [("DistributionId", distribution_id)]
    assert jsonl_sums(records, "Requests", base) == {minute: 1.0}
    assert jsonl_sums(records, "Requests", [*base, ("ResultType", "Miss")]) == {minute: 1.0}
    histogram = jsonl_distributions(records, "TimeTaken", base)
    assert {m: sum(h.values()) for m, h in histogram.items()} == {minute: 1.0}
    assert jsonl_values(records, "TimeTakenP50", base) == {minute: [500.0]}


@pytest.mark.skipif(not FIXTURES.exists(), reason=f"real-line fixtures not found at {FIXTURES}")
def test_real_v2_line_is_malformed_as_a_legacy_line(tmp_path: Path) -> None:
    """The same file read as legacy: field 0 is an epoch, not a date, so the line is malformed (the reason the
    format has to be configured)."""
    raw = real_v2_line()
    root = tmp_path / "logs"
    folder = root / "EHLMG1T8SOX48/2025/02/02/22"
    folder.mkdir(parents=True)
    with gzip.open(folder / "EHLMG1T8SOX48.2025-02-02-22.real.gz", "wb") as handle:
        handle.write(f"#Version: 1.0\n#Fields: {REAL_V2_HEADER}\n".encode() + raw + b"\n")
    summary = run(root, tmp_path, LogFormat.LEGACY, "--from", "2025-02-02T22", "--to", "2025-02-02T22")
    assert (summary["lines"], summary["malformed"]) == (1, 1)


# ---------------------------------------------------------------------------------------------------------------
# unreadable files


@pytest.mark.parametrize("log_format", [LogFormat.JSON, LogFormat.PARQUET, LogFormat.W3C], ids=lambda f: f.value)
def test_unreadable_v2_file_is_isolated(log_format: LogFormat, tmp_path: Path) -> None:
    if log_format is LogFormat.PARQUET:
        pytest.importorskip("pyarrow")
    root = tmp_path / "logs"
    generate_v2(root, log_format, DISTRIBUTIONS[:1], FIRST_HOUR, hours=1, lines_per_hour=200, files_per_hour=3)
    folder = root / Layout.PLAIN.partition_prefix(DISTRIBUTIONS[0], FIRST_HOUR)
    bad = folder / f"{DISTRIBUTIONS[0]}.{FIRST_HOUR:%Y-%m-%d-%H}.broken.{JUNK[log_format][1]}"
    bad.write_bytes(b"PAR1 cut short" if log_format is LogFormat.PARQUET else b"\x1f\x8b\x08\x00truncated")
    age_past_retry(bad)  # a young unreadable file is retried, not recorded (tests/test_hostile_input.py)
    expected = scan(root, log_format, skip=[bad], plain_fields=V2_FIELDS)
    out, state = tmp_path / "datums.jsonl", tmp_path / "state"
    result = cli("run", "--logs", str(root), "--sink", f"jsonl:{out}", "--state", str(state),
                 "--log-format", log_format.value, *WINDOW)  # fmt: skip
    assert result.code == 0, result.err
    assert f"UNREADABLE {bad.resolve()}" in result.err
    assert parse_summary(result.err)["lines"] == expected.lines
    assert jsonl_sums(read_jsonl(out), "Requests", [("DistributionId", DISTRIBUTIONS[0])]) == expected.of(
        DISTRIBUTIONS[0]
    )


# ---------------------------------------------------------------------------------------------------------------
# the Athena side: the DDLs and the view, as Athena SQL


LEGACY_COLUMNS = table_spec(SqlFile.load(TABLE_DDL)).columns


@pytest.mark.parametrize("log_format", [LogFormat.JSON, LogFormat.PARQUET, LogFormat.W3C], ids=lambda f: f.value)
def test_v2_ddl_parses_as_athena_with_every_column_the_view_needs(log_format: LogFormat) -> None:
    ddl = SqlFile.load(ddl_name(log_format))
    assert ddl.parameters == {"location", "location_template"}
    location = "s3://my-logs/cloudfront/"
    for layout in Layout:
        text = ddl.render_literal(
            {"location": Varchar(location), "location_template": Varchar(layout.athena_template(location))}
        )
        statements = sqlglot.parse(text, read="athena")
        assert len(statements) == 1 and isinstance(statements[0], exp.Create)
        assert layout.athena_template(location) in text
    table = v2_table(ddl, log_format)
    assert table.name == V2_TABLE
    assert table.partition_columns == PARTITIONS
    assert len(set(table.columns)) == len(table.columns)
    assert {"timestamp", *LEGACY_COLUMNS} <= set(table.columns)
    if log_format is LogFormat.JSON:
        # every key is the v2 field's spelling and maps onto its column by the naming rule
        assert all(column_name(key) == column for column, key in zip(table.columns, table.keys, strict=True))
        assert {"x-edge-result-type", "time-taken", "cs(Host)", "cs(User-Agent)", "timestamp"} <= set(table.keys)
    if log_format is LogFormat.W3C:
        # as written, the column list is the real v2 line's field order, then the legacy columns it lacks
        real = [column_name(f) for f in REAL_V2_HEADER.split()]
        assert list(table.columns[: len(real)]) == real
        assert set(table.columns[len(real) :]) == set(LEGACY_COLUMNS) - set(real)
        assert [column_name(f) for f in V2_FIELDS] == real
        assert table.delimiter == "\t" and table.header_lines == 2


def test_view_yields_the_legacy_columns_from_the_v2_table() -> None:
    view = SqlFile.load(NORMALISING_VIEW)
    tree = sqlglot.parse_one(view.text, read="athena")
    assert isinstance(tree, exp.Create) and tree.kind == "VIEW" and tree.this.name == LOG_RELATION
    assert {t.name for t in tree.find_all(exp.Table)} == {LOG_RELATION, V2_TABLE}
    select = tree.expression
    assert isinstance(select, exp.Select)
    assert select.named_selects == [*LEGACY_COLUMNS, *PARTITIONS, "$path"]


def test_json_ddl_with_case_insensitive_keys_is_refused(tmp_path: Path) -> None:
    """DuckDB matches JSON keys case-sensitively; a DDL that lets Athena match them otherwise is refused."""
    shutil.copy(DEFAULT_SQL_DIR / f"{ddl_name(LogFormat.JSON)}.sql", tmp_path)
    path = tmp_path / f"{ddl_name(LogFormat.JSON)}.sql"
    original = path.read_text()
    assert v2_table(SqlFile.load(ddl_name(LogFormat.JSON), tmp_path), LogFormat.JSON).columns
    path.write_text(original.replace("'case.insensitive' = 'false'", "'case.insensitive' = 'true'"))
    with pytest.raises(SqlTemplateError, match="case-sensitively"):
        v2_table(SqlFile.load(ddl_name(LogFormat.JSON), tmp_path), LogFormat.JSON)
    path.write_text(original.replace("  'mapping.time_taken' = 'time-taken',\n", ""))
    with pytest.raises(SqlTemplateError, match=r"mapping\.time_taken"):
        v2_table(SqlFile.load(ddl_name(LogFormat.JSON), tmp_path), LogFormat.JSON)


def test_wrong_ddl_for_the_format_is_refused() -> None:
    with pytest.raises(SqlTemplateError, match="parquet"):
        v2_table(SqlFile.load(ddl_name(LogFormat.JSON)), LogFormat.PARQUET)


# ---------------------------------------------------------------------------------------------------------------
# the Lambda handler on a v2 format: S3, Athena (answered by the DuckDB twin) and CloudWatch through moto

# tests/test_handler_moto.py's fixtures, registered here under these names (a moto server for this module)
endpoint = harness.endpoint
moto_aws = harness.aws


@pytest.mark.parametrize("log_format", [LogFormat.JSON, LogFormat.PARQUET, LogFormat.W3C], ids=lambda f: f.value)
def test_handler_sends_the_one_metrics_query_for_a_v2_format(
    log_format: LogFormat, moto_aws: tuple[AthenaTwin, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler sends sql/minute_metrics.sql unchanged (the twin checks the text and its parameters), over the
    v2 files it lists in S3; the twin answers as Athena would over the v2 table and the normalising view."""
    if log_format is LogFormat.PARQUET:
        pytest.importorskip("pyarrow")
    twin, s3 = moto_aws
    twin.engine = DuckDBEngine(log_format=log_format)
    monkeypatch.setenv("LOG_FORMAT", log_format.value)
    now = datetime.now(UTC).replace(minute=5, second=0, microsecond=0)
    first = now.replace(minute=0) - timedelta(hours=3)
    root = tmp_path / "logs"
    distribution_id = f"E{log_format.value.upper()}V2HANDLER"
    orders = (V2_FIELDS, NO_DATE_TIME)
    files = generate_v2(root, log_format, [distribution_id], first, hours=2, lines_per_hour=300, field_orders=orders)
    for sample in files:
        s3.upload_file(str(sample.path), LOG_BUCKET, PREFIX + sample.path.relative_to(root).as_posix())
    expected = scan(root, log_format)

    summary = lambda_handler({"scheduled_time": now.strftime("%Y-%m-%dT%H:%M:%SZ")}, FakeContext())
    assert summary["status"] == "ok" and summary["files_processed"] == len(files)
    assert (
        (summary["lines"], summary["malformed_lines"])
        == (expected.lines, expected.malformed)
        == (
            sum(f.lines for f in files),
            0,
        )
    )
    assert twin.queries == 1
    window = (first - timedelta(hours=1), now + timedelta(hours=1))
    assert cloudwatch_sums(distribution_id, *window) == Counter(
        {m: int(n) for m, n in expected.of(distribution_id).items()}
    )


def test_handler_reads_log_format_from_the_environment() -> None:
    env = {"LOG_BUCKET": "b", "ATHENA_WORKGROUP": "w", "ATHENA_DATABASE": "d", "RESULTS_BUCKET": "r"}
    assert HandlerConfig.from_env(env).log_format is LogFormat.LEGACY
    assert HandlerConfig.from_env({**env, "LOG_FORMAT": "parquet"}).log_format is LogFormat.PARQUET
    with pytest.raises(ConfigError, match="LOG_FORMAT='csv'"):
        HandlerConfig.from_env({**env, "LOG_FORMAT": "csv"})
