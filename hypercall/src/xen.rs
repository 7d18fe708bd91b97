//! Typed hypercall wrappers over any [`Hypercall`].
//!
//! [`Xen`] is a zero-cost wrapper: `Xen(&platform).evtchn_send(port)`. Each method
//! builds the hypercall's argument struct on the stack, passes its address (a guest
//! virtual address, as on Xen; shim-hv translates it) and turns the result into a
//! `Result<T, XenError>`. Grant-table operations also check the per-operation
//! `GNTST_*` status.

use crate::abi::{console, evtchn, gnttab, hvm, hypercall_nr as nr, memory, sched, vcpu, version};
use crate::platform::{DomId, Gfn, GrantRef, Hypercall, Port};
use core::fmt;

/// A failed hypercall.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum XenError {
    /// The hypercall returned a negative errno.
    Hypercall {
        /// Hypercall number (`abi::hypercall_nr`).
        op: u32,
        /// Sub-command (`EVTCHNOP_*`, `GNTTABOP_*`, ...), or 0.
        cmd: u32,
        /// The raw return value: a negated errno (`-abi::errno::*`).
        rc: isize,
    },
    /// A grant-table operation returned 0 but its status field was not `GNTST_okay`.
    GrantStatus {
        /// `GNTTABOP_*`.
        cmd: u32,
        /// The `GNTST_*` status (negative).
        status: i16,
    },
    /// The hypervisor returned a value the wrapper cannot represent (e.g. a port
    /// number or frame count out of range).
    BadResult {
        /// Hypercall number.
        op: u32,
        /// Sub-command.
        cmd: u32,
        /// The offending value.
        value: u64,
    },
    /// An argument was out of the range the ABI can carry (e.g. a buffer longer than
    /// `i32::MAX` for `console_io`).
    BadArgument,
}

impl XenError {
    /// The positive errno of a [`XenError::Hypercall`] failure (compare with
    /// `abi::errno::*`), `None` for other kinds.
    pub fn errno(&self) -> Option<isize> {
        match *self {
            XenError::Hypercall { rc, .. } => Some(rc.wrapping_neg()),
            _ => None,
        }
    }

    /// The `GNTST_*` status of a [`XenError::GrantStatus`] failure.
    pub fn grant_status(&self) -> Option<i16> {
        match *self {
            XenError::GrantStatus { status, .. } => Some(status),
            _ => None,
        }
    }
}

impl fmt::Display for XenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            XenError::Hypercall { op, cmd, rc } => {
                write!(
                    f,
                    "hypercall {op} cmd {cmd} failed: errno {}",
                    rc.wrapping_neg()
                )
            }
            XenError::GrantStatus { cmd, status } => {
                write!(f, "grant table op {cmd} failed: GNTST {status}")
            }
            XenError::BadResult { op, cmd, value } => {
                write!(
                    f,
                    "hypercall {op} cmd {cmd} returned unusable value {value}"
                )
            }
            XenError::BadArgument => write!(f, "hypercall argument out of range"),
        }
    }
}

/// `shutdown` reasons (`SHUTDOWN_*`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ShutdownReason {
    /// `SHUTDOWN_poweroff`
    Poweroff = sched::SHUTDOWN_POWEROFF,
    /// `SHUTDOWN_reboot`
    Reboot = sched::SHUTDOWN_REBOOT,
    /// `SHUTDOWN_suspend`
    Suspend = sched::SHUTDOWN_SUSPEND,
    /// `SHUTDOWN_crash`
    Crash = sched::SHUTDOWN_CRASH,
    /// `SHUTDOWN_watchdog`
    Watchdog = sched::SHUTDOWN_WATCHDOG,
}

/// Result of `GNTTABOP_query_size`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct GrantTableSize {
    /// Frames currently in the table.
    pub nr_frames: u32,
    /// Frames the table may grow to.
    pub max_nr_frames: u32,
}

/// Xen's version (`XENVER_version`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct XenVersion {
    /// Major.
    pub major: u16,
    /// Minor.
    pub minor: u16,
}

/// What `EVTCHNOP_status` says a port is bound to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvtchnBinding {
    /// Not in use.
    Closed,
    /// Waiting for `remote` to bind.
    Unbound {
        /// The domain allowed to bind.
        remote: DomId,
    },
    /// Connected to another domain's port.
    Interdomain {
        /// Remote domain.
        remote: DomId,
        /// Remote port.
        remote_port: Port,
    },
    /// Bound to a physical IRQ.
    Pirq(u32),
    /// Bound to a virtual IRQ.
    Virq(u32),
    /// An inter-processor interrupt.
    Ipi,
    /// A status value this crate does not know.
    Unknown(u32),
}

/// Result of `EVTCHNOP_status`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct EvtchnStatus {
    /// What the port is bound to.
    pub binding: EvtchnBinding,
    /// vCPU notified.
    pub vcpu: u32,
}

/// Typed hypercalls over a [`Hypercall`] implementation.
///
/// Thread safety: the wrappers keep no state; they are as thread-safe as `H`.
#[derive(Copy, Clone, Debug)]
pub struct Xen<H>(pub H);

