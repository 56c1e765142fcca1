"""The publish path as it was before job/core/wire.py (commit bb0f0b4), kept for bench/publish.py to compare.

Packing sized each datum as a query-protocol body at its widest (datum_wire_bytes), the journal held every datum
as Datum.to_json, the sink handed boto3 Datum.to_api dicts (validation, serialisation, gzip) and the ledger's
commit parsed the whole journal back. Copied, not imported: the job no longer has this code.
"""

from __future__ import annotations

import heapq
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from job.adapters.sqlite_ledger import LocalLedger
from job.core.batch import Batch
from job.core.metrics import Datum

MAX_DATUMS = 1000
MAX_BYTES = 1_000_000
REQUEST_OVERHEAD_BYTES = 64 + 3 * 255
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*")


def _number(value: float) -> str:
    return repr(float(value))


def _quoted_length(text: str) -> int:
    return len(text) if _PLAIN.fullmatch(text) else len(quote(text, safe=""))


def datum_wire_bytes(datum: Datum) -> int:
    prefix = "MetricData.member.1000."
    pairs = [("MetricName", datum.metric), ("Timestamp", datum.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"))]
    pairs.append(("Unit", datum.unit.value))
    for i, (name, value) in enumerate(datum.dimensions, start=1):
        pairs += [(f"Dimensions.member.{i}.Name", name), (f"Dimensions.member.{i}.Value", value)]
    if datum.value is not None:
        pairs.append(("Value", _number(datum.value)))
    for i, (number, count) in enumerate(zip(datum.values, datum.counts, strict=True), start=1):
        pairs += [(f"Values.member.{i}", _number(number)), (f"Counts.member.{i}", _number(count))]
    return sum(_quoted_length(prefix + k) + _quoted_length(v) + 2 for k, v in pairs)


def pack(datums: Sequence[Datum], max_datums: int, max_bytes: int) -> list[tuple[Datum, ...]]:
    budget = max_bytes - REQUEST_OVERHEAD_BYTES
    sized = sorted(((datum_wire_bytes(d), i, d) for i, d in enumerate(datums)), key=lambda t: (-t[0], t[1]))
    total = sum(size for size, _, _ in sized)
    requests = max(math.ceil(len(datums) / max_datums), math.ceil(total / budget)) if datums else 0
    while True:
        placed = _worst_fit(sized, requests, budget, max_datums)
        if placed is not None:
            return [tuple(d for _, d in sorted(b, key=lambda t: t[0])) for b in placed if b]
        requests += 1


def _worst_fit(
    sized: Sequence[tuple[int, int, Datum]], requests: int, budget: int, max_datums: int
) -> list[list[tuple[int, Datum]]] | None:
    heap = [(-budget, b) for b in range(requests)]
    bins: list[list[tuple[int, Datum]]] = [[] for _ in range(requests)]
    for size, index, datum in sized:
        skipped = []
        while heap:
            negative_room, b = heapq.heappop(heap)
            if -negative_room >= size and len(bins[b]) < max_datums:
                bins[b].append((index, datum))
                heapq.heappush(heap, (negative_room + size, b))
                break
            if len(bins[b]) < max_datums:
                skipped.append((negative_room, b))
        else:
            return None
        for entry in skipped:
            heapq.heappush(heap, entry)
    return bins


@dataclass(frozen=True)
class LegacyBatch(Batch):
    """Journals format 1: every datum as Datum.to_json."""

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        del data["format"], data["wire"]
        data["requests"] = [[d.to_json() for d in request] for request in self.requests]
        return data


def legacy_batch(batch_id: str, template: Batch, requests: Sequence[tuple[Datum, ...]]) -> LegacyBatch:
    # placeholder fragments of the right length, so the batch does not serialise its datums the new way
    return LegacyBatch(
        batch_id, template.target, template.files, tuple(requests), template.lines, template.malformed_lines,
        fragments=tuple(() for _ in requests),
    )  # fmt: skip


class LegacyLedger(LocalLedger):
    """The old commit: the journal read back and parsed (json.loads and Datum.from_json of every datum)."""

    def commit(self, batch_id: str, at: datetime) -> None:
        row = self.db.execute("SELECT payload FROM batch_payloads WHERE id = ?", (batch_id,)).fetchone()
        data = json.loads(row[0])
        parsed = [Datum.from_json(d) for request in data["requests"] for d in request]
        assert len(parsed) == sum(len(r) for r in data["requests"])
        super().commit(batch_id, at)
