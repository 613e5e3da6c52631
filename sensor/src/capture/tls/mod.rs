//! TLS plaintext through uprobes on the TLS library (OpenSSL 3, dynamically linked).
//!
//! [`TlsCapture::prepare`] loads the uprobe programs and attaches them: to the system's
//! OpenSSL and to every library the servers on the TLS ports map. It runs while the daemon is
//! still root, because the kernel attaches uprobes only with CAP_SYS_ADMIN, which the daemon
//! then gives up. [`TlsCapture::start_reading`] starts the programs and the reader. Every
//! [`TlsCapture::rescan`] looks for the processes listening on the TLS ports ([`procfs`]),
//! attaches the probes once per distinct library file they map ([`library`] says where) and
//! tells the kernel which processes to capture.
//!
//! The kernel captures a connection of a listed process, and, where it knows the socket layout
//! (BTF), any process's connection whose socket is a server's on a TLS port: a daemon that
//! dropped root can no longer list other users' processes (their fds), but servers started
//! after it, on a library it probed at start, are still read. The reader turns the events into
//! ordered plaintext per connection ([`stream`]), which `TcpSegment::from_tls` hands to the
//! same reassembly, decoder and sessions as the wire's segments.

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
    maps::{MapData, RingBuf},
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
    program::{CaptureProgram, TlsMaps, read_named_counters},
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

/// The task reading the TLS ring, and how to stop it.
struct Reader {
    task: JoinHandle<Result<(), CaptureError>>,
    stop: watch::Sender<bool>,
}

/// A TLS capture: probes, captured processes, reader.
pub struct TlsCapture {
    ports: Vec<u16>,
    /// Only servers in this network namespace (None: every namespace, containers included).
    netns: Option<u64>,
    attached: BTreeMap<(u64, u64), Attached>,
    /// Library files that could not be probed (not tried again).
    refused: BTreeSet<(u64, u64)>,
    pids: BTreeSet<u32>,
    maps: TlsMaps,
    /// Connections open when their server's probes came: handed to the streams.
    preexisting: Preexisting,
    /// The processes whose open connections are in `preexisting`: their tables are read again
    /// to forget the ones that closed, whether or not the process can still be listed.
    preexisting_from: BTreeSet<u32>,
    shared: Arc<Mutex<Shared>>,
    /// Processes on TLS ports without a TLS library this sensor can probe.
    without_library: u64,
    attach_errors: u64,
    libraries_past_bound: u64,
    pids_past_bound: u64,
    /// The ring until the reader takes it, then the reader.
    ring: Option<RingBuf<MapData>>,
    reader: Option<Reader>,
}

impl TlsCapture {
    /// Loads the programs and attaches them to the system's OpenSSL and to the libraries of the
    /// servers on `ports` (in the calling thread's network namespace only, unless
    /// `all_namespaces`); nothing is captured before [`Self::start_reading`]. Needs
    /// CAP_SYS_ADMIN to attach (root, before the daemon drops it).
    pub fn prepare(
        program: &mut CaptureProgram,
        ports: Vec<u16>,
        all_namespaces: bool,
    ) -> Result<Self, CaptureError> {
        let netns = match all_namespaces {
            true => None,
            false => Some(procfs::own_namespace().ok_or_else(|| {
                CaptureError::Io(
                    "reading this thread's network namespace",
                    std::io::Error::other("/proc/thread-self/ns/net"),
                )
            })?),
        };
        let (maps, ring) = program.load_tls()?;
        let mut capture = Self {
            ports,
            netns,
            attached: BTreeMap::new(),
            refused: BTreeSet::new(),
            pids: BTreeSet::new(),
            maps,
            preexisting: Preexisting::default(),
            preexisting_from: BTreeSet::new(),
            shared: Arc::new(Mutex::new(Shared::default())),
            without_library: 0,
            attach_errors: 0,
            libraries_past_bound: 0,
            pids_past_bound: 0,
            ring: Some(ring),
            reader: None,
        };
        // A server that starts after the daemon gave up root (nginx after apisessions at boot)
        // is read only if its library was probed before: the system's OpenSSL is, always.
        for (path, id) in library::system_libraries() {
            capture.probe_library(program, id, &path, None);
        }
        capture.rescan(program);
        Ok(capture)
    }

