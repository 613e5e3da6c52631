//! Zero configuration: the daemon with no port given watches the host's own listeners. HTTP
//! servers on 4000 and 8080 and a line-echo service on 5432 before it starts, another HTTP
//! server on 9123 after: every HTTP request is stored, the echo service is muted in the kernel
//! after its first connections (its bytes counted, nothing decoded), and a server that stops
//! listening is no longer watched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, Stdio},
    time::Duration,
};

use common::{TestNet, counter, exported, in_namespace, sh, start_daemon, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_apisessions");
const ECHO: &str = "import socketserver, sys\n\
class H(socketserver.StreamRequestHandler):\n    def handle(self):\n        for line in self.rfile:\n            self.wfile.write(line)\n\
socketserver.ThreadingTCPServer.allow_reuse_address = True\n\
socketserver.ThreadingTCPServer((sys.argv[1], 5432), H).serve_forever()\n";

/// A process in the server's namespace, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_server(net: &TestNet, port: u16, root: &Path) -> Server {
    let child = TestNet::command(&net.server_ns, "python3")
        .args(["-m", "http.server", &port.to_string(), "--bind"])
        .arg(net.server_v4.to_string())
        .arg("--directory")
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 (`cargo xtask setup` installs it)");
    Server(child)
}

fn listening(net: &TestNet, addr: SocketAddr) {
    let up = in_namespace(&net.client_ns, || {
        wait_until(Duration::from_secs(10), || TcpStream::connect(addr).is_ok())
    });
    assert!(up, "{addr} listens");
}

/// One GET on its own connection, read to the end (Python's server answers in HTTP/1.0).
fn get(addr: SocketAddr, target: &str) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    assert!(response.starts_with(b"HTTP/1."), "{addr}{target}");
}

/// The ports the daemon reports watching, and why.
fn watched(data_dir: &Path) -> BTreeMap<String, String> {
    let stats: serde_json::Value =
        serde_json::from_slice(&fs::read(data_dir.join("stats.json")).unwrap_or_default())
            .unwrap_or_default();
    serde_json::from_value(stats["ports"].clone()).unwrap_or_default()
}

#[test]
fn the_hosts_http_listeners_are_found_and_other_services_muted() {
    let net = TestNet::new();
    let data_dir = std::env::temp_dir().join(format!("apis-ports-{}", net.server_ns));
    let root = data_dir.with_extension("root");
    let _ = fs::remove_dir_all(&data_dir);
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("index.html"), "hello\n").unwrap();
    let addr = |port| net.server_addr(false, port);

    let http_4000 = http_server(&net, 4000, &root);
    let http_8080 = http_server(&net, 8080, &root);
    let _echo = Server(
        TestNet::command(&net.server_ns, "python3")
            .args(["-c", ECHO])
            .arg(net.server_v4.to_string())
            .spawn()
            .unwrap(),
    );
    for port in [4000, 8080, 5432] {
        listening(&net, addr(port));
    }
    let mut daemon = start_daemon(&net, BIN, &[], &data_dir);
    let ports = watched(&data_dir);
    for port in ["4000", "8080", "5432"] {
        assert_eq!(
            ports.get(port).map(String::as_str),
            Some("listening"),
            "{ports:?}"
        );
    }

    // A server started after the daemon is found within seconds.
    let _http_9123 = http_server(&net, 9123, &root);
    listening(&net, addr(9123));
    assert!(
        wait_until(Duration::from_secs(10), || watched(&data_dir)
            .contains_key("9123")),
        "9123 watched: {:?}",
        watched(&data_dir)
    );

    in_namespace(&net.client_ns, || {
        for port in [4000, 8080, 9123] {
            for i in 0..3 {
                get(addr(port), &format!("/?p{port}-{i}"));
            }
        }
        // Two connections that speak something else, then a third once it is muted.
        let echo = |lines: u32| {
            let stream = TcpStream::connect(addr(5432)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut stream = stream;
            for i in 0..lines {
                stream
                    .write_all(format!("SELECT {i} FROM t WHERE x = 1\n").as_bytes())
                    .unwrap();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
            }
        };
        echo(10);
        echo(10);
        assert!(
            wait_until(Duration::from_secs(10), || watched(&data_dir)
                .get("5432")
                .is_some_and(|why| why == "muted")),
            "5432 muted: {:?}",
            watched(&data_dir)
        );
        echo(50);
    });
    let ports = watched(&data_dir);
    for port in ["4000", "8080", "9123"] {
        assert_eq!(
            ports.get(port).map(String::as_str),
            Some("http"),
            "{ports:?}"
        );
    }

    // A server that stops listening is dropped.
    drop(http_4000);
    assert!(
        wait_until(Duration::from_secs(10), || !watched(&data_dir)
            .contains_key("4000")),
        "4000 dropped: {:?}",
        watched(&data_dir)
    );
    drop(http_8080);

    sh("kill", &["-TERM", &daemon.id().to_string()]);
    assert!(daemon.wait().unwrap().success());
    let records = exported(BIN, &data_dir);
    let mut by_port: BTreeMap<u64, usize> = BTreeMap::new();
    for record in &records {
        *by_port
            .entry(record["server_port"].as_u64().unwrap())
            .or_default() += 1;
    }
    assert_eq!(by_port, BTreeMap::from([(4000, 3), (8080, 3), (9123, 3)]));
    // The muted service's later bytes were counted in the kernel, not sent to user space.
    assert!(counter(BIN, &data_dir, "kernel", "muted_bytes") >= 50 * 10);
    assert!(counter(BIN, &data_dir, "ports", "ports_muted") >= 1);
    let _ = fs::remove_dir_all(&data_dir);
    let _ = fs::remove_dir_all(&root);
}
