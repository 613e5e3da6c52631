//! apisessions capture programs.
//!
//! One parser serves three entry points: TC ingress and egress classifiers (attached through TCX
//! or clsact) and a socket filter for AF_PACKET sockets (the fallback where TC cannot be used).
//! Each turns a TCP segment of a watched flow into one or more ring-buffer events (header +
//! payload chunk) and never changes or drops the packet itself. Every packet it gives up on, and
//! every event the ring refuses, is counted in `COUNTERS`.
//!
//! Beside them, uprobes on the TLS library (OpenSSL) read the plaintext of the servers on the TLS
//! ports (see `sensor_ebpf::tls`); their loss is counted in `TLS_COUNTERS`.
#![no_std]
#![no_main]

use core::hint::black_box;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, TC_ACT_UNSPEC},
    helpers::{bpf_ktime_get_ns, bpf_skb_load_bytes},
    macros::{classifier, map, socket_filter},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{SkBuffContext, TcContext, sk_buff::SkBuff},
};
use sensor_ebpf::{
    CONFIG_ALL_PORTS, CONFIG_ENABLED, CaptureConfig, DEFAULT_RING_BYTES, Direction, EventBuf,
    HEADER_LEN, MAX_CHUNK, MAX_CHUNKS_PER_SEGMENT, PORT_SLOTS, SkipKey, SkipRange, counter,
    event_flags, iface, port, skip, tcp_flags,
};

mod uprobes;

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[map]
static CONFIG: Array<CaptureConfig> = Array::with_max_entries(1, 0);

/// Watched ports: index = port, non-zero = watched (either end of the connection).
#[map]
static PORTS: Array<u8> = Array::with_max_entries(PORT_SLOTS, 0);

/// Per-interface settings (`iface::*` bits) keyed by ifindex; absent means Ethernet.
#[map]
static IFACES: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

/// Body ranges user space will not read, per wire direction (see `sensor_ebpf::skip`).
#[map]
static SKIP: LruHashMap<SkipKey, SkipRange> = LruHashMap::with_max_entries(skip::MAX_FLOWS, 0);

#[map]
static SCRATCH: PerCpuArray<EventBuf> = PerCpuArray::with_max_entries(1, 0);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_TCP: u8 = 6;
const PACKET_OUTGOING: u32 = 4;
/// IPv6 extension headers followed before giving up (counted as unsupported).
const MAX_IPV6_EXT: usize = 6;

#[classifier]
pub fn apis_tc_ingress(ctx: TcContext) -> i32 {
    capture(&ctx.skb, Direction::Ingress);
    // TC_ACT_UNSPEC (TCX_NEXT): let the next program or the default action decide; we only watch.
    TC_ACT_UNSPEC
}

#[classifier]
pub fn apis_tc_egress(ctx: TcContext) -> i32 {
    capture(&ctx.skb, Direction::Egress);
    TC_ACT_UNSPEC
}

#[socket_filter]
pub fn apis_socket(ctx: SkBuffContext) -> i64 {
    // SAFETY: the context pointer is valid for the duration of the program.
    let pkt_type = unsafe { (*ctx.skb.skb).pkt_type };
    let direction = if pkt_type == PACKET_OUTGOING {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    capture(&ctx.skb, direction);
    // Keep nothing on the socket: the events in the ring are the whole output.
    0
}

#[inline(always)]
fn count(index: u32, n: u64) {
    if let Some(value) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *value += n };
    }
}

/// Loads a `T` at `offset` from the packet start, counting a failure.
#[inline(always)]
fn load<T>(skb: &SkBuff, offset: usize) -> Result<T, ()> {
    skb.load::<T>(offset)
        .map_err(|_| count(counter::LOAD_ERRORS, 1))
}

#[inline(always)]
fn load_be16(skb: &SkBuff, offset: usize) -> Result<u16, ()> {
    load::<[u8; 2]>(skb, offset).map(u16::from_be_bytes)
}

