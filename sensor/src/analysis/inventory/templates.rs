//! Endpoint templates learned from traffic: the second pass after [`crate::endpoint::template`].
//!
//! The first pass replaces what looks like an identifier by itself (numbers, UUIDs, hashes, long
//! tokens). What it cannot see from one value are slugs, user names, e-mails, dates and short
//! codes: `/users/alice` and `/users/bob` are one endpoint only because many such names come
//! under the same prefix. So, per (host, method, segment count, prefix before the segment), the
//! learner counts the literal values seen at the next position; once a position has seen many
//! distinct values that are each rare (at least [`LearnerConfig::min_distinct`], and a high
//! share of distinct values among the calls), it is *variable* and its values become
//! `{param}`. A value much more frequent than the others at a variable position stays literal:
//! `/user/login` next to `/user/{param}`.
//!
//! Bounded: at most [`LearnerConfig::max_positions`] positions and
//! [`LearnerConfig::max_values`] distinct values per position are tracked; past that, new
//! positions keep their literal segments and extra values are only counted ([`LearnerCounters`]).
//! Positions are never evicted: forgetting a learned position would split its endpoint again.
//! Given the same input order the output is the same (no hashing order or clock is involved).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// The placeholder the learner writes for a variable position.
pub const PARAM: &str = "{param}";

pub use crate::config::inventory::LearnerConfig;

/// What the learner could not track.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnerCounters {
    /// Positions not tracked because `max_positions` were (their segments stay literal).
    pub positions_untracked: u64,
    /// Values not tracked because their position held `max_values` (counted in its total).
    pub values_untracked: u64,
    /// Positions that reached `max_values` distinct values (variable from then on).
    pub positions_saturated: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
struct PositionKey {
    host: String,
    method: String,
    segments: usize,
    /// The learned template of the segments before this position.
    prefix: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    /// Per value (by [`value_id`]), how often it was seen.
    values: BTreeMap<u64, u64>,
    total: u64,
    /// Reached `max_values`: variable for good (the counts no longer see every value).
    saturated: bool,
}

/// A position's verdict from its counts as they are now.
struct Verdict {
    variable: bool,
    /// Values at least this frequent stay literal.
    hot_from: u64,
}

impl Position {
    /// Variable when its values are many and each rare: at least `min_distinct` distinct
    /// values, and distinct values making up `min_distinct_per_100` of the calls, both counted
    /// without the hot values (`login` next to user names). Recomputed on every call: a few
    /// resources called round-robin look varied for their first rounds, and stop looking so
    /// once they repeat; the inventory regroups its rows through [`TemplateLearner::resolve`].
    fn verdict(&self, config: &LearnerConfig) -> Verdict {
        let mut counts: Vec<u64> = self.values.values().copied().collect();
        counts.sort_unstable();
        let median = counts.get(counts.len() / 2).copied().unwrap_or(0);
        let hot_from = (config.hot_factor * median).max(config.hot_min);
        if self.saturated {
            return Verdict {
                variable: true,
                hot_from,
            };
        }
        let (mut distinct, mut calls) = (0u64, 0u64);
        for &c in counts.iter().filter(|c| **c < hot_from) {
            distinct += 1;
            calls += c;
        }
        let variable = distinct >= config.min_distinct as u64
            && self.total >= config.min_samples
            && distinct * 100 >= config.min_distinct_per_100 * calls;
        Verdict { variable, hot_from }
    }

    fn is_param(&self, value: &str, config: &LearnerConfig) -> bool {
        let verdict = self.verdict(config);
        verdict.variable
            && self.values.get(&value_id(value)).copied().unwrap_or(0) < verdict.hot_from
    }
}

/// The learner's positions as the store keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnerState {
    positions: Vec<(PositionKey, Position)>,
}

#[derive(Debug, Default)]
pub struct TemplateLearner {
    config: LearnerConfig,
    positions: HashMap<PositionKey, Position>,
    counters: LearnerCounters,
}

impl TemplateLearner {
    pub fn new(config: LearnerConfig) -> Self {
        Self {
            config,
            positions: HashMap::new(),
            counters: LearnerCounters::default(),
        }
    }

    pub fn counters(&self) -> LearnerCounters {
        self.counters
    }

    /// What the learner knows, for the store (sorted: equal states encode equally).
    pub fn state(&self) -> LearnerState {
        let mut positions: Vec<(PositionKey, Position)> = self
            .positions
            .iter()
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        positions.sort_by(|a, b| a.0.cmp(&b.0));
        LearnerState { positions }
    }

