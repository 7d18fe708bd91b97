//! The network catalogue against the kit's own network frontend (xennet-front), on
//! the conformance kit's store server and netif backend; prints the table.

use std::time::Duration;

use hypercall::gnttab::GrantTable;
use hypercall::SharedMem;
use xen_conformance::net::{self, NetDriver, NetEnv, Probe};
use xen_conformance::HostPlatform;
use xenbus::Xenstore;
use xennet_front::{Config, LinkState, NetFront};

/// Grant refs per driver (eight grant frames: four queues of 256 rx and 256 tx
/// buffers, and their rings).
const NG: usize = 4096;
/// Per-step timeout: virtual time (one `wait()` is 1 ms).
const T: Duration = Duration::from_millis(200);

/// The default configuration with 4 queues; under Miri one queue, with 32 buffers each way instead of 256
/// (a ring's worth of pages per connection made Miri slow; every case still needs
/// at most 19 buffers at once).
fn config() -> Config {
    let buffers = if cfg!(miri) {
        32
    } else {
        Config::DEFAULT.rx_buffers
    };
    Config {
        rx_buffers: buffers,
        tx_buffers: buffers,
        // As many queues as the device type holds (the backend offers 4), so every
        // case runs multi-queue (net.multi_queue_traffic uses them all); one under
        // Miri, where each queue's buffers cost time and the cases run there do not
        // need more.
        max_queues: if cfg!(miri) { 1 } else { 4 },
        ..Config::default()
    }
}

/// xennet-front behind the conformance trait: a few lines over its calls.
struct Kit<'g> {
    xs: Xenstore<HostPlatform>,
    grants: &'g GrantTable<NG>,
    host: HostPlatform,
    index: u32,
    dev: Option<NetFront<'g, HostPlatform, NG, 4>>,
}

impl NetDriver for Kit<'_> {
    fn connect(&mut self) -> Result<(), String> {
        match self.dev.as_mut() {
            Some(d) => d.reconnect(&mut self.xs, T),
            None => NetFront::connect(
                self.host.clone(),
                self.grants,
                &mut self.xs,
                self.index,
                config(),
                T,
            )
            .map(|d| self.dev = Some(d)),
        }
        .map_err(|e| e.to_string())
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), String> {
        let d = self.dev.as_mut().ok_or("not connected")?;
        d.send(frame).map_err(|e| e.to_string())
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, String> {
        let d = self.dev.as_mut().ok_or("not connected")?;
        d.recv(buf)
            .map(|m| m.map(|m| m.len))
            .map_err(|e| e.to_string())
    }

    fn close(&mut self) -> Result<(), String> {
        let d = self.dev.as_mut().ok_or("not connected")?;
        d.close(&mut self.xs, T).map_err(|e| e.to_string())
    }

    // The upcall of a guest using xennet-front: `poll` (reclaim, refill, re-arm).
    fn event(&mut self, _port: hypercall::Port) -> Result<(), String> {
        match self.dev.as_mut() {
            Some(d) => d.poll().map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    fn probe(&mut self) -> Probe {
        let Some(d) = self.dev.as_mut() else {
            return Probe::default();
        };
        let _ = d.poll();
        let _ = d.poll_backend(&mut self.xs);
        let s = d.stats();
        let mut reported = Vec::new();
        if let Some(m) = d.negotiated().ignored_mtu {
            reported.push(format!("backend mtu {m} out of range, using {}", d.mtu()));
        }
        let (failed, connected) = match d.link_state() {
            LinkState::Up => (None, true),
            LinkState::Down => (None, false),
            LinkState::Broken(b) => (Some(b.to_string()), false),
        };
        Probe {
            failed,
            connected,
            rx_errors: Some(s.rx_errors),
            reported,
        }
    }

    fn grant_frames(&self) -> SharedMem<'_> {
        self.grants.frames().unwrap_or(SharedMem::empty())
    }
}

#[test]
fn xennet_front_passes_the_net_catalogue() {
    // One grant table per driver the run builds, set aside for the run (a
    // device borrows its table).
    let tables: Vec<GrantTable<NG>> = (0..256).map(|_| GrantTable::empty()).collect();
    let mut next = tables.iter();
    // NET_CASES=a,b runs only the cases whose names contain one of them (under
    // Miri pass it with -Zmiri-env-forward=NET_CASES). Under Miri the default is
    // three cases (eight took over 3.5 minutes of CPU there): traffic both ways,
    // raw rx slots with extra-info, grants kept mapped across a reconnect.
    let miri_default = if cfg!(miri) {
        "connect_and_traffic,rx_bad_extra,rings_kept_mapped_at_close"
    } else {
        ""
    };
    let only = std::env::var("NET_CASES").unwrap_or_else(|_| miri_default.into());
    let cases = net::catalogue()
        .iter()
        .filter(|c| only.is_empty() || only.split(',').any(|o| c.name.contains(o)));
    let report = net::run_cases(cases, |env: &NetEnv| {
        let grants = next.next().ok_or("out of grant tables")?;
        grants
            .init(env.host.shared_pages(NG * 8 / hypercall::PAGE_SIZE))
            .map_err(|e| e.to_string())?;
        let xs = Xenstore::from_hvm_params(env.host.clone()).map_err(|e| e.to_string())?;
        Ok(Box::new(Kit {
            xs,
            grants,
            host: env.host.clone(),
            index: env.index,
            dev: None,
        }))
    });
    println!("{report}");
    if only.is_empty() {
        assert_eq!(report.rows.len(), net::catalogue().len());
    }
    assert!(report.all_passed(), "{report}");
}
