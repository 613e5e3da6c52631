//! The `apisessions` command: a thin layer over the library that parses arguments, runs the
//! daemon loop and turns errors into one readable line.

use std::{
    fs,
    io::{self, IsTerminal as _, Write as _},
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, atomic::Ordering, mpsc},
    thread,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use apisessions::{
    capture::{
        AttachMode, CaptureOptions, Clock, Interface, Segment, Sensor,
        ports::{PortPolicy, listening_ports},
    },
    config::{Config, Ports},
    container::ContainerIndex,
    dump,
    exchange::Exchange,
    flow::{FlowConfig, FlowTable},
    http::HttpConfig,
    import::ExchangeIds,
    nat::{Conntrack, NatConfig, NatTable},
    proxy::{self, ProxyConfig, ProxyStage},
    record::{Assignment, Batch, Redaction, Secret, SessionSummary, StoredExchange},
    report::{self, Exporter, Format},
    segment::TcpSegment,
    sessions::{SessionConfig, Sessionizer},
    source::{PcapFormat, PcapSource},
    stats::{StatsReport, rfc3339},
    store::{
        DEFAULT_MAP_SIZE, SessionFilter, Store, StoreError, StoreWriter, WriterCounters,
        writer::log_rejected,
    },
};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::signal::unix::{SignalKind, signal};

/// The decoder allocates and frees small objects at a high rate (each exchange's strings and
/// buffers, freed on another thread once stored), where glibc's malloc spent about a third of
/// the daemon's time; mimalloc does the same work for about 15 % less CPU per exchange.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "apisessions",
    version,
    about = "API session sensor: captures a host's HTTP traffic with eBPF",
    long_about = "API session sensor: captures a host's HTTP traffic with eBPF and reports \
                  what it saw. `run` starts the capture daemon; `stats` shows its counters."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Capture traffic on this host (needs root, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON).
    Run(RunArgs),
    /// Decode a pcap or pcapng capture file through the same stages as live traffic.
    Import(ImportArgs),
    /// List sessions, newest first.
    Sessions(SessionsArgs),
    /// Show one session: who, what, and its request timeline.
    Show(ShowArgs),
    /// Write stored exchanges as NDJSON, CSV or HAR.
    Export(ExportArgs),
    /// Delete sessions older than the retention period (or --older-than).
    Prune(PruneArgs),
    /// Show the counters of the running daemon, or the last ones it wrote.
    Stats(StatsArgs),
}

/// A point in time: an age like `1h` or `30m` (that long ago), or an RFC 3339 time.
#[derive(Clone, Copy, Debug)]
struct When(u64);

impl std::str::FromStr for When {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let now = SystemTime::now();
        let time = match humantime::parse_duration(s) {
            Ok(age) => now.checked_sub(age).ok_or("too long ago")?,
            Err(_) => humantime::parse_rfc3339_weak(s).map_err(|_| {
                format!("'{s}' is neither an age (1h, 30m, 7d) nor a time (2026-11-29T15:00:00Z)")
            })?,
        };
        Ok(Self(
            time.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        ))
    }
}

#[derive(Args)]
struct SessionsArgs {
    /// Sessions active since this age or time (1h, 30m, 2026-11-29T15:00:00Z).
    #[arg(long)]
    since: Option<When>,
    /// Sessions that started before this time.
    #[arg(long)]
    until: Option<When>,
    /// Sessions from this client IP.
    #[arg(long)]
    ip: Option<String>,
    /// Sessions that called this host.
    #[arg(long)]
    host: Option<String>,
    /// Sessions that touched this endpoint (`/users/{id}`, or a path such as /users/42).
    #[arg(long)]
    endpoint: Option<String>,
    /// Sessions with requests of this method.
    #[arg(long)]
    method: Option<String>,
    /// Sessions with responses of this status code.
    #[arg(long)]
    status: Option<u16>,
    /// Sessions of this user (the `user` context parameter).
    #[arg(long)]
    user: Option<String>,
    /// Sessions shown at most (0: all).
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: DataDirArg,
}

#[derive(Args)]
struct ShowArgs {
    /// The session id (from `apisessions sessions`).
    session_id: String,
    /// Print the session and its exchanges as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: DataDirArg,
}

#[derive(Args)]
struct ExportArgs {
    /// ndjson (one exchange per line, Zeek http.log field names), csv, or har (HAR 1.2).
    #[arg(long, default_value = "ndjson")]
    format: Format,
    /// Only this session.
    #[arg(long)]
    session: Option<String>,
    #[arg(long)]
    since: Option<When>,
    #[arg(long)]
    until: Option<When>,
    #[command(flatten)]
    data: DataDirArg,
}

