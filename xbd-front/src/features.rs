//! What the backend offers, what we negotiated, and the disk's geometry.
//!
//! Everything here is pure (values in, values out) so the rules are unit-tested
//! without a store: clamps for hostile values (docs/hostile-input.md rows 11-13) live here.

use hypercall::abi::blkif;

use crate::error::BadConfig;

/// Largest ring this frontend uses: order 4 (16 pages), Linux's
/// `XENBUS_MAX_RING_GRANT_ORDER`.
pub const MAX_RING_PAGE_ORDER: u32 = 4;

/// Most queues (rings, each with its own event channel) a device uses: a
/// backend's `multi-queue-max-queues` is clamped to this (Linux blkfront's default
/// `max_queues` is 4, also capped by its CPUs).
pub const MAX_QUEUES: usize = 8;

/// Request slots in one ring page (`__CONST_RING_SIZE(blkif, 4096)`).
pub const SLOTS_PER_RING_PAGE: usize = 32;

pub use blkif::{BackendFlags, VdiskInfo};

/// The backend's offer, as read from its directory: its boolean keys as
/// [`BackendFlags`] (missing, `"0"` or unparsable: off) and its numbers (missing
/// or unparsable: `None`).
///
/// ```
/// use xbd_front::features::{flush_kind, FlushKind, Offer};
/// use xbd_front::BackendFlags;
///
/// let offer = Offer {
///     flags: BackendFlags::BARRIER | BackendFlags::PERSISTENT,
///     ..Offer::default()
/// };
/// assert!(offer.flags.contains(BackendFlags::PERSISTENT));
/// assert_eq!(flush_kind(&offer), Some(FlushKind::Barrier));
/// assert_eq!(BackendFlags::BARRIER.key(), Some("feature-barrier"));
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Offer {
    /// The boolean keys that are on.
    pub flags: BackendFlags,
    /// `multi-queue-max-queues`.
    pub max_queues: Option<u64>,
    /// `max-ring-page-order`.
    pub max_ring_page_order: Option<u64>,
    /// `feature-max-indirect-segments`.
    pub max_indirect_segments: Option<u64>,
    /// `discard-granularity` (bytes).
    pub discard_granularity: Option<u64>,
    /// `discard-alignment` (bytes).
    pub discard_alignment: Option<u64>,
}

/// How a flush is sent.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FlushKind {
    /// `BLKIF_OP_FLUSH_DISKCACHE` (`feature-flush-cache`).
    FlushDiskCache,
    /// `BLKIF_OP_WRITE_BARRIER` with no data (`feature-barrier` only, as Linux does for
    /// old backends).
    Barrier,
}

/// Discard parameters.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Discard {
    /// `discard-granularity` in bytes (0: unknown).
    pub granularity: u32,
    /// `discard-alignment` in bytes.
    pub alignment: u32,
    /// `discard-secure`: secure erase available.
    pub secure: bool,
}

bitflags::bitflags! {
    /// The features a connection uses that are on or off (in [`Features::flags`]).
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
    pub struct FeatureFlags: u32 {
        /// Indirect descriptors (`BLKIF_OP_INDIRECT`): the backend offers
        /// `feature-max-indirect-segments` over 11 and [`Config::indirect`] is on.
        const INDIRECT = 1 << 0;
        /// Persistent grants: both ends wrote `feature-persistent` = 1 (ours from
        /// [`Config::persistent`]).
        const PERSISTENT = 1 << 1;
    }
}

/// What this connection uses.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Features {
    /// Queues in use: one ring and one event channel each (1: the classic
    /// layout, top-level `ring-ref`/`event-channel`; more: `multi-queue-num-queues`
    /// and `queue-N/`).
    pub queues: u32,
    /// `ring-page-order` written (0: a single `ring-ref`), the same for every queue.
    pub ring_page_order: u32,
    /// Ring requests in flight at most (slots of the ring, capped by the device).
    pub max_inflight: u32,
    /// Segments (pages) per ring request.
    pub segments_per_request: u32,
    /// Indirect descriptors and persistent grants, if in use.
    pub flags: FeatureFlags,
    /// How flushes are sent, if at all (turned off if the backend answers
    /// `EOPNOTSUPP`).
    pub flush: Option<FlushKind>,
    /// Discard, if offered.
    pub discard: Option<Discard>,
}

