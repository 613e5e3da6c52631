//! `[inventory]` and `[inventory.templates]`: the bounds of the endpoint inventory and of its
//! template learner (computed by `analysis::inventory`).

use serde::Deserialize;

/// `[inventory]` in the configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InventoryConfig {
    /// An exchange is slow only above this duration, whatever the endpoint's p99.
    pub slow_floor_ms: u64,
    /// Timed exchanges an endpoint needs before any of its exchanges is called slow.
    pub slow_min_samples: u64,
    /// Endpoints tracked (host, method, template); exchanges of others are counted only.
    pub max_endpoints: usize,
    /// Query parameters and body fields tracked per endpoint.
    pub max_query_params: usize,
    pub max_body_fields: usize,
    /// The template learner (`[inventory.templates]`).
    pub templates: LearnerConfig,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            slow_floor_ms: 100,
            slow_min_samples: 50,
            max_endpoints: 10_000,
            max_query_params: 64,
            max_body_fields: 128,
            templates: LearnerConfig::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearnerConfig {
    /// Distinct values a position must show before it can be variable.
    pub min_distinct: usize,
    /// Distinct values per hundred calls a position of words must show to be variable: many
    /// calls over few values are a handful of resources (`/api/users`, `/api/orders`), not a
    /// parameter. Not needed where half the values have digits or punctuation (dates, e-mails).
    pub min_distinct_per_100: u64,
    /// Distinct values that make a position variable however often each is called (slugs,
    /// word-like user names): more than an API's fixed routes side by side.
    pub many_distinct: usize,
    /// Calls a position must have seen before it can be variable.
    pub min_samples: u64,
    /// Distinct values tracked per position; a position that reaches it is variable.
    pub max_values: usize,
    /// Positions tracked in all.
    pub max_positions: usize,
    /// A value at a variable position stays literal when seen at least this often and at least
    /// `hot_factor` times as often as the median value.
    pub hot_min: u64,
    pub hot_factor: u64,
}

impl Default for LearnerConfig {
    fn default() -> Self {
        Self {
            min_distinct: 5,
            min_distinct_per_100: 50,
            many_distinct: 48,
            min_samples: 5,
            max_values: 64,
            max_positions: 4096,
            hot_min: 3,
            hot_factor: 4,
        }
    }
}
