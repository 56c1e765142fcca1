"""The query engine interface: run one file of sql/ over a set of log files, return rows as dicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from job.layout import LogFile
from job.sql_files import SqlFile
from job.sql_values import SqlValue

Row = dict[str, Any]


class Engine(Protocol):
    """Runs Athena SQL from sql/; `files` are the log files the query's `"$path"` parameter names."""

    name: str

    def query(self, sql: SqlFile, params: Mapping[str, SqlValue], files: Sequence[LogFile]) -> list[Row]: ...