#[derive(Args)]
struct PruneArgs {
    /// Delete sessions that ended longer ago than this. Default: storage.retention (7d).
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    older_than: Option<Duration>,
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    data: DataDirArg,
}

#[derive(Args)]
struct ImportArgs {
    /// The capture file (pcap or pcapng; Ethernet, Linux cooked SLL/SLL2, raw IP, VLAN tags), or
    /// several files of one capture in the order they were written (`tcpdump -C`/`-G` rotation:
    /// trace, trace1, trace2, ...): connections that cross from one file into the next are
    /// decoded whole.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Decode only connections on this TCP port (repeatable). Default: HTTP is recognised by
    /// content on any port.
    #[arg(long = "port", value_name = "P")]
    ports: Vec<u16>,
    /// Write every exchange to stdout as one JSON object per line.
    #[arg(long)]
    ndjson: bool,
    /// Body bytes kept per message. Default: the configuration's capture.body_cap, else 16384.
    #[arg(long, value_name = "BYTES")]
    body_cap: Option<usize>,
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    data: DataDirArg,
}

/// Exchanges stored per transaction by an import.
const IMPORT_BATCH: usize = apisessions::store::writer::TRANSACTION_EXCHANGES;

#[derive(Args)]
struct DataDirArg {
    /// Where state and statistics live. Default: the configuration file's storage.data_dir,
    /// else /var/lib/apisessions.
    #[arg(long, env = "APISESSIONS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl DataDirArg {
    fn resolve(&self, config: &Config) -> PathBuf {
        self.data_dir
            .clone()
            .or_else(|| config.storage.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("/var/lib/apisessions"))
    }
}

#[derive(Args)]
struct ConfigArg {
    /// Configuration file (TOML; see the README). Command-line flags override what it says.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ConfigArg {
    fn load(&self) -> Result<Config> {
        Ok(match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        })
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Check the configuration file and exit.
    #[arg(long, requires = "config")]
    check: bool,
    /// Interface to capture on (repeatable). Default: every interface that is up.
    #[arg(long = "iface", value_name = "IF")]
    interfaces: Vec<String>,
    /// TCP port to capture, either end of the connection (repeatable).
    /// Default: 80, 8000, 8080, 3000, 5000.
    #[arg(long = "port", value_name = "P")]
    ports: Vec<u16>,
    /// Capture every TCP port.
    #[arg(long, conflicts_with = "ports")]
    all_ports: bool,
    /// Print one line per HTTP exchange to stdout: time, client, method, uri, status, time to
    /// first byte, duration, body sizes and flags.
    #[arg(long)]
    dump: bool,
    /// Print one line per captured TCP segment to stdout (for debugging the capture).
    #[arg(long, conflicts_with = "dump")]
    dump_segments: bool,
    /// How to hook into the network stack: auto (tcx on Linux >= 6.6, else clsact), tcx,
    /// clsact, or socket (AF_PACKET socket filter, the fallback). Default: auto.
    #[arg(long, value_name = "MODE")]
    attach: Option<AttachMode>,
    /// Payload bytes captured per TCP segment at most; the rest is counted as truncated.
    /// Default: 65536.
    #[arg(long, value_name = "BYTES")]
    snaplen: Option<u32>,
    /// Kernel ring-buffer size in bytes (a power of two). Default: 16 MiB.
    #[arg(long, value_name = "BYTES")]
    ring_size: Option<u32>,
    /// Body bytes kept per HTTP message. Default: 16384.
    #[arg(long, value_name = "BYTES")]
    body_cap: Option<usize>,
    /// Seconds between summary log lines (events/s, bytes/s, drops); 0 turns them off.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    summary_interval: u64,
    #[command(flatten)]
    data: DataDirArg,
}

impl RunArgs {
    /// The configuration file with this command line's flags laid over it.
    fn settings(&self) -> Result<Config> {
        let mut config = self.config.load()?;
        let capture = &mut config.capture;
        if !self.interfaces.is_empty() {
            capture.interfaces = self.interfaces.clone();
        }
        if !self.ports.is_empty() {
            capture.ports = Ports::List(self.ports.clone());
            capture.all_ports = false;
        }
        capture.all_ports |= self.all_ports;
        capture.attach = self.attach.unwrap_or(capture.attach);
        capture.snaplen = self.snaplen.unwrap_or(capture.snaplen);
        capture.ring_size = self.ring_size.unwrap_or(capture.ring_size);
        capture.body_cap = self.body_cap.unwrap_or(capture.body_cap);
        Ok(config)
    }
}

