"""CloudWatch limits on datums and requests, checked against botocore's own serializers."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.serialize
import botocore.session
import pytest
from botocore.awsrequest import AWSRequest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from job.core.errors import LimitError
from job.core.limits import MAX_DATUMS_PER_REQUEST, MAX_REQUEST_BYTES, MAX_VALUES_PER_DATUM
from job.core.metrics import Datum, Unit
from job.core.packing import REQUEST_OVERHEAD_BYTES, RequestLimits, check_datums, datum_bytes, lower_bound, pack

NOW = datetime(2026, 11, 28, 16, 0, tzinfo=UTC)
MINUTE = datetime(2026, 11, 28, 15, 4, tzinfo=UTC)
BASE = (("DistributionId", "E2EXAMPLE"),)
NAMESPACE = "CloudFront/AccessLogs"
# the widest namespace CloudWatch takes, every character percent-encoded on the wire
WIDEST_NAMESPACE = "#" * 255
OPERATION = botocore.session.get_session().get_service_model("cloudwatch").operation_model("PutMetricData")
# the protocol botocore 1.44 uses for CloudWatch, and the more compact CBOR the model also lists
PROTOCOLS = ("json", "smithy-rpc-v2-cbor")


def single(value: float = 1.0, timestamp: datetime = MINUTE, metric: str = "Requests") -> Datum:
    return Datum(metric, BASE, timestamp, Unit.COUNT, value=value)


def distribution(n: int, timestamp: datetime = MINUTE, offset: float = 0.0) -> Datum:
    values = tuple(100.0 + offset + i * 1.37 for i in range(n))
    counts = tuple(float(1 + i * 7) for i in range(n))
    return Datum("TimeTaken", BASE, timestamp, Unit.MILLISECONDS, values=values, counts=counts)


def body(request: Sequence[Datum], protocol: str = "json", namespace: str = NAMESPACE) -> bytes:
    """The HTTP body botocore sends for PutMetricData with these datums (validated against the API model)."""
    serializer = botocore.serialize.create_serializer(protocol, include_validation=True)
    params = {"Namespace": namespace, "MetricData": [d.to_api() for d in request]}
    serialized = serializer.serialize_to_request(params, OPERATION)
    payload: Any = serialized["body"]
    if isinstance(payload, dict):  # the query protocol: form-encoded when the request is prepared
        payload = AWSRequest(method="POST", url="https://monitoring.us-east-1.amazonaws.com/", data=payload)
        payload = payload.prepare().body
    return payload.encode() if isinstance(payload, str) else bytes(payload)


def assert_requests_within_limits(requests: Sequence[Sequence[Datum]], namespace: str = NAMESPACE) -> None:
    for request in requests:
        assert 0 < len(request) <= MAX_DATUMS_PER_REQUEST
        encoded = body(request, "json", namespace)
        assert len(encoded) <= MAX_REQUEST_BYTES
        # exact: the body's own bytes, plus each datum's bytes and separator (the first has none)
        head = len(body([], "json", namespace)) - len(", ")
        assert len(encoded) == head + sum(map(datum_bytes, request))


# ---------------------------------------------------------------------------------------------------------------
# check_datums


def test_check_datums_accepts_valid_datums() -> None:
    check_datums([single(), distribution(MAX_VALUES_PER_DATUM)], NOW)


def test_more_than_150_values_is_refused() -> None:
    with pytest.raises(LimitError, match="at most 150 values"):
        check_datums([distribution(MAX_VALUES_PER_DATUM + 1)], None)


def test_values_and_counts_must_pair_up() -> None:
    datum = Datum("TimeTaken", BASE, MINUTE, Unit.MILLISECONDS, values=(1.0, 2.0, 3.0), counts=(1.0, 2.0))
    with pytest.raises(LimitError, match="one count each"):
        check_datums([datum], None)


def test_too_many_dimensions_is_refused() -> None:
    dims = tuple((f"D{i}", "v") for i in range(31))
    with pytest.raises(LimitError, match="31 dimensions"):
        check_datums([Datum("Requests", dims, MINUTE, Unit.COUNT, value=1.0)], None)
    check_datums([Datum("Requests", dims[:30], MINUTE, Unit.COUNT, value=1.0)], None)


@pytest.mark.parametrize(
    "datum",
    [
        single(math.nan),
        single(math.inf),
        single(-math.inf),
        Datum("TimeTaken", BASE, MINUTE, Unit.MILLISECONDS, values=(1.0, math.nan), counts=(1.0, 1.0)),
        Datum("TimeTaken", BASE, MINUTE, Unit.MILLISECONDS, values=(1.0, 2.0), counts=(1.0, math.inf)),
    ],
    ids=["nan", "inf", "-inf", "nan-in-values", "inf-in-counts"],
)
def test_non_finite_numbers_are_refused(datum: Datum) -> None:
    with pytest.raises(LimitError, match="finite"):
        check_datums([single(), datum], None)


@pytest.mark.parametrize(
    "timestamp",
    [NOW - timedelta(days=14, minutes=1), NOW - timedelta(days=30), NOW + timedelta(hours=2, minutes=1)],
    ids=["just-over-two-weeks-old", "a-month-old", "over-two-hours-ahead"],
)
def test_timestamps_outside_cloudwatch_range_are_refused(timestamp: datetime) -> None:
    with pytest.raises(LimitError, match="jsonl") as error:
        check_datums([single(timestamp=timestamp)], NOW)
    assert f"{timestamp:%Y-%m-%dT%H:%M}" in str(error.value)
    check_datums([single(timestamp=timestamp)], None)  # no age check for a jsonl sink


@pytest.mark.parametrize(
    "timestamp",
    [NOW - timedelta(days=14) + timedelta(minutes=1), NOW, NOW + timedelta(hours=2) - timedelta(minutes=1)],
)
def test_timestamps_inside_cloudwatch_range_are_accepted(timestamp: datetime) -> None:
    check_datums([single(timestamp=timestamp)], NOW)


# ---------------------------------------------------------------------------------------------------------------
# pack: limits, exactly once, as few requests as possible


def test_pack_of_nothing() -> None:
    assert pack([]) == []
    assert lower_bound([]) == 0


def test_2500_single_values_take_3_requests() -> None:
    datums = [single(float(i), MINUTE + timedelta(minutes=i % 60)) for i in range(2500)]
    requests = pack(datums)
    assert len(requests) == math.ceil(2500 / 1000) == lower_bound(datums)
    assert Counter(d for r in requests for d in r) == Counter(datums)
    assert_requests_within_limits(requests)


def test_600_full_distributions_are_bound_by_bytes() -> None:
    datums = [distribution(MAX_VALUES_PER_DATUM, MINUTE + timedelta(minutes=i % 60), offset=i) for i in range(600)]
    requests = pack(datums)
    assert Counter(d for r in requests for d in r) == Counter(datums)
    assert_requests_within_limits(requests)
    # bytes, not the datum count, bind: what the datums weigh on the wire needs this many 1 MB requests
    empty = len(body([], "json"))
    actual = sum(len(body(r, "json")) - empty + len(", ") for r in requests)
    assert len(requests) == math.ceil(actual / MAX_REQUEST_BYTES) == lower_bound(datums)
    assert len(requests) > math.ceil(len(datums) / MAX_DATUMS_PER_REQUEST)


def hours_of_metrics(hours: int) -> list[Datum]:
    """What the job publishes for a few busy hours: per minute a total, four result types, three percentiles and
    a 130-bucket time-taken histogram."""
    datums: list[Datum] = []
    for m in range(60 * hours):
        minute = MINUTE + timedelta(minutes=m)
        datums.append(single(1000.0, minute))
        for result_type in ("Hit", "Miss", "RefreshHit", "Error"):
            dims = (*BASE, ("ResultType", result_type))
            datums.append(Datum("Requests", dims, minute, Unit.COUNT, value=250.0))
        for metric in ("TimeTakenP50", "TimeTakenP90", "TimeTakenP99"):
            datums.append(Datum(metric, BASE, minute, Unit.MILLISECONDS, value=float(m % 997)))
        datums.append(distribution(130, minute, offset=m))
    return datums


def balanced_witness(datums: Sequence[Datum], requests: int) -> list[list[Datum]]:
    """An independent packing into a given number of requests: largest first, each into the request with the
    most bytes left (worst fit), so large and small datums spread evenly over both limits."""
    budget = MAX_REQUEST_BYTES - REQUEST_OVERHEAD_BYTES
    free = [budget] * requests
    bins: list[list[Datum]] = [[] for _ in range(requests)]
    for size, datum in sorted(((datum_bytes(d), d) for d in datums), key=lambda t: -t[0]):
        open_bins = [b for b in range(requests) if len(bins[b]) < MAX_DATUMS_PER_REQUEST and free[b] >= size]
        assert open_bins, "the witness does not fit"
        target = max(open_bins, key=lambda b: free[b])
        free[target] -= size
        bins[target].append(datum)
    return bins


def test_busy_hours_fit_in_lower_bound_requests() -> None:
    datums = hours_of_metrics(3)
    witness = balanced_witness(datums, lower_bound(datums))
    assert Counter(d for r in witness for d in r) == Counter(datums)
    assert_requests_within_limits(witness)
    # and pack() never uses fewer than the bound (it is a bound)
    assert len(pack(datums)) >= len(witness)


@pytest.mark.parametrize("hours", [3, 5])
def test_busy_hours_pack_into_lower_bound_requests(hours: int) -> None:
    datums = hours_of_metrics(hours)
    assert len(pack(datums)) == lower_bound(datums)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_wire_protocol_fits_the_estimate(protocol: str) -> None:
    datums = [distribution(MAX_VALUES_PER_DATUM, MINUTE, offset=i) for i in range(70)]
    datums += [
        Datum(
            "Requests",
            (("DistributionId", "E2EXAMPLE"), ("ResultType", 'Ünïcødé "quoted" & spaced/\\ 字' * 3)),
            MINUTE,
            Unit.COUNT,
            value=-1.2345678901234567e-300,
        )
    ] * 50
    for request in pack(datums):
        encoded = body(request, protocol, WIDEST_NAMESPACE)
        assert len(encoded) <= REQUEST_OVERHEAD_BYTES + sum(map(datum_bytes, request)) <= MAX_REQUEST_BYTES


def test_widest_namespace_fits_the_request_overhead() -> None:
    for namespace in (WIDEST_NAMESPACE, "\u2603" * 255, "\x00" * 255):
        rest = len(body([single()], "json", namespace)) - datum_bytes(single())
        assert rest <= REQUEST_OVERHEAD_BYTES


def test_pack_keeps_input_order_within_a_request() -> None:
    datums = [distribution(1 + (i * 37) % MAX_VALUES_PER_DATUM, MINUTE, offset=i) for i in range(400)]
    position = {d: i for i, d in enumerate(datums)}
    assert len(position) == len(datums)
    for request in pack(datums):
        indexes = [position[d] for d in request]
        assert indexes == sorted(indexes)


@pytest.mark.parametrize("datum", [single(), distribution(1)], ids=["value", "values"])
def test_wire_estimate_bounds_a_datum_without_dimensions(datum: Datum) -> None:
    bare = Datum(datum.metric, (), datum.timestamp, datum.unit, datum.value, datum.values, datum.counts)
    assert_requests_within_limits([[bare]])


def test_datum_larger_than_a_request_is_refused() -> None:
    huge = Datum("Requests", (("DistributionId", "x" * MAX_REQUEST_BYTES),), MINUTE, Unit.COUNT, value=1.0)
    with pytest.raises(LimitError, match="exceed one request"):
        pack([single(), huge])


# ---------------------------------------------------------------------------------------------------------------
# properties

TEXT = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
TIMESTAMPS = st.integers(0, 14 * 24 * 60).map(lambda m: NOW - timedelta(minutes=m))


@st.composite
def datums(draw: st.DrawFn, min_dimensions: int = 1) -> Datum:
    """Datums as the job makes them (at least one dimension: DistributionId) with arbitrary names and numbers."""
    metric = draw(st.one_of(st.sampled_from(["Requests", "TimeTaken", "TimeTakenP99"]), TEXT))
    dims = tuple(draw(st.lists(st.tuples(TEXT, TEXT), min_size=min_dimensions, max_size=4)))
    unit = draw(st.sampled_from(list(Unit)))
    timestamp = draw(TIMESTAMPS)
    if draw(st.booleans()):
        return Datum(metric, dims, timestamp, unit, value=draw(FINITE))
    n = draw(st.integers(1, MAX_VALUES_PER_DATUM))
    values = tuple(draw(st.lists(FINITE, min_size=n, max_size=n)))
    counts = tuple(draw(st.lists(st.floats(0, 1e9), min_size=n, max_size=n)))
    return Datum(metric, dims, timestamp, unit, values=values, counts=counts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    st.lists(datums(min_dimensions=0), max_size=40),
    st.integers(1, 7),
    st.integers(4_000, 40_000),
)
def test_pack_property_under_small_limits(items: list[Datum], max_datums: int, max_bytes: int) -> None:
    """Under tightened limits (so both bind with few datums): every datum exactly once, every request within
    both limits, input order kept, never fewer requests than the lower bound."""
    # make every datum distinct so order and identity can be checked
    unique = [Datum(d.metric, (*d.dimensions, ("n", str(i))), d.timestamp, d.unit, d.value, d.values, d.counts)
              for i, d in enumerate(items)]  # fmt: skip
    limits = RequestLimits(max_datums=max_datums, max_bytes=max_bytes)
    if any(datum_bytes(d) > limits.budget for d in unique):
        with pytest.raises(LimitError):
            pack(unique, limits)
        return
    requests = pack(unique, limits)
    bound = lower_bound(unique, limits=limits)
    assert Counter(d for r in requests for d in r) == Counter(unique)
    assert bound <= len(requests)
    position = {d: i for i, d in enumerate(unique)}
    for request in requests:
        assert 0 < len(request) <= max_datums
        assert REQUEST_OVERHEAD_BYTES + sum(map(datum_bytes, request)) <= max_bytes
        assert [position[d] for d in request] == sorted(position[d] for d in request)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(datums(), min_size=1, max_size=30), st.integers(1, 50))
def test_pack_property_real_limits_real_wire(items: list[Datum], copies: int) -> None:
    """With CloudWatch's limits and botocore's serializers: every datum exactly once, every body under 1 MB and
    every datum within its estimate, in all three protocols botocore may use for CloudWatch."""
    batch = items * copies
    check_datums(batch, NOW)
    requests = pack(batch)
    assert Counter(d for r in requests for d in r) == Counter(batch)
    assert len(requests) >= lower_bound(batch)
    assert_requests_within_limits(requests)
    for request in requests:
        for protocol in PROTOCOLS[1:]:
            assert len(body(request, protocol)) <= MAX_REQUEST_BYTES
