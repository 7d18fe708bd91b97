//! Path syntax (docs/misc/xenstore.txt; C xenstored `is_valid_nodename`,
//! `canonicalize`, `check_watch_path`).
//!
//! Paths are ASCII `[A-Za-z0-9-/_@]`, absolute (`/...`), no `//`, no trailing `/` except
//! the root, never empty. Relative paths resolve against `/local/domain/<domid>`. As in C
//! xenstored, the part of a path below `/local/domain/<domid>/` (or the whole path
//! elsewhere) may be at most `path_len` bytes (quota, default `XENSTORE_REL_PATH_MAX`);
//! we also refuse anything longer than `XENSTORE_ABS_PATH_MAX`. `.` is not a valid
//! character, so `..` tricks fail the character check.

use super::Errno;
use hypercall::abi::xs_wire::{is_path_char as valid_char, is_well_formed_path, REL_PATH_MAX};

/// A request's path after resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A node path (absolute, validated).
    Node(String),
    /// A special watch path (`@...`), validated for characters and length only.
    Special(String),
}

/// The implicit base of relative paths for `domid`.
pub(crate) fn domain_path(domid: u32) -> String {
    format!("/local/domain/{domid}")
}

/// Length of a leading `/local/domain/<digits>/` (C: `sscanf("/local/domain/%5u/")`), else 0.
fn local_prefix_len(path: &str) -> usize {
    const P: &str = "/local/domain/";
    let Some(rest) = path.strip_prefix(P) else {
        return 0;
    };
    let digits = rest.bytes().take(5).take_while(u8::is_ascii_digit).count();
    if digits == 0 || rest.as_bytes().get(digits) != Some(&b'/') {
        return 0;
    }
    P.len() + digits + 1
}

/// Whether `path` is a valid absolute node path under the `path_len` quota.
pub(crate) fn is_valid_node_path(path: &str, path_len: usize) -> bool {
    // Absolute, well formed (characters, `//`, trailing `/`, ABS_PATH_MAX), and within
    // the quota on the part below the domain's home.
    path.starts_with('/')
        && is_well_formed_path(path.as_bytes())
        && path.len() <= local_prefix_len(path).saturating_add(path_len)
}

/// Resolves the raw path bytes of a request from `domid`: relative paths get the
/// domain prefix; `@` paths are special (accepted only where `allow_special`).
pub(crate) fn resolve(
    raw: &[u8],
    domid: u16,
    path_len: usize,
    allow_special: bool,
) -> Result<Target, Errno> {
    // Only ASCII of the allowed set can pass validation; checking first also makes the
    // UTF-8 conversion below infallible in practice.
    if !raw.iter().all(|&c| valid_char(c)) {
        return Err(Errno::EINVAL);
    }
    let s = core::str::from_utf8(raw).map_err(|_| Errno::EINVAL)?;
    if s.starts_with('@') {
        if !allow_special || s.len() > REL_PATH_MAX {
            return Err(Errno::EINVAL);
        }
        return Ok(Target::Special(s.to_string()));
    }
    let abs = if s.starts_with('/') {
        s.to_string()
    } else {
        if s.len() > REL_PATH_MAX {
            return Err(Errno::EINVAL);
        }
        format!("{}/{}", domain_path(u32::from(domid)), s)
    };
    if !is_valid_node_path(&abs, path_len) {
        return Err(Errno::EINVAL);
    }
    Ok(Target::Node(abs))
}

/// Resolves a path that must be a node path.
pub(crate) fn resolve_node(raw: &[u8], domid: u16, path_len: usize) -> Result<String, Errno> {
    match resolve(raw, domid, path_len, false)? {
        Target::Node(p) => Ok(p),
        Target::Special(_) => Err(Errno::EINVAL),
    }
}

/// Parent of an absolute path (`/` for top-level nodes and for `/` itself).
pub(crate) fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The ancestors of an absolute path, nearest first, ending with `/` (`/` alone for
/// `/` itself and for a top-level node). Finite whatever the tree holds.
pub(crate) fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.rmatch_indices('/')
        .map(|(i, _)| &path[..i])
        .filter(|p| !p.is_empty())
        .chain(core::iter::once("/"))
}

