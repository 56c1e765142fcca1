"""Read the Athena DDL in sql/ into a table description the DuckDB engine builds its view from."""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from job.errors import SqlTemplateError
from job.sql_files import SqlFile
from job.sql_values import Varchar


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
