//! The query commands over the fleet (`sessions`, `show`, `export` with `--central`): the same
//! filters as the local store, answered from the central tables.
//!
//! The SQL below is constant. Every filter value travels in the external table `params` (one
//! row, see [`super::client`]); an absent filter is its type's neutral value (`''`, 0, the
//! widest time range), which no real filter value is. The only value written into SQL is the
//! row limit, a `usize` formatted by Rust, never text from a user.
//!
//! Reads use `FINAL`, so a row shipped twice counts once even before ClickHouse merged it
//! away, and a session is the merge of its hosts' latest rows ([`CentralSession::merge`]):
//! filters apply to the merged session (`--ip` of one host and `--status` of another find it).

use std::collections::HashMap;

use serde::Deserialize;

use super::{
    CentralError,
    client::{Client, ExternalTable},
    rows::{CentralSession, ExchangeRow, SessionRow},
};
use crate::{
    analysis::inventory::{EndpointRow, Sizes, StatusCount, aggregate::Percentiles},
    config::CentralSection,
    exchange::rfc3339_ns,
    record::{AttackClass, SignalName, SpecStatus},
    store::SessionFilter,
};

const SESSION_IDS: &str = "
WITH
    (SELECT since_ns FROM params) AS p_since,
    (SELECT until_ns FROM params) AS p_until,
    (SELECT ip FROM params) AS p_ip,
    (SELECT host FROM params) AS p_host,
    (SELECT endpoint FROM params) AS p_endpoint,
    (SELECT method FROM params) AS p_method,
    (SELECT status FROM params) AS p_status,
    (SELECT user FROM params) AS p_user,
    (SELECT host_id FROM params) AS p_host_id,
    (SELECT min_risk FROM params) AS p_min_risk,
    (SELECT signal_needle FROM params) AS p_signal,
    (SELECT attacks FROM params) AS p_attacks,
    (SELECT attack_needle FROM params) AS p_attack,
    (SELECT slow FROM params) AS p_slow
SELECT session_id, min(start_ns) AS first_ns
FROM {db}.sessions FINAL
GROUP BY session_id
HAVING max(end_ns) >= p_since AND min(start_ns) <= p_until
    AND (p_ip = '' OR has(groupUniqArrayArray(client_ips), p_ip))
    AND (p_host = '' OR has(arrayMap(h -> lower(h), groupUniqArrayArray(hosts)), lower(p_host)))
    AND (p_endpoint = '' OR arrayExists(
        k -> substring(k, position(k, ' ') + 1) = p_endpoint,
        groupUniqArrayArray(endpoints.name)))
    AND (p_method = '' OR has(arrayMap(m -> upper(m), groupUniqArrayArray(methods.name)), upper(p_method)))
    AND (p_status = 0 OR has(groupUniqArrayArray(statuses.code), p_status))
    AND (p_user = '' OR has(groupUniqArray(user), p_user))
    AND (p_host_id = '' OR has(groupUniqArray(host_id), p_host_id))
    AND max(risk) >= p_min_risk
    AND (p_signal = '' OR arrayExists(j -> position(j, p_signal) > 0, groupArray(signals)))
    AND (p_attacks = 0 OR arrayExists(j -> j != '[]', groupArray(attacks)))
    AND (p_attack = '' OR arrayExists(j -> position(j, p_attack) > 0, groupArray(attacks)))
    AND (p_slow = 0 OR sum(slow) > 0)
ORDER BY first_ns DESC, session_id";

const FILTER_STRUCTURE: &str = "since_ns UInt64, until_ns UInt64, ip String, host String, \
     endpoint String, method String, status UInt16, user String, host_id String, \
     min_risk UInt8, signal_needle String, attacks UInt8, attack_needle String, slow UInt8";

const SESSION_ROWS: &str =
    "SELECT * FROM {db}.sessions FINAL WHERE session_id IN (SELECT session_id FROM ids)";

