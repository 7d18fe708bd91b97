//! Event channels (`event_channel.h`).

use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `EVTCHNOP_bind_interdomain`
pub const OP_BIND_INTERDOMAIN: u32 = 0;
/// `EVTCHNOP_bind_virq`
pub const OP_BIND_VIRQ: u32 = 1;
/// `EVTCHNOP_bind_pirq`
pub const OP_BIND_PIRQ: u32 = 2;
/// `EVTCHNOP_close`
pub const OP_CLOSE: u32 = 3;
/// `EVTCHNOP_send`
pub const OP_SEND: u32 = 4;
/// `EVTCHNOP_status`
pub const OP_STATUS: u32 = 5;
/// `EVTCHNOP_alloc_unbound`
pub const OP_ALLOC_UNBOUND: u32 = 6;
/// `EVTCHNOP_bind_ipi`
pub const OP_BIND_IPI: u32 = 7;
/// `EVTCHNOP_bind_vcpu`
pub const OP_BIND_VCPU: u32 = 8;
/// `EVTCHNOP_unmask`
pub const OP_UNMASK: u32 = 9;
/// `EVTCHNOP_reset`
pub const OP_RESET: u32 = 10;

/// `VIRQ_TIMER` (`xen.h`): per-vCPU timer (set_timer_op / singleshot timer).
pub const VIRQ_TIMER: u32 = 0;
/// `VIRQ_DEBUG` (`xen.h`): request to dump debug info.
pub const VIRQ_DEBUG: u32 = 1;
/// `VIRQ_CONSOLE` (`xen.h`): bytes on the emergency console (dom0 only).
pub const VIRQ_CONSOLE: u32 = 2;

/// Number of ports the 2-level ABI supports on x86_64: `EVTCHN_2L_NR_CHANNELS` =
/// `sizeof(xen_ulong_t) * sizeof(xen_ulong_t) * 64` = 64 selector bits x 64-bit words.
pub const NR_PORTS_2L: u32 = 4096;

/// `struct evtchn_alloc_unbound`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct AllocUnbound {
    /// IN: domain that gets the port (`DOMID_SELF`).
    pub dom: u16,
    /// IN: domain allowed to bind to it.
    pub remote_dom: u16,
    /// OUT: the new port.
    pub port: u32,
}
const _: () = {
    assert!(size_of::<AllocUnbound>() == 8);
    assert!(offset_of!(AllocUnbound, dom) == 0);
    assert!(offset_of!(AllocUnbound, remote_dom) == 2);
    assert!(offset_of!(AllocUnbound, port) == 4);
};

/// `struct evtchn_bind_interdomain`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BindInterdomain {
    /// IN: the remote domain.
    pub remote_dom: u16,
    /// Padding.
    pub _pad: u16,
    /// IN: the remote domain's unbound port.
    pub remote_port: u32,
    /// OUT: the local port.
    pub local_port: u32,
}
const _: () = {
    assert!(size_of::<BindInterdomain>() == 12);
    assert!(offset_of!(BindInterdomain, remote_dom) == 0);
    assert!(offset_of!(BindInterdomain, remote_port) == 4);
    assert!(offset_of!(BindInterdomain, local_port) == 8);
};

/// `struct evtchn_bind_virq`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BindVirq {
    /// IN: the virtual IRQ.
    pub virq: u32,
    /// IN: the vCPU.
    pub vcpu: u32,
    /// OUT: the port.
    pub port: u32,
}
const _: () = {
    assert!(size_of::<BindVirq>() == 12);
    assert!(offset_of!(BindVirq, virq) == 0);
    assert!(offset_of!(BindVirq, vcpu) == 4);
    assert!(offset_of!(BindVirq, port) == 8);
};

/// `struct evtchn_bind_ipi`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BindIpi {
    /// IN: the vCPU.
    pub vcpu: u32,
    /// OUT: the port.
    pub port: u32,
}
const _: () = {
    assert!(size_of::<BindIpi>() == 8);
    assert!(offset_of!(BindIpi, vcpu) == 0);
    assert!(offset_of!(BindIpi, port) == 4);
};

