//! Live capture: real nginx, real clients, the sensor attached to a real veth in a namespace.
//!
//! Every byte that client and server exchanged must come out of the ring buffer, in every
//! attach mode, and the counters must add up. The daemon must leave nothing attached behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeMap,
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, Stdio},
    thread,
    time::Duration,
};

use apisessions::{
    capture::{AttachMode, Segment},
    stats::StatsReport,
};
use aya::programs::{SchedClassifier, TcAttachType};
use common::{
    BIG_LEN, Captured, LiveSensor, Nginx, SMALL_BODY, TestNet, in_namespace, sh, wait_until,
};
use sensor_ebpf::tcp_flags;

const PORT: u16 = 8080;

/// What one client connection sent and received.
struct Conversation {
    local: SocketAddr,
    sent: Vec<u8>,
    received: Vec<u8>,
}

/// One connection: write all requests, read until the server closes.
fn converse(server: SocketAddr, requests: &[String]) -> Conversation {
    let mut stream = TcpStream::connect(server).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let local = stream.local_addr().unwrap();
    let sent: Vec<u8> = requests.concat().into_bytes();
    stream.write_all(&sent).unwrap();
    let mut received = Vec::new();
    stream.read_to_end(&mut received).unwrap();
    Conversation {
        local,
        sent,
        received,
    }
}

fn get(path: &str, close: bool, extra: &str) -> String {
    let connection = if close { "close" } else { "keep-alive" };
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUser-Agent: live-test\r\n{extra}Connection: {connection}\r\n\r\n"
    )
}

/// The client side of the test: a mix of small and large responses, a large request, pipelining,
/// over IPv4 and IPv6.
fn run_clients(net: &TestNet) -> Vec<Conversation> {
    let big_header = format!("X-Padding: {}\r\n", "p".repeat(6000));
    let mut conversations = Vec::new();
    for round in 0..6 {
        let v6 = round % 2 == 1;
        let server = net.server_addr(v6, PORT);
        conversations.push(converse(server, &[get("/small.txt", true, "")]));
        conversations.push(converse(server, &[get("/big.bin", true, "")]));
        conversations.push(converse(server, &[get("/small.txt", true, &big_header)]));
        conversations.push(converse(
            server,
            &[
                get("/small.txt", false, ""),
                get("/big.bin", false, ""),
                get("/missing", true, ""),
            ],
        ));
    }
    conversations
}

/// Orders one direction of a connection by sequence number, from the byte after the SYN, and
/// checks that every byte is there exactly once (retransmitted copies must agree).
fn reassemble(segments: &[&Segment]) -> Vec<u8> {
    let syn = segments
        .iter()
        .find(|s| s.has(tcp_flags::SYN))
        .expect("the SYN was captured");
    let start = syn.seq.wrapping_add(1);
    let mut pieces: BTreeMap<u32, &[u8]> = BTreeMap::new();
    for segment in segments.iter().filter(|s| !s.payload.is_empty()) {
        let offset = segment.seq.wrapping_sub(start);
        if let Some(previous) = pieces.insert(offset, &segment.payload) {
            let shorter = previous.len().min(segment.payload.len());
            assert_eq!(
                previous[..shorter],
                segment.payload[..shorter],
                "retransmission differs"
            );
        }
    }
    let mut stream = Vec::new();
    for (offset, bytes) in pieces {
        let offset = offset as usize;
        assert!(
            offset <= stream.len(),
            "gap before offset {offset} (have {})",
            stream.len()
        );
        let overlap = stream.len() - offset;
        if overlap < bytes.len() {
            stream.extend_from_slice(&bytes[overlap..]);
        }
    }
    stream
}