/// Last component of an absolute path (empty for `/`).
pub(crate) fn basename(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// Joins a parent path and a child name.
pub(crate) fn child(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Whether `child` is `parent` or below it (C `is_child`; everything is below `/`).
pub(crate) fn is_child(child: &str, parent: &str) -> bool {
    if parent == "/" {
        return true;
    }
    match child.strip_prefix(parent) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypercall::abi::xs_wire::ABS_PATH_MAX;

    const Q: usize = REL_PATH_MAX;

    #[test]
    fn valid_and_invalid_paths() {
        for ok in ["/", "/a", "/a/b-c_d@e/F9", "/local/domain/1/x"] {
            assert!(is_valid_node_path(ok, Q), "{ok}");
        }
        for bad in [
            "",
            "a",
            "/a/",
            "//",
            "/a//b",
            "/local/domain/",
            "/a/../b",
            "/a/./b",
            "/a b",
            "/a\u{e9}",
            "/a\0b",
        ] {
            assert!(!is_valid_node_path(bad, Q), "{bad:?}");
        }
    }

    #[test]
    fn length_limits_follow_c_xenstored() {
        // Outside /local/domain/<id>/ the whole path counts against the quota.
        let p = format!("/{}", "a".repeat(Q - 1));
        assert!(is_valid_node_path(&p, Q));
        let p = format!("/{}", "a".repeat(Q));
        assert!(!is_valid_node_path(&p, Q));
        // Below a domain's home only the relative part counts ...
        let p = format!("/local/domain/7/{}", "a".repeat(Q));
        assert!(is_valid_node_path(&p, Q));
        let p = format!("/local/domain/7/{}", "a".repeat(Q + 1));
        assert!(!is_valid_node_path(&p, Q));
        // ... and never more than ABS_PATH_MAX in total.
        let p = format!("/local/domain/7/{}", "a".repeat(ABS_PATH_MAX));
        assert!(!is_valid_node_path(&p, ABS_PATH_MAX));
    }

    #[test]
    fn resolve_relative_and_special() {
        assert_eq!(
            resolve(b"device/vbd", 3, Q, false),
            Ok(Target::Node("/local/domain/3/device/vbd".into()))
        );
        assert_eq!(resolve(b"/x", 3, Q, false), Ok(Target::Node("/x".into())));
        assert_eq!(resolve(b"", 3, Q, false), Err(Errno::EINVAL));
        assert_eq!(resolve(b"a/", 3, Q, false), Err(Errno::EINVAL));
        assert_eq!(resolve(b"..", 3, Q, false), Err(Errno::EINVAL));
        assert_eq!(resolve(b"@releaseDomain", 0, Q, false), Err(Errno::EINVAL));
        assert_eq!(
            resolve(b"@releaseDomain", 0, Q, true),
            Ok(Target::Special("@releaseDomain".into()))
        );
        assert_eq!(resolve(&[b'/', 0xff], 0, Q, false), Err(Errno::EINVAL));
        let long = vec![b'a'; REL_PATH_MAX + 1];
        assert_eq!(resolve(&long, 0, Q, false), Err(Errno::EINVAL));
    }

    #[test]
    fn helpers() {
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/"), "/");
        let up = |p| ancestors(p).collect::<Vec<_>>();
        assert_eq!(up("/a/b/c"), ["/a/b", "/a", "/"]);
        assert_eq!(up("/a"), ["/"]);
        assert_eq!(up("/"), ["/"]);
        assert_eq!(basename("/a/b"), "b");
        assert_eq!(child("/", "a"), "/a");
        assert_eq!(child("/a", "b"), "/a/b");
        assert!(is_child("/a/b", "/a"));
        assert!(is_child("/a", "/a"));
        assert!(!is_child("/ab", "/a"));
        assert!(is_child("/anything", "/"));
        assert_eq!(
            local_prefix_len("/local/domain/12/x"),
            "/local/domain/12/".len()
        );
        assert_eq!(local_prefix_len("/local/domain/123456/x"), 0);
        assert_eq!(local_prefix_len("/local/domain/x/y"), 0);
    }

    /// Special and relative paths are at most `REL_PATH_MAX` bytes: exactly that
    /// many is accepted, one more is EINVAL, even under a path quota that would
    /// take it. (cargo-mutants: both `s.len() > REL_PATH_MAX` as `>=` and `==`.)
    #[test]
    fn rel_path_max_bounds_special_and_relative_paths() {
        let big = ABS_PATH_MAX;
        let special = |n: usize| format!("@{}", "a".repeat(n - 1));
        assert_eq!(
            resolve(special(REL_PATH_MAX).as_bytes(), 1, big, true),
            Ok(Target::Special(special(REL_PATH_MAX)))
        );
        assert_eq!(
            resolve(special(REL_PATH_MAX + 1).as_bytes(), 1, big, true),
            Err(Errno::EINVAL)
        );
        let rel = |n: usize| "a".repeat(n);
        assert_eq!(
            resolve(rel(REL_PATH_MAX).as_bytes(), 1, big, false),
            Ok(Target::Node(format!(
                "/local/domain/1/{}",
                rel(REL_PATH_MAX)
            )))
        );
        assert_eq!(
            resolve(rel(REL_PATH_MAX + 1).as_bytes(), 1, big, false),
            Err(Errno::EINVAL)
        );
    }
}
