//! How a local's value is written into and read from a baggage member.

use std::fmt::{Display, Write as _};
use std::str::FromStr;

use super::codec::{needs_encoding, Encoding};

/// A value that can travel as W3C Baggage: written with [`encode`](Self::encode), read back
/// with [`decode`](Self::decode). Every `Display + FromStr` type is one (strings, numbers,
/// ids, your own types that print and parse); percent-encoding is done for you.
///
/// # Examples
///
/// ```
/// use context_local::baggage::BaggageValue;
///
/// #[derive(Debug, PartialEq)]
/// struct Tenant(String);
///
/// // Types that are not `Display + FromStr` implement it directly.
/// impl BaggageValue for Tenant {
///     fn encode(&self, out: &mut String) {
///         out.push_str(&self.0);
///     }
///     fn decode(text: &str) -> Result<Self, String> {
///         Ok(Tenant(text.to_string()))
///     }
/// }
///
/// let mut out = String::new();
/// 42u32.encode(&mut out);
/// assert_eq!(out, "42");
/// assert_eq!(u32::decode("42"), Ok(42));
/// assert!(u32::decode("x").is_err());
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot travel as baggage: it is not a `BaggageValue`",
    label = "not a `BaggageValue`",
    note = "a baggage value is written and read as text: implement `Display` and `FromStr` (with an `Err` that is `Display`), or `BaggageValue` by hand"
)]
pub trait BaggageValue: Sized {
    /// Appends the value as text (not yet percent-encoded) to `out`.
    fn encode(&self, out: &mut String);

    /// The value back from its text (already percent-decoded).
    ///
    /// # Errors
    ///
    /// A message saying why `text` is not a value of this type; the propagator reports it
    /// with the key and the local's name.
    fn decode(text: &str) -> Result<Self, String>;
}

#[diagnostic::do_not_recommend]
impl<T> BaggageValue for T
where
    T: Display + FromStr,
    T::Err: Display,
{
    fn encode(&self, out: &mut String) {
        // Writing to a String cannot fail.
        let _ = write!(out, "{self}");
    }

    fn decode(text: &str) -> Result<Self, String> {
        text.parse().map_err(|e: T::Err| e.to_string())
    }
}

/// Appends `value` to `out`, percent-encoded. Written in place; only a value that needs
/// encoding is copied once.
pub(crate) fn encode_into<T: BaggageValue>(value: &T, out: &mut String) {
    let start = out.len();
    value.encode(out);
    if out.as_bytes()[start..].iter().any(|&b| needs_encoding(b)) {
        let text = out.split_off(start);
        let _ = Encoding(out).write_str(&text);
    }
}
