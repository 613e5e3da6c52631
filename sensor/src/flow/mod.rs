//! Flows: the connection table, where reassembly and decoding meet.
//!
//! A flow owns a connection's two [`Stream`]s (its directions put back in order by
//! [`crate::reassembly`]) and its [`HttpConnection`] (the decoder): [`FlowTable::push`] takes
//! [`TcpSegment`]s from any source (live eBPF, capture files), feeds each connection's ordered
//! stream events to its decoder and collects finished [`Exchange`]s. Neither of the two stages
//! knows the other; this module composes them.
//! Flows end on FIN (both sides) or RST, after an idle timeout, or when a bound is reached
//! (flow count, buffered bytes: the least recently active flow goes first). Every bound has a
//! counter.

pub mod shards;

use std::{
    hash::{Hash, Hasher},
    net::SocketAddr,
    time::Duration,
};

use crate::{
    capture::ServerPorts,
    exchange::Exchange,
    http::{
        HttpConfig, HttpConnection, HttpCounters, Side,
        parser::{looks_like_request, looks_like_response},
    },
    reassembly::{EndReason, Piece, Stream, StreamCounters, StreamEvent, StreamLimits},
    segment::TcpSegment,
};
use lru::LruCache;
use sensor_ebpf::tcp_flags;

/// Settings of the flow table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    /// Ports known to be servers: they tell client from server when the SYN was not seen. Live,
    /// the set the port policy keeps in step with the kernel (a reload's ports count at once).
    pub server_ports: ServerPorts,
    /// Decode only connections on `server_ports` (otherwise HTTP is recognised on any port).
    pub only_server_ports: bool,
    pub max_flows: usize,
    pub idle_timeout: Duration,
    /// Out-of-order bytes held over all flows.
    pub max_buffered_bytes: usize,
    pub stream: StreamLimits,
    pub http: HttpConfig,
    /// Ask the capture to leave out long bodies past the cap ([`FlowTable::take_skip_hints`]):
    /// live, where a kernel takes the hints; a capture file has nothing to ask.
    pub skip_hints: bool,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            server_ports: ServerPorts::default(),
            only_server_ports: false,
            max_flows: 65_536,
            idle_timeout: Duration::from_secs(300),
            max_buffered_bytes: 64 << 20,
            stream: StreamLimits::default(),
            http: HttpConfig::default(),
            skip_hints: false,
        }
    }
}

/// Counters of the flow table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    pub flows_created: u64,
    pub flows_closed: u64,
    pub flows_idle: u64,
    pub flows_evicted_capacity: u64,
    pub flows_evicted_memory: u64,
    /// Payload-less segments (ACK, FIN, RST) of connections not in the table: mostly the last
    /// ACK or a late FIN/RST after a connection closed. Not a loss: no data is in them.
    pub control_without_flow: u64,
    /// Segments not on a server port while decoding is limited to them.
    pub segments_filtered: u64,
    /// Connections whose client side was guessed (no SYN, no known port, no request seen).
    pub direction_guessed: u64,
    /// Port verdicts not kept because the daemon had not taken the last ones yet.
    pub port_verdicts_dropped: u64,
    /// Requests to the capture to leave out the rest of a long body ([`SkipHint`]).
    pub skip_hints: u64,
    /// Skip hints not kept because the daemon had not taken the last ones yet.
    pub skip_hints_dropped: u64,
}

/// Both addresses, in a canonical order so both directions find the same flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FlowKey(SocketAddr, SocketAddr);

impl FlowKey {
    fn of(a: SocketAddr, b: SocketAddr) -> Self {
        if a <= b { Self(a, b) } else { Self(b, a) }
    }
}

impl Hash for FlowKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
        self.1.hash(state);
    }
}

/// A request to the capture: the segments from `src` to `dst` that lie wholly in the sequence
/// range `[from_seq, until_seq)` carry only body bytes the decoder will count, not read; it may
/// send their lengths without their bytes (`sensor_ebpf::skip`). An empty range withdraws the
/// direction's last one: its connection ended, and a later one on the same ports must not find
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkipHint {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub from_seq: u32,
    pub until_seq: u32,
}

impl SkipHint {
    pub fn is_withdrawal(&self) -> bool {
        self.from_seq == self.until_seq
    }
}

