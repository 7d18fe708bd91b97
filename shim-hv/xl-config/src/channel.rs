//! Channel entries (`xl.cfg(5)` `channel=`, `xen-pv-channel(7)`): named secondary
//! PV consoles. Each entry is a comma list of `KEY=VALUE` settings, read the way
//! xl's `parse_config_data` reads them: empty items are skipped, blanks around a
//! key and its value are trimmed, an item without `=` or with an empty value is an
//! error, and a repeated key's last value counts. Keys: `name` (mandatory),
//! `connection` (`pty` or `socket`, mandatory), `path` (the Unix socket for
//! `connection=socket`), `backend` (only dom0 here). Unlike xl, which prints and
//! ignores unknown keys, they are errors (as for vifs); `devid=` is refused too:
//! xl has no such channel setting, channel N of the list is console N + 1
//! (`device/console/N+1`, as libxl numbers them). As xl.cfg(5) says, a value may not
//! contain `=` or `"` (nor `,`, which separates items).

use std::path::PathBuf;

use super::error::ErrorKind;

/// Longest socket path a Unix socket address holds (`sun_path` is 108 bytes,
/// including the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// What the host side of a channel is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelConnection {
    /// A pseudo-terminal; its slave path goes to the frontend's `tty` node.
    Pty,
    /// A listening Unix socket at this path.
    Socket(PathBuf),
}

impl ChannelConnection {
    /// xl's spelling (`pty`, `socket`).
    pub fn as_str(&self) -> &'static str {
        match self {
            ChannelConnection::Pty => "pty",
            ChannelConnection::Socket(_) => "socket",
        }
    }
}

/// One channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelSpec {
    /// Line of the entry.
    pub line: u32,
    /// The entry as written.
    pub spec: String,
    /// Console number: `device/console/<devid>` (1 for the first channel).
    pub devid: u32,
    /// `name=`: what the guest looks the channel up by.
    pub name: String,
    /// `connection=` (with `path=` for a socket).
    pub connection: ChannelConnection,
    /// Notes about settings accepted without effect (`path=` on a pty).
    pub notes: Vec<String>,
}

type ChannelErr = (ErrorKind, String);

