//! The bounded state behind the signals: per session (counters, buckets, capped sets of hashes)
//! and across sessions (an address and agent opening sessions; endpoints' usual sizes).

use std::{
    hash::{Hash, Hasher},
    net::IpAddr,
    num::NonZeroUsize,
    time::Duration,
};

use lru::LruCache;

use super::{AbuseConfig, AbuseCounters, agent};
use crate::{
    exchange::Exchange,
    record::{SessionSignals, Signal, SignalName, StoredExchange},
    sessions::extract::{json_body_if, query_pairs},
};

const SECOND: u64 = 1_000_000_000;
/// The request-rate window: six buckets of ten seconds.
const RATE_BUCKETS: usize = 6;
const RATE_BUCKET_NS: u64 = 10 * SECOND;
/// Gaps longer than this are pauses, not part of a rhythm.
const MAX_GAP_NS: u64 = 60 * SECOND;
/// Parameters followed for enumeration per session, and distinct values kept for each.
const MAX_ENUM_TRACKS: usize = 4;
const MAX_VALUES: usize = 128;
const MAX_ENDPOINTS: usize = 128;
const MAX_USERS: usize = 64;
const MAX_IPS: usize = 32;
const MAX_LABEL: usize = 120;
/// Requests of a session that feed the endpoints' usual response sizes.
pub(super) const TEACH_REQUESTS: u32 = 3;

fn hash_of(parts: &[&[u8]]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for part in parts {
        part.hash(&mut hasher);
    }
    hasher.finish()
}

/// Adds `value` to a capped set; false when the set is full and the value new.
fn insert_capped<T: PartialEq>(set: &mut Vec<T>, value: T, cap: usize) -> bool {
    if set.contains(&value) {
        return true;
    }
    if set.len() >= cap {
        return false;
    }
    set.push(value);
    true
}

/// A count of distinct values within an epoch window, and the most any epoch reached.
#[derive(Clone, Debug, Default)]
struct EpochSet {
    started_ns: u64,
    values: Vec<u32>,
    best: u32,
    /// How long the best epoch had run when it reached its count.
    best_span_ns: u64,
}

impl EpochSet {
    /// Adds a value seen at `ts_ns`; false when the set was full (the count is a lower bound).
    fn add(&mut self, value: u32, ts_ns: u64, window: Duration, cap: usize) -> bool {
        if self.values.is_empty()
            || ts_ns.saturating_sub(self.started_ns) > window.as_nanos() as u64
        {
            self.started_ns = ts_ns;
            self.values.clear();
        }
        let kept = insert_capped(&mut self.values, value, cap);
        let count = self.values.len() as u32;
        if count > self.best {
            self.best = count;
            self.best_span_ns = ts_ns.saturating_sub(self.started_ns);
        }
        kept
    }
}

/// One enumerable parameter of one endpoint (`GET /api/users/{id}`, position 3).
#[derive(Clone, Debug)]
struct EnumTrack {
    key: u64,
    label: String,
    values: EpochSet,
}

#[derive(Clone, Debug, Default)]
pub(super) struct SessionState {
    requests: u64,
    /// (10-second bucket number, requests in it).
    rate: [(u64, u32); RATE_BUCKETS],
    best_rate: u32,
    /// Welford's running mean and squared deviations of the gaps (ns), and their number.
    last_ns: u64,
    gaps: u64,
    gap_mean: f64,
    gap_m2: f64,
    tracks: Vec<EnumTrack>,
    /// 401/403 responses, and login attempts (failed ones are among the 401/403 or other 4xx).
    auth_failures: u64,
    login_failures: u64,
    login_label: Option<String>,
    users: Vec<u32>,
    endpoints: EpochSet,
    with_status: u64,
    client_errors: u64,
    not_found_run: u64,
    longest_not_found_run: u64,
    ips: Vec<IpAddr>,
    agent_hash: u64,
    agent: Option<(u8, String)>,
    bytes: u64,
    expected_bytes: f64,
    attacks: u64,
    pub(super) session_rotation: u32,
    /// Requests of this session counted in the baselines (see [`TEACH_REQUESTS`]).
    pub(super) taught: u32,
    /// What was last handed on, and the readings kept since ([`Self::keep`]).
    last_emitted: Option<Reading>,
    unreported: Option<Reading>,
    /// Where the session's newest exchange waits in the pipeline's batch: its update goes along
    /// with it.
    pub(super) handed_at: usize,
}

