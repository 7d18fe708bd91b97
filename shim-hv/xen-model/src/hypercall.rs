//! The hypercall dispatcher, shared by every runner.
//!
//! Arguments come in as the five register values of the x86_64 ABI; pointer
//! arguments are read through a [`GuestAccess`] into private copies (`zerocopy`) and
//! validated. A guest gets an error code for anything wrong (docs/hostile-input.md rows 40-42):
//! unknown hypercall or sub-op → `-ENOSYS` (the guest continues), bad pointer →
//! `-EFAULT`, bad gfn / port / index → `-EINVAL`, grant ref out of the table → a
//! `GNTST_*` status. Nothing a guest passes can fail the host.

use std::time::Duration;

use ::hypercall::abi::errno::{EFAULT, EINVAL, ENOENT, ENOSYS, EPERM, ESRCH, ETIME};
use ::hypercall::abi::{
    console, evtchn, gnttab, hvm, hypercall_nr as nr, memory, sched, vcpu, version,
};
use ::hypercall::{DomId, Gfn, Port};

use super::access::{Efault, GuestAccess, GuestAccessExt};
use super::domain::{lock, Domain, ShutdownReason, HVM_NR_PARAMS};
use super::evtchn::Effects;
use super::mem::GuestRegion;
use super::{Hypervisor, DOMID_FIRST_RESERVED};

/// Longest a single `SCHEDOP_block` (or one slice of `SCHEDOP_poll`) waits.
pub const BLOCK_SLICE: Duration = Duration::from_millis(10);
/// Longest `SCHEDOP_poll` without a timeout waits before returning (spuriously).
pub const POLL_MAX: Duration = Duration::from_millis(100);
/// Most ports one `SCHEDOP_poll` may name (Xen: 128).
const POLL_MAX_PORTS: u32 = 128;

/// XENFEAT bits for an HVM/PVH guest of this model (QEMU's set minus hvm_pirqs).
const FEATURES_SUBMAP0: u32 = 1 << version::XENFEAT_WRITABLE_PAGE_TABLES
    | 1 << version::XENFEAT_WRITABLE_DESCRIPTOR_TABLES
    | 1 << version::XENFEAT_AUTO_TRANSLATED_PHYSMAP
    | 1 << version::XENFEAT_SUPERVISOR_MODE_KERNEL
    | 1 << version::XENFEAT_HVM_CALLBACK_VECTOR
    | 1 << version::XENFEAT_HVM_SAFE_PVCLOCK;
const _: () = assert!(FEATURES_SUBMAP0 == 0x30f);

// console_io
const CONSOLE_CHUNK: usize = 256;
/// Most bytes one `CONSOLEIO_write` may carry (bounded work per hypercall).
pub const CONSOLE_WRITE_MAX: u32 = 64 * 1024;

// gnttab
const INVALID_GFN: u64 = u64::MAX;

type HcResult = Result<isize, isize>;

impl From<Efault> for isize {
    fn from(_: Efault) -> isize {
        -EFAULT
    }
}

fn finish(r: HcResult) -> isize {
    r.unwrap_or_else(|e| e)
}

impl Hypervisor {
    /// Handles hypercall `op` from `dom` with register arguments `args`; pointer
    /// arguments are read and written through `mem`. Returns what goes into rax.
    pub fn hypercall(
        &self,
        dom: &Domain,
        op: u32,
        args: [usize; 5],
        mem: &dyn GuestAccess,
    ) -> isize {
        if dom.is_dying() {
            return -ESRCH;
        }
        finish(match op {
            nr::MEMORY_OP => self.memory_op(dom, args[0], args[1] as u64, mem),
            nr::XEN_VERSION => self.xen_version(dom, args[0], args[1] as u64, mem),
            nr::CONSOLE_IO => self.console_io(dom, args[0], args[1] as u32, args[2] as u64, mem),
            nr::GRANT_TABLE_OP => {
                self.grant_table_op(dom, args[0], args[1] as u64, args[2] as u32, mem)
            }
            nr::SCHED_OP => self.sched_op(dom, args[0], args[1] as u64, mem),
            nr::EVENT_CHANNEL_OP => self.event_channel_op(dom, args[0], args[1] as u64, mem),
            nr::HVM_OP => self.hvm_op(dom, args[0], args[1] as u64, mem),
            nr::VCPU_OP => self.vcpu_op(dom, args[0], args[1] as u32, args[2] as u64, mem),
            nr::SET_TIMER_OP => self.set_timer(dom, args[0] as u64),
            _ => Err(-ENOSYS),
        })
    }

