"""Standard logging v2 formats (JSON, Parquet, w3c/plain) for the DuckDB engine, read from the Athena DDL in sql/.

Each v2 format has its own table DDL (sql/cloudfront_logs_v2_<format>_table.sql, all creating the table
cloudfront_logs_v2) and all share one normalising view (sql/cloudfront_logs_v2_view.sql) that yields the relation
cloudfront_logs with the legacy columns, so the metrics query is one query for every format. Here the DDLs are
parsed into what DuckDB needs to read the same files the same way: the columns and, per format, the JSON key, the
Parquet column or the w3c field behind each column.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from job.errors import SqlTemplateError, UnreadableFileError
from job.layout import LogFormat
from job.sql_files import SqlFile
from job.table_spec import parse_create, string_columns, table_spec
from job.translate import to_duckdb

V2_TABLE = "cloudfront_logs_v2"  # the table every v2 DDL creates and the normalising view reads
NORMALISING_VIEW = "cloudfront_logs_v2_view"  # sql/ file of the view
LOG_RELATION = "cloudfront_logs"  # what the queries read
JSON_SERDE = "org.openx.data.jsonserde.JsonSerDe"
# A w3c/plain file's header is at most this many bytes (a '#Fields' line of every v2 field is ~1 kB).
MAX_HEADER_BYTES = 64 * 1024


def ddl_name(log_format: LogFormat) -> str:
    """The sql/ file of a v2 format's table DDL."""
    if log_format is LogFormat.LEGACY:
        raise ValueError("the legacy format has sql/cloudfront_logs_table.sql, not a v2 DDL")
    return f"cloudfront_logs_v2_{log_format.value}_table"


def column_name(field: str) -> str:
    """The table column of a v2 field name, JSON key or Parquet column: lower case, '-' and '(' as '_', no ')'.

    x-edge-result-type -> x_edge_result_type, cs(Host) -> cs_host, timestamp(ms) -> timestamp_ms. DistributionId
    becomes distribution_id, as `distributionid` is the partition column (Hive allows no data column of that name).
    """
    if field.strip().lower() == "distributionid":
        return "distribution_id"
    return field.strip().lower().replace("(", "_").replace(")", "").replace("-", "_")


@dataclass(frozen=True)
class V2Table:
    """One v2 table DDL: its columns in order and, per column, the JSON key (JSON) or field name it reads."""

    log_format: LogFormat
    name: str
    columns: tuple[str, ...]
    partition_columns: tuple[str, ...]
    keys: tuple[str, ...]  # JSON: the key of each column (its 'mapping.' property); otherwise the column name
    delimiter: str  # w3c/plain: the field delimiter
    header_lines: int  # w3c/plain: 'skip.header.line.count'


def _serde_mappings(prop: exp.RowFormatSerdeProperty, where: Path) -> tuple[str, dict[str, str], dict[str, str]]:
    serde = prop.this.name
    mappings: dict[str, str] = {}
    others: dict[str, str] = {}
    properties = prop.args.get("serde_properties")
    for item in properties.expressions if properties is not None else ():
        key, value = item.name, item.text("value")
        if key.startswith("mapping."):
            mappings[key.removeprefix("mapping.").lower()] = value
        else:
            others[key] = value
    if serde == JSON_SERDE and others.get("case.insensitive", "true").lower() != "false":
        raise SqlTemplateError(
            f"{where}: the JSON SerDe must match keys case-sensitively ('case.insensitive' = 'false'), as DuckDB does"
        )
    return serde, mappings, others


def v2_table(ddl: SqlFile, log_format: LogFormat) -> V2Table:
    """Parse a v2 table DDL (with placeholder location values): STRING columns, the five partition columns, and
    the storage the format needs (JSON SerDe with a 'mapping.' per column, Parquet, or delimited text)."""
    if log_format is LogFormat.W3C:
        spec = table_spec(ddl)  # ROW FORMAT DELIMITED, the same parser as the legacy table's
        return V2Table(log_format, spec.name, spec.columns, spec.partition_columns, spec.columns, spec.delimiter,
                       spec.header_lines)  # fmt: skip
    create = parse_create(ddl)
    columns = string_columns(create, ddl.path)
    partitions: list[str] = []
    storage = ""
    mappings: dict[str, str] = {}
    for prop in create.args["properties"].expressions:
        if isinstance(prop, exp.PartitionedByProperty):
            partitions = [c.name for c in prop.this.expressions]
        elif isinstance(prop, exp.RowFormatSerdeProperty):
            storage, mappings, _ = _serde_mappings(prop, ddl.path)
        elif isinstance(prop, exp.FileFormatProperty) and isinstance(prop.this, exp.Var):
            storage = prop.this.name.lower()
    expected = JSON_SERDE if log_format is LogFormat.JSON else "parquet"
    if storage != expected:
        raise SqlTemplateError(f"{ddl.path}: a {log_format.value} table needs {expected}, the DDL says {storage!r}")
    keys = tuple(columns)
    if log_format is LogFormat.JSON:
        missing = [c for c in columns if c not in mappings]
        if missing:
            raise SqlTemplateError(f"{ddl.path}: no 'mapping.{missing[0]}' = '<JSON key>' for column {missing[0]}")
        keys = tuple(mappings[c] for c in columns)
    return V2Table(log_format, create.this.this.name, tuple(columns), tuple(partitions), keys, "\t", 0)


