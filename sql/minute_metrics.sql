-- Per-minute request counts by x-edge-result-type and the time-taken distribution of one distribution's log files.
--
-- One scan, one result in long form; GROUPING SETS gives four kinds of row, told apart by grouping_id
-- (= grouping(minute, result_type, time_taken_bucket_ms, file), one bit per column left out):
--    7  (minute)                 requests in the minute, and approx_percentile p50/p90/p99 of time-taken (ms)
--    3  (minute, result_type)    requests with that x-edge-result-type
--    5  (minute, time_taken_ms)  requests per time-taken histogram bucket (ms; exact below 100 ms, then buckets
--                                2 % wide whose value is within 1.5 % of every time-taken in them)
--   14  (file)                   lines read from each file (requests) and how many of them were valid
-- A line with no parseable date/time or no result type is malformed: its minute is NULL, so it counts in its
-- file's lines but not in valid_requests. A line without a usable time-taken (older formats, '-') counts as a
-- request but not in the distribution.
--
-- Parameters:
--   :distribution_id  the CloudFront distribution (the injected partition column needs an equality)
--   :years, :months, :days, :hours
--                     the partition values of the files' hours ('2026', '11', '28', '15'). Partition projection
--                     builds each column's values from that column's own predicate and plans their product, so
--                     per-column IN lists (one day per query: one year, month and day) plan just the hours read;
--                     a predicate on concat(year, month, day, hour) would plan every projected partition.
--   :files            the log files to read ("$path" values): each run reads only files it has not processed
WITH lines AS (
  SELECT
    "$path" AS file,
    try(date_parse(concat("date", ' ', "time"), '%Y-%m-%d %H:%i:%s')) AS requested_at,
    x_edge_result_type AS result_type,
    try_cast(time_taken AS double) AS time_taken_s
  FROM cloudfront_logs
  WHERE distributionid = :distribution_id
    AND year IN (:years) AND month IN (:months) AND day IN (:days) AND hour IN (:hours)
    AND "$path" IN (:files)
),
classified AS (
  SELECT
    file,
    CASE
      WHEN requested_at IS NOT NULL AND result_type IS NOT NULL AND result_type NOT IN ('', '-')
        THEN date_trunc('minute', requested_at)
    END AS minute,
    result_type,
    CASE
      WHEN time_taken_s >= 0 AND time_taken_s < 86400 THEN CAST(round(time_taken_s * 1000) AS bigint)
    END AS time_taken_ms
  FROM lines
),
bucketed AS (
  SELECT
    file,
    minute,
    result_type,
    time_taken_ms,
    CASE
      WHEN time_taken_ms < 100 THEN time_taken_ms
      ELSE CAST(round(power(1.02, round(ln(time_taken_ms) / ln(1.02)))) AS bigint)
    END AS time_taken_bucket_ms
  FROM classified
),
grouped AS (
  SELECT
    minute,
    grouping(minute, result_type, time_taken_bucket_ms, file) AS grouping_id,
    result_type,
    time_taken_bucket_ms,
    file,
    count(*) AS requests,
    count(minute) AS valid_requests,
    approx_percentile(time_taken_ms, ARRAY[0.5, 0.9, 0.99]) AS percentiles
  FROM bucketed
  GROUP BY GROUPING SETS ((minute), (minute, result_type), (minute, time_taken_bucket_ms), (file))
)
SELECT
  minute,
  grouping_id,
  result_type,
  time_taken_bucket_ms,
  file,
  requests,
  valid_requests,
  element_at(percentiles, 1) AS time_taken_p50_ms,
  element_at(percentiles, 2) AS time_taken_p90_ms,
  element_at(percentiles, 3) AS time_taken_p99_ms
FROM grouped
ORDER BY grouping_id, minute, result_type, time_taken_bucket_ms, file
