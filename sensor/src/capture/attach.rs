//! Attaching the capture programs to interfaces, and taking them off again.
//!
//! Three ways in: TCX links (Linux >= 6.6: owned by our file descriptors, so even a crash leaves
//! nothing behind), clsact filters through netlink (older kernels: filters outlive the process,
//! so stale ones from a crashed run are removed before attaching), and AF_PACKET sockets with a
//! socket filter (the fallback where TC is unavailable; also gone with the process).

use std::{
    fs, io,
    os::fd::{FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    str::FromStr,
};

use aya::{
    programs::{
        SchedClassifier, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions},
    },
    util::KernelVersion,
};
use sensor_ebpf::names;

use super::{
    BoxError, CaptureError, interface::Interface, program::CaptureProgram, topology::Topology,
};

/// How the programs are attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// TCX where the kernel has it (>= 6.6), clsact otherwise.
    #[default]
    Auto,
    Tcx,
    Clsact,
    /// AF_PACKET sockets with a socket filter.
    Socket,
}

impl FromStr for AttachMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "tcx" => Ok(Self::Tcx),
            "clsact" => Ok(Self::Clsact),
            "socket" => Ok(Self::Socket),
            other => Err(format!(
                "unknown attach mode '{other}' (auto, tcx, clsact, socket)"
            )),
        }
    }
}

impl AttachMode {
    /// Resolves `Auto` against the running kernel.
    pub fn resolve(self) -> Self {
        match self {
            Self::Auto
                if KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0)) =>
            {
                Self::Tcx
            }
            Self::Auto => Self::Clsact,
            other => other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Tcx => "tcx",
            Self::Clsact => "clsact",
            Self::Socket => "socket",
        }
    }
}

/// What was attached, so it can be taken off in order at shutdown (or when its interface goes).
#[derive(Debug)]
pub struct Attachments {
    /// (ifindex, program name, link)
    links: Vec<(u32, &'static str, SchedClassifierLinkId)>,
    sockets: Vec<(u32, OwnedFd)>,
    /// Interfaces (ifindex, name) where we added the clsact qdisc and so must remove it.
    created_qdiscs: Vec<(u32, String)>,
    ledger: QdiscLedger,
    /// Interfaces whose clsact qdisc a crashed earlier run of ours left behind.
    ours_before: Vec<String>,
}

/// Directions to capture on an interface: on loopback every segment passes egress and then
/// ingress, so one side is enough (ingress: the copy the receiving socket sees).
fn directions(interface: &Interface) -> &'static [(&'static str, TcAttachType)] {
    if interface.is_loopback {
        &[(names::TC_INGRESS, TcAttachType::Ingress)]
    } else {
        &[
            (names::TC_INGRESS, TcAttachType::Ingress),
            (names::TC_EGRESS, TcAttachType::Egress),
        ]
    }
}

/// Interfaces on which a run of ours added the clsact qdisc, remembered in a file so that the run
/// after a crash still knows the qdisc is ours to remove (one interface name per line).
#[derive(Debug, Clone)]
pub struct QdiscLedger {
    path: Option<PathBuf>,
}

impl QdiscLedger {
    pub const FILE: &str = "clsact-qdiscs";

    /// A ledger in `state_dir`, or none (nothing remembered across runs).
    pub fn new(state_dir: Option<&Path>) -> Self {
        Self {
            path: state_dir.map(|dir| dir.join(Self::FILE)),
        }
    }

