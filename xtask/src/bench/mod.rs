//! `cargo xtask bench`: what the sensor costs and what it misses, measured side by side.
//!
//! Five phases, each in alternating rounds so that drift on a shared machine hits every
//! configuration alike; figures are medians with their min and max over the rounds.
//!
//! 1. Overhead: nginx (Debian's package, a fixed number of workers) under wrk at saturation,
//!    rounds cycling through no capture, `apisessions run`, and `tcpdump -w` on the same port.
//!    Throughput and p99 latency are compared with the uncaptured run of the same round; the
//!    sensor's CPU (user + sys of the daemon from /proc, plus its BPF programs' run time from
//!    the kernel's statistics) is divided by the exchanges it decoded; its peak RSS is VmHWM.
//! 2. Completeness: a mix of methods, URIs and statuses at rising request rates up to
//!    saturation, with `apisessions run --dump`: every line nginx logged is matched to a decoded
//!    exchange by method, URI and status; whatever does not match is set against the daemon's
//!    loss counters, and reported as unexplained when no counter moved.
//! 3. Offline throughput: a generated capture of a million exchanges (cached under
//!    target/bench/), `apisessions import` against tshark's HTTP dissection of the same file
//!    (method, URI, status), alternating, as exchanges per second and their ratio.
//! 4. Store and queries: generated sessions written into the store (exchanges committed per
//!    second, bytes on disk per exchange), and the CLI's `sessions --limit 50`, `--ip`,
//!    `--endpoint` and `show` of a 10,000-request session timed at a tenth of the size and at the
//!    full size (default 1M and 10M exchanges).
//! 5. Central store: the shipper draining a backlog of generated exchanges from the LMDB outbox
//!    into a private `clickhouse-server` (exchanges acknowledged per second), and its lag at a
//!    steady 10,000 exchanges per second (see central.rs). `--central-only` runs this phase
//!    alone.
//!
//! With `--baseline BIN` (an earlier release build of `apisessions`), the overhead rounds run
//! that binary's sensor as one more configuration and the offline rounds its import beside this
//! build's; with `--baseline-fill BIN` (that build's `store_fill` example) the store rounds also
//! fill a store with it. The two builds swap places every other round, so that neither always
//! runs first. The report then sets them side by side, figure by figure.
//!
//! Results go to target/bench/report.{md,json}; a full run also appends its table to
//! docs/BENCHMARKS.md. Nothing here is a test: the targets are reported against, never asserted.

mod analysis;
mod central;
mod host;
mod hostile;
pub(crate) mod offline;
mod probe;
mod report;
mod store;
mod tls;

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use host::{BpfStats, Net, Nginx, Proc, check_interrupt, sleep, wait_for};
use probe::{BpfProg, Counters, CpuTime, WrkLoad, WrkResult};

use crate::{binary, is_root, workspace_root};

/// Debian packages the bench needs beyond the tests' (nginx, curl, tcpdump, iproute2): the load
/// generator, bpftool for the BPF programs' names, tshark for the offline comparison, openssl
/// for the TLS phase's certificate.
const BENCH_PACKAGES: &[(&str, &str)] = &[
    ("wrk", "/usr/bin/wrk"),
    ("openssl", "/usr/bin/openssl"),
    ("bpftool", "/usr/sbin/bpftool"),
    ("tshark", "/usr/bin/tshark"),
];

/// The port nginx listens on and the captures watch.
const PORT: u16 = 8080;

#[derive(Clone, Debug)]
pub struct Options {
    pub rounds: u32,
    pub duration: Duration,
    pub quick: bool,
    pub loopback: bool,
    pub nat: bool,
    pub pin: bool,
    pub workers: u32,
    pub connections: u32,
    /// Profile the daemon with perf in one extra, unreported saturation run.
    pub profile: bool,
    /// Exchanges in the generated capture of the offline phase; 0 skips the phase.
    pub offline_exchanges: u64,
    /// Stored exchanges at the store phase's second size (the first is a tenth); 0 skips it.
    pub store_exchanges: u64,
    /// Only the analysis phase (no network, no eBPF): its section alone.
    pub analysis_only: bool,
    /// Exchanges in the central phase's backlog; 0 skips the phase.
    pub central_exchanges: u64,
    /// Seconds of steady load per lag run of the central phase.
    pub central_lag_seconds: u64,
    /// Only the central phase (no namespaces, nginx or eBPF; writes target/bench/central.*).
    pub central_only: bool,
    /// Longest wait for a quiet machine before an overhead run.
    pub quiet_wait: Duration,
    /// Fractions of the mix's saturation rate for the completeness levels (1.0: no pacing).
    pub levels: Vec<f64>,
    /// An earlier `apisessions` binary measured beside this build (absolute path).
    pub baseline: Option<PathBuf>,
    /// The same earlier build's `store_fill` example, for the store's ingest (absolute path).
    pub baseline_fill: Option<PathBuf>,
    /// Only the hostile-load scenario (hostile.rs) instead of the measurements.
    pub hostile: bool,
    /// Skip the TLS phase (tls.rs).
    pub skip_tls: bool,
    /// Only the TLS phase (no overhead, completeness, offline, store or central phases).
    pub tls_only: bool,
}

