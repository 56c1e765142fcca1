"""The metric groups (status, bytes, ttfb, edge, percentiles) through the CLI on DuckDB, against tests/reference.py.

Generated logs (every status class, six edge locations) plus hand-written lines that test the rules: an 18-field
line of 2014 (no time to first byte), '-' and junk in sc-bytes, sc-status and x-edge-location, a status of 600.
Counts and byte sums must be exact; TimeToFirstByte percentiles within 2 % (1 ms floor) of the raw values'.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from job.core.errors import ConfigError
from job.core.metrics import DEFAULT_METRIC_GROUPS, GROUP_METRICS, MetricGroup, parse_metric_groups
from job.demo.sample_logs import HEADER, generate, log_line
from tests.conftest import (
    HOUR,
    as_float_map,
    jsonl_distributions,
    jsonl_sums,
    last_midnight,
    read_jsonl,
    run_cli,
    unique_distribution,
)
from tests.reference import Reference, nearest_rank, scan_tree, weighted_nearest_rank

EDGE_CAP = 4


def odd_lines(when: datetime) -> list[str]:
    """Lines whose later fields break a rule each; every one is a valid request."""
    import random

    rng = random.Random(5)
    lines = []
    for edge, size, status in (("x12-C1", "-", "-"), ("-", "1e3", "600"), ("AB", "12.5", "20"), ("LHR5", "0", "404")):
        fields = log_line(rng, when, "d1.cloudfront.net").split("\t")
        fields[2], fields[3], fields[8] = edge, size, status
        lines.append("\t".join(fields))
    old = log_line(rng, when + timedelta(seconds=7), "d1.cloudfront.net").split("\t")[:18]  # 2014: no time-taken
    lines.append("\t".join(old))
    older = log_line(rng, when + timedelta(seconds=9), "d1.cloudfront.net").split("\t")[:24]  # no time to first byte
    lines.append("\t".join(older))
    return lines


@dataclass(frozen=True)
class Published:
    reference: Reference
    records: list[dict[str, Any]]
    default_records: list[dict[str, Any]]


def dimension_values(records: list[dict[str, Any]], distribution_id: str, name: str) -> set[str]:
    """The values of the second dimension `name` of the Requests datums of one distribution."""
    return {
        r["Dimensions"][1]["Value"]
        for r in records
        if r["MetricName"] == "Requests"
        and r["Dimensions"][0]["Value"] == distribution_id
        and r["Dimensions"][1:2]
        and r["Dimensions"][1]["Name"] == name
    }


def shapes(records: list[dict[str, Any]]) -> set[tuple[str, tuple[str, ...]]]:
    """The metrics' shapes, without the publish receipts (the job's bookkeeping, in every group)."""
    return {(r["MetricName"], tuple(x["Name"] for x in r["Dimensions"])) for r in records
            if r["MetricName"] != "PublishReceipt"}  # fmt: skip


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    base = tmp_path_factory.mktemp("groups")
    root = base / "logs"
    a, b = unique_distribution("groups", "A"), unique_distribution("groups", "B")
    first = last_midnight() - 2 * HOUR
    generate(root, [a, b], first, hours=2, lines_per_hour=700, seed=31)
    folder = root / a / f"{first:%Y/%m/%d/%H}"
    with gzip.open(folder / f"{a}.{first:%Y-%m-%d-%H}.odd.gz", "wt", encoding="utf-8") as out:
        out.write(HEADER + "".join(line + "\n" for line in odd_lines(first + timedelta(minutes=3))))
    every, default = base / "all.jsonl", base / "default.jsonl"
    done = run_cli("run", "--logs", str(root), "--sink", f"jsonl:{every}", "--state", str(base / "s1"),
                   "--metrics", "all", "--edge-locations", str(EDGE_CAP))  # fmt: skip
    assert done.code == 0, done.err
    done = run_cli("run", "--logs", str(root), "--sink", f"jsonl:{default}", "--state", str(base / "s2"))
    assert done.code == 0, done.err
    return Published(scan_tree(root), read_jsonl(every), read_jsonl(default))


def test_requests_by_status_class_equal_the_reference(published: Published) -> None:
    ref = published.reference
    for d in ref.distributions:
        expected = ref.requests_by_status_class(d)
        assert {"0xx", "2xx", "3xx", "4xx", "5xx"} <= set(expected)
        assert dimension_values(published.records, d, "StatusClass") == set(expected)
        for status_class, per_minute in expected.items():
            got = jsonl_sums(published.records, "Requests", [("DistributionId", d), ("StatusClass", status_class)])
            assert got == as_float_map(per_minute), f"{d} {status_class}"
        # the classes add up to the requests
        total = {m: sum(per.get(m, 0) for per in expected.values()) for m in ref.requests(d)}
        assert total == ref.requests(d)
    odd = ref.requests_by_status_class(ref.distributions[0]) | ref.requests_by_status_class(ref.distributions[1])
    assert "Other" in odd  # '-', '600' and '20' of the odd lines


def test_bytes_downloaded_equal_the_sum_of_sc_bytes(published: Published) -> None:
    ref = published.reference
    for d in ref.distributions:
        got = jsonl_sums(published.records, "BytesDownloaded", [("DistributionId", d)])
        assert got == as_float_map(ref.bytes_downloaded(d))
        assert all(r["Unit"] == "Bytes" for r in published.records if r["MetricName"] == "BytesDownloaded")


def test_time_to_first_byte_counts_and_percentiles(published: Published) -> None:
    ref = published.reference
    checked = 0
    for d in ref.distributions:
        histograms = jsonl_distributions(published.records, "TimeToFirstByte", [("DistributionId", d)])
        raw = ref.ttfb_values(d)
        assert {m: sum(h.values()) for m, h in histograms.items()} == as_float_map({m: len(v) for m, v in raw.items()})
        for minute, values in raw.items():
            for q in (0.5, 0.9, 0.99):
                want = nearest_rank(values, q)
                got = weighted_nearest_rank(list(histograms[minute]), list(histograms[minute].values()), q)
                assert abs(got - want) <= max(1.0, 0.02 * want), f"{d} {minute} p{q}: {got} vs {want}"
                checked += 1
    assert checked > 500
    # the lines without the field (18 and 24 fields) are requests, but not in the distribution
    a = next(d for d in ref.distributions if any(c.requests != len(c.ttfb_ms) for (x, _), c in ref.minutes.items()
                                                 if x == d))  # fmt: skip
    assert sum(ref.requests(a).values()) > sum(len(v) for v in ref.ttfb_values(a).values())


def test_edge_locations_are_capped_with_the_rest_as_other(published: Published) -> None:
    ref = published.reference
    for d in ref.distributions:
        expected = ref.requests_by_edge(d, EDGE_CAP)
        assert len(expected) == EDGE_CAP + 1 and "Other" in expected  # six in the data
        for edge, per_minute in expected.items():
            got = jsonl_sums(published.records, "Requests", [("DistributionId", d), ("EdgeLocation", edge)])
            assert got == as_float_map(per_minute), f"{d} {edge}"
        assert dimension_values(published.records, d, "EdgeLocation") == set(expected)


def test_default_groups_leave_out_edge_and_nothing_else(published: Published) -> None:
    assert shapes(published.default_records) == {m for g in DEFAULT_METRIC_GROUPS for m in GROUP_METRICS[g]}
    assert shapes(published.records) == {m for g in MetricGroup for m in GROUP_METRICS[g]}


def test_groups_switch_metrics_off(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    generate(root, [unique_distribution("groups-off", "A")], last_midnight() - HOUR, hours=1, lines_per_hour=50)
    out = tmp_path / "core.jsonl"
    done = run_cli("run", "--logs", str(root), "--sink", f"jsonl:{out}", "--state", str(tmp_path / "s"),
                   "--metrics", "core")  # fmt: skip
    assert done.code == 0, done.err
    assert shapes(read_jsonl(out)) == set(GROUP_METRICS[MetricGroup.CORE])


@pytest.mark.parametrize("value", ["", "core,latency", "Core;status", ","])
def test_bad_metric_groups_are_refused_naming_the_choices(value: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected comma-separated names of core, status, bytes, ttfb, edge"):
        parse_metric_groups(value)
    done = run_cli("run", "--logs", str(tmp_path), "--metrics", value, "--sink", f"jsonl:{tmp_path / 'x.jsonl'}")
    assert done.code == 1 and done.err.startswith("error: --metrics: metric groups"), done.err


def test_edge_location_cap_is_validated(tmp_path: Path) -> None:
    done = run_cli("run", "--logs", str(tmp_path), "--edge-locations", "0", "--sink", f"jsonl:{tmp_path / 'x.jsonl'}")
    assert done.code == 1 and "--edge-locations: edge location cap 0: expected 1 to 200" in done.err, done.err
