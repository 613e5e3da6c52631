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
//! Risk, signals and attack counts only grow from one version of a row to the next, and the
//! merge keeps the highest: "some row has it" is the merged session's answer. Signals and
//! attacks are JSON text (`[{"name":"errors",...}]`, `[["xss",2]]`); their names are a fixed
//! vocabulary and a quote inside a reason is escaped (`\"`), so a search for `{"name":"X"`
//! or `["X",` finds exactly the sessions that have X (18.16 has no JSON functions for arrays).

use std::collections::HashMap;

use serde::Deserialize;

use super::{
    CentralError,
    client::{Client, ExternalTable},
    rows::{CentralSession, ExchangeRow, SessionRow},
};
use crate::{config::CentralSection, store::SessionFilter};

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
    (SELECT signal FROM params) AS p_signal,
    (SELECT attacks FROM params) AS p_attacks,
    (SELECT attack FROM params) AS p_attack
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
    AND (p_signal = '' OR arrayExists(
        s -> position(s, concat('{\"name\":\"', p_signal, '\"')) > 0, groupArray(signals)))
    AND (p_attacks = 0 OR arrayExists(a -> a != '[]', groupArray(attacks)))
    AND (p_attack = '' OR arrayExists(
        a -> position(a, concat('[\"', p_attack, '\",')) > 0, groupArray(attacks)))
ORDER BY first_ns DESC, session_id";

const FILTER_STRUCTURE: &str = "since_ns UInt64, until_ns UInt64, ip String, host String, \
     endpoint String, method String, status UInt16, user String, host_id String, \
     min_risk UInt8, signal String, attacks UInt8, attack String";

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

/// Which exchanges `export --central` (or `show --central`) wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExchangeFilter {
    pub session_id: Option<String>,
    pub since_ns: Option<u64>,
    pub until_ns: Option<u64>,
    pub host_id: Option<String>,
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
                "signal": filter.signal.map_or("", |s| s.as_str()),
                "attacks": u8::from(filter.attacks),
                "attack": filter.attack.map_or("", |c| c.as_str()),
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
