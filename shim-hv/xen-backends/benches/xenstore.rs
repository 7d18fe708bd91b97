//! xenstore cost of device bring-up: round trips (requests a guest sends on its
//! store ring) per disk and per vif, and transaction conflicts when many domains
//! bring up devices at once.
//!
//! `cargo bench -p xen-backends --bench xenstore [-- [--rounds R] [--domains N]]`
//!
//! 1. One domain with one disk and one vif (xbd-front `Device::connect`,
//!    xennet-front `NetFront::connect` against shim-hv's blkback and netback): the
//!    round trips the guest's client made (`Xenstore::round_trips`: a batch of
//!    requests sent back to back counts once) and the requests its store
//!    connection answered during each connect, over R rounds
//!    (each on a fresh hypervisor). The count depends a little on timing: a
//!    frontend that finds the backend not yet in the state it waits for waits for
//!    a watch event and reads again.
//! 2. N domains (default 10) at once, each bringing up a disk and a vif from its
//!    own thread, all started together: the same per device, and transaction
//!    commits refused with `EAGAIN` (retried) as a share of all commits (guests'
//!    and backends').

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hypercall::gnttab::GrantTable;
use xbd_front::{Config, Device};
use xen_backends::blk::{BlkBackend, BlkConfig, Target};
use xen_backends::bridge::Bridge;
use xen_backends::net::{NetBackend, NetConfig};
use xen_model::inproc::InProcGuest;
use xen_model::{DomainSpec, Hypervisor, HypervisorConfig};
use xenbus::Xenstore;
use xennet_front::NetFront;

const NG: usize = 2048;
const T: Duration = Duration::from_secs(60);

type Disk<'a> = Device<&'a InProcGuest, &'a GrantTable<NG>, 8, 16>;

fn requests(hv: &Hypervisor, g: &InProcGuest) -> u64 {
    hv.xenstored()
        .ring_stats(g.domain().id().0)
        .map_or(0, |s| s.requests)
}

/// Brings up a disk, then a vif, in guest `g`; returns (round trips, requests)
/// of each.
fn bring_up(hv: &Hypervisor, g: &InProcGuest) -> ((u64, u64), (u64, u64)) {
    let table: Box<GrantTable<NG>> = Box::new(GrantTable::setup(g, 4).expect("grant table"));
    let mut xs = Xenstore::from_hvm_params(g).expect("xenstore");
    let r0 = requests(hv, g);
    let t0 = xs.round_trips();
    let mut d: Box<Disk<'_>> =
        Box::new(Device::new(g, &*table, 51712, Config::default()).expect("device"));
    d.connect(&mut xs).expect("disk connect");
    let r1 = requests(hv, g);
    let t1 = xs.round_trips();
    let n =
        NetFront::<_, _, 1>::connect(g, &*table, &mut xs, 0, xennet_front::Config::default(), T)
            .expect("vif connect");
    let r2 = requests(hv, g);
    let t2 = xs.round_trips();
    drop(n);
    drop(d);
    ((t1 - t0, r1 - r0), (t2 - t1, r2 - r1))
}

struct Setup {
    hv: Arc<Hypervisor>,
    guests: Vec<Arc<InProcGuest>>,
    blk: Vec<BlkBackend>,
    net: Vec<NetBackend>,
}

fn setup(n: usize, img: &std::path::Path) -> Setup {
    let hv = Hypervisor::new(HypervisorConfig::default());
    let br = Bridge::new("xenbr0");
    let mut s = Setup {
        hv: hv.clone(),
        guests: Vec::new(),
        blk: Vec::new(),
        net: Vec::new(),
    };
    for i in 0..n {
        let dom = hv
            .create_domain(DomainSpec::new(format!("xs{i}"), 16))
            .expect("domain");
        s.blk.push(
            BlkBackend::start(
                &hv,
                dom.id(),
                BlkConfig::new(Target::File(img.to_path_buf()), 51712, "xvda"),
            )
            .expect("blkback"),
        );
        s.net.push(
            NetBackend::start(&hv, dom.id(), br.clone(), NetConfig::default()).expect("netback"),
        );
        s.guests.push(InProcGuest::new(hv.clone(), dom));
    }
    s
}

fn main() {
    let mut rounds = 5;
    let mut domains = 10;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => rounds = it.next().and_then(|v| v.parse().ok()).unwrap_or(5),
            "--domains" => domains = it.next().and_then(|v| v.parse().ok()).unwrap_or(10),
            _ => {}
        }
    }
    let dir = std::env::temp_dir().join(format!("xenkit-xs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let img = dir.join("disk.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).expect("image");

    let (mut disk, mut vif) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let s = setup(1, &img);
        let (a, b) = bring_up(&s.hv, &s.guests[0]);
        disk.push(a);
        vif.push(b);
    }
    let range = |v: &[u64]| {
        let (lo, hi) = (v.iter().min().unwrap_or(&0), v.iter().max().unwrap_or(&0));
        if lo == hi {
            format!("{lo}")
        } else {
            format!("{lo}-{hi}")
        }
    };
    let show = |v: &[(u64, u64)]| {
        let rt: Vec<u64> = v.iter().map(|x| x.0).collect();
        let rq: Vec<u64> = v.iter().map(|x| x.1).collect();
        format!("{} round trips, {} requests", range(&rt), range(&rq))
    };
    println!("one domain, {rounds} rounds, per bring-up:");
    println!("  disk (xbd-front connect)      {}", show(&disk));
    println!("  vif  (xennet-front connect)   {}", show(&vif));

    let s = setup(domains, &img);
    let before = s.hv.xenstored().transaction_stats();
    let barrier = Arc::new(Barrier::new(domains + 1));
    let mut handles = Vec::new();
    for g in &s.guests {
        let (g, hv, b) = (g.clone(), s.hv.clone(), barrier.clone());
        handles.push(std::thread::spawn(move || {
            b.wait();
            bring_up(&hv, &g)
        }));
    }
    let t0 = Instant::now();
    barrier.wait();
    let res: Vec<((u64, u64), (u64, u64))> = handles
        .into_iter()
        .map(|h| h.join().expect("guest"))
        .collect();
    let el = t0.elapsed();
    let after = s.hv.xenstored().transaction_stats();
    let commits = after.commits - before.commits;
    let conflicts = after.conflicts - before.conflicts;
    let d: Vec<(u64, u64)> = res.iter().map(|r| r.0).collect();
    let v: Vec<(u64, u64)> = res.iter().map(|r| r.1).collect();
    println!("{domains} domains at once (a disk and a vif each), {el:.2?}:");
    println!("  disk {}", show(&d));
    println!("  vif  {}", show(&v));
    println!(
        "  transaction commits {commits}, refused with EAGAIN {conflicts} ({:.2}%)",
        if commits == 0 {
            0.0
        } else {
            100.0 * conflicts as f64 / commits as f64
        }
    );
    drop(s.blk);
    drop(s.net);
    let _ = std::fs::remove_dir_all(&dir);
}