/// Address of a stack argument, as the hypercall's guest-virtual pointer argument.
fn ptr<T>(v: &mut T) -> usize {
    v as *mut T as usize
}

impl<H: Hypercall> Xen<H> {
    /// Wraps `h`.
    pub const fn new(h: H) -> Self {
        Xen(h)
    }

    /// The wrapped hypercall implementation.
    pub fn inner(&self) -> &H {
        &self.0
    }

    /// Issues hypercall `op` with `cmd` as the first argument and the second and
    /// third as given; maps a negative result to [`XenError::Hypercall`].
    ///
    /// # Safety
    /// As [`Hypercall::hypercall`]: pointer arguments must be valid for the call.
    unsafe fn call(&self, op: u32, cmd: u32, a1: usize, a2: usize) -> Result<isize, XenError> {
        // SAFETY: forwarded; the caller guarantees the pointer arguments.
        let rc = unsafe { self.0.hypercall(op, [cmd as usize, a1, a2, 0, 0]) };
        if rc < 0 {
            Err(XenError::Hypercall { op, cmd, rc })
        } else {
            Ok(rc)
        }
    }

    /// `cmd(arg)` where `arg` points to `T` on our stack.
    fn call_with<T>(&self, op: u32, cmd: u32, arg: &mut T) -> Result<isize, XenError> {
        // SAFETY: `arg` is a live, exclusively borrowed argument struct of the type
        // the sub-command expects; Xen reads/writes it only during the call.
        unsafe { self.call(op, cmd, ptr(arg), 0) }
    }

    // ---- memory_op -----------------------------------------------------------

    /// `XENMEM_add_to_physmap`: makes frame `idx` of `space` (`abi::memory::SPACE_*`)
    /// appear at guest frame `gfn` of this domain.
    ///
    /// # Safety
    /// Whatever was at `gfn` is replaced by the new frame (Xen writes the grant
    /// table or shared info there and may change it at any time): the caller must
    /// own guest frame `gfn` (e.g. pages from [`crate::Platform::alloc_pages`] it
    /// does not use for anything else), and no Rust reference may point into it
    /// from now on; access it only through [`crate::SharedMem`].
    pub unsafe fn add_to_physmap(&self, space: u32, idx: u64, gfn: Gfn) -> Result<(), XenError> {
        let mut a = memory::AddToPhysmap {
            domid: DomId::SELF.0,
            size: 0,
            space,
            idx,
            gpfn: gfn.0,
        };
        self.call_with(nr::MEMORY_OP, memory::OP_ADD_TO_PHYSMAP, &mut a)
            .map(|_| ())
    }

    /// `XENMEM_memory_map`: fills `buf` with the domain's E820 map; returns the
    /// number of entries written (never more than `buf.len()`).
    pub fn memory_map(&self, buf: &mut [memory::E820Entry]) -> Result<usize, XenError> {
        let cap = u32::try_from(buf.len()).map_err(|_| XenError::BadArgument)?;
        let mut a = memory::MemoryMap {
            nr_entries: cap,
            _pad: 0,
            buffer: buf.as_mut_ptr() as u64,
        };
        self.call_with(nr::MEMORY_OP, memory::OP_MEMORY_MAP, &mut a)?;
        if a.nr_entries > cap {
            return Err(XenError::BadResult {
                op: nr::MEMORY_OP,
                cmd: memory::OP_MEMORY_MAP,
                value: a.nr_entries.into(),
            });
        }
        Ok(a.nr_entries as usize)
    }

    // ---- xen_version ------------------------------------------------------------

    /// `XENVER_version`.
    pub fn xen_version(&self) -> Result<XenVersion, XenError> {
        // SAFETY: XENVER_version takes no pointer (NULL).
        let v = unsafe { self.call(nr::XEN_VERSION, version::XENVER_VERSION, 0, 0) }?;
        let v = v as u64;
        Ok(XenVersion {
            major: (v >> 16) as u16,
            minor: v as u16,
        })
    }

    /// `XENVER_get_features`: the 32-bit feature submap `idx` (`XENFEAT_*` bits).
    pub fn get_features(&self, submap_idx: u32) -> Result<u32, XenError> {
        let mut a = version::FeatureInfo {
            submap_idx,
            submap: 0,
        };
        self.call_with(nr::XEN_VERSION, version::XENVER_GET_FEATURES, &mut a)?;
        Ok(a.submap)
    }

    // ---- console_io -------------------------------------------------------------

    /// `CONSOLEIO_write`: writes `bytes` to Xen's console (works for a domU only on
    /// a debug-built Xen; expect `-EPERM`/`-ENOSYS` otherwise).
    pub fn console_write(&self, bytes: &[u8]) -> Result<(), XenError> {
        let len = i32::try_from(bytes.len()).map_err(|_| XenError::BadArgument)?;
        // SAFETY: `bytes` is valid for reads of `len` bytes during the call.
        unsafe {
            self.call(
                nr::CONSOLE_IO,
                console::CONSOLEIO_WRITE,
                len as usize,
                bytes.as_ptr() as usize,
            )
        }
        .map(|_| ())
    }

