//! Deterministic cost: instructions per operation, counted by valgrind's callgrind
//! on a single-threaded, stepped run of frontend and backend.
//!
//! `cargo bench -p xen-backends --bench cost [-- [--check | --update] [--only NAME]]`
//!
//! Every scenario runs in its own process under
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect=*cost_region*`:
//! one thread drives a guest's frontend and steps the backends itself
//! (`BlkConfig::stepped`, `NetConfig::stepped`; xenstored serves store rings on
//! the signalling thread, `HypervisorConfig::xenstored_inline`), so nothing polls,
//! sleeps or races, and the count does not depend on the machine's load. Only the
//! instructions inside `cost_region` on that thread are counted (frontend,
//! hypercalls, backend and xenstored work; not the kernel's side of system calls
//! such as `preadv`), after a warm-up outside it, and divided by the operations
//! done there.
//!
//! Scenarios:
//! - `blk-read-4k`: one 4 KiB read (`submit_read`, backend step, `finish` into a
//!   buffer), sequential over an 8 MiB file in the page cache;
//! - `blk-read-1m`: the same with 1 MiB reads;
//! - `blk-read-4k-d1`: one 4 KiB read at queue depth 1 the way the `blk` bench's
//!   depth-1 row makes it: the blocking `Device::read`, blkback in its worker
//!   pool, so the read is answered on the guest's own thread inside its
//!   notification (`preadv2` with `RWF_NOWAIT`); the run checks that every
//!   counted read was (`BlkStats::inline`), and that the pool's worker had gone
//!   idle first, so nothing else runs meanwhile;
//! - `net-64`, `net-1500`: one frame from guest A to guest B (A's `send`, A's
//!   netback step, the bridge, B's netback step, B's `recv`, A reaping its tx
//!   responses), in bursts of 16 frames per step;
//! - `xs-read`: one xenstore read of a guest (the request on its store ring, the
//!   daemon serving it, the reply).
//!
//! Without an argument, the table is printed. `--check` compares it with
//! `shim-hv/xen-backends/benches/cost-baseline.txt` and fails (exit 1) if a scenario costs more
//! than 5% above its baseline; `--update` rewrites the baseline (a commit that
//! changes costs on purpose does this). `--only NAME` runs one scenario; `--inner
//! NAME` is what the outer run starts under valgrind.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hypercall::gnttab::GrantTable;
use xbd_front::{Config, Device};
use xen_backends::blk::{BlkBackend, BlkConfig, Target};
use xen_backends::bridge::Bridge;
use xen_backends::net::{NetBackend, NetConfig};
use xen_model::inproc::InProcGuest;
use xen_model::{DomainSpec, Hypervisor, HypervisorConfig};
use xenbus::{Store, Xenstore};
use xennet_front::{Mac, NetFront};

const NG: usize = 4096;
/// Grant entries of the disk guest (32 requests of 256 persistent segments).
const NG_BLK: usize = 16384;
const MIB: usize = 1 << 20;
const DISK_MIB: usize = 8;
/// Allowed growth against the baseline.
const TOLERANCE: f64 = 0.05;
/// Frames per burst in the network scenarios.
const BURST: usize = 16;

/// (name, operations counted, warm-up operations)
const SCENARIOS: &[(&str, u64, u64)] = &[
    ("blk-read-4k", 2000, 200),
    ("blk-read-1m", 64, 16),
    ("blk-read-4k-d1", 2000, 200),
    ("net-64", 2048, 512),
    ("net-1500", 2048, 512),
    ("xs-read", 1000, 100),
];

const BASELINE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/cost-baseline.txt");

/// The only code callgrind counts: `f` and everything it calls, on this thread.
#[inline(never)]
fn cost_region(f: &mut dyn FnMut()) {
    f();
    std::hint::black_box(());
}

fn hypervisor() -> Arc<Hypervisor> {
    Hypervisor::new(HypervisorConfig {
        xenstored_inline: true,
        ..HypervisorConfig::default()
    })
}

type Disk<'a> = Device<&'a InProcGuest, &'a GrantTable<NG_BLK>, 32, 256>;