/// Where the IP layer starts and which addresses and length it declares.
struct Network {
    family: u8,
    saddr: [u8; 16],
    daddr: [u8; 16],
    /// Offset of the TCP header.
    l4: usize,
    /// Offset one past the last byte of the IP packet.
    end: usize,
}

#[inline(always)]
fn capture(skb: &SkBuff, direction: Direction) {
    count(counter::PACKETS, 1);
    let _ = try_capture(skb, direction);
}

#[inline(always)]
fn try_capture(skb: &SkBuff, direction: Direction) -> Result<(), ()> {
    let config = *CONFIG.get(0).ok_or(())?;
    if config.flags & CONFIG_ENABLED == 0 {
        return Ok(());
    }
    // SAFETY: the context pointer is valid for the duration of the program.
    let (ifindex, protocol) = unsafe { ((*skb.skb).ifindex, (*skb.skb).protocol) };
    // SAFETY: plain value lookup.
    let iface_bits = unsafe { IFACES.get(ifindex) }
        .copied()
        .unwrap_or(iface::L2_ETHERNET);
    let ignored = match direction {
        Direction::Egress => iface::IGNORE_EGRESS,
        Direction::Ingress => iface::IGNORE_INGRESS,
    };
    if iface_bits & ignored != 0 {
        count(counter::COPIES_SKIPPED, 1);
        return Ok(());
    }
    let mut offset = (iface_bits & iface::L2_LEN_MASK) as usize;
    // skb->protocol holds the ethertype in network byte order in its low 16 bits.
    let mut ethertype = u16::from_be(protocol as u16);
    // VLAN tags the driver did not strip: the inner ethertype follows each 4-byte tag.
    for _ in 0..2 {
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            ethertype = load_be16(skb, offset + 2)?;
            offset += 4;
        }
    }
    let net = match ethertype {
        ETH_P_IP => ipv4(skb, offset)?,
        ETH_P_IPV6 => ipv6(skb, offset)?,
        _ => return Ok(()),
    };
    tcp(skb, direction, ifindex, &config, &net)
}

#[inline(always)]
fn ipv4(skb: &SkBuff, offset: usize) -> Result<Network, ()> {
    let header = load::<[u8; 20]>(skb, offset)?;
    if header[0] >> 4 != 4 || header[9] != IPPROTO_TCP {
        return Err(());
    }
    let header_len = usize::from(header[0] & 0x0f) * 4;
    if header_len < 20 {
        count(counter::LOAD_ERRORS, 1);
        return Err(());
    }
    // More-fragments flag or a fragment offset: no complete TCP header to read.
    if u16::from_be_bytes([header[6], header[7]]) & 0x3fff != 0 {
        count(counter::IP_FRAGMENTS, 1);
        return Err(());
    }
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    saddr[..4].copy_from_slice(&header[12..16]);
    daddr[..4].copy_from_slice(&header[16..20]);
    // A total length of 0 appears on BIG TCP super-packets: the skb length decides then.
    let end = if total_len == 0 {
        skb.len() as usize
    } else {
        offset + total_len
    };
    Ok(Network {
        family: 4,
        saddr,
        daddr,
        l4: offset + header_len,
        end,
    })
}

#[inline(always)]
fn ipv6(skb: &SkBuff, offset: usize) -> Result<Network, ()> {
    let header = load::<[u8; 40]>(skb, offset)?;
    if header[0] >> 4 != 6 {
        return Err(());
    }
    let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let mut next = header[6];
    let mut l4 = offset + 40;
    let end = if payload_len == 0 {
        skb.len() as usize
    } else {
        l4 + payload_len
    };
    let mut found = false;
    for _ in 0..MAX_IPV6_EXT {
        match next {
            IPPROTO_TCP => {
                found = true;
                break;
            }
            // Hop-by-hop, routing, destination options: length in 8-byte units, first 8 excluded.
            0 | 43 | 60 => {
                let ext = load::<[u8; 2]>(skb, l4)?;
                next = ext[0];
                l4 += (usize::from(ext[1]) + 1) * 8;
            }
            // Authentication header: length in 4-byte units, first 8 excluded.
            51 => {
                let ext = load::<[u8; 2]>(skb, l4)?;
                next = ext[0];
                l4 += (usize::from(ext[1]) + 2) * 4;
            }
            44 => {
                count(counter::IP_FRAGMENTS, 1);
                return Err(());
            }
            // Not TCP (UDP, ICMPv6, no next header, ...): not ours.
            _ => return Err(()),
        }
    }
    if !found && next != IPPROTO_TCP {
        count(counter::IPV6_EXT_UNSUPPORTED, 1);
        return Err(());
    }
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    saddr.copy_from_slice(&header[8..24]);
    daddr.copy_from_slice(&header[24..40]);
    Ok(Network {
        family: 6,
        saddr,
        daddr,
        l4,
        end,
    })
}

