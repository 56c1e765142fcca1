"""Read the Athena DDL in sql/ into a table description the DuckDB engine builds its view from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from job.core.errors import SqlTemplateError
from job.core.files import LogFormat
from job.query.sql_files import SqlFile
from job.query.sql_values import Varchar
from job.query.translate import to_duckdb


@dataclass(frozen=True)
class TableSpec:
    """Columns (in file order), partition columns and the text format of the log table."""

    name: str
    columns: tuple[str, ...]
    partition_columns: tuple[str, ...]
    delimiter: str
    header_lines: int
    properties: tuple[tuple[str, str], ...]

    def property(self, key: str) -> str | None:
        return dict(self.properties).get(key)


def parse_create(ddl: SqlFile, location: str = "s3://bucket/prefix/", template: str = "") -> exp.Create:
    """The CREATE EXTERNAL TABLE statement of a DDL file, its parameters filled with placeholder locations."""
    params = {"location": Varchar(location), "location_template": Varchar(template or location)}
    text = ddl.render_literal({k: v for k, v in params.items() if k in ddl.parameters})
    try:
        create = sqlglot.parse_one(text, read="athena")
    except ParseError as exc:
        raise SqlTemplateError(f"{ddl.path}: cannot parse the table DDL ({exc})") from exc
    if not isinstance(create, exp.Create) or not isinstance(create.this, exp.Schema):
        raise SqlTemplateError(f"{ddl.path}: expected one CREATE EXTERNAL TABLE statement with a column list")
    return create


def string_columns(create: exp.Create, where: object) -> list[str]:
    """The column names, in order; every column must be STRING, as the engines read text."""
    columns = []
    for column in create.this.expressions:
        kind = column.args.get("kind")
        if not isinstance(kind, exp.DataType) or not kind.is_type(exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR):
            raise SqlTemplateError(f"{where}: column {column.name} must be STRING (the engines read text)")
        columns.append(column.name)
    return columns


def table_spec(ddl: SqlFile, location: str = "s3://bucket/prefix/", template: str = "") -> TableSpec:
    """Parse the CREATE EXTERNAL TABLE statement of a delimited-text table."""
    create = parse_create(ddl, location, template)
    columns = string_columns(create, ddl.path)
    partitions: list[str] = []
    delimiter = "\t"
    props: list[tuple[str, str]] = []
    for prop in create.args["properties"].expressions:
        if isinstance(prop, exp.PartitionedByProperty):
            partitions = [c.name for c in prop.this.expressions]
        elif isinstance(prop, exp.RowFormatDelimitedProperty):
            fields = prop.args.get("fields")
            delimiter = fields.this.encode().decode("unicode_escape") if fields is not None else delimiter
        elif isinstance(prop, exp.Property):
            props.append((prop.name, prop.text("value")))
    header = int(dict(props).get("skip.header.line.count", "0"))
    name = create.this.this.name
    return TableSpec(name, tuple(columns), tuple(partitions), delimiter, header, tuple(props))


V2_TABLE = "cloudfront_logs_v2"  # the table every v2 DDL creates and the normalising view reads


NORMALISING_VIEW = "cloudfront_logs_v2_view"  # sql/ file of the view


LOG_RELATION = "cloudfront_logs"  # what the queries read


JSON_SERDE = "org.openx.data.jsonserde.JsonSerDe"


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
# The same table for Trino's Hive connector (which implements Athena's partition projection under other names)

_TRINO_COLUMN_PROJECTION = {  # Athena 'projection.<column>.<key>' -> Trino column property
    "type": "partition_projection_type",
    "range": "partition_projection_range",
    "digits": "partition_projection_digits",
    "values": "partition_projection_values",
    "format": "partition_projection_format",
    "interval": "partition_projection_interval",
    "interval.unit": "partition_projection_interval_unit",
}
_TRINO_LIST_PROPERTIES = frozenset({"range", "values"})
_TRINO_NUMBER_PROPERTIES = frozenset({"digits", "interval"})


def _trino_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _trino_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class TrinoStorage(Enum):
    """The Hive connector's storage format for a table of sql/."""

    TEXTFILE = "TEXTFILE"  # the legacy table and the v2 w3c/plain table: delimited text, header lines skipped
    PARQUET = "PARQUET"  # v2 Parquet: columns read by name
    OPENX_JSON = "OPENX_JSON"  # v2 JSON: Trino's reader of the OpenX SerDe, keys matched to column names


TRINO_JSON_TABLE = "cloudfront_logs_v2_keys"  # v2 JSON: the table whose columns are the JSON keys


