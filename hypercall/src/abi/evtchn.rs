//! Event channels (`event_channel.h`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `EVTCHNOP_bind_interdomain`
pub const OP_BIND_INTERDOMAIN: u32 = 0;
/// `EVTCHNOP_bind_virq`
pub const OP_BIND_VIRQ: u32 = 1;
/// `EVTCHNOP_close`
pub const OP_CLOSE: u32 = 3;
/// `EVTCHNOP_send`
pub const OP_SEND: u32 = 4;
/// `EVTCHNOP_status`
pub const OP_STATUS: u32 = 5;
/// `EVTCHNOP_alloc_unbound`
pub const OP_ALLOC_UNBOUND: u32 = 6;
/// `EVTCHNOP_unmask`
pub const OP_UNMASK: u32 = 9;

/// `VIRQ_TIMER`
pub const VIRQ_TIMER: u32 = 0;

/// Number of ports the 2-level ABI supports on x86_64 (64 * 64 * 64 bits... capped by
/// the 4096-bit pending bitmap in `shared_info`).
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
const _: () = assert!(core::mem::size_of::<AllocUnbound>() == 8);

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
const _: () = assert!(core::mem::size_of::<BindInterdomain>() == 12);

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
const _: () = assert!(core::mem::size_of::<BindVirq>() == 12);

/// `struct evtchn_close`, `evtchn_send` and `evtchn_unmask`: just a port.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PortArg {
    /// The port.
    pub port: u32,
}
const _: () = assert!(core::mem::size_of::<PortArg>() == 4);

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
    /// OUT: union: unbound `{dom}`, interdomain `{dom, port}`, pirq, virq.
    pub u_dom: u16,
    /// Padding inside the union.
    pub _pad2: u16,
    /// OUT: interdomain remote port / pirq / virq.
    pub u_port: u32,
}
const _: () = assert!(core::mem::size_of::<Status>() == 24);

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