impl SessionState {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn observe(
        &mut self,
        exchange: &Exchange,
        record: &StoredExchange,
        config: &AbuseConfig,
        client: IpAddr,
        expected_bytes: Option<f64>,
        attacks: u32,
        counters: &mut AbuseCounters,
    ) {
        let ts_ns = record.ts_ns;
        self.requests += 1;
        self.count_rate(ts_ns);
        if self.requests > 1 {
            let gap = ts_ns.saturating_sub(self.last_ns);
            if gap <= MAX_GAP_NS {
                self.gaps += 1;
                let gap = gap as f64;
                let delta = gap - self.gap_mean;
                self.gap_mean += delta / self.gaps as f64;
                self.gap_m2 += delta * (gap - self.gap_mean);
            }
        }
        self.last_ns = self.last_ns.max(ts_ns);
        let method = record.method.as_deref().unwrap_or("-");
        let endpoint = record.endpoint.as_deref().unwrap_or("/");
        let uri = record.uri.as_deref().unwrap_or("/");
        self.count_enumeration(method, endpoint, uri, ts_ns, config, counters);
        let endpoint_hash = hash_of(&[method.as_bytes(), endpoint.as_bytes()]) as u32;
        if !self
            .endpoints
            .add(endpoint_hash, ts_ns, config.scope_window, MAX_ENDPOINTS)
        {
            counters.sets_capped += 1;
        }
        if let Some(status) = record.status_code {
            self.with_status += 1;
            if (400..500).contains(&status) {
                self.client_errors += 1;
            }
            if status == 404 {
                self.not_found_run += 1;
                self.longest_not_found_run = self.longest_not_found_run.max(self.not_found_run);
            } else {
                self.not_found_run = 0;
            }
            if status == 401 || status == 403 {
                self.auth_failures += 1;
            }
            if method == "POST" && is_login(endpoint) {
                if (400..500).contains(&status) {
                    self.login_failures += 1;
                    if self.login_label.is_none() {
                        self.login_label = Some(label(&format!("{method} {endpoint}")));
                    }
                }
                if let Some(user) = login_user(exchange)
                    && !insert_capped(
                        &mut self.users,
                        hash_of(&[user.as_bytes()]) as u32,
                        MAX_USERS,
                    )
                {
                    counters.sets_capped += 1;
                }
            }
        }
        if !insert_capped(&mut self.ips, client, MAX_IPS) {
            counters.sets_capped += 1;
        }
        let agent_hash = hash_of(&[record.user_agent.as_deref().unwrap_or("").as_bytes()]);
        if self.requests == 1 || agent_hash != self.agent_hash {
            self.agent_hash = agent_hash;
            let kind = agent::classify(record.user_agent.as_deref(), agent::now_s());
            if let Some(found) = agent::score(&kind)
                && self
                    .agent
                    .as_ref()
                    .is_none_or(|(score, _)| found.0 > *score)
            {
                self.agent = Some(found);
            }
        }
        self.bytes += record.response_body_len.unwrap_or(0);
        self.expected_bytes += expected_bytes.unwrap_or(0.0);
        self.attacks += u64::from(attacks);
    }