/// Bodies with less left than this are read to their end: asking costs the daemon a map update,
/// and a hint takes a moment to arrive, by when a short rest has crossed the ring already.
const MIN_SKIP_BYTES: u64 = 32 * 1024;
/// Farthest a hint reaches ahead of the stream (sequence comparisons hold far below 2^31); a
/// longer body asks again when it gets there.
const MAX_SKIP_BYTES: u64 = 1 << 30;
/// Skip hints held for the daemon at most between two takes (the rest are counted).
const MAX_SKIP_HINTS: usize = 4096;

struct Flow {
    client: SocketAddr,
    /// Client-to-server and server-to-client.
    streams: [Stream; 2],
    /// The last skip range asked for, per side: one hint per body, withdrawn at the end.
    skip_asked: [Option<SkipHint>; 2],
    http: HttpConnection,
    last_ns: u64,
    buffered: usize,
    /// Seen from its SYN and not yet classified: its first bytes will say whether its server
    /// port speaks HTTP (see [`FlowTable::take_port_verdicts`]).
    classify: bool,
}

impl Flow {
    /// The range to ask the capture to skip on `side` (whose segments go from `src` to `dst`
    /// on the wire), once its decoder counts the rest of a long body without reading it; `None`
    /// when there is none or it was asked for already.
    fn skip_hint(
        &mut self,
        side: Side,
        src: SocketAddr,
        dst: SocketAddr,
        http: &HttpConfig,
    ) -> Option<SkipHint> {
        let left = self.http.body_left_to_count(side, http)?;
        if left < MIN_SKIP_BYTES {
            return None;
        }
        let from_seq = self.streams[side as usize].next_seq()?;
        let until_seq = from_seq.wrapping_add(left.min(MAX_SKIP_BYTES) as u32);
        let asked = &mut self.skip_asked[side as usize];
        if asked.is_some_and(|a| a.until_seq == until_seq) {
            return None;
        }
        let hint = SkipHint {
            src,
            dst,
            from_seq,
            until_seq,
        };
        *asked = Some(hint);
        Some(hint)
    }
}

/// The flow table on the pipeline's own thread, or spread over worker threads ([`shards`]).
#[expect(
    clippy::large_enum_variant,
    reason = "one per pipeline, and the table is used on every segment: no indirection"
)]
pub enum Flows {
    One(FlowTable),
    Sharded(shards::ShardedFlows),
}

impl From<FlowTable> for Flows {
    fn from(table: FlowTable) -> Self {
        Self::One(table)
    }
}

impl From<shards::ShardedFlows> for Flows {
    fn from(sharded: shards::ShardedFlows) -> Self {
        Self::Sharded(sharded)
    }
}

impl Flows {
    /// One table on the caller's thread (`decode_threads` 0), or spread over that many worker
    /// threads, each with a share of `config`'s bounds.
    pub fn new(config: FlowConfig, decode_threads: usize) -> Result<Self, shards::ShardError> {
        Ok(match decode_threads {
            0 => Self::One(FlowTable::new(config)),
            n => Self::Sharded(shards::ShardedFlows::new(&config, n)?),
        })
    }

    /// Feeds one segment; finished exchanges are appended to `out` (spread over workers: those
    /// of the segments the workers have answered for).
    pub fn push(&mut self, segment: TcpSegment, out: &mut Vec<Exchange>) {
        match self {
            Self::One(table) => table.push(segment, out),
            Self::Sharded(sharded) => sharded.push(segment, out),
        }
    }

    /// Closes the idle flows (see [`FlowTable::expire`]); spread over workers, their exchanges
    /// come with a later call or [`Self::sync`].
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Exchange>) {
        match self {
            Self::One(table) => table.expire(now_ns, out),
            Self::Sharded(sharded) => sharded.expire(now_ns),
        }
    }

    /// Every exchange the segments so far finished is in `out` afterwards.
    pub fn sync(&mut self, out: &mut Vec<Exchange>) {
        if let Self::Sharded(sharded) = self {
            sharded.sync(out);
        }
    }

    /// Ends every flow (the capture is over).
    pub fn finish(&mut self, out: &mut Vec<Exchange>) {
        match self {
            Self::One(table) => table.finish(out),
            Self::Sharded(sharded) => sharded.finish(out),
        }
    }

    pub fn take_port_verdicts(&mut self) -> Vec<(u16, bool)> {
        match self {
            Self::One(table) => table.take_port_verdicts(),
            Self::Sharded(sharded) => sharded.take_port_verdicts(),
        }
    }

    pub fn take_skip_hints(&mut self) -> Vec<SkipHint> {
        match self {
            Self::One(table) => table.take_skip_hints(),
            Self::Sharded(sharded) => sharded.take_skip_hints(),
        }
    }

    pub fn snapshot(&self) -> Vec<(&'static str, Vec<(&'static str, u64)>)> {
        match self {
            Self::One(table) => table.snapshot(),
            Self::Sharded(sharded) => sharded.snapshot(),
        }
    }
}

