//! Abuse signals and a risk score per session.
//!
//! Bots, scrapers, credential stuffing and id enumeration are made of requests that are each
//! harmless: only the session shows them. Each session gets a small, bounded state, updated as
//! its exchanges arrive (counters, per-second buckets, capped sets of hashes; never its history),
//! from which every signal is scored 0-100 with a reason that gives the numbers, so that a
//! person can check why a session was flagged.
//!
//! A signal's score rises linearly from 0 at its `low` threshold to 50 at `flag` and to 100 at
//! `high`. The session's risk combines the signals like independent pieces of evidence:
//! `risk = 100 × (1 − Π (1 − weight × score / 100))`, so one strong signal is enough for a high
//! risk, several weak ones add up, and nothing exceeds 100. Attacks weigh most (weight 1.0).
//! Only signals at or above `report_score` are listed with a session.
//!
//! Windows are epochs rather than sliding: a count starts again when its window has passed since
//! the epoch began, and the highest count any epoch reached is kept.

pub mod agent;
mod state;

use std::{net::IpAddr, num::NonZeroUsize};

use lru::LruCache;
use serde::Deserialize;

use crate::{
    exchange::Exchange,
    record::{SessionSignals, SignalName, StoredExchange},
};
use state::{EndpointBaselines, RotationTracker, SessionState};

/// Where a signal's score starts (0), reaches 50 and reaches 100.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    pub low: f64,
    pub flag: f64,
    pub high: f64,
}

impl Ramp {
    const fn new(low: f64, flag: f64, high: f64) -> Self {
        Self { low, flag, high }
    }

    /// 0 up to `low`, 50 at `flag`, 100 from `high` on, linear in between.
    pub fn score(&self, value: f64) -> u8 {
        let score = if value.is_nan() || value <= self.low {
            0.0
        } else if value < self.flag {
            50.0 * (value - self.low) / (self.flag - self.low).max(f64::EPSILON)
        } else if value < self.high {
            50.0 + 50.0 * (value - self.flag) / (self.high - self.flag).max(f64::EPSILON)
        } else {
            100.0
        };
        score.round().clamp(0.0, 100.0) as u8
    }

    fn valid(&self) -> bool {
        self.low.is_finite()
            && self.flag.is_finite()
            && self.high.is_finite()
            && self.low < self.flag
            && self.flag < self.high
    }
}

/// The `[abuse]` section of the configuration: thresholds, weights and bounds (checked by
/// [`AbuseConfig::validate`] once the file is read).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AbuseConfig {
    pub enabled: bool,
    /// Signals below this score are not listed with a session (they still count in the risk).
    pub report_score: u8,
    /// Sessions whose state is held in memory; the least recently active goes first.
    pub max_sessions: usize,
    /// Requests in one minute.
    pub request_rate: Ramp,
    /// Regularity of the gaps between requests: 1 / coefficient of variation.
    pub request_interval: Ramp,
    /// Requests (gaps) needed before regularity is judged.
    pub interval_min_requests: u64,
    /// Distinct values of one templated path parameter or id query parameter of one endpoint
    /// within `enumeration_window`.
    pub enumeration: Ramp,
    #[serde(with = "humantime_serde_compat")]
    pub enumeration_window: std::time::Duration,
    /// Failed authentications (401/403, failed logins).
    pub auth_failures: Ramp,
    /// Distinct user names tried at login endpoints.
    pub login_users: Ramp,
    /// Distinct endpoints within `scope_window`.
    pub wide_scope: Ramp,
    #[serde(with = "humantime_serde_compat")]
    pub scope_window: std::time::Duration,
    /// Share of 4xx responses (percent), judged from `errors_min_requests` on.
    pub errors: Ramp,
    pub errors_min_requests: u64,
    /// Consecutive 404 responses.
    pub not_found_run: Ramp,
    /// Client addresses of one keyed session (a token used from many places).
    pub ip_rotation: Ramp,
    /// Sessions opened by one address and User-Agent within `rotation_window`.
    pub session_rotation: Ramp,
    #[serde(with = "humantime_serde_compat")]
    pub rotation_window: std::time::Duration,
    /// Response bytes of a session as a multiple of what its requests usually get.
    pub excessive_consumption: Ramp,
    /// Response bytes below which consumption is not judged.
    pub consumption_floor_bytes: u64,
    /// Weights of the signals in the risk (0-1), by name; unnamed signals keep their default.
    pub weights: std::collections::BTreeMap<SignalName, f64>,
}

