//! `cargo xtask`: set-up, build, run, demo and test for apisessions.
//!
//! Every step says what it does only when it does something; a step that cannot be done ends
//! with one sentence naming what is missing and how to get it.

use std::{
    env,
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod bench;
mod compare_import;
mod demo;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Project tasks for apisessions")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need: nightly rust-src, bpf-linker, bpffs, and (as root)
    /// the Debian packages the tests use. Idempotent and quiet when all is there.
    Setup,
    /// Build the eBPF programs and the `apisessions` binary.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build, then run `apisessions` with the given arguments.
    Run {
        #[arg(long)]
        release: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, then capture a demo API and its simulated users in a private network namespace.
    Demo {
        /// End by serving the web console over what was captured (http://127.0.0.1:7878/)
        /// until Ctrl-C.
        #[arg(long)]
        ui: bool,
    },
    /// Build the Debian package (a release build, then cargo-deb): target/debian/*.deb with the
    /// binary, the hardened systemd unit, /etc/apisessions/config.toml and the maintainer
    /// scripts (sensor/debian/).
    Deb,
    /// Run every cargo-fuzz target for a while (installs cargo-fuzz if missing).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (default: all of them).
        target: Option<String>,
    },
    /// Measure the sensor: overhead against no capture and tcpdump, completeness against
    /// nginx's log, offline import against tshark (report in target/bench/, results appended to
    /// docs/BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Check that `apisessions import --ndjson` prints the same bytes as an earlier build's, on
    /// the bench's generated capture and on every capture in tests/data.
    CompareImport(compare_import::CompareImportArgs),
    /// Set up, then run the whole test suite (needs root: it loads eBPF programs) and the lints.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Debian packages the test suite and the demo use.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("nginx", "/usr/sbin/nginx"),
    ("iproute2", "/usr/sbin/ip"),
    ("curl", "/usr/bin/curl"),
    // The TLS test's self-signed certificate (tests/tls_live.rs); libssl3 comes with nginx.
    ("openssl", "/usr/bin/openssl"),
    ("python3", "/usr/bin/python3"),
    ("tcpdump", "/usr/bin/tcpdump"),
    ("tshark", "/usr/bin/tshark"),
    // nghttp: concurrent HTTP/2 streams on one connection (tests/http2_live.rs; curl 7.88
    // fails multiplexing h2c with prior knowledge).
    ("nghttp2-client", "/usr/bin/nghttp"),
    // editcap: the import tests cut captures into parts.
    ("wireshark-common", "/usr/bin/editcap"),
    // DNAT rules of the container-host tests (iptables over nf_tables; ip6tables comes with it).
    ("iptables", "/usr/sbin/iptables"),
    // Real browsers in the sessions tests (headless, one profile per user).
    ("chromium", "/usr/bin/chromium"),
    // WebDriver for chromium: the console's browser test (tests/console_browser.rs).
    ("chromium-driver", "/usr/bin/chromedriver"),
    // The frameworks of tests/frameworks_live.rs: PHP's built-in server, Rails on WEBrick, a
    // venv for the PyPI frameworks and npm for the Express ones (packages without a binary are
    // checked by their documentation directory).
    ("php-cli", "/usr/bin/php"),
    ("ruby-rails", "/usr/bin/rails"),
    ("ruby-webrick", "/usr/share/doc/ruby-webrick"),
    ("python3-venv", "/usr/share/doc/python3-venv"),
    ("nodejs", "/usr/bin/node"),
    ("npm", "/usr/bin/npm"),
    // The central-store tests run a private server (tests/common/clickhouse.rs); 18.16 here.
    ("clickhouse-server", "/usr/sbin/clickhouse-server"),
    // The package test (tests/deb_package.rs): `systemd-analyze verify` of the unit, and the
    // maintainer scripts' adduser and deb-systemd-helper inside its throwaway root.
    ("systemd", "/usr/bin/systemd-analyze"),
    ("adduser", "/usr/sbin/adduser"),
    ("init-system-helpers", "/usr/bin/deb-systemd-helper"),
];

/// PyPI and npm packages of tests/frameworks_live.rs, installed into [`frameworks_dir`] once and
/// reused for as long as these lists stay the same. sqlmap (pinned: tests/data/attacks/sqli.txt
/// is generated from its payload files) is the attack tool of the attack-detection tests.
/// Stoplight's Prism is the spec-driven mock server of the inventory's public-spec test
/// (tests/inventory_live.rs). grpcio serves and calls gRPC over h2c in tests/http2_live.rs.
const PYPI_PACKAGES: &[&str] = &[
    "Django~=5.2.0",
    "Flask~=3.1.0",
    "Flask-Login~=0.6.3",
    "sqlmap==1.10.10",
    "grpcio~=1.85.0",
];
const NPM_PACKAGES: &[&str] = &[
    "express@4",
    "express-session@1",
    "cookie-session@2",
    "@stoplight/prism-cli@5",
];

