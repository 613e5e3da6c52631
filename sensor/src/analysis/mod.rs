//! The analysis stage: what the pipeline learns from decoded exchanges beyond their sessions.

pub mod inventory;
