"""The Athena-to-DuckDB translation of sql/: only proven functions, each proof against Trino's documented result."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlglot
from sqlglot import exp
from sqlglot.tokenizer_core import TokenType

from job.core.errors import UntranslatableSqlError
from job.query.ddl import table_spec
from job.query.sql_files import DEFAULT_SQL_DIR, MINUTE_METRICS, TABLE_DDL, SqlFile
from job.query.sql_values import Varchar, VarcharList
from job.query.translate import PROVEN_FUNCTIONS, check_translatable, functions_used, to_duckdb

Connection = duckdb.DuckDBPyConnection
SQL_FILES = sorted(DEFAULT_SQL_DIR.glob("*.sql"))
PARSE_FORMAT = "'%Y-%m-%d %H:%i:%s'"


@pytest.fixture
def con() -> Iterator[Connection]:
    connection = duckdb.connect(":memory:")
    connection.execute("SET TimeZone = 'UTC'")
    yield connection
    connection.close()


def run(con: Connection, athena_sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    """Translate an Athena statement and run it on DuckDB."""
    return con.execute(to_duckdb(athena_sql, "test"), list(params)).fetchall()


def scalar(con: Connection, athena_expression: str) -> Any:
    rows = run(con, f"SELECT {athena_expression}")
    assert len(rows) == 1
    return rows[0][0]


def uses(athena_sql: str, node: str) -> None:
    """A proof must exercise the sqlglot node it proves."""
    assert node in functions_used(athena_sql), f"{athena_sql!r} does not use {node}"


def is_ddl(path: Path) -> bool:
    tokens = sqlglot.Dialect.get_or_raise("athena").tokenize(path.read_text(encoding="utf-8"))
    # Athena's tokenizer marks DDL (run by Hive) with an empty leading HIVE_TOKEN_STREAM token
    first = next((t for t in tokens if t.token_type is not TokenType.HIVE_TOKEN_STREAM), None)
    return first is not None and first.token_type is TokenType.CREATE


def is_view(path: Path) -> bool:
    """CREATE VIEW: a statement Athena runs as a query (Trino), so its functions must be proven like a query's."""
    tree = sqlglot.parse_one(path.read_text(encoding="utf-8"), read="athena")
    return isinstance(tree, exp.Create) and tree.kind == "VIEW"


def query_files() -> list[Path]:
    """Every file whose text Athena runs as Trino SQL: the queries and the views (not the Hive table DDL)."""
    return [p for p in SQL_FILES if not is_ddl(p) or is_view(p)]


def rendered_with_dummy_values(path: Path) -> str:
    sql = SqlFile.load(path.stem, path.parent)
    return sql.render_placeholders({name: Varchar("2026112815") for name in sql.parameters}).text


# ---------------------------------------------------------------------------------------------------------------
# (a) every query file in sql/ uses proven functions only


def test_sql_dir_has_the_query_and_the_ddl() -> None:
    names = {p.stem for p in SQL_FILES}
    assert {MINUTE_METRICS, TABLE_DDL} <= names
    ddl = {p.stem for p in SQL_FILES if is_ddl(p)}
    assert TABLE_DDL in ddl
    assert MINUTE_METRICS not in ddl
    checked = {p.stem for p in query_files()}
    assert {MINUTE_METRICS, "cloudfront_logs_v2_view"} <= checked  # the normalising view is checked as a query
    assert TABLE_DDL not in checked


@pytest.mark.parametrize("path", query_files(), ids=lambda p: p.name)
def test_query_file_uses_only_proven_functions(path: Path) -> None:
    text = rendered_with_dummy_values(path)
    used = functions_used(text)
    assert used, f"{path.name}: no function found, the walk over the tree is broken"
    assert used <= PROVEN_FUNCTIONS, f"{path.name}: unproven {sorted(used - PROVEN_FUNCTIONS)}"
    check_translatable(text, path.name)  # raises if not
    assert to_duckdb(text, path.name)


@pytest.mark.parametrize("path", [p for p in SQL_FILES if is_ddl(p)], ids=lambda p: p.name)
def test_ddl_is_a_create_statement_not_a_query(path: Path) -> None:
    sql = SqlFile.load(path.stem, path.parent)
    text = sql.render_literal({name: Varchar("s3://bucket/prefix/") for name in sql.parameters})
    statements = sqlglot.parse(text, read="athena")
    assert len(statements) == 1
    assert isinstance(statements[0], exp.Create)


