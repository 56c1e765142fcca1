"""The SQLite ledger: batch journal lifecycle, per-target records, atomic commit, the run lock."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from job.adapters.sqlite_ledger import LocalLedger
from job.core.batch import Batch, PendingBatch, Target
from job.core.errors import LedgerError
from job.core.files import Layout, LogFile
from job.core.metrics import Datum, Unit
from job.runner import new_batch_id

REPO = Path(__file__).resolve().parent.parent
HOUR = datetime(2026, 11, 28, 15, tzinfo=UTC)
MINUTE = datetime(2026, 11, 28, 15, 4, tzinfo=UTC)
AT = datetime(2026, 11, 28, 17, 0, 5, tzinfo=UTC)
TARGET = Target("minute_metrics", "cloudwatch@default", "CloudFront/AccessLogs")
OTHER_TARGET = Target("minute_metrics", "jsonl:/tmp/out.jsonl", "CloudFront/AccessLogs")


def log_file(name: str, size: int = 100, layout: Layout = Layout.PLAIN) -> LogFile:
    return LogFile("E2EXAMPLE", HOUR, f"/logs/E2EXAMPLE/2026/11/28/15/{name}", size, layout)


def batch(batch_id: str, files: tuple[LogFile, ...], target: Target = TARGET, requests: int = 3) -> Batch:
    dims = (("DistributionId", "E2EXAMPLE"),)
    reqs = tuple(
        (
            Datum("Requests", dims, MINUTE, Unit.COUNT, value=float(i + 1)),
            Datum(
                "TimeTaken", dims, MINUTE, Unit.MILLISECONDS, values=(0.1 + 0.2, 1e-300, -0.0), counts=(1.0, 2.0, 3.0)
            ),
        )
        for i in range(requests)
    )
    return Batch(batch_id, target, files, reqs, lines=42, malformed_lines=2)


@pytest.fixture
def ledger(tmp_path: Path) -> LocalLedger:
    return LocalLedger(tmp_path / "state")


def test_lifecycle(ledger: LocalLedger) -> None:
    files = (log_file("a.gz"), log_file("b.gz"))
    b = batch("b1", files)
    assert ledger.pending(TARGET) == []
    assert ledger.recorded(TARGET) == set()

    ledger.begin(b)
    assert ledger.pending(TARGET) == [PendingBatch(b, sent=0, in_flight=None)]
    assert ledger.recorded(TARGET) == set()

    ledger.mark_in_flight("b1", 0, AT)
    assert ledger.pending(TARGET) == [PendingBatch(b, sent=0, in_flight=0, in_flight_at=AT)]
    ledger.mark_sent("b1", 0)
    assert ledger.pending(TARGET) == [PendingBatch(b, sent=1, in_flight=None)]
    ledger.mark_in_flight("b1", 1, AT)
    ledger.mark_sent("b1", 1)
    ledger.mark_in_flight("b1", 2, AT)
    assert ledger.pending(TARGET) == [PendingBatch(b, sent=2, in_flight=2, in_flight_at=AT)]
    ledger.mark_sent("b1", 2)
    assert ledger.pending(TARGET) == [PendingBatch(b, sent=3, in_flight=None)]
    assert ledger.recorded(TARGET) == set(), "files are recorded only on commit"

    ledger.commit("b1", AT)
    assert ledger.pending(TARGET) == []
    assert ledger.recorded(TARGET) == {f.uri for f in files}


def test_state_survives_reopening(tmp_path: Path) -> None:
    first = LocalLedger(tmp_path)
    b1 = batch("b1", (log_file("a.gz"),))
    b2 = batch("b2", (log_file("b.gz"),))
    first.begin(b1)
    first.mark_sent("b1", 0)
    first.mark_in_flight("b1", 1, AT)
    first.begin(b2)
    first.commit("b2", AT)
    first.db.close()
    again = LocalLedger(tmp_path)
    assert again.pending(TARGET) == [PendingBatch(b1, sent=1, in_flight=1, in_flight_at=AT)]
    assert again.recorded(TARGET) == {log_file("b.gz").uri}


def test_pending_lists_uncommitted_batches_in_order(ledger: LocalLedger) -> None:
    batches = [batch(f"b{i}", (log_file(f"{i}.gz"),)) for i in range(4)]
    for b in batches:
        ledger.begin(b)
    ledger.commit("b1", AT)
    assert [p.batch.id for p in ledger.pending(TARGET)] == ["b0", "b2", "b3"]


def test_targets_are_independent(ledger: LocalLedger) -> None:
    same_file = log_file("a.gz")
    ledger.begin(batch("cw", (same_file,), TARGET))
    ledger.begin(batch("jsonl", (same_file, log_file("b.gz")), OTHER_TARGET))
    assert [p.batch.id for p in ledger.pending(TARGET)] == ["cw"]
    assert [p.batch.id for p in ledger.pending(OTHER_TARGET)] == ["jsonl"]
    ledger.commit("jsonl", AT)
    assert ledger.recorded(OTHER_TARGET) == {same_file.uri, log_file("b.gz").uri}
    assert ledger.recorded(TARGET) == set()
    assert [p.batch.id for p in ledger.pending(TARGET)] == ["cw"]
    ledger.commit("cw", AT)
    assert ledger.recorded(TARGET) == {same_file.uri}


def test_commit_is_all_or_nothing(ledger: LocalLedger) -> None:
    a, b, c = log_file("a.gz"), log_file("b.gz"), log_file("c.gz")
    ledger.begin(batch("first", (a,)))
    ledger.commit("first", AT)
    # a second batch naming an already recorded file cannot commit: none of its files is recorded
    ledger.begin(batch("second", (b, a, c)))
    with pytest.raises(LedgerError, match="cannot record batch second"):
        ledger.commit("second", AT)
    assert ledger.recorded(TARGET) == {a.uri}
    assert [p.batch.id for p in ledger.pending(TARGET)] == ["second"]
    # and the ledger still takes writes afterwards
    ledger.begin(batch("third", (b, c)))
    ledger.commit("third", AT)
    assert ledger.recorded(TARGET) == {a.uri, b.uri, c.uri}


def test_commit_of_unknown_batch_is_refused(ledger: LocalLedger) -> None:
    with pytest.raises(LedgerError, match="no batch nope"):
        ledger.commit("nope", AT)


def test_begin_twice_is_refused(ledger: LocalLedger) -> None:
    b = batch("b1", (log_file("a.gz"),))
    ledger.begin(b)
    with pytest.raises(LedgerError, match="ledger write failed"):
        ledger.begin(b)
    assert ledger.pending(TARGET) == [PendingBatch(b, sent=0, in_flight=None)]


def test_batch_json_round_trip_is_exact() -> None:
    files = (log_file("a.gz", 123, Layout.PLAIN), log_file("b.gz", 0, Layout.HIVE))
    b = batch("20261128T170005000000-1-2", files)
    back = Batch.from_json(b.to_json())
    assert back == b
    # LogFile equality ignores size and layout: compare them too
    assert [(f.uri, f.size, f.layout, f.hour, f.distribution_id) for f in back.files] == [
        (f.uri, f.size, f.layout, f.hour, f.distribution_id) for f in files
    ]
    assert back.requests == b.requests
    for got, want in zip(back.requests, b.requests, strict=True):
        for d_got, d_want in zip(got, want, strict=True):
            assert d_got.to_api() == d_want.to_api()
            assert [repr(n) for n in d_got.numbers()] == [repr(n) for n in d_want.numbers()]  # bit-exact, -0.0 too
    assert back.files[0].hour.tzinfo is not None


def test_new_batch_ids_differ() -> None:
    files = [log_file("a.gz")]
    at = datetime.now(UTC)
    ids = {new_batch_id(files, at) for _ in range(50)}
    assert len(ids) == 50, "the same microsecond still gives distinct ids"
    assert all(i.startswith(f"{at:%Y%m%dT%H%M%S%f}-{os.getpid()}-") and i.endswith("-1") for i in ids)


def test_open_failure_is_a_ledger_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(LedgerError, match="cannot open the ledger"):
        LocalLedger(blocker / "state")


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from job.adapters.sqlite_ledger import LocalLedger

    ledger = LocalLedger(Path(sys.argv[1]))
    with ledger.lock():
        Path(sys.argv[2]).write_text("acquired")
    """
)