    /// `DOMID_SELF` or the caller's own id; other domains are not ours to touch.
    fn check_self(&self, dom: &Domain, id: u16) -> Result<(), isize> {
        if id == DomId::SELF.0 || id == dom.id().0 {
            Ok(())
        } else if self.domain(DomId(id)).is_some() || id == 0 {
            Err(-EPERM)
        } else {
            Err(-ESRCH)
        }
    }

    fn resolve(dom: &Domain, id: u16) -> DomId {
        if id == DomId::SELF.0 {
            dom.id()
        } else {
            DomId(id)
        }
    }

    // ---- memory_op -----------------------------------------------------------------

    fn memory_op(&self, dom: &Domain, cmd: usize, arg: u64, mem: &dyn GuestAccess) -> HcResult {
        if cmd >> memory::MEMOP_EXTENT_SHIFT != 0 {
            // Continuation extents: only for the batch ops we do not implement.
            return Err(-EINVAL);
        }
        match u32::try_from(cmd & memory::MEMOP_CMD_MASK as usize) {
            Ok(memory::OP_ADD_TO_PHYSMAP) => self.add_to_physmap(dom, arg, mem),
            Ok(memory::OP_MEMORY_MAP) => Self::memory_map(dom, arg, mem),
            Ok(memory::OP_CURRENT_RESERVATION | memory::OP_MAXIMUM_RESERVATION) => {
                let id: u16 = mem.read_obj(arg)?;
                self.check_self(dom, id)?;
                Ok(dom.memory.pages() as isize)
            }
            _ => Err(-ENOSYS),
        }
    }

    fn add_to_physmap(&self, dom: &Domain, arg: u64, mem: &dyn GuestAccess) -> HcResult {
        let a: memory::AddToPhysmap = mem.read_obj(arg)?;
        self.check_self(dom, a.domid)?;
        let gfn = Gfn(a.gpfn);
        match a.space {
            memory::SPACE_SHARED_INFO => {
                if a.idx != 0 {
                    return Err(-EINVAL);
                }
                let page = GuestRegion::new(&dom.memory, |m| m.place(gfn)).map_err(|_| -EINVAL)?;
                // Hold the shinfo_gfn lock across the move so concurrent maps serialise.
                let mut at = lock(&dom.shinfo_gfn);
                lock(&self.evtchn)
                    .move_shared_info(dom.id(), page)
                    .map_err(|e| e.errno())?;
                *at = Some(gfn);
                Ok(0)
            }
            memory::SPACE_GRANT_TABLE => {
                if a.idx & memory::MAPIDX_GRANT_TABLE_STATUS != 0 {
                    return Err(-EINVAL);
                }
                let idx = u32::try_from(a.idx).map_err(|_| -EINVAL)?;
                lock(&dom.grants).map_frame(&dom.memory, idx, gfn)?;
                Ok(0)
            }
            _ => Err(-EINVAL),
        }
    }

    fn memory_map(dom: &Domain, arg: u64, mem: &dyn GuestAccess) -> HcResult {
        use memory::{E820_RAM, E820_RESERVED};
        const E820_ENTRY_SIZE: usize = core::mem::size_of::<memory::E820Entry>();
        let mut m: memory::MemoryMap = mem.read_obj(arg)?;
        let (first, special) = dom.allocatable();
        let end = dom.memory.end_gfn();
        let entries = [
            (first.addr(), special.addr() - first.addr(), E820_RAM),
            (special.addr(), end.addr() - special.addr(), E820_RESERVED),
        ];
        let n = (m.nr_entries as usize).min(entries.len());
        for (i, (addr, size, ty)) in entries.iter().take(n).enumerate() {
            let mut e = [0u8; E820_ENTRY_SIZE];
            e[0..8].copy_from_slice(&addr.to_le_bytes());
            e[8..16].copy_from_slice(&size.to_le_bytes());
            e[16..20].copy_from_slice(&ty.to_le_bytes());
            let at = m
                .buffer
                .checked_add((i * E820_ENTRY_SIZE) as u64)
                .ok_or(-EFAULT)?;
            mem.write(at, &e)?;
        }
        m.nr_entries = n as u32;
        mem.write_obj(arg, &m)?;
        Ok(0)
    }

