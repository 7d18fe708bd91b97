//! In-process clients for shim-hv's toolstack and backends.
//!
//! Each call is encoded as the wire request and handled by the same engine as guest and
//! socket requests, so local callers get exactly the semantics guests get.

use super::{ConnId, Errno, Error, Message, Perm, TxId, WatchEvent, Xenstored};
use hypercall::abi::xs_wire::{msg, MsgHeader};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bound on restarts of a paged directory listing whose node keeps changing.
const DIRECTORY_PART_RESTARTS: usize = 16;

/// An in-process connection acting as one domain. Dropping it ends its watches and
/// transactions.
pub struct LocalClient {
    xs: Arc<Xenstored>,
    conn: ConnId,
    domid: u16,
    events: Mutex<Option<Receiver<WatchEvent>>>,
    next_req: AtomicU32,
    lost: Arc<AtomicU64>,
}

impl std::fmt::Debug for LocalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalClient")
            .field("conn", &self.conn)
            .field("domid", &self.domid)
            .finish_non_exhaustive()
    }
}

fn nul_joined(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(p);
        v.push(0);
    }
    v
}

fn split_list(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

impl LocalClient {
    pub(crate) fn new(
        xs: Arc<Xenstored>,
        conn: ConnId,
        domid: u16,
        events: Option<Receiver<WatchEvent>>,
        lost: Arc<AtomicU64>,
    ) -> Self {
        Self {
            xs,
            conn,
            domid,
            events: Mutex::new(events),
            next_req: AtomicU32::new(1),
            lost,
        }
    }

    /// Watch events dropped because this client's event queue was full (it did not
    /// read them in time); the first loss is also logged. Non-zero means watches may
    /// have been missed: re-read what they cover.
    pub fn events_lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// The domain this client acts as.
    pub fn domid(&self) -> u16 {
        self.domid
    }

    /// This client's connection id (for [`Xenstored::handle`]).
    pub fn conn_id(&self) -> ConnId {
        self.conn
    }

    /// Sends a raw request (any type, any payload) and returns the raw reply.
    pub fn request(&self, ty: u32, tx: TxId, payload: &[u8]) -> Message {
        let hdr = MsgHeader {
            ty,
            req_id: self.next_req.fetch_add(1, Ordering::Relaxed),
            tx_id: tx.0,
            len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
        };
        self.xs.handle(self.conn, hdr, payload)
    }

    fn call(
        &self,
        op: &'static str,
        ty: u32,
        tx: TxId,
        what: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let reply = self.request(ty, tx, payload);
        if reply.hdr.ty == msg::ERROR {
            let name = reply.payload.strip_suffix(&[0]).unwrap_or(&reply.payload);
            let errno = Errno::from_name(name).ok_or_else(|| Error::BadReply {
                op,
                detail: format!("unknown error {:?}", String::from_utf8_lossy(name)),
            })?;
            return Err(Error::Xs {
                op,
                path: what.to_string(),
                errno,
            });
        }
        if reply.hdr.ty != ty {
            return Err(Error::BadReply {
                op,
                detail: format!("reply type {}", reply.hdr.ty),
            });
        }
        Ok(reply.payload)
    }

    /// Reads a node's value.
    pub fn read(&self, tx: TxId, path: &str) -> Result<Vec<u8>, Error> {
        self.call("read", msg::READ, tx, path, &nul_joined(&[path.as_bytes()]))
    }

    /// Writes a node's value (creating it and missing parents).
    pub fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<(), Error> {
        let mut p = nul_joined(&[path.as_bytes()]);
        p.extend_from_slice(value);
        self.call("write", msg::WRITE, tx, path, &p).map(drop)
    }

    /// Creates a node (and missing parents) if it does not exist.
    pub fn mkdir(&self, tx: TxId, path: &str) -> Result<(), Error> {
        self.call(
            "mkdir",
            msg::MKDIR,
            tx,
            path,
            &nul_joined(&[path.as_bytes()]),
        )
        .map(drop)
    }

    /// Removes a node and everything below it.
    pub fn rm(&self, tx: TxId, path: &str) -> Result<(), Error> {
        self.call("rm", msg::RM, tx, path, &nul_joined(&[path.as_bytes()]))
            .map(drop)
    }

    /// Lists a node's children (paged with DIRECTORY_PART when the list is larger than
    /// one message, as libxenstore does).
    pub fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>, Error> {
        match self.call(
            "directory",
            msg::DIRECTORY,
            tx,
            path,
            &nul_joined(&[path.as_bytes()]),
        ) {
            Ok(list) => Ok(split_list(&list)),
            Err(e) if e.errno() == Some(Errno::E2BIG) => self.directory_part(tx, path),
            Err(e) => Err(e),
        }
    }

    fn directory_part(&self, tx: TxId, path: &str) -> Result<Vec<String>, Error> {
        'restart: for _ in 0..DIRECTORY_PART_RESTARTS {
            let mut all = Vec::new();
            let mut gen: Option<Vec<u8>> = None;
            loop {
                let off = all.len().to_string();
                let part = self.call(
                    "directory",
                    msg::DIRECTORY_PART,
                    tx,
                    path,
                    &nul_joined(&[path.as_bytes(), off.as_bytes()]),
                )?;
                let nul = part
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or_else(|| Error::BadReply {
                        op: "directory",
                        detail: "no generation".into(),
                    })?;
                let (g, body) = (
                    part.get(..nul).unwrap_or(&[]),
                    part.get(nul + 1..).unwrap_or(&[]),
                );
                match &gen {
                    Some(prev) if prev.as_slice() != g => continue 'restart,
                    Some(_) => {}
                    None => gen = Some(g.to_vec()),
                }
                all.extend_from_slice(body);
                // The last part ends with an extra NUL (an empty name).
                if body.len() <= 1 || body.ends_with(&[0, 0]) {
                    return Ok(split_list(&all));
                }
            }
        }
        Err(Error::Xs {
            op: "directory",
            path: path.to_string(),
            errno: Errno::EAGAIN,
        })
    }

    /// A node's permissions (owner first).
    pub fn get_perms(&self, tx: TxId, path: &str) -> Result<Vec<Perm>, Error> {
        let list = self.call(
            "get_perms",
            msg::GET_PERMS,
            tx,
            path,
            &nul_joined(&[path.as_bytes()]),
        )?;
        list.split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| {
                Perm::parse(s).ok_or_else(|| Error::BadReply {
                    op: "get_perms",
                    detail: format!("bad permission {:?}", String::from_utf8_lossy(s)),
                })
            })
            .collect()
    }

    /// Sets a node's permissions (owner first). Also works on `@introduceDomain` and
    /// `@releaseDomain` (who may watch them).
    pub fn set_perms(&self, tx: TxId, path: &str, perms: &[Perm]) -> Result<(), Error> {
        let strs: Vec<String> = perms.iter().map(Perm::to_string).collect();
        let mut parts: Vec<&[u8]> = vec![path.as_bytes()];
        parts.extend(strs.iter().map(|s| s.as_bytes()));
        self.call("set_perms", msg::SET_PERMS, tx, path, &nul_joined(&parts))
            .map(drop)
    }

    /// Watches `path` (and everything below it). An event for `path` itself arrives
    /// right away.
    pub fn watch(&self, path: &str, token: &str) -> Result<(), Error> {
        self.call(
            "watch",
            msg::WATCH,
            TxId::NONE,
            path,
            &nul_joined(&[path.as_bytes(), token.as_bytes()]),
        )
        .map(drop)
    }

    /// Removes a watch.
    pub fn unwatch(&self, path: &str, token: &str) -> Result<(), Error> {
        self.call(
            "unwatch",
            msg::UNWATCH,
            TxId::NONE,
            path,
            &nul_joined(&[path.as_bytes(), token.as_bytes()]),
        )
        .map(drop)
    }

    /// Removes all watches and transactions of this client.
    pub fn reset_watches(&self) -> Result<(), Error> {
        self.call("reset_watches", msg::RESET_WATCHES, TxId::NONE, "", b"\0")
            .map(drop)
    }

    /// Starts a transaction.
    pub fn transaction_start(&self) -> Result<TxId, Error> {
        let id = self.call(
            "transaction_start",
            msg::TRANSACTION_START,
            TxId::NONE,
            "",
            b"\0",
        )?;
        let s = id.strip_suffix(&[0]).unwrap_or(&id);
        core::str::from_utf8(s)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .map(TxId)
            .ok_or_else(|| Error::BadReply {
                op: "transaction_start",
                detail: "bad id".into(),
            })
    }

    /// Ends a transaction: `commit` applies it (`EAGAIN`: it conflicted, nothing was
    /// applied, run it again), else it is discarded.
    pub fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), Error> {
        let arg: &[u8] = if commit { b"T\0" } else { b"F\0" };
        self.call("transaction_end", msg::TRANSACTION_END, tx, "", arg)
            .map(drop)
    }

    /// `/local/domain/<domid>`.
    pub fn get_domain_path(&self, domid: u16) -> Result<String, Error> {
        let d = domid.to_string();
        let p = self.call(
            "get_domain_path",
            msg::GET_DOMAIN_PATH,
            TxId::NONE,
            &d,
            &nul_joined(&[d.as_bytes()]),
        )?;
        Ok(String::from_utf8_lossy(p.strip_suffix(&[0]).unwrap_or(&p)).into_owned())
    }

    /// Whether `domid` has a store connection (privileged).
    pub fn is_domain_introduced(&self, domid: u16) -> Result<bool, Error> {
        let d = domid.to_string();
        let p = self.call(
            "is_domain_introduced",
            msg::IS_DOMAIN_INTRODUCED,
            TxId::NONE,
            &d,
            &nul_joined(&[d.as_bytes()]),
        )?;
        Ok(p.first() == Some(&b'T'))
    }

    /// Takes the event receiver (clients made with [`Xenstored::client`]); afterwards
    /// the event methods below return nothing.
    pub fn take_events(&self) -> Option<Receiver<WatchEvent>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The next watch event, if one is waiting.
    pub fn try_event(&self) -> Option<WatchEvent> {
        let g = self.events.lock().unwrap_or_else(|e| e.into_inner());
        g.as_ref()?.try_recv().ok()
    }

    /// Waits up to `timeout` for the next watch event.
    pub fn wait_event(&self, timeout: Duration) -> Option<WatchEvent> {
        let g = self.events.lock().unwrap_or_else(|e| e.into_inner());
        g.as_ref()?.recv_timeout(timeout).ok()
    }
}

impl Drop for LocalClient {
    fn drop(&mut self) {
        let cid = self.conn;
        self.xs.with_state(|st| {
            st.close_conn(cid);
        });
    }
}
