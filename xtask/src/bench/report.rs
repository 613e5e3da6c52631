//! Medians and spreads over rounds, the targets, and the report in Markdown and JSON.

use std::{
    collections::BTreeMap, fmt::Write as _, fs, path::Path, process::Command, time::Duration,
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    CompletenessOutcome, CompletenessRun, Config, Options, OverheadOutcome, OverheadRun, SensorRun,
    analysis::{ATTACKS_GOAL_NS, AnalysisOutcome},
    central::CentralOutcome,
    offline::OfflineOutcome,
    store::{StoreLevel, StoreOutcome},
    tls::TlsOutcome,
};

/// Where and when the run happened.
#[derive(Clone, Debug)]
pub struct Machine {
    pub date: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub kernel: String,
    pub memory_gib: f64,
    pub load_at_start: String,
    pub commit: String,
    pub nginx: String,
    pub wrk: String,
    pub tcpdump: String,
}

impl Machine {
    /// Best effort: a figure that cannot be read says "unknown" rather than stopping the bench.
    pub fn read() -> Self {
        let text = |cmd: &mut Command| {
            crate::output(cmd)
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".to_owned())
        };
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let root = crate::workspace_root();
        let mut commit =
            text(
                Command::new("git")
                    .arg("-C")
                    .arg(&root)
                    .args(["rev-parse", "--short", "HEAD"]),
            );
        // Uncommitted changes to anything but the results file itself make the figures those of
        // a tree no commit has.
        let changed = crate::output(Command::new("git").arg("-C").arg(&root).args([
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":(exclude)docs/BENCHMARKS.md",
        ]))
        .is_ok_and(|out| !out.trim().is_empty());
        if changed {
            commit.push_str("-dirty");
        }
        // nginx and tcpdump print their version on stderr, wrk on stdout with a non-zero exit.
        let version = |program: &str, arg: &str| {
            Command::new(program)
                .arg(arg)
                .output()
                .ok()
                .and_then(|out| {
                    let all = format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                    all.lines().next().map(|l| l.trim().to_owned())
                })
                .unwrap_or_else(|| "unknown".to_owned())
        };
        Self {
            date: text(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map_or("unknown".to_owned(), |(_, v)| v.trim().to_owned()),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: text(Command::new("uname").arg("-r")),
            memory_gib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map_or(0.0, |kib| kib / 1024.0 / 1024.0),
            load_at_start: fs::read_to_string("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|_| "unknown".to_owned()),
            commit,
            nginx: version("/usr/sbin/nginx", "-v"),
            wrk: version("wrk", "--version")
                .split(" Copyright")
                .next()
                .unwrap_or("unknown")
                .to_owned(),
            tcpdump: version("tcpdump", "--version"),
        }
    }

    pub fn line(&self) -> String {
        format!(
            "{}, {} CPUs, {:.0} GiB, Linux {}; load average at start {}",
            self.cpu_model, self.cpus, self.memory_gib, self.kernel, self.load_at_start
        )
    }
}

/// Median and range of one figure over the rounds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Self {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        }
    }

    pub(super) fn show(&self, decimals: usize) -> String {
        format!(
            "{} ({}–{})",
            num(self.median, decimals),
            num(self.min, decimals),
            num(self.max, decimals)
        )
    }

    pub(super) fn json(&self) -> Value {
        json!({ "median": self.median, "min": self.min, "max": self.max, "rounds": self.n })
    }
}

/// A number with thousands separators.
fn num(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    let (int, frac) = text
        .split_once('.')
        .map_or((text.as_str(), ""), |(i, f)| (i, f));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

pub struct Report {
    pub options: Options,
    pub machine: Machine,
    pub command: String,
    pub topology: String,
    pub overhead: OverheadOutcome,
    pub completeness: CompletenessOutcome,
    pub offline: Option<OfflineOutcome>,
    pub store: Option<StoreOutcome>,
    pub analysis: Option<AnalysisOutcome>,
    pub central: Option<CentralOutcome>,
    pub tls: Option<TlsOutcome>,
    pub elapsed: Duration,
    /// `--version` of the `--baseline` binary.
    pub baseline_version: Option<String>,
}

/// Query latency (ms) over the rounds, by query name.
fn query_ms(level: &StoreLevel, name: &str) -> Option<Spread> {
    level
        .queries
        .iter()
        .find(|q| q.name.starts_with(name))
        .map(|q| Spread::of(q.ms.iter().copied()))
}

fn bytes_per_exchange(level: &StoreLevel) -> f64 {
    level.file_bytes as f64 / level.exchanges.max(1) as f64
}

/// "≤ goal" targets of the store phase, measured at its largest size.
fn store_targets(store: Option<&StoreOutcome>, list: &mut Vec<Target>) {
    let (Some(first), Some(last)) = (
        store.and_then(|s| s.levels.first()),
        store.and_then(|s| s.levels.last()),
    ) else {
        list.push(Target {
            name: "store ingest, queries, bytes per exchange",
            target: "see the issue".into(),
            measured: "not measured".into(),
            met: None,
            conclusive: true,
            note: "store phase skipped (--store-exchanges 0)".into(),
        });
        return;
    };
    let ingest = Spread::of(first.ingest.iter().copied());
    let later = Spread::of(last.ingest.iter().copied());
    list.push(Target {
        name: "store ingest (exchanges committed per second)",
        target: "≥ 200,000".into(),
        measured: num(ingest.median, 0),
        met: Some(ingest.median >= 200_000.0),
        conclusive: true,
        note: format!(
            "{}; into an empty store, rounds {}; from {} to {} stored: {}",
            if ingest.median >= 200_000.0 {
                format!("{:.0} % of the goal", ingest.median / 2000.0)
            } else {
                format!("missed by {:.0} %", 100.0 - ingest.median / 2000.0)
            },
            ingest.show(0),
            num(last.ingest_from as f64, 0),
            num(last.exchanges as f64, 0),
            later.show(0)
        ),
    });
    let at = format!("at {} stored", num(last.exchanges as f64, 0));
    let mut at_most = |name: &'static str, goal: f64, unit: &str, value: Option<Spread>| {
        let Some(value) = value else { return };
        let m = value.median;
        list.push(Target {
            name,
            target: format!("≤ {} {unit}, {at}", num(goal, 0)),
            measured: format!("{} {unit}", num(m, 1)),
            met: Some(m <= goal),
            conclusive: true,
            note: if m <= goal {
                format!(
                    "{:.0} % of the budget; rounds {}",
                    m / goal * 100.0,
                    value.show(1)
                )
            } else {
                format!(
                    "missed by {:.0} %; rounds {}",
                    (m / goal - 1.0) * 100.0,
                    value.show(1)
                )
            },
        });
    };
    at_most(
        "`sessions --limit 50` latency",
        50.0,
        "ms",
        query_ms(last, "sessions --limit 50"),
    );
    at_most(
        "`show` of a 10,000-request session",
        100.0,
        "ms",
        query_ms(last, "show"),
    );
    at_most(
        "bytes on disk per stored exchange",
        300.0,
        "B",
        Some(Spread::of([bytes_per_exchange(last)])),
    );
}

/// The offline phase reduced to figures: exchanges per second of each tool, and their ratio.
struct OfflineSummary {
    import_rate: Spread,
    /// This build's import on 1, 2 and all CPUs (a decoding thread for each but one): (CPUs, rate).
    cores_rate: Vec<(usize, Spread)>,
    tshark_rate: Spread,
    ratio: Spread,
    /// Whether both tools found every exchange in every round.
    counts_agree: bool,
}

fn summarize_offline(offline: &OfflineOutcome) -> OfflineSummary {
    let n = offline.exchanges as f64;
    OfflineSummary {
        import_rate: Spread::of(offline.runs.iter().map(|r| n / r.import_s)),
        cores_rate: offline
            .runs
            .first()
            .map(|r| r.cores.iter().map(|c| c.cores).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|cores| {
                let rates = offline
                    .runs
                    .iter()
                    .flat_map(|r| &r.cores)
                    .filter(|c| c.cores == cores)
                    .map(|c| n / c.seconds);
                (cores, Spread::of(rates))
            })
            .collect(),
        tshark_rate: Spread::of(offline.runs.iter().map(|r| n / r.tshark_s)),
        ratio: Spread::of(offline.runs.iter().map(|r| r.tshark_s / r.import_s)),
        counts_agree: offline.runs.iter().all(|r| {
            r.import_exchanges == offline.exchanges
                && r.cores.iter().all(|c| c.exchanges == offline.exchanges)
                && r.tshark_responses == offline.exchanges
                && r.tshark_requests == offline.exchanges
        }),
    }
}

/// The overhead phase reduced to figures.
struct OverheadSummary {
    rate: BTreeMap<&'static str, Spread>,
    p99_us: BTreeMap<&'static str, Spread>,
    /// nginx's own CPU (user + sys) per request, µs.
    nginx_us: BTreeMap<&'static str, Spread>,
    /// nginx's run-queue wait per request, ns, and its timeslices per 1000 requests.
    nginx_wait_ns: BTreeMap<&'static str, Spread>,
    nginx_slices: BTreeMap<&'static str, Spread>,
    /// Other processes' CPUs busy during the runs.
    background: BTreeMap<&'static str, Spread>,
    /// Same-round ratios against no capture.
    rate_ratio: BTreeMap<&'static str, Spread>,
    p99_ratio: BTreeMap<&'static str, Spread>,
    /// Same-round throughput of the sensor over tcpdump's.
    sensor_vs_tcpdump: Spread,
    /// Same-round throughput ratios of the rounds where other processes stayed quiet in both
    /// runs (n = 0: there was none).
    quiet_ratio: BTreeMap<&'static str, Spread>,
    sensor: SensorSummary,
    tcpdump_us: Spread,
    tcpdump_rss_mib: Spread,
    tcpdump_dropped: u64,
    tcpdump_captured: u64,
    tcpdump_file_mib: Spread,
}