#[derive(Args)]
struct StatsArgs {
    /// Print the statistics as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: DataDirArg,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Import(args) => import(args),
        Command::Sessions(args) => sessions(args),
        Command::Show(args) => show(args),
        Command::Export(args) => export(args),
        Command::Prune(args) => prune(args),
        Command::Stats(args) => stats(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apisessions: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn stats(args: StatsArgs) -> Result<()> {
    let report = StatsReport::read(&args.data.resolve(&Config::default()))?;
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.render())?;
    }
    Ok(())
}

fn import(args: ImportArgs) -> Result<()> {
    let settings = args.config.load()?;
    let mut sources = args
        .files
        .iter()
        .map(PcapSource::open)
        .collect::<Result<Vec<_>, _>>()?;
    // Without --port, HTTP is found by content on any port; the configured ports still help to
    // tell client from server where the handshake was not captured.
    let config = FlowConfig {
        server_ports: match (&settings.capture.ports, args.ports.is_empty()) {
            (_, false) => args.ports.clone(),
            (Ports::List(ports), true) => ports.clone(),
            // Hints only: which side is the server where the handshake was not captured.
            (Ports::Auto, true) => apisessions::capture::DEFAULT_PORTS.to_vec(),
        },
        only_server_ports: !args.ports.is_empty(),
        http: HttpConfig {
            body_cap: args.body_cap.unwrap_or(settings.capture.body_cap),
            ..HttpConfig::default()
        },
        ..FlowConfig::default()
    };
    let progress = if io::stderr().is_terminal() {
        let bar = ProgressBar::new(sources.iter().map(|s| s.progress().1).sum());
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let data_dir = args.data.resolve(&settings);
    create_data_dir(&data_dir)?;
    let store = Store::open(&data_dir, DEFAULT_MAP_SIZE)?;
    // Continue the sessions an earlier import (or the daemon) left, however old: the capture's
    // own times decide what is still active.
    let mut sessionizer = restored_sessionizer(&settings, &data_dir, &store, 0)?;
    let redaction = Redaction::from_config(&settings);
    // Exchanges an earlier import of the same capture stored are recognised by their ids.
    let mut exchange_ids = ExchangeIds::new(sessionizer.secret().clone());
    let mut batch = Batch::default();
    let mut out = io::BufWriter::new(io::stdout().lock());
    // Decoding and storing overlap: a writer thread commits one batch while the next fills.
    // The hand-over holds one batch, so at most three are in memory; a store error stops the
    // writer, which the decoding side notices at its next hand-over.
    let (tx, rx) = mpsc::sync_channel::<Batch>(1);
    let store_counters = WriterCounters::default();
    let duplicates = std::sync::atomic::AtomicU64::new(0);
    let (summary, stored) = thread::scope(|scope| {
        let writer = scope.spawn(|| {
            // A record that cannot be stored is rejected alone (logged, counted by reason);
            // only a failure of the store itself stops the import.
            for batch in rx {
                let report = store.write_isolating(&batch.exchanges, &batch.state)?;
                store_counters
                    .exchanges_written
                    .fetch_add(report.written as u64, Ordering::Relaxed);
                duplicates.fetch_add(report.duplicates as u64, Ordering::Relaxed);
                for (position, reason) in &report.rejected {
                    store_counters.count_rejected(reason);
                    log_rejected(batch.exchanges.get(*position), reason);
                }
            }
            Ok::<_, StoreError>(())
        });
        let summary = apisessions::import::run_all(
            &mut sources,
            config,
            ProxyConfig::from(&settings),
            |exchange| {
                let (mut record, assignment) = sessionizer.record(&exchange, &redaction);
                record.exchange_id = Some(exchange_ids.next(&exchange));
                if args.ndjson {
                    serde_json::to_writer(&mut out, &record.to_json(&assignment.session_id))?;
                    out.write_all(b"\n")?;
                }
                batch.exchanges.push((record, assignment));
                if batch.exchanges.len() >= IMPORT_BATCH {
                    batch.state = sessionizer.take_changes();
                    let full = std::mem::take(&mut batch);
                    tx.send(full)
                        .map_err(|_| io::Error::other("the store refused a batch"))?;
                }
                Ok(())
            },
            |read, _| progress.set_position(read),
        );
        batch.state = sessionizer.take_changes();
        if summary.is_ok() && !batch.is_empty() {
            // A refusal shows as the writer's error below.
            let _ = tx.send(std::mem::take(&mut batch));
        }
        drop(tx);
        let stored = match writer.join() {
            Ok(written) => written.map_err(anyhow::Error::from),
            Err(_) => Err(anyhow::anyhow!("the store writer thread panicked")),
        };
        (summary, stored)
    });
    progress.finish_and_clear();
    stored.with_context(|| format!("storing into {}", data_dir.display()))?;
    let summary = summary?;
    out.flush().context("writing to stdout")?;
    let mut err = io::stderr().lock();
    writeln!(
        err,
        "imported {} in {:.2} s: {} packets, {} TCP segments, {} flows, {} exchanges",
        sources
            .iter()
            .map(|s| format!(
                "{} ({})",
                s.path().display(),
                match s.format() {
                    PcapFormat::Pcap { .. } => "pcap",
                    PcapFormat::PcapNg => "pcapng",
                }
            ))
            .collect::<Vec<_>>()
            .join(", "),
        summary.seconds,
        summary.get("source", "packets"),
        summary.get("source", "tcp_segments"),
        summary.get("flows", "created"),
        summary.exchanges,
    )?;
    let anomalies = summary.anomalies();
    if anomalies.is_empty() {
        writeln!(err, "anomalies: none")?;
    } else {
        let list: Vec<String> = anomalies
            .iter()
            .map(|(name, n)| format!("{name}={n}"))
            .collect();
        writeln!(err, "anomalies: {}", list.join(" "))?;
    }
    for (path, offset) in &summary.truncated {
        writeln!(
            err,
            "note: {} ends inside the record at byte {offset} (cut-off capture)",
            path.display()
        )?;
    }
    let sessions = sessionizer.counters.sessions_started;
    writeln!(
        err,
        "stored {} exchanges in {sessions} sessions in {}",
        store_counters.exchanges_written.load(Ordering::Relaxed),
        data_dir.display()
    )?;
    let duplicates = duplicates.into_inner();
    if duplicates > 0 {
        writeln!(
            err,
            "{duplicates} exchanges were stored by an earlier import of this capture and are not \
             stored again"
        )?;
    }
    let rejected: Vec<String> = store_counters
        .snapshot()
        .into_iter()
        .filter(|(name, n)| name.starts_with("exchanges_rejected") && *n > 0)
        .map(|(name, n)| format!("{name}={n}"))
        .collect();
    if !rejected.is_empty() {
        writeln!(
            err,
            "not stored (see the errors above): {}",
            rejected.join(" ")
        )?;
    }
    Ok(())
}

fn sessions(args: SessionsArgs) -> Result<()> {
    let store = Store::open_read_only(&args.data.resolve(&Config::default()))?;
    let filter = SessionFilter {
        since_ns: args.since.map(|w| w.0),
        until_ns: args.until.map(|w| w.0),
        ip: args.ip,
        host: args.host,
        // A concrete path finds its template's sessions too.
        endpoint: args
            .endpoint
            .as_deref()
            .map(apisessions::endpoint::template),
        method: args.method,
        status: args.status,
        user: args.user,
        limit: args.limit,
    };
    let list = store.list(&filter)?;
    let mut out = io::stdout().lock();
    if args.json {
        let array: Vec<serde_json::Value> = list.iter().map(SessionSummary::to_json).collect();
        serde_json::to_writer_pretty(&mut out, &array)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report::sessions_table(&list))?;
    }
    Ok(())
}

