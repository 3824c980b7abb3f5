//! Parquet export tests (being written).
