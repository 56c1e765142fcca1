"""The ledger in S3: one object per partition hour of recorded files, a journal per batch, and a lease, all
written with S3 conditional writes (If-None-Match / If-Match) so overlapping runs cannot both publish a file."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from job.core.batch import Batch, FileRecord, PendingBatch, Target, oldest_batch_for, published_samples
from job.core.errors import LedgerError
from job.core.files import LogFile
from job.core.metrics import DatumKey

# Longer than Lambda's 15-minute maximum timeout, so a live run never loses its lease to the next one; the
# handler passes its own function's timeout plus LEASE_MARGIN instead (job/wiring.py).
LEASE_DURATION = timedelta(minutes=20)
# What a lease outlives the run's deadline by: the clock skew between invocations, and a last ledger write.
LEASE_MARGIN = timedelta(minutes=2)
MAX_CONDITIONAL_RETRIES = 5
# Partition objects read at once when a run looks its listing up: a 26-hour look-back of one distribution is 27
# objects, of 100 distributions 2,700; one GET after another would take most of a run. boto3 clients are thread
# safe ("Low-level clients are thread safe", boto3 guide, "Multithreading or multiprocessing with clients").
LEDGER_READ_THREADS = 16


class LedgerBusy(LedgerError):
    """Another run holds the ledger's lease."""


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _now() -> datetime:
    return datetime.now(UTC)


