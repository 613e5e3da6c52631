//! Sessions as the sinks see them: the decision for one exchange ([`Assignment`]) and the
//! summary of a whole session that the store keeps up to date ([`SessionSummary`]).

use serde::{Deserialize, Serialize};

use crate::{
    exchange::rfc3339_ns,
    record::{exchange::StoredExchange, findings::AttackClass, signals::SessionSignals},
};

/// What kind of key put an exchange in its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    Custom,
    Cookie,
    Jwt,
    Bearer,
    Basic,
    ApiKey,
    IpUserAgent,
    Ip,
}

impl KeyKind {
    /// Kinds that stand for wherever the traffic comes from rather than for a user.
    pub fn is_fallback(self) -> bool {
        matches!(self, Self::IpUserAgent | Self::Ip)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Custom => "custom",
            Self::Cookie => "cookie",
            Self::Jwt => "jwt",
            Self::Bearer => "bearer",
            Self::Basic => "basic",
            Self::ApiKey => "api_key",
            Self::IpUserAgent => "ip_user_agent",
            Self::Ip => "ip",
        }
    }
}

/// The session decision for one exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Assignment {
    pub session_id: String,
    pub key_kind: KeyKind,
    pub key_name: String,
    /// From the parameter typed `user` (hashed if configured so).
    pub user: Option<String>,
    pub role: Option<String>,
    /// The exchange opened a new session (or a new part of one).
    pub new_session: bool,
    /// The session's abuse signals, when this exchange changed them (the store keeps them with
    /// the session's summary).
    pub signals: Option<Box<SessionSignals>>,
}

/// Counted values kept per session; past the bound the rest is summed under `(other)`.
const MAX_ENDPOINTS: usize = 64;
const MAX_SMALL_SET: usize = 16;

/// A session as the `sessions` list shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub session_id: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub requests: u64,
    pub key_kind: String,
    pub key_name: String,
    pub user: Option<String>,
    pub role: Option<String>,
    // The next four lists only grow, in arrival order: stored exchanges refer to their entries
    // by position (see store::compact), so they must never be reordered or trimmed.
    pub client_ips: Vec<String>,
    pub user_agents: Vec<String>,
    pub hosts: Vec<String>,
    pub server_ips: Vec<String>,
    /// (method endpoint, count), most frequent first after [`SessionSummary::sort`].
    pub endpoints: Vec<(String, u64)>,
    pub methods: Vec<(String, u64)>,
    pub statuses: Vec<(u16, u64)>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub incomplete: u64,
    /// Abuse risk (0-100) and the signals behind it, as last computed.
    pub abuse: SessionSignals,
    /// Attack findings by class, in the order the classes first appeared.
    pub attacks: Vec<(AttackClass, u64)>,
    /// Requests slower than their endpoint's own p99 (see `analysis::inventory`).
    pub slow: u64,
}

/// Counts `key` in `list` (found with `is_key`, made with `key` only when new).
fn bump<K: PartialEq>(
    list: &mut Vec<(K, u64)>,
    is_key: impl Fn(&K) -> bool,
    key: impl FnOnce() -> K,
    bound: usize,
    other: impl FnOnce() -> K,
) {
    if let Some(entry) = list.iter_mut().find(|(k, _)| is_key(k)) {
        entry.1 += 1;
    } else if list.len() < bound {
        list.push((key(), 1));
    } else {
        let other = other();
        match list.iter_mut().find(|(k, _)| *k == other) {
            Some(entry) => entry.1 += 1,
            None => {
                // The bound is reached: the last slot becomes the catch-all.
                if let Some(last) = list.last_mut() {
                    *last = (other, last.1 + 1);
                }
            }
        }
    }
}

fn add_small(set: &mut Vec<String>, value: Option<&str>) -> bool {
    match value {
        Some(value)
            if !value.is_empty()
                && !set.iter().any(|v| v == value)
                && set.len() < MAX_SMALL_SET =>
        {
            set.push(value.to_owned());
            true
        }
        _ => false,
    }
}

/// Values a session gained with one exchange, for the secondary indexes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NewValues {
    pub ips: Vec<String>,
    pub hosts: Vec<String>,
    pub endpoints: Vec<String>,
    pub user: Option<String>,
}

impl SessionSummary {
    pub fn new(assignment: &Assignment, ts_ns: u64) -> Self {
        Self {
            session_id: assignment.session_id.clone(),
            start_ns: ts_ns,
            end_ns: ts_ns,
            key_kind: assignment.key_kind.as_str().to_owned(),
            key_name: assignment.key_name.clone(),
            ..Self::default()
        }
    }

