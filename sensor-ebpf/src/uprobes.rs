//! TLS plaintext: uprobes on the TLS library's read and write functions (entry and return) and
//! on `SSL_free`, for the processes in `TLS_PIDS` and, with `PORT_FILTER`, for the connections
//! whose socket is a server's on a TLS port in any process (see `sensor_ebpf::tls`).

use core::hint::black_box;

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{
            bpf_get_attach_cookie, bpf_get_current_task,
            bpf_probe_read_user as bpf_probe_read_user_raw,
        },
    },
    macros::{map, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RetProbeContext},
};
use sensor_ebpf::{
    CONFIG_ENABLED, MAX_CHUNK,
    tls::{self, PendingCall, TLS_HEADER_LEN, TlsConfig, TlsEvent, TlsEventBuf, koff},
};

#[map]
static TLS_EVENTS: RingBuf = RingBuf::with_byte_size(tls::DEFAULT_RING_BYTES, 0);

#[map]
static TLS_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(tls::counter::COUNT, 0);

#[map]
static TLS_CONFIG: Array<TlsConfig> = Array::with_max_entries(1, 0);

/// Processes whose TLS calls are captured (the servers on the TLS ports), by tgid. The probes sit
/// on a library file every process using it shares: clients on this host (curl, Python) must
/// not add their side of the same connections.
#[map]
static TLS_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(tls::MAX_PIDS, 0);

/// Calls between entry and return, by pid_tgid (a thread is in one call at a time).
#[map]
static TLS_PENDING: HashMap<u64, PendingCall> = HashMap::with_max_entries(tls::MAX_PENDING, 0);

/// Connections (tgid, SSL*) already decided (`tls::verdict`): captured ones produced an event,
/// and the first event of a new one wakes the reader at once, so that user space can look the
/// socket up while it still exists; skipped ones (clients of this host) are not looked at again.
#[map]
static TLS_KNOWN: LruHashMap<[u64; 2], u8> = LruHashMap::with_max_entries(tls::MAX_PENDING, 0);

#[map]
static TLS_SCRATCH: PerCpuArray<TlsEventBuf> = PerCpuArray::with_max_entries(1, 0);

/// TLS ring fill level at which a wakeup is forced.
const TLS_WAKEUP_BYTES: u64 = 256 * 1024;

#[inline(always)]
fn tls_count(index: u32, n: u64) {
    if let Some(value) = TLS_COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *value += n };
    }
}

/// The configuration and `pid_tgid`, if capture is enabled and the current process may hold
/// captured connections: one of the servers user space listed in `TLS_PIDS` (`listed`), or any
/// process when the kernel decides by the socket's port (`PORT_FILTER`).
#[inline(always)]
fn tls_target() -> Option<(TlsConfig, u64, bool)> {
    let config = *TLS_CONFIG.get(0)?;
    if config.flags & CONFIG_ENABLED == 0 {
        return None;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: plain value lookup.
    let listed = unsafe { TLS_PIDS.get(tgid) }.is_some();
    if !listed && config.flags & tls::PORT_FILTER == 0 {
        return None;
    }
    Some((config, pid_tgid, listed))
}

/// What the kernel already decided of connection `ssl` of the current process (`tls::verdict`).
/// A plain byte, not an `Option`: LLVM leaves the payload of a `None` undefined and may still
/// read it in a branch-free select, which the verifier refuses (an uninitialised register).
#[inline(always)]
fn known(pid_tgid: u64, ssl: u64) -> u8 {
    // SAFETY: plain value lookup.
    unsafe { TLS_KNOWN.get([pid_tgid >> 32, ssl]) }
        .copied()
        .unwrap_or(tls::verdict::UNDECIDED)
}

/// Entry of a read or write function: remembers its arguments until it returns.
#[uprobe]
pub fn apis_tls_entry(ctx: ProbeContext) -> u32 {
    let Some((_, pid_tgid, listed)) = tls_target() else {
        return 0;
    };
    let ssl = ctx.arg::<u64>(0).unwrap_or(0);
    // A client's connection, once decided, costs one lookup per call from then on.
    if !listed && known(pid_tgid, ssl) == tls::verdict::SKIPPED {
        return 0;
    }
    // SAFETY: the context pointer is valid for the duration of the program.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let call = PendingCall {
        ssl,
        buf: ctx.arg::<u64>(1).unwrap_or(0),
        done: if cookie & tls::cookie::INTERNAL != 0 {
            ctx.arg::<u64>(3).unwrap_or(0)
        } else {
            0
        },
        cookie,
    };
    if TLS_PENDING.insert(pid_tgid, call, 0).is_err() {
        tls_count(tls::counter::PENDING_FULL, 1);
    }
    0
}