fn show(args: ShowArgs) -> Result<()> {
    let store = Store::open_read_only(&args.data.resolve(&Config::default()))?;
    let summary = store.session(&args.session_id)?.with_context(|| {
        format!(
            "no session {} (see `apisessions sessions`)",
            args.session_id
        )
    })?;
    let mut exchanges = Vec::new();
    store.exchanges(&args.session_id, |e| {
        exchanges.push(e);
        true
    })?;
    let mut out = io::stdout().lock();
    if args.json {
        let mut object = summary.to_json();
        object["exchanges"] = exchanges
            .iter()
            .map(|e| e.to_json(&summary.session_id))
            .collect();
        serde_json::to_writer_pretty(&mut out, &object)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report::session_page(&summary, &exchanges))?;
    }
    Ok(())
}

fn export(args: ExportArgs) -> Result<()> {
    let store = Store::open_read_only(&args.data.resolve(&Config::default()))?;
    let (since, until) = (
        args.since.map_or(0, |w| w.0),
        args.until.map_or(u64::MAX, |w| w.0),
    );
    let ids: Vec<String> = match &args.session {
        Some(id) => vec![id.clone()],
        None => {
            let filter = SessionFilter {
                since_ns: Some(since),
                until_ns: Some(until),
                ..SessionFilter::default()
            };
            // Oldest first, so the export reads in time order session by session.
            store
                .list(&filter)?
                .into_iter()
                .rev()
                .map(|s| s.session_id)
                .collect()
        }
    };
    let mut exporter = Exporter::new(io::BufWriter::new(io::stdout().lock()), args.format);
    let mut result = Ok(());
    // A session whose stored records cannot be read is reported and skipped: the export goes
    // on with the others, and fails at the end so that a script notices.
    let mut unreadable = 0;
    for id in &ids {
        let read = store.exchanges(id, |exchange| {
            if exchange.ts_ns < since || exchange.ts_ns > until {
                return true;
            }
            result = exporter.write(id, &exchange);
            result.is_ok()
        });
        match read {
            Ok(()) => {}
            Err(e @ StoreError::Corrupt { .. }) => {
                unreadable += 1;
                log::error!("session {id} is not exported completely: {e}");
            }
            Err(e) => return Err(e.into()),
        }
        if result.is_err() {
            break;
        }
    }
    match result.and_then(|()| exporter.finish()) {
        // A reader that stopped early (`| head`) is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("writing the export"),
        Ok(()) if unreadable > 0 => Err(anyhow::anyhow!(
            "{unreadable} of {} sessions could not be read completely (see the errors above)",
            ids.len()
        )),
        Ok(()) => Ok(()),
    }
}

