//! Bad kernels and bad guests under the KVM runner (docs/hostile-input.md): one line naming the
//! file, nothing started, other domains unaffected; a spinning guest can still be
//! destroyed; a triple fault crashes only its domain.

mod kvm_util;

use std::time::{Duration, Instant};

use kvm_util::{build_guest, elf64, kvm_usable, Seg, Vm};
use xen_model::DomainState;

fn boot_err(vm: &mut Vm, kernel: &std::path::Path) -> String {
    let e = vm.boot(kernel, "").expect_err("boot must fail").to_string();
    assert!(!e.contains('\n'), "one line: {e:?}");
    assert!(
        e.contains(&kernel.display().to_string()),
        "names the file: {e}"
    );
    e
}

#[test]
fn bad_kernels_get_one_line_naming_the_file() {
    if !kvm_usable("bad_kernels_get_one_line_naming_the_file") {
        return;
    }
    let code = [0xf4u8]; // hlt
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));

    let text = dir.join("not-an-elf.txt");
    std::fs::write(&text, "hello, I am not a kernel\n").unwrap();
    let mut vm = Vm::new("bad", 8);
    let e = boot_err(&mut vm, &text);
    assert!(e.contains("not an ELF"), "{e}");

    let empty = dir.join("empty.elf");
    std::fs::write(&empty, b"").unwrap();
    assert!(boot_err(&mut vm, &empty).contains("not an ELF"));

    let no_note = elf64(
        "no-note.elf",
        &[Seg {
            paddr: 0x100000,
            bytes: &code,
            memsz: 1,
        }],
        None,
    );
    let e = boot_err(&mut vm, &no_note);
    assert!(e.contains("no PVH entry note"), "{e}");

    let overlap = elf64(
        "overlap.elf",
        &[
            Seg {
                paddr: 0x100000,
                bytes: &code,
                memsz: 0x2000,
            },
            Seg {
                paddr: 0x101000,
                bytes: &code,
                memsz: 0x1000,
            },
        ],
        Some(0x100000),
    );
    let e = boot_err(&mut vm, &overlap);
    assert!(e.contains("segments overlap"), "{e}");

    let outside = elf64(
        "outside.elf",
        &[Seg {
            paddr: 0x1_0000_0000,
            bytes: &code,
            memsz: 1,
        }],
        Some(0x100000),
    );
    let e = boot_err(&mut vm, &outside);
    assert!(e.contains("outside any RAM"), "{e}");

    let low = elf64(
        "low.elf",
        &[Seg {
            paddr: 0x6000,
            bytes: &code,
            memsz: 1,
        }],
        Some(0x6000),
    );
    assert!(boot_err(&mut vm, &low).contains("boot information"));

    // 8 MiB RAM, a segment ending at 32 MiB: too little memory, with the size
    // that would do.
    let big = elf64(
        "big.elf",
        &[Seg {
            paddr: 0x100000,
            bytes: &code,
            memsz: 31 << 20,
        }],
        Some(0x100000),
    );
    let e = boot_err(&mut vm, &big);
    assert!(
        e.contains("memory = 8 MiB is too little") && e.contains("at least 33 MiB"),
        "{e}"
    );
    // Nothing ran: the domain is still as created.
    assert_eq!(vm.dom.state(), DomainState::Running);
    assert!(vm.guest.is_none());
}

#[test]
fn a_spinning_guest_is_destroyed_and_a_triple_fault_crashes() {
    if !kvm_usable("a_spinning_guest_is_destroyed_and_a_triple_fault_crashes") {
        return;
    }
    // mov $'S', %al; out %al, $0xe9; jmp .
    let spin = elf64(
        "spin.elf",
        &[Seg {
            paddr: 0x100000,
            bytes: &[0xb0, b'S', 0xe6, 0xe9, 0xeb, 0xfe],
            memsz: 6,
        }],
        Some(0x100000),
    );
    let mut spinner = Vm::new("spin", 4);
    spinner.boot(&spin, "").unwrap();
    spinner.wait_debug("S", Duration::from_secs(30));

    // A second domain, its own hypervisor's neighbour, runs to completion meanwhile.
    let mini = build_guest("pvh-mini");
    let mut other = Vm::new("other", 8);
    other.boot(&mini, "").unwrap();
    assert!(other.wait_end(Duration::from_secs(60)).is_finished());

    // ud2 with no IDT: #UD, #GP, double fault, triple fault.
    let ud = elf64(
        "ud2.elf",
        &[Seg {
            paddr: 0x100000,
            bytes: &[0x0f, 0x0b],
            memsz: 2,
        }],
        Some(0x100000),
    );
    let mut crasher = Vm::new("crash", 4);
    crasher.boot(&ud, "").unwrap();
    match crasher.wait_end(Duration::from_secs(30)) {
        DomainState::Crashed(why) => {
            assert!(why.contains("triple fault") || why.contains("KVM"), "{why}")
        }
        s => panic!("expected a crash, got {s:?}"),
    }

    // The spinner still spins; destroy stops it promptly.
    assert_eq!(spinner.dom.state(), DomainState::Running);
    let t0 = Instant::now();
    spinner.hv.destroy_domain(spinner.dom.id()).unwrap();
    let g = spinner.guest.take().unwrap();
    assert_eq!(g.join(), DomainState::Dying);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

#[test]
fn debug_console_floods_are_rate_limited_in_the_log() {
    if !kvm_usable("debug_console_floods_are_rate_limited_in_the_log") {
        return;
    }
    // 1: mov $'x',%al; out %al,$0xe9; mov $'\n',%al; out %al,$0xe9; jmp 1b
    let flood = elf64(
        "flood.elf",
        &[Seg {
            paddr: 0x100000,
            bytes: &[0xb0, b'x', 0xe6, 0xe9, 0xb0, b'\n', 0xe6, 0xe9, 0xeb, 0xf6],
            memsz: 10,
        }],
        Some(0x100000),
    );
    let mut vm = Vm::new("flood", 4);
    vm.boot(&flood, "").unwrap();
    // Enough lines for two rate windows (each line is two exits).
    let t0 = Instant::now();
    loop {
        let n = vm.guest().debug_output().len() / 2;
        let log = vm.log.lines();
        if log
            .iter()
            .any(|l| l.contains("debug console lines not logged"))
        {
            let shown = log.iter().filter(|l| l.ends_with(") x")).count();
            // At most 100 per started second.
            let secs = t0.elapsed().as_secs() as usize + 2;
            assert!(shown <= 100 * secs, "{shown} lines in {secs} s");
            assert!(n > shown, "{n} written, {shown} logged");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{n} lines, no rate limit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    vm.hv.destroy_domain(vm.dom.id()).unwrap();
}
