//! The central tables' rows: an exchange and a session summary as JSONEachRow objects, and
//! back. Column names are the NDJSON vocabulary (see [`crate::record::exchange::ExchangeRecord`]) plus
//! `host_id`, `exchange_id`, `ts_ns`, the content types (the HAR export shows them) and
//! `version`. The unit test `every_ndjson_field_has_a_column` fails when the vocabulary gains a
//! field these rows lack; the tests against a real server fail when the table lacks a field of
//! these rows (JSONEachRow rejects unknown fields).
//!
//! 18.16 shapes the encoding: booleans are `UInt8` (JSONEachRow there rejects `true`), `ts` is
//! a `DateTime` sent as unix seconds (no `DateTime64` before 20.1) next to the exact `ts_ns`,
//! counted lists are `Nested` columns (`endpoints.name`, `endpoints.count`), and `params` too.

use serde::{Deserialize, Serialize};

use crate::record::{Http2Record, SessionSummary, StoredExchange};

/// One exchange of one host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExchangeRow {
    pub host_id: String,
    /// 32 hex digits, deterministic (see [`exchange_id`]).
    pub exchange_id: String,
    /// Unix seconds (the partition and sort key; `DateTime('UTC')`).
    #[serde(deserialize_with = "date_time")]
    pub ts: u64,
    pub ts_ns: u64,
    pub session_id: String,
    pub client_ip: String,
    pub client_port: u16,
    pub server_ip: String,
    pub server_port: u16,
    pub peer_ip: String,
    pub peer_port: u16,
    pub method: Option<String>,
    pub host: Option<String>,
    pub uri: Option<String>,
    pub endpoint: Option<String>,
    pub version: Option<String>,
    pub user_agent: Option<String>,
    pub referrer: Option<String>,
    /// Beyond the NDJSON vocabulary: the HAR export shows them.
    pub request_content_type: Option<String>,
    pub response_content_type: Option<String>,
    pub status_code: Option<u16>,
    pub status_msg: Option<String>,
    pub request_body_len: Option<u64>,
    pub response_body_len: Option<u64>,
    pub ttfb_ms: Option<f64>,
    pub duration_ms: Option<f64>,
    pub request_truncated: u8,
    pub response_truncated: u8,
    pub gap: u8,
    pub joined: u8,
    pub upstream_ms: Option<f64>,
    pub upstream_ip: Option<String>,
    pub upstream_port: Option<u16>,
    pub server_netns: Option<u64>,
    pub server_cgroup: Option<String>,
    #[serde(rename = "params.name")]
    pub params_name: Vec<String>,
    #[serde(rename = "params.value")]
    pub params_value: Vec<String>,
    /// The findings as JSON (`[{class, point, excerpt, rule}]`).
    #[serde(default = "empty_array")]
    pub attacks: String,
    #[serde(default)]
    pub spec_status: Option<String>,
    #[serde(default)]
    pub slow: u8,
    #[serde(default)]
    pub tls: u8,
    /// HTTP/2's fields (see [`Http2Record`]); null for HTTP/1.x.
    #[serde(default)]
    pub stream_id: Option<u32>,
    #[serde(default)]
    pub grpc_status: Option<u16>,
    #[serde(default)]
    pub grpc_request_messages: Option<u32>,
    #[serde(default)]
    pub grpc_response_messages: Option<u32>,
}

fn empty_array() -> String {
    "[]".to_owned()
}

/// The id of the exchange at `position` in the stored block `block_key` of `host_id`: the same
/// every time the outbox hands the block out (a retried insert, a restart), different for every
/// other exchange of the fleet.
pub fn exchange_id(host_id: &str, block_key: &[u8], position: usize) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"apisessions exchange id\0");
    hasher.update(&(host_id.len() as u64).to_le_bytes());
    hasher.update(host_id.as_bytes());
    hasher.update(block_key);
    hasher.update(&(position as u64).to_le_bytes());
    crate::record::hex(&hasher.finalize().as_bytes()[..16])
}

/// A `DateTime` column: sent as unix seconds, answered as `YYYY-MM-DD hh:mm:ss` (UTC: the
/// columns are `DateTime('UTC')`).
fn date_time<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Seconds(u64),
        Text(String),
    }
    match Either::deserialize(deserializer)? {
        Either::Seconds(seconds) => Ok(seconds),
        Either::Text(text) => humantime::parse_rfc3339(&format!("{}Z", text.replace(' ', "T")))
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .ok_or_else(|| serde::de::Error::custom(format!("'{text}' is not a DateTime"))),
    }
}

