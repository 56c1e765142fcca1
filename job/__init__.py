"""cloudfront-log-metrics: CloudFront access logs to per-minute CloudWatch metrics, exactly once.

The library's face: build Settings, wire them into a Job with build_job, run it. Loaded lazily, so that
`import job.legacy_mover` (a function of its own in Lambda) does not load the metrics job.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Job", "RunOptions", "RunReport", "Settings", "build_job"]

if TYPE_CHECKING:
    from job.runner import Job, RunOptions, RunReport
    from job.wiring import Settings, build_job

_HOMES = {"Job": "job.runner", "RunOptions": "job.runner", "RunReport": "job.runner"}
_HOMES |= {"Settings": "job.wiring", "build_job": "job.wiring"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'job' has no attribute {name!r}")
