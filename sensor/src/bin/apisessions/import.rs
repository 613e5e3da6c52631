//! `apisessions import`: capture files through the same pipeline as live traffic, into the
//! store (and, with `--ndjson`, to stdout).

use std::{
    io::{self, IsTerminal as _, Write as _},
    path::PathBuf,
    sync::atomic::Ordering,
};

use anyhow::Result;
use apisessions::{
    capture::DEFAULT_PORTS,
    config::{Config, Ports},
    flow::{FlowConfig, FlowTable},
    http::HttpConfig,
    import::{ImportError, ImportSummary},
    pipeline::{
        Analysis, Clock, NdjsonLines, Pipeline, StoreWriter, WriterMode, restored_sessionizer,
        writer::TRANSACTION_EXCHANGES,
    },
    proxy::{ProxyConfig, ProxyStage},
    record::Redaction,
    sessions::SessionConfig,
    source::{PcapFormat, PcapSource},
    store::{DEFAULT_MAP_SIZE, Store},
};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{ConfigArg, DataDirArg, create_data_dir};

#[derive(Args)]
pub struct ImportArgs {
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

pub fn import(args: ImportArgs) -> Result<()> {
    let settings = args.config.load()?;
    let mut sources = args
        .files
        .iter()
        .map(PcapSource::open)
        .collect::<Result<Vec<_>, _>>()?;
    let progress = progress_bar(sources.iter().map(|s| s.progress().1).sum());
    let data_dir = args.data.resolve(&settings);
    create_data_dir(&data_dir)?;
    let store = Store::open(&data_dir, DEFAULT_MAP_SIZE)?;
    // Continue the sessions an earlier import (or the daemon) left, however old: the capture's
    // own times decide what is still active.
    let sessionizer = restored_sessionizer(SessionConfig::from(&settings), &data_dir, &store, 0)?;
    // Exchanges an earlier import of the same capture stored are recognised by their ids.
    let analysis =
        Analysis::new(sessionizer, Redaction::from_config(&settings)).with_exchange_ids();
    // The capture's own host is not this one: only configured proxies are trusted.
    let mut pipeline = Pipeline::new(
        Clock::Capture,
        FlowTable::new(flow_config(&args, &settings)),
        ProxyStage::new(ProxyConfig::from(&settings)),
        analysis,
    )
    .with_store(
        StoreWriter::start(store, WriterMode::Import),
        TRANSACTION_EXCHANGES,
    );
    if args.ndjson {
        pipeline = pipeline.with_sink(Box::new(NdjsonLines::new(io::BufWriter::new(
            io::stdout().lock(),
        ))));
    }
    let summary = apisessions::import::run(&mut sources, &mut pipeline, |read, _| {
        progress.set_position(read)
    });
    progress.finish_and_clear();
    let summary = summary.map_err(|e| match e {
        ImportError::Pipeline(e) => {
            anyhow::Error::new(e).context(format!("storing into {}", data_dir.display()))
        }
        other => other.into(),
    })?;
    report(&sources, &summary, &pipeline, &data_dir)
}

/// Without --port, HTTP is found by content on any port; the configured ports still help to
/// tell client from server where the handshake was not captured.
fn flow_config(args: &ImportArgs, settings: &Config) -> FlowConfig {
    FlowConfig {
        server_ports: match (&settings.capture.ports, args.ports.is_empty()) {
            (_, false) => args.ports.clone(),
            (Ports::List(ports), true) => ports.clone(),
            // Hints only: which side is the server where the handshake was not captured.
            (Ports::Auto, true) => DEFAULT_PORTS.to_vec(),
        },
        only_server_ports: !args.ports.is_empty(),
        http: HttpConfig {
            body_cap: args.body_cap.unwrap_or(settings.capture.body_cap),
            ..HttpConfig::default()
        },
        ..FlowConfig::default()
    }
}

fn progress_bar(total: u64) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// What was read, decoded and stored, on stderr.
fn report(
    sources: &[PcapSource],
    summary: &ImportSummary,
    pipeline: &Pipeline,
    data_dir: &std::path::Path,
) -> Result<()> {
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
    let Some(store) = pipeline.store_counters() else {
        return Ok(());
    };
    let sessions = pipeline.analysis().sessionizer().counters.sessions_started;
    writeln!(
        err,
        "stored {} exchanges in {sessions} sessions in {}",
        store.exchanges_written.load(Ordering::Relaxed),
        data_dir.display()
    )?;
    let duplicates = store.exchanges_duplicate.load(Ordering::Relaxed);
    if duplicates > 0 {
        writeln!(
            err,
            "{duplicates} exchanges were stored by an earlier import of this capture and are not \
             stored again"
        )?;
    }
    let rejected: Vec<String> = store
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
