//! PV console page (`io/console.h`) and `CONSOLEIO_*` (`xen.h`).
//!
//! ```text
//! struct xencons_interface {
//!     char in[1024];           // backend -> guest
//!     char out[2048];          // guest -> backend
//!     XENCONS_RING_IDX in_cons, in_prod;
//!     XENCONS_RING_IDX out_cons, out_prod;
//!     uint8_t connection;      // XENCONSOLE_{CONNECTED,DISCONNECTED}
//! };
//! ```
//! Indices are free-running `u32`s masked with the ring size.

/// `in[]`: input from the backend (keyboard).
pub const IN: usize = 0;
/// Size of `in[]`.
pub const IN_SIZE: usize = 1024;
/// `out[]`: output to the backend.
pub const OUT: usize = 1024;
/// Size of `out[]`.
pub const OUT_SIZE: usize = 2048;
/// `in_cons` (guest writes)
pub const IN_CONS: usize = 3072;
/// `in_prod` (backend writes)
pub const IN_PROD: usize = 3076;
/// `out_cons` (backend writes)
pub const OUT_CONS: usize = 3080;
/// `out_prod` (guest writes)
pub const OUT_PROD: usize = 3084;
/// `connection` (u8)
pub const CONNECTION: usize = 3088;

/// `XENCONSOLE_CONNECTED`
pub const CONNECTED: u8 = 0;
/// `XENCONSOLE_DISCONNECTED`
pub const DISCONNECTED: u8 = 1;

/// `CONSOLEIO_write`: `console_io(CONSOLEIO_write, count, buffer)`.
pub const CONSOLEIO_WRITE: u32 = 0;
/// `CONSOLEIO_read`: `console_io(CONSOLEIO_read, count, buffer)`.
pub const CONSOLEIO_READ: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_match_console_h() {
        assert_eq!((IN, IN_SIZE, OUT, OUT_SIZE), (0, 1024, 1024, 2048));
        assert_eq!(IN_CONS, IN_SIZE + OUT_SIZE);
        assert_eq!(
            (IN_CONS, IN_PROD, OUT_CONS, OUT_PROD),
            (3072, 3076, 3080, 3084)
        );
        assert_eq!(CONNECTION, 3088);
        assert_eq!((CONNECTED, DISCONNECTED), (0, 1));
        assert_eq!((CONSOLEIO_WRITE, CONSOLEIO_READ), (0, 1));
        assert!(IN_SIZE.is_power_of_two() && OUT_SIZE.is_power_of_two());
    }
}
