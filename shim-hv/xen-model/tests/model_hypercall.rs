//! The hypercall dispatcher against bad input: docs/hostile-input.md rows 40 (unknown hypercall or
//! sub-op → -ENOSYS, guest continues), 41 (pointer / gfn outside guest memory →
//! -EFAULT / -EINVAL, host unaffected), 42 (port / grant ref out of range → error),
//! plus the answers a PVH guest needs at boot.

mod model_util;

use hypercall::abi::errno::{EFAULT, EINVAL, ENOENT, ENOSYS, EPERM};
use hypercall::abi::{evtchn, gnttab, hvm, hypercall_nr as nr, memory, sched};
use hypercall::{DomId, Gfn};
use model_util::{domain, hv, Phys, SCRATCH, SCRATCH2};
use xen_model::{DomainState, ShutdownReason};

const ESRCH: isize = 3;

/// Pointers that are not guest RAM (RAM is gpa 0x100000..0x500000 for 4 MiB).
const BAD_PTRS: [usize; 5] = [0, 0xff_fff, 0x500_000, 0x4f_ffff, usize::MAX];

fn still_works(p: &Phys) {
    assert_eq!(p.dom.state(), DomainState::Running);
    assert_eq!(p.raw(nr::XEN_VERSION, [0, 0, 0, 0, 0]), 0x4_0011);
}

#[test]
fn unknown_hypercalls_and_sub_ops_are_enosys() {
    let hv = hv();
    let dom = domain(&hv, "a");
    let p = Phys::new(&hv, &dom);
    for op in [
        0u32,
        1,
        2,
        13,
        16,
        19,
        21,
        33,
        35,
        40,
        63,
        64,
        1000,
        u32::MAX,
    ] {
        assert_eq!(p.raw(op, [0; 5]), -ENOSYS, "hypercall {op}");
        assert_eq!(p.raw(op, [usize::MAX; 5]), -ENOSYS, "hypercall {op}");
    }
    let arg = SCRATCH as usize;
    for (op, cmd) in [
        (nr::MEMORY_OP, 0usize),
        (nr::MEMORY_OP, 63),
        (nr::XEN_VERSION, 2),
        (nr::XEN_VERSION, 1000),
        (nr::CONSOLE_IO, 2),
        (nr::GRANT_TABLE_OP, 3),
        (nr::GRANT_TABLE_OP, 12),
        (nr::SCHED_OP, 4),
        (nr::SCHED_OP, 5),
        (nr::SCHED_OP, usize::MAX),
        (nr::EVENT_CHANNEL_OP, 2),
        (nr::EVENT_CHANNEL_OP, 8),
        (nr::EVENT_CHANNEL_OP, 10),
        (nr::EVENT_CHANNEL_OP, 11),
        (nr::EVENT_CHANNEL_OP, usize::MAX),
        (nr::HVM_OP, 2),
        (nr::HVM_OP, 22),
        (nr::HVM_OP, usize::MAX),
        (nr::VCPU_OP, 0),
        (nr::VCPU_OP, 10),
        (nr::VCPU_OP, 13),
    ] {
        let args = if op == nr::VCPU_OP {
            [cmd, 0, arg, 0, 0]
        } else {
            [cmd, arg, 0, 0, 0]
        };
        assert_eq!(p.raw(op, args), -ENOSYS, "op {op} cmd {cmd}");
    }
    still_works(&p);
}

