//! Stage 1b, NAT: segments of a translated connection put back on the connection the client
//! opened.
//!
//! On a container host a request to a published port (Docker's `-p 8080:80`, a Kubernetes
//! Service or NodePort) is rewritten by a DNAT rule: the sensor sees it once as the client sent
//! it (client -> host:8080, on the outside interface) and once translated (client ->
//! container:80, on the bridge and the container's veth). Without this stage those are two
//! connections and every request becomes two exchanges.
//!
//! The kernel's connection tracking knows the mapping. [`NatTable`] asks it over netlink
//! (ctnetlink `IPCTNL_MSG_CT_GET`, one request per connection, answered synchronously in the
//! sender's context) and keeps the answer in a bounded cache keyed by the address pair, so each
//! copy of a packet is renamed to the original tuple (what the client addressed) and carries the
//! translated destination as its `upstream`. Reassembly then sees one connection, and the second
//! copy of each segment is an ordinary duplicate. Connections conntrack does not translate are
//! left as they are; a host without conntrack (module not loaded) turns the stage off after the
//! first failed request.
//!
//! Why user space and not `bpf_skb_ct_lookup` in the TC program: aya 0.14 cannot load a kfunc
//! call (aya-obj 0.3 has no relocation for `BPF_PSEUDO_KFUNC_CALL` and aya-ebpf 0.2.1 declares no
//! kfuncs; checked in their sources), and even with it the lookup would run on every packet on
//! the packet path, where this stage asks once per forwarded connection off it (a request costs
//! about 10 us of CPU, see `tests/container_live.rs`). Connections to this host's own servers
//! are never looked up (see [`NatTable::resolve`]).

use std::{
    hash::{Hash, Hasher},
    io,
    net::{IpAddr, SocketAddr},
    num::NonZeroUsize,
};

use lru::LruCache;
use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    conntrack::{ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Tuple},
};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_NETFILTER};
use sensor_ebpf::tcp_flags;

use crate::{capture::ServerPorts, segment::TcpSegment};

#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error("opening a netfilter netlink socket")]
    Open(#[source] io::Error),
    #[error("asking conntrack about a connection")]
    Request(#[source] io::Error),
    #[error("conntrack's answer could not be read: {0}")]
    Answer(String),
}

/// A connection as conntrack records it: the tuple the first packet had, and the tuple replies
/// carry (after NAT: from the translated destination, to the translated source).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtEntry {
    pub original: (SocketAddr, SocketAddr),
    pub reply: (SocketAddr, SocketAddr),
}