    /// Counts `exchange` in; returns what the indexes must learn.
    pub fn add(&mut self, exchange: &StoredExchange, assignment: &Assignment) -> NewValues {
        let mut new = NewValues::default();
        self.start_ns = self.start_ns.min(exchange.ts_ns);
        let end = exchange.ts_ns + exchange.duration_us.unwrap_or(0) * 1000;
        self.end_ns = self.end_ns.max(end);
        self.requests += 1;
        self.slow += u64::from(exchange.slow);
        if self.user.is_none() && assignment.user.is_some() {
            self.user.clone_from(&assignment.user);
            new.user.clone_from(&assignment.user);
        }
        if self.role.is_none() {
            self.role.clone_from(&assignment.role);
        }
        if add_small(&mut self.client_ips, Some(&exchange.client_ip)) {
            new.ips.push(exchange.client_ip.clone());
        }
        add_small(&mut self.user_agents, exchange.user_agent.as_deref());
        add_small(&mut self.server_ips, Some(&exchange.server_ip));
        if add_small(&mut self.hosts, exchange.host.as_deref()) {
            new.hosts.extend(exchange.host.clone());
        }
        let method = exchange.method.as_deref().unwrap_or("-");
        if let Some(endpoint) = &exchange.endpoint {
            // Keys are "METHOD endpoint"; compared in parts so that counting allocates nothing.
            let path_is = |key: &str| key.split_once(' ').is_some_and(|(_, p)| p == endpoint);
            let is_key = |key: &String| {
                key.split_once(' ')
                    .is_some_and(|(m, p)| m == method && p == endpoint)
            };
            let known_path = self.endpoints.iter().any(|(k, _)| path_is(k));
            bump(
                &mut self.endpoints,
                is_key,
                || format!("{method} {endpoint}"),
                MAX_ENDPOINTS,
                || "(other)".to_owned(),
            );
            // Indexed once per session, and only while the session still counts it by name.
            if !known_path && self.endpoints.iter().any(|(k, _)| is_key(k)) {
                new.endpoints.push(endpoint.clone());
            }
        }
        bump(
            &mut self.methods,
            |m| m == method,
            || method.to_owned(),
            MAX_SMALL_SET,
            || "(other)".into(),
        );
        let status = exchange.status_code.unwrap_or(0);
        bump(
            &mut self.statuses,
            |s| *s == status,
            || status,
            MAX_SMALL_SET,
            || 0,
        );
        self.request_bytes += exchange.request_body_len.unwrap_or(0);
        self.response_bytes += exchange.response_body_len.unwrap_or(0);
        if exchange.request_truncated
            || exchange.response_truncated
            || exchange.gap
            || exchange.status_code.is_none()
        {
            self.incomplete += 1;
        }
        if let Some(signals) = &assignment.signals {
            self.abuse.merge(signals);
        }
        for finding in &exchange.attacks {
            match self.attacks.iter_mut().find(|(c, _)| *c == finding.class) {
                Some((_, n)) => *n += 1,
                None => self.attacks.push((finding.class, 1)),
            }
        }
        new
    }

    /// Attack findings of all classes.
    pub fn attack_count(&self) -> u64 {
        self.attacks.iter().map(|(_, n)| n).sum()
    }

    /// Orders the counted lists most frequent first (for display).
    pub fn sort(&mut self) {
        self.endpoints
            .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        self.methods
            .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        self.statuses
            .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    }

    /// The JSON object of `sessions --json` (and the head of `show --json`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut summary = self.clone();
        summary.sort();
        serde_json::json!({
            "session_id": summary.session_id,
            "start": rfc3339_ns(summary.start_ns),
            "end": rfc3339_ns(summary.end_ns),
            "duration_s": (summary.end_ns.saturating_sub(summary.start_ns)) as f64 / 1e9,
            "requests": summary.requests,
            "key_kind": summary.key_kind,
            "key_name": summary.key_name,
            "user": summary.user,
            "role": summary.role,
            "client_ips": summary.client_ips,
            "user_agents": summary.user_agents,
            "hosts": summary.hosts,
            "server_ips": summary.server_ips,
            "endpoints": summary.endpoints.iter().map(|(e, n)| serde_json::json!({"endpoint": e, "count": n})).collect::<Vec<_>>(),
            "methods": summary.methods.iter().map(|(m, n)| serde_json::json!({"method": m, "count": n})).collect::<Vec<_>>(),
            "statuses": summary.statuses.iter().map(|(s, n)| serde_json::json!({"status": s, "count": n})).collect::<Vec<_>>(),
            "request_bytes": summary.request_bytes,
            "response_bytes": summary.response_bytes,
            "incomplete": summary.incomplete,
            "slow": summary.slow,
            "risk": summary.abuse.risk,
            "signals": summary.abuse.signals,
            "attacks": summary
                .attacks
                .iter()
                .map(|(class, n)| (class.as_str().to_owned(), serde_json::Value::from(*n)))
                .collect::<serde_json::Map<_, _>>(),
        })
    }
}
