/*
 * pvh-events.S - a 64-bit PVH guest for the KVM runner's tests. From the 32-bit
 * PVH entry it switches to long mode with paging (identity map of 4 GiB, 2 MiB
 * pages), so hypercall pointers are virtual addresses. Then it checks, printing
 * one line per step on port 0xE9:
 *   - xen_version (XENVER_version) returns 4.17;
 *   - an unknown hypercall returns -ENOSYS (-38);
 *   - a pointer that does not translate gives -EFAULT (-14); a huge console
 *     count gives -EINVAL (-22);
 *   - shared_info mapped at a hole (gfn 0xC0000, 3 GiB, far above RAM);
 *   - a GSI callback (accepted; the runner logs that it delivers none);
 *   - vcpu_time_info gives a clock; VIRQ_TIMER bound; a singleshot timer 10 ms
 *     ahead wakes `sti; hlt` through the callback vector (HVM_PARAM_CALLBACK_IRQ,
 *     type vector) and the clock has advanced at least 10 ms;
 *   - the same through SCHEDOP_block;
 * then "EVENTS DONE" and SCHEDOP_shutdown(poweroff).
 * Build: see tests/kvm_util (cc -nostdlib -static -no-pie -T guest.ld).
 */
#define HC_SET_TIMER_OP    15
#define HC_MEMORY_OP       12
#define HC_XEN_VERSION     17
#define HC_CONSOLE_IO      18
#define HC_VCPU_OP         24
#define HC_SCHED_OP        29
#define HC_EVENT_CHANNEL_OP 32
#define HC_HVM_OP          34
#define VECTOR             0xF3
#define SHINFO             0xC0000000

#include "pvh-entry.inc"

        /* xen_version */
        xor  %edi, %edi
        xor  %esi, %esi
        call hypercall_page + HC_XEN_VERSION * 32
        lea  msg_version, %rsi
        call put_result

        /* unknown hypercall 60 */
        call hypercall_page + 60 * 32
        lea  msg_enosys, %rsi
        call put_result

        /* hvm_op get_param with an unmapped pointer (above the 4 GiB we map) */
        mov  $1, %edi
        mov  $0x100000000, %rsi
        call hypercall_page + HC_HVM_OP * 32
        lea  msg_efault, %rsi
        call put_result

        /* console_io write with a huge count */
        xor  %edi, %edi
        mov  $0x100000, %esi
        lea  msg_long, %rdx
        call hypercall_page + HC_CONSOLE_IO * 32
        lea  msg_einval, %rsi
        call put_result

        /* shared_info into a hole */
        mov  $7, %edi               /* XENMEM_add_to_physmap */
        lea  xatp, %rsi
        call hypercall_page + HC_MEMORY_OP * 32
        lea  msg_shinfo, %rsi
        call put_result

        /* a GSI callback first (the runner says once that it delivers none) */
        xor  %edi, %edi             /* HVMOP_set_param */
        lea  param_gsi, %rsi
        call hypercall_page + HC_HVM_OP * 32
        lea  msg_gsi, %rsi
        call put_result

        /* callback vector */
        xor  %edi, %edi             /* HVMOP_set_param */
        lea  param_cb, %rsi
        call hypercall_page + HC_HVM_OP * 32
        lea  msg_callback, %rsi
        call put_result

        /* bind VIRQ_TIMER */
        mov  $1, %edi               /* EVTCHNOP_bind_virq */
        lea  bind_virq, %rsi
        call hypercall_page + HC_EVENT_CHANNEL_OP * 32
        lea  msg_bind, %rsi
        call put_result
        mov  bind_virq_port, %eax
        lea  msg_port, %rsi
        call put_result

        /* time check, singleshot timer in 10 ms, wait with sti; hlt */
        call now
        mov  %rax, t0
        add  $10000000, %rax
        mov  %rax, sshot
        mov  $8, %edi               /* VCPUOP_set_singleshot_timer */
        xor  %esi, %esi
        lea  sshot, %rdx
        call hypercall_page + HC_VCPU_OP * 32
        lea  msg_sshot, %rsi
        call put_result
3:      sti
        hlt
        cli
        cmpq $0, upcalls
        je   3b
        call now
        sub  t0, %rax
        cmp  $10000000, %rax
        jb   fail
        lea  msg_timer_ok, %rsi
        call puts

        /* again with set_timer_op and SCHEDOP_block */
        call now
        add  $5000000, %rax
        mov  %rax, %rdi
        call hypercall_page + HC_SET_TIMER_OP * 32
