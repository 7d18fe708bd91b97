//! Feature sets whose flags are boolean xenstore keys.
//!
//! A device's features travel through xenstore as keys holding `"1"` (on) or `"0"`
//! (off): a backend offers `feature-sg`, a frontend answers `feature-rx-notify`, a
//! guest advertises `control/feature-poweroff`. [`xenstore_flags!`](crate::xenstore_flags)
//! defines a [`bitflags`] type for such a set in which each flag carries its key, so
//! that reading and writing the keys is one loop over a table instead of one line
//! per feature, and a flag cannot drift from its key.
//!
//! The protocol's own sets live beside its structures:
//! [`netif::BackendFlags`](crate::abi::netif::BackendFlags),
//! [`netif::FrontendFlags`](crate::abi::netif::FrontendFlags) and
//! [`blkif::BackendFlags`](crate::abi::blkif::BackendFlags).
//!
//! How a key's value is read is the caller's choice (xenbus and the frontends do it
//! as Linux's `xenbus_read_unsigned`: a decimal other than 0 is on; `"0"`, a missing
//! key or garbage is off); [`is_on`] is that rule.

/// Whether a boolean feature key's value means "on": an unsigned decimal other than
/// zero (what Linux's `xenbus_read_unsigned(..., 0)` reads as true). `"0"`, an empty
/// value, garbage (`"yes"`, `"1x"`, `"-1"`) and numbers over 64 bits are off;
/// leading zeros are allowed, however many (`"0…01"` is on).
pub fn is_on(value: &[u8]) -> bool {
    value
        .iter()
        .try_fold(0u64, |n, &b| {
            if b.is_ascii_digit() {
                n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
            } else {
                None
            }
        })
        .is_some_and(|n| n != 0)
}

/// The value a feature key is written with: `"1"` on, `"0"` off.
pub const fn value(on: bool) -> &'static str {
    if on {
        "1"
    } else {
        "0"
    }
}