impl core::fmt::Display for Features {
    /// The features in use, space-separated, as guests print them: `flush` or
    /// `barrier`, `discard`, `persistent-grants`, `indirect(N segments)`, `queues N`
    /// (more than one), and always `ring-page-order N` (e.g. `flush
    /// persistent-grants ring-page-order 0`).
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.flush {
            Some(FlushKind::FlushDiskCache) => f.write_str("flush ")?,
            Some(FlushKind::Barrier) => f.write_str("barrier ")?,
            None => {}
        }
        if self.discard.is_some() {
            f.write_str("discard ")?;
        }
        if self.flags.contains(FeatureFlags::PERSISTENT) {
            f.write_str("persistent-grants ")?;
        }
        if self.flags.contains(FeatureFlags::INDIRECT) {
            write!(f, "indirect({} segments) ", self.segments_per_request)?;
        }
        if self.queues > 1 {
            write!(f, "queues {} ", self.queues)?;
        }
        write!(f, "ring-page-order {}", self.ring_page_order)
    }
}

/// Local limits and choices for negotiation.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Ask for persistent grants (`feature-persistent`); used only if the backend
    /// offers them too.
    pub persistent: bool,
    /// Use indirect descriptors when offered.
    pub indirect: bool,
    /// Highest `ring-page-order` we ask for (also capped by the device's `SLOTS` and
    /// by [`MAX_RING_PAGE_ORDER`]).
    pub max_ring_page_order: u32,
    /// Connect and teardown timeout.
    pub timeout: core::time::Duration,
    /// How long the blocking helpers ([`crate::Device::read`] and friends) keep
    /// polling the ring for their response before they re-arm the notification and
    /// sleep in `Platform::wait`. Polling costs CPU time but no event-channel
    /// notification and no wake-up latency; a response that comes within this
    /// window (most do: a 1 MiB read takes tens of microseconds) is seen at once.
    /// `Duration::ZERO` sleeps right away.
    pub poll_spin: core::time::Duration,
    /// Queues (rings) wanted: the device uses as many as the backend's
    /// `multi-queue-max-queues` allows (1 without it), at most [`MAX_QUEUES`] and
    /// `SLOTS` (each queue gets its share of the slots). Default 1: one ring, the
    /// layout every backend knows. More queues let a backend serve requests in
    /// parallel (shim-hv's blkback: a thread per queue).
    pub queues: u32,
}

impl Config {
    /// The defaults (as a constant, for devices built in a `static`).
    pub const DEFAULT: Config = Config {
        persistent: true,
        indirect: true,
        max_ring_page_order: MAX_RING_PAGE_ORDER,
        timeout: core::time::Duration::from_secs(10),
        poll_spin: core::time::Duration::from_micros(100),
        queues: 1,
    };
}

impl Default for Config {
    fn default() -> Self {
        Config::DEFAULT
    }
}

/// Queues to use: the backend's `multi-queue-max-queues` (absent, garbage or 0:
/// one, as Linux blkfront reads it) clamped to what we want, to [`MAX_QUEUES`] and
/// to `slots` (every queue needs at least one slot). Never 0.
pub fn queues(offered: Option<u64>, wanted: u32, slots: usize) -> u32 {
    let local = (wanted as usize).min(MAX_QUEUES).min(slots).max(1);
    let offered = offered.unwrap_or(1).clamp(1, MAX_QUEUES as u64) as usize;
    local.min(offered) as u32
}

