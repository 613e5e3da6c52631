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
}

/// Names of the maps and programs in the object, used by user space to find them.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const CONFIG: &str = "CONFIG";
    pub const PORTS: &str = "PORTS";
    pub const IFACES: &str = "IFACES";
    pub const TC_INGRESS: &str = "apis_tc_ingress";
    pub const TC_EGRESS: &str = "apis_tc_egress";
    pub const SOCKET: &str = "apis_socket";
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
    pub const COUNT: u32 = 16;

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
    ];
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` data without padding-dependent invariants; any bit pattern is valid.
    unsafe impl aya::Pod for super::CaptureConfig {}
}
