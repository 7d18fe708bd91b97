//! What we ask for, what the backend offers, and what both ends agree on.
//!
//! The xenstore glue reads [`BackendFeatures`] from `<backend>/feature-*`, combines
//! them with our [`Config`] in [`negotiate`] (a pure function, unit-tested without a
//! store), and writes [`frontend_keys`] in the connect transaction.

/// Most queues a device uses (a backend's `multi-queue-max-queues` is clamped to
/// this, docs/hostile-input.md row 23).
pub const MAX_QUEUES: usize = 4;

/// Slots in one tx or rx ring (one page: `__CONST_RING_SIZE` of 12/8-byte slots).
pub const RING_SIZE: usize = 256;

/// Largest frame (Ethernet header included) the protocol can carry
/// (`XEN_NETIF_MAX_TX_SIZE`).
pub const MAX_FRAME: usize = 65535;

/// Smallest frame we send: an Ethernet header (Linux netback drops shorter ones).
pub const MIN_FRAME: usize = 14;

/// Ethernet header length.
pub const ETH_HLEN: usize = 14;

/// The MTU used when the backend gives none (or one out of range).
pub const DEFAULT_MTU: u32 = 1500;

/// What this frontend asks for. `Config::default()` is a good start.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Use `feature-sg`: frames spanning several slots, up to [`MAX_FRAME`] bytes.
    pub sg: bool,
    /// Accept received IPv4 TCP/UDP frames whose checksum is blank
    /// (`NETRXF_csum_blank`). `false` writes `feature-no-csum-offload = 1`.
    pub rx_csum_offload: bool,
    /// Same for IPv6 (`feature-ipv6-csum-offload`).
    pub ipv6_csum_offload: bool,
    /// Send frames marked checksum-blank as such when the backend allows it;
    /// otherwise (or when `false`) the frontend computes the checksum itself.
    pub tx_csum_offload: bool,
    /// Large TCP/IPv4 frames (GSO) in both directions (`feature-gso-tcpv4`).
    pub gso_tcpv4: bool,
    /// Large TCP/IPv6 frames (GSO) in both directions (`feature-gso-tcpv6`).
    pub gso_tcpv6: bool,
    /// Notify the backend when rx buffers are posted (`feature-rx-notify`).
    pub rx_notify: bool,
    /// Separate tx and rx event channels when the backend supports them.
    pub split_event_channels: bool,
    /// Queues wanted (clamped to `1..=MAX_QUEUES` and the backend's maximum).
    pub max_queues: usize,
    /// Rx buffer pages per queue (clamped to `1..=RING_SIZE`).
    pub rx_buffers: usize,
    /// Tx buffer pages per queue (clamped to `1..=RING_SIZE`; a frame uses one
    /// per 4 KiB).
    pub tx_buffers: usize,
    /// Compute the checksum of received checksum-blank frames before handing them
    /// out (frames then look like ordinary, fully checksummed ones).
    pub complete_rx_csum: bool,
    /// Consecutive bad rx responses after which the device is failed (row 18).
    pub rx_error_limit: u32,
}

impl Config {
    /// The defaults (as a constant, for devices built in a `static`).
    pub const DEFAULT: Config = Config {
        sg: true,
        rx_csum_offload: true,
        ipv6_csum_offload: true,
        tx_csum_offload: true,
        gso_tcpv4: false,
        gso_tcpv6: false,
        rx_notify: true,
        split_event_channels: true,
        max_queues: 1,
        rx_buffers: RING_SIZE,
        tx_buffers: RING_SIZE,
        complete_rx_csum: true,
        rx_error_limit: 32,
    };
}

impl Default for Config {
    fn default() -> Self {
        Config::DEFAULT
    }
}

pub use hypercall::abi::netif::{BackendFlags, FrontendFlags};

/// The backend's offer, as read from its xenstore directory: its boolean
/// `feature-*` keys as [`BackendFlags`] (a key that is missing, `"0"` or
/// unparsable is off) and its numbers (missing or unparsable: `None`).
///
/// ```
/// use xennet_front::{BackendFeatures, BackendFlags};
///
/// let be = BackendFeatures {
///     flags: BackendFlags::RX_COPY | BackendFlags::SG,
///     mtu: Some(9000),
///     ..BackendFeatures::NONE
/// };
/// assert!(be.flags.contains(BackendFlags::SG));
/// assert!(!be.flags.contains(BackendFlags::GSO_TCPV4));
/// assert_eq!(BackendFlags::SG.key(), Some("feature-sg"));
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendFeatures {
    /// The `feature-*` keys that are on ([`BackendFlags::RX_COPY`] is required).
    pub flags: BackendFlags,
    /// `multi-queue-max-queues` (`None` if absent).
    pub max_queues: Option<u32>,
    /// `mtu` (`None` if absent).
    pub mtu: Option<u32>,
}

