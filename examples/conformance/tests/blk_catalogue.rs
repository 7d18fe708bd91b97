//! The block catalogue against the kit's own blkfront (xbd-front); prints the table.

use core::time::Duration;

use hypercall::gnttab::GrantTable;
use xbd_front::{Config, Device};
use xen_conformance::blk::{self, BlockDriver, Env, GRANT_ENTRIES};
use xen_conformance::HostPlatform;
use xenbus::Xenstore;

/// Timeout of every blocking call: 100 waits of the virtual clock.
const T: Duration = Duration::from_millis(100);

/// 16 requests of 32 pages in flight; under Miri 4 of 11 (every case still fits:
/// the blocking helpers split what does not; a smaller device costs Miri less).
#[cfg(not(miri))]
type Dev<'e> = Device<HostPlatform, &'e GrantTable<GRANT_ENTRIES>, 16, 32>;
#[cfg(miri)]
type Dev<'e> = Device<HostPlatform, &'e GrantTable<GRANT_ENTRIES>, 4, 11>;

struct Xbd<'e> {
    dev: Dev<'e>,
    xs: Xenstore<HostPlatform>,
}

fn s(e: impl ToString) -> String {
    e.to_string()
}

impl Xbd<'_> {
    fn lba(&self, offset: u64) -> Result<u64, String> {
        let ss = self.dev.info().ok_or("not connected")?.sector_size;
        Ok(offset / u64::from(ss))
    }
}

impl BlockDriver for Xbd<'_> {
    fn connect(&mut self) -> Result<u64, String> {
        self.dev.connect(&mut self.xs).map_err(s)?;
        self.capacity()
            .ok_or_else(|| "connected without geometry".into())
    }
    fn capacity(&self) -> Option<u64> {
        self.dev.info().map(|i| i.capacity_bytes())
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let lba = self.lba(offset)?;
        self.dev.read(lba, &mut [buf], T).map(|_| ()).map_err(s)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        let lba = self.lba(offset)?;
        self.dev.write(lba, &[data], T).map_err(s)
    }
    fn flush(&mut self) -> Result<(), String> {
        self.dev.flush(T).map_err(s)
    }
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), String> {
        let (lba, ss) = (self.lba(offset)?, self.lba(len)?);
        self.dev.discard(lba, ss, T).map_err(s)
    }
    fn poll_events(&mut self) -> Result<Option<String>, String> {
        let ev = self.dev.poll_events(&mut self.xs).map_err(s)?;
        Ok(ev.map(|e| format!("{e:?}")))
    }
    fn close(&mut self) -> Result<(), String> {
        self.dev.close(&mut self.xs).map(|_| ()).map_err(s)
    }
}

fn xbd(
    cfg: Config,
) -> impl for<'e> FnMut(&'e Env<'e>) -> Result<Box<dyn BlockDriver + 'e>, String> {
    move |env: &Env<'_>| {
        let xs = Xenstore::from_hvm_params(env.host.clone()).map_err(s)?;
        let dev = Device::new(env.host.clone(), env.grants, env.devid, cfg).map_err(s)?;
        Ok(Box::new(Xbd { dev, xs }) as Box<dyn BlockDriver + '_>)
    }
}

/// Cases run under Miri unless `BLK_CASES` names others (comma-separated names
/// up to their first space, or `all`): a connect through the store server costs
/// Miri many seconds, so the whole catalogue would take CPU-minutes there. These
/// four cover the peer's ring, raw index, page-scan, grant and reconnect paths.
const MIRI_CASES: &str =
    "roundtrip,rsp_prod_overrun,pages_hold_only_request_data,grants_kept_mapped_at_close";

#[test]
fn xbd_front_passes_the_block_catalogue() {
    if cfg!(miri) {
        let want = std::env::var("BLK_CASES").unwrap_or_else(|_| MIRI_CASES.to_string());
        let cfg = Config {
            timeout: T,
            poll_spin: Duration::ZERO,
            ..Config::default()
        };
        let mut ran = 0;
        for case in blk::catalogue() {
            let short = case
                .name
                .trim_start_matches("blk.")
                .split(' ')
                .next()
                .unwrap_or("");
            if want != "all" && !want.split(',').any(|w| w == short) {
                continue;
            }
            let row = blk::run_one(case.name, xbd(cfg)).expect("a case of that name");
            println!(
                "{}  {}  {}",
                row.name,
                if row.pass { "pass" } else { "FAIL" },
                row.evidence
            );
            assert!(row.pass, "{}: {}", row.name, row.evidence);
            ran += 1;
        }
        assert!(ran > 0, "BLK_CASES={want} names no case");
        return;
    }
    let report = blk::run(xbd(Config {
        timeout: T,
        // No busy polling before sleeping: the host platform's clock only moves
        // in `wait()`, so a spin would just poll the ring thousands of times.
        poll_spin: Duration::ZERO,
        ..Config::default()
    }));
    println!("{report}");
    assert_eq!(report.rows.len(), blk::catalogue().len());
    assert!(report.all_passed(), "{report}");
}

/// The same cases with the other half of the backend peer in use: two queues
/// (`queue-N/` keys, two rings), no persistent grants, no indirect descriptors.
/// Not under Miri (the default run above covers the cases there).
#[test]
fn xbd_front_with_two_queues_and_plain_grants_passes_too() {
    if cfg!(miri) {
        return;
    }
    let report = blk::run(xbd(Config {
        timeout: T,
        poll_spin: Duration::ZERO,
        queues: 2,
        persistent: false,
        indirect: false,
        ..Config::default()
    }));
    println!("{report}");
    assert!(report.all_passed(), "{report}");
    // The backend served two rings (the evidence names the queues used).
    let huge = report
        .rows
        .iter()
        .find(|r| r.name.starts_with("blk.huge_offers_clamped"))
        .map(|r| r.evidence.clone())
        .unwrap_or_default();
    assert!(huge.contains("2 queue(s)"), "{huge}");
}
