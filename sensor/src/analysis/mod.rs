//! Analysis stages: what the pipeline learns from decoded exchanges beyond their fields.
//!
//! - [`attacks`]: per-request attack detection (SQLi and XSS through libinjection, the other
//!   classes through rules kept as data, framing abuse from the HTTP decoder's anomalies).
//! - [`abuse`]: looks past one exchange: signals about sessions and endpoints besides grouping
//!   them ([`crate::sessions`]).

pub mod abuse;
pub mod attacks;
