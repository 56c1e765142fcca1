-- Per-minute count of 5xx responses (sc-status 500-599) of one distribution's log files: an example of a metric
-- added by a query file of one's own (see "Editing the SQL" in the README).
--
-- Every column named metric_<words> of a row with grouping_id 7 is published as the Count metric <Words>
-- (metric_requests_5xx -> Requests5xx) with the DistributionId dimension. Run it with `cfmetrics run --query
-- status_5xx`: it keeps its own ledger, so it backfills every file on its own and publishes nothing else.
-- Parameters as in minute_metrics.sql.
SELECT
  date_trunc('minute', requested_at) AS minute,
  7 AS grouping_id,
  sum(CASE WHEN sc_status LIKE '5__' THEN 1 ELSE 0 END) AS metric_requests_5xx
FROM (
  SELECT
    try(date_parse(concat("date", ' ', "time"), '%Y-%m-%d %H:%i:%s')) AS requested_at,
    sc_status
  FROM cloudfront_logs
  WHERE distributionid = :distribution_id
    AND year IN (:years) AND month IN (:months) AND day IN (:days) AND hour IN (:hours)
    AND "$path" IN (:files)
    AND x_edge_result_type NOT IN ('', '-')
) AS lines
WHERE requested_at IS NOT NULL
GROUP BY date_trunc('minute', requested_at)
ORDER BY 1
