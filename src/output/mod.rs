//! Outputs: typed [`records`] to tables (CSV, Parquet) and [`plot`]s (PNG).

pub mod plot;
pub mod records;
