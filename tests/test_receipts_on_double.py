"""Exactly once through a CloudWatch that behaves like CloudWatch (tests/cloudwatch_double.py in front of moto).

The double hides datapoints older than 3 hours from GetMetricData until the test releases them (PutMetricData's
documented delay for late data), shows recent ones after a short delay, and loses requests and answers at random.
On-time files, files hours and a day late, and a backfill are published by scheduled runs through it; every run
resolves a lost answer by the request's receipt within itself. After the held datapoints are released, every line
is counted exactly once (expected figures from tests/reference.py, a plain reading of the .gz files).
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from job.adapters.duckdb_engine import DuckDBEngine
from job.adapters.local_store import LocalLogStore
from job.adapters.sinks import CloudWatchSink
from job.adapters.sqlite_ledger import LocalLedger
from job.core.batch import Target
from job.core.errors import InFlightUnknown, PublishError
from job.core.receipts import RECEIPT_METRIC
from job.core.window import HourWindow
from job.demo.sample_logs import generate
from job.query.sql_files import SqlFile
from job.runner import Job, RunOptions
from tests.cloudwatch_double import CloudWatchDouble, cloudwatch_double, moto_server
from tests.reference import Reference, scan_tree
from tests.tight import tight_requests

SETTLE = timedelta(seconds=2)  # the receipts' own visibility: the double shows recent data after 0.5 s
MAX_DATUMS = 40  # small requests: many of them, so many faults
QUERY = "minute_metrics"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server(python=sys.executable) as url:
        yield url


def cloudwatch(url: str) -> Any:
    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=2, read_timeout=10)
    return boto3.client(
        "cloudwatch", endpoint_url=url, region_name="us-east-1", config=config,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip


def job_for(root: Path, state: Path, sink: CloudWatchSink, namespace: str, window: HourWindow | None) -> Job:
    options = RunOptions(namespace=namespace, window=window)
    return Job(LocalLogStore(root), DuckDBEngine(threads=1), LocalLedger(state), sink, SqlFile.load(QUERY), options)


def published(double: CloudWatchDouble, namespace: str, reference: Reference) -> dict[tuple[str, datetime], float]:
    found: dict[tuple[str, datetime], float] = {}
    for d in reference.distributions:
        for minute, value in double.minute_sums(namespace, "Requests", {"DistributionId": d}).items():
            found[(d, minute)] = value
    return found


def expected(reference: Reference) -> dict[tuple[str, datetime], float]:
    return {(d, m): float(n) for d in reference.distributions for m, n in reference.requests(d).items()}


@pytest.mark.parametrize("seed", [1, 2])
def test_late_files_and_a_backfill_with_lost_requests_and_answers_end_exact(
    moto_url: str, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    namespace = f"Test/Receipts{seed}x{rng.randrange(10**6)}"
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    root, state = tmp_path / "logs", tmp_path / "state"
    ids = [f"ERCPT{seed}A", f"ERCPT{seed}B"]
    with tight_requests(MAX_DATUMS), cloudwatch_double(
        moto_url, visible_after=timedelta(seconds=0.5), seed=seed,
        fault_rates={"request_lost": 0.12, "answer_lost": 0.12, "connection_dropped": 0.04},
    ) as double:  # fmt: skip
        sink = CloudWatchSink(cloudwatch(double.url), key=f"cloudwatch@{double.url}", settle=SETTLE)
        arrivals = [
            (now - timedelta(hours=1), "on time"),
            (now - timedelta(hours=5), "hours late"),
            (now - timedelta(hours=25), "a day late"),
        ]
        failures: list[str] = []
        longest = 0.0
        for step, (hour, _) in enumerate(arrivals):
            generate(root / f"a{step}", ids, hour, hours=1, lines_per_hour=120, seed=seed * 10 + step)
            for path in (root / f"a{step}").rglob("*.gz"):
                target = root / "bucket" / path.relative_to(root / f"a{step}")
                target.parent.mkdir(parents=True, exist_ok=True)
                path.rename(target)
            for window in (HourWindow(now - timedelta(hours=26), now), None):  # the scheduled look-back, a backfill
                for _ in range(6):  # a run that stops on its fault is followed by the next scheduled one
                    started = time.monotonic()
                    try:
                        report = job_for(root / "bucket", state, sink, namespace, window).run(datetime.now(UTC))
                    except InFlightUnknown as exc:
                        pytest.fail(f"a run could not decide: {exc}")
                    except PublishError as exc:
                        failures.append(str(exc))
                        continue
                    finally:
                        longest = max(longest, time.monotonic() - started)
                    if not report.files_left:
                        break
        reference = scan_tree(root / "bucket")
        pending = LocalLedger(state).pending(Target(QUERY, sink.key, namespace))
        assert pending == [], "every batch finished"
        assert double.stats.total_faults >= 8, "the faults happened"
        assert double.stats.faults.get("answer_lost", 0) >= 2, (
            "some answers were lost after CloudWatch took the request"
        )
        held = double.release_held()
        assert held > 0, "late datapoints were held back while the runs decided"
        assert published(double, namespace, reference) == expected(reference)
        # no run waited longer than a receipt's settle time per attempt, plus the queries
        assert longest < 60, longest
        receipts = double.series()
        assert sum(1 for ns, metric, _ in receipts if ns == namespace and metric == RECEIPT_METRIC) == 1