    fn load(&self) -> Vec<String> {
        let Some(path) = &self.path else {
            return Vec::new();
        };
        fs::read_to_string(path)
            .map(|text| text.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    fn save(&self, interfaces: &[(u32, String)]) {
        let Some(path) = &self.path else { return };
        let result = if interfaces.is_empty() {
            match fs::remove_file(path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        } else {
            let text: String = interfaces
                .iter()
                .map(|(_, name)| format!("{name}\n"))
                .collect();
            fs::write(path, text)
        };
        if let Err(e) = result {
            log::warn!("could not update {}: {e}", path.display());
        }
    }
}

/// Attaches the programs to every interface. `mode` must be resolved (not `Auto`).
pub fn attach(
    program: &mut CaptureProgram,
    interfaces: &[Interface],
    mode: AttachMode,
    ledger: QdiscLedger,
) -> Result<Attachments, CaptureError> {
    let mut attachments = Attachments {
        links: Vec::new(),
        sockets: Vec::new(),
        created_qdiscs: Vec::new(),
        ours_before: ledger.load(),
        ledger,
    };
    set_interface_bits(program, interfaces, mode, &Topology::read_or_default())?;
    for interface in interfaces {
        attachments.attach_one(program, interface, mode)?;
    }
    Ok(attachments)
}

/// Writes every interface's `IFACES` bits: framing, and which hooks only repeat another's
/// packets (bridges and their ports, see [`super::topology`]).
pub fn set_interface_bits(
    program: &mut CaptureProgram,
    interfaces: &[Interface],
    mode: AttachMode,
    topology: &Topology,
) -> Result<(), CaptureError> {
    let captured: Vec<u32> = interfaces.iter().map(|i| i.ifindex).collect();
    for interface in interfaces {
        program.set_interface(
            interface.ifindex,
            topology.map_bits(interface, &captured, mode),
        )?;
    }
    Ok(())
}

impl Attachments {
    /// Attaches the programs to one interface (its `IFACES` bits must be set already).
    pub fn attach_one(
        &mut self,
        program: &mut CaptureProgram,
        interface: &Interface,
        mode: AttachMode,
    ) -> Result<(), CaptureError> {
        let index = interface.ifindex;
        match mode {
            AttachMode::Auto | AttachMode::Tcx => {
                for &(name, direction) in directions(interface) {
                    let classifier = program.classifier(name)?;
                    let id = classifier
                        .attach_with_options(
                            &interface.name,
                            direction,
                            TcAttachOptions::TcxOrder(Default::default()),
                        )
                        .map_err(|e| CaptureError::attach(&interface.name, "tcx", e))?;
                    self.links.push((index, name, id));
                }
            }
            AttachMode::Clsact => {
                match tc::qdisc_add_clsact(&interface.name) {
                    Ok(()) => self.created_qdiscs.push((index, interface.name.clone())),
                    Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {
                        // Someone else's qdisc stays; one that a crashed run of ours added does not.
                        if self.ours_before.contains(&interface.name) {
                            self.created_qdiscs.push((index, interface.name.clone()));
                        }
                    }
                    Err(e) => return Err(CaptureError::attach(&interface.name, "clsact", e)),
                }
                for &(name, direction) in directions(interface) {
                    remove_stale_filters(&interface.name, direction, name);
                    let classifier: &mut SchedClassifier = program.classifier(name)?;
                    let id = classifier
                        .attach_with_options(
                            &interface.name,
                            direction,
                            TcAttachOptions::Netlink(NlOptions::default()),
                        )
                        .map_err(|e| CaptureError::attach(&interface.name, "clsact", e))?;
                    self.links.push((index, name, id));
                }
            }
            AttachMode::Socket => {
                let socket = packet_socket(index)
                    .map_err(|e| CaptureError::attach(&interface.name, "AF_PACKET socket", e))?;
                program
                    .socket_filter()?
                    .attach(&socket)
                    .map_err(|e| CaptureError::attach(&interface.name, "socket filter", e))?;
                self.sockets.push((index, socket));
            }
        }
        self.ledger.save(&self.created_qdiscs);
        log::info!("capturing on {} ({})", interface.name, mode.as_str());
        Ok(())
    }

    /// Takes the programs off an interface that went away (deleted, or down). A deleted
    /// device took its links and filters with it; what is left is our bookkeeping (and the link
    /// objects, released here). A clsact qdisc of ours on a device that still exists stays on
    /// the list, so shutdown removes it.
    pub fn forget(&mut self, program: &mut CaptureProgram, ifindex: u32) {
        let (gone, kept): (Vec<_>, Vec<_>) = self
            .links
            .drain(..)
            .partition(|(index, _, _)| *index == ifindex);
        self.links = kept;
        for (_, name, id) in gone {
            if let Ok(classifier) = program.classifier(name)
                && let Err(e) = classifier.detach(id)
            {
                log::debug!("detaching {name} from a vanished interface: {e}");
            }
        }
        self.sockets.retain(|(index, _)| *index != ifindex);
        let before = self.created_qdiscs.len();
        self.created_qdiscs.retain(|(index, name)| {
            *index != ifindex || Interface::by_name(name).is_ok_and(|i| i.ifindex == ifindex)
        });
        if self.created_qdiscs.len() != before {
            self.ledger.save(&self.created_qdiscs);
        }
        program.remove_interface(ifindex);
    }
}

/// Filters of ours left by a run that crashed (clsact filters are not tied to a process).
fn remove_stale_filters(interface: &str, direction: TcAttachType, name: &str) {
    match tc::qdisc_detach_program(interface, direction, name) {
        Ok(()) => {
            log::warn!("removed a stale {name} filter from {interface} (earlier run crashed?)")
        }
        Err(tc::TcError::IoError(e)) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("could not look for stale filters on {interface}: {e}"),
    }
}

/// An AF_PACKET socket bound to one interface, receiving every protocol. The attached filter
/// returns 0 for every packet, so nothing is queued on it: it only runs the program.
fn packet_socket(ifindex: u32) -> io::Result<OwnedFd> {
    let protocol = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(protocol),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid starting value.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = protocol;
    address.sll_ifindex = ifindex as i32;
    // SAFETY: `address` is a valid sockaddr_ll and the length matches it.
    let ret = unsafe {
        libc::bind(
            fd,
            (&raw const address).cast::<libc::sockaddr>(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

impl Attachments {
    /// Takes everything off: links and filters first, then the sockets, then the clsact qdiscs
    /// this run created. Errors are logged, not returned: detaching continues past them.
    pub async fn detach(mut self, program: &mut CaptureProgram) {
        for (_, name, id) in self.links.drain(..) {
            match program.classifier(name) {
                Ok(classifier) => {
                    if let Err(e) = classifier.detach(id) {
                        log::error!("detaching {name}: {e}");
                    }
                }
                Err(e) => log::error!("detaching {name}: {e}"),
            }
        }
        self.sockets.clear();
        let mut kept = Vec::new();
        for (ifindex, name) in self.created_qdiscs.drain(..) {
            if let Err(e) = delete_clsact(ifindex).await {
                log::error!("removing the clsact qdisc from {name}: {e}");
                kept.push((ifindex, name));
            }
        }
        self.ledger.save(&kept);
    }
}

async fn delete_clsact(ifindex: u32) -> Result<(), BoxError> {
    use rtnetlink::packet_route::tc::{TcAttribute, TcHandle};
    let (connection, handle, _) = rtnetlink::new_connection()?;
    let task = tokio::spawn(connection);
    let mut request = handle.qdisc().del(ifindex as i32);
    let message = request.message_mut();
    message.header.parent = TcHandle::CLSACT;
    message.header.handle = TcHandle::from(0xffff_0000);
    message.attributes.push(TcAttribute::Kind("clsact".into()));
    let result = request.execute().await;
    task.abort();
    Ok(result?)
}
