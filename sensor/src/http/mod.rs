//! Stage 3, HTTP/1.x: turns the two ordered byte streams of a connection into exchanges.
//!
//! [`parser::MessageParser`] reads one direction; [`HttpConnection`] pairs requests with
//! responses in order (pipelining), decides each response's framing from its request (HEAD,
//! CONNECT, 1xx, 204, 304), handles interim responses (100 Continue) and upgrades (101 and
//! successful CONNECT end decoding), and emits an [`Exchange`] once both halves are complete —
//! or incomplete ones when the connection ends.

pub mod content;
pub mod h2;
pub mod parser;

use std::{collections::VecDeque, net::SocketAddr};

use h2::H2Connection;
use parser::{Framing, Head, Kind, MessageParser, MethodKind, Progress};

use crate::{
    exchange::{Exchange, MessageMeta, Request, Response},
    reassembly::StreamEvent,
};

/// Bounds and caps of the decoder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Body bytes captured per message; the rest is counted in `body_len` only.
    pub body_cap: usize,
    /// Largest message head accepted.
    pub max_head_bytes: usize,
    /// Headers kept per message.
    pub max_headers: usize,
    /// Longest chunk-size or trailer line.
    pub max_line_bytes: usize,
    /// Requests waiting for their response per connection.
    pub max_pending: usize,
    /// HTTP/2: largest frame other than DATA read (longer ones are skipped by their length;
    /// a header block among them stops the connection's decoding).
    pub h2_max_frame_bytes: usize,
    /// HTTP/2: largest header block (HEADERS and its CONTINUATIONs) decoded.
    pub h2_max_header_block_bytes: usize,
    /// HTTP/2: largest HPACK dynamic table followed per direction (peers default to 4096).
    pub h2_max_table_bytes: usize,
    /// HTTP/2: streams followed at once per connection (nginx allows 128 by default).
    pub h2_max_streams: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_cap: 16 * 1024,
            max_head_bytes: 64 * 1024,
            max_headers: 128,
            max_line_bytes: 4096,
            max_pending: 64,
            h2_max_frame_bytes: 64 * 1024,
            h2_max_header_block_bytes: 64 * 1024,
            h2_max_table_bytes: 64 * 1024,
            h2_max_streams: 128,
        }
    }
}

/// Counters of the HTTP stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpCounters {
    pub requests: u64,
    pub responses: u64,
    pub interim_responses: u64,
    pub exchanges: u64,
    pub requests_without_response: u64,
    pub responses_without_request: u64,
    pub parse_errors: u64,
    pub resyncs: u64,
    pub resync_bytes_skipped: u64,
    pub heads_too_large: u64,
    pub headers_truncated: u64,
    pub bodies_truncated: u64,
    /// Body bytes past the cap that the capture left out on the decoder's request (counted in
    /// the messages' body lengths, never read).
    pub body_bytes_skipped: u64,
    pub messages_with_gaps: u64,
    /// Requests whose responses a gap swallowed whole, found by the client's acknowledgements.
    pub responses_lost_in_gaps: u64,
    /// Heads cut by a gap whose start line (and headers before the cut) were still reported.
    pub heads_salvaged: u64,
    /// Messages cut short by a gap or by the end of the connection.
    pub truncated_messages: u64,
    pub bad_framing: u64,
    pub tunnels: u64,
    pub tunnel_bytes: u64,
    pub http09_requests: u64,
    /// Requests given up unanswered because too many waited on one connection.
    pub pending_overflow: u64,
    /// Streams that never looked like HTTP and were given up on.
    pub not_http_streams: u64,
    /// Connections that began with the HTTP/2 preface.
    pub h2_connections: u64,
    /// HTTP/2 connections joined after their start (HPACK state unknown): skipped.
    pub h2_midway_skipped: u64,
    /// HTTP/2 connections whose decoding stopped (one of the causes below, or a gap outside
    /// a DATA frame): their open streams were emitted as they were, the rest ignored.
    pub h2_decoding_stopped: u64,
    pub h2_hpack_errors: u64,
    pub h2_header_blocks_too_large: u64,
    /// Frames other than DATA above the bound, skipped by their length.
    pub h2_frames_too_large: u64,
    /// Frames out of place (a header block interrupted, a malformed HEADERS, a client push).
    pub h2_protocol_errors: u64,
    /// Streams not followed because too many were open on their connection.
    pub h2_streams_over_limit: u64,
    pub h2_streams_reset: u64,
    /// Streams a GOAWAY said were never processed.
    pub h2_streams_refused: u64,
}

