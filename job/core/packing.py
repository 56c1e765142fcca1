"""Check datums against CloudWatch's limits and pack them into as few PutMetricData requests as possible."""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from job.core import wire
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
        """Bytes the datums of one request may take, each counted with a separator (the first has none)."""
        return self.max_bytes - REQUEST_OVERHEAD_BYTES


CLOUDWATCH_LIMITS = RequestLimits()
# The body's own share at the widest namespace, less the one separator its first datum does not need.
REQUEST_OVERHEAD_BYTES = wire.BODY_OVERHEAD_BYTES - len(wire.ITEM_SEPARATOR)


def datum_bytes(datum: Datum) -> int:
    """Bytes this datum adds to a PutMetricData body (botocore's JSON 1.0), with its separator: exact."""
    return len(wire.fragment(datum)) + len(wire.ITEM_SEPARATOR)


def check_datums(datums: Sequence[Datum], now: datetime | None) -> None:
    """Raise LimitError for a datum CloudWatch would refuse; `now` None skips the timestamp-age check (jsonl).
    botocore's own validation never sees the datums (job/core/wire.py), so this is the only check before sending."""
    earliest = latest = None
    if now is not None:
        earliest, latest = now - MAX_DATAPOINT_AGE, now + MAX_DATAPOINT_AHEAD
    checked: set[tuple[tuple[str, str], ...]] = set()  # a batch repeats a few dimension sets thousands of times
    isfinite = math.isfinite
    for datum in datums:
        dims = datum.dimensions
        if dims not in checked:
            _check_dimensions(datum)
            checked.add(dims)
        values, counts = datum.values, datum.counts
        if (values or counts) and (len(values) > MAX_VALUES_PER_DATUM or len(values) != len(counts)):
            raise LimitError(f"{_where(datum)}: expected at most {MAX_VALUES_PER_DATUM} values with one count each")
        # a sum of finite numbers is finite unless it overflows: only then is each number looked at
        if not (isfinite(sum(datum.numbers())) or all(map(isfinite, datum.numbers()))):
            raise LimitError(f"{_where(datum)}: values must be finite numbers")
        if earliest is not None and latest is not None and not earliest <= datum.timestamp <= latest:
            raise LimitError(
                f"{_where(datum)}: CloudWatch takes timestamps from {earliest:%Y-%m-%dT%H:%MZ} "
                f"(two weeks ago) to {latest:%Y-%m-%dT%H:%MZ}; narrow the window or export "
                "older logs to a jsonl file"
            )


def _where(datum: Datum) -> str:
    return f"{datum.metric} {dict(datum.dimensions)} at {datum.timestamp:%Y-%m-%dT%H:%MZ}"


def _check_dimensions(datum: Datum) -> None:
    if len(datum.dimensions) > MAX_DIMENSIONS_PER_DATUM:
        raise LimitError(
            f"{_where(datum)}: {len(datum.dimensions)} dimensions; CloudWatch takes {MAX_DIMENSIONS_PER_DATUM}"
        )
    if any(not 0 < len(v) <= MAX_DIMENSION_VALUE_LENGTH for _, v in datum.dimensions):
        raise LimitError(f"{_where(datum)}: dimension values must be 1-{MAX_DIMENSION_VALUE_LENGTH} characters")
    if any(not 0 < len(n) <= MAX_DIMENSION_NAME_LENGTH for n, _ in datum.dimensions):
        raise LimitError(f"{_where(datum)}: dimension names must be 1-{MAX_DIMENSION_NAME_LENGTH} characters")


def lower_bound(
    datums: Sequence[Datum], sizes: Sequence[int] | None = None, limits: RequestLimits = CLOUDWATCH_LIMITS
) -> int:
    """No packing can use fewer requests than this (`sizes`: each datum's datum_bytes, if known)."""
    if not datums:
        return 0
    total = sum(sizes) if sizes is not None else sum(map(datum_bytes, datums))
    return max(math.ceil(len(datums) / limits.max_datums), math.ceil(total / limits.budget))


def pack(datums: Sequence[Datum], limits: RequestLimits = CLOUDWATCH_LIMITS) -> list[Request]:
    """pack_sizes over the datums' exact sizes, as requests of datums."""
    sizes = [datum_bytes(d) for d in datums]
    return [tuple(datums[i] for i in request) for request in pack_sizes(sizes, limits, datums)]


def pack_sizes(
    sizes: Sequence[int], limits: RequestLimits = CLOUDWATCH_LIMITS, datums: Sequence[Datum] = ()
) -> list[list[int]]:
    """Pack items of these sizes (datum_bytes) into as few requests as the two limits (datums, bytes) allow, as
    lists of indices: start with the lower bound, place the largest first, each into the open request with the
    most bytes left (so big histograms and small single values spread over both limits), and add a request
    only when nothing fits. Within a request the indices keep their input order. `datums` names an oversized
    one in the error."""
    if not sizes:
        return []
    budget = limits.budget
    by_count = math.ceil(len(sizes) / limits.max_datums)
    biggest = max(sizes)
    if biggest > budget:
        index = sizes.index(biggest)
        where = f"{datums[index].metric} at {datums[index].timestamp:%Y-%m-%dT%H:%MZ}" if datums else f"item {index}"
        raise LimitError(f"{where}: {biggest} bytes exceed one request")
    requests = max(by_count, math.ceil(sum(sizes) / budget))
    if requests == by_count and len(sizes) <= requests * limits.max_datums:
        # The count binds (the common case): consecutive runs of equal count fit if every run fits the budget.
        share = math.ceil(len(sizes) / requests)
        runs = [list(range(start, min(start + share, len(sizes)))) for start in range(0, len(sizes), share)]
        if all(sum(sizes[i] for i in run) <= budget for run in runs):
            return runs
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    while True:
        placed = _worst_fit(sizes, order, requests, budget, limits.max_datums)
        if placed is not None:
            return [sorted(b) for b in placed if b]
        requests += 1


def _worst_fit(
    sizes: Sequence[int], order: Sequence[int], requests: int, budget: int, max_datums: int
) -> list[list[int]] | None:
    """Largest first into the request with the most bytes left; None if some item fits nowhere."""
    heap = [(-budget, b) for b in range(requests)]  # most room first
    bins: list[list[int]] = [[] for _ in range(requests)]
    for index in order:
        size = sizes[index]
        skipped = []
        while heap:
            negative_room, b = heapq.heappop(heap)
            if -negative_room >= size and len(bins[b]) < max_datums:
                bins[b].append(index)
                heapq.heappush(heap, (negative_room + size, b))
                break
            if len(bins[b]) < max_datums:
                skipped.append((negative_room, b))
        else:
            return None
        for entry in skipped:
            heapq.heappush(heap, entry)
    return bins


def pack_wire(
    datums: Sequence[Datum], limits: RequestLimits = CLOUDWATCH_LIMITS
) -> tuple[tuple[Request, ...], tuple[tuple[str, ...], ...]]:
    """Serialise each datum once (job/core/wire.py) and pack by the exact sizes: the requests, and each
    request's datum fragments (what Batch journals and the CloudWatch sink sends)."""
    parts = wire.fragments(datums)
    separator = len(wire.ITEM_SEPARATOR)
    groups = pack_sizes([len(p) + separator for p in parts], limits, datums)
    requests = tuple(tuple(datums[i] for i in group) for group in groups)
    return requests, tuple(tuple(parts[i] for i in group) for group in groups)
