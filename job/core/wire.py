"""PutMetricData bodies as botocore's JSON 1.0 serializer writes them, built once per datum so sizes are exact."""

from __future__ import annotations

import calendar
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from job.core.metrics import Datum, Unit

# botocore 1.44 talks awsJson1_0 to CloudWatch (docs/PLATFORM-NOTES.md): JSONSerializer.serialize_to_request is
# json.dumps(body) with the default separators (", " and ": ") and ensure_ascii, members in the order of the
# parameters given (Datum.to_api's), timestamps as epoch seconds (_timestamp_unixtimestamp), floats by repr.
ITEM_SEPARATOR = ", "
BODY_HEAD = '{{"Namespace": {namespace}, "MetricData": ['
BODY_TAIL = "]}"
# The widest namespace CloudWatch takes (255 characters) with every character escaped as \uXXXX by ensure_ascii.
MAX_NAMESPACE_JSON = 2 + 6 * 255
# What a body holds besides its datums and their separators, at the widest namespace.
BODY_OVERHEAD_BYTES = len(BODY_HEAD.format(namespace="")) + MAX_NAMESPACE_JSON + len(BODY_TAIL)

_dumps = json.dumps


def _timestamp(at: datetime) -> int | float:
    # botocore's _timestamp_unixtimestamp: calendar.timegm of the timetuple, microseconds folded in once.
    seconds = calendar.timegm(at.timetuple())
    if at.microsecond:
        return (seconds * 10**6 + at.microsecond) / 10**6
    return seconds


class _Reprs(dict[float, str]):
    """float -> what json.dumps writes for it, made once per distinct value: histogram buckets and counts repeat
    across the minutes of a batch, and a dict hit costs less than float.__repr__. Zero is never kept (0.0 and -0.0
    are equal keys with different texts); an int that misses raises TypeError, and the caller writes that list with
    json.dumps. (An int equal to a float already kept would get the float's text: the same number on the wire. The
    job's datums hold floats only.)"""

    def __missing__(self, value: float) -> str:
        text = float.__repr__(value)  # TypeError for an int: not kept
        if value:
            self[value] = text
        return text


def _numbers(values: Sequence[float], reprs: _Reprs) -> str:
    try:
        return ITEM_SEPARATOR.join(map(reprs.__getitem__, values))
    except TypeError:  # an int among them (tests, hand-made datums): json.dumps writes it without '.0'
        return ITEM_SEPARATOR.join(map(_dumps, values))


class FragmentCache:
    """The parts datums share (metric names, dimensions, minutes) encoded once: a batch repeats a few of each."""

    def __init__(self) -> None:
        self._heads: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self._tails: dict[tuple[datetime, Unit], str] = {}
        self._reprs = _Reprs()

    def fragment(self, datum: Datum) -> str:
        """The JSON text botocore writes for this datum inside MetricData (ASCII: its length is its bytes)."""
        key = (datum.metric, datum.dimensions)
        head = self._heads.get(key)
        if head is None:
            head = '{"MetricName": ' + _dumps(datum.metric)
            if datum.dimensions:
                dims = ITEM_SEPARATOR.join(
                    f'{{"Name": {_dumps(n)}, "Value": {_dumps(v)}}}' for n, v in datum.dimensions
                )
                head += f', "Dimensions": [{dims}]'
            self._heads[key] = head
        stamp = (datum.timestamp, datum.unit)
        tail = self._tails.get(stamp)
        if tail is None:
            tail = f', "Timestamp": {_timestamp(datum.timestamp)}, "Unit": {_dumps(datum.unit.value)}, '
            self._tails[stamp] = tail
        value = datum.value
        if value is not None:
            number = value.__repr__() if type(value) is float else _dumps(value)
            return f'{head}{tail}"Value": {number}}}'
        reprs = self._reprs
        return f'{head}{tail}"Values": [{_numbers(datum.values, reprs)}], "Counts": [{_numbers(datum.counts, reprs)}]}}'


def fragment(datum: Datum) -> str:
    """One datum's JSON text (no cache: for single datums such as receipts)."""
    return FragmentCache().fragment(datum)


def fragments(datums: Iterable[Datum]) -> list[str]:
    cache = FragmentCache()
    return [cache.fragment(d) for d in datums]


def body(namespace: str, parts: Sequence[str]) -> bytes:
    """The whole PutMetricData body for these datum fragments."""
    text = BODY_HEAD.format(namespace=_dumps(namespace)) + ITEM_SEPARATOR.join(parts) + BODY_TAIL
    return text.encode("ascii")


def body_size(namespace: str, sizes: Sequence[int]) -> int:
    """len(body(namespace, parts)) from the parts' lengths, by arithmetic."""
    separators = len(ITEM_SEPARATOR) * max(0, len(sizes) - 1)
    return len(BODY_HEAD.format(namespace=_dumps(namespace))) + len(BODY_TAIL) + sum(sizes) + separators


def datum_from_fragment(text: str) -> Datum:
    """The datum a fragment encodes (journals, read back on resume)."""
    data: dict[str, Any] = json.loads(text)
    return Datum(
        metric=data["MetricName"],
        dimensions=tuple((d["Name"], d["Value"]) for d in data.get("Dimensions", ())),
        timestamp=datetime.fromtimestamp(data["Timestamp"], UTC),
        unit=Unit(data["Unit"]),
        value=data.get("Value"),
        values=tuple(data.get("Values", ())),
        counts=tuple(data.get("Counts", ())),
    )
