//! The built-in guest: what a config without `kernel` runs, as an in-process guest
//! of the xen model. It is a small unikernel written with the kit itself, so the
//! toolstack can be used (and tested) without KVM:
//!
//! - prints to its PV console ring (`xencons`; the early `CONSOLEIO_write` console
//!   until the ring is up, or if it fails) and echoes what it is sent (`echo: ...`);
//! - connects to xenstore over its store ring (`xenbus::Xenstore`), reads its name
//!   and lists its devices (`device/vbd/*`, `device/vif/*`);
//! - connects every disk with `xbd-front`, prints its geometry, mode and
//!   negotiated features, reads sector 0 and, on a writable disk, writes a scratch
//!   pattern to the last sector, reads it back, puts the old contents back and
//!   flushes (so the image is left as it was); on a read-only disk or cdrom it shows
//!   that the frontend refuses the write itself. An empty cdrom drive (backend
//!   `params` empty) is reported without connecting;
//! - connects every vif with `xennet-front` and runs smoltcp on it: it answers ARP
//!   and ICMP echo, announces itself with a gratuitous ARP, and pings on request
//!   (see below). Its IPv4 address is the first one of the vif's `ip=` (the
//!   backend's `ip` node, which the toolstack writes as libxl does), with a /24
//!   prefix; without `ip=` it is the link-local `169.254.M4.M5/16` made from the
//!   last two bytes of its MAC;
//! - opens every channel (`device/console/N` with a `name`: xl's `channel=`) with
//!   `xencons`' secondary-console frontend, writes one greeting line to it
//!   (`xenkit built-in guest: channel NAME (console N) of domain ID (DOMNAME)`) and
//!   from then on echoes back, unchanged, whatever it receives on it;
//! - advertises `control/feature-poweroff` and `-reboot` and watches
//!   `control/shutdown` (`xenbus::power`): `poweroff`/`halt` power it off, `reboot`
//!   reboots it (the toolstack then applies `on_poweroff`/`on_reboot`); an unknown
//!   value is cleared and reported on the console (docs/hostile-input.md row 38); a request
//!   repeated while one is being carried out is ignored (row 39). Before it goes
//!   it closes its devices;
//! - sleeps until an event or a deadline it really has (no tick: an idle domain
//!   costs no wake-ups); with `heartbeat=MS` on its command line (xl's `extra=` or
//!   `cmdline=`) it also counts up `data/heartbeat` every MS milliseconds
//!   (at least 10), something guest-written for tests to watch;
//! - pings on request: writing an IPv4 address to its `data/ping` node (e.g.
//!   `xenstore-write /local/domain/N/data/ping 10.0.0.2`) makes it send up to
//!   [`PING_COUNT`] echo requests from the vif whose subnet holds that address
//!   (else the first vif) and report `ping A: R/S replies` on its console and in
//!   `data/ping-result` (`R/S`).
//!
//! A device that fails (connect refused, backend gone, protocol violation) is
//! reported on the console with its typed error and dropped; the guest keeps
//! running. A console ring that fails (impossible indices from the backend, on
//! output or input) is reported, with the reason, on `CONSOLEIO_write`, which the
//! guest uses from then on. (shim-hv's hostile modes, docs/hostile-mode.md,
//! exercise all of these.)
//!
//! Console lines it prints (tests and the demo look for them):
//! `xenkit built-in guest: domain N (NAME) up`,
//! `disk N (NAME): S sectors of B bytes (C), read-write|read-only disk|cdrom;
//! features: ...`, `disk N (NAME): sector 0: "..."`, `disk N (NAME): scratch sector
//! L: written, read back, restored, flushed`, `disk N (NAME): write refused:
//! <error>`, `disk N (NAME): cdrom drive, no media`, `disk N: <error>`,
//! `disk N (NAME): the backend went to STATE during I/O`,
//! `nic N: mac M, mtu U, Q queue(s), ...; ip A/P`, `nic N: sent a gratuitous ARP
//! for A`, `nic N: <error>`, `channel N: backend P`, `channel N (NAME): connected,
//! greeting sent`, `channel N: <error>`, `ping A: R/S replies`, `waiting for control/shutdown`,
//! `power: <event>`, `ignoring control/shutdown = "<value>"`,
//! `console ring failed (output|input): <error>; using CONSOLEIO_write`.

use std::sync::Arc;
use std::time::Duration;

