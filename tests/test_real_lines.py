"""Real CloudFront log lines of every format era (fixtures/real-cloudfront-lines) through the whole job.

Each line is kept byte-exact and filed in the hourly partition of its own date and hour (a line whose date does
not parse goes to a fixed hour), under three distributions in both path layouts. Expected figures come from
tests/reference.py. By the malformed rule, exactly three fixture lines are malformed (checked by hand against
SOURCES.md): the two 12-field 2012 lines (31, 32: no x-edge-result-type) and the standard-logging-v2 line (30:
'timestamp' and 'DistributionId' come first, so field 0 is an epoch, not a date). Line 11 (18 fields, 2014) has
no time-taken: it is a request outside the time-taken distribution.
"""

from __future__ import annotations

import gzip
import os
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from job.demo.sample_logs import HEADER
from tests.conftest import (
    HOUR,
    MetricReader,
    as_float_map,
    assert_cloudwatch_matches,
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
from tests.reference import Reference, classify, nearest_rank, read_lines, scan_tree

FIXTURES = Path(os.environ.get("CFMETRICS_REAL_LINES", "/work/shared/fixtures/real-cloudfront-lines/lines.tsv"))
EXPECTED_MALFORMED = {"30", "31", "32"}
NO_TIME_TAKEN = "11"
UNPARSEABLE_HOUR = datetime(2020, 1, 1, 0, tzinfo=UTC)
PERCENTILES = {"TimeTakenP50": 0.5, "TimeTakenP90": 0.9, "TimeTakenP99": 0.99}

pytestmark = pytest.mark.skipif(not FIXTURES.exists(), reason=f"real-line fixtures not found at {FIXTURES}")


@dataclass(frozen=True)
class FixtureLine:
    id: str
    source: str
    cells: int
    raw: bytes


def load_fixture_lines() -> list[FixtureLine]:
    """lines.tsv read as bytes: id, source_key, cells, fidelity, note, then the raw line with its own TABs."""
    rows = FIXTURES.read_bytes().split(b"\n")
    assert rows[0].startswith(b"#"), "the first row is the column header"
    lines = []
    for row in rows[1:]:
        if not row:
            continue
        assert not row.startswith(b"#"), "only the first row is a header"
        number, source, cells, _fidelity, _note, raw = row.split(b"\t", 5)
        lines.append(FixtureLine(number.decode(), source.decode(), int(cells), raw))
    return lines


def own_hour(raw: bytes) -> datetime | None:
    fields = raw.split(b"\t")
    try:
        when = datetime.strptime(f"{fields[0].decode()} {fields[1].decode()}", "%Y-%m-%d %H:%M:%S")
    except (ValueError, IndexError, UnicodeDecodeError):
        return None
    return when.replace(minute=0, second=0, tzinfo=UTC)


def distribution_of(line: FixtureLine, ids: list[str]) -> str:
    return ids[int(line.id) % len(ids)]


def write_partitions(root: Path, placed: dict[tuple[str, datetime], list[bytes]], hive: set[str]) -> list[Path]:
    """One gzip file per (distribution, hour) with the two header lines, lines byte-exact and LF-terminated."""
    paths = []
    for (distribution_id, hour), lines in sorted(placed.items()):
        if distribution_id in hive:
            folder = root / (
                f"DistributionId={distribution_id}/year={hour:%Y}/month={hour:%m}/day={hour:%d}/hour={hour:%H}"
            )
        else:
            folder = root / f"{distribution_id}/{hour:%Y/%m/%d/%H}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{distribution_id}.{hour:%Y-%m-%d-%H}.real.gz"
        with gzip.open(path, "wb") as out:
            out.write(HEADER.encode() + b"".join(line + b"\n" for line in lines))
        paths.append(path)
    return paths


def test_fixture_rows_are_intact() -> None:
    lines = load_fixture_lines()
    assert len(lines) == 33
    assert len({line.id for line in lines}) == len(lines)
    for line in lines:
        assert len(line.raw.split(b"\t")) == line.cells, f"line {line.id}: cell count differs from the fixture's"
    assert {line.cells for line in lines} >= {12, 18, 19, 23, 24, 26, 33, 39}


def test_malformed_fixture_lines_are_the_expected_ones() -> None:
    lines = load_fixture_lines()
    malformed = {line.id for line in lines if classify(line.raw.split(b"\t")).minute is None}
    assert malformed == EXPECTED_MALFORMED
    eras = {line.id: line.cells for line in lines if line.id in malformed}
    assert eras == {"30": 39, "31": 12, "32": 12}
    no_time = [line.id for line in lines if classify(line.raw.split(b"\t")).time_taken_ms is None]
    assert no_time == [NO_TIME_TAKEN, *sorted(EXPECTED_MALFORMED)]


def test_real_lines_in_their_own_partitions_through_jsonl(tmp_path: Path) -> None:
    lines = load_fixture_lines()
    ids = ["EREAL0PLAIN", "EREAL1HIVE", "EREAL2PLAIN"]
    placed: dict[tuple[str, datetime], list[bytes]] = defaultdict(list)
    for line in lines:
        placed[(distribution_of(line, ids), own_hour(line.raw) or UNPARSEABLE_HOUR)].append(line.raw)
    root, out = tmp_path / "logs", tmp_path / "datums.jsonl"
    paths = write_partitions(root, placed, hive={"EREAL1HIVE"})
    assert len(paths) > 15  # many eras, many partitions from 2012 to 2025

    result = run_cli("run", "--logs", str(root), "--sink", f"jsonl:{out}", "--state", str(tmp_path / "state"))
    assert result.code == 0, result.err
    ref = scan_tree(root)
    summary = parse_summary(result.err)
    assert summary["new"] == len(paths)
    assert summary["lines"] == len(lines) == sum(ref.lines.values())
    assert summary["malformed"] == ref.total_malformed() == len(EXPECTED_MALFORMED)

    records = read_jsonl(out)
    mapping = other_mapping(ref)
    published = 0.0
    for d in ids:
        base = [("DistributionId", d)]
        requests = jsonl_sums(records, "Requests", base)
        assert requests == as_float_map(ref.requests(d)), d
        published += sum(requests.values())
        for result_type, per_minute in ref.requests_by_type(d, mapping).items():
            assert jsonl_sums(records, "Requests", [*base, ("ResultType", result_type)]) == as_float_map(per_minute)
        histograms = jsonl_distributions(records, "TimeTaken", base)
        assert {m: sum(h.values()) for m, h in histograms.items()} == as_float_map(ref.time_taken_counts(d))
        raw = ref.time_taken_values(d)
        for metric, q in PERCENTILES.items():
            assert jsonl_values(records, metric, base) == {m: [float(nearest_rank(v, q))] for m, v in raw.items()}
    # Every fixture line is either counted as a request or classified malformed.
    assert published + summary["malformed"] == len(lines)
    assert ref.total_requests() + ref.total_malformed() == len(lines)

    # Line 11 (2014, 18 fields): a request with no time-taken.
    line11 = next(line for line in lines if line.id == NO_TIME_TAKEN)
    d11 = distribution_of(line11, ids)
    minute = classify(line11.raw.split(b"\t")).minute
    assert minute is not None
    assert jsonl_sums(records, "Requests", [("DistributionId", d11)])[minute] == 1
    assert minute not in jsonl_distributions(records, "TimeTaken", [("DistributionId", d11)])


def shift_date(raw: bytes, day: datetime) -> bytes:
    """Rewrite field 0 to `day` when it is a date; any other line stays byte-exact."""
    fields = raw.split(b"\t")
    try:
        datetime.strptime(fields[0].decode(), "%Y-%m-%d")
    except (ValueError, UnicodeDecodeError):
        return raw
    return b"\t".join([f"{day:%Y-%m-%d}".encode(), *fields[1:]])


def test_real_lines_on_a_recent_day_through_cloudwatch(
    moto_endpoint: str, tmp_path: Path, namespace: str, metrics: MetricReader
) -> None:
    lines = load_fixture_lines()
    ids = [unique_distribution(namespace, str(i)) for i in range(3)]
    day = last_midnight() - timedelta(days=2)
    placed: dict[tuple[str, datetime], list[bytes]] = defaultdict(list)
    for line in lines:
        raw = shift_date(line.raw, day)
        assert len(raw.split(b"\t")) == line.cells
        placed[(distribution_of(line, ids), own_hour(raw) or day + 12 * HOUR)].append(raw)
    root = tmp_path / "logs"
    write_partitions(root, placed, hive={ids[1]})
    ref = scan_tree(root)
    assert ref.total_malformed() == len(EXPECTED_MALFORMED)
    assert {m.date() for (_, m) in ref.minutes} == {day.date()}

    result = run_cli(*run_args(root, moto_endpoint, namespace, tmp_path / "state"))
    assert result.code == 0, result.err
    summary = parse_summary(result.err)
    assert (summary["lines"], summary["malformed"]) == (len(lines), len(EXPECTED_MALFORMED))
    assert_cloudwatch_matches(metrics, ref, day, day + 24 * HOUR + 2 * timedelta(minutes=1))
    total = sum(sum(metrics.sums("Requests", [("DistributionId", d)], day, day + 25 * HOUR).values()) for d in ids)
    assert total == len(lines) - len(EXPECTED_MALFORMED)


def test_reference_reads_the_partitioned_copy_byte_exact(tmp_path: Path) -> None:
    """The gzip files hold the fixture lines unchanged (the reference reads back exactly what was written)."""
    lines = load_fixture_lines()
    placed: dict[tuple[str, datetime], list[bytes]] = defaultdict(list)
    for line in lines:
        placed[("EBYTES", own_hour(line.raw) or UNPARSEABLE_HOUR)].append(line.raw)
    paths = write_partitions(tmp_path, placed, hive=set())
    back = sorted(raw for path in paths for raw in read_lines(path))
    assert back == sorted(line.raw for line in lines)
    reference = Reference()
    for path in paths:
        reference.add_file("EBYTES", path)
    assert reference.total_requests() == len(lines) - len(EXPECTED_MALFORMED)
