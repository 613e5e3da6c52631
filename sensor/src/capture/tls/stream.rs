//! TLS ring events into ordered plaintext segments per connection and direction.
//!
//! An event names its connection by (process, `SSL*`) and carries the socket's fd; the first
//! event of a connection looks the fd up in `/proc` (see [`super::procfs::connection`]) for the
//! client and server addresses, kept until `SSL_free` ends the connection (the pointer is then
//! reused for another one) or the fd changes. Each direction's bytes are numbered from 1, as a
//! TCP stream after its SYN, so reassembly and the HTTP decoder take them like any capture.

use std::{
    collections::HashSet,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    num::NonZeroUsize,
    sync::{Arc, Mutex, PoisonError},
};

use lru::LruCache;
use sensor_ebpf::{
    MAX_CHUNK, tcp_flags,
    tls::{self, TLS_HEADER_LEN, TlsEvent},
};

use super::procfs::Connection;

/// Connections followed at most; the least recently active one is ended to make room.
pub const MAX_CONNECTIONS: usize = 65_536;
/// (process, `SSL*`) whose lookup failed (with the fd), remembered so that their later events
/// do not read `/proc` again; forgotten when the SSL object is freed.
const MAX_UNRESOLVED: usize = 4096;

/// One decoded TLS ring event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsRecord {
    pub header: TlsEvent,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlsEventError {
    #[error("TLS event of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("TLS event announces {announced} bytes but carries {carried}")]
    LengthMismatch { announced: usize, carried: usize },
    #[error("TLS event of unknown kind {0} or direction {1}")]
    Kind(u8, u8),
}

/// Decodes one TLS ring record (untrusted bytes: errors, never panics).
pub fn decode(bytes: &[u8]) -> Result<TlsRecord, TlsEventError> {
    let header_bytes = bytes
        .get(..TLS_HEADER_LEN)
        .ok_or(TlsEventError::Short(bytes.len()))?;
    // SAFETY: exactly size_of::<TlsEvent>() bytes, plain integers (any bit pattern is valid),
    // read_unaligned has no alignment need.
    let header: TlsEvent =
        unsafe { std::ptr::read_unaligned(header_bytes.as_ptr().cast::<TlsEvent>()) };
    if header.kind > tls::KIND_FREE || header.direction > tls::WRITE {
        return Err(TlsEventError::Kind(header.kind, header.direction));
    }
    let rest = &bytes[TLS_HEADER_LEN..];
    let announced = header.captured_len as usize;
    let payload = rest.get(..announced).ok_or(TlsEventError::LengthMismatch {
        announced,
        carried: rest.len(),
    })?;
    Ok(TlsRecord {
        header,
        payload: payload.to_vec(),
    })
}

/// A piece of a TLS connection's plaintext, in TCP terms (see `TcpSegment::from_tls`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plaintext {
    pub mono_ns: u64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload: Vec<u8>,
    /// Bytes after `payload` that the call moved but the capture did not get.
    pub missing: u32,
    /// The server process's network namespace.
    pub netns: u64,
}

/// Counters of the user-space side, for `stats` (stage `tls`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamCounters {
    pub connections: u64,
    /// Of them, those whose addresses the kernel read (the rest were looked up in `/proc`).
    pub connections_kernel_addresses: u64,
    /// Of them, those open before their server's probes were attached (started mid-stream).
    pub connections_preexisting: u64,
    pub connections_ended: u64,
    /// Connections ended to stay within [`MAX_CONNECTIONS`].
    pub connections_evicted: u64,
    /// Connections whose fd changed without an `SSL_free` (the end was missed).
    pub fd_changed: u64,
    /// Events (and their bytes) of SSL objects without a socket fd (a client with its own BIO).
    pub no_socket_events: u64,
    pub no_socket_bytes: u64,
    /// Events (and bytes) whose socket could not be looked up (gone before it was looked up).
    pub unresolved_events: u64,
    pub unresolved_bytes: u64,
    /// Bytes the calls moved that the events did not carry (turned into stream gaps).
    pub gap_bytes: u64,
    pub frees_unknown: u64,
}

impl StreamCounters {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("connections", self.connections),
            (
                "connections_kernel_addresses",
                self.connections_kernel_addresses,
            ),
            ("connections_preexisting", self.connections_preexisting),
            ("connections_ended", self.connections_ended),
            ("connections_evicted", self.connections_evicted),
            ("fd_changed", self.fd_changed),
            ("no_socket_events", self.no_socket_events),
            ("no_socket_bytes", self.no_socket_bytes),
            ("unresolved_events", self.unresolved_events),
            ("unresolved_bytes", self.unresolved_bytes),
            ("gap_bytes", self.gap_bytes),
            ("frees_unknown", self.frees_unknown),
        ]
    }
}

