"""Hour windows over log partitions: parsing, validation and the defaults, all pure (the caller passes `now`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from job.core.errors import ConfigError
from job.core.limits import MAX_DATAPOINT_AGE

HOUR = timedelta(hours=1)
_HOUR_FORMS = (
    "%Y-%m-%dT%H",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d",
)
_ISO_HOUR = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}(:\d{2}(:\d{2})?)?)?(Z|\+00:00)?$")


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def parse_time(text: str, setting: str) -> datetime:
    """Parse a UTC time such as 2026-11-28T15, 2026-11-28T15:30 or 2026-11-28 (midnight); returns an aware datetime."""
    if not _ISO_HOUR.fullmatch(text.strip()):
        raise ConfigError(
            f"{text!r} is not a UTC time; expected YYYY-MM-DD[THH[:MM[:SS]]], e.g. 2026-11-28T15", setting
        )
    clean = text.strip().removesuffix("Z").removesuffix("+00:00")
    for form in _HOUR_FORMS:
        try:
            return datetime.strptime(clean, form).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ConfigError(f"{text!r} is not a valid date or time (check month, day and hour ranges)", setting)


def is_date_only(text: str) -> bool:
    """YYYY-MM-DD with no hour: as an end (--to) it means the whole day."""
    return re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()) is not None


def parse_end(text: str, setting: str) -> datetime:
    """The last partition hour of a window: a date alone (2026-11-28) means its whole day, so its last hour, 23."""
    moment = parse_time(text, setting)
    return moment.replace(hour=23) if is_date_only(text) else moment


@dataclass(frozen=True)
class HourWindow:
    """An inclusive range of partition hours [first, last], both aware UTC datetimes on the hour."""

    first: datetime
    last: datetime

    def __post_init__(self) -> None:
        for moment in (self.first, self.last):
            if moment.tzinfo is None or moment != floor_hour(moment):
                raise ConfigError(f"window bound {moment!r} must be a UTC datetime on the hour")
        if self.last < self.first:
            raise ConfigError(
                f"the last hour ({self.last:%Y-%m-%dT%H}) is before the first ({self.first:%Y-%m-%dT%H}); "
                "expected first <= last",
                "to",
            )

    @classmethod
    def from_bounds(cls, start: datetime, end: datetime) -> HourWindow:
        """The partition hours that overlap [start, end]."""
        return cls(floor_hour(start), floor_hour(end))

    def contains(self, hour: datetime) -> bool:
        return self.first <= hour <= self.last

    def hours(self) -> Iterator[datetime]:
        hour = self.first
        while hour <= self.last:
            yield hour
            hour += HOUR

    def __str__(self) -> str:
        return f"{self.first:%Y-%m-%dT%H}..{self.last:%Y-%m-%dT%H} UTC"


# A file's lines may carry times up to an hour past its partition hour; keep that far from CloudWatch's edge.
AGE_MARGIN = timedelta(hours=2)


# CloudFront launched in 2008: no log is older.
EARLIEST_LOGS = datetime(2008, 1, 1, tzinfo=UTC)


def effective_window(
    start: datetime | None, end: datetime | None, now: datetime, checks_age: bool
) -> HourWindow | None:
    """The partition hours a run covers (None: all). A sink that checks timestamp age (CloudWatch) covers the
    last two weeks by default and refuses an older start up front."""
    latest = floor_hour(now) + HOUR
    if checks_age:
        oldest = floor_hour(now - MAX_DATAPOINT_AGE + AGE_MARGIN)
        if start is not None and floor_hour(start) < oldest:
            raise ConfigError(
                f"start {start:%Y-%m-%dT%H}: CloudWatch refuses datapoints older than two weeks, so the oldest "
                f"hour it can take now is {oldest:%Y-%m-%dT%H}; start later, or export older logs to a jsonl file",
                "from",
            )
        last = floor_hour(end) if end else latest
        if start is None and last < oldest:
            raise ConfigError(
                f"end {last:%Y-%m-%dT%H}: CloudWatch refuses datapoints older than two weeks (before "
                f"{oldest:%Y-%m-%dT%H}); export older logs to a jsonl file",
                "to",
            )
        return HourWindow(floor_hour(start) if start else oldest, last)
    if start is None and end is None:
        return None
    return HourWindow(floor_hour(start) if start else EARLIEST_LOGS, floor_hour(end) if end else latest)
