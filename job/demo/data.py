"""The demo's sample logs, and an independent count of their requests in plain Python to check the job against."""

from __future__ import annotations

import gzip
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from job.demo.sample_logs import SampleFile, generate, log_line, write_log_file

# Distribution id -> requests per hour: a busy site, an API, an image host, so the chart shows three scales.
DISTRIBUTIONS: dict[str, int] = {"E1WWWEXAMPLE01": 6000, "E2APIEXAMPLE02": 3000, "E3IMGEXAMPLE03": 1200}
HOURS = 4
# A result type the job has never heard of: it must be published as ResultType=Other, never fail the run.
UNKNOWN_RESULT_TYPE = "FutureResultType"
RESULT_TYPE_FIELD = 13
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME = re.compile(r"\d{2}:\d{2}:\d{2}")


@dataclass(frozen=True)
class LateFile:
    """A file held back from the first run; it belongs to an hour already published."""

    distribution_id: str
    hour: datetime
    lines: int
    seed: int


@dataclass(frozen=True)
class SampleSet:
    files: list[SampleFile]
    first_hour: datetime
    midnight: datetime
    last_hour: datetime
    late: LateFile

    @property
    def span(self) -> tuple[datetime, datetime]:
        """The minutes the requests fall in, [first, end): a partition's last requests may finish in the first
        seconds of the next hour."""
        return self.first_hour, self.last_hour + timedelta(hours=1, minutes=1)


def demo_midnight(now: datetime) -> datetime:
    """The latest midnight UTC at least three hours ago: the data straddles it and all of it is in the past."""
    return (now - timedelta(hours=3)).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _rewrite_with_oddities(path: Path, rng: random.Random, when: datetime, host: str) -> None:
    """Append what real logs occasionally hold: a truncated line, a line with no date, an unknown result type."""
    with gzip.open(path, "rt", encoding="utf-8") as source:
        text = source.read()
    cut = "\t".join(log_line(rng, when, host).split("\t")[:8])  # a line cut short: no result type
    no_date = "\t".join(["-", "-", *log_line(rng, when, host).split("\t")[2:]])
    unknown = []
    for _ in range(5):
        fields = log_line(rng, when + timedelta(minutes=rng.randint(0, 59)), host).split("\t")
        fields[RESULT_TYPE_FIELD] = UNKNOWN_RESULT_TYPE
        unknown.append("\t".join(fields))
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write(text + "\n".join([cut, no_date, *unknown]) + "\n")


def write_samples(root: Path, now: datetime) -> SampleSet:
    """Every distribution over HOURS hours across midnight; one file gets oddities; one late file is planned."""
    midnight = demo_midnight(now)
    first_hour = midnight - timedelta(hours=HOURS // 2)
    files: list[SampleFile] = []
    for seed, (distribution_id, per_hour) in enumerate(DISTRIBUTIONS.items(), start=1):
        files += generate(root, [distribution_id], first_hour, HOURS, per_hour, seed=seed, files_per_hour=2)
    odd = files[len(files) // 2]
    _rewrite_with_oddities(odd.path, random.Random(99), odd.hour, "odd.cloudfront.net")
    late_distribution = list(DISTRIBUTIONS)[1]
    late = LateFile(late_distribution, first_hour, DISTRIBUTIONS[late_distribution] // 2, seed=42)
    return SampleSet(files, first_hour, midnight, first_hour + timedelta(hours=HOURS - 1), late)


def write_late_file(root: Path, late: LateFile) -> SampleFile:
    return write_log_file(root, late.distribution_id, late.hour, late.lines, random.Random(late.seed), suffix="late")


@dataclass(frozen=True)
class LineCount:
    requests: int
    malformed: int

    def __add__(self, other: LineCount) -> LineCount:
        return LineCount(self.requests + other.requests, self.malformed + other.malformed)


def _is_request(line: str) -> bool:
    """The query's rule, restated: a parseable date and time and a result type make a request."""
    fields = line.split("\t")
    if len(fields) <= RESULT_TYPE_FIELD or fields[RESULT_TYPE_FIELD] in ("", "-"):
        return False
    if not (_DATE.fullmatch(fields[0]) and _TIME.fullmatch(fields[1])):
        return False
    try:
        datetime.fromisoformat(f"{fields[0]}T{fields[1]}")  # 3x faster than strptime, and checks the ranges
    except ValueError:
        return False
    return True


def count_file(path: Path) -> LineCount:
    """Requests and malformed lines in a legacy log file, read without the job's code (no DuckDB, no SQL)."""
    requests = malformed = 0
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines):
            if number < 2:  # the two header lines; a '#' further down is data
                continue
            if _is_request(line.rstrip("\n")):
                requests += 1
            else:
                malformed += 1
    return LineCount(requests, malformed)


def count_lines(paths: Iterable[Path]) -> LineCount:
    return sum((count_file(p) for p in paths), LineCount(0, 0))
