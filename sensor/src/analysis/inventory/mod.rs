//! The API inventory: endpoints learned from traffic, what they carry and how they behave, and
//! how they compare with the OpenAPI documents configured for their hosts.
//!
//! # Layout
//!
//! - [`facts`]: what one exchange contributes ([`facts::ExchangeFacts`]: host, method, status,
//!   timings, sizes, parameters with types, auth kinds, sensitive kinds), extracted once.
//! - [`sensitive`]: sensitive data kinds (kinds only, never values), [`types`]: value types.
//! - [`templates`]: the learned second pass of endpoint templates; [`spec`]: OpenAPI documents,
//!   whose templates take precedence for their host.
//! - [`aggregate`]: per (host, method, template) statistics, persistable and mergeable.
//! - [`openapi_out`]: the discovered API as an OpenAPI 3.1 document.
//! - This module: [`Inventory`], the engine the pipeline feeds ([`Inventory::observe`]), its
//!   per-exchange verdict (template, spec status, slow) and the rows `apisessions endpoints`
//!   prints ([`Inventory::rows`]).

pub mod aggregate;
pub mod facts;
pub mod openapi_out;
pub mod sensitive;
pub mod spec;
pub mod templates;
pub mod types;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use self::{
    aggregate::{Aggregate, EndpointCaps, EndpointKey, EndpointStats, Percentiles},
    facts::{AuthKind, ExchangeFacts},
    sensitive::{Scanner, SensitiveKind},
    spec::{Spec, SpecStatus},
    templates::{LearnerCounters, TemplateLearner},
    types::TypeSet,
};
pub use crate::config::inventory::InventoryConfig;
use crate::{
    exchange::{Exchange, rfc3339_ns},
    record::{SessionSummary, StoredExchange},
};

/// The per-endpoint bounds the configuration sets.
fn caps(config: &InventoryConfig) -> EndpointCaps {
    EndpointCaps {
        query_params: config.max_query_params,
        body_fields: config.max_body_fields,
    }
}

/// What the inventory says about one exchange, for its record.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// The endpoint template: the spec's when a spec for the host documents the request, else
    /// the learned one.
    pub template: String,
    /// None when no spec is configured for the host.
    pub spec_status: Option<SpecStatus>,
    /// Slower than the endpoint's own p99 so far (and above the floor, after enough samples).
    pub slow: bool,
}

/// What the inventory keeps across restarts: every endpoint's statistics and what the template
/// learner knows (so the rows written before a restart are regrouped as before it).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct InventoryState {
    pub aggregate: Aggregate,
    pub templates: templates::LearnerState,
}

/// First byte of an encoded [`InventoryState`]; bump it when the state's types or their meaning
/// change incompatibly (a state of another version is not read: the inventory starts anew).
///
/// 2: the learner's value ids carry a shape bit.
const STATE_VERSION: u8 = 2;
/// An endpoint's exchanges whose bodies are all scanned for sensitive data; after them, one in
/// [`BODY_SCAN_EVERY`] is.
const BODY_SCAN_WARMUP: u64 = 256;
const BODY_SCAN_EVERY: u64 = 16;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("written by inventory state version {0}, this build reads version {STATE_VERSION}")]
    Version(u8),
    #[error("empty inventory state")]
    Empty,
    #[error(transparent)]
    Postcard(#[from] postcard::Error),
}

