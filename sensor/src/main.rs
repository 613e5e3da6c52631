//! The `apisessions` command: a thin layer over the library that parses arguments, runs the
//! daemon loop and turns errors into one readable line.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use apisessions::{
    capture::{AttachMode, CaptureOptions, Clock, DEFAULT_PORTS, Interface, Sensor},
    dump,
    stats::{StatsReport, rfc3339},
};
use clap::{Args, Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};

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
    /// Show the counters of the running daemon, or the last ones it wrote.
    Stats(StatsArgs),
}

#[derive(Args)]
struct DataDirArg {
    /// Where state and statistics live.
    #[arg(
        long,
        env = "APISESSIONS_DATA_DIR",
        default_value = "/var/lib/apisessions"
    )]
    data_dir: PathBuf,
}

#[derive(Args)]
struct RunArgs {
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
    /// Print one line per captured segment to stdout.
    #[arg(long)]
    dump: bool,
    /// How to hook into the network stack: auto (tcx on Linux >= 6.6, else clsact), tcx,
    /// clsact, or socket (AF_PACKET socket filter, the fallback).
    #[arg(long, default_value = "auto", value_name = "MODE")]
    attach: AttachMode,
    /// Payload bytes captured per TCP segment at most; the rest is counted as truncated.
    #[arg(long, default_value_t = sensor_ebpf::DEFAULT_SNAPLEN, value_name = "BYTES")]
    snaplen: u32,
    /// Kernel ring-buffer size in bytes (a power of two).
    #[arg(long, default_value_t = sensor_ebpf::DEFAULT_RING_BYTES, value_name = "BYTES")]
    ring_size: u32,
    /// Seconds between summary log lines (events/s, bytes/s, drops); 0 turns them off.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    summary_interval: u64,
    #[command(flatten)]
    data: DataDirArg,
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
    let report = StatsReport::read(&args.data.data_dir)?;
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.render())?;
    }
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
    create_data_dir(&args.data.data_dir)?;
    let options = CaptureOptions {
        ports: if args.ports.is_empty() {
            DEFAULT_PORTS.to_vec()
        } else {
            args.ports.clone()
        },
        all_ports: args.all_ports,
        snaplen: args.snaplen,
        ring_bytes: args.ring_size,
        ..CaptureOptions::default()
    };
    let interfaces = if args.interfaces.is_empty() {
        Interface::all_up()?
    } else {
        args.interfaces
            .iter()
            .map(|name| Interface::by_name(name))
            .collect::<Result<_, _>>()?
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(daemon(args, options, interfaces))
}

async fn daemon(args: RunArgs, options: CaptureOptions, interfaces: Vec<Interface>) -> Result<()> {
    let data_dir = args.data.data_dir.clone();
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let (sensor, mut segments) = Sensor::start(&options, interfaces, args.attach, Some(&data_dir))?;
    let clock = Clock::new();
    let mut report = StatsReport {
        pid: std::process::id(),
        running: true,
        started: rfc3339(SystemTime::now()),
        attach_mode: sensor.mode.as_str().to_owned(),
        interfaces: sensor.interfaces.iter().map(|i| i.name.clone()).collect(),
        ..StatsReport::default()
    };
    refresh_report(&mut report, &sensor)?;
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
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut output_open = true;
    loop {
        tokio::select! {
            segment = segments.recv() => {
                let Some(segment) = segment else { break };
                if args.dump && output_open {
                    output_open = write_line(&mut out, &dump::segment_line(&segment, &clock));
                }
            }
            _ = stats_tick.tick() => {
                refresh_report(&mut report, &sensor)?;
                report.write(&data_dir)?;
                if output_open {
                    output_open = out.flush().is_ok();
                }
            }
            _ = summary_tick.tick(), if args.summary_interval > 0 => {
                refresh_report(&mut report, &sensor)?;
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
                Some(segment) = segments.recv() => {
                    if args.dump && output_open {
                        output_open = write_line(&mut out, &dump::segment_line(&segment, &clock));
                    }
                }
            }
        }
    }
    while let Some(segment) = segments.recv().await {
        if args.dump && output_open {
            output_open = write_line(&mut out, &dump::segment_line(&segment, &clock));
        }
    }
    // The consumer may have gone (e.g. `| head`): that is not an error of the daemon.
    let _ = out.flush();
    report.running = false;
    report.updated = rfc3339(SystemTime::now());
    report.write(&data_dir)?;
    log::info!("stopped");
    Ok(())
}

/// Takes the sensor down, keeping a last copy of the kernel counters in the report.
async fn sensor_shutdown(sensor: Sensor, report: &mut StatsReport) -> Result<()> {
    refresh_report(report, &sensor)?;
    let counters = std::sync::Arc::clone(&sensor.counters);
    sensor.shutdown().await?;
    report.set_stage("reader", counters.snapshot());
    Ok(())
}

fn refresh_report(report: &mut StatsReport, sensor: &Sensor) -> Result<()> {
    let kernel = sensor.kernel_counters()?;
    report.set_stage("kernel", kernel.iter().map(|(name, value)| (*name, *value)));
    report.set_stage("reader", sensor.counters.snapshot());
    report.updated = rfc3339(SystemTime::now());
    Ok(())
}

/// Writes a line; false once the reader of stdout went away.
fn write_line(out: &mut impl io::Write, line: &str) -> bool {
    writeln!(out, "{line}").is_ok()
}

/// The periodic summary log line: rates since the last one, and any loss.
#[derive(Default)]
struct Summary {
    events: u64,
    bytes: u64,
}

impl Summary {
    fn log(&mut self, report: &StatsReport, every: Duration) {
        let events = report.get("reader", "events_read");
        let bytes = report.get("reader", "bytes_read");
        let seconds = every.as_secs_f64();
        log::info!(
            "capture: {:.0} events/s, {:.0} bytes/s; drops: ring_full={} truncated_segments={} \
             load_errors={} malformed={}",
            (events - self.events) as f64 / seconds,
            (bytes - self.bytes) as f64 / seconds,
            report.get("kernel", "ring_full"),
            report.get("kernel", "segments_truncated"),
            report.get("kernel", "load_errors"),
            report.get("reader", "events_malformed"),
        );
        self.events = events;
        self.bytes = bytes;
    }
}
