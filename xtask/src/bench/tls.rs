//! The TLS phase (the TLS issue's cost): nginx serves the overhead phase's 512-byte JSON over
//! TLS (OpenSSL, keep-alive, a self-signed certificate) to wrk, without the sensor and with the
//! sensor following the TLS port through its uprobes (`run --tls-port`), the two in turn, the
//! order swapped every other round.
//!
//! The uprobes run in nginx's own threads (each SSL call traps on entry and return), so their
//! cost is in nginx's CPU per request: the added CPU per TLS request is nginx's CPU with the
//! sensor less nginx's without it in the same round, plus the daemon's own CPU per request.
//! wrk uses the same libssl (the probes are placed in the library, for every process that maps
//! it), so it pays the traps too (not the copy): its CPU per request is shown beside.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    Options, SensorRun,
    host::{self, Net, Nginx, check_interrupt},
    probe::{self, CpuTime, WrkLoad, WrkResult},
    report::{self, Machine, Spread, Target},
    wait_quiet, with_sensor,
};
use crate::{binary, workspace_root};

/// nginx's TLS port; the sensor also watches the overhead phase's plaintext port.
pub const TLS_PORT: u16 = 8443;
/// wrk's connections: a steady keep-alive load (each handshake happens once, at the start), as
/// the README's by-hand measurement.
const CONNECTIONS: u32 = 4;
/// The goal of the TLS issue: added CPU per TLS request.
const GOAL_US: f64 = 3.0;

/// One run: a configuration in a round.
#[derive(Clone, Debug)]
pub struct TlsRun {
    pub round: u32,
    pub wrk: WrkResult,
    /// nginx's CPU over the run (master and workers).
    pub nginx_cpu: CpuTime,
    /// None: the run without the sensor.
    pub sensor: Option<SensorRun>,
}

pub struct TlsOutcome {
    pub runs: Vec<TlsRun>,
    pub connections: u32,
}

fn per_request_us(ns: u64, wrk: &WrkResult) -> f64 {
    ns as f64 / wrk.requests.max(1) as f64 / 1e3
}

impl TlsRun {
    fn nginx_us(&self) -> f64 {
        per_request_us(self.nginx_cpu.user_ns + self.nginx_cpu.sys_ns, &self.wrk)
    }

    fn wrk_us(&self) -> f64 {
        per_request_us(self.wrk.cpu.user_ns + self.wrk.cpu.sys_ns, &self.wrk)
    }

    fn daemon_us(&self) -> Option<f64> {
        let s = self.sensor.as_ref()?;
        Some(per_request_us(s.cpu.user_ns + s.cpu.sys_ns, &self.wrk))
    }
}

/// Each round's pair of runs: (without the sensor, with it).
fn pairs(outcome: &TlsOutcome) -> Vec<(&TlsRun, &TlsRun)> {
    let rounds: BTreeSet<u32> = outcome.runs.iter().map(|r| r.round).collect();
    rounds
        .into_iter()
        .filter_map(|round| {
            let of = |with: bool| {
                outcome
                    .runs
                    .iter()
                    .find(|r| r.round == round && r.sensor.is_some() == with)
            };
            Some((of(false)?, of(true)?))
        })
        .collect()
}

/// nginx's added CPU plus the daemon's, per request, in each round.
fn added_us(outcome: &TlsOutcome) -> Spread {
    Spread::of(
        pairs(outcome).into_iter().map(|(none, with)| {
            with.nginx_us() - none.nginx_us() + with.daemon_us().unwrap_or(0.0)
        }),
    )
}

/// Which functions the probes were placed on, from the daemon's counters.
fn placement(outcome: &TlsOutcome) -> String {
    let mut internal = 0;
    let mut exported = 0;
    for s in outcome.runs.iter().filter_map(|r| r.sensor.as_ref()) {
        internal = internal.max(s.counters.get("tls", "libraries_internal_probes"));
        exported = exported.max(s.counters.get("tls", "libraries_exported_probes"));
    }
    match (internal, exported) {
        (0, 0) => "no library probed".into(),
        (_, 0) => "libssl's internal read/write functions (emulated first instructions)".into(),
        (0, _) => "the exported SSL_read/SSL_write entry points (the fallback)".into(),
        _ => format!("{internal} library(ies) on internal functions, {exported} on exported ones"),
    }
}

