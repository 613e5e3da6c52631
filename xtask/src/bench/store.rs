//! Store and queries: ingest rate, query latency and bytes on disk at two store sizes.
//!
//! `store_fill` (sensor/examples/) writes generated sessions through the library's store, in
//! the transactions an import and the daemon's writer under load use, each commit durable; it
//! reports the time spent writing. The queries are the real CLI (`apisessions sessions …`,
//! `show …`) run as a user runs them, a new process each time, output to /dev/null; the store
//! is in the page cache (it was just written), as on a host where the daemon runs.
//!
//! Rounds alternate the queries (limit 50, --ip, --endpoint, show, limit 50, …). Ingest is
//! measured in as many fresh stores filled to the first size, then once more from the first
//! size to the second. With a baseline `store_fill` (an earlier build's), each round also fills
//! a fresh store to the first size with it, before this build's in every other round.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{baseline_first, host::check_interrupt};
use crate::binary;

/// What `store_fill` prints when done (one JSON object).
#[derive(Clone, Debug)]
struct Fill {
    written: u64,
    transaction_exchanges: u64,
    write_seconds: f64,
    sessions: u64,
    exchanges: u64,
    file_bytes: u64,
    big_session: String,
    probe_ip: String,
    probe_endpoint: String,
}

impl Fill {
    fn parse(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text.trim())
            .with_context(|| format!("store_fill printed {text:?}"))?;
        let number = |key: &str| {
            v[key]
                .as_f64()
                .with_context(|| format!("store_fill printed no {key}: {text}"))
        };
        let text_of = |key: &str| {
            v[key]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("store_fill printed no {key}: {text}"))
        };
        Ok(Self {
            written: number("written")? as u64,
            transaction_exchanges: number("transaction_exchanges")? as u64,
            write_seconds: number("write_seconds")?,
            sessions: number("sessions")? as u64,
            exchanges: number("exchanges")? as u64,
            file_bytes: number("file_bytes")? as u64,
            big_session: text_of("big_session")?,
            probe_ip: text_of("probe_ip")?,
            probe_endpoint: text_of("probe_endpoint")?,
        })
    }

    fn rate(&self) -> f64 {
        self.written as f64 / self.write_seconds
    }
}

/// One query, timed over the rounds.
#[derive(Clone, Debug)]
pub struct QueryRuns {
    pub name: &'static str,
    pub args: Vec<String>,
    pub ms: Vec<f64>,
    /// Lines it printed (checked once, untimed): the query found what it was asked for.
    pub lines: usize,
}

/// The store at one size.
#[derive(Clone, Debug)]
pub struct StoreLevel {
    pub exchanges: u64,
    pub sessions: u64,
    pub file_bytes: u64,
    /// Exchanges committed per second, per fill that reached this size.
    pub ingest: Vec<f64>,
    /// What the fills before this level's started from (0: an empty store).
    pub ingest_from: u64,
    pub queries: Vec<QueryRuns>,
}

pub struct StoreOutcome {
    pub levels: Vec<StoreLevel>,
    /// The baseline `store_fill`'s fills to the first size, one per round as the first level's
    /// `ingest`: exchanges committed per second, and bytes on disk per exchange.
    pub baseline: Option<Vec<(f64, f64)>>,
    /// Requests of the session `show` displays.
    pub show_requests: u64,
    /// Exchanges per transaction of the fills.
    pub transaction_exchanges: u64,
}

pub const SHOW_REQUESTS: u64 = 10_000;

fn fill_binary() -> PathBuf {
    super::example_binary("store_fill")
}

pub fn build() -> Result<()> {
    super::build_example("store_fill")
}

fn fill(program: &Path, data_dir: &Path, exchanges: u64) -> Result<Fill> {
    let out = Command::new(program)
        .arg(data_dir)
        .arg(exchanges.to_string())
        .stderr(Stdio::inherit())
        .output()
        .context("starting store_fill")?;
    if !out.status.success() {
        bail!("{} failed ({})", program.display(), out.status);
    }
    Fill::parse(&String::from_utf8_lossy(&out.stdout))
}

/// Runs `apisessions ARGS --data-dir DIR` with output to `stdout`; wall milliseconds.
fn query(data_dir: &Path, args: &[String], stdout: Stdio) -> Result<(f64, Vec<u8>)> {
    let started = Instant::now();
    let out = Command::new(binary(true))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("starting apisessions {}", args.join(" ")))?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!(
            "apisessions {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((ms, out.stdout))
}

