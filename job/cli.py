"""The `cfmetrics` command line: a thin layer that builds clients and values, then calls the library."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from job import __version__
from job.aws import client as aws_client
from job.aws import session as aws_session
from job.errors import CfMetricsError, ConfigError
from job.layout import Layout, LocalLogStore, validate_distribution_id
from job.limits import MAX_NAMESPACE_LENGTH
from job.metrics import DEFAULT_NAMESPACE
from job.sql_files import DEFAULT_SQL_DIR, MINUTE_METRICS, TABLE_DDL, SqlFile
from job.sql_values import SqlValue, Varchar, VarcharList
from job.window import HourWindow, parse_time, partition_key

DEFAULT_STATE = Path(".cfmetrics-state")
_NAMESPACE = re.compile(r"^[0-9A-Za-z.\-_/#: ]+$")
_S3_LOCATION = re.compile(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[A-Za-z0-9!\-_.*()/=]*)?$")
_QUERY_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


def validate_namespace(value: str) -> str:
    if not (0 < len(value) <= MAX_NAMESPACE_LENGTH and _NAMESPACE.fullmatch(value)) or value.startswith("AWS/"):
        raise ConfigError(
            f"--namespace {value!r}: expected 1-255 of A-Z a-z 0-9 . - _ / # : and space, not starting with 'AWS/'"
        )
    return value


def validate_s3_location(value: str) -> str:
    location = value if value.endswith("/") else value + "/"
    if not _S3_LOCATION.fullmatch(location):
        raise ConfigError(f"--location {value!r}: expected s3://bucket/prefix/ with no quotes or spaces")
    return location


def _time(option: str, value: str | None) -> datetime | None:
    return parse_time(value, option) if value is not None else None


def cloudwatch_client(endpoint_url: str | None, region: str | None) -> Any:
    return aws_client(aws_session(region), "cloudwatch", endpoint_url)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    from job.runner import Job, RunOptions, effective_window
    from job.sinks import CloudWatchSink, DryRunSink, JsonlSink, Sink, parse_sink_spec

    now = datetime.now(UTC)
    namespace = validate_namespace(args.namespace)
    distributions = tuple(validate_distribution_id(d) for d in args.distribution or ())
    kind, path = parse_sink_spec(args.sink)
    store, engine = _store_and_engine(args)
    sink: Sink
    if kind == "jsonl":
        assert path is not None
        sink = JsonlSink(path)
    else:
        key = f"cloudwatch@{args.endpoint_url or 'default'}"
        client = None if args.dry_run else cloudwatch_client(args.endpoint_url, args.region)
        sink = CloudWatchSink(client, key=key)
    window = effective_window(
        _time("--from", args.start), _time("--to", args.end), now, checks_age=sink.checks_timestamp_age
    )
    if args.dry_run:
        sink = DryRunSink(sys.stdout, sink.key)
    query = SqlFile.load(_query_name(args.query), Path(args.sql_dir))
    ledger = _ledger(args)
    _log(f"state: {ledger}")
    options = RunOptions(namespace=namespace, window=window, distributions=distributions, dry_run=args.dry_run)
    report = Job(store, engine, ledger, sink, query, options, log=_log).run(now)
    _log(("dry run, nothing published: " if args.dry_run else "done: ") + report.summary())
    return 0


def _store_and_engine(args: argparse.Namespace) -> tuple[Any, Any]:
    """A local folder runs on DuckDB; an s3:// root on Athena, or on DuckDB over downloaded copies."""
    from job.duckdb_engine import DuckDBEngine

    if not args.logs.startswith("s3://"):
        if args.engine == "athena":
            raise ConfigError(f"--engine athena needs an s3:// log root; {args.logs!r} is a local folder")
        return LocalLogStore(Path(args.logs)), DuckDBEngine(SqlFile.load(TABLE_DDL, Path(args.sql_dir)), args.threads)
    from job.s3_store import DownloadingEngine, S3LogStore, split_s3_uri

    session = aws_session(args.region)
    s3 = aws_client(session, "s3", args.s3_endpoint_url)
    bucket, prefix = split_s3_uri(args.logs)
    store = S3LogStore(s3, bucket, prefix, Layout(args.layout))
    if args.engine == "duckdb":
        return store, DownloadingEngine(DuckDBEngine(SqlFile.load(TABLE_DDL, Path(args.sql_dir)), args.threads), s3)
    from job.athena_engine import AthenaEngine

    if not args.athena_results:
        raise ConfigError("--engine athena needs --athena-results s3://bucket/prefix/ for the query results")
    results_bucket, results_prefix = split_s3_uri(args.athena_results)
    engine = AthenaEngine(
        database=args.database,
        workgroup=args.workgroup,
        s3_output=f"s3://{results_bucket}/{results_prefix}",
        boto3_session=session,
        timeout_seconds=args.query_timeout,
    )
    return store, engine