/// A ctnetlink socket in the calling thread's network namespace.
pub struct Conntrack {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Conntrack {
    pub fn open() -> Result<Self, NatError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NatError::Open)?;
        socket.bind_auto().map_err(NatError::Open)?;
        socket
            .connect(&NetlinkAddr::new(0, 0))
            .map_err(NatError::Open)?;
        Ok(Self {
            socket,
            seq: 0,
            buf: vec![0; 8192],
        })
    }

    /// The conntrack entry a TCP packet from `src` to `dst` belongs to, in either direction and
    /// before or after translation. None: conntrack does not track it.
    ///
    /// The kernel's table holds each entry under its original tuple and its reply tuple, so a
    /// packet's own tuple finds it for the client's packets before NAT and the server's after;
    /// the reversed tuple finds it for the other two copies.
    pub fn lookup(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Result<Option<CtEntry>, NatError> {
        match self.get(src, dst)? {
            Some(entry) => Ok(Some(entry)),
            None => self.get(dst, src),
        }
    }

    /// One IPCTNL_MSG_CT_GET for the tuple `src` -> `dst`.
    fn get(&mut self, src: SocketAddr, dst: SocketAddr) -> Result<Option<CtEntry>, NatError> {
        if src.is_ipv4() != dst.is_ipv4() {
            return Ok(None);
        }
        self.seq = self.seq.wrapping_add(1);
        let family = if src.is_ipv4() {
            NetfilterProtoFamily::IPv4
        } else {
            NetfilterProtoFamily::IPv6
        };
        let tuple = vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(src.ip()),
                IPTuple::DestinationAddress(dst.ip()),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(Protocol::Tcp),
                ProtoTuple::SourcePort(src.port()),
                ProtoTuple::DestinationPort(dst.port()),
            ]),
        ];
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        header.sequence_number = self.seq;
        let mut request = NetlinkMessage::new(
            header,
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(family, 0, 0),
                ConntrackMessage::Get(vec![ConntrackAttribute::CtaTupleOrig(tuple)]),
            )),
        );
        request.finalize();
        let mut out = vec![0; request.buffer_len()];
        request.serialize(&mut out);
        self.socket.send(&out, 0).map_err(NatError::Request)?;
        // The kernel answers inside send(): the reply is queued by now, so never block on it.
        loop {
            let n = match self.socket.recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(NatError::Answer("no answer".into()));
                }
                Err(e) => return Err(NatError::Request(e)),
            };
            let mut offset = 0;
            while offset < n {
                let bytes = &self.buf[offset..n];
                let message = NetlinkMessage::<NetfilterMessage>::deserialize(bytes)
                    .map_err(|e| NatError::Answer(e.to_string()))?;
                let len = message.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += len;
                // Answers to earlier requests that gave up waiting are skipped.
                if message.header.sequence_number != self.seq {
                    continue;
                }
                return match message.payload {
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        let code = e.code.map_or(0, |c| -c.get());
                        if code == libc::ENOENT {
                            Ok(None)
                        } else {
                            Err(NatError::Request(io::Error::from_raw_os_error(code)))
                        }
                    }
                    NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)),
                        ..
                    }) => Ok(entry(&attributes)),
                    other => Err(NatError::Answer(format!("unexpected {other:?}"))),
                };
            }
        }
    }
}

/// Both tuples of a conntrack answer; None if either is incomplete.
fn entry(attributes: &[ConntrackAttribute]) -> Option<CtEntry> {
    let mut original = None;
    let mut reply = None;
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(tuple) => original = pair(tuple),
            ConntrackAttribute::CtaTupleReply(tuple) => reply = pair(tuple),
            _ => {}
        }
    }
    Some(CtEntry {
        original: original?,
        reply: reply?,
    })
}

