"""The benchmark behind docs/BENCHMARKS.md.

    make bench                          2 M and 8 M lines (+ 2 M dense), 3 repetitions, rewrites the docs' figures
    python -m bench.run --quick         200 k lines, a smoke run (prints, writes nothing)
    python -m bench.run --lines 2M,8M,16M --dense 0 --reps 5

Times, in one run and interleaved so that noise hits every method alike, the job as it really runs (listing,
ledger, DuckDB query, datums, packing, PutMetricData through boto3 up to the network, ledger commit) against a
naive per-line Python parse, a leaner one, DuckDB's bare count(*) scan with the engine's read_csv options, and
zcat. Every measurement is a fresh process, so each peak RSS is that measurement's own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.data import (
    DATA_DIR,
    SMALL_FILES_PER_HOUR,
    Dataset,
    ensure_dataset,
    ensure_dense_dataset,
    ensure_small_files_dataset,
)
from job.core.limits import MAX_REQUEST_BYTES

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "BENCHMARKS.md"
BEGIN = "<!-- bench:begin (written by `make bench`; edits between these markers are overwritten) -->"
END = "<!-- bench:end -->"
METHODS = ("job", "naive", "lean", "lines", "scan", "zcat")
LABELS = {
    "job": "**job** on DuckDB, end to end",
    "naive": "naive Python parse (strptime; 1 core)",
    "lean": "lean Python parse (no date parsing; 1 core)",
    "lines": "DuckDB bare scan, every line one string (the issue's baseline)",
    "scan": "DuckDB `count(*)` over the job's full read_csv (reference)",
    "zcat": "`zcat files > /dev/null` (1 core)",
}
# Targets from the issue.
TARGET_LINES_PER_S = 1_000_000
TARGET_VS_NAIVE = 3.0
TARGET_VS_SCAN = 1.5
TARGET_RSS_BYTES = 1 << 30
# "Flat": the biggest size's peak RSS at most this much above the smallest's.
FLAT_RSS_GROWTH = 1.25
# A shared machine: wait until at most QUIET_BUSY of it is busy before each measurement (at most QUIET_WAIT_S).
QUIET_BUSY = 0.10
QUIET_WAIT_S = 120.0
# --quiet-wait replaces QUIET_WAIT_S for one run (a machine that is never idle would wait it out every time).
_quiet_wait_s = [QUIET_WAIT_S]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    seconds: float
    cpu_seconds: float
    peak_rss_kb: int
    data: dict[str, Any] = field(default_factory=dict)
    # CPU time other processes used while this one ran, as a share of the machine (0: it had the machine alone).
    interference: float = 0.0


@dataclass
class Series:
    dataset: Dataset
    method: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def lines_per_s(self) -> float:
        return self.dataset.lines / self.median

    def median_of(self, key: str) -> float:
        return statistics.median(float(s.data[key]) for s in self.samples)

    @property
    def peak_rss_kb(self) -> int:
        return max(s.peak_rss_kb for s in self.samples)


Results = dict[tuple[str, str], Series]


def parse_count(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a line count such as 200k, 2M or 8000000")
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[match[2].lower()]
    return int(float(match[1]) * scale)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200k lines: a smoke run that writes no docs")
    parser.add_argument(
        "--lines",
        type=lambda s: [parse_count(p) for p in s.split(",")],
        help="comma-separated sizes spread over 2 distributions and many hours (default 2M,8M; 200k with --quick)",
    )
    parser.add_argument(
        "--dense",
        type=parse_count,
        help="also this many lines in one distribution-hour; 0: none (default 2M; 200k with --quick)",
    )
    parser.add_argument(
        "--small",
        type=parse_count,
        help=f"also this many lines in {SMALL_FILES_PER_HOUR} small files per distribution-hour, as a busy "
        "distribution's logs arrive; 0: none (default 2M; 200k with --quick)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=QUIET_WAIT_S,
        help=f"seconds to wait for an idle machine (default {QUIET_WAIT_S:.0f})",
    )
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every measurement (default 3)")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)} (default all)"
    )
    docs = parser.add_mutually_exclusive_group()
    docs.add_argument("--write-docs", dest="docs", action="store_true", default=None, help="update the docs")
    docs.add_argument("--no-docs", dest="docs", action="store_false", help="only print the results")
    args = parser.parse_args(argv)
    args.sizes = args.lines or ([200_000] if args.quick else [2_000_000, 8_000_000])
    if args.dense is None:
        args.dense = 200_000 if args.quick else 2_000_000
    if args.small is None:
        args.small = 200_000 if args.quick else 2_000_000
    _quiet_wait_s[0] = args.quiet_wait
    args.methods = [m for m in METHODS if m in args.methods.split(",")]
    if "job" not in args.methods:
        parser.error("--methods must include job: every other figure is relative to it")
    if args.docs is None:
        args.docs = not args.quick
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


# --- a shared machine ---------------------------------------------------------------------------------------


def _cpu_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores, from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def wait_for_quiet() -> float:
    """Wait (up to QUIET_WAIT_S) until the machine is nearly idle; returns the share busy when it started."""
    deadline = time.monotonic() + _quiet_wait_s[0]
    while True:
        busy0, total0 = _cpu_busy_seconds()
        time.sleep(0.5)
        busy1, total1 = _cpu_busy_seconds()
        share = (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0
        if share <= QUIET_BUSY or time.monotonic() > deadline:
            return share


# --- measuring ----------------------------------------------------------------------------------------------


def _wait(proc: subprocess.Popen[bytes]) -> tuple[int, Any]:
    """Reap a child with wait4, which gives that child's own rusage (peak RSS, CPU), unlike RUSAGE_CHILDREN."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage


def measure_worker(method: str, dataset: Dataset) -> Sample:
    command = [sys.executable, "-m", "bench.worker", method, str(dataset.root)]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    output = proc.stdout.read()
    proc.stdout.close()
    code, usage = _wait(proc)
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {code}")
    data: dict[str, Any] = json.loads(output)
    return Sample(float(data["seconds"]), float(data["cpu_seconds"]), int(usage.ru_maxrss), data)


def measure_zcat(dataset: Dataset) -> Sample:
    start = time.perf_counter()
    proc = subprocess.Popen(["zcat", *map(str, dataset.files)], stdout=subprocess.DEVNULL)
    code, usage = _wait(proc)
    seconds = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"zcat failed with exit code {code}")
    return Sample(seconds, usage.ru_utime + usage.ru_stime, int(usage.ru_maxrss))


def measure(method: str, dataset: Dataset) -> Sample:
    """One measurement, after waiting for a quiet machine; records how much other processes ran meanwhile."""
    wait_for_quiet()
    own0 = os.times()
    busy0, total0 = _cpu_busy_seconds()
    sample = measure_zcat(dataset) if method == "zcat" else measure_worker(method, dataset)
    busy1, total1 = _cpu_busy_seconds()
    own1 = os.times()
    own = sum(own1[:4]) - sum(own0[:4])  # this process and its reaped children (the measured one)
    if total1 > total0:
        sample.interference = max(0.0, (busy1 - busy0) - own) / (total1 - total0)
    return sample


def warm_page_cache(datasets: Sequence[Dataset]) -> None:
    """Read every distinct file once, so no method pays for the first read from disk."""
    seen: set[tuple[int, int]] = set()
    for dataset in datasets:
        for path in dataset.files:
            stat = path.stat()
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                with path.open("rb") as handle:
                    while handle.read(1 << 20):
                        pass


def cross_check(results: Results) -> list[str]:
    """Every method must have seen every line, and the job's figures must match the naive parse's."""
    problems = []
    for (label, method), s in results.items():
        for sample in s.samples:
            seen = sample.data.get("lines")
            if seen is not None and seen != s.dataset.lines:
                problems.append(f"{method} on {label} counted {seen:,} lines of {s.dataset.lines:,}")
        for reference_method in ("naive", "lean"):
            reference = results.get((label, reference_method))
            if method == "job" and reference and s.samples and reference.samples:
                job, other = s.samples[0].data, reference.samples[0].data
                for key in ("by_type", "minutes", "malformed"):
                    if job[key] != other[key]:
                        problems.append(f"on {label} the job's {key} {job[key]} != {reference_method}'s {other[key]}")
    return sorted(set(problems))


# --- facts and formatting -----------------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def machine_facts() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "?"
    with contextlib.suppress(ValueError, OSError):
        memory = f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB"
    dirty = _git("status", "--porcelain", "--", "job", "sql")
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "memory": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "duckdb": _version("duckdb"),
        "sqlglot": _version("sqlglot"),
        "boto3": _version("boto3"),
        "botocore": _version("botocore"),
        "commit": (_git("rev-parse", "--short", "HEAD") or "?")
        + (" with uncommitted changes in job/ or sql/" if dirty else ""),
    }


def _rss(kb: float) -> str:
    return f"{kb * 1024 / 1e6:,.0f} MB"