fn measure_queries(data_dir: &Path, probe: &Fill, rounds: u32) -> Result<Vec<QueryRuns>> {
    let mut queries: Vec<QueryRuns> = [
        ("sessions --limit 50", vec!["sessions", "--limit", "50"]),
        ("sessions --ip", vec!["sessions", "--ip", &probe.probe_ip]),
        (
            "sessions --endpoint",
            vec!["sessions", "--endpoint", &probe.probe_endpoint],
        ),
        ("show (10,000 requests)", vec!["show", &probe.big_session]),
    ]
    .into_iter()
    .map(|(name, args)| QueryRuns {
        name,
        args: args.into_iter().map(str::to_owned).collect(),
        ms: Vec::new(),
        lines: 0,
    })
    .collect();
    for q in &mut queries {
        let (_, out) = query(data_dir, &q.args, Stdio::piped())?;
        q.lines = out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
        // A header line and at least one session; `show` lists every request.
        let least = if q.args[0] == "show" {
            SHOW_REQUESTS as usize
        } else {
            2
        };
        if q.lines < least {
            bail!(
                "apisessions {} printed {} lines, expected at least {least}",
                q.args.join(" "),
                q.lines
            );
        }
    }
    for _ in 0..rounds {
        for q in &mut queries {
            check_interrupt()?;
            let (ms, _) = query(data_dir, &q.args, Stdio::null())?;
            q.ms.push(ms);
        }
    }
    Ok(queries)
}

/// Fills stores to `exchanges / 10` and `exchanges`, timing ingest and queries at both; and,
/// given an earlier build's `store_fill`, its ingest to the first size in the same rounds.
pub fn run(
    work: &Path,
    exchanges: u64,
    rounds: u32,
    baseline: Option<&Path>,
) -> Result<StoreOutcome> {
    let small = (exchanges / 10).max(SHOW_REQUESTS);
    let dir = |name: &str| work.join(name);
    let mut ingest = Vec::new();
    let mut baseline_fills = baseline.map(|_| Vec::new());
    let mut kept = None;
    // The baseline's fill of a round: into a store of its own, removed after.
    let fill_baseline = |program: &Path, round: u32| -> Result<(f64, f64)> {
        check_interrupt()?;
        let baseline_dir = dir("store-baseline");
        let _ = fs::remove_dir_all(&baseline_dir);
        let filled = fill(program, &baseline_dir, small)?;
        let _ = fs::remove_dir_all(&baseline_dir);
        let bytes = filled.file_bytes as f64 / filled.exchanges.max(1) as f64;
        println!(
            "  round {} baseline ingest into an empty store: {:.0} exchanges/s ({} exchanges, \
             {:.1} s writing, {bytes:.0} bytes/exchange on disk)",
            round + 1,
            filled.rate(),
            filled.written,
            filled.write_seconds,
        );
        Ok((filled.rate(), bytes))
    };
    for round in 0..rounds {
        let first_baseline = match baseline {
            Some(program) if baseline_first(round) => Some(fill_baseline(program, round)?),
            _ => None,
        };
        check_interrupt()?;
        let data_dir = dir(&format!("store-{round}"));
        let _ = fs::remove_dir_all(&data_dir);
        let filled = fill(&fill_binary(), &data_dir, small)?;
        println!(
            "  round {} ingest into an empty store: {:.0} exchanges/s ({} exchanges, {:.1} s \
             writing, {:.0} bytes/exchange on disk)",
            round + 1,
            filled.rate(),
            filled.written,
            filled.write_seconds,
            filled.file_bytes as f64 / filled.exchanges as f64
        );
        ingest.push(filled.rate());
        if let (Some(program), Some(fills)) = (baseline, baseline_fills.as_mut()) {
            fills.push(match first_baseline {
                Some(done) => done,
                None => fill_baseline(program, round)?,
            });
        }
        // Keep the last store for the queries; the others only cost disk.
        if let Some((old, _)) = kept.replace((data_dir, filled)) {
            let _ = fs::remove_dir_all(old);
        }
    }
    let Some((data_dir, first)) = kept else {
        bail!("no store round ran");
    };
    println!("xtask: store: queries at {small} exchanges");
    let mut levels = vec![StoreLevel {
        exchanges: first.exchanges,
        sessions: first.sessions,
        file_bytes: first.file_bytes,
        ingest,
        ingest_from: 0,
        queries: measure_queries(&data_dir, &first, rounds)?,
    }];
    if exchanges > small {
        println!("xtask: store: filling on to {exchanges} exchanges");
        let more = fill(&fill_binary(), &data_dir, exchanges - small)?;
        println!(
            "  ingest from {small} to {exchanges}: {:.0} exchanges/s ({:.1} s writing, {:.0} \
             bytes/exchange on disk)",
            more.rate(),
            more.write_seconds,
            more.file_bytes as f64 / more.exchanges as f64
        );
        println!("xtask: store: queries at {exchanges} exchanges");
        levels.push(StoreLevel {
            exchanges: more.exchanges,
            sessions: more.sessions,
            file_bytes: more.file_bytes,
            ingest: vec![more.rate()],
            ingest_from: first.exchanges,
            // The first fill's probes: its 10,000-request session, one of its client IPs.
            queries: measure_queries(&data_dir, &first, rounds)?,
        });
    }
    let _ = fs::remove_dir_all(&data_dir);
    Ok(StoreOutcome {
        levels,
        baseline: baseline_fills,
        show_requests: SHOW_REQUESTS,
        transaction_exchanges: first.transaction_exchanges,
    })
}