/// Runs the phase on `net` (its server namespace gets a TLS nginx of its own).
pub fn run(options: &Options, net: &Net, work: &Path) -> Result<TlsOutcome> {
    let nginx = Nginx::start_tls(net, &work.join("nginx-tls"), TLS_PORT, options.workers)?;
    let script = work.join("tls.lua");
    fs::write(&script, probe::overhead_script())?;
    let url = format!(
        "https://{}:{TLS_PORT}{}",
        net.server_ip,
        host::OVERHEAD_PATH
    );
    let load = |duration| WrkLoad {
        url: &url,
        script: &script,
        connections: CONNECTIONS,
        threads: 1,
        duration,
    };
    let warm = probe::run_wrk(
        net,
        &load(Duration::from_secs(2)),
        &work.join("wrk-tls-warmup.txt"),
    )?;
    println!("xtask: TLS warm-up: {:.0} requests/s", warm.rate());
    let mut runs = Vec::new();
    for round in 0..options.rounds {
        // Without the sensor first in even rounds, with it first in odd ones.
        for with in [round % 2 == 1, round % 2 == 0] {
            check_interrupt()?;
            let log = work.join(format!("wrk-tls-{round}-{with}.txt"));
            wait_quiet(options.quiet_wait)?;
            let before = nginx.usage()?;
            let (wrk, sensor) = if with {
                let (wrk, sensor) =
                    with_sensor(net, work, &binary(true), false, Some(TLS_PORT), |_| {
                        probe::run_wrk(net, &load(options.duration), &log)
                    })?;
                (wrk, Some(sensor))
            } else {
                (probe::run_wrk(net, &load(options.duration), &log)?, None)
            };
            if wrk.errors > 0 {
                bail!(
                    "wrk saw {} errors over TLS; see {}",
                    wrk.errors,
                    log.display()
                );
            }
            let run = TlsRun {
                round,
                wrk,
                nginx_cpu: nginx.usage()?.since(before).cpu,
                sensor,
            };
            println!(
                "xtask: TLS round {round} {}: {:.0} requests/s, nginx {:.2} µs per request{}",
                if with { "apisessions" } else { "none" },
                run.wrk.rate(),
                run.nginx_us(),
                run.daemon_us()
                    .map(|d| format!(", daemon {d:.2} µs"))
                    .unwrap_or_default()
            );
            runs.push(run);
        }
    }
    Ok(TlsOutcome {
        runs,
        connections: CONNECTIONS,
    })
}

/// The TLS goal as a target row.
pub fn targets(outcome: Option<&TlsOutcome>, list: &mut Vec<Target>) {
    let Some(outcome) = outcome else {
        list.push(Target {
            name: "added CPU per TLS request (nginx + daemon)",
            target: format!("≤ {GOAL_US} µs"),
            measured: "not measured".into(),
            met: None,
            conclusive: true,
            note: "TLS phase skipped (--skip-tls)".into(),
        });
        return;
    };
    let added = added_us(outcome);
    list.push(Target {
        name: "added CPU per TLS request (nginx + daemon)",
        target: format!("≤ {GOAL_US} µs"),
        measured: format!("{:.2} µs", added.median),
        met: Some(added.median <= GOAL_US),
        conclusive: true,
        note: format!("rounds {}; probes on {}", added.show(2), placement(outcome)),
    });
}

/// The phase's figures as table rows (`| figure | median (min–max) |`).
pub fn rows(text: &mut String, outcome: &TlsOutcome) -> Result<()> {
    if !text.ends_with("|\n") {
        writeln!(text, "| figure | median (min–max) |")?;
        writeln!(text, "|---|---|")?;
    }
    let runs = |with: bool| {
        outcome
            .runs
            .iter()
            .filter(move |r| r.sensor.is_some() == with)
    };
    let spread =
        |with: bool, f: &dyn Fn(&TlsRun) -> Option<f64>| Spread::of(runs(with).filter_map(f));
    let pairs = pairs(outcome);
    let rows: [(&str, Spread, usize); 10] = [
        (
            "TLS requests/s, none",
            spread(false, &|r| Some(r.wrk.rate())),
            0,
        ),
        (
            "TLS requests/s, apisessions",
            spread(true, &|r| Some(r.wrk.rate())),
            0,
        ),
        (
            "TLS nginx µs per request, none",
            spread(false, &|r| Some(r.nginx_us())),
            2,
        ),
        (
            "TLS nginx µs per request, apisessions",
            spread(true, &|r| Some(r.nginx_us())),
            2,
        ),
        (
            "TLS nginx µs per request added (same round)",
            Spread::of(
                pairs
                    .iter()
                    .map(|(none, with)| with.nginx_us() - none.nginx_us()),
            ),
            2,
        ),
        (
            "TLS daemon µs per request (user + sys)",
            spread(true, &TlsRun::daemon_us),
            2,
        ),
        (
            "TLS added µs per request, nginx + daemon",
            added_us(outcome),
            2,
        ),
        (
            "TLS uprobes' BPF µs per request (nginx's calls and wrk's, in their own time)",
            spread(true, &|r| {
                let s = r.sensor.as_ref()?;
                let ns = s
                    .bpf
                    .iter()
                    .filter(|p| !p.name.starts_with("apis_tc"))
                    .map(|p| p.run_time_ns)
                    .sum();
                Some(per_request_us(ns, &r.wrk))
            }),
            2,
        ),
        (
            "TLS wrk µs per request, none",
            spread(false, &|r| Some(r.wrk_us())),
            2,
        ),
        (
            "TLS wrk µs per request, apisessions",
            spread(true, &|r| Some(r.wrk_us())),
            2,
        ),
    ];
    for (name, value, decimals) in rows {
        writeln!(text, "| {name} | {} |", value.show(decimals))?;
    }
    writeln!(
        text,
        "| TLS decoded exchanges / completed requests | {} |",
        spread(true, &|r| {
            Some(r.sensor.as_ref()?.exchanges() as f64 / r.wrk.requests.max(1) as f64)
        })
        .show(4)
    )?;
    let programs: BTreeSet<String> = runs(true)
        .filter_map(|r| r.sensor.as_ref())
        .flat_map(|s| s.bpf.iter().map(|p| p.name.clone()))
        .filter(|name| !name.starts_with("apis_tc"))
        .collect();
    for program in programs {
        let ns = spread(true, &|r| {
            let p = r.sensor.as_ref()?.bpf.iter().find(|p| p.name == program)?;
            (p.run_cnt > 0).then(|| p.run_time_ns as f64 / p.run_cnt as f64)
        });
        // A program that never ran here (the socket filter of another capture mode) says nothing.
        if ns.n > 0 {
            writeln!(text, "| TLS BPF `{program}`, ns per run | {} |", ns.show(0))?;
        }
    }
    Ok(())
}

