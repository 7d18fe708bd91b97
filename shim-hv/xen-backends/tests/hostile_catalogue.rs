//! xen-conformance's hostile-frontend catalogue (`xen_conformance::backend`) against
//! shim-hv's blkback, netback and console backend, in the in-process model
//! (`hostile_util`); prints the table. Also shows that a case fails, with its
//! evidence, against a backend that breaks its rule.

mod hostile_util;

use std::time::Duration;

use hostile_util::{Host, ShimWorld};
use hypercall::{Gfn, GrantRef, Port};
use xen_conformance::backend::{self, Class, FrontPage, FrontendWorld, Grantee};

/// How long one world may wait in all before its case fails as timed out.
const PATIENCE: Duration = Duration::from_secs(60);

fn run(class: Class) {
    let report = backend::run(&[class], |class| {
        Ok(Box::new(Host::new(class, PATIENCE).world()?) as Box<dyn FrontendWorld>)
    });
    println!("{report}");
    let want = backend::catalogue()
        .iter()
        .filter(|c| c.class == class)
        .count();
    assert_eq!(report.rows.len(), want);
    assert!(report.all_passed(), "{report}");
    // The evidence says what was seen: the counts and sizes a correct backend
    // gives, for the rows where they do not depend on timing.
    for row in &report.rows {
        let name = row.name.split(' ').next().unwrap_or_default();
        if let Some(&(_, want)) = EVIDENCE.iter().find(|(n, _)| *n == name) {
            assert!(
                row.evidence.starts_with(want),
                "{}: {:?} does not start with {want:?}",
                row.name,
                row.evidence
            );
        }
    }
}

/// The start of each deterministic row's evidence against shim-hv's backends.
const EVIDENCE: &[(&str, &str)] = &[
    (
        "blkback.malformed_requests",
        "36 malformed requests answered with errors, disk and pages untouched, \
         duplicate ids answered once each, nothing left mapped; neighbour's disk fine",
    ),
    (
        "blkback.malformed_persistent",
        "36 malformed requests answered with errors",
    ),
    (
        "blkback.indirect",
        "17 bad indirect requests refused with ERROR and the indirect operation, a good \
         one after them OK; neighbour's disk fine",
    ),
    (
        "blkback.garbage_event_indices",
        "209 reads all answered OKAY with the right data under garbage event indices",
    ),
    (
        "blkback.bad_connect_keys",
        "25 bad key sets each refused (Closing + error), nothing left mapped; \
         neighbour's disk fine",
    ),
    ("blkback.read_into_ring_page", "that disk closed ("),
    (
        "blkback.full_ring_other_disk",
        "32 reads filling one disk's ring, answers left unread: the domain's other disk \
         still reads; then all 32 answered OKAY",
    ),
    (
        "blkback.garbage_frontend_state",
        "6 garbage states before connecting: the backend never connected",
    ),
    (
        "netback.bad_tx_gref",
        "3 slots answered RSP_ERROR, 0 (extra info) RSP_NULL; vif up, receivers saw no \
         error, the next frame arrived; neighbours still exchange frames",
    ),
    (
        "netback.runt_frame",
        "1 slots answered RSP_ERROR, 0 (extra info) RSP_NULL;",
    ),
    (
        "netback.sizes_inconsistent",
        "2 slots answered RSP_ERROR, 0 (extra info) RSP_NULL;",
    ),
    (
        "netback.bad_gso",
        "1 slots answered RSP_ERROR, 1 (extra info) RSP_NULL;",
    ),
    (
        "netback.unknown_extra_info",
        "vif closed: unknown tx extra-info type 0; nothing mapped; the domain's other \
         vif still sends; neighbours still exchange frames",
    ),
    (
        "netback.odd_slot_layout",
        "a 5040-byte frame in 3 odd slots arrived byte for byte",
    ),
    (
        "netback.tx_chain_split",
        "a 2600-byte frame published as 2 + 1 slots arrived whole, answered once complete",
    ),
    (
        "netback.bad_rx_grefs",
        "8 bad rx buffers answered with an error status, the sender saw OKAY",
    ),
    (
        "netback.bad_connect_keys",
        "multi-queue-num-queues=\"99\": frontend: multi-queue-num-queues 99 (at most 4); \
         request-rx-copy=\"\": frontend: request-rx-copy must be 1",
    ),
    (
        "consback.out_prod_far_ahead",
        "out_prod 9 -> 5009: the console failed (page DISCONNECTED), earlier output \
         kept; another console still carries output",
    ),
    (
        "consback.out_prod_backwards",
        "out_prod 9 -> 7: the console failed",
    ),
    (
        "consback.in_cons_scribbled",
        "in_cons 2000 > in_prod 0: the console failed when a client sent input (send \
         returned 1), nothing written to the ring; another console still carries output",
    ),
    (
        "consback.event_storm",
        "20000 empty notifications, then output flows; another console still carries \
         output",
    ),
    (
        "consback.binary_and_input",
        "4133 bytes of every value (more than the ring holds) delivered unchanged; 3000 \
         bytes of input (3 rings' worth) arrived in order; a guest not reading: ",
    ),
];