/// `cargo xtask bench` arguments.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Alternating rounds per configuration (default 5; 2 with --quick).
    #[arg(long)]
    rounds: Option<u32>,
    /// Seconds of load per overhead run; completeness runs take half (default 10; 3 with
    /// --quick).
    #[arg(long)]
    duration: Option<u64>,
    /// A short smoke run: fewer rounds, shorter runs, two rate levels, a smaller capture; not
    /// recorded in docs/BENCHMARKS.md.
    #[arg(long)]
    quick: bool,
    /// Client and server on one namespace's loopback instead of a veth pair.
    #[arg(long, conflicts_with = "nat")]
    loopback: bool,
    /// A container host: nginx behind a bridge and a DNAT rule (as Docker's `-p`), the sensor
    /// on every interface; compare its CPU per exchange with a run without.
    #[arg(long)]
    nat: bool,
    /// Pin nginx and the capture to all CPUs but the last, wrk to the last (a server whose
    /// client is elsewhere); default: the scheduler places them.
    #[arg(long)]
    pin: bool,
    /// nginx worker processes.
    #[arg(long, default_value_t = 1)]
    workers: u32,
    /// wrk connections at saturation.
    #[arg(long, default_value_t = 50)]
    connections: u32,
    /// Also profile the daemon with perf in one extra saturation run (not counted).
    #[arg(long)]
    profile: bool,
    /// Exchanges in the offline phase's generated capture (default 1,000,000; 100,000 with
    /// --quick); 0 skips the phase.
    #[arg(long, value_name = "N")]
    offline_exchanges: Option<u64>,
    /// Stored exchanges at which the store phase times the queries last (default 10,000,000;
    /// 300,000 with --quick); it also times them at a tenth of that. 0 skips the phase.
    #[arg(long, value_name = "N")]
    store_exchanges: Option<u64>,
    /// Only the analysis phase: attack detection's and the inventory's CPU per exchange on the
    /// offline phase's generated capture, and the detector's corpus rates (no network, no
    /// eBPF; a few minutes). Appended to docs/BENCHMARKS.md as its own section.
    #[arg(long, conflicts_with_all = ["baseline", "profile", "hostile"])]
    analysis_only: bool,
    /// Exchanges in the backlog the central phase ships into a private clickhouse-server
    /// (default 1,000,000; 100,000 with --quick); 0 skips the phase.
    #[arg(long, value_name = "N")]
    central_exchanges: Option<u64>,
    /// Seconds of steady 10,000 exchanges/s per lag run of the central phase (default 30; 10
    /// with --quick).
    #[arg(long, value_name = "SECS")]
    central_lag_seconds: Option<u64>,
    /// Run only the central phase (shipping throughput and lag); its figures are appended to
    /// docs/BENCHMARKS.md as an entry of their own (unless --quick).
    #[arg(long, conflicts_with_all = ["baseline", "profile", "analysis_only", "hostile"])]
    central_only: bool,
    /// Before each overhead run, wait up to this long for the machine to be quiet (other
    /// processes using less than a quarter of a CPU), then run anyway (default 15; 2 with
    /// --quick).
    #[arg(long, value_name = "SECS")]
    quiet_wait: Option<u64>,
    /// An earlier release build of `apisessions` to measure beside this one in the same rounds:
    /// its sensor as one more overhead configuration, its import on the same capture; the
    /// report shows the two side by side.
    #[arg(long, value_name = "BIN")]
    baseline: Option<PathBuf>,
    /// The `store_fill` example built from the same earlier commit
    /// (target/release/examples/store_fill there): the store phase then also measures its
    /// ingest, alternating with this build's. Without it, store ingest is compared only as part
    /// of the import rate (an import stores what it decodes).
    #[arg(long, value_name = "BIN", requires = "baseline")]
    baseline_fill: Option<PathBuf>,
    /// Instead of the measurements: a SYN flood, random bytes and held connections against
    /// the watched port beside a normal client; the sensor's RSS, its drop counters, and
    /// whether the normal client's exchanges were all decoded (3 × --duration seconds; 1 ×
    /// with --quick).
    #[arg(long, conflicts_with_all = ["baseline", "loopback", "nat", "profile"])]
    hostile: bool,
    /// Skip the TLS phase: nginx over TLS (OpenSSL) without the sensor and with it following
    /// the TLS port through its uprobes; the added CPU per TLS request.
    #[arg(long)]
    skip_tls: bool,
    /// Run only the TLS phase (--rounds × 2 runs of --duration seconds); its figures are
    /// appended to docs/BENCHMARKS.md as an entry of their own (unless --quick).
    #[arg(long, conflicts_with_all = ["baseline", "profile", "analysis_only", "central_only", "hostile", "nat", "skip_tls"])]
    tls_only: bool,
}

impl Options {
    pub fn new(args: BenchArgs) -> Result<Self> {
        let quick = args.quick;
        let rounds = args.rounds.unwrap_or(if quick { 2 } else { 5 });
        let duration = args.duration.unwrap_or(if quick { 3 } else { 10 });
        if rounds == 0 || duration == 0 || args.workers == 0 || args.connections == 0 {
            bail!("--rounds, --duration, --workers and --connections must be at least 1");
        }
        // Absolute: the sensor is started through `ip netns exec`, from another directory.
        let executable = |path: Option<PathBuf>, option: &str| {
            path.map(|p| {
                fs::canonicalize(&p)
                    .ok()
                    .filter(|p| p.is_file())
                    .with_context(|| format!("{option} {}: no such file", p.display()))
            })
            .transpose()
        };
        Ok(Self {
            rounds,
            duration: Duration::from_secs(duration),
            quick,
            loopback: args.loopback,
            nat: args.nat,
            pin: args.pin,
            workers: args.workers,
            connections: args.connections,
            profile: args.profile,
            offline_exchanges: args.offline_exchanges.unwrap_or(if quick {
                100_000
            } else {
                1_000_000
            }),
            store_exchanges: args.store_exchanges.unwrap_or(if quick {
                300_000
            } else {
                10_000_000
            }),
            analysis_only: args.analysis_only,
            central_exchanges: args.central_exchanges.unwrap_or(if quick {
                100_000
            } else {
                1_000_000
            }),
            central_lag_seconds: args
                .central_lag_seconds
                .unwrap_or(if quick { 10 } else { 30 })
                .max(1),
            central_only: args.central_only,
            quiet_wait: Duration::from_secs(args.quiet_wait.unwrap_or(if quick { 2 } else { 15 })),
            levels: if quick {
                vec![0.25, 1.0]
            } else {
                vec![0.1, 0.25, 0.5, 1.0]
            },
            baseline: executable(args.baseline, "--baseline")?,
            baseline_fill: executable(args.baseline_fill, "--baseline-fill")?,
            hostile: args.hostile,
            skip_tls: args.skip_tls,
            tls_only: args.tls_only,
        })
    }
}

/// What one overhead run measured.
#[derive(Clone, Debug)]
pub struct OverheadRun {
    pub round: u32,
    pub config: Config,
    pub wrk: WrkResult,
    /// nginx's CPU over the run (master and workers).
    pub nginx_cpu: CpuTime,
    /// Time nginx's processes were runnable but waited for a CPU, and how often they were
    /// scheduled: a capture that preempts the server shows here.
    pub nginx_run_delay_ns: u64,
    pub nginx_timeslices: u64,
    /// CPUs busy in the last second before the run (after waiting for quiet).
    pub busy_before: f64,
    pub sensor: Option<SensorRun>,
    pub tcpdump: Option<TcpdumpRun>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    None,
    Sensor,
    /// The sensor of the `--baseline` binary.
    Baseline,
    Tcpdump,
}

