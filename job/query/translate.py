"""Athena (Trino) SQL to DuckDB through sqlglot, limited to functions whose translation a test proves."""

from __future__ import annotations

import functools

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from job.core.errors import SqlTemplateError, UntranslatableSqlError

# Every sqlglot function node that sql/ may use. Each has a test in tests/test_translate.py that runs the
# translation on DuckDB and checks the result Trino's documentation gives; add a function here only with its test.
PROVEN_FUNCTIONS: frozenset[str] = frozenset(
    {
        "And",
        "ApproxQuantile",  # approx_percentile(x, ARRAY[...]): rewritten to exact quantile_disc, see below
        "Array",
        "Bracket",  # element_at(array, i)
        "Case",
        "Cast",  # to an integer type only from a column, a literal or round(...): see check_translatable
        "Div",  # proven for doubles only: Trino divides integers as integers, DuckDB does not
        "Concat",
        "Count",
        "Grouping",
        "If",  # sqlglot's node for a CASE branch (WHEN ... THEN ...)
        "Like",  # x LIKE '5__': '_' one character, '%' any run, as in Trino
        "Ln",
        "Pow",
        "Round",
        "StrToTime",  # date_parse
        "Sum",
        "TimeToStr",  # date_format(ts, '%Y-%m-%d' / '%H:%i:%s'): sql/cloudfront_logs_v2_view.sql
        "TimestampTrunc",  # date_trunc('minute', ts)
        "Try",
        "TryCast",
        "UnixToTime",  # from_unixtime(double), in UTC: sql/cloudfront_logs_v2_view.sql
    }
)


def describe_parse_error(exc: ParseError, where: str) -> str:
    """sqlglot's error as plain text, `where` (the file), line and column first: its own message underlines the
    culprit with terminal colour codes, which must reach no pipe or log."""
    if not exc.errors:
        return f"{where}: cannot parse as Athena SQL: {strip_ansi(str(exc))}"
    first = exc.errors[0]
    near = strip_ansi(f"{first.get('highlight') or ''}").strip()
    return (
        f"{where}, line {first.get('line')}, column {first.get('col')}: cannot parse as Athena SQL: "
        f"{strip_ansi(str(first.get('description')))}" + (f" (near {near!r})" if near else "")
    )


def strip_ansi(text: str) -> str:
    """The text without terminal escape sequences (ESC [ digits/semicolons letter), as sqlglot underlines with."""
    out, index = [], 0
    while index < len(text):
        if text.startswith("\x1b[", index):
            index += 2
            while index < len(text) and (text[index].isdigit() or text[index] == ";"):
                index += 1
            index += 1  # the final letter
            continue
        out.append(text[index])
        index += 1
    return "".join(out)


def check_syntax(sql: str, where: str) -> None:
    """Raise SqlTemplateError naming the file, line and column if the text (its `:name` parameters included) is
    not Athena SQL: checked before any query, against the file's own lines."""
    try:
        sqlglot.parse(sql, read="athena")
    except ParseError as exc:
        raise SqlTemplateError(describe_parse_error(exc, where)) from exc


def _parse(sql: str, where: str = "query") -> exp.Expr:
    try:
        return sqlglot.parse_one(sql, read="athena")
    except ParseError as exc:
        raise SqlTemplateError(describe_parse_error(exc, where)) from exc


def _names(tree: exp.Expr) -> set[str]:
    names = set()
    # element_at parses to a Bracket, `/` to a Div and LIKE to a Like, none of them a Func, yet each translates
    # with a catch of its own.
    for node in tree.find_all(exp.Func, exp.Bracket, exp.Div, exp.Like):
        names.add(f"Anonymous:{node.name}" if isinstance(node, exp.Anonymous) else type(node).__name__)
    return names


def functions_used(sql: str) -> set[str]:
    """The sqlglot function node names in an Athena statement; unknown functions appear as 'Anonymous:name'."""
    return _names(_parse(sql))


def _check(tree: exp.Expr, where: str) -> None:
    unproven = sorted(_names(tree) - PROVEN_FUNCTIONS)
    for node in tree.find_all(exp.ApproxQuantile):
        if node.args.get("weight") is not None or node.args.get("accuracy") is not None:
            unproven.append("approx_percentile with a weight or accuracy argument")
    # Trino casts a fractional double to an integer rounding half away from zero, DuckDB half to even; both
    # round() half away from zero, so a computed value must be round()ed before it is cast to an integer.
    for cast in tree.find_all(exp.Cast):
        computed = isinstance(cast.this, exp.Binary | exp.Func) and not isinstance(cast.this, exp.Round)
        if computed and cast.to.is_type(*exp.DataType.INTEGER_TYPES):
            unproven.append(f"CAST({cast.this.sql('athena')} AS {cast.to.sql('athena')}) without round()")
    if unproven:
        raise UntranslatableSqlError(
            f"{where}: uses {', '.join(unproven)}, whose Athena-to-DuckDB translation no test proves; "
            "rewrite it with proven functions or add the function and its test to job/query/translate.py"
        )


def check_translatable(sql: str, where: str) -> None:
    """Raise UntranslatableSqlError if the statement uses a function no test proves."""
    _check(_parse(sql), where)


def _trino_semantics(node: exp.Expr) -> exp.Expr:
    # DuckDB's approx_quantile is a t-digest whose result changes with thread scheduling; Athena's
    # approx_percentile returns a value of the data. quantile_disc also returns a value of the data, exactly and
    # deterministically, so local runs are reproducible and tests compare against exact figures.
    if isinstance(node, exp.ApproxQuantile):
        return exp.Anonymous(this="quantile_disc", expressions=[node.this, node.args["quantile"]])
    return node


@functools.lru_cache(maxsize=64)
def to_duckdb(sql: str, where: str) -> str:
    """Translate one Athena statement to DuckDB's dialect: parsed once, and once per text (a run's queries of the
    same shape share one translation)."""
    tree = _parse(sql, where)
    _check(tree, where)
    return tree.transform(_trino_semantics).sql(dialect="duckdb")