impl HttpCounters {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("requests", self.requests),
            ("responses", self.responses),
            ("interim_responses", self.interim_responses),
            ("exchanges", self.exchanges),
            ("requests_without_response", self.requests_without_response),
            ("responses_without_request", self.responses_without_request),
            ("parse_errors", self.parse_errors),
            ("resyncs", self.resyncs),
            ("resync_bytes_skipped", self.resync_bytes_skipped),
            ("heads_too_large", self.heads_too_large),
            ("headers_truncated", self.headers_truncated),
            ("bodies_truncated", self.bodies_truncated),
            ("body_bytes_skipped", self.body_bytes_skipped),
            ("messages_with_gaps", self.messages_with_gaps),
            ("responses_lost_in_gaps", self.responses_lost_in_gaps),
            ("heads_salvaged", self.heads_salvaged),
            ("truncated_messages", self.truncated_messages),
            ("bad_framing", self.bad_framing),
            ("tunnels", self.tunnels),
            ("tunnel_bytes", self.tunnel_bytes),
            ("http09_requests", self.http09_requests),
            ("pending_overflow", self.pending_overflow),
            ("not_http_streams", self.not_http_streams),
            ("h2_connections", self.h2_connections),
            ("h2_midway_skipped", self.h2_midway_skipped),
            ("h2_decoding_stopped", self.h2_decoding_stopped),
            ("h2_hpack_errors", self.h2_hpack_errors),
            (
                "h2_header_blocks_too_large",
                self.h2_header_blocks_too_large,
            ),
            ("h2_frames_too_large", self.h2_frames_too_large),
            ("h2_protocol_errors", self.h2_protocol_errors),
            ("h2_streams_over_limit", self.h2_streams_over_limit),
            ("h2_streams_reset", self.h2_streams_reset),
            ("h2_streams_refused", self.h2_streams_refused),
        ]
    }
}

/// A request (from its head on) and its response as they come together.
#[derive(Debug, Default)]
struct Slot {
    method: MethodKind,
    http09: bool,
    request: Option<Request>,
    request_done: bool,
    response: Option<Response>,
    response_done: bool,
    interim: Vec<u16>,
    /// How many bytes of the server's stream the client had acknowledged when it sent the
    /// request: its response starts at or after that offset.
    acked: Option<u64>,
}

/// Whether the first bytes a side of a connection sent are HTTP/1.x (or HTTP/2's preface):
/// `Some(true)`, `Some(false)` for anything else, `None` while too few bytes tell. Only for
/// connections seen from their start: it says which protocol a port speaks. A client starts
/// with a request line (`METHOD target HTTP/x.y`); a server never speaks first, except with a
/// status line to a request that was not captured.
pub fn speaks_http(side: Side, first: &[u8]) -> Option<bool> {
    const LONGEST_METHOD: usize = 16;
    match side {
        Side::Client => {
            let token = |b: &u8| b.is_ascii_uppercase() || matches!(b, b'-' | b'_');
            match first.iter().position(|b| *b == b' ') {
                None if first.len() <= LONGEST_METHOD && first.iter().all(token) => None,
                None => Some(false),
                Some(end)
                    if end == 0 || end > LONGEST_METHOD || !first[..end].iter().all(token) =>
                {
                    Some(false)
                }
                Some(_) => match first.iter().position(|b| *b == b'\n') {
                    // The whole request line: it ends in the version (`SELECT 1 FROM t` does not).
                    Some(eol) => {
                        let line = &first[..eol];
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        let version = line.len().checked_sub(8).map(|at| &line[at..]);
                        Some(version.is_some_and(|v| {
                            v.starts_with(b"HTTP/")
                                && v[5].is_ascii_digit()
                                && v[6] == b'.'
                                && v[7].is_ascii_digit()
                        }))
                    }
                    // A long target that the first segment cut: the method has to do.
                    None => Some(true),
                },
            }
        }
        Side::Server => {
            let prefix = &b"HTTP/"[..first.len().min(5)];
            if first.starts_with(prefix) {
                (first.len() >= 5).then_some(true)
            } else {
                Some(false)
            }
        }
    }
}

