"""Benchmark data: realistic CloudFront log files made by job.demo.sample_logs, cached under bench/data/.

Generating lines in Python is slow (about 100 k lines/s per core), so each size is built from a pool of distinct
files, one per partition hour (the last hours before the pool was made), generated once and cached. A size is a
log root with hard links to those files under two distributions: every file of one distribution has its own
hour, so per-minute metrics never collide inside a distribution, and a bigger size gives each distribution's
query more hours. The pool is regenerated only when missing, or when its hours get too old for CloudWatch's
two-week timestamp limit (the bench publishes through the real CloudWatch sink, which checks it).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from job.core.files import Layout
from job.core.window import HOUR, floor_hour
from job.demo.sample_logs import write_log_file

DATA_DIR = Path(__file__).resolve().parent / "data"
# Two distributions; both look like real CloudFront ids (upper-case letters and digits).
DISTRIBUTIONS = ("E1BENCHALPHA0001", "E2BENCHBRAVO0002")
POOL_DISTRIBUTION = "E0BENCHPOOL0000"
DENSE_DISTRIBUTION = "E3BENCHDENSE0003"
FULL_FILE_LINES = 250_000
MIN_FILES = 8
# A busy distribution: CloudFront writes a log file per edge server every few minutes, hundreds an hour (its
# developer guide: "typically ... several files per hour", more the more edge locations serve it).
SMALL_FILES_PER_HOUR = 200
# Pool hours older than this are regenerated: the job's CloudWatch sink refuses datapoints older than 14 days.
MAX_POOL_AGE = timedelta(days=10)


@dataclass(frozen=True)
class Dataset:
    """One benchmark input: a log root of `files` hard links holding `lines` log lines in total."""

    label: str
    description: str
    lines: int
    root: Path
    files: tuple[Path, ...]
    distinct_files: int
    lines_per_file: int
    gz_bytes: int
    first_hour: datetime
    last_hour: datetime


def shape(lines: int) -> tuple[int, int]:
    """(files, lines per file) for a size: 250 k-line files from 2 M lines up, at least 8 files."""
    per_file = FULL_FILE_LINES if lines >= MIN_FILES * FULL_FILE_LINES else max(1, lines // MIN_FILES)
    files = max(MIN_FILES, round(lines / per_file))
    return files, max(1, lines // files)


def _pool_dir(lines_per_file: int) -> Path:
    return DATA_DIR / "pool" / f"{lines_per_file}"


def _pool_file(lines_per_file: int, index: int) -> Path:
    return _pool_dir(lines_per_file) / f"hour-{index:04d}.gz"


def _make_pool_file(lines_per_file: int, index: int, hour_iso: str) -> str:
    """Worker: write one pool file atomically (written in a scratch folder, then renamed)."""
    hour = datetime.fromisoformat(hour_iso)
    scratch = _pool_dir(lines_per_file) / f".scratch-{index:04d}"
    shutil.rmtree(scratch, ignore_errors=True)
    rng = random.Random(lines_per_file * 100_003 + index)
    sample = write_log_file(scratch, POOL_DISTRIBUTION, hour, lines_per_file, rng, Layout.PLAIN, suffix="pool")
    target = _pool_file(lines_per_file, index)
    os.replace(sample.path, target)
    shutil.rmtree(scratch, ignore_errors=True)
    return str(target)


def _load_anchor(lines_per_file: int, now: datetime) -> datetime:
    """The newest pool hour; a missing or stale pool is wiped and anchored at the hour before `now`."""
    manifest = _pool_dir(lines_per_file) / "pool.json"
    if manifest.exists():
        anchor = datetime.fromisoformat(json.loads(manifest.read_text())["anchor"])
        if now - anchor <= MAX_POOL_AGE:
            return anchor
        print(f"bench data: pool {manifest.parent} is from {anchor:%Y-%m-%dT%H}Z, too old; regenerating", flush=True)
    shutil.rmtree(_pool_dir(lines_per_file), ignore_errors=True)
    _pool_dir(lines_per_file).mkdir(parents=True)
    anchor = floor_hour(now) - HOUR
    manifest.write_text(json.dumps({"anchor": anchor.isoformat(), "lines_per_file": lines_per_file}))
    return anchor


def ensure_pool(lines_per_file: int, hours: int, now: datetime, workers: int) -> tuple[datetime, list[Path]]:
    """The pool files for `hours` hours ending at the anchor hour (index 0 is the newest), generating any missing."""
    anchor = _load_anchor(lines_per_file, now)
    missing = [i for i in range(hours) if not _pool_file(lines_per_file, i).exists()]
    if missing:
        print(
            f"bench data: generating {len(missing)} file(s) of {lines_per_file:,} lines in {_pool_dir(lines_per_file)}"
            f" ({len(missing) * lines_per_file:,} lines, once; cached for later runs)",
            flush=True,
        )
        with ProcessPoolExecutor(max_workers=workers) as pool:
            jobs = [pool.submit(_make_pool_file, lines_per_file, i, (anchor - i * HOUR).isoformat()) for i in missing]
            for job in jobs:
                job.result()
    return anchor, [_pool_file(lines_per_file, i) for i in range(hours)]


def ensure_dataset(lines: int, now: datetime | None = None, workers: int | None = None) -> Dataset:
    """The log root for `lines` lines, rebuilt from the (cached) pool as hard links on every call."""
    now = now or datetime.now(UTC)
    files, per_file = shape(lines)
    hours = math.ceil(files / len(DISTRIBUTIONS))
    anchor, pool = ensure_pool(per_file, hours, now, workers or os.cpu_count() or 1)
    root = DATA_DIR / "sets" / f"{files * per_file}"
    shutil.rmtree(root, ignore_errors=True)
    linked: list[Path] = []
    for k in range(files):
        distribution_id, index = DISTRIBUTIONS[k % len(DISTRIBUTIONS)], k // len(DISTRIBUTIONS)
        hour = anchor - index * HOUR
        folder = root / Layout.PLAIN.partition_prefix(distribution_id, hour)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{distribution_id}.{hour:%Y-%m-%d-%H}.{index:04d}{k % len(DISTRIBUTIONS)}.gz"
        os.link(pool[index], path)
        linked.append(path)
    return Dataset(
        label=_count(files * per_file),
        description=(
            f"{_count(files * per_file)} lines in {files} gzip files of {per_file:,} lines "
            f"({sum(p.stat().st_size for p in linked) / 1e6:,.0f} MB): {len(DISTRIBUTIONS)} distributions × "
            f"{hours} hours ({anchor - (hours - 1) * HOUR:%Y-%m-%d %H}h to {anchor:%H}h UTC), one file per "
            f"distribution-hour, about {per_file // 60:,} lines per distribution-minute"
        ),
        lines=files * per_file,
        root=root,
        files=tuple(linked),
        distinct_files=hours,
        lines_per_file=per_file,
        gz_bytes=sum(p.stat().st_size for p in linked),
        first_hour=anchor - (hours - 1) * HOUR,
        last_hour=anchor,
    )


def ensure_dense_dataset(lines: int, now: datetime | None = None, workers: int | None = None) -> Dataset:
    """`lines` lines in a single distribution-hour: the newest pool file linked as every file of one hour of one
    distribution, as a busy distribution writes many files an hour. Same lines, far fewer minutes: it shows the
    job's cost per line without the per-minute (per-datum) part."""
    now = now or datetime.now(UTC)
    files, per_file = shape(lines)
    anchor, pool = ensure_pool(per_file, 1, now, workers or os.cpu_count() or 1)
    root = DATA_DIR / "sets" / f"dense-{files * per_file}"
    shutil.rmtree(root, ignore_errors=True)
    distribution_id = DENSE_DISTRIBUTION
    folder = root / Layout.PLAIN.partition_prefix(distribution_id, anchor)
    folder.mkdir(parents=True)
    linked = []
    for k in range(files):
        path = folder / f"{distribution_id}.{anchor:%Y-%m-%d-%H}.dense{k:04d}.gz"
        os.link(pool[0], path)
        linked.append(path)
    gz_bytes = sum(p.stat().st_size for p in linked)
    return Dataset(
        label=f"{_count(files * per_file)} dense",
        description=(
            f"{_count(files * per_file)} dense: the same {per_file:,}-line file {files} times in one hour of one "
            f"distribution ({gz_bytes / 1e6:,.0f} MB, {anchor:%Y-%m-%d %H}h UTC), about "
            f"{files * per_file // 60:,} lines per distribution-minute"
        ),
        lines=files * per_file,
        root=root,
        files=tuple(linked),
        distinct_files=1,
        lines_per_file=per_file,
        gz_bytes=gz_bytes,
        first_hour=anchor,
        last_hour=anchor,
    )


