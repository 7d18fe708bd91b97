//! Tests written for mutants that cargo-mutants found missed (docs/mutants.md):
//! each fails on the mutant named in its comment.

use std::format;

use crate::*;

/// `Path`'s `AsRef<str>`, `Display` and `Debug` give the path itself (mutants:
/// `as_ref` returning `""`/`"xyzzy"`, `fmt` returning `Ok` without writing).
#[test]
fn path_as_ref_display_and_debug_show_the_path() {
    let p = Path::join("device/vbd/768", "state").unwrap();
    let s: &str = p.as_ref();
    assert_eq!(s, "device/vbd/768/state");
    assert_eq!(format!("{p}"), "device/vbd/768/state");
    assert_eq!(format!("{p:?}"), "\"device/vbd/768/state\"");
    assert_eq!(format!("{}", Path::empty()), "");
}

/// A listing with children is not empty (mutant: `DirEntries::is_empty` -> `true`).
#[test]
fn directory_with_children_is_not_empty() {
    let fake = crate::fake::FakePlatform::new();
    let mut xs = fake.client();
    xs.write("dir/a", b"v").unwrap();
    let mut buf = [0u8; 64];
    let d = xs.directory("dir", &mut buf).unwrap();
    assert!(!d.is_empty());
    assert_eq!(d.count(), 1);
}
