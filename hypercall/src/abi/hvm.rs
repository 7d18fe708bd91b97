//! HVM operations and parameters (`hvm/hvm_op.h`, `hvm/params.h`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `HVMOP_set_param`
pub const OP_SET_PARAM: u32 = 0;
/// `HVMOP_get_param`
pub const OP_GET_PARAM: u32 = 1;
/// `HVMOP_set_evtchn_upcall_vector`
pub const OP_SET_EVTCHN_UPCALL_VECTOR: u32 = 23;

/// `HVM_PARAM_CALLBACK_IRQ`
pub const PARAM_CALLBACK_IRQ: u32 = 0;
/// `HVM_PARAM_STORE_PFN`
pub const PARAM_STORE_PFN: u32 = 1;
/// `HVM_PARAM_STORE_EVTCHN`
pub const PARAM_STORE_EVTCHN: u32 = 2;
/// `HVM_PARAM_CONSOLE_PFN`
pub const PARAM_CONSOLE_PFN: u32 = 17;
/// `HVM_PARAM_CONSOLE_EVTCHN`
pub const PARAM_CONSOLE_EVTCHN: u32 = 18;

/// `struct xen_hvm_param`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Param {
    /// IN: domain (`DOMID_SELF`).
    pub domid: u16,
    /// Padding.
    pub _pad: u16,
    /// IN: parameter index.
    pub index: u32,
    /// IN/OUT: value.
    pub value: u64,
}
const _: () = assert!(core::mem::size_of::<Param>() == 16);

/// `struct xen_hvm_evtchn_upcall_vector`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct UpcallVector {
    /// vCPU.
    pub vcpu: u32,
    /// Vector.
    pub vector: u8,
    /// Padding.
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<UpcallVector>() == 8);