use hypercall::gnttab::GrantTable;
use hypercall::Platform;
use smoltcp::iface::{Config as IfConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{ChecksumCapabilities, Device};
use smoltcp::socket::icmp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use xenbus::power::{issue_shutdown, PowerControl, PowerFeatures, ShutdownReason};
use xenbus::{Store, Xenstore};
use xencons::secondary::SecondaryConsole;
use xennet_front::ping::Pinger;
use xennet_front::{NetFront, SmolDevice};

use xen_model::inproc::InProcGuest;

/// The shortest heartbeat period `heartbeat=MS` may ask for.
const MIN_BEAT: Duration = Duration::from_millis(10);
/// The node the guest counts up in with `heartbeat=MS` (something guest-written to
/// watch).
pub const HEARTBEAT: &str = "data/heartbeat";
/// How long the guest sleeps at most while a ping is in flight (smoltcp and the
/// ping's own timeouts are checked this often).
const PING_STEP: Duration = Duration::from_millis(10);
/// Write an IPv4 address here to make the guest ping it.
pub const PING_NODE: &str = "data/ping";
/// Where the guest reports a ping's result (`replies/sent`).
pub const PING_RESULT: &str = "data/ping-result";
/// Echo requests per ping request.
pub const PING_COUNT: u16 = 3;
/// How long one echo request waits for its reply.
const PING_WAIT: Duration = Duration::from_secs(1);
const PING_TOKEN: &str = "builtin:ping";
const PING_IDENT: u16 = 0x7865; // "xe"
/// Grant entries of the guest's table (8 frames).
const GRANTS: usize = 4096;
/// Requests a disk keeps in flight.
const DISK_SLOTS: usize = 8;
/// Pages per disk request (no indirect descriptors needed for this much).
const DISK_SEGS: usize = 11;
/// Bound of one disk request.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-step timeout of a device handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing one device may take at power-off.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

type Platf<'a> = &'a InProcGuest;
type BlockDevice<'g> = xbd_front::Device<Platf<'g>, &'g GrantTable<GRANTS>, DISK_SLOTS, DISK_SEGS>;

/// The guest's console: the ring once it works, else `CONSOLEIO_write`.
struct Out<'a> {
    g: &'a InProcGuest,
    ring: Option<xencons::Console<&'a InProcGuest>>,
}

impl<'a> Out<'a> {
    fn new(g: &'a InProcGuest) -> Self {
        let ring = match xencons::Console::from_hvm_params(g) {
            Ok(c) => Some(c),
            Err(e) => {
                early(g, &format!("console ring: {e}; using CONSOLEIO_write\n"));
                None
            }
        };
        Out { g, ring }
    }

    fn say(&mut self, msg: &str) {
        if let Some(c) = self.ring.as_mut() {
            match c.write(msg.as_bytes()) {
                Ok(()) => return,
                Err(e) => self.give_up_ring("output", &e),
            }
        }
        early(self.g, msg);
    }

    /// The ring failed (the backend broke its protocol, or went away): say why,
    /// and use `CONSOLEIO_write` from now on.
    fn give_up_ring(&mut self, what: &str, e: &dyn std::fmt::Display) {
        self.ring = None;
        early(
            self.g,
            &format!("console ring failed ({what}): {e}; using CONSOLEIO_write\n"),
        );
    }

    /// Waits (bounded) until the backend took all output: before powering off.
    fn flush(&mut self) {
        if let Some(c) = self.ring.as_mut() {
            let _ = c.flush(Duration::from_secs(2));
        }
    }

    /// Echoes console input, if any came. A read that fails (the backend's
    /// indices are impossible) gives the ring up, with the reason.
    fn echo(&mut self) {
        let mut buf = [0u8; 256];
        let n = match self.ring.as_mut().map(|c| c.read(&mut buf)) {
            Some(Ok(n)) if n > 0 => n,
            Some(Err(e)) => return self.give_up_ring("input", &e),
            _ => return,
        };
        let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
        self.say(&format!("echo: {}\n", text.trim_end()));
    }
}

fn early(g: &InProcGuest, msg: &str) {
    // shim-hv always accepts CONSOLEIO_write.
    let _ = hypercall::Xen(g).console_write(msg.as_bytes());
}

/// Ends the guest: flushes the console, then the domain shuts down with `reason`
/// (this thread then ends at its next hypercall).
fn stop(out: &mut Out<'_>, reason: ShutdownReason) {
    out.flush();
    let _ = issue_shutdown(out.g, reason);
}

/// The entries of `device/<kind>` as numbers, sorted; each also printed with its
/// backend path.
fn list_devices(
    out: &mut Out<'_>,
    xs: &mut Xenstore<Platf<'_>>,
    kind: &str,
    what: &str,
) -> Vec<u32> {
    let mut buf = [0u8; 512];
    let dir = format!("device/{kind}");
    let mut ids: Vec<u32> = match xs.directory(&dir, &mut buf) {
        Ok(list) => list.filter_map(|s| s.parse().ok()).collect(),
        Err(_) => Vec::new(),
    };
    ids.sort_unstable();
    for n in &ids {
        let mut b = [0u8; 256];
        let backend = xs
            .read_str(&format!("{dir}/{n}/backend"), &mut b)
            .map(str::to_string)
            .unwrap_or_default();
        out.say(&format!("{what} {n}: backend {backend}\n"));
    }
    ids
}

fn smol_now(g: &InProcGuest) -> SmolInstant {
    SmolInstant::from_micros((g.now_ns() / 1000) as i64)
}

/// One connected vif with its smoltcp interface.
struct Nic<'g> {
    idx: u32,
    dev: NetFront<'g, Platf<'g>, GRANTS>,
    iface: Interface,
    sockets: SocketSet<'static>,
    icmp: SocketHandle,
    rxb: Vec<u8>,
    txb: Vec<u8>,
    cidr: IpCidr,
}

