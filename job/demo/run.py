"""`cfmetrics demo`: sample logs -> the job -> CloudWatch (a local moto server) -> read back, check, table, chart."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from job.core.errors import CfMetricsError, ConfigError
from job.core.metrics import DEFAULT_NAMESPACE, DOCUMENTED_RESULT_TYPES, OTHER_RESULT_TYPE
from job.demo.data import (
    DISTRIBUTIONS,
    LateFile,
    LineCount,
    SampleSet,
    count_file,
    count_lines,
    write_late_file,
    write_samples,
)
from job.demo.readback import DistributionMetrics, read_back, result_types_listed
from job.runner import RunReport

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient

CHART_NAME = "cloudfront-metrics.png"
# Only these are removed when the demo starts over: --out may be a folder holding other things.
OWN_FOLDERS = ("logs", "state")
REGION = "us-east-1"
# Real CloudWatch can take a little while before GetMetricData shows what PutMetricData accepted.
READ_BACK_RETRIES = 12
TABLE_MINUTES = 20


def _say(message: str = "") -> None:
    print(message, flush=True)


def _loud(message: str) -> None:
    _say(f"{'!' * 78}\n{message}\n{'!' * 78}")


def _expect(condition: bool, message: str) -> bool:
    if not condition:
        _loud(f"MISMATCH: {message}")
    return condition


def _job_log(message: str) -> None:
    print(f"    | {message}", file=sys.stderr, flush=True)


def _client(endpoint_url: str, local: bool) -> CloudWatchClient:
    import boto3

    from job.adapters import aws

    if local:
        # moto takes any credentials; fixed dummies keep the user's real ones out of the demo.
        made = aws.session(REGION, access_key="testing", secret_key="testing")
        return aws.client(made, "cloudwatch", endpoint_url)  # type: ignore[no-any-return]
    if boto3.session.Session().get_credentials() is None:
        raise ConfigError(
            f"--endpoint-url {endpoint_url}: no AWS credentials found; for a moto server of your own, "
            "set AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing"
        )
    made = aws.session(boto3.session.Session().region_name or REGION)
    return aws.client(made, "cloudwatch", endpoint_url)  # type: ignore[no-any-return]


@contextmanager
def _endpoint(endpoint_url: str | None) -> Iterator[tuple[str, bool]]:
    if endpoint_url is not None:
        _say(f"CloudWatch: {endpoint_url} (--endpoint-url), credentials and region from the usual AWS configuration")
        yield endpoint_url, False
        return
    from job.demo.moto_server import moto_server

    started = time.monotonic()
    with moto_server() as url:
        _say(f"CloudWatch: local moto server at {url}, started by the demo ({time.monotonic() - started:.1f} s)")
        yield url, True
    _say("moto server stopped")


def _fresh(out: Path) -> None:
    for name in OWN_FOLDERS:
        shutil.rmtree(out / name, ignore_errors=True)
    (out / CHART_NAME).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


@dataclass
class Demo:
    out: Path
    client: CloudWatchClient
    endpoint_url: str
    samples: SampleSet
    baseline: int = 0
    counted: dict[Path, LineCount] = field(default_factory=dict)
    listed: dict[str, set[str]] | None = None

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    def run_job(self, title: str) -> RunReport:
        """One run exactly as `cfmetrics run --logs OUT/logs --state OUT/state --endpoint-url URL` does it."""
        from job.core.window import effective_window
        from job.wiring import Clients, Settings, build_job

        _say(f"\n== {title} ==")
        started = time.monotonic()
        now = datetime.now(UTC)
        settings = Settings(logs=str(self.logs), state=str(self.out / "state"), endpoint_url=self.endpoint_url)
        window = effective_window(None, None, now, checks_age=settings.checks_timestamp_age)
        clients = Clients(REGION, self.endpoint_url, None, made={"cloudwatch": self.client})
        job = build_job(replace(settings, window=window), clients=clients, log=_job_log)
        report = job.run(now)
        _say(f"done in {time.monotonic() - started:.1f} s: {report.summary()}")
        return report

    def read(self) -> dict[str, DistributionMetrics]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            if self.listed is None:
                # ListMetrics is slow on moto and the set of ResultType values changes little: ask it once.
                self.listed = result_types_listed(self.client, DEFAULT_NAMESPACE)
            start, end = self.samples.span
            return read_back(self.client, DEFAULT_NAMESPACE, list(DISTRIBUTIONS), start, end, self.listed)
        except (BotoCoreError, ClientError) as exc:
            raise CfMetricsError(f"reading the metrics back from {self.endpoint_url} failed: {exc}") from exc

    def expected(self) -> LineCount:
        total = LineCount(0, 0)
        for path in sorted(self.logs.rglob("*.gz")):
            if path not in self.counted:
                self.counted[path] = count_file(path)
            total += self.counted[path]
        return total

    def check(self, local: bool) -> tuple[bool, dict[str, DistributionMetrics]]:
        """Compare what CloudWatch holds with an independent count of the lines in the log files."""
        expected = self.expected()
        for attempt in range(1 if local else READ_BACK_RETRIES):
            started = time.monotonic()
            metrics = self.read()
            _say(f"read back with GetMetricData in {time.monotonic() - started:.1f} s")
            total = sum(m.total() for m in metrics.values()) - self.baseline
            by_type = sum(m.total_by_type() for m in metrics.values()) - self.baseline
            if total == by_type == expected.requests:
                held = f"{total + self.baseline:,} - {self.baseline:,} held before = " if self.baseline else ""
                _say(
                    f"CloudWatch total = {held}{total:,} requests = lines in the logs: OK "
                    f"({expected.malformed} malformed lines left out; Requests by ResultType add up to the same)"
                )
                return True, metrics
            if attempt + 1 < (1 if local else READ_BACK_RETRIES):
                time.sleep(5)
        _loud(
            f"MISMATCH: CloudWatch total = {total:,} requests (by ResultType: {by_type:,}), "
            f"but the logs hold {expected.requests:,} requests"
        )
        return False, metrics


def _minute_table(metrics: DistributionMetrics, distribution_id: str, around: datetime) -> list[str]:
    main = ["Hit", "RefreshHit", "Miss", "Error"]
    head = f"{'minute UTC':<16} {'requests':>8} " + " ".join(f"{t:>10}" for t in main)
    head += f" {'other':>6} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7}"
    lines = [f"Per-minute metrics read back from CloudWatch, {distribution_id}, around midnight UTC:", head]
    first = around - timedelta(minutes=TABLE_MINUTES // 2)
    for step in range(TABLE_MINUTES):
        minute = first + timedelta(minutes=step)
        requests = metrics.requests.get(minute, 0.0)
        counts = [metrics.by_type.get(t, {}).get(minute, 0.0) for t in main]
        other = requests - sum(counts)
        ms = [metrics.percentiles.get(p, {}).get(minute) for p in ("p50", "p90", "p99")]
        cells = " ".join(f"{c:>10,.0f}" for c in counts)
        timing = " ".join(f"{v:>7,.0f}" if v is not None else f"{'-':>7}" for v in ms)
        lines.append(f"{minute:%Y-%m-%d %H:%M} {requests:>8,.0f} {cells} {other:>6,.0f} {timing}")
    return lines


def _totals_table(metrics: dict[str, DistributionMetrics]) -> list[str]:
    order = ["Hit", "RefreshHit", "Miss", "Redirect", "Error", "LimitExceeded", "CapacityExceeded"]
    order += [*sorted(DOCUMENTED_RESULT_TYPES - set(order)), OTHER_RESULT_TYPE]
    short = {"LimitExceeded": "LimitExc", "CapacityExceeded": "CapacityExc", "LambdaExecutionError": "LambdaErr"}
    names = [short.get(t, t) for t in order]
    widths = [max(len(n), 6) for n in names]
    head = f"{'distribution':<15} {'requests':>8} " + " ".join(f"{n:>{w}}" for n, w in zip(names, widths, strict=True))
    lines = ["Totals by ResultType read back from CloudWatch:", head]
    for distribution_id, m in metrics.items():
        sums = [sum(m.by_type.get(t, {}).values()) for t in order]
        cells = " ".join(f"{v:>{w},.0f}" for v, w in zip(sums, widths, strict=True))
        lines.append(f"{distribution_id:<15} {m.total():>8,} {cells}")
    return lines


def run_demo(out: Path, endpoint_url: str | None = None) -> int:
    """The whole demo; 0 when CloudWatch holds exactly the requests of the logs after every run, 1 otherwise."""
    started = time.monotonic()
    out = out.resolve()
    _fresh(out)
    _say(f"== cfmetrics demo: output in {out} ==")
    samples = write_samples(out / "logs", datetime.now(UTC))
    written = count_lines(f.path for f in samples.files)
    late = samples.late
    _say(
        f"sample logs: {len(DISTRIBUTIONS)} distributions, partition hours {samples.first_hour:%Y-%m-%d %H}:00 to "
        f"{samples.last_hour:%Y-%m-%d %H}:59 UTC (across midnight), {len(samples.files)} files, "
        f"{written.requests:,} requests + {written.malformed} malformed lines ({time.monotonic() - started:.1f} s)"
    )
    _say(f"held back: 1 more file for {late.distribution_id}, hour {late.hour:%H}:00, delivered late after run 1")
    ok = True
    with _endpoint(endpoint_url) as (url, local):
        demo = Demo(out, _client(url, local), url, samples)
        if not local:
            demo.baseline = sum(m.total() for m in demo.read().values())
            if demo.baseline:
                _say(f"the endpoint already holds {demo.baseline:,} requests of these minutes; checking the increase")
        demo.run_job("run 1: publish every file")
        good, before = demo.check(local)
        ok &= good

        late_file = write_late_file(demo.logs, late)
        delay = datetime.now(UTC) - late.hour
        _say(
            f"\n== a late file arrives: {late_file.path.name}, {late_file.lines:,} lines of hour {late.hour:%H}:00, "
            f"{delay.total_seconds() / 3600:.0f} h after that hour =="
        )
        report = demo.run_job("run 2: only the late file is new")
        ok &= _expect(report.files_new == 1, f"run 2 took {report.files_new} new files; expected only the late one")
        good, after = demo.check(local)
        ok &= good
        ok &= _late_delta(before, after, late, count_file(late_file.path).requests)

        report = demo.run_job("run 3: nothing is new, nothing is published twice")
        ok &= _expect(report.requests == 0, f"run 3 sent {report.requests} PutMetricData requests; expected none")
        good, final = demo.check(local)
        ok &= good

        _say()
        busiest = next(iter(DISTRIBUTIONS))
        for line in [*_minute_table(final[busiest], busiest, samples.midnight), "", *_totals_table(final)]:
            _say(line)
        _say(
            "\np50/p90/p99 are the Average of the job's TimeTakenP50/P90/P99 per minute: moto computes no percentile "
            "statistics.\nOn real CloudWatch, ask TimeTaken (published as Values/Counts) for p50, p90, p99: exact "
            "over any period,\nalso for minutes that a late file added to (the Average of two p50s is not a p50)."
        )
        from job.demo.chart import write_chart

        chart = write_chart(final, out / CHART_NAME, samples.span, samples.midnight, (late.distribution_id, late.hour))
        _say(f"\nchart: {chart}")
    _say(f"\n{'demo OK' if ok else 'demo FAILED'} in {time.monotonic() - started:.1f} s")
    return 0 if ok else 1


def _late_delta(
    before: dict[str, DistributionMetrics], after: dict[str, DistributionMetrics], late: LateFile, lines: int
) -> bool:
    """The late file must add to the minutes of its own hour (and the first seconds of the next) and nowhere else."""
    changed: list[tuple[str, datetime]] = []
    added = 0.0
    for distribution_id in after:
        old, new = before[distribution_id].requests, after[distribution_id].requests
        for minute in sorted(set(old) | set(new)):
            if old.get(minute) != new.get(minute):
                changed.append((distribution_id, minute))
                added += new.get(minute, 0.0) - old.get(minute, 0.0)
    end = late.hour + timedelta(hours=1, minutes=1)
    stray = [(d, m) for d, m in changed if d != late.distribution_id or not late.hour <= m < end]
    if not _expect(
        not stray and round(added) == lines,
        f"the late file of {lines:,} requests added {added:,.0f}, {len(stray)} of them outside its hour",
    ):
        return False
    _say(
        f"{late.distribution_id}: {len(changed)} minutes from {changed[0][1]:%H:%M} to {changed[-1][1]:%H:%M} grew by "
        f"{added:,.0f} requests in all; every other minute of every distribution is unchanged"
    )
    return True
