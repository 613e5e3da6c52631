//! Analysis stages that look past one exchange: what the pipeline learns about sessions and
//! endpoints besides grouping them ([`crate::sessions`]): abuse signals per session, and the
//! inventory of endpoints.

pub mod abuse;
pub mod inventory;