    // ---- xen_version / console_io ----------------------------------------------------

    fn xen_version(&self, dom: &Domain, cmd: usize, arg: u64, mem: &dyn GuestAccess) -> HcResult {
        match u32::try_from(cmd) {
            Ok(version::XENVER_VERSION) => {
                let (maj, min) = self.config.xen_version;
                Ok(((maj as isize) << 16) | min as isize)
            }
            Ok(version::XENVER_EXTRAVERSION) => {
                let mut v = [0u8; version::EXTRAVERSION_LEN];
                v[..9].copy_from_slice(b".0-xenkit");
                mem.write(arg, &v)?;
                Ok(0)
            }
            Ok(version::XENVER_CAPABILITIES) => {
                let mut v = [0u8; 1024];
                let caps = b"hvm-3.0-x86_64";
                v[..caps.len()].copy_from_slice(caps);
                mem.write(arg, &v)?;
                Ok(0)
            }
            Ok(version::XENVER_GET_FEATURES) => {
                let mut fi: version::FeatureInfo = mem.read_obj(arg)?;
                fi.submap = if fi.submap_idx == 0 {
                    FEATURES_SUBMAP0
                } else {
                    0
                };
                mem.write_obj(arg, &fi)?;
                Ok(0)
            }
            Ok(version::XENVER_PAGESIZE) => Ok(::hypercall::PAGE_SIZE as isize),
            Ok(version::XENVER_GUEST_HANDLE) => {
                mem.write(arg, &dom.uuid().0)?;
                Ok(0)
            }
            _ => Err(-ENOSYS),
        }
    }

    fn console_io(
        &self,
        dom: &Domain,
        cmd: usize,
        count: u32,
        buf: u64,
        mem: &dyn GuestAccess,
    ) -> HcResult {
        match u32::try_from(cmd) {
            Ok(console::CONSOLEIO_WRITE) => {
                if count > CONSOLE_WRITE_MAX {
                    return Err(-EINVAL);
                }
                let mut chunk = [0u8; CONSOLE_CHUNK];
                let mut done = 0usize;
                let count = count as usize;
                while done < count {
                    let n = CONSOLE_CHUNK.min(count - done);
                    let at = buf.checked_add(done as u64).ok_or(-EFAULT)?;
                    mem.read(at, &mut chunk[..n])?;
                    dom.console_write(&chunk[..n]);
                    done += n;
                }
                Ok(0)
            }
            Ok(console::CONSOLEIO_READ) => Ok(0),
            _ => Err(-ENOSYS),
        }
    }

    // ---- grant_table_op ------------------------------------------------------------

    fn grant_table_op(
        &self,
        dom: &Domain,
        cmd: usize,
        uop: u64,
        count: u32,
        mem: &dyn GuestAccess,
    ) -> HcResult {
        match cmd {
            c if c == gnttab::OP_QUERY_SIZE as usize => {
                if count != 1 {
                    return Err(-EINVAL);
                }
                let mut q: gnttab::QuerySize = mem.read_obj(uop)?;
                match self.check_self(dom, q.dom) {
                    Ok(()) => {
                        let gs = lock(&dom.grants);
                        q.nr_frames = gs.nr_frames();
                        q.max_nr_frames = gs.max_frames();
                        q.status = gnttab::GNTST_OKAY;
                    }
                    Err(e) => q.status = Self::gntst_for(e),
                }
                mem.write_obj(uop, &q)?;
                Ok(0)
            }
            c if c == gnttab::OP_SET_VERSION as usize => {
                let mut v: gnttab::SetVersion = mem.read_obj(uop)?;
                let ok = v.version == 1;
                v.version = 1;
                mem.write_obj(uop, &v)?;
                if ok {
                    Ok(0)
                } else {
                    Err(-EINVAL)
                }
            }
            c if c == gnttab::OP_GET_VERSION as usize => {
                let mut v: gnttab::GetVersion = mem.read_obj(uop)?;
                self.check_self(dom, v.dom)?;
                v.version = 1;
                mem.write_obj(uop, &v)?;
                Ok(0)
            }
            c if c == gnttab::OP_SETUP_TABLE as usize => {
                if count != 1 {
                    return Err(-EINVAL);
                }
                let mut s: gnttab::SetupTable = mem.read_obj(uop)?;
                s.status = match self.check_self(dom, s.dom) {
                    Err(e) => Self::gntst_for(e),
                    Ok(()) => self.setup_table(dom, &s, mem),
                };
                mem.write_obj(uop, &s)?;
                Ok(0)
            }
            // Guests of this kit never map or copy grants themselves (backends are dom0).
            _ => Err(-ENOSYS),
        }
    }

