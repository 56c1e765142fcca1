"""The pruning self-check: a query whose engine scanned more than the named files warns and sets ScanAmplification."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from job.adapters.duckdb_engine import DuckDBEngine
from job.adapters.local_store import LocalLogStore
from job.adapters.sinks import JsonlSink
from job.adapters.sqlite_ledger import LocalLedger
from job.core.files import LogFile
from job.core.limits import ATHENA_MIN_BYTES_PER_QUERY
from job.core.metrics import RunHealth, health_datums, scan_amplification
from job.demo.sample_logs import generate
from job.ports import QueryResult
from job.query.sql_files import MINUTE_METRICS, SqlFile
from job.query.sql_values import SqlValue
from job.runner import Job, RunOptions

DIST = "E7SCANCHECK1"
HOUR = datetime(2026, 11, 27, 22, tzinfo=UTC)


class ReportingEngine:
    """DuckDB's answers, with a scan figure as an engine that reports one (Athena, Trino) would give."""

    name = "reporting"
    max_concurrency = 1

    def __init__(self, factor: float, floor: int = 0) -> None:
        self.inner, self.factor, self.floor = DuckDBEngine(threads=1), factor, floor

    def query(self, sql: SqlFile, params: Mapping[str, SqlValue], files: Sequence[LogFile]) -> QueryResult:
        result = self.inner.query(sql, params, files)
        scanned = int(sum(f.size for f in files) * self.factor)
        return replace(result, scanned_bytes=scanned, scan_floor_bytes=self.floor, query_id="q-1")


def run(tmp_path: Path, engine: ReportingEngine) -> tuple[float | None, list[str]]:
    root = tmp_path / "logs"
    generate(root, [DIST], HOUR, hours=1, lines_per_hour=100)
    messages: list[str] = []
    store, ledger, sink = LocalLogStore(root), LocalLedger(tmp_path / "state"), JsonlSink(tmp_path / "out.jsonl")
    options = RunOptions(namespace="Test/Scan", window=None)
    job = Job(store, engine, ledger, sink, SqlFile.load(MINUTE_METRICS), options, log=messages.append)
    report = job.run(datetime(2026, 11, 28, 3, tzinfo=UTC))
    return report.scan_amplification, messages


def test_a_query_that_reads_only_its_files_passes(tmp_path: Path) -> None:
    ratio, messages = run(tmp_path, ReportingEngine(1.0))
    assert ratio == pytest.approx(1.0)
    assert not [m for m in messages if "WARNING" in m]


def test_a_query_that_reads_other_files_warns_with_its_id(tmp_path: Path) -> None:
    ratio, messages = run(tmp_path, ReportingEngine(3.0))
    assert ratio == pytest.approx(3.0)
    (warning,) = [m for m in messages if "WARNING" in m]
    assert "q-1" in warning and "3.00x" in warning


def test_athenas_10_mb_minimum_is_not_amplification(tmp_path: Path) -> None:
    # a small query billed (and reported) at the 10 MB floor
    assert scan_amplification(ATHENA_MIN_BYTES_PER_QUERY, 50_000, ATHENA_MIN_BYTES_PER_QUERY) == 1.0
    assert scan_amplification(3 * ATHENA_MIN_BYTES_PER_QUERY, 50_000, ATHENA_MIN_BYTES_PER_QUERY) == 3.0


def test_the_health_metric_carries_the_runs_largest_ratio() -> None:
    now = datetime(2026, 11, 28, 3, 7, tzinfo=UTC)
    with_scan = {d.metric: d.value for d in health_datums(RunHealth(1, 0, 10, 0, None, 2.5), now)}
    assert with_scan["ScanAmplification"] == 2.5
    without = {d.metric for d in health_datums(RunHealth(1, 0, 10, 0), now)}
    assert "ScanAmplification" not in without