/// Adds body bytes to a message: all counted in `body_len`, at most `body_cap` kept (the cut
/// counted once per message).
fn append_body(
    meta: &mut MessageMeta,
    bytes: &[u8],
    config: &HttpConfig,
    counters: &mut HttpCounters,
) {
    meta.body_len += bytes.len() as u64;
    let room = config.body_cap.saturating_sub(meta.body.len());
    if bytes.len() > room && !meta.truncated {
        meta.truncated = true;
        counters.bodies_truncated += 1;
    }
    meta.body.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// Whether a 101 answers a request to upgrade to h2c: both name it in `Upgrade`.
fn upgrades_to_h2c(slot: &Slot, response: &Response) -> bool {
    let names_h2c = |value: Option<&str>| {
        value.is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("h2c")))
    };
    names_h2c(slot.request.as_ref().and_then(|r| r.meta.header("upgrade")))
        && names_h2c(response.meta.header("upgrade"))
}

/// Which side of the connection a stream event belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

/// The HTTP state of one TCP connection.
#[derive(Debug)]
pub struct HttpConnection {
    client: SocketAddr,
    server: SocketAddr,
    /// Where NAT sent the connection, if it did.
    upstream: Option<SocketAddr>,
    /// Plaintext of a TLS connection (read from the TLS library).
    tls: bool,
    requests: MessageParser,
    responses: MessageParser,
    slots: VecDeque<Slot>,
    /// Stream offset of the next byte each side's parser gets (counted as reassembly counts).
    offsets: [u64; 2],
    /// Offset of the server's stream the client's latest segment acknowledged.
    client_acked: Option<u64>,
    /// Where the response head just parsed ended in the server's stream.
    response_head_end: u64,
    /// A gap broke a side's framing: requests or responses may have been lost whole, so
    /// pairing in order may be wrong. Exchanges are marked `gap` until the connection is
    /// between exchanges again with both sides in step.
    unaligned: bool,
    /// The connection's handshake was seen (see [`Self::set_seen_from_start`]).
    seen_from_start: bool,
    /// The capture lost bytes of this connection: a request or a response missing from an
    /// exchange was most likely lost with them.
    lost_bytes: bool,
    /// HTTP/1.x or HTTP/2, as the connection's first bytes say.
    protocol: Protocol,
}

/// Server bytes held while the client's first bytes may still be the HTTP/2 preface: an
/// HTTP/2 server may send its SETTINGS first (over TLS it may).
const MAX_HELD_SERVER_BYTES: usize = 16 * 1024;

/// Which protocol a connection speaks, from its first bytes.
#[derive(Debug)]
enum Protocol {
    /// No client byte seen yet. Holds (time, bytes) of the client's while they are a part of
    /// the HTTP/2 preface, and of the server's while they may be an HTTP/2 server's first
    /// frames; both bounded.
    Undecided {
        client: Option<(u64, Vec<u8>)>,
        server: Option<(u64, Vec<u8>)>,
    },
    /// A direction's start was not seen: the next bytes tell HTTP/2 frames (skipped, their
    /// HPACK state unknown) from HTTP/1.x.
    Joined,
    Http1,
    H2(Box<H2Connection>),
    /// HTTP/2 joined after its start: ignored.
    Skipped,
}

impl HttpConnection {
    pub fn new(client: SocketAddr, server: SocketAddr) -> Self {
        Self {
            client,
            server,
            upstream: None,
            tls: false,
            requests: MessageParser::new(Kind::Request),
            responses: MessageParser::new(Kind::Response),
            slots: VecDeque::new(),
            offsets: [0; 2],
            client_acked: None,
            response_head_end: 0,
            unaligned: false,
            seen_from_start: false,
            lost_bytes: false,
            protocol: Protocol::Undecided {
                client: None,
                server: None,
            },
        }
    }

