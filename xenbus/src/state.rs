//! `enum xenbus_state` (`io/xenbus.h`): the state each end of a split device
//! publishes in its `state` node.

/// The XenbusState values of `io/xenbus.h`, written as decimal strings in `state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum XenbusState {
    /// `XenbusStateUnknown` (also what a missing `state` node reads as).
    Unknown = 0,
    /// `XenbusStateInitialising`
    Initialising = 1,
    /// `XenbusStateInitWait`: the backend is ready for the frontend's keys.
    InitWait = 2,
    /// `XenbusStateInitialised`: the frontend published its keys.
    Initialised = 3,
    /// `XenbusStateConnected`
    Connected = 4,
    /// `XenbusStateClosing`: the device is being torn down.
    Closing = 5,
    /// `XenbusStateClosed`
    Closed = 6,
    /// `XenbusStateReconfiguring`
    Reconfiguring = 7,
    /// `XenbusStateReconfigured`
    Reconfigured = 8,
}

impl XenbusState {
    /// The state with number `n`, if there is one.
    pub fn from_u32(n: u32) -> Option<XenbusState> {
        Some(match n {
            0 => XenbusState::Unknown,
            1 => XenbusState::Initialising,
            2 => XenbusState::InitWait,
            3 => XenbusState::Initialised,
            4 => XenbusState::Connected,
            5 => XenbusState::Closing,
            6 => XenbusState::Closed,
            7 => XenbusState::Reconfiguring,
            8 => XenbusState::Reconfigured,
            _ => return None,
        })
    }

    /// The decimal string written to a `state` node.
    pub fn as_str(self) -> &'static str {
        ["0", "1", "2", "3", "4", "5", "6", "7", "8"][self as usize]
    }

    /// `Closing` or `Closed`: the other end is going away.
    pub fn is_closing(self) -> bool {
        matches!(self, XenbusState::Closing | XenbusState::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_io_xenbus_h() {
        let expected = [
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
        for (s, n) in expected {
            assert_eq!(s as u32, n);
            assert_eq!(XenbusState::from_u32(n), Some(s));
            assert_eq!(s.as_str().parse::<u32>().unwrap(), n);
        }
        assert_eq!(XenbusState::from_u32(9), None);
    }
}
