-- Per-minute request counts by x-edge-result-type and the time-taken distribution of one distribution's log files.
--
-- One scan, one result in long form; GROUPING SETS gives four kinds of row, told apart by grouping_id
-- (= grouping(minute, result_type, time_taken_bucket_ms, file), one bit per column left out):
--    7  (minute)                 requests in the minute, and approx_percentile p50/p90/p99 of time-taken (ms)
--    3  (minute, result_type)    requests with that x-edge-result-type
--    5  (minute, time_taken_ms)  requests per time-taken histogram bucket (ms; exact below 100 ms, then buckets
--                                2 % wide whose value is within 1.5 % of every time-taken in them)
--   14  (file)                   lines read from each file (requests) and how many of them were valid
-- The sets added later keep the four bits and add 16 times a bit per added column they group by
-- (status_class 4, ttfb_bucket_ms 2, edge_location 1: 7 - grouping(status_class, ttfb_bucket_ms, edge_location)):
--   71  (minute, status_class)    requests per status class: '2xx' for 200-299, '0xx' for 000, 'Other' for '-'
--   39  (minute, ttfb_bucket_ms)  requests per time-to-first-byte bucket (ms; the buckets of time-taken)
--   23  (minute, edge_location)   requests per edge location (the airport code: first 3 letters, else 'Other')
-- bytes_downloaded, on the minute's row, is the sum of sc-bytes (1 to 12 digits; anything else adds nothing).
-- Older formats without time-to-first-byte count as requests, but not in its distribution.
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
    try_cast(time_taken AS double) AS time_taken_s,
    sc_status,
    sc_bytes,
    try_cast(time_to_first_byte AS double) AS ttfb_s,
    x_edge_location
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
    END AS time_taken_ms,
    CASE
      WHEN regexp_like(sc_status, '^[0-5][0-9][0-9]$') THEN concat(substr(sc_status, 1, 1), 'xx') ELSE 'Other'
    END AS status_class,
    CASE WHEN regexp_like(sc_bytes, '^[0-9]{1,12}$') THEN try_cast(sc_bytes AS bigint) END AS bytes_downloaded,
    CASE WHEN ttfb_s >= 0 AND ttfb_s < 86400 THEN CAST(round(ttfb_s * 1000) AS bigint) END AS ttfb_ms,
    CASE WHEN regexp_like(x_edge_location, '^[A-Z]{3}') THEN substr(x_edge_location, 1, 3) ELSE 'Other' END
      AS edge_location
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
    END AS time_taken_bucket_ms,
    status_class,
    bytes_downloaded,
    CASE
      WHEN ttfb_ms < 100 THEN ttfb_ms
      ELSE CAST(round(power(1.02, round(ln(ttfb_ms) / ln(1.02)))) AS bigint)
    END AS ttfb_bucket_ms,
    edge_location
  FROM classified
),
grouped AS (
  SELECT
    minute,
    grouping(minute, result_type, time_taken_bucket_ms, file)
      + 16 * (7 - grouping(status_class, ttfb_bucket_ms, edge_location)) AS grouping_id,
    result_type,
    time_taken_bucket_ms,
    file,
    count(*) AS requests,
    count(minute) AS valid_requests,
    approx_percentile(time_taken_ms, ARRAY[0.5, 0.9, 0.99]) AS percentiles,
    status_class,
    ttfb_bucket_ms,
    edge_location,
    coalesce(sum(bytes_downloaded), 0) AS bytes_downloaded
  FROM bucketed
  GROUP BY GROUPING SETS ((minute), (minute, result_type), (minute, time_taken_bucket_ms), (file),
                         (minute, status_class), (minute, ttfb_bucket_ms), (minute, edge_location))
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
  element_at(percentiles, 3) AS time_taken_p99_ms,
  status_class,
  ttfb_bucket_ms,
  edge_location,
  bytes_downloaded
FROM grouped
ORDER BY grouping_id, minute, result_type, time_taken_bucket_ms, file, status_class, ttfb_bucket_ms, edge_location
