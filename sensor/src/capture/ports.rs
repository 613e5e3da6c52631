//! Which ports the kernel programs watch when none are configured: the host's own listeners,
//! kept only while their connections carry HTTP.
//!
//! Every few seconds the daemon reads the listening TCP sockets of its network namespace
//! (`/proc/thread-self/net/tcp` and `tcp6`, loopback-bound ones included: a proxied app
//! listens there) and watches their ports. The decoder then tells, per connection, whether a
//! port spoke HTTP; a listener whose first connections carry something else (a database, a
//! cache, SSH) is muted in the kernel, where its segments are only counted, and tried again
//! after [`RECHECK`]. Configured ports are always watched and never muted; excluded ones never.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt, fs, io,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// Non-HTTP connections, with no HTTP one, after which a listener is muted.
pub const MUTE_AFTER: u32 = 2;
/// How long a muted port stays muted before its connections are looked at again.
pub const RECHECK: Duration = Duration::from_secs(600);
/// Listening ports followed at most (a host with more is unusual; the rest are counted).
pub const MAX_LISTENERS: usize = 4096;

/// The TCP ports with a listening socket in this thread's network namespace, from
/// `/proc/thread-self/net/tcp{,6}`; the number of ports past [`MAX_LISTENERS`] is returned too.
pub fn listening_ports() -> io::Result<(BTreeSet<u16>, u64)> {
    let mut ports = BTreeSet::new();
    for file in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
        match fs::read_to_string(file) {
            Ok(text) => ports.extend(parse_listeners(&text)),
            // A kernel without IPv6 has no tcp6.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let past = ports.len().saturating_sub(MAX_LISTENERS) as u64;
    while ports.len() > MAX_LISTENERS {
        ports.pop_last();
    }
    Ok((ports, past))
}

/// The local ports of the sockets in state LISTEN (`0A`) in a `/proc/net/tcp` table:
/// `sl local_address rem_address st ...`, addresses as `HEXIP:HEXPORT`.
pub fn parse_listeners(table: &str) -> impl Iterator<Item = u16> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1)?;
        let state = fields.nth(1)?;
        if state != "0A" {
            return None;
        }
        let (_, port) = local.rsplit_once(':')?;
        u16::from_str_radix(port, 16).ok()
    })
}

/// The ports of this host's servers as the user-space stages go by them: the flow table (which
/// end of a connection is the server when its handshake was not seen) and the NAT stage (which
/// connections are served here and need no lookup). One set, shared: [`PortPolicy`] writes it
/// as it tells the kernel, so a port a reload or a new listener adds counts in every stage at
/// once, and a port dropped stops counting. A clone is another handle on the same set.
///
/// A bit per port (8 KiB): a lookup per segment costs one load whatever the number of ports.
#[derive(Clone)]
pub struct ServerPorts(Arc<[AtomicU64; 1024]>);

impl ServerPorts {
    pub fn new(ports: &[u16]) -> Self {
        let set = Self(Arc::new(std::array::from_fn(|_| AtomicU64::new(0))));
        for port in ports {
            set.insert(*port);
        }
        set
    }

    fn word_bit(port: u16) -> (usize, u64) {
        (usize::from(port / 64), 1 << (port % 64))
    }

    pub fn contains(&self, port: u16) -> bool {
        let (word, bit) = Self::word_bit(port);
        // Relaxed: a port is a fact on its own; nothing else is published with it.
        self.0[word].load(Ordering::Relaxed) & bit != 0
    }

    pub fn insert(&self, port: u16) {
        let (word, bit) = Self::word_bit(port);
        self.0[word].fetch_or(bit, Ordering::Relaxed);
    }

    pub fn remove(&self, port: u16) {
        let (word, bit) = Self::word_bit(port);
        self.0[word].fetch_and(!bit, Ordering::Relaxed);
    }

    /// The ports in the set, in order.
    pub fn to_vec(&self) -> Vec<u16> {
        (0..=u16::MAX).filter(|port| self.contains(*port)).collect()
    }
}

impl Default for ServerPorts {
    /// The well-known HTTP ports ([`super::DEFAULT_PORTS`]).
    fn default() -> Self {
        Self::new(&super::DEFAULT_PORTS)
    }
}