impl Default for AbuseConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            report_score: 25,
            max_sessions: 50_000,
            request_rate: Ramp::new(100.0, 200.0, 1000.0),
            request_interval: Ramp::new(5.0, 10.0, 50.0),
            interval_min_requests: 20,
            enumeration: Ramp::new(10.0, 30.0, 100.0),
            enumeration_window: std::time::Duration::from_secs(120),
            auth_failures: Ramp::new(5.0, 10.0, 50.0),
            login_users: Ramp::new(2.0, 5.0, 20.0),
            wide_scope: Ramp::new(20.0, 30.0, 100.0),
            scope_window: std::time::Duration::from_secs(300),
            errors: Ramp::new(30.0, 50.0, 90.0),
            errors_min_requests: 10,
            not_found_run: Ramp::new(5.0, 10.0, 50.0),
            ip_rotation: Ramp::new(2.0, 4.0, 16.0),
            session_rotation: Ramp::new(4.0, 8.0, 40.0),
            rotation_window: std::time::Duration::from_secs(600),
            excessive_consumption: Ramp::new(3.0, 10.0, 50.0),
            consumption_floor_bytes: 10 << 20,
            weights: std::collections::BTreeMap::new(),
        }
    }
}

/// Durations as the rest of the file writes them (`2m`, `300s`).
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, de};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        let text = String::deserialize(d)?;
        let value = humantime::parse_duration(&text).map_err(|e| {
            de::Error::custom(format!("'{text}' is not a duration ({e}); e.g. \"2m\""))
        })?;
        if value.is_zero() {
            return Err(de::Error::custom("the duration must be longer than zero"));
        }
        Ok(value)
    }
}

impl AbuseConfig {
    /// What is wrong with the thresholds, if anything (a ramp must rise, weights lie in 0-1):
    /// the key at fault and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let ramps = [
            ("request_rate", &self.request_rate),
            ("request_interval", &self.request_interval),
            ("enumeration", &self.enumeration),
            ("auth_failures", &self.auth_failures),
            ("login_users", &self.login_users),
            ("wide_scope", &self.wide_scope),
            ("errors", &self.errors),
            ("not_found_run", &self.not_found_run),
            ("ip_rotation", &self.ip_rotation),
            ("session_rotation", &self.session_rotation),
            ("excessive_consumption", &self.excessive_consumption),
        ];
        for (name, ramp) in ramps {
            if !ramp.valid() {
                let reason = format!(
                    "abuse.{name}: low < flag < high is required (got {}, {}, {})",
                    ramp.low, ramp.flag, ramp.high
                );
                return Err((name, reason));
            }
        }
        for (name, weight) in &self.weights {
            if !(0.0..=1.0).contains(weight) {
                let reason = format!(
                    "abuse.weights.{}: {weight} is not between 0 and 1",
                    name.as_str()
                );
                return Err((name.as_str(), reason));
            }
        }
        if self.max_sessions == 0 {
            let reason = "abuse.max_sessions: must be at least 1".to_owned();
            return Err(("max_sessions", reason));
        }
        Ok(())
    }

    /// A signal's weight in the risk.
    pub fn weight(&self, name: SignalName) -> f64 {
        if let Some(weight) = self.weights.get(&name) {
            return *weight;
        }
        match name {
            SignalName::Attacks => 1.0,
            SignalName::AuthFailures => 0.9,
            // A token used from many places is a stolen or shared one.
            SignalName::Enumeration | SignalName::IpRotation => 0.8,
            SignalName::RequestRate
            | SignalName::WideScope
            | SignalName::SessionRotation
            | SignalName::ExcessiveConsumption => 0.7,
            SignalName::Errors => 0.6,
            SignalName::RequestInterval => 0.5,
            SignalName::BadUserAgent => 0.4,
        }
    }

    /// The documented combination of scores into a risk (see the module doc).
    pub fn risk(&self, scores: &[(SignalName, u8)]) -> u8 {
        let unlikely: f64 = scores
            .iter()
            .map(|(name, score)| 1.0 - self.weight(*name) * f64::from(*score) / 100.0)
            .product();
        (100.0 * (1.0 - unlikely)).round().clamp(0.0, 100.0) as u8
    }
}

