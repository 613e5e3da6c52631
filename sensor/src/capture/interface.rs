//! Network interfaces: which ones to capture on and how their packets are framed.
//!
//! Interfaces are looked up through sockets (`if_nameindex`, `SIOCGIF*` ioctls), not /sys:
//! sockets answer for the calling thread's network namespace, /sys for the namespace it was
//! mounted in.

use std::{
    ffi::{CStr, CString},
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use super::CaptureError;

const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;

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
    /// Looks an interface up by name in the calling thread's network namespace.
    pub fn by_name(name: &str) -> Result<Self, CaptureError> {
        let unknown = || CaptureError::UnknownInterface {
            name: name.to_owned(),
            available: list_names().join(", "),
        };
        let c_name = CString::new(name).map_err(|_| unknown())?;
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(unknown());
        }
        // SAFETY: valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if ifindex == 0 {
            return Err(unknown());
        }
        let link_type = ioctl_ifreq(name, libc::SIOCGIFHWADDR)
            // SAFETY: SIOCGIFHWADDR fills the ifru_hwaddr member.
            .map(|req| unsafe { req.ifr_ifru.ifru_hwaddr.sa_family })
            .map_err(|e| CaptureError::Io("reading the interface's link type", e))?;
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
        let found = Self::up(true);
        if found.is_empty() {
            return Err(CaptureError::Config("no interface is up".into()));
        }
        Ok(found)
    }

    /// The interfaces that are up now; `warn`: log the ones skipped (once at start, not at
    /// every rescan).
    pub fn up(warn: bool) -> Vec<Self> {
        let mut found = Vec::new();
        for name in list_names() {
            let up = ioctl_ifreq(&name, libc::SIOCGIFFLAGS)
                // SAFETY: SIOCGIFFLAGS fills the ifru_flags member.
                .is_ok_and(|req| unsafe { req.ifr_ifru.ifru_flags } & libc::IFF_UP as i16 != 0);
            if !up {
                continue;
            }
            match Self::by_name(&name) {
                Ok(interface) => found.push(interface),
                Err(e) if warn => log::warn!("skipping interface {name}: {e}"),
                Err(_) => {}
            }
        }
        found
    }
}

/// Interface names of the calling thread's network namespace, sorted.
fn list_names() -> Vec<String> {
    let mut names = Vec::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry, or NULL on error; it is
    // released with if_freenameindex below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return names;
        }
        let mut entry = list;
        while (*entry).if_index != 0 && !(*entry).if_name.is_null() {
            names.push(
                CStr::from_ptr((*entry).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
    }
    names.sort();
    names
}

/// Runs one `SIOCGIF*` ioctl for `name` and returns the filled request.
fn ioctl_ifreq(name: &str, request: libc::Ioctl) -> io::Result<libc::ifreq> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq for this request and outlives the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), request, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_and_framed_like_ethernet() {
        let lo = Interface::by_name("lo").unwrap();
        assert!(lo.is_loopback);
        assert_eq!(lo.l2_len, 14);
        assert!(Interface::all_up().unwrap().iter().any(|i| i.name == "lo"));
    }

    #[test]
    fn unknown_interface_names_the_ones_that_exist() {
        let err = Interface::by_name("nosuchif0").unwrap_err().to_string();
        assert!(err.contains("nosuchif0") && err.contains("lo"), "{err}");
        assert!(Interface::by_name("../lo").is_err());
    }
}
