"""Tests of the CloudWatch double against a real moto server subprocess and real boto3 clients."""

from __future__ import annotations

import gzip
import json
import math
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tests.cloudwatch_double import CloudWatchDouble, ManualClock, cloudwatch_double, moto_server

Client = Any  # botocore's CloudWatch client (dynamic class)


def make_client(url: str, *, attempts: int = 1, retries: dict[str, Any] | None = None, session: Any = None) -> Client:
    retry_cfg: Any = retries if retries is not None else {"total_max_attempts": attempts, "mode": "standard"}
    factory: Any = boto3.Session(botocore_session=session) if session is not None else boto3
    return factory.client(
        "cloudwatch",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries=retry_cfg),
    )


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    with moto_server(python=sys.executable) as url:
        yield url


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC))


@pytest.fixture
def double(moto_url: str, clock: ManualClock) -> Iterator[CloudWatchDouble]:
    with cloudwatch_double(moto_url, clock=clock, visible_after=timedelta(0)) as d:
        yield d


@pytest.fixture
def cw(double: CloudWatchDouble) -> Client:
    return make_client(double.url)  # no retries


@pytest.fixture
def moto(moto_url: str) -> Client:
    return make_client(moto_url)


@pytest.fixture
def ns() -> str:
    return f"Test/{uuid.uuid4().hex[:10]}"


def dims(**kv: str) -> list[dict[str, str]]:
    return [{"Name": k, "Value": v} for k, v in kv.items()]


def datum(name: str = "Requests", value: float = 1.0, when: datetime | None = None, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"MetricName": name, "Value": value, "Unit": "Count"}
    if when is not None:
        d["Timestamp"] = when
    d.update(extra)
    return d


def gmd(
    cw: Client,
    ns: str,
    metric: str,
    dimensions: list[dict[str, str]],
    *,
    stat: str = "Sum",
    period: int = 60,
    start: datetime,
    end: datetime,
    **kw: Any,
) -> list[tuple[datetime, float]]:
    answer = cw.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "q",
                "MetricStat": {
                    "Metric": {"Namespace": ns, "MetricName": metric, "Dimensions": dimensions},
                    "Period": period,
                    "Stat": stat,
                },
            }
        ],
        StartTime=start,
        EndTime=end,
        **kw,
    )
    result = answer["MetricDataResults"][0]
    assert result["StatusCode"] == "Complete"
    return list(zip(result["Timestamps"], result["Values"], strict=True))


def moto_metric_count(moto: Client, ns: str) -> int:
    return len(moto.list_metrics(Namespace=ns)["Metrics"])


def minute(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)


# ------------------------------------------------------------------ protocol and the happy path


def test_put_is_stored_in_double_and_in_moto(double: CloudWatchDouble, cw: Client, moto: Client, ns: str) -> None:
    now = double.now()
    cw.put_metric_data(Namespace=ns, MetricData=[datum(value=3, when=now, Dimensions=dims(DistributionId="E1"))])
    [point] = double.datapoints(ns)
    assert point.metric == "Requests" and point.dimensions == frozenset({("DistributionId", "E1")})
    assert point.timestamp == minute(now) and point.values == (3.0,) and point.unit == "Count"
    assert point.arrived == now and point.request_seq == 1
    assert double.sum(ns, "Requests", {"DistributionId": "E1"}) == 3
    assert moto_metric_count(moto, ns) == 1  # forwarded: moto holds it too
    assert double.stats.applied_requests == 1 and double.stats.forwarded == {"PutMetricData": 1}


def test_gzipped_body_over_10kb_is_understood(double: CloudWatchDouble, cw: Client, ns: str) -> None:
    now = double.now()
    seen: list[dict[str, str]] = []
    cw.meta.events.register(
        "before-send.cloudwatch.PutMetricData", lambda request, **_: seen.append(dict(request.headers))
    )
    data = [datum(f"M{i}", value=i, when=now, Dimensions=dims(DistributionId="E" * 40)) for i in range(300)]
    cw.put_metric_data(Namespace=ns, MetricData=data)
    assert seen[0].get("Content-Encoding") in ("gzip", b"gzip")
    assert len(double.datapoints(ns)) == 300
    assert double.sum(ns, "M299", {"DistributionId": "E" * 40}) == 299


