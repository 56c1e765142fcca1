"""Small PutMetricData requests for tests: several requests per batch even with little data."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def tight_requests(max_datums: int) -> Iterator[None]:
    """Every Job built inside packs at most `max_datums` datums per PutMetricData request (several requests per
    batch even with little data), whoever builds it: a test, the CLI or the handler."""
    from dataclasses import replace

    from job.core.packing import RequestLimits
    from job.runner import Job

    original = Job.__init__

    def init(self: Job, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.options = replace(self.options, request_limits=RequestLimits(max_datums=max_datums))

    Job.__init__ = init  # type: ignore[method-assign]
    try:
        yield
    finally:
        Job.__init__ = original  # type: ignore[method-assign]
