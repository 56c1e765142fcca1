"""Progress of a run: a rich progress bar on a terminal (files, bytes, lines, ETA), plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from job.core.files import LogFile
from job.runner import RunReport


def rate_line(done_bytes: int, total_bytes: int, lines: int, elapsed_s: float) -> str:
    """'1.2 MB/s, 45,000 lines/s, ETA 0:01:05' from what is done after `elapsed_s` seconds."""
    if elapsed_s <= 0 or done_bytes <= 0:
        return "ETA unknown"
    bytes_per_s = done_bytes / elapsed_s
    eta = int((total_bytes - done_bytes) / bytes_per_s)
    clock = f"{eta // 3600}:{eta % 3600 // 60:02d}:{eta % 60:02d}"
    return f"{bytes_per_s / 1e6:,.2f} MB/s, {lines / elapsed_s:,.0f} lines/s, ETA {clock}"


class Progress:
    """Callbacks for Job(on_plan=..., on_progress=...): after each query (one distribution's files, at most 128 MB
    of logs), files and bytes done, bytes and lines per second, and the ETA."""

    def __init__(self, bar: Any | None) -> None:
        self.bar = bar
        self.task: Any = None
        self.total_bytes = 0
        self.started = time.monotonic()

    def on_plan(self, report: RunReport) -> None:
        self.total_bytes = report.bytes_new
        self.started = time.monotonic()
        if self.bar is not None and report.files_new:
            self.task = self.bar.add_task("files", total=report.bytes_new, files="", lines="")

    def on_progress(self, report: RunReport, chunk: list[LogFile]) -> None:
        done_bytes = sum(f.size for f in report.files_done)
        files = f"{len(report.files_done)}/{report.files_new} files"
        elapsed = time.monotonic() - self.started
        lines = f"{report.lines:,} lines, {report.lines / elapsed if elapsed > 0 else 0:,.0f} lines/s"
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=done_bytes, files=files, lines=lines)
        elif self.bar is None:
            share = 100 * done_bytes / self.total_bytes if self.total_bytes else 100.0
            rates = rate_line(done_bytes, self.total_bytes, report.lines, elapsed)
            print(f"progress: {files}, {done_bytes:,}/{self.total_bytes:,} bytes ({share:.0f} %), {report.lines:,} "
                  f"lines; {rates}", file=sys.stderr, flush=True)  # fmt: skip


@contextmanager
def progress_reporter(enabled: bool) -> Iterator[Progress]:
    """A bar when stderr is a terminal and `enabled`; plain lines otherwise (logs, CI, pipes)."""
    if not (enabled and sys.stderr.isatty()):
        yield Progress(None)
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import Progress as Bar

    columns = (
        TextColumn("{task.fields[files]}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[lines]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Bar(*columns, transient=False) as bar:
        yield Progress(bar)
