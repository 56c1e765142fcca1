-- Athena table over CloudFront standard logging v2 delivered to S3 as JSON (one JSON object a line, gzip).
--
-- JSON keys keep the legacy field names ("x-edge-result-type", "cs(Host)") plus "timestamp" (epoch seconds) and
-- "DistributionId"; the user chooses which keys a delivery writes. Columns are read by key, so a key the delivery
-- leaves out reads as NULL. The columns are the legacy table's (sql/cloudfront_logs_table.sql) plus `timestamp`;
-- DistributionId comes from the partition (distributionid). The normalising view sql/cloudfront_logs_v2_view.sql
-- turns this table into the relation cloudfront_logs that every query reads.
--
-- Every column is a string (the view and the queries try_cast). The SerDe matches keys case-sensitively
-- ('case.insensitive' = 'false') through one 'mapping.<column>' = '<key>' per column, exactly as the DuckDB engine
-- reads them (job/formats.py takes the keys from these mappings). 'ignore.malformed.json' turns a line that is not
-- a JSON object into a row of NULLs: the metrics query counts it as a malformed line instead of failing.
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
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
WITH SERDEPROPERTIES (
  'case.insensitive' = 'false',
  'ignore.malformed.json' = 'true',
  'mapping.timestamp' = 'timestamp',
  'mapping.date' = 'date',
  'mapping.time' = 'time',
  'mapping.x_edge_location' = 'x-edge-location',
  'mapping.sc_bytes' = 'sc-bytes',
  'mapping.c_ip' = 'c-ip',
  'mapping.cs_method' = 'cs-method',
  'mapping.cs_host' = 'cs(Host)',
  'mapping.cs_uri_stem' = 'cs-uri-stem',
  'mapping.sc_status' = 'sc-status',
  'mapping.cs_referer' = 'cs(Referer)',
  'mapping.cs_user_agent' = 'cs(User-Agent)',
  'mapping.cs_uri_query' = 'cs-uri-query',
  'mapping.cs_cookie' = 'cs(Cookie)',
  'mapping.x_edge_result_type' = 'x-edge-result-type',
  'mapping.x_edge_request_id' = 'x-edge-request-id',
  'mapping.x_host_header' = 'x-host-header',
  'mapping.cs_protocol' = 'cs-protocol',
  'mapping.cs_bytes' = 'cs-bytes',
  'mapping.time_taken' = 'time-taken',
  'mapping.x_forwarded_for' = 'x-forwarded-for',
  'mapping.ssl_protocol' = 'ssl-protocol',
  'mapping.ssl_cipher' = 'ssl-cipher',
  'mapping.x_edge_response_result_type' = 'x-edge-response-result-type',
  'mapping.cs_protocol_version' = 'cs-protocol-version',
  'mapping.fle_status' = 'fle-status',
  'mapping.fle_encrypted_fields' = 'fle-encrypted-fields',
  'mapping.c_port' = 'c-port',
  'mapping.time_to_first_byte' = 'time-to-first-byte',
  'mapping.x_edge_detailed_result_type' = 'x-edge-detailed-result-type',
  'mapping.sc_content_type' = 'sc-content-type',
  'mapping.sc_content_len' = 'sc-content-len',
  'mapping.sc_range_start' = 'sc-range-start',
  'mapping.sc_range_end' = 'sc-range-end',
  'mapping.distribution_tenant_id' = 'distribution-tenant-id',
  'mapping.connection_id' = 'connection-id'
)
STORED AS INPUTFORMAT 'org.apache.hadoop.mapred.TextInputFormat'
OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'
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