impl fmt::Debug for ServerPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.to_vec()).finish()
    }
}

impl PartialEq for ServerPorts {
    fn eq(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .all(|(a, b)| a.load(Ordering::Relaxed) == b.load(Ordering::Relaxed))
    }
}

impl Eq for ServerPorts {}

/// Why a port is watched, or why not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortReason {
    /// Listed in the configuration or with `--port`.
    Configured,
    /// A listener here, not yet classified.
    Listening,
    /// A listener whose connections carried HTTP.
    Http,
    /// A listener whose connections carried something else: counted in the kernel only.
    Muted,
    /// A TLS port (`capture.tls_ports`): its ciphertext is counted in the kernel only, its
    /// plaintext comes from the TLS library's probes.
    Tls,
}

impl PortReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Configured => "configured",
            Self::Listening => "listening",
            Self::Http => "http",
            Self::Muted => "muted",
            Self::Tls => "tls",
        }
    }

    /// The value of its `PORTS` slot (`sensor_ebpf::port`).
    pub fn slot(self) -> u8 {
        match self {
            Self::Muted => sensor_ebpf::port::MUTED,
            Self::Tls => sensor_ebpf::port::TLS,
            _ => sensor_ebpf::port::WATCHED,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Listener {
    http: bool,
    not_http: u32,
    /// When it was muted (ns), if it is.
    muted_at: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortCounters {
    pub listeners_found: u64,
    pub listeners_gone: u64,
    pub listeners_past_bound: u64,
    pub verdicts_http: u64,
    pub verdicts_not_http: u64,
    pub ports_muted: u64,
    pub ports_rechecked: u64,
    pub refresh_errors: u64,
}

impl PortCounters {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("listeners_found", self.listeners_found),
            ("listeners_gone", self.listeners_gone),
            ("listeners_past_bound", self.listeners_past_bound),
            ("verdicts_http", self.verdicts_http),
            ("verdicts_not_http", self.verdicts_not_http),
            ("ports_muted", self.ports_muted),
            ("ports_rechecked", self.ports_rechecked),
            ("refresh_errors", self.refresh_errors),
        ]
    }
}

/// The ports to watch, kept in step with the host's listeners and the decoder's verdicts.
#[derive(Debug)]
pub struct PortPolicy {
    configured: BTreeSet<u16>,
    excluded: BTreeSet<u16>,
    /// TLS ports: never decoded from the wire, whatever else says so.
    tls: BTreeSet<u16>,
    /// Follow the host's listeners (`capture.ports = "auto"`).
    auto: bool,
    listeners: BTreeMap<u16, Listener>,
    /// What the kernel was last told, by port.
    applied: BTreeMap<u16, PortReason>,
    /// The ports of `applied`, for the user-space stages (see [`ServerPorts`]).
    server_ports: ServerPorts,
    pub counters: PortCounters,
}

impl PortPolicy {
    pub fn new(configured: &[u16], excluded: &[u16], auto: bool) -> Self {
        Self {
            configured: configured.iter().copied().collect(),
            excluded: excluded.iter().copied().collect(),
            tls: BTreeSet::new(),
            auto,
            listeners: BTreeMap::new(),
            applied: BTreeMap::new(),
            server_ports: ServerPorts::new(&[]),
            counters: PortCounters::default(),
        }
    }

    /// Marks `ports` as TLS ports (`PortReason::Tls`): they stay servers' ports for the
    /// user-space stages, and the kernel counts their ciphertext without handing it over.
    pub fn with_tls(mut self, ports: &[u16]) -> Self {
        self.tls = ports.iter().copied().collect();
        self
    }

    /// The set of server ports this policy keeps in step with the kernel: give it to the flow
    /// table and the NAT stage.
    pub fn server_ports(&self) -> ServerPorts {
        self.server_ports.clone()
    }

    /// Takes a reloaded configuration's ports; [`PortPolicy::changes`] then says what the
    /// kernel must be told. Listeners already known are kept while `auto` stays on.
    pub fn reconfigure(&mut self, configured: &[u16], excluded: &[u16], auto: bool) {
        self.configured = configured.iter().copied().collect();
        self.excluded = excluded.iter().copied().collect();
        if !auto {
            self.listeners.clear();
        }
        self.auto = auto;
    }

    /// Takes the current listeners (with `auto`; ignored otherwise).
    pub fn listeners(&mut self, ports: &BTreeSet<u16>, past_bound: u64) {
        if !self.auto {
            return;
        }
        self.counters.listeners_past_bound = past_bound;
        let before = self.listeners.len();
        self.listeners.retain(|port, _| ports.contains(port));
        self.counters.listeners_gone += (before - self.listeners.len()) as u64;
        for port in ports {
            if !self.listeners.contains_key(port) {
                self.listeners.insert(*port, Listener::default());
                self.counters.listeners_found += 1;
            }
        }
    }

    /// Whether a connection of `port` carried HTTP (the decoder's verdict), at `now_ns`.
    pub fn verdict(&mut self, port: u16, http: bool, now_ns: u64) {
        if http {
            self.counters.verdicts_http += 1;
        } else {
            self.counters.verdicts_not_http += 1;
        }
        let Some(listener) = self.listeners.get_mut(&port) else {
            return;
        };
        if http {
            listener.http = true;
        } else {
            listener.not_http += 1;
        }
        if !listener.http && listener.not_http >= MUTE_AFTER && listener.muted_at.is_none() {
            listener.muted_at = Some(now_ns);
            self.counters.ports_muted += 1;
        }
    }

    /// Unmutes the ports muted longer than [`RECHECK`] ago, to look at them again.
    pub fn recheck(&mut self, now_ns: u64) {
        let recheck = RECHECK.as_nanos() as u64;
        for listener in self.listeners.values_mut() {
            if listener
                .muted_at
                .is_some_and(|at| now_ns.saturating_sub(at) >= recheck)
            {
                *listener = Listener::default();
                self.counters.ports_rechecked += 1;
            }
        }
    }

    /// Every port to watch or mute now, with why.
    pub fn wanted(&self) -> BTreeMap<u16, PortReason> {
        let mut wanted: BTreeMap<u16, PortReason> = self
            .listeners
            .iter()
            .map(|(port, l)| {
                let reason = if l.muted_at.is_some() {
                    PortReason::Muted
                } else if l.http {
                    PortReason::Http
                } else {
                    PortReason::Listening
                };
                (*port, reason)
            })
            .collect();
        for port in &self.configured {
            wanted.insert(*port, PortReason::Configured);
        }
        wanted.retain(|port, _| !self.excluded.contains(port));
        for port in &self.tls {
            wanted.insert(*port, PortReason::Tls);
        }
        wanted
    }

    /// The slot changes that bring the kernel to [`PortPolicy::wanted`]: (port, slot value);
    /// remembered as applied, and in force in [`PortPolicy::server_ports`] at once (a muted
    /// port is still a server's, only its segments are not handed over).
    pub fn changes(&mut self) -> Vec<(u16, u8)> {
        let wanted = self.wanted();
        let mut changes = Vec::new();
        for (port, reason) in &wanted {
            if self.applied.get(port).map(|r| r.slot()) != Some(reason.slot()) {
                changes.push((*port, reason.slot()));
            }
        }
        for port in self.applied.keys() {
            if !wanted.contains_key(port) {
                changes.push((*port, sensor_ebpf::port::OFF));
            }
        }
        self.applied = wanted;
        for (port, slot) in &changes {
            match *slot {
                sensor_ebpf::port::OFF => self.server_ports.remove(*port),
                _ => self.server_ports.insert(*port),
            }
        }
        changes
    }

    /// What is watched or muted, and why (for `stats`).
    pub fn status(&self) -> BTreeMap<u16, PortReason> {
        self.applied.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_ebpf::port::{MUTED, OFF, WATCHED};

    const TABLE: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 00000000:0FA0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: garbage
";

    #[test]
    fn listeners_are_the_sockets_in_state_listen() {
        let ports: Vec<u16> = parse_listeners(TABLE).collect();
        assert_eq!(ports, [8080, 4000]);
        let v6 = "sl local rem st\n 0: 00000000000000000000000001000000:2328 00000000000000000000000000000000:0000 0A x\n";
        assert_eq!(parse_listeners(v6).collect::<Vec<_>>(), [9000]);
        assert_eq!(parse_listeners("").count(), 0);
    }

    #[test]
    fn this_namespaces_listeners_are_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (ports, _) = listening_ports().unwrap();
        assert!(ports.contains(&port), "{port} in {ports:?}");
    }

    #[test]
    fn server_ports_follow_what_the_kernel_is_told() {
        let mut policy = PortPolicy::new(&[8080], &[], false);
        let ports = policy.server_ports();
        assert!(!ports.contains(8080), "nothing applied yet");
        policy.changes();
        assert_eq!(ports.to_vec(), [8080]);
        // A reload adds 61080 and drops 8080: in force once the kernel is told.
        policy.reconfigure(&[61080], &[], false);
        assert_eq!(ports.to_vec(), [8080]);
        policy.changes();
        assert_eq!(ports.to_vec(), [61080]);
        // An excluded port is no server port, however it was added.
        policy.reconfigure(&[61080, 9000], &[9000], false);
        policy.changes();
        assert_eq!(ports.to_vec(), [61080]);
        // Listeners found with `auto` count too, muted ones included (still servers).
        policy.reconfigure(&[], &[], true);
        policy.listeners(&BTreeSet::from([0, 5432, u16::MAX]), 0);
        policy.changes();
        policy.verdict(5432, false, 1);
        policy.verdict(5432, false, 2);
        assert_eq!(policy.changes(), [(5432, MUTED)]);
        assert_eq!(ports.to_vec(), [0, 5432, u16::MAX]);
        assert_eq!(format!("{ports:?}"), "{0, 5432, 65535}");
    }

    #[test]
    fn listeners_are_watched_muted_when_not_http_and_dropped_when_gone() {
        let mut policy = PortPolicy::new(&[80], &[22], true);
        policy.listeners(&BTreeSet::from([22, 4000, 5432, 8080]), 0);
        let mut changes = policy.changes();
        changes.sort_unstable();
        assert_eq!(
            changes,
            [
                (80, WATCHED),
                (4000, WATCHED),
                (5432, WATCHED),
                (8080, WATCHED)
            ]
        );
        policy.verdict(8080, true, 1);
        policy.verdict(5432, false, 1);
        assert!(policy.changes().is_empty(), "one connection is not enough");
        policy.verdict(5432, false, 2);
        assert_eq!(policy.changes(), [(5432, MUTED)]);
        assert_eq!(policy.status()[&8080], PortReason::Http);
        // A port that once spoke HTTP is not muted by later other traffic.
        for _ in 0..5 {
            policy.verdict(8080, false, 3);
        }
        assert!(policy.changes().is_empty());
        // Rechecked after a while; gone when its listener is.
        policy.recheck(2 + RECHECK.as_nanos() as u64);
        assert_eq!(policy.changes(), [(5432, WATCHED)]);
        policy.listeners(&BTreeSet::from([8080]), 0);
        let mut changes = policy.changes();
        changes.sort_unstable();
        assert_eq!(changes, [(4000, OFF), (5432, OFF)]);
        // Configured ports stay, whatever listens.
        assert_eq!(policy.status()[&80], PortReason::Configured);
    }

    #[test]
    fn without_auto_only_the_configured_ports() {
        let mut policy = PortPolicy::new(&[8080], &[], false);
        policy.listeners(&BTreeSet::from([4000]), 0);
        assert_eq!(policy.changes(), [(8080, WATCHED)]);
    }

    #[test]
    fn a_reload_adds_and_removes_ports_and_turns_auto_off() {
        let mut policy = PortPolicy::new(&[8080], &[], true);
        policy.listeners(&BTreeSet::from([4000]), 0);
        policy.changes();
        policy.reconfigure(&[8080, 8081], &[4000], true);
        let mut changes = policy.changes();
        changes.sort_unstable();
        assert_eq!(changes, [(4000, OFF), (8081, WATCHED)], "excluded now");
        policy.reconfigure(&[9000], &[], false);
        let mut changes = policy.changes();
        changes.sort_unstable();
        assert_eq!(changes, [(8080, OFF), (8081, OFF), (9000, WATCHED)]);
        policy.listeners(&BTreeSet::from([4000, 5000]), 0);
        assert!(
            policy.changes().is_empty(),
            "listeners ignored without auto"
        );
    }
}