/// Return of a read or write function: the plaintext it moved goes to the ring.
#[uretprobe]
pub fn apis_tls_return(ctx: RetProbeContext) -> u32 {
    let Some((config, pid_tgid, listed)) = tls_target() else {
        return 0;
    };
    // SAFETY: plain value lookup; copied out before the entry is removed.
    let Some(call) = (unsafe { TLS_PENDING.get(pid_tgid) }).copied() else {
        // Unlisted processes' skipped connections leave no entry on purpose: only a listed
        // server's missing entry is a call the probes came in the middle of.
        if listed {
            tls_count(tls::counter::MISSED_ENTRY, 1);
        }
        return 0;
    };
    // Absent already is fine: the entry is gone either way.
    let _ = TLS_PENDING.remove(pid_tgid);
    // Both conventions return a C int.
    let ret = ctx.ret::<u64>() as i32;
    if ret <= 0 {
        tls_count(tls::counter::EMPTY_CALLS, 1);
        return 0;
    }
    let len = if call.cookie & tls::cookie::INTERNAL != 0 {
        // SAFETY: reads user memory through the helper, which fails cleanly on a bad address.
        match unsafe { bpf_probe_read_user(call.done as *const u64) } {
            Ok(len) => len,
            Err(_) => {
                tls_count(tls::counter::READ_ERRORS, 1);
                return 0;
            }
        }
    } else {
        ret as u64
    };
    if len == 0 {
        tls_count(tls::counter::EMPTY_CALLS, 1);
        return 0;
    }
    let direction = if call.cookie & tls::cookie::WRITE != 0 {
        tls::WRITE
    } else {
        tls::READ
    };
    let _ = tls_emit(&call, len, direction, pid_tgid, listed, &config);
    0
}

/// `SSL_free`: the connection's streams end (the pointer may be reused for another one).
#[uprobe]
pub fn apis_tls_free(ctx: ProbeContext) -> u32 {
    let Some((_, pid_tgid, listed)) = tls_target() else {
        return 0;
    };
    let ssl = ctx.arg::<u64>(0).unwrap_or(0);
    if ssl == 0 {
        return 0;
    }
    let tgid = pid_tgid >> 32;
    // The pointer may come back for another connection, which is decided afresh.
    let verdict = known(pid_tgid, ssl);
    if verdict != tls::verdict::UNDECIDED {
        let _ = TLS_KNOWN.remove([tgid, ssl]);
    }
    // A listed server's connection that never carried data ends too (user space ignores it).
    if !listed && verdict != tls::verdict::CAPTURED {
        return 0;
    }
    tls_count(tls::counter::FREES, 1);
    let event = TlsEvent {
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        ssl,
        pid: tgid as u32,
        tid: pid_tgid as u32,
        fd: -1,
        kind: tls::KIND_FREE,
        ..TlsEvent::default()
    };
    if TLS_EVENTS
        .output::<TlsEvent>(&event, u64::from(BPF_RB_NO_WAKEUP))
        .is_err()
    {
        tls_count(tls::counter::RING_FULL, 1);
    }
    0
}

/// The socket's fd from the SSL's read BIO, when that BIO is a socket BIO; -1 otherwise (a
/// client with its own BIO, a layout that does not match).
#[inline(always)]
fn tls_socket_fd(ssl: u64, config: &TlsConfig) -> i32 {
    // SAFETY: every read goes through the helper, which fails cleanly on a bad address.
    unsafe {
        let Ok(rbio) = bpf_probe_read_user((ssl + u64::from(config.rbio_offset)) as *const u64)
        else {
            return -1;
        };
        if rbio == 0 {
            return -1;
        }
        let Ok(method) =
            bpf_probe_read_user((rbio + u64::from(config.bio_method_offset)) as *const u64)
        else {
            return -1;
        };
        match bpf_probe_read_user(method as *const i32) {
            Ok(tls::BIO_TYPE_SOCKET) => {}
            _ => return -1,
        }
        bpf_probe_read_user((rbio + u64::from(config.bio_num_offset)) as *const i32).unwrap_or(-1)
    }
}

