"""`:name` parameters of sql/ files: found by the tokenizer, checked, rendered as literals or `?` with bind values."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
import sqlglot
from sqlglot import exp
from sqlglot.tokenizer_core import TokenType

from job.core.errors import ConfigError, SqlTemplateError
from job.core.files import validate_distribution_id
from job.core.validate import validate_namespace, validate_s3_location
from job.query.ddl import table_spec
from job.query.sql_files import MINUTE_METRICS, TABLE_DDL, SqlFile
from job.query.sql_values import SqlValue, Timestamp, Varchar, VarcharList
from job.query.translate import to_duckdb

INJECTIONS = [
    "E1' OR '1'='1",
    "x'; DROP TABLE cloudfront_logs; --",
    "E1'--",
    "E1' /* */ OR 'a' = 'a",
    "it''s",
    "back\\slash'",
]


def sql_file(text: str, name: str = "probe") -> SqlFile:
    return SqlFile(name=name, path=Path(f"/somewhere/{name}.sql"), text=text)


def placeholder_count(text: str) -> int:
    tokens = sqlglot.Dialect.get_or_raise("athena").tokenize(text)
    return sum(1 for t in tokens if t.token_type is TokenType.PLACEHOLDER)


def metrics_params(distribution_id: str = "E1", files: tuple[str, ...] = ("s3://b/E1/a.gz",)) -> dict[str, SqlValue]:
    return {
        "distribution_id": Varchar(distribution_id),
        "years": VarcharList(("2026",)),
        "months": VarcharList(("11",)),
        "days": VarcharList(("28",)),
        "hours": VarcharList(("15",)),
        "files": VarcharList(files),
    }


# ---------------------------------------------------------------------------------------------------------------
# finding parameters


def test_parameters_outside_strings_and_comments_only() -> None:
    sql = sql_file(
        "-- a comment naming :in_line_comment\n"
        "/* a block comment naming :in_block_comment */\n"
        "SELECT ':in_string', 'a:in_string_too', \":in_identifier\", a::bigint AS cast_is_not_a_parameter,\n"
        "  :real_one AS x\n"
        "FROM t WHERE b = : spaced_out AND c IN (:second)"
    )
    assert sql.parameters == {"real_one", "second"}


def test_metrics_query_and_ddl_parameters() -> None:
    expected = {"distribution_id", "years", "months", "days", "hours", "files"}
    assert SqlFile.load(MINUTE_METRICS).parameters == expected
    assert SqlFile.load(TABLE_DDL).parameters == {"location", "location_template"}


def test_rendering_keeps_strings_and_comments_that_look_like_parameters() -> None:
    sql = sql_file("SELECT ':x' AS s, :x AS v -- :x\n")
    assert sql.render_literal({"x": Varchar("value")}) == "SELECT ':x' AS s, 'value' AS v -- :x\n"
    rendered = sql.render_placeholders({"x": Varchar("value")})
    assert rendered.text == "SELECT ':x' AS s, ? AS v -- :x\n"
    assert rendered.bind_values() == ["value"]


# ---------------------------------------------------------------------------------------------------------------
# unknown and missing parameters


def test_unknown_parameter_names_file_and_parameter() -> None:
    sql = SqlFile.load(MINUTE_METRICS)
    params = {**metrics_params(), "end": Varchar("x")}
    with pytest.raises(SqlTemplateError, match=r"minute_metrics\.sql: unknown parameter ':end'"):
        sql.render_placeholders(params)
    with pytest.raises(SqlTemplateError, match=r"minute_metrics\.sql: unknown parameter ':end'"):
        sql.render_literal(params)


def test_missing_parameter_names_file_and_parameter() -> None:
    sql = SqlFile.load(MINUTE_METRICS)
    params = metrics_params()
    del params["files"]
    with pytest.raises(SqlTemplateError, match=r"minute_metrics\.sql: no value for parameter ':files'"):
        sql.render_placeholders(params)
    with pytest.raises(SqlTemplateError, match=r"minute_metrics\.sql: no value for parameter ':files'"):
        sql.render_literal(params)


def test_unreadable_file_is_a_template_error(tmp_path: Path) -> None:
    with pytest.raises(SqlTemplateError, match=r"nope\.sql: cannot read"):
        SqlFile.load("nope", tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# placeholders and bind values line up


@pytest.mark.parametrize("count", [1, 2, 5, 40])
def test_varchar_list_expands_to_one_placeholder_per_element(count: int) -> None:
    files = tuple(f"s3://b/E1/2026/11/28/15/E1.2026-11-28-15.{i:04d}.gz" for i in range(count))
    rendered = SqlFile.load(MINUTE_METRICS).render_placeholders(metrics_params(files=files))
    # distribution_id, one year, month, day and hour, then one per file
    assert placeholder_count(rendered.text) == 5 + count
    assert len(rendered.literal_parameters()) == 5 + count
    assert rendered.bind_values() == ["E1", "2026", "11", "28", "15", *files]
    assert rendered.literal_parameters() == ["'E1'", "'2026'", "'11'", "'28'", "'15'", *(f"'{f}'" for f in files)]
    assert ":" + "files" not in rendered.text.split("WITH", 1)[1]


def test_empty_varchar_list_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one value"):
        VarcharList(())


def test_bind_values_follow_placeholder_order_on_duckdb() -> None:
    sql = sql_file("SELECT :b AS first, :a AS second, :b AS third, :t AS moment, 'x' IN (:l) AS listed")
    params: dict[str, SqlValue] = {
        "a": Varchar("A"),
        "b": Varchar("B"),
        "t": Timestamp(datetime(2026, 11, 28, 15, 4, 5)),
        "l": VarcharList(("w", "x", "y")),
    }
    rendered = sql.render_placeholders(params)
    assert placeholder_count(rendered.text) == len(rendered.bind_values()) == len(rendered.literal_parameters()) == 7
    con = duckdb.connect()
    expected = ("B", "A", "B", datetime(2026, 11, 28, 15, 4, 5), True)
    assert con.execute(rendered.text, rendered.bind_values()).fetchone() == expected
    # the literal form gives the same row
    assert con.execute(sql.render_literal(params)).fetchone() == expected


def test_timestamp_literal_is_typed() -> None:
    value = Timestamp(datetime(2026, 1, 2, 3, 4, 5))
    assert value.literals() == ("TIMESTAMP '2026-01-02 03:04:05'",)
    assert value.bind_values() == (datetime(2026, 1, 2, 3, 4, 5),)


# ---------------------------------------------------------------------------------------------------------------
# quoting: a value is always exactly one literal


@pytest.mark.parametrize("value", INJECTIONS)
def test_literal_rendering_is_one_statement_with_the_value_intact(value: str) -> None:
    text = SqlFile.load(MINUTE_METRICS).render_literal(metrics_params(distribution_id=value, files=(value, "b.gz")))
    statements = [s for s in sqlglot.parse(text, read="athena") if s is not None]
    assert len(statements) == 1
    tree = statements[0]
    compared = [
        eq.expression
        for eq in tree.find_all(exp.EQ)
        if isinstance(eq.this, exp.Column) and eq.this.name == "distributionid"
    ]
    assert len(compared) == 1
    assert isinstance(compared[0], exp.Literal) and compared[0].is_string
    assert compared[0].this == value
    paths = [
        [e.this for e in node.expressions]
        for node in tree.find_all(exp.In)
        if isinstance(node.this, exp.Column) and node.this.name == "$path"
    ]
    assert paths == [[value, "b.gz"]]


@pytest.mark.parametrize("value", INJECTIONS)
def test_ddl_location_literal_is_one_statement(value: str) -> None:
    ddl = SqlFile.load(TABLE_DDL)
    location = "s3://bucket/" + value
    text = ddl.render_literal({"location": Varchar(location), "location_template": Varchar(location)})
    statements = [s for s in sqlglot.parse(text, read="athena") if s is not None]
    assert len(statements) == 1
    assert isinstance(statements[0], exp.Create)


@pytest.mark.parametrize(
    "location",
    [
        "s3://bucket/prefix/",
        "s3://my-log.bucket/cf/(logs)/!*=x/",
    ],
)
def test_validated_location_survives_ddl_rendering(location: str) -> None:
    assert validate_s3_location(location) == location
    ddl = SqlFile.load(TABLE_DDL)
    template = location + "${distributionid}/${year}/${month}/${day}/${hour}/"
    spec = table_spec(ddl, location, template)
    assert spec.property("storage.location.template") == template


@pytest.fixture
def logs() -> Iterator[duckdb.DuckDBPyConnection]:
    """A tiny cloudfront_logs table: two lines of distribution E1, one of E2, in partition 2026-11-28 15h."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    spec = table_spec(SqlFile.load(TABLE_DDL))
    columns = [*spec.columns, *spec.partition_columns, "$path"]
    declared = ", ".join(f'"{c}" VARCHAR' for c in columns)
    con.execute(f"CREATE TABLE cloudfront_logs ({declared})")
    for distribution, time in (("E1", "15:04:05"), ("E1", "15:05:00"), ("E2", "15:04:05")):
        row: Mapping[str, str] = {
            "date": "2026-11-28",
            "time": time,
            "x_edge_result_type": "Hit",
            "time_taken": "0.010",
            "distributionid": distribution,
            "year": "2026",
            "month": "11",
            "day": "28",
            "hour": "15",
            "$path": f"s3://b/{distribution}/a.gz",
        }
        con.execute(
            f"INSERT INTO cloudfront_logs VALUES ({', '.join('?' for _ in columns)})", [row.get(c) for c in columns]
        )
    yield con
    con.close()


