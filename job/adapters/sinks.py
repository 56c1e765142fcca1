"""Where datums go: CloudWatch through boto3, a JSON-lines file, or a dry-run printout."""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Sequence
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError

from job.core.errors import PublishError
from job.core.limits import MAX_QUERIES_PER_GET
from job.core.metrics import Datum, DatumKey

# Real CloudWatch usually shows a datapoint within a minute or two of PutMetricData; wait this long before
# deciding from a read that an interrupted request did not arrive.
CLOUDWATCH_SETTLE = timedelta(minutes=3)


class PublishAmbiguous(PublishError):
    """CloudWatch may have taken a request whose answer was lost (5xx, read timeout, connection dropped)."""


def _no_blind_retry(response: Any, caught_exception: Exception | None, **_: Any) -> None:
    """botocore's retry hook for PutMetricData: retrying an answer that does not prove the request was refused
    could count its datums twice, so such an answer stops the run instead. The request stays marked in flight,
    and the next run reads CloudWatch back to tell whether it arrived. Throttling (a refusal) and connections
    that never opened are left to botocore's retries."""
    if caught_exception is not None:
        if isinstance(caught_exception, ConnectTimeoutError | EndpointConnectionError):
            return None  # the request never reached CloudWatch
        raise PublishAmbiguous(
            f"PutMetricData: no answer ({caught_exception}); CloudWatch may have taken the request, so it is not "
            "sent again blindly: the next run reads CloudWatch back and sends it only if it did not arrive"
        ) from caught_exception
    if response is not None and response[0].status_code >= 500:
        raise PublishAmbiguous(
            f"PutMetricData: CloudWatch answered {response[0].status_code}, which does not say whether it took the "
            "request; it is not sent again blindly: the next run reads CloudWatch back and decides"
        )
    return None


class CloudWatchSink:
    """PutMetricData through an injected boto3 CloudWatch client (retries come from botocore's retry mode)."""

    checks_timestamp_age = True

    def __init__(self, client: Any, key: str = "cloudwatch", settle: timedelta = CLOUDWATCH_SETTLE) -> None:
        self.client = client
        self.key = key
        self.settle = settle
        if client is not None:
            client.meta.events.register_first("needs-retry.cloudwatch.PutMetricData", _no_blind_retry)

    def sample_counts(self, namespace: str, keys: Collection[DatumKey]) -> dict[DatumKey, float] | None:
        ordered = sorted(keys, key=lambda k: (k[2], k[0], k[1]))
        found: dict[DatumKey, float] = dict.fromkeys(ordered, 0.0)
        for start in range(0, len(ordered), MAX_QUERIES_PER_GET):
            chunk = ordered[start : start + MAX_QUERIES_PER_GET]
            queries = [
                {
                    "Id": f"q{i}",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": namespace,
                            "MetricName": metric,
                            "Dimensions": [{"Name": n, "Value": v} for n, v in dims],
                        },
                        "Period": 60,
                        "Stat": "SampleCount",
                    },
                }
                for i, (metric, dims, _) in enumerate(chunk)
            ]
            first = min(k[2] for k in chunk)
            last = max(k[2] for k in chunk) + timedelta(minutes=1)
            try:
                pages = self.client.get_paginator("get_metric_data").paginate(
                    MetricDataQueries=queries, StartTime=first, EndTime=last
                )
                for page in pages:
                    for result in page["MetricDataResults"]:
                        metric_key = chunk[int(result["Id"][1:])]
                        for stamp, value in zip(result["Timestamps"], result["Values"], strict=True):
                            if stamp.astimezone(UTC) == metric_key[2]:
                                found[metric_key] += float(value)
            except (ClientError, BotoCoreError) as exc:
                raise PublishError(f"CloudWatch GetMetricData failed while checking a request: {exc}") from exc
        return found

    def put(self, namespace: str, datums: Sequence[Datum]) -> None:
        try:
            self.client.put_metric_data(Namespace=namespace, MetricData=[d.to_api() for d in datums])
        except PublishAmbiguous:
            raise
        except (ClientError, BotoCoreError) as exc:
            raise PublishError(f"CloudWatch PutMetricData ({len(datums)} datums, {namespace}) failed: {exc}") from exc


class JsonlSink:
    """Appends one datum per line as JSON (the PutMetricData datum, Timestamp in ISO-8601 UTC)."""

    checks_timestamp_age = False
    settle = timedelta(0)

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self.key = f"jsonl:{self.path}"

    def sample_counts(self, namespace: str, keys: Collection[DatumKey]) -> dict[DatumKey, float] | None:
        found: dict[DatumKey, float] = dict.fromkeys(keys, 0.0)
        if not self.path.exists():
            return found
        with self.path.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    data = json.loads(line)
                    datum = Datum.from_json(data)
                except (ValueError, KeyError):
                    continue  # a line cut short by a crash was never a complete datum
                if data.get("Namespace") == namespace and datum.key in found:
                    found[datum.key] += datum.samples
        return found

    def put(self, namespace: str, datums: Sequence[Datum]) -> None:
        lines = "".join(json.dumps({"Namespace": namespace, **d.to_json()}) + "\n" for d in datums)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as out:
            # A crash can leave a last line cut short: drop it (it was never a whole datum) before appending.
            end = out.seek(0, os.SEEK_END)
            if end:
                out.seek(max(0, end - 65536))
                tail = out.read()
                if not tail.endswith(b"\n"):
                    cut = tail.rfind(b"\n")
                    out.truncate(end - len(tail) + cut + 1 if cut >= 0 else max(0, end - len(tail)))
            out.write(lines.encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())


class DryRunSink:
    """Prints what would be published, and publishes nothing."""

    checks_timestamp_age = False
    settle = timedelta(0)

    def sample_counts(self, namespace: str, keys: Collection[DatumKey]) -> dict[DatumKey, float] | None:
        return None

    def __init__(self, stream: TextIO, key: str) -> None:
        self.stream = stream
        self.key = key
        self.requests = 0

    def put(self, namespace: str, datums: Sequence[Datum]) -> None:
        self.requests += 1
        self.stream.write(f"# request {self.requests}: PutMetricData {namespace}, {len(datums)} datums\n")
        for datum in datums:
            self.stream.write(json.dumps(datum.to_json()) + "\n")
