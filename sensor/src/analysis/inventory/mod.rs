//! The API inventory: endpoints learned from traffic.

pub mod sensitive;
