//! HTTP/2 without TLS (h2c), live and from a capture: nginx serving h2c with prior knowledge in
//! a namespace; nghttp (nghttp2's client) sending eight concurrent streams on one connection
//! (with PRIORITY frames for streams it never opens), curl (`--http2-prior-knowledge`) a
//! 300,000-byte body, a HEAD, a 204, a 404 and a PUT with a body, a connection each (curl
//! 7.88 fails to reuse or multiplex an h2c connection with prior knowledge); the
//! `apisessions run` daemon records them.
//!
//! nginx's access log is the ground truth: every request it logged is one exchange with version
//! "HTTP/2", its method, URI, status and response body length, and the concurrent requests are
//! streams of one connection. tcpdump captures the same traffic; `import` of that capture must
//! give the same exchanges, and tshark's HTTP/2 dissector the same (stream, method, path,
//! status) on each connection.
//!
//! gRPC: grpcio's server and client (tests/data/http2/grpc_echo.py, from the PyPI venv that
//! `cargo xtask setup` installs) make unary, failing, server-streaming and bidirectional calls
//! on one channel; each is one exchange with its `/echo.Echo/Method` path, `grpc_status` and
//! message counts as the client saw them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{Tcpdump, TestNet, exported, sh, spawn_nginx, start_daemon, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_apisessions");
const PORT: u16 = 8080;
const USER_JSON: &str = "{\"id\":7,\"name\":\"h2 test user\"}";
const BIG_LEN: usize = 300_000;
const POST_LEN: usize = 5_000;

/// nginx with an h2c listener (prior knowledge: nginx 1.22 does not upgrade).
struct H2Nginx {
    child: Child,
    dir: PathBuf,
}

impl H2Nginx {
    fn start(net: &TestNet) -> Self {
        let dir = std::env::temp_dir().join(format!("apis-h2-nginx-{}", net.server_ns));
        let _ = fs::remove_dir_all(&dir);
        let root = dir.join("root");
        fs::create_dir_all(root.join("api")).unwrap();
        fs::write(root.join("api/user.json"), USER_JSON).unwrap();
        fs::write(root.join("api/big.bin"), vec![b'b'; BIG_LEN]).unwrap();
        let conf = format!(
            "daemon off;\nmaster_process off;\nuser root;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n log_format h2 '$remote_port $request_method $request_uri $status $body_bytes_sent $server_protocol';\n\
             access_log {dir}/access.log h2;\n client_body_temp_path {dir}/body;\n\
             proxy_temp_path {dir}/proxy;\n fastcgi_temp_path {dir}/fastcgi;\n uwsgi_temp_path {dir}/uwsgi;\n\
             scgi_temp_path {dir}/scgi;\n\
             server {{ listen {v4}:{PORT} http2; root {root};\n\
               location = /api/empty {{ return 204; }}\n\
               location /api/uploads/ {{ dav_methods PUT; create_full_put_path on; }}\n\
             }}\n}}\n",
            dir = dir.display(),
            v4 = net.server_v4,
            root = root.display(),
        );
        let child = spawn_nginx(&net.server_ns, &dir, &conf);
        let nginx = Self { child, dir };
        let up = wait_until(Duration::from_secs(10), || {
            curl(
                net,
                &["-o", "/dev/null", &url(net, "/api/user.json?probe=1")],
            )
            .is_ok()
        });
        assert!(up, "nginx did not serve h2c: {}", nginx.error_log());
        nginx
    }

    fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// (client port, method, uri, status, body bytes sent) of each HTTP/2 request logged.
    fn logged(&self) -> Vec<(u16, String, String, u16, u64)> {
        fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(' ').collect();
                (f.len() == 6 && f[5] == "HTTP/2.0" && !f[2].contains("probe")).then(|| {
                    (
                        f[0].parse().unwrap(),
                        f[1].to_owned(),
                        f[2].to_owned(),
                        f[3].parse().unwrap(),
                        f[4].parse().unwrap(),
                    )
                })
            })
            .collect()
    }
}

impl Drop for H2Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The daemon, killed if the test fails before it stops it.
struct Stopped(Option<Child>);

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn url(net: &TestNet, path: &str) -> String {
    format!("http://{}:{PORT}{path}", net.server_v4)
}