/// Defines a [`bitflags`] type whose flags each stand for one boolean xenstore key.
///
/// Every flag is written `const NAME = bits => "key";`. Its documentation gains a
/// line naming the key, and the type gains:
/// - `KEYS`: every flag with its key, in declaration order (the table to iterate
///   when reading or writing the keys);
/// - `key(self)`: the key of a single flag (`None` for none or several);
/// - `from_key(key)`: the flag a key stands for;
/// - `from_keys(on)`: the set of flags whose key `on` says is on.
///
/// The derives and the rest of the attributes are the caller's, as with
/// `bitflags!`.
///
/// ```
/// hypercall::xenstore_flags! {
///     /// What a made-up device offers.
///     #[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
///     pub struct Offers: u32 {
///         /// Requests may be merged.
///         const MERGE = 1 << 0 => "feature-merge";
///         /// Requests may be reordered.
///         const REORDER = 1 << 1 => "feature-reorder";
///     }
/// }
///
/// assert_eq!(Offers::MERGE.key(), Some("feature-merge"));
/// assert_eq!(Offers::from_key("feature-reorder"), Some(Offers::REORDER));
/// assert_eq!((Offers::MERGE | Offers::REORDER).key(), None);
///
/// // Reading: one loop over the table (here a store that has only feature-merge = 1).
/// let store = [("feature-merge", "1"), ("feature-reorder", "0")];
/// let offered = Offers::from_keys(|key| {
///     store.iter().any(|&(k, v)| k == key && hypercall::keyflags::is_on(v.as_bytes()))
/// });
/// assert_eq!(offered, Offers::MERGE);
///
/// // Writing: every key, "1" or "0".
/// let written: Vec<(&str, &str)> = Offers::KEYS
///     .iter()
///     .map(|&(f, k)| (k, hypercall::keyflags::value(offered.contains(f))))
///     .collect();
/// assert_eq!(written, [("feature-merge", "1"), ("feature-reorder", "0")]);
/// ```
#[macro_export]
macro_rules! xenstore_flags {
    (
        $(#[$($outer:tt)*])*
        $vis:vis struct $Name:ident: $T:ty {
            $(
                $(#[$($inner:tt)*])*
                const $Flag:ident = $bits:expr => $key:literal;
            )*
        }
    ) => {
        $crate::__bitflags::bitflags! {
            $(#[$($outer)*])*
            $vis struct $Name: $T {
                $(
                    $(#[$($inner)*])*
                    #[doc = ""]
                    #[doc = concat!("Key: `", $key, "`.")]
                    const $Flag = $bits;
                )*
            }
        }

        impl $Name {
            /// Every flag with the xenstore key it stands for, in declaration order.
            pub const KEYS: &'static [($Name, &'static str)] = &[$(($Name::$Flag, $key)),*];

            /// The key a single flag stands for (`None` for no flag or several).
            pub const fn key(self) -> ::core::option::Option<&'static str> {
                let mut i = 0;
                while i < Self::KEYS.len() {
                    if Self::KEYS[i].0.bits() == self.bits() {
                        return ::core::option::Option::Some(Self::KEYS[i].1);
                    }
                    i += 1;
                }
                ::core::option::Option::None
            }

            /// The flag `key` stands for, if any.
            pub fn from_key(key: &str) -> ::core::option::Option<Self> {
                Self::KEYS.iter().find(|&&(_, k)| k == key).map(|&(f, _)| f)
            }

            /// The flags whose key `on` says is on (it is asked once per key, in
            /// the order of [`Self::KEYS`]).
            pub fn from_keys(mut on: impl FnMut(&'static str) -> bool) -> Self {
                Self::KEYS
                    .iter()
                    .filter(|&&(_, k)| on(k))
                    .fold(Self::empty(), |acc, &(f, _)| acc.union(f))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    crate::xenstore_flags! {
        /// A test set.
        #[derive(Copy, Clone, Debug, PartialEq, Eq)]
        struct Set: u8 {
            /// One.
            const A = 1 << 0 => "feature-a";
            /// Two.
            const B = 1 << 3 => "control/feature-b";
        }
    }

    #[test]
    fn table_key_and_from_key_agree() {
        assert_eq!(
            Set::KEYS,
            &[(Set::A, "feature-a"), (Set::B, "control/feature-b")]
        );
        assert_eq!(Set::A.key(), Some("feature-a"));
        assert_eq!(Set::B.key(), Some("control/feature-b"));
        assert_eq!(Set::empty().key(), None);
        assert_eq!(Set::all().key(), None);
        assert_eq!(Set::from_key("feature-a"), Some(Set::A));
        assert_eq!(Set::from_key("control/feature-b"), Some(Set::B));
        assert_eq!(Set::from_key("feature-b"), None);
        assert_eq!(Set::from_key(""), None);
    }

    #[test]
    fn from_keys_asks_each_key_once_in_order() {
        let mut asked = std::vec::Vec::new();
        let s = Set::from_keys(|k| {
            asked.push(k);
            k == "control/feature-b"
        });
        assert_eq!(s, Set::B);
        assert_eq!(asked, ["feature-a", "control/feature-b"]);
        assert_eq!(Set::from_keys(|_| true), Set::all());
        assert_eq!(Set::from_keys(|_| false), Set::empty());
    }

    #[test]
    fn values_read_as_linux_reads_them() {
        for on in [
            "1",
            "2",
            "01",
            "18446744073709551615",
            "000000000000000000001",
        ] {
            assert!(is_on(on.as_bytes()), "{on}");
        }
        for off in [
            "",
            "0",
            "00",
            "yes",
            "1x",
            "-1",
            " 1",
            "18446744073709551616",
        ] {
            assert!(!is_on(off.as_bytes()), "{off}");
        }
        assert_eq!((value(true), value(false)), ("1", "0"));
    }
}
