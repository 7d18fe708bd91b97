//! The control protocol: one JSON object per line, client → daemon a [`Request`],
//! daemon → client a [`Reply`]. After [`Reply::Console`] the connection carries the
//! console's output (console `num`: 0 the primary, N a pty channel) as raw bytes
//! until the domain goes, the guest closes that console or the client hangs up; what
//! the client sends goes to the guest.
//!
//! ```text
//!  → {"op":"list"}
//!  ← {"reply":"domains","domains":[{"name":"demo","id":1,"mem_mib":32,...}]}
//!  → {"op":"shutdown","dom":"demo","request":"poweroff"}
//!  ← {"reply":"done"}
//! ```
//!
//! Lines are bounded ([`MAX_LINE`]); anything unparsable gets [`Reply::Error`].

use std::io::{self, BufRead, Read, Write};

use serde::{Deserialize, Serialize};

/// Longest line either side accepts (a request carries a whole config file).
pub const MAX_LINE: usize = 2 << 20;

/// A request to the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Request {
    /// Creates a domain from a config file's text.
    Create {
        /// The file's name, for messages.
        file: String,
        /// Its contents.
        text: String,
        /// The client's working directory: relative disk paths are relative to it.
        cwd: String,
        /// Leave the domain paused (`create -p`). Left out on the wire when false.
        #[serde(default, skip_serializing_if = "is_false")]
        paused: bool,
        /// `create --hostile DEVICE=MODE` entries (docs/hostile-mode.md), applied
        /// over the file's `hostile` key. Left out on the wire when empty.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hostile: Vec<String>,
    },
    /// Pauses a domain (its vCPUs stop running guest code).
    Pause {
        /// Domain name or id.
        dom: String,
    },
    /// Unpauses a paused domain.
    Unpause {
        /// Domain name or id.
        dom: String,
    },
    /// Lists domains.
    List,
    /// Lists domains in detail (`list -l`): JSON per domain, VM exits included.
    ListLong {
        /// Domain names or ids; empty for all.
        #[serde(default)]
        doms: Vec<String>,
    },
    /// Asks a domain to shut down (writes `control/shutdown`).
    Shutdown {
        /// Domain name or id.
        dom: String,
        /// `poweroff`, `reboot` or `halt`.
        request: String,
    },
    /// Waits (at most `timeout_ms`) until domain `domid` is gone or finished.
    Wait {
        /// The domain id.
        domid: u16,
        /// Bound of this wait.
        timeout_ms: u64,
    },
    /// Destroys a domain at once.
    Destroy {
        /// Domain name or id.
        dom: String,
    },
    /// A domain's disks.
    BlockList {
        /// Domain name or id.
        dom: String,
    },
    /// A domain's network interfaces.
    NetworkList {
        /// Domain name or id.
        dom: String,
    },
    /// Attaches to a domain's console.
    Console {
        /// Domain name or id.
        dom: String,
        /// Console number (xl's `console -n`): 0 the primary console, N ≥ 1
        /// `device/console/N` (channel N-1). Left out on the wire when 0.
        #[serde(default, skip_serializing_if = "is_zero")]
        num: u32,
    },
    /// The daemon's pid, runtime directory and xenstore socket.
    Info,
    /// Destroys every domain and stops the daemon.
    Stop,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Where a domain is in its life, as `list` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainInfo {
    /// Name.
    pub name: String,
    /// Domain id.
    pub id: u16,
    /// UUID.
    pub uuid: String,
    /// Memory in MiB.
    pub mem_mib: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// xl's six state flags: `r` running, `b` blocked, `p` paused, `s` shut down,
    /// `c` crashed, `d` dying (e.g. `r-----`).
    pub state: String,
    /// Seconds since the domain started.
    pub time_s: f64,
    /// Why the domain shut down or crashed, if it did.
    pub reason: Option<String>,
}

/// One device as `block-list` / `network-list` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Device id (`device/vbd/<vdev>` for disks, `device/vif/<devid>`).
    pub devid: u32,
    /// Backend domain.
    pub backend_id: u16,
    /// Frontend XenbusState number.
    pub frontend_state: Option<u32>,
    /// Backend XenbusState number.
    pub backend_state: Option<u32>,
    /// The frontend's event channel.
    pub evtchn: Option<u32>,
    /// The frontend's ring grant references (blk: `ring-ref`; net: tx then rx).
    pub ring_refs: Vec<u32>,
    /// The backend's directory in xenstore.
    pub backend_path: String,
    /// Disks: the vdev as written; vifs: the MAC.
    pub name: String,
}

