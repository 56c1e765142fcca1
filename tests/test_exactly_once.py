"""Exactly once through crashes: the library API (Job, DuckDBEngine, LocalLedger) with a crash at every step.

A crash is an exception raised inside a step; every ledger step is its own committed SQLite transaction, so the
state it leaves is the state a killed process leaves. The resumed run uses the real sink and a fresh Job.

What the job guarantees, and these tests check:
- a crash before a request reaches the sink, or in any ledger step: after the resume every datum was published
  exactly once (the multiset of published datums equals an uninterrupted run's, and the reference's counts);
- a crash after the sink accepted a request but before the ledger marked it sent: the journal leaves that one
  request "in flight". Every request carries a receipt (job/core/receipts.py) stamped with the minute it was sent;
  on resume the job reads the receipt back: seen means it arrived (not sent again), not seen once the sink's
  settle time has passed means it was lost (sent). So it, too, is published exactly once; a run that finds the
  request younger than the settle time waits for it within the run;
- when the receipts say neither (a larger receipt in that minute: another writer with this ledger's id), the run
  stops with InFlightUnknown, sends nothing and keeps the batch pending: never a guess;
- two runs started at once on one ledger publish every file once.
"""

from __future__ import annotations

import json
import multiprocessing
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from job.adapters.duckdb_engine import DuckDBEngine
from job.adapters.local_store import LocalLogStore
from job.adapters.sinks import CloudWatchSink, JsonlSink
from job.adapters.sqlite_ledger import LocalLedger
from job.core.batch import PendingBatch, Target
from job.core.errors import InFlightUnknown
from job.core.files import Layout
from job.core.metrics import Datum, Unit
from job.core.receipts import RECEIPT_METRIC, receipt_datum
from job.demo.sample_logs import generate
from job.ports import Sink
from job.query.sql_files import MINUTE_METRICS, SqlFile
from job.runner import Job, RunOptions, RunReport
from tests.conftest import (
    HOUR,
    MetricReader,
    as_float_map,
    assert_cloudwatch_matches,
    cloudwatch_client,
    jsonl_distributions,
    jsonl_sums,
    last_midnight,
    other_mapping,
    read_jsonl,
    unique_distribution,
)
from tests.reference import Reference, scan_tree
from tests.tight import tight_requests

NAMESPACE = "Test/ExactlyOnce"
FIRST_HOUR = datetime(2026, 3, 1, 22, tzinfo=UTC)
# Small requests, so that one batch (a distribution's files) takes several PutMetricData requests.
MAX_DATUMS = 100


class Crash(Exception):
    """Stands for the process dying at this point."""


class CrashingSink:
    """Delivers `succeed` requests to the real sink, then crashes before the next one reaches it."""

    def __init__(self, inner: Sink, succeed: int) -> None:
        self.inner, self.succeed, self.delivered = inner, succeed, 0
        self.key, self.checks_timestamp_age, self.settle = inner.key, inner.checks_timestamp_age, inner.settle

    def put(self, namespace: str, datums: Sequence[Datum]) -> None:
        if self.delivered >= self.succeed:
            raise Crash(f"before request {self.delivered + 1} was sent")
        self.inner.put(namespace, datums)
        self.delivered += 1

    def maximum(self, namespace: str, key: Any) -> Any:
        return self.inner.maximum(namespace, key)

    def receipt_ledgers(self, namespace: str) -> Any:
        return self.inner.receipt_ledgers(namespace)


class RecordingSink(CrashingSink):
    """The real sink, remembering each request it took."""

    def __init__(self, inner: Sink) -> None:
        super().__init__(inner, succeed=10**9)
        self.requests: list[tuple[Datum, ...]] = []

    def put(self, namespace: str, datums: Sequence[Datum]) -> None:
        super().put(namespace, datums)
        self.requests.append(without_receipts(datums))


def without_receipts(datums: Sequence[Datum]) -> tuple[Datum, ...]:
    """A request's datums as the journal holds them: the receipt is added per attempt, at send time."""
    return tuple(d for d in datums if d.metric != RECEIPT_METRIC)


