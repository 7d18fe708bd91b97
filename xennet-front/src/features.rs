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

/// The backend's offer, as read from its xenstore directory. A key that is missing
/// or unparsable counts as absent.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendFeatures {
    /// `feature-rx-copy` (required).
    pub rx_copy: bool,
    /// `feature-sg`: accepts multi-slot tx frames.
    pub sg: bool,
    /// `feature-gso-tcpv4`: accepts GSO TCPv4 tx frames.
    pub gso_tcpv4: bool,
    /// `feature-gso-tcpv6`.
    pub gso_tcpv6: bool,
    /// `feature-no-csum-offload`: refuses checksum-blank IPv4 tx frames.
    pub no_csum_offload: bool,
    /// `feature-ipv6-csum-offload`: accepts checksum-blank IPv6 tx frames.
    pub ipv6_csum_offload: bool,
    /// `feature-split-event-channels`.
    pub split_event_channels: bool,
    /// `multi-queue-max-queues` (`None` if absent).
    pub max_queues: Option<u32>,
    /// `mtu` (`None` if absent).
    pub mtu: Option<u32>,
}

impl BackendFeatures {
    /// Nothing offered (the same as `Default::default()`, as a constant).
    pub const NONE: BackendFeatures = BackendFeatures {
        rx_copy: false,
        sg: false,
        gso_tcpv4: false,
        gso_tcpv6: false,
        no_csum_offload: false,
        ipv6_csum_offload: false,
        split_event_channels: false,
        max_queues: None,
        mtu: None,
    };
}

const fn clamp(v: usize, lo: usize, hi: usize) -> usize {
    if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

/// What both ends agreed on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Queues in use (`1..=MAX_QUEUES`).
    pub queues: usize,
    /// Whether `multi-queue-num-queues` is written (the backend offered multi-queue).
    pub write_num_queues: bool,
    /// Separate tx/rx event channels.
    pub split_event_channels: bool,
    /// Tx frames may span slots.
    pub tx_sg: bool,
    /// We told the backend it may send multi-slot rx frames.
    pub rx_sg: bool,
    /// Checksum-blank IPv4 frames may be sent.
    pub tx_csum_v4: bool,
    /// Checksum-blank IPv6 frames may be sent.
    pub tx_csum_v6: bool,
    /// GSO TCPv4 frames may be sent.
    pub tx_gso_v4: bool,
    /// GSO TCPv6 frames may be sent.
    pub tx_gso_v6: bool,
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
    /// We notify on rx refill.
    pub rx_notify: bool,
}