class S3Ledger:
    """Same interface as LocalLedger; every write is conditional, every step survives a crash between steps."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        owner: str,
        clock: Callable[[], datetime] = _now,
        lease: timedelta = LEASE_DURATION,
    ) -> None:
        self.client, self.bucket, self.prefix, self.owner, self.clock = client, bucket, prefix, owner, clock
        self.lease_duration = lease
        self._identity = ""
        self._token = ""  # the lease this ledger object holds, if any
        # Journals this object wrote or read (batch, its stored form), so commit need not read and parse them back.
        self._batches: dict[str, tuple[Batch, dict[str, Any]]] = {}

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    # -- objects --------------------------------------------------------------------------------------------
    def _get(self, key: str) -> tuple[Any, str] | None:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return None
            raise LedgerError(f"s3://{self.bucket}/{key}: cannot read the ledger ({exc})") from exc
        return json.loads(answer["Body"].read()), str(answer["ETag"])

    def _put(self, key: str, body: Any, if_match: str | None = None, create_only: bool = False) -> bool:
        """Write `body`; False when the condition failed (someone else wrote first)."""
        extra: dict[str, str] = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"} if create_only else {}
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=json.dumps(body).encode(), ContentType="application/json", **extra
            )
        except ClientError as exc:
            if _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                return False
            raise LedgerError(f"s3://{self.bucket}/{key}: cannot write the ledger ({exc})") from exc
        return True

    def _delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            raise LedgerError(f"s3://{self.bucket}/{key}: cannot delete ({exc})") from exc

    def _keys(self, prefix: str) -> Iterator[str]:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", ()):
                yield str(item["Key"])

    def _root(self, target: Target) -> str:
        digest = hashlib.sha256(target.key.encode()).hexdigest()[:16]
        return f"{self.prefix}{target.query}-{digest}/"

    def _partition_key(self, target: Target, distribution_id: str, hour: datetime) -> str:
        return f"{self._root(target)}files/{distribution_id}/{hour:%Y%m%d%H}.json"

    # -- the Ledger interface -------------------------------------------------------------------------------
    @property
    def _lease_key(self) -> str:
        return f"{self.prefix}lease.json"

    def _lease(self) -> dict[str, str]:
        return {"owner": self.owner, "token": self._token, "expires": (self.clock() + self.lease_duration).isoformat()}

    @contextmanager
    def lock(self) -> Iterator[None]:
        """A lease object created with If-None-Match; an expired lease is taken over with If-Match. Its token tells
        our own lease from another run's (a create whose answer was lost, then retried, finds our token)."""
        key = self._lease_key
        self._token = uuid.uuid4().hex
        if not self._put(key, self._lease(), create_only=True):
            current = self._get(key)
            if current is not None and current[0].get("token") != self._token:
                body, etag = current
                if datetime.fromisoformat(body["expires"]) > self.clock():
                    raise LedgerBusy(
                        f"{self}: another run ({body['owner']}) holds the lease until {body['expires']}; if that "
                        "run was killed, the lease expires then and the next run takes it over"
                    )
                if not self._put(key, self._lease(), if_match=etag):
                    raise LedgerBusy(f"{self}: another run took the expired lease first")
            elif current is None and not self._put(key, self._lease(), create_only=True):
                raise LedgerBusy(f"{self}: another run took the lease first")
        try:
            yield
        finally:
            current = self._get(key)
            if current is not None and current[0].get("token") == self._token:
                self._delete(key)
            self._token = ""

    def _renew(self) -> None:
        """Extend our lease before each step that publishes or records; stop if another run has taken it over."""
        if not self._token:
            return  # not under lock(): tests and tools that drive the ledger directly
        current = self._get(self._lease_key)
        if current is None or current[0].get("token") != self._token:
            raise LedgerBusy(f"{self}: this run's lease was taken over by another run; stopping without publishing")
        if not self._put(self._lease_key, self._lease(), if_match=current[1]):
            raise LedgerBusy(f"{self}: this run's lease changed under it; stopping without publishing")

    def _get_many(self, keys: Sequence[str]) -> list[tuple[str, tuple[Any, str] | None]]:
        """(key, object or None) for each key, in order, read LEDGER_READ_THREADS at a time."""
        if len(keys) <= 1:
            return [(key, self._get(key)) for key in keys]
        with ThreadPoolExecutor(max_workers=min(LEDGER_READ_THREADS, len(keys))) as pool:
            return list(zip(keys, pool.map(self._get, keys), strict=True))

    def recorded(self, target: Target, files: Sequence[LogFile] | None = None) -> set[str]:
        if files is None:
            keys = [k for k in self._keys(f"{self._root(target)}files/") if k.endswith(".json")]
        else:
            keys = sorted({self._partition_key(target, f.distribution_id, f.hour) for f in files})
        found: set[str] = set()
        for _, current in self._get_many(keys):
            if current is not None:
                found |= set(current[0]["files"])
        return found if files is None else found & {f.uri for f in files}

    def published_samples(self, namespace: str, sink_key: str, keys: Collection[DatumKey]) -> dict[DatumKey, float]:
        if not keys:
            return {}
        since = oldest_batch_for(keys).strftime("%Y%m%dT%H%M%S")
        journals: list[tuple[Batch, int | None]] = []
        for key in self._keys(f"{self.prefix}done/"):
            if key.rsplit("/", 1)[-1] >= since:  # batch ids start with their creation time
                stored = self._get(key)
                if stored is not None:
                    journals.append((Batch.from_dict(stored[0]), None))
        journals += [(pending.batch, pending.sent) for pending in self.pending_all()]
        return published_samples(journals, namespace, sink_key, keys)

    def fingerprint(self, target: Target) -> str | None:
        current = self._get(f"{self._root(target)}query.json")
        return None if current is None else str(current[0]["fingerprint"])

    def set_fingerprint(self, target: Target, fingerprint: str, at: datetime) -> None:
        self._put(f"{self._root(target)}query.json", {"fingerprint": fingerprint, "at": at.isoformat()})

    def last_full_listing(self, target: Target) -> datetime | None:
        current = self._get(f"{self._root(target)}listing.json")
        return None if current is None else datetime.fromisoformat(str(current[0]["last_full_listing"]))

    def set_last_full_listing(self, target: Target, at: datetime) -> None:
        # one writer at a time (the lease): a plain overwrite
        self._put(f"{self._root(target)}listing.json", {"last_full_listing": at.isoformat()})

    def file_records(self, target: Target, files: Sequence[LogFile] | None = None) -> list[FileRecord]:
        records = []
        if files is None:
            keys: list[str] = list(self._keys(f"{self._root(target)}files/"))
        else:
            keys = sorted({self._partition_key(target, f.distribution_id, f.hour) for f in files})
        wanted = None if files is None else {f.uri for f in files}
        for key, current in self._get_many([k for k in keys if k.endswith(".json")]):
            if current is None:
                continue
            distribution_id, stamp = key.removesuffix(".json").split("/")[-2:]
            hour = datetime.strptime(stamp, "%Y%m%d%H").replace(tzinfo=UTC)
            for uri, info in current[0]["files"].items():
                if wanted is not None and uri not in wanted:
                    continue
                lines, malformed = info.get("lines"), info.get("malformed_lines")
                reason = info.get("unreadable")
                records.append(
                    FileRecord(
                        uri, distribution_id, hour, int(info["size"]), lines, malformed, reason,
                        info.get("out_of_range_lines"), info.get("etag"),
                    )
                )  # fmt: skip
        return sorted(records, key=lambda r: r.uri)

    def pending(self, target: Target) -> list[PendingBatch]:
        return [p for p in self.pending_all() if p.batch.target == target]

    def pending_all(self) -> list[PendingBatch]:
        batches = []
        for key in sorted(self._keys(f"{self.prefix}batches/")):
            if not key.endswith(".batch.json"):
                continue
            payload = self._get(key)
            if payload is None:
                continue
            progress = self._get(key.replace(".batch.json", ".progress.json"))
            state: dict[str, Any] = progress[0] if progress else {"sent": 0, "in_flight": None}
            batch = Batch.from_dict(payload[0])
            self._batches[batch.id] = (batch, payload[0])
            at = datetime.fromisoformat(state["in_flight_at"]) if state.get("in_flight_at") else None
            batches.append(PendingBatch(batch, int(state["sent"]), state["in_flight"], at))
        return batches

    def _batch_key(self, batch_id: str, kind: str) -> str:
        # Batch ids are unique across targets, so the journal needs no target in its key.
        return f"{self.prefix}batches/{batch_id}.{kind}.json"

    def begin(self, batch: Batch) -> None:
        stored = batch.to_dict()
        if not self._put(self._batch_key(batch.id, "batch"), stored, create_only=True):
            raise LedgerError(f"{self}: batch {batch.id} already exists")
        self._batches[batch.id] = (batch, stored)
        self._put(self._batch_key(batch.id, "progress"), {"sent": 0, "in_flight": None})

    def mark_in_flight(self, batch_id: str, index: int, at: datetime) -> None:
        self._renew()
        progress = {"sent": index, "in_flight": index, "in_flight_at": at.isoformat()}
        self._put(self._batch_key(batch_id, "progress"), progress)

    def clear_in_flight(self, batch_id: str, index: int) -> None:
        self._put(self._batch_key(batch_id, "progress"), {"sent": index, "in_flight": None})

    def identity(self) -> str:
        if not self._identity:
            key = f"{self.prefix}ledger-id.json"
            self._put(key, {"id": uuid.uuid4().hex[:16]}, create_only=True)  # the first writer's id stays
            current = self._get(key)
            if current is None:
                raise LedgerError(f"s3://{self.bucket}/{key}: the ledger id was written and cannot be read back")
            self._identity = str(current[0]["id"])
        return self._identity

    def _owners_key(self, sink_key: str, namespace: str) -> str:
        digest = hashlib.sha256(f"{sink_key}|{namespace}".encode()).hexdigest()[:16]
        return f"{self.prefix}owners/{digest}.json"

    def metric_owners(self, sink_key: str, namespace: str) -> dict[str, str]:
        current = self._get(self._owners_key(sink_key, namespace))
        return {} if current is None else {m: str(v["query"]) for m, v in current[0]["metrics"].items()}

    def claim_metrics(self, target: Target, metrics: Collection[str], at: datetime) -> None:
        key = self._owners_key(target.sink, target.namespace)
        for _ in range(MAX_CONDITIONAL_RETRIES):
            current = self._get(key)
            empty: dict[str, Any] = {"sink": target.sink, "namespace": target.namespace, "metrics": {}}
            body, etag = current if current else (empty, None)
            owned: dict[str, Any] = body["metrics"]
            for metric in sorted(metrics):
                owned.setdefault(metric, {"query": target.query, "at": at.isoformat()})
            if self._put(key, body, if_match=etag, create_only=etag is None):
                return
        raise LedgerError(f"s3://{self.bucket}/{key}: kept changing under {MAX_CONDITIONAL_RETRIES} attempts")

    def mark_sent(self, batch_id: str, index: int) -> None:
        self._put(self._batch_key(batch_id, "progress"), {"sent": index + 1, "in_flight": None})

    def commit(self, batch_id: str, at: datetime) -> None:
        """Add the batch's files to their partition objects (read-modify-write with If-Match), then drop the
        journal; a crash in between leaves a journal whose files are all recorded, which the next run closes."""
        self._renew()
        known = self._batches.get(batch_id)
        if known is None:
            found = self._get(self._batch_key(batch_id, "batch"))
            if found is None:
                raise LedgerError(f"{self}: no journal for batch {batch_id}")
            known = (Batch.from_dict(found[0]), found[0])
        batch, stored = known
        groups: dict[str, list[LogFile]] = defaultdict(list)
        for log_file in batch.files:
            groups[self._partition_key(batch.target, log_file.distribution_id, log_file.hour)].append(log_file)
        for key, files in sorted(groups.items()):
            self._add_files(key, files, batch, at)
        # The journal is kept under done/ (expired by the bucket's lifecycle) so a later run can tell what this
        # ledger published when it must decide whether an interrupted request reached CloudWatch.
        self._put(f"{self.prefix}done/{batch_id}.batch.json", stored)
        self._delete(self._batch_key(batch_id, "progress"))
        self._delete(self._batch_key(batch_id, "batch"))
        self._batches.pop(batch_id, None)

    def _add_files(self, key: str, files: Sequence[LogFile], batch: Batch, at: datetime) -> None:
        for _ in range(MAX_CONDITIONAL_RETRIES):
            current = self._get(key)
            body, etag = current if current else ({"files": {}}, None)
            for log_file in files:
                lines, malformed = batch.file_lines.get(log_file.uri, (None, None))
                record = {"size": log_file.size, "batch": batch.id, "at": at.isoformat(), "lines": lines}
                record["unreadable"] = batch.unreadable.get(log_file.uri)
                record["out_of_range_lines"] = batch.out_of_range.get(log_file.uri, 0)
                record["etag"] = log_file.etag
                body["files"].setdefault(log_file.uri, {**record, "malformed_lines": malformed})
            if self._put(key, body, if_match=etag, create_only=etag is None):
                return
        raise LedgerError(f"s3://{self.bucket}/{key}: kept changing under {MAX_CONDITIONAL_RETRIES} attempts")
