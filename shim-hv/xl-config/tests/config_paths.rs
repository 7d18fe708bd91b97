//! `DomainConfig::validate_paths`: the separate step that checks the files a
//! config names (docs/hostile-input.md row 44: missing disk file).

use std::path::PathBuf;

use xl_config::{DomainConfig, ErrorKind};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("xenkit-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn present_files_pass() {
    let t = TempDir::new("ok");
    let k = t.0.join("kernel");
    let d = t.0.join("disk.img");
    std::fs::write(&k, b"\x7fELF").unwrap();
    std::fs::write(&d, vec![0u8; 4096]).unwrap();
    let text = format!(
        "name = 'ok'\ntype = 'pvh'\nkernel = '{}'\ndisk = [ 'file:{},xvda,w', ',,hdc:cdrom,r' ]\n",
        k.display(),
        d.display()
    );
    let c = DomainConfig::parse_str("ok.cfg", &text).unwrap();
    assert_eq!(c.validate_paths(), Ok(()));
}

#[test]
fn missing_and_wrong_files_are_reported_with_lines() {
    let t = TempDir::new("bad");
    let img = t.0.join("img");
    std::fs::write(&img, b"x").unwrap();
    let text = format!(
        "name = 'bad'\ntype = 'pvh'\nkernel = '{dir}/nokernel'\nramdisk = '{dir}'\ndisk = [\n  '{dir}/missing.img,raw,xvda,w',\n  'phy:{img},xvdb,w',\n]\n",
        dir = t.0.display(),
        img = img.display()
    );
    let c = DomainConfig::parse_str("bad.cfg", &text).unwrap();
    let errs = c.validate_paths().unwrap_err();
    let got: Vec<(u32, &str, String)> = errs
        .iter()
        .map(|e| match &e.kind {
            ErrorKind::BadPath { what, .. } => (e.line, *what, e.text.clone()),
            k => panic!("unexpected {k:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [
            (3, "kernel", format!("{}/nokernel", t.0.display())),
            (4, "ramdisk", t.0.display().to_string()),
            (6, "disk", format!("{}/missing.img", t.0.display())),
            (7, "disk", img.display().to_string()),
        ]
    );
    assert!(
        errs[3].to_string().contains("not a block device"),
        "{}",
        errs[3]
    );
    assert!(
        errs[0].to_string().starts_with("bad.cfg:3: kernel: "),
        "{}",
        errs[0]
    );
}
