"""The `cfmetrics` command line: a thin layer that builds clients and values, then calls the library."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from job import __version__
from job.adapters.local_store import LocalLogStore
from job.adapters.sinks import CLOUDWATCH_SETTLE
from job.core.errors import CfMetricsError, ConfigError, SqlChangedError
from job.core.files import Layout, LogFormat, describe_missing_files, validate_distribution_id
from job.core.limits import DEFAULT_QUERY_CONCURRENCY, MAX_ATHENA_QUERY_BYTES, MAX_QUERY_CONCURRENCY
from job.core.metrics import (
    DEFAULT_EDGE_LOCATION_CAP,
    DEFAULT_METRIC_GROUPS,
    DEFAULT_NAMESPACE,
    DOCUMENTED_RESULT_TYPES,
    MetricGroup,
    format_metric_groups,
    parse_metric_groups,
)
from job.core.status import format_age
from job.core.validate import parse_result_types, validate_query_name, validate_s3_location
from job.core.window import HourWindow, effective_window, parse_end, parse_time
from job.query.sql_files import DEFAULT_SQL_DIR, MINUTE_METRICS, TABLE_DDL, SqlFile, query_parameters
from job.query.sql_values import Varchar
from job.runner import DEFAULT_MAX_FILES_PER_QUERY, DEFAULT_YOUNG_FILE_RETRY, Job
from job.wiring import DEFAULT_STATE, EngineKind, Settings, build_job

# The CLI's name of each setting a ConfigError can name (core and wiring name settings neutrally).
FLAGS = {
    "namespace": "--namespace", "result_types": "--result-types", "location": "--location", "query": "--query",
    "from": "--from", "to": "--to", "distributions": "--distribution", "sink": "--sink", "engine": "--engine",
    "athena_results": "--athena-results", "threads": "--threads", "query_timeout": "--query-timeout",
    "query_concurrency": "--query-concurrency",
    "logs": "--logs", "state": "--state", "files_per_query": "--files-per-query", "trino_url": "--trino-url",
    "trino_schema": "--trino-schema", "endpoint_url": "--endpoint-url", "s3_endpoint_url": "--s3-endpoint-url",
    "young_file_retry": "--retry-unreadable-for",
    "metric_groups": "--metrics", "edge_location_cap": "--edge-locations", "requests_per_day": "--requests-per-day",
    "distribution_count": "--distributions", "schedule_minutes": "--schedule-minutes",
}  # fmt: skip


def _time(setting: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    return parse_end(value, setting) if setting == "to" else parse_time(value, setting)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def settings_from_args(args: argparse.Namespace, now: datetime) -> Settings:
    """The validated Settings of `run`, `backfill` and `status`."""
    import getpass
    import socket

    settings = Settings(
        logs=args.logs,
        namespace=args.namespace,
        query=args.query,
        sql_dir=Path(args.sql_dir),
        sink=args.sink,
        state=args.state,
        engine=EngineKind(args.engine),
        layout=Layout(args.layout),
        log_format=LogFormat(args.log_format),
        distributions=tuple(args.distribution or ()),
        result_types=parse_result_types(args.result_types),
        metric_groups=parse_metric_groups(args.metrics),
        edge_location_cap=args.edge_locations,
        region=args.region,
        endpoint_url=args.endpoint_url,
        s3_endpoint_url=args.s3_endpoint_url,
        threads=args.threads,
        workgroup=args.workgroup,
        database=args.database,
        athena_results=args.athena_results,
        query_timeout_seconds=args.query_timeout,
        query_concurrency=args.query_concurrency,
        files_per_query=args.files_per_query,
        trino_url=args.trino_url,
        trino_catalog=args.trino_catalog,
        trino_schema=args.trino_schema,
        in_flight_settle=timedelta(seconds=args.in_flight_settle),
        dry_run=getattr(args, "dry_run", False),
        accept_changed_sql=getattr(args, "accept_changed_sql", False),
        owner=f"{getpass.getuser()}@{socket.gethostname()}",
        check_distributions=args.check_distributions,
        young_file_retry=timedelta(seconds=args.retry_unreadable_for),
    )
    window = effective_window(
        _time("from", args.start), _time("to", args.end), now, checks_age=settings.checks_timestamp_age
    )
    return replace(settings, window=window)


def _build_job(args: argparse.Namespace, now: datetime, **hooks: Any) -> Job:
    """The Job of `run`, `backfill` and `status`: validated settings, then the one composition root. A dry run
    and `status` send nothing and write nothing (no state folder, no lock)."""
    settings = settings_from_args(args, now)
    preview = settings.dry_run or args.command == "status"
    job = build_job(settings, preview=preview, read_only=preview, log=_log, **hooks)
    if args.command != "status":
        _log(f"state: {job.ledger}")
    return job


# The signals that ask a run to stop: Ctrl-C, and what `kill`, systemd, docker stop and CI runners send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def _stop_on_interrupt() -> Iterator[Callable[[], bool]]:
    """The first Ctrl-C (or SIGTERM) stops the run between two PutMetricData requests: what was sent is recorded,
    the rest of the batch is resumed by the next run. A second one stops at once."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        name = signal.Signals(signum).name
        _log(f"{name}: stopping after the request being sent (again to stop at once; the next run resumes)")

    previous = {number: signal.signal(number, handler) for number in STOP_SIGNALS}
    try:
        yield stop.is_set
    finally:
        for number, before in previous.items():
            signal.signal(number, before)


