"""The distributed engine: Athena through awswrangler, with a bounded wait and terminal states as exceptions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from job.core.errors import EngineError, QueryTimedOut, UnreadableFileError
from job.core.files import LogFile
from job.core.limits import ATHENA_MIN_BYTES_PER_QUERY
from job.ports import QueryResult, Row
from job.query.sql_files import SqlFile
from job.query.sql_values import SqlValue

DEFAULT_TIMEOUT_SECONDS = 240.0
POLL_SECONDS = 1.0


class AthenaQueryFailed(EngineError):
    """Athena ended a query FAILED or CANCELLED, or it did not finish in time."""

    def __init__(self, query_id: str, state: str, reason: str) -> None:
        super().__init__(f"Athena query {query_id} {state}: {reason}")
        self.query_id, self.state, self.reason = query_id, state, reason


class AthenaUnreadableData(AthenaQueryFailed, UnreadableFileError):
    """Athena failed on a file's data (not gzip, truncated, not text): the file's fault."""


class AthenaQueryTimedOut(AthenaQueryFailed, QueryTimedOut):
    """Athena did not finish the query in time (stopped): the runner halves the batch to find the file."""


# Athena's reasons when the data of a file, not the query or the service, is at fault.
DATA_ERRORS = ("HIVE_BAD_DATA", "HIVE_CURSOR_ERROR", "Unexpected end of input stream", "Not in GZIP format")


@dataclass(frozen=True)
class QueryStats:
    query_id: str
    data_scanned_bytes: int
    engine_ms: int


@dataclass
class AthenaEngine:
    """Runs sql/ on Athena with server-side execution parameters (`?` + typed literals), never pasted values."""

    database: str
    workgroup: str
    s3_output: str
    boto3_session: Any
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    stats: list[QueryStats] = field(default_factory=list)
    name: str = "athena"
    # boto3 sessions are not thread-safe (awswrangler makes its clients from this one): every call through the
    # session is made under this lock; the waits between polls are not, so queries still run at once in Athena.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    # queries of different chunks the runner may run at once (threads); 1 until a setting raises it
    max_concurrency: int = 1

    def query(self, sql: SqlFile, params: Mapping[str, SqlValue], files: Sequence[LogFile]) -> QueryResult:
        import awswrangler as wr

        if not files:
            return QueryResult([])
        rendered = sql.render_placeholders(params)
        literals = rendered.literal_parameters()
        try:
            with self._lock:
                query_id = wr.athena.start_query_execution(
                    sql=rendered.text,
                    database=self.database,
                    s3_output=self.s3_output,
                    workgroup=self.workgroup,
                    params=literals,
                    paramstyle="qmark",
                    boto3_session=self.boto3_session,
                    wait=False,
                )
        except Exception as exc:  # botocore ClientError, awswrangler's own exceptions
            raise EngineError(f"{sql.path}: Athena refused the query ({exc})") from exc
        execution = self._wait(str(query_id))
        statistics = execution.get("Statistics", {})
        stats = QueryStats(
            str(query_id),
            int(statistics.get("DataScannedInBytes", 0)),
            int(statistics.get("EngineExecutionTimeInMillis", 0)),
        )
        self.stats.append(stats)  # list.append is atomic; this query's figures come from `stats`, not stats[-1]
        with self._lock:
            frame = wr.athena.get_query_results(query_execution_id=str(query_id), boto3_session=self.boto3_session)
        records: list[Row] = frame.to_dict(orient="records")
        scanned = stats.data_scanned_bytes
        return QueryResult(records, {}, scanned, ATHENA_MIN_BYTES_PER_QUERY, str(query_id))

    def _wait(self, query_id: str) -> dict[str, Any]:
        import awswrangler as wr

        deadline = self.monotonic() + self.timeout_seconds
        while True:
            with self._lock:
                execution: dict[str, Any] = wr.athena.get_query_execution(query_id, boto3_session=self.boto3_session)
            status = execution.get("Status", {})
            state = status.get("State", "UNKNOWN")
            if state == "SUCCEEDED":
                return execution
            if state in ("FAILED", "CANCELLED"):
                reason = str(status.get("StateChangeReason", "no reason given"))
                if state == "FAILED" and any(marker in reason for marker in DATA_ERRORS):
                    raise AthenaUnreadableData(query_id, state, reason)
                raise AthenaQueryFailed(query_id, state, reason)
            if self.monotonic() > deadline:
                with self._lock:
                    wr.athena.stop_query_execution(query_id, boto3_session=self.boto3_session)
                raise AthenaQueryTimedOut(query_id, "TIMED OUT", f"still {state} after {self.timeout_seconds:.0f} s")
            self.sleep(POLL_SECONDS)
