"""Read the demo's metrics back from CloudWatch with ListMetrics and GetMetricData, one series per minute."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from job.core.metrics import DOCUMENTED_RESULT_TYPES, OTHER_RESULT_TYPE, Metric

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_cloudwatch.type_defs import (
        DimensionTypeDef,
        GetMetricDataOutputTypeDef,
        MetricDataQueryTypeDef,
        MetricStatTypeDef,
        MetricTypeDef,
    )

PERIOD = 60
MAX_QUERIES_PER_CALL = 500
# moto scans every datapoint of the time range for every query and every minute; short ranges keep that from
# growing with the square of the data (real CloudWatch does not care either way).
SLICE = timedelta(minutes=15)
# moto has no percentile statistics, so the demo reads the per-minute percentile metrics the job also publishes.
PERCENTILES: dict[str, Metric] = {
    "p50": Metric.TIME_TAKEN_P50,
    "p90": Metric.TIME_TAKEN_P90,
    "p99": Metric.TIME_TAKEN_P99,
}

# Status classes the chart shows as error rates; moto has no percentiles either for TimeToFirstByte: its Average.
ERROR_STATUS_CLASSES = ("4xx", "5xx")

Series = dict[datetime, float]


@dataclass
class DistributionMetrics:
    """One distribution's metrics as read back, minute by minute (UTC)."""

    requests: Series = field(default_factory=dict)
    by_type: dict[str, Series] = field(default_factory=dict)
    percentiles: dict[str, Series] = field(default_factory=dict)
    by_status: dict[str, Series] = field(default_factory=dict)
    ttfb_mean: Series = field(default_factory=dict)

    def total(self) -> int:
        return round(sum(self.requests.values()))

    def total_by_type(self) -> int:
        return round(sum(sum(series.values()) for series in self.by_type.values()))


@dataclass(frozen=True)
class _Query:
    distribution_id: str
    metric: str
    result_type: str | None
    stat: str
    dimension: str = "ResultType"


def result_types_listed(client: CloudWatchClient, namespace: str) -> dict[str, set[str]]:
    """The ResultType values ListMetrics knows for each distribution's Requests."""
    found: dict[str, set[str]] = defaultdict(set)
    for page in client.get_paginator("list_metrics").paginate(Namespace=namespace, MetricName=Metric.REQUESTS.value):
        for metric in page.get("Metrics", []):
            dims = {d.get("Name"): d.get("Value") for d in metric.get("Dimensions", [])}
            distribution, result_type = dims.get("DistributionId"), dims.get("ResultType")
            if distribution and result_type:
                found[distribution].add(result_type)
    return found


def _queries(distribution_ids: Iterable[str], listed: dict[str, set[str]]) -> list[_Query]:
    queries = []
    for distribution_id in distribution_ids:
        queries.append(_Query(distribution_id, Metric.REQUESTS.value, None, "Sum"))
        # Real CloudWatch lists a new metric only after up to 15 minutes, so the documented types are asked too.
        types = DOCUMENTED_RESULT_TYPES | {OTHER_RESULT_TYPE} | listed.get(distribution_id, set())
        queries += [_Query(distribution_id, Metric.REQUESTS.value, t, "Sum") for t in sorted(types)]
        queries += [_Query(distribution_id, m.value, None, "Average") for m in PERCENTILES.values()]
        queries += [
            _Query(distribution_id, Metric.REQUESTS.value, s, "Sum", "StatusClass") for s in ERROR_STATUS_CLASSES
        ]
        queries.append(_Query(distribution_id, Metric.TIME_TO_FIRST_BYTE.value, None, "Average"))
    return queries


def _api_query(index: int, query: _Query, namespace: str) -> MetricDataQueryTypeDef:
    dimensions: list[DimensionTypeDef] = [{"Name": "DistributionId", "Value": query.distribution_id}]
    if query.result_type is not None:
        dimensions.append({"Name": query.dimension, "Value": query.result_type})
    metric: MetricTypeDef = {"Namespace": namespace, "MetricName": query.metric, "Dimensions": dimensions}
    stat: MetricStatTypeDef = {"Metric": metric, "Period": PERIOD, "Stat": query.stat}
    return {"Id": f"q{index}", "MetricStat": stat, "ReturnData": True}


def _fetch(
    client: CloudWatchClient, queries: Sequence[MetricDataQueryTypeDef], start: datetime, end: datetime
) -> dict[str, Series]:
    series: dict[str, Series] = defaultdict(dict)
    token: str | None = None
    while True:
        page: GetMetricDataOutputTypeDef
        if token:
            page = client.get_metric_data(
                MetricDataQueries=list(queries), StartTime=start, EndTime=end, NextToken=token
            )
        else:
            page = client.get_metric_data(MetricDataQueries=list(queries), StartTime=start, EndTime=end)
        for result in page["MetricDataResults"]:
            target = series[result.get("Id", "")]
            for when, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=True):
                minute = when.astimezone(UTC).replace(second=0, microsecond=0)
                target[minute] = target.get(minute, 0.0) + value
        token = page.get("NextToken")
        if not token:
            return series


def read_back(
    client: CloudWatchClient,
    namespace: str,
    distribution_ids: Sequence[str],
    start: datetime,
    end: datetime,
    listed: dict[str, set[str]],
) -> dict[str, DistributionMetrics]:
    """Requests (total, per ResultType, 4xx and 5xx), TimeTakenP50/P90/P99 and the mean TimeToFirstByte per minute
    in [start, end); `listed` adds
    the ResultType values ListMetrics found to those the job can publish."""
    queries = _queries(distribution_ids, listed)
    fetched: dict[str, Series] = defaultdict(dict)
    for first in range(0, len(queries), MAX_QUERIES_PER_CALL):
        chunk = queries[first : first + MAX_QUERIES_PER_CALL]
        batch = [_api_query(first + i, q, namespace) for i, q in enumerate(chunk)]
        since = start
        while since < end:
            until = min(since + SLICE, end)
            for query_id, values in _fetch(client, batch, since, until).items():
                fetched[query_id].update(values)
            since = until
    metrics = {d: DistributionMetrics() for d in distribution_ids}
    names = {m.value: name for name, m in PERCENTILES.items()}
    for index, query in enumerate(queries):
        values = fetched.get(f"q{index}", {})
        target = metrics[query.distribution_id]
        if query.metric in names:
            target.percentiles[names[query.metric]] = values
        elif query.metric == Metric.TIME_TO_FIRST_BYTE.value:
            target.ttfb_mean = values
        elif query.dimension == "StatusClass":
            assert query.result_type is not None
            target.by_status[query.result_type] = values
        elif query.result_type is None:
            target.requests = values
        elif values:
            target.by_type[query.result_type] = values
    return metrics
