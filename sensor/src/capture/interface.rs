//! Network interfaces: which ones to capture on and how their packets are framed.

use std::{fs, path::Path};

use sensor_ebpf::iface;

use super::CaptureError;

const SYS_CLASS_NET: &str = "/sys/class/net";
const IFF_UP: u32 = 0x1;
const ARPHRD_ETHER: u32 = 1;
const ARPHRD_LOOPBACK: u32 = 772;

/// An interface to capture on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    pub is_loopback: bool,
    /// Bytes before the IP header in captured packets.
    pub l2_len: u32,
}

impl Interface {
    /// Looks an interface up by name in the current network namespace.
    pub fn by_name(name: &str) -> Result<Self, CaptureError> {
        let dir = Path::new(SYS_CLASS_NET).join(name);
        if name.is_empty() || name.contains('/') || !dir.exists() {
            return Err(CaptureError::UnknownInterface {
                name: name.to_owned(),
                available: list_names().join(", "),
            });
        }
        let ifindex = read_number(&dir.join("ifindex"))?;
        let link_type = read_number(&dir.join("type"))?;
        let l2_len = match link_type {
            ARPHRD_ETHER | ARPHRD_LOOPBACK => 14,
            // Devices without a link-layer header: tun, WireGuard, IP-in-IP, GRE, SIT.
            65534 | 768 | 769 | 776 | 778 | 823 => 0,
            other => {
                return Err(CaptureError::UnsupportedInterface {
                    name: name.to_owned(),
                    reason: format!("link type {other} is neither Ethernet nor a pure IP device"),
                });
            }
        };
        Ok(Self {
            name: name.to_owned(),
            ifindex,
            is_loopback: link_type == ARPHRD_LOOPBACK,
            l2_len,
        })
    }

    /// Every interface that is up and whose framing the sensor understands.
    pub fn all_up() -> Result<Vec<Self>, CaptureError> {
        let mut found = Vec::new();
        for name in list_names() {
            let dir = Path::new(SYS_CLASS_NET).join(&name);
            let up = read_hex(&dir.join("flags")).is_ok_and(|flags| flags & IFF_UP != 0);
            if !up {
                continue;
            }
            match Self::by_name(&name) {
                Ok(interface) => found.push(interface),
                Err(e) => log::warn!("skipping interface {name}: {e}"),
            }
        }
        if found.is_empty() {
            return Err(CaptureError::Config("no interface is up".into()));
        }
        Ok(found)
    }

    /// The `IFACES` map value for this interface; `capture_egress` is false where only ingress
    /// is to be kept (loopback in socket mode).
    pub fn map_bits(&self, capture_egress: bool) -> u32 {
        let mut bits = self.l2_len & iface::L2_LEN_MASK;
        if !capture_egress {
            bits |= iface::IGNORE_EGRESS;
        }
        bits
    }
}

fn list_names() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(SYS_CLASS_NET)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|entry| entry.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn read_text(path: &Path) -> Result<String, CaptureError> {
    fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .map_err(|e| CaptureError::Io("reading interface attributes", e))
}

fn read_number(path: &Path) -> Result<u32, CaptureError> {
    let text = read_text(path)?;
    text.parse()
        .map_err(|_| CaptureError::Config(format!("{}: not a number: {text}", path.display())))
}

fn read_hex(path: &Path) -> Result<u32, CaptureError> {
    let text = read_text(path)?;
    u32::from_str_radix(text.trim_start_matches("0x"), 16)
        .map_err(|_| CaptureError::Config(format!("{}: not a hex number: {text}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_and_framed_like_ethernet() {
        let lo = Interface::by_name("lo").unwrap();
        assert!(lo.is_loopback);
        assert_eq!(lo.l2_len, 14);
        assert_eq!(lo.map_bits(false), 14 | iface::IGNORE_EGRESS);
        assert!(Interface::all_up().unwrap().iter().any(|i| i.name == "lo"));
    }

    #[test]
    fn unknown_interface_names_the_ones_that_exist() {
        let err = Interface::by_name("nosuchif0").unwrap_err().to_string();
        assert!(err.contains("nosuchif0") && err.contains("lo"), "{err}");
        assert!(Interface::by_name("../lo").is_err());
    }
}
