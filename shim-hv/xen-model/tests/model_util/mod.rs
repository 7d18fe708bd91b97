//! Helpers shared by the model_* tests: raw hypercalls with guest-physical pointer
//! arguments (no unsafe), shared_info and grant-entry peeking.
#![allow(dead_code)]

use std::sync::Arc;

use hypercall::abi::shared_info as si;
use hypercall::abi::{evtchn, gnttab, hypercall_nr as nr, memory};
use hypercall::{DomId, Gfn, Port, SharedMem};
use xen_model::mem::GuestRegion;
use xen_model::{Domain, DomainSpec, GuestAccess, GuestPhysAccess, Hypervisor, HypervisorConfig};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Guest-physical address where argument structs are placed (first RAM page).
pub const SCRATCH: u64 = 0x100_000;
/// A second scratch area (array arguments).
pub const SCRATCH2: u64 = 0x100_800;

pub fn hv() -> Arc<Hypervisor> {
    Hypervisor::new(HypervisorConfig::default())
}

pub fn domain(hv: &Hypervisor, name: &str) -> Arc<Domain> {
    hv.create_domain(DomainSpec::new(name, 4))
        .expect("create domain")
}

/// A guest driven by raw hypercalls whose pointer arguments are guest-physical.
pub struct Phys {
    pub hv: Arc<Hypervisor>,
    pub dom: Arc<Domain>,
}

impl Phys {
    pub fn new(hv: &Arc<Hypervisor>, dom: &Arc<Domain>) -> Self {
        Phys {
            hv: hv.clone(),
            dom: dom.clone(),
        }
    }

    pub fn id(&self) -> DomId {
        self.dom.id()
    }

    pub fn raw(&self, op: u32, args: [usize; 5]) -> isize {
        let acc = GuestPhysAccess::new(self.dom.memory());
        self.hv.hypercall(&self.dom, op, args, &acc)
    }

    pub fn put<T: IntoBytes + Immutable>(&self, gpa: u64, v: &T) {
        GuestPhysAccess::new(self.dom.memory())
            .write(gpa, v.as_bytes())
            .unwrap();
    }

    pub fn get<T: FromBytes + IntoBytes>(&self, gpa: u64) -> T {
        let mut v = T::new_zeroed();
        GuestPhysAccess::new(self.dom.memory())
            .read(gpa, v.as_mut_bytes())
            .unwrap();
        v
    }

    /// `op(cmd, &arg)` with `arg` at SCRATCH; `arg` is updated from guest memory.
    pub fn op<T: IntoBytes + FromBytes + Immutable>(
        &self,
        op: u32,
        cmd: u32,
        arg: &mut T,
    ) -> isize {
        self.put(SCRATCH, arg);
        let r = self.raw(op, [cmd as usize, SCRATCH as usize, 0, 0, 0]);
        *arg = self.get(SCRATCH);
        r
    }

    /// `op(cmd, &arg, count)` (grant_table_op style).
    pub fn op3<T: IntoBytes + FromBytes + Immutable>(
        &self,
        op: u32,
        cmd: u32,
        arg: &mut T,
        count: usize,
    ) -> isize {
        self.put(SCRATCH, arg);
        let r = self.raw(op, [cmd as usize, SCRATCH as usize, count, 0, 0]);
        *arg = self.get(SCRATCH);
        r
    }

    pub fn evtchn<T: IntoBytes + FromBytes + Immutable>(&self, cmd: u32, arg: &mut T) -> isize {
        self.op(nr::EVENT_CHANNEL_OP, cmd, arg)
    }

    pub fn alloc_unbound(&self, remote: u16) -> Result<Port, isize> {
        let mut a = evtchn::AllocUnbound {
            dom: DomId::SELF.0,
            remote_dom: remote,
            port: 0,
        };
        match self.evtchn(evtchn::OP_ALLOC_UNBOUND, &mut a) {
            0 => Ok(Port(a.port)),
            e => Err(e),
        }
    }

    pub fn bind_interdomain(&self, remote: u16, remote_port: u32) -> Result<Port, isize> {
        let mut b = evtchn::BindInterdomain {
            remote_dom: remote,
            remote_port,
            ..Default::default()
        };
        match self.evtchn(evtchn::OP_BIND_INTERDOMAIN, &mut b) {
            0 => Ok(Port(b.local_port)),
            e => Err(e),
        }
    }

    pub fn bind_virq(&self, virq: u32, vcpu: u32) -> Result<Port, isize> {
        let mut b = evtchn::BindVirq {
            virq,
            vcpu,
            port: 0,
        };
        match self.evtchn(evtchn::OP_BIND_VIRQ, &mut b) {
            0 => Ok(Port(b.port)),
            e => Err(e),
        }
    }

