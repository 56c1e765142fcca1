"""Standard logging v2 on a real Trino: each v2 DDL of sql/ translated to Trino's Hive connector (query/ddl.py),
the normalising view of sql/ run unchanged over it, and sql/minute_metrics.sql's rows compared with the DuckDB
engine's over the same generated files: counts equal, percentiles within a tolerance (Trino's approx_percentile
is approximate, DuckDB's twin exact)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from job.adapters.duckdb_engine import DuckDBEngine
from job.adapters.local_store import LocalLogStore
from job.adapters.trino_engine import TrinoEngine
from job.core.files import Layout, LogFormat
from job.query.sql_files import MINUTE_METRICS, TABLE_DDL, SqlFile, query_parameters
from job.runner import chunk_files
from tests.trino.test_engine_conformance import PERCENTILE_COLUMNS, rows_by_key, within_rank

pytestmark = pytest.mark.trino

FIRST = datetime(2026, 11, 28, 23, tzinfo=UTC)
V2_FORMATS = [LogFormat.W3C, LogFormat.JSON, LogFormat.PARQUET]


def time_taken_ms(root: Path, log_format: LogFormat) -> dict[tuple[str, str], list[int]]:
    """(distribution, minute) -> time-taken values in ms, read from the files in plain Python (and pyarrow)."""
    import gzip
    import json

    values: dict[tuple[str, str], list[int]] = defaultdict(list)
    for log_file in LocalLogStore(root).list(None).files:
        path = Path(log_file.uri)
        if log_format is LogFormat.PARQUET:
            import pyarrow.parquet as pq  # type: ignore[import-untyped]

            records = [{k.replace("_", "-"): v for k, v in r.items()} for r in pq.read_table(path).to_pylist()]
        elif log_format is LogFormat.JSON:
            records = [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]
        else:
            lines = gzip.decompress(path.read_bytes()).decode().splitlines()
            fields = next(line for line in lines if line.startswith("#Fields:")).split()[1:]
            records = [dict(zip(fields, line.split("\t"), strict=False)) for line in lines if not line.startswith("#")]
        for r in records:
            minute = f"{r['date']} {r['time'][:5]}"
            values[(log_file.distribution_id, minute)].append(round(float(r["time-taken"]) * 1000))
    return values


def compare(root: Path, log_format: LogFormat, layout: Layout, trino_url: str) -> int:
    files = list(LocalLogStore(root).list(None).files)
    ddl = SqlFile.load(TABLE_DDL)
    trino = TrinoEngine(url=trino_url, ddl=ddl, local_root=root, layout=layout, log_format=log_format)
    duckdb = DuckDBEngine(ddl, threads=1, log_format=log_format)
    sql = SqlFile.load(MINUTE_METRICS)
    seen = 0
    values = time_taken_ms(root, log_format)
    for distribution_id in sorted({f.distribution_id for f in files}):
        mine = [f for f in files if f.distribution_id == distribution_id]
        for chunk in chunk_files(mine, 1000, 200_000):
            params = query_parameters(distribution_id, [f.hour for f in chunk], [f.uri for f in chunk])
            got = rows_by_key(trino.query(sql, params, chunk).rows)
            want = rows_by_key(duckdb.query(sql, params, chunk).rows)
            assert set(got) == set(want), f"{log_format.value} {distribution_id}: the engines' groups differ"
            for key, row in got.items():
                for column, value in row.items():
                    other: Any = want[key][column]
                    if column in PERCENTILE_COLUMNS and key[0] != 7:
                        continue  # computed in every grouping set, published only per minute (grouping 7)
                    if column in PERCENTILE_COLUMNS and value is not None and other is not None:
                        taken = values[(distribution_id, key[1])]
                        q = PERCENTILE_COLUMNS[column]
                        assert within_rank(taken, value, q) and within_rank(taken, other, q), (key, column, value)
                    elif column != "minute":
                        assert value == other, (log_format.value, key, column, value, other)
            seen += len(got)
    return seen


@pytest.mark.parametrize("layout", [Layout.PLAIN, Layout.HIVE])
@pytest.mark.parametrize("log_format", V2_FORMATS, ids=lambda f: f.value)
def test_v2_minute_metrics_on_trino_equal_duckdb(
    trino_url: str, tmp_path: Path, log_format: LogFormat, layout: Layout
) -> None:
    from job.demo.sample_logs import generate_v2

    root = tmp_path / "logs"
    generate_v2(root, log_format, ["E1V2", "E2V2"], FIRST, hours=3, lines_per_hour=200, seed=95, layout=layout)
    assert compare(root, log_format, layout, trino_url) > 300


def test_w3c_files_in_another_field_order_are_refused_by_name(trino_url: str, tmp_path: Path) -> None:
    import random

    from job.core.errors import ConfigError
    from job.demo.sample_logs import V2_FIELDS, write_v2_log_file

    root = tmp_path / "logs"
    swapped = [V2_FIELDS[1], V2_FIELDS[0], *V2_FIELDS[2:]]
    sample = write_v2_log_file(root, "E3V2", FIRST, 5, random.Random(3), LogFormat.W3C, fields=swapped)
    files = list(LocalLogStore(root).list(None).files)
    trino = TrinoEngine(url=trino_url, ddl=SqlFile.load(TABLE_DDL), local_root=root, log_format=LogFormat.W3C)
    params = query_parameters("E3V2", [f.hour for f in files], [f.uri for f in files])
    with pytest.raises(ConfigError, match=rf"{sample.path.name}: its '#Fields' header gives the order"):
        trino.query(SqlFile.load(MINUTE_METRICS), params, files)
