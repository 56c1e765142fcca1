"""The one composition root: Settings -> log store, engine, ledger and sink -> Job (CLI, handler, demo, bench)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any

from job.adapters.sinks import CLOUDWATCH_SETTLE
from job.core.errors import ConfigError
from job.core.files import Layout, LogFormat, validate_distribution_id
from job.core.limits import DEFAULT_QUERY_CONCURRENCY
from job.core.metrics import (
    DEFAULT_EDGE_LOCATION_CAP,
    DEFAULT_METRIC_GROUPS,
    DEFAULT_NAMESPACE,
    DOCUMENTED_RESULT_TYPES,
    MetricGroup,
    validate_edge_location_cap,
)
from job.core.validate import validate_namespace, validate_query_name
from job.core.window import HourWindow
from job.ports import Engine, Ledger, LogStore, Sink
from job.query.sql_files import DEFAULT_SQL_DIR, MINUTE_METRICS, TABLE_DDL, SqlFile
from job.query.translate import check_syntax
from job.runner import (
    DEFAULT_MAX_FILES_PER_QUERY,
    DEFAULT_YOUNG_FILE_RETRY,
    MAX_FILES_PER_QUERY,
    Job,
    RunOptions,
    check_query_concurrency,
)

DEFAULT_STATE = ".cfmetrics-state"
DEFAULT_QUERY_TIMEOUT_SECONDS = 240.0


class EngineKind(Enum):
    """Where sql/ runs: embedded DuckDB (local folders, or S3 files downloaded first), Athena, or one's own Trino."""

    DUCKDB = "duckdb"
    ATHENA = "athena"
    TRINO = "trino"


