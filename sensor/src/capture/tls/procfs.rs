//! What `/proc` says about TLS servers: which processes hold a listening socket on a TLS port,
//! which TLS library each has mapped, and which connection a socket fd of theirs is.
//!
//! Everything is read per process (`/proc/PID/net/tcp` is the process's own network namespace,
//! `/proc/PID/root/...` its own root), so servers in containers are found like the host's.
//! Every file here belongs to another process and may change or vanish while it is read: a
//! failure skips that process, it never stops the scan.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Processes looked at per scan at most.
pub const MAX_PROCESSES: usize = 65_536;

/// A process serving a TLS port, and the TLS library it uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsServer {
    pub pid: u32,
    /// The library as this process sees it, reached through its root (`/proc/PID/root/...`).
    pub library: PathBuf,
    /// (device, inode) of the library file: one attachment per distinct file.
    pub library_id: (u64, u64),
}

/// A TCP connection as the server process sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Connection {
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// Inode of the process's network namespace.
    pub netns: u64,
}

/// The processes with a listening socket on one of `ports` that have a `libssl.so*` mapped, in
/// network namespace `netns` only, or in any. Also returns how many processes holding such a
/// socket have no TLS library mapped (statically linked or another library: not covered).
pub fn tls_servers(ports: &[u16], netns: Option<u64>) -> (Vec<TlsServer>, u64) {
    let mut servers = Vec::new();
    let mut without_library = 0;
    // Listening sockets on TLS ports, by network namespace.
    let mut listeners: HashMap<u64, BTreeSet<u64>> = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return (servers, 0);
    };
    for entry in entries.flatten().take(MAX_PROCESSES) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let proc = entry.path();
        let Some(own) = namespace_inode(&proc) else {
            continue;
        };
        if netns.is_some_and(|only| only != own) {
            continue;
        }
        let inodes = listeners
            .entry(own)
            .or_insert_with(|| listening_inodes(&proc, ports));
        if inodes.is_empty() || !holds_any_socket(&proc, inodes) {
            continue;
        }
        match ssl_library(&proc) {
            Some((library, library_id)) => servers.push(TlsServer {
                pid,
                library,
                library_id,
            }),
            None => without_library += 1,
        }
    }
    (servers, without_library)
}

/// The connection of socket `fd` in process `pid`, from the server's side (local = server).
pub fn connection(pid: u32, fd: i32) -> io::Result<Connection> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let link = fs::read_link(proc.join("fd").join(fd.to_string()))?;
    let inode = socket_inode(&link).ok_or_else(|| io::Error::other("not a socket"))?;
    let netns = namespace_inode(&proc).ok_or_else(|| io::Error::other("no network namespace"))?;
    for table in ["tcp", "tcp6"] {
        let text = match fs::read_to_string(proc.join("net").join(table)) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if let Some((local, remote)) = find_socket(&text, inode) {
            return Ok(Connection {
                client: remote,
                server: local,
                netns,
            });
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "the socket is not a TCP connection (any more)",
    ))
}

/// The established connections on `ports` in process `pid`'s network namespace, as (client,
/// server): what was open before the probes were attached to it.
pub fn established(pid: u32, ports: &[u16]) -> Vec<(SocketAddr, SocketAddr)> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let mut found = Vec::new();
    for table in ["tcp", "tcp6"] {
        if let Ok(text) = fs::read_to_string(proc.join("net").join(table)) {
            found.extend(rows(&text).filter_map(|row| {
                (row.state == ESTABLISHED && ports.contains(&row.local.port()))
                    .then_some((row.remote, row.local))
            }));
        }
    }
    found
}

/// The calling thread's network namespace (inode number).
pub fn own_namespace() -> Option<u64> {
    namespace_inode(Path::new("/proc/thread-self"))
}