const EXCHANGES: &str = "
WITH
    (SELECT session_id FROM params) AS p_session,
    (SELECT since_ns FROM params) AS p_since,
    (SELECT until_ns FROM params) AS p_until,
    (SELECT host_id FROM params) AS p_host_id
SELECT * FROM {db}.exchanges FINAL
WHERE (p_session = '' OR session_id = p_session)
    AND ts_ns >= p_since AND ts_ns <= p_until
    AND (p_host_id = '' OR host_id = p_host_id)
ORDER BY ts_ns, host_id, exchange_id";

/// `endpoints --central`: one row per host, method and endpoint of the exchanges shipped. A
/// request without a Host is keyed by its server address, as the sensors' inventory keys it.
/// Statuses as a map (`sumMap`: codes and counts; 0 for no response); percentiles exact over the
/// rows, none where no exchange had the timing.
const ENDPOINTS: &str = "
WITH
    (SELECT since_ns FROM params) AS p_since,
    (SELECT host FROM params) AS p_host,
    (SELECT host_id FROM params) AS p_host_id
SELECT
    ifNull(host, concat(server_ip, ':', toString(server_port))) AS host_key,
    assumeNotNull(method) AS method_name,
    assumeNotNull(endpoint) AS endpoint_name,
    count() AS calls,
    uniqExact(session_id) AS sessions,
    sumMap([ifNull(status_code, 0)], [toUInt64(1)]) AS statuses,
    if(count(duration_ms) = 0, emptyArrayFloat64(),
        quantiles(0.5, 0.95, 0.99)(duration_ms)) AS latency,
    if(count(ttfb_ms) = 0, emptyArrayFloat64(), quantiles(0.5, 0.95, 0.99)(ttfb_ms)) AS ttfb,
    toUInt64(ifNull(avg(request_body_len), 0)) AS request_avg,
    ifNull(max(request_body_len), 0) AS request_max,
    toUInt64(ifNull(avg(response_body_len), 0)) AS response_avg,
    ifNull(max(response_body_len), 0) AS response_max,
    sum(slow) AS slow_calls,
    min(ts_ns) AS first_ns,
    max(ts_ns) AS last_ns,
    groupUniqArray(assumeNotNull(spec_status)) AS spec_statuses
FROM {db}.exchanges FINAL
WHERE ts_ns >= p_since
    AND method IS NOT NULL AND endpoint IS NOT NULL
    AND (p_host = '' OR lower(ifNull(host, '')) = lower(p_host))
    AND (p_host_id = '' OR host_id = p_host_id)
GROUP BY host_key, method_name, endpoint_name
ORDER BY calls DESC, host_key, method_name, endpoint_name";

/// Which exchanges `export --central` (or `show --central`) wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExchangeFilter {
    pub session_id: Option<String>,
    pub since_ns: Option<u64>,
    pub until_ns: Option<u64>,
    pub host_id: Option<String>,
}

/// What a session row's `signals` JSON holds when it carries `name` (`"name":"enumeration"`):
/// the rows are serde_json's compact output, and a quote inside a reason is escaped, so only the
/// name field itself can hold this text.
fn signal_needle(name: SignalName) -> String {
    format!("\"name\":{}", json_text(&name))
}

/// What a session row's `attacks` JSON (`[["sqli",3]]`) holds when it counts `class`.
fn attack_needle(class: AttackClass) -> String {
    format!("[{},", json_text(&class))
}