4:      sti
        mov  $1, %edi               /* SCHEDOP_block */
        xor  %esi, %esi
        call hypercall_page + HC_SCHED_OP * 32
        cli
        cmpq $2, upcalls
        jb   4b
        lea  msg_block_ok, %rsi
        call puts

        lea  msg_done, %rsi
        call puts
        mov  $2, %edi               /* SCHEDOP_shutdown */
        lea  shutdown_reason, %rsi
        call hypercall_page + HC_SCHED_OP * 32
fail:   lea  msg_fail, %rsi
        call puts
5:      cli
        hlt
        jmp  5b

/* The upcall: acknowledge like a guest OS (clear upcall_pending, take the
   selector, clear the pending bits we handle), count, return. */
upcall:
        push %rax
        push %rcx
        push %rdx
        mov  $SHINFO, %edx
        movb $0, (%rdx)
        xor  %eax, %eax
        xchg %rax, 8(%rdx)
        mov  bind_virq_port, %ecx
        lock btr %rcx, 2048(%rdx)
        incq upcalls
        pop  %rdx
        pop  %rcx
        pop  %rax
        iretq

/* now(): Xen system time in ns from vcpu_time_info (vcpu 0) -> rax */
now:
        push %rcx
        push %rdx
        push %r8
        push %r9
        push %r10
        mov  $SHINFO + 32, %r10d     /* vcpu_info[0].time */
1:      mov  (%r10), %r8d            /* version */
        test $1, %r8d
        jnz  1b
        rdtsc
        shl  $32, %rdx
        or   %rdx, %rax
        sub  8(%r10), %rax   /* - tsc_timestamp */
        movsbl 28(%r10), %ecx /* tsc_shift */
        test %ecx, %ecx
        js   2f
        shl  %cl, %rax
        jmp  3f
2:      neg  %ecx
        shr  %cl, %rax
3:      mov  24(%r10), %r9d  /* tsc_to_system_mul */
        mul  %r9
        shrd $32, %rdx, %rax
        add  16(%r10), %rax  /* + system_time */
        cmp  (%r10), %r8d
        jne  1b
        pop  %r10
        pop  %r9
        pop  %r8
        pop  %rdx
        pop  %rcx
        ret

#include "pvh-lib.inc"
xatp:   .word 0x7ff0, 1              /* domid SELF, size */
        .long 0                      /* space: shared_info */
        .quad 0                      /* idx */
        .quad SHINFO >> 12           /* gpfn: a hole */
param_gsi:
        .word 0x7ff0, 0
        .long 0                      /* HVM_PARAM_CALLBACK_IRQ */
        .quad 1                      /* type 0 (GSI), GSI 1 */
param_cb:
        .word 0x7ff0, 0
        .long 0                      /* HVM_PARAM_CALLBACK_IRQ */
        .quad (2 << 56) | VECTOR
bind_virq:
        .long 0, 0                   /* VIRQ_TIMER, vcpu 0 */
bind_virq_port:
        .long 0
        .balign 8
sshot:  .quad 0                      /* timeout_abs_ns */
        .long 0, 0                   /* flags */
shutdown_reason: .long 0
        .balign 8
t0:     .quad 0
upcalls: .quad 0
numbuf: .skip 24
numbuf_end: .byte 0
msg_long:     .asciz "long mode\n"
msg_version:  .asciz "xen_version "
msg_enosys:   .asciz "unknown "
msg_efault:   .asciz "badptr "
msg_einval:   .asciz "hugecount "
msg_shinfo:   .asciz "shinfo "
msg_callback: .asciz "callback "
msg_gsi:      .asciz "gsi "
msg_bind:     .asciz "bind_virq "
msg_port:     .asciz "port "
msg_sshot:    .asciz "singleshot "
msg_timer_ok: .asciz "TIMER OK\n"
msg_block_ok: .asciz "BLOCK OK\n"
msg_done:     .asciz "EVENTS DONE\n"
msg_fail:     .asciz "FAIL\n"

        .bss
        .balign 4096
pml4:   .skip 4096
pdpt:   .skip 4096
pds:    .skip 4 * 4096
idt:    .skip 4096
hypercall_page: .skip 4096
stack:  .skip 8192
stack_top:
