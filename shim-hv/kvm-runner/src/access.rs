//! Hypercall pointer arguments of a KVM guest: guest-virtual addresses, translated
//! page by page with `KVM_TRANSLATE` (the guest's own page tables decide; with
//! paging off the translation is the identity), then copied through the domain's
//! memory. An address that does not translate, a read-only page written to, or a
//! frame that is neither RAM nor a page the guest placed gives `-EFAULT`.

use std::cell::Cell;

use hypercall::{Gfn, PAGE_SIZE};
use kvm_ioctls::VcpuFd;

use xen_model::mem::GuestMemory;
use xen_model::{Efault, GuestAccess};

/// [`GuestAccess`] for one hypercall of one vCPU.
pub struct VirtAccess<'a> {
    vcpu: &'a VcpuFd,
    mem: &'a GuestMemory,
    /// Last translation: (virtual page, physical page, writable).
    last: Cell<Option<(u64, u64, bool)>>,
    /// Highest address the guest's mode can name (4 GiB in 32-bit mode).
    limit: u64,
}

impl<'a> VirtAccess<'a> {
    /// Accessor for a hypercall from `vcpu`; `long_mode` says whether addresses are
    /// 64-bit.
    pub fn new(vcpu: &'a VcpuFd, mem: &'a GuestMemory, long_mode: bool) -> Self {
        VirtAccess {
            vcpu,
            mem,
            last: Cell::new(None),
            limit: if long_mode { u64::MAX } else { 1 << 32 },
        }
    }

    fn translate(&self, page: u64) -> Result<(u64, bool), Efault> {
        if let Some((v, p, w)) = self.last.get() {
            if v == page {
                return Ok((p, w));
            }
        }
        let t = self.vcpu.translate_gva(page).map_err(|_| Efault)?;
        if t.valid == 0 {
            return Err(Efault);
        }
        let phys = t.physical_address & !(PAGE_SIZE as u64 - 1);
        let w = t.writeable != 0;
        self.last.set(Some((page, phys, w)));
        Ok((phys, w))
    }

    /// Calls `f(page memory, offset in page, range of the buffer)` for each page
    /// `addr..addr+len` touches.
    fn each_page(
        &self,
        addr: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(&hypercall::SharedMem<'_>, usize, core::ops::Range<usize>),
    ) -> Result<(), Efault> {
        if len == 0 {
            return Ok(());
        }
        let end = addr.checked_add(len as u64).ok_or(Efault)?;
        if end > self.limit {
            return Err(Efault);
        }
        let mut done = 0usize;
        while done < len {
            let va = addr + done as u64;
            let off = (va % PAGE_SIZE as u64) as usize;
            let n = (PAGE_SIZE - off).min(len - done);
            let (pa, writable) = self.translate(va - off as u64)?;
            if write && !writable {
                return Err(Efault);
            }
            let page = self.mem.page(Gfn(pa >> 12)).map_err(|_| Efault)?;
            f(&page, off, done..done + n);
            done += n;
        }
        Ok(())
    }
}

impl GuestAccess for VirtAccess<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Efault> {
        // Translate everything first: a fault leaves `buf` partly written, which is
        // fine (the caller discards it on error).
        let len = buf.len();
        self.each_page(addr, len, false, |page, off, r| {
            page.read(off, &mut buf[r]);
        })
    }

    fn write(&self, addr: u64, buf: &[u8]) -> Result<(), Efault> {
        // Check every page before writing any, so a fault writes nothing.
        self.each_page(addr, buf.len(), true, |_, _, _| {})?;
        self.each_page(addr, buf.len(), true, |page, off, r| {
            page.write(off, &buf[r]);
        })
    }
}
