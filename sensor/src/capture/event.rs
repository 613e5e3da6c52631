//! Ring-buffer events decoded into owned [`Segment`]s.
//!
//! The bytes come from the kernel program, but they are still treated as untrusted input: a short
//! or inconsistent event is an error value (counted by the reader), never a panic.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sensor_ebpf::{Direction, HEADER_LEN, SegmentHeader, event_flags, tcp_flags};

/// One TCP segment (or one chunk of a large segment) of a watched flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Kernel monotonic timestamp (`bpf_ktime_get_ns`).
    pub mono_ns: u64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub direction: Direction,
    pub ifindex: u32,
    /// Sequence number of `payload[0]`.
    pub seq: u32,
    pub ack: u32,
    pub tcp_flags: u8,
    /// Payload length of the whole segment on the wire.
    pub segment_len: u32,
    /// Offset of `payload` within the segment's payload.
    pub chunk_offset: u32,
    /// The segment had more payload than the capture cap: bytes past this chunk's end up to
    /// `segment_len` are missing.
    pub truncated: bool,
    /// Further chunks of the same segment follow.
    pub more_chunks: bool,
    /// The whole payload (`segment_len` bytes) was left out on the decoder's request
    /// (`sensor_ebpf::skip`): none follows, none is lost.
    pub skipped: bool,
    pub payload: Vec<u8>,
}

impl Segment {
    pub fn has(&self, flag: u8) -> bool {
        self.tcp_flags & flag != 0
    }

    /// TCP flags in tcpdump's notation (`S`, `F`, `R`, `P`, `.` for ACK).
    pub fn flags_text(&self) -> String {
        let mut text = String::new();
        for (bit, letter) in [
            (tcp_flags::SYN, 'S'),
            (tcp_flags::FIN, 'F'),
            (tcp_flags::RST, 'R'),
            (tcp_flags::PSH, 'P'),
            (tcp_flags::URG, 'U'),
            (tcp_flags::ACK, '.'),
        ] {
            if self.has(bit) {
                text.push(letter);
            }
        }
        if text.is_empty() {
            text.push('-');
        }
        text
    }
}

/// Why an event could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("event of {0} bytes is shorter than its {HEADER_LEN}-byte header")]
    Short(usize),
    #[error("event announces {announced} payload bytes but carries {carried}")]
    LengthMismatch { announced: usize, carried: usize },
    #[error("unknown address family {0}")]
    Family(u8),
    #[error("unknown direction {0}")]
    Direction(u8),
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Segment, EventError> {
    let header_bytes = bytes
        .get(..HEADER_LEN)
        .ok_or(EventError::Short(bytes.len()))?;
    // SAFETY: `header_bytes` holds exactly size_of::<SegmentHeader>() bytes, the type is plain
    // integers and arrays (any bit pattern is valid), and read_unaligned has no alignment need.
    let header: SegmentHeader =
        unsafe { std::ptr::read_unaligned(header_bytes.as_ptr().cast::<SegmentHeader>()) };
    let payload = &bytes[HEADER_LEN..];
    let announced = header.captured_len as usize;
    // The ring rounds records up to 8 bytes; anything beyond the announced length is padding.
    let payload = payload.get(..announced).ok_or(EventError::LengthMismatch {
        announced,
        carried: payload.len(),
    })?;
    let (src_ip, dst_ip) = match header.family {
        4 => (ipv4(&header.saddr), ipv4(&header.daddr)),
        6 => (
            IpAddr::V6(Ipv6Addr::from(header.saddr)),
            IpAddr::V6(Ipv6Addr::from(header.daddr)),
        ),
        other => return Err(EventError::Family(other)),
    };
    let direction =
        Direction::from_u8(header.direction).ok_or(EventError::Direction(header.direction))?;
    Ok(Segment {
        mono_ns: header.ts_ns,
        src: SocketAddr::new(src_ip, header.sport),
        dst: SocketAddr::new(dst_ip, header.dport),
        direction,
        ifindex: header.ifindex,
        seq: header.seq,
        ack: header.ack,
        tcp_flags: header.tcp_flags,
        segment_len: header.segment_len,
        chunk_offset: header.chunk_offset,
        truncated: header.event_flags & event_flags::TRUNCATED != 0,
        more_chunks: header.event_flags & event_flags::MORE_CHUNKS != 0,
        skipped: header.event_flags & event_flags::SKIPPED != 0,
        payload: payload.to_vec(),
    })
}

fn ipv4(bytes: &[u8; 16]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
}

/// Converts kernel monotonic timestamps to wall-clock time.
///
/// The offset is taken once; a wall-clock step while the daemon runs shifts later timestamps by
/// the step, which is what a user reading logs side by side expects.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall-clock nanoseconds since the epoch minus monotonic nanoseconds.
    offset_ns: i128,
}

impl Clock {
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Self {
            offset_ns: wall as i128 - i128::from(monotonic_ns()),
        }
    }

    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        let nanos = (i128::from(mono_ns) + self.offset_ns).max(0);
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(header: &SegmentHeader) -> Vec<u8> {
        // SAFETY: reading the plain struct as bytes for the test input.
        unsafe {
            std::slice::from_raw_parts((header as *const SegmentHeader).cast::<u8>(), HEADER_LEN)
        }
        .to_vec()
    }

    fn sample() -> SegmentHeader {
        let mut saddr = [0; 16];
        saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        let mut daddr = [0; 16];
        daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        SegmentHeader {
            ts_ns: 5,
            saddr,
            daddr,
            sport: 40000,
            dport: 8080,
            seq: 100,
            ack: 7,
            ifindex: 3,
            segment_len: 3,
            chunk_offset: 0,
            captured_len: 3,
            family: 4,
            direction: 1,
            tcp_flags: tcp_flags::PSH | tcp_flags::ACK,
            event_flags: 0,
        }
    }

    #[test]
    fn decodes_header_and_payload_ignoring_ring_padding() {
        let mut bytes = header_bytes(&sample());
        bytes.extend_from_slice(b"GET\0\0\0\0\0");
        let segment = decode(&bytes).unwrap();
        assert_eq!(segment.src, "10.0.0.1:40000".parse().unwrap());
        assert_eq!(segment.dst, "10.0.0.2:8080".parse().unwrap());
        assert_eq!(segment.direction, Direction::Egress);
        assert_eq!(segment.payload, b"GET");
        assert_eq!(segment.flags_text(), "P.");
    }

    #[test]
    fn rejects_short_and_inconsistent_events_without_panicking() {
        let bytes = header_bytes(&sample());
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), Err(EventError::Short(cut)));
        }
        assert!(matches!(
            decode(&bytes),
            Err(EventError::LengthMismatch { .. })
        ));
        let mut bad = sample();
        bad.captured_len = 0;
        bad.family = 9;
        assert_eq!(decode(&header_bytes(&bad)), Err(EventError::Family(9)));
        bad.family = 6;
        bad.direction = 7;
        assert_eq!(decode(&header_bytes(&bad)), Err(EventError::Direction(7)));
    }

    #[test]
    fn clock_maps_monotonic_to_now() {
        let clock = Clock::new();
        let now = clock.wall(monotonic_ns());
        let skew = SystemTime::now().duration_since(now).unwrap_or_default();
        assert!(skew < Duration::from_secs(1), "skew {skew:?}");
    }
}