fn pair(tuple: &[Tuple]) -> Option<(SocketAddr, SocketAddr)> {
    let (mut src_ip, mut dst_ip, mut src_port, mut dst_port) = (None, None, None, None);
    for part in tuple {
        match part {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src_ip = Some(*a),
                        IPTuple::DestinationAddress(a) => dst_ip = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(protos) => {
                for proto in protos {
                    match proto {
                        ProtoTuple::SourcePort(p) => src_port = Some(*p),
                        ProtoTuple::DestinationPort(p) => dst_port = Some(*p),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let src: IpAddr = src_ip?;
    let dst: IpAddr = dst_ip?;
    Some((
        SocketAddr::new(src, src_port?),
        SocketAddr::new(dst, dst_port?),
    ))
}

/// How a connection was translated: the tuple the client sent, and where it really went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The client and the server as the client addressed it.
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// The same connection after NAT: the server it was sent to (the container) and the client
    /// as that server sees it (the client itself, unless source NAT rewrote it too).
    pub upstream: SocketAddr,
    pub upstream_peer: SocketAddr,
}

impl Translation {
    /// The translation conntrack's entry describes, or None if the entry is not translated.
    pub fn of(entry: CtEntry) -> Option<Self> {
        let (client, server) = entry.original;
        let (upstream, upstream_peer) = entry.reply;
        if upstream == server && upstream_peer == client {
            return None;
        }
        Some(Self {
            client,
            server,
            upstream,
            upstream_peer,
        })
    }

    /// Renames a segment of this connection (either copy, either direction) to the original
    /// tuple. The translated destination is recorded only if the destination was translated
    /// (DNAT); a connection only source-translated keeps its server.
    pub fn apply(&self, segment: &mut TcpSegment) {
        let towards_server = segment.src == self.client || segment.src == self.upstream_peer;
        if towards_server {
            segment.src = self.client;
            segment.dst = self.server;
        } else {
            segment.src = self.server;
            segment.dst = self.client;
        }
        if self.upstream != self.server {
            segment.upstream = Some(self.upstream);
        }
    }
}

/// Both ends in a canonical order, so both directions of a connection share a cache entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pair(SocketAddr, SocketAddr);

impl Pair {
    fn of(a: SocketAddr, b: SocketAddr) -> Self {
        if a <= b { Self(a, b) } else { Self(b, a) }
    }
}

impl Hash for Pair {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
        self.1.hash(state);
    }
}

#[derive(Clone, Copy, Debug)]
struct Cached {
    translation: Option<Translation>,
    /// False: conntrack did not know the pair (yet: an entry is only visible once the kernel
    /// confirmed it), so the answer is kept briefly.
    tracked: bool,
    /// Segment time of the lookup.
    checked_ns: u64,
}

impl Cached {
    fn fresh_for(&self, segment: &TcpSegment) -> bool {
        let age = segment.ts_ns.saturating_sub(self.checked_ns);
        let opening = segment.has(tcp_flags::SYN) && !segment.has(tcp_flags::ACK);
        if !self.tracked {
            age < RECHECK_UNTRACKED_NS
        } else {
            !opening || age < RECHECK_AFTER_NS
        }
    }
}

/// Counters of the NAT stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatCounters {
    /// Netlink requests to conntrack.
    pub lookups: u64,
    /// Requests for a connection conntrack did not know (untracked, or already gone).
    pub not_tracked: u64,
    /// Requests that failed; after the first one on a host without conntrack the stage is off.
    pub lookup_errors: u64,
    /// Connections found translated (each counted once per lookup that found it).
    pub translated: u64,
    /// Segments renamed to their connection's original tuple.
    pub segments_renamed: u64,
    /// Cache entries dropped for room (their connections are looked up again if still active).
    pub cache_evicted: u64,
}

/// Settings of the NAT stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatConfig {
    /// Address pairs remembered at most.
    pub cache_entries: usize,
    /// The watched ports: a connection to one of them on an address of this host is served
    /// here, and its segments are not looked up (see [`NatTable::resolve`]).
    /// Live, the set the port policy keeps in step with the kernel (see [`ServerPorts`]).
    pub server_ports: ServerPorts,
    /// Every port is watched (`--all-ports`): every port of this host's addresses counts.
    pub all_ports: bool,
}

impl Default for NatConfig {
    fn default() -> Self {
        Self {
            cache_entries: 65_536,
            server_ports: ServerPorts::default(),
            all_ports: false,
        }
    }
}

/// A new connection on an address pair looked up less than this long ago reuses the answer
/// (both copies of a SYN arrive within microseconds); older ones ask again, since the client's
/// port may have been reused for a different connection.
const RECHECK_AFTER_NS: u64 = 1_000_000_000;

/// How long "conntrack does not know this pair" is believed.
const RECHECK_UNTRACKED_NS: u64 = 100_000_000;

/// The NAT stage: conntrack lookups with a bounded cache in front.
pub struct NatTable {
    conntrack: Option<Conntrack>,
    config: NatConfig,
    /// This network namespace's addresses, sorted.
    host_addresses: Vec<IpAddr>,
    cache: LruCache<Pair, Cached>,
    pub counters: NatCounters,
}

impl NatTable {
    /// A table asking `conntrack`; None disables the stage (every segment passes unchanged).
    pub fn new(conntrack: Option<Conntrack>, config: NatConfig) -> Self {
        let capacity = NonZeroUsize::new(config.cache_entries).unwrap_or(NonZeroUsize::MIN);
        Self {
            conntrack,
            config,
            host_addresses: Vec::new(),
            cache: LruCache::new(capacity),
            counters: NatCounters::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.conntrack.is_some()
    }

    /// Sets this network namespace's own addresses (the daemon reads them every few seconds).
    pub fn set_host_addresses(&mut self, mut addresses: Vec<IpAddr>) {
        addresses.sort_unstable();
        addresses.dedup();
        self.host_addresses = addresses;
    }

    fn is_server_port(&self, port: u16) -> bool {
        self.config.all_ports || self.config.server_ports.contains(port)
    }

    /// A watched port on one of this host's addresses: a server of this host.
    fn served_here(&self, end: SocketAddr) -> bool {
        self.is_server_port(end.port())
            && self
                .host_addresses
                .binary_search(&end.ip().to_canonical())
                .is_ok()
    }

    /// Renames `segment` to its connection's original tuple if conntrack says it was translated.
    ///
    /// Segments of a connection to a server of this host (a watched port on one of its
    /// addresses) are not looked up: they already carry the tuple the client addressed (a
    /// published port's requests before DNAT), and a host serving its own API pays nothing.
    /// What is looked up is traffic the host forwards (to and from containers, after DNAT) and
    /// connections it opens (whose copies after source NAT leave from its address).
    pub fn resolve(&mut self, segment: &mut TcpSegment) {
        if self.conntrack.is_none()
            || self.served_here(segment.dst)
            || self.served_here(segment.src)
        {
            return;
        }
        let pair = Pair::of(segment.src, segment.dst);
        let cached = self
            .cache
            .get(&pair)
            .filter(|c| c.fresh_for(segment))
            .copied();
        let translation = match cached {
            Some(c) => c.translation,
            None => self.look_up(segment),
        };
        if let Some(translation) = translation {
            translation.apply(segment);
            self.counters.segments_renamed += 1;
        }
    }

    fn look_up(&mut self, segment: &TcpSegment) -> Option<Translation> {
        self.counters.lookups += 1;
        // Conntrack files an entry under its reply tuple (server -> client, as translated):
        // asking with the server-to-client orientation first finds it in one request both for a
        // translated connection's copies after NAT and for an untranslated connection.
        let syn = segment.has(tcp_flags::SYN);
        let ack = segment.has(tcp_flags::ACK);
        let towards_server = if syn {
            !ack
        } else {
            self.config.server_ports.contains(segment.dst.port())
                && !self.config.server_ports.contains(segment.src.port())
        };
        let (src, dst) = if towards_server {
            (segment.dst, segment.src)
        } else {
            (segment.src, segment.dst)
        };
        let conntrack = self.conntrack.as_mut()?;
        let entry = match conntrack.lookup(src, dst) {
            Ok(entry) => entry,
            Err(e) => {
                self.counters.lookup_errors += 1;
                let transient = matches!(&e, NatError::Request(io)
                    if matches!(io.raw_os_error(), Some(libc::EINTR | libc::ENOBUFS | libc::EAGAIN)));
                if matches!(e, NatError::Request(_)) && !transient {
                    let reason = std::error::Error::source(&e).map(ToString::to_string);
                    log::warn!(
                        "{e} failed ({}): conntrack is not available, connections through NAT \
                         are seen before and after translation",
                        reason.unwrap_or_default()
                    );
                    self.conntrack = None;
                }
                return None;
            }
        };
        let Some(entry) = entry else {
            self.counters.not_tracked += 1;
            self.cache.push(
                Pair::of(segment.src, segment.dst),
                Cached {
                    translation: None,
                    tracked: false,
                    checked_ns: segment.ts_ns,
                },
            );
            return None;
        };
        let translation = Translation::of(entry);
        let cached = Cached {
            translation,
            tracked: true,
            checked_ns: segment.ts_ns,
        };
        let mut pairs = vec![Pair::of(entry.original.0, entry.original.1)];
        if let Some(t) = translation {
            self.counters.translated += 1;
            pairs.push(Pair::of(t.upstream, t.upstream_peer));
        }
        for pair in pairs {
            if let Some((old, _)) = self.cache.push(pair, cached)
                && old != pair
            {
                self.counters.cache_evicted += 1;
            }
        }
        translation
    }

    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        vec![
            ("enabled", u64::from(self.enabled())),
            ("cached", self.cache.len() as u64),
            ("lookups", c.lookups),
            ("not_tracked", c.not_tracked),
            ("lookup_errors", c.lookup_errors),
            ("translated", c.translated),
            ("segments_renamed", c.segments_renamed),
            ("cache_evicted", c.cache_evicted),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn segment(src: &str, dst: &str) -> TcpSegment {
        TcpSegment {
            ts_ns: 0,
            src: addr(src),
            dst: addr(dst),
            seq: 1,
            ack: 0,
            flags: tcp_flags::ACK,
            payload: b"x".to_vec(),
            missing: 0,
            skipped: false,
            upstream: None,
            tls: false,
        }
    }

    const CLIENT: &str = "192.0.2.2:40000";
    const PUBLISHED: &str = "192.0.2.1:8080";
    const CONTAINER: &str = "172.30.0.2:80";

    fn dnat() -> Translation {
        Translation::of(CtEntry {
            original: (addr(CLIENT), addr(PUBLISHED)),
            reply: (addr(CONTAINER), addr(CLIENT)),
        })
        .unwrap()
    }

    #[test]
    fn every_copy_of_a_dnat_connection_gets_the_original_tuple() {
        let t = dnat();
        for (src, dst, to_server) in [
            (CLIENT, PUBLISHED, true),
            (PUBLISHED, CLIENT, false),
            (CLIENT, CONTAINER, true),
            (CONTAINER, CLIENT, false),
        ] {
            let mut s = segment(src, dst);
            t.apply(&mut s);
            let expected = if to_server {
                (addr(CLIENT), addr(PUBLISHED))
            } else {
                (addr(PUBLISHED), addr(CLIENT))
            };
            assert_eq!((s.src, s.dst), expected, "{src} -> {dst}");
            assert_eq!(s.upstream, Some(addr(CONTAINER)));
        }
    }

    #[test]
    fn source_nat_only_keeps_the_server_and_names_no_upstream() {
        let t = Translation::of(CtEntry {
            original: (addr("172.30.0.2:50000"), addr("198.51.100.7:80")),
            reply: (addr("198.51.100.7:80"), addr("192.0.2.1:61000")),
        })
        .unwrap();
        let mut s = segment("192.0.2.1:61000", "198.51.100.7:80");
        t.apply(&mut s);
        assert_eq!(s.src, addr("172.30.0.2:50000"));
        assert_eq!(s.upstream, None);
    }

    #[test]
    fn an_untranslated_entry_is_no_translation() {
        assert_eq!(
            Translation::of(CtEntry {
                original: (addr(CLIENT), addr(PUBLISHED)),
                reply: (addr(PUBLISHED), addr(CLIENT)),
            }),
            None
        );
    }

    #[test]
    fn without_conntrack_segments_pass_unchanged() {
        let mut table = NatTable::new(None, NatConfig::default());
        let mut s = segment(CLIENT, CONTAINER);
        let before = s.clone();
        table.resolve(&mut s);
        assert_eq!(s, before);
        assert_eq!(table.counters.lookups, 0);
    }

    #[test]
    fn a_port_added_to_the_shared_set_is_served_here_at_once() {
        let ports = ServerPorts::new(&[80]);
        let mut table = NatTable::new(
            None,
            NatConfig {
                server_ports: ports.clone(),
                ..NatConfig::default()
            },
        );
        table.set_host_addresses(vec![addr(PUBLISHED).ip()]);
        let published = addr(PUBLISHED);
        assert!(!table.served_here(published), "{published} not watched yet");
        // What a reload adding the published port does, through the port policy.
        ports.insert(published.port());
        assert!(table.served_here(published));
        ports.remove(published.port());
        assert!(!table.served_here(published), "removed again");
    }

    #[test]
    fn servers_of_this_host_are_not_looked_up() {
        let mut table = NatTable::new(None, NatConfig::default());
        table.set_host_addresses(vec![addr(PUBLISHED).ip()]);
        assert!(table.served_here(addr(PUBLISHED)));
        assert!(
            !table.served_here(addr("192.0.2.1:40000")),
            "not a watched port"
        );
        assert!(
            !table.served_here(addr(CONTAINER)),
            "not an address of this host"
        );
    }
}
