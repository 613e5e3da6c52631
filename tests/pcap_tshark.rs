//! Cross-check with Wireshark's HTTP dissector: for every capture fixture in tests/data/, the
//! (method, uri, status) list that tshark reports equals the one `apisessions import` decodes.
//!
//! Documented differences, normalised here and tested on their own in the unit tests:
//! - interim responses (100 Continue) are separate responses to tshark; we keep them on the
//!   exchange (`Response::interim`), so each becomes one extra (method, uri, 100) entry;
//! - tshark links only the first of several pipelined requests in a frame to its response, so
//!   requests and responses are paired here in order per TCP stream, as HTTP/1.x answers them;
//! - heads cut by the capture's snaplen: tshark drops a response whose head is incomplete; we
//!   keep its status line and the headers before the cut, flagged truncated and gap
//!   (`http-snaplen.pcap`, tested on its own below);
//! - tshark stops at a 101 Upgrade as we do, but may still dissect later bytes of the same
//!   connection as HTTP if they happen to parse; fixtures avoid HTTP-looking bytes after an upgrade.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    path::{Path, PathBuf},
    process::Command,
};

use apisessions::{
    exchange::Exchange,
    flow::FlowConfig,
    import,
    pipeline::{Collect, Pipeline},
    source::PcapSource,
};

type Entry = (String, String, Option<u16>);

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no capture fixtures in {}",
        dir.display()
    );
    files
}

fn ours(file: &Path) -> (Vec<Exchange>, import::ImportSummary) {
    let mut source = PcapSource::open(file).unwrap();
    let collected = Collect::default();
    let mut pipeline = Pipeline::decoder(
        FlowConfig::default(),
        apisessions::proxy::ProxyConfig::default(),
    )
    .with_sink(Box::new(collected.clone()));
    let summary = import::run(std::slice::from_mut(&mut source), &mut pipeline, |_, _| {}).unwrap();
    (collected.take(), summary)
}

fn entries(exchanges: &[Exchange]) -> Vec<Entry> {
    let mut list = Vec::new();
    for exchange in exchanges {
        let Some(request) = &exchange.request else {
            continue;
        };
        let status = exchange.response.as_ref().and_then(|r| r.status);
        for interim in exchange.response.iter().flat_map(|r| &r.interim) {
            list.push((request.method.clone(), request.uri.clone(), Some(*interim)));
        }
        list.push((request.method.clone(), request.uri.clone(), status));
    }
    list.sort();
    list
}

fn tshark_fields(
    file: &Path,
    ports: &BTreeSet<u16>,
    filter: &str,
    fields: &[&str],
) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(["-n", "-Y", filter, "-T", "fields", "-E", "aggregator=|"]);
    for port in ports {
        cmd.args(["-d", &format!("tcp.port=={port},http")]);
    }
    for field in fields {
        cmd.args(["-e", field]);
    }
    let out = cmd
        .output()
        .expect("tshark (install it: `cargo xtask setup` does, as root)");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect()
}

/// tshark's requests and responses per TCP stream, paired in order (HTTP/1.x answers in request
/// order; interim 1xx responses attach to the request they precede).
///
/// Documented difference: tshark sets `http.request_in` only on the response to the first of
/// several pipelined requests that share a frame, so its own links cannot pair pipelining.
fn theirs(file: &Path, ports: &BTreeSet<u16>) -> Vec<Entry> {
    // Several pipelined requests (or responses) can share a frame: fields then hold `|`-joined
    // values, in order.
    let mut requests: BTreeMap<u64, VecDeque<(String, String)>> = BTreeMap::new();
    for row in tshark_fields(
        file,
        ports,
        "http.request",
        &["tcp.stream", "http.request.method", "http.request.uri"],
    ) {
        let stream: u64 = row[0].parse().unwrap();
        let pairs = row[1].split('|').zip(row[2].split('|'));
        requests
            .entry(stream)
            .or_default()
            .extend(pairs.map(|(m, u)| (m.to_owned(), u.to_owned())));
    }
    let mut list = Vec::new();
    for row in tshark_fields(
        file,
        ports,
        "http.response",
        &["tcp.stream", "http.response.code"],
    ) {
        let stream: u64 = row[0].parse().unwrap();
        let queue = requests.entry(stream).or_default();
        for code in row[1].split('|').filter_map(|c| c.parse::<u16>().ok()) {
            let interim = (100..200).contains(&code) && code != 101;
            let request = if interim {
                queue.front().cloned()
            } else {
                queue.pop_front()
            };
            if let Some((method, uri)) = request {
                list.push((method, uri, Some(code)));
            }
        }
    }
    for (method, uri) in requests.into_values().flatten() {
        list.push((method, uri, None));
    }
    list.sort();
    list
}

/// The fixture whose packets the capture cut short (snaplen 200): see the module comment.
const SNAPLEN_FIXTURE: &str = "http-snaplen.pcap";

#[test]
fn tshark_and_import_agree_on_every_fixture() {
    for file in fixtures()
        .into_iter()
        .filter(|f| !f.ends_with(SNAPLEN_FIXTURE))
    {
        let (exchanges, summary) = ours(&file);
        assert!(
            !exchanges.is_empty(),
            "{}: no exchanges decoded",
            file.display()
        );
        let ports: BTreeSet<u16> = exchanges.iter().map(|e| e.server.port()).collect();
        let ours = entries(&exchanges);
        let theirs = theirs(&file, &ports);
        assert_eq!(
            ours,
            theirs,
            "{}: ours (left) vs tshark (right); summary {summary:?}",
            file.display()
        );
    }
}

#[test]
fn heads_cut_by_the_snaplen_keep_their_start_line_where_tshark_drops_them() {
    let file = fixtures()
        .into_iter()
        .find(|f| f.ends_with(SNAPLEN_FIXTURE))
        .expect("the snaplen fixture");
    let (exchanges, summary) = ours(&file);
    let ports: BTreeSet<u16> = exchanges.iter().map(|e| e.server.port()).collect();
    let theirs = theirs(&file, &ports);
    assert_eq!(
        theirs,
        [
            ("GET".into(), "/data.json".into(), None),
            ("GET".into(), "/index.html".into(), None),
            ("POST".into(), "/upload".into(), Some(201)),
        ]
    );
    assert_eq!(
        entries(&exchanges),
        [
            ("GET".into(), "/data.json".into(), Some(200)),
            ("GET".into(), "/index.html".into(), Some(200)),
            ("POST".into(), "/upload".into(), Some(201)),
        ]
    );
    for exchange in &exchanges {
        assert!(exchange.gap() && exchange.response.as_ref().is_some_and(|r| r.meta.truncated));
    }
    assert_eq!(summary.get("http", "heads_salvaged"), 4);
    assert_eq!(
        summary.get("source", "bytes_truncated"),
        summary.get("reassembly", "gap_bytes")
    );
}