/// The IPv4 address the guest uses on vif `idx` (see the module docs).
fn nic_address(xs: &mut Xenstore<Platf<'_>>, idx: u32, mac: [u8; 6]) -> (Ipv4Address, u8) {
    match xennet_front::toolstack_ipv4(xs, idx) {
        Some(a) => (a, 24),
        None => {
            let clamp = |b: u8| b.clamp(1, 254);
            (Ipv4Address::new(169, 254, clamp(mac[4]), clamp(mac[5])), 16)
        }
    }
}

/// A gratuitous ARP request announcing `ip` at `mac`.
fn gratuitous_arp(mac: [u8; 6], ip: Ipv4Address) -> [u8; 42] {
    let mut f = [0u8; 42];
    let ip = ip.octets();
    let parts: [&[u8]; 11] = [
        &[0xff; 6],
        &mac,
        &[0x08, 0x06],             // ARP
        &[0, 1, 0x08, 0x00, 6, 4], // Ethernet, IPv4, lengths
        &[0, 1],                   // request
        &mac,
        &ip,
        &[0; 6],
        &ip,
        &[],
        &[],
    ];
    let mut at = 0;
    for p in parts {
        if let Some(dst) = f.get_mut(at..at + p.len()) {
            dst.copy_from_slice(p);
        }
        at += p.len();
    }
    f
}

impl<'g> Nic<'g> {
    fn connect(
        g: &'g InProcGuest,
        grants: &'g GrantTable<GRANTS>,
        xs: &mut Xenstore<Platf<'_>>,
        idx: u32,
        out: &mut Out<'_>,
    ) -> Result<Nic<'g>, xennet_front::Error> {
        let cfg = xennet_front::Config {
            rx_buffers: 64,
            tx_buffers: 64,
            ..xennet_front::Config::default()
        };
        let mut dev = NetFront::connect(g, grants, xs, idx, cfg, CONNECT_TIMEOUT)?;
        let mac = dev.mac();
        let n = *dev.negotiated();
        let (ip, prefix) = nic_address(xs, idx, mac.0);
        out.say(&format!("nic {idx}: mac {mac}, {n}; ip {ip}/{prefix}\n"));
        if let Some(m) = n.ignored_mtu {
            out.say(&format!(
                "nic {idx}: backend mtu {m} out of range (68..=65521), using {}\n",
                n.mtu
            ));
        }
        let frame = (dev.mtu() as usize + 14).min(dev.max_frame());
        let (mut rxb, mut txb) = (vec![0u8; frame], vec![0u8; frame]);
        let mut icfg = IfConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac.0)));
        icfg.random_seed = g.now_ns() ^ u64::from(idx);
        let cidr = IpCidr::new(IpAddress::Ipv4(ip), prefix);
        let iface = {
            let mut sd = SmolDevice::new(&mut dev, &mut rxb, &mut txb);
            let mut i = Interface::new(icfg, &mut sd, smol_now(g));
            i.update_ip_addrs(|a| {
                let _ = a.push(cidr);
            });
            i
        };
        let mut sockets = SocketSet::new(Vec::new());
        let mut isock = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0u8; 2048]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0u8; 2048]),
        );
        // Only fails for an unspecified endpoint.
        let _ = isock.bind(icmp::Endpoint::Ident(PING_IDENT));
        let icmp = sockets.add(isock);
        match dev.send(&gratuitous_arp(mac.0, ip)) {
            Ok(()) => out.say(&format!("nic {idx}: sent a gratuitous ARP for {ip}\n")),
            Err(e) => out.say(&format!("nic {idx}: gratuitous ARP: {e}\n")),
        }
        Ok(Nic {
            idx,
            dev,
            iface,
            sockets,
            icmp,
            rxb,
            txb,
            cidr,
        })
    }

    /// Follows the backend's state and runs smoltcp once; an error means the device
    /// is unusable.
    /// When smoltcp next wants to be polled (a retransmission, an ARP retry), in
    /// the guest's clock; `None` if only an arriving frame can give it work.
    fn poll_at(&mut self, g: &InProcGuest) -> Option<u64> {
        let now = smol_now(g);
        let at = self.iface.poll_at(now, &self.sockets)?;
        let ahead = u64::try_from(at.total_micros() - now.total_micros()).unwrap_or(0);
        Some(g.now_ns().saturating_add(ahead.saturating_mul(1000)))
    }

    fn poll(
        &mut self,
        g: &InProcGuest,
        xs: &mut Xenstore<Platf<'_>>,
    ) -> Result<(), xennet_front::Error> {
        self.dev.poll_backend(xs)?;
        self.dev.poll()?;
        let mut sd = SmolDevice::new(&mut self.dev, &mut self.rxb, &mut self.txb);
        self.iface.poll(smol_now(g), &mut sd, &mut self.sockets);
        match self.dev.link_state() {
            xennet_front::LinkState::Broken(b) => Err(xennet_front::Error::Broken(b)),
            xennet_front::LinkState::Down => Err(xennet_front::Error::NotConnected),
            xennet_front::LinkState::Up => Ok(()),
        }
    }
}

