"""What a deployment costs a month, before anyone deploys: a pure model of the bill, line by line (docs/COST.md).

Every price is a named constant with its source; all are us-east-1 list prices as looked up on PRICES_AS_OF, free
tiers left out. Every assumption the model makes about the traffic is a named constant too, and printed with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from job.core.errors import ConfigError
from job.core.limits import ATHENA_MIN_BYTES_PER_QUERY, ATHENA_USD_PER_TB, MAX_DATUMS_PER_REQUEST
from job.core.metrics import DEFAULT_EDGE_LOCATION_CAP, DOCUMENTED_RESULT_TYPES, STATUS_CLASSES, MetricGroup
from job.core.schedule import RECENT_HOURS, full_listings_per_day, list_requests

PRICES_AS_OF = "2026-11-28"
PRICE_REGION = "us-east-1"
# https://aws.amazon.com/cloudwatch/pricing/ "Metrics": $0.30 per metric per month for the first 10,000 metrics
# (cheaper tiers above: not modelled, so the model overstates the bill above 10,000 metrics), prorated by the hour.
CLOUDWATCH_USD_PER_METRIC_MONTH = 0.30
CLOUDWATCH_FIRST_TIER_METRICS = 10_000
# same page, "API": PutMetricData $0.01 per 1,000 requests
CLOUDWATCH_USD_PER_1000_PUT_REQUESTS = 0.01
# same page, "Dashboards": $3.00 per dashboard per month (the first three of an account are free: not counted)
CLOUDWATCH_USD_PER_DASHBOARD_MONTH = 3.00
# same page, "Alarms": $0.10 per standard-resolution alarm metric per month
CLOUDWATCH_USD_PER_ALARM_METRIC_MONTH = 0.10
# https://aws.amazon.com/s3/pricing/ (S3 Standard): LIST, PUT, COPY, POST $0.005 per 1,000; GET $0.0004 per 1,000
S3_USD_PER_1000_LIST = 0.005
S3_USD_PER_1000_GET = 0.0004
# https://aws.amazon.com/lambda/pricing/ (arm64): $0.0000133334 per GB-second, $0.20 per million requests
LAMBDA_USD_PER_GB_SECOND_ARM = 0.0000133334
LAMBDA_USD_PER_MILLION_REQUESTS = 0.20
# Athena: ATHENA_USD_PER_TB and ATHENA_MIN_BYTES_PER_QUERY in job/core/limits.py (https://aws.amazon.com/athena/pricing/)

DAYS_PER_MONTH = 30
MINUTES_PER_DAY = 24 * 60

# Assumptions about the traffic (docs/COST.md says where each comes from).
# docs/BENCHMARKS.md: 2 M generated lines in 158 MB of gzip, about 80 bytes a request.
GZIP_BYTES_PER_REQUEST = 80
# CloudFront writes an hour's log of a distribution in several files (one per edge host and delivery); a busy
# distribution sees a few per 5 minutes. Athena's S3 GETs: about one per file.
FILES_PER_HOUR = 12
# A run reads the new files of each distribution; a file holds requests of up to its whole hour, so a batch covers
# up to 60 minutes of datums.
MINUTES_PER_BATCH = 60
# The job's alarms without traffic alarms: FunctionErrors, DeadLetterQueue, Lag, ScanAmplification.
JOB_ALARMS = 4
# The job's health metrics: FilesProcessed, MalformedLines, BytesScanned, LagSeconds, Errors, ScanAmplification.
HEALTH_METRICS = 6
# MalformedLines and UnreadableFiles per distribution, published only when they occur (counted: at most).
BAD_INPUT_METRICS_PER_DISTRIBUTION = 2
# The ledger's S3 requests per run (lock, journal, record, release; docs/RELIABILITY.md): PUTs at the LIST price.
LEDGER_PUTS_PER_RUN = 4
LEDGER_GETS_PER_RUN = 4
DEFAULT_RUN_SECONDS = 20.0
DEFAULT_MEMORY_MB = 1024
DEFAULT_SCHEDULE_MINUTES = 5
DEFAULT_LOOKBACK_HOURS = 26


def metrics_per_distribution(group: MetricGroup, edge_location_cap: int = DEFAULT_EDGE_LOCATION_CAP) -> int:
    """At most this many CloudWatch metrics (name and dimension values) per distribution for the group."""
    if group is MetricGroup.CORE:  # Requests, Requests by each result type (the documented ones and Other), TimeTaken
        return 1 + len(DOCUMENTED_RESULT_TYPES) + 1 + 1
    if group is MetricGroup.STATUS:
        return len(STATUS_CLASSES)
    if group is MetricGroup.EDGE:
        return edge_location_cap + 1  # the named ones and Other
    if group is MetricGroup.PERCENTILES:
        return 3
    return 1  # bytes, ttfb


def datums_per_minute(group: MetricGroup, edge_location_cap: int = DEFAULT_EDGE_LOCATION_CAP) -> int:
    """Datums a minute of one distribution adds to a batch (a distribution of under 150 values is one datum)."""
    return metrics_per_distribution(group, edge_location_cap)


@dataclass(frozen=True)
class CostInput:
    requests_per_day: int
    distributions: int = 1
    groups: frozenset[MetricGroup] = frozenset(MetricGroup) - {MetricGroup.EDGE}
    edge_location_cap: int = DEFAULT_EDGE_LOCATION_CAP
    schedule_minutes: int = DEFAULT_SCHEDULE_MINUTES
    lookback_hours: int = DEFAULT_LOOKBACK_HOURS
    run_seconds: float = DEFAULT_RUN_SECONDS
    memory_mb: int = DEFAULT_MEMORY_MB
    dashboard: bool = True

    def __post_init__(self) -> None:
        if self.requests_per_day < 0:
            raise ConfigError(f"requests per day {self.requests_per_day}: expected 0 or more", "requests_per_day")
        if self.distributions < 1:
            raise ConfigError(f"distributions {self.distributions}: expected 1 or more", "distribution_count")
        if not 1 <= self.schedule_minutes <= MINUTES_PER_DAY:
            raise ConfigError(f"schedule {self.schedule_minutes} minutes: expected 1 to 1440", "schedule_minutes")
        if not self.groups:
            raise ConfigError("metric groups: expected at least one", "metric_groups")

    @property
    def runs_per_day(self) -> int:
        return MINUTES_PER_DAY // self.schedule_minutes


@dataclass(frozen=True)
class CostLine:
    item: str
    quantity: float
    unit: str
    unit_price: str
    usd: float


def _ordered(groups: Iterable[MetricGroup]) -> list[MetricGroup]:
    chosen = set(groups)
    return [g for g in MetricGroup if g in chosen]


def cloudwatch_publish_bill(requests: int, metrics: int) -> tuple[float, float]:
    """(USD for the PutMetricData requests, USD per month for the metrics they create), first price tier: what a
    dry run shows beside the Athena estimate."""
    return requests / 1000 * CLOUDWATCH_USD_PER_1000_PUT_REQUESTS, metrics * CLOUDWATCH_USD_PER_METRIC_MONTH


def athena_query_bill(query_bytes: Iterable[int]) -> tuple[int, float]:
    """(bytes billed, USD) of Athena queries that read these many bytes each: at least 10 MB a query. The model of
    `cfmetrics cost` and of the dry runs' estimate (`run --dry-run`, `backfill --dry-run`)."""
    billed = sum(max(ATHENA_MIN_BYTES_PER_QUERY, size) for size in query_bytes)
    return billed, billed / 1e12 * ATHENA_USD_PER_TB


