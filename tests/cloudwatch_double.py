"""CloudWatch test double: HTTP proxy before moto with limits, faults, delayed visibility, exact GetMetricData."""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import math
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Literal, get_args
from xml.sax.saxutils import escape as xml_escape

FaultKind = Literal["request_lost", "answer_lost", "connection_dropped", "throttle"]
FAULT_KINDS: Final[tuple[FaultKind, ...]] = get_args(FaultKind)
Clock = Callable[[], datetime]
Dims = frozenset[tuple[str, str]]
Protocol = Literal["json", "query", "cbor", "other"]

JSON_TARGET_PREFIX: Final = "GraniteServiceVersion20100801."
XML_NS: Final = "http://monitoring.amazonaws.com/doc/2010-08-01/"
MAX_REQUEST_BYTES: Final = 1_048_576
MAX_GET_REQUEST_BYTES: Final = 614_400  # seen in real error answers (RequestEntityTooLarge, HTTP 413)
MAX_DATUMS: Final = 1000
MAX_VALUES: Final = 150
MAX_DIMENSIONS: Final = 30
MAX_QUERIES: Final = 500
MAX_PAST: Final = timedelta(days=14)
MAX_FUTURE: Final = timedelta(hours=2)
VALUE_LIMIT: Final = 2.0**360
VALUE_SMALLEST: Final = 2.0**-260
DEFAULT_MAX_DATAPOINTS: Final = 100_800
_UNIT_WORDS: Final = (
    "Seconds Microseconds Milliseconds Bytes Kilobytes Megabytes Gigabytes Terabytes Bits Kilobits Megabits "
    "Gigabits Terabits Percent Count Bytes/Second Kilobytes/Second Megabytes/Second Gigabytes/Second "
    "Terabytes/Second Bits/Second Kilobits/Second Megabits/Second Gigabits/Second Terabits/Second "
    "Count/Second None"
)
STANDARD_UNITS: Final = frozenset(_UNIT_WORDS.split(" "))
_PERCENTILE = re.compile(r"^p(100|\d{1,2}(\.\d{1,10})?)$")
_QUERY_ID = re.compile(r"^[a-z][a-zA-Z0-9_]*$")
_HOP_BY_HOP: Final = frozenset({"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te"})


def real_clock() -> datetime:
    """The default clock: real time, aware UTC."""
    return datetime.now(UTC)


class ManualClock:
    """A settable clock for tests: pass it as `clock=` and move it with advance() or set()."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = (start or real_clock()).astimezone(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("ManualClock.set needs an aware datetime")
        with self._lock:
            self._now = when.astimezone(UTC)


class CloudWatchError(Exception):
    """An error answer in CloudWatch's vocabulary (code as the query protocol names it)."""

    def __init__(self, code: str, message: str, status: int = 400, *, sender: bool = True) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.sender = sender


def _invalid(message: str) -> CloudWatchError:
    return CloudWatchError("InvalidParameterValue", message)


def _missing(name: str) -> CloudWatchError:
    return CloudWatchError("MissingParameter", f"The parameter {name} is required.")


def _internal() -> CloudWatchError:
    message = "Internal service error (injected by the double)."
    return CloudWatchError("InternalServiceError", message, 500, sender=False)


def _throttled() -> CloudWatchError:
    return CloudWatchError("Throttling", "Rate exceeded (injected by the double).")


@dataclass(frozen=True)
class StatisticSet:
    sample_count: float
    sum: float
    minimum: float
    maximum: float


@dataclass(frozen=True)
class Datapoint:
    """One stored datum: what CloudWatch keeps of a MetricDatum, plus when it arrived."""

    namespace: str
    metric: str
    dimensions: Dims
    timestamp: datetime  # the datum's timestamp, floored to its storage resolution (the minute for 60)
    sent_timestamp: datetime  # as sent (or arrival time when the datum had none)
    values: tuple[float, ...]  # raw values (Value or Values); empty for a StatisticSet
    counts: tuple[float, ...]  # same length as values
    statistic_set: StatisticSet | None
    unit: str
    storage_resolution: int
    arrived: datetime  # the double's clock when the request arrived
    request_seq: int  # which applied PutMetricData carried it (1, 2, ...)

    @property
    def sample_count(self) -> float:
        if self.statistic_set is not None:
            return self.statistic_set.sample_count
        return math.fsum(self.counts)

    @property
    def sum(self) -> float:
        if self.statistic_set is not None:
            return self.statistic_set.sum
        return math.fsum(v * c for v, c in zip(self.values, self.counts, strict=True))

    @property
    def minimum(self) -> float | None:
        if self.statistic_set is not None:
            return self.statistic_set.minimum
        present = [v for v, c in zip(self.values, self.counts, strict=True) if c > 0]
        return min(present) if present else None

    @property
    def maximum(self) -> float | None:
        if self.statistic_set is not None:
            return self.statistic_set.maximum
        present = [v for v, c in zip(self.values, self.counts, strict=True) if c > 0]
        return max(present) if present else None