impl InventoryState {
    /// The bytes the store keeps (it knows nothing of the inventory's types).
    pub fn encode(&self) -> Result<Vec<u8>, StateError> {
        Ok(postcard::to_extend(self, vec![STATE_VERSION])?)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        match bytes.split_first() {
            Some((&STATE_VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
            Some((version, _)) => Err(StateError::Version(*version)),
            None => Err(StateError::Empty),
        }
    }
}

/// Counters of what the inventory could not take in whole (for `apisessions stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryCounters {
    pub exchanges_without_request: u64,
    /// Exchanges of endpoints past `max_endpoints`.
    pub endpoints_untracked: u64,
    /// Exchanges whose scan or parameter list hit a bound.
    pub exchanges_capped: u64,
    /// Exchanges whose bodies were not scanned for sensitive data (see
    /// [`Inventory::observe`]: busy endpoints are sampled).
    pub body_scans_sampled_out: u64,
    pub learner: LearnerCounters,
}

/// Loads the specs of the configuration's `[[api.specs]]` (relative paths are relative to
/// `config_file`'s directory).
pub fn load_configured_specs(
    config: &crate::config::Config,
    config_file: Option<&std::path::Path>,
) -> Result<Vec<HostSpec>, spec::SpecError> {
    let config_file = config_file.unwrap_or(std::path::Path::new(""));
    let paths: Vec<_> = config
        .api
        .specs
        .iter()
        .map(|s| (s.host.as_str(), s.path(config_file)))
        .collect();
    load_specs(paths.iter().map(|(h, p)| (*h, p.as_path())))
}

/// Loads the specs configured in `[[api.specs]]` (or given with `--spec`, host `*`), each for
/// its host; the first spec that covers a host is the one used for it.
pub fn load_specs<'a>(
    sources: impl IntoIterator<Item = (&'a str, &'a std::path::Path)>,
) -> Result<Vec<HostSpec>, spec::SpecError> {
    sources
        .into_iter()
        .map(|(host, file)| {
            Ok(HostSpec {
                host: host.to_ascii_lowercase(),
                spec: Spec::load(file)?,
            })
        })
        .collect()
}

impl InventoryCounters {
    /// The counters by name, for the `inventory` stage of `apisessions stats`.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("exchanges_without_request", self.exchanges_without_request),
            ("endpoints_untracked", self.endpoints_untracked),
            ("exchanges_capped", self.exchanges_capped),
            ("body_scans_sampled_out", self.body_scans_sampled_out),
            ("positions_untracked", self.learner.positions_untracked),
            ("values_untracked", self.learner.values_untracked),
            ("positions_saturated", self.learner.positions_saturated),
        ]
    }
}

/// A spec configured for a host.
#[derive(Clone, Debug)]
pub struct HostSpec {
    /// Compared with the request's Host (lower case); without a port it matches any port.
    pub host: String,
    pub spec: Spec,
}

impl HostSpec {
    /// `*` covers every host: what `endpoints --spec FILE` (no host) compares with.
    fn covers(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let wanted = self.host.to_ascii_lowercase();
        wanted == "*"
            || host == wanted
            || (!wanted.contains(':')
                && host
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| h == wanted && p.bytes().all(|b| b.is_ascii_digit())))
    }
}

pub struct Inventory {
    config: InventoryConfig,
    scanner: Scanner,
    learner: TemplateLearner,
    specs: Vec<HostSpec>,
    aggregate: Aggregate,
    counters: InventoryCounters,
}

impl Inventory {
    pub fn new(config: InventoryConfig, specs: Vec<HostSpec>) -> Self {
        Self {
            learner: TemplateLearner::new(config.templates.clone()),
            config,
            scanner: Scanner::new(),
            specs,
            aggregate: Aggregate::default(),
            counters: InventoryCounters::default(),
        }
    }

    pub fn counters(&self) -> InventoryCounters {
        InventoryCounters {
            learner: self.learner.counters(),
            endpoints_untracked: self.aggregate.untracked,
            ..self.counters
        }
    }

    /// The persistable state (the store writes it and merges it back with [`Self::merge`]).
    pub fn state(&self) -> InventoryState {
        InventoryState {
            aggregate: self.aggregate.clone(),
            templates: self.learner.state(),
        }
    }

    /// Adds a persisted or imported state to this one.
    pub fn merge(&mut self, other: &InventoryState) {
        self.aggregate.merge(
            &other.aggregate,
            self.config.max_endpoints,
            caps(&self.config),
        );
        self.learner.merge(&other.templates);
    }