/// The ring order to write: the backend's maximum clamped to ours (row 12); ours is
/// the smallest order whose ring holds `slots` requests, at most `config_max`.
pub fn ring_order(offered: Option<u64>, slots: usize, config_max: u32) -> u32 {
    // The smallest order up to ours whose ring holds `slots` (our largest if none
    // does). The result is at most MAX_RING_PAGE_ORDER through `offered`'s clamp.
    let want = (0..MAX_RING_PAGE_ORDER)
        .find(|&order| SLOTS_PER_RING_PAGE << order >= slots)
        .unwrap_or(MAX_RING_PAGE_ORDER);
    let offered = offered.unwrap_or(0).min(u64::from(MAX_RING_PAGE_ORDER)) as u32;
    want.min(config_max).min(offered)
}

/// Segments per request and whether indirect descriptors are used: a huge offer is
/// clamped to `segs_max` (the device's `SEGS`; row 12).
pub fn segments(offered_indirect: Option<u64>, segs_max: usize, use_indirect: bool) -> (u32, bool) {
    let direct = segs_max.min(blkif::MAX_SEGMENTS_PER_REQUEST) as u32;
    let cap = segs_max.min(blkif::SEGS_PER_INDIRECT_FRAME) as u64;
    // Indirect only when the clamped offer is more than a direct request carries.
    match offered_indirect.map(|n| n.min(cap)) {
        Some(segs) if use_indirect && segs > blkif::MAX_SEGMENTS_PER_REQUEST as u64 => {
            (segs as u32, true)
        }
        _ => (direct, false),
    }
}

/// Flush method from the offer (flush-cache wins over barrier, as in Linux).
pub fn flush_kind(offer: &Offer) -> Option<FlushKind> {
    if offer.flags.contains(BackendFlags::FLUSH_CACHE) {
        Some(FlushKind::FlushDiskCache)
    } else if offer.flags.contains(BackendFlags::BARRIER) {
        Some(FlushKind::Barrier)
    } else {
        None
    }
}

/// Discard parameters from the offer (values over 32 bits are clamped to 0 = unknown).
pub fn discard(offer: &Offer) -> Option<Discard> {
    offer
        .flags
        .contains(BackendFlags::DISCARD)
        .then(|| Discard {
            granularity: offer
                .discard_granularity
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0),
            alignment: offer
                .discard_alignment
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0),
            secure: offer.flags.contains(BackendFlags::DISCARD_SECURE),
        })
}

/// The medium behind the device (`device-type` in the frontend directory, and
/// `VDISK_CDROM` in `info`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DeviceType {
    /// A disk.
    Disk,
    /// A CD-ROM (read-only).
    Cdrom,
}

/// The disk as the backend describes it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    /// Capacity in logical sectors (`sectors`, in units of `sector_size`).
    pub sectors: u64,
    /// Logical sector size in bytes (`sector-size`; 512 if missing).
    pub sector_size: u32,
    /// Physical sector size (`physical-sector-size`; the logical size if missing or
    /// unusable).
    pub physical_sector_size: u32,
    /// The `info` bits as the backend wrote them (unknown bits kept; an `info`
    /// over 32 bits or unparsable reads as none).
    pub info: VdiskInfo,
    /// Disk or CD-ROM.
    pub device_type: DeviceType,
    /// Writes refused locally (`VDISK_READONLY`, `mode = "r"`, or a CD-ROM).
    pub read_only: bool,
    /// `VDISK_REMOVABLE`.
    pub removable: bool,
}

impl DiskInfo {
    /// Capacity in bytes (checked at connect: it fits 64 bits).
    pub fn capacity_bytes(&self) -> u64 {
        self.sectors.saturating_mul(u64::from(self.sector_size))
    }

    /// 512-byte units per logical sector.
    pub fn units_per_sector(&self) -> u64 {
        u64::from(self.sector_size / 512)
    }
}

/// The raw values read from the store for [`geometry`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct RawGeometry {
    /// `sectors`.
    pub sectors: u64,
    /// `sector-size`.
    pub sector_size: Option<u64>,
    /// `physical-sector-size`.
    pub physical_sector_size: Option<u64>,
    /// `info`.
    pub info: Option<u64>,
    /// Backend `mode` is `"r"`.
    pub mode_readonly: bool,
    /// Frontend `device-type` is `"cdrom"`.
    pub cdrom: bool,
}

