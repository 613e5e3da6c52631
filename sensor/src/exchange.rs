//! The output of decoding: an HTTP exchange (a request paired with its response, with timings),
//! and its NDJSON rendering in the vocabulary of the design brief (Zeek http.log names).

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    time::{Duration, UNIX_EPOCH},
};

/// One parsed HTTP message head and what was seen of its body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageMeta {
    /// Wall-clock ns since the epoch of the first byte.
    pub start_ns: u64,
    /// Wall-clock ns of the last byte (0 while incomplete).
    pub end_ns: u64,
    /// "1.0", "1.1" or "0.9", or "HTTP/2" (`http::h2::VERSION`; empty until known).
    pub version: &'static str,
    /// The headers the decoder parsed, in order, values decoded lossily as UTF-8. With
    /// `headers`, at most the configured number. Read both through [`Self::all_headers`] or
    /// [`Self::header`].
    pub header_block: HeaderBlock,
    /// Headers given as owned pairs, after those of `header_block`: how exchanges built by hand
    /// (tests, tools) carry theirs. The decoder leaves this empty: one string per name and value
    /// costs two allocations per header, the block one per message.
    pub headers: Vec<(String, String)>,
    /// Body bytes after removing chunked framing, before content decoding. Includes bytes lost in
    /// gaps inside a body of known length.
    pub body_len: u64,
    /// The first bytes of the body, up to the configured cap.
    pub body: Vec<u8>,
    /// The message is incomplete: the body cap cut it, the connection ended early, or a gap.
    pub truncated: bool,
    /// More headers came than were kept.
    pub headers_truncated: bool,
    /// Bytes of this message were never seen (capture loss).
    pub gap: bool,
    /// Framing irregularities the decoder saw (request smuggling signs), for the attack
    /// detector's `protocol` findings.
    pub anomalies: Anomalies,
    /// gRPC messages (length-prefixed) in the body, counted by the HTTP/2 decoder for gRPC
    /// calls; None for anything else, or when a gap lost their framing.
    pub grpc_messages: Option<u32>,
}

/// Framing irregularities in a message: what request smuggling and parser-differential attacks
/// rely on (RFC 9112 6.1, 6.3, 7.1). The decoder still decodes such a message as RFC 9112 says
/// (chunked wins over Content-Length, an invalid length means no known length); these flags only
/// record that it had to choose. A set of bits: cheap to carry on every message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Anomalies(u16);

impl Anomalies {
    /// Both Content-Length and Transfer-Encoding (the classic CL.TE / TE.CL smuggling setup).
    pub const LENGTH_AND_CHUNKED: Self = Self(1);
    /// Content-Length repeated with different values.
    pub const LENGTH_CONFLICT: Self = Self(1 << 1);
    /// A Content-Length that is not plain digits or exceeds a signed 64-bit number (what
    /// servers keep lengths in; nginx answers 400 past it).
    pub const LENGTH_INVALID: Self = Self(1 << 2);
    /// A Transfer-Encoding with an unknown or repeated coding, or `chunked` not last, or in an
    /// HTTP/1.0 message.
    pub const TRANSFER_ENCODING_INVALID: Self = Self(1 << 3);
    /// A chunk-size line that is not hex digits or exceeds a signed 64-bit number.
    pub const CHUNK_SIZE_INVALID: Self = Self(1 << 4);
    /// A head line ended by a bare LF (no CR), which front ends and back ends read differently.
    pub const BARE_LF: Self = Self(1 << 5);
    /// A header continued on a line that starts with a space or tab (obsolete line folding,
    /// RFC 9112 5.2): most servers reject it, some join it, and smuggling plays on the
    /// difference. The decoder joins it, as the RFC lets a recipient do.
    pub const OBS_FOLD: Self = Self(1 << 6);
    /// A CR not followed by LF inside a head: some servers end a line there, others read it as
    /// part of the value. The decoder reads it as a space (RFC 9112 2.2).
    pub const BARE_CR: Self = Self(1 << 7);
    /// A header line no recipient may accept (whitespace before the colon, a name outside the
    /// token characters, a control character in a value; RFC 9112 5.1 asks for a 400). The
    /// decoder leaves the line out and keeps the message: the request stays in the record.
    pub const HEADER_INVALID: Self = Self(1 << 8);
    /// The request follows, on the same connection, one whose framing or head an origin must
    /// reject (any flag above but a bare LF). A server that rejects that one closes the
    /// connection and never reads this one; a server that reads the first one differently may
    /// read this one where the decoder did not: the smuggled request of CL.TE and CL.CL attacks.
    pub const AFTER_AMBIGUOUS: Self = Self(1 << 9);

