//! What idle domains cost: the daemon with N built-in-guest domains, each with a
//! disk and a vif on one in-process bridge, all idle (waiting for
//! `control/shutdown`). For each N it prints the daemon's CPU (share of one core),
//! threads, resident memory, and wakeups per second per domain (context switches
//! of all the daemon's threads), measured over a quiet window after start-up, plus
//! the threads that woke most, by name.
//!
//! `cargo bench -p shim-hv --bench idle [-- --domains 1,30,200] [--seconds S]`
//!
//! The goal (issue 18, README): under 1 wakeup per second per idle domain, and under
//! 1% of one core for 200 idle domains.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[path = "../tests/toolstack_util/mod.rs"]
mod toolstack_util;

use toolstack_util::Cli;

/// Follows `domain`'s console until a line contains `text` (60 s at most). The
/// daemon serves at most 32 clients at once and notices a killed console client
/// only a little later, so a refused attach is retried.
fn wait_console(cli: &Cli, domain: &str, text: &str) {
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        let mut child = cli
            .command()
            .args(["console", domain])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run shim-hv console");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let want = text.to_string();
        std::thread::spawn(move || {
            let found = BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.contains(&want));
            let _ = tx.send(found);
        });
        let left = end.saturating_duration_since(Instant::now());
        let found = rx.recv_timeout(left).unwrap_or(false);
        let _ = child.kill();
        let _ = child.wait();
        if found {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("{domain}: no console line with {text:?} within 60 s");
}

/// One sample of the daemon: (utime + stime in clock ticks, per-thread context
/// switches by thread name, thread count, RSS in KiB).
struct Sample {
    ticks: u64,
    switches: BTreeMap<String, (u64, usize)>,
    threads: usize,
    rss_kib: u64,
}

fn status_field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn sample(pid: i32) -> Sample {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("daemon stat");
    // Fields after the command's closing parenthesis: utime is the 12th, stime 13th.
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mut switches: BTreeMap<String, (u64, usize)> = BTreeMap::new();
    let mut threads = 0;
    for t in fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let p: &Path = &t.path();
        // Thread kinds: digit runs (domain ids, devices, queues) become `N`.
        let mut name = String::new();
        for c in fs::read_to_string(p.join("comm"))
            .unwrap_or_default()
            .trim()
            .chars()
        {
            if !c.is_ascii_digit() {
                name.push(c);
            } else if !name.ends_with('N') {
                name.push('N');
            }
        }
        let s = fs::read_to_string(p.join("status")).unwrap_or_default();
        let n = status_field(&s, "voluntary_ctxt_switches:")
            + status_field(&s, "nonvoluntary_ctxt_switches:");
        let e = switches.entry(name).or_default();
        e.0 += n;
        e.1 += 1;
        threads += 1;
    }
    Sample {
        ticks,
        switches,
        threads,
        rss_kib: status_field(&status, "VmRSS:"),
    }
}

fn measure(n: usize, seconds: u64) {
    let cli = Cli::new(&format!("idle-{n}"));
    let started = Instant::now();
    for i in 0..n {
        let img = cli.dir.path().join(format!("d{i}.img"));
        fs::write(&img, vec![0u8; 1 << 20]).expect("disk image");
        let cfg = format!(
            "name = \"idle{i}\"\nmemory = 16\ndisk = ['file:{},xvda,w']\nvif = ['bridge=idlebr']\n",
            img.display()
        );
        let path = cli.dir.write(&format!("idle{i}.cfg"), &cfg);
        cli.ok(&["create", path.to_str().expect("utf-8 path")]);
    }
    // Let every guest connect its devices and settle.
    for i in 0..n {
        wait_console(&cli, &format!("idle{i}"), "waiting for control/shutdown");
    }
    let up = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let pid = cli.daemon_pid().expect("the daemon runs");
    let a = sample(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let b = sample(pid);
    let dt = t0.elapsed().as_secs_f64();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = (b.ticks - a.ticks) as f64 / hz / dt * 100.0;
    let total: u64 = b.switches.values().map(|v| v.0).sum::<u64>()
        - a.switches.values().map(|v| v.0).sum::<u64>();
    let per_dom = total as f64 / dt / n as f64;
    println!(
        "idle domains {n:>4}: cpu {cpu:6.2}% of a core, threads {:>5}, rss {:>7} KiB, \
         wakeups/s per domain {per_dom:8.2} (all threads {:.0}/s; up in {:.1} s)",
        b.threads,
        b.rss_kib,
        total as f64 / dt,
        up.as_secs_f64()
    );
    let mut by_name: Vec<(String, f64, usize)> = b
        .switches
        .iter()
        .map(|(k, v)| {
            let before = a.switches.get(k).map_or(0, |x| x.0);
            (k.clone(), v.0.saturating_sub(before) as f64 / dt, v.1)
        })
        .collect();
    by_name.sort_by(|x, y| y.1.total_cmp(&x.1));
    for (name, rate, count) in by_name.iter().take(6).filter(|x| x.1 > 0.0) {
        println!("    {rate:9.1} wakeups/s  {count:>4} thread(s) named like {name:?}");
    }
    for i in 0..n {
        let _ = cli.run(&["destroy", &format!("idle{i}")]);
    }
}

fn main() {
    let mut domains = vec![1usize, 30, 200];
    let mut seconds = 10u64;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--domains" => {
                i += 1;
                domains = args
                    .get(i)
                    .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
                    .unwrap_or_default();
            }
            "--seconds" => {
                i += 1;
                seconds = args.get(i).and_then(|s| s.parse().ok()).unwrap_or(10);
            }
            _ => {} // `--bench` and filters from cargo
        }
        i += 1;
    }
    if !Path::new("/proc/self/task").exists() {
        println!("idle: skipped (no /proc)");
        return;
    }
    for n in domains {
        measure(n, seconds);
    }
}
