"""Move legacy flat CloudFront log files into the partitioned layout the metrics job reads: copy, then delete."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from botocore.exceptions import ClientError

from job.core.files import Layout
from job.environment import Environment

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Standard logging (legacy) names its files <DistributionId>.YYYY-MM-DD-HH.<unique id>.gz under the log prefix.
LEGACY_FILE_NAME = re.compile(
    r"^(?P<distribution>[A-Z0-9]{1,64})\.(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})-(?P<hour>\d{2})"
    r"\.(?P<unique>[A-Za-z0-9_-]+)\.gz$"
)
# CopyObject copies at most 5 GB in one request; CloudFront log files are far smaller.
MAX_COPY_BYTES = 5 * 1024**3
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})

logger = logging.getLogger(__name__)


def partitioned_key(legacy_key: str, source_prefix: str, dest_prefix: str, layout: Layout) -> str | None:
    """The partitioned key of a legacy flat log file, or None when `legacy_key` is not one: outside
    `source_prefix`, in a folder below it, a name that does not parse, or an hour that does not exist."""
    if not legacy_key.startswith(source_prefix):
        return None
    name = legacy_key[len(source_prefix) :]
    match = LEGACY_FILE_NAME.match(name)
    if match is None:
        return None
    try:
        hour = datetime(int(match["year"]), int(match["month"]), int(match["day"]), int(match["hour"]), tzinfo=UTC)
    except ValueError:
        return None
    return f"{dest_prefix}{layout.partition_prefix(match['distribution'], hour)}{name}"


@dataclass(frozen=True)
class MoverConfig:
    """Where legacy files come from and where they go, from the environment the template sets."""

    source_bucket: str
    source_prefix: str
    dest_bucket: str
    dest_prefix: str
    layout: Layout

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MoverConfig:
        read = Environment(env)
        return cls(
            source_bucket=read.required("SOURCE_BUCKET"),
            source_prefix=read.prefix("SOURCE_PREFIX"),
            dest_bucket=read.required("DEST_BUCKET"),
            dest_prefix=read.prefix("DEST_PREFIX"),
            layout=read.choice("LOG_LAYOUT", Layout, Layout.PLAIN),
        )


class Outcome(Enum):
    MOVED = "moved"
    ALREADY_MOVED = "already_moved"
    IGNORED = "ignored"


@dataclass(frozen=True)
class MoveResult:
    bucket: str
    key: str
    target: str | None
    outcome: Outcome


def object_refs(event: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(bucket, key) of every object an event names: an EventBridge "Object Created" event, or an S3 event
    notification (whose keys are URL-encoded)."""
    detail = event.get("detail")
    if isinstance(detail, Mapping):
        bucket, key = detail.get("bucket", {}).get("name"), detail.get("object", {}).get("key")
        return [(str(bucket), str(key))] if bucket and key else []
    refs: list[tuple[str, str]] = []
    for record in event.get("Records", ()):
        s3 = record.get("s3", {}) if isinstance(record, Mapping) else {}
        bucket, key = s3.get("bucket", {}).get("name"), s3.get("object", {}).get("key")
        if bucket and key:
            refs.append((str(bucket), unquote_plus(str(key))))
    return refs


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def move_one(s3: S3Client, config: MoverConfig, bucket: str, key: str) -> MoveResult:
    """Copy one legacy file to its partitioned key, then delete it. Safe to repeat: a file that is gone has
    been moved already, and a repeated copy writes the same bytes again."""
    target = partitioned_key(key, config.source_prefix, config.dest_prefix, config.layout)
    if bucket != config.source_bucket or target is None:
        return MoveResult(bucket, key, None, Outcome.IGNORED)
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _code(exc) in _MISSING:
            return MoveResult(bucket, key, target, Outcome.ALREADY_MOVED)
        raise
    if head["ContentLength"] > MAX_COPY_BYTES:
        raise ValueError(f"s3://{bucket}/{key}: {head['ContentLength']} bytes is more than one CopyObject copies")
    try:
        s3.copy_object(
            Bucket=config.dest_bucket,
            Key=target,
            CopySource={"Bucket": bucket, "Key": key},
            CopySourceIfMatch=head["ETag"],
        )
    except ClientError as exc:
        if _code(exc) in _MISSING:  # another invocation moved it between our HEAD and our copy
            return MoveResult(bucket, key, target, Outcome.ALREADY_MOVED)
        raise
    s3.delete_object(Bucket=bucket, Key=key)
    return MoveResult(bucket, key, target, Outcome.MOVED)


_client: S3Client | None = None


def _default_client() -> S3Client:
    global _client
    if _client is None:
        import boto3

        _client = boto3.client("s3")
    return _client


def lambda_handler(event: Mapping[str, Any], context: Any, s3: S3Client | None = None) -> dict[str, int]:
    """Entry point of the legacy mover function; `s3` is injected by tests, created once per container otherwise."""
    logger.setLevel(os.environ.get("LOG_LEVEL", "INFO"))
    config = MoverConfig.from_env(os.environ)
    client = s3 if s3 is not None else _default_client()
    counts = {outcome.value: 0 for outcome in Outcome}
    for bucket, key in object_refs(event):
        result = move_one(client, config, bucket, key)
        counts[result.outcome.value] += 1
        logger.info("%s s3://%s/%s -> %s", result.outcome.value, bucket, key, result.target or "-")
    return counts