/// A sessionizer that continues the sessions `store` holds: the actors active since
/// `since_ns` and their links, within the in-memory bounds.
fn restored_sessionizer(
    settings: &Config,
    data_dir: &Path,
    store: &Store,
    since_ns: u64,
) -> Result<Sessionizer> {
    let config = SessionConfig::from(settings);
    let sessionizer_bound = config.max_active;
    let loaded = store
        .load_state(config.max_active, config.max_links, since_ns)
        .context("loading the sessions' state")?;
    let (actors, cut) = (loaded.state.actors.len(), loaded.actors_cut);
    let mut sessionizer = Sessionizer::new(config, Secret::load_or_create(data_dir)?);
    sessionizer.restore(loaded);
    if actors > 0 {
        log::info!("continuing {actors} active sessions from the store");
    }
    if cut > 0 {
        log::warn!(
            "{cut} more active sessions are past the {} held in memory and start anew",
            sessionizer_bound
        );
    }
    Ok(sessionizer)
}

fn prune(args: PruneArgs) -> Result<()> {
    let config = args.config.load()?;
    let older_than = args.older_than.unwrap_or(config.storage.retention);
    let data_dir = args.data.resolve(&config);
    if !Store::dir(&data_dir).join("data.mdb").exists() {
        println!("nothing stored in {}", data_dir.display());
        return Ok(());
    }
    let store = Store::open(&data_dir, DEFAULT_MAP_SIZE)?;
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let cutoff = now.saturating_sub(older_than.as_nanos() as u64);
    let mut total = apisessions::store::PruneReport::default();
    loop {
        let step = store.prune(cutoff, 1000)?;
        total.sessions += step.sessions;
        total.exchanges += step.exchanges;
        if !step.more {
            break;
        }
    }
    println!(
        "deleted {} sessions and {} exchanges older than {}",
        total.sessions,
        total.exchanges,
        humantime::format_duration(older_than)
    );
    Ok(())
}

fn create_data_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))
}

