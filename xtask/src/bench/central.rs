//! The central store: how fast the shipper drains a backlog from the LMDB outbox into a local
//! ClickHouse server, and how far behind it stays under a steady request rate.
//!
//! The server is Debian's `clickhouse-server` (what the tests use), started privately: its own
//! directory under the bench's work directory, loopback ports of its own, the tests'
//! configuration (tests/common/clickhouse_config.rs). `central_ship` (sensor/examples/) runs
//! the library's shipper with the default `[central]` settings (batch size, interval):
//!
//! - throughput: it fills a fresh store's outbox with N generated exchanges (the last hour of
//!   2,000 active sessions), then times the shipper until the server acknowledged all of them
//!   (schema creation included, as after a daemon's start).
//! - lag: it stores 10,000 exchanges per second (a commit every 50 ms) with the shipper running
//!   and samples every 100 ms the age of the oldest exchange the server has not acknowledged.
//!
//! Each round starts from an empty database and a fresh store.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::host::{Proc, check_interrupt, wait_for};

#[path = "../../../tests/common/clickhouse_config.rs"]
mod clickhouse_config;

pub const SERVER_BIN: &str = "/usr/sbin/clickhouse-server";
const USER: &str = "apisessions";
/// The request rate of the lag measurement (the issue's).
pub const LAG_RATE: u64 = 10_000;

