//! HVM operations and parameters (`hvm/hvm_op.h`, `hvm/params.h`).

use core::mem::{offset_of, size_of};
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

/// `HVM_PARAM_CALLBACK_IRQ_TYPE_MASK`: bits 63..56 of the CALLBACK_IRQ value.
pub const CALLBACK_IRQ_TYPE_MASK: u64 = 0xFF00_0000_0000_0000;
/// Shift of the type field in the CALLBACK_IRQ value.
pub const CALLBACK_IRQ_TYPE_SHIFT: u32 = 56;
/// `HVM_PARAM_CALLBACK_TYPE_GSI`
pub const CALLBACK_TYPE_GSI: u64 = 0;
/// `HVM_PARAM_CALLBACK_TYPE_PCI_INTX`
pub const CALLBACK_TYPE_PCI_INTX: u64 = 1;
/// `HVM_PARAM_CALLBACK_TYPE_VECTOR` (x86): value bits 7..0 are the vector.
pub const CALLBACK_TYPE_VECTOR: u64 = 2;

/// The `HVM_PARAM_CALLBACK_IRQ` value that asks for upcalls on `vector` (all vCPUs
/// share it; needs `XENFEAT_hvm_callback_vector`).
pub const fn callback_via_vector(vector: u8) -> u64 {
    (CALLBACK_TYPE_VECTOR << CALLBACK_IRQ_TYPE_SHIFT) | vector as u64
}

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
const _: () = {
    assert!(size_of::<Param>() == 16);
    assert!(offset_of!(Param, domid) == 0);
    assert!(offset_of!(Param, index) == 4);
    assert!(offset_of!(Param, value) == 8);
};

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
const _: () = {
    assert!(size_of::<UpcallVector>() == 8);
    assert!(offset_of!(UpcallVector, vcpu) == 0);
    assert!(offset_of!(UpcallVector, vector) == 4);
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from `hvm/hvm_op.h` and `hvm/params.h`.
    #[test]
    fn constants_match_hvm_headers() {
        assert_eq!(OP_SET_PARAM, 0);
        assert_eq!(OP_GET_PARAM, 1);
        assert_eq!(OP_SET_EVTCHN_UPCALL_VECTOR, 23);
        assert_eq!(PARAM_CALLBACK_IRQ, 0);
        assert_eq!(PARAM_STORE_PFN, 1);
        assert_eq!(PARAM_STORE_EVTCHN, 2);
        assert_eq!(PARAM_CONSOLE_PFN, 17);
        assert_eq!(PARAM_CONSOLE_EVTCHN, 18);
        assert_eq!(CALLBACK_IRQ_TYPE_MASK, 0xFF00_0000_0000_0000);
        assert_eq!(CALLBACK_TYPE_GSI, 0);
        assert_eq!(CALLBACK_TYPE_PCI_INTX, 1);
        assert_eq!(CALLBACK_TYPE_VECTOR, 2);
        assert_eq!(callback_via_vector(0xF3), 0x0200_0000_0000_00F3);
    }
}
