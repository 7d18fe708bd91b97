//! shim-hv's device backends: the dom0 side of Xen's split drivers, run against
//! the xen model ([`xen_model::Hypervisor`]) and its xenstored.
//!
//! - [`xenbus`]: the backend half of the xenbus handshake, shared by every device
//!   (backend directory, state machine, event channel, grant mappings);
//! - [`blk`]: blkback over a file or block device (`blkif.h`);
//! - [`net`]: netback (`netif.h`), its frames switched by a [`bridge`], which can
//!   reach the host through a [`tap`] device;
//! - [`console`]: the console backend (`console.h`) with history, ptys and
//!   clients, and [`console::channel`]: named secondary consoles (`xen-pv-channel(7)`);
//! - [`hostile`]: modes in which a backend misbehaves on purpose, to test a real
//!   guest's frontends (docs/hostile-mode.md).
//!
//! Each backend treats everything the guest writes (rings, xenstore nodes,
//! granted pages) as hostile: see docs/hostile-input.md.

pub mod blk;
pub mod bridge;
pub mod console;
mod file_type;
pub mod hostile;
pub mod net;
mod pool;
pub mod tap;
pub mod xenbus;
