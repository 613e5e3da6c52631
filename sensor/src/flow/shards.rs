//! The flows decoded on several threads: each segment goes to one of N workers by a hash of its
//! connection (both directions to the same one), and each worker has a [`FlowTable`] of its
//! own with 1/N of the bounds. The exchanges come back in the order one table would have
//! produced them, so an import decodes to the same records whatever N is.
//!
//! Segments are handed out in chunks: a chunk holds up to [`CHUNK_SEGMENTS`] segments and
//! every worker gets its share of each chunk (maybe nothing), numbered by position. A worker
//! answers each chunk with the exchanges it finished, tagged with the position of the item
//! that finished them; the chunk's answers, merged by position, are that stretch of the
//! single table's output. Idle timeouts are items too ([`ShardedFlows::expire`]), given to every
//! worker at the same position with the newest segment time of all workers, as one table would
//! have seen it. At most [`CHUNKS_IN_FLIGHT`] chunks are out at a time: memory stays bounded and
//! the reader waits for slow workers.
//!
//! What is left on one thread after this (the proxy stage, the analysis, the store) is most of
//! an exchange's cost: see docs/BENCHMARKS.md for what N workers give.

use std::{
    hash::{BuildHasher as _, Hash as _, Hasher as _},
    sync::mpsc::{Receiver, SyncSender, channel, sync_channel},
    thread::JoinHandle,
};

use super::{FlowConfig, FlowTable, SkipHint};
use crate::{exchange::Exchange, segment::TcpSegment};

/// Counters by stage and name, as [`FlowTable::snapshot`] gives them.
type Snapshot = Vec<(&'static str, Vec<(&'static str, u64)>)>;

/// Segments per chunk at most.
pub const CHUNK_SEGMENTS: usize = 1024;
/// Chunks handed out and not answered yet, at most.
pub const CHUNKS_IN_FLIGHT: usize = 4;
/// Workers at most.
pub const MAX_WORKERS: usize = 64;

/// One item of a worker's share of a chunk.
enum Item {
    Segment(TcpSegment),
    /// Close the flows idle as of this capture time.
    Expire(u64),
    /// The capture is over: end every flow.
    Finish,
}

/// A worker's answer to one chunk.
struct Answer {
    /// Finished exchanges with the position of the item that finished them, in order.
    exchanges: Vec<(u32, Exchange)>,
    snapshot: Snapshot,
    port_verdicts: Vec<(u16, bool)>,
    skip_hints: Vec<SkipHint>,
}

struct Worker {
    chunks: Option<SyncSender<Vec<(u32, Item)>>>,
    answers: Receiver<Answer>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("starting a decoding thread")]
    Spawn(#[source] std::io::Error),
}

/// The flow table spread over worker threads (see the module's text).
pub struct ShardedFlows {
    workers: Vec<Worker>,
    /// The chunk being filled: each worker's share.
    filling: Vec<Vec<(u32, Item)>>,
    /// Items in the chunk being filled, and segments among them.
    items: u32,
    segments: usize,
    /// Chunks handed out and not answered yet.
    in_flight: usize,
    /// Newest segment time handed out: the clock of the idle timeouts.
    newest_ns: u64,
    /// Each worker's latest counters.
    snapshots: Vec<Snapshot>,
    port_verdicts: Vec<(u16, bool)>,
    skip_hints: Vec<SkipHint>,
    /// A worker that stopped answering (it panicked): nothing more is decoded, and the counters
    /// say so.
    broken: bool,
    /// Segments not decoded because a worker stopped.
    segments_lost: u64,
    /// Keys the connection hash; one per table, so both directions of a connection meet.
    hasher: foldhash::fast::FixedState,
}