/// What the `PORTS` map says of a port (`sensor_ebpf::port`).
#[inline(always)]
fn port_state(port: u16) -> u8 {
    PORTS.get(u32::from(port)).copied().unwrap_or(port::OFF)
}

#[inline(always)]
fn tcp(
    skb: &SkBuff,
    direction: Direction,
    ifindex: u32,
    config: &CaptureConfig,
    net: &Network,
) -> Result<(), ()> {
    let header = load::<[u8; 20]>(skb, net.l4)?;
    let sport = u16::from_be_bytes([header[0], header[1]]);
    let dport = u16::from_be_bytes([header[2], header[3]]);
    let data_offset = usize::from(header[12] >> 4) * 4;
    let payload_start = net.l4 + data_offset;
    // Ethernet pads short frames: the IP length, not the skb length, says where payload ends.
    let end = net.end.min(skb.len() as usize);
    let segment_len = end.saturating_sub(payload_start) as u32;
    if config.flags & CONFIG_ALL_PORTS == 0 {
        let (source, destination) = (port_state(sport), port_state(dport));
        if source != port::WATCHED && destination != port::WATCHED {
            if source == port::TLS || destination == port::TLS {
                count(counter::TLS_SEGMENTS, 1);
                count(counter::TLS_BYTES, u64::from(segment_len));
            } else if source == port::MUTED || destination == port::MUTED {
                count(counter::MUTED_SEGMENTS, 1);
                count(counter::MUTED_BYTES, u64::from(segment_len));
            }
            return Ok(());
        }
    }
    count(counter::TCP_SEGMENTS, 1);
    let seq = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let ack = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    let flags = header[13];
    if segment_len == 0 && flags & (tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST) == 0 {
        count(counter::PURE_ACKS, 1);
        return Ok(());
    }
    // A segment inside a skipped body goes as a header-only event (see `sensor_ebpf::skip`).
    let skip = segment_len >= skip::MIN_SEGMENT
        && flags & (tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST) == 0
        && skipped(net, sport, dport, seq, segment_len);
    let snaplen = config.snaplen;
    let captured = if skip { 0 } else { segment_len.min(snaplen) };
    let mut extra_flags = 0;
    if skip {
        count(counter::SKIPPED_SEGMENTS, 1);
        count(counter::SKIPPED_BYTES, u64::from(segment_len));
        extra_flags |= event_flags::SKIPPED;
    } else if segment_len > snaplen {
        count(counter::SEGMENTS_TRUNCATED, 1);
        count(counter::BYTES_TRUNCATED, u64::from(segment_len - snaplen));
        extra_flags |= event_flags::TRUNCATED;
    }

    let buf = SCRATCH.get_ptr_mut(0).ok_or(())?;
    // SAFETY: the per-CPU slot is ours until the program returns.
    let buf = unsafe { &mut *buf };
    // SAFETY: helper without arguments.
    buf.header.ts_ns = unsafe { bpf_ktime_get_ns() };
    buf.header.saddr = net.saddr;
    buf.header.daddr = net.daddr;
    buf.header.sport = sport;
    buf.header.dport = dport;
    buf.header.ack = ack;
    buf.header.ifindex = ifindex;
    buf.header.segment_len = segment_len;
    buf.header.family = net.family;
    buf.header.direction = direction as u8;

    for chunk in 0..MAX_CHUNKS_PER_SEGMENT {
        let chunk_offset = chunk * MAX_CHUNK as u32;
        if chunk > 0 && chunk_offset >= captured {
            break;
        }
        let len = (captured - chunk_offset.min(captured)).min(MAX_CHUNK as u32);
        let last = chunk_offset + len >= captured;
        let mut chunk_flags = flags;
        if chunk > 0 {
            chunk_flags &= !tcp_flags::SYN;
        }
        if !last {
            chunk_flags &= !(tcp_flags::FIN | tcp_flags::RST);
        }
        buf.header.seq = seq.wrapping_add(chunk_offset);
        buf.header.chunk_offset = chunk_offset;
        buf.header.captured_len = len;
        buf.header.tcp_flags = chunk_flags;
        buf.header.event_flags = extra_flags | if last { 0 } else { event_flags::MORE_CHUNKS };
        if len > 0 {
            // The verifier drops the bound of a length LLVM proved non-zero; re-check it here.
            let copy = black_box(len) as usize;
            if copy == 0 || copy > MAX_CHUNK {
                return Err(());
            }
            // SAFETY: `copy` bytes fit in `payload` (checked just above).
            let ret = unsafe {
                bpf_skb_load_bytes(
                    skb.skb.cast(),
                    (payload_start + chunk_offset as usize) as u32,
                    buf.payload.as_mut_ptr().cast(),
                    copy as u32,
                )
            };
            if ret != 0 {
                count(counter::LOAD_ERRORS, 1);
                return Err(());
            }
        }
        submit(buf, len as usize, config.wakeup_bytes);
        if last {
            break;
        }
    }
    Ok(())
}

