"""Athena (Trino) SQL to DuckDB through sqlglot, limited to functions whose translation a test proves."""

from __future__ import annotations

import functools
import re

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
        "ArraySize",  # cardinality(array)
        "Avg",
        "ApproxDistinct",  # approx_distinct(x): both HyperLogLog, compared within Trino's standard error 2.3 %
        "Coalesce",
        "Concat",
        "Count",
        "CountIf",  # count_if(cond): rewritten to count(CASE WHEN cond THEN 1 END), 0 (not NULL) for no row
        "Length",
        "Grouping",
        "If",  # sqlglot's node for a CASE branch (WHEN ... THEN ...)
        "Like",  # x LIKE '5__': '_' one character, '%' any run, as in Trino
        "Ln",
        "Lower",
        "Max",
        "Min",
        "Nullif",
        "Pow",
        "RegexpExtract",  # rewritten: NULL when the pattern does not match (DuckDB gives '')
        "RegexpLike",
        "Round",
        "SplitPart",  # rewritten: NULL past the last field, an error for an index below 1, as in Trino
        "StrPosition",  # strpos(s, sub) only: the instance argument is refused
        "StrToTime",  # date_parse
        "Substring",  # substr(s, start[, length]): rewritten to Trino's rules for 0, negative and past-the-end
        "Sum",
        "TimeToStr",  # date_format(ts, '%Y-%m-%d' / '%H:%i:%s'): sql/cloudfront_logs_v2_view.sql
        "TimestampTrunc",  # date_trunc('minute', ts)
        "Try",
        "TryCast",
        "UnixToTime",  # from_unixtime(double): rounded to milliseconds as Trino does; no time zone argument
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


# date_format specifiers whose translation a differential test proves (tests/trino/test_functions.py), in
# sqlglot's internal (strftime) spelling, which is what the parsed node carries: Trino's %Y %m %d %H %i %s %S %T %f
# %h %I %p %a %b %W %M %j %e %c %y %k %l %r %x and %%. Trino refuses %D %U %u %V %w %X; %v has no DuckDB twin.
PROVEN_DATE_FORMAT_SPECIFIERS: frozenset[str] = frozenset(
    {"Y", "m", "d", "H", "M", "S", "I", "p", "a", "b", "A", "B", "j", "-d", "-m", "y", "-H", "-I", "G", "f", "%"}
)
_SPECIFIER = re.compile(r"%(-?.)")
# Regular expressions: Trino (Joni) and DuckDB (RE2) agree on the common syntax the differential test covers;
# RE2 refuses look-around and back-references (the query fails, it never answers differently). A capturing
# group that does not take part in a match is NULL on Trino and '' on DuckDB, so regexp_extract with a group
# above 0 is proven only for a literal pattern without alternation or optional parts.
_OPTIONAL_SYNTAX = re.compile(r"[|?*]|\{0|\{,")


def _names(tree: exp.Expr) -> set[str]:
    names = set()
    # element_at parses to a Bracket, `/` to a Div and LIKE to a Like, none of them a Func, yet each translates
    # with a catch of its own.
    for node in tree.find_all(exp.Func, exp.Bracket, exp.Div, exp.Like):
        names.add(_name(node))
    return names


def _name(node: exp.Expr) -> str:
    return f"Anonymous:{node.name}" if isinstance(node, exp.Anonymous) else type(node).__name__


def functions_used(sql: str) -> set[str]:
    """The sqlglot function node names in an Athena statement; unknown functions appear as 'Anonymous:name'."""
    return _names(_parse(sql))


def _athena_call(node: exp.Expr) -> str:
    """How the node is written in Athena SQL: 'url_extract_parameter', 'regexp_extract', 'LIKE', ..."""
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    text = node.sql(dialect="athena")
    head = text.split("(", 1)[0].strip()
    return head.lower() if head and "(" in text and " " not in head else type(node).__name__