def _verdict(checks: Sequence[tuple[str, bool]]) -> str:
    if all(ok for _, ok in checks):
        return "**met**"
    if not any(ok for _, ok in checks):
        return "**not met**"
    met = ", ".join(label for label, ok in checks if ok)
    missed = ", ".join(label for label, ok in checks if not ok)
    return f"**met** on {met}; **not met** on {missed}"


def render(
    args: argparse.Namespace,
    datasets: Sequence[Dataset],
    results: Results,
    facts: dict[str, str],
    context: dict[str, str],
    problems: Sequence[str],
) -> str:
    methods: list[str] = args.methods
    out: list[str] = []
    add = out.append
    add(
        f"Measured {context['date']} with `{context['command']}` at commit {facts['commit']}: {args.reps} "
        f"repetition{'s' if args.reps > 1 else ''} of every measurement, interleaved; each figure is the median, "
        "min–max in brackets."
    )
    add("")
    add(
        f"Machine: {facts['cores']} cores ({facts['cpu']}), {facts['memory']} RAM, {facts['os']}; Python "
        f"{facts['python']}, duckdb {facts['duckdb']}, sqlglot {facts['sqlglot']}, boto3 {facts['boto3']} / "
        f"botocore {facts['botocore']}. DuckDB threads: {context['threads']} (its default: all cores)."
    )
    add("")
    add("Inputs:")
    add("")
    for dataset in datasets:
        add(f"- {dataset.description}.")
    add("")
    add("### Throughput")
    add("")
    add("| Input | Method | Time (s) | Lines/s | CPU (s) | Peak RSS |")
    add("|---|---|---:|---:|---:|---:|")
    for dataset in datasets:
        for method in methods:
            s = results[(dataset.label, method)]
            times = [x.seconds for x in s.samples]
            cpu = statistics.median(x.cpu_seconds for x in s.samples)
            add(
                f"| {dataset.label} | {LABELS[method]} | {s.median:.2f} ({min(times):.2f}–{max(times):.2f}) "
                f"| {s.lines_per_s / 1e6:.2f} M | {cpu:.2f} | {_rss(s.peak_rss_kb)} |"
            )
    add("")
    shares = sorted(x.interference for s in results.values() for x in s.samples)
    add(
        "Time is the work alone, in the measuring process (interpreter start and imports excluded; zcat: the whole "
        "process). CPU is the user + system time of that work, all threads. Peak RSS is the process's maximum "
        "resident set (wait4), interpreter and imports included. The machine is shared: each measurement waited "
        f"for it to be idle (≤ {QUIET_BUSY:.0%} busy, at most {_quiet_wait_s[0]:.0f} s); other processes then used a "
        f"median {statistics.median(shares):.0%}, at most {shares[-1]:.0%}, of its CPU while one ran (from "
        f"/proc/stat); load average before / after: {context['load_before']} / {context['load_after']}."
    )
    add("")
    add("### Targets")
    add("")
    job = {d.label: results[(d.label, "job")] for d in datasets}
    add("| Target | " + " | ".join(d.label for d in datasets) + " | Verdict |")
    add("|---|" + "---:|" * len(datasets) + "---|")

    def row(
        title: str, value: Callable[[Dataset], float], shown: Callable[[float], str], ok: Callable[[float], bool]
    ) -> None:
        values = {d.label: value(d) for d in datasets}
        cells = " | ".join(shown(values[d.label]) for d in datasets)
        add(f"| {title} | {cells} | {_verdict([(d.label, ok(values[d.label])) for d in datasets])} |")

    row(
        f"≥ {TARGET_LINES_PER_S / 1e6:.0f} M lines/s on {facts['cores']} cores",
        lambda d: job[d.label].lines_per_s,
        lambda v: f"{v / 1e6:.2f} M/s",
        lambda v: v >= TARGET_LINES_PER_S,
    )
    if "naive" in methods:
        row(
            f"≥ {TARGET_VS_NAIVE:.0f}× the naive parse (its time / the job's)",
            lambda d: results[(d.label, "naive")].median / job[d.label].median,
            lambda v: f"{v:.2f}×",
            lambda v: v >= TARGET_VS_NAIVE,
        )
    if "lines" in methods:
        row(
            f"≤ {TARGET_VS_SCAN}× the bare scan, every line one string (the job's time / the scan's)",
            lambda d: job[d.label].median / results[(d.label, "lines")].median,
            lambda v: f"{v:.2f}×",
            lambda v: v <= TARGET_VS_SCAN,
        )
    if "scan" in methods:
        cells = " | ".join(f"{job[d.label].median / results[(d.label, 'scan')].median:.2f}×" for d in datasets)
        add(f"| (reference) the job's time / `count(*)` over its full read_csv | {cells} | — |")
    row(
        "peak RSS of the job < 1 GB",
        lambda d: job[d.label].peak_rss_kb * 1024,
        lambda v: _rss(v / 1024),
        lambda v: v < TARGET_RSS_BYTES,
    )
    spread = [d for d in datasets if not d.label.endswith(("dense", "small files"))]
    if len(spread) > 1:
        small, big = spread[0], spread[-1]
        growth = job[big.label].peak_rss_kb / job[small.label].peak_rss_kb
        cells = " | ".join(f"{growth:.2f}× {small.label}" if d is big else "—" for d in datasets)
        add(
            f"| peak RSS flat as the input grows ({big.label} ≤ {FLAT_RSS_GROWTH}× {small.label}) | {cells} | "
            f"{_verdict([(big.label, growth <= FLAT_RSS_GROWTH)])} |"
        )
    for method, title in (("lean", "lean Python parse"), ("zcat", "zcat")):
        if method in methods:
            values = [results[(d.label, method)].median / job[d.label].median for d in datasets]
            add(f"| (reference) {title}: its time / the job's | " + " | ".join(f"{v:.2f}×" for v in values) + " | — |")
    add("")
    add("### Where the job's time goes")
    add("")
    add(
        "| Input | Total (s) | DuckDB query, rows to dicts (s) | PutMetricData through boto3 (s) "
        "| Rest: listing, datums, packing, ledger (s) | Query rows |"
    )
    add("|---|---:|---:|---:|---:|---:|")
    for dataset in datasets:
        s = job[dataset.label]
        query, publish = s.median_of("query_seconds"), s.median_of("publish_seconds")
        add(
            f"| {dataset.label} | {s.median:.2f} | {query:.2f} | {publish:.2f} | "
            f"{max(0.0, s.median - query - publish):.2f} | {s.median_of('query_rows'):,.0f} |"
        )
    add("")
    add("### PutMetricData per million log lines")
    add("")
    add(
        "| Input | Datums | Requests | Requests / M lines | Datums / M lines | Body / M lines "
        "| On the wire (gzip) / M lines | Largest request |"
    )
    add("|---|---:|---:|---:|---:|---:|---:|---|")
    for dataset in datasets:
        d = job[dataset.label].samples[0].data
        per_m = 1e6 / dataset.lines
        add(
            f"| {dataset.label} | {d['datums']:,} | {d['requests']:,} | {d['requests'] * per_m:.1f} | "
            f"{d['datums'] * per_m:,.0f} | {d['body_bytes'] * per_m / 1e3:,.0f} kB | "
            f"{d['wire_bytes'] * per_m / 1e3:,.0f} kB | {d['max_request_datums']:,} datums, "
            f"{d['max_body_bytes'] / 1e3:,.0f} kB body (packing's estimate {d['max_estimate_bytes'] / 1e3:,.0f} kB "
            f"of its {MAX_REQUEST_BYTES / 1e3:,.0f} kB budget) |"
        )
    add("")
    content_type = job[datasets[0].label].samples[0].data.get("content_type", "?")
    add(
        "Counted by botocore itself: the job's CloudWatch sink and a real boto3 client that stops just before the "
        f"network. Body: the serialized request ({content_type}, the protocol this botocore picks); on the wire: "
        "after botocore's gzip request compression. Packing sizes requests by their exact JSON 1.0 body, the protocol "
        "botocore 1.44 uses (`job.core.wire`, `job.core.packing.datum_bytes`), so the estimate is the body."
    )
    add("")
    if problems:
        add("**Cross-check FAILED:** " + "; ".join(problems) + ".")
    else:
        add(
            "Cross-check: every method counted every line of every input, and the job's published per-result-type "
            "totals and number of minutes equal both Python parses'."
        )
    return "\n".join(out)