    /// Records where NAT sent the connection (the translated destination).
    pub fn set_upstream(&mut self, upstream: SocketAddr) {
        self.upstream = Some(upstream);
        if let Protocol::H2(h2) = &mut self.protocol {
            h2.set_upstream(upstream);
        }
    }

    /// The connection's bytes are TLS plaintext: its exchanges say so. Set before its first
    /// bytes (the flow table does, as it creates the connection), when the protocol is decided.
    pub fn set_tls(&mut self) {
        self.tls = true;
    }

    /// The connection was seen from its handshake (a SYN of either side): a direction whose
    /// start is missing lost it to the capture, rather than began before the capture did.
    pub fn set_seen_from_start(&mut self) {
        self.seen_from_start = true;
    }

    /// The client's latest segment acknowledged the server's stream up to `offset` (as
    /// reassembly counts it). Requests remember it: after a gap lost responses, it tells which
    /// request the next response answers.
    pub fn set_client_acked(&mut self, offset: Option<u64>) {
        self.client_acked = offset;
    }

    /// Bytes of `side`'s message in progress the HTTP/1.x decoder will only count, not read (see
    /// [`MessageParser::body_left_to_count`]): the capture may leave them out.
    pub fn body_left_to_count(&self, side: Side, config: &HttpConfig) -> Option<u64> {
        if !matches!(self.protocol, Protocol::Http1) {
            return None;
        }
        match side {
            Side::Client => self.requests.body_left_to_count(config),
            Side::Server => self.responses.body_left_to_count(config),
        }
    }

    /// Both directions stopped decoding (tunnel or not HTTP): no more exchanges can come.
    pub fn is_passthrough(&self) -> bool {
        match &self.protocol {
            Protocol::H2(h2) => h2.is_stopped(),
            Protocol::Skipped => true,
            _ => self.requests.is_passthrough() && self.responses.is_passthrough(),
        }
    }

    pub fn on_event(
        &mut self,
        side: Side,
        event: StreamEvent,
        config: &HttpConfig,
        counters: &mut HttpCounters,
        out: &mut Vec<Exchange>,
    ) {
        let event = match &mut self.protocol {
            Protocol::Http1 => event,
            Protocol::H2(h2) => return h2.on_event(side, event, config, counters, out),
            Protocol::Skipped => return,
            Protocol::Undecided { .. } | Protocol::Joined => {
                match self.detect(side, event, config, counters, out) {
                    Some(event) => event,
                    None => return,
                }
            }
        };
        self.http1_event(side, event, config, counters, out);
    }

    /// Decides the protocol from the first bytes, holding them while they do not tell yet.
    /// Returns the event for the HTTP/1.x decoder, if it is one.
    fn detect(
        &mut self,
        side: Side,
        event: StreamEvent,
        config: &HttpConfig,
        counters: &mut HttpCounters,
        out: &mut Vec<Exchange>,
    ) -> Option<StreamEvent> {
        if let Protocol::Joined = self.protocol {
            if let StreamEvent::Data { bytes, .. } = &event {
                if h2::frame::looks_like_frames(bytes) {
                    counters.h2_midway_skipped += 1;
                    self.protocol = Protocol::Skipped;
                    self.requests.passthrough();
                    self.responses.passthrough();
                    return None;
                }
                self.protocol = Protocol::Http1;
            }
            return Some(event);
        }
        let Protocol::Undecided { client, server } = &mut self.protocol else {
            return Some(event);
        };
        match (side, event) {
            (Side::Client, StreamEvent::Data { ts_ns, bytes }) => {
                let (first_ns, held) = held_with(client, ts_ns, bytes);
                match h2::is_preface(&held) {
                    None => {
                        *client = Some((first_ns, held));
                        None
                    }
                    Some(true) => {
                        let server = server.take();
                        let mut h2 = Box::new(H2Connection::new(
                            self.client,
                            self.server,
                            self.upstream,
                            self.tls,
                            config,
                            counters,
                        ));
                        if let Some((ts_ns, bytes)) = server {
                            h2.data(Side::Server, &bytes, ts_ns, config, counters, out);
                        }
                        let after = &held[h2::PREFACE.len()..];
                        h2.data(Side::Client, after, ts_ns, config, counters, out);
                        self.protocol = Protocol::H2(h2);
                        None
                    }
                    Some(false) => {
                        // HTTP/1.x: server bytes held before these go first.
                        self.release(config, counters, out);
                        Some(StreamEvent::Data {
                            ts_ns: first_ns,
                            bytes: held,
                        })
                    }
                }
            }
            (Side::Server, StreamEvent::Data { ts_ns, bytes }) => {
                let (first_ns, held) = held_with(server, ts_ns, bytes);
                let maybe_settings = held.len() < h2::frame::HEADER_LEN
                    || (held[3] == h2::frame::kind::SETTINGS && held[5..9] == [0; 4]);
                *server = Some((first_ns, held));
                if !maybe_settings
                    || server
                        .as_ref()
                        .is_some_and(|(_, h)| h.len() > MAX_HELD_SERVER_BYTES)
                {
                    self.release(config, counters, out);
                }
                None
            }
            (_, event) => {
                self.release(config, counters, out);
                if matches!(event, StreamEvent::Gap { len: None, .. }) {
                    self.protocol = Protocol::Joined;
                }
                Some(event)
            }
        }
    }