fn blk(name: &str, ops: u64, warm: u64) {
    let dir = std::env::temp_dir().join(format!("xenkit-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let img = dir.join("disk.img");
    {
        let data: Vec<u8> = (0..MIB).map(|i| (i * 7) as u8).collect();
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&img)
            .expect("image");
        for i in 0..DISK_MIB {
            f.write_all_at(&data, (i * MIB) as u64).expect("image");
        }
    }
    let hv = hypervisor();
    let dom = hv
        .create_domain(DomainSpec::new("cost", 128))
        .expect("domain");
    // The depth-1 scenario runs blkback as the `blk` bench does (pooled), the
    // others stepped.
    let blocking = name == "blk-read-4k-d1";
    let cfg = BlkConfig {
        stepped: !blocking,
        ..BlkConfig::new(Target::File(img.clone()), 51712, "xvda")
    };
    let be = BlkBackend::start(&hv, dom.id(), cfg).expect("blkback");
    let g = InProcGuest::new(hv.clone(), dom);
    let p: &InProcGuest = &g;
    let table: Box<GrantTable<NG_BLK>> =
        Box::new(GrantTable::setup(p, (NG_BLK / 512) as u32).expect("grant table"));
    let mut xs = Xenstore::from_hvm_params(p).expect("xenstore");
    let mut d: Box<Disk<'_>> =
        Box::new(Device::new(p, &*table, 51712, Config::default()).expect("device"));
    d.connect(&mut xs).expect("connect");

    let bs = if name == "blk-read-1m" { MIB } else { 4096 };
    let mut buf = vec![0u8; bs + 4096];
    let start = (4096 - buf.as_ptr() as usize % 4096) % 4096;
    let mut next = 0u64;
    let mut one = |d: &mut Disk<'_>, buf: &mut [u8]| {
        let lba = next % (DISK_MIB * MIB / bs) as u64 * (bs / 512) as u64;
        next += 1;
        if blocking {
            d.read(lba, &mut [buf], Duration::from_secs(60))
                .expect("read");
            return;
        }
        let t = d.submit_read(lba, bs).expect("submit");
        be.step().expect("backend step");
        d.poll_nowait().expect("poll");
        assert_eq!(d.next_completion(), Some(t), "completed");
        d.finish(t, &mut [buf]).expect("finish");
    };
    let b = &mut buf[start..start + bs];
    for _ in 0..warm {
        one(&mut d, b);
    }
    // The pool's worker polls for 200 µs after its last request, then sleeps:
    // give it far longer than that (valgrind is slow) before counting.
    if blocking {
        std::thread::sleep(Duration::from_millis(200));
    }
    let inline_before = be.stats().inline;
    cost_region(&mut || {
        for _ in 0..ops {
            one(&mut d, b);
        }
    });
    if blocking {
        let inline = be.stats().inline - inline_before;
        assert_eq!(
            inline, ops,
            "every counted read answered on the guest's thread (else a worker's \
             share would be missing from the count)"
        );
    }
    // Data check (outside the region): the last block read is the file's.
    let last = (next - 1) % (DISK_MIB * MIB / bs) as u64 * bs as u64;
    assert!(
        b.iter()
            .enumerate()
            .all(|(i, &x)| x == ((last as usize + i) % MIB * 7) as u8),
        "data read back"
    );
    let _ = d.close(&mut xs);
    be.destroy();
    let _ = std::fs::remove_dir_all(&dir);
}

fn frame(len: usize, dst: Mac, src: Mac) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12] = 0x88;
    f[13] = 0xb5;
    f
}

