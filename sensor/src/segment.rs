//! The unit every capture source delivers to reassembly: one TCP segment (or one chunk of one),
//! with a wall-clock timestamp. The live eBPF path and capture-file import both produce these,
//! so everything after this point runs the same code for both.

use std::net::SocketAddr;

use sensor_ebpf::tcp_flags;

use crate::capture::{Clock, Segment, tls::Plaintext};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSegment {
    /// Nanoseconds since the Unix epoch, UTC.
    pub ts_ns: u64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Sequence number of `payload[0]`.
    pub seq: u32,
    pub ack: u32,
    /// TCP flags (`sensor_ebpf::tcp_flags`).
    pub flags: u8,
    pub payload: Vec<u8>,
    /// Payload bytes that followed `payload` in this segment on the wire but were not captured
    /// (eBPF snaplen, pcap snaplen). Reassembly turns them into a gap.
    pub missing: u32,
    /// The `missing` bytes were left out on the decoder's request (a long body past the cap):
    /// known, not lost. Reassembly passes them on as skipped instead of a gap.
    pub skipped: bool,
    /// Where NAT sent the connection (the container behind a published port), when `src` and
    /// `dst` were renamed to what the client addressed (see [`crate::nat`]).
    pub upstream: Option<SocketAddr>,
    /// TLS plaintext read from the TLS library (not the wire): its exchanges say `tls: true`.
    pub tls: bool,
}

impl TcpSegment {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Sequence space the segment occupies: payload, uncaptured bytes, and one each for SYN and FIN.
    pub fn seq_len(&self) -> u32 {
        let mut len = self.payload.len() as u32 + self.missing;
        if self.has(tcp_flags::SYN) {
            len += 1;
        }
        if self.has(tcp_flags::FIN) {
            len += 1;
        }
        len
    }

    /// Converts a ring-buffer event. For a truncated segment the bytes between this chunk's end
    /// and the segment's end count as missing on the last chunk.
    pub fn from_capture(segment: Segment, clock: &Clock) -> Self {
        let ts_ns = clock
            .wall(segment.mono_ns)
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let end = segment
            .chunk_offset
            .saturating_add(segment.payload.len() as u32);
        let missing = if segment.skipped || (segment.truncated && !segment.more_chunks) {
            segment.segment_len.saturating_sub(end)
        } else {
            0
        };
        Self {
            ts_ns,
            src: segment.src,
            dst: segment.dst,
            seq: segment.seq,
            ack: segment.ack,
            flags: segment.tcp_flags,
            payload: segment.payload,
            missing,
            skipped: segment.skipped,
            upstream: None,
            tls: false,
        }
    }

    /// Converts a piece of TLS plaintext (already numbered like a TCP stream).
    pub fn from_tls(piece: Plaintext, clock: &Clock) -> Self {
        let ts_ns = clock
            .wall(piece.mono_ns)
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Self {
            ts_ns,
            src: piece.src,
            dst: piece.dst,
            seq: piece.seq,
            ack: piece.ack,
            flags: piece.flags,
            payload: piece.payload,
            missing: piece.missing,
            skipped: false,
            upstream: None,
            tls: true,
        }
    }
}
