"""Log files under an S3 prefix, listed with boto3 paginators one key range per distribution."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from job.core.errors import ConfigError, LayoutError
from job.core.files import DISTRIBUTION_ID, Layout, Listing, LogFile, parse_relative_path
from job.core.window import HourWindow
from job.ports import Engine, QueryResult
from job.query.sql_files import SqlFile
from job.query.sql_values import SqlValue

# Any valid hour: only the distribution part of a partition prefix is used with it.
_ANY_HOUR = datetime(2020, 1, 1, tzinfo=UTC)
_S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?$")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """('bucket', 'prefix/') of s3://bucket/prefix; the prefix is '' or ends with '/'."""
    match = _S3_URI.fullmatch(uri)
    if not match:
        raise ConfigError(f"{uri!r} is not an S3 location; expected s3://bucket/prefix/")
    prefix = match["prefix"] or ""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return match["bucket"], prefix


class S3LogStore:
    """Lists `s3://bucket/prefix/` in the given layout; only the key range of the window's partitions is listed."""

    def __init__(self, client: Any, bucket: str, prefix: str, layout: Layout) -> None:
        self.client, self.bucket, self.prefix, self.layout = client, bucket, prefix, layout

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _pages(self, **kwargs: Any) -> Iterable[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            yield from paginator.paginate(Bucket=self.bucket, **kwargs)
        except Exception as exc:  # botocore raises ClientError, EndpointConnectionError, ...
            raise LayoutError(f"{self}: cannot list ({exc})") from exc

    def distributions(self) -> list[str]:
        """The distribution ids that have a folder under the prefix."""
        found = []
        for page in self._pages(Prefix=self.prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", ()):
                name = common["Prefix"][len(self.prefix) :].rstrip("/")
                name = name.removeprefix("DistributionId=") if self.layout is Layout.HIVE else name
                if DISTRIBUTION_ID.fullmatch(name):
                    found.append(name)
        return sorted(found)

    def list(self, window: HourWindow | None, distributions: Iterable[str] = ()) -> Listing:
        """Each distribution as one key range: ListObjectsV2 with Prefix=<its folder> and StartAfter=<the window's
        first partition>, stopped after the window's last partition. The keys of one distribution sort by hour in
        both layouts (fixed-width yyyy/MM/dd/HH fields), so the range holds exactly the window's partitions, plus
        whatever else lies between them, which is dropped: the result is the listing of each partition prefix,
        in a LIST request per 1,000 keys instead of one per partition hour."""
        wanted = list(distributions) or self.distributions()
        files: list[LogFile] = []
        unrecognised: list[str] = []
        for distribution_id in wanted:
            for item in self._range(distribution_id, window):
                relative = item["Key"][len(self.prefix) :]
                parsed = parse_relative_path(relative)
                if parsed is None or parsed.layout is not self.layout:
                    unrecognised.append(relative)
                    continue
                if window is not None and not window.contains(parsed.hour):
                    continue
                uri = f"s3://{self.bucket}/{item['Key']}"
                etag = str(item["ETag"]) if item.get("ETag") else None
                modified = item.get("LastModified")
                files.append(
                    LogFile(
                        parsed.distribution_id, parsed.hour, uri, int(item["Size"]), parsed.layout,
                        etag=etag, modified=modified if isinstance(modified, datetime) else None,
                    )
                )  # fmt: skip
        return Listing(tuple(sorted(files)), tuple(sorted(unrecognised)))

    def _range(self, distribution_id: str, window: HourWindow | None) -> Iterator[dict[str, Any]]:
        """The objects of the window's partitions of one distribution, in key order, in as few pages as S3 gives."""
        folder = self.prefix + self.layout.partition_prefix(distribution_id, _ANY_HOUR).split("/")[0] + "/"
        if window is None:
            for page in self._pages(Prefix=folder):
                yield from page.get("Contents", ())
            return
        first = self.prefix + self.layout.partition_prefix(distribution_id, window.first)
        last = self.prefix + self.layout.partition_prefix(distribution_id, window.last)
        # Every partition prefix of a distribution has the same length: a key is in the window when its head is
        # one of the window's prefixes (a stray key between two partitions is not, as the per-hour listing had it).
        inside = {self.prefix + self.layout.partition_prefix(distribution_id, h) for h in window.hours()}
        width = len(first)
        # StartAfter is exclusive: starting after `first` less its '/' keeps a folder object named `first` (a
        # console "folder"), which the per-hour listing reported as fitting no layout.
        for page in self._pages(Prefix=folder, StartAfter=first[:-1]):
            for item in page.get("Contents", ()):
                key = str(item["Key"])
                if key > last and not key.startswith(last):
                    return  # past the last partition: no further page is asked for
                if key[:width] in inside:
                    yield item


class DownloadingEngine:
    """DuckDB over S3 files without httpfs (not installable offline): each query's files are downloaded to a
    temporary folder, read there under their s3:// `"$path"`, and deleted afterwards."""

    def __init__(self, inner: Engine, client: Any) -> None:
        self.inner, self.client = inner, client
        self.name = f"{inner.name} (downloads from S3)"
        self.max_concurrency = 1

    def query(self, sql: SqlFile, params: Mapping[str, SqlValue], files: Sequence[LogFile]) -> QueryResult:
        with tempfile.TemporaryDirectory(prefix="cfmetrics-") as folder:
            local = []
            for number, log_file in enumerate(files):
                bucket, _, key = log_file.uri.removeprefix("s3://").partition("/")
                target = Path(folder) / f"{number:06d}.gz"
                try:
                    self.client.download_file(bucket, key, str(target))
                except Exception as exc:
                    raise LayoutError(f"{log_file.uri}: cannot download ({exc})") from exc
                local.append(replace(log_file, local_path=str(target)))
            result = self.inner.query(sql, params, local)
        uri_of = {f.local_path: f.uri for f in local}
        return QueryResult(result.rows, {uri_of.get(k, k): n for k, n in result.rejected_lines.items()})
