"""Where datums go: CloudWatch through boto3, a JSON-lines file, or a dry-run printout."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

from botocore.exceptions import BotoCoreError, ClientError

from job.errors import ConfigError, PublishError
from job.metrics import Datum


class Sink(Protocol):
    """Takes one PutMetricData request at a time; returns only once the request is durably accepted."""

    key: str  # identifies the destination in the ledger: each destination gets each file exactly once
    checks_timestamp_age: bool

    def put(self, namespace: str, datums: Sequence[Datum]) -> None: ...


class CloudWatchSink:
    """PutMetricData through an injected boto3 CloudWatch client (retries come from botocore's retry mode)."""

    checks_timestamp_age = True

    def __init__(self, client: Any, key: str = "cloudwatch") -> None:
        self.client = client
        self.key = key

    def put(self, namespace: str, datums: Sequence[Datum]) -> None:
        try:
            self.client.put_metric_data(Namespace=namespace, MetricData=[d.to_api() for d in datums])
        except (ClientError, BotoCoreError) as exc:
            raise PublishError(f"CloudWatch PutMetricData ({len(datums)} datums, {namespace}) failed: {exc}") from exc


class JsonlSink:
    """Appends one datum per line as JSON (the PutMetricData datum, Timestamp in ISO-8601 UTC)."""

    checks_timestamp_age = False

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self.key = f"jsonl:{self.path}"

    def put(self, namespace: str, datums: Sequence[Datum]) -> None:
        lines = "".join(json.dumps({"Namespace": namespace, **d.to_json()}) + "\n" for d in datums)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(lines)
            out.flush()
            os.fsync(out.fileno())


class DryRunSink:
    """Prints what would be published, and publishes nothing."""

    checks_timestamp_age = False

    def __init__(self, stream: TextIO, key: str) -> None:
        self.stream = stream
        self.key = key
        self.requests = 0

    def put(self, namespace: str, datums: Sequence[Datum]) -> None:
        self.requests += 1
        self.stream.write(f"# request {self.requests}: PutMetricData {namespace}, {len(datums)} datums\n")
        for datum in datums:
            self.stream.write(json.dumps(datum.to_json()) + "\n")


def parse_sink_spec(spec: str) -> tuple[str, Path | None]:
    """'cloudwatch' or 'jsonl:PATH'."""
    if spec == "cloudwatch":
        return "cloudwatch", None
    if spec.startswith("jsonl:") and len(spec) > len("jsonl:"):
        return "jsonl", Path(spec.removeprefix("jsonl:"))
    raise ConfigError(f"--sink {spec!r}: expected 'cloudwatch' or 'jsonl:PATH'")