    fn gntst_for(errno: isize) -> i16 {
        if errno == -EPERM {
            gnttab::GNTST_PERMISSION_DENIED
        } else {
            gnttab::GNTST_BAD_DOMAIN
        }
    }

    fn setup_table(&self, dom: &Domain, s: &gnttab::SetupTable, mem: &dyn GuestAccess) -> i16 {
        let frames: Vec<u64> = {
            let mut gs = lock(&dom.grants);
            if !gs.grow(s.nr_frames) {
                return gnttab::GNTST_GENERAL_ERROR;
            }
            (0..s.nr_frames)
                .map(|i| gs.frame_gfn(i).map_or(INVALID_GFN, |g| g.0))
                .collect()
        };
        for (i, f) in frames.iter().enumerate() {
            let at = s.frame_list.checked_add(i as u64 * 8);
            if at.is_none_or(|a| mem.write_obj(a, f).is_err()) {
                return gnttab::GNTST_BAD_VIRT_ADDR;
            }
        }
        gnttab::GNTST_OKAY
    }

    // ---- sched_op ------------------------------------------------------------------

    fn sched_op(&self, dom: &Domain, cmd: usize, arg: u64, mem: &dyn GuestAccess) -> HcResult {
        match cmd {
            c if c == sched::OP_YIELD as usize => {
                std::thread::yield_now();
                Ok(0)
            }
            c if c == sched::OP_BLOCK as usize => {
                self.block(dom);
                Ok(0)
            }
            c if c == sched::OP_SHUTDOWN as usize => {
                let s: sched::Shutdown = mem.read_obj(arg)?;
                let reason = ShutdownReason::from_code(s.reason).ok_or(-EINVAL)?;
                self.shutdown_domain(dom, reason);
                Ok(0)
            }
            c if c == sched::OP_POLL as usize => self.poll(dom, arg, mem),
            _ => Err(-ENOSYS),
        }
    }

    /// `SCHEDOP_block`: returns when an upcall is pending (at once if one already is),
    /// the timer fires, or after [`BLOCK_SLICE`].
    pub(crate) fn block(&self, dom: &Domain) {
        let due = self.check_timer(dom);
        let seen = dom.signal.epoch();
        if self.upcall_pending(dom.id()) || dom.state().is_finished() {
            return;
        }
        let wait = due.map_or(BLOCK_SLICE, |d| d.min(BLOCK_SLICE));
        dom.signal.wait_change(seen, wait);
        self.check_timer(dom);
    }

