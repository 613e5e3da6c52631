//! Which container served an exchange: the network namespace that owns the server's address
//! (the container's, behind a NAT), and the cgroup of its processes where the host uses cgroup
//! v2 (a Docker container's scope, a Kubernetes pod's slice).
//!
//! Found through /proc: every process's network namespace (`/proc/PID/ns/net`), the addresses of
//! each namespace (`/proc/PID/net/fib_trie` for IPv4, `/proc/PID/net/if_inet6` for IPv6, read
//! through one of its processes) and their cgroups (`/proc/PID/cgroup`). A scan costs a few
//! milliseconds on a busy host, so it runs only for an address not seen before, at most once
//! per [`RESCAN_AFTER`], and answers are cached (bounded). A namespace without processes (a
//! bare `ip netns add`) cannot be found this way; an address owned by several namespaces (two
//! isolated networks reusing a range) is not attributed.

use std::{
    collections::{HashMap, HashSet},
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    num::NonZeroUsize,
    os::unix::fs::MetadataExt as _,
    time::{Duration, Instant},
};

use lru::LruCache;

/// The namespace and cgroup behind a server address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedBy {
    /// Inode of the network namespace (as `ls -l /proc/PID/ns/net` and `lsns` show it).
    pub netns: u64,
    /// The deepest cgroup (v2) shared by the namespace's processes, if not the root.
    pub cgroup: Option<String>,
}

/// Addresses answered from the cache at most.
const CACHE_ENTRIES: usize = 4096;

/// An address not found is looked for again after this long (a container just started), and
/// no scan follows another sooner.
pub const RESCAN_AFTER: Duration = Duration::from_secs(5);

/// A found owner is believed this long (a container replaced by another with its address).
const OWNER_VALID: Duration = Duration::from_secs(60);

/// Counters of the lookup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerCounters {
    pub scans: u64,
    /// Exchanges attributed to a namespace other than the sensor's.
    pub attributed: u64,
    /// Addresses owned by several namespaces (not attributed).
    pub ambiguous: u64,
}

/// Cached attribution of server addresses to the namespaces that own them.
pub struct ContainerIndex {
    own_netns: Option<u64>,
    /// The sensor's own namespace's addresses, sorted: served by this host, never looked up.
    host_addresses: Vec<IpAddr>,
    cache: LruCache<IpAddr, (Option<ServedBy>, Instant)>,
    last_scan: Option<Instant>,
    pub counters: ContainerCounters,
}

impl Default for ContainerIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl ContainerIndex {
    pub fn new() -> Self {
        Self {
            own_netns: netns_of("self"),
            host_addresses: Vec::new(),
            cache: LruCache::new(NonZeroUsize::new(CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN)),
            last_scan: None,
            counters: ContainerCounters::default(),
        }
    }

    /// Sets the sensor's own namespace's addresses (the daemon reads them every few seconds).
    pub fn set_host_addresses(&mut self, mut addresses: Vec<IpAddr>) {
        addresses.sort_unstable();
        addresses.dedup();
        self.host_addresses = addresses;
    }

    /// The namespace (other than the sensor's own) that owns `ip`, if one does.
    pub fn served_by(&mut self, ip: IpAddr) -> Option<ServedBy> {
        let ip = ip.to_canonical();
        if self.host_addresses.binary_search(&ip).is_ok() {
            return None;
        }
        if let Some((known, checked)) = self.cache.get(&ip) {
            let valid = if known.is_some() {
                OWNER_VALID
            } else {
                RESCAN_AFTER
            };
            if checked.elapsed() < valid {
                let known = known.clone();
                self.count(known.as_ref());
                return known;
            }
        }
        if self
            .last_scan
            .is_some_and(|last| last.elapsed() < RESCAN_AFTER)
        {
            return None;
        }
        let now = Instant::now();
        self.last_scan = Some(now);
        self.counters.scans += 1;
        let (owners, ambiguous) = scan(self.own_netns);
        self.counters.ambiguous += ambiguous.len() as u64;
        for (address, served) in owners {
            self.cache.put(address, (Some(served), now));
        }
        for address in ambiguous {
            self.cache.put(address, (None, now));
        }
        let found = self.cache.get(&ip).and_then(|(found, _)| found.clone());
        if found.is_none() {
            self.cache.put(ip, (None, now));
        }
        self.count(found.as_ref());
        found
    }

    fn count(&mut self, found: Option<&ServedBy>) {
        if found.is_some() {
            self.counters.attributed += 1;
        }
    }

    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("scans", self.counters.scans),
            ("attributed", self.counters.attributed),
            ("ambiguous_addresses", self.counters.ambiguous),
        ]
    }
}

