"""What `cfmetrics status` shows: per distribution and hour, files and lines processed and pending (pure)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from job.core.batch import FileRecord
from job.core.files import LogFile


@dataclass(frozen=True)
class HourStatus:
    distribution_id: str
    hour: datetime
    files_processed: int
    lines_processed: int
    malformed_lines: int
    files_pending: int
    bytes_pending: int
    out_of_range_lines: int = 0


@dataclass(frozen=True)
class DistributionStatus:
    distribution_id: str
    hours: tuple[HourStatus, ...]
    newest_processed_hour: datetime | None
    files_pending: int
    oldest_pending_age: timedelta | None
    unreadable: tuple[tuple[str, str], ...] = ()


def build_status(listed: Sequence[LogFile], records: Sequence[FileRecord], now: datetime) -> list[DistributionStatus]:
    """Join what the store lists with what the ledger recorded; a file's age counts from the end of its hour."""
    recorded = {r.uri: r for r in records}
    cells: dict[tuple[str, datetime], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
    pending_hours: dict[str, list[datetime]] = defaultdict(list)
    for log_file in listed:
        cell = cells[(log_file.distribution_id, log_file.hour)]
        if log_file.uri in recorded:
            continue
        cell[3] += 1
        cell[4] += log_file.size
        pending_hours[log_file.distribution_id].append(log_file.hour)
    for record in records:
        cell = cells[(record.distribution_id, record.hour)]
        cell[0] += 1
        cell[1] += record.lines or 0
        cell[2] += record.malformed_lines or 0
        cell[5] += record.out_of_range_lines or 0
    result = []
    for distribution_id in sorted({d for d, _ in cells}):
        hours = tuple(
            HourStatus(distribution_id, hour, *cells[(d, hour)]) for d, hour in sorted(cells) if d == distribution_id
        )
        processed = [h.hour for h in hours if h.files_processed]
        pending = pending_hours.get(distribution_id, [])
        oldest = now - (min(pending) + timedelta(hours=1)) if pending else None
        unreadable = tuple(
            (r.uri, r.unreadable) for r in records if r.distribution_id == distribution_id and r.unreadable
        )
        newest = max(processed, default=None)
        result.append(DistributionStatus(distribution_id, hours, newest, len(pending), oldest, unreadable))
    return result


def changed_files(listed: Sequence[LogFile], records: Sequence[FileRecord]) -> list[tuple[LogFile, FileRecord]]:
    """Recorded files that differ from what was recorded: another size, or (S3) another ETag."""
    by_uri = {r.uri: r for r in records}
    changed = []
    for log_file in listed:
        record = by_uri.get(log_file.uri)
        if record is None:
            continue
        etags = record.etag is not None and log_file.etag is not None
        if record.size != log_file.size or (etags and record.etag != log_file.etag):
            changed.append((log_file, record))
    return changed


def format_age(age: timedelta) -> str:
    """An age or lag as people read it: '3 d 16 h', '5 h 12 min', '4 min 30 s', '12 s' (two units at most)."""
    seconds = max(0, int(age.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"