    fn poll(&self, dom: &Domain, arg: u64, mem: &dyn GuestAccess) -> HcResult {
        let p: sched::Poll = mem.read_obj(arg)?;
        if p.nr_ports > POLL_MAX_PORTS {
            return Err(-EINVAL);
        }
        let mut ports = Vec::with_capacity(p.nr_ports as usize);
        for i in 0..p.nr_ports as u64 {
            let at = p.ports.checked_add(i * 4).ok_or(-EFAULT)?;
            let port: u32 = mem.read_obj(at)?;
            if port >= evtchn::NR_PORTS_2L {
                return Err(-EINVAL);
            }
            ports.push(Port(port));
        }
        let start = self.now_ns();
        let _polling = dom.signal.poller();
        loop {
            let due = self.check_timer(dom);
            let seen = dom.signal.epoch();
            {
                let ev = lock(&self.evtchn);
                if ports.iter().any(|&pt| ev.is_pending(dom.id(), pt)) {
                    return Ok(0);
                }
            }
            let now = self.now_ns();
            let left = if p.timeout != 0 {
                if now >= p.timeout {
                    return Ok(0);
                }
                Duration::from_nanos(p.timeout - now)
            } else {
                let spent = Duration::from_nanos(now.saturating_sub(start));
                if spent >= POLL_MAX || dom.state().is_finished() {
                    return Ok(0);
                }
                POLL_MAX - spent
            };
            if dom.state().is_finished() {
                return Ok(0);
            }
            let mut wait = left.min(BLOCK_SLICE);
            if let Some(d) = due {
                wait = wait.min(d);
            }
            dom.signal.wait_change(seen, wait);
        }
    }

    // ---- event_channel_op ----------------------------------------------------------

    fn event_channel_op(
        &self,
        dom: &Domain,
        cmd: usize,
        arg: u64,
        mem: &dyn GuestAccess,
    ) -> HcResult {
        let me = dom.id();
        let mut fx = Effects::default();
        let r = match cmd {
            c if c == evtchn::OP_ALLOC_UNBOUND as usize => {
                let mut a: evtchn::AllocUnbound = mem.read_obj(arg)?;
                self.check_self(dom, a.dom)?;
                let remote = Self::resolve(dom, a.remote_dom);
                if remote.0 >= DOMID_FIRST_RESERVED {
                    return Err(-EINVAL);
                }
                let port = lock(&self.evtchn)
                    .alloc_unbound(me, remote)
                    .map_err(|e| e.errno())?;
                a.port = port.0;
                mem.write_obj(arg, &a)?;
                Ok(0)
            }
            c if c == evtchn::OP_BIND_INTERDOMAIN as usize => {
                let mut b: evtchn::BindInterdomain = mem.read_obj(arg)?;
                let remote = Self::resolve(dom, b.remote_dom);
                if remote != DomId::DOM0 && self.domain(remote).is_none() {
                    return Err(-ESRCH);
                }
                let r =
                    lock(&self.evtchn).bind_interdomain(me, remote, Port(b.remote_port), &mut fx);
                match r {
                    Ok(port) => {
                        b.local_port = port.0;
                        if let Err(e) = mem.write_obj(arg, &b) {
                            fx.run();
                            return Err(e.into());
                        }
                        Ok(0)
                    }
                    Err(e) => Err(e.errno()),
                }
            }
            c if c == evtchn::OP_BIND_VIRQ as usize => {
                let mut b: evtchn::BindVirq = mem.read_obj(arg)?;
                let port = lock(&self.evtchn)
                    .bind_virq(me, b.virq, b.vcpu)
                    .map_err(|e| e.errno())?;
                b.port = port.0;
                mem.write_obj(arg, &b)?;
                Ok(0)
            }
            c if c == evtchn::OP_BIND_IPI as usize => {
                let mut b: evtchn::BindIpi = mem.read_obj(arg)?;
                let port = lock(&self.evtchn)
                    .bind_ipi(me, b.vcpu)
                    .map_err(|e| e.errno())?;
                b.port = port.0;
                mem.write_obj(arg, &b)?;
                Ok(0)
            }
            c if c == evtchn::OP_CLOSE as usize => {
                let p: evtchn::PortArg = mem.read_obj(arg)?;
                lock(&self.evtchn)
                    .close(me, Port(p.port))
                    .map(|()| 0)
                    .map_err(|e| e.errno())
            }
            c if c == evtchn::OP_SEND as usize => {
                let p: evtchn::PortArg = mem.read_obj(arg)?;
                let r = lock(&self.evtchn).send(me, Port(p.port), &mut fx);
                r.map(|()| 0).map_err(|e| e.errno())
            }
            c if c == evtchn::OP_STATUS as usize => {
                let s: evtchn::Status = mem.read_obj(arg)?;
                self.check_self(dom, s.dom)?;
                let st = lock(&self.evtchn)
                    .status(me, Port(s.port))
                    .map_err(|e| e.errno())?;
                mem.write_obj(arg, &evtchn::Status { dom: s.dom, ..st })?;
                Ok(0)
            }
            c if c == evtchn::OP_UNMASK as usize => {
                let p: evtchn::PortArg = mem.read_obj(arg)?;
                let r = lock(&self.evtchn).unmask(me, Port(p.port), &mut fx);
                r.map(|()| 0).map_err(|e| e.errno())
            }
            _ => Err(-ENOSYS),
        };
        fx.run();
        r
    }