    // ---- grant_table_op -----------------------------------------------------------

    /// `grant_table_op(cmd, ops, count)`.
    fn gnttab<T>(&self, cmd: u32, ops: &mut [T]) -> Result<(), XenError> {
        // SAFETY: `ops` is a live array of `ops.len()` argument structs of the type
        // `cmd` expects.
        unsafe {
            self.call(
                nr::GRANT_TABLE_OP,
                cmd,
                ops.as_mut_ptr() as usize,
                ops.len(),
            )
        }
        .map(|_| ())
    }

    fn gntst(cmd: u32, status: i16) -> Result<(), XenError> {
        if status == gnttab::GNTST_OKAY {
            Ok(())
        } else {
            Err(XenError::GrantStatus { cmd, status })
        }
    }

    /// `GNTTABOP_set_version`.
    pub fn gnttab_set_version(&self, version: u32) -> Result<(), XenError> {
        let mut a = [gnttab::SetVersion { version }];
        self.gnttab(gnttab::OP_SET_VERSION, &mut a)
    }

    /// `GNTTABOP_query_size` for this domain.
    pub fn gnttab_query_size(&self) -> Result<GrantTableSize, XenError> {
        let mut a = [gnttab::QuerySize {
            dom: DomId::SELF.0,
            ..Default::default()
        }];
        self.gnttab(gnttab::OP_QUERY_SIZE, &mut a)?;
        let [a] = a;
        Self::gntst(gnttab::OP_QUERY_SIZE, a.status)?;
        Ok(GrantTableSize {
            nr_frames: a.nr_frames,
            max_nr_frames: a.max_nr_frames,
        })
    }

    /// `GNTTABOP_setup_table`: grows the table to `frames.len()` frames and stores
    /// their frame numbers in `frames` (PV style; HVM guests map frames with
    /// [`Xen::add_to_physmap`] instead).
    pub fn gnttab_setup_table(&self, frames: &mut [u64]) -> Result<(), XenError> {
        let n = u32::try_from(frames.len()).map_err(|_| XenError::BadArgument)?;
        let mut a = [gnttab::SetupTable {
            dom: DomId::SELF.0,
            nr_frames: n,
            frame_list: frames.as_mut_ptr() as u64,
            ..Default::default()
        }];
        self.gnttab(gnttab::OP_SETUP_TABLE, &mut a)?;
        let [a] = a;
        Self::gntst(gnttab::OP_SETUP_TABLE, a.status)
    }

    /// `GNTTABOP_map_grant_ref` on a batch. Returns `Err` only if the hypercall
    /// itself failed; check each entry's `status` (and use its `handle`).
    ///
    /// # Safety
    /// Each op maps another domain's page over `host_addr` (a guest-physical address
    /// for HVM/PVH, a virtual one for PV) and that domain may write it at any time:
    /// every `host_addr` must be a page the caller owns and uses for nothing else,
    /// with no Rust reference into it while mapped (access it through
    /// [`crate::SharedMem`]).
    pub unsafe fn gnttab_map_grant_refs(
        &self,
        ops: &mut [gnttab::MapGrantRef],
    ) -> Result<(), XenError> {
        self.gnttab(gnttab::OP_MAP_GRANT_REF, ops)
    }

    /// `GNTTABOP_map_grant_ref` for one grant; returns the filled-in op (handle,
    /// bus address) or the hypercall / `GNTST_*` failure.
    ///
    /// # Safety
    /// As [`Xen::gnttab_map_grant_refs`]: `host_addr` must be a page the caller owns
    /// and uses for nothing else, with no Rust reference into it while mapped.
    pub unsafe fn gnttab_map_grant_ref(
        &self,
        host_addr: u64,
        flags: u32,
        gref: GrantRef,
        dom: DomId,
    ) -> Result<gnttab::MapGrantRef, XenError> {
        let mut a = [gnttab::MapGrantRef {
            host_addr,
            flags,
            gref: gref.0,
            dom: dom.0,
            ..Default::default()
        }];
        self.gnttab(gnttab::OP_MAP_GRANT_REF, &mut a)?;
        let [a] = a;
        Self::gntst(gnttab::OP_MAP_GRANT_REF, a.status)?;
        Ok(a)
    }

    /// `GNTTABOP_unmap_grant_ref` on a batch (check each entry's `status`).
    ///
    /// # Safety
    /// Unmapping changes what is at each `host_addr`: every op must name a mapping
    /// the caller made (its `handle` and `host_addr`), and nothing may use the
    /// memory there as the mapped page afterwards.
    pub unsafe fn gnttab_unmap_grant_refs(
        &self,
        ops: &mut [gnttab::UnmapGrantRef],
    ) -> Result<(), XenError> {
        self.gnttab(gnttab::OP_UNMAP_GRANT_REF, ops)
    }