impl BackendFeatures {
    /// Nothing offered (the same as `Default::default()`, as a constant).
    pub const NONE: BackendFeatures = BackendFeatures {
        flags: BackendFlags::empty(),
        max_queues: None,
        mtu: None,
    };
}

/// The smaller of `a` and `b` (`Ord::min` is not a `const fn`; `negotiate` must be
/// one, for `Device::new`).
const fn min(a: usize, b: usize) -> usize {
    if a < b {
        a
    } else {
        b
    }
}

/// `v` brought into `1..=hi` (`hi >= 1`).
const fn clamp_from_1(v: usize, hi: usize) -> usize {
    min(if v == 0 { 1 } else { v }, hi)
}

bitflags::bitflags! {
    /// The features both ends agreed on (in [`Negotiated::flags`]). Each comes from
    /// our [`Config`] and the backend's keys ([`BackendFlags`]), as its
    /// documentation says.
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
    pub struct NegotiatedFlags: u32 {
        /// The backend wrote `multi-queue-max-queues`, so we write
        /// `multi-queue-num-queues` (even for one queue).
        const MULTI_QUEUE = 1 << 0;
        /// Separate tx and rx event channels (`event-channel-tx`/`-rx`): wanted
        /// ([`Config::split_event_channels`]) and offered
        /// (`feature-split-event-channels`).
        const SPLIT_EVENT_CHANNELS = 1 << 1;
        /// Tx frames may span slots: [`Config::sg`] and the backend's `feature-sg`.
        const TX_SG = 1 << 2;
        /// We wrote `feature-sg` = 1: the backend may send multi-slot rx frames.
        const RX_SG = 1 << 3;
        /// Checksum-blank IPv4 frames may be sent: [`Config::tx_csum_offload`] and
        /// no `feature-no-csum-offload` from the backend.
        const TX_CSUM_IPV4 = 1 << 4;
        /// Checksum-blank IPv6 frames may be sent: [`Config::tx_csum_offload`] and
        /// the backend's `feature-ipv6-csum-offload`.
        const TX_CSUM_IPV6 = 1 << 5;
        /// GSO TCPv4 frames may be sent: [`Self::TX_SG`], [`Config::gso_tcpv4`]
        /// and the backend's `feature-gso-tcpv4`.
        const TX_GSO_TCPV4 = 1 << 6;
        /// GSO TCPv6 frames may be sent: [`Self::TX_SG`], [`Config::gso_tcpv6`]
        /// and the backend's `feature-gso-tcpv6`.
        const TX_GSO_TCPV6 = 1 << 7;
        /// We wrote `feature-rx-notify` = 1 and notify when we post rx buffers.
        const RX_NOTIFY = 1 << 8;
    }
}

/// What both ends agreed on.
///
/// ```
/// use xennet_front::features::negotiate;
/// use xennet_front::{BackendFeatures, BackendFlags, Config, NegotiatedFlags};
///
/// let be = BackendFeatures {
///     flags: BackendFlags::RX_COPY | BackendFlags::SG | BackendFlags::NO_CSUM_OFFLOAD,
///     ..BackendFeatures::NONE
/// };
/// let n = negotiate(&Config::default(), &be);
/// assert!(n.flags.contains(NegotiatedFlags::TX_SG | NegotiatedFlags::RX_SG));
/// assert!(!n.flags.contains(NegotiatedFlags::TX_CSUM_IPV4));
/// assert_eq!(n.to_string(), "mtu 1500, 1 queue(s), features: sg rx-notify");
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The features in use.
    pub flags: NegotiatedFlags,
    /// Queues in use (`1..=MAX_QUEUES`).
    pub queues: usize,
    /// The IP MTU (from `<backend>/mtu`, else [`DEFAULT_MTU`]).
    pub mtu: u32,
    /// The backend's `mtu` when it was out of range (below 68 or above 65521) and
    /// [`DEFAULT_MTU`] was used instead; `None` when it was used or absent. Log it:
    /// the backend's setting is not in effect.
    pub ignored_mtu: Option<u32>,
    /// Largest frame (Ethernet header included) we send.
    pub max_tx_frame: usize,
    /// Rx buffers per queue.
    pub rx_buffers: usize,
    /// Tx buffers per queue.
    pub tx_buffers: usize,
}

