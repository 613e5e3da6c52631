//! TLS plaintext through uprobes, end to end: a real nginx (Debian's, OpenSSL 3, one master and
//! one worker) with a self-signed certificate in the server's namespace, real clients (curl and
//! Python's `ssl`) in the client's namespace behind a veth pair, and `apisessions run
//! --tls-port` watching the veth.
//!
//! - every exchange the clients made while the sensor ran is decoded exactly once, with
//!   `tls: true`, the status and body lengths the client saw (1 MiB up and down included), and
//!   the client's own address and port (IPv4 and IPv6);
//! - keep-alive (curl, Python) and pipelining (two requests in one TLS write);
//! - HTTP/2 over TLS (ALPN h2): concurrent streams on one connection, HEAD, 204;
//! - nginx as a TLS reverse proxy in front of a plaintext application on the loopback: one
//!   exchange per request, the client's hop joined with the proxy's;
//! - a connection opened before the sensor started is recognised when it is used again;
//! - a TLS server started after the sensor is found and read;
//! - the ciphertext on the TLS ports is counted in the kernel, never decoded as HTTP; nothing is
//!   lost, unresolved or cut short;
//! - a daemon that gave up root (`--user nobody`, as the packaged service does) reads a TLS
//!   server started after it, which it cannot even list: the probes went on the system's
//!   OpenSSL while it was root, and the kernel picks the server's connections by their port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Stdio},
    time::Duration,
};

use common::{TestNet, counter, exported, sh, spawn_nginx, start_daemon_in, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_apisessions");
/// Not the default TLS ports: a daemon follows TLS servers in every network namespace (containers
/// have their own), so one run beside this test with the defaults must not find this test's.
const TLS_PORT: u16 = 9443;
/// The server started after the sensor.
const LATE_PORT: u16 = 9444;
/// The server started after a daemon without root.
const UNPRIVILEGED_PORT: u16 = 9445;
const SMALL: &str = "{\"user\":{\"id\":42,\"name\":\"ada\"}}";
const MIB: usize = 1 << 20;
/// The plaintext application behind the main nginx's `/app/` (on the loopback).
const APP_PORT: u16 = 8081;
const APP_BODY: &str = "{\"app\":true}";

/// One exchange as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    uri: String,
    status: u64,
    request_len: u64,
    response_len: u64,
    client_ip: String,
    client_port: u64,
    server_port: u64,
}

/// nginx with TLS on `ports` (IPv4 and IPv6), static files and WebDAV PUT, one worker; with an
/// `app` port, also a reverse proxy: `/app/` goes to a plaintext server of its own on that port
/// of the loopback.
struct TlsNginx {
    child: Child,
    dir: PathBuf,
}

impl TlsNginx {
    fn start(net: &TestNet, name: &str, port: u16, app: Option<u16>) -> Self {
        let dir = std::env::temp_dir().join(format!("apis-tls-{}-{name}", net.server_ns));
        let _ = fs::remove_dir_all(&dir);
        let root = dir.join("root");
        fs::create_dir_all(root.join("uploads")).unwrap();
        fs::write(root.join("user.json"), SMALL).unwrap();
        fs::write(root.join("mib.bin"), vec![b'm'; MIB]).unwrap();
        let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
        sh(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ],
        );
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\npid {dir}/nginx.pid;\n\
             error_log {dir}/error.log;\nevents {{ worker_connections 256; }}\n\
             http {{\n access_log {dir}/access.log;\n client_body_temp_path {dir}/body;\n\
             proxy_temp_path {dir}/proxy;\n fastcgi_temp_path {dir}/fastcgi;\n uwsgi_temp_path {dir}/uwsgi;\n\
             scgi_temp_path {dir}/scgi;\n keepalive_requests 1000;\n default_type application/json;\n\
             server {{ listen {v4}:{port} ssl http2; listen [{v6}]:{port} ssl http2; root {root};\n\
               ssl_certificate {cert}; ssl_certificate_key {key};\n\
               location /uploads/ {{ dav_methods PUT; client_max_body_size 8m; create_full_put_path on; }}\n\
               location = /empty {{ return 204; }}\n\
               {proxy}\n\
             }}\n{app_server}\n}}\n",
            proxy = app.map_or(String::new(), |p| format!(
                "location /app/ {{ proxy_pass http://127.0.0.1:{p}; \
                 proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }}"
            )),
            app_server = app.map_or(String::new(), |p| format!(
                "server {{ listen 127.0.0.1:{p}; default_type application/json; \
                 location / {{ return 200 '{APP_BODY}'; }} }}"
            )),
            dir = dir.display(),
            v4 = net.server_v4,
            v6 = net.server_v6,
            root = root.display(),
            cert = cert.display(),
            key = key.display(),
        );
        let child = spawn_nginx(&net.server_ns, &dir, &conf);
        let nginx = Self { child, dir };
        // Listening once a TLS client gets an answer.
        let url = format!("https://{}:{port}/user.json", net.server_v4);
        let ready = wait_until(Duration::from_secs(10), || {
            TestNet::command(&net.client_ns, "curl")
                .args(["-sk", "-o", "/dev/null", &url])
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(ready, "nginx did not answer on {url}");
        nginx
    }
}

impl Drop for TlsNginx {
    fn drop(&mut self) {
        // SIGTERM: the master takes its worker down with it.
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// curl over TLS (HTTP/1.1), all `urls` on one keep-alive connection; what it saw.
fn curl(net: &TestNet, urls: &[String]) -> Vec<Seen> {
    curl_with(net, &["--http1.1"], urls)
}

/// curl over TLS with options (`--http1.1`, `--http2`: ALPN; `--parallel`, `-I`), all `urls`
/// on one connection; what it saw.
fn curl_with(net: &TestNet, options: &[&str], urls: &[String]) -> Vec<Seen> {
    let mut cmd = TestNet::command(&net.client_ns, "curl");
    cmd.args(["-sk", "-A", "tls-live/1"]).args(options);
    for url in urls {
        cmd.args(["-o", "/dev/null", url]);
    }
    cmd.args([
        "-w",
        "%{url_effective} %{http_code} %{size_upload} %{size_download} %{local_ip} %{local_port} %{remote_port}\\n",
    ]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "curl {urls:?}: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let uri = f[0].split_once(&format!(":{}", f[6])).unwrap().1.to_owned();
            Seen {
                uri,
                status: f[1].parse().unwrap(),
                request_len: f[2].parse().unwrap(),
                response_len: f[3].parse().unwrap(),
                client_ip: f[4].to_owned(),
                client_port: f[5].parse().unwrap(),
                server_port: f[6].parse().unwrap(),
            }
        })
        .collect()
}

/// The Python client: requests over one keep-alive TLS connection (`http.client`), a pipelined
/// pair in one TLS write, a 1 MiB upload and download. Commands come on stdin, one per line:
/// `get URI`, `put URI LEN`, `pipeline URI URI`, `quit`; each answer is a JSON line per exchange.
const PYTHON_CLIENT: &str = r#"
import http.client, json, socket, ssl, sys
host, port = sys.argv[1], int(sys.argv[2])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
conn = http.client.HTTPSConnection(host, port, context=ctx)
conn.connect()
def report(uri, status, sent, got, sock):
    ip, cport = sock.getsockname()[:2]
    print(json.dumps({"uri": uri, "status": status, "request_len": sent, "response_len": got,
                      "client_ip": ip, "client_port": cport, "server_port": port}), flush=True)
for line in sys.stdin:
    words = line.split()
    if not words or words[0] == "quit":
        break
    if words[0] == "get":
        conn.request("GET", words[1], headers={"User-Agent": "tls-live-py/1"})
        r = conn.getresponse(); body = r.read()
        report(words[1], r.status, 0, len(body), conn.sock)
    elif words[0] == "put":
        data = b"u" * int(words[2])
        conn.request("PUT", words[1], body=data, headers={"User-Agent": "tls-live-py/1"})
        r = conn.getresponse(); body = r.read()
        report(words[1], r.status, len(data), len(body), conn.sock)
    elif words[0] == "pipeline":
        raw = ctx.wrap_socket(socket.create_connection((host, port)))
        reqs = b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\nUser-Agent: tls-live-py/1\r\n\r\n" % u.encode()
                        for u in words[1:])
        raw.sendall(reqs)
        f = raw.makefile("rb")
        for uri in words[1:]:
            status = int(f.readline().split()[1])
            length = 0
            while True:
                header = f.readline().strip()
                if not header:
                    break
                name, _, value = header.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            report(uri, status, 0, len(f.read(length)), raw)
        raw.close()
    print("done", flush=True)
"#;

