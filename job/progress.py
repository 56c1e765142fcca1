"""Progress of a run: a rich progress bar on a terminal (files, bytes, lines, ETA), plain log lines otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from job.core.files import LogFile
from job.runner import RunReport


class Progress:
    """Callbacks for Job(on_plan=..., on_progress=...)."""

    def __init__(self, bar: Any | None) -> None:
        self.bar = bar
        self.task: Any = None
        self.total_bytes = 0

    def on_plan(self, report: RunReport) -> None:
        self.total_bytes = report.bytes_new
        if self.bar is not None and report.files_new:
            self.task = self.bar.add_task("files", total=report.bytes_new, files="", lines="")

    def on_progress(self, report: RunReport, chunk: list[LogFile]) -> None:
        done_bytes = sum(f.size for f in report.files_done)
        files = f"{len(report.files_done)}/{report.files_new} files"
        lines = f"{report.lines:,} lines"
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=done_bytes, files=files, lines=lines)
        elif self.bar is None:
            share = 100 * done_bytes / self.total_bytes if self.total_bytes else 100.0
            print(f"progress: {files}, {done_bytes:,}/{self.total_bytes:,} bytes ({share:.0f} %), {lines}",
                  file=sys.stderr, flush=True)  # fmt: skip


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
    )
    from rich.progress import Progress as Bar

    columns = (
        TextColumn("{task.fields[files]}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[lines]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Bar(*columns, transient=False) as bar:
        yield Progress(bar)
