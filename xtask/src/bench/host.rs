//! The bench's hosts and the guards that put the machine back as it was.
//!
//! Everything here undoes itself on drop, on the error path as on success: network namespaces
//! are deleted, processes (with their process groups: nginx forks workers) are stopped, and the
//! kernel's BPF statistics are switched off again. Ctrl-C and SIGTERM only set a flag that every
//! wait checks, so the run unwinds through those drops instead of dying with things left behind.

use std::{
    ffi::OsStr,
    fs,
    os::{
        fd::{FromRawFd as _, OwnedFd},
        unix::process::{CommandExt as _, ExitStatusExt as _},
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::probe::CpuTime;
use crate::status;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: the one thing that is safe in a signal handler.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Turns SIGINT, SIGTERM and SIGHUP into a flag that [`check_interrupt`] reports.
pub fn install_interrupt_handler() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(signal, handler) };
    }
}

pub fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted; everything the bench started has been stopped and removed");
    }
    Ok(())
}

/// Sleeps, waking every 50 ms to notice an interrupt.
pub fn sleep(duration: Duration) -> Result<()> {
    let deadline = Instant::now() + duration;
    loop {
        check_interrupt()?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        thread::sleep(left.min(Duration::from_millis(50)));
    }
}

pub fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        sleep(Duration::from_millis(50))?;
    }
    Ok(())
}

/// A child process in a process group of its own. Dropping it stops the whole group.
///
/// Own group: the terminal's Ctrl-C reaches only the bench, which then stops its children in
/// order (the sensor must drain before the namespaces go); and a group can be signalled as a
/// whole, which nginx's master and workers need.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    exit: Option<ExitStatus>,
    /// The process's own CPU time, known once it has been reaped.
    pub usage: Option<CpuTime>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        let child = cmd
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            exit: None,
            usage: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Reaps the process if it has exited, keeping its status and resource usage. wait4(2)
    /// rather than `Child::try_wait`: it also reports the CPU time of a process that is gone.
    fn poll(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(exit) = self.exit {
            return Ok(Some(exit));
        }
        let pid = self.pid() as libc::pid_t;
        let mut status = 0;
        // SAFETY: plain-data out-parameters that live through the call.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let ret = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if ret < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("waiting for {}", self.name));
        }
        if ret == 0 {
            return Ok(None);
        }
        let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
        self.usage = Some(CpuTime {
            user_ns: ns(usage.ru_utime),
            sys_ns: ns(usage.ru_stime),
        });
        let exit = ExitStatus::from_raw(status);
        self.exit = Some(exit);
        Ok(Some(exit))
    }

    /// Whether the process still runs (false once it exited, also if it failed).
    pub fn running(&mut self) -> bool {
        self.child.is_some() && matches!(self.poll(), Ok(None))
    }

    /// Signals the group, if its leader has not been reaped yet (so the group id is still ours).
    fn signal_group(&mut self, signal: libc::c_int) {
        if self.running() {
            // SAFETY: plain kill(2) on the process group this guard created.
            unsafe { libc::kill(-(self.pid() as libc::pid_t), signal) };
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.child.is_none() {
                bail!("{} was not started", self.name);
            }
            if let Some(exit) = self.poll()? {
                return Ok(exit);
            }
            if Instant::now() > deadline {
                bail!("{} did not finish within {timeout:?}", self.name);
            }
            // No interrupt check here: a process being stopped must be waited for in any case.
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit (the sensor drains its ring then).
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.signal_group(libc::SIGTERM);
        self.wait(timeout)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.is_none() || self.exit.is_some() {
            return;
        }
        self.signal_group(libc::SIGTERM);
        if self.wait(Duration::from_secs(5)).is_err() {
            self.signal_group(libc::SIGKILL);
            let _ = self.wait(Duration::from_secs(5));
        }
    }
}

