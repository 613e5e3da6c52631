//! A reverse proxy on the captured host, end to end: a real nginx in front of a real
//! application (Python's standard-library HTTP server) in the server's namespace, the client in
//! its own namespace behind a veth pair, the `apisessions run` daemon watching the veth and `lo`.
//!
//! - both hops watched: one exchange per client request, with the client's address, joined,
//!   `upstream_ms` below the outer duration, in one session;
//! - only the application's port watched (as when the proxy terminates TLS): the client's
//!   address (IPv4 and IPv6) comes from the proxy's forwarding header;
//! - a client that sends its own `X-Forwarded-For` keeps its own address, directly and through
//!   the proxy;
//! - a chain of two proxies (the second on the host's own address, trusted as such);
//! - `import` of a tcpdump capture of the both-hops traffic gives the same records.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeSet,
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use common::{Tcpdump, TestNet, in_namespace, sh, spawn_nginx, wait_until};

const APP_PORT: u16 = 5000;
/// nginx in front of the application.
const PROXY_PORT: u16 = 80;
/// The first proxy of the chain, which forwards to the second on `CHAIN_INNER_PORT`.
const CHAIN_PORT: u16 = 81;
const CHAIN_INNER_PORT: u16 = 8081;

/// The application: a login that sets a session cookie, items as JSON, keep-alive.
const APP: &str = r#"
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def reply(self, body, extra=()):
        body = json.dumps(body).encode()
        self.send_response(200)
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.reply({"path": self.path, "seen_for": self.headers.get("X-Forwarded-For")})
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.reply({"ok": True}, [("Set-Cookie", "sid=s3ss10n-" + self.path.strip("/") + "; Path=/")])

ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
"#;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_apisessions"))
}

/// The application and the proxies in the server's namespace, removed on drop.
struct Host {
    dir: PathBuf,
    app: Child,
    nginx: Child,
}

