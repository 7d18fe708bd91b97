//! Parsing the values typed readers get (docs/hostile-input.md row 31: every failure names the key).

use crate::error::{Error, ParseKind, Snippet};
use crate::state::XenbusState;

/// Parses a plain unsigned decimal (no sign, no spaces, no prefix), as Linux's
/// `xenbus_read_unsigned` expects node values to be written.
pub(crate) fn parse_decimal(s: &[u8]) -> Result<u64, ParseKind> {
    if s.is_empty() {
        return Err(ParseKind::Empty);
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return Err(ParseKind::NotANumber);
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or(ParseKind::Overflow)?;
    }
    Ok(v)
}

pub(crate) fn parse_error(key: &str, value: &[u8], kind: ParseKind) -> Error {
    Error::Parse {
        key: Snippet::tail(key.as_bytes()),
        value: Snippet::head(value),
        kind,
    }
}

pub(crate) fn u64_value(key: &str, value: &[u8]) -> Result<u64, Error> {
    parse_decimal(value).map_err(|k| parse_error(key, value, k))
}

pub(crate) fn u32_value(key: &str, value: &[u8]) -> Result<u32, Error> {
    let v = u64_value(key, value)?;
    u32::try_from(v).map_err(|_| parse_error(key, value, ParseKind::Overflow))
}

/// Feature flags: any decimal, non-zero meaning true (Linux reads them as unsigned).
pub(crate) fn bool_value(key: &str, value: &[u8]) -> Result<bool, Error> {
    u64_value(key, value).map(|v| v != 0)
}

pub(crate) fn state_value(key: &str, value: &[u8]) -> Result<XenbusState, Error> {
    let v = u32_value(key, value)?;
    XenbusState::try_from(v).map_err(|_| parse_error(key, value, ParseKind::OutOfRange))
}

pub(crate) fn str_value<'a>(key: &str, value: &'a [u8]) -> Result<&'a str, Error> {
    core::str::from_utf8(value).map_err(|_| parse_error(key, value, ParseKind::NotUtf8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal(b"0"), Ok(0));
        assert_eq!(parse_decimal(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_decimal(b"18446744073709551616"),
            Err(ParseKind::Overflow)
        );
        assert_eq!(parse_decimal(b""), Err(ParseKind::Empty));
        for bad in [&b"-1"[..], b"+1", b" 1", b"1 ", b"0x10", b"1\0"] {
            assert_eq!(parse_decimal(bad), Err(ParseKind::NotANumber), "{bad:?}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let e = u32_value("backend/vbd/1/51712/sectors", b"4294967296").unwrap_err();
        let Error::Parse { key, value, kind } = e else {
            panic!("{e:?}")
        };
        assert_eq!(key.as_str(), Some("backend/vbd/1/51712/sectors"));
        assert_eq!(value.as_str(), Some("4294967296"));
        assert_eq!(kind, ParseKind::Overflow);
        assert!(matches!(
            state_value("state", b"9"),
            Err(Error::Parse {
                kind: ParseKind::OutOfRange,
                ..
            })
        ));
        assert!(matches!(
            str_value("k", b"\xff"),
            Err(Error::Parse {
                kind: ParseKind::NotUtf8,
                ..
            })
        ));
        assert_eq!(bool_value("k", b"2"), Ok(true));
        assert_eq!(bool_value("k", b"0"), Ok(false));
    }
}