    /// `GNTTABOP_unmap_grant_ref` for one mapping.
    ///
    /// # Safety
    /// As [`Xen::gnttab_unmap_grant_refs`]: a mapping the caller made, not used as
    /// the mapped page afterwards.
    pub unsafe fn gnttab_unmap_grant_ref(
        &self,
        host_addr: u64,
        dev_bus_addr: u64,
        handle: u32,
    ) -> Result<(), XenError> {
        let mut a = [gnttab::UnmapGrantRef {
            host_addr,
            dev_bus_addr,
            handle,
            ..Default::default()
        }];
        self.gnttab(gnttab::OP_UNMAP_GRANT_REF, &mut a)?;
        let [a] = a;
        Self::gntst(gnttab::OP_UNMAP_GRANT_REF, a.status)
    }

    /// `GNTTABOP_copy` on a batch. Returns `Err` only if the hypercall failed;
    /// check each entry's `status`.
    ///
    /// # Safety
    /// Xen writes the bytes to each op's destination, which may be a frame of this
    /// domain (`DOMID_SELF` and a gfn): every local destination must be memory the
    /// caller owns for that length, with no Rust reference into it during the call
    /// (a copy into a page a `&`/`&mut` points to, or into code or the stack, is
    /// memory corruption).
    pub unsafe fn gnttab_copy(&self, ops: &mut [gnttab::Copy]) -> Result<(), XenError> {
        self.gnttab(gnttab::OP_COPY, ops)
    }

    // ---- sched_op -----------------------------------------------------------------

    /// `SCHEDOP_yield`.
    pub fn sched_yield(&self) -> Result<(), XenError> {
        // SAFETY: no pointer argument.
        unsafe { self.call(nr::SCHED_OP, sched::OP_YIELD, 0, 0) }.map(|_| ())
    }

    /// `SCHEDOP_block`: sleeps until an event is pending (HVM: enable interrupts
    /// first or use `sti; hlt` instead).
    pub fn sched_block(&self) -> Result<(), XenError> {
        // SAFETY: no pointer argument.
        unsafe { self.call(nr::SCHED_OP, sched::OP_BLOCK, 0, 0) }.map(|_| ())
    }

    /// `SCHEDOP_shutdown`. On real Xen this does not return for poweroff/reboot/crash.
    pub fn sched_shutdown(&self, reason: ShutdownReason) -> Result<(), XenError> {
        let mut a = sched::Shutdown {
            reason: reason as u32,
        };
        self.call_with(nr::SCHED_OP, sched::OP_SHUTDOWN, &mut a)
            .map(|_| ())
    }

    /// `SCHEDOP_poll`: blocks until one of `ports` is pending or the absolute system
    /// time `timeout_ns` passes (0: no timeout).
    pub fn sched_poll(&self, ports: &[Port], timeout_ns: u64) -> Result<(), XenError> {
        let n = u32::try_from(ports.len()).map_err(|_| XenError::BadArgument)?;
        // `Port` is `repr(transparent)` over `u32` = `evtchn_port_t`.
        let mut a = sched::Poll {
            ports: ports.as_ptr() as u64,
            nr_ports: n,
            _pad: 0,
            timeout: timeout_ns,
        };
        self.call_with(nr::SCHED_OP, sched::OP_POLL, &mut a)
            .map(|_| ())
    }

    // ---- event_channel_op -------------------------------------------------------------

    fn port_out(cmd: u32, port: u32) -> Result<Port, XenError> {
        if port >= evtchn::NR_PORTS_2L {
            return Err(XenError::BadResult {
                op: nr::EVENT_CHANNEL_OP,
                cmd,
                value: port.into(),
            });
        }
        Ok(Port(port))
    }

    /// `EVTCHNOP_alloc_unbound`: a new local port that `remote` may bind to.
    pub fn evtchn_alloc_unbound(&self, remote: DomId) -> Result<Port, XenError> {
        let mut a = evtchn::AllocUnbound {
            dom: DomId::SELF.0,
            remote_dom: remote.0,
            port: 0,
        };
        self.call_with(nr::EVENT_CHANNEL_OP, evtchn::OP_ALLOC_UNBOUND, &mut a)?;
        Self::port_out(evtchn::OP_ALLOC_UNBOUND, a.port)
    }

    /// `EVTCHNOP_bind_interdomain`: connects a new local port to `remote`'s unbound
    /// `remote_port`.
    pub fn evtchn_bind_interdomain(
        &self,
        remote: DomId,
        remote_port: Port,
    ) -> Result<Port, XenError> {
        let mut a = evtchn::BindInterdomain {
            remote_dom: remote.0,
            _pad: 0,
            remote_port: remote_port.0,
            local_port: 0,
        };
        self.call_with(nr::EVENT_CHANNEL_OP, evtchn::OP_BIND_INTERDOMAIN, &mut a)?;
        Self::port_out(evtchn::OP_BIND_INTERDOMAIN, a.local_port)
    }

