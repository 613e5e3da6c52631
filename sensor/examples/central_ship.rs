//! Ships generated exchanges from a store's outbox to a ClickHouse server with the library's
//! shipper, for `cargo xtask bench` (central phase). Prints one JSON line.
//!
//! `central_ship throughput DATA_DIR URL USER PASSWORD_FILE EXCHANGES` — fills the outbox of a
//! new store with EXCHANGES exchanges (the last hour's traffic of 2,000 active sessions, in the
//! daemon writer's transactions), then starts the shipper with the default `[central]`
//! settings and times it until the server acknowledged all of them: the backlog an outage
//! leaves, shipped as fast as the shipper can.
//!
//! `central_ship lag DATA_DIR URL USER PASSWORD_FILE RATE SECONDS` — with the shipper running,
//! stores RATE exchanges per second (a commit every [`COMMIT_EVERY`] of what the rate owes by
//! then, as the daemon's writer under steady load) for SECONDS, and samples every [`SAMPLE_EVERY`] the lag: the age of the
//! oldest exchange the server has not acknowledged (0 when nothing is pending), measured
//! from its commit into the local store. Also reports the largest `lag_seconds` the shipper's
//! own counter showed.
//!
//! The shipper's counters tell what was acknowledged: `exchanges_shipped` moves only after the
//! server answered the insert and the cursor moved, and the outbox ships in commit order.