def test_botocore_speaks_json_1_0(double: CloudWatchDouble, cw: Client, ns: str) -> None:
    seen: list[Any] = []
    cw.meta.events.register("before-send.cloudwatch.PutMetricData", lambda request, **_: seen.append(request))
    cw.put_metric_data(Namespace=ns, MetricData=[datum(when=double.now())])
    headers = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in seen[0].headers.items()}
    assert headers["x-amz-target"] == "GraniteServiceVersion20100801.PutMetricData"
    assert headers["content-type"] == "application/x-amz-json-1.0"
    body = json.loads(seen[0].body)
    assert isinstance(body["MetricData"][0]["Timestamp"], float)  # epoch seconds


# ------------------------------------------------------------------ limits


def too_large_request(now: datetime) -> list[dict[str, Any]]:
    # 1,000 datums of ~1.1 KB each: over 1 MB before gzip, far under after
    return [datum(f"M{i}", when=now, Dimensions=dims(Big="x" * 1024)) for i in range(1000)]


LIMIT_CASES: list[tuple[str, Any, str, int]] = [
    ("1001 datums", lambda now: [datum(f"M{i}", when=now) for i in range(1001)], "InvalidParameterValue", 400),
    ("over 1 MB", too_large_request, "RequestEntityTooLarge", 413),
    (
        "151 values",
        lambda now: [{"MetricName": "M", "Timestamp": now, "Values": list(range(151))}],
        "InvalidParameterValue",
        400,
    ),
    (
        "values/counts differ",
        lambda now: [{"MetricName": "M", "Timestamp": now, "Values": [1, 2, 3], "Counts": [1, 1]}],
        "InvalidParameterValue",
        400,
    ),
    (
        "31 dimensions",
        lambda now: [datum(when=now, Dimensions=[{"Name": f"D{i}", "Value": "v"} for i in range(31)])],
        "InvalidParameterValue",
        400,
    ),
    ("NaN", lambda now: [datum(value=math.nan, when=now)], "InvalidParameterValue", 400),
    ("infinity", lambda now: [datum(value=math.inf, when=now)], "InvalidParameterValue", 400),
    (
        "NaN inside Values",
        lambda now: [{"MetricName": "M", "Timestamp": now, "Values": [1.0, math.nan]}],
        "InvalidParameterValue",
        400,
    ),
    ("15 days old", lambda now: [datum(when=now - timedelta(days=15))], "InvalidParameterValue", 400),
    ("3 hours ahead", lambda now: [datum(when=now + timedelta(hours=3))], "InvalidParameterValue", 400),
    (
        "Value and StatisticValues",
        lambda now: [
            datum(when=now, StatisticValues={"SampleCount": 1, "Sum": 1, "Minimum": 1, "Maximum": 1}),
        ],
        "InvalidParameterCombination",
        400,
    ),
    ("bad unit", lambda now: [datum(when=now, Unit="Furlongs")], "InvalidParameterValue", 400),
]


@pytest.mark.parametrize(("case", "build", "code", "status"), LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES])
def test_limits_are_refused(
    double: CloudWatchDouble, cw: Client, moto: Client, ns: str, case: str, build: Any, code: str, status: int
) -> None:
    with pytest.raises(ClientError) as info:
        cw.put_metric_data(Namespace=ns, MetricData=build(double.now()))
    assert info.value.response["Error"]["Code"] == code, case
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert double.datapoints(ns) == []
    assert moto_metric_count(moto, ns) == 0  # not forwarded
    assert double.stats.rejected == {code: 1} and double.stats.forwarded == {}


