//! TLS plaintext through uprobes on the TLS library (OpenSSL 3, dynamically linked).
//!
//! [`TlsCapture::start`] loads the uprobe programs and starts the reader; every
//! [`TlsCapture::rescan`] looks for the processes listening on the TLS ports ([`procfs`]),
//! attaches the probes once per distinct library file they map ([`library`] says where) and
//! tells the kernel which processes to capture. The reader turns the events into ordered
//! plaintext per connection ([`stream`]), which `TcpSegment::from_tls` hands to the same
//! reassembly, decoder and sessions as the wire's segments.

pub mod btf;
pub mod library;
pub mod procfs;
pub mod stream;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
};
use sensor_ebpf::{names, tls::counter};
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, watch},
    task::JoinHandle,
};

use super::{
    CaptureError,
    program::{CaptureProgram, read_named_counters},
};
use library::Placement;
pub use stream::Plaintext;
use stream::{MAX_PREEXISTING, Preexisting, StreamCounters, TlsStreams};

/// Plaintext segments buffered between the TLS reader and the daemon.
pub const CHANNEL_CAPACITY: usize = 16 * 1024;
/// How often the TLS ring is drained when no wakeup came.
const DRAIN_INTERVAL: Duration = Duration::from_millis(10);
/// Distinct library files attached at most.
const MAX_LIBRARIES: usize = 64;

/// A library file the probes are attached to.
#[derive(Clone, Debug)]
struct Attached {
    path: String,
    placement: Placement,
    free_emulated: bool,
}

/// What the user-space side counts (the kernel's counters are read from `TLS_COUNTERS`).
#[derive(Debug, Default)]
struct Shared {
    streams: StreamCounters,
    events_read: u64,
    events_malformed: u64,
}

/// A running TLS capture: probes, captured processes, reader.
pub struct TlsCapture {
    ports: Vec<u16>,
    /// Only servers in this network namespace (None: every namespace, containers included).
    netns: Option<u64>,
    attached: BTreeMap<(u64, u64), Attached>,
    /// Library files that could not be probed (not tried again).
    refused: BTreeSet<(u64, u64)>,
    pids: BTreeSet<u32>,
    pid_map: HashMap<MapData, u32, u8>,
    /// Connections open when their server's probes came: handed to the streams.
    preexisting: Preexisting,
    kernel: PerCpuArray<MapData, u64>,
    shared: Arc<Mutex<Shared>>,
    /// Processes on TLS ports without a TLS library this sensor can probe.
    without_library: u64,
    attach_errors: u64,
    libraries_past_bound: u64,
    pids_past_bound: u64,
    reader: JoinHandle<Result<(), CaptureError>>,
    stop: watch::Sender<bool>,
}

impl TlsCapture {
    /// Loads the programs, finds the servers on `ports` (in the calling thread's network
    /// namespace only, unless `all_namespaces`) and starts reading. Must run inside a tokio
    /// runtime.
    pub fn start(
        program: &mut CaptureProgram,
        ports: Vec<u16>,
        all_namespaces: bool,
    ) -> Result<(Self, mpsc::Receiver<Plaintext>), CaptureError> {
        let netns = match all_namespaces {
            true => None,
            false => Some(procfs::own_namespace().ok_or_else(|| {
                CaptureError::Io(
                    "reading this thread's network namespace",
                    std::io::Error::other("/proc/thread-self/ns/net"),
                )
            })?),
        };
        let maps = program.load_tls()?;
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let preexisting = Preexisting::default();
        let streams = TlsStreams::new(Box::new(procfs::connection), Arc::clone(&preexisting));
        let reader = tokio::spawn(read(maps.ring, streams, tx, Arc::clone(&shared), stop_rx));
        let mut capture = Self {
            ports,
            netns,
            attached: BTreeMap::new(),
            refused: BTreeSet::new(),
            pids: BTreeSet::new(),
            pid_map: maps.pids,
            preexisting,
            kernel: maps.counters,
            shared,
            without_library: 0,
            attach_errors: 0,
            libraries_past_bound: 0,
            pids_past_bound: 0,
            reader,
            stop,
        };
        capture.rescan(program);
        Ok((capture, rx))
    }