fn namespace_inode(proc: &Path) -> Option<u64> {
    let link = fs::read_link(proc.join("ns/net")).ok()?;
    let text = link.to_str()?;
    text.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

fn socket_inode(link: &Path) -> Option<u64> {
    let text = link.to_str()?;
    text.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Inodes of the listening sockets on `ports` in the process's network namespace.
fn listening_inodes(proc: &Path, ports: &[u16]) -> BTreeSet<u64> {
    let mut inodes = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        if let Ok(text) = fs::read_to_string(proc.join("net").join(table)) {
            inodes.extend(rows(&text).filter_map(|row| {
                (row.state == LISTEN && ports.contains(&row.local.port())).then_some(row.inode)
            }));
        }
    }
    inodes
}

fn holds_any_socket(proc: &Path, inodes: &BTreeSet<u64>) -> bool {
    let Ok(fds) = fs::read_dir(proc.join("fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path())
            .ok()
            .and_then(|link| socket_inode(&link))
            .is_some_and(|inode| inodes.contains(&inode))
    })
}

/// The first `libssl.so*` in the process's mappings, through its root, with its file identity.
fn ssl_library(proc: &Path) -> Option<(PathBuf, (u64, u64))> {
    let maps = fs::read_to_string(proc.join("maps")).ok()?;
    let mut seen = BTreeMap::new();
    for line in maps.lines() {
        // address perms offset dev inode path
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        let is_libssl = Path::new(path)
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("libssl.so"));
        if is_libssl && path.starts_with('/') {
            seen.entry(path.to_owned()).or_insert(());
        }
    }
    let path = seen.into_keys().next()?;
    let library = proc.join("root").join(path.trim_start_matches('/'));
    let meta = fs::metadata(&library).ok()?;
    Some((library, (meta.dev(), meta.ino())))
}

const LISTEN: u8 = 0x0a;
const ESTABLISHED: u8 = 0x01;

struct Row {
    local: SocketAddr,
    remote: SocketAddr,
    state: u8,
    inode: u64,
}

/// The rows of a `/proc/net/tcp{,6}` table:
/// `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode`.
fn rows(table: &str) -> impl Iterator<Item = Row> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().take(10).collect();
        if fields.len() < 10 {
            return None;
        }
        Some(Row {
            local: parse_address(fields[1])?,
            remote: parse_address(fields[2])?,
            state: u8::from_str_radix(fields[3], 16).ok()?,
            inode: fields[9].parse().ok()?,
        })
    })
}

fn find_socket(table: &str, inode: u64) -> Option<(SocketAddr, SocketAddr)> {
    rows(table)
        .find(|row| row.inode == inode && row.state != LISTEN)
        .map(|row| (row.local, row.remote))
}

/// `HEXADDR:HEXPORT`; the address is the kernel's memory (32-bit words in host order).
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = address.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match address.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(bytes);
            // A v4 client of a dual-stack listener: the address it really has.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:20FB 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:20FB 0000000000000000FFFF00000200007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3333 1
   1: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:C350 01 00000000:00000000 00:00000000 00000000     0        0 4444 1
";

    #[test]
    fn tables_give_connections_by_inode() {
        assert_eq!(
            find_socket(TCP, 2222),
            Some((
                "127.0.0.1:8443".parse().unwrap(),
                "127.0.0.1:54321".parse().unwrap()
            ))
        );
        // The listener is not a connection.
        assert_eq!(find_socket(TCP, 1111), None);
        assert_eq!(
            find_socket(TCP6, 3333),
            Some((
                "127.0.0.1:8443".parse().unwrap(),
                "127.0.0.2:40000".parse().unwrap()
            ))
        );
        assert_eq!(
            find_socket(TCP6, 4444),
            Some((
                "[::1]:8080".parse().unwrap(),
                "[::1]:50000".parse().unwrap()
            ))
        );
        let listening: Vec<u64> = rows(TCP)
            .filter(|r| r.state == LISTEN)
            .map(|r| r.inode)
            .collect();
        assert_eq!(listening, [1111]);
    }

    #[test]
    fn garbage_rows_are_skipped() {
        for table in [
            "",
            "header\n",
            "h\n 0: zz:zz 00:00 0A a b c d e f\n",
            "h\n0: 0100007F:20FB",
        ] {
            assert_eq!(rows(table).count(), 0);
        }
        assert_eq!(parse_address("0100007F"), None);
        assert_eq!(parse_address("01:0050"), None);
    }

    #[test]
    fn links_name_sockets_and_namespaces() {
        assert_eq!(socket_inode(Path::new("socket:[42]")), Some(42));
        assert_eq!(socket_inode(Path::new("/dev/null")), None);
        assert_eq!(socket_inode(Path::new("socket:[x]")), None);
    }
}
