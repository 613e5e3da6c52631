//! `cargo xtask bench --hostile`: the sensor under a flood aimed at the watched port, with a
//! normal client beside it.
//!
//! From the client's namespace, at once: SYNs from spoofed addresses and random ports as fast
//! as a raw socket sends them (half-open connections: the server's SYN-ACKs go nowhere),
//! connections that send random bytes and close, and connections held open after half a request
//! head. Meanwhile a normal client (curl, one request at a time) fetches a file from nginx.
//! Measured: the daemon's RSS (sampled, and its peak), the counters that say what it dropped
//! and why, and whether every request of the normal client that got its response was decoded
//! and stored. Then the disk fills: a second sensor's data directory on a 256 KiB tmpfs under a
//! paced client's load (400 requests/s), grown to 256 MiB for a second load; every exchange
//! must be stored or counted as lost, writing must resume, and `sessions` and `prune` must work
//! afterwards. The figures are printed and, unless `--quick`, appended to docs/BENCHMARKS.md.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    Options, PORT,
    host::{Net, Nginx, Proc, check_interrupt, sleep, wait_for},
    probe::{self, Counters},
    report::Machine,
};
use crate::{binary, workspace_root};

/// One load per process: the floods `syn`, `garbage` or `hold`, or the disk phase's `paced`
/// requests (argv: mode, address, port, seconds, then the spoofed sources' prefix or the
/// phase's tag). Prints `mode count bytes` at the end.
const FLOOD_PY: &str = r#"
import os, random, socket, struct, sys, time
mode, dst, port, seconds, prefix = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
end = time.time() + seconds

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF

def syn(src, sport):
    d = socket.inet_aton(dst)
    s = socket.inet_aton(src)
    tcp = struct.pack("!HHLLBBHHH", sport, port, random.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = s + d + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.getrandbits(16), 0, 64, socket.IPPROTO_TCP, 0, s, d)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp

count = size = 0
if mode == "syn":
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    while time.time() < end:
        for _ in range(500):
            packet = syn(prefix + str(random.randint(10, 250)), random.randint(1024, 65535))
            try:
                raw.sendto(packet, (dst, 0))
                count += 1
                size += len(packet)
            except OSError:
                pass
elif mode == "garbage":
    while time.time() < end:
        try:
            c = socket.create_connection((dst, port), timeout=2)
            data = os.urandom(random.randint(1, 16384))
            c.sendall(data)
            c.close()
            count += 1
            size += len(data)
        except OSError:
            time.sleep(0.01)
elif mode == "paced":
    # The disk phase's load: one keep-alive connection, 400 requests a second at most (a rate
    # the sensor takes whole on a busy two-CPU machine), tagged with the phase (argv[5]).
    import http.client
    conn = http.client.HTTPConnection(dst, port, timeout=5)
    start = time.time()
    while time.time() < end:
        try:
            conn.request("GET", "/static/item.json?phase=%s&n=%d" % (prefix, count))
            response = conn.getresponse()
            size += len(response.read())
            if response.status == 200:
                count += 1
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection(dst, port, timeout=5)
        ahead = count / 400.0 - (time.time() - start)
        if ahead > 0:
            time.sleep(ahead)
elif mode == "hold":
    held = []
    while time.time() < end:
        if len(held) < 800:
            try:
                c = socket.create_connection((dst, port), timeout=2)
                head = b"GET /held/%d HTTP/1.1\r\nHost: x\r\nX-Pad: " % len(held)
                c.sendall(head)
                held.append(c)
                count += 1
                size += len(head)
            except OSError:
                time.sleep(0.05)
        else:
            time.sleep(0.1)
print(mode, count, size)
"#;

/// The normal client's User-Agent: how its exchanges are found in the store.
const NORMAL_AGENT: &str = "hostile-bench-normal/1";