@pytest.mark.parametrize(
    ("athena_sql", "named", "line"),
    [
        ("SELECT url_extract_parameter(u, 'a') FROM t", "url_extract_parameter", 1),
        ("SELECT 1,\n  url_extract_path(u)\nFROM t", "url_extract_path", 2),
        ("SELECT\n x,\n format_datetime(ts, 'yyyy-MM-dd') FROM t", "format_datetime", 3),
        ("SELECT map_agg(k, v) FROM t", "map_agg", 1),
        ("SELECT\n upper(s) FROM t", "upper", 2),
        ("SELECT regexp_extract(u, 'a(b)?', 1) FROM t", "regexp_extract", 1),
        ("SELECT regexp_like(u, '[[:alpha:]]') FROM t", "regexp_like", 1),
        ("SELECT regexp_like(u, p) FROM t", "regexp_like", 1),
        ("SELECT strpos(s, 'a', 2) FROM t", "strpos", 1),
        ("SELECT from_unixtime(x, 'Europe/Paris') FROM t", "from_unixtime", 1),
        ("SELECT\n\n date_format(ts, '%v') FROM t", "date_format", 3),
        ("SELECT parse_datetime(s, 'yyyy-MM-dd') FROM t", "parse_datetime", 1),
    ],
)
def test_unproven_function_is_refused_naming_function_file_and_line(athena_sql: str, named: str, line: int) -> None:
    with pytest.raises(UntranslatableSqlError, match=rf"^where\.sql, line {line}: {named} \("):
        check_translatable(athena_sql, "where.sql")
    with pytest.raises(UntranslatableSqlError, match=rf"where\.sql, line {line}: {named}"):
        to_duckdb(athena_sql, "where.sql")


def test_refusal_in_a_sql_file_names_its_line(tmp_path: Path) -> None:
    text = (DEFAULT_SQL_DIR / f"{MINUTE_METRICS}.sql").read_text(encoding="utf-8")
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if "count(*)" in line)
    lines[at] = lines[at].replace("count(*)", "url_extract_path(cs_uri_stem)", 1)
    edited = tmp_path / f"{MINUTE_METRICS}.sql"
    edited.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sql = SqlFile.load(MINUTE_METRICS, tmp_path)
    rendered = sql.render_placeholders({name: Varchar("2026112815") for name in sql.parameters}).text
    with pytest.raises(UntranslatableSqlError, match=rf"minute_metrics\.sql, line {at + 1}: url_extract_path"):
        to_duckdb(rendered, edited.name)


# The Trino functions called in sql/ queries and the proof that covers each; a new function in sql/ fails
# test_called_functions_have_proofs until someone maps it here to a proof below.
TRINO_CALLS: dict[str, str] = {
    "approx_percentile": "ApproxQuantile",
    "cast": "Cast",
    "coalesce": "Coalesce",
    "concat": "Concat",
    "count": "Count",
    "date_format": "TimeToStr",
    "date_parse": "StrToTime",
    "date_trunc": "TimestampTrunc",
    "element_at": "Bracket",
    "from_unixtime": "UnixToTime",
    "grouping": "Grouping",
    "ln": "Ln",
    "power": "Pow",
    "regexp_like": "RegexpLike",
    "round": "Round",
    "substr": "Substring",
    "sum": "Sum",
    "try": "Try",
    "try_cast": "TryCast",
}


def called_functions(text: str) -> set[str]:
    """Names written as `name(` in the text, found by the tokenizer (so strings and comments are skipped)."""
    tokens = sqlglot.Dialect.get_or_raise("athena").tokenize(text)
    return {
        a.text.lower()
        for a, b in itertools.pairwise(tokens)
        if b.token_type is TokenType.L_PAREN and a.token_type is TokenType.VAR
    }


@pytest.mark.parametrize("path", query_files(), ids=lambda p: p.name)
def test_called_functions_have_proofs(path: Path) -> None:
    called = called_functions(rendered_with_dummy_values(path))
    assert called, "the tokenizer found no call: the check is broken"
    assert called <= set(TRINO_CALLS), f"{path.name}: map {sorted(called - set(TRINO_CALLS))} to a proof"
    assert {TRINO_CALLS[c] for c in called} <= set(PROOFS) | set(EXTRA_PROOFS)


@pytest.mark.parametrize("path", query_files(), ids=lambda p: p.name)
def test_functions_used_sees_every_called_function(path: Path) -> None:
    text = rendered_with_dummy_values(path)
    missing = {c for c in called_functions(text) if TRINO_CALLS.get(c) not in functions_used(text)}
    assert not missing, f"{path.name}: check_translatable does not see {sorted(missing)}"


# ---------------------------------------------------------------------------------------------------------------
# (b) one proof per entry of PROVEN_FUNCTIONS


def prove_and(con: Connection) -> None:
    uses("SELECT TRUE AND FALSE", "And")
    # Trino: three-valued logic, NULL AND FALSE is FALSE, NULL AND TRUE is NULL.
    assert scalar(con, "TRUE AND TRUE") is True
    assert scalar(con, "TRUE AND FALSE") is False
    assert scalar(con, "CAST(NULL AS boolean) AND FALSE") is False
    assert scalar(con, "CAST(NULL AS boolean) AND TRUE") is None
    con.execute("CREATE TABLE t (a INTEGER, b INTEGER)")
    con.execute("INSERT INTO t VALUES (1, 1), (1, 2), (2, 1), (NULL, 1)")
    assert run(con, "SELECT a, b FROM t WHERE a = 1 AND b = 2") == [(1, 2)]