    fn port_op(&self, cmd: u32, port: u32) -> isize {
        let mut p = evtchn::PortArg { port };
        self.evtchn(cmd, &mut p)
    }

    pub fn send(&self, port: u32) -> isize {
        self.port_op(evtchn::OP_SEND, port)
    }

    pub fn close(&self, port: u32) -> isize {
        self.port_op(evtchn::OP_CLOSE, port)
    }

    pub fn unmask(&self, port: u32) -> isize {
        self.port_op(evtchn::OP_UNMASK, port)
    }

    pub fn status(&self, port: u32) -> Result<evtchn::Status, isize> {
        let mut s = evtchn::Status {
            dom: DomId::SELF.0,
            port,
            ..Default::default()
        };
        match self.evtchn(evtchn::OP_STATUS, &mut s) {
            0 => Ok(s),
            e => Err(e),
        }
    }

    pub fn add_to_physmap(&self, space: u32, idx: u64, gfn: u64) -> isize {
        let mut a = memory::AddToPhysmap {
            domid: DomId::SELF.0,
            size: 0,
            space,
            idx,
            gpfn: gfn,
        };
        self.op(nr::MEMORY_OP, memory::OP_ADD_TO_PHYSMAP, &mut a)
    }

    pub fn shinfo(&self) -> GuestRegion {
        self.hv.shared_info(self.id()).unwrap()
    }

    pub fn pending(&self, port: Port) -> bool {
        let (w, b) = ((port.0 / 64) as usize, 1u64 << (port.0 % 64));
        self.shinfo().mem().load_u64(si::EVTCHN_PENDING + w * 8) & b != 0
    }

    pub fn set_mask(&self, port: Port, masked: bool) {
        let (w, b) = ((port.0 / 64) as usize, 1u64 << (port.0 % 64));
        let region = self.shinfo();
        let s = region.mem();
        if masked {
            s.fetch_or_u64(si::EVTCHN_MASK + w * 8, b);
        } else {
            s.fetch_and_u64(si::EVTCHN_MASK + w * 8, !b);
        }
    }

    pub fn upcall_pending(&self) -> bool {
        self.shinfo()
            .mem()
            .load_u8(si::vcpu_info(0) + si::VCPU_UPCALL_PENDING)
            != 0
    }

    pub fn pending_sel(&self) -> u64 {
        self.shinfo()
            .mem()
            .load_u64(si::vcpu_info(0) + si::VCPU_PENDING_SEL)
    }

    /// Maps grant frame `idx` at `gfn`.
    pub fn grant_frame(&self, idx: u64, gfn: u64) {
        assert_eq!(self.add_to_physmap(memory::SPACE_GRANT_TABLE, idx, gfn), 0);
    }

    /// [`Phys::entry`] with what keeps it mapped (for another thread).
    pub fn entry_region(&self, table_gfn: u64, gref: u32) -> GuestRegion {
        GuestRegion::new(self.dom.memory(), |m| {
            m.page(Gfn(table_gfn))?
                .sub(gref as usize * 8, 8)
                .ok_or(xen_model::mem::MemError::BadGfn(Gfn(table_gfn)))
        })
        .unwrap()
    }

    /// The grant entry of `gref` given frame 0 is at `table_gfn` (gref < 512).
    pub fn entry(&self, table_gfn: u64, gref: u32) -> SharedMem<'_> {
        self.dom
            .memory()
            .page(Gfn(table_gfn))
            .unwrap()
            .sub(gref as usize * 8, 8)
            .unwrap()
    }

    /// Writes a grant entry: frame first, then flags (as a frontend does).
    pub fn grant(&self, table_gfn: u64, gref: u32, domid: u16, frame: u64, readonly: bool) {
        let e = self.entry(table_gfn, gref);
        e.store_u32(4, frame as u32);
        e.store_u16(2, domid);
        let flags = gnttab::GTF_PERMIT_ACCESS | if readonly { gnttab::GTF_READONLY } else { 0 };
        e.store_u16(0, flags);
    }

    pub fn flags(&self, table_gfn: u64, gref: u32) -> u16 {
        self.entry(table_gfn, gref).load_u16(0)
    }

    /// Mini-OS `gnttab_end_access`: refuse while the backend reads/writes the page,
    /// else clear the entry atomically.
    pub fn end_access(&self, table_gfn: u64, gref: u32) -> bool {
        let e = self.entry(table_gfn, gref);
        let mut flags = e.load_u16(0);
        loop {
            if flags & (gnttab::GTF_READING | gnttab::GTF_WRITING) != 0 {
                return false;
            }
            match e.cmpxchg_u16(0, flags, 0) {
                Ok(_) => return true,
                Err(f) => flags = f,
            }
        }
    }
}