/// `struct evtchn_close`, `evtchn_send` and `evtchn_unmask`: just a port.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PortArg {
    /// The port.
    pub port: u32,
}
const _: () = assert!(size_of::<PortArg>() == 4);

/// `struct evtchn_status`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Status {
    /// IN: domain (`DOMID_SELF`).
    pub dom: u16,
    /// Padding.
    pub _pad: u16,
    /// IN: port.
    pub port: u32,
    /// OUT: one of the `STATUS_*` values.
    pub status: u32,
    /// OUT: vCPU notified.
    pub vcpu: u32,
    /// OUT: union at offset 16: unbound `{dom}`, interdomain `{dom, port}` (the
    /// remote domain here). For pirq/virq the union is a `u32` at offset 16: use
    /// [`Status::union_u32`].
    pub u_dom: u16,
    /// Padding inside the union (high half of the pirq/virq `u32`).
    pub _pad2: u16,
    /// OUT: interdomain remote port (offset 20).
    pub u_port: u32,
}
const _: () = {
    assert!(size_of::<Status>() == 24);
    assert!(offset_of!(Status, dom) == 0);
    assert!(offset_of!(Status, port) == 4);
    assert!(offset_of!(Status, status) == 8);
    assert!(offset_of!(Status, vcpu) == 12);
    assert!(offset_of!(Status, u_dom) == 16);
    assert!(offset_of!(Status, u_port) == 20);
};

impl Status {
    /// The union read as the `u32` it is for `EVTCHNSTAT_pirq` (`u.pirq`) and
    /// `EVTCHNSTAT_virq` (`u.virq`): both live at offset 16, overlapping `u_dom`.
    pub const fn union_u32(&self) -> u32 {
        let lo = self.u_dom.to_ne_bytes();
        let hi = self._pad2.to_ne_bytes();
        u32::from_ne_bytes([lo[0], lo[1], hi[0], hi[1]])
    }
}

/// `EVTCHNSTAT_closed`
pub const STATUS_CLOSED: u32 = 0;
/// `EVTCHNSTAT_unbound`
pub const STATUS_UNBOUND: u32 = 1;
/// `EVTCHNSTAT_interdomain`
pub const STATUS_INTERDOMAIN: u32 = 2;
/// `EVTCHNSTAT_pirq`
pub const STATUS_PIRQ: u32 = 3;
/// `EVTCHNSTAT_virq`
pub const STATUS_VIRQ: u32 = 4;
/// `EVTCHNSTAT_ipi`
pub const STATUS_IPI: u32 = 5;

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from `event_channel.h` and `xen.h`.
    #[test]
    fn constants_match_event_channel_h() {
        assert_eq!(OP_BIND_INTERDOMAIN, 0);
        assert_eq!(OP_BIND_VIRQ, 1);
        assert_eq!(OP_BIND_PIRQ, 2);
        assert_eq!(OP_CLOSE, 3);
        assert_eq!(OP_SEND, 4);
        assert_eq!(OP_STATUS, 5);
        assert_eq!(OP_ALLOC_UNBOUND, 6);
        assert_eq!(OP_BIND_IPI, 7);
        assert_eq!(OP_BIND_VCPU, 8);
        assert_eq!(OP_UNMASK, 9);
        assert_eq!(OP_RESET, 10);
        assert_eq!(STATUS_CLOSED, 0);
        assert_eq!(STATUS_UNBOUND, 1);
        assert_eq!(STATUS_INTERDOMAIN, 2);
        assert_eq!(STATUS_PIRQ, 3);
        assert_eq!(STATUS_VIRQ, 4);
        assert_eq!(STATUS_IPI, 5);
        assert_eq!(VIRQ_TIMER, 0);
        assert_eq!(VIRQ_DEBUG, 1);
        assert_eq!(VIRQ_CONSOLE, 2);
        assert_eq!(NR_PORTS_2L, 8 * 8 * 64);
    }

    #[test]
    fn status_union_reads_virq_at_offset_16() {
        let mut bytes = [0u8; 24];
        bytes[16..20].copy_from_slice(&0x0102_0304u32.to_ne_bytes());
        let s = Status::read_from_bytes(&bytes[..]).unwrap();
        assert_eq!(s.union_u32(), 0x0102_0304);
    }
}