impl OverheadRun {
    /// CPU time of the capture process (sensor or tcpdump) over the run, user + sys.
    pub fn capture_ns(&self) -> u64 {
        let sensor = self
            .sensor
            .as_ref()
            .map_or(0, |s| s.cpu.user_ns + s.cpu.sys_ns);
        let tcpdump = self
            .tcpdump
            .as_ref()
            .map_or(0, |t| t.cpu.user_ns + t.cpu.sys_ns);
        sensor + tcpdump
    }

    /// CPUs kept busy by processes other than the bench's own (nginx, wrk, the capture) while
    /// wrk ran: the other work on a shared machine, which no alternation fully cancels.
    pub fn background_cpus(&self) -> f64 {
        let ours = self.nginx_cpu.user_ns
            + self.nginx_cpu.sys_ns
            + self.wrk.cpu.user_ns
            + self.wrk.cpu.sys_ns
            + self.capture_ns();
        self.wrk.system.busy_ns.saturating_sub(ours) as f64 / 1e9 / self.wrk.seconds.max(1e-9)
    }
}

impl Config {
    /// In the order of a round.
    const ALL: [Self; 4] = [Self::None, Self::Sensor, Self::Baseline, Self::Tcpdump];

    /// What a run with these options measures, in the order of a round.
    pub fn measured(options: &Options) -> Vec<Self> {
        Self::ALL
            .into_iter()
            .filter(|c| *c != Self::Baseline || options.baseline.is_some())
            .collect()
    }

    /// The order of round `round`: as [`Self::measured`], this build's sensor and the
    /// baseline's swapped in every other round.
    fn in_round(options: &Options, round: u32) -> Vec<Self> {
        let mut configs = Self::measured(options);
        if baseline_first(round) {
            for config in &mut configs {
                *config = match *config {
                    Self::Sensor => Self::Baseline,
                    Self::Baseline => Self::Sensor,
                    other => other,
                };
            }
        }
        configs
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Sensor => "apisessions",
            Self::Baseline => "baseline",
            Self::Tcpdump => "tcpdump",
        }
    }
}

/// The daemon's cost over the load window.
#[derive(Clone, Debug)]
pub struct SensorRun {
    pub cpu: CpuTime,
    /// By thread name (the daemon names its threads by stage: see [`STAGE_THREADS`]).
    pub threads: BTreeMap<String, CpuTime>,
    pub bpf: Vec<BpfProg>,
    pub peak_rss_kib: u64,
    pub counters: Counters,
}

/// The daemon's threads by the stage they run: decoding (the main thread: flows, reassembly,
/// HTTP, sessions and the analysis stages), the ring's reader (the runtime's workers) and the
/// store writer.
pub const STAGE_THREADS: [(&str, &str); 3] = [
    ("capture-io", "ring reader"),
    ("apisessions", "decoding + analysis"),
    ("store-writer", "store"),
];

impl SensorRun {
    /// User and sys time of the threads named `name`.
    pub fn thread_ns(&self, name: &str) -> u64 {
        self.threads
            .get(name)
            .map_or(0, |cpu| cpu.user_ns + cpu.sys_ns)
    }

    pub fn exchanges(&self) -> u64 {
        self.counters.get("http", "exchanges")
    }

    pub fn bpf_ns(&self) -> u64 {
        self.bpf.iter().map(|p| p.run_time_ns).sum()
    }

    /// User, sys and BPF time together.
    pub fn total_ns(&self) -> u64 {
        self.cpu.user_ns + self.cpu.sys_ns + self.bpf_ns()
    }

    /// `ns` spread over the exchanges decoded, in µs.
    pub fn us_per_exchange(&self, ns: u64) -> f64 {
        ns as f64 / self.exchanges().max(1) as f64 / 1e3
    }
}

#[derive(Clone, Debug)]
pub struct TcpdumpRun {
    pub cpu: CpuTime,
    pub peak_rss_kib: u64,
    pub captured: u64,
    pub dropped: u64,
    pub file_bytes: u64,
}

/// One completeness run: a level (request rate) in a round.
#[derive(Clone, Debug, Default)]
pub struct CompletenessRun {
    pub round: u32,
    pub level: usize,
    pub target_rate: Option<f64>,
    pub connections: u32,
    pub wrk: WrkResult,
    pub tally: Tally,
    pub counters: Counters,
    /// Non-zero loss counters.
    pub losses: Vec<(String, u64)>,
    /// Kept only when something did not match, for a look at what.
    pub kept_files: Option<PathBuf>,
}

impl CompletenessRun {
    pub fn verdict(&self) -> &'static str {
        if self.tally.is_complete() {
            "complete"
        } else if self.losses.is_empty() {
            "UNEXPLAINED"
        } else {
            "explained"
        }
    }
}

/// nginx's lines matched against the decoded exchanges.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub logged: u64,
    pub decoded: u64,
    /// Same method, URI and status.
    pub matched: u64,
    /// Same method and URI, decoded without a response.
    pub without_response: u64,
    /// Logged, and nothing decoded for it.
    pub missing: u64,
    /// Decoded, and nothing logged for it (nor counted above).
    pub extra: u64,
    /// Logged and matched, by method and by status.
    pub by_method: BTreeMap<String, (u64, u64)>,
    pub by_status: BTreeMap<String, (u64, u64)>,
    /// A few examples of what did not match.
    pub examples: Vec<String>,
}

impl Tally {
    pub fn is_complete(&self) -> bool {
        self.matched == self.logged && self.extra == 0
    }
}