    /// HTTP/1.x it is: the bytes held while deciding go to its decoder.
    fn release(
        &mut self,
        config: &HttpConfig,
        counters: &mut HttpCounters,
        out: &mut Vec<Exchange>,
    ) {
        let held = std::mem::replace(&mut self.protocol, Protocol::Http1);
        let Protocol::Undecided { client, server } = held else {
            self.protocol = held;
            return;
        };
        for (side, held) in [(Side::Server, server), (Side::Client, client)] {
            if let Some((ts_ns, bytes)) = held {
                self.http1_event(
                    side,
                    StreamEvent::Data { ts_ns, bytes },
                    config,
                    counters,
                    out,
                );
            }
        }
    }

    fn http1_event(
        &mut self,
        side: Side,
        event: StreamEvent,
        config: &HttpConfig,
        counters: &mut HttpCounters,
        out: &mut Vec<Exchange>,
    ) {
        match event {
            StreamEvent::Data { ts_ns, bytes } => {
                self.data(side, bytes, ts_ns, config, counters, out)
            }
            StreamEvent::Gap { ts_ns, len } => {
                let offset = &mut self.offsets[side as usize];
                // Reassembly counts from the first byte after an unknown start.
                *offset = len.map_or(0, |len| offset.saturating_add(len));
                self.lost_bytes |= len.is_some() || self.seen_from_start;
                let progress = self.parser(side).gap(len, ts_ns, config, counters);
                if len.is_none() && self.seen_from_start {
                    // A direction that starts unseen on a connection whose handshake was seen
                    // lost its SYN (and what followed) to the capture: a loss like any other.
                    self.parser(side).mark_lost_in_gap();
                }
                if let Some(progress) = progress {
                    self.handle(side, progress, ts_ns, config, counters, out);
                }
                if self.parser(side).lost_in_gap() {
                    self.unaligned = true;
                }
                self.realign();
            }
            StreamEvent::Skipped { ts_ns, len } => {
                match self.parser(side).skip(len, ts_ns, config, counters) {
                    Some(progress) => {
                        let offset = &mut self.offsets[side as usize];
                        *offset = offset.saturating_add(len);
                        if let Some(progress) = progress {
                            if side == Side::Server {
                                self.response_head_end = *offset;
                            }
                            self.handle(side, progress, ts_ns, config, counters, out);
                        }
                    }
                    // Not the body that asked (the stream moved on): lost to this decoder.
                    None => {
                        let gap = StreamEvent::Gap {
                            ts_ns,
                            len: Some(len),
                        };
                        self.http1_event(side, gap, config, counters, out);
                    }
                }
            }
            StreamEvent::End { ts_ns, .. } => {
                let after_loss = self.lost_bytes;
                if let Some(progress) = self.parser(side).finish(ts_ns, after_loss, counters) {
                    self.handle(side, progress, ts_ns, config, counters, out);
                }
                self.parser(side).passthrough();
            }
        }
    }

