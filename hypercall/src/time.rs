//! Xen system time from a `vcpu_time_info` (the "pvclock" in `shared_info`).
//!
//! Xen keeps, per vCPU, a snapshot `(tsc_timestamp, system_time)` and a scale
//! `(tsc_to_system_mul, tsc_shift)`; the current system time (nanoseconds since the
//! domain's clock started, the time base of `VCPUOP_set_singleshot_timer` and
//! `set_timer_op`) is
//!
//! ```text
//! delta = tsc - tsc_timestamp
//! delta = tsc_shift >= 0 ? delta << tsc_shift : delta >> -tsc_shift
//! now   = system_time + (delta * tsc_to_system_mul) >> 32
//! ```
//!
//! Xen bumps `version` to an odd value while it rewrites the snapshot and to the
//! next even value after: a reader retries until it saw the same even version
//! before and after reading the fields.

use crate::abi::shared_info as si;
use crate::shmem::{rmb, SharedMem};

/// One consistent copy of a `vcpu_time_info`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeInfo {
    /// TSC value at the snapshot.
    pub tsc_timestamp: u64,
    /// System time (ns) at the snapshot.
    pub system_time: u64,
    /// TSC-to-ns multiplier (32.32 fixed point).
    pub tsc_to_system_mul: u32,
    /// Shift applied to the TSC delta before multiplying.
    pub tsc_shift: i8,
}

impl TimeInfo {
    /// System time in ns at TSC value `tsc`. A `tsc` before the snapshot (a vCPU
    /// that moved, or a TSC read before the snapshot was taken) gives the
    /// snapshot's time, never a time in the past of it.
    pub fn at(&self, tsc: u64) -> u64 {
        let mut delta = tsc.saturating_sub(self.tsc_timestamp);
        let shift = i32::from(self.tsc_shift);
        if shift >= 0 {
            delta = delta.checked_shl(shift as u32).unwrap_or(0);
        } else {
            delta = delta.checked_shr((-shift) as u32).unwrap_or(0);
        }
        let ns = ((u128::from(delta) * u128::from(self.tsc_to_system_mul)) >> 32) as u64;
        self.system_time.wrapping_add(ns)
    }
}

/// Reads vCPU `vcpu`'s `vcpu_time_info` from `shared_info` consistently (version
/// protocol above). `None` if Xen kept the record busy for `max_tries` attempts or
/// `vcpu` has no slot in `shared_info`.
pub fn read_time_info(
    shared_info: &SharedMem<'_>,
    vcpu: usize,
    max_tries: usize,
) -> Option<TimeInfo> {
    if vcpu >= si::LEGACY_MAX_VCPUS {
        return None;
    }
    let base = si::vcpu_info(vcpu) + si::VCPU_TIME;
    if !shared_info.contains(base, 32) {
        return None;
    }
    for _ in 0..max_tries {
        let v1 = shared_info.load_u32(base + si::TIME_VERSION);
        rmb();
        let info = TimeInfo {
            tsc_timestamp: shared_info.load_u64(base + si::TIME_TSC_TIMESTAMP),
            system_time: shared_info.load_u64(base + si::TIME_SYSTEM_TIME),
            tsc_to_system_mul: shared_info.load_u32(base + si::TIME_TSC_TO_SYSTEM_MUL),
            tsc_shift: shared_info.load_u8(base + si::TIME_TSC_SHIFT) as i8,
        };
        rmb();
        let v2 = shared_info.load_u32(base + si::TIME_VERSION);
        if v1 == v2 && v1.is_multiple_of(2) {
            return Some(info);
        }
        core::hint::spin_loop();
    }
    None
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::ptr::NonNull;
    use std::vec;

    #[test]
    fn scales_the_tsc_delta() {
        // 2 GHz TSC: shift -1 halves the delta (1 tick = 0.5 ns), mul 1.0.
        let t = TimeInfo {
            tsc_timestamp: 1000,
            system_time: 5_000,
            tsc_to_system_mul: 1 << 31, // 0.5
            tsc_shift: 1,
        };
        // delta 2000 << 1 = 4000, * 0.5 = 2000 ns.
        assert_eq!(t.at(3000), 7_000);
        let t2 = TimeInfo {
            tsc_shift: -2,
            tsc_to_system_mul: u32::MAX,
            ..t
        };
        // delta 4000 >> 2 = 1000, * (2^32-1)/2^32 = 999.99.. -> 999.
        assert_eq!(t2.at(5000), 5_999);
        // A TSC before the snapshot does not go back in time.
        assert_eq!(t.at(10), 5_000);
        // Absurd shifts from a hostile record do not panic.
        let t3 = TimeInfo {
            tsc_shift: 100,
            ..t
        };
        assert_eq!(t3.at(3000), 5_000);
        let t4 = TimeInfo {
            tsc_shift: -128,
            ..t
        };
        assert_eq!(t4.at(3000), 5_000);
    }

    #[test]
    fn reads_a_consistent_record_and_gives_up_on_odd_versions() {
        let mut backing = vec![0u64; 512];
        // SAFETY: `backing` outlives `mem` and is only accessed through it.
        let mem =
            unsafe { SharedMem::new(NonNull::new(backing.as_mut_ptr().cast()).unwrap(), 4096) };
        let base = si::vcpu_info(1) + si::VCPU_TIME;
        mem.store_u32(base + si::TIME_VERSION, 4);
        mem.store_u64(base + si::TIME_TSC_TIMESTAMP, 77);
        mem.store_u64(base + si::TIME_SYSTEM_TIME, 88);
        mem.store_u32(base + si::TIME_TSC_TO_SYSTEM_MUL, 99);
        mem.store_u8(base + si::TIME_TSC_SHIFT, (-3i8) as u8);
        let got = read_time_info(&mem, 1, 3).unwrap();
        assert_eq!(
            got,
            TimeInfo {
                tsc_timestamp: 77,
                system_time: 88,
                tsc_to_system_mul: 99,
                tsc_shift: -3
            }
        );
        mem.store_u32(base + si::TIME_VERSION, 5);
        assert_eq!(read_time_info(&mem, 1, 3), None);
        assert_eq!(read_time_info(&mem, 32, 3), None);
    }
}
