//! Errors and warnings of the config parser. Every one names the file, the line
//! and the text it is about.

use std::fmt;

use xbd_front::vdev::VdevError;

/// What is wrong. The [`fmt::Display`] text is the human message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file could not be read.
    #[error("cannot read config: {0}")]
    Io(String),
    /// A character or token that does not belong there.
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    /// A quoted string runs to the end of the line.
    #[error("unterminated string")]
    UnterminatedString,
    /// A `[` list is never closed.
    #[error("unterminated list (missing `]`)")]
    UnterminatedList,
    /// A backslash escape in a string that xl does not know.
    #[error("invalid backslash escape in quoted string")]
    BadEscape,
    /// Python code (`import`, `def`, calls, expressions): xm's Python configs.
    #[error(
        "this looks like Python code: xm's Python configs are not supported, \
         only KEY = VALUE settings (see xl.cfg(5))"
    )]
    PythonCode,
    /// A key that needs one value got a list.
    #[error("`{key}` takes a single value, not a list")]
    NotASingleValue {
        /// The key.
        key: String,
    },
    /// A key that needs a list got something else.
    #[error("`{key}` takes a list: {key} = [ ... ]")]
    NotAList {
        /// The key.
        key: String,
    },
    /// A list item that should be a string is a nested list.
    #[error("`{key}` entries must be strings")]
    NotAString {
        /// The key.
        key: String,
    },
    /// Not a number as C's `strtol(.., 0)` reads it, or out of range.
    #[error("`{key}` is not {expected}")]
    BadNumber {
        /// The key.
        key: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A value outside the accepted set.
    #[error("bad `{key}`: expected {expected}")]
    BadValue {
        /// The key.
        key: String,
        /// What was expected.
        expected: &'static str,
    },
    /// `+=` applied to something it cannot extend.
    #[error("cannot use += on `{key}` here")]
    BadAppend {
        /// The key.
        key: String,
    },
    /// A mandatory key is missing.
    #[error("`{0}` must be specified")]
    MissingKey(&'static str),
    /// A bad domain name.
    #[error("bad domain name")]
    BadName,
    /// Not a UUID (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`).
    #[error("bad uuid")]
    BadUuid,
    /// `on_*` value that is not an xl action.
    #[error(
        "unknown `{key}` action (destroy, restart, rename-restart, preserve, \
         coredump-destroy, coredump-restart, soft-reset)"
    )]
    UnknownAction {
        /// The key.
        key: String,
    },
    /// A feature shim-hv does not provide; refused rather than ignored.
    #[error("not supported by shim-hv: {0}")]
    Unsupported(String),
    /// Two settings that contradict each other.
    #[error("contradicting settings: {0}")]
    Conflict(String),
    /// A disk entry that xl's disk syntax does not accept.
    #[error("bad disk: {0}")]
    BadDisk(String),
    /// The disk's vdev is not a Xen virtual device.
    #[error("bad disk vdev: {0}")]
    BadVdev(VdevError),
    /// Disk access that is not `r`, `ro`, `w`, `rw`.
    #[error("bad disk access mode (r, ro, w or rw)")]
    BadAccess,
    /// Two disks with the same virtual device number.
    #[error("vdev already used by the disk on line {first_line}")]
    DuplicateVdev {
        /// Line of the first disk using it.
        first_line: u32,
    },
    /// A vif entry problem.
    #[error("bad vif: {0}")]
    BadVif(String),
    /// A bad MAC address.
    #[error("bad vif mac: {0}")]
    BadMac(&'static str),
    /// A channel entry problem.
    #[error("bad channel: {0}")]
    BadChannel(String),
    /// A `hostile` entry (shim-hv's own key) that names no device of the
    /// config, or a mode of another device class.
    #[error("bad hostile entry: {0}")]
    BadHostile(String),
    /// A file named by the config is missing or unusable ([`super::DomainConfig::validate_paths`]).
    #[error("{what}: {why}")]
    BadPath {
        /// What the file is for (`kernel`, `disk`, ...).
        what: &'static str,
        /// Why it is unusable.
        why: String,
    },
}

