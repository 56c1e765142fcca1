"""An independent reference count of CloudFront log files, in plain Python (no import from job/).

It reads the .gz files itself: gzip, lines split on LF, the two header lines of each file skipped, fields split
on TAB only, and '#' inside a line never treated as a comment. Per (distribution, minute) it counts the requests,
the requests per x-edge-result-type (field 13) and collects the time-taken values in ms (field 18,
round(float * 1000)); a '-', missing, unparseable or negative time-taken is a request outside the distribution.

The figures of the metric groups added later, from the same lines: the status class of sc-status (field 8: three
digits 000-599 give the first digit and 'xx', anything else 'Other'), the bytes of sc-bytes (field 3: 1 to 12
digits, anything else adds nothing), the time to first byte in ms (field 27, the time-taken rule; older lines
without the field are requests outside its distribution) and the edge location (field 2: its first three
characters when they are capital letters A-Z, else 'Other').

The malformed rule (the SQL's): a line is malformed if date (field 0) + ' ' + time (field 1) do not parse as
'%Y-%m-%d %H:%M:%S', or its result type is missing, '' or '-'.

Percentiles use the nearest-rank definition: the p-th percentile of n values is the ceil(p * n)-th smallest
(at least the 1st). For n values this is exactly what DuckDB's quantile_disc(x, p) returns, which is what the
DuckDB adapter computes for the SQL's approx_percentile.
"""

from __future__ import annotations

import gzip
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

HEADER_LINES = 2
FIELD_DATE, FIELD_TIME, FIELD_RESULT_TYPE, FIELD_TIME_TAKEN = 0, 1, 13, 18
FIELD_EDGE, FIELD_BYTES, FIELD_STATUS, FIELD_TTFB = 2, 3, 8, 27
MAX_SECONDS = 86400
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

_PLAIN = re.compile(r"^([A-Z0-9]+)/\d{4}/\d{2}/\d{2}/\d{2}/[^/]+$")
_HIVE = re.compile(r"^DistributionId=([A-Z0-9]+)/year=\d{4}/month=\d{2}/day=\d{2}/hour=\d{2}/[^/]+$")


@dataclass
class MinuteCounts:
    """What one distribution's valid lines in one minute amount to."""

    requests: int = 0
    by_result_type: Counter[str] = field(default_factory=Counter)
    time_taken_ms: list[int] = field(default_factory=list)
    by_status_class: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    ttfb_ms: list[int] = field(default_factory=list)
    by_edge: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Line:
    """One classified line: minute is None for a malformed line."""

    minute: datetime | None
    result_type: str | None
    time_taken_ms: int | None
    status_class: str = "Other"
    bytes: int | None = None
    ttfb_ms: int | None = None
    edge: str = "Other"


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def classify(fields: Sequence[bytes]) -> Line:
    """Apply the malformed rule and the time-taken rule to one TAB-split line."""
    result_type = _text(fields[FIELD_RESULT_TYPE]) if len(fields) > FIELD_RESULT_TYPE else None
    minute: datetime | None = None
    if len(fields) > FIELD_TIME:
        try:
            when = datetime.strptime(f"{_text(fields[FIELD_DATE])} {_text(fields[FIELD_TIME])}", TIME_FORMAT)
        except ValueError:
            when = None
        if when is not None and result_type not in (None, "", "-"):
            minute = when.replace(second=0, tzinfo=UTC)
    taken: int | None = None
    if len(fields) > FIELD_TIME_TAKEN:
        try:
            seconds = float(_text(fields[FIELD_TIME_TAKEN]))
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds) and seconds >= 0:
            taken = round(seconds * 1000)
    return Line(minute, result_type if minute is not None else None, taken, *_later_fields(fields))


def _later_fields(fields: Sequence[bytes]) -> tuple[str, int | None, int | None, str]:
    """(status class, bytes, time to first byte in ms, edge location) of one line, by the rules above."""
    status = _text(fields[FIELD_STATUS]) if len(fields) > FIELD_STATUS else ""
    status_class = status[0] + "xx" if len(status) == 3 and status.isdigit() and status[0] in "012345" else "Other"
    raw_bytes = fields[FIELD_BYTES] if len(fields) > FIELD_BYTES else b""
    size = int(raw_bytes) if 1 <= len(raw_bytes) <= 12 and all(48 <= b <= 57 for b in raw_bytes) else None
    ttfb: int | None = None
    if len(fields) > FIELD_TTFB:
        try:
            seconds = float(_text(fields[FIELD_TTFB]))
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds) and 0 <= seconds < MAX_SECONDS:
            ttfb = round(seconds * 1000)
    edge_field = fields[FIELD_EDGE] if len(fields) > FIELD_EDGE else b""
    edge = edge_field[:3].decode() if len(edge_field) >= 3 and all(65 <= b <= 90 for b in edge_field[:3]) else "Other"
    return status_class, size, ttfb, edge


