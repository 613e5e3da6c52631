//! SIGHUP: the daemon reads its configuration file again. A valid file's live settings apply
//! at once (a port added to `capture.ports` is watched) while an open connection and its session
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
    let (nginx, python) = (net.server_addr(false, 8080), net.server_addr(false, 8081));
    let up = in_namespace(&net.client_ns, || {
        wait_until(Duration::from_secs(10), || {
            TcpStream::connect(python).is_ok()
        })
    });
    assert!(up, "{python} listens");

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
    assert!(
        wait_until(Duration::from_secs(10), || uris(&data_dir)
            .contains(&"/small.txt?before-reload".to_owned())),
        "the first request is stored: {:?}",
        uris(&data_dir)
    );
    assert_eq!(counter(BIN, &data_dir, "config", "reloads"), 0);

    // A valid file: 8081 is added (live), snaplen changes (at the next start).
    fs::write(&conf, config(&net, &data_dir, "[8080, 8081]", 4096)).unwrap();
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
    };
    assert!(wait_until(Duration::from_secs(5), watched), "8081 watched");
    in_namespace(&net.client_ns, || {
        get(python, "/watched-after-reload");
    });
    keep_alive_get(&mut open, "/small.txt?after-reload");

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
    drop(open);

    let wanted = [
        "/small.txt?before-reload",
        "/watched-after-reload",
        "/small.txt?after-reload",
        "/watched-after-bad-file",
        "/small.txt?after-bad-file",
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
    // The open connection's exchanges across both reloads: one session, nothing cut.
    let on_open: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| {
            r["uri"]
                .as_str()
                .is_some_and(|u| u.starts_with("/small.txt?"))
        })
        .collect();
    assert_eq!(on_open.len(), 3, "{on_open:?}");
    assert!(
        on_open
            .iter()
            .all(|r| r["session_id"] == on_open[0]["session_id"]
                && r["client_port"] == on_open[0]["client_port"]
                && r["response_truncated"] == false),
        "{on_open:?}"
    );
    assert_eq!(counter(BIN, &data_dir, "reassembly", "gaps"), 0);

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
