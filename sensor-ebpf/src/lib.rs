//! Types shared between the eBPF capture programs (`src/main.rs`, built for the bpf target) and
//! user space (built for the host with the `user` feature).
//!
//! Everything here is `#[repr(C)]` and plain old data: the kernel writes these bytes and user
//! space reads them back, so the layout is the contract. Sizes are asserted at compile time.
#![no_std]

/// Payload bytes carried by one ring-buffer event at most.
///
/// A segment whose payload is larger (GSO super-segments on egress reach 64 KiB) is emitted as
/// several events, each with its `chunk_offset`. The staging buffer for one event lives in a
/// per-CPU array whose values the kernel limits to 32 KiB, so header + chunk must stay below that.
pub const MAX_CHUNK: usize = 16 * 1024;

/// Chunks emitted for one segment at most; bounds the program's loop for the verifier.
pub const MAX_CHUNKS_PER_SEGMENT: u32 = 8;

/// Largest per-segment capture cap user space may set (`MAX_CHUNK * MAX_CHUNKS_PER_SEGMENT`).
pub const MAX_SNAPLEN: u32 = MAX_CHUNK as u32 * MAX_CHUNKS_PER_SEGMENT;

/// Default per-segment capture cap: a whole 64 KiB GSO segment, so nothing is truncated on a
/// stock host. Lower it to trade completeness for ring-buffer space.
pub const DEFAULT_SNAPLEN: u32 = 64 * 1024;

/// Default ring-buffer size in bytes (a power-of-two multiple of the page size, as the kernel requires).
pub const DEFAULT_RING_BYTES: u32 = 16 * 1024 * 1024;

/// Default fill level (bytes waiting in the ring) at which the program forces a reader wakeup.
/// Below it, events are submitted without a wakeup and the reader drains on a timer.
pub const DEFAULT_WAKEUP_BYTES: u32 = 256 * 1024;

/// Number of ports the watched-ports array covers (all of them: index = port).
pub const PORT_SLOTS: u32 = 65536;

/// Values of a `PORTS` slot.
pub mod port {
    /// Not watched.
    pub const OFF: u8 = 0;
    /// Watched: its segments go to the ring.
    pub const WATCHED: u8 = 1;
    /// Found to carry something other than HTTP: its segments are counted
    /// (`muted_segments`, `muted_bytes`) but not sent to user space.
    pub const MUTED: u8 = 2;
    /// A TLS port: its ciphertext is counted (`tls_segments`, `tls_bytes`) but not sent to user
    /// space; the plaintext comes from the uprobes on the TLS library (see [`super::tls`]).
    pub const TLS: u8 = 3;
}

/// Names of the maps and programs in the object, used by user space to find them.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const CONFIG: &str = "CONFIG";
    pub const PORTS: &str = "PORTS";
    pub const IFACES: &str = "IFACES";
    pub const SKIP: &str = "SKIP";
    pub const TC_INGRESS: &str = "apis_tc_ingress";
    pub const TC_EGRESS: &str = "apis_tc_egress";
    pub const SOCKET: &str = "apis_socket";
    pub const TLS_EVENTS: &str = "TLS_EVENTS";
    pub const TLS_COUNTERS: &str = "TLS_COUNTERS";
    pub const TLS_CONFIG: &str = "TLS_CONFIG";
    pub const TLS_PIDS: &str = "TLS_PIDS";
    pub const TLS_ENTRY: &str = "apis_tls_entry";
    pub const TLS_RETURN: &str = "apis_tls_return";
    pub const TLS_FREE: &str = "apis_tls_free";
}

/// Capture settings written by user space into the one-entry `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Payload bytes captured per segment at most (<= [`MAX_SNAPLEN`]); the rest is counted as truncated.
    pub snaplen: u32,
    /// Bit set of `CONFIG_*` flags.
    pub flags: u32,
    /// Ring fill level in bytes at which a wakeup is forced (0: wake up on every event).
    pub wakeup_bytes: u32,
    pub _reserved: u32,
}

/// Capture every TCP port instead of the ports in the `PORTS` map.
pub const CONFIG_ALL_PORTS: u32 = 1;
/// Set by user space once configuration is complete; until then the programs capture nothing.
pub const CONFIG_ENABLED: u32 = 2;