    fn spec_for(&self, host: &str) -> Option<&Spec> {
        self.specs.iter().find(|s| s.covers(host)).map(|s| &s.spec)
    }

    /// The template of a request: the spec's when one covers the host and documents the
    /// request, else the first pass ([`crate::endpoint::template`]) refined by the learner.
    pub fn template(
        &mut self,
        host: &str,
        method: &str,
        uri: &str,
    ) -> (String, Option<SpecStatus>) {
        let path = uri.split(['?', '#']).next().unwrap_or(uri);
        let (spec_template, status) = match self.spec_for(host) {
            Some(spec) => {
                let m = spec.match_request(method, path);
                (m.template, Some(m.status))
            }
            None => (None, None),
        };
        let template = match spec_template {
            Some(t) => t,
            None => self
                .learner
                .learn(host, method, &crate::endpoint::template(uri)),
        };
        (template, status)
    }

    /// Counts an exchange; its template, spec status and slowness for its record.
    pub fn observe(&mut self, exchange: &Exchange, session_id: &str) -> Option<Verdict> {
        let Some(mut facts) = ExchangeFacts::head(exchange) else {
            self.counters.exchanges_without_request += 1;
            return None;
        };
        let (template, spec_status) = self.template(&facts.host, &facts.method, &facts.uri);
        let bodies = self.body_scan_due(&facts, &template);
        self.counters.body_scans_sampled_out += u64::from(!bodies);
        facts.scan(exchange, &mut self.scanner, bodies);
        let slow = self.observe_facts(&facts, template.clone(), session_id);
        Some(Verdict {
            template,
            spec_status,
            slow,
        })
    }

    /// Whether this exchange's bodies are scanned for sensitive data: always on an endpoint's
    /// first [`BODY_SCAN_WARMUP`] exchanges, then one in [`BODY_SCAN_EVERY`]. Scanning bodies
    /// is the inventory's largest cost, and an endpoint's kinds are a set that a busy endpoint
    /// fills in its first exchanges; a kind that shows up only later is found a few calls on.
    fn body_scan_due(&self, facts: &ExchangeFacts, template: &str) -> bool {
        let key = EndpointKey {
            host: facts.host.clone(),
            method: facts.method.clone(),
            template: template.to_owned(),
        };
        self.aggregate
            .endpoints
            .get(&key)
            .is_none_or(|s| s.calls < BODY_SCAN_WARMUP || s.calls % BODY_SCAN_EVERY == 0)
    }

    /// Counts an exchange's facts under `template` (the pipeline's own, or from
    /// [`Self::template`]); whether it was slow.
    pub fn observe_facts(
        &mut self,
        facts: &ExchangeFacts,
        template: String,
        session_id: &str,
    ) -> bool {
        if facts.capped {
            self.counters.exchanges_capped += 1;
        }
        let key = EndpointKey {
            host: facts.host.clone(),
            method: facts.method.clone(),
            template,
        };
        let (caps, config) = (caps(&self.config), &self.config);
        let Some(stats) = self.aggregate.entry(key, config.max_endpoints) else {
            return false;
        };
        // Judged against the endpoint's distribution before this exchange joins it.
        let slow = facts.duration_ms.is_some_and(|ms| {
            ms >= config.slow_floor_ms as f64
                && stats.timed() >= config.slow_min_samples
                && stats.duration_ms().p99.is_some_and(|p99| ms > p99)
        });
        stats.add(facts, session_id, caps);
        if slow {
            stats.slow += 1;
        }
        slow
    }

