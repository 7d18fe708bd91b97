//! x86_64: CPUID, the hypercall-page MSR, the hypercall page itself, and the `0xE9`
//! debug console port.
//!
//! Only this module executes hypervisor-specific instructions. `cpuid` goes through
//! `core::arch::x86_64::__cpuid` (never inline asm: LLVM reserves rbx).
//!
//! What can be tested where: the discovery logic ([`crate::cpuid::find_xen`]) is
//! tested with an injected CPUID anywhere; [`HypercallPage`]'s calling sequence is
//! tested on an x86_64 Linux host against a page of hand-written stubs (mmap'd
//! executable); `wrmsr` and `out` (port 0xE9) need ring 0 on Xen (or shim-hv's KVM
//! runner) and are not exercised by unit tests.

use crate::abi::errno;
use crate::cpuid::{find_xen, CpuidRegs, XenCpuid};
use crate::platform::{Gfn, Hypercall, PAGE_SIZE};
use core::arch::asm;
use core::ptr::NonNull;

/// Bytes per hypercall stub in the page.
pub const STUB_SIZE: usize = 32;
/// Number of stubs in one page.
pub const NR_STUBS: usize = PAGE_SIZE / STUB_SIZE;

/// Executes CPUID `leaf` (subleaf 0).
pub fn cpuid(leaf: u32) -> CpuidRegs {
    let r = core::arch::x86_64::__cpuid(leaf);
    CpuidRegs {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// Looks for Xen (or shim-hv playing Xen) in the hypervisor CPUID leaves.
pub fn discover() -> Option<XenCpuid> {
    find_xen(cpuid)
}

/// Reads the time-stamp counter (the input of [`crate::time::TimeInfo::at`]).
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC reads a counter; it touches no memory and is allowed in every
    // ring unless CR4.TSD is set, which no guest of the kit does.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
}

/// Writes `value` to model-specific register `msr`.
///
/// # Safety
/// Ring 0 only; writing an MSR can change anything about the machine: the caller
/// must know what `msr` does with `value`.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller vouches for the MSR and value; wrmsr touches only
    // ecx/eax/edx (inputs here) and no memory or stack.
    unsafe {
        asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags),
        );
    }
}

/// The I/O port Xen (and QEMU, Bochs, shim-hv's KVM runner) log bytes written to:
/// Xen prints them as `(dN) ...` on its console. Linux's `xen_hvm_early_write` uses it
/// for HVM/PVH early output because `CONSOLEIO_write` from a domU works only on a
/// debug-built Xen.
pub const DEBUG_CONSOLE_PORT: u16 = 0xE9;

/// Byte output to the `0xE9` debug console port (early console fallback).
#[derive(Clone, Copy, Debug)]
pub struct DebugConsolePort {
    _private: (),
}

impl DebugConsolePort {
    /// The debug console port.
    ///
    /// # Safety
    /// The caller must run where `out` to port `0xE9` is allowed (ring 0, or an I/O
    /// privilege level / permission bitmap that grants it, as in a PVH or HVM guest
    /// kernel) and where that port is the debug console (or unassigned), not a device
    /// that a stray byte could reprogram. In ordinary user space `out` faults.
    pub const unsafe fn new() -> Self {
        Self { _private: () }
    }

    /// Writes `bytes` one `out` at a time (the port takes one byte per write).
    pub fn write(&self, bytes: &[u8]) {
        for &b in bytes {
            // SAFETY: the constructor's contract: `out` to 0xE9 is permitted here and
            // has no effect besides logging the byte; it touches no memory.
            unsafe {
                asm!(
                    "out dx, al",
                    in("dx") DEBUG_CONSOLE_PORT,
                    in("al") b,
                    options(nomem, nostack, preserves_flags),
                );
            }
        }
    }
}

/// A Xen hypercall page: [`Hypercall`] by `call page + 32 * nr`.
///
/// Register use (`docs/guest-guide/x86/hypercall-abi.rst`): the number in rax
/// (stubs may load it themselves), arguments in rdi, rsi, rdx, r10, r8, result in
/// rax. Every argument register may come back clobbered; rcx and r11 are clobbered
/// too (a PV stub is `syscall`).
#[derive(Debug)]
pub struct HypercallPage {
    page: NonNull<u8>,
}

// SAFETY: the page is immutable code after installation; calling it from several
// CPUs at once is what Xen guests do.
unsafe impl Send for HypercallPage {}
// SAFETY: as above.
unsafe impl Sync for HypercallPage {}

impl HypercallPage {
    /// Asks Xen to fill `page` with hypercall stubs by writing the page's
    /// guest-physical address (`gfn`) to the MSR from CPUID (`info.hypercall_msr`).
    ///
    /// # Safety
    /// Ring 0. `page` must be a 4 KiB-aligned page that is mapped executable at
    /// `page`, is guest frame `gfn`, holds nothing else, and stays mapped and
    /// unmodified for as long as this value (or any hypercall made through it) is
    /// used.
    pub unsafe fn install(info: &XenCpuid, page: NonNull<u8>, gfn: Gfn) -> Self {
        // SAFETY: the caller guarantees ring 0 and that `gfn` is a page we may hand
        // to Xen to overwrite; the MSR comes from Xen's own CPUID leaf.
        unsafe { wrmsr(info.hypercall_msr, gfn.addr()) };
        Self { page }
    }

