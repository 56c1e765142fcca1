"""A Trino server for the session: started here (downloaded once into the user's cache) and always stopped.

`CFMETRICS_TRINO_URL` points the tests at a server already running instead (`make trino-up` prints one)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.trino_server import trino_server


@pytest.fixture(scope="session")
def trino_url() -> Iterator[str]:
    given = os.environ.get("CFMETRICS_TRINO_URL")
    if given:
        yield given
        return
    with trino_server() as server:
        yield server.url


@pytest.fixture(scope="session")
def trino_cursor_factory(trino_url: str) -> Any:
    import trino

    host, port = trino_url.removeprefix("http://").rsplit(":", 1)

    def cursor(schema: str | None = None) -> Any:
        connection = trino.dbapi.connect(  # type: ignore[no-untyped-call]
            host=host, port=int(port), user="cfmetrics-tests", catalog="hive",
                                         schema=schema, legacy_prepared_statements=True)  # fmt: skip
        return connection.cursor()

    return cursor
