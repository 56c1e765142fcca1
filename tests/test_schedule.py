"""The listing schedule (recent hours, a full listing once a clock hour) and the key-range listing of S3."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import boto3
import pytest

from job.adapters.s3_ledger import S3Ledger
from job.adapters.s3_store import S3LogStore
from job.adapters.sqlite_ledger import LocalLedger
from job.core.batch import Target
from job.core.errors import ConfigError
from job.core.files import Layout, LogFile, parse_relative_path
from job.core.schedule import (
    ListingKind,
    full_listing_due,
    full_listings_per_day,
    list_requests,
    listing_plan,
)
from job.core.window import HourWindow
from job.ports import Ledger

HOUR = timedelta(hours=1)
NOW = datetime(2026, 11, 28, 15, 5, tzinfo=UTC)
LOOKBACK = HourWindow(datetime(2026, 11, 27, 13, tzinfo=UTC), datetime(2026, 11, 28, 15, tzinfo=UTC))
TARGET = Target("minute_metrics", "cloudwatch@default", "CloudFront/AccessLogs")
BUCKET = "schedule-logs"


# ---------------------------------------------------------------------------------------------------------------
# the schedule (pure)


def test_a_full_listing_is_due_once_per_clock_hour() -> None:
    assert full_listing_due(NOW, None)
    assert not full_listing_due(NOW, NOW.replace(minute=0))  # done this hour, at its first minute
    assert not full_listing_due(NOW.replace(minute=59, second=59), NOW.replace(minute=0))
    assert full_listing_due(NOW, NOW.replace(minute=0) - timedelta(microseconds=1))  # the last instant of 14h
    assert full_listing_due(NOW, NOW - 5 * HOUR)  # missed hours: one full listing catches up


def test_a_full_listing_later_than_now_counts_as_done() -> None:
    assert not full_listing_due(NOW, NOW + 2 * HOUR)  # a retried event of an earlier schedule


def test_the_plan_lists_the_whole_look_back_when_due_and_the_recent_hours_otherwise() -> None:
    full = listing_plan(LOOKBACK, NOW, None)
    assert full.kind is ListingKind.FULL and full.window == LOOKBACK
    recent = listing_plan(LOOKBACK, NOW, NOW.replace(minute=1))
    assert recent.kind is ListingKind.RECENT
    assert recent.window == HourWindow(datetime(2026, 11, 28, 13, tzinfo=UTC), LOOKBACK.last)
    assert len(list(recent.window.hours())) == 3


def test_the_recent_window_is_clipped_to_the_look_back() -> None:
    short = HourWindow(LOOKBACK.last - HOUR, LOOKBACK.last)
    plan = listing_plan(short, NOW, NOW, recent_hours=5)
    assert plan.kind is ListingKind.RECENT and plan.window == short


def test_the_plan_refuses_no_recent_hours() -> None:
    with pytest.raises(ConfigError):
        listing_plan(LOOKBACK, NOW, NOW, recent_hours=0)


def test_list_requests_and_full_listings_per_day() -> None:
    assert [list_requests(n) for n in (0, 1, 1000, 1001, 10_000, 10_001)] == [1, 1, 1, 2, 10, 11]
    assert full_listings_per_day(5) == 24  # rate(5 minutes): the first run of each hour
    assert full_listings_per_day(60) == 24
    assert full_listings_per_day(120) == 12  # every run


# ---------------------------------------------------------------------------------------------------------------
# the key-range listing equals the old listing of each partition prefix (moto S3 over HTTP)


class ListCounter:
    """Counts ListObjectsV2 requests of a boto3 client (a botocore event hook)."""

    def __init__(self, client: Any) -> None:
        self.calls = 0
        client.meta.events.register("before-call.s3.ListObjectsV2", self._count)

    def _count(self, **_: Any) -> None:
        self.calls += 1


@pytest.fixture
def s3(moto_endpoint: str) -> Iterator[Any]:
    client = boto3.client("s3", endpoint_url=moto_endpoint)
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    yield client


def _put(s3: Any, keys: list[str]) -> None:
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"")


def per_hour_listing(s3: Any, prefix: str, layout: Layout, distribution_id: str, window: HourWindow) -> list[str]:
    """The old listing, independently: one paginated LIST per partition prefix, every key it returns."""
    keys: list[str] = []
    for hour in window.hours():
        partition = prefix + layout.partition_prefix(distribution_id, hour)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=partition):
            keys += [item["Key"] for item in page.get("Contents", ())]
    return sorted(keys)


def _uris(files: tuple[LogFile, ...], unrecognised: tuple[str, ...], prefix: str) -> list[str]:
    return sorted([f.uri.removeprefix(f"s3://{BUCKET}/") for f in files] + [prefix + u for u in unrecognised])


@pytest.mark.parametrize("layout", [Layout.PLAIN, Layout.HIVE])
def test_the_key_range_listing_equals_the_listing_of_each_partition(s3: Any, layout: Layout) -> None:
    prefix = f"cf-{uuid.uuid4().hex[:8]}/"
    distribution, neighbour = "E1RANGE", "E1RANGEX"  # a distribution id that extends another one
    window = HourWindow(datetime(2026, 11, 28, 10, tzinfo=UTC), datetime(2026, 11, 28, 13, tzinfo=UTC))
    keys = []
    for hour in [window.first - HOUR, *window.hours(), window.last + HOUR]:  # one hour either side of the edges
        for d in (distribution, neighbour):
            part = prefix + layout.partition_prefix(d, hour)
            keys += [f"{part}{d}.{hour:%Y-%m-%d-%H}.{n:04d}.gz" for n in range(3)]
    inside = prefix + layout.partition_prefix(distribution, window.first)
    keys += [
        inside,  # a console "folder" object: fits no layout, reported as the old listing had it
        inside + "notes.txt",  # any object in a partition is a file of its hour to the parser, as before
        inside[:-1] + ".txt",  # a stray key between two partitions: in neither listing
        prefix + layout.partition_prefix(distribution, window.last)[:-1] + "x",  # just past the last partition
    ]
    _put(s3, keys)
    store = S3LogStore(s3, BUCKET, prefix, layout)
    listing = store.list(window, [distribution])
    expected = per_hour_listing(s3, prefix, layout, distribution, window)
    assert _uris(listing.files, listing.unrecognised, prefix) == expected
    assert len(listing.files) == 3 * 4 + 1 and inside[len(prefix) :] in listing.unrecognised
    assert all(parse_relative_path(f.uri.split(prefix, 1)[1]) is not None for f in listing.files)


def test_the_key_range_listing_pages_past_1000_keys_in_a_request_per_1000(s3: Any) -> None:
    prefix = f"cf-{uuid.uuid4().hex[:8]}/"
    window = HourWindow(datetime(2026, 11, 28, 10, tzinfo=UTC), datetime(2026, 11, 28, 12, tzinfo=UTC))
    per_hour = 400
    keys = [
        prefix + Layout.PLAIN.partition_prefix("E1PAGES", hour) + f"E1PAGES.{hour:%Y-%m-%d-%H}.{n:04d}.gz"
        for hour in [*window.hours(), window.last + HOUR]
        for n in range(per_hour)
    ]
    _put(s3, keys)
    counter = ListCounter(s3)
    listing = S3LogStore(s3, BUCKET, prefix, Layout.PLAIN).list(window, ["E1PAGES"])
    assert len(listing.files) == 3 * per_hour
    # 1,200 keys of the window in pages of 1,000: the second page holds the window's end, no third is asked for
    assert counter.calls == 2
    counter.calls = 0
    assert len(per_hour_listing(s3, prefix, Layout.PLAIN, "E1PAGES", window)) == 3 * per_hour
    assert counter.calls == 3  # the old way: a request per partition hour


# ---------------------------------------------------------------------------------------------------------------
# the ledger's mark


def _ledgers(tmp_path: Path, s3: Any) -> list[Ledger]:
    s3.create_bucket(Bucket="schedule-state") if "schedule-state" not in [
        b["Name"] for b in s3.list_buckets()["Buckets"]
    ] else None
    return [LocalLedger(tmp_path / "state"), S3Ledger(s3, "schedule-state", f"{uuid.uuid4().hex[:8]}/", owner="t")]


def test_the_full_listing_mark_round_trips_on_both_ledgers(tmp_path: Path, s3: Any) -> None:
    other = Target("minute_metrics", "jsonl:/tmp/x.jsonl", TARGET.namespace)
    for ledger in _ledgers(tmp_path, s3):
        assert ledger.last_full_listing(TARGET) is None
        ledger.set_last_full_listing(TARGET, NOW)
        ledger.set_last_full_listing(TARGET, NOW + HOUR)  # overwritten, not added
        assert ledger.last_full_listing(TARGET) == NOW + HOUR
        assert ledger.last_full_listing(other) is None  # one mark per target


@pytest.mark.parametrize(
    ("dry_run", "stopped_early", "listing", "marked"),
    [
        (False, False, ListingKind.FULL, True),
        (True, False, ListingKind.FULL, False),  # a dry run writes nothing
        (False, True, ListingKind.FULL, False),  # files left: the full listing stays due
        (False, False, ListingKind.RECENT, False),
        (False, False, None, False),  # an explicit window (CLI run, backfill)
    ],
)
def test_only_a_full_listing_that_published_everything_is_marked(
    tmp_path: Path, dry_run: bool, stopped_early: bool, listing: ListingKind | None, marked: bool
) -> None:
    from job.handler import mark_full_listing
    from job.runner import Job, RunOptions, RunReport

    ledger = LocalLedger(tmp_path / "state")
    options = RunOptions(namespace=TARGET.namespace, window=LOOKBACK, dry_run=dry_run, scheduled=True)
    job = cast(Job, SimpleNamespace(options=options, ledger=ledger, target=TARGET))
    mark_full_listing(job, RunReport(TARGET, stopped_early=stopped_early, listing=listing), NOW)
    assert ledger.last_full_listing(TARGET) == (NOW if marked else None)
