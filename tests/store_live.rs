//! The store against hostile requests, end to end: the `apisessions run` daemon next to nginx
//! on a real veth, ordinary requests around requests whose every captured text is as long as
//! nginx accepts (paths, queries holding `://`, Host headers, Basic users, JWT subjects, cookie
//! values used as session keys, User-Agents). Every exchange must be stored, live and through
//! `import` of tcpdump's capture of the same traffic, and found again by its long values. Both
//! decode on several threads (`--decode-threads`), which must change nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeSet, fs, path::Path, process::Command, time::Duration};

use base64::Engine as _;
use common::{
    Nginx, Tcpdump, TestNet, cli, counter, exported, in_namespace, request, sh, start_daemon_in,
    wait_until,
};

const PORT: u16 = 8080;

const BIN: &str = env!("CARGO_BIN_EXE_apisessions");

/// (method, uri, status) of every exported exchange.
fn seen(records: &[serde_json::Value]) -> BTreeSet<(String, String, u64)> {
    records
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap_or("").to_owned(),
                r["uri"].as_str().unwrap_or("").to_owned(),
                r["status_code"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn sessions_matching(data_dir: &Path, flag: &str, value: &str) -> usize {
    let out = cli(
        BIN,
        &["sessions", "--json", "--limit", "0", flag, value],
        data_dir,
    );
    serde_json::from_str::<Vec<serde_json::Value>>(&out)
        .unwrap()
        .len()
}

#[test]
fn hostile_requests_never_cost_other_exchanges_live_or_imported() {
    let net = TestNet::new();
    let _nginx = Nginx::start(&net, PORT);
    let data_dir = std::env::temp_dir().join(format!("apis-store-live-{}", net.server_ns));
    let _ = fs::remove_dir_all(&data_dir);
    let tcpdump = Tcpdump::start(&net, PORT);
    let mut daemon = start_daemon_in(
        &net.server_ns,
        BIN,
        &[
            "--iface",
            &net.server_if,
            "--port",
            &PORT.to_string(),
            "--decode-threads",
            "2",
        ],
        &data_dir,
    );

    // Long, but within nginx's 8 KiB header lines, so that every request gets an answer.
    let long_path = format!("/{}", "a".repeat(600));
    let longer_path = format!("/files/{}/x", "p".repeat(6000));
    let url_query = format!("/get?next=http://example.test/{}", "b".repeat(2000));
    let many_segments = "/seg".repeat(1500);
    let long_host = format!("{}.test", "h".repeat(4000));
    let long_user = "u".repeat(3000);
    let long_subject = "s".repeat(3000);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let b64url = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let jwt = format!(
        "{}.{}.sig",
        b64url(r#"{"alg":"HS256","typ":"JWT"}"#),
        b64url(&format!(r#"{{"sub":"{long_subject}"}}"#))
    );
    let hostile: Vec<(String, String)> = vec![
        (long_path.clone(), String::new()),
        (longer_path, String::new()),
        (url_query, String::new()),
        (many_segments, String::new()),
        ("/small.txt?h=1".into(), format!("Host: {long_host}\r\n")),
        (
            "/small.txt?basic=1".into(),
            format!(
                "Authorization: Basic {}\r\n",
                b64(&format!("{long_user}:pw"))
            ),
        ),
        (
            "/small.txt?bearer=1".into(),
            format!("Authorization: Bearer {jwt}\r\n"),
        ),
        (
            "/small.txt?cookie=1".into(),
            format!("Cookie: sid={}\r\n", "c".repeat(7000)),
        ),
        (
            "/small.txt?ua=1".into(),
            format!("User-Agent: {}\r\n", "agent ".repeat(1200)),
        ),
    ];
    let server = net.server_addr(false, PORT);
    let mut sent = BTreeSet::new();
    in_namespace(&net.client_ns, || {
        let mut plain = |phase: &str| {
            for i in 0..10 {
                let uri = format!("/small.txt?{phase}={i}");
                request(
                    server,
                    &format!("GET {uri} HTTP/1.1\r\nHost: test\r\nUser-Agent: curl/8\r\n"),
                    "",
                );
                sent.insert(uri);
            }
        };
        plain("before");
        for (uri, headers) in &hostile {
            let host = if headers.starts_with("Host:") {
                String::new()
            } else {
                "Host: test\r\n".into()
            };
            request(
                server,
                &format!("GET {uri} HTTP/1.1\r\n{host}{headers}"),
                "",
            );
        }
        plain("after");
    });
    sent.extend(hostile.iter().map(|(uri, _)| uri.clone()));

    // Every request is exported, the hostile ones included, while the daemon still runs.
    assert!(
        wait_until(Duration::from_secs(15), || exported(BIN, &data_dir).len()
            == sent.len()),
        "{} of {} exported",
        exported(BIN, &data_dir).len(),
        sent.len()
    );
    sh("kill", &["-TERM", &daemon.id().to_string()]);
    assert!(daemon.wait().unwrap().success());
    let pcap = tcpdump.stop();

    let live = exported(BIN, &data_dir);
    let uris: BTreeSet<String> = live
        .iter()
        .map(|r| r["uri"].as_str().unwrap().to_owned())
        .collect();
    // Shown cut short: the values are kilobytes long.
    let short = |set: &BTreeSet<String>, other: &BTreeSet<String>| -> Vec<String> {
        set.difference(other)
            .map(|u| format!("{}… ({} bytes)", &u[..u.len().min(40)], u.len()))
            .collect()
    };
    assert!(
        uris == sent,
        "missing {:?}, unexpected {:?}",
        short(&sent, &uris),
        short(&uris, &sent)
    );
    for record in &live {
        let endpoint = record["endpoint"].as_str().unwrap();
        assert!(endpoint.len() <= 256, "an endpoint of {}", endpoint.len());
    }
    assert!(
        live.iter()
            .any(|r| r["endpoint"] == "/{long}" && r["uri"] == long_path.as_str()),
        "the 600-byte path's endpoint is bounded"
    );
    assert!(
        live.iter().any(|r| r["endpoint"] == "/get"),
        "a query holding :// stays out of the endpoint"
    );
    for name in [
        "exchanges_lost_write_error",
        "exchanges_rejected_key_size",
        "exchanges_rejected_corrupt",
        "exchanges_rejected_other",
        "write_errors",
    ] {
        assert_eq!(counter(BIN, &data_dir, "store", name), 0, "{name}");
    }
    // Found again by their long values, through the indexes.
    assert_eq!(sessions_matching(&data_dir, "--host", &long_host), 1);
    assert_eq!(sessions_matching(&data_dir, "--user", &long_user), 1);
    assert_eq!(sessions_matching(&data_dir, "--user", &long_subject), 1);
    assert_eq!(sessions_matching(&data_dir, "--endpoint", &long_path), 1);

    // The same traffic imported from tcpdump's file: the same exchanges, each stored.
    let imported_dir = data_dir.with_extension("imported");
    let _ = fs::remove_dir_all(&imported_dir);
    let out = Command::new(BIN)
        .arg("import")
        .arg(&pcap)
        .args(["--port", &PORT.to_string(), "--decode-threads", "3"])
        .arg("--data-dir")
        .arg(&imported_dir)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains(&format!("stored {} exchanges", sent.len())),
        "{report}"
    );
    assert!(!report.contains("not stored"), "{report}");
    assert!(
        seen(&exported(BIN, &imported_dir)) == seen(&live),
        "import and live path differ"
    );

    let _ = fs::remove_dir_all(&data_dir);
    let _ = fs::remove_dir_all(&imported_dir);
    let _ = fs::remove_file(pcap);
}