/// cargo-deb, which builds the Debian package (`cargo xtask deb`, the package test): pinned, so
/// the package's layout and maintainer-script snippets change only when this does.
const CARGO_DEB_VERSION: &str = "3.8.0";

/// The nightly that is known to work, for machines without any nightly.
const KNOWN_GOOD_NIGHTLY: &str = "nightly-2026-05-19";

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup(),
        Task::Build { release } => setup().and_then(|()| build(release)),
        Task::Run { release, args } => setup().and_then(|()| run(release, &args)),
        Task::Demo { ui } => setup().and_then(|()| demo::run(ui)),
        Task::Deb => setup().and_then(|()| package(Profile::Release).map(|_| ())),
        Task::Fuzz { seconds, target } => setup().and_then(|()| fuzz(seconds, target.as_deref())),
        Task::Test { args } => setup().and_then(|()| test(&args)),
        Task::Bench(args) => setup().and_then(|()| bench::run(&bench::Options::new(args)?)),
        Task::CompareImport(args) => setup().and_then(|()| compare_import::run(&args)),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Runs a command, failing with its name and status.
pub(crate) fn status(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Runs a command and returns its stdout, failing with its stderr.
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn setup() -> Result<()> {
    let toolchain = ensure_nightly()?;
    // Every cargo this process starts builds the eBPF programs with that toolchain (sensor/build.rs).
    // SAFETY: single-threaded at this point; nothing else reads the environment concurrently.
    unsafe { env::set_var(TOOLCHAIN_ENV, &toolchain) };
    ensure_bpf_linker(&toolchain)?;
    ensure_bpffs()?;
    ensure_packages(TEST_PACKAGES)?;
    ensure_framework_packages()?;
    ensure_cargo_deb()
}

/// Installs cargo-deb [`CARGO_DEB_VERSION`] unless that version is there.
fn ensure_cargo_deb() -> Result<()> {
    let installed = Command::new("cargo")
        .args(["deb", "--version"])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .any(|word| word == CARGO_DEB_VERSION)
        });
    if installed {
        return Ok(());
    }
    println!("xtask: installing cargo-deb {CARGO_DEB_VERSION} (builds the Debian package)");
    status(Command::new("cargo").args([
        "install",
        "cargo-deb",
        "--locked",
        "--version",
        CARGO_DEB_VERSION,
    ]))
    .context("cargo-deb could not be installed; it needs crates.io access")
}

/// Which build goes into a package.
#[derive(Clone, Copy)]
enum Profile {
    /// `cargo xtask deb`: what users install.
    Release,
    /// The package test's: the debug binary `cargo test` builds anyway (cargo-deb warns that it
    /// is meant for releases), fast compression; the unit, the configuration and the scripts
    /// are the same.
    Test,
}

/// Where the test suite finds the package built for it (tests/deb_package.rs reads it).
const TEST_PACKAGE_ENV: &str = "APISESSIONS_TEST_DEB";

/// Builds the binary, then the package with cargo-deb; returns the .deb's path.
fn package(profile: Profile) -> Result<PathBuf> {
    let root = workspace_root();
    let (release, out) = match profile {
        Profile::Release => (true, root.join("target/debian")),
        Profile::Test => (false, root.join("target/debian-test")),
    };
    build(release)?;
    let mut cmd = Command::new("cargo");
    cmd.args(["deb", "--package", "apisessions", "--no-build", "--output"])
        .arg(&out)
        .current_dir(&root);
    if !release {
        cmd.args(["--profile", "dev", "--fast"]);
    }
    let printed = output(&mut cmd)?;
    let deb = printed
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("cargo deb named no package: {printed}"))?;
    if release {
        println!("xtask: {}", deb.display());
    }
    Ok(deb)
}

/// Where the framework tests find their PyPI venv (`venv/`) and npm modules (`node/`).
fn frameworks_dir() -> PathBuf {
    workspace_root().join("target/frameworks")
}

