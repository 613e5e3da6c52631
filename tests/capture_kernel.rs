//! The capture programs in the real kernel, driven by BPF_PROG_TEST_RUN on hand-built packets.
//!
//! Each test loads its own copy of the programs (own maps), runs packets through them and reads
//! back the ring buffer and the counters. Needs root (CAP_BPF).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use apisessions::capture::{
    CaptureOptions, CaptureProgram, KernelCounters, Segment, event::decode,
};
use aya::programs::{TestRun, TestRunOptions};
use sensor_ebpf::{Direction, iface, names, tcp_flags};

const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const SERVER4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const PSH_ACK: u8 = tcp_flags::PSH | tcp_flags::ACK;

// ---- packet building -------------------------------------------------------------------------

fn ethernet(ethertype: u16) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

struct Tcp<'a> {
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &'a [u8],
}

impl Tcp<'_> {
    fn request(payload: &[u8]) -> Tcp<'_> {
        Tcp {
            sport: 40000,
            dport: 8080,
            seq: 1000,
            ack: 2000,
            flags: PSH_ACK,
            payload,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&self.sport.to_be_bytes());
        tcp.extend_from_slice(&self.dport.to_be_bytes());
        tcp.extend_from_slice(&self.seq.to_be_bytes());
        tcp.extend_from_slice(&self.ack.to_be_bytes());
        // 32-byte header: 12 bytes of options (NOP NOP timestamp), as Linux sends.
        tcp.push(8 << 4);
        tcp.push(self.flags);
        tcp.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        tcp.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        tcp.extend_from_slice(self.payload);
        tcp
    }
}

fn ipv4_header(total_len: usize, protocol: u8, fragment: u16) -> Vec<u8> {
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&(total_len as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1]);
    ip.extend_from_slice(&fragment.to_be_bytes());
    ip.extend_from_slice(&[64, protocol, 0, 0]);
    ip.extend_from_slice(&CLIENT4.octets());
    ip.extend_from_slice(&SERVER4.octets());
    ip
}

fn ipv4_packet(tcp: &Tcp<'_>) -> Vec<u8> {
    let segment = tcp.bytes();
    let mut frame = ethernet(0x0800);
    frame.extend(ipv4_header(20 + segment.len(), 6, 0x4000));
    frame.extend(segment);
    frame
}

/// IPv6 with a hop-by-hop and a destination-options header before TCP.
fn ipv6_packet(tcp: &Tcp<'_>) -> Vec<u8> {
    let segment = tcp.bytes();
    let hop_by_hop = [60u8, 0, 1, 4, 0, 0, 0, 0]; // next: dest opts, PadN
    let dest_opts = [6u8, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]; // next: TCP, 16 bytes
    let payload_len = hop_by_hop.len() + dest_opts.len() + segment.len();
    let mut frame = ethernet(0x86DD);
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(&(payload_len as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 64]); // next: hop-by-hop
    frame.extend_from_slice(&CLIENT6.octets());
    frame.extend_from_slice(&SERVER6.octets());
    frame.extend_from_slice(&hop_by_hop);
    frame.extend_from_slice(&dest_opts);
    frame.extend(segment);
    frame
}

// ---- running the programs ---------------------------------------------------------------------

fn load(options: CaptureOptions) -> CaptureProgram {
    let mut program = CaptureProgram::load(&CaptureOptions {
        ports: vec![8080],
        ..options
    })
    .expect("loading the capture programs (run the tests as root)");
    program.enable().unwrap();
    program
}

fn default_program() -> CaptureProgram {
    load(CaptureOptions::default())
}

/// Runs `packet` through a TC program; asserts it passes unchanged and returns what it returned.
fn run_tc(program: &mut CaptureProgram, name: &'static str, packet: &[u8]) -> i32 {
    run_tc_repeat(program, name, packet, 1)
}

fn run_tc_repeat(
    program: &mut CaptureProgram,
    name: &'static str,
    packet: &[u8],
    repeat: u32,
) -> i32 {
    let mut out = vec![0u8; packet.len() + 256];
    let result = program
        .classifier(name)
        .unwrap()
        .test_run(TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::default()
        })
        .unwrap();
    assert_eq!(
        &out[..result.data_size_out as usize],
        packet,
        "the packet must pass unchanged"
    );
    result.return_value as i32
}