/// The counters the report shows: what the flood cost and where it went.
const SHOWN: &[(&str, &str)] = &[
    ("kernel", "tcp_segments"),
    ("kernel", "events_submitted"),
    ("kernel", "ring_full"),
    ("flows", "created"),
    ("flows", "active"),
    ("flows", "evicted_capacity"),
    ("flows", "evicted_memory"),
    ("flows", "idle_expired"),
    ("reassembly", "gaps"),
    ("reassembly", "buffer_overflows"),
    ("http", "exchanges"),
    ("http", "parse_errors"),
    ("http", "resyncs"),
    ("http", "not_http_streams"),
    ("http", "requests_without_response"),
    ("store", "exchanges_written"),
    ("store", "exchanges_dropped_queue_full"),
];

pub fn run(options: &Options) -> Result<()> {
    let seconds = options.duration.as_secs().max(5) * if options.quick { 1 } else { 3 };
    let out_dir = workspace_root().join("target/bench");
    let work = out_dir.join("hostile");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let script = work.join("flood.py");
    fs::write(&script, FLOOD_PY)?;
    let data_dir = work.join("data");

    let net = Net::create(false, false)?;
    let _nginx = Nginx::start(&net, &work.join("nginx"), PORT, 1, false)?;
    let log = fs::File::create(work.join("sensor.log"))?;
    let mut sensor = Proc::spawn(
        "apisessions",
        net.server(binary(true))
            .args(["run", "--iface", &net.iface, "--port", &PORT.to_string()])
            .args(["--summary-interval", "0", "--data-dir"])
            .arg(&data_dir)
            .stdout(Stdio::null())
            .stderr(log),
    )?;
    let stats = data_dir.join("stats.json");
    wait_for("the sensor to attach", Duration::from_secs(30), || {
        stats.exists() || !sensor.running()
    })?;
    if !sensor.running() {
        bail!(
            "apisessions exited at start; see {}",
            work.join("sensor.log").display()
        );
    }
    let pid = sensor.pid();
    let rss_before = rss_kib(pid)?;
    println!(
        "xtask: hostile: {seconds} s of SYN flood, random bytes and held connections against \
         {}:{PORT}, a normal client beside them",
        net.server_ip
    );

    let machine = Machine::read();
    let prefix = client_prefix(&net.server_ip);
    let mut floods = Vec::new();
    for mode in ["syn", "garbage", "hold"] {
        floods.push(Proc::spawn(
            mode,
            net.client("python3")
                .arg(&script)
                .args([mode, &net.server_ip, &PORT.to_string()])
                .arg(seconds.to_string())
                .arg(&prefix)
                .stdout(fs::File::create(work.join(format!("{mode}.out")))?)
                .stderr(Stdio::null()),
        )?);
    }

    let started = Instant::now();
    let (mut sent, mut answered, mut rss_peak_sampled) = (0u64, 0u64, rss_before);
    while started.elapsed() < Duration::from_secs(seconds) {
        check_interrupt()?;
        let url = format!(
            "http://{}:{PORT}/static/item.json?normal={sent}",
            net.server_ip
        );
        sent += 1;
        let out = net
            .client("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-m",
                "5",
                "-A",
            ])
            .arg(NORMAL_AGENT)
            .arg(&url)
            .stderr(Stdio::null())
            .output()
            .context("curl")?;
        if out.stdout == b"200" {
            answered += 1;
        }
        rss_peak_sampled = rss_peak_sampled.max(rss_kib(pid)?);
    }
    for flood in &mut floods {
        flood.wait(Duration::from_secs(30))?;
    }
    // Let the reader drain, idle flows expire and the writer commit.
    sleep(Duration::from_secs(3))?;
    let rss_after = rss_kib(pid)?;
    let rss_peak = probe::peak_rss_kib(pid)?;
    let exit = sensor.stop(Duration::from_secs(60))?;
    if !exit.success() {
        bail!(
            "apisessions exited with {exit}; see {}",
            work.join("sensor.log").display()
        );
    }
    let counters = Counters::read(&data_dir)?;
    // The flood's sensor is gone: the next phase has the interface to itself.
    let disk = disk_full(&net, &work, seconds / 3)?;
    let stored = Command::new(binary(true))
        .args(["export", "--format", "ndjson", "--data-dir"])
        .arg(&data_dir)
        .output()
        .context("apisessions export")?;
    let decoded = String::from_utf8_lossy(&stored.stdout)
        .lines()
        .filter(|l| l.contains(NORMAL_AGENT))
        .count() as u64;
    let flood_lines: Vec<String> = ["syn", "garbage", "hold"]
        .iter()
        .map(|mode| {
            fs::read_to_string(work.join(format!("{mode}.out")))
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .collect();

    let mut text = String::new();
    writeln!(
        text,
        "## {} · {} · hostile load (`cargo xtask bench --hostile`, {seconds} s)\n",
        machine.date, machine.commit
    )?;
    writeln!(text, "- Machine: {}", machine.line())?;
    writeln!(
        text,
        "- Flood (mode, packets or connections, bytes): {}",
        flood_lines.join("; ")
    )?;
    writeln!(
        text,
        "\n| figure | value |\n|---|---|\n| normal client: answered / decoded and stored | {answered} / {decoded} (of {sent} sent) |"
    )?;
    writeln!(
        text,
        "| sensor RSS before / peak sampled / peak (VmHWM) / after | {} / {} / {} / {} MiB |",
        mib(rss_before),
        mib(rss_peak_sampled),
        mib(rss_peak),
        mib(rss_after)
    )?;
    for (stage, name) in SHOWN {
        writeln!(text, "| {stage}.{name} | {} |", counters.get(stage, name))?;
    }
    let losses = counters.losses();
    writeln!(
        text,
        "\nLoss counters not zero: {}",
        if losses.is_empty() {
            "none".to_owned()
        } else {
            losses
                .iter()
                .map(|(name, value)| format!("{name} {value}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    )?;
    text.push_str(&disk.text);
    let verdict = if decoded == answered {
        "every answered request of the normal client was decoded and stored"
    } else {
        "NOT every answered request of the normal client was decoded and stored"
    };
    writeln!(text, "Verdict: {verdict}.")?;
    println!("\n{text}");
    let report = out_dir.join("hostile.md");
    fs::write(&report, &text).with_context(|| format!("writing {}", report.display()))?;
    if options.quick {
        println!("xtask: --quick: docs/BENCHMARKS.md left as it is (a smoke run is no result)");
    } else {
        let path = workspace_root().join("docs/BENCHMARKS.md");
        super::report::append_entry(&path, &text)?;
        println!("xtask: appended the figures to {}", path.display());
    }
    if decoded != answered {
        bail!("{verdict}");
    }
    if !disk.held {
        bail!("the full disk cost more than its counters say, or writing did not resume");
    }
    Ok(())
}

/// A tmpfs mounted for the disk-full phase, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Self> {
        fs::create_dir_all(dir)?;
        crate::status(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(dir),
        )?;
        Ok(Self(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) -> Result<()> {
        crate::status(
            Command::new("mount")
                .args(["-o", &format!("remount,size={size}")])
                .arg(&self.0),
        )
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

struct DiskOutcome {
    text: String,
    /// Decoding went on, the loss equals the store's loss counters, writing resumed, and the
    /// store stayed readable and prunable.
    held: bool,
}

/// The data directory on a 256 KiB tmpfs while a paced client loads nginx: the store fills.
/// Then the tmpfs grows and a second load follows. Every exchange of the first load is stored
/// or counted as lost; every exchange of the second is stored; `sessions` and `prune` work
/// afterwards.
fn disk_full(net: &Net, work: &Path, seconds: u64) -> Result<DiskOutcome> {
    let seconds = seconds.max(8);
    let data_dir = work.join("disk");
    let tmpfs = Tmpfs::mount(&data_dir, "256k")?;
    let log = fs::File::create(work.join("sensor-disk.log"))?;
    let mut sensor = Proc::spawn(
        "apisessions (disk full)",
        net.server(binary(true))
            .args(["run", "--iface", &net.iface, "--port", &PORT.to_string()])
            .args(["--summary-interval", "0", "--data-dir"])
            .arg(&data_dir)
            .stdout(Stdio::null())
            .stderr(log),
    )?;
    let stats = data_dir.join("stats.json");
    wait_for("the sensor to attach", Duration::from_secs(30), || {
        stats.exists() || !sensor.running()
    })?;
    println!(
        "xtask: hostile: the data directory on a 256 KiB tmpfs, {seconds} s of load; then 256 MiB"
    );
    let paced = |phase: &str| -> Result<u64> {
        let out = net
            .client("python3")
            .arg(work.join("flood.py"))
            .args(["paced", &net.server_ip, &PORT.to_string()])
            .arg(seconds.to_string())
            .arg(phase)
            .output()
            .context("the paced client")?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("the paced client printed no count: {text}"))
    };
    let full_requests = paced("full")?;
    let alive_when_full = sensor.running();
    tmpfs.resize("256m")?;
    sleep(Duration::from_secs(2))?;
    let after_requests = paced("after")?;
    sleep(Duration::from_secs(3))?;
    let exit = sensor.stop(Duration::from_secs(60))?;
    let counters = Counters::read(&data_dir)?;
    let app = binary(true);
    let exported = Command::new(&app)
        .args(["export", "--format", "ndjson", "--data-dir"])
        .arg(&data_dir)
        .output()
        .context("apisessions export")?;
    let exported = String::from_utf8_lossy(&exported.stdout);
    let stored = |phase: &str| {
        let needle = format!("phase={phase}");
        exported.lines().filter(|l| l.contains(&needle)).count() as u64
    };
    let (stored_full, stored_after) = (stored("full"), stored("after"));
    let readable = Command::new(&app)
        .args(["sessions", "--limit", "5", "--data-dir"])
        .arg(&data_dir)
        .status()
        .is_ok_and(|s| s.success());
    let prunable = Command::new(&app)
        .args(["prune", "--older-than", "1h", "--data-dir"])
        .arg(&data_dir)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    drop(tmpfs);

    let decoded = counters.get("http", "exchanges");
    let lost = counters.get("store", "exchanges_lost_write_error")
        + counters.get("store", "exchanges_dropped_queue_full");
    let held = alive_when_full
        && exit.success()
        && decoded == full_requests + after_requests
        && stored_full + lost == full_requests
        && stored_after == after_requests
        && readable
        && prunable;
    let mut text = String::new();
    writeln!(
        text,
        "
Disk full (data directory on a 256 KiB tmpfs, {seconds} s of 400 requests/s; then 256 MiB \
         and {seconds} s more):

| figure | value |
|---|---|"
    )?;
    writeln!(
        text,
        "| requests while full: answered / stored / counted lost | {full_requests} / {stored_full} / {lost} |"
    )?;
    writeln!(
        text,
        "| requests after the space returned: answered / stored | {after_requests} / {stored_after} |"
    )?;
    writeln!(text, "| http.exchanges (decoded in all) | {decoded} |")?;
    for (stage, name) in [
        ("kernel", "ring_full"),
        ("reassembly", "gaps"),
        ("store", "write_errors"),
        ("store", "map_full_errors"),
        ("stats", "write_errors"),
    ] {
        writeln!(text, "| {stage}.{name} | {} |", counters.get(stage, name))?;
    }
    writeln!(
        text,
        "| daemon alive while full / clean exit / `sessions` / `prune` afterwards | {alive_when_full} / {} / {readable} / {prunable} |",
        exit.success()
    )?;
    writeln!(
        text,
        "
Disk verdict: {}.",
        if held {
            "decoding went on, every exchange stored or counted, writing resumed"
        } else {
            "NOT as expected (see the figures)"
        }
    )?;
    Ok(DiskOutcome { text, held })
}

/// The spoofed sources: the client's /24 (the server's SYN-ACKs to them go unanswered).
fn client_prefix(server_ip: &str) -> String {
    match server_ip.rsplit_once('.') {
        Some((net, _)) => format!("{net}."),
        None => "10.214.0.".to_owned(),
    }
}

fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{path} has no VmRSS line"))
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}