/// Whether the segment lies wholly inside its direction's skip range. A segment at or past the
/// range's end removes the range: the body is over, and a later connection on the same ports
/// must not find it.
#[inline(always)]
fn skipped(net: &Network, sport: u16, dport: u16, seq: u32, len: u32) -> bool {
    let key = SkipKey {
        saddr: net.saddr,
        daddr: net.daddr,
        sport,
        dport,
        family: net.family,
        _pad: [0; 3],
    };
    // SAFETY: plain value lookup; the value is copied out at once.
    let Some(range) = (unsafe { SKIP.get(key) }).copied() else {
        return false;
    };
    if seq.wrapping_sub(range.until_seq) as i32 >= 0 {
        let _ = SKIP.remove(key);
        return false;
    }
    let end = seq.wrapping_add(len);
    seq.wrapping_sub(range.from_seq) as i32 >= 0 && range.until_seq.wrapping_sub(end) as i32 >= 0
}

/// Copies header + `len` payload bytes into the ring. Wakes the reader only when this event
/// brings the unread data up to the threshold: a wakeup per event costs more CPU than the copy
/// itself at high rates, and it is paid on the CPU that sent the packet (the server's). Past the
/// threshold a reader that has not caught up is already awake or about to be, and the reader's
/// timer drains the ring regardless, so nothing waits longer than one timer period.
#[inline(always)]
fn submit(buf: &EventBuf, len: usize, wakeup_bytes: u32) {
    count(counter::EVENTS_TRIED, 1);
    let size = black_box(HEADER_LEN + len);
    if size > HEADER_LEN + MAX_CHUNK {
        return;
    }
    let waiting = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    let threshold = u64::from(wakeup_bytes);
    let wakeup = if threshold == 0 || (waiting < threshold && waiting + size as u64 >= threshold) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    // SAFETY: `size` <= size_of::<EventBuf>() (checked above); the struct is plain bytes.
    let bytes = unsafe { core::slice::from_raw_parts((buf as *const EventBuf).cast::<u8>(), size) };
    match EVENTS.output::<[u8]>(bytes, u64::from(wakeup)) {
        Ok(()) => {
            count(counter::EVENTS_SUBMITTED, 1);
            count(counter::BYTES_SUBMITTED, len as u64);
        }
        Err(_) => {
            count(counter::RING_FULL, 1);
            count(counter::RING_FULL_BYTES, len as u64);
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
