//! sqlmap, the real attack tool, captured live: a deliberately injectable endpoint
//! (tests/data/attacks/injectable_app.py) in a server namespace with the daemon capturing it,
//! sqlmap in the client namespace writing its own traffic log (`-t FILE`), and a normal client
//! next to it. Every request the log shows with a payload (a parameter changed to something
//! other than a bare number) must be stored with `sqli` among its attacks, at least 95 % of
//! them (the test prints the share); the normal client's session has no attack. sqlmap comes
//! from `target/frameworks` (`cargo xtask setup`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{HashMap, HashSet},
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use common::{KillOnDrop, TestNet, cli, exported, in_namespace, sh, start_daemon, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_apisessions");
const PORT: u16 = 8080;
const NORMAL_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:150.0) Gecko/20100101 Firefox/150.0";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The request targets of a sqlmap traffic log (`HTTP request [#N]:` blocks).
fn logged_uris(log: &str) -> Vec<String> {
    log.split("HTTP request [#")
        .skip(1)
        .filter_map(|block| {
            let line = block.lines().nth(1)?;
            let (_, rest) = line.split_once(' ')?;
            Some(
                rest.rsplit_once(' ')
                    .map_or(rest, |(uri, _)| uri)
                    .to_owned(),
            )
        })
        .collect()
}

/// The query's parameters, decoded once (as the application sees them).
fn query_pairs(uri: &str) -> Vec<(String, String)> {
    let query = uri.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(query.as_bytes())
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect()
}

/// A normal client's request, answered.
fn normal_request(server: SocketAddr, target: &str) {
    let mut stream = TcpStream::connect(server).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "GET /{target} HTTP/1.1\r\nHost: shop\r\nUser-Agent: {NORMAL_AGENT}\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
}

#[test]
fn sqlmap_payload_requests_are_stored_with_sqli() {
    let sqlmap = root().join("target/frameworks/venv/bin/sqlmap");
    assert!(
        sqlmap.exists(),
        "{} is missing: run `cargo xtask setup`",
        sqlmap.display()
    );
    let net = TestNet::new();
    let _app = KillOnDrop(
        TestNet::command(&net.server_ns, "/usr/bin/python3")
            .arg(root().join("tests/data/attacks/injectable_app.py"))
            .args([&net.server_v4.to_string(), &PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let server = SocketAddr::new(net.server_v4.into(), PORT);
    assert!(
        wait_until(Duration::from_secs(20), || in_namespace(
            &net.client_ns,
            || TcpStream::connect(server).is_ok()
        )),
        "the injectable app listens"
    );
    let work = std::env::temp_dir().join(format!("apis-sqlmap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let data = work.join("data");
    let mut daemon = start_daemon(&net, BIN, &[PORT], &data);

    let mut logged = Vec::new();
    for target in ["items?id=1", "users?name=alice"] {
        in_namespace(&net.client_ns, || {
            for t in ["items?id=3", "users?name=bob", "items?id=4"] {
                normal_request(server, t);
            }
        });
        let log = work.join(format!("{}.log", target.split('?').next().unwrap()));
        // Boolean, error-based and UNION techniques: the time-based ones would make the test
        // wait out sqlmap's delays for the same kind of payloads.
        let status = TestNet::command(&net.client_ns, &sqlmap)
            .args(["-u", &format!("http://{server}/{target}")])
            .args(["--batch", "--flush-session", "--disable-coloring"])
            .args(["--technique=BEU", "--threads=4", "--timeout=10"])
            .arg("--output-dir")
            .arg(work.join("out"))
            .arg("-t")
            .arg(&log)
            .stdout(Stdio::null())
            .status()
            .expect("sqlmap runs");
        assert!(status.success(), "sqlmap failed against {target}");
        let uris = logged_uris(&std::fs::read_to_string(&log).unwrap());
        assert!(uris.len() > 20, "{target}: only {} requests", uris.len());
        logged.push(uris);
    }
    let total: usize = logged.iter().map(Vec::len).sum::<usize>() + 6;
    let stored = wait_until(Duration::from_secs(30), || {
        exported(BIN, &data).len() >= total
    });
    sh("kill", &["-TERM", &daemon.id().to_string()]);
    assert!(daemon.wait().unwrap().success());
    let records = exported(BIN, &data);
    assert!(stored, "{} of {total} requests stored", records.len());

    // Every stored record by its target (sqlmap repeats some).
    let mut by_uri: HashMap<String, Vec<&serde_json::Value>> = HashMap::new();
    for record in &records {
        by_uri
            .entry(record["uri"].as_str().unwrap_or("").to_owned())
            .or_default()
            .push(record);
    }
    let has_sqli = |record: &serde_json::Value| {
        record["attacks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["class"] == "sqli")
    };
    let (mut payloads, mut flagged) = (0, 0);
    let mut missed = Vec::new();
    for uris in &logged {
        // The first request is sqlmap's baseline: the parameters as given. A request whose
        // parameters differ carries a payload, unless they are bare numbers (sqlmap's
        // stability and dynamicity checks).
        let baseline: HashSet<(String, String)> = query_pairs(&uris[0]).into_iter().collect();
        for uri in uris {
            let changed: Vec<(String, String)> = query_pairs(uri)
                .into_iter()
                .filter(|p| !baseline.contains(p))
                .collect();
            if changed
                .iter()
                .all(|(_, v)| v.bytes().all(|b| b.is_ascii_digit()))
            {
                continue;
            }
            payloads += 1;
            let records = by_uri.get(uri.as_str());
            assert!(records.is_some(), "not stored: {uri}");
            if records.is_some_and(|r| r.iter().all(|r| has_sqli(r))) {
                flagged += 1;
            } else {
                missed.push(uri.clone());
            }
        }
    }
    let share = 100.0 * flagged as f64 / payloads as f64;
    println!(
        "attacks sqlmap (live): {flagged}/{payloads} payload requests stored with sqli = {share:.1} %"
    );
    for uri in &missed {
        println!("    missed: {uri}");
    }
    assert!(payloads >= 40, "only {payloads} payload requests");
    assert!(share >= 95.0, "{share:.1} % < 95 %");

    // The sessions: sqlmap's carries sqli, the normal client's none.
    let sessions: Vec<serde_json::Value> =
        serde_json::from_str(&cli(BIN, &["sessions", "--json", "--limit", "0"], &data)).unwrap();
    let of = |agent: &str| {
        sessions
            .iter()
            .find(|s| {
                s["user_agents"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a.as_str().unwrap_or("").contains(agent))
            })
            .unwrap_or_else(|| panic!("no session of {agent}: {sessions:#?}"))
    };
    assert!(of("sqlmap")["attacks"]["sqli"].as_u64().unwrap() >= flagged);
    assert_eq!(of(NORMAL_AGENT)["attacks"], serde_json::json!({}));
    let listed: Vec<serde_json::Value> = serde_json::from_str(&cli(
        BIN,
        &["sessions", "--attack", "sqli", "--json", "--limit", "0"],
        &data,
    ))
    .unwrap();
    assert!(
        listed
            .iter()
            .all(|s| s["session_id"] != of(NORMAL_AGENT)["session_id"])
    );
    assert!(
        listed
            .iter()
            .any(|s| s["session_id"] == of("sqlmap")["session_id"])
    );
    let _ = std::fs::remove_dir_all(&work);
}