#[test]
fn bad_pointers_are_efault() {
    let hv = hv();
    let dom = domain(&hv, "a");
    let p = Phys::new(&hv, &dom);
    let ops: &[(u32, usize)] = &[
        (nr::MEMORY_OP, memory::OP_ADD_TO_PHYSMAP as usize),
        (nr::MEMORY_OP, memory::OP_MEMORY_MAP as usize),
        (nr::MEMORY_OP, 3),
        (nr::XEN_VERSION, 1),
        (nr::XEN_VERSION, 6),
        (nr::XEN_VERSION, 8),
        (nr::SCHED_OP, sched::OP_SHUTDOWN as usize),
        (nr::SCHED_OP, sched::OP_POLL as usize),
        (nr::EVENT_CHANNEL_OP, evtchn::OP_ALLOC_UNBOUND as usize),
        (nr::EVENT_CHANNEL_OP, evtchn::OP_BIND_INTERDOMAIN as usize),
        (nr::EVENT_CHANNEL_OP, evtchn::OP_BIND_VIRQ as usize),
        (nr::EVENT_CHANNEL_OP, 7),
        (nr::EVENT_CHANNEL_OP, evtchn::OP_CLOSE as usize),
        (nr::EVENT_CHANNEL_OP, evtchn::OP_SEND as usize),
        (nr::EVENT_CHANNEL_OP, evtchn::OP_STATUS as usize),
        (nr::EVENT_CHANNEL_OP, evtchn::OP_UNMASK as usize),
        (nr::HVM_OP, hvm::OP_SET_PARAM as usize),
        (nr::HVM_OP, hvm::OP_GET_PARAM as usize),
        (nr::HVM_OP, hvm::OP_SET_EVTCHN_UPCALL_VECTOR as usize),
    ];
    for &(op, cmd) in ops {
        for ptr in BAD_PTRS {
            assert_eq!(
                p.raw(op, [cmd, ptr, 0, 0, 0]),
                -EFAULT,
                "op {op} cmd {cmd} ptr {ptr:#x}"
            );
        }
    }
    for ptr in BAD_PTRS {
        for cmd in [
            gnttab::OP_QUERY_SIZE,
            gnttab::OP_SETUP_TABLE,
            gnttab::OP_SET_VERSION,
        ] {
            assert_eq!(
                p.raw(nr::GRANT_TABLE_OP, [cmd as usize, ptr, 1, 0, 0]),
                -EFAULT
            );
        }
        // vcpu_op's pointer is the third argument.
        assert_eq!(p.raw(nr::VCPU_OP, [8, 0, ptr, 0, 0]), -EFAULT);
        // console_io: count then buffer.
        assert_eq!(p.raw(nr::CONSOLE_IO, [0, 16, ptr, 0, 0]), -EFAULT);
    }
    // A buffer that starts in RAM and runs off its end.
    assert_eq!(p.raw(nr::CONSOLE_IO, [0, 0x2000, 0x4f_f000, 0, 0]), -EFAULT);
    // memory_map whose output buffer is not guest memory.
    p.put(SCRATCH, &[2u32, 0u32]);
    p.put(SCRATCH + 8, &0xdead_0000u64);
    assert_eq!(
        p.raw(
            nr::MEMORY_OP,
            [memory::OP_MEMORY_MAP as usize, SCRATCH as usize, 0, 0, 0]
        ),
        -EFAULT
    );
    // poll whose port array is not guest memory.
    let mut poll = sched::Poll {
        ports: 0xdead_0000,
        nr_ports: 1,
        _pad: 0,
        timeout: 1,
    };
    assert_eq!(p.op(nr::SCHED_OP, sched::OP_POLL, &mut poll), -EFAULT);
    still_works(&p);
}

