//! The kernel's struct layouts from its BTF (`/sys/kernel/btf/vmlinux`): the member offsets the
//! TLS probes follow from the current task and a socket fd to the socket's addresses.
//!
//! The eBPF programs are built without CO-RE relocations, so user space looks the offsets up at
//! start and hands them over in `TlsConfig::kernel`. Only the little BTF needs here is parsed:
//! type records, struct and union members (anonymous ones searched through), typedefs.

use sensor_ebpf::tls::koff;

/// Where the kernel publishes its own BTF.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("not BTF data (bad header)")]
    Header,
    #[error("BTF type {0} is cut short or of an unknown kind")]
    Type(u32),
    #[error("the kernel's BTF has no {0}")]
    Missing(String),
    #[error("{0} lies at a bit offset, not a byte")]
    Bitfield(String),
}

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Parsed enough to walk types: where each type record starts.
pub struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Offset of type id `i + 1` in `types`.
    starts: Vec<usize>,
}

struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    vlen: usize,
    size_or_type: u32,
    /// Offset of the record's trailing data in `types`.
    extra: usize,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl<'a> Btf<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Self, BtfError> {
        if data.get(..2) != Some(&0xeb9f_u16.to_le_bytes()[..]) {
            return Err(BtfError::Header);
        }
        let field = |at| u32_at(data, at).map(|v| v as usize).ok_or(BtfError::Header);
        let hdr_len = field(4)?;
        let (type_off, type_len, str_off, str_len) =
            (field(8)?, field(12)?, field(16)?, field(20)?);
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            data.get(start..start.checked_add(len)?)
        };
        let types = section(type_off, type_len).ok_or(BtfError::Header)?;
        let strings = section(str_off, str_len).ok_or(BtfError::Header)?;
        let mut starts = Vec::new();
        let mut at = 0;
        while at < types.len() {
            let id = starts.len() as u32 + 1;
            starts.push(at);
            let info = u32_at(types, at + 4).ok_or(BtfError::Type(id))?;
            let vlen = (info & 0xffff) as usize;
            let extra = match (info >> 24) & 0x1f {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                2 | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | 12 | 16
                | KIND_TYPE_TAG => 0,
                _ => return Err(BtfError::Type(id)),
            };
            at += 12 + extra;
        }
        if at != types.len() {
            return Err(BtfError::Type(starts.len() as u32));
        }
        Ok(Self {
            types,
            strings,
            starts,
        })
    }

    fn get(&self, id: u32) -> Option<Type> {
        let at = *self.starts.get((id as usize).checked_sub(1)?)?;
        let info = u32_at(self.types, at + 4)?;
        Some(Type {
            name_off: u32_at(self.types, at)?,
            kind: (info >> 24) & 0x1f,
            kind_flag: info >> 31 == 1,
            vlen: (info & 0xffff) as usize,
            size_or_type: u32_at(self.types, at + 8)?,
            extra: at + 12,
        })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    /// The struct (or union) named `name`, through a typedef if that is what has the name.
    fn composite(&self, name: &str) -> Option<u32> {
        (1..=self.starts.len() as u32).find_map(|id| {
            let t = self.get(id)?;
            if self.name(t.name_off) != name.as_bytes() {
                return None;
            }
            match t.kind {
                KIND_STRUCT | KIND_UNION if t.vlen > 0 => Some(id),
                KIND_TYPEDEF => self.strip(t.size_or_type),
                _ => None,
            }
        })
    }

    /// The struct or union behind typedefs and qualifiers.
    fn strip(&self, mut id: u32) -> Option<u32> {
        for _ in 0..16 {
            let t = self.get(id)?;
            match t.kind {
                KIND_STRUCT | KIND_UNION => return Some(id),
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type;
                }
                _ => return None,
            }
        }
        None
    }

    /// Bit offset of member `name` in struct `id`, searching anonymous members too.
    fn member_bits(&self, id: u32, name: &str, depth: u32) -> Option<u32> {
        let t = self.get(id)?;
        if depth > 8 || !matches!(t.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for i in 0..t.vlen {
            let at = t.extra + i * 12;
            let member_name = self.name(u32_at(self.types, at)?);
            let member_type = u32_at(self.types, at + 4)?;
            let raw = u32_at(self.types, at + 8)?;
            let bits = if t.kind_flag { raw & 0x00ff_ffff } else { raw };
            if member_name == name.as_bytes() {
                return Some(bits);
            }
            if member_name.is_empty()
                && let Some(inner) = self
                    .strip(member_type)
                    .and_then(|inner| self.member_bits(inner, name, depth + 1))
            {
                return Some(bits + inner);
            }
        }
        None
    }

    /// Byte offset of `member` in struct `name`.
    pub fn offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let what = || format!("{name}.{member}");
        let id = self
            .composite(name)
            .ok_or_else(|| BtfError::Missing(name.to_owned()))?;
        let bits = self
            .member_bits(id, member, 0)
            .ok_or_else(|| BtfError::Missing(what()))?;
        if bits % 8 != 0 {
            return Err(BtfError::Bitfield(what()));
        }
        Ok(bits / 8)
    }
}

