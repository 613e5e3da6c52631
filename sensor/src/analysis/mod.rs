//! The analysis stage: what the pipeline learns from a decoded exchange beyond its fields.
//!
//! - [`attacks`]: per-request attack detection (SQLi and XSS through libinjection, the other
//!   classes through rules kept as data, framing abuse from the HTTP decoder's anomalies).

pub mod attacks;
