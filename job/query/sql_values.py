"""Typed SQL values: each renders as an Athena literal (console, execution parameter) or a DuckDB bind value."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


def _quote(text: str) -> str:
    # Standard SQL string literal: the only escape is a doubled quote. Values are validated before they get here;
    # this keeps even an unvalidated string from ending the literal.
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Varchar:
    """A string value."""

    value: str

    def literals(self) -> tuple[str, ...]:
        return (_quote(self.value),)

    def bind_values(self) -> tuple[object, ...]:
        return (self.value,)


@dataclass(frozen=True)
class Timestamp:
    """A timestamp without time zone, in UTC by this project's convention."""

    value: datetime

    def literals(self) -> tuple[str, ...]:
        return ("TIMESTAMP " + _quote(self.value.strftime("%Y-%m-%d %H:%M:%S")),)

    def bind_values(self) -> tuple[object, ...]:
        return (self.value.replace(tzinfo=None),)


@dataclass(frozen=True)
class VarcharList:
    """A non-empty list of strings, for `x IN (:name)`: it expands to one placeholder per element."""

    values: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("a VarcharList needs at least one value: SQL has no empty IN list")

    def literals(self) -> tuple[str, ...]:
        return tuple(_quote(v) for v in self.values)

    def bind_values(self) -> tuple[object, ...]:
        return tuple(self.values)


SqlValue = Varchar | Timestamp | VarcharList