/// Per-interface settings in the `IFACES` map (value bits), keyed by ifindex.
pub mod iface {
    /// Low byte: bytes before the IP header (14 for Ethernet and loopback, 0 for L3 devices).
    pub const L2_LEN_MASK: u32 = 0xff;
    /// Skip egress packets: on `lo` every segment passes both directions, keep one copy.
    pub const IGNORE_EGRESS: u32 = 0x100;
    /// Skip ingress packets: on a bridge whose ports are captured too, a packet from a port
    /// reaches the bridge's ingress after the port's; keep the port's copy.
    pub const IGNORE_INGRESS: u32 = 0x200;
    /// What an interface missing from the map is taken to be.
    pub const L2_ETHERNET: u32 = 14;
}

/// Direction of a segment as seen on the interface it was captured on.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress = 0,
    Egress = 1,
}

impl Direction {
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::Ingress),
            1 => Some(Self::Egress),
            _ => None,
        }
    }
}

/// TCP header flag bits as they appear in the header's 13th byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// Flags the program sets on an event, beside the TCP flags.
pub mod event_flags {
    /// Payload past `snaplen` was not captured: user space must treat the missing bytes as a gap.
    pub const TRUNCATED: u8 = 0x01;
    /// More chunks of the same segment follow in later events.
    pub const MORE_CHUNKS: u8 = 0x02;
    /// The segment lies wholly inside a range user space asked to skip (`SKIP`): no payload
    /// follows, `segment_len` says how many bytes the wire carried. They are known, not lost.
    pub const SKIPPED: u8 = 0x04;
}

/// Body skipping (`SKIP` map). Once the decoder has kept all it keeps of a message body (the
/// body cap) and knows from its Content-Length how many bytes are left, it asks the kernel to
/// send only headers for the segments that carry nothing else: large downloads and uploads
/// never cross the ring.
pub mod skip {
    /// Flows with a skip range at most (LRU: the least recently used one goes first).
    pub const MAX_FLOWS: u32 = 16 * 1024;
    /// Segments with less payload are not looked up: the lookup would cost more than their copy,
    /// and the short exchanges that make up most API traffic never pay for it. Full-size
    /// Ethernet segments (1448 bytes) and GSO/GRO segments are larger.
    pub const MIN_SEGMENT: u32 = 1024;
}

/// One direction of a connection as the TC programs see it on the wire (`SKIP` key).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SkipKey {
    /// Addresses as in [`SegmentHeader`] (IPv4 in the first four bytes).
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// 4 or 6.
    pub family: u8,
    pub _pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<SkipKey>() == 40);

/// Sequence range `[from, until)` whose segments carry only body bytes user space will not read
/// (`SKIP` value). Compared with wrap-around: ranges are far below 2^31.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkipRange {
    pub from_seq: u32,
    pub until_seq: u32,
}

/// Header of every ring-buffer event; `captured_len` payload bytes follow it directly.
///
/// Addresses are 16 bytes: IPv4 addresses sit in the first four bytes (family 4), IPv6 fill all
/// sixteen (family 6). Ports, seq and ack are in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentHeader {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the program ran.
    pub ts_ns: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// Sequence number of the first payload byte of this event (segment seq + `chunk_offset`).
    pub seq: u32,
    pub ack: u32,
    pub ifindex: u32,
    /// TCP payload length of the whole segment, as it was on the wire (or in the GSO super-packet).
    pub segment_len: u32,
    /// Offset of this event's payload within the segment's payload.
    pub chunk_offset: u32,
    /// Payload bytes that follow this header.
    pub captured_len: u32,
    /// 4 or 6.
    pub family: u8,
    /// A [`Direction`] value.
    pub direction: u8,
    /// TCP flags (`tcp_flags`): SYN only on the first chunk, FIN and RST only on the last.
    pub tcp_flags: u8,
    /// `event_flags` bits.
    pub event_flags: u8,
}

/// Bytes of [`SegmentHeader`]; kept a multiple of 8 so payloads start aligned.
pub const HEADER_LEN: usize = core::mem::size_of::<SegmentHeader>();
const _: () = assert!(HEADER_LEN == 72);
const _: () = assert!(HEADER_LEN.is_multiple_of(8));
const _: () = assert!(HEADER_LEN + MAX_CHUNK <= 32 * 1024);

/// Staging buffer for one event, one per CPU (the eBPF stack is only 512 bytes).
#[repr(C)]
pub struct EventBuf {
    pub header: SegmentHeader,
    pub payload: [u8; MAX_CHUNK],
}