/// The phase's section of the full report.
pub fn section(md: &mut String, outcome: &TlsOutcome) -> Result<()> {
    writeln!(
        md,
        "nginx serves the {}-byte JSON over TLS (OpenSSL, keep-alive) to wrk with {} \
         connections, without the sensor and with `run --tls-port {TLS_PORT}`, in turn. The \
         uprobes run in nginx's threads: the added CPU per request is nginx's CPU with the sensor \
         less without it in the same round, plus the daemon's. Probes on {}.\n",
        host::OVERHEAD_BODY_LEN,
        outcome.connections,
        placement(outcome)
    )?;
    rows(md, outcome)
}

pub fn json(outcome: &TlsOutcome) -> Value {
    json!({
        "port": TLS_PORT,
        "connections": outcome.connections,
        "placement": placement(outcome),
        "added_us_per_request": added_us(outcome).json(),
        "runs": outcome.runs.iter().map(|r| json!({
            "round": r.round,
            "sensor": r.sensor.is_some(),
            "requests": r.wrk.requests,
            "requests_per_s": r.wrk.rate(),
            "nginx_us_per_request": r.nginx_us(),
            "wrk_us_per_request": r.wrk_us(),
            "daemon_us_per_request": r.daemon_us(),
            "exchanges": r.sensor.as_ref().map(SensorRun::exchanges),
            "bpf": r.sensor.as_ref().map(|s| s.bpf.iter().map(|p| json!({
                "name": p.name, "run_time_ns": p.run_time_ns, "run_cnt": p.run_cnt,
            })).collect::<Vec<_>>()),
        })).collect::<Vec<_>>(),
    })
}

/// `--tls-only`: the TLS phase alone in its own namespaces, its entry appended to
/// docs/BENCHMARKS.md unless `--quick`.
pub fn run_only(options: &Options) -> Result<()> {
    let out_dir = workspace_root().join("target").join("bench");
    let work = out_dir.join("work");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let started = Instant::now();
    let machine = Machine::read();
    let net = Net::create(options.loopback, false)?;
    println!("xtask: TLS phase on {}", net.describe());
    let outcome = run(options, &net, &work)?;
    drop(net);
    let mut targets = Vec::new();
    self::targets(Some(&outcome), &mut targets);
    let mut entry = String::new();
    writeln!(entry, "- Machine: {}", machine.line())?;
    writeln!(
        entry,
        "- Command: `{}` (the TLS phase only; {} round(s) × {} s, {:.0} s in all)",
        super::command_line(),
        options.rounds,
        options.duration.as_secs(),
        started.elapsed().as_secs_f64()
    )?;
    writeln!(
        entry,
        "- Setup: nginx {} worker(s) serving {} bytes over TLS to wrk with {} connections \
         (keep-alive); probes on {}\n",
        options.workers,
        host::OVERHEAD_BODY_LEN,
        outcome.connections,
        placement(&outcome)
    )?;
    rows(&mut entry, &outcome)?;
    report::target_table(&mut entry, &targets)?;
    let md = format!(
        "# apisessions bench (TLS), {}\n\n- Commit: {}\n{entry}",
        machine.date, machine.commit
    );
    let md_path = out_dir.join("tls.md");
    let json_path = out_dir.join("tls.json");
    fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    fs::write(&json_path, serde_json::to_string_pretty(&json(&outcome))?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("\n{md}");
    if options.quick {
        println!("xtask: --quick: docs/BENCHMARKS.md left as it is (a smoke run is no result)");
    } else {
        let heading = format!("## {} · {} (TLS only)\n\n", machine.date, machine.commit);
        report::append_entry(
            &workspace_root().join("docs").join("BENCHMARKS.md"),
            &(heading + &entry),
        )?;
        println!("xtask: appended the figures to docs/BENCHMARKS.md");
    }
    Ok(())
}