    fn count_rate(&mut self, ts_ns: u64) {
        let bucket = ts_ns / RATE_BUCKET_NS;
        let slot = &mut self.rate[(bucket % RATE_BUCKETS as u64) as usize];
        if slot.0 != bucket {
            *slot = (bucket, 0);
        }
        slot.1 += 1;
        let in_window: u32 = self
            .rate
            .iter()
            .filter(|(b, _)| bucket.saturating_sub(*b) < RATE_BUCKETS as u64)
            .map(|(_, n)| n)
            .sum();
        self.best_rate = self.best_rate.max(in_window);
    }

    /// Values of the endpoint's templated path segments, and of id-like query parameters.
    fn count_enumeration(
        &mut self,
        method: &str,
        endpoint: &str,
        uri: &str,
        ts_ns: u64,
        config: &AbuseConfig,
        counters: &mut AbuseCounters,
    ) {
        let path = uri.split(['?', '#']).next().unwrap_or(uri);
        for (position, (template, actual)) in endpoint.split('/').zip(path.split('/')).enumerate() {
            if template.starts_with('{') && template.ends_with('}') {
                let key = hash_of(&[
                    method.as_bytes(),
                    endpoint.as_bytes(),
                    &position.to_le_bytes(),
                ]);
                let label = || format!("{template} on {method} {endpoint}");
                self.track(key, label, actual, ts_ns, config, counters);
            }
        }
        if uri.contains('?') {
            for (name, value) in query_pairs(uri).take(16) {
                let lower = name.to_ascii_lowercase();
                if lower == "id"
                    || lower.ends_with("_id")
                    || lower.ends_with("id") && lower.len() > 3
                {
                    let key = hash_of(&[method.as_bytes(), endpoint.as_bytes(), name.as_bytes()]);
                    let label = || format!("?{name} on {method} {endpoint}");
                    self.track(key, label, &value, ts_ns, config, counters);
                }
            }
        }
    }

    fn track(
        &mut self,
        key: u64,
        label: impl FnOnce() -> String,
        value: &str,
        ts_ns: u64,
        config: &AbuseConfig,
        counters: &mut AbuseCounters,
    ) {
        let index = match self.tracks.iter().position(|t| t.key == key) {
            Some(index) => index,
            None if self.tracks.len() < MAX_ENUM_TRACKS => {
                self.tracks.push(EnumTrack {
                    key,
                    label: self::label(&label()),
                    values: EpochSet::default(),
                });
                self.tracks.len() - 1
            }
            None => {
                counters.sets_capped += 1;
                return;
            }
        };
        let value = hash_of(&[value.as_bytes()]) as u32;
        if !self.tracks[index]
            .values
            .add(value, ts_ns, config.enumeration_window, MAX_VALUES)
        {
            counters.sets_capped += 1;
        }
    }

