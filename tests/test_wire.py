"""The pre-serialised PutMetricData bodies are the bytes botocore's own JSON 1.0 serializer writes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import botocore.serialize
import botocore.session
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from job.core import wire
from job.core.metrics import Datum, Unit
from job.core.receipts import receipt_datum

OPERATION = botocore.session.get_session().get_service_model("cloudwatch").operation_model("PutMetricData")
MINUTE = datetime(2026, 11, 28, 15, 4, tzinfo=UTC)
BASE = (("DistributionId", "E2EXAMPLE"),)


def botocore_body(namespace: str, datums: list[Datum]) -> bytes:
    serializer = botocore.serialize.create_serializer("json", include_validation=True)
    params = {"Namespace": namespace, "MetricData": [d.to_api() for d in datums]}
    payload: Any = serializer.serialize_to_request(params, OPERATION)["body"]
    return bytes(payload)


CASES = [
    [Datum("Requests", BASE, MINUTE, Unit.COUNT, value=5.0)],
    [Datum("Requests", (), MINUTE, Unit.COUNT, value=0.0)],
    [Datum("TimeTaken", BASE, MINUTE, Unit.MILLISECONDS, values=(1.5, 1e-7, 123456789.125), counts=(1.0, 2.0, 3e20))],
    [Datum('R\u00e9quêtes "q" \\ \n', (("Dïst", "\u2603 ☃ \U0001f600"),), MINUTE, Unit.BYTES, value=-0.1)],
    [
        Datum("Ints", BASE, MINUTE, Unit.NONE, value=7),
        Datum("I", BASE, MINUTE, Unit.NONE, values=(1, 2), counts=(3, 4)),
    ],
    [  # repeated values across datums (kept once), and the two zeros, whose texts differ
        Datum("T", BASE, MINUTE, Unit.MILLISECONDS, values=(0.0, 1.5, -0.0), counts=(2.0, 1.5, 0.0)),
        Datum("T", BASE, MINUTE, Unit.MILLISECONDS, values=(-0.0, 1.5, 0.0), counts=(-0.0, 2.0, 1.5)),
    ],
    [receipt_datum("0123456789abcdef", "metrics", datetime(2026, 11, 28, 15, 4, 59, 999_999, tzinfo=UTC))],
    [Datum("Sub", BASE, datetime(2026, 11, 28, 15, 4, 1, 3691, tzinfo=UTC), Unit.SECONDS, value=1.0)],
]


@pytest.mark.parametrize("datums", CASES)
def test_body_is_what_botocore_writes(datums: list[Datum]) -> None:
    namespace = 'CloudFront/Accéss "Logs"'
    ours = wire.body(namespace, wire.fragments(datums))
    theirs = botocore_body(namespace, datums)
    assert ours == theirs
    assert json.loads(ours) == json.loads(theirs)
    assert wire.body_size(namespace, [len(f) for f in wire.fragments(datums)]) == len(theirs)


@pytest.mark.parametrize("datums", CASES)
def test_fragment_reads_back_as_its_datum(datums: list[Datum]) -> None:
    for datum in datums:
        back = wire.datum_from_fragment(wire.fragment(datum))
        assert back == datum and back.key == datum.key and back.samples == datum.samples


finite = st.floats(allow_nan=False, allow_infinity=False)
text = st.text(min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            text,
            st.lists(st.tuples(text, text), max_size=4),
            st.integers(0, 10**10),
            st.sampled_from(list(Unit)),
            st.one_of(
                finite.map(lambda v: ((v,), ())),
                st.lists(st.tuples(finite, finite), min_size=1, max_size=5).map(
                    lambda p: (tuple(a for a, _ in p), tuple(b for _, b in p))
                ),
            ),
        ),
        min_size=1,
        max_size=8,
    ),
    text,
)
def test_any_datums_serialise_like_botocore(raw: list[Any], namespace: str) -> None:
    datums = []
    for metric, dims, seconds, unit, (values, counts) in raw:
        at = datetime.fromtimestamp(seconds, UTC)
        if counts:
            datums.append(Datum(metric, tuple(dims), at, unit, values=values, counts=counts))
        else:
            datums.append(Datum(metric, tuple(dims), at, unit, value=values[0]))
    theirs = botocore_body(namespace, datums)
    parts = wire.fragments(datums)
    assert wire.body(namespace, parts) == theirs
    assert wire.body_size(namespace, [len(p) for p in parts]) == len(theirs)


def test_overhead_bounds_the_widest_namespace() -> None:
    widest = "\u2603" * 255
    assert wire.body_size(widest, []) == wire.BODY_OVERHEAD_BYTES == len(botocore_body(widest, []))
