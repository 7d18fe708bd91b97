//! The address a toolstack gave a vif: xl writes a vif's `ip=` setting (one or
//! more addresses, separated by spaces) to the backend's `ip` node. Linux guests
//! ignore it (they run DHCP or their own configuration); a unikernel without either
//! can take its address from there.

use core::fmt::Write as _;
use core::net::Ipv4Addr;

use xenbus::{Path, Store};

/// The first IPv4 address in `device/vif/<index>`'s backend `ip` node, if the
/// toolstack wrote one. Anything unreadable, absent or unparsable is `None`: the
/// node is advisory and the caller picks another source.
pub fn toolstack_ipv4<S: Store>(xs: &mut S, index: u32) -> Option<Ipv4Addr> {
    let mut node: heapless::String<40> = heapless::String::new();
    write!(node, "device/vif/{index}/backend").ok()?;
    let mut b = [0u8; xenbus::PATH_MAX];
    let backend = Path::new(xs.read_str(&node, &mut b).ok()?).ok()?;
    let mut ip = [0u8; 256];
    first_ipv4(
        xs.read_str(&Path::join(&backend, "ip").ok()?, &mut ip)
            .ok()?,
    )
}

/// The first word of `text` (split at ASCII white space) that is an IPv4 address,
/// alone or with a `/prefix` (which is not returned).
pub fn first_ipv4(text: &str) -> Option<Ipv4Addr> {
    text.split_ascii_whitespace().find_map(|w| {
        w.split_once('/')
            .map_or(w, |(a, _)| a)
            .parse::<Ipv4Addr>()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_ipv4_word_is_taken() {
        assert_eq!(first_ipv4("10.0.0.2"), Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(
            first_ipv4("  fe80::1 10.1.2.3\t10.9.9.9 "),
            Some(Ipv4Addr::new(10, 1, 2, 3))
        );
        assert_eq!(first_ipv4(""), None);
        assert_eq!(first_ipv4("10.0.0.256 10.0.0 x"), None);
        assert_eq!(first_ipv4("10.0.0.2/24"), Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(first_ipv4("/24 10.0.0.7"), Some(Ipv4Addr::new(10, 0, 0, 7)));
    }
}