def _line(node: exp.Expr, text: str) -> int | None:
    """The node's line in the statement's text: from the tokens' positions sqlglot keeps, or searched by name."""
    for candidate in (node, *node.find_all(exp.Expr)):
        line = candidate.meta.get("line")
        if isinstance(line, int):
            return line
    name = _athena_call(node)
    match = re.search(rf"\b{re.escape(name)}\s*\(", text, flags=re.IGNORECASE)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _problems(node: exp.Expr) -> str | None:
    """Why this node has no proven translation, or None if it has one."""
    name = _name(node)
    if name not in PROVEN_FUNCTIONS:
        return "no test proves its Athena-to-DuckDB translation"
    if isinstance(node, exp.ApproxQuantile) and any(node.args.get(k) is not None for k in ("weight", "accuracy")):
        return "approx_percentile with a weight or accuracy argument is not proven"
    # Trino casts a fractional double to an integer rounding half away from zero, DuckDB half to even; both
    # round() half away from zero, so a computed value must be round()ed before it is cast to an integer.
    if isinstance(node, exp.Cast):
        computed = isinstance(node.this, exp.Binary | exp.Func) and not isinstance(node.this, exp.Round)
        if computed and node.to.is_type(*exp.DataType.INTEGER_TYPES):
            return f"CAST({node.this.sql('athena')} AS {node.to.sql('athena')}) without round() is not proven"
    if isinstance(node, exp.StrPosition) and any(node.args.get(k) is not None for k in ("occurrence", "position")):
        return "strpos with an instance argument is not proven (sqlglot drops it)"
    if isinstance(node, exp.UnixToTime) and any(v is not None for k, v in node.args.items() if k != "this"):
        return "from_unixtime with a time zone or other argument is not proven"
    if isinstance(node, exp.TimeToStr):
        fmt = node.args.get("format")
        if not isinstance(fmt, exp.Literal) or not fmt.is_string:
            return "date_format with a format that is not a string literal is not proven"
        unproven = sorted(set(_SPECIFIER.findall(fmt.this)) - PROVEN_DATE_FORMAT_SPECIFIERS)
        if unproven:
            return f"date_format specifier(s) {', '.join(unproven)} (strftime spelling) not proven"
    if isinstance(node, exp.RegexpLike | exp.RegexpExtract):
        pattern = node.expression
        if not (isinstance(pattern, exp.Literal) and pattern.is_string):
            return "a regular expression that is not a string literal is not proven"
        if "[:" in pattern.this:
            return "POSIX classes ([[:alpha:]]) are Unicode on Trino, ASCII on DuckDB"
    if isinstance(node, exp.RegexpExtract):
        group = node.args.get("group")
        pattern = node.expression
        if node.args.get("parameters") is not None:
            return "regexp_extract with parameters is not proven"
        if group is not None and not (isinstance(group, exp.Literal) and group.this == "0"):
            if not (isinstance(pattern, exp.Literal) and pattern.is_string):
                return "regexp_extract with a group needs a literal pattern"
            if _OPTIONAL_SYNTAX.search(pattern.this):
                return (
                    "regexp_extract with a group and a pattern with alternation or optional parts is not proven "
                    "(a group that takes no part in the match is NULL on Trino, '' on DuckDB)"
                )
    return None


def _check(tree: exp.Expr, where: str, text: str = "") -> None:
    found = []
    for node in tree.find_all(exp.Func, exp.Bracket, exp.Div, exp.Like, exp.Cast):
        problem = _problems(node)
        if problem is not None:
            line = _line(node, text)
            at = f"{where}, line {line}" if line is not None else where
            found.append(f"{at}: {_athena_call(node)} ({_name(node)}): {problem}")
    if found:
        raise UntranslatableSqlError(
            "; ".join(dict.fromkeys(found))
            + "; rewrite it with proven functions (README, 'Editing the SQL') or add the function and its tests "
            "to job/query/translate.py"
        )


def check_translatable(sql: str, where: str) -> None:
    """Raise UntranslatableSqlError if the statement uses a function no test proves; the message names the
    function, `where` (the file) and the line."""
    _check(_parse(sql, where), where, sql)