/// One connected disk.
struct Disk<'g> {
    label: String,
    dev: Box<BlockDevice<'g>>,
}

/// `51712 (xvda)`: the number and its canonical name.
fn disk_label(devid: u32) -> String {
    match xbd_front::vdev::Vdev::from_number(devid).and_then(|v| v.name()) {
        Ok(n) => format!("{devid} ({n})"),
        Err(_) => devid.to_string(),
    }
}

fn size_text(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const KIB: u64 = 1 << 10;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// The start of a sector as text (non-printable bytes as `.`, trailing zeros cut).
fn sector_text(b: &[u8]) -> String {
    let head = b.get(..48).unwrap_or(b);
    let end = head.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    head.get(..end)
        .unwrap_or_default()
        .iter()
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                char::from(c)
            } else {
                '.'
            }
        })
        .collect()
}

/// Whether `device/vbd/<devid>` is a cdrom drive without media (backend `params`
/// empty): there is nothing to connect to.
fn empty_cdrom(xs: &mut Xenstore<Platf<'_>>, devid: u32) -> bool {
    let mut b = [0u8; 64];
    let cdrom = xs
        .read_str(&format!("device/vbd/{devid}/device-type"), &mut b)
        .is_ok_and(|t| t == "cdrom");
    if !cdrom {
        return false;
    }
    let mut bb = [0u8; 256];
    let Ok(backend) = xs
        .read_str(&format!("device/vbd/{devid}/backend"), &mut bb)
        .map(str::to_string)
    else {
        return false;
    };
    let mut pb = [0u8; 256];
    xs.read_str(&format!("{backend}/params"), &mut pb)
        .is_ok_and(str::is_empty)
}

impl<'g> Disk<'g> {
    /// Connects `device/vbd/<devid>` and exercises it; `None` for an empty drive.
    fn connect(
        g: &'g InProcGuest,
        grants: &'g GrantTable<GRANTS>,
        xs: &mut Xenstore<Platf<'_>>,
        devid: u32,
        out: &mut Out<'_>,
    ) -> Result<Option<Disk<'g>>, xbd_front::Error> {
        let label = disk_label(devid);
        if empty_cdrom(xs, devid) {
            out.say(&format!("disk {label}: cdrom drive, no media\n"));
            return Ok(None);
        }
        let mut dev: Box<BlockDevice<'g>> = Box::new(xbd_front::Device::new(
            g,
            grants,
            devid,
            xbd_front::Config::default(),
        )?);
        dev.connect(xs)?;
        let mut disk = Disk { label, dev };
        if let Err(e) = disk.exercise(out) {
            // (The caller reports `e`.) A backend that went away meanwhile is
            // the likelier cause of a timeout: say so.
            if let Ok(Some(xbd_front::DeviceEvent::Disconnected(st))) = disk.dev.poll_events(xs) {
                out.say(&format!(
                    "disk {}: the backend went to {st:?} during I/O\n",
                    disk.label
                ));
            }
            let _ = disk.dev.close(xs);
            return Err(e);
        }
        Ok(Some(disk))
    }

    /// Prints what the disk is, reads sector 0, and tries the write path.
    fn exercise(&mut self, out: &mut Out<'_>) -> Result<(), xbd_front::Error> {
        let info = *self.dev.info().ok_or(xbd_front::Error::NotConnected)?;
        let feats = self
            .dev
            .features()
            .map(|f| f.to_string())
            .unwrap_or_default();
        let kind = match info.device_type {
            xbd_front::DeviceType::Cdrom => "cdrom",
            xbd_front::DeviceType::Disk => "disk",
        };
        out.say(&format!(
            "disk {}: {} sectors of {} bytes ({}), {} {kind}; features: {}\n",
            self.label,
            info.sectors,
            info.sector_size,
            size_text(info.capacity_bytes()),
            if info.read_only {
                "read-only"
            } else {
                "read-write"
            },
            feats
        ));
        if info.sectors == 0 {
            return Ok(());
        }
        let ss = info.sector_size as usize;
        let mut first = vec![0u8; ss];
        self.dev.read(0, &mut [&mut first[..]], IO_TIMEOUT)?;
        out.say(&format!(
            "disk {}: sector 0: {:?}\n",
            self.label,
            sector_text(&first)
        ));
        let last = info.sectors - 1;
        if info.read_only {
            // The frontend refuses it before anything reaches the backend.
            match self.dev.write(last, &[&first[..]], IO_TIMEOUT) {
                Err(e) => out.say(&format!("disk {}: write refused: {e}\n", self.label)),
                Ok(()) => out.say(&format!(
                    "disk {}: a write to a read-only disk was accepted\n",
                    self.label
                )),
            }
            return Ok(());
        }
        // Scratch test on the last sector, leaving the image as it was.
        let mut saved = vec![0u8; ss];
        self.dev.read(last, &mut [&mut saved[..]], IO_TIMEOUT)?;
        let mut pattern = vec![0u8; ss];
        for (i, b) in pattern.iter_mut().enumerate() {
            *b = (i as u8) ^ 0x5a ^ (last as u8);
        }
        self.dev.write(last, &[&pattern[..]], IO_TIMEOUT)?;
        let mut back = vec![0u8; ss];
        self.dev.read(last, &mut [&mut back[..]], IO_TIMEOUT)?;
        let same = back == pattern;
        self.dev.write(last, &[&saved[..]], IO_TIMEOUT)?;
        let flushed = match self.dev.flush(IO_TIMEOUT) {
            Ok(()) => "flushed",
            Err(xbd_front::Error::NotSupported) => "no flush offered",
            Err(e) => return Err(e),
        };
        if same {
            out.say(&format!(
                "disk {}: scratch sector {last}: written, read back, restored, {flushed}\n",
                self.label
            ));
        } else {
            out.say(&format!(
                "disk {}: scratch sector {last}: read back differs from what was written\n",
                self.label
            ));
        }
        Ok(())
    }

    /// Follows the backend (capacity changes, going away); an error or a
    /// disconnect means the disk is unusable.
    fn poll(
        &mut self,
        xs: &mut Xenstore<Platf<'_>>,
        out: &mut Out<'_>,
    ) -> Result<(), xbd_front::Error> {
        match self.dev.poll_events(xs)? {
            Some(xbd_front::DeviceEvent::Disconnected(st)) => {
                return Err(xbd_front::Error::Xenbus(xenbus::Error::BackendClosed(st)));
            }
            Some(xbd_front::DeviceEvent::CapacityChanged { old, new }) => {
                out.say(&format!(
                    "disk {}: capacity {old} -> {new} sectors\n",
                    self.label
                ));
            }
            Some(ev) => out.say(&format!("disk {}: {ev:?}\n", self.label)),
            None => {}
        }
        self.dev.poll()?;
        match self.dev.state() {
            xbd_front::State::Connected => Ok(()),
            xbd_front::State::Broken(r) => Err(xbd_front::Error::Broken(r)),
            xbd_front::State::Disconnected => Err(xbd_front::Error::NotConnected),
        }
    }
}