/// Port verdicts held for the daemon at most between two takes (the rest are counted).
const MAX_PORT_VERDICTS: usize = 4096;

/// All connections being decoded.
pub struct FlowTable {
    config: FlowConfig,
    flows: LruCache<FlowKey, Flow>,
    buffered: usize,
    /// Newest segment time seen: the clock for idle timeouts (capture time, not wall time, so
    /// files are decoded exactly as live traffic would be).
    now_ns: u64,
    events: Vec<StreamEvent>,
    /// (server port, speaks HTTP) of connections classified since the last take.
    port_verdicts: Vec<(u16, bool)>,
    skip_hints: Vec<SkipHint>,
    pub counters: FlowCounters,
    pub stream_counters: StreamCounters,
    pub http_counters: HttpCounters,
}

impl FlowTable {
    pub fn new(config: FlowConfig) -> Self {
        Self {
            config,
            flows: LruCache::unbounded(),
            buffered: 0,
            now_ns: 0,
            events: Vec::new(),
            port_verdicts: Vec::new(),
            skip_hints: Vec::new(),
            counters: FlowCounters::default(),
            stream_counters: StreamCounters::default(),
            http_counters: HttpCounters::default(),
        }
    }

    /// (server port, whether it speaks HTTP) for each connection seen from its start and
    /// classified by its first bytes since the last call: how the daemon tells which listening
    /// ports to keep watching.
    pub fn take_port_verdicts(&mut self) -> Vec<(u16, bool)> {
        std::mem::take(&mut self.port_verdicts)
    }

    /// The skip ranges asked for since the last call (with `skip_hints` on), for the capture.
    pub fn take_skip_hints(&mut self) -> Vec<SkipHint> {
        std::mem::take(&mut self.skip_hints)
    }

    pub fn active_flows(&self) -> usize {
        self.flows.len()
    }