impl core::fmt::Display for Negotiated {
    /// What a guest prints about a connected vif: `mtu M, Q queue(s), features: F`,
    /// where `F` lists, space-separated, those in use of `sg`, `tx-csum`,
    /// `gso-tcpv4`, `gso-tcpv6`, `split-evtchn` and `rx-notify`, or says `none`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "mtu {}, {} queue(s), features:", self.mtu, self.queues)?;
        let mut any = false;
        for (flag, name) in [
            (NegotiatedFlags::TX_SG, "sg"),
            (NegotiatedFlags::TX_CSUM_IPV4, "tx-csum"),
            (NegotiatedFlags::TX_GSO_TCPV4, "gso-tcpv4"),
            (NegotiatedFlags::TX_GSO_TCPV6, "gso-tcpv6"),
            (NegotiatedFlags::SPLIT_EVENT_CHANNELS, "split-evtchn"),
            (NegotiatedFlags::RX_NOTIFY, "rx-notify"),
        ] {
            if self.flags.contains(flag) {
                write!(f, " {name}")?;
                any = true;
            }
        }
        if !any {
            f.write_str(" none")?;
        }
        Ok(())
    }
}

/// `flag` if `on`, else nothing (for building flag sets in a `const fn`).
const fn when(on: bool, flag: NegotiatedFlags) -> NegotiatedFlags {
    if on {
        flag
    } else {
        NegotiatedFlags::empty()
    }
}

/// Combines our wishes and the backend's offer (`feature-rx-copy` is checked by the
/// caller: without it there is nothing to negotiate).
pub const fn negotiate(cfg: &Config, be: &BackendFeatures) -> Negotiated {
    let wanted = clamp_from_1(cfg.max_queues, MAX_QUEUES);
    // Row 23: an absurd maximum (0, 10^6, u32::MAX) is clamped, never trusted.
    let offered = match be.max_queues {
        Some(0) | None => 1,
        // u32 fits usize on every target the kit builds for (32 and 64 bits).
        Some(n) => n as usize,
    };
    let queues = min(wanted, offered);
    let (mtu, ignored_mtu) = match be.mtu {
        Some(m) if m >= 68 && m <= (MAX_FRAME - ETH_HLEN) as u32 => (m, None),
        Some(m) => (DEFAULT_MTU, Some(m)),
        None => (DEFAULT_MTU, None),
    };
    let be_flags = be.flags;
    let tx_sg = cfg.sg && be_flags.contains(BackendFlags::SG);
    let max_tx_frame = if tx_sg {
        MAX_FRAME
    } else {
        min(mtu as usize + ETH_HLEN, hypercall::PAGE_SIZE)
    };
    use NegotiatedFlags as N;
    let flags = when(be.max_queues.is_some(), N::MULTI_QUEUE)
        .union(when(
            cfg.split_event_channels && be_flags.contains(BackendFlags::SPLIT_EVENT_CHANNELS),
            N::SPLIT_EVENT_CHANNELS,
        ))
        .union(when(tx_sg, N::TX_SG))
        .union(when(cfg.sg, N::RX_SG))
        .union(when(
            cfg.tx_csum_offload && !be_flags.contains(BackendFlags::NO_CSUM_OFFLOAD),
            N::TX_CSUM_IPV4,
        ))
        .union(when(
            cfg.tx_csum_offload && be_flags.contains(BackendFlags::IPV6_CSUM_OFFLOAD),
            N::TX_CSUM_IPV6,
        ))
        .union(when(
            tx_sg && cfg.gso_tcpv4 && be_flags.contains(BackendFlags::GSO_TCPV4),
            N::TX_GSO_TCPV4,
        ))
        .union(when(
            tx_sg && cfg.gso_tcpv6 && be_flags.contains(BackendFlags::GSO_TCPV6),
            N::TX_GSO_TCPV6,
        ))
        .union(when(cfg.rx_notify, N::RX_NOTIFY));
    Negotiated {
        flags,
        queues,
        mtu,
        ignored_mtu,
        max_tx_frame,
        rx_buffers: clamp_from_1(cfg.rx_buffers, RING_SIZE),
        tx_buffers: clamp_from_1(cfg.tx_buffers, RING_SIZE),
    }
}

