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

from job.core.errors import UnreadableFileError
from job.query.ddl import V2Table, column_name

# A w3c/plain file's header is at most this many bytes (a '#Fields' line of every v2 field is ~1 kB).
MAX_HEADER_BYTES = 64 * 1024


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
