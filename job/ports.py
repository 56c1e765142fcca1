"""The four ports the runner works through: Engine, LogStore, Ledger and Sink (adapters/ implements them)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from job.core.batch import Batch, FileRecord, PendingBatch, Target
from job.core.files import Listing, LogFile
from job.core.metrics import Datum, DatumKey
from job.core.window import HourWindow
from job.query.sql_files import SqlFile
from job.query.sql_values import SqlValue

Row = dict[str, Any]


@dataclass(frozen=True)
class QueryResult:
    """A query's rows, and per file (its uri) the lines the engine set aside without reading them into a row
    (DuckDB: invalid UTF-8), which the metrics count as read and malformed."""

    rows: list[Row]
    rejected_lines: Mapping[str, int] = field(default_factory=dict)
    # What the engine read from storage, where it reports it (Athena, Trino): the pruning self-check's input.
    scanned_bytes: int | None = None
    # The least a query is billed as scanned (Athena: 10 MB), so a small query is not taken for amplification.
    scan_floor_bytes: int = 0
    query_id: str | None = None


class Engine(Protocol):
    """Runs Athena SQL from sql/; `files` are the log files the query's `"$path"` parameter names."""

    name: str
    # How many queries it usefully runs at once: the runner runs at most min(this, query_concurrency) ahead.
    max_concurrency: int

    def query(self, sql: SqlFile, params: Mapping[str, SqlValue], files: Sequence[LogFile]) -> QueryResult: ...


class LogStore(Protocol):
    """Lists the log files of a root (a local folder, an S3 prefix) in a window of partition hours."""

    def list(self, window: HourWindow | None, distributions: Iterable[str] = ()) -> Listing: ...


class Ledger(Protocol):
    """Records which files each target (query x destination) has published, and journals batches in progress."""

    def lock(self) -> AbstractContextManager[None]: ...

    def recorded(self, target: Target, files: Sequence[LogFile] | None = None) -> set[str]:
        """The uris the target has published: all of them, or those among `files`."""
        ...

    def pending(self, target: Target) -> list[PendingBatch]: ...

    def begin(self, batch: Batch) -> None: ...

    def mark_in_flight(self, batch_id: str, index: int, at: datetime) -> None: ...

    def mark_sent(self, batch_id: str, index: int) -> None: ...

    def clear_in_flight(self, batch_id: str, index: int) -> None:
        """The request marked in flight was certainly not taken (refused, or never sent): nothing is in doubt."""
        ...

    def identity(self) -> str:
        """This ledger's id, made once and kept: the Ledger dimension of its publish receipts."""
        ...

    def metric_owners(self, sink_key: str, namespace: str) -> dict[str, str]:
        """metric name -> the query (its name) that publishes it to this destination and namespace."""
        ...

    def claim_metrics(self, target: Target, metrics: Collection[str], at: datetime) -> None:
        """Record the target's query as the owner of these metric names in its destination and namespace."""
        ...

    def commit(self, batch_id: str, at: datetime) -> None:
        """Record the batch's files and close its journal; idempotent."""
        ...

    def published_samples(self, namespace: str, sink_key: str, keys: Collection[DatumKey]) -> dict[DatumKey, float]:
        """SampleCount this ledger knows it published per key (committed batches, and the confirmed requests of
        pending ones), over every target that writes to this sink and namespace."""
        ...

    def fingerprint(self, target: Target) -> str | None:
        """The fingerprint of the query text that published under this target, if it published."""
        ...

    def set_fingerprint(self, target: Target, fingerprint: str, at: datetime) -> None: ...

    def file_records(self, target: Target, files: Sequence[LogFile] | None = None) -> list[FileRecord]:
        """Every recorded file of the target (`cfmetrics status`), or those among `files` (what a run compares
        with the listing: size and ETag)."""
        ...

    def last_full_listing(self, target: Target) -> datetime | None:
        """When a scheduled run of the target last listed its whole look-back and published all it found."""
        ...

    def set_last_full_listing(self, target: Target, at: datetime) -> None: ...


class Sink(Protocol):
    """Takes one PutMetricData request at a time; returns only once the request is durably accepted."""

    key: str  # identifies the destination in the ledger: each destination gets each file exactly once
    checks_timestamp_age: bool
    # How long after a PutMetricData its datapoints may still be missing from a read (eventual consistency).
    settle: timedelta

    def put(self, namespace: str, datums: Sequence[Datum]) -> None: ...

    def maximum(self, namespace: str, key: DatumKey) -> float | None:
        """The Maximum statistic of one key (metric, dimensions, minute) as the destination shows it now; None
        when it shows no datapoint there. Raises PublishError when it cannot be read."""
        ...

    def receipt_ledgers(self, namespace: str) -> set[str]:
        """The ids of every ledger whose publish receipts the namespace holds (job/core/receipts.py)."""
        ...


@runtime_checkable
class WireSink(Protocol):
    """A sink that can send a request as the datum fragments serialised once for it (job/core/wire.py)."""

    def put_wire(self, namespace: str, datums: Sequence[Datum], fragments: Sequence[str]) -> None:
        """Send `datums`, whose body fragments are `fragments` (the same datums, in order)."""
        ...