/// Our receive-side features, as the `feature-*` keys we write: GSO only with
/// scatter-gather, IPv6 checksum offload only with checksum offload.
pub const fn frontend_flags(cfg: &Config) -> FrontendFlags {
    let mut f = FrontendFlags::empty();
    if cfg.rx_notify {
        f = f.union(FrontendFlags::RX_NOTIFY);
    }
    if cfg.sg {
        f = f.union(FrontendFlags::SG);
        if cfg.gso_tcpv4 {
            f = f.union(FrontendFlags::GSO_TCPV4);
        }
        if cfg.gso_tcpv6 {
            f = f.union(FrontendFlags::GSO_TCPV6);
        }
    }
    if !cfg.rx_csum_offload {
        f = f.union(FrontendFlags::NO_CSUM_OFFLOAD);
    } else if cfg.ipv6_csum_offload {
        f = f.union(FrontendFlags::IPV6_CSUM_OFFLOAD);
    }
    f
}

/// The device-wide keys the frontend writes (besides rings, event channels and
/// queue keys), as `(key, value)`: `request-rx-copy` = 1, every key of
/// [`FrontendFlags::KEYS`] (1 or 0, from [`frontend_flags`]), and
/// `request-multicast-control` = 0 (we never ask for it; said explicitly).
pub fn frontend_keys(cfg: &Config) -> [(&'static str, u32); 2 + FrontendFlags::KEYS.len()] {
    let on = frontend_flags(cfg);
    let mut keys = [("request-rx-copy", 1); 2 + FrontendFlags::KEYS.len()];
    for (slot, &(flag, key)) in keys.iter_mut().skip(1).zip(FrontendFlags::KEYS) {
        *slot = (key, u32::from(on.contains(flag)));
    }
    if let Some(last) = keys.last_mut() {
        *last = ("request-multicast-control", 0);
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiated_prints_as_guests_show_it() {
        use std::string::ToString;
        let cfg = Config {
            gso_tcpv4: true,
            gso_tcpv6: true,
            max_queues: 4,
            ..Config::default()
        };
        let mut n = negotiate(&cfg, &all_on());
        assert!(n.flags.contains(NegotiatedFlags::RX_NOTIFY));
        assert_eq!(
            n.to_string(),
            "mtu 9000, 4 queue(s), features: sg tx-csum gso-tcpv4 gso-tcpv6 split-evtchn rx-notify"
        );
        // Flags not printed do not count.
        n.flags =
            NegotiatedFlags::RX_SG | NegotiatedFlags::TX_CSUM_IPV6 | NegotiatedFlags::MULTI_QUEUE;
        n.mtu = 1500;
        n.queues = 1;
        assert_eq!(n.to_string(), "mtu 1500, 1 queue(s), features: none");
    }

    fn all_on() -> BackendFeatures {
        BackendFeatures {
            flags: BackendFlags::all() - BackendFlags::NO_CSUM_OFFLOAD,
            max_queues: Some(8),
            mtu: Some(9000),
        }
    }

    #[test]
    fn everything_on() {
        let cfg = Config {
            gso_tcpv4: true,
            gso_tcpv6: true,
            max_queues: 4,
            ..Config::default()
        };
        let n = negotiate(&cfg, &all_on());
        assert_eq!(n.queues, 4);
        // Every flag (RX_NOTIFY from the default config).
        assert_eq!(n.flags, NegotiatedFlags::all());
        assert_eq!((n.mtu, n.max_tx_frame), (9000, MAX_FRAME));
    }

    #[test]
    fn everything_off() {
        let be = BackendFeatures {
            flags: BackendFlags::RX_COPY | BackendFlags::NO_CSUM_OFFLOAD,
            ..BackendFeatures::default()
        };
        let n = negotiate(&Config::default(), &be);
        assert_eq!(n.queues, 1);
        // What is left is our own side: rx SG and rx notifications.
        assert_eq!(n.flags, NegotiatedFlags::RX_SG | NegotiatedFlags::RX_NOTIFY);
        assert_eq!((n.mtu, n.max_tx_frame), (1500, 1514));
        // Our side off: nothing used even when the backend offers all.
        let cfg = Config {
            sg: false,
            rx_csum_offload: false,
            ipv6_csum_offload: false,
            tx_csum_offload: false,
            rx_notify: false,
            split_event_channels: false,
            ..Config::default()
        };
        let n = negotiate(&cfg, &all_on());
        // Only MULTI_QUEUE is left: it says which keys are written, not a choice.
        assert_eq!(n.flags, NegotiatedFlags::MULTI_QUEUE);
        assert_eq!(n.max_tx_frame, 4096, "9000 MTU without SG: one page");
        // Just over a page with its Ethernet header (4100 + 14), and exactly a page
        // (4082 + 14): one page either way (mutant: `mtu + ETH_HLEN` as `mtu -
        // ETH_HLEN` in the page test, which let 4114-byte frames through).
        for (mtu, frame) in [(4100, 4096), (4082, 4096), (4081, 4095)] {
            let be = BackendFeatures {
                mtu: Some(mtu),
                ..all_on()
            };
            assert_eq!(negotiate(&cfg, &be).max_tx_frame, frame, "mtu {mtu}");
        }
        let keys = frontend_keys(&cfg);
        assert!(keys.contains(&("feature-no-csum-offload", 1)));
        assert!(keys.contains(&("feature-sg", 0)));
        assert!(keys.contains(&("request-rx-copy", 1)));
        // GSO needs SG, and IPv6 checksum offload needs checksum offload at all
        // (mutants: either `&&` in frontend_keys as `||`).
        let keys = frontend_keys(&Config {
            sg: false,
            gso_tcpv4: true,
            gso_tcpv6: true,
            rx_csum_offload: false,
            ipv6_csum_offload: true,
            ..Config::default()
        });
        assert!(keys.contains(&("feature-gso-tcpv4", 0)));
        assert!(keys.contains(&("feature-gso-tcpv6", 0)));
        assert!(keys.contains(&("feature-ipv6-csum-offload", 0)));
        let keys = frontend_keys(&Config {
            sg: true,
            gso_tcpv4: true,
            gso_tcpv6: true,
            ..Config::default()
        });
        assert!(keys.contains(&("feature-gso-tcpv4", 1)));
        assert!(keys.contains(&("feature-gso-tcpv6", 1)));
        assert!(keys.contains(&("feature-ipv6-csum-offload", 1)));
    }

    /// Row 23 / N9: absurd `multi-queue-max-queues`.
    #[test]
    fn queue_count_is_clamped() {
        for (offer, want, got) in [
            (Some(0), 4, 1),
            (None, 4, 1),
            (Some(1), 4, 1),
            (Some(2), 4, 2),
            (Some(1_000_000), 4, 4),
            (Some(u32::MAX), 4, 4),
            (Some(u32::MAX), 100, MAX_QUEUES),
            (Some(3), 0, 1),
        ] {
            let be = BackendFeatures {
                max_queues: offer,
                ..all_on()
            };
            let cfg = Config {
                max_queues: want,
                ..Config::default()
            };
            assert_eq!(negotiate(&cfg, &be).queues, got, "{offer:?} {want}");
        }
    }

    #[test]
    fn mtu_out_of_range_falls_back() {
        for (m, want) in [
            (Some(0), 1500),
            (Some(67), 1500),
            (Some(68), 68),
            (Some(65521), 65521),
            (Some(65522), 1500),
            (Some(u32::MAX), 1500),
            (None, 1500),
        ] {
            let be = BackendFeatures { mtu: m, ..all_on() };
            let n = negotiate(&Config::default(), &be);
            assert_eq!(n.mtu, want);
            // Review defect (issue 16): an ignored value is reported, not dropped.
            let ignored = m.filter(|&m| m != want);
            assert_eq!(n.ignored_mtu, ignored, "{m:?}");
        }
    }

    #[test]
    fn gso_needs_sg() {
        let cfg = Config {
            sg: false,
            gso_tcpv4: true,
            ..Config::default()
        };
        assert!(!negotiate(&cfg, &all_on())
            .flags
            .contains(NegotiatedFlags::TX_GSO_TCPV4));
        assert!(frontend_keys(&cfg).contains(&("feature-gso-tcpv4", 0)));
    }

    /// The tables name Xen's keys (`io/netif.h`), each flag its own.
    #[test]
    fn flag_tables_name_xens_keys() {
        assert_eq!(
            BackendFlags::KEYS,
            &[
                (BackendFlags::RX_COPY, "feature-rx-copy"),
                (BackendFlags::SG, "feature-sg"),
                (BackendFlags::GSO_TCPV4, "feature-gso-tcpv4"),
                (BackendFlags::GSO_TCPV6, "feature-gso-tcpv6"),
                (BackendFlags::NO_CSUM_OFFLOAD, "feature-no-csum-offload"),
                (BackendFlags::IPV6_CSUM_OFFLOAD, "feature-ipv6-csum-offload"),
                (
                    BackendFlags::SPLIT_EVENT_CHANNELS,
                    "feature-split-event-channels"
                ),
            ]
        );
        assert_eq!(
            FrontendFlags::KEYS,
            &[
                (FrontendFlags::RX_NOTIFY, "feature-rx-notify"),
                (FrontendFlags::SG, "feature-sg"),
                (FrontendFlags::GSO_TCPV4, "feature-gso-tcpv4"),
                (FrontendFlags::GSO_TCPV6, "feature-gso-tcpv6"),
                (FrontendFlags::NO_CSUM_OFFLOAD, "feature-no-csum-offload"),
                (
                    FrontendFlags::IPV6_CSUM_OFFLOAD,
                    "feature-ipv6-csum-offload"
                ),
            ]
        );
        // Every flag of the type is in its table.
        let all =
            |t: &[(BackendFlags, &str)]| t.iter().fold(BackendFlags::empty(), |a, &(f, _)| a | f);
        assert_eq!(all(BackendFlags::KEYS), BackendFlags::all());
        let all =
            |t: &[(FrontendFlags, &str)]| t.iter().fold(FrontendFlags::empty(), |a, &(f, _)| a | f);
        assert_eq!(all(FrontendFlags::KEYS), FrontendFlags::all());
    }

    /// Each of our receive-side choices is written to its own key, and only there.
    #[test]
    fn frontend_keys_write_each_choice_to_its_key() {
        use std::vec::Vec;
        let none = Config {
            sg: false,
            rx_csum_offload: true,
            ipv6_csum_offload: false,
            gso_tcpv4: false,
            gso_tcpv6: false,
            rx_notify: false,
            ..Config::default()
        };
        let cases: [(Config, FrontendFlags, &[&str]); 9] = [
            (none, FrontendFlags::empty(), &[]),
            (
                Config {
                    rx_notify: true,
                    ..none
                },
                FrontendFlags::RX_NOTIFY,
                &["feature-rx-notify"],
            ),
            (
                Config { sg: true, ..none },
                FrontendFlags::SG,
                &["feature-sg"],
            ),
            (
                Config {
                    sg: true,
                    gso_tcpv4: true,
                    ..none
                },
                FrontendFlags::SG | FrontendFlags::GSO_TCPV4,
                &["feature-sg", "feature-gso-tcpv4"],
            ),
            (
                Config {
                    sg: true,
                    gso_tcpv6: true,
                    ..none
                },
                FrontendFlags::SG | FrontendFlags::GSO_TCPV6,
                &["feature-sg", "feature-gso-tcpv6"],
            ),
            // GSO needs scatter-gather.
            (
                Config {
                    gso_tcpv4: true,
                    gso_tcpv6: true,
                    ..none
                },
                FrontendFlags::empty(),
                &[],
            ),
            (
                Config {
                    rx_csum_offload: false,
                    ..none
                },
                FrontendFlags::NO_CSUM_OFFLOAD,
                &["feature-no-csum-offload"],
            ),
            (
                Config {
                    ipv6_csum_offload: true,
                    ..none
                },
                FrontendFlags::IPV6_CSUM_OFFLOAD,
                &["feature-ipv6-csum-offload"],
            ),
            // IPv6 checksum offload needs checksum offload.
            (
                Config {
                    rx_csum_offload: false,
                    ipv6_csum_offload: true,
                    ..none
                },
                FrontendFlags::NO_CSUM_OFFLOAD,
                &["feature-no-csum-offload"],
            ),
        ];
        for (cfg, flags, on) in cases {
            assert_eq!(frontend_flags(&cfg), flags, "{cfg:?}");
            let keys = frontend_keys(&cfg);
            let names: Vec<&str> = keys.iter().map(|&(k, _)| k).collect();
            assert_eq!(
                names,
                [
                    "request-rx-copy",
                    "feature-rx-notify",
                    "feature-sg",
                    "feature-gso-tcpv4",
                    "feature-gso-tcpv6",
                    "feature-no-csum-offload",
                    "feature-ipv6-csum-offload",
                    "request-multicast-control",
                ]
            );
            for (k, v) in keys {
                let want = u32::from(k == "request-rx-copy" || on.contains(&k));
                assert_eq!(v, want, "{k} for {flags:?}");
            }
        }
    }

    /// Each negotiated feature needs our wish and the backend's key (where it has
    /// one), and brings in nothing else.
    #[test]
    fn each_feature_needs_both_ends() {
        use BackendFlags as B;
        use NegotiatedFlags as N;
        let none = Config {
            sg: false,
            tx_csum_offload: false,
            gso_tcpv4: false,
            gso_tcpv6: false,
            rx_notify: false,
            split_event_channels: false,
            ..Config::default()
        };
        // RX_COPY and NO_CSUM_OFFLOAD: the backend side of "nothing".
        let base = B::RX_COPY | B::NO_CSUM_OFFLOAD;
        let on = |f: fn(&mut Config)| {
            let mut c = none;
            f(&mut c);
            c
        };
        let sg_gso4 = |c: &mut Config| {
            c.sg = true;
            c.gso_tcpv4 = true;
        };
        let sg_gso6 = |c: &mut Config| {
            c.sg = true;
            c.gso_tcpv6 = true;
        };
        let cases: [(Config, BackendFlags, NegotiatedFlags); 19] = [
            (none, base, N::empty()),
            (none, B::all() - B::NO_CSUM_OFFLOAD, N::empty()),
            (on(|c| c.split_event_channels = true), base, N::empty()),
            (
                on(|c| c.split_event_channels = true),
                base | B::SPLIT_EVENT_CHANNELS,
                N::SPLIT_EVENT_CHANNELS,
            ),
            (on(|c| c.sg = true), base, N::RX_SG),
            (on(|c| c.sg = true), base | B::SG, N::TX_SG | N::RX_SG),
            (on(|c| c.tx_csum_offload = true), base, N::empty()),
            (
                on(|c| c.tx_csum_offload = true),
                B::RX_COPY,
                N::TX_CSUM_IPV4,
            ),
            (
                on(|c| c.tx_csum_offload = true),
                base | B::IPV6_CSUM_OFFLOAD,
                N::TX_CSUM_IPV6,
            ),
            (on(sg_gso4), base | B::SG, N::TX_SG | N::RX_SG),
            (
                on(|c| c.sg = true),
                base | B::SG | B::GSO_TCPV4,
                N::TX_SG | N::RX_SG,
            ),
            (
                on(sg_gso4),
                base | B::SG | B::GSO_TCPV4,
                N::TX_SG | N::RX_SG | N::TX_GSO_TCPV4,
            ),
            (
                on(|c| c.gso_tcpv4 = true),
                base | B::SG | B::GSO_TCPV4,
                N::empty(),
            ),
            (on(sg_gso6), base | B::SG, N::TX_SG | N::RX_SG),
            (
                on(|c| c.sg = true),
                base | B::SG | B::GSO_TCPV6,
                N::TX_SG | N::RX_SG,
            ),
            (
                on(sg_gso6),
                base | B::SG | B::GSO_TCPV6,
                N::TX_SG | N::RX_SG | N::TX_GSO_TCPV6,
            ),
            (
                on(|c| c.gso_tcpv6 = true),
                base | B::SG | B::GSO_TCPV6,
                N::empty(),
            ),
            (on(|c| c.rx_notify = true), base, N::RX_NOTIFY),
            (on(|c| c.rx_notify = true), B::all(), N::RX_NOTIFY),
        ];
        for (cfg, flags, want) in cases {
            let be = BackendFeatures {
                flags,
                ..BackendFeatures::NONE
            };
            assert_eq!(negotiate(&cfg, &be).flags, want, "{cfg:?} {flags:?}");
        }
        // MULTI_QUEUE follows the key's presence, whatever its value.
        for (max_queues, want) in [
            (None, N::empty()),
            (Some(0), N::MULTI_QUEUE),
            (Some(1), N::MULTI_QUEUE),
        ] {
            let be = BackendFeatures {
                flags: base,
                max_queues,
                mtu: None,
            };
            assert_eq!(negotiate(&none, &be).flags, want, "{max_queues:?}");
        }
    }
}
