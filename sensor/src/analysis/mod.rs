//! Analysis stages: what the pipeline learns from decoded exchanges beyond their fields.
//!
//! - [`attacks`]: per-request attack detection (SQLi and XSS through libinjection, the other
//!   classes through rules kept as data, framing abuse from the HTTP decoder's anomalies).
//! - [`abuse`]: signals about a session that no single request shows, and its risk.
//! - [`inventory`]: every endpoint seen, with its statistics, sensitive data and spec status.

pub mod abuse;
pub mod attacks;
pub mod inventory;