def _duckdb(template: str, **parts: exp.Expr) -> exp.Expr:
    """A DuckDB expression from a template whose placeholders (:name) are replaced by the node's arguments."""
    tree = sqlglot.parse_one(template, read="duckdb")
    return tree.transform(lambda n: parts[n.name].copy() if isinstance(n, exp.Placeholder) and n.name in parts else n)


_SUBSTR_START = "CASE WHEN :start < 0 THEN length(:s) + :start + 1 ELSE :start END"
_SUBSTR_EMPTY = "CAST(:start AS BIGINT) = 0 OR :start < -length(:s) OR :start > length(:s)"


def _trino_semantics(node: exp.Expr) -> exp.Expr:
    # DuckDB's approx_quantile is a t-digest whose result changes with thread scheduling; Athena's
    # approx_percentile returns a value of the data. quantile_disc also returns a value of the data, exactly and
    # deterministically, so local runs are reproducible and tests compare against exact figures.
    if isinstance(node, exp.ApproxQuantile):
        return exp.Anonymous(this="quantile_disc", expressions=[node.this, node.args["quantile"]])
    # count_if counts the rows where the condition is true: 0, never NULL, when there is none (DuckDB: NULL)
    if isinstance(node, exp.CountIf):
        return exp.Count(this=exp.If(this=node.this, true=exp.Literal.number(1)))
    # regexp_extract: NULL when the pattern does not match (DuckDB: '')
    if isinstance(node, exp.RegexpExtract):
        group = node.args.get("group") or exp.Literal.number(0)
        return _duckdb("CASE WHEN regexp_matches(:s, :p) THEN regexp_extract(:s, :p, :g) END",
                       s=node.this, p=node.expression, g=group)  # fmt: skip
    # split_part: NULL past the last field, and an index below 1 fails the query (DuckDB: '' for both)
    if isinstance(node, exp.SplitPart):
        return _duckdb(
            "CASE WHEN :s IS NULL OR :d IS NULL OR :n IS NULL THEN NULL "
            "WHEN :n < 1 THEN error('split_part: Index must be greater than zero') "
            "WHEN :n <= len(string_split(:s, :d)) THEN split_part(:s, :d, :n) END",
            s=node.this, d=node.args["delimiter"], n=node.args["part_index"],
        )  # fmt: skip
    # substr: start 0 and a start before the first or after the last character give '', a negative start counts
    # from the end, a length below 1 gives '' (DuckDB counts start 0 and negative lengths differently)
    if isinstance(node, exp.Substring):
        parts = {"s": node.this, "start": node.args["start"]}
        length = node.args.get("length")
        if length is None:
            return _duckdb(f"CASE WHEN :s IS NULL OR :start IS NULL THEN NULL WHEN {_SUBSTR_EMPTY} THEN '' "
                           f"ELSE substring(:s, {_SUBSTR_START}) END", **parts)  # fmt: skip
        return _duckdb(
            f"CASE WHEN :s IS NULL OR :start IS NULL OR :len IS NULL THEN NULL "
            f"WHEN {_SUBSTR_EMPTY} OR :len < 1 THEN '' "
            f"ELSE substring(:s, {_SUBSTR_START}, least(:len, length(:s))) END",
            **parts, len=length,
        )  # fmt: skip
    # from_unixtime(double): Trino keeps milliseconds, rounded half up (Math.round(x * 1000)); DuckDB keeps
    # microseconds, so 41.9999 s is 42 s on Trino and 41.9999 s on DuckDB
    if isinstance(node, exp.UnixToTime):
        return _duckdb("CAST(epoch_ms(CAST(floor(:x * 1000 + 0.5) AS BIGINT)) AS TIMESTAMPTZ)", x=node.this)
    return node


@functools.lru_cache(maxsize=64)
def to_duckdb(sql: str, where: str) -> str:
    """Translate one Athena statement to DuckDB's dialect: parsed once, and once per text (a run's queries of the
    same shape share one translation)."""
    tree = _parse(sql, where)
    _check(tree, where, sql)
    return tree.transform(_trino_semantics).sql(dialect="duckdb")
