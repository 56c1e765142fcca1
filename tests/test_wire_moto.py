"""The pre-serialised PutMetricData path against the moto server: the same datapoints land as through boto3's
own serialisation, gzipped by the sink and signed by botocore."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

from job.adapters import aws
from job.adapters.sinks import CloudWatchSink
from job.core import wire
from job.core.metrics import Datum, Unit
from job.core.packing import pack_wire
from tests.conftest import REGION, MetricQuery, MetricReader, unique_distribution


def job_datums(distribution_id: str, start: datetime) -> list[Datum]:
    base = (("DistributionId", distribution_id),)
    datums = []
    for m in range(30):
        at = start + timedelta(minutes=m)
        datums.append(Datum("Requests", base, at, Unit.COUNT, value=float(100 + m)))
        datums.append(Datum("Requests", (*base, ("ResultType", "Hit")), at, Unit.COUNT, value=float(60 + m)))
        values = tuple(float(v) for v in range(1, 140, 3))
        counts = tuple(float(1 + (i * m) % 17) for i in range(len(values)))
        datums.append(Datum("TimeTaken", base, at, Unit.MILLISECONDS, values=values, counts=counts))
    return datums


def test_put_wire_lands_what_put_lands(moto_endpoint: str, namespace: str) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    wired = aws.client(boto3.session.Session(region_name=REGION), "cloudwatch", moto_endpoint)
    default = boto3.session.Session(region_name=REGION).client("cloudwatch", endpoint_url=moto_endpoint)
    sent: list[Any] = []
    wired.meta.events.register("before-send.cloudwatch.PutMetricData", lambda request, **_: sent.append(request))
    new_sink, old_sink = CloudWatchSink(wired), CloudWatchSink(default)
    assert new_sink.speaks_json and new_sink.gzips and not old_sink.gzips
    ids = {path: unique_distribution(namespace, path) for path in ("new", "old")}
    requests, fragments = pack_wire(job_datums(ids["new"], start))
    for request, parts in zip(requests, fragments, strict=True):
        new_sink.put_wire(namespace, request, parts)
    for request in pack_wire(job_datums(ids["old"], start))[0]:
        old_sink.put(namespace, request)
    # what went on the wire: the sink's body, gzipped, with its Content-Encoding, signed by botocore
    assert len(sent) == len(requests)
    for request, parts in zip(sent, fragments, strict=True):
        assert request.headers["Content-Encoding"] in ("gzip", b"gzip")
        assert gzip.decompress(request.body) == wire.body(namespace, parts)
        assert b"AWS4-HMAC-SHA256" in request.headers["Authorization"]
    reader = MetricReader(default, namespace)
    end = start + timedelta(minutes=31)
    series = [("Requests", ()), ("Requests", (("ResultType", "Hit"),)), ("TimeTaken", ())]
    for stat in ("Sum", "SampleCount", "Minimum", "Maximum"):
        got = {
            path: reader.read(
                [MetricQuery(m, (("DistributionId", ids[path]), *extra), stat) for m, extra in series], start, end
            )
            for path in ids
        }
        assert got["new"] == got["old"], stat
        assert all(len(found) == 30 for found in got["new"]), stat


def test_a_client_of_another_protocol_gets_the_datums_through_boto3(moto_endpoint: str, namespace: str) -> None:
    client = boto3.session.Session(region_name=REGION).client("cloudwatch", endpoint_url=moto_endpoint)
    sink = CloudWatchSink(client)
    sink.speaks_json = False  # as for a botocore that picks the query or CBOR protocol
    distribution_id = unique_distribution(namespace, "fallback")
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    datums = job_datums(distribution_id, start)[:3]
    sink.put_wire(namespace, datums, ["not json"] * len(datums))  # the fragments are not used
    reader = MetricReader(client, namespace)
    found = reader.sums("Requests", [("DistributionId", distribution_id)], start, start + timedelta(minutes=2))
    assert found == {start: 100.0}
