"""Batches of files published together, their journal form, and the records a ledger keeps."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from job.core import wire
from job.core.errors import LedgerError
from job.core.files import Layout, LogFile
from job.core.limits import MAX_DATAPOINT_AHEAD
from job.core.metrics import Datum, DatumKey

# The journal format: 2 keeps each request as the exact datum fragments of its body (job/core/wire.py) under
# "wire"; 1 (no "format") kept each datum as Datum.to_json under "requests", and is still read.
JOURNAL_FORMAT = 2


@dataclass(frozen=True, order=True)
class Target:
    """What a ledger keeps apart: one query's files published to one destination (sink) and namespace."""

    query: str
    sink: str
    namespace: str

    @property
    def key(self) -> str:
        """The form ledgers store: 'query|sink|namespace' (a query name and a namespace hold no '|')."""
        return f"{self.query}|{self.sink}|{self.namespace}"

    @classmethod
    def parse(cls, key: str) -> Target:
        query, rest = key.split("|", 1)
        sink, namespace = rest.rsplit("|", 1)
        return cls(query, sink, namespace)

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class Batch:
    """Files whose metrics are being published together, with the exact requests computed for them.

    The requests are journaled before the first is sent, so a resumed batch publishes the same datums even if
    the SQL or the engine changed since: `fragments` holds each request's datums as the bytes of its body
    (job/core/wire.py), serialised once; a batch made without them (tests, a format-1 journal) gets them here.
    """

    id: str
    target: Target
    files: tuple[LogFile, ...]
    requests: tuple[tuple[Datum, ...], ...]
    lines: int
    malformed_lines: int
    # uri -> (lines, malformed lines) read from that file
    file_lines: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    # uri -> why the engine could not read it
    unreadable: Mapping[str, str] = field(default_factory=dict)
    # uri -> lines skipped because their minute is out of range (core/timerange.py)
    out_of_range: Mapping[str, int] = field(default_factory=dict)
    fragments: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if len(self.fragments) != len(self.requests):
            parts = tuple(tuple(wire.fragments(request)) for request in self.requests)
            object.__setattr__(self, "fragments", parts)

    @property
    def namespace(self) -> str:
        return self.target.namespace

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The journal form: plain JSON values."""
        return {
            "format": JOURNAL_FORMAT,
            "id": self.id,
            "target": self.target.key,
            "namespace": self.namespace,
            "files": [
                {
                    "uri": f.uri,
                    "distribution_id": f.distribution_id,
                    "hour": f.hour.isoformat(),
                    "size": f.size,
                    "layout": f.layout.value,
                    **({"etag": f.etag} if f.etag else {}),
                }
                for f in self.files
            ],
            "wire": self.fragments,
            "lines": self.lines,
            "malformed_lines": self.malformed_lines,
            "file_lines": {uri: list(counts) for uri, counts in self.file_lines.items()},
            "unreadable": dict(self.unreadable),
            "out_of_range": dict(self.out_of_range),
        }

    @classmethod
    def from_json(cls, text: str) -> Batch:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Batch:
        files = tuple(
            LogFile(
                f["distribution_id"],
                datetime.fromisoformat(f["hour"]),
                f["uri"],
                f["size"],
                Layout(f["layout"]),
                etag=f.get("etag"),
            )
            for f in data["files"]
        )
        fragments: tuple[tuple[str, ...], ...] = ()
        version = data.get("format", 1)
        if version == JOURNAL_FORMAT:
            fragments = tuple(tuple(request) for request in data["wire"])
            requests = tuple(tuple(map(wire.datum_from_fragment, request)) for request in fragments)
        elif version == 1:
            requests = tuple(tuple(Datum.from_json(d) for d in request) for request in data["requests"])
        else:
            raise LedgerError(
                f"batch {data.get('id')}: journal format {version} is newer than this version of the job reads "
                f"({JOURNAL_FORMAT}); finish the batch with the version that wrote it"
            )
        file_lines = {uri: (int(c[0]), int(c[1])) for uri, c in data.get("file_lines", {}).items()}
        return cls(
            data["id"],
            Target.parse(data["target"]),
            files,
            requests,
            data["lines"],
            data["malformed_lines"],
            file_lines,
            data.get("unreadable", {}),
            {uri: int(n) for uri, n in data.get("out_of_range", {}).items()},
            fragments,
        )


@dataclass(frozen=True)
class PendingBatch:
    """A journaled batch not yet committed: `sent` requests are confirmed; `in_flight` was started, unconfirmed."""

    batch: Batch
    sent: int
    in_flight: int | None
    in_flight_at: datetime | None = None


@dataclass(frozen=True)
class FileRecord:
    uri: str
    distribution_id: str
    hour: datetime
    size: int
    lines: int | None
    malformed_lines: int | None
    unreadable: str | None = None
    out_of_range_lines: int | None = None
    etag: str | None = None  # S3's ETag when recorded (local files: None; their size is compared)


def oldest_batch_for(keys: Collection[DatumKey]) -> datetime:
    """No batch created before this can hold these minutes: CloudWatch takes timestamps at most 2 h ahead."""
    oldest: datetime = min(minute for _, _, minute in keys) - MAX_DATAPOINT_AHEAD - timedelta(hours=1)
    return oldest


def published_samples(
    journals: Iterable[tuple[Batch, int | None]], namespace: str, sink: str, keys: Collection[DatumKey]
) -> dict[DatumKey, float]:
    """SampleCount a ledger knows it published per key, from its journals: (batch, confirmed requests), None for
    a committed batch (all of them); over every target that writes to this sink and namespace."""
    wanted = set(keys)
    totals: dict[DatumKey, float] = dict.fromkeys(wanted, 0.0)
    for batch, sent in journals:
        if batch.namespace != namespace or batch.target.sink != sink:
            continue
        for request in batch.requests if sent is None else batch.requests[:sent]:
            for datum in request:
                if datum.key in wanted:
                    totals[datum.key] += datum.samples
    return totals
