//! The xenstore a toolstack leaves for a guest with one device, as the targets that
//! fuzz a frontend over a real handshake need it.

use std::sync::Arc;

use hypercall::{Gfn, Platform};
use xenstored::{Access, Perm, Quotas, TxId, Xenstored};

use crate::HostPlatform;

/// Domain 1's store, set up for one device: shim-hv's xenstored, inline (no worker
/// thread: the run is deterministic, and no detached thread can still be exiting
/// when LeakSanitizer checks an input), with
/// - the frontend directory `fe` (under `/local/domain/1/device/`) and its parents
///   owned by the guest, holding `backend` = `be`, `backend-id` = 0, `state` = 1 and
///   `fe_keys`;
/// - the backend directory `be` owned by dom0 and readable by the guest, holding
///   `state` = 2 (InitWait) and `be_keys`;
/// - the guest introduced on a store page of `host`.
///
/// Returns the daemon and the store page's frame, or `None` if the daemon refused
/// the introduction. The page is leaked to the daemon, which keeps it as `'static`:
/// `host`'s memory must outlive the daemon (declare `host` first).
///
/// # Panics
/// If `fe` is not under `/local/domain/1/`, or a write the set-up needs fails.
pub fn device_store(
    host: &HostPlatform,
    fe: &str,
    be: &str,
    fe_keys: &[(&str, &str)],
    be_keys: &[(&str, &str)],
) -> Option<(Arc<Xenstored>, Gfn)> {
    const GUEST: &str = "/local/domain/1";
    assert!(fe.starts_with(GUEST), "{fe} is not domain 1's");
    let store = host.shared_pages(1).leak();
    let gfn = host.virt_to_gfn(store.as_non_null())?;
    let xsd = Xenstored::new_inline(Quotas::default());
    let dom0 = xsd.client(0);
    let t = TxId::NONE;
    let guest_owned = [Perm::new(1, Access::None)];
    let backend_owned = [Perm::new(0, Access::None), Perm::new(1, Access::Read)];
    dom0.write(t, fe, b"").unwrap();
    // `/local/domain/1` and every directory down to `fe`.
    let mut dir = String::from(GUEST);
    dom0.set_perms(t, &dir, &guest_owned).unwrap();
    for part in fe[GUEST.len()..].split('/').filter(|p| !p.is_empty()) {
        dir.push('/');
        dir.push_str(part);
        dom0.set_perms(t, &dir, &guest_owned).unwrap();
    }
    // Created after their parents' permissions are set: they inherit them.
    let fixed = [("backend", be), ("backend-id", "0"), ("state", "1")];
    for (k, v) in fixed.iter().chain(fe_keys) {
        dom0.write(t, &format!("{fe}/{k}"), v.as_bytes()).unwrap();
    }
    dom0.write(t, be, b"").unwrap();
    dom0.set_perms(t, be, &backend_owned).unwrap();
    for (k, v) in [("state", "2")].iter().chain(be_keys) {
        dom0.write(t, &format!("{be}/{k}"), v.as_bytes()).unwrap();
    }
    xsd.introduce_domain(1, store, Arc::new(|| {})).ok()?;
    Some((xsd, gfn))
}
