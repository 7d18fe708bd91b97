//! What a PVH guest finds instead of Xen: the CPUID leaves, the hypercall-page MSR
//! and the page's contents. Pure data, testable without KVM.
//!
//! - CPUID `0x4000_0000..=0x4000_0005` replace KVM's own hypervisor leaves
//!   ("KVMKVMKVM" would otherwise be found first): signature `XenVMMXenVMM`, the
//!   version, one hypercall page installed through MSR [`HYPERCALL_MSR`], and the
//!   HVM feature leaf with the vCPU and domain ids.
//! - The hypercall page: slot `nr` (32 bytes each) holds `mov $nr,%eax;
//!   out %eax,$HYPERCALL_PORT; ret`. Xen documents the page's contents as opaque
//!   (only "call page + 32 * nr with the register ABI" counts), so an I/O-port stub is
//!   as legitimate as Xen's own `vmcall` one, and every hypercall becomes a
//!   `KVM_EXIT_IO` the VMM serves. The immediate-port form keeps rdx (argument 3).

use hypercall::cpuid::{SIGNATURE_EBX, SIGNATURE_ECX, SIGNATURE_EDX};

/// The Xen leaves' base (no Viridian leaves before them).
pub const CPUID_BASE: u32 = 0x4000_0000;
/// Largest Xen leaf we answer (`XEN_CPUID_MAX_NUM_LEAVES` = 5 past the base).
pub const CPUID_MAX: u32 = CPUID_BASE + 5;
/// The MSR a guest writes its hypercall page's guest-physical address to (Xen's
/// choice without Viridian).
pub const HYPERCALL_MSR: u32 = 0x4000_0000;
/// The I/O port the stubs write the hypercall number to. Not 0x80 (POST / I/O
/// delay) and not 0xE9 (Xen's debug console).
pub const HYPERCALL_PORT: u16 = 0xF5;
/// Xen's debug-console port: every HVM/PVH domain may write bytes to it.
pub const DEBUGCON_PORT: u16 = 0xE9;
/// Hypercall slots in the page (4096 / 32).
pub const SLOTS: usize = 128;
/// `__HYPERVISOR_iret`: ud2 in an HVM page, as on Xen.
const HYPERCALL_IRET: usize = 23;

/// `XEN_HVM_CPUID_VCPU_ID_PRESENT` (leaf 4, eax bit 3)
const HVM_VCPU_ID_PRESENT: u32 = 1 << 3;
/// `XEN_HVM_CPUID_DOMID_PRESENT` (leaf 4, eax bit 4)
const HVM_DOMID_PRESENT: u32 = 1 << 4;

/// One CPUID leaf: function, index and the four registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// eax input.
    pub function: u32,
    /// ecx input (0 for these leaves).
    pub index: u32,
    /// Outputs eax, ebx, ecx, edx.
    pub regs: [u32; 4],
}

/// The Xen leaves for domain `domid`, vCPU `vcpu`, reporting Xen `major.minor`.
pub fn xen_leaves(version: (u16, u16), domid: u16, vcpu: u32) -> Vec<Leaf> {
    let leaf = |n: u32, regs: [u32; 4]| Leaf {
        function: CPUID_BASE + n,
        index: 0,
        regs,
    };
    vec![
        leaf(0, [CPUID_MAX, SIGNATURE_EBX, SIGNATURE_ECX, SIGNATURE_EDX]),
        leaf(
            1,
            [u32::from(version.0) << 16 | u32::from(version.1), 0, 0, 0],
        ),
        leaf(2, [1, HYPERCALL_MSR, 0, 0]),
        // TSC leaf: all zero (no TSC mode information).
        leaf(3, [0; 4]),
        leaf(
            4,
            [
                HVM_VCPU_ID_PRESENT | HVM_DOMID_PRESENT,
                vcpu,
                u32::from(domid),
                0,
            ],
        ),
        // PV-only features: none.
        leaf(5, [0; 4]),
    ]
}

/// Whether a CPUID function is in the hypervisor range the Xen leaves replace.
pub fn is_hypervisor_leaf(function: u32) -> bool {
    (0x4000_0000..0x4001_0000).contains(&function)
}

/// CPUID.1 bits a guest without a local APIC must not see: EDX.APIC (9) and
/// ECX.x2APIC (21). Guests of this runner use Xen's PV timer and callback vector.
pub const LEAF1_EDX_CLEAR: u32 = 1 << 9;
/// See [`LEAF1_EDX_CLEAR`].
pub const LEAF1_ECX_CLEAR: u32 = 1 << 21;

/// The hypercall page's 4096 bytes.
pub fn hypercall_page() -> [u8; 4096] {
    let mut page = [0xCCu8; 4096]; // int3 between the stubs
    for nr in 0..SLOTS {
        let s = &mut page[nr * 32..nr * 32 + 32];
        if nr == HYPERCALL_IRET {
            s[..2].copy_from_slice(&[0x0F, 0x0B]); // ud2
            continue;
        }
        s[0] = 0xB8; // mov $imm32, %eax
        s[1..5].copy_from_slice(&(nr as u32).to_le_bytes());
        s[5] = 0xE7; // out %eax, $imm8
        s[6] = HYPERCALL_PORT as u8;
        s[7] = 0xC3; // ret
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypercall::cpuid::{find_xen, CpuidRegs};

    #[test]
    fn the_kit_finds_xen_in_these_leaves() {
        let leaves = xen_leaves((4, 17), 7, 0);
        let x = find_xen(|f| {
            leaves
                .iter()
                .find(|l| l.function == f)
                .map(|l| CpuidRegs {
                    eax: l.regs[0],
                    ebx: l.regs[1],
                    ecx: l.regs[2],
                    edx: l.regs[3],
                })
                .unwrap_or_default()
        })
        .expect("Xen found");
        assert_eq!(x.base, 0x4000_0000);
        assert_eq!(x.max_leaf, 0x4000_0005);
        assert_eq!(x.hypercall_pages, 1);
        assert_eq!(x.hypercall_msr, 0x4000_0000);
        assert_eq!((x.version.major, x.version.minor), (4, 17));
        let l4 = leaves.iter().find(|l| l.function == 0x4000_0004).unwrap();
        assert_eq!(l4.regs, [0x18, 0, 7, 0]);
    }

    #[test]
    fn stubs_are_mov_out_ret_at_32_byte_slots() {
        let p = hypercall_page();
        // Slot 29 (sched_op): b8 1d 00 00 00 e7 f5 c3.
        assert_eq!(
            &p[29 * 32..29 * 32 + 8],
            &[0xB8, 29, 0, 0, 0, 0xE7, 0xF5, 0xC3]
        );
        assert_eq!(&p[0..8], &[0xB8, 0, 0, 0, 0, 0xE7, 0xF5, 0xC3]);
        assert_eq!(&p[127 * 32 + 1..127 * 32 + 5], &127u32.to_le_bytes());
        assert_eq!(&p[23 * 32..23 * 32 + 2], &[0x0F, 0x0B]);
        assert!(p[8..32].iter().all(|&b| b == 0xCC));
        assert!(is_hypervisor_leaf(0x4000_0100) && !is_hypervisor_leaf(0x8000_0000));
    }
}
