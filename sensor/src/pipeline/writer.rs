//! The store sink: a thread that commits batches (and, for the daemon, runs the pruning sweep),
//! so decoding never waits on the disk.
//!
//! The hand-over channel is bounded, and what happens when it is full or a commit fails depends
//! on who writes ([`WriterMode`]):
//! - the daemon cannot slow the network down: when the writer falls behind (a slow or full
//!   disk), new batches are dropped and counted rather than held without limit; a failed commit
//!   (full map, full disk) is logged at ERROR level with its batch counted as lost, and the next
//!   batch is tried normally, so writing resumes by itself when space returns;
//! - an import can wait: a full queue holds the decoder back, and a failed commit stops the
//!   import with the store's error (the capture file is still there to import again).
//!
//! In both, a record that cannot be stored because of what it holds is rejected alone and
//! counted by reason; the rest of its batch is stored ([`Store::write_isolating`]).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread,
    time::{Duration, Instant},
};

use crate::{
    exchange::now_ns,
    record::{Assignment, Batch, StoredExchange},
    store::{Store, StoreError},
};

/// Batches waiting for the daemon's writer at most.
pub const QUEUE_BATCHES: usize = 64;
/// Exchanges committed per transaction at most. Batches that queued up while the writer was
/// busy are merged up to this size: under load each commit (the pages it rewrites, one per
/// active session at least, and the fsync) is shared by more exchanges, so the writer speeds up
/// as it falls behind instead of dropping. As many as a full queue holds (64 × 1,024); the
/// bench's store phase measures ingest at this size (1M exchanges: ~190k/s at 32,768, ~290k/s
/// at 65,536).
pub const TRANSACTION_EXCHANGES: usize = 65_536;
/// Sessions deleted per pruning transaction: keeps each one short next to the writes.
const PRUNE_STEP: usize = 1000;

/// Who writes, which decides what a full queue and a failed commit do (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriterMode {
    /// Drop and count when behind, go on after a failed commit, prune at once and then every
    /// `prune_every`.
    Daemon {
        retention: Duration,
        prune_every: Duration,
    },
    /// Wait when behind, stop at a failed commit; no pruning (the capture's own times may be
    /// older than the retention, and `apisessions prune` is there for that).
    Import,
}

/// The writer has stopped (an import's commit failed): see [`StoreWriter::finish`] for why.
#[derive(Debug, thiserror::Error)]
#[error("the store writer has stopped")]
pub struct WriterStopped;

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store writer thread panicked")]
    Panicked,
    #[error("starting the store writer thread")]
    Spawn(#[source] std::io::Error),
}

#[derive(Debug, Default)]
pub struct WriterCounters {
    pub batches_written: AtomicU64,
    pub exchanges_written: AtomicU64,
    /// Exchanges already stored (an import of the same capture again): not stored twice.
    pub exchanges_duplicate: AtomicU64,
    /// Exchanges dropped because the writer's queue was full.
    pub exchanges_dropped_queue_full: AtomicU64,
    /// Exchanges lost with a batch whose commit failed.
    pub exchanges_lost_write_error: AtomicU64,
    /// Exchanges rejected alone (their batch stored without them): a key over LMDB's limit.
    pub exchanges_rejected_key_size: AtomicU64,
    /// ... a stored value of their session that cannot be read (corrupt or another version).
    pub exchanges_rejected_corrupt: AtomicU64,
    /// ... any other reason tied to the record (an encoding error, a malformed session id).
    pub exchanges_rejected_other: AtomicU64,
    pub write_errors: AtomicU64,
    pub map_full_errors: AtomicU64,
    pub pruned_sessions: AtomicU64,
    pub pruned_exchanges: AtomicU64,
    pub prune_errors: AtomicU64,
}

