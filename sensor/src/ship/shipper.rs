//! The shipper: a thread that reads the store's outbox and inserts into the central store.
//!
//! It only reads LMDB (read transactions next to the writer's) and writes its cursor in a small
//! transaction of its own, so capture never waits for it. The cursor advances only after
//! ClickHouse acknowledged the inserts of a batch (exchanges, then their sessions' latest
//! summaries); while the server inserts a full batch, the next one is read and encoded, so that
//! a backlog drains with the shipper's and the server's work overlapping; until then the batch is retried with capped exponential backoff and jitter, and
//! the store's retention is the buffer: an outage shorter than it loses nothing. What pruning
//! removed before it could be shipped is counted (`exchanges_lost_pruned`, kept in the outbox
//! across restarts) and logged at ERROR.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, RecvTimeoutError},
    },
    thread,
    time::{Duration, Instant},
};

use super::{
    CentralError,
    client::Client,
    rows::{EXCHANGE_COLUMNS, ExchangeRow, SessionRow, exchange_id},
    schema,
};
use crate::{
    config::CentralSection,
    exchange::now_ns,
    store::{Store, outbox::OutboxEntry},
};

/// How often the retention sweep drops expired central partitions.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// What `apisessions stats` shows of the shipper. The last error never holds the password:
/// errors carry the server's answer, which names the user at most.
#[derive(Debug, Default)]
pub struct ShipperCounters {
    pub exchanges_shipped: AtomicU64,
    pub sessions_shipped: AtomicU64,
    pub inserts: AtomicU64,
    /// Failed attempts (connection, authentication, server errors).
    pub failures: AtomicU64,
    /// Exchanges pruned from the local store before they could be shipped (data loss), over
    /// the store's life (kept in the outbox).
    pub exchanges_lost_pruned: AtomicU64,
    /// Exchanges stored and not yet acknowledged by the central store.
    pub pending_exchanges: AtomicU64,
    /// Age of the oldest unshipped exchange block, in seconds (0: nothing pending).
    pub lag_seconds: AtomicU64,
    /// Unix seconds of the last acknowledged batch (0: none yet).
    pub last_success_unix: AtomicU64,
    pub schema_version: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ShipperCounters {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("exchanges_shipped", get(&self.exchanges_shipped)),
            ("sessions_shipped", get(&self.sessions_shipped)),
            ("inserts", get(&self.inserts)),
            ("failures", get(&self.failures)),
            ("exchanges_lost_pruned", get(&self.exchanges_lost_pruned)),
            ("pending_exchanges", get(&self.pending_exchanges)),
            ("lag_seconds", get(&self.lag_seconds)),
            ("last_success_unix", get(&self.last_success_unix)),
            ("schema_version", get(&self.schema_version)),
        ]
    }

    /// The last failure's message (cleared by the next success).
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn set_last_error(&self, error: Option<String>) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = error;
        }
    }
}

/// How the shipper paces itself; [`ShipperSettings::from_config`] for the daemon.
#[derive(Clone, Debug)]
pub struct ShipperSettings {
    pub host_id: String,
    pub batch_size: usize,
    pub interval: Duration,
    /// Central partitions older than this are dropped (the local retention, by default).
    pub retention: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl ShipperSettings {
    pub fn from_config(config: &CentralSection, retention: Duration) -> Self {
        Self {
            host_id: config.host_id(),
            batch_size: config.batch_size,
            interval: config.interval,
            retention,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
        }
    }
}

pub struct ShipperHandle {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
    pub counters: Arc<ShipperCounters>,
}

impl ShipperHandle {
    /// Stops the shipper (after the attempt under way) and waits for it. What it has not
    /// shipped stays in the outbox for the next start.
    pub fn stop(mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("the central shipper thread panicked");
        }
    }
}

impl Drop for ShipperHandle {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub struct Shipper {
    store: Store,
    client: Client,
    settings: ShipperSettings,
    counters: Arc<ShipperCounters>,
    stop: mpsc::Receiver<()>,
    failing: Option<String>,
    /// The outbox status was read once (see `update_status`).
    status_read: bool,
    /// The batch after the last one acknowledged, read while that one was inserted.
    prepared: Option<Prepared>,
}

impl Shipper {
    /// Starts shipping the outbox of `store` (a [`Store::share`] of the writer's store, whose
    /// outbox is enabled) to the configured server on a thread of its own.
    pub fn spawn(
        store: Store,
        config: &CentralSection,
        settings: ShipperSettings,
    ) -> Result<ShipperHandle, CentralError> {
        let client = Client::new(config)?;
        let (stop_tx, stop) = mpsc::channel();
        let counters = Arc::new(ShipperCounters::default());
        let mut shipper = Self {
            store,
            client,
            settings,
            counters: Arc::clone(&counters),
            stop,
            failing: None,
            status_read: false,
            prepared: None,
        };
        let thread = thread::Builder::new()
            .name("central-shipper".into())
            .spawn(move || shipper.run())
            .map_err(|e| CentralError::Unreachable(format!("starting the shipper: {e}")))?;
        Ok(ShipperHandle {
            stop: Some(stop_tx),
            thread: Some(thread),
            counters,
        })
    }

