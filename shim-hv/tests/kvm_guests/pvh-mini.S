/*
 * pvh-mini.S - the smallest useful PVH guest for xen-rig.sh: a stand-in for a
 * unikernel. Shows what a non-Linux PVH kernel needs:
 *   - an ELF note XEN_ELFNOTE_PHYS32_ENTRY (type 18) giving the 32-bit entry;
 *     Xen enters it in 32-bit protected mode, paging off, %ebx = start_info;
 *   - hypercalls through the hypercall page (MSR from CPUID 0x40000002);
 *   - the PV console: ring page HVM_PARAM_CONSOLE_PFN (17), event channel
 *     HVM_PARAM_CONSOLE_EVTCHN (18), read with HVMOP_get_param.
 * It prints one line to I/O port 0xe9 (shows up as "(d1) ..." in the Xen log)
 * and one line on the PV console (xenconsoled log / xl console), waits for the
 * console to drain, then powers off with SCHEDOP_shutdown.
 *
 * Build: gcc -nostdlib -static -no-pie -Wl,-T,guest.ld -Wl,--build-id=none \
 *            -o pvh-mini.elf pvh-mini.S
 * Run:   xen-rig.sh --no-shutdown-check --ready 'PVH-MINI: hello' pvh-mini.elf
 */
#define HC_SCHED_OP        29
#define HC_EVENT_CHANNEL_OP 32
#define HC_HVM_OP          34
#define HVMOP_GET_PARAM    1
#define EVTCHNOP_SEND      4
#define SCHEDOP_SHUTDOWN   2
#define DOMID_SELF         0x7ff0
#define CONS_OUT           1024   /* struct xencons_interface: in[1024], out[2048], */
#define CONS_OUT_CONS      3080   /* in_cons, in_prod, out_cons, out_prod (u32 each) */
#define CONS_OUT_PROD      3084

        .section .note.Xen, "a", @note
        .balign 4
        .long 4, 4, 18            /* namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz "Xen"
        .balign 4
        .long _start
        .balign 4

        .text
        .code32
        .globl _start
_start:
        mov  $stack_top, %esp
        /* 1. debug port 0xe9 */
        mov  $msg_e9, %esi
1:      lodsb
        test %al, %al
        jz   2f
        outb %al, $0xe9
        jmp  1b
2:
        /* 2. hypercall page: find the Xen CPUID leaves, write the page address to the MSR */
        mov  $0x40000000, %edi
3:      mov  %edi, %eax
        cpuid
        cmp  $0x566e6558, %ebx    /* "XenV" */
        je   4f
        add  $0x100, %edi
        cmp  $0x40010000, %edi
        jb   3b
        jmp  halt
4:      lea  2(%edi), %eax
        cpuid                     /* %ebx = MSR index */
        mov  %ebx, %ecx
        mov  $hypercall_page, %eax
        xor  %edx, %edx
        wrmsr

        /* 3. console pfn + event channel */
        movl $17, hvm_param_index
        mov  $HVMOP_GET_PARAM, %ebx
        mov  $hvm_param, %ecx
        call hypercall_page + HC_HVM_OP * 32
        mov  hvm_param_value, %eax
        shl  $12, %eax
        mov  %eax, cons_ring
        movl $18, hvm_param_index
        mov  $HVMOP_GET_PARAM, %ebx
        mov  $hvm_param, %ecx
        call hypercall_page + HC_HVM_OP * 32
        mov  hvm_param_value, %eax
        mov  %eax, evtchn_port

        /* 4. copy the message into the out ring */
        mov  cons_ring, %edi
        mov  CONS_OUT_PROD(%edi), %edx      /* prod */
        mov  $msg_cons, %esi
5:      lodsb
        test %al, %al
        jz   6f
        mov  %edx, %ecx
        and  $2047, %ecx
        mov  %al, CONS_OUT(%edi,%ecx)
        inc  %edx
        jmp  5b
6:      lock orl $0, (%esp)                 /* wmb */
        mov  %edx, CONS_OUT_PROD(%edi)
        mov  $EVTCHNOP_SEND, %ebx
        mov  $evtchn_port, %ecx
        call hypercall_page + HC_EVENT_CHANNEL_OP * 32

        /* 5. wait (bounded) until xenconsoled has consumed it */
        mov  $200000000, %ecx
7:      mov  CONS_OUT_CONS(%edi), %eax
        cmp  CONS_OUT_PROD(%edi), %eax
        je   8f
        pause
        loop 7b
8:
        /* 6. power off */
        mov  $SCHEDOP_SHUTDOWN, %ebx
        mov  $shutdown_reason, %ecx
        call hypercall_page + HC_SCHED_OP * 32
halt:   hlt
        jmp  halt

        .data
msg_e9:   .asciz "PVH-MINI: hello via port 0xe9\n"
msg_cons: .asciz "PVH-MINI: hello on the PV console\r\n"
        .balign 8
hvm_param:                 /* struct xen_hvm_param */
        .word DOMID_SELF, 0
hvm_param_index: .long 0
hvm_param_value: .quad 0
evtchn_port:     .long 0   /* struct evtchn_send */
cons_ring:       .long 0
shutdown_reason: .long 0   /* SHUTDOWN_poweroff */

        .bss
        .balign 4096
hypercall_page: .skip 4096
stack:          .skip 4096
stack_top:
