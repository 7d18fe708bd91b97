//! Hostile modes: a backend that misbehaves on purpose, so that a real guest's
//! frontends (the built-in guest, a kernel under the KVM runner) can be checked
//! against the same kinds of attack as the conformance catalogue's scripted
//! peers (`examples/conformance`). Chosen per device with shim-hv's `hostile`
//! config key or `create --hostile DEV=CASE` (docs/hostile-mode.md).
//!
//! Each mode has a stable name (`blk.<what>`, `net.<what>`, `console.<what>`,
//! as the conformance catalogue names its cases), a line saying what the
//! backend does and one saying what a correct frontend does. A mode changes
//! only its own device: the other devices of the domain, and the backend's own
//! process, are not affected (a hostile backend never panics or hangs the
//! daemon, and the domain can still be shut down and destroyed).
//!
//! ```
//! use xen_backends::hostile::Hostile;
//!
//! let h: Hostile = "blk.duplicate_response".parse().unwrap();
//! assert_eq!(h.name(), "blk.duplicate_response");
//! assert_eq!("blk.duplicate-response".parse::<Hostile>().unwrap(), h);
//! assert!(h.frontend().contains("not outstanding"));
//! assert!("blk.nonsense".parse::<Hostile>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

/// A misbehaving block backend (`blkback`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BlkHostile {
    /// Each response after the first repeats the one before (whose request
    /// is no longer outstanding).
    DuplicateResponse,
    /// Responses carry an id no request had (the request's id with bit 12
    /// flipped: a ring index or slot far out of range, in the low 32 bits).
    ResponseUnknownId,
    /// Responses carry the request's id with garbage in its upper 32 bits.
    ResponseIdHighBits,
    /// Responses carry another operation than their request.
    WrongOperation,
    /// Responses carry status 7 (not OKAY, ERROR or EOPNOTSUPP).
    UnknownStatus,
    /// `rsp_prod` is published a whole ring plus one past the requests; the
    /// ring is not served after that.
    RspProdOverrun,
    /// Requests are taken off the ring and never answered.
    NeverAnswers,
    /// At the first request the backend goes to `Closing` without answering.
    ClosingWithRequestsInFlight,
    /// `sectors` is not a number.
    SectorsGarbage,
    /// `sector-size` is 1000 (not a power of two).
    SectorSizeNotPowerOfTwo,
}

/// A misbehaving network backend (`netback`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NetHostile {
    /// Tx responses carry id 0xffff (outside any ring).
    TxIdOutOfRange,
    /// After the first tx answers, `rsp_prod` is published a whole ring plus
    /// one past them; the tx ring is not served after that.
    TxRspProdOverrun,
    /// Every posted rx buffer is answered with offset 4000 and 200 bytes.
    RxPastPage,
    /// Every posted rx buffer is answered with `more_data`: a chain without end.
    RxEndlessChain,
    /// The frontend's `mac` node is the broadcast address.
    MacNotUnicast,
    /// The frontend's `mac` node is not a MAC address.
    MacMalformed,
    /// Posted rx buffers are taken and never given back; frames for the guest
    /// are dropped.
    RxBuffersHoarded,
    /// The first posted rx buffer is answered, then `rsp_prod` is published a
    /// whole ring plus one past it; the rx ring is not served after that.
    RxRspProdOverrun,
    /// The vif is served correctly, and its queue 0 rx port is also notified
    /// about 20 000 times a second with nothing new on the rings, for as long as
    /// it is connected (docs/hostile-input.md E1, XSA-391).
    EventStorm,
}

/// A misbehaving console backend (the primary console or a channel, `console.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConsoleHostile {
    /// After the guest's first output, `out_cons` is moved 16 bytes past
    /// `out_prod` and the ring is no longer served.
    OutConsPastProd,
    /// After the guest's first output, `in_prod` is moved 1025 bytes past
    /// `in_cons` (more than the 1024-byte input ring) and the guest is notified.
    InProdPastRing,
    /// The ring is served correctly, and from the guest's first output on its
    /// port is also notified about 20 000 times a second with nothing new on
    /// the ring, for as long as the ring is served (docs/hostile-input.md E1,
    /// C2).
    EventStorm,
}

