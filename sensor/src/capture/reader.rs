//! Draining the ring buffer into a bounded channel.
//!
//! The kernel submits most events without waking us (see `submit` in the eBPF program); it
//! forces a wakeup once enough data waits, and a timer drains whatever arrived in between. When
//! the next stage falls behind, the reader waits on the channel instead of dropping: the ring then
//! fills and the kernel counts `ring_full`, so there is exactly one place where events are lost.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::mpsc, sync::watch};

use super::{
    CaptureError,
    event::{Segment, decode},
};

/// How often the ring is drained when no wakeup came.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(10);

/// User-space capture counters, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct ReaderCounters {
    pub events_read: AtomicU64,
    pub bytes_read: AtomicU64,
    /// Events that could not be decoded (and were dropped).
    pub events_malformed: AtomicU64,
    pub wakeups: AtomicU64,
    pub timer_drains: AtomicU64,
    /// Skip ranges the kernel's map refused (`Sensor::skip`): those bodies cross the ring whole.
    pub skip_hints_refused: AtomicU64,
}

impl ReaderCounters {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("events_read", self.events_read.load(Ordering::Relaxed)),
            ("bytes_read", self.bytes_read.load(Ordering::Relaxed)),
            (
                "events_malformed",
                self.events_malformed.load(Ordering::Relaxed),
            ),
            ("wakeups", self.wakeups.load(Ordering::Relaxed)),
            ("timer_drains", self.timer_drains.load(Ordering::Relaxed)),
            (
                "skip_hints_refused",
                self.skip_hints_refused.load(Ordering::Relaxed),
            ),
        ]
    }
}

/// Reads events until `stop` turns true or the receiver goes away; then drains what is left.
pub async fn run(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<Segment>,
    counters: Arc<ReaderCounters>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), CaptureError> {
    // SAFETY: the RingBuf owns its map descriptor, which stays open and unchanged until the
    // AsyncFd (which owns the RingBuf) is dropped.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| CaptureError::Io("registering the ring buffer", e.into()))?;
    let mut timer = tokio::time::interval(DRAIN_INTERVAL);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ready = ring.readable_mut() => {
                let mut guard = ready.map_err(|e| CaptureError::Io("polling the ring buffer", e))?;
                counters.wakeups.fetch_add(1, Ordering::Relaxed);
                if !drain(guard.get_inner_mut(), &tx, &counters).await {
                    return Ok(());
                }
                guard.clear_ready();
            }
            _ = timer.tick() => {
                counters.timer_drains.fetch_add(1, Ordering::Relaxed);
                if !drain(ring.get_mut(), &tx, &counters).await {
                    return Ok(());
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    drain(ring.get_mut(), &tx, &counters).await;
                    return Ok(());
                }
            }
        }
    }
}

/// Moves every waiting event to the channel. Returns false once the receiver is gone.
async fn drain(
    ring: &mut RingBuf<MapData>,
    tx: &mpsc::Sender<Segment>,
    counters: &ReaderCounters,
) -> bool {
    loop {
        // Copy the event out and release the ring slot before waiting on the channel.
        let segment = {
            let Some(item) = ring.next() else { return true };
            match decode(&item) {
                Ok(segment) => segment,
                Err(e) => {
                    counters.events_malformed.fetch_add(1, Ordering::Relaxed);
                    log::error!("dropping a malformed capture event: {e}");
                    continue;
                }
            }
        };
        counters.events_read.fetch_add(1, Ordering::Relaxed);
        counters
            .bytes_read
            .fetch_add(segment.payload.len() as u64, Ordering::Relaxed);
        if tx.send(segment).await.is_err() {
            return false;
        }
    }
}
