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
    if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if b.len() > 1 && b.first() == Some(&b'0') {
        return None;
    }
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