    /// Each flag with the name used in findings (`rule`).
    pub const NAMED: [(Self, &'static str); 10] = [
        (Self::LENGTH_AND_CHUNKED, "protocol-length-and-chunked"),
        (Self::LENGTH_CONFLICT, "protocol-length-conflict"),
        (Self::LENGTH_INVALID, "protocol-length-invalid"),
        (
            Self::TRANSFER_ENCODING_INVALID,
            "protocol-transfer-encoding-invalid",
        ),
        (Self::CHUNK_SIZE_INVALID, "protocol-chunk-size-invalid"),
        (Self::BARE_LF, "protocol-bare-lf"),
        (Self::OBS_FOLD, "protocol-obs-fold"),
        (Self::BARE_CR, "protocol-bare-cr"),
        (Self::HEADER_INVALID, "protocol-header-invalid"),
        (Self::AFTER_AMBIGUOUS, "protocol-after-ambiguous-message"),
    ];

    pub fn insert(&mut self, flag: Self) {
        self.0 |= flag.0;
    }

    pub fn contains(self, flag: Self) -> bool {
        self.0 & flag.0 == flag.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether origins may read the message in different ways or must reject it: any flag but
    /// a bare LF (RFC 9112 2.2 lets a recipient accept it, and servers do) and
    /// [`Self::AFTER_AMBIGUOUS`] (which is about an earlier message).
    pub fn is_ambiguous(self) -> bool {
        self.0 & !(Self::BARE_LF.0 | Self::AFTER_AMBIGUOUS.0) != 0
    }

    /// The names of the flags set, in [`Self::NAMED`] order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMED
            .into_iter()
            .filter(move |(flag, _)| self.contains(*flag))
            .map(|(_, name)| name)
    }
}

impl MessageMeta {
    /// Every header in order: the parsed ones, then those given as pairs.
    pub fn all_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.header_block
            .iter()
            .chain(self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    }

    /// How many headers the message has.
    pub fn header_count(&self) -> usize {
        self.header_block.len() + self.headers.len()
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_block.get(name).or_else(|| {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        })
    }
}

/// A message's header names and values in one string, with where each ends: the decoder's
/// representation, one allocation for the text and one for the ends however many headers come.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderBlock {
    /// Name, value, name, value, ... back to back.
    text: String,
    /// Per header: where its name ends (its value starts) and where its value ends in `text`.
    ends: Vec<(usize, usize)>,
}

impl HeaderBlock {
    /// Room for `headers` headers of `bytes` bytes of text in all.
    pub fn with_capacity(headers: usize, bytes: usize) -> Self {
        Self {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(headers),
        }
    }