/// The offsets `TlsConfig::kernel` needs, from this kernel's BTF.
pub fn socket_offsets(btf: &Btf<'_>) -> Result<[u32; koff::COUNT], BtfError> {
    let mut k = [0u32; koff::COUNT];
    let common = btf.offset("sock", "__sk_common")?;
    let skc = |member| btf.offset("sock_common", member).map(|o| o + common);
    k[koff::TASK_FILES] = btf.offset("task_struct", "files")?;
    k[koff::FILES_FDT] = btf.offset("files_struct", "fdt")?;
    k[koff::FDT_MAX_FDS] = btf.offset("fdtable", "max_fds")?;
    k[koff::FDT_FD] = btf.offset("fdtable", "fd")?;
    k[koff::FILE_PRIVATE_DATA] = btf.offset("file", "private_data")?;
    k[koff::SOCKET_SK] = btf.offset("socket", "sk")?;
    k[koff::SKC_FAMILY] = skc("skc_family")?;
    k[koff::SKC_NUM] = skc("skc_num")?;
    k[koff::SKC_DPORT] = skc("skc_dport")?;
    k[koff::SKC_DADDR] = skc("skc_daddr")?;
    k[koff::SKC_RCV_SADDR] = skc("skc_rcv_saddr")?;
    k[koff::SKC_V6_DADDR] = skc("skc_v6_daddr")?;
    k[koff::SKC_V6_RCV_SADDR] = skc("skc_v6_rcv_saddr")?;
    // possible_net_t holds the pointer first; sock_common.skc_net is that struct.
    k[koff::SKC_NET] = skc("skc_net")? + btf.offset("possible_net_t", "net")?;
    k[koff::NET_NS_INUM] = btf.offset("net", "ns")? + btf.offset("ns_common", "inum")?;
    Ok(k)
}

/// [`socket_offsets`] of the running kernel.
pub fn kernel_socket_offsets() -> Result<[u32; koff::COUNT], KernelBtfError> {
    let data = std::fs::read(VMLINUX).map_err(KernelBtfError::Read)?;
    Ok(socket_offsets(&Btf::parse(&data)?)?)
}

#[derive(Debug, thiserror::Error)]
pub enum KernelBtfError {
    #[error("reading {VMLINUX}")]
    Read(#[source] std::io::Error),
    #[error(transparent)]
    Btf(#[from] BtfError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
        let mut header = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        // types at 0 (13 bytes: a record cut short), strings empty
        for v in [0u32, 13, 13, 0] {
            header.extend_from_slice(&v.to_le_bytes());
        }
        header.extend_from_slice(&[0; 13]);
        assert!(Btf::parse(&header).is_err());
    }

    /// This machine's kernel: every offset is found and the well-known ones are where they
    /// always are (`sock_common` starts with the addresses).
    #[test]
    fn this_kernel_has_every_offset() {
        let Ok(data) = std::fs::read(VMLINUX) else {
            eprintln!("skipped: no {VMLINUX}");
            return;
        };
        let btf = Btf::parse(&data).unwrap();
        let k = socket_offsets(&btf).unwrap();
        assert_eq!(k[koff::SKC_DADDR], 0);
        assert_eq!(k[koff::SKC_RCV_SADDR], 4);
        assert_eq!(k[koff::SKC_DPORT], 12);
        assert_eq!(k[koff::SKC_NUM], 14);
        assert_eq!(k[koff::SKC_FAMILY], 16);
        assert_eq!(k[koff::SOCKET_SK], btf.offset("socket", "sk").unwrap());
        assert_eq!(k[koff::FDT_MAX_FDS], 0);
    }
}
