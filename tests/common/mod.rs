//! Test hosts for end-to-end tests: network namespaces joined by a veth pair, and a real nginx.
//!
//! Everything a test creates it removes again on drop, also when the test fails. Addresses are
//! private to the namespaces the test made; no traffic leaves the machine.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

pub mod clickhouse;
pub mod clickhouse_config;

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// Runs a command and panics with its output if it fails.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two hosts: `server` and `client` namespaces joined by a veth pair.
pub struct TestNet {
    pub id: u32,
    pub server_ns: String,
    pub client_ns: String,
    /// The server's end of the veth pair (inside `server_ns`).
    pub server_if: String,
    pub server_v4: Ipv4Addr,
    pub client_v4: Ipv4Addr,
    pub server_v6: Ipv6Addr,
    pub client_v6: Ipv6Addr,
}

impl TestNet {
    pub fn new() -> Self {
        // Interface names and addresses live inside the namespaces, so they only need to differ
        // between the tests of this process; namespace names are global and carry the pid.
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) % 250;
        let tag = format!("{}-{id}", std::process::id());
        let net = Self {
            id,
            server_ns: format!("apis-s-{tag}"),
            client_ns: format!("apis-c-{tag}"),
            server_if: format!("vs{id}"),
            server_v4: Ipv4Addr::new(10, 213, id as u8, 1),
            client_v4: Ipv4Addr::new(10, 213, id as u8, 2),
            server_v6: Ipv6Addr::new(0xfd00, 0x213, id as u16, 0, 0, 0, 0, 1),
            client_v6: Ipv6Addr::new(0xfd00, 0x213, id as u16, 0, 0, 0, 0, 2),
        };
        let client_if = format!("vc{id}");
        sh("ip", &["netns", "add", &net.server_ns]);
        sh("ip", &["netns", "add", &net.client_ns]);
        sh(
            "ip",
            &[
                "-n",
                &net.server_ns,
                "link",
                "add",
                &net.server_if,
                "type",
                "veth",
                "peer",
                "name",
                &client_if,
                "netns",
                &net.client_ns,
            ],
        );
        for (ns, ifname, v4, v6) in [
            (&net.server_ns, &net.server_if, net.server_v4, net.server_v6),
            (&net.client_ns, &client_if, net.client_v4, net.client_v6),
        ] {
            sh(
                "ip",
                &["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", ifname],
            );
            sh(
                "ip",
                &[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    ifname,
                    "nodad",
                ],
            );
            sh("ip", &["-n", ns, "link", "set", ifname, "up"]);
            sh("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        net
    }

    /// Moves the calling thread into `ns` (network namespace only).
    pub fn enter(ns: &str) {
        let file = fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
        // SAFETY: valid namespace descriptor; only this thread's network namespace changes.
        let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(ret, 0, "setns({ns}): {}", std::io::Error::last_os_error());
    }

    /// A command run inside `ns`.
    pub fn command(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }

    pub fn server_addr(&self, v6: bool, port: u16) -> SocketAddr {
        let ip = if v6 {
            IpAddr::V6(self.server_v6)
        } else {
            IpAddr::V4(self.server_v4)
        };
        SocketAddr::new(ip, port)
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A real nginx serving static files, running in a namespace.
pub struct Nginx {
    child: Child,
    pub root: PathBuf,
    pub dir: PathBuf,
}

pub const SMALL_BODY: &str = "hello from nginx\n";
/// Size of /big.bin: several 64 KiB GSO segments and more than one ring-buffer chunk each.
pub const BIG_LEN: usize = 300_000;
/// Size of /mib.bin.
pub const MIB_LEN: usize = 1 << 20;

impl Nginx {
    pub fn start(net: &TestNet, port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("apis-nginx-{}", net.server_ns));
        let _ = fs::remove_dir_all(&dir);
        let root = dir.join("root");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("small.txt"), SMALL_BODY).unwrap();
        fs::write(root.join("big.bin"), big_body()).unwrap();
        fs::write(root.join("mib.bin"), vec![b'm'; MIB_LEN]).unwrap();
        fs::write(
            root.join("text.txt"),
            "a line of text that compresses well\n".repeat(2000),
        )
        .unwrap();
        fs::create_dir_all(root.join("uploads")).unwrap();
        // Static files, a 204, conditional requests that give 304 for any later date, gzip
        // (chunked on the wire: the compressed length is unknown up front) and WebDAV PUT.
        let conf = format!(
            "daemon off;\nmaster_process off;\nuser root;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n access_log {dir}/access.log;\n client_body_temp_path {dir}/body;\n\
             proxy_temp_path {dir}/proxy;\n fastcgi_temp_path {dir}/fastcgi;\n uwsgi_temp_path {dir}/uwsgi;\n\
             scgi_temp_path {dir}/scgi;\n keepalive_requests 1000;\n if_modified_since before;\n\
             server {{ listen {v4}:{port}; listen [{v6}]:{port}; root {root};\n\
               location = /empty {{ return 204; }}\n\
               location = /text.txt {{ gzip on; gzip_types text/plain; gzip_min_length 0; }}\n\
               location /uploads/ {{ dav_methods PUT; client_max_body_size 8m; create_full_put_path on; }}\n\
             }}\n}}\n",
            dir = dir.display(),
            v4 = net.server_v4,
            v6 = net.server_v6,
            root = root.display(),
        );
        let child = spawn_nginx(&net.server_ns, &dir, &conf);
        let nginx = Self { child, root, dir };
        let addr = net.server_addr(false, port);
        let client_ns = net.client_ns.clone();
        // Probe from the client namespace in a thread of its own: setns is per thread.
        let ready = thread::spawn(move || {
            TestNet::enter(&client_ns);
            wait_until(Duration::from_secs(10), || TcpStream::connect(addr).is_ok())
        })
        .join()
        .unwrap();
        assert!(ready, "nginx did not start listening on {addr}");
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Writes `conf` as `dir/nginx.conf` and starts nginx on it (prefix `dir`) in namespace `ns`.
pub fn spawn_nginx(ns: &str, dir: &Path, conf: &str) -> Child {
    let conf_path = dir.join("nginx.conf");
    fs::write(&conf_path, conf).unwrap();
    TestNet::command(ns, nginx_binary())
        .arg("-c")
        .arg(&conf_path)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("starting nginx (install it: `cargo xtask setup` does, as root)")
}

fn nginx_binary() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

pub fn big_body() -> Vec<u8> {
    (0..BIG_LEN).map(|i| (i * 7 % 256) as u8).collect()
}

pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` in a thread that has entered the network namespace `ns` (setns is per thread).
pub fn in_namespace<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|scope| {
        scope
            .spawn(|| {
                TestNet::enter(ns);
                f()
            })
            .join()
            .unwrap()
    })
}

/// What a [`LiveSensor`] captured, and its counters at the end.
pub struct Captured {
    pub segments: Vec<apisessions::capture::Segment>,
    pub kernel: apisessions::capture::KernelCounters,
    pub reader: Vec<(&'static str, u64)>,
}

impl Captured {
    pub fn reader(&self, name: &str) -> u64 {
        self.reader
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    }
}

/// The capture library running in the server's namespace on its veth, in a thread of its own.
pub struct LiveSensor {
    stop: std::sync::mpsc::Sender<()>,
    handle: thread::JoinHandle<Captured>,
}

impl LiveSensor {
    pub fn start(net: &TestNet, mode: apisessions::capture::AttachMode, ports: Vec<u16>) -> Self {
        use apisessions::capture::{CaptureOptions, Interface, Sensor};
        let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let server_ns = net.server_ns.clone();
        let server_if = net.server_if.clone();
        let handle = thread::spawn(move || {
            TestNet::enter(&server_ns);
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let options = CaptureOptions {
                    ports,
                    ..CaptureOptions::default()
                };
                let interface = Interface::by_name(&server_if).unwrap();
                let (sensor, mut rx) =
                    Sensor::start(&options, vec![interface], mode, None).unwrap();
                ready_tx.send(()).unwrap();
                let mut segments = Vec::new();
                let mut stopping = false;
                // Collect until told to stop and the reader has caught up with the kernel.
                loop {
                    while let Ok(segment) = rx.try_recv() {
                        segments.push(segment);
                    }
                    stopping |= stop_rx.try_recv().is_ok();
                    let kernel = sensor.kernel_counters().unwrap();
                    let read = sensor.counters.events_read.load(Ordering::Relaxed);
                    if stopping && read == kernel["events_submitted"] && rx.is_empty() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let kernel = sensor.kernel_counters().unwrap();
                let reader = sensor.counters.snapshot();
                sensor.shutdown().await.unwrap();
                while let Some(segment) = rx.recv().await {
                    segments.push(segment);
                }
                Captured {
                    segments,
                    kernel,
                    reader,
                }
            })
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("sensor started");
        Self { stop, handle }
    }

    /// Stops after a short pause for the last FIN/ACKs still crossing the veth.
    pub fn stop(self) -> Captured {
        thread::sleep(Duration::from_millis(200));
        self.stop.send(()).unwrap();
        self.handle.join().unwrap()
    }
}

/// Writes a pcap (raw IPv4 link type) of `exchanges` complete HTTP/1.1 connections, each from
/// its own client address: handshake, one GET, a 200 response, FIN both ways. The timestamps
/// advance 100 µs per exchange from `start_s`.
pub fn write_generated_pcap(path: &Path, exchanges: u32, start_s: u32) {
    fn checksum_free_ipv4(src: [u8; 4], dst: [u8; 4], tcp: &[u8]) -> Vec<u8> {
        let total = 20 + tcp.len();
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            6,
            0,
            0,
        ];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        ip.extend_from_slice(tcp);
        ip
    }
    fn tcp(sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut t = Vec::with_capacity(20 + payload.len());
        t.extend_from_slice(&sport.to_be_bytes());
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&0u32.to_be_bytes());
        t.extend_from_slice(&[5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend_from_slice(payload);
        t
    }
    let mut out = Vec::new();
    // Classic pcap, microseconds, snaplen 65535, LINKTYPE_RAW (101).
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&101u32.to_le_bytes());
    let server = [10, 1, 0, 1];
    let (syn, ack, psh, fin) = (0x02u8, 0x10u8, 0x08u8, 0x01u8);
    for i in 0..exchanges {
        let client = [10, 2 + (i >> 16) as u8 % 250, (i >> 8) as u8, i as u8];
        let port = 40000 + (i % 20000) as u16;
        let request = format!(
            "GET /items/{i}?page={} HTTP/1.1\r\nHost: gen\r\nUser-Agent: gen-{}\r\n\r\n",
            i % 7,
            i % 50
        );
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (c_isn, s_isn) = (1000u32, 5000u32);
        let req_len = request.len() as u32;
        let packets = [
            (client, server, tcp(port, 80, c_isn, syn, b"")),
            (server, client, tcp(80, port, s_isn, syn | ack, b"")),
            (
                client,
                server,
                tcp(port, 80, c_isn + 1, psh | ack, request.as_bytes()),
            ),
            (
                server,
                client,
                tcp(80, port, s_isn + 1, psh | ack, response),
            ),
            (
                client,
                server,
                tcp(port, 80, c_isn + 1 + req_len, fin | ack, b""),
            ),
            (
                server,
                client,
                tcp(80, port, s_isn + 1 + response.len() as u32, fin | ack, b""),
            ),
        ];
        let micros = u64::from(i) * 100;
        for (n, (src, dst, segment)) in packets.into_iter().enumerate() {
            let packet = checksum_free_ipv4(src, dst, &segment);
            let ts_us = micros + n as u64 * 10;
            out.extend_from_slice(&(start_s + (ts_us / 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&(packet.len() as u32).to_le_bytes());
            out.extend_from_slice(&(packet.len() as u32).to_le_bytes());
            out.extend_from_slice(&packet);
        }
    }
    fs::write(path, out).unwrap();
}

/// One request on its own connection (`head` without its blank line; a Content-Length is added
/// for a body), read to the end; the response must be HTTP/1.1.
pub fn request(server: SocketAddr, head: &str, body: &str) {
    let mut stream = TcpStream::connect(server).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut bytes = head.as_bytes().to_vec();
    if !body.is_empty() {
        bytes.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    bytes.extend_from_slice(b"Connection: close\r\n\r\n");
    bytes.extend_from_slice(body.as_bytes());
    stream.write_all(&bytes).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    assert!(response.starts_with(b"HTTP/1.1 "));
}

/// tcpdump writing a pcap on the server's veth while the test runs.
pub struct Tcpdump {
    child: Child,
    file: PathBuf,
    log: PathBuf,
}

impl Tcpdump {
    /// tcpdump on the server's veth, for one TCP port.
    pub fn start(net: &TestNet, port: u16) -> Self {
        Self::start_on(net, &net.server_if, &["tcp", "port", &port.to_string()])
    }

    /// tcpdump on `iface` of the server's namespace (`any` for all), with a filter.
    pub fn start_on(net: &TestNet, iface: &str, filter: &[&str]) -> Self {
        let file = std::env::temp_dir().join(format!("apis-{}-{iface}.pcap", net.server_ns));
        let log = file.with_extension("log");
        let _ = fs::remove_file(&file);
        // A 64 MiB kernel buffer: the 1 MiB bodies cross the veth in bursts faster than a
        // descheduled tcpdump drains its default 2 MiB, and a dropped tail of a response looks
        // like a message cut short. Immediate mode: on "any", libpcap's buffered mode loses
        // what its last block held at SIGINT.
        let child = TestNet::command(&net.server_ns, "tcpdump")
            .args([
                "-i",
                iface,
                "--immediate-mode",
                "-U",
                "-B",
                "65536",
                "-s",
                "0",
                "-w",
            ])
            .arg(&file)
            .args(filter)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("tcpdump (install it: `cargo xtask setup` does, as root)");
        assert!(
            wait_until(Duration::from_secs(10), || file.exists()),
            "tcpdump did not start"
        );
        // The file appears before the capture is armed on the interface; give it a moment.
        thread::sleep(Duration::from_millis(500));
        Self { child, file, log }
    }

    /// Stops tcpdump; the file, once tcpdump says it dropped nothing (a drop would show as a
    /// difference between the file and the live path that is no fault of either).
    pub fn stop(mut self) -> PathBuf {
        // tcpdump writes what it has read; what still waits in its kernel buffer when it is
        // interrupted is neither written nor counted as dropped. On a loaded machine it lags, so
        // let it catch up first: until the file stops growing for half a second.
        let size = || fs::metadata(&self.file).map_or(0, |m| m.len());
        let mut last = size();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            thread::sleep(Duration::from_millis(500));
            let now = size();
            if now == last {
                break;
            }
            last = now;
        }
        sh("kill", &["-INT", &self.child.id().to_string()]);
        self.child.wait().unwrap();
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let dropped = log
            .lines()
            .find_map(|l| l.strip_suffix(" packets dropped by kernel"))
            .and_then(|n| n.trim().parse::<u64>().ok());
        assert_eq!(dropped, Some(0), "tcpdump's report: {log}");
        self.file.clone()
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed on drop: a test that fails half-way leaves no server or daemon
/// behind (a daemon's inherited stdout would also keep the test runner's output open).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `apisessions run` (the test binary `bin`) capturing `ports` (none: its default, the
/// host's listeners) on the server's veth into `data_dir`; returns once its statistics say it
/// runs.
pub fn start_daemon(net: &TestNet, bin: &str, ports: &[u16], data_dir: &Path) -> Child {
    let mut args = vec!["--iface".to_owned(), net.server_if.clone()];
    for port in ports {
        args.extend(["--port".to_owned(), port.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start_daemon_in(&net.server_ns, bin, &args, data_dir)
}

/// `apisessions run ARGS` in the namespace `ns` into `data_dir`; returns once its statistics
/// say it runs (its own pid, running).
pub fn start_daemon_in(ns: &str, bin: &str, args: &[&str], data_dir: &Path) -> Child {
    let daemon = TestNet::command(ns, bin)
        .arg("run")
        .args(args)
        .args(["--summary-interval", "0", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = u64::from(daemon.id());
    let stats = data_dir.join("stats.json");
    let running = || {
        let stats: serde_json::Value =
            serde_json::from_slice(&fs::read(&stats).unwrap_or_default()).unwrap_or_default();
        stats["pid"] == pid && stats["running"] == true
    };
    assert!(wait_until(Duration::from_secs(20), running), "daemon up");
    daemon
}

/// Every file below `dir` that holds `needle`, byte for byte.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if fs::read(&path)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            found.push(path.display().to_string());
        }
    }
    found
}

/// Runs the CLI (the test binary `bin`) on `data_dir`; its stdout, which must be a success.
pub fn cli(bin: &str, args: &[&str], data_dir: &Path) -> String {
    let out = Command::new(bin)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The stored exchanges, from `export --format ndjson`.
pub fn exported(bin: &str, data_dir: &Path) -> Vec<serde_json::Value> {
    cli(bin, &["export", "--format", "ndjson"], data_dir)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A counter from `stats --json`.
pub fn counter(bin: &str, data_dir: &Path, stage: &str, name: &str) -> u64 {
    let stats: serde_json::Value =
        serde_json::from_str(&cli(bin, &["stats", "--json"], data_dir)).unwrap();
    stats["stages"][stage][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {stage}.{name}: {stats}"))
}

/// The demo API (xtask/demo/demo_api.py, a real Python server) in the server namespace on
/// `port`, listening when `start` returns; stopped on drop.
pub struct DemoApi {
    child: Child,
    pub addr: SocketAddr,
}

impl DemoApi {
    pub fn start(net: &TestNet, port: u16) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../xtask/demo/demo_api.py");
        let child = TestNet::command(&net.server_ns, "python3")
            .arg(script)
            .args([
                "--bind",
                &net.server_v4.to_string(),
                "--port",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = SocketAddr::new(IpAddr::V4(net.server_v4), port);
        let api = Self { child, addr };
        let up = wait_until(Duration::from_secs(20), || {
            in_namespace(&net.client_ns, || TcpStream::connect(addr).is_ok())
        });
        assert!(up, "the demo API listens on {addr}");
        api
    }
}

impl Drop for DemoApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET on a console (`apisessions ui`) on loopback inside `ns`: (status, head, body).
pub fn http_get(ns: &str, port: u16, path: &str, token: Option<&str>) -> (u16, String, String) {
    in_namespace(ns, || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let text = String::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head[9..12].parse().unwrap();
        (status, head.to_owned(), body.to_owned())
    })
}