/// The sensor's runs reduced to figures.
struct SensorSummary {
    /// CPU per exchange, µs: user, sys, bpf, total.
    us: [Spread; 4],
    rss_mib: Spread,
    /// CPU per exchange over nginx's CPU per request in the same runs.
    vs_nginx: Spread,
    /// CPUs kept busy (user + sys + BPF over the run's length).
    cores: Spread,
    /// Decoded exchanges over wrk's completed requests.
    decoded_ratio: Spread,
    losses: BTreeMap<String, u64>,
    /// Per BPF program: runs per exchange and ns per run.
    bpf: BTreeMap<String, (Spread, Spread)>,
    /// CPU per exchange (user + sys, µs) of each stage's thread ([`super::STAGE_THREADS`]).
    stages: Vec<(&'static str, Spread)>,
}

// Figures of one run, shared by the summaries and the comparison with the baseline.

/// nginx's CPU (user + sys) per completed request.
fn nginx_ns_per_request(run: &OverheadRun) -> f64 {
    (run.nginx_cpu.user_ns + run.nginx_cpu.sys_ns) as f64 / run.wrk.requests.max(1) as f64
}

/// CPUs the sensor kept busy (user + sys + BPF over the run's length).
fn sensor_cores(run: &OverheadRun, sensor: &SensorRun) -> f64 {
    sensor.total_ns() as f64 / 1e9 / run.wrk.seconds.max(1e-9)
}

/// Exchanges decoded over wrk's completed requests.
fn decoded_ratio(run: &OverheadRun, sensor: &SensorRun) -> f64 {
    sensor.exchanges() as f64 / run.wrk.requests.max(1) as f64
}

fn sensor_runs(runs: &[OverheadRun], config: Config) -> Vec<(&OverheadRun, &SensorRun)> {
    runs.iter()
        .filter(|r| r.config == config)
        .filter_map(|r| r.sensor.as_ref().map(|s| (r, s)))
        .collect()
}

fn summarize_sensor(sensors: &[(&OverheadRun, &SensorRun)]) -> SensorSummary {
    let per_exchange = |f: &dyn Fn(&SensorRun) -> u64| {
        Spread::of(sensors.iter().map(|(_, s)| s.us_per_exchange(f(s))))
    };
    let mut losses = BTreeMap::new();
    let mut bpf_values: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for (_, sensor) in sensors {
        for (name, value) in sensor.counters.losses() {
            *losses.entry(name).or_default() += value;
        }
        for prog in &sensor.bpf {
            let entry = bpf_values.entry(prog.name.clone()).or_default();
            entry
                .0
                .push(prog.run_cnt as f64 / sensor.exchanges().max(1) as f64);
            if prog.run_cnt > 0 {
                entry.1.push(prog.run_time_ns as f64 / prog.run_cnt as f64);
            }
        }
    }
    SensorSummary {
        us: [
            per_exchange(&|s| s.cpu.user_ns),
            per_exchange(&|s| s.cpu.sys_ns),
            per_exchange(&SensorRun::bpf_ns),
            per_exchange(&SensorRun::total_ns),
        ],
        rss_mib: Spread::of(sensors.iter().map(|(_, s)| s.peak_rss_kib as f64 / 1024.0)),
        vs_nginx: Spread::of(sensors.iter().map(|(r, s)| {
            s.total_ns() as f64 / s.exchanges().max(1) as f64 / nginx_ns_per_request(r).max(1.0)
        })),
        cores: Spread::of(sensors.iter().map(|(r, s)| sensor_cores(r, s))),
        decoded_ratio: Spread::of(sensors.iter().map(|(r, s)| decoded_ratio(r, s))),
        losses,
        bpf: bpf_values
            .into_iter()
            .map(|(name, (runs, ns))| (name, (Spread::of(runs), Spread::of(ns))))
            .collect(),
        stages: super::STAGE_THREADS
            .iter()
            .map(|(thread, stage)| (*stage, per_exchange(&|s| s.thread_ns(thread))))
            .collect(),
    }
}

fn summarize_overhead(runs: &[OverheadRun], configs: &[Config]) -> OverheadSummary {
    let of = |config: Config| runs.iter().filter(move |r| r.config == config);
    let mut rate = BTreeMap::new();
    let mut p99_us = BTreeMap::new();
    let mut nginx_us = BTreeMap::new();
    let mut background = BTreeMap::new();
    let mut nginx_wait_ns = BTreeMap::new();
    let mut nginx_slices = BTreeMap::new();
    let mut rate_ratio = BTreeMap::new();
    let mut p99_ratio = BTreeMap::new();
    let mut quiet_ratio = BTreeMap::new();
    for &config in configs {
        rate.insert(config.name(), Spread::of(of(config).map(|r| r.wrk.rate())));
        p99_us.insert(config.name(), Spread::of(of(config).map(|r| r.wrk.p99_us)));
        nginx_wait_ns.insert(
            config.name(),
            Spread::of(
                of(config).map(|r| r.nginx_run_delay_ns as f64 / r.wrk.requests.max(1) as f64),
            ),
        );
        nginx_slices.insert(
            config.name(),
            Spread::of(
                of(config)
                    .map(|r| r.nginx_timeslices as f64 * 1000.0 / r.wrk.requests.max(1) as f64),
            ),
        );
        background.insert(
            config.name(),
            Spread::of(of(config).map(OverheadRun::background_cpus)),
        );
        nginx_us.insert(
            config.name(),
            Spread::of(of(config).map(|r| nginx_ns_per_request(r) / 1e3)),
        );
        if config == Config::None {
            continue;
        }
        let pairs: Vec<(&OverheadRun, &OverheadRun)> = of(config)
            .filter_map(|r| {
                of(Config::None)
                    .find(|base| base.round == r.round)
                    .map(|base| (r, base))
            })
            .collect();
        rate_ratio.insert(
            config.name(),
            Spread::of(pairs.iter().map(|(r, b)| r.wrk.rate() / b.wrk.rate())),
        );
        p99_ratio.insert(
            config.name(),
            Spread::of(pairs.iter().map(|(r, b)| r.wrk.p99_us / b.wrk.p99_us)),
        );
        quiet_ratio.insert(
            config.name(),
            Spread::of(
                pairs
                    .iter()
                    .filter(|(r, b)| {
                        r.background_cpus() < super::QUIET_CPUS
                            && b.background_cpus() < super::QUIET_CPUS
                    })
                    .map(|(r, b)| r.wrk.rate() / b.wrk.rate()),
            ),
        );
    }
    let sensor_vs_tcpdump = Spread::of(of(Config::Sensor).filter_map(|r| {
        of(Config::Tcpdump)
            .find(|t| t.round == r.round)
            .map(|t| r.wrk.rate() / t.wrk.rate())
    }));
    let tcpdumps: Vec<(&OverheadRun, &super::TcpdumpRun)> = of(Config::Tcpdump)
        .filter_map(|r| r.tcpdump.as_ref().map(|t| (r, t)))
        .collect();
    OverheadSummary {
        rate,
        p99_us,
        nginx_us,
        nginx_wait_ns,
        nginx_slices,
        background,
        rate_ratio,
        p99_ratio,
        quiet_ratio,
        sensor_vs_tcpdump,
        sensor: summarize_sensor(&sensor_runs(runs, Config::Sensor)),
        tcpdump_us: Spread::of(tcpdumps.iter().map(|(r, t)| {
            (t.cpu.user_ns + t.cpu.sys_ns) as f64 / r.wrk.requests.max(1) as f64 / 1e3
        })),
        tcpdump_rss_mib: Spread::of(tcpdumps.iter().map(|(_, t)| t.peak_rss_kib as f64 / 1024.0)),
        tcpdump_dropped: tcpdumps.iter().map(|(_, t)| t.dropped).sum(),
        tcpdump_captured: tcpdumps.iter().map(|(_, t)| t.captured).sum(),
        tcpdump_file_mib: Spread::of(
            tcpdumps
                .iter()
                .map(|(_, t)| t.file_bytes as f64 / 1048576.0),
        ),
    }
}

/// One completeness level over all rounds.
struct LevelSummary {
    fraction: f64,
    target_rate: Option<f64>,
    connections: u32,
    rate: Spread,
    logged: u64,
    decoded: u64,
    matched: u64,
    without_response: u64,
    missing: u64,
    extra: u64,
    /// Lowest per-round share of logged lines matched.
    worst: f64,
    complete_runs: usize,
    explained_runs: usize,
    unexplained_runs: usize,
    losses: BTreeMap<String, u64>,
    by_method: BTreeMap<String, (u64, u64)>,
    by_status: BTreeMap<String, (u64, u64)>,
    examples: Vec<String>,
    kept: Vec<String>,
}

impl LevelSummary {
    fn completeness(&self) -> f64 {
        if self.logged == 0 {
            0.0
        } else {
            self.matched as f64 / self.logged as f64
        }
    }
}

fn summarize_levels(options: &Options, runs: &[CompletenessRun]) -> Vec<LevelSummary> {
    options
        .levels
        .iter()
        .enumerate()
        .map(|(level, fraction)| {
            let mine: Vec<&CompletenessRun> = runs.iter().filter(|r| r.level == level).collect();
            let sum = |f: &dyn Fn(&CompletenessRun) -> u64| mine.iter().map(|r| f(r)).sum::<u64>();
            let mut losses = BTreeMap::new();
            let mut by_method: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            let mut by_status: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            let mut examples = Vec::new();
            for run in &mine {
                for (name, value) in &run.losses {
                    *losses.entry(name.clone()).or_default() += value;
                }
                for (key, (logged, matched)) in &run.tally.by_method {
                    let e = by_method.entry(key.clone()).or_default();
                    e.0 += logged;
                    e.1 += matched;
                }
                for (key, (logged, matched)) in &run.tally.by_status {
                    let e = by_status.entry(key.clone()).or_default();
                    e.0 += logged;
                    e.1 += matched;
                }
                for example in &run.tally.examples {
                    if examples.len() < 6 {
                        examples.push(format!("round {}: {example}", run.round + 1));
                    }
                }
            }
            LevelSummary {
                fraction: *fraction,
                target_rate: mine.first().and_then(|r| r.target_rate),
                connections: mine.first().map_or(0, |r| r.connections),
                rate: Spread::of(mine.iter().map(|r| r.wrk.rate())),
                logged: sum(&|r| r.tally.logged),
                decoded: sum(&|r| r.tally.decoded),
                matched: sum(&|r| r.tally.matched),
                without_response: sum(&|r| r.tally.without_response),
                missing: sum(&|r| r.tally.missing),
                extra: sum(&|r| r.tally.extra),
                worst: mine
                    .iter()
                    .map(|r| r.tally.matched as f64 / r.tally.logged.max(1) as f64)
                    .fold(f64::INFINITY, f64::min),
                complete_runs: mine.iter().filter(|r| r.verdict() == "complete").count(),
                explained_runs: mine.iter().filter(|r| r.verdict() == "explained").count(),
                unexplained_runs: mine.iter().filter(|r| r.verdict() == "UNEXPLAINED").count(),
                losses,
                by_method,
                by_status,
                examples,
                kept: mine
                    .iter()
                    .filter_map(|r| r.kept_files.as_ref().map(|p| p.display().to_string()))
                    .collect(),
            }
        })
        .collect()
}

/// A target and how the run fared against it.
pub struct Target {
    pub name: &'static str,
    pub target: String,
    pub measured: String,
    /// None: not measured.
    pub met: Option<bool>,
    /// False when the rounds disagree too much for a verdict either way.
    pub conclusive: bool,
    pub note: String,
}

/// The widest min–max range of a same-round throughput ratio that still allows a verdict from
/// the median when the rounds fall on both sides of a 5 % target: beyond it, drift between
/// rounds (other work on the machine) is as large as the effect being measured.
const RATIO_RANGE_LIMIT: f64 = 0.05;

fn targets(
    overhead: &OverheadSummary,
    levels: &[LevelSummary],
    offline: Option<&OfflineSummary>,
    store: Option<&StoreOutcome>,
    central: Option<&CentralOutcome>,
) -> Vec<Target> {
    let mut list = Vec::new();
    let loss = |name: &str| {
        overhead
            .rate_ratio
            .get(name)
            .map_or(f64::NAN, |s| (1.0 - s.median) * 100.0)
    };
    let sensor_loss = loss("apisessions");
    let tcpdump_loss = loss("tcpdump");
    let range = |name: &str| {
        overhead
            .rate_ratio
            .get(name)
            .map_or(f64::INFINITY, |s| s.max - s.min)
    };
    let sensor_range = range("apisessions");
    let quiet = |name: &str| {
        overhead
            .quiet_ratio
            .get(name)
            .filter(|s| s.n > 0)
            .map(|s| (s.n, (1.0 - s.median) * 100.0))
    };
    let noise_note = |range: f64, name: &str| {
        let mut note = format!(
            "rounds disagree: the ratio ranges over {:.1} points (limit {:.0})",
            range * 100.0,
            RATIO_RANGE_LIMIT * 100.0
        );
        match quiet(name) {
            Some((n, loss)) => {
                let _ = write!(
                    note,
                    "; in the {n} round(s) without other load: {loss:.1} %"
                );
            }
            None => note.push_str("; no round ran without other load"),
        }
        note
    };
    // A verdict stands when every round falls on the same side of the goal, or when the rounds
    // agree closely enough for their median to decide.
    let (best_loss, worst_loss) = overhead
        .rate_ratio
        .get("apisessions")
        .map_or((f64::NAN, f64::NAN), |s| {
            ((1.0 - s.max) * 100.0, (1.0 - s.min) * 100.0)
        });
    let sensor_conclusive =
        best_loss > 5.0 || worst_loss <= 5.0 || sensor_range <= RATIO_RANGE_LIMIT;
    let rounds_note = format!("rounds: {best_loss:.1} to {worst_loss:.1} %");
    list.push(Target {
        name: "throughput loss at saturation",
        target: "≤ 5 % (stretch ≤ 2 %)".into(),
        measured: format!("{sensor_loss:.1} %"),
        met: Some(sensor_loss <= 5.0),
        conclusive: sensor_conclusive,
        note: if !sensor_conclusive {
            noise_note(sensor_range, "apisessions")
        } else if sensor_loss <= 2.0 {
            format!("stretch goal met; {rounds_note}")
        } else if sensor_loss <= 5.0 {
            format!(
                "stretch goal missed by {:.1} points; {rounds_note}",
                sensor_loss - 2.0
            )
        } else {
            format!("missed by {:.1} points; {rounds_note}", sensor_loss - 5.0)
        },
    });
    // Against tcpdump: the same-round ratio of the two captures' throughput.
    let versus = overhead.sensor_vs_tcpdump;
    let versus_conclusive = versus.n > 0
        && (versus.max < 1.0
            || versus.min > 1.0
            || (sensor_range <= RATIO_RANGE_LIMIT && range("tcpdump") <= RATIO_RANGE_LIMIT));
    list.push(Target {
        name: "throughput loss below tcpdump's",
        target: format!("< {tcpdump_loss:.1} % (tcpdump -w)"),
        measured: format!("{sensor_loss:.1} %"),
        met: Some(sensor_loss < tcpdump_loss),
        conclusive: versus_conclusive,
        note: if !versus_conclusive {
            let mut note = noise_note(sensor_range.max(range("tcpdump")), "apisessions");
            if let Some((_, loss)) = quiet("tcpdump") {
                let _ = write!(note, " against tcpdump's {loss:.1} %");
            }
            note
        } else if sensor_loss < tcpdump_loss {
            format!(
                "{:.1} points less; apisessions / tcpdump throughput per round {}",
                tcpdump_loss - sensor_loss,
                versus.show(3)
            )
        } else {
            format!(
                "{:.1} points more; apisessions / tcpdump throughput per round {}",
                sensor_loss - tcpdump_loss,
                versus.show(3)
            )
        },
    });
    let cpu = overhead.sensor.us[3].median;
    list.push(Target {
        name: "sensor CPU per exchange (user + sys + BPF)",
        target: "≤ 5 µs".into(),
        measured: format!("{cpu:.2} µs"),
        met: Some(cpu <= 5.0),
        conclusive: true,
        note: if cpu <= 5.0 {
            format!("{:.0} % of the budget", cpu / 5.0 * 100.0)
        } else {
            format!(
                "missed by {:.2} µs ({:.0} % over)",
                cpu - 5.0,
                (cpu / 5.0 - 1.0) * 100.0
            )
        },
    });
    let logged: u64 = levels.iter().map(|l| l.logged).sum();
    let matched: u64 = levels.iter().map(|l| l.matched).sum();
    let extra: u64 = levels.iter().map(|l| l.extra).sum();
    let unexplained: usize = levels.iter().map(|l| l.unexplained_runs).sum();
    let complete = matched == logged && extra == 0;
    list.push(Target {
        name: "completeness, zero unexplained loss",
        target: "100 %, 0 unexplained".into(),
        measured: format!(
            "{:.4} % ({} of {} logged; {} decoded not logged); {} unexplained run(s)",
            matched as f64 / logged.max(1) as f64 * 100.0,
            num(matched as f64, 0),
            num(logged as f64, 0),
            extra,
            unexplained
        ),
        met: Some(complete && unexplained == 0),
        conclusive: true,
        note: if complete {
            "every logged request decoded with its method, URI and status".into()
        } else if unexplained == 0 {
            format!(
                "missed by {} exchange(s), all explained by loss counters",
                logged - matched
            )
        } else {
            format!(
                "missed by {} exchange(s); {unexplained} run(s) lost data no counter explains",
                logged - matched
            )
        },
    });
    list.push(match offline {
        Some(offline) => {
            let ratio = offline.ratio.median;
            Target {
                name: "import throughput vs tshark",
                target: "≥ 10×".into(),
                measured: format!("{ratio:.1}×"),
                met: Some(ratio >= 10.0),
                conclusive: true,
                note: if ratio >= 10.0 {
                    format!("{:.1}× above the goal", ratio / 10.0)
                } else {
                    format!(
                        "missed by {:.1}× ({:.0} % of the goal)",
                        10.0 - ratio,
                        ratio * 10.0
                    )
                },
            }
        }
        None => Target {
            name: "import throughput vs tshark",
            target: "≥ 10×".into(),
            measured: "not measured".into(),
            met: None,
            conclusive: true,
            note: "offline phase skipped (--offline-exchanges 0)".into(),
        },
    });
    store_targets(store, &mut list);
    central_targets(central, &mut list);
    list
}

/// The attack detector's goal per exchange, on the bench's own traffic.
fn analysis_target(analysis: Option<&AnalysisOutcome>) -> Target {
    let name = "attack detection CPU per exchange";
    let target = format!("≤ {ATTACKS_GOAL_NS:.0} ns");
    match analysis {
        Some(a) => Target {
            name,
            target,
            measured: format!("{:.0} ns", a.attacks_ns.median),
            met: Some(a.attacks_met()),
            conclusive: true,
            note: format!(
                "median of {} rounds; single calls {:.0} ns",
                a.attacks_ns.n, a.attacks_call_median_ns
            ),
        },
        None => Target {
            name,
            target,
            measured: "not measured".into(),
            met: None,
            conclusive: true,
            note: "analysis phase skipped".into(),
        },
    }
}

/// The targets as the table of a docs/BENCHMARKS.md entry (the verdict with its note).
pub fn target_table(text: &mut String, targets: &[Target]) -> Result<()> {
    writeln!(text, "\n| target | goal | measured | verdict |")?;
    writeln!(text, "|---|---|---|---|")?;
    for t in targets {
        writeln!(
            text,
            "| {} | {} | {} | {} ({}) |",
            t.name,
            t.target,
            t.measured,
            verdict(t),
            t.note
        )?;
    }
    Ok(())
}

fn verdict(target: &Target) -> &'static str {
    match target.met {
        None => "—",
        Some(_) if !target.conclusive => "inconclusive",
        Some(true) => "met",
        Some(false) => "MISSED",
    }
}

