//! `apisessions import`: capture files through the same pipeline as live traffic.
//!
//! The files' own timestamps drive the flow table's clock, so idle timeouts and timings come out
//! as they would have live. Several files of one capture (rotated by `tcpdump -C` or `-G`) go
//! through one flow table, in the order given: a connection, or an exchange, that crosses from
//! one file into the next is decoded whole.

use std::{
    io,
    path::{Path, PathBuf},
    time::Instant,
};

use crate::{
    capture::ServerPorts,
    config::{Config, Ports},
    flow::{FlowConfig, Flows, shards::ShardError},
    http::HttpConfig,
    pipeline::{
        Analysis, Clock, NdjsonLines, Pipeline, PipelineError, StoreWriter, WriterMode,
        restored_inventory, restored_sessionizer, writer::TRANSACTION_EXCHANGES,
    },
    proxy::{ProxyConfig, ProxyStage},
    record::Redaction,
    sessions::SessionConfig,
    source::{PcapSource, SourceError},
    store::{DEFAULT_MAP_SIZE, Store, StoreError},
};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Shards(#[from] ShardError),
}

/// Counters of every stage after an import, by stage name.
#[derive(Debug, Default)]
pub struct ImportSummary {
    pub source: Vec<(&'static str, u64)>,
    pub stages: Vec<(&'static str, Vec<(&'static str, u64)>)>,
    pub exchanges: u64,
    /// The files that end inside a record, and where that record starts.
    pub truncated: Vec<(PathBuf, u64)>,
    pub seconds: f64,
}

/// Counters that measure volume rather than something going wrong.
const VOLUME: &[&str] = &[
    "packets",
    "tcp_segments",
    "segments",
    "bytes_delivered",
    "requests",
    "responses",
    "exchanges",
    "interim_responses",
    "active",
    "buffered_bytes",
    "created",
    "closed",
    "idle_expired",
    "tunnels",
    "tunnel_bytes",
    "http09_requests",
    "control_without_flow",
    "forwarded_clients",
    "join_held",
    "joined",
    "join_waiting",
];

impl ImportSummary {
    pub fn get(&self, stage: &str, name: &str) -> u64 {
        let counters = if stage == "source" {
            Some(&self.source)
        } else {
            self.stages
                .iter()
                .find(|(s, _)| *s == stage)
                .map(|(_, c)| c)
        };
        counters
            .and_then(|c| c.iter().find(|(n, _)| *n == name))
            .map_or(0, |(_, v)| *v)
    }

    /// Non-zero counters of things that went wrong or were cut, as `stage.name = value`.
    pub fn anomalies(&self) -> Vec<(String, u64)> {
        std::iter::once(("source", &self.source))
            .chain(
                self.stages
                    .iter()
                    .map(|(stage, counters)| (*stage, counters)),
            )
            .flat_map(|(stage, counters)| {
                counters
                    .iter()
                    .filter(|(name, value)| *value > 0 && !VOLUME.contains(name))
                    .map(move |(name, value)| (format!("{stage}.{name}"), *value))
            })
            .collect()
    }
}

/// What `apisessions import` was asked besides the configuration.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Decode only connections on these ports (otherwise HTTP is recognised on any port).
    pub ports: Vec<u16>,
    /// Body bytes kept per message, over the configuration's `capture.body_cap`.
    pub body_cap: Option<usize>,
    /// Every exchange to stdout as one JSON object per line.
    pub ndjson: bool,
    /// The configuration file, which `[[api.specs]]` files are relative to.
    pub config_file: Option<PathBuf>,
    /// Threads that decode connections (reassembly and HTTP) beside the pipeline's own, each a
    /// share of them; 0 decodes on the pipeline's thread. The records are the same whatever
    /// the number.
    pub decode_threads: usize,
}

