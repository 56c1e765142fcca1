"""Which minutes of a log file's lines the job publishes: the rest are counted as OutOfRangeLines (pure).

Two rules, each from a documented limit:
- CloudFront files a request under the hour in which it *occurred* (was received), and its `date`/`time` fields
  are when the server *finished* responding (for a WebSocket, when the connection closed). So a line's minute
  lies from the start of its file's partition hour to the end of that hour plus the longest request. The job
  takes a request of a day or more as implausible (sql/minute_metrics.sql: time-taken in [0, 86400) s), and
  allows an hour before the partition for edge clocks and the boundary of a log period. Anything further away
  CloudFront cannot have written.
- CloudWatch refuses a datapoint more than two weeks old or more than two hours ahead (core/limits.py): such a
  minute is counted the same way, for the CloudWatch sink only (a jsonl export takes any age).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from job.core.limits import MAX_DATAPOINT_AGE, MAX_DATAPOINT_AHEAD
from job.core.metrics import Grouping, as_utc_minute

HOUR = timedelta(hours=1)
# https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/standard-logs-reference.html ("Timing of log
# file delivery"): "the file name includes the date and time of the period in which the requests occurred";
# field `time`: "The time when the CloudFront server finished responding to the request". A request lasts less
# than a day (the SQL's own bound on time-taken), so its line ends at most a day after its partition hour.
LINE_SLACK_AFTER = timedelta(days=1)
# Edge clocks and log periods that do not start on the hour: an hour before the partition is still accepted.
LINE_SLACK_BEFORE = timedelta(hours=1)


def line_range(hour: datetime) -> tuple[datetime, datetime]:
    """[first, end) of the minutes a line of a file of this partition hour can carry."""
    return hour - LINE_SLACK_BEFORE, hour + HOUR + LINE_SLACK_AFTER


def cloudwatch_takes(minute: datetime, now: datetime) -> bool:
    """CloudWatch's PutMetricData Timestamp limits: at most two weeks old, at most two hours ahead."""
    return now - MAX_DATAPOINT_AGE <= minute <= now + MAX_DATAPOINT_AHEAD


@dataclass(frozen=True)
class RangeCheck:
    """The rows of one query split by minute: those to publish, and the lines of the minutes out of range."""

    rows: tuple[Mapping[str, Any], ...]
    out_of_range_lines: int
    out_of_range_minutes: tuple[datetime, ...]


def check_rows(rows: Iterable[Mapping[str, Any]], hours: Sequence[datetime], now: datetime | None) -> RangeCheck:
    """Keep the rows whose minute some file of the query (partition `hours`) can carry and, with `now` (a sink
    that checks timestamp age), CloudWatch takes; the other minutes' lines are counted from their per-minute
    rows (grouping MINUTE). Rows without a minute (per-file rows, malformed lines) are kept."""
    ranges = [line_range(h) for h in sorted(set(hours))]
    kept: list[Mapping[str, Any]] = []
    lines = 0
    bad: set[datetime] = set()
    verdicts: dict[datetime, bool] = {}
    minutes: dict[datetime, datetime] = {}  # a few thousand minutes over hundreds of thousands of rows
    for row in rows:
        raw = row.get("minute")
        if type(raw) is datetime and int(row["grouping_id"]) != Grouping.FILE.value:
            # the engines' common case, without str() of every row's minute
            minute = minutes.get(raw) or minutes.setdefault(raw, as_utc_minute(raw))  # a datetime is never falsy
        elif (
            int(row["grouping_id"]) == Grouping.FILE.value
            or raw is None
            or str(raw) in ("", "NaT", "<NA>")
            or (isinstance(raw, float) and raw != raw)  # NaN: a malformed line's minute from pandas
        ):
            kept.append(row)
            continue
        else:
            minute = as_utc_minute(raw)
        ok = verdicts.get(minute)
        if ok is None:
            ok = any(first <= minute < end for first, end in ranges) and (now is None or cloudwatch_takes(minute, now))
            verdicts[minute] = ok
        if ok:
            kept.append(row)
            continue
        bad.add(minute)
        if int(row["grouping_id"]) == Grouping.MINUTE.value and row.get("requests") is not None:
            lines += int(row["requests"])
    return RangeCheck(tuple(kept), lines, tuple(sorted(bad)))