fn drain(program: &mut CaptureProgram) -> Vec<Segment> {
    let mut ring = program.take_ring().unwrap();
    let mut segments = Vec::new();
    while let Some(item) = ring.next() {
        segments.push(decode(&item).unwrap());
    }
    segments
}

fn counters(program: &CaptureProgram) -> KernelCounters {
    program.counters().unwrap()
}

fn v4(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

// ---- tests ------------------------------------------------------------------------------------

#[test]
fn ipv4_segment_of_a_watched_port_is_delivered_with_its_payload() {
    let mut program = default_program();
    let payload = b"GET /users/1 HTTP/1.1\r\nHost: api\r\n\r\n";
    let verdict = run_tc(
        &mut program,
        names::TC_INGRESS,
        &ipv4_packet(&Tcp::request(payload)),
    );
    assert_eq!(
        verdict, -1,
        "TC_ACT_UNSPEC / TCX_NEXT: leave the packet to the rest of the stack"
    );
    let segments = drain(&mut program);
    assert_eq!(segments.len(), 1);
    let segment = &segments[0];
    assert_eq!(segment.src, v4(CLIENT4, 40000));
    assert_eq!(segment.dst, v4(SERVER4, 8080));
    assert_eq!(
        (segment.seq, segment.ack, segment.tcp_flags),
        (1000, 2000, PSH_ACK)
    );
    assert_eq!(segment.direction, Direction::Ingress);
    assert_eq!(segment.payload, payload);
    assert_eq!(segment.segment_len as usize, payload.len());
    assert!(!segment.truncated && !segment.more_chunks);
    let c = counters(&program);
    assert_eq!(
        (c["packets"], c["tcp_segments"], c["events_submitted"]),
        (1, 1, 1)
    );
    assert_eq!(c["bytes_submitted"], payload.len() as u64);
    assert_eq!(
        c["ring_full"] + c["load_errors"] + c["segments_truncated"],
        0
    );
}

#[test]
fn egress_program_marks_the_direction_and_matches_the_source_port() {
    let mut program = default_program();
    let response = Tcp {
        sport: 8080,
        dport: 40000,
        ..Tcp::request(b"HTTP/1.1 200 OK\r\n\r\n")
    };
    run_tc(&mut program, names::TC_EGRESS, &ipv4_packet(&response));
    let segments = drain(&mut program);
    assert_eq!(segments.len(), 1);
    assert_eq!(segments[0].direction, Direction::Egress);
    assert_eq!(segments[0].src.port(), 8080);
}

#[test]
fn ipv6_with_extension_headers_is_parsed_to_the_tcp_payload() {
    let mut program = default_program();
    let payload = b"POST /login HTTP/1.1\r\n\r\n";
    run_tc(
        &mut program,
        names::TC_INGRESS,
        &ipv6_packet(&Tcp::request(payload)),
    );
    let segments = drain(&mut program);
    assert_eq!(segments.len(), 1);
    assert_eq!(segments[0].src, SocketAddr::new(IpAddr::V6(CLIENT6), 40000));
    assert_eq!(segments[0].dst, SocketAddr::new(IpAddr::V6(SERVER6), 8080));
    assert_eq!(segments[0].payload, payload);
}

#[test]
fn unwatched_ports_and_non_tcp_packets_are_ignored_until_all_ports_mode() {
    let other_port = Tcp {
        dport: 9999,
        ..Tcp::request(b"hello")
    };
    let mut udp = ethernet(0x0800);
    let udp_body = [
        0x9c, 0x40, 0x1f, 0x90, 0, 13, 0, 0, b'h', b'e', b'l', b'l', b'o',
    ];
    udp.extend(ipv4_header(20 + udp_body.len(), 17, 0));
    udp.extend_from_slice(&udp_body);
    let mut arp = ethernet(0x0806);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0; 20]);

    let mut program = default_program();
    for packet in [ipv4_packet(&other_port), udp.clone(), arp.clone()] {
        run_tc(&mut program, names::TC_INGRESS, &packet);
    }
    assert!(drain(&mut program).is_empty());
    let c = counters(&program);
    assert_eq!(
        (c["packets"], c["tcp_segments"], c["events_tried"]),
        (3, 0, 0)
    );

    let mut all_ports = load(CaptureOptions {
        all_ports: true,
        ..CaptureOptions::default()
    });
    for packet in [ipv4_packet(&other_port), udp, arp] {
        run_tc(&mut all_ports, names::TC_INGRESS, &packet);
    }
    let segments = drain(&mut all_ports);
    assert_eq!(segments.len(), 1, "only the TCP segment, on any port");
    assert_eq!(segments[0].dst.port(), 9999);
}