@dataclass(frozen=True)
class Settings:
    """Everything a run is configured with, validated; the CLI builds it from flags, the handler from its
    environment. Locations are a local folder or s3://bucket/prefix/."""

    logs: str
    window: HourWindow | None = None
    namespace: str = DEFAULT_NAMESPACE
    query: str = MINUTE_METRICS
    sql_dir: Path = DEFAULT_SQL_DIR
    sink: str = "cloudwatch"  # 'cloudwatch' or 'jsonl:PATH'
    state: str = DEFAULT_STATE
    engine: EngineKind = EngineKind.DUCKDB
    layout: Layout = Layout.PLAIN
    log_format: LogFormat = LogFormat.LEGACY
    distributions: tuple[str, ...] = ()
    result_types: frozenset[str] = DOCUMENTED_RESULT_TYPES
    metric_groups: frozenset[MetricGroup] = DEFAULT_METRIC_GROUPS
    edge_location_cap: int = DEFAULT_EDGE_LOCATION_CAP
    region: str | None = None
    endpoint_url: str | None = None  # CloudWatch's
    s3_endpoint_url: str | None = None
    threads: int | None = None
    workgroup: str = "primary"
    database: str = "cloudfront"
    athena_results: str | None = None
    query_timeout_seconds: float = DEFAULT_QUERY_TIMEOUT_SECONDS
    trino_url: str | None = None
    trino_catalog: str = "hive"
    trino_schema: str | None = None  # over a local root: the engine's own schema
    in_flight_settle: timedelta = CLOUDWATCH_SETTLE
    files_per_query: int = DEFAULT_MAX_FILES_PER_QUERY
    # queries of different chunks run at once on engines that can (Athena: mind the account's active-DML quota)
    query_concurrency: int = DEFAULT_QUERY_CONCURRENCY
    dry_run: bool = False
    accept_changed_sql: bool = False
    owner: str = "local"  # who holds the S3 ledger's lease: a request id, user@host
    lease: timedelta | None = None  # how long the S3 ledger's lease lasts; None: LEASE_DURATION (the handler: its
    # function's timeout plus LEASE_MARGIN)
    # Read only the distributions that exist in the account (cloudfront:ListDistributions, once per run) when
    # none is named: the Lambda's default; the CLI's --check-distributions.
    check_distributions: bool = False
    young_file_retry: timedelta = DEFAULT_YOUNG_FILE_RETRY  # an unreadable file this young is retried next run
    scheduled: bool = False  # the Lambda's run: the listing schedule picks what of the window is listed

    def __post_init__(self) -> None:
        validate_namespace(self.namespace)
        validate_query_name(self.query)
        if not self.metric_groups:
            raise ConfigError("metric groups: expected at least one", "metric_groups")
        validate_edge_location_cap(self.edge_location_cap)
        for distribution_id in self.distributions:
            validate_distribution_id(distribution_id)
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads {self.threads}: expected a positive number", "threads")
        if not 1 <= self.files_per_query <= MAX_FILES_PER_QUERY:
            raise ConfigError(
                f"files per query {self.files_per_query}: expected 1 to {MAX_FILES_PER_QUERY:,}", "files_per_query"
            )
        check_query_concurrency(self.query_concurrency)
        if self.young_file_retry < timedelta(0):
            raise ConfigError(
                f"young file retry {self.young_file_retry}: expected zero or more seconds", "young_file_retry"
            )
        if self.query_timeout_seconds <= 0:
            raise ConfigError(
                f"query timeout {self.query_timeout_seconds}: expected a positive number", "query_timeout"
            )
        if self.engine is EngineKind.ATHENA and not self.logs.startswith("s3://"):
            raise ConfigError(f"the Athena engine needs an s3:// log root; {self.logs!r} is a local folder", "engine")
        if self.engine is EngineKind.ATHENA and not self.athena_results:
            raise ConfigError("the Athena engine needs an s3://bucket/prefix/ for its query results", "athena_results")
        parse_sink_spec(self.sink)
        if self.engine is EngineKind.TRINO and not self.trino_url:
            raise ConfigError(
                "the Trino engine needs the URL of a Trino server, e.g. http://127.0.0.1:8080", "trino_url"
            )
        if self.engine is EngineKind.TRINO and self.logs.startswith("s3://") and not self.trino_schema:
            raise ConfigError(
                "the Trino engine over an s3:// root reads the table you created (cfmetrics sql --ddl --engine "
                "trino): name its schema",
                "trino_schema",
            )
        for setting, url in (("endpoint_url", self.endpoint_url), ("s3_endpoint_url", self.s3_endpoint_url)):
            if url is not None:
                validate_endpoint_url(url, setting)

    @property
    def checks_timestamp_age(self) -> bool:
        """CloudWatch refuses datapoints older than two weeks; a jsonl file takes any."""
        return parse_sink_spec(self.sink)[0] == "cloudwatch"

    @property
    def sink_key(self) -> str:
        """How the ledger names the destination: each destination gets each file exactly once."""
        kind, path = parse_sink_spec(self.sink)
        if kind == "jsonl":
            assert path is not None
            return f"jsonl:{path.resolve()}"
        return f"cloudwatch@{self.endpoint_url or 'default'}"


_ENDPOINT = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(:\d{1,5})?(/[^\s]*)?$")


def validate_endpoint_url(url: str, setting: str) -> str:
    """An endpoint is a URL with its scheme: botocore takes 'localhost:5055' for a bad URL only when it is used."""
    if not _ENDPOINT.fullmatch(url):
        raise ConfigError(
            f"endpoint {url!r}: expected a URL with its scheme, e.g. http://localhost:5055 or "
            "https://monitoring.us-east-1.amazonaws.com",
            setting,
        )
    return url


def _writable_folder(path: Path, setting: str, what: str) -> None:
    """`path` (a folder, maybe not there yet) can be created and written: its nearest existing ancestor is a
    writable folder. Checked before any query, and without creating anything."""
    probe = path.resolve()
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what} {path}: {probe} is a file, not a folder; expected a folder it can write", setting)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: the folder {probe} cannot be written; expected a writable folder", setting)


