"""Partition planning and "$path" pruning measured on a real Trino: `python -m bench.trino_pruning [--url URL]`.

1. Planning: the metrics query's partition predicate (year/month/day/hour IN lists, one day per query) against the
   concat(year, month, day, hour) BETWEEN predicate it replaced, over a 26-hour window: planning time and splits.
2. "$path" pruning: one partition of 3,000 small gzip files; `count(*)` with `"$path" IN (...)` naming 1, 10, 100,
   1,000 and 1,500 of them; the bytes Trino read (physicalInputBytes) against the named files' bytes, at the
   default domain-compaction threshold and at 100 (the value of old releases).
Prints a Markdown table for docs/DEPLOY.md. Starts (and stops) its own Trino unless --url is given.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from job.adapters.trino_engine import LOCAL_SCHEME, TrinoEngine, local_schema
from job.demo.sample_logs import HEADER
from job.query.sql_files import TABLE_DDL, SqlFile
from tests.trino_server import trino_server

FILES_IN_PARTITION = 3000
NAMED = (1, 10, 100, 1000, 1500)
LINE = "\t".join(
    ["2026-11-28", "00:00:01", "IAD89-C1", "512", "192.0.2.1", "GET", "d.cloudfront.net", "/x", "200", "-", "ua", "-",
     "-", "Hit", "id", "h", "https", "10", "0.010"]
) + "\n"  # fmt: skip


@contextmanager
def server(url: str | None, catalogs: dict[str, dict[str, str]]) -> Iterator[str]:
    if url:
        yield url
        return
    with trino_server(extra_catalogs=catalogs) as running:
        yield running.url


def cursor(url: str, schema: str, catalog: str = "hive") -> Any:
    import trino

    host, port = url.removeprefix("http://").rsplit(":", 1)
    return trino.dbapi.connect(  # type: ignore[no-untyped-call]
        host=host, port=int(port), user="bench", catalog=catalog, schema=schema, legacy_prepared_statements=True
    ).cursor()


def timed(cur: Any, sql: str, params: Sequence[object] | None = None) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    cur.execute(sql, list(params) if params else None)
    cur.fetchall()
    return time.perf_counter() - started, dict(cur.stats or {})


def write_files(root: Path) -> tuple[list[Path], list[Path]]:
    """A 26-hour window of one file an hour, and one partition of FILES_IN_PARTITION files."""
    window = []
    now = datetime(2026, 11, 29, 3, tzinfo=UTC)
    for h in range(26):
        hour = now - timedelta(hours=h)
        folder = root / f"EPLAN/{hour:%Y/%m/%d/%H}"
        folder.mkdir(parents=True)
        path = folder / "f.gz"
        path.write_bytes(gzip.compress((HEADER + LINE).encode()))
        window.append(path)
    crowded = root / "EPATH/2026/11/28/00"
    crowded.mkdir(parents=True)
    files = []
    for i in range(FILES_IN_PARTITION):
        path = crowded / f"EPATH.2026-11-28-00.{i:05d}.gz"
        path.write_bytes(gzip.compress((HEADER + LINE * 20).encode(), mtime=0))
        files.append(path)
    return window, files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", help="a running Trino (default: start one)")
    args = parser.parse_args(argv)
    catalogs = {"hive_dct100": {"hive.domain-compaction-threshold": "100"}}
    with tempfile.TemporaryDirectory(prefix="trino-pruning-") as folder, server(args.url, catalogs) as url:
        root = Path(folder) / "logs"
        _, files = write_files(root)
        schema = local_schema(root)
        for catalog in ("hive", "hive_dct100"):
            TrinoEngine(url=url, ddl=SqlFile.load(TABLE_DDL), catalog=catalog, local_root=root).ensure_table()
        cur = cursor(url, schema)
        print("| predicate over a 26-hour window | planning + run (s) | splits |")
        print("| --- | ---: | ---: |")
        old = "distributionid = 'EPLAN' AND concat(year, month, day, hour) BETWEEN '2026112802' AND '2026112903'"
        seconds, stats = timed(cur, f"SELECT count(*) FROM cloudfront_logs WHERE {old}")
        print(f"| `concat(year, month, day, hour) BETWEEN` (before) | {seconds:.2f} | {stats.get('totalSplits')} |")
        total, splits = 0.0, 0
        for day, hours in (("28", [f"{h:02d}" for h in range(2, 24)]), ("29", ["00", "01", "02", "03"])):
            where = f"distributionid = 'EPLAN' AND year IN ('2026') AND month IN ('11') AND day IN ('{day}') AND hour IN ({', '.join(repr(h) for h in hours)})"  # noqa: E501
            seconds, stats = timed(cur, f"SELECT count(*) FROM cloudfront_logs WHERE {where}")
            total += seconds
            splits += int(stats.get("totalSplits") or 0)
        print(f"| `year/month/day/hour IN (...)`, one query per day (now) | {total:.2f} | {splits} |")
        print()
        print("| catalog | named files | named bytes | bytes read | read / named |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for catalog in ("hive", "hive_dct100"):
            cur = cursor(url, schema, catalog)
            for count in NAMED:
                named = files[:: FILES_IN_PARTITION // count][:count] if count > 1 else files[:1]
                marks = ", ".join("?" for _ in named)
                sql = (
                    "SELECT count(*) FROM cloudfront_logs WHERE distributionid = ? AND year = ? AND month = ? "
                    f'AND day = ? AND hour = ? AND "$path" IN ({marks})'
                )
                params = ["EPATH", "2026", "11", "28", "00", *(LOCAL_SCHEME + str(p) for p in named)]
                _, stats = timed(cur, sql, params)
                size = sum(p.stat().st_size for p in named)
                read = int(stats.get("physicalInputBytes") or 0)
                print(f"| {catalog} | {count:,} | {size:,} | {read:,} | {read / size:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
