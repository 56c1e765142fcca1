-- Athena table over CloudFront standard logging v2 delivered to S3 as Parquet.
--
-- The Parquet schema names the fields with underscores (x_edge_result_type, cs_host, time_taken, timestamp); the
-- user chooses which fields a delivery writes. Columns are read by name, so a field the delivery leaves out reads
-- as NULL. The columns are the legacy table's (sql/cloudfront_logs_table.sql) plus `timestamp`; DistributionId
-- comes from the partition (distributionid). The normalising view sql/cloudfront_logs_v2_view.sql turns this
-- table into the relation cloudfront_logs that every query reads. Every column is declared a string, as AWS's own
-- Athena example for CloudFront Parquet logs does.
--
-- Parameters (the same as sql/cloudfront_logs_table.sql's):
--   :location           s3://bucket/prefix/ of the log root
--   :location_template  the partition path template under it, for example
--                       s3://bucket/prefix/${distributionid}/${year}/${month}/${day}/${hour}/
--                       or the Hive-style s3://bucket/prefix/DistributionId=${distributionid}/year=${year}/...
CREATE EXTERNAL TABLE IF NOT EXISTS cloudfront_logs_v2 (
  `timestamp` STRING,
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
STORED AS PARQUET
LOCATION :location
TBLPROPERTIES (
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