/// Installs [`PYPI_PACKAGES`] into a venv and [`NPM_PACKAGES`] with npm, unless a stamp file says
/// that these very lists are installed already.
fn ensure_framework_packages() -> Result<()> {
    let dir = frameworks_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let installed = |stamp: &Path, want: &str| fs::read_to_string(stamp).is_ok_and(|s| s == want);

    let (venv, stamp, want) = (
        dir.join("venv"),
        dir.join("pypi.installed"),
        PYPI_PACKAGES.join("\n"),
    );
    if !installed(&stamp, &want) {
        println!(
            "xtask: installing {} into {}",
            PYPI_PACKAGES.join(" "),
            venv.display()
        );
        // Debian's python3 (the one the tests' other scripts use), not whatever is first on PATH.
        status(
            Command::new("/usr/bin/python3")
                .args(["-m", "venv", "--clear"])
                .arg(&venv),
        )?;
        status(
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(PYPI_PACKAGES),
        )?;
        fs::write(&stamp, &want).with_context(|| format!("writing {}", stamp.display()))?;
    }

    let (node, stamp, want) = (
        dir.join("node"),
        dir.join("npm.installed"),
        NPM_PACKAGES.join("\n"),
    );
    if !installed(&stamp, &want) {
        println!(
            "xtask: installing {} into {}",
            NPM_PACKAGES.join(" "),
            node.display()
        );
        status(
            Command::new("npm")
                .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                .arg(&node)
                .args(NPM_PACKAGES),
        )?;
        fs::write(&stamp, &want).with_context(|| format!("writing {}", stamp.display()))?;
    }
    Ok(())
}

/// Read by sensor/build.rs: the rustup toolchain that builds the eBPF programs.
const TOOLCHAIN_ENV: &str = "APISESSIONS_EBPF_TOOLCHAIN";

/// Returns the nightly toolchain to use: `$APISESSIONS_EBPF_TOOLCHAIN`, else `nightly` when it is
/// installed, else the known-good nightly (installed now). Makes sure it has rust-src.
fn ensure_nightly() -> Result<String> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"])).context(
        "rustup is needed to build the eBPF programs; install it from your distribution or rustup.rs",
    )?;
    let installed = |name: &str| {
        toolchains
            .lines()
            .any(|line| line.starts_with(&format!("{name}-")))
    };
    let toolchain = match env::var(TOOLCHAIN_ENV) {
        Ok(name) if !name.is_empty() => name,
        _ if installed("nightly") => "nightly".to_owned(),
        _ => KNOWN_GOOD_NIGHTLY.to_owned(),
    };
    if !installed(&toolchain) {
        println!("xtask: installing the {toolchain} toolchain (the eBPF programs need nightly)");
        status(Command::new("rustup").args([
            "toolchain",
            "install",
            &toolchain,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))
        .with_context(|| format!("the {toolchain} toolchain could not be installed with rustup"))?;
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        &toolchain,
        "--installed",
    ]))?;
    if !components.lines().any(|line| line.starts_with("rust-src")) {
        println!("xtask: adding rust-src to the {toolchain} toolchain");
        status(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", &toolchain]))
            .with_context(|| format!("rust-src could not be added: run `rustup component add rust-src --toolchain {toolchain}`"))?;
    }
    Ok(toolchain)
}

fn ensure_bpf_linker(toolchain: &str) -> Result<()> {
    if Command::new("bpf-linker")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Ok(());
    }
    // bpf-linker must link the same LLVM as the nightly compiler that emits the bitcode: build it
    // against the libLLVM that ships inside the nightly toolchain.
    let plus = format!("+{toolchain}");
    let version = output(Command::new("rustc").args([&plus, "-vV"]))?;
    let major = version
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .with_context(|| format!("`rustc {plus} -vV` does not report an LLVM version"))?
        .to_owned();
    let sysroot =
        PathBuf::from(output(Command::new("rustc").args([&plus, "--print", "sysroot"]))?.trim());
    let libdir = sysroot.join("lib");
    let library = fs::read_dir(&libdir)
        .with_context(|| format!("reading {}", libdir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name())
        .find(|name| name.to_string_lossy().starts_with("libLLVM.so."))
        .with_context(|| {
            format!(
                "the nightly toolchain has no libLLVM.so.* in {}; install a full nightly with `rustup toolchain install {KNOWN_GOOD_NIGHTLY}`",
                libdir.display()
            )
        })?;
    let prefix = cache_dir().join(format!("llvm-{major}-prefix"));
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    for link in [OsStr::new("libLLVM.so"), library.as_os_str()] {
        let path = prefix_lib.join(link);
        let _ = fs::remove_file(&path);
        std::os::unix::fs::symlink(libdir.join(&library), &path)
            .with_context(|| format!("linking {}", path.display()))?;
    }
    println!(
        "xtask: building bpf-linker against the nightly's LLVM {major} (about two minutes, once)"
    );
    status(
        Command::new("cargo")
            .arg(&plus)
            .args(["install", "bpf-linker", "--locked", "--no-default-features", "--features"])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix),
    )
    .context("bpf-linker could not be built; it needs crates.io access and a nightly toolchain with its libLLVM")
}

