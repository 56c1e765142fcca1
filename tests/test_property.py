"""Property: whatever the sequence of file arrivals (on time, or up to 24 h late into an old partition), clock
moves, runs, backfills, crashes at any call of any step and throttled or failing requests, the published figures
never exceed the reference of the files delivered, never fall below what finished runs published, and after a run
that finishes equal exactly the reference of the files the ledger recorded - which are every file the run's window
held. A final recovery run must leave exactly every delivered line published.

The scenario engine is tests/reliability.py's (`make reliability` plays 1,000 scenarios); here hypothesis draws the
steps, a small number per `make test`. Most examples use the jsonl sink and the local ledger; a few run on the moto
server: CloudWatch over HTTP with botocore's own retries against injected throttling and 5xx answers, with the
local ledger or the S3 ledger (conditional writes, lease). Expected figures come from tests/reference.py.
"""

from __future__ import annotations

import itertools
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from job.core.window import floor_hour
from job.runner import MAX_ATTEMPTS_PER_REQUEST
from tests.reliability import (
    ANSWERS,
    CRASHES,
    JSONL_START,
    RETRIES,
    Advance,
    CloudWatchBackend,
    Deliver,
    Fault,
    JsonlBackend,
    Outcome,
    Run,
    Scenario,
    Step,
    generate_steps,
)

SMALL = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
ON_MOTO = settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
# moto examples: their own stretch of time each, 6 days back (other modules use 9 and 12 days back and the last 2)
MOTO_BASE = floor_hour(datetime.now(UTC)) - timedelta(days=6)
_EXAMPLES = itertools.count()


def play_jsonl(steps: list[Step]) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="cfm-prop-") as folder:
        backend = JsonlBackend(Path(folder), "PROP")
        return Scenario(backend, Path(folder), JSONL_START, strict=True).play(steps)


def play_moto(steps: list[Step], endpoint: str, s3_ledger: bool) -> Outcome:
    number = next(_EXAMPLES)
    with tempfile.TemporaryDirectory(prefix="cfm-prop-") as folder:
        backend = CloudWatchBackend(Path(folder), f"PROP{number}X{int(s3_ledger)}", endpoint, s3_ledger)
        start = MOTO_BASE + timedelta(hours=12 * number, minutes=30)
        return Scenario(backend, Path(folder), start, strict=True).play(steps)


def assert_exact(outcome: Outcome) -> None:
    assert (outcome.lost, outcome.twice, outcome.keys_differing, outcome.violations) == (0, 0, 0, [])


@SMALL
@given(st.data())
def test_random_steps_publish_every_line_exactly_once_on_jsonl(data: st.DataObject) -> None:
    steps = generate_steps(lambda low, high: data.draw(st.integers(low, high)), "jsonl", max_steps=12)
    note(f"steps: {steps}")
    assert_exact(play_jsonl(steps))


@ON_MOTO
@given(st.data())
def test_random_steps_publish_every_line_exactly_once_on_cloudwatch(moto_endpoint: str, data: st.DataObject) -> None:
    s3_ledger = data.draw(st.booleans(), label="S3 ledger")
    backend = "cloudwatch+s3" if s3_ledger else "cloudwatch+local"
    steps = generate_steps(lambda low, high: data.draw(st.integers(low, high)), backend, max_steps=8)
    note(f"steps: {steps}")
    assert_exact(play_moto(steps, moto_endpoint, s3_ledger))


def every_kind_scenario(fault: Fault, late: int = 20) -> list[Step]:
    """Files for three distributions, a faulty run, a file `late` hours late, a scheduled run and a backfill."""
    return [
        Deliver(0, 1, 30, 1), Deliver(1, 0, 25, 2), Deliver(2, min(5, late), 20, 3), Deliver(0, 0, 35, 4),
        Run(fault), Deliver(1, late, 15, 5), Advance(2), Run(), Run(None, (late + 4, 0)),
    ]  # fmt: skip


@pytest.mark.parametrize("kind", [k for k in CRASHES if CRASHES[k][0] != "jsonl"] + ["crash in jsonl write"])
@pytest.mark.parametrize("at", [1, 2])
def test_every_crash_kind_fires_and_ends_exact_on_jsonl(kind: str, at: int) -> None:
    """The random scenarios may miss a kind: here each one fires for sure (at its first and second call)."""
    outcome = play_jsonl(every_kind_scenario(Fault(kind, at)))
    assert outcome.faults[kind] == 1 and outcome.failed_runs == 1
    assert_exact(outcome)


@pytest.mark.parametrize("kind", ANSWERS)
@pytest.mark.parametrize("count", [2, RETRIES + 1])
def test_throttling_and_5xx_within_and_beyond_the_retries_end_exact_on_cloudwatch(
    moto_endpoint: str, kind: str, count: int
) -> None:
    scenario = every_kind_scenario(Fault(kind, 2, count), late=3)  # moto: a short stretch of time, fast reads
    outcome = play_moto(scenario, moto_endpoint, s3_ledger=count > RETRIES)
    beyond = count > RETRIES
    assert outcome.faults[f"{kind} ({'beyond the retries' if beyond else 'retried'})"] == 1
    # a 5xx may hide an accepted request: never retried blindly; the run reads its receipt back and sends it again
    # only if it did not arrive, up to MAX_ATTEMPTS_PER_REQUEST attempts, then stops and the next run resolves it
    assert outcome.failed_runs == int(beyond or (kind.startswith("5xx") and count >= MAX_ATTEMPTS_PER_REQUEST))
    assert_exact(outcome)


def test_the_checks_catch_a_line_published_twice() -> None:
    """The oracle itself: a scenario whose sink writes one request twice must be reported, not pass."""
    with tempfile.TemporaryDirectory(prefix="cfm-prop-") as folder:
        backend = JsonlBackend(Path(folder), "PROP")
        scenario = Scenario(backend, Path(folder), JSONL_START, strict=False)
        real_sink = backend.sink

        def doubling_sink(fault: Fault | None) -> tuple[object, object]:
            sink, injected = real_sink(fault)

            class Twice:
                key, checks_timestamp_age, settle = sink.key, sink.checks_timestamp_age, sink.settle
                put_calls = 0

                def put(self, namespace: str, datums: object) -> None:
                    sink.put(namespace, datums)  # type: ignore[arg-type]
                    Twice.put_calls += 1
                    if Twice.put_calls == 1:
                        sink.put(namespace, datums)  # type: ignore[arg-type]

                def maximum(self, namespace: str, key: Any) -> Any:
                    return sink.maximum(namespace, key)

                def receipt_ledgers(self, namespace: str) -> Any:
                    return sink.receipt_ledgers(namespace)

            return Twice(), injected

        backend.sink = doubling_sink  # type: ignore[assignment,method-assign]
        outcome = scenario.play([Deliver(0, 0, 30, 1), Run()])
    assert outcome.twice > 0 and outcome.lost == 0 and outcome.violations
