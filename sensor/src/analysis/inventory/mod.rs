//! The API inventory: endpoints learned from traffic.

pub mod sensitive;
pub mod spec;
pub mod templates;
pub mod types;
