//! Where the probes go in a TLS library file: found from its exported symbols and checked by the
//! bytes at each spot when the library is attached.
//!
//! A uprobe on an instruction the kernel can emulate (`push`, `call`, `jmp`, `jcc`) costs about
//! 1 µs per hit on the machines measured; one on an instruction it must single-step (the `sub`
//! that opens `SSL_read`) 10-13 µs. OpenSSL 3's `SSL_read`/`SSL_read_ex` both call the internal
//! `ssl_read_internal`, whose first instruction is a `push` (likewise for writes), so the probes
//! go on the internal functions when both exported ones call the same function and it starts
//! with a `push`; otherwise on the exported entry points (the measured fallback).

use std::{collections::BTreeSet, os::unix::fs::MetadataExt as _, path::PathBuf};

use object::{Object, ObjectSection, ObjectSymbol};

/// Bytes of an exported function searched for the call to the internal one.
const CALL_SEARCH: usize = 64;

/// Which functions carry the read/write probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// `ssl_read_internal`/`ssl_write_internal` entries (a `push`: emulated).
    Internal,
    /// `SSL_read`/`SSL_write` entries (single-stepped where they open with a `sub`).
    Exported,
}

impl Placement {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Internal => "internal",
            Self::Exported => "exported",
        }
    }
}

/// One probe: a file offset in the library, and what the program must know of the function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbePoint {
    pub file_offset: u64,
    /// `sensor_ebpf::tls::cookie` bits.
    pub cookie: u64,
}

/// Where all probes of one library go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probes {
    pub placement: Placement,
    pub read: ProbePoint,
    pub write: ProbePoint,
    /// `SSL_free`, on its first emulated instruction when the bytes say where that is.
    pub free: ProbePoint,
    /// The free probe sits on an emulated instruction.
    pub free_emulated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("not an ELF shared library: {0}")]
    Elf(#[from] object::Error),
    #[error("the library exports no {0}")]
    MissingSymbol(&'static str),
    #[error("{0} lies outside the library's sections")]
    Address(&'static str),
}

/// An exported function: its virtual address and its first bytes (up to [`CALL_SEARCH`]).
struct Function<'a> {
    address: u64,
    file_offset: u64,
    bytes: &'a [u8],
}

/// Where distributions install OpenSSL 3's libssl (Debian and Ubuntu, Fedora and RHEL, Arch).
const SYSTEM_LIBSSL: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/usr/lib64/libssl.so.3",
    "/usr/lib/libssl.so.3",
];

/// The system's OpenSSL library files that exist here, once per file (device, inode): probed at
/// start whether or not a server maps one yet.
pub fn system_libraries() -> Vec<(PathBuf, (u64, u64))> {
    let mut found: Vec<(PathBuf, (u64, u64))> = Vec::new();
    for path in SYSTEM_LIBSSL {
        // A missing path is the common case (another distribution's layout).
        if let Ok(meta) = std::fs::metadata(path) {
            let id = (meta.dev(), meta.ino());
            if !found.iter().any(|(_, seen)| *seen == id) {
                found.push((PathBuf::from(path), id));
            }
        }
    }
    found
}

/// Works out the probes for the library in `data` (the whole file).
pub fn probes(data: &[u8]) -> Result<Probes, LibraryError> {
    let file = object::File::parse(data)?;
    let function = |name: &'static str| -> Result<Function<'_>, LibraryError> {
        let address = file
            .dynamic_symbols()
            .find(|s| s.name() == Ok(name) && s.is_definition())
            .map(|s| s.address())
            .ok_or(LibraryError::MissingSymbol(name))?;
        at(&file, data, address).ok_or(LibraryError::Address(name))
    };
    let read = function("SSL_read")?;
    let write = function("SSL_write")?;
    let free = function("SSL_free")?;
    let internal = |a: &Function<'_>, b: Option<Function<'_>>| -> Option<u64> {
        let b = b?;
        let common: BTreeSet<u64> = call_targets(a)
            .intersection(&call_targets(&b))
            .copied()
            .collect();
        common.into_iter().find_map(|target| {
            let f = at(&file, data, target)?;
            starts_with_push(f.bytes).then_some(f.file_offset)
        })
    };
    let read_internal = internal(&read, function("SSL_read_ex").ok());
    let write_internal = internal(&write, function("SSL_write_ex").ok());
    use sensor_ebpf::tls::cookie;
    let (placement, read, write) = match (read_internal, write_internal) {
        (Some(r), Some(w)) => (
            Placement::Internal,
            ProbePoint {
                file_offset: r,
                cookie: cookie::INTERNAL,
            },
            ProbePoint {
                file_offset: w,
                cookie: cookie::INTERNAL | cookie::WRITE,
            },
        ),
        _ => (
            Placement::Exported,
            ProbePoint {
                file_offset: read.file_offset,
                cookie: 0,
            },
            ProbePoint {
                file_offset: write.file_offset,
                cookie: cookie::WRITE,
            },
        ),
    };
    let (free_offset, free_emulated) = free_spot(free.bytes);
    Ok(Probes {
        placement,
        read,
        write,
        free: ProbePoint {
            file_offset: free.file_offset + free_offset,
            cookie: 0,
        },
        free_emulated,
    })
}

