//! Secondary consoles: `device/console/N` (N ≥ 1) through the xenbus handshake.
//!
//! The primary console (number 0) comes from HVM parameters and is not on xenbus.
//! Further consoles are ordinary xenbus devices (Linux's `xenconsole` driver,
//! Mini-OS's `consfront.c`): the frontend grants a zeroed page holding a
//! `xencons_interface` to the backend, allocates an event channel for it, writes
//! `ring-ref` and `port` under its device node, and goes `Initialised`; once the
//! backend is `Connected` it goes `Connected` too.
//!
//! ```text
//!  guest                                     backend (dom0)
//!  start: backend, backend-id; Initialising
//!                                            InitWait
//!  grant page (rw) → ring-ref, alloc_unbound → port
//!  one transaction: ring-ref, port, state=Initialised
//!                                            maps ring-ref, binds port; Connected
//!  Connected                                 ... console traffic ...
//!  close(): Closing → backend Closing/Closed → Closed, end grant, close port
//! ```
//!
//! The ring page is the caller's (this crate never allocates behind its back) and is
//! handed back by [`SecondaryConsole::close`] once the grant has ended.

use core::fmt::Write as _;
use core::time::Duration;

use hypercall::gnttab::GrantTable;
use hypercall::{GrantRef, Platform, Port, SharedMem, Xen};
use xenbus::frontend::{BackendEvent, FrontendHandshake};
use xenbus::{Path, Store, XenbusState, Xenstore};

use crate::console::{Config, Console};

/// Why setting up or closing a secondary console failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The device number is not usable (0 is the primary console, which is not on
    /// xenbus).
    BadDevice {
        /// The device number given.
        devid: u32,
    },
    /// A xenstore operation or a handshake step failed.
    Xenbus(xenbus::Error),
    /// Granting the ring page failed, or ending the grant did (`StillMapped`: the page
    /// must not be reused).
    Grant(hypercall::gnttab::Error),
    /// The ring page has no guest frame number (not guest memory).
    NoGfn,
    /// Allocating the event channel failed.
    Hypercall(hypercall::XenError),
    /// The console refused the page.
    Console(crate::Error),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::BadDevice { devid } => write!(f, "console device {devid} not usable"),
            Error::Xenbus(e) => write!(f, "xenstore: {e}"),
            Error::Grant(e) => write!(f, "grant table: {e}"),
            Error::NoGfn => f.write_str("the ring page is not guest memory"),
            Error::Hypercall(e) => write!(f, "hypercall failed: {e}"),
            Error::Console(e) => write!(f, "{e}"),
        }
    }
}

impl From<xenbus::Error> for Error {
    fn from(e: xenbus::Error) -> Self {
        Error::Xenbus(e)
    }
}

impl From<hypercall::gnttab::Error> for Error {
    fn from(e: hypercall::gnttab::Error) -> Self {
        Error::Grant(e)
    }
}

impl From<hypercall::XenError> for Error {
    fn from(e: hypercall::XenError) -> Self {
        Error::Hypercall(e)
    }
}

impl From<crate::Error> for Error {
    fn from(e: crate::Error) -> Self {
        Error::Console(e)
    }
}

/// A connected secondary console.
///
/// Dropping it without [`SecondaryConsole::close`] still closes its event channel
/// and ends the ring page's grant (unless the backend still maps it: the ref then
/// stays in use and the page must not be reused, XSA-396); it cannot reach
/// xenstore, so the device is left for the backend to notice.
#[derive(Debug)]
pub struct SecondaryConsole<'g, P: Platform, const N: usize> {
    console: Console<P>,
    handshake: FrontendHandshake,
    gnttab: &'g GrantTable<N>,
    page: SharedMem<'g>,
    gref: GrantRef,
    devid: u32,
    /// Grant ended and port closed (by `close`).
    released: bool,
}

/// Things set up so far, undone if a later step fails.
struct Partial {
    gref: Option<GrantRef>,
    port: Option<Port>,
}