    /// The session's scores and risk as of now, and the numbers their reasons would give:
    /// no text, no allocation (this runs on every exchange; reasons are written only when the
    /// signals are handed on, see [`Self::take_update`]).
    pub(super) fn reading(&self, config: &AbuseConfig) -> Reading {
        let mut reading = Reading::default();
        let mut add = |name: SignalName, score: u8, numbers: [f64; 4]| {
            reading.signals[name as usize] = (score, numbers);
        };
        if let Some((score, _)) = &self.agent {
            add(SignalName::BadUserAgent, *score, [0.0; 4]);
        }
        add(
            SignalName::RequestRate,
            config.request_rate.score(f64::from(self.best_rate)),
            [f64::from(self.best_rate), 0.0, 0.0, 0.0],
        );
        if self.gaps + 1 >= config.interval_min_requests && self.gap_mean > 0.0 {
            let sd = (self.gap_m2 / self.gaps as f64).sqrt();
            let regularity = if sd > 0.0 {
                self.gap_mean / sd
            } else {
                f64::MAX
            };
            add(
                SignalName::RequestInterval,
                config.request_interval.score(regularity),
                [(self.gaps + 1) as f64, self.gap_mean, sd, 0.0],
            );
        }
        if let Some((index, track)) = self
            .tracks
            .iter()
            .enumerate()
            .max_by_key(|(_, t)| t.values.best)
        {
            add(
                SignalName::Enumeration,
                config.enumeration.score(f64::from(track.values.best)),
                [
                    f64::from(track.values.best),
                    track.values.best_span_ns as f64,
                    index as f64,
                    0.0,
                ],
            );
        }
        let users = self.users.len() as f64;
        let failures = self.auth_failures.max(self.login_failures) as f64;
        add(
            SignalName::AuthFailures,
            config
                .auth_failures
                .score(failures)
                // Many user names matter once the failures alone are more than a person's.
                .max(if failures > config.auth_failures.low {
                    config.login_users.score(users)
                } else {
                    0
                }),
            [
                self.login_failures as f64,
                users,
                self.auth_failures as f64,
                f64::from(u8::from(self.login_label.is_some())),
            ],
        );
        add(
            SignalName::WideScope,
            config.wide_scope.score(f64::from(self.endpoints.best)),
            [
                f64::from(self.endpoints.best),
                self.endpoints.best_span_ns as f64,
                0.0,
                0.0,
            ],
        );
        if self.with_status >= config.errors_min_requests {
            let share = 100.0 * self.client_errors as f64 / self.with_status as f64;
            add(
                SignalName::Errors,
                config.errors.score(share).max(
                    config
                        .not_found_run
                        .score(self.longest_not_found_run as f64),
                ),
                [
                    self.client_errors as f64,
                    self.with_status as f64,
                    self.longest_not_found_run as f64,
                    0.0,
                ],
            );
        }
        // Also for a session keyed by its address: it reaches other addresses only through a
        // token or cookie it was handed, which then travels.
        add(
            SignalName::IpRotation,
            config.ip_rotation.score(self.ips.len() as f64),
            [self.ips.len() as f64, 0.0, 0.0, 0.0],
        );
        add(
            SignalName::SessionRotation,
            config
                .session_rotation
                .score(f64::from(self.session_rotation)),
            [f64::from(self.session_rotation), 0.0, 0.0, 0.0],
        );
        if self.bytes >= config.consumption_floor_bytes && self.expected_bytes > 0.0 {
            let ratio = self.bytes as f64 / self.expected_bytes;
            add(
                SignalName::ExcessiveConsumption,
                config.excessive_consumption.score(ratio),
                [self.bytes as f64, ratio, 0.0, 0.0],
            );
        }
        if self.attacks > 0 {
            let score = (50 + 10 * (self.attacks - 1)).min(100) as u8;
            add(
                SignalName::Attacks,
                score,
                [self.attacks as f64, 0.0, 0.0, 0.0],
            );
        }
        let mut scores = [(SignalName::Attacks, 0u8); SIGNALS];
        for (slot, (name, (score, _))) in scores
            .iter_mut()
            .zip(SignalName::ALL.iter().zip(&reading.signals))
        {
            *slot = (*name, *score);
        }
        reading.risk = super::risk(config, &scores);
        // Only the signals at or above the reporting score are handed on.
        for (score, _) in &mut reading.signals {
            if *score < config.report_score {
                *score = 0;
            }
        }
        reading
    }

    /// Takes the newest reading into what is to be handed on: each signal at its strongest,
    /// the newest of equal readings, the risk at its highest (as
    /// [`SessionSignals::merge`] takes them), so that handing on once later says what handing
    /// on every reading would have.
    pub(super) fn keep(&mut self, reading: &Reading) {
        let kept = self.unreported.get_or_insert_with(Reading::default);
        kept.risk = kept.risk.max(reading.risk);
        for (kept, new) in kept.signals.iter_mut().zip(&reading.signals) {
            if new.0 > 0 && new.0 >= kept.0 {
                *kept = *new;
            }
        }
    }

    /// Whether readings wait to be handed on.
    pub(super) fn unreported(&self) -> bool {
        self.unreported.is_some()
    }

