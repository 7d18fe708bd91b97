//! ICMP echo ("ping") over a smoltcp ICMP socket, for guests that want to check a
//! link end to end: [`Pinger`] sends a fixed number of echo requests to one IPv4
//! address, one at a time, and counts the matching replies.
//!
//! It is a state machine stepped by the caller's poll loop (no timers, no heap):
//!
//! ```
//! use core::time::Duration;
//! use smoltcp::phy::ChecksumCapabilities;
//! use smoltcp::socket::icmp;
//! use smoltcp::wire::Ipv4Address;
//! use xennet_front::ping::Pinger;
//!
//! let (mut rx_meta, mut rx_data) = ([icmp::PacketMetadata::EMPTY; 2], [0u8; 256]);
//! let (mut tx_meta, mut tx_data) = ([icmp::PacketMetadata::EMPTY; 2], [0u8; 256]);
//! let mut sock = icmp::Socket::new(
//!     icmp::PacketBuffer::new(&mut rx_meta[..], &mut rx_data[..]),
//!     icmp::PacketBuffer::new(&mut tx_meta[..], &mut tx_data[..]),
//! );
//! sock.bind(icmp::Endpoint::Ident(0x786b)).unwrap();
//! let mut ping = Pinger::new(Ipv4Address::new(10, 0, 0, 1), 0x786b, 3,
//!                            Duration::from_secs(1), b"hello");
//! let caps = ChecksumCapabilities::default();
//! // In the guest's loop, after each `Interface::poll`:
//! assert!(!ping.step(&mut sock, &caps, 0)); // queues request 0
//! assert_eq!(ping.sent(), 1);
//! // ... once `step` returns true: `ping.replies()` of `ping.sent()` answered.
//! ```

use core::time::Duration;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::icmp;
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpAddress, Ipv4Address};

/// A ping of one address: up to `count` echo requests, each given `wait` for its
/// reply before the next is sent.
#[derive(Clone, Debug)]
pub struct Pinger {
    target: Ipv4Address,
    ident: u16,
    count: u16,
    wait_ns: u64,
    payload: &'static [u8],
    sent: u16,
    replies: u16,
    /// When the outstanding request (if any) gives up, in the caller's clock.
    wait_until: u64,
}

impl Pinger {
    /// A ping of `target` with echo identifier `ident` (bind the socket to
    /// `icmp::Endpoint::Ident(ident)`), `count` requests, `wait` per request and
    /// `payload` as each request's data.
    pub const fn new(
        target: Ipv4Address,
        ident: u16,
        count: u16,
        wait: Duration,
        payload: &'static [u8],
    ) -> Pinger {
        let ns = wait.as_nanos();
        Pinger {
            target,
            ident,
            count,
            wait_ns: if ns > u64::MAX as u128 {
                u64::MAX
            } else {
                ns as u64
            },
            payload,
            sent: 0,
            replies: 0,
            wait_until: 0,
        }
    }

