"""The Lambda entry point: settings from the environment, the job from wiring, errors re-raised."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from job.core.errors import ConfigError
from job.core.files import Layout, LogFormat, validate_distribution_id
from job.core.limits import DEFAULT_QUERY_CONCURRENCY, MAX_LOG_DELIVERY_DELAY
from job.core.metrics import (
    DEFAULT_EDGE_LOCATION_CAP,
    DEFAULT_METRIC_GROUPS,
    DEFAULT_NAMESPACE,
    DOCUMENTED_RESULT_TYPES,
    MetricGroup,
    RunHealth,
    format_metric_groups,
    health_datums,
    parse_metric_groups,
    validate_edge_location_cap,
)
from job.core.schedule import ListingKind
from job.core.validate import parse_result_types, validate_namespace
from job.core.window import HourWindow, floor_hour, parse_time
from job.environment import Environment
from job.query.sql_files import MINUTE_METRICS
from job.runner import DEFAULT_MAX_FILES_PER_QUERY, Job, RunReport
from job.wiring import EngineKind, Settings, build_job

# Late files arrive up to 24 h after their hour (MAX_LOG_DELIVERY_DELAY); look back two hours more, so a file
# delivered at the very end of that delay is still listed by the run after it lands.
DEFAULT_LOOKBACK = MAX_LOG_DELIVERY_DELAY + timedelta(hours=2)

# The environment variable of each setting a ConfigError can name.
VARIABLES = {
    "namespace": "NAMESPACE", "result_types": "RESULT_TYPES", "distributions": "DISTRIBUTIONS",
    "scheduled_time": "the event's scheduled_time", "files_per_query": "FILES_PER_QUERY",
    "query_concurrency": "QUERY_CONCURRENCY",
    "metric_groups": "METRIC_GROUPS", "edge_location_cap": "EDGE_LOCATION_CAP",
    "accept_changed_sql": "ACCEPT_CHANGED_SQL",
}  # fmt: skip


class Switch(Enum):
    ON = "true"
    OFF = "false"


@dataclass(frozen=True)
class HandlerConfig:
    """Everything the template sets as environment variables, validated."""

    log_bucket: str
    log_prefix: str
    layout: Layout
    distributions: tuple[str, ...]
    namespace: str
    workgroup: str
    database: str
    results_bucket: str
    results_prefix: str
    ledger_prefix: str
    lookback_hours: int
    query_timeout_seconds: float
    files_per_query: int = DEFAULT_MAX_FILES_PER_QUERY
    query_concurrency: int = DEFAULT_QUERY_CONCURRENCY
    result_types: frozenset[str] = DOCUMENTED_RESULT_TYPES
    # How the logs are written. On Athena the format lives in the Glue catalog (cloudfront_logs is the legacy table
    # or, for v2, the normalising view over cloudfront_logs_v2: docs/FORMATS.md); validated here all the same.
    log_format: LogFormat = LogFormat.LEGACY
    # With DISTRIBUTIONS empty, read only the distributions that exist in the account (cloudfront:ListDistributions,
    # once per run): made-up folders in the bucket would otherwise each create billed metrics.
    check_distributions: bool = True
    # After an upgrade changed the query's text: publish the files not yet published with the new text.
    accept_changed_sql: bool = False
    metric_groups: frozenset[MetricGroup] = DEFAULT_METRIC_GROUPS
    edge_location_cap: int = DEFAULT_EDGE_LOCATION_CAP

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HandlerConfig:
        read = Environment(env)

        def distributions(raw: str) -> tuple[str, ...]:
            return tuple(validate_distribution_id(d.strip()) for d in raw.split(",") if d.strip())

        lookback = DEFAULT_LOOKBACK // timedelta(hours=1)
        return cls(
            log_bucket=read.required("LOG_BUCKET"),
            log_prefix=read.prefix("LOG_PREFIX"),
            layout=read.choice("LOG_LAYOUT", Layout, Layout.PLAIN),
            distributions=read.parsed("DISTRIBUTIONS", distributions),
            namespace=read.parsed("NAMESPACE", validate_namespace, DEFAULT_NAMESPACE),
            workgroup=read.required("ATHENA_WORKGROUP"),
            database=read.required("ATHENA_DATABASE"),
            results_bucket=read.required("RESULTS_BUCKET"),
            results_prefix=read.prefix("RESULTS_PREFIX", "athena-results/"),
            ledger_prefix=read.prefix("LEDGER_PREFIX", "ledger/"),
            lookback_hours=int(read.positive("LOOKBACK_HOURS", str(lookback))),
            query_timeout_seconds=read.positive("QUERY_TIMEOUT_SECONDS", "240"),
            files_per_query=int(read.positive("FILES_PER_QUERY", str(DEFAULT_MAX_FILES_PER_QUERY))),
            query_concurrency=int(read.positive("QUERY_CONCURRENCY", str(DEFAULT_QUERY_CONCURRENCY))),
            result_types=read.parsed("RESULT_TYPES", parse_result_types, ",".join(sorted(DOCUMENTED_RESULT_TYPES))),
            log_format=read.choice("LOG_FORMAT", LogFormat, LogFormat.LEGACY),
            check_distributions=read.choice("CHECK_DISTRIBUTIONS", Switch, Switch.ON) is Switch.ON,
            accept_changed_sql=read.choice("ACCEPT_CHANGED_SQL", Switch, Switch.OFF) is Switch.ON,
            metric_groups=read.parsed("METRIC_GROUPS", parse_metric_groups, DEFAULT_GROUPS_TEXT),
            edge_location_cap=read.parsed("EDGE_LOCATION_CAP", _edge_location_cap, str(DEFAULT_EDGE_LOCATION_CAP)),
        )

    def settings(self, window: HourWindow, owner: str) -> Settings:
        """The run's Settings: logs, ledger and Athena results all in S3, metrics to CloudWatch."""
        return Settings(
            logs=f"s3://{self.log_bucket}/{self.log_prefix}",
            window=window,
            scheduled=True,
            namespace=self.namespace,
            query=MINUTE_METRICS,
            state=f"s3://{self.results_bucket}/{self.ledger_prefix}",
            engine=EngineKind.ATHENA,
            layout=self.layout,
            log_format=self.log_format,
            distributions=self.distributions,
            result_types=self.result_types,
            metric_groups=self.metric_groups,
            edge_location_cap=self.edge_location_cap,
            workgroup=self.workgroup,
            database=self.database,
            athena_results=f"s3://{self.results_bucket}/{self.results_prefix}",
            query_timeout_seconds=self.query_timeout_seconds,
            files_per_query=self.files_per_query,
            query_concurrency=self.query_concurrency,
            owner=owner,
            check_distributions=self.check_distributions,
            accept_changed_sql=self.accept_changed_sql,
        )


