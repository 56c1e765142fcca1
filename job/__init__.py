"""cloudfront-log-metrics: CloudFront access logs to per-minute CloudWatch metrics, exactly once."""

__version__ = "0.1.0"
