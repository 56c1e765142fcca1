"""The publish path's benchmark: `python -m bench.publish` (datums -> PutMetricData requests -> sent, journal included).

    python -m bench.publish                 6,720 and 20,160 datums, 5 repetitions, rewrites its block in the docs
    python -m bench.publish --quick         fewer datums and repetitions, prints only

Times, interleaved within every repetition, today's path (job.runner: pack_wire, Batch with fragments, LocalLedger
begin / mark_in_flight / mark_sent / commit from memory, CloudWatchSink.put_wire) against the path before
job/core/wire.py (bench/legacy_publish.py). Both send through a real boto3 CloudWatch client (validation,
serialisation, gzip, SigV4) that answers 200 just before the network, and a real SQLite ledger in a temp folder.
The calls per request are the runner's (_start, _publish, _send). CPU time is the process's user + system time.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.legacy_publish import LegacyLedger, legacy_batch
from bench.legacy_publish import pack as legacy_pack
from bench.run import machine_facts
from bench.worker import WireCounter
from job.adapters.sinks import CloudWatchSink
from job.adapters.sqlite_ledger import LocalLedger
from job.core import wire
from job.core.batch import Batch, Target
from job.core.files import Layout, LogFile
from job.core.limits import MAX_DATUMS_PER_REQUEST, MAX_REQUEST_BYTES
from job.core.metrics import Datum, Unit
from job.core.packing import RequestLimits, check_datums, datum_bytes, pack_wire
from job.core.receipts import next_attempt_time, receipt_datum

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "BENCHMARKS.md"
BEGIN = "<!-- bench-publish:begin (written by `make bench`; edits between these markers are overwritten) -->"
END = "<!-- bench-publish:end -->"
NAMESPACE = "Bench/CloudFront"
QUERY = "metrics"
LEDGER_ID = "0123456789abcdef"
# Targets from issue 13.
TARGET_US_PER_DATUM = 30.0
TARGET_SPEEDUP = 10.0
# The job's datums per distribution-minute at 2 M lines (docs/BENCHMARKS.md: 6,746 datums over 480 minutes).
RESULT_TYPES = ("Hit", "Miss", "RefreshHit", "Error")
STATUS_CLASSES = ("2xx", "3xx", "4xx")
PER_MINUTE = 1 + len(RESULT_TYPES) + len(STATUS_CLASSES) + 1 + 3 + 2


def job_like_datums(minutes: int, seed: int = 13) -> list[Datum]:
    """What the job publishes per distribution-minute with the default metric groups: Requests (total, by
    ResultType, by StatusClass), BytesDownloaded, TimeTakenP50/P90/P99, and TimeTaken and TimeToFirstByte as
    Values/Counts histograms (of 100 and 60 buckets), over 2 distributions."""
    rng = random.Random(seed)
    # ending an hour ago: within what CloudWatch takes (two weeks back, two hours ahead)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=minutes // 2 + 60)
    datums: list[Datum] = []
    for m in range(minutes):
        dist = ("E2BENCHA", "E2BENCHB")[m % 2]
        base = (("DistributionId", dist),)
        at = start + timedelta(minutes=m // 2)
        total = float(rng.randint(3000, 5000))
        datums.append(Datum("Requests", base, at, Unit.COUNT, value=total))
        for name, kinds in (("ResultType", RESULT_TYPES), ("StatusClass", STATUS_CLASSES)):
            for kind in kinds:
                value = float(rng.randint(1, 3000))
                datums.append(Datum("Requests", (*base, (name, kind)), at, Unit.COUNT, value=value))
        datums.append(Datum("BytesDownloaded", base, at, Unit.BYTES, value=float(rng.randint(10**6, 10**9))))
        for p in ("P50", "P90", "P99"):
            datums.append(Datum(f"TimeTaken{p}", base, at, Unit.MILLISECONDS, value=rng.uniform(1, 900)))
        for metric, buckets in (("TimeTaken", 100), ("TimeToFirstByte", 60)):
            values = tuple(sorted(rng.sample(range(1, 30_000), buckets)))
            counts = tuple(float(rng.randint(1, 400)) for _ in values)
            datums.append(Datum(metric, base, at, Unit.MILLISECONDS, values=tuple(map(float, values)), counts=counts))
    return datums


def _template() -> Batch:
    files = (LogFile("E2BENCHA", datetime(2026, 11, 28, 20, tzinfo=UTC), "/logs/a.gz", 1, Layout.PLAIN),)
    return Batch("template", Target(QUERY, "cloudwatch", NAMESPACE), files, (), 0, 0)


def data_limits() -> RequestLimits:
    """The runner's _data_limits: one datum and the widest receipt's bytes kept for the receipt."""
    latest = datetime(2000, 1, 1, 0, 0, 59, 999_000, tzinfo=UTC)
    receipt = datum_bytes(receipt_datum("0" * 16, QUERY, latest))
    return RequestLimits(MAX_DATUMS_PER_REQUEST - 1, MAX_REQUEST_BYTES - receipt)


class Run:
    """Publishes datums by either path: `new` through a client made as the job makes it (job/adapters/aws.py:
    the sink gzips at GZIP_LEVEL), `old` through boto3's default client (botocore gzips at level 9), as before."""

    def __init__(self, counter: WireCounter, old_counter: WireCounter) -> None:
        self.sink = CloudWatchSink(counter.client, key="cloudwatch")
        self.old_sink = CloudWatchSink(old_counter.client, key="cloudwatch")
        self.last: datetime | None = None
        self.batches = 0
        self.body_sizes: list[int] = []  # the new path's last batch: each request's body bytes
        self.sent = _template()  # the new path's last batch

    def _attempt(self) -> datetime:
        self.last = next_attempt_time(datetime.now(UTC), self.last)
        return self.last

    def new(self, datums: Sequence[Datum], ledger: LocalLedger) -> int:
        now = datetime.now(UTC)
        check_datums(datums, now)
        requests, fragments = pack_wire(datums, data_limits())
        template = _template()
        self.batches += 1
        batch = Batch(f"new-{self.batches}", template.target, template.files, requests, 0, 0, fragments=fragments)
        ledger.begin(batch)
        for index in range(len(batch.requests)):
            at = self._attempt()
            ledger.mark_in_flight(batch.id, index, at)
            receipt = receipt_datum(LEDGER_ID, QUERY, at)
            self.sink.put_wire(
                NAMESPACE, (*batch.requests[index], receipt), (*batch.fragments[index], wire.fragment(receipt))
            )
            ledger.mark_sent(batch.id, index)
        ledger.commit(batch.id, now)
        self.sent = batch
        return len(batch.requests)

    def old(self, datums: Sequence[Datum], ledger: LocalLedger) -> int:
        now = datetime.now(UTC)
        check_datums(datums, now)
        limits = data_limits()
        requests = legacy_pack(datums, limits.max_datums, limits.max_bytes)
        self.batches += 1
        batch = legacy_batch(f"old-{self.batches}", _template(), requests)
        ledger.begin(batch)
        for index in range(len(batch.requests)):
            at = self._attempt()
            ledger.mark_in_flight(batch.id, index, at)
            self.old_sink.put(NAMESPACE, (*batch.requests[index], receipt_datum(LEDGER_ID, QUERY, at)))
            ledger.mark_sent(batch.id, index)
        ledger.commit(batch.id, now)
        return len(batch.requests)