struct Conn {
    id: Connection,
    fd: i32,
    /// Next sequence number, client-to-server and server-to-client.
    next: [u32; 2],
}

/// Looks up a socket fd of a process: `/proc` live, a table in tests.
pub type Resolver = Box<dyn FnMut(u32, i32) -> io::Result<Connection> + Send>;

/// Connections (client, server) that were open when their server's probes were attached: their
/// streams start mid-way (a call in flight then was not seen). Shared with the attaching side.
pub type Preexisting = Arc<Mutex<HashSet<(SocketAddr, SocketAddr)>>>;

/// Connections remembered as open before the probes at most.
pub const MAX_PREEXISTING: usize = 65_536;

pub struct TlsStreams {
    conns: LruCache<(u32, u64), Conn>,
    unresolved: LruCache<(u32, u64), i32>,
    resolve: Resolver,
    preexisting: Preexisting,
    pub counters: StreamCounters,
}

impl TlsStreams {
    pub fn new(resolve: Resolver, preexisting: Preexisting) -> Self {
        Self {
            conns: LruCache::new(NonZeroUsize::new(MAX_CONNECTIONS).unwrap_or(NonZeroUsize::MIN)),
            unresolved: LruCache::new(
                NonZeroUsize::new(MAX_UNRESOLVED).unwrap_or(NonZeroUsize::MIN),
            ),
            resolve,
            preexisting,
            counters: StreamCounters::default(),
        }
    }

    /// Takes one event; the plaintext segments it makes are appended to `out`.
    pub fn push(&mut self, record: TlsRecord, out: &mut Vec<Plaintext>) {
        let h = record.header;
        let key = (h.pid, h.ssl);
        if h.kind == tls::KIND_FREE {
            self.unresolved.pop(&key);
            match self.conns.pop(&key) {
                Some(conn) => {
                    self.counters.connections_ended += 1;
                    end(&conn, h.ts_ns, out);
                }
                None => self.counters.frees_unknown += 1,
            }
            return;
        }
        let bytes = u64::from(h.captured_len);
        if h.fd < 0 {
            self.counters.no_socket_events += 1;
            self.counters.no_socket_bytes += bytes;
            return;
        }
        if self.conns.peek(&key).is_some_and(|c| c.fd != h.fd) {
            // The end of the last connection on this SSL object went unseen.
            self.counters.fd_changed += 1;
            if let Some(conn) = self.conns.pop(&key) {
                end(&conn, h.ts_ns, out);
            }
        }
        if !self.conns.contains(&key) && !self.open(key, &h, out) {
            self.counters.unresolved_events += 1;
            self.counters.unresolved_bytes += bytes;
            return;
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        // Chunks before the last are full (`MAX_CHUNK`); the last ends where the call did.
        let chunk_end = if h.flags & tls::flags::MORE_CHUNKS != 0 {
            h.chunk_offset.saturating_add(MAX_CHUNK as u32)
        } else {
            h.call_len
        };
        let missing = chunk_end.saturating_sub(h.chunk_offset.saturating_add(h.captured_len));
        self.counters.gap_bytes += u64::from(missing);
        let from_client = h.direction == tls::READ;
        let index = usize::from(!from_client);
        let seq = conn.next[index];
        conn.next[index] = seq
            .wrapping_add(record.payload.len() as u32)
            .wrapping_add(missing);
        out.push(piece(
            &conn.id,
            from_client,
            h.ts_ns,
            seq,
            tcp_flags::PSH,
            record.payload,
            missing,
        ));
    }

    /// Looks the connection up (the addresses the kernel read on its first event, else `/proc`)
    /// and starts its streams. A connection opened after the probes were attached gets a
    /// handshake, so the decoder knows both directions from their start, whichever side speaks
    /// first (an HTTP/2 server sends its SETTINGS before it has read the client's preface); one
    /// that was open before starts mid-stream, as a capture that began in its middle.
    fn open(&mut self, key: (u32, u64), h: &TlsEvent, out: &mut Vec<Plaintext>) -> bool {
        if self.unresolved.get(&key) == Some(&h.fd) {
            return false;
        }
        let id = match kernel_connection(h) {
            Some(id) => {
                self.counters.connections_kernel_addresses += 1;
                id
            }
            None => match (self.resolve)(h.pid, h.fd) {
                Ok(id) => id,
                Err(e) => {
                    log::debug!("TLS connection of pid {} fd {}: {e}", h.pid, h.fd);
                    self.unresolved.put(key, h.fd);
                    return false;
                }
            },
        };
        self.unresolved.pop(&key);
        self.counters.connections += 1;
        let conn = Conn {
            id,
            fd: h.fd,
            next: [1, 1],
        };
        let before = self
            .preexisting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(id.client, id.server));
        if before {
            self.counters.connections_preexisting += 1;
        }
        if !before && h.chunk_offset == 0 {
            out.push(piece(&id, true, h.ts_ns, 0, tcp_flags::SYN, Vec::new(), 0));
            let mut syn_ack = piece(
                &id,
                false,
                h.ts_ns,
                0,
                tcp_flags::SYN | tcp_flags::ACK,
                Vec::new(),
                0,
            );
            syn_ack.ack = 1;
            out.push(syn_ack);
        }
        if let Some((_, evicted)) = self.conns.push(key, conn)
            && evicted.id != id
        {
            self.counters.connections_evicted += 1;
            end(&evicted, h.ts_ns, out);
        }
        true
    }