/// Reads the addresses of the socket behind `fd` of the current task into `header`, through the
/// kernel offsets user space found in BTF. Leaves `family` 0 when any step fails.
#[inline(always)]
fn tls_socket(fd: i32, config: &TlsConfig, header: &mut TlsEvent) -> Result<(), i64> {
    header.family = 0;
    if config.flags & tls::KERNEL_SOCKETS == 0 || fd < 0 {
        return Ok(());
    }
    let k = &config.kernel;
    let at = |base: u64, index: usize| base + u64::from(k[index]);
    // SAFETY: every read goes through the helper, which fails cleanly on a bad address; the
    // offsets come from this kernel's BTF.
    unsafe {
        let task = bpf_get_current_task();
        let files: u64 = bpf_probe_read_kernel(at(task, koff::TASK_FILES) as *const u64)?;
        let fdt: u64 = bpf_probe_read_kernel(at(files, koff::FILES_FDT) as *const u64)?;
        let max_fds: u32 = bpf_probe_read_kernel(at(fdt, koff::FDT_MAX_FDS) as *const u32)?;
        if fd as u32 >= max_fds {
            return Ok(());
        }
        let fds: u64 = bpf_probe_read_kernel(at(fdt, koff::FDT_FD) as *const u64)?;
        let file: u64 = bpf_probe_read_kernel((fds + fd as u64 * 8) as *const u64)?;
        let socket: u64 = bpf_probe_read_kernel(at(file, koff::FILE_PRIVATE_DATA) as *const u64)?;
        let sk: u64 = bpf_probe_read_kernel(at(socket, koff::SOCKET_SK) as *const u64)?;
        let family: u16 = bpf_probe_read_kernel(at(sk, koff::SKC_FAMILY) as *const u16)?;
        match family {
            AF_INET => {
                let local: [u8; 4] =
                    bpf_probe_read_kernel(at(sk, koff::SKC_RCV_SADDR) as *const [u8; 4])?;
                let remote: [u8; 4] =
                    bpf_probe_read_kernel(at(sk, koff::SKC_DADDR) as *const [u8; 4])?;
                header.local_addr = [0; 16];
                header.remote_addr = [0; 16];
                header.local_addr[..4].copy_from_slice(&local);
                header.remote_addr[..4].copy_from_slice(&remote);
            }
            AF_INET6 => {
                header.local_addr =
                    bpf_probe_read_kernel(at(sk, koff::SKC_V6_RCV_SADDR) as *const [u8; 16])?;
                header.remote_addr =
                    bpf_probe_read_kernel(at(sk, koff::SKC_V6_DADDR) as *const [u8; 16])?;
            }
            _ => return Ok(()),
        }
        header.local_port = bpf_probe_read_kernel(at(sk, koff::SKC_NUM) as *const u16)?;
        let remote_port: u16 = bpf_probe_read_kernel(at(sk, koff::SKC_DPORT) as *const u16)?;
        header.remote_port = u16::from_be(remote_port);
        let net: u64 = bpf_probe_read_kernel(at(sk, koff::SKC_NET) as *const u64)?;
        header.netns = bpf_probe_read_kernel(at(net, koff::NET_NS_INUM) as *const u32)?;
        header.family = family as u8;
    }
    Ok(())
}

