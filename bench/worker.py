"""One measurement in a fresh process: `python -m bench.worker {job,naive,scan} LOG_ROOT` prints one JSON object.

Each measurement gets its own process so its peak RSS (read by the parent with wait4) is its own, not the
high-water mark of whatever ran before. Imports happen before the clock starts; the timed part is the work.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import resource
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import duckdb
from botocore.awsrequest import AWSResponse, HTTPHeaders

from job.adapters.aws import client_config
from job.adapters.duckdb_engine import DuckDBEngine
from job.adapters.local_store import LocalLogStore
from job.adapters.sinks import CloudWatchSink
from job.core.files import LogFile
from job.core.metrics import Datum
from job.core.packing import REQUEST_OVERHEAD_BYTES, datum_bytes
from job.core.window import effective_window
from job.ports import Engine, QueryResult, Sink
from job.query.sql_files import SqlFile
from job.query.sql_values import SqlValue
from job.wiring import Settings, build_job

NAMESPACE = "Bench/CloudFront"


def _peak_rss_kb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _cpu_seconds() -> float:
    """User + system time of this process so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _log_files(root: Path) -> list[LogFile]:
    return list(LocalLogStore(root).list(None).files)


# --- the job ------------------------------------------------------------------------------------------------


class _EmptyBody:
    """The raw body of the stub HTTP response: PutMetricData answers nothing."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield b""


class WireCounter:
    """A real boto3 CloudWatch client whose requests stop just before the network: it records, per
    PutMetricData request, the serialized body (the protocol botocore picks) and the bytes on the wire
    (after botocore's gzip request compression), and answers 200."""

    def __init__(self, as_wired: bool = True, count_bodies: bool = True) -> None:
        # as_wired: the client configuration the job builds (job/adapters/aws.py); False: boto3's defaults
        config = client_config("cloudwatch") if as_wired else None
        self.client = boto3.client(
            "cloudwatch", region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench",
            config=config,
        )  # fmt: skip
        self.body_bytes: list[int] = []
        self.count_bodies = count_bodies  # False: the caller counts bodies itself (decompressing costs CPU)
        self.wire_bytes: list[int] = []
        self.content_type = ""
        self.client.meta.events.register("before-call.cloudwatch.PutMetricData", self._before_call)
        # A before-send handler that returns a response replaces the HTTP call (botocore's documented hook).
        send_hook: Any = self._before_send
        self.client.meta.events.register("before-send.cloudwatch.PutMetricData", send_hook)
        # The run's look for other deployments' receipts (ListMetrics) answers "none" here; sent to the network
        # it would time out and retry with backoff, 5 s of sleep the job does not spend against CloudWatch.
        list_hook: Any = self._no_metrics
        self.client.meta.events.register("before-send.cloudwatch.ListMetrics", list_hook)

    def _before_call(self, params: Mapping[str, Any], **_: Any) -> None:
        if not self.count_bodies:
            return
        body = params.get("body") or b""
        body = body.encode() if isinstance(body, str) else body
        if "gzip" in params.get("headers", {}).get("Content-Encoding", ""):
            body = gzip.decompress(body)  # the job's sink gzips in an earlier before-call handler
        self.body_bytes.append(len(body))

    def _before_send(self, request: Any, **_: Any) -> AWSResponse:
        body = request.body or b""
        self.wire_bytes.append(len(body.encode() if isinstance(body, str) else body))
        self.content_type = str(request.headers.get("Content-Type", b""), "ascii", "replace")
        return AWSResponse(request.url, 200, HTTPHeaders(), _EmptyBody())

    def _no_metrics(self, request: Any, **_: Any) -> AWSResponse:
        headers = HTTPHeaders()
        headers["Content-Type"] = "application/x-amz-json-1.0"
        return AWSResponse(request.url, 200, headers, _JsonBody(b'{"Metrics": []}'))


class _JsonBody:
    """The raw body of a stub JSON 1.0 response."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


class CountingSink(CloudWatchSink):
    """The job's own CloudWatchSink (the bodies serialised once per datum, through botocore's compression and
    signing) in front of WireCounter; keeps the requests, and times the puts."""

    def __init__(self) -> None:
        self.wire = WireCounter()
        super().__init__(self.wire.client, key="bench-cloudwatch")
        self.requests: list[tuple[Datum, ...]] = []
        self.seconds = 0.0

    def put(self, namespace: str, datums: Sequence[Datum]) -> None:
        start = time.perf_counter()
        super().put(namespace, datums)
        self.seconds += time.perf_counter() - start
        self.requests.append(tuple(datums))

    def put_wire(self, namespace: str, datums: Sequence[Datum], fragments: Sequence[str]) -> None:
        start = time.perf_counter()
        super().put_wire(namespace, datums, fragments)
        self.seconds += time.perf_counter() - start
        self.requests.append(tuple(datums))


class TimedEngine:
    """Delegates to the DuckDB engine and adds up the time spent in its queries (rows included)."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_concurrency = inner.max_concurrency
        self.seconds = 0.0
        self.rows = 0

    def query(self, sql: SqlFile, params: Mapping[str, SqlValue], files: Sequence[LogFile]) -> QueryResult:
        start = time.perf_counter()
        result = self.inner.query(sql, params, files)
        self.seconds += time.perf_counter() - start
        self.rows += len(result.rows)
        return result


def run_job(root: Path) -> dict[str, Any]:
    sink = CountingSink()
    now = datetime.now(UTC)
    window = effective_window(None, None, now, checks_age=True)
    rss_before = _peak_rss_kb()
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as state:
        start, cpu = time.perf_counter(), _cpu_seconds()
        # wired as `cfmetrics run` wires it, with the engine and the sink wrapped to time them
        job = build_job(Settings(logs=str(root), state=state, namespace=NAMESPACE, window=window, region="us-east-1"))
        engine = TimedEngine(job.engine)
        typed_engine: Engine = engine  # mypy checks the wrappers against the job's protocols
        typed_sink: Sink = sink
        job.engine, job.sink = typed_engine, typed_sink
        report = job.run(now)
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    by_type: Counter[str] = Counter()
    # Distinct (distribution, minute)s: a minute whose lines straddle two queries (a file's last seconds spill into
    # the next hour, and chunk_files cut the distribution between those hours) is published as two datums that
    # CloudWatch merges, so counting datums would count it twice (the cause of "minutes 1924 != lean's 1922").
    minute_datums: Counter[tuple[tuple[tuple[str, str], ...], datetime]] = Counter()
    for request in sink.requests:
        for datum in request:
            if datum.metric == "Requests" and len(datum.dimensions) == 1:
                minute_datums[(datum.dimensions, datum.timestamp)] += 1
            elif datum.metric == "Requests" and datum.value is not None and "ResultType" in dict(datum.dimensions):
                by_type[dict(datum.dimensions)["ResultType"]] += int(datum.value)
    estimates = [REQUEST_OVERHEAD_BYTES + sum(map(datum_bytes, r)) for r in sink.requests]
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "query_seconds": engine.seconds,
        "publish_seconds": sink.seconds,
        "query_rows": engine.rows,
        "rss_before_kb": rss_before,
        "lines": report.lines,
        "malformed": report.malformed_lines,
        "files": report.files_new,
        "batches": report.batches,
        "datums": report.datums,
        "requests": report.requests,
        "body_bytes": sum(sink.wire.body_bytes),
        "wire_bytes": sum(sink.wire.wire_bytes),
        "max_body_bytes": max(sink.wire.body_bytes, default=0),
        "max_estimate_bytes": max(estimates, default=0),
        "max_request_datums": max((len(r) for r in sink.requests), default=0),
        "content_type": sink.wire.content_type,
        "minutes": len(minute_datums),
        "split_minutes": sum(1 for n in minute_datums.values() if n > 1),
        "by_type": dict(sorted(by_type.items())),
    }


