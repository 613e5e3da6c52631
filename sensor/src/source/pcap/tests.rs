//! Hand-built capture files, byte by byte, for every link type and container variant, plus
//! prefix, mutation and random-input runs that must never panic and must always balance.

use std::{
    io::{self, Cursor, Read},
    net::SocketAddr,
};

use etherparse::PacketBuilder;
use sensor_ebpf::tcp_flags;

use super::*;
use crate::test_rng::Rng;

const CLIENT_V4: [u8; 4] = [10, 0, 0, 2];
const SERVER_V4: [u8; 4] = [10, 0, 0, 1];
const CLIENT_V6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const SERVER_V6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const CLIENT_PORT: u16 = 40000;
const SERVER_PORT: u16 = 8080;
const SEQ: u32 = 1000;
const ACK: u32 = 5000;
const REQUEST: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: test\r\n\r\n";

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_ARP: u16 = 0x0806;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;

// ---------------------------------------------------------------------------------------------
// Packets

/// IPv4 + TCP (ACK|PSH) from the client to the server.
fn ipv4_tcp(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(CLIENT_V4, SERVER_V4, 64)
        .tcp(CLIENT_PORT, SERVER_PORT, SEQ, 65535)
        .ack(ACK)
        .psh()
        .write(&mut out, payload)
        .unwrap();
    out
}

fn ipv4_syn() -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(CLIENT_V4, SERVER_V4, 64)
        .tcp(CLIENT_PORT, SERVER_PORT, SEQ - 1, 65535)
        .syn()
        .write(&mut out, &[])
        .unwrap();
    out
}

fn ipv6_tcp(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(CLIENT_V6, SERVER_V6, 64)
        .tcp(CLIENT_PORT, SERVER_PORT, SEQ, 65535)
        .ack(ACK)
        .psh()
        .write(&mut out, payload)
        .unwrap();
    out
}

fn ipv4_udp(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(CLIENT_V4, SERVER_V4, 64)
        .udp(5353, 53)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// IPv6 with a Destination Options header (8 bytes, PadN) between the header and TCP.
fn ipv6_ext_tcp(payload: &[u8]) -> Vec<u8> {
    let plain = ipv6_tcp(payload);
    let mut out = plain[..40].to_vec();
    out[6] = 60; // next header: destination options
    let len = u16::from_be_bytes([out[4], out[5]]) + 8;
    out[4..6].copy_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]); // next: TCP, 8 bytes, PadN(4)
    out.extend_from_slice(&plain[40..]);
    out
}

/// IPv6 with a Fragment header: first fragment, more to come.
fn ipv6_fragment_tcp(payload: &[u8]) -> Vec<u8> {
    let plain = ipv6_tcp(payload);
    let mut out = plain[..40].to_vec();
    out[6] = 44; // next header: fragment
    let len = u16::from_be_bytes([out[4], out[5]]) + 8;
    out[4..6].copy_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[6, 0, 0x00, 0x01, 0, 0, 0, 7]); // next: TCP, offset 0, M=1, id 7
    out.extend_from_slice(&plain[40..]);
    out
}

/// Sets IPv4 fragment fields and fixes the header checksum.
fn ipv4_fragmented(mut packet: Vec<u8>, more: bool, offset_8: u16) -> Vec<u8> {
    let field = (u16::from(more) << 13) | offset_8;
    packet[6..8].copy_from_slice(&field.to_be_bytes());
    packet[10..12].copy_from_slice(&[0, 0]);
    let sum = ipv4_checksum(&packet[..20]);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ethernet(ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    out.extend_from_slice(&ether_type.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An 802.1Q/802.1ad tag: TPID, TCI (VLAN id), then the inner EtherType.
fn vlan_tag(tpid: u16, id: u16, inner: u16) -> Vec<u8> {
    let mut out = tpid.to_be_bytes().to_vec();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&inner.to_be_bytes());
    out
}

fn vlan_ethernet(tags: &[(u16, u16)], inner: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for (i, (tpid, id)) in tags.iter().enumerate() {
        let next = tags.get(i + 1).map_or(inner, |t| t.0);
        // The TPID of the first tag is the frame's EtherType; each tag ends with the next.
        if i == 0 {
            out.extend_from_slice(&tpid.to_be_bytes());
        }
        out.extend_from_slice(&vlan_tag(*tpid, *id, next)[2..]);
    }
    out.extend_from_slice(payload);
    out
}

/// Linux cooked v1: packet type, ARPHRD, address length, address (8), protocol.
fn sll(arphrd: u16, protocol: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0];
    out.extend_from_slice(&arphrd.to_be_bytes());
    out.extend_from_slice(&6u16.to_be_bytes());
    out.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0, 0]);
    out.extend_from_slice(&protocol.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Linux cooked v2: protocol, reserved, ifindex, ARPHRD, packet type, address length, address.
fn sll2(arphrd: u16, protocol: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = protocol.to_be_bytes().to_vec();
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&3u32.to_be_bytes());
    out.extend_from_slice(&arphrd.to_be_bytes());
    out.extend_from_slice(&[4, 6]);
    out.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0, 0]);
    out.extend_from_slice(payload);
    out
}

fn null(family: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = family.to_vec();
    out.extend_from_slice(payload);
    out
}

// ---------------------------------------------------------------------------------------------
// Files

/// A classic pcap file.
struct Pcap {
    bytes: Vec<u8>,
    big_endian: bool,
}