/// One connected channel (a named secondary console).
struct Channel<'g> {
    devid: u32,
    name: String,
    sc: SecondaryConsole<'g, Platf<'g>, GRANTS>,
}

impl<'g> Channel<'g> {
    /// Connects `device/console/<devid>` and writes the greeting.
    fn connect(
        g: &'g InProcGuest,
        grants: &'g GrantTable<GRANTS>,
        xs: &mut Xenstore<Platf<'_>>,
        devid: u32,
        domain: &str,
    ) -> Result<Channel<'g>, String> {
        let mut b = [0u8; 256];
        let name = xs
            .read_str(&format!("device/console/{devid}/name"), &mut b)
            .map(str::to_string)
            .map_err(|_| "no name: a console, not a channel; left alone".to_string())?;
        // Kept for the guest's life (never freed, as before the channel closes).
        let page = hypercall::SharedPages::alloc(g, 1)
            .ok_or("no memory for the ring")?
            .leak();
        let sc = SecondaryConsole::connect(
            xs,
            grants,
            g,
            devid,
            page,
            xencons::Config::default(),
            CONNECT_TIMEOUT,
        )
        .map_err(|e| e.to_string())?;
        let hello = format!(
            "xenkit built-in guest: channel {name} (console {devid}) of domain {} ({domain})\n",
            g.domain().id().0
        );
        let mut ch = Channel { devid, name, sc };
        if let Err(e) = ch.sc.console().write(hello.as_bytes()) {
            let e = e.to_string();
            ch.close(xs);
            return Err(e);
        }
        Ok(ch)
    }

    /// Follows the backend and echoes what arrived (a bounded amount per call); an
    /// error means the channel is unusable.
    fn poll(&mut self, xs: &mut Xenstore<Platf<'_>>) -> Result<(), String> {
        if self.sc.backend_closing(xs).map_err(|e| e.to_string())? {
            return Err("the backend is closing".into());
        }
        // The output ring's indices too (a backend may break them while the guest
        // has nothing more to write: docs/hostile-mode.md, console modes).
        self.sc
            .console()
            .pending_output()
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 512];
        for _ in 0..4 {
            let n = self
                .sc
                .console()
                .read(&mut buf)
                .map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            let echo = buf.get(..n).unwrap_or_default();
            self.sc.console().write(echo).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn close(self, xs: &mut Xenstore<Platf<'_>>) {
        let _ = self.sc.close(xs, CLOSE_TIMEOUT);
    }
}

/// A ping in progress, from vif `nic`.
struct Ping {
    nic: usize,
    pinger: Pinger,
}

impl Ping {
    /// The result: into `data/ping-result` first (whoever saw the console line may
    /// read it), then on the console.
    fn report(&self, xs: &mut Xenstore<Platf<'_>>, out: &mut Out<'_>) {
        let (target, sent, replies) = (
            self.pinger.target(),
            self.pinger.sent(),
            self.pinger.replies(),
        );
        let _ = xs.write(PING_RESULT, format!("{replies}/{sent}").as_bytes());
        out.say(&format!(
            "ping {target}: {replies}/{sent} replies
"
        ));
    }