DOC_HEAD = """# Benchmarks

How fast the job turns CloudFront logs into metrics on DuckDB, against what it replaces and against the floor.

- **job**: `job.runner.Job` exactly as `cfmetrics run` wires it (`DuckDBEngine`, a `LocalLedger` in a fresh temp
  folder, `CloudWatchSink`), from listing the files to the ledger commit. The sink's boto3 CloudWatch client is
  real (parameter validation, serialization, gzip compression) but answers every request itself just before the
  network, and counts requests and bytes.
- **naive Python parse**: what the replaced tool does, written plainly: `gzip.open`, `for line in f`,
  `split('\\t')`, `datetime.strptime`, dicts per minute and result type, time-taken lists sorted for exact
  p50/p90/p99 and bucketed into the same histogram (`bench/worker.py`).
- **lean Python parse**: the same outputs with the two obvious speed-ups (the minute is the text of date and
  HH:MM, no `strptime`; split only up to time-taken): the strictest pure-Python baseline.
- **bare scan, every line one string** (the issue's baseline for the ≤ 1.5× target): DuckDB `SELECT count(line)`
  over `read_csv` of the same files with one VARCHAR column per line (a delimiter CloudFront never writes):
  decompressing and finding line ends, no field splitting.
- **`count(*)` over the full read_csv** (reference, the former baseline): the engine's exact `read_csv` options
  (cut out of `DuckDBEngine._legacy_view_sql`), every field split into its VARCHAR column.
- **zcat**: `zcat files > /dev/null`, decompression alone, on one core.

Data is made by `job.demo.sample_logs` (realistic lines, every result type, a slow tail of time-taken) and cached in
`bench/data/` (gitignored): distinct 250,000-line files, one per recent partition hour, hard-linked under two
distributions, so no two files of one distribution share a minute and a bigger input gives each distribution's
query more hours. The dense input puts 2 M lines in one distribution-hour instead. The small-files input holds the
same lines as the 2 M input, each distribution-hour's file dealt into 200 small files (each with the header), as
CloudFront writes them for a busy distribution (`--small`; `bench.data.ensure_small_files_dataset`). Each
measurement runs in a fresh process; the methods take turns within every repetition.

Run it: `make bench` (several minutes; it rewrites the figures below), `.venv/bin/python -m bench.run --quick`
(200 k lines, prints only), or choose `--lines 2M,8M,16M` (the memory check: peak RSS flat from 2 M to 16 M),
`--dense 0`, `--small 0`, `--reps 5`, `--methods job,lines`.
"""