    /// Ends every connection (the capture stops).
    pub fn finish(&mut self, now_mono_ns: u64, out: &mut Vec<Plaintext>) {
        while let Some((_, conn)) = self.conns.pop_lru() {
            end(&conn, now_mono_ns, out);
        }
    }
}

/// The connection as the kernel read it from the socket, if it did.
fn kernel_connection(h: &TlsEvent) -> Option<Connection> {
    let ip = |bytes: [u8; 16]| match h.family {
        2 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        10 => {
            let v6 = Ipv6Addr::from(bytes);
            Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
        }
        _ => None,
    };
    Some(Connection {
        client: SocketAddr::new(ip(h.remote_addr)?, h.remote_port),
        server: SocketAddr::new(ip(h.local_addr)?, h.local_port),
        netns: u64::from(h.netns),
    })
}

fn piece(
    id: &Connection,
    from_client: bool,
    mono_ns: u64,
    seq: u32,
    flags: u8,
    payload: Vec<u8>,
    missing: u32,
) -> Plaintext {
    let (src, dst) = if from_client {
        (id.client, id.server)
    } else {
        (id.server, id.client)
    };
    Plaintext {
        mono_ns,
        src,
        dst,
        seq,
        ack: 0,
        flags,
        payload,
        missing,
        netns: id.netns,
    }
}

