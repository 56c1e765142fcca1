"""Where datums go: CloudWatch through boto3, a JSON-lines file, or a dry-run printout."""

# PublishAmbiguous and PublishNotSent live in job.core.errors (the runner acts on them); they are named here too.

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError

from job.core import wire
from job.core.errors import PublishAmbiguous, PublishError, PublishNotSent
from job.core.limits import MAX_QUERIES_PER_GET
from job.core.metrics import Datum, DatumKey
from job.core.receipts import LEDGER_DIMENSION, RECEIPT_METRIC

# A receipt carries the minute it was sent, and CloudWatch shows a datapoint with a recent timestamp within about
# 2 minutes (user guide, "Publish custom metrics"); wait this long before deciding that a receipt not seen means
# its request did not arrive. A receipt seen earlier decides at once.
CLOUDWATCH_SETTLE = timedelta(minutes=3)


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


# A valid PutMetricData datum for botocore to validate and serialise; put_wire swaps its body for the real one.
_PLACEHOLDER = ({"MetricName": "placeholder", "Value": 0.0},)
# botocore gzips PutMetricData bodies (the operation's requestcompression trait) with gzip.compress's default,
# level 9 (botocore/compress.py), which costs 16x the CPU of level 1 for 22% fewer bytes on these bodies
# (bench/publish.py). A client made with disable_request_compression (job/adapters/aws.py) leaves it to the sink,
# which gzips at this level in the same place: after serialisation, before signing.
GZIP_LEVEL = 1


class CloudWatchSink:
    """PutMetricData through an injected boto3 CloudWatch client (retries come from botocore's retry mode).

    put_wire sends a body serialised once per datum (job/core/wire.py) through botocore itself: the call is made
    with a placeholder datum, and a before-call handler replaces the serialised body before botocore compresses
    (gzip), signs (SigV4) and sends it, so retries and _no_blind_retry run as for any call. That is the JSON 1.0
    body botocore writes; a client that speaks another protocol gets the datums through boto3 as before."""

    checks_timestamp_age = True

    def __init__(self, client: Any, key: str = "cloudwatch", settle: timedelta = CLOUDWATCH_SETTLE) -> None:
        self.client = client
        self.key = key
        self.settle = settle
        self._body: bytes | None = None  # the body of the put_wire call under way
        self.speaks_json = self.gzips = False
        self._min_gzip_bytes = 0
        if client is not None:
            client.meta.events.register_first("needs-retry.cloudwatch.PutMetricData", _no_blind_retry)
            model = client.meta.service_model
            self.speaks_json = getattr(model, "resolved_protocol", model.protocol) == "json"
            config = client.meta.config
            compressed = model.operation_model("PutMetricData").request_compression is not None
            self.gzips = compressed and config.disable_request_compression is True
            self._min_gzip_bytes = int(config.request_min_compression_size_bytes or 0)
            # before-call comes after serialisation and before botocore's compression, checksums and signing
            # (botocore.client.BaseClient._make_api_call); first, so other before-call handlers see the real body
            client.meta.events.register_first("before-call.cloudwatch.PutMetricData", self._before_call)

    def _before_call(self, params: dict[str, Any], **_: Any) -> None:
        if self._body is not None:
            params["body"] = self._body
        body = params.get("body")
        if self.gzips and isinstance(body, bytes) and len(body) >= self._min_gzip_bytes:
            # what botocore.compress does, at GZIP_LEVEL: the body and its Content-Encoding, then signed as sent
            params["body"] = gzip.compress(body, GZIP_LEVEL)
            headers = params["headers"]
            encoding = headers.get("Content-Encoding")
            headers["Content-Encoding"] = "gzip" if encoding is None else f"{encoding},gzip"

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

    def maximum(self, namespace: str, key: DatumKey) -> float | None:
        metric, dims, minute = key
        query = {
            "Id": "r",
            "MetricStat": {
                "Metric": {
                    "Namespace": namespace,
                    "MetricName": metric,
                    "Dimensions": [{"Name": n, "Value": v} for n, v in dims],
                },
                "Period": 60,
                "Stat": "Maximum",
            },
        }
        found: float | None = None
        try:
            pages = self.client.get_paginator("get_metric_data").paginate(
                MetricDataQueries=[query], StartTime=minute, EndTime=minute + timedelta(minutes=1)
            )
            for page in pages:
                for result in page["MetricDataResults"]:
                    for stamp, value in zip(result["Timestamps"], result["Values"], strict=True):
                        if stamp.astimezone(UTC) == minute:
                            found = float(value) if found is None else max(found, float(value))
        except (ClientError, BotoCoreError) as exc:
            raise PublishError(f"CloudWatch GetMetricData failed while reading a receipt: {exc}") from exc
        return found

    def receipt_ledgers(self, namespace: str) -> set[str]:
        ledgers: set[str] = set()
        try:
            for page in self.client.get_paginator("list_metrics").paginate(
                Namespace=namespace, MetricName=RECEIPT_METRIC
            ):
                for metric in page.get("Metrics", ()):
                    for dim in metric.get("Dimensions", ()):
                        if dim.get("Name") == LEDGER_DIMENSION:
                            ledgers.add(str(dim.get("Value")))
        except (ClientError, BotoCoreError) as exc:
            raise PublishError(f"CloudWatch ListMetrics failed while looking for other ledgers: {exc}") from exc
        return ledgers

    def put(self, namespace: str, datums: Sequence[Datum]) -> None:
        self._call(namespace, len(datums), [d.to_api() for d in datums])

    def put_wire(self, namespace: str, datums: Sequence[Datum], fragments: Sequence[str]) -> None:
        if not self.speaks_json:
            self._call(namespace, len(datums), [d.to_api() for d in datums])
            return
        self._body = wire.body(namespace, fragments)
        try:
            self._call(namespace, len(datums), _PLACEHOLDER)
        finally:
            self._body = None

    def _call(self, namespace: str, count: int, metric_data: Sequence[dict[str, Any]]) -> None:
        datums = range(count)  # the error messages name how many datums the request held
        try:
            self.client.put_metric_data(Namespace=namespace, MetricData=metric_data)
        except PublishAmbiguous:
            raise
        except (ConnectTimeoutError, EndpointConnectionError) as exc:
            raise PublishNotSent(
                f"CloudWatch PutMetricData ({len(datums)} datums, {namespace}): no connection could be opened "
                f"({exc}); nothing was sent"
            ) from exc
        except ClientError as exc:
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            kind = PublishNotSent if 400 <= status < 500 else PublishError
            raise kind(f"CloudWatch PutMetricData ({len(datums)} datums, {namespace}) failed: {exc}") from exc
        except BotoCoreError as exc:
            raise PublishError(f"CloudWatch PutMetricData ({len(datums)} datums, {namespace}) failed: {exc}") from exc