def cmd_run(args: argparse.Namespace) -> int:
    from job.progress import progress_reporter

    now = datetime.now(UTC)
    if args.dry_run:
        return _dry_run(args, now)
    with _stop_on_interrupt() as should_stop, progress_reporter(True) as progress:
        job = _build_job(args, now, should_stop=should_stop, on_plan=progress.on_plan, on_progress=progress.on_progress)
        report = job.run(now)
    missing = _explain_no_files(job, report)
    if report.stopped_early:
        _log(
            f"stopped: {len(report.files_done)} of {report.files_new} new file(s) done, {len(report.files_left)} "
            "left for the next run (what was sent is recorded; a batch stopped part-way is resumed first)"
        )
    _log("done: " + report.summary())
    return 130 if report.stopped_early else (1 if missing else 0)


def _dry_run(args: argparse.Namespace, now: datetime) -> int:
    """`run --dry-run` and `backfill --dry-run` alike: the files that would be read, the datums that would be
    published (DuckDB queries them locally; Athena is not queried, as that would bill), the Athena cost estimate;
    nothing sent, nothing recorded."""
    job = _build_job(args, now)
    if job.engine.name == "duckdb":
        report = plan = job.run(now)  # a dry run's report holds its plan (chunks) too
    else:
        report = plan = job.preview()
        _log("dry run on Athena: not queried (a query bills); the datums are not known until a real run")
    missing = _explain_no_files(job, plan)
    _print_plan(plan)
    series = getattr(job.sink, "series", None)
    if job.engine.name == "duckdb" and series is not None:
        from job.core.cost import PRICES_AS_OF, cloudwatch_publish_bill

        requests_usd, monthly_usd = cloudwatch_publish_bill(report.requests, len(series))
        print(
            f"CloudWatch: {report.requests:,} PutMetricData request(s), about ${requests_usd:,.4f} at $0.01 per 1,000; "
            f"{len(series):,} metric(s) (name and dimensions), about ${monthly_usd:,.2f} a month while they receive "
            f"data, at $0.30 per metric (us-east-1 prices of {PRICES_AS_OF}; `cfmetrics cost` for the whole bill)"
        )
    _log("dry run, nothing published: " + report.summary())
    return 1 if missing else 0


def _print_plan(report: Any) -> None:
    files = [f for chunk in report.chunks for f in chunk]
    for log_file in files:
        print(f"{log_file.size:>12,}  {log_file.uri}")
    billed, usd = report.athena_estimate()
    print(
        f"{report.files_already} file(s) already published, {len(files)} new: {sum(f.size for f in files):,} bytes "
        f"in {len(report.chunks)} quer{'y' if len(report.chunks) == 1 else 'ies'}; on Athena that bills "
        f"{billed / 1e6:,.1f} MB (10 MB minimum per query), about ${usd:,.4f} at $5 per TB"
    )


