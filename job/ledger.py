"""The ledger of processed log files and the journal of batches being published, behind one interface."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import sys
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from job.errors import LedgerError
from job.layout import Layout, LogFile
from job.limits import MAX_DATAPOINT_AHEAD
from job.metrics import Datum, DatumKey


@dataclass(frozen=True)
class Batch:
    """Files whose metrics are being published together, with the exact requests computed for them.

    The requests are journaled before the first is sent, so a resumed batch publishes the same datums even if
    the SQL or the engine changed since.
    """

    id: str
    target: str
    namespace: str
    files: tuple[LogFile, ...]
    requests: tuple[tuple[Datum, ...], ...]
    lines: int
    malformed_lines: int
    # uri -> (lines, malformed lines) read from that file
    file_lines: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    # uri -> why the engine could not read it
    unreadable: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "target": self.target,
                "namespace": self.namespace,
                "files": [
                    {
                        "uri": f.uri,
                        "distribution_id": f.distribution_id,
                        "hour": f.hour.isoformat(),
                        "size": f.size,
                        "layout": f.layout.value,
                    }
                    for f in self.files
                ],
                "requests": [[d.to_json() for d in request] for request in self.requests],
                "lines": self.lines,
                "malformed_lines": self.malformed_lines,
                "file_lines": {uri: list(counts) for uri, counts in self.file_lines.items()},
                "unreadable": dict(self.unreadable),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Batch:
        data = json.loads(text)
        files = tuple(
            LogFile(f["distribution_id"], datetime.fromisoformat(f["hour"]), f["uri"], f["size"], Layout(f["layout"]))
            for f in data["files"]
        )
        requests = tuple(tuple(Datum.from_json(d) for d in request) for request in data["requests"])
        file_lines = {uri: (int(c[0]), int(c[1])) for uri, c in data.get("file_lines", {}).items()}
        return cls(
            data["id"],
            data["target"],
            data["namespace"],
            files,
            requests,
            data["lines"],
            data["malformed_lines"],
            file_lines,
            data.get("unreadable", {}),
        )


@dataclass(frozen=True)
class PendingBatch:
    """A journaled batch not yet committed: `sent` requests are confirmed; `in_flight` was started, unconfirmed."""

    batch: Batch
    sent: int
    in_flight: int | None
    in_flight_at: datetime | None = None


class Ledger(Protocol):
    """Records which files each target (query x destination) has published, and journals batches in progress."""

    def lock(self) -> AbstractContextManager[None]: ...

    def recorded(self, target: str, files: Sequence[LogFile] | None = None) -> set[str]:
        """The uris the target has published: all of them, or those among `files`."""
        ...

    def pending(self, target: str) -> list[PendingBatch]: ...

    def begin(self, batch: Batch) -> None: ...

    def mark_in_flight(self, batch_id: str, index: int, at: datetime) -> None: ...

    def mark_sent(self, batch_id: str, index: int) -> None: ...

    def commit(self, batch_id: str, at: datetime) -> None:
        """Record the batch's files and close its journal; idempotent."""
        ...

    def published_samples(self, namespace: str, sink_key: str, keys: Collection[DatumKey]) -> dict[DatumKey, float]:
        """SampleCount this ledger knows it published per key (committed batches, and the confirmed requests of
        pending ones), over every target that writes to this sink and namespace."""
        ...

    def fingerprint(self, target: str) -> str | None:
        """The fingerprint of the query text that published under this target, if it published."""
        ...

    def set_fingerprint(self, target: str, fingerprint: str, at: datetime) -> None: ...

    def file_records(self, target: str) -> list[FileRecord]:
        """Every recorded file of the target, for `cfmetrics status`."""
        ...


@dataclass(frozen=True)
class FileRecord:
    uri: str
    distribution_id: str
    hour: datetime
    size: int
    lines: int | None
    malformed_lines: int | None
    unreadable: str | None = None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
  target TEXT NOT NULL, uri TEXT NOT NULL, distribution_id TEXT NOT NULL, hour TEXT NOT NULL, size INTEGER NOT NULL,
  batch_id TEXT NOT NULL, recorded_at TEXT NOT NULL, lines INTEGER, malformed_lines INTEGER, unreadable TEXT,
  PRIMARY KEY (target, uri));