    /// The endpoints, sorted by host, endpoint, method; rows of templates written before the
    /// learner knew better are regrouped under the template it writes now, and every spec
    /// operation never seen is a row of its own (`orphan`, no calls).
    pub fn rows(&self) -> Vec<EndpointRow> {
        let mut grouped: BTreeMap<EndpointKey, EndpointStats> = BTreeMap::new();
        for (key, stats) in &self.aggregate.endpoints {
            // What a spec documents is written with the spec's template (also rows counted
            // before the spec was given, under a learned or first-pass one: `--spec`); the rest
            // as the learner would write it now.
            let template = self
                .spec_for(&key.host)
                .and_then(|spec| spec.match_request(&key.method, &key.template).template)
                .unwrap_or_else(|| self.learner.resolve(&key.host, &key.method, &key.template));
            let key = EndpointKey {
                template,
                ..key.clone()
            };
            match grouped.get_mut(&key) {
                Some(mine) => mine.merge(stats, caps(&self.config)),
                None => {
                    grouped.insert(key, stats.clone());
                }
            }
        }
        let mut seen_operations = BTreeSet::new();
        let mut rows: Vec<EndpointRow> = grouped
            .iter()
            .map(|(key, stats)| {
                let covering = self.specs.iter().find(|s| s.covers(&key.host));
                let spec_status = covering.map(|host_spec| {
                    let m = host_spec.spec.match_request(&key.method, &key.template);
                    if let Some(op) = m.operation {
                        // Under the spec's own host (`*` for `--spec`), as orphans are looked
                        // up below.
                        seen_operations.insert((
                            host_spec.host.clone(),
                            op.method.clone(),
                            op.path.clone(),
                        ));
                    }
                    m.status
                });
                EndpointRow::new(key, stats, spec_status)
            })
            .collect();
        for host_spec in &self.specs {
            // Under the first base path: the spec's own first choice of server.
            let base = host_spec
                .spec
                .base_paths
                .first()
                .cloned()
                .unwrap_or_default();
            for op in &host_spec.spec.operations {
                if !seen_operations.contains(&(
                    host_spec.host.clone(),
                    op.method.clone(),
                    op.path.clone(),
                )) {
                    rows.push(EndpointRow::orphan(
                        &host_spec.host,
                        &op.method,
                        &format!("{base}{}", op.path),
                    ));
                }
            }
        }
        rows.sort_by(|a, b| {
            (&a.host, &a.endpoint, &a.method).cmp(&(&b.host, &b.endpoint, &b.method))
        });
        rows
    }
}

/// Which endpoints `apisessions endpoints` (and the console's endpoints page) list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointFilter {
    /// Of this host (case-insensitive); rows of a `*` spec (`--spec`) always match.
    pub host: Option<String>,
    pub status: Option<SpecStatus>,
    /// Called at or after this time; orphans, never called, are kept.
    pub since_ns: Option<u64>,
    /// Of this method (case-insensitive).
    pub method: Option<String>,
    /// Of this template, exactly.
    pub endpoint: Option<String>,
}

impl EndpointFilter {
    pub fn matches(&self, row: &EndpointRow) -> bool {
        self.host
            .as_ref()
            .is_none_or(|h| row.host.eq_ignore_ascii_case(h) || row.host == "*")
            && self.status.is_none_or(|s| row.spec_status == Some(s))
            && self.since_ns.is_none_or(|t| {
                row.spec_status == Some(SpecStatus::Orphan)
                    || row
                        .last_seen
                        .as_deref()
                        .is_some_and(|seen| seen_since(seen, t))
            })
            && self
                .method
                .as_ref()
                .is_none_or(|m| row.method.eq_ignore_ascii_case(m))
            && self.endpoint.as_ref().is_none_or(|e| row.endpoint == *e)
    }
}

/// Whether an RFC 3339 time is at or after `since_ns`.
fn seen_since(seen: &str, since_ns: u64) -> bool {
    humantime::parse_rfc3339_weak(seen)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .is_some_and(|d| d.as_nanos() as u64 >= since_ns)
}

/// Stored records' and sessions' endpoints as the learner writes them now, for the readers
/// (`export`, `show`, `sessions`, the console).
///
/// A record keeps the template learned when it was written; a position that became variable
/// only later (the first user names seen under `/users/`) reads as the parameter it turned out
/// to be, the same way [`Inventory::rows`] regroups the inventory. Spec templates stay as they
/// are.
#[derive(Debug, Default)]
pub struct EndpointResolver {
    learner: TemplateLearner,
    /// Resolved endpoints by host, method and written endpoint: a reader resolves the same few
    /// thousand endpoints over and over, and each resolution judges every position on its way.
    /// Bounded by [`Self::MEMO`]; past it, resolved anew each time.
    memo: std::cell::RefCell<std::collections::HashMap<String, String>>,
}