    /// Uses a page that already holds hypercall stubs (installed earlier, or by the
    /// domain builder via `XEN_ELFNOTE_HYPERCALL_PAGE`).
    ///
    /// # Safety
    /// `page` must point to a mapped, executable page of hypercall stubs (32 bytes
    /// each, by hypercall number) that stays valid while this value is used.
    pub const unsafe fn from_installed(page: NonNull<u8>) -> Self {
        Self { page }
    }

    /// The page's address.
    pub fn as_ptr(&self) -> *const u8 {
        self.page.as_ptr()
    }
}

impl Hypercall for HypercallPage {
    unsafe fn hypercall(&self, op: u32, args: [usize; 5]) -> isize {
        let nr = op as usize;
        if nr >= NR_STUBS {
            return -errno::ENOSYS;
        }
        // In bounds of the page (nr < 128).
        let entry = self.page.as_ptr().wrapping_add(nr * STUB_SIZE);
        let ret: isize;
        // SAFETY: `entry` is the stub for `op` in a valid hypercall page
        // (constructor contract); the caller guarantees the pointer arguments.
        // Without `nostack` the compiler keeps the stack aligned for the `call` and
        // out of any red zone. Clobbers: the argument registers and rcx/r11; the
        // stub may read and write memory (no `nomem`/`readonly`).
        unsafe {
            asm!(
                "call {entry}",
                entry = in(reg) entry,
                inlateout("rax") nr => ret,
                inlateout("rdi") args[0] => _,
                inlateout("rsi") args[1] => _,
                inlateout("rdx") args[2] => _,
                inlateout("r10") args[3] => _,
                inlateout("r8") args[4] => _,
                lateout("rcx") _,
                lateout("r11") _,
            );
        }
        ret
    }
}

#[cfg(all(test, target_os = "linux", not(miri)))]
mod tests {
    //! Runs the real `call` sequence against hand-written stubs in an executable
    //! page. (Not under Miri: it cannot execute machine code.)
    extern crate std;
    use super::*;

    /// `mov rax, <reg>; ret` per slot 0..5 (rdi, rsi, rdx, r10, r8), slot 5:
    /// clobber every argument register and rcx/r11, return 0x1234.
    const STUBS: [&[u8]; 6] = [
        &[0x48, 0x89, 0xF8, 0xC3],
        &[0x48, 0x89, 0xF0, 0xC3],
        &[0x48, 0x89, 0xD0, 0xC3],
        &[0x4C, 0x89, 0xD0, 0xC3],
        &[0x4C, 0x89, 0xC0, 0xC3],
        &[
            0x31, 0xC9, // xor ecx, ecx
            0x45, 0x31, 0xDB, // xor r11d, r11d
            0x31, 0xFF, // xor edi, edi
            0x31, 0xF6, // xor esi, esi
            0x31, 0xD2, // xor edx, edx
            0x45, 0x31, 0xD2, // xor r10d, r10d
            0x45, 0x31, 0xC0, // xor r8d, r8d
            0xB8, 0x34, 0x12, 0, 0,    // mov eax, 0x1234
            0xC3, // ret
        ],
    ];

    fn stub_page() -> Option<NonNull<u8>> {
        // SAFETY: anonymous private mapping; checked for failure below.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                PAGE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        let p = p.cast::<u8>();
        for (i, code) in STUBS.iter().enumerate() {
            // SAFETY: inside the fresh page (i < 6, code <= 32 bytes).
            unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), p.add(i * 32), code.len()) };
        }
        // SAFETY: our own mapping.
        let rc = unsafe { libc::mprotect(p.cast(), PAGE_SIZE, libc::PROT_READ | libc::PROT_EXEC) };
        if rc != 0 {
            return None;
        }
        NonNull::new(p)
    }

    #[test]
    fn arguments_travel_in_the_abi_registers() {
        let Some(page) = stub_page() else {
            std::eprintln!("cannot map an executable page here; skipped");
            return;
        };
        // SAFETY: `page` holds the stubs above and stays mapped (never unmapped).
        let hc = unsafe { HypercallPage::from_installed(page) };
        let args = [0x11, 0x22, 0x33, 0x44, 0x55];
        for (op, want) in args.iter().enumerate() {
            // SAFETY: the stubs take no pointers.
            assert_eq!(unsafe { hc.hypercall(op as u32, args) }, *want as isize);
        }
        // Values live across a clobbering stub survive (the clobbers are declared).
        let keep = core::hint::black_box([7usize, 8, 9, 10, 11]);
        // SAFETY: as above.
        assert_eq!(unsafe { hc.hypercall(5, keep) }, 0x1234);
        assert_eq!(keep, [7, 8, 9, 10, 11]);
        // SAFETY: out-of-page numbers never reach the page.
        assert_eq!(unsafe { hc.hypercall(128, args) }, -errno::ENOSYS);
    }

    #[test]
    fn discover_runs_on_this_host() {
        // Whatever the host is, the real CPUID path must not fault; under Xen it
        // must find a hypercall MSR.
        if let Some(x) = discover() {
            assert!(x.max_leaf >= x.base + 2);
        }
    }
}