/// What an exchange contributes besides the exchange itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    pub session_id: &'a str,
    /// The session is keyed by where the traffic comes from (IP + User-Agent), not a user.
    pub fallback: bool,
    /// Attack findings of the exchange.
    pub attacks: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AbuseCounters {
    pub sessions_tracked: u64,
    /// Session states dropped to stay within `max_sessions` (their signals start anew).
    pub sessions_evicted: u64,
    /// Distinct-value sets that reached their bound (counts above it are not exact).
    pub sets_capped: u64,
    /// Updates of a session's signals handed to the store.
    pub updates: u64,
}

impl AbuseCounters {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("sessions_tracked", self.sessions_tracked),
            ("sessions_evicted", self.sessions_evicted),
            ("sets_capped", self.sets_capped),
            ("updates", self.updates),
        ]
    }
}

/// The abuse stage: every session's bounded state, and what spans sessions (an address and
/// agent opening many sessions; endpoints' usual response sizes).
pub struct AbuseTracker {
    config: AbuseConfig,
    sessions: LruCache<String, SessionState>,
    rotation: RotationTracker,
    baselines: EndpointBaselines,
    pub counters: AbuseCounters,
}

impl AbuseTracker {
    pub fn new(config: AbuseConfig) -> Self {
        let bound = NonZeroUsize::new(config.max_sessions).unwrap_or(NonZeroUsize::MIN);
        Self {
            sessions: LruCache::new(bound),
            rotation: RotationTracker::new(4096),
            baselines: EndpointBaselines::new(4096),
            config,
            counters: AbuseCounters::default(),
        }
    }

    /// Takes one exchange of a session; the session's signals when they changed.
    pub fn observe(
        &mut self,
        exchange: &Exchange,
        record: &StoredExchange,
        context: Context<'_>,
    ) -> Option<SessionSignals> {
        if !self.config.enabled {
            return None;
        }
        let ts_ns = record.ts_ns;
        let client: IpAddr = exchange.client_addr().ip();
        let agent = record.user_agent.as_deref();
        let rotation = if context.fallback {
            0
        } else {
            self.rotation.observe(
                client,
                agent,
                context.session_id,
                ts_ns,
                self.config.rotation_window,
                &mut self.counters,
            )
        };
        if !self.sessions.contains(context.session_id) {
            self.counters.sessions_tracked += 1;
            if self.sessions.len() == self.sessions.cap().get() {
                self.counters.sessions_evicted += 1;
            }
            self.sessions
                .put(context.session_id.to_owned(), SessionState::default());
        }
        let state = self.sessions.get_mut(context.session_id)?;
        // A session teaches the baselines only with its first requests: one that takes a lot
        // must not make a lot look usual.
        let teach = state.taught < state::TEACH_REQUESTS;
        state.taught += u32::from(teach);
        let expected = self.baselines.observe(record, teach);
        state.observe(
            exchange,
            record,
            &self.config,
            client,
            expected,
            context.attacks,
            &mut self.counters,
        );
        state.session_rotation = state.session_rotation.max(rotation);
        let signals = state.signals(&self.config);
        if state.last_emitted.as_ref() == Some(&signals) {
            return None;
        }
        state.last_emitted = Some(signals.clone());
        self.counters.updates += 1;
        Some(signals)
    }
}

#[cfg(test)]
mod tests;
