"""Service limits the job enforces itself (moto enforces none of them), each with its source."""

from datetime import timedelta

# CloudWatch PutMetricData, https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricData.html
# "Each PutMetricData request is limited to 1 MB in size for HTTP POST requests. You can send a payload
# compressed by gzip. Each request is also limited to no more than 1000 different metrics."
MAX_DATUMS_PER_REQUEST = 1000
# 1 MB; we budget 1,000,000 bytes of the uncompressed JSON 1.0 body botocore sends (job/core/wire.py).
MAX_REQUEST_BYTES = 1_000_000
# MetricDatum.Values: "You can use up to 150 unique values in a single PutMetricData action".
MAX_VALUES_PER_DATUM = 150
# MetricDatum.Dimensions: "Array Members: Maximum number of 30 items."
MAX_DIMENSIONS_PER_DATUM = 30
# MetricDatum.Timestamp: "up to two weeks before the current date and up to 2 hours after the current date".
MAX_DATAPOINT_AGE = timedelta(days=14)
MAX_DATAPOINT_AHEAD = timedelta(hours=2)
# Namespace: "Minimum length of 1. Maximum length of 255", may not start with "AWS/".
MAX_NAMESPACE_LENGTH = 255
# Dimension, https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_Dimension.html: Name "Minimum
# length of 1. Maximum length of 255", Value "Minimum length of 1. Maximum length of 1024".
MAX_DIMENSION_NAME_LENGTH = 255
MAX_DIMENSION_VALUE_LENGTH = 1024

# Athena, https://docs.aws.amazon.com/athena/latest/ug/service-limits.html: "maximum allowed query string length
# is 262144 bytes".
MAX_ATHENA_QUERY_BYTES = 262_144

# CloudFront standard logs, https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/standard-logging-legacy-s3.html
# "some or all log file entries for a time period can sometimes be delayed by up to 24 hours".
MAX_LOG_DELIVERY_DELAY = timedelta(hours=24)

# Athena pricing, https://aws.amazon.com/athena/pricing/ (us-east-1, SQL queries): "$5.00 per TB of data scanned",
# "rounded up to the nearest megabyte, with a 10 MB minimum per query".
ATHENA_USD_PER_TB = 5.0
ATHENA_MIN_BYTES_PER_QUERY = 10 * 1024 * 1024

# CloudWatch GetMetricData, https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricData.html:
# "You can include up to 500 MetricDataQuery structures in one request".
MAX_QUERIES_PER_GET = 500

# Athena service quotas, https://docs.aws.amazon.com/athena/latest/ug/service-limits.html: "Active DML queries"
# per account and region, a quota that "varies by AWS Region" (its example: 25); running and queued queries both
# count, and one past it fails with TooManyRequestsException. The job's default stays well below the page's example
# so other users of the account keep some; the cap of 64 is this job's own (the Service Quotas console shows the
# account's value).
DEFAULT_QUERY_CONCURRENCY = 8
MAX_QUERY_CONCURRENCY = 64