@dataclass
class _Entry:
    point: Datapoint
    visible_at: datetime | None  # None: held until release_held()


@dataclass(frozen=True)
class Stats:
    """A snapshot of what the double saw. Counts are per request unless the name says otherwise."""

    requests: Mapping[str, int]  # every request that reached the double, by operation
    forwarded: Mapping[str, int]  # requests passed on to moto, by operation
    applied_requests: int  # PutMetricData requests stored (and forwarded)
    applied_datums: int  # datums in those requests
    rejected: Mapping[str, int]  # PutMetricData/GetMetricData refused by validation, by error code
    faults: Mapping[str, int]  # injected faults, by kind

    @property
    def total_faults(self) -> int:
        return sum(self.faults.values())


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    reason: str | None = None


_DROP: Final = object()  # close the connection without an answer


@dataclass
class _Request:
    method: str
    path: str
    headers: list[tuple[str, str]]
    raw_body: bytes  # as received (possibly gzipped)

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None


# ---------------------------------------------------------------- decoding


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo Content-Encoding gzip; stop reading one byte past `limit` (the caller checks the size)."""
    if not encoding or encoding.strip().lower() == "identity":
        return body
    if encoding.strip().lower() not in {"gzip", "x-gzip"}:
        raise CloudWatchError("InvalidParameterValue", f"Unsupported Content-Encoding {encoding}.", 415)
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise CloudWatchError("MalformedInput", f"Body is not valid gzip: {exc}.") from exc
    return out


def _set_path(root: dict[str, Any], parts: list[str], value: str) -> None:
    node = root
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if set(node) == {"member"} and isinstance(node["member"], dict):
        members = node["member"]
        return [_listify(members[k]) for k in sorted(members, key=lambda k: int(k) if k.isdigit() else 0)]
    return {k: _listify(v) for k, v in node.items()}


def decode_query_body(body: bytes) -> dict[str, Any]:
    """Turn an AWS query-protocol form (`MetricData.member.1.Values.member.2=3`) into nested dicts/lists."""
    root: dict[str, Any] = {}
    for key, value in urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True):
        if key in {"Action", "Version"}:
            root[key] = value
            continue
        parts = key.split(".")
        if value == "" and len(parts) == 1:
            root[key] = []  # `MetricData=` is how the query protocol spells an empty list
            continue
        _set_path(root, parts, value)
    result = _listify(root)
    assert isinstance(result, dict)
    return result


def _number(raw: Any, name: str) -> float:
    if isinstance(raw, bool):
        raise _invalid(f"The value {raw} for parameter {name} is invalid.")
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            pass
    raise _invalid(f"The value {raw!r} for parameter {name} is not a number.")


def _timestamp(raw: Any, name: str) -> datetime:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        if not math.isfinite(raw):
            raise _invalid(f"The value {raw} for parameter {name} is not a valid timestamp.")
        return datetime.fromtimestamp(raw, UTC)
    if isinstance(raw, str):
        try:
            return datetime.fromtimestamp(float(raw), UTC)
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError as exc:
            raise _invalid(f"The value {raw!r} for parameter {name} is not a valid timestamp.") from exc
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise _invalid(f"The value {raw!r} for parameter {name} is not a valid timestamp.")


def _string(raw: Any, name: str, max_len: int, *, required: bool = True) -> str:
    if raw is None:
        if required:
            raise _missing(name)
        return ""
    if not isinstance(raw, str):
        raise _invalid(f"The value {raw!r} for parameter {name} is not a string.")
    if not 1 <= len(raw) <= max_len:
        raise _invalid(f"The parameter {name} must be between 1 and {max_len} characters long.")
    return raw


def _list(raw: Any, name: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _invalid(f"The parameter {name} must be a list.")
    return raw


def _metric_value(raw: Any, name: str) -> float:
    value = _number(raw, name)
    if not math.isfinite(value) or abs(value) > VALUE_LIMIT or (value != 0 and abs(value) < VALUE_SMALLEST):
        raise _invalid(f"The value {raw} for parameter {name} is invalid.")
    return value


def _dimensions(raw: Any, name: str) -> Dims:
    items = _list(raw, name)
    if len(items) > MAX_DIMENSIONS:
        raise _invalid(f"The collection {name} must not have a size greater than {MAX_DIMENSIONS}.")
    seen: dict[str, str] = {}
    for j, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise _invalid(f"The parameter {name}.member.{j} must be a structure.")
        dim_name = _string(item.get("Name"), f"{name}.member.{j}.Name", 255)
        dim_value = _string(item.get("Value"), f"{name}.member.{j}.Value", 1024)
        if dim_name in seen:
            raise _invalid(f"The collection {name} must not contain duplicate dimension {dim_name}.")
        seen[dim_name] = dim_value
    return frozenset(seen.items())


def parse_put_metric_data(req: Mapping[str, Any], now: datetime, seq: int) -> list[Datapoint]:
    """Validate a PutMetricData request like CloudWatch does and return its datapoints (all or an error)."""
    namespace = _string(req.get("Namespace"), "Namespace", 255)
    if namespace.startswith("AWS/"):
        raise _invalid(f"The value {namespace} for parameter Namespace is invalid: AWS/ is reserved.")
    if req.get("MetricData") is None:
        raise _missing("MetricData")
    data = _list(req.get("MetricData"), "MetricData")
    if not data:
        raise _missing("MetricData")
    if len(data) > MAX_DATUMS:
        raise _invalid(f"The collection MetricData must not have a size greater than {MAX_DATUMS}.")
    points: list[Datapoint] = []
    for i, datum in enumerate(data, 1):
        p = f"MetricData.member.{i}"
        if not isinstance(datum, dict):
            raise _invalid(f"The parameter {p} must be a structure.")
        metric = _string(datum.get("MetricName"), f"{p}.MetricName", 255)
        dims = _dimensions(datum.get("Dimensions"), f"{p}.Dimensions")
        given = [k for k in ("Value", "StatisticValues", "Values") if datum.get(k) is not None]
        if len(given) > 1:
            raise CloudWatchError(
                "InvalidParameterCombination",
                f"The parameters {p}.{given[0]} and {p}.{given[1]} are mutually exclusive and you have specified both.",
            )
        if not given:
            raise CloudWatchError(
                "InvalidParameterCombination",
                f"At least one of the parameters {p}.Value, {p}.StatisticValues or {p}.Values must be specified.",
            )
        values: tuple[float, ...] = ()
        counts: tuple[float, ...] = ()
        stat_set: StatisticSet | None = None
        if given[0] == "Value":
            values, counts = (_metric_value(datum["Value"], f"{p}.Value"),), (1.0,)
        elif given[0] == "Values":
            raw_values = _list(datum["Values"], f"{p}.Values")
            if not raw_values:
                raise _invalid(f"The collection {p}.Values must not be empty.")
            if len(raw_values) > MAX_VALUES:
                raise _invalid(f"The collection {p}.Values must not have a size greater than {MAX_VALUES}.")
            values = tuple(_metric_value(v, f"{p}.Values.member.{j}") for j, v in enumerate(raw_values, 1))
            if datum.get("Counts") is None:
                counts = tuple(1.0 for _ in values)
            else:
                raw_counts = _list(datum["Counts"], f"{p}.Counts")
                if len(raw_counts) != len(values):
                    raise _invalid(f"The parameters {p}.Values and {p}.Counts must be of the same size.")
                counts = tuple(_metric_value(c, f"{p}.Counts.member.{j}") for j, c in enumerate(raw_counts, 1))
                if any(c < 0 for c in counts):
                    raise _invalid(f"The collection {p}.Counts must not contain negative numbers.")
        else:
            raw_set = datum["StatisticValues"]
            if not isinstance(raw_set, dict):
                raise _invalid(f"The parameter {p}.StatisticValues must be a structure.")
            parts: dict[str, float] = {}
            for key in ("SampleCount", "Sum", "Minimum", "Maximum"):
                if raw_set.get(key) is None:
                    raise _missing(f"{p}.StatisticValues.{key}")
                parts[key] = _metric_value(raw_set[key], f"{p}.StatisticValues.{key}")
            if parts["SampleCount"] <= 0 or parts["Minimum"] > parts["Maximum"]:
                raise _invalid(f"The parameter {p}.StatisticValues is inconsistent.")
            stat_set = StatisticSet(parts["SampleCount"], parts["Sum"], parts["Minimum"], parts["Maximum"])
        if datum.get("Counts") is not None and given[0] != "Values":
            raise CloudWatchError("InvalidParameterCombination", f"The parameter {p}.Counts requires {p}.Values.")
        unit = "None" if datum.get("Unit") is None else str(datum["Unit"])
        if unit not in STANDARD_UNITS:
            raise _invalid(f"The value {unit} for parameter {p}.Unit is invalid.")
        resolution = 60 if datum.get("StorageResolution") is None else _number(datum["StorageResolution"], p)
        if resolution not in (1.0, 60.0):
            raise _invalid(f"The value {resolution} for parameter {p}.StorageResolution is invalid (1 or 60).")
        sent = now if datum.get("Timestamp") is None else _timestamp(datum["Timestamp"], f"{p}.Timestamp")
        if sent < now - MAX_PAST:
            raise _invalid(f"The parameter {p}.Timestamp must specify a time no more than two weeks in the past.")
        if sent > now + MAX_FUTURE:
            raise _invalid(f"The parameter {p}.Timestamp must specify a time no more than two hours in the future.")
        floored = sent.replace(microsecond=0) if resolution == 1 else sent.replace(second=0, microsecond=0)
        points.append(
            Datapoint(
                namespace=namespace,
                metric=metric,
                dimensions=dims,
                timestamp=floored,
                sent_timestamp=sent,
                values=values,
                counts=counts,
                statistic_set=stat_set,
                unit=unit,
                storage_resolution=int(resolution),
                arrived=now,
                request_seq=seq,
            )
        )
    return points


# ---------------------------------------------------------------- GetMetricData


@dataclass(frozen=True)
class MetricQuery:
    id: str
    label: str
    namespace: str
    metric: str
    dimensions: Dims
    period: int
    stat: str
    unit: str | None
    return_data: bool


def _parse_stat(stat: str) -> str:
    if stat in {"SampleCount", "Sum", "Minimum", "Maximum", "Average"} or _PERCENTILE.match(stat):
        return stat
    raise _invalid(f"The value {stat} for parameter Stat is not supported by the double.")


def parse_get_metric_data(req: Mapping[str, Any]) -> tuple[list[MetricQuery], datetime, datetime, bool, int, int]:
    """Validate GetMetricData; return (queries, start, end, ascending, max_datapoints, skip)."""
    raw_queries = _list(req.get("MetricDataQueries"), "MetricDataQueries")
    if not raw_queries:
        raise _missing("MetricDataQueries")
    if len(raw_queries) > MAX_QUERIES:
        raise _invalid(f"The collection MetricDataQueries must not have a size greater than {MAX_QUERIES}.")
    if req.get("StartTime") is None:
        raise _missing("StartTime")
    if req.get("EndTime") is None:
        raise _missing("EndTime")
    start = _timestamp(req["StartTime"], "StartTime")
    end = _timestamp(req["EndTime"], "EndTime")
    if start >= end:
        raise _invalid("The parameter StartTime must be less than the parameter EndTime.")
    scan_by = req.get("ScanBy") or "TimestampDescending"
    if scan_by not in {"TimestampDescending", "TimestampAscending"}:
        raise _invalid(f"The value {scan_by} for parameter ScanBy is invalid.")
    raw_max = req.get("MaxDatapoints")
    max_points = DEFAULT_MAX_DATAPOINTS if raw_max is None else int(_number(raw_max, "MaxDatapoints"))
    if max_points < 1:
        raise _invalid("The parameter MaxDatapoints must be at least 1.")
    skip = 0
    if req.get("NextToken"):
        try:
            skip = int(json.loads(base64.b64decode(str(req["NextToken"])))["skip"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CloudWatchError("InvalidNextToken", "The NextToken is invalid.") from exc
    queries: list[MetricQuery] = []
    ids: set[str] = set()
    for i, q in enumerate(raw_queries, 1):
        p = f"MetricDataQueries.member.{i}"
        if not isinstance(q, dict):
            raise _invalid(f"The parameter {p} must be a structure.")
        qid = _string(q.get("Id"), f"{p}.Id", 255)
        if not _QUERY_ID.match(qid):
            raise _invalid(f"The value {qid} for parameter {p}.Id is invalid (must start with a lowercase letter).")
        if qid in ids:
            raise _invalid(f"The value {qid} for parameter {p}.Id is a duplicate.")
        ids.add(qid)
        if q.get("Expression") is not None:
            raise _invalid(f"{p}.Expression: the double answers MetricStat queries only.")
        stat_block = q.get("MetricStat")
        if not isinstance(stat_block, dict):
            raise _missing(f"{p}.MetricStat")
        metric = stat_block.get("Metric")
        if not isinstance(metric, dict):
            raise _missing(f"{p}.MetricStat.Metric")
        if stat_block.get("Period") is None:
            raise _missing(f"{p}.MetricStat.Period")
        period = int(_number(stat_block["Period"], f"{p}.MetricStat.Period"))
        if period < 1 or (period % 60 != 0 and period not in {1, 5, 10, 20, 30}):
            raise _invalid(f"The parameter {p}.MetricStat.Period must be 1, 5, 10, 20, 30 or a multiple of 60.")
        if stat_block.get("Stat") is None:
            raise _missing(f"{p}.MetricStat.Stat")
        unit = stat_block.get("Unit")
        if unit is not None and unit not in STANDARD_UNITS:
            raise _invalid(f"The value {unit} for parameter {p}.MetricStat.Unit is invalid.")
        name = _string(metric.get("MetricName"), f"{p}.MetricStat.Metric.MetricName", 255)
        return_data = q.get("ReturnData", True)
        queries.append(
            MetricQuery(
                id=qid,
                label=str(q.get("Label") or name),
                namespace=_string(metric.get("Namespace"), f"{p}.MetricStat.Metric.Namespace", 255),
                metric=name,
                dimensions=_dimensions(metric.get("Dimensions"), f"{p}.MetricStat.Metric.Dimensions"),
                period=period,
                stat=_parse_stat(str(stat_block["Stat"])),
                unit=None if unit is None else str(unit),
                return_data=return_data not in (False, "false", "False"),
            )
        )
    return queries, start, end, scan_by == "TimestampAscending", max_points, skip


def _round_start(start: datetime, now: datetime, period: int) -> datetime:
    """CloudWatch's rounding of StartTime (GetMetricData reference)."""
    if period < 60:
        return start.replace(microsecond=0, second=start.second - start.second % period)
    age = now - start
    minute = start.replace(second=0, microsecond=0)
    if age < timedelta(days=15):
        return minute
    if age < timedelta(days=63):
        return minute.replace(minute=minute.minute - minute.minute % 5)
    return minute.replace(minute=0)


