//! The pipeline: segments from any source -> flows -> HTTP exchanges -> analysis -> sinks. The
//! one place where a stage or a sink is added; `apisessions run` (segments from the kernel's
//! ring) and `apisessions import` (segments from capture files, see [`crate::import`]) both go
//! through it.
//!
//! ```text
//! TcpSegment -> [nat] -> flows (reassembly + HTTP) -> proxy -> analysis -> sinks -> store writer
//!   (live only)                                               (sessions,   (dump,    (batches,
//!                                                              records)     NDJSON)   own thread)
//! ```
//!
//! Time comes from the segments for capture files (idle timeouts run on capture time, so a file
//! decodes as the traffic would have live) and from the wall clock on a live host, where quiet
//! connections must end too ([`Clock`]). Records reach the store in batches together with the
//! sessionizer's state changes they caused, in one transaction ([`crate::record::Batch`]).

pub mod analysis;
pub mod sinks;
pub mod writer;

use std::{
    io,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    analysis::attacks::AttacksError,
    config::Config,
    exchange::Exchange,
    flow::{FlowConfig, FlowTable, Flows, SkipHint},
    nat::NatTable,
    proxy::{ProxyConfig, ProxyStage},
    record::{Batch, Redaction, Secret, SecretError},
    segment::TcpSegment,
    sessions::{SessionConfig, Sessionizer},
    store::StoreError,
};
pub use analysis::{Analysis, ExchangeIds, restored_inventory, restored_sessionizer};
pub use sinks::{Collect, DumpLines, NdjsonLines, Sink};
pub use writer::{StoreWriter, WriterCounters, WriterError, WriterMode, WriterStopped};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("writing the exchanges")]
    Output(#[source] io::Error),
    #[error(transparent)]
    WriterStopped(#[from] WriterStopped),
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error("loading the sessions' state")]
    LoadState(#[source] StoreError),
    #[error("loading the endpoint inventory")]
    LoadInventory(#[source] StoreError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Spec(#[from] crate::analysis::inventory::spec::SpecError),
}

/// Where the pipeline's time comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// The segments' own timestamps (capture files): idle flows expire as capture time passes.
    Capture,
    /// The wall clock (live capture): idle flows expire at [`Pipeline::tick`].
    Wall,
}

/// Counters by stage, as `apisessions stats` and the import's summary show them.
pub type Snapshot = Vec<(&'static str, Vec<(&'static str, u64)>)>;

pub struct Pipeline {
    clock: Clock,
    /// Live only: connections through NAT renamed to what the client sent.
    nat: Option<NatTable>,
    flows: Flows,
    proxy: ProxyStage,
    analysis: Analysis,
    sinks: Vec<Box<dyn Sink>>,
    store: Option<StoreWriter>,
    /// The store writer's counters, which outlive it.
    store_counters: Option<Arc<WriterCounters>>,
    /// Records handed to the store per batch at most (a live pipeline also hands over at
    /// every tick).
    batch_size: usize,
    /// Exchanges out of the flows, on their way through the proxy stage.
    decoded: Vec<Exchange>,
    /// Exchanges the proxy stage passed on, for analysis.
    ready: Vec<Exchange>,
    pending: Batch,
    /// Capture time (s) of the last expiry, with [`Clock::Capture`].
    expired_at_s: u64,
    exchanges: u64,
    /// When the inventory's state last went to the store, and the exchanges counted then.
    inventory_handed: (Instant, u64),
    /// The last hand-over: the inventory goes along whatever the time.
    stopping: bool,
}

/// How often the inventory's whole state goes to the store at most (and at the end): it is
/// statistics, and a state of many endpoints is worth writing only now and then.
const INVENTORY_EVERY: Duration = Duration::from_secs(10);

impl Pipeline {
    pub fn new(
        clock: Clock,
        flows: impl Into<Flows>,
        proxy: ProxyStage,
        analysis: Analysis,
    ) -> Self {
        Self {
            clock,
            nat: None,
            flows: flows.into(),
            proxy,
            analysis,
            sinks: Vec::new(),
            store: None,
            store_counters: None,
            batch_size: writer::TRANSACTION_EXCHANGES,
            decoded: Vec::new(),
            ready: Vec::new(),
            pending: Batch::default(),
            expired_at_s: 0,
            exchanges: 0,
            inventory_handed: (Instant::now(), 0),
            stopping: false,
        }
    }