fn us_to_ms(us: Option<u64>) -> Option<f64> {
    us.map(|us| us as f64 / 1000.0)
}

fn ms_to_us(ms: Option<f64>) -> Option<u64> {
    ms.filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| (ms * 1000.0).round() as u64)
}

impl ExchangeRow {
    pub fn new(host_id: &str, exchange_id: String, session_id: &str, e: &StoredExchange) -> Self {
        let (params_name, params_value) = e.params.iter().cloned().unzip();
        Self {
            host_id: host_id.to_owned(),
            exchange_id,
            ts: e.ts_ns / 1_000_000_000,
            ts_ns: e.ts_ns,
            session_id: session_id.to_owned(),
            client_ip: e.client_ip.clone(),
            client_port: e.client_port,
            server_ip: e.server_ip.clone(),
            server_port: e.server_port,
            peer_ip: e.peer_ip.clone(),
            peer_port: e.peer_port,
            method: e.method.clone(),
            host: e.host.clone(),
            uri: e.uri.clone(),
            endpoint: e.endpoint.clone(),
            version: e.version.clone(),
            user_agent: e.user_agent.clone(),
            referrer: e.referrer.clone(),
            request_content_type: e.request_content_type.clone(),
            response_content_type: e.response_content_type.clone(),
            status_code: e.status_code,
            status_msg: e.status_msg.clone(),
            request_body_len: e.request_body_len,
            response_body_len: e.response_body_len,
            ttfb_ms: us_to_ms(e.ttfb_us),
            duration_ms: us_to_ms(e.duration_us),
            request_truncated: e.request_truncated.into(),
            response_truncated: e.response_truncated.into(),
            gap: e.gap.into(),
            joined: e.joined.into(),
            upstream_ms: us_to_ms(e.upstream_us),
            upstream_ip: e.upstream_ip.clone(),
            upstream_port: e.upstream_port,
            server_netns: e.server_netns,
            server_cgroup: e.server_cgroup.clone(),
            params_name,
            params_value,
            attacks: serde_json::to_string(&e.attacks).unwrap_or_else(|_| empty_array()),
            spec_status: e.spec_status.map(|s| s.name().to_owned()),
            slow: e.slow.into(),
            tls: e.tls.into(),
            stream_id: e.http2.as_ref().map(|h| h.stream_id),
            grpc_status: e.http2.as_ref().and_then(|h| h.grpc_status),
            grpc_request_messages: e.http2.as_ref().and_then(|h| h.grpc_request_messages),
            grpc_response_messages: e.http2.as_ref().and_then(|h| h.grpc_response_messages),
        }
    }

    /// The exchange as the local store hands it to the report.
    pub fn to_stored(&self) -> StoredExchange {
        StoredExchange {
            ts_ns: self.ts_ns,
            client_ip: self.client_ip.clone(),
            client_port: self.client_port,
            server_ip: self.server_ip.clone(),
            server_port: self.server_port,
            peer_ip: self.peer_ip.clone(),
            peer_port: self.peer_port,
            method: self.method.clone(),
            host: self.host.clone(),
            uri: self.uri.clone(),
            endpoint: self.endpoint.clone(),
            version: self.version.clone(),
            user_agent: self.user_agent.clone(),
            referrer: self.referrer.clone(),
            request_content_type: self.request_content_type.clone(),
            response_content_type: self.response_content_type.clone(),
            status_code: self.status_code,
            status_msg: self.status_msg.clone(),
            request_body_len: self.request_body_len,
            response_body_len: self.response_body_len,
            ttfb_us: ms_to_us(self.ttfb_ms),
            duration_us: ms_to_us(self.duration_ms),
            request_truncated: self.request_truncated != 0,
            response_truncated: self.response_truncated != 0,
            gap: self.gap != 0,
            joined: self.joined != 0,
            tls: self.tls != 0,
            upstream_us: ms_to_us(self.upstream_ms),
            upstream_ip: self.upstream_ip.clone(),
            upstream_port: self.upstream_port,
            server_netns: self.server_netns,
            server_cgroup: self.server_cgroup.clone(),
            params: self
                .params_name
                .iter()
                .cloned()
                .zip(self.params_value.iter().cloned())
                .collect(),
            attacks: serde_json::from_str(&self.attacks).unwrap_or_default(),
            spec_status: self
                .spec_status
                .as_deref()
                .and_then(crate::record::SpecStatus::from_name),
            slow: self.slow != 0,
            http2: self.stream_id.map(|stream_id| Http2Record {
                stream_id,
                grpc_status: self.grpc_status,
                grpc_request_messages: self.grpc_request_messages,
                grpc_response_messages: self.grpc_response_messages,
            }),
            exchange_id: crate::store::id_bytes(&self.exchange_id).ok(),
        }
    }
}

