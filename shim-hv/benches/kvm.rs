//! The KVM runner, measured: VM exits until the guest's first console byte, and
//! the time from `create` to that byte against QEMU booting the same ELF in the
//! same run.
//!
//! `cargo bench -p shim-hv --bench kvm [-- [--rounds R] [--kernel ELF]]`
//! (default: 5 rounds, examples/unikernel built with its own `cargo build
//! --release`).
//!
//! - Exits: the runner counts every VM exit by reason; the count when the first
//!   byte of console output appears (`CONSOLEIO_write` or port 0xE9) is what a
//!   guest pays to say anything. Exits are the cost that carries over to any host:
//!   on our build machines KVM emulates guests, so their time is not typical.
//! - Block I/O: a bare blkfront in assembler (benches/kvm_guests/blk-bench.S)
//!   reads 8000 pages through blkback at queue depth 32 (32 requests, one
//!   notification, `sti; hlt` until the 32 responses are in); reported are the VM
//!   exits per request during that phase, by reason (goal: at most 0.1).
//! - Boot time: shim-hv creates the domain (xen model, console backend, KVM VM,
//!   PVH load) and runs it until its first console byte; QEMU
//!   (`qemu-system-x86_64 -M microvm,accel=kvm -cpu qemu64 -m 64 -nodefaults
//!   -kernel ELF`, with an `isa-debugcon` on port 0xE9 to a pipe) is started as a
//!   process and timed to its first byte on that port: the same kernel finds no
//!   Xen there and writes to 0xE9 at once. Rounds alternate; reported are the
//!   medians and their ratio (shim-hv / QEMU; below 1 is faster). Skipped with a
//!   line where `/dev/kvm` or QEMU is missing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_runner::{self as kvm, boot::BootSpec, KvmGuest};
use shim_hv::toolstack::devices::DomainDevices;
use xen_backends::bridge::Bridges;
use xen_backends::console::{ConsoleBackend, ConsoleConfig, Sink};
use xen_model::{ConsoleSink, Hypervisor, HypervisorConfig};
use xenstored::TxId;
use xl_config::DomainConfig;

const BOUND: Duration = Duration::from_secs(120);

fn unikernel() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/unikernel");
    let st = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet"])
        .current_dir(&dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .status()
        .expect("cargo for examples/unikernel");
    assert!(st.success(), "building examples/unikernel failed");
    dir.join("target/x86_64-unknown-none/release/unikernel")
}

/// One shim-hv boot: (time from create to the first console byte, exits then).
fn shim_boot(kernel: &Path) -> (Duration, u64) {
    let t0 = Instant::now();
    let hv = Hypervisor::new(HypervisorConfig::default());
    let consoles = ConsoleBackend::new(&hv, ConsoleConfig::default());
    let first: Arc<Mutex<Option<Instant>>> = Arc::default();
    let f2 = first.clone();
    let early = consoles.early_sink();
    let sink: ConsoleSink = Arc::new(move |d, b| {
        f2.lock().unwrap().get_or_insert_with(Instant::now);
        early(d, b);
    });
    let mut spec = kvm::domain_spec("bench", 32);
    spec.console_sink = Some(sink);
    let dom = hv.create_domain(spec).unwrap();
    let console = consoles.start(&dom, Sink::None).unwrap();
    let boot = BootSpec {
        kernel: kernel.to_path_buf(),
        ..Default::default()
    };
    let quiet: kvm::LogFn = Arc::new(|_| {});
    let t1 = Instant::now();
    let guest = KvmGuest::start(&hv, dom.clone(), &boot, quiet).unwrap();
    if std::env::var_os("KVM_BENCH_DETAIL").is_some() {
        eprintln!("  setup {:?}, start {:?}", t1 - t0, t1.elapsed());
    }
    let at = loop {
        if let Some(t) = *first.lock().unwrap() {
            break t;
        }
        if !guest.debug_output().is_empty() || !console.history().is_empty() {
            break Instant::now();
        }
        assert!(t0.elapsed() < BOUND, "no console output from the guest");
        std::thread::sleep(Duration::from_micros(200));
    };
    let exits = guest
        .stats()
        .first_output_exits
        .expect("the runner saw the first output");
    hv.destroy_domain(dom.id()).unwrap();
    drop(guest);
    consoles.remove(dom.id());
    (at - t0, exits)
}