    /// Counters of all three layers by stage name, for `apisessions stats`.
    pub fn snapshot(&self) -> Vec<(&'static str, Vec<(&'static str, u64)>)> {
        let c = &self.counters;
        vec![
            (
                "flows",
                vec![
                    ("active", self.flows.len() as u64),
                    ("buffered_bytes", self.buffered as u64),
                    ("created", c.flows_created),
                    ("closed", c.flows_closed),
                    ("idle_expired", c.flows_idle),
                    ("evicted_capacity", c.flows_evicted_capacity),
                    ("evicted_memory", c.flows_evicted_memory),
                    ("control_without_flow", c.control_without_flow),
                    ("segments_filtered", c.segments_filtered),
                    ("direction_guessed", c.direction_guessed),
                    ("port_verdicts_dropped", c.port_verdicts_dropped),
                    ("skip_hints", c.skip_hints),
                    ("skip_hints_dropped", c.skip_hints_dropped),
                ],
            ),
            ("reassembly", self.stream_counters.snapshot()),
            ("http", self.http_counters.snapshot()),
        ]
    }

    fn is_server_port(&self, port: u16) -> bool {
        self.config.server_ports.contains(port)
    }

    /// Decides which end is the client of a new connection, from its first segment.
    fn client_of(&mut self, segment: &TcpSegment) -> SocketAddr {
        let syn = segment.has(tcp_flags::SYN);
        let ack = segment.has(tcp_flags::ACK);
        if syn && !ack {
            return segment.src;
        }
        if syn && ack {
            return segment.dst;
        }
        if self.is_server_port(segment.dst.port()) {
            return segment.src;
        }
        if self.is_server_port(segment.src.port()) {
            return segment.dst;
        }
        if looks_like_request(&segment.payload) {
            return segment.src;
        }
        if looks_like_response(&segment.payload) {
            return segment.dst;
        }
        // Nothing to go on: ephemeral ports are usually the higher ones.
        self.counters.direction_guessed += 1;
        if segment.src.port() > segment.dst.port() {
            segment.src
        } else {
            segment.dst
        }
    }

    /// Feeds one segment; finished exchanges are appended to `out`.
    pub fn push(&mut self, segment: TcpSegment, out: &mut Vec<Exchange>) {
        self.now_ns = self.now_ns.max(segment.ts_ns);
        if self.config.only_server_ports
            && !self.is_server_port(segment.src.port())
            && !self.is_server_port(segment.dst.port())
        {
            self.counters.segments_filtered += 1;
            return;
        }
        let key = FlowKey::of(segment.src, segment.dst);
        if !self.flows.contains(&key) {
            let starts = segment.has(tcp_flags::SYN) || !segment.payload.is_empty();
            if !starts || segment.has(tcp_flags::RST) {
                self.counters.control_without_flow += 1;
                return;
            }
            if self.flows.len() >= self.config.max_flows {
                self.counters.flows_evicted_capacity += 1;
                self.evict_oldest(EndReason::Evicted, out);
            }
            let client = self.client_of(&segment);
            let server = if client == segment.src {
                segment.dst
            } else {
                segment.src
            };
            self.counters.flows_created += 1;
            self.flows.put(
                key,
                Flow {
                    client,
                    streams: [Stream::default(), Stream::default()],
                    skip_asked: [None; 2],
                    http: {
                        let mut http = HttpConnection::new(client, server);
                        if segment.has(tcp_flags::SYN) {
                            http.set_seen_from_start();
                        }
                        if segment.tls {
                            http.set_tls();
                        }
                        http
                    },
                    last_ns: segment.ts_ns,
                    buffered: 0,
                    classify: segment.has(tcp_flags::SYN),
                },
            );
        }
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        flow.last_ns = segment.ts_ns;
        if let Some(upstream) = segment.upstream {
            flow.http.set_upstream(upstream);
        }
        let side = if segment.src == flow.client {
            Side::Client
        } else {
            Side::Server
        };
        let rst = segment.has(tcp_flags::RST);
        let (segment_src, segment_dst) = (segment.src, segment.dst);
        let (segment_src_port, segment_dst_port) = (segment.src.port(), segment.dst.port());
        let segment_wire = segment.upstream.is_none() && !segment.tls;
        let mut events = std::mem::take(&mut self.events);
        if segment.has(tcp_flags::ACK) {
            // What this side acknowledged of the other direction: holes there that it passes
            // were lost by the capture, not by the network (see `Stream::acknowledged`).
            let other_side = side.other();
            flow.streams[other_side as usize].acknowledged(
                segment.ack,
                segment.ts_ns,
                &self.config.stream,
                &mut self.stream_counters,
                &mut events,
            );
            decode(
                &mut flow.http,
                other_side,
                &mut events,
                &self.config.http,
                &mut self.http_counters,
                out,
            );
            if side == Side::Client {
                let acked = flow.streams[Side::Server as usize].offset_of_seq(segment.ack);
                flow.http.set_client_acked(acked);
            }
        }
        let piece = Piece {
            ts_ns: segment.ts_ns,
            seq: segment.seq,
            syn: segment.has(tcp_flags::SYN),
            fin: segment.has(tcp_flags::FIN),
            rst,
            missing: segment.missing,
            skipped: segment.skipped,
            payload: segment.payload,
        };
        let index = side as usize;
        flow.streams[index].push(
            piece,
            &self.config.stream,
            &mut self.stream_counters,
            &mut events,
        );
        if flow.classify
            && let Some(StreamEvent::Data { bytes, .. }) = events.first()
            && let Some(http) = crate::http::speaks_http(side, bytes)
        {
            flow.classify = false;
            let server_port = if side == Side::Client {
                segment_dst_port
            } else {
                segment_src_port
            };
            if self.port_verdicts.len() < MAX_PORT_VERDICTS {
                self.port_verdicts.push((server_port, http));
            } else {
                self.counters.port_verdicts_dropped += 1;
            }
        }
        decode(
            &mut flow.http,
            side,
            &mut events,
            &self.config.http,
            &mut self.http_counters,
            out,
        );
        // Translated (NAT) or decrypted (TLS) segments are not what the wire carries: a hint
        // in their addresses would match nothing.
        if self.config.skip_hints
            && segment_wire
            && let Some(hint) = flow.skip_hint(side, segment_src, segment_dst, &self.config.http)
        {
            self.counters.skip_hints += 1;
            keep_hint(&mut self.skip_hints, &mut self.counters, hint);
        }
        if rst {
            // A reset ends the whole connection, not only the direction that sent it.
            let other_side = side.other();
            flow.streams[other_side as usize].finish(
                segment.ts_ns,
                EndReason::Reset,
                &mut self.stream_counters,
                &mut events,
            );
            decode(
                &mut flow.http,
                other_side,
                &mut events,
                &self.config.http,
                &mut self.http_counters,
                out,
            );
        }
        self.events = events;
        let buffered = flow.streams[0].buffered() + flow.streams[1].buffered();
        self.buffered = self.buffered + buffered - flow.buffered;
        flow.buffered = buffered;
        if flow.streams[0].ended() && flow.streams[1].ended() {
            self.counters.flows_closed += 1;
            self.remove(&key, self.now_ns, EndReason::Fin, out);
        }
        while self.buffered > self.config.max_buffered_bytes && !self.flows.is_empty() {
            self.counters.flows_evicted_memory += 1;
            self.evict_oldest(EndReason::Evicted, out);
        }
    }

    /// Closes flows idle for longer than the timeout, as of the newest segment time (or `now_ns`
    /// if later: a live sensor passes the wall clock so quiet periods expire flows too).
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Exchange>) {
        self.now_ns = self.now_ns.max(now_ns);
        let timeout = self.config.idle_timeout.as_nanos() as u64;
        while let Some((_, flow)) = self.flows.peek_lru() {
            if flow.last_ns.saturating_add(timeout) > self.now_ns {
                break;
            }
            self.counters.flows_idle += 1;
            self.evict_oldest(EndReason::Idle, out);
        }
    }

    /// Ends every flow (the capture is over).
    pub fn finish(&mut self, out: &mut Vec<Exchange>) {
        while !self.flows.is_empty() {
            self.evict_oldest(EndReason::CaptureEnd, out);
        }
    }

    fn evict_oldest(&mut self, reason: EndReason, out: &mut Vec<Exchange>) {
        if let Some((key, _)) = self.flows.peek_lru() {
            let key = *key;
            self.remove(&key, self.now_ns, reason, out);
        }
    }

    fn remove(&mut self, key: &FlowKey, ts_ns: u64, reason: EndReason, out: &mut Vec<Exchange>) {
        let Some(mut flow) = self.flows.pop(key) else {
            return;
        };
        self.buffered -= flow.buffered;
        let mut events = std::mem::take(&mut self.events);
        for side in [Side::Client, Side::Server] {
            flow.streams[side as usize].finish(
                ts_ns,
                reason,
                &mut self.stream_counters,
                &mut events,
            );
            decode(
                &mut flow.http,
                side,
                &mut events,
                &self.config.http,
                &mut self.http_counters,
                out,
            );
        }
        flow.http
            .finish(ts_ns, &self.config.http, &mut self.http_counters, out);
        self.events = events;
        for asked in flow.skip_asked.into_iter().flatten() {
            let withdrawal = SkipHint {
                from_seq: asked.until_seq,
                ..asked
            };
            keep_hint(&mut self.skip_hints, &mut self.counters, withdrawal);
        }
    }
}