def _ledger(args: argparse.Namespace) -> Any:
    from job.ledger import LocalLedger

    if not args.state.startswith("s3://"):
        return LocalLedger(Path(args.state))
    import getpass
    import socket

    from job.s3_ledger import S3Ledger
    from job.s3_store import split_s3_uri

    bucket, prefix = split_s3_uri(args.state)
    s3 = aws_client(aws_session(args.region), "s3", args.s3_endpoint_url)
    return S3Ledger(s3, bucket, prefix, owner=f"{getpass.getuser()}@{socket.gethostname()}")


def _query_name(name: str) -> str:
    if not _QUERY_NAME.fullmatch(name):
        raise ConfigError(f"--query {name!r}: expected the name of a file in sql/ without '.sql', e.g. minute_metrics")
    return name


def cmd_sql(args: argparse.Namespace) -> int:
    sql_dir = Path(args.sql_dir)
    if args.ddl:
        ddl = SqlFile.load(TABLE_DDL, sql_dir)
        location = validate_s3_location(args.location)
        layout = Layout(args.layout)
        template = layout.athena_template(location)
        print(ddl.render_literal({"location": Varchar(location), "location_template": Varchar(template)}))
        return 0
    if not args.distribution or not args.start or not args.end:
        raise ConfigError("cfmetrics sql: --distribution, --from and --to are required (or --ddl)")
    distribution_id = validate_distribution_id(args.distribution)
    start, end = parse_time(args.start, "--from"), parse_time(args.end, "--to")
    window = HourWindow.from_bounds(start, end)
    files = list(args.file or ())
    if args.logs:
        files += [f.uri for f in LocalLogStore(Path(args.logs)).list(window, [distribution_id]).files]
    if not files:
        raise ConfigError("cfmetrics sql: no files; name them with --file URI (repeatable) or --logs ROOT")
    for uri in files:
        if "\n" in uri or "\x00" in uri:
            raise ConfigError(f"--file {uri!r}: a log file path cannot contain a newline or NUL")
    params: dict[str, SqlValue] = {
        "distribution_id": Varchar(distribution_id),
        "first_hour": Varchar(partition_key(window.first)),
        "last_hour": Varchar(partition_key(window.last)),
        "files": VarcharList(tuple(files)),
    }
    print(SqlFile.load(_query_name(args.query), sql_dir).render_literal(params))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from job.demo import run_demo

    return run_demo(Path(args.out), endpoint_url=args.endpoint_url)


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
    run.add_argument("--logs", required=True, metavar="ROOT", help="log root, a folder or s3://bucket/prefix/")
    run.add_argument("--from", dest="start", metavar="T", help="first partition hour, UTC (e.g. 2026-11-28T15)")
    run.add_argument("--to", dest="end", metavar="T", help="last partition hour, UTC, inclusive")
    run.add_argument("--distribution", action="append", metavar="ID", help="only this distribution (repeatable)")
    run.add_argument("--sink", default="cloudwatch", help="'cloudwatch' (default) or 'jsonl:PATH'")
    run.add_argument("--endpoint-url", help="CloudWatch endpoint, e.g. a local moto server")
    run.add_argument("--region", help="AWS region (default: the usual AWS configuration chain)")
    run.add_argument(
        "--namespace", default=DEFAULT_NAMESPACE, help=f"CloudWatch namespace (default {DEFAULT_NAMESPACE})"
    )
    run.add_argument(
        "--state", default=str(DEFAULT_STATE), help=f"ledger: a folder (default ./{DEFAULT_STATE}) or s3://"
    )
    run.add_argument("--dry-run", action="store_true", help="print what would be published; publish and record nothing")
    run.add_argument("--query", default=MINUTE_METRICS, help="the file of sql/ to run (default minute_metrics)")
    run.add_argument("--sql-dir", default=str(DEFAULT_SQL_DIR), help="folder of the SQL files (default: sql/)")
    run.add_argument("--threads", type=int, help="DuckDB threads (default: all cores)")
    run.add_argument("--engine", choices=["duckdb", "athena"], default="duckdb", help="query engine (default duckdb)")
    run.add_argument("--layout", choices=[m.value for m in Layout], default="plain", help="s3:// root path layout")
    run.add_argument("--s3-endpoint-url", help="S3 endpoint for an s3:// root or ledger (e.g. a moto server)")
    run.add_argument("--workgroup", default="primary", help="Athena workgroup (default primary)")
    run.add_argument("--database", default="cloudfront", help="Glue database of the log table (default cloudfront)")
    run.add_argument("--athena-results", metavar="S3URI", help="s3://bucket/prefix/ for Athena's query results")
    run.add_argument("--query-timeout", type=float, default=240.0, help="seconds to wait for one Athena query")
    run.set_defaults(func=cmd_run)

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
    sql.add_argument("--sql-dir", default=str(DEFAULT_SQL_DIR), help="folder of the SQL files (default: sql/)")
    sql.set_defaults(func=cmd_sql)

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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CfMetricsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: what was published is recorded; run again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
