"""The ledger of processed log files and the journal of batches being published, behind one interface."""

from __future__ import annotations

import fcntl
import json
import sqlite3
import sys
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from job.core.batch import Batch, FileRecord, PendingBatch, Target, oldest_batch_for, published_samples
from job.core.errors import LedgerError
from job.core.files import LogFile
from job.core.metrics import DatumKey

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
  target TEXT NOT NULL, uri TEXT NOT NULL, distribution_id TEXT NOT NULL, hour TEXT NOT NULL, size INTEGER NOT NULL,
  batch_id TEXT NOT NULL, recorded_at TEXT NOT NULL, lines INTEGER, malformed_lines INTEGER, unreadable TEXT,
  out_of_range_lines INTEGER, etag TEXT, PRIMARY KEY (target, uri));
CREATE TABLE IF NOT EXISTS queries (target TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, recorded_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
  id TEXT PRIMARY KEY, target TEXT NOT NULL, created_at TEXT NOT NULL, payload TEXT NOT NULL,
  sent INTEGER NOT NULL DEFAULT 0, in_flight INTEGER, in_flight_at TEXT, committed_at TEXT, lines INTEGER NOT NULL,
  malformed_lines INTEGER NOT NULL);
-- The journal's datums live apart from the batch row, which changes twice per request: SQLite rewrites a whole
-- row (overflow pages included) on every UPDATE.
CREATE TABLE IF NOT EXISTS batch_payloads (id TEXT PRIMARY KEY, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Which query publishes which metric name to a destination (sink) and namespace: one owner per metric.
CREATE TABLE IF NOT EXISTS owners (
  sink TEXT NOT NULL, namespace TEXT NOT NULL, metric TEXT NOT NULL, query TEXT NOT NULL, claimed_at TEXT NOT NULL,
  PRIMARY KEY (sink, namespace, metric));
"""
# The meta row of a target's last full listing of its look-back (job/core/schedule.py).
_FULL_LISTING = "last_full_listing:"
# A batch's journal, wherever an earlier version kept it.
_PAYLOAD = "COALESCE(NULLIF(b.payload, ''), (SELECT p.payload FROM batch_payloads p WHERE p.id = b.id))"


_ADDED_COLUMNS = (
    ("files", "lines", "INTEGER"),
    ("files", "malformed_lines", "INTEGER"),
    ("files", "unreadable", "TEXT"),
    ("batches", "in_flight_at", "TEXT"),
    ("files", "out_of_range_lines", "INTEGER"),
    ("files", "etag", "TEXT"),
)


class LocalLedger:
    """SQLite in a local folder; every step is one transaction, and one run at a time holds the folder's lock."""

    def __init__(self, folder: Path, read_only: bool = False) -> None:
        self.folder = folder.resolve()
        # Batches journaled or read by this object, so commit need not parse the journal back.
        self._batches: dict[str, Batch] = {}
        # read_only (`cfmetrics status`): nothing is created or written, no lock is taken; a ledger that is not
        # there reads as an empty one held in memory (`missing`).
        self.missing = read_only and not (self.folder / "ledger.sqlite3").is_file()
        if read_only:
            try:
                if self.missing:
                    self.db = sqlite3.connect(":memory:", isolation_level=None)
                    self.db.executescript(_SCHEMA)
                else:
                    uri = (self.folder / "ledger.sqlite3").as_uri() + "?mode=ro"
                    self.db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60)
                    self._check_readable()
            except sqlite3.Error as exc:
                raise LedgerError(f"--state {folder}: cannot read the ledger ({exc})") from exc
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.folder / "ledger.sqlite3", isolation_level=None, timeout=60)
            self.db.executescript(_SCHEMA)
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"--state {folder}: cannot open the ledger ({exc})") from exc

    def __str__(self) -> str:
        return str(self.folder)

    def _check_readable(self) -> None:
        """A ledger an older version wrote may lack later columns: reading it must not migrate it."""
        for table, column, _ in _ADDED_COLUMNS:
            have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                raise LedgerError(
                    f"--state {self.folder}: the ledger predates column {table}.{column}; run `cfmetrics run` once "
                    "to upgrade it (status does not write)"
                )

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
        if not keys:
            return {}
        rows = self.db.execute(
            f"SELECT {_PAYLOAD}, b.sent, b.committed_at FROM batches b WHERE b.created_at >= ?",
            (oldest_batch_for(keys).isoformat(),),
        )
        journals = ((Batch.from_json(p), None if committed else sent) for p, sent, committed in rows)
        return published_samples(journals, namespace, sink_key, keys)

    def fingerprint(self, target: Target) -> str | None:
        row = self.db.execute("SELECT fingerprint FROM queries WHERE target = ?", (target.key,)).fetchone()
        return None if row is None else str(row[0])

    def set_fingerprint(self, target: Target, fingerprint: str, at: datetime) -> None:
        self._write(
            "INSERT INTO queries (target, fingerprint, recorded_at) VALUES (?, ?, ?) "
            "ON CONFLICT (target) DO UPDATE SET fingerprint = excluded.fingerprint, recorded_at = excluded.recorded_at",
            target.key,
            fingerprint,
            at.isoformat(),
        )

    def file_records(self, target: Target, files: Sequence[LogFile] | None = None) -> list[FileRecord]:
        columns = "uri, distribution_id, hour, size, lines, malformed_lines, unreadable, out_of_range_lines, etag"
        if files is None:
            rows = self.db.execute(f"SELECT {columns} FROM files WHERE target = ? ORDER BY uri", (target.key,))
        else:
            rows = self.db.execute(
                f"SELECT {columns} FROM files WHERE target = ? AND uri IN (SELECT value FROM json_each(?)) "
                "ORDER BY uri",
                (target.key, json.dumps([f.uri for f in files])),
            )
        return [FileRecord(u, d, datetime.fromisoformat(h), s, n, m, r, o, e) for u, d, h, s, n, m, r, o, e in rows]

    def recorded(self, target: Target, files: Sequence[LogFile] | None = None) -> set[str]:
        if files is None:
            return {uri for (uri,) in self.db.execute("SELECT uri FROM files WHERE target = ?", (target.key,))}
        # Only the rows of the files listed, through the primary key: a ledger of millions of files costs a run
        # over a look-back window what the window holds.
        rows = self.db.execute(
            "SELECT uri FROM files WHERE target = ? AND uri IN (SELECT value FROM json_each(?))",
            (target.key, json.dumps([f.uri for f in files])),
        )
        return {uri for (uri,) in rows}

    def identity(self) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE name = 'ledger_id'").fetchone()
        if row is not None:
            return str(row[0])
        if self.missing:
            return "(none)"
        try:
            new_id = uuid.uuid4().hex[:16]
            self.db.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('ledger_id', ?)", (new_id,))
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.folder}: ledger write failed ({exc})") from exc
        return self.identity()

    def metric_owners(self, sink_key: str, namespace: str) -> dict[str, str]:
        rows = self.db.execute(
            "SELECT metric, query FROM owners WHERE sink = ? AND namespace = ?", (sink_key, namespace)
        )
        return {str(metric): str(query) for metric, query in rows}

    def claim_metrics(self, target: Target, metrics: Collection[str], at: datetime) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "INSERT OR IGNORE INTO owners (sink, namespace, metric, query, claimed_at) VALUES (?, ?, ?, ?, ?)",
                [(target.sink, target.namespace, m, target.query, at.isoformat()) for m in sorted(metrics)],
            )
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.db.execute("ROLLBACK") if self.db.in_transaction else None
            raise LedgerError(f"{self.folder}: ledger write failed ({exc})") from exc

    def pending(self, target: Target) -> list[PendingBatch]:
        rows = self.db.execute(
            f"SELECT {_PAYLOAD}, b.sent, b.in_flight, b.in_flight_at FROM batches b "
            "WHERE b.target = ? AND b.committed_at IS NULL ORDER BY b.created_at",
            (target.key,),
        )
        found = [
            PendingBatch(Batch.from_json(p), sent, in_flight, datetime.fromisoformat(at) if at else None)
            for p, sent, in_flight, at in rows
        ]
        self._batches.update((p.batch.id, p.batch) for p in found)
        return found

    def begin(self, batch: Batch) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("INSERT INTO batch_payloads (id, payload) VALUES (?, ?)", (batch.id, batch.to_json()))
            self.db.execute(
                "INSERT INTO batches (id, target, created_at, payload, lines, malformed_lines) "
                "VALUES (?, ?, ?, '', ?, ?)",
                (batch.id, batch.target.key, datetime.now(UTC).isoformat(), batch.lines, batch.malformed_lines),
            )
            self.db.execute("COMMIT")
            self._batches[batch.id] = batch
        except sqlite3.Error as exc:
            self.db.execute("ROLLBACK") if self.db.in_transaction else None
            raise LedgerError(f"{self.folder}: ledger write failed: cannot journal batch {batch.id} ({exc})") from exc

    def mark_in_flight(self, batch_id: str, index: int, at: datetime) -> None:
        self._write("UPDATE batches SET in_flight = ?, in_flight_at = ? WHERE id = ?", index, at.isoformat(), batch_id)

    def clear_in_flight(self, batch_id: str, index: int) -> None:
        self._write("UPDATE batches SET in_flight = NULL, in_flight_at = NULL WHERE id = ? AND in_flight = ?", batch_id,
                    index)  # fmt: skip

    def mark_sent(self, batch_id: str, index: int) -> None:
        self._write(
            "UPDATE batches SET sent = ?, in_flight = NULL, in_flight_at = NULL WHERE id = ?", index + 1, batch_id
        )

    def commit(self, batch_id: str, at: datetime) -> None:
        """Record the batch's files and close it, in one transaction; committing a batch twice changes nothing,
        but a file another batch recorded is an error (it would have been published twice)."""
        batch = self._batches.get(batch_id)
        if batch is None:
            row = self.db.execute(f"SELECT {_PAYLOAD} FROM batches b WHERE b.id = ?", (batch_id,)).fetchone()
            if row is None:
                raise LedgerError(f"{self.folder}: no batch {batch_id} to commit")
            batch = Batch.from_json(row[0])
        try:
            self.db.execute("BEGIN IMMEDIATE")
            for (uri,) in self.db.execute(
                "SELECT uri FROM files WHERE target = ? AND batch_id != ? AND uri IN (SELECT value FROM json_each(?))",
                (batch.target.key, batch_id, json.dumps([f.uri for f in batch.files])),
            ):
                raise sqlite3.IntegrityError(f"{uri} was already recorded by another batch")
            self.db.executemany(
                "INSERT OR IGNORE INTO files (target, uri, distribution_id, hour, size, batch_id, recorded_at, lines, "
                "malformed_lines, unreadable, out_of_range_lines, etag) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(batch.target.key, f.uri, f.distribution_id, f.hour.isoformat(), f.size, batch_id, at.isoformat(),
                  *batch.file_lines.get(f.uri, (None, None)), batch.unreadable.get(f.uri),
                  batch.out_of_range.get(f.uri, 0), f.etag) for f in batch.files],
            )  # fmt: skip
            closed = self.db.execute("UPDATE batches SET committed_at = ? WHERE id = ?", (at.isoformat(), batch_id))
            if closed.rowcount != 1:
                raise sqlite3.DatabaseError(f"no batch {batch_id} to commit")
            self.db.execute("COMMIT")
            self._batches.pop(batch_id, None)
        except sqlite3.Error as exc:
            self.db.execute("ROLLBACK") if self.db.in_transaction else None
            raise LedgerError(f"{self.folder}: cannot record batch {batch_id} ({exc})") from exc

    def last_full_listing(self, target: Target) -> datetime | None:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (_FULL_LISTING + target.key,)).fetchone()
        return None if row is None else datetime.fromisoformat(str(row[0]))

    def set_last_full_listing(self, target: Target, at: datetime) -> None:
        self._write(
            "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            _FULL_LISTING + target.key,
            at.isoformat(),
        )
