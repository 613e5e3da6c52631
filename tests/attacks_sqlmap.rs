//! sqlmap, the real attack tool, against a deliberately injectable endpoint on loopback
//! (tests/data/attacks/injectable_app.py): every request sqlmap's own traffic log (`-t FILE`)
//! shows with a payload (a parameter changed to something other than a bare number) goes through the attack detector, which must flag at least 95 % of them
//! as `sqli`; the test prints the share. sqlmap comes from `target/frameworks` (`cargo xtask
//! setup`). The live version of this measurement (captured by the sensor) is the pipeline's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashSet,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use apisessions::{
    analysis::attacks::{AttackClass, AttacksConfig, Detector},
    exchange::{MessageMeta, Request},
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct App(Child);

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_app() -> (App, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = Command::new("/usr/bin/python3")
        .arg(root().join("tests/data/attacks/injectable_app.py"))
        .args(["127.0.0.1", &port.to_string()])
        .spawn()
        .expect("python3 runs the injectable app");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the injectable app did not start"
        );
        thread::sleep(Duration::from_millis(50));
    }
    (App(app), port)
}

/// The requests of a sqlmap traffic log (`HTTP request [#N]:` blocks: request line, headers).
fn logged_requests(log: &str) -> Vec<Request> {
    log.split("HTTP request [#")
        .skip(1)
        .filter_map(|block| {
            let mut lines = block.lines().skip(1);
            let (method, rest) = lines.next()?.split_once(' ')?;
            let uri = rest.rsplit_once(' ').map_or(rest, |(uri, _)| uri);
            let headers = lines
                .take_while(|l| !l.is_empty())
                .filter_map(|l| l.split_once(": "))
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect();
            Some(Request {
                method: method.to_owned(),
                uri: uri.to_owned(),
                meta: MessageMeta {
                    headers,
                    ..MessageMeta::default()
                },
            })
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

#[test]
fn sqlmap_payload_requests_are_flagged_as_sqli() {
    let sqlmap = root().join("target/frameworks/venv/bin/sqlmap");
    assert!(
        sqlmap.exists(),
        "{} is missing: run `cargo xtask setup`",
        sqlmap.display()
    );
    let (_app, port) = start_app();
    let work = tempdir();
    let detector = Detector::new(&AttacksConfig::default()).unwrap();
    let (mut payloads, mut flagged) = (0, 0);
    let mut missed = Vec::new();
    for target in ["items?id=1", "users?name=alice"] {
        let log = work.join(format!("{}.log", target.split('?').next().unwrap()));
        // Boolean, error-based and UNION techniques: the time-based ones would make the test
        // wait out sqlmap's delays for the same kind of payloads.
        let status = Command::new(&sqlmap)
            .args(["-u", &format!("http://127.0.0.1:{port}/{target}")])
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
        let text = std::fs::read_to_string(&log).unwrap();
        let requests = logged_requests(&text);
        assert!(
            requests.len() > 20,
            "{target}: only {} requests",
            requests.len()
        );
        // The first request is sqlmap's baseline: the parameters as given. A request whose
        // parameters differ carries a payload.
        let baseline: HashSet<(String, String)> =
            query_pairs(&requests[0].uri).into_iter().collect();
        let baseline_findings = detector.inspect(&requests[0], &|v| v.to_owned()).findings;
        assert!(
            baseline_findings
                .iter()
                .all(|f| f.class != AttackClass::Sqli),
            "{baseline_findings:?}"
        );
        for request in &requests {
            // Changed parameters that are bare numbers are sqlmap's stability and
            // dynamicity checks (a random value), not payloads.
            let changed: Vec<(String, String)> = query_pairs(&request.uri)
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
            let findings = detector.inspect(request, &|v| v.to_owned()).findings;
            if findings.iter().any(|f| f.class == AttackClass::Sqli) {
                flagged += 1;
            } else {
                missed.push(request.uri.clone());
            }
        }
    }
    let share = 100.0 * flagged as f64 / payloads as f64;
    println!("attacks sqlmap: {flagged}/{payloads} payload requests flagged sqli = {share:.1} %");
    for uri in &missed {
        println!("    missed: {uri}");
    }
    assert!(payloads >= 40, "only {payloads} payload requests");
    assert!(share >= 95.0, "{share:.1} % < 95 %");
    let _ = std::fs::remove_dir_all(&work);
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("apisessions-sqlmap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