def athena_billed_bytes_per_day(given: CostInput) -> float:
    """Each run queries every distribution with new files once; each query bills at least 10 MB."""
    per_distribution = given.requests_per_day / given.distributions * GZIP_BYTES_PER_REQUEST
    per_query = per_distribution / given.runs_per_day
    return given.distributions * given.runs_per_day * max(float(ATHENA_MIN_BYTES_PER_QUERY), per_query)


def listing_requests_per_day(given: CostInput) -> int:
    """S3 LIST requests a day of the scheduled runs (job/core/schedule.py): each distribution's recent hours on
    most runs, its whole look-back once a clock hour, a request per 1,000 keys; plus one per run for the
    distribution folders."""
    full = full_listings_per_day(given.schedule_minutes)
    recent = given.runs_per_day - full
    recent_keys = FILES_PER_HOUR * min(RECENT_HOURS, given.lookback_hours + 1)
    full_keys = FILES_PER_HOUR * (given.lookback_hours + 1)
    per_distribution = recent * list_requests(recent_keys) + full * list_requests(full_keys)
    return given.distributions * per_distribution + given.runs_per_day


METRIC_PRICE = f"${CLOUDWATCH_USD_PER_METRIC_MONTH:.2f}/metric"


def monthly_bill(given: CostInput) -> list[CostLine]:
    """The bill of one month, line by line."""
    lines: list[CostLine] = []
    d, runs = given.distributions, given.runs_per_day
    for group in _ordered(given.groups):
        count = d * metrics_per_distribution(group, given.edge_location_cap)
        usd = count * CLOUDWATCH_USD_PER_METRIC_MONTH
        lines.append(CostLine(f"CloudWatch metrics: {group.value}", count, "metrics (at most)", METRIC_PRICE, usd))
    fixed = HEALTH_METRICS + d * BAD_INPUT_METRICS_PER_DISTRIBUTION
    usd = fixed * CLOUDWATCH_USD_PER_METRIC_MONTH
    lines.append(CostLine("CloudWatch metrics: health and bad input", fixed, "metrics (at most)", METRIC_PRICE, usd))
    per_batch = MINUTES_PER_BATCH * sum(datums_per_minute(g, given.edge_location_cap) for g in given.groups)
    requests = DAYS_PER_MONTH * runs * (d * math.ceil(per_batch / MAX_DATUMS_PER_REQUEST) + 1)
    lines.append(CostLine("CloudWatch PutMetricData", requests, "requests", "$0.01/1,000",
                          requests / 1000 * CLOUDWATCH_USD_PER_1000_PUT_REQUESTS))  # fmt: skip
    billed = DAYS_PER_MONTH * athena_billed_bytes_per_day(given)
    usd = billed / 1e12 * ATHENA_USD_PER_TB  # athena_query_bill over a month of queries of the same size
    lines.append(
        CostLine("Athena (10 MB minimum per query)", billed / 1e9, "GB scanned", f"${ATHENA_USD_PER_TB:.2f}/TB", usd)
    )
    lists = DAYS_PER_MONTH * (listing_requests_per_day(given) + runs * LEDGER_PUTS_PER_RUN)
    lines.append(CostLine("S3 LIST (listing) and PUT (ledger)", lists, "requests", "$0.005/1,000",
                          lists / 1000 * S3_USD_PER_1000_LIST))  # fmt: skip
    gets = DAYS_PER_MONTH * (d * 24 * FILES_PER_HOUR + runs * LEDGER_GETS_PER_RUN)
    lines.append(CostLine("S3 GET (log files, ledger)", gets, "requests", "$0.0004/1,000",
                          gets / 1000 * S3_USD_PER_1000_GET))  # fmt: skip
    gb_seconds = DAYS_PER_MONTH * runs * given.run_seconds * given.memory_mb / 1024
    lambda_usd = (
        gb_seconds * LAMBDA_USD_PER_GB_SECOND_ARM + DAYS_PER_MONTH * runs / 1e6 * LAMBDA_USD_PER_MILLION_REQUESTS
    )
    lines.append(CostLine("Lambda (arm64) GB-seconds and requests", gb_seconds, "GB-s", "$0.0000133334/GB-s",
                          lambda_usd))  # fmt: skip
    lines.append(CostLine("CloudWatch alarms (the job's)", JOB_ALARMS, "alarms", "$0.10/alarm",
                          JOB_ALARMS * CLOUDWATCH_USD_PER_ALARM_METRIC_MONTH))  # fmt: skip
    if given.dashboard:
        lines.append(CostLine("CloudWatch dashboard", 1, "dashboard", "$3.00/dashboard",
                              CLOUDWATCH_USD_PER_DASHBOARD_MONTH))  # fmt: skip
    return lines