impl<'g, P: Platform, const N: usize> SecondaryConsole<'g, P, N> {
    /// Connects console `devid` (≥ 1) at `device/console/<devid>`, using `page` (one
    /// guest-owned page, borrowed for the console's life, e.g. from a
    /// `SharedPages::alloc(&platform, 1)` the caller keeps and frees after the
    /// console) as its ring. Each handshake step waits at most `timeout`.
    ///
    /// On failure the grant and port are released again where possible; the page is
    /// the caller's either way, but must not be reused if the error is
    /// [`Error::Grant`]`(StillMapped)`.
    pub fn connect<Q: Platform>(
        xs: &mut Xenstore<Q>,
        gnttab: &'g GrantTable<N>,
        platform: P,
        devid: u32,
        page: SharedMem<'g>,
        config: Config,
        timeout: Duration,
    ) -> Result<Self, Error> {
        if devid == 0 {
            return Err(Error::BadDevice { devid });
        }
        let mut node = heapless::String::<32>::new();
        write!(node, "device/console/{devid}").map_err(|_| Error::BadDevice { devid })?;
        // Built in place (`reset`): the handshake's paths are not copied
        // through this frame (docs/stack.md).
        let mut hs = FrontendHandshake::unset();
        hs.reset(&node)?;
        hs.start(xs)?;
        // Nothing granted yet: on failure just go Closed (drops the watch too).
        let ready = hs
            .wait_for_backend(xs, timeout)
            .map_err(Error::from)
            .and_then(|()| page.page_gfn(&platform, 0).ok_or(Error::NoGfn));
        let gfn = match ready {
            Ok(gfn) => gfn,
            Err(e) => {
                let _ = hs.closed(xs);
                return Err(e);
            }
        };
        let backend = hs.backend_id();
        page.fill(0, page.len(), 0);
        let mut partial = Partial {
            gref: None,
            port: None,
        };
        let r = (|| -> Result<(Console<P>, GrantRef), Error> {
            let gref = gnttab.grant_access(backend, gfn, false)?;
            partial.gref = Some(gref);
            let port = Xen(&platform).evtchn_alloc_unbound(backend)?;
            partial.port = Some(port);
            hs.publish(xs, XenbusState::Initialised, |tx, node| {
                tx.write_u32(&Path::join(node, "ring-ref")?, gref.0)?;
                tx.write_u32(&Path::join(node, "port")?, port.0)
            })?;
            hs.wait_connected(xs, timeout)?;
            let console = Console::new(platform, gfn, port, config)?;
            Ok((console, gref))
        })();
        match r {
            Ok((console, gref)) => Ok(SecondaryConsole {
                console,
                handshake: hs,
                gnttab,
                page,
                gref,
                devid,
                released: false,
            }),
            Err(e) => {
                // Best effort: tell the backend, then release what we set up. A grant
                // the backend still maps stays in use (the page must not be reused).
                let _ = hs.close(xs, timeout);
                if let Some(port) = partial.port {
                    let _ = Xen(xs.platform()).evtchn_close(port);
                }
                if let Some(gref) = partial.gref {
                    if let Err(ge) = gnttab.end_access(gref) {
                        return Err(Error::Grant(ge));
                    }
                }
                Err(e)
            }
        }
    }

    /// The console (write, read, flush ...).
    pub fn console(&mut self) -> &mut Console<P> {
        &mut self.console
    }

    /// The device number.
    pub fn devid(&self) -> u32 {
        self.devid
    }

    /// The grant reference of the ring page.
    pub fn grant_ref(&self) -> GrantRef {
        self.gref
    }

    /// Whether the backend started closing (checked without waiting). Once it has,
    /// stop using the console and call [`SecondaryConsole::close`].
    pub fn backend_closing<Q: Platform>(&mut self, xs: &mut Xenstore<Q>) -> Result<bool, Error> {
        Ok(matches!(
            self.handshake.poll_backend(xs)?,
            Some(BackendEvent::Closing(_))
        ))
    }

    /// Closes the device: `Closing`, waits (up to `timeout`) for the backend to let go,
    /// `Closed`, closes the event channel and ends the grant. Returns the ring page for
    /// reuse. If the backend still maps the page, the error is
    /// [`Error::Grant`]`(StillMapped)` and the page must not be reused.
    pub fn close<Q: Platform>(
        mut self,
        xs: &mut Xenstore<Q>,
        timeout: Duration,
    ) -> Result<SharedMem<'g>, Error> {
        let closed = self.handshake.close(xs, timeout);
        self.release()?;
        closed?;
        Ok(self.page)
    }

    /// Closes the event channel and ends the grant (once).
    fn release(&mut self) -> Result<(), Error> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        let _ = Xen(self.console.platform()).evtchn_close(self.console.port());
        self.gnttab.end_access(self.gref)?;
        Ok(())
    }
}

impl<P: Platform, const N: usize> Drop for SecondaryConsole<'_, P, N> {
    fn drop(&mut self) {
        let _ = self.release();
    }
}
