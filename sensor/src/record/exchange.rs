//! The record of one exchange, as the sinks (the store, NDJSON) receive it.
//!
//! Records hold no raw secret: no headers besides User-Agent and content types, no cookies, no
//! bodies, and query parameters named like secrets replaced by keyed hashes (`h:…`).

use serde::{Deserialize, Serialize};

use crate::{
    endpoint,
    exchange::{Exchange, ip_text, rfc3339_ns},
    record::Secret,
    record::{Finding, SpecStatus},
};

/// Query-string, form and header names whose values are secrets unless configured otherwise.
pub const SECRET_NAMES: &[&str] = &[
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "key",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "auth",
    "authorization",
    "session",
    "sessionid",
    "session_id",
    "sid",
    "jwt",
    "signature",
    "sig",
    "code",
];

/// One exchange as stored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredExchange {
    pub ts_ns: u64,
    /// The real client: named by a trusted proxy's forwarding header, else the peer.
    pub client_ip: String,
    /// 0 when a forwarding header named the client without a port.
    pub client_port: u16,
    pub server_ip: String,
    pub server_port: u16,
    /// The connection's peer (behind a reverse proxy, the proxy).
    pub peer_ip: String,
    pub peer_port: u16,
    pub method: Option<String>,
    pub host: Option<String>,
    /// As sent, with secret query values hashed.
    pub uri: Option<String>,
    pub endpoint: Option<String>,
    pub version: Option<String>,
    pub user_agent: Option<String>,
    pub referrer: Option<String>,
    pub request_content_type: Option<String>,
    pub response_content_type: Option<String>,
    pub status_code: Option<u16>,
    pub status_msg: Option<String>,
    pub request_body_len: Option<u64>,
    pub response_body_len: Option<u64>,
    pub ttfb_us: Option<u64>,
    pub duration_us: Option<u64>,
    pub request_truncated: bool,
    pub response_truncated: bool,
    pub gap: bool,
    /// A proxy's upstream exchange for this request was joined into this one.
    pub joined: bool,
    /// The joined upstream hop's duration (the application's time behind the proxy).
    pub upstream_us: Option<u64>,
    /// Where NAT sent the connection (the container behind a published port); `server_ip` and
    /// `server_port` stay what the client called. None without NAT.
    pub upstream_ip: Option<String>,
    pub upstream_port: Option<u16>,
    /// The network namespace (inode) that owns the address that served the exchange (the
    /// upstream, else the server), when it is not the sensor's own: which container served it.
    pub server_netns: Option<u64>,
    /// That namespace's cgroup (v2) where the host has one: the container's or the pod's.
    pub server_cgroup: Option<String>,
    /// Context parameters (configured ones; hashed values start with `h:`).
    pub params: Vec<(String, String)>,
    /// Attack findings in the request (see `analysis::attacks`); secret values never in them.
    pub attacks: Vec<Finding>,
    /// Where the request stands against the host's OpenAPI document, if one is configured.
    pub spec_status: Option<SpecStatus>,
    /// Slower than its endpoint's own p99 and the configured floor.
    pub slow: bool,
    /// Decoded from TLS plaintext (uprobes on the server's TLS library).
    #[serde(default)]
    pub tls: bool,
    /// What HTTP/2 adds; None for HTTP/1.x.
    pub http2: Option<Http2Record>,
    /// Set by `import`: a deterministic id (see `import::ExchangeIds`) by which the store
    /// recognises an exchange it already holds when the same capture is imported again. Not
    /// part of the stored record.
    #[serde(skip)]
    pub exchange_id: Option<[u8; 16]>,
}