/// Parses one channel entry; `devid` is its console number.
pub(crate) fn parse(spec: &str, line: u32, devid: u32) -> Result<ChannelSpec, ChannelErr> {
    let whole = |m: &str| (ErrorKind::BadChannel(m.to_owned()), spec.to_owned());
    let mut name = None;
    let mut connection = None;
    let mut path: Option<String> = None;
    for item in spec.split(',').filter(|i| !i.is_empty()) {
        let bad = |m: &str| (ErrorKind::BadChannel(m.to_owned()), item.trim().to_owned());
        let Some((key, val)) = item.split_once('=') else {
            return Err(bad("expected KEY=VALUE"));
        };
        let (key, val) = (key.trim(), val.trim());
        if val.is_empty() {
            return Err(bad("empty value"));
        }
        if val.contains(['=', '"']) {
            return Err(bad("a value may not contain `=` or `\"` (xl.cfg(5))"));
        }
        match key {
            "name" => {
                if val.chars().any(char::is_control) {
                    return Err(bad("name has control characters"));
                }
                name = Some(val.to_owned());
            }
            "connection" => match val {
                "pty" | "socket" => connection = Some(val),
                _ => return Err(bad("connection must be pty or socket")),
            },
            "path" => {
                if val.len() > MAX_SOCKET_PATH {
                    return Err(bad(
                        "path longer than a Unix socket address holds (107 bytes)",
                    ));
                }
                if val.contains('\0') {
                    return Err(bad("path has a NUL byte"));
                }
                path = Some(val.to_owned());
            }
            "backend" => match val {
                "0" | "Domain-0" | "dom0" => {}
                _ => {
                    return Err((
                        ErrorKind::Unsupported("channel backends in driver domains".into()),
                        item.trim().to_owned(),
                    ))
                }
            },
            "devid" => {
                return Err(bad(
                    "devid= is not a channel setting: channels are consoles 1, 2, ... in \
                     list order",
                ))
            }
            _ => {
                return Err(bad(
                    "unknown channel setting (name, connection, path, backend)",
                ))
            }
        }
    }
    let name = name.ok_or_else(|| whole("name= is mandatory"))?;
    let mut notes = Vec::new();
    let connection = match (connection, path) {
        (None, _) => return Err(whole("connection= (pty or socket) is mandatory")),
        (Some("socket"), Some(p)) => ChannelConnection::Socket(PathBuf::from(p)),
        (Some("socket"), None) => return Err(whole("connection=socket needs path=")),
        (_, p) => {
            if let Some(p) = p {
                notes.push(format!(
                    "path={p} has no effect: it is only used with connection=socket"
                ));
            }
            ChannelConnection::Pty
        }
    };
    Ok(ChannelSpec {
        line,
        spec: spec.to_owned(),
        devid,
        name,
        connection,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_as_xl_reads_them() {
        let c = parse("name=org.example.foo,connection=pty", 3, 1).unwrap();
        assert_eq!(
            (c.line, c.devid, c.name.as_str(), &c.connection),
            (3, 1, "org.example.foo", &ChannelConnection::Pty)
        );
        assert!(c.notes.is_empty());
        // xen-pv-channel(7)'s example: blanks around keys and values, any order.
        let c = parse(
            "connection=socket, name=org.my.cloud.software.agent.version1, path = /my/cloud/x/ ",
            1,
            2,
        )
        .unwrap();
        assert_eq!(c.name, "org.my.cloud.software.agent.version1");
        assert_eq!(
            c.connection,
            ChannelConnection::Socket(PathBuf::from("/my/cloud/x/"))
        );
        // Empty items are skipped (strtok), the last of a repeated key counts,
        // backend= may name dom0.
        let c = parse(",name=a,,name=b,connection=pty,backend=Domain-0,", 1, 1).unwrap();
        assert_eq!(c.name, "b");
        // path= on a pty is accepted (xl ignores it) with a note.
        let c = parse("name=a,connection=pty,path=/tmp/x", 1, 1).unwrap();
        assert_eq!(c.connection, ChannelConnection::Pty);
        assert_eq!(c.notes.len(), 1);
    }

    #[test]
    fn bad_entries_name_the_offending_text() {
        let long = format!("name=a,connection=socket,path=/{}", "x".repeat(107));
        let long_item = format!("path=/{}", "x".repeat(107));
        for (s, text) in [
            ("name=a,connection=serial", "connection=serial"),
            ("name=a,connection=PTY", "connection=PTY"),
            ("name=a,connection=pty,colour=red", "colour=red"),
            ("name=a,connection=pty,devid=3", "devid=3"),
            ("name=a,connection=pty,backend=drv", "backend=drv"),
            ("name=a,connection", "connection"),
            ("name=a, ,connection=pty", ""),
            ("name= ,connection=pty", "name="),
            ("name=a=b,connection=pty", "name=a=b"),
            ("name=\"a\",connection=pty", "name=\"a\""),
            ("name=a\tb,connection=pty", "name=a\tb"),
            ("connection=pty", "connection=pty"),
            ("name=a", "name=a"),
            ("name=a,connection=socket", "name=a,connection=socket"),
            ("", ""),
            (long.as_str(), long_item.as_str()),
        ] {
            let e = parse(s, 1, 1).unwrap_err();
            assert_eq!(e.1, text, "{s:?}");
        }
        assert!(matches!(
            parse("name=a,connection=pty,backend=drv", 1, 1)
                .unwrap_err()
                .0,
            ErrorKind::Unsupported(_)
        ));
    }

    #[test]
    fn names_and_socket_paths_are_unique_and_numbered_from_one() {
        use crate::DomainConfig;
        let cfg =
            |list: &str| DomainConfig::parse_str("d.cfg", &format!("name='d'\nchannel=[{list}]\n"));
        let e = cfg("'name=a,connection=socket,path=/s',\n'name=b,connection=socket,path=/s'")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "d.cfg:3: bad channel: socket path already used by the channel on line 2 (/s)"
        );
        let e = cfg("'name=a,connection=pty', 'name=a,connection=pty'").unwrap_err();
        assert_eq!(
            e.to_string(),
            "d.cfg:2: bad channel: name already used by the channel on line 2 (a)"
        );
        let c = cfg("'name=a,connection=pty', 'name=b,connection=pty'").unwrap();
        let ids: Vec<u32> = c.channels.iter().map(|c| c.devid).collect();
        assert_eq!(ids, [1, 2]);
    }
}
