//! Stage 3, HTTP/2: turns the two byte streams of a connection that began with the HTTP/2
//! preface into exchanges, one per stream.
//!
//! [`frame::FrameReader`] splits each direction into frames, [`hpack::Decoder`] keeps each
//! direction's header compression context, and [`H2Connection`] follows the streams: a
//! request's HEADERS (+ CONTINUATION), its DATA, then the response's HEADERS (interim 1xx ones
//! first), DATA and trailers. A stream is emitted as an [`Exchange`] when the response ends, or
//! when RST_STREAM, GOAWAY or the connection's end cut it short. The decoder reads plaintext
//! bytes: h2c as captured, or h2 once TLS is decrypted, alike.
//!
//! A gRPC call (`content-type: application/grpc…`) is such an exchange; its length-prefixed
//! messages are counted each way, and its `grpc-status` trailer is kept with the response's
//! headers.
//!
//! HPACK state is per connection and cannot be rebuilt from the middle: whatever breaks it (a
//! gap outside a DATA frame, a header block over the bounds, a decoding error) stops decoding
//! the connection, counted, rather than risk misreading every later header.

pub mod frame;
pub mod hpack;

use std::{collections::BTreeMap, net::SocketAddr};

use frame::{Event, FrameHeader, FrameReader, Lost, flag, kind};
use hpack::Decoder;

use super::{HttpConfig, HttpCounters, Side, append_body};
use crate::{
    exchange::{Exchange, HeaderBlock, MessageMeta, Request, Response},
    reassembly::StreamEvent,
};

/// What an HTTP/2 client sends first (RFC 9113 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The `version` of HTTP/2 messages.
pub const VERSION: &str = "HTTP/2";

/// Whether a client's first bytes are the preface: `Some(true)`, `Some(false)`, or `None`
/// while they are a part of it too short to tell.
pub fn is_preface(first: &[u8]) -> Option<bool> {
    let n = first.len().min(PREFACE.len());
    if first[..n] != PREFACE[..n] {
        Some(false)
    } else if n == PREFACE.len() {
        Some(true)
    } else {
        None
    }
}

/// The HTTP/2 state of one TCP connection.
#[derive(Debug)]
pub struct H2Connection {
    /// Client's and server's frame readers.
    readers: [FrameReader; 2],
    /// Bytes of the client's preface still to come before its frames (after an upgrade).
    preface_left: usize,
    streams: Streams,
}

#[derive(Debug)]
struct Streams {
    client: SocketAddr,
    server: SocketAddr,
    upstream: Option<SocketAddr>,
    /// The connection's bytes are TLS plaintext (read in the server's TLS library).
    tls: bool,
    /// Each direction's HPACK context: the client's requests, the server's responses.
    decoders: [Decoder; 2],
    /// A header block in progress per direction (HEADERS or PUSH_PROMISE, then CONTINUATION).
    blocks: [Option<Block>; 2],
    open: BTreeMap<u32, Stream>,
    /// The newest stream each side opened: frames for older streams not in `open` belong to
    /// streams already ended (or not followed) and open nothing.
    newest: [u32; 2],
    /// Decoding stopped: the HPACK state or the framing is lost.
    stopped: bool,
}

/// A header block being gathered.
#[derive(Debug)]
struct Block {
    stream_id: u32,
    /// The stream a PUSH_PROMISE reserves.
    promised: Option<u32>,
    end_stream: bool,
    bytes: Vec<u8>,
    ts_ns: u64,
}

#[derive(Debug, Default)]
struct Stream {
    request: Option<Request>,
    request_done: bool,
    response: Option<Response>,
    response_done: bool,
    interim: Vec<u16>,
    /// A gRPC call's message framing, request's and response's.
    grpc: Option<[GrpcMessages; 2]>,
}

impl Stream {
    /// The message in progress that `side` sends.
    fn message(&mut self, side: Side) -> Option<&mut MessageMeta> {
        match side {
            Side::Client => self
                .request
                .as_mut()
                .filter(|_| !self.request_done)
                .map(|r| &mut r.meta),
            Side::Server => self
                .response
                .as_mut()
                .filter(|_| !self.response_done)
                .map(|r| &mut r.meta),
        }
    }
}