    fn parser(&mut self, side: Side) -> &mut MessageParser {
        match side {
            Side::Client => &mut self.requests,
            Side::Server => &mut self.responses,
        }
    }

    fn data(
        &mut self,
        side: Side,
        mut input: Vec<u8>,
        ts_ns: u64,
        config: &HttpConfig,
        counters: &mut HttpCounters,
        out: &mut Vec<Exchange>,
    ) {
        let mut pos = 0;
        // Stream offset of `input[0]`.
        let mut base = self.offsets[side as usize];
        let mut stalled = false;
        while pos < input.len() {
            if side == Side::Server && self.responses.is_idle() {
                // An HTTP/0.9 request is answered by raw bytes until the connection closes.
                if let Some(slot) = self.slots.iter().find(|s| !s.response_done)
                    && slot.http09
                {
                    self.responses.begin_raw_response(ts_ns);
                }
            }
            let (used, progress) = self
                .parser(side)
                .feed(&input[pos..], ts_ns, config, counters);
            pos += used;
            if let Some(mut replay) = self.parser(side).take_replay() {
                // Bytes consumed before, fed again: they come from just before `pos`.
                base = (base + pos as u64).saturating_sub(replay.len() as u64);
                replay.extend_from_slice(&input[pos..]);
                input = replay;
                pos = 0;
            }
            if progress == Progress::NeedMore {
                // A parser that neither used input nor moved on would loop forever.
                if used == 0 {
                    if stalled {
                        break;
                    }
                    stalled = true;
                }
                continue;
            }
            stalled = false;
            if side == Side::Server {
                self.response_head_end = base + pos as u64;
            }
            self.handle(side, progress, ts_ns, config, counters, out);
            if let Protocol::H2(h2) = &mut self.protocol {
                // Upgraded (h2c): the rest is HTTP/2.
                h2.data(side, &input[pos..], ts_ns, config, counters, out);
                return;
            }
        }
        self.offsets[side as usize] = base + input.len() as u64;
        self.realign();
    }

    /// Ends the unaligned state once nothing is pending and both sides wait for a message in
    /// step: from there on, requests and responses pair in order again.
    fn realign(&mut self) {
        if self.unaligned
            && self.slots.is_empty()
            && self.requests.is_idle()
            && self.responses.is_idle()
            && !self.requests.lost_in_gap()
            && !self.responses.lost_in_gap()
        {
            self.unaligned = false;
        }
    }

    fn handle(
        &mut self,
        side: Side,
        progress: Progress,
        ts_ns: u64,
        config: &HttpConfig,
        counters: &mut HttpCounters,
        out: &mut Vec<Exchange>,
    ) {
        match progress {
            Progress::NeedMore => {}
            Progress::Head(head) => {
                let framing = match side {
                    Side::Client => self.request_head(&head, config, counters, out),
                    Side::Server => self.response_head(&head, counters),
                };
                if let Some(done) = self.parser(side).set_framing(framing, ts_ns) {
                    self.handle(side, done, ts_ns, config, counters, out);
                }
            }
            Progress::Request(request) => {
                if let Some(slot) = self.slots.iter_mut().rev().find(|s| !s.request_done) {
                    slot.request = Some(request);
                    slot.request_done = true;
                }
                // A request a Content-Length reader finds in that body (TE.CL smuggling):
                // recorded after it, flagged, so that no reading hides it.
                if let Some(hidden) = self.requests.take_hidden() {
                    counters.requests += 1;
                    self.open_slot(
                        Slot {
                            method: MethodKind::of(&hidden.method),
                            request: Some(hidden),
                            request_done: true,
                            // Sent with the request it hides in.
                            acked: self.client_acked,
                            ..Slot::default()
                        },
                        config,
                        counters,
                        out,
                    );
                }
                self.emit_ready(counters, out);
            }
            Progress::Response(mut response) => {
                let status = response.status;
                let Some(index) = self.slots.iter().position(|s| !s.response_done) else {
                    return;
                };
                if status.is_some_and(|s| (100..200).contains(&s) && s != 101) {
                    // Interim: the final response to the same request follows.
                    counters.interim_responses += 1;
                    self.slots[index].interim.push(status.unwrap_or_default());
                    return;
                }
                if status == Some(101) && upgrades_to_h2c(&self.slots[index], &response) {
                    return self.upgrade_to_h2(index, config, counters, out);
                }
                let slot = &mut self.slots[index];
                response.interim = std::mem::take(&mut slot.interim);
                let connect_ok = slot.method == MethodKind::Connect
                    && status.is_some_and(|s| (200..300).contains(&s));
                slot.response = Some(response);
                slot.response_done = true;
                if status == Some(101) || connect_ok {
                    // Whatever follows is another protocol: stop decoding, count its bytes.
                    counters.tunnels += 1;
                    self.requests.passthrough();
                    self.responses.passthrough();
                }
                self.emit_ready(counters, out);
            }
        }
    }

