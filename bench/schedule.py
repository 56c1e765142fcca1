"""A scheduled run that finds nothing new: run time and LIST requests of a recent-hours and a full listing.

S3 is moto over HTTP (its own process); both ledgers; 10,000 recorded files per distribution over a 26-hour
look-back. Writes the block between the bench-schedule markers of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from job.core.batch import Batch
from job.core.cost import S3_USD_PER_1000_LIST, CostInput, listing_requests_per_day
from job.core.files import Layout, LogFile, LogFormat
from job.core.schedule import ListingKind
from job.core.window import HourWindow, floor_hour
from job.demo.moto_server import moto_server
from job.handler import DEFAULT_LOOKBACK, mark_full_listing, run_window
from job.wiring import Clients, Settings, build_job

DOCS = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
BEGIN = "<!-- bench-schedule:begin -->"
END = "<!-- bench-schedule:end -->"
FILES_PER_DISTRIBUTION = int(os.environ.get("BENCH_SCHEDULE_FILES", "10000"))  # a smaller figure for a quick look
DISTRIBUTIONS = ("E1BENCHSCHED", "E2BENCHSCHED", "E3BENCHSCHED")
RUNS = int(os.environ.get("BENCH_SCHEDULE_RUNS", "5"))
BUCKET, STATE_BUCKET, PREFIX = "bench-logs", "bench-state", "cf/"
# Targets of the brief: a run that finds nothing new under 2 s; a recent-hours run at most 4 LISTs per distribution.
TARGET_SECONDS = 2.0
COMMAND = " ".join(
    [f"{name}={os.environ[name]}" for name in ("BENCH_SCHEDULE_FILES", "BENCH_SCHEDULE_RUNS") if name in os.environ]
    + [".venv/bin/python -m bench.schedule"]
)
TARGET_LISTS_PER_DISTRIBUTION = 4
# template.yml's ScheduleExpression default: rate(5 minutes); its LookbackHours default: 26.
TEMPLATE_SCHEDULE_MINUTES = 5


def _files(now: datetime) -> list[LogFile]:
    window = run_window(now, DEFAULT_LOOKBACK // timedelta(hours=1))
    hours = list(window.hours())
    files = []
    for distribution_id in DISTRIBUTIONS:
        for n in range(FILES_PER_DISTRIBUTION):
            hour = hours[n % len(hours)]
            name = f"{distribution_id}.{hour:%Y-%m-%d-%H}.{n:05d}.gz"
            key = PREFIX + Layout.PLAIN.partition_prefix(distribution_id, hour) + name
            files.append(LogFile(distribution_id, hour, f"s3://{BUCKET}/{key}", 100, Layout.PLAIN))
    return sorted(files)


def _upload(s3: Any, files: Sequence[LogFile]) -> None:
    def put(log_file: LogFile) -> None:
        s3.put_object(Bucket=BUCKET, Key=log_file.uri.removeprefix(f"s3://{BUCKET}/"), Body=b"x" * 100)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, files))


def _settings(endpoint: str, state: str, sink: Path, distributions: tuple[str, ...], window: HourWindow) -> Settings:
    return Settings(
        logs=f"s3://{BUCKET}/{PREFIX}", window=window, scheduled=True, state=state, sink=f"jsonl:{sink}",
        layout=Layout.PLAIN, log_format=LogFormat.LEGACY, distributions=distributions, s3_endpoint_url=endpoint,
        region="us-east-1", owner="bench",
    )  # fmt: skip


def _record(job: Any, files: Sequence[LogFile], at: datetime) -> None:
    """Records the files as published through the ledger's own journal and commit, a batch per distribution."""
    for distribution_id in DISTRIBUTIONS:
        mine = tuple(f for f in files if f.distribution_id == distribution_id)
        batch = Batch(f"bench-{distribution_id}", job.target, mine, (), 0, 0)
        with job.ledger.lock():
            job.ledger.begin(batch)
            job.ledger.commit(batch.id, at)