/// Indexes of the per-CPU counters in the `COUNTERS` map. Every place the program gives up on a
/// packet or on bytes has its own counter, so loss is always explained.
pub mod counter {
    /// Packets the program ran on.
    pub const PACKETS: u32 = 0;
    /// TCP segments of watched ports (before the pure-ACK filter).
    pub const TCP_SEGMENTS: u32 = 1;
    /// Events the program tried to submit (one per chunk).
    pub const EVENTS_TRIED: u32 = 2;
    /// Events that reached the ring.
    pub const EVENTS_SUBMITTED: u32 = 3;
    /// Events lost because the ring was full.
    pub const RING_FULL: u32 = 4;
    /// Payload bytes placed in the ring.
    pub const BYTES_SUBMITTED: u32 = 5;
    /// Segments with more payload than `snaplen`.
    pub const SEGMENTS_TRUNCATED: u32 = 6;
    /// Payload bytes not captured because of `snaplen`.
    pub const BYTES_TRUNCATED: u32 = 7;
    /// `bpf_skb_load_bytes` failures (short or malformed packets).
    pub const LOAD_ERRORS: u32 = 8;
    /// IP fragments, skipped: they carry no complete TCP header.
    pub const IP_FRAGMENTS: u32 = 9;
    /// IPv6 packets whose extension-header chain was too long or unsupported.
    pub const IPV6_EXT_UNSUPPORTED: u32 = 10;
    /// Pure ACKs and other segments of watched flows without payload or SYN/FIN/RST.
    pub const PURE_ACKS: u32 = 11;
    /// Packets not captured on a hook because another captured hook sees the same packet (a
    /// bridge and its ports, loopback egress in socket mode).
    pub const COPIES_SKIPPED: u32 = 12;
    /// Segments of muted ports (not HTTP), counted and not sent to user space.
    pub const MUTED_SEGMENTS: u32 = 13;
    /// Their TCP payload bytes.
    pub const MUTED_BYTES: u32 = 14;
    /// Payload bytes of the events lost because the ring was full (`RING_FULL`).
    pub const RING_FULL_BYTES: u32 = 15;
    /// Segments of TLS ports (`port::TLS`): ciphertext, counted and not sent to user space.
    pub const TLS_SEGMENTS: u32 = 16;
    /// Their TCP payload bytes.
    pub const TLS_BYTES: u32 = 17;
    /// Segments inside a body user space asked to skip (`SKIP`): sent as header-only events.
    pub const SKIPPED_SEGMENTS: u32 = 18;
    /// Their TCP payload bytes, which never crossed the ring.
    pub const SKIPPED_BYTES: u32 = 19;
    pub const COUNT: u32 = 20;

    /// Stable names, in index order, as `apisessions stats` shows them.
    pub const NAMES: [&str; COUNT as usize] = [
        "packets",
        "tcp_segments",
        "events_tried",
        "events_submitted",
        "ring_full",
        "bytes_submitted",
        "segments_truncated",
        "bytes_truncated",
        "load_errors",
        "ip_fragments",
        "ipv6_ext_unsupported",
        "pure_acks",
        "copies_skipped",
        "muted_segments",
        "muted_bytes",
        "ring_full_bytes",
        "tls_segments",
        "tls_bytes",
        "skipped_segments",
        "skipped_bytes",
    ];
}

/// TLS plaintext from uprobes on the TLS library (OpenSSL 3): shared types and constants.
///
/// An entry probe on the library's read or write function saves the call's arguments per
/// thread; the return probe reads as many plaintext bytes as the call moved and emits them as
/// one or more [`TlsEvent`]s in `TLS_EVENTS`. A probe on `SSL_free` emits an end event, so a
/// reused `SSL*` starts a new stream.
pub mod tls {
    /// Chunks emitted for one call at most (`MAX_CHUNK` bytes each): 256 KiB per call. Bytes past
    /// them are counted (`bytes_truncated`) and the event says how many were left out, so the
    /// stream gets a gap instead of silently shorter data.
    pub const MAX_CHUNKS_PER_CALL: u32 = 16;
    /// Default size of the TLS ring buffer.
    pub const DEFAULT_RING_BYTES: u32 = 8 * 1024 * 1024;
    /// Calls in flight (entered, not yet returned) tracked at most, over all threads.
    pub const MAX_PENDING: u32 = 16 * 1024;
    /// Processes whose calls are captured at most (the servers on the TLS ports).
    pub const MAX_PIDS: u32 = 4096;

