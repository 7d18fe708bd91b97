//! The three hypercalls this crate issues, over the raw [`Hypercall`] trait.
//!
//! Temporary: these move to `hypercall`'s typed wrappers once they land; until then this
//! is the only module of the crate with `unsafe` (each call passes a pointer to a local
//! argument struct, valid for the duration of the call).
#![allow(unsafe_code)]

use hypercall::abi::hypercall_nr::{EVENT_CHANNEL_OP, HVM_OP, SCHED_OP};
use hypercall::abi::{evtchn, hvm, sched};
use hypercall::{DomId, Hypercall, Port};
use zerocopy::IntoBytes;

use crate::error::{Error, Result};

fn check(op: u32, rc: isize) -> Result<isize> {
    if rc < 0 {
        Err(Error::Hypercall { op, code: rc })
    } else {
        Ok(rc)
    }
}

/// `EVTCHNOP_send`: notify the other end of `port`.
pub(crate) fn evtchn_send<H: Hypercall + ?Sized>(h: &H, port: Port) -> Result<()> {
    let mut arg = evtchn::PortArg { port: port.0 };
    let ptr = arg.as_mut_bytes().as_mut_ptr() as usize;
    // SAFETY: `ptr` points to a live `evtchn_send` struct for the whole call.
    let rc = unsafe { h.hypercall(EVENT_CHANNEL_OP, [evtchn::OP_SEND as usize, ptr, 0, 0, 0]) };
    check(EVENT_CHANNEL_OP, rc).map(|_| ())
}

/// `HVMOP_get_param` for this domain.
pub(crate) fn hvm_get_param<H: Hypercall + ?Sized>(h: &H, index: u32) -> Result<u64> {
    let mut arg = hvm::Param {
        domid: DomId::SELF.0,
        _pad: 0,
        index,
        value: 0,
    };
    let ptr = arg.as_mut_bytes().as_mut_ptr() as usize;
    // SAFETY: `ptr` points to a live `xen_hvm_param` struct for the whole call.
    let rc = unsafe { h.hypercall(HVM_OP, [hvm::OP_GET_PARAM as usize, ptr, 0, 0, 0]) };
    check(HVM_OP, rc)?;
    Ok(arg.value)
}

/// `SCHEDOP_shutdown` with `reason`. Returns only if Xen lets the domain continue
/// (a cancelled or resumed suspend, or a platform that records the request).
pub(crate) fn sched_shutdown<H: Hypercall + ?Sized>(h: &H, reason: u32) -> Result<isize> {
    let mut arg = sched::Shutdown { reason };
    let ptr = arg.as_mut_bytes().as_mut_ptr() as usize;
    // SAFETY: `ptr` points to a live `sched_shutdown` struct for the whole call.
    let rc = unsafe { h.hypercall(SCHED_OP, [sched::OP_SHUTDOWN as usize, ptr, 0, 0, 0]) };
    check(SCHED_OP, rc)
}

/// Wraps the page of frame `gfn` (the store page Xen reserved for this domain) as
/// shared memory.
pub(crate) fn map_frame<P: hypercall::Platform + ?Sized>(
    platform: &P,
    gfn: hypercall::Gfn,
) -> Result<hypercall::SharedMem> {
    let ptr = platform.gfn_to_virt(gfn).ok_or(Error::NotMapped(gfn))?;
    // SAFETY: `gfn_to_virt` returns the mapping of a whole 4 KiB guest frame, which the
    // platform keeps mapped. The store page is Xen's special page for xenstore: nothing
    // in the guest holds references into it, and all our accesses go through SharedMem.
    Ok(unsafe { hypercall::SharedMem::new(ptr, hypercall::PAGE_SIZE) })
}
