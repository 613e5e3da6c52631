//! `apisessions import`: a capture file through the same stages as live traffic.
//!
//! The file's own timestamps drive the flow table's clock, so idle timeouts and timings come out
//! as they would have live.

use std::{io, time::Instant};

use crate::{
    exchange::Exchange,
    proxy::{ProxyConfig, ProxyStage},
    reassembly::{FlowConfig, FlowTable},
    source::{PcapSource, SourceError},
};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("writing the exchanges")]
    Output(#[source] io::Error),
}

/// Counters of every stage after an import, by stage name.
#[derive(Debug, Default)]
pub struct ImportSummary {
    pub source: Vec<(&'static str, u64)>,
    pub stages: Vec<(&'static str, Vec<(&'static str, u64)>)>,
    pub exchanges: u64,
    /// Where the file ends inside a record, if it does.
    pub truncated_at: Option<u64>,
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

/// Reads every segment of `source` into a flow table built from `config`, and the exchanges
/// through the proxy stage built from `proxy`; each finished exchange goes to `on_exchange`,
/// progress (bytes read, total) to `on_progress` now and then.
pub fn run(
    source: &mut PcapSource,
    config: FlowConfig,
    proxy: ProxyConfig,
    mut on_exchange: impl FnMut(Exchange) -> io::Result<()>,
    mut on_progress: impl FnMut(u64, u64),
) -> Result<ImportSummary, ImportError> {
    let started = Instant::now();
    let mut flows = FlowTable::new(config);
    // The capture's own host is not this one: only configured proxies are trusted.
    let mut proxy = ProxyStage::new(proxy);
    let mut decoded = Vec::new();
    let mut ready = Vec::new();
    let mut exchanges = 0u64;
    let mut last_expiry_s = 0u64;
    let mut segments = 0u64;
    let mut deliver = |ready: &mut Vec<Exchange>, exchanges: &mut u64| -> Result<(), ImportError> {
        for exchange in ready.drain(..) {
            *exchanges += 1;
            on_exchange(exchange).map_err(ImportError::Output)?;
        }
        Ok(())
    };
    while let Some(segment) = source.next_segment()? {
        let ts_ns = segment.ts_ns;
        let second = ts_ns / 1_000_000_000;
        flows.push(segment, &mut decoded);
        if second > last_expiry_s {
            // Once per second of capture time is often enough for a timeout of minutes.
            last_expiry_s = second;
            flows.expire(0, &mut decoded);
            proxy.expire(ts_ns, &mut ready);
        }
        for exchange in decoded.drain(..) {
            proxy.push(exchange, &mut ready);
        }
        deliver(&mut ready, &mut exchanges)?;
        segments += 1;
        if segments.is_multiple_of(4096) {
            let (read, total) = source.progress();
            on_progress(read, total);
        }
    }
    flows.finish(&mut decoded);
    for exchange in decoded.drain(..) {
        proxy.push(exchange, &mut ready);
    }
    proxy.finish(&mut ready);
    deliver(&mut ready, &mut exchanges)?;
    let (read, total) = source.progress();
    on_progress(read, total);
    let mut stages = flows.snapshot();
    stages.push(("proxy", proxy.snapshot()));
    Ok(ImportSummary {
        source: source.counters(),
        stages,
        exchanges,
        truncated_at: source.truncated_at(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
