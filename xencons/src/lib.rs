//! The Xen PV console, guest side (xenkit): the `xencons_interface` ring frontend,
//! the early console (`CONSOLEIO_write` with a debug-port fallback), and
//! `core::fmt::Write`. `no_std`, no heap, no `unsafe`.
//!
//! ```text
//!  your OS / unikernel:  write!(console, ...)    console.read_timeout(..)
//!         │ before the ring                        │ after
//!   EarlyConsole ─ CONSOLEIO_write ─▶ Xen log     Console<P>
//!         └─(fails: non-debug Xen)─▶ DebugPort      │ out[2048] ──▶ backend (xenconsoled,
//!                                    (port 0xE9)    │ in[1024]  ◀──  shim-hv console.rs)
//!                                                   │ + event channel
//!                        HVM_PARAM_CONSOLE_PFN / HVM_PARAM_CONSOLE_EVTCHN (primary)
//!                        device/console/N: ring-ref, port via xenbus (secondary)
//!                                   │
//!               hypercall: SharedMem (atomics, volatile copies) · Xen<H> · Platform
//! ```
//!
//! Rules the [`Console`] keeps (docs/hostile-input.md rows 36/37, C1, C4):
//! - Output is never dropped while the backend lives: a writer that finds the ring
//!   full notifies the backend and waits through [`hypercall::Platform::wait`].
//! - "Gone" is defined: `out_cons` did not move for [`Config::stall_timeout`] while the
//!   ring was full ([`Error::BackendGone`]), or the backend set
//!   `connection = XENCONSOLE_DISCONNECTED` ([`Error::Disconnected`]). The error says
//!   how many bytes went out ([`WriteError::written`]).
//! - The backend's indices are checked on every use: `out_prod - out_cons > 2048`
//!   (which includes `out_cons` ahead of `out_prod`) or `in_prod - in_cons > 1024`
//!   fails the console for good ([`Error::Failed`] with a [`Fault`]); never a panic.
//! - Bytes are copied out of the page once, through [`hypercall::SharedMem`].
//!
//! # Example
//!
//! ```
//! use core::fmt::Write;
//! use core::time::Duration;
//! use hypercall::Platform;
//! use xencons::{Config, Console, DebugPort, EarlyConsole, EarlyPath, Error};
//!
//! /// Boot-time output, then the ring, then an echo loop.
//! fn run<P: Platform>(platform: &P, e9: impl DebugPort) -> Result<(), Error> {
//!     // Before the ring: CONSOLEIO_write, or the debug port on a non-debug Xen.
//!     let mut early = EarlyConsole::new(platform, e9);
//!     let _ = writeln!(early, "booting");
//!     if early.path() == EarlyPath::DebugPort {
//!         // this Xen refused CONSOLEIO_write
//!     }
//!
//!     // The primary console from the HVM parameters.
//!     let config = Config::default().with_stall_timeout(Duration::from_secs(2));
//!     let mut con = Console::from_hvm_params_with(platform, config)?;
//!     if writeln!(con, "hello from the ring").is_err() {
//!         // fmt::Write can only say fmt::Error; the typed error is kept:
//!         let e = con.take_error();
//!         let _ = e;
//!     }
//!     con.write(b"raw bytes\n").map_err(|e| e.error)?;
//!
//!     let mut buf = [0u8; 64];
//!     match con.read_timeout(&mut buf, Duration::from_secs(1)) {
//!         Ok(n) => con.write(&buf[..n]).map_err(|e| e.error)?,
//!         Err(Error::Timeout) => {}
//!         Err(e) => return Err(e),
//!     }
//!     con.flush(Duration::from_secs(1))
//! }
//!
//! // In a PVH kernel on x86_64 the fallback is the real port:
//! // let e9 = unsafe { hypercall::arch::x86_64::DebugConsolePort::new() };
//! // run(&platform, e9)
//! ```
//!
//! Secondary consoles (`device/console/N`, N ≥ 1) connect through the xenbus
//! handshake: see [`secondary`].
#![no_std]
#![cfg_attr(not(test), forbid(unsafe_code))]
#![cfg_attr(test, deny(unsafe_code))]

mod console;
mod early;
mod error;
mod ring;
pub mod secondary;

#[cfg(test)]
mod tests;
// Not under Miri: each handshake through the conformance kit's store server costs
// Miri about half a CPU-minute (docs/miri.md); the ring and grant code they use is
// run there by `tests` and hypercall's tests.
#[cfg(all(test, not(miri)))]
mod tests_secondary;

pub use console::{Config, Console, Stats, DEFAULT_STALL_TIMEOUT};
pub use early::{DebugPort, EarlyConsole, EarlyPath, NoDebugPort};
pub use error::{Error, WriteError};
pub use ring::{Fault, IN_SIZE, OUT_SIZE};