    /// Sends the next request or collects replies; `true` once finished.
    fn step(&mut self, g: &InProcGuest, nic: &mut Nic<'_>) -> bool {
        let caps = nic.dev_caps();
        let sock = nic.sockets.get_mut::<icmp::Socket>(nic.icmp);
        self.pinger.step(sock, &caps, g.now_ns())
    }
}

impl Nic<'_> {
    fn dev_caps(&mut self) -> ChecksumCapabilities {
        SmolDevice::new(&mut self.dev, &mut self.rxb, &mut self.txb)
            .capabilities()
            .checksum
    }
}

/// Reads `data/ping` and starts a ping if it holds an address.
fn start_ping(out: &mut Out<'_>, xs: &mut Xenstore<Platf<'_>>, nics: &[Nic<'_>]) -> Option<Ping> {
    let mut b = [0u8; 64];
    let text = xs.read_str(PING_NODE, &mut b).ok()?.trim().to_string();
    if text.is_empty() {
        return None;
    }
    let Ok(a) = text.parse::<std::net::Ipv4Addr>() else {
        out.say(&format!("ping: {text:?} is not an IPv4 address\n"));
        return None;
    };
    let target = a;
    if nics.is_empty() {
        out.say(&format!("ping {target}: no network interface\n"));
        let _ = xs.write(PING_RESULT, b"0/0");
        return None;
    }
    let nic = nics
        .iter()
        .position(|n| n.cidr.contains_addr(&IpAddress::Ipv4(target)))
        .unwrap_or(0);
    Some(Ping {
        nic,
        pinger: Pinger::new(
            target,
            PING_IDENT,
            PING_COUNT,
            PING_WAIT,
            b"xenkit built-in guest ping",
        ),
    })
}

/// The built-in guest's main (for [`xen_model::Hypervisor::spawn_guest`]), with an
/// empty command line.
pub fn run(guest: Arc<InProcGuest>) {
    run_with(guest, "");
}

/// The built-in guest's settings, from its command line (words `key=value`;
/// unknown words are ignored, as kernels do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `heartbeat=MS`: count up [`HEARTBEAT`] every MS milliseconds (at least 10).
    /// `None` (the default, or `heartbeat=0`): no heartbeat.
    pub heartbeat: Option<Duration>,
}

impl Options {
    /// Reads `cmdline`; values it cannot use are returned as messages for the
    /// console (and otherwise ignored).
    pub fn parse(cmdline: &str) -> (Options, Vec<String>) {
        let mut o = Options::default();
        let mut bad = Vec::new();
        for word in cmdline.split_ascii_whitespace() {
            if let Some(v) = word.strip_prefix("heartbeat=") {
                match v.parse::<u64>() {
                    Ok(0) => o.heartbeat = None,
                    Ok(ms) => o.heartbeat = Some(Duration::from_millis(ms).max(MIN_BEAT)),
                    Err(_) => bad.push(format!(
                        "ignoring {word:?}: heartbeat= takes milliseconds (0: off)"
                    )),
                }
            }
        }
        (o, bad)
    }
}

/// The built-in guest's main, with its command line (see [`Options`]).
pub fn run_with(guest: Arc<InProcGuest>, cmdline: &str) {
    let g: &InProcGuest = &guest;
    let id = g.domain().id().0;
    let mut out = Out::new(g);
    let (opts, bad) = Options::parse(cmdline);
    for b in bad {
        out.say(&format!("{b}\n"));
    }
    let mut xs = match Xenstore::from_hvm_params(g) {
        Ok(x) => x,
        Err(e) => {
            out.say(&format!("xenstore: {e}\n"));
            stop(&mut out, ShutdownReason::Crash);
            return;
        }
    };
    let mut buf = [0u8; 256];
    let name = xs
        .read_str("name", &mut buf)
        .map(str::to_string)
        .unwrap_or_else(|_| "?".into());
    out.say(&format!("xenkit built-in guest: domain {id} ({name}) up\n"));
    let listed = Listed::read(&mut out, &mut xs);

    let grants: Option<Box<GrantTable<GRANTS>>> = match GrantTable::setup(g, (GRANTS / 512) as u32)
    {
        Ok(t) => Some(Box::new(t)),
        Err(_) if listed.is_empty() => None,
        Err(e) => {
            out.say(&format!("grant table: {e}; no devices\n"));
            None
        }
    };
    let mut devs = match grants.as_deref() {
        Some(gt) => Devices::connect(g, gt, &mut xs, listed, &name, &mut out),
        None => Devices::default(),
    };

    let features = PowerFeatures::POWEROFF | PowerFeatures::REBOOT;
    let reason = match PowerControl::new(&mut xs, features) {
        Ok(mut power) => serve(g, &opts, &mut xs, &mut power, &mut devs, &mut out),
        Err(e) => {
            out.say(&format!("control/shutdown: {e}\n"));
            ShutdownReason::Crash
        }
    };
    devs.close_all(&mut xs);
    stop(&mut out, reason);
}