    /// The address pinged.
    pub fn target(&self) -> Ipv4Address {
        self.target
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u16 {
        self.sent
    }

    /// Replies received so far (each matches the identifier, the target and the
    /// latest request's sequence number; late or foreign replies are not counted).
    pub fn replies(&self) -> u16 {
        self.replies
    }

    /// Whether every request has been sent and the last one answered or given up.
    pub fn finished(&self, now_ns: u64) -> bool {
        self.sent >= self.count && now_ns >= self.wait_until
    }

    /// When [`Pinger::step`] next has something to do, for a caller that sleeps
    /// between steps: `None` once finished, `Some(0)` when the next request is due
    /// now (the previous one answered, or none sent yet), else the time the request
    /// in flight is given up (on the clock `step` is given). Replies wake the
    /// caller through the device's own events, not through this deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.sent >= self.count {
            return (self.wait_until != 0).then_some(self.wait_until);
        }
        Some(self.wait_until)
    }

    /// Takes the replies waiting in `sock`, then sends the next request if the
    /// previous one is answered or timed out. `now_ns` is any monotonic clock in
    /// nanoseconds; `caps` is the device's checksum capabilities (what
    /// `Device::capabilities().checksum` says). Returns `true` once finished (see
    /// [`Pinger::finished`]); a request the socket has no room for is retried on the
    /// next step.
    pub fn step(
        &mut self,
        sock: &mut icmp::Socket<'_>,
        caps: &ChecksumCapabilities,
        now_ns: u64,
    ) -> bool {
        while sock.can_recv() {
            let Ok((data, from)) = sock.recv() else { break };
            let Ok(pkt) = Icmpv4Packet::new_checked(data) else {
                continue;
            };
            if let Ok(Icmpv4Repr::EchoReply { ident, seq_no, .. }) =
                Icmpv4Repr::parse(&pkt, &ChecksumCapabilities::default())
            {
                if ident == self.ident
                    && from == IpAddress::Ipv4(self.target)
                    && self.sent > 0
                    && seq_no.wrapping_add(1) == self.sent
                    && self.wait_until != 0
                {
                    self.replies += 1;
                    self.wait_until = 0;
                }
            }
        }
        if now_ns < self.wait_until {
            return false;
        }
        if self.sent >= self.count {
            // Given up on the last request (or it was answered): nothing is in
            // flight any more, so a late reply is not counted.
            self.wait_until = 0;
            return true;
        }
        let repr = Icmpv4Repr::EchoRequest {
            ident: self.ident,
            seq_no: self.sent,
            data: self.payload,
        };
        if let Ok(buf) = sock.send(repr.buffer_len(), IpAddress::Ipv4(self.target)) {
            repr.emit(&mut Icmpv4Packet::new_unchecked(buf), caps);
            self.sent += 1;
            self.wait_until = now_ns.saturating_add(self.wait_ns).max(1);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::iface::{Config, Interface, SocketSet};
    use smoltcp::phy::{Device, Loopback, Medium};
    use smoltcp::time::Instant;
    use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};
    use std::vec;

    const IDENT: u16 = 0x7465;

    /// Pings `target` from 10.0.0.2/24 on a loopback Ethernet, stepping a fake clock
    /// by 1 ms per round; returns (sent, replies, rounds until finished).
    fn run(target: Ipv4Address, count: u16) -> (u16, u16, u64) {
        let mut dev = Loopback::new(Medium::Ethernet);
        let cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress([
            2, 0, 0, 0, 0, 1,
        ])));
        let mut iface = Interface::new(cfg, &mut dev, Instant::from_millis(0));
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::v4(10, 0, 0, 2), 24)).unwrap();
        });
        let mut sock = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0u8; 512]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0u8; 512]),
        );
        sock.bind(icmp::Endpoint::Ident(IDENT)).unwrap();
        let mut set = SocketSet::new(vec![]);
        let h = set.add(sock);
        let caps = dev.capabilities().checksum;
        let mut p = Pinger::new(target, IDENT, count, Duration::from_millis(50), b"test");
        for round in 0..10_000u64 {
            let now_ns = round * 1_000_000;
            iface.poll(
                Instant::from_micros((now_ns / 1000) as i64),
                &mut dev,
                &mut set,
            );
            if p.step(set.get_mut::<icmp::Socket>(h), &caps, now_ns) {
                assert!(p.finished(now_ns));
                return (p.sent(), p.replies(), round);
            }
        }
        panic!("the ping never finished: {p:?}");
    }

    /// A caller that sleeps until `next_deadline` (no events: the target is silent)
    /// wakes once per request and finishes; `None` only once finished.
    #[test]
    fn next_deadline_lets_a_sleeping_caller_finish() {
        let mut sock = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0u8; 512]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0u8; 512]),
        );
        sock.bind(icmp::Endpoint::Ident(IDENT)).unwrap();
        let caps = ChecksumCapabilities::default();
        let target = Ipv4Address::new(10, 0, 0, 9);
        let mut p = Pinger::new(target, IDENT, 2, Duration::from_millis(50), b"test");
        assert_eq!(
            p.next_deadline(),
            Some(0),
            "the first request is due at once"
        );
        let mut now = 5_000_000;
        let mut wakeups = 0;
        while let Some(deadline) = p.next_deadline() {
            now = now.max(deadline);
            wakeups += 1;
            assert!(wakeups <= 3, "woke {wakeups} times: {p:?}");
            if p.step(&mut sock, &caps, now) {
                assert_eq!(
                    p.next_deadline(),
                    None,
                    "finished: nothing left to wake for"
                );
                break;
            }
            assert_eq!(p.next_deadline(), Some(now + 50_000_000), "{p:?}");
        }
        assert_eq!((p.sent(), p.replies(), wakeups), (2, 0, 3));
        assert!(p.finished(now));
    }

    #[test]
    fn an_answering_address_replies_to_every_request() {
        let (sent, replies, rounds) = run(Ipv4Address::new(10, 0, 0, 2), 3);
        assert_eq!((sent, replies), (3, 3));
        // Answered requests do not wait out their 50 ms.
        assert!(rounds < 50, "{rounds} rounds");
    }

    #[test]
    fn a_silent_address_times_out_each_request() {
        let (sent, replies, rounds) = run(Ipv4Address::new(10, 0, 0, 9), 2);
        assert_eq!((sent, replies), (2, 0));
        assert!(rounds >= 100, "{rounds} rounds: each request waits 50 ms");
    }

    #[test]
    fn zero_requests_finish_at_once() {
        let (sent, replies, rounds) = run(Ipv4Address::new(10, 0, 0, 2), 0);
        assert_eq!((sent, replies, rounds), (0, 0, 0));
    }
}