/// curl with HTTP/2 prior knowledge from the client namespace.
fn curl(net: &TestNet, args: &[&str]) -> Result<String, String> {
    let out = TestNet::command(&net.client_ns, "curl")
        .args(["-sS", "--http2-prior-knowledge", "-A", "h2-live/1"])
        .args(args)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// What a record says of a request, to compare with the origin's log.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    client_port: u16,
    method: String,
    uri: String,
    status: u16,
    response_body_len: u64,
}

fn seen(records: &[serde_json::Value]) -> Vec<Seen> {
    let mut seen: Vec<Seen> = records
        .iter()
        .map(|r| Seen {
            client_port: r["client_port"].as_u64().unwrap() as u16,
            method: r["method"].as_str().unwrap_or("-").to_owned(),
            uri: r["uri"].as_str().unwrap_or("-").to_owned(),
            status: r["status_code"].as_u64().unwrap_or(0) as u16,
            response_body_len: r["response_body_len"].as_u64().unwrap_or(u64::MAX),
        })
        .collect();
    seen.sort();
    seen
}

/// (client port, stream id, method, path, status) of each request tshark's HTTP/2 dissector
/// finds in `pcap`.
fn tshark_streams(pcap: &Path) -> BTreeSet<(u16, u32, String, String, u16)> {
    let out = sh(
        "tshark",
        &[
            "-r",
            pcap.to_str().unwrap(),
            "-d",
            &format!("tcp.port=={PORT},http2"),
            "-Y",
            "http2.type == 1",
            "-T",
            "json",
            "--no-duplicate-keys",
        ],
    );
    let packets: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    // Per (client port, stream): the request's method and path, the response's status.
    let mut streams: BTreeMap<(u16, u32), (String, String, u16)> = BTreeMap::new();
    for packet in &packets {
        let layers = &packet["_source"]["layers"];
        let port = |name: &str| -> u16 { layers["tcp"][name].as_str().unwrap().parse().unwrap() };
        let client_port = if port("tcp.dstport") == PORT {
            port("tcp.srcport")
        } else {
            port("tcp.dstport")
        };
        let mut frames = Vec::new();
        collect_frames(&layers["http2"], &mut frames);
        for (stream_id, headers) in frames {
            let entry = streams.entry((client_port, stream_id)).or_default();
            for (name, value) in headers {
                match name.as_str() {
                    ":method" => entry.0 = value,
                    ":path" => entry.1 = value,
                    ":status" if entry.2 == 0 => entry.2 = value.parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
    }
    // Frames of streams that carry no request (SETTINGS, WINDOW_UPDATE, nghttp's PRIORITY-only
    // streams) share the packets.
    streams
        .into_iter()
        .filter(|(_, (method, _, _))| !method.is_empty())
        .map(|((port, id), (m, p, s))| (port, id, m, p, s))
        .collect()
}

/// Each frame object (one holding `http2.streamid`) below `value`, with its header fields.
fn collect_frames(value: &serde_json::Value, out: &mut Vec<(u32, Vec<(String, String)>)>) {
    match value {
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_frames(v, out)),
        serde_json::Value::Object(map) => {
            if let Some(id) = map.get("http2.streamid").and_then(|v| v.as_str()) {
                let mut headers = Vec::new();
                collect_headers(value, &mut headers);
                out.push((id.parse().unwrap(), headers));
            } else {
                map.values().for_each(|v| collect_frames(v, out));
            }
        }
        _ => {}
    }
}

fn collect_headers(value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_headers(v, out)),
        serde_json::Value::Object(map) => {
            if let (Some(name), Some(value)) = (
                map.get("http2.header.name").and_then(|v| v.as_str()),
                map.get("http2.header.value").and_then(|v| v.as_str()),
            ) {
                out.push((name.to_owned(), value.to_owned()));
            }
            map.values().for_each(|v| collect_headers(v, out));
        }
        _ => {}
    }
}

