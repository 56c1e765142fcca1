"""Check datums against CloudWatch's limits and pack them into as few PutMetricData requests as possible."""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from job.core.errors import LimitError
from job.core.limits import (
    MAX_DATAPOINT_AGE,
    MAX_DATAPOINT_AHEAD,
    MAX_DATUMS_PER_REQUEST,
    MAX_DIMENSION_NAME_LENGTH,
    MAX_DIMENSION_VALUE_LENGTH,
    MAX_DIMENSIONS_PER_DATUM,
    MAX_REQUEST_BYTES,
    MAX_VALUES_PER_DATUM,
)
from job.core.metrics import Datum

Request = tuple[Datum, ...]


@dataclass(frozen=True)
class RequestLimits:
    """What one PutMetricData request may hold (job/core/limits.py has the sources); tests tighten them."""

    max_datums: int = MAX_DATUMS_PER_REQUEST
    max_bytes: int = MAX_REQUEST_BYTES

    @property
    def budget(self) -> int:
        """Bytes the datums of one request may take."""
        return self.max_bytes - REQUEST_OVERHEAD_BYTES


CLOUDWATCH_LIMITS = RequestLimits()
# Action=PutMetricData&Version=2010-08-01&Namespace=<255 chars>: the request's own share of the body.
REQUEST_OVERHEAD_BYTES = 64 + 3 * 255


_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*")


def _number(value: float) -> str:
    return repr(float(value))


def _quoted_length(text: str) -> int:
    # Most of what a datum holds needs no escaping, and then is its own quoted length.
    return len(text) if _PLAIN.fullmatch(text) else len(quote(text, safe=""))


def datum_wire_bytes(datum: Datum) -> int:
    """Bytes this datum adds to a query-protocol body at the widest index (member.1000), an upper bound for the
    CBOR and JSON protocols newer botocore versions use."""
    prefix = "MetricData.member.1000."
    pairs = [("MetricName", datum.metric), ("Timestamp", datum.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"))]
    pairs.append(("Unit", datum.unit.value))
    for i, (name, value) in enumerate(datum.dimensions, start=1):
        pairs += [(f"Dimensions.member.{i}.Name", name), (f"Dimensions.member.{i}.Value", value)]
    if datum.value is not None:
        pairs.append(("Value", _number(datum.value)))
    for i, (number, count) in enumerate(zip(datum.values, datum.counts, strict=True), start=1):
        pairs += [(f"Values.member.{i}", _number(number)), (f"Counts.member.{i}", _number(count))]
    return sum(_quoted_length(prefix + k) + _quoted_length(v) + 2 for k, v in pairs)


def check_datums(datums: Sequence[Datum], now: datetime | None) -> None:
    """Raise LimitError for a datum CloudWatch would refuse; `now` None skips the timestamp-age check (jsonl)."""
    for datum in datums:
        where = f"{datum.metric} {dict(datum.dimensions)} at {datum.timestamp:%Y-%m-%dT%H:%MZ}"
        if len(datum.dimensions) > MAX_DIMENSIONS_PER_DATUM:
            raise LimitError(
                f"{where}: {len(datum.dimensions)} dimensions; CloudWatch takes {MAX_DIMENSIONS_PER_DATUM}"
            )
        if any(not 0 < len(v) <= MAX_DIMENSION_VALUE_LENGTH for _, v in datum.dimensions):
            raise LimitError(f"{where}: dimension values must be 1-{MAX_DIMENSION_VALUE_LENGTH} characters")
        if any(not 0 < len(n) <= MAX_DIMENSION_NAME_LENGTH for n, _ in datum.dimensions):
            raise LimitError(f"{where}: dimension names must be 1-{MAX_DIMENSION_NAME_LENGTH} characters")
        if len(datum.values) > MAX_VALUES_PER_DATUM or len(datum.values) != len(datum.counts):
            raise LimitError(f"{where}: expected at most {MAX_VALUES_PER_DATUM} values with one count each")
        if not all(math.isfinite(n) for n in datum.numbers()):
            raise LimitError(f"{where}: values must be finite numbers")
        if now is not None and not now - MAX_DATAPOINT_AGE <= datum.timestamp <= now + MAX_DATAPOINT_AHEAD:
            raise LimitError(
                f"{where}: CloudWatch takes timestamps from {now - MAX_DATAPOINT_AGE:%Y-%m-%dT%H:%MZ} "
                f"(two weeks ago) to {now + MAX_DATAPOINT_AHEAD:%Y-%m-%dT%H:%MZ}; narrow the window or export "
                "older logs to a jsonl file"
            )


def lower_bound(
    datums: Sequence[Datum], sizes: Sequence[int] | None = None, limits: RequestLimits = CLOUDWATCH_LIMITS
) -> int:
    """No packing can use fewer requests than this."""
    if not datums:
        return 0
    by_count = math.ceil(len(datums) / limits.max_datums)
    total = sum(sizes) if sizes is not None else sum(map(datum_wire_bytes, datums))
    by_bytes = math.ceil(total / limits.budget)
    return max(by_count, by_bytes)


def pack(datums: Sequence[Datum], limits: RequestLimits = CLOUDWATCH_LIMITS) -> list[Request]:
    """Pack into as few requests as the two limits (datums, bytes) allow: start with the lower bound, place the
    largest datums first, each into the open request with the most bytes left (so big histograms and small
    single values spread over both limits), and add a request only when nothing fits. Within a request the
    datums keep their input order."""
    budget = limits.budget
    sized = sorted(((datum_wire_bytes(d), i, d) for i, d in enumerate(datums)), key=lambda t: (-t[0], t[1]))
    for size, _, datum in sized[:1]:
        if size > budget:
            raise LimitError(f"{datum.metric} at {datum.timestamp:%Y-%m-%dT%H:%MZ}: {size} bytes exceed one request")
    requests = lower_bound(datums, [size for size, _, _ in sized], limits)
    while True:
        placed = _worst_fit(sized, requests, budget, limits.max_datums)
        if placed is not None:
            return [tuple(d for _, d in sorted(b, key=lambda t: t[0])) for b in placed if b]
        requests += 1


def _worst_fit(
    sized: Sequence[tuple[int, int, Datum]], requests: int, budget: int, max_datums: int
) -> list[list[tuple[int, Datum]]] | None:
    """Largest first into the request with the most bytes left; None if some datum fits nowhere."""
    heap = [(-budget, b) for b in range(requests)]  # most room first
    bins: list[list[tuple[int, Datum]]] = [[] for _ in range(requests)]
    for size, index, datum in sized:
        skipped = []
        while heap:
            negative_room, b = heapq.heappop(heap)
            if -negative_room >= size and len(bins[b]) < max_datums:
                bins[b].append((index, datum))
                heapq.heappush(heap, (negative_room + size, b))
                break
            if len(bins[b]) < max_datums:
                skipped.append((negative_room, b))
        else:
            return None
        for entry in skipped:
            heapq.heappush(heap, entry)
    return bins