def total_requests(con: duckdb.DuckDBPyConnection, text: str, bind: list[object] | None = None) -> int:
    rows = con.execute(to_duckdb(text, MINUTE_METRICS), bind or []).fetchall()
    # column 1 is grouping_id, column 5 requests: grouping 0b0111 rows are the per-minute totals
    return sum(int(r[5]) for r in rows if r[1] == 0b0111)


def table_intact(con: duckdb.DuckDBPyConnection) -> bool:
    result = con.execute("SELECT count(*) FROM cloudfront_logs").fetchone()
    return result is not None and result[0] == 3


def test_duckdb_baseline_selects_the_distribution(logs: duckdb.DuckDBPyConnection) -> None:
    sql = SqlFile.load(MINUTE_METRICS)
    params = metrics_params("E1", ("s3://b/E1/a.gz",))
    assert total_requests(logs, sql.render_literal(params)) == 2
    rendered = sql.render_placeholders(params)
    assert total_requests(logs, rendered.text, rendered.bind_values()) == 2


@pytest.mark.parametrize("value", INJECTIONS)
def test_injected_distribution_selects_and_drops_nothing(logs: duckdb.DuckDBPyConnection, value: str) -> None:
    sql = SqlFile.load(MINUTE_METRICS)
    params = metrics_params(value, ("s3://b/E1/a.gz", value))
    assert total_requests(logs, sql.render_literal(params)) == 0
    assert table_intact(logs)
    rendered = sql.render_placeholders(params)
    assert total_requests(logs, rendered.text, rendered.bind_values()) == 0
    assert table_intact(logs)


