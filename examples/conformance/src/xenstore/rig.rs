//! [`Device`]: a device's frontend and backend directories, made as a toolstack
//! (libxl) makes them, and the moves a backend makes in them.

use std::cell::RefCell;
use std::rc::Rc;

use hypercall::abi::xenbus::XenbusState;

use super::tree::{Perm, READ};
use super::StoreServer;

/// One device in the store, as a toolstack creates it (see
/// [`StoreServer::add_device`]):
///
/// ```text
/// /local/domain/<guest>/device/<class>/<id>          owner guest, backend may read
///     backend = /local/domain/<be>/backend/<class>/<guest>/<id>
///     backend-id = <be>    state = 1 (Initialising)
/// /local/domain/<be>/backend/<class>/<guest>/<id>    owner backend, guest may read
///     frontend = /local/domain/<guest>/device/<class>/<id>
///     frontend-id = <guest>    online = 1    state = 1 (Initialising)
/// ```
///
/// Every write here is the toolstack's or the backend's (privileged, outside
/// transactions) and fires the guest's watches. A backend peer adds its own keys
/// ([`Device::set_backend_key`]) and moves its state ([`Device::set_backend_state`]);
/// it reads what the frontend published with [`Device::frontend_key`] and
/// [`Device::frontend_state`].
#[derive(Clone)]
pub struct Device {
    server: StoreServer,
    class: String,
    id: u32,
    backend_id: u16,
    frontend: String,
    backend: String,
    /// What was read of the frontend's and backend's keys since the tree last
    /// changed (a peer looks at `state` every turn; see [`Device::frontend_key`]).
    memo: Rc<RefCell<Memo>>,
}

/// Values read at one tree generation ([`StoreServer::generation`]).
#[derive(Default)]
struct Memo {
    gen: Option<u64>,
    /// (absolute path, value).
    values: Vec<(String, Option<Vec<u8>>)>,
}

impl core::fmt::Debug for Device {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Device")
            .field("frontend", &self.frontend)
            .field("backend", &self.backend)
            .finish()
    }
}

impl Device {
    pub(super) fn create(server: &StoreServer, class: &str, id: u32, backend_id: u16) -> Device {
        let guest = server.domid();
        let frontend = format!("/local/domain/{guest}/device/{class}/{id}");
        let backend = format!("/local/domain/{backend_id}/backend/{class}/{guest}/{id}");
        let fe_perms = vec![
            Perm {
                domid: guest,
                access: 0,
            },
            Perm {
                domid: backend_id,
                access: READ,
            },
        ];
        let be_perms = vec![
            Perm {
                domid: backend_id,
                access: 0,
            },
            Perm {
                domid: guest,
                access: READ,
            },
        ];
        // The backend's parents are the backend domain's, not readable by the guest
        // (so a removed backend directory reads as EACCES, as on Xen).
        server.put_perms_raw(
            &format!("/local/domain/{backend_id}"),
            vec![Perm {
                domid: backend_id,
                access: 0,
            }],
        );
        server.put_perms_raw(&backend, be_perms.clone());
        for (k, v) in [
            ("frontend", frontend.clone()),
            ("frontend-id", guest.to_string()),
            ("online", "1".into()),
            ("state", "1".into()),
        ] {
            server.put_perms_raw(&format!("{backend}/{k}"), be_perms.clone());
            server.write(&format!("{backend}/{k}"), v.as_bytes());
        }
        server.put_perms_raw(&frontend, fe_perms.clone());
        for (k, v) in [
            ("backend", backend.clone()),
            ("backend-id", backend_id.to_string()),
            ("state", "1".into()),
        ] {
            server.put_perms_raw(&format!("{frontend}/{k}"), fe_perms.clone());
            server.write(&format!("{frontend}/{k}"), v.as_bytes());
        }
        Device {
            server: server.clone(),
            class: class.to_string(),
            id,
            backend_id,
            frontend,
            backend,
            memo: Rc::default(),
        }
    }

