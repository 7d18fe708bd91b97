//! Network: every `device/vif/*` connected with `xennet-front` and run through
//! smoltcp. Each interface answers ARP and ICMP echo, serves TCP port 7 (echo) and
//! TCP port 80 (a plain-text status page), and pings the `.1` address of its subnet
//! once at start.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use core::time::Duration;

use hypercall::gnttab::GrantTable;
use hypercall::{Platform, Port};
use smoltcp::iface::{Config as IfConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::{icmp, tcp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use xenbus::Xenstore;
use xennet_front::ping::Pinger;
use xennet_front::{NetFront, SmolDevice};

use crate::xen::Kernel;
use crate::{say, GRANTS};

type Xs = Xenstore<&'static Kernel>;
type Front = NetFront<'static, &'static Kernel, GRANTS>;

/// Per-step timeout of the handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing may take at power-off.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Echo requests sent to the gateway at start.
pub const PING_COUNT: u16 = 3;
/// How long one echo request waits for its reply.
const PING_WAIT_NS: u64 = 1_000_000_000;
const PING_IDENT: u16 = 0x786b; // "xk"
const ECHO_PORT: u16 = 7;
const HTTP_PORT: u16 = 80;
/// Listening sockets per service (connections served at once).
const BACKLOG: usize = 2;
/// Bytes of a status-page request kept (the rest is read and dropped).
const MAX_REQUEST: usize = 2048;
/// The one-byte request marker of an answered connection.
const ANSWERED: u8 = 0;

/// Whether `req` is a whole request: the blank line ending its header, a full
/// buffer, or a peer that stopped sending.
fn request_complete(req: &[u8], state: tcp::State) -> bool {
    if req.first() == Some(&ANSWERED) {
        return false;
    }
    req.windows(4).any(|w| w == b"\r\n\r\n")
        || req.windows(2).any(|w| w == b"\n\n")
        || req.len() >= MAX_REQUEST
        || (state == tcp::State::CloseWait && !req.is_empty())
}

fn now(k: &Kernel) -> Instant {
    Instant::from_micros((k.now_ns() / 1000) as i64)
}

/// Where an address came from.
#[derive(Clone, Copy, Debug)]
pub enum AddrSource {
    /// The backend's `ip` node (xl's `ip=`).
    Toolstack,
    /// The kernel command line's `ip=`.
    Cmdline,
    /// The built-in default.
    Default,
}

/// The address of vif `idx`: the backend's `ip` (first IPv4, /24), else the
/// command line's `ip=ADDR/PREFIX` (plus `idx` in the last byte for the
/// `idx`-th vif), else 169.254.100.(2 + idx)/24.
fn address(xs: &mut Xs, idx: u32, cmdline_ip: Option<&str>) -> (Ipv4Addr, u8, AddrSource) {
    if let Some(a) = xennet_front::toolstack_ipv4(xs, idx) {
        return (a, 24, AddrSource::Toolstack);
    }
    let bump = |a: Ipv4Addr| {
        let o = a.octets();
        Ipv4Addr::new(o[0], o[1], o[2], o[3].wrapping_add(idx as u8))
    };
    if let Some((a, p)) = cmdline_ip.and_then(parse_cidr) {
        return (bump(a), p, AddrSource::Cmdline);
    }
    (
        bump(Ipv4Addr::new(169, 254, 100, 2)),
        24,
        AddrSource::Default,
    )
}

/// `a.b.c.d/p` (or a bare address: /24).
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, p.parse::<u8>().ok().filter(|p| (1..=30).contains(p))?),
        None => (s, 24),
    };
    Some((xennet_front::parse_ipv4(a)?, p))
}

/// The `.1` host of `ip`'s subnet.
fn gateway(ip: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from((u32::from(ip) & mask) | 1)
}

/// The start-up ping of the gateway.
struct Ping {
    pinger: Pinger,
    done: bool,
}

/// One connected vif.
pub struct Nic {
    /// `device/vif/<idx>`.
    pub idx: u32,
    /// On the heap, built in place (the kit's `docs/stack.md`).
    dev: Box<Front>,
    iface: Interface,
    sockets: SocketSet<'static>,
    icmp: SocketHandle,
    echo: Vec<SocketHandle>,
    http: Vec<(SocketHandle, Vec<u8>)>,
    rxb: Vec<u8>,
    txb: Vec<u8>,
    /// Its address.
    pub cidr: IpCidr,
    ping: Ping,
    /// Echo connections and status pages served.
    pub served: (u64, u64),
    /// Its ports bound for late EOI.
    late: Vec<Port>,
    /// [`Nic::progress`] at the last EOI.
    eoi_mark: u64,
}

fn tcp_socket(rx: usize, tx: usize) -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; rx]),
        tcp::SocketBuffer::new(vec![0; tx]),
    )
}