impl WriterCounters {
    /// Counts one record rejected for `reason` under the counter of its kind.
    pub fn count_rejected(&self, reason: &StoreError) {
        let counter = match reason {
            StoreError::KeyTooLong { .. } => &self.exchanges_rejected_key_size,
            StoreError::Lmdb(_, heed::Error::Mdb(heed::MdbError::BadValSize)) => {
                &self.exchanges_rejected_key_size
            }
            StoreError::Corrupt { .. } => &self.exchanges_rejected_corrupt,
            _ => &self.exchanges_rejected_other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("batches_written", get(&self.batches_written)),
            ("exchanges_written", get(&self.exchanges_written)),
            ("exchanges_duplicate", get(&self.exchanges_duplicate)),
            (
                "exchanges_dropped_queue_full",
                get(&self.exchanges_dropped_queue_full),
            ),
            (
                "exchanges_lost_write_error",
                get(&self.exchanges_lost_write_error),
            ),
            (
                "exchanges_rejected_key_size",
                get(&self.exchanges_rejected_key_size),
            ),
            (
                "exchanges_rejected_corrupt",
                get(&self.exchanges_rejected_corrupt),
            ),
            (
                "exchanges_rejected_other",
                get(&self.exchanges_rejected_other),
            ),
            ("write_errors", get(&self.write_errors)),
            ("map_full_errors", get(&self.map_full_errors)),
            ("pruned_sessions", get(&self.pruned_sessions)),
            ("pruned_exchanges", get(&self.pruned_exchanges)),
            ("prune_errors", get(&self.prune_errors)),
        ]
    }
}

pub struct StoreWriter {
    mode: WriterMode,
    tx: Option<SyncSender<Batch>>,
    thread: Option<thread::JoinHandle<Result<(), StoreError>>>,
    pub counters: Arc<WriterCounters>,
}

impl StoreWriter {
    /// `store` may be shared with readers in this process (the daemon's console).
    pub fn start(store: impl Into<Arc<Store>>, mode: WriterMode) -> Result<Self, WriterError> {
        let store: Arc<Store> = store.into();
        // An import's batches are a whole transaction each: one waiting while the next fills
        // keeps both sides busy, and at most three are in memory.
        let queue = match mode {
            WriterMode::Daemon { .. } => QUEUE_BATCHES,
            WriterMode::Import => 1,
        };
        let (tx, rx) = mpsc::sync_channel::<Batch>(queue);
        let counters = Arc::new(WriterCounters::default());
        let shared = Arc::clone(&counters);
        // Named, so that its CPU time shows apart (`top -H`, `cargo xtask bench`).
        let spawned = thread::Builder::new().name("store-writer".into());
        let thread = spawned.spawn(move || match mode {
            WriterMode::Daemon {
                retention,
                prune_every,
            } => {
                daemon_loop(&store, &rx, retention, prune_every, &shared);
                Ok(())
            }
            WriterMode::Import => {
                for batch in rx {
                    write(&store, &batch, &shared)?;
                }
                Ok(())
            }
        });
        Ok(Self {
            mode,
            tx: Some(tx),
            thread: Some(thread.map_err(WriterError::Spawn)?),
            counters,
        })
    }

    /// Hands a batch to the writer. The daemon's writer counts it as dropped if the queue is
    /// full; an import's waits for room, and fails once the writer has stopped.
    pub fn submit(&self, batch: Batch) -> Result<(), WriterStopped> {
        if batch.is_empty() {
            return Ok(());
        }
        let Some(tx) = &self.tx else {
            return Err(WriterStopped);
        };
        let len = batch.exchanges.len() as u64;
        if self.mode == WriterMode::Import {
            return tx.send(batch).map_err(|_| WriterStopped);
        }
        match tx.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters
                    .exchanges_dropped_queue_full
                    .fetch_add(len, Ordering::Relaxed);
                log::error!("store writer is behind: dropped {len} exchanges (queue full)");
            }
            Err(TrySendError::Disconnected(_)) => {
                self.counters
                    .exchanges_lost_write_error
                    .fetch_add(len, Ordering::Relaxed);
                log::error!("store writer has stopped: lost {len} exchanges");
            }
        }
        Ok(())
    }

    /// Writes what is queued and stops the thread; the error that stopped an import's writer.
    pub fn finish(mut self) -> Result<(), WriterError> {
        self.tx.take();
        match self.thread.take().map(thread::JoinHandle::join) {
            Some(Ok(result)) => Ok(result?),
            Some(Err(_)) => Err(WriterError::Panicked),
            None => Ok(()),
        }
    }
}