def nearest_rank(values: Sequence[int], q: str) -> int:
    """The nearest-rank percentile: the smallest value with at least q of the data at or below it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(Fraction(q) * len(ordered)))
    return ordered[rank - 1]


def prove_approx_quantile(con: Connection) -> None:
    query = (
        "SELECT g, element_at(p, 1), element_at(p, 2), element_at(p, 3) FROM ("
        "SELECT g, approx_percentile(x, ARRAY[0.5, 0.9, 0.99]) AS p FROM t GROUP BY g) ORDER BY g"
    )
    uses(query, "ApproxQuantile")
    rng = random.Random(20261128)
    data: dict[int, list[int]] = {}
    for group, size in enumerate([1, 2, 3, 7, 10, 99, 100, 101, 250, 1000]):
        data[group] = [rng.choice([rng.randint(0, 30), rng.randint(0, 5000)]) for _ in range(size)]
    con.execute("CREATE TABLE t (g INTEGER, x BIGINT)")
    rows: list[tuple[int, int | None]] = [(g, x) for g, xs in data.items() for x in xs]
    rows += [(g, None) for g in data]  # aggregates skip NULL
    rows += [(99, None), (99, None)]  # a group with no value at all
    con.executemany("INSERT INTO t VALUES (?, ?)", rows)
    got = {g: (p50, p90, p99) for g, p50, p90, p99 in run(con, query)}
    assert got.pop(99) == (None, None, None)
    assert set(got) == set(data)
    for group, xs in data.items():
        expected = tuple(nearest_rank(xs, q) for q in ("0.5", "0.9", "0.99"))
        assert got[group] == expected, f"group of {len(xs)}"
        assert set(got[group]) <= set(xs)  # approx_percentile returns values of the data
    # the single-percentage form returns a scalar
    single = "SELECT approx_percentile(x, 0.5) FROM t WHERE g = 4"
    uses(single, "ApproxQuantile")
    assert run(con, single) == [(nearest_rank(data[4], "0.5"),)]


def prove_array(con: Connection) -> None:
    uses("SELECT ARRAY[1, 2]", "Array")
    assert scalar(con, "ARRAY[0.5, 0.9, 0.99]") == [Decimal("0.5"), Decimal("0.9"), Decimal("0.99")]
    assert scalar(con, "ARRAY['b', 'a']") == ["b", "a"]  # order kept
    assert scalar(con, "element_at(ARRAY[10, 20, 30], 2)") == 20  # 1-based


def prove_case(con: Connection) -> None:
    uses("SELECT CASE WHEN 1 = 1 THEN 1 END", "Case")
    # Trino: the first WHEN that is true wins; no true WHEN and no ELSE gives NULL; a NULL condition is not true.
    assert scalar(con, "CASE WHEN 1 < 2 THEN 'first' WHEN 1 < 3 THEN 'second' END") == "first"
    assert scalar(con, "CASE WHEN 1 > 2 THEN 'a' END") is None
    assert scalar(con, "CASE WHEN NULL THEN 'a' ELSE 'b' END") == "b"
    assert scalar(con, "CASE WHEN CAST(NULL AS bigint) < 100 THEN 1 ELSE 2 END") == 2


def prove_cast(con: Connection) -> None:
    uses("SELECT CAST(1.5e0 AS bigint)", "Cast")
    # Trino casts double to bigint by rounding (DoubleMath.roundToLong HALF_UP), not truncating.
    assert scalar(con, "CAST(2.7e0 AS bigint)") == 3
    assert scalar(con, "CAST(-2.7e0 AS bigint)") == -3
    assert scalar(con, "CAST(2.2e0 AS bigint)") == 2
    assert scalar(con, "CAST(round(86399999.5e0) AS bigint)") == 86400000
    assert scalar(con, "CAST('42' AS bigint)") == 42
    assert scalar(con, "CAST(NULL AS bigint)") is None
    # TIMESTAMP '...' is a cast too
    assert scalar(con, "TIMESTAMP '2026-11-28 15:04:05'") == datetime(2026, 11, 28, 15, 4, 5)


def prove_concat(con: Connection) -> None:
    uses("SELECT concat('a', 'b')", "Concat")
    assert scalar(con, "concat('2026', '11', '28', '15')") == "2026112815"
    # Trino: concat returns NULL if any argument is NULL
    assert scalar(con, "concat('a', NULL)") is None
    assert scalar(con, "concat(NULL, 'a', 'b')") is None
    assert scalar(con, "concat('2026-11-28', ' ', '15:04:05')") == "2026-11-28 15:04:05"


def prove_count(con: Connection) -> None:
    uses("SELECT count(*) FROM t", "Count")
    con.execute("CREATE TABLE t (g INTEGER, x INTEGER)")
    con.execute("INSERT INTO t VALUES (1, 1), (1, NULL), (1, 3), (2, NULL)")
    # count(*) counts rows, count(x) the non-NULL values
    assert run(con, "SELECT count(*), count(x) FROM t") == [(4, 2)]
    assert run(con, "SELECT g, count(*), count(x) FROM t GROUP BY g ORDER BY g") == [(1, 3, 2), (2, 1, 0)]
    assert run(con, "SELECT count(*) FROM t WHERE g = 3") == [(0,)]


def trino_grouping(args: Sequence[str], grouping_set: set[str]) -> int:
    """Trino: one bit per argument, the rightmost the least significant, 1 if the column is not in the set."""
    return sum(1 << (len(args) - 1 - i) for i, column in enumerate(args) if column not in grouping_set)


def prove_grouping(con: Connection) -> None:
    query = (
        "SELECT m, grouping(r, b) AS gid, r, b, count(*) FROM t "
        "GROUP BY GROUPING SETS ((m), (m, r), (m, b)) ORDER BY gid, r, b"
    )
    uses(query, "Grouping")
    con.execute("CREATE TABLE t (m INTEGER, r VARCHAR, b INTEGER)")
    rows = [(1, "Hit", 10), (1, "Hit", 20), (1, "Miss", 10)]
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    got = run(con, query)
    gid_minute = trino_grouping(["r", "b"], {"m"})
    gid_type = trino_grouping(["r", "b"], {"m", "r"})
    gid_bucket = trino_grouping(["r", "b"], {"m", "b"})
    assert (gid_minute, gid_type, gid_bucket) == (3, 1, 2)  # what sql/minute_metrics.sql documents
    expected = sorted(
        [(1, gid_minute, None, None, 3)]
        + [(1, gid_type, r, None, n) for r, n in Counter(r for _, r, _ in rows).items()]
        + [(1, gid_bucket, None, b, n) for b, n in Counter(b for _, _, b in rows).items()],
        key=lambda t: (t[1], t[2] or "", t[3] or 0),
    )
    assert got == expected


def prove_if(con: Connection) -> None:
    uses("SELECT if(1 < 2, 'x', 'y')", "If")
    uses("SELECT CASE WHEN 1 < 2 THEN 'x' END", "If")  # sqlglot's node for each WHEN branch
    assert scalar(con, "if(1 < 2, 'x', 'y')") == "x"
    assert scalar(con, "if(1 > 2, 'x', 'y')") == "y"
    assert scalar(con, "if(1 > 2, 'x')") is None  # Trino: no false value gives NULL
    assert scalar(con, "if(NULL, 'x', 'y')") == "y"
    assert scalar(con, "CASE WHEN 5 < 100 THEN 'small' ELSE 'big' END") == "small"


def prove_ln(con: Connection) -> None:
    uses("SELECT ln(2)", "Ln")
    for x in ("1.02", "100", "2.718281828459045", "86400000"):
        assert math.isclose(scalar(con, f"ln({x})"), math.log(float(x)), rel_tol=1e-15, abs_tol=1e-15)
    assert scalar(con, "ln(1)") == 0.0
    assert scalar(con, "ln(CAST(NULL AS double))") is None


def prove_pow(con: Connection) -> None:
    uses("SELECT power(2, 3)", "Pow")
    assert scalar(con, "power(2, 10)") == 1024.0
    for exponent in (0, 1, 10, 233, 862, -5):
        assert math.isclose(scalar(con, f"power(1.02, {exponent})"), 1.02**exponent, rel_tol=1e-14)
    assert scalar(con, "power(1.02, CAST(NULL AS double))") is None


def trino_round(x: float) -> float:
    """Trino's round(double): half away from zero (Math.round on the magnitude), computed exactly."""
    return float(Decimal(x).to_integral_value(rounding=ROUND_HALF_UP))