def test_edges_of_the_limits_are_accepted(double: CloudWatchDouble, cw: Client, ns: str) -> None:
    now = double.now()
    data = [{"MetricName": "Dist", "Timestamp": now, "Values": list(range(150)), "Counts": [2] * 150}]
    data.append(
        datum(when=now - timedelta(days=13, hours=23), Dimensions=[{"Name": f"D{i}", "Value": "v"} for i in range(30)])
    )
    data.append(datum(when=now + timedelta(hours=1, minutes=59)))
    data.extend(datum(f"M{i}", when=now) for i in range(997))
    cw.put_metric_data(Namespace=ns, MetricData=data)
    assert len(double.datapoints(ns)) == 1000
    assert double.sample_count(ns, "Dist", {}) == 300


def test_aws_namespace_is_refused(double: CloudWatchDouble, cw: Client) -> None:
    with pytest.raises(ClientError) as info:
        cw.put_metric_data(Namespace="AWS/CloudFront", MetricData=[datum(when=double.now())])
    assert info.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert double.datapoints() == []


def test_request_lands_whole_or_not_at_all(double: CloudWatchDouble, cw: Client, moto: Client, ns: str) -> None:
    now = double.now()
    good = [datum(f"M{i}", value=i, when=now) for i in range(5)]
    with pytest.raises(ClientError):
        cw.put_metric_data(Namespace=ns, MetricData=[*good[:3], datum("Bad", value=math.nan, when=now), *good[3:]])
    assert double.datapoints(ns) == [] and moto_metric_count(moto, ns) == 0
    cw.put_metric_data(Namespace=ns, MetricData=good)
    assert len(double.datapoints(ns)) == 5 and moto_metric_count(moto, ns) == 5
    assert double.stats.applied_requests == 1


# ------------------------------------------------------------------ faults, no retries


def test_request_lost(double: CloudWatchDouble, cw: Client, moto: Client, ns: str) -> None:
    double.script("request_lost")
    with pytest.raises(ClientError) as info:
        cw.put_metric_data(Namespace=ns, MetricData=[datum(when=double.now())])
    assert info.value.response["Error"]["Code"] == "InternalServiceError"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert double.datapoints(ns) == [] and moto_metric_count(moto, ns) == 0
    assert double.stats.faults == {"request_lost": 1} and double.stats.applied_requests == 0


def test_throttle(double: CloudWatchDouble, cw: Client, moto: Client, ns: str) -> None:
    double.script("throttle")
    with pytest.raises(ClientError) as info:
        cw.put_metric_data(Namespace=ns, MetricData=[datum(when=double.now())])
    assert info.value.response["Error"]["Code"] == "Throttling"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert double.datapoints(ns) == [] and moto_metric_count(moto, ns) == 0


def test_answer_lost(double: CloudWatchDouble, cw: Client, moto: Client, ns: str) -> None:
    double.script("answer_lost")
    with pytest.raises(ClientError) as info:
        cw.put_metric_data(Namespace=ns, MetricData=[datum(value=4, when=double.now())])
    assert info.value.response["Error"]["Code"] == "InternalServiceError"
    assert double.sum(ns, "Requests", {}) == 4  # it landed although the client saw a failure
    assert moto_metric_count(moto, ns) == 1
    assert double.stats.applied_requests == 1 and double.stats.faults == {"answer_lost": 1}


def test_connection_dropped(double: CloudWatchDouble, cw: Client, moto: Client, ns: str) -> None:
    double.script("connection_dropped")
    with pytest.raises(ConnectionClosedError):
        cw.put_metric_data(Namespace=ns, MetricData=[datum(value=4, when=double.now())])
    assert double.sum(ns, "Requests", {}) == 4
    assert moto_metric_count(moto, ns) == 1
    cw.put_metric_data(Namespace=ns, MetricData=[datum(value=1, when=double.now())])  # the client recovers
    assert double.sum(ns, "Requests", {}) == 5


def test_scripted_queue_hits_the_next_n_requests_of_its_operation(
    double: CloudWatchDouble, cw: Client, ns: str
) -> None:
    double.script("answer_lost", 2)
    outcomes = []
    for i in range(3):
        cw.list_metrics(Namespace=ns)  # another operation: does not consume the script
        try:
            cw.put_metric_data(Namespace=ns, MetricData=[datum(value=1, when=double.now())])
            outcomes.append("ok")
        except ClientError:
            outcomes.append(f"err{i}")
    assert outcomes == ["err0", "err1", "ok"]
    assert double.sum(ns, "Requests", {}) == 3 and double.pending_faults() == []


