//! Live decoding: real nginx, real clients, the sensor on the server's veth, and the decoder fed
//! with what it captured. Every exchange the clients made must be reported exactly once, with
//! the status and body lengths the clients themselves saw.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    thread,
    time::Duration,
};

use apisessions::{
    capture::{AttachMode, Clock, ServerPorts},
    exchange::Exchange,
    flow::{FlowConfig, FlowTable},
    pipeline::{Collect, Pipeline},
    segment::TcpSegment,
};
use common::{LiveSensor, MIB_LEN, Nginx, Tcpdump, TestNet, in_namespace};

const PORT: u16 = 8080;

/// One exchange as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    client: SocketAddr,
    method: String,
    uri: String,
    status: u16,
    request_body: u64,
    response_body: u64,
}

/// A request to send.
struct Req {
    method: &'static str,
    uri: String,
    headers: &'static str,
    body: Vec<u8>,
}

fn req(method: &'static str, uri: impl Into<String>) -> Req {
    Req {
        method,
        uri: uri.into(),
        headers: "",
        body: Vec::new(),
    }
}

impl Req {
    fn bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nHost: test\r\nUser-Agent: decode-live\r\n{}",
            self.method, self.uri, self.headers
        )
        .into_bytes();
        if !self.body.is_empty() {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// Reads one response from `buf` (reading more from `stream` as needed): its status and body
/// length after removing chunked framing. Independent of the decoder under test.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> (u16, u64) {
    let fill = |stream: &mut TcpStream, buf: &mut Vec<u8>| {
        let mut chunk = [0u8; 65536];
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "server closed early");
        buf.extend_from_slice(&chunk[..n]);
    };
    let (head_len, status, length, chunked) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) = response.parse(buf).unwrap() {
            let header = |name: &str| {
                response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned())
            };
            let length = header("content-length").map(|v| v.parse::<u64>().unwrap());
            let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
            break (len, response.code.unwrap(), length, chunked);
        }
        fill(stream, buf);
    };
    buf.drain(..head_len);
    if head_request || status == 204 || status == 304 {
        return (status, 0);
    }
    if !chunked {
        let length = length.expect("nginx sends a length or chunks") as usize;
        while buf.len() < length {
            fill(stream, buf);
        }
        buf.drain(..length);
        return (status, length as u64);
    }
    let mut body = 0u64;
    loop {
        let (used, size) = loop {
            if let Ok(httparse::Status::Complete(done)) = httparse::parse_chunk_size(buf) {
                break done;
            }
            fill(stream, buf);
        };
        buf.drain(..used);
        let size = size as usize;
        if size == 0 {
            while !buf.starts_with(b"\r\n") {
                fill(stream, buf);
            }
            buf.drain(..2);
            return (status, body);
        }
        while buf.len() < size + 2 {
            fill(stream, buf);
        }
        buf.drain(..size + 2);
        body += size as u64;
    }
}

/// Sends `requests` on one connection; `pipelined` writes them all before reading.
fn connection(server: SocketAddr, requests: &[Req], pipelined: bool) -> Vec<Seen> {
    let mut stream = TcpStream::connect(server).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let client = stream.local_addr().unwrap();
    let mut buf = Vec::new();
    let mut seen = Vec::new();
    let record = |request: &Req, (status, response_body): (u16, u64)| Seen {
        client,
        method: request.method.to_owned(),
        uri: request.uri.clone(),
        status,
        request_body: request.body.len() as u64,
        response_body,
    };
    if pipelined {
        let all: Vec<u8> = requests.iter().flat_map(Req::bytes).collect();
        stream.write_all(&all).unwrap();
        for request in requests {
            let response = read_response(&mut stream, &mut buf, request.method == "HEAD");
            seen.push(record(request, response));
        }
    } else {
        for request in requests {
            stream.write_all(&request.bytes()).unwrap();
            let response = read_response(&mut stream, &mut buf, request.method == "HEAD");
            seen.push(record(request, response));
        }
    }
    seen
}

