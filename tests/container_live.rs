//! A container host, end to end through the real daemon: a bridge with two "containers"
//! (network namespaces behind veths), one of them published on the host's port 8080 by a DNAT
//! rule (as Docker's `-p 8080:80` or a Kubernetes Service), and a client in a third namespace.
//! The daemon runs in the host namespace on all interfaces, as it does by default.
//!
//! Needs root, iptables (nf_tables backend) and python3; run with the other live tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    fs,
    net::Ipv4Addr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

use common::{TestNet, counter, exported, sh, start_daemon_in, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_apisessions");

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// host: bridge `br0` (172.31.N.1, fd31:N::1) with containers `c1` (.2, published on 8080) and
/// `c2` (.3); `vx0` (10.214.N.1, fd32:N::1) to the client (.2, ::2).
struct ContainerHost {
    id: u32,
    host: String,
    c1: String,
    c2: String,
    client: String,
    /// Namespaces a test added later, removed on drop too.
    extra: Vec<String>,
    servers: Vec<Child>,
    daemon: Option<Child>,
}

impl ContainerHost {
    fn new() -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) % 250;
        let tag = format!("{}-{id}", std::process::id());
        let host = Self {
            id,
            host: format!("apis-h-{tag}"),
            c1: format!("apis-c1-{tag}"),
            c2: format!("apis-c2-{tag}"),
            client: format!("apis-x-{tag}"),
            extra: Vec::new(),
            servers: Vec::new(),
            daemon: None,
        };
        for ns in [&host.host, &host.c1, &host.c2, &host.client] {
            sh("ip", &["netns", "add", ns]);
            sh("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        let h = host.host.as_str();
        sh("ip", &["-n", h, "link", "add", "br0", "type", "bridge"]);
        host.addr(h, "br0", &host.v4(31, 1), &host.v6(31, 1));
        sh("ip", &["-n", h, "link", "set", "br0", "up"]);
        for (ns, port, last) in [(&host.c1, "vc1", 2), (&host.c2, "vc2", 3)] {
            host.veth(ns, port);
            sh("ip", &["-n", h, "link", "set", port, "master", "br0"]);
            host.addr(ns, "eth0", &host.v4(31, last), &host.v6(31, last));
            host.default_routes(ns, &host.v4(31, 1), &host.v6(31, 1));
        }
        host.veth(&host.client, "vx0");
        host.addr(h, "vx0", &host.v4(214, 1), &host.v6(32, 1));
        host.addr(&host.client, "eth0", &host.v4(214, 2), &host.v6(32, 2));
        host.default_routes(&host.client, &host.v4(214, 1), &host.v6(32, 1));
        for sysctl in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            sh("ip", &["netns", "exec", h, "sysctl", "-qw", sysctl]);
        }
        host
    }

    /// The inode of a namespace's network namespace, as the sensor reports it.
    fn netns(&self, ns: &str) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        fs::metadata(format!("/var/run/netns/{ns}")).unwrap().ino()
    }

    fn v4(&self, net: u8, last: u8) -> String {
        let net = if net == 31 { (172, 31) } else { (10, net) };
        Ipv4Addr::new(net.0, net.1, self.id as u8, last).to_string()
    }

    fn v6(&self, net: u8, last: u8) -> String {
        format!("fd{net}:{}::{last}", self.id)
    }

    /// A veth from the host namespace (`host_end`) to `ns` (where it is `eth0`), both up.
    fn veth(&self, ns: &str, host_end: &str) {
        sh(
            "ip",
            &[
                "-n", &self.host, "link", "add", host_end, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ],
        );
        sh("ip", &["-n", &self.host, "link", "set", host_end, "up"]);
        sh("ip", &["-n", ns, "link", "set", "eth0", "up"]);
    }

    fn addr(&self, ns: &str, dev: &str, v4: &str, v6: &str) {
        sh(
            "ip",
            &["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev],
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
                dev,
                "nodad",
            ],
        );
    }

    fn default_routes(&self, ns: &str, v4: &str, v6: &str) {
        sh("ip", &["-n", ns, "route", "add", "default", "via", v4]);
        sh(
            "ip",
            &["-n", ns, "-6", "route", "add", "default", "via", v6],
        );
    }

    /// Publishes c1's port 80 on the host's port 8080 (IPv4, and IPv6 if `v6`).
    fn publish(&self, v6: bool) {
        let mut rules = vec![("iptables", format!("{}:80", self.v4(31, 2)))];
        if v6 {
            rules.push(("ip6tables", format!("[{}]:80", self.v6(31, 2))));
        }
        for (tool, to) in &rules {
            sh(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.host,
                    tool,
                    "-t",
                    "nat",
                    "-A",
                    "PREROUTING",
                    "-p",
                    "tcp",
                    "--dport",
                    "8080",
                    "-j",
                    "DNAT",
                    "--to-destination",
                    to,
                ],
            );
        }
    }

    /// A real HTTP server (python's http.server, both address families) on port 80 in `ns`,
    /// serving /items/1..5; returns once it answers.
    fn serve(&mut self, ns: &str, root: &Path) {
        fs::create_dir_all(root.join("items")).unwrap();
        for i in 1..=5 {
            fs::write(root.join(format!("items/{i}")), format!("{{\"id\":{i}}}")).unwrap();
        }
        let child = TestNet::command(ns, "python3")
            .args(["-m", "http.server", "80", "--bind", "::"])
            .current_dir(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.servers.push(child);
        let up = || {
            TestNet::command(ns, "curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-m",
                    "1",
                    "http://127.0.0.1:80/items/1",
                ])
                .status()
                .is_ok_and(|s| s.success())
        };
        assert!(
            wait_until(Duration::from_secs(10), up),
            "http.server up in {ns}"
        );
    }

    /// The daemon in the host namespace on all interfaces (no --iface), ports 8080 and 80.
    fn start_daemon(&mut self, data_dir: &Path) {
        let args = ["--port", "8080", "--port", "80"];
        self.daemon = Some(start_daemon_in(&self.host, BIN, &args, data_dir));
    }

    /// Stops the daemon (SIGTERM) and waits until it has written everything.
    fn stop_daemon(&mut self) {
        let mut daemon = self.daemon.take().unwrap();
        sh("kill", &["-TERM", &daemon.id().to_string()]);
        let status = daemon.wait().unwrap();
        assert!(status.success(), "daemon exit: {status}");
    }

    /// `curl` from `ns`: the status codes of GETs of /items/1..=n at `base`.
    fn get_items(&self, ns: &str, base: &str, n: u32) -> Vec<String> {
        (1..=n)
            .map(|i| {
                let out = TestNet::command(ns, "curl")
                    .args(["-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}"])
                    .args(["-A", "container-client/1", &format!("{base}/items/{i}")])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
            .collect()
    }
}

impl Drop for ContainerHost {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        for ns in [&self.host, &self.c1, &self.c2, &self.client]
            .into_iter()
            .chain(&self.extra)
        {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("apis-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn field<'a>(e: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    e.get(name).unwrap_or_else(|| panic!("no {name} in {e}"))
}

/// Each request to the published port is one exchange: the client's address, the address and
/// port the client called, and the container behind them as upstream.
fn published_port_is_one_exchange_per_request(v6: bool) {
    let dir = temp_dir(if v6 { "nat6" } else { "nat4" });
    let mut host = ContainerHost::new();
    host.publish(v6);
    let c1 = host.c1.clone();
    host.serve(&c1, &dir.join("www"));
    host.start_daemon(&dir.join("data"));
    let (client_ip, server_ip, container_ip, base) = if v6 {
        let server = host.v6(32, 1);
        (
            host.v6(32, 2),
            server.clone(),
            host.v6(31, 2),
            format!("http://[{server}]:8080"),
        )
    } else {
        let server = host.v4(214, 1);
        (
            host.v4(214, 2),
            server.clone(),
            host.v4(31, 2),
            format!("http://{server}:8080"),
        )
    };
    let codes = host.get_items(&host.client, &base, 5);
    assert_eq!(codes, vec!["200"; 5], "the client reaches the container");
    thread::sleep(Duration::from_secs(2));
    host.stop_daemon();
    let data = dir.join("data");
    let exchanges = exported(BIN, &data);
    assert_eq!(
        exchanges.len(),
        5,
        "one exchange per request: {exchanges:#?}"
    );
    for (i, e) in exchanges.iter().enumerate() {
        assert_eq!(field(e, "uri"), &format!("/items/{}", i + 1));
        assert_eq!(field(e, "status_code"), 200);
        assert_eq!(field(e, "client_ip"), client_ip.as_str());
        assert_eq!(field(e, "server_ip"), server_ip.as_str());
        assert_eq!(field(e, "server_port"), 8080);
        assert_eq!(field(e, "upstream_ip"), container_ip.as_str());
        assert_eq!(field(e, "upstream_port"), 80);
        // The container's namespace served it (its server process runs there).
        assert_eq!(
            field(e, "server_netns"),
            &serde_json::json!(host.netns(&host.c1))
        );
    }
    assert!(counter(BIN, &data, "nat", "translated") >= 5);
    // The bridge's copies of the container's packets were skipped in the kernel.
    assert!(counter(BIN, &data, "kernel", "copies_skipped") > 0);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn published_port_through_dnat_is_one_exchange_per_request() {
    published_port_is_one_exchange_per_request(false);
}

#[test]
fn published_port_through_ipv6_dnat_is_one_exchange_per_request() {
    published_port_is_one_exchange_per_request(true);
}

/// A published port added by a reload (SIGHUP) is this host's server from then on, as if it had
/// been configured at the start: each request through the DNAT rule is one exchange of the
/// client calling the host's address and port, in one session, and the NAT stage knows the
/// port is served here (no conntrack lookups). Dropped by the next reload, it is no longer
/// captured.
#[test]
fn a_published_port_added_by_reload_is_captured_as_served_here() {
    let dir = temp_dir("natreload");
    let mut host = ContainerHost::new();
    host.publish(false);
    let c1 = host.c1.clone();
    host.serve(&c1, &dir.join("www"));
    let data = dir.join("data");
    let conf = dir.join("config.toml");
    let write_config =
        |ports: &str| fs::write(&conf, format!("[capture]\nports = {ports}\n")).unwrap();
    write_config("[9999]");
    let conf_arg = conf.display().to_string();
    host.daemon = Some(start_daemon_in(
        &host.host,
        BIN,
        &["--config", &conf_arg],
        &data,
    ));
    let pid = host.daemon.as_ref().unwrap().id().to_string();
    let ports = || {
        let stats: serde_json::Value =
            serde_json::from_slice(&fs::read(data.join("stats.json")).unwrap_or_default())
                .unwrap_or_default();
        stats["ports"].clone()
    };
    let base = format!("http://{}:8080", host.v4(214, 1));
    assert_eq!(
        host.get_items(&host.client, &base, 1),
        ["200"],
        "not watched yet"
    );

    write_config("[9999, 8080]");
    sh("kill", &["-HUP", &pid]);
    let added = || ports()["8080"] == "configured";
    assert!(wait_until(Duration::from_secs(10), added), "8080 watched");
    assert_eq!(host.get_items(&host.client, &base, 3), vec!["200"; 3]);
    let stored = || exported(BIN, &data).len() == 3;
    assert!(wait_until(Duration::from_secs(10), stored), "stored");
    // The statistics of a second later: segments still in flight when a later reload drops
    // the port are judged by the new set, so this is the moment to count.
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        counter(BIN, &data, "nat", "lookups"),
        0,
        "served here: {}",
        fs::read_to_string(data.join("stats.json")).unwrap()
    );

    write_config("[9999]");
    sh("kill", &["-HUP", &pid]);
    let dropped = || counter(BIN, &data, "config", "reloads") == 2 && ports().get("8080").is_none();
    assert!(wait_until(Duration::from_secs(10), dropped), "8080 dropped");
    assert_eq!(host.get_items(&host.client, &base, 5), vec!["200"; 5]);
    host.stop_daemon();

    let exchanges = exported(BIN, &data);
    let uris: Vec<_> = exchanges.iter().map(|e| field(e, "uri").clone()).collect();
    assert_eq!(
        uris,
        ["/items/1", "/items/2", "/items/3"],
        "only the requests while 8080 was watched: {exchanges:#?}"
    );
    for e in &exchanges {
        assert_eq!(field(e, "client_ip"), host.v4(214, 2).as_str());
        assert_eq!(field(e, "server_ip"), host.v4(214, 1).as_str());
        assert_eq!(field(e, "server_port"), 8080);
        assert_eq!(field(e, "status_code"), 200);
        assert_eq!(field(e, "session_id"), field(&exchanges[0], "session_id"));
    }
    assert_eq!(counter(BIN, &data, "flows", "direction_guessed"), 0);
    let _ = fs::remove_dir_all(&dir);
}

/// A container calling another on the same bridge crosses two bridge ports: captured once,
/// with no NAT and so no upstream.
#[test]
fn container_to_container_on_one_bridge_is_seen_once() {
    let dir = temp_dir("c2c");
    let mut host = ContainerHost::new();
    let c1 = host.c1.clone();
    host.serve(&c1, &dir.join("www"));
    host.start_daemon(&dir.join("data"));
    let base = format!("http://{}:80", host.v4(31, 2));
    assert_eq!(host.get_items(&host.c2, &base, 3), vec!["200"; 3]);
    thread::sleep(Duration::from_secs(2));
    host.stop_daemon();
    let data = dir.join("data");
    let exchanges = exported(BIN, &data);
    assert_eq!(exchanges.len(), 3, "{exchanges:#?}");
    for e in &exchanges {
        assert_eq!(field(e, "client_ip"), host.v4(31, 3).as_str());
        assert_eq!(field(e, "server_ip"), host.v4(31, 2).as_str());
        assert_eq!(field(e, "upstream_ip"), &serde_json::Value::Null);
        assert_eq!(
            field(e, "server_netns"),
            &serde_json::json!(host.netns(&host.c1))
        );
    }
    assert_eq!(
        counter(BIN, &data, "reassembly", "duplicate_segments"),
        0,
        "each packet reached user space once"
    );
    assert!(counter(BIN, &data, "kernel", "copies_skipped") > 0);
    let _ = fs::remove_dir_all(&dir);
}

/// With all interfaces captured, an interface that appears after the start (a new container's
/// veth) is captured, and one that goes away is let go.
#[test]
fn a_veth_created_after_the_start_is_captured() {
    let dir = temp_dir("newveth");
    let mut host = ContainerHost::new();
    host.start_daemon(&dir.join("data"));
    let data = dir.join("data");
    let late = format!("apis-l-{}-{}", std::process::id(), host.id);
    sh("ip", &["netns", "add", &late]);
    host.extra.push(late.clone());
    sh("ip", &["-n", &late, "link", "set", "lo", "up"]);
    host.veth(&late, "vlate");
    host.addr(&host.host, "vlate", &host.v4(215, 1), &host.v6(33, 1));
    host.addr(&late, "eth0", &host.v4(215, 2), &host.v6(33, 2));
    host.serve(&late, &dir.join("www"));
    let attached = || counter(BIN, &data, "interfaces", "attached_later") >= 1;
    assert!(
        wait_until(Duration::from_secs(10), attached),
        "new veth attached"
    );
    let base = format!("http://{}:80", host.v4(215, 2));
    assert_eq!(host.get_items(&host.host, &base, 2), vec!["200"; 2]);
    sh("ip", &["-n", &host.host, "link", "del", "vlate"]);
    let detached = || counter(BIN, &data, "interfaces", "detached") >= 1;
    assert!(
        wait_until(Duration::from_secs(10), detached),
        "vanished veth let go"
    );
    host.stop_daemon();
    let exchanges = exported(BIN, &data);
    let uris: Vec<_> = exchanges.iter().map(|e| field(e, "uri").clone()).collect();
    assert_eq!(uris, vec!["/items/1", "/items/2"], "{exchanges:#?}");
    let _ = fs::remove_dir_all(&dir);
}

/// The conntrack client against the kernel: a connection through the DNAT rule is found from
/// any of its four tuples (either direction, before or after translation), and what a lookup
/// costs is printed (one per new connection on the daemon's pipeline thread).
#[test]
fn conntrack_finds_a_translated_connection_from_every_copy() {
    use std::{
        io::{Read as _, Write as _},
        net::{SocketAddr, TcpStream},
    };

    use apisessions::nat::{Conntrack, CtEntry, Translation};

    let dir = temp_dir("conntrack");
    let mut host = ContainerHost::new();
    host.publish(false);
    let c1 = host.c1.clone();
    host.serve(&c1, &dir.join("www"));
    let published: SocketAddr = format!("{}:8080", host.v4(214, 1)).parse().unwrap();
    let container: SocketAddr = format!("{}:80", host.v4(31, 2)).parse().unwrap();
    // An open connection from the client namespace, kept open while the host is asked.
    let client_ns = host.client.clone();
    let (stream, client) = common::in_namespace(&client_ns, || {
        let mut stream = TcpStream::connect(published).unwrap();
        stream
            .write_all(b"GET /items/1 HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap();
        let mut first = [0u8; 12];
        stream.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"HTTP/1.0 200");
        let client = stream.local_addr().unwrap();
        (stream, client)
    });
    let host_ns = host.host.clone();
    let (entries, per_lookup) = common::in_namespace(&host_ns, || {
        let mut conntrack = Conntrack::open().unwrap();
        let copies = [
            (client, published),
            (published, client),
            (client, container),
            (container, client),
        ];
        let entries: Vec<Option<CtEntry>> = copies
            .iter()
            .map(|&(src, dst)| conntrack.lookup(src, dst).unwrap())
            .collect();
        let unknown: SocketAddr = format!("{}:9", host.v4(214, 2)).parse().unwrap();
        assert_eq!(conntrack.lookup(unknown, published).unwrap(), None);
        // The daemon asks in the server-to-client orientation first: one request (see nat.rs).
        // CPU time of this thread (user + the kernel's answer, given inside send()), not wall
        // time: other work on the machine does not count.
        let rounds = 10_000;
        let start = thread_cpu();
        for _ in 0..rounds {
            conntrack.lookup(container, client).unwrap();
        }
        (entries, (thread_cpu() - start) / rounds)
    });
    drop(stream);
    for entry in &entries {
        let translation = Translation::of(entry.expect("tracked")).expect("translated");
        assert_eq!(
            (translation.client, translation.server, translation.upstream),
            (client, published, container)
        );
    }
    println!("conntrack lookup: {per_lookup:?} per connection");
    assert!(per_lookup < Duration::from_millis(1), "{per_lookup:?}");
    let _ = fs::remove_dir_all(&dir);
}

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    // SAFETY: rusage is plain data, filled by the call.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage that outlives the call.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) },
        0
    );
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