#[test]
fn bad_gfns_indices_and_ports_are_einval() {
    let hv = hv();
    let dom = domain(&hv, "a");
    let p = Phys::new(&hv, &dom);
    for gfn in [0u64, 0xff, 0x500, 0x1_0000_0000, u64::MAX] {
        assert_eq!(
            p.add_to_physmap(memory::SPACE_SHARED_INFO, 0, gfn),
            -EINVAL,
            "{gfn:#x}"
        );
        assert_eq!(p.add_to_physmap(memory::SPACE_GRANT_TABLE, 0, gfn), -EINVAL);
    }
    assert_eq!(
        p.add_to_physmap(memory::SPACE_SHARED_INFO, 1, 0x101),
        -EINVAL
    );
    assert_eq!(
        p.add_to_physmap(2, 0, 0x101),
        -EINVAL,
        "gmfn space unsupported"
    );
    assert_eq!(p.add_to_physmap(u32::MAX, 0, 0x101), -EINVAL);
    assert_eq!(dom.shared_info_gfn(), None, "nothing was mapped");
    // memory_op continuation bits.
    assert_eq!(
        p.raw(
            nr::MEMORY_OP,
            [
                memory::OP_ADD_TO_PHYSMAP as usize | 1 << 6,
                SCRATCH as usize,
                0,
                0,
                0
            ]
        ),
        -EINVAL
    );
    // HVM params out of range, not settable by the guest, other domains.
    let mut prm = hvm::Param {
        domid: DomId::SELF.0,
        index: 39,
        ..Default::default()
    };
    assert_eq!(p.op(nr::HVM_OP, hvm::OP_GET_PARAM, &mut prm), -EINVAL);
    prm.index = u32::MAX;
    assert_eq!(p.op(nr::HVM_OP, hvm::OP_SET_PARAM, &mut prm), -EINVAL);
    prm.index = hvm::PARAM_STORE_PFN;
    prm.value = 0x1234;
    assert_eq!(p.op(nr::HVM_OP, hvm::OP_SET_PARAM, &mut prm), -EPERM);
    assert_eq!(dom.hvm_param(hvm::PARAM_STORE_PFN), Some(dom.store().gfn.0));
    let other = domain(&hv, "b");
    prm.domid = other.id().0;
    assert_eq!(p.op(nr::HVM_OP, hvm::OP_GET_PARAM, &mut prm), -EPERM);
    prm.domid = 0;
    assert_eq!(p.op(nr::HVM_OP, hvm::OP_GET_PARAM, &mut prm), -EPERM);
    prm.domid = 500;
    assert_eq!(p.op(nr::HVM_OP, hvm::OP_GET_PARAM, &mut prm), -ESRCH);
    // Upcall vector: reserved vectors, no such vcpu.
    let mut uv = hvm::UpcallVector {
        vcpu: 0,
        vector: 3,
        _pad: [0; 3],
    };
    assert_eq!(
        p.op(nr::HVM_OP, hvm::OP_SET_EVTCHN_UPCALL_VECTOR, &mut uv),
        -EINVAL
    );
    uv.vector = 0xf3;
    uv.vcpu = 1;
    assert_eq!(
        p.op(nr::HVM_OP, hvm::OP_SET_EVTCHN_UPCALL_VECTOR, &mut uv),
        -ENOENT
    );
    uv.vcpu = 0;
    assert_eq!(
        p.op(nr::HVM_OP, hvm::OP_SET_EVTCHN_UPCALL_VECTOR, &mut uv),
        0
    );
    assert_eq!(dom.upcall_vector(0), Some(0xf3));
    // vcpu_op on a vcpu that does not exist.
    assert_eq!(p.raw(nr::VCPU_OP, [3, 1, 0, 0, 0]), -ENOENT);
    assert_eq!(p.raw(nr::VCPU_OP, [3, usize::MAX, 0, 0, 0]), -ENOENT);
    // Event channels on behalf of another domain.
    let mut a = evtchn::AllocUnbound {
        dom: other.id().0,
        remote_dom: 0,
        port: 0,
    };
    assert_eq!(p.evtchn(evtchn::OP_ALLOC_UNBOUND, &mut a), -EPERM);
    a.dom = DomId::SELF.0;
    a.remote_dom = 0x7FF1;
    assert_eq!(p.evtchn(evtchn::OP_ALLOC_UNBOUND, &mut a), -EINVAL);
    // Shutdown with an unknown reason.
    let mut s = sched::Shutdown { reason: 99 };
    assert_eq!(p.op(nr::SCHED_OP, sched::OP_SHUTDOWN, &mut s), -EINVAL);
    // Poll: too many ports, port out of range.
    let mut poll = sched::Poll {
        ports: SCRATCH2,
        nr_ports: 129,
        _pad: 0,
        timeout: 1,
    };
    assert_eq!(p.op(nr::SCHED_OP, sched::OP_POLL, &mut poll), -EINVAL);
    p.put(SCRATCH2, &[4096u32]);
    poll.nr_ports = 1;
    assert_eq!(p.op(nr::SCHED_OP, sched::OP_POLL, &mut poll), -EINVAL);
    still_works(&p);
}