/// Counts gRPC's length-prefixed messages (a flag byte and a 4-byte length, then the message)
/// in a body however DATA frames cut it.
#[derive(Debug, Default)]
struct GrpcMessages {
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    remaining: u64,
    messages: u32,
    /// A gap took bytes: the framing, and so the count, is lost.
    lost: bool,
}

impl GrpcMessages {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.lost {
            if self.remaining > 0 {
                let take = self.remaining.min(bytes.len() as u64);
                self.remaining -= take;
                bytes = &bytes[take as usize..];
                continue;
            }
            let take = (self.prefix.len() - self.prefix_len).min(bytes.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&bytes[..take]);
            self.prefix_len += take;
            bytes = &bytes[take..];
            if self.prefix_len == self.prefix.len() {
                self.prefix_len = 0;
                self.messages = self.messages.saturating_add(1);
                let [_, a, b, c, d] = self.prefix;
                self.remaining = u64::from(u32::from_be_bytes([a, b, c, d]));
            }
        }
    }

    fn count(&self) -> Option<u32> {
        (!self.lost).then_some(self.messages)
    }
}

/// Whether a request's content type makes it a gRPC call (`application/grpc`, `+proto` etc.).
fn is_grpc(request: &Request) -> bool {
    request.meta.header("content-type").is_some_and(|t| {
        t.get(..16)
            .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
    })
}

impl H2Connection {
    /// `tls`: the bytes are TLS plaintext (read in the server's TLS library).
    pub fn new(
        client: SocketAddr,
        server: SocketAddr,
        upstream: Option<SocketAddr>,
        tls: bool,
        config: &HttpConfig,
        counters: &mut HttpCounters,
    ) -> Self {
        counters.h2_connections += 1;
        Self {
            readers: [FrameReader::default(), FrameReader::default()],
            preface_left: 0,
            streams: Streams {
                client,
                server,
                upstream,
                tls,
                decoders: [
                    Decoder::new(config.h2_max_table_bytes),
                    Decoder::new(config.h2_max_table_bytes),
                ],
                blocks: [None, None],
                open: BTreeMap::new(),
                newest: [0; 2],
                stopped: false,
            },
        }
    }

    /// A connection an HTTP/1.1 request upgraded (`Upgrade: h2c`, answered 101): that request
    /// is stream 1, its response comes as HTTP/2, and the client's preface is still to come.
    pub fn upgraded(
        client: SocketAddr,
        server: SocketAddr,
        upstream: Option<SocketAddr>,
        tls: bool,
        request: Request,
        config: &HttpConfig,
        counters: &mut HttpCounters,
    ) -> Self {
        let mut connection = Self::new(client, server, upstream, tls, config, counters);
        connection.preface_left = PREFACE.len();
        connection.streams.newest[Side::Client as usize] = 1;
        connection.streams.open.insert(
            1,
            Stream {
                request: Some(request),
                request_done: true,
                interim: vec![101],
                ..Stream::default()
            },
        );
        connection
    }

    pub fn set_upstream(&mut self, upstream: SocketAddr) {
        self.streams.upstream = Some(upstream);
    }

    /// Decoding stopped for good: nothing more can come out of this connection.
    pub fn is_stopped(&self) -> bool {
        self.streams.stopped
    }

    /// One event of one direction; for the client's stream, after the preface.
    pub fn on_event(
        &mut self,
        side: Side,
        event: StreamEvent,
        config: &HttpConfig,
        counters: &mut HttpCounters,
        out: &mut Vec<Exchange>,
    ) {
        match event {
            StreamEvent::Data { ts_ns, bytes } => {
                self.data(side, &bytes, ts_ns, config, counters, out)
            }
            StreamEvent::Gap { ts_ns, len } => {
                if self.streams.stopped {
                    return;
                }
                match self.readers[side as usize].gap(len) {
                    Some(lost) => self.streams.lost(side, lost, ts_ns, counters, out),
                    None => self.streams.stop(ts_ns, counters, out),
                }
            }
            // Only the HTTP/1.x decoder asks for skips (`body_left_to_count`): here they are
            // bytes this decoder never saw.
            StreamEvent::Skipped { ts_ns, len } => {
                let gap = StreamEvent::Gap {
                    ts_ns,
                    len: Some(len),
                };
                self.on_event(side, gap, config, counters, out);
            }
            // Streams still open end with the connection (`finish`).
            StreamEvent::End { .. } => {}
        }
    }