DEFAULT_GROUPS_TEXT = format_metric_groups(DEFAULT_METRIC_GROUPS)


def _edge_location_cap(raw: str) -> int:
    try:
        cap = int(raw)
    except ValueError:
        raise ConfigError(f"edge location cap {raw!r}: expected a whole number", "edge_location_cap") from None
    return validate_edge_location_cap(cap)


def scheduled_time(event: Mapping[str, Any], fallback: datetime) -> datetime:
    """The schedule's time from the event (deterministic across retries); `fallback` for a manual invocation."""
    raw = event.get("scheduled_time") or event.get("time")
    if not raw:
        return fallback
    return parse_time(str(raw).replace("Z", ""), "scheduled_time")


def run_window(now: datetime, lookback_hours: int) -> HourWindow:
    """The partitions a scheduled run looks at: late files arrive up to 24 h after their hour."""
    return HourWindow(floor_hour(now - timedelta(hours=lookback_hours)), floor_hour(now))


# --- logs -----------------------------------------------------------------------------------------------
# One JSON object a line, with the keys AWS Lambda Powertools' Logger writes (level, location, message, timestamp,
# service, cold_start, function_name, function_memory_size, function_arn, function_request_id, xray_trace_id), so
# CloudWatch Logs Insights queries written for Powertools work here. The standard library does it in forty lines
# and ships nothing: docs/DEPLOY.md ("Logs") says why Powertools is not vendored.
SERVICE = "cfmetrics"
LOG_LEVEL_VARIABLE = "LOG_LEVEL"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_LOG_LEVEL = "INFO"


@dataclass(frozen=True)
class Invocation:
    """What every log line of one invocation carries."""

    request_id: str | None = None
    function_name: str | None = None
    function_arn: str | None = None
    memory_mb: str | None = None
    cold_start: bool = True

    @classmethod
    def of(cls, context: Any, cold_start: bool) -> Invocation:
        return cls(
            request_id=getattr(context, "aws_request_id", None),
            function_name=getattr(context, "function_name", None),
            function_arn=getattr(context, "invoked_function_arn", None),
            memory_mb=getattr(context, "memory_limit_in_mb", None),
            cold_start=cold_start,
        )


class JsonLines(logging.Formatter):
    """A log record as one JSON line; `fields` given as extra={"fields": {...}} become keys of their own."""

    def __init__(self) -> None:
        super().__init__()
        self.invocation = Invocation()

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "level": record.levelname,
            "location": f"{record.funcName}:{record.lineno}",
            "message": record.getMessage(),
            "timestamp": f"{stamp:%Y-%m-%dT%H:%M:%S}.{stamp.microsecond // 1000:03d}Z",
            "service": SERVICE,
            "cold_start": self.invocation.cold_start,
            "function_name": self.invocation.function_name,
            "function_memory_size": self.invocation.memory_mb,
            "function_arn": self.invocation.function_arn,
            "function_request_id": self.invocation.request_id,
        }
        trace = os.environ.get("_X_AMZN_TRACE_ID")
        if trace:
            line["xray_trace_id"] = trace.split(";")[0].removeprefix("Root=")
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps({k: v for k, v in line.items() if v is not None}, default=str)


_FORMATTER = JsonLines()
logger = logging.getLogger("cfmetrics")
logger.propagate = False  # the Lambda runtime's root handler would print each line a second time, as text