def test_faults_on_another_operation(double: CloudWatchDouble, cw: Client, ns: str) -> None:
    double.script("throttle", operation="ListMetrics")
    cw.put_metric_data(Namespace=ns, MetricData=[datum(when=double.now())])
    with pytest.raises(ClientError) as info:
        cw.list_metrics(Namespace=ns)
    assert info.value.response["Error"]["Code"] == "Throttling"
    assert len(cw.list_metrics(Namespace=ns)["Metrics"]) == 1


def run_random(moto_url: str, seed: int, ns: str) -> tuple[list[str], CloudWatchDouble]:
    outcomes: list[str] = []
    with cloudwatch_double(
        moto_url, visible_after=timedelta(0), seed=seed, fault_rates={"request_lost": 0.2, "answer_lost": 0.2}
    ) as d:
        client = make_client(d.url)
        for _ in range(40):
            try:
                client.put_metric_data(Namespace=ns, MetricData=[datum(value=1)])
                outcomes.append("ok")
            except ClientError:
                outcomes.append("err")
    return outcomes, d


def test_random_faults_are_reproducible_with_a_seed(moto_url: str) -> None:
    first, d1 = run_random(moto_url, 7, f"Test/{uuid.uuid4().hex}")
    second, d2 = run_random(moto_url, 7, f"Test/{uuid.uuid4().hex}")
    assert first == second and d1.stats.faults == d2.stats.faults
    faults = d1.stats.faults
    assert 0 < faults.get("request_lost", 0) < 40 and 0 < faults.get("answer_lost", 0) < 40
    assert d1.stats.applied_requests == first.count("ok") + faults["answer_lost"]
    third, _ = run_random(moto_url, 8, f"Test/{uuid.uuid4().hex}")
    assert third != first


def test_set_random_faults_on_a_running_double(double: CloudWatchDouble, cw: Client, ns: str) -> None:
    double.set_random_faults({"throttle": 1.0}, seed=1)
    with pytest.raises(ClientError):
        cw.put_metric_data(Namespace=ns, MetricData=[datum(when=double.now())])
    double.clear_faults()
    cw.put_metric_data(Namespace=ns, MetricData=[datum(when=double.now())])
    assert double.stats.faults == {"throttle": 1} and double.stats.applied_requests == 1


# ------------------------------------------------------------------ faults with botocore's retries


@pytest.mark.parametrize("kind", ["answer_lost", "connection_dropped"])
def test_retry_after_a_lost_answer_counts_twice(
    double: CloudWatchDouble, moto: Client, ns: str, clock: ManualClock, kind: Any
) -> None:
    retrying = make_client(double.url, attempts=3)
    double.script(kind)
    now = double.now()
    retrying.put_metric_data(Namespace=ns, MetricData=[datum(value=10, when=now)])  # "succeeds"
    assert double.stats.applied_requests == 2
    assert double.sum(ns, "Requests", {}) == 20  # the bug the job must avoid
    assert gmd(retrying, ns, "Requests", [], start=now - timedelta(minutes=5), end=now + timedelta(minutes=5)) == [
        (minute(now), 20.0)
    ]
    stats = moto.get_metric_statistics(
        Namespace=ns,
        MetricName="Requests",
        StartTime=now - timedelta(minutes=5),
        EndTime=now + timedelta(minutes=5),
        Period=60,
        Statistics=["Sum"],
    )
    assert [p["Sum"] for p in stats["Datapoints"]] == [20.0]  # moto got both too


@pytest.mark.parametrize("kind", ["request_lost", "throttle"])
def test_retry_after_a_refusal_counts_once(double: CloudWatchDouble, ns: str, kind: Any) -> None:
    retrying = make_client(double.url, attempts=3)
    double.script(kind)
    retrying.put_metric_data(Namespace=ns, MetricData=[datum(value=10, when=double.now())])
    assert double.stats.applied_requests == 1 and double.sum(ns, "Requests", {}) == 10


