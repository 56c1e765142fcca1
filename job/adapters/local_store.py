"""A local folder of partitioned log files: the log store of local runs."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from job.core.errors import LayoutError
from job.core.files import Listing, LogFile, parse_relative_path
from job.core.window import HourWindow


class LocalLogStore:
    """Log files in a local folder laid out in hourly partitions."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        if not self.root.is_dir():
            raise LayoutError(f"--logs {root}: no such folder; expected a folder of partitioned CloudFront log files")

    def __str__(self) -> str:
        return str(self.root)

    def list(self, window: HourWindow | None, distributions: Iterable[str] = ()) -> Listing:
        wanted = set(distributions)
        files: list[LogFile] = []
        unrecognised: list[str] = []
        for path in self._walk(self.root):
            relative = path.relative_to(self.root).as_posix()
            parsed = parse_relative_path(relative)
            if parsed is None:
                unrecognised.append(relative)
                continue
            if wanted and parsed.distribution_id not in wanted:
                continue
            if window is not None and not window.contains(parsed.hour):
                continue
            stat = path.stat()
            modified = datetime.fromtimestamp(stat.st_mtime, UTC)
            files.append(
                LogFile(parsed.distribution_id, parsed.hour, str(path), stat.st_size, parsed.layout, modified=modified)
            )
        return Listing(tuple(sorted(files)), tuple(sorted(unrecognised)))

    @staticmethod
    def _walk(root: Path) -> Iterator[Path]:
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if not name.startswith("."):
                    yield Path(folder) / name