use std::{
    io::Write as _,
    path::PathBuf,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use apisessions::{
    config::CentralSection,
    exchange::now_ns,
    ship::{Shipper, ShipperCounters, ShipperSettings},
    store::{DEFAULT_MAP_SIZE, Store},
};

#[path = "common/traffic.rs"]
mod traffic;

// The daemon's allocator (see src/bin/apisessions/main.rs), so that the figures are its.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ACTIVE: usize = 2000;
/// Exchanges per transaction when filling a backlog (the daemon's writer under load).
const FILL_BATCH: usize = 10_000;
const COMMIT_EVERY: Duration = Duration::from_millis(50);
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
const RETENTION: Duration = Duration::from_secs(7 * 86_400);

struct Target {
    data_dir: PathBuf,
    section: CentralSection,
}

impl Target {
    fn parse(args: &mut impl Iterator<Item = String>) -> Result<Self> {
        let (Some(dir), Some(url), Some(user), Some(password_file)) =
            (args.next(), args.next(), args.next(), args.next())
        else {
            bail!("usage: central_ship MODE DATA_DIR URL USER PASSWORD_FILE ...");
        };
        let url = url
            .parse()
            .map_err(|e| anyhow::anyhow!("{url}: not a central url: {e}"))?;
        let mut section = CentralSection::new(url);
        section.user = user;
        section.password_file = Some(password_file.into());
        section.host_id = Some("bench".into());
        Ok(Self {
            data_dir: dir.into(),
            section,
        })
    }

    fn open(&self) -> Result<Store> {
        let mut store = Store::open(&self.data_dir, DEFAULT_MAP_SIZE)?;
        store.enable_outbox();
        Ok(store)
    }

    fn settings(&self) -> ShipperSettings {
        ShipperSettings::from_config(&self.section, RETENTION)
    }
}

fn number<T: std::str::FromStr>(arg: Option<String>, what: &str) -> Result<T> {
    arg.with_context(|| format!("{what} missing"))?
        .parse()
        .map_err(|_| anyhow::anyhow!("{what} must be a number"))
}

fn shipped(counters: &ShipperCounters) -> u64 {
    counters.exchanges_shipped.load(Ordering::Relaxed)
}

fn throughput(target: &Target, total: u64) -> Result<serde_json::Value> {
    let store = target.open()?;
    let mut mix = traffic::Mix::new(0x5eed, ACTIVE);
    let hour = 3600 * 1_000_000_000u64;
    let first = now_ns() - hour;
    let step = hour / total.max(1);
    let mut written = 0u64;
    let mut batch = Vec::with_capacity(FILL_BATCH);
    while written < total {
        batch.clear();
        while batch.len() < FILL_BATCH && written + (batch.len() as u64) < total {
            batch.push(mix.next(first + (written + batch.len() as u64) * step));
        }
        store.write(&batch)?;
        written += batch.len() as u64;
    }
    let started = Instant::now();
    let shipper = Shipper::spawn(store.share(), &target.section, target.settings())?;
    while shipped(&shipper.counters) < total {
        if started.elapsed() > Duration::from_secs(1800) {
            bail!(
                "shipped {} of {total} in 30 minutes; last error: {:?}",
                shipped(&shipper.counters),
                shipper.counters.last_error()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = started.elapsed().as_secs_f64();
    let inserts = shipper.counters.inserts.load(Ordering::Relaxed);
    let failures = shipper.counters.failures.load(Ordering::Relaxed);
    shipper.stop();
    Ok(serde_json::json!({
        "exchanges": total,
        "seconds": seconds,
        "inserts": inserts,
        "failures": failures,
        "batch_size": target.section.batch_size,
    }))
}

fn lag(target: &Target, rate: u64, seconds: u64) -> Result<serde_json::Value> {
    let store = target.open()?;
    let shipper = Shipper::spawn(store.share(), &target.section, target.settings())?;
    // The schema is created before the clock starts: a daemon does that once at its start.
    let ready = Instant::now();
    while shipper.counters.schema_version.load(Ordering::Relaxed) == 0 {
        if ready.elapsed() > Duration::from_secs(60) {
            bail!("no schema after 60 s: {:?}", shipper.counters.last_error());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut mix = traffic::Mix::new(0x1a9, ACTIVE);
    // (when committed, exchanges committed up to then), in commit order.
    let mut commits: Vec<(Instant, u64)> = Vec::new();
    let mut lags_ms = Vec::new();
    let mut counter_max = 0u64;
    let mut written = 0u64;
    let mut batch = Vec::new();
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let mut next_commit = started;
    let mut next_sample = started + SAMPLE_EVERY;
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_commit {
            // What the rate owes by now: a late commit (a slow fsync) carries more, so the
            // rate holds over the run as the daemon's writer batches what queued meanwhile.
            let due = (rate as f64 * now.duration_since(started).as_secs_f64()) as u64;
            if due > written {
                batch.clear();
                let ts = now_ns();
                batch.extend((written..due).map(|_| mix.next(ts)));
                store.write(&batch)?;
                written = due;
                commits.push((Instant::now(), written));
            }
            next_commit += COMMIT_EVERY;
        }
        if now >= next_sample {
            let acknowledged = shipped(&shipper.counters);
            // The oldest unacknowledged exchange is in the first commit not fully shipped.
            let index = commits.partition_point(|(_, upto)| *upto <= acknowledged);
            let lag = commits
                .get(index)
                .map_or(Duration::ZERO, |(at, _)| now.saturating_duration_since(*at));
            lags_ms.push(lag.as_secs_f64() * 1000.0);
            counter_max = counter_max.max(shipper.counters.lag_seconds.load(Ordering::Relaxed));
            next_sample += SAMPLE_EVERY;
        }
        let wake = next_commit.min(next_sample);
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Then until the rest is shipped: how long the tail takes once the load stops.
    let drained = Instant::now();
    while shipped(&shipper.counters) < written && drained.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let drain_seconds = drained.elapsed().as_secs_f64();
    let all_shipped = shipped(&shipper.counters) == written;
    let inserts = shipper.counters.inserts.load(Ordering::Relaxed);
    let failures = shipper.counters.failures.load(Ordering::Relaxed);
    shipper.stop();
    Ok(serde_json::json!({
        "written": written,
        "seconds": elapsed,
        "rate": written as f64 / elapsed,
        "lag_ms": lags_ms,
        "counter_lag_seconds_max": counter_max,
        "drain_seconds": drain_seconds,
        "all_shipped": all_shipped,
        "inserts": inserts,
        "failures": failures,
        "interval_ms": target.section.interval.as_millis() as u64,
        "batch_size": target.section.batch_size,
    }))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let line = match mode.as_str() {
        "throughput" => {
            let target = Target::parse(&mut args)?;
            throughput(&target, number(args.next(), "EXCHANGES")?)?
        }
        "lag" => {
            let target = Target::parse(&mut args)?;
            let rate = number(args.next(), "RATE")?;
            lag(&target, rate, number(args.next(), "SECONDS")?)?
        }
        _ => bail!("usage: central_ship throughput|lag DATA_DIR URL USER PASSWORD_FILE ..."),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    Ok(())
}
