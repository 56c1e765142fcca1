"""Map the metrics query's rows to CloudWatch metric datums: the output contract, as pure functions."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from job.core.errors import ConfigError
from job.core.limits import MAX_VALUES_PER_DATUM

DEFAULT_NAMESPACE = "CloudFront/AccessLogs"
# The documented x-edge-result-type values; anything else is published as OTHER_RESULT_TYPE so the number of
# CloudWatch metrics (each one billed) stays bounded.
DOCUMENTED_RESULT_TYPES = frozenset(
    {"Hit", "RefreshHit", "Miss", "LimitExceeded", "CapacityExceeded", "Error", "Redirect", "LambdaExecutionError"}
)
OTHER_RESULT_TYPE = "Other"


class Unit(Enum):
    COUNT = "Count"
    MILLISECONDS = "Milliseconds"
    BYTES = "Bytes"
    SECONDS = "Seconds"
    NONE = "None"


class Grouping(Enum):
    """The query's grouping_id, grouping(minute, result_type, time_taken_bucket_ms, file): a bit per column left out,
    plus 16 * (7 - grouping(status_class, ttfb_bucket_ms, edge_location)): a bit per added column grouped by."""

    MINUTE = 0b0111
    MINUTE_BY_RESULT_TYPE = 0b0011
    MINUTE_BY_TIME_TAKEN = 0b0101
    FILE = 0b1110
    # the sets added later: the minute's bits plus 16 times a bit per added column grouped by
    MINUTE_BY_STATUS_CLASS = 0b100_0111
    MINUTE_BY_TIME_TO_FIRST_BYTE = 0b010_0111
    MINUTE_BY_EDGE_LOCATION = 0b001_0111


class Metric(Enum):
    REQUESTS = "Requests"
    TIME_TAKEN = "TimeTaken"
    TIME_TAKEN_P50 = "TimeTakenP50"
    TIME_TAKEN_P90 = "TimeTakenP90"
    TIME_TAKEN_P99 = "TimeTakenP99"
    BYTES_DOWNLOADED = "BytesDownloaded"
    TIME_TO_FIRST_BYTE = "TimeToFirstByte"


class MetricGroup(Enum):
    """Sets of metrics switched on or off together (each CloudWatch metric is billed): --metrics, MetricGroups."""

    CORE = "core"  # Requests, Requests by ResultType, TimeTaken (Values/Counts)
    STATUS = "status"  # Requests by StatusClass
    BYTES = "bytes"  # BytesDownloaded
    TTFB = "ttfb"  # TimeToFirstByte (Values/Counts)
    EDGE = "edge"  # Requests by EdgeLocation (up to the edge location cap per distribution, the rest as Other)
    PERCENTILES = "percentiles"  # TimeTakenP50/P90/P99 of each batch


# Off by default: edge, because each of its values is a metric of its own (billed per month).
DEFAULT_METRIC_GROUPS = frozenset(MetricGroup) - {MetricGroup.EDGE}
# The metrics and dimension names each group publishes per distribution (what dashboards may use, the cost model).
GROUP_METRICS: Mapping[MetricGroup, tuple[tuple[str, tuple[str, ...]], ...]] = {
    MetricGroup.CORE: (
        (Metric.REQUESTS.value, ("DistributionId",)),
        (Metric.REQUESTS.value, ("DistributionId", "ResultType")),
        (Metric.TIME_TAKEN.value, ("DistributionId",)),
    ),
    MetricGroup.STATUS: ((Metric.REQUESTS.value, ("DistributionId", "StatusClass")),),
    MetricGroup.BYTES: ((Metric.BYTES_DOWNLOADED.value, ("DistributionId",)),),
    MetricGroup.TTFB: ((Metric.TIME_TO_FIRST_BYTE.value, ("DistributionId",)),),
    MetricGroup.EDGE: ((Metric.REQUESTS.value, ("DistributionId", "EdgeLocation")),),
    MetricGroup.PERCENTILES: tuple(
        (m.value, ("DistributionId",)) for m in (Metric.TIME_TAKEN_P50, Metric.TIME_TAKEN_P90, Metric.TIME_TAKEN_P99)
    ),
}
# StatusClass values: the first digit of sc-status and 'xx' (000, the viewer closed the connection: 0xx); anything
# that is not three digits 000-599 is Other (the SQL's rule).
OTHER_STATUS_CLASS = "Other"
STATUS_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx", OTHER_STATUS_CLASS)
OTHER_EDGE_LOCATION = "Other"
# Edge locations published by name per distribution and batch (the rest add up under EdgeLocation=Other).
DEFAULT_EDGE_LOCATION_CAP = 20
# CloudFront has about 600 points of presence in some 100 cities (https://aws.amazon.com/cloudfront/features/,
# 2026): a cap above the number of airport codes buys nothing.
MAX_EDGE_LOCATION_CAP = 200


def parse_metric_groups(value: str) -> frozenset[MetricGroup]:
    """'core,status,bytes' -> the groups; 'default' for the default set, 'all' for every group."""
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    known = {g.value: g for g in MetricGroup}
    expected = ", ".join(g.value for g in MetricGroup)
    if names in (["default"], ["all"]):
        return DEFAULT_METRIC_GROUPS if names == ["default"] else frozenset(MetricGroup)
    bad = [n for n in names if n not in known]
    if not names or bad:
        raise ConfigError(
            f"metric groups {value!r}: expected comma-separated names of {expected} (or 'default', 'all')"
            + (f"; unknown: {', '.join(bad)}" if bad else ""),
            "metric_groups",
        )
    return frozenset(known[n] for n in names)


def format_metric_groups(groups: Iterable[MetricGroup]) -> str:
    """The groups in their declared order, comma-separated: the inverse of parse_metric_groups."""
    chosen = set(groups)
    return ",".join(g.value for g in MetricGroup if g in chosen)


def validate_edge_location_cap(cap: int) -> int:
    if not 1 <= cap <= MAX_EDGE_LOCATION_CAP:
        raise ConfigError(f"edge location cap {cap}: expected 1 to {MAX_EDGE_LOCATION_CAP}", "edge_location_cap")
    return cap


# A column `metric_<words>` of a query's per-minute rows (grouping_id 7) is published as the Count metric
# <Words> with the DistributionId dimension: how users add metrics by editing or adding files in sql/.
EXTRA_METRIC_PREFIX = "metric_"
_EXTRA_METRIC = re.compile(r"^metric_[a-z0-9_]{1,200}$")


def extra_metric_name(column: str) -> str:
    """metric_requests_5xx -> Requests5xx."""
    if not _EXTRA_METRIC.fullmatch(column.lower()):
        raise ConfigError(f"query column {column!r}: expected metric_ followed by letters, digits and underscores")
    return "".join(word[:1].upper() + word[1:] for word in column.lower().removeprefix(EXTRA_METRIC_PREFIX).split("_"))


# The job's accounts of bad input, per distribution and hour of the files' partition.
MALFORMED_LINES = "MalformedLines"
UNREADABLE_FILES = "UnreadableFiles"
# Lines whose minute CloudFront cannot have written for the file's partition hour, or CloudWatch refuses
# (core/timerange.py): skipped, counted per partition hour like MalformedLines.
OUT_OF_RANGE_LINES = "OutOfRangeLines"
# Health metrics (dimension Job) of hostile input: recorded files that differ from what was recorded, and
# distributions skipped because the account has no such distribution (cardinality: each metric is billed).
CHANGED_FILES = "ChangedFiles"
SKIPPED_DISTRIBUTIONS = "SkippedDistributions"


def malformed_lines_datums(
    distribution_id: str, files: Iterable[Any], file_lines: Mapping[str, tuple[int, int]]
) -> tuple[Datum, ...]:
    """MalformedLines per partition hour of the files (timestamp: the hour's start), only where there were any."""
    per_hour: dict[datetime, int] = defaultdict(int)
    for log_file in files:
        per_hour[log_file.hour] += file_lines.get(log_file.uri, (0, 0))[1]
    base = (("DistributionId", distribution_id),)
    return tuple(
        Datum(MALFORMED_LINES, base, hour, Unit.COUNT, value=float(count))
        for hour, count in sorted(per_hour.items())
        if count
    )


def out_of_range_datums(
    distribution_id: str, files: Iterable[Any], out_of_range: Mapping[str, int]
) -> tuple[Datum, ...]:
    """OutOfRangeLines per partition hour of the files (timestamp: the hour's start), only where there were any."""
    per_hour: dict[datetime, int] = defaultdict(int)
    for log_file in files:
        per_hour[log_file.hour] += out_of_range.get(log_file.uri, 0)
    base = (("DistributionId", distribution_id),)
    return tuple(
        Datum(OUT_OF_RANGE_LINES, base, hour, Unit.COUNT, value=float(count))
        for hour, count in sorted(per_hour.items())
        if count
    )


PERCENTILE_COLUMNS = {
    Metric.TIME_TAKEN_P50: "time_taken_p50_ms",
    Metric.TIME_TAKEN_P90: "time_taken_p90_ms",
    Metric.TIME_TAKEN_P99: "time_taken_p99_ms",
}


DatumKey = tuple[str, tuple[tuple[str, str], ...], datetime]


def published_metric_names(columns: Iterable[str]) -> frozenset[str]:
    """The metric names a query with these output columns publishes (datums_from_rows is the contract), with the
    accounts of bad input every query publishes: what the ledger's one-owner-per-metric rule compares."""
    names = {MALFORMED_LINES, UNREADABLE_FILES, OUT_OF_RANGE_LINES}
    lowered = {c.lower() for c in columns}
    if "requests" in lowered:
        names.add(Metric.REQUESTS.value)
    if "time_taken_bucket_ms" in lowered:
        names.add(Metric.TIME_TAKEN.value)
    if "ttfb_bucket_ms" in lowered:
        names.add(Metric.TIME_TO_FIRST_BYTE.value)
    if "bytes_downloaded" in lowered:
        names.add(Metric.BYTES_DOWNLOADED.value)
    names |= {metric.value for metric, column in PERCENTILE_COLUMNS.items() if column in lowered}
    names |= {extra_metric_name(c) for c in lowered if c.startswith(EXTRA_METRIC_PREFIX)}
    return frozenset(names)


@dataclass(frozen=True)
class Datum:
    """One CloudWatch MetricDatum: a single Value, or a distribution as Values/Counts."""

    metric: str
    dimensions: tuple[tuple[str, str], ...]
    timestamp: datetime
    unit: Unit
    value: float | None = None
    values: tuple[float, ...] = ()
    counts: tuple[float, ...] = ()

    @property
    def key(self) -> DatumKey:
        """What CloudWatch merges datapoints on: metric, dimensions and minute."""
        return (self.metric, self.dimensions, self.timestamp)

    @property
    def samples(self) -> float:
        """What this datum adds to CloudWatch's SampleCount statistic."""
        return 1.0 if self.value is not None else float(sum(self.counts))

    def numbers(self) -> tuple[float, ...]:
        return (self.value,) if self.value is not None else self.values + self.counts

    def to_api(self) -> dict[str, Any]:
        """The PutMetricData MetricDatum shape boto3 takes."""
        datum: dict[str, Any] = {"MetricName": self.metric}
        if self.dimensions:
            datum["Dimensions"] = [{"Name": n, "Value": v} for n, v in self.dimensions]
        datum["Timestamp"] = self.timestamp
        datum["Unit"] = self.unit.value
        if self.value is not None:
            datum["Value"] = self.value
        else:
            datum["Values"] = list(self.values)
            datum["Counts"] = list(self.counts)
        return datum

    def to_json(self) -> dict[str, Any]:
        """The API shape with the timestamp as ISO-8601 UTC: one line of a jsonl: sink, and the ledger's journal."""
        datum = self.to_api()
        datum["Timestamp"] = self.timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return datum

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Datum:
        return cls(
            metric=data["MetricName"],
            dimensions=tuple((d["Name"], d["Value"]) for d in data.get("Dimensions", ())),
            timestamp=datetime.strptime(data["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC),
            unit=Unit(data["Unit"]),
            value=data.get("Value"),
            values=tuple(data.get("Values", ())),
            counts=tuple(data.get("Counts", ())),
        )


@dataclass(frozen=True)
class FileLines:
    """Lines read from one file, and how many of them were malformed."""

    lines: int
    malformed: int


@dataclass(frozen=True)
class MinuteMetrics:
    """What one query over a set of files amounts to."""

    datums: tuple[Datum, ...]
    requests: int
    malformed_lines: int
    other_result_types: frozenset[str] = field(default_factory=frozenset)
    files: Mapping[str, FileLines] = field(default_factory=dict)


def as_utc_minute(value: Any) -> datetime:
    """A minute from either engine (datetime, pandas Timestamp or ISO text) as an aware UTC datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace(" UTC", ""))
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if not isinstance(value, datetime):
        raise TypeError(f"minute {value!r} is not a timestamp")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    minute: datetime = value.astimezone(UTC).replace(second=0, microsecond=0)
    return minute


def _is_missing(value: Any) -> bool:
    if type(value) is int or type(value) is datetime:  # the common cases, hundreds of thousands of times a query
        return False
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value) in ("", "NaT", "<NA>")


def _chunks(items: Sequence[tuple[float, float]], size: int) -> Iterable[Sequence[tuple[float, float]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def datums_from_rows(
    rows: Iterable[Mapping[str, Any]],
    distribution_id: str,
    result_types: frozenset[str] = DOCUMENTED_RESULT_TYPES,
    rejected_lines: Mapping[str, int] | None = None,
    groups: frozenset[MetricGroup] = DEFAULT_METRIC_GROUPS,
    edge_location_cap: int = DEFAULT_EDGE_LOCATION_CAP,
) -> MinuteMetrics:
    """The output contract, per metric group: Requests (total and by ResultType) and TimeTaken as Values/Counts
    (core), Requests by StatusClass (status), BytesDownloaded (bytes), TimeToFirstByte as Values/Counts (ttfb),
    Requests by EdgeLocation (edge, at most `edge_location_cap` named per batch), TimeTakenPNN (percentiles)."""
    base = (("DistributionId", distribution_id),)
    datums: list[Datum] = []
    requests = malformed = 0
    others: set[str] = set()
    by_type: dict[tuple[datetime, str], int] = defaultdict(int)
    histogram: dict[datetime, dict[float, float]] = defaultdict(dict)
    by_status: dict[tuple[datetime, str], int] = defaultdict(int)
    ttfb: dict[datetime, dict[float, float]] = defaultdict(dict)
    by_edge: dict[tuple[datetime, str], int] = defaultdict(int)
    files: dict[str, FileLines] = {}
    groupings = {g.value: g for g in Grouping}
    minutes: dict[Any, datetime] = {}  # a few thousand minutes over hundreds of thousands of rows
    for row in rows:
        raw_grouping = row["grouping_id"]
        grouping = groupings.get(raw_grouping if type(raw_grouping) is int else int(raw_grouping))
        if grouping is None:
            known = ", ".join(str(g.value) for g in Grouping)
            raise ConfigError(f"query row with grouping_id {row['grouping_id']}: expected one of {known}")
        raw_count: Any = row.get("requests")
        # fast path first: an int from DuckDB or Trino (hundreds of thousands of rows a query)
        count = raw_count if type(raw_count) is int else 0 if _is_missing(raw_count) else int(raw_count)
        if grouping is Grouping.FILE:
            bad = count - int(row["valid_requests"])
            files[str(row["file"])] = FileLines(count, bad)
            malformed += bad
            continue
        if _is_missing(row["minute"]):
            continue  # malformed lines: counted through their file's row
        raw = row["minute"]
        minute = minutes.get(raw) if isinstance(raw, datetime | str) else None
        if minute is None:
            minute = as_utc_minute(raw)
            if isinstance(raw, datetime | str):
                minutes[raw] = minute
        if grouping is Grouping.MINUTE_BY_STATUS_CLASS:
            status_class = str(row["status_class"])
            by_status[(minute, status_class if status_class in STATUS_CLASSES else OTHER_STATUS_CLASS)] += count
        elif grouping is Grouping.MINUTE_BY_TIME_TO_FIRST_BYTE:
            if not _is_missing(row["ttfb_bucket_ms"]):
                ttfb[minute][float(row["ttfb_bucket_ms"])] = float(count)
        elif grouping is Grouping.MINUTE_BY_EDGE_LOCATION:
            by_edge[(minute, str(row["edge_location"]))] += count
        elif grouping is Grouping.MINUTE:
            if "requests" in row:
                requests += count
                if MetricGroup.CORE in groups:
                    datums.append(Datum(Metric.REQUESTS.value, base, minute, Unit.COUNT, value=float(count)))
            if MetricGroup.BYTES in groups and not _is_missing(row.get("bytes_downloaded")):
                value = float(row["bytes_downloaded"])
                datums.append(Datum(Metric.BYTES_DOWNLOADED.value, base, minute, Unit.BYTES, value=value))
            for metric, column in PERCENTILE_COLUMNS.items():
                if MetricGroup.PERCENTILES in groups and not _is_missing(row.get(column)):
                    datums.append(Datum(metric.value, base, minute, Unit.MILLISECONDS, value=float(row[column])))
            for column, value in row.items():
                if column.startswith(EXTRA_METRIC_PREFIX) and not _is_missing(value):
                    datums.append(Datum(extra_metric_name(column), base, minute, Unit.COUNT, value=float(value)))
        elif grouping is Grouping.MINUTE_BY_RESULT_TYPE:
            result_type = str(row["result_type"])
            if result_type not in result_types:
                others.add(result_type)
                result_type = OTHER_RESULT_TYPE
            by_type[(minute, result_type)] += count
        elif not _is_missing(bucket := row["time_taken_bucket_ms"]):
            histogram[minute][float(bucket)] = float(count)
    if MetricGroup.CORE in groups:
        for (minute, result_type), count in sorted(by_type.items()):
            dims = (*base, ("ResultType", result_type))
            datums.append(Datum(Metric.REQUESTS.value, dims, minute, Unit.COUNT, value=float(count)))
        datums += _distribution_datums(Metric.TIME_TAKEN, base, histogram)
    if MetricGroup.STATUS in groups:
        for (minute, status_class), count in sorted(by_status.items()):
            dims = (*base, ("StatusClass", status_class))
            datums.append(Datum(Metric.REQUESTS.value, dims, minute, Unit.COUNT, value=float(count)))
    if MetricGroup.TTFB in groups:
        datums += _distribution_datums(Metric.TIME_TO_FIRST_BYTE, base, ttfb)
    if MetricGroup.EDGE in groups:
        named = capped_edge_locations(by_edge, edge_location_cap)
        capped: dict[tuple[datetime, str], int] = defaultdict(int)
        for (minute, edge), count in by_edge.items():
            capped[(minute, edge if edge in named else OTHER_EDGE_LOCATION)] += count
        for (minute, edge), count in sorted(capped.items()):
            dims = (*base, ("EdgeLocation", edge))
            datums.append(Datum(Metric.REQUESTS.value, dims, minute, Unit.COUNT, value=float(count)))
    for uri, count in (rejected_lines or {}).items():
        # lines the engine read but could not decode into a row: malformed lines of their file
        before = files.get(uri, FileLines(0, 0))
        files[uri] = FileLines(before.lines + count, before.malformed + count)
        malformed += count
    return MinuteMetrics(tuple(datums), requests, malformed, frozenset(others), files)


def _distribution_datums(
    metric: Metric, base: tuple[tuple[str, str], ...], histogram: Mapping[datetime, Mapping[float, float]]
) -> list[Datum]:
    datums = []
    for minute, buckets in sorted(histogram.items()):
        # CloudWatch takes at most 150 distinct values per datum; datums for one metric and minute merge.
        for chunk in _chunks(sorted(buckets.items()), MAX_VALUES_PER_DATUM):
            values, counts = zip(*chunk, strict=False)
            datums.append(Datum(metric.value, base, minute, Unit.MILLISECONDS, values=values, counts=counts))
    return datums


def capped_edge_locations(by_edge: Mapping[tuple[datetime, str], int], cap: int) -> frozenset[str]:
    """The edge locations published by name: the `cap` with the most requests in the batch (ties by name); the SQL's
    own Other is never one of them."""
    totals: dict[str, int] = defaultdict(int)
    for (_, edge), count in by_edge.items():
        if edge != OTHER_EDGE_LOCATION:
            totals[edge] += count
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return frozenset(edge for edge, _ in ranked[:cap])


HEALTH_DIMENSIONS = (("Job", "cloudfront-log-metrics"),)
SCAN_AMPLIFICATION = "ScanAmplification"
# Above this, a query read more than the files it named: "$path" pruning did not work (docs/DEPLOY.md).
MAX_SCAN_AMPLIFICATION = 1.1


def scan_amplification(scanned_bytes: int, named_bytes: int, floor_bytes: int = 0) -> float:
    """Bytes the engine scanned per byte of the files the query named (at least the engine's billing floor)."""
    return scanned_bytes / max(named_bytes, floor_bytes, 1)


@dataclass(frozen=True)
class RunHealth:
    """What one run amounts to for the job's own health metrics."""

    files_processed: int
    malformed_lines: int
    bytes_scanned: int
    errors: int
    oldest_hour_left: datetime | None = None  # the partition hour of the oldest file left for a later run
    scan_amplification: float | None = None  # the largest of the run's queries, where the engine reports scans
    out_of_range_lines: int = 0
    changed_files: int = 0
    skipped_distributions: int = 0


def health_datums(health: RunHealth, now: datetime) -> list[Datum]:
    """The job's own health metrics for one run, at the run's minute."""
    lag = 0.0
    if health.oldest_hour_left is not None:
        lag = max(0.0, (now - (health.oldest_hour_left + timedelta(hours=1))).total_seconds())
    minute = now.replace(second=0, microsecond=0)
    figures = [
        ("FilesProcessed", float(health.files_processed), Unit.COUNT),
        (MALFORMED_LINES, float(health.malformed_lines), Unit.COUNT),
        ("BytesScanned", float(health.bytes_scanned), Unit.BYTES),
        ("LagSeconds", lag, Unit.SECONDS),
        ("Errors", float(health.errors), Unit.COUNT),
        (OUT_OF_RANGE_LINES, float(health.out_of_range_lines), Unit.COUNT),
        (CHANGED_FILES, float(health.changed_files), Unit.COUNT),
        (SKIPPED_DISTRIBUTIONS, float(health.skipped_distributions), Unit.COUNT),
    ]
    if health.scan_amplification is not None:
        figures.append((SCAN_AMPLIFICATION, round(health.scan_amplification, 3), Unit.NONE))
    return [Datum(name, HEALTH_DIMENSIONS, minute, unit, value=value) for name, value, unit in figures]
