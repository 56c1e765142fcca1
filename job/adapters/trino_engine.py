"""The Trino engine: sql/ as it is (Athena is Trino) on a user's own Trino, parameters as prepared statements.

Over a local log root the engine (re)creates its table in a schema of its own (`cfmetrics_<hash of the root>`),
from the Athena DDL translated to Trino's property names (query/ddl.py); over an s3:// root it reads the table the
user created with `cfmetrics sql --ddl --engine trino`. Trino names local files `local:///abs/path` in `"$path"`:
the engine passes the job's paths in that form and maps the query's `file` column back.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from job.core.errors import ConfigError, EngineError, UnreadableFileError
from job.core.files import Layout, LogFile, LogFormat
from job.ports import QueryResult, Row
from job.query.ddl import (
    LOG_RELATION,
    NORMALISING_VIEW,
    column_name,
    ddl_name,
    table_spec,
    trino_table_sql,
    trino_v2_statements,
)
from job.query.sql_files import SqlFile
from job.query.sql_values import SqlValue, VarcharList

LOCAL_SCHEME = "local://"  # Trino's native local file system: local:///abs/path
DEFAULT_CATALOG = "hive"
DEFAULT_USER = "cfmetrics"
# Trino's messages when a file's bytes, not the query, are at fault (see also athena_engine.DATA_ERRORS).
DATA_ERRORS = ("HIVE_BAD_DATA", "HIVE_CURSOR_ERROR", "Unexpected end of input stream", "Not in GZIP format",
               "incorrect header check", "invalid stored block lengths")  # fmt: skip


@dataclass(frozen=True)
class TrinoQueryStats:
    query_id: str
    physical_input_bytes: int
    elapsed_ms: int


def local_schema(root: Path) -> str:
    """The schema of the engine's own table over a local root: one per root, so roots never mix."""
    return "cfmetrics_" + hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]


def split_trino_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of http(s)://host:port, or a ConfigError naming the expected form."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"Trino URL {url!r}: expected http://host:port or https://host:port", "trino_url")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 8080)
    except ValueError:
        raise ConfigError(f"Trino URL {url!r}: the port is not a number", "trino_url") from None
    return parts.scheme, parts.hostname, port


