"""`cfmetrics demo` (placeholder until the demo lands)."""

from pathlib import Path


def run_demo(out: Path, endpoint_url: str | None = None) -> int:
    raise NotImplementedError