/// One QEMU boot: time from spawning it to the first byte on port 0xE9.
fn qemu_boot(qemu: &Path, kernel: &Path) -> Duration {
    let t0 = Instant::now();
    let mut child = Command::new(qemu)
        .args([
            "-M",
            "microvm,accel=kvm",
            "-cpu",
            "qemu64",
            "-m",
            "64",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "none",
            "-monitor",
            "none",
            "-chardev",
            "stdio,id=dbg",
            "-device",
            "isa-debugcon,iobase=0xe9,chardev=dbg",
            "-kernel",
        ])
        .arg(kernel)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting qemu");
    let mut out = child.stdout.take().unwrap();
    let mut b = [0u8; 1];
    let n = out.read(&mut b).unwrap_or(0);
    let t = t0.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(n, 1, "QEMU printed nothing on port 0xE9");
    t
}

/// Assembles a guest of benches/kvm_guests.
fn build_guest(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("shim-hv-bench-{}-{name}.elf", std::process::id()));
    let st = Command::new("cc")
        .args(["-nostdlib", "-static", "-no-pie", "-Wl,--build-id=none"])
        .arg("-Wl,--no-warn-rwx-segments")
        .arg(format!(
            "-Wl,-T,{}",
            root.join("tests/kvm_guests/guest.ld").display()
        ))
        .arg("-o")
        .arg(&out)
        .arg(root.join(format!("benches/kvm_guests/{name}.S")))
        .status()
        .expect("running cc");
    assert!(st.success(), "assembling {name}.S");
    out
}

/// A number after `key ` on the guest's debug console.
fn debug_value(guest: &KvmGuest, key: &str) -> Option<u64> {
    let out = String::from_utf8_lossy(&guest.debug_output()).into_owned();
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
}