class FailingLedger(LocalLedger):
    """A LocalLedger whose `step` crashes on its `at`-th call (0-based), before the step is written."""

    def __init__(self, folder: Path, step: str, at: int) -> None:
        super().__init__(folder)
        self.step, self.at, self.calls = step, at, 0

    def _maybe_crash(self, step: str) -> None:
        if step == self.step:
            self.calls += 1
            if self.calls - 1 == self.at:
                raise Crash(f"in {step} call {self.at}")

    def begin(self, *args: Any, **kwargs: Any) -> None:
        self._maybe_crash("begin")
        super().begin(*args, **kwargs)

    def mark_in_flight(self, *args: Any, **kwargs: Any) -> None:
        self._maybe_crash("mark_in_flight")
        super().mark_in_flight(*args, **kwargs)

    def mark_sent(self, *args: Any, **kwargs: Any) -> None:
        self._maybe_crash("mark_sent")
        super().mark_sent(*args, **kwargs)

    def commit(self, *args: Any, **kwargs: Any) -> None:
        self._maybe_crash("commit")
        super().commit(*args, **kwargs)


_ENGINES: list[DuckDBEngine] = []


def engine() -> DuckDBEngine:
    """One DuckDB engine per process: an engine keeps no state between queries, and building one costs time."""
    if not _ENGINES:
        _ENGINES.append(DuckDBEngine(threads=1))
    return _ENGINES[0]


def make_job(
    root: Path,
    ledger: LocalLedger,
    sink: Sink,
    namespace: str = NAMESPACE,
    log: Callable[[str], None] = lambda message: None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] = lambda seconds: None,
) -> Job:
    options = RunOptions(namespace=namespace, window=None)
    query = SqlFile.load(MINUTE_METRICS)
    return Job(LocalLogStore(root), engine(), ledger, sink, query, options, log=log, clock=clock, sleep=sleep)


def datum_lines(path: Path) -> Counter[str]:
    """The jsonl sink's datums as a multiset of canonical JSON texts, without the publish receipts (one per
    attempt, stamped with the time it was sent: checked on their own)."""
    return Counter(
        json.dumps(record, sort_keys=True) for record in read_jsonl(path) if record["MetricName"] != RECEIPT_METRIC
    )


def as_lines(datums: Sequence[Datum], namespace: str = NAMESPACE) -> Counter[str]:
    return Counter(json.dumps({"Namespace": namespace, **d.to_json()}, sort_keys=True) for d in datums)


def assert_jsonl_equals_reference(path: Path, reference: Reference) -> None:
    records = read_jsonl(path)
    mapping = other_mapping(reference)
    for d in reference.distributions:
        base = [("DistributionId", d)]
        assert jsonl_sums(records, "Requests", base) == as_float_map(reference.requests(d))
        for result_type, per_minute in reference.requests_by_type(d, mapping).items():
            assert jsonl_sums(records, "Requests", [*base, ("ResultType", result_type)]) == as_float_map(per_minute)
        histograms = jsonl_distributions(records, "TimeTaken", base)
        assert {m: sum(h.values()) for m, h in histograms.items()} == as_float_map(reference.time_taken_counts(d))


@dataclass(frozen=True)
class Clean:
    """The logs, the reference and an uninterrupted run's requests (the run every crash must end up equal to)."""

    root: Path
    reference: Reference
    requests: tuple[tuple[Datum, ...], ...]
    batches: int
    lines: Counter[str]


@pytest.fixture(scope="module", autouse=True)
def small_requests() -> Iterator[None]:
    with tight_requests(MAX_DATUMS):
        yield


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("exactly-once") / "logs"
    generate(root, ["EXONCE1", "EXONCE2"], FIRST_HOUR, hours=2, lines_per_hour=40, seed=61)
    generate(root, ["EXONCE3"], FIRST_HOUR, hours=1, lines_per_hour=60, seed=62, layout=Layout.HIVE)
    return root


