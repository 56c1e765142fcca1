-- The relation every query reads, cloudfront_logs, over a standard logging v2 table (cloudfront_logs_v2, one of
-- sql/cloudfront_logs_v2_json_table.sql, _parquet_table.sql or _w3c_table.sql): the legacy table's columns under
-- their legacy names, the partition columns and "$path", so sql/minute_metrics.sql is one query for every format.
--
-- date and time are the v2 fields when the delivery writes both; otherwise they come from `timestamp` (epoch
-- seconds, fractions allowed), formatted in UTC as the legacy fields are ('2026-11-28', '15:04:05'). A line with
-- neither a usable date/time nor a usable timestamp gets NULL and the metrics query counts it as malformed; try()
-- keeps an out-of-range timestamp from failing the query.
CREATE VIEW cloudfront_logs AS
SELECT
  CASE
    WHEN "date" IS NOT NULL AND "time" IS NOT NULL THEN "date"
    ELSE try(date_format(from_unixtime(try_cast("timestamp" AS double)), '%Y-%m-%d'))
  END AS "date",
  CASE
    WHEN "date" IS NOT NULL AND "time" IS NOT NULL THEN "time"
    ELSE try(date_format(from_unixtime(try_cast("timestamp" AS double)), '%H:%i:%s'))
  END AS "time",
  x_edge_location,
  sc_bytes,
  c_ip,
  cs_method,
  cs_host,
  cs_uri_stem,
  sc_status,
  cs_referer,
  cs_user_agent,
  cs_uri_query,
  cs_cookie,
  x_edge_result_type,
  x_edge_request_id,
  x_host_header,
  cs_protocol,
  cs_bytes,
  time_taken,
  x_forwarded_for,
  ssl_protocol,
  ssl_cipher,
  x_edge_response_result_type,
  cs_protocol_version,
  fle_status,
  fle_encrypted_fields,
  c_port,
  time_to_first_byte,
  x_edge_detailed_result_type,
  sc_content_type,
  sc_content_len,
  sc_range_start,
  sc_range_end,
  distribution_tenant_id,
  connection_id,
  distributionid,
  year,
  month,
  day,
  hour,
  "$path" AS "$path"
FROM cloudfront_logs_v2