    /// `EVTCHNOP_bind_virq`: a port for virtual IRQ `virq` (`abi::evtchn::VIRQ_*`) on
    /// `vcpu`.
    pub fn evtchn_bind_virq(&self, virq: u32, vcpu: u32) -> Result<Port, XenError> {
        let mut a = evtchn::BindVirq {
            virq,
            vcpu,
            port: 0,
        };
        self.call_with(nr::EVENT_CHANNEL_OP, evtchn::OP_BIND_VIRQ, &mut a)?;
        Self::port_out(evtchn::OP_BIND_VIRQ, a.port)
    }

    fn evtchn_port_op(&self, cmd: u32, port: Port) -> Result<(), XenError> {
        let mut a = evtchn::PortArg { port: port.0 };
        self.call_with(nr::EVENT_CHANNEL_OP, cmd, &mut a)
            .map(|_| ())
    }

    /// `EVTCHNOP_send`: notifies the other end of `port`.
    pub fn evtchn_send(&self, port: Port) -> Result<(), XenError> {
        self.evtchn_port_op(evtchn::OP_SEND, port)
    }

    /// `EVTCHNOP_close`.
    pub fn evtchn_close(&self, port: Port) -> Result<(), XenError> {
        self.evtchn_port_op(evtchn::OP_CLOSE, port)
    }

    /// `EVTCHNOP_unmask`: clears the mask bit and re-raises the upcall if the port
    /// is pending.
    pub fn evtchn_unmask(&self, port: Port) -> Result<(), XenError> {
        self.evtchn_port_op(evtchn::OP_UNMASK, port)
    }

    /// `EVTCHNOP_status` for one of our ports.
    pub fn evtchn_status(&self, port: Port) -> Result<EvtchnStatus, XenError> {
        let mut a = evtchn::Status {
            dom: DomId::SELF.0,
            port: port.0,
            ..Default::default()
        };
        self.call_with(nr::EVENT_CHANNEL_OP, evtchn::OP_STATUS, &mut a)?;
        let binding = match a.status {
            evtchn::STATUS_CLOSED => EvtchnBinding::Closed,
            evtchn::STATUS_UNBOUND => EvtchnBinding::Unbound {
                remote: DomId(a.u_dom),
            },
            evtchn::STATUS_INTERDOMAIN => EvtchnBinding::Interdomain {
                remote: DomId(a.u_dom),
                remote_port: Port(a.u_port),
            },
            evtchn::STATUS_PIRQ => EvtchnBinding::Pirq(a.union_u32()),
            evtchn::STATUS_VIRQ => EvtchnBinding::Virq(a.union_u32()),
            evtchn::STATUS_IPI => EvtchnBinding::Ipi,
            other => EvtchnBinding::Unknown(other),
        };
        Ok(EvtchnStatus {
            binding,
            vcpu: a.vcpu,
        })
    }

    // ---- hvm_op ----------------------------------------------------------------------

    /// `HVMOP_get_param` for this domain (`abi::hvm::PARAM_*`).
    pub fn hvm_get_param(&self, index: u32) -> Result<u64, XenError> {
        let mut a = hvm::Param {
            domid: DomId::SELF.0,
            _pad: 0,
            index,
            value: 0,
        };
        self.call_with(nr::HVM_OP, hvm::OP_GET_PARAM, &mut a)?;
        Ok(a.value)
    }

    /// `HVMOP_set_param` for this domain.
    ///
    /// # Safety
    /// Several parameters tell Xen where to write: the store and console pfns, the
    /// callback vector, the ioreq and buffered-ioreq pages. The caller must give
    /// only values whose effect it owns: a pfn must be a page the caller owns and
    /// accesses only through [`crate::SharedMem`], a vector one it handles.
    pub unsafe fn hvm_set_param(&self, index: u32, value: u64) -> Result<(), XenError> {
        let mut a = hvm::Param {
            domid: DomId::SELF.0,
            _pad: 0,
            index,
            value,
        };
        self.call_with(nr::HVM_OP, hvm::OP_SET_PARAM, &mut a)
            .map(|_| ())
    }

    /// `HVMOP_set_evtchn_upcall_vector`: per-vCPU upcall vector (needs an EOI).
    pub fn hvm_set_evtchn_upcall_vector(&self, vcpu: u32, vector: u8) -> Result<(), XenError> {
        let mut a = hvm::UpcallVector {
            vcpu,
            vector,
            _pad: [0; 3],
        };
        self.call_with(nr::HVM_OP, hvm::OP_SET_EVTCHN_UPCALL_VECTOR, &mut a)
            .map(|_| ())
    }

    // ---- vcpu_op / set_timer_op ----------------------------------------------------------

    /// `VCPUOP_set_singleshot_timer`: a `VIRQ_TIMER` at absolute system time
    /// `timeout_abs_ns` (`flags`: `abi::vcpu::SSHOTTMR_*`).
    pub fn vcpu_set_singleshot_timer(
        &self,
        vcpu_id: u32,
        timeout_abs_ns: u64,
        flags: u32,
    ) -> Result<(), XenError> {
        let mut a = vcpu::SetSingleshotTimer {
            timeout_abs_ns,
            flags,
            _pad: 0,
        };
        // SAFETY: `a` is a live SetSingleshotTimer for the duration of the call.
        unsafe {
            self.call(
                nr::VCPU_OP,
                vcpu::OP_SET_SINGLESHOT_TIMER,
                vcpu_id as usize,
                ptr(&mut a),
            )
        }
        .map(|_| ())
    }