# Longer than any one request (a 1 MB body is JSON of the same datums; the jsonl lines of a request take about as much).
JSONL_TAIL_WINDOW = 4 * 1024 * 1024
RECEIPT_LINE_MARK = f'"MetricName": "{RECEIPT_METRIC}"'.encode()


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

    def _drop_torn_tail(self, out: BinaryIO, whole_lines: bool) -> None:
        """Every request the job writes ends with its receipt line, so whatever follows the last receipt is a
        request a crash cut short (whole lines or half a line): never a whole request, and its receipt never
        written, so the run that resolves it sends it again. Drop it before appending a request that ends with
        its receipt (`whole_lines`); before anything else, drop only a last line cut short."""
        end = out.seek(0, os.SEEK_END)
        if not end:
            return
        if not whole_lines:
            out.seek(max(0, end - 65536))
            tail = out.read()
            if not tail.endswith(b"\n"):
                cut = tail.rfind(b"\n")
                out.truncate(end - len(tail) + cut + 1 if cut >= 0 else max(0, end - len(tail)))
            return
        start = max(0, end - JSONL_TAIL_WINDOW)
        out.seek(start)
        tail = out.read()
        cut = -1
        position = len(tail)
        while position > 0:
            line_start = tail.rfind(b"\n", 0, position - 1) + 1
            line = tail[line_start:position]
            if line.endswith(b"\n") and RECEIPT_LINE_MARK in line:
                cut = position
                break
            position = line_start
        if cut < 0 and start > 0:
            raise PublishError(
                f"{self.path}: no publish receipt in its last {JSONL_TAIL_WINDOW:,} bytes: it was not written by this "
                "version of the job (whose requests end with a PublishReceipt line); give --sink another file"
            )
        keep = start + max(cut, 0)
        if keep < end:
            out.truncate(keep)

    def _datums(self, namespace: str) -> Iterable[Datum]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    data = json.loads(line)
                    datum = Datum.from_json(data)
                except (ValueError, KeyError):
                    continue  # a line cut short by a crash was never a complete datum
                if data.get("Namespace") == namespace:
                    yield datum

    def maximum(self, namespace: str, key: DatumKey) -> float | None:
        values = [d.value for d in self._datums(namespace) if d.key == key and d.value is not None]
        return max(values) if values else None

    def receipt_ledgers(self, namespace: str) -> set[str]:
        return {
            value
            for d in self._datums(namespace)
            if d.metric == RECEIPT_METRIC
            for name, value in d.dimensions
            if name == LEDGER_DIMENSION
        }

    def put(self, namespace: str, datums: Sequence[Datum]) -> None:
        lines = "".join(json.dumps({"Namespace": namespace, **d.to_json()}) + "\n" for d in datums)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as out:
            self._drop_torn_tail(out, whole_lines=bool(datums) and datums[-1].metric == RECEIPT_METRIC)
            out.write(lines.encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())


class DryRunSink:
    """Prints what would be published, and publishes nothing."""

    checks_timestamp_age = False
    settle = timedelta(0)

    def sample_counts(self, namespace: str, keys: Collection[DatumKey]) -> dict[DatumKey, float] | None:
        return None

    def maximum(self, namespace: str, key: DatumKey) -> float | None:
        raise PublishError("a dry run publishes nothing and reads nothing back")

    def receipt_ledgers(self, namespace: str) -> set[str]:
        return set()

    def __init__(self, stream: TextIO, key: str) -> None:
        self.stream = stream
        self.key = key
        self.requests = 0
        self.series: set[tuple[str, tuple[tuple[str, str], ...]]] = set()  # the metrics the requests would create

    def put(self, namespace: str, datums: Sequence[Datum]) -> None:
        self.requests += 1
        self.series.update((d.metric, d.dimensions) for d in datums)
        self.stream.write(f"# request {self.requests}: PutMetricData {namespace}, {len(datums)} datums\n")
        for datum in datums:
            self.stream.write(json.dumps(datum.to_json()) + "\n")