CREATE TABLE IF NOT EXISTS queries (target TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, recorded_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
  id TEXT PRIMARY KEY, target TEXT NOT NULL, created_at TEXT NOT NULL, payload TEXT NOT NULL,
  sent INTEGER NOT NULL DEFAULT 0, in_flight INTEGER, in_flight_at TEXT, committed_at TEXT, lines INTEGER NOT NULL,
  malformed_lines INTEGER NOT NULL);
-- The journal's datums live apart from the batch row, which changes twice per request: SQLite rewrites a whole
-- row (overflow pages included) on every UPDATE.
CREATE TABLE IF NOT EXISTS batch_payloads (id TEXT PRIMARY KEY, payload TEXT NOT NULL);
"""
# A batch's journal, wherever an earlier version kept it.
_PAYLOAD = "COALESCE(NULLIF(b.payload, ''), (SELECT p.payload FROM batch_payloads p WHERE p.id = b.id))"


_ADDED_COLUMNS = (
    ("files", "lines", "INTEGER"),
    ("files", "malformed_lines", "INTEGER"),
    ("files", "unreadable", "TEXT"),
    ("batches", "in_flight_at", "TEXT"),
)


class LocalLedger:
    """SQLite in a local folder; every step is one transaction, and one run at a time holds the folder's lock."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.folder / "ledger.sqlite3", isolation_level=None, timeout=60)
            self.db.executescript(_SCHEMA)
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"--state {folder}: cannot open the ledger ({exc})") from exc

    def __str__(self) -> str:
        return str(self.folder)

    def _migrate(self) -> None:
        """Add the columns later versions brought to a ledger an earlier version made."""
        for table, column, kind in _ADDED_COLUMNS:
            have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise runs that share this ledger: a second run waits until the first has finished."""
        with open(self.folder / "lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"waiting for another run that holds {self.folder / 'lock'} ...", file=sys.stderr)
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write(self, sql: str, *args: object) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            if self.db.execute(sql, args).rowcount != 1:
                raise sqlite3.DatabaseError(f"expected to change one row: {sql} {args[-1:]}")
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.db.execute("ROLLBACK") if self.db.in_transaction else None
            raise LedgerError(f"{self.folder}: ledger write failed ({exc})") from exc

    def published_samples(self, namespace: str, sink_key: str, keys: Collection[DatumKey]) -> dict[DatumKey, float]:
        wanted = set(keys)
        totals: dict[DatumKey, float] = dict.fromkeys(wanted, 0.0)
        if not wanted:
            return totals
        rows = self.db.execute(
            f"SELECT b.target, {_PAYLOAD}, b.sent, b.committed_at FROM batches b WHERE b.created_at >= ?",
            (oldest_batch_for(wanted).isoformat(),),
        )
        for target, payload, sent, committed_at in rows:
            if target.split("|")[1:2] != [sink_key]:
                continue
            batch = Batch.from_json(payload)
            if batch.namespace != namespace:
                continue
            confirmed = batch.requests if committed_at else batch.requests[:sent]
            for request in confirmed:
                for datum in request:
                    if datum.key in wanted:
                        totals[datum.key] += datum.samples
        return totals

    def fingerprint(self, target: str) -> str | None:
        row = self.db.execute("SELECT fingerprint FROM queries WHERE target = ?", (target,)).fetchone()
        return None if row is None else str(row[0])

    def set_fingerprint(self, target: str, fingerprint: str, at: datetime) -> None:
        self._write(
            "INSERT INTO queries (target, fingerprint, recorded_at) VALUES (?, ?, ?) "
            "ON CONFLICT (target) DO UPDATE SET fingerprint = excluded.fingerprint, recorded_at = excluded.recorded_at",
            target,
            fingerprint,
            at.isoformat(),
        )

    def file_records(self, target: str) -> list[FileRecord]:
        rows = self.db.execute(
            "SELECT uri, distribution_id, hour, size, lines, malformed_lines, unreadable FROM files WHERE target = ? "
            "ORDER BY uri",
            (target,),
        )
        return [FileRecord(u, d, datetime.fromisoformat(h), s, n, m, r) for u, d, h, s, n, m, r in rows]

    def recorded(self, target: str, files: Sequence[LogFile] | None = None) -> set[str]:
        found = {uri for (uri,) in self.db.execute("SELECT uri FROM files WHERE target = ?", (target,))}
        return found if files is None else found & {f.uri for f in files}

    def pending(self, target: str) -> list[PendingBatch]:
        rows = self.db.execute(
            f"SELECT {_PAYLOAD}, b.sent, b.in_flight, b.in_flight_at FROM batches b "
            "WHERE b.target = ? AND b.committed_at IS NULL ORDER BY b.created_at",
            (target,),
        )
        return [
            PendingBatch(Batch.from_json(p), sent, in_flight, datetime.fromisoformat(at) if at else None)
            for p, sent, in_flight, at in rows
        ]

    def begin(self, batch: Batch) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("INSERT INTO batch_payloads (id, payload) VALUES (?, ?)", (batch.id, batch.to_json()))
            self.db.execute(
                "INSERT INTO batches (id, target, created_at, payload, lines, malformed_lines) "
                "VALUES (?, ?, ?, '', ?, ?)",
                (batch.id, batch.target, datetime.now(UTC).isoformat(), batch.lines, batch.malformed_lines),
            )
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.db.execute("ROLLBACK") if self.db.in_transaction else None
            raise LedgerError(f"{self.folder}: ledger write failed: cannot journal batch {batch.id} ({exc})") from exc

    def mark_in_flight(self, batch_id: str, index: int, at: datetime) -> None:
        self._write("UPDATE batches SET in_flight = ?, in_flight_at = ? WHERE id = ?", index, at.isoformat(), batch_id)

    def mark_sent(self, batch_id: str, index: int) -> None:
        self._write(
            "UPDATE batches SET sent = ?, in_flight = NULL, in_flight_at = NULL WHERE id = ?", index + 1, batch_id
        )

    def commit(self, batch_id: str, at: datetime) -> None:
        """Record the batch's files and close it, in one transaction; committing a batch twice changes nothing,
        but a file another batch recorded is an error (it would have been published twice)."""
        row = self.db.execute(f"SELECT {_PAYLOAD} FROM batches b WHERE b.id = ?", (batch_id,)).fetchone()
        if row is None:
            raise LedgerError(f"{self.folder}: no batch {batch_id} to commit")
        batch = Batch.from_json(row[0])
        try:
            self.db.execute("BEGIN IMMEDIATE")
            for (uri,) in self.db.execute(
                "SELECT uri FROM files WHERE target = ? AND batch_id != ? AND uri IN (SELECT value FROM json_each(?))",
                (batch.target, batch_id, json.dumps([f.uri for f in batch.files])),
            ):
                raise sqlite3.IntegrityError(f"{uri} was already recorded by another batch")
            self.db.executemany(
                "INSERT OR IGNORE INTO files (target, uri, distribution_id, hour, size, batch_id, recorded_at, lines, "
                "malformed_lines, unreadable) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(batch.target, f.uri, f.distribution_id, f.hour.isoformat(), f.size, batch_id, at.isoformat(),
                  *batch.file_lines.get(f.uri, (None, None)), batch.unreadable.get(f.uri)) for f in batch.files],
            )  # fmt: skip
            self.db.execute("UPDATE batches SET committed_at = ? WHERE id = ?", (at.isoformat(), batch_id))
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.db.execute("ROLLBACK") if self.db.in_transaction else None
            raise LedgerError(f"{self.folder}: cannot record batch {batch_id} ({exc})") from exc


def oldest_batch_for(keys: Collection[DatumKey]) -> datetime:
    """No batch created before this can hold these minutes: CloudWatch takes timestamps at most 2 h ahead."""
    oldest: datetime = min(minute for _, _, minute in keys) - MAX_DATAPOINT_AHEAD - timedelta(hours=1)
    return oldest


def new_batch_id(files: Sequence[LogFile]) -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{os.getpid()}-{len(files)}"