impl StoredExchange {
    /// The record of `exchange`, secrets hashed with `secret` unless `store_raw`. Runs once per
    /// exchange on the daemon's hot path; its NDJSON form is [`StoredExchange::to_json`].
    pub fn new(exchange: &Exchange, secret: &Secret, redaction: &Redaction) -> Self {
        let request = exchange.request.as_ref();
        let response = exchange.response.as_ref();
        let header = |name| request.and_then(|r| r.meta.header(name)).map(str::to_owned);
        let start_ns = exchange.start_ns();
        // Microseconds from the request's first byte, rounded to the nearest.
        let us_after = |ns: u64| (ns.saturating_sub(start_ns) + 500) / 1000;
        let both = request.zip(response);
        let client = exchange.client_addr();
        Self {
            ts_ns: start_ns,
            client_ip: ip_text(client.ip()),
            client_port: client.port(),
            server_ip: ip_text(exchange.server.ip()),
            server_port: exchange.server.port(),
            peer_ip: ip_text(exchange.client.ip()),
            peer_port: exchange.client.port(),
            method: request.map(|r| r.method.clone()),
            host: header("host"),
            uri: request.map(|r| redaction.uri(&r.uri, secret)),
            endpoint: request.map(|r| endpoint::template(&r.uri)),
            version: request
                .map(|r| r.meta.version)
                .or_else(|| response.map(|r| r.meta.version))
                .map(str::to_owned),
            user_agent: header("user-agent"),
            referrer: request
                .and_then(|r| r.meta.header("referer"))
                .map(|r| redaction.uri(r, secret)),
            request_content_type: header("content-type"),
            response_content_type: response
                .and_then(|r| r.meta.header("content-type"))
                .map(str::to_owned),
            status_code: response.and_then(|r| r.status),
            status_msg: response
                .filter(|r| r.status.is_some())
                .map(|r| r.reason.clone()),
            request_body_len: request.map(|r| r.meta.body_len),
            response_body_len: response.map(|r| r.meta.body_len),
            ttfb_us: both.map(|(_, r)| us_after(r.meta.start_ns)),
            duration_us: both
                .filter(|(_, r)| r.meta.end_ns != 0)
                .map(|(_, r)| us_after(r.meta.end_ns)),
            request_truncated: request.is_some_and(|r| r.meta.truncated),
            response_truncated: response.is_some_and(|r| r.meta.truncated),
            gap: exchange.gap(),
            joined: exchange.forwarding.joined,
            upstream_us: exchange.forwarding.upstream_ns.map(|ns| (ns + 500) / 1000),
            upstream_ip: exchange.upstream.map(|a| ip_text(a.ip())),
            upstream_port: exchange.upstream.map(|a| a.port()),
            server_netns: None,
            server_cgroup: None,
            params: Vec::new(),
            attacks: Vec::new(),
            spec_status: None,
            slow: false,
            tls: exchange.tls,
            http2: Http2Record::of(exchange),
            exchange_id: None,
        }
    }

    /// The NDJSON record (the design brief's vocabulary), with the session it belongs to.
    pub fn to_json(&self, session_id: &str) -> serde_json::Value {
        let ms = |us: Option<u64>| us.map(|us| us as f64 / 1000.0);
        let record = ExchangeRecord {
            ts: rfc3339_ns(self.ts_ns),
            session_id: Some(session_id),
            client_ip: self.client_ip.clone(),
            client_port: self.client_port,
            server_ip: self.server_ip.clone(),
            server_port: self.server_port,
            peer_ip: self.peer_ip.clone(),
            peer_port: self.peer_port,
            method: self.method.as_deref(),
            host: self.host.as_deref(),
            uri: self.uri.as_deref(),
            endpoint: self.endpoint.as_deref(),
            version: self.version.as_deref(),
            user_agent: self.user_agent.as_deref(),
            referrer: self.referrer.as_deref(),
            status_code: self.status_code,
            status_msg: self.status_msg.as_deref(),
            request_body_len: self.request_body_len,
            response_body_len: self.response_body_len,
            ttfb_ms: ms(self.ttfb_us),
            duration_ms: ms(self.duration_us),
            request_truncated: self.request_truncated,
            response_truncated: self.response_truncated,
            gap: self.gap,
            joined: self.joined,
            upstream_ms: ms(self.upstream_us),
            upstream_ip: self.upstream_ip.clone(),
            upstream_port: self.upstream_port,
            server_netns: self.server_netns,
            server_cgroup: self.server_cgroup.clone(),
            params: self
                .params
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
            attacks: &self.attacks,
            spec_status: self.spec_status,
            slow: self.slow,
            tls: self.tls,
            stream_id: self.http2.as_ref().map(|h| h.stream_id),
            grpc_status: self.http2.as_ref().and_then(|h| h.grpc_status),
            grpc_request_messages: self.http2.as_ref().and_then(|h| h.grpc_request_messages),
            grpc_response_messages: self.http2.as_ref().and_then(|h| h.grpc_response_messages),
        };
        serde_json::to_value(&record).unwrap_or(serde_json::Value::Null)
    }
}

/// What an HTTP/2 exchange's record adds to HTTP/1.x's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Http2Record {
    pub stream_id: u32,
    /// A gRPC call's status (`grpc-status`, in the trailers or a trailers-only response).
    pub grpc_status: Option<u16>,
    /// Length-prefixed gRPC messages in the request and the response body, for gRPC calls.
    pub grpc_request_messages: Option<u32>,
    pub grpc_response_messages: Option<u32>,
}

impl Http2Record {
    fn of(exchange: &Exchange) -> Option<Self> {
        let response = exchange.response.as_ref();
        Some(Self {
            stream_id: exchange.stream_id?,
            grpc_status: response
                .and_then(|r| r.meta.header("grpc-status"))
                .and_then(|s| s.trim().parse().ok()),
            grpc_request_messages: exchange.request.as_ref().and_then(|r| r.meta.grpc_messages),
            grpc_response_messages: response.and_then(|r| r.meta.grpc_messages),
        })
    }
}