#[test]
fn syn_fin_and_rst_are_delivered_without_payload_but_pure_acks_are_not() {
    let mut program = default_program();
    for flags in [
        tcp_flags::SYN,
        tcp_flags::FIN | tcp_flags::ACK,
        tcp_flags::RST,
        tcp_flags::ACK,
    ] {
        run_tc(
            &mut program,
            names::TC_INGRESS,
            &ipv4_packet(&Tcp {
                flags,
                ..Tcp::request(b"")
            }),
        );
    }
    let flags: Vec<u8> = drain(&mut program).iter().map(|s| s.tcp_flags).collect();
    assert_eq!(
        flags,
        [
            tcp_flags::SYN,
            tcp_flags::FIN | tcp_flags::ACK,
            tcp_flags::RST
        ]
    );
    let c = counters(&program);
    assert_eq!(
        (c["tcp_segments"], c["pure_acks"], c["events_submitted"]),
        (4, 1, 3)
    );
}

#[test]
fn payload_beyond_the_snaplen_is_cut_flagged_and_counted() {
    let mut program = load(CaptureOptions {
        snaplen: 100,
        ..CaptureOptions::default()
    });
    let payload: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    run_tc(
        &mut program,
        names::TC_INGRESS,
        &ipv4_packet(&Tcp::request(&payload)),
    );
    let segments = drain(&mut program);
    assert_eq!(segments.len(), 1);
    assert_eq!(segments[0].payload, &payload[..100]);
    assert_eq!(segments[0].segment_len, 1000);
    assert!(segments[0].truncated);
    let c = counters(&program);
    assert_eq!(
        (
            c["segments_truncated"],
            c["bytes_truncated"],
            c["bytes_submitted"]
        ),
        (1, 900, 100)
    );
}

#[test]
fn ethernet_padding_is_not_taken_for_payload() {
    let mut program = default_program();
    let mut packet = ipv4_packet(&Tcp::request(b"GET /"));
    packet.extend_from_slice(&[0xee; 20]); // trailer after the IP packet, as short frames carry
    run_tc(&mut program, names::TC_INGRESS, &packet);
    let segments = drain(&mut program);
    assert_eq!(segments[0].payload, b"GET /");
}

#[test]
fn vlan_tagged_frames_are_parsed_through_the_tag() {
    let mut program = default_program();
    let untagged = ipv4_packet(&Tcp::request(b"GET /vlan"));
    let mut tagged = ethernet(0x8100);
    tagged.extend_from_slice(&[0x00, 0x2a, 0x08, 0x00]); // VLAN 42, inner ethertype IPv4
    tagged.extend_from_slice(&untagged[14..]);
    run_tc(&mut program, names::TC_INGRESS, &tagged);
    let segments = drain(&mut program);
    assert_eq!(segments.len(), 1);
    assert_eq!(segments[0].payload, b"GET /vlan");
}

#[test]
fn ip_fragments_are_counted_not_parsed() {
    let mut program = default_program();
    let mut packet = ethernet(0x0800);
    let body = Tcp::request(b"fragment").bytes();
    packet.extend(ipv4_header(20 + body.len(), 6, 0x2000)); // more fragments
    packet.extend(body);
    run_tc(&mut program, names::TC_INGRESS, &packet);
    assert!(drain(&mut program).is_empty());
    assert_eq!(counters(&program)["ip_fragments"], 1);
}

