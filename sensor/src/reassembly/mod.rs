//! Stage 2, reassembly: the flow table and, per flow, both directions put back in order.
//!
//! [`FlowTable::push`] takes [`TcpSegment`]s from any source (live eBPF, capture files) and feeds
//! each connection's ordered streams to its HTTP decoder, collecting finished [`Exchange`]s.
//! Flows end on FIN (both sides) or RST, after an idle timeout, or when a bound is reached
//! (flow count, buffered bytes: the least recently active flow goes first). Every bound has a
//! counter.

pub mod stream;

use std::{
    hash::{Hash, Hasher},
    net::SocketAddr,
    time::Duration,
};

use lru::LruCache;
use sensor_ebpf::tcp_flags;
pub use stream::{EndReason, Piece, Stream, StreamCounters, StreamEvent, StreamLimits};

use crate::{
    exchange::Exchange,
    http::{HttpConfig, HttpConnection, HttpCounters, Side},
    segment::TcpSegment,
};

/// Settings of the flow table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    /// Ports known to be servers: they tell client from server when the SYN was not seen.
    pub server_ports: Vec<u16>,
    /// Decode only connections on `server_ports` (otherwise HTTP is recognised on any port).
    pub only_server_ports: bool,
    pub max_flows: usize,
    pub idle_timeout: Duration,
    /// Out-of-order bytes held over all flows.
    pub max_buffered_bytes: usize,
    pub stream: StreamLimits,
    pub http: HttpConfig,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            server_ports: crate::capture::DEFAULT_PORTS.to_vec(),
            only_server_ports: false,
            max_flows: 65_536,
            idle_timeout: Duration::from_secs(300),
            max_buffered_bytes: 64 << 20,
            stream: StreamLimits::default(),
            http: HttpConfig::default(),
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
    /// Segments of unknown connections that could not start one (no SYN, no payload).
    pub segments_without_flow: u64,
    /// Segments not on a server port while decoding is limited to them.
    pub segments_filtered: u64,
    /// Connections whose client side was guessed (no SYN, no known port, no request seen).
    pub direction_guessed: u64,
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

struct Flow {
    client: SocketAddr,
    /// Client-to-server and server-to-client.
    streams: [Stream; 2],
    http: HttpConnection,
    last_ns: u64,
    buffered: usize,
}

/// All connections being decoded.
pub struct FlowTable {
    config: FlowConfig,
    flows: LruCache<FlowKey, Flow>,
    buffered: usize,
    /// Newest segment time seen: the clock for idle timeouts (capture time, not wall time, so
    /// files are decoded exactly as live traffic would be).
    now_ns: u64,
    events: Vec<StreamEvent>,
    pub counters: FlowCounters,
    pub stream_counters: StreamCounters,
    pub http_counters: HttpCounters,
}

const METHOD_PREFIXES: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
];

impl FlowTable {
    pub fn new(config: FlowConfig) -> Self {
        Self {
            config,
            flows: LruCache::unbounded(),
            buffered: 0,
            now_ns: 0,
            events: Vec::new(),
            counters: FlowCounters::default(),
            stream_counters: StreamCounters::default(),
            http_counters: HttpCounters::default(),
        }
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
                    ("segments_without_flow", c.segments_without_flow),
                    ("segments_filtered", c.segments_filtered),
                    ("direction_guessed", c.direction_guessed),
                ],
            ),
            ("reassembly", self.stream_counters.snapshot()),
            ("http", self.http_counters.snapshot()),
        ]
    }

    fn is_server_port(&self, port: u16) -> bool {
        self.config.server_ports.contains(&port)
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
        if METHOD_PREFIXES
            .iter()
            .any(|m| segment.payload.starts_with(m))
        {
            return segment.src;
        }
        if segment.payload.starts_with(b"HTTP/") {
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
                self.counters.segments_without_flow += 1;
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
                    http: HttpConnection::new(client, server),
                    last_ns: segment.ts_ns,
                    buffered: 0,
                },
            );
        }
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        flow.last_ns = segment.ts_ns;
        let side = if segment.src == flow.client {
            Side::Client
        } else {
            Side::Server
        };
        let rst = segment.has(tcp_flags::RST);
        let piece = Piece {
            ts_ns: segment.ts_ns,
            seq: segment.seq,
            syn: segment.has(tcp_flags::SYN),
            fin: segment.has(tcp_flags::FIN),
            rst,
            missing: segment.missing,
            payload: segment.payload,
        };
        let mut events = std::mem::take(&mut self.events);
        let index = side as usize;
        flow.streams[index].push(
            piece,
            &self.config.stream,
            &mut self.stream_counters,
            &mut events,
        );
        for event in events.drain(..) {
            flow.http
                .on_event(side, event, &self.config.http, &mut self.http_counters, out);
        }
        if rst {
            // A reset ends the whole connection, not only the direction that sent it.
            let (other, other_side) = match side {
                Side::Client => (1, Side::Server),
                Side::Server => (0, Side::Client),
            };
            flow.streams[other].finish(
                segment.ts_ns,
                EndReason::Reset,
                &mut self.stream_counters,
                &mut events,
            );
            for event in events.drain(..) {
                flow.http.on_event(
                    other_side,
                    event,
                    &self.config.http,
                    &mut self.http_counters,
                    out,
                );
            }
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
        for (index, side) in [(0, Side::Client), (1, Side::Server)] {
            flow.streams[index].finish(ts_ns, reason, &mut self.stream_counters, &mut events);
            for event in events.drain(..) {
                flow.http
                    .on_event(side, event, &self.config.http, &mut self.http_counters, out);
            }
        }
        flow.http
            .finish(ts_ns, &self.config.http, &mut self.http_counters, out);
        self.events = events;
    }
}