    /// Starts the programs and the reader of their ring (once); the plaintext comes out of the
    /// receiver. Must run inside a tokio runtime.
    pub fn start_reading(&mut self) -> Result<mpsc::Receiver<Plaintext>, CaptureError> {
        let ring = self.ring.take().ok_or_else(|| {
            CaptureError::Io(
                "starting the TLS reader",
                std::io::Error::other("it was started before"),
            )
        })?;
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (stop, stop_rx) = watch::channel(false);
        let streams = TlsStreams::new(Box::new(procfs::connection), Arc::clone(&self.preexisting));
        let task = tokio::spawn(read(ring, streams, tx, Arc::clone(&self.shared), stop_rx));
        self.reader = Some(Reader { task, stop });
        self.maps.enable(self.netns)?;
        if self.maps.port_filter() {
            log::info!(
                "TLS: the kernel captures every connection to a server on ports {:?}{}",
                self.ports,
                if self.netns.is_some() {
                    " in this network namespace"
                } else {
                    ""
                }
            );
        }
        Ok(rx)
    }

    /// Follows the servers on the TLS ports: probes new library files, captures new processes,
    /// forgets processes that went away.
    pub fn rescan(&mut self, program: &mut CaptureProgram) {
        let (servers, without_library) = procfs::tls_servers(&self.ports, self.netns);
        self.without_library = without_library;
        let mut pids = BTreeSet::new();
        for server in servers {
            let id = server.library_id;
            self.probe_library(program, id, &server.library, Some(server.pid));
            if self.attached.contains_key(&id) {
                pids.insert(server.pid);
            }
        }
        self.forget_closed_preexisting();
        for pid in self.pids.difference(&pids) {
            // Gone already is fine.
            let _ = self.maps.pids.remove(pid);
        }
        self.pids_past_bound = 0;
        for pid in &pids {
            if !self.pids.contains(pid) {
                if let Err(e) = self.maps.pids.insert(pid, 1, 0) {
                    self.pids_past_bound += 1;
                    log::debug!("TLS: not capturing pid {pid}: {e}");
                } else {
                    log::info!("TLS: capturing pid {pid}");
                    // After the pid is in the kernel's set: anything established later is
                    // seen from its first call.
                    let open = procfs::established(*pid, &self.ports);
                    if !open.is_empty() {
                        self.preexisting_from.insert(*pid);
                    }
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

    /// Attaches the probes to one library file (once; a refusal is not tried again), on behalf
    /// of the server `pid` if one uses it.
    fn probe_library(
        &mut self,
        program: &mut CaptureProgram,
        id: (u64, u64),
        library: &std::path::Path,
        pid: Option<u32>,
    ) {
        if self.attached.contains_key(&id) || self.refused.contains(&id) {
            return;
        }
        if self.attached.len() >= MAX_LIBRARIES {
            log::warn!("TLS: more than {MAX_LIBRARIES} libraries, not probing more");
            self.refused.insert(id);
            self.libraries_past_bound += 1;
            return;
        }
        match attach(program, library) {
            Ok(attached) => {
                log::info!(
                    "TLS: probes on {}{}: {} read/write functions, SSL_free {}",
                    attached.path,
                    pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
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
                // CAP_PERFMON is not enough: the kernel's uprobe PMU wants CAP_SYS_ADMIN,
                // which a daemon that dropped root does not keep.
                log::warn!(
                    "TLS: not probing {}: the kernel attaches uprobes only with CAP_SYS_ADMIN, \
                     which the daemon gave up after start (it runs without root: `run --user`, \
                     the packaged service). Libraries in use at start are probed; this one \
                     will be after a restart, or run with `--user root`. The rest is captured.",
                    library.display()
                );
                self.attach_errors += 1;
                self.refused.insert(id);
            }
            Err(e) => {
                let cause = std::error::Error::source(&e)
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                log::warn!("TLS: not probing {}: {e}{cause}", library.display());
                self.attach_errors += 1;
                self.refused.insert(id);
            }
        }
    }

    /// Forgets the connections open before the probes that have closed without a call seen.
    /// A process's own table (`/proc/PID/net/tcp`) is readable without privileges, so this goes
    /// on after the daemon dropped root, when the process itself can no longer be listed.
    fn forget_closed_preexisting(&mut self) {
        let mut preexisting = self
            .preexisting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if preexisting.is_empty() {
            self.preexisting_from.clear();
            return;
        }
        let open: std::collections::HashSet<_> = self
            .preexisting_from
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
        out.push(("kernel_port_filter", u64::from(self.maps.port_filter())));
        match read_named_counters(&self.maps.counters, &counter::NAMES) {
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
        let Some(Reader { task, stop }) = self.reader else {
            return Ok(());
        };
        // send() only fails when the reader already ended; its result tells why below.
        let _ = stop.send(true);
        match task.await {
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