impl Report {
    pub fn render(&self) -> Result<(String, Value)> {
        let configs = Config::measured(&self.options);
        let overhead = summarize_overhead(&self.overhead.runs, &configs);
        let levels = summarize_levels(&self.options, &self.completeness.runs);
        let offline = self.offline.as_ref().map(summarize_offline);
        let mut targets = targets(
            &overhead,
            &levels,
            offline.as_ref(),
            self.store.as_ref(),
            self.central.as_ref(),
        );
        targets.push(analysis_target(self.analysis.as_ref()));
        super::tls::targets(self.tls.as_ref(), &mut targets);
        let comparisons = self.comparisons();
        let o = &self.options;
        let m = &self.machine;
        let mut md = String::new();
        writeln!(md, "# apisessions bench, {}\n", m.date)?;
        writeln!(md, "- Machine: {}", m.line())?;
        writeln!(md, "- Commit: {}", m.commit)?;
        writeln!(md, "- Command: `{}`", self.command)?;
        writeln!(
            md,
            "- Setup: {}. {} ({} worker process{}), {} (1 thread, {} connections), {}.",
            self.topology,
            m.nginx,
            o.workers,
            if o.workers == 1 { "" } else { "es" },
            m.wrk,
            o.connections,
            m.tcpdump
        )?;
        writeln!(
            md,
            "- Rounds: {} × {} s per configuration, alternating ({}, none, …); \
             figures are median (min–max) over the rounds; ratios pair each run with the uncaptured \
             run of its round. Before each overhead run the bench waits up to {} s for the machine \
             to be quiet (under {} CPUs busy); \"other processes\" is what the rest of the machine \
             used during the runs all the same. Total time {:.0} s.{}\n",
            o.rounds,
            o.duration.as_secs(),
            configs
                .iter()
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(", "),
            o.quiet_wait.as_secs(),
            super::QUIET_CPUS,
            self.elapsed.as_secs_f64(),
            if o.quick {
                " **Quick smoke run: not a result.**"
            } else {
                ""
            }
        )?;

        writeln!(md, "## Targets\n")?;
        writeln!(md, "| target | goal | measured | verdict | |")?;
        writeln!(md, "|---|---|---|---|---|")?;
        for t in &targets {
            writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                t.name,
                t.target,
                t.measured,
                verdict(t),
                t.note
            )?;
        }
        if let Some(comparisons) = &comparisons {
            self.write_comparisons(&mut md, "## Against the baseline", comparisons)?;
        }