pub fn run(options: &Options) -> Result<()> {
    if options.analysis_only {
        return run_analysis_only(options);
    }
    if options.central_only {
        return run_central_only(options);
    }
    if !is_root() {
        bail!("the bench loads eBPF programs and creates network namespaces: run it as root");
    }
    crate::ensure_packages(BENCH_PACKAGES)?;
    if options.profile {
        crate::ensure_packages(&[("linux-perf", "/usr/bin/perf")])?;
    }
    host::install_interrupt_handler();
    println!("xtask: building the release binary for the measurements");
    crate::build(true)?;
    if options.hostile {
        return hostile::run(options);
    }
    if options.tls_only {
        return tls::run_only(options);
    }
    if options.store_exchanges > 0 {
        store::build()?;
    }
    analysis::build()?;
    if options.central_exchanges > 0 {
        central::build()?;
    }
    let out_dir = workspace_root().join("target").join("bench");
    let work = out_dir.join("work");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    let started = Instant::now();
    let machine = report::Machine::read();
    let mut net = Net::create(options.loopback, options.nat)?;
    if options.pin {
        net.pin()?;
    }
    println!("xtask: bench on {}", net.describe());
    println!(
        "xtask: {} rounds of {} s per run; overhead: {}; then completeness at {} rate levels; \
         then offline import against tshark; then the store; then the central store",
        options.rounds,
        options.duration.as_secs(),
        Config::measured(options)
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(" / "),
        options.levels.len()
    );
    if let Some(baseline) = &options.baseline {
        println!(
            "xtask: baseline: {} ({})",
            baseline.display(),
            version_of(baseline)
        );
    }

    let overhead = overhead_phase(options, &net, &work)?;
    let completeness = completeness_phase(options, &net, &work)?;
    // On a container host (--nat) nginx is behind DNAT; the TLS phase's server is not.
    let tls = if options.skip_tls || options.nat {
        None
    } else {
        println!("xtask: TLS: nginx over TLS without and with the sensor's uprobes");
        Some(tls::run(options, &net, &work)?)
    };
    let topology = describe_topology(options, &net);
    drop(net);
    let offline = if options.offline_exchanges > 0 {
        println!(
            "xtask: offline: apisessions import against tshark on a capture of {} exchanges",
            options.offline_exchanges
        );
        Some(offline::run(
            &out_dir,
            &work,
            options.offline_exchanges,
            options.rounds,
            options.baseline.as_deref(),
        )?)
    } else {
        None
    };
    println!(
        "xtask: analysis: attack detection and inventory per exchange on {} generated exchanges",
        analysis::EXCHANGES
    );
    let analysis = analysis::run(&out_dir, analysis::EXCHANGES, options.rounds)?;
    let store = if options.store_exchanges > 0 {
        println!(
            "xtask: store: ingest and queries at {} and {} stored exchanges",
            (options.store_exchanges / 10).max(store::SHOW_REQUESTS),
            options.store_exchanges
        );
        Some(store::run(
            &work,
            options.store_exchanges,
            options.rounds,
            options.baseline_fill.as_deref(),
        )?)
    } else {
        None
    };

    let central = if options.central_exchanges > 0 {
        println!(
            "xtask: central: shipping a backlog of {} exchanges; lag at {} exchanges/s",
            options.central_exchanges,
            central::LAG_RATE
        );
        Some(central::run(
            &work,
            options.central_exchanges,
            options.central_lag_seconds,
            options.rounds,
        )?)
    } else {
        None
    };

    let report = report::Report {
        options: options.clone(),
        machine,
        command: command_line(),
        topology,
        overhead,
        completeness,
        offline,
        store,
        analysis: Some(analysis),
        central,
        tls,
        elapsed: started.elapsed(),
        baseline_version: options.baseline.as_deref().map(version_of),
    };
    let (markdown, json) = report.render()?;
    let md_path = out_dir.join("report.md");
    let json_path = out_dir.join("report.json");
    fs::write(&md_path, &markdown).with_context(|| format!("writing {}", md_path.display()))?;
    fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("\n{markdown}");
    println!(
        "xtask: wrote {} and {}",
        md_path.display(),
        json_path.display()
    );
    if options.quick {
        println!("xtask: --quick: docs/BENCHMARKS.md left as it is (a smoke run is no result)");
    } else {
        let path = workspace_root().join("docs").join("BENCHMARKS.md");
        report.append_to_benchmarks(&path)?;
        println!("xtask: appended this run's table to {}", path.display());
    }
    Ok(())
}

