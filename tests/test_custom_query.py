"""A query file of one's own (sql/status_5xx.sql): its metric_* columns are published, it keeps its own ledger,
and a changed query text is refused unless the user accepts it."""

from __future__ import annotations

import gzip
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from job.demo.sample_logs import generate
from job.query.sql_files import DEFAULT_SQL_DIR
from tests.conftest import jsonl_sums, read_jsonl, run_cli

DIST = "E5XXEXAMPLE01"


def reference_5xx(root: Path) -> dict[datetime, float]:
    """Plain Python: valid lines with a 5xx status (field 8), per minute."""
    counts: Counter[datetime] = Counter()
    for path in sorted(root.rglob("*.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines):
                fields = line.rstrip("\n").split("\t")
                if number < 2 or len(fields) < 14 or fields[13] in ("", "-"):
                    continue
                when = datetime.strptime(f"{fields[0]} {fields[1]}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                if len(fields[8]) == 3 and fields[8].startswith("5"):
                    counts[when.replace(second=0)] += 1
    return {minute: float(n) for minute, n in counts.items()}


def test_own_query_publishes_its_metric_and_backfills_on_its_own(tmp_path: Path) -> None:
    root, out, state = tmp_path / "logs", tmp_path / "out.jsonl", tmp_path / "state"
    generate(root, [DIST], datetime(2026, 11, 27, 22, tzinfo=UTC), hours=2, lines_per_hour=800)
    base = ("run", "--logs", str(root), "--sink", f"jsonl:{out}", "--state", str(state))
    assert run_cli(*base).code == 0  # minute_metrics first
    first = len(read_jsonl(out))
    assert jsonl_sums(read_jsonl(out), "Requests5xx", (("DistributionId", DIST),)) == {}

    result = run_cli(*base, "--query", "status_5xx")
    assert result.code == 0, result.err
    assert "0 file(s) already published" in result.err  # its own ledger: every file is new to it
    records = read_jsonl(out)
    expected = reference_5xx(root)
    assert sum(expected.values()) > 0
    published = jsonl_sums(records, "Requests5xx", (("DistributionId", DIST),))
    # every minute with traffic gets a datapoint, an explicit 0 when it had no 5xx
    assert {minute: n for minute, n in published.items() if n} == expected
    assert set(published) == set(jsonl_sums(records, "Requests", (("DistributionId", DIST),)))
    # nothing but its own metric, and the receipts of its requests
    assert {r["MetricName"] for r in records[first:]} == {"Requests5xx", "PublishReceipt"}
    again = run_cli(*base, "--query", "status_5xx")
    assert again.code == 0 and "0 new" in again.err
    assert len(read_jsonl(out)) == len(records)


def test_changed_query_text_is_refused_unless_accepted(tmp_path: Path) -> None:
    root, out, state, sql = tmp_path / "logs", tmp_path / "out.jsonl", tmp_path / "state", tmp_path / "sql"
    shutil.copytree(DEFAULT_SQL_DIR, sql)
    hour = datetime(2026, 11, 27, 22, tzinfo=UTC)
    generate(root, [DIST], hour, hours=1, lines_per_hour=100, seed=1)
    base = ("run", "--logs", str(root), "--sink", f"jsonl:{out}", "--state", str(state), "--sql-dir", str(sql))
    assert run_cli(*base).code == 0

    query = sql / "minute_metrics.sql"
    query.write_text(query.read_text().replace("-- Parameters:", "-- A comment changes nothing.\n-- Parameters:"))
    generate(root, [DIST], hour + timedelta(hours=1), hours=1, lines_per_hour=100, seed=2)
    assert run_cli(*base).code == 0  # comments and layout are not a change of definition

    query.write_text(query.read_text().replace("time_taken_s < 86400", "time_taken_s < 3600"))
    generate(root, [DIST], hour + timedelta(hours=2), hours=1, lines_per_hour=100, seed=3)
    refused = run_cli(*base)
    assert refused.code != 0
    assert "minute_metrics.sql changed since it published" in refused.err and "--accept-changed-sql" in refused.err
    before = len(read_jsonl(out))
    accepted = run_cli(*base, "--accept-changed-sql")
    assert accepted.code == 0, accepted.err
    assert len(read_jsonl(out)) > before
    assert run_cli(*base).code == 0  # the new text is now the published definition
