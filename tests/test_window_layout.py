"""Hour windows, partition paths, the local log store, the run window and query chunks."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from job.adapters.local_store import LocalLogStore
from job.core.errors import ConfigError, LayoutError
from job.core.files import Layout, LogFile, ParsedPath, parse_relative_path
from job.core.window import EARLIEST_LOGS, HourWindow, effective_window, parse_time
from job.query.sql_files import query_parameters
from job.query.sql_values import VarcharList
from job.runner import chunk_files, planned_partitions


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------------------------
# parse_time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-28T15", utc(2026, 11, 28, 15)),
        ("2026-11-28T15:30", utc(2026, 11, 28, 15, 30)),
        ("2026-11-28T15:30:45", utc(2026, 11, 28, 15, 30, 45)),
        ("2026-11-28 15:30", utc(2026, 11, 28, 15, 30)),
        ("2026-11-28 15", utc(2026, 11, 28, 15)),
        ("2026-11-28", utc(2026, 11, 28)),
        ("2026-11-28T15Z", utc(2026, 11, 28, 15)),
        ("2026-11-28T15:30:45Z", utc(2026, 11, 28, 15, 30, 45)),
        ("2026-11-28T15:00+00:00", utc(2026, 11, 28, 15)),
        ("  2026-11-28T15  ", utc(2026, 11, 28, 15)),
        ("2024-02-29T23", utc(2024, 2, 29, 23)),
    ],
)
def test_parse_time_accepts(text: str, expected: datetime) -> None:
    parsed = parse_time(text, "from")
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    ["", "yesterday", "28/11/2026", "2026-11-28T15:30+02:00", "2026-11-28T15:30:45.123", "2026-1-2", "20261128T15"],
)
def test_parse_time_rejects_other_forms(text: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_time(text, "to")
    message = str(error.value)
    assert error.value.setting == "to" and "--" not in message, "the core names no flag; the CLI adds it"
    assert repr(text) in message
    assert "YYYY-MM-DD" in message


@pytest.mark.parametrize("text", ["2026-13-01", "2026-02-30", "2025-02-29T00", "2026-11-28T24", "2026-11-28T15:60"])
def test_parse_time_rejects_impossible_dates(text: str) -> None:
    with pytest.raises(ConfigError, match=r".* is not a valid date or time") as error:
        parse_time(text, "from")
    assert repr(text) in str(error.value) and error.value.setting == "from"


def test_parse_time_accepts_space_separated_seconds() -> None:
    assert parse_time("2026-11-28 15:30:45", "from") == utc(2026, 11, 28, 15, 30, 45)


# ---------------------------------------------------------------------------------------------------------------
# HourWindow


def test_window_to_before_from_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"last hour \(2026-11-28T14\) is before the first \(2026-11-28T15\)"
    ) as error:
        HourWindow(utc(2026, 11, 28, 15), utc(2026, 11, 28, 14))
    assert error.value.setting == "to"


@pytest.mark.parametrize(
    ("first", "last"),
    [
        (datetime(2026, 11, 28, 15), utc(2026, 11, 28, 16)),
        (utc(2026, 11, 28, 15), datetime(2026, 11, 28, 16)),
        (utc(2026, 11, 28, 15, 30), utc(2026, 11, 28, 16)),
        (utc(2026, 11, 28, 15), utc(2026, 11, 28, 16, 0, 1)),
    ],
    ids=["naive-first", "naive-last", "not-on-the-hour", "seconds"],
)
def test_window_bounds_must_be_aware_hours(first: datetime, last: datetime) -> None:
    with pytest.raises(ConfigError, match="on the hour"):
        HourWindow(first, last)


def test_window_from_bounds_hours_and_contains() -> None:
    window = HourWindow.from_bounds(utc(2026, 11, 28, 22, 59, 59), utc(2026, 11, 29, 1, 0))
    assert (window.first, window.last) == (utc(2026, 11, 28, 22), utc(2026, 11, 29, 1))
    assert list(window.hours()) == [
        utc(2026, 11, 28, 22),
        utc(2026, 11, 28, 23),
        utc(2026, 11, 29, 0),
        utc(2026, 11, 29, 1),
    ]
    assert window.contains(utc(2026, 11, 28, 22)) and window.contains(utc(2026, 11, 29, 1))
    assert not window.contains(utc(2026, 11, 28, 21)) and not window.contains(utc(2026, 11, 29, 2))
    assert str(window) == "2026-11-28T22..2026-11-29T01 UTC"
    single = HourWindow(utc(2026, 11, 28, 15), utc(2026, 11, 28, 15))
    assert list(single.hours()) == [utc(2026, 11, 28, 15)]


# ---------------------------------------------------------------------------------------------------------------
# partition paths


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        (
            "E2EXAMPLE/2026/11/28/15/E2EXAMPLE.2026-11-28-15.abc.gz",
            ParsedPath(Layout.PLAIN, "E2EXAMPLE", utc(2026, 11, 28, 15)),
        ),
        (
            "DistributionId=E2EXAMPLE/year=2026/month=11/day=28/hour=15/x.gz",
            ParsedPath(Layout.HIVE, "E2EXAMPLE", utc(2026, 11, 28, 15)),
        ),
        ("E1/2024/02/29/00/a", ParsedPath(Layout.PLAIN, "E1", utc(2024, 2, 29, 0))),
    ],
)
def test_parse_relative_path(relative: str, expected: ParsedPath) -> None:
    assert parse_relative_path(relative) == expected


@pytest.mark.parametrize("layout", list(Layout))
def test_partition_prefix_parses_back(layout: Layout) -> None:
    hour = utc(2026, 1, 2, 3)
    parsed = parse_relative_path(layout.partition_prefix("E2EXAMPLE", hour) + "file.gz")
    assert parsed == ParsedPath(layout, "E2EXAMPLE", hour)


def test_athena_template_matches_partition_prefix() -> None:
    hour = utc(2026, 1, 2, 3)
    for layout in Layout:
        template = layout.athena_template("s3://b/p/")
        filled = (
            template.replace("${distributionid}", "E1")
            .replace("${year}", "2026")
            .replace("${month}", "01")
            .replace("${day}", "02")
            .replace("${hour}", "03")
        )
        assert filled == "s3://b/p/" + layout.partition_prefix("E1", hour)


@pytest.mark.parametrize(
    "relative",
    [
        "E2EXAMPLE/2026/13/28/15/x.gz",  # month 13
        "E2EXAMPLE/2026/02/30/15/x.gz",  # 30 February
        "E2EXAMPLE/2026/11/28/24/x.gz",  # hour 24
        "e2example/2026/11/28/15/x.gz",  # lower-case id
        "E2EXAMPLE/2026/11/28/x.gz",  # no hour level
        "E2EXAMPLE/2026/11/28/15/.x.gz",  # hidden file
        "E2EXAMPLE/2026/11/28/15/sub/x.gz",  # one level too deep
        "E2EXAMPLE/26/11/28/15/x.gz",  # two-digit year
        "DistributionId=E2EXAMPLE/year=2026/month=13/day=28/hour=15/x.gz",
        "DistributionId=e2/year=2026/month=11/day=28/hour=15/x.gz",
        "DistributionId=E2EXAMPLE/year=2026/month=11/day=28/x.gz",
        "DistributionId=E2EXAMPLE/year=2026/month=11/day=28/hour=15/.hidden",
        "E2EXAMPLE.2026-11-28-15.abc.gz",  # the legacy flat layout
    ],
)
def test_parse_relative_path_rejects(relative: str) -> None:
    assert parse_relative_path(relative) is None


def test_parse_relative_path_rejects_newline_in_id() -> None:
    assert parse_relative_path("E2EXAMPLE\n/2026/11/28/15/x.gz") is None


# ---------------------------------------------------------------------------------------------------------------
# LocalLogStore


def touch(root: Path, relative: str, size: int = 3) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def test_local_store_lists_window_and_distributions(tmp_path: Path) -> None:
    wanted = {
        "E1/2026/11/28/15/E1.2026-11-28-15.a.gz": (5, "E1", utc(2026, 11, 28, 15), Layout.PLAIN),
        "E1/2026/11/28/16/E1.2026-11-28-16.b.gz": (6, "E1", utc(2026, 11, 28, 16), Layout.PLAIN),
        "DistributionId=E2/year=2026/month=11/day=28/hour=16/c.gz": (7, "E2", utc(2026, 11, 28, 16), Layout.HIVE),
    }
    for relative, (size, *_) in wanted.items():
        touch(tmp_path, relative, size)
    touch(tmp_path, "E1/2026/11/28/14/before-window.gz")
    touch(tmp_path, "E1/2026/11/28/17/after-window.gz")
    touch(tmp_path, "E3/2026/11/28/15/other-distribution.gz")
    touch(tmp_path, "E1/2026/13/28/15/bad-month.gz")
    touch(tmp_path, "e1/2026/11/28/15/lower-case.gz")
    touch(tmp_path, "E1/2026/11/28/no-hour.gz")
    touch(tmp_path, "README.txt")
    touch(tmp_path, "E1/2026/11/28/15/.hidden.gz")
    touch(tmp_path, ".state/E1/2026/11/28/15/in-hidden-folder.gz")

    store = LocalLogStore(tmp_path)
    listing = store.list(HourWindow(utc(2026, 11, 28, 15), utc(2026, 11, 28, 16)), ["E1", "E2"])
    root = tmp_path.resolve()
    expected = sorted(
        LogFile(dist, hour, str(root / relative), size, layout)
        for relative, (size, dist, hour, layout) in wanted.items()
    )
    assert list(listing.files) == expected
    assert [(f.size, f.layout) for f in listing.files] == [(f.size, f.layout) for f in expected]
    assert listing.unrecognised == (
        "E1/2026/11/28/no-hour.gz",
        "E1/2026/13/28/15/bad-month.gz",
        "README.txt",
        "e1/2026/11/28/15/lower-case.gz",
    )

    everything = store.list(None)
    assert len(everything.files) == len(wanted) + 3
    assert {f.distribution_id for f in everything.files} == {"E1", "E2", "E3"}
    only_e2 = store.list(None, ["E2"])
    assert [f.distribution_id for f in only_e2.files] == ["E2"]


def test_local_store_needs_a_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(LayoutError, match="no such folder"):
        LocalLogStore(missing)


# ---------------------------------------------------------------------------------------------------------------
# effective_window

NOW = utc(2026, 11, 28, 15, 37)


def test_cloudwatch_default_is_the_last_two_weeks() -> None:
    window = effective_window(None, None, NOW, checks_age=True)
    # two weeks before 15:37 is 14 Nov 15:37; two hours of margin: 17:37, floored to the hour
    assert window == HourWindow(utc(2026, 11, 14, 17), utc(2026, 11, 28, 16))


def test_cloudwatch_refuses_an_older_from() -> None:
    with pytest.raises(ConfigError, match="jsonl") as error:
        effective_window(utc(2026, 11, 14, 16), None, NOW, checks_age=True)
    assert "start 2026-11-14T16" in str(error.value) and error.value.setting == "from"
    assert "2026-11-14T17" in str(error.value)


def test_cloudwatch_window_with_bounds() -> None:
    window = effective_window(utc(2026, 11, 14, 17, 45), utc(2026, 11, 20, 3, 10), NOW, checks_age=True)
    assert window == HourWindow(utc(2026, 11, 14, 17), utc(2026, 11, 20, 3))
    window = effective_window(utc(2026, 11, 27), None, NOW, checks_age=True)
    assert window == HourWindow(utc(2026, 11, 27), utc(2026, 11, 28, 16))


def test_jsonl_window() -> None:
    assert effective_window(None, None, NOW, checks_age=False) is None
    old = utc(2020, 1, 1, 5)
    assert effective_window(old, None, NOW, checks_age=False) == HourWindow(old, utc(2026, 11, 28, 16))
    assert effective_window(None, old, NOW, checks_age=False) == HourWindow(EARLIEST_LOGS, old)
    assert effective_window(old, utc(2020, 1, 2, 6, 30), NOW, checks_age=False) == HourWindow(old, utc(2020, 1, 2, 6))


def test_window_to_before_from_through_effective_window() -> None:
    with pytest.raises(ConfigError, match="is before the first"):
        effective_window(utc(2026, 11, 28, 10), utc(2026, 11, 28, 9), NOW, checks_age=False)


# ---------------------------------------------------------------------------------------------------------------
# chunk_files


def log_files(lengths: list[int]) -> list[LogFile]:
    hour = utc(2026, 11, 28, 15)
    return [LogFile("E1", hour, f"/{i:03d}" + "x" * (n - 4), 1, Layout.PLAIN) for i, n in enumerate(lengths)]


def cost(chunk: list[LogFile]) -> int:
    return sum(len(f.uri.encode()) + 4 for f in chunk)  # quote, quote, comma, space


@pytest.mark.parametrize(
    ("lengths", "max_files", "max_bytes"),
    [
        ([10] * 25, 10, 10_000),  # bound by the file count
        ([100] * 25, 1000, 520),  # bound by bytes: five 104-byte entries per chunk
        ([10, 200, 30, 90, 5, 70, 300, 20] * 5, 4, 400),  # both
        ([50], 1, 60),
    ],
)
def test_chunk_files_respects_both_limits(lengths: list[int], max_files: int, max_bytes: int) -> None:
    files = log_files(lengths)
    chunks = chunk_files(files, max_files, max_bytes)
    assert [f for chunk in chunks for f in chunk] == files  # every file once, order kept
    for chunk in chunks:
        assert 0 < len(chunk) <= max_files
        assert cost(chunk) <= max_bytes
    # greedy: a chunk closes only when the next file would not fit
    for chunk, following in itertools.pairwise(chunks):
        assert len(chunk) == max_files or cost(chunk) + cost(following[:1]) > max_bytes


def test_chunk_files_exact_counts() -> None:
    assert [len(c) for c in chunk_files(log_files([10] * 25), 10, 10_000)] == [10, 10, 5]
    assert [len(c) for c in chunk_files(log_files([100] * 12), 1000, 520)] == [5, 5, 2]
    assert chunk_files([], 10, 100) == []


def test_chunk_files_puts_an_oversized_file_alone() -> None:
    files = log_files([10, 500, 10])
    assert chunk_files(files, 10, 100) == [[files[0]], [files[1]], [files[2]]]


def test_a_26_hour_look_back_plans_at_most_27_partitions() -> None:
    """A 26-hour look-back with a file in every hour: two queries, cut at midnight, and the product of the years,
    months, days and hours each names (what partition projection plans) adds up to the 26 hours read, not 2 x 24."""
    first = utc(2026, 11, 27, 22)
    files = [LogFile("E1", first + timedelta(hours=h), f"/f{h:02d}", 10, Layout.PLAIN) for h in range(26)]
    chunks = chunk_files(files, 1000, 100_000)
    assert [len(c) for c in chunks] == [2, 24]
    planned = 0
    for chunk in chunks:
        params = query_parameters("E1", [f.hour for f in chunk], [f.uri for f in chunk])
        sizes = [
            len(v.values)
            for n, v in params.items()
            if n in ("years", "months", "days", "hours") and isinstance(v, VarcharList)
        ]
        planned += math.prod(sizes)
    assert planned == 26


def test_files_of_two_days_share_a_query_while_few_partitions_are_planned() -> None:
    """An on-time file and a late one from the same hour yesterday: one query, 2 partitions planned."""
    now, late = utc(2026, 11, 28, 15), utc(2026, 11, 27, 15)
    files = [LogFile("E1", h, f"/{h:%d%H}", 10, Layout.PLAIN) for h in (late, now)]
    assert chunk_files(files, 1000, 100_000) == [files]
    assert planned_partitions([late, now]) == 2
    assert planned_partitions([late, now - timedelta(hours=1)]) == 4  # days {27, 28} x hours {14, 15}


def test_window_hours_are_consecutive() -> None:
    window = HourWindow(utc(2026, 3, 29, 0), utc(2026, 3, 29, 5))
    hours = list(window.hours())
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(hours))
    assert len(hours) == 6