def prove_round(con: Connection) -> None:
    uses("SELECT round(1.5e0)", "Round")
    assert scalar(con, "round(2.5e0)") == 3.0
    assert scalar(con, "round(-2.5e0)") == -3.0
    assert scalar(con, "round(0.5e0)") == 1.0
    assert scalar(con, "round(1.4999999e0)") == 1.0
    assert scalar(con, "round(2.5)") == 3  # decimal argument, same rule
    assert scalar(con, "round(-2.5)") == -3
    assert scalar(con, "round(CAST(NULL AS double))") is None
    # many doubles at once, as the query rounds them: time-taken seconds times 1000
    rng = random.Random(5)
    values = [i + 0.5 for i in range(-50, 50)] + [0.49999999999999994, 1e15 + 0.5]
    values += [float(f"{rng.randint(0, 86399)}.{rng.randint(0, 999):03d}") * 1000 for _ in range(2000)]
    values += [rng.uniform(-1e6, 1e6) for _ in range(500)]
    con.execute("CREATE TABLE t (i INTEGER, x DOUBLE)")
    con.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(values)))
    got = [r[0] for r in run(con, "SELECT round(x) FROM t ORDER BY i")]
    assert got == [trino_round(x) for x in values]


def prove_str_to_time(con: Connection) -> None:
    uses(f"SELECT date_parse('2026-11-28 15:04:05', {PARSE_FORMAT})", "StrToTime")
    # MySQL-style format: %i is minutes, %s seconds (not month names / epoch seconds)
    assert scalar(con, f"date_parse('2026-11-28 15:04:05', {PARSE_FORMAT})") == datetime(2026, 11, 28, 15, 4, 5)
    assert scalar(con, f"date_parse('2026-01-02 03:59:58', {PARSE_FORMAT})") == datetime(2026, 1, 2, 3, 59, 58)
    assert scalar(con, f"date_parse(concat('2026-11-28', ' ', '23:59:59'), {PARSE_FORMAT})") == datetime(
        2026, 11, 28, 23, 59, 59
    )


