-- Athena table over CloudFront standard logging v2 delivered to S3 as w3c or plain text (gzip).
--
-- The user chooses the fields and their order; a w3c file says it in its '#Fields:' header, a plain file does not
-- say it at all. Athena reads by position, so THE COLUMN LIST BELOW MUST FOLLOW THE DELIVERY'S FIELD LIST (its
-- RecordFields), in order: rename each field with underscores (x-edge-result-type -> x_edge_result_type,
-- cs(Host) -> cs_host, DistributionId -> distribution_id, timestamp(ms) -> timestamp_ms). Then append, at the end,
-- every column of the legacy table (sql/cloudfront_logs_table.sql) and `timestamp` that the delivery does not
-- write: trailing columns a line lacks read as NULL, and the normalising view sql/cloudfront_logs_v2_view.sql
-- needs them all (a delivery without date/time gets them from `timestamp` there).
-- As written: the 39 fields of a real v2 line in delivery order (timestamp, DistributionId, the 33 legacy fields,
-- timestamp(ms), origin-fbl, origin-lbl, asn), then the two legacy columns it lacks.
--
-- The field delimiter is the delivery's FieldDelimiter: TAB here; write ' ' for a delivery that separates fields
-- with a space. A w3c file starts with two header lines ('#Version: 1.0', '#Fields: ...'); set
-- 'skip.header.line.count' to '0' for a plain delivery, which writes none.
-- The DuckDB engine takes the field order (and the delimiter, TAB or space) from each file's own '#Fields' header
-- and uses this column list only for a file without one.
--
-- Parameters (the same as sql/cloudfront_logs_table.sql's):
--   :location           s3://bucket/prefix/ of the log root
--   :location_template  the partition path template under it, for example
--                       s3://bucket/prefix/${distributionid}/${year}/${month}/${day}/${hour}/
--                       or the Hive-style s3://bucket/prefix/DistributionId=${distributionid}/year=${year}/...
CREATE EXTERNAL TABLE IF NOT EXISTS cloudfront_logs_v2 (
  `timestamp` STRING,
  distribution_id STRING,
  `date` STRING,
  `time` STRING,
  x_edge_location STRING,
  sc_bytes STRING,
  c_ip STRING,
  cs_method STRING,
  cs_host STRING,
  cs_uri_stem STRING,
  sc_status STRING,
  cs_referer STRING,
  cs_user_agent STRING,
  cs_uri_query STRING,
  cs_cookie STRING,
  x_edge_result_type STRING,
  x_edge_request_id STRING,
  x_host_header STRING,
  cs_protocol STRING,
  cs_bytes STRING,
  time_taken STRING,
  x_forwarded_for STRING,
  ssl_protocol STRING,
  ssl_cipher STRING,
  x_edge_response_result_type STRING,
  cs_protocol_version STRING,
  fle_status STRING,
  fle_encrypted_fields STRING,
  c_port STRING,
  time_to_first_byte STRING,
  x_edge_detailed_result_type STRING,
  sc_content_type STRING,
  sc_content_len STRING,
  sc_range_start STRING,
  sc_range_end STRING,
  timestamp_ms STRING,
  origin_fbl STRING,
  origin_lbl STRING,
  asn STRING,
  distribution_tenant_id STRING,
  connection_id STRING
)
PARTITIONED BY (
  distributionid STRING,
  year STRING,
  month STRING,
  day STRING,
  hour STRING
)
ROW FORMAT DELIMITED FIELDS TERMINATED BY '\t'
LOCATION :location
TBLPROPERTIES (
  'skip.header.line.count' = '2',
  'projection.enabled' = 'true',
  'projection.distributionid.type' = 'injected',
  'projection.year.type' = 'integer',
  'projection.year.range' = '2010,2099',
  'projection.month.type' = 'integer',
  'projection.month.range' = '1,12',
  'projection.month.digits' = '2',
  'projection.day.type' = 'integer',
  'projection.day.range' = '1,31',
  'projection.day.digits' = '2',
  'projection.hour.type' = 'integer',
  'projection.hour.range' = '0,23',
  'projection.hour.digits' = '2',
  'storage.location.template' = :location_template
)
