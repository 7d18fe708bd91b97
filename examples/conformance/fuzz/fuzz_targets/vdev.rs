//! Virtual block device names and numbers (xbd-front's `Vdev`, what `vdev=` in a
//! config and `virtual-device` in xenstore carry): parsing never panics, and anything
//! parsed shows as a string that parses back to the same number.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xbd_front::vdev::Vdev;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = core::str::from_utf8(data) {
        if let Ok(v) = Vdev::parse(s) {
            let shown = v.to_string();
            assert_eq!(Vdev::parse(&shown), Ok(v), "{s:?} shown as {shown:?}");
            let _ = v.name();
        }
        let _ = xbd_front::parse_devid(s);
    }
    if data.len() >= 4 {
        let n = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        if let Ok(v) = Vdev::from_number(n) {
            let shown = v.to_string();
            assert_eq!(Vdev::parse(&shown), Ok(v), "{n} shown as {shown:?}");
        }
    }
});