#[test]
fn h2c_streams_are_exchanges_live_and_from_a_capture() {
    let net = TestNet::new();
    let nginx = H2Nginx::start(&net);
    let pcap = Tcpdump::start(&net, PORT);
    let data_dir = std::env::temp_dir().join(format!("apis-h2-data-{}", net.server_ns));
    let _ = fs::remove_dir_all(&data_dir);
    let mut daemon = Stopped(Some(start_daemon(&net, BIN, &[PORT], &data_dir)));

    // Eight concurrent streams on one connection.
    let mut nghttp = TestNet::command(&net.client_ns, "nghttp");
    nghttp.args(["-n", "-H", "user-agent: h2-live/1"]);
    for i in 1..=8 {
        nghttp.arg(url(&net, &format!("/api/user.json?s={i}")));
    }
    let out = nghttp
        .output()
        .expect("nghttp (`cargo xtask setup` installs nghttp2-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    curl(&net, &["-o", "/dev/null", &url(&net, "/api/big.bin")]).unwrap();
    curl(
        &net,
        &["-I", "-o", "/dev/null", &url(&net, "/api/user.json?head=1")],
    )
    .unwrap();
    curl(&net, &["-o", "/dev/null", &url(&net, "/api/empty")]).unwrap();
    curl(&net, &["-o", "/dev/null", &url(&net, "/api/missing")]).unwrap();
    let body = "p".repeat(POST_LEN);
    curl(
        &net,
        &[
            "-o",
            "/dev/null",
            "-X",
            "PUT",
            "-H",
            "content-type: text/plain",
            "--data-binary",
            &body,
            &url(&net, "/api/uploads/p.txt"),
        ],
    )
    .unwrap();

    let logged = nginx.logged();
    assert_eq!(logged.len(), 13, "nginx's log: {logged:?}");
    let want: Vec<Seen> = {
        let mut want: Vec<Seen> = logged
            .iter()
            .map(|(port, method, uri, status, sent)| Seen {
                client_port: *port,
                method: method.clone(),
                uri: uri.clone(),
                status: *status,
                response_body_len: *sent,
            })
            .collect();
        want.sort();
        want
    };
    wait_until(Duration::from_secs(15), || {
        seen(&exported(BIN, &data_dir)).len() >= want.len()
    });
    let mut running = daemon.0.take().unwrap();
    sh("kill", &["-TERM", &running.id().to_string()]);
    assert!(running.wait().unwrap().success());
    let records = exported(BIN, &data_dir);
    assert_eq!(seen(&records), want, "live records against nginx's log");
    for r in &records {
        assert_eq!(r["version"], "HTTP/2", "{r:#}");
        assert!(
            r["stream_id"].as_u64().is_some_and(|id| id % 2 == 1),
            "{r:#}"
        );
        assert_eq!(r["user_agent"], "h2-live/1", "{r:#}");
        assert_eq!(r["host"], format!("{}:{PORT}", net.server_v4), "{r:#}");
    }
    // The concurrent requests: one connection, a stream each.
    let concurrent: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["uri"].as_str().unwrap().contains("?s="))
        .collect();
    let ports: BTreeSet<u64> = concurrent
        .iter()
        .map(|r| r["client_port"].as_u64().unwrap())
        .collect();
    let streams: BTreeSet<u64> = concurrent
        .iter()
        .map(|r| r["stream_id"].as_u64().unwrap())
        .collect();
    assert_eq!((ports.len(), streams.len()), (1, 8), "{concurrent:#?}");
    let post = records
        .iter()
        .find(|r| r["uri"] == "/api/uploads/p.txt")
        .unwrap();
    assert_eq!(post["method"], "PUT");
    assert_eq!(post["request_body_len"], POST_LEN as u64);
    let stat = |name: &str| common::counter(BIN, &data_dir, "http", name);
    // nghttp's, and one per curl.
    assert_eq!(stat("h2_connections"), 6);
    assert_eq!(stat("h2_decoding_stopped"), 0);

    // The same traffic from the capture.
    let pcap = pcap.stop();
    let out = Command::new(BIN)
        .arg("import")
        .arg(&pcap)
        .arg("--ndjson")
        .arg("--data-dir")
        .arg(data_dir.join("import"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let imported: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| !r["uri"].as_str().unwrap_or("").contains("probe"))
        .collect();
    assert_eq!(seen(&imported), want, "import of {}", pcap.display());

    // tshark's HTTP/2 dissector reads the same streams.
    let ours: BTreeSet<(u16, u32, String, String, u16)> = imported
        .iter()
        .map(|r| {
            (
                r["client_port"].as_u64().unwrap() as u16,
                r["stream_id"].as_u64().unwrap() as u32,
                r["method"].as_str().unwrap().to_owned(),
                r["uri"].as_str().unwrap().to_owned(),
                r["status_code"].as_u64().unwrap() as u16,
            )
        })
        .collect();
    let theirs: BTreeSet<_> = tshark_streams(&pcap)
        .into_iter()
        .filter(|(_, _, _, path, _)| !path.contains("probe"))
        .collect();
    assert_eq!(ours, theirs, "ours against tshark's on {}", pcap.display());
    let _ = fs::remove_dir_all(&data_dir);
    let _ = fs::remove_file(&pcap);
}

/// The PyPI venv's python (`cargo xtask setup` installs grpcio there).
fn venv_python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/frameworks/venv/bin/python")
}