impl EndpointResolver {
    /// From the inventory state a store holds (`Store::inventory`); without one, endpoints are
    /// read as they were written.
    pub fn new(config: &InventoryConfig, state: Option<&[u8]>) -> Result<Self, StateError> {
        let mut learner = TemplateLearner::new(config.templates.clone());
        if let Some(bytes) = state {
            learner.merge(&InventoryState::decode(bytes)?.templates);
        }
        Ok(Self {
            learner,
            memo: Default::default(),
        })
    }

    const MEMO: usize = 1 << 16;

    /// The record's endpoint as the learner writes it now (a spec's template as it is).
    pub fn record(&self, record: &mut StoredExchange) {
        if matches!(
            record.spec_status,
            Some(SpecStatus::Documented | SpecStatus::Zombie)
        ) {
            return;
        }
        let (Some(method), Some(endpoint)) = (&record.method, &record.endpoint) else {
            return;
        };
        let host = facts::host_key(record.host.as_deref(), || {
            record.server_ip.parse().map_or_else(
                |_| record.server_ip.clone(),
                |ip| std::net::SocketAddr::new(ip, record.server_port).to_string(),
            )
        });
        record.endpoint = Some(self.resolve(&host, method, endpoint));
    }

    /// The session's endpoint counts ("METHOD endpoint") under the templates of now, merged
    /// where several written ones resolve to one; most frequent first.
    pub fn summary(&self, summary: &mut SessionSummary) {
        let hosts: Vec<String> = summary
            .hosts
            .iter()
            .map(|h| facts::host_key(Some(h), String::new))
            .collect();
        let mut merged: BTreeMap<String, u64> = BTreeMap::new();
        for (key, count) in summary.endpoints.drain(..) {
            let resolved = key.split_once(' ').and_then(|(method, endpoint)| {
                hosts
                    .iter()
                    .map(|host| self.resolve(host, method, endpoint))
                    .find(|resolved| resolved != endpoint)
                    .map(|resolved| format!("{method} {resolved}"))
            });
            *merged.entry(resolved.unwrap_or(key)).or_default() += count;
        }
        summary.endpoints = merged.into_iter().collect();
        summary.sort();
    }

    /// Whether a session has an endpoint that reads as `wanted` (a template or a path), for
    /// `sessions --endpoint`.
    pub fn touches(&self, summary: &SessionSummary, wanted: &str) -> bool {
        let wanted = crate::endpoint::template(wanted);
        summary.endpoints.iter().any(|(key, _)| {
            key.split_once(' ').is_some_and(|(method, endpoint)| {
                endpoint == wanted
                    || summary.hosts.iter().any(|host| {
                        let host = facts::host_key(Some(host), String::new);
                        let resolved = self.resolve(&host, method, endpoint);
                        resolved == wanted || resolved == self.resolve(&host, method, &wanted)
                    })
            })
        })
    }

    /// The start that every endpoint reading as `wanted` was written with: up to its first
    /// placeholder, or to the first position the learner turned variable; what
    /// `sessions --endpoint` looks up in the store's endpoint index.
    pub fn lookup_prefix<'w>(&self, wanted: &'w str) -> &'w str {
        let mut end = wanted.find('{').unwrap_or(wanted.len());
        for prefix in self.learner.variable_prefixes() {
            if prefix.len() < end && wanted.starts_with(prefix) {
                end = prefix.len();
            }
        }
        &wanted[..end]
    }

    fn resolve(&self, host: &str, method: &str, endpoint: &str) -> String {
        let key = format!("{host}\0{method}\0{endpoint}");
        if let Some(known) = self.memo.borrow().get(&key) {
            return known.clone();
        }
        let resolved = self
            .learner
            .resolve(host, facts::method_key(method), endpoint);
        let mut memo = self.memo.borrow_mut();
        if memo.len() < Self::MEMO {
            memo.insert(key, resolved.clone());
        }
        resolved
    }
}