    /// `VCPUOP_stop_singleshot_timer`.
    pub fn vcpu_stop_singleshot_timer(&self, vcpu_id: u32) -> Result<(), XenError> {
        // SAFETY: no pointer argument (NULL).
        unsafe {
            self.call(
                nr::VCPU_OP,
                vcpu::OP_STOP_SINGLESHOT_TIMER,
                vcpu_id as usize,
                0,
            )
        }
        .map(|_| ())
    }

    /// `set_timer_op(timeout)`: one-shot timer for the current vCPU at absolute
    /// system time `timeout_abs_ns` (0 cancels).
    pub fn set_timer_op(&self, timeout_abs_ns: u64) -> Result<(), XenError> {
        let op = nr::SET_TIMER_OP;
        // SAFETY: no pointer argument.
        let rc = unsafe { self.0.hypercall(op, [timeout_abs_ns as usize, 0, 0, 0, 0]) };
        if rc < 0 {
            Err(XenError::Hypercall { op, cmd: 0, rc })
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A recording fake hypervisor for unit tests: records each call and lets a
    //! test-supplied handler read/write the argument structs through the pointers.
    extern crate std;
    use crate::platform::Hypercall;
    use std::cell::RefCell;
    use std::vec::Vec;

    /// One recorded call.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Call {
        pub op: u32,
        pub args: [usize; 5],
    }

    type Handler = dyn FnMut(u32, [usize; 5]) -> isize;

    /// Fake: `handler(op, args)` decides the result.
    pub struct FakeXen {
        pub calls: RefCell<Vec<Call>>,
        handler: RefCell<std::boxed::Box<Handler>>,
    }

    impl FakeXen {
        pub fn new(h: impl FnMut(u32, [usize; 5]) -> isize + 'static) -> Self {
            Self {
                calls: RefCell::new(Vec::new()),
                handler: RefCell::new(std::boxed::Box::new(h)),
            }
        }
        pub fn calls(&self) -> Vec<Call> {
            self.calls.borrow().clone()
        }
    }

    impl Hypercall for FakeXen {
        unsafe fn hypercall(&self, op: u32, args: [usize; 5]) -> isize {
            self.calls.borrow_mut().push(Call { op, args });
            (self.handler.borrow_mut())(op, args)
        }
    }

    /// Reads a `T` through a hypercall pointer argument (the test owns the memory).
    pub fn read<T: Copy>(p: usize) -> T {
        // SAFETY: (test only) `p` is the address of a live argument struct on the
        // wrapper's stack, valid for the duration of the hypercall.
        unsafe { (p as *const T).read_unaligned() }
    }

    /// Writes a `T` through a hypercall pointer argument.
    pub fn write<T: Copy>(p: usize, v: T) {
        // SAFETY: (test only) as in `read`.
        unsafe { (p as *mut T).write_unaligned(v) }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::fake::{read, write, FakeXen};
    use super::*;
    use crate::abi::errno;

    #[test]
    fn add_to_physmap_passes_struct_pointer() {
        let f = FakeXen::new(|op, a| {
            assert_eq!(op, nr::MEMORY_OP);
            assert_eq!(a[0], memory::OP_ADD_TO_PHYSMAP as usize);
            let s: memory::AddToPhysmap = read(a[1]);
            assert_eq!(s.domid, 0x7FF0);
            assert_eq!(s.space, memory::SPACE_GRANT_TABLE);
            assert_eq!(s.idx, 3);
            assert_eq!(s.gpfn, 0x1234);
            0
        });
        // SAFETY: the fake hypervisor only checks the arguments.
        unsafe { Xen(&f).add_to_physmap(memory::SPACE_GRANT_TABLE, 3, Gfn(0x1234)) }.unwrap();
        assert_eq!(f.calls().len(), 1);
    }

    #[test]
    fn negative_result_becomes_errno() {
        let f = FakeXen::new(|_, _| -errno::ENOSYS);
        let e = Xen(&f).evtchn_send(Port(5)).unwrap_err();
        assert_eq!(
            e,
            XenError::Hypercall {
                op: nr::EVENT_CHANNEL_OP,
                cmd: evtchn::OP_SEND,
                rc: -38
            }
        );
        assert_eq!(e.errno(), Some(errno::ENOSYS));
    }

    #[test]
    fn xen_version_and_features() {
        let f = FakeXen::new(|op, a| {
            assert_eq!(op, nr::XEN_VERSION);
            match a[0] as u32 {
                version::XENVER_VERSION => (4 << 16) | 17,
                version::XENVER_GET_FEATURES => {
                    let mut fi: version::FeatureInfo = read(a[1]);
                    assert_eq!(fi.submap_idx, 0);
                    fi.submap = 1 << version::XENFEAT_HVM_CALLBACK_VECTOR;
                    write(a[1], fi);
                    0
                }
                _ => -errno::ENOSYS,
            }
        });
        let x = Xen(&f);
        assert_eq!(
            x.xen_version().unwrap(),
            XenVersion {
                major: 4,
                minor: 17
            }
        );
        assert_eq!(x.get_features(0).unwrap(), 1 << 8);
    }

    #[test]
    fn console_write_passes_count_and_buffer() {
        let f = FakeXen::new(|op, a| {
            assert_eq!(op, nr::CONSOLE_IO);
            assert_eq!(a[0], 0);
            assert_eq!(a[1], 5);
            // SAFETY: (test) the buffer is the caller's live slice.
            let s = unsafe { core::slice::from_raw_parts(a[2] as *const u8, a[1]) };
            assert_eq!(s, b"hello");
            0
        });
        Xen(&f).console_write(b"hello").unwrap();
    }

    #[test]
    fn gnttab_ops_pass_count_and_check_status() {
        let f = FakeXen::new(|op, a| {
            assert_eq!(op, nr::GRANT_TABLE_OP);
            assert_eq!(a[2], 1, "count");
            match a[0] as u32 {
                gnttab::OP_SET_VERSION => {
                    let v: gnttab::SetVersion = read(a[1]);
                    assert_eq!(v.version, 1);
                    0
                }
                gnttab::OP_QUERY_SIZE => {
                    let mut q: gnttab::QuerySize = read(a[1]);
                    assert_eq!(q.dom, 0x7FF0);
                    q.nr_frames = 1;
                    q.max_nr_frames = 32;
                    write(a[1], q);
                    0
                }
                gnttab::OP_MAP_GRANT_REF => {
                    let mut m: gnttab::MapGrantRef = read(a[1]);
                    assert_eq!((m.gref, m.dom, m.flags), (9, 1, gnttab::GNTMAP_HOST_MAP));
                    m.status = gnttab::GNTST_BAD_GNTREF;
                    write(a[1], m);
                    0
                }
                gnttab::OP_SETUP_TABLE => {
                    let s: gnttab::SetupTable = read(a[1]);
                    assert_eq!(s.nr_frames, 2);
                    // SAFETY: (test) frame_list points to the caller's 2-element array.
                    unsafe { (s.frame_list as *mut [u64; 2]).write([7, 8]) };
                    0
                }
                _ => -errno::ENOSYS,
            }
        });
        let x = Xen(&f);
        x.gnttab_set_version(1).unwrap();
        assert_eq!(
            x.gnttab_query_size().unwrap(),
            GrantTableSize {
                nr_frames: 1,
                max_nr_frames: 32
            }
        );
        // SAFETY: the fake hypervisor maps nothing.
        let e = unsafe {
            x.gnttab_map_grant_ref(0x1000, gnttab::GNTMAP_HOST_MAP, GrantRef(9), DomId(1))
        }
        .unwrap_err();
        assert_eq!(e.grant_status(), Some(gnttab::GNTST_BAD_GNTREF));
        let mut frames = [0u64; 2];
        x.gnttab_setup_table(&mut frames).unwrap();
        assert_eq!(frames, [7, 8]);
    }

    #[test]
    fn sched_ops() {
        let f = FakeXen::new(|op, a| {
            assert_eq!(op, nr::SCHED_OP);
            match a[0] as u32 {
                sched::OP_YIELD | sched::OP_BLOCK => {
                    assert_eq!(a[1], 0);
                    0
                }
                sched::OP_SHUTDOWN => {
                    let s: sched::Shutdown = read(a[1]);
                    assert_eq!(s.reason, sched::SHUTDOWN_REBOOT);
                    0
                }
                sched::OP_POLL => {
                    let p: sched::Poll = read(a[1]);
                    assert_eq!((p.nr_ports, p.timeout), (2, 99));
                    let ports: [u32; 2] = read(p.ports as usize);
                    assert_eq!(ports, [3, 4]);
                    0
                }
                _ => -errno::ENOSYS,
            }
        });
        let x = Xen(&f);
        x.sched_yield().unwrap();
        x.sched_block().unwrap();
        x.sched_shutdown(ShutdownReason::Reboot).unwrap();
        x.sched_poll(&[Port(3), Port(4)], 99).unwrap();
        assert_eq!(f.calls().len(), 4);
    }

    #[test]
    fn evtchn_ops() {
        let f = FakeXen::new(|op, a| {
            assert_eq!(op, nr::EVENT_CHANNEL_OP);
            match a[0] as u32 {
                evtchn::OP_ALLOC_UNBOUND => {
                    let mut s: evtchn::AllocUnbound = read(a[1]);
                    assert_eq!((s.dom, s.remote_dom), (0x7FF0, 0));
                    s.port = 7;
                    write(a[1], s);
                    0
                }
                evtchn::OP_BIND_INTERDOMAIN => {
                    let mut s: evtchn::BindInterdomain = read(a[1]);
                    assert_eq!((s.remote_dom, s.remote_port), (3, 11));
                    s.local_port = 12;
                    write(a[1], s);
                    0
                }
                evtchn::OP_BIND_VIRQ => {
                    let mut s: evtchn::BindVirq = read(a[1]);
                    assert_eq!((s.virq, s.vcpu), (evtchn::VIRQ_TIMER, 0));
                    s.port = 99_999; // out of the 2-level range
                    write(a[1], s);
                    0
                }
                evtchn::OP_SEND | evtchn::OP_CLOSE | evtchn::OP_UNMASK => {
                    let s: evtchn::PortArg = read(a[1]);
                    assert_eq!(s.port, 7);
                    0
                }
                evtchn::OP_STATUS => {
                    let mut s: evtchn::Status = read(a[1]);
                    assert_eq!((s.dom, s.port), (0x7FF0, 7));
                    s.status = evtchn::STATUS_INTERDOMAIN;
                    s.vcpu = 0;
                    s.u_dom = 3;
                    s.u_port = 11;
                    write(a[1], s);
                    0
                }
                _ => -errno::ENOSYS,
            }
        });
        let x = Xen(&f);
        assert_eq!(x.evtchn_alloc_unbound(DomId(0)).unwrap(), Port(7));
        assert_eq!(
            x.evtchn_bind_interdomain(DomId(3), Port(11)).unwrap(),
            Port(12)
        );
        assert!(matches!(
            x.evtchn_bind_virq(evtchn::VIRQ_TIMER, 0),
            Err(XenError::BadResult { value: 99_999, .. })
        ));
        x.evtchn_send(Port(7)).unwrap();
        x.evtchn_close(Port(7)).unwrap();
        x.evtchn_unmask(Port(7)).unwrap();
        assert_eq!(
            x.evtchn_status(Port(7)).unwrap(),
            EvtchnStatus {
                binding: EvtchnBinding::Interdomain {
                    remote: DomId(3),
                    remote_port: Port(11)
                },
                vcpu: 0
            }
        );
    }

    #[test]
    fn hvm_and_vcpu_ops() {
        let f = FakeXen::new(|op, a| match op {
            nr::HVM_OP => match a[0] as u32 {
                hvm::OP_GET_PARAM => {
                    let mut p: hvm::Param = read(a[1]);
                    assert_eq!((p.domid, p.index), (0x7FF0, hvm::PARAM_STORE_PFN));
                    p.value = 0xFEFFC;
                    write(a[1], p);
                    0
                }
                hvm::OP_SET_PARAM => {
                    let p: hvm::Param = read(a[1]);
                    assert_eq!(p.index, hvm::PARAM_CALLBACK_IRQ);
                    assert_eq!(p.value, hvm::callback_via_vector(0xF3));
                    0
                }
                hvm::OP_SET_EVTCHN_UPCALL_VECTOR => {
                    let v: hvm::UpcallVector = read(a[1]);
                    assert_eq!((v.vcpu, v.vector), (1, 0xF3));
                    0
                }
                _ => -errno::ENOSYS,
            },
            nr::VCPU_OP => {
                assert_eq!(a[1], 2, "vcpu id");
                match a[0] as u32 {
                    vcpu::OP_SET_SINGLESHOT_TIMER => {
                        let t: vcpu::SetSingleshotTimer = read(a[2]);
                        assert_eq!((t.timeout_abs_ns, t.flags), (1_000, 1));
                        -errno::ETIME
                    }
                    vcpu::OP_STOP_SINGLESHOT_TIMER => 0,
                    _ => -errno::ENOSYS,
                }
            }
            nr::SET_TIMER_OP => {
                assert_eq!(a[0], 5_000);
                0
            }
            _ => -errno::ENOSYS,
        });
        let x = Xen(&f);
        assert_eq!(x.hvm_get_param(hvm::PARAM_STORE_PFN).unwrap(), 0xFEFFC);
        // SAFETY: the fake hypervisor only records the call.
        unsafe { x.hvm_set_param(hvm::PARAM_CALLBACK_IRQ, hvm::callback_via_vector(0xF3)) }
            .unwrap();
        x.hvm_set_evtchn_upcall_vector(1, 0xF3).unwrap();
        assert_eq!(
            x.vcpu_set_singleshot_timer(2, 1_000, vcpu::SSHOTTMR_FUTURE)
                .unwrap_err()
                .errno(),
            Some(errno::ETIME)
        );
        x.vcpu_stop_singleshot_timer(2).unwrap();
        x.set_timer_op(5_000).unwrap();
    }

    #[test]
    fn memory_map_rejects_overlong_answer() {
        let f = FakeXen::new(|_, a| {
            let mut m: memory::MemoryMap = read(a[1]);
            assert_eq!(m.nr_entries, 2);
            m.nr_entries = 3;
            write(a[1], m);
            0
        });
        let mut buf = [memory::E820Entry::default(); 2];
        assert!(matches!(
            Xen(&f).memory_map(&mut buf),
            Err(XenError::BadResult { value: 3, .. })
        ));
    }
}