def _percentile(points: Sequence[Datapoint], pct: float) -> float | None:
    pairs: list[tuple[float, float]] = []
    for point in points:
        if point.statistic_set is not None:
            return None  # CloudWatch: no percentiles from StatisticValues
        pairs.extend((v, c) for v, c in zip(point.values, point.counts, strict=True) if c > 0)
    if not pairs or any(v < 0 for v, _ in pairs):
        return None  # CloudWatch: no percentiles when any value is negative
    pairs.sort()
    total = math.fsum(c for _, c in pairs)
    rank = pct / 100.0 * total  # nearest rank: the smallest value with at least pct% of samples at or below it
    running = 0.0
    for value, count in pairs:
        running += count
        if running >= rank * (1 - 1e-12):
            return value
    return pairs[-1][0]


def aggregate(points: Sequence[Datapoint], stat: str) -> float | None:
    """One statistic over the datapoints of one period; None when CloudWatch would return no datapoint."""
    if not points:
        return None
    count = math.fsum(p.sample_count for p in points)
    if stat == "SampleCount":
        return count
    if stat == "Sum":
        return math.fsum(p.sum for p in points)
    if count <= 0:
        return None
    if stat == "Average":
        return math.fsum(p.sum for p in points) / count
    if stat == "Minimum":
        mins = [m for p in points if (m := p.minimum) is not None]
        return min(mins) if mins else None
    if stat == "Maximum":
        maxs = [m for p in points if (m := p.maximum) is not None]
        return max(maxs) if maxs else None
    return _percentile(points, float(stat[1:]))


def _epoch(when: datetime) -> float | int:
    value = when.timestamp()
    return int(value) if value.is_integer() else value


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- the double


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    double: CloudWatchDouble


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        request = _Request(self.command, self.path, list(self.headers.items()), self._read_body())
        answer = self.server.double._handle(request)
        if answer is _DROP:
            self.close_connection = True
            with suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        assert isinstance(answer, _Response)
        self.send_response(answer.status, answer.reason)
        for key, value in answer.headers:
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _serve


class CloudWatchDouble:
    """The double. Start it with `cloudwatch_double(...)`; point boto3 at `.url`."""

    def __init__(
        self,
        upstream_url: str,
        *,
        clock: Clock = real_clock,
        visible_after: timedelta = timedelta(seconds=2),
        hold_older_than: timedelta = timedelta(hours=3),
        held_visible_after: timedelta | None = None,
        seed: int | None = None,
        fault_rates: Mapping[str, float] | None = None,
        fault_operations: Sequence[str] = ("PutMetricData",),
        host: str = "127.0.0.1",
        port: int = 0,
        upstream_timeout: float = 30.0,
    ) -> None:
        parsed = urllib.parse.urlsplit(upstream_url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"upstream_url must be http://host:port, not {upstream_url!r}")
        self._upstream = (parsed.hostname, parsed.port or 80)
        self._upstream_timeout = upstream_timeout
        self._clock = clock
        self.visible_after = visible_after
        self.hold_older_than = hold_older_than
        self.held_visible_after = held_visible_after
        self._lock = threading.Lock()
        self._entries: list[_Entry] = []
        self._script: list[tuple[str, FaultKind]] = []
        self._rng = random.Random(seed)
        self._rates: dict[FaultKind, float] = {}
        self._rate_operations: frozenset[str] = frozenset(fault_operations)
        self._requests: Counter[str] = Counter()
        self._forwarded: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._applied_requests = 0
        self._applied_datums = 0
        if fault_rates:
            self.set_random_faults(fault_rates, seed, operations=fault_operations)
        self._server = _Server((host, port), _Handler)
        self._server.double = self
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="cloudwatch-double", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def now(self) -> datetime:
        when = self._clock()
        if when.tzinfo is None:
            raise ValueError("the double's clock must return an aware datetime")
        return when.astimezone(UTC)

    # ---- faults

    def script(self, kind: FaultKind, n: int = 1, *, operation: str = "PutMetricData") -> None:
        """Queue `n` faults of `kind` for the next `n` requests of `operation` (before any random fault)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {FAULT_KINDS}")
        with self._lock:
            self._script.extend([(operation, kind)] * n)

    def set_random_faults(
        self, rates: Mapping[str, float], seed: int | None = None, *, operations: Sequence[str] = ("PutMetricData",)
    ) -> None:
        """Each request of `operations` meets fault k with probability rates[k] (seeded; rates sum to <= 1)."""
        checked: dict[FaultKind, float] = {}
        for kind, rate in rates.items():
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {kind!r}; known: {FAULT_KINDS}")
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"rate for {kind} must be within [0, 1]")
            checked[kind] = rate
        if sum(checked.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates must sum to at most 1")
        with self._lock:
            self._rates = checked
            self._rate_operations = frozenset(operations)
            if seed is not None:
                self._rng = random.Random(seed)

    def clear_faults(self) -> None:
        with self._lock:
            self._script.clear()
            self._rates = {}

    def pending_faults(self) -> list[tuple[str, FaultKind]]:
        with self._lock:
            return list(self._script)

    def _next_fault(self, operation: str) -> FaultKind | None:
        with self._lock:
            for i, (op, kind) in enumerate(self._script):
                if op == operation:
                    del self._script[i]
                    return kind
            if self._rates and operation in self._rate_operations:
                roll = self._rng.random()
                acc = 0.0
                for kind in FAULT_KINDS:
                    acc += self._rates.get(kind, 0.0)
                    if roll < acc:
                        return kind
        return None

    # ---- visibility

    def release_held(self) -> int:
        """Make every held (old-timestamp) datapoint visible now; return how many were released."""
        now = self.now()
        with self._lock:
            held = [e for e in self._entries if e.visible_at is None or e.visible_at > now]
            for entry in held:
                entry.visible_at = now
        return len(held)

    def held_count(self) -> int:
        now = self.now()
        with self._lock:
            return sum(1 for e in self._entries if e.visible_at is None or e.visible_at > now)

    def _visible_at(self, point: Datapoint) -> datetime | None:
        if point.sent_timestamp < point.arrived - self.hold_older_than:
            return None if self.held_visible_after is None else point.arrived + self.held_visible_after
        return point.arrived + self.visible_after

    # ---- assertions

    @property
    def stats(self) -> Stats:
        with self._lock:
            return Stats(
                requests=dict(self._requests),
                forwarded=dict(self._forwarded),
                applied_requests=self._applied_requests,
                applied_datums=self._applied_datums,
                rejected=dict(self._rejected),
                faults=dict(self._faults),
            )

    def datapoints(
        self,
        namespace: str | None = None,
        metric: str | None = None,
        dims: Mapping[str, str] | None = None,
        *,
        visible_only: bool = False,
    ) -> list[Datapoint]:
        """Stored datapoints (in arrival order); filters are exact, `dims` is the whole dimension set."""
        now = self.now()
        wanted = None if dims is None else frozenset(dims.items())
        with self._lock:
            return [
                e.point
                for e in self._entries
                if (namespace is None or e.point.namespace == namespace)
                and (metric is None or e.point.metric == metric)
                and (wanted is None or e.point.dimensions == wanted)
                and (not visible_only or (e.visible_at is not None and e.visible_at <= now))
            ]

    def sum(self, namespace: str, metric: str, dims: Mapping[str, str], *, visible_only: bool = False) -> float:
        return math.fsum(p.sum for p in self.datapoints(namespace, metric, dims, visible_only=visible_only))

    def sample_count(
        self, namespace: str, metric: str, dims: Mapping[str, str], *, visible_only: bool = False
    ) -> float:
        return math.fsum(p.sample_count for p in self.datapoints(namespace, metric, dims, visible_only=visible_only))

    def minute_sums(self, namespace: str, metric: str, dims: Mapping[str, str]) -> dict[datetime, float]:
        """Sum per minute (stored, visible or not): publishing a minute twice shows as double here."""
        out: dict[datetime, float] = {}
        for point in self.datapoints(namespace, metric, dims):
            minute = point.timestamp.replace(second=0)
            out[minute] = out.get(minute, 0.0) + point.sum
        return out

    def series(self) -> set[tuple[str, str, Dims]]:
        with self._lock:
            return {(e.point.namespace, e.point.metric, e.point.dimensions) for e in self._entries}

    # ---- request handling

    def _handle(self, request: _Request) -> _Response | object:
        protocol, operation, payload = self._classify(request)
        with self._lock:
            self._requests[operation] += 1
        fault = self._next_fault(operation)
        if fault is not None:
            with self._lock:
                self._faults[fault] += 1
        if fault == "request_lost":
            return self._error(protocol, _internal())
        if fault == "throttle":
            return self._error(protocol, _throttled())
        try:
            if operation == "PutMetricData" and protocol in {"json", "query"}:
                answer = self._put_metric_data(request, protocol, payload)
            elif operation == "GetMetricData" and protocol in {"json", "query"}:
                answer = self._get_metric_data(request, protocol, payload)
            elif protocol == "cbor" and operation in {"PutMetricData", "GetMetricData"}:
                raise CloudWatchError("UnsupportedProtocol", "The double speaks JSON 1.0 and query, not rpc-v2-cbor.")
            else:
                answer = self._forward(request, operation)
        except CloudWatchError as err:
            if err.code not in {"InternalServiceError"}:
                with self._lock:
                    self._rejected[err.code] += 1
            answer = self._error(protocol, err)
        if fault == "answer_lost":
            return self._error(protocol, _internal())
        if fault == "connection_dropped":
            return _DROP
        return answer

    def _classify(self, request: _Request) -> tuple[Protocol, str, bytes | None]:
        target = request.header("X-Amz-Target")
        if target and target.startswith(JSON_TARGET_PREFIX):
            return "json", target[len(JSON_TARGET_PREFIX) :], None
        if request.header("smithy-protocol") == "rpc-v2-cbor":
            return "cbor", request.path.rstrip("/").rsplit("/", 1)[-1], None
        content_type = (request.header("Content-Type") or "").lower()
        if request.method == "POST" and content_type.startswith("application/x-www-form-urlencoded"):
            try:
                body = _decompress(request.raw_body, request.header("Content-Encoding"), MAX_REQUEST_BYTES)
                action = urllib.parse.parse_qs(body.decode("utf-8")).get("Action", ["Unknown"])[0]
            except (CloudWatchError, UnicodeDecodeError):
                return "query", "Unknown", None
            return "query", action, body
        return "other", f"{request.method} {request.path.split('?')[0]}", None

    def _payload(
        self, request: _Request, protocol: Protocol, body: bytes | None, limit: int = MAX_REQUEST_BYTES
    ) -> dict[str, Any]:
        if body is None:
            body = _decompress(request.raw_body, request.header("Content-Encoding"), limit)
        if len(body) > limit:
            raise CloudWatchError("RequestEntityTooLarge", f"Request size {len(body)}+ exceeded {limit} bytes", 413)
        if protocol == "query":
            return decode_query_body(body)
        try:
            parsed = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise CloudWatchError("SerializationException", f"Body is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise CloudWatchError("SerializationException", "Body must be a JSON object.")
        return parsed

    def _put_metric_data(self, request: _Request, protocol: Protocol, body: bytes | None) -> _Response:
        arrived = self.now()
        req = self._payload(request, protocol, body)
        points = parse_put_metric_data(req, arrived, 0)
        answer = self._forward(request, "PutMetricData")
        if 200 <= answer.status < 300:
            with self._lock:
                self._applied_requests += 1
                self._applied_datums += len(points)
                seq = self._applied_requests
                for point in points:
                    stored = dataclasses.replace(point, request_seq=seq)
                    self._entries.append(_Entry(stored, self._visible_at(stored)))
        return answer

    def _get_metric_data(self, request: _Request, protocol: Protocol, body: bytes | None) -> _Response:
        req = self._payload(request, protocol, body, MAX_GET_REQUEST_BYTES)
        queries, start, end, ascending, max_points, skip = parse_get_metric_data(req)
        now = self.now()
        with self._lock:
            visible = [e.point for e in self._entries if e.visible_at is not None and e.visible_at <= now]
        results: list[tuple[MetricQuery, list[tuple[datetime, float]]]] = []
        for q in queries:
            q_start = _round_start(start, now, q.period)
            buckets: dict[datetime, list[Datapoint]] = {}
            for point in visible:
                if (
                    point.namespace != q.namespace
                    or point.metric != q.metric
                    or point.dimensions != q.dimensions
                    or (q.unit is not None and point.unit != q.unit)
                    or not (q_start <= point.timestamp < end)
                ):
                    continue
                offset = (point.timestamp - q_start) // timedelta(seconds=q.period)
                buckets.setdefault(q_start + timedelta(seconds=q.period * offset), []).append(point)
            series = [(ts, v) for ts, pts in buckets.items() if (v := aggregate(pts, q.stat)) is not None]
            series.sort(key=lambda item: item[0], reverse=not ascending)
            if q.return_data:
                results.append((q, series))
        # MaxDatapoints across all queries, in order; NextToken says how many were handed out before.
        budget, to_skip, handed_out = max_points, skip, skip
        out: list[tuple[MetricQuery, list[tuple[datetime, float]], bool]] = []
        for q, series in results:
            dropped = min(to_skip, len(series))
            to_skip -= dropped
            rest = series[dropped:]
            page = rest[:budget]
            budget -= len(page)
            handed_out += len(page)
            out.append((q, page, len(page) < len(rest)))
        next_token = None
        if any(partial for _, _, partial in out):
            next_token = base64.b64encode(json.dumps({"skip": handed_out}).encode()).decode()
        return self._get_answer(protocol, out, next_token)

    def _get_answer(
        self,
        protocol: Protocol,
        out: Sequence[tuple[MetricQuery, list[tuple[datetime, float]], bool]],
        next_token: str | None,
    ) -> _Response:
        request_id = str(uuid.uuid4())
        if protocol == "json":
            doc: dict[str, Any] = {
                "MetricDataResults": [
                    {
                        "Id": q.id,
                        "Label": q.label,
                        "Timestamps": [_epoch(ts) for ts, _ in page],
                        "Values": [v for _, v in page],
                        "StatusCode": "PartialData" if partial else "Complete",
                    }
                    for q, page, partial in out
                ],
                "Messages": [],
            }
            if next_token:
                doc["NextToken"] = next_token
            return _Response(
                200,
                json.dumps(doc).encode(),
                [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-RequestId", request_id)],
            )
        members = []
        for q, page, partial in out:
            stamps = "".join(f"<member>{_iso(ts)}</member>" for ts, _ in page)
            values = "".join(f"<member>{v!r}</member>" for _, v in page)
            members.append(
                f"<member><Id>{xml_escape(q.id)}</Id><Label>{xml_escape(q.label)}</Label>"
                f"<Timestamps>{stamps}</Timestamps><Values>{values}</Values>"
                f"<StatusCode>{'PartialData' if partial else 'Complete'}</StatusCode></member>"
            )
        token = f"<NextToken>{xml_escape(next_token)}</NextToken>" if next_token else ""
        xml = (
            f'<GetMetricDataResponse xmlns="{XML_NS}"><GetMetricDataResult>'
            f"<MetricDataResults>{''.join(members)}</MetricDataResults><Messages/>{token}"
            f"</GetMetricDataResult><ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
            f"</GetMetricDataResponse>"
        )
        return _Response(200, xml.encode(), [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)])

    def _error(self, protocol: Protocol, err: CloudWatchError) -> _Response:
        request_id = str(uuid.uuid4())
        kind = "Sender" if err.sender else "Receiver"
        if protocol == "query":
            xml = (
                f'<ErrorResponse xmlns="{XML_NS}"><Error><Type>{kind}</Type><Code>{xml_escape(err.code)}</Code>'
                f"<Message>{xml_escape(err.message)}</Message></Error><RequestId>{request_id}</RequestId>"
                f"</ErrorResponse>"
            )
            return _Response(err.status, xml.encode(), [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)])
        body = json.dumps({"__type": f"com.amazonaws.cloudwatch#{err.code}", "message": err.message}).encode()
        return _Response(
            err.status,
            body,
            [
                ("Content-Type", "application/x-amz-json-1.0"),
                ("x-amzn-RequestId", request_id),
                ("x-amzn-query-error", f"{err.code};{kind}"),
            ],
        )

    def _forward(self, request: _Request, operation: str) -> _Response:
        conn = http.client.HTTPConnection(*self._upstream, timeout=self._upstream_timeout)
        try:
            headers = {k: v for k, v in request.headers if k.lower() not in _HOP_BY_HOP}
            if "chunked" in (request.header("Transfer-Encoding") or "").lower():
                headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
                headers["Content-Length"] = str(len(request.raw_body))
            conn.request(request.method, request.path, body=request.raw_body or None, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            answer = _Response(resp.status, body, list(resp.getheaders()), resp.reason)
        except OSError as exc:
            message = f"upstream moto unreachable: {exc}"
            raise CloudWatchError("InternalServiceError", message, 502, sender=False) from exc
        finally:
            conn.close()
        with self._lock:
            self._forwarded[operation] += 1
        return answer


@contextmanager
def cloudwatch_double(
    upstream_url: str,
    *,
    clock: Clock = real_clock,
    visible_after: timedelta = timedelta(seconds=2),
    hold_older_than: timedelta = timedelta(hours=3),
    held_visible_after: timedelta | None = None,
    seed: int | None = None,
    fault_rates: Mapping[str, float] | None = None,
    fault_operations: Sequence[str] = ("PutMetricData",),
) -> Iterator[CloudWatchDouble]:
    """Run a CloudWatchDouble on 127.0.0.1 (free port) in front of the moto server at `upstream_url`."""
    double = CloudWatchDouble(
        upstream_url,
        clock=clock,
        visible_after=visible_after,
        hold_older_than=hold_older_than,
        held_visible_after=held_visible_after,
        seed=seed,
        fault_rates=fault_rates,
        fault_operations=fault_operations,
    )
    double.start()
    try:
        yield double
    finally:
        double.close()


@contextmanager
def moto_server(python: str = sys.executable, timeout: float = 30.0) -> Iterator[str]:
    """Start `python -m moto.server` on a free 127.0.0.1 port as a subprocess; yield its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {proc.returncode}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/moto-api/")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
