"""Queries of different chunks run ahead in threads (RunOptions.query_concurrency, capped by the engine's
max_concurrency); publishing stays on the main thread, one batch at a time, in plan order."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from job.adapters.duckdb_engine import DuckDBEngine
from job.adapters.local_store import LocalLogStore
from job.adapters.sinks import JsonlSink
from job.adapters.sqlite_ledger import LocalLedger
from job.core.batch import Batch
from job.core.errors import ConfigError, UnreadableFileError
from job.core.files import LogFile
from job.demo.sample_logs import generate
from job.ports import QueryResult
from job.query.sql_files import MINUTE_METRICS, SqlFile
from job.query.sql_values import SqlValue
from job.runner import Job, RunOptions
from tests.conftest import age_past_retry, jsonl_sums, read_jsonl
from tests.reference import scan_tree

HOUR = datetime(2026, 11, 27, 22, tzinfo=UTC)
NOW = datetime(2026, 11, 28, 3, tzinfo=UTC)
DISTS = [f"E{n:02d}CONCURRENT1" for n in range(12)]


class SlowEngine:
    """DuckDB's answers (one at a time: one connection) after a sleep outside the lock, counting the queries in
    flight and the threads they ran on."""

    name = "slow"

    def __init__(self, max_concurrency: int, delay: float = 0.15) -> None:
        self.inner, self.max_concurrency, self.delay = DuckDBEngine(threads=1), max_concurrency, delay
        self.lock, self.in_flight, self.most = threading.Lock(), 0, 0
        self.threads: set[str] = set()
        self.calls: list[tuple[str, int]] = []

    def query(self, sql: SqlFile, params: Mapping[str, SqlValue], files: Sequence[LogFile]) -> QueryResult:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self.threads.add(threading.current_thread().name)
            self.calls.append((files[0].distribution_id, len(files)))
        try:
            time.sleep(self.delay)
            if any("junk" in f.uri for f in files):
                raise UnreadableFileError(f"cannot read {files[0].uri}: not in gzip format")
            with self.lock:
                return self.inner.query(sql, params, files)
        finally:
            with self.lock:
                self.in_flight -= 1


class RecordingLedger(LocalLedger):
    """The order batches are begun in, and the thread that began them."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.begun: list[tuple[str, ...]] = []
        self.begin_threads: set[str] = set()

    def begin(self, batch: Batch) -> None:
        self.begun.append(tuple(f.uri for f in batch.files))
        self.begin_threads.add(threading.current_thread().name)
        super().begin(batch)


def make_job(root: Path, engine: SlowEngine, ledger: LocalLedger, out: Path, concurrency: int, **hooks: object) -> Job:
    options = RunOptions(namespace="Test/Concurrency", window=None, query_concurrency=concurrency)
    return Job(LocalLogStore(root), engine, ledger, JsonlSink(out), SqlFile.load(MINUTE_METRICS), options, **hooks)  # type: ignore[arg-type]


def test_queries_run_ahead_bounded_and_publish_in_plan_order_exactly_once(tmp_path: Path) -> None:
    root, out = tmp_path / "logs", tmp_path / "out.jsonl"
    generate(root, DISTS, HOUR, hours=2, lines_per_hour=40, files_per_hour=2)
    expected = scan_tree(root)
    engine, ledger = SlowEngine(max_concurrency=4), RecordingLedger(tmp_path / "state")
    report = make_job(root, engine, ledger, out, concurrency=3).run(NOW)
    # overlap is shown by the queries in flight at once, never by wall time (a loaded machine fails a timed assertion)
    assert 1 < engine.most <= 3, "min(option 3, engine 4) queries in flight, more than one"
    assert ledger.begun == [tuple(f.uri for f in chunk) for chunk in report.chunks], "published in plan order"
    assert ledger.begin_threads == {threading.main_thread().name}, "the ledger is used on the main thread only"
    records = read_jsonl(out)
    for dist in DISTS:
        dims = (("DistributionId", dist),)
        assert jsonl_sums(records, "Requests", dims) == {m: float(n) for m, n in expected.requests(dist).items()}
    assert not report.files_left and len(report.files_done) == report.files_new
    again = make_job(root, engine, ledger, out, concurrency=3).run(NOW)
    assert again.files_new == 0 and len(read_jsonl(out)) == len(records)


