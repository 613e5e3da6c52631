//! Analysis stages that look past one exchange: what the pipeline learns about sessions and
//! endpoints besides grouping them ([`crate::sessions`]).

pub mod abuse;