fn json_text(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

pub struct CentralQuery {
    client: Client,
}

impl CentralQuery {
    pub fn new(config: &CentralSection) -> Result<Self, CentralError> {
        Ok(Self {
            client: Client::new(config)?,
        })
    }

    fn sql(&self, template: &str) -> String {
        template.replace("{db}", self.client.database())
    }

    /// Sessions of the fleet matching `filter` (and seen by `host_id`, if given), newest
    /// first, at most `filter.limit` (0: all); each merged across the hosts that saw it.
    pub fn sessions(
        &self,
        filter: &SessionFilter,
        host_id: Option<&str>,
    ) -> Result<Vec<CentralSession>, CentralError> {
        #[derive(Deserialize)]
        struct Id {
            session_id: String,
        }
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let params = ExternalTable {
            name: "params",
            structure: FILTER_STRUCTURE,
            rows: vec![serde_json::json!({
                "since_ns": filter.since_ns.unwrap_or(0),
                "until_ns": filter.until_ns.unwrap_or(u64::MAX),
                "ip": text(&filter.ip),
                "host": text(&filter.host),
                "endpoint": text(&filter.endpoint),
                "method": text(&filter.method),
                "status": filter.status.unwrap_or(0),
                "user": text(&filter.user),
                "host_id": host_id.unwrap_or_default(),
                "min_risk": filter.min_risk.unwrap_or(0),
                "signal_needle": filter.signal.map(signal_needle).unwrap_or_default(),
                "attacks": u8::from(filter.attacks),
                "attack_needle": filter.attack.map(attack_needle).unwrap_or_default(),
                "slow": u8::from(filter.slow),
            })],
        };
        let mut sql = self.sql(SESSION_IDS);
        if filter.limit > 0 {
            sql.push_str(&format!(" LIMIT {}", filter.limit));
        }
        let ids: Vec<Id> = self.client.select_all(&sql, &[params])?;
        let ids: Vec<String> = ids.into_iter().map(|i| i.session_id).collect();
        let mut parts = self.parts(&ids)?;
        Ok(ids
            .iter()
            .filter_map(|id| parts.remove(id))
            .filter_map(|rows| CentralSession::merge(&rows))
            .collect())
    }

    /// One session of the fleet by id.
    pub fn session(&self, session_id: &str) -> Result<Option<CentralSession>, CentralError> {
        let id = session_id.to_owned();
        let mut parts = self.parts(std::slice::from_ref(&id))?;
        Ok(parts
            .remove(&id)
            .and_then(|rows| CentralSession::merge(&rows)))
    }

    /// The latest row of every host of each of `ids`, by session id.
    fn parts(&self, ids: &[String]) -> Result<HashMap<String, Vec<SessionRow>>, CentralError> {
        let mut parts: HashMap<String, Vec<SessionRow>> = HashMap::new();
        if ids.is_empty() {
            return Ok(parts);
        }
        let table = ExternalTable {
            name: "ids",
            structure: "session_id String",
            rows: ids
                .iter()
                .map(|id| serde_json::json!({ "session_id": id }))
                .collect(),
        };
        let sql = self.sql(SESSION_ROWS);
        self.client.select(&sql, &[table], |row: SessionRow| {
            parts.entry(row.session_id.clone()).or_default().push(row);
            true
        })?;
        for rows in parts.values_mut() {
            // One row per host, the highest version: `FINAL` collapses rows within a day
            // partition only, and a late exchange that started before midnight moves a
            // session's start (its partition) back.
            rows.sort_by(|a, b| a.host_id.cmp(&b.host_id).then(b.version.cmp(&a.version)));
            rows.dedup_by(|later, kept| later.host_id == kept.host_id);
        }
        Ok(parts)
    }

    /// The fleet's endpoints (`endpoints --central`): the exchanges since `since_ns` (of
    /// `host`, as shipped by `host_id`) grouped by host, method and endpoint as the sensors
    /// wrote them, most called first. Calls, distinct sessions, statuses, latency and TTFB
    /// percentiles (exact, over the rows), sizes, slow calls, first and last seen, and the spec
    /// status the sensors recorded; what only a sensor's inventory knows (authentication,
    /// sensitive kinds, parameters, risk) is left empty.
    pub fn endpoints(
        &self,
        since_ns: Option<u64>,
        host: Option<&str>,
        host_id: Option<&str>,
    ) -> Result<Vec<EndpointRow>, CentralError> {
        let params = ExternalTable {
            name: "params",
            structure: "since_ns UInt64, host String, host_id String",
            rows: vec![serde_json::json!({
                "since_ns": since_ns.unwrap_or(0),
                "host": host.unwrap_or_default(),
                "host_id": host_id.unwrap_or_default(),
            })],
        };
        let rows: Vec<EndpointAggregate> =
            self.client.select_all(&self.sql(ENDPOINTS), &[params])?;
        Ok(rows.into_iter().map(EndpointAggregate::into_row).collect())
    }

    /// Exchanges matching `filter` in time order (then host, then id), each once; `visit`
    /// returns false to stop. `row.to_stored()` gives what the report prints.
    pub fn exchanges(
        &self,
        filter: &ExchangeFilter,
        visit: impl FnMut(ExchangeRow) -> bool,
    ) -> Result<(), CentralError> {
        let params = ExternalTable {
            name: "params",
            structure: "session_id String, since_ns UInt64, until_ns UInt64, host_id String",
            rows: vec![serde_json::json!({
                "session_id": filter.session_id.clone().unwrap_or_default(),
                "since_ns": filter.since_ns.unwrap_or(0),
                "until_ns": filter.until_ns.unwrap_or(u64::MAX),
                "host_id": filter.host_id.clone().unwrap_or_default(),
            })],
        };
        self.client.select(&self.sql(EXCHANGES), &[params], visit)
    }
}

/// One row of [`ENDPOINTS`].
#[derive(Deserialize)]
struct EndpointAggregate {
    host_key: String,
    method_name: String,
    endpoint_name: String,
    calls: u64,
    sessions: u64,
    /// Status codes (0: no response) and their counts.
    statuses: (Vec<u16>, Vec<u64>),
    latency: Vec<f64>,
    ttfb: Vec<f64>,
    request_avg: u64,
    request_max: u64,
    response_avg: u64,
    response_max: u64,
    slow_calls: u64,
    first_ns: u64,
    last_ns: u64,
    spec_statuses: Vec<String>,
}

impl EndpointAggregate {
    fn into_row(self) -> EndpointRow {
        let percentiles = |values: &[f64]| {
            let at = |i: usize| values.get(i).copied().filter(|v| v.is_finite());
            Percentiles {
                p50: at(0),
                p95: at(1),
                p99: at(2),
            }
        };
        let (codes, counts) = self.statuses;
        let mut statuses = Vec::new();
        let mut status_classes = std::collections::BTreeMap::new();
        for (&status, &count) in codes.iter().zip(&counts) {
            let class = match status / 100 {
                2 => "2xx",
                3 => "3xx",
                4 => "4xx",
                5 => "5xx",
                _ => "other",
            };
            *status_classes.entry(class).or_default() += count;
            if status != 0 {
                statuses.push(StatusCount { status, count });
            }
        }
        statuses.sort_by_key(|s| s.status);
        // Hosts may disagree (one with a spec, one without): the most telling status wins.
        let spec_status = [
            SpecStatus::Zombie,
            SpecStatus::Shadow,
            SpecStatus::Documented,
        ]
        .into_iter()
        .find(|s| self.spec_statuses.iter().any(|name| name == s.name()));
        EndpointRow {
            host: self.host_key,
            method: self.method_name,
            endpoint: self.endpoint_name,
            calls: self.calls,
            sessions: self.sessions,
            statuses,
            status_classes,
            latency_ms: percentiles(&self.latency),
            ttfb_ms: percentiles(&self.ttfb),
            request_bytes: Sizes {
                avg: self.request_avg,
                max: self.request_max,
            },
            response_bytes: Sizes {
                avg: self.response_avg,
                max: self.response_max,
            },
            auth: Vec::new(),
            sensitive: Vec::new(),
            sensitive_request: Vec::new(),
            sensitive_response: Vec::new(),
            params: Vec::new(),
            spec_status,
            risk: 0,
            risk_reasons: Vec::new(),
            slow: self.slow_calls,
            first_seen: Some(rfc3339_ns(self.first_ns)),
            last_seen: Some(rfc3339_ns(self.last_ns)),
        }
    }
}
