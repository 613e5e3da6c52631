//! The Debian package (`cargo xtask deb`; `cargo xtask test` builds one for these tests and names
//! it in `APISESSIONS_TEST_DEB`): what it holds, its unit as `systemd-analyze verify` reads it,
//! and a real `dpkg` install, remove and purge on this machine's own root through an overlay in a
//! private mount namespace. There the unit's command runs as the unit's user with the unit's
//! capabilities (through `setpriv`: these machines do not boot systemd) and captures. The
//! overlay lives on a tmpfs of that namespace: nothing the test does stays on the machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use apisessions::privilege::{KEPT, START_ONLY};
use common::sh;

/// The package under test: `$APISESSIONS_TEST_DEB`, else the newest in target/debian/.
fn package() -> PathBuf {
    if let Some(deb) = env::var_os("APISESSIONS_TEST_DEB") {
        return PathBuf::from(deb);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian");
    fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!(
                "no package: run `cargo xtask deb` (or the suite through `cargo xtask test`, \
                 which builds one and sets APISESSIONS_TEST_DEB)"
            )
        })
}

fn tempdir(name: &str) -> PathBuf {
    let dir = env::temp_dir().join(format!("apis-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The unit's `[Service]` settings (the last value of each key).
fn unit_settings(unit: &str) -> BTreeMap<String, String> {
    unit.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn the_package_holds_the_binary_the_unit_and_the_configuration() {
    let deb = package();
    let info = sh("dpkg-deb", &["--info", deb.to_str().unwrap()]);
    assert!(info.contains("Package: apisessions"), "{info}");
    assert!(
        info.lines()
            .any(|l| l.trim_start().starts_with("Depends:") && l.contains("adduser")),
        "{info}"
    );
    let listing = sh("dpkg-deb", &["--contents", deb.to_str().unwrap()]);
    let files: BTreeMap<String, String> = listing
        .lines()
        .filter_map(|l| {
            let mode = l.split_whitespace().next()?;
            let path = l.split_whitespace().last()?.trim_start_matches("./");
            Some((path.to_owned(), mode.to_owned()))
        })
        .collect();
    for (path, mode) in [
        ("usr/bin/apisessions", "-rwxr-xr-x"),
        ("usr/lib/systemd/system/apisessions.service", "-rw-r--r--"),
        ("etc/apisessions/config.toml", "-rw-r--r--"),
        ("usr/share/doc/apisessions/copyright", "-rw-r--r--"),
    ] {
        assert_eq!(files.get(path).map(String::as_str), Some(mode), "{listing}");
    }

    let control = tempdir("deb-control");
    sh(
        "dpkg-deb",
        &[
            "--control",
            deb.to_str().unwrap(),
            control.to_str().unwrap(),
        ],
    );
    let read = |name: &str| fs::read_to_string(control.join(name)).unwrap();
    assert_eq!(read("conffiles").trim(), "/etc/apisessions/config.toml");
    let postinst = read("postinst");
    for needle in [
        "adduser --system",
        "install -d -o apisessions -g apisessions -m 0700 /var/lib/apisessions",
        "deb-systemd-helper enable apisessions.service",
        "deb-systemd-invoke $_dh_action apisessions.service",
    ] {
        assert!(
            postinst.contains(needle),
            "postinst lacks {needle}: {postinst}"
        );
    }
    assert!(!postinst.contains("#DEBHELPER#"), "{postinst}");
    assert!(read("prerm").contains("deb-systemd-invoke stop apisessions.service"));
    let postrm = read("postrm");
    assert!(postrm.contains("deb-systemd-helper purge apisessions.service"));
    assert!(postrm.contains("rm -rf /var/lib/apisessions"));
    let _ = fs::remove_dir_all(&control);
}

#[test]
fn the_unit_verifies_and_keeps_what_the_privilege_drop_keeps() {
    let deb = package();
    let root = tempdir("deb-root");
    sh(
        "dpkg-deb",
        &["-x", deb.to_str().unwrap(), root.to_str().unwrap()],
    );
    let unit = fs::read_to_string(root.join("usr/lib/systemd/system/apisessions.service")).unwrap();

    // verify stops at a command that is not there: point it at the extracted binary.
    let verify_dir = root.join("verify");
    fs::create_dir_all(&verify_dir).unwrap();
    let copy = verify_dir.join("apisessions.service");
    let binary = root.join("usr/bin/apisessions");
    fs::write(
        &copy,
        unit.replace("/usr/bin/apisessions", binary.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (package systemd)");
    // verify exits 0 on "Unknown key ... ignoring": any line it prints is a finding.
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let settings = unit_settings(&unit);
    let get = |key: &str| settings.get(key).map(String::as_str).unwrap_or_default();
    for (key, value) in [
        ("User", "apisessions"),
        ("Group", "apisessions"),
        ("StateDirectory", "apisessions"),
        ("StateDirectoryMode", "0700"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("Restart", "on-failure"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        assert_eq!(get(key), value, "{key}");
    }
    let exec = get("ExecStart");
    assert!(
        exec.starts_with("/usr/bin/apisessions run --config /etc/apisessions/config.toml"),
        "{exec}"
    );
    // The same set `run --user` keeps when root starts it (privilege::KEPT), and what the
    // start alone uses (privilege::START_ONLY: attaching the TLS probes), no more.
    let granted: BTreeSet<String> = KEPT
        .iter()
        .chain(START_ONLY)
        .map(|c| c.to_string())
        .collect();
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let listed: BTreeSet<String> = get(key).split_whitespace().map(str::to_owned).collect();
        assert_eq!(listed, granted, "{key}");
    }

    // The packaged configuration is one the daemon accepts.
    let config = root.join("etc/apisessions/config.toml");
    let out = Command::new(&binary)
        .args(["run", "--check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = fs::remove_dir_all(&root);
}

/// Runs in a private mount namespace (`unshare -m`): an overlay of `/` on a tmpfs, dpkg inside
/// it (chroot), the unit's command as the unit's user in the network namespace `$NS`, then
/// remove and purge. Prints `key=value` lines for the test to check.
const THROWAWAY_ROOT: &str = r#"
set -eu
mount -t tmpfs tmpfs "$T"
mkdir "$T/upper" "$T/work" "$T/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$T/upper,workdir=$T/work" "$T/root"
R="$T/root"
for d in proc dev sys; do mount --rbind "/$d" "$R/$d"; done
cp "$DEB" "$R/tmp/apisessions.deb"
in_root() { chroot "$R" "$@"; }

in_root dpkg -i /tmp/apisessions.deb >"$T/dpkg.log" 2>&1 || { cat "$T/dpkg.log"; exit 1; }
echo "user=$(in_root getent passwd apisessions | cut -d: -f1,6,7)"
echo "data_dir=$(in_root stat -c '%U:%G:%a' /var/lib/apisessions)"
echo "config=$(in_root stat -c '%U:%a' /etc/apisessions/config.toml)"
echo "enabled=$(in_root test -L /etc/systemd/system/multi-user.target.wants/apisessions.service && echo yes || echo no)"

# The unit's command, user and capabilities, as systemd would start it.
unit="$R/usr/lib/systemd/system/apisessions.service"
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
user=$(sed -n 's/^User=//p' "$unit")
group=$(sed -n 's/^Group=//p' "$unit")
caps=$(sed -n 's/^AmbientCapabilities=//p' "$unit" | tr 'A-Z' 'a-z' | sed 's/cap_/+/g; s/ /,/g')
ip netns exec "$NS" chroot "$R" setpriv --reuid "$user" --regid "$group" --clear-groups \
  --inh-caps "-all,$caps" --ambient-caps "-all,$caps" --bounding-set "-all,$caps" --no-new-privs \
  $exec_start >"$T/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do
  grep -q '"running": *true' "$R/var/lib/apisessions/stats.json" 2>/dev/null && break
  sleep 0.2
done
for i in $(seq 10); do ip netns exec "$NS" curl -s -o /dev/null -A deb-test/1 "http://127.0.0.1:8080/deb-$i"; done
sleep 2
pid=$(pgrep -P "$daemon" || echo "$daemon")
echo "status_uid=$(awk '/^Uid:/ {print $2 "/" $3 "/" $4 "/" $5}' /proc/$pid/status)"
echo "status_capeff=$(awk '/^CapEff:/ {print $2}' /proc/$pid/status)"
kill -TERM "$pid" 2>/dev/null || true
wait "$daemon" || true
echo "captured=$(in_root /usr/bin/apisessions export --format ndjson --data-dir /var/lib/apisessions | grep -c deb-test/1 || true)"
echo "daemon_log=$(tr '\n' '|' <"$T/daemon.log" | cut -c1-400)"
echo "tls_probed=$(grep -q 'TLS: probes on' "$T/daemon.log" && echo yes || echo no)"

in_root dpkg -r apisessions >"$T/dpkg.log" 2>&1 || { cat "$T/dpkg.log"; exit 1; }
echo "removed_binary=$(in_root test -e /usr/bin/apisessions && echo present || echo gone)"
echo "removed_config=$(in_root test -e /etc/apisessions/config.toml && echo kept || echo gone)"
echo "removed_data=$(in_root test -e /var/lib/apisessions/stats.json && echo kept || echo gone)"
in_root dpkg -P apisessions >"$T/dpkg.log" 2>&1 || { cat "$T/dpkg.log"; exit 1; }
echo "purged_config=$(in_root test -e /etc/apisessions && echo kept || echo gone)"
echo "purged_data=$(in_root test -e /var/lib/apisessions && echo kept || echo gone)"
echo "purged_user=$(in_root getent passwd apisessions >/dev/null && echo kept || echo gone)"
echo "purged_link=$(in_root test -L /etc/systemd/system/multi-user.target.wants/apisessions.service && echo kept || echo gone)"
"#;

#[test]
fn dpkg_installs_runs_removes_and_purges_in_a_throwaway_root() {
    let deb = package();
    let host_has_user = || {
        Command::new("getent")
            .args(["passwd", "apisessions"])
            .output()
            .unwrap()
            .status
            .success()
    };
    let had_user = host_has_user();
    let dir = tempdir("deb-install");
    let net = common::TestNet::new();
    // An HTTP server on the loopback of the daemon's namespace (the packaged configuration
    // finds listening ports by itself).
    let server = common::TestNet::command(&net.server_ns, "python3")
        .args(["-m", "http.server", "8080", "--bind", "127.0.0.1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let up = common::in_namespace(&net.server_ns, || {
        common::wait_until(std::time::Duration::from_secs(10), || {
            std::net::TcpStream::connect("127.0.0.1:8080").is_ok()
        })
    });
    assert!(up, "the test server listens");
    // Only loopback in the daemon's namespace: take the veth away.
    sh(
        "ip",
        &["-n", &net.server_ns, "link", "set", &net.server_if, "down"],
    );

    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            THROWAWAY_ROOT,
        ])
        .env("T", &dir)
        .env("DEB", &deb)
        .env("NS", &net.server_ns)
        .output()
        .unwrap();
    let mut server = server;
    let _ = server.kill();
    let _ = server.wait();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: BTreeMap<&str, &str> = printed.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |key: &str| *found.get(key).unwrap_or(&"");

    assert_eq!(
        get("user"),
        "apisessions:/var/lib/apisessions:/usr/sbin/nologin",
        "{printed}"
    );
    assert_eq!(get("data_dir"), "apisessions:apisessions:700", "{printed}");
    assert_eq!(get("config"), "root:644", "{printed}");
    assert_eq!(get("enabled"), "yes", "{printed}");

    // Under the unit's settings: not root, exactly the kept capabilities once started (the
    // start-only ones given up), the TLS probes attached, and capturing.
    let uids: Vec<&str> = get("status_uid").split('/').collect();
    assert!(
        uids.len() == 4 && uids.iter().all(|u| !u.is_empty() && *u != "0"),
        "{printed}"
    );
    let want: u64 = KEPT.iter().map(|c| 1u64 << c.index()).sum();
    assert_eq!(
        u64::from_str_radix(get("status_capeff"), 16).ok(),
        Some(want),
        "{printed}"
    );
    assert_eq!(get("captured"), "10", "{printed}");
    assert_eq!(get("tls_probed"), "yes", "{printed}");

    for (key, value) in [
        ("removed_binary", "gone"),
        ("removed_config", "kept"),
        ("removed_data", "kept"),
        ("purged_config", "gone"),
        ("purged_data", "gone"),
        ("purged_user", "gone"),
        ("purged_link", "gone"),
    ] {
        assert_eq!(get(key), value, "{key}: {printed}");
    }
    // The overlay went with the namespace: the machine's own users are as they were.
    assert_eq!(host_has_user(), had_user, "the host's users changed");
    let _ = fs::remove_dir_all(&dir);
}