/// The columns [`ExchangeRow::write_row_binary`] writes, in its order: the insert names them,
/// so the table's own column order (which later migrations extend) does not matter.
pub const EXCHANGE_COLUMNS: &str = "host_id, exchange_id, ts, ts_ns, session_id, client_ip, \
     client_port, server_ip, server_port, peer_ip, peer_port, method, host, uri, endpoint, \
     version, user_agent, referrer, request_content_type, response_content_type, status_code, \
     status_msg, request_body_len, response_body_len, ttfb_ms, duration_ms, request_truncated, \
     response_truncated, gap, joined, upstream_ms, upstream_ip, upstream_port, server_netns, \
     server_cgroup, params.name, params.value, attacks, spec_status, slow, tls, stream_id, \
     grpc_status, grpc_request_messages, grpc_response_messages";

/// ClickHouse's RowBinary encoding (the same on 18.16 and current releases): integers and
/// floats little-endian, a string as its LEB128 length and its bytes (no escaping: any byte
/// travels as it is), a `Nullable` as a 1 (NULL) or a 0 byte followed by the value, an array
/// as its LEB128 length and its elements. The server parses it without looking at the content,
/// which is what makes it the cheap insert format (JSONEachRow parsing dominated inserts).
struct RowBinary<'a>(&'a mut Vec<u8>);

impl RowBinary<'_> {
    fn length(&mut self, mut n: usize) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                self.0.push(byte);
                return;
            }
            self.0.push(byte | 0x80);
        }
    }

    fn text(&mut self, value: &str) {
        self.length(value.len());
        self.0.extend_from_slice(value.as_bytes());
    }

    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }

    fn u16(&mut self, value: u16) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn f64(&mut self, value: f64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    /// A `Nullable(T)`: NULL, or the value written by `write`.
    fn nullable<T: Copy>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            None => self.0.push(1),
            Some(v) => {
                self.0.push(0);
                write(self, v);
            }
        }
    }

    fn nullable_text(&mut self, value: Option<&String>) {
        self.nullable(value, |w, v| w.text(v));
    }

    fn texts(&mut self, values: &[String]) {
        self.length(values.len());
        for value in values {
            self.text(value);
        }
    }
}

impl ExchangeRow {
    /// Appends the row in RowBinary, the columns in [`EXCHANGE_COLUMNS`]' order.
    pub fn write_row_binary(&self, out: &mut Vec<u8>) {
        let mut w = RowBinary(out);
        w.text(&self.host_id);
        w.text(&self.exchange_id);
        // DateTime is a UInt32 of unix seconds (good until 2106).
        w.u32(u32::try_from(self.ts).unwrap_or(u32::MAX));
        w.u64(self.ts_ns);
        w.text(&self.session_id);
        w.text(&self.client_ip);
        w.u16(self.client_port);
        w.text(&self.server_ip);
        w.u16(self.server_port);
        w.text(&self.peer_ip);
        w.u16(self.peer_port);
        for text in [
            &self.method,
            &self.host,
            &self.uri,
            &self.endpoint,
            &self.version,
            &self.user_agent,
            &self.referrer,
            &self.request_content_type,
            &self.response_content_type,
        ] {
            w.nullable_text(text.as_ref());
        }
        w.nullable(self.status_code, RowBinary::u16);
        w.nullable_text(self.status_msg.as_ref());
        w.nullable(self.request_body_len, RowBinary::u64);
        w.nullable(self.response_body_len, RowBinary::u64);
        w.nullable(self.ttfb_ms, RowBinary::f64);
        w.nullable(self.duration_ms, RowBinary::f64);
        w.u8(self.request_truncated);
        w.u8(self.response_truncated);
        w.u8(self.gap);
        w.u8(self.joined);
        w.nullable(self.upstream_ms, RowBinary::f64);
        w.nullable_text(self.upstream_ip.as_ref());
        w.nullable(self.upstream_port, RowBinary::u16);
        w.nullable(self.server_netns, RowBinary::u64);
        w.nullable_text(self.server_cgroup.as_ref());
        w.texts(&self.params_name);
        w.texts(&self.params_value);
        w.text(&self.attacks);
        w.nullable_text(self.spec_status.as_ref());
        w.u8(self.slow);
        w.u8(self.tls);
        w.nullable(self.stream_id, RowBinary::u32);
        w.nullable(self.grpc_status, RowBinary::u16);
        w.nullable(self.grpc_request_messages, RowBinary::u32);
        w.nullable(self.grpc_response_messages, RowBinary::u32);
    }
}