/// Where the load runs: a server namespace (nginx, the sensor or tcpdump) and a client namespace
/// (wrk) joined by a veth pair, or one namespace and its loopback.
pub struct Net {
    pub server_ns: String,
    pub client_ns: String,
    /// The interface the sensor and tcpdump watch, inside `server_ns`.
    pub iface: String,
    pub server_ip: String,
    pub loopback: bool,
    /// A container host: nginx in its own namespace behind a bridge, published on the server's
    /// address by a DNAT rule; the sensor captures every interface (its default).
    pub nat: bool,
    /// Where nginx runs and the address it listens on (the server's, or the container's).
    pub app_ns: String,
    pub app_ip: String,
    /// CPUs the server side (nginx, the capture) and the client (wrk) are pinned to, if pinned.
    pub pinning: Option<(String, String)>,
}

/// Fixed names, so a run killed with SIGKILL leaves nothing the next run cannot remove.
const SERVER_NS: &str = "apis-bench-srv";
const CLIENT_NS: &str = "apis-bench-cli";
/// Addresses exist only inside the two namespaces; neither has a route anywhere else.
const SERVER_V4: &str = "10.214.0.1";
const CLIENT_V4: &str = "10.214.0.2";
const APP_NS: &str = "apis-bench-app";
const BRIDGE_V4: &str = "10.215.0.1";
const APP_V4: &str = "10.215.0.2";

