//! Finding block devices: the entries of `device/vbd/`.

use hypercall::Platform;
use xenbus::{Store, Xenstore};

use crate::error::Error;
use crate::vdev::Vdev;

/// One entry of `device/vbd/`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct VbdEntry {
    /// The directory name as a number (the id [`crate::Device::new`] takes).
    pub devid: u32,
    /// The virtual device number decoded, when it is a valid one (reserved numbers
    /// from `2 << 28` up are `None`).
    pub vdev: Option<Vdev>,
}

/// Lists `device/vbd/` into `out` in directory order and returns how many entries
/// exist (it may exceed `out.len()`; only the first `out.len()` are stored). Entries
/// whose names are not decimal numbers are skipped. A missing directory means no
/// devices.
///
/// Never inlined: its 4 KiB listing buffer then lives in its own frame only while
/// it runs, not in the caller's for the whole device connect (docs/stack.md).
#[inline(never)]
pub fn discover<Q: Platform>(xs: &mut Xenstore<Q>, out: &mut [VbdEntry]) -> Result<usize, Error> {
    let mut buf = [0u8; 4096];
    let entries = match xs.directory("device/vbd", &mut buf) {
        Ok(e) => e,
        Err(xenbus::Error::Xenstore(xenbus::ErrnoName::Enoent))
        | Err(xenbus::Error::MissingKey(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut n = 0usize;
    for name in entries {
        let Some(devid) = parse_devid(name) else {
            continue;
        };
        if let Some(slot) = out.get_mut(n) {
            *slot = VbdEntry {
                devid,
                vdev: Vdev::from_number(devid).ok(),
            };
        }
        n += 1;
    }
    Ok(n)
}

/// A directory name that is a plain decimal `u32` (no sign, no leading zeros).
pub fn parse_devid(name: &str) -> Option<u32> {
    let b = name.as_bytes();
    // Digits only (`parse` alone takes a leading `+`) and no leading zero; `parse`
    // refuses the empty name and values past `u32::MAX`.
    if !b.iter().all(u8::is_ascii_digit) || (b.len() > 1 && b.first() == Some(&b'0')) {
        return None;
    }
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;
    use xen_conformance::xenstore::StoreServer;
    use xen_conformance::HostPlatform;

    fn entry(devid: u32) -> VbdEntry {
        VbdEntry {
            devid,
            vdev: Vdev::from_number(devid).ok(),
        }
    }

    /// Every numeric entry is counted, only the first `out.len()` are stored (in
    /// directory order), names that are not decimal numbers are skipped, reserved
    /// numbers have no `vdev`, and a missing directory is no device.
    #[test]
    fn discover_lists_the_numeric_entries() {
        let host = HostPlatform::new();
        let server = StoreServer::new(&host);
        let mut xs = Xenstore::from_hvm_params(host.clone()).unwrap();
        let mut out = [entry(0); 8];
        assert_eq!(discover(&mut xs, &mut out).unwrap(), 0, "no device/vbd");
        assert_eq!(out, [entry(0); 8], "nothing stored");
        let home = server.home();
        for name in ["768", "51712", "xvda", "07", "536870912", "5632"] {
            server.write(&std::format!("{home}/device/vbd/{name}"), b"");
        }
        let want = [768, 51712, 536_870_912, 5632];
        assert_eq!(discover(&mut xs, &mut out).unwrap(), 4);
        let mut got: Vec<u32> = out[..4].iter().map(|e| e.devid).collect();
        got.sort_unstable();
        let mut sorted = want;
        sorted.sort_unstable();
        assert_eq!(got, sorted);
        for e in &out[..4] {
            assert_eq!(*e, entry(e.devid));
        }
        assert!(out[..4]
            .iter()
            .any(|e| e.devid == 536_870_912 && e.vdev.is_none()));
        assert!(out[..4].iter().any(|e| e.devid == 768 && e.vdev.is_some()));
        // A short `out`: the count is still 4, the first two entries are stored.
        let mut two = [entry(1); 2];
        assert_eq!(discover(&mut xs, &mut two).unwrap(), 4);
        assert_eq!(two, [out[0], out[1]]);
        assert_eq!(discover(&mut xs, &mut []).unwrap(), 4);
    }

    #[test]
    fn devid_names() {
        assert_eq!(parse_devid("51712"), Some(51712));
        assert_eq!(parse_devid("0"), Some(0));
        assert_eq!(parse_devid("768"), Some(768));
        assert_eq!(parse_devid("4294967295"), Some(u32::MAX));
        for bad in [
            "",
            "-1",
            "+5",
            "0x301",
            "07",
            "4294967296",
            "12a",
            " 1",
            "xvda",
        ] {
            assert_eq!(parse_devid(bad), None, "{bad}");
        }
    }
}
