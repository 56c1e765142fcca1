"""The embedded engine: DuckDB reads the log files through a view built from the Athena DDL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import duckdb

from job.engine import Row
from job.errors import ConfigError, EngineError
from job.layout import LogFile, LogFormat
from job.sql_files import TABLE_DDL, SqlFile
from job.sql_values import SqlValue
from job.table_spec import TableSpec, table_spec
from job.translate import to_duckdb

# The values _load_partitions fills in, in this order.
PARTITION_COLUMNS = ("distributionid", "year", "month", "day", "hour")
# Where read_csv sets aside the lines it cannot decode.
REJECTS, REJECT_SCANS = "_rejected_lines", "_rejected_scans"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DuckDBEngine:
    """Runs sql/ on DuckDB after sqlglot translation; the table is a view over exactly the files of each query."""

    name = "duckdb"

    def __init__(
        self, ddl: SqlFile | None = None, threads: int | None = None, log_format: LogFormat = LogFormat.LEGACY
    ) -> None:
        if log_format is not LogFormat.LEGACY:
            raise ConfigError(f"--log-format {log_format.value}: not supported yet; expected legacy")
        self.log_format = log_format
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
        # ignore_errors + store_rejects: a line with invalid UTF-8 in a field the query reads is set aside and
        # counted as malformed (see _add_rejected) instead of failing the query and every rerun; invalid bytes in
        # fields it does not read are never decoded. An explicit compression, because DuckDB takes a '?' in a
        # path for a URL query and then no longer sees the '.gz'.
        compression = "'gzip'" if all(f.readable_path.endswith(".gz") for f in files) else "'auto'"
        scan = (
            f"read_csv([{paths}], columns={{{columns}}}, auto_detect=false, header=false, "
            f"skip={spec.header_lines}, delim={_quote(spec.delimiter)}, quote='', escape='', "
            f"null_padding=true, strict_mode=false, filename=true, compression={compression}, ignore_errors=true, "
            f"store_rejects=true, rejects_table='{REJECTS}', rejects_scan='{REJECT_SCANS}')"
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

    def _add_rejected(self, rows: list[Row], files: Sequence[LogFile]) -> list[Row]:
        """Count the lines DuckDB set aside (invalid UTF-8) in their file's row, as read but not valid."""
        if rows and "file" not in rows[0]:
            return rows  # a query without per-file rows
        try:
            rejected = self.connection.execute(
                f"SELECT s.file_path, count(DISTINCT e.line) FROM {REJECTS} e "
                f"JOIN {REJECT_SCANS} s USING (scan_id, file_id) GROUP BY 1"
            ).fetchall()
        except duckdb.CatalogException:
            return rows  # nothing was rejected, so DuckDB made no table
        uri_of = {f.readable_path: f.uri for f in files}
        file_rows = {r["file"]: r for r in rows if r.get("file") is not None and r.get("minute") is None}
        for path, count in rejected:
            uri = uri_of.get(path, path)
            if uri in file_rows:
                file_rows[uri]["requests"] += count
            else:
                blank = dict.fromkeys(rows[0]) if rows else {}
                rows.append({**blank, "grouping_id": 0b1110, "file": uri, "requests": count, "valid_requests": 0})
        return rows

    def query(self, sql: SqlFile, params: Mapping[str, SqlValue], files: Sequence[LogFile]) -> list[Row]:
        if not files:
            return []
        rendered = sql.render_placeholders(params)
        text = to_duckdb(rendered.text, str(sql.path))
        try:
            self._load_partitions(files)
            self.connection.execute(self._view_sql(files))
            self.connection.execute(f"DROP TABLE IF EXISTS {REJECTS}; DROP TABLE IF EXISTS {REJECT_SCANS}")
            cursor = self.connection.execute(text, rendered.bind_values())
            names = [d[0] for d in cursor.description or ()]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            return self._add_rejected(rows, files)
        except duckdb.Error as exc:
            raise EngineError(f"{sql.path}: DuckDB failed on {len(files)} file(s): {exc}") from exc
