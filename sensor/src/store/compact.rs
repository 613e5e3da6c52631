//! How an exchange is laid out on disk: [`StoredExchange`] without what the store already knows.
//!
//! A week of traffic is tens of millions of exchanges, so bytes per exchange decide the disk a
//! sensor needs (target: at most 300 on disk, LMDB's own overhead included). Most fields of an
//! exchange repeat: its client address, user agent and host are those of its session, and its
//! method, version, content types and reason phrase come from a short list. Those are stored as
//! one-byte references:
//! - to the session's own lists (`client_ips`, `user_agents`, `hosts`, `server_ips` of
//!   [`SessionSummary`]); the lists only grow, so an index stays valid for the session's life;
//! - to the fixed tables below, or to the standard reason phrase of the status code.
//!
//! The endpoint is usually the first pass of the URI ([`endpoint::template`]) or that with some
//! segments replaced by the learner's [`endpoint::PARAM`], so it is kept as nothing or as a bit
//! mask of those segments ([`Endpoint`]); only a spec's template is kept as text. The start time
//! is kept as nanoseconds after the block's first (in the key). Values not found in a list are
//! stored inline.
//!
//! Format 7 blocks (before the endpoints were kept) are read with the first pass as endpoint.
//! HTTP/2's fields (stream id, gRPC) come after the endpoints, only in blocks that hold an
//! HTTP/2 exchange: format 8 blocks written before them end earlier and read as HTTP/1.x.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::{FORMAT_VERSION, SessionSummary, StoreError, StoredExchange, payload};
use crate::{
    endpoint,
    record::{Finding, Http2Record, SpecStatus},
};

/// Methods stored by number. Append only: the index is what is stored.
const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
];
const VERSIONS: &[&str] = &["HTTP/1.1", "HTTP/1.0", "HTTP/0.9"];
const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "application/json;charset=utf-8",
    "application/json; charset=UTF-8",
    "application/json;charset=UTF-8",
    "text/html",
    "text/html; charset=utf-8",
    "text/html; charset=UTF-8",
    "text/plain",
    "text/plain; charset=utf-8",
    "text/plain; charset=UTF-8",
    "application/x-www-form-urlencoded",
    "application/javascript",
    "text/javascript",
    "text/css",
    "application/xml",
    "text/xml",
    "application/octet-stream",
    "image/png",
    "image/jpeg",
    "image/svg+xml",
    "image/x-icon",
    "application/problem+json",
    "application/grpc",
];

/// A text field as stored: absent and listed values take one or two bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Text<'a> {
    Absent,
    /// The n-th entry of the field's list (the session's, or a fixed table).
    Listed(u8),
    Inline(Cow<'a, str>),
}

impl<'a> Text<'a> {
    fn of<S: AsRef<str>>(value: Option<&'a str>, list: &[S]) -> Self {
        let Some(value) = value else {
            return Self::Absent;
        };
        match list.iter().position(|v| v.as_ref() == value) {
            Some(i) if i <= usize::from(u8::MAX) => Self::Listed(i as u8),
            _ => Self::Inline(Cow::Borrowed(value)),
        }
    }

    fn resolve<S: AsRef<str>>(self, list: &[S], field: &str) -> Result<Option<String>, StoreError> {
        match self {
            Self::Absent => Ok(None),
            Self::Inline(value) => Ok(Some(value.into_owned())),
            Self::Listed(i) => list
                .get(usize::from(i))
                .map(|v| Some(v.as_ref().to_owned()))
                .ok_or_else(|| {
                    corrupt(format!(
                        "{field} refers to entry {i} of a list of {}",
                        list.len()
                    ))
                }),
        }
    }

    /// For fields every exchange has.
    fn require<S: AsRef<str>>(self, list: &[S], field: &str) -> Result<String, StoreError> {
        self.resolve(list, field)?
            .ok_or_else(|| corrupt(format!("{field} is missing")))
    }
}

