//! The embedded eBPF object: loading it into the kernel, configuring its maps, reading its counters.

use std::collections::BTreeMap;

use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{SchedClassifier, SocketFilter, UProbe},
};
use sensor_ebpf::{
    CONFIG_ALL_PORTS, CONFIG_ENABLED, CaptureConfig, DEFAULT_RING_BYTES, DEFAULT_SNAPLEN,
    DEFAULT_WAKEUP_BYTES, MAX_SNAPLEN, SkipKey, SkipRange, counter, names,
};

use super::CaptureError;

/// The object built from `sensor-ebpf` by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor-ebpf"));

/// What the kernel program captures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureOptions {
    /// TCP ports to watch (either end). Ignored when `all_ports` is set.
    pub ports: Vec<u16>,
    pub all_ports: bool,
    /// Payload bytes captured per segment at most.
    pub snaplen: u32,
    /// Ring-buffer size in bytes: a power of two, at least one page.
    pub ring_bytes: u32,
    /// Ring fill level that forces a reader wakeup (at most a quarter of the ring).
    pub wakeup_bytes: u32,
    /// TLS plaintext through uprobes will be started ([`CaptureProgram::load_tls`]); without it
    /// the TLS ring is one page.
    pub tls: bool,
}

/// Ports captured when none are configured (the design brief's defaults).
pub const DEFAULT_PORTS: [u16; 5] = [80, 8000, 8080, 3000, 5000];

impl Default for CaptureOptions {
    fn default() -> Self {
        Self {
            ports: DEFAULT_PORTS.to_vec(),
            all_ports: false,
            snaplen: DEFAULT_SNAPLEN,
            ring_bytes: DEFAULT_RING_BYTES,
            wakeup_bytes: DEFAULT_WAKEUP_BYTES,
            tls: false,
        }
    }
}

impl CaptureOptions {
    fn validate(&self) -> Result<(), CaptureError> {
        let page = page_size();
        if !self.ring_bytes.is_power_of_two() || self.ring_bytes < page {
            return Err(CaptureError::Config(format!(
                "ring size {} bytes must be a power of two of at least one page ({page} bytes)",
                self.ring_bytes
            )));
        }
        if self.snaplen > MAX_SNAPLEN {
            return Err(CaptureError::Config(format!(
                "snaplen {} exceeds the maximum of {MAX_SNAPLEN} bytes per segment",
                self.snaplen
            )));
        }
        // No ports is fine: the daemon may add them while capturing (listeners found later).
        Ok(())
    }
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size).unwrap_or(4096)
}

/// Kernel-side counters summed over CPUs, by the names in [`counter::NAMES`].
pub type KernelCounters = BTreeMap<&'static str, u64>;

/// The loaded (not yet attached) capture programs and their maps.
pub struct CaptureProgram {
    ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    config: CaptureConfig,
}

impl CaptureProgram {
    /// Loads the programs into the kernel and writes the options into their maps. Capture stays
    /// disabled until [`CaptureProgram::enable`], so no half-configured program emits events.
    pub fn load(options: &CaptureOptions) -> Result<Self, CaptureError> {
        options.validate()?;
        if OBJECT.is_empty() {
            return Err(CaptureError::NoObject);
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::EVENTS, options.ring_bytes)
            .map_max_entries(
                names::TLS_EVENTS,
                if options.tls {
                    sensor_ebpf::tls::DEFAULT_RING_BYTES
                } else {
                    page_size()
                },
            )
            .load(OBJECT)
            .map_err(|e| CaptureError::load("loading the eBPF object", e))?;
        for name in [names::TC_INGRESS, names::TC_EGRESS] {
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(CaptureError::Missing(name))?
                .try_into()
                .map_err(|e| CaptureError::load(name, e))?;
            program.load().map_err(|e| CaptureError::load(name, e))?;
        }
        let socket: &mut SocketFilter = ebpf
            .program_mut(names::SOCKET)
            .ok_or(CaptureError::Missing(names::SOCKET))?
            .try_into()
            .map_err(|e| CaptureError::load(names::SOCKET, e))?;
        socket
            .load()
            .map_err(|e| CaptureError::load(names::SOCKET, e))?;

        let counters = PerCpuArray::try_from(
            ebpf.take_map(names::COUNTERS)
                .ok_or(CaptureError::Missing(names::COUNTERS))?,
        )
        .map_err(|e| CaptureError::load(names::COUNTERS, e))?;
        let config = CaptureConfig {
            snaplen: options.snaplen,
            flags: if options.all_ports {
                CONFIG_ALL_PORTS
            } else {
                0
            },
            // A threshold the ring cannot reach would leave a small ring to the reader's timer
            // alone (found with a 256 KiB ring: 87 % of a burst lost). A quarter of the ring
            // leaves room for the bytes that arrive while the reader wakes.
            wakeup_bytes: options.wakeup_bytes.min(options.ring_bytes / 4),
            _reserved: 0,
        };
        let mut program = Self {
            ebpf,
            counters,
            config,
        };
        program.write_config()?;
        for &port in &options.ports {
            program.set_port(port, sensor_ebpf::port::WATCHED)?;
        }
        Ok(program)
    }

