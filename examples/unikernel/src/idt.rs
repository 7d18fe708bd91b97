//! Interrupts: an IDT with the 32 CPU exceptions (each one reports what happened
//! and crashes the domain, see [`crate::crash`]) and the Xen event upcall vector.
//!
//! Xen delivers events through the callback vector set with
//! `HVM_PARAM_CALLBACK_IRQ` (type "vector", [`UPCALL_VECTOR`]): no local APIC is
//! involved and no EOI is sent; Xen keeps injecting the vector while
//! `evtchn_upcall_pending` is set in this vCPU's `vcpu_info`, which the handler
//! clears by scanning the event channels ([`crate::xen::Kernel::upcall`]).
//!
//! The kernel runs with interrupts disabled except inside `Platform::wait`
//! (`sti; hlt`), so a handler never interrupts code that holds a lock.

use core::arch::{asm, global_asm};

/// The vector Xen's event upcall arrives on.
pub const UPCALL_VECTOR: u8 = 0xF3;

/// Registers saved by the common stub, then what the CPU pushed.
#[repr(C)]
#[derive(Debug)]
pub struct Frame {
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rax: u64,
    /// Vector number.
    pub vector: u64,
    /// Error code (0 for exceptions that push none).
    pub error: u64,
    /// Where the interrupt happened.
    pub rip: u64,
    cs: u64,
    rflags: u64,
    /// Stack pointer at the interrupt.
    pub rsp: u64,
    ss: u64,
}

// One stub per vector: exceptions that push no error code get a 0, so every frame
// has the same layout; the common stub saves the caller-saved registers (the
// kernel is built without SSE: no vector registers to keep) and calls
// `isr_dispatch(frame)`. 9 pushes + 2 words + the CPU's 5 keep %rsp 16-aligned
// at the call, as the ABI wants.
global_asm!(
    r#"
    .macro ISR_NOERR n
isr_\n:
    pushq $0
    pushq $\n
    jmp isr_common
    .endm
    .macro ISR_ERR n
isr_\n:
    pushq $\n
    jmp isr_common
    .endm

    .section .text
isr_common:
    push %rax
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    mov %rsp, %rdi
    cld
    call isr_dispatch
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rax
    add $16, %rsp
    iretq

    ISR_NOERR 0
    ISR_NOERR 1
    ISR_NOERR 2
    ISR_NOERR 3
    ISR_NOERR 4
    ISR_NOERR 5
    ISR_NOERR 6
    ISR_NOERR 7
    ISR_ERR 8
    ISR_NOERR 9
    ISR_ERR 10
    ISR_ERR 11
    ISR_ERR 12
    ISR_ERR 13
    ISR_ERR 14
    ISR_NOERR 15
    ISR_NOERR 16
    ISR_ERR 17
    ISR_NOERR 18
    ISR_NOERR 19
    ISR_NOERR 20
    ISR_ERR 21
    ISR_NOERR 22
    ISR_NOERR 23
    ISR_NOERR 24
    ISR_NOERR 25
    ISR_NOERR 26
    ISR_NOERR 27
    ISR_NOERR 28
    ISR_ERR 29
    ISR_ERR 30
    ISR_NOERR 31
    ISR_NOERR 243

    .section .rodata
    .balign 8
    .globl isr_table
isr_table:
    .quad isr_0, isr_1, isr_2, isr_3, isr_4, isr_5, isr_6, isr_7
    .quad isr_8, isr_9, isr_10, isr_11, isr_12, isr_13, isr_14, isr_15
    .quad isr_16, isr_17, isr_18, isr_19, isr_20, isr_21, isr_22, isr_23
    .quad isr_24, isr_25, isr_26, isr_27, isr_28, isr_29, isr_30, isr_31
    .quad isr_243
"#,
    options(att_syntax)
);

extern "C" {
    /// Stub addresses: vectors 0..32, then [`UPCALL_VECTOR`].
    static isr_table: [u64; 33];
}

/// One 16-byte interrupt-gate descriptor.
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    kind: u8,
    offset_mid: u16,
    offset_high: u32,
    zero: u32,
}

impl Gate {
    const EMPTY: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        kind: 0,
        offset_mid: 0,
        offset_high: 0,
        zero: 0,
    };

    fn new(handler: u64) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: 0x08,
            ist: 0,
            kind: 0x8E, // present, DPL 0, 64-bit interrupt gate
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            zero: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: spin::Once<Idt> = spin::Once::new();

/// Builds and loads the IDT.
pub fn init() {
    let idt = IDT.call_once(|| {
        let mut t = Idt([Gate::EMPTY; 256]);
        // SAFETY: `isr_table` is read-only data defined in the asm above.
        let table = unsafe { &*core::ptr::addr_of!(isr_table) };
        for (v, &h) in table.iter().take(32).enumerate() {
            if let Some(g) = t.0.get_mut(v) {
                *g = Gate::new(h);
            }
        }
        if let (Some(g), Some(&h)) = (t.0.get_mut(usize::from(UPCALL_VECTOR)), table.get(32)) {
            *g = Gate::new(h);
        }
        t
    });
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let p = Pointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: idt as *const Idt as u64,
    };
    // SAFETY: `IDT` is a static that lives forever and holds valid gates for the
    // stubs above; `lidt` only reads the 10-byte pointer.
    unsafe { asm!("lidt [{}]", in(reg) &p, options(readonly, nostack, preserves_flags)) };
}

/// Called by the common stub with the saved frame.
#[no_mangle]
extern "C" fn isr_dispatch(frame: &Frame) {
    if frame.vector == u64::from(UPCALL_VECTOR) {
        crate::xen::upcall();
        return;
    }
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects (ring 0).
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
    crate::crash(format_args!(
        "CPU exception {} ({}), error code {:#x}, rip {:#x}, rsp {:#x}, cr2 {:#x}",
        frame.vector,
        exception_name(frame.vector),
        frame.error,
        frame.rip,
        frame.rsp,
        cr2
    ));
}

fn exception_name(v: u64) -> &'static str {
    match v {
        0 => "divide error",
        1 => "debug",
        2 => "NMI",
        3 => "breakpoint",
        4 => "overflow",
        5 => "bound range",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack fault",
        13 => "general protection",
        14 => "page fault",
        16 => "x87 error",
        17 => "alignment check",
        18 => "machine check",
        19 => "SIMD error",
        _ => "reserved",
    }
}
