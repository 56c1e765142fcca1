"""Bad input never stops a run: malformed lines are counted per partition hour, unreadable files are isolated,
recorded and reported, unknown result types are bounded by a configurable allow-list."""

from __future__ import annotations

import gzip
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from job.adapters.duckdb_engine import DuckDBEngine
from job.adapters.local_store import LocalLogStore
from job.adapters.sinks import JsonlSink
from job.adapters.sqlite_ledger import LocalLedger
from job.core.errors import UnreadableFileError
from job.core.files import LogFile
from job.core.status import build_status
from job.demo.sample_logs import HEADER, generate
from job.ports import QueryResult
from job.query.sql_files import MINUTE_METRICS, SqlFile
from job.query.sql_values import SqlValue
from job.runner import Job, RunOptions
from tests.conftest import age_past_retry, jsonl_sums, read_jsonl, run_cli
from tests.reference import scan_tree

DIST = "E7BADINPUT01"
HOUR = datetime(2026, 11, 27, 22, tzinfo=UTC)


class PickyEngine:
    """DuckDB, except that it cannot read files whose name contains 'junk' (as a truncated gzip would fail)."""

    name = "picky"
    max_concurrency = 1

    def __init__(self) -> None:
        self.inner = DuckDBEngine()
        self.calls: list[int] = []

    def query(self, sql: SqlFile, params: Mapping[str, SqlValue], files: Sequence[LogFile]) -> QueryResult:
        self.calls.append(len(files))
        bad = [f.uri for f in files if "junk" in f.uri]
        if bad:
            raise UnreadableFileError(f"cannot read {bad[0]}: not in gzip format")
        return self.inner.query(sql, params, files)


def test_unreadable_file_is_isolated_recorded_and_reported(tmp_path: Path) -> None:
    root, out = tmp_path / "logs", tmp_path / "out.jsonl"
    generate(root, [DIST], HOUR, hours=2, lines_per_hour=300, files_per_hour=4)
    junk = root / DIST / "2026/11/27/23" / f"{DIST}.2026-11-27-23.junk.gz"
    junk.write_bytes(b"\x1f\x8b\x08\x00truncated")
    age_past_retry(junk)
    expected = scan_tree(root, only=[p for p in root.rglob("*.gz") if p != junk])

    engine, ledger = PickyEngine(), LocalLedger(tmp_path / "state")
    options = RunOptions(namespace="Test/Bad", window=None)
    job = Job(LocalLogStore(root), engine, ledger, JsonlSink(out), SqlFile.load(MINUTE_METRICS), options)
    report = job.run(datetime(2026, 11, 28, 3, tzinfo=UTC))

    assert report.unreadable_files == [str(junk.resolve())]
    assert len(engine.calls) > 1  # the batch was halved until the bad file stood alone
    records = read_jsonl(out)
    dims = (("DistributionId", DIST),)
    assert jsonl_sums(records, "Requests", dims) == {m: float(n) for m, n in expected.requests(DIST).items()}
    assert jsonl_sums(records, "UnreadableFiles", dims) == {datetime(2026, 11, 27, 23, tzinfo=UTC): 1.0}
    # recorded: the next run neither fails on it nor publishes anything again
    again = Job(LocalLogStore(root), engine, ledger, JsonlSink(out), SqlFile.load(MINUTE_METRICS), options)
    assert again.run(datetime(2026, 11, 28, 3, tzinfo=UTC)).files_new == 0
    assert len(read_jsonl(out)) == len(records)
    listed = LocalLogStore(root).list(None).files
    (status,) = build_status(listed, ledger.file_records(job.target), datetime(2026, 11, 28, 3, tzinfo=UTC))
    assert [uri for uri, _ in status.unreadable] == [str(junk.resolve())]
    assert "not in gzip format" in status.unreadable[0][1]


def test_malformed_lines_are_published_per_partition_hour(tmp_path: Path) -> None:
    root, out = tmp_path / "logs", tmp_path / "out.jsonl"
    generate(root, [DIST], HOUR, hours=2, lines_per_hour=200)
    bad_lines = [
        "2026-11-27\t23:10:00\tIAD89\t100",  # too few fields: no result type
        "not-a-date\t23:10:00\tIAD89\t100\t1.2.3.4\tGET\th\t/\t200\t-\tua\t-\t-\tHit\tid\th\thttps\t10\t0.1",
        "2026-11-27\t23:11:00\tIAD89\t100\t1.2.3.4\tGET\th\t/\t200\t-\tua\t-\t-\t-\tid\th\thttps\t10\t0.1",
    ]
    extra = root / DIST / "2026/11/27/23" / f"{DIST}.2026-11-27-23.bad.gz"
    with gzip.open(extra, "wt") as handle:
        handle.write(HEADER + "\n".join(bad_lines) + "\n")
    reference = scan_tree(root)
    assert reference.total_malformed() == 3
    result = run_cli("run", "--logs", str(root), "--sink", f"jsonl:{out}", "--state", str(tmp_path / "s"))
    assert result.code == 0, result.err
    malformed = jsonl_sums(read_jsonl(out), "MalformedLines", (("DistributionId", DIST),))
    assert malformed == {datetime(2026, 11, 27, 23, tzinfo=UTC): 3.0}


def test_result_type_allow_list_is_configurable(tmp_path: Path) -> None:
    root, out = tmp_path / "logs", tmp_path / "out.jsonl"
    generate(root, [DIST], HOUR, hours=1, lines_per_hour=400)
    reference = scan_tree(root)
    args = ("run", "--logs", str(root), "--sink", f"jsonl:{out}", "--state", str(tmp_path / "s"))
    result = run_cli(*args, "--result-types", "Hit,Miss")
    assert result.code == 0, result.err
    records = read_jsonl(out)
    published = {dict(map(tuple, (d.values() for d in r["Dimensions"]))).get("ResultType") for r in records}
    assert published - {None} == {"Hit", "Miss", "Other"}
    raw_types = reference.requests_by_type(DIST)
    renamed = reference.requests_by_type(DIST, {t: "Other" for t in raw_types if t not in ("Hit", "Miss")})
    other_sum = jsonl_sums(records, "Requests", (("DistributionId", DIST), ("ResultType", "Other")))
    assert other_sum == {m: float(n) for m, n in renamed["Other"].items()}
    bad = run_cli(*args, "--result-types", "Hit;DROP")
    assert bad.code != 0 and "--result-types" in bad.err