def _measure(
    endpoint: str, state: str, sink: Path, count: int, now: datetime, kind: ListingKind
) -> tuple[float, float, int]:
    """(median seconds, median LISTs per distribution, files listed) of RUNS runs of one kind."""
    seconds, lists, listed = [], [], 0
    window = run_window(now, DEFAULT_LOOKBACK // timedelta(hours=1))
    for _ in range(RUNS):
        clients = Clients("us-east-1", None, endpoint)
        job = build_job(_settings(endpoint, state, sink, DISTRIBUTIONS[:count], window), clients=clients)
        # a full listing is due when the last one is of an earlier clock hour; done when it is of this one
        mark = now - timedelta(hours=1) if kind is ListingKind.FULL else now
        job.ledger.set_last_full_listing(job.target, mark)
        counter = ListCounter()
        clients.client("s3").meta.events.register("before-call.s3.ListObjectsV2", counter)
        started = time.perf_counter()
        report = job.run(now)
        mark_full_listing(job, report, now)
        seconds.append(time.perf_counter() - started)
        assert report.listing is kind and report.files_new == 0, (report.listing, report.files_new)
        lists.append(counter.calls / count)
        listed = report.files_listed
    return statistics.median(seconds), statistics.median(lists), listed


class ListCounter:
    """Counts the ListObjectsV2 requests of a client (a botocore event hook)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, **_: Any) -> None:
        self.calls += 1


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def main() -> int:
    load_before = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    now = floor_hour(datetime.now(UTC)) + timedelta(minutes=7)
    files = _files(now)
    rows = []
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        s3 = Clients("us-east-1", None, endpoint).client("s3")
        for bucket in (BUCKET, STATE_BUCKET):
            s3.create_bucket(Bucket=bucket)
        started = time.perf_counter()
        _upload(s3, files)
        print(f"uploaded {len(files):,} objects in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        sink = Path(tmp) / "out.jsonl"
        window = run_window(now, DEFAULT_LOOKBACK // timedelta(hours=1))
        for ledger_name, state in (("sqlite", str(Path(tmp) / "state")), ("S3", f"s3://{STATE_BUCKET}/ledger/")):
            job = build_job(
                _settings(endpoint, state, sink, DISTRIBUTIONS, window), clients=Clients("us-east-1", None, endpoint)
            )
            _record(job, files, now - timedelta(hours=1))
            for count in (1, len(DISTRIBUTIONS)):
                for kind in (ListingKind.RECENT, ListingKind.FULL):
                    median, lists, listed = _measure(endpoint, state, sink, count, now, kind)
                    rows.append((ledger_name, count, kind, median, lists, listed))
                    print(rows[-1], file=sys.stderr)
    template = CostInput(requests_per_day=11_050_000, distributions=3, schedule_minutes=TEMPLATE_SCHEDULE_MINUTES)
    per_day = listing_requests_per_day(template)
    old_per_day = template.runs_per_day * (template.distributions * (template.lookback_hours + 1) + 1)
    lines = [
        f"Command: `{COMMAND}` (the extra line of `make bench` runs it with the defaults); commit "
        f"{_git('rev-parse', '--short', 'HEAD') or '?'}; {os.cpu_count()} cores (nproc), load average "
        f"{load_before} before, {'{:.2f} {:.2f} {:.2f}'.format(*os.getloadavg())} after; {datetime.now(UTC):%Y-%m-%d}.",
        "",
        f"A scheduled run that finds nothing new: {FILES_PER_DISTRIBUTION:,} recorded files per distribution over the "
        f"{DEFAULT_LOOKBACK // timedelta(hours=1)}-hour look-back (27 partition hours), S3 on moto over HTTP, median "
        f"of {RUNS} runs. Targets: under {TARGET_SECONDS:.0f} s; at most {TARGET_LISTS_PER_DISTRIBUTION} LIST "
        "requests per distribution on a recent-hours run (most runs).",
        "",
        "| ledger | distributions | listing | files listed | median run | LIST / distribution | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for ledger_name, count, kind, median, lists, listed in rows:
        ok = median < TARGET_SECONDS and (kind is ListingKind.FULL or lists <= TARGET_LISTS_PER_DISTRIBUTION)
        lines.append(
            f"| {ledger_name} | {count} | {kind.value} | {listed:,} | {median:.2f} s | {lists:g} | "
            f"{'meets' if ok else 'misses'} the target |"
        )
    lines += [
        "",
        f"At the template's schedule (rate({TEMPLATE_SCHEDULE_MINUTES} minutes), 26-hour look-back, 3 distributions, "
        f"job/core/cost.py's 12 files per hour): {per_day:,} LIST requests a day for the listing (was {old_per_day:,} "
        f"with a LIST per partition hour), ${per_day * 30 / 1000 * S3_USD_PER_1000_LIST:.2f} a month at "
        f"${S3_USD_PER_1000_LIST} per 1,000 LIST requests (us-east-1, https://aws.amazon.com/s3/pricing/; was "
        f"${old_per_day * 30 / 1000 * S3_USD_PER_1000_LIST:.2f}).",
    ]
    write_docs("\n".join(lines))
    print("\n".join(lines))
    return 0


def write_docs(section: str) -> None:
    text = DOCS.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n## Listing schedule\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOCS.write_text(f"{head}{BEGIN}\n{section}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