@pytest.mark.parametrize("value", INJECTIONS)
def test_injected_path_selects_and_drops_nothing(logs: duckdb.DuckDBPyConnection, value: str) -> None:
    sql = SqlFile.load(MINUTE_METRICS)
    params = metrics_params("E1", (value,))
    assert total_requests(logs, sql.render_literal(params)) == 0
    rendered = sql.render_placeholders(params)
    assert total_requests(logs, rendered.text, rendered.bind_values()) == 0
    assert table_intact(logs)


# ---------------------------------------------------------------------------------------------------------------
# validation before values reach SQL


@pytest.mark.parametrize("value", [*INJECTIONS, "e2example", "", "E" * 65, "E2 EXAMPLE", "\nE2EXAMPLE"])
def test_distribution_id_validation_rejects(value: str) -> None:
    with pytest.raises(ConfigError) as error:
        validate_distribution_id(value)
    assert repr(value) in str(error.value)


@pytest.mark.parametrize("value", ["E2EXAMPLE1ABCD", "E1", "E" * 64])
def test_distribution_id_validation_accepts(value: str) -> None:
    assert validate_distribution_id(value) == value


@pytest.mark.parametrize("value", [*INJECTIONS, "", "AWS/CloudFront", "N" * 256, "Name\twith tab", "Ünïcode"])
def test_namespace_validation_rejects(value: str) -> None:
    with pytest.raises(ConfigError) as error:
        validate_namespace(value)
    assert repr(value) in str(error.value)


@pytest.mark.parametrize("value", ["CloudFront/AccessLogs", "My App: edge #1", "N" * 255])
def test_namespace_validation_accepts(value: str) -> None:
    assert validate_namespace(value) == value


@pytest.mark.parametrize(
    "validate, value",
    [(validate_distribution_id, "E2EXAMPLE\n"), (validate_namespace, "CloudFront/AccessLogs\n")],
    ids=["distribution_id", "namespace"],
)
def test_validation_rejects_trailing_newline(validate: Callable[[str], str], value: str) -> None:
    with pytest.raises(ConfigError):
        validate(value)


@pytest.mark.parametrize(
    "value",
    [
        "s3://bucket/E1' OR '1'='1",
        "s3://bucket/x'; DROP TABLE cloudfront_logs; --",
        "s3://bucket/E1' /* */ OR 'a' = 'a",
        "s3://bucket/back\\slash/",
        's3://bucket/double"quote/',
        "s3://bucket/a b/",
        "s3://Bucket/prefix/",
        "https://bucket/prefix/",
        "s3://bucket/pre\nfix/",
        "s3://b/",
    ],
)
def test_s3_location_validation_rejects(value: str) -> None:
    with pytest.raises(ConfigError) as error:
        validate_s3_location(value)
    assert repr(value) in str(error.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("s3://bucket/prefix", "s3://bucket/prefix/"), ("s3://my-log.bucket/cf/logs/", "s3://my-log.bucket/cf/logs/")],
)
def test_s3_location_validation_accepts_and_adds_slash(value: str, expected: str) -> None:
    assert validate_s3_location(value) == expected


@pytest.mark.parametrize("value", ["s3://bucket/it's/", "s3://bucket/E1'--/"])
def test_s3_location_validation_rejects_single_quote(value: str) -> None:
    with pytest.raises(ConfigError):
        validate_s3_location(value)
