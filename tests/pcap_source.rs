//! The capture fixtures in tests/data (real nginx, a real Python server, curl and a Python
//! client, recorded by tcpdump and dumpcap: see tests/data/README.md) read through
//! `PcapSource`.
//!
//! Every file must read to its end without error, its counters must add up, and every TCP
//! connection in it must come out whole: a SYN, then sequence space covered without holes by
//! captured payload plus the bytes the snaplen cut (`missing`), a client stream that starts
//! with an HTTP request line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
};

use apisessions::{
    segment::TcpSegment,
    source::{PcapCounters, PcapFormat, PcapSource},
};
use sensor_ebpf::tcp_flags;

const SERVER_PORTS: [u16; 2] = [8080, 8000];

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data")
}

struct Fixture {
    name: String,
    format: PcapFormat,
    segments: Vec<TcpSegment>,
    counters: PcapCounters,
}

fn read(path: &Path) -> Fixture {
    let mut source = PcapSource::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut segments = Vec::new();
    while let Some(segment) = source
        .next_segment()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    {
        segments.push(segment);
    }
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let (read, total) = source.progress();
    assert_eq!(read, total, "{name}: not read to the end");
    // packets == tcp_segments + Σ skip counters, through the named counters.
    let named = source.counters();
    let get = |wanted: &str| named.iter().find(|(n, _)| *n == wanted).unwrap().1;
    let skipped: u64 = PcapCounters::SKIP_COUNTERS.iter().map(|n| get(n)).sum();
    assert_eq!(
        get("packets"),
        get("tcp_segments") + skipped,
        "{name}: {named:?}"
    );
    assert_eq!(get("tcp_segments"), segments.len() as u64, "{name}");
    Fixture {
        name,
        format: source.format(),
        segments,
        counters: source.stats().clone(),
    }
}

fn fixtures() -> Vec<Fixture> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("pcap" | "pcapng")
            )
        })
        .collect();
    paths.sort();
    let fixtures: Vec<Fixture> = paths.iter().map(|path| read(path)).collect();
    let names: BTreeSet<&str> = fixtures.iter().map(|f| f.name.as_str()).collect();
    for expected in [
        "http-ethernet.pcap",
        "http-any.pcap",
        "http-vlan.pcap",
        "http-multi.pcapng",
        "http-snaplen.pcap",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from tests/data"
        );
    }
    fixtures
}

fn fixture<'a>(fixtures: &'a [Fixture], name: &str) -> &'a Fixture {
    fixtures.iter().find(|f| f.name == name).unwrap()
}

/// A connection: (client, server), by the server's well-known port.
type ConnectionKey = (SocketAddr, SocketAddr);

fn connections(segments: &[TcpSegment]) -> BTreeMap<ConnectionKey, Vec<&TcpSegment>> {
    let mut connections: BTreeMap<ConnectionKey, Vec<&TcpSegment>> = BTreeMap::new();
    for segment in segments {
        let key = if SERVER_PORTS.contains(&segment.dst.port()) {
            (segment.src, segment.dst)
        } else {
            (segment.dst, segment.src)
        };
        connections.entry(key).or_default().push(segment);
    }
    connections
}

/// One direction of a connection, from the byte after its SYN: checks that captured payload
/// plus `missing` covers the sequence space without holes, returns the captured bytes that
/// start the stream (up to the first cut).
fn stream_start(what: &str, segments: &[&TcpSegment]) -> Vec<u8> {
    let syn = segments
        .iter()
        .find(|s| s.has(tcp_flags::SYN))
        .unwrap_or_else(|| panic!("{what}: no SYN"));
    let start = syn.seq.wrapping_add(1);
    let mut pieces: BTreeMap<u32, &TcpSegment> = BTreeMap::new();
    for segment in segments {
        let len = segment.payload.len() as u32 + segment.missing;
        if len > 0 {
            let offset = segment.seq.wrapping_sub(start);
            let keep = pieces
                .get(&offset)
                .is_none_or(|p| p.payload.len() < segment.payload.len());
            if keep {
                pieces.insert(offset, segment);
            }
        }
    }
    let mut covered = 0u32;
    let mut captured = Vec::new();
    let mut cut = false;
    for (offset, segment) in pieces {
        assert!(
            offset <= covered,
            "{what}: hole before offset {offset} (covered {covered})"
        );
        let end = offset + segment.payload.len() as u32 + segment.missing;
        if !cut && offset + segment.payload.len() as u32 > covered {
            let skip = (covered - offset) as usize;
            captured.extend_from_slice(&segment.payload[skip.min(segment.payload.len())..]);
        }
        if segment.missing > 0 {
            cut = true;
        }
        covered = covered.max(end);
    }
    captured
}

fn is_request_line(stream: &[u8]) -> bool {
    let line_end = stream.windows(2).position(|w| w == b"\r\n");
    let Some(line) = line_end.map(|end| &stream[..end]) else {
        return false;
    };
    let line = String::from_utf8_lossy(line);
    let parts: Vec<&str> = line.split(' ').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && parts[0].bytes().all(|b| b.is_ascii_uppercase())
        && parts[1].starts_with('/')
        && (parts[2] == "HTTP/1.1" || parts[2] == "HTTP/1.0")
}