    pub fn push(&mut self, name: &str, value: &str) {
        self.text.push_str(name);
        let name_end = self.text.len();
        self.text.push_str(value);
        self.ends.push((name_end, self.text.len()));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The first value of the header with this name (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        let mut start = 0;
        for &(name_end, value_end) in &self.ends {
            // Looked up a dozen times per exchange: most names differ in length, which is
            // cheaper to see than the text.
            if name_end.checked_sub(start) == Some(name.len())
                && self
                    .text
                    .get(start..name_end)
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            {
                return Some(self.text.get(name_end..value_end).unwrap_or_default());
            }
            start = value_end;
        }
        None
    }

    /// (name, value) in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut start = 0;
        self.ends.iter().map(move |&(name_end, value_end)| {
            // The ends were taken at pushes of whole strs, so they are char boundaries; `get`
            // keeps even a broken invariant from panicking.
            let name = self.text.get(start..name_end).unwrap_or_default();
            let value = self.text.get(name_end..value_end).unwrap_or_default();
            start = value_end;
            (name, value)
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// As sent, with the query string.
    pub uri: String,
    pub meta: MessageMeta,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// None for an HTTP/0.9 response, which has no status line.
    pub status: Option<u16>,
    pub reason: String,
    /// Interim (1xx) responses that came before this one, e.g. 100 Continue.
    pub interim: Vec<u16>,
    pub meta: MessageMeta,
}

/// A request and its response, either of which may be missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// The connection's peer: the client end of the TCP connection. Behind a reverse proxy this
    /// is the proxy; [`Exchange::client_addr`] is the real client.
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub request: Option<Request>,
    pub response: Option<Response>,
    /// What the proxy stage found out (see [`crate::proxy`]); empty as decoded.
    pub forwarding: Forwarding,
    /// Where NAT sent the connection (DNAT: a published container port, a Kubernetes Service):
    /// the server that really answered. `server` stays the address the client called.
    pub upstream: Option<SocketAddr>,
    /// Decoded from TLS plaintext read in the server's TLS library.
    pub tls: bool,
    /// The HTTP/2 stream the exchange took; None for HTTP/1.x.
    pub stream_id: Option<u32>,
}

/// What the proxy stage learned about an exchange: the client a trusted proxy named, and the
/// proxy's own upstream exchange if it was joined into this one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Forwarding {
    /// The client named in a forwarding header sent by a trusted peer (port 0 where the header
    /// gives none). None: the connection's peer is the client.
    pub client: Option<SocketAddr>,
    /// The exchange a proxy made upstream for this request was joined into it.
    pub joined: bool,
    /// The joined upstream hop's duration, request start to response end (across a chain of
    /// proxies, the innermost: the application's own time). None if not joined or incomplete.
    pub upstream_ns: Option<u64>,
}

impl Exchange {
    /// The real client: the one a trusted proxy named, else the connection's peer.
    pub fn client_addr(&self) -> SocketAddr {
        self.forwarding.client.unwrap_or(self.client)
    }

    /// When the exchange started: the request's first byte, else the response's.
    pub fn start_ns(&self) -> u64 {
        self.request
            .as_ref()
            .map(|r| r.meta.start_ns)
            .or_else(|| self.response.as_ref().map(|r| r.meta.start_ns))
            .unwrap_or(0)
    }

    /// Request start to first response byte.
    pub fn ttfb_ms(&self) -> Option<f64> {
        let (request, response) = (self.request.as_ref()?, self.response.as_ref()?);
        Some(ms_between(request.meta.start_ns, response.meta.start_ns))
    }

    /// Request start to the response's last byte.
    pub fn duration_ms(&self) -> Option<f64> {
        self.duration_ns().map(|ns| ns as f64 / 1e6)
    }

    /// Request start to the response's last byte, in nanoseconds.
    pub fn duration_ns(&self) -> Option<u64> {
        let (request, response) = (self.request.as_ref()?, self.response.as_ref()?);
        (response.meta.end_ns != 0)
            .then(|| response.meta.end_ns.saturating_sub(request.meta.start_ns))
    }

    /// When the exchange ended: the response's last byte, else the latest byte seen.
    pub fn end_ns(&self) -> u64 {
        let request_end = self.request.as_ref().map_or(0, |r| r.meta.end_ns);
        let response_end = self.response.as_ref().map_or(0, |r| r.meta.end_ns);
        request_end.max(response_end).max(self.start_ns())
    }

    pub fn gap(&self) -> bool {
        self.request.as_ref().is_some_and(|r| r.meta.gap)
            || self.response.as_ref().is_some_and(|r| r.meta.gap)
    }
}

/// `ip.to_string()`. Addresses are written several times per exchange, and IPv4's `Display`
/// (which supports padding) costs several times the plain digits.
pub fn ip_text(ip: IpAddr) -> String {
    let mut text = String::with_capacity(15);
    push_ip(&mut text, ip);
    text
}

/// Appends `ip` as `Display` writes it.
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(_) => {
            let _ = write!(out, "{ip}");
        }
    }
}

fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e6
}

/// RFC 3339, microseconds, UTC.
/// The wall clock in ns since the epoch (0 before 1970).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub fn rfc3339_ns(ns: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_is_display() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "192.168.100.9",
            "1.20.199.250",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }
}