def prove_timestamp_trunc(con: Connection) -> None:
    uses("SELECT date_trunc('minute', TIMESTAMP '2026-11-28 15:04:05')", "TimestampTrunc")
    assert scalar(con, "date_trunc('minute', TIMESTAMP '2026-11-28 15:04:59.999')") == datetime(2026, 11, 28, 15, 4)
    assert scalar(con, f"date_trunc('minute', date_parse('2026-11-28 23:59:59', {PARSE_FORMAT}))") == datetime(
        2026, 11, 28, 23, 59
    )
    assert scalar(con, "date_trunc('minute', CAST(NULL AS timestamp))") is None


def prove_try(con: Connection) -> None:
    uses(f"SELECT try(date_parse('x', {PARSE_FORMAT}))", "Try")
    # Trino: try returns NULL when its argument fails
    assert scalar(con, f"try(date_parse('garbage', {PARSE_FORMAT}))") is None
    assert scalar(con, f"try(date_parse('2026-02-30 15:04:05', {PARSE_FORMAT}))") is None
    assert scalar(con, f"try(date_parse('2026-11-28 25:00:00', {PARSE_FORMAT}))") is None
    assert scalar(con, f"try(date_parse('2026-11-28 15:04:05', {PARSE_FORMAT}))") == datetime(2026, 11, 28, 15, 4, 5)
    assert scalar(con, "try(CAST('x' AS bigint))") is None


def prove_try_cast(con: Connection) -> None:
    uses("SELECT try_cast('1' AS double)", "TryCast")
    assert scalar(con, "try_cast('-' AS double)") is None
    assert scalar(con, "try_cast('' AS double)") is None
    assert scalar(con, "try_cast('0.123' AS double)") == 0.123
    assert scalar(con, "try_cast('86399.999' AS double)") == 86399.999
    assert scalar(con, "try_cast('1e3' AS double)") == 1000.0
    assert scalar(con, "try_cast(NULL AS double)") is None


PROOFS: dict[str, Callable[[Connection], None]] = {
    "And": prove_and,
    "ApproxQuantile": prove_approx_quantile,
    "Array": prove_array,
    "Case": prove_case,
    "Cast": prove_cast,
    "Concat": prove_concat,
    "Count": prove_count,
    "Grouping": prove_grouping,
    "If": prove_if,
    "Ln": prove_ln,
    "Pow": prove_pow,
    "Round": prove_round,
    "StrToTime": prove_str_to_time,
    "TimestampTrunc": prove_timestamp_trunc,
    "Try": prove_try,
    "TryCast": prove_try_cast,
}


def prove_element_at(con: Connection) -> None:
    # Trino element_at(array, i): 1-based, NULL past the end, negative counts from the end.
    assert scalar(con, "element_at(ARRAY[10, 20, 30], 1)") == 10
    assert scalar(con, "element_at(ARRAY[10, 20, 30], 3)") == 30
    assert scalar(con, "element_at(ARRAY[10, 20, 30], 4)") is None
    assert scalar(con, "element_at(ARRAY[10, 20, 30], -1)") == 30


def prove_div(con: Connection) -> None:
    # Trino: double / double is IEEE division (sql/ divides ln() by ln()); integer division is not proven.
    assert scalar(con, "ln(1000e0) / ln(10e0)") == pytest.approx(3.0)
    assert scalar(con, "7e0 / 2e0") == 3.5
    assert scalar(con, "1e0 / 0e0") == float("inf")


def prove_sum(con: Connection) -> None:
    # Trino sum: NULLs ignored, NULL for no rows, bigint for integer input.
    assert scalar(con, "(SELECT sum(x) FROM (VALUES (1), (NULL), (5)) AS t(x))") == 6
    assert scalar(con, "(SELECT sum(x) FROM (VALUES (1)) AS t(x) WHERE x > 1)") is None
    assert (
        scalar(con, "(SELECT sum(CASE WHEN s LIKE '5__' THEN 1 ELSE 0 END) FROM (VALUES ('502'), ('200')) AS t(s))")
        == 1
    )


