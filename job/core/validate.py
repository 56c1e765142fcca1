"""Validation of the values users and the template give: each error names the bad value and the expected form."""

from __future__ import annotations

import re

from job.core.errors import ConfigError
from job.core.limits import MAX_NAMESPACE_LENGTH

_NAMESPACE = re.compile(r"^[0-9A-Za-z.\-_/#: ]+$")
_S3_LOCATION = re.compile(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[A-Za-z0-9!\-_.*()/=]*)?$")
_QUERY_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")
_RESULT_TYPE = re.compile(r"[A-Za-z0-9]{1,64}")


def validate_namespace(value: str) -> str:
    if not (0 < len(value) <= MAX_NAMESPACE_LENGTH and _NAMESPACE.fullmatch(value)) or value.startswith("AWS/"):
        raise ConfigError(
            f"namespace {value!r}: expected 1-255 of A-Z a-z 0-9 . - _ / # : and space, not starting with 'AWS/'",
            "namespace",
        )
    return value


def parse_result_types(value: str) -> frozenset[str]:
    types = frozenset(t.strip() for t in value.split(",") if t.strip())
    bad = sorted(t for t in types if not _RESULT_TYPE.fullmatch(t))
    if not types or bad:
        raise ConfigError(
            f"result types {value!r}: expected comma-separated names of letters and digits, e.g. Hit,Miss",
            "result_types",
        )
    return types


def validate_s3_location(value: str) -> str:
    location = value if value.endswith("/") else value + "/"
    if not _S3_LOCATION.fullmatch(location):
        raise ConfigError(f"location {value!r}: expected s3://bucket/prefix/ with no quotes or spaces", "location")
    return location


def validate_query_name(name: str) -> str:
    if not _QUERY_NAME.fullmatch(name):
        raise ConfigError(
            f"query {name!r}: expected the name of a file in sql/ without '.sql', e.g. minute_metrics", "query"
        )
    return name