def format_bill(given: CostInput, lines: list[CostLine]) -> str:
    groups = ",".join(g.value for g in _ordered(given.groups))
    head = (
        f"Monthly cost of cloudfront-log-metrics: {given.requests_per_day:,} requests a day over "
        f"{given.distributions} distribution(s), metric groups {groups}, a run every {given.schedule_minutes} "
        f"minutes ({given.runs_per_day} a day), {DAYS_PER_MONTH} days.\n"
        f"Prices: {PRICE_REGION} list prices as of {PRICES_AS_OF}, free tiers left out (docs/COST.md has the "
        "formulas and the sources).\n"
        f"Assumed: {GZIP_BYTES_PER_REQUEST} bytes of gzip per request, {FILES_PER_HOUR} log files per hour and "
        f"distribution, batches of up to {MINUTES_PER_BATCH} minutes, runs of {given.run_seconds:g} s at "
        f"{given.memory_mb} MB.\n"
    )
    rows = [f"{'line':<42} {'quantity':>16} {'':<18} {'unit price':>20} {'USD/month':>10}"]
    for line in lines:
        quantity = f"{line.quantity:,.1f}" if line.quantity % 1 else f"{line.quantity:,.0f}"
        rows.append(f"{line.item:<42} {quantity:>16} {line.unit:<18} {line.unit_price:>20} {line.usd:>10.2f}")
    total = sum(line.usd for line in lines)
    rows.append(f"{'total':<42} {'':>16} {'':<18} {'':>20} {total:>10.2f}")
    metrics = sum(line.quantity for line in lines if line.item.startswith("CloudWatch metrics"))
    if metrics > CLOUDWATCH_FIRST_TIER_METRICS:
        rows.append(f"note: {metrics:,.0f} metrics; above {CLOUDWATCH_FIRST_TIER_METRICS:,} CloudWatch charges less "
                    "per metric than modelled here")  # fmt: skip
    rows.append("not included: GetMetricData of dashboards and Grafana while open ($0.01 per 1,000 metrics), "
                "traffic alarms ($0.10 per metric in each), data transfer")  # fmt: skip
    return head + "\n".join(rows)