def test_trap_max_attempts_1_still_retries_once(double: CloudWatchDouble, ns: str) -> None:
    # botocore's legacy `max_attempts` counts RETRIES: {"max_attempts": 1} is two attempts in total.
    client = make_client(double.url, retries={"max_attempts": 1, "mode": "standard"})
    double.script("answer_lost")
    client.put_metric_data(Namespace=ns, MetricData=[datum(value=1, when=double.now())])  # no error seen...
    assert double.stats.requests["PutMetricData"] == 2 and double.sum(ns, "Requests", {}) == 2  # ...counted twice
    no_retry = make_client(double.url, retries={"max_attempts": 0, "mode": "standard"})
    double.script("answer_lost")
    with pytest.raises(ClientError):
        no_retry.put_metric_data(Namespace=ns, MetricData=[datum(value=1, when=double.now())])


# ------------------------------------------------------------------ visibility


def test_old_datapoint_is_held_until_released(
    double: CloudWatchDouble, cw: Client, ns: str, clock: ManualClock
) -> None:
    now = double.now()
    old = now - timedelta(hours=5)
    cw.put_metric_data(Namespace=ns, MetricData=[datum(value=7, when=old), datum(value=1, when=now)])
    window: dict[str, Any] = {"start": old - timedelta(minutes=1), "end": now + timedelta(minutes=1)}
    assert gmd(cw, ns, "Requests", [], **window) == [(minute(now), 1.0)]  # the recent one only
    clock.advance(timedelta(hours=1))
    assert gmd(cw, ns, "Requests", [], **window) == [(minute(now), 1.0)]  # still held an hour later
    assert double.held_count() == 1
    assert double.sum(ns, "Requests", {}) == 8 and double.sum(ns, "Requests", {}, visible_only=True) == 1
    assert double.release_held() == 1
    assert gmd(cw, ns, "Requests", [], **window) == [(minute(now), 1.0), (minute(old), 7.0)]  # newest first


def test_old_datapoint_with_a_maximum_hold(moto_url: str, clock: ManualClock, ns: str) -> None:
    with cloudwatch_double(
        moto_url, clock=clock, visible_after=timedelta(0), held_visible_after=timedelta(hours=2)
    ) as d:
        cw = make_client(d.url)
        old = d.now() - timedelta(hours=5)
        cw.put_metric_data(Namespace=ns, MetricData=[datum(value=7, when=old)])
        window: dict[str, Any] = {"start": old - timedelta(minutes=1), "end": d.now()}
        clock.advance(timedelta(hours=1, minutes=59))
        assert gmd(cw, ns, "Requests", [], **window) == []
        clock.advance(timedelta(minutes=1))
        assert gmd(cw, ns, "Requests", [], **window) == [(minute(old), 7.0)]


def test_recent_datapoint_visible_after_a_short_delay(moto_url: str, clock: ManualClock, ns: str) -> None:
    with cloudwatch_double(moto_url, clock=clock) as d:  # default visible_after: 2 s
        cw = make_client(d.url)
        now = d.now()
        cw.put_metric_data(Namespace=ns, MetricData=[datum(value=2, when=now - timedelta(minutes=30))])
        window: dict[str, Any] = {"start": now - timedelta(hours=1), "end": now + timedelta(minutes=1)}
        assert gmd(cw, ns, "Requests", [], **window) == []
        clock.advance(timedelta(seconds=1))
        assert gmd(cw, ns, "Requests", [], **window) == []
        clock.advance(timedelta(seconds=1))
        assert gmd(cw, ns, "Requests", [], **window) == [(minute(now - timedelta(minutes=30)), 2.0)]


def test_real_clock_delay(moto_url: str, ns: str) -> None:
    with cloudwatch_double(moto_url, visible_after=timedelta(seconds=0.5)) as d:
        cw = make_client(d.url)
        now = d.now()
        cw.put_metric_data(Namespace=ns, MetricData=[datum(value=2, when=now)])
        window: dict[str, Any] = {"start": now - timedelta(minutes=1), "end": now + timedelta(minutes=1)}
        assert gmd(cw, ns, "Requests", [], **window) == []
        time.sleep(0.6)
        assert gmd(cw, ns, "Requests", [], **window) == [(minute(now), 2.0)]