def _cpu() -> float:
    return time.process_time()


def measure(path: Callable[[Sequence[Datum], LocalLedger], int], datums: Sequence[Datum]) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as folder:
        ledger = LegacyLedger(Path(folder)) if path.__name__ == "old" else LocalLedger(Path(folder))
        gc.collect()
        start = _cpu()
        requests = path(datums, ledger)
        seconds = _cpu() - start
        ledger.close()
    return seconds, requests


def run(sizes: Sequence[int], reps: int) -> list[dict[str, Any]]:
    results = []
    for minutes in sizes:
        datums = job_like_datums(minutes)
        # the new path's bodies are counted from its fragments, outside the timed part (not by gunzipping them)
        counter, old_counter = WireCounter(count_bodies=False), WireCounter(as_wired=False)
        runner = Run(counter, old_counter)
        measure(runner.new, datums[:50])  # imports, first-call caches
        measure(runner.old, datums[:50])
        old_s: list[float] = []
        new_s: list[float] = []
        old_requests = new_requests = 0
        old_wire: list[int] = []
        for _ in range(reps):
            old_counter.wire_bytes.clear()
            seconds, old_requests = measure(runner.old, datums)
            old_wire.append(sum(old_counter.wire_bytes))
            old_s.append(seconds)
            counter.wire_bytes.clear()
            seconds, new_requests = measure(runner.new, datums)
            new_s.append(seconds)
        receipt = len(wire.fragment(receipt_datum(LEDGER_ID, QUERY, datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC))))
        runner.body_sizes = [wire.body_size(NAMESPACE, [*map(len, r), receipt]) for r in runner.sent.fragments]
        n = len(datums)
        body_total = sum(runner.body_sizes)
        results.append(
            {
                "datums": n,
                "old_us": statistics.median(old_s) / n * 1e6,
                "new_us": statistics.median(new_s) / n * 1e6,
                "old_range": (min(old_s) / n * 1e6, max(old_s) / n * 1e6),
                "new_range": (min(new_s) / n * 1e6, max(new_s) / n * 1e6),
                "old_requests": old_requests,
                "new_requests": new_requests,
                "floor_count": math.ceil(n / MAX_DATUMS_PER_REQUEST),
                "floor_data": math.ceil(n / (MAX_DATUMS_PER_REQUEST - 1)),
                "floor_bytes": math.ceil(body_total / MAX_REQUEST_BYTES),
                "body_bytes": body_total,
                "wire_bytes": sum(counter.wire_bytes),
                "old_wire_bytes": statistics.median(old_wire) if old_wire else 0,
                "max_body": max(runner.body_sizes, default=0),
            }
        )
    return results