/// Whether the socket the kernel read into `header` is a server's on a TLS port, in the
/// namespace user space asked for (`PORT_FILTER`). Its local port is then the listening one;
/// a client on this host has an ephemeral local port and a TLS port at the far end.
#[inline(always)]
fn served_on_tls_port(header: &TlsEvent, config: &TlsConfig) -> bool {
    config.flags & tls::PORT_FILTER != 0
        && header.family != 0
        && (config.netns == 0 || header.netns == config.netns)
        && super::port_state(header.local_port) == sensor_ebpf::port::TLS
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Copies `len` plaintext bytes at `call.buf` into the ring, in chunks. Bytes past the last
/// chunk, and chunks that cannot be read, are counted; the events' offsets tell user space
/// where its stream has a gap.
#[inline(always)]
fn tls_emit(
    call: &PendingCall,
    len: u64,
    direction: u8,
    pid_tgid: u64,
    listed: bool,
    config: &TlsConfig,
) -> Result<(), ()> {
    let tgid = pid_tgid >> 32;
    let key = [tgid, call.ssl];
    let verdict = known(pid_tgid, call.ssl);
    if !listed && verdict == tls::verdict::SKIPPED {
        return Ok(());
    }
    // A listed server's connection is captured whatever was decided before it was listed.
    let new_connection = verdict != tls::verdict::CAPTURED;
    let fd = tls_socket_fd(call.ssl, config);
    let buf = TLS_SCRATCH.get_ptr_mut(0).ok_or(())?;
    // SAFETY: the per-CPU slot is ours until the program returns.
    let buf = unsafe { &mut *buf };
    let max = u64::from(tls::MAX_CHUNKS_PER_CALL) * MAX_CHUNK as u64;
    let captured = len.min(max) as u32;
    if len > max {
        tls_count(tls::counter::BYTES_TRUNCATED, len - max);
    }
    // SAFETY: helper without arguments.
    buf.header.ts_ns = unsafe { bpf_ktime_get_ns() };
    buf.header.ssl = call.ssl;
    buf.header.pid = tgid as u32;
    buf.header.tid = pid_tgid as u32;
    buf.header.call_len = len.min(u64::from(u32::MAX)) as u32;
    buf.header.fd = fd;
    buf.header.kind = tls::KIND_DATA;
    buf.header.direction = direction;
    // A connection's addresses are read once, on its first event: later ones reuse them.
    buf.header.family = 0;
    if new_connection {
        if tls_socket(fd, config, &mut buf.header).is_err() {
            buf.header.family = 0;
        }
        let captured = listed || served_on_tls_port(&buf.header, config);
        let verdict = match captured {
            true => tls::verdict::CAPTURED,
            false => tls::verdict::SKIPPED,
        };
        // Full is fine: the LRU map makes room itself.
        let _ = TLS_KNOWN.insert(key, verdict, 0);
        if !captured {
            tls_count(tls::counter::CONNECTIONS_SKIPPED, 1);
            return Ok(());
        }
    }
    tls_count(tls::counter::CALLS, 1);
    for chunk in 0..tls::MAX_CHUNKS_PER_CALL {
        let chunk_offset = chunk * MAX_CHUNK as u32;
        if chunk_offset >= captured {
            break;
        }
        let n = (captured - chunk_offset).min(MAX_CHUNK as u32);
        let last = chunk_offset + n >= captured;
        // The verifier drops the bound of a length LLVM proved non-zero; re-check it here.
        let copy = black_box(n) as usize;
        if copy == 0 || copy > MAX_CHUNK {
            return Err(());
        }
        // SAFETY: `copy` bytes fit in `payload` (checked just above); the source is user
        // memory read through the helper.
        let ret = unsafe {
            bpf_probe_read_user_raw(
                buf.payload.as_mut_ptr().cast(),
                copy as u32,
                (call.buf + u64::from(chunk_offset)) as *const core::ffi::c_void,
            )
        };
        let got = if ret == 0 {
            copy
        } else {
            tls_count(tls::counter::READ_ERRORS, 1);
            tls_count(tls::counter::READ_ERROR_BYTES, copy as u64);
            // The header alone still goes: its offset and length tell user space the gap.
            0
        };
        buf.header.chunk_offset = chunk_offset;
        buf.header.captured_len = got as u32;
        buf.header.flags = if last { 0 } else { tls::flags::MORE_CHUNKS };
        tls_submit(buf, got, new_connection && chunk == 0);
        if last {
            break;
        }
    }
    Ok(())
}

#[inline(always)]
fn tls_submit(buf: &TlsEventBuf, len: usize, wake: bool) {
    let size = black_box(TLS_HEADER_LEN + len);
    if size > TLS_HEADER_LEN + MAX_CHUNK {
        return;
    }
    let waiting = TLS_EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    let wakeup = if wake || waiting + size as u64 >= TLS_WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    // SAFETY: `size` <= size_of::<TlsEventBuf>() (checked above); the struct is plain bytes.
    let bytes =
        unsafe { core::slice::from_raw_parts((buf as *const TlsEventBuf).cast::<u8>(), size) };
    match TLS_EVENTS.output::<[u8]>(bytes, u64::from(wakeup)) {
        Ok(()) => {
            tls_count(tls::counter::EVENTS_SUBMITTED, 1);
            tls_count(tls::counter::BYTES_SUBMITTED, len as u64);
        }
        Err(_) => {
            tls_count(tls::counter::RING_FULL, 1);
            tls_count(tls::counter::RING_FULL_BYTES, len as u64);
        }
    }
}