fn live_capture_is_complete(mode: AttachMode) {
    let net = TestNet::new();
    let _nginx = Nginx::start(&net, PORT);

    let sensor = LiveSensor::start(&net, mode, vec![PORT]);
    let conversations = in_namespace(&net.client_ns, || run_clients(&net));
    let Captured {
        segments,
        kernel,
        reader,
    } = sensor.stop();

    // Responses are what nginx was asked for.
    let big = common::big_body();
    for conversation in &conversations {
        let text = String::from_utf8_lossy(&conversation.received);
        assert!(
            text.starts_with("HTTP/1.1 "),
            "{}",
            &text[..text.len().min(200)]
        );
    }
    assert!(
        conversations
            .iter()
            .any(|c| c.received.ends_with(SMALL_BODY.as_bytes()))
    );
    assert!(conversations.iter().any(|c| c.received.ends_with(&big)));

    // Every byte in both directions, per connection.
    for conversation in &conversations {
        let upstream: Vec<&Segment> = segments
            .iter()
            .filter(|s| s.src == conversation.local)
            .collect();
        let downstream: Vec<&Segment> = segments
            .iter()
            .filter(|s| s.dst == conversation.local)
            .collect();
        assert_eq!(
            reassemble(&upstream),
            conversation.sent,
            "client->server bytes of {} ({mode:?})",
            conversation.local
        );
        let received = reassemble(&downstream);
        assert_eq!(
            received.len(),
            conversation.received.len(),
            "server->client length of {}",
            conversation.local
        );
        assert!(
            received == conversation.received,
            "server->client bytes of {} differ",
            conversation.local
        );
        assert!(
            downstream.iter().any(|s| s.has(tcp_flags::FIN)),
            "server FIN captured"
        );
    }

    // The counters add up: nothing lost, nothing truncated, everything read back.
    let read = reader
        .iter()
        .find(|(name, _)| *name == "events_read")
        .unwrap()
        .1;
    assert_eq!(kernel["ring_full"], 0, "{kernel:?}");
    assert_eq!(kernel["load_errors"], 0, "{kernel:?}");
    assert_eq!(kernel["segments_truncated"], 0, "{kernel:?}");
    assert_eq!(
        kernel["events_tried"], kernel["events_submitted"],
        "{kernel:?}"
    );
    assert_eq!(read, kernel["events_submitted"], "{reader:?} vs {kernel:?}");
    assert_eq!(segments.len() as u64, read);
    let payload: u64 = segments.iter().map(|s| s.payload.len() as u64).sum();
    assert_eq!(payload, kernel["bytes_submitted"]);
    let expected: usize = conversations
        .iter()
        .map(|c| c.sent.len() + c.received.len())
        .sum();
    assert!(payload as usize >= expected && expected > 12 * BIG_LEN);
    if mode != AttachMode::Socket {
        assert!(
            segments.iter().any(|s| s.more_chunks),
            "GSO segments larger than one chunk"
        );
    }
}

#[test]
fn tcx_capture_delivers_every_byte() {
    live_capture_is_complete(AttachMode::Tcx);
}

#[test]
fn clsact_capture_delivers_every_byte() {
    live_capture_is_complete(AttachMode::Clsact);
}

#[test]
fn socket_filter_capture_delivers_every_byte() {
    live_capture_is_complete(AttachMode::Socket);
}

// ---- the daemon: attach, detach, crash ---------------------------------------------------------

struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(net: &TestNet, mode: &str, data_dir: &Path) -> Self {
        let _ = fs::remove_file(StatsReport::path(data_dir));
        let child = TestNet::command(&net.server_ns, env!("CARGO_BIN_EXE_apisessions"))
            .args([
                "run",
                "--iface",
                &net.server_if,
                "--port",
                "8080",
                "--attach",
                mode,
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            wait_until(Duration::from_secs(20), || StatsReport::path(data_dir)
                .exists()),
            "the daemon did not come up"
        );
        Self { child }
    }

    fn signal(&mut self, signal: &str) -> std::process::ExitStatus {
        sh("kill", &[signal, &self.child.id().to_string()]);
        self.child.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Only reached with the child still running when a test failed half-way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Our programs attached to the server's interface: TCX links (asked through aya, since the
/// Debian bpftool predates TCX) and tc filters (as `tc` lists them).
fn attached(net: &TestNet) -> Vec<String> {
    let (ns, ifname) = (net.server_ns.clone(), net.server_if.clone());
    let mut found: Vec<String> = thread::spawn(move || {
        TestNet::enter(&ns);
        [TcAttachType::Ingress, TcAttachType::Egress]
            .into_iter()
            .flat_map(|direction| SchedClassifier::query_tcx(&ifname, direction).unwrap().1)
            .map(|program| format!("tcx {}", program.name_as_str().unwrap_or("?")))
            .filter(|name| name.contains("apis_"))
            .collect()
    })
    .join()
    .unwrap();
    for direction in ["ingress", "egress"] {
        let out = TestNet::command(&net.server_ns, "tc")
            .args(["filter", "show", "dev", &net.server_if, direction])
            .output()
            .unwrap();
        found.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|line| line.contains("apis_"))
                .map(|line| format!("tc {line}")),
        );
    }
    found
}

fn has_clsact(net: &TestNet) -> bool {
    let qdiscs = TestNet::command(&net.server_ns, "tc")
        .args(["qdisc", "show", "dev", &net.server_if])
        .output()
        .unwrap();
    String::from_utf8_lossy(&qdiscs.stdout).contains("clsact")
}

fn detach_leaves_nothing(mode: &str) {
    let net = TestNet::new();
    let data_dir = std::env::temp_dir().join(format!("apis-detach-{}", net.server_ns));
    let mut daemon = Daemon::start(&net, mode, &data_dir);
    let programs = attached(&net);
    assert_eq!(
        programs.len(),
        2,
        "ingress and egress attached: {programs:?}"
    );
    assert_eq!(has_clsact(&net), mode == "clsact");
    let status = daemon.signal("-TERM");
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    assert!(
        attached(&net).is_empty(),
        "still attached after exit: {:?}",
        attached(&net)
    );
    assert!(!has_clsact(&net), "the clsact qdisc we added is removed");
    let report = StatsReport::read(&data_dir).unwrap();
    assert!(!report.running, "the final report says the daemon stopped");
    let _ = fs::remove_dir_all(&data_dir);
}

#[test]
fn tcx_daemon_detaches_on_sigterm() {
    detach_leaves_nothing("tcx");
}

#[test]
fn clsact_daemon_detaches_on_sigterm() {
    detach_leaves_nothing("clsact");
}

#[test]
fn a_crash_leaves_nothing_that_blocks_the_next_start() {
    let net = TestNet::new();
    let data_dir = std::env::temp_dir().join(format!("apis-crash-{}", net.server_ns));

    // TCX links belong to the process: a SIGKILL takes them along.
    let mut daemon = Daemon::start(&net, "tcx", &data_dir);
    assert!(!daemon.signal("-KILL").success());
    assert!(attached(&net).is_empty(), "tcx links die with the process");

    // clsact filters outlive the process; the next start replaces them, and a clean stop then
    // removes filters and qdisc.
    let mut daemon = Daemon::start(&net, "clsact", &data_dir);
    assert!(!daemon.signal("-KILL").success());
    assert_eq!(
        attached(&net).len(),
        2,
        "the crashed run's filters are still there"
    );
    let mut daemon = Daemon::start(&net, "clsact", &data_dir);
    assert_eq!(
        attached(&net).len(),
        2,
        "stale filters replaced, not doubled: {:?}",
        attached(&net)
    );
    assert!(daemon.signal("-TERM").success());
    assert!(attached(&net).is_empty());
    assert!(
        !has_clsact(&net),
        "the qdisc the crashed run added is removed too"
    );
    let _ = fs::remove_dir_all(&data_dir);
}