def write_docs(section: str) -> None:
    block = f"{BEGIN}\n{section}\n{END}"
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else f"{DOC_HEAD}\n## Results\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n## Results\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(head + block + tail, encoding="utf-8")


# --- main ---------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(arguments)
    if "zcat" in args.methods and shutil.which("zcat") is None:
        print("zcat not found: leaving it out", file=sys.stderr)
        args.methods.remove("zcat")
    command = f".venv/bin/python -m bench.run {' '.join(arguments)}" if arguments else "make bench"
    facts = machine_facts()
    datasets = [ensure_dataset(n) for n in args.sizes]
    if args.dense:
        datasets.append(ensure_dense_dataset(args.dense))
    if args.small:
        datasets.append(ensure_small_files_dataset(args.small))
    warm_page_cache(datasets)
    load_before = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    results: Results = {(d.label, m): Series(d, m) for d in datasets for m in args.methods}
    total, done = args.reps * len(results), 0
    for rep in range(args.reps):
        # Rotate the order every repetition so no method always runs first (or right after the slowest).
        turn = rep % len(args.methods)
        order = args.methods[turn:] + args.methods[:turn]
        for dataset in datasets:
            for method in order:
                sample = measure(method, dataset)
                results[(dataset.label, method)].samples.append(sample)
                done += 1
                print(
                    f"[{done}/{total}] {dataset.label}, {method}: {sample.seconds:.2f} s, "
                    f"{dataset.lines / sample.seconds / 1e6:.2f} M lines/s, peak RSS {_rss(sample.peak_rss_kb)}, "
                    f"other processes {sample.interference:.0%} of the machine",
                    flush=True,
                )
    scan = next((s for (_, m), s in results.items() if m == "scan"), None)
    context = {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "command": command,
        "threads": str(scan.samples[0].data.get("threads", "?")) if scan else "default",
        "load_before": load_before,
        "load_after": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
    }
    problems = cross_check(results)
    section = render(args, datasets, results, facts, context, problems)
    print()
    print(section)
    raw = {f"{label}|{method}": [s.__dict__ for s in x.samples] for (label, method), x in results.items()}
    (DATA_DIR / "last-run.json").write_text(json.dumps({"context": context, "facts": facts, "raw": raw}, indent=1))
    if args.docs:
        write_docs(section)
        print(f"\nwritten to {DOCS.relative_to(REPO)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