impl Pcap {
    fn new(linktype: u32, nanosecond: bool, big_endian: bool) -> Self {
        let mut file = Self {
            bytes: Vec::new(),
            big_endian,
        };
        file.u32(if nanosecond { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
        file.u16(2);
        file.u16(4);
        file.u32(0); // thiszone
        file.u32(0); // sigfigs
        file.u32(262_144); // snaplen
        file.u32(linktype);
        file
    }

    fn u16(&mut self, v: u16) {
        let b = if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.bytes.extend_from_slice(&b);
    }

    fn u32(&mut self, v: u32) {
        let b = if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.bytes.extend_from_slice(&b);
    }

    /// A record of `data` as captured from a packet of `original_len` bytes.
    fn record_cut(mut self, sec: u32, frac: u32, data: &[u8], original_len: usize) -> Self {
        self.u32(sec);
        self.u32(frac);
        self.u32(data.len() as u32);
        self.u32(original_len as u32);
        self.bytes.extend_from_slice(data);
        self
    }

    fn record(self, sec: u32, frac: u32, data: &[u8]) -> Self {
        let len = data.len();
        self.record_cut(sec, frac, data, len)
    }
}

/// A pcapng file: a section header, then whatever blocks the test adds.
struct PcapNg {
    bytes: Vec<u8>,
    big_endian: bool,
}

impl PcapNg {
    fn new(big_endian: bool) -> Self {
        let mut file = Self {
            bytes: Vec::new(),
            big_endian,
        };
        file.section();
        file
    }

    fn u16(v: u16, be: bool) -> [u8; 2] {
        if be { v.to_be_bytes() } else { v.to_le_bytes() }
    }

    fn u32(v: u32, be: bool) -> [u8; 4] {
        if be { v.to_be_bytes() } else { v.to_le_bytes() }
    }

    /// A block: type, total length, body padded to 4 bytes, total length again.
    fn block(&mut self, block_type: u32, body: &[u8]) {
        let be = self.big_endian;
        let padded = body.len().div_ceil(4) * 4;
        let total = (12 + padded) as u32;
        self.bytes.extend_from_slice(&Self::u32(block_type, be));
        self.bytes.extend_from_slice(&Self::u32(total, be));
        self.bytes.extend_from_slice(body);
        self.bytes.resize(self.bytes.len() + padded - body.len(), 0);
        self.bytes.extend_from_slice(&Self::u32(total, be));
    }

    /// A new section (interface ids start again at 0).
    fn section(&mut self) {
        let be = self.big_endian;
        let mut body = Self::u32(0x1a2b_3c4d, be).to_vec();
        body.extend_from_slice(&Self::u16(1, be));
        body.extend_from_slice(&Self::u16(0, be));
        body.extend_from_slice(&[0xff; 8]); // section length: unknown
        self.block(0x0a0d_0d0a, &body);
    }

    fn interface(
        mut self,
        linktype: u16,
        snaplen: u32,
        tsresol: Option<u8>,
        tsoffset: Option<i64>,
    ) -> Self {
        let be = self.big_endian;
        let mut body = Self::u16(linktype, be).to_vec();
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&Self::u32(snaplen, be));
        if let Some(resol) = tsresol {
            body.extend_from_slice(&Self::u16(9, be));
            body.extend_from_slice(&Self::u16(1, be));
            body.extend_from_slice(&[resol, 0, 0, 0]);
        }
        if let Some(offset) = tsoffset {
            body.extend_from_slice(&Self::u16(14, be));
            body.extend_from_slice(&Self::u16(8, be));
            let b = if be {
                offset.to_be_bytes()
            } else {
                offset.to_le_bytes()
            };
            body.extend_from_slice(&b);
        }
        if tsresol.is_some() || tsoffset.is_some() {
            body.extend_from_slice(&[0, 0, 0, 0]); // opt_endofopt
        }
        self.block(1, &body);
        self
    }

    fn epb_cut(mut self, interface: u32, ts: u64, data: &[u8], original_len: usize) -> Self {
        let be = self.big_endian;
        let mut body = Self::u32(interface, be).to_vec();
        body.extend_from_slice(&Self::u32((ts >> 32) as u32, be));
        body.extend_from_slice(&Self::u32(ts as u32, be));
        body.extend_from_slice(&Self::u32(data.len() as u32, be));
        body.extend_from_slice(&Self::u32(original_len as u32, be));
        body.extend_from_slice(data);
        self.block(6, &body);
        self
    }

    fn epb(self, interface: u32, ts: u64, data: &[u8]) -> Self {
        let len = data.len();
        self.epb_cut(interface, ts, data, len)
    }

    fn spb(mut self, data: &[u8]) -> Self {
        let be = self.big_endian;
        let mut body = Self::u32(data.len() as u32, be).to_vec();
        body.extend_from_slice(data);
        self.block(3, &body);
        self
    }

    fn new_section(mut self) -> Self {
        self.section();
        self
    }

    fn raw_block(mut self, block_type: u32, body: &[u8]) -> Self {
        self.block(block_type, body);
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

struct Outcome {
    segments: Vec<TcpSegment>,
    counters: PcapCounters,
    error: Option<SourceError>,
    source: PcapSource,
}

fn open(bytes: Vec<u8>) -> Result<PcapSource, SourceError> {
    let len = bytes.len() as u64;
    PcapSource::from_reader("test.pcap", Cursor::new(bytes), Some(len))
}

/// Reads everything, checks the accounting, returns what came out.
fn read_all(bytes: Vec<u8>) -> Outcome {
    let mut source = open(bytes).expect("opens");
    let mut segments = Vec::new();
    let mut error = None;
    loop {
        match source.next_segment() {
            Ok(Some(segment)) => segments.push(segment),
            Ok(None) => break,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    // Over: no more segments, no more errors.
    assert!(matches!(source.next_segment(), Ok(None)));
    assert_balanced(&source);
    assert_eq!(source.stats().tcp_segments, segments.len() as u64);
    Outcome {
        segments,
        counters: source.stats().clone(),
        error,
        source,
    }
}

/// `packets == tcp_segments + Σ skip counters`, through the named counters.
fn assert_balanced(source: &PcapSource) {
    let named = source.counters();
    let get = |name: &str| named.iter().find(|(n, _)| *n == name).unwrap().1;
    let skipped: u64 = PcapCounters::SKIP_COUNTERS.iter().map(|n| get(n)).sum();
    assert_eq!(get("packets"), get("tcp_segments") + skipped, "{named:?}");
    assert_eq!(skipped, source.stats().skipped());
}

fn only(read: &Outcome) -> &TcpSegment {
    assert_eq!(read.segments.len(), 1, "{:?}", read.counters);
    &read.segments[0]
}

fn client_v4() -> SocketAddr {
    SocketAddr::from((CLIENT_V4, CLIENT_PORT))
}

fn server_v4() -> SocketAddr {
    SocketAddr::from((SERVER_V4, SERVER_PORT))
}

fn server_v6() -> SocketAddr {
    SocketAddr::from((SERVER_V6, SERVER_PORT))
}

fn assert_request_v4(segment: &TcpSegment) {
    assert_eq!(segment.src, client_v4());
    assert_eq!(segment.dst, server_v4());
    assert_eq!(segment.seq, SEQ);
    assert_eq!(segment.ack, ACK);
    assert_eq!(segment.flags, tcp_flags::ACK | tcp_flags::PSH);
    assert_eq!(segment.payload, REQUEST);
    assert_eq!(segment.missing, 0);
}

fn assert_request_v6(segment: &TcpSegment) {
    assert_eq!(segment.src, SocketAddr::from((CLIENT_V6, CLIENT_PORT)));
    assert_eq!(segment.dst, server_v6());
    assert_eq!(segment.payload, REQUEST);
    assert_eq!(segment.missing, 0);
}

// ---------------------------------------------------------------------------------------------
// Link types

#[test]
fn ethernet_microseconds() {
    let file = Pcap::new(1, false, false)
        .record(1_700_000_000, 123_456, &ethernet(ETH_IPV4, &ipv4_syn()))
        .record(1_700_000_001, 5, &ethernet(ETH_IPV4, &ipv4_tcp(REQUEST)))
        .record(1_700_000_002, 0, &ethernet(ETH_ARP, &[0; 28]))
        .record(1_700_000_003, 0, &ethernet(ETH_IPV4, &ipv4_udp(b"dns")))
        .record(1_700_000_004, 0, &ethernet(0x88cc, &[0; 30])); // LLDP
    let read = read_all(file.bytes);
    assert!(read.error.is_none());
    assert_eq!(read.source.format(), PcapFormat::Pcap { nanosecond: false });
    assert_eq!(read.segments.len(), 2);
    let syn = &read.segments[0];
    assert_eq!(syn.ts_ns, 1_700_000_000_123_456_000);
    assert_eq!(syn.flags, tcp_flags::SYN);
    assert_eq!(syn.seq, SEQ - 1);
    assert!(syn.payload.is_empty());
    assert_eq!(read.segments[1].ts_ns, 1_700_000_001_000_005_000);
    assert_request_v4(&read.segments[1]);
    assert_eq!(read.counters.packets, 5);
    assert_eq!(read.counters.non_ip, 2);
    assert_eq!(read.counters.non_tcp, 1);
}

#[test]
fn nanosecond_and_big_endian_pcap() {
    for big_endian in [false, true] {
        let file = Pcap::new(1, true, big_endian).record(
            1_700_000_000,
            987_654_321,
            &ethernet(ETH_IPV4, &ipv4_tcp(REQUEST)),
        );
        let read = read_all(file.bytes);
        assert_eq!(read.source.format(), PcapFormat::Pcap { nanosecond: true });
        let segment = only(&read);
        assert_eq!(segment.ts_ns, 1_700_000_000_987_654_321);
        assert_request_v4(segment);
    }
}

#[test]
fn raw_ip_link_types() {
    for linktype in [101, 228, 229] {
        let packet = if linktype == 229 {
            ipv6_tcp(REQUEST)
        } else {
            ipv4_tcp(REQUEST)
        };
        let read = read_all(
            Pcap::new(linktype, false, false)
                .record(1, 0, &packet)
                .bytes,
        );
        let segment = only(&read);
        if linktype == 229 {
            assert_request_v6(segment);
        } else {
            assert_request_v4(segment);
        }
    }
    // LINKTYPE_RAW holds either version.
    let read = read_all(
        Pcap::new(101, false, false)
            .record(1, 0, &ipv6_tcp(REQUEST))
            .bytes,
    );
    assert_request_v6(only(&read));
}

#[test]
fn linux_cooked_v1_and_v2() {
    // ARPHRD_ETHER (1) and ARPHRD_LOOPBACK (772): `tcpdump -i any` records both.
    for arphrd in [1, 772] {
        let file = Pcap::new(113, false, false)
            .record(1, 0, &sll(arphrd, ETH_IPV4, &ipv4_tcp(REQUEST)))
            .record(2, 0, &sll(arphrd, ETH_IPV6, &ipv6_tcp(REQUEST)))
            .record(3, 0, &sll(arphrd, ETH_ARP, &[0; 28]));
        let read = read_all(file.bytes);
        assert_eq!(read.segments.len(), 2, "{:?}", read.counters);
        assert_request_v4(&read.segments[0]);
        assert_request_v6(&read.segments[1]);
        assert_eq!(read.counters.non_ip, 1);

        let file = Pcap::new(276, false, false)
            .record(1, 0, &sll2(arphrd, ETH_IPV4, &ipv4_tcp(REQUEST)))
            .record(2, 0, &sll2(arphrd, ETH_IPV6, &ipv6_tcp(REQUEST)))
            .record(
                3,
                0,
                &sll2(
                    arphrd,
                    ETH_VLAN,
                    &vlan_tag(ETH_VLAN, 7, ETH_IPV4)[2..]
                        .iter()
                        .copied()
                        .chain(ipv4_tcp(REQUEST))
                        .collect::<Vec<_>>(),
                ),
            );
        let read = read_all(file.bytes);
        assert_eq!(read.segments.len(), 3, "{:?}", read.counters);
        assert_request_v4(&read.segments[0]);
        assert_request_v6(&read.segments[1]);
        assert_request_v4(&read.segments[2]);
    }
    // A cooked header cut short.
    let read = read_all(Pcap::new(276, false, false).record(1, 0, &[0; 12]).bytes);
    assert_eq!(read.counters.malformed, 1);
}

#[test]
fn bsd_loopback() {
    let file = Pcap::new(0, false, false)
        .record(1, 0, &null(2u32.to_le_bytes(), &ipv4_tcp(REQUEST))) // Linux/x86
        .record(2, 0, &null(30u32.to_be_bytes(), &ipv6_tcp(REQUEST))) // big-endian macOS
        .record(3, 0, &null(24u32.to_le_bytes(), &ipv6_tcp(REQUEST))) // OpenBSD
        .record(4, 0, &null(7u32.to_le_bytes(), &[0; 20])); // not IP
    let read = read_all(file.bytes);
    assert_eq!(read.segments.len(), 3, "{:?}", read.counters);
    assert_request_v4(&read.segments[0]);
    assert_request_v6(&read.segments[1]);
    assert_request_v6(&read.segments[2]);
    assert_eq!(read.counters.non_ip, 1);

    let file = Pcap::new(108, false, false)
        .record(1, 0, &null(2u32.to_be_bytes(), &ipv4_tcp(REQUEST)))
        .record(2, 0, &null(28u32.to_be_bytes(), &ipv6_tcp(REQUEST)));
    let read = read_all(file.bytes);
    assert_eq!(read.segments.len(), 2, "{:?}", read.counters);
}

#[test]
fn vlan_tags() {
    let file = Pcap::new(1, false, false)
        .record(
            1,
            0,
            &vlan_ethernet(&[(ETH_VLAN, 100)], ETH_IPV4, &ipv4_tcp(REQUEST)),
        )
        .record(
            2,
            0,
            &vlan_ethernet(
                &[(ETH_QINQ, 10), (ETH_VLAN, 20)],
                ETH_IPV6,
                &ipv6_tcp(REQUEST),
            ),
        )
        .record(
            3,
            0,
            &vlan_ethernet(
                &[(ETH_VLAN, 10), (ETH_VLAN, 20)],
                ETH_IPV4,
                &ipv4_tcp(REQUEST),
            ),
        )
        .record(4, 0, &vlan_ethernet(&[(ETH_VLAN, 100)], ETH_ARP, &[0; 28]));
    let read = read_all(file.bytes);
    assert_eq!(read.segments.len(), 3, "{:?}", read.counters);
    assert_request_v4(&read.segments[0]);
    assert_request_v6(&read.segments[1]);
    assert_request_v4(&read.segments[2]);
    assert_eq!(read.counters.non_ip, 1);
}

#[test]
fn ipv6_extension_header() {
    let read = read_all(
        Pcap::new(1, false, false)
            .record(1, 0, &ethernet(ETH_IPV6, &ipv6_ext_tcp(REQUEST)))
            .bytes,
    );
    assert_request_v6(only(&read));
}

#[test]
fn unsupported_link_type() {
    let read = read_all(
        Pcap::new(105, false, false) // 802.11
            .record(1, 0, &[0; 60])
            .record(2, 0, &[0; 60])
            .bytes,
    );
    assert_eq!(read.counters.unsupported_linktype, 2);
    assert!(read.segments.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Fragments, truncation, malformed headers

#[test]
fn ip_fragments_are_counted_and_skipped() {
    let file = Pcap::new(1, false, false)
        .record(
            1,
            0,
            &ethernet(ETH_IPV4, &ipv4_fragmented(ipv4_tcp(REQUEST), true, 0)),
        )
        .record(
            2,
            0,
            &ethernet(ETH_IPV4, &ipv4_fragmented(ipv4_tcp(REQUEST), false, 100)),
        )
        .record(
            3,
            0,
            &ethernet(ETH_IPV4, &ipv4_fragmented(ipv4_udp(b"x"), true, 0)),
        )
        .record(4, 0, &ethernet(ETH_IPV6, &ipv6_fragment_tcp(REQUEST)))
        .record(5, 0, &ethernet(ETH_IPV4, &ipv4_tcp(REQUEST)));
    let read = read_all(file.bytes);
    assert_request_v4(only(&read));
    assert_eq!(read.counters.ip_fragments, 3);
    assert_eq!(read.counters.non_tcp, 1);
}

#[test]
fn snaplen_cut_payload_is_missing() {
    let body = vec![b'x'; 1000];
    let frame = ethernet(ETH_IPV4, &ipv4_tcp(&body));
    let headers = 14 + 20 + 20;
    let file = Pcap::new(1, false, false)
        // Cut inside the payload: 100 bytes kept, 900 missing.
        .record_cut(1, 0, &frame[..headers + 100], frame.len())
        // Cut inside the TCP header: nothing to deliver.
        .record_cut(2, 0, &frame[..headers - 10], frame.len())
        // Cut right after the TCP header.
        .record_cut(3, 0, &frame[..headers], frame.len());
    let read = read_all(file.bytes);
    assert_eq!(read.segments.len(), 2, "{:?}", read.counters);
    assert_eq!(read.segments[0].payload, vec![b'x'; 100]);
    assert_eq!(read.segments[0].missing, 900);
    assert_eq!(read.segments[0].seq_len(), 1000);
    assert!(read.segments[1].payload.is_empty());
    assert_eq!(read.segments[1].missing, 1000);
    assert_eq!(read.counters.truncated_headers, 1);
    assert_eq!(read.counters.truncated_packets, 3);
    assert_eq!(read.counters.segments_truncated, 2);
    assert_eq!(read.counters.bytes_truncated, 1900);
}

#[test]
fn uncaptured_trailer_is_not_missing_payload() {
    // A minimum-size frame: 2 payload bytes, padding to 60, and the 4-byte FCS on the wire
    // but not in the capture.
    let mut frame = ethernet(ETH_IPV4, &ipv4_tcp(b"ok"));
    frame.resize(60, 0);
    let read = read_all(
        Pcap::new(1, false, false)
            .record_cut(1, 0, &frame, 64)
            .bytes,
    );
    let segment = only(&read);
    assert_eq!(segment.payload, b"ok");
    assert_eq!(segment.missing, 0);
    assert_eq!(read.counters.truncated_packets, 1);
    assert_eq!(read.counters.segments_truncated, 0);
}

#[test]
fn ipv6_cut_payload_with_extension_header() {
    let body = vec![b'y'; 500];
    let packet = ipv6_ext_tcp(&body);
    let keep = 40 + 8 + 20 + 50;
    let read = read_all(
        Pcap::new(229, false, false)
            .record_cut(1, 0, &packet[..keep], packet.len())
            .bytes,
    );
    let segment = only(&read);
    assert_eq!(segment.payload.len(), 50);
    assert_eq!(segment.missing, 450);
}

#[test]
fn malformed_headers() {
    let mut bad_ihl = ipv4_tcp(REQUEST);
    bad_ihl[0] = 0x43; // IHL 3 (< 5)
    let mut bad_offset = ipv4_tcp(REQUEST);
    bad_offset[20 + 12] = 0x30; // TCP data offset 3 (< 5)
    let mut bad_version = ipv4_tcp(REQUEST);
    bad_version[0] = 0x75;
    let file = Pcap::new(1, false, false)
        .record(1, 0, &ethernet(ETH_IPV4, &bad_ihl))
        .record(2, 0, &ethernet(ETH_IPV4, &bad_offset))
        .record(3, 0, &[0; 10]) // shorter than an Ethernet header
        .record(4, 0, &ethernet(ETH_IPV4, &ipv4_tcp(REQUEST)[..30])) // IP says more
        .record(5, 0, &ethernet(ETH_VLAN, &[0, 1])) // VLAN tag cut short
        .record(6, 0, &ethernet(ETH_IPV4, &bad_version));
    let mut raw = Pcap::new(101, false, false).record(1, 0, &bad_version);
    raw = raw.record(2, 0, &[]);
    let read1 = read_all(file.bytes);
    assert_eq!(read1.counters.malformed, 6, "{:?}", read1.counters);
    let read2 = read_all(raw.bytes);
    assert_eq!(read2.counters.malformed, 2, "{:?}", read2.counters);
}

// ---------------------------------------------------------------------------------------------
// pcapng

#[test]
fn pcapng_interfaces_with_different_link_types_and_resolutions() {
    for big_endian in [false, true] {
        let file = PcapNg::new(big_endian)
            // 0: Ethernet, default resolution (microseconds).
            .interface(1, 0, None, None)
            // 1: raw IP, nanoseconds.
            .interface(101, 0, Some(9), None)
            // 2: SLL2, 2^-20 s, and an offset of 1000 s.
            .interface(276, 0, Some(0x80 | 20), Some(1000))
            // 3: Ethernet, if_tsresol too fine for 64 bits.
            .interface(1, 0, Some(25), None)
            .raw_block(4, &[0; 4]) // name resolution block: no packets
            .epb(
                0,
                1_700_000_000_000_001,
                &ethernet(ETH_IPV4, &ipv4_tcp(REQUEST)),
            )
            .epb(1, 1_700_000_000_000_000_002, &ipv6_tcp(REQUEST))
            .epb(
                2,
                (3 << 20) | (1 << 19),
                &sll2(1, ETH_IPV4, &ipv4_tcp(REQUEST)),
            )
            .spb(&ethernet(ETH_IPV4, &ipv4_tcp(REQUEST)))
            .epb(3, 0, &ethernet(ETH_IPV4, &ipv4_tcp(REQUEST)))
            .epb(9, 0, &ethernet(ETH_IPV4, &ipv4_tcp(REQUEST)))
            .raw_block(2, &[0; 20]) // obsolete Packet Block
            // A new section forgets the interfaces: interface 1 is now unknown.
            .new_section()
            .interface(229, 0, None, None)
            .epb(0, 7, &ipv6_tcp(REQUEST))
            .epb(1, 0, &ipv6_tcp(REQUEST));
        let read = read_all(file.bytes);
        assert!(read.error.is_none(), "{:?}", read.error);
        assert_eq!(read.source.format(), PcapFormat::PcapNg);
        assert_eq!(read.segments.len(), 5, "{:?}", read.counters);
        let ts: Vec<u64> = read.segments.iter().map(|s| s.ts_ns).collect();
        assert_eq!(
            ts,
            [
                1_700_000_000_000_001_000,
                1_700_000_000_000_000_002,
                1_003_500_000_000,
                1_003_500_000_000, // simple packet: the previous timestamp
                7000,
            ]
        );
        assert_request_v4(&read.segments[0]);
        assert_request_v6(&read.segments[1]);
        assert_request_v4(&read.segments[2]);
        assert_request_v4(&read.segments[3]);
        assert_request_v6(&read.segments[4]);
        assert_eq!(read.counters.bad_interface, 3);
        assert_eq!(read.counters.unsupported_block, 1);
        assert_eq!(read.counters.packets, 9);
    }
}

#[test]
fn pcapng_snaplen_cut() {
    let body = vec![b'z'; 300];
    let frame = ethernet(ETH_IPV4, &ipv4_tcp(&body));
    let keep = 14 + 40 + 100;
    let file = PcapNg::new(false)
        .interface(1, keep as u32, None, None)
        .epb_cut(0, 0, &frame[..keep], frame.len())
        // A simple packet block holds min(snaplen, length) bytes, padded.
        .spb(&frame[..keep])
        .raw_block(3, &{
            let mut body = (frame.len() as u32).to_le_bytes().to_vec();
            body.extend_from_slice(&frame[..keep]);
            body
        });
    let read = read_all(file.bytes);
    assert_eq!(read.segments.len(), 3, "{:?}", read.counters);
    assert_eq!(read.segments[0].payload.len(), 100);
    assert_eq!(read.segments[0].missing, 200);
    // The first simple block says its packet was `keep` long: complete.
    assert_eq!(read.segments[1].missing, 0);
    assert_eq!(read.segments[2].payload.len(), 100);
    assert_eq!(read.segments[2].missing, 200);
}

// ---------------------------------------------------------------------------------------------
// Damaged files

fn three_records() -> (Vec<u8>, Vec<usize>) {
    let mut file = Pcap::new(1, false, false);
    let mut starts = Vec::new();
    for i in 0..3 {
        starts.push(file.bytes.len());
        file = file.record(i, 0, &ethernet(ETH_IPV4, &ipv4_tcp(REQUEST)));
    }
    (file.bytes, starts)
}

#[test]
fn truncated_last_record_ends_the_stream() {
    let (bytes, starts) = three_records();
    for cut in [starts[2] + 5, starts[2] + 16 + 10, bytes.len() - 1] {
        let read = read_all(bytes[..cut].to_vec());
        assert!(read.error.is_none(), "{:?}", read.error);
        assert_eq!(read.segments.len(), 2);
        assert_eq!(read.counters.truncated_file, 1);
        assert_eq!(read.source.truncated_at(), Some(starts[2] as u64));
    }
    let read = read_all(bytes.clone());
    assert_eq!(read.segments.len(), 3);
    assert_eq!(read.counters.truncated_file, 0);
    assert_eq!(read.source.truncated_at(), None);
    assert_eq!(
        read.source.progress(),
        (bytes.len() as u64, bytes.len() as u64)
    );

    let ng = PcapNg::new(false)
        .interface(1, 0, None, None)
        .epb(0, 1, &ethernet(ETH_IPV4, &ipv4_tcp(REQUEST)))
        .epb(0, 2, &ethernet(ETH_IPV4, &ipv4_tcp(REQUEST)));
    let cut = ng.bytes.len() - 7;
    let read = read_all(ng.bytes[..cut].to_vec());
    assert!(read.error.is_none());
    assert_eq!(read.segments.len(), 1);
    assert_eq!(read.counters.truncated_file, 1);
}

#[test]
fn not_a_capture() {
    for bytes in [
        Vec::new(),
        b"abc".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0; 100],
        vec![0xd4, 0xc3, 0xb2], // a pcap magic cut short
    ] {
        match open(bytes.clone()) {
            Err(SourceError::NotCapture { path, reason }) => {
                assert_eq!(path, Path::new("test.pcap"));
                assert!(!reason.is_empty());
            }
            other => panic!("{bytes:?}: {other:?}"),
        }
    }
}

#[test]
fn corrupt_block_is_an_error_after_the_good_ones() {
    let mut file = PcapNg::new(false).interface(1, 0, None, None).epb(
        0,
        1,
        &ethernet(ETH_IPV4, &ipv4_tcp(REQUEST)),
    );
    let bad_at = file.bytes.len();
    file = file.epb(0, 2, &ethernet(ETH_IPV4, &ipv4_tcp(REQUEST)));
    // The trailing length no longer matches the leading one.
    let last = file.bytes.len() - 4;
    file.bytes[last] ^= 0x40;
    file = file.epb(0, 3, &ethernet(ETH_IPV4, &ipv4_tcp(REQUEST)));
    let read = read_all(file.bytes);
    assert_eq!(read.segments.len(), 1);
    match read.error {
        Some(SourceError::Corrupt { offset, .. }) => assert_eq!(offset, bad_at as u64),
        other => panic!("{other:?}"),
    }
}

#[test]
fn records_larger_than_the_buffer() {
    // A 700 000-byte record (a GSO super-packet as seen by tcpdump on the sender): grows the
    // buffer once, then reads on.
    let body = vec![b'b'; 60_000];
    let mut frame = ethernet(ETH_IPV4, &ipv4_tcp(&body));
    frame.resize(700_000, 0);
    let file = Pcap::new(1, false, false).record(1, 0, &frame).record(
        2,
        0,
        &ethernet(ETH_IPV4, &ipv4_tcp(REQUEST)),
    );
    let read = read_all(file.bytes);
    assert_eq!(read.segments.len(), 2, "{:?}", read.counters);
    assert_eq!(read.segments[0].payload.len(), 60_000);
    assert_request_v4(&read.segments[1]);
}

#[test]
fn absurd_record_length() {
    let mut file = Pcap::new(1, false, false).record(1, 0, &ethernet(ETH_IPV4, &ipv4_tcp(REQUEST)));
    let at = file.bytes.len();
    file.u32(2);
    file.u32(0);
    file.u32(0x7fff_ffff); // caplen
    file.u32(0x7fff_ffff);
    file.bytes.extend_from_slice(&[0; 100]);
    // At the end of the file: a cut-off last record.
    let read = read_all(file.bytes.clone());
    assert!(read.error.is_none());
    assert_eq!(read.segments.len(), 1);
    assert_eq!(read.source.truncated_at(), Some(at as u64));
    // With much more file behind it: corruption.
    let len = file.bytes.len();
    let mut source = PcapSource::from_reader(
        "big.pcap",
        Cursor::new(file.bytes),
        Some((len as u64) << 20),
    )
    .unwrap();
    assert!(source.next_segment().unwrap().is_some());
    match source.next_segment() {
        Err(SourceError::Corrupt { offset, .. }) => assert_eq!(offset, at as u64),
        other => panic!("{other:?}"),
    }
    assert!(source.next_segment().unwrap().is_none());
}

/// Fails every read after `after` bytes.
struct FailingReader {
    data: Cursor<Vec<u8>>,
    after: u64,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.data.position() >= self.after {
            return Err(io::Error::other("disk on fire"));
        }
        let room = (self.after - self.data.position()) as usize;
        let n = buf.len().min(room);
        self.data.read(&mut buf[..n])
    }
}

#[test]
fn io_errors_keep_their_cause() {
    // More than the first buffer's worth, so the failure comes while streaming.
    let mut file = Pcap::new(1, false, false);
    for i in 0..10_000 {
        file = file.record(i, 0, &ethernet(ETH_IPV4, &ipv4_tcp(REQUEST)));
    }
    let len = file.bytes.len() as u64;
    let reader = FailingReader {
        data: Cursor::new(file.bytes),
        after: len * 3 / 4,
    };
    let mut source = PcapSource::from_reader("failing.pcap", reader, Some(len)).unwrap();
    let mut segments = 0;
    let error = loop {
        match source.next_segment() {
            Ok(Some(_)) => segments += 1,
            Ok(None) => panic!("no error"),
            Err(error) => break error,
        }
    };
    assert!(segments > 1000 && segments < 10_000, "{segments}");
    assert!(matches!(error, SourceError::Io { .. }), "{error:?}");
    let cause = std::error::Error::source(&error).unwrap().to_string();
    assert_eq!(cause, "disk on fire");
    assert!(source.next_segment().unwrap().is_none());

    let reader = FailingReader {
        data: Cursor::new(Vec::new()),
        after: 0,
    };
    assert!(matches!(
        PcapSource::from_reader("failing.pcap", reader, None),
        Err(SourceError::Io { .. })
    ));
}

#[test]
fn open_files_on_disk() {
    let dir = std::env::temp_dir().join(format!("apis-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("one.pcap");
    let (bytes, _) = three_records();
    std::fs::write(&path, &bytes).unwrap();
    let mut source = PcapSource::open(&path).unwrap();
    assert_eq!(source.path(), path);
    assert_eq!(source.by_ref().count(), 3);
    assert_eq!(source.progress(), (bytes.len() as u64, bytes.len() as u64));
    let missing = dir.join("missing.pcap");
    let error = PcapSource::open(&missing).unwrap_err();
    assert!(matches!(error, SourceError::Io { .. }));
    assert!(error.to_string().contains("missing.pcap"));
    // A directory opens but does not read.
    assert!(matches!(
        PcapSource::open(&dir),
        Err(SourceError::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn timestamps_do_not_overflow() {
    assert_eq!(ng_timestamp_ns(u64::MAX, 1, 0), u64::MAX);
    assert_eq!(ng_timestamp_ns(5, 1, -10), 0);
    assert_eq!(ng_timestamp_ns(1_500, 1_000, i64::MAX), u64::MAX);
    assert_eq!(ng_timestamp_ns(3, 2, 0), 1_500_000_000);
    assert_eq!(units_per_second(6), Some(1_000_000));
    assert_eq!(units_per_second(0x80 | 10), Some(1024));
    assert_eq!(units_per_second(20), None);
    assert_eq!(units_per_second(0x80 | 64), None);
}

// ---------------------------------------------------------------------------------------------
// Robustness: prefixes, mutations, random bytes

/// Reads whatever `bytes` is, to the end or the first error; checks only that it does not
/// panic or loop and that the counters balance.
fn survive(bytes: Vec<u8>) {
    let Ok(mut source) = open(bytes) else {
        return;
    };
    let mut steps = 0;
    while let Ok(Some(_)) = source.next_segment() {
        steps += 1;
        assert!(steps < 1_000_000);
    }
    assert!(matches!(source.next_segment(), Ok(None)));
    assert_balanced(&source);
}

/// A file using most features: several link types, VLANs, IPv6 extensions, cut packets.
fn sample_files() -> Vec<Vec<u8>> {
    let body = vec![b'q'; 200];
    let frame = ethernet(ETH_IPV4, &ipv4_tcp(&body));
    vec![
        Pcap::new(1, false, false)
            .record(1, 0, &ethernet(ETH_IPV4, &ipv4_syn()))
            .record(
                2,
                0,
                &vlan_ethernet(
                    &[(ETH_QINQ, 1), (ETH_VLAN, 2)],
                    ETH_IPV6,
                    &ipv6_ext_tcp(REQUEST),
                ),
            )
            .record_cut(3, 0, &frame[..80], frame.len())
            .record(4, 0, &ethernet(ETH_IPV4, &ipv4_udp(b"u")))
            .bytes,
        Pcap::new(276, true, true)
            .record(1, 0, &sll2(772, ETH_IPV6, &ipv6_tcp(REQUEST)))
            .bytes,
        PcapNg::new(false)
            .interface(1, 0, Some(9), Some(-5))
            .interface(113, 128, None, None)
            .epb(0, 99, &ethernet(ETH_IPV4, &ipv4_tcp(REQUEST)))
            .epb_cut(1, 99, &sll(1, ETH_IPV4, &ipv4_tcp(&body))[..128], 16 + 240)
            .spb(&ethernet(ETH_IPV6, &ipv6_tcp(REQUEST)))
            .bytes,
        PcapNg::new(true)
            .interface(0, 0, None, None)
            .epb(0, 1, &null(2u32.to_le_bytes(), &ipv4_tcp(REQUEST)))
            .bytes,
    ]
}

#[test]
fn every_prefix_reads_or_stops_cleanly() {
    for file in sample_files() {
        let full = read_all(file.clone()).segments;
        for cut in 0..file.len() {
            let Ok(mut source) = open(file[..cut].to_vec()) else {
                continue;
            };
            let mut got = Vec::new();
            loop {
                match source.next_segment() {
                    Ok(Some(segment)) => got.push(segment),
                    Ok(None) => break,
                    Err(e) => panic!("prefix {cut}: {e}"),
                }
            }
            assert_balanced(&source);
            // What a prefix delivers is what the whole file delivers first.
            assert_eq!(got[..], full[..got.len()], "prefix {cut}");
        }
    }
}

#[test]
fn mutated_files_do_not_panic() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for file in sample_files() {
        for _ in 0..1500 {
            let mut bytes = file.clone();
            for _ in 0..=rng.below(8) {
                let at = rng.below(bytes.len());
                match rng.below(4) {
                    0 => bytes[at] = rng.next() as u8,
                    1 => bytes[at] ^= 1 << rng.below(8),
                    2 => bytes.truncate(at.max(1)),
                    _ => {
                        let n = rng.below(16);
                        let extra = rng.bytes(n);
                        bytes.splice(at..at, extra);
                    }
                }
            }
            survive(bytes);
        }
    }
}

#[test]
fn random_bytes_do_not_panic() {
    let mut rng = Rng(0x0ddb_a11c_afe0_0001);
    let pcap_header = Pcap::new(1, false, false).bytes;
    let ng_header = PcapNg::new(false).interface(1, 0, None, None).bytes;
    for round in 0..3000 {
        let len = rng.below(600);
        let mut bytes = match round % 3 {
            0 => Vec::new(),
            1 => pcap_header.clone(),
            _ => ng_header.clone(),
        };
        bytes.extend(rng.bytes(len));
        survive(bytes);
    }
    // Random packets behind valid record headers, for every link type.
    for linktype in [0, 1, 101, 108, 113, 228, 229, 276] {
        let mut file = Pcap::new(linktype, false, false);
        for _ in 0..2000 {
            let len = rng.below(120);
            let data = rng.bytes(len);
            let original = len + rng.below(3) * rng.below(100);
            file = file.record_cut(0, 0, &data, original);
        }
        survive(file.bytes);
    }
}
