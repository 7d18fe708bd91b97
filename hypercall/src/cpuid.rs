//! Finding Xen through CPUID (`arch-x86/cpuid.h`), independent of how CPUID is
//! executed so the logic is testable anywhere.
//!
//! Xen's leaves start at the first free `0x100`-aligned base from `0x4000_0000`
//! (e.g. `0x4000_0100` when Viridian leaves come first):
//! - `base`:     eax = largest Xen leaf, ebx/ecx/edx = `"XenVMMXenVMM"`;
//! - `base + 1`: eax = `major << 16 | minor`;
//! - `base + 2`: eax = number of hypercall pages, ebx = MSR that installs a
//!   hypercall page at the guest-physical address written to it.

use crate::xen::XenVersion;

/// `XEN_CPUID_FIRST_LEAF`
pub const FIRST_LEAF: u32 = 0x4000_0000;
/// Scan stops before this base (as Linux's `xen_cpuid_base` does).
pub const SCAN_END: u32 = 0x4001_0000;
/// Bases are `0x100` apart.
pub const STEP: u32 = 0x100;
/// `XEN_CPUID_SIGNATURE_EBX` ("XenV")
pub const SIGNATURE_EBX: u32 = 0x566e_6558;
/// `XEN_CPUID_SIGNATURE_ECX` ("MMXe")
pub const SIGNATURE_ECX: u32 = 0x6558_4d4d;
/// `XEN_CPUID_SIGNATURE_EDX` ("nVMM")
pub const SIGNATURE_EDX: u32 = 0x4d4d_566e;

/// The four registers one CPUID leaf returns.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuidRegs {
    /// eax
    pub eax: u32,
    /// ebx
    pub ebx: u32,
    /// ecx
    pub ecx: u32,
    /// edx
    pub edx: u32,
}

/// What CPUID says about the Xen we run on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct XenCpuid {
    /// The base leaf (`0x4000_0000`, `0x4000_0100`, ...).
    pub base: u32,
    /// Largest Xen leaf.
    pub max_leaf: u32,
    /// Version from `base + 1`.
    pub version: XenVersion,
    /// Number of hypercall pages (`base + 2` eax; always at least 1 on real Xen).
    pub hypercall_pages: u32,
    /// The MSR to write the hypercall page's guest-physical address to.
    pub hypercall_msr: u32,
}

/// Scans the hypervisor leaves with `cpuid(leaf)` for Xen's signature. `None` if
/// there is no Xen, or its leaves stop before `base + 2`.
pub fn find_xen(mut cpuid: impl FnMut(u32) -> CpuidRegs) -> Option<XenCpuid> {
    let mut base = FIRST_LEAF;
    while base < SCAN_END {
        let r = cpuid(base);
        if r.ebx == SIGNATURE_EBX && r.ecx == SIGNATURE_ECX && r.edx == SIGNATURE_EDX {
            if r.eax < base + 2 {
                return None;
            }
            let v = cpuid(base + 1);
            let h = cpuid(base + 2);
            return Some(XenCpuid {
                base,
                max_leaf: r.eax,
                version: XenVersion {
                    major: (v.eax >> 16) as u16,
                    minor: v.eax as u16,
                },
                hypercall_pages: h.eax,
                hypercall_msr: h.ebx,
            });
        }
        base += STEP;
    }
    None
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn xen_at(base: u32, max_off: u32) -> impl FnMut(u32) -> CpuidRegs {
        move |leaf| match leaf.checked_sub(base) {
            Some(0) => CpuidRegs {
                eax: base + max_off,
                ebx: SIGNATURE_EBX,
                ecx: SIGNATURE_ECX,
                edx: SIGNATURE_EDX,
            },
            Some(1) => CpuidRegs {
                eax: (4 << 16) | 17,
                ..Default::default()
            },
            Some(2) => CpuidRegs {
                eax: 1,
                ebx: 0x4000_0000,
                ..Default::default()
            },
            // Viridian (Hyper-V) leaves in front, garbage elsewhere.
            _ if leaf == FIRST_LEAF => CpuidRegs {
                eax: 0x4000_0006,
                ebx: 0x7263_694d,
                ecx: 0x666f_736f,
                edx: 0x7648_2074,
            },
            _ => CpuidRegs {
                eax: leaf,
                ebx: 1,
                ecx: 2,
                edx: 3,
            },
        }
    }

    #[test]
    fn signature_spells_xenvmmxenvmm() {
        let mut s = Vec::new();
        for r in [SIGNATURE_EBX, SIGNATURE_ECX, SIGNATURE_EDX] {
            s.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&s, b"XenVMMXenVMM");
    }

    #[test]
    fn finds_xen_at_first_or_shifted_base() {
        for base in [0x4000_0000, 0x4000_0100, 0x4000_ff00] {
            let x = find_xen(xen_at(base, 5)).unwrap();
            assert_eq!(x.base, base);
            assert_eq!(x.max_leaf, base + 5);
            assert_eq!(
                x.version,
                XenVersion {
                    major: 4,
                    minor: 17
                }
            );
            assert_eq!((x.hypercall_pages, x.hypercall_msr), (1, 0x4000_0000));
        }
    }

    #[test]
    fn scans_in_0x100_steps_and_stops_at_0x40010000() {
        let mut asked = Vec::new();
        let r = find_xen(|leaf| {
            asked.push(leaf);
            CpuidRegs::default()
        });
        assert_eq!(r, None);
        assert_eq!(asked.len(), 256);
        assert_eq!(asked[0], 0x4000_0000);
        assert_eq!(asked[1], 0x4000_0100);
        assert_eq!(*asked.last().unwrap(), 0x4000_ff00);
        assert_eq!(find_xen(xen_at(0x4001_0000, 5)), None, "beyond the scan");
    }

    #[test]
    fn refuses_xen_without_the_hypercall_leaf() {
        assert_eq!(find_xen(xen_at(0x4000_0100, 1)), None);
        assert!(find_xen(xen_at(0x4000_0100, 2)).is_some());
    }

    #[test]
    fn ignores_other_hypervisors() {
        // KVM's signature.
        let kvm = |leaf| {
            if leaf == FIRST_LEAF {
                CpuidRegs {
                    eax: 0x4000_0001,
                    ebx: 0x4b4d_564b,
                    ecx: 0x564b_4d56,
                    edx: 0x4d,
                }
            } else {
                CpuidRegs::default()
            }
        };
        assert_eq!(find_xen(kvm), None);
    }
}