def check_locations(settings: Settings) -> None:
    """Every local path a run writes can be written (the jsonl file, the ledger folder), before any query."""
    kind, path = parse_sink_spec(settings.sink)
    if kind == "jsonl":
        assert path is not None
        if path.is_dir():
            raise ConfigError(f"sink jsonl:{path}: is a folder; expected the path of a file", "sink")
        if path.exists() and not os.access(path, os.W_OK):
            raise ConfigError(f"sink jsonl:{path}: the file cannot be written", "sink")
        _writable_folder(path.parent, "sink", f"sink jsonl:{path}: folder")
        if not settings.dry_run:  # the run writes it anyway: open it now, so a failure costs no query
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.open("a").close()
            except OSError as exc:
                raise ConfigError(f"sink jsonl:{path}: cannot be written ({exc.strerror}); expected a writable file "
                                  "path", "sink") from exc  # fmt: skip
    if not settings.state.startswith("s3://"):
        state = Path(settings.state)
        if state.exists() and not state.is_dir():
            raise ConfigError(f"state {state}: is a file; expected a folder for the ledger, or s3://bucket/prefix/",
                              "state")  # fmt: skip
        _writable_folder(state, "state", "state")
    if not settings.logs.startswith("s3://") and not Path(settings.logs).is_dir():
        raise ConfigError(
            f"log root {settings.logs}: no such folder; expected a folder of partitioned CloudFront log files "
            "or s3://bucket/prefix/",
            "logs",
        )


def parse_sink_spec(spec: str) -> tuple[str, Path | None]:
    """'cloudwatch' or 'jsonl:PATH'."""
    if spec == "cloudwatch":
        return "cloudwatch", None
    if spec.startswith("jsonl:") and len(spec) > len("jsonl:"):
        return "jsonl", Path(spec.removeprefix("jsonl:"))
    raise ConfigError(f"sink {spec!r}: expected 'cloudwatch' or 'jsonl:PATH'", "sink")


@dataclass
class Clients:
    """The boto3 session and clients a run needs, built once, on first use (a local run needs none)."""

    region: str | None
    endpoint_url: str | None
    s3_endpoint_url: str | None
    # clients made elsewhere (the demo's, with dummy credentials for moto), by service name
    made: dict[str, Any] = field(default_factory=dict)
    _session: Any = None

    @property
    def session(self) -> Any:
        from job.adapters import aws

        if self._session is None:
            self._session = aws.session(self.region)
        return self._session

    def client(self, service: str) -> Any:
        from job.adapters import aws

        if service not in self.made:
            endpoint = self.endpoint_url if service == "cloudwatch" else self.s3_endpoint_url
            self.made[service] = aws.client(self.session, service, endpoint)
        return self.made[service]


def build_sink(settings: Settings, clients: Clients, preview: bool = False) -> Sink:
    """The destination; `preview` (dry runs, status) prints instead and needs no client."""
    from job.adapters.sinks import CloudWatchSink, DryRunSink, JsonlSink

    if preview:
        import sys

        return DryRunSink(sys.stdout, settings.sink_key)
    kind, path = parse_sink_spec(settings.sink)
    if kind == "jsonl":
        assert path is not None
        return JsonlSink(path)
    return CloudWatchSink(clients.client("cloudwatch"), key=settings.sink_key, settle=settings.in_flight_settle)


def build_store_and_engine(settings: Settings, clients: Clients) -> tuple[LogStore, Engine]:
    """A local folder runs on DuckDB; an s3:// root on Athena, or on DuckDB over downloaded copies."""
    if settings.engine is EngineKind.TRINO:
        return _store(settings, clients), _trino(settings)
    if not settings.logs.startswith("s3://"):
        from job.adapters.local_store import LocalLogStore

        return LocalLogStore(Path(settings.logs)), _duckdb(settings)
    from job.adapters.s3_store import DownloadingEngine, S3LogStore, split_s3_uri

    bucket, prefix = split_s3_uri(settings.logs)
    store = S3LogStore(clients.client("s3"), bucket, prefix, settings.layout)
    if settings.engine is EngineKind.DUCKDB:
        return store, DownloadingEngine(_duckdb(settings), clients.client("s3"))
    from job.adapters.athena_engine import AthenaEngine

    assert settings.athena_results is not None
    results_bucket, results_prefix = split_s3_uri(settings.athena_results)
    engine = AthenaEngine(
        database=settings.database,
        workgroup=settings.workgroup,
        s3_output=f"s3://{results_bucket}/{results_prefix}",
        boto3_session=clients.session,
        timeout_seconds=settings.query_timeout_seconds,
        max_concurrency=settings.query_concurrency,
    )
    return store, engine


