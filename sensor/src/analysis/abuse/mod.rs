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

pub use crate::config::abuse::{AbuseConfig, Ramp};
use crate::{
    exchange::Exchange,
    record::{SessionSignals, SignalName, StoredExchange},
};
use state::{EndpointBaselines, RotationTracker, SessionState};

/// The documented combination of scores into a risk (see the module doc).
pub fn risk(config: &AbuseConfig, scores: &[(SignalName, u8)]) -> u8 {
    let unlikely: f64 = scores
        .iter()
        .map(|(name, score)| 1.0 - config.weight(*name) * f64::from(*score) / 100.0)
        .product();
    (100.0 * (1.0 - unlikely)).round().clamp(0.0, 100.0) as u8
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
    /// Sessions with readings not yet handed on ([`Self::take_updates`]), and the updates of
    /// such sessions evicted meanwhile.
    unreported: Vec<String>,
    evicted_updates: Vec<(usize, SessionSignals)>,
    pub counters: AbuseCounters,
}

impl AbuseTracker {
    pub fn new(config: AbuseConfig) -> Self {
        let bound = NonZeroUsize::new(config.max_sessions).unwrap_or(NonZeroUsize::MIN);
        Self {
            sessions: LruCache::new(bound),
            rotation: RotationTracker::new(4096),
            baselines: EndpointBaselines::new(4096),
            unreported: Vec::new(),
            evicted_updates: Vec::new(),
            config,
            counters: AbuseCounters::default(),
        }
    }

    /// Takes a reloaded configuration (thresholds, weights, bounds); the sessions' state stays,
    /// within the new bound.
    pub fn set_config(&mut self, config: AbuseConfig) {
        let bound = NonZeroUsize::new(config.max_sessions).unwrap_or(NonZeroUsize::MIN);
        if bound < self.sessions.cap() {
            let before = self.sessions.len();
            self.sessions.resize(bound);
            self.counters.sessions_evicted += (before - self.sessions.len()) as u64;
        } else {
            self.sessions.resize(bound);
        }
        self.config = config;
    }

    /// Takes one exchange of a session. `handed_at`: where the exchange waits in the batch on
    /// its way to the store, for the session's signals to go along ([`Self::take_updates`]);
    /// None when nothing stores them (the signals are then not computed).
    pub fn observe(
        &mut self,
        exchange: &Exchange,
        record: &StoredExchange,
        context: Context<'_>,
        handed_at: Option<usize>,
    ) {
        if !self.config.enabled {
            return;
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
            let evicted = self
                .sessions
                .push(context.session_id.to_owned(), SessionState::default());
            if let Some((_, mut state)) = evicted {
                self.counters.sessions_evicted += 1;
                // Its last readings go with its last exchange, still in the batch.
                if let Some(signals) = state.take_update(&self.config) {
                    self.evicted_updates.push((state.handed_at, signals));
                }
            }
        }
        let Some(state) = self.sessions.get_mut(context.session_id) else {
            return;
        };
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
        let Some(handed_at) = handed_at else {
            return;
        };
        // Scores on every exchange, reasons in words once per hand-over.
        let reading = state.reading(&self.config);
        if !state.unreported() {
            self.unreported.push(context.session_id.to_owned());
        }
        state.keep(&reading);
        state.handed_at = handed_at;
    }

    /// The sessions' signals that changed since the last call, each with where its session's
    /// newest exchange waits in the batch: the store takes them with that exchange (each
    /// signal at its strongest, as [`crate::record::SessionSignals::merge`] does).
    pub fn take_updates(&mut self) -> Vec<(usize, SessionSignals)> {
        let mut updates = std::mem::take(&mut self.evicted_updates);
        for id in std::mem::take(&mut self.unreported) {
            // `peek`: handing on is not a use of the session.
            let Some(state) = self.sessions.peek_mut(&id) else {
                continue; // evicted, and handed on then
            };
            if let Some(signals) = state.take_update(&self.config) {
                updates.push((state.handed_at, signals));
            }
        }
        self.counters.updates += updates.len() as u64;
        updates
    }
}

#[cfg(test)]
mod tests;