/// The function at virtual address `address`: its file offset and first bytes.
fn at<'a>(file: &object::File<'a>, data: &'a [u8], address: u64) -> Option<Function<'a>> {
    let section = file
        .sections()
        .find(|s| s.address() <= address && address < s.address().saturating_add(s.size()))?;
    let (start, size) = section.file_range()?;
    let offset = start.checked_add(address - section.address())?;
    let end = start.checked_add(size)?;
    let len = (end - offset).min(CALL_SEARCH as u64);
    let from = usize::try_from(offset).ok()?;
    let bytes = data.get(from..from.checked_add(usize::try_from(len).ok()?)?)?;
    Some(Function {
        address,
        file_offset: offset,
        bytes,
    })
}

/// Targets of every `call rel32` (`e8`) or `jmp rel32` (`e9`) that the function's first bytes
/// could hold. A stray `e8` byte inside another instruction gives a wrong target too: the caller
/// keeps only targets that two functions share and that start like a function.
fn call_targets(f: &Function<'_>) -> BTreeSet<u64> {
    let mut targets = BTreeSet::new();
    for (i, window) in f.bytes.windows(5).enumerate() {
        if window[0] == 0xe8 || window[0] == 0xe9 {
            let rel = i32::from_le_bytes([window[1], window[2], window[3], window[4]]);
            let next = f.address.wrapping_add(i as u64 + 5);
            targets.insert(next.wrapping_add_signed(i64::from(rel)));
        }
    }
    targets
}

/// `push reg` (`50`-`57`, or `41 50`-`41 57` for r8-r15): an instruction the kernel emulates.
fn starts_with_push(bytes: &[u8]) -> bool {
    matches!(bytes, [0x50..=0x57, ..] | [0x41, 0x50..=0x57, ..])
}

/// Where to probe `SSL_free`: OpenSSL 3.0 opens it with `test rdi, rdi; je` (the `je` is
/// emulated and the SSL pointer is still in rdi there); a `push` entry is emulated as it is;
/// anything else is probed at the entry (single-stepped, once per connection).
fn free_spot(bytes: &[u8]) -> (u64, bool) {
    match bytes {
        [0x48, 0x85, 0xff, 0x0f, 0x84, ..] | [0x48, 0x85, 0xff, 0x74, ..] => (3, true),
        _ if starts_with_push(bytes) => (0, true),
        _ => (0, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";

    #[test]
    fn call_targets_decode_rel32() {
        // sub rsp, 8; call +0x10 (from 0x1009); ret
        let bytes = [0x48, 0x83, 0xec, 0x08, 0xe8, 0x10, 0, 0, 0, 0xc3];
        let f = Function {
            address: 0x1000,
            file_offset: 0x1000,
            bytes: &bytes,
        };
        assert!(call_targets(&f).contains(&0x1019));
        let back = [0xe8, 0xf0, 0xff, 0xff, 0xff];
        let f = Function {
            address: 0x1000,
            file_offset: 0,
            bytes: &back,
        };
        assert_eq!(call_targets(&f), BTreeSet::from([0xff5]));
    }

    #[test]
    fn free_spot_follows_the_bytes() {
        assert_eq!(
            free_spot(&[0x48, 0x85, 0xff, 0x0f, 0x84, 0, 0, 0, 0]),
            (3, true)
        );
        assert_eq!(free_spot(&[0x41, 0x55, 0x48]), (0, true));
        assert_eq!(free_spot(&[0x48, 0x83, 0xec, 0x18]), (0, false));
        assert_eq!(free_spot(&[]), (0, false));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(probes(b"").is_err());
        assert!(probes(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]).is_err());
    }

    /// Debian's OpenSSL 3.0 (the library the live tests use): the internal functions are found.
    #[test]
    fn debian_libssl_gets_the_internal_placement() {
        let Ok(data) = std::fs::read(LIBSSL) else {
            eprintln!("skipped: {LIBSSL} is not installed");
            return;
        };
        let probes = probes(&data).unwrap();
        assert_eq!(probes.placement, Placement::Internal);
        assert!(probes.free_emulated);
        assert_ne!(probes.read.file_offset, probes.write.file_offset);
        for point in [probes.read, probes.write] {
            let at = point.file_offset as usize;
            assert!(starts_with_push(&data[at..]));
        }
    }
}
