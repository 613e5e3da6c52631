//! `apisessions doctor`: whether this host can run the sensor, one check per line with what to
//! do about it. Reads the host (kernel, /sys, /proc, the data directory); loads nothing.

use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use crate::{
    capture::{Interface, ports::listening_ports},
    config::{Config, ConfigError, Ports},
    store::{DEFAULT_MAP_SIZE, Store},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One finding: what was checked, what was found and, when it is not ok, what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub status: Status,
    pub what: &'static str,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn ok(what: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status: Status::Ok,
            what,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(what: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            status: Status::Warn,
            what,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(what: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            status: Status::Fail,
            what,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Capabilities by bit number (linux/capability.h).
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_NET_RAW: u32 = 13;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The effective capabilities of this process (`CapEff` of /proc/self/status).
pub fn effective_capabilities() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// Every check, in order: the kernel, what capture needs, the configuration, the interfaces and
/// ports, the data directory.
pub fn run(
    config: Result<&Config, &ConfigError>,
    config_path: Option<&Path>,
    data_dir: &Path,
) -> Vec<Check> {
    let mut checks = vec![kernel(), btf(), capabilities(), bpffs()];
    match (config, config_path) {
        (Ok(_), Some(path)) => checks.push(Check::ok(
            "configuration",
            format!("{} is valid", path.display()),
        )),
        (Ok(_), None) => checks.push(Check::ok(
            "configuration",
            "no file given: the defaults (see `apisessions run --help`)",
        )),
        (Err(e), _) => checks.push(Check::fail(
            "configuration",
            e.to_string(),
            "correct the file at the place named; `apisessions run --config FILE --check` checks it",
        )),
    }
    let defaults = Config::default();
    let config = config.unwrap_or(&defaults);
    checks.push(interfaces(config));
    checks.push(ports(config));
    checks.extend(data_directory(data_dir));
    checks
}

fn kernel_version() -> Option<(u32, u32)> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn kernel() -> Check {
    match kernel_version() {
        Some(version) if version >= (6, 6) => Check::ok(
            "kernel",
            format!(
                "Linux {}.{}: BPF ring buffers, TCX attach",
                version.0, version.1
            ),
        ),
        Some(version) if version >= (5, 8) => Check::ok(
            "kernel",
            format!(
                "Linux {}.{}: BPF ring buffers; clsact attach (TCX needs 6.6)",
                version.0, version.1
            ),
        ),
        Some(version) => Check::fail(
            "kernel",
            format!("Linux {}.{}", version.0, version.1),
            "the capture needs BPF ring buffers: Linux 5.8 or newer",
        ),
        None => Check::warn(
            "kernel",
            "the version could not be read from /proc/sys/kernel/osrelease",
            "check that /proc is mounted",
        ),
    }
}

fn btf() -> Check {
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        Check::ok("BTF", "/sys/kernel/btf/vmlinux is there")
    } else {
        Check::warn(
            "BTF",
            "/sys/kernel/btf/vmlinux is missing",
            "the capture does not need it today; a kernel built with CONFIG_DEBUG_INFO_BTF has it",
        )
    }
}

fn capabilities() -> Check {
    let Some(effective) = effective_capabilities() else {
        return Check::warn(
            "capabilities",
            "CapEff could not be read from /proc/self/status",
            "check that /proc is mounted",
        );
    };
    let has = |bit: u32| effective & (1u64 << bit) != 0;
    let admin = has(CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !admin {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !admin {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if missing.is_empty() {
        let mut detail =
            "CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN: programs can be loaded and attached"
                .to_owned();
        if !has(CAP_NET_RAW) {
            detail.push_str(" (without CAP_NET_RAW the socket-filter fallback is not available)");
        }
        if !admin {
            detail.push_str(
                " (without CAP_SYS_ADMIN at start TLS servers are not read: the kernel attaches \
                 the TLS probes, uprobes, only for it; the daemon gives it up once they are on)",
            );
        }
        Check::ok("capabilities", detail)
    } else {
        Check::fail(
            "capabilities",
            format!("missing {}", missing.join(", ")),
            "run as root, or grant them: setcap cap_bpf,cap_perfmon,cap_net_admin,cap_net_raw+ep \
             $(command -v apisessions) (the systemd unit does this with AmbientCapabilities)",
        )
    }
}

fn bpffs() -> Check {
    let mounted = fs::read_to_string("/proc/mounts").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split_whitespace().nth(2) == Some("bpf"))
    });
    if mounted {
        Check::ok("bpffs", "mounted")
    } else {
        Check::warn(
            "bpffs",
            "no bpf file system is mounted",
            "not needed by the capture; `mount -t bpf bpf /sys/fs/bpf` for tools that inspect it",
        )
    }
}

fn interfaces(config: &Config) -> Check {
    if config.capture.interfaces.is_empty() {
        let up = Interface::up(false);
        return if up.is_empty() {
            Check::fail(
                "interfaces",
                "no interface is up",
                "bring an interface up, or name one with --iface",
            )
        } else {
            let names: Vec<&str> = up.iter().map(|i| i.name.as_str()).collect();
            Check::ok(
                "interfaces",
                format!(
                    "all that are up, followed as they come and go: {}",
                    names.join(", ")
                ),
            )
        };
    }
    let mut problems = Vec::new();
    for name in &config.capture.interfaces {
        if let Err(e) = Interface::by_name(name) {
            problems.push(format!("{name}: {e}"));
        }
    }
    if problems.is_empty() {
        Check::ok(
            "interfaces",
            format!("{} found", config.capture.interfaces.join(", ")),
        )
    } else {
        Check::fail(
            "interfaces",
            problems.join("; "),
            "name interfaces that exist (`ip link`) in capture.interfaces or --iface",
        )
    }
}

fn ports(config: &Config) -> Check {
    let listening = listening_ports().map(|(ports, _)| ports);
    if config.capture.all_ports {
        return Check::ok("ports", "every TCP port (capture.all_ports)");
    }
    match (&config.capture.ports, listening) {
        (_, Err(e)) => Check::warn(
            "ports",
            format!("the listening sockets could not be read: {e}"),
            "check that /proc is mounted",
        ),
        (Ports::Auto, Ok(listening)) => {
            let shown: Vec<String> = listening
                .iter()
                .filter(|p| !config.capture.exclude_ports.contains(p))
                .take(20)
                .map(u16::to_string)
                .collect();
            if shown.is_empty() {
                Check::warn(
                    "ports",
                    "auto: nothing listens on TCP in this network namespace yet",
                    "start the API server, or list its ports in capture.ports (servers in other \
                     namespaces, such as containers, are not seen by auto)",
                )
            } else {
                Check::ok(
                    "ports",
                    format!(
                        "auto: listening here {}; those that speak HTTP are watched",
                        shown.join(", ")
                    ),
                )
            }
        }
        (Ports::List(list), Ok(listening)) => {
            let idle: Vec<String> = list
                .iter()
                .filter(|p| !listening.contains(p))
                .map(u16::to_string)
                .collect();
            if idle.is_empty() {
                Check::ok("ports", format!("{list:?}: something listens on each"))
            } else {
                Check::warn(
                    "ports",
                    format!("nothing listens on {} here", idle.join(", ")),
                    "fine for servers in containers or started later; otherwise check capture.ports",
                )
            }
        }
    }
}

fn data_directory(dir: &Path) -> Vec<Check> {
    let mut checks = Vec::new();
    let shown = dir.display();
    let meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        Err(_) => {
            let parent = existing_parent(dir);
            let writable = parent
                .as_deref()
                .is_some_and(|p| fs::metadata(p).is_ok_and(|m| !m.permissions().readonly()));
            checks.push(if writable {
                Check::ok(
                    "data directory",
                    format!("{shown} will be created at start (mode 0700)"),
                )
            } else {
                Check::fail(
                    "data directory",
                    format!("{shown} does not exist and cannot be created"),
                    "create it (mode 0700) or choose another with --data-dir",
                )
            });
            return checks;
        }
    };
    if !meta.is_dir() {
        checks.push(Check::fail(
            "data directory",
            format!("{shown} is not a directory"),
            "choose a directory with --data-dir",
        ));
        return checks;
    }
    let mode = meta.permissions().mode() & 0o777;
    checks.push(if mode & 0o077 == 0 {
        Check::ok(
            "data directory",
            format!("{shown}: mode {mode:o}, owner uid {}", meta.uid()),
        )
    } else {
        Check::warn(
            "data directory",
            format!("{shown}: mode {mode:o} lets other users read the sessions"),
            format!("chmod 700 {shown}"),
        )
    });
    match free_bytes(dir) {
        Some(free) if free < DEFAULT_MAP_SIZE as u64 / 8 => checks.push(Check::warn(
            "free space",
            format!("{} MiB free in {shown}", free >> 20),
            "the store stops writing (and counts the loss) when the disk is full: free space or \
             shorten storage.retention",
        )),
        Some(free) => checks.push(Check::ok(
            "free space",
            format!(
                "{} MiB free; the store maps up to {} MiB",
                free >> 20,
                DEFAULT_MAP_SIZE >> 20
            ),
        )),
        None => {}
    }
    if Store::dir(dir).join("data.mdb").exists() {
        checks.push(match Store::open_read_only(dir) {
            Ok(store) => match store.counts() {
                Ok((sessions, exchanges)) => Check::ok(
                    "store",
                    format!("{sessions} sessions, {exchanges} exchanges"),
                ),
                Err(e) => Check::fail(
                    "store",
                    e.to_string(),
                    "see the error; `apisessions prune` or a new data directory",
                ),
            },
            Err(e) => Check::fail(
                "store",
                e.to_string(),
                "a store of another format version: move it aside to start anew",
            ),
        });
    }
    checks
}

fn existing_parent(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .skip(1)
        .find(|p| p.exists())
        .map(Path::to_path_buf)
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs is plain old data, all zeroes a valid value; statvfs gets a valid
    // NUL-terminated path and a struct to fill.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let ret = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    (ret == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_configuration_is_a_failure_with_its_place() {
        let err =
            Config::parse("[capture]\nports = \"none\"\n", Path::new("bad.toml")).unwrap_err();
        let checks = run(
            Err(&err),
            Some(Path::new("bad.toml")),
            Path::new("/nonexistent/x"),
        );
        let config = checks.iter().find(|c| c.what == "configuration").unwrap();
        assert_eq!(config.status, Status::Fail);
        assert!(
            config.detail.starts_with("bad.toml:2:"),
            "{}",
            config.detail
        );
    }

    #[test]
    fn a_world_readable_data_directory_is_a_warning() {
        let dir = std::env::temp_dir().join(format!("apis-doctor-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let checks = data_directory(&dir);
        assert_eq!(checks[0].status, Status::Warn, "{checks:?}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(data_directory(&dir)[0].status, Status::Ok);
        fs::remove_dir_all(&dir).unwrap();
    }
}