    /// The signals kept since the last hand-over, with their reasons, when they say anything
    /// new; none are kept after it.
    pub(super) fn take_update(&mut self, config: &AbuseConfig) -> Option<SessionSignals> {
        let reading = self.unreported.take()?;
        if self.last_emitted == Some(reading) {
            return None;
        }
        self.last_emitted = Some(reading);
        Some(self.format(&reading, config))
    }

    /// A reading in words: the reasons give the numbers behind each score.
    fn format(&self, reading: &Reading, config: &AbuseConfig) -> SessionSignals {
        let mut signals = Vec::new();
        for (name, (score, n)) in SignalName::ALL.iter().zip(&reading.signals) {
            if *score == 0 {
                continue;
            }
            let reason = match name {
                // Its score only rises, with the agent that raised it: the newest is the one.
                SignalName::BadUserAgent => self
                    .agent
                    .as_ref()
                    .map(|(_, reason)| reason.clone())
                    .unwrap_or_default(),
                SignalName::RequestRate => format!("{} requests in 60 s", n[0]),
                SignalName::RequestInterval => format!(
                    "{} requests {:.3} s apart ± {:.3} s",
                    n[0],
                    n[1] / SECOND as f64,
                    n[2] / SECOND as f64
                ),
                // Tracks are only ever added: the index names the same one later.
                SignalName::Enumeration => format!(
                    "{} distinct values of {} in {}",
                    n[0],
                    self.tracks
                        .get(n[2] as usize)
                        .map_or("a parameter", |t| t.label.as_str()),
                    span(n[1] as u64)
                ),
                // The login label is set once, the first time there is one.
                SignalName::AuthFailures => match (&self.login_label, n[3] > 0.0) {
                    (Some(login), true) => format!(
                        "{} failed logins on {login} with {} user names; {} responses 401/403",
                        n[0], n[1], n[2]
                    ),
                    _ => format!("{} responses 401/403", n[2]),
                },
                SignalName::WideScope => {
                    format!("{} distinct endpoints in {}", n[0], span(n[1] as u64))
                }
                SignalName::Errors => {
                    let share = 100.0 * n[0] / n[1];
                    format!(
                        "{} of {} responses 4xx ({share:.0} %), {} × 404 in a row",
                        n[0], n[1], n[2]
                    )
                }
                SignalName::IpRotation => format!("{} client addresses in one session", n[0]),
                SignalName::SessionRotation => format!(
                    "{} sessions from one address and User-Agent within {}",
                    n[0],
                    humantime::format_duration(config.rotation_window)
                ),
                SignalName::ExcessiveConsumption => format!(
                    "{:.1} MiB in responses, {:.0}× what its requests usually get",
                    n[0] / (1 << 20) as f64,
                    n[1]
                ),
                SignalName::Attacks => format!("{} attack findings", n[0]),
            };
            signals.push(Signal {
                name: *name,
                score: *score,
                reason,
            });
        }
        signals.sort_by(|a, b| b.score.cmp(&a.score).then(a.name.cmp(&b.name)));
        SessionSignals {
            risk: reading.risk,
            signals,
        }
    }
}

const SIGNALS: usize = SignalName::ALL.len();

/// A session's scores (by [`SignalName`] order; 0: not reported) and risk, with the numbers of
/// each score's reason.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Reading {
    risk: u8,
    signals: [(u8, [f64; 4]); SIGNALS],
}

/// A login endpoint, by its path: what clients post credentials to.
fn is_login(endpoint: &str) -> bool {
    let last = endpoint
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    matches!(
        last.as_str(),
        "login"
            | "signin"
            | "sign_in"
            | "sign-in"
            | "logon"
            | "authenticate"
            | "auth"
            | "token"
            | "session"
            | "sessions"
            | "password"
    )
}

