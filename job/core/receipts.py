"""Publish receipts: the datum every PutMetricData request carries so its fate can be read back within minutes.

CloudWatch shows a datapoint with a timestamp 3-24 hours old only after up to 2 hours, and one older than a day
after at least 48 hours, so reading back the datums of a late or backfilled request cannot tell whether a request
whose answer was lost arrived. A request lands whole or not at all, so one more datum in it, stamped with the
minute it was sent, tells it instead, and becomes visible within about 2 minutes (docs/RELIABILITY.md).

The receipt of an attempt is one value of the metric `PublishReceipt` with dimensions Ledger (the ledger's id)
and Query (the query's name): one metric per query and ledger. Its value is the attempt's milliseconds within its
minute plus one (1..60,000), and a ledger sends one attempt at a time, each later than the last; so the receipt
of the last attempt of a minute is that minute's Maximum exactly when the attempt arrived.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from job.core.metrics import Datum, DatumKey, Unit

RECEIPT_METRIC = "PublishReceipt"
LEDGER_DIMENSION = "Ledger"
QUERY_DIMENSION = "Query"
# The smallest step between two attempts' receipts: CloudWatch keeps the values, and ms are plenty.
RECEIPT_STEP = timedelta(milliseconds=1)


def minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def receipt_value(at: datetime) -> float:
    """1..60,000: the attempt's milliseconds within its minute, plus one (zero is never a receipt)."""
    return float(at.second * 1000 + at.microsecond // 1000 + 1)


def receipt_datum(ledger_id: str, query: str, at: datetime) -> Datum:
    """The receipt of an attempt sent at `at`."""
    dims = ((LEDGER_DIMENSION, ledger_id), (QUERY_DIMENSION, query))
    return Datum(RECEIPT_METRIC, dims, minute_of(at), Unit.NONE, value=receipt_value(at))


def receipt_key(ledger_id: str, query: str, at: datetime) -> DatumKey:
    return receipt_datum(ledger_id, query, at).key


def next_attempt_time(now: datetime, last: datetime | None) -> datetime:
    """When the next attempt is stamped: now, truncated to the millisecond, but always after the last attempt
    (a clock that stepped back, two attempts within one millisecond), so receipts of a minute keep increasing."""
    stamp = now.replace(microsecond=now.microsecond // 1000 * 1000)
    if last is not None and stamp <= last:
        stamp = last.replace(microsecond=last.microsecond // 1000 * 1000) + RECEIPT_STEP
    return stamp


class Outcome(Enum):
    """What the receipts of a minute say about one attempt."""

    ARRIVED = "arrived"  # the minute's Maximum is this attempt's receipt
    NOT_SEEN = "not seen"  # no receipt of this attempt (yet): lost once the settle time has passed
    FOREIGN = "foreign"  # a larger receipt than any this ledger sent after the attempt: another writer


@dataclass(frozen=True)
class Reading:
    """The Maximum of the receipt metric in the attempt's minute, as the destination shows it now (None: none)."""

    maximum: float | None

    def outcome(self, at: datetime) -> Outcome:
        expected = receipt_value(at)
        if self.maximum is None or self.maximum < expected:
            return Outcome.NOT_SEEN
        if self.maximum == expected:
            return Outcome.ARRIVED
        return Outcome.FOREIGN