/// Keeps a skip hint (or withdrawal) for the daemon, within the bound.
fn keep_hint(hints: &mut Vec<SkipHint>, counters: &mut FlowCounters, hint: SkipHint) {
    if hints.len() < MAX_SKIP_HINTS {
        hints.push(hint);
    } else {
        counters.skip_hints_dropped += 1;
    }
}

/// Hands one side's stream events to the connection's decoder, leaving `events` empty.
fn decode(
    http: &mut HttpConnection,
    side: Side,
    events: &mut Vec<StreamEvent>,
    config: &HttpConfig,
    counters: &mut HttpCounters,
    out: &mut Vec<Exchange>,
) {
    for event in events.drain(..) {
        http.on_event(side, event, config, counters, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "10.0.0.2:40000";
    const SERVER: &str = "10.0.0.1:8080";

    fn segment(
        src: &str,
        dst: &str,
        seq: u32,
        flags: u8,
        payload: &[u8],
        ts_ns: u64,
    ) -> TcpSegment {
        TcpSegment {
            ts_ns,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            seq,
            ack: 0,
            flags,
            payload: payload.to_vec(),
            missing: 0,
            skipped: false,
            upstream: None,
            tls: false,
        }
    }

    /// A whole connection: handshake, one exchange, FIN both ways.
    fn conversation(table: &mut FlowTable, client: &str, out: &mut Vec<Exchange>, ts: u64) {
        use tcp_flags::{ACK, FIN, PSH, SYN};
        let request = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n";
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        for seg in [
            segment(client, SERVER, 100, SYN, b"", ts),
            segment(SERVER, client, 500, SYN | ACK, b"", ts + 1),
            segment(client, SERVER, 101, PSH | ACK, request, ts + 2),
            segment(SERVER, client, 501, PSH | ACK, response, ts + 3),
            segment(
                client,
                SERVER,
                101 + request.len() as u32,
                FIN | ACK,
                b"",
                ts + 4,
            ),
            segment(
                SERVER,
                client,
                501 + response.len() as u32,
                FIN | ACK,
                b"",
                ts + 5,
            ),
        ] {
            table.push(seg, out);
        }
    }

    #[test]
    fn a_closed_connection_yields_its_exchange_and_leaves_the_table() {
        let mut table = FlowTable::new(FlowConfig::default());
        let mut out = Vec::new();
        conversation(&mut table, CLIENT, &mut out, 1_000);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].client, CLIENT.parse().unwrap());
        assert_eq!(out[0].response.as_ref().and_then(|r| r.status), Some(200));
        assert_eq!(table.active_flows(), 0);
        assert_eq!(table.counters.flows_closed, 1);
    }

    #[test]
    fn without_a_syn_the_request_line_tells_the_client_on_any_port() {
        let mut table = FlowTable::new(FlowConfig {
            server_ports: ServerPorts::new(&[]),
            ..FlowConfig::default()
        });
        let mut out = Vec::new();
        // The response is seen first; only the request reveals who is who.
        table.push(
            segment(
                "10.0.0.1:9",
                "10.0.0.2:9999",
                1,
                0,
                b"GET / HTTP/1.1\r\n\r\n",
                1,
            ),
            &mut out,
        );
        table.push(
            segment(
                "10.0.0.2:9999",
                "10.0.0.1:9",
                1,
                0,
                b"HTTP/1.1 204 No\r\n\r\n",
                2,
            ),
            &mut out,
        );
        table.finish(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].client, "10.0.0.1:9".parse().unwrap());
        assert_eq!(table.stream_counters.started_mid_stream, 2);
    }

    #[test]
    fn a_server_port_added_after_the_start_tells_the_client_of_a_connection_picked_up_mid_body() {
        // A reload watches 61080 (above the ephemeral range) while a client is in the middle of
        // sending a body: nothing in the first bytes says who is who, only the port does.
        let ports = ServerPorts::new(&[8080]);
        let mut table = FlowTable::new(FlowConfig {
            server_ports: ports.clone(),
            ..FlowConfig::default()
        });
        ports.insert(61080);
        let (client, server) = ("10.0.0.2:40000", "10.0.0.1:61080");
        let mut out = Vec::new();
        for (src, dst, seq, payload, ts) in [
            // Resynchronising starts a message at a line's start only: the body ends a line.
            (client, server, 1, &b"rest of a body\r\n"[..], 1),
            (
                server,
                client,
                1,
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                2,
            ),
            (client, server, 17, b"GET /next HTTP/1.1\r\n\r\n", 3),
            (server, client, 39, b"HTTP/1.1 204 No\r\n\r\n", 4),
        ] {
            table.push(segment(src, dst, seq, 0, payload, ts), &mut out);
        }
        table.finish(&mut out);
        let next = out
            .iter()
            .find(|e| e.request.as_ref().is_some_and(|r| r.uri == "/next"))
            .unwrap_or_else(|| panic!("/next decoded: {out:?}"));
        assert_eq!(next.client, client.parse().unwrap());
        assert_eq!(next.server, server.parse().unwrap());
        assert_eq!(table.counters.direction_guessed, 0);

        // Dropped again: the next such connection's ends are guessed (the higher port is the
        // client's, wrongly here).
        ports.remove(61080);
        let mut table = FlowTable::new(FlowConfig {
            server_ports: ports,
            ..FlowConfig::default()
        });
        table.push(
            segment(client, server, 1, 0, b"rest of a body", 1),
            &mut out,
        );
        assert_eq!(table.counters.direction_guessed, 1);
    }

    #[test]
    fn a_reset_ends_both_directions() {
        let mut table = FlowTable::new(FlowConfig::default());
        let mut out = Vec::new();
        table.push(segment(CLIENT, SERVER, 1, tcp_flags::SYN, b"", 1), &mut out);
        table.push(
            segment(CLIENT, SERVER, 2, 0, b"GET /r HTTP/1.1\r\n\r\n", 2),
            &mut out,
        );
        table.push(segment(SERVER, CLIENT, 9, tcp_flags::RST, b"", 3), &mut out);
        assert_eq!(table.active_flows(), 0);
        assert_eq!(out.len(), 1);
        assert!(out[0].response.is_none(), "no response before the reset");
    }

    #[test]
    fn idle_flows_expire_and_bounds_evict_the_oldest() {
        let config = FlowConfig {
            max_flows: 2,
            idle_timeout: Duration::from_secs(10),
            ..FlowConfig::default()
        };
        let mut table = FlowTable::new(config);
        let mut out = Vec::new();
        for (i, client) in ["10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1"]
            .iter()
            .enumerate()
        {
            table.push(
                segment(
                    client,
                    SERVER,
                    1,
                    0,
                    b"GET /a HTTP/1.1\r\n\r\n",
                    i as u64 + 1,
                ),
                &mut out,
            );
        }
        assert_eq!(table.active_flows(), 2);
        assert_eq!(table.counters.flows_evicted_capacity, 1);
        assert_eq!(
            out.len(),
            1,
            "the evicted flow's request is reported, unanswered"
        );
        assert_eq!(out[0].client, "10.0.0.2:1".parse().unwrap());
        table.expire(5 + 10_000_000_000, &mut out);
        assert_eq!(table.active_flows(), 0);
        assert_eq!(table.counters.flows_idle, 2);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn buffered_bytes_are_bounded_over_all_flows() {
        let config = FlowConfig {
            max_buffered_bytes: 1000,
            ..FlowConfig::default()
        };
        let mut table = FlowTable::new(config);
        let mut out = Vec::new();
        for i in 0..5u16 {
            let client = format!("10.0.0.2:{}", 1000 + i);
            table.push(
                segment(&client, SERVER, 1, tcp_flags::SYN, b"", 1),
                &mut out,
            );
            // Out of order: held until the hole before it fills.
            table.push(segment(&client, SERVER, 100, 0, &[b'x'; 400], 2), &mut out);
        }
        assert!(table.counters.flows_evicted_memory >= 3);
        assert!(
            table.snapshot()[0]
                .1
                .iter()
                .any(|(name, value)| *name == "buffered_bytes" && *value <= 1000)
        );
    }

    #[test]
    fn only_server_ports_filters_other_connections() {
        let config = FlowConfig {
            server_ports: ServerPorts::new(&[8080]),
            only_server_ports: true,
            ..FlowConfig::default()
        };
        let mut table = FlowTable::new(config);
        let mut out = Vec::new();
        table.push(
            segment(
                "10.0.0.2:5",
                "10.0.0.1:9090",
                1,
                0,
                b"GET / HTTP/1.1\r\n\r\n",
                1,
            ),
            &mut out,
        );
        assert_eq!(
            (table.active_flows(), table.counters.segments_filtered),
            (0, 1)
        );
    }

    /// A download of 200 000 bytes: request, head and 20 000 body bytes, then whatever `rest`
    /// makes of the remaining 180 000 (as the kernel would send them), then the FINs.
    fn download(config: FlowConfig, rest: &[TcpSegment]) -> (FlowTable, Vec<Exchange>) {
        use tcp_flags::{ACK, FIN, PSH, SYN};
        let mut table = FlowTable::new(config);
        let mut out = Vec::new();
        let request = b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n";
        let mut first = DOWNLOAD_HEAD.to_vec();
        first.extend_from_slice(&[b'a'; 20_000]);
        for seg in [
            segment(CLIENT, SERVER, 100, SYN, b"", 1),
            segment(SERVER, CLIENT, 500, SYN | ACK, b"", 2),
            segment(CLIENT, SERVER, 101, PSH | ACK, request, 3),
            segment(SERVER, CLIENT, 501, ACK, &first, 4),
        ] {
            table.push(seg, &mut out);
        }
        for seg in rest {
            table.push(seg.clone(), &mut out);
        }
        let server_end = BODY_AT + 180_000;
        table.push(
            segment(SERVER, CLIENT, server_end, FIN | ACK, b"", 8),
            &mut out,
        );
        let client_end = 101 + request.len() as u32;
        table.push(
            segment(CLIENT, SERVER, client_end, FIN | ACK, b"", 9),
            &mut out,
        );
        (table, out)
    }

    const DOWNLOAD_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n";
    /// The seq right after the download's first 20 000 body bytes.
    const BODY_AT: u32 = 501 + DOWNLOAD_HEAD.len() as u32 + 20_000;

    #[test]
    fn a_long_body_past_the_cap_asks_to_skip_its_rest_once_and_skipped_bytes_keep_it_whole() {
        let config = FlowConfig {
            skip_hints: true,
            ..FlowConfig::default()
        };
        let skipped = TcpSegment {
            missing: 180_000,
            skipped: true,
            ..segment(SERVER, CLIENT, BODY_AT, tcp_flags::ACK, b"", 5)
        };
        let (mut table, out) = download(config.clone(), &[skipped]);
        let asked = SkipHint {
            src: SERVER.parse().unwrap(),
            dst: CLIENT.parse().unwrap(),
            from_seq: BODY_AT,
            until_seq: BODY_AT + 180_000,
        };
        // Asked for once, and withdrawn when the connection ended.
        let withdrawn = SkipHint {
            from_seq: BODY_AT + 180_000,
            ..asked
        };
        assert!(withdrawn.is_withdrawal() && !asked.is_withdrawal());
        assert_eq!(table.take_skip_hints(), [asked, withdrawn]);
        assert_eq!(table.counters.skip_hints, 1);
        assert_eq!(out.len(), 1);
        let response = out[0].response.as_ref().unwrap();
        assert_eq!(response.meta.body_len, 200_000);
        assert_eq!(response.meta.body.len(), config.http.body_cap);
        assert!(response.meta.truncated && !response.meta.gap);
        assert_eq!(table.http_counters.body_bytes_skipped, 180_000);
        assert_eq!(
            (
                table.stream_counters.gaps,
                table.stream_counters.skipped_bytes
            ),
            (0, 180_000)
        );

        // Captured whole instead (the hint came too late): the same record, and no second hint
        // while the body goes on.
        let data = |seq: u32, len: usize| {
            segment(SERVER, CLIENT, seq, tcp_flags::ACK, &vec![b'b'; len], 5)
        };
        let (mut table, whole) = download(
            config,
            &[data(BODY_AT, 90_000), data(BODY_AT + 90_000, 90_000)],
        );
        assert_eq!(table.take_skip_hints(), [asked, withdrawn]);
        let response = whole[0].response.as_ref().unwrap();
        assert_eq!(
            (response.meta.body_len, response.meta.gap),
            (200_000, false)
        );

        // A capture file asks for nothing.
        let (mut table, _) = download(FlowConfig::default(), &[data(BODY_AT, 180_000)]);
        assert!(table.take_skip_hints().is_empty());
    }

    #[test]
    fn skipped_bytes_the_decoder_did_not_ask_for_are_a_gap() {
        // A marker inside the first 20 000 bytes' range (the state it was asked for is gone):
        // taken as lost, as a gap of its length.
        let early = TcpSegment {
            missing: 180_000,
            skipped: true,
            ..segment(SERVER, CLIENT, BODY_AT, tcp_flags::ACK, b"", 5)
        };
        let config = FlowConfig {
            http: HttpConfig {
                body_cap: 1 << 20,
                ..HttpConfig::default()
            },
            ..FlowConfig::default()
        };
        let (table, out) = download(config, &[early]);
        let response = out[0].response.as_ref().unwrap();
        assert_eq!(response.meta.body_len, 200_000);
        assert!(response.meta.gap);
        assert_eq!(table.http_counters.body_bytes_skipped, 0);
    }
}
