//! Xen system time for a KVM guest: `vcpu_time_info` in `shared_info`.
//!
//! A guest computes `now = system_time + ((tsc - tsc_timestamp) scaled by
//! tsc_shift) * tsc_to_system_mul >> 32` (`xen.h`), reading the record under its
//! `version` (odd while it changes). The runner pairs a reading of the guest's TSC
//! (`KVM_GET_MSRS` of `IA32_TSC`) with the model's system time taken at the same
//! moment, and refreshes the pair often: when `shared_info` is mapped, before every
//! upcall, after every wait, and on exits once [`REFRESH`] has passed, because the
//! TSC of a nested host may not be stable.

use std::time::Duration;

use hypercall::abi::shared_info as si;
use hypercall::SharedMem;

/// Longest the runner lets a `vcpu_time_info` record age while the guest exits.
pub const REFRESH: Duration = Duration::from_millis(50);

/// `tsc_to_system_mul` and `tsc_shift` for a TSC of `khz` kHz (Xen's
/// `set_time_scale`): ticks shifted by `shift`, times `mul / 2^32`, are nanoseconds.
pub fn time_scale(khz: u32) -> (u32, i8) {
    const NS_PER_S: u64 = 1_000_000_000;
    let mut tps = u64::from(khz.max(1)) * 1000;
    let mut shift: i8 = 0;
    while tps > 2 * NS_PER_S {
        tps >>= 1;
        shift -= 1;
    }
    while tps <= NS_PER_S {
        tps <<= 1;
        shift += 1;
    }
    // NS_PER_S < tps <= 2 * NS_PER_S, so the quotient is below 2^32.
    let mul = ((NS_PER_S << 32) / tps) as u32;
    (mul, shift)
}

/// Nanoseconds that `delta` TSC ticks make under `(mul, shift)` (what a guest does).
pub fn ticks_to_ns(delta: u64, mul: u32, shift: i8) -> u64 {
    let d = if shift >= 0 {
        delta << shift
    } else {
        delta >> (-shift)
    };
    ((u128::from(d) * u128::from(mul)) >> 32) as u64
}

/// Writes vCPU `vcpu`'s `vcpu_time_info` in `shinfo`: the TSC reading `tsc` was
/// taken at system time `system_ns`. Bumps `version` odd, writes, bumps it even.
pub fn publish(shinfo: &SharedMem<'_>, vcpu: usize, tsc: u64, system_ns: u64, mul: u32, shift: i8) {
    let t = si::vcpu_info(vcpu) + si::VCPU_TIME;
    let v = shinfo.load_u32(t + si::TIME_VERSION);
    let odd = (v | 1).wrapping_add(if v & 1 == 1 { 2 } else { 0 });
    shinfo.store_u32(t + si::TIME_VERSION, odd);
    hypercall::shmem::wmb();
    shinfo.store_u64(t + si::TIME_TSC_TIMESTAMP, tsc);
    shinfo.store_u64(t + si::TIME_SYSTEM_TIME, system_ns);
    shinfo.store_u32(t + si::TIME_TSC_TO_SYSTEM_MUL, mul);
    shinfo.store_u8(t + si::TIME_TSC_SHIFT, shift as u8);
    // Not TSC_STABLE: a nested host's TSC may drift (the record is refreshed).
    shinfo.store_u8(t + si::TIME_FLAGS, 0);
    hypercall::shmem::wmb();
    shinfo.store_u32(t + si::TIME_VERSION, odd.wrapping_add(1));
}

/// Writes the wall clock of system time 0 (`wc_sec`, `wc_nsec`, `wc_sec_hi`),
/// under `wc_version`.
pub fn publish_wallclock(shinfo: &SharedMem<'_>, boot_unix_ns: u128) {
    let v = shinfo.load_u32(si::WC_VERSION);
    let odd = v | 1;
    shinfo.store_u32(si::WC_VERSION, odd);
    hypercall::shmem::wmb();
    let secs = (boot_unix_ns / 1_000_000_000) as u64;
    shinfo.store_u32(si::WC_SEC, secs as u32);
    shinfo.store_u32(si::WC_NSEC, (boot_unix_ns % 1_000_000_000) as u32);
    shinfo.store_u32(si::WC_SEC_HI, (secs >> 32) as u32);
    hypercall::shmem::wmb();
    shinfo.store_u32(si::WC_VERSION, odd.wrapping_add(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_turns_ticks_into_nanoseconds() {
        for khz in [1_000, 999_999, 1_000_000, 2_599_998, 3_000_000, 5_000_000] {
            let (mul, shift) = time_scale(khz);
            assert!(mul >= 1 << 31, "{khz}: mul {mul:#x} keeps precision");
            // One second of ticks is one second, within a few ns per second.
            let ns = ticks_to_ns(u64::from(khz) * 1000, mul, shift);
            assert!(ns.abs_diff(1_000_000_000) < 10, "{khz} kHz: {ns}");
            // An hour of ticks: still within a few microseconds.
            let ns = ticks_to_ns(u64::from(khz) * 1000 * 3600, mul, shift);
            assert!(ns.abs_diff(3_600_000_000_000) < 20_000, "{khz} kHz: {ns}");
        }
        assert_eq!(time_scale(2_599_998).1, -1);
        assert_eq!(time_scale(1_000_000).1, 1);
    }

    #[test]
    fn publish_leaves_an_even_version_and_the_fields() {
        let page = xen_model::mem::HostPage::new().unwrap();
        let s = page.mem();
        let t = si::vcpu_info(0) + si::VCPU_TIME;
        publish(&s, 0, 1234, 5678, 0x8000_0000, -1);
        assert!(s.load_u32(t).is_multiple_of(2));
        let v1 = s.load_u32(t);
        publish(&s, 0, 1, 2, 3, 4);
        assert!(s.load_u32(t) > v1 && s.load_u32(t).is_multiple_of(2));
        assert_eq!(s.load_u64(t + si::TIME_TSC_TIMESTAMP), 1);
        assert_eq!(s.load_u64(t + si::TIME_SYSTEM_TIME), 2);
        assert_eq!(s.load_u32(t + si::TIME_TSC_TO_SYSTEM_MUL), 3);
        assert_eq!(s.load_u8(t + si::TIME_TSC_SHIFT), 4);
        publish_wallclock(&s, 1_700_000_000_123_456_789);
        assert_eq!(s.load_u32(si::WC_SEC), 1_700_000_000);
        assert_eq!(s.load_u32(si::WC_NSEC), 123_456_789);
        assert!(s.load_u32(si::WC_VERSION).is_multiple_of(2));
    }
}
