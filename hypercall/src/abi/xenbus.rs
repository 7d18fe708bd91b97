//! The xenbus device state machine values (`io/xenbus.h`).

/// `enum xenbus_state`, as written (in decimal) to a device's `state` node.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum XenbusState {
    /// `XenbusStateUnknown`
    Unknown = 0,
    /// `XenbusStateInitialising`
    Initialising = 1,
    /// `XenbusStateInitWait`: backend waits for the frontend's details.
    InitWait = 2,
    /// `XenbusStateInitialised`: frontend published its details.
    Initialised = 3,
    /// `XenbusStateConnected`
    Connected = 4,
    /// `XenbusStateClosing`
    Closing = 5,
    /// `XenbusStateClosed`
    Closed = 6,
    /// `XenbusStateReconfiguring`
    Reconfiguring = 7,
    /// `XenbusStateReconfigured`
    Reconfigured = 8,
}

/// A `state` value outside `0..=8`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct UnknownXenbusState(pub u32);

impl TryFrom<u32> for XenbusState {
    type Error = UnknownXenbusState;

    fn try_from(v: u32) -> Result<Self, Self::Error> {
        Ok(match v {
            0 => Self::Unknown,
            1 => Self::Initialising,
            2 => Self::InitWait,
            3 => Self::Initialised,
            4 => Self::Connected,
            5 => Self::Closing,
            6 => Self::Closed,
            7 => Self::Reconfiguring,
            8 => Self::Reconfigured,
            _ => return Err(UnknownXenbusState(v)),
        })
    }
}

impl From<XenbusState> for u32 {
    fn from(s: XenbusState) -> u32 {
        s as u32
    }
}

impl XenbusState {
    /// The header's name without the `XenbusState` prefix (for logs).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unknown => "Unknown",
            Self::Initialising => "Initialising",
            Self::InitWait => "InitWait",
            Self::Initialised => "Initialised",
            Self::Connected => "Connected",
            Self::Closing => "Closing",
            Self::Closed => "Closed",
            Self::Reconfiguring => "Reconfiguring",
            Self::Reconfigured => "Reconfigured",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_xenbus_h_and_round_trip() {
        let all = [
            (XenbusState::Unknown, 0),
            (XenbusState::Initialising, 1),
            (XenbusState::InitWait, 2),
            (XenbusState::Initialised, 3),
            (XenbusState::Connected, 4),
            (XenbusState::Closing, 5),
            (XenbusState::Closed, 6),
            (XenbusState::Reconfiguring, 7),
            (XenbusState::Reconfigured, 8),
        ];
        for (s, v) in all {
            assert_eq!(u32::from(s), v);
            assert_eq!(XenbusState::try_from(v), Ok(s));
        }
        assert_eq!(XenbusState::try_from(9), Err(UnknownXenbusState(9)));
        assert_eq!(
            XenbusState::try_from(u32::MAX),
            Err(UnknownXenbusState(u32::MAX))
        );
    }
}