/// Which key a [`BadConfig`] is about.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum GeometryKey {
    /// `sectors`
    Sectors,
    /// `sector-size`
    SectorSize,
}

/// Validates the geometry (rows 11, 13): `sector-size` a power of two in
/// 512..=4096, `sectors` non-zero for a disk (an empty CD-ROM drive may have 0), and
/// the capacity in bytes fitting 64 bits.
pub fn geometry(raw: &RawGeometry) -> Result<DiskInfo, (GeometryKey, BadConfig)> {
    let ss = raw.sector_size.unwrap_or(512);
    if !(512..=4096).contains(&ss) || !ss.is_power_of_two() {
        return Err((GeometryKey::SectorSize, BadConfig::SectorSize(ss)));
    }
    let bits =
        VdiskInfo::from_bits_retain(raw.info.and_then(|v| u32::try_from(v).ok()).unwrap_or(0));
    let cdrom = raw.cdrom || bits.contains(VdiskInfo::CDROM);
    if raw.sectors == 0 && !cdrom {
        return Err((GeometryKey::Sectors, BadConfig::ZeroSectors));
    }
    if raw.sectors.checked_mul(ss).is_none() {
        return Err((
            GeometryKey::Sectors,
            BadConfig::CapacityOverflow {
                sectors: raw.sectors,
                sector_size: ss,
            },
        ));
    }
    let pss = raw
        .physical_sector_size
        .filter(|&p| p >= ss && p.is_power_of_two() && p <= 1 << 20)
        .unwrap_or(ss);
    Ok(DiskInfo {
        sectors: raw.sectors,
        sector_size: ss as u32,
        physical_sector_size: pss as u32,
        info: bits,
        device_type: if cdrom {
            DeviceType::Cdrom
        } else {
            DeviceType::Disk
        },
        read_only: cdrom || raw.mode_readonly || bits.contains(VdiskInfo::READONLY),
        removable: bits.contains(VdiskInfo::REMOVABLE),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Multi-queue negotiation (Linux blkfront's rule): absent, garbage (read as
    /// absent) or 0 means one queue; an absurd offer is clamped to what we want,
    /// to [`MAX_QUEUES`] and to the slots we have.
    #[test]
    fn queue_count_is_clamped() {
        let cases: [(Option<u64>, u32, usize, u32); 12] = [
            (None, 4, 32, 1),
            (Some(0), 4, 32, 1),
            (Some(1), 4, 32, 1),
            (Some(4), 2, 32, 2),
            (Some(4), 1, 32, 1),
            (Some(2), 4, 32, 2),
            (Some(u64::MAX), 4, 32, 4),
            (Some(1 << 40), 64, 32, MAX_QUEUES as u32),
            (Some(16), 16, 3, 3),
            (Some(16), 0, 32, 1),
            (Some(8), u32::MAX, 1, 1),
            (
                Some(MAX_QUEUES as u64 + 1),
                u32::MAX,
                512,
                MAX_QUEUES as u32,
            ),
        ];
        for (offer, want, slots, got) in cases {
            assert_eq!(queues(offer, want, slots), got, "{offer:?} {want} {slots}");
        }
    }

    #[test]
    fn features_print_as_guests_show_them() {
        use std::string::ToString;
        let mut f = Features {
            queues: 1,
            ring_page_order: 2,
            max_inflight: 32,
            segments_per_request: 32,
            flags: FeatureFlags::INDIRECT | FeatureFlags::PERSISTENT,
            flush: Some(FlushKind::FlushDiskCache),
            discard: Some(Discard {
                granularity: 512,
                alignment: 0,
                secure: false,
            }),
        };
        assert_eq!(
            f.to_string(),
            "flush discard persistent-grants indirect(32 segments) ring-page-order 2"
        );
        f.flush = Some(FlushKind::Barrier);
        f.discard = None;
        f.flags = FeatureFlags::empty();
        f.ring_page_order = 0;
        assert_eq!(f.to_string(), "barrier ring-page-order 0");
        f.flush = None;
        assert_eq!(f.to_string(), "ring-page-order 0");
        f.queues = 2;
        assert_eq!(f.to_string(), "queues 2 ring-page-order 0");
    }

    #[test]
    fn ring_order_is_clamped_both_ways() {
        // A backend offering absurd orders gets at most what we need / allow (row 12).
        assert_eq!(ring_order(Some(30), 32, 4), 0);
        assert_eq!(ring_order(Some(30), 64, 4), 1);
        assert_eq!(ring_order(Some(u64::MAX), 512, 4), 4);
        assert_eq!(ring_order(Some(u64::MAX), 4096, 9), 4);
        assert_eq!(ring_order(Some(2), 512, 4), 2);
        assert_eq!(ring_order(None, 512, 4), 0);
        assert_eq!(ring_order(Some(4), 512, 1), 1);
        assert_eq!(ring_order(Some(4), 8, 4), 0);
    }

    #[test]
    fn indirect_segments_are_clamped() {
        assert_eq!(segments(Some(1 << 31), 32, true), (32, true));
        assert_eq!(segments(Some(u64::MAX), 512, true), (512, true));
        assert_eq!(segments(Some(256), 512, true), (256, true));
        assert_eq!(segments(Some(256), 8, true), (8, false));
        assert_eq!(segments(Some(11), 64, true), (11, false));
        assert_eq!(segments(Some(0), 64, true), (11, false));
        assert_eq!(segments(None, 64, true), (11, false));
        assert_eq!(segments(Some(256), 64, false), (11, false));
        // An offer over 11 clamped by the device to exactly 11: direct requests
        // (mutant: the clamped count's `> 11` as `>= 11`).
        assert_eq!(segments(Some(12), 11, true), (11, false));
        assert_eq!(segments(Some(12), 12, true), (12, true));
    }

    /// `physical-sector-size` is kept when it is a power of two from the logical
    /// size up to 1 MiB (mutants: the `<= 1 << 20` bound as `>` or `1 >> 20`).
    #[test]
    fn physical_sector_size_bounds() {
        let pss = |p: u64| {
            geometry(&RawGeometry {
                sectors: 8,
                sector_size: Some(512),
                physical_sector_size: Some(p),
                ..Default::default()
            })
            .unwrap()
            .physical_sector_size
        };
        assert_eq!(pss(512), 512);
        assert_eq!(pss(4096), 4096);
        assert_eq!(pss(1 << 20), 1 << 20);
        assert_eq!(pss(2 << 20), 512, "over 1 MiB: ignored");
        assert_eq!(pss(3072), 512, "not a power of two: ignored");
    }

    #[test]
    fn flush_prefers_flush_cache_and_discard_params() {
        let mut o = Offer::default();
        assert_eq!(flush_kind(&o), None);
        o.flags |= BackendFlags::BARRIER;
        assert_eq!(flush_kind(&o), Some(FlushKind::Barrier));
        o.flags |= BackendFlags::FLUSH_CACHE;
        assert_eq!(flush_kind(&o), Some(FlushKind::FlushDiskCache));
        assert_eq!(discard(&o), None);
        o.flags |= BackendFlags::DISCARD;
        o.discard_granularity = Some(4096);
        o.discard_alignment = Some(1 << 40);
        o.flags |= BackendFlags::DISCARD_SECURE;
        assert_eq!(
            discard(&o),
            Some(Discard {
                granularity: 4096,
                alignment: 0,
                secure: true
            })
        );
    }

    /// The table names blkif.h's keys, each flag its own.
    #[test]
    fn backend_flags_name_blkif_keys() {
        assert_eq!(
            BackendFlags::KEYS,
            &[
                (BackendFlags::PERSISTENT, "feature-persistent"),
                (BackendFlags::FLUSH_CACHE, "feature-flush-cache"),
                (BackendFlags::BARRIER, "feature-barrier"),
                (BackendFlags::DISCARD, "feature-discard"),
                (BackendFlags::DISCARD_SECURE, "discard-secure"),
            ]
        );
        let all = BackendFlags::KEYS
            .iter()
            .fold(BackendFlags::empty(), |a, &(f, _)| a | f);
        assert_eq!(all, BackendFlags::all());
    }

    #[test]
    fn sector_size_must_be_a_power_of_two_in_range() {
        for bad in [0u64, 1, 256, 511, 513, 1000, 3000, 8192, u64::MAX] {
            let raw = RawGeometry {
                sectors: 100,
                sector_size: Some(bad),
                ..Default::default()
            };
            assert_eq!(
                geometry(&raw),
                Err((GeometryKey::SectorSize, BadConfig::SectorSize(bad))),
                "{bad}"
            );
        }
        for good in [512u64, 1024, 2048, 4096] {
            let raw = RawGeometry {
                sectors: 100,
                sector_size: Some(good),
                ..Default::default()
            };
            let d = geometry(&raw).unwrap();
            assert_eq!(d.sector_size as u64, good);
            assert_eq!(d.capacity_bytes(), 100 * good);
        }
    }

    #[test]
    fn zero_and_absurd_sector_counts() {
        let raw = RawGeometry::default();
        assert_eq!(
            geometry(&raw),
            Err((GeometryKey::Sectors, BadConfig::ZeroSectors))
        );
        // An empty CD-ROM drive is fine.
        let raw = RawGeometry {
            cdrom: true,
            ..Default::default()
        };
        assert_eq!(geometry(&raw).unwrap().device_type, DeviceType::Cdrom);
        let raw = RawGeometry {
            sectors: u64::MAX / 100,
            sector_size: Some(4096),
            ..Default::default()
        };
        assert!(matches!(
            geometry(&raw),
            Err((GeometryKey::Sectors, BadConfig::CapacityOverflow { .. }))
        ));
        let raw = RawGeometry {
            sectors: u64::MAX / 512,
            ..Default::default()
        };
        assert!(geometry(&raw).is_ok());
    }

    #[test]
    fn info_bits_mode_and_device_type() {
        let g = |info: Option<u64>, mode_readonly: bool, cdrom: bool| {
            geometry(&RawGeometry {
                sectors: 8,
                info,
                mode_readonly,
                cdrom,
                ..Default::default()
            })
            .unwrap()
        };
        let d = g(None, false, false);
        assert!(!d.read_only && !d.removable && d.device_type == DeviceType::Disk);
        assert!(g(Some(4), false, false).read_only);
        assert!(g(None, true, false).read_only);
        let c = g(Some(1), false, false);
        assert!(c.read_only && c.device_type == DeviceType::Cdrom);
        assert!(g(None, false, true).read_only);
        assert!(g(Some(2), false, false).removable);
        // Unknown bits are kept but ignored; an info over 32 bits is ignored.
        assert_eq!(g(Some(0x100), false, false).info.bits(), 0x100);
        assert_eq!(g(Some(1 << 40), false, false).info, VdiskInfo::empty());
        // physical-sector-size below the logical size is ignored.
        let d = geometry(&RawGeometry {
            sectors: 8,
            sector_size: Some(4096),
            physical_sector_size: Some(512),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(d.physical_sector_size, 4096);
    }

    /// A logical sector holds `sector-size / 512` units of 512 bytes (the unit
    /// block requests count in), and the capacity is `sectors * sector-size`
    /// (mutants: `units_per_sector` -> 0 or 1, `/` -> `%`).
    #[test]
    fn units_per_sector_and_capacity() {
        for (size, units) in [(512u64, 1u64), (1024, 2), (2048, 4), (4096, 8)] {
            let d = geometry(&RawGeometry {
                sectors: 10,
                sector_size: Some(size),
                ..Default::default()
            })
            .unwrap();
            assert_eq!(d.units_per_sector(), units, "sector-size {size}");
            assert_eq!(d.capacity_bytes(), 10 * size);
        }
    }
}
