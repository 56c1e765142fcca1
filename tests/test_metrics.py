"""The output contract: the metrics query's rows as CloudWatch datums."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pandas as pd
import pytest

from job.core.limits import MAX_VALUES_PER_DATUM
from job.core.metrics import (
    DEFAULT_METRIC_GROUPS,
    DOCUMENTED_RESULT_TYPES,
    OTHER_RESULT_TYPE,
    Datum,
    MetricGroup,
    Unit,
    as_utc_minute,
    datums_from_rows,
    parse_metric_groups,
)

DIST = "E2EXAMPLE1ABCD"
# grouping_id of the query's rows: grouping(minute, result_type, time_taken_bucket_ms, file)
MINUTE, BY_TYPE, BY_BUCKET, BY_FILE = 0b0111, 0b0011, 0b0101, 0b1110
BASE = (("DistributionId", DIST),)
T0 = datetime(2026, 11, 28, 15, 4, tzinfo=UTC)


def row(
    minute: Any,
    grouping_id: int,
    requests: int,
    result_type: str | None = None,
    bucket: float | None = None,
    percentiles: tuple[Any, Any, Any] = (None, None, None),
) -> dict[str, Any]:
    return {
        "minute": minute,
        "grouping_id": grouping_id,
        "result_type": result_type,
        "time_taken_bucket_ms": bucket,
        "requests": requests,
        "file": None,
        "valid_requests": requests,
        "time_taken_p50_ms": percentiles[0],
        "time_taken_p90_ms": percentiles[1],
        "time_taken_p99_ms": percentiles[2],
    }


def by_metric(datums: tuple[Datum, ...], metric: str) -> list[Datum]:
    return [d for d in datums if d.metric == metric]


def test_requests_total_and_per_result_type() -> None:
    t1 = T0 + timedelta(minutes=1)
    rows = [
        row(T0, MINUTE, 10, percentiles=(12, 80, 950)),
        row(T0, BY_TYPE, 7, "Hit"),
        row(T0, BY_TYPE, 3, "Miss"),
        row(t1, MINUTE, 5, percentiles=(1, 2, 3)),
        row(t1, BY_TYPE, 5, "Error"),
    ]
    result = datums_from_rows(rows, DIST)
    assert result.requests == 15
    assert result.malformed_lines == 0
    assert result.other_result_types == frozenset()
    totals = {(d.timestamp, d.dimensions): d.value for d in by_metric(result.datums, "Requests")}
    assert totals == {
        (T0, BASE): 10.0,
        (T0, (*BASE, ("ResultType", "Hit"))): 7.0,
        (T0, (*BASE, ("ResultType", "Miss"))): 3.0,
        (t1, BASE): 5.0,
        (t1, (*BASE, ("ResultType", "Error"))): 5.0,
    }
    assert all(d.unit is Unit.COUNT for d in by_metric(result.datums, "Requests"))
    percentiles = {(d.metric, d.timestamp): d.value for d in result.datums if d.metric.startswith("TimeTakenP")}
    assert percentiles == {
        ("TimeTakenP50", T0): 12.0,
        ("TimeTakenP90", T0): 80.0,
        ("TimeTakenP99", T0): 950.0,
        ("TimeTakenP50", t1): 1.0,
        ("TimeTakenP90", t1): 2.0,
        ("TimeTakenP99", t1): 3.0,
    }
    assert all(d.unit is Unit.MILLISECONDS and d.dimensions == BASE for d in result.datums if d.metric != "Requests")


def test_unknown_result_types_become_other() -> None:
    rows = [
        row(T0, MINUTE, 10),
        row(T0, BY_TYPE, 4, "Hit"),
        row(T0, BY_TYPE, 2, "OriginShieldHit"),
        row(T0, BY_TYPE, 3, "FunctionThrottledError"),
        row(T0, BY_TYPE, 1, "Other"),  # a raw value that happens to be spelt like the bucket
    ]
    result = datums_from_rows(rows, DIST)
    per_type = {dict(d.dimensions).get("ResultType"): d.value for d in by_metric(result.datums, "Requests")}
    assert per_type == {None: 10.0, "Hit": 4.0, OTHER_RESULT_TYPE: 6.0}
    assert result.other_result_types == {"OriginShieldHit", "FunctionThrottledError", "Other"}


def test_every_documented_result_type_is_kept() -> None:
    rows = [row(T0, MINUTE, len(DOCUMENTED_RESULT_TYPES))] + [
        row(T0, BY_TYPE, 1, t) for t in sorted(DOCUMENTED_RESULT_TYPES)
    ]
    result = datums_from_rows(rows, DIST)
    types = {dict(d.dimensions).get("ResultType") for d in by_metric(result.datums, "Requests")}
    assert types == {None, *DOCUMENTED_RESULT_TYPES}
    assert result.other_result_types == frozenset()


def test_custom_result_types() -> None:
    rows = [row(T0, BY_TYPE, 2, "Hit"), row(T0, BY_TYPE, 3, "Miss")]
    result = datums_from_rows(rows, DIST, result_types=frozenset({"Hit"}))
    per_type = {dict(d.dimensions)["ResultType"]: d.value for d in result.datums}
    assert per_type == {"Hit": 2.0, OTHER_RESULT_TYPE: 3.0}
    assert result.other_result_types == {"Miss"}


@pytest.mark.parametrize("missing", [None, float("nan"), pd.NaT, ""], ids=["None", "nan", "NaT", "empty"])
def test_malformed_rows_are_counted_not_published(missing: Any) -> None:
    rows = [
        row(T0, MINUTE, 10),
        row(T0, BY_TYPE, 10, "Hit"),
        row(missing, MINUTE, 4),  # lines with no parseable time or result type
        row(missing, BY_TYPE, 2, "Hit"),
        row(missing, BY_TYPE, 2, "-"),
        row(missing, BY_BUCKET, 4, bucket=12),
        # the file rows: 14 lines read, 10 of them valid
        {**row(missing, BY_FILE, 9), "file": "s3://b/E2EXAMPLE1ABCD/2026/11/28/15/a.gz", "valid_requests": 6},
        {**row(missing, BY_FILE, 5), "file": "s3://b/E2EXAMPLE1ABCD/2026/11/28/15/b.gz", "valid_requests": 4},
    ]
    result = datums_from_rows(rows, DIST)
    assert result.malformed_lines == 4
    assert {k: (v.lines, v.malformed) for k, v in result.files.items()} == {
        "s3://b/E2EXAMPLE1ABCD/2026/11/28/15/a.gz": (9, 3),
        "s3://b/E2EXAMPLE1ABCD/2026/11/28/15/b.gz": (5, 1),
    }
    assert result.requests == 10
    assert {d.timestamp for d in result.datums} == {T0}
    assert sum(d.value or 0 for d in result.datums if d.dimensions == BASE and d.metric == "Requests") == 10


def test_missing_percentiles_and_buckets_publish_nothing() -> None:
    rows = [
        row(T0, MINUTE, 3, percentiles=(None, float("nan"), pd.NA)),
        row(T0, BY_BUCKET, 3, bucket=None),  # lines without a usable time-taken
    ]
    result = datums_from_rows(rows, DIST)
    assert [d.metric for d in result.datums] == ["Requests"]


def test_histogram_over_150_buckets_is_split() -> None:
    buckets = {float(b): float(1 + b % 7) for b in range(0, 2 * 347, 2)}  # 347 distinct buckets
    rows = [row(T0, MINUTE, int(sum(buckets.values())))]
    rows += [row(T0, BY_BUCKET, int(count), bucket=value) for value, count in reversed(buckets.items())]
    rows += [row(T0 + timedelta(minutes=1), BY_BUCKET, 5, bucket=42)]
    result = datums_from_rows(rows, DIST)
    histograms = [d for d in by_metric(result.datums, "TimeTaken") if d.timestamp == T0]
    assert len(histograms) == math.ceil(347 / MAX_VALUES_PER_DATUM)
    for datum in histograms:
        assert 0 < len(datum.values) <= MAX_VALUES_PER_DATUM
        assert len(datum.values) == len(datum.counts)
        assert datum.value is None and datum.unit is Unit.MILLISECONDS and datum.dimensions == BASE
    merged: dict[float, float] = defaultdict(float)
    for datum in histograms:
        for value, count in zip(datum.values, datum.counts, strict=True):
            merged[value] += count
    assert dict(merged) == buckets
    assert sum(len(d.values) for d in histograms) == 347  # each bucket in exactly one datum
    later = [d for d in by_metric(result.datums, "TimeTaken") if d.timestamp != T0]
    assert [(d.values, d.counts) for d in later] == [((42.0,), (5.0,))]


def test_histogram_of_exactly_150_buckets_is_one_datum() -> None:
    rows = [row(T0, BY_BUCKET, 1, bucket=b) for b in range(MAX_VALUES_PER_DATUM)]
    histograms = by_metric(datums_from_rows(rows, DIST).datums, "TimeTaken")
    assert len(histograms) == 1
    assert histograms[0].values == tuple(float(b) for b in range(MAX_VALUES_PER_DATUM))


def test_rows_from_a_simulated_query_give_consistent_totals() -> None:
    """Rows made from lines the way the query groups them; the datums must add back up to the lines."""
    lines = [
        (T0 + timedelta(minutes=i % 3), ["Hit", "Miss", "Hit", "Weird"][i % 4], (i * 37) % 500) for i in range(200)
    ]
    rows = []
    for minute, n in Counter(m for m, _, _ in lines).items():
        rows.append(row(minute, MINUTE, n))
    for (minute, result_type), n in Counter((m, r) for m, r, _ in lines).items():
        rows.append(row(minute, BY_TYPE, n, result_type))
    for (minute, bucket), n in Counter((m, b) for m, _, b in lines).items():
        rows.append(row(minute, BY_BUCKET, n, bucket=bucket))
    result = datums_from_rows(rows, DIST)
    assert result.requests == len(lines)
    per_type = [d for d in by_metric(result.datums, "Requests") if d.dimensions != BASE]
    assert sum(d.value or 0 for d in per_type) == len(lines)
    histogram_total = sum(sum(d.counts) for d in by_metric(result.datums, "TimeTaken"))
    assert histogram_total == len(lines)
    for minute in {m for m, _, _ in lines}:
        minute_lines = [line for line in lines if line[0] == minute]
        expected = Counter(r if r in DOCUMENTED_RESULT_TYPES else "Other" for _, r, _ in minute_lines)
        got = {dict(d.dimensions)["ResultType"]: d.value for d in per_type if d.timestamp == minute}
        assert got == {k: float(v) for k, v in expected.items()}


# ---------------------------------------------------------------------------------------------------------------
# minute normalisation

EXPECTED_MINUTE = datetime(2026, 11, 28, 15, 4, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 11, 28, 15, 4),
        datetime(2026, 11, 28, 15, 4, 59, 999999),
        datetime(2026, 11, 28, 15, 4, tzinfo=UTC),
        datetime(2026, 11, 28, 17, 4, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 11, 28, 10, 4, tzinfo=timezone(timedelta(hours=-5))),
        "2026-11-28 15:04:00",
        "2026-11-28 15:04:00.000",
        "2026-11-28T15:04:00",
        "2026-11-28T15:04:00Z",
        "2026-11-28T15:04:00+00:00",
        "2026-11-28 16:04:00+01:00",
        "2026-11-28 15:04:00 UTC",
        pd.Timestamp("2026-11-28 15:04:00"),
        pd.Timestamp("2026-11-28 15:04:00", tz="UTC"),
        pd.Timestamp("2026-11-28 16:04:30", tz="Europe/Paris"),
    ],
    ids=repr,
)
def test_minute_normalises_to_aware_utc(value: Any) -> None:
    minute = as_utc_minute(value)
    assert type(minute) is datetime
    assert minute == EXPECTED_MINUTE
    assert minute.utcoffset() == timedelta(0)
    assert (minute.second, minute.microsecond) == (0, 0)


def test_minute_of_other_types_is_refused() -> None:
    with pytest.raises(TypeError, match="not a timestamp"):
        as_utc_minute(1700000000)


@pytest.mark.parametrize(
    "value", [datetime(2026, 11, 28, 15, 4), "2026-11-28 15:04:00", pd.Timestamp("2026-11-28 15:04", tz="UTC")]
)
def test_datums_carry_aware_utc_timestamps(value: Any) -> None:
    result = datums_from_rows(
        [row(value, MINUTE, 1), row(value, BY_TYPE, 1, "Hit"), row(value, BY_BUCKET, 1, bucket=5)], DIST
    )
    assert {d.timestamp for d in result.datums} == {EXPECTED_MINUTE}
    assert all(d.timestamp.tzinfo is not None for d in result.datums)


# ---------------------------------------------------------------------------------------------------------------
# Datum JSON


@pytest.mark.parametrize(
    "datum",
    [
        Datum("Requests", BASE, EXPECTED_MINUTE, Unit.COUNT, value=12345.0),
        Datum("Requests", (*BASE, ("ResultType", "Hit")), EXPECTED_MINUTE, Unit.COUNT, value=0.0),
        Datum("TimeTakenP99", BASE, EXPECTED_MINUTE, Unit.MILLISECONDS, value=0.1 + 0.2),
        Datum(
            "TimeTaken",
            (("DistributionId", 'Ünï "q" 字'),),
            EXPECTED_MINUTE,
            Unit.MILLISECONDS,
            values=(-0.0, 1e-300, 5e-324, 1.7976931348623157e308, 123456.789),
            counts=(1.0, 2.0, 3.0, 4.0, 1e15 + 1),
        ),
    ],
    ids=["total", "result-type", "float", "distribution"],
)
def test_datum_json_round_trip(datum: Datum) -> None:
    data = datum.to_json()
    assert data["Timestamp"] == "2026-11-28T15:04:00Z"
    assert datum.to_api()["Timestamp"] == EXPECTED_MINUTE
    text = json.dumps(data)
    back = Datum.from_json(json.loads(text))
    assert back == datum
    assert back.timestamp.tzinfo is not None
    assert [math.copysign(1, v) for v in back.numbers()] == [math.copysign(1, v) for v in datum.numbers()]


def test_datum_api_shape() -> None:
    single = Datum("Requests", (*BASE, ("ResultType", "Hit")), EXPECTED_MINUTE, Unit.COUNT, value=3.0)
    assert single.to_api() == {
        "MetricName": "Requests",
        "Dimensions": [{"Name": "DistributionId", "Value": DIST}, {"Name": "ResultType", "Value": "Hit"}],
        "Timestamp": EXPECTED_MINUTE,
        "Unit": "Count",
        "Value": 3.0,
    }
    spread = Datum("TimeTaken", BASE, EXPECTED_MINUTE, Unit.MILLISECONDS, values=(1.0, 2.0), counts=(3.0, 4.0))
    api = spread.to_api()
    assert (api["Values"], api["Counts"]) == ([1.0, 2.0], [3.0, 4.0])
    assert "Value" not in api
    assert spread.numbers() == (1.0, 2.0, 3.0, 4.0)


def test_datum_json_of_non_utc_timestamp_is_utc() -> None:
    paris = datetime(2026, 11, 28, 16, 4, tzinfo=timezone(timedelta(hours=1)))
    datum = Datum("Requests", BASE, paris, Unit.COUNT, value=1.0)
    assert datum.to_json()["Timestamp"] == "2026-11-28T15:04:00Z"


# --- the metric groups added later: grouping_id 71 (status class), 39 (ttfb bucket), 23 (edge location) ---------
BY_STATUS, BY_TTFB, BY_EDGE = 0b100_0111, 0b010_0111, 0b001_0111


def later_rows() -> list[dict[str, Any]]:
    rows = [row(T0, MINUTE, 10, percentiles=(5, 9, 12)) | {"bytes_downloaded": 12345}]
    rows += [row(T0, BY_STATUS, n) | {"status_class": s} for s, n in (("2xx", 6), ("5xx", 3), ("9xx", 1))]
    rows += [row(T0, BY_TTFB, n) | {"ttfb_bucket_ms": b} for b, n in ((4, 5), (130, 4))]
    rows += [row(T0, BY_TTFB, 1) | {"ttfb_bucket_ms": None}]  # lines without the field
    edges = (("IAD", 4), ("FRA", 2), ("AMS", 2), ("NRT", 1), ("Other", 1))
    rows += [row(T0, BY_EDGE, n) | {"edge_location": e} for e, n in edges]
    return rows


def test_each_group_publishes_its_metrics_and_nothing_else() -> None:
    every = datums_from_rows(later_rows(), DIST, groups=frozenset(MetricGroup), edge_location_cap=2)
    status = {dict(d.dimensions)["StatusClass"]: d.value for d in every.datums if "StatusClass" in dict(d.dimensions)}
    assert status == {"2xx": 6.0, "5xx": 3.0, "Other": 1.0}  # a class outside 0xx-5xx, Other
    (nbytes,) = by_metric(every.datums, "BytesDownloaded")
    assert (nbytes.value, nbytes.unit) == (12345.0, Unit.BYTES)
    (ttfb,) = by_metric(every.datums, "TimeToFirstByte")
    assert (ttfb.values, ttfb.counts, ttfb.unit) == ((4.0, 130.0), (5.0, 4.0), Unit.MILLISECONDS)
    edge = {dict(d.dimensions)["EdgeLocation"]: d.value for d in every.datums if "EdgeLocation" in dict(d.dimensions)}
    # the two busiest by name (a tie broken by name: AMS before FRA), the rest and the SQL's Other as Other
    assert edge == {"IAD": 4.0, "AMS": 2.0, "Other": 4.0}
    assert every.requests == 10  # the split rows never add to the requests
    for group, absent in ((MetricGroup.STATUS, "StatusClass"), (MetricGroup.EDGE, "EdgeLocation")):
        fewer = datums_from_rows(later_rows(), DIST, groups=frozenset(MetricGroup) - {group})
        assert not [d for d in fewer.datums if absent in dict(d.dimensions)]
    core = datums_from_rows(later_rows(), DIST, groups=frozenset({MetricGroup.CORE}))
    assert {d.metric for d in core.datums} == {"Requests"} and len(core.datums) == 1
    assert not [d for d in datums_from_rows(later_rows(), DIST).datums if "EdgeLocation" in dict(d.dimensions)]


@pytest.mark.parametrize(("value", "expected"), [
    ("core", {MetricGroup.CORE}),
    (" Core , ttfb ", {MetricGroup.CORE, MetricGroup.TTFB}),
    ("default", set(DEFAULT_METRIC_GROUPS)),
    ("all", set(MetricGroup)),
])  # fmt: skip
def test_metric_groups_parse(value: str, expected: set[MetricGroup]) -> None:
    assert parse_metric_groups(value) == expected
    assert MetricGroup.EDGE not in DEFAULT_METRIC_GROUPS and len(DEFAULT_METRIC_GROUPS) == 5