def test_lock_serialises_processes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    marker = tmp_path / "child-acquired"
    ledger = LocalLedger(state)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with ledger.lock():
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(state), str(marker)],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stderr is not None
            # the child reports that it waits before it blocks; if it got the lock it would exit without a word
            first_line = child.stderr.readline()
            assert "waiting for another run" in first_line
            assert not marker.exists()
        except BaseException:
            child.kill()
            child.wait()
            raise
    # released: the child gets the lock and finishes
    assert child.wait(timeout=60) == 0
    assert marker.read_text() == "acquired"


def test_lock_can_be_taken_again_after_release(ledger: LocalLedger) -> None:
    with ledger.lock():
        pass
    with ledger.lock():
        ledger.begin(batch("b1", (log_file("a.gz"),)))
    assert len(ledger.pending(TARGET)) == 1


def test_recorded_reads_only_the_rows_of_the_files_listed(tmp_path: Path) -> None:
    """A run over a look-back window asks for the files it listed; the ledger looks them up by primary key
    instead of reading every record (3 M records once made a run with nothing to do take 20 s and 620 MB)."""
    ledger = LocalLedger(tmp_path / "state")
    rows = [
        (TARGET.key, f"/logs/old/{i}.gz", "E2EXAMPLE", HOUR.isoformat(), 1, "b0", AT.isoformat()) for i in range(5000)
    ]
    ledger.db.executemany(
        "INSERT INTO files (target, uri, distribution_id, hour, size, batch_id, recorded_at) VALUES (?,?,?,?,?,?,?)",
        rows,
    )
    wanted = [log_file(f"new-{i}.gz") for i in range(3)] + [
        LogFile("E2EXAMPLE", HOUR, "/logs/old/7.gz", 1, Layout.PLAIN)
    ]
    statements: list[str] = []
    ledger.db.set_trace_callback(statements.append)
    assert ledger.recorded(TARGET, wanted) == {"/logs/old/7.gz"}
    ledger.db.set_trace_callback(None)
    (query,) = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    plan = " ".join(str(row[-1]) for row in ledger.db.execute("EXPLAIN QUERY PLAN " + query.replace("?", "NULL")))
    assert "SEARCH files USING COVERING INDEX" in plan and "(target=? AND uri=?)" in plan, plan
    assert "SCAN files" not in plan, plan


def test_identity_is_made_once_and_kept(tmp_path: Path) -> None:
    first = LocalLedger(tmp_path / "state").identity()
    assert len(first) == 16 and LocalLedger(tmp_path / "state").identity() == first
    assert LocalLedger(tmp_path / "other").identity() != first


def test_metric_owners_are_claimed_once_per_destination(ledger: LocalLedger) -> None:
    ledger.claim_metrics(TARGET, {"Requests", "TimeTaken"}, AT)
    ledger.claim_metrics(Target("get_only", TARGET.sink, TARGET.namespace), {"Requests", "GetRequests"}, AT)
    assert ledger.metric_owners(TARGET.sink, TARGET.namespace) == {
        "Requests": "minute_metrics", "TimeTaken": "minute_metrics", "GetRequests": "get_only",
    }  # fmt: skip
    assert ledger.metric_owners(OTHER_TARGET.sink, OTHER_TARGET.namespace) == {}