impl ShardedFlows {
    /// `workers` threads (at least 1, at most [`MAX_WORKERS`]), each with a table of 1/N of
    /// `config`'s bounds.
    pub fn new(config: &FlowConfig, workers: usize) -> Result<Self, ShardError> {
        let n = workers.clamp(1, MAX_WORKERS);
        let mut share = config.clone();
        share.max_flows = (config.max_flows / n).max(1);
        share.max_buffered_bytes = (config.max_buffered_bytes / n).max(1);
        let mut started = Vec::with_capacity(n);
        for index in 0..n {
            let (chunks, chunk_rx) = sync_channel::<Vec<(u32, Item)>>(CHUNKS_IN_FLIGHT);
            let (answer_tx, answers) = channel();
            let config = share.clone();
            let thread = std::thread::Builder::new()
                .name(format!("decode-{index}"))
                .spawn(move || work(FlowTable::new(config), chunk_rx, answer_tx))
                .map_err(ShardError::Spawn)?;
            started.push(Worker {
                chunks: Some(chunks),
                answers,
                thread: Some(thread),
            });
        }
        Ok(Self {
            filling: (0..n).map(|_| Vec::new()).collect(),
            snapshots: vec![Vec::new(); n],
            workers: started,
            items: 0,
            segments: 0,
            in_flight: 0,
            newest_ns: 0,
            port_verdicts: Vec::new(),
            skip_hints: Vec::new(),
            broken: false,
            segments_lost: 0,
            hasher: foldhash::fast::FixedState::with_seed(0),
        })
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Feeds one segment; the exchanges of chunks the workers have answered go to `out`.
    pub fn push(&mut self, segment: TcpSegment, out: &mut Vec<Exchange>) {
        self.newest_ns = self.newest_ns.max(segment.ts_ns);
        let worker = self.worker_of(&segment);
        let position = self.items;
        self.filling[worker].push((position, Item::Segment(segment)));
        self.items += 1;
        self.segments += 1;
        if self.segments >= CHUNK_SEGMENTS {
            self.hand_out(out);
        }
    }

    /// Closes the flows idle as of `now_ns` or the newest segment time, whichever is later, at
    /// this point of the segments' order. Their exchanges come with a later call.
    pub fn expire(&mut self, now_ns: u64) {
        let now = self.newest_ns.max(now_ns);
        self.broadcast(|| Item::Expire(now));
    }

    /// Hands out what was pushed and waits for every answer: afterwards `out` holds every
    /// exchange the segments so far finished.
    pub fn sync(&mut self, out: &mut Vec<Exchange>) {
        if self.items > 0 {
            self.hand_out(out);
        }
        while self.in_flight > 0 {
            self.collect_oldest(out);
        }
    }

    /// Ends every flow (the capture is over) and stops the workers.
    pub fn finish(&mut self, out: &mut Vec<Exchange>) {
        self.broadcast(|| Item::Finish);
        self.sync(out);
        self.stop();
    }

    /// (server port, speaks HTTP) verdicts the workers reported since the last call.
    pub fn take_port_verdicts(&mut self) -> Vec<(u16, bool)> {
        std::mem::take(&mut self.port_verdicts)
    }

    /// The workers' skip hints that came with their answers so far.
    pub fn take_skip_hints(&mut self) -> Vec<SkipHint> {
        std::mem::take(&mut self.skip_hints)
    }

    /// The workers' counters summed by stage and name, as of their latest answers.
    pub fn snapshot(&self) -> Snapshot {
        let mut sum: Snapshot = Vec::new();
        for snapshot in &self.snapshots {
            for (stage, counters) in snapshot {
                let index = match sum.iter().position(|(s, _)| s == stage) {
                    Some(index) => index,
                    None => {
                        sum.push((stage, Vec::new()));
                        sum.len() - 1
                    }
                };
                let slot = &mut sum[index].1;
                for (name, value) in counters {
                    match slot.iter_mut().find(|(n, _)| n == name) {
                        Some((_, total)) => *total += value,
                        None => slot.push((name, *value)),
                    }
                }
            }
        }
        if let Some((_, flows)) = sum.iter_mut().find(|(stage, _)| *stage == "flows") {
            flows.push(("segments_lost_worker_stopped", self.segments_lost));
        }
        sum
    }

    /// Both directions of a connection hash alike: the two ends are taken in a fixed order.
    fn worker_of(&self, segment: &TcpSegment) -> usize {
        let (a, b) = if segment.src <= segment.dst {
            (segment.src, segment.dst)
        } else {
            (segment.dst, segment.src)
        };
        let mut hasher = self.hasher.build_hasher();
        a.hash(&mut hasher);
        b.hash(&mut hasher);
        (hasher.finish() % self.workers.len() as u64) as usize
    }

    fn broadcast(&mut self, item: impl Fn() -> Item) {
        let position = self.items;
        for share in &mut self.filling {
            share.push((position, item()));
        }
        self.items += 1;
    }

    /// Sends the chunk being filled to the workers; collects the oldest answers while too many
    /// chunks are out.
    fn hand_out(&mut self, out: &mut Vec<Exchange>) {
        let segments = self.segments;
        self.items = 0;
        self.segments = 0;
        if !self.broken {
            for (worker, share) in self.workers.iter().zip(&mut self.filling) {
                let chunk = std::mem::take(share);
                let sent = worker
                    .chunks
                    .as_ref()
                    .is_some_and(|tx| tx.send(chunk).is_ok());
                if !sent {
                    self.broken = true;
                }
            }
        }
        if self.broken {
            // Nothing more is sent once a worker stopped: the others' answers would no longer
            // be collected, and their bounded queues would fill and block this thread.
            for share in &mut self.filling {
                share.clear();
            }
            self.segments_lost += segments as u64;
            return;
        }
        self.in_flight += 1;
        while self.in_flight > CHUNKS_IN_FLIGHT {
            self.collect_oldest(out);
        }
    }

    /// Waits for every worker's answer to the oldest chunk out and merges them by position.
    fn collect_oldest(&mut self, out: &mut Vec<Exchange>) {
        self.in_flight -= 1;
        let mut merged: Vec<(u32, usize, Exchange)> = Vec::new();
        for (index, worker) in self.workers.iter().enumerate() {
            match worker.answers.recv() {
                Ok(answer) => {
                    merged.extend(answer.exchanges.into_iter().map(|(p, e)| (p, index, e)));
                    self.snapshots[index] = answer.snapshot;
                    self.port_verdicts.extend(answer.port_verdicts);
                    self.skip_hints.extend(answer.skip_hints);
                }
                Err(_) => {
                    log::error!("decoding thread {index} stopped; the rest is not decoded");
                    self.broken = true;
                }
            }
        }
        // Stable: a worker's own exchanges keep their order; at one position (an idle timeout
        // every worker ran) the first worker's come first.
        merged.sort_by_key(|(position, worker, _)| (*position, *worker));
        out.extend(merged.into_iter().map(|(_, _, exchange)| exchange));
    }

    fn stop(&mut self) {
        for worker in &mut self.workers {
            // Closing its channel ends the worker's loop.
            worker.chunks = None;
            if let Some(thread) = worker.thread.take()
                && thread.join().is_err()
            {
                log::error!("a decoding thread panicked");
            }
        }
    }
}

impl Drop for ShardedFlows {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A worker: decodes its share of each chunk with its own table until the chunks stop.
fn work(
    mut table: FlowTable,
    chunks: Receiver<Vec<(u32, Item)>>,
    answers: std::sync::mpsc::Sender<Answer>,
) {
    let mut decoded = Vec::new();
    while let Ok(chunk) = chunks.recv() {
        let mut exchanges = Vec::new();
        for (position, item) in chunk {
            match item {
                Item::Segment(segment) => table.push(segment, &mut decoded),
                Item::Expire(now_ns) => table.expire(now_ns, &mut decoded),
                Item::Finish => table.finish(&mut decoded),
            }
            exchanges.extend(decoded.drain(..).map(|e| (position, e)));
        }
        let answer = Answer {
            exchanges,
            snapshot: table.snapshot(),
            port_verdicts: table.take_port_verdicts(),
            skip_hints: table.take_skip_hints(),
        };
        if answers.send(answer).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{flow::Flows, source::PcapSource};

    /// Every segment of the project's capture fixtures, one file after the other.
    fn fixture_segments() -> Vec<TcpSegment> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
        let mut segments = Vec::new();
        for name in [
            "http-ethernet.pcap",
            "http-multi.pcapng",
            "http-any.pcap",
            "http-vlan.pcap",
            "http-snaplen.pcap",
        ] {
            let mut source = PcapSource::open(dir.join(name)).unwrap();
            while let Some(segment) = source.next_segment().unwrap() {
                segments.push(segment);
            }
        }
        segments
    }

    /// What a table gives for `segments`, with an idle timeout check every `expire_every`.
    fn decode(flows: &mut Flows, segments: &[TcpSegment], expire_every: usize) -> Vec<Exchange> {
        let mut out = Vec::new();
        for (i, segment) in segments.iter().enumerate() {
            flows.push(segment.clone(), &mut out);
            if i % expire_every == expire_every - 1 {
                flows.expire(0, &mut out);
            }
        }
        flows.finish(&mut out);
        out
    }

    #[test]
    fn any_number_of_workers_gives_one_tables_exchanges_in_its_order() {
        let segments = fixture_segments();
        let config = FlowConfig {
            idle_timeout: std::time::Duration::from_millis(1),
            ..FlowConfig::default()
        };
        let mut one = Flows::from(FlowTable::new(config.clone()));
        let want = decode(&mut one, &segments, 7);
        assert!(want.len() > 20, "{}", want.len());
        let idle = |flows: &Flows| {
            flows.snapshot()[0]
                .1
                .iter()
                .find(|(name, _)| *name == "idle_expired")
                .map(|(_, n)| *n)
        };
        assert!(idle(&one) > Some(0), "the timeouts run");
        for workers in [1, 2, 3, 5] {
            let mut sharded = Flows::from(ShardedFlows::new(&config, workers).unwrap());
            let got = decode(&mut sharded, &segments, 7);
            assert_eq!(got.len(), want.len(), "{workers} workers");
            assert!(got == want, "{workers} workers: another order or content");
            assert_eq!(idle(&sharded), idle(&one), "{workers} workers");
        }
    }

    #[test]
    fn both_directions_of_a_connection_go_to_one_worker() {
        let sharded = ShardedFlows::new(&FlowConfig::default(), 7).unwrap();
        for segment in fixture_segments() {
            let mut reverse = segment.clone();
            reverse.src = segment.dst;
            reverse.dst = segment.src;
            assert_eq!(sharded.worker_of(&segment), sharded.worker_of(&reverse));
        }
    }

    #[test]
    fn more_segments_than_chunks_in_flight_hold_are_all_decoded() {
        // Enough segments for many chunks, so that answers are collected while pushing.
        let segments: Vec<TcpSegment> = fixture_segments()
            .into_iter()
            .cycle()
            .take(CHUNK_SEGMENTS * (CHUNKS_IN_FLIGHT + 3))
            .collect();
        let config = FlowConfig::default();
        let want = decode(
            &mut Flows::from(FlowTable::new(config.clone())),
            &segments,
            100,
        );
        assert!(!want.is_empty());
        let got = decode(
            &mut Flows::from(ShardedFlows::new(&config, 2).unwrap()),
            &segments,
            100,
        );
        assert!(got == want);
    }
}