# ------------------------------------------------------------------ GetMetricData matching and statistics


def test_exact_dimension_set_matching(double: CloudWatchDouble, cw: Client, moto: Client, ns: str) -> None:
    now = double.now()
    cw.put_metric_data(
        Namespace=ns,
        MetricData=[
            datum(value=10, when=now, Dimensions=dims(DistributionId="E1")),
            datum(value=7, when=now, Dimensions=dims(DistributionId="E1", ResultType="Hit")),
            datum(value=3, when=now, Dimensions=dims(ResultType="Hit", DistributionId="E1")),  # same set, other order
        ],
    )
    window: dict[str, Any] = {"start": now - timedelta(minutes=2), "end": now + timedelta(minutes=2)}
    assert gmd(cw, ns, "Requests", dims(DistributionId="E1"), **window) == [(minute(now), 10.0)]
    assert gmd(cw, ns, "Requests", dims(DistributionId="E1", ResultType="Hit"), **window) == [(minute(now), 10.0)]
    assert gmd(cw, ns, "Requests", [], **window) == []  # no dimensionless series exists
    assert gmd(cw, ns, "Requests", dims(DistributionId="E2"), **window) == []
    # moto, for contrast (platform notes): GetMetricStatistics adds the series with more dimensions
    moto_sum = moto.get_metric_statistics(
        Namespace=ns,
        MetricName="Requests",
        Dimensions=dims(DistributionId="E1"),
        Period=60,
        Statistics=["Sum"],
        StartTime=window["start"],
        EndTime=window["end"],
    )["Datapoints"]
    assert [p["Sum"] for p in moto_sum] == [20.0]  # 10 + the 10 of {DistributionId,ResultType}


def test_namespace_matching(double: CloudWatchDouble, cw: Client, ns: str) -> None:
    now = double.now()
    other = ns + "-other"
    cw.put_metric_data(Namespace=ns, MetricData=[datum(value=1, when=now, Dimensions=dims(DistributionId="E1"))])
    cw.put_metric_data(Namespace=other, MetricData=[datum(value=5, when=now, Dimensions=dims(DistributionId="E1"))])
    window: dict[str, Any] = {"start": now - timedelta(minutes=2), "end": now + timedelta(minutes=2)}
    assert gmd(cw, ns, "Requests", dims(DistributionId="E1"), **window) == [(minute(now), 1.0)]
    assert gmd(cw, other, "Requests", dims(DistributionId="E1"), **window) == [(minute(now), 5.0)]
    assert gmd(cw, ns + "-none", "Requests", dims(DistributionId="E1"), **window) == []


def test_statistics_periods_and_window(double: CloudWatchDouble, cw: Client, ns: str) -> None:
    base = minute(double.now()) - timedelta(minutes=30)
    base = base.replace(minute=base.minute - base.minute % 5)
    cw.put_metric_data(
        Namespace=ns,
        MetricData=[
            {"MetricName": "TT", "Timestamp": base, "Values": [1, 2, 3, 10], "Counts": [50, 30, 19, 1]},
            {"MetricName": "TT", "Timestamp": base + timedelta(seconds=30), "Value": 5},
            {"MetricName": "TT", "Timestamp": base + timedelta(minutes=1), "Values": [4], "Counts": [2]},
            {"MetricName": "TT", "Timestamp": base + timedelta(minutes=5), "Value": 100},
        ],
    )
    end = base + timedelta(minutes=10)

    def one(stat: str, period: int = 60, start: datetime = base, until: datetime = end) -> list[tuple[datetime, float]]:
        return gmd(cw, ns, "TT", [], stat=stat, period=period, start=start, end=until, ScanBy="TimestampAscending")

    assert one("SampleCount") == [(base, 101.0), (base + timedelta(minutes=1), 2.0), (base + timedelta(minutes=5), 1.0)]
    assert one("Sum")[0] == (base, 50 + 60 + 57 + 10 + 5.0)
    assert one("Minimum")[0][1] == 1 and one("Maximum")[0][1] == 10
    assert one("Average")[0][1] == pytest.approx(182 / 101)
    assert one("p50")[0][1] == 2 and one("p90")[0][1] == 3 and one("p99")[0][1] == 5
    assert one("Sum", period=300) == [(base, 190.0), (base + timedelta(minutes=5), 100.0)]
    assert one("Sum", start=base + timedelta(minutes=1), until=base + timedelta(minutes=5)) == [
        (base + timedelta(minutes=1), 8.0)  # EndTime exclusive
    ]
    descending = gmd(cw, ns, "TT", [], stat="Sum", start=base, end=end)
    assert [ts for ts, _ in descending] == sorted((ts for ts, _ in descending), reverse=True)