    // ---- hvm_op --------------------------------------------------------------------

    fn hvm_op(&self, dom: &Domain, cmd: usize, arg: u64, mem: &dyn GuestAccess) -> HcResult {
        match cmd {
            c if c == hvm::OP_SET_PARAM as usize => {
                let p: hvm::Param = mem.read_obj(arg)?;
                self.check_self(dom, p.domid)?;
                if p.index >= HVM_NR_PARAMS {
                    return Err(-EINVAL);
                }
                // What Xen lets a guest set on itself (hvm_allow_set_param).
                match p.index {
                    hvm::PARAM_CALLBACK_IRQ
                    | hvm::PARAM_STORE_EVTCHN
                    | hvm::PARAM_CONSOLE_EVTCHN => {
                        lock(&dom.params)[p.index as usize] = p.value;
                        Ok(0)
                    }
                    _ => Err(-EPERM),
                }
            }
            c if c == hvm::OP_GET_PARAM as usize => {
                let mut p: hvm::Param = mem.read_obj(arg)?;
                self.check_self(dom, p.domid)?;
                p.value = dom.hvm_param(p.index).ok_or(-EINVAL)?;
                mem.write_obj(arg, &p)?;
                Ok(0)
            }
            c if c == hvm::OP_SET_EVTCHN_UPCALL_VECTOR as usize => {
                let u: hvm::UpcallVector = mem.read_obj(arg)?;
                if u.vector < 0x10 {
                    return Err(-EINVAL);
                }
                let mut v = lock(&dom.upcall_vectors);
                let slot = v.get_mut(u.vcpu as usize).ok_or(-ENOENT)?;
                *slot = Some(u.vector);
                Ok(0)
            }
            _ => Err(-ENOSYS),
        }
    }

    // ---- vcpu_op / set_timer_op ----------------------------------------------------

    fn vcpu_op(
        &self,
        dom: &Domain,
        cmd: usize,
        vcpu: u32,
        arg: u64,
        mem: &dyn GuestAccess,
    ) -> HcResult {
        if vcpu >= dom.vcpus() {
            return Err(-ENOENT);
        }
        match u32::try_from(cmd) {
            Ok(vcpu::OP_IS_UP) => Ok((vcpu == 0) as isize),
            Ok(vcpu::OP_SET_SINGLESHOT_TIMER) => {
                let t: vcpu::SetSingleshotTimer = mem.read_obj(arg)?;
                if t.flags & vcpu::SSHOTTMR_FUTURE != 0 && t.timeout_abs_ns < self.now_ns() {
                    return Err(-ETIME);
                }
                if vcpu == 0 {
                    *lock(&dom.timer) = Some(t.timeout_abs_ns);
                }
                Ok(0)
            }
            Ok(vcpu::OP_STOP_SINGLESHOT_TIMER) => {
                if vcpu == 0 {
                    *lock(&dom.timer) = None;
                }
                Ok(0)
            }
            // Accepted and ignored: the model has no periodic tick or runstate area.
            Ok(vcpu::OP_SET_PERIODIC_TIMER | vcpu::OP_STOP_PERIODIC_TIMER) => Ok(0),
            Ok(vcpu::OP_REGISTER_RUNSTATE_MEMORY_AREA) => Ok(0),
            _ => Err(-ENOSYS),
        }
    }

    fn set_timer(&self, dom: &Domain, deadline: u64) -> HcResult {
        *lock(&dom.timer) = (deadline != 0).then_some(deadline);
        Ok(0)
    }
}