    /// A pipeline that only decodes (capture time, no store), for tests and tools that want a
    /// capture's exchanges: add a sink such as [`Collect`]. Session ids are keyed with a fixed
    /// secret: they are stable from run to run and mean nothing elsewhere.
    pub fn decoder(flows: FlowConfig, proxy: ProxyConfig) -> Self {
        let sessionizer = Sessionizer::new(SessionConfig::default(), Secret::from_bytes([0; 32]));
        Self::new(
            Clock::Capture,
            FlowTable::new(flows),
            ProxyStage::new(proxy),
            Analysis::new(sessionizer, Redaction::default()),
        )
    }

    pub fn with_nat(mut self, nat: NatTable) -> Self {
        self.nat = Some(nat);
        self
    }

    pub fn with_sink(mut self, sink: Box<dyn Sink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Stores the records through `writer`, `batch_size` at a time at most.
    pub fn with_store(mut self, writer: StoreWriter, batch_size: usize) -> Self {
        self.store_counters = Some(Arc::clone(&writer.counters));
        self.store = Some(writer);
        self.batch_size = batch_size.max(1);
        self.pending = Batch::with_capacity(self.batch_size);
        self
    }

    /// One TCP segment, in capture order.
    pub fn push(&mut self, mut segment: TcpSegment) -> Result<(), PipelineError> {
        if let Some(nat) = &mut self.nat {
            nat.resolve(&mut segment);
        }
        let ts_ns = segment.ts_ns;
        self.flows.push(segment, &mut self.decoded);
        let second = ts_ns / 1_000_000_000;
        if self.clock == Clock::Capture && second > self.expired_at_s {
            // Once per second of capture time is often enough for timeouts of minutes.
            self.expired_at_s = second;
            self.flows.expire(0, &mut self.decoded);
            self.proxy.expire(ts_ns, &mut self.ready);
        }
        self.deliver()
    }

    /// Once a second on a live host: ends idle connections and held proxy exchanges by the
    /// wall clock (`now_ns`), hands what waits to the store and flushes the sinks.
    pub fn tick(&mut self, now_ns: u64) -> Result<(), PipelineError> {
        self.flows.expire(now_ns, &mut self.decoded);
        self.flows.sync(&mut self.decoded);
        self.proxy.expire(now_ns, &mut self.ready);
        self.deliver()?;
        self.flush()
    }

    /// The capture is over: ends every connection, stores everything and stops the store
    /// writer.
    pub fn finish(&mut self) -> Result<(), PipelineError> {
        self.flows.finish(&mut self.decoded);
        for exchange in self.decoded.drain(..) {
            self.proxy.push(exchange, &mut self.ready);
        }
        self.proxy.finish(&mut self.ready);
        let delivered = self.deliver();
        self.stop().and(delivered)
    }

    /// Stores the finished exchanges and stops the store writer, leaving connections still
    /// open as they are (a capture file that cannot be read on: what it would add to them is
    /// unknown). The writer's error comes first: it is the cause when a hand-over failed.
    pub fn stop(&mut self) -> Result<(), PipelineError> {
        self.stopping = true;
        let flushed = self.flush();
        if let Some(store) = self.store.take() {
            store.finish()?;
        }
        flushed
    }

    /// Decoded exchanges through the proxy stage, the analysis and the sinks; full batches to
    /// the store.
    fn deliver(&mut self) -> Result<(), PipelineError> {
        for exchange in self.decoded.drain(..) {
            self.proxy.push(exchange, &mut self.ready);
        }
        for exchange in self.ready.drain(..) {
            self.exchanges += 1;
            let handed_at = self.store.is_some().then_some(self.pending.exchanges.len());
            let (record, assignment) = self.analysis.analyse(&exchange, handed_at);
            for sink in &mut self.sinks {
                sink.exchange(&exchange, &record, &assignment)
                    .map_err(PipelineError::Output)?;
            }
            if self.store.is_some() {
                self.pending.exchanges.push((record, assignment));
            }
        }
        if self.pending.exchanges.len() >= self.batch_size {
            self.hand_over()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), PipelineError> {
        self.hand_over()?;
        for sink in &mut self.sinks {
            sink.flush().map_err(PipelineError::Output)?;
        }
        Ok(())
    }

    /// The pending records, with the session state they changed, to the store writer.
    fn hand_over(&mut self) -> Result<(), PipelineError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        attach_signal_updates(&mut self.analysis, &mut self.pending);
        self.pending.state = self.analysis.sessionizer_mut().take_changes();
        let (at, counted) = self.inventory_handed;
        if self.exchanges > counted && (self.stopping || at.elapsed() >= INVENTORY_EVERY) {
            match self
                .analysis
                .inventory_state()
                .map(|s| s.encode())
                .transpose()
            {
                Ok(encoded) => self.pending.inventory = encoded,
                Err(e) => log::error!("encoding the endpoint inventory: {e}"),
            }
            self.inventory_handed = (Instant::now(), self.exchanges);
        }
        // The next batch's room at once: growing it by doubling copied every record about
        // twice (an import's batches are 65,536 records).
        if !self.pending.is_empty() {
            let next = Batch::with_capacity(self.batch_size);
            store.submit(std::mem::replace(&mut self.pending, next))?;
        }
        Ok(())
    }

    /// Takes a reloaded configuration (see [`crate::config::reload`] for what applies live).
    /// Nothing changes on an error. The ports are not part of it: the flows and NAT read the
    /// port policy's set ([`crate::capture::ServerPorts`]), which the daemon updates.
    pub fn reconfigure(&mut self, config: &Config) -> Result<(), AttacksError> {
        // A smaller bound on sessions evicts some: what they found goes to the batch first.
        attach_signal_updates(&mut self.analysis, &mut self.pending);
        self.analysis.reconfigure(config)?;
        self.proxy.set_config(ProxyConfig::from(config));
        Ok(())
    }

    /// Which server ports turned out to speak HTTP or not, since the last call (see
    /// [`FlowTable::take_port_verdicts`]).
    pub fn take_port_verdicts(&mut self) -> Vec<(u16, bool)> {
        self.flows.take_port_verdicts()
    }

    /// The long bodies' rests the decoder asked the capture to leave out, since the last call
    /// (see [`FlowTable::take_skip_hints`]).
    pub fn take_skip_hints(&mut self) -> Vec<SkipHint> {
        self.flows.take_skip_hints()
    }

    /// The host's own addresses changed: trusted as proxies, the ends of NAT, not containers.
    pub fn set_host_addresses(&mut self, addresses: Vec<IpAddr>) {
        if let Some(nat) = &mut self.nat {
            nat.set_host_addresses(addresses.clone());
        }
        if let Some(containers) = self.analysis.containers_mut() {
            containers.set_host_addresses(addresses.clone());
        }
        self.proxy.set_host_addresses(addresses);
    }

    pub fn analysis(&self) -> &Analysis {
        &self.analysis
    }

    /// Exchanges that went through the analysis so far.
    pub fn exchanges(&self) -> u64 {
        self.exchanges
    }

    /// The store writer's counters, also after [`Self::finish`].
    pub fn store_counters(&self) -> Option<&WriterCounters> {
        self.store_counters.as_deref()
    }

    /// Every stage's counters: flows, reassembly and http, nat, proxy, sessions, containers,
    /// store (those the pipeline has).
    pub fn snapshot(&self) -> Snapshot {
        let mut stages = self.flows.snapshot();
        if let Some(nat) = &self.nat {
            stages.push(("nat", nat.snapshot()));
        }
        stages.push(("proxy", self.proxy.snapshot()));
        stages.extend(self.analysis.snapshot());
        if let Some(counters) = &self.store_counters {
            stages.push(("store", counters.snapshot()));
        }
        stages
    }
}

/// The abuse signals that changed go with their sessions' newest records in the batch.
fn attach_signal_updates(analysis: &mut Analysis, pending: &mut Batch) {
    for (index, signals) in analysis.take_signal_updates() {
        if let Some((_, assignment)) = pending.exchanges.get_mut(index) {
            assignment.signals = Some(Box::new(signals));
        }
    }
}