# --- baseline 1: the naive per-line Python parse ------------------------------------------------------------


def _bucket(ms: int) -> int:
    return ms if ms < 100 else round(1.02 ** round(math.log(ms) / math.log(1.02)))


def _nearest_rank(ordered: Sequence[int], q: float) -> int:
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def run_naive(root: Path) -> dict[str, Any]:
    """What the replaced tool does, written plainly: gzip.open, a Python loop over lines, split on TAB,
    strptime, dicts keyed by minute; then the same outputs as the job (counts per minute and result type,
    time-taken histogram per minute, exact p50/p90/p99)."""
    files = _log_files(root)
    rss_before = _peak_rss_kb()
    start, cpu = time.perf_counter(), _cpu_seconds()
    requests: dict[tuple[str, datetime], int] = defaultdict(int)
    by_type: dict[tuple[str, datetime, str], int] = defaultdict(int)
    taken: dict[tuple[str, datetime], list[int]] = defaultdict(list)
    malformed = 0
    for log_file in files:
        with gzip.open(log_file.uri, "rt", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if line.startswith("#"):
                    continue
                fields = line.rstrip("\n").split("\t")
                if len(fields) < 19 or fields[13] in ("", "-"):
                    malformed += 1
                    continue
                try:
                    when = datetime.strptime(fields[0] + " " + fields[1], "%Y-%m-%d %H:%M:%S")
                except ValueError:
                    malformed += 1
                    continue
                key = (log_file.distribution_id, when.replace(second=0))
                requests[key] += 1
                by_type[(*key, fields[13])] += 1
                try:
                    seconds = float(fields[18])
                except ValueError:
                    continue
                if 0 <= seconds < 86400:
                    taken[key].append(round(seconds * 1000))
    outputs = 0
    for values in taken.values():
        values.sort()
        percentiles = [_nearest_rank(values, q) for q in (0.5, 0.9, 0.99)]
        histogram = Counter(_bucket(v) for v in values)
        outputs += len(percentiles) + len(histogram)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    totals: Counter[str] = Counter()
    for (_, _, result_type), count in by_type.items():
        totals[result_type] += count
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rss_before_kb": rss_before,
        "lines": sum(requests.values()) + malformed,
        "malformed": malformed,
        "minutes": len(requests),
        "outputs": outputs + len(requests) + len(by_type),
        "by_type": dict(sorted(totals.items())),
    }


def run_lean(root: Path) -> dict[str, Any]:
    """A leaner pure-Python parse, the stricter baseline: no date parsing (the minute is the text of the date and
    of HH:MM), split only as far as time-taken; same outputs as run_naive."""
    files = _log_files(root)
    rss_before = _peak_rss_kb()
    start, cpu = time.perf_counter(), _cpu_seconds()
    requests: dict[tuple[str, str, str], int] = defaultdict(int)
    by_type: dict[tuple[tuple[str, str, str], str], int] = defaultdict(int)
    taken: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    malformed = 0
    for log_file in files:
        with gzip.open(log_file.uri, "rt", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if line.startswith("#"):
                    continue
                fields = line.split("\t", 19)
                if len(fields) < 19 or fields[13] in ("", "-") or len(fields[1]) < 8:
                    malformed += 1
                    continue
                key = (log_file.distribution_id, fields[0], fields[1][:5])
                requests[key] += 1
                by_type[(key, fields[13])] += 1
                try:
                    seconds = float(fields[18])
                except ValueError:
                    continue
                if 0 <= seconds < 86400:
                    taken[key].append(round(seconds * 1000))
    outputs = 0
    for values in taken.values():
        values.sort()
        percentiles = [_nearest_rank(values, q) for q in (0.5, 0.9, 0.99)]
        histogram = Counter(_bucket(v) for v in values)
        outputs += len(percentiles) + len(histogram)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    totals: Counter[str] = Counter()
    for (_, result_type), count in by_type.items():
        totals[result_type] += count
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rss_before_kb": rss_before,
        "lines": sum(requests.values()) + malformed,
        "malformed": malformed,
        "minutes": len(requests),
        "outputs": outputs + len(requests) + len(by_type),
        "by_type": dict(sorted(totals.items())),
    }