/// FIN from both sides: the flow ends and its last exchange is decoded.
fn end(conn: &Conn, mono_ns: u64, out: &mut Vec<Plaintext>) {
    for (from_client, seq) in [(true, conn.next[0]), (false, conn.next[1])] {
        out.push(piece(
            &conn.id,
            from_client,
            mono_ns,
            seq,
            tcp_flags::FIN,
            Vec::new(),
            0,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "127.0.0.1:40000";
    const SERVER: &str = "127.0.0.1:8443";

    fn streams() -> TlsStreams {
        streams_with(Preexisting::default())
    }

    fn streams_with(preexisting: Preexisting) -> TlsStreams {
        TlsStreams::new(
            Box::new(|pid, fd| {
                if pid == 7 && fd == 5 {
                    Ok(Connection {
                        client: CLIENT.parse().unwrap(),
                        server: SERVER.parse().unwrap(),
                        netns: 1,
                    })
                } else {
                    Err(io::Error::other("gone"))
                }
            }),
            preexisting,
        )
    }

    fn data(
        ssl: u64,
        fd: i32,
        direction: u8,
        call_len: u32,
        offset: u32,
        payload: &[u8],
        more: bool,
    ) -> TlsRecord {
        TlsRecord {
            header: TlsEvent {
                ts_ns: 1,
                ssl,
                pid: 7,
                tid: 7,
                call_len,
                chunk_offset: offset,
                captured_len: payload.len() as u32,
                fd,
                kind: tls::KIND_DATA,
                direction,
                flags: if more { tls::flags::MORE_CHUNKS } else { 0 },
                ..TlsEvent::default()
            },
            payload: payload.to_vec(),
        }
    }

    fn bytes(header: &TlsEvent, payload: &[u8]) -> Vec<u8> {
        // SAFETY: plain data, read as bytes.
        let raw = unsafe {
            std::slice::from_raw_parts((header as *const TlsEvent).cast::<u8>(), TLS_HEADER_LEN)
        };
        let mut v = raw.to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn a_connection_is_numbered_per_direction_and_ended_by_free() {
        let mut s = streams();
        let mut out = Vec::new();
        s.push(data(0xa, 5, tls::READ, 4, 0, b"GET ", false), &mut out);
        s.push(data(0xa, 5, tls::WRITE, 3, 0, b"HTT", false), &mut out);
        s.push(data(0xa, 5, tls::READ, 2, 0, b"/x", false), &mut out);
        let mut free = data(0xa, -1, tls::READ, 0, 0, b"", false);
        free.header.kind = tls::KIND_FREE;
        s.push(free, &mut out);
        let summary: Vec<(String, u32, u8, usize)> = out
            .iter()
            .map(|p| (p.src.to_string(), p.seq, p.flags, p.payload.len()))
            .collect();
        assert_eq!(
            summary,
            [
                (CLIENT.into(), 0, tcp_flags::SYN, 0),
                (SERVER.into(), 0, tcp_flags::SYN | tcp_flags::ACK, 0),
                (CLIENT.into(), 1, tcp_flags::PSH, 4),
                (SERVER.into(), 1, tcp_flags::PSH, 3),
                (CLIENT.into(), 5, tcp_flags::PSH, 2),
                (CLIENT.into(), 7, tcp_flags::FIN, 0),
                (SERVER.into(), 4, tcp_flags::FIN, 0),
            ]
        );
        assert_eq!(s.counters.connections, 1);
        assert_eq!(s.counters.connections_ended, 1);
    }

    #[test]
    fn uncaptured_bytes_become_missing_and_advance_the_stream() {
        let mut s = streams();
        let mut out = Vec::new();
        s.push(data(0xa, 5, tls::READ, 1, 0, b"G", false), &mut out);
        // A chunk that could not be read, then the call's last chunk cut short.
        let big = MAX_CHUNK as u32 * 2 + 10;
        s.push(data(0xa, 5, tls::WRITE, big, 0, b"", true), &mut out);
        s.push(
            data(0xa, 5, tls::WRITE, big, MAX_CHUNK as u32, b"abc", false),
            &mut out,
        );
        let writes: Vec<(u32, usize, u32)> = out
            .iter()
            .filter(|p| p.src.to_string() == SERVER && p.flags == tcp_flags::PSH)
            .map(|p| (p.seq, p.payload.len(), p.missing))
            .collect();
        assert_eq!(
            writes,
            [
                (1, 0, MAX_CHUNK as u32),
                (1 + MAX_CHUNK as u32, 3, MAX_CHUNK as u32 + 7)
            ]
        );
        assert_eq!(s.counters.gap_bytes, 2 * MAX_CHUNK as u64 + 7);
    }

    #[test]
    fn unresolved_and_socketless_events_are_counted_not_decoded() {
        let mut s = streams();
        let mut out = Vec::new();
        s.push(data(0xb, 9, tls::READ, 3, 0, b"GET", false), &mut out);
        s.push(data(0xb, 9, tls::READ, 3, 0, b"GET", false), &mut out);
        s.push(data(0xc, -1, tls::WRITE, 2, 0, b"ok", false), &mut out);
        assert!(out.is_empty());
        assert_eq!(s.counters.unresolved_events, 2);
        assert_eq!(s.counters.unresolved_bytes, 6);
        assert_eq!(s.counters.no_socket_events, 1);
    }

    #[test]
    fn the_kernels_addresses_win_over_proc() {
        let mut s = streams();
        let mut out = Vec::new();
        // fd 9 is unknown to /proc (closed already), but the kernel read the socket.
        let mut event = data(0xd, 9, tls::READ, 3, 0, b"GET", false);
        event.header.family = 2;
        event.header.local_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        event.header.remote_addr[..4].copy_from_slice(&[10, 0, 0, 2]);
        event.header.local_port = 443;
        event.header.remote_port = 50000;
        event.header.netns = 77;
        s.push(event, &mut out);
        let data = out.last().unwrap();
        assert_eq!(data.src, "10.0.0.2:50000".parse().unwrap());
        assert_eq!(data.dst, "10.0.0.1:443".parse().unwrap());
        assert_eq!(data.netns, 77);
        assert_eq!(s.counters.unresolved_events, 0);
    }

    #[test]
    fn a_freed_ssl_is_looked_up_again() {
        let mut s = streams();
        let mut out = Vec::new();
        s.push(data(0xb, 9, tls::READ, 3, 0, b"GET", false), &mut out);
        let mut free = data(0xb, -1, tls::READ, 0, 0, b"", false);
        free.header.kind = tls::KIND_FREE;
        s.push(free, &mut out);
        // The pointer and the fd number come back for a connection /proc knows.
        s.push(data(0xb, 5, tls::READ, 3, 0, b"GET", false), &mut out);
        assert_eq!(s.counters.unresolved_events, 1);
        assert_eq!(s.counters.connections, 1);
    }

    #[test]
    fn a_connection_open_before_the_probes_starts_mid_stream() {
        let preexisting = Preexisting::default();
        preexisting
            .lock()
            .unwrap()
            .insert((CLIENT.parse().unwrap(), SERVER.parse().unwrap()));
        let mut s = streams_with(preexisting.clone());
        let mut out = Vec::new();
        s.push(data(0xa, 5, tls::READ, 3, 0, b"GET", false), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].flags, tcp_flags::PSH);
        assert_eq!(s.counters.connections_preexisting, 1);
        // Remembered once: the next connection on the same addresses is a new one.
        assert!(preexisting.lock().unwrap().is_empty());
    }

    /// An HTTP/2 server writes its SETTINGS before it reads the client's preface: a new
    /// connection first seen writing still starts with its handshake.
    #[test]
    fn a_new_connection_first_seen_writing_starts_with_its_handshake() {
        let mut s = streams();
        let mut out = Vec::new();
        s.push(data(0xa, 5, tls::WRITE, 2, 0, b"ok", false), &mut out);
        let flags: Vec<u8> = out.iter().map(|p| p.flags).collect();
        assert_eq!(
            flags,
            [
                tcp_flags::SYN,
                tcp_flags::SYN | tcp_flags::ACK,
                tcp_flags::PSH
            ]
        );
        assert_eq!((out[2].src.to_string(), out[2].seq), (SERVER.into(), 1));
    }

    /// Arbitrary events (the kernel's bytes are input like any other): no panic, and every
    /// piece stays within the connection's numbering.
    #[test]
    fn random_events_never_panic() {
        let mut rng = crate::test_rng::Rng(0x7153);
        let mut s = streams();
        let mut out = Vec::new();
        for _ in 0..20_000 {
            let len = rng.below(40);
            let payload = rng.bytes(len);
            let ssl = [0xa, 0xb, u64::MAX][rng.below(3)];
            let fd = [5, -1, 9, i32::MIN][rng.below(4)];
            let direction = rng.below(2) as u8;
            let call_len = [0, 3, u32::MAX, MAX_CHUNK as u32 * 3][rng.below(4)];
            let offset = [0, MAX_CHUNK as u32, u32::MAX][rng.below(3)];
            let more = rng.below(2) == 0;
            let mut event = data(ssl, fd, direction, call_len, offset, &payload, more);
            event.header.kind = rng.below(2) as u8;
            event.header.family = [0, 2, 10, 7][rng.below(4)];
            event.header.remote_port = rng.next() as u16;
            s.push(event, &mut out);
            out.clear();
        }
        let mut end = Vec::new();
        s.finish(1, &mut end);
        assert!(end.iter().all(|p| p.flags == tcp_flags::FIN));
    }

    #[test]
    fn decode_checks_lengths_and_kinds() {
        let record = data(0xa, 5, tls::READ, 3, 0, b"abc", false);
        let raw = bytes(&record.header, b"abc");
        assert_eq!(decode(&raw), Ok(record.clone()));
        // Ring padding after the payload is ignored.
        let mut padded = raw.clone();
        padded.extend_from_slice(&[0; 5]);
        assert_eq!(decode(&padded), Ok(record.clone()));
        assert!(matches!(
            decode(&raw[..raw.len() - 1]),
            Err(TlsEventError::LengthMismatch { .. })
        ));
        assert!(matches!(decode(&raw[..10]), Err(TlsEventError::Short(10))));
        let mut bad = record.header;
        bad.kind = 9;
        assert!(matches!(
            decode(&bytes(&bad, b"abc")),
            Err(TlsEventError::Kind(9, _))
        ));
        for len in 0..raw.len() {
            let _ = decode(&raw[..len]);
        }
    }
}