def _explain_no_files(job: Job, report: Any) -> bool:
    """When a run lists no file: what the root holds instead. True when that is a mistake (no log file at all
    under the root, or none of the distributions asked for): the run then exits non-zero."""
    if report.files_listed:
        return False
    everything = job.store.list(None, ())
    problem, message = describe_missing_files(
        str(job.store), everything, job.options.distributions, str(job.options.window or "all partitions")
    )
    _log(("error: " if problem else "note: ") + message)
    return problem


def cmd_status(args: argparse.Namespace) -> int:
    from job.core.status import build_status, changed_files

    now = datetime.now(UTC)
    job = _build_job(args, now)
    listing = job.store.list(job.options.window, job.options.distributions)
    records = job.ledger.file_records(job.target)
    statuses = build_status(listing.files, records, now)
    endpoint = args.endpoint_url or "the default endpoint of the region (AWS configuration chain)"
    sink = f"CloudWatch at {endpoint}" if args.sink == "cloudwatch" else job.sink.key
    print(f"ledger of: sink {sink}; namespace {job.target.namespace}; query {job.target.query}")
    print(f"state: {job.ledger}" + (" (s3 ledger)" if str(job.ledger).startswith("s3://") else ""))
    print(f"logs: {job.store} ({job.options.window or 'all partitions'})")
    if getattr(job.ledger, "missing", False):
        print(f"no ledger at {job.ledger}: nothing recorded yet (status creates none); every file listed is pending")
    for pending in job.ledger.pending(job.target):
        batch = pending.batch
        if pending.in_flight is not None:
            since = f" since {pending.in_flight_at:%Y-%m-%d %H:%M:%S} UTC" if pending.in_flight_at else ""
            waits = (
                f"request {pending.in_flight + 1} in flight{since}, its answer lost: the next run reads its receipt "
                "and sends it again only if it did not arrive"
            )
        else:
            waits = f"the next run sends request(s) {pending.sent + 1}-{len(batch.requests)}"
        print(
            f"pending batch {batch.id}: {len(batch.files)} file(s), {pending.sent}/{len(batch.requests)} "
            f"request(s) sent; waits for: {waits}"
        )
    for log_file, record in changed_files(listing.files, records):
        etags = f", ETag {record.etag} then, {log_file.etag} now" if record.etag and log_file.etag else ""
        print(
            f"changed since recorded: {log_file.uri} ({record.size:,} bytes then, {log_file.size:,} now{etags}); "
            "its lines were published as recorded and are not published again"
        )
    if not statuses:
        print("no log files and nothing recorded")
    for status in statuses:
        newest = f"{status.newest_processed_hour:%Y-%m-%dT%H}" if status.newest_processed_hour else "none"
        age = f", oldest pending file {format_age(status.oldest_pending_age)} old" if status.oldest_pending_age else ""
        print(f"\n{status.distribution_id}: newest processed partition {newest}, {status.files_pending} pending{age}")
        print(
            f"  {'hour (UTC)':<14} {'files done':>10} {'lines':>12} {'malformed':>10} {'out of range':>12} "
            f"{'pending':>8} {'bytes':>12}"
        )
        for hour in status.hours:
            print(
                f"  {hour.hour:%Y-%m-%dT%H}  {hour.files_processed:>10,} {hour.lines_processed:>12,} "
                f"{hour.malformed_lines:>10,} {hour.out_of_range_lines:>12,} {hour.files_pending:>8,} "
                f"{hour.bytes_pending:>12,}"
            )
        for uri, reason in status.unreadable:
            print(f"  unreadable: {uri}: {reason}")
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    sql_dir = Path(args.sql_dir)
    if args.ddl:
        from job.query.ddl import NORMALISING_VIEW, ddl_name

        log_format = LogFormat(args.log_format)
        ddl = SqlFile.load(TABLE_DDL if log_format is LogFormat.LEGACY else ddl_name(log_format), sql_dir)
        location = validate_s3_location(args.location)
        template = Layout(args.layout).athena_template(location)
        if args.engine == EngineKind.TRINO.value:
            from job.query.ddl import LOG_RELATION, table_spec, trino_table_sql, trino_v2_statements

            schema = args.trino_schema or "cloudfront"
            if log_format is LogFormat.LEGACY:
                table = f'"{args.trino_catalog}"."{schema}"."{LOG_RELATION}"'
                print(trino_table_sql(table_spec(ddl, location, template), table, location, template))
                return 0
            # the v2 table (for JSON: its key table and renaming view), then the view of sql/ as written, run
            # in a session whose catalog and schema are these
            qualified = f'"{args.trino_catalog}"."{schema}"'
            statements = trino_v2_statements(ddl, log_format, qualified, location, template)
            print(";\n\n".join([*statements, SqlFile.load(NORMALISING_VIEW, sql_dir).render_literal({})]))
            return 0
        given = {"location": Varchar(location), "location_template": Varchar(template)}
        print(ddl.render_literal({name: value for name, value in given.items() if name in ddl.parameters}))
        if log_format is not LogFormat.LEGACY:  # the metrics query reads the view over the v2 table
            print(";\n\n" + SqlFile.load(NORMALISING_VIEW, sql_dir).text)
        return 0
    if not args.distribution or not args.start or not args.end:
        raise ConfigError("cfmetrics sql: --distribution, --from and --to are required (or --ddl)")
    distribution_id = validate_distribution_id(args.distribution)
    start, end = parse_time(args.start, "from"), parse_end(args.end, "to")
    window = HourWindow.from_bounds(start, end)
    files = list(args.file or ())
    if args.logs:
        listed = LocalLogStore(Path(args.logs)).list(window, [distribution_id]).files
        # Trino names local files local:///abs/path in "$path" (adapters/trino_engine.py)
        prefix = "local://" if args.engine == EngineKind.TRINO.value else ""
        files += [prefix + f.uri for f in listed]
    if not files:
        raise ConfigError("cfmetrics sql: no files; name them with --file URI (repeatable) or --logs ROOT")
    for uri in files:
        if "\n" in uri or "\x00" in uri:
            raise ConfigError(f"--file {uri!r}: a log file path cannot contain a newline or NUL")
    params = query_parameters(distribution_id, window.hours(), files)
    query = SqlFile.load(validate_query_name(args.query), sql_dir)
    text = query.render_literal(params)
    print(text)
    size = len(text.encode())
    if size > MAX_ATHENA_QUERY_BYTES:
        fit = files_that_fit(query, distribution_id, window, files)
        _log(
            f"warning: the query is {size:,} bytes; Athena takes at most {MAX_ATHENA_QUERY_BYTES:,} bytes of query "
            f"text, so it would refuse it. {fit:,} of these {len(files):,} files fit in one query; name fewer with "
            "--file or a narrower --from/--to (cfmetrics run splits the files into queries by itself)"
        )
    return 0