def _store(settings: Settings, clients: Clients) -> LogStore:
    if not settings.logs.startswith("s3://"):
        from job.adapters.local_store import LocalLogStore

        return LocalLogStore(Path(settings.logs))
    from job.adapters.s3_store import S3LogStore, split_s3_uri

    bucket, prefix = split_s3_uri(settings.logs)
    return S3LogStore(clients.client("s3"), bucket, prefix, settings.layout)


def _trino(settings: Settings) -> Engine:
    from job.adapters.trino_engine import TrinoEngine

    assert settings.trino_url is not None
    local = None if settings.logs.startswith("s3://") else Path(settings.logs)
    return TrinoEngine(
        url=settings.trino_url,
        ddl=SqlFile.load(TABLE_DDL, settings.sql_dir),
        catalog=settings.trino_catalog,
        schema=settings.trino_schema,
        local_root=local,
        layout=settings.layout,
        log_format=settings.log_format,
    )


def _duckdb(settings: Settings) -> Engine:
    from job.adapters.duckdb_engine import DuckDBEngine

    return DuckDBEngine(
        SqlFile.load(TABLE_DDL, settings.sql_dir), settings.threads, settings.log_format, settings.query_timeout_seconds
    )


def build_ledger(settings: Settings, clients: Clients, read_only: bool = False) -> Ledger:
    """SQLite in a local folder, or objects under s3:// written with conditional requests; `read_only` (status)
    creates nothing (the S3 ledger writes only when a run locks or records)."""
    if not settings.state.startswith("s3://"):
        from job.adapters.sqlite_ledger import LocalLedger

        return LocalLedger(Path(settings.state), read_only=read_only)
    from job.adapters.s3_ledger import S3Ledger
    from job.adapters.s3_store import split_s3_uri

    bucket, prefix = split_s3_uri(settings.state)
    from job.adapters.s3_ledger import LEASE_DURATION

    lease = settings.lease or LEASE_DURATION
    return S3Ledger(clients.client("s3"), bucket, prefix, owner=settings.owner, lease=lease)


def build_job(
    settings: Settings,
    *,
    preview: bool = False,
    clients: Clients | None = None,
    read_only: bool = False,
    log: Callable[[str], None] = lambda message: None,
    **hooks: Any,
) -> Job:
    """The Job of a run (or, with `preview`, of a dry run or `status`: nothing is sent; with `read_only`,
    `status`, nothing is written either). Every location is checked before anything is built."""
    if not read_only or settings.dry_run:  # a dry run rehearses the real one: its paths must work too
        check_locations(settings)
    clients = clients or Clients(settings.region, settings.endpoint_url, settings.s3_endpoint_url)
    query = SqlFile.load(settings.query, settings.sql_dir)
    check_syntax(query.text, str(query.path))  # a typo stops the run before any query, naming file and line
    sink = build_sink(settings, clients, preview=preview or settings.dry_run)
    store, engine = build_store_and_engine(settings, clients)
    ledger = build_ledger(settings, clients, read_only=read_only)
    options = RunOptions(
        namespace=settings.namespace,
        window=settings.window,
        distributions=settings.distributions,
        result_types=settings.result_types,
        metric_groups=settings.metric_groups,
        edge_location_cap=settings.edge_location_cap,
        max_files_per_query=settings.files_per_query,
        dry_run=settings.dry_run,
        accept_changed_sql=settings.accept_changed_sql,
        young_file_retry=settings.young_file_retry,
        scheduled=settings.scheduled,
        query_concurrency=settings.query_concurrency,
    )
    known = _known_distributions(clients) if settings.check_distributions and not settings.distributions else None
    return Job(store, engine, ledger, sink, query, options, log=log, known_distributions=known, **hooks)


def _known_distributions(clients: Clients) -> Callable[[], frozenset[str]]:
    """ListDistributions, asked once per Job (a run) however often it is called."""
    cache: list[frozenset[str]] = []

    def known() -> frozenset[str]:
        if not cache:
            from job.adapters.cloudfront import distribution_ids

            cache.append(distribution_ids(clients.client("cloudfront")))
        return cache[0]

    return known