    /// Sleeps `duration` unless told to stop; true to stop.
    fn wait(&self, duration: Duration) -> bool {
        !matches!(
            self.stop.recv_timeout(duration),
            Err(RecvTimeoutError::Timeout)
        )
    }

    fn run(&mut self) {
        log::info!(
            "central: shipping to {} as host {}",
            self.client.url(),
            self.settings.host_id
        );
        let mut backoff = Backoff::new(self.settings.backoff_min, self.settings.backoff_max);
        let mut schema_ready = false;
        let mut next_sweep = Instant::now();
        loop {
            self.update_status();
            let outcome = if schema_ready {
                if Instant::now() >= next_sweep {
                    next_sweep = Instant::now() + RETENTION_EVERY;
                    self.sweep();
                }
                self.ship_once()
            } else {
                schema::migrate(&self.client).map(|_| {
                    schema_ready = true;
                    self.counters
                        .schema_version
                        .store(schema::latest_version().into(), Ordering::Relaxed);
                    Shipped::Full
                })
            };
            let pause = match outcome {
                Ok(shipped) => {
                    backoff.reset();
                    self.recovered();
                    match shipped {
                        Shipped::Full => Duration::ZERO,
                        Shipped::Some | Shipped::Nothing => self.settings.interval,
                    }
                }
                Err(e) => {
                    self.failed(&e);
                    // The server may come back empty (a new node, a dropped database): the
                    // schema is checked again before the next insert.
                    schema_ready = false;
                    backoff.next()
                }
            };
            if self.wait(pause) {
                self.update_status();
                return;
            }
        }
    }

    fn update_status(&mut self) {
        match self.store.outbox_status() {
            Ok(status) => {
                self.counters
                    .pending_exchanges
                    .store(status.pending_exchanges, Ordering::Relaxed);
                let lag = status
                    .oldest_pending_ns
                    .map_or(0, |ns| now_ns().saturating_sub(ns) / 1_000_000_000);
                self.counters.lag_seconds.store(lag, Ordering::Relaxed);
                let before = self
                    .counters
                    .exchanges_lost_pruned
                    .swap(status.lost_exchanges, Ordering::Relaxed);
                // The first reading only learns the store's past; later growth is new loss.
                if self.status_read && status.lost_exchanges > before {
                    log::error!(
                        "central: {} exchanges were pruned from the local store before they could be shipped",
                        status.lost_exchanges - before
                    );
                }
                self.status_read = true;
            }
            Err(e) => log::warn!("central: reading the outbox: {e}"),
        }
    }

    fn sweep(&self) {
        let cutoff_day =
            (now_ns() / 1_000_000_000).saturating_sub(self.settings.retention.as_secs()) / 86_400;
        match schema::drop_expired(&self.client, cutoff_day) {
            Ok(0) => {}
            Ok(n) => log::info!("central: dropped {n} expired partitions"),
            Err(e) => log::warn!("central: retention sweep failed: {e}"),
        }
    }

    /// Reads and encodes the entries after `after` (None: after the cursor).
    fn prepare(&self, after: Option<u64>) -> Result<Option<Prepared>, CentralError> {
        let entries = self
            .store
            .outbox_read_after(after, self.settings.batch_size)?;
        let Some(last) = entries.last().map(|e| e.sequence) else {
            return Ok(None);
        };
        Ok(Some(Prepared {
            last,
            batch: Batch::new(&self.settings.host_id, &entries)?,
        }))
    }

