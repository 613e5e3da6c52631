//! The fleet, live: two daemons (two hosts: each its own store, host id and port, one shared
//! installation secret) capture two real HTTP servers in a network namespace and ship to a real
//! clickhouse-server running there too. One user (one API key) alternates between the hosts:
//! centrally one session with both hosts. Then an outage of the server while traffic flows,
//! and a SIGKILL of a daemon while it ships: afterwards the central store holds exactly what
//! the local stores hold, every `exchange_id` once, and `--central` answers like the local
//! commands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeSet,
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use common::{
    TestNet, clickhouse::ClickHouse, http_get, in_namespace, sh, start_daemon_in, wait_until,
};

const BIN: &str = env!("CARGO_BIN_EXE_apisessions");
const PORTS: [u16; 2] = [8080, 8081];
const UI_PORT: u16 = 7890;

/// A child process killed on drop (the test may fail half-way).
struct Guard(Child);

impl Guard {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Host {
    name: &'static str,
    /// Where the daemons and the ClickHouse server run.
    ns: String,
    dir: PathBuf,
    config: PathBuf,
    daemon: Option<Child>,
}

impl Host {
    fn new(root: &Path, name: &'static str, port: u16, net: &TestNet, ch: &ClickHouse) -> Self {
        // The port is this host's alone: its daemon captures only its server.
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        // Hosts that share the installation secret give one user the same session id.
        fs::write(dir.join("secret"), [7u8; 32]).unwrap();
        let config = root.join(format!("{name}.toml"));
        fs::write(
            &config,
            format!(
                "[capture]\ninterfaces = [\"{iface}\"]\nports = [{port}]\n\n\
                 [storage]\ndata_dir = \"{dir}\"\n\n\
                 [central]\nurl = \"{url}\"\nuser = \"{user}\"\npassword_file = \"{pw}\"\n\
                 host_id = \"{name}\"\ninterval = \"200ms\"\n",
                iface = net.server_if,
                dir = dir.display(),
                url = ch.url(),
                user = common::clickhouse::USER,
                pw = ch.password_file.display(),
            ),
        )
        .unwrap();
        let mut host = Self {
            name,
            ns: net.server_ns.clone(),
            dir,
            config,
            daemon: None,
        };
        host.start(net);
        host
    }

    fn start(&mut self, net: &TestNet) {
        let config = self.config.display().to_string();
        self.daemon = Some(start_daemon_in(
            &net.server_ns,
            BIN,
            &["--config", &config],
            &self.dir,
        ));
    }