#[test]
fn nothing_is_captured_before_the_program_is_enabled() {
    let mut program = CaptureProgram::load(&CaptureOptions {
        ports: vec![8080],
        ..CaptureOptions::default()
    })
    .unwrap();
    run_tc(
        &mut program,
        names::TC_INGRESS,
        &ipv4_packet(&Tcp::request(b"early")),
    );
    assert!(drain(&mut program).is_empty());
    assert_eq!(counters(&program)["packets"], 1);
}

#[test]
fn socket_filter_captures_and_keeps_nothing_on_the_socket() {
    let mut program = default_program();
    // BPF_PROG_TEST_RUN hands socket filters the packet from the IP header on (an AF_PACKET socket
    // would start at the link layer): describe the test device accordingly.
    program.set_interface(loopback_ifindex(), 0).unwrap();
    let packet = ipv4_packet(&Tcp::request(b"GET /socket"));
    let result = program
        .socket_filter()
        .unwrap()
        .test_run(TestRunOptions {
            data_in: Some(&packet),
            ..TestRunOptions::default()
        })
        .unwrap();
    assert_eq!(result.return_value, 0, "the socket keeps no bytes");
    let segments = drain(&mut program);
    assert_eq!(segments.len(), 1);
    assert_eq!(segments[0].payload, b"GET /socket");
    assert_eq!(segments[0].direction, Direction::Ingress);
}

#[test]
fn loopback_egress_is_skipped_when_the_interface_says_so() {
    let mut program = default_program();
    program
        .set_interface(
            loopback_ifindex(),
            iface::L2_ETHERNET | iface::IGNORE_EGRESS,
        )
        .unwrap();
    let packet = ipv4_packet(&Tcp::request(b"twice on lo"));
    run_tc(&mut program, names::TC_EGRESS, &packet);
    run_tc(&mut program, names::TC_INGRESS, &packet);
    let segments = drain(&mut program);
    assert_eq!(segments.len(), 1);
    assert_eq!(segments[0].direction, Direction::Ingress);
}

#[test]
fn bridge_ingress_is_skipped_and_counted_when_the_interface_says_so() {
    let mut program = default_program();
    program
        .set_interface(
            loopback_ifindex(),
            iface::L2_ETHERNET | iface::IGNORE_INGRESS,
        )
        .unwrap();
    let packet = ipv4_packet(&Tcp::request(b"bridge and port"));
    run_tc(&mut program, names::TC_INGRESS, &packet);
    run_tc(&mut program, names::TC_EGRESS, &packet);
    let segments = drain(&mut program);
    assert_eq!(segments.len(), 1);
    assert_eq!(segments[0].direction, Direction::Egress);
    let c = counters(&program);
    assert_eq!(c["copies_skipped"], 1);
    assert_eq!(c["events_submitted"], 1);
}

#[test]
fn a_tiny_ring_drops_and_every_drop_is_counted() {
    let mut program = load(CaptureOptions {
        ring_bytes: 4096,
        ..CaptureOptions::default()
    });
    let tries = 500;
    let packet = ipv4_packet(&Tcp::request(&[b'x'; 200]));
    run_tc_repeat(&mut program, names::TC_INGRESS, &packet, tries);
    let delivered = drain(&mut program).len() as u64;
    let c = counters(&program);
    assert_eq!(c["events_tried"], u64::from(tries));
    assert!(
        c["ring_full"] > 0,
        "a 4 KiB ring cannot hold {tries} events of 272 bytes"
    );
    assert_eq!(c["events_submitted"] + c["ring_full"], c["events_tried"]);
    assert_eq!(
        delivered, c["events_submitted"],
        "every submitted event is read back"
    );
    assert_eq!(c["ring_full_bytes"], 200 * c["ring_full"]);
    assert_eq!(
        c["bytes_submitted"] + c["ring_full_bytes"],
        200 * u64::from(tries)
    );
}

/// The loopback device BPF_PROG_TEST_RUN attaches its packets to.
fn loopback_ifindex() -> u32 {
    apisessions::capture::Interface::by_name("lo")
        .unwrap()
        .ifindex
}