/// The user name a login request tries, from a JSON or form body.
fn login_user(exchange: &Exchange) -> Option<String> {
    const FIELDS: &[&str] = &["username", "user", "email", "login", "user_name", "account"];
    let request = exchange.request.as_ref()?;
    let content_type = request.meta.header("content-type").unwrap_or("");
    if content_type.contains("json") {
        let body = json_body_if(&request.meta, |_| true)?;
        let object = body.as_object()?;
        return FIELDS
            .iter()
            .find_map(|f| object.get(*f))
            .map(|v| v.to_string());
    }
    if content_type.contains("x-www-form-urlencoded") {
        let body = &request.meta.body;
        return form_urlencoded::parse(body)
            .take(64)
            .find(|(name, _)| FIELDS.contains(&name.as_ref()))
            .map(|(_, value)| value.into_owned());
    }
    None
}

/// `text` cut to a label's length on a character boundary.
fn label(text: &str) -> String {
    let mut end = text.len().min(MAX_LABEL);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A duration as a reason gives it: `2 s`, `3 min`.
fn span(ns: u64) -> String {
    let seconds = ns as f64 / SECOND as f64;
    if seconds < 1.0 {
        "under 1 s".to_owned()
    } else if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else {
        format!("{:.0} min", seconds / 60.0)
    }
}

/// Sessions opened by one address and User-Agent (cookie or token churn).
pub(super) struct RotationTracker {
    by_source: LruCache<u64, EpochSessions>,
}

struct EpochSessions {
    started_ns: u64,
    sessions: Vec<u64>,
    best: u32,
}

impl RotationTracker {
    pub(super) fn new(bound: usize) -> Self {
        Self {
            by_source: LruCache::new(NonZeroUsize::new(bound).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    /// Notes `session` for its source; the most sessions the source opened in one window.
    pub(super) fn observe(
        &mut self,
        client: IpAddr,
        agent: Option<&str>,
        session: &str,
        ts_ns: u64,
        window: Duration,
        counters: &mut AbuseCounters,
    ) -> u32 {
        let source = hash_of(&[
            client.to_string().as_bytes(),
            agent.unwrap_or("").as_bytes(),
        ]);
        let entry = self.by_source.get_or_insert_mut(source, || EpochSessions {
            started_ns: ts_ns,
            sessions: Vec::new(),
            best: 0,
        });
        if ts_ns.saturating_sub(entry.started_ns) > window.as_nanos() as u64 {
            entry.started_ns = ts_ns;
            entry.sessions.clear();
        }
        if !insert_capped(
            &mut entry.sessions,
            hash_of(&[session.as_bytes()]),
            MAX_VALUES,
        ) {
            counters.sets_capped += 1;
        }
        entry.best = entry.best.max(entry.sessions.len() as u32);
        entry.best
    }
}

/// Each endpoint's usual response size, to tell how much more a session takes.
pub(super) struct EndpointBaselines {
    means: LruCache<u64, (u64, f64)>,
}

impl EndpointBaselines {
    /// Samples after which the mean moves like an average of the last this many.
    const MEMORY: u64 = 1000;

    pub(super) fn new(bound: usize) -> Self {
        Self {
            means: LruCache::new(NonZeroUsize::new(bound).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    /// What this request's endpoint usually returns (before counting this one); counts it when
    /// `teach`.
    pub(super) fn observe(&mut self, record: &StoredExchange, teach: bool) -> Option<f64> {
        let bytes = record.response_body_len? as f64;
        let key = hash_of(&[
            record.method.as_deref().unwrap_or("").as_bytes(),
            record.endpoint.as_deref().unwrap_or("").as_bytes(),
        ]);
        let (count, mean) = self.means.get_or_insert_mut(key, || (0, 0.0));
        let expected = (*count > 0).then_some(*mean);
        if teach {
            *count += 1;
            *mean += (bytes - *mean) / (*count).min(Self::MEMORY) as f64;
        }
        expected
    }
}
