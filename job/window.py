"""Hour windows over log partitions: parsing, validation and the defaults, all pure (the caller passes `now`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from job.errors import ConfigError

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


def parse_time(text: str, option: str) -> datetime:
    """Parse a UTC time such as 2026-11-28T15, 2026-11-28T15:30 or 2026-11-28 (midnight); returns an aware datetime."""
    if not _ISO_HOUR.fullmatch(text.strip()):
        raise ConfigError(
            f"{option}: {text!r} is not a UTC time; expected YYYY-MM-DD[THH[:MM[:SS]]], e.g. 2026-11-28T15"
        )
    clean = text.strip().removesuffix("Z").removesuffix("+00:00")
    for form in _HOUR_FORMS:
        try:
            return datetime.strptime(clean, form).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ConfigError(f"{option}: {text!r} is not a valid date or time (check month, day and hour ranges)")


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
                f"--to ({self.last:%Y-%m-%dT%H}) is before --from ({self.first:%Y-%m-%dT%H}); expected from <= to"
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


def partition_key(hour: datetime) -> str:
    """The 'YYYYMMDDHH' form the metrics query compares concat(year, month, day, hour) with."""
    return hour.strftime("%Y%m%d%H")