def test_concurrency_one_runs_no_thread(tmp_path: Path) -> None:
    root, out = tmp_path / "logs", tmp_path / "out.jsonl"
    generate(root, DISTS[:3], HOUR, hours=1, lines_per_hour=20, files_per_hour=1)
    for option, engine_cap in ((1, 8), (8, 1)):
        engine = SlowEngine(max_concurrency=engine_cap, delay=0.0)
        report = make_job(root, engine, LocalLedger(tmp_path / f"state{option}"), out, concurrency=option).run(NOW)
        assert report.files_new == 3 and engine.most == 1
        assert engine.threads == {threading.main_thread().name}


def test_stop_early_leaves_the_rest_and_publishes_nothing_twice(tmp_path: Path) -> None:
    root, out = tmp_path / "logs", tmp_path / "out.jsonl"
    generate(root, DISTS, HOUR, hours=1, lines_per_hour=30, files_per_hour=1)
    expected = scan_tree(root)
    engine, ledger = SlowEngine(max_concurrency=8, delay=0.05), RecordingLedger(tmp_path / "state")
    progress: list[int] = []
    job = make_job(
        root, engine, ledger, out, concurrency=4,
        on_progress=lambda report, chunk: progress.append(1), should_stop=lambda: len(progress) >= 3,
    )  # fmt: skip
    report = job.run(NOW)
    assert report.stopped_early and len(report.files_done) == 3
    assert len(ledger.begun) == 3, "no result of a query beyond the stop point was published"
    assert len(engine.calls) <= 3 + 4, "no more than the pool's width ran ahead"
    rest = make_job(root, engine, ledger, out, concurrency=4).run(NOW)
    assert rest.files_new == len(DISTS) - 3 and not rest.files_left
    records = read_jsonl(out)
    for dist in DISTS:
        dims = (("DistributionId", dist),)
        assert jsonl_sums(records, "Requests", dims) == {m: float(n) for m, n in expected.requests(dist).items()}


def test_unreadable_file_in_a_query_run_ahead_is_still_isolated_by_halving(tmp_path: Path) -> None:
    root, out = tmp_path / "logs", tmp_path / "out.jsonl"
    generate(root, DISTS[:4], HOUR, hours=1, lines_per_hour=60, files_per_hour=4)
    junk = root / DISTS[2] / "2026/11/27/22" / f"{DISTS[2]}.2026-11-27-22.junk.gz"
    junk.write_bytes(b"\x1f\x8b\x08\x00truncated")
    age_past_retry(junk)
    expected = scan_tree(root, only=[p for p in root.rglob("*.gz") if p != junk])
    engine = SlowEngine(max_concurrency=8, delay=0.02)
    report = make_job(root, engine, LocalLedger(tmp_path / "state"), out, concurrency=4).run(NOW)
    assert report.unreadable_files == [str(junk.resolve())]
    assert sum(1 for dist, _ in engine.calls if dist == DISTS[2]) > 1, "the batch was halved"
    records = read_jsonl(out)
    for dist in DISTS[:4]:
        dims = (("DistributionId", dist),)
        assert jsonl_sums(records, "Requests", dims) == {m: float(n) for m, n in expected.requests(dist).items()}


@pytest.mark.parametrize("value", [0, 65])
def test_query_concurrency_is_validated(value: int) -> None:
    with pytest.raises(ConfigError, match="query concurrency") as raised:
        RunOptions(namespace="Test/Concurrency", window=None, query_concurrency=value)
    assert raised.value.setting == "query_concurrency"
