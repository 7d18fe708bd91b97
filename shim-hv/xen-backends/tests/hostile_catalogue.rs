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
}

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
