//! shim-hv's `hostile` key: entries resolve to the config's devices, mistakes
//! are one-line errors naming the file, line and entry, and `add_hostile` (the
//! CLI's `--hostile`) replaces the file's entry for the same device.

use xl_config::{DomainConfig, HostileDevice};

const BASE: &str = "name = 'h'\ndisk = [ 'file:/tmp/a.img,xvda,w', 'file:/tmp/b.img,hdb,r' ]\nvif = [ '', 'bridge=br1' ]\n";

fn parse(extra: &str) -> Result<DomainConfig, String> {
    DomainConfig::parse_str("h.cfg", &format!("{BASE}{extra}")).map_err(|e| e.to_string())
}

#[test]
fn entries_name_disks_vifs_and_the_console() {
    let cfg = parse(
        "hostile = [ 'xvda:blk.duplicate_response', 'vif1=net.tx_id_out_of_range',\n  'console:console.in_prod_past_ring', '832:blk.never_answers' ]\n",
    )
    .unwrap();
    let got: Vec<(HostileDevice, &str, u32)> = cfg
        .hostile
        .iter()
        .map(|h| (h.device, h.mode.as_str(), h.line))
        .collect();
    assert_eq!(
        got,
        vec![
            (HostileDevice::Disk(51712), "blk.duplicate_response", 4),
            (HostileDevice::Vif(1), "net.tx_id_out_of_range", 4),
            (HostileDevice::Console, "console.in_prod_past_ring", 5),
            // hdb is 832: any name of the same virtual device.
            (HostileDevice::Disk(832), "blk.never_answers", 5),
        ]
    );
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    let j = cfg.to_json();
    assert_eq!(j["hostile"][1]["device"], "vif1");
    assert_eq!(j["hostile"][1]["mode"], "net.tx_id_out_of_range");
}

#[test]
fn mistakes_are_one_line_errors_naming_file_line_and_entry() {
    for (entry, why) in [
        ("xvdc:blk.never_answers", "no disk xvdc in this config"),
        ("vif7:net.tx_id_out_of_range", "no vif 7 in this config"),
        (
            "xvda:net.tx_id_out_of_range",
            "xvda is a disk: its modes are blk.*",
        ),
        (
            "vif0:blk.never_answers",
            "vif0 is a vif: its modes are net.*",
        ),
        (
            "console:blk.x",
            "console is the console: its modes are console.*",
        ),
        ("xvda", "expected DEVICE:MODE"),
        ("xvda:", "expected DEVICE:MODE"),
        ("xvda:blk.", "its modes are blk.*"),
        ("eth0:net.tx_id_out_of_range", "\"eth0\" is not a device"),
    ] {
        let e = parse(&format!("\nhostile = [ '{entry}' ]\n")).unwrap_err();
        assert!(
            e.starts_with("h.cfg:5: bad hostile entry: ")
                && e.contains(why)
                && e.ends_with(&format!("({entry})")),
            "{entry}: {e}"
        );
        assert!(!e.contains('\n'));
    }
    let e = parse("hostile = 'xvda:blk.never_answers'\n").unwrap_err();
    assert!(e.contains("`hostile` takes a list"), "{e}");
    let e = parse("hostile = [ 'xvda:blk.never_answers', '51712:blk.response_id_high_bits' ]\n")
        .unwrap_err();
    assert!(e.contains("xvda") || e.contains("51712"), "{e}");
    assert!(
        e.contains("already has mode blk.never_answers (line 4)"),
        "{e}"
    );
}

#[test]
fn the_command_line_replaces_the_files_entry_for_a_device() {
    let mut cfg =
        parse("hostile = [ 'xvda:blk.never_answers', 'vif0:net.rx_buffers_hoarded' ]\n").unwrap();
    cfg.add_hostile("xvda=blk.unknown_status", "--hostile")
        .unwrap();
    cfg.add_hostile("console=console.out_cons_past_prod", "--hostile")
        .unwrap();
    let got: Vec<(HostileDevice, &str, u32)> = cfg
        .hostile
        .iter()
        .map(|h| (h.device, h.mode.as_str(), h.line))
        .collect();
    assert_eq!(
        got,
        vec![
            (HostileDevice::Vif(0), "net.rx_buffers_hoarded", 4),
            (HostileDevice::Disk(51712), "blk.unknown_status", 0),
            (HostileDevice::Console, "console.out_cons_past_prod", 0),
        ]
    );
    let e = cfg
        .add_hostile("vif9=net.tx_id_out_of_range", "--hostile")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "--hostile: bad hostile entry: no vif 9 in this config (config h.cfg) (vif9=net.tx_id_out_of_range)"
    );
}

/// Channels (secondary consoles) take `console.*` modes, named `consoleN` (the
/// console number: the first channel is `console1`) or by the channel's name;
/// `console0` is the primary console.
#[test]
fn channels_are_named_by_console_number_or_name() {
    let cfg = parse(
        "channel = [ 'name=org.example.a,connection=pty', 'name=org.example.b,connection=pty' ]\nhostile = [ 'console2:console.out_cons_past_prod', 'org.example.a=console.in_prod_past_ring',\n  'console0:console.out_cons_past_prod' ]\n",
    )
    .unwrap();
    let got: Vec<(HostileDevice, &str)> = cfg
        .hostile
        .iter()
        .map(|h| (h.device, h.mode.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (HostileDevice::Channel(2), "console.out_cons_past_prod"),
            (HostileDevice::Channel(1), "console.in_prod_past_ring"),
            (HostileDevice::Console, "console.out_cons_past_prod"),
        ]
    );
    let chan = "channel = [ 'name=org.example.a,connection=pty' ]\n";
    for (entry, why) in [
        (
            "console2:console.out_cons_past_prod",
            "no channel console2 in this config",
        ),
        (
            "console1:net.tx_id_out_of_range",
            "console1 is a channel: its modes are console.*",
        ),
        (
            "org.example.z:console.out_cons_past_prod",
            "\"org.example.z\" is not a device",
        ),
        (
            "org.example.a=console.in_prod_past_ring', 'console1:console.out_cons_past_prod",
            "already has mode console.in_prod_past_ring",
        ),
    ] {
        let e = parse(&format!("{chan}hostile = [ '{entry}' ]\n")).unwrap_err();
        assert!(
            e.starts_with("h.cfg:5: bad hostile entry: ") && e.contains(why),
            "{entry}: {e}"
        );
        assert!(!e.contains('\n'));
    }
    // From the command line too, replacing the file's entry for that channel.
    let mut cfg = parse(&format!(
        "{chan}hostile = [ 'console1:console.in_prod_past_ring' ]\n"
    ))
    .unwrap();
    cfg.add_hostile("org.example.a=console.out_cons_past_prod", "--hostile")
        .unwrap();
    assert_eq!(cfg.hostile.len(), 1);
    assert_eq!(cfg.hostile[0].device, HostileDevice::Channel(1));
    assert_eq!(cfg.hostile[0].mode, "console.out_cons_past_prod");
}