#[test]
fn boot_answers() {
    let hv = hv();
    let dom = domain(&hv, "a");
    let p = Phys::new(&hv, &dom);
    // xen_version: version, extraversion, features, page size, guest handle.
    assert_eq!(p.raw(nr::XEN_VERSION, [0, 0, 0, 0, 0]), 4 << 16 | 17);
    let mut fi = [0u32, 0];
    assert_eq!(p.op(nr::XEN_VERSION, 6, &mut fi), 0);
    assert_ne!(fi[1] & 1 << 2, 0, "auto_translated_physmap");
    assert_ne!(fi[1] & 1 << 8, 0, "hvm_callback_vector");
    let mut fi = [1u32, 0xffff];
    assert_eq!(p.op(nr::XEN_VERSION, 6, &mut fi), 0);
    assert_eq!(fi[1], 0);
    assert_eq!(p.raw(nr::XEN_VERSION, [7, 0, 0, 0, 0]), 4096);
    let mut h = [0u8; 16];
    assert_eq!(p.op(nr::XEN_VERSION, 8, &mut h), 0);
    assert_eq!(h, dom.uuid().0);
    // HVM params the kit reads at boot.
    for (idx, want) in [
        (hvm::PARAM_STORE_PFN, dom.store().gfn.0),
        (hvm::PARAM_STORE_EVTCHN, dom.store().port.0 as u64),
        (hvm::PARAM_CONSOLE_PFN, dom.console().gfn.0),
        (hvm::PARAM_CONSOLE_EVTCHN, dom.console().port.0 as u64),
    ] {
        let mut prm = hvm::Param {
            domid: DomId::SELF.0,
            index: idx,
            ..Default::default()
        };
        assert_eq!(p.op(nr::HVM_OP, hvm::OP_GET_PARAM, &mut prm), 0);
        assert_eq!(prm.value, want);
    }
    let mut prm = hvm::Param {
        domid: DomId::SELF.0,
        index: hvm::PARAM_CALLBACK_IRQ,
        value: 2 << 56 | 0xf3,
        ..Default::default()
    };
    assert_eq!(p.op(nr::HVM_OP, hvm::OP_SET_PARAM, &mut prm), 0);
    assert_eq!(dom.hvm_param(hvm::PARAM_CALLBACK_IRQ), Some(2 << 56 | 0xf3));
    // memory_map: RAM then the reserved special pages; clipped to the caller's room.
    p.put(SCRATCH, &[8u32, 0u32]);
    p.put(SCRATCH + 8, &SCRATCH2);
    assert_eq!(
        p.raw(
            nr::MEMORY_OP,
            [memory::OP_MEMORY_MAP as usize, SCRATCH as usize, 0, 0, 0]
        ),
        0
    );
    let n: u32 = p.get(SCRATCH);
    assert_eq!(n, 2);
    let e: [u8; 40] = p.get(SCRATCH2);
    let u64at = |o: usize| u64::from_le_bytes(e[o..o + 8].try_into().unwrap());
    let u32at = |o: usize| u32::from_le_bytes(e[o..o + 4].try_into().unwrap());
    assert_eq!(
        (u64at(0), u64at(8), u32at(16)),
        (0x100_000, 0x400_000 - 0x8000, 1)
    );
    assert_eq!((u64at(20), u64at(28), u32at(36)), (0x4f8_000, 0x8000, 2));
    p.put(SCRATCH, &[1u32, 0u32]);
    assert_eq!(
        p.raw(
            nr::MEMORY_OP,
            [memory::OP_MEMORY_MAP as usize, SCRATCH as usize, 0, 0, 0]
        ),
        0
    );
    assert_eq!(p.get::<u32>(SCRATCH), 1);
    // Reservation.
    p.put(SCRATCH, &DomId::SELF.0);
    assert_eq!(p.raw(nr::MEMORY_OP, [3, SCRATCH as usize, 0, 0, 0]), 1024);
    // console_io write lands in the domain's console log (several chunks).
    let text: Vec<u8> = (0..1000).map(|i| b'a' + (i % 26) as u8).collect();
    dom.memory().write(SCRATCH2, &text).unwrap();
    assert_eq!(
        p.raw(nr::CONSOLE_IO, [0, text.len(), SCRATCH2 as usize, 0, 0]),
        0
    );
    assert_eq!(dom.console_output(), text);
    assert_eq!(p.raw(nr::CONSOLE_IO, [1, 10, SCRATCH2 as usize, 0, 0]), 0);
    // Bounded work per call: absurd lengths are refused before anything is read.
    assert_eq!(
        p.raw(
            nr::CONSOLE_IO,
            [0, u32::MAX as usize, SCRATCH2 as usize, 0, 0]
        ),
        -EINVAL
    );
    assert_eq!(dom.console_output(), text);
    // vcpu_op accepted set.
    assert_eq!(p.raw(nr::VCPU_OP, [3, 0, 0, 0, 0]), 1);
    p.put(SCRATCH, &[hv.now_ns() + 1_000_000_000_000, 0u64]);
    assert_eq!(p.raw(nr::VCPU_OP, [8, 0, SCRATCH as usize, 0, 0]), 0);
    p.put(SCRATCH, &[1u64, 1u64]);
    assert_eq!(
        p.raw(nr::VCPU_OP, [8, 0, SCRATCH as usize, 0, 0]),
        -62,
        "ETIME: past with future flag"
    );
    assert_eq!(p.raw(nr::VCPU_OP, [9, 0, 0, 0, 0]), 0);
    assert_eq!(p.raw(nr::VCPU_OP, [6, 0, 0, 0, 0]), 0);
    assert_eq!(p.raw(nr::VCPU_OP, [7, 0, 0, 0, 0]), 0);
    // sched_op yield and block return.
    assert_eq!(p.raw(nr::SCHED_OP, [0, 0, 0, 0, 0]), 0);
    assert_eq!(p.raw(nr::SCHED_OP, [1, 0, 0, 0, 0]), 0);
}

