"""The embedded engine: DuckDB reads the log files through a view built from the Athena DDL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import duckdb

from job.engine import Row
from job.errors import EngineError
from job.layout import LogFile
from job.sql_files import TABLE_DDL, SqlFile
from job.sql_values import SqlValue
from job.table_spec import TableSpec, table_spec
from job.translate import to_duckdb

# The values _load_partitions fills in, in this order.
PARTITION_COLUMNS = ("distributionid", "year", "month", "day", "hour")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DuckDBEngine:
    """Runs sql/ on DuckDB after sqlglot translation; the table is a view over exactly the files of each query."""

    name = "duckdb"

    def __init__(self, ddl: SqlFile | None = None, threads: int | None = None) -> None:
        self.spec: TableSpec = table_spec(ddl or SqlFile.load(TABLE_DDL))
        if self.spec.partition_columns != PARTITION_COLUMNS:
            raise EngineError(
                f"table DDL: expected partition columns {PARTITION_COLUMNS}, found {self.spec.partition_columns}"
            )
        self.connection = duckdb.connect(":memory:")
        self.connection.execute("SET TimeZone = 'UTC'")
        self.connection.execute("SET enable_progress_bar = false")
        if threads:
            self.connection.execute(f"SET threads = {int(threads)}")

    def _view_sql(self, files: Sequence[LogFile]) -> str:
        spec = self.spec
        columns = ", ".join(f"{_quote(c)}: 'VARCHAR'" for c in spec.columns)
        paths = ", ".join(_quote(f.readable_path) for f in files)
        # auto_detect off and every column VARCHAR: CloudFront writes '-' in numeric fields. quote/escape off:
        # fields hold raw quotes. No comment character: '#' appears inside real fields. null_padding fills the
        # fields older layouts lack; strict_mode off ignores extra trailing fields (a trailing TAB, newer layouts).
        scan = (
            f"read_csv([{paths}], columns={{{columns}}}, auto_detect=false, header=false, "
            f"skip={spec.header_lines}, delim={_quote(spec.delimiter)}, quote='', escape='', "
            "null_padding=true, strict_mode=false, filename=true)"
        )
        selected = ", ".join(f"l.{_ident(c)}" for c in spec.columns)
        partitions = ", ".join(f"p.{_ident(c)}" for c in spec.partition_columns)
        return (
            f"CREATE OR REPLACE TEMP VIEW {_ident(spec.name)} AS SELECT {selected}, {partitions}, "
            f'p."$path" AS "$path" FROM {scan} AS l JOIN _partitions AS p ON l.filename = p._read_from'
        )

    def _load_partitions(self, files: Sequence[LogFile]) -> None:
        names = ", ".join(f"{_ident(c)} VARCHAR" for c in (*self.spec.partition_columns, "$path", "_read_from"))
        self.connection.execute(f"CREATE OR REPLACE TEMP TABLE _partitions ({names})")
        rows = [
            (f.distribution_id, f"{f.hour:%Y}", f"{f.hour:%m}", f"{f.hour:%d}", f"{f.hour:%H}", f.uri, f.readable_path)
            for f in files
        ]
        placeholders = ", ".join("?" for _ in rows[0])
        self.connection.executemany(f"INSERT INTO _partitions VALUES ({placeholders})", rows)

    def query(self, sql: SqlFile, params: Mapping[str, SqlValue], files: Sequence[LogFile]) -> list[Row]:
        if not files:
            return []
        rendered = sql.render_placeholders(params)
        text = to_duckdb(rendered.text, str(sql.path))
        try:
            self._load_partitions(files)
            self.connection.execute(self._view_sql(files))
            cursor = self.connection.execute(text, rendered.bind_values())
            names = [d[0] for d in cursor.description or ()]
            return [dict(zip(names, row, strict=False)) for row in cursor.fetchall()]
        except duckdb.Error as exc:
            raise EngineError(f"{sql.path}: DuckDB failed on {len(files)} file(s): {exc}") from exc