@pytest.fixture(scope="module")
def clean(logs: Path, tmp_path_factory: pytest.TempPathFactory) -> Clean:
    tmp_path = tmp_path_factory.mktemp("clean")
    out = tmp_path / "clean.jsonl"
    sink = RecordingSink(JsonlSink(out))
    report = make_job(logs, LocalLedger(tmp_path / "clean-state"), sink).run(datetime.now(UTC))
    assert report.batches == 3 and report.requests == len(sink.requests) >= 8
    assert all(len(r) <= MAX_DATUMS for r in sink.requests)
    reference = scan_tree(logs)
    assert_jsonl_equals_reference(out, reference)
    return Clean(logs, reference, tuple(sink.requests), report.batches, datum_lines(out))


def resume(clean: Clean, state: Path, out: Path, log: Callable[[str], None] = lambda message: None) -> RunReport:
    """The run after the crash, then one more that must find nothing to do."""
    report = make_job(clean.root, LocalLedger(state), JsonlSink(out), log=log).run(datetime.now(UTC))
    again = make_job(clean.root, LocalLedger(state), JsonlSink(out)).run(datetime.now(UTC))
    assert (again.files_new, again.requests, again.resumed_batches) == (0, 0, 0)
    return report


def pending_of(state: Path, sink_key: str, namespace: str = NAMESPACE) -> list[PendingBatch]:
    return LocalLedger(state).pending(Target(MINUTE_METRICS, sink_key, namespace))


def test_crash_before_each_request_then_resume_publishes_everything_once(clean: Clean, tmp_path: Path) -> None:
    for k in range(len(clean.requests)):
        state, out = tmp_path / f"state-{k}", tmp_path / f"out-{k}.jsonl"
        with pytest.raises(Crash):
            make_job(clean.root, LocalLedger(state), CrashingSink(JsonlSink(out), k)).run(datetime.now(UTC))
        assert datum_lines(out) == sum((as_lines(r) for r in clean.requests[:k]), Counter()), f"k={k}"
        (pending,) = pending_of(state, JsonlSink(out).key)
        assert pending.in_flight == pending.sent, f"k={k}: the request that crashed is in flight"

        messages: list[str] = []
        report = resume(clean, state, out, messages.append)
        assert report.resumed_batches == 1, f"k={k}"
        assert any(f"request {pending.sent + 1} had not arrived" in m for m in messages), f"k={k}: {messages}"
        assert datum_lines(out) == clean.lines, f"k={k}: not every datum exactly once"
        assert_jsonl_equals_reference(out, clean.reference)


@pytest.mark.parametrize(
    ("step", "at"),
    [("begin", 0), ("begin", 2), ("mark_in_flight", 0), ("mark_in_flight", 3), ("mark_in_flight", -1),
     ("commit", 0), ("commit", 2)],
)  # fmt: skip
def test_crash_in_a_ledger_step_then_resume_publishes_everything_once(
    clean: Clean, tmp_path: Path, step: str, at: int
) -> None:
    """begin: nothing of the batch journaled; mark_in_flight: the request not sent; commit: all sent."""
    state, out = tmp_path / "state", tmp_path / "out.jsonl"
    at = at % len(clean.requests)
    with pytest.raises(Crash):
        make_job(clean.root, FailingLedger(state, step, at), JsonlSink(out)).run(datetime.now(UTC))
    pending = pending_of(state, JsonlSink(out).key)
    assert [p.in_flight for p in pending] == ([] if step == "begin" else [None])
    report = resume(clean, state, out)
    assert report.resumed_batches == (0 if step == "begin" else 1)
    assert datum_lines(out) == clean.lines
    assert_jsonl_equals_reference(out, clean.reference)


@pytest.mark.parametrize("at", [0, 3, -1])
def test_crash_after_the_sink_accepted_but_before_mark_sent_is_not_sent_again(
    clean: Clean, tmp_path: Path, at: int
) -> None:
    state, out = tmp_path / "state", tmp_path / "out.jsonl"
    at = at % len(clean.requests)
    with pytest.raises(Crash):
        make_job(clean.root, FailingLedger(state, "mark_sent", at), JsonlSink(out)).run(datetime.now(UTC))
    (pending,) = pending_of(state, JsonlSink(out).key)
    assert pending.in_flight is not None and pending.in_flight == pending.sent
    assert pending.batch.requests[pending.in_flight] == clean.requests[at]  # the request the sink took
    assert datum_lines(out) == sum((as_lines(r) for r in clean.requests[: at + 1]), Counter())

    messages: list[str] = []
    report = resume(clean, state, out, messages.append)
    assert report.resumed_batches == 1
    assert any(f"request {pending.in_flight + 1} had arrived" in m for m in messages), messages
    assert datum_lines(out) == clean.lines  # read back, found there, not sent twice
    assert_jsonl_equals_reference(out, clean.reference)