#[test]
fn poll_returns_when_a_listed_port_is_pending() {
    let hv = hv();
    let dom = domain(&hv, "a");
    let p = Phys::new(&hv, &dom);
    let gp = p.alloc_unbound(0).unwrap();
    let dp = hv
        .dom0_bind_interdomain(dom.id(), gp, std::sync::Arc::new(|| {}))
        .unwrap();
    hv.ack_upcall(dom.id());
    p.set_mask(gp, true);
    hv.dom0_send(dp).unwrap();
    p.put(SCRATCH2, &[gp.0]);
    let mut poll = sched::Poll {
        ports: SCRATCH2,
        nr_ports: 1,
        _pad: 0,
        timeout: 0,
    };
    assert_eq!(p.op(nr::SCHED_OP, sched::OP_POLL, &mut poll), 0);
    // A timeout in the past returns at once even with nothing pending.
    p.put(SCRATCH2, &[1u32]);
    poll.timeout = 1;
    assert_eq!(p.op(nr::SCHED_OP, sched::OP_POLL, &mut poll), 0);
}

#[test]
fn shutdown_sets_the_state_and_dying_domains_get_esrch() {
    let hv = hv();
    let dom = domain(&hv, "a");
    let p = Phys::new(&hv, &dom);
    let rx = hv.subscribe();
    let mut s = sched::Shutdown {
        reason: sched::SHUTDOWN_REBOOT,
    };
    assert_eq!(p.op(nr::SCHED_OP, sched::OP_SHUTDOWN, &mut s), 0);
    assert_eq!(dom.state(), DomainState::Shutdown(ShutdownReason::Reboot));
    // The first reason wins.
    s.reason = sched::SHUTDOWN_CRASH;
    assert_eq!(p.op(nr::SCHED_OP, sched::OP_SHUTDOWN, &mut s), 0);
    assert_eq!(dom.state(), DomainState::Shutdown(ShutdownReason::Reboot));
    assert_eq!(
        rx.try_recv().unwrap(),
        xen_model::DomainEvent::StateChanged(
            dom.id(),
            DomainState::Shutdown(ShutdownReason::Reboot)
        )
    );
    assert!(rx.try_recv().is_err());
    hv.destroy_domain(dom.id()).unwrap();
    assert_eq!(p.raw(nr::XEN_VERSION, [0; 5]), -ESRCH);
    assert!(
        p.dom.memory().page(Gfn(0x100)).is_ok(),
        "memory lives while referenced"
    );
}

#[test]
fn misaligned_argument_structs_work_as_on_xen() {
    // Row 41 "misaligned": Xen copies arguments byte-wise; so do we (no fault, no UB).
    let hv = hv();
    let dom = domain(&hv, "a");
    let p = Phys::new(&hv, &dom);
    let at = SCRATCH + 1;
    p.put(
        at,
        &evtchn::AllocUnbound {
            dom: DomId::SELF.0,
            remote_dom: 0,
            port: 0,
        },
    );
    assert_eq!(
        p.raw(
            nr::EVENT_CHANNEL_OP,
            [evtchn::OP_ALLOC_UNBOUND as usize, at as usize, 0, 0, 0]
        ),
        0
    );
    let a: evtchn::AllocUnbound = p.get(at);
    assert_ne!(a.port, 0);
    // A struct straddling the end of RAM is a fault, not a partial read.
    let last = 0x500_000 - 4;
    assert_eq!(
        p.raw(
            nr::EVENT_CHANNEL_OP,
            [evtchn::OP_ALLOC_UNBOUND as usize, last, 0, 0, 0]
        ),
        -EFAULT
    );
    still_works(&p);
}
