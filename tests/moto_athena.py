"""The answer moto's Athena gives a query of sql/minute_metrics.sql: rows, as Athena types them, in the payload
moto's /moto-api/static/athena/query-results takes (shared by the handler's moto tests and bench/concurrency.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

# the columns of sql/minute_metrics.sql's result, as Athena types them
COLUMN_TYPES = {
    "minute": "timestamp",
    "grouping_id": "integer",
    "result_type": "varchar",
    "time_taken_bucket_ms": "bigint",
    "file": "varchar",
    "requests": "bigint",
    "valid_requests": "bigint",
    "time_taken_p50_ms": "bigint",
    "time_taken_p90_ms": "bigint",
    "time_taken_p99_ms": "bigint",
    "status_class": "varchar",
    "ttfb_bucket_ms": "bigint",
    "edge_location": "varchar",
    "bytes_downloaded": "bigint",
}


def _cell(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, datetime):
        return {"VarCharValue": value.strftime("%Y-%m-%d %H:%M:%S.000")}
    return {"VarCharValue": str(value)}


def results_body(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """The JSON body that queues these rows as the next query's result in moto's Athena."""
    header = {"Data": [{"VarCharValue": name} for name in COLUMN_TYPES]}
    data = [{"Data": [_cell(row[name]) for name in COLUMN_TYPES]} for row in rows]
    columns = [{"Name": n, "Label": n, "Type": t, "Nullable": "NULLABLE"} for n, t in COLUMN_TYPES.items()]
    return json.dumps({"results": [{"rows": [header, *data], "column_info": columns}]}).encode()