fn net(len: usize, ops: u64, warm: u64) {
    let hv = hypervisor();
    let br = Bridge::new("xenbr0");
    let (ma, mb) = (Mac([0xaa, 0, 0, 0x50, 2, 1]), Mac([0xaa, 0, 0, 0x50, 2, 2]));
    let da = hv.create_domain(DomainSpec::new("cost-a", 32)).expect("a");
    let db = hv.create_domain(DomainSpec::new("cost-b", 32)).expect("b");
    let cfg = |m| NetConfig {
        mac: Some(m),
        stepped: true,
        ..NetConfig::default()
    };
    let ba = NetBackend::start(&hv, da.id(), br.clone(), cfg(ma)).expect("netback a");
    let bb = NetBackend::start(&hv, db.id(), br.clone(), cfg(mb)).expect("netback b");
    let (ga, gb) = (
        InProcGuest::new(hv.clone(), da),
        InProcGuest::new(hv.clone(), db),
    );
    let (pa, pb): (&InProcGuest, &InProcGuest) = (&ga, &gb);
    let ta: Box<GrantTable<NG>> = Box::new(GrantTable::setup(pa, 8).expect("grants a"));
    let tb: Box<GrantTable<NG>> = Box::new(GrantTable::setup(pb, 8).expect("grants b"));
    let mut xa = Xenstore::from_hvm_params(pa).expect("xenstore a");
    let mut xb = Xenstore::from_hvm_params(pb).expect("xenstore b");
    let t = Duration::from_secs(30);
    let c = xennet_front::Config::default();
    let mut a = NetFront::<_, _, 1>::connect(pa, &*ta, &mut xa, 0, c, t).expect("connect a");
    let mut b = NetFront::<_, _, 1>::connect(pb, &*tb, &mut xb, 0, c, t).expect("connect b");
    let mut rx = vec![0u8; 65536];
    // Let the bridge learn both MACs.
    b.send(&frame(60, Mac::BROADCAST, mb)).expect("send");
    a.send(&frame(60, Mac::BROADCAST, ma)).expect("send");
    for _ in 0..2 {
        bb.step();
        ba.step();
    }
    while a.recv(&mut rx).expect("recv").is_some() {}
    while b.recv(&mut rx).expect("recv").is_some() {}
    let f = frame(len, mb, ma);
    let mut got = 0u64;
    let mut burst = |a: &mut NetFront<_, _, 1>, b: &mut NetFront<_, _, 1>, rx: &mut [u8]| {
        for _ in 0..BURST {
            a.send(&f).expect("send");
        }
        ba.step();
        bb.step();
        while let Some(m) = b.recv(rx).expect("recv") {
            assert_eq!(m.len, len, "frame length");
            got += 1;
        }
        a.poll().expect("poll");
    };
    for _ in 0..warm / BURST as u64 {
        burst(&mut a, &mut b, &mut rx);
    }
    cost_region(&mut || {
        for _ in 0..ops / BURST as u64 {
            burst(&mut a, &mut b, &mut rx);
        }
    });
    assert_eq!(
        got,
        (warm + ops) / BURST as u64 * BURST as u64,
        "frames lost"
    );
    assert_eq!(&rx[..len], &f[..], "frame content");
    let _ = a.close(&mut xa, Duration::from_secs(2));
    let _ = b.close(&mut xb, Duration::from_secs(2));
    ba.destroy();
    bb.destroy();
}

fn xs_read(ops: u64, warm: u64) {
    let hv = hypervisor();
    let dom = hv.create_domain(DomainSpec::new("cost", 16)).expect("dom");
    let g = InProcGuest::new(hv.clone(), dom);
    let p: &InProcGuest = &g;
    let mut xs = Xenstore::from_hvm_params(p).expect("xenstore");
    xs.write("data/cost", b"0123456789abcdef").expect("write");
    let mut buf = [0u8; 64];
    let mut one = |xs: &mut Xenstore<&InProcGuest>| {
        let n = xs.read("data/cost", &mut buf).expect("read");
        assert_eq!(n, 16);
    };
    for _ in 0..warm {
        one(&mut xs);
    }
    cost_region(&mut || {
        for _ in 0..ops {
            one(&mut xs);
        }
    });
}

fn inner(name: &str) {
    let Some(&(_, ops, warm)) = SCENARIOS.iter().find(|s| s.0 == name) else {
        eprintln!("cost: unknown scenario {name:?}");
        std::process::exit(2);
    };
    match name {
        "net-64" => net(64, ops, warm),
        "net-1500" => net(1500, ops, warm),
        "xs-read" => xs_read(ops, warm),
        _ => blk(name, ops, warm),
    }
}