impl Net {
    pub fn create(loopback: bool, nat: bool) -> Result<Self> {
        for ns in [SERVER_NS, CLIENT_NS, APP_NS] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        status(Command::new("ip").args(["netns", "add", SERVER_NS]))?;
        let mut net = Self {
            server_ns: SERVER_NS.to_owned(),
            client_ns: SERVER_NS.to_owned(),
            iface: "lo".to_owned(),
            server_ip: "127.0.0.1".to_owned(),
            loopback,
            nat: false,
            app_ns: SERVER_NS.to_owned(),
            app_ip: "127.0.0.1".to_owned(),
            pinning: None,
        };
        status(Command::new("ip").args(["-n", SERVER_NS, "link", "set", "lo", "up"]))?;
        if loopback {
            return Ok(net);
        }
        status(Command::new("ip").args(["netns", "add", CLIENT_NS]))?;
        net.client_ns = CLIENT_NS.to_owned();
        net.iface = "vbs0".to_owned();
        net.server_ip = SERVER_V4.to_owned();
        net.app_ip = SERVER_V4.to_owned();
        status(Command::new("ip").args([
            "-n", SERVER_NS, "link", "add", "vbs0", "type", "veth", "peer", "name", "vbc0",
            "netns", CLIENT_NS,
        ]))?;
        for (ns, ifname, addr) in [
            (SERVER_NS, "vbs0", SERVER_V4),
            (CLIENT_NS, "vbc0", CLIENT_V4),
        ] {
            status(Command::new("ip").args([
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                ifname,
            ]))?;
            status(Command::new("ip").args(["-n", ns, "link", "set", ifname, "up"]))?;
            status(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]))?;
        }
        if nat {
            net.add_container()?;
        }
        Ok(net)
    }

    /// nginx's own namespace behind bridge `brb0` of the server's, and the DNAT rule that
    /// publishes its port 8080 on the server's address (Docker's `-p 8080:8080`).
    fn add_container(&mut self) -> Result<()> {
        let ip = |args: &[&str]| status(Command::new("ip").args(args));
        ip(&["netns", "add", APP_NS])?;
        self.nat = true;
        self.app_ns = APP_NS.to_owned();
        self.app_ip = APP_V4.to_owned();
        ip(&["-n", APP_NS, "link", "set", "lo", "up"])?;
        ip(&["-n", SERVER_NS, "link", "add", "brb0", "type", "bridge"])?;
        ip(&[
            "-n",
            SERVER_NS,
            "addr",
            "add",
            &format!("{BRIDGE_V4}/24"),
            "dev",
            "brb0",
        ])?;
        ip(&["-n", SERVER_NS, "link", "set", "brb0", "up"])?;
        ip(&[
            "-n", SERVER_NS, "link", "add", "vba0", "type", "veth", "peer", "name", "eth0",
            "netns", APP_NS,
        ])?;
        ip(&["-n", SERVER_NS, "link", "set", "vba0", "master", "brb0"])?;
        ip(&["-n", SERVER_NS, "link", "set", "vba0", "up"])?;
        ip(&[
            "-n",
            APP_NS,
            "addr",
            "add",
            &format!("{APP_V4}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", APP_NS, "link", "set", "eth0", "up"])?;
        ip(&["-n", APP_NS, "route", "add", "default", "via", BRIDGE_V4])?;
        // The client must reach the server's address only; replies return through the NAT.
        status(Command::new("ip").args([
            "netns",
            "exec",
            SERVER_NS,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]))?;
        status(Command::new("ip").args([
            "netns",
            "exec",
            SERVER_NS,
            "iptables",
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
            &format!("{APP_V4}:8080"),
        ]))
        .context("the DNAT rule of --nat (iptables with nf_tables)")?;
        Ok(())
    }

    /// A command run inside `ns` (`ip netns exec` execs it: the child's pid is the program's),
    /// on `cpus` if given (taskset execs too; the affinity is inherited by threads and forks).
    fn exec(ns: &str, cpus: Option<&str>, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = match cpus {
            Some(cpus) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", cpus, "ip"]);
                cmd
            }
            None => Command::new("ip"),
        };
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }

    /// A program on the server's side: nginx, the sensor, tcpdump.
    pub fn server(&self, program: impl AsRef<OsStr>) -> Command {
        let cpus = self.pinning.as_ref().map(|(server, _)| server.as_str());
        Self::exec(&self.server_ns, cpus, program)
    }

    /// The application: nginx (in the container's namespace with --nat), on the server's CPUs.
    pub fn app(&self, program: impl AsRef<OsStr>) -> Command {
        let cpus = self.pinning.as_ref().map(|(server, _)| server.as_str());
        Self::exec(&self.app_ns, cpus, program)
    }

    /// A program on the client's side: wrk, curl.
    pub fn client(&self, program: impl AsRef<OsStr>) -> Command {
        let cpus = self.pinning.as_ref().map(|(_, client)| client.as_str());
        Self::exec(&self.client_ns, cpus, program)
    }

    /// Pins the server's side to every CPU but the last and the client to the last: a server
    /// host whose client is elsewhere. Unpinned, wrk and nginx share the machine's CPUs with the
    /// capture, and the scheduler's placement of the three becomes part of what is measured.
    pub fn pin(&mut self) -> Result<()> {
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        if cpus < 2 {
            bail!("--pin needs at least two CPUs");
        }
        let server = if cpus == 2 {
            "0".to_owned()
        } else {
            format!("0-{}", cpus - 2)
        };
        self.pinning = Some((server, (cpus - 1).to_string()));
        Ok(())
    }

    pub fn describe(&self) -> String {
        let mut text = if self.nat {
            format!(
                "a container host: wrk in the client's namespace calls the server's address \
                 ({}); a DNAT rule sends it over bridge brb0 and veth vba0 to nginx in its own \
                 namespace ({}); the capture runs on every interface of the server's",
                self.server_ip, self.app_ip
            )
        } else if self.loopback {
            format!(
                "one network namespace, client and server on its loopback ({})",
                self.iface
            )
        } else {
            format!(
                "two network namespaces joined by a veth pair: wrk in the client's, nginx and the \
                 capture on the server's end ({})",
                self.iface
            )
        };
        if let Some((server, client)) = &self.pinning {
            text.push_str(&format!(
                "; server side on CPU {server}, wrk on CPU {client}"
            ));
        }
        text
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let mut names = vec![&self.server_ns];
        if self.client_ns != self.server_ns {
            names.push(&self.client_ns);
        }
        if self.app_ns != self.server_ns {
            names.push(&self.app_ns);
        }
        for ns in names {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Kernel BPF run-time statistics, on while this value lives.
///
/// BPF_ENABLE_STATS hands out a file descriptor and the kernel counts its holders: the
/// statistics go off again when the last one closes, also when this process is killed, and a
/// setting someone else made with `sysctl kernel.bpf_stats_enabled` is left alone.
pub struct BpfStats {
    _fd: OwnedFd,
}

impl BpfStats {
    pub fn enable() -> Result<Self> {
        const BPF_ENABLE_STATS: libc::c_long = 32;
        // union bpf_attr { struct { __u32 type; } enable_stats; ... }, BPF_STATS_RUN_TIME = 0.
        let attr = [0u64; 2];
        // SAFETY: bpf(2) reads `size` bytes of `attr`, which lives through the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_ptr(),
                size_of_val(&attr) as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .context("enabling BPF run-time statistics (BPF_ENABLE_STATS, Linux >= 5.8)");
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(Self {
            _fd: unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) },
        })
    }
}

