"""Where log files live: the two partitioned path layouts and a local store that lists them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum

from job.core.errors import ConfigError

# CloudFront distribution ids are upper-case letters and digits ("E2EXAMPLE1ABCD"); we accept 1-64 of them.
DISTRIBUTION_ID = re.compile(r"^[A-Z0-9]{1,64}$")


class LogFormat(Enum):
    """How log files are written: legacy TAB logs, or standard logging v2's output formats."""

    LEGACY = "legacy"  # TAB-separated gzip, '#Version'/'#Fields' header, fields in the documented order
    W3C = "w3c"  # v2 w3c/plain: the '#Fields' header gives the (user-chosen) field order
    JSON = "json"  # v2 JSON lines, keys spelt as in the legacy field names ("x-edge-result-type")
    PARQUET = "parquet"  # v2 Parquet, column names with underscores


class Layout(Enum):
    """CloudFront standard logging v2 partitioning: `{DistributionId}/{yyyy}/{MM}/{dd}/{HH}/` or its Hive form."""

    PLAIN = "plain"
    HIVE = "hive"

    def partition_prefix(self, distribution_id: str, hour: datetime) -> str:
        if self is Layout.PLAIN:
            return f"{distribution_id}/{hour:%Y/%m/%d/%H}/"
        return f"DistributionId={distribution_id}/year={hour:%Y}/month={hour:%m}/day={hour:%d}/hour={hour:%H}/"

    def athena_template(self, location: str) -> str:
        """The `storage.location.template` for partition projection under `location` (which ends with '/')."""
        if self is Layout.PLAIN:
            return location + "${distributionid}/${year}/${month}/${day}/${hour}/"
        return location + "DistributionId=${distributionid}/year=${year}/month=${month}/day=${day}/hour=${hour}/"


_PATTERNS = {
    Layout.PLAIN: re.compile(r"^(?P<d>[^/=]+)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<dd>\d{2})/(?P<h>\d{2})/(?P<f>[^/]+)$"),
    Layout.HIVE: re.compile(
        r"^DistributionId=(?P<d>[^/]+)/year=(?P<y>\d{4})/month=(?P<m>\d{2})/day=(?P<dd>\d{2})/hour=(?P<h>\d{2})/(?P<f>[^/]+)$"
    ),
}


def validate_distribution_id(value: str) -> str:
    if not DISTRIBUTION_ID.fullmatch(value):
        raise ConfigError(
            f"distribution id {value!r} is not valid; expected 1-64 upper-case letters and digits, e.g. E2EXAMPLE1ABCD",
            "distributions",
        )
    return value


@dataclass(frozen=True, order=True)
class LogFile:
    """One log file: its address as the engine sees it (`"$path"`), its partition and its size."""

    distribution_id: str
    hour: datetime
    uri: str
    size: int = field(compare=False)
    layout: Layout = field(compare=False)
    # Where the engine reads the bytes when that is not `uri` (an S3 file downloaded for DuckDB).
    local_path: str | None = field(default=None, compare=False)
    # What the store says of the file's version: S3's ETag (None for local files), and when it was last written
    # (a file young enough may still be being written: an unreadable one is retried, core/timerange.py).
    etag: str | None = field(default=None, compare=False)
    modified: datetime | None = field(default=None, compare=False)

    @property
    def readable_path(self) -> str:
        return self.local_path or self.uri


@dataclass(frozen=True)
class ParsedPath:
    layout: Layout
    distribution_id: str
    hour: datetime


def parse_relative_path(relative: str) -> ParsedPath | None:
    """The layout, distribution and partition hour of a path relative to the log root, or None if it fits neither."""
    for layout, pattern in _PATTERNS.items():
        match = pattern.fullmatch(relative)
        if not match or not DISTRIBUTION_ID.fullmatch(match["d"]) or match["f"].startswith("."):
            continue
        try:
            hour = datetime(int(match["y"]), int(match["m"]), int(match["dd"]), int(match["h"]), tzinfo=UTC)
        except ValueError:
            return None
        return ParsedPath(layout, match["d"], hour)
    return None


@dataclass(frozen=True)
class Listing:
    """The log files found under a root, and the paths that fit no layout (reported, never read)."""

    files: tuple[LogFile, ...]
    unrecognised: tuple[str, ...]


# The two layouts a log root may have, as a message shows them.
LAYOUTS_EXPECTED = (
    "<DistributionId>/yyyy/MM/dd/HH/<file> (e.g. E2EXAMPLE1ABCD/2026/11/28/15/E2EXAMPLE1ABCD.2026-11-28-15.a1b2.gz) "
    "or the Hive-style DistributionId=<id>/year=yyyy/month=MM/day=dd/hour=HH/<file>; flat legacy files "
    "(<prefix>/<DistributionId>.YYYY-MM-DD-HH.<unique>.gz) need moving into partitions first (docs/DEPLOY.md)"
)
SHOWN_ENTRIES = 5


def describe_missing_files(
    root: str, everything: Listing, distributions: tuple[str, ...], window: str
) -> tuple[bool, str]:
    """Why a run listed no file, from the listing of the whole root: (is it a mistake, the message). A mistake: the
    root holds no log file at all, or none of the distributions asked for; otherwise only the window is empty."""
    if not everything.files:
        shown = ", ".join(everything.unrecognised[:SHOWN_ENTRIES])
        more = len(everything.unrecognised) - SHOWN_ENTRIES
        found = (
            f"found {len(everything.unrecognised)} file(s) that fit no layout: {shown}"
            + (f" and {more} more" if more > 0 else "")
            if everything.unrecognised
            else "the root is empty"
        )
        return True, f"no log file under {root}: {found}. Expected {LAYOUTS_EXPECTED}"
    present = sorted({f.distribution_id for f in everything.files})
    if distributions and not set(distributions) & set(present):
        return True, (
            f"no log file of distribution {', '.join(distributions)} under {root}; the root holds "
            f"{', '.join(present[:SHOWN_ENTRIES])}" + (f" and {len(present) - SHOWN_ENTRIES} more" if len(present) >
                                                        SHOWN_ENTRIES else "")
        )  # fmt: skip
    hours = [f.hour for f in everything.files]
    return False, (
        f"no log file in {window} under {root}; its {len(everything.files)} file(s) span "
        f"{min(hours):%Y-%m-%dT%H}..{max(hours):%Y-%m-%dT%H} UTC (--from/--to choose the window)"
    )