    /// Follows the servers on the TLS ports: probes new library files, captures new processes,
    /// forgets processes that went away.
    pub fn rescan(&mut self, program: &mut CaptureProgram) {
        let (servers, without_library) = procfs::tls_servers(&self.ports, self.netns);
        self.without_library = without_library;
        let mut pids = BTreeSet::new();
        for server in servers {
            let id = server.library_id;
            if !self.attached.contains_key(&id) && !self.refused.contains(&id) {
                if self.attached.len() >= MAX_LIBRARIES {
                    log::warn!("TLS: more than {MAX_LIBRARIES} libraries, not probing more");
                    self.refused.insert(id);
                    self.libraries_past_bound += 1;
                    continue;
                }
                match attach(program, &server.library) {
                    Ok(attached) => {
                        log::info!(
                            "TLS: probes on {} (pid {}): {} read/write functions, SSL_free {}",
                            attached.path,
                            server.pid,
                            attached.placement.as_str(),
                            if attached.free_emulated {
                                "on an emulated instruction"
                            } else {
                                "at its entry"
                            }
                        );
                        self.attached.insert(id, attached);
                    }
                    Err(CaptureError::Permission(_)) if !has_sys_admin() => {
                        // CAP_PERFMON is not enough: the kernel's uprobe PMU wants
                        // CAP_SYS_ADMIN, which a daemon that dropped root does not keep.
                        log::warn!(
                            "TLS: not probing {}: the kernel attaches uprobes only with \
                             CAP_SYS_ADMIN, which this daemon does not have (it runs without \
                             root: `run --user`, the packaged service); run it as root with \
                             `--user root` to read TLS plaintext. The rest is captured.",
                            server.library.display()
                        );
                        self.attach_errors += 1;
                        self.refused.insert(id);
                    }
                    Err(e) => {
                        let cause = std::error::Error::source(&e)
                            .map(|s| format!(": {s}"))
                            .unwrap_or_default();
                        log::warn!("TLS: not probing {}: {e}{cause}", server.library.display());
                        self.attach_errors += 1;
                        self.refused.insert(id);
                    }
                }
            }
            if self.attached.contains_key(&id) {
                pids.insert(server.pid);
            }
        }
        self.forget_closed_preexisting(&pids);
        for pid in self.pids.difference(&pids) {
            // Gone already is fine.
            let _ = self.pid_map.remove(pid);
        }
        self.pids_past_bound = 0;
        for pid in &pids {
            if !self.pids.contains(pid) {
                if let Err(e) = self.pid_map.insert(pid, 1, 0) {
                    self.pids_past_bound += 1;
                    log::debug!("TLS: not capturing pid {pid}: {e}");
                } else {
                    log::info!("TLS: capturing pid {pid}");
                    // After the pid is in the kernel's set: anything established later is
                    // seen from its first call.
                    let open = procfs::established(*pid, &self.ports);
                    let mut preexisting = self
                        .preexisting
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    for connection in open {
                        if preexisting.len() < MAX_PREEXISTING {
                            preexisting.insert(connection);
                        }
                    }
                }
            }
        }
        self.pids = pids;
    }

    /// Forgets the connections open before the probes that have closed without a call seen.
    fn forget_closed_preexisting(&self, pids: &BTreeSet<u32>) {
        let mut preexisting = self
            .preexisting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if preexisting.is_empty() {
            return;
        }
        let open: std::collections::HashSet<_> = pids
            .iter()
            .flat_map(|pid| procfs::established(*pid, &self.ports))
            .collect();
        preexisting.retain(|connection| open.contains(connection));
    }

    /// Counters for `stats` (stage `tls`): the kernel's, the reader's, the attachments'.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut out: Vec<(&'static str, u64)> = Vec::new();
        out.push(("libraries", self.attached.len() as u64));
        let count = |p: Placement| self.attached.values().filter(|a| a.placement == p).count();
        out.push((
            "libraries_internal_probes",
            count(Placement::Internal) as u64,
        ));
        out.push((
            "libraries_exported_probes",
            count(Placement::Exported) as u64,
        ));
        out.push(("attach_errors", self.attach_errors));
        out.push(("libraries_past_bound", self.libraries_past_bound));
        out.push(("processes", self.pids.len() as u64));
        out.push(("processes_past_bound", self.pids_past_bound));
        out.push(("processes_without_library", self.without_library));
        match read_named_counters(&self.kernel, &counter::NAMES) {
            Ok(kernel) => out.extend(kernel),
            Err(e) => log::warn!("reading the TLS counters: {e}"),
        }
        let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        out.push(("events_read", shared.events_read));
        out.push(("events_malformed", shared.events_malformed));
        out.extend(shared.streams.snapshot());
        out
    }

    /// Stops the reader after it has drained the ring.
    pub async fn shutdown(self) -> Result<(), CaptureError> {
        // send() only fails when the reader already ended; its result tells why below.
        let _ = self.stop.send(true);
        match self.reader.await {
            Ok(result) => result,
            Err(e) => Err(CaptureError::Io(
                "the TLS reader task failed",
                std::io::Error::other(e),
            )),
        }
    }
}