def prove_like(con: Connection) -> None:
    # Trino LIKE: '_' is exactly one character, '%' any run, case-sensitive, no implicit anchors beyond the pattern.
    assert scalar(con, "'503' LIKE '5__'") is True
    assert scalar(con, "'5003' LIKE '5__'") is False
    assert scalar(con, "'000' LIKE '5%'") is False
    assert scalar(con, "'Hit' LIKE 'hit'") is False
    assert scalar(con, "'RefreshHit' LIKE '%Hit'") is True


def prove_time_to_str(con: Connection) -> None:
    uses("SELECT date_format(TIMESTAMP '2026-11-28 15:04:05', '%Y-%m-%d')", "TimeToStr")
    # Trino date_format uses MySQL specifiers: %Y four-digit year, %m month 01-12, %d day 01-31, %H hour 00-23,
    # %i minutes 00-59, %s seconds 00-59 (a fraction of a second is not shown).
    assert scalar(con, "date_format(TIMESTAMP '2026-01-02 03:04:05', '%Y-%m-%d')") == "2026-01-02"
    assert scalar(con, "date_format(TIMESTAMP '2026-01-02 03:04:05', '%H:%i:%s')") == "03:04:05"
    assert scalar(con, "date_format(TIMESTAMP '2024-02-29 23:59:59.999', '%Y-%m-%d %H:%i:%s')") == "2024-02-29 23:59:59"
    assert scalar(con, "date_format(TIMESTAMP '2099-12-31 00:00:00', '%Y-%m-%d')") == "2099-12-31"
    assert scalar(con, "date_format(CAST(NULL AS timestamp), '%Y-%m-%d')") is None
    # what sql/cloudfront_logs_v2_view.sql relies on: date_parse reads back what date_format wrote
    day, time = "date_format(x, '%Y-%m-%d')", "date_format(x, '%H:%i:%s')"
    round_trip = f"date_parse(concat({day}, ' ', {time}), {PARSE_FORMAT})".replace(
        "x", "TIMESTAMP '2026-11-28 15:04:05'"
    )
    assert scalar(con, round_trip) == datetime(2026, 11, 28, 15, 4, 5)


def prove_unix_to_time(con: Connection) -> None:
    uses("SELECT from_unixtime(0e0)", "UnixToTime")

    # Trino from_unixtime(double): the instant that many seconds after 1970-01-01 00:00:00 UTC, as a timestamp with
    # time zone in the session's zone (UTC in Athena; the DuckDB engine sets TimeZone = 'UTC'). Compared as the
    # strings the view makes of it, and as an instant.
    def utc(athena_expression: str) -> str:
        return str(scalar(con, f"date_format({athena_expression}, '%Y-%m-%d %H:%i:%s')"))

    assert utc("from_unixtime(0e0)") == "1970-01-01 00:00:00"
    # the real v2 line (fixtures, line 30): timestamp 1738535441 next to date 2025-02-02 and time 22:30:41
    assert utc("from_unixtime(try_cast('1738535441' AS double))") == "2025-02-02 22:30:41"
    assert utc("from_unixtime(try_cast('1738535441.937' AS double))") == "2025-02-02 22:30:41"  # fraction: same s
    assert utc("from_unixtime(1709251199e0)") == "2024-02-29 23:59:59"
    assert utc("from_unixtime(1709251200e0)") == "2024-03-01 00:00:00"
    assert utc("from_unixtime(-1e0)") == "1969-12-31 23:59:59"
    assert scalar(con, "from_unixtime(CAST(NULL AS double))") is None
    instant = scalar(con, "from_unixtime(1738535441.5e0)")
    assert instant == datetime(2025, 2, 2, 22, 30, 41, 500000, tzinfo=UTC)
    # an out-of-range value can fail the query; the view wraps it in try(), which gives NULL
    assert scalar(con, "try(date_format(from_unixtime(1e300), '%Y-%m-%d'))") is None


PROOFS.update(
    {
        "Bracket": prove_element_at,
        "Div": prove_div,
        "Sum": prove_sum,
        "Like": prove_like,
        "TimeToStr": prove_time_to_str,
        "UnixToTime": prove_unix_to_time,
    }
)


