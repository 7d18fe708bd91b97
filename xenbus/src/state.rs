//! `enum xenbus_state` (`io/xenbus.h`) lives in `hypercall::abi::xenbus`; these are the
//! node-level helpers this crate needs.

pub use hypercall::abi::xenbus::XenbusState;

/// The decimal string written to a `state` node.
pub(crate) fn state_str(s: XenbusState) -> &'static str {
    ["0", "1", "2", "3", "4", "5", "6", "7", "8"]
        .get(s as usize)
        .copied()
        .unwrap_or("0")
}

/// `Closing` or `Closed`: the other end is going away.
pub(crate) fn is_closing(s: XenbusState) -> bool {
    matches!(s, XenbusState::Closing | XenbusState::Closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_the_numbers() {
        for n in 0..=8u32 {
            let s = XenbusState::try_from(n).unwrap();
            assert_eq!(state_str(s).parse::<u32>().unwrap(), n);
        }
        assert!(is_closing(XenbusState::Closed));
        assert!(!is_closing(XenbusState::Connected));
    }
}