/// One session (part) as one host saw it. Hosts that share the session secret give one user
/// the same session id, so a session of the fleet is the merge of its hosts' rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    pub host_id: String,
    pub session_id: String,
    /// The row that wins (ReplacingMergeTree's version): the summary's request count, which
    /// grows with every exchange the host adds.
    pub version: u64,
    /// Unix seconds of the start (the partition key).
    #[serde(deserialize_with = "date_time")]
    pub start: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    pub requests: u64,
    pub key_kind: String,
    pub key_name: String,
    pub user: Option<String>,
    pub role: Option<String>,
    pub client_ips: Vec<String>,
    pub user_agents: Vec<String>,
    pub hosts: Vec<String>,
    pub server_ips: Vec<String>,
    #[serde(rename = "endpoints.name")]
    pub endpoints_name: Vec<String>,
    #[serde(rename = "endpoints.count")]
    pub endpoints_count: Vec<u64>,
    #[serde(rename = "methods.name")]
    pub methods_name: Vec<String>,
    #[serde(rename = "methods.count")]
    pub methods_count: Vec<u64>,
    #[serde(rename = "statuses.code")]
    pub statuses_code: Vec<u16>,
    #[serde(rename = "statuses.count")]
    pub statuses_count: Vec<u64>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub incomplete: u64,
    #[serde(default)]
    pub risk: u8,
    /// The abuse signals as JSON (`[{name, score, reason}]`).
    #[serde(default = "empty_array")]
    pub signals: String,
    /// Attack findings by class as JSON (`[[class, count]]`).
    #[serde(default = "empty_array")]
    pub attacks: String,
    /// Requests slower than their endpoint's own p99.
    #[serde(default)]
    pub slow: u64,
}

impl SessionRow {
    pub fn new(host_id: &str, s: &SessionSummary) -> Self {
        let (endpoints_name, endpoints_count) = s.endpoints.iter().cloned().unzip();
        let (methods_name, methods_count) = s.methods.iter().cloned().unzip();
        let (statuses_code, statuses_count) = s.statuses.iter().copied().unzip();
        Self {
            host_id: host_id.to_owned(),
            session_id: s.session_id.clone(),
            version: s.requests,
            start: s.start_ns / 1_000_000_000,
            start_ns: s.start_ns,
            end_ns: s.end_ns,
            requests: s.requests,
            key_kind: s.key_kind.clone(),
            key_name: s.key_name.clone(),
            user: s.user.clone(),
            role: s.role.clone(),
            client_ips: s.client_ips.clone(),
            user_agents: s.user_agents.clone(),
            hosts: s.hosts.clone(),
            server_ips: s.server_ips.clone(),
            endpoints_name,
            endpoints_count,
            methods_name,
            methods_count,
            statuses_code,
            statuses_count,
            request_bytes: s.request_bytes,
            response_bytes: s.response_bytes,
            incomplete: s.incomplete,
            risk: s.abuse.risk,
            signals: serde_json::to_string(&s.abuse.signals).unwrap_or_else(|_| empty_array()),
            attacks: serde_json::to_string(&s.attacks).unwrap_or_else(|_| empty_array()),
            slow: s.slow,
        }
    }

    pub fn to_summary(&self) -> SessionSummary {
        let pairs = |names: &[String], counts: &[u64]| -> Vec<(String, u64)> {
            names.iter().cloned().zip(counts.iter().copied()).collect()
        };
        SessionSummary {
            session_id: self.session_id.clone(),
            start_ns: self.start_ns,
            end_ns: self.end_ns,
            requests: self.requests,
            key_kind: self.key_kind.clone(),
            key_name: self.key_name.clone(),
            user: self.user.clone(),
            role: self.role.clone(),
            client_ips: self.client_ips.clone(),
            user_agents: self.user_agents.clone(),
            hosts: self.hosts.clone(),
            server_ips: self.server_ips.clone(),
            endpoints: pairs(&self.endpoints_name, &self.endpoints_count),
            methods: pairs(&self.methods_name, &self.methods_count),
            statuses: self
                .statuses_code
                .iter()
                .copied()
                .zip(self.statuses_count.iter().copied())
                .collect(),
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
            incomplete: self.incomplete,
            abuse: crate::record::SessionSignals {
                risk: self.risk,
                signals: serde_json::from_str(&self.signals).unwrap_or_default(),
            },
            attacks: serde_json::from_str(&self.attacks).unwrap_or_default(),
            slow: self.slow,
        }
    }
}

/// One session of the fleet: its hosts' summaries merged, with the hosts that saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CentralSession {
    pub summary: SessionSummary,
    /// Sorted.
    pub host_ids: Vec<String>,
}

impl CentralSession {
    /// Merges the rows of one session id (at least one).
    pub fn merge(rows: &[SessionRow]) -> Option<Self> {
        let (first, rest) = rows.split_first()?;
        let mut summary = first.to_summary();
        let mut host_ids = vec![first.host_id.clone()];
        for row in rest {
            let other = row.to_summary();
            summary.start_ns = summary.start_ns.min(other.start_ns);
            summary.end_ns = summary.end_ns.max(other.end_ns);
            summary.requests += other.requests;
            summary.request_bytes += other.request_bytes;
            summary.response_bytes += other.response_bytes;
            summary.incomplete += other.incomplete;
            summary.slow += other.slow;
            summary.abuse.merge(&other.abuse);
            for (class, n) in other.attacks {
                match summary.attacks.iter_mut().find(|(c, _)| *c == class) {
                    Some((_, total)) => *total += n,
                    None => summary.attacks.push((class, n)),
                }
            }
            if summary.user.is_none() {
                summary.user = other.user;
            }
            if summary.role.is_none() {
                summary.role = other.role;
            }
            union(&mut summary.client_ips, other.client_ips);
            union(&mut summary.user_agents, other.user_agents);
            union(&mut summary.hosts, other.hosts);
            union(&mut summary.server_ips, other.server_ips);
            add_counts(&mut summary.endpoints, other.endpoints);
            add_counts(&mut summary.methods, other.methods);
            add_counts(&mut summary.statuses, other.statuses);
            if !host_ids.contains(&row.host_id) {
                host_ids.push(row.host_id.clone());
            }
        }
        summary.sort();
        host_ids.sort();
        Some(Self { summary, host_ids })
    }

    /// The `sessions --json` object with `hosts_ids`: which sensors saw the session.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = self.summary.to_json();
        if let Some(object) = value.as_object_mut() {
            object.insert("host_ids".into(), self.host_ids.clone().into());
        }
        value
    }
}

fn union(into: &mut Vec<String>, from: Vec<String>) {
    for value in from {
        if !into.contains(&value) {
            into.push(value);
        }
    }
}