fn corrupt(reason: String) -> StoreError {
    StoreError::Corrupt {
        what: "exchange",
        reason,
    }
}

/// The reason phrase: usually the standard one for the status code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Reason<'a> {
    Absent,
    Standard,
    Other(Cow<'a, str>),
}

fn standard_reason(status: Option<u16>) -> Option<&'static str> {
    http::StatusCode::from_u16(status?).ok()?.canonical_reason()
}

const REQUEST_TRUNCATED: u8 = 1;
const RESPONSE_TRUNCATED: u8 = 2;
const GAP: u8 = 4;
const JOINED: u8 = 8;
const SLOW: u8 = 16;
const TLS: u8 = 32;

/// The connection's peer: nearly always the client itself, else (behind a proxy) mostly an
/// address of the host, which is in the session's `server_ips`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Peer<'a> {
    Client,
    Other(Text<'a>, u16),
}

/// One exchange as its value in the `exchanges` database (postcard). Borrows from the
/// exchange when writing, so encoding copies each byte once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct DiskExchange<'a> {
    client_ip: Text<'a>,
    client_port: u16,
    server_ip: Text<'a>,
    server_port: u16,
    peer: Peer<'a>,
    method: Text<'a>,
    host: Text<'a>,
    uri: Option<Cow<'a, str>>,
    version: Text<'a>,
    user_agent: Text<'a>,
    referrer: Option<Cow<'a, str>>,
    request_content_type: Text<'a>,
    response_content_type: Text<'a>,
    status_code: Option<u16>,
    status_msg: Reason<'a>,
    request_body_len: Option<u64>,
    response_body_len: Option<u64>,
    ttfb_us: Option<u64>,
    duration_us: Option<u64>,
    flags: u8,
    upstream_us: Option<u64>,
    /// The NAT's translated destination; usually an address the session's lists do not hold.
    upstream: Option<(Text<'a>, u16)>,
    /// The serving container's network namespace and cgroup.
    served_by: Option<(u64, Option<Cow<'a, str>>)>,
    params: Cow<'a, [(String, String)]>,
    attacks: Cow<'a, [Finding]>,
    spec_status: Option<SpecStatus>,
}

impl<'a> DiskExchange<'a> {
    /// `e` for storage in `session`, which has already counted it in.
    pub(super) fn new(e: &'a StoredExchange, session: &SessionSummary) -> Self {
        let flag = |set: bool, bit: u8| if set { bit } else { 0 };
        let flags = flag(e.request_truncated, REQUEST_TRUNCATED)
            | flag(e.response_truncated, RESPONSE_TRUNCATED)
            | flag(e.gap, GAP)
            | flag(e.joined, JOINED)
            | flag(e.slow, SLOW)
            | flag(e.tls, TLS);
        let peer = if e.peer_ip == e.client_ip && e.peer_port == e.client_port {
            Peer::Client
        } else {
            Peer::Other(Text::of(Some(&e.peer_ip), &session.server_ips), e.peer_port)
        };
        Self {
            client_ip: Text::of(Some(&e.client_ip), &session.client_ips),
            client_port: e.client_port,
            server_ip: Text::of(Some(&e.server_ip), &session.server_ips),
            server_port: e.server_port,
            peer,
            method: Text::of(e.method.as_deref(), METHODS),
            host: Text::of(e.host.as_deref(), &session.hosts),
            uri: e.uri.as_deref().map(Cow::Borrowed),
            version: Text::of(e.version.as_deref(), VERSIONS),
            user_agent: Text::of(e.user_agent.as_deref(), &session.user_agents),
            referrer: e.referrer.as_deref().map(Cow::Borrowed),
            request_content_type: Text::of(e.request_content_type.as_deref(), CONTENT_TYPES),
            response_content_type: Text::of(e.response_content_type.as_deref(), CONTENT_TYPES),
            status_code: e.status_code,
            status_msg: match e.status_msg.as_deref() {
                None => Reason::Absent,
                Some(msg) if standard_reason(e.status_code) == Some(msg) => Reason::Standard,
                Some(msg) => Reason::Other(Cow::Borrowed(msg)),
            },
            request_body_len: e.request_body_len,
            response_body_len: e.response_body_len,
            ttfb_us: e.ttfb_us,
            duration_us: e.duration_us,
            flags,
            upstream_us: e.upstream_us,
            upstream: e.upstream_ip.as_deref().map(|ip| {
                (
                    Text::of(Some(ip), &session.server_ips),
                    e.upstream_port.unwrap_or(0),
                )
            }),
            served_by: e
                .server_netns
                .map(|netns| (netns, e.server_cgroup.as_deref().map(Cow::Borrowed))),
            params: Cow::Borrowed(&e.params),
            attacks: Cow::Borrowed(&e.attacks),
            spec_status: e.spec_status,
        }
    }

    /// The exchange again, from its start time (the key's), its session and its endpoint.
    fn expand(
        self,
        ts_ns: u64,
        session: &SessionSummary,
        endpoint: Endpoint,
    ) -> Result<StoredExchange, StoreError> {
        let status_msg = match self.status_msg {
            Reason::Absent => None,
            Reason::Standard => Some(
                standard_reason(self.status_code)
                    .ok_or_else(|| {
                        corrupt(format!(
                            "no standard reason for status {:?}",
                            self.status_code
                        ))
                    })?
                    .to_owned(),
            ),
            Reason::Other(msg) => Some(msg.into_owned()),
        };
        let uri = self.uri.map(Cow::into_owned);
        let client_ip = self.client_ip.require(&session.client_ips, "client_ip")?;
        let (peer_ip, peer_port) = match self.peer {
            Peer::Client => (client_ip.clone(), self.client_port),
            Peer::Other(ip, port) => (ip.require(&session.server_ips, "peer_ip")?, port),
        };
        let (upstream_ip, upstream_port) = match self.upstream {
            Some((ip, port)) => (
                Some(ip.require(&session.server_ips, "upstream_ip")?),
                Some(port),
            ),
            None => (None, None),
        };
        let (server_netns, server_cgroup) = match self.served_by {
            Some((netns, cgroup)) => (Some(netns), cgroup.map(Cow::into_owned)),
            None => (None, None),
        };
        Ok(StoredExchange {
            ts_ns,
            client_ip,
            client_port: self.client_port,
            server_ip: self.server_ip.require(&session.server_ips, "server_ip")?,
            server_port: self.server_port,
            peer_ip,
            peer_port,
            method: self.method.resolve(METHODS, "method")?,
            host: self.host.resolve(&session.hosts, "host")?,
            endpoint: endpoint.expand(uri.as_deref()),
            uri,
            version: self.version.resolve(VERSIONS, "version")?,
            user_agent: self
                .user_agent
                .resolve(&session.user_agents, "user_agent")?,
            referrer: self.referrer.map(Cow::into_owned),
            request_content_type: self
                .request_content_type
                .resolve(CONTENT_TYPES, "request_content_type")?,
            response_content_type: self
                .response_content_type
                .resolve(CONTENT_TYPES, "response_content_type")?,
            status_code: self.status_code,
            status_msg,
            request_body_len: self.request_body_len,
            response_body_len: self.response_body_len,
            ttfb_us: self.ttfb_us,
            duration_us: self.duration_us,
            exchange_id: None,
            request_truncated: self.flags & REQUEST_TRUNCATED != 0,
            response_truncated: self.flags & RESPONSE_TRUNCATED != 0,
            gap: self.flags & GAP != 0,
            joined: self.flags & JOINED != 0,
            upstream_us: self.upstream_us,
            upstream_ip,
            upstream_port,
            server_netns,
            server_cgroup,
            params: self.params.into_owned(),
            attacks: self.attacks.into_owned(),
            spec_status: self.spec_status,
            slow: self.flags & SLOW != 0,
            tls: self.flags & TLS != 0,
            // Kept beside the exchanges in the block (see `Block`).
            http2: None,
        })
    }
}

/// An exchange's endpoint as stored, against the first pass of its URI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Endpoint<'a> {
    /// [`endpoint::template`] of the URI (none without a URI).
    FirstPass,
    /// The first pass with the segments of these bits (bit i: segment i, counted from the empty
    /// one before the first `/`) replaced by [`endpoint::PARAM`]: a learned template.
    Learned(u64),
    /// Anything else (a spec's template), as it is.
    Other(Cow<'a, str>),
}

impl<'a> Endpoint<'a> {
    fn of(e: &'a StoredExchange) -> Self {
        let first = e.uri.as_deref().map(endpoint::template);
        match (&e.endpoint, first) {
            (None, None) => Self::FirstPass,
            (Some(stored), Some(first)) if *stored == first => Self::FirstPass,
            (Some(stored), Some(first)) => match learned_mask(&first, stored) {
                Some(mask) => Self::Learned(mask),
                None => Self::Other(Cow::Borrowed(stored)),
            },
            (Some(stored), None) => Self::Other(Cow::Borrowed(stored)),
            // An exchange without an endpoint but with a URI: none stays none.
            (None, Some(_)) => Self::Other(Cow::Borrowed("")),
        }
    }

    fn expand(self, uri: Option<&str>) -> Option<String> {
        match self {
            Self::FirstPass => uri.map(endpoint::template),
            Self::Learned(mask) => uri.map(|uri| {
                let first = endpoint::template(uri);
                let segments: Vec<&str> = first
                    .split('/')
                    .enumerate()
                    .map(|(i, s)| {
                        if i < 64 && mask & (1 << i) != 0 {
                            endpoint::PARAM
                        } else {
                            s
                        }
                    })
                    .collect();
                segments.join("/")
            }),
            Self::Other(text) if text.is_empty() => None,
            Self::Other(text) => Some(text.into_owned()),
        }
    }
}

/// The bits of the segments where `learned` has [`endpoint::PARAM`] and `first` something
/// else, when that is the only difference (and within the first 64 segments).
fn learned_mask(first: &str, learned: &str) -> Option<u64> {
    let (mut a, mut b) = (first.split('/'), learned.split('/'));
    let mut mask = 0u64;
    for i in 0.. {
        match (a.next(), b.next()) {
            (None, None) => return Some(mask),
            (Some(x), Some(y)) if x == y => {}
            (Some(_), Some(y)) if y == endpoint::PARAM && i < 64 => mask |= 1 << i,
            _ => return None,
        }
    }
    None
}

/// Exchanges of one session from one transaction, in time order: the value under one key, whose
/// start time is the first exchange's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Block<'a> {
    /// (nanoseconds after the first exchange's start, exchange)
    exchanges: Vec<(u64, DiskExchange<'a>)>,
    /// The exchanges' endpoints, in the same order; empty when every one is the first pass
    /// (and in format 7 blocks, which end before it).
    endpoints: Vec<Endpoint<'a>>,
    /// The exchanges' HTTP/2 fields, in the same order; empty when none is HTTP/2 (and in
    /// blocks written before HTTP/2 was decoded, which end before it).
    http2: Vec<Option<Cow<'a, Http2Record>>>,
}

impl<'a> Block<'a> {
    /// The block of `exchanges` (in time order) and the first one's start time, for the key.
    pub(super) fn new(exchanges: &[&'a StoredExchange], session: &SessionSummary) -> (Self, u64) {
        let first_ns = exchanges.first().map_or(0, |e| e.ts_ns);
        let mut endpoints: Vec<Endpoint> = exchanges.iter().map(|e| Endpoint::of(e)).collect();
        if endpoints.iter().all(|e| *e == Endpoint::FirstPass) {
            endpoints.clear();
        }
        let mut http2: Vec<_> = exchanges
            .iter()
            .map(|e| e.http2.as_ref().map(Cow::Borrowed))
            .collect();
        if http2.iter().all(Option::is_none) {
            http2.clear();
        }
        let block = Self {
            exchanges: exchanges
                .iter()
                .map(|e| {
                    (
                        e.ts_ns.saturating_sub(first_ns),
                        DiskExchange::new(e, session),
                    )
                })
                .collect(),
            endpoints,
            http2,
        };
        (block, first_ns)
    }

    /// A stored block, of this format or of format 7.
    pub(super) fn decode(bytes: &'a [u8]) -> Result<Self, StoreError> {
        let corrupt = |e: postcard::Error| StoreError::Corrupt {
            what: "exchanges",
            reason: e.to_string(),
        };
        let (version, rest) = payload(bytes, "exchanges")?;
        let (exchanges, rest) = postcard::take_from_bytes(rest).map_err(corrupt)?;
        // Format 7: the same exchanges, nothing after them.
        if version != FORMAT_VERSION || rest.is_empty() {
            return Ok(Self {
                exchanges,
                endpoints: Vec::new(),
                http2: Vec::new(),
            });
        }
        let (endpoints, rest) = postcard::take_from_bytes(rest).map_err(corrupt)?;
        // Written before HTTP/2 was decoded: no HTTP/2 exchange in it.
        let http2 = if rest.is_empty() {
            Vec::new()
        } else {
            postcard::from_bytes(rest).map_err(corrupt)?
        };
        Ok(Self {
            exchanges,
            endpoints,
            http2,
        })
    }

    /// The exchanges again, from the key's start time and their session.
    pub(super) fn expand(
        self,
        first_ns: u64,
        session: &SessionSummary,
    ) -> impl Iterator<Item = Result<StoredExchange, StoreError>> {
        let mut endpoints = self.endpoints.into_iter();
        let mut http2 = self.http2.into_iter();
        self.exchanges.into_iter().map(move |(after, e)| {
            let endpoint = endpoints.next().unwrap_or(Endpoint::FirstPass);
            let http2 = http2.next().flatten().map(Cow::into_owned);
            e.expand(first_ns.saturating_add(after), session, endpoint)
                .map(|e| StoredExchange { http2, ..e })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> SessionSummary {
        SessionSummary {
            client_ips: vec!["10.0.0.9".into(), "10.0.0.7".into()],
            server_ips: vec!["10.0.0.1".into()],
            user_agents: vec!["curl/8.11.0".into()],
            hosts: vec!["api.example".into()],
            ..SessionSummary::default()
        }
    }

    fn exchange() -> StoredExchange {
        StoredExchange {
            ts_ns: 1_795_000_000_123_456_789,
            client_ip: "10.0.0.7".into(),
            client_port: 50_123,
            server_ip: "10.0.0.1".into(),
            server_port: 8080,
            peer_ip: "10.0.0.7".into(),
            peer_port: 50_123,
            method: Some("GET".into()),
            host: Some("api.example".into()),
            uri: Some("/users/42?page=2".into()),
            endpoint: Some("/users/{id}".into()),
            version: Some("HTTP/1.1".into()),
            user_agent: Some("curl/8.11.0".into()),
            referrer: None,
            request_content_type: None,
            response_content_type: Some("application/json".into()),
            status_code: Some(404),
            status_msg: Some("Not Found".into()),
            request_body_len: Some(0),
            response_body_len: Some(153),
            ttfb_us: Some(1250),
            duration_us: Some(1300),
            request_truncated: false,
            response_truncated: true,
            gap: true,
            joined: false,
            upstream_us: None,
            upstream_ip: None,
            upstream_port: None,
            server_netns: None,
            server_cgroup: None,
            params: vec![("tenant".into(), "acme".into())],
            attacks: Vec::new(),
            spec_status: None,
            slow: false,
            tls: false,
            http2: None,
            exchange_id: None,
        }
    }

    fn round_trip(e: &StoredExchange, s: &SessionSummary) -> StoredExchange {
        let (block, first_ns) = Block::new(&[e], s);
        let bytes = postcard::to_extend(&block, vec![FORMAT_VERSION]).unwrap();
        let mut back: Vec<_> = Block::decode(&bytes)
            .unwrap()
            .expand(first_ns, s)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back.len(), 1);
        back.remove(0)
    }

    #[test]
    fn a_block_keeps_each_start_time() {
        let mut later = exchange();
        later.ts_ns += 1_500_000_123;
        later.uri = Some("/users/43".into());
        later.endpoint = Some("/users/{id}".into());
        let first = exchange();
        let (block, first_ns) = Block::new(&[&first, &later], &session());
        assert_eq!(first_ns, first.ts_ns);
        let bytes = postcard::to_allocvec(&block).unwrap();
        let block: Block = postcard::from_bytes(&bytes).unwrap();
        let back: Vec<_> = block
            .expand(first_ns, &session())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, vec![exchange(), later]);
    }

    #[test]
    fn http2_fields_round_trip_and_older_blocks_have_none() {
        let http1 = exchange();
        let mut h2 = exchange();
        h2.version = Some("HTTP/2".into());
        h2.http2 = Some(Http2Record {
            stream_id: 13,
            grpc_status: Some(14),
            grpc_request_messages: Some(1),
            grpc_response_messages: Some(0),
        });
        let (block, first_ns) = Block::new(&[&http1, &h2], &session());
        let bytes = postcard::to_extend(&block, vec![FORMAT_VERSION]).unwrap();
        let back: Vec<_> = Block::decode(&bytes)
            .unwrap()
            .expand(first_ns, &session())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, vec![http1.clone(), h2]);
        // A block without HTTP/2 costs one byte more than before, and one written before
        // stream ids were (exchanges and endpoints only) reads as HTTP/1.x.
        let (block, first_ns) = Block::new(&[&http1], &session());
        let bytes = postcard::to_extend(&block, vec![FORMAT_VERSION]).unwrap();
        let older =
            postcard::to_extend(&(&block.exchanges, &block.endpoints), vec![FORMAT_VERSION])
                .unwrap();
        assert_eq!(bytes.len(), older.len() + 1);
        let back: Vec<_> = Block::decode(&older)
            .unwrap()
            .expand(first_ns, &session())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, vec![http1]);
    }

    #[test]
    fn listed_values_round_trip_and_shrink() {
        let e = exchange();
        let s = session();
        assert_eq!(round_trip(&e, &s), e);
        let compact = postcard::to_allocvec(&DiskExchange::new(&e, &s)).unwrap();
        let full = postcard::to_allocvec(&e).unwrap();
        assert!(
            compact.len() * 2 < full.len(),
            "{} vs {}",
            compact.len(),
            full.len()
        );
    }

    #[test]
    fn nat_upstream_and_serving_container_round_trip() {
        let mut e = exchange();
        e.upstream_ip = Some("172.30.0.2".into());
        e.upstream_port = Some(80);
        e.server_netns = Some(4_026_532_281);
        e.server_cgroup = Some("/system.slice/docker-0123abcd.scope".into());
        assert_eq!(round_trip(&e, &session()), e);
        // Listed like the server's addresses when the session knows the upstream's.
        let mut s = session();
        s.server_ips.push("172.30.0.2".into());
        assert_eq!(round_trip(&e, &s), e);
        e.server_cgroup = None;
        assert_eq!(round_trip(&e, &s), e);
    }

    #[test]
    fn values_outside_the_lists_are_kept_inline() {
        let mut e = exchange();
        e.client_ip = "192.0.2.1".into();
        e.server_ip = "192.0.2.2".into();
        e.method = Some("PROPFIND".into());
        e.version = Some("HTTP/2.0".into());
        e.host = Some("other.example".into());
        e.user_agent = Some("wget/1.25".into());
        e.request_content_type = Some("application/x-custom".into());
        e.status_code = Some(404);
        e.status_msg = Some("Gone Fishing".into());
        assert_eq!(round_trip(&e, &session()), e);
        e.status_code = Some(799);
        e.status_msg = Some(String::new());
        assert_eq!(round_trip(&e, &session()), e);
        e.status_code = None;
        e.status_msg = None;
        e.method = None;
        e.uri = None;
        e.endpoint = None;
        assert_eq!(round_trip(&e, &session()), e);
    }

    #[test]
    fn a_proxied_exchange_keeps_its_peer_and_upstream_time() {
        let mut e = exchange();
        // Behind a proxy on the host: the peer is a host address, the client named by it.
        e.client_ip = "203.0.113.9".into();
        e.client_port = 0;
        e.peer_ip = "10.0.0.1".into();
        e.peer_port = 41_000;
        e.joined = true;
        e.upstream_us = Some(830);
        assert_eq!(round_trip(&e, &session()), e);
        let listed = postcard::to_allocvec(&DiskExchange::new(&e, &session())).unwrap();
        // A peer outside the session's lists is kept inline.
        e.peer_ip = "2001:db8::99".into();
        assert_eq!(round_trip(&e, &session()), e);
        let inline = postcard::to_allocvec(&DiskExchange::new(&e, &session())).unwrap();
        assert!(listed.len() + 10 < inline.len());
    }

    #[test]
    fn learned_and_spec_endpoints_round_trip_in_few_bytes() {
        let s = session();
        let first_pass = postcard::to_allocvec(&Block::new(&[&exchange()], &s).0).unwrap();
        let mut e = exchange();
        e.uri = Some("/users/alice.smith/orders/42?x=1".into());
        e.endpoint = Some("/users/{param}/orders/{id}".into());
        assert_eq!(round_trip(&e, &s), e);
        let learned = postcard::to_allocvec(&Block::new(&[&e], &s).0).unwrap();
        // The mask of segment 2 in place of the endpoint's text.
        let uri_growth = "/users/alice.smith/orders/42?x=1".len() - "/users/42?page=2".len();
        assert!(learned.len() <= first_pass.len() + uri_growth + 3);
        e.endpoint = Some("/api/v3/user/{username}".into());
        assert_eq!(round_trip(&e, &s), e);
        // Endpoints that are neither: none with a URI, an odd one.
        e.endpoint = None;
        assert_eq!(round_trip(&e, &s), e);
        e.endpoint = Some("/users/{param}/{param}/x".into());
        assert_eq!(round_trip(&e, &s), e);
        assert_eq!(learned_mask("/a/b/c", "/{param}/b/{param}"), Some(0b1010));
        assert_eq!(learned_mask("/a/b", "/a/b/{param}"), None);
        assert_eq!(learned_mask("/a/b", "/x/b"), None);
    }

    #[test]
    fn format_7_blocks_read_with_the_first_pass() {
        let s = session();
        let mut e = exchange();
        e.endpoint = Some("/users/{param}".into());
        let (block, first_ns) = Block::new(&[&e], &s);
        // A format 7 value: the exchanges alone.
        let old = postcard::to_extend(&block.exchanges, vec![7]).unwrap();
        let back: Vec<_> = Block::decode(&old)
            .unwrap()
            .expand(first_ns, &s)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back[0].endpoint.as_deref(), Some("/users/{id}"));
        for unreadable in [&[6u8, 0][..], &[FORMAT_VERSION + 1, 0][..], &[]] {
            let err = Block::decode(unreadable).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        }
    }

    #[test]
    fn a_reference_past_the_session_list_is_an_error() {
        let e = exchange();
        let disk = DiskExchange::new(&e, &session());
        let err = disk
            .expand(e.ts_ns, &SessionSummary::default(), Endpoint::FirstPass)
            .unwrap_err();
        assert!(err.to_string().contains("client_ip"), "{err}");
    }
}