    /// The value at `dir/key`, read once per tree generation: a peer reads its
    /// frontend's `state` on every turn, and a whole read (path, lookup, copy)
    /// each time was a good part of a connect's cost under Miri (docs/miri.md).
    /// The value is the one in the tree: the generation moves on every change.
    fn memo_read(&self, dir: &str, key: &str) -> Option<Vec<u8>> {
        let gen = self.server.generation();
        let mut m = self.memo.borrow_mut();
        if m.gen != Some(gen) {
            m.gen = Some(gen);
            m.values.clear();
        }
        let mut path = String::with_capacity(dir.len() + 1 + key.len());
        path.push_str(dir);
        path.push('/');
        path.push_str(key);
        if let Some((_, v)) = m.values.iter().find(|(p, _)| *p == path) {
            return v.clone();
        }
        let v = self.server.read(&path);
        m.values.push((path, v.clone()));
        v
    }

    /// The frontend's node relative to the guest's home, `device/<class>/<id>` (what a
    /// driver is given, e.g. `FrontendHandshake::new`).
    pub fn node(&self) -> String {
        format!("device/{}/{}", self.class, self.id)
    }

    /// The frontend's absolute path.
    pub fn frontend_path(&self) -> &str {
        &self.frontend
    }

    /// The backend's absolute path.
    pub fn backend_path(&self) -> &str {
        &self.backend
    }

    /// The device id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The backend's domain.
    pub fn backend_id(&self) -> u16 {
        self.backend_id
    }

    /// The server the directories live in.
    pub fn server(&self) -> &StoreServer {
        &self.server
    }

    /// Writes `<backend>/state` (as a decimal).
    pub fn set_backend_state(&self, state: XenbusState) {
        self.set_backend_key("state", (u32::from(state)).to_string().as_bytes());
    }

    /// The backend's state (`None` if missing or not a state).
    pub fn backend_state(&self) -> Option<XenbusState> {
        parse_state(self.backend_key("state")?)
    }

    /// Writes `<backend>/<key>` (any bytes; creates the node with the backend's
    /// permissions).
    pub fn set_backend_key(&self, key: &str, value: &[u8]) {
        let path = format!("{}/{key}", self.backend);
        if !self.server.exists(&path) {
            let perms = self.server.perms_raw(&self.backend);
            if let Some(perms) = perms {
                self.server.put_perms_raw(&path, perms);
            }
        }
        self.server.write(&path, value);
    }

    /// `<backend>/<key>`.
    pub fn backend_key(&self, key: &str) -> Option<Vec<u8>> {
        self.memo_read(&self.backend, key)
    }

    /// `<frontend>/<key>`: what the driver published.
    pub fn frontend_key(&self, key: &str) -> Option<Vec<u8>> {
        self.memo_read(&self.frontend, key)
    }

    /// `<frontend>/<key>` as text (lossy), for evidence.
    pub fn frontend_str(&self, key: &str) -> Option<String> {
        self.frontend_key(key)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// A decimal `<frontend>/<key>` (`None` if missing or not a plain decimal).
    pub fn frontend_u64(&self, key: &str) -> Option<u64> {
        let v = self.frontend_key(key)?;
        if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(&v).ok()?.parse().ok()
    }

    /// The frontend's state (`None` if missing or not a state).
    pub fn frontend_state(&self) -> Option<XenbusState> {
        parse_state(self.frontend_key("state")?)
    }

    /// Removes the backend's whole directory (the frontend then reads `EACCES`
    /// under it, as on Xen).
    pub fn remove_backend(&self) -> bool {
        self.server.remove(&self.backend)
    }

    /// Removes the frontend's whole directory (as a toolstack does after the device
    /// is gone).
    pub fn remove_frontend(&self) -> bool {
        self.server.remove(&self.frontend)
    }
}

fn parse_state(v: Vec<u8>) -> Option<XenbusState> {
    if v.is_empty() || v.len() > 10 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u32 = std::str::from_utf8(&v).ok()?.parse().ok()?;
    XenbusState::try_from(n).ok()
}