fn run(args: RunArgs) -> Result<()> {
    let config = args.settings()?;
    if args.check {
        if let Some(path) = &args.config.config {
            println!("{}: ok", path.display());
        }
        return Ok(());
    }
    let data_dir = args.data.resolve(&config);
    create_data_dir(&data_dir)?;
    let capture = &config.capture;
    // With `ports = "auto"` the host's listeners are watched from the start; the daemon keeps
    // the set in step as servers come and go (`PortPolicy`).
    let mut ports = PortPolicy::new(
        capture.ports.listed(),
        &capture.exclude_ports,
        capture.ports == Ports::Auto && !capture.all_ports,
    );
    if capture.ports == Ports::Auto {
        let (listening, past) = listening_ports().context("reading the listening TCP sockets")?;
        ports.listeners(&listening, past);
    }
    let options = CaptureOptions {
        ports: ports
            .changes()
            .into_iter()
            .filter(|(_, slot)| *slot == sensor_ebpf::port::WATCHED)
            .map(|(port, _)| port)
            .collect(),
        all_ports: capture.all_ports,
        snaplen: capture.snaplen,
        ring_bytes: capture.ring_size,
        ..CaptureOptions::default()
    };
    let interfaces = if capture.interfaces.is_empty() {
        Interface::all_up()?
    } else {
        capture
            .interfaces
            .iter()
            .map(|name| Interface::by_name(name))
            .collect::<Result<_, _>>()?
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(daemon(args, config, data_dir, options, ports, interfaces))
}

/// Segments the daemon takes off the capture channel per wakeup at most.
const SEGMENTS_PER_WAKEUP: usize = 1024;

/// How often the daemon deletes sessions older than the retention period.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// The daemon's side of the channel: decodes segments into exchanges and prints what `--dump`
/// or `--dump-segments` asked for.
struct Consumer {
    clock: Clock,
    nat: NatTable,
    containers: ContainerIndex,
    flows: FlowTable,
    /// Decoded exchanges, on their way through the proxy stage.
    exchanges: Vec<Exchange>,
    proxy: ProxyStage,
    /// Exchanges the proxy stage passed on, for sessions and the store.
    ready: Vec<Exchange>,
    /// Seconds until the host's own addresses (trusted as proxies) are read again.
    host_refresh_in: u32,
    dump_exchanges: bool,
    dump_segments: bool,
    out: io::BufWriter<io::StdoutLock<'static>>,
    /// False once stdout's reader went away (e.g. `| head`): that is not the daemon's error.
    output_open: bool,
    sessionizer: Sessionizer,
    redaction: Redaction,
    /// Records waiting to go to the store writer as one batch.
    pending: Vec<(StoredExchange, Assignment)>,
    writer: StoreWriter,
}

/// Records handed to the store writer per batch at most (also flushed every second).
const BATCH: usize = 1024;

/// Seconds between readings of the host's own addresses.
const HOST_REFRESH_SECS: u32 = 10;

impl Consumer {
    fn segment(&mut self, segment: Segment) {
        if self.dump_segments && self.output_open {
            let line = dump::segment_line(&segment, &self.clock);
            self.output_open = writeln!(self.out, "{line}").is_ok();
        }
        let mut segment = TcpSegment::from_capture(segment, &self.clock);
        self.nat.resolve(&mut segment);
        self.flows.push(segment, &mut self.exchanges);
        self.print_exchanges();
    }

    /// Once a second: expire idle connections (by the wall clock, so quiet ones end too).
    fn tick(&mut self) {
        let now_ns = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        self.flows.expire(now_ns, &mut self.exchanges);
        self.proxy.expire(now_ns, &mut self.ready);
        self.refresh_host_addresses();
        self.print_exchanges();
        self.flush_store();
        if self.output_open {
            self.output_open = self.out.flush().is_ok();
        }
    }

    fn finish(&mut self) {
        self.flows.finish(&mut self.exchanges);
        for exchange in self.exchanges.drain(..) {
            self.proxy.push(exchange, &mut self.ready);
        }
        self.proxy.finish(&mut self.ready);
        self.print_exchanges();
        self.flush_store();
        let _ = self.out.flush();
    }

    /// Reads the host's addresses again now and then: interfaces and addresses come and go.
    fn refresh_host_addresses(&mut self) {
        if self.host_refresh_in > 0 {
            self.host_refresh_in -= 1;
            return;
        }
        self.host_refresh_in = HOST_REFRESH_SECS;
        match proxy::host_addresses() {
            Ok(addresses) => {
                self.nat.set_host_addresses(addresses.clone());
                self.containers.set_host_addresses(addresses.clone());
                self.proxy.set_host_addresses(addresses);
            }
            Err(e) => log::warn!("reading this host's addresses (trusted as proxies): {e}"),
        }
    }

    /// Sessions, dump lines and store batches for the exchanges decoded so far.
    fn print_exchanges(&mut self) {
        for exchange in self.exchanges.drain(..) {
            self.proxy.push(exchange, &mut self.ready);
        }
        for exchange in self.ready.drain(..) {
            let (mut record, assignment) = self.sessionizer.record(&exchange, &self.redaction);
            let served = exchange.upstream.unwrap_or(exchange.server).ip();
            if let Some(by) = self.containers.served_by(served) {
                record.server_netns = Some(by.netns);
                record.server_cgroup = by.cgroup;
            }
            if self.dump_exchanges && self.output_open {
                let line = dump::exchange_line(&exchange);
                let id = &assignment.session_id;
                let session = id.get(..8).unwrap_or(id);
                self.output_open = writeln!(self.out, "{line} session={session}").is_ok();
            }
            self.pending.push((record, assignment));
        }
        if self.pending.len() >= BATCH {
            self.flush_store();
        }
    }

    fn flush_store(&mut self) {
        self.writer.submit(Batch {
            exchanges: std::mem::take(&mut self.pending),
            state: self.sessionizer.take_changes(),
        });
    }

    fn report(&self, report: &mut StatsReport) {
        for (stage, counters) in self.flows.snapshot() {
            report.set_stage(stage, counters);
        }
        report.set_stage("nat", self.nat.snapshot());
        report.set_stage("containers", self.containers.snapshot());
        report.set_stage("proxy", self.proxy.snapshot());
        report.set_stage("sessions", self.sessionizer.counters.snapshot());
        report.set_stage("store", self.writer.counters.snapshot());
    }
}

async fn daemon(
    args: RunArgs,
    config: Config,
    data_dir: PathBuf,
    options: CaptureOptions,
    mut ports: PortPolicy,
    interfaces: Vec<Interface>,
) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    // Sessions that were active when the daemon last stopped go on (a restart, an upgrade, a
    // crash): what is still within the inactivity timeout is loaded back.
    let store = Store::open(&data_dir, DEFAULT_MAP_SIZE)?;
    let since = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        .saturating_sub(config.sessions.inactivity_timeout.as_nanos() as u64);
    let sessionizer = restored_sessionizer(&config, &data_dir, &store, since)?;
    // With no interface named, the sensor follows the interfaces that come and go (containers).
    let follow_interfaces = config.capture.interfaces.is_empty();
    let (mut sensor, mut segments) =
        Sensor::start(&options, interfaces, config.capture.attach, Some(&data_dir))?;
    let conntrack = match Conntrack::open() {
        Ok(conntrack) => Some(conntrack),
        Err(e) => {
            log::warn!("{e}: connections through NAT will be seen before and after translation");
            None
        }
    };
    let mut consumer = Consumer {
        clock: Clock::new(),
        containers: ContainerIndex::new(),
        nat: NatTable::new(
            conntrack,
            NatConfig {
                server_ports: options.ports.clone(),
                all_ports: options.all_ports,
                ..NatConfig::default()
            },
        ),
        flows: FlowTable::new(FlowConfig {
            server_ports: options.ports.clone(),
            // The kernel already keeps to the watched ports; with --all-ports every port counts.
            only_server_ports: false,
            http: HttpConfig {
                body_cap: config.capture.body_cap,
                ..HttpConfig::default()
            },
            ..FlowConfig::default()
        }),
        exchanges: Vec::new(),
        proxy: ProxyStage::new(ProxyConfig::from(&config)),
        ready: Vec::new(),
        host_refresh_in: 0,
        dump_exchanges: args.dump,
        dump_segments: args.dump_segments,
        out: io::BufWriter::new(io::stdout().lock()),
        output_open: true,
        sessionizer,
        redaction: Redaction::from_config(&config),
        pending: Vec::new(),
        writer: StoreWriter::start(store, config.storage.retention, PRUNE_EVERY),
    };
    consumer.refresh_host_addresses();
    let mut report = StatsReport {
        pid: std::process::id(),
        running: true,
        started: rfc3339(SystemTime::now()),
        attach_mode: sensor.mode.as_str().to_owned(),
        interfaces: sensor.interfaces.iter().map(|i| i.name.clone()).collect(),
        ..StatsReport::default()
    };
    refresh_report(&mut report, &sensor)?;
    // The ports watched from the start are in the first report already.
    report.ports = ports.status();
    report.write(&data_dir)?;
    log::info!(
        "capturing {} on {}; statistics in {}",
        if options.all_ports {
            "all TCP ports".to_owned()
        } else {
            format!("ports {:?}", options.ports)
        },
        report.interfaces.join(", "),
        StatsReport::path(&data_dir).display()
    );

    let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
    let summary_every = Duration::from_secs(args.summary_interval.max(1));
    let mut summary_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + summary_every, summary_every);
    let mut summary = Summary::default();
    // Segments are taken off the channel in runs: one wakeup of this task serves all that waited
    // (at high rates hundreds), instead of a park and a cross-thread wakeup per segment.
    let mut arrived = Vec::with_capacity(SEGMENTS_PER_WAKEUP);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            n = segments.recv_many(&mut arrived, SEGMENTS_PER_WAKEUP) => {
                if n == 0 {
                    break;
                }
                for segment in arrived.drain(..) {
                    consumer.segment(segment);
                }
            }
            _ = stats_tick.tick() => {
                if follow_interfaces {
                    if let Err(e) = sensor.rescan() {
                        log::warn!("following interfaces: {e}");
                    }
                    report.interfaces = sensor.interfaces.iter().map(|i| i.name.clone()).collect();
                }
                consumer.tick();
                ticks += 1;
                let auto = config.capture.ports == Ports::Auto;
                follow_ports(&mut ports, &mut sensor, &mut consumer.flows, auto && ticks.is_multiple_of(2));
                refresh_report(&mut report, &sensor)?;
                consumer.report(&mut report);
                report.ports = ports.status();
                report.set_stage("ports", ports.counters.snapshot());
                report.write(&data_dir)?;
            }
            _ = summary_tick.tick(), if args.summary_interval > 0 => {
                refresh_report(&mut report, &sensor)?;
                consumer.report(&mut report);
                summary.log(&report, summary_every);
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    log::info!("stopping: detaching and draining the ring");
    // Keep reading while the sensor drains, so the reader never waits on a full channel.
    {
        let shutdown = sensor_shutdown(sensor, &mut report);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                result = &mut shutdown => { result?; break; }
                Some(segment) = segments.recv() => consumer.segment(segment),
            }
        }
    }
    while let Some(segment) = segments.recv().await {
        consumer.segment(segment);
    }
    consumer.finish();
    consumer.report(&mut report);
    // Everything decoded is committed before the final report says the daemon stopped.
    let Consumer { writer, .. } = consumer;
    let store_counters = Arc::clone(&writer.counters);
    writer.finish();
    report.set_stage("store", store_counters.snapshot());
    report.running = false;
    report.updated = rfc3339(SystemTime::now());
    report.write(&data_dir)?;
    log::info!("stopped");
    Ok(())
}