    pub fn data(
        &mut self,
        side: Side,
        bytes: &[u8],
        ts_ns: u64,
        config: &HttpConfig,
        counters: &mut HttpCounters,
        out: &mut Vec<Exchange>,
    ) {
        if self.streams.stopped {
            return;
        }
        let mut bytes = bytes;
        if side == Side::Client && self.preface_left > 0 {
            let at = PREFACE.len() - self.preface_left;
            let take = self.preface_left.min(bytes.len());
            if bytes[..take] != PREFACE[at..at + take] {
                counters.h2_protocol_errors += 1;
                return self.streams.stop(ts_ns, counters, out);
            }
            self.preface_left -= take;
            bytes = &bytes[take..];
        }
        let streams = &mut self.streams;
        self.readers[side as usize].feed(bytes, config.h2_max_frame_bytes, |event| {
            streams.on_frame(side, event, ts_ns, config, counters, out)
        });
    }

    /// The connection is gone: streams still open are emitted as they are, in stream order.
    pub fn finish(&mut self, ts_ns: u64, counters: &mut HttpCounters, out: &mut Vec<Exchange>) {
        self.streams.emit_all(ts_ns, counters, out);
    }
}

impl Streams {
    fn on_frame(
        &mut self,
        side: Side,
        event: Event,
        ts_ns: u64,
        config: &HttpConfig,
        counters: &mut HttpCounters,
        out: &mut Vec<Exchange>,
    ) {
        if self.stopped {
            return;
        }
        // A header block in progress admits only its CONTINUATION frames (RFC 9113 6.10).
        if let Some(block) = &self.blocks[side as usize] {
            let continues = matches!(
                event,
                Event::Frame(h, _) | Event::TooLarge(h)
                    if h.kind == kind::CONTINUATION && h.stream_id == block.stream_id
            );
            if !continues {
                counters.h2_protocol_errors += 1;
                return self.stop(ts_ns, counters, out);
            }
        }
        match event {
            Event::Frame(h, payload) => self.frame(side, h, payload, ts_ns, config, counters, out),
            Event::TooLarge(h) => {
                counters.h2_frames_too_large += 1;
                if matches!(
                    h.kind,
                    kind::HEADERS | kind::PUSH_PROMISE | kind::CONTINUATION
                ) {
                    // A header block unread: the HPACK context is lost with it.
                    self.stop(ts_ns, counters, out);
                }
            }
            Event::Data(h, bytes) => {
                let Some(stream) = self.open.get_mut(&h.stream_id) else {
                    return;
                };
                if let Some(meta) = stream.message(side) {
                    append_body(meta, bytes, config, counters);
                    if let Some(grpc) = &mut stream.grpc {
                        grpc[side as usize].feed(bytes);
                    }
                }
            }
            Event::DataEnd(h) => {
                if h.has(flag::END_STREAM) {
                    self.end_message(side, h.stream_id, ts_ns, counters, out);
                }
            }
            Event::BadPadding(h) => {
                counters.bad_framing += 1;
                if let Some(meta) = self.message(side, h.stream_id) {
                    meta.truncated = true;
                }
                if h.has(flag::END_STREAM) {
                    self.end_message(side, h.stream_id, ts_ns, counters, out);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn frame(
        &mut self,
        side: Side,
        h: FrameHeader,
        payload: &[u8],
        ts_ns: u64,
        config: &HttpConfig,
        counters: &mut HttpCounters,
        out: &mut Vec<Exchange>,
    ) {
        match h.kind {
            kind::HEADERS | kind::PUSH_PROMISE => {
                let Some((fragment, promised)) = block_fragment(h, payload) else {
                    counters.h2_protocol_errors += 1;
                    return self.stop(ts_ns, counters, out);
                };
                self.blocks[side as usize] = Some(Block {
                    stream_id: h.stream_id,
                    promised,
                    end_stream: h.kind == kind::HEADERS && h.has(flag::END_STREAM),
                    bytes: fragment.to_vec(),
                    ts_ns,
                });
            }
            kind::CONTINUATION => {
                let Some(block) = &mut self.blocks[side as usize] else {
                    counters.h2_protocol_errors += 1;
                    return self.stop(ts_ns, counters, out);
                };
                block.bytes.extend_from_slice(payload);
            }
            kind::RST_STREAM => {
                if let Some(stream) = self.open.remove(&h.stream_id) {
                    counters.h2_streams_reset += 1;
                    self.emit(h.stream_id, stream, ts_ns, counters, out);
                }
                return;
            }
            kind::GOAWAY => {
                if let Some(last) = payload.get(..4) {
                    let last = u32::from_be_bytes([last[0], last[1], last[2], last[3]]);
                    self.goaway(side, last & 0x7fff_ffff, ts_ns, counters, out);
                }
                return;
            }
            // SETTINGS, PING, PRIORITY, WINDOW_UPDATE and unknown types change nothing a
            // passive reader follows: header table sizes are announced inside header blocks.
            _ => return,
        }
        let too_large = self.blocks[side as usize]
            .as_ref()
            .is_some_and(|b| b.bytes.len() > config.h2_max_header_block_bytes);
        if too_large {
            counters.h2_header_blocks_too_large += 1;
            return self.stop(ts_ns, counters, out);
        }
        if h.has(flag::END_HEADERS)
            && let Some(block) = self.blocks[side as usize].take()
        {
            self.header_block(side, block, ts_ns, config, counters, out);
        }
    }

    /// A complete header block: decoded whatever happens to its stream, since every block
    /// updates the direction's HPACK context.
    fn header_block(
        &mut self,
        side: Side,
        block: Block,
        ts_ns: u64,
        config: &HttpConfig,
        counters: &mut HttpCounters,
        out: &mut Vec<Exchange>,
    ) {
        let mut fields = Fields::default();
        let decoded = self.decoders[side as usize]
            .decode(&block.bytes, |name, value| fields.push(name, value, config));
        if decoded.is_err() {
            counters.h2_hpack_errors += 1;
            return self.stop(ts_ns, counters, out);
        }
        if fields.truncated {
            counters.headers_truncated += 1;
        }
        let id = block.stream_id;
        match (side, block.promised) {
            (Side::Server, Some(promised)) => {
                // A pushed response's request, as the server promises it.
                if self.admit(Side::Server, promised, config, counters) {
                    let request = fields.request(block.ts_ns, ts_ns);
                    counters.requests += 1;
                    self.open.insert(
                        promised,
                        Stream {
                            request: Some(request),
                            request_done: true,
                            ..Stream::default()
                        },
                    );
                }
                return;
            }
            (Side::Client, Some(_)) => {
                // Only servers push.
                counters.h2_protocol_errors += 1;
                return;
            }
            (Side::Client, None) => {
                if let Some(stream) = self.open.get_mut(&id) {
                    // Trailers.
                    if let Some(request) = &mut stream.request {
                        fields.append_to(&mut request.meta, config);
                    }
                } else if id % 2 == 1 && self.admit(Side::Client, id, config, counters) {
                    counters.requests += 1;
                    let request = fields.request(block.ts_ns, 0);
                    let grpc = is_grpc(&request).then(Default::default);
                    self.open.insert(
                        id,
                        Stream {
                            request: Some(request),
                            grpc,
                            ..Stream::default()
                        },
                    );
                }
            }
            (Side::Server, None) => {
                let Some(stream) = self.open.get_mut(&id) else {
                    return;
                };
                match &mut stream.response {
                    Some(response) => fields.append_to(&mut response.meta, config),
                    None => {
                        let status = fields.status.as_deref().and_then(|s| s.parse::<u16>().ok());
                        if status.is_some_and(|s| (100..200).contains(&s)) && !block.end_stream {
                            counters.interim_responses += 1;
                            stream.interim.push(status.unwrap_or_default());
                            return;
                        }
                        counters.responses += 1;
                        stream.response = Some(fields.response(status, block.ts_ns));
                    }
                }
            }
        }
        if block.end_stream {
            self.end_message(side, id, ts_ns, counters, out);
        }
    }

    /// Whether a new stream `id` opened by `side` is followed: newer than that side's last
    /// one, and within the bound of open streams (counted when not).
    fn admit(
        &mut self,
        side: Side,
        id: u32,
        config: &HttpConfig,
        counters: &mut HttpCounters,
    ) -> bool {
        let newest = &mut self.newest[side as usize];
        if id <= *newest {
            return false;
        }
        *newest = id;
        if self.open.len() >= config.h2_max_streams {
            counters.h2_streams_over_limit += 1;
            return false;
        }
        true
    }

    /// The message in progress that `side` sends on stream `id`.
    fn message(&mut self, side: Side, id: u32) -> Option<&mut MessageMeta> {
        self.open.get_mut(&id)?.message(side)
    }

    /// `side` ended its half of stream `id`; a stream whose response ended is emitted.
    fn end_message(
        &mut self,
        side: Side,
        id: u32,
        ts_ns: u64,
        counters: &mut HttpCounters,
        out: &mut Vec<Exchange>,
    ) {
        if let Some(meta) = self.message(side, id) {
            meta.end_ns = ts_ns;
        }
        let Some(stream) = self.open.get_mut(&id) else {
            return;
        };
        match side {
            Side::Client => stream.request_done = true,
            Side::Server => stream.response_done = true,
        }
        if stream.response_done
            && let Some(stream) = self.open.remove(&id)
        {
            self.emit(id, stream, ts_ns, counters, out);
        }
    }

    /// A gap inside a DATA frame: the frame layer kept in step, the body lost bytes.
    fn lost(
        &mut self,
        side: Side,
        lost: Lost,
        ts_ns: u64,
        counters: &mut HttpCounters,
        out: &mut Vec<Exchange>,
    ) {
        let id = lost.frame.stream_id;
        if lost.frame.kind != kind::DATA {
            return;
        }
        let Some(stream) = self.open.get_mut(&id) else {
            return;
        };
        if let Some(meta) = stream.message(side) {
            meta.body_len += lost.data;
            if !meta.gap {
                counters.messages_with_gaps += 1;
            }
            meta.gap = true;
            if let Some(grpc) = &mut stream.grpc {
                grpc[side as usize].lost |= lost.data > 0;
            }
        }
        if lost.frame_ended && lost.frame.has(flag::END_STREAM) {
            self.end_message(side, id, ts_ns, counters, out);
        }
    }

    /// GOAWAY: the sender processes no stream the other side opened after `last`.
    fn goaway(
        &mut self,
        side: Side,
        last: u32,
        ts_ns: u64,
        counters: &mut HttpCounters,
        out: &mut Vec<Exchange>,
    ) {
        // Streams the receiver opened: odd ones for a server's GOAWAY, even for a client's.
        let opened_by_receiver = |id: u32| (id % 2 == 1) == (side == Side::Server);
        let refused: Vec<u32> = self
            .open
            .range(last.saturating_add(1)..)
            .map(|(id, _)| *id)
            .filter(|id| opened_by_receiver(*id))
            .collect();
        for id in refused {
            if let Some(stream) = self.open.remove(&id) {
                counters.h2_streams_refused += 1;
                self.emit(id, stream, ts_ns, counters, out);
            }
        }
    }

    /// Decoding cannot go on: what is open is emitted as it is, and the rest of the
    /// connection is ignored.
    fn stop(&mut self, ts_ns: u64, counters: &mut HttpCounters, out: &mut Vec<Exchange>) {
        counters.h2_decoding_stopped += 1;
        self.stopped = true;
        self.blocks = [None, None];
        self.emit_all(ts_ns, counters, out);
    }

    fn emit_all(&mut self, ts_ns: u64, counters: &mut HttpCounters, out: &mut Vec<Exchange>) {
        for (id, stream) in std::mem::take(&mut self.open) {
            self.emit(id, stream, ts_ns, counters, out);
        }
    }

    fn emit(
        &self,
        id: u32,
        stream: Stream,
        ts_ns: u64,
        counters: &mut HttpCounters,
        out: &mut Vec<Exchange>,
    ) {
        let Stream {
            mut request,
            request_done,
            mut response,
            response_done,
            interim,
            grpc,
        } = stream;
        if let Some([sent, received]) = grpc {
            if let Some(request) = &mut request {
                request.meta.grpc_messages = sent.count();
            }
            if let Some(response) = &mut response {
                response.meta.grpc_messages = received.count();
            }
        }
        let unfinished = [
            request
                .as_mut()
                .map(|r| &mut r.meta)
                .filter(|_| !request_done),
            response
                .as_mut()
                .map(|r| &mut r.meta)
                .filter(|_| !response_done),
        ];
        for meta in unfinished.into_iter().flatten() {
            counters.truncated_messages += 1;
            meta.truncated = true;
            meta.end_ns = ts_ns;
        }
        if let Some(response) = &mut response {
            response.interim = interim;
        }
        if request.is_some() && response.is_none() {
            counters.requests_without_response += 1;
        }
        if request.is_none() && response.is_none() {
            return;
        }
        counters.exchanges += 1;
        out.push(Exchange {
            client: self.client,
            server: self.server,
            request,
            response,
            forwarding: Default::default(),
            upstream: self.upstream,
            tls: self.tls,
            stream_id: Some(id),
        });
    }
}

/// The header block fragment of a HEADERS or PUSH_PROMISE frame, without padding and
/// priority, and the stream a PUSH_PROMISE reserves; `None` if the frame is too short for
/// what its flags say.
fn block_fragment(h: FrameHeader, payload: &[u8]) -> Option<(&[u8], Option<u32>)> {
    let mut rest = payload;
    let mut padding = 0;
    if h.has(flag::PADDED) {
        let (&pad, after) = rest.split_first()?;
        padding = usize::from(pad);
        rest = after;
    }
    let mut promised = None;
    if h.kind == kind::PUSH_PROMISE {
        let id = rest.get(..4)?;
        promised = Some(u32::from_be_bytes([id[0], id[1], id[2], id[3]]) & 0x7fff_ffff);
        rest = &rest[4..];
    } else if h.has(flag::PRIORITY) {
        rest = rest.get(5..)?;
    }
    let fragment = rest.get(..rest.len().checked_sub(padding)?)?;
    Some((fragment, promised))
}

/// The fields of one header block, kept within the configured bounds: pseudo-header fields
/// apart (the first of each), regular ones in order.
#[derive(Debug, Default)]
struct Fields {
    method: Option<String>,
    path: Option<String>,
    authority: Option<String>,
    status: Option<String>,
    headers: HeaderBlock,
    /// Text kept in `headers`, bounded by `max_head_bytes`.
    kept_bytes: usize,
    truncated: bool,
}

impl Fields {
    fn push(&mut self, name: &[u8], value: &[u8], config: &HttpConfig) {
        let pseudo = match name {
            b":method" => Some(&mut self.method),
            b":path" => Some(&mut self.path),
            b":authority" => Some(&mut self.authority),
            b":status" => Some(&mut self.status),
            _ => None,
        };
        if let Some(slot) = pseudo {
            if slot.is_none() && value.len() <= config.max_head_bytes {
                *slot = Some(String::from_utf8_lossy(value).into_owned());
            }
            return;
        }
        if name.starts_with(b":") {
            // :scheme, :protocol: not part of the record.
            return;
        }
        let size = name.len() + value.len();
        if self.headers.len() >= config.max_headers
            || self.kept_bytes + size > config.max_head_bytes
        {
            self.truncated = true;
            return;
        }
        self.kept_bytes += size;
        self.headers.push(
            &String::from_utf8_lossy(name),
            &String::from_utf8_lossy(value),
        );
    }

    fn meta(&mut self, start_ns: u64, end_ns: u64) -> MessageMeta {
        MessageMeta {
            start_ns,
            end_ns,
            version: VERSION,
            header_block: std::mem::take(&mut self.headers),
            headers_truncated: self.truncated,
            ..MessageMeta::default()
        }
    }

    fn request(mut self, start_ns: u64, end_ns: u64) -> Request {
        // `:authority` stands for Host (RFC 9113 8.3.1): where later stages look for it.
        if self.headers.get("host").is_none()
            && let Some(authority) = &self.authority
        {
            self.headers.push("host", authority);
        }
        let method = self.method.take().unwrap_or_default();
        // CONNECT names its target in `:authority` and has no `:path`.
        let uri = self
            .path
            .take()
            .or_else(|| self.authority.take())
            .unwrap_or_default();
        Request {
            method,
            uri,
            meta: self.meta(start_ns, end_ns),
        }
    }

    fn response(mut self, status: Option<u16>, start_ns: u64) -> Response {
        Response {
            status,
            // HTTP/2 has no reason phrase.
            reason: String::new(),
            interim: Vec::new(),
            meta: self.meta(start_ns, 0),
        }
    }

    /// Trailers: added after the message's headers, within what is left of the bounds.
    fn append_to(self, meta: &mut MessageMeta, config: &HttpConfig) {
        let room = config.max_headers.saturating_sub(meta.header_block.len());
        for (name, value) in self.headers.iter().take(room) {
            meta.header_block.push(name, value);
        }
        meta.headers_truncated |= self.truncated || self.headers.len() > room;
    }
}

#[cfg(test)]
mod tests;
