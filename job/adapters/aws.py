"""The one place boto3 sessions and clients are built (CLI, demo, handler): retry mode and timeouts."""

from __future__ import annotations

from typing import Any

from job.core.errors import ConfigError

# botocore's standard retry mode retries throttling (HTTP 400 Throttling) and 5xx answers with backoff.
RETRIES = {"mode": "standard", "max_attempts": 8}


def session(region: str | None = None, access_key: str | None = None, secret_key: str | None = None) -> Any:
    """A boto3 session; its region from `region` or the usual AWS configuration chain, or a clear error."""
    import boto3

    made = boto3.session.Session(region_name=region, aws_access_key_id=access_key, aws_secret_access_key=secret_key)
    if made.region_name is None:
        raise ConfigError("no AWS region: pass --region, or set AWS_REGION or a profile's region")
    return made


def client_config(service: str) -> Any:
    """Retries, timeouts; for CloudWatch, no botocore request compression: the sink gzips PutMetricData itself,
    at a cheaper level than botocore's (job/adapters/sinks.py)."""
    from botocore.config import Config

    return Config(
        retries=RETRIES,  # type: ignore[arg-type]
        connect_timeout=10,
        read_timeout=60,
        disable_request_compression=service == "cloudwatch",
    )


def client(made: Any, service: str, endpoint_url: str | None = None) -> Any:
    return made.client(service, endpoint_url=endpoint_url, config=client_config(service))