/// Keeps the watched ports in step: the decoder's verdicts on the ports' connections, the
/// host's listeners (when `refresh_listeners`), muted ports due for another look.
fn follow_ports(
    ports: &mut PortPolicy,
    sensor: &mut Sensor,
    flows: &mut FlowTable,
    refresh_listeners: bool,
) {
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    for (port, http) in flows.take_port_verdicts() {
        ports.verdict(port, http, now);
    }
    ports.recheck(now);
    if refresh_listeners {
        match listening_ports() {
            Ok((listening, past)) => ports.listeners(&listening, past),
            Err(e) => {
                ports.counters.refresh_errors += 1;
                log::warn!("reading the listening TCP sockets: {e}");
            }
        }
    }
    for (port, slot) in ports.changes() {
        let what = match slot {
            sensor_ebpf::port::WATCHED => "watching",
            sensor_ebpf::port::MUTED => "muting (not HTTP)",
            _ => "no longer watching",
        };
        log::info!("{what} port {port}");
        if let Err(e) = sensor.set_port(port, slot) {
            log::error!("could not update port {port} in the kernel: {e}");
        }
    }
}

/// Takes the sensor down, keeping a last copy of the kernel counters in the report.
async fn sensor_shutdown(sensor: Sensor, report: &mut StatsReport) -> Result<()> {
    refresh_report(report, &sensor)?;
    let counters = Arc::clone(&sensor.counters);
    sensor.shutdown().await?;
    report.set_stage("reader", counters.snapshot());
    Ok(())
}