fn scenario(net: &TestNet) -> Vec<Seen> {
    let v4 = net.server_addr(false, PORT);
    let v6 = net.server_addr(true, PORT);
    let mut seen = Vec::new();
    // Keep-alive: 100 requests one after another on one connection.
    let keep_alive: Vec<Req> = (0..100)
        .map(|i| req("GET", format!("/small.txt?i={i}")))
        .collect();
    seen.extend(connection(v4, &keep_alive, false));
    // Pipelining: ten requests written at once, including HEAD and 204 (no bodies).
    let pipelined: Vec<Req> = (0..10)
        .map(|i| match i % 3 {
            0 => req("GET", format!("/small.txt?p={i}")),
            1 => req("HEAD", format!("/mib.bin?p={i}")),
            _ => req("GET", format!("/empty?p={i}")),
        })
        .collect();
    seen.extend(connection(v6, &pipelined, true));
    // Chunked (gzip on the fly), 304, a 1 MiB download and a 1 MiB upload.
    let gzip = Req {
        headers: "Accept-Encoding: gzip\r\n",
        ..req("GET", "/text.txt")
    };
    let not_modified = Req {
        headers: "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n",
        ..req("GET", "/small.txt?c=1")
    };
    let upload = Req {
        body: vec![b'u'; MIB_LEN],
        ..req("PUT", "/uploads/one.bin")
    };
    seen.extend(connection(
        v4,
        &[gzip, not_modified, req("GET", "/mib.bin"), upload],
        false,
    ));
    // 50 concurrent connections.
    let concurrent: Vec<Vec<Seen>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let server = if i % 2 == 0 { v4 } else { v6 };
                scope.spawn(move || {
                    let request = Req {
                        headers: "Connection: close\r\n",
                        ..req("GET", format!("/small.txt?k={i}"))
                    };
                    connection(server, &[request], false)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    seen.extend(concurrent.into_iter().flatten());
    seen
}

fn as_seen(exchange: &Exchange) -> Seen {
    let request = exchange
        .request
        .as_ref()
        .expect("every exchange has its request");
    let response = exchange
        .response
        .as_ref()
        .expect("every exchange has its response");
    Seen {
        client: exchange.client,
        method: request.method.clone(),
        uri: request.uri.clone(),
        status: response.status.unwrap_or(0),
        request_body: request.meta.body_len,
        response_body: response.meta.body_len,
    }
}

#[test]
fn every_exchange_is_decoded_once_with_its_status_and_lengths() {
    let net = TestNet::new();
    let nginx = Nginx::start(&net, PORT);
    let sensor = LiveSensor::start(&net, AttachMode::Tcx, vec![PORT]);
    let mut expected = in_namespace(&net.client_ns, || scenario(&net));
    let captured = sensor.stop();
    drop(nginx);

    let clock = Clock::new();
    let mut table = FlowTable::new(FlowConfig {
        server_ports: ServerPorts::new(&[PORT]),
        ..FlowConfig::default()
    });
    let mut exchanges = Vec::new();
    for segment in captured.segments {
        table.push(TcpSegment::from_capture(segment, &clock), &mut exchanges);
    }
    table.finish(&mut exchanges);

    for exchange in &exchanges {
        assert!(!exchange.gap(), "no capture loss, so no gaps: {exchange:?}");
        let response = exchange.response.as_ref().unwrap();
        assert!(
            !response.meta.truncated || response.meta.body_len > 16 * 1024,
            "only the body cap cuts"
        );
        assert!(exchange.ttfb_ms().is_some_and(|t| t >= 0.0));
    }
    let mut decoded: Vec<Seen> = exchanges.iter().map(as_seen).collect();
    decoded.sort();
    expected.sort();
    assert_eq!(
        decoded.len(),
        expected.len(),
        "exactly once: {} decoded, {} made",
        decoded.len(),
        expected.len()
    );
    assert_eq!(decoded.len(), 100 + 10 + 4 + 50);
    let mismatches: Vec<(&Seen, &Seen)> = decoded
        .iter()
        .zip(&expected)
        .filter(|(d, e)| d != e)
        .collect();
    assert!(mismatches.is_empty(), "decoded vs made: {mismatches:#?}");

    // The interesting cases really happened.
    let by_status: BTreeMap<u16, usize> = expected.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(s.status).or_default() += 1;
        m
    });
    assert!(
        by_status.contains_key(&204)
            && by_status.contains_key(&304)
            && by_status.contains_key(&201)
    );
    assert!(expected.iter().any(|s| s.response_body == MIB_LEN as u64));
    assert!(expected.iter().any(|s| s.request_body == MIB_LEN as u64));
    let c = &table.http_counters;
    assert_eq!(
        (
            c.parse_errors,
            c.resyncs,
            c.requests_without_response,
            c.responses_without_request
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(table.stream_counters.gaps, 0);
}

/// The same traffic, captured live by the sensor and by tcpdump into a file: `import` of the
/// file and the live path report the same exchanges.
#[test]
fn import_of_a_capture_reports_what_the_live_path_reports() {
    let net = TestNet::new();
    let _nginx = Nginx::start(&net, PORT);
    let tcpdump = Tcpdump::start(&net, PORT);
    let sensor = LiveSensor::start(&net, AttachMode::Tcx, vec![PORT]);
    let made = in_namespace(&net.client_ns, || scenario(&net));
    let captured = sensor.stop();
    thread::sleep(Duration::from_millis(300));
    let pcap = tcpdump.stop();

    let clock = Clock::new();
    let mut table = FlowTable::new(FlowConfig {
        server_ports: ServerPorts::new(&[PORT]),
        ..FlowConfig::default()
    });
    let mut live = Vec::new();
    for segment in captured.segments {
        table.push(TcpSegment::from_capture(segment, &clock), &mut live);
    }
    table.finish(&mut live);

    let mut source = apisessions::source::PcapSource::open(&pcap).unwrap();
    let collected = Collect::default();
    let mut pipeline = Pipeline::decoder(
        FlowConfig {
            server_ports: ServerPorts::new(&[PORT]),
            ..FlowConfig::default()
        },
        apisessions::proxy::ProxyConfig::default(),
    )
    .with_sink(Box::new(collected.clone()));
    let summary =
        apisessions::import::run(std::slice::from_mut(&mut source), &mut pipeline, |_, _| {})
            .unwrap();
    let imported = collected.take();
    // A clean capture decodes cleanly; only the body cap cuts (the two 1 MiB bodies). Two
    // counters are TCP at work on a loaded machine, not decoding anomalies: a retransmitted
    // segment (tail loss probes fire when ACKs are late; both paths keep its first copy), and a
    // segment that arrives after its successors (the receiving veth's backlog dropped it before
    // any tap saw it, and its retransmission comes later: both paths see that order and put it
    // back in place). The exchanges themselves must still be the same, below.
    let anomalies: Vec<(String, u64)> = summary
        .anomalies()
        .into_iter()
        .filter(|(name, _)| {
            name != "reassembly.duplicate_segments" && name != "reassembly.out_of_order_segments"
        })
        .collect();
    assert_eq!(anomalies, [("http.bodies_truncated".to_owned(), 2)]);

    let mut live: Vec<Seen> = live.iter().map(as_seen).collect();
    let mut imported: Vec<Seen> = imported.iter().map(as_seen).collect();
    live.sort();
    imported.sort();
    assert_eq!(live.len(), made.len());
    assert_eq!(imported, live);
    let _ = std::fs::remove_file(pcap);
}

const BIN: &str = env!("CARGO_BIN_EXE_apisessions");
/// The download and the upload of the skipping test: far past the body cap (16 KiB).
const LARGE_LEN: usize = 8 << 20;
const UPLOAD_LEN: usize = 4 << 20;

/// Lever 1 of the performance work: once the daemon's decoder has kept a body's first 16 KiB
/// and knows its length, the kernel sends only the lengths of the segments that carry the
/// rest. Real nginx, real curl (rate-limited, with a 256 KiB receive buffer, so the body is
/// still on its way when the daemon asks, as it is for any body that takes longer than a
/// moment to send): an 8 MiB download
/// followed by a small one on the same connection, and a 4 MiB upload. The records keep the
/// exact body lengths without a gap, the small response after the skipped body is decoded
/// whole, and most of the large bodies never crossed the ring.
#[test]
fn a_daemon_has_the_kernel_skip_long_bodies_past_the_cap_and_records_them_whole() {
    let net = TestNet::new();
    let nginx = Nginx::start(&net, PORT);
    std::fs::write(nginx.root.join("large.bin"), vec![b'L'; LARGE_LEN]).unwrap();
    // A client whose receive buffer holds 256 KiB, as one behind a real network's window would:
    // on veth the kernel otherwise tunes it to several MiB, and nginx's first burst fills it
    // before any daemon could have read the response's head.
    let status = TestNet::command(&net.client_ns, "sysctl")
        .args(["-qw", "net.ipv4.tcp_rmem=4096 131072 262144"])
        .status()
        .unwrap();
    assert!(status.success(), "sysctl in the client's namespace");
    let data_dir = std::env::temp_dir().join(format!("apis-skip-{}", net.server_ns));
    let _ = std::fs::remove_dir_all(&data_dir);
    let upload = data_dir.with_extension("upload");
    std::fs::write(&upload, vec![b'U'; UPLOAD_LEN]).unwrap();
    let daemon = common::KillOnDrop(common::start_daemon(&net, BIN, &[PORT], &data_dir));

    let base = format!("http://{}", net.server_addr(false, PORT));
    let curl = |args: &[&str]| {
        let out = TestNet::command(&net.client_ns, "curl")
            .args(["-sS", "--fail", "--limit-rate", "40M", "-o", "/dev/null"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Two URLs in one curl: one keep-alive connection.
    curl(&[
        &format!("{base}/large.bin"),
        "-o",
        "/dev/null",
        &format!("{base}/small.txt"),
    ]);
    curl(&[
        "-T",
        upload.to_str().unwrap(),
        &format!("{base}/uploads/up.bin"),
    ]);

    let records = || common::exported(BIN, &data_dir);
    assert!(
        common::wait_until(Duration::from_secs(15), || records().len() >= 3),
        "three exchanges recorded: {:?}",
        records()
    );
    let records = records();
    let find = |uri: &str| {
        records
            .iter()
            .find(|r| r["uri"] == uri)
            .unwrap_or_else(|| panic!("no record of {uri}: {records:?}"))
    };
    let (large, small, put) = (
        find("/large.bin"),
        find("/small.txt"),
        find("/uploads/up.bin"),
    );
    // The named fields of a record, in order.
    let fields = |record: &serde_json::Value, names: &[&str]| {
        serde_json::Value::Array(names.iter().map(|n| record[n].clone()).collect())
    };
    let response = [
        "status_code",
        "response_body_len",
        "gap",
        "response_truncated",
    ];
    let request = [
        "status_code",
        "request_body_len",
        "gap",
        "request_truncated",
    ];
    use serde_json::json;
    assert_eq!(
        fields(large, &response),
        json!([200, LARGE_LEN, false, true]),
        "{large}"
    );
    assert_eq!(small["client_port"], large["client_port"], "one connection");
    let small_len = common::SMALL_BODY.len();
    assert_eq!(
        fields(small, &response),
        json!([200, small_len, false, false]),
        "{small}"
    );
    assert_eq!(
        fields(put, &request),
        json!([201, UPLOAD_LEN, false, true]),
        "{put}"
    );

    let counter = |stage, name| common::counter(BIN, &data_dir, stage, name);
    let skipped = counter("kernel", "skipped_bytes");
    let submitted = counter("kernel", "bytes_submitted");
    eprintln!("kernel: {skipped} bytes skipped, {submitted} bytes submitted");
    assert!(counter("flows", "skip_hints") >= 2, "a hint per large body");
    // Most of the 12 MiB never crossed the ring; what did is the heads, the kept 16 KiB of
    // each body, and what was sent before the hints arrived.
    assert!(
        skipped >= ((LARGE_LEN + UPLOAD_LEN) / 2) as u64,
        "skipped {skipped}"
    );
    assert!(
        submitted < ((LARGE_LEN + UPLOAD_LEN) / 4) as u64,
        "submitted {submitted}"
    );
    // Every skipped segment reached the decoder as known bytes: none of it is a gap.
    assert_eq!(counter("reassembly", "gap_bytes"), 0);
    assert_eq!(
        counter("reassembly", "skipped_bytes"),
        counter("http", "body_bytes_skipped")
    );
    assert!(counter("http", "body_bytes_skipped") >= skipped / 2);
    // The ranges went with their connections: a later connection on the same ports finds none.
    assert!(
        common::wait_until(Duration::from_secs(5), || skip_ranges_in_the_kernel() == 0),
        "{} skip ranges left in the kernel",
        skip_ranges_in_the_kernel()
    );

    drop(daemon);
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_file(&upload);
}

/// Ranges in every loaded `SKIP` map (this binary's other tests load the programs without a
/// daemon, whose maps stay empty).
fn skip_ranges_in_the_kernel() -> usize {
    use aya::maps::{HashMap, Map, MapData, loaded_maps};
    use sensor_ebpf::{SkipKey, SkipRange};
    loaded_maps()
        .filter_map(Result::ok)
        .filter(|info| info.name_as_str() == Some(sensor_ebpf::names::SKIP))
        .filter_map(|info| {
            let map = Map::from_map_data(MapData::from_id(info.id()).ok()?).ok()?;
            let ranges: HashMap<_, SkipKey, SkipRange> = HashMap::try_from(map).ok()?;
            Some(ranges.keys().filter_map(Result::ok).count())
        })
        .sum()
}
