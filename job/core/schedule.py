"""Which partitions a scheduled run lists: the last few hours on every run, the whole look-back once a clock hour."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from job.core.errors import ConfigError
from job.core.window import HOUR, HourWindow, floor_hour

# CloudFront delivers a log file "usually within an hour" of its events; some or all of an hour's entries can be
# "delayed by up to 24 hours" (standard-logging-legacy-s3.html). Three partition hours (the current one and the
# two before it) hold every file delivered on time, with an hour of margin; a file later than that is found by
# the next full listing of the look-back.
RECENT_HOURS = 3
# How often the whole look-back is listed again (the reconciliation that finds late files): once a clock hour.
# A file 24 h late is then found at most about an hour after it lands, well inside the 26-hour look-back.
FULL_LISTING_EVERY = HOUR
# ListObjectsV2 "returns some or all (up to 1,000) of the objects in a bucket" per request (API_ListObjectsV2.html).
LIST_PAGE_KEYS = 1000


class ListingKind(Enum):
    """What a scheduled run lists: the recent hours only, or the whole look-back (the reconciliation)."""

    RECENT = "recent"
    FULL = "full"


@dataclass(frozen=True)
class ListingPlan:
    kind: ListingKind
    window: HourWindow


def full_listing_due(now: datetime, last_full: datetime | None) -> bool:
    """A full listing is due when none has completed in `now`'s clock hour: the first run of each hour does it,
    and a run that missed or failed it leaves it due for the next run (the ledger keeps `last_full`). A last full
    listing later than `now` (a retried event of an earlier schedule) counts as done."""
    return last_full is None or floor_hour(last_full) < floor_hour(now)


def listing_plan(
    lookback: HourWindow, now: datetime, last_full: datetime | None, recent_hours: int = RECENT_HOURS
) -> ListingPlan:
    """The window this run lists: the whole look-back when a full listing is due, otherwise its last
    `recent_hours` partition hours (never before the look-back's first)."""
    if recent_hours < 1:
        raise ConfigError(f"recent hours {recent_hours}: expected 1 or more", "recent_hours")
    if full_listing_due(now, last_full):
        return ListingPlan(ListingKind.FULL, lookback)
    first = max(lookback.first, lookback.last - (recent_hours - 1) * HOUR)
    return ListingPlan(ListingKind.RECENT, HourWindow(first, lookback.last))


def list_requests(keys: int) -> int:
    """S3 ListObjectsV2 requests that list `keys` keys as one key range (at least one, even for none)."""
    return max(1, -(-keys // LIST_PAGE_KEYS))


def full_listings_per_day(schedule_minutes: int) -> int:
    """Full listings a day: one per clock hour, or one per run when runs are further apart than an hour."""
    per_day = timedelta(days=1)
    return min(per_day // FULL_LISTING_EVERY, per_day // timedelta(minutes=schedule_minutes))
