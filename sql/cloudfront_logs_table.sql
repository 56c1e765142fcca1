-- Athena table over CloudFront standard logs (legacy TAB-separated format) laid out in hourly partitions.
--
-- Columns follow the newest 35-field layout; fields were only ever appended, so older files (12 to 33 fields)
-- read into the same columns with the missing trailing fields as NULL. Every column is a string: CloudFront
-- writes '-' for empty values, also in numeric fields, and the metrics query casts with try_cast.
--
-- Parameters (rendered by `cfmetrics sql --ddl`, validated before they are placed here):
--   :location           s3://bucket/prefix/ of the log root
--   :location_template  the partition path template under it, for example
--                       s3://bucket/prefix/${distributionid}/${year}/${month}/${day}/${hour}/
--                       or the Hive-style s3://bucket/prefix/DistributionId=${distributionid}/year=${year}/...
CREATE EXTERNAL TABLE IF NOT EXISTS cloudfront_logs (
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
