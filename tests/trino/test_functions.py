"""Every function sql/ may use (job/query/translate.py PROVEN_FUNCTIONS), evaluated on a real Trino and on DuckDB
after to_duckdb translation, over edge values; a translation is proven when both engines agree.

Each case is an Athena query over a relation `t` of edge values. Trino runs the query as written, DuckDB its
translation; the rows are compared value by value (types too: an integer is not a double). A failing query is
an outcome like a value: where Trino fails, DuckDB must fail too (per input row, so one failing row does not hide
the others). approx_distinct is compared with the exact count within Trino's documented standard error.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import duckdb
import pytest
import sqlglot

from job.query.translate import PROVEN_FUNCTIONS, functions_used, to_duckdb

pytestmark = pytest.mark.trino


class Kind(Enum):
    VARCHAR = "varchar"
    BIGINT = "bigint"
    DOUBLE = "double"
    TIMESTAMP = "timestamp"
    BOOLEAN = "boolean"


NULL = None
STRINGS: tuple[str | None, ...] = (
    NULL, "-", "", "abc", "a,b,,c", ",", "héllo wörld", "ÄÖÜ straße", "日本語,テキスト", "e\u0301", "%20a%2520",
    "Hit", "RefreshHit", "503", "  spaced  ", "tab\there", "x" * 300, "/images/a.png", "a=1&b=2",
)  # fmt: skip
INTS: tuple[int | None, ...] = (NULL, 0, 1, 2, 3, -1, -2, 5, 1000, 2**63 - 1, -(2**63))
DOUBLES: tuple[float | None, ...] = (
    NULL, 0.0, 0.5, 1.5, 2.5, -2.5, 0.012, 86399.999, 1738535441.0, 1738535441.937, 1738535441.9995,
    1738535441.9999, -1.0, -0.0005, 1e15 + 0.5, 1e300, -1e300,
)  # fmt: skip
TIMESTAMPS: tuple[str | None, ...] = (
    NULL, "2026-01-01 00:00:00", "2026-11-28 15:04:05", "2024-02-29 23:59:59.999", "2027-01-01 13:59:00",
    "1970-01-01 00:00:00", "0001-01-01 00:00:00", "9999-12-31 23:59:59",
)  # fmt: skip
PATTERNS = ("b", "^b", "[0-9]+", "\\d{2}", "(?i)HIT", "é", "^\\w+$", "\\s", "x(y)", "a.c", "$^")
# POSIX classes ([[:alpha:]]) are Unicode on Trino (Joni), ASCII on DuckDB (RE2): refused by translate.py
DELIMITERS = (",", "", "::", "é", NULL)


def literal(value: object, kind: Kind) -> str:
    if value is None:
        return f"CAST(NULL AS {kind.value})"
    if kind is Kind.VARCHAR:
        assert isinstance(value, str)
        return "'" + value.replace("'", "''") + "'"
    if kind is Kind.TIMESTAMP:
        return f"TIMESTAMP '{value}'"
    return f"CAST('{value!r}' AS {kind.value})" if kind is Kind.DOUBLE else f"CAST('{value}' AS {kind.value})"


@dataclass(frozen=True)
class Relation:
    """A relation t(i, <columns>) given row by row, the same values on both engines."""

    columns: tuple[tuple[str, Kind], ...]
    rows: tuple[tuple[object, ...], ...]

    @staticmethod
    def product(**columns: tuple[Kind, Sequence[object]]) -> Relation:
        names = tuple((name, kind) for name, (kind, _) in columns.items())
        rows = tuple(itertools.product(*(values for _, values in columns.values())))
        return Relation(names, rows)

    def values_sql(self, only: int | None = None) -> str:
        """Athena SQL for the relation (as a subquery), or for its row `only`."""
        rows = [
            "(" + ", ".join([str(i), *(literal(v, k) for v, (_, k) in zip(row, self.columns, strict=True))]) + ")"
            for i, row in enumerate(self.rows)
            if only is None or i == only
        ]
        names = ", ".join(["i", *(n for n, _ in self.columns)])
        return f"SELECT * FROM (VALUES {', '.join(rows)}) AS v({names})"


@dataclass(frozen=True)
class Case:
    """One proof: `select` (the part after SELECT, over t) on both engines, one row per input row (`per_row`) or
    one aggregate result per group `g`."""

    node: str
    select: str
    relation: Relation
    per_row: bool = True

    def query(self) -> str:
        if self.per_row:
            return f"SELECT i, {self.select} FROM t ORDER BY i"
        return f"SELECT g, {self.select} FROM t GROUP BY g ORDER BY g"


Outcome = list[tuple[Any, ...]] | str  # rows, or "error: <message>"
ERROR = "error: "


def failed(outcome: Outcome) -> bool:
    return isinstance(outcome, str)


class Engines:
    def __init__(self, cursor_factory: Callable[[], Any]) -> None:
        self.trino = cursor_factory()
        self.duckdb = duckdb.connect(":memory:")
        self.duckdb.execute("SET TimeZone = 'UTC'")

    def on_trino(self, relation_sql: str, query: str) -> Outcome:
        try:
            self.trino.execute(f"WITH t AS ({relation_sql}) {query}")
            return [tuple(r) for r in self.trino.fetchall()]
        except Exception as exc:  # a failing query is an outcome to compare
            return ERROR + str(exc)[:200]

    def on_duckdb(self, relation_sql: str, query: str) -> Outcome:
        data = sqlglot.transpile(relation_sql, read="athena", write="duckdb")[0]  # the data, not under proof
        try:
            return [tuple(r) for r in self.duckdb.execute(f"WITH t AS ({data}) {to_duckdb(query, 'proof')}").fetchall()]
        except duckdb.Error as exc:
            return ERROR + str(exc)[:200]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-15, abs_tol=0.0)
    return bool(a == b)


def compare(engines: Engines, case: Case) -> None:
    query = case.query()
    assert case.node in functions_used(query), f"{query!r} does not use {case.node}"
    # the data is the same on both engines
    data = "SELECT * FROM t ORDER BY i"
    relation = case.relation.values_sql()
    assert same(engines.on_trino(relation, data), engines.on_duckdb(relation, data))
    trino, duck = (
        engines.on_trino(case.relation.values_sql(), query),
        engines.on_duckdb(case.relation.values_sql(), query),
    )
    if not failed(trino) and not failed(duck):
        assert isinstance(trino, list) and isinstance(duck, list)
        differ = [(t, d) for t, d in zip(trino, duck, strict=False) if not same(t, d)]
        assert len(trino) == len(duck) and not differ, f"{case.select}: (Trino, DuckDB) {differ[:5]}"
        return
    assert case.per_row, f"{case.select}: Trino {trino}, DuckDB {duck}"
    for i, row in enumerate(case.relation.rows):  # one row at a time: which input fails where
        one = case.relation.values_sql(only=i)
        t, d = engines.on_trino(one, query), engines.on_duckdb(one, query)
        assert failed(t) == failed(d), f"{case.select} on {row}: Trino {t}, DuckDB {d}"
        if not failed(t):
            assert same(t, d), f"{case.select} on {row}: Trino {t}, DuckDB {d}"


S = Relation.product(s=(Kind.VARCHAR, STRINGS))
N = Relation.product(n=(Kind.BIGINT, INTS))
X = Relation.product(x=(Kind.DOUBLE, DOUBLES))
TS = Relation.product(ts=(Kind.VARCHAR, TIMESTAMPS))
B = Relation.product(a=(Kind.BOOLEAN, (True, False, NULL)), b=(Kind.BOOLEAN, (True, False, NULL)))
# Trino 476 fails split_part(s, '', 2**63 - 1) with an internal error (integer overflow): left out.
S_DELIM_N = Relation.product(s=(Kind.VARCHAR, STRINGS[:10]), d=(Kind.VARCHAR, DELIMITERS), n=(Kind.BIGINT, INTS[:-2]))
S_START = Relation.product(s=(Kind.VARCHAR, STRINGS[:10]), n=(Kind.BIGINT, INTS))
# Trino 476 fails substr(s, -k, 2**63 - 1) with an internal error (an overflow of start + length): not a length
# anyone writes, left out.
S_START_LEN = Relation.product(s=(Kind.VARCHAR, STRINGS[:8]), n=(Kind.BIGINT, INTS), m=(Kind.BIGINT, INTS[:-2]))
S_S = Relation.product(s=(Kind.VARCHAR, STRINGS), u=(Kind.VARCHAR, (NULL, "", "-", "l", "b", "ö", ",", "abc")))
GROUPS = Relation(
    (("g", Kind.BIGINT), ("n", Kind.BIGINT), ("x", Kind.DOUBLE), ("s", Kind.VARCHAR)),
    tuple(
        [(1, n, x, s) for n, x, s in zip(INTS[:9], DOUBLES[:9], STRINGS[:9], strict=True)]
        + [(2, None, None, None), (3, 7, -2.5, "ü"), (3, 7, 2.5, "u"), (4, 2**62, 1e300, "a"), (4, 2**62, 1e300, "b")]
    ),
)
TS_SQL = "CAST(ts AS timestamp)"
DATE_FORMATS = ("%Y-%m-%d", "%H:%i:%s", "%S", "%T", "%f", "%h %I %p", "%a %b %W %M", "%j %e %c %y", "%k %l %r",
                "%x", "%%", "%Y-%m-%d %H:%i:%s.%f")  # fmt: skip

CASES: tuple[Case, ...] = (
    Case("And", "a AND b", B),
    Case("Case", "CASE WHEN a THEN 'x' WHEN b THEN 'y' END", B),
    Case("If", "if(a, 'x', 'y'), if(b, 1)", B),
    Case("Coalesce", "coalesce(s, 'none'), coalesce(s, NULL)", S),
    Case("Nullif", "nullif(s, '-'), nullif(s, '')", S),
    Case("Lower", "lower(s)", S),
    Case("Length", "length(s)", S),
    Case("Concat", "concat(s, '|', s), concat(s, CAST(NULL AS varchar))", S),
    Case("Like", "s LIKE '5__', s LIKE '%Hit', s LIKE '_'", S),
    Case("TryCast", "try_cast(s AS double), try_cast(s AS bigint)", S),
    Case("Try", "try(CAST(s AS bigint))", S),
    Case("Cast", "CAST(n AS double), CAST(n AS varchar)", N),
    Case("Cast", "CAST(round(x) AS bigint)", X),
    Case("Round", "round(x)", X),
    Case("Ln", "ln(x)", X),
    Case("Pow", "power(1.02e0, x), power(x, 2e0)", X),
    Case("Div", "x / 2e0, x / 0e0", X),
    Case("UnixToTime", "from_unixtime(x)", X),
    Case("UnixToTime", "try(date_format(from_unixtime(x), '%Y-%m-%d %H:%i:%s.%f'))", X),
    Case("StrToTime", "try(date_parse(s, '%Y-%m-%d %H:%i:%s'))", TS),
    Case("TimestampTrunc", f"date_trunc('minute', {TS_SQL})", TS),
    *(Case("TimeToStr", f"date_format({TS_SQL}, '{f}')", TS) for f in DATE_FORMATS),
    Case("Array", "ARRAY[s, 'x'], element_at(ARRAY[s, 'x'], 2)", S),
    Case("Bracket", "element_at(ARRAY[10, 20, 30], n)", Relation.product(n=(Kind.BIGINT, (1, 3, -1, -3, NULL)))),
    Case("ArraySize", "cardinality(ARRAY[s, s]), cardinality(CAST(NULL AS array(varchar)))", S),
    *(Case("RegexpLike", f"regexp_like(s, '{p}')", S) for p in PATTERNS),
    *(Case("RegexpExtract", f"regexp_extract(s, '{p}'), regexp_extract(s, '{p}', 0)", S) for p in PATTERNS),
    Case("RegexpExtract", "regexp_extract(s, '([a-z]+)(,)', 1), regexp_extract(s, '(\\d)(\\d)', 2)", S),
    Case("SplitPart", "split_part(s, d, n)", S_DELIM_N),
    Case("Substring", "substr(s, n)", S_START),
    Case("Substring", "substr(s, n, m)", S_START_LEN),
    Case("StrPosition", "strpos(s, u)", S_S),
    Case("Count", "count(*), count(n), count(s)", GROUPS, per_row=False),
    Case("CountIf", "count_if(n > 1), count_if(s LIKE 'a%')", GROUPS, per_row=False),
    Case("Sum", "sum(x), sum(CASE WHEN n > 0 THEN 1 ELSE 0 END)", GROUPS, per_row=False),
    Case("Avg", "avg(n), avg(x)", GROUPS, per_row=False),
    Case("Min", "min(n), min(x), min(s)", GROUPS, per_row=False),
    Case("Max", "max(n), max(x), max(s)", GROUPS, per_row=False),
    Case("Grouping", "grouping(g)", GROUPS, per_row=False),
)


@pytest.fixture(scope="module")
def engines(trino_cursor_factory: Callable[[], Any]) -> Iterator[Engines]:
    both = Engines(trino_cursor_factory)
    yield both
    both.duckdb.close()


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.node}:{c.select[:40]}")
def test_trino_and_duckdb_agree(engines: Engines, case: Case) -> None:
    compare(engines, case)


def test_every_proven_function_has_a_differential_case() -> None:
    covered = {c.node for c in CASES} | {"ApproxQuantile", "ApproxDistinct"}
    assert covered == set(PROVEN_FUNCTIONS)


# Aggregates over many values: the data made natively on each engine (the same integers), the query translated.
TRINO_SERIES = (  # sequence() makes at most 10,000 entries: two of them, crossed
    "SELECT x, x % 7 AS g FROM (SELECT a * 10000 + b AS x FROM UNNEST(sequence(0, 9)) AS ua(a) "
    "CROSS JOIN UNNEST(sequence(0, 9999)) AS ub(b)) WHERE x BETWEEN 1 AND {n}"
)
DUCKDB_SERIES = "SELECT range AS x, range % 7 AS g FROM range(1, {n} + 1)"
APPROX_DISTINCT_ERROR = 0.023  # Trino's documented standard error of approx_distinct


def both(engines: Engines, series: int, query: str) -> tuple[list[Any], list[Any]]:
    engines.trino.execute(f"WITH t AS ({TRINO_SERIES.format(n=series)}) {query}")
    trino = engines.trino.fetchall()
    duck = engines.duckdb.execute(f"WITH t AS ({DUCKDB_SERIES.format(n=series)}) {to_duckdb(query, 'proof')}")
    return [tuple(r) for r in trino], [tuple(r) for r in duck.fetchall()]


@pytest.mark.parametrize("series", [1, 10, 1000, 99_999])
def test_approx_distinct_is_within_its_standard_error_on_both(engines: Engines, series: int) -> None:
    query = "SELECT g, approx_distinct(x), approx_distinct(x % 100), count(DISTINCT x) FROM t GROUP BY g ORDER BY g"
    assert "ApproxDistinct" in functions_used(query)
    trino, duck = both(engines, series, query)
    assert [r[0] for r in trino] == [r[0] for r in duck]
    for (_, t_all, t_mod, exact), (_, d_all, d_mod, d_exact) in zip(trino, duck, strict=True):
        assert exact == d_exact
        for t, d, want in ((t_all, d_all, exact), (t_mod, d_mod, min(exact, 100))):
            assert isinstance(t, int) and isinstance(d, int)
            # within 4 standard errors of the exact count (and exact for tiny counts, both HyperLogLog)
            assert abs(t - want) <= max(1, 4 * APPROX_DISTINCT_ERROR * want), (t, want)
            assert abs(d - want) <= max(1, 4 * APPROX_DISTINCT_ERROR * want), (d, want)


def rank_range(values: Sequence[int], got: int) -> tuple[int, int]:
    ordered = sorted(values)
    return sum(1 for v in ordered if v < got), sum(1 for v in ordered if v <= got)


@pytest.mark.parametrize("series", [1, 7, 100, 10_000])
def test_approx_percentile_is_within_rank_tolerance_on_both(engines: Engines, series: int) -> None:
    query = (
        "SELECT g, element_at(p, 1), element_at(p, 2), element_at(p, 3) FROM ("
        "SELECT g, approx_percentile(x, ARRAY[0.5, 0.9, 0.99]) AS p FROM t GROUP BY g) ORDER BY g"
    )
    assert "ApproxQuantile" in functions_used(query)
    trino, duck = both(engines, series, query)
    assert [r[0] for r in trino] == [r[0] for r in duck]
    for t_row, d_row in zip(trino, duck, strict=True):
        values = [x for x in range(1, series + 1) if x % 7 == t_row[0]]
        for q, t, d in zip((0.5, 0.9, 0.99), t_row[1:], d_row[1:], strict=True):
            k = max(1, math.ceil(q * len(values)))
            assert d == sorted(values)[k - 1]  # DuckDB's twin is the exact nearest-rank percentile
            below, upto = rank_range(values, t)  # Trino's within 1 + 1 % of n ranks of it
            slack = 1 + 0.01 * len(values)
            assert below <= k - 1 + slack and upto >= k - slack, (q, t, d)  # not always a value of the data