/// The guest's main loop, until a power event or a broken `control/shutdown`:
/// follows the devices (dropping the ones that fail), runs pings asked for in
/// `data/ping`, echoes the console and writes the heartbeat, if asked for. Between
/// rounds it sleeps until an event or its next deadline. Returns how the domain is
/// to shut down.
fn serve<'g>(
    g: &'g InProcGuest,
    opts: &Options,
    xs: &mut Xenstore<Platf<'g>>,
    power: &mut PowerControl,
    devs: &mut Devices<'_>,
    out: &mut Out<'_>,
) -> ShutdownReason {
    if let Err(e) = xs.watch(PING_NODE, PING_TOKEN) {
        out.say(&format!("{PING_NODE}: {e}\n"));
    }
    out.say("waiting for control/shutdown\n");
    let mut beat = opts.heartbeat.map(|period| Heartbeat::new(g, period));
    let mut ping: Option<Ping> = None;
    loop {
        let events_seen = xs.watch_events_received();
        let epoch = g.domain().signal().epoch();
        if let Some(reason) = poll_power(power, xs, out) {
            return reason;
        }
        if devs.poll(g, xs, out) {
            // A vif went away: its ping (if any) with it.
            ping = None;
        }
        if matches!(xs.drain_watch_events_for(PING_TOKEN), Ok(true)) && ping.is_none() {
            ping = start_ping(out, xs, &devs.nics);
        }
        if let Some(p) = ping.as_mut() {
            let done = devs.nics.get_mut(p.nic).is_none_or(|n| p.step(g, n));
            if done {
                p.report(xs, out);
                ping = None;
            }
        }
        devs.poll_channels(xs, out);
        out.echo();
        let mut deadline = u64::MAX;
        if let Some(b) = beat.as_mut() {
            deadline = deadline.min(b.tick(g, xs, out));
        }
        if ping.is_some() {
            deadline = deadline.min(g.now_ns() + PING_STEP.as_nanos() as u64);
        }
        for n in &mut devs.nics {
            if let Some(t) = n.poll_at(g) {
                deadline = deadline.min(t);
            }
        }
        // Whatever arrived during the round gets another round at once: a wait
        // inside a request (xenstore) acknowledges every event, so an event for a
        // device already served in this round, or a watch event the request pulled
        // in after its watcher's turn, would not wake the sleep below.
        if xs.watch_events_received() == events_seen && g.domain().signal().epoch() == epoch {
            g.wait_until(deadline);
        }
    }
}

/// One round of `control/shutdown`: the shutdown reason once the guest must stop
/// (a power event, or the node cannot be followed); garbage is reported and ignored.
fn poll_power(
    power: &mut PowerControl,
    xs: &mut Xenstore<Platf<'_>>,
    out: &mut Out<'_>,
) -> Option<ShutdownReason> {
    match power.poll(xs) {
        Ok(Some(ev)) => {
            out.say(&format!("power: {}\n", ev.as_str()));
            Some(ev.shutdown_reason())
        }
        Ok(None) => None,
        Err(xenbus::Error::BadShutdownValue(v)) => {
            let shown = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("<{} bytes>", v.total_len()));
            out.say(&format!("ignoring control/shutdown = {shown:?}\n"));
            None
        }
        Err(e) => {
            out.say(&format!("control/shutdown: {e}\n"));
            Some(ShutdownReason::Crash)
        }
    }
}

/// `data/heartbeat`: a counter written every `period` (`heartbeat=MS`).
struct Heartbeat {
    period_ns: u64,
    beats: u64,
    next_ns: u64,
}

impl Heartbeat {
    fn new(g: &InProcGuest, period: Duration) -> Self {
        let period_ns = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        Heartbeat {
            period_ns,
            beats: 0,
            next_ns: g.now_ns().saturating_add(period_ns),
        }
    }

    /// Writes the next count if a beat is due; returns when the next one is.
    fn tick(&mut self, g: &InProcGuest, xs: &mut Xenstore<Platf<'_>>, out: &mut Out<'_>) -> u64 {
        let now = g.now_ns();
        if now >= self.next_ns {
            self.next_ns = now.saturating_add(self.period_ns);
            self.beats += 1;
            if let Err(e) = xs.write_u64(HEARTBEAT, self.beats) {
                out.say(&format!("{HEARTBEAT}: {e}\n"));
            }
        }
        self.next_ns
    }
}

/// The devices the toolstack gave the domain (`device/vbd`, `device/vif`,
/// `device/console` entries), each printed with its backend.
struct Listed {
    vbds: Vec<u32>,
    vifs: Vec<u32>,
    chans: Vec<u32>,
}

impl Listed {
    fn read(out: &mut Out<'_>, xs: &mut Xenstore<Platf<'_>>) -> Self {
        Listed {
            vbds: list_devices(out, xs, "vbd", "disk"),
            vifs: list_devices(out, xs, "vif", "nic"),
            chans: list_devices(out, xs, "console", "channel"),
        }
    }

    fn is_empty(&self) -> bool {
        self.vbds.is_empty() && self.vifs.is_empty() && self.chans.is_empty()
    }
}