#[test]
fn grpc_calls_are_exchanges_with_status_and_message_counts() {
    const GRPC_PORT: u16 = 50051;
    let net = TestNet::new();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/http2/grpc_echo.py");
    let addr = format!("{}:{GRPC_PORT}", net.server_v4);
    let server = TestNet::command(&net.server_ns, venv_python())
        .arg(&script)
        .args(["serve", &addr])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the PyPI venv with grpcio (`cargo xtask setup`)");
    let mut server = Stopped(Some(server));
    let data_dir = std::env::temp_dir().join(format!("apis-grpc-data-{}", net.server_ns));
    let _ = fs::remove_dir_all(&data_dir);
    let mut daemon = Stopped(Some(start_daemon(&net, BIN, &[GRPC_PORT], &data_dir)));
    // The server prints once it listens.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.0.as_mut().unwrap().stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "serving");

    let out = TestNet::command(&net.client_ns, venv_python())
        .arg(&script)
        .args(["call", &addr])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // (method, requests, replies, status) as the client saw each call.
    let calls: Vec<(String, u64, u64, u64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                format!("/echo.Echo/{}", f[0]),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(calls.len(), 5, "{calls:?}");

    let recorded = |records: &[serde_json::Value]| -> Vec<(String, u64, u64, u64)> {
        let mut calls: Vec<(u64, (String, u64, u64, u64))> = records
            .iter()
            .map(|r| {
                let n = |f: &str| r[f].as_u64().unwrap_or(u64::MAX);
                (
                    n("stream_id"),
                    (
                        r["uri"].as_str().unwrap_or("-").to_owned(),
                        n("grpc_request_messages"),
                        n("grpc_response_messages"),
                        n("grpc_status"),
                    ),
                )
            })
            .collect();
        calls.sort();
        calls.into_iter().map(|(_, c)| c).collect()
    };
    wait_until(Duration::from_secs(15), || {
        recorded(&exported(BIN, &data_dir)).len() >= calls.len()
    });
    let mut running = daemon.0.take().unwrap();
    sh("kill", &["-TERM", &running.id().to_string()]);
    assert!(running.wait().unwrap().success());
    let records = exported(BIN, &data_dir);
    assert_eq!(recorded(&records), calls, "{records:#?}");
    let ports: BTreeSet<u64> = records
        .iter()
        .map(|r| r["client_port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports.len(), 1, "one channel, one connection");
    for r in &records {
        assert_eq!(r["version"], "HTTP/2", "{r:#}");
        assert_eq!(r["method"], "POST", "{r:#}");
        assert_eq!(r["status_code"], 200, "{r:#}");
        assert_eq!(r["endpoint"], r["uri"], "{r:#}");
    }
    let big = records
        .iter()
        .filter(|r| r["uri"] == "/echo.Echo/Unary")
        .map(|r| r["request_body_len"].as_u64().unwrap())
        .max();
    assert_eq!(
        big,
        Some(5 + 5000),
        "a message's 5-byte prefix and its 5,000 bytes"
    );
    let _ = fs::remove_dir_all(&data_dir);
}