/// Which values are secrets, and whether to keep them anyway.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Redaction {
    /// Keep raw values (configuration `secrets.store_raw`).
    pub store_raw: bool,
    /// Names beyond [`SECRET_NAMES`], lower-case.
    pub extra_names: Vec<String>,
}

impl Redaction {
    /// The configuration's `secrets.store_raw` and `secrets.names`.
    pub fn new(store_raw: bool, names: &[String]) -> Self {
        Self {
            store_raw,
            extra_names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        }
    }

    pub fn is_secret_name(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        SECRET_NAMES.contains(&lower.as_str()) || self.extra_names.contains(&lower)
    }

    /// `uri` with the values of secret-named query parameters replaced by keyed hashes.
    pub fn uri(&self, uri: &str, secret: &Secret) -> String {
        if self.store_raw {
            return uri.to_owned();
        }
        let Some((path, query)) = uri.split_once('?') else {
            return uri.to_owned();
        };
        let (query, fragment) = match query.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (query, None),
        };
        let mut out = String::with_capacity(uri.len());
        out.push_str(path);
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, value)) if !value.is_empty() => {
                    let decoded: String = form_urlencoded::parse(name.as_bytes())
                        .map(|(n, _)| n.into_owned())
                        .collect();
                    if self.is_secret_name(&decoded) {
                        out.push_str(name);
                        out.push('=');
                        out.push_str(&secret.hashed_value(value));
                    } else {
                        out.push_str(pair);
                    }
                }
                _ => out.push_str(pair),
            }
        }
        if let Some(fragment) = fragment {
            out.push('#');
            out.push_str(fragment);
        }
        out
    }
}

/// Field names follow Zeek's http.log where they overlap (see the design brief).
#[derive(Debug, Serialize, PartialEq)]
pub struct ExchangeRecord<'a> {
    pub ts: String,
    pub session_id: Option<&'a str>,
    /// The real client (from a trusted proxy's forwarding header, else the peer).
    pub client_ip: String,
    /// The real client's port; 0 when a forwarding header named the client without one.
    pub client_port: u16,
    pub server_ip: String,
    pub server_port: u16,
    /// The connection's peer (the proxy, behind one; else the client).
    pub peer_ip: String,
    pub peer_port: u16,
    pub method: Option<&'a str>,
    pub host: Option<&'a str>,
    pub uri: Option<&'a str>,
    /// The templated path; filled by the enrichment stage (sessions issue).
    pub endpoint: Option<&'a str>,
    pub version: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub referrer: Option<&'a str>,
    pub status_code: Option<u16>,
    pub status_msg: Option<&'a str>,
    pub request_body_len: Option<u64>,
    pub response_body_len: Option<u64>,
    pub ttfb_ms: Option<f64>,
    pub duration_ms: Option<f64>,
    pub request_truncated: bool,
    pub response_truncated: bool,
    pub gap: bool,
    /// A proxy's upstream exchange for this request was joined into this record.
    pub joined: bool,
    /// The joined upstream hop's duration (the application's time behind the proxy).
    pub upstream_ms: Option<f64>,
    /// Where NAT sent the connection (DNAT: the container behind a published port, the pod
    /// behind a Service); `server_ip`/`server_port` are what the client called. Null without NAT.
    /// "Upstream" as in `upstream_ms`: what served the request behind the address called.
    pub upstream_ip: Option<String>,
    pub upstream_port: Option<u16>,
    /// Which container served it: the inode of the network namespace owning the address that
    /// served (`upstream_ip`, else `server_ip`), when not the sensor's own; null otherwise.
    pub server_netns: Option<u64>,
    /// That namespace's cgroup v2 path (a Docker container's scope, a pod's slice), if any.
    pub server_cgroup: Option<String>,
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Attack findings (`{class, point, excerpt, rule}`); empty when none.
    pub attacks: &'a [Finding],
    /// `documented`, `shadow` or `zombie` against the host's OpenAPI document; null without one.
    pub spec_status: Option<SpecStatus>,
    /// Slower than its endpoint's own p99 (and the configured floor).
    pub slow: bool,
    /// Decoded from TLS plaintext read in the server's TLS library (uprobes).
    pub tls: bool,
    /// The HTTP/2 stream the exchange took (its `version` is "HTTP/2"); null for HTTP/1.x.
    pub stream_id: Option<u32>,
    /// gRPC calls (HTTP/2, `application/grpc`): `grpc-status` and the messages each way.
    pub grpc_status: Option<u16>,
    pub grpc_request_messages: Option<u32>,
    pub grpc_response_messages: Option<u32>,
}