impl core::fmt::Display for Negotiated {
    /// What a guest prints about a connected vif: `mtu M, Q queue(s), features: F`,
    /// where `F` lists, space-separated, those in use of `sg`, `tx-csum`,
    /// `gso-tcpv4`, `gso-tcpv6`, `split-evtchn` and `rx-notify`, or says `none`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "mtu {}, {} queue(s), features:", self.mtu, self.queues)?;
        let mut any = false;
        for (on, name) in [
            (self.tx_sg, "sg"),
            (self.tx_csum_v4, "tx-csum"),
            (self.tx_gso_v4, "gso-tcpv4"),
            (self.tx_gso_v6, "gso-tcpv6"),
            (self.split_event_channels, "split-evtchn"),
            (self.rx_notify, "rx-notify"),
        ] {
            if on {
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

/// Combines our wishes and the backend's offer (`feature-rx-copy` is checked by the
/// caller: without it there is nothing to negotiate).
pub const fn negotiate(cfg: &Config, be: &BackendFeatures) -> Negotiated {
    let wanted = clamp(cfg.max_queues, 1, MAX_QUEUES);
    // Row 23: an absurd maximum (0, 10^6, u32::MAX) is clamped, never trusted.
    let offered = match be.max_queues {
        Some(0) | None => 1,
        // u32 fits usize on every target the kit builds for (32 and 64 bits).
        Some(n) => n as usize,
    };
    let queues = if wanted < offered { wanted } else { offered };
    let (mtu, ignored_mtu) = match be.mtu {
        Some(m) if m >= 68 && m <= (MAX_FRAME - ETH_HLEN) as u32 => (m, None),
        Some(m) => (DEFAULT_MTU, Some(m)),
        None => (DEFAULT_MTU, None),
    };
    let tx_sg = cfg.sg && be.sg;
    let max_tx_frame = if tx_sg {
        MAX_FRAME
    } else if mtu as usize + ETH_HLEN < hypercall::PAGE_SIZE {
        mtu as usize + ETH_HLEN
    } else {
        hypercall::PAGE_SIZE
    };
    Negotiated {
        queues,
        write_num_queues: be.max_queues.is_some(),
        split_event_channels: cfg.split_event_channels && be.split_event_channels,
        tx_sg,
        rx_sg: cfg.sg,
        tx_csum_v4: cfg.tx_csum_offload && !be.no_csum_offload,
        tx_csum_v6: cfg.tx_csum_offload && be.ipv6_csum_offload,
        tx_gso_v4: tx_sg && cfg.gso_tcpv4 && be.gso_tcpv4,
        tx_gso_v6: tx_sg && cfg.gso_tcpv6 && be.gso_tcpv6,
        mtu,
        ignored_mtu,
        max_tx_frame,
        rx_buffers: clamp(cfg.rx_buffers, 1, RING_SIZE),
        tx_buffers: clamp(cfg.tx_buffers, 1, RING_SIZE),
        rx_notify: cfg.rx_notify,
    }
}

/// The device-wide keys the frontend writes (besides rings, event channels and
/// queue keys), as `(key, value)`: our receive-side features.
pub fn frontend_keys(cfg: &Config) -> [(&'static str, u32); 8] {
    let b = |v: bool| u32::from(v);
    [
        ("request-rx-copy", 1),
        ("feature-rx-notify", b(cfg.rx_notify)),
        ("feature-sg", b(cfg.sg)),
        ("feature-gso-tcpv4", b(cfg.sg && cfg.gso_tcpv4)),
        ("feature-gso-tcpv6", b(cfg.sg && cfg.gso_tcpv6)),
        ("feature-no-csum-offload", b(!cfg.rx_csum_offload)),
        (
            "feature-ipv6-csum-offload",
            b(cfg.rx_csum_offload && cfg.ipv6_csum_offload),
        ),
        // We never ask for multicast control; say so explicitly.
        ("request-multicast-control", 0),
    ]
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
        n.rx_notify = true;
        assert_eq!(
            n.to_string(),
            "mtu 9000, 4 queue(s), features: sg tx-csum gso-tcpv4 gso-tcpv6 split-evtchn rx-notify"
        );
        n.tx_sg = false;
        n.tx_csum_v4 = false;
        n.tx_gso_v4 = false;
        n.tx_gso_v6 = false;
        n.split_event_channels = false;
        n.rx_notify = false;
        n.mtu = 1500;
        n.queues = 1;
        assert_eq!(n.to_string(), "mtu 1500, 1 queue(s), features: none");
    }

    fn all_on() -> BackendFeatures {
        BackendFeatures {
            rx_copy: true,
            sg: true,
            gso_tcpv4: true,
            gso_tcpv6: true,
            no_csum_offload: false,
            ipv6_csum_offload: true,
            split_event_channels: true,
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
        assert!(n.write_num_queues && n.split_event_channels && n.tx_sg && n.rx_sg);
        assert!(n.tx_csum_v4 && n.tx_csum_v6 && n.tx_gso_v4 && n.tx_gso_v6);
        assert_eq!((n.mtu, n.max_tx_frame), (9000, MAX_FRAME));
    }

    #[test]
    fn everything_off() {
        let be = BackendFeatures {
            rx_copy: true,
            no_csum_offload: true,
            ..BackendFeatures::default()
        };
        let n = negotiate(&Config::default(), &be);
        assert_eq!(n.queues, 1);
        assert!(!n.write_num_queues && !n.split_event_channels && !n.tx_sg);
        assert!(!n.tx_csum_v4 && !n.tx_csum_v6 && !n.tx_gso_v4 && !n.tx_gso_v6);
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
        assert!(!n.tx_sg && !n.rx_sg && !n.split_event_channels && !n.rx_notify);
        assert!(!n.tx_csum_v4 && !n.tx_csum_v6 && !n.tx_gso_v4);
        assert_eq!(n.max_tx_frame, 4096, "9000 MTU without SG: one page");
        let keys = frontend_keys(&cfg);
        assert!(keys.contains(&("feature-no-csum-offload", 1)));
        assert!(keys.contains(&("feature-sg", 0)));
        assert!(keys.contains(&("request-rx-copy", 1)));
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
        assert!(!negotiate(&cfg, &all_on()).tx_gso_v4);
        assert!(frontend_keys(&cfg).contains(&("feature-gso-tcpv4", 0)));
    }
}
