"""Load the files in sql/ and render their `:name` parameters as literals or as `?` placeholders."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path

import sqlglot
from sqlglot.errors import TokenError
from sqlglot.tokenizer_core import TokenType

from job.core.errors import SqlTemplateError
from job.query.sql_values import SqlValue, Varchar, VarcharList

DEFAULT_SQL_DIR = Path(__file__).resolve().parents[2] / "sql"  # beside job/, in the repo and in the artifact
TABLE_DDL = "cloudfront_logs_table"
MINUTE_METRICS = "minute_metrics"


def query_parameters(distribution_id: str, hours: Iterable[datetime], uris: Sequence[str]) -> dict[str, SqlValue]:
    """The parameter contract of every metrics query in sql/: one distribution, the partition values of the
    hours its files belong to (per column, for partition projection) and the `"$path"` of each file to read."""
    moments = sorted(set(hours))
    if not moments:
        raise ValueError("a query reads the files of at least one partition hour")

    def values(form: str) -> VarcharList:
        return VarcharList(tuple(sorted({f"{hour:{form}}" for hour in moments})))

    return {
        "distribution_id": Varchar(distribution_id),
        "years": values("%Y"),
        "months": values("%m"),
        "days": values("%d"),
        "hours": values("%H"),
        "files": VarcharList(tuple(uris)),
    }


@dataclass(frozen=True)
class Rendered:
    """Query text with `?` placeholders and the execution parameters that fill them, in order."""

    text: str
    values: tuple[SqlValue, ...]

    def literal_parameters(self) -> list[str]:
        """Athena execution parameters: one typed literal per `?`."""
        return [lit for v in self.values for lit in v.literals()]

    def bind_values(self) -> list[object]:
        """DuckDB bind values: one per `?`."""
        return [b for v in self.values for b in v.bind_values()]


@dataclass(frozen=True)
class SqlFile:
    """One file of sql/: Athena (Trino) SQL with `:name` parameters outside strings and comments."""

    name: str
    path: Path
    text: str

    @classmethod
    def load(cls, name: str, sql_dir: Path = DEFAULT_SQL_DIR) -> SqlFile:
        path = sql_dir / f"{name}.sql"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SqlTemplateError(f"{path}: cannot read the SQL file ({exc.strerror})") from exc
        return cls(name=name, path=path, text=text)

    @cached_property
    def _placeholders(self) -> tuple[tuple[int, int, str], ...]:
        """(start, end, name) of each `:name`, found by sqlglot's tokenizer so strings and comments are skipped."""
        try:
            tokens = sqlglot.Dialect.get_or_raise("athena").tokenize(self.text)
        except TokenError as exc:
            raise SqlTemplateError(f"{self.path}: cannot tokenize ({exc})") from exc
        found = []
        for colon, name in itertools.pairwise(tokens):
            if colon.token_type is TokenType.COLON and name.start == colon.end + 1 and name.text.isidentifier():
                found.append((colon.start, name.end + 1, name.text))
        return tuple(found)

    @cached_property
    def fingerprint(self) -> str:
        """What the query computes: a hash of its tokens, so comments and layout do not count as a change."""
        tokens = sqlglot.Dialect.get_or_raise("athena").tokenize(self.text)
        return hashlib.sha256("\x1f".join(t.text for t in tokens).encode()).hexdigest()[:16]

    @cached_property
    def output_columns(self) -> tuple[str, ...]:
        """The names of the final SELECT's columns, parsed (parameters stand in as string literals)."""
        text = self.text
        for start, end, _ in reversed(self._placeholders):
            text = text[:start] + "'p'" + text[end:]
        try:
            tree = sqlglot.parse_one(text, read="athena")
        except sqlglot.errors.ParseError as exc:
            raise SqlTemplateError(f"{self.path}: cannot parse ({exc})") from exc
        if not isinstance(tree, sqlglot.exp.Query):
            raise SqlTemplateError(f"{self.path}: expected a SELECT query, got {type(tree).__name__}")
        return tuple(tree.named_selects)

    @property
    def parameters(self) -> frozenset[str]:
        return frozenset(name for _, _, name in self._placeholders)

    def _check(self, params: Mapping[str, SqlValue]) -> None:
        unknown = sorted(set(params) - self.parameters)
        if unknown:
            raise SqlTemplateError(f"{self.path}: unknown parameter ':{unknown[0]}' (the file has {self._names()})")
        missing = sorted(self.parameters - set(params))
        if missing:
            raise SqlTemplateError(f"{self.path}: no value for parameter ':{missing[0]}'")

    def _names(self) -> str:
        return ", ".join(f":{n}" for n in sorted(self.parameters)) or "no parameters"

    def _substitute(self, params: Mapping[str, SqlValue], placeholder: bool) -> Rendered:
        self._check(params)
        pieces: list[str] = []
        values: list[SqlValue] = []
        last = 0
        for start, end, name in self._placeholders:
            value = params[name]
            pieces.append(self.text[last:start])
            if placeholder:
                pieces.append(", ".join("?" for _ in value.literals()))
                values.append(value)
            else:
                pieces.append(", ".join(value.literals()))
            last = end
        pieces.append(self.text[last:])
        return Rendered(text="".join(pieces), values=tuple(values))

    def render_literal(self, params: Mapping[str, SqlValue]) -> str:
        """The text with every parameter as a typed literal: ready to paste into the Athena console."""
        return self._substitute(params, placeholder=False).text

    def render_placeholders(self, params: Mapping[str, SqlValue]) -> Rendered:
        """The text with `?` placeholders and the values to bind, for server-side execution parameters."""
        return self._substitute(params, placeholder=True)