/// One endpoint as `apisessions endpoints --json` prints it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EndpointRow {
    pub host: String,
    pub method: String,
    pub endpoint: String,
    pub calls: u64,
    /// Distinct sessions (an estimate past a few hundred, within about 2 %).
    pub sessions: u64,
    /// Per status code, as `sessions --json` writes them.
    pub statuses: Vec<StatusCount>,
    /// Responses per class: `2xx`, `3xx`, `4xx`, `5xx`, and `other` (no response, 1xx, codes
    /// beyond the bound).
    pub status_classes: BTreeMap<&'static str, u64>,
    /// Request start to response end.
    pub latency_ms: Percentiles,
    /// Request start to the response's first byte.
    pub ttfb_ms: Percentiles,
    pub request_bytes: Sizes,
    pub response_bytes: Sizes,
    pub auth: Vec<&'static str>,
    /// Kinds seen in requests or responses.
    pub sensitive: Vec<&'static str>,
    pub sensitive_request: Vec<&'static str>,
    pub sensitive_response: Vec<&'static str>,
    pub params: Vec<ParamRow>,
    /// `documented`, `shadow`, `zombie` or `orphan`; null without a spec for the host.
    pub spec_status: Option<SpecStatus>,
    pub risk: u8,
    pub risk_reasons: Vec<String>,
    /// Exchanges marked slow.
    pub slow: u64,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusCount {
    pub status: u16,
    pub count: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Sizes {
    pub avg: u64,
    pub max: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParamRow {
    pub name: String,
    /// `query` or `body`.
    #[serde(rename = "in")]
    pub place: facts::ParamIn,
    pub types: TypeSet,
    pub count: u64,
}

impl EndpointRow {
    fn new(key: &EndpointKey, stats: &EndpointStats, spec_status: Option<SpecStatus>) -> Self {
        let mut classes: BTreeMap<&'static str, u64> = ["2xx", "3xx", "4xx", "5xx", "other"]
            .into_iter()
            .map(|c| (c, 0))
            .collect();
        for (code, n) in &stats.statuses {
            let class = match code / 100 {
                2 => "2xx",
                3 => "3xx",
                4 => "4xx",
                5 => "5xx",
                _ => "other",
            };
            *classes.entry(class).or_default() += n;
        }
        let answered: u64 = stats.statuses.values().sum();
        *classes.entry("other").or_default() +=
            stats.other_statuses + stats.calls.saturating_sub(answered + stats.other_statuses);
        let avg = |total: u64| total.checked_div(stats.calls).unwrap_or(0);
        let params = [
            (facts::ParamIn::Query, &stats.query),
            (facts::ParamIn::Body, &stats.body),
        ]
        .into_iter()
        .flat_map(|(place, table)| {
            table.fields.iter().map(move |(name, f)| ParamRow {
                name: name.clone(),
                place,
                types: f.types,
                count: f.count,
            })
        })
        .collect();
        let (risk, risk_reasons) = risk(stats, spec_status);
        let seen = |ns: u64| (stats.calls > 0).then(|| rfc3339_ns(ns));
        Self {
            host: key.host.clone(),
            method: key.method.clone(),
            endpoint: key.template.clone(),
            calls: stats.calls,
            sessions: stats.sessions(),
            statuses: stats
                .statuses
                .iter()
                .map(|(status, count)| StatusCount {
                    status: *status,
                    count: *count,
                })
                .collect(),
            status_classes: classes,
            latency_ms: stats.duration_ms(),
            ttfb_ms: stats.ttfb_ms(),
            request_bytes: Sizes {
                avg: avg(stats.request_bytes_total),
                max: stats.request_bytes_max,
            },
            response_bytes: Sizes {
                avg: avg(stats.response_bytes_total),
                max: stats.response_bytes_max,
            },
            auth: stats.auth.names(),
            sensitive: stats
                .request_sensitive
                .union(stats.response_sensitive)
                .names(),
            sensitive_request: stats.request_sensitive.names(),
            sensitive_response: stats.response_sensitive.names(),
            params,
            spec_status,
            risk,
            risk_reasons,
            slow: stats.slow,
            first_seen: seen(stats.first_seen_ns),
            last_seen: seen(stats.last_seen_ns),
        }
    }

    fn orphan(host: &str, method: &str, endpoint: &str) -> Self {
        let key = EndpointKey {
            host: host.to_owned(),
            method: method.to_owned(),
            template: endpoint.to_owned(),
        };
        let mut row = Self::new(&key, &EndpointStats::default(), Some(SpecStatus::Orphan));
        // An operation nobody calls carries no risk from traffic.
        row.risk = 0;
        row.risk_reasons.clear();
        row
    }
}

/// Credentials and secrets: one in a response hands out access.
const SECRET_KINDS: &[SensitiveKind] = &[
    SensitiveKind::Password,
    SensitiveKind::PrivateKey,
    SensitiveKind::AwsAccessKey,
    SensitiveKind::GithubToken,
    SensitiveKind::StripeKey,
    SensitiveKind::SlackToken,
    SensitiveKind::GoogleApiKey,
];
/// Personal and financial data.
const PERSONAL_KINDS: &[SensitiveKind] = &[
    SensitiveKind::Email,
    SensitiveKind::Phone,
    SensitiveKind::PaymentCard,
    SensitiveKind::Iban,
    SensitiveKind::UsSsn,
];

/// Risk 0-10 and why: what leaks out (secrets 4, personal data 3, addresses or tokens 1), who
/// can call it (no authentication seen 2), what the spec says (shadow 2, zombie 3), how it fails
/// (5xx over 5 % 1, 4xx over 50 % 1). Attacks join once the attack stage lands.
pub fn risk(stats: &EndpointStats, spec_status: Option<SpecStatus>) -> (u8, Vec<String>) {
    let mut score = 0u8;
    let mut reasons = Vec::new();
    let mut add = |points: u8, reason: String| {
        score = score.saturating_add(points);
        reasons.push(reason);
    };
    let out = stats.response_sensitive;
    let named = |kinds: &[SensitiveKind]| -> Vec<&'static str> {
        kinds
            .iter()
            .filter(|k| out.contains(**k))
            .map(|k| k.name())
            .collect()
    };
    let secrets = named(SECRET_KINDS);
    if !secrets.is_empty() {
        add(4, format!("secrets in responses: {}", secrets.join(", ")));
    }
    let personal = named(PERSONAL_KINDS);
    if !personal.is_empty() {
        add(
            3,
            format!("personal data in responses: {}", personal.join(", ")),
        );
    }
    let other = named(&[SensitiveKind::IpAddress, SensitiveKind::Jwt]);
    if !other.is_empty() {
        add(1, format!("in responses: {}", other.join(", ")));
    }
    if stats.calls > 0 && stats.auth == facts::AuthSet::only(AuthKind::None) {
        add(2, "no authentication seen".to_owned());
    }
    match spec_status {
        Some(SpecStatus::Shadow) => add(2, "shadow: not in the API specification".to_owned()),
        Some(SpecStatus::Zombie) => add(
            3,
            "zombie: deprecated in the specification, still called".to_owned(),
        ),
        _ => {}
    }
    let errors = stats.status_share(5);
    if errors > 0.05 {
        add(1, format!("server errors: {:.0}% of calls", errors * 100.0));
    }
    let refused = stats.status_share(4);
    if refused > 0.5 {
        add(
            1,
            format!("client errors: {:.0}% of calls", refused * 100.0),
        );
    }
    (score.min(10), reasons)
}

#[cfg(test)]
mod tests;