#[test]
fn every_fixture_reads_whole() {
    for fixture in fixtures() {
        let name = &fixture.name;
        let counters = &fixture.counters;
        assert_eq!(counters.truncated_file, 0, "{name}");
        assert_eq!(counters.malformed, 0, "{name}: {counters:?}");
        assert_eq!(counters.unsupported_linktype, 0, "{name}: {counters:?}");
        assert_eq!(counters.bad_interface, 0, "{name}: {counters:?}");
        assert!(!fixture.segments.is_empty(), "{name}");

        // Both servers, and SYNs towards them.
        for port in SERVER_PORTS {
            let syns = fixture
                .segments
                .iter()
                .filter(|s| {
                    s.dst.port() == port
                        && s.flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
                })
                .count();
            assert!(syns > 0, "{name}: no SYN to port {port}");
        }

        // Every connection: whole in both directions, and it starts with a request.
        let connections = connections(&fixture.segments);
        for ((client, server), segments) in &connections {
            let what = format!("{name} {client} -> {server}");
            assert!(
                SERVER_PORTS.contains(&server.port()),
                "{what}: unexpected port"
            );
            let (up, down): (Vec<&TcpSegment>, Vec<&TcpSegment>) =
                segments.iter().partition(|s| s.src == *client);
            let request = stream_start(&what, &up);
            stream_start(&format!("{what} (response)"), &down);
            assert!(
                is_request_line(&request),
                "{what}: {:?}",
                String::from_utf8_lossy(&request[..request.len().min(80)])
            );
            assert!(up.iter().any(|s| s.has(tcp_flags::FIN)), "{what}: no FIN");
        }

        // Timestamps: recent, and in capture order.
        let first = fixture.segments[0].ts_ns;
        assert!(first > 1_600_000_000_000_000_000, "{name}: {first}");
        assert!(
            fixture
                .segments
                .windows(2)
                .all(|w| w[0].ts_ns <= w[1].ts_ns),
            "{name}: timestamps go back"
        );
    }
}

#[test]
fn ethernet_fixture() {
    let fixtures = fixtures();
    let ethernet = fixture(&fixtures, "http-ethernet.pcap");
    assert_eq!(ethernet.format, PcapFormat::Pcap { nanosecond: false });
    assert_eq!(ethernet.counters.truncated_packets, 0);
    assert!(ethernet.segments.iter().all(|s| s.missing == 0));
    assert!(ethernet.segments.iter().any(|s| s.src.is_ipv4()));
    assert!(ethernet.segments.iter().any(|s| s.src.is_ipv6()));
    // The first connection to nginx starts with the keep-alive GET of /.
    let connections = connections(&ethernet.segments);
    let ((_, _), first) = connections
        .iter()
        .filter(|((_, server), _)| server.port() == 8080)
        .min_by_key(|(_, segments)| segments[0].ts_ns)
        .unwrap();
    let up: Vec<&TcpSegment> = first
        .iter()
        .copied()
        .filter(|s| s.dst.port() == 8080)
        .collect();
    let request = stream_start("first", &up);
    assert!(
        request.starts_with(b"GET / HTTP/1.1\r\n"),
        "{:?}",
        String::from_utf8_lossy(&request)
    );
    // The 300 000-byte download came through: some server->client stream is that long.
    let longest = connections
        .values()
        .map(|segments| {
            segments
                .iter()
                .filter(|s| SERVER_PORTS.contains(&s.src.port()))
                .map(|s| s.payload.len())
                .sum::<usize>()
        })
        .max()
        .unwrap();
    assert!(longest > 300_000, "{longest}");
}

#[test]
fn cooked_vlan_multi_interface_and_snaplen_fixtures() {
    let fixtures = fixtures();
    let loopback = |f: &Fixture| f.segments.iter().any(|s| s.src.ip().is_loopback());

    let any = fixture(&fixtures, "http-any.pcap");
    assert_eq!(any.format, PcapFormat::Pcap { nanosecond: true });
    assert!(loopback(any), "no loopback traffic in the cooked capture");
    // Nanosecond timestamps are not all whole microseconds.
    assert!(any.segments.iter().any(|s| s.ts_ns % 1000 != 0));

    let multi = fixture(&fixtures, "http-multi.pcapng");
    assert_eq!(multi.format, PcapFormat::PcapNg);
    assert!(loopback(multi), "no segments from the cooked interface");
    assert!(multi.segments.iter().any(|s| !s.src.ip().is_loopback()));

    let vlan = fixture(&fixtures, "http-vlan.pcap");
    assert!(vlan.segments.iter().any(|s| s.src.is_ipv4()));
    assert!(vlan.segments.iter().any(|s| s.src.is_ipv6()));

    let snaplen = fixture(&fixtures, "http-snaplen.pcap");
    assert!(snaplen.counters.truncated_packets > 0);
    assert!(snaplen.counters.segments_truncated > 0);
    assert!(
        snaplen.counters.bytes_truncated > 20_000,
        "{:?}",
        snaplen.counters
    );
}