def prove_string_functions(con: Connection) -> None:
    """DuckDB side of the string functions; tests/trino/test_functions.py compares each with a real Trino."""
    assert scalar(con, "coalesce(NULL, '-', 'x')") == "-"
    assert scalar(con, "nullif('-', '-')") is None and scalar(con, "nullif('a', '-')") == "a"
    assert scalar(con, "length('héllo')") == 5 and scalar(con, "length('')") == 0
    assert scalar(con, "lower('ÄB')") == "äb"
    assert scalar(con, "strpos('héllo', 'l')") == 3 and scalar(con, "strpos('abc', 'x')") == 0
    # Trino substr: start 0 or before the start or past the end gives '', negative counts from the end
    assert [scalar(con, f"substr('hello', {a})") for a in ("0", "-2", "-10", "6", "2, 3", "2, -1", "0, 2")] == [
        "", "lo", "", "", "ell", "", "",
    ]  # fmt: skip
    # Trino split_part: NULL past the last field; an index below 1 fails
    assert scalar(con, "split_part('a,b', ',', 2)") == "b"
    assert scalar(con, "split_part('a,b', ',', 3)") is None
    assert scalar(con, "split_part('', '', 1)") is None
    with pytest.raises(duckdb.Error, match="greater than zero"):
        scalar(con, "split_part('a,b', ',', 0)")


def prove_regexp(con: Connection) -> None:
    assert scalar(con, "regexp_like('RefreshHit', 'Hit$')") is True
    assert scalar(con, "regexp_like(CAST(NULL AS varchar), 'a')") is None
    assert scalar(con, "regexp_extract('a1b22', '[0-9]+')") == "1"
    assert scalar(con, "regexp_extract('abc', 'x')") is None  # Trino: NULL for no match (DuckDB alone: '')
    assert scalar(con, "regexp_extract('a1b22', '([a-z])([0-9]{2})', 2)") == "22"


def prove_aggregates(con: Connection) -> None:
    rows = "(VALUES (1, 2e0, 'b'), (NULL, NULL, NULL), (3, -1e0, 'a')) AS t(n, x, s)"
    assert run(con, f"SELECT avg(n), min(n), max(n), min(x), max(s), count_if(n > 1) FROM {rows}") == [
        (2.0, 1, 3, -1.0, "b", 1)
    ]
    # count_if over no row is 0 in Trino (DuckDB's own COUNT_IF gives NULL)
    assert run(con, f"SELECT count_if(n > 1), avg(n), max(s) FROM {rows} WHERE n > 5") == [(0, None, None)]
    con.execute("CREATE TABLE series AS SELECT range AS x FROM range(1000)")
    assert scalar(con, "(SELECT approx_distinct(x) FROM series)") == pytest.approx(1000, rel=0.07)
    assert scalar(con, "cardinality(ARRAY[1, 2, 3])") == 3


PROOFS.update(
    {
        "Coalesce": prove_string_functions,
        "Nullif": prove_string_functions,
        "Length": prove_string_functions,
        "Lower": prove_string_functions,
        "StrPosition": prove_string_functions,
        "Substring": prove_string_functions,
        "SplitPart": prove_string_functions,
        "RegexpLike": prove_regexp,
        "RegexpExtract": prove_regexp,
        "Avg": prove_aggregates,
        "Min": prove_aggregates,
        "Max": prove_aggregates,
        "CountIf": prove_aggregates,
        "ApproxDistinct": prove_aggregates,
        "ArraySize": prove_aggregates,
    }
)
# Nodes proven outside PROOFS (none left: functions_used now reports Bracket and Div too).
EXTRA_PROOFS: dict[str, Callable[[Connection], None]] = {}


def test_every_proven_function_has_a_proof() -> None:
    assert set(PROOFS) == set(PROVEN_FUNCTIONS)


@pytest.mark.parametrize("name", sorted({**PROOFS, **EXTRA_PROOFS}))
def test_translation_proof(name: str, con: Connection) -> None:
    {**PROOFS, **EXTRA_PROOFS}[name](con)


def test_cast_of_a_computed_double_to_bigint_needs_round(con: Connection) -> None:
    # Trino casts 2.5 to 3 (half away from zero), DuckDB to 2 (half to even): unproven unless round()ed first.
    with pytest.raises(UntranslatableSqlError, match="without round"):
        check_translatable("SELECT CAST(x * 2.5 AS bigint) FROM t", "test.sql")
    assert (scalar(con, "CAST(round(2.5e0) AS bigint)"), scalar(con, "CAST(round(-2.5e0) AS bigint)")) == (3, -3)


def test_weighted_approx_percentile_is_refused_or_weighted(con: Connection) -> None:
    con.execute("CREATE TABLE t AS SELECT * FROM (VALUES (1, 1), (2, 1), (3, 100)) AS v(x, w)")
    query = "SELECT approx_percentile(x, w, 0.5) FROM t"
    try:
        translated = to_duckdb(query, "test")
    except UntranslatableSqlError:
        return
    # weights 1, 1, 100: the weighted median is 3
    assert con.execute(translated).fetchall() == [(3,)]


# ---------------------------------------------------------------------------------------------------------------
# (c) the whole metrics query on a tiny table


def create_log_table(con: Connection, rows: Sequence[dict[str, str | None]]) -> None:
    spec = table_spec(SqlFile.load(TABLE_DDL))
    columns = [*spec.columns, *spec.partition_columns, "$path"]
    declared = ", ".join(f'"{c}" VARCHAR' for c in columns)
    con.execute(f"CREATE TABLE {spec.name} ({declared})")
    placeholders = ", ".join("?" for _ in columns)
    con.executemany(
        f"INSERT INTO {spec.name} VALUES ({placeholders})", [tuple(row.get(c) for c in columns) for row in rows]
    )


