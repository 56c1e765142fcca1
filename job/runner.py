"""One run of the job: list files, skip those the ledger has, query the rest, publish deltas, record them."""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import groupby

from job.core import wire
from job.core.batch import Batch, FileRecord, PendingBatch, Target
from job.core.cost import athena_query_bill
from job.core.errors import (
    ConfigError,
    InFlightUnknown,
    MetricOwnedError,
    PublishAmbiguous,
    PublishError,
    PublishNotSent,
    QueryTimedOut,
    SqlChangedError,
    UnreadableFileError,
)
from job.core.files import LogFile
from job.core.limits import (
    DEFAULT_QUERY_CONCURRENCY,
    MAX_ATHENA_QUERY_BYTES,
    MAX_DATAPOINT_AGE,
    MAX_QUERY_CONCURRENCY,
)
from job.core.metrics import (
    DEFAULT_EDGE_LOCATION_CAP,
    DEFAULT_METRIC_GROUPS,
    DOCUMENTED_RESULT_TYPES,
    MALFORMED_LINES,
    MAX_SCAN_AMPLIFICATION,
    OUT_OF_RANGE_LINES,
    UNREADABLE_FILES,
    Datum,
    MetricGroup,
    Unit,
    datums_from_rows,
    malformed_lines_datums,
    out_of_range_datums,
    published_metric_names,
    scan_amplification,
)
from job.core.packing import CLOUDWATCH_LIMITS, RequestLimits, check_datums, datum_bytes, pack_wire
from job.core.receipts import Outcome, Reading, minute_of, next_attempt_time, receipt_datum
from job.core.schedule import ListingKind, listing_plan
from job.core.status import changed_files
from job.core.timerange import check_rows, cloudwatch_takes
from job.core.window import HourWindow
from job.ports import Engine, Ledger, LogStore, QueryResult, Sink, WireSink
from job.query.sql_files import SqlFile, query_parameters

# Trino compacts an IN list longer than its domain-compaction threshold (1,000 by default) into a min..max range,
# and then reads every file in that range: measured, 1,500 named files of a partition of 3,000 read 2.0x their
# bytes (bench/trino_pruning.py, docs/DEPLOY.md). Athena does not publish its value; half the default keeps a margin.
DEFAULT_MAX_FILES_PER_QUERY = 500
MAX_FILES_PER_QUERY = 10_000  # Athena's 262,144-byte query text holds about 2,500 S3 paths anyway
# Partitions one query may make projection plan: a scheduled run's 26-hour look-back, plus one. (Athena stops at
# "more than 1 million partitions in a single scan"; planning few also keeps planning fast.)
MAX_PLANNED_PARTITIONS = 27
# About 2 M lines of gzip logs: DuckDB's exact percentiles hold every time-taken of a query in memory.
DEFAULT_MAX_QUERY_DATA_BYTES = 128 * 1024 * 1024
# A request whose answer is lost is resolved by its receipt and, if it did not arrive, sent again: at most this
# many attempts in one run, then the run stops and the next one resolves it.
MAX_ATTEMPTS_PER_REQUEST = 3
# How often a run waiting for a receipt reads the destination again (CloudWatch shows recent data within ~2 min).
RECEIPT_POLL_SECONDS = 15.0
# Metrics every query publishes about its input: only the query that owns them publishes them, so a second query
# over the same files (status_5xx.sql beside minute_metrics.sql) does not count the same bad lines twice.
ACCOUNT_METRICS = frozenset({MALFORMED_LINES, UNREADABLE_FILES, OUT_OF_RANGE_LINES})
# A file the engine cannot read now may still be being written (a local copy, an `aws s3 sync`, a shipper that
# writes in place): while it is younger than this it is retried on the next runs, not recorded as unreadable.
DEFAULT_YOUNG_FILE_RETRY = timedelta(hours=1)
# How many of a kind (changed files, skipped distributions, unknown result types) a run's log names.
SHOWN_IN_LOG = 10


def check_query_concurrency(value: int) -> None:
    """How many queries may run at once: 1 to MAX_QUERY_CONCURRENCY (the settings and the run options both hold it)."""
    if not 1 <= value <= MAX_QUERY_CONCURRENCY:
        raise ConfigError(f"query concurrency {value}: expected 1 to {MAX_QUERY_CONCURRENCY}", "query_concurrency")


@dataclass(frozen=True)
class RunOptions:
    namespace: str
    window: HourWindow | None
    distributions: tuple[str, ...] = ()
    result_types: frozenset[str] = DOCUMENTED_RESULT_TYPES
    max_files_per_query: int = DEFAULT_MAX_FILES_PER_QUERY
    dry_run: bool = False
    accept_changed_sql: bool = False
    request_limits: RequestLimits = CLOUDWATCH_LIMITS
    young_file_retry: timedelta = DEFAULT_YOUNG_FILE_RETRY
    metric_groups: frozenset[MetricGroup] = DEFAULT_METRIC_GROUPS
    edge_location_cap: int = DEFAULT_EDGE_LOCATION_CAP
    # A scheduled run (the Lambda's) lists its window per the listing schedule (job/core/schedule.py): the recent
    # hours, the whole window once a clock hour; an explicit window (CLI run, backfill) is listed whole.
    scheduled: bool = False
    # How many chunks' queries run ahead at once (threads); publishing stays one batch at a time, in plan order.
    # The engine's own max_concurrency caps it (DuckDB, Trino: 1); 1 runs every query on the calling thread.
    query_concurrency: int = DEFAULT_QUERY_CONCURRENCY

    def __post_init__(self) -> None:
        check_query_concurrency(self.query_concurrency)


@dataclass
class RunReport:
    """What a run did; printed by the CLI, logged by the handler."""

    target: Target
    files_listed: int = 0
    files_already: int = 0
    files_new: int = 0
    bytes_new: int = 0
    batches: int = 0
    resumed_batches: int = 0
    lines: int = 0
    malformed_lines: int = 0
    out_of_range_lines: int = 0
    datums: int = 0
    requests: int = 0
    unrecognised_paths: tuple[str, ...] = ()
    other_result_types: set[str] = field(default_factory=set)
    chunks: list[list[LogFile]] = field(default_factory=list)
    unreadable_files: list[str] = field(default_factory=list)
    scan_amplification: float | None = None  # the largest of the run's queries, where the engine reports it
    files_done: list[LogFile] = field(default_factory=list)
    files_left: list[LogFile] = field(default_factory=list)
    stopped_early: bool = False
    resolved_in_run: int = 0  # requests whose answer was lost, resolved by their receipt within the run
    other_ledgers: tuple[str, ...] = ()  # other ledgers whose receipts the namespace holds: other deployments
    changed_files: list[str] = field(default_factory=list)  # recorded files whose size or ETag differ now
    listing: ListingKind | None = None  # a scheduled run's listing: recent hours or the whole window
    skipped_distributions: list[str] = field(default_factory=list)  # not in the account: not read
    retry_later: list[str] = field(default_factory=list)  # young unreadable files, retried next run

    def athena_estimate(self) -> tuple[int, float]:
        """(bytes billed, USD) if every chunk ran as one Athena query over its gzip files."""
        return athena_query_bill(sum(f.size for f in chunk) for chunk in self.chunks)

    def summary(self) -> str:
        return (
            f"{self.files_already} file(s) already published, {self.files_new} new; {self.lines:,} lines "
            f"({self.malformed_lines:,} malformed) -> {self.datums:,} datums in {self.requests:,} PutMetricData "
            f"request(s)"
            + (f"; resumed {self.resumed_batches} interrupted batch(es)" if self.resumed_batches else "")
            + (f"; {self.out_of_range_lines:,} line(s) out of range" if self.out_of_range_lines else "")
            + (f"; {len(self.unreadable_files)} unreadable file(s)" if self.unreadable_files else "")
            + (f"; {len(self.changed_files)} changed file(s)" if self.changed_files else "")
            + (f"; {len(self.retry_later)} file(s) to retry" if self.retry_later else "")
            + (
                f"; {len(self.skipped_distributions)} unknown distribution(s) skipped"
                if self.skipped_distributions
                else ""
            )
        )


def _in_range(datum: Datum, now: datetime) -> bool:
    # An unreadable file of a partition CloudWatch no longer takes is still recorded, only not counted there.
    return now - MAX_DATAPOINT_AGE < datum.timestamp


_BATCH_SEQUENCE = itertools.count()


def new_batch_id(files: Sequence[LogFile], at: datetime) -> str:
    """Sortable by creation time (the S3 ledger lists journals since a time by name), unique across processes
    (the pid) and within one (a sequence number)."""
    return f"{at:%Y%m%dT%H%M%S%f}-{os.getpid()}-{next(_BATCH_SEQUENCE)}-{len(files)}"


def planned_partitions(hours: Iterable[datetime]) -> int:
    """How many partitions projection plans for a query over these partition hours: the product of the distinct
    values of each column, as sql/minute_metrics.sql names them (year, month, day, hour IN lists)."""
    moments = set(hours)
    return math.prod(len({f"{h:{form}}" for h in moments}) for form in ("%Y", "%m", "%d", "%H")) if moments else 0


def chunk_files(
    files: Sequence[LogFile],
    max_files: int,
    max_bytes: int,
    max_data_bytes: int = DEFAULT_MAX_QUERY_DATA_BYTES,
    max_partitions: int = MAX_PLANNED_PARTITIONS,
) -> list[list[LogFile]]:
    """Split one distribution's files (sorted by hour) into queries: each names at most max_files paths in at most
    max_bytes of query text and reads at most max_data_bytes of logs, cut at hour boundaries where it can, so
    memory stays flat as the input grows and few minutes are split between two queries. Partition projection plans
    the product of the years, months, days and hours a query names; a query is cut at a day boundary when that
    product would pass max_partitions (within one day it is the hours read, at most 24)."""
    chunks: list[list[LogFile]] = []
    current: list[LogFile] = []
    size = data = 0
    for _, hour in groupby(files, key=lambda f: f.hour):
        group = list(hour)
        if current and planned_partitions([f.hour for f in current] + [group[0].hour]) > max_partitions:
            # cut at the last day boundary: the days before it make one query, the last day goes on with this hour
            last_day = current[-1].hour.date()
            earlier = [f for f in current if f.hour.date() != last_day]
            if earlier:
                chunks.append(earlier)
                current = current[len(earlier) :]
            else:
                chunks.append(current)
                current = []
            size = sum(len(f.uri.encode()) + 4 for f in current)
            data = sum(f.size for f in current)
        if current and data + sum(f.size for f in group) > max_data_bytes:
            chunks.append(current)
            current, size, data = [], 0, 0
        for log_file in group:
            cost = len(log_file.uri.encode()) + 4  # quotes, comma, space
            full = len(current) >= max_files or size + cost > max_bytes or data + log_file.size > max_data_bytes
            if current and full:
                chunks.append(current)
                current, size, data = [], 0, 0
            current.append(log_file)
            size += cost
            data += log_file.size
    if current:
        chunks.append(current)
    return chunks


