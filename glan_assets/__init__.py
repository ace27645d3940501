"""GLAN instruction-tuning data as Dagster software-defined assets stored in DuckDB."""