def log_row(path: str, distribution: str, partition: str, time: str, result: str, taken: str) -> dict[str, str | None]:
    """One log line in partition 'YYYYMMDDHH' at 'HH:MM:SS' on the partition's day."""
    date = f"{partition[:4]}-{partition[4:6]}-{partition[6:8]}"
    return {
        "date": date,
        "time": time,
        "x_edge_result_type": result,
        "time_taken": taken,
        "distributionid": distribution,
        "year": partition[:4],
        "month": partition[4:6],
        "day": partition[6:8],
        "hour": partition[8:],
        "$path": path,
    }


def test_translated_metrics_query_keeps_path_quoted() -> None:
    text = rendered_with_dummy_values(DEFAULT_SQL_DIR / f"{MINUTE_METRICS}.sql")
    translated = to_duckdb(text, MINUTE_METRICS)
    assert '"$path"' in translated
    columns = [c for c in sqlglot.parse_one(translated, read="duckdb").find_all(exp.Column) if c.name == "$path"]
    assert columns
    assert all(c.this.quoted for c in columns)


def test_metrics_query_partition_range_and_filters(con: Connection) -> None:
    files = ("s3://b/E1/a.gz", "s3://b/E1/b.gz")
    partitions = ["2026112709", "2026112814", "2026112815", "2026112816", "2026112817", "2026112900"]
    rows = []
    for n, partition in enumerate(partitions):
        hh = partition[8:]
        for k in range(n + 1):  # a different number of lines per partition
            rows.append(log_row(files[k % 2], "E1", partition, f"{hh}:{k:02d}:07", "Hit", "0.012"))
    rows.append(log_row("s3://b/E1/other.gz", "E1", "2026112815", "15:00:00", "Hit", "0.001"))  # not in :files
    rows.append(log_row(files[0], "E2", "2026112815", "15:00:00", "Hit", "0.001"))  # other distribution
    create_log_table(con, rows)
    sql = SqlFile.load(MINUTE_METRICS)
    rendered = sql.render_placeholders(
        {
            "distribution_id": Varchar("E1"),
            "years": VarcharList(("2026",)),
            "months": VarcharList(("11",)),
            "days": VarcharList(("28",)),
            "hours": VarcharList(("15", "16")),
            "files": VarcharList(files),
        }
    )
    cursor = con.execute(to_duckdb(rendered.text, sql.name), rendered.bind_values())
    names = [d[0] for d in cursor.description or ()]
    result = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    per_minute = {r["minute"]: r["requests"] for r in result if r["grouping_id"] == 0b0111}
    expected: Counter[datetime] = Counter()
    for row in rows:
        partition = f"{row['year']}{row['month']}{row['day']}{row['hour']}"
        if row["distributionid"] == "E1" and "2026112815" <= partition <= "2026112816" and row["$path"] in files:
            expected[datetime.fromisoformat(f"{row['date']} {row['time']}").replace(second=0)] += 1
    assert sum(expected.values()) == 3 + 4
    assert per_minute == dict(expected)
    # every line took 12 ms: p50/p90/p99 and the histogram say so
    minute_rows = [r for r in result if r["grouping_id"] == 0b0111]
    assert {(r["time_taken_p50_ms"], r["time_taken_p90_ms"], r["time_taken_p99_ms"]) for r in minute_rows} == {
        (12, 12, 12)
    }
    histogram = [(r["time_taken_bucket_ms"], r["requests"]) for r in result if r["grouping_id"] == 0b0101]
    assert sorted(histogram) == sorted((12, n) for n in expected.values())


def test_time_taken_buckets_stay_within_documented_error(con: Connection) -> None:
    # the bucket expression of sql/minute_metrics.sql; the file documents "within 1.5 %" of every time-taken
    bucket = "CASE WHEN ms < 100 THEN ms ELSE CAST(round(power(1.02, round(ln(ms) / ln(1.02)))) AS bigint) END"
    con.execute("CREATE TABLE t AS SELECT CAST(range AS BIGINT) AS ms FROM range(0, 200000)")
    con.execute("INSERT INTO t SELECT CAST(range * 997 AS BIGINT) FROM range(200, 86600)")
    rows = run(con, f"SELECT ms, {bucket} FROM t")
    for ms, value in rows:
        if ms < 100:
            assert value == ms
        else:
            assert abs(value - ms) <= 0.015 * ms, (ms, value)
    # above 100 ms, buckets are about 2 % apart (integer rounding moves that by at most 1 %)
    above = sorted({value for _, value in rows if value >= 100})
    assert all(1.01 <= b / a <= 1.03 for a, b in itertools.pairwise(above))