/// Any hostile mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hostile {
    /// Block.
    Blk(BlkHostile),
    /// Network.
    Net(NetHostile),
    /// Console.
    Console(ConsoleHostile),
}

/// The device class a mode applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// A disk (`blk.*`).
    Blk,
    /// A vif (`net.*`).
    Net,
    /// The primary console or a channel (`console.*`).
    Console,
}

impl Class {
    /// The name prefix: `blk`, `net`, `console`.
    pub fn prefix(self) -> &'static str {
        match self {
            Class::Blk => "blk",
            Class::Net => "net",
            Class::Console => "console",
        }
    }
}

/// One catalogue entry.
struct Entry {
    mode: Hostile,
    name: &'static str,
    backend: &'static str,
    frontend: &'static str,
}

const fn blk(
    m: BlkHostile,
    name: &'static str,
    backend: &'static str,
    frontend: &'static str,
) -> Entry {
    Entry {
        mode: Hostile::Blk(m),
        name,
        backend,
        frontend,
    }
}

const fn net(
    m: NetHostile,
    name: &'static str,
    backend: &'static str,
    frontend: &'static str,
) -> Entry {
    Entry {
        mode: Hostile::Net(m),
        name,
        backend,
        frontend,
    }
}

const fn con(
    m: ConsoleHostile,
    name: &'static str,
    backend: &'static str,
    frontend: &'static str,
) -> Entry {
    Entry {
        mode: Hostile::Console(m),
        name,
        backend,
        frontend,
    }
}