/// Attaches the three programs to one library file, where [`library::probes`] says.
fn attach(program: &mut CaptureProgram, path: &std::path::Path) -> Result<Attached, CaptureError> {
    let data = std::fs::read(path).map_err(|e| CaptureError::Io("reading a TLS library", e))?;
    let probes = library::probes(&data).map_err(|e| CaptureError::load("TLS library", e))?;
    let spots = [
        (names::TLS_ENTRY, probes.read),
        (names::TLS_RETURN, probes.read),
        (names::TLS_ENTRY, probes.write),
        (names::TLS_RETURN, probes.write),
        (names::TLS_FREE, probes.free),
    ];
    for (name, point) in spots {
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(point.file_offset),
            cookie: Some(point.cookie),
        };
        program
            .uprobe(name)?
            .attach(point, path, UProbeScope::AllProcesses)
            .map_err(|e| CaptureError::load(name, e))?;
    }
    Ok(Attached {
        path: path.display().to_string(),
        placement: probes.placement,
        free_emulated: probes.free_emulated,
    })
}

/// Drains the TLS ring into plaintext segments until `stop`.
async fn read(
    ring: RingBuf<MapData>,
    mut streams: TlsStreams,
    tx: mpsc::Sender<Plaintext>,
    shared: Arc<Mutex<Shared>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), CaptureError> {
    // SAFETY: the RingBuf owns its map descriptor, which stays open until the AsyncFd is dropped.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| CaptureError::Io("registering the TLS ring buffer", e.into()))?;
    let mut timer = tokio::time::interval(DRAIN_INTERVAL);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Vec::new();
    loop {
        let open = tokio::select! {
            ready = ring.readable_mut() => {
                let mut guard = ready.map_err(|e| CaptureError::Io("polling the TLS ring", e))?;
                let open = drain(guard.get_inner_mut(), &mut streams, &tx, &shared, &mut out).await;
                guard.clear_ready();
                open
            }
            _ = timer.tick() => drain(ring.get_mut(), &mut streams, &tx, &shared, &mut out).await,
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    drain(ring.get_mut(), &mut streams, &tx, &shared, &mut out).await;
                    streams.finish(super::event::monotonic_ns(), &mut out);
                    for piece in out.drain(..) {
                        if tx.send(piece).await.is_err() {
                            break;
                        }
                    }
                    return Ok(());
                }
                true
            }
        };
        if !open {
            return Ok(());
        }
    }
}

/// Moves every waiting event through the streams to the channel; false once the receiver is
/// gone.
async fn drain(
    ring: &mut RingBuf<MapData>,
    streams: &mut TlsStreams,
    tx: &mpsc::Sender<Plaintext>,
    shared: &Mutex<Shared>,
    out: &mut Vec<Plaintext>,
) -> bool {
    let (mut read, mut malformed) = (0, 0);
    loop {
        // Copy the event out and release the ring slot before waiting on the channel.
        let record = {
            let Some(item) = ring.next() else { break };
            stream::decode(&item)
        };
        match record {
            Ok(record) => {
                read += 1;
                streams.push(record, out);
            }
            Err(e) => {
                malformed += 1;
                log::error!("dropping a malformed TLS event: {e}");
            }
        }
        for piece in out.drain(..) {
            if tx.send(piece).await.is_err() {
                return false;
            }
        }
    }
    let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
    shared.events_read += read;
    shared.events_malformed += malformed;
    shared.streams = streams.counters.clone();
    true
}

/// Whether this thread may attach uprobes as far as capabilities go (CAP_SYS_ADMIN).
fn has_sys_admin() -> bool {
    caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_ADMIN,
    )
    .unwrap_or(false)
}