/// The pipeline of an import into the store in `data_dir` (which must exist): capture time,
/// exchange ids (an import of the same capture again adds nothing), the sessions the store
/// holds continued, and only configured proxies trusted (the capture's host is not this one).
pub fn pipeline(
    settings: &Config,
    data_dir: &Path,
    options: &ImportOptions,
) -> Result<Pipeline, ImportError> {
    let store = Store::open(data_dir, DEFAULT_MAP_SIZE)?;
    // However old the sessions the store holds: the capture's own times decide what is still
    // active.
    let sessionizer = restored_sessionizer(SessionConfig::from(settings), data_dir, &store, 0)?;
    let analysis = Analysis::new(
        sessionizer,
        Redaction::new(settings.secrets.store_raw, &settings.secrets.names),
    )
    .with_abuse(&settings.abuse)
    .with_inventory(restored_inventory(
        settings,
        options.config_file.as_deref(),
        &store,
    )?)
    .with_exchange_ids();
    let flows = FlowConfig {
        // Without ports given, HTTP is found by content on any port; the configured ports
        // still tell client from server where the handshake was not captured.
        server_ports: match (&settings.capture.ports, options.ports.is_empty()) {
            (_, false) => ServerPorts::new(&options.ports),
            (Ports::List(ports), true) => ServerPorts::new(ports),
            (Ports::Auto, true) => ServerPorts::default(),
        },
        only_server_ports: !options.ports.is_empty(),
        http: HttpConfig {
            body_cap: options.body_cap.unwrap_or(settings.capture.body_cap),
            ..HttpConfig::default()
        },
        ..FlowConfig::default()
    };
    let flows = Flows::new(flows, options.decode_threads)?;
    let mut pipeline = Pipeline::new(
        Clock::Capture,
        flows,
        ProxyStage::new(ProxyConfig::from(settings)),
        analysis,
    )
    .with_store(
        StoreWriter::start(store, WriterMode::Import).map_err(PipelineError::Writer)?,
        TRANSACTION_EXCHANGES,
    );
    if options.ndjson {
        pipeline = pipeline.with_sink(Box::new(NdjsonLines::new(io::BufWriter::new(
            io::stdout().lock(),
        ))));
    }
    Ok(pipeline)
}

/// Stages whose counters are reported on lines of their own (the stored and session counts)
/// rather than among the anomalies.
const REPORTED_APART: &[&str] = &["sessions", "store", "abuse"];

/// Reads every segment of `sources`, one file after the other, through `pipeline` and finishes
/// it; progress (bytes read of all files, total) goes to `on_progress` now and then.
pub fn run(
    sources: &mut [PcapSource],
    pipeline: &mut Pipeline,
    mut on_progress: impl FnMut(u64, u64),
) -> Result<ImportSummary, ImportError> {
    let started = Instant::now();
    let total: u64 = sources.iter().map(|s| s.progress().1).sum();
    let mut done_before = 0;
    let mut segments = 0u64;
    let read = (|| {
        for source in sources.iter_mut() {
            while let Some(segment) = source.next_segment()? {
                pipeline.push(segment)?;
                segments += 1;
                if segments.is_multiple_of(4096) {
                    on_progress(done_before + source.progress().0, total);
                }
            }
            done_before += source.progress().0;
        }
        Ok::<_, ImportError>(())
    })();
    // A file that cannot be read on stops the import, but what was decoded whole before is
    // stored. The store's own error, when there is one, is the cause and comes first.
    match read {
        Ok(()) => pipeline.finish()?,
        Err(e) => {
            pipeline.stop()?;
            return Err(e);
        }
    }
    on_progress(done_before, total);
    // The sources' counters, summed by name (every source names the same counters).
    let mut counters: Vec<(&'static str, u64)> = Vec::new();
    for source in sources.iter() {
        for (name, value) in source.counters() {
            match counters.iter_mut().find(|(n, _)| *n == name) {
                Some((_, sum)) => *sum += value,
                None => counters.push((name, value)),
            }
        }
    }
    let mut stages = pipeline.snapshot();
    stages.retain(|(stage, _)| !REPORTED_APART.contains(stage));
    Ok(ImportSummary {
        source: counters,
        stages,
        exchanges: pipeline.exchanges(),
        truncated: sources
            .iter()
            .filter_map(|s| Some((s.path().to_path_buf(), s.truncated_at()?)))
            .collect(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