static CATALOGUE: [Entry; 22] = [
    blk(
        BlkHostile::DuplicateResponse,
        "blk.duplicate_response",
        "does each request's I/O, but answers every request after the first with \
         the response it gave before (a duplicate)",
        "the second copy names a request that is not outstanding: the device is \
         broken (\"response for id N, which is not outstanding\") and dropped",
    ),
    blk(
        BlkHostile::ResponseUnknownId,
        "blk.response_unknown_id",
        "does the I/O and answers with an id no request had (the request's id with \
         bit 12 flipped)",
        "the device is broken (\"response with unknown id\") and dropped; the request \
         fails",
    ),
    blk(
        BlkHostile::ResponseIdHighBits,
        "blk.response_id_high_bits",
        "does the I/O and answers with the request's id plus garbage in its upper 32 bits",
        "no request has that id: the device is broken (\"response with unknown id\") \
         and dropped; the request fails",
    ),
    blk(
        BlkHostile::WrongOperation,
        "blk.wrong_operation",
        "does the I/O and answers a read as a write (anything else as a read)",
        "the device is broken (\"response N has operation W, the request had R\") \
         and dropped; the data is not trusted",
    ),
    blk(
        BlkHostile::UnknownStatus,
        "blk.unknown_status",
        "does the I/O and answers with status 7",
        "the request fails and the device is broken (\"unknown status 7\") and dropped",
    ),
    blk(
        BlkHostile::RspProdOverrun,
        "blk.rsp_prod_overrun",
        "publishes rsp_prod a whole ring plus one past the requests, then stops serving",
        "the ring index is impossible: the device is broken (\"ring: ...\") without \
         reading a slot, and dropped",
    ),
    blk(
        BlkHostile::NeverAnswers,
        "blk.never_answers",
        "takes requests off the ring and never answers them",
        "the request times out (the built-in guest waits 10 s) and the device is \
         dropped; closing it does not hang",
    ),
    blk(
        BlkHostile::ClosingWithRequestsInFlight,
        "blk.closing_with_requests_in_flight",
        "switches to Closing (with an `error` node) at the first request, unanswered",
        "the request fails or times out and the device is dropped; closing it does \
         not hang",
    ),
    blk(
        BlkHostile::SectorsGarbage,
        "blk.sectors_garbage",
        "publishes sectors = \"12abc\" when connecting",
        "the connection is refused naming the key (\"backend key sectors: not a \
         number\"); no I/O is attempted",
    ),
    blk(
        BlkHostile::SectorSizeNotPowerOfTwo,
        "blk.sector_size_not_power_of_two",
        "publishes sector-size = 1000 when connecting",
        "the connection is refused naming the key (\"sector-size 1000 is not a power \
         of two\"); no I/O is attempted",
    ),
    net(
        NetHostile::TxIdOutOfRange,
        "net.tx_id_out_of_range",
        "sends each tx frame and answers it with id 0xffff",
        "the device is broken (\"tx response id 65535 out of range\") and dropped",
    ),
    net(
        NetHostile::TxRspProdOverrun,
        "net.tx_rsp_prod_overrun",
        "sends the first tx frames on and answers them, then publishes the tx rsp_prod \
         a whole ring plus one past them and stops serving tx",
        "the tx ring index is impossible: the device is broken (\"tx ring: ...\") and \
         dropped",
    ),
    net(
        NetHostile::RxPastPage,
        "net.rx_past_page",
        "answers every posted rx buffer with offset 4000 and 200 bytes (past the page)",
        "each such frame is dropped unread; after the frontend's limit of bad frames \
         in a row (32) the device is broken (\"bad rx responses in a row\") and dropped",
    ),
    net(
        NetHostile::RxEndlessChain,
        "net.rx_endless_chain",
        "answers every posted rx buffer with more_data set: a chain that never ends",
        "each chain is cut at the slot limit and dropped; after the limit of bad \
         frames in a row the device is broken and dropped",
    ),
    net(
        NetHostile::MacNotUnicast,
        "net.mac_not_unicast",
        "writes mac = ff:ff:ff:ff:ff:ff into the frontend's directory",
        "the connection is refused: the MAC must be unicast",
    ),
    net(
        NetHostile::MacMalformed,
        "net.mac_malformed",
        "writes mac = 00:16:3e:zz:00:01 into the frontend's directory",
        "the connection is refused naming the key (\"bad mac key: ...\")",
    ),
    net(
        NetHostile::RxBuffersHoarded,
        "net.rx_buffers_hoarded",
        "takes every posted rx buffer and never gives one back; frames for the guest \
         are dropped",
        "the device stays up: sending works, nothing is received, and closing it \
         does not hang",
    ),
    net(
        NetHostile::RxRspProdOverrun,
        "net.rx_rsp_prod_overrun",
        "answers the first posted rx buffer, then publishes the rx rsp_prod a whole ring \
         plus one past it and stops serving rx",
        "the rx ring index is impossible: the device is broken (\"rx ring: ...\") and \
         dropped",
    ),
    net(
        NetHostile::EventStorm,
        "net.event_storm",
        "serves the vif correctly and, while it is connected, also notifies the \
         frontend's rx port about 20 000 times a second with nothing new on the rings",
        "the vif keeps working; the spurious events are counted and the port served \
         less and less often (late EOI: examples/unikernel reports them at power-off), \
         so the storm does not keep the guest busy",
    ),
    con(
        ConsoleHostile::OutConsPastProd,
        "console.out_cons_past_prod",
        "after the guest's first output, moves out_cons 16 bytes past out_prod and \
         stops serving the ring",
        "the next console write fails with the bad indices; the guest says so and \
         carries on with CONSOLEIO_write",
    ),
    con(
        ConsoleHostile::InProdPastRing,
        "console.in_prod_past_ring",
        "after the guest's first output, moves in_prod 1025 bytes past in_cons and \
         notifies the guest",
        "the next console read fails with the bad indices (no byte handed out); the \
         guest says so and carries on with CONSOLEIO_write",
    ),
    con(
        ConsoleHostile::EventStorm,
        "console.event_storm",
        "serves the ring correctly and, from the guest's first output on, also \
         notifies the guest's console port about 20 000 times a second with nothing \
         new on the ring",
        "output and input keep working; the spurious events are counted and the port \
         served less and less often (late EOI: examples/unikernel reports them at \
         power-off), so the storm does not keep the guest busy",
    ),
];

impl Hostile {
    /// Every mode, in catalogue order (block, network, console).
    pub fn all() -> impl Iterator<Item = Hostile> {
        CATALOGUE.iter().map(|e| e.mode)
    }

    /// Every mode of one class.
    pub fn of_class(class: Class) -> impl Iterator<Item = Hostile> {
        Self::all().filter(move |h| h.class() == class)
    }