# --- baseline 2: DuckDB's bare scan -------------------------------------------------------------------------

_SCAN = re.compile(r"(read_csv\(.*\)) AS l\b", re.DOTALL)


# The engine's (private) builder of the legacy view, under its current and its former name.
_VIEW_BUILDERS = ("_legacy_view_sql", "_view_sql")


def scan_expression(files: Sequence[LogFile]) -> str:
    """The engine's own read_csv(...) call, cut out of the view it builds, so the options are exactly the same."""
    engine = DuckDBEngine()
    builder = next((b for name in _VIEW_BUILDERS if callable(b := getattr(engine, name, None))), None)
    if builder is None:
        raise RuntimeError(f"DuckDBEngine has none of {_VIEW_BUILDERS}: update bench/worker.py to its view builder")
    view = str(builder(files))
    match = _SCAN.search(view)
    if match is None:
        raise RuntimeError(f"cannot find read_csv(...) AS l in the engine's view: {view[:200]}...")
    return match.group(1)


def run_scan(root: Path) -> dict[str, Any]:
    files = _log_files(root)
    expression = scan_expression(files)
    rss_before = _peak_rss_kb()
    start, cpu = time.perf_counter(), _cpu_seconds()
    connection = duckdb.connect(":memory:")
    connection.execute("SET enable_progress_bar = false")
    row = connection.execute(f"SELECT count(*) FROM {expression}").fetchone()
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    threads = connection.execute("SELECT current_setting('threads')").fetchone()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rss_before_kb": rss_before,
        "lines": int(row[0]) if row else -1,
        "threads": int(threads[0]) if threads else -1,
    }


# A delimiter CloudFront never writes (a control byte), so each line is read as one field.
_NO_DELIMITER = "\\x01"


def lines_expression(files: Sequence[LogFile]) -> str:
    """The issue's bare scan: the same files read with DuckDB's CSV reader as one VARCHAR per line (no field
    splitting, no types), with the engine's file options (gzip, no quotes, no header skipping beyond '#')."""
    paths = ", ".join("'" + f.readable_path.replace("'", "''") + "'" for f in files)
    return (
        f"read_csv([{paths}], columns={{'line': 'VARCHAR'}}, auto_detect=false, header=false, "
        f"delim=E'{_NO_DELIMITER}', quote='', escape='', null_padding=true, strict_mode=false, "
        f"compression='gzip', ignore_errors=true)"
    )


def run_scan_lines(root: Path) -> dict[str, Any]:
    """Baseline 3, the bare scan the issue names: every line read as one string. count(line), not count(*), so
    the strings are materialised (count(*) could skip the column)."""
    files = _log_files(root)
    expression = lines_expression(files)
    rss_before = _peak_rss_kb()
    start, cpu = time.perf_counter(), _cpu_seconds()
    connection = duckdb.connect(":memory:")
    connection.execute("SET enable_progress_bar = false")
    row = connection.execute(f"SELECT count(line) FROM {expression} WHERE NOT starts_with(line, '#')").fetchone()
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    threads = connection.execute("SELECT current_setting('threads')").fetchone()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rss_before_kb": rss_before,
        "lines": int(row[0]) if row else -1,
        "threads": int(threads[0]) if threads else -1,
    }


RUNNERS = {"job": run_job, "naive": run_naive, "lean": run_lean, "scan": run_scan, "lines": run_scan_lines}


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2 or argv[0] not in RUNNERS:
        print(f"usage: python -m bench.worker {{{','.join(RUNNERS)}}} LOG_ROOT", file=sys.stderr)
        return 2
    result = RUNNERS[argv[0]](Path(argv[1]))
    result["peak_rss_kb"] = _peak_rss_kb()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