    /// Adds a stored state to what the learner knows (after a restart, or an import), within
    /// the same bounds as learning.
    pub fn merge(&mut self, state: &LearnerState) {
        for (key, other) in &state.positions {
            if !self.positions.contains_key(key)
                && self.positions.len() >= self.config.max_positions
            {
                self.counters.positions_untracked += 1;
                continue;
            }
            let position = self.positions.entry(key.clone()).or_default();
            position.total += other.total;
            position.saturated |= other.saturated;
            for (value, count) in &other.values {
                if let Some(mine) = position.values.get_mut(value) {
                    *mine += count;
                } else if position.values.len() < self.config.max_values {
                    position.values.insert(*value, *count);
                } else {
                    self.counters.values_untracked += count;
                    position.saturated = true;
                }
            }
        }
    }

    /// Records a request's first-pass template (`endpoint::template`) and returns its learned
    /// template as of now.
    pub fn learn(&mut self, host: &str, method: &str, first_pass: &str) -> String {
        rewrite(host, method, first_pass, |key, segment| {
            self.observe(key, segment)
        })
    }

    /// A template as the learner would write it now, without recording anything: for
    /// templates written before a position became variable (the inventory's rows are regrouped
    /// through it, so the early literal `/users/alice` joins `/users/{param}`).
    pub fn resolve(&self, host: &str, method: &str, template: &str) -> String {
        rewrite(host, method, template, |key, segment| {
            self.positions
                .get(&key)
                .is_some_and(|p| p.is_param(segment, &self.config))
        })
    }

    /// Counts `value` at `key`; whether it is a parameter there now.
    fn observe(&mut self, key: PositionKey, value: &str) -> bool {
        let config = &self.config;
        if !self.positions.contains_key(&key) && self.positions.len() >= config.max_positions {
            self.counters.positions_untracked += 1;
            return false;
        }
        let position = self.positions.entry(key).or_default();
        position.total += 1;
        let id = value_id(value);
        if let Some(count) = position.values.get_mut(&id) {
            *count += 1;
        } else if position.values.len() < config.max_values {
            position.values.insert(id, 1);
        } else {
            self.counters.values_untracked += 1;
        }
        if !position.saturated && position.values.len() >= config.max_values {
            position.saturated = true;
            self.counters.positions_saturated += 1;
        }
        position.is_param(value, config)
    }
}

/// `template` with each learnable segment replaced by [`PARAM`] where `is_param` says so of
/// its position (keyed by the template written so far) and value.
fn rewrite(
    host: &str,
    method: &str,
    template: &str,
    mut is_param: impl FnMut(PositionKey, &str) -> bool,
) -> String {
    let segments = template.split('/').count();
    let mut out = String::with_capacity(template.len());
    for (i, segment) in template.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let key = PositionKey {
            host: host.to_owned(),
            method: method.to_owned(),
            segments,
            prefix: out.clone(),
        };
        if is_learnable(segment) && is_param(key, segment) {
            out.push_str(PARAM);
        } else {
            out.push_str(segment);
        }
    }
    out
}