    /// One batch: read (or take the one prepared meanwhile), insert, advance. While the server
    /// inserts a full batch (a backlog), the next one is read and encoded on this thread, so
    /// that the shipper's work and the server's overlap; it is kept only if this batch was
    /// acknowledged and the cursor moved past it.
    fn ship_once(&mut self) -> Result<Shipped, CentralError> {
        let current = match self.prepared.take() {
            Some(prepared) => prepared,
            None => match self.prepare(None)? {
                Some(prepared) => prepared,
                None => return Ok(Shipped::Nothing),
            },
        };
        let Prepared { last, batch } = current;
        let full = batch.exchange_count as usize >= self.settings.batch_size;
        let client = &self.client;
        let (inserted, next) = thread::scope(|scope| {
            let insert = scope.spawn(|| batch.insert(client));
            let next = full.then(|| self.prepare(Some(last)));
            let inserted = insert.join().unwrap_or_else(|_| {
                Err(CentralError::Unreachable(
                    "the insert thread panicked".into(),
                ))
            });
            (inserted, next)
        });
        inserted?;
        self.store.outbox_advance(last, batch.lost)?;
        let c = &self.counters;
        c.inserts.fetch_add(1, Ordering::Relaxed);
        c.exchanges_shipped
            .fetch_add(batch.exchange_count, Ordering::Relaxed);
        c.sessions_shipped
            .fetch_add(batch.session_count, Ordering::Relaxed);
        c.last_success_unix
            .store(now_ns() / 1_000_000_000, Ordering::Relaxed);
        // A failed read of the next batch is retried from the cursor next time.
        self.prepared = next.and_then(Result::ok).flatten();
        Ok(if full { Shipped::Full } else { Shipped::Some })
    }

    fn failed(&mut self, error: &CentralError) {
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        let message = error.to_string();
        self.counters.set_last_error(Some(message.clone()));
        // One line per kind of trouble, not one per retry.
        if self.failing.as_deref() != Some(message.as_str()) {
            log::warn!(
                "central: shipping to {} failed (retrying with backoff; nothing is lost while the local store keeps it): {message}",
                self.client.url()
            );
            self.failing = Some(message);
        }
    }

    fn recovered(&mut self) {
        if self.failing.take().is_some() {
            log::info!("central: shipping to {} works again", self.client.url());
            self.counters.set_last_error(None);
        }
    }
}

enum Shipped {
    Nothing,
    Some,
    /// A full batch went: more may be waiting, go on at once.
    Full,
}

/// A batch read and encoded, and the sequence number of its last outbox entry.
struct Prepared {
    last: u64,
    batch: Batch,
}

/// One insert's bodies.
struct Batch {
    /// RowBinary ([`EXCHANGE_COLUMNS`]).
    exchanges: Vec<u8>,
    /// JSONEachRow.
    sessions: Vec<u8>,
    exchange_count: u64,
    session_count: u64,
    /// Exchanges announced by entries whose block was pruned.
    lost: u64,
}

impl Batch {
    /// Inserts the exchanges, then their sessions' summaries.
    fn insert(&self, client: &Client) -> Result<(), CentralError> {
        if !self.exchanges.is_empty() {
            client.insert_row_binary("exchanges", EXCHANGE_COLUMNS, &self.exchanges)?;
        }
        if !self.sessions.is_empty() {
            client.insert("sessions", &self.sessions)?;
        }
        Ok(())
    }

    fn new(host_id: &str, entries: &[OutboxEntry]) -> Result<Self, CentralError> {
        let mut batch = Self {
            exchanges: Vec::new(),
            sessions: Vec::new(),
            exchange_count: 0,
            session_count: 0,
            lost: 0,
        };
        let mut sessions = HashMap::new();
        for entry in entries {
            let Some(session) = &entry.session else {
                batch.lost += u64::from(entry.announced);
                continue;
            };
            if entry.exchanges.is_empty() {
                batch.lost += u64::from(entry.announced);
            }
            for (position, exchange) in entry.exchanges.iter().enumerate() {
                let id = exchange_id(host_id, &entry.block_key, position);
                ExchangeRow::new(host_id, id, &session.session_id, exchange)
                    .write_row_binary(&mut batch.exchanges);
                batch.exchange_count += 1;
            }
            // Entries were read in one transaction: every summary of a session is the same.
            sessions
                .entry(session.session_id.as_str())
                .or_insert(session);
        }
        for session in sessions.values() {
            serde_json::to_writer(&mut batch.sessions, &SessionRow::new(host_id, session))
                .map_err(|e| CentralError::BadAnswer(e.to_string()))?;
            batch.sessions.push(b'\n');
            batch.session_count += 1;
        }
        Ok(batch)
    }
}

/// Capped exponential backoff with jitter: each wait is drawn from the upper half of the
/// current step, so that sensors that failed together do not retry together.
struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            step: min,
        }
    }

    fn reset(&mut self) {
        self.step = self.min;
    }

    fn next(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        let jitter = getrandom::u64().unwrap_or(0) % (half.as_millis() as u64 + 1);
        half + Duration::from_millis(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_and_resets() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(1000));
        let mut backoff = Backoff::new(min, max);
        let mut steps = Vec::new();
        for _ in 0..8 {
            steps.push(backoff.next());
        }
        for (i, wait) in steps.iter().enumerate() {
            let step = (min * 2u32.pow(i as u32)).min(max);
            assert!(
                *wait >= step / 2 && *wait <= step,
                "{i}: {wait:?} for {step:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next() <= min);
    }
}