/// `--analysis-only`: the analysis phase alone, its section printed and (unless `--quick`)
/// appended to docs/BENCHMARKS.md under a heading of its own.
fn run_analysis_only(options: &Options) -> Result<()> {
    println!("xtask: building the analysis_cost example (release)");
    analysis::build()?;
    let out_dir = workspace_root().join("target").join("bench");
    let started = Instant::now();
    let outcome = analysis::run(&out_dir, analysis::EXCHANGES, options.rounds)?;
    let section = outcome.markdown()?;
    println!("{section}");
    let json_path = out_dir.join("analysis.json");
    fs::write(&json_path, serde_json::to_string_pretty(&outcome.json())?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("xtask: wrote {}", json_path.display());
    if options.quick {
        println!("xtask: --quick: docs/BENCHMARKS.md left as it is (a smoke run is no result)");
        return Ok(());
    }
    let machine = report::Machine::read();
    let path = workspace_root().join("docs").join("BENCHMARKS.md");
    let entry = format!(
        "## {} · {} · analysis stages\n\n- Machine: {}\n- Command: `{}` ({} runs, {:.0} s)\n{}",
        machine.date,
        machine.commit,
        machine.line(),
        command_line(),
        options.rounds,
        started.elapsed().as_secs_f64(),
        // The section's own heading is the report's; under the run's heading it is one level
        // down.
        section.replacen("\n## 6. Analysis stages\n", "", 1)
    );
    report::append_entry(&path, &entry)?;
    println!(
        "xtask: appended this run's analysis section to {}",
        path.display()
    );
    Ok(())
}

/// `--central-only`: the central phase on its own, with a report of its own.
fn run_central_only(options: &Options) -> Result<()> {
    if options.central_exchanges == 0 {
        bail!("--central-only with --central-exchanges 0 measures nothing");
    }
    host::install_interrupt_handler();
    println!("xtask: building the release example for the central phase");
    central::build()?;
    let out_dir = workspace_root().join("target").join("bench");
    let work = out_dir.join("work");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let started = Instant::now();
    let machine = report::Machine::read();
    let outcome = central::run(
        &work,
        options.central_exchanges,
        options.central_lag_seconds,
        options.rounds,
    )?;
    let benchmarks = workspace_root().join("docs").join("BENCHMARKS.md");
    let (markdown, json) = report::central_only(
        &machine,
        &command_line(),
        &outcome,
        started.elapsed(),
        (!options.quick).then_some(benchmarks.as_path()),
    )?;
    let _ = fs::remove_dir_all(&work);
    let md_path = out_dir.join("central.md");
    let json_path = out_dir.join("central.json");
    fs::write(&md_path, &markdown).with_context(|| format!("writing {}", md_path.display()))?;
    fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("\n{markdown}");
    println!(
        "xtask: wrote {} and {}{}",
        md_path.display(),
        json_path.display(),
        if options.quick {
            " (--quick: docs/BENCHMARKS.md left as it is)"
        } else {
            "; appended the figures to docs/BENCHMARKS.md"
        }
    );
    Ok(())
}

/// Builds one of the sensor crate's examples (sensor/examples/) from the release profile: the
/// phases' measuring programs.
fn build_example(name: &str) -> Result<()> {
    crate::status(
        std::process::Command::new("cargo")
            .args([
                "build",
                "--release",
                "--package",
                "apisessions",
                "--example",
                name,
            ])
            .current_dir(workspace_root()),
    )
}

/// Where [`build_example`] puts `name`.
fn example_binary(name: &str) -> PathBuf {
    workspace_root()
        .join("target")
        .join("release")
        .join("examples")
        .join(name)
}

/// Whether the baseline build runs before this one in `round`: in every other round, so that
/// what the first run leaves behind (caches, writeback, heat) falls on both alike.
pub fn baseline_first(round: u32) -> bool {
    round % 2 == 1
}

/// `BIN --version`, or why not.
pub fn version_of(program: &Path) -> String {
    crate::output(std::process::Command::new(program).arg("--version"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|e| format!("no version: {e:#}"))
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

fn describe_topology(options: &Options, net: &Net) -> String {
    let mut text = describe_placement(options);
    match &net.pinning {
        Some((server, client)) => {
            let _ = write!(
                text,
                "; nginx and the capture pinned to CPU {server}, wrk to CPU {client}"
            );
        }
        None => text.push_str("; no CPU pinning (the scheduler places nginx, wrk and the capture)"),
    }
    text
}

fn describe_placement(options: &Options) -> String {
    if options.nat {
        "a container host: wrk in the client namespace calls the server's address; a DNAT rule \
         forwards it over a bridge and a veth to nginx in a third namespace; the sensor runs on \
         every interface of the server namespace (its default: outside veth, bridge, container \
         veth, lo) and joins the copies before and after NAT; tcpdump on the outside veth"
            .to_owned()
    } else if options.loopback {
        "one network namespace; wrk and nginx on its loopback; the sensor hooks lo (one direction \
         only, as every segment passes both) and tcpdump listens on lo"
            .to_owned()
    } else {
        "two network namespaces joined by a veth pair; wrk in the client namespace, nginx in the \
         server namespace; the sensor's TC programs on the server's veth end (ingress: requests, \
         egress: responses), as on a real API host; tcpdump on the same interface"
            .to_owned()
    }
}

fn url(net: &Net, path: &str) -> String {
    format!("http://{}:{PORT}{path}", net.server_ip)
}

fn overhead_phase(options: &Options, net: &Net, work: &Path) -> Result<OverheadOutcome> {
    let nginx = Nginx::start(
        net,
        &work.join("nginx-overhead"),
        PORT,
        options.workers,
        false,
    )?;
    let script = work.join("overhead.lua");
    fs::write(&script, probe::overhead_script())?;
    let url = url(net, host::OVERHEAD_PATH);
    let load = |duration| WrkLoad {
        url: &url,
        script: &script,
        connections: options.connections,
        threads: 1,
        duration,
    };
    // Warm caches, the page cache and the TCP stack before anything counts.
    let warm = probe::run_wrk(
        net,
        &load(Duration::from_secs(2)),
        &work.join("wrk-warmup.txt"),
    )?;
    println!("xtask: warm-up: {:.0} requests/s", warm.rate());

    let mut runs = Vec::new();
    for round in 0..options.rounds {
        for config in Config::in_round(options, round) {
            check_interrupt()?;
            let log = work.join(format!("wrk-overhead-{round}-{}.txt", config.name()));
            let quiet = wait_quiet(options.quiet_wait)?;
            let nginx_before = nginx.usage()?;
            let (wrk, sensor, tcpdump) = match config {
                Config::None => (
                    probe::run_wrk(net, &load(options.duration), &log)?,
                    None,
                    None,
                ),
                Config::Sensor | Config::Baseline => {
                    let program = match (config, &options.baseline) {
                        (Config::Baseline, Some(baseline)) => baseline.clone(),
                        _ => binary(true),
                    };
                    let (wrk, sensor) = with_sensor(net, work, &program, false, None, |_| {
                        probe::run_wrk(net, &load(options.duration), &log)
                    })?;
                    (wrk, Some(sensor), None)
                }
                Config::Tcpdump => {
                    let (wrk, tcpdump) = with_tcpdump(net, work, || {
                        probe::run_wrk(net, &load(options.duration), &log)
                    })?;
                    (wrk, None, Some(tcpdump))
                }
            };
            let nginx_usage = nginx.usage()?.since(nginx_before);
            let run = OverheadRun {
                round,
                config,
                wrk,
                nginx_cpu: nginx_usage.cpu,
                nginx_run_delay_ns: nginx_usage.run_delay_ns,
                nginx_timeslices: nginx_usage.timeslices,
                busy_before: quiet,
                sensor,
                tcpdump,
            };
            print_overhead_run(&run);
            runs.push(run);
        }
    }
    let profile = if options.profile {
        check_interrupt()?;
        Some(profile_sensor(net, work, &load(options.duration))?)
    } else {
        None
    };
    drop(nginx);
    Ok(OverheadOutcome { runs, profile })
}

pub struct OverheadOutcome {
    pub runs: Vec<OverheadRun>,
    /// perf's view of the daemon at saturation: (share of its samples, symbol), top first.
    pub profile: Option<Vec<(f64, String)>>,
}

/// One more saturation run with the sensor, under `perf record` (sampling perturbs the run, so
/// none of its figures count): where the daemon's user and system time goes.
fn profile_sensor(net: &Net, work: &Path, load: &WrkLoad<'_>) -> Result<Vec<(f64, String)>> {
    let data = work.join("perf.data");
    let log = work.join("wrk-profile.txt");
    println!("xtask: profiling the daemon with perf during one more saturation run");
    with_sensor(net, work, &binary(true), false, None, |pid| {
        let mut perf = Proc::spawn(
            "perf record",
            std::process::Command::new("perf")
                .args(["record", "-F", "999", "-p", &pid.to_string(), "-o"])
                .arg(&data)
                .args(["--", "sleep", &load.duration.as_secs().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        probe::run_wrk(net, load, &log)?;
        let exit = perf.wait(Duration::from_secs(30))?;
        if !exit.success() {
            bail!("perf record failed ({exit})");
        }
        Ok(())
    })?;
    let report = crate::output(
        std::process::Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--sort",
                "symbol",
                "-i",
            ])
            .arg(&data),
    )?;
    // Lines such as "     8.72%  [.] _int_malloc": share, space, [.] user / [k] kernel, symbol.
    let symbols: Vec<(f64, String)> = report
        .lines()
        .filter_map(|line| {
            let (share, rest) = line.trim().split_once('%')?;
            let share = share.trim().parse::<f64>().ok()?;
            let symbol = rest.trim().split("  ").next()?.trim().to_owned();
            Some((share, symbol))
        })
        .collect();
    if symbols.is_empty() {
        bail!("perf report shows no samples");
    }
    Ok(symbols)
}

fn print_overhead_run(run: &OverheadRun) {
    let mut line = format!(
        "  round {} {:<12} {:>9.0} req/s  p99 {:>8.0} µs  errors {}  nginx {:.2} µs/request, \
         waits {:.0} ns/request  others {:.2} CPUs (before: {:.2})",
        run.round + 1,
        run.config.name(),
        run.wrk.rate(),
        run.wrk.p99_us,
        run.wrk.errors,
        (run.nginx_cpu.user_ns + run.nginx_cpu.sys_ns) as f64
            / run.wrk.requests.max(1) as f64
            / 1e3,
        run.nginx_run_delay_ns as f64 / run.wrk.requests.max(1) as f64,
        run.background_cpus(),
        run.busy_before
    );
    if let Some(sensor) = &run.sensor {
        line.push_str(&format!(
            "  cpu {:.2} µs/exchange (user {:.2} sys {:.2} bpf {:.2})  rss {} MiB  exchanges {}",
            sensor.us_per_exchange(sensor.total_ns()),
            sensor.us_per_exchange(sensor.cpu.user_ns),
            sensor.us_per_exchange(sensor.cpu.sys_ns),
            sensor.us_per_exchange(sensor.bpf_ns()),
            sensor.peak_rss_kib / 1024,
            sensor.exchanges(),
        ));
    }
    if let Some(tcpdump) = &run.tcpdump {
        line.push_str(&format!(
            "  cpu {:.2} s  dropped {}  file {} MiB",
            (tcpdump.cpu.user_ns + tcpdump.cpu.sys_ns) as f64 / 1e9,
            tcpdump.dropped,
            tcpdump.file_bytes >> 20
        ));
    }
    println!("{line}");
}

/// Below this many busy CPUs (the whole machine, the bench idle) a run may start at once.
const QUIET_CPUS: f64 = 0.25;

/// Waits, a second at a time and at most `limit`, until the machine is quiet; returns how many
/// CPUs were busy in the last second. Other work on a shared machine moves throughput by more
/// than the effect being measured; alternation spreads it, waiting avoids some of it.
fn wait_quiet(limit: Duration) -> Result<f64> {
    let started = Instant::now();
    loop {
        let before = probe::SystemCpu::read()?;
        sleep(Duration::from_secs(1))?;
        let busy = probe::SystemCpu::read()?.since(before);
        let cpus = (busy.busy_ns + busy.irq_ns) as f64 / 1e9;
        if cpus < QUIET_CPUS || started.elapsed() >= limit {
            return Ok(cpus);
        }
    }
}

/// Runs `load` while `PROGRAM run` (this build's `apisessions` or the baseline's) captures, and
/// measures the daemon over the load window. With `tls_port`, the daemon also follows that
/// port's TLS server through its uprobes (`--tls-port`), and the load starts once it does.
fn with_sensor<T>(
    net: &Net,
    work: &Path,
    program: &Path,
    dump: bool,
    tls_port: Option<u16>,
    load: impl FnOnce(u32) -> Result<T>,
) -> Result<(T, SensorRun)> {
    let data_dir = work.join("sensor-data");
    let _ = fs::remove_dir_all(&data_dir);
    let stdout = if dump {
        Stdio::from(fs::File::create(work.join("dump.txt")).context("creating the dump file")?)
    } else {
        Stdio::null()
    };
    let log = fs::File::create(work.join("sensor.log")).context("creating the sensor log")?;
    // Statistics on only while the sensor runs: they cost every BPF program on the machine a
    // little, and that cost lands in this configuration's figures, not the others'.
    let stats = BpfStats::enable()?;
    let mut sensor = Proc::spawn(
        "apisessions",
        net.server(program)
            .arg("run")
            // On a container host the sensor runs as it does by default: every interface.
            .args(
                (!net.nat)
                    .then_some(["--iface", &net.iface])
                    .into_iter()
                    .flatten(),
            )
            .args(["--port", &PORT.to_string()])
            .args(
                tls_port
                    .map(|port| ["--tls-port".to_owned(), port.to_string()])
                    .into_iter()
                    .flatten(),
            )
            .args(["--summary-interval", "0"])
            .args(dump.then_some("--dump"))
            .arg("--data-dir")
            .arg(&data_dir)
            .stdout(stdout)
            .stderr(log),
    )?;
    let stats_file = data_dir.join("stats.json");
    wait_for("the sensor to attach", Duration::from_secs(30), || {
        stats_file.exists() || !sensor.running()
    })?;
    if !sensor.running() {
        bail!(
            "apisessions exited at start; see {}",
            work.join("sensor.log").display()
        );
    }
    if tls_port.is_some() {
        // The server's master and its workers, found by the daemon's scan of listening sockets.
        wait_for(
            "the sensor to follow the TLS server",
            Duration::from_secs(30),
            || Counters::read(&data_dir).is_ok_and(|c| c.get("tls", "processes") >= 2),
        )?;
    }
    let pid = sensor.pid();
    let cpu_before = CpuTime::of(pid)?;
    let threads_before = CpuTime::by_thread(pid)?;
    let bpf_before = probe::bpf_programs(pid)?;
    let result = load(pid)?;
    // Let the reader catch up with the kernel before the window closes: what the daemon does
    // for this load belongs to it. stats.json is rewritten every second.
    let finished = Instant::now();
    wait_for(
        "the sensor to drain its ring",
        Duration::from_secs(20),
        || {
            finished.elapsed() > Duration::from_millis(1500)
                && Counters::read(&data_dir).is_ok_and(|c| {
                    c.get("reader", "events_read") >= c.get("kernel", "events_submitted")
                })
        },
    )?;
    let cpu = CpuTime::of(pid)?.since(cpu_before);
    let threads = CpuTime::by_thread(pid)?
        .into_iter()
        .map(|(name, cpu)| {
            let before = threads_before.get(&name).copied().unwrap_or_default();
            (name, cpu.since(before))
        })
        .collect();
    let bpf = probe::bpf_delta(&bpf_before, &probe::bpf_programs(pid)?);
    let peak_rss_kib = probe::peak_rss_kib(pid)?;
    let exit = sensor.stop(Duration::from_secs(60))?;
    drop(stats);
    if !exit.success() {
        bail!(
            "apisessions exited with {exit}; see {}",
            work.join("sensor.log").display()
        );
    }
    // The counters it wrote on exit: every connection finished, nothing pending.
    let counters = Counters::read(&data_dir)?;
    Ok((
        result,
        SensorRun {
            cpu,
            threads,
            bpf,
            peak_rss_kib,
            counters,
        },
    ))
}

/// Runs `load` while `tcpdump -w` records the same port, as a user would instead.
fn with_tcpdump<T>(
    net: &Net,
    work: &Path,
    load: impl FnOnce() -> Result<T>,
) -> Result<(T, TcpdumpRun)> {
    let file = work.join("tcpdump.pcap");
    let err_path = work.join("tcpdump.err");
    let _ = fs::remove_file(&file);
    let err = fs::File::create(&err_path).context("creating tcpdump's log")?;
    // -Z root: Debian's tcpdump otherwise drops to its own user, which may not write here.
    let mut tcpdump = Proc::spawn(
        "tcpdump",
        net.server("tcpdump")
            .args(["-i", &net.iface, "-n", "-Z", "root", "-w"])
            .arg(&file)
            .args(["tcp", "port", &PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(err),
    )?;
    wait_for("tcpdump to listen", Duration::from_secs(15), || {
        fs::read_to_string(&err_path).is_ok_and(|t| t.contains("listening on"))
            || !tcpdump.running()
    })?;
    if !tcpdump.running() {
        bail!(
            "tcpdump exited at start: {}",
            fs::read_to_string(&err_path).unwrap_or_default()
        );
    }
    let pid = tcpdump.pid();
    let cpu_before = CpuTime::of(pid)?;
    let result = load()?;
    sleep(Duration::from_millis(500))?;
    let cpu = CpuTime::of(pid)?.since(cpu_before);
    let peak_rss_kib = probe::peak_rss_kib(pid)?;
    tcpdump.stop(Duration::from_secs(30))?;
    let text = fs::read_to_string(&err_path).context("reading tcpdump's log")?;
    // "N packets captured" and "N packets dropped by kernel", printed on exit.
    let count = |what: &str| {
        text.lines()
            .find(|line| line.ends_with(what))
            .and_then(|line| line.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .with_context(|| format!("tcpdump printed no '{what}' line: {}", text.trim()))
    };
    let run = TcpdumpRun {
        cpu,
        peak_rss_kib,
        captured: count("packets captured")?,
        dropped: count("packets dropped by kernel")?,
        file_bytes: fs::metadata(&file).map(|m| m.len()).unwrap_or(0),
    };
    // Hundreds of MiB per round: keep none of them, and let no writeback of them run into the
    // next configuration's round.
    let _ = fs::remove_file(&file);
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    Ok((result, run))
}

/// The pause each connection takes before a request when a rate is to be held: with
/// `connections = rate × pause`, wrk offers about that rate while the server keeps up.
const PACING_MS: u64 = 20;

fn completeness_phase(options: &Options, net: &Net, work: &Path) -> Result<CompletenessOutcome> {
    let nginx = Nginx::start(net, &work.join("nginx-logged"), PORT, options.workers, true)?;
    let url = url(net, "/");
    // The mix's own saturation rate (per-request Lua and logging make it lower than the
    // overhead load's): the levels are fractions of it.
    let script = work.join("mix-calibrate.lua");
    fs::write(&script, probe::completeness_script("cal", 0))?;
    let calibration = probe::run_wrk(
        net,
        &WrkLoad {
            url: &url,
            script: &script,
            connections: options.connections,
            threads: 1,
            duration: options.duration.min(Duration::from_secs(5)),
        },
        &work.join("wrk-calibrate.txt"),
    )?;
    let saturation = calibration.rate();
    println!("xtask: the completeness mix saturates at about {saturation:.0} requests/s");

    let mut runs = Vec::new();
    for round in 0..options.rounds {
        for (level, fraction) in options.levels.iter().enumerate() {
            check_interrupt()?;
            let tag = format!("r{round}l{level}");
            let (target_rate, connections, delay) = if *fraction < 1.0 {
                let rate = saturation * fraction;
                let connections = (rate * PACING_MS as f64 / 1000.0).ceil().clamp(1.0, 4000.0);
                (Some(rate), connections as u32, PACING_MS)
            } else {
                (None, options.connections, 0)
            };
            let script = work.join(format!("mix-{tag}.lua"));
            fs::write(&script, probe::completeness_script(&tag, delay))?;
            let offset = nginx.log_offset()?;
            let (wrk, sensor) = with_sensor(net, work, &binary(true), true, None, |_| {
                let result = probe::run_wrk(
                    net,
                    &WrkLoad {
                        url: &url,
                        script: &script,
                        connections,
                        threads: 1,
                        duration: completeness_duration(options),
                    },
                    &work.join(format!("wrk-{tag}.txt")),
                );
                // The last FIN/ACKs still crossing the veth when wrk returns.
                sleep(Duration::from_millis(300))?;
                result
            })?;
            let log_path = nginx
                .access_log
                .clone()
                .context("the completeness nginx logs")?;
            let logged = read_from(&log_path, offset)?;
            let dump = fs::read_to_string(work.join("dump.txt")).context("reading the dump")?;
            let tally = compare(&logged, &dump);
            let losses = sensor.counters.losses();
            let mut run = CompletenessRun {
                round,
                level,
                target_rate,
                connections,
                wrk,
                tally,
                losses,
                counters: sensor.counters,
                kept_files: None,
            };
            if !run.tally.is_complete() {
                let keep = work.join(format!("mismatch-{tag}"));
                fs::create_dir_all(&keep)?;
                fs::write(keep.join("access.log"), &logged)?;
                fs::rename(work.join("dump.txt"), keep.join("dump.txt"))?;
                run.kept_files = Some(keep);
            }
            println!(
                "  round {} level {} {:>8.0} req/s ({} conns): nginx {} decoded {} matched {} \
                 no-response {} missing {} extra {}  {}{}",
                round + 1,
                level + 1,
                run.wrk.rate(),
                connections,
                run.tally.logged,
                run.tally.decoded,
                run.tally.matched,
                run.tally.without_response,
                run.tally.missing,
                run.tally.extra,
                run.verdict(),
                if run.losses.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({})",
                        run.losses
                            .iter()
                            .map(|(n, v)| format!("{n}={v}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                }
            );
            runs.push(run);
        }
    }
    drop(nginx);
    Ok(CompletenessOutcome { saturation, runs })
}

/// Half the overhead runs' length: a count needs less time than a rate to settle, and four
/// levels per round would otherwise double the bench's time.
pub fn completeness_duration(options: &Options) -> Duration {
    Duration::from_secs(options.duration.as_secs().div_ceil(2).max(2))
}

pub struct CompletenessOutcome {
    pub saturation: f64,
    pub runs: Vec<CompletenessRun>,
}

fn read_from(path: &Path, offset: u64) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let start = (offset as usize).min(bytes.len());
    Ok(String::from_utf8_lossy(&bytes[start..]).into_owned())
}

/// Matches nginx's `METHOD URI STATUS` lines against the dump's
/// `TIME CLIENT METHOD URI -> STATUS …` lines, as multisets.
fn compare(logged: &str, dump: &str) -> Tally {
    let mut tally = Tally::default();
    // (method, uri) -> statuses decoded; "" for an exchange without a response.
    let mut decoded: HashMap<(String, String), Vec<String>> = HashMap::new();
    let mut unparsed = Vec::new();
    for line in dump.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(method), Some(uri), Some(&"->"), Some(status)) =
            (fields.get(2), fields.get(3), fields.get(4), fields.get(5))
        else {
            unparsed.push(line.to_owned());
            continue;
        };
        tally.decoded += 1;
        let status = if status.starts_with('(') { "" } else { status };
        decoded
            .entry(((*method).to_owned(), (*uri).to_owned()))
            .or_default()
            .push(status.to_owned());
    }
    let mut without_response = Vec::new();
    for line in logged.lines() {
        let mut fields = line.split(' ');
        let (Some(method), Some(uri), Some(status)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        tally.logged += 1;
        let per_method = tally.by_method.entry(method.to_owned()).or_default();
        per_method.0 += 1;
        let per_status = tally.by_status.entry(status.to_owned()).or_default();
        per_status.0 += 1;
        let statuses = decoded.get_mut(&(method.to_owned(), uri.to_owned()));
        match statuses {
            Some(list) if list.iter().any(|s| s == status) => {
                if let Some(i) = list.iter().position(|s| s == status) {
                    list.swap_remove(i);
                }
                tally.matched += 1;
                per_method.1 += 1;
                per_status.1 += 1;
            }
            Some(list) if list.iter().any(String::is_empty) => {
                if let Some(i) = list.iter().position(String::is_empty) {
                    list.swap_remove(i);
                }
                tally.without_response += 1;
                without_response.push(line.to_owned());
            }
            _ => {
                tally.missing += 1;
                if tally.examples.len() < 5 {
                    tally.examples.push(format!("not decoded: {line}"));
                }
            }
        }
    }
    for example in without_response.iter().take(3) {
        tally
            .examples
            .push(format!("decoded without response: {example}"));
    }
    let mut extra: Vec<String> = decoded
        .into_iter()
        .flat_map(|((method, uri), statuses)| {
            statuses
                .into_iter()
                .map(move |s| format!("{method} {uri} -> {s}"))
        })
        .collect();
    extra.sort();
    tally.extra = extra.len() as u64 + unparsed.len() as u64;
    for example in extra.iter().chain(&unparsed).take(3) {
        tally
            .examples
            .push(format!("decoded, not logged: {example}"));
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_matches_multisets() {
        let logged = "GET /a 200\nGET /a 200\nPOST /b 201\nGET /c 404\nHEAD /d 200\n";
        let dump = "\
2026-01-01T00:00:00Z 10.0.0.2:1 GET /a -> 200 ttfb=0.1ms dur=0.1ms req=0 resp=3
2026-01-01T00:00:00Z 10.0.0.2:1 GET /a -> 200 ttfb=0.1ms dur=0.1ms req=0 resp=3
2026-01-01T00:00:00Z 10.0.0.2:1 POST /b -> (no response) req=10 resp=0
2026-01-01T00:00:00Z 10.0.0.2:1 GET /x -> 200 ttfb=0.1ms dur=0.1ms req=0 resp=3
";
        let tally = compare(logged, dump);
        assert_eq!(tally.logged, 5);
        assert_eq!(tally.decoded, 4);
        assert_eq!(tally.matched, 2);
        assert_eq!(tally.without_response, 1);
        assert_eq!(tally.missing, 2);
        assert_eq!(tally.extra, 1);
        assert_eq!(tally.by_method["GET"], (3, 2));
        assert!(!tally.is_complete());
    }
}
