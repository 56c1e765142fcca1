"""The sql/ toolchain: load and render the SQL files, translate them to DuckDB, read the table DDLs (sqlglot only)."""