fn add_counts<K: PartialEq>(into: &mut Vec<(K, u64)>, from: Vec<(K, u64)>) {
    for (key, count) in from {
        match into.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 += count,
            None => into.push((key, count)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_binary_names_every_column_of_the_row_once() {
        let row = ExchangeRow::new("h", "id".into(), "s", &exchange());
        let json = serde_json::to_value(&row).unwrap();
        let mut fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut columns: Vec<&str> = EXCHANGE_COLUMNS.split(',').map(str::trim).collect();
        fields.sort_unstable();
        columns.sort_unstable();
        assert_eq!(columns, fields);
    }

    #[test]
    fn row_binary_encodes_lengths_nulls_and_little_endian() {
        let mut out = Vec::new();
        let mut w = RowBinary(&mut out);
        w.text(&"x".repeat(300));
        w.nullable(None::<u16>, RowBinary::u16);
        w.nullable(Some(0x0102u16), RowBinary::u16);
        w.texts(&["ab".into()]);
        assert_eq!(&out[..2], &[0xac, 0x02]);
        assert_eq!(&out[302..], &[1, 0, 0x02, 0x01, 1, 2, b'a', b'b']);
    }

    fn exchange() -> StoredExchange {
        StoredExchange {
            ts_ns: 1_700_000_000_123_456_789,
            client_ip: "10.0.0.1".into(),
            client_port: 40000,
            server_ip: "10.0.0.2".into(),
            server_port: 80,
            peer_ip: "10.0.0.1".into(),
            peer_port: 40000,
            method: Some("GET".into()),
            host: Some("api".into()),
            uri: Some("/users/7?x=1".into()),
            endpoint: Some("/users/{id}".into()),
            version: Some("1.1".into()),
            user_agent: Some("curl".into()),
            referrer: None,
            request_content_type: None,
            response_content_type: Some("application/json".into()),
            status_code: Some(200),
            status_msg: Some("OK".into()),
            request_body_len: Some(0),
            response_body_len: Some(12),
            ttfb_us: Some(1234),
            duration_us: Some(2345),
            request_truncated: false,
            response_truncated: true,
            gap: false,
            joined: false,
            upstream_us: None,
            upstream_ip: None,
            upstream_port: None,
            server_netns: Some(4026531840),
            server_cgroup: None,
            params: vec![("user".into(), "h:abc".into())],
            attacks: Vec::new(),
            spec_status: None,
            slow: false,
            tls: false,
            http2: Some(Http2Record {
                stream_id: 5,
                grpc_status: Some(0),
                grpc_request_messages: Some(1),
                grpc_response_messages: Some(2),
            }),
            exchange_id: None,
        }
    }

    #[test]
    fn every_ndjson_field_has_a_column() {
        let e = exchange();
        let ndjson = e.to_json("s");
        let row = serde_json::to_value(ExchangeRow::new("h", "00".repeat(16), "s", &e)).unwrap();
        let columns = row.as_object().unwrap();
        for field in ndjson.as_object().unwrap().keys() {
            let column = if field == "params" {
                "params.name"
            } else {
                field
            };
            assert!(
                columns.contains_key(column),
                "the NDJSON field {field} has no column in the central exchanges table"
            );
        }
    }

    #[test]
    fn an_exchange_survives_the_round_trip() {
        let e = exchange();
        let id = exchange_id("h", &[1; 28], 3);
        let row = ExchangeRow::new("h", id.clone(), "s", &e);
        let back: ExchangeRow =
            serde_json::from_str(&serde_json::to_string(&row).unwrap()).unwrap();
        let mut stored = back.to_stored();
        assert_eq!(stored.exchange_id, crate::store::id_bytes(&id).ok());
        stored.exchange_id = None;
        assert_eq!(stored, e);
        assert_eq!(stored.to_json("s"), e.to_json("s"));
    }

    #[test]
    fn exchange_ids_differ_by_host_block_and_position() {
        let base = exchange_id("a", &[1; 28], 0);
        assert_eq!(base, exchange_id("a", &[1; 28], 0));
        assert_eq!(base.len(), 32);
        for other in [
            exchange_id("b", &[1; 28], 0),
            exchange_id("a", &[2; 28], 0),
            exchange_id("a", &[1; 28], 1),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn sessions_of_two_hosts_merge_into_one() {
        let part = |host: &str, ip: &str, requests: u64, start: u64| {
            let summary = SessionSummary {
                session_id: "ab".repeat(16),
                start_ns: start,
                end_ns: start + 10,
                requests,
                client_ips: vec![ip.into()],
                endpoints: vec![("GET /a".into(), requests)],
                statuses: vec![(200, requests)],
                ..SessionSummary::default()
            };
            SessionRow::new(host, &summary)
        };
        let merged =
            CentralSession::merge(&[part("h2", "10.0.0.2", 3, 50), part("h1", "10.0.0.1", 2, 40)])
                .unwrap();
        assert_eq!(merged.host_ids, ["h1", "h2"]);
        assert_eq!(merged.summary.requests, 5);
        assert_eq!((merged.summary.start_ns, merged.summary.end_ns), (40, 60));
        assert_eq!(merged.summary.client_ips, ["10.0.0.2", "10.0.0.1"]);
        assert_eq!(merged.summary.endpoints, [("GET /a".to_owned(), 5)]);
        assert_eq!(
            merged.to_json()["host_ids"],
            serde_json::json!(["h1", "h2"])
        );
    }
}
