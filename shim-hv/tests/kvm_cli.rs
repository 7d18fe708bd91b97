//! The CLI with a kernel config: `create -c` shows the unikernel's console (its
//! ready line, disk and vif) until `shutdown -w` ends it; `list` and `list -l`;
//! a bad kernel is refused before any daemon starts. Skipped, with one printed
//! line, where /dev/kvm is absent or unusable.

mod kvm_util;
mod toolstack_util;

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;

use kvm_util::{kvm_usable, unikernel};
use toolstack_util::{wait_for, Cli};

#[test]
fn create_c_shows_the_unikernel_until_shutdown() {
    if !kvm_usable("create_c_shows_the_unikernel_until_shutdown") {
        return;
    }
    let cli = Cli::new("kvm-cli");
    std::fs::write(cli.dir.path().join("d.img"), vec![0u8; 4 << 20]).unwrap();
    cli.dir.write(
        "uk.cfg",
        &format!(
            "name = 'uk'\ntype = 'pvh'\nkernel = '{}'\nmemory = 32\n\
             disk = [ 'file:d.img,xvda,w' ]\n\
             vif = [ 'mac=00:16:3e:00:00:09,bridge=xkcli,ip=10.77.0.2' ]\n",
            unikernel().display()
        ),
    );
    let mut child = cli
        .command()
        .args(["create", "-c", "uk.cfg"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("xenkit-unikernel: ready") {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "console ended: {seen}"
        );
        seen.push_str(&line);
    }
    for want in [
        "disk 51712 (xvda): 8192 sectors of 512 bytes",
        "nic 0: mac 00:16:3e:00:00:09",
        "ip 10.77.0.2/24",
    ] {
        assert!(seen.contains(want), "missing {want:?}: {seen}");
    }
    let rows = cli.list();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].0.as_str(), rows[0].2.as_str()), ("uk", "r-----"));
    let j: serde_json::Value = serde_json::from_str(&cli.ok(&["list", "-l", "uk"])).unwrap();
    assert_eq!(j[0]["runner"], "kvm");
    assert!(j[0]["vm_exits"]["total"].as_u64().unwrap() > 0, "{j}");
    cli.ok(&["shutdown", "-w", "uk"]);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("xenkit-unikernel: poweroff now"), "{rest}");
    assert!(child.wait().unwrap().success());
    assert!(wait_for(10, || cli.list().is_empty().then_some(())).is_some());
}

#[test]
fn a_bad_kernel_starts_nothing() {
    // Runs with or without KVM: the kernel is checked first.
    let cli = Cli::new("kvm-bad");
    let k = cli.dir.write("k.elf", "\x7fELF but not really");
    cli.dir.write(
        "k.cfg",
        &format!("name = 'k'\nkernel = '{}'\n", k.display()),
    );
    let o = cli.run(&["create", "k.cfg"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with(&format!("k.cfg: kernel {}: ", k.display())),
        "{err}"
    );
    assert!(!cli.runtime().join("control.sock").exists());
    // vcpus other than 1 is refused for a kernel, naming the file (checked before
    // the kernel itself).
    cli.dir.write(
        "v.cfg",
        &format!("name = 'v'\nkernel = '{}'\nvcpus = 2\n", k.display()),
    );
    let o = cli.run(&["create", "v.cfg"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("v.cfg: vcpus = 2: shim-hv's KVM runner runs kernels on one vCPU"),
        "{err}"
    );
    assert!(!cli.runtime().join("control.sock").exists());
}