#[test]
fn blkback_passes_the_hostile_frontend_catalogue() {
    run(Class::Blk);
}

#[test]
fn netback_passes_the_hostile_frontend_catalogue() {
    run(Class::Net);
}

#[test]
fn console_backend_passes_the_hostile_frontend_catalogue() {
    run(Class::Console);
}

/// Stands in for a blkback that keeps a data grant mapped after answering: the
/// world reports the first data page granted to the backend (the second grant: the
/// ring's is the first) as mapped for good.
struct KeepsAMapping {
    inner: ShimWorld,
    grants: std::cell::Cell<u32>,
    kept: std::cell::Cell<Option<GrantRef>>,
}

impl FrontendWorld for KeepsAMapping {
    fn alloc_page(&self) -> Result<FrontPage<'_>, String> {
        self.inner.alloc_page()
    }
    fn grant(&self, frame: Gfn, to: Grantee, readonly: bool) -> Result<GrantRef, String> {
        let g = self.inner.grant(frame, to, readonly)?;
        if to == Grantee::Backend {
            self.grants.set(self.grants.get() + 1);
            if self.grants.get() == 2 {
                self.kept.set(Some(g));
            }
        }
        Ok(g)
    }
    fn end_grant(&self, gref: GrantRef) -> Result<(), String> {
        if self.kept.get() == Some(gref) {
            return Err(format!("gref {} is still mapped", gref.0));
        }
        self.inner.end_grant(gref)
    }
    fn mapped(&self, gref: GrantRef) -> bool {
        self.kept.get() == Some(gref) || self.inner.mapped(gref)
    }
    fn grant_capacity(&self) -> u32 {
        self.inner.grant_capacity()
    }
    fn bind_port(&self, to: Grantee) -> Result<Port, String> {
        self.inner.bind_port(to)
    }
    fn notify(&self, port: Port) -> Result<(), String> {
        self.inner.notify(port)
    }
    fn write_key(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.inner.write_key(key, value)
    }
    fn remove_key(&self, key: &str) -> Result<(), String> {
        self.inner.remove_key(key)
    }
    fn front_key(&self, key: &str) -> Option<Vec<u8>> {
        self.inner.front_key(key)
    }
    fn backend_key(&self, key: &str) -> Option<Vec<u8>> {
        self.inner.backend_key(key)
    }
    fn wait(&self) -> bool {
        self.inner.wait()
    }
    fn console(&self) -> Option<(FrontPage<'_>, Port)> {
        self.inner.console()
    }
    fn console_output(&self) -> Vec<u8> {
        self.inner.console_output()
    }
    fn console_input(&self, bytes: &[u8]) -> usize {
        self.inner.console_input(bytes)
    }
    fn neighbour(&self) -> Result<Box<dyn FrontendWorld + '_>, String> {
        self.inner.neighbour()
    }
    fn sibling(&self) -> Result<Box<dyn FrontendWorld + '_>, String> {
        self.inner.sibling()
    }
}

/// The catalogue can fail: against a backend that keeps a grant mapped after
/// answering, `blkback.malformed_requests` reports FAIL naming the grant.
#[test]
fn a_backend_keeping_a_mapping_fails_its_case_with_evidence() {
    let case = backend::catalogue()
        .iter()
        .find(|c| c.name.starts_with("blkback.malformed_requests"))
        .expect("the case exists");
    let world = KeepsAMapping {
        inner: Host::new(Class::Blk, Duration::from_secs(5))
            .world()
            .expect("world"),
        grants: Default::default(),
        kept: Default::default(),
    };
    let r = case.run(&world);
    let kept = world.kept.get().expect("a data grant was made");
    let evidence = r.expect_err("the case must fail");
    println!("{}: FAIL {evidence}", case.name);
    assert!(
        evidence.contains(&format!("gref {} still mapped", kept.0)),
        "{evidence}"
    );
}
