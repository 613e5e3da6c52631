//! Request smuggling and framing abuse against real origins: nginx, and Python's `http.server`
//! (which frames a body by Content-Length alone), in a namespace with the `apisessions run`
//! daemon on both ports. Each case is written byte for byte on a connection of its own
//! (Content-Length with Transfer-Encoding in both orders and with obfuscated codings,
//! conflicting, overflowing and malformed lengths, chunk sizes past 63 and 64 bits, chunk
//! extensions, obsolete line folding, bare CR and LF, requests hidden behind a CL/TE
//! disagreement, pipelining).
//!
//! Each origin's access log is the ground truth of what it read on each connection (matched by
//! the client's port). For every case and origin: each request the origin parsed is in the
//! sensor's record with its method, target and the origin's status; the case's framing anomaly
//! is flagged on the first request; a smuggled request is recorded, flagged; and a request in
//! the record that the origin never parsed (nginx answers 400 and closes) carries a `protocol`
//! finding. The table of both readings is printed (docs/BENCHMARKS.md keeps it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeSet,
    fs,
    io::{Read as _, Write as _},
    net::{Shutdown, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{TestNet, exported, in_namespace, sh, spawn_nginx, start_daemon, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_apisessions");

/// One framing-abuse case: the exact bytes of one connection.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    /// The `protocol-*` rule the sensor must report on the case's first request; `None` for a
    /// well-formed control.
    rule: Option<&'static str>,
    /// A request hidden behind the first one that the sensor must record, flagged.
    hidden: Option<&'static str>,
}

fn case(name: &'static str, rule: Option<&'static str>, bytes: impl Into<Vec<u8>>) -> Case {
    Case {
        name,
        bytes: bytes.into(),
        rule,
        hidden: None,
    }
}

impl Case {
    fn hiding(self, target: &'static str) -> Self {
        Self {
            hidden: Some(target),
            ..self
        }
    }
}

/// A complete request for a smuggled target, to hide inside a body.
fn smuggled(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: origin\r\n\r\n")
}

fn cases() -> Vec<Case> {
    const H: &str = "Host: origin\r\n";
    let chunked_body = "5\r\nhello\r\n0\r\n\r\n";
    // A chunked body holding a whole request as data: a CL reader sees the request.
    let hidden = smuggled("/te-cl-smuggled");
    let te_cl_body = format!("{:x}\r\n{hidden}\r\n0\r\n\r\n", hidden.len());
    // "0\r\n\r\n" ends a chunked body; what follows is a request for a TE reader.
    let cl_te_body = format!("0\r\n\r\n{}", smuggled("/cl-te-smuggled"));
    let cl_cl_body = smuggled("/cl-cl-smuggled");
    let te_te_body = smuggled("/te-te-smuggled");
    // A chunked body ending before the length does: a lenient chunked reader sees the request.
    let te_x_body = format!("0\r\n\r\n{}", smuggled("/te-x-smuggled"));
    vec![
        case(
            "control",
            None,
            format!("GET /control HTTP/1.1\r\n{H}\r\n"),
        ),
        case(
            "pipelined",
            None,
            format!(
                "GET /pipe-1 HTTP/1.1\r\n{H}\r\nPOST /pipe-2 HTTP/1.1\r\n{H}Content-Length: 5\r\n\r\nhelloGET /pipe-3 HTTP/1.1\r\n{H}\r\n"
            ),
        ),
        case(
            "chunked",
            None,
            format!(
                "POST /chunked HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n{chunked_body}"
            ),
        ),
        case(
            "chunk-extension",
            None,
            format!(
                "POST /chunk-ext HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0;last\r\n\r\n"
            ),
        ),
        case(
            "cl-then-te",
            Some("protocol-length-and-chunked"),
            format!(
                "POST /cl-then-te HTTP/1.1\r\n{H}Content-Length: 15\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_body}"
            ),
        ),
        case(
            "te-then-cl",
            Some("protocol-length-and-chunked"),
            format!(
                "POST /te-then-cl HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\nContent-Length: 15\r\n\r\n{chunked_body}"
            ),
        ),
        case(
            "te-xchunked",
            Some("protocol-transfer-encoding-invalid"),
            format!(
                "POST /te-xchunked HTTP/1.1\r\n{H}Transfer-Encoding: xchunked\r\nContent-Length: 15\r\n\r\n{chunked_body}"
            ),
        ),
        case(
            "te-chunked-identity",
            Some("protocol-transfer-encoding-invalid"),
            format!(
                "POST /te-chunked-identity HTTP/1.1\r\n{H}Transfer-Encoding: chunked, identity\r\nContent-Length: 15\r\n\r\n{chunked_body}"
            ),
        ),
        case(
            "te-tab",
            Some("protocol-length-and-chunked"),
            format!(
                "POST /te-tab HTTP/1.1\r\n{H}Transfer-Encoding:\tchunked\r\nContent-Length: 15\r\n\r\n{chunked_body}"
            ),
        ),
        case(
            "te-space-before-colon",
            Some("protocol-header-invalid"),
            format!(
                "POST /te-space-colon HTTP/1.1\r\n{H}Transfer-Encoding : chunked\r\nContent-Length: 15\r\n\r\n{chunked_body}"
            ),
        ),
        case(
            "te-http10",
            Some("protocol-transfer-encoding-invalid"),
            format!(
                "POST /te-http10 HTTP/1.0\r\n{H}Transfer-Encoding: chunked\r\n\r\n{chunked_body}"
            ),
        ),
        case(
            "cl-conflict",
            Some("protocol-length-conflict"),
            format!(
                "POST /cl-conflict HTTP/1.1\r\n{H}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
            ),
        ),
        case(
            "cl-repeated-same",
            None,
            format!(
                "POST /cl-repeated HTTP/1.1\r\n{H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
            ),
        ),
        case(
            "cl-overflow-u64",
            Some("protocol-length-invalid"),
            format!(
                "POST /cl-overflow HTTP/1.1\r\n{H}Content-Length: 18446744073709551616\r\n\r\nhello"
            ),
        ),
        case(
            "cl-over-i64",
            Some("protocol-length-invalid"),
            format!(
                "POST /cl-over-i64 HTTP/1.1\r\n{H}Content-Length: 9223372036854775808\r\n\r\nhello"
            ),
        ),
        case(
            "cl-negative",
            Some("protocol-length-invalid"),
            format!("POST /cl-negative HTTP/1.1\r\n{H}Content-Length: -1\r\n\r\nhello"),
        ),
        case(
            "cl-plus",
            Some("protocol-length-invalid"),
            format!("POST /cl-plus HTTP/1.1\r\n{H}Content-Length: +5\r\n\r\nhello"),
        ),
        case(
            "cl-garbage",
            Some("protocol-length-invalid"),
            format!("POST /cl-garbage HTTP/1.1\r\n{H}Content-Length: 5abc\r\n\r\nhello"),
        ),
        case(
            "chunk-overflow-u64",
            Some("protocol-chunk-size-invalid"),
            format!(
                "POST /chunk-overflow HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n"
            ),
        ),
        case(
            "chunk-over-i64",
            Some("protocol-chunk-size-invalid"),
            format!(
                "POST /chunk-over-i64 HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n8000000000000005\r\nhello\r\n0\r\n\r\n"
            ),
        ),
        case(
            "obs-fold",
            Some("protocol-obs-fold"),
            format!("GET /obs-fold HTTP/1.1\r\n{H}X-Folded: first\r\n second\r\n\r\n"),
        ),
        case(
            "obs-fold-te",
            Some("protocol-obs-fold"),
            format!(
                "POST /obs-fold-te HTTP/1.1\r\n{H}Transfer-Encoding:\r\n chunked\r\n\r\n{chunked_body}"
            ),
        ),
        case(
            "bare-cr",
            Some("protocol-bare-cr"),
            format!("GET /bare-cr HTTP/1.1\r\n{H}X-Value: a\rb\r\n\r\n"),
        ),
        case(
            "bare-lf",
            Some("protocol-bare-lf"),
            "GET /bare-lf HTTP/1.1\nHost: origin\n\nGET /bare-lf-2 HTTP/1.1\nHost: origin\n\n",
        ),
        case(
            "cl-te-smuggle",
            Some("protocol-length-and-chunked"),
            format!(
                "POST /cl-te HTTP/1.1\r\n{H}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{cl_te_body}",
                cl_te_body.len()
            ),
        )
        .hiding("/cl-te-smuggled"),
        case(
            "te-cl-smuggle",
            Some("protocol-length-and-chunked"),
            format!(
                "POST /te-cl HTTP/1.1\r\n{H}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{te_cl_body}"
            ),
        )
        .hiding("/te-cl-smuggled"),
        case(
            "cl-cl-smuggle",
            Some("protocol-length-conflict"),
            format!(
                "POST /cl-cl HTTP/1.1\r\n{H}Content-Length: 0\r\nContent-Length: {}\r\n\r\n{cl_cl_body}",
                cl_cl_body.len()
            ),
        )
        .hiding("/cl-cl-smuggled"),
        case(
            "te-te-smuggle",
            Some("protocol-transfer-encoding-invalid"),
            format!(
                "POST /te-te HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\nContent-Length: {}\r\n\r\n{te_te_body}",
                te_te_body.len()
            ),
        ),
        case(
            "te-xchunked-smuggle",
            Some("protocol-transfer-encoding-invalid"),
            format!(
                "POST /te-x HTTP/1.1\r\n{H}Transfer-Encoding: xchunked\r\nContent-Length: {}\r\n\r\n{te_x_body}",
                te_x_body.len()
            ),
        )
        .hiding("/te-x-smuggled"),
    ]
}

/// A real origin server in the server namespace, logging each request it parsed as a JSON line
/// (client port, status, request line): one connection per case, so the port names the case.
struct Origin {
    name: &'static str,
    port: u16,
    child: Child,
    dir: PathBuf,
}

impl Origin {
    /// nginx answering 200 on every path.
    fn nginx(net: &TestNet, port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("apis-smuggling-nginx-{}", net.server_ns));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // `return` discards a request body as nginx frames it, so a request after it on the
        // connection is parsed where nginx thinks the body ends.
        let conf = format!(
            "daemon off;\nmaster_process off;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n log_format smuggling escape=json \
             '{{\"port\":$remote_port,\"status\":$status,\"request\":\"$request\"}}';\n\
             access_log {d}/access.log smuggling;\n client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n\
             server {{ listen {v4}:{port}; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n",
            d = dir.display(),
            v4 = net.server_v4,
        );
        let child = spawn_nginx(&net.server_ns, &dir, &conf);
        Self::started(net, "nginx", port, child, dir)
    }

    /// Python's http.server (tests/data/smuggling/origin.py): Content-Length framing only.
    fn python(net: &TestNet, port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("apis-smuggling-python-{}", net.server_ns));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/smuggling/origin.py");
        let child = TestNet::command(&net.server_ns, "python3")
            .arg(script)
            .arg(net.server_v4.to_string())
            .arg(port.to_string())
            .arg(dir.join("access.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self::started(net, "python", port, child, dir)
    }

    fn started(net: &TestNet, name: &'static str, port: u16, child: Child, dir: PathBuf) -> Self {
        let origin = Self {
            name,
            port,
            child,
            dir,
        };
        let addr = net.server_addr(false, port);
        let up = wait_until(Duration::from_secs(10), || {
            in_namespace(&net.client_ns, || TcpStream::connect(addr).is_ok())
        });
        assert!(up, "{name} listens on {addr}");
        origin
    }

    /// What the origin read on the connection from `client_port`: the requests it logged whose
    /// line has a method and an origin-form target (a line it refused is no request).
    fn reading(&self, client_port: u16) -> Vec<Read> {
        fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter(|v| v["port"] == client_port)
            .filter_map(|v| {
                let line = v["request"].as_str().unwrap_or_default();
                let mut words = line.split(' ');
                let (method, target) = (words.next()?, words.next()?);
                let is_request = !method.is_empty()
                    && method.bytes().all(|b| b.is_ascii_uppercase())
                    && target.starts_with('/');
                is_request.then(|| Read {
                    method: method.to_owned(),
                    target: target.to_owned(),
                    status: v["status"].as_u64().map(|s| s as u16),
                    rules: Vec::new(),
                })
            })
            .collect()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn version(program: &str, arg: &str) -> String {
    let out = Command::new(program).arg(arg).output().unwrap();
    let text = [out.stdout, out.stderr].concat();
    String::from_utf8_lossy(&text).trim().to_owned()
}

/// Writes `bytes` on a new connection, ends the sending side and reads until the origin
/// closes: the client's port and the number of responses (status lines) it got.
fn send(addr: std::net::SocketAddr, bytes: &[u8]) -> (u16, usize) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let port = stream.local_addr().unwrap().port();
    stream.write_all(bytes).unwrap();
    // The end of the input ends every body the origin still waits for: each case is over
    // when it closes.
    let _ = stream.shutdown(Shutdown::Write);
    let mut response = Vec::new();
    // A reset (closing with unread bytes) ends the read as well as a FIN.
    let _ = stream.read_to_end(&mut response);
    let responses = response
        .windows(9)
        .filter(|w| w.starts_with(b"HTTP/1.") && w[8] == b' ')
        .count();
    (port, responses)
}

/// A request as one side read it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Read {
    method: String,
    target: String,
    status: Option<u16>,
    /// The sensor's `protocol-*` findings.
    rules: Vec<String>,
}

impl Read {
    fn same_request(&self, other: &Read) -> bool {
        self.method == other.method && self.target == other.target
    }
}

/// The sensor's exchanges on the connection from `client_port`, in order.
fn sensor_reading(records: &[serde_json::Value], client_port: u16) -> Vec<Read> {
    let mut reads: Vec<(String, Read)> = records
        .iter()
        .filter(|r| r["client_port"] == client_port)
        .map(|r| {
            let rules = r["attacks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["rule"].as_str())
                .filter(|rule| rule.starts_with("protocol-"))
                .map(str::to_owned)
                .collect();
            (
                r["ts"].as_str().unwrap_or_default().to_owned(),
                Read {
                    method: r["method"].as_str().unwrap_or_default().to_owned(),
                    target: r["uri"].as_str().unwrap_or_default().to_owned(),
                    status: r["status_code"].as_u64().map(|s| s as u16),
                    rules,
                },
            )
        })
        .collect();
    reads.sort_by(|a, b| a.0.cmp(&b.0));
    reads.into_iter().map(|(_, read)| read).collect()
}

fn show(reads: &[Read]) -> String {
    if reads.is_empty() {
        return "(none)".into();
    }
    reads
        .iter()
        .map(|r| {
            let status = r.status.map_or("-".to_owned(), |s| s.to_string());
            format!("{} {} {status}", r.method, r.target)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks one case against one origin's reading; prints its table row, returns its failures.
fn judge(case: &Case, origin: &Origin, origin_read: &[Read], sensor: &[Read]) -> Vec<String> {
    let mut failures = Vec::new();
    let name = format!("{} ({})", case.name, origin.name);
    let flags: BTreeSet<&str> = sensor
        .iter()
        .flat_map(|r| r.rules.iter().map(String::as_str))
        .collect();
    let flags: Vec<&str> = flags.into_iter().collect();
    println!(
        "| {} | {} | {} | {} |",
        case.name,
        show(origin_read),
        show(sensor),
        if flags.is_empty() {
            "no".to_owned()
        } else {
            flags.join(", ")
        }
    );
    // Every request the origin parsed is in the record, with its method and target, and
    // paired with the origin's answer to it if the record has one.
    for o in origin_read {
        match sensor.iter().find(|s| s.same_request(o)) {
            None => failures.push(format!(
                "{name}: the origin read {} {}, the sensor did not",
                o.method, o.target
            )),
            Some(s) if s.status.is_some() && s.status != o.status => failures.push(format!(
                "{name}: {} {} paired with {:?}, the origin answered {:?}",
                o.method, o.target, s.status, o.status
            )),
            Some(_) => {}
        }
    }
    // The case's anomaly is flagged on its first request.
    match (case.rule, sensor.first()) {
        (Some(rule), Some(first)) if !first.rules.iter().any(|r| r == rule) => {
            failures.push(format!("{name}: {rule} not reported ({:?})", first.rules));
        }
        (Some(rule), None) => failures.push(format!("{name}: nothing recorded, {rule} expected")),
        (None, _) if !flags.is_empty() => {
            failures.push(format!("{name}: a well-formed case flagged {flags:?}"));
        }
        _ => {}
    }
    // A request hidden behind the first is recorded, flagged as following it.
    if let Some(target) = case.hidden {
        let flagged = sensor.iter().any(|s| {
            s.target == target
                && s.rules
                    .iter()
                    .any(|r| r == "protocol-after-ambiguous-message")
        });
        if !flagged {
            failures.push(format!("{name}: {target} not recorded flagged"));
        }
    }
    // A request the origin never parsed is only in the record flagged.
    for s in sensor {
        if !origin_read.iter().any(|o| o.same_request(s)) && s.rules.is_empty() {
            failures.push(format!(
                "{name}: {} {} recorded unflagged, the origin never parsed it",
                s.method, s.target
            ));
        }
    }
    failures
}

#[test]
fn framing_abuse_is_decoded_as_the_origin_reads_it_and_flagged() {
    let net = TestNet::new();
    let origins = [Origin::nginx(&net, 8080), Origin::python(&net, 8081)];
    let data_dir = std::env::temp_dir().join(format!("apis-smuggling-data-{}", net.server_ns));
    let _ = fs::remove_dir_all(&data_dir);
    let ports: Vec<u16> = origins.iter().map(|o| o.port).collect();
    let mut daemon = start_daemon(&net, BIN, &ports, &data_dir);

    let cases = cases();
    // Per origin, per case: the client's port and the responses it got.
    let sent: Vec<Vec<(u16, usize)>> = in_namespace(&net.client_ns, || {
        origins
            .iter()
            .map(|origin| {
                let addr = net.server_addr(false, origin.port);
                cases.iter().map(|c| send(addr, &c.bytes)).collect()
            })
            .collect()
    });

    // Every request an origin parsed is in the record before the daemon stops.
    let all_recorded = |records: &[serde_json::Value]| {
        origins.iter().zip(&sent).all(|(origin, sent)| {
            sent.iter().all(|(port, _)| {
                let sensor = sensor_reading(records, *port);
                origin
                    .reading(*port)
                    .iter()
                    .all(|o| sensor.iter().any(|s| s.same_request(o)))
            })
        })
    };
    wait_until(Duration::from_secs(10), || {
        all_recorded(&exported(BIN, &data_dir))
    });
    sh("kill", &["-TERM", &daemon.id().to_string()]);
    assert!(daemon.wait().unwrap().success());
    let records = exported(BIN, &data_dir);

    let mut failures = Vec::new();
    for (origin, sent) in origins.iter().zip(&sent) {
        let program = if origin.name == "nginx" {
            version("/usr/sbin/nginx", "-v")
        } else {
            version("python3", "--version")
        };
        println!("\n{program}\n");
        println!(
            "| case | {}'s reading | sensor's reading | flagged |",
            origin.name
        );
        println!("|---|---|---|---|");
        for (case, (port, _)) in cases.iter().zip(sent) {
            let sensor = sensor_reading(&records, *port);
            failures.extend(judge(case, origin, &origin.reading(*port), &sensor));
        }
    }
    let _ = fs::remove_dir_all(&data_dir);
    assert!(failures.is_empty(), "{failures:#?}");
}