/// A config error: `file:line: message (text)`. `line` is 0 for whole-file
/// problems (a missing key, an unreadable file).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", Located::new(.file, *.line, .kind, .text))]
pub struct ConfigError {
    /// The config file as named by the caller.
    pub file: String,
    /// 1-based line, or 0.
    pub line: u32,
    /// What is wrong.
    pub kind: ErrorKind,
    /// The offending text as written (a token, a value, an entry).
    pub text: String,
}

impl ConfigError {
    pub(crate) fn new(file: &str, line: u32, kind: ErrorKind, text: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_owned(),
            line,
            kind,
            text: text.into(),
        }
    }
}

/// Writes through to a formatter with control characters escaped (`\n` as the two
/// characters `\` `n`), so that a message quoting user text stays one line
/// (docs/hostile-input.md H1; a config value may hold any character).
struct OneLine<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for OneLine<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if c.is_control() {
                write!(self.0, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(self.0, c)?;
            }
        }
        Ok(())
    }
}

/// `file:line: msg (text)` (no `:line` when it is 0, no `(text)` when empty), one line.
struct Located<'a> {
    file: &'a str,
    line: u32,
    msg: &'a dyn fmt::Display,
    text: &'a str,
}

impl<'a> Located<'a> {
    fn new(file: &'a str, line: u32, msg: &'a dyn fmt::Display, text: &'a str) -> Self {
        Located {
            file,
            line,
            msg,
            text,
        }
    }
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        let Located {
            file,
            line,
            msg,
            text,
        } = *self;
        let mut out = OneLine(f);
        if line == 0 {
            write!(out, "{file}: {msg}")?;
        } else {
            write!(out, "{file}:{line}: {msg}")?;
        }
        if text.is_empty() {
            Ok(())
        } else {
            write!(out, " ({text})")
        }
    }
}

/// Kinds of warnings; the parse succeeded but the user may want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WarningKind {
    /// A key neither xl nor xm knows (a typo?).
    UnknownKey,
    /// A key xl or xm knows that shim-hv ignores.
    IgnoredKey,
    /// A key set again: the last one wins.
    RepeatedKey {
        /// Line of the earlier setting.
        previous_line: u32,
    },
    /// A deprecated (xm) spelling, accepted.
    Deprecated(String),
    /// A value changed or overridden, with the reason.
    Adjusted(String),
    /// A disk vdev that is not a Xen name (xm resolved these through dom0's
    /// `/dev`): a free xvd number was assigned.
    HostVdev(String),
}

impl fmt::Display for WarningKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WarningKind::UnknownKey => f.write_str("unknown key, ignored"),
            WarningKind::IgnoredKey => f.write_str("key ignored by shim-hv"),
            WarningKind::RepeatedKey { previous_line } => {
                write!(f, "key set again (line {previous_line} is overridden)")
            }
            WarningKind::Deprecated(m) | WarningKind::Adjusted(m) | WarningKind::HostVdev(m) => {
                f.write_str(m)
            }
        }
    }
}

/// A warning: `file:line: warning: message (text)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The config file.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// What happened.
    pub kind: WarningKind,
    /// The text it is about.
    pub text: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = format!("warning: {}", self.kind);
        Located::new(&self.file, self.line, &msg, &self.text).fmt(f)
    }
}

#[cfg(test)]
mod one_line_tests {
    use super::*;

    /// A value with a newline (found by the xl_config fuzz target: a domain name
    /// "ag\nts") is quoted escaped: the error stays one line.
    #[test]
    fn control_characters_in_quoted_text_are_escaped() {
        let e = ConfigError::new("a\nb.cfg", 2, ErrorKind::BadName, "ag\nts\t\u{7}");
        let shown = e.to_string();
        assert_eq!(shown, "a\\nb.cfg:2: bad domain name (ag\\nts\\t\\u{7})");
        assert!(!shown.contains('\n'));
        let e = ConfigError::new("x.cfg", 1, ErrorKind::BadDisk("vdev \"x\ny\"".into()), "");
        assert_eq!(e.to_string(), "x.cfg:1: bad disk: vdev \"x\\ny\"");
    }
}