def report(results: Sequence[dict[str, Any]], reps: int, command: str, load: tuple[str, str]) -> str:
    facts = machine_facts()
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{command}` at commit {facts['commit']}: {reps} "
        "repetitions, the two paths taking turns within each; each figure is the median CPU time per datum, "
        "min–max in brackets.",
        "",
        f"Machine: {facts['cores']} cores ({facts['cpu']}), {facts['memory']} RAM, {facts['os']}; Python "
        f"{facts['python']}, boto3 {facts['boto3']} / botocore {facts['botocore']}. Load average before "
        f"{load[0]}, after {load[1]} (the machine is shared: ratios within one run are what counts).",
        "",
        "| Datums | Before wire.py (µs/datum) | Now (µs/datum) | Speed-up | Requests before | Requests now | "
        "Floor: ceil(n/1000) | Floor with receipts: ceil(n/999) | Bytes floor: ceil(body/1 MB) | "
        "Body / on the wire (gzip) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        old = f"{r['old_us']:.1f} ({r['old_range'][0]:.1f}–{r['old_range'][1]:.1f})"
        new = f"{r['new_us']:.1f} ({r['new_range'][0]:.1f}–{r['new_range'][1]:.1f})"
        floors = f"{r['floor_count']} | {r['floor_data']} | {r['floor_bytes']}"
        sizes = f"{r['body_bytes'] / 1e3:,.0f} kB / {r['wire_bytes'] / 1e3:,.0f} kB"
        sizes += f" (before: {r['old_wire_bytes'] / 1e3:,.0f} kB)"
        lines.append(
            f"| {r['datums']:,} | {old} | {new} | {r['old_us'] / r['new_us']:.1f}× | {r['old_requests']} | "
            f"{r['new_requests']} | {floors} | {sizes} (largest body {r['max_body'] / 1e3:,.0f} kB) |"
        )
    floor_ok = all(r["new_requests"] == max(r["floor_data"], r["floor_bytes"]) for r in results)
    us_ok = all(r["new_us"] <= TARGET_US_PER_DATUM for r in results)
    speed_ok = all(r["old_us"] / r["new_us"] >= TARGET_SPEEDUP for r in results)
    verdict = {True: "**met**", False: "**not met**"}
    lines += [
        "",
        "| Target | Verdict |",
        "|---|---|",
        f"| ≤ {TARGET_US_PER_DATUM:.0f} µs CPU per datum | {verdict[us_ok]} |",
        f"| ≥ {TARGET_SPEEDUP:.0f}× faster than the path before, same run | {verdict[speed_ok]} |",
        "| requests at the floor: ceil(n/999) datums (a receipt rides in every request), or the 1 MB bound if that "
        f"binds first | {verdict[floor_ok]} |",
        "",
        "Datums: the job's mix per distribution-minute (Requests total, by 4 result types and 3 status classes, "
        "BytesDownloaded, 3 percentiles, TimeTaken and TimeToFirstByte histograms of 100 and 60 buckets), 14 per "
        "minute; 6,720 is about what 2 M lines over 2 distributions × 4 hours give. Timed: check_datums, packing, "
        "the journal (LocalLedger.begin), per request mark_in_flight, PutMetricData through the boto3 client up to "
        "the network (gzip and SigV4 included), mark_sent, and commit.",
    ]
    return "\n".join(lines)


def write_docs(section: str) -> None:
    text = DOCS.read_text(encoding="utf-8")
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + f"\n\n## The publish path\n\n{block}\n"
    DOCS.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench.publish", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer datums and repetitions; writes no docs")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(arguments)
    per_minute = PER_MINUTE
    sizes = [140 // per_minute * 10] if args.quick else [6_720 // per_minute, 20_160 // per_minute]
    reps = 2 if args.quick else args.reps
    load_before = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    results = run(sizes, reps)
    load_after = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    command = f".venv/bin/python -m bench.publish {' '.join(arguments)}".strip()
    section = report(results, reps, command, (load_before, load_after))
    print(section)
    if not args.quick:
        write_docs(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
