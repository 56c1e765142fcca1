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


def client(made: Any, service: str, endpoint_url: str | None = None) -> Any:
    from botocore.config import Config

    config = Config(retries=RETRIES, connect_timeout=10, read_timeout=60)  # type: ignore[arg-type]
    return made.client(service, endpoint_url=endpoint_url, config=config)