def files_that_fit(query: SqlFile, distribution_id: str, window: HourWindow, files: Sequence[str]) -> int:
    """How many of the files (in order) one rendered query names within Athena's query-text limit."""
    low, high = 0, len(files)
    while low < high:  # the largest count whose query fits: the text grows with every file
        middle = (low + high + 1) // 2
        params = query_parameters(distribution_id, window.hours(), list(files[:middle]))
        if len(query.render_literal(params).encode()) <= MAX_ATHENA_QUERY_BYTES:
            low = middle
        else:
            high = middle - 1
    return low


def cmd_cost(args: argparse.Namespace) -> int:
    from job.core.cost import CostInput, format_bill, monthly_bill
    from job.core.metrics import validate_edge_location_cap

    given = CostInput(
        requests_per_day=args.requests_per_day,
        distributions=args.distributions,
        groups=parse_metric_groups(args.metrics),
        edge_location_cap=validate_edge_location_cap(args.edge_locations),
        schedule_minutes=args.schedule_minutes,
        lookback_hours=args.lookback_hours,
        run_seconds=args.run_seconds,
        memory_mb=args.memory_mb,
        dashboard=not args.no_dashboard,
    )
    print(format_bill(given, monthly_bill(given)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from job.demo.run import run_demo

    return run_demo(Path(args.out), endpoint_url=args.endpoint_url)


def _job_options(parser: argparse.ArgumentParser, window_required: bool) -> None:
    parser.add_argument("--logs", required=True, metavar="ROOT", help="log root, a folder or s3://bucket/prefix/")
    first = "first partition hour, UTC (e.g. 2026-11-28T15; a date alone starts at its hour 00)"
    parser.add_argument("--from", dest="start", metavar="T", required=window_required, help=first)
    parser.add_argument(
        "--to", dest="end", metavar="T", required=window_required,
        help="last partition hour, UTC, inclusive (a date alone, e.g. 2026-11-28, means the whole day, to hour 23)",
    )  # fmt: skip
    parser.add_argument("--distribution", action="append", metavar="ID", help="only this distribution (repeatable)")
    parser.add_argument("--sink", default="cloudwatch", help="'cloudwatch' (default) or 'jsonl:PATH'")
    parser.add_argument("--endpoint-url", help="CloudWatch endpoint URL with its scheme, e.g. http://localhost:5055")
    parser.add_argument("--region", help="AWS region (default: the usual AWS configuration chain)")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE, help=f"CloudWatch namespace ({DEFAULT_NAMESPACE})")
    parser.add_argument("--state", default=str(DEFAULT_STATE), help=f"ledger: a folder ({DEFAULT_STATE}) or s3://")
    parser.add_argument("--query", default=MINUTE_METRICS, help="the file of sql/ to run (default minute_metrics)")
    parser.add_argument("--sql-dir", default=str(DEFAULT_SQL_DIR), help="folder of the SQL files (default: sql/)")
    parser.add_argument(
        "--accept-changed-sql", action="store_true", help="publish with a query whose text changed since it published"
    )
    parser.add_argument(
        "--in-flight-settle",
        type=float,
        default=CLOUDWATCH_SETTLE.total_seconds(),
        metavar="SECONDS",
        help="after a crash, wait this long before reading CloudWatch back to tell whether the request in flight "
        "arrived (default 180; 0 for an endpoint that shows data at once, like moto)",
    )
    parser.add_argument(
        "--check-distributions",
        action="store_true",
        help="read only distributions that exist in the AWS account (cloudfront:ListDistributions) when no "
        "--distribution is named; others are skipped and named once (default: every folder of the root is read)",
    )
    parser.add_argument(
        "--retry-unreadable-for",
        type=float,
        default=DEFAULT_YOUNG_FILE_RETRY.total_seconds(),
        metavar="SECONDS",
        help="a file the engine cannot read that was written less than this long ago may still be being written: "
        "it is retried on the next runs instead of being recorded as unreadable (default 3600)",
    )
    parser.add_argument("--threads", type=int, help="DuckDB threads (default: all cores)")
    parser.add_argument(
        "--engine", choices=[k.value for k in EngineKind], default="duckdb", help="query engine (default duckdb)"
    )
    _trino_options(parser)
    parser.add_argument("--layout", choices=[m.value for m in Layout], default="plain", help="s3:// root layout")
    parser.add_argument(
        "--result-types",
        default=",".join(sorted(DOCUMENTED_RESULT_TYPES)),
        metavar="A,B,...",
        help="x-edge-result-type values published as they are; any other is published as ResultType=Other "
        "(default: the eight documented ones)",
    )
    parser.add_argument(
        "--log-format", choices=[m.value for m in LogFormat], default="legacy", help="how the log files are written"
    )
    parser.add_argument(
        "--metrics",
        default=format_metric_groups(DEFAULT_METRIC_GROUPS),
        metavar="GROUPS",
        help=f"metric groups to publish, of {', '.join(g.value for g in MetricGroup)}, 'default' or 'all' "
        f"(default {format_metric_groups(DEFAULT_METRIC_GROUPS)}; README, 'The metric contract')",
    )
    parser.add_argument(
        "--edge-locations",
        type=int,
        default=DEFAULT_EDGE_LOCATION_CAP,
        metavar="N",
        help=f"with the edge group: at most N edge locations by name per distribution and batch, the rest as "
        f"EdgeLocation=Other (default {DEFAULT_EDGE_LOCATION_CAP})",
    )
    parser.add_argument("--s3-endpoint-url", help="S3 endpoint for an s3:// root or ledger (e.g. a moto server)")
    parser.add_argument("--workgroup", default="primary", help="Athena workgroup (default primary)")
    parser.add_argument("--database", default="cloudfront", help="Glue database of the log table (cloudfront)")
    parser.add_argument("--athena-results", metavar="S3URI", help="s3://bucket/prefix/ for Athena's query results")
    parser.add_argument(
        "--query-concurrency",
        type=int,
        default=DEFAULT_QUERY_CONCURRENCY,
        help=f"queries of different distributions run at once on Athena (1 to {MAX_QUERY_CONCURRENCY}; default "
        f"{DEFAULT_QUERY_CONCURRENCY}; keep it under the account's active DML query quota, docs/DEPLOY.md); "
        "DuckDB and Trino run one at a time",
    )
    parser.add_argument(
        "--query-timeout",
        type=float,
        default=240.0,
        help="seconds one query may take (Athena and DuckDB); a query that takes longer is isolated like an "
        "unreadable file: its batch is halved until the file is found, recorded with the reason 'timed out'",
    )
    parser.add_argument(
        "--files-per-query",
        type=int,
        default=DEFAULT_MAX_FILES_PER_QUERY,
        metavar="N",
        help=f'at most N files per query (default {DEFAULT_MAX_FILES_PER_QUERY}: engines prune long "$path" lists '
        "less well; see the ScanAmplification warning)",
    )


def _trino_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trino-url", metavar="URL", help="with --engine trino: the server, e.g. http://host:8080")
    parser.add_argument("--trino-catalog", default="hive", help="with --engine trino: the Hive catalog (hive)")
    parser.add_argument(
        "--trino-schema",
        help="with --engine trino: the schema of the log table (an s3:// root); a local root gets a schema of its own",
    )


DRY_RUN_HELP = (
    "list the files that would be read, print the datums that would be published (the duckdb engine queries them "
    "locally; Athena is not queried) and the Athena cost estimate; send nothing, record nothing"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cfmetrics", description="Turn CloudFront access logs into per-minute CloudWatch metrics, exactly once."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="publish the metrics of every log file not yet published",
        description="Process every log file under --logs that the ledger has not recorded: "
        "query it, publish its per-minute metrics as additive deltas, record it.",
    )
    _job_options(run, window_required=False)
    run.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    run.set_defaults(func=cmd_run)

    backfill = commands.add_parser(
        "backfill",
        help="publish every file not yet published in a historical window",
        description="Process every file in the partitions overlapping --from..--to that the ledger has not "
        "recorded. Idempotent: a second run publishes nothing. Ctrl-C (or SIGTERM) stops after the request being "
        "sent; the next run resumes.",
    )
    _job_options(backfill, window_required=True)
    backfill.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    backfill.set_defaults(func=cmd_run)

    status = commands.add_parser(
        "status",
        help="files and lines processed per hour, files pending, lag (writes nothing)",
        description="Whose ledger it reads (sink, endpoint, namespace, query, state), then per distribution: files "
        "and lines processed per partition hour, the newest processed partition, the files pending and the age of "
        "the oldest one, pending batches, changed and unreadable files. Creates no state folder and takes no lock.",
    )
    _job_options(status, window_required=False)
    status.set_defaults(func=cmd_status)

    sql = commands.add_parser(
        "sql",
        help="print a query rendered with its parameters, for the Athena console",
        description="Print the metrics query (or with --ddl the table DDL) with every "
        "parameter as a validated typed literal, ready to paste into the Athena console.",
    )
    sql.add_argument("--distribution", metavar="ID", help="the distribution id")
    sql.add_argument("--from", dest="start", metavar="T", help="first partition hour, UTC")
    sql.add_argument("--to", dest="end", metavar="T", help="last partition hour, UTC, inclusive")
    sql.add_argument("--file", action="append", metavar="URI", help='a "$path" to read (repeatable), e.g. s3://b/k.gz')
    sql.add_argument("--logs", metavar="ROOT", help="add every file under a local log root in the window")
    sql.add_argument("--query", default=MINUTE_METRICS, help="the file of sql/ to render (default minute_metrics)")
    sql.add_argument("--ddl", action="store_true", help="print the CREATE EXTERNAL TABLE statement instead")
    sql.add_argument("--location", default="s3://your-log-bucket/cloudfront/", help="with --ddl: the log root in S3")
    sql.add_argument("--layout", choices=[m.value for m in Layout], default="plain", help="with --ddl: path layout")
    sql.add_argument(
        "--log-format", choices=[m.value for m in LogFormat], default="legacy", help="with --ddl: the files' format"
    )
    sql.add_argument("--sql-dir", default=str(DEFAULT_SQL_DIR), help="folder of the SQL files (default: sql/)")
    sql.add_argument(
        "--engine",
        choices=[k.value for k in EngineKind],
        default="athena",
        help="the SQL is the same for every engine; with --ddl, trino prints the table for Trino's Hive connector",
    )
    _trino_options(sql)
    sql.set_defaults(func=cmd_sql)

    cost = commands.add_parser(
        "cost",
        help="print the monthly bill of a deployment, by line, before deploying",
        description="The monthly AWS bill of the deployed job (CloudWatch metrics by group, PutMetricData, Athena "
        "with its 10 MB minimum per query, S3 LIST/GET, Lambda, alarms, the dashboard), with the prices it assumes "
        "and their date; docs/COST.md has the formulas and the alternatives.",
    )
    cost.add_argument("--requests-per-day", type=int, required=True, metavar="N", help="requests a day, all together")
    cost.add_argument("--distributions", type=int, default=1, metavar="K", help="distributions sharing them (1)")
    cost.add_argument(
        "--metrics",
        default=format_metric_groups(DEFAULT_METRIC_GROUPS),
        metavar="GROUPS",
        help=f"metric groups (default {format_metric_groups(DEFAULT_METRIC_GROUPS)})",
    )
    cost.add_argument("--edge-locations", type=int, default=DEFAULT_EDGE_LOCATION_CAP, metavar="N",
                      help="with the edge group: edge locations by name per distribution")  # fmt: skip
    cost.add_argument("--schedule-minutes", type=int, default=5, metavar="M", help="minutes between runs (5)")
    cost.add_argument("--lookback-hours", type=int, default=26, metavar="H", help="hours each run lists (26)")
    cost.add_argument("--run-seconds", type=float, default=20.0, metavar="S", help="seconds per run (20)")
    cost.add_argument("--memory-mb", type=int, default=1024, metavar="MB", help="the function's memory (1024)")
    cost.add_argument("--no-dashboard", action="store_true", help="the stack without its dashboard")
    cost.set_defaults(func=cmd_cost)

    demo = commands.add_parser(
        "demo",
        help="generate sample logs, run the job twice, show and chart the result",
        description="Generate sample logs, publish them to a local moto CloudWatch the demo "
        "starts itself, read the metrics back, print a table, write a PNG chart, rerun.",
    )
    demo.add_argument("--out", default="demo-output", help="folder for logs, ledger and chart (default demo-output)")
    demo.add_argument("--endpoint-url", help="use this CloudWatch endpoint instead of starting a moto server")
    demo.set_defaults(func=cmd_demo)
    return parser


def describe(exc: CfMetricsError) -> str:
    """The error as a CLI user reads it: the flag of the setting it names, and what to type to get out of it."""
    message = str(exc)
    if isinstance(exc, ConfigError) and exc.setting in FLAGS:
        message = f"{FLAGS[exc.setting]}: {message}"
    if isinstance(exc, SqlChangedError):
        message += " (run a new file with --query NAME and maybe --namespace; or pass --accept-changed-sql)"
    return message


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CfMetricsError as exc:
        print(f"error: {describe(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: what was published is recorded; run again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