def _split_pool_file(source: str, target_dir: str, parts: int) -> str:
    """Worker: one pool file's records dealt round-robin into `parts` gzip files, each with the file's header
    (written in a scratch folder, then renamed), so the small files hold exactly the big file's lines."""
    target = Path(target_dir)
    scratch = target.with_name(f".scratch-{target.name}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    with gzip.open(source, "rb") as handle:
        lines = handle.readlines()
    # Every CloudFront file starts with its #Version/#Fields header (the engine skips those lines): each part too.
    header = 0
    while header < len(lines) and lines[header].startswith(b"#"):
        header += 1
    for part in range(parts):
        with gzip.open(scratch / f"part-{part:04d}.gz", "wb", compresslevel=6) as out:
            out.writelines(lines[:header])
            out.writelines(lines[header + part :: parts])
    shutil.rmtree(target, ignore_errors=True)
    os.replace(scratch, target)
    return target_dir


def ensure_small_files_dataset(
    lines: int, parts: int = SMALL_FILES_PER_HOUR, now: datetime | None = None, workers: int | None = None
) -> Dataset:
    """The same lines as ensure_dataset(lines), but each distribution-hour's file split into `parts` small files,
    as CloudFront writes them for a busy distribution (the split is cached beside the pool)."""
    now = now or datetime.now(UTC)
    files, per_file = shape(lines)
    hours = math.ceil(files / len(DISTRIBUTIONS))
    anchor, pool = ensure_pool(per_file, hours, now, workers or os.cpu_count() or 1)
    split_dir = _pool_dir(per_file) / f"split-{parts}"
    missing = [i for i in range(hours) if not (split_dir / f"hour-{i:04d}").is_dir()]
    if missing:
        print(f"bench data: splitting {len(missing)} pool file(s) into {parts} files each in {split_dir}", flush=True)
        with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as executor:
            jobs = [
                executor.submit(_split_pool_file, str(pool[i]), str(split_dir / f"hour-{i:04d}"), parts)
                for i in missing
            ]
            for job in jobs:
                job.result()
    root = DATA_DIR / "sets" / f"small-{files * per_file}-{parts}"
    shutil.rmtree(root, ignore_errors=True)
    linked: list[Path] = []
    for k in range(files):
        distribution_id, index = DISTRIBUTIONS[k % len(DISTRIBUTIONS)], k // len(DISTRIBUTIONS)
        hour = anchor - index * HOUR
        folder = root / Layout.PLAIN.partition_prefix(distribution_id, hour)
        folder.mkdir(parents=True, exist_ok=True)
        for part in range(parts):
            path = folder / f"{distribution_id}.{hour:%Y-%m-%d-%H}.{index:04d}{part:04d}.gz"
            os.link(split_dir / f"hour-{index:04d}" / f"part-{part:04d}.gz", path)
            linked.append(path)
    gz_bytes = sum(p.stat().st_size for p in linked)
    return Dataset(
        label=f"{_count(files * per_file)} small files",
        description=(
            f"{_count(files * per_file)} small files: the lines of {_count(files * per_file)} in {len(linked):,} gzip "
            f"files, {parts} per distribution-hour of about {per_file // parts:,} lines ({gz_bytes / 1e6:,.0f} MB)"
        ),
        lines=files * per_file,
        root=root,
        files=tuple(linked),
        distinct_files=hours * parts,
        lines_per_file=per_file // parts,
        gz_bytes=gz_bytes,
        first_hour=anchor - (hours - 1) * HOUR,
        last_hour=anchor,
    )


def _count(n: int) -> str:
    return f"{n / 1e6:g} M" if n >= 1_000_000 else f"{n / 1e3:g} k"
