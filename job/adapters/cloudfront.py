"""The distributions that exist in the account (cloudfront:ListDistributions), so made-up folders in the log
bucket cannot create billed metrics."""

from __future__ import annotations

from typing import Any

from job.core.errors import ConfigError


def distribution_ids(client: Any) -> frozenset[str]:
    """Every distribution id of the account, over all pages of ListDistributions."""
    found: set[str] = set()
    try:
        for page in client.get_paginator("list_distributions").paginate():
            for item in page.get("DistributionList", {}).get("Items", []) or []:
                found.add(str(item["Id"]))
    except Exception as exc:  # botocore ClientError (AccessDenied), EndpointConnectionError, ...
        raise ConfigError(
            f"cannot list the account's CloudFront distributions ({exc}); expected cloudfront:ListDistributions "
            "to be allowed, or name the distributions to publish (Distributions, --distribution)",
            "distributions",
        ) from exc
    return frozenset(found)
