"""The embedded engine: DuckDB reads the log files through a view built from the Athena DDL.

Legacy logs: the view cloudfront_logs is built from sql/cloudfront_logs_table.sql. Standard logging v2 (JSON,
Parquet, w3c/plain): the view cloudfront_logs_v2 is built from the format's sql/cloudfront_logs_v2_<format>_table.sql
and the normalising view sql/cloudfront_logs_v2_view.sql, translated like any query, turns it into cloudfront_logs.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace

from job.adapters.duckdb_readers import TextLayout, select_columns, text_layout
from job.core.errors import EngineError, QueryTimedOut, UnreadableFileError
from job.core.files import LogFile, LogFormat
from job.ports import QueryResult
from job.query.ddl import NORMALISING_VIEW, TableSpec, V2Table, ddl_name, table_spec, v2_table, view_sql
from job.query.sql_files import TABLE_DDL, SqlFile
from job.query.sql_values import SqlValue
from job.query.translate import to_duckdb

# The values _load_partitions fills in, in this order.
PARTITION_COLUMNS = ("distributionid", "year", "month", "day", "hour")
# Where read_csv sets aside the lines it cannot decode.
REJECTS, REJECT_SCANS = "_rejected_lines", "_rejected_scans"
# DuckDB's messages when a file's bytes, not the query, are at fault (see also athena_engine.DATA_ERRORS).
DATA_ERRORS = ("GZIP stream", "too small to be a Parquet file", "No magic bytes found", "Invalid Parquet file")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _by_compression(files: Sequence[LogFile]) -> dict[str, list[LogFile]]:
    """v2 text and JSON files by compression as Athena decides it: by the name of the file in the log store (gzip
    for '.gz'), not by the name of a downloaded copy; explicit, as DuckDB takes a '?' in a path for a URL query."""
    groups: dict[str, list[LogFile]] = defaultdict(list)
    for log_file in files:
        groups["gzip" if log_file.uri.endswith(".gz") else "none"].append(log_file)
    return groups


def safe_names(files: Sequence[LogFile], folder: str) -> list[LogFile]:
    """Each file behind a symbolic link of a plain name (000000.gz, 000001, ...) in `folder`: DuckDB expands
    `*`, `?`, `[...]` and `{a,b}` in every path it is given (and takes `?` for a URL query), so a file named with
    them would read other files of the batch, or none. Only `.gz` is kept of the name, as compression follows it."""
    safe = []
    for number, log_file in enumerate(files):
        source = os.path.abspath(log_file.readable_path)
        link = os.path.join(folder, f"{number:06d}" + (".gz" if source.endswith(".gz") else ""))
        os.symlink(source, link)
        safe.append(replace(log_file, local_path=link))
    return safe


class DuckDBEngine:
    """Runs sql/ on DuckDB after sqlglot translation; the table is a view over exactly the files of each query."""

    name = "duckdb"
    max_concurrency = 1  # one query already uses every core

    def __init__(
        self,
        ddl: SqlFile | None = None,
        threads: int | None = None,
        log_format: LogFormat = LogFormat.LEGACY,
        timeout_seconds: float | None = None,
    ) -> None:
        self.log_format = log_format
        # A query still running after this long is interrupted (a gzip bomb: gigabytes from a small file) and
        # reported as QueryTimedOut, which the runner isolates like an unreadable file. None: no limit.
        self.timeout_seconds = timeout_seconds
        legacy = ddl or SqlFile.load(TABLE_DDL)
        # v2: the format's own DDL and the normalising view, from the folder of the legacy DDL (--sql-dir)
        self.v2: V2Table | None = None
        self._view_sql = ""
        if log_format is LogFormat.LEGACY:
            self.spec: TableSpec = table_spec(legacy)
            partition_columns = self.spec.partition_columns
        else:
            self.v2 = v2_table(SqlFile.load(ddl_name(log_format), legacy.path.parent), log_format)
            self._view_sql = view_sql(SqlFile.load(NORMALISING_VIEW, legacy.path.parent), self.v2)
            partition_columns = self.v2.partition_columns
        if partition_columns != PARTITION_COLUMNS:
            raise EngineError(f"table DDL: expected partition columns {PARTITION_COLUMNS}, found {partition_columns}")
        import duckdb  # here, not at the top: the Lambda artifact ships this module (wiring reaches it) but no duckdb

        self.connection = duckdb.connect(":memory:")
        self.connection.execute("SET TimeZone = 'UTC'")
        self.connection.execute("SET enable_progress_bar = false")
        if threads:
            self.connection.execute(f"SET threads = {int(threads)}")

    def _legacy_view_sql(self, files: Sequence[LogFile]) -> str:
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

    def _v2_view_sqls(self, files: Sequence[LogFile]) -> list[str]:
        """The v2 table as a view over exactly these files (partition columns and "$path" joined in, as for
        legacy logs), then the normalising view cloudfront_logs over it."""
        table = self.v2
        assert table is not None
        scans: list[tuple[str, list[tuple[str, str | None]]]]
        if table.log_format is LogFormat.JSON:
            # One JSON object a line; every column VARCHAR (a JSON number reads as its text). ignore_errors: a line
            # that is not a JSON object (or not UTF-8) reads as a row of NULLs, which the query counts malformed.
            keys = ", ".join(f"{_quote(k)}: 'VARCHAR'" for k in table.keys)
            selected: list[tuple[str, str | None]] = list(zip(table.columns, table.keys, strict=True))
            scans = []
            for compression, group in _by_compression(files).items():
                paths = ", ".join(_quote(f.readable_path) for f in group)
                scan = (
                    f"read_json([{paths}], format='newline_delimited', columns={{{keys}}}, "
                    f"compression='{compression}', filename=true, ignore_errors=true)"
                )
                scans.append((scan, selected))
        elif table.log_format is LogFormat.PARQUET:
            # By name across files whose field choice may differ; a column no file has reads as NULL.
            paths = ", ".join(_quote(f.readable_path) for f in files)
            scan = f"read_parquet([{paths}], union_by_name=true, filename=true)"
            available = [r[0] for r in self.connection.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()]
            scans = [(scan, select_columns(table, [a for a in available if a != "filename"]))]
        else:
            scans = [
                self._text_scan(group, layout, compression)
                for compression, same in _by_compression(files).items()
                for layout, group in self._text_groups(same).items()
            ]
        partitions = ", ".join(f"p.{_ident(c)}" for c in PARTITION_COLUMNS)
        parts = []
        for scan, selected in scans:
            columns = ", ".join(
                f"CAST(l.{_ident(source)} AS VARCHAR) AS {_ident(column)}"
                if source is not None
                else f"CAST(NULL AS VARCHAR) AS {_ident(column)}"
                for column, source in selected
            )
            parts.append(
                f'SELECT {columns}, {partitions}, p."$path" AS "$path" FROM {scan} AS l '
                f"JOIN _partitions AS p ON l.filename = p._read_from"
            )
        base = f"CREATE OR REPLACE TEMP VIEW {_ident(table.name)} AS " + " UNION ALL ".join(parts)
        return [base, self._view_sql]

    def _text_groups(self, files: Sequence[LogFile]) -> dict[TextLayout, list[LogFile]]:
        """w3c/plain files grouped by their own field list, delimiter and header (a delivery's field choice can
        change from one file to the next)."""
        assert self.v2 is not None
        groups: dict[TextLayout, list[LogFile]] = defaultdict(list)
        for log_file in files:
            groups[text_layout(log_file.readable_path, self.v2)].append(log_file)
        return groups

    def _text_scan(
        self, files: Sequence[LogFile], layout: TextLayout, compression: str
    ) -> tuple[str, list[tuple[str, str | None]]]:
        """read_csv over w3c/plain files of one layout, with the legacy reader's settings (see _legacy_view_sql):
        positional columns c0, c1, ... named after the header's fields."""
        assert self.v2 is not None
        positional = {f"c{i}": field for i, field in enumerate(layout.fields)}
        columns = ", ".join(f"{_quote(c)}: 'VARCHAR'" for c in positional)
        paths = ", ".join(_quote(f.readable_path) for f in files)
        scan = (
            f"read_csv([{paths}], columns={{{columns}}}, auto_detect=false, header=false, "
            f"skip={layout.header_lines}, delim={_quote(layout.delimiter)}, quote='', escape='', "
            f"null_padding=true, strict_mode=false, filename=true, compression='{compression}', ignore_errors=true, "
            f"store_rejects=true, rejects_table='{REJECTS}', rejects_scan='{REJECT_SCANS}')"
        )
        by_field = {field: c for c, field in reversed(positional.items())}  # the first of a repeated field
        selected = [
            (column, by_field[field] if field is not None else None)
            for column, field in select_columns(self.v2, list(by_field))
        ]
        return scan, selected

    def _load_partitions(self, files: Sequence[LogFile]) -> None:
        names = ", ".join(f"{_ident(c)} VARCHAR" for c in (*PARTITION_COLUMNS, "$path", "_read_from"))
        self.connection.execute(f"CREATE OR REPLACE TEMP TABLE _partitions ({names})")
        rows = [
            (f.distribution_id, f"{f.hour:%Y}", f"{f.hour:%m}", f"{f.hour:%d}", f"{f.hour:%H}", f.uri, f.readable_path)
            for f in files
        ]
        placeholders = ", ".join("?" for _ in rows[0])
        self.connection.executemany(f"INSERT INTO _partitions VALUES ({placeholders})", rows)

    def _rejected(self, files: Sequence[LogFile]) -> dict[str, int]:
        """Per file (its uri), the lines DuckDB set aside (invalid UTF-8): read, but in no row."""
        import duckdb

        try:
            rejected = self.connection.execute(
                f"SELECT s.file_path, count(DISTINCT e.line) FROM {REJECTS} e "
                f"JOIN {REJECT_SCANS} s USING (scan_id, file_id) GROUP BY 1"
            ).fetchall()
        except duckdb.CatalogException:
            return {}  # nothing was rejected, so DuckDB made no table
        uri_of = {f.readable_path: f.uri for f in files}
        return {uri_of.get(path, path): int(count) for path, count in rejected}

    def query(self, sql: SqlFile, params: Mapping[str, SqlValue], files: Sequence[LogFile]) -> QueryResult:
        if not files:
            return QueryResult([])
        timer = None
        if self.timeout_seconds is not None:
            timer = threading.Timer(self.timeout_seconds, self.connection.interrupt)
            timer.daemon = True
            timer.start()
        try:
            with tempfile.TemporaryDirectory(prefix="cfmetrics-read-") as folder:
                return self._query(sql, params, safe_names(files, folder))
        finally:
            if timer is not None:
                timer.cancel()

    def _query(self, sql: SqlFile, params: Mapping[str, SqlValue], files: Sequence[LogFile]) -> QueryResult:
        import duckdb

        rendered = sql.render_placeholders(params)
        text = to_duckdb(rendered.text, str(sql.path))
        try:
            self._load_partitions(files)
            views = [self._legacy_view_sql(files)] if self.v2 is None else self._v2_view_sqls(files)
            for view in views:
                self.connection.execute(view)
            self.connection.execute(f"DROP TABLE IF EXISTS {REJECTS}; DROP TABLE IF EXISTS {REJECT_SCANS}")
            cursor = self.connection.execute(text, rendered.bind_values())
            names = [d[0] for d in cursor.description or ()]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            return QueryResult(rows, self._rejected(files))
        except duckdb.InterruptException as exc:
            raise QueryTimedOut(
                f"{sql.path}: DuckDB query over {len(files)} file(s) still running after {self.timeout_seconds} s"
            ) from exc
        except duckdb.Error as exc:
            message = f"{sql.path}: DuckDB failed on {len(files)} file(s): {exc}"
            if isinstance(exc, duckdb.IOException | duckdb.InvalidInputException) and any(
                marker in str(exc) for marker in DATA_ERRORS
            ):
                raise UnreadableFileError(message) from exc  # the runner isolates and records the file
            raise EngineError(message) from exc
