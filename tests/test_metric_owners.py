"""One owner per metric: a second query that would publish a metric name another query publishes to the same
destination and namespace is refused before it queries anything (the README's get_only.sql case)."""

from __future__ import annotations

import gzip
import shutil
from datetime import UTC, datetime
from pathlib import Path

from job.core.files import Layout
from job.demo.sample_logs import HEADER, generate
from job.query.sql_files import DEFAULT_SQL_DIR
from tests.conftest import parse_summary, read_jsonl, run_cli
from tests.reference import scan_tree

FIRST_HOUR = datetime(2026, 3, 1, 22, tzinfo=UTC)


def sql_dir_with_get_only(tmp_path: Path) -> Path:
    folder = tmp_path / "sql"
    shutil.copytree(DEFAULT_SQL_DIR, folder)
    text = (folder / "minute_metrics.sql").read_text(encoding="utf-8")
    where = "  WHERE distributionid = :distribution_id\n"
    assert where in text
    (folder / "get_only.sql").write_text(text.replace(where, where + "    AND cs_method = 'GET'\n"), encoding="utf-8")
    return folder


def test_a_copy_of_the_query_is_refused_before_it_queries_and_may_use_another_namespace(tmp_path: Path) -> None:
    root, out, state = tmp_path / "logs", tmp_path / "out.jsonl", tmp_path / "state"
    generate(root, ["EOWNER1"], FIRST_HOUR, hours=1, lines_per_hour=200, seed=5)
    sql = sql_dir_with_get_only(tmp_path)
    base = ["run", "--logs", str(root), "--sink", f"jsonl:{out}", "--state", str(state), "--sql-dir", str(sql)]
    first = run_cli(*base)
    assert first.code == 0, first.err
    published = len(read_jsonl(out))

    refused = run_cli(*base, "--query", "get_only")
    assert refused.code != 0
    assert "get_only.sql would publish " in refused.err, refused.err
    owned = refused.err.split("would publish ")[1].split(" to ")[0].split(", ")
    assert {"Requests", "TimeTaken"} <= set(owned) and "MalformedLines" not in owned, owned
    assert "minute_metrics.sql already publishes" in refused.err and "another namespace" in refused.err
    assert "Traceback" not in refused.err
    assert len(read_jsonl(out)) == published, "nothing published"
    assert "progress" not in refused.err and "file(s)" not in refused.err.split("would publish")[0], "nothing queried"

    elsewhere = run_cli(*base, "--query", "get_only", "--namespace", "CloudFront/GetOnly")
    assert elsewhere.code == 0, elsewhere.err
    assert parse_summary(elsewhere.err)["new"] == 2


def test_a_query_of_other_metrics_runs_beside_and_does_not_count_bad_lines_twice(tmp_path: Path) -> None:
    root, out, state = tmp_path / "logs", tmp_path / "out.jsonl", tmp_path / "state"
    generate(root, ["EOWNER2"], FIRST_HOUR, hours=1, lines_per_hour=200, seed=6)
    folder = root / Layout.PLAIN.partition_prefix("EOWNER2", FIRST_HOUR)
    with gzip.open(folder / "EOWNER2.2026-03-01-22.bad.gz", "wt", encoding="utf-8") as bad:
        bad.write(HEADER + "not a log line\n2026-03-01\tonly two fields\n")
    reference = scan_tree(root)
    assert reference.total_malformed() == 2, "lines the reference reads as malformed"
    base = ["run", "--logs", str(root), "--sink", f"jsonl:{out}", "--state", str(state)]
    assert run_cli(*base).code == 0
    beside = run_cli(*base, "--query", "status_5xx")
    assert beside.code == 0, beside.err
    records = read_jsonl(out)
    names = {r["MetricName"] for r in records}
    assert {"Requests", "Requests5xx"} <= names
    malformed = sum(r["Value"] for r in records if r["MetricName"] == "MalformedLines")
    assert malformed == reference.total_malformed(), "the second query publishes no MalformedLines of its own"