@dataclass
class TrinoEngine:
    """Runs sql/ on Trino through the `trino` DB-API client with server-side prepared-statement parameters."""

    url: str
    ddl: SqlFile
    catalog: str = DEFAULT_CATALOG
    schema: str | None = None  # None over a local root: the engine's own schema
    local_root: Path | None = None
    layout: Layout = Layout.PLAIN
    log_format: LogFormat = LogFormat.LEGACY
    user: str = DEFAULT_USER
    connect: Callable[..., Any] | None = None  # trino.dbapi.connect, or a stand-in
    stats: list[TrinoQueryStats] = field(default_factory=list)
    name: str = "trino"
    max_concurrency: int = 1  # a single local Trino
    _ready: bool = False

    def __post_init__(self) -> None:
        split_trino_url(self.url)
        if self.local_root is not None and self.schema is None:
            self.schema = local_schema(self.local_root)
            if self.log_format is not LogFormat.LEGACY:  # a schema per format: a table and a view never clash
                self.schema += f"_{self.log_format.value}"
        if self.schema is None:
            raise ConfigError("the Trino engine over an s3:// root needs the schema of the log table", "trino_schema")

    def _cursor(self) -> Any:
        scheme, host, port = split_trino_url(self.url)
        connect: Callable[..., Any] | None = self.connect
        if connect is None:
            import trino  # here: only the Trino engine needs the client

            connect = trino.dbapi.connect
        # legacy_prepared_statements: PREPARE + EXECUTE ... USING, the mechanism behind Athena's parameters
        connection = connect(  # type: ignore[no-untyped-call]
            host=host, port=port, http_scheme=scheme, user=self.user, catalog=self.catalog, schema=self.schema,
            legacy_prepared_statements=True,
        )  # fmt: skip
        return connection.cursor()

    def _execute(self, cursor: Any, sql: str, params: Sequence[object] | None = None) -> list[Any]:
        cursor.execute(sql, list(params) if params is not None else None)
        rows: list[Any] = cursor.fetchall()
        return rows

    def ensure_table(self) -> None:
        """Over a local root: the schema and the log table, made anew each run from the DDL in sql/."""
        if self._ready or self.local_root is None:
            return
        root = self.local_root.resolve()
        location = f"{LOCAL_SCHEME}{root}/"
        template = self.layout.athena_template(location)
        table = f'"{self.catalog}"."{self.schema}"."{LOG_RELATION}"'
        cursor = self._cursor()
        try:
            self._execute(cursor, f'CREATE SCHEMA IF NOT EXISTS "{self.catalog}"."{self.schema}"')
            if self.log_format is LogFormat.LEGACY:
                self._execute(cursor, f"DROP TABLE IF EXISTS {table}")
                self._execute(
                    cursor, trino_table_sql(table_spec(self.ddl, location, template), table, location, template)
                )
            else:
                for statement in self.v2_statements(location, template):
                    self._execute(cursor, statement)
        except Exception as exc:
            raise EngineError(f"Trino at {self.url}: cannot create {table} over {root} ({exc})") from exc
        self._ready = True

    def v2_statements(self, location: str, template: str) -> list[str]:
        """Drop and make anew the v2 table (and for JSON its key table and renaming view), then the normalising
        view of sql/ as written: it runs unchanged on Trino, in this engine's schema."""
        sql_dir = self.ddl.path.parent
        v2 = SqlFile.load(ddl_name(self.log_format), sql_dir)
        schema = f'"{self.catalog}"."{self.schema}"'
        made = trino_v2_statements(v2, self.log_format, schema, location, template)
        drops = [f'DROP VIEW IF EXISTS {schema}."{LOG_RELATION}"']
        for statement in reversed(made):
            kind, name = (
                ("VIEW", statement.split()[2])
                if statement.startswith("CREATE VIEW")
                else ("TABLE", statement.split()[2])
            )
            drops.append(f"DROP {kind} IF EXISTS {name}")
        return [*drops, *made, SqlFile.load(NORMALISING_VIEW, sql_dir).render_literal({})]

    def check_w3c_fields(self, files: Sequence[LogFile]) -> None:
        """Trino reads w3c/plain by position, in the column order of sql/cloudfront_logs_v2_w3c_table.sql; a
        local file whose '#Fields' header says another order would be read wrongly: refuse it by name."""
        if self.log_format is not LogFormat.W3C or self.local_root is None:
            return
        import gzip

        expected = table_spec(SqlFile.load(ddl_name(LogFormat.W3C), self.ddl.path.parent)).columns
        for log_file in files:
            if log_file.uri.startswith("s3://"):
                continue
            try:
                with gzip.open(log_file.uri, "rt", encoding="utf-8", errors="replace") as text:
                    head = [text.readline() for _ in range(2)]
            except (OSError, EOFError):
                continue  # an unreadable file is reported by the query
            fields = next((h.split()[1:] for h in head if h.startswith("#Fields:")), None)
            if fields is None:
                continue  # a plain file without header: its order is the DDL's by assumption
            named = tuple(column_name(f) for f in fields)
            if named != expected[: len(named)]:
                raise ConfigError(
                    f"{log_file.uri}: its '#Fields' header gives the order {' '.join(fields)}; the Trino engine reads "
                    "w3c/plain by position in the column order of sql/cloudfront_logs_v2_w3c_table.sql, which "
                    "differs (edit the DDL to the delivery's field order, or use --engine duckdb, which reads each "
                    "file's header; docs/FORMATS.md)",
                    "log_format",
                )

    def path_of(self, log_file: LogFile) -> str:
        """The file's `"$path"` as Trino reports it."""
        if self.local_root is not None and not log_file.uri.startswith("s3://"):
            return LOCAL_SCHEME + str(Path(log_file.uri).resolve())
        return log_file.uri

    def query(self, sql: SqlFile, params: Mapping[str, SqlValue], files: Sequence[LogFile]) -> QueryResult:
        if not files:
            return QueryResult([])
        self.ensure_table()
        self.check_w3c_fields(files)
        uri_of = {self.path_of(f): f.uri for f in files}
        named = dict(params)
        if isinstance(named.get("files"), VarcharList):
            given = named["files"]
            assert isinstance(given, VarcharList)
            by_uri = {f.uri: self.path_of(f) for f in files}
            named["files"] = replace(given, values=tuple(by_uri.get(v, v) for v in given.values))
        rendered = sql.render_placeholders(named)
        started = time.monotonic()
        cursor = self._cursor()
        try:
            raw = self._execute(cursor, rendered.text, rendered.bind_values())
        except Exception as exc:
            message = f"{sql.path}: Trino failed on {len(files)} file(s): {exc}"
            if any(marker in str(exc) for marker in DATA_ERRORS):
                raise UnreadableFileError(message) from exc
            raise EngineError(message) from exc
        names = [d[0] for d in cursor.description or ()]
        rows: list[Row] = [dict(zip(names, row, strict=True)) for row in raw]
        for row in rows:
            if isinstance(row.get("file"), str):
                row["file"] = uri_of.get(row["file"], row["file"])
        stats = getattr(cursor, "stats", None) or {}
        self.stats.append(
            TrinoQueryStats(
                str(stats.get("queryId", getattr(cursor, "query_id", ""))),
                int(stats.get("physicalInputBytes", 0) or 0),
                int((time.monotonic() - started) * 1000),
            )
        )
        return QueryResult(rows, scanned_bytes=self.stats[-1].physical_input_bytes, query_id=self.stats[-1].query_id)