impl Host {
    fn start(net: &TestNet) -> Self {
        let dir = std::env::temp_dir().join(format!("apis-proxy-{}", net.server_ns));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("app.py"), APP).unwrap();
        let app = TestNet::command(&net.server_ns, "python3")
            .arg(dir.join("app.py"))
            .arg(APP_PORT.to_string())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // The usual reverse-proxy block: HTTP/1.1 with keep-alive to the upstream, the client
        // appended to X-Forwarded-For, X-Real-IP set.
        let forward = |to: &str| {
            format!(
                "location / {{ proxy_pass http://{to}; proxy_http_version 1.1; \
                 proxy_set_header Connection \"\"; proxy_set_header Host $host; \
                 proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; \
                 proxy_set_header X-Real-IP $remote_addr; }}"
            )
        };
        let (v4, v6) = (net.server_v4, net.server_v6);
        let conf = format!(
            "daemon off;\nmaster_process off;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n access_log {d}/access.log;\n client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n\
             upstream app {{ server 127.0.0.1:{APP_PORT}; keepalive 8; }}\n\
             upstream chain {{ server {v4}:{CHAIN_INNER_PORT}; keepalive 8; }}\n\
             server {{ listen {v4}:{PROXY_PORT}; listen [{v6}]:{PROXY_PORT}; {app} }}\n\
             server {{ listen {v4}:{CHAIN_PORT}; {chain} }}\n\
             server {{ listen {v4}:{CHAIN_INNER_PORT}; {app} }}\n}}\n",
            d = dir.display(),
            app = forward("app"),
            chain = forward("chain"),
        );
        let nginx = spawn_nginx(&net.server_ns, &dir, &conf);
        let host = Self { dir, app, nginx };
        let ready = in_namespace(&net.client_ns, || {
            wait_until(Duration::from_secs(10), || {
                [APP_PORT, PROXY_PORT, CHAIN_PORT]
                    .iter()
                    .all(|&port| TcpStream::connect(net.server_addr(false, port)).is_ok())
            })
        });
        assert!(ready, "the application and nginx did not start");
        host
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for child in [&mut self.nginx, &mut self.app] {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The sensor daemon in the server's namespace on its veth and `lo`, stopped with SIGTERM.
struct Daemon {
    child: Child,
    data_dir: PathBuf,
}

impl Daemon {
    fn start(net: &TestNet, name: &str, ports: &[u16]) -> Self {
        let data_dir = std::env::temp_dir().join(format!("apis-proxy-{name}-{}", net.server_ns));
        let _ = fs::remove_dir_all(&data_dir);
        let mut command = TestNet::command(&net.server_ns, env!("CARGO_BIN_EXE_apisessions"));
        command.args(["run", "--iface", "lo", "--iface", &net.server_if]);
        for port in ports {
            command.args(["--port", &port.to_string()]);
        }
        let child = command
            .args(["--summary-interval", "0", "--data-dir"])
            .arg(&data_dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            wait_until(Duration::from_secs(20), || data_dir
                .join("stats.json")
                .exists()),
            "daemon up"
        );
        Self { child, data_dir }
    }

    /// Stops the daemon; its exchanges (NDJSON records) and its statistics.
    fn stop(mut self) -> (Vec<serde_json::Value>, serde_json::Value) {
        // The last FIN/ACKs are still crossing the veth.
        thread::sleep(Duration::from_millis(300));
        sh("kill", &["-TERM", &self.child.id().to_string()]);
        assert!(self.child.wait().unwrap().success());
        let stats = bin()
            .args(["stats", "--json", "--data-dir"])
            .arg(&self.data_dir)
            .output()
            .unwrap();
        let records = export(&self.data_dir);
        let stats = serde_json::from_slice(&stats.stdout).unwrap();
        let _ = fs::remove_dir_all(&self.data_dir);
        (records, stats)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn export(data_dir: &Path) -> Vec<serde_json::Value> {
    let out = bin()
        .args(["export", "--format", "ndjson", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn stat(stats: &serde_json::Value, stage: &str, name: &str) -> u64 {
    stats["stages"][stage][name].as_u64().unwrap_or_else(|| {
        panic!("no counter {stage}.{name} in {stats:#}");
    })
}

/// A browser-like client on one keep-alive connection: logs in, then five requests with the
/// session cookie. `extra` goes into every request's head.
fn user_session(server: SocketAddr, tag: &str, extra: &str) {
    let mut stream = TcpStream::connect(server).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut exchange = |head: String, body: &str| {
        let request = format!(
            "{head}Host: shop.test\r\nUser-Agent: proxied-client/1\r\n{extra}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        read_response(&mut stream)
    };
    let login = exchange(format!("POST /login/{tag} HTTP/1.1\r\n"), "user=alice");
    let cookie = login
        .lines()
        .find_map(|l| l.strip_prefix("Set-Cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    for i in 1..=5 {
        exchange(
            format!("GET /items/{tag}{i} HTTP/1.1\r\nCookie: {cookie}\r\n"),
            "",
        );
    }
}

/// One response with a Content-Length body, as text.
fn read_response(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "connection closed");
        data.push(byte[0]);
    }
    let head = String::from_utf8(data).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

/// (method, uri) of each record, sorted.
fn requests(records: &[serde_json::Value]) -> Vec<(String, String)> {
    let mut list: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap_or("").to_owned(),
                r["uri"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    list.sort();
    list
}

fn expected(tag: &str) -> Vec<(String, String)> {
    let mut list = vec![("POST".to_owned(), format!("/login/{tag}"))];
    list.extend((1..=5).map(|i| ("GET".to_owned(), format!("/items/{tag}{i}"))));
    list.sort();
    list
}

/// Every record is the client's: its address, one session, and joined with a plausible
/// upstream time if `joined`.
fn assert_clients_records(records: &[serde_json::Value], net: &TestNet, tag: &str, joined: bool) {
    assert_eq!(requests(records), expected(tag), "{records:#?}");
    let client = net.client_v4.to_string();
    for r in records {
        assert_eq!(r["client_ip"], client.as_str(), "{r:#}");
        assert_eq!(r["joined"], joined, "{r:#}");
        if joined {
            let upstream = r["upstream_ms"].as_f64().unwrap();
            let duration = r["duration_ms"].as_f64().unwrap();
            assert!(
                upstream > 0.0 && upstream < duration,
                "upstream {upstream} ms, duration {duration} ms: {r:#}"
            );
        } else {
            assert!(r["upstream_ms"].is_null(), "{r:#}");
        }
    }
    let sessions: BTreeSet<_> = records
        .iter()
        .map(|r| r["session_id"].to_string())
        .collect();
    assert_eq!(sessions.len(), 1, "one session: {records:#?}");
}

/// What must be the same between the live records and those of an import of a capture.
fn comparable(records: &[serde_json::Value]) -> Vec<String> {
    let mut list: Vec<String> = records
        .iter()
        .map(|r| {
            format!(
                "{}:{} via {}:{} -> :{} {} {} {} joined={} upstream={}",
                r["client_ip"],
                r["client_port"],
                r["peer_ip"],
                r["peer_port"],
                r["server_port"],
                r["method"],
                r["uri"],
                r["status_code"],
                r["joined"],
                r["upstream_ms"].is_number(),
            )
        })
        .collect();
    list.sort();
    list
}

#[test]
fn a_reverse_proxy_on_the_host() {
    let net = TestNet::new();
    let _host = Host::start(&net);
    let proxy = net.server_addr(false, PROXY_PORT);

    // Both hops watched: one exchange per request, the client's, joined; and the same from an
    // import of a capture of that traffic.
    let (proxy_port, app_port) = (PROXY_PORT.to_string(), APP_PORT.to_string());
    let filter = ["tcp", "port", &proxy_port, "or", "tcp", "port", &app_port];
    let tcpdump = Tcpdump::start_on(&net, "any", &filter);
    let daemon = Daemon::start(&net, "both", &[PROXY_PORT, APP_PORT]);
    in_namespace(&net.client_ns, || user_session(proxy, "both", ""));
    let (both, stats) = daemon.stop();
    let pcap = tcpdump.stop();
    assert_clients_records(&both, &net, "both", true);
    for r in &both {
        assert_eq!(r["peer_ip"], r["client_ip"], "{r:#}");
        assert_eq!(r["server_port"], PROXY_PORT, "{r:#}");
    }
    assert_eq!(stat(&stats, "proxy", "joined"), 6);
    assert_eq!(stat(&stats, "proxy", "forwarded_clients"), 6);
    assert_eq!(stat(&stats, "proxy", "unjoined_timeout"), 0);

    let import_dir = std::env::temp_dir().join(format!("apis-proxy-import-{}", net.server_ns));
    let _ = fs::remove_dir_all(&import_dir);
    let out = bin()
        .arg("import")
        .arg(&pcap)
        .arg("--data-dir")
        .arg(&import_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let imported = export(&import_dir);
    assert_eq!(
        comparable(&imported),
        comparable(&both),
        "import of {}: {}",
        pcap.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = fs::remove_dir_all(&import_dir);
    let _ = fs::remove_file(&pcap);

    // Only the application's port watched, as when the proxy terminates TLS: the client's
    // address from the proxy's header, the proxy as the peer; an IPv6 client too.
    let daemon = Daemon::start(&net, "inner", &[APP_PORT]);
    in_namespace(&net.client_ns, || {
        user_session(proxy, "inner", "");
        user_session(net.server_addr(true, PROXY_PORT), "inner6", "");
    });
    let (records, stats) = daemon.stop();
    let (inner6, inner): (Vec<_>, Vec<_>) = records
        .into_iter()
        .partition(|r| r["uri"].as_str().unwrap().contains("inner6"));
    assert_clients_records(&inner, &net, "inner", false);
    assert_eq!(requests(&inner6), expected("inner6"), "{inner6:#?}");
    for r in inner.iter().chain(&inner6) {
        assert_eq!(r["peer_ip"], "127.0.0.1", "{r:#}");
        assert_eq!(r["server_port"], APP_PORT, "{r:#}");
        assert_eq!(r["client_port"], 0, "the header names no port: {r:#}");
    }
    let client6 = net.client_v6.to_string();
    assert!(
        inner6.iter().all(|r| r["client_ip"] == client6.as_str()),
        "{inner6:#?}"
    );
    assert_eq!(stat(&stats, "proxy", "forwarded_clients"), 12);

    // A client naming another address itself: directly (an untrusted peer, the header is
    // ignored) and through the proxy (which appends the real one).
    let spoof = "X-Forwarded-For: 203.0.113.66\r\nX-Real-IP: 203.0.113.66\r\n\
                 Forwarded: for=203.0.113.66\r\n";
    let daemon = Daemon::start(&net, "spoof", &[PROXY_PORT, APP_PORT]);
    in_namespace(&net.client_ns, || {
        user_session(net.server_addr(false, APP_PORT), "direct", spoof);
        user_session(proxy, "proxied", spoof);
    });
    let (spoofed, stats) = daemon.stop();
    let (direct, proxied): (Vec<_>, Vec<_>) = spoofed
        .into_iter()
        .partition(|r| r["server_port"] == APP_PORT);
    assert_clients_records(&direct, &net, "direct", false);
    assert_clients_records(&proxied, &net, "proxied", true);
    // Ignored in the six direct requests and in the six that reached the proxy.
    assert_eq!(stat(&stats, "proxy", "forwarded_untrusted"), 12);

    // Two proxies in a row, the second on the host's own (non-loopback) address.
    let daemon = Daemon::start(&net, "chain", &[CHAIN_PORT, CHAIN_INNER_PORT, APP_PORT]);
    in_namespace(&net.client_ns, || {
        user_session(net.server_addr(false, CHAIN_PORT), "chain", "")
    });
    let (chain, stats) = daemon.stop();
    assert_clients_records(&chain, &net, "chain", true);
    for r in &chain {
        assert_eq!(r["server_port"], CHAIN_PORT, "{r:#}");
    }
    assert_eq!(stat(&stats, "proxy", "joined"), 12);
}
