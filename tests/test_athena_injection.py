"""On the Athena path values never enter the query text: awswrangler sends `?` placeholders and the values as
execution parameters, each one typed literal with its quotes doubled, so an injection attempt stays a string."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import awswrangler as wr
import boto3
import pytest
import sqlglot

from job.adapters.athena_engine import AthenaEngine
from job.core.files import Layout, LogFile
from job.query.sql_files import MINUTE_METRICS, SqlFile
from job.query.sql_values import SqlValue, Varchar, VarcharList

ATTEMPTS = ["E1' OR '1'='1", "x'; DROP TABLE cloudfront_logs; --", "E1' /* comment */ --"]


@pytest.mark.parametrize("attempt", ATTEMPTS)
def test_injection_attempt_reaches_athena_only_as_a_quoted_parameter(moto_endpoint: str, attempt: str) -> None:
    session = boto3.session.Session(region_name="us-east-1")
    s3 = session.client("s3", endpoint_url=moto_endpoint)
    s3.create_bucket(Bucket="injection-results")
    sent: list[dict[str, Any]] = []
    session.events.register(
        "before-parameter-build.athena.StartQueryExecution", lambda params, **_: sent.append(params)
    )

    wr.config.athena_endpoint_url = moto_endpoint
    wr.config.s3_endpoint_url = moto_endpoint
    try:
        engine = AthenaEngine("cloudfront", "primary", "s3://injection-results/q/", session, timeout_seconds=10)
        uri = "s3://logs/E1/2026/11/28/10/a.gz"
        params: dict[str, SqlValue] = {
            "distribution_id": Varchar(attempt),
            "years": VarcharList(("2026",)),
            "months": VarcharList(("11",)),
            "days": VarcharList(("28",)),
            "hours": VarcharList(("10", attempt)),
            "files": VarcharList((uri, attempt)),
        }
        files = [LogFile("E1", datetime(2026, 11, 28, 10, tzinfo=UTC), uri, 1, Layout.PLAIN)]
        # moto runs no SQL and has no result to give here: only what reached Athena matters
        with contextlib.suppress(Exception):
            engine.query(SqlFile.load(MINUTE_METRICS), params, files)
    finally:
        wr.config.reset()
    (call,) = sent
    text, literals = call["QueryString"], call["ExecutionParameters"]
    assert attempt not in text and "DROP" not in text and "OR '1'" not in text
    assert len(sqlglot.parse(text, read="athena")) == 1  # one statement, whatever the values
    quoted = "'" + attempt.replace("'", "''") + "'"
    assert literals == [quoted, "'2026'", "'11'", "'28'", "'10'", quoted, f"'{uri}'", quoted]
    # each parameter is exactly one string literal whose value is the attempt, intact
    parsed = sqlglot.parse_one(f"SELECT {quoted}", read="athena")
    assert isinstance(parsed, sqlglot.exp.Select) and parsed.expressions[0].this == attempt