    /// A 101 that switched the connection to HTTP/2 (RFC 7540 3.2; RFC 9113 dropped it, some
    /// clients and servers still do it): the upgrading request is stream 1, the 101 an interim
    /// response on it. Requests before it are emitted; the HTTP/1.x decoders stop.
    fn upgrade_to_h2(
        &mut self,
        index: usize,
        config: &HttpConfig,
        counters: &mut HttpCounters,
        out: &mut Vec<Exchange>,
    ) {
        let Some(slot) = self.slots.remove(index) else {
            return;
        };
        for earlier in std::mem::take(&mut self.slots) {
            self.emit(earlier, counters, out);
        }
        self.requests.passthrough();
        self.responses.passthrough();
        counters.interim_responses += 1;
        let h2 = H2Connection::upgraded(
            self.client,
            self.server,
            self.upstream,
            self.tls,
            slot.request.unwrap_or_default(),
            config,
            counters,
        );
        self.protocol = Protocol::H2(Box::new(h2));
    }

    /// Opens a slot for a new request and returns its body framing.
    fn request_head(
        &mut self,
        head: &Head,
        config: &HttpConfig,
        counters: &mut HttpCounters,
        out: &mut Vec<Exchange>,
    ) -> Framing {
        self.open_slot(
            Slot {
                method: head.method,
                http09: head.version == "0.9",
                acked: self.client_acked,
                ..Slot::default()
            },
            config,
            counters,
            out,
        );
        // Requests without a length have no body (they are never delimited by close).
        head.body_framing(Framing::None, counters)
    }

    /// Queues a request's slot, within the bound of waiting requests.
    fn open_slot(
        &mut self,
        slot: Slot,
        config: &HttpConfig,
        counters: &mut HttpCounters,
        out: &mut Vec<Exchange>,
    ) {
        if self.slots.len() >= config.max_pending
            && let Some(oldest) = self.slots.pop_front()
        {
            counters.pending_overflow += 1;
            self.emit(oldest, counters, out);
        }
        self.slots.push_back(slot);
    }

    /// Pairs a response head with the oldest unanswered request and returns its framing
    /// (RFC 9112 6.3).
    fn response_head(&mut self, head: &Head, counters: &mut HttpCounters) -> Framing {
        if self.responses.message_after_gap() {
            self.skip_unanswerable(counters);
        }
        if !self.slots.iter().any(|s| !s.response_done) {
            counters.responses_without_request += 1;
            self.slots.push_back(Slot {
                request_done: true,
                ..Slot::default()
            });
        }
        let method = self
            .slots
            .iter()
            .find(|s| !s.response_done)
            .map_or(MethodKind::Other, |s| s.method);
        let status = head.status.unwrap_or(0);
        if method == MethodKind::Head
            || (100..200).contains(&status)
            || status == 204
            || status == 304
            || (method == MethodKind::Connect && (200..300).contains(&status))
        {
            return Framing::None;
        }
        head.body_framing(Framing::UntilClose, counters)
    }

