"""sql/ on a real Trino (the engine under Athena) against the DuckDB engine and a plain-Python reading of the lines.

Counts are equal; percentiles (Trino's approx_percentile is approximate, DuckDB's twin is exact) are within a rank
tolerance of the nearest-rank percentile of the raw values; the partition predicates plan at most 27 partitions
for a 26-hour look-back; `cfmetrics run --engine trino` is exact, idempotent and picks up late files.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from job.adapters.duckdb_engine import DuckDBEngine
from job.adapters.local_store import LocalLogStore
from job.adapters.trino_engine import TrinoEngine, local_schema
from job.core.files import Layout, LogFile
from job.ports import Row
from job.query.sql_files import MINUTE_METRICS, TABLE_DDL, SqlFile, query_parameters
from job.runner import chunk_files
from tests.conftest import as_float_map, jsonl_sums, parse_summary, read_jsonl, run_cli
from tests.reference import Reference, scan_tree
from tests.test_real_lines import FIXTURES, UNPARSEABLE_HOUR, load_fixture_lines, own_hour, write_partitions

pytestmark = pytest.mark.trino

FIRST = datetime(2026, 11, 28, 22, tzinfo=UTC)  # across midnight
PERCENTILE_COLUMNS = {"time_taken_p50_ms": 0.5, "time_taken_p90_ms": 0.9, "time_taken_p99_ms": 0.99}
# Projection ranges of sql/cloudfront_logs_table.sql: the values a column without a usable predicate contributes.
PROJECTED_VALUES = {"year": 90, "month": 12, "day": 31, "hour": 24}


def rows_by_key(rows: list[Row]) -> dict[tuple[Any, ...], Row]:
    def minute(value: Any) -> str:
        return "" if value is None else f"{value:%Y-%m-%d %H:%M}"

    return {
        (
            int(r["grouping_id"]),
            minute(r["minute"]),
            r.get("result_type"),
            r.get("time_taken_bucket_ms"),
            r.get("file"),
            r.get("status_class"),
            r.get("ttfb_bucket_ms"),
            r.get("edge_location"),
        ): r
        for r in rows
    }


def within_rank(values: list[int], got: float, q: float) -> bool:
    """`got` is a value of the data within 1 + 1 % of n ranks of the nearest-rank percentile (Trino's
    approx_percentile is approximate, and for tiny n the percentile is ambiguous)."""
    ordered = sorted(values)
    k = max(1, math.ceil(q * len(ordered)))
    below = sum(1 for v in ordered if v < got)
    upto = sum(1 for v in ordered if v <= got)
    slack = 1 + 0.01 * len(ordered)
    return below <= k - 1 + slack and upto >= k - slack


def make_logs(root: Path, layout: Layout, seed: int) -> None:
    from job.demo.sample_logs import generate

    generate(root, ["E1CONF", "E2CONF"], FIRST, hours=4, lines_per_hour=250, files_per_hour=2, seed=seed,
             layout=layout)  # fmt: skip


def compare_engines(root: Path, layout: Layout, trino_url: str, query: str = MINUTE_METRICS) -> int:
    """Run `query` over every distribution's files on both engines; assert their rows agree; return rows seen."""
    files = list(LocalLogStore(root).list(None).files)
    trino = TrinoEngine(url=trino_url, ddl=SqlFile.load(TABLE_DDL), local_root=root, layout=layout)
    duckdb = DuckDBEngine(threads=1)
    sql = SqlFile.load(query)
    ref = scan_tree(root)
    seen = 0
    for distribution_id in sorted({f.distribution_id for f in files}):
        mine = [f for f in files if f.distribution_id == distribution_id]
        for chunk in chunk_files(mine, 1000, 200_000):
            params = query_parameters(distribution_id, [f.hour for f in chunk], [f.uri for f in chunk])
            on_trino = trino.query(sql, params, chunk)
            on_duckdb = duckdb.query(sql, params, chunk)
            assert trino.stats[-1].physical_input_bytes == sum(f.size for f in chunk), "Trino read unnamed files"
            got, want = rows_by_key(on_trino.rows), rows_by_key(on_duckdb.rows)
            assert set(got) == set(want), f"{distribution_id}: the engines' groups differ"
            values = ref.time_taken_values(distribution_id)
            for key, row in got.items():
                other = want[key]
                for column, value in row.items():
                    if column in PERCENTILE_COLUMNS:
                        if key[0] != 7:
                            continue  # computed in every grouping set, published only per minute (grouping 7)
                        if value is None:
                            assert other[column] is None
                            continue
                        stamp = datetime.strptime(key[1], "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
                        assert within_rank(values[stamp], value, PERCENTILE_COLUMNS[column]), (key, column, value)
                    elif column != "minute":
                        assert value == other[column] or (value is None and other[column] is None), (key, column)
            seen += len(got)
    return seen


@pytest.mark.parametrize("layout", [Layout.PLAIN, Layout.HIVE])
def test_minute_metrics_on_trino_equal_duckdb(trino_url: str, tmp_path: Path, layout: Layout) -> None:
    root = tmp_path / "logs"
    make_logs(root, layout, seed=91 if layout is Layout.PLAIN else 92)
    assert compare_engines(root, layout, trino_url) > 500


def test_status_5xx_on_trino_equals_duckdb(trino_url: str, tmp_path: Path) -> None:
    root = tmp_path / "logs"
    make_logs(root, Layout.PLAIN, seed=93)
    assert compare_engines(root, Layout.PLAIN, trino_url, query="status_5xx") > 0


@pytest.mark.skipif(not FIXTURES.exists(), reason=f"real-line fixtures not found at {FIXTURES}")
def test_real_lines_of_every_era_on_trino_equal_duckdb(trino_url: str, tmp_path: Path) -> None:
    placed: dict[tuple[str, datetime], list[bytes]] = defaultdict(list)
    for line in load_fixture_lines():
        placed[("EREALTRINO", own_hour(line.raw) or UNPARSEABLE_HOUR)].append(line.raw)
    root = tmp_path / "logs"
    write_partitions(root, placed, hive=set())
    assert compare_engines(root, Layout.PLAIN, trino_url) > 50


def planned_partitions(trino_cursor_factory: Any, schema: str, where: str) -> int:
    """What projection plans for a query: the product, over the partition columns, of the values each column's
    domain keeps (EXPLAIN (TYPE IO) gives the domains Trino hands the connector); a column whose domain is not a
    list of values contributes its whole projected range."""
    cursor = trino_cursor_factory(schema)
    cursor.execute(f"EXPLAIN (TYPE IO, FORMAT JSON) SELECT count(*) FROM cloudfront_logs WHERE {where}")
    plan = json.loads(cursor.fetchall()[0][0])
    (table,) = plan["inputTableColumnInfos"]
    domains = {c["columnName"]: c["domain"]["ranges"] for c in table["constraint"].get("columnConstraints", [])}
    product = 1
    for column, full in PROJECTED_VALUES.items():
        ranges = domains.get(column)
        if ranges is None:
            product *= full
            continue
        single = all(r["low"].get("value") == r["high"].get("value") and r["low"]["bound"] == "EXACTLY" for r in ranges)
        product *= len(ranges) if single else full
    return product


def test_a_26_hour_look_back_plans_at_most_27_partitions(
    trino_url: str, trino_cursor_factory: Any, tmp_path: Path
) -> None:
    root = tmp_path / "logs"
    now = datetime(2026, 11, 29, 3, tzinfo=UTC)
    files = [
        LogFile(
            "E1PLAN", hour, str(root / f"E1PLAN/{hour:%Y/%m/%d/%H}/E1PLAN.{hour:%Y-%m-%d-%H}.a.gz"), 1, Layout.PLAIN
        )
        for hour in (now - timedelta(hours=h) for h in range(26))
    ]
    trino = TrinoEngine(url=trino_url, ddl=SqlFile.load(TABLE_DDL), local_root=root)
    root.mkdir()
    trino.ensure_table()
    schema = local_schema(root)
    total = 0
    for chunk in chunk_files(sorted(files), 1000, 200_000):
        params = query_parameters("E1PLAN", [f.hour for f in chunk], [f.uri for f in chunk])
        literal = SqlFile.load(MINUTE_METRICS).render_literal(params)
        where = literal.split("WHERE", 1)[1].split('AND "$path"', 1)[0]
        total += planned_partitions(trino_cursor_factory, schema, where)
    assert total <= 27
    # The predicate this replaced gives projection no usable domain on any column: Trino enumerates every
    # projected partition (2010-2099 x 12 x 31 x 24) before filtering them; bench/trino_pruning.py measures the
    # planning time of both (docs/DEPLOY.md).


def test_cli_run_on_trino_is_exact_idempotent_and_takes_late_files(trino_url: str, tmp_path: Path) -> None:
    from job.demo.sample_logs import write_log_file

    root, out, state = tmp_path / "logs", tmp_path / "out.jsonl", tmp_path / "state"
    make_logs(root, Layout.PLAIN, seed=94)
    args = ["run", "--engine", "trino", "--trino-url", trino_url, "--logs", str(root), "--sink", f"jsonl:{out}",
            "--state", str(state)]  # fmt: skip
    first = run_cli(*args)
    assert first.code == 0, first.err
    ref: Reference = scan_tree(root)
    records = read_jsonl(out)
    for d in ref.distributions:
        assert jsonl_sums(records, "Requests", [("DistributionId", d)]) == as_float_map(ref.requests(d))
    again = run_cli(*args)
    assert again.code == 0 and parse_summary(again.err)["new"] == 0
    assert len(read_jsonl(out)) == len(records), "a rerun publishes nothing"
    late = write_log_file(root, "E1CONF", FIRST, 77, random.Random(5), suffix="late")
    third = run_cli(*args)
    assert third.code == 0 and parse_summary(third.err)["new"] == 1, third.err
    expected = scan_tree(root)
    records = read_jsonl(out)
    assert jsonl_sums(records, "Requests", [("DistributionId", "E1CONF")]) == as_float_map(expected.requests("E1CONF"))
    assert late.path.exists()
    shutil.rmtree(root)
