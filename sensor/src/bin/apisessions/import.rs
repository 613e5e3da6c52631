//! `apisessions import`: capture files through the same pipeline as live traffic, into the
//! store (and, with `--ndjson`, to stdout).

use std::{
    io::{self, IsTerminal as _, Write as _},
    path::PathBuf,
    sync::atomic::Ordering,
};

use anyhow::Result;
use apisessions::{
    import::{ImportError, ImportOptions, ImportSummary},
    pipeline::Pipeline,
    source::{PcapFormat, PcapSource},
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
    /// Threads that decode connections (TCP reassembly and HTTP), each a share of them by a
    /// hash of the connection, beside the threads of the analysis and of the store. The
    /// records are the same whatever the number. 0 decodes on the analysis' own thread.
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=64))]
    decode_threads: u16,
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
    let options = ImportOptions {
        ports: args.ports.clone(),
        body_cap: args.body_cap,
        ndjson: args.ndjson,
        config_file: args.config.config.clone(),
        decode_threads: usize::from(args.decode_threads),
    };
    let mut pipeline = apisessions::import::pipeline(&settings, &data_dir, &options)?;
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
