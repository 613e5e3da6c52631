//! Stage 1, capture: the eBPF programs in the kernel and the ring-buffer reader in user space.
//!
//! [`Sensor::start`] loads the programs, attaches them to the chosen interfaces and returns a
//! bounded channel of [`Segment`]s; [`Sensor::shutdown`] takes everything off again.

pub mod attach;
pub mod event;
pub mod interface;
pub mod ports;
pub mod program;
pub mod reader;
pub mod tls;
pub mod topology;

use std::{
    error::Error as StdError,
    io,
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{Arc, atomic::Ordering},
};

use sensor_ebpf::{SkipKey, SkipRange};

use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

pub use attach::AttachMode;
pub use event::{Clock, Segment};
pub use interface::Interface;
pub use ports::ServerPorts;
pub use program::{CaptureOptions, CaptureProgram, DEFAULT_PORTS, KernelCounters};
pub use reader::ReaderCounters;
use topology::Topology;

/// Segments buffered between the ring reader and the next stage.
pub const CHANNEL_CAPACITY: usize = 16 * 1024;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "permission denied while {0}: run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"
    )]
    Permission(String),
    #[error("this kernel ({found}) is too old: {need}")]
    KernelTooOld { found: String, need: &'static str },
    #[error("unknown interface '{name}' (available: {available})")]
    UnknownInterface { name: String, available: String },
    #[error("interface '{name}' cannot be captured: {reason}")]
    UnsupportedInterface { name: String, reason: String },
    #[error("invalid capture configuration: {0}")]
    Config(String),
    #[error(
        "this binary was built without its eBPF programs (AYA_BUILD_SKIP); rebuild after `cargo xtask setup`"
    )]
    NoObject,
    #[error("the eBPF object has no '{0}'")]
    Missing(&'static str),
    #[error("{context}")]
    Load {
        context: String,
        #[source]
        source: BoxError,
    },
    #[error("attaching to {interface} via {how}")]
    Attach {
        interface: String,
        how: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("{0}")]
    Io(&'static str, #[source] io::Error),
}

impl CaptureError {
    /// Wraps a load-time error, recognising a missing privilege anywhere in its chain.
    fn load(context: &str, source: impl Into<BoxError>) -> Self {
        let source = source.into();
        if is_permission_error(source.as_ref()) {
            // The verifier's refusals are EACCES too: its log stays at hand.
            log::debug!("{context}: {source:?}");
            return Self::Permission(context.to_owned());
        }
        Self::Load {
            context: context.to_owned(),
            source,
        }
    }

    fn attach(interface: &str, how: &'static str, source: impl Into<BoxError>) -> Self {
        let source = source.into();
        if is_permission_error(source.as_ref()) {
            return Self::Permission(format!("attaching to {interface} via {how}"));
        }
        Self::Attach {
            interface: interface.to_owned(),
            how,
            source,
        }
    }
}

fn is_permission_error(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && (io.kind() == io::ErrorKind::PermissionDenied
                || io.raw_os_error() == Some(libc::EPERM))
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// Ring buffers (and `bpf_ringbuf_query`) arrived in Linux 5.8.
fn check_kernel() -> Result<(), CaptureError> {
    use aya::util::KernelVersion;
    if let Ok(version) = KernelVersion::current()
        && version < KernelVersion::new(5, 8, 0)
    {
        return Err(CaptureError::KernelTooOld {
            found: format!("{version:?}"),
            need: "BPF ring buffers need Linux 5.8 or newer",
        });
    }
    Ok(())
}

/// The capture programs loaded, and the TLS probes attached, with nothing captured yet: what a
/// daemon does while it is still root. The kernel attaches uprobes only with CAP_SYS_ADMIN,
/// which the daemon gives up before [`Sensor::start_loaded`]. Needs no tokio runtime.
pub struct LoadedCapture {
    program: CaptureProgram,
    /// The TLS probes, when asked for: attached, or why not.
    tls: Option<Result<tls::TlsCapture, CaptureError>>,
}

impl LoadedCapture {
    pub fn load(options: &CaptureOptions) -> Result<Self, CaptureError> {
        check_kernel()?;
        Ok(Self {
            program: CaptureProgram::load(options)?,
            tls: None,
        })
    }

    /// Attaches the TLS probes for the servers on `ports` (see [`tls::TlsCapture::prepare`]);
    /// a failure is kept for [`Sensor::start_tls`] to report, the rest of the capture goes on.
    pub fn attach_tls(&mut self, ports: Vec<u16>, all_namespaces: bool) {
        self.tls = Some(tls::TlsCapture::prepare(
            &mut self.program,
            ports,
            all_namespaces,
        ));
    }
}

/// A running capture: programs attached, reader task draining the ring.
pub struct Sensor {
    program: CaptureProgram,
    attachments: attach::Attachments,
    reader: JoinHandle<Result<(), CaptureError>>,
    stop: watch::Sender<bool>,
    pub counters: Arc<ReaderCounters>,
    pub interfaces: Vec<Interface>,
    pub mode: AttachMode,
    /// Interfaces attached by [`Sensor::rescan`] after the start, and ones that went away.
    pub interfaces_attached: u64,
    pub interfaces_detached: u64,
    /// New interfaces the programs could not be attached to (not tried again while they exist).
    refused: Vec<Interface>,
    /// Bridges and ports as of the last rescan.
    topology: Topology,
    /// TLS plaintext through uprobes, once attached ([`LoadedCapture::attach_tls`]).
    tls: Option<tls::TlsCapture>,
    /// Why the TLS probes could not be attached, until [`Sensor::start_tls`] says it.
    tls_error: Option<CaptureError>,
}

impl Sensor {
    /// Loads, attaches and starts reading. Must run inside a tokio runtime; the interfaces are
    /// looked up in the calling thread's network namespace. `state_dir` keeps what must survive
    /// a crash (the clsact qdiscs this sensor added).
    pub fn start(
        options: &CaptureOptions,
        interfaces: Vec<Interface>,
        mode: AttachMode,
        state_dir: Option<&Path>,
    ) -> Result<(Self, mpsc::Receiver<Segment>), CaptureError> {
        Self::start_loaded(LoadedCapture::load(options)?, interfaces, mode, state_dir)
    }

    /// [`Sensor::start`] with the programs loaded already (and the TLS probes attached, if
    /// asked for, but not started: see [`Sensor::start_tls`]).
    pub fn start_loaded(
        loaded: LoadedCapture,
        interfaces: Vec<Interface>,
        mode: AttachMode,
        state_dir: Option<&Path>,
    ) -> Result<(Self, mpsc::Receiver<Segment>), CaptureError> {
        let mode = mode.resolve();
        let LoadedCapture { mut program, tls } = loaded;
        let (tls, tls_error) = match tls {
            None => (None, None),
            Some(Ok(tls)) => (Some(tls), None),
            Some(Err(e)) => (None, Some(e)),
        };
        let ring = program.take_ring()?;
        let ledger = attach::QdiscLedger::new(state_dir);
        let attachments = attach::attach(&mut program, &interfaces, mode, ledger)?;
        program.enable()?;
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (stop, stop_rx) = watch::channel(false);
        let counters = Arc::new(ReaderCounters::default());
        let reader = tokio::spawn(reader::run(ring, tx, Arc::clone(&counters), stop_rx));
        Ok((
            Self {
                program,
                attachments,
                reader,
                stop,
                counters,
                interfaces,
                mode,
                interfaces_attached: 0,
                interfaces_detached: 0,
                refused: Vec::new(),
                topology: Topology::read_or_default(),
                tls,
                tls_error,
            },
            rx,
        ))
    }

    /// Follows the interfaces that are up: attaches to new ones, forgets vanished ones, and
    /// recomputes which hooks repeat another's packets (a new container's veth joins a bridge).
    /// For "all interfaces"; a failure on one new interface is logged once and that interface
    /// left alone while it exists.
    pub fn rescan(&mut self) -> Result<(), CaptureError> {
        let up = Interface::up(false);
        let gone: Vec<Interface> = self
            .interfaces
            .iter()
            .filter(|old| {
                !up.iter()
                    .any(|i| i.ifindex == old.ifindex && i.name == old.name)
            })
            .cloned()
            .collect();
        let new: Vec<Interface> = up
            .iter()
            .filter(|i| {
                !self
                    .interfaces
                    .iter()
                    .chain(&self.refused)
                    .any(|old| old.ifindex == i.ifindex && old.name == i.name)
            })
            .cloned()
            .collect();
        // A refused interface that went away may come back as a new one.
        self.refused.retain(|r| {
            up.iter()
                .any(|i| i.ifindex == r.ifindex && i.name == r.name)
        });
        // Bridge membership changes on its own too (a veth that came up, then joined a bridge).
        let topology = Topology::read_or_default();
        if gone.is_empty() && new.is_empty() {
            if topology != self.topology {
                attach::set_interface_bits(
                    &mut self.program,
                    &self.interfaces,
                    self.mode,
                    &topology,
                )?;
                self.topology = topology;
            }
            return Ok(());
        }
        for interface in &gone {
            log::info!("interface {} went away", interface.name);
            self.attachments
                .forget(&mut self.program, interface.ifindex);
            self.interfaces.retain(|i| i.ifindex != interface.ifindex);
            self.interfaces_detached += 1;
        }
        let mut candidates = self.interfaces.clone();
        candidates.extend(new.iter().cloned());
        // Bits first: a new port's copies must already be skipped where the bridge sees them.
        attach::set_interface_bits(&mut self.program, &candidates, self.mode, &topology)?;
        for interface in new {
            match self
                .attachments
                .attach_one(&mut self.program, &interface, self.mode)
            {
                Ok(()) => {
                    self.interfaces.push(interface);
                    self.interfaces_attached += 1;
                }
                Err(e) => {
                    log::warn!("not capturing on new interface {}: {e}", interface.name);
                    self.refused.push(interface);
                }
            }
        }
        attach::set_interface_bits(&mut self.program, &self.interfaces, self.mode, &topology)?;
        self.topology = topology;
        Ok(())
    }

    /// Starts the TLS capture attached before (its plaintext comes out of the receiver), once
    /// the TLS ports are in the kernel's port map; `None` when none was asked for, the attach
    /// error when it failed.
    pub fn start_tls(&mut self) -> Result<Option<mpsc::Receiver<tls::Plaintext>>, CaptureError> {
        if let Some(e) = self.tls_error.take() {
            return Err(e);
        }
        match &mut self.tls {
            Some(tls) => tls.start_reading().map(Some),
            None => Ok(None),
        }
    }

    /// Follows the TLS servers (new processes, new library files); nothing without TLS capture.
    pub fn rescan_tls(&mut self) {
        if let Some(tls) = &mut self.tls {
            tls.rescan(&mut self.program);
        }
    }

    /// The TLS capture's counters (stage `tls` of `stats`), if it runs.
    pub fn tls_counters(&self) -> Option<Vec<(&'static str, u64)>> {
        self.tls.as_ref().map(tls::TlsCapture::counters)
    }

    pub fn kernel_counters(&self) -> Result<KernelCounters, CaptureError> {
        self.program.counters()
    }

    /// Asks the kernel to send only the lengths of the segments from `src` to `dst` that lie
    /// wholly in the sequence range `[from_seq, until_seq)` (`sensor_ebpf::skip`): the decoder
    /// only counts those body bytes. An empty range withdraws the direction's range. A range
    /// the map refuses costs only the saving: it is counted (`skip_hints_refused`) and the body
    /// crosses the ring whole.
    pub fn skip(&mut self, src: SocketAddr, dst: SocketAddr, from_seq: u32, until_seq: u32) {
        let Some(key) = skip_key(src, dst) else {
            return;
        };
        let range = SkipRange {
            from_seq,
            until_seq,
        };
        if let Err(e) = self.program.skip(key, range) {
            self.counters
                .skip_hints_refused
                .fetch_add(1, Ordering::Relaxed);
            log::debug!("skip range for {src} > {dst}: {e}");
        }
    }

    /// Watches, mutes or stops watching a port while capturing (`sensor_ebpf::port`).
    pub fn set_port(&mut self, port: u16, state: u8) -> Result<(), CaptureError> {
        self.program.set_port(port, state)
    }

    /// Detaches everything, lets the reader drain what the ring still holds, and waits for it.
    pub async fn shutdown(self) -> Result<(), CaptureError> {
        let Self {
            mut program,
            attachments,
            reader,
            stop,
            tls,
            ..
        } = self;
        attachments.detach(&mut program).await;
        if let Some(tls) = tls
            && let Err(e) = tls.shutdown().await
        {
            log::error!("{e}");
        }
        // send() only fails when the reader already ended; its result tells why below.
        let _ = stop.send(true);
        match reader.await {
            Ok(result) => result,
            Err(e) => Err(CaptureError::Io(
                "the ring reader task failed",
                io::Error::other(e),
            )),
        }
    }
}

/// The [`SkipKey`] of the segments from `src` to `dst`, addresses as the kernel writes them
/// (IPv4 in the first four bytes); none for a mixed pair, which no segment carries.
fn skip_key(src: SocketAddr, dst: SocketAddr) -> Option<SkipKey> {
    let mut key = SkipKey {
        sport: src.port(),
        dport: dst.port(),
        ..SkipKey::default()
    };
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            key.family = 4;
            key.saddr[..4].copy_from_slice(&s.octets());
            key.daddr[..4].copy_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            key.family = 6;
            key.saddr = s.octets();
            key.daddr = d.octets();
        }
        _ => return None,
    }
    Some(key)
}