def view_sql(view: SqlFile, table: V2Table) -> str:
    """The normalising view, translated to DuckDB (proven functions only) as CREATE OR REPLACE TEMP VIEW."""
    text = view.render_literal({})
    try:
        tree = sqlglot.parse_one(text, read="athena")
    except ParseError as exc:
        raise SqlTemplateError(f"{view.path}: cannot parse the view ({exc})") from exc
    if not isinstance(tree, exp.Create) or tree.kind != "VIEW" or tree.this.name != LOG_RELATION:
        raise SqlTemplateError(f"{view.path}: expected one CREATE VIEW {LOG_RELATION} AS SELECT ... statement")
    read = {t.name for t in tree.find_all(exp.Table)} - {LOG_RELATION}
    if read != {table.name}:
        raise SqlTemplateError(f"{view.path}: the view must read the v2 table {table.name}, not {sorted(read)}")
    translated = sqlglot.parse_one(to_duckdb(text, str(view.path)), read="duckdb")
    translated.set("replace", True)
    translated.set("properties", exp.Properties(expressions=[exp.TemporaryProperty()]))
    sql: str = translated.sql(dialect="duckdb")
    return sql


# ---------------------------------------------------------------------------------------------------------------
# w3c/plain files: the header of each file


@dataclass(frozen=True)
class TextLayout:
    """How one w3c/plain file is laid out: the fields in order, the delimiter and the header lines to skip."""

    fields: tuple[str, ...]
    delimiter: str
    header_lines: int


def _head(path: str) -> bytes:
    """The first bytes of a file, gunzipped if it is gzip (as much as decompresses; a damaged tail is the
    engine's business)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_HEADER_BYTES)
    except OSError as exc:
        raise UnreadableFileError(f"cannot read {path}: {exc.strerror}") from exc
    if not raw.startswith(b"\x1f\x8b"):
        return raw
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read(MAX_HEADER_BYTES)
    except (OSError, EOFError, zlib.error):
        decompressor = zlib.decompressobj(wbits=31)
        try:
            return decompressor.decompress(raw, MAX_HEADER_BYTES)
        except zlib.error as exc:
            raise UnreadableFileError(f"cannot read {path}: not in gzip format ({exc})") from exc


def text_layout(path: str, table: V2Table) -> TextLayout:
    """A w3c file's fields from its '#Fields:' header (leading '#' lines are its header); a plain file (no
    header) has the DDL's column order. The delimiter is TAB if the first record holds the header's fields when
    split on TAB, else a space if it does on spaces, else the DDL's."""
    lines = _head(path).split(b"\n")
    header = 0
    fields: tuple[str, ...] | None = None
    for line in lines[:-1]:  # the last piece may be cut off by MAX_HEADER_BYTES
        if not line.startswith(b"#"):
            break
        header += 1
        text = line.decode("utf-8", errors="replace").strip()
        if text.lower().startswith("#fields:"):
            fields = tuple(text[len("#fields:") :].split())
    if fields is None:
        return TextLayout(table.columns, table.delimiter, header)
    first = lines[header].decode("utf-8", errors="replace").rstrip("\r") if header < len(lines) else ""
    delimiter = table.delimiter
    for candidate in ("\t", " ", table.delimiter):
        if candidate in first and len(first.split(candidate)) == len(fields):
            delimiter = candidate
            break
    else:
        delimiter = "\t" if "\t" in first else " " if " " in first else table.delimiter
    return TextLayout(fields, delimiter, header)


def select_columns(table: V2Table, available: Sequence[str]) -> list[tuple[str, str | None]]:
    """(column, source field) for every column of the table: the first available field (Parquet column, w3c
    field) whose column_name is the column, or None (the column reads as NULL) when the file has no such field."""
    by_column: dict[str, str] = {}
    for name in available:
        by_column.setdefault(column_name(name), name)
    return [(c, by_column.get(c)) for c in table.columns]