/// The daemon's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Reply {
    /// A domain was created.
    Created {
        /// Its id.
        domid: u16,
        /// Its name.
        name: String,
    },
    /// The domain list.
    Domains {
        /// Every domain, Domain-0 first.
        domains: Vec<DomainInfo>,
    },
    /// A JSON document (`list -l`), as text.
    Json {
        /// The document.
        json: String,
    },
    /// Done.
    Done,
    /// Done, to domain `domid` (`shutdown`, `destroy`).
    Acted {
        /// The domain acted on.
        domid: u16,
    },
    /// Result of a [`Request::Wait`].
    Waited {
        /// Whether the domain is gone or finished.
        finished: bool,
    },
    /// Devices of a domain.
    Devices {
        /// Domain id.
        domid: u16,
        /// The devices, by id.
        devices: Vec<DeviceInfo>,
    },
    /// Daemon facts.
    Info {
        /// The daemon's pid.
        pid: u32,
        /// Its runtime directory.
        runtime_dir: String,
        /// dom0's xenstore socket.
        xenstored_socket: Option<String>,
    },
    /// Console output follows as raw bytes.
    Console {
        /// The domain id attached to.
        domid: u16,
    },
    /// The request failed; one line saying why.
    Error {
        /// The message.
        message: String,
    },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Writes one message as a JSON line.
pub fn write_line<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}

/// Reads one JSON line (at most [`MAX_LINE`] bytes). `Ok(None)` at end of stream.
pub fn read_line<T: for<'de> Deserialize<'de>, R: BufRead>(r: &mut R) -> io::Result<Option<T>> {
    let mut buf = Vec::new();
    let mut limited = Read::take(&mut *r, MAX_LINE as u64 + 1);
    let n = limited.read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        let why = if buf.len() > MAX_LINE {
            format!("message longer than {MAX_LINE} bytes")
        } else {
            "message not terminated by a newline".to_string()
        };
        return Err(io::Error::new(io::ErrorKind::InvalidData, why));
    }
    serde_json::from_slice(&buf)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wire_form() {
        let mut v = Vec::new();
        write_line(&mut v, &Request::List).unwrap();
        assert_eq!(v, b"{\"op\":\"list\"}\n");
        let r: Request = read_line(&mut &v[..]).unwrap().unwrap();
        assert_eq!(r, Request::List);
        let mut v = Vec::new();
        write_line(
            &mut v,
            &Request::Shutdown {
                dom: "d".into(),
                request: "halt".into(),
            },
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "{\"op\":\"shutdown\",\"dom\":\"d\",\"request\":\"halt\"}\n"
        );
    }

    #[test]
    fn console_number_is_optional_on_the_wire() {
        let mut v = Vec::new();
        let req = Request::Console {
            dom: "d".into(),
            num: 0,
        };
        write_line(&mut v, &req).unwrap();
        assert_eq!(v, b"{\"op\":\"console\",\"dom\":\"d\"}\n");
        assert_eq!(read_line::<Request, _>(&mut &v[..]).unwrap(), Some(req));
        let two = b"{\"op\":\"console\",\"dom\":\"d\",\"num\":2}\n";
        assert_eq!(
            read_line::<Request, _>(&mut &two[..]).unwrap(),
            Some(Request::Console {
                dom: "d".into(),
                num: 2
            })
        );
        for bad in [&b"-1"[..], b"4294967296", b"\"1\""] {
            let mut line = b"{\"op\":\"console\",\"dom\":\"d\",\"num\":".to_vec();
            line.extend_from_slice(bad);
            line.extend_from_slice(b"}\n");
            assert!(read_line::<Request, _>(&mut &line[..]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_lines_are_errors() {
        for bad in [
            &b"{\"op\":\"list\"}"[..],
            b"{\"op\":\"nope\"}\n",
            b"\xff\n",
            b"{\"op\":\"destroy\"}\n",
        ] {
            assert!(read_line::<Request, _>(&mut &bad[..]).is_err(), "{bad:?}");
        }
        let long = vec![b' '; MAX_LINE + 10];
        let e = read_line::<Request, _>(&mut &long[..]).unwrap_err();
        assert!(e.to_string().contains("longer"), "{e}");
        assert!(read_line::<Request, _>(&mut &b""[..]).unwrap().is_none());
    }
}