def test_percentiles_unavailable_from_statistic_sets(double: CloudWatchDouble, cw: Client, ns: str) -> None:
    now = minute(double.now())
    cw.put_metric_data(
        Namespace=ns,
        MetricData=[
            {
                "MetricName": "S",
                "Timestamp": now,
                "StatisticValues": {"SampleCount": 4, "Sum": 10, "Minimum": 1, "Maximum": 4},
            }
        ],
    )
    window: dict[str, Any] = {"start": now, "end": now + timedelta(minutes=1)}
    assert gmd(cw, ns, "S", [], stat="p50", **window) == []
    assert gmd(cw, ns, "S", [], stat="Average", **window) == [(now, 2.5)]


def test_unit_filter(double: CloudWatchDouble, cw: Client, ns: str) -> None:
    now = minute(double.now())
    cw.put_metric_data(Namespace=ns, MetricData=[datum(value=1, when=now), datum(value=2, when=now, Unit="Seconds")])
    answer = cw.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "all",
                "MetricStat": {"Metric": {"Namespace": ns, "MetricName": "Requests"}, "Period": 60, "Stat": "Sum"},
            },
            {
                "Id": "secs",
                "MetricStat": {
                    "Metric": {"Namespace": ns, "MetricName": "Requests"},
                    "Period": 60,
                    "Stat": "Sum",
                    "Unit": "Seconds",
                },
            },
        ],
        StartTime=now,
        EndTime=now + timedelta(minutes=1),
    )
    assert [r["Values"] for r in answer["MetricDataResults"]] == [[3.0], [2.0]]


def test_more_than_500_queries_refused(double: CloudWatchDouble, cw: Client, ns: str) -> None:
    query = {"MetricStat": {"Metric": {"Namespace": ns, "MetricName": "M"}, "Period": 60, "Stat": "Sum"}}
    now = double.now()
    ok = cw.get_metric_data(
        MetricDataQueries=[{"Id": f"q{i}", **query} for i in range(500)],
        StartTime=now - timedelta(hours=1),
        EndTime=now,
    )
    assert len(ok["MetricDataResults"]) == 500
    with pytest.raises(ClientError) as info:
        cw.get_metric_data(
            MetricDataQueries=[{"Id": f"q{i}", **query} for i in range(501)],
            StartTime=now - timedelta(hours=1),
            EndTime=now,
        )
    assert info.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_max_datapoints_and_next_token(double: CloudWatchDouble, cw: Client, ns: str) -> None:
    base = minute(double.now()) - timedelta(minutes=20)
    cw.put_metric_data(Namespace=ns, MetricData=[datum(value=i, when=base + timedelta(minutes=i)) for i in range(10)])
    pages = cw.get_paginator("get_metric_data").paginate(
        MetricDataQueries=[
            {
                "Id": "q",
                "MetricStat": {"Metric": {"Namespace": ns, "MetricName": "Requests"}, "Period": 60, "Stat": "Sum"},
            }
        ],
        StartTime=base,
        EndTime=base + timedelta(minutes=10),
        MaxDatapoints=4,
        ScanBy="TimestampAscending",
    )
    values = [r["Values"] for page in pages for r in page["MetricDataResults"]]
    assert values == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0]]


def test_get_metric_data_is_not_forwarded(double: CloudWatchDouble, cw: Client, ns: str) -> None:
    now = double.now()
    gmd(cw, ns, "Requests", [], start=now - timedelta(minutes=1), end=now)
    assert double.stats.requests == {"GetMetricData": 1} and double.stats.forwarded == {}


