"""Every kind of bad file through the CLI on DuckDB: the run completes, valid lines are counted exactly, and what
cannot be read is reported and recorded."""

from __future__ import annotations

import gzip
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from job.demo.sample_logs import HEADER, generate
from tests.conftest import age_past_retry, jsonl_sums, read_jsonl, run_cli
from tests.reference import scan_tree

DIST = "E8BADFILES01"
HOUR = datetime(2026, 11, 27, 22, tzinfo=UTC)
PARTITION = f"{DIST}/2026/11/27/22"
VALID = "2026-11-27\t22:30:00\tIAD89\t100\t1.2.3.4\tGET\th\t/\t200\t-\tua\t-\t-\tHit\tid\th\thttps\t10\t0.120"


def good_logs(root: Path) -> None:
    generate(root, [DIST], HOUR, hours=1, lines_per_hour=300)


def run(tmp_path: Path, root: Path) -> tuple[int, str, list[dict[str, Any]]]:
    out = tmp_path / "out.jsonl"
    result = run_cli("run", "--logs", str(root), "--sink", f"jsonl:{out}", "--state", str(tmp_path / "state"))
    return result.code, result.err, read_jsonl(out) if out.exists() else []


def requests(records: list[dict[str, Any]]) -> dict[datetime, float]:
    return jsonl_sums(records, "Requests", (("DistributionId", DIST),))


BAD_FILES: dict[str, bytes] = {
    "not-gzip": (HEADER + VALID + "\n").encode(),
    "truncated": gzip.compress((HEADER + (VALID + "\n") * 2000).encode())[:500],
    "junk": os.urandom(4096),
    "zero-bytes": b"",
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_unreadable_file_is_reported_and_the_rest_counted(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "logs"
    good_logs(root)
    expected = scan_tree(root)
    bad = root / PARTITION / f"{DIST}.2026-11-27-22.{kind}.gz"
    bad.write_bytes(BAD_FILES[kind])
    age_past_retry(bad)
    code, err, records = run(tmp_path, root)
    assert code == 0, err
    assert requests(records) == {m: float(n) for m, n in expected.requests(DIST).items()}
    if kind == "zero-bytes":  # nothing to read is not an error: a file of no lines
        assert "UNREADABLE" not in err
    else:
        assert f"UNREADABLE {bad.resolve()}" in err
        unreadable = jsonl_sums(records, "UnreadableFiles", (("DistributionId", DIST),))
        assert unreadable == {HOUR: 1.0}
    again_code, again_err, again = run(tmp_path, root)
    assert again_code == 0 and "0 new" in again_err and len(again) == len(records)
    status = run_cli("status", "--logs", str(root), "--sink", f"jsonl:{tmp_path / 'out.jsonl'}", "--state",
                     str(tmp_path / "state"))  # fmt: skip
    assert status.code == 0
    assert (f"unreadable: {bad.resolve()}" in status.out) == (kind != "zero-bytes")


@pytest.mark.parametrize(
    "kind, body",
    [
        ("header-only", HEADER),
        ("crlf", (HEADER + (VALID + "\n") * 3).replace("\n", "\r\n")),
        ("huge-line", HEADER + VALID + "\n" + VALID.replace("\tua\t", "\t" + "x" * 3_000_000 + "\t") + "\n" + VALID),
        ("binary-lines", HEADER + VALID + "\n\x00\x01\x02\tgarbage\t\xff\n" + VALID + "\n"),
    ],
)
def test_odd_file_counts_its_valid_lines(tmp_path: Path, kind: str, body: str) -> None:
    root = tmp_path / "logs"
    good_logs(root)
    odd = root / PARTITION / f"{DIST}.2026-11-27-22.{kind}.gz"
    odd.write_bytes(gzip.compress(body.encode("utf-8", "surrogateescape")))
    expected = {m: float(n) for m, n in scan_tree(root).requests(DIST).items()}
    code, err, records = run(tmp_path, root)
    assert code == 0, err
    malformed = jsonl_sums(records, "MalformedLines", (("DistributionId", DIST),))
    if kind == "huge-line":
        # The rule: a line longer than DuckDB's max_line_size (2 MiB) is malformed; CloudFront's own lines are a
        # few KB at most.
        expected[datetime(2026, 11, 27, 22, 30, tzinfo=UTC)] -= 1
        assert malformed == {HOUR: 1.0}
    assert requests(records) == expected
    assert any(r["MetricName"] == "TimeTaken" for r in records)
    if kind == "crlf":
        # CRLF must not cost the last field (time-taken, in these 19-field lines) its value
        minute = datetime(2026, 11, 27, 22, 30, tzinfo=UTC)
        stamp = f"{minute:%Y-%m-%dT%H:%M}"
        time_taken = [r for r in records if r["MetricName"] == "TimeTaken" and r["Timestamp"].startswith(stamp)]
        samples = sum(sum(r.get("Counts", [])) for r in time_taken)
        assert samples == len(scan_tree(root).time_taken_values(DIST).get(minute, []))
