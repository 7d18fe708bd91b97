//! PVH kernels boot in KVM and reach the xen model: small assembler guests
//! (tests/kvm_guests) for the boot ABI, the hypercall page, the console and
//! shutdown. Skipped, with one printed line, where /dev/kvm is absent or unusable.

mod kvm_util;

use std::time::Duration;

use kvm_util::{build_guest, kvm_usable, Vm};
use xen_model::{DomainState, ShutdownReason};

const T: Duration = Duration::from_secs(60);

/// The xen-rig's smallest PVH guest, unchanged but linked as ELF64: 32-bit
/// hypercalls through the page, port 0xE9, the PV console, poweroff.
#[test]
fn pvh_mini_prints_and_powers_off() {
    if !kvm_usable("pvh_mini_prints_and_powers_off") {
        return;
    }
    let elf = build_guest("pvh-mini");
    let mut vm = Vm::new("mini", 8);
    vm.boot(&elf, "").unwrap();
    let end = vm.wait_end(T);
    assert_eq!(end, DomainState::Shutdown(ShutdownReason::Poweroff));
    vm.console
        .wait_for(b"PVH-MINI: hello on the PV console", T)
        .unwrap();
    let dbg = String::from_utf8_lossy(&vm.guest().debug_output()).into_owned();
    assert!(dbg.contains("PVH-MINI: hello via port 0xe9"), "{dbg:?}");
    let st = vm.guest().stats();
    assert!(st.by_reason["io_hypercall"] >= 4, "{st:?}");
    assert_eq!(st.by_reason["msr"], 1, "{st:?}");
    assert!(vm
        .log
        .lines()
        .iter()
        .any(|l| l.contains("(d1) PVH-MINI: hello via port 0xe9")));
}

/// Long mode with paging (pointer arguments are virtual), return codes for bad
/// input, shared_info in a hole, the clock, VIRQ_TIMER through the callback vector
/// (HLT and SCHEDOP_block).
#[test]
fn events_timer_and_bad_arguments_in_long_mode() {
    if !kvm_usable("events_timer_and_bad_arguments_in_long_mode") {
        return;
    }
    let elf = build_guest("pvh-events");
    let mut vm = Vm::new("events", 8);
    vm.boot(&elf, "").unwrap();
    let end = vm.wait_end(T);
    let dbg = String::from_utf8_lossy(&vm.guest().debug_output()).into_owned();
    assert_eq!(
        end,
        DomainState::Shutdown(ShutdownReason::Poweroff),
        "{dbg}"
    );
    for line in [
        "long mode\n",
        "xen_version 262161\n", // 4 << 16 | 17
        "unknown -38\n",
        "badptr -14\n",
        "hugecount -22\n",
        "shinfo 0\n",
        "gsi 0\n",
        "callback 0\n",
        "bind_virq 0\n",
        "singleshot 0\n",
        "TIMER OK\n",
        "BLOCK OK\n",
        "EVENTS DONE\n",
    ] {
        assert!(dbg.contains(line), "missing {line:?} in {dbg}");
    }
    assert!(!dbg.contains("FAIL"), "{dbg}");
    assert_eq!(vm.dom.shared_info_gfn(), Some(hypercall::Gfn(0xC0000)));
    let st = vm.guest().stats();
    assert!(st.injections >= 2, "{st:?}");
    // The unknown hypercall is logged once.
    let log = vm.log.lines();
    assert_eq!(
        log.iter().filter(|l| l.contains("hypercall 60")).count(),
        1,
        "{log:?}"
    );
    // The GSI callback is named once; the vector that follows is fine.
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("HVM_PARAM_CALLBACK_IRQ = 0x1 (type 0)"))
            .count(),
        1,
        "{log:?}"
    );
}
