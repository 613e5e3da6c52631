//! Least privilege: a daemon started as root continues as an unprivileged user with only the
//! capabilities that capture needs from then on.
//!
//! Kept: `CAP_BPF` and `CAP_PERFMON` (the kernel counters and the watched-ports map are read
//! and written through bpf(2); programs are attached to interfaces that appear later),
//! `CAP_NET_ADMIN` (attaching TC programs, conntrack over netlink), `CAP_NET_RAW` (the
//! socket-filter fallback) and `CAP_SYS_PTRACE` (reading other processes' network namespace
//! for container identity). Everything else is dropped, from the bounding set too, so that not
//! even an exec could get it back: no `CAP_SYS_ADMIN`, no `CAP_DAC_OVERRIDE`, no `CAP_SETUID`.
//! `CAP_SYS_ADMIN` serves only the start, before the drop: the kernel attaches the TLS probes
//! (uprobes) only for it ([`START_ONLY`]). A daemon started without root (the packaged service,
//! granted `KEPT` and `START_ONLY`) gives up what is beyond `KEPT` at the same point.
//!
//! Capabilities belong to threads, and user ids are changed for all threads at once by glibc.
//! So the drop happens before the daemon starts any thread, and `SECBIT_NO_SETUID_FIXUP` keeps
//! the kernel from clearing the kept capabilities as the user ids stop being 0. Every thread
//! started afterwards inherits the reduced set.

use std::{
    collections::HashSet,
    fs, io,
    os::unix::fs::{PermissionsExt as _, chown},
    path::Path,
};

use caps::{CapSet, Capability};
use nix::unistd::{Gid, Uid, User, setgid, setgroups, setuid};

/// The capabilities kept after the drop.
pub const KEPT: &[Capability] = &[
    Capability::CAP_BPF,
    Capability::CAP_PERFMON,
    Capability::CAP_NET_ADMIN,
    Capability::CAP_NET_RAW,
    Capability::CAP_SYS_PTRACE,
];

/// Capabilities the daemon uses only while it starts, before it captures: CAP_SYS_ADMIN, for
/// the kernel to attach the TLS probes (uprobes; CAP_PERFMON is not enough). The packaged
/// service grants them beside [`KEPT`]; [`drop_to`] gives them up like everything else.
pub const START_ONLY: &[Capability] = &[Capability::CAP_SYS_ADMIN];

/// The user a root daemon continues as when none is named, if it exists.
pub const DEFAULT_USER: &str = "apisessions";

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("no user '{0}' on this host (create it, or choose another with --user)")]
    NoSuchUser(String),
    #[error("looking up the user '{name}'")]
    Lookup {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("giving {path} to the user '{user}'")]
    Chown {
        path: String,
        user: String,
        #[source]
        source: io::Error,
    },
    #[error("changing to the user '{user}' ({step})")]
    Switch {
        user: String,
        step: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("dropping capabilities ({step})")]
    Capabilities {
        step: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
}

/// Who the daemon continues as: the named user, else [`DEFAULT_USER`] when it exists, else
/// nobody (it stays as it was). `root` keeps root.
pub fn target_user(named: Option<&str>) -> Result<Option<User>, PrivilegeError> {
    let lookup = |name: &str| {
        User::from_name(name).map_err(|source| PrivilegeError::Lookup {
            name: name.to_owned(),
            source,
        })
    };
    match named {
        Some("root") => Ok(None),
        Some(name) => lookup(name)?
            .map(Some)
            .ok_or_else(|| PrivilegeError::NoSuchUser(name.to_owned())),
        None => lookup(DEFAULT_USER),
    }
}

/// Gives `data_dir` (mode 0700) and everything in it to `user`, then continues as `user` with
/// only [`KEPT`]. Must run before the process starts a second thread. A process that is not
/// root (the packaged service, started as its user) keeps its user and gives up every
/// capability beyond [`KEPT`] ([`START_ONLY`]'s included).
pub fn drop_to(user: &User, data_dir: &Path) -> Result<(), PrivilegeError> {
    if !Uid::effective().is_root() {
        return shed_beyond_kept();
    }
    give(data_dir, user)?;
    // With NO_SETUID_FIXUP the capabilities stay as they are when the user ids change; the
    // LOCKED bits keep it so.
    const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
    const SECBIT_NO_SETUID_FIXUP_LOCKED: libc::c_ulong = 1 << 3;
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_SECUREBITS,
            SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED,
            0,
            0,
            0,
        )
    };
    if ret != 0 {
        return Err(PrivilegeError::Switch {
            user: user.name.clone(),
            step: "securebits",
            source: nix::Error::last(),
        });
    }
    let switch = |step, result: nix::Result<()>| {
        result.map_err(|source| PrivilegeError::Switch {
            user: user.name.clone(),
            step,
            source,
        })
    };
    switch("groups", setgroups(&[user.gid]))?;
    switch("gid", setgid(user.gid))?;
    switch("uid", setuid(user.uid))?;
    let kept: HashSet<Capability> = KEPT.iter().copied().collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes next.
    for capability in caps::all() {
        if !kept.contains(&capability) {
            at_step(
                "bounding set",
                caps::drop(None, CapSet::Bounding, capability),
            )?;
        }
    }
    keep_only(&kept)?;
    log::info!(
        "running as {} (uid {}, gid {}) with {}",
        user.name,
        user.uid,
        user.gid,
        KEPT.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Leaves only the capabilities of [`KEPT`] this process has in its effective and permitted
/// sets, and none inheritable (the ambient set empties with them). Without CAP_SETPCAP the
/// bounding set stays, which grants nothing by itself: the service has `NoNewPrivileges`.
fn shed_beyond_kept() -> Result<(), PrivilegeError> {
    let permitted =
        caps::read(None, CapSet::Permitted).map_err(|source| PrivilegeError::Capabilities {
            step: "reading the permitted set",
            source,
        })?;
    let kept: HashSet<Capability> = KEPT
        .iter()
        .copied()
        .filter(|c| permitted.contains(c))
        .collect();
    let shed: Vec<String> = permitted.difference(&kept).map(|c| c.to_string()).collect();
    if shed.is_empty() {
        return Ok(());
    }
    keep_only(&kept)?;
    log::info!("gave up {} after the start", shed.join(", "));
    Ok(())
}

/// Leaves `kept` (a subset of the permitted set) as the effective and permitted sets, and
/// nothing inheritable: the ambient set empties with it.
fn keep_only(kept: &HashSet<Capability>) -> Result<(), PrivilegeError> {
    at_step("inheritable", caps::clear(None, CapSet::Inheritable))?;
    // Effective before permitted: it may never exceed the permitted set.
    at_step("effective", caps::set(None, CapSet::Effective, kept))?;
    at_step("permitted", caps::set(None, CapSet::Permitted, kept))
}

/// A capability call's error, with the step it failed at.
fn at_step(
    step: &'static str,
    result: Result<(), caps::errors::CapsError>,
) -> Result<(), PrivilegeError> {
    result.map_err(|source| PrivilegeError::Capabilities { step, source })
}

/// `dir` (made 0700) and what it holds to `user`.
fn give(dir: &Path, user: &User) -> Result<(), PrivilegeError> {
    let fail = |path: &Path, source| PrivilegeError::Chown {
        path: path.display().to_string(),
        user: user.name.clone(),
        source,
    };
    let (uid, gid) = (Some(Uid::as_raw(user.uid)), Some(Gid::as_raw(user.gid)));
    chown(dir, uid, gid).map_err(|e| fail(dir, e))?;
    if dir.is_dir() {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| fail(dir, e))?;
        for entry in fs::read_dir(dir).map_err(|e| fail(dir, e))? {
            let path = entry.map_err(|e| fail(dir, e))?.path();
            if path.is_symlink() {
                continue;
            }
            if path.is_dir() {
                give(&path, user)?;
            } else {
                chown(&path, uid, gid).map_err(|e| fail(&path, e))?;
            }
        }
    }
    Ok(())
}