fn netns_of(pid: &str) -> Option<u64> {
    fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// Every address of every network namespace with a process, except `own`'s: the owner of each
/// address owned by exactly one namespace, and the addresses owned by several.
fn scan(own: Option<u64>) -> (HashMap<IpAddr, ServedBy>, Vec<IpAddr>) {
    // netns inode -> its processes
    let mut namespaces: HashMap<u64, Vec<String>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Some(netns) = netns_of(&name)
                && Some(netns) != own
            {
                namespaces.entry(netns).or_default().push(name);
            }
        }
    }
    let mut owners: HashMap<IpAddr, ServedBy> = HashMap::new();
    let mut ambiguous: HashSet<IpAddr> = HashSet::new();
    for (netns, pids) in namespaces {
        // Processes can exit while being read: the first whose files read is the namespace's.
        let Some(addresses) = pids.iter().find_map(|pid| addresses_of(pid)) else {
            continue;
        };
        let served = ServedBy {
            netns,
            cgroup: common_cgroup(&pids),
        };
        for address in addresses {
            if address.is_loopback() || ambiguous.contains(&address) {
                continue;
            }
            if owners.insert(address, served.clone()).is_some() {
                owners.remove(&address);
                ambiguous.insert(address);
            }
        }
    }
    (owners, ambiguous.into_iter().collect())
}

/// The local addresses of `pid`'s network namespace.
fn addresses_of(pid: &str) -> Option<Vec<IpAddr>> {
    let trie = fs::read_to_string(format!("/proc/{pid}/net/fib_trie")).ok()?;
    let mut addresses: Vec<IpAddr> = local_v4(&trie).into_iter().map(IpAddr::V4).collect();
    if let Ok(inet6) = fs::read_to_string(format!("/proc/{pid}/net/if_inet6")) {
        addresses.extend(local_v6(&inet6).into_iter().map(IpAddr::V6));
    }
    Some(addresses)
}

/// The `/32 host LOCAL` entries of a fib_trie dump: the namespace's own IPv4 addresses.
fn local_v4(trie: &str) -> Vec<Ipv4Addr> {
    let mut found = Vec::new();
    let mut last = None;
    for line in trie.lines() {
        let line = line.trim_start();
        if let Some(address) = line.strip_prefix("|-- ") {
            last = address.trim().parse::<Ipv4Addr>().ok();
        } else if line.starts_with("/32 host LOCAL")
            && let Some(address) = last
            && !found.contains(&address)
        {
            found.push(address);
        }
    }
    found
}

/// The addresses of an `if_inet6` table (32 hex digits first on each line).
fn local_v6(table: &str) -> Vec<Ipv6Addr> {
    table
        .lines()
        .filter_map(|line| {
            let hex = line.split_whitespace().next()?;
            u128::from_str_radix(hex, 16).ok().map(Ipv6Addr::from)
        })
        .filter(|a| !a.is_loopback() && !a.is_unicast_link_local())
        .collect()
}

/// The deepest cgroup v2 path shared by `pids` (whole path components), unless it is the root.
fn common_cgroup(pids: &[String]) -> Option<String> {
    let mut common: Option<Vec<String>> = None;
    for pid in pids {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        // No cgroup v2 line: a v1-only host, nothing comparable to report.
        let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        let parts: Vec<String> = path
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        common = Some(match common {
            None => parts,
            Some(prev) => prev
                .into_iter()
                .zip(parts)
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| a)
                .collect(),
        });
    }
    common
        .filter(|parts| !parts.is_empty())
        .map(|parts| format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fib_trie_local_addresses_are_read() {
        let trie = "Local:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 127.0.0.1\n        /32 host LOCAL\n     \
                    |-- 172.30.0.2\n        /32 host LOCAL\n     |-- 172.30.0.255\n        \
                    /32 link BROADCAST\n";
        assert_eq!(
            local_v4(trie),
            vec![Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(172, 30, 0, 2)]
        );
    }

    #[test]
    fn if_inet6_addresses_are_read_without_loopback_and_link_local() {
        let table = "fd000000000000000000000000000002 04 40 00 82     eth0\n\
                     fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n\
                     00000000000000000000000000000001 01 80 10 80       lo\n";
        assert_eq!(
            local_v6(table),
            vec!["fd00::2".parse::<Ipv6Addr>().unwrap()]
        );
    }

    #[test]
    fn this_process_is_found_in_its_own_namespace_only_when_not_excluded() {
        let own = netns_of("self");
        assert!(own.is_some());
        let (owners, _) = scan(own);
        assert!(owners.values().all(|s| Some(s.netns) != own));
    }
}