fn refresh_report(report: &mut StatsReport, sensor: &Sensor) -> Result<()> {
    let kernel = sensor.kernel_counters()?;
    report.set_stage("kernel", kernel.iter().map(|(name, value)| (*name, *value)));
    report.set_stage("reader", sensor.counters.snapshot());
    report.set_stage(
        "interfaces",
        [
            ("captured", sensor.interfaces.len() as u64),
            ("attached_later", sensor.interfaces_attached),
            ("detached", sensor.interfaces_detached),
        ],
    );
    report.updated = rfc3339(SystemTime::now());
    Ok(())
}

/// The periodic summary log line: rates since the last one, and any loss.
#[derive(Default)]
struct Summary {
    events: u64,
    bytes: u64,
    exchanges: u64,
}

impl Summary {
    fn log(&mut self, report: &StatsReport, every: Duration) {
        let events = report.get("reader", "events_read");
        let bytes = report.get("reader", "bytes_read");
        let exchanges = report.get("http", "exchanges");
        let seconds = every.as_secs_f64();
        log::info!(
            "capture: {:.0} events/s, {:.0} bytes/s, {:.0} exchanges/s, {} flows; drops: \
             ring_full={} truncated_segments={} load_errors={} malformed={} gaps={}",
            (events - self.events) as f64 / seconds,
            (bytes - self.bytes) as f64 / seconds,
            (exchanges - self.exchanges) as f64 / seconds,
            report.get("flows", "active"),
            report.get("kernel", "ring_full"),
            report.get("kernel", "segments_truncated"),
            report.get("kernel", "load_errors"),
            report.get("reader", "events_malformed"),
            report.get("reassembly", "gaps"),
        );
        self.events = events;
        self.bytes = bytes;
        self.exchanges = exchanges;
    }
}