    fn write_config(&mut self) -> Result<(), CaptureError> {
        let mut map: Array<_, CaptureConfig> = Array::try_from(
            self.ebpf
                .map_mut(names::CONFIG)
                .ok_or(CaptureError::Missing(names::CONFIG))?,
        )
        .map_err(|e| CaptureError::load(names::CONFIG, e))?;
        map.set(0, self.config, 0)
            .map_err(|e| CaptureError::load(names::CONFIG, e))
    }

    /// Sets what the programs do with segments of `port` (`sensor_ebpf::port`: off, watched,
    /// muted). Takes effect for the next packet.
    pub fn set_port(&mut self, port: u16, state: u8) -> Result<(), CaptureError> {
        let mut ports: Array<_, u8> = Array::try_from(
            self.ebpf
                .map_mut(names::PORTS)
                .ok_or(CaptureError::Missing(names::PORTS))?,
        )
        .map_err(|e| CaptureError::load(names::PORTS, e))?;
        ports
            .set(u32::from(port), state, 0)
            .map_err(|e| CaptureError::load(names::PORTS, e))
    }

    /// Asks the programs to send only headers for the segments of one wire direction that lie
    /// wholly in `range` (`sensor_ebpf::skip`); an empty range removes the direction's range.
    /// Takes effect for the next packet.
    pub fn skip(&mut self, key: SkipKey, range: SkipRange) -> Result<(), CaptureError> {
        let mut map = self.hash_map::<SkipKey, SkipRange>(names::SKIP)?;
        if range.from_seq == range.until_seq {
            // Gone already (the kernel removes a range once the stream passes its end) is fine.
            let _ = map.remove(&key);
            return Ok(());
        }
        map.insert(key, range, 0)
            .map_err(|e| CaptureError::load(names::SKIP, e))
    }

    /// Tells the programs how to parse packets of one interface (`sensor_ebpf::iface` bits).
    pub fn set_interface(&mut self, ifindex: u32, bits: u32) -> Result<(), CaptureError> {
        let mut map = self.hash_map::<u32, u32>(names::IFACES)?;
        map.insert(ifindex, bits, 0)
            .map_err(|e| CaptureError::load(names::IFACES, e))
    }

    /// The hash map `name` of the object (an LRU one too), to read and write.
    fn hash_map<K: Pod, V: Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<HashMap<&mut MapData, K, V>, CaptureError> {
        let map = self.ebpf.map_mut(name).ok_or(CaptureError::Missing(name))?;
        HashMap::try_from(map).map_err(|e| CaptureError::load(name, e))
    }

    /// Drops an interface's settings (it went away; its ifindex may come back as another).
    pub fn remove_interface(&mut self, ifindex: u32) {
        if let Ok(mut ifaces) = self.hash_map::<u32, u32>(names::IFACES) {
            // Absent already is fine: nothing to forget.
            let _ = ifaces.remove(&ifindex);
        }
    }

    /// Starts capturing: from now on the attached programs emit events.
    pub fn enable(&mut self) -> Result<(), CaptureError> {
        self.config.flags |= CONFIG_ENABLED;
        self.write_config()
    }

    /// Hands out the ring buffer (once) to a reader.
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>, CaptureError> {
        let map = self
            .ebpf
            .take_map(names::EVENTS)
            .ok_or(CaptureError::Missing(names::EVENTS))?;
        RingBuf::try_from(map).map_err(|e| CaptureError::load(names::EVENTS, e))
    }

    pub fn classifier(&mut self, name: &'static str) -> Result<&mut SchedClassifier, CaptureError> {
        self.ebpf
            .program_mut(name)
            .ok_or(CaptureError::Missing(name))?
            .try_into()
            .map_err(|e| CaptureError::load(name, e))
    }

    pub fn socket_filter(&self) -> Result<&SocketFilter, CaptureError> {
        self.ebpf
            .program(names::SOCKET)
            .ok_or(CaptureError::Missing(names::SOCKET))?
            .try_into()
            .map_err(|e| CaptureError::load(names::SOCKET, e))
    }