class _Stdout(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to sys.stdout as it is at each line (Lambda's, or a test's capture), not as it was at import."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


_handler = _Stdout()
_handler.setFormatter(_FORMATTER)
logger.addHandler(_handler)
_cold = [True]  # the first invocation of this execution environment


def log_level(env: Mapping[str, str]) -> tuple[int, str | None]:
    """LOG_LEVEL as a logging level, and a warning when it is not one of LOG_LEVELS (then INFO)."""
    raw = env.get(LOG_LEVEL_VARIABLE, DEFAULT_LOG_LEVEL).strip().upper() or DEFAULT_LOG_LEVEL
    if raw not in LOG_LEVELS:
        expected = ", ".join(LOG_LEVELS)
        return logging.INFO, f"environment variable {LOG_LEVEL_VARIABLE} {raw!r}: expected one of {expected}; INFO"
    level: int = getattr(logging, raw)
    return level, None


def _log(message: str, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, message, extra={"fields": fields}, stacklevel=2)


def lambda_handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    _FORMATTER.invocation = Invocation.of(context, _cold[0])
    _cold[0] = False
    level, warning = log_level(os.environ)
    logger.setLevel(level)
    if warning:
        _log(warning, logging.WARNING)
    try:
        return _handle(event, context)
    except ConfigError as exc:
        variable = VARIABLES.get(exc.setting or "")
        message = f"{variable}: {exc}" if variable and not str(exc).startswith("environment variable") else str(exc)
        _log("configuration error", logging.ERROR, error=message)
        raise ConfigError(message, exc.setting) from exc


def mark_full_listing(job: Job, report: RunReport, now: datetime) -> None:
    """Records a full listing once its run has published everything it found; a run that stopped early (or
    failed: this is never reached) leaves the full listing due for the next run."""
    if report.listing is ListingKind.FULL and not report.stopped_early and not job.options.dry_run:
        job.ledger.set_last_full_listing(job.target, now)


def _handle(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    from job.adapters.s3_ledger import LedgerBusy

    started = time.monotonic()
    config = HandlerConfig.from_env(os.environ)
    now = scheduled_time(event, datetime.now(UTC))
    settings = config.settings(run_window(now, config.lookback_hours), getattr(context, "aws_request_id", "local"))
    margin_ms = (config.query_timeout_seconds + 30) * 1000
    remaining_at_start = getattr(context, "get_remaining_time_in_millis", None)
    if remaining_at_start is not None:
        # The lease outlives this invocation by a margin, never the next scheduled one by 20 fixed minutes.
        from job.adapters.s3_ledger import LEASE_MARGIN

        lease = timedelta(milliseconds=remaining_at_start()) + LEASE_MARGIN
        settings = dataclasses.replace(settings, lease=lease)

    def should_stop() -> bool:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        return remaining is not None and remaining() < margin_ms

    job = build_job(settings, log=lambda m: _log(m), should_stop=should_stop)
    try:
        report = job.run(now)
    except LedgerBusy as busy:
        _log("skipped: another run is in progress", logging.WARNING, detail=str(busy))
        return {"status": "skipped", "reason": str(busy)}
    except Exception as exc:
        _log("run failed", logging.ERROR, error=f"{type(exc).__name__}: {exc}")
        try:
            job.sink.put(config.namespace, health_datums(RunHealth(0, 0, 0, errors=1), now))
        except Exception as also:  # CloudWatch may be what failed; the original error is the one to raise
            _log("could not publish the Errors metric", logging.ERROR, error=str(also))
        raise
    mark_full_listing(job, report, now)
    stats = getattr(job.engine, "stats", [])
    scanned = sum(s.data_scanned_bytes for s in stats)
    oldest_left = min((f.hour for f in report.files_left), default=None)
    health = RunHealth(
        len(report.files_done),
        report.malformed_lines,
        scanned,
        0,
        oldest_left,
        report.scan_amplification,
        out_of_range_lines=report.out_of_range_lines,
        changed_files=len(report.changed_files),
        skipped_distributions=len(report.skipped_distributions),
    )
    job.sink.put(config.namespace, health_datums(health, now))
    summary = {
        "status": "stopped-early" if report.stopped_early else "ok",
        "scheduled_time": now.isoformat(),
        "listing": report.listing.value if report.listing is not None else None,
        "files_new": report.files_new,
        "files_processed": len(report.files_done),
        "files_left": len(report.files_left),
        "lines": report.lines,
        "malformed_lines": report.malformed_lines,
        "out_of_range_lines": report.out_of_range_lines,
        "unreadable_files": len(report.unreadable_files),
        "changed_files": len(report.changed_files),
        "retry_later_files": len(report.retry_later),
        "skipped_distributions": report.skipped_distributions[:10],
        "datums": report.datums,
        "requests": report.requests,
        "bytes_scanned": scanned,
        "athena_queries": [
            {"id": s.query_id, "bytes_scanned": s.data_scanned_bytes, "engine_ms": s.engine_ms} for s in stats
        ],
        "duration_s": round(time.monotonic() - started, 3),
    }
    _log("run finished", **summary)
    return summary