/// nginx's processes' CPU time and scheduling, summed.
#[derive(Clone, Copy, Debug, Default)]
pub struct NginxUsage {
    pub cpu: CpuTime,
    /// Time runnable but waiting for a CPU.
    pub run_delay_ns: u64,
    /// Times a process was put on a CPU.
    pub timeslices: u64,
}

impl NginxUsage {
    pub fn since(self, earlier: Self) -> Self {
        Self {
            cpu: self.cpu.since(earlier.cpu),
            run_delay_ns: self.run_delay_ns.saturating_sub(earlier.run_delay_ns),
            timeslices: self.timeslices.saturating_sub(earlier.timeslices),
        }
    }
}

/// A real nginx (Debian's package) with a fixed number of worker processes.
pub struct Nginx {
    proc: Proc,
    pub access_log: Option<PathBuf>,
}

/// Static files and a small JSON API whose methods and statuses vary.
pub const OVERHEAD_PATH: &str = "/static/item.json";
/// Its size in bytes.
pub const OVERHEAD_BODY_LEN: usize = 512;

impl Nginx {
    /// `access_log`: every request logged as `METHOD URI STATUS`, unbuffered (the completeness
    /// phase reads it while nginx runs), or no log at all (the overhead phase: the fastest server
    /// makes the sensor's share look largest).
    pub fn start(net: &Net, dir: &Path, port: u16, workers: u32, log: bool) -> Result<Self> {
        Self::launch(net, dir, port, workers, log, false)
    }

    /// The same server over TLS (OpenSSL, a self-signed certificate made with `openssl`), no
    /// access log: the TLS phase's server.
    pub fn start_tls(net: &Net, dir: &Path, port: u16, workers: u32) -> Result<Self> {
        Self::launch(net, dir, port, workers, false, true)
    }

    fn launch(
        net: &Net,
        dir: &Path,
        port: u16,
        workers: u32,
        log: bool,
        tls: bool,
    ) -> Result<Self> {
        let _ = fs::remove_dir_all(dir);
        let root = dir.join("root");
        fs::create_dir_all(root.join("static"))
            .with_context(|| format!("creating {}", root.display()))?;
        // A typical small API response, and a page that spans several segments.
        let head = "{\"id\":1,\"name\":\"item\",\"description\":\"";
        let item = format!(
            "{head}{}\"}}\n",
            "x".repeat(OVERHEAD_BODY_LEN - head.len() - 3)
        );
        fs::write(root.join("static/item.json"), item)?;
        fs::write(root.join("static/small.txt"), "hello from nginx\n")?;
        fs::write(root.join("static/page.html"), "<p>page</p>\n".repeat(1365))?;
        let ssl = if tls {
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            status(
                Command::new("openssl")
                    .args([
                        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    ])
                    .args(["-subj", "/CN=apisessions-bench", "-keyout"])
                    .arg(&key)
                    .arg("-out")
                    .arg(&cert)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
            .context("making the TLS phase's certificate (openssl)")?;
            format!(
                " ssl;\n ssl_certificate {};\n ssl_certificate_key {}",
                cert.display(),
                key.display()
            )
        } else {
            String::new()
        };
        let access_log = log.then(|| dir.join("access.log"));
        let log_line = match &access_log {
            Some(path) => format!("access_log {} bench;", path.display()),
            None => "access_log off;".to_owned(),
        };
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes {workers};\nuser root;\n\
             pid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\nworker_rlimit_nofile 16384;\n\
             events {{ worker_connections 8192; }}\n\
             http {{\n log_format bench '$request_method $request_uri $status';\n {log_line}\n\
             log_not_found off;\n if_modified_since before;\n client_body_temp_path {dir}/body;\n proxy_temp_path {dir}/proxy;\n\
             fastcgi_temp_path {dir}/fastcgi;\n uwsgi_temp_path {dir}/uwsgi;\n scgi_temp_path {dir}/scgi;\n\
             server {{ listen {ip}:{port} backlog=4096{ssl}; root {root};\n\
               location /api/items/ {{ default_type application/json;\n\
                 if ($request_method = DELETE) {{ return 204; }}\n\
                 return 200 '{{\"id\":7,\"name\":\"item\",\"tags\":[\"a\",\"b\"]}}'; }}\n\
               location = /api/items {{ default_type application/json; return 201 '{{\"created\":true}}'; }}\n\
               location /static/ {{ }}\n\
             }}\n}}\n",
            dir = dir.display(),
            ip = net.app_ip,
            root = root.display(),
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf).with_context(|| format!("writing {}", conf_path.display()))?;
        let proc = Proc::spawn(
            "nginx",
            net.app("/usr/sbin/nginx")
                .arg("-c")
                .arg(&conf_path)
                .arg("-p")
                .arg(dir)
                .stdout(Stdio::null()),
        )?;
        let mut nginx = Self { proc, access_log };
        let scheme = if tls { "https" } else { "http" };
        let probe = format!("{scheme}://{}:{port}{OVERHEAD_PATH}", net.server_ip);
        wait_for("nginx to answer", Duration::from_secs(15), || {
            nginx.proc.running()
                && net
                    .client("curl")
                    // -k: the certificate is the self-signed one above.
                    .args(["-skf", "-o", "/dev/null", "--max-time", "1", &probe])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
        })
        .with_context(|| format!("nginx did not start; see {}/error.log", dir.display()))?;
        if !nginx.proc.running() {
            bail!("nginx exited; see {}/error.log", dir.display());
        }
        Ok(nginx)
    }

    /// CPU time of the master and its workers so far, and how long they waited for a CPU.
    /// The kernel's network processing for nginx's sockets (and the TC programs on its egress)
    /// runs partly in the workers' system time, so a capture's kernel-side cost shows up here
    /// too; the wait shows a capture that takes nginx's CPU away from it.
    pub fn usage(&self) -> Result<NginxUsage> {
        let master = self.proc.pid();
        let mut usage = NginxUsage::default();
        let mut add = |pid: u32| -> Result<()> {
            let cpu = CpuTime::of(pid)?;
            usage.cpu.user_ns += cpu.user_ns;
            usage.cpu.sys_ns += cpu.sys_ns;
            // nginx's processes are single-threaded: the process's schedstat is all of it.
            // "time on CPU, time waiting on a run queue, timeslices", in ns, ns, count.
            let path = format!("/proc/{pid}/schedstat");
            let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            let fields: Vec<u64> = text
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            usage.run_delay_ns += fields.get(1).copied().unwrap_or(0);
            usage.timeslices += fields.get(2).copied().unwrap_or(0);
            Ok(())
        };
        add(master)?;
        for entry in fs::read_dir("/proc").context("listing /proc")? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // Field 4 of /proc/PID/stat is the parent; a process gone meanwhile is skipped.
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if parent == Some(master) {
                // A worker that exits between the listing and the reading is not nginx's load.
                let _ = add(pid);
            }
        }
        Ok(usage)
    }

    /// Bytes in the access log now: lines after this offset belong to the next run.
    pub fn log_offset(&self) -> Result<u64> {
        match &self.access_log {
            Some(path) => Ok(fs::metadata(path).map(|m| m.len()).unwrap_or(0)),
            None => bail!("this nginx does not log"),
        }
    }
}
