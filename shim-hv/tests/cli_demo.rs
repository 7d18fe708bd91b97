//! The README's first command, `shim-hv demo`, works with no setup and exits 0.

mod toolstack_util;

use toolstack_util::Cli;

#[test]
fn demo_runs_and_cleans_up() {
    let cli = Cli::new("demo");
    let out = cli.ok(&["demo"]);
    for want in [
        "$ shim-hv create demo.cfg",
        "Created domain 1 (demo)",
        "demo                                         1    32     1     r-----",
        "$ shim-hv block-list demo",
        "name = \"demo\"",
        "Domain 1 has been shut down",
        "xenkit built-in guest: domain 1 (demo) up",
        "power: poweroff",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // The last `list` shows Domain-0 only.
    let last = out.rsplit("$ shim-hv list").next().unwrap();
    assert!(!last.contains("demo "), "{last}");
    // Its private directory is gone, and it started no daemon in ours.
    let dir = out
        .lines()
        .next()
        .and_then(|l| l.split(" in ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap();
    assert!(!std::path::Path::new(dir).exists(), "{dir}");
    assert!(!cli.runtime().exists());
}