/// A private clickhouse-server; stopped (and its directory removed) on drop.
struct Server {
    dir: PathBuf,
    http_port: u16,
    password_file: PathBuf,
    version: String,
    process: Proc,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Server {
    fn start(dir: &Path) -> Result<Self> {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let (http_port, tcp_port) = (free_port()?, free_port()?);
        let password = format!("bench-{:08x}", std::process::id());
        let password_file = dir.join("password");
        fs::write(&password_file, format!("{password}\n"))?;
        clickhouse_config::write_server_config(dir, http_port, tcp_port, USER, &password)
            .with_context(|| format!("writing the server's configuration in {}", dir.display()))?;
        let log = fs::File::create(dir.join("stdout.log"))?;
        let process = Proc::spawn(
            "clickhouse-server",
            Command::new(SERVER_BIN)
                .arg(format!(
                    "--config-file={}",
                    dir.join("config.xml").display()
                ))
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log),
        )?;
        // The package's version: 18.16's binary has no --version.
        let version = crate::output(Command::new("dpkg-query").args([
            "-W",
            "-f",
            "${Version}",
            "clickhouse-server",
        ]))
        .map(|v| format!("clickhouse-server {}", v.trim()))
        .unwrap_or_else(|_| "clickhouse-server".into());
        let server = Self {
            dir: dir.to_owned(),
            http_port,
            password_file,
            version,
            process,
        };
        wait_for(
            "clickhouse-server to answer",
            Duration::from_secs(60),
            || server.answers(),
        )?;
        Ok(server)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.http_port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut answer = String::new();
        stream
            .write_all(b"GET /ping HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.ends_with("Ok.\n")
    }

    /// Runs `sql` as the bench's user (curl, the password from its file).
    fn execute(&self, sql: &str) -> Result<()> {
        let password = fs::read_to_string(&self.password_file)?;
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body", "--data-binary", sql])
            .args(["-H", &format!("X-ClickHouse-User: {USER}")])
            .args(["-H", &format!("X-ClickHouse-Key: {}", password.trim())])
            .arg(format!("{}/", self.url()))
            .output()
            .context("starting curl")?;
        if !out.status.success() {
            bail!(
                "{sql}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.process.stop(Duration::from_secs(30));
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One lag run.
#[derive(Clone, Debug)]
pub struct LagRun {
    /// Exchanges stored per second, as achieved.
    pub rate: f64,
    pub median_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
    /// The largest `lag_seconds` the shipper's counter (what `stats` shows) reported.
    pub counter_max_s: u64,
    /// Seconds from the end of the load until everything was acknowledged.
    pub drain_s: f64,
    pub all_shipped: bool,
}

pub struct CentralOutcome {
    pub server: String,
    /// Exchanges of each throughput run's backlog.
    pub exchanges: u64,
    /// Exchanges acknowledged per second, per round.
    pub throughput: Vec<f64>,
    pub lag_seconds: u64,
    pub lag: Vec<LagRun>,
    /// The shipper's settings (the `[central]` defaults).
    pub batch_size: u64,
    pub interval_ms: u64,
}

fn ship_binary() -> PathBuf {
    super::example_binary("central_ship")
}

pub fn build() -> Result<()> {
    super::build_example("central_ship")
}

fn ship(server: &Server, data_dir: &Path, args: &[String]) -> Result<Value> {
    // Each run starts from an empty database (the shipper creates the schema) and store.
    server.execute("DROP DATABASE IF EXISTS apisessions")?;
    let _ = fs::remove_dir_all(data_dir);
    let mut command = Command::new(ship_binary());
    command
        .arg(&args[0])
        .arg(data_dir)
        .arg(server.url())
        .arg(USER)
        .arg(&server.password_file)
        .args(&args[1..])
        .stderr(Stdio::inherit());
    let out = command.output().context("starting central_ship")?;
    let _ = fs::remove_dir_all(data_dir);
    if !out.status.success() {
        bail!("central_ship {} failed ({})", args.join(" "), out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).with_context(|| format!("central_ship printed {text:?}"))
}

fn number(v: &Value, key: &str) -> Result<f64> {
    v[key]
        .as_f64()
        .with_context(|| format!("central_ship printed no {key}: {v}"))
}

/// The `q` quantile (0..=1) of `values`, nearest rank.
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// `rounds` throughput runs of `exchanges` each and as many lag runs of `lag_seconds` at
/// [`LAG_RATE`], alternating.
pub fn run(work: &Path, exchanges: u64, lag_seconds: u64, rounds: u32) -> Result<CentralOutcome> {
    let server = Server::start(&work.join("clickhouse"))?;
    println!("xtask: central: {} on {}", server.version, server.url());
    let data_dir = work.join("central-store");
    let mut outcome = CentralOutcome {
        server: server.version.clone(),
        exchanges,
        throughput: Vec::new(),
        lag_seconds,
        lag: Vec::new(),
        batch_size: 0,
        interval_ms: 0,
    };
    for round in 0..rounds {
        check_interrupt()?;
        let v = ship(
            &server,
            &data_dir,
            &["throughput".into(), exchanges.to_string()],
        )?;
        let rate = number(&v, "exchanges")? / number(&v, "seconds")?;
        outcome.batch_size = number(&v, "batch_size")? as u64;
        println!(
            "  round {} throughput: {rate:.0} exchanges/s ({} exchanges in {:.1} s, {} inserts, \
             {} failures)",
            round + 1,
            exchanges,
            number(&v, "seconds")?,
            v["inserts"],
            v["failures"]
        );
        outcome.throughput.push(rate);
        check_interrupt()?;
        let v = ship(
            &server,
            &data_dir,
            &["lag".into(), LAG_RATE.to_string(), lag_seconds.to_string()],
        )?;
        let samples: Vec<f64> = v["lag_ms"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        if samples.is_empty() {
            bail!("central_ship lag printed no samples: {v}");
        }
        outcome.interval_ms = number(&v, "interval_ms")? as u64;
        let lag = LagRun {
            rate: number(&v, "rate")?,
            median_ms: quantile(&samples, 0.5),
            p95_ms: quantile(&samples, 0.95),
            max_ms: quantile(&samples, 1.0),
            counter_max_s: number(&v, "counter_lag_seconds_max")? as u64,
            drain_s: number(&v, "drain_seconds")?,
            all_shipped: v["all_shipped"].as_bool() == Some(true),
        };
        println!(
            "  round {} lag at {:.0} exchanges/s: median {:.0} ms, p95 {:.0} ms, max {:.0} ms \
             (stats' lag_seconds at most {}); the rest acknowledged {:.1} s after the load{}",
            round + 1,
            lag.rate,
            lag.median_ms,
            lag.p95_ms,
            lag.max_ms,
            lag.counter_max_s,
            lag.drain_s,
            if lag.all_shipped {
                ""
            } else {
                " (NOT ALL SHIPPED)"
            }
        );
        outcome.lag.push(lag);
    }
    Ok(outcome)
}