    /// A response found after a gap that broke the responses' framing: the responses before it
    /// may be lost whole. The client's acknowledgements say which: a request sent after the
    /// client had received bytes up to `acked` is answered at or after that offset, so this
    /// response (whose head ends at `response_head_end`) answers the newest group of requests
    /// sent with the same acknowledgement below that, oldest first. Unanswered requests before
    /// that group lost their responses: they are closed as such, marked `gap`. Without
    /// acknowledgements (capture files without them, forged ones) the order stays.
    fn skip_unanswerable(&mut self, counters: &mut HttpCounters) {
        let end = self.response_head_end;
        let newest = self
            .slots
            .iter()
            .filter(|s| !s.response_done)
            .filter_map(|s| s.acked)
            .filter(|acked| *acked < end)
            .max();
        let Some(newest) = newest else {
            return;
        };
        for slot in self.slots.iter_mut().filter(|s| !s.response_done) {
            if slot.acked.is_some_and(|acked| acked == newest) {
                break;
            }
            slot.response_done = true;
            counters.responses_lost_in_gaps += 1;
            if let Some(request) = slot.request.as_mut() {
                request.meta.gap = true;
            }
        }
    }

    /// Emits exchanges from the front while they are complete, keeping pipelined order.
    fn emit_ready(&mut self, counters: &mut HttpCounters, out: &mut Vec<Exchange>) {
        while self
            .slots
            .front()
            .is_some_and(|s| s.request_done && s.response_done)
        {
            if let Some(slot) = self.slots.pop_front() {
                self.emit(slot, counters, out);
            }
        }
    }

    fn emit(&self, mut slot: Slot, counters: &mut HttpCounters, out: &mut Vec<Exchange>) {
        let half = slot.request.is_none() || slot.response.is_none();
        if self.unaligned || (half && self.lost_bytes) {
            // Paired while requests or responses may be missing: the pairing is uncertain. Or
            // half an exchange on a connection that lost bytes: the other half went with them.
            for meta in [
                slot.request.as_mut().map(|r| &mut r.meta),
                slot.response.as_mut().map(|r| &mut r.meta),
            ]
            .into_iter()
            .flatten()
            {
                meta.gap = true;
            }
        }
        if slot.request.is_some() && slot.response.is_none() {
            counters.requests_without_response += 1;
        }
        if slot.request.is_none() && slot.response.is_none() {
            return;
        }
        counters.exchanges += 1;
        out.push(Exchange {
            client: self.client,
            server: self.server,
            request: slot.request,
            response: slot.response,
            forwarding: Default::default(),
            upstream: self.upstream,
            tls: self.tls,
            stream_id: None,
        });
    }

    /// The connection is gone: everything still open is emitted as it is.
    pub fn finish(
        &mut self,
        ts_ns: u64,
        config: &HttpConfig,
        counters: &mut HttpCounters,
        out: &mut Vec<Exchange>,
    ) {
        match &mut self.protocol {
            Protocol::H2(h2) => return h2.finish(ts_ns, counters, out),
            Protocol::Skipped => return,
            Protocol::Undecided { .. } => self.release(config, counters, out),
            Protocol::Joined | Protocol::Http1 => {}
        }
        for side in [Side::Client, Side::Server] {
            let after_loss = self.lost_bytes;
            if let Some(progress) = self.parser(side).finish(ts_ns, after_loss, counters) {
                self.handle(side, progress, ts_ns, config, counters, out);
            }
            self.parser(side).passthrough();
        }
        while let Some(slot) = self.slots.pop_front() {
            self.emit(slot, counters, out);
        }
    }
}

/// A direction's first bytes, held while the protocol is undecided, with `bytes` added (when
/// nothing was held, `bytes` as they are, not copied: nearly always the first segment tells);
/// with the time of the first of them.
fn held_with(held: &mut Option<(u64, Vec<u8>)>, ts_ns: u64, bytes: Vec<u8>) -> (u64, Vec<u8>) {
    match held.take() {
        Some((first_ns, mut held)) => {
            held.extend_from_slice(&bytes);
            (first_ns, held)
        }
        None => (ts_ns, bytes),
    }
}
#[cfg(test)]
mod tests;
