//! The PVH entry: Xen (or shim-hv) starts the kernel at `pvh_start` in 32-bit
//! protected mode, paging off, `%ebx` = guest-physical address of the
//! `hvm_start_info` (see `docs/unikernel.md`). This code zeroes `.bss`, builds page
//! tables that identity-map the first 4 GiB with 2 MiB pages (so every guest frame,
//! including the console and xenstore pages Xen puts just below 4 GiB, is at its
//! own address), enters long mode through a far jump (no 32-bit `iret`: KVM's
//! instruction emulator lacks it) and calls [`crate::kernel_main`] on the boot
//! stack.

use core::arch::global_asm;

/// Bytes of the boot stack (the only stack: the kernel has one vCPU and takes
/// interrupts on the same stack). `.ci/stack-budget` reports the deepest call
/// chains; the status page and the ready line show the high-water mark.
pub const STACK_BYTES: usize = 64 * 1024;
/// The byte the stack is filled with at boot.
const STACK_FILL: u8 = 0xA5;
/// Bytes at the bottom of the stack that must never be touched: if they are, the
/// stack overflowed (or nearly) and the kernel stops.
const STACK_GUARD: usize = 1024;

extern "C" {
    static boot_stack_bottom: u8;
}

fn stack_bottom() -> *const u8 {
    core::ptr::addr_of!(boot_stack_bottom)
}

/// The deepest the stack has been so far, in bytes (from the boot-time fill).
pub fn stack_used() -> usize {
    let bottom = stack_bottom();
    let untouched = (0..STACK_BYTES)
        // SAFETY: reads bytes inside the boot stack's own reservation; raw reads,
        // no reference to memory that live frames may be using.
        .take_while(|&i| unsafe { core::ptr::read_volatile(bottom.add(i)) } == STACK_FILL)
        .count();
    STACK_BYTES - untouched
}

/// Whether the guard area at the bottom of the stack was written.
pub fn stack_overflowed() -> bool {
    let bottom = stack_bottom();
    // SAFETY: as in `stack_used`.
    (0..STACK_GUARD).any(|i| unsafe { core::ptr::read_volatile(bottom.add(i)) } != STACK_FILL)
}

// The ELF note that makes this a PVH kernel: name "Xen", type
// XEN_ELFNOTE_PHYS32_ENTRY (18), a 32-bit entry address.
global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .balign 4
    .long pvh_start
    .balign 4
"#,
    options(att_syntax)
);

global_asm!(
    r#"
    .section .text.boot, "ax"
    .code32
    .globl pvh_start
pvh_start:
    cli
    cld
    mov %ebx, %esi

    /* .bss is not guaranteed to be zero (a reboot under some loaders) */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb
    mov %esi, boot_start_info

    /* fill the stack with a pattern, for its high-water mark (stack_used) */
    mov $boot_stack_bottom, %edi
    mov ${stack}, %ecx
    mov ${fill}, %eax
    rep stosb

    /* PML4[0] -> PDPT; PDPT[0..4] -> 4 page directories of 2 MiB pages */
    mov $boot_pdpt, %eax
    or $3, %eax
    mov %eax, boot_pml4
    mov $boot_pd, %eax
    or $3, %eax
    xor %ecx, %ecx
1:
    mov %eax, boot_pdpt(,%ecx,8)
    add $4096, %eax
    inc %ecx
    cmp $4, %ecx
    jb 1b

    /* 2048 entries: entry j maps j * 2 MiB (present, writable, large page) */
    xor %ecx, %ecx
2:
    mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, boot_pd(,%ecx,8)
    mov %ecx, %edx
    shr $11, %edx
    mov %edx, boot_pd+4(,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jb 2b

    /* CR4.PAE, CR3, EFER.LME, then CR0.PG|WP|PE */
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax
    mov %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $long_mode_entry

    .code64
long_mode_entry:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    mov $boot_stack_top, %rsp
    xor %ebp, %ebp
    mov boot_start_info(%rip), %edi
    call kernel_main
3:
    cli
    hlt
    jmp 3b

    .section .data.boot, "aw"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
boot_gdt_end:
    .balign 4
    .word 0
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt
    .balign 4
boot_start_info:
    .long 0

    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4 * 4096
    .globl boot_stack_bottom
boot_stack_bottom:
    .skip {stack}
    .globl boot_stack_top
boot_stack_top:
"#,
    stack = const STACK_BYTES,
    fill = const STACK_FILL,
    options(att_syntax)
);
