"""`cfmetrics cost`: the bill's lines against arithmetic done here by hand from docs/COST.md's formulas."""

from __future__ import annotations

import pytest

from job.core.cost import CostInput, monthly_bill
from job.core.errors import ConfigError
from job.core.metrics import MetricGroup
from tests.conftest import run_cli

MB = 10 * 1024 * 1024  # Athena's 10 MB minimum per query


def bill(given: CostInput) -> dict[str, float]:
    return {line.item: line.usd for line in monthly_bill(given)}


def test_worked_example_line_by_line() -> None:
    lines = bill(CostInput(requests_per_day=11_050_000, distributions=3))
    # metrics: core 11, status 7, bytes 1, ttfb 1, percentiles 3 per distribution; 6 health + 2 per distribution
    assert lines["CloudWatch metrics: core"] == pytest.approx(3 * 11 * 0.30)
    assert lines["CloudWatch metrics: status"] == pytest.approx(3 * 7 * 0.30)
    assert lines["CloudWatch metrics: percentiles"] == pytest.approx(3 * 3 * 0.30)
    assert lines["CloudWatch metrics: health and bad input"] == pytest.approx((6 + 6) * 0.30)
    assert "CloudWatch metrics: edge" not in lines
    # 288 runs a day; a batch of 60 minutes x 23 datums = 1,380 datums: 2 requests per distribution, 1 for health
    assert lines["CloudWatch PutMetricData"] == pytest.approx(30 * 288 * (3 * 2 + 1) / 1000 * 0.01)
    # each distribution: 3.68 M requests x 80 B / 288 = 1.02 MB per query, billed 10 MB
    assert lines["Athena (10 MB minimum per query)"] == pytest.approx(30 * 288 * 3 * MB / 1e12 * 5)
    # each distribution: 36 keys on a recent run, 12 x 27 = 324 on the 24 full listings: one LIST each; one per run
    # for the distribution folders, the ledger's 4 PUTs (before the listing schedule: 3 x 27 LISTs a run)
    assert lines["S3 LIST (listing) and PUT (ledger)"] == pytest.approx(30 * 288 * (3 * 1 + 1 + 4) / 1000 * 0.005)
    assert lines["Lambda (arm64) GB-seconds and requests"] == pytest.approx(
        30 * 288 * 20 * 1 * 0.0000133334 + 30 * 288 / 1e6 * 0.20
    )
    assert lines["CloudWatch dashboard"] == 3.0 and lines["CloudWatch alarms (the job's)"] == pytest.approx(0.4)


def test_a_busy_distribution_pays_for_its_bytes_not_the_minimum() -> None:
    lines = bill(CostInput(requests_per_day=200_000_000, groups=frozenset({MetricGroup.CORE}), dashboard=False))
    per_query = 200_000_000 * 80 / 288
    assert per_query > MB
    assert lines["Athena (10 MB minimum per query)"] == pytest.approx(30 * 288 * per_query / 1e12 * 5)
    assert "CloudWatch dashboard" not in lines


def test_edge_group_costs_its_cap_plus_other_and_longer_schedules_cost_less() -> None:
    edge = bill(CostInput(1_000_000, groups=frozenset({MetricGroup.CORE, MetricGroup.EDGE}), edge_location_cap=30))
    assert edge["CloudWatch metrics: edge"] == pytest.approx(31 * 0.30)
    slow = bill(CostInput(1_000_000, schedule_minutes=15))
    fast = bill(CostInput(1_000_000, schedule_minutes=5))
    assert slow["Athena (10 MB minimum per query)"] == pytest.approx(fast["Athena (10 MB minimum per query)"] / 3)
    assert sum(slow.values()) < sum(fast.values())


@pytest.mark.parametrize(("args", "message"), [
    (["--requests-per-day", "-1"], "--requests-per-day: requests per day -1: expected 0 or more"),
    (["--requests-per-day", "5", "--distributions", "0"], "--distributions: distributions 0: expected 1 or more"),
    (["--requests-per-day", "5", "--metrics", "cpu"], "--metrics: metric groups 'cpu': expected"),
    (["--requests-per-day", "5", "--schedule-minutes", "0"], "--schedule-minutes: schedule 0 minutes"),
])  # fmt: skip
def test_bad_values_are_refused_naming_the_flag(args: list[str], message: str) -> None:
    done = run_cli("cost", *args)
    assert done.code == 1 and message in done.err, done.err


def test_the_command_prints_lines_prices_their_date_and_a_total() -> None:
    done = run_cli("cost", "--requests-per-day", "11050000", "--distributions", "3")
    assert done.code == 0, done.err
    assert "us-east-1 list prices as of 2026-11-28" in done.out
    total = next(line for line in done.out.splitlines() if line.startswith("total"))
    expected = sum(bill(CostInput(requests_per_day=11_050_000, distributions=3)).values())
    assert float(total.split()[-1]) == pytest.approx(expected, abs=0.01)
    for item in ("CloudWatch metrics: core", "PutMetricData", "Athena", "S3 LIST", "S3 GET", "Lambda"):
        assert item in done.out


def test_no_metric_group_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        CostInput(5, groups=frozenset())


def test_the_listing_pays_a_request_per_1000_keys_on_full_listings_only() -> None:
    from job.core.cost import listing_requests_per_day

    # 330 h of look-back: 12 x 331 = 3,972 keys, 4 requests on each of the 24 full listings, 1 on the 264 others
    given = CostInput(requests_per_day=1_000_000, distributions=2, lookback_hours=330)
    assert listing_requests_per_day(given) == 2 * (24 * 4 + 264 * 1) + 288
    hourly = CostInput(requests_per_day=1_000_000, distributions=2, schedule_minutes=120)  # every run is full
    assert listing_requests_per_day(hourly) == 2 * 12 * 1 + 12