    fn entry(self) -> &'static Entry {
        // Every mode is in the catalogue (the `catalogue_is_complete` test).
        CATALOGUE
            .iter()
            .find(|e| e.mode == self)
            .unwrap_or(&CATALOGUE[0])
    }

    /// The stable name, e.g. `blk.duplicate_response`.
    pub fn name(self) -> &'static str {
        self.entry().name
    }

    /// What the backend does.
    pub fn backend(self) -> &'static str {
        self.entry().backend
    }

    /// What a correct frontend does.
    pub fn frontend(self) -> &'static str {
        self.entry().frontend
    }

    /// The device class it applies to.
    pub fn class(self) -> Class {
        match self {
            Hostile::Blk(_) => Class::Blk,
            Hostile::Net(_) => Class::Net,
            Hostile::Console(_) => Class::Console,
        }
    }

    /// The names of a class's modes, comma separated (for messages).
    pub fn names_of(class: Class) -> String {
        Self::of_class(class)
            .map(Hostile::name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Hostile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no mode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown hostile mode {name:?} (known: {known})")]
pub struct UnknownMode {
    /// The name given.
    pub name: String,
    /// The known names of the class the name's prefix names, or all of them.
    pub known: String,
}

impl FromStr for Hostile {
    type Err = UnknownMode;

    /// A mode by name; `-` and `_` are the same (`blk.never-answers`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let want = s.replace('-', "_");
        if let Some(e) = CATALOGUE.iter().find(|e| e.name == want) {
            return Ok(e.mode);
        }
        let class = [Class::Blk, Class::Net, Class::Console]
            .into_iter()
            .find(|c| want.starts_with(&format!("{}.", c.prefix())));
        let known = match class {
            Some(c) => Hostile::names_of(c),
            None => Hostile::all()
                .map(Hostile::name)
                .collect::<Vec<_>>()
                .join(", "),
        };
        Err(UnknownMode {
            name: s.to_string(),
            known,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_complete_and_names_are_unique() {
        let blk = [
            BlkHostile::DuplicateResponse,
            BlkHostile::ResponseUnknownId,
            BlkHostile::ResponseIdHighBits,
            BlkHostile::WrongOperation,
            BlkHostile::UnknownStatus,
            BlkHostile::RspProdOverrun,
            BlkHostile::NeverAnswers,
            BlkHostile::ClosingWithRequestsInFlight,
            BlkHostile::SectorsGarbage,
            BlkHostile::SectorSizeNotPowerOfTwo,
        ]
        .map(Hostile::Blk);
        let net = [
            NetHostile::TxIdOutOfRange,
            NetHostile::TxRspProdOverrun,
            NetHostile::RxPastPage,
            NetHostile::RxEndlessChain,
            NetHostile::MacNotUnicast,
            NetHostile::MacMalformed,
            NetHostile::RxBuffersHoarded,
            NetHostile::RxRspProdOverrun,
            NetHostile::EventStorm,
        ]
        .map(Hostile::Net);
        let con = [
            ConsoleHostile::OutConsPastProd,
            ConsoleHostile::InProdPastRing,
            ConsoleHostile::EventStorm,
        ]
        .map(Hostile::Console);
        let every: Vec<Hostile> = blk.into_iter().chain(net).chain(con).collect();
        assert_eq!(every, Hostile::all().collect::<Vec<_>>());
        for h in &every {
            assert_eq!(CATALOGUE.iter().filter(|e| e.mode == *h).count(), 1);
            assert!(h.name().starts_with(&format!("{}.", h.class().prefix())));
            assert_eq!(h.name().parse::<Hostile>(), Ok(*h));
            assert!(!h.backend().is_empty() && !h.frontend().is_empty());
        }
    }

    #[test]
    fn unknown_names_list_the_class_or_everything() {
        let e = "net.fancy".parse::<Hostile>().unwrap_err();
        assert!(e.known.contains("net.tx_id_out_of_range"), "{e}");
        assert!(!e.known.contains("blk."), "{e}");
        let e = "xyz".parse::<Hostile>().unwrap_err();
        assert!(
            e.known.contains("blk.") && e.known.contains("console."),
            "{e}"
        );
        assert!(!e.to_string().contains('\n'));
        assert_eq!(
            "console.in-prod-past-ring".parse(),
            Ok(Hostile::Console(ConsoleHostile::InProdPastRing))
        );
    }
}