# ------------------------------------------------------------------ forwarding


def test_list_metrics_and_dashboards_are_forwarded(double: CloudWatchDouble, cw: Client, ns: str) -> None:
    now = double.now()
    cw.put_metric_data(Namespace=ns, MetricData=[datum(when=now, Dimensions=dims(DistributionId="E1"))])
    listed = cw.list_metrics(Namespace=ns)["Metrics"]
    assert listed == [{"Namespace": ns, "MetricName": "Requests", "Dimensions": dims(DistributionId="E1")}]
    name = f"dash-{uuid.uuid4().hex[:8]}"
    cw.put_dashboard(DashboardName=name, DashboardBody=json.dumps({"widgets": []}))
    assert json.loads(cw.get_dashboard(DashboardName=name)["DashboardBody"]) == {"widgets": []}
    with pytest.raises(ClientError) as info:  # moto's error relayed as is
        cw.get_dashboard(DashboardName=name + "-missing")
    assert info.value.response["Error"]["Code"] == "ResourceNotFound"
    assert double.stats.forwarded == {"PutMetricData": 1, "ListMetrics": 1, "PutDashboard": 1, "GetDashboard": 2}


# ------------------------------------------------------------------ query protocol, concurrency


@pytest.fixture
def query_session(tmp_path: Path) -> Any:
    """A botocore session whose CloudWatch model says `query`, so the client sends Action=... forms."""
    session = botocore.session.get_session()
    loader = session.get_component("data_loader")
    model = loader.load_service_model("cloudwatch", "service-2")
    model["metadata"]["protocol"] = "query"
    model["metadata"]["protocols"] = ["query"]
    target = tmp_path / "cloudwatch" / model["metadata"]["apiVersion"]
    target.mkdir(parents=True)
    (target / "service-2.json.gz").write_bytes(gzip.compress(json.dumps(model).encode()))
    loader.search_paths.insert(0, str(tmp_path))
    return session


def test_query_protocol(double: CloudWatchDouble, query_session: Any, ns: str) -> None:
    cw = make_client(double.url, session=query_session)
    seen: list[Any] = []
    cw.meta.events.register("before-send.cloudwatch.PutMetricData", lambda request, **_: seen.append(request))
    now = minute(double.now())
    cw.put_metric_data(
        Namespace=ns,
        MetricData=[
            {
                "MetricName": "TT",
                "Timestamp": now,
                "Dimensions": dims(DistributionId="E1"),
                "Values": [1, 2],
                "Counts": [3, 4],
            }
        ],
    )
    assert b"Action=PutMetricData" in seen[0].body
    assert double.sum(ns, "TT", {"DistributionId": "E1"}) == 11
    assert gmd(cw, ns, "TT", dims(DistributionId="E1"), start=now, end=now + timedelta(minutes=1)) == [(now, 11.0)]
    with pytest.raises(ClientError) as info:
        cw.put_metric_data(Namespace=ns, MetricData=[datum(value=1, when=now - timedelta(days=20))])
    assert info.value.response["Error"]["Code"] == "InvalidParameterValue"
    double.script("throttle")
    with pytest.raises(ClientError) as info:
        cw.put_metric_data(Namespace=ns, MetricData=[datum(value=1, when=now)])
    assert info.value.response["Error"]["Code"] == "Throttling"
    assert cw.list_metrics(Namespace=ns)["Metrics"][0]["MetricName"] == "TT"


def test_concurrent_puts_are_all_counted(double: CloudWatchDouble, ns: str) -> None:
    def worker(k: int) -> None:
        client = make_client(double.url)
        for _ in range(10):
            client.put_metric_data(
                Namespace=ns, MetricData=[datum(value=1, when=double.now(), Dimensions=dims(W=str(k)))]
            )

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert double.stats.applied_requests == 80
    assert sorted(p.request_seq for p in double.datapoints(ns)) == list(range(1, 81))
    assert all(double.sum(ns, "Requests", {"W": str(k)}) == 10 for k in range(8))