fn daemon_loop(
    store: &Store,
    rx: &mpsc::Receiver<Batch>,
    retention: Duration,
    prune_every: Duration,
    counters: &WriterCounters,
) {
    let mut next_prune = Instant::now();
    let mut pruning = false;
    loop {
        if Instant::now() >= next_prune {
            pruning = true;
            next_prune = Instant::now() + prune_every;
        }
        if pruning {
            pruning = prune_step(store, retention, counters);
        }
        // While a sweep is under way, only glance at the queue between its steps.
        let wait = if pruning {
            Duration::ZERO
        } else {
            next_prune.saturating_duration_since(Instant::now())
        };
        match rx.recv_timeout(wait) {
            Ok(mut batch) => {
                while batch.exchanges.len() < TRANSACTION_EXCHANGES {
                    match rx.try_recv() {
                        Ok(more) => batch.extend(more),
                        Err(_) => break,
                    }
                }
                if let Err(e) = write(store, &batch, counters) {
                    counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    counters
                        .exchanges_lost_write_error
                        .fetch_add(batch.exchanges.len() as u64, Ordering::Relaxed);
                    if matches!(e, StoreError::MapFull) {
                        counters.map_full_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    log::error!("store: lost {} exchanges: {e}", batch.exchanges.len());
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
}

/// Commits one batch, counting what was written, what was there already and what was rejected;
/// the error of the store itself (the whole batch is lost).
fn write(store: &Store, batch: &Batch, counters: &WriterCounters) -> Result<(), StoreError> {
    let report = store.write_isolating(&batch.exchanges, &batch.state)?;
    // Statistics, replaced whole at the next hand-over: a failure costs no exchange.
    if let Some(inventory) = &batch.inventory
        && let Err(e) = store.write_inventory(inventory)
    {
        counters.write_errors.fetch_add(1, Ordering::Relaxed);
        log::error!("store: the endpoint inventory was not written: {e}");
    }
    counters.batches_written.fetch_add(1, Ordering::Relaxed);
    counters
        .exchanges_written
        .fetch_add(report.written as u64, Ordering::Relaxed);
    counters
        .exchanges_duplicate
        .fetch_add(report.duplicates as u64, Ordering::Relaxed);
    for (position, reason) in &report.rejected {
        counters.count_rejected(reason);
        log_rejected(batch.exchanges.get(*position), reason);
    }
    Ok(())
}

/// The ERROR line of a rejected record: which exchange (session, time, method, endpoint cut
/// short) and why, so that the loss can be traced to its request.
fn log_rejected(item: Option<&(StoredExchange, Assignment)>, reason: &StoreError) {
    let Some((exchange, assignment)) = item else {
        log::error!("store: rejected an exchange: {reason}");
        return;
    };
    let endpoint = exchange.endpoint.as_deref().unwrap_or("-");
    let shown: String = endpoint.chars().take(80).collect();
    let more = if shown.len() < endpoint.len() {
        "…"
    } else {
        ""
    };
    log::error!(
        "store: rejected the exchange {} {shown}{more} at {} of session {} (the rest of its batch is stored): {reason}",
        exchange.method.as_deref().unwrap_or("-"),
        crate::exchange::rfc3339_ns(exchange.ts_ns),
        assignment.session_id,
    );
}

/// One bounded pruning transaction; true while more old sessions remain.
fn prune_step(store: &Store, retention: Duration, counters: &WriterCounters) -> bool {
    let cutoff = now_ns().saturating_sub(retention.as_nanos() as u64);
    match store.prune(cutoff, PRUNE_STEP) {
        Ok(report) => {
            counters
                .pruned_sessions
                .fetch_add(report.sessions, Ordering::Relaxed);
            counters
                .pruned_exchanges
                .fetch_add(report.exchanges, Ordering::Relaxed);
            report.more
        }
        Err(e) => {
            counters.prune_errors.fetch_add(1, Ordering::Relaxed);
            log::error!("store: pruning failed: {e}");
            false
        }
    }
}