/// The depth-32 block phase: (requests, exits during it, by reason, time).
fn blk_depth32() -> (u64, u64, Vec<(String, u64)>, Duration) {
    const REQUESTS: u64 = 250 * 32;
    let elf = build_guest("blk-bench");
    let img = std::env::temp_dir().join(format!("shim-hv-bench-{}-blk.img", std::process::id()));
    std::fs::write(&img, vec![0x5au8; 1 << 20]).unwrap();
    let hv = Hypervisor::new(HypervisorConfig::default());
    let consoles = ConsoleBackend::new(&hv, ConsoleConfig::default());
    let bridges = Bridges::new();
    let dom = hv.create_domain(kvm::domain_spec("blk", 16)).unwrap();
    let id = dom.id().0;
    let _console = consoles.start(&dom, Sink::None).unwrap();
    let cfg = DomainConfig::parse_str(
        "blk.cfg",
        &format!("name = 'blk'\ndisk = [ 'file:{},xvda,r' ]\n", img.display()),
    )
    .unwrap();
    let mut devices = DomainDevices::attach(&hv, &bridges, &consoles, dom.id(), &cfg).unwrap();
    let boot = BootSpec {
        kernel: elf.clone(),
        ..Default::default()
    };
    let guest = KvmGuest::start(&hv, dom.clone(), &boot, Arc::new(|_| {})).unwrap();
    let t0 = Instant::now();
    let (port, go) = loop {
        if let (Some(p), Some(g)) = (debug_value(&guest, "port "), debug_value(&guest, "go ")) {
            break (p, g);
        }
        assert!(t0.elapsed() < BOUND, "blk guest did not come up");
        std::thread::sleep(Duration::from_millis(5));
    };
    // The frontend's keys, written as dom0 on the guest's behalf.
    let xs = hv.xenstored().client(0);
    let fe = format!("/local/domain/{id}/device/vbd/51712");
    for (k, v) in [
        ("ring-ref", "8".to_string()),
        ("event-channel", port.to_string()),
        ("protocol", "x86_64-abi".to_string()),
        ("state", "3".to_string()),
    ] {
        xs.write(TxId::NONE, &format!("{fe}/{k}"), v.as_bytes())
            .unwrap();
    }
    let be = format!("/local/domain/0/backend/vbd/{id}/51712/state");
    while xs.read(TxId::NONE, &be).ok().as_deref() != Some(b"4".as_slice()) {
        assert!(t0.elapsed() < BOUND, "blkback did not connect");
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = guest.stats();
    let t1 = Instant::now();
    dom.memory().write(go, &[1]).unwrap();
    while !String::from_utf8_lossy(&guest.debug_output()).contains("done") {
        let out = String::from_utf8_lossy(&guest.debug_output()).into_owned();
        assert!(!out.contains("FAIL"), "blk guest failed: {out}");
        assert!(t1.elapsed() < BOUND * 5, "blk guest did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
    let spent = t1.elapsed();
    let after = guest.stats();
    let mut reasons: Vec<(String, u64)> = after
        .by_reason
        .iter()
        .map(|(k, v)| (k.clone(), v - before.by_reason.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    reasons.sort();
    hv.destroy_domain(dom.id()).unwrap();
    drop(guest);
    devices.detach();
    let _ = std::fs::remove_file(&img);
    let _ = std::fs::remove_file(&elf);
    (REQUESTS, after.total - before.total, reasons, spent)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut rounds = 5usize;
    let mut kernel: Option<PathBuf> = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--rounds" => {
                i += 1;
                rounds = args[i].parse().expect("--rounds N");
            }
            "--kernel" => {
                i += 1;
                kernel = Some(PathBuf::from(&args[i]));
            }
            _ => {} // cargo bench passes --bench
        }
        i += 1;
    }
    if let Err(why) = kvm::probe() {
        println!("kvm bench: skipped: {why}");
        return;
    }
    let (n, exits, reasons, spent) = blk_depth32();
    println!(
        "block reads at depth 32: {n} requests, {exits} VM exits, {:.3} exits per request (goal <= 0.1); {reasons:?}; {:.0} requests/s under this host's KVM",
        exits as f64 / n as f64,
        n as f64 / spent.as_secs_f64()
    );
    let kernel = kernel.unwrap_or_else(unikernel);
    println!("kernel: {}", kernel.display());
    let qemu = which("qemu-system-x86_64");
    let (mut shim, mut qm, mut exits) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let (t, e) = shim_boot(&kernel);
        shim.push(t);
        exits.push(e);
        let q = qemu.as_ref().map(|q| qemu_boot(q, &kernel));
        if let Some(q) = q {
            qm.push(q);
        }
        println!(
            "round {r}: shim-hv {:.1} ms ({e} exits), qemu {}",
            t.as_secs_f64() * 1e3,
            q.map_or("-".into(), |q| format!("{:.1} ms", q.as_secs_f64() * 1e3))
        );
    }
    exits.sort();
    println!(
        "VM exits until the first console byte: median {} (min {}, max {}; goal < 100)",
        exits[exits.len() / 2],
        exits[0],
        exits[exits.len() - 1]
    );
    let s = median(&mut shim);
    match qemu {
        None => println!(
            "create -> first console byte: shim-hv {:.1} ms; qemu-system-x86_64 not found, no ratio",
            s.as_secs_f64() * 1e3
        ),
        Some(_) => {
            let q = median(&mut qm);
            println!(
                "create -> first console byte: shim-hv {:.1} ms, QEMU microvm {:.1} ms (medians of {rounds}); ratio {:.3} (goal <= 0.35)",
                s.as_secs_f64() * 1e3,
                q.as_secs_f64() * 1e3,
                s.as_secs_f64() / q.as_secs_f64()
            );
        }
    }
}