class Job:
    """Wires a log store, an engine, a ledger and a sink; each is injected, so tests and the Lambda reuse it."""

    def __init__(
        self,
        store: LogStore,
        engine: Engine,
        ledger: Ledger,
        sink: Sink,
        query: SqlFile,
        options: RunOptions,
        log: Callable[[str], None] = lambda message: None,
        should_stop: Callable[[], bool] = lambda: False,
        on_plan: Callable[[RunReport], None] = lambda report: None,
        on_progress: Callable[[RunReport, list[LogFile]], None] = lambda report, chunk: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        known_distributions: Callable[[], Collection[str]] | None = None,
    ) -> None:
        self.store, self.engine, self.ledger, self.sink, self.query = store, engine, ledger, sink, query
        # The distributions that exist (the Lambda asks CloudFront once per run); None: every one listed is read.
        self.known_distributions = known_distributions
        self.options = options
        self.log = log
        self.should_stop = should_stop
        self.on_plan, self.on_progress, self.clock, self.sleep = on_plan, on_progress, clock, sleep
        self.target = Target(query.name, sink.key, options.namespace)
        self._ledger_id = ""
        self._last_attempt: datetime | None = None
        self._publishes_accounts = True

    def _batch_id(self, files: Sequence[LogFile]) -> str:
        return new_batch_id(files, self.clock())

    def run(self, now: datetime) -> RunReport:
        report = RunReport(target=self.target)
        if self.options.dry_run:
            self._check_owners(now, claim=False)
            return self._run(now, report)
        with self.ledger.lock():
            self._ledger_id = self.ledger.identity()
            pending = self.ledger.pending(self.target)
            for batch in pending:
                if batch.in_flight_at is not None:
                    self._last_attempt = max(self._last_attempt or batch.in_flight_at, batch.in_flight_at)
            for batch in pending:
                self._resume(batch, now, report)
            self._check_fingerprint(now)
            self._check_owners(now, claim=True)
            self._look_for_other_ledgers(report)
            return self._run(now, report)

    def _check_owners(self, now: datetime, claim: bool) -> None:
        """One owner per metric name and destination: a second query publishing a metric another query publishes
        would count the same requests twice. Refused before anything is queried."""
        owners = self.ledger.metric_owners(self.target.sink, self.target.namespace)
        mine = published_metric_names(self.query.output_columns)
        taken = sorted(m for m in mine - ACCOUNT_METRICS if owners.get(m, self.query.name) != self.query.name)
        if taken:
            other = owners[taken[0]]
            raise MetricOwnedError(
                f"{self.query.path} would publish {', '.join(taken)} to {self.target.sink} namespace "
                f"{self.target.namespace!r}, which {self.query.path.parent / (other + '.sql')} already publishes "
                "there: both would count the same requests. Either give this query another namespace, or rename "
                "its columns so its metrics get names of their own (docs/RELIABILITY.md, 'One owner per metric')."
            )
        self._publishes_accounts = owners.get(MALFORMED_LINES, self.query.name) == self.query.name
        if claim and not mine <= {m for m, q in owners.items() if q == self.query.name}:
            self.ledger.claim_metrics(self.target, mine - set(owners), now)

    def _look_for_other_ledgers(self, report: RunReport) -> None:
        """Receipts of another ledger in this namespace mean another deployment publishes here: if it reads the
        same logs, every line is counted twice. Nothing here can stop that; it is said loudly."""
        try:
            others = self.sink.receipt_ledgers(self.target.namespace) - {self._ledger_id}
        except PublishError as exc:
            self.log(f"could not look for other deployments in {self.target.namespace!r}: {exc}")
            return
        report.other_ledgers = tuple(sorted(others))
        if others:
            self.log(
                f"WARNING namespace {self.target.namespace!r} holds publish receipts of {len(others)} other "
                f"ledger(s) ({', '.join(sorted(others)[:3])}; this one is {self._ledger_id}): another deployment "
                "publishes here. If it reads the same logs, every line is counted twice (docs/RELIABILITY.md)."
            )

    def _check_fingerprint(self, now: datetime) -> None:
        published = self.ledger.fingerprint(self.target)
        current = self.query.fingerprint
        if published is not None and published != current and not self.options.accept_changed_sql:
            raise SqlChangedError(
                f"{self.query.path} changed since it published to this destination (fingerprint {published} -> "
                f"{current}). Publishing with the new text would mix two definitions under the same metric names. "
                "Either save the new version as a new file in sql/ and run it as its own query (it keeps its own "
                "ledger and backfills on its own; give it another namespace if its metrics mean something else), "
                "or accept the changed SQL to publish the files not yet published with the new definition."
            )
        if published != current:
            self.ledger.set_fingerprint(self.target, current, now)

    def preview(self) -> RunReport:
        """What a run would do, without querying or publishing: the new files and the queries they need."""
        report = RunReport(target=self.target)
        new = self._new_files(report)
        report.chunks = self.plan(new)
        report.files_left = list(new)
        return report

    def _listing_window(self, report: RunReport) -> HourWindow | None:
        """The window to list: a scheduled run's listing plan (its window's last hour is the run's clock hour), or
        the whole window."""
        window = self.options.window
        if not self.options.scheduled or window is None:
            return window
        plan = listing_plan(window, window.last, self.ledger.last_full_listing(self.target))
        report.listing = plan.kind
        return plan.window

    def _new_files(self, report: RunReport) -> list[LogFile]:
        listed_window = self._listing_window(report)
        listing = self.store.list(listed_window, self.options.distributions)
        report.unrecognised_paths = listing.unrecognised
        for path in listing.unrecognised[:10]:
            self.log(f"skipped {path}: fits neither <DistributionId>/yyyy/MM/dd/HH/ nor the Hive-style layout")
        listed = self._known(listing.files, report)
        records = {r.uri: r for r in self.ledger.file_records(self.target, listed)}
        report.files_listed = len(listed)
        self._report_changed(listed, records, report)
        new = [f for f in listed if f.uri not in records]
        report.files_already = report.files_listed - len(new)
        report.files_new = len(new)
        report.bytes_new = sum(f.size for f in new)
        window = listed_window or "all partitions"
        kind = f", {report.listing.value} listing" if report.listing is not None else ""
        self.log(f"{self.store} ({window}{kind}): {report.files_already} file(s) already published, {len(new)} new")
        return new

    def _known(self, files: Sequence[LogFile], report: RunReport) -> list[LogFile]:
        """The files of distributions that exist; the others are skipped (each distribution makes billed metrics),
        named once per run and counted (SkippedDistributions)."""
        if self.known_distributions is None:
            return list(files)
        known = set(self.known_distributions())
        skipped = sorted({f.distribution_id for f in files} - known)
        if skipped:
            report.skipped_distributions = skipped
            count = sum(1 for f in files if f.distribution_id in set(skipped))
            shown = ", ".join(skipped[:SHOWN_IN_LOG]) + (f" and {len(skipped) - SHOWN_IN_LOG} more" if len(skipped) >
                                                         SHOWN_IN_LOG else "")  # fmt: skip
            self.log(
                f"skipped {len(skipped)} distribution(s) that do not exist in the account ({shown}): {count} file(s) "
                "not read; name a distribution explicitly (Distributions, --distribution) to read it anyway"
            )
        return [f for f in files if f.distribution_id in known]

    def _report_changed(self, listed: Sequence[LogFile], records: dict[str, FileRecord], report: RunReport) -> None:
        """A recorded file that differs now (rewritten, a zero-byte object filled in, a copy caught half-written)
        is named and counted; its lines are never published a second time."""
        for log_file, record in changed_files(listed, list(records.values())):
            report.changed_files.append(log_file.uri)
            if len(report.changed_files) <= SHOWN_IN_LOG:
                self.log(
                    f"CHANGED {log_file.uri}: {record.size:,} bytes"
                    + (f" (ETag {record.etag})" if record.etag else "")
                    + f" when recorded, {log_file.size:,}"
                    + (f" (ETag {log_file.etag})" if log_file.etag else "")
                    + " now; not published again (cfmetrics status lists it)"
                )
        if len(report.changed_files) > SHOWN_IN_LOG:
            self.log(f"... and {len(report.changed_files) - SHOWN_IN_LOG} more changed file(s)")

    def _run(self, now: datetime, report: RunReport) -> RunReport:
        new = self._new_files(report)
        report.chunks = self.plan(new)
        self.on_plan(report)
        workers = min(self.options.query_concurrency, getattr(self.engine, "max_concurrency", 1))
        if workers <= 1 or len(report.chunks) <= 1:
            self._run_chunks(report.chunks, now, report, lambda index: None)
        else:
            # Up to `workers` chunks' queries run ahead in threads; the main thread publishes each chunk in plan
            # order, one batch at a time, as without the pool (the ledger, sink and log see one thread only).
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="query") as pool:
                ahead: dict[int, Future[QueryResult]] = {}
                submitted = 0

                def fetch(index: int) -> Future[QueryResult] | None:
                    nonlocal submitted
                    while submitted < len(report.chunks) and submitted <= index + workers - 1:
                        queried = [f for f in report.chunks[submitted] if f.size]
                        if queried:
                            ahead[submitted] = pool.submit(self._query, queried)
                        submitted += 1
                    return ahead.pop(index, None)

                try:
                    self._run_chunks(report.chunks, now, report, fetch)
                finally:
                    for future in ahead.values():  # beyond the stop point: not started, or not published
                        future.cancel()
        done = set(report.files_done)
        report.files_left = [f for f in new if f not in done]
        self._log_other_result_types(report)
        return report

    def _query(self, files: Sequence[LogFile]) -> QueryResult:
        params = query_parameters(files[0].distribution_id, [f.hour for f in files], [f.uri for f in files])
        return self.engine.query(self.query, params, files)

    def _run_chunks(
        self,
        chunks: Sequence[list[LogFile]],
        now: datetime,
        report: RunReport,
        fetch: Callable[[int], Future[QueryResult] | None],
    ) -> None:
        for index, chunk in enumerate(chunks):
            if self.should_stop():
                report.stopped_early = True
                self.log("stopping early; the next run continues with the files left")
                break
            self._process(chunk[0].distribution_id, chunk, now, report, fetch(index))
            if report.stopped_early:  # stopped between two requests of this chunk's batch: it stays pending
                break
            report.files_done.extend(chunk)
            self.on_progress(report, chunk)

    def _log_other_result_types(self, report: RunReport) -> None:
        """Once per run, however many distinct values: how many lines, and the first few values."""
        if not report.other_result_types:
            return
        values = sorted(report.other_result_types)
        shown = ", ".join(repr(v[:100]) for v in values[:SHOWN_IN_LOG])
        more = f" and {len(values) - SHOWN_IN_LOG:,} more" if len(values) > SHOWN_IN_LOG else ""
        self.log(f"{len(values):,} unknown x-edge-result-type value(s) published as ResultType=Other: {shown}{more}")

    def plan(self, new: Sequence[LogFile]) -> list[list[LogFile]]:
        """One query per chunk: one distribution's files, within Athena's query-size limit."""
        budget = MAX_ATHENA_QUERY_BYTES - len(self.query.text.encode()) - 4096
        chunks: list[list[LogFile]] = []
        for _, group in groupby(new, key=lambda f: f.distribution_id):
            chunks += chunk_files(list(group), self.options.max_files_per_query, budget)
        return chunks

    def _process(
        self,
        distribution_id: str,
        files: list[LogFile],
        now: datetime,
        report: RunReport,
        ahead: Future[QueryResult] | None = None,
    ) -> None:
        """Query the files and publish them; a file the engine cannot read is found by halving the batch and
        recorded as unreadable, so it neither stops this run nor blocks every later one."""
        empty = [f for f in files if f.size == 0]
        if empty:  # nothing to read (an object of no bytes): recorded as a file of no lines, never queried
            files = [f for f in files if f.size]
            batch = Batch(self._batch_id(empty), self.target, tuple(empty), (), 0, 0,
                          {f.uri: (0, 0) for f in empty})  # fmt: skip
            self._start(batch, 0, now, report)
            if not files:
                return
        try:
            # a query run ahead by the pool raises here, on the main thread, what it raised there
            result = ahead.result() if ahead is not None else self._query(files)
        except UnreadableFileError as exc:  # a query that timed out too: a gzip bomb, a file too large to read
            if len(files) > 1:
                half = len(files) // 2
                self._process(distribution_id, files[:half], now, report)
                self._process(distribution_id, files[half:], now, report)
                return
            timed_out = isinstance(exc, QueryTimedOut)
            reason = "timed out: " + str(exc) if timed_out else str(exc)
            # a file that times out is not half-written: retrying it would bill a full timeout on every run
            self._publish_unreadable(files[0], reason, now, report, may_retry=not timed_out)
            return
        self._check_scan(result, files, report)
        age_check = now if self.sink.checks_timestamp_age else None
        in_range = check_rows(result.rows, [f.hour for f in files], age_check)
        if in_range.out_of_range_minutes and len(files) > 1:
            # Which file holds them decides the partition hour they are counted under: isolate it by halving,
            # as for an unreadable file (only input with such lines costs the extra queries).
            half = len(files) // 2
            self._process(distribution_id, files[:half], now, report)
            self._process(distribution_id, files[half:], now, report)
            return
        out_of_range = {files[0].uri: in_range.out_of_range_lines} if in_range.out_of_range_lines else {}
        if in_range.out_of_range_minutes:
            first, last = in_range.out_of_range_minutes[0], in_range.out_of_range_minutes[-1]
            self.log(
                f"OUT OF RANGE {files[0].uri}: {in_range.out_of_range_lines:,} line(s) in "
                f"{len(in_range.out_of_range_minutes):,} minute(s) from {first:%Y-%m-%dT%H:%MZ} to "
                f"{last:%Y-%m-%dT%H:%MZ}, outside what CloudFront writes for partition {files[0].hour:%Y-%m-%dT%H}"
                + (" or what CloudWatch takes now" if age_check else "")
                + "; skipped, counted in OutOfRangeLines"
            )
        rows = list(in_range.rows)
        metrics = datums_from_rows(
            rows,
            distribution_id,
            self.options.result_types,
            result.rejected_lines,
            self.options.metric_groups,
            self.options.edge_location_cap,
        )
        file_lines = {
            # a file with no line (empty, header only) has no row of its own
            f.uri: (metrics.files[f.uri].lines, metrics.files[f.uri].malformed) if f.uri in metrics.files else (0, 0)
            for f in files
        }
        accounts = malformed_lines_datums(distribution_id, files, file_lines) + out_of_range_datums(
            distribution_id, files, out_of_range
        )
        # the accounts carry the partition hour: one CloudWatch no longer takes is counted in the ledger only
        accounts = tuple(d for d in accounts if age_check is None or cloudwatch_takes(d.timestamp, age_check))
        # only the query that owns the accounts publishes them (a second query over the same files counts no
        # bad line twice)
        datums = metrics.datums + (accounts if self._publishes_accounts else ())
        check_datums(datums, age_check)
        report.other_result_types |= metrics.other_result_types
        requests, fragments = pack_wire(datums, self._data_limits())
        batch = Batch(
            id=self._batch_id(files),
            target=self.target,
            files=tuple(files),
            requests=requests,
            fragments=fragments,
            lines=metrics.requests + metrics.malformed_lines + in_range.out_of_range_lines,
            malformed_lines=metrics.malformed_lines,
            file_lines=file_lines,
            out_of_range=out_of_range,
        )
        self.log(
            f"{distribution_id}: {len(files)} file(s), {batch.lines:,} lines ({batch.malformed_lines:,} malformed) "
            f"-> {len(datums):,} datums in {len(requests)} request(s)"
        )
        report.out_of_range_lines += in_range.out_of_range_lines
        self._start(batch, len(datums), now, report)

    def _check_scan(self, result: QueryResult, files: Sequence[LogFile], report: RunReport) -> None:
        """The pruning self-check: an engine that reads more than the named files prunes by "$path" less than
        this job's cost model assumes (Trino compacts long IN lists into a range; Athena does not say)."""
        if result.scanned_bytes is None:
            return
        named = sum(f.size for f in files)
        ratio = scan_amplification(result.scanned_bytes, named, result.scan_floor_bytes)
        report.scan_amplification = max(ratio, report.scan_amplification or 0.0)
        if ratio > MAX_SCAN_AMPLIFICATION:
            self.log(
                f"WARNING query {result.query_id or '?'} scanned {result.scanned_bytes:,} bytes for {len(files)} "
                f"file(s) of {named:,} bytes ({ratio:.2f}x): the engine read files the query did not name; lower "
                "the files per query (docs/DEPLOY.md, ScanAmplification)"
            )

    def _publish_unreadable(
        self, log_file: LogFile, reason: str, now: datetime, report: RunReport, may_retry: bool = True
    ) -> None:
        # a file's age by the wall clock (`now` is the run's scheduled time, which may lie in the past)
        age_s = None if log_file.modified is None else (self.clock() - log_file.modified).total_seconds()
        if may_retry and age_s is not None and age_s < self.options.young_file_retry.total_seconds():
            # maybe still being written: not recorded, so the next runs read it again
            age = int(age_s)
            self.log(
                f"RETRY LATER {log_file.uri}: {reason} (written {age} s ago, younger than "
                f"{self.options.young_file_retry}: may still be being written; retried on the next runs)"
            )
            report.retry_later.append(log_file.uri)
            return
        self.log(f"UNREADABLE {log_file.uri}: {reason}")
        report.unreadable_files.append(log_file.uri)
        datum = Datum(
            UNREADABLE_FILES, (("DistributionId", log_file.distribution_id),), log_file.hour, Unit.COUNT, value=1.0
        )
        in_range = not self.sink.checks_timestamp_age or _in_range(datum, now)
        datums = (datum,) if in_range and self._publishes_accounts else ()
        batch = Batch(
            id=self._batch_id([log_file]),
            target=self.target,
            files=(log_file,),
            requests=pack_wire(datums, self._data_limits())[0],
            lines=0,
            malformed_lines=0,
            unreadable={log_file.uri: reason[:2000]},
        )
        self._start(batch, len(datums), now, report)

    def _start(self, batch: Batch, datums: int, now: datetime, report: RunReport) -> None:
        report.batches += 1
        report.lines += batch.lines
        report.malformed_lines += batch.malformed_lines
        report.datums += datums
        if self.options.dry_run:
            for request in batch.requests:
                self.sink.put(batch.namespace, request)
            report.requests += len(batch.requests)
            return
        self.ledger.begin(batch)
        self._publish(batch, start=0, now=now, report=report)

    def _data_limits(self) -> RequestLimits:
        """What a request's datums may take: the request's limits less one datum for its receipt."""
        limits = self.options.request_limits
        # the widest receipt: a 16-character ledger id, and the last millisecond of a minute (value 60,000.0)
        latest = datetime(2000, 1, 1, 0, 0, 59, 999_000, tzinfo=UTC)
        receipt = datum_bytes(receipt_datum("0" * 16, self.target.query, latest))
        return RequestLimits(max_datums=max(1, limits.max_datums - 1), max_bytes=limits.max_bytes - receipt)

    def _attempt_time(self) -> datetime:
        at = next_attempt_time(self.clock(), self._last_attempt)
        self._last_attempt = at
        return at

    def _publish(self, batch: Batch, start: int, now: datetime, report: RunReport) -> None:
        # The journal marks a request in flight before it is sent and sent once it is accepted, so a crash
        # leaves at most one request whose fate is unknown; its receipt tells it (job/core/receipts.py).
        for index in range(start, len(batch.requests)):
            if index > start and self.should_stop():
                # Asked to stop (Ctrl-C, SIGTERM, the Lambda's deadline): the journal holds what was sent, and
                # the next run resumes the batch with request index + 1.
                report.stopped_early = True
                self.log(
                    f"batch {batch.id}: stopped after {index} of {len(batch.requests)} request(s), the rest next run"
                )
                return
            self._send(batch, index)
            report.requests += 1
        self.ledger.commit(batch.id, now)

    def _send(self, batch: Batch, index: int) -> None:
        """Send one request with its receipt until it is known to have arrived. An answer that was lost is
        resolved by reading the receipt back within the run; a request certainly not taken is unmarked."""
        for attempt in range(1, MAX_ATTEMPTS_PER_REQUEST + 1):
            at = self._attempt_time()
            self.ledger.mark_in_flight(batch.id, index, at)
            receipt = receipt_datum(self._ledger_id, self.target.query, at)
            datums = (*batch.requests[index], receipt)
            try:
                if isinstance(self.sink, WireSink):
                    fragments = (*batch.fragments[index], wire.fragment(receipt))
                    self.sink.put_wire(batch.namespace, datums, fragments)
                else:
                    self.sink.put(batch.namespace, datums)
            except PublishNotSent:
                self.ledger.clear_in_flight(batch.id, index)
                raise
            except PublishAmbiguous as exc:
                where = f"batch {batch.id}, request {index + 1}/{len(batch.requests)}"
                self.log(f"{where}: {exc}; reading its receipt back (attempt {attempt})")
                if self._resolve(batch, index, at, may_wait=True):
                    self.ledger.mark_sent(batch.id, index)
                    return
                if attempt == MAX_ATTEMPTS_PER_REQUEST:
                    raise
                self.log(f"{where}: its receipt shows it did not arrive; sending it again")
                continue
            self.ledger.mark_sent(batch.id, index)
            return

    def _resume(self, pending: PendingBatch, now: datetime, report: RunReport) -> None:
        batch = pending.batch
        if self.ledger.recorded(self.target, batch.files) == {f.uri for f in batch.files}:
            # The files were recorded and only the journal's cleanup was lost: nothing to send.
            self.ledger.commit(batch.id, now)
            return
        start = pending.sent
        if pending.in_flight is not None:
            if pending.in_flight_at is None:
                raise InFlightUnknown(f"batch {batch.id}: request {pending.in_flight + 1} is in flight with no time")
            if self._resolve(batch, pending.in_flight, pending.in_flight_at, may_wait=True):
                self.log(f"batch {batch.id}: request {pending.in_flight + 1} had arrived before the run stopped")
                self.ledger.mark_sent(batch.id, pending.in_flight)
                start = pending.in_flight + 1
            else:
                self.log(f"batch {batch.id}: request {pending.in_flight + 1} had not arrived; sending it")
                start = pending.in_flight
        self.log(f"resuming batch {batch.id}: {len(batch.requests) - start} request(s) left")
        report.resumed_batches += 1
        self._publish(batch, start=start, now=now, report=report)

    def _resolve(self, batch: Batch, index: int, at: datetime, may_wait: bool) -> bool:
        """Whether the attempt sent at `at` arrived, from its receipt: seen means arrived; not seen once the
        sink's settle time has passed since `at` means lost. Until then the run polls and waits (in Lambda too,
        within its own invocation), unless asked to stop. Anything else is reported, never guessed."""
        where = f"batch {batch.id}, request {index + 1}/{len(batch.requests)} (sent {at:%Y-%m-%dT%H:%M:%S.%fZ})"
        receipt = receipt_datum(self._ledger_id, self.target.query, at)
        while True:
            try:
                reading = Reading(self.sink.maximum(batch.namespace, receipt.key))
            except PublishError as exc:
                raise InFlightUnknown(f"{where}: its receipt cannot be read back ({exc}); it stays pending") from exc
            outcome = reading.outcome(at)
            if outcome is Outcome.ARRIVED:
                return True
            if outcome is Outcome.FOREIGN:
                raise InFlightUnknown(
                    f"{where}: the receipts of minute {minute_of(at):%Y-%m-%dT%H:%MZ} hold {reading.maximum:g}, "
                    f"more than this attempt's {receipt.value:g}: another run with this ledger's id "
                    f"({self._ledger_id}) published in that minute, or a clock stepped back. Nothing was sent; "
                    "the batch stays pending."
                )
            left = (at + self.sink.settle - self.clock()).total_seconds()
            if left <= 0:
                return False
            if not may_wait or self.should_stop():
                raise InFlightUnknown(
                    f"{where}: its receipt is not visible yet; run again in {math.ceil(left)} s and the run decides"
                )
            self.sleep(min(left, RECEIPT_POLL_SECONDS))
