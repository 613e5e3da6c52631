//! Per endpoint (host, method, template) statistics: what the store persists and merges.
//!
//! Everything here is bounded and mergeable: latency percentiles are DDSketches (1 % relative
//! error, at most 2,048 bins each), distinct sessions a HyperLogLog-based estimator (exact for
//! small counts), status codes at most [`MAX_STATUS_CODES`], fields per endpoint at most the
//! configured caps. Merging two aggregates gives what one aggregate fed both inputs would have
//! held (up to the sketches' error), so the store can keep per-endpoint state and merge it on
//! restart and import.

use std::collections::BTreeMap;

use cardinality_estimator::CardinalityEstimator;
use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config as SketchConfig, DDSketch};

use super::{
    facts::{AuthSet, ExchangeFacts, ParamIn},
    sensitive::KindSet,
    types::FieldTable,
};

/// Distinct status codes kept per endpoint (others counted in `other_statuses`).
pub const MAX_STATUS_CODES: usize = 32;

/// 1 % relative accuracy, at most 2,048 bins: a few KiB per sketch at worst.
fn sketch() -> DDSketch {
    DDSketch::new(SketchConfig::new(0.01, 2048, 1.0e-3))
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EndpointKey {
    pub host: String,
    pub method: String,
    pub template: String,
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct EndpointStats {
    pub calls: u64,
    sessions: CardinalityEstimator<str>,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub statuses: BTreeMap<u16, u64>,
    /// Responses with a status code beyond [`MAX_STATUS_CODES`] distinct ones, or none.
    pub other_statuses: u64,
    ttfb: DDSketch,
    duration: DDSketch,
    pub request_bytes_total: u64,
    pub request_bytes_max: u64,
    pub response_bytes_total: u64,
    pub response_bytes_max: u64,
    pub query: FieldTable,
    pub body: FieldTable,
    pub auth: AuthSet,
    pub request_sensitive: KindSet,
    pub response_sensitive: KindSet,
    /// Exchanges slower than the endpoint's p99 (see `Inventory::observe`).
    pub slow: u64,
}

/// The sketches have no `Debug`: their percentiles stand for them.
impl std::fmt::Debug for EndpointStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointStats")
            .field("calls", &self.calls)
            .field("sessions", &self.sessions())
            .field("statuses", &self.statuses)
            .field("duration_ms", &self.duration_ms())
            .field("ttfb_ms", &self.ttfb_ms())
            .field("slow", &self.slow)
            .finish_non_exhaustive()
    }
}

impl Default for EndpointStats {
    fn default() -> Self {
        Self {
            calls: 0,
            sessions: CardinalityEstimator::new(),
            first_seen_ns: 0,
            last_seen_ns: 0,
            statuses: BTreeMap::new(),
            other_statuses: 0,
            ttfb: sketch(),
            duration: sketch(),
            request_bytes_total: 0,
            request_bytes_max: 0,
            response_bytes_total: 0,
            response_bytes_max: 0,
            query: FieldTable::default(),
            body: FieldTable::default(),
            auth: AuthSet::default(),
            request_sensitive: KindSet::default(),
            response_sensitive: KindSet::default(),
            slow: 0,
        }
    }
}

/// Caps on what one endpoint keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointCaps {
    pub query_params: usize,
    pub body_fields: usize,
}

impl EndpointStats {
    pub fn add(&mut self, facts: &ExchangeFacts, session_id: &str, caps: EndpointCaps) {
        self.calls += 1;
        self.sessions.insert(session_id);
        if self.first_seen_ns == 0 || facts.start_ns < self.first_seen_ns {
            self.first_seen_ns = facts.start_ns;
        }
        self.last_seen_ns = self.last_seen_ns.max(facts.start_ns);
        self.count_status(facts.status, 1);
        if let Some(ms) = facts.ttfb_ms.filter(|v| v.is_finite() && *v >= 0.0) {
            self.ttfb.add(ms);
        }
        if let Some(ms) = facts.duration_ms.filter(|v| v.is_finite() && *v >= 0.0) {
            self.duration.add(ms);
        }
        self.request_bytes_total = self.request_bytes_total.saturating_add(facts.request_bytes);
        self.request_bytes_max = self.request_bytes_max.max(facts.request_bytes);
        self.response_bytes_total = self
            .response_bytes_total
            .saturating_add(facts.response_bytes);
        self.response_bytes_max = self.response_bytes_max.max(facts.response_bytes);
        for (place, name, t) in &facts.params {
            match place {
                ParamIn::Query => self.query.observe(name, *t, caps.query_params),
                ParamIn::Body => self.body.observe(name, *t, caps.body_fields),
            }
        }
        self.auth = self.auth.union(facts.auth);
        self.request_sensitive = self.request_sensitive.union(facts.request_sensitive);
        self.response_sensitive = self.response_sensitive.union(facts.response_sensitive);
    }