def test_in_flight_request_whose_receipts_say_neither_stops_the_run(clean: Clean, tmp_path: Path) -> None:
    """A larger receipt than the attempt's in its minute (another writer with this ledger's id): the job refuses to
    guess and sends nothing."""
    state, out = tmp_path / "state", tmp_path / "out.jsonl"
    with pytest.raises(Crash):
        make_job(clean.root, FailingLedger(state, "mark_sent", 1), JsonlSink(out)).run(datetime.now(UTC))
    (pending,) = pending_of(state, JsonlSink(out).key)
    assert pending.in_flight is not None and pending.in_flight_at is not None
    receipt = receipt_datum(LocalLedger(state).identity(), MINUTE_METRICS, pending.in_flight_at)
    intruder = replace(receipt, value=60_001.0)  # larger than any receipt of a minute
    before = out.read_text(encoding="utf-8")
    with out.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"Namespace": NAMESPACE, **intruder.to_json()}) + "\n")

    with pytest.raises(InFlightUnknown, match="another run with this ledger's id"):
        make_job(clean.root, LocalLedger(state), JsonlSink(out)).run(datetime.now(UTC))
    assert out.read_text(encoding="utf-8") == before + json.dumps({"Namespace": NAMESPACE, **intruder.to_json()}) + "\n"
    assert [(p.sent, p.in_flight) for p in pending_of(state, JsonlSink(out).key)] == [(pending.sent, pending.in_flight)]

    out.write_text(before, encoding="utf-8")  # the other writer's line removed: the run can decide again
    resume(clean, state, out)
    assert datum_lines(out) == clean.lines


@pytest.mark.parametrize("crash", ["before-put", "after-put"])
def test_crash_on_cloudwatch_then_resume_matches_reference(
    moto_endpoint: str, tmp_path: Path, namespace: str, crash: str
) -> None:
    root = tmp_path / "logs"
    ids = [unique_distribution(namespace, x) for x in "ab"]
    first = last_midnight() - 9 * HOUR
    generate(root, ids, first, hours=1, lines_per_hour=80, seed=71)
    reference = scan_tree(root)
    client = cloudwatch_client(moto_endpoint)
    sink = CloudWatchSink(client, key=f"cloudwatch@{moto_endpoint}")  # the default settle time
    state = tmp_path / "state"
    with pytest.raises(Crash):
        if crash == "before-put":
            make_job(root, LocalLedger(state), CrashingSink(sink, 1), namespace).run(datetime.now(UTC))
        else:
            make_job(root, FailingLedger(state, "mark_sent", 1), sink, namespace).run(datetime.now(UTC))
    assert client.list_metrics(Namespace=namespace)["Metrics"] != []  # some requests reached CloudWatch
    reader = MetricReader(client, namespace)
    window = (first, first + 2 * HOUR)
    published = sum(sum(reader.sums("Requests", [("DistributionId", d)], *window).values()) for d in ids)
    assert published < reference.total_requests()

    (pending,) = pending_of(state, sink.key, namespace)
    assert pending.in_flight is not None and pending.in_flight_at is not None

    # Right away: a receipt seen decides at once; one not seen is waited for, up to the settle time, in the run.
    slept: list[float] = []
    shift = [timedelta(0)]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        shift[0] += timedelta(seconds=seconds)

    messages: list[str] = []
    resumed = make_job(
        root, LocalLedger(state), sink, namespace, log=messages.append, clock=lambda: datetime.now(UTC) + shift[0],
        sleep=sleep,
    ).run(datetime.now(UTC))  # fmt: skip
    assert resumed.resumed_batches == 1 and resumed.files_new + resumed.files_already == 4
    verdict = "had not arrived" if crash == "before-put" else "had arrived"
    assert any(f"request {pending.in_flight + 1} {verdict}" in m for m in messages), messages
    if crash == "before-put":
        assert sink.settle - timedelta(seconds=2) <= timedelta(seconds=sum(slept)) <= sink.settle
    else:
        assert slept == []
    assert_cloudwatch_matches(reader, reference, *window)