    fn stop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            sh("kill", &["-TERM", &daemon.id().to_string()]);
            assert!(
                daemon.wait().unwrap().success(),
                "{} stops cleanly",
                self.name
            );
        }
    }

    fn kill(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            sh("kill", &["-KILL", &daemon.id().to_string()]);
            let _ = daemon.wait();
        }
    }

    /// The CLI on this host's store, in the namespace where the central server answers.
    fn cli(&self, args: &[&str]) -> String {
        let out = TestNet::command(&self.ns, BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The local store's exchanges, as NDJSON objects.
    fn local_exchanges(&self) -> Vec<serde_json::Value> {
        self.cli(&["export"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn stat(&self, name: &str) -> u64 {
        let stats: serde_json::Value =
            serde_json::from_slice(&fs::read(self.dir.join("stats.json")).unwrap()).unwrap();
        stats["stages"]["central"][name].as_u64().unwrap_or(0)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `count` requests of one user (its API key), alternating between the two hosts, each
/// answered (python's http.server: 404 for these paths).
fn traffic(net: &TestNet, from: usize, count: usize) {
    in_namespace(&net.client_ns, || {
        for i in from..from + count {
            let port = PORTS[i % 2];
            let mut stream =
                TcpStream::connect(SocketAddr::new(net.server_v4.into(), port)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let head = format!(
                "GET /item{i} HTTP/1.1\r\nHost: shop\r\nX-API-Key: user-7-key\r\n\
                 User-Agent: shop-app/1.0\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).unwrap();
            let mut response = Vec::new();
            stream.read_to_end(&mut response).unwrap();
            assert!(response.starts_with(b"HTTP/1."), "answered");
        }
    });
}

fn central_count(ch: &ClickHouse) -> (u64, u64) {
    (
        ch.number("SELECT count() FROM apisessions.exchanges FINAL"),
        ch.number("SELECT uniqExact(exchange_id) FROM apisessions.exchanges"),
    )
}

#[test]
fn one_user_across_two_hosts_through_an_outage_and_a_kill() {
    let net = TestNet::new();
    let ch = &mut ClickHouse::start_in("live", Some(&net.server_ns));
    let mut servers: Vec<Child> = PORTS
        .iter()
        .map(|port| {
            TestNet::command(&net.server_ns, "python3")
                .args(["-m", "http.server", &port.to_string()])
                .args(["--bind", &net.server_v4.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for port in PORTS {
        let server = SocketAddr::new(net.server_v4.into(), port);
        assert!(
            wait_until(Duration::from_secs(20), || {
                in_namespace(&net.client_ns, || TcpStream::connect(server).is_ok())
            }),
            "server on {port}"
        );
    }
    let root = std::env::temp_dir().join(format!("apis-central-live-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).unwrap();
    let mut hosts = [
        Host::new(&root, "host-a", PORTS[0], &net, ch),
        Host::new(&root, "host-b", PORTS[1], &net, ch),
    ];
    let local_total =
        |hosts: &[Host]| -> u64 { hosts.iter().map(|h| h.local_exchanges().len() as u64).sum() };

    // One user over both hosts: one session centrally, with both hosts.
    traffic(&net, 0, 20);
    // A batch is acknowledged after both its exchanges and its sessions are in.
    let shipped = wait_until(Duration::from_secs(60), || {
        central_count(ch).0 == 20
            && ch.number("SELECT uniqExact(host_id) FROM apisessions.sessions") == 2
    });
    assert!(shipped, "20 exchanges shipped: {:?}", central_count(ch));
    let fleet: Vec<serde_json::Value> =
        serde_json::from_str(&hosts[0].cli(&["sessions", "--central", "--json", "--limit", "0"]))
            .unwrap();
    assert_eq!(fleet.len(), 1, "{fleet:#?}");
    assert_eq!(fleet[0]["requests"], 20);
    assert_eq!(
        fleet[0]["host_ids"],
        serde_json::json!(["host-a", "host-b"])
    );
    for host in &hosts {
        let local: Vec<serde_json::Value> =
            serde_json::from_str(&host.cli(&["sessions", "--json"])).unwrap();
        assert_eq!(local.len(), 1);
        assert_eq!(local[0]["requests"], 10, "{}", host.name);
        // The same id on both hosts: the shared secret.
        assert_eq!(local[0]["session_id"], fleet[0]["session_id"]);
    }

    // An outage while traffic flows: nothing lost, nothing doubled.
    ch.stop();
    traffic(&net, 20, 20);
    assert!(
        wait_until(Duration::from_secs(20), || local_total(&hosts) == 40),
        "capture goes on during the outage"
    );
    assert!(
        wait_until(Duration::from_secs(20), || hosts
            .iter()
            .all(|h| h.stat("failures") > 0 && h.stat("pending_exchanges") > 0)),
        "the outage shows in stats"
    );
    ch.start_again();
    let caught_up = wait_until(Duration::from_secs(120), || central_count(ch) == (40, 40));
    assert!(caught_up, "after the outage: {:?}", central_count(ch));

    // A SIGKILL while shipping, then a restart: the same. The kill comes once the exchanges
    // are committed locally (a kill before that loses the batch in flight, by design) and
    // while the shipper is sending them.
    traffic(&net, 40, 20);
    assert!(
        wait_until(Duration::from_secs(20), || local_total(&hosts) == 60),
        "committed before the kill"
    );
    hosts[0].kill();
    hosts[0].start(&net);
    traffic(&net, 60, 10);
    let total = wait_until(Duration::from_secs(60), || local_total(&hosts) == 70);
    assert!(total, "local stores: {}", local_total(&hosts));
    let caught_up = wait_until(Duration::from_secs(120), || central_count(ch) == (70, 70));
    assert!(caught_up, "after the kill: {:?}", central_count(ch));
    let stored_twice = ch.number("SELECT count() FROM apisessions.exchanges")
        - ch.number("SELECT uniqExact(exchange_id) FROM apisessions.exchanges");
    println!("rows stored twice before merging (counted once): {stored_twice}");

    // `--central` answers like the local commands, for one host's part.
    for host in &hosts {
        let local: BTreeSet<String> = host
            .local_exchanges()
            .iter()
            .map(|e| e.to_string())
            .collect();
        let central: BTreeSet<String> = host
            .cli(&["export", "--central", "--host-id", host.name])
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(central, local, "{}", host.name);
    }
    // `ui --central`: the fleet's sessions, as `sessions --central` and `show --central` give
    // them.
    let mut ui = Guard(
        TestNet::command(&net.server_ns, BIN)
            .args([
                "ui",
                "--central",
                "--listen",
                &format!("127.0.0.1:{UI_PORT}"),
            ])
            .arg("--config")
            .arg(&hosts[0].config)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_until(Duration::from_secs(20), || in_namespace(
            &net.server_ns,
            || { TcpStream::connect(("127.0.0.1", UI_PORT)).is_ok() }
        )),
        "ui --central listens"
    );
    let fleet: Vec<serde_json::Value> =
        serde_json::from_str(&hosts[0].cli(&["sessions", "--central", "--json", "--limit", "0"]))
            .unwrap();
    let (status, _, body) = http_get(&net.server_ns, UI_PORT, "/api/v1/sessions", None);
    assert_eq!(status, 200, "{body}");
    let api: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(
        api, fleet,
        "GET /api/v1/sessions = sessions --central --json"
    );
    let id = fleet[0]["session_id"].as_str().unwrap();
    let show: serde_json::Value =
        serde_json::from_str(&hosts[0].cli(&["show", id, "--central", "--json"])).unwrap();
    let (status, _, body) = http_get(
        &net.server_ns,
        UI_PORT,
        &format!("/api/v1/sessions/{id}"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        api, show,
        "GET /api/v1/sessions/{{id}} = show --central --json"
    );
    assert_eq!(api["exchanges"].as_array().unwrap().len(), 70);
    let (status, _, page) = http_get(&net.server_ns, UI_PORT, &format!("/sessions/{id}"), None);
    assert_eq!(status, 200);
    assert!(
        page.contains("seen by the sensors host-a, host-b"),
        "{page}"
    );
    assert_eq!(
        page.matches("<details id=\"x").count(),
        70,
        "the details of the 70 requests of both hosts"
    );
    // The fleet's risk, attack and slow filters, as the CLI's.
    for (query, args) in [
        ("attacks=1", &["--attacks"][..]),
        ("min_risk=0", &["--min-risk", "0"][..]),
        ("attack=xss", &["--attack", "xss"][..]),
        ("slow=1", &["--slow"][..]),
    ] {
        let mut cli = vec!["sessions", "--central", "--json", "--limit", "0"];
        cli.extend_from_slice(args);
        let fleet: serde_json::Value = serde_json::from_str(&hosts[0].cli(&cli)).unwrap();
        let (status, _, body) = http_get(
            &net.server_ns,
            UI_PORT,
            &format!("/api/v1/sessions?{query}"),
            None,
        );
        assert_eq!(status, 200, "{body}");
        let api: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(api, fleet, "{query}");
    }
    ui.stop();

    // The password is in no output of the daemon's and not in stats.
    for host in &hosts {
        let stats = fs::read_to_string(host.dir.join("stats.json")).unwrap();
        assert!(!stats.contains(&ch.password));
    }
    for host in &mut hosts {
        host.stop();
    }
    for server in &mut servers {
        let _ = server.kill();
        let _ = server.wait();
    }
    fs::remove_dir_all(&root).unwrap();
}