    /// What the kernel decided of a connection (`TLS_KNOWN` values, by (tgid, `SSL*`)).
    pub mod verdict {
        /// Not seen yet (no entry).
        pub const UNDECIDED: u8 = 0;
        /// Its calls are captured: a process in `TLS_PIDS`, or a socket on a TLS port.
        pub const CAPTURED: u8 = 1;
        /// Its calls are not (a client on this host, another port): the next ones stop at the
        /// first lookup.
        pub const SKIPPED: u8 = 2;
    }

    /// `TlsEvent::kind`.
    pub const KIND_DATA: u8 = 0;
    /// The SSL object was freed: its streams end.
    pub const KIND_FREE: u8 = 1;

    /// `TlsEvent::direction`: what the process read (from its peer) or wrote (to its peer).
    pub const READ: u8 = 0;
    pub const WRITE: u8 = 1;

    /// `TlsEvent::flags`.
    pub mod flags {
        /// More chunks of the same call follow.
        pub const MORE_CHUNKS: u8 = 0x01;
    }

    /// Attach cookie bits: which argument convention the probed function has.
    pub mod cookie {
        /// Direction bit: set for write functions.
        pub const WRITE: u64 = 1;
        /// `ssl_read_internal`/`ssl_write_internal`(ssl, buf, size_t num, size_t *done): they
        /// return 1 on success and the byte count sits in `*done`. Without this bit the
        /// function is `SSL_read`/`SSL_write`(ssl, buf, int num) returning the byte count.
        pub const INTERNAL: u64 = 2;
    }