/// The connected devices; one that fails is dropped (closed, with a console line).
#[derive(Default)]
struct Devices<'g> {
    disks: Vec<Disk<'g>>,
    nics: Vec<Nic<'g>>,
    channels: Vec<Channel<'g>>,
}

impl<'g> Devices<'g> {
    /// Connects every listed device; the ones that cannot are reported and left out.
    fn connect(
        g: &'g InProcGuest,
        gt: &'g GrantTable<GRANTS>,
        xs: &mut Xenstore<Platf<'_>>,
        listed: Listed,
        domain: &str,
        out: &mut Out<'_>,
    ) -> Self {
        let mut devs = Devices::default();
        for devid in listed.vbds {
            match Disk::connect(g, gt, xs, devid, out) {
                Ok(Some(d)) => devs.disks.push(d),
                Ok(None) => {}
                Err(e) => out.say(&format!("disk {}: {e}\n", disk_label(devid))),
            }
        }
        for idx in listed.vifs {
            match Nic::connect(g, gt, xs, idx, out) {
                Ok(n) => devs.nics.push(n),
                Err(e) => out.say(&format!("nic {idx}: {e}\n")),
            }
        }
        for devid in listed.chans {
            match Channel::connect(g, gt, xs, devid, domain) {
                Ok(c) => {
                    out.say(&format!(
                        "channel {devid} ({}): connected, greeting sent\n",
                        c.name
                    ));
                    devs.channels.push(c);
                }
                Err(e) => out.say(&format!("channel {devid}: {e}\n")),
            }
        }
        devs
    }

    /// Polls the disks and vifs, dropping the failed ones; `true` if a vif was
    /// dropped (vif indices of a ping in progress are then stale).
    fn poll(&mut self, g: &InProcGuest, xs: &mut Xenstore<Platf<'_>>, out: &mut Out<'_>) -> bool {
        let mut i = 0;
        while i < self.disks.len() {
            match self.disks.get_mut(i).map(|d| d.poll(xs, out)) {
                Some(Err(e)) => {
                    let mut d = self.disks.remove(i);
                    out.say(&format!("disk {}: {e}; dropped\n", d.label));
                    let _ = d.dev.close(xs);
                }
                _ => i += 1,
            }
        }
        let mut nic_dropped = false;
        let mut i = 0;
        while i < self.nics.len() {
            match self.nics.get_mut(i).map(|n| n.poll(g, xs)) {
                Some(Err(e)) => {
                    let n = self.nics.remove(i);
                    out.say(&format!("nic {}: {e}; dropped\n", n.idx));
                    close_nic(xs, n);
                    nic_dropped = true;
                }
                _ => i += 1,
            }
        }
        nic_dropped
    }

    /// Polls the channels (echoing what arrives), dropping the failed ones.
    fn poll_channels(&mut self, xs: &mut Xenstore<Platf<'_>>, out: &mut Out<'_>) {
        let mut i = 0;
        while i < self.channels.len() {
            match self.channels.get_mut(i).map(|c| c.poll(xs)) {
                Some(Err(e)) => {
                    let c = self.channels.remove(i);
                    out.say(&format!("channel {} ({}): {e}; dropped\n", c.devid, c.name));
                    c.close(xs);
                }
                _ => i += 1,
            }
        }
    }

    /// Closes every device (before powering off), so the backends see them go.
    fn close_all(&mut self, xs: &mut Xenstore<Platf<'_>>) {
        for mut d in self.disks.drain(..) {
            let _ = d.dev.close(xs);
        }
        for n in self.nics.drain(..) {
            close_nic(xs, n);
        }
        for c in self.channels.drain(..) {
            c.close(xs);
        }
    }
}

fn close_nic(xs: &mut Xenstore<Platf<'_>>, mut n: Nic<'_>) {
    let _ = n.dev.close(xs, CLOSE_TIMEOUT);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_arp_layout() {
        let f = gratuitous_arp([2, 0, 0, 0, 0, 9], Ipv4Address::new(10, 0, 0, 9));
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &[2, 0, 0, 0, 0, 9]);
        assert_eq!(&f[12..14], &[8, 6]);
        assert_eq!(&f[14..22], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&f[22..28], &[2, 0, 0, 0, 0, 9]);
        assert_eq!(&f[28..32], &[10, 0, 0, 9]);
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &[10, 0, 0, 9]);
    }

    #[test]
    fn options_come_from_the_command_line() {
        assert_eq!(Options::parse(""), (Options::default(), vec![]));
        let (o, bad) = Options::parse("root=/dev/xvda1 heartbeat=250 quiet");
        assert_eq!(o.heartbeat, Some(Duration::from_millis(250)));
        assert!(bad.is_empty());
        // Too short a period is raised to the minimum; 0 turns it off again.
        assert_eq!(Options::parse("heartbeat=1").0.heartbeat, Some(MIN_BEAT));
        assert_eq!(Options::parse("heartbeat=5 heartbeat=0").0.heartbeat, None);
        let (o, bad) = Options::parse("heartbeat=fast");
        assert_eq!(o.heartbeat, None);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].contains("\"heartbeat=fast\""), "{bad:?}");
    }
}
