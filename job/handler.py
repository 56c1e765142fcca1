"""The Lambda entry point: configuration from the environment, clients built here, errors re-raised."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from job.errors import ConfigError
from job.layout import Layout, LogFormat, validate_distribution_id
from job.metrics import DEFAULT_NAMESPACE, DOCUMENTED_RESULT_TYPES, Datum, Unit
from job.runner import Job, RunOptions, RunReport
from job.sql_files import MINUTE_METRICS, SqlFile
from job.window import HourWindow, floor_hour, parse_time

HEALTH_DIMENSIONS = (("Job", "cloudfront-log-metrics"),)


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
    result_types: frozenset[str] = DOCUMENTED_RESULT_TYPES
    # How the logs are written. On Athena the format lives in the Glue catalog (cloudfront_logs is the legacy table
    # or, for v2, the normalising view over cloudfront_logs_v2: docs/FORMATS.md); validated here all the same.
    log_format: LogFormat = LogFormat.LEGACY

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HandlerConfig:
        from job.validate import parse_result_types, validate_namespace

        def need(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise ConfigError(f"environment variable {name} is not set")
            return value

        def number(name: str, default: str) -> float:
            raw = env.get(name, default)
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"environment variable {name}={raw!r}: expected a number") from None
            if value <= 0:
                raise ConfigError(f"environment variable {name}={raw!r}: expected a positive number")
            return value

        prefix = env.get("LOG_PREFIX", "")
        try:
            layout = Layout(env.get("LOG_LAYOUT", "plain"))
        except ValueError:
            raise ConfigError(f"LOG_LAYOUT={env.get('LOG_LAYOUT')!r}: expected 'plain' or 'hive'") from None
        try:
            log_format = LogFormat(env.get("LOG_FORMAT", "legacy"))
        except ValueError:
            expected = ", ".join(repr(f.value) for f in LogFormat)
            raise ConfigError(f"LOG_FORMAT={env.get('LOG_FORMAT')!r}: expected one of {expected}") from None
        ids = [d.strip() for d in env.get("DISTRIBUTIONS", "").split(",") if d.strip()]
        return cls(
            log_bucket=need("LOG_BUCKET"),
            log_prefix=prefix if not prefix or prefix.endswith("/") else prefix + "/",
            layout=layout,
            distributions=tuple(validate_distribution_id(d) for d in ids),
            namespace=validate_namespace(env.get("NAMESPACE", DEFAULT_NAMESPACE)),
            workgroup=need("ATHENA_WORKGROUP"),
            database=need("ATHENA_DATABASE"),
            results_bucket=need("RESULTS_BUCKET"),
            results_prefix=env.get("RESULTS_PREFIX", "athena-results/"),
            ledger_prefix=env.get("LEDGER_PREFIX", "ledger/"),
            lookback_hours=int(number("LOOKBACK_HOURS", "26")),
            query_timeout_seconds=number("QUERY_TIMEOUT_SECONDS", "240"),
            result_types=parse_result_types(env.get("RESULT_TYPES") or ",".join(DOCUMENTED_RESULT_TYPES)),
            log_format=log_format,
        )


def scheduled_time(event: Mapping[str, Any], fallback: datetime) -> datetime:
    """The schedule's time from the event (deterministic across retries); `fallback` for a manual invocation."""
    raw = event.get("scheduled_time") or event.get("time")
    if not raw:
        return fallback
    return parse_time(str(raw).replace("Z", ""), "event.scheduled_time")


def run_window(now: datetime, lookback_hours: int) -> HourWindow:
    """The partitions a scheduled run looks at: late files arrive up to 24 h after their hour."""
    return HourWindow(floor_hour(now - timedelta(hours=lookback_hours)), floor_hour(now))


def health_datums(report: RunReport, bytes_scanned: int, now: datetime, errors: int) -> list[Datum]:
    """The job's own health metrics for one run."""
    lag = 0.0
    if report.files_left:
        oldest = min(f.hour for f in report.files_left)
        lag = max(0.0, (now - (oldest + timedelta(hours=1))).total_seconds())
    minute = now.replace(second=0, microsecond=0)
    figures = [
        ("FilesProcessed", float(len(report.files_done)), Unit.COUNT),
        ("MalformedLines", float(report.malformed_lines), Unit.COUNT),
        ("BytesScanned", float(bytes_scanned), Unit.BYTES),
        ("LagSeconds", lag, Unit.SECONDS),
        ("Errors", float(errors), Unit.COUNT),
    ]
    return [Datum(name, HEALTH_DIMENSIONS, minute, unit, value=value) for name, value, unit in figures]


def _log(**fields: Any) -> None:
    print(json.dumps(fields, default=str), file=sys.stdout, flush=True)


def lambda_handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    from job import aws
    from job.athena_engine import AthenaEngine
    from job.s3_ledger import LedgerBusy, S3Ledger
    from job.s3_store import S3LogStore
    from job.sinks import CloudWatchSink

    started = time.monotonic()
    config = HandlerConfig.from_env(os.environ)
    now = scheduled_time(event, datetime.now(UTC))
    session = aws.session()
    s3 = aws.client(session, "s3")
    cloudwatch = aws.client(session, "cloudwatch")
    sink = CloudWatchSink(cloudwatch, key="cloudwatch")
    engine = AthenaEngine(
        database=config.database,
        workgroup=config.workgroup,
        s3_output=f"s3://{config.results_bucket}/{config.results_prefix}",
        boto3_session=session,
        timeout_seconds=config.query_timeout_seconds,
    )
    owner = getattr(context, "aws_request_id", "local")
    ledger = S3Ledger(s3, config.results_bucket, config.ledger_prefix, owner=owner)
    store = S3LogStore(s3, config.log_bucket, config.log_prefix, config.layout)
    options = RunOptions(
        namespace=config.namespace,
        window=run_window(now, config.lookback_hours),
        distributions=config.distributions,
        result_types=config.result_types,
    )
    margin_ms = (config.query_timeout_seconds + 30) * 1000

    def should_stop() -> bool:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        return remaining is not None and remaining() < margin_ms

    query = SqlFile.load(MINUTE_METRICS)
    job = Job(store, engine, ledger, sink, query, options, log=lambda m: _log(message=m), should_stop=should_stop)
    try:
        report = job.run(now)
    except LedgerBusy as busy:
        _log(message="skipped: another run is in progress", detail=str(busy))
        return {"status": "skipped", "reason": str(busy)}
    except Exception as exc:
        _log(level="ERROR", message="run failed", error=f"{type(exc).__name__}: {exc}")
        try:
            sink.put(config.namespace, health_datums(RunReport(target=job.target), 0, now, errors=1))
        except Exception as also:  # CloudWatch may be what failed; the original error is the one to raise
            _log(level="ERROR", message="could not publish the Errors metric", error=str(also))
        raise
    scanned = sum(s.data_scanned_bytes for s in engine.stats)
    sink.put(config.namespace, health_datums(report, scanned, now, errors=0))
    summary = {
        "status": "stopped-early" if report.stopped_early else "ok",
        "scheduled_time": now.isoformat(),
        "files_new": report.files_new,
        "files_processed": len(report.files_done),
        "files_left": len(report.files_left),
        "lines": report.lines,
        "malformed_lines": report.malformed_lines,
        "datums": report.datums,
        "requests": report.requests,
        "bytes_scanned": scanned,
        "athena_queries": [
            {"id": s.query_id, "bytes_scanned": s.data_scanned_bytes, "engine_ms": s.engine_ms} for s in engine.stats
        ],
        "duration_s": round(time.monotonic() - started, 3),
    }
    _log(message="run finished", **summary)
    return summary