def trino_table_sql(
    spec: TableSpec,
    table: str,
    location: str,
    template: str,
    storage: TrinoStorage = TrinoStorage.TEXTFILE,
    column_names: Sequence[str] | None = None,
) -> str:
    """CREATE TABLE for Trino's Hive connector equal to the Athena DDL `spec`: the same columns (varchar), the
    text format (TEXTFILE, its delimiter, its header lines) and the partition projection, with Trino's property
    names; `table` is the qualified name, `location` and `template` the root and partition template in Trino's
    scheme (s3://..., or local:///... for its local file system)."""
    props = dict(spec.properties)
    if props.get("projection.enabled", "false").lower() != "true":
        raise SqlTemplateError(f"table {spec.name}: the Trino engine needs partition projection ('projection.enabled')")
    names = spec.columns if column_names is None else tuple(column_names)
    columns = [f"  {_trino_ident(c)} varchar" for c in names]
    for column in spec.partition_columns:
        settings = []
        for key, trino_key in _TRINO_COLUMN_PROJECTION.items():
            value = props.get(f"projection.{column}.{key}")
            if value is None:
                continue
            if key in _TRINO_LIST_PROPERTIES:
                rendered = "ARRAY[" + ", ".join(_trino_literal(v.strip()) for v in value.split(",")) + "]"
            elif key in _TRINO_NUMBER_PROPERTIES:
                rendered = str(int(value))
            else:
                rendered = _trino_literal(value)
            settings.append(f"{trino_key} = {rendered}")
        if not settings:
            raise SqlTemplateError(f"table {spec.name}: partition column {column} has no 'projection.{column}.type'")
        columns.append(f"  {_trino_ident(column)} varchar WITH ({', '.join(settings)})")
    separator = "U&'\\" + f"{ord(spec.delimiter):04x}" + "'"
    partitions = ", ".join(_trino_literal(c) for c in spec.partition_columns)
    return (
        f"CREATE TABLE {table} (\n" + ",\n".join(columns) + "\n)\nWITH (\n"
        f"  external_location = {_trino_literal(location)},\n"
        f"  format = '{storage.value}',\n"
        + (
            f"  textfile_field_separator = {separator},\n  skip_header_line_count = {spec.header_lines},\n"
            if storage is TrinoStorage.TEXTFILE
            else ""
        )
        + f"  partitioned_by = ARRAY[{partitions}],\n"
        "  partition_projection_enabled = true,\n"
        f"  partition_projection_location_template = {_trino_literal(template)}\n"
        ")"
    )


def trino_v2_statements(ddl: SqlFile, log_format: LogFormat, schema: str, location: str, template: str) -> list[str]:
    """The statements that make a v2 DDL of sql/ on Trino's Hive connector, in `schema` ("catalog"."schema"):
    w3c/plain as TEXTFILE and Parquet as PARQUET, both under the DDL's own table name; JSON as an OPENX_JSON
    table whose columns are the JSON keys (Trino takes no 'mapping.' properties) and, under the DDL's table name,
    a view that renames each key to its column and passes "$path" on. The normalising view of sql/ then runs
    unchanged over it (in a session whose schema is `schema`)."""
    spec = table_spec(ddl, location, template)
    if log_format is LogFormat.W3C:
        return [trino_table_sql(spec, f"{schema}.{_trino_ident(spec.name)}", location, template)]
    if log_format is LogFormat.PARQUET:
        table = f"{schema}.{_trino_ident(spec.name)}"
        return [trino_table_sql(spec, table, location, template, TrinoStorage.PARQUET)]
    if log_format is not LogFormat.JSON:
        raise SqlTemplateError(f"{ddl.path}: no v2 table for {log_format.value}")
    v2 = v2_table(ddl, log_format)
    keys = [k.lower() for k in v2.keys]  # Trino's reader matches keys case-insensitively, as lower-case names
    clash = [k for k in set(keys) if keys.count(k) > 1]
    if clash:
        raise SqlTemplateError(
            f"{ddl.path}: JSON keys {sorted(clash)} differ only in case; Trino cannot tell them apart"
        )
    raw = f"{schema}.{_trino_ident(TRINO_JSON_TABLE)}"
    renames = [f"  {_trino_ident(k)} AS {_trino_ident(c)}" for k, c in zip(keys, v2.columns, strict=True)]
    renames += [f"  {_trino_ident(c)}" for c in v2.partition_columns] + ['  "$path" AS "$path"']
    view = f"CREATE VIEW {schema}.{_trino_ident(v2.name)} AS SELECT\n" + ",\n".join(renames) + f"\nFROM {raw}"
    return [trino_table_sql(spec, raw, location, template, TrinoStorage.OPENX_JSON, keys), view]