/// Runs `name` under callgrind; instructions per operation.
fn measure(name: &str, ops: u64) -> Result<f64, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let out = std::env::temp_dir().join(format!("xenkit-cost-{}-{name}.out", std::process::id()));
    let r = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--collect-atstart=no")
        .arg("--toggle-collect=*cost_region*")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg("--quiet")
        .arg(&exe)
        .args(["--inner", name])
        .output()
        .map_err(|e| format!("valgrind: {e} (is valgrind installed?)"))?;
    if !r.status.success() {
        return Err(format!(
            "{name}: valgrind run failed ({}):\n{}",
            r.status,
            String::from_utf8_lossy(&r.stderr)
        ));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let _ = std::fs::remove_file(&out);
    let total: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{name}: no summary line in callgrind's output"))?;
    if total == 0 {
        return Err(format!("{name}: nothing counted (cost_region not found?)"));
    }
    Ok(total as f64 / ops as f64)
}

fn read_baseline() -> Result<Vec<(String, f64)>, String> {
    let text = std::fs::read_to_string(BASELINE).map_err(|e| format!("{BASELINE}: {e}"))?;
    let mut v = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let mut it = l.split_whitespace();
        let (Some(n), Some(c), None) = (it.next(), it.next(), it.next()) else {
            return Err(format!(
                "{BASELINE}:{}: expected `NAME INSTRUCTIONS`",
                i + 1
            ));
        };
        let c: f64 = c
            .parse()
            .map_err(|_| format!("{BASELINE}:{}: bad instruction count {c:?}", i + 1))?;
        v.push((n.to_string(), c));
    }
    Ok(v)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut check, mut update, mut only) = (false, false, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--inner" => {
                let name = args.next().unwrap_or_default();
                inner(&name);
                return;
            }
            "--check" => check = true,
            "--update" => update = true,
            "--only" => only = args.next(),
            "--bench" => {}
            other => {
                eprintln!("cost: unknown argument {other:?} (--check, --update, --only NAME)");
                std::process::exit(2);
            }
        }
    }
    if update && only.is_some() {
        eprintln!("cost: --update rewrites the whole baseline; run it without --only");
        std::process::exit(2);
    }
    let base = if check {
        match read_baseline() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("cost: {e}");
                std::process::exit(1);
            }
        }
    } else {
        Vec::new()
    };
    println!(
        "{:<22} {:>14} {:>14} {:>8}",
        "scenario", "instr/op", "baseline", "change"
    );
    let mut results = Vec::new();
    let mut failed = false;
    for &(name, ops, _) in SCENARIOS {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let c = match measure(name, ops) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cost: {e}");
                std::process::exit(1);
            }
        };
        let b = base.iter().find(|(n, _)| n == name).map(|x| x.1);
        let (bs, change) = match b {
            Some(b) => {
                let ch = c / b - 1.0;
                if ch > TOLERANCE {
                    failed = true;
                }
                (format!("{b:.0}"), format!("{:+.1}%", ch * 100.0))
            }
            None if check => {
                failed = true;
                ("missing".to_string(), String::new())
            }
            None => (String::new(), String::new()),
        };
        println!("{name:<22} {c:>14.0} {bs:>14} {change:>8}");
        results.push((name, c));
    }
    if update {
        let mut s = String::from(
            "# Instructions per operation (cargo bench -p xen-backends --bench cost -- --update).\n\
             # .ci/run fails when a scenario exceeds its line here by more than 5%.\n",
        );
        for (n, c) in &results {
            s.push_str(&format!("{n} {c:.0}\n"));
        }
        if let Err(e) = std::fs::write(BASELINE, s) {
            eprintln!("cost: {BASELINE}: {e}");
            std::process::exit(1);
        }
        println!("baseline written: {BASELINE}");
    }
    if failed {
        eprintln!(
            "cost: more than {:.0}% above the baseline (or not in it); if intended, \
             run with --update and commit {BASELINE}",
            TOLERANCE * 100.0
        );
        std::process::exit(1);
    }
}