def read_lines(path: Path) -> list[bytes]:
    """The record lines of one .gz log file, byte-exact (the two header lines skipped, no trailing empty piece)."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines[HEADER_LINES:]


@dataclass
class Reference:
    """Per (distribution, minute) counts over a set of files."""

    minutes: dict[tuple[str, datetime], MinuteCounts] = field(default_factory=dict)
    malformed: Counter[str] = field(default_factory=Counter)
    lines: Counter[str] = field(default_factory=Counter)

    def add_file(self, distribution_id: str, path: Path) -> None:
        for raw in read_lines(path):
            self.add_line(distribution_id, raw)

    def add_line(self, distribution_id: str, raw: bytes) -> None:
        self.lines[distribution_id] += 1
        line = classify(raw.split(b"\t"))
        if line.minute is None:
            self.malformed[distribution_id] += 1
            return
        counts = self.minutes.setdefault((distribution_id, line.minute), MinuteCounts())
        counts.requests += 1
        assert line.result_type is not None
        counts.by_result_type[line.result_type] += 1
        if line.time_taken_ms is not None:
            counts.time_taken_ms.append(line.time_taken_ms)
        counts.by_status_class[line.status_class] += 1
        counts.bytes += line.bytes or 0
        if line.ttfb_ms is not None:
            counts.ttfb_ms.append(line.ttfb_ms)
        counts.by_edge[line.edge] += 1

    @property
    def distributions(self) -> list[str]:
        return sorted({d for d, _ in self.minutes} | set(self.lines))

    def _of(self, distribution_id: str) -> Iterable[tuple[datetime, MinuteCounts]]:
        return sorted((m, c) for (d, m), c in self.minutes.items() if d == distribution_id)

    def requests(self, distribution_id: str) -> dict[datetime, int]:
        return {m: c.requests for m, c in self._of(distribution_id)}

    def requests_by_type(
        self, distribution_id: str, mapping: Mapping[str, str] | None = None
    ) -> dict[str, dict[datetime, int]]:
        """{result type: {minute: requests}}; `mapping` renames result types (e.g. unknown ones to 'Other')."""
        out: dict[str, dict[datetime, int]] = {}
        for minute, counts in self._of(distribution_id):
            for raw, n in counts.by_result_type.items():
                name = mapping.get(raw, raw) if mapping is not None else raw
                per_minute = out.setdefault(name, {})
                per_minute[minute] = per_minute.get(minute, 0) + n
        return out

    def time_taken_counts(self, distribution_id: str) -> dict[datetime, int]:
        """Lines with a usable time-taken, per minute (minutes without any are left out)."""
        return {m: len(c.time_taken_ms) for m, c in self._of(distribution_id) if c.time_taken_ms}

    def time_taken_values(self, distribution_id: str) -> dict[datetime, list[int]]:
        return {m: sorted(c.time_taken_ms) for m, c in self._of(distribution_id) if c.time_taken_ms}

    def requests_by_status_class(self, distribution_id: str) -> dict[str, dict[datetime, int]]:
        """{status class: {minute: requests}}."""
        out: dict[str, dict[datetime, int]] = {}
        for minute, counts in self._of(distribution_id):
            for status_class, n in counts.by_status_class.items():
                out.setdefault(status_class, {})[minute] = n
        return out

    def bytes_downloaded(self, distribution_id: str) -> dict[datetime, int]:
        """The sum of sc-bytes per minute (every minute with a request, 0 when none has usable bytes)."""
        return {m: c.bytes for m, c in self._of(distribution_id)}

    def ttfb_values(self, distribution_id: str) -> dict[datetime, list[int]]:
        """Time to first byte in ms per minute (minutes without any are left out)."""
        return {m: sorted(c.ttfb_ms) for m, c in self._of(distribution_id) if c.ttfb_ms}

    def requests_by_edge(self, distribution_id: str, cap: int) -> dict[str, dict[datetime, int]]:
        """{edge location: {minute: requests}} with the `cap` busiest locations of all these lines by name (ties
        by name) and the rest, the unrecognised ones included, as 'Other'."""
        totals: Counter[str] = Counter()
        for _, counts in self._of(distribution_id):
            totals.update(counts.by_edge)
        ranked = sorted((e for e in totals if e != "Other"), key=lambda e: (-totals[e], e))
        named = set(ranked[:cap])
        out: dict[str, dict[datetime, int]] = {}
        for minute, counts in self._of(distribution_id):
            for edge, n in counts.by_edge.items():
                name = edge if edge in named else "Other"
                per_minute = out.setdefault(name, {})
                per_minute[minute] = per_minute.get(minute, 0) + n
        return out

    def total_requests(self) -> int:
        return sum(c.requests for c in self.minutes.values())

    def total_malformed(self) -> int:
        return sum(self.malformed.values())


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The nearest-rank q-quantile: the ceil(q * n)-th smallest value (exact arithmetic on q's decimal form)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(Fraction(str(q)) * len(ordered)))
    return ordered[rank - 1]


def weighted_nearest_rank(values: Sequence[float], counts: Sequence[float], q: float) -> float:
    """Nearest-rank q-quantile of values each repeated counts[i] times (a CloudWatch Values/Counts distribution)."""
    pairs = sorted(zip(values, counts, strict=True))
    total = sum(int(c) for _, c in pairs)
    if total <= 0:
        raise ValueError("no values")
    rank = max(1, math.ceil(Fraction(str(q)) * total))
    seen = 0
    for value, count in pairs:
        seen += int(count)
        if seen >= rank:
            return value
    raise AssertionError("unreachable: rank <= total")


def distribution_of(relative: str) -> str | None:
    """The distribution id of a path relative to the log root, in either layout; None if it fits neither."""
    for pattern in (_PLAIN, _HIVE):
        match = pattern.match(relative)
        if match:
            return match.group(1)
    return None


def scan_tree(root: Path, only: Iterable[Path] | None = None) -> Reference:
    """The reference over every .gz file under `root` (or only the given files under it)."""
    reference = Reference()
    paths: list[Path]
    if only is not None:
        paths = sorted(only)
    else:
        paths = sorted(Path(folder) / name for folder, _, names in os.walk(root) for name in names)
    for path in paths:
        if path.name.startswith(".") or not path.name.endswith(".gz"):
            continue
        distribution_id = distribution_of(path.relative_to(root).as_posix())
        if distribution_id is None:
            continue
        reference.add_file(distribution_id, path)
    return reference