        writeln!(md, "\n## 1. Overhead at saturation\n")?;
        writeln!(
            md,
            "wrk fetches `{}` (a {}-byte JSON file) over keep-alive connections as fast as nginx \
             answers; nginx does not log in this phase (the fastest server shows the capture's \
             share at its largest). The sensor runs `apisessions run --iface IF --port {}` \
             (decoding every exchange, no `--dump`); BPF run-time statistics are on during its \
             rounds only (their small cost is in its figures). tcpdump runs `tcpdump -i IF -w \
             FILE tcp port {}`.\n",
            super::host::OVERHEAD_PATH,
            super::host::OVERHEAD_BODY_LEN,
            super::PORT,
            super::PORT
        )?;
        writeln!(
            md,
            "| configuration | requests/s | p99 latency (µs) | throughput vs none | p99 vs none | \
             nginx CPU per request (µs) | nginx waiting for a CPU per request (ns) | nginx \
             timeslices per 1000 requests | other processes (CPUs busy) |"
        )?;
        writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
        for &config in &configs {
            let name = config.name();
            let ratio = |map: &BTreeMap<&str, Spread>| {
                map.get(name).map_or("—".to_owned(), |s| s.show(3))
            };
            writeln!(
                md,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
                overhead.rate[name].show(0),
                overhead.p99_us[name].show(0),
                ratio(&overhead.rate_ratio),
                ratio(&overhead.p99_ratio),
                overhead.nginx_us[name].show(2),
                overhead.nginx_wait_ns[name].show(0),
                overhead.nginx_slices[name].show(0),
                overhead.background[name].show(2)
            )?;
        }
        writeln!(
            md,
            "\nEach round (requests/s; p99 µs; CPUs busy with other processes meanwhile):\n"
        )?;
        writeln!(
            md,
            "| round | {} |",
            configs
                .iter()
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(" | ")
        )?;
        writeln!(md, "|---|{}", "---|".repeat(configs.len()))?;
        for round in 0..o.rounds {
            let mut row = format!("| {} |", round + 1);
            for &config in &configs {
                match self
                    .overhead
                    .runs
                    .iter()
                    .find(|r| r.round == round && r.config == config)
                {
                    Some(run) => write!(
                        row,
                        " {}; {}; {:.2} |",
                        num(run.wrk.rate(), 0),
                        num(run.wrk.p99_us, 0),
                        run.background_cpus()
                    )?,
                    None => row.push_str(" — |"),
                }
            }
            writeln!(md, "{row}")?;
        }
        let [user, sys, bpf, total] = &overhead.sensor.us;
        writeln!(
            md,
            "\nSensor cost, per exchange decoded (µs; × 1000 = µs per 1000 exchanges):\n"
        )?;
        writeln!(
            md,
            "| user | sys | BPF programs | total | total / nginx's CPU per request | CPUs busy | \
             peak RSS (MiB) |"
        )?;
        writeln!(md, "|---|---|---|---|---|---|---|")?;
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} of {} | {} |",
            user.show(2),
            sys.show(2),
            bpf.show(2),
            total.show(2),
            overhead.sensor.vs_nginx.show(2),
            overhead.sensor.cores.show(2),
            m.cpus,
            overhead.sensor.rss_mib.show(1)
        )?;
        if !overhead.sensor.bpf.is_empty() {
            writeln!(md, "\n| BPF program | runs per exchange | ns per run |")?;
            writeln!(md, "|---|---|---|")?;
            for (name, (runs, ns)) in &overhead.sensor.bpf {
                writeln!(md, "| {name} | {} | {} |", runs.show(2), ns.show(0))?;
            }
        }
        writeln!(
            md,
            "\nDecoded at saturation: exchanges / wrk's completed requests = {}; loss counters in \
             these runs: {}.",
            overhead.sensor.decoded_ratio.show(4),
            list_counters(&overhead.sensor.losses)
        )?;
        writeln!(
            md,
            "\ntcpdump: {} µs CPU per request (its own user + sys; the kernel's copies into its \
             socket are not in it), peak RSS {} MiB, {} of {} packets dropped by the kernel, \
             {} MiB written per run.",
            overhead.tcpdump_us.show(2),
            overhead.tcpdump_rss_mib.show(1),
            num(overhead.tcpdump_dropped as f64, 0),
            num(
                (overhead.tcpdump_captured + overhead.tcpdump_dropped) as f64,
                0
            ),
            overhead.tcpdump_file_mib.show(0)
        )?;

        if let Some(profile) = &self.overhead.profile {
            let share = |f: &dyn Fn(&str) -> bool| -> f64 {
                profile.iter().filter(|(_, s)| f(s)).map(|(p, _)| p).sum()
            };
            let allocator = share(&|s| is_allocator(s));
            let copies = share(&|s| s.contains("memmove") || s.contains("memcpy"));
            let kernel = share(&|s| s.starts_with("[k]"));
            writeln!(
                md,
                "\nWhere the daemon's time goes (`perf record -F 999` on it in one more saturation \
                 run, not counted above): allocator (malloc/free) {allocator:.1} %, memory copies \
                 {copies:.1} %, kernel {kernel:.1} %. Top symbols by own samples:\n"
            )?;
            writeln!(md, "| share | symbol |")?;
            writeln!(md, "|---|---|")?;
            for (share, symbol) in profile.iter().take(15) {
                writeln!(md, "| {share:.1} % | `{symbol}` |")?;
            }
        }

        writeln!(md, "\n## 2. Completeness\n")?;
        writeln!(
            md,
            "{} s per run. A mix of GET (200, 304, 404; JSON, a small file, a 16 KiB page), POST (201), DELETE \
             (204) and PUT (405), each request with a unique URI, at rising rates: fractions of the mix's own saturation \
             rate ({} requests/s, measured without capture), each connection pausing {} ms \
             before a request, then unpaced. nginx logs `$request_method $request_uri $status` \
             per request; `apisessions run --dump` prints one line per decoded exchange; every \
             logged line is matched by method, URI and status. A run with a difference is \
             *explained* when a loss counter moved, *UNEXPLAINED* otherwise.\n",
            super::completeness_duration(o).as_secs(),
            num(self.completeness.saturation, 0),
            super::PACING_MS
        )?;
        writeln!(
            md,
            "| level | offered | achieved requests/s | logged | matched | no response | missing | \
             decoded, not logged | completeness (worst round) | runs complete / explained / UNEXPLAINED | loss counters |"
        )?;
        writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|")?;
        for (i, level) in levels.iter().enumerate() {
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.4} % ({:.4} %) | {} / {} / {} | {} |",
                i + 1,
                match level.target_rate {
                    Some(rate) => format!(
                        "{:.0} % ≈ {} /s, {} conns",
                        level.fraction * 100.0,
                        num(rate, 0),
                        level.connections
                    ),
                    None => format!("saturation, {} conns", level.connections),
                },
                level.rate.show(0),
                num(level.logged as f64, 0),
                num(level.matched as f64, 0),
                level.without_response,
                level.missing,
                level.extra,
                level.completeness() * 100.0,
                level.worst * 100.0,
                level.complete_runs,
                level.explained_runs,
                level.unexplained_runs,
                list_counters(&level.losses)
            )?;
        }
        let mut by_method: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut by_status: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for level in &levels {
            for (k, (a, b)) in &level.by_method {
                let e = by_method.entry(k.clone()).or_default();
                e.0 += a;
                e.1 += b;
            }
            for (k, (a, b)) in &level.by_status {
                let e = by_status.entry(k.clone()).or_default();
                e.0 += a;
                e.1 += b;
            }
        }
        let split = |map: &BTreeMap<String, (u64, u64)>| {
            map.iter()
                .map(|(k, (logged, matched))| {
                    format!("{k} {}/{}", num(*matched as f64, 0), num(*logged as f64, 0))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            md,
            "\nMatched / logged, all levels: by method {}; by status {}.",
            split(&by_method),
            split(&by_status)
        )?;
        let examples: Vec<&String> = levels.iter().flat_map(|l| &l.examples).take(8).collect();
        if !examples.is_empty() {
            writeln!(md, "\nExamples of differences:\n")?;
            for example in examples {
                writeln!(md, "- `{example}`")?;
            }
            let kept: Vec<&String> = levels.iter().flat_map(|l| &l.kept).collect();
            writeln!(
                md,
                "\nThe logs and dumps of those runs are kept in {}.",
                kept.iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
        if let (Some(outcome), Some(summary)) = (&self.offline, &offline) {
            writeln!(md, "\n## 3. Offline throughput\n")?;
            writeln!(
                md,
                "A generated capture (`{}`, {} MiB): {} exchanges, {} packets, 64 keep-alive \
                 connections interleaved at a time, 100 exchanges each, a mix of GET/POST/PUT/DELETE \
                 with 200/201/204/304/404/405 and one response in ten chunked. Alternating rounds of \
                 `apisessions import FILE --port 8080` (release build, storing into a new data directory \
                 as every import does) and \
                 `tshark -n -r FILE -Y http -T fields -e http.request.method -e http.request.uri -e \
                 http.response.code` ({}); wall time, the file in the page cache.\n",
                outcome.file.display(),
                num(outcome.file_bytes as f64 / 1048576.0, 0),
                num(outcome.exchanges as f64, 0),
                num(outcome.packets as f64, 0),
                outcome.tshark_version
            )?;
            writeln!(md, "| tool | exchanges/s | seconds per run |")?;
            writeln!(md, "|---|---|---|")?;
            writeln!(
                md,
                "| apisessions import | {} | {} |",
                summary.import_rate.show(0),
                Spread::of(outcome.runs.iter().map(|r| r.import_s)).show(2)
            )?;
            writeln!(
                md,
                "| tshark | {} | {} |",
                summary.tshark_rate.show(0),
                Spread::of(outcome.runs.iter().map(|r| r.tshark_s)).show(1)
            )?;
            for (cores, rate) in &summary.cores_rate {
                writeln!(
                    md,
                    "| apisessions import on {cores} CPU(s) (`taskset`), `--decode-threads {}` \
                     | {} | {} |",
                    cores - 1,
                    rate.show(0),
                    Spread::of(
                        outcome
                            .runs
                            .iter()
                            .flat_map(|r| &r.cores)
                            .filter(|c| c.cores == *cores)
                            .map(|c| c.seconds)
                    )
                    .show(2)
                )?;
            }
            writeln!(
                md,
                "\nRatio (tshark's time over import's, per round): {}×. Both found every exchange \
                 in every round: {}.",
                summary.ratio.show(1),
                if summary.counts_agree {
                    "yes".to_owned()
                } else {
                    format!(
                        "**no** (import: {}; tshark requests/responses: {})",
                        outcome
                            .runs
                            .iter()
                            .map(|r| r.import_exchanges.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        outcome
                            .runs
                            .iter()
                            .map(|r| format!("{}/{}", r.tshark_requests, r.tshark_responses))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            )?;
        }
        if let Some(store) = &self.store {
            writeln!(md, "\n## 4. Store and queries\n")?;
            writeln!(
                md,
                "`store_fill` (sensor/examples/) writes generated sessions through the store, \
                 {} exchanges per durable transaction (an import's, and the daemon writer's \
                 largest when it catches up): 2,000 sessions active at a time (browsers, API clients, logged-in \
                 users; 1 to 400 requests), one session of {} requests, realistic user agents, \
                 templated paths with ids and query strings, over the last six days. Ingest is \
                 exchanges committed per second of writing; bytes per exchange are the LMDB \
                 file's size over the exchanges stored (indexes, summaries and free pages \
                 included). Queries are the CLI as a user runs it (a new process each, output \
                 to /dev/null, wall time), alternating, the store in the page cache.\n",
                num(store.transaction_exchanges as f64, 0),
                num(store.show_requests as f64, 0)
            )?;
            writeln!(
                md,
                "| stored exchanges | sessions | bytes/exchange | ingest (exchanges/s) | {} |",
                store
                    .levels
                    .first()
                    .map(|l| l
                        .queries
                        .iter()
                        .map(|q| format!("`{}` (ms)", q.name))
                        .collect::<Vec<_>>()
                        .join(" | "))
                    .unwrap_or_default()
            )?;
            writeln!(
                md,
                "|---|---|---|---|{}",
                "---|".repeat(store.levels.first().map_or(0, |l| l.queries.len()))
            )?;
            for level in &store.levels {
                writeln!(
                    md,
                    "| {} | {} | {:.0} | {} (from {}) | {} |",
                    num(level.exchanges as f64, 0),
                    num(level.sessions as f64, 0),
                    bytes_per_exchange(level),
                    Spread::of(level.ingest.iter().copied()).show(0),
                    num(level.ingest_from as f64, 0),
                    level
                        .queries
                        .iter()
                        .map(|q| Spread::of(q.ms.iter().copied()).show(1))
                        .collect::<Vec<_>>()
                        .join(" | ")
                )?;
            }
        }
        if let Some(analysis) = &self.analysis {
            md.push_str(&analysis.markdown()?);
        }
        if let Some(central) = &self.central {
            writeln!(md, "\n## 5. Central store\n")?;
            central_section(&mut md, central)?;
        }
        if let Some(tls) = &self.tls {
            writeln!(md, "\n## 7. TLS\n")?;
            super::tls::section(&mut md, tls)?;
        }
        writeln!(md, "\n## Reproduce\n\n```sh\n{}\n```", self.command)?;

        let json = json!({
            "date": m.date,
            "machine": {
                "cpu_model": m.cpu_model, "cpus": m.cpus, "kernel": m.kernel,
                "memory_gib": m.memory_gib, "load_at_start": m.load_at_start,
            },
            "commit": m.commit,
            "command": self.command,
            "topology": self.topology,
            "tools": { "nginx": m.nginx, "wrk": m.wrk, "tcpdump": m.tcpdump },
            "options": {
                "rounds": o.rounds, "duration_s": o.duration.as_secs(), "quick": o.quick,
                "loopback": o.loopback, "nat": o.nat, "nginx_workers": o.workers, "connections": o.connections,
                "levels": o.levels,
            },
            "elapsed_s": self.elapsed.as_secs_f64(),
            "baseline": comparisons.as_ref().map(|list| json!({
                "binary": o.baseline.as_ref().map(|p| p.display().to_string()),
                "version": self.baseline_version,
                "store_fill": o.baseline_fill.as_ref().map(|p| p.display().to_string()),
                "figures": list.iter().map(|c| json!({
                    "figure": c.figure, "current": c.current.json(), "baseline": c.baseline.json(),
                    "current_over_baseline": c.ratio.json(),
                })).collect::<Vec<_>>(),
            })),
            "targets": targets.iter().map(|t| json!({
                "name": t.name, "target": t.target, "measured": t.measured,
                "met": t.met, "conclusive": t.conclusive, "note": t.note,
            })).collect::<Vec<_>>(),
            "overhead": {
                "summary": {
                    "requests_per_s": overhead.rate.iter().map(|(k, v)| (k.to_string(), v.json())).collect::<serde_json::Map<_, _>>(),
                    "p99_us": overhead.p99_us.iter().map(|(k, v)| (k.to_string(), v.json())).collect::<serde_json::Map<_, _>>(),
                    "nginx_run_queue_wait_ns_per_request": overhead.nginx_wait_ns.iter().map(|(k, v)| (k.to_string(), v.json())).collect::<serde_json::Map<_, _>>(),
                    "nginx_timeslices_per_1000_requests": overhead.nginx_slices.iter().map(|(k, v)| (k.to_string(), v.json())).collect::<serde_json::Map<_, _>>(),
                    "background_cpus": overhead.background.iter().map(|(k, v)| (k.to_string(), v.json())).collect::<serde_json::Map<_, _>>(),
                    "nginx_us_per_request": overhead.nginx_us.iter().map(|(k, v)| (k.to_string(), v.json())).collect::<serde_json::Map<_, _>>(),
                    "sensor_over_tcpdump_throughput": overhead.sensor_vs_tcpdump.json(),
                    "throughput_ratio_quiet_rounds": overhead.quiet_ratio.iter().map(|(k, v)| (k.to_string(), v.json())).collect::<serde_json::Map<_, _>>(),
                    "throughput_ratio": overhead.rate_ratio.iter().map(|(k, v)| (k.to_string(), v.json())).collect::<serde_json::Map<_, _>>(),
                    "p99_ratio": overhead.p99_ratio.iter().map(|(k, v)| (k.to_string(), v.json())).collect::<serde_json::Map<_, _>>(),
                    "sensor_us_per_exchange": {
                        "user": user.json(), "sys": sys.json(), "bpf": bpf.json(), "total": total.json(),
                    },
                    "sensor_us_per_exchange_by_stage": overhead.sensor.stages.iter()
                        .map(|(stage, us)| (stage.to_string(), us.json()))
                        .collect::<serde_json::Map<_, _>>(),
                    "sensor_peak_rss_mib": overhead.sensor.rss_mib.json(),
                    "sensor_cpus_busy": overhead.sensor.cores.json(),
                    "sensor_cpu_over_nginx_cpu": overhead.sensor.vs_nginx.json(),
                    "sensor_decoded_ratio": overhead.sensor.decoded_ratio.json(),
                    "sensor_losses": overhead.sensor.losses,
                    "bpf_programs": overhead.sensor.bpf.iter().map(|(k, (runs, ns))| (k.clone(), json!({
                        "runs_per_exchange": runs.json(), "ns_per_run": ns.json(),
                    }))).collect::<serde_json::Map<_, _>>(),
                    "tcpdump_us_per_request": overhead.tcpdump_us.json(),
                    "tcpdump_peak_rss_mib": overhead.tcpdump_rss_mib.json(),
                    "tcpdump_dropped": overhead.tcpdump_dropped,
                    "tcpdump_captured": overhead.tcpdump_captured,
                },
                "profile": self.overhead.profile.as_ref().map(|p| p.iter().take(40).map(|(share, symbol)| json!({
                    "share_percent": share, "symbol": symbol,
                })).collect::<Vec<_>>()),
                "runs": self.overhead.runs.iter().map(overhead_run_json).collect::<Vec<_>>(),
            },
            "offline": self.offline.as_ref().zip(offline.as_ref()).map(|(outcome, summary)| json!({
                "file": outcome.file.display().to_string(), "file_bytes": outcome.file_bytes,
                "exchanges": outcome.exchanges, "packets": outcome.packets,
                "tshark": outcome.tshark_version,
                "import_exchanges_per_s": summary.import_rate.json(),
                "import_exchanges_per_s_by_cpus": summary.cores_rate.iter().map(|(cores, rate)| json!({
                    "cpus": cores, "decode_threads": cores - 1, "exchanges_per_s": rate.json(),
                })).collect::<Vec<_>>(),
                "tshark_exchanges_per_s": summary.tshark_rate.json(),
                "ratio": summary.ratio.json(), "counts_agree": summary.counts_agree,
                "runs": outcome.runs.iter().map(|r| json!({
                    "round": r.round, "import_s": r.import_s, "import_exchanges": r.import_exchanges,
                    "baseline_import_s": r.baseline.map(|b| b.0),
                    "baseline_import_exchanges": r.baseline.map(|b| b.1),
                    "tshark_s": r.tshark_s, "tshark_requests": r.tshark_requests,
                    "tshark_responses": r.tshark_responses,
                })).collect::<Vec<_>>(),
            })),
            "analysis": self.analysis.as_ref().map(AnalysisOutcome::json),
            "central": self.central.as_ref().map(central_json),
            "tls": self.tls.as_ref().map(super::tls::json),
            "store": self.store.as_ref().map(|store| json!({
                "show_requests": store.show_requests,
                "transaction_exchanges": store.transaction_exchanges,
                "baseline_fills": store.baseline.as_ref().map(|fills| fills.iter().map(|(rate, bytes)| json!({
                    "ingest_exchanges_per_s": rate, "bytes_per_exchange": bytes,
                })).collect::<Vec<_>>()),
                "levels": store.levels.iter().map(|l| json!({
                    "exchanges": l.exchanges, "sessions": l.sessions, "file_bytes": l.file_bytes,
                    "bytes_per_exchange": bytes_per_exchange(l),
                    "ingest_exchanges_per_s": Spread::of(l.ingest.iter().copied()).json(),
                    "ingest_from": l.ingest_from,
                    "queries": l.queries.iter().map(|q| json!({
                        "name": q.name, "args": q.args, "lines": q.lines,
                        "ms": Spread::of(q.ms.iter().copied()).json(), "runs_ms": q.ms,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })),
            "completeness": {
                "mix_saturation_per_s": self.completeness.saturation,
                "pacing_ms": super::PACING_MS,
                "levels": levels.iter().map(|l| json!({
                    "fraction": l.fraction, "target_rate": l.target_rate, "connections": l.connections,
                    "achieved_per_s": l.rate.json(), "logged": l.logged, "decoded": l.decoded,
                    "matched": l.matched, "without_response": l.without_response,
                    "missing": l.missing, "extra": l.extra, "completeness": l.completeness(),
                    "worst_round": l.worst, "runs_complete": l.complete_runs,
                    "runs_explained": l.explained_runs, "runs_unexplained": l.unexplained_runs,
                    "losses": l.losses, "by_method": l.by_method, "by_status": l.by_status,
                    "examples": l.examples,
                })).collect::<Vec<_>>(),
                "runs": self.completeness.runs.iter().map(|r| json!({
                    "round": r.round, "level": r.level, "connections": r.connections,
                    "wrk": wrk_json(&r.wrk), "logged": r.tally.logged, "decoded": r.tally.decoded,
                    "matched": r.tally.matched, "without_response": r.tally.without_response,
                    "missing": r.tally.missing, "extra": r.tally.extra, "verdict": r.verdict(),
                    "counters": r.counters.to_json(),
                })).collect::<Vec<_>>(),
            },
        });
        Ok((md, json))
    }

    /// Appends this run's table to docs/BENCHMARKS.md, after the results already there.
    pub fn append_to_benchmarks(&self, path: &Path) -> Result<()> {
        let configs = Config::measured(&self.options);
        let overhead = summarize_overhead(&self.overhead.runs, &configs);
        let levels = summarize_levels(&self.options, &self.completeness.runs);
        let offline = self.offline.as_ref().map(summarize_offline);
        let mut targets = targets(
            &overhead,
            &levels,
            offline.as_ref(),
            self.store.as_ref(),
            self.central.as_ref(),
        );
        targets.push(analysis_target(self.analysis.as_ref()));
        super::tls::targets(self.tls.as_ref(), &mut targets);
        let comparisons = self.comparisons();
        let mut text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(_) => BENCHMARKS_HEADER.to_owned(),
        };
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let m = &self.machine;
        writeln!(text, "\n## {} · {}\n", m.date, m.commit)?;
        writeln!(text, "- Machine: {}", m.line())?;
        writeln!(
            text,
            "- Command: `{}` ({} rounds × {} s, {:.0} s in all)",
            self.command,
            self.options.rounds,
            self.options.duration.as_secs(),
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            text,
            "- Setup: {}; nginx {} worker(s), wrk 1 thread × {} connections\n",
            self.topology, self.options.workers, self.options.connections
        )?;
        writeln!(text, "| figure | median (min–max) |")?;
        writeln!(text, "|---|---|")?;
        for &config in &configs {
            let name = config.name();
            writeln!(
                text,
                "| requests/s, {name} | {} |",
                overhead.rate[name].show(0)
            )?;
        }
        for config in [Config::Sensor, Config::Tcpdump] {
            let name = config.name();
            if let (Some(rate), Some(p99)) =
                (overhead.rate_ratio.get(name), overhead.p99_ratio.get(name))
            {
                writeln!(text, "| throughput / none, {name} | {} |", rate.show(3))?;
                if let Some(quiet) = overhead.quiet_ratio.get(name).filter(|s| s.n > 0) {
                    writeln!(
                        text,
                        "| throughput / none, {name}, the {} round(s) without other load | {} |",
                        quiet.n,
                        quiet.show(3)
                    )?;
                }
                writeln!(text, "| p99 latency / none, {name} | {} |", p99.show(3))?;
            }
        }
        let [user, sys, bpf, total] = &overhead.sensor.us;
        writeln!(
            text,
            "| sensor µs per exchange: user / sys / BPF | {} / {} / {} |",
            user.show(2),
            sys.show(2),
            bpf.show(2)
        )?;
        writeln!(
            text,
            "| sensor µs per exchange, total | {} |",
            total.show(2)
        )?;
        let stages = &overhead.sensor.stages;
        writeln!(
            text,
            "| sensor µs per exchange by stage: kernel (BPF) / {} | {} / {} |",
            stages
                .iter()
                .map(|(stage, _)| *stage)
                .collect::<Vec<_>>()
                .join(" / "),
            bpf.show(2),
            stages
                .iter()
                .map(|(_, us)| us.show(2))
                .collect::<Vec<_>>()
                .join(" / ")
        )?;
        writeln!(
            text,
            "| sensor peak RSS (MiB) | {} |",
            overhead.sensor.rss_mib.show(1)
        )?;
        writeln!(
            text,
            "| tcpdump µs per request (user + sys) | {} |",
            overhead.tcpdump_us.show(2)
        )?;
        for (i, level) in levels.iter().enumerate() {
            writeln!(
                text,
                "| completeness, level {} ({}; {} req/s) | {:.4} % of {} ({} unexplained runs) |",
                i + 1,
                level
                    .target_rate
                    .map_or("saturation".to_owned(), |_| format!(
                        "{:.0} %",
                        level.fraction * 100.0
                    )),
                num(level.rate.median, 0),
                level.completeness() * 100.0,
                num(level.logged as f64, 0),
                level.unexplained_runs
            )?;
        }
        if let Some(summary) = &offline {
            writeln!(
                text,
                "| import exchanges/s ({} exchanges) | {} |",
                num(self.options.offline_exchanges as f64, 0),
                summary.import_rate.show(0)
            )?;
            writeln!(
                text,
                "| tshark exchanges/s, same file | {} |",
                summary.tshark_rate.show(0)
            )?;
            writeln!(text, "| import / tshark | {}× |", summary.ratio.show(1))?;
            for (cores, rate) in &summary.cores_rate {
                writeln!(
                    text,
                    "| import exchanges/s on {cores} CPU(s), `--decode-threads {}` | {} |",
                    cores - 1,
                    rate.show(0)
                )?;
            }
        }
        for level in self.store.iter().flat_map(|s| &s.levels) {
            let at = num(level.exchanges as f64, 0);
            writeln!(
                text,
                "| store ingest exchanges/s, {} to {at} stored | {} |",
                num(level.ingest_from as f64, 0),
                Spread::of(level.ingest.iter().copied()).show(0)
            )?;
            writeln!(
                text,
                "| bytes on disk per exchange, {at} stored | {:.0} |",
                bytes_per_exchange(level)
            )?;
            for q in &level.queries {
                writeln!(
                    text,
                    "| `{}` ms, {at} stored | {} |",
                    q.name,
                    Spread::of(q.ms.iter().copied()).show(1)
                )?;
            }
        }
        if let Some(analysis) = &self.analysis {
            writeln!(
                text,
                "| attack detection ns per exchange (bench traffic) | {} |",
                analysis.attacks_ns.show(0)
            )?;
            writeln!(
                text,
                "| inventory ns per exchange (bench traffic) | {} |",
                analysis.inventory_ns.show(0)
            )?;
        }
        if let Some(central) = &self.central {
            central_rows(&mut text, central)?;
        }
        if let Some(tls) = &self.tls {
            super::tls::rows(&mut text, tls)?;
        }
        target_table(&mut text, &targets)?;
        if let Some(comparisons) = &comparisons {
            // A heading of its own would split this run's entry in two.
            self.write_comparisons(&mut text, "**Against the baseline**", comparisons)?;
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

/// One figure of this build beside the `--baseline` build's: each a median over the rounds,
/// and their same-round ratio.
struct Comparison {
    figure: String,
    decimals: usize,
    current: Spread,
    baseline: Spread,
    /// current / baseline, per round.
    ratio: Spread,
}

impl Comparison {
    /// From (round, value) pairs of each build.
    fn of(
        figure: impl Into<String>,
        decimals: usize,
        current: &[(u32, f64)],
        baseline: &[(u32, f64)],
    ) -> Self {
        let ratio = current.iter().filter_map(|(round, value)| {
            baseline
                .iter()
                .find(|(r, _)| r == round)
                .map(|(_, base)| value / base)
        });
        Self {
            figure: figure.into(),
            decimals,
            current: Spread::of(current.iter().map(|(_, v)| *v)),
            baseline: Spread::of(baseline.iter().map(|(_, v)| *v)),
            ratio: Spread::of(ratio),
        }
    }
}

/// A spread in a table, "—" when no round had the figure.
fn cell(spread: &Spread, decimals: usize) -> String {
    if spread.n == 0 {
        "—".to_owned()
    } else {
        spread.show(decimals)
    }
}

impl Report {
    /// This build against the `--baseline` one, figure by figure (None without a baseline).
    fn comparisons(&self) -> Option<Vec<Comparison>> {
        self.options.baseline.as_ref()?;
        let runs = &self.overhead.runs;
        let mut list = Vec::new();
        // Per round, a figure of one configuration's run (and of the uncaptured run of its
        // round, for ratios against it).
        let per_round = |config: Config, f: &dyn Fn(&OverheadRun, &OverheadRun) -> Option<f64>| {
            runs.iter()
                .filter(|r| r.config == config)
                .filter_map(|r| {
                    let none = runs
                        .iter()
                        .find(|n| n.config == Config::None && n.round == r.round)?;
                    Some((r.round, f(r, none)?))
                })
                .collect::<Vec<_>>()
        };
        let mut overhead =
            |figure: &str, decimals, f: &dyn Fn(&OverheadRun, &OverheadRun) -> Option<f64>| {
                let (current, baseline) =
                    (per_round(Config::Sensor, f), per_round(Config::Baseline, f));
                // A figure neither build has (a BPF program that never ran) is no row.
                if !current.is_empty() || !baseline.is_empty() {
                    list.push(Comparison::of(figure, decimals, &current, &baseline));
                }
            };
        overhead("requests/s at saturation, sensor running", 0, &|r, _| {
            Some(r.wrk.rate())
        });
        overhead("throughput / none (same round)", 3, &|r, none| {
            Some(r.wrk.rate() / none.wrk.rate())
        });
        overhead("p99 latency / none (same round)", 3, &|r, none| {
            Some(r.wrk.p99_us / none.wrk.p99_us)
        });
        overhead("sensor CPU per exchange, total (µs)", 2, &|r, _| {
            r.sensor.as_ref().map(|s| s.us_per_exchange(s.total_ns()))
        });
        overhead("sensor CPU per exchange, user (µs)", 2, &|r, _| {
            r.sensor.as_ref().map(|s| s.us_per_exchange(s.cpu.user_ns))
        });
        overhead("sensor CPU per exchange, sys (µs)", 2, &|r, _| {
            r.sensor.as_ref().map(|s| s.us_per_exchange(s.cpu.sys_ns))
        });
        overhead("sensor CPU per exchange, BPF programs (µs)", 2, &|r, _| {
            r.sensor.as_ref().map(|s| s.us_per_exchange(s.bpf_ns()))
        });
        overhead("sensor CPUs busy", 2, &|r, _| {
            r.sensor.as_ref().map(|s| sensor_cores(r, s))
        });
        overhead("sensor peak RSS (MiB)", 1, &|r, _| {
            r.sensor.as_ref().map(|s| s.peak_rss_kib as f64 / 1024.0)
        });
        overhead("decoded exchanges / completed requests", 4, &|r, _| {
            r.sensor.as_ref().map(|s| decoded_ratio(r, s))
        });
        let programs: std::collections::BTreeSet<String> = runs
            .iter()
            .filter_map(|r| r.sensor.as_ref())
            .flat_map(|s| s.bpf.iter().map(|p| p.name.clone()))
            .collect();
        for program in programs {
            overhead(&format!("BPF `{program}`, ns per run"), 0, &|r, _| {
                let prog = r.sensor.as_ref()?.bpf.iter().find(|p| p.name == program)?;
                (prog.run_cnt > 0).then(|| prog.run_time_ns as f64 / prog.run_cnt as f64)
            });
        }
        if let Some(offline) = &self.offline {
            let n = offline.exchanges as f64;
            let current: Vec<(u32, f64)> = offline
                .runs
                .iter()
                .map(|r| (r.round, n / r.import_s))
                .collect();
            let baseline: Vec<(u32, f64)> = offline
                .runs
                .iter()
                .filter_map(|r| r.baseline.map(|(seconds, _)| (r.round, n / seconds)))
                .collect();
            list.push(Comparison::of(
                format!("import exchanges/s ({} exchanges, storing them)", num(n, 0)),
                0,
                &current,
                &baseline,
            ));
        }
        if let Some((store, fills)) = self
            .store
            .as_ref()
            .and_then(|s| Some((s, s.baseline.as_ref()?)))
            && let Some(first) = store.levels.first()
        {
            // One fill of each per round, in round order.
            let rounds = |values: Vec<f64>| -> Vec<(u32, f64)> { (0u32..).zip(values).collect() };
            list.push(Comparison::of(
                format!(
                    "store ingest, `store_fill` into an empty store to {} (exchanges/s)",
                    num(first.exchanges as f64, 0)
                ),
                0,
                &rounds(first.ingest.clone()),
                &rounds(fills.iter().map(|(rate, _)| *rate).collect()),
            ));
            // Only the last round's store was kept (for the queries): its size against the
            // baseline's of the same round.
            let last = self.options.rounds - 1;
            list.push(Comparison::of(
                format!(
                    "bytes on disk per exchange at {} stored",
                    num(first.exchanges as f64, 0)
                ),
                0,
                &[(last, bytes_per_exchange(first))],
                &rounds(fills.iter().map(|(_, bytes)| *bytes).collect()),
            ));
        }
        Some(list)
    }

    fn write_comparisons(
        &self,
        out: &mut String,
        heading: &str,
        list: &[Comparison],
    ) -> Result<()> {
        let o = &self.options;
        writeln!(out, "\n{heading}\n")?;
        writeln!(
            out,
            "Baseline: `{}` ({}), measured in the same rounds as this build ({}): its sensor as \
             one more overhead configuration{}{}. The two builds swap places every other \
             round, so that neither always runs first. Current and baseline are medians \
             (min–max) over the rounds; the ratio is current / baseline within each round, \
             median (min–max): below 1 the current build has less of it (better for costs, \
             worse for rates). On a shared machine a ratio whose range spans 1 is within the \
             noise.\n",
            o.baseline
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string()),
            self.baseline_version
                .as_deref()
                .unwrap_or("version unknown"),
            self.machine.commit,
            match &self.offline {
                Some(_) => "; its import of the same capture in each offline round",
                None => "",
            },
            match (
                &o.baseline_fill,
                self.store.as_ref().and_then(|s| s.baseline.as_ref())
            ) {
                (Some(fill), Some(_)) => format!(
                    "; its `store_fill` (`{}`) in each store round",
                    fill.display()
                ),
                _ =>
                    "; store ingest on its own is not compared (no `--baseline-fill`, or no store \
                      phase): the import rate includes storing what an import decodes"
                        .to_owned(),
            }
        )?;
        writeln!(out, "| figure | current | baseline | current / baseline |")?;
        writeln!(out, "|---|---|---|---|")?;
        for c in list {
            writeln!(
                out,
                "| {} | {} | {} | {} |",
                c.figure,
                cell(&c.current, c.decimals),
                cell(&c.baseline, c.decimals),
                cell(&c.ratio, 3)
            )?;
        }
        let losses = |config: Config| {
            let mut sum = BTreeMap::new();
            for (_, sensor) in sensor_runs(&self.overhead.runs, config) {
                for (name, value) in sensor.counters.losses() {
                    *sum.entry(name).or_default() += value;
                }
            }
            list_counters(&sum)
        };
        writeln!(
            out,
            "\nLoss counters at saturation: current {}; baseline {}.",
            losses(Config::Sensor),
            losses(Config::Baseline)
        )?;
        Ok(())
    }
}

/// The central phase's goals (issue 13): shipping ≥ 100,000 exchanges/s per sensor, and under
/// 5 s of lag at a steady 10,000 requests/s (the p95 of the lag samples, median over rounds).
fn central_targets(central: Option<&CentralOutcome>, list: &mut Vec<Target>) {
    let Some(c) = central else {
        list.push(Target {
            name: "central shipping, lag",
            target: "see the issue".into(),
            measured: "not measured".into(),
            met: None,
            conclusive: true,
            note: "central phase skipped (--central-exchanges 0)".into(),
        });
        return;
    };
    let rate = Spread::of(c.throughput.iter().copied());
    list.push(Target {
        name: "central shipping (exchanges acknowledged per second)",
        target: "≥ 100,000".into(),
        measured: num(rate.median, 0),
        met: Some(rate.median >= 100_000.0),
        conclusive: true,
        note: format!(
            "{:.0} % of the goal; a backlog of {} exchanges, rounds {}",
            rate.median / 1000.0,
            num(c.exchanges as f64, 0),
            rate.show(0)
        ),
    });
    let p95 = Spread::of(c.lag.iter().map(|l| l.p95_ms / 1000.0));
    let all_shipped = c.lag.iter().all(|l| l.all_shipped);
    list.push(Target {
        name: "central lag at 10,000 requests/s (p95)",
        target: "< 5 s".into(),
        measured: format!("{} s", num(p95.median, 2)),
        met: Some(p95.median < 5.0 && all_shipped),
        conclusive: true,
        note: format!(
            "rounds {}; median lag {} s{}",
            p95.show(2),
            Spread::of(c.lag.iter().map(|l| l.median_ms / 1000.0)).show(2),
            if all_shipped {
                ""
            } else {
                "; NOT everything was shipped"
            }
        ),
    });
}

/// The central phase's section of the report.
fn central_section(md: &mut String, c: &CentralOutcome) -> Result<()> {
    writeln!(
        md,
        "`central_ship` (sensor/examples/) runs the library's shipper (batch size {}, interval \
         {} ms: the `[central]` defaults) against a private {} on loopback, from an empty \
         database and a fresh store each time. Throughput: a backlog of {} generated exchanges \
         (2,000 active sessions over the last hour) in the outbox, timed from the shipper's \
         start (schema creation included) until the server acknowledged the last one. Lag: {} \
         exchanges/s stored for {} s (a commit every 50 ms) with the shipper running; every \
         100 ms the age of the oldest exchange the server has not acknowledged (0 when none is \
         pending), from its commit into the local store.\n",
        num(c.batch_size as f64, 0),
        c.interval_ms,
        c.server,
        num(c.exchanges as f64, 0),
        num(super::central::LAG_RATE as f64, 0),
        c.lag_seconds
    )?;
    central_rows(md, c)
}

/// The central phase's figures as table rows (`| figure | median (min–max) |`).
fn central_rows(text: &mut String, c: &CentralOutcome) -> Result<()> {
    if !text.ends_with("|\n") {
        writeln!(text, "| figure | median (min–max) |")?;
        writeln!(text, "|---|---|")?;
    }
    let spread = |f: &dyn Fn(&super::central::LagRun) -> f64| Spread::of(c.lag.iter().map(f));
    writeln!(
        text,
        "| central shipping exchanges/s, a backlog of {} | {} |",
        num(c.exchanges as f64, 0),
        Spread::of(c.throughput.iter().copied()).show(0)
    )?;
    writeln!(
        text,
        "| central lag ms at {} exchanges/s: median | {} |",
        num(spread(&|l| l.rate).median, 0),
        spread(&|l| l.median_ms).show(0)
    )?;
    writeln!(
        text,
        "| central lag ms: p95 | {} |",
        spread(&|l| l.p95_ms).show(0)
    )?;
    writeln!(
        text,
        "| central lag ms: max | {} |",
        spread(&|l| l.max_ms).show(0)
    )?;
    writeln!(
        text,
        "| central lag: largest `lag_seconds` in stats | {} |",
        spread(&|l| l.counter_max_s as f64).show(0)
    )?;
    Ok(())
}

fn central_json(c: &CentralOutcome) -> Value {
    json!({
        "server": c.server,
        "batch_size": c.batch_size,
        "interval_ms": c.interval_ms,
        "backlog_exchanges": c.exchanges,
        "throughput_exchanges_per_s": Spread::of(c.throughput.iter().copied()).json(),
        "throughput_runs": c.throughput,
        "lag_seconds": c.lag_seconds,
        "lag_rate": super::central::LAG_RATE,
        "lag_runs": c.lag.iter().map(|l| json!({
            "rate": l.rate, "median_ms": l.median_ms, "p95_ms": l.p95_ms, "max_ms": l.max_ms,
            "stats_lag_seconds_max": l.counter_max_s, "drain_s": l.drain_s,
            "all_shipped": l.all_shipped,
        })).collect::<Vec<_>>(),
    })
}

/// A run of the central phase alone (`--central-only`): its report (Markdown, JSON), and its
/// entry appended to docs/BENCHMARKS.md unless `append_to` is None.
pub fn central_only(
    machine: &Machine,
    command: &str,
    central: &CentralOutcome,
    elapsed: Duration,
    append_to: Option<&Path>,
) -> Result<(String, Value)> {
    let mut targets = Vec::new();
    central_targets(Some(central), &mut targets);
    let mut entry = String::new();
    writeln!(entry, "- Machine: {}", machine.line())?;
    writeln!(
        entry,
        "- Command: `{command}` (the central phase only; {} round(s), {:.0} s in all)\n",
        central.throughput.len(),
        elapsed.as_secs_f64()
    )?;
    central_rows(&mut entry, central)?;
    target_table(&mut entry, &targets)?;
    let mut md = format!(
        "# apisessions bench (central store), {}\n\n- Commit: {}\n",
        machine.date, machine.commit
    );
    md.push_str(&entry);
    writeln!(md, "\n## Central store\n")?;
    central_section(&mut md, central)?;
    if let Some(path) = append_to {
        let heading = format!(
            "## {} · {} (central store only)\n\n",
            machine.date, machine.commit
        );
        append_entry(path, &(heading + &entry))?;
    }
    let json = json!({
        "date": machine.date,
        "commit": machine.commit,
        "command": command,
        "elapsed_s": elapsed.as_secs_f64(),
        "targets": targets.iter().map(|t| json!({
            "name": t.name, "target": t.target, "measured": t.measured,
            "verdict": verdict(t), "note": t.note,
        })).collect::<Vec<_>>(),
        "central": central_json(central),
    });
    Ok((md, json))
}

/// Appends one entry (its `## ` heading first) to docs/BENCHMARKS.md at `path`, after a blank
/// line; a missing file starts with the file's header.
pub fn append_entry(path: &Path, entry: &str) -> Result<()> {
    let mut text = fs::read_to_string(path).unwrap_or_else(|_| BENCHMARKS_HEADER.to_owned());
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push('\n');
    text.push_str(entry);
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

const BENCHMARKS_HEADER: &str = concat!(
    "# Benchmarks\n",
    "\n",
    "Results of `cargo xtask bench` (xtask/src/bench/), newest last; earlier results stay beside new\n",
    "ones. A run measures, side by side and in alternating rounds (none, apisessions, tcpdump, none,\n",
    "…; at least five):\n",
    "\n",
    "1. **Overhead**: nginx (Debian's package, one worker) serving a 512-byte JSON file to wrk at\n",
    "   saturation, without capture, with `apisessions run`, and with `tcpdump -w` on the same port;\n",
    "   throughput and p99 latency against the uncaptured run of the same round; the sensor's CPU\n",
    "   (user + sys of the daemon, plus its BPF programs' run time from the kernel's statistics) per\n",
    "   exchange; its peak RSS.\n",
    "2. **Completeness**: a mix of methods, URIs and statuses at rising request rates up to\n",
    "   saturation; every line nginx logged matched to an exchange the daemon decoded (`--dump`) by\n",
    "   method, URI and status; any difference set against the loss counters.\n",
    "3. **Offline throughput**: `apisessions import` against tshark's HTTP dissection of the same\n",
    "   generated capture of a million exchanges.\n",
    "4. **Store and queries**: exchanges committed per second, bytes on disk per exchange, and the\n",
    "   latency of `sessions --limit 50`, `--ip`, `--endpoint` and `show` of a 10,000-request\n",
    "   session at 1M and 10M stored exchanges (generated).\n",
    "5. **Central store**: exchanges per second the shipper moves from the LMDB outbox into a local\n",
    "   `clickhouse-server`, and its lag at a steady 10,000 exchanges per second.\n",
    "6. **TLS**: the same nginx response over TLS (OpenSSL, keep-alive, 4 connections) without the\n",
    "   sensor and with it following the TLS port through its uprobes; the added CPU per TLS request\n",
    "   (nginx's own, where the probes run, plus the daemon's) and which probe placement was used.\n",
    "\n",
    "Each figure is the median (min–max) over the rounds. The full report of a run (every round, the\n",
    "counters, a perf profile of the daemon with `--profile`) is in `target/bench/report.md` and\n",
    "`report.json`. A run with `--baseline BIN` also measures an earlier build in the same rounds and\n",
    "ends its table with both builds side by side. Targets (from the bench issue): throughput loss at\n",
    "saturation ≤ 5 % (stretch 2 %) and below tcpdump's; sensor CPU ≤ 5 µs per exchange, kernel and\n",
    "user space together; completeness 100 % with zero unexplained loss; import ≥ 10× tshark; ingest\n",
    "≥ 200k exchanges/s; `sessions --limit 50` ≤ 50 ms and `show` ≤ 100 ms at 10M stored; ≤ 300 bytes\n",
    "per exchange; central shipping ≥ 100,000 exchanges/s per sensor and lag < 5 s at 10,000/s.\n",
    "\n",
    "The machine these ran on is shared with other work. The bench waits for a quiet moment before\n",
    "each overhead run and records how many CPUs other processes used during it; a throughput verdict\n",
    "is *inconclusive* when the rounds' ratios range over more than 5 points, and the rows \"without\n",
    "other load\" then use only the rounds in which other processes stayed under a quarter of a CPU.\n",
);

/// glibc's and mimalloc's allocator entry points and internals, as perf names them.
fn is_allocator(symbol: &str) -> bool {
    let name = symbol.trim_start_matches("[.]").trim();
    [
        "malloc",
        "_int_malloc",
        "_int_free",
        "_int_realloc",
        "cfree",
        "free",
        "realloc",
        "malloc_consolidate",
        "unlink_chunk",
        "__libc_malloc",
        "__libc_free",
        "__libc_realloc",
        "tcache",
        // mimalloc, the daemon's allocator since 2026-11-29.
        "mi_",
        "_mi_",
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix))
}

fn list_counters(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        "none".to_owned()
    } else {
        map.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn wrk_json(w: &super::WrkResult) -> Value {
    json!({
        "user_ns": w.cpu.user_ns, "sys_ns": w.cpu.sys_ns,
        "machine_busy_ns": w.system.busy_ns, "machine_irq_ns": w.system.irq_ns,
        "machine_steal_ns": w.system.steal_ns,
        "requests": w.requests, "seconds": w.seconds, "errors": w.errors,
        "requests_per_s": w.rate(), "p50_us": w.p50_us, "p99_us": w.p99_us, "max_us": w.max_us,
    })
}

fn overhead_run_json(run: &OverheadRun) -> Value {
    json!({
        "round": run.round,
        "config": run.config.name(),
        "wrk": wrk_json(&run.wrk),
        "nginx_user_ns": run.nginx_cpu.user_ns, "nginx_sys_ns": run.nginx_cpu.sys_ns,
        "nginx_run_delay_ns": run.nginx_run_delay_ns, "nginx_timeslices": run.nginx_timeslices,
        "background_cpus": run.background_cpus(),
        "busy_before_cpus": run.busy_before,
        "sensor": run.sensor.as_ref().map(|s| json!({
            "user_ns": s.cpu.user_ns, "sys_ns": s.cpu.sys_ns, "bpf_ns": s.bpf_ns(),
            "threads_ns": s.threads.iter()
                .map(|(name, cpu)| (name.clone(), json!(cpu.user_ns + cpu.sys_ns)))
                .collect::<serde_json::Map<_, _>>(),
            "exchanges": s.exchanges(), "peak_rss_kib": s.peak_rss_kib,
            "bpf_programs": s.bpf.iter().map(|p| json!({
                "id": p.id, "name": p.name, "run_time_ns": p.run_time_ns, "run_cnt": p.run_cnt,
            })).collect::<Vec<_>>(),
            "counters": s.counters.to_json(),
        })),
        "tcpdump": run.tcpdump.as_ref().map(|t| json!({
            "user_ns": t.cpu.user_ns, "sys_ns": t.cpu.sys_ns, "peak_rss_kib": t.peak_rss_kib,
            "captured": t.captured, "dropped": t.dropped, "file_bytes": t.file_bytes,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_pairs_rounds() {
        // Round 2 of the baseline is missing: its ratio is left out, not paired with another.
        let current = [(0, 2.0), (1, 4.0), (2, 3.0)];
        let baseline = [(0, 1.0), (1, 5.0)];
        let c = Comparison::of("x", 0, &current, &baseline);
        assert_eq!(c.current.median, 3.0);
        assert_eq!(c.baseline.median, 3.0);
        assert_eq!(c.ratio.n, 2);
        assert_eq!((c.ratio.min, c.ratio.max), (0.8, 2.0));
    }
}