    fn count_status(&mut self, status: Option<u16>, n: u64) {
        match status {
            Some(code)
                if self.statuses.contains_key(&code) || self.statuses.len() < MAX_STATUS_CODES =>
            {
                *self.statuses.entry(code).or_default() += n;
            }
            _ => self.other_statuses += n,
        }
    }

    pub fn merge(&mut self, other: &EndpointStats, caps: EndpointCaps) {
        self.calls += other.calls;
        self.sessions.merge(&other.sessions);
        if self.first_seen_ns == 0
            || (other.first_seen_ns != 0 && other.first_seen_ns < self.first_seen_ns)
        {
            self.first_seen_ns = other.first_seen_ns;
        }
        self.last_seen_ns = self.last_seen_ns.max(other.last_seen_ns);
        for (code, n) in &other.statuses {
            self.count_status(Some(*code), *n);
        }
        self.other_statuses += other.other_statuses;
        // Both sketches have the same configuration (built by `sketch()`), the one case in
        // which a merge can fail; a persisted sketch of another configuration loses its
        // latencies rather than the endpoint.
        let _ = self.ttfb.merge(&other.ttfb);
        let _ = self.duration.merge(&other.duration);
        self.request_bytes_total = self
            .request_bytes_total
            .saturating_add(other.request_bytes_total);
        self.request_bytes_max = self.request_bytes_max.max(other.request_bytes_max);
        self.response_bytes_total = self
            .response_bytes_total
            .saturating_add(other.response_bytes_total);
        self.response_bytes_max = self.response_bytes_max.max(other.response_bytes_max);
        self.query.merge(&other.query, caps.query_params);
        self.body.merge(&other.body, caps.body_fields);
        self.auth = self.auth.union(other.auth);
        self.request_sensitive = self.request_sensitive.union(other.request_sensitive);
        self.response_sensitive = self.response_sensitive.union(other.response_sensitive);
        self.slow += other.slow;
    }

    pub fn sessions(&self) -> u64 {
        self.sessions.estimate() as u64
    }

    pub fn duration_ms(&self) -> Percentiles {
        percentiles(&self.duration)
    }

    pub fn ttfb_ms(&self) -> Percentiles {
        percentiles(&self.ttfb)
    }

    /// Exchanges with a duration.
    pub fn timed(&self) -> u64 {
        self.duration.count() as u64
    }

    /// The share of responses with a status in `class` (4 for 4xx).
    pub fn status_share(&self, class: u16) -> f64 {
        if self.calls == 0 {
            return 0.0;
        }
        let n: u64 = self
            .statuses
            .iter()
            .filter(|(code, _)| **code / 100 == class)
            .map(|(_, n)| n)
            .sum();
        n as f64 / self.calls as f64
    }
}

fn percentiles(sketch: &DDSketch) -> Percentiles {
    // Rounded to microseconds: the sketch's error is far above that.
    let q = |q: f64| {
        sketch
            .quantile(q)
            .ok()
            .flatten()
            .map(|v| (v * 1000.0).round() / 1000.0)
    };
    Percentiles {
        p50: q(0.50),
        p95: q(0.95),
        p99: q(0.99),
    }
}

/// Every endpoint's statistics: the persistable, mergeable state of the inventory.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Aggregate {
    #[serde(with = "pairs")]
    pub endpoints: BTreeMap<EndpointKey, EndpointStats>,
    /// Exchanges of endpoints beyond the cap on endpoints.
    pub untracked: u64,
}

impl Aggregate {
    /// The endpoint's statistics, created if there is room (`max_endpoints`); None when full.
    pub fn entry(&mut self, key: EndpointKey, max_endpoints: usize) -> Option<&mut EndpointStats> {
        if !self.endpoints.contains_key(&key) && self.endpoints.len() >= max_endpoints {
            self.untracked += 1;
            return None;
        }
        Some(self.endpoints.entry(key).or_default())
    }

    pub fn merge(&mut self, other: &Aggregate, max_endpoints: usize, caps: EndpointCaps) {
        for (key, stats) in &other.endpoints {
            if let Some(mine) = self.endpoints.get_mut(key) {
                mine.merge(stats, caps);
            } else if self.endpoints.len() < max_endpoints {
                self.endpoints.insert(key.clone(), stats.clone());
            } else {
                self.untracked += stats.calls;
            }
        }
        self.untracked += other.untracked;
    }
}

/// A map with structured keys as a sequence of pairs: JSON keys must be strings.
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}