/// A value as the learner keeps it: the first 8 bytes of its BLAKE3 hash. The learner only
/// compares and counts values, so it keeps no path segment (a user name, an e-mail, a short
/// code) in memory or in the store, and 8 bytes per value whatever its length.
fn value_id(value: &str) -> u64 {
    let hash = blake3::hash(value.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Literal, non-empty segments; placeholders of the first pass (`{id}`) and the cut marker's
/// segment are kept as they are.
fn is_learnable(segment: &str) -> bool {
    !segment.is_empty() && !segment.starts_with('{') && !segment.ends_with('…')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    fn learner() -> TemplateLearner {
        TemplateLearner::new(LearnerConfig::default())
    }

    #[test]
    fn varied_positions_become_parameters_and_hot_values_stay() {
        let mut l = learner();
        let names = [
            "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
            "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter",
        ];
        let mut last = String::new();
        for (i, name) in names.iter().enumerate() {
            l.learn("h", "GET", "/user/login");
            l.learn("h", "GET", "/user/login");
            last = l.learn("h", "GET", &format!("/user/{name}"));
            if i < 5 {
                // Too few values yet: literal.
                assert_eq!(last, format!("/user/{name}"));
            }
        }
        assert_eq!(last, "/user/{param}");
        assert_eq!(l.learn("h", "GET", "/user/login"), "/user/login");
        // Early literals resolve to the learned template now; other methods, hosts and
        // segment counts are separate.
        assert_eq!(l.resolve("h", "GET", "/user/alice"), "/user/{param}");
        assert_eq!(l.resolve("h", "GET", "/user/login"), "/user/login");
        assert_eq!(l.resolve("h", "PUT", "/user/alice"), "/user/alice");
        assert_eq!(l.resolve("other", "GET", "/user/alice"), "/user/alice");
        assert_eq!(l.resolve("h", "GET", "/user/alice/x"), "/user/alice/x");
        assert_eq!(l.counters().positions_saturated, 0);
    }

    #[test]
    fn a_few_busy_resources_stay_literal() {
        let mut l = learner();
        let resources = [
            "users",
            "orders",
            "products",
            "carts",
            "invoices",
            "payments",
            "shipments",
            "reviews",
            "coupons",
            "stores",
            "brands",
            "categories",
        ];
        for _ in 0..50 {
            for r in resources {
                l.learn("h", "GET", &format!("/api/{r}"));
            }
        }
        for r in resources {
            let literal = format!("/api/{r}");
            assert_eq!(l.learn("h", "GET", &literal), literal);
            assert_eq!(l.resolve("h", "GET", &literal), literal);
        }
    }

    #[test]
    fn nested_parameters_and_first_pass_placeholders() {
        let mut l = learner();
        for i in 0..40 {
            let owner = format!("owner{}x", (b'a' + (i % 26) as u8) as char);
            let repo = format!("repo-{}", ["alpha", "beta", "gamma", "delta", "eps"][i % 5]);
            let repo = format!("{repo}{}", (b'a' + (i / 5) as u8) as char);
            l.learn("h", "GET", &format!("/repos/{owner}/{repo}/issues/{{id}}"));
        }
        assert_eq!(
            l.learn("h", "GET", "/repos/zed/repo-omega/issues/{id}"),
            "/repos/{param}/{param}/issues/{id}"
        );
    }

    #[test]
    fn one_endpoint_never_explodes_and_memory_is_bounded() {
        let config = LearnerConfig {
            max_positions: 8,
            ..LearnerConfig::default()
        };
        let mut l = TemplateLearner::new(config.clone());
        let mut templates = std::collections::BTreeSet::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..100_000 {
            // Short codes the first pass keeps literal.
            let code = format!("c{}", rng.below(1_000_000));
            templates.insert(l.learn("h", "GET", &format!("/codes/{code}")));
        }
        // Only the values before the position became variable came out literal.
        assert!(
            templates.len() <= config.min_samples as usize + 1,
            "{}",
            templates.len()
        );
        assert!(templates.contains("/codes/{param}"));
        let position = l.positions.values().next().unwrap();
        assert!(position.values.len() <= config.max_values);
        assert!(l.counters().values_untracked > 90_000);

        for i in 0..100 {
            l.learn("h", "GET", &format!("/p{i}/x"));
        }
        assert_eq!(l.positions.len(), 8);
        assert!(l.counters().positions_untracked > 0);
    }

    #[test]
    fn state_persists_and_merges() {
        let names: Vec<String> = (0..30)
            .map(|i| format!("user{}x", (b'a' + i) as char))
            .collect();
        let mut first = learner();
        for name in &names[..15] {
            first.learn("h", "GET", &format!("/u/{name}"));
        }
        // Half the traffic on each side of a restart: neither half alone is enough.
        assert_eq!(first.resolve("h", "GET", "/u/someone"), "/u/someone");
        let bytes = postcard::to_allocvec(&first.state()).unwrap();
        let mut second = learner();
        for name in &names[15..] {
            second.learn("h", "GET", &format!("/u/{name}"));
        }
        second.merge(&postcard::from_bytes(&bytes).unwrap());
        assert_eq!(second.resolve("h", "GET", "/u/someone"), "/u/{param}");
        assert_eq!(
            serde_json::from_str::<LearnerState>(&serde_json::to_string(&second.state()).unwrap())
                .unwrap(),
            second.state()
        );
    }

    #[test]
    fn deterministic_for_the_same_input_order() {
        let run = || {
            let mut l = learner();
            (0..500)
                .map(|i| l.learn("h", "GET", &format!("/t/s{}/v", i % 37)))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