def _concurrent_run(root: str, state: str, out: str, barrier: Any, results: Any) -> None:
    """One of two processes: wait for the other, then open the shared ledger (both may create it) and run."""
    engine()  # the slow part of building a Job, before the start line
    barrier.wait(timeout=60)
    job_ = make_job(Path(root), LocalLedger(Path(state)), JsonlSink(Path(out)))
    report = job_.run(datetime.now(UTC))
    results.put((report.files_new, report.files_already, report.requests))


def test_two_runs_started_together_publish_every_file_once(logs: Path, tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "out.jsonl"
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [
        context.Process(target=_concurrent_run, args=(str(logs), str(state), str(out), barrier, results))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    reports = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    files = len(LocalLogStore(logs).list(None).files)
    assert sorted(r[0] for r in reports) == [0, files]
    assert sorted(r[1] for r in reports) == [0, files]
    assert_jsonl_equals_reference(out, scan_tree(logs))
    records = read_jsonl(out)
    assert len({json.dumps(r, sort_keys=True) for r in records}) == len(records) > 0


def test_crashing_sink_and_failing_ledger_do_what_they_claim(tmp_path: Path) -> None:
    """The simulation itself: a CrashingSink delivers exactly k requests, a FailingLedger fails at the k-th call."""
    out = tmp_path / "x.jsonl"
    sink = CrashingSink(JsonlSink(out), 2)
    datum = Datum("Requests", (("DistributionId", "E1"),), FIRST_HOUR, Unit.COUNT, value=1.0)
    sink.put(NAMESPACE, [datum])
    sink.put(NAMESPACE, [datum])
    with pytest.raises(Crash):
        sink.put(NAMESPACE, [datum])
    assert len(read_jsonl(out)) == 2
    assert sink.maximum(NAMESPACE, datum.key) == 1.0
    ledger = FailingLedger(tmp_path / "state", "mark_sent", 1)
    ledger._maybe_crash("mark_sent")  # call 0 passes
    ledger._maybe_crash("commit")  # another step never crashes
    with pytest.raises(Crash):
        ledger._maybe_crash("mark_sent")
    ledger._maybe_crash("mark_sent")  # only once
    assert ledger.calls == 3


class PartialWriteSink(CrashingSink):
    """Dies in the middle of writing the first line of request `succeed` to the jsonl file (a kill or a full disk
    during the write), leaving a line cut short at the end of the file."""

    def __init__(self, path: Path, succeed: int) -> None:
        super().__init__(JsonlSink(path), succeed)
        self.path = path

    def put(self, namespace: str, datums: Sequence[Datum]) -> None:
        if self.delivered >= self.succeed:
            line = json.dumps({"Namespace": namespace, **datums[0].to_json()}) + "\n"
            with self.path.open("a", encoding="utf-8") as out:
                out.write(line[: len(line) // 2])
            raise Crash("in the middle of a write")
        super().put(namespace, datums)


def parseable_lines(path: Path) -> tuple[Counter[str], int]:
    """(the datums of every line that is complete JSON, the number of lines that are not)."""
    good: Counter[str] = Counter()
    bad = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if record["MetricName"] != RECEIPT_METRIC:
            good[json.dumps(record, sort_keys=True)] += 1
    return good, bad


def test_crash_in_the_middle_of_a_jsonl_write_loses_no_datum(clean: Clean, tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "out.jsonl"
    with pytest.raises(Crash):
        make_job(clean.root, LocalLedger(state), PartialWriteSink(out, 2)).run(datetime.now(UTC))
    assert not out.read_text(encoding="utf-8").endswith("\n")
    resume(clean, state, out)
    good, bad = parseable_lines(out)
    assert bad <= 1  # at most the remnant of the interrupted write
    assert good == clean.lines
