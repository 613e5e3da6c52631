//! SIGHUP: the daemon reads its configuration file again. A valid file's live settings apply
//! at once (a port added to `capture.ports` is watched, in the kernel and as a server port in
//! user space; a port dropped is no longer captured) while an open connection and its session
//! go on; a start-time setting that changed is logged and waits. An invalid file changes
//! nothing: the daemon logs the file, line and column, counts the rejection and keeps capturing
//! with the configuration in force.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, Stdio},
    time::Duration,
};

use common::{Nginx, TestNet, counter, exported, in_namespace, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_apisessions");

/// A process in a test namespace, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(net: &TestNet, data_dir: &Path, ports: &str, snaplen: u32) -> String {
    format!(
        "[capture]\ninterfaces = [\"{}\"]\nports = {ports}\nsnaplen = {snaplen}\n\n\
         [storage]\ndata_dir = \"{}\"\n",
        net.server_if,
        data_dir.display()
    )
}

/// The URIs stored so far.
fn uris(data_dir: &Path) -> Vec<String> {
    exported(BIN, data_dir)
        .iter()
        .map(|r| r["uri"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// One GET on its own connection, read to the end (Python's server answers in HTTP/1.0).
fn get(addr: SocketAddr, target: &str) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: reload\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    assert!(response.starts_with(b"HTTP/1."), "{addr}{target}");
}

/// A port above the ephemeral range (32768-60999): a connection picked up without its handshake
/// cannot be told apart by "the lower port is the server's", only by knowing the server port.
const HIGH_PORT: u16 = 61080;

/// A keep-alive HTTP/1.1 server answering every GET and POST with `ok` (after reading the body).
const KEEP_ALIVE_SERVER: &str = r#"
import sys, http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
    do_GET = do_POST = answer
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;

/// Sends `bytes` on `stream` and, with `answered`, reads the keep-alive server's `ok` response.
fn send(stream: &mut TcpStream, bytes: &str, answered: bool) {
    stream.write_all(bytes.as_bytes()).unwrap();
    if !answered {
        return;
    }
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    while !(response.starts_with(b"HTTP/1.1 200") && response.ends_with(b"\r\n\r\nok\n")) {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the keep-alive server closed the connection");
        response.extend_from_slice(&buf[..n]);
    }
}

/// One keep-alive request on `stream`, its response read whole (nginx's small file).
fn keep_alive_get(stream: &mut TcpStream, target: &str) {
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: reload\r\nUser-Agent: reload-test/1\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !response.ends_with(common::SMALL_BODY.as_bytes()) {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "nginx closed the connection");
        response.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn sighup_applies_a_valid_file_and_keeps_the_running_config_on_an_invalid_one() {
    let net = TestNet::new();
    let _nginx = Nginx::start(&net, 8080);
    let web_root = tempdir("reload-web");
    let _python = Process(
        TestNet::command(&net.server_ns, "python3")
            .args(["-m", "http.server", "8081", "--bind"])
            .arg(net.server_v4.to_string())
            .arg("--directory")
            .arg(&web_root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 (`cargo xtask setup` installs it)"),
    );
    let _keep_alive = Process(
        TestNet::command(&net.server_ns, "python3")
            .args(["-c", KEEP_ALIVE_SERVER])
            .arg(net.server_v4.to_string())
            .arg(HIGH_PORT.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (nginx, python) = (net.server_addr(false, 8080), net.server_addr(false, 8081));
    let high = net.server_addr(false, HIGH_PORT);
    let up = in_namespace(&net.client_ns, || {
        wait_until(Duration::from_secs(10), || {
            TcpStream::connect(python).is_ok() && TcpStream::connect(high).is_ok()
        })
    });
    assert!(up, "{python} and {high} listen");

    let dir = tempdir("reload-state");
    let data_dir = dir.join("data");
    let conf = dir.join("config.toml");
    fs::write(&conf, config(&net, &data_dir, "[8080]", 65536)).unwrap();
    let log = dir.join("daemon.log");
    let daemon = Process(
        TestNet::command(&net.server_ns, BIN)
            .args(["run", "--summary-interval", "0", "--config"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let pid = daemon.0.id();
    let stats = data_dir.join("stats.json");
    let running = || {
        let stats: serde_json::Value =
            serde_json::from_slice(&fs::read(&stats).unwrap_or_default()).unwrap_or_default();
        stats["pid"] == u64::from(pid) && stats["running"] == true
    };
    assert!(wait_until(Duration::from_secs(20), running), "daemon up");
    let hup = || {
        // SAFETY: kill(2) on the daemon this test started.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    };
    let alive = || Path::new(&format!("/proc/{pid}")).exists() && running();

    // Before: 8080 is watched, 8081 is not. A keep-alive connection stays open throughout.
    let mut open = in_namespace(&net.client_ns, || TcpStream::connect(nginx).unwrap());
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    keep_alive_get(&mut open, "/small.txt?before-reload");
    in_namespace(&net.client_ns, || {
        get(python, "/unwatched");
    });
    // A connection to the port the reload adds, in the middle of sending a body when the
    // reload comes: the daemon picks it up without its handshake.
    let mut picked_up = in_namespace(&net.client_ns, || TcpStream::connect(high).unwrap());
    picked_up
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let picked_up_port = picked_up.local_addr().unwrap().port();
    assert!(
        picked_up_port < HIGH_PORT,
        "an ephemeral port: {picked_up_port}"
    );
    let first_half = "a body sent before the reload,";
    let second_half = " the rest after it\r\n";
    send(
        &mut picked_up,
        &format!(
            "POST /upload HTTP/1.1\r\nHost: reload\r\nUser-Agent: reload-test/1\r\n\
             Content-Length: {}\r\n\r\n{first_half}",
            first_half.len() + second_half.len()
        ),
        false,
    );
    assert!(
        wait_until(Duration::from_secs(10), || uris(&data_dir)
            .contains(&"/small.txt?before-reload".to_owned())),
        "the first request is stored: {:?}",
        uris(&data_dir)
    );
    assert_eq!(counter(BIN, &data_dir, "config", "reloads"), 0);

    // A valid file: 8081 and HIGH_PORT are added (live), snaplen changes (at the next start).
    let added = format!("[8080, 8081, {HIGH_PORT}]");
    fs::write(&conf, config(&net, &data_dir, &added, 4096)).unwrap();
    hup();
    assert!(
        wait_until(Duration::from_secs(10), || counter(
            BIN, &data_dir, "config", "reloads"
        ) == 1),
        "the reload is counted"
    );
    let watched = || {
        let stats: serde_json::Value =
            serde_json::from_slice(&fs::read(&stats).unwrap_or_default()).unwrap_or_default();
        stats["ports"]["8081"] == "configured"
            && stats["ports"][HIGH_PORT.to_string()] == "configured"
    };
    assert!(
        wait_until(Duration::from_secs(5), watched),
        "8081 and {HIGH_PORT} watched"
    );
    in_namespace(&net.client_ns, || {
        get(python, "/watched-after-reload");
    });
    keep_alive_get(&mut open, "/small.txt?after-reload");
    // The picked-up connection's first captured bytes are the body's end, which say nothing
    // about who is who: only HIGH_PORT being a server port does. Its next request is then
    // decoded the right way round, as is a new connection's.
    send(&mut picked_up, second_half, true);
    send(
        &mut picked_up,
        "GET /picked-up HTTP/1.1\r\nHost: reload\r\nUser-Agent: reload-test/1\r\n\r\n",
        true,
    );
    let mut fresh = in_namespace(&net.client_ns, || TcpStream::connect(high).unwrap());
    fresh
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    send(
        &mut fresh,
        "GET /fresh HTTP/1.1\r\nHost: reload\r\nUser-Agent: reload-test/1\r\n\r\n",
        true,
    );
    drop(fresh);

    // An invalid file: rejected, logged with file:line:column, the running configuration stays.
    fs::write(&conf, "[capture]\nports = [8080\n").unwrap();
    hup();
    assert!(
        wait_until(Duration::from_secs(10), || counter(
            BIN,
            &data_dir,
            "config",
            "reloads_rejected"
        ) == 1),
        "the rejection is counted"
    );
    assert!(alive(), "the daemon survives an invalid file");
    in_namespace(&net.client_ns, || {
        get(python, "/watched-after-bad-file");
    });
    keep_alive_get(&mut open, "/small.txt?after-bad-file");

    // A valid file dropping 8081: no longer captured; the other ports go on.
    fs::write(
        &conf,
        config(&net, &data_dir, &format!("[8080, {HIGH_PORT}]"), 4096),
    )
    .unwrap();
    hup();
    let dropped = || {
        let stats: serde_json::Value =
            serde_json::from_slice(&fs::read(&stats).unwrap_or_default()).unwrap_or_default();
        counter(BIN, &data_dir, "config", "reloads") == 2 && stats["ports"].get("8081").is_none()
    };
    assert!(wait_until(Duration::from_secs(10), dropped), "8081 dropped");
    in_namespace(&net.client_ns, || {
        get(python, "/unwatched-after-removal");
    });
    keep_alive_get(&mut open, "/small.txt?after-removal");
    send(
        &mut picked_up,
        "GET /picked-up-after-removal HTTP/1.1\r\nHost: reload\r\nUser-Agent: reload-test/1\r\n\r\n",
        true,
    );
    drop(open);
    drop(picked_up);

    let wanted = [
        "/small.txt?before-reload",
        "/watched-after-reload",
        "/small.txt?after-reload",
        "/watched-after-bad-file",
        "/small.txt?after-bad-file",
        "/picked-up",
        "/fresh",
        "/small.txt?after-removal",
        "/picked-up-after-removal",
    ];
    let complete = || {
        let stored = uris(&data_dir);
        wanted.iter().all(|w| stored.iter().any(|s| s == w))
    };
    assert!(
        wait_until(Duration::from_secs(15), complete),
        "every request on a watched port is stored: {:?}",
        uris(&data_dir)
    );
    let records = exported(BIN, &data_dir);
    assert!(
        !records.iter().any(|r| r["uri"] == "/unwatched"),
        "8081 was not watched before the reload"
    );
    assert!(
        !records
            .iter()
            .any(|r| r["uri"] == "/unwatched-after-removal"),
        "8081 is not watched after the reload that dropped it"
    );
    // The open connection's exchanges across both reloads: one session, nothing cut.
    let on_open: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| {
            r["uri"]
                .as_str()
                .is_some_and(|u| u.starts_with("/small.txt?"))
        })
        .collect();
    assert_eq!(on_open.len(), 4, "{on_open:?}");
    assert!(
        on_open
            .iter()
            .all(|r| r["session_id"] == on_open[0]["session_id"]
                && r["client_port"] == on_open[0]["client_port"]
                && r["response_truncated"] == false),
        "{on_open:?}"
    );
    // Nothing lost but the unseen start of the picked-up connection, one per direction.
    assert_eq!(
        counter(BIN, &data_dir, "reassembly", "started_mid_stream"),
        2
    );
    assert_eq!(counter(BIN, &data_dir, "reassembly", "gaps"), 2);
    // On the added port: the client is the client (also on the connection picked up mid-body)
    // and, one client and one browser, the same session as its requests to nginx.
    let client_ip = net.client_v4.to_string();
    for (uri, client_port) in [
        ("/picked-up", Some(picked_up_port)),
        ("/picked-up-after-removal", Some(picked_up_port)),
        ("/fresh", None),
    ] {
        let record = records
            .iter()
            .find(|r| r["uri"] == uri)
            .unwrap_or_else(|| panic!("{uri} stored: {records:?}"));
        assert_eq!(record["client_ip"], client_ip.as_str(), "{record}");
        assert_eq!(record["server_port"], HIGH_PORT, "{record}");
        assert_eq!(record["status_code"], 200, "{record}");
        if let Some(port) = client_port {
            assert_eq!(record["client_port"], port, "{record}");
        }
        assert_eq!(record["session_id"], on_open[0]["session_id"], "{record}");
    }
    assert_eq!(
        counter(BIN, &data_dir, "flows", "direction_guessed"),
        0,
        "no connection's ends were guessed"
    );

    let log = fs::read_to_string(&log).unwrap();
    let conf = conf.display().to_string();
    assert!(
        log.contains(&format!("reloaded {conf}: capture.ports in force")),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "capture.snaplen changed in {conf}: in force after a restart"
        )),
        "{log}"
    );
    // The unclosed array, as `file:line:column: reason`.
    let rejected = log
        .lines()
        .find(|l| l.contains("reload rejected"))
        .unwrap_or_else(|| panic!("no rejection logged: {log}"));
    let at = rejected
        .split_once(&format!("{conf}:"))
        .map(|(_, at)| at.splitn(3, ':').collect::<Vec<_>>())
        .unwrap_or_default();
    assert!(
        at.len() == 3
            && at[0].parse::<u32>().is_ok_and(|line| line >= 2)
            && at[1].parse::<u32>().is_ok()
            && !at[2].trim().is_empty(),
        "{rejected}"
    );
    drop(daemon);
    let _ = fs::remove_dir_all(&dir);
    let _ = fs::remove_dir_all(&web_root);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("apis-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}
