/*
 * blk-bench.S - a PVH guest that reads a disk through shim-hv's blkback at queue
 * depth 32, for benches/kvm.rs (VM exits per block request). A bare blkfront:
 * shared_info and one grant frame on RAM pages, grant refs 8 (ring) and 9..40
 * (one 4 KiB data page per request), an unbound event channel for dom0, the
 * callback vector; it prints "port N" and "go ADDR" on port 0xE9 and spins until
 * the bench has written the frontend's xenstore keys (as dom0), seen the backend
 * connect, and set the byte at ADDR. Then ROUNDS times: 32 one-page read
 * requests, one notification if req_event asks for it, and `sti; hlt` until all
 * 32 responses are in (each must be OKAY). Then "done", SCHEDOP_shutdown.
 * Long-mode entry and helpers: tests/kvm_guests/pvh-entry.inc, pvh-lib.inc.
 */
#define HC_MEMORY_OP       12
#define HC_SCHED_OP        29
#define HC_EVENT_CHANNEL_OP 32
#define HC_HVM_OP          34
#define VECTOR             0xF3
#define ROUNDS             250
#define REF_RING           8
#define REF_DATA           9

#include "../../tests/kvm_guests/pvh-entry.inc"


        /* shared_info and grant frame 0 on RAM pages */
        mov  $shinfo, %rax
        shr  $12, %rax
        mov  %rax, xatp_gpfn
        movl $0, xatp_space
        movq $0, xatp_idx
        mov  $7, %edi
        lea  xatp, %rsi
        call hypercall_page + HC_MEMORY_OP * 32
        test %rax, %rax
        jnz  fail
        mov  $gnttab, %rax
        shr  $12, %rax
        mov  %rax, xatp_gpfn
        movl $1, xatp_space
        mov  $7, %edi
        lea  xatp, %rsi
        call hypercall_page + HC_MEMORY_OP * 32
        test %rax, %rax
        jnz  fail

        /* callback vector */
        xor  %edi, %edi
        lea  param_cb, %rsi
        call hypercall_page + HC_HVM_OP * 32
        test %rax, %rax
        jnz  fail

        /* grants: ring, then 32 data pages, to domain 0, writable */
        mov  $ring, %rax
        shr  $12, %rax
        mov  %eax, gnttab + REF_RING * 8 + 4
        movw $0, gnttab + REF_RING * 8 + 2
        movw $1, gnttab + REF_RING * 8
        xor  %ecx, %ecx
1:      mov  %rcx, %rax
        shl  $12, %rax
        add  $data, %rax
        shr  $12, %rax
        mov  %eax, gnttab + REF_DATA * 8 + 4(,%rcx,8)
        movw $0, gnttab + REF_DATA * 8 + 2(,%rcx,8)
        movw $1, gnttab + REF_DATA * 8(,%rcx,8)
        inc  %ecx
        cmp  $32, %ecx
        jb   1b

        /* an unbound port for dom0 */
        mov  $6, %edi               /* EVTCHNOP_alloc_unbound */
        lea  alloc, %rsi
        call hypercall_page + HC_EVENT_CHANNEL_OP * 32
        test %rax, %rax
        jnz  fail
        mov  alloc_port, %eax
        mov  %eax, send_port
        lea  msg_port, %rsi
        call put_result
        mov  $go_flag, %eax
        lea  msg_go, %rsi
        call put_result

        /* ring header: events wanted at the first request/response */
        movl $1, ring + 4
        movl $1, ring + 12
2:      pause
        cmpb $0, go_flag
        je   2b

        xor  %r12d, %r12d           /* round */
        xor  %r13d, %r13d           /* req_prod (private) */
        xor  %r14d, %r14d           /* rsp_cons */
round:
        xor  %ecx, %ecx
3:      mov  %r13d, %eax
        add  %ecx, %eax
        and  $31, %eax
        imul $112, %rax, %rdi
        add  $ring + 64, %rdi
        movb $0, (%rdi)             /* BLKIF_OP_READ */
        movb $1, 1(%rdi)            /* one segment */
        movw $0, 2(%rdi)
        mov  %rcx, 8(%rdi)          /* id */
        mov  %rcx, %rax
        shl  $3, %rax
        mov  %rax, 16(%rdi)         /* sector: 8 per page */
        lea  REF_DATA(%rcx), %eax
        mov  %eax, 24(%rdi)         /* gref */
        movb $0, 28(%rdi)           /* first_sect */
        movb $7, 29(%rdi)           /* last_sect */
        inc  %ecx
        cmp  $32, %ecx
        jb   3b
        mov  %r13d, %r8d            /* old */
        add  $32, %r13d             /* new */
        mov  %r13d, ring            /* publish req_prod */
        mfence
        /* notify if (new - req_event) < (new - old) */
        mov  %r13d, %eax
        sub  ring + 4, %eax
        cmp  $32, %eax
        jae  4f
        mov  $4, %edi               /* EVTCHNOP_send */
        lea  send_port, %rsi
        call hypercall_page + HC_EVENT_CHANNEL_OP * 32
4:      xor  %r15d, %r15d           /* responses of this round */
5:      mov  ring + 8, %eax         /* rsp_prod */
        cmp  %eax, %r14d
        je   6f
        mov  %r14d, %eax
        and  $31, %eax
        imul $112, %rax, %rdi
        add  $ring + 64, %rdi
        cmpw $0, 10(%rdi)           /* status */
        jne  fail
        inc  %r14d
        inc  %r15d
        cmp  $32, %r15d
        jne  5b
        jmp  7f
6:      lea  1(%r14), %eax
        mov  %eax, ring + 12        /* rsp_event = rsp_cons + 1 */
        mfence
        cmp  ring + 8, %r14d
        jne  5b
        sti
        hlt
        cli
        jmp  5b
7:      inc  %r12d
        cmp  $ROUNDS, %r12d
        jb   round

        lea  msg_done, %rsi
        call puts
        mov  $2, %edi               /* SCHEDOP_shutdown */
        lea  shutdown_reason, %rsi
        call hypercall_page + HC_SCHED_OP * 32
fail:   lea  msg_fail, %rsi
        call puts
8:      cli
        hlt
        jmp  8b

upcall:
        push %rax
        push %rcx
        movb $0, shinfo
        xor  %eax, %eax
        xchg %rax, shinfo + 8
        mov  send_port, %ecx
        lock btr %rcx, shinfo + 2048
        pop  %rcx
        pop  %rax
        iretq

#include "../../tests/kvm_guests/pvh-lib.inc"
xatp:   .word 0x7ff0, 1
xatp_space: .long 0
xatp_idx:   .quad 0
xatp_gpfn:  .quad 0
param_cb:
        .word 0x7ff0, 0
        .long 0
        .quad (2 << 56) | VECTOR
alloc:  .word 0x7ff0, 0              /* dom SELF, remote dom 0 */
alloc_port: .long 0
send_port:  .long 0
shutdown_reason: .long 0
go_flag: .byte 0
        .balign 8
numbuf: .skip 24
numbuf_end: .byte 0
msg_long: .asciz "long mode\n"
msg_port: .asciz "port "
msg_go:   .asciz "go "
msg_done: .asciz "done\n"
msg_fail: .asciz "FAIL\n"

        .bss
        .balign 4096
pml4:   .skip 4096
pdpt:   .skip 4096
pds:    .skip 4 * 4096
idt:    .skip 4096
hypercall_page: .skip 4096
shinfo: .skip 4096
gnttab: .skip 4096
ring:   .skip 4096
data:   .skip 32 * 4096
stack:  .skip 8192
stack_top:
