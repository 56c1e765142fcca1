"""The long run behind docs/RELIABILITY.md: `make reliability` (python -m tests.reliability [--scenarios N]).

A scenario is a random sequence of steps over a few distributions: log files arriving on time or up to 24 hours
late into an old partition, the clock moving on, scheduled runs (the handler's 26-hour window) and backfills over a
window, with a fault in some runs: a crash at a chosen call of a chosen step (before publish, in flight, after
publish, between requests, inside a ledger transaction, in the middle of a jsonl write), or throttling / 5xx answers
(within botocore's retries, or more than it retries). After every step the published figures are compared with an
independent count of the delivered files (tests/reference.py):

- never above what was delivered and could have been processed; never below what finished runs published;
- after a run that finished: exactly the files the ledger recorded, and those are every file the run's window
  held plus at most the files interrupted runs had started;
- at the end a recovery run over every partition: exactly every line delivered.

Per minute and distribution, `lost` sums the deficits of Requests against the reference and `twice` the excesses.
Most scenarios use the jsonl sink and the local ledger (fast); a share runs on a moto server: CloudWatch over HTTP
with real botocore retries (fault hooks from tests/test_faults.py), with the local or the S3 ledger.

Crashes here are in-process (an exception at the point, tests/kill_runner.py `install`): every ledger step is its
own transaction, so the state left is a killed process's. The real thing, SIGKILL in a subprocess at every kill
point of tests/test_kill.py (every case, not its quick subset, and every S3 ledger write), runs at the end.

tests/test_property.py drives the same scenario engine with hypothesis, a few dozen examples per `make test`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.retries.standard
import botocore.retryhandler
from botocore.exceptions import ClientError

from job.adapters import aws
from job.adapters.duckdb_engine import DuckDBEngine
from job.adapters.local_store import LocalLogStore
from job.adapters.s3_ledger import S3Ledger
from job.adapters.sinks import CloudWatchSink, JsonlSink
from job.adapters.sqlite_ledger import LocalLedger
from job.core.batch import Target
from job.core.errors import InFlightUnknown, LedgerError, PublishError
from job.core.metrics import Datum
from job.core.window import HourWindow, floor_hour
from job.demo.moto_server import moto_server
from job.demo.sample_logs import generate, write_log_file
from job.ports import Ledger, Sink
from job.query.sql_files import MINUTE_METRICS, SqlFile
from job.runner import Job, RunOptions
from tests.cloudwatch_double import CloudWatchDouble, cloudwatch_double
from tests.conftest import DOCUMENTED_TYPES, MetricQuery, MetricReader
from tests.kill_runner import JSONL_CASES, KILL_CASES, KILLED_MARK, Point, install, resolve
from tests.reference import Reference, scan_tree
from tests.test_faults import FaultHook
from tests.tight import tight_requests

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "RELIABILITY.md"
BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"
REGION = "us-east-1"
DISTRIBUTIONS = 3
LOOKBACK = timedelta(hours=26)  # the handler's default window
MAX_DATUMS = 30  # small requests: several per batch even with little data
# botocore's standard mode as job/adapters/aws.py configures it: max_attempts retries after the first attempt.
RETRIES = int(str(aws.RETRIES["max_attempts"]))
RESULT_TYPES = (*DOCUMENTED_TYPES, "Other")

# --- the scenario model -----------------------------------------------------------------------------------------

# fault kind -> the kill point step and phase it stands for (None: an answer from the wire, not a crash)
CRASHES: dict[str, tuple[str, str]] = {
    "crash before publish": ("begin", "after"),
    "crash in flight": ("mark_in_flight", "after"),
    "crash after publish": ("put", "after"),
    "crash between requests": ("mark_sent", "after"),
    "crash in ledger write: begin": ("begin", "mid"),
    "crash in ledger write: mark_in_flight": ("mark_in_flight", "mid"),
    "crash in ledger write: mark_sent": ("mark_sent", "mid"),
    "crash in ledger write: commit": ("commit", "mid"),
    "crash before ledger commit": ("commit", "before"),
    "crash in jsonl write": ("jsonl", "first-line"),
}
ANSWERS = ("throttle", "5xx")


@dataclass(frozen=True)
class Deliver:
    """A file of `lines` lines for distribution `distribution` into the partition `lag` hours before now."""

    distribution: int
    lag: int
    lines: int
    seed: int


@dataclass(frozen=True)
class Advance:
    hours: int


@dataclass(frozen=True)
class Fault:
    kind: str  # a key of CRASHES or one of ANSWERS
    at: int  # the call of the step (crash) or the PutMetricData attempt (answers) it hits, from 1
    count: int = 1  # answers: how many attempts in a row


@dataclass(frozen=True)
class Run:
    fault: Fault | None = None
    backfill: tuple[int, int] | None = None  # (first, last) hours before now; None: the scheduled window


Step = Deliver | Advance | Run
Choose = Callable[[int, int], int]  # an integer in [low, high]


def generate_steps(choose: Choose, backend: str, max_steps: int = 28) -> list[Step]:
    """A random scenario; `choose` is random.Random.randint or a hypothesis draw. moto scenarios keep to a few
    hours (moto's GetMetricData costs grow with minutes x datapoints in the range)."""
    on_moto = backend != "jsonl"
    max_lag = 3 if on_moto else 24
    kinds = [k for k in CRASHES if not (on_moto and k == "crash in jsonl write")]
    if backend == "cloudwatch+s3":  # S3Ledger's steps have no SQLite transaction; its `mid` is the first S3 write
        kinds = [
            k for k in kinds if k not in ("crash in ledger write: mark_in_flight", "crash in ledger write: mark_sent")
        ]
    steps: list[Step] = []
    for _ in range(choose(3, max_steps)):
        roll = choose(0, 9)
        if roll < 4:
            late = choose(0, 1) == 1
            lag = choose(2, max_lag) if late else choose(0, 1)
            steps.append(Deliver(choose(0, DISTRIBUTIONS - 1), lag, choose(1, 80), choose(0, 2**16)))
        elif roll < 5:
            steps.append(Advance(choose(1, 2 if on_moto else 6)))
        else:
            fault: Fault | None = None
            if choose(0, 9) < 6:
                kinds_all = [*kinds, *ANSWERS]
                kind = kinds_all[choose(0, len(kinds_all) - 1)]
                count = choose(1, 2 * RETRIES) if kind in ANSWERS else 1
                # begin and commit are called once a batch, the others once a request
                once_a_batch = kind in CRASHES and CRASHES[kind][0] in ("begin", "commit")
                fault = Fault(kind, choose(1, 3 if once_a_batch else 5), count)
            backfill: tuple[int, int] | None = None
            if choose(0, 3) == 0:
                first = choose(0, 6 if on_moto else 40)
                backfill = (first, choose(0, first))
            steps.append(Run(fault, backfill))
    return steps


# --- what a sink holds, per minute ------------------------------------------------------------------------------

# (metric, distribution, result type or "", minute): "R" Requests, "T" TimeTaken SampleCount
Key = tuple[str, str, str, datetime]


def reference_counts(reference: Reference) -> Counter[Key]:
    counts: Counter[Key] = Counter()
    for (distribution, minute), found in reference.minutes.items():
        counts[("R", distribution, "", minute)] += found.requests
        for raw, n in found.by_result_type.items():
            counts[("R", distribution, raw if raw in DOCUMENTED_TYPES else "Other", minute)] += n
        if found.time_taken_ms:
            counts[("T", distribution, "", minute)] += len(found.time_taken_ms)
    return counts


def jsonl_counts(path: Path, namespace: str) -> Counter[Key]:
    """Parsed here, not with the job's code; a line that is not whole JSON (a torn write) holds no datum."""
    counts: Counter[Key] = Counter()
    if not path.exists():
        return counts
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record: dict[str, Any] = json.loads(line)
        except ValueError:
            continue
        if record.get("Namespace") != namespace:
            continue
        dims = {d["Name"]: d["Value"] for d in record["Dimensions"]}
        minute = datetime.strptime(record["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if record["MetricName"] == "Requests" and set(dims) <= {"DistributionId", "ResultType"}:
            # (Requests by StatusClass and by EdgeLocation split the same requests another way: not counted here)
            counts[("R", dims["DistributionId"], dims.get("ResultType", ""), minute)] += int(record["Value"])
        elif record["MetricName"] == "TimeTaken":
            counts[("T", dims["DistributionId"], "", minute)] += int(sum(record["Counts"]))
    return +counts


def cloudwatch_counts(
    reader: MetricReader, distributions: Sequence[str], start: datetime, end: datetime
) -> Counter[Key]:
    queries: list[MetricQuery] = []
    keys: list[tuple[str, str, str]] = []
    for d in distributions:
        base = (("DistributionId", d),)
        queries.append(MetricQuery("Requests", base))
        keys.append(("R", d, ""))
        queries.append(MetricQuery("TimeTaken", base, "SampleCount"))
        keys.append(("T", d, ""))
        for result_type in RESULT_TYPES:
            queries.append(MetricQuery("Requests", (*base, ("ResultType", result_type))))
            keys.append(("R", d, result_type))
    counts: Counter[Key] = Counter()
    for (metric, d, result_type), found in zip(keys, reader.read(queries, start, end), strict=True):
        for minute, value in found.items():
            counts[(metric, d, result_type, minute)] += round(value)
    return +counts


def double_counts(
    double: CloudWatchDouble, namespace: str, distributions: Sequence[str], start: datetime, end: datetime
) -> Counter[Key]:
    """The figures cloudwatch_counts reads, from every datapoint the double stores (held back or visible)."""
    counts: Counter[Key] = Counter()
    for d in distributions:
        series = [("R", "Requests", {"DistributionId": d}, "")]
        series += [("R", "Requests", {"DistributionId": d, "ResultType": t}, t) for t in RESULT_TYPES]
        series.append(("T", "TimeTaken", {"DistributionId": d}, ""))
        for kind, metric, dims, result_type in series:
            for point in double.datapoints(namespace, metric, dims):
                minute = point.timestamp.replace(second=0, microsecond=0)
                if start <= minute < end:
                    value = point.sum if kind == "R" else point.sample_count
                    counts[(kind, d, result_type, minute)] += round(value)
    return +counts


@dataclass(frozen=True)
class Difference:
    lost: int  # Requests lines short of the reference, summed over (distribution, minute)
    twice: int  # Requests lines above it
    keys: int  # every key (any metric) that differs

    @classmethod
    def of(cls, published: Counter[Key], expected: Counter[Key]) -> Difference:
        keys = set(published) | set(expected)
        lines = [k for k in keys if k[0] == "R" and k[2] == ""]
        return cls(
            sum(max(0, expected[k] - published[k]) for k in lines),
            sum(max(0, published[k] - expected[k]) for k in lines),
            sum(1 for k in keys if published[k] != expected[k]),
        )


class Violation(AssertionError):
    """An invariant of exactly-once did not hold after a step."""


# --- backends ---------------------------------------------------------------------------------------------------


class Crash(Exception):
    """The process dying at a kill point (in-process)."""


def crash(point: Point, detail: str) -> None:
    raise Crash(f"{point} {detail}".strip())


class AnsweringSink:
    """The jsonl sink behind a simulated CloudWatch answer: the `at`-th request meets `count` throttling or 5xx
    answers in a row; botocore's standard mode retries RETRIES times, so beyond that the request fails unsent."""

    def __init__(self, inner: Sink, fault: Fault) -> None:
        self.inner, self.fault, self.calls, self.injected = inner, fault, 0, 0
        self.key, self.checks_timestamp_age, self.settle = inner.key, inner.checks_timestamp_age, inner.settle

    def put(self, namespace: str, datums: Sequence[Datum]) -> None:
        self.calls += 1
        if self.calls == self.fault.at:
            self.injected = self.fault.count
            if self.fault.count > RETRIES:
                code = "Throttling" if self.fault.kind == "throttle" else "503"
                error = ClientError({"Error": {"Code": code, "Message": "simulated"}}, "PutMetricData")
                raise PublishError(f"CloudWatch PutMetricData failed: {error} (reached max retries: {RETRIES})")
        self.inner.put(namespace, datums)

    def maximum(self, namespace: str, key: Any) -> Any:
        return self.inner.maximum(namespace, key)

    def receipt_ledgers(self, namespace: str) -> Any:
        return self.inner.receipt_ledgers(namespace)


class Backend:
    """Where a scenario publishes and keeps its ledger."""

    name = ""
    distribution_ids: list[str]
    namespace: str

    def ledger(self) -> Ledger:
        raise NotImplementedError

    def close_ledger(self, ledger: Ledger) -> None:
        if isinstance(ledger, LocalLedger):
            ledger.close()  # a killed process's connection: an open transaction is rolled back

    def sink(self, fault: Fault | None) -> tuple[Sink, Callable[[], int]]:
        """The sink for one run, and how many fault answers it injected."""
        raise NotImplementedError

    def done_with_run(self) -> None:
        pass

    def published(self, hours: Sequence[datetime]) -> Counter[Key]:
        raise NotImplementedError


class JsonlBackend(Backend):
    name = "jsonl+local"

    def __init__(self, folder: Path, label: str) -> None:
        self.folder, self.out = folder, folder / "out.jsonl"
        self.namespace = "Reliability/Scenario"
        self.distribution_ids = [f"E{label}D{d}" for d in range(DISTRIBUTIONS)]

    def ledger(self) -> Ledger:
        return LocalLedger(self.folder / "state")

    def sink(self, fault: Fault | None) -> tuple[Sink, Callable[[], int]]:
        inner = JsonlSink(self.out)
        if fault is not None and fault.kind in ANSWERS:
            answering = AnsweringSink(inner, fault)
            return answering, lambda: answering.injected
        return inner, lambda: 0

    def published(self, hours: Sequence[datetime]) -> Counter[Key]:
        return jsonl_counts(self.out, self.namespace)


class CloudWatchBackend(Backend):
    """CloudWatch on a moto server through a client built like the CLI's (standard retries), with real fault
    answers from a before-send hook; the ledger local or in S3 (moto) with its lease and conditional writes."""

    def __init__(
        self, folder: Path, label: str, endpoint: str, s3_ledger: bool, double: CloudWatchDouble | None = None
    ) -> None:
        self.folder, self.endpoint, self.s3_ledger, self.double = folder, endpoint, s3_ledger, double
        self.name = "cloudwatch+s3" if s3_ledger else "cloudwatch+local"
        self.namespace = f"Reliability/{label}"
        self.distribution_ids = [f"E{label}D{d}" for d in range(DISTRIBUTIONS)]
        session = aws.session(REGION)
        # CloudWatch through the double (old datapoints hidden from reads, as CloudWatch does), S3 on moto
        self.client = aws.client(session, "cloudwatch", double.url if double else endpoint)
        self.s3 = aws.client(session, "s3", endpoint) if s3_ledger else None
        self.prefix = f"{label}/ledger/"
        self.hook: FaultHook | None = None

    def ledger(self) -> Ledger:
        if self.s3 is None:
            return LocalLedger(self.folder / "state")
        self.s3.create_bucket(Bucket="reliability-state")
        return S3Ledger(self.s3, "reliability-state", self.prefix, owner="reliability")

    def sink(self, fault: Fault | None) -> tuple[Sink, Callable[[], int]]:
        sink = CloudWatchSink(self.client, key=f"cloudwatch@{self.endpoint}", settle=timedelta(0))
        if fault is None or fault.kind not in ANSWERS:
            return sink, lambda: 0
        hook = FaultHook("cloudwatch", fault.kind, first=fault.at, count=fault.count)
        self.client.meta.events.register("before-send.cloudwatch.PutMetricData", hook)
        self.hook = hook
        return sink, lambda: hook.injected

    def done_with_run(self) -> None:
        if self.hook is not None:
            self.client.meta.events.unregister("before-send.cloudwatch.PutMetricData", self.hook)
            self.hook = None
        if self.s3 is not None:  # a crashed run's lease: what 20 minutes do to it
            key = f"{self.prefix}lease.json"
            found = self.s3.list_objects_v2(Bucket="reliability-state", Prefix=key)["KeyCount"]
            if found:
                self.s3.delete_object(Bucket="reliability-state", Key=key)

    def published(self, hours: Sequence[datetime]) -> Counter[Key]:
        if not hours:
            return Counter()
        start, end = min(hours), max(hours) + timedelta(hours=2)
        if self.double is not None:  # what the double stores, held datapoints included: as if released now
            return double_counts(self.double, self.namespace, self.distribution_ids, start, end)
        reader = MetricReader(self.client, self.namespace)
        return cloudwatch_counts(reader, self.distribution_ids, start, end)


# --- playing a scenario -----------------------------------------------------------------------------------------


@dataclass
class Delivered:
    name: str
    uri: str
    hour: datetime
    lines: int
    counts: Counter[Key]


@dataclass
class Outcome:
    """What one scenario did and found."""

    backend: str
    steps: int = 0
    runs: int = 0
    backfills: int = 0
    files: int = 0
    lines: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    failed_runs: int = 0
    unknown: int = 0  # runs that stopped with InFlightUnknown
    lost: int = 0
    twice: int = 0
    keys_differing: int = 0
    violations: list[str] = field(default_factory=list)


_ENGINE: list[DuckDBEngine] = []
_QUERY: list[SqlFile] = []


def engine() -> DuckDBEngine:
    if not _ENGINE:
        _ENGINE.append(DuckDBEngine(threads=1))
    return _ENGINE[0]


def query() -> SqlFile:
    if not _QUERY:
        _QUERY.append(SqlFile.load(MINUTE_METRICS))
    return _QUERY[0]


@contextmanager
def small_requests_and_no_backoff() -> Iterator[None]:
    """Requests of MAX_DATUMS datums; botocore's backoff waits zero (its retry decisions unchanged)."""
    saved = (
        botocore.retries.standard.ExponentialBackoff.delay_amount,
        botocore.retryhandler.__dict__["delay_exponential"],
    )
    setattr(botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.0)  # noqa: B010
    setattr(botocore.retryhandler, "delay_exponential", lambda **kwargs: 0.0)  # noqa: B010
    try:
        with tight_requests(MAX_DATUMS):
            yield
    finally:
        setattr(botocore.retries.standard.ExponentialBackoff, "delay_amount", saved[0])  # noqa: B010
        setattr(botocore.retryhandler, "delay_exponential", saved[1])  # noqa: B010


class Scenario:
    """Plays steps against a backend and checks the invariants after each; `strict` raises Violation at once."""

    def __init__(self, backend: Backend, folder: Path, start: datetime, strict: bool) -> None:
        self.backend, self.root, self.now, self.strict = backend, folder / "logs", start, strict
        self.root.mkdir(parents=True, exist_ok=True)
        self.delivered: list[Delivered] = []
        self.done: set[str] = set()  # files a finished run left recorded: published, all of them
        self.maybe: set[str] = set()  # files an interrupted run may have started
        self.outcome = Outcome(backend.name)

    @property
    def target(self) -> Target:
        sink_key = self.backend.sink(None)[0].key
        return Target(MINUTE_METRICS, sink_key, self.backend.namespace)

    def violation(self, message: str) -> None:
        self.outcome.violations.append(message)
        if self.strict:
            raise Violation(message)

    def expected(self, uris: set[str]) -> Counter[Key]:
        total: Counter[Key] = Counter()
        for f in self.delivered:
            if f.uri in uris:
                total.update(f.counts)
        return total

    def published(self) -> Counter[Key]:
        return self.backend.published(sorted({f.hour for f in self.delivered}))

    def play(self, steps: Sequence[Step]) -> Outcome:
        with small_requests_and_no_backoff():
            for index, step in enumerate(steps):
                self.outcome.steps += 1
                if isinstance(step, Deliver):
                    self.deliver(index, step)
                elif isinstance(step, Advance):
                    self.now += timedelta(hours=step.hours)
                else:
                    self.run(step, f"step {index + 1} {step}")
            self.recover()
        return self.outcome

    def deliver(self, index: int, step: Deliver) -> None:
        hour = floor_hour(self.now) - timedelta(hours=step.lag)
        distribution_id = self.backend.distribution_ids[step.distribution]
        sample = write_log_file(
            self.root, distribution_id, hour, step.lines, random.Random(step.seed), suffix=f"s{index:03d}"
        )
        reference = Reference()
        reference.add_file(distribution_id, sample.path)
        uri = str(sample.path.resolve())
        self.delivered.append(Delivered(sample.path.name, uri, hour, sample.lines, reference_counts(reference)))
        self.outcome.files += 1
        self.outcome.lines += sample.lines

    def window(self, step: Run) -> HourWindow:
        last = floor_hour(self.now)
        if step.backfill is None:
            return HourWindow(floor_hour(self.now - LOOKBACK), last)
        first, end = step.backfill
        return HourWindow(last - timedelta(hours=first), last - timedelta(hours=end))

    def run(self, step: Run, where: str) -> bool:
        """One run; True if it finished. Checks the invariants after it."""
        window = self.window(step)
        self.outcome.runs += 1
        self.outcome.backfills += step.backfill is not None
        in_window = {f.uri for f in self.delivered if window.contains(f.hour)}
        fault = step.fault
        point = None
        if fault is not None and fault.kind in CRASHES:
            phase_step, phase = CRASHES[fault.kind]
            point = Point(phase_step, phase, fault.at)
        finished = False
        error = ""
        context: AbstractContextManager[Any] = install(point, crash) if point is not None else nullcontext()
        with context as state:
            ledger = self.backend.ledger()  # inside: a LocalLedger's connection is wrapped for the `mid` points
            sink, injected = self.backend.sink(step.fault)
            options = RunOptions(namespace=self.backend.namespace, window=window)
            job_ = Job(LocalLogStore(self.root), engine(), ledger, sink, query(), options)
            try:
                job_.run(self.now)
                finished = True
            except Crash as exc:
                error = f"crash {exc}"
            except (PublishError, LedgerError) as exc:
                error = f"failed {exc}"
            except InFlightUnknown as exc:
                self.outcome.unknown += 1
                error = f"unknown {exc}"
        self.backend.close_ledger(ledger)  # as the process's death would: an open transaction rolls back
        self.backend.done_with_run()
        reader = self.backend.ledger()
        recorded = reader.recorded(self.target)
        pending = reader.pending(self.target)
        self.backend.close_ledger(reader)
        if point is not None and state is not None and state.fired:
            assert fault is not None
            self.outcome.faults[fault.kind] += 1
        elif fault is not None and fault.kind in ANSWERS and injected():
            beyond = "beyond the retries" if fault.count > RETRIES else "retried"
            self.outcome.faults[f"{fault.kind} ({beyond})"] += 1
        if not finished:
            self.outcome.failed_runs += 1
            if error.startswith("unknown"):
                self.violation(f"{where}: {error}")

        published = self.published()
        if finished:
            must = self.done | in_window
            if not must <= recorded:
                self.violation(f"{where}: finished but {len(must - recorded)} file(s) of its window not recorded")
            if not recorded <= must | self.maybe:
                self.violation(f"{where}: recorded file(s) no run was asked to process")
            if pending:
                self.violation(f"{where}: finished with {len(pending)} batch(es) still pending")
            difference = Difference.of(published, self.expected(recorded))
            if difference.keys:
                self.violation(f"{where}: after a finished run {difference}")
            self.done, self.maybe = recorded, set()
        else:
            self.maybe |= in_window - self.done
            low, high = self.expected(self.done), self.expected(self.done | self.maybe)
            below = sum(1 for k in set(low) | set(published) if published[k] < low[k])
            above = sum(1 for k in set(high) | set(published) if published[k] > high[k])
            if below or above:
                self.violation(f"{where}: after '{error[:200]}' {below} key(s) below, {above} above the bounds")
        return finished

    def recover(self) -> None:
        """A run with no fault over every partition delivered: then exactly every line must be published."""
        if self.delivered:
            hours = [f.hour for f in self.delivered]
            back = int((floor_hour(self.now) - min(hours)) / timedelta(hours=1))
            ahead = int((floor_hour(self.now) - max(hours)) / timedelta(hours=1))
            self.run(Run(None, (back, min(ahead, back))), "recovery run")
        difference = Difference.of(self.published(), self.expected({f.uri for f in self.delivered}))
        self.outcome.lost += difference.lost
        self.outcome.twice += difference.twice
        self.outcome.keys_differing += difference.keys
        if difference.keys:
            self.violation(f"at the end: {difference}")


# --- the long run -----------------------------------------------------------------------------------------------

JSONL_START = datetime(2026, 10, 1, 0, 30, tzinfo=UTC)
# moto scenarios start 12 days back; each worker has its own moto server, reset after every moto scenario (moto's
# GetMetricData costs queries x minutes x every datapoint it holds in the range).
MOTO_BASE = floor_hour(datetime.now(UTC)) - timedelta(days=12) + timedelta(minutes=30)
_ENDPOINT: list[str] = []
_DOUBLE: list[CloudWatchDouble] = []  # the worker's CloudWatch double in front of its moto server


def _init_worker(endpoints: Any) -> None:
    _ENDPOINT.append(str(endpoints.get()))
    double = CloudWatchDouble(_ENDPOINT[0], visible_after=timedelta(0))
    double.start()  # a daemon thread: it ends with the worker
    _DOUBLE.append(double)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)


def backend_for(index: int, moto_share: float, seed: int) -> str:
    rng = random.Random(seed * 7919 + index)
    if rng.random() >= moto_share:
        return "jsonl"
    return "cloudwatch+s3" if rng.random() < 0.5 else "cloudwatch+local"


def scenario_steps(index: int, seed: int, moto_share: float) -> tuple[str, list[Step]]:
    kind = backend_for(index, moto_share, seed)
    rng = random.Random(seed * 1_000_003 + index)
    return kind, generate_steps(rng.randint, kind)


def play_scenario(index: int, seed: int, kind: str, steps: Sequence[Step], endpoint: str | None) -> Outcome:
    label = f"{seed % 1000:03d}X{index:05d}"
    with tempfile.TemporaryDirectory(prefix="cfm-rel-") as folder:
        backend: Backend
        if kind == "jsonl":
            backend, start = JsonlBackend(Path(folder), label), JSONL_START
        else:
            assert endpoint is not None, "a moto scenario needs a moto server"
            double = _DOUBLE[0] if _DOUBLE else None
            backend = CloudWatchBackend(Path(folder), label, endpoint, s3_ledger=kind == "cloudwatch+s3", double=double)
            try:
                return Scenario(backend, Path(folder), MOTO_BASE, strict=False).play(steps)
            finally:
                reset = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
                with urllib.request.urlopen(reset, timeout=60) as answer:
                    assert answer.status == 200
        return Scenario(backend, Path(folder), start, strict=False).play(steps)


def _worker(args: tuple[int, int, float]) -> tuple[int, Outcome, str]:
    index, seed, moto_share = args
    kind, steps = scenario_steps(index, seed, moto_share)
    try:
        outcome = play_scenario(index, seed, kind, steps, _ENDPOINT[0] if _ENDPOINT else None)
    except Exception as exc:  # a scenario that cannot even be played is reported, with its steps
        outcome = Outcome(kind, violations=[f"{type(exc).__name__}: {exc}"])
    return index, outcome, repr(steps) if outcome.violations else ""


# --- every kill point, SIGKILL in a subprocess ------------------------------------------------------------------


@dataclass
class KillResult:
    case: str
    sink: str
    outcome: str  # "exact", "InFlightUnknown (reported)", or what went wrong
    lost: int  # for InFlightUnknown: lines still pending (the run stopped and said so), not lost
    twice: int
    keys: int  # keys (metric, dimensions, minute) that differ from the reference

    @property
    def acceptable(self) -> bool:
        if self.outcome == UNKNOWN:
            return self.twice == 0
        return self.outcome == "exact" and self.lost == 0 and self.twice == 0


UNKNOWN = "InFlightUnknown (reported)"


def _kill_runner(point: Point, args: Sequence[str], max_datums: int) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tests.kill_runner", "--kill", str(point), "--max-datums", str(max_datums)]
    return subprocess.run([*command, "--", *args], capture_output=True, text=True, timeout=300, cwd=REPO)


def _cli(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "job.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)


def kill_sweep(
    endpoint: str, work: Path, log: Callable[[str], None], cloudwatch: str | None = None
) -> list[KillResult]:
    """SIGKILL at every kill point, then a rerun; the CLI's CloudWatch is `cloudwatch` (the double) when given,
    while the figures are read from moto itself, which stores every datapoint the double let through."""
    cw = cloudwatch or endpoint
    """Every case of tests/test_kill.py: SIGKILL at the point, a normal rerun, the totals against the reference."""
    results: list[KillResult] = []
    hours = iter(range(10_000))
    base = floor_hour(datetime.now(UTC)) - timedelta(days=13)

    def logs(label: str, folder: Path) -> tuple[list[str], Counter[Key], datetime]:
        ids = [f"EK{label}{x}" for x in "ABC"]
        hour = base + timedelta(hours=next(hours))
        generate(folder, ids, hour, hours=1, lines_per_hour=300, seed=29, files_per_hour=3)
        return ids, reference_counts(scan_tree(folder)), hour

    # the run's shape: requests and batches
    shape_dir = work / "shape"
    logs("SHAPE", shape_dir / "logs")
    out = shape_dir / "out.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "tests.kill_runner", "--max-datums", "60", "--", "run", "--logs",
         str(shape_dir / "logs"), "--sink", f"jsonl:{out}", "--state", str(shape_dir / "state")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    requests = int(re.findall(r"in ([\d,]+) PutMetricData", done.stderr)[-1].replace(",", ""))
    batches = 3

    def judge(case: str, sink: str, killed: subprocess.CompletedProcess[str], point: Point, rerun_code: int,
              rerun_err: str, published: Counter[Key], expected: Counter[Key]) -> None:  # fmt: skip
        difference = Difference.of(published, expected)
        if killed.returncode != -9 or f"{KILLED_MARK} {point}" not in killed.stderr:
            outcome = f"not killed (exit {killed.returncode})"
        elif rerun_code != 0 and "cannot tell whether it arrived" in rerun_err:
            outcome = UNKNOWN
        elif rerun_code != 0:
            outcome = f"rerun failed: {rerun_err.strip().splitlines()[-1][:120]}"
        else:
            outcome = "exact" if difference.keys == 0 else f"{difference.keys} key(s) differ"
        results.append(KillResult(case, sink, outcome, difference.lost, difference.twice, difference.keys))
        log(f"kill {sink} {case}: {outcome}")

    cases = [*KILL_CASES, *JSONL_CASES]
    for number, (step, phase, which, _) in enumerate(cases):
        point = resolve(step, phase, which, requests, batches)
        case = ":".join((step, phase, which))
        sinks = ["jsonl"] if step == "jsonl" else ["cloudwatch", "jsonl"]
        for sink in sinks:
            folder = work / f"k{number}-{sink}"
            ids, expected, hour = logs(f"{number}{sink[0].upper()}", folder / "logs")
            namespace = f"Reliability/Kill{number}{sink}"
            args = ["run", "--logs", str(folder / "logs"), "--state", str(folder / "state"), "--namespace", namespace]
            if sink == "cloudwatch":
                args += ["--endpoint-url", cw, "--region", REGION, "--in-flight-settle", "0"]
            else:
                args += ["--sink", f"jsonl:{folder / 'out.jsonl'}"]
            killed = _kill_runner(point, args, 60)
            rerun = _cli(args)
            if rerun.returncode == 0:
                _cli(args)
            if sink == "cloudwatch":
                reader = MetricReader(aws.client(aws.session(REGION), "cloudwatch", endpoint), namespace)
                published = cloudwatch_counts(reader, ids, hour, hour + timedelta(hours=2))
            else:
                published = jsonl_counts(folder / "out.jsonl", namespace)
            judge(case, sink, killed, point, rerun.returncode, rerun.stderr, published, expected)

    # the S3 ledger: after every one of its S3 writes (2 batches x 10 writes, lease, ledger id, fingerprint, owners,
    # release: 25)
    s3 = aws.client(aws.session(REGION), "s3", endpoint)
    for bucket in ("rel-kill-logs", "rel-kill-state"):
        s3.create_bucket(Bucket=bucket)
    for n in range(1, 26):
        folder = work / f"s3-{n}"
        ids = [f"EKS{n}X{x}" for x in "AB"]
        hour = base + timedelta(hours=next(hours))
        generate(folder / "logs", ids, hour, hours=1, lines_per_hour=60, seed=31)
        expected = reference_counts(scan_tree(folder / "logs"))
        prefix = f"s3kill{n}/"
        for path in sorted((folder / "logs").rglob("*.gz")):
            s3.upload_file(str(path), "rel-kill-logs", prefix + path.relative_to(folder / "logs").as_posix())
        namespace = f"Reliability/KillS3{n}"
        args = [
            "run", "--logs", f"s3://rel-kill-logs/{prefix}", "--state", f"s3://rel-kill-state/{prefix}ledger/",
            "--s3-endpoint-url", endpoint, "--engine", "duckdb", "--from", f"{hour:%Y-%m-%dT%H}", "--to",
            f"{hour:%Y-%m-%dT%H}", "--endpoint-url", cw, "--region", REGION, "--namespace", namespace,
            "--in-flight-settle", "0",
        ]  # fmt: skip
        point = Point("s3write", "after", n)
        killed = _kill_runner(point, args, 1000)
        lease = f"{prefix}ledger/lease.json"
        if s3.list_objects_v2(Bucket="rel-kill-state", Prefix=lease)["KeyCount"]:
            s3.delete_object(Bucket="rel-kill-state", Key=lease)  # what 20 minutes do to a dead run's lease
        rerun = _cli(args)
        if rerun.returncode == 0:
            _cli(args)
        reader = MetricReader(aws.client(aws.session(REGION), "cloudwatch", endpoint), namespace)
        published = cloudwatch_counts(reader, ids, hour, hour + timedelta(hours=2))
        detail = killed.stderr.split(f"{KILLED_MARK} {point}")[-1].strip().split("\n")[0]
        judge(f"s3write:after:{n} ({s3_write_name(detail)})", "cloudwatch+s3", killed, point,
              rerun.returncode, rerun.stderr, published, expected)  # fmt: skip
    return results


def s3_write_name(detail: str) -> str:
    """'put <prefix>/ledger/batches/<id>.batch.json' -> 'put journal'."""
    operation, _, key = detail.partition(" ")
    names = (("lease.json", "lease"), ("query.json", "fingerprint"), (".progress.json", "progress"),
             ("/files/", "partition object"), ("/done/", "done copy"), (".batch.json", "journal"))  # fmt: skip
    return f"{operation} " + next((name for part, name in names if part in key), key)


def ambiguous_sweep(
    endpoint: str, work: Path, scenarios: int, log: Callable[[str], None], double: CloudWatchDouble | None = None
) -> tuple[int, int, int]:
    """PutMetricData lands and its answer is lost (a 5xx, a read timeout) on datapoints 11 days old, which the
    double hides from reads: the run never retries blindly; it reads the request's receipt back and goes on.
    Returns (runs, lines delivered, lines counted twice)."""
    runs = lines = twice = 0
    base = floor_hour(datetime.now(UTC)) - timedelta(days=11)
    with small_requests_and_no_backoff():
        for number in range(scenarios):
            folder = work / f"amb{number}"
            label = f"AMB{number}"
            backend = CloudWatchBackend(folder, label, endpoint, s3_ledger=False, double=double)
            hour = base + timedelta(hours=number)
            generate(folder / "logs", backend.distribution_ids, hour, hours=1, lines_per_hour=40, seed=number)
            expected = reference_counts(scan_tree(folder / "logs"))
            kind = "5xx-after-accept" if number % 2 == 0 else "timeout-after-accept"
            hook = FaultHook("cloudwatch", kind, first=1 + number % 3, count=1)
            backend.client.meta.events.register("before-send.cloudwatch.PutMetricData", hook)
            ledger = backend.ledger()
            sink = CloudWatchSink(backend.client, key=f"cloudwatch@{endpoint}", settle=timedelta(0))
            options = RunOptions(namespace=backend.namespace, window=None)
            try:
                Job(LocalLogStore(folder / "logs"), engine(), ledger, sink, query(), options).run(
                    hour + timedelta(hours=2)
                )
            except PublishError:
                backend.client.meta.events.unregister("before-send.cloudwatch.PutMetricData", hook)
                Job(LocalLogStore(folder / "logs"), engine(), ledger, sink, query(), options).run(
                    hour + timedelta(hours=2)
                )
                runs += 1
            backend.close_ledger(ledger)
            published = backend.published([hour])
            difference = Difference.of(published, expected)
            runs += 1
            lines += sum(v for k, v in expected.items() if k[0] == "R" and k[2] == "")
            twice += difference.twice
    log(f"ambiguous answers: {runs} runs, {twice} line(s) counted twice")
    return runs, lines, twice


# --- the report -------------------------------------------------------------------------------------------------


def render(
    outcomes: Sequence[Outcome],
    kills: Sequence[KillResult],
    ambiguous: tuple[int, int, int],
    failures: Sequence[str],
    seconds: float,
    command: str,
) -> str:
    faults: Counter[str] = Counter()
    backends: Counter[str] = Counter(o.backend for o in outcomes)
    for o in outcomes:
        faults.update(o.faults)
    total = Outcome("all")
    for o in outcomes:
        total.runs += o.runs
        total.backfills += o.backfills
        total.files += o.files
        total.lines += o.lines
        total.failed_runs += o.failed_runs
        total.unknown += o.unknown
        total.lost += o.lost
        total.twice += o.twice
        total.keys_differing += o.keys_differing
    violations = sum(len(o.violations) for o in outcomes)
    lines = [
        BEGIN,
        "",
        f"Command: `{command}` - run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on a machine with {os.cpu_count()} "
        f"core(s) (nproc), in {seconds / 60:.1f} min.",
        "",
        "| scenarios (random steps, checked after every step) | figure |",
        "|---|---:|",
        f"| scenarios run | {len(outcomes):,} |",
        *(f"| - of them on {name} | {n:,} |" for name, n in sorted(backends.items())),
        f"| runs (of which backfills) | {total.runs:,} ({total.backfills:,}) |",
        f"| runs that stopped on their fault | {total.failed_runs:,} |",
        f"| log files delivered | {total.files:,} |",
        f"| log lines delivered | {total.lines:,} |",
    ]
    for kind in [*CRASHES, *(f"{a} ({b})" for a in ANSWERS for b in ("retried", "beyond the retries"))]:
        lines.append(f"| faults injected: {kind} | {faults[kind]:,} |")
    lines += [
        f"| **lines lost** | **{total.lost:,}** |",
        f"| **lines counted twice** | **{total.twice:,}** |",
        f"| keys (metric, dimensions, minute) differing at the end | {total.keys_differing:,} |",
        f"| invariant violations after a step | {violations:,} |",
        f"| runs that stopped with InFlightUnknown | {total.unknown:,} |",
        "",
        "| SIGKILL at a kill point, then a normal rerun | sink | outcome | lines lost | lines twice |",
        "|---|---|---|---:|---:|",
        *(
            f"| `{k.case}` | {k.sink} | {k.outcome} | "
            + (f"none: stopped, {k.lost:,} lines / {k.keys:,} keys pending" if k.outcome == UNKNOWN else f"{k.lost:,}")
            + f" | {k.twice:,} |"
            for k in kills
        ),
        "",
        f"Answers lost after CloudWatch took the request (HTTP 503 or a read timeout after it landed, on datapoints "
        f"11 days old that the double hides from reads; the run reads the request's receipt back instead of "
        f"retrying blindly): {ambiguous[0]} runs, "
        f"{ambiguous[2]:,} of {ambiguous[1]:,} lines counted twice.",
    ]
    if failures:
        lines += ["", "Scenarios with a violation (first 10):", ""]
        lines += [f"- {f[:400]}" for f in failures[:10]]
    lines += ["", END]
    return "\n".join(lines)


def write_doc(block: str) -> None:
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(head + block + tail, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--scenarios", type=int, default=1000, help="random scenarios to play (1000)")
    parser.add_argument("--seed", type=int, default=20261128, help="seed of the scenario generator")
    parser.add_argument("--moto-share", type=float, default=0.25, help="share of scenarios on moto (0.25)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (nproc)")
    parser.add_argument("--no-kill", action="store_true", help="skip the SIGKILL sweep")
    parser.add_argument("--ambiguous", type=int, default=20, help="runs of the known gap to measure (20)")
    parser.add_argument("--no-doc", action="store_true", help=f"print the table, do not write {DOC.name}")
    options = parser.parse_args(argv)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    outcomes: list[Outcome] = []
    failures: list[str] = []
    jobs = [(i, options.seed, options.moto_share) for i in range(options.scenarios)]
    context = multiprocessing.get_context("spawn")
    with ExitStack() as servers:
        endpoints = context.Queue()
        for _ in range(options.workers):
            endpoints.put(servers.enter_context(moto_server()))
        pool = context.Pool(options.workers, initializer=_init_worker, initargs=(endpoints,))
        for index, outcome, steps in pool.imap_unordered(_worker, jobs, chunksize=1):
            outcomes.append(outcome)
            if outcome.violations:
                failures.append(f"scenario {index} ({outcome.backend}): {outcome.violations[0]}; steps {steps}")
                log(f"scenario {index}: VIOLATION {outcome.violations[0][:300]}")
            if len(outcomes) % 50 == 0:
                lost, twice = sum(o.lost for o in outcomes), sum(o.twice for o in outcomes)
                log(f"{len(outcomes)} scenarios, lost {lost}, twice {twice}, violations {len(failures)}")
        pool.close()
        pool.join()
    kills: list[KillResult] = []
    ambiguous = (0, 0, 0)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="cfm-kill-") as work:
        endpoint = stack.enter_context(moto_server())
        double = stack.enter_context(cloudwatch_double(endpoint, visible_after=timedelta(0)))
        if not options.no_kill:
            kills = kill_sweep(endpoint, Path(work), log, cloudwatch=double.url)
        if options.ambiguous:
            ambiguous = ambiguous_sweep(endpoint, Path(work), options.ambiguous, log, double=double)
    command = "make reliability" + (f" (--scenarios {options.scenarios})" if options.scenarios != 1000 else "")
    block = render(outcomes, kills, ambiguous, failures, time.monotonic() - started, command)
    print(block)
    if not options.no_doc:
        write_doc(block)
        log(f"wrote {DOC}")
    lost, twice = sum(o.lost for o in outcomes), sum(o.twice for o in outcomes)
    bad_kills = [k for k in kills if not k.acceptable]
    return 0 if not failures and lost == 0 and twice == 0 and not bad_kills else 1


if __name__ == "__main__":
    sys.exit(main())
