"""One run of the job: list files, skip those the ledger has, query the rest, publish deltas, record them."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby

from job.core.batch import Batch, PendingBatch, Target
from job.core.cost import athena_query_bill
from job.core.errors import InFlightUnknown, SqlChangedError, UnreadableFileError
from job.core.files import LogFile
from job.core.limits import MAX_ATHENA_QUERY_BYTES, MAX_DATAPOINT_AGE
from job.core.metrics import (
    DEFAULT_EDGE_LOCATION_CAP,
    DEFAULT_METRIC_GROUPS,
    DOCUMENTED_RESULT_TYPES,
    MAX_SCAN_AMPLIFICATION,
    UNREADABLE_FILES,
    Datum,
    DatumKey,
    MetricGroup,
    Unit,
    datums_from_rows,
    malformed_lines_datums,
    scan_amplification,
)
from job.core.packing import CLOUDWATCH_LIMITS, RequestLimits, check_datums, pack
from job.core.window import HourWindow
from job.ports import Engine, Ledger, LogStore, QueryResult, Sink
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
    metric_groups: frozenset[MetricGroup] = DEFAULT_METRIC_GROUPS
    edge_location_cap: int = DEFAULT_EDGE_LOCATION_CAP


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

    def athena_estimate(self) -> tuple[int, float]:
        """(bytes billed, USD) if every chunk ran as one Athena query over its gzip files."""
        return athena_query_bill(sum(f.size for f in chunk) for chunk in self.chunks)

    def summary(self) -> str:
        return (
            f"{self.files_already} file(s) already published, {self.files_new} new; {self.lines:,} lines "
            f"({self.malformed_lines:,} malformed) -> {self.datums:,} datums in {self.requests:,} PutMetricData "
            f"request(s)" + (f"; resumed {self.resumed_batches} interrupted batch(es)" if self.resumed_batches else "")
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
    ) -> None:
        self.store, self.engine, self.ledger, self.sink, self.query = store, engine, ledger, sink, query
        self.options = options
        self.log = log
        self.should_stop = should_stop
        self.on_plan, self.on_progress, self.clock = on_plan, on_progress, clock
        self.target = Target(query.name, sink.key, options.namespace)

    def _batch_id(self, files: Sequence[LogFile]) -> str:
        return new_batch_id(files, self.clock())

    def run(self, now: datetime) -> RunReport:
        report = RunReport(target=self.target)
        if self.options.dry_run:
            return self._run(now, report)
        with self.ledger.lock():
            for pending in self.ledger.pending(self.target):
                self._resume(pending, now, report)
            self._check_fingerprint(now)
            return self._run(now, report)

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

    def _new_files(self, report: RunReport) -> list[LogFile]:
        listing = self.store.list(self.options.window, self.options.distributions)
        report.unrecognised_paths = listing.unrecognised
        for path in listing.unrecognised[:10]:
            self.log(f"skipped {path}: fits neither <DistributionId>/yyyy/MM/dd/HH/ nor the Hive-style layout")
        recorded = self.ledger.recorded(self.target, listing.files)
        report.files_listed = len(listing.files)
        new = [f for f in listing.files if f.uri not in recorded]
        report.files_already = report.files_listed - len(new)
        report.files_new = len(new)
        report.bytes_new = sum(f.size for f in new)
        window = self.options.window or "all partitions"
        self.log(f"{self.store} ({window}): {report.files_already} file(s) already published, {len(new)} new")
        return new

    def _run(self, now: datetime, report: RunReport) -> RunReport:
        new = self._new_files(report)
        report.chunks = self.plan(new)
        self.on_plan(report)
        for chunk in report.chunks:
            if self.should_stop():
                report.stopped_early = True
                self.log("stopping early; the next run continues with the files left")
                break
            self._process(chunk[0].distribution_id, chunk, now, report)
            if report.stopped_early:  # stopped between two requests of this chunk's batch: it stays pending
                break
            report.files_done.extend(chunk)
            self.on_progress(report, chunk)
        done = set(report.files_done)
        report.files_left = [f for f in new if f not in done]
        return report

    def plan(self, new: Sequence[LogFile]) -> list[list[LogFile]]:
        """One query per chunk: one distribution's files, within Athena's query-size limit."""
        budget = MAX_ATHENA_QUERY_BYTES - len(self.query.text.encode()) - 4096
        chunks: list[list[LogFile]] = []
        for _, group in groupby(new, key=lambda f: f.distribution_id):
            chunks += chunk_files(list(group), self.options.max_files_per_query, budget)
        return chunks

    def _process(self, distribution_id: str, files: list[LogFile], now: datetime, report: RunReport) -> None:
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
        params = query_parameters(distribution_id, [f.hour for f in files], [f.uri for f in files])
        try:
            result = self.engine.query(self.query, params, files)
        except UnreadableFileError as exc:
            if len(files) > 1:
                half = len(files) // 2
                self._process(distribution_id, files[:half], now, report)
                self._process(distribution_id, files[half:], now, report)
                return
            self._publish_unreadable(files[0], str(exc), now, report)
            return
        self._check_scan(result, files, report)
        metrics = datums_from_rows(
            result.rows,
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
        datums = metrics.datums + malformed_lines_datums(distribution_id, files, file_lines)
        check_datums(datums, now if self.sink.checks_timestamp_age else None)
        for raw in sorted(metrics.other_result_types - report.other_result_types):
            self.log(f"{distribution_id}: unknown x-edge-result-type {raw!r} published as ResultType=Other")
        report.other_result_types |= metrics.other_result_types
        requests = pack(datums, self.options.request_limits)
        batch = Batch(
            id=self._batch_id(files),
            target=self.target,
            files=tuple(files),
            requests=tuple(requests),
            lines=metrics.requests + metrics.malformed_lines,
            malformed_lines=metrics.malformed_lines,
            file_lines=file_lines,
        )
        self.log(
            f"{distribution_id}: {len(files)} file(s), {batch.lines:,} lines ({batch.malformed_lines:,} malformed) "
            f"-> {len(datums):,} datums in {len(requests)} request(s)"
        )
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

    def _publish_unreadable(self, log_file: LogFile, reason: str, now: datetime, report: RunReport) -> None:
        self.log(f"UNREADABLE {log_file.uri}: {reason}")
        report.unreadable_files.append(log_file.uri)
        datum = Datum(
            UNREADABLE_FILES, (("DistributionId", log_file.distribution_id),), log_file.hour, Unit.COUNT, value=1.0
        )
        datums = (datum,) if not self.sink.checks_timestamp_age or _in_range(datum, now) else ()
        batch = Batch(
            id=self._batch_id([log_file]),
            target=self.target,
            files=(log_file,),
            requests=tuple(pack(datums, self.options.request_limits)),
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

    def _publish(self, batch: Batch, start: int, now: datetime, report: RunReport) -> None:
        # The journal marks a request in flight before it is sent and sent once it is accepted, so a crash
        # leaves at most one request whose fate is unknown.
        for index in range(start, len(batch.requests)):
            if index > start and self.should_stop():
                # Asked to stop (Ctrl-C, SIGTERM, the Lambda's deadline): the journal holds what was sent, and
                # the next run resumes the batch with request index + 1.
                report.stopped_early = True
                self.log(
                    f"batch {batch.id}: stopped after {index} of {len(batch.requests)} request(s), the rest next run"
                )
                return
            self.ledger.mark_in_flight(batch.id, index, self.clock())
            self.sink.put(batch.namespace, batch.requests[index])
            self.ledger.mark_sent(batch.id, index)
            report.requests += 1
        self.ledger.commit(batch.id, now)

    def _resume(self, pending: PendingBatch, now: datetime, report: RunReport) -> None:
        batch = pending.batch
        if self.ledger.recorded(self.target, batch.files) == {f.uri for f in batch.files}:
            # The files were recorded and only the journal's cleanup was lost: nothing to send.
            self.ledger.commit(batch.id, now)
            return
        start = pending.sent
        if pending.in_flight is not None:
            if self._arrived(pending):
                self.log(f"batch {batch.id}: request {pending.in_flight + 1} had arrived before the run stopped")
                self.ledger.mark_sent(batch.id, pending.in_flight)
                start = pending.in_flight + 1
            else:
                self.log(f"batch {batch.id}: request {pending.in_flight + 1} had not arrived; sending it")
                start = pending.in_flight
        self.log(f"resuming batch {batch.id}: {len(batch.requests) - start} request(s) left")
        report.resumed_batches += 1
        self._publish(batch, start=start, now=now, report=report)

    def _arrived(self, pending: PendingBatch) -> bool:
        """Whether the request in flight when a run stopped reached the destination, read back from it.

        The ledger knows what it published for each key (metric, dimensions, minute) before that request; the
        destination holds that much if the request was lost, that much plus the request if it arrived. Anything
        else (another writer, data not visible yet) is reported, never guessed.
        """
        batch, index = pending.batch, pending.in_flight
        assert index is not None
        request = batch.requests[index]
        where = f"batch {batch.id}, request {index + 1}/{len(batch.requests)}"
        if pending.in_flight_at is not None and self.clock() - pending.in_flight_at < self.sink.settle:
            wait = pending.in_flight_at + self.sink.settle - self.clock()
            raise InFlightUnknown(
                f"{where} was in flight {(self.clock() - pending.in_flight_at).seconds} s ago; the destination may "
                f"not show it yet. Run again in {wait.seconds + 1} s: the run then reads it back and decides."
            )
        keys = {d.key for d in request}
        held = self.sink.sample_counts(batch.namespace, keys)
        if held is None:
            raise InFlightUnknown(f"{where}: the destination cannot be read back to tell if it arrived")
        before = self.ledger.published_samples(batch.namespace, self.sink.key, keys)
        added: dict[DatumKey, float] = dict.fromkeys(keys, 0.0)
        for datum in request:
            added[datum.key] += datum.samples
        if all(held[k] == before[k] + added[k] for k in keys):
            return True
        if all(held[k] == before[k] for k in keys):
            return False
        # keys disagreeing with both outcomes, or (a request arrives whole or not at all) a mix of the two
        differing = next((k for k in keys if held[k] not in (before[k], before[k] + added[k])), next(iter(keys)))
        raise InFlightUnknown(
            f"{where}: cannot tell whether it arrived: for {differing[0]} {dict(differing[1])} at "
            f"{differing[2]:%Y-%m-%dT%H:%MZ} the destination holds {held[differing]:g} samples, the ledger expected "
            f"{before[differing]:g} (lost) or {before[differing] + added[differing]:g} (arrived). Another writer may "
            "publish to this namespace. Nothing was sent; the batch stays pending."
        )
