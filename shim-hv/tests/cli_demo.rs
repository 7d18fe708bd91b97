//! The README's first command, `shim-hv demo`, works with no setup and exits 0:
//! examples/unikernel under KVM, or (where /dev/kvm is unusable, said in one line)
//! the built-in in-process guest.

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
        // The disk, connected on both ends, with its event channel and ring ref.
        "51712 0   1      4     ",
        "4        /local/domain/0/backend/vbd/1/51712",
        "$ shim-hv network-list demo",
        // The vif, connected on both ends (frontend and backend state 4).
        "0   0  00:16:3e:5e:ed:01      0     4 ",
        "4        /local/domain/0/backend/vif/1/0",
        "name = \"demo\"",
        "$ xenstore-ls /local/domain/0/backend",
        "bridge = \"xenkit0\"",
        "nic 0: mac 00:16:3e:5e:ed:01, mtu 1500",
        "   backend = \"/local/domain/0/backend/vbd/1/51712\"",
        "   frontend = \"/local/domain/1/device/vbd/51712\"",
        "disk 51712 (xvda): sector 0: \"xenkit demo disk.\"",
        "Domain 1 has been shut down",
        "power: poweroff",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let kvm = kvm_runner::probe().is_ok();
    let specific: &[&str] = if kvm {
        &[
            "$ (cd examples/unikernel && cargo build --release)",
            "type = \"pvh\"",
            "disk 51712 (xvda): 16384 sectors of 512 bytes (8 MiB), mode w, disk",
            "disk 51712 (xvda): wrote \"XENKIT-UNIKERNEL-WROTE\" at byte 1048576, flushed, read back: same",
            "xenkit-unikernel: ready",
            "xenkit-unikernel: poweroff now",
        ]
    } else {
        &[
            "/dev/kvm is not usable",
            "running the built-in in-process guest instead of examples/unikernel under KVM",
            "disk 51712 (xvda): 16384 sectors of 512 bytes (8 MiB), read-write disk",
            "disk 51712 (xvda): scratch sector 16383: written, read back, restored, flushed",
            "xenkit built-in guest: domain 1 (demo) up",
        ]
    };
    for want in specific {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // The last `list` shows Domain-0 only.
    let last = out.rsplit("$ shim-hv list").next().unwrap();
    assert!(!last.contains("demo "), "{last}");
    // Its private directory is gone, and it started no daemon in ours.
    let dir = out
        .lines()
        .find(|l| l.starts_with("shim-hv demo: a private daemon in "))
        .and_then(|l| l.split(" in ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap();
    assert!(!std::path::Path::new(dir).exists(), "{dir}");
    assert!(!cli.runtime().exists());
}

/// Every example config passes `create -n`: those in examples/ run the built-in
/// guest, those in examples/kvm a kernel.
#[test]
fn example_configs_parse() {
    let cli = Cli::new("examples");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    for (dir, kernel) in [(root.clone(), false), (root.join("kvm"), true)] {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "cfg") {
                let o = cli.run(&["create", "-n", p.to_str().unwrap()]);
                assert!(o.status.success(), "{}: {o:?}", p.display());
                let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                assert_eq!(j["kernel"].is_string(), kernel, "{}", p.display());
                n += 1;
            }
        }
    }
    assert!(n >= 3);
}