fn cache_dir() -> PathBuf {
    env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("apisessions")
}

fn ensure_bpffs() -> Result<()> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|line| line.split_whitespace().nth(2) == Some("bpf"))
    {
        return Ok(());
    }
    if !is_root() {
        println!(
            "xtask: note: bpffs is not mounted at /sys/fs/bpf (mount it as root: `mount -t bpf bpf /sys/fs/bpf`)"
        );
        return Ok(());
    }
    status(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
        .context("bpffs could not be mounted at /sys/fs/bpf")
}

/// Installs the Debian packages (name, binary) whose binary is missing (as root; else says how).
pub(crate) fn ensure_packages(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, binary)| !Path::new(binary).exists())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "the Debian packages {} are needed: install them with `sudo apt-get install {}`",
            missing.join(", "),
            missing.join(" ")
        );
    }
    println!("xtask: installing {}", missing.join(" "));
    status(Command::new("apt-get").args(["update", "-qq"]))?;
    status(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null()),
    )
    .with_context(|| format!("installing {} failed", missing.join(" ")))
}

fn build(release: bool) -> Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.args(["build", "--package", "apisessions"])
        .current_dir(workspace_root());
    if release {
        cmd.arg("--release");
    }
    status(&mut cmd)
}

pub(crate) fn binary(release: bool) -> PathBuf {
    workspace_root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("apisessions")
}

fn run(release: bool, args: &[String]) -> Result<()> {
    build(release)?;
    status(Command::new(binary(release)).args(args))
}

/// The fuzz targets in fuzz/Cargo.toml.
const FUZZ_TARGETS: &[&str] = &[
    "http_decoder",
    "http2_decoder",
    "reassembly",
    "pcap_source",
    "proxy_headers",
    "inventory",
    "attack_detector",
    "session_keys",
    "config",
];

/// Builds the fuzz targets (as the test suite does) without running them.
fn build_fuzz_targets() -> Result<()> {
    let toolchain = env::var(TOOLCHAIN_ENV).unwrap_or_else(|_| "nightly".into());
    status(
        Command::new("cargo")
            .arg(format!("+{toolchain}"))
            .args(["build", "--quiet", "--manifest-path", "fuzz/Cargo.toml"])
            // The capture programs are not fuzzed: skip building the eBPF object again.
            .env("AYA_BUILD_SKIP", "1")
            .current_dir(workspace_root()),
    )
    .context("the fuzz targets do not build")
}

fn fuzz(seconds: u64, only: Option<&str>) -> Result<()> {
    let toolchain = env::var(TOOLCHAIN_ENV).unwrap_or_else(|_| "nightly".into());
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        println!("xtask: installing cargo-fuzz");
        status(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    for target in FUZZ_TARGETS
        .iter()
        .filter(|t| only.is_none_or(|o| o == **t))
    {
        println!("xtask: fuzzing {target} for {seconds} s");
        status(
            Command::new("cargo")
                .arg(format!("+{toolchain}"))
                .args(["fuzz", "run", target, "--"])
                .arg(format!("-max_total_time={seconds}"))
                .env("AYA_BUILD_SKIP", "1")
                .current_dir(workspace_root()),
        )?;
    }
    Ok(())
}

fn test(args: &[String]) -> Result<()> {
    if !is_root() {
        bail!("the tests load eBPF programs and create network namespaces: run them as root");
    }
    let root = workspace_root();
    // tests/deb_package.rs inspects, installs (into a throwaway root) and removes this one.
    let deb = package(Profile::Test)?;
    status(
        Command::new("cargo")
            .arg("test")
            .args(args)
            .env(TEST_PACKAGE_ENV, &deb)
            .current_dir(&root),
    )?;
    if args.is_empty() {
        status(
            Command::new("cargo")
                .args(["fmt", "--all", "--check"])
                .current_dir(&root),
        )
        .context("formatting differs: run `cargo fmt --all`")?;
        status(
            Command::new("cargo")
                .args(["clippy", "--all-targets", "--quiet", "--", "-D", "warnings"])
                .current_dir(&root),
        )?;
        build_fuzz_targets()?;
        // The kernel side is linted for its own target, with the toolchain that builds it.
        let toolchain = env::var(TOOLCHAIN_ENV).unwrap_or_else(|_| "nightly".into());
        status(
            Command::new("cargo")
                .arg(format!("+{toolchain}"))
                .args([
                    "clippy",
                    "--quiet",
                    "--package",
                    "sensor-ebpf",
                    "--target",
                    "bpfel-unknown-none",
                ])
                .args(["-Z", "build-std=core", "--release", "--", "-D", "warnings"])
                .current_dir(&root),
        )?;
    }
    Ok(())
}
