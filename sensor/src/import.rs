//! `apisessions import`: capture files through the same stages as live traffic.
//!
//! The files' own timestamps drive the flow table's clock, so idle timeouts and timings come out
//! as they would have live. Several files of one capture (rotated by `tcpdump -C` or `-G`) go
//! through one flow table, in the order given: a connection, or an exchange, that crosses from
//! one file into the next is decoded whole.

use std::{io, num::NonZeroUsize, path::PathBuf, time::Instant};

use lru::LruCache;

use crate::{
    exchange::Exchange,
    flow::{FlowConfig, FlowTable},
    proxy::{ProxyConfig, ProxyStage},
    record::Secret,
    source::{PcapSource, SourceError},
};

/// Deterministic ids of imported exchanges: the same capture imported again yields the same
/// ids, in the same order, so the store recognises what it already holds
/// (`StoredExchange::exchange_id`).
///
/// An id is a keyed hash of what identifies an exchange in a capture: its connection's
/// addresses, when its request and response started, its method and target. Exchanges that
/// agree on all of that (identical pipelined requests that arrived in one segment, answered in
/// one) are told apart by how many came before them, counted among the last
/// [`ExchangeIds::RECENT`] ids, which such twins always are.
pub struct ExchangeIds {
    secret: Secret,
    recent: LruCache<[u8; 16], u32>,
}

impl ExchangeIds {
    pub const RECENT: usize = 4096;

    pub fn new(secret: Secret) -> Self {
        Self {
            secret,
            recent: LruCache::new(NonZeroUsize::new(Self::RECENT).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    pub fn next(&mut self, exchange: &Exchange) -> [u8; 16] {
        let request = exchange.request.as_ref();
        let response = exchange.response.as_ref();
        let addresses = format!("{}|{}", exchange.client, exchange.server);
        let base = self.secret.hash(&[
            b"exchange",
            addresses.as_bytes(),
            &request.map_or(0, |r| r.meta.start_ns).to_le_bytes(),
            &response.map_or(0, |r| r.meta.start_ns).to_le_bytes(),
            request.map_or("", |r| r.method.as_str()).as_bytes(),
            request.map_or("", |r| r.uri.as_str()).as_bytes(),
        ]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&base[..16]);
        let twin = match self.recent.get_mut(&id) {
            Some(count) => {
                *count += 1;
                *count
            }
            None => {
                self.recent.put(id, 0);
                0
            }
        };
        if twin > 0 {
            let again = self.secret.hash(&[b"twin", &id, &twin.to_le_bytes()]);
            id.copy_from_slice(&again[..16]);
        }
        id
    }
}

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

/// Reads every segment of `source` into a flow table built from `config`, and the exchanges
/// through the proxy stage built from `proxy`; each finished exchange goes to `on_exchange`,
/// progress (bytes read, total) to `on_progress` now and then.
pub fn run(
    source: &mut PcapSource,
    config: FlowConfig,
    proxy: ProxyConfig,
    on_exchange: impl FnMut(Exchange) -> io::Result<()>,
    on_progress: impl FnMut(u64, u64),
) -> Result<ImportSummary, ImportError> {
    run_all(
        std::slice::from_mut(source),
        config,
        proxy,
        on_exchange,
        on_progress,
    )
}

/// [`run`] over several files of one capture, one after the other through one flow table;
/// progress counts the bytes of all of them.
pub fn run_all(
    sources: &mut [PcapSource],
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
    let total: u64 = sources.iter().map(|s| s.progress().1).sum();
    let mut done_before = 0;
    for source in sources.iter_mut() {
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
                on_progress(done_before + source.progress().0, total);
            }
        }
        done_before += source.progress().0;
    }
    flows.finish(&mut decoded);
    for exchange in decoded.drain(..) {
        proxy.push(exchange, &mut ready);
    }
    proxy.finish(&mut ready);
    deliver(&mut ready, &mut exchanges)?;
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
    let mut stages = flows.snapshot();
    stages.push(("proxy", proxy.snapshot()));
    Ok(ImportSummary {
        source: counters,
        stages,
        exchanges,
        truncated: sources
            .iter()
            .filter_map(|s| Some((s.path().to_path_buf(), s.truncated_at()?)))
            .collect(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{MessageMeta, Request};

    fn exchange(start_ns: u64, uri: &str) -> Exchange {
        Exchange {
            client: "192.0.2.1:40000".parse().unwrap(),
            server: "192.0.2.2:80".parse().unwrap(),
            request: Some(Request {
                method: "GET".into(),
                uri: uri.into(),
                meta: MessageMeta {
                    start_ns,
                    ..MessageMeta::default()
                },
            }),
            response: None,
            forwarding: Default::default(),
            upstream: None,
        }
    }

    #[test]
    fn ids_repeat_for_the_same_capture_and_tell_twins_apart() {
        let capture = [
            exchange(1, "/a"),
            exchange(1, "/a"),
            exchange(1, "/a"),
            exchange(2, "/a"),
            exchange(1, "/b"),
        ];
        let ids = |secret: [u8; 32]| {
            let mut ids = ExchangeIds::new(Secret::from_bytes(secret));
            capture.iter().map(|e| ids.next(e)).collect::<Vec<_>>()
        };
        let first = ids([1; 32]);
        assert_eq!(first, ids([1; 32]), "deterministic");
        let unique: std::collections::HashSet<_> = first.iter().collect();
        assert_eq!(unique.len(), capture.len(), "twins get ids of their own");
        assert_ne!(first, ids([2; 32]), "keyed by the installation's secret");
    }
}