    /// Loads the TLS uprobe programs and hands out their maps (once): the counters, the
    /// captured processes, the configuration, and apart the ring. The socket-fd layout is
    /// OpenSSL 3.0's (`tls::TlsConfig`); a library with another one yields events without an fd
    /// (counted, not decoded). The programs stay idle until [`TlsMaps::enable`].
    pub fn load_tls(&mut self) -> Result<(TlsMaps, RingBuf<MapData>), CaptureError> {
        for name in [names::TLS_ENTRY, names::TLS_RETURN, names::TLS_FREE] {
            self.uprobe(name)?
                .load()
                .map_err(|e| CaptureError::load(name, e))?;
        }
        let mut settings = sensor_ebpf::tls::TlsConfig {
            rbio_offset: 0x10,
            bio_method_offset: 0x08,
            bio_num_offset: 0x38,
            ..Default::default()
        };
        match super::tls::btf::kernel_socket_offsets() {
            Ok(kernel) => {
                settings.kernel = kernel;
                settings.flags |= sensor_ebpf::tls::KERNEL_SOCKETS;
            }
            Err(e) => log::warn!(
                "TLS: the kernel's struct layout is unknown ({e}); connections are looked up in \
                 /proc, and one that closes before the lookup is counted as unresolved"
            ),
        }
        let mut take =
            |name: &'static str| self.ebpf.take_map(name).ok_or(CaptureError::Missing(name));
        let ring = RingBuf::try_from(take(names::TLS_EVENTS)?)
            .map_err(|e| CaptureError::load(names::TLS_EVENTS, e))?;
        let mut maps = TlsMaps {
            counters: PerCpuArray::try_from(take(names::TLS_COUNTERS)?)
                .map_err(|e| CaptureError::load(names::TLS_COUNTERS, e))?,
            pids: HashMap::try_from(take(names::TLS_PIDS)?)
                .map_err(|e| CaptureError::load(names::TLS_PIDS, e))?,
            config: Array::try_from(take(names::TLS_CONFIG)?)
                .map_err(|e| CaptureError::load(names::TLS_CONFIG, e))?,
            settings,
        };
        maps.write_config()?;
        Ok((maps, ring))
    }

    pub fn uprobe(&mut self, name: &'static str) -> Result<&mut UProbe, CaptureError> {
        self.ebpf
            .program_mut(name)
            .ok_or(CaptureError::Missing(name))?
            .try_into()
            .map_err(|e| CaptureError::load(name, e))
    }

    /// The kernel counters, summed over CPUs.
    pub fn counters(&self) -> Result<KernelCounters, CaptureError> {
        read_counters(&self.counters)
    }
}

/// The maps of the TLS programs but their ring (see [`CaptureProgram::load_tls`]).
pub struct TlsMaps {
    pub counters: PerCpuArray<MapData, u64>,
    /// Captured processes, by tgid.
    pub pids: HashMap<MapData, u32, u8>,
    config: Array<MapData, sensor_ebpf::tls::TlsConfig>,
    settings: sensor_ebpf::tls::TlsConfig,
}

impl TlsMaps {
    /// Starts the programs. With the kernel's socket layout known, they also capture any
    /// process's connection whose socket is a server's on a TLS port (`PORT_FILTER`), in network
    /// namespace `netns` only when given: servers that user space cannot list still count.
    pub fn enable(&mut self, netns: Option<u64>) -> Result<(), CaptureError> {
        self.settings.flags |= CONFIG_ENABLED;
        if self.settings.flags & sensor_ebpf::tls::KERNEL_SOCKETS != 0 {
            self.settings.flags |= sensor_ebpf::tls::PORT_FILTER;
            // Namespace inode numbers are 32-bit in the kernel (`ns_common.inum`).
            self.settings.netns = netns.map_or(0, |n| n as u32);
        }
        self.write_config()
    }

    /// Whether the kernel decides by the socket's port (see [`Self::enable`]).
    pub fn port_filter(&self) -> bool {
        self.settings.flags & sensor_ebpf::tls::PORT_FILTER != 0
    }

    fn write_config(&mut self) -> Result<(), CaptureError> {
        self.config
            .set(0, self.settings, 0)
            .map_err(|e| CaptureError::load(names::TLS_CONFIG, e))
    }
}

fn read_counters(map: &PerCpuArray<MapData, u64>) -> Result<KernelCounters, CaptureError> {
    read_named_counters(map, &counter::NAMES)
}

/// Per-CPU counters summed, by `names` in index order.
pub fn read_named_counters(
    map: &PerCpuArray<MapData, u64>,
    counter_names: &[&'static str],
) -> Result<KernelCounters, CaptureError> {
    let mut totals = KernelCounters::new();
    for (index, name) in counter_names.iter().enumerate() {
        let values = map
            .get(&(index as u32), 0)
            .map_err(|e| CaptureError::load(names::COUNTERS, e))?;
        totals.insert(name, values.iter().sum());
    }
    Ok(totals)
}