struct PythonClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl PythonClient {
    fn start(net: &TestNet, host: &str, port: u16) -> Self {
        let mut child = TestNet::command(&net.client_ns, "python3")
            .args(["-c", PYTHON_CLIENT, host, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn run(&mut self, command: &str) -> Vec<Seen> {
        writeln!(self.stdin, "{command}").unwrap();
        let mut seen = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "python ended"
            );
            if line.trim() == "done" {
                return seen;
            }
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            seen.push(Seen {
                uri: v["uri"].as_str().unwrap().to_owned(),
                status: v["status"].as_u64().unwrap(),
                request_len: v["request_len"].as_u64().unwrap(),
                response_len: v["response_len"].as_u64().unwrap(),
                client_ip: v["client_ip"].as_str().unwrap().to_owned(),
                client_port: v["client_port"].as_u64().unwrap(),
                server_port: v["server_port"].as_u64().unwrap(),
            });
        }
    }
}

impl Drop for PythonClient {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon, killed if the test fails before it is stopped.
struct Daemon(Option<Child>);

impl Daemon {
    fn stop(mut self) {
        let mut daemon = self.0.take().unwrap();
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
        assert!(daemon.wait().unwrap().success(), "the daemon exits cleanly");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.0.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }
}

/// The exported records by uri; each uri is used once per test.
fn records_by_uri(data_dir: &Path) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut by_uri: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for record in exported(BIN, data_dir) {
        let uri = record["uri"].as_str().unwrap_or("(none)").to_owned();
        by_uri.entry(uri).or_default().push(record);
    }
    by_uri
}

#[test]
fn tls_exchanges_are_decoded_once_with_their_connection() {
    let net = TestNet::new();
    let data = tempdir("data");
    let _nginx = TlsNginx::start(&net, "main", TLS_PORT, Some(APP_PORT));
    let v4 = net.server_v4.to_string();
    let v6 = format!("[{}]", net.server_v6);

    // A connection opened (and used) before the sensor starts.
    let mut early = PythonClient::start(&net, &v4, TLS_PORT);
    let before = early.run("get /user.json?early=before");
    assert_eq!(before[0].status, 200);

    let iface = net.server_if.clone();
    let daemon = Daemon(Some(start_daemon_in(
        &net.server_ns,
        BIN,
        &[
            "--iface",
            &iface,
            // The proxy's hop to its application stays on the loopback.
            "--iface",
            "lo",
            "--port",
            &APP_PORT.to_string(),
            "--tls-port",
            &TLS_PORT.to_string(),
            "--tls-port",
            &LATE_PORT.to_string(),
        ],
        &data,
    )));
    assert!(
        wait_until(Duration::from_secs(10), || {
            counter(BIN, &data, "tls", "processes") >= 2
        }),
        "the sensor finds nginx's master and worker"
    );

    let mut seen = Vec::new();
    seen.extend(early.run("get /user.json?early=after"));
    seen.extend(early.run("get /user.json?early=again"));
    let keep_alive: Vec<String> = (1..=5)
        .map(|i| format!("https://{v4}:{TLS_PORT}/user.json?curl={i}"))
        .collect();
    seen.extend(curl(&net, &keep_alive));
    seen.extend(curl(
        &net,
        &[format!("https://{v4}:{TLS_PORT}/mib.bin?curl=download")],
    ));
    seen.extend(curl(
        &net,
        &[format!("https://{v6}:{TLS_PORT}/user.json?curl=v6")],
    ));
    // HTTP/2 over TLS (ALPN h2): nginx writes its SETTINGS before it reads the preface. Four
    // concurrent streams on one connection (a 1 MiB download among them), then a HEAD and a
    // 204 on connections of their own.
    let mut h2: Vec<String> = (1..=3)
        .map(|i| format!("https://{v4}:{TLS_PORT}/user.json?h2={i}"))
        .collect();
    h2.push(format!("https://{v4}:{TLS_PORT}/mib.bin?h2=big"));
    let concurrent = curl_with(&net, &["--http2", "--parallel"], &h2);
    assert!(
        concurrent
            .iter()
            .all(|c| c.client_port == concurrent[0].client_port),
        "one connection: {concurrent:#?}"
    );
    seen.extend(concurrent);
    seen.extend(curl_with(
        &net,
        &["--http2", "-I"],
        &[format!("https://{v4}:{TLS_PORT}/user.json?h2=head")],
    ));
    seen.extend(curl_with(
        &net,
        &["--http2"],
        &[format!("https://{v4}:{TLS_PORT}/empty?h2=204")],
    ));
    let mut python = PythonClient::start(&net, &v4, TLS_PORT);
    seen.extend(python.run("get /user.json?py=1"));
    seen.extend(python.run(&format!("put /uploads/py.bin?py=upload {MIB}")));
    seen.extend(python.run("get /mib.bin?py=download"));
    seen.extend(python.run("get /user.json?py=2"));
    seen.extend(python.run("pipeline /user.json?pipe=1 /user.json?pipe=2"));
    // nginx as a TLS reverse proxy: the client's hop read in its TLS library, the hop to the
    // application on the loopback through TC; one exchange per request, joined.
    let proxied: Vec<String> = (1..=2)
        .map(|i| format!("https://{v4}:{TLS_PORT}/app/item?proxy={i}"))
        .collect();
    seen.extend(curl(&net, &proxied));
    seen.extend(curl_with(
        &net,
        &["--http2"],
        &[format!("https://{v4}:{TLS_PORT}/app/item?h2=proxy")],
    ));

    // A TLS server started after the sensor: read at once, listed by the next scan.
    let _late = TlsNginx::start(&net, "late", LATE_PORT, None);
    assert!(
        wait_until(Duration::from_secs(10), || {
            counter(BIN, &data, "tls", "processes") >= 4
        }),
        "the sensor finds the later nginx"
    );
    seen.extend(curl(
        &net,
        &[format!("https://{v4}:{LATE_PORT}/user.json?late=1")],
    ));
    // The early connection's last request after all the others: its flow is still followed.
    seen.extend(early.run("get /user.json?early=last"));
    drop(early);
    drop(python);
    std::thread::sleep(Duration::from_secs(2));
    daemon.stop();

    let by_uri = records_by_uri(&data);
    assert_eq!(seen.len(), 26, "{seen:#?}");
    for client in &seen {
        let r = decoded_once_as_seen(&by_uri, client);
        let h2 = client.uri.contains("h2=");
        let version = if h2 { "HTTP/2" } else { "1.1" };
        assert_eq!(r["version"], version, "{r}");
        assert_eq!(r["stream_id"].is_u64(), h2, "{r}");
        // A proxied request is one exchange: the client's, joined with the proxy's hop to the
        // application (whose time it keeps as `upstream_ms`).
        let proxied = client.uri.starts_with("/app/");
        assert_eq!(r["joined"], proxied, "{r}");
        assert_eq!(r["upstream_ms"].is_f64(), proxied, "{r}");
    }
    // The four concurrent HTTP/2 requests took streams 1, 3, 5 and 7 of one connection.
    let mut streams: Vec<u64> = ["/user.json?h2=1", "/user.json?h2=2", "/user.json?h2=3"]
        .into_iter()
        .chain(["/mib.bin?h2=big"])
        .map(|uri| by_uri[uri][0]["stream_id"].as_u64().unwrap())
        .collect();
    streams.sort_unstable();
    assert_eq!(streams, [1, 3, 5, 7]);
    assert_eq!(by_uri["/user.json?h2=head"][0]["method"], "HEAD");
    assert_eq!(by_uri["/empty?h2=204"][0]["status_code"], 204);
    // Nothing else but the later server's readiness probe (`TlsNginx::start`), read from its
    // first request: the kernel picks a connection by its port before any scan lists the
    // server. Not the exchange before the sensor, and no ciphertext decoded as HTTP.
    let total: usize = by_uri.values().map(Vec::len).sum();
    assert_eq!(total, seen.len() + 1, "{by_uri:#?}");
    assert_eq!(by_uri["/user.json"].len(), 1);
    assert_eq!(by_uri["/user.json"][0]["server_port"], LATE_PORT);
    assert!(!by_uri.contains_key("/user.json?early=before"));
    // `show` marks them like plaintext flags.
    let session = by_uri["/user.json?curl=1"][0]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = common::cli(BIN, &["show", &session], &data);
    assert!(
        page.contains("/user.json") && page.contains("[tls]"),
        "{page}"
    );
    for (stage, name) in [
        ("tls", "ring_full"),
        ("tls", "bytes_truncated"),
        ("tls", "read_errors"),
        ("tls", "unresolved_events"),
        ("tls", "no_socket_events"),
        ("tls", "gap_bytes"),
        ("tls", "pending_full"),
    ] {
        assert_eq!(counter(BIN, &data, stage, name), 0, "{stage}.{name}");
    }
    // The connection opened before the sensor starts mid-stream in both directions (a call in
    // flight when the probes came would not have been seen); nothing else has a gap.
    assert_eq!(counter(BIN, &data, "tls", "connections_preexisting"), 1);
    assert_eq!(counter(BIN, &data, "reassembly", "started_mid_stream"), 2);
    assert_eq!(counter(BIN, &data, "reassembly", "gaps"), 2);
    assert!(counter(BIN, &data, "tls", "libraries") >= 1);
    assert!(counter(BIN, &data, "kernel", "tls_bytes") > 2 * MIB as u64);
    assert!(counter(BIN, &data, "tls", "connections_kernel_addresses") >= 7);
}

#[test]
fn a_daemon_without_root_reads_tls_servers_started_after_it() {
    let net = TestNet::new();
    let data = tempdir("unprivileged");
    let daemon = Daemon(Some(start_daemon_in(
        &net.server_ns,
        BIN,
        &[
            "--iface",
            &net.server_if,
            "--tls-port",
            &UNPRIVILEGED_PORT.to_string(),
            "--user",
            "nobody",
        ],
        &data,
    )));
    assert!(
        counter(BIN, &data, "tls", "libraries") >= 1,
        "system OpenSSL probed"
    );
    assert_eq!(counter(BIN, &data, "tls", "kernel_port_filter"), 1);
    // nginx (master and worker as root) after the daemon dropped root: it can list neither.
    let _nginx = TlsNginx::start(&net, "unprivileged", UNPRIVILEGED_PORT, None);
    let v4 = net.server_v4.to_string();
    let mut seen = Vec::new();
    let keep_alive: Vec<String> = (1..=3)
        .map(|i| format!("https://{v4}:{UNPRIVILEGED_PORT}/user.json?nobody={i}"))
        .collect();
    seen.extend(curl(&net, &keep_alive));
    seen.extend(curl_with(
        &net,
        &["--http2"],
        &[format!(
            "https://{v4}:{UNPRIVILEGED_PORT}/mib.bin?nobody=h2"
        )],
    ));
    let mut python = PythonClient::start(&net, &v4, UNPRIVILEGED_PORT);
    seen.extend(python.run("get /user.json?nobody=py"));
    drop(python);
    std::thread::sleep(Duration::from_secs(2));
    let listed = counter(BIN, &data, "tls", "processes");
    daemon.stop();

    assert_eq!(listed, 0, "the daemon without root lists no server");
    let by_uri = records_by_uri(&data);
    for client in &seen {
        decoded_once_as_seen(&by_uri, client);
    }
    // Beside them only the readiness probe of `TlsNginx::start`; the clients' own side of the
    // same connections (curl and Python call the same probed library) is skipped.
    let total: usize = by_uri.values().map(Vec::len).sum();
    assert_eq!(total, seen.len() + 1, "{by_uri:#?}");
    assert_eq!(by_uri["/user.json"].len(), 1);
    assert!(counter(BIN, &data, "tls", "connections_skipped") >= 3);
    for name in [
        "ring_full",
        "unresolved_events",
        "gap_bytes",
        "pending_full",
    ] {
        assert_eq!(counter(BIN, &data, "tls", name), 0, "tls.{name}");
    }
}

/// The one record of what `client` saw, checked against it: TLS, status, body lengths, the
/// client's address and port, the server's port, no gap.
fn decoded_once_as_seen<'a>(
    by_uri: &'a BTreeMap<String, Vec<serde_json::Value>>,
    client: &Seen,
) -> &'a serde_json::Value {
    let records = by_uri.get(&client.uri).map(Vec::as_slice).unwrap_or(&[]);
    assert_eq!(records.len(), 1, "{}: {records:#?}", client.uri);
    let r = &records[0];
    let client_ip = client.client_ip.trim_start_matches("::ffff:");
    assert_eq!(r["tls"], true, "{r}");
    assert_eq!(r["status_code"], client.status, "{r}");
    assert_eq!(r["response_body_len"], client.response_len, "{r}");
    assert_eq!(r["request_body_len"], client.request_len, "{r}");
    assert_eq!(r["client_ip"], client_ip, "{r}");
    assert_eq!(r["client_port"], client.client_port, "{r}");
    assert_eq!(r["server_port"], client.server_port, "{r}");
    // (`*_truncated` says the body was longer than the body cap the record keeps.)
    assert_eq!(r["gap"], false, "{r}");
    r
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("apis-tls-live-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}