impl Nic {
    /// Connects `device/vif/<idx>` and sets up its interface and sockets.
    ///
    /// Not inlined, and the result is boxed: the connect path's temporaries then
    /// live in this frame only while it runs, not in the caller's for good.
    #[inline(never)]
    pub fn connect(
        k: &'static Kernel,
        grants: &'static GrantTable<GRANTS>,
        xs: &mut Xs,
        idx: u32,
        cmdline_ip: Option<&str>,
    ) -> Result<Box<Nic>, xennet_front::Error> {
        let cfg = xennet_front::Config {
            rx_buffers: 64,
            tx_buffers: 64,
            ..xennet_front::Config::default()
        };
        let mut dev: Box<Front> = Box::new(NetFront::new(k, grants, cfg));
        dev.connect_in_place(xs, idx, CONNECT_TIMEOUT)?;
        let mac = dev.mac();
        let n = *dev.negotiated();
        let (ip, prefix, source) = address(xs, idx, cmdline_ip);
        say!(
            "nic {idx}: mac {mac}, {n}; ip {ip}/{prefix} (from {})\n",
            match source {
                AddrSource::Toolstack => "the toolstack's ip=",
                AddrSource::Cmdline => "the command line",
                AddrSource::Default => "the default",
            }
        );
        let frame = (dev.mtu() as usize + 14).min(dev.max_frame());
        let (mut rxb, mut txb) = (vec![0u8; frame], vec![0u8; frame]);
        let mut icfg = IfConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac.0)));
        icfg.random_seed = k.now_ns() ^ u64::from(idx);
        let cidr = IpCidr::new(IpAddress::Ipv4(ip), prefix);
        let iface = {
            let mut sd = SmolDevice::new(&mut dev, &mut rxb, &mut txb);
            let mut i = Interface::new(icfg, &mut sd, now(k));
            i.update_ip_addrs(|a| {
                let _ = a.push(cidr);
            });
            i
        };
        let mut sockets = SocketSet::new(Vec::new());
        let mut isock = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0u8; 1024]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0u8; 1024]),
        );
        let _ = isock.bind(icmp::Endpoint::Ident(PING_IDENT));
        let icmp = sockets.add(isock);
        let mut echo = Vec::new();
        let mut http = Vec::new();
        for _ in 0..BACKLOG {
            echo.push(sockets.add(tcp_socket(2048, 2048)));
            http.push((sockets.add(tcp_socket(1024, 4096)), Vec::new()));
        }
        Ok(Box::new(Nic {
            idx,
            dev,
            iface,
            sockets,
            icmp,
            echo,
            http,
            rxb,
            txb,
            cidr,
            ping: Ping {
                pinger: Pinger::new(
                    gateway(ip, prefix),
                    PING_IDENT,
                    PING_COUNT,
                    Duration::from_nanos(PING_WAIT_NS),
                    b"xenkit-unikernel ping",
                ),
                done: false,
            },
            served: (0, 0),
            late: Vec::new(),
            eoi_mark: 0,
        }))
    }

    /// Whether the start-up ping finished.
    pub fn ping_done(&self) -> bool {
        self.ping.done
    }

    /// The next time (Xen system time, ns) this interface has work without an
    /// event: smoltcp's next timer (ARP, TCP retransmissions and timeouts) or the
    /// ping's; `None` when only an event can give it work.
    pub fn next_deadline(&mut self, k: &Kernel) -> Option<u64> {
        let smol = self.iface.poll_at(now(k), &self.sockets).map(|at| {
            u64::try_from(at.total_micros())
                .unwrap_or(0)
                .saturating_mul(1000)
        });
        let ping = if self.ping.done {
            None
        } else {
            self.ping.pinger.next_deadline()
        };
        match (smol, ping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Follows the backend, runs smoltcp and the services once; an error means
    /// the device is unusable. Status-page requests that are complete wait for
    /// [`Nic::answer_status`].
    pub fn poll(&mut self, k: &Kernel, xs: &mut Xs) -> Result<(), xennet_front::Error> {
        let fired = k.take_fired(&self.late);
        let r = self.poll_device(k, xs);
        // Work since the last EOI counts, even if an earlier round took it (the
        // event raced that round's poll).
        if fired != 0 {
            let now = self.progress();
            k.eoi(&self.late, fired, now != self.eoi_mark);
            self.eoi_mark = now;
        }
        r
    }

    /// What the backend has done so far: responses taken off both rings.
    fn progress(&self) -> u64 {
        let s = self.dev.stats();
        s.tx_completed + s.tx_errors + s.tx_dropped + s.rx_frames + s.rx_errors + s.rx_dropped
    }

    /// Binds its event channels for late EOI (`Kernel::bind_lateeoi`).
    pub fn bind_lateeoi(&mut self, k: &Kernel) {
        let mut q = 0;
        while let Some((tx, rx)) = self.dev.ports(q) {
            for p in [tx, rx] {
                if !self.late.contains(&p) && k.bind_lateeoi(p) {
                    self.late.push(p);
                }
            }
            q += 1;
        }
    }

    /// [`Nic::poll`]'s work.
    fn poll_device(&mut self, k: &Kernel, xs: &mut Xs) -> Result<(), xennet_front::Error> {
        self.dev.poll_backend(xs)?;
        self.dev.poll()?;
        {
            let mut sd = SmolDevice::new(&mut self.dev, &mut self.rxb, &mut self.txb);
            self.iface.poll(now(k), &mut sd, &mut self.sockets);
        }
        self.serve_echo();
        self.read_requests();
        self.step_ping(k);
        {
            let mut sd = SmolDevice::new(&mut self.dev, &mut self.rxb, &mut self.txb);
            self.iface.poll(now(k), &mut sd, &mut self.sockets);
        }
        match self.dev.link_state() {
            xennet_front::LinkState::Broken(b) => Err(xennet_front::Error::Broken(b)),
            xennet_front::LinkState::Down => Err(xennet_front::Error::NotConnected),
            xennet_front::LinkState::Up => Ok(()),
        }
    }

    fn serve_echo(&mut self) {
        let mut buf = [0u8; 1024];
        for &h in &self.echo {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            if !s.is_open() {
                let _ = s.listen(ECHO_PORT);
                continue;
            }
            while s.can_recv() && s.can_send() {
                let want = (s.send_capacity() - s.send_queue()).min(buf.len());
                let n = match buf.get_mut(..want).map(|b| s.recv_slice(b)) {
                    Some(Ok(n)) if n > 0 => n,
                    _ => break,
                };
                let _ = s.send_slice(buf.get(..n).unwrap_or_default());
            }
            if s.state() == tcp::State::CloseWait && s.send_queue() == 0 {
                s.close();
                self.served.0 += 1;
            }
        }
    }

    /// Reads status-page requests; true once one is complete.
    fn read_requests(&mut self) {
        for (h, req) in self.http.iter_mut() {
            let s = self.sockets.get_mut::<tcp::Socket>(*h);
            if !s.is_open() {
                req.clear();
                let _ = s.listen(HTTP_PORT);
                continue;
            }
            let mut buf = [0u8; 512];
            while s.can_recv() {
                match s.recv_slice(&mut buf) {
                    Ok(n) if n > 0 => {
                        if req.len() < MAX_REQUEST {
                            req.extend_from_slice(buf.get(..n).unwrap_or_default());
                        }
                    }
                    _ => break,
                }
            }
        }
    }

    /// Whether a status-page request is complete and waits for its answer.
    pub fn wants_status(&self) -> bool {
        self.http.iter().any(|(h, req)| {
            let s = self.sockets.get::<tcp::Socket>(*h);
            request_complete(req, s.state()) && s.can_send()
        })
    }

    /// Answers every complete status-page request with `page` and closes it.
    pub fn answer_status(&mut self, k: &Kernel, page: &str) {
        for (h, req) in self.http.iter_mut() {
            let s = self.sockets.get_mut::<tcp::Socket>(*h);
            if !(request_complete(req, s.state()) && s.can_send()) {
                continue;
            }
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                page.len()
            );
            let _ = s.send_slice(head.as_bytes());
            let _ = s.send_slice(page.as_bytes());
            s.close();
            // A closing socket is not read again; `req` is cleared when it is
            // listening anew.
            req.clear();
            req.push(ANSWERED);
            self.served.1 += 1;
        }
        let mut sd = SmolDevice::new(&mut self.dev, &mut self.rxb, &mut self.txb);
        self.iface.poll(now(k), &mut sd, &mut self.sockets);
    }

    fn step_ping(&mut self, k: &Kernel) {
        if self.ping.done {
            return;
        }
        let caps = {
            let sd = SmolDevice::new(&mut self.dev, &mut self.rxb, &mut self.txb);
            sd.capabilities().checksum
        };
        let p = &mut self.ping;
        let target = p.pinger.target();
        if IpAddress::Ipv4(target) == self.cidr.address() {
            p.done = true;
            say!(
                "nic {}: the subnet's .1 ({}) is this interface's own address: no ping\n",
                self.idx,
                target
            );
            return;
        }
        let sock = self.sockets.get_mut::<icmp::Socket>(self.icmp);
        if p.pinger.step(sock, &caps, k.now_ns()) {
            p.done = true;
            say!(
                "nic {}: ping {}: {}/{} replies\n",
                self.idx,
                target,
                p.pinger.replies(),
                p.pinger.sent()
            );
        }
    }

    /// One line for the status page.
    pub fn summary(&self) -> String {
        let s = self.dev.stats();
        format!(
            "nic {}: mac {}, ip {}, rx {} frames / {} bytes, tx {} frames / {} bytes, echo connections {}, status pages {}, ping {} {}/{}\n",
            self.idx,
            self.dev.mac(),
            self.cidr,
            s.rx_frames,
            s.rx_bytes,
            s.tx_frames,
            s.tx_bytes,
            self.served.0,
            self.served.1,
            self.ping.pinger.target(),
            self.ping.pinger.replies(),
            self.ping.pinger.sent()
        )
    }

    /// Closes the device (frontend state Closing, then Closed).
    pub fn close(mut self: Box<Self>, k: &Kernel, xs: &mut Xs) {
        k.unbind_all(&self.late);
        match self.dev.close(xs, CLOSE_TIMEOUT) {
            Ok(_) => say!("nic {}: closed\n", self.idx),
            Err(e) => say!("nic {}: close: {e}\n", self.idx),
        }
    }
}