    /// Where the socket's fd sits, written by user space (OpenSSL 3.0's layout by default):
    /// `ssl->rbio`, `bio->method`, `method->type` (a socket BIO is `BIO_TYPE_SOCKET`),
    /// `bio->num` (the fd); and, when the kernel's BTF gave them (flag `KERNEL_SOCKETS`), the
    /// kernel offsets ([`koff`]) that lead from the current task and the fd to the socket's
    /// addresses, so a connection is known even when it closes before user space looks.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct TlsConfig {
        pub rbio_offset: u32,
        pub bio_method_offset: u32,
        pub bio_num_offset: u32,
        /// `CONFIG_ENABLED` once user space has set everything up; `KERNEL_SOCKETS`,
        /// `PORT_FILTER`.
        pub flags: u32,
        /// Byte offsets of kernel struct members, indexed by [`koff`].
        pub kernel: [u32; koff::COUNT],
        /// With `PORT_FILTER`: only sockets in this network namespace (inode number; 0: any).
        pub netns: u32,
        pub _pad: u32,
    }

    /// `TlsConfig::flags`: the kernel offsets are valid.
    pub const KERNEL_SOCKETS: u32 = 4;
    /// `TlsConfig::flags` (with `KERNEL_SOCKETS`): a connection is also captured when its
    /// socket's local port is a TLS port in `PORTS` (and it lives in `TlsConfig::netns`), in
    /// any process. The kernel then needs no process list, which user space can only keep while
    /// it may read every process's fds; a daemon that dropped root cannot.
    pub const PORT_FILTER: u32 = 8;

    /// Indexes of `TlsConfig::kernel`: the path task -> files -> fdtable -> file -> socket ->
    /// sock_common (addresses, ports, family) -> net -> ns.inum.
    pub mod koff {
        pub const TASK_FILES: usize = 0;
        pub const FILES_FDT: usize = 1;
        pub const FDT_MAX_FDS: usize = 2;
        pub const FDT_FD: usize = 3;
        pub const FILE_PRIVATE_DATA: usize = 4;
        pub const SOCKET_SK: usize = 5;
        pub const SKC_FAMILY: usize = 6;
        /// Local port, host order.
        pub const SKC_NUM: usize = 7;
        /// Remote port, network order.
        pub const SKC_DPORT: usize = 8;
        pub const SKC_DADDR: usize = 9;
        pub const SKC_RCV_SADDR: usize = 10;
        pub const SKC_V6_DADDR: usize = 11;
        pub const SKC_V6_RCV_SADDR: usize = 12;
        pub const SKC_NET: usize = 13;
        /// `net.ns.inum` (both offsets added).
        pub const NET_NS_INUM: usize = 14;
        pub const COUNT: usize = 16;
    }

    /// `BIO_TYPE_SOCKET` (`5 | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR`).
    pub const BIO_TYPE_SOCKET: i32 = 0x0505;

    /// A call between its entry and its return (per thread).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct PendingCall {
        pub ssl: u64,
        pub buf: u64,
        /// Where the internal functions store the byte count (0 for the exported ones).
        pub done: u64,
        pub cookie: u64,
    }

    /// Header of every TLS ring event; `captured_len` plaintext bytes follow it.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct TlsEvent {
        pub ts_ns: u64,
        /// The `SSL*` (with `pid`, the connection's identity while it lives).
        pub ssl: u64,
        pub pid: u32,
        pub tid: u32,
        /// Bytes the call moved in all.
        pub call_len: u32,
        /// Offset of this event's bytes within the call's.
        pub chunk_offset: u32,
        pub captured_len: u32,
        /// The socket's fd from the SSL's read BIO, -1 when it is not a socket BIO.
        pub fd: i32,
        /// The socket's own (server) and peer (client) addresses, read in the kernel on a
        /// connection's first event (`family` 0: not read). IPv4 in the first four bytes.
        pub local_addr: [u8; 16],
        pub remote_addr: [u8; 16],
        /// The socket's network namespace (inode number).
        pub netns: u32,
        pub local_port: u16,
        pub remote_port: u16,
        pub kind: u8,
        pub direction: u8,
        pub flags: u8,
        /// 2 (AF_INET), 10 (AF_INET6), or 0 when the addresses were not read.
        pub family: u8,
        pub _pad: [u8; 4],
    }

    pub const TLS_HEADER_LEN: usize = core::mem::size_of::<TlsEvent>();
    const _: () = assert!(TLS_HEADER_LEN == 88);
    const _: () = assert!(TLS_HEADER_LEN + super::MAX_CHUNK <= 32 * 1024);

    /// Staging buffer for one TLS event, one per CPU.
    #[repr(C)]
    pub struct TlsEventBuf {
        pub header: TlsEvent,
        pub payload: [u8; super::MAX_CHUNK],
    }

    /// Indexes of the per-CPU counters in `TLS_COUNTERS`.
    pub mod counter {
        /// Read and write calls that returned data, in captured connections.
        pub const CALLS: u32 = 0;
        pub const EVENTS_SUBMITTED: u32 = 1;
        pub const BYTES_SUBMITTED: u32 = 2;
        /// Events lost because the TLS ring was full, and their bytes.
        pub const RING_FULL: u32 = 3;
        pub const RING_FULL_BYTES: u32 = 4;
        /// Bytes of calls larger than `MAX_CHUNKS_PER_CALL` chunks, not captured (a gap).
        pub const BYTES_TRUNCATED: u32 = 5;
        /// Plaintext that could not be read from the process (`bpf_probe_read_user` failed),
        /// calls and bytes: the stream gets a gap.
        pub const READ_ERRORS: u32 = 6;
        pub const READ_ERROR_BYTES: u32 = 7;
        /// Calls whose entry could not be tracked (the pending map was full): lost.
        pub const PENDING_FULL: u32 = 8;
        /// Returns without a tracked entry (probes attached mid-call): that call's data is lost.
        pub const MISSED_ENTRY: u32 = 9;
        /// `SSL_free` calls seen in captured processes.
        pub const FREES: u32 = 10;
        /// Calls that returned an error or nothing (no data).
        pub const EMPTY_CALLS: u32 = 11;
        /// Connections seen through the probes and not captured: their socket is not a server's
        /// on a TLS port (clients on this host), or could not be read.
        pub const CONNECTIONS_SKIPPED: u32 = 12;
        pub const COUNT: u32 = 13;

        pub const NAMES: [&str; COUNT as usize] = [
            "calls",
            "events_submitted",
            "bytes_submitted",
            "ring_full",
            "ring_full_bytes",
            "bytes_truncated",
            "read_errors",
            "read_error_bytes",
            "pending_full",
            "missed_entry",
            "frees",
            "empty_calls",
            "connections_skipped",
        ];
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` data without padding-dependent invariants; any bit pattern is valid.
    unsafe impl aya::Pod for super::CaptureConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::tls::TlsConfig {}
    // SAFETY: as above (the key's padding is an explicit, zeroed field).
    unsafe impl aya::Pod for super::SkipKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SkipRange {}
}
