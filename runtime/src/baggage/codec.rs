//! The W3C Baggage header: parsing (hostile input) and encoding.
//!
//! `baggage: key1=value1;property,key2=value2` — list members separated by `,`, each a token
//! key, `=`, and a percent-encoded value made of baggage-octets, optionally followed by
//! `;`-separated properties (ignored for carried locals; passed to OpenTelemetry as metadata).
//! At most [`MAX_MEMBERS`] members and [`MAX_BYTES`] bytes are read; what lies beyond is
//! reported, never read.

use std::fmt::{self, Write as _};

use super::error::{BaggageError, Problem};
use super::limits::{MAX_BYTES, MAX_MEMBERS};

/// A `tchar` of RFC 9110: what a key is made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// An RFC 9110 token: what member and property keys must be.
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token_byte(b))
}

/// The first byte of `member` that may not appear in a header value (a control character
/// other than tab, DEL, or not ASCII), if any: a member of another party that has one is not
/// passed on, so that it cannot end the header (CR LF) or smuggle another one.
pub(crate) fn unsafe_byte(member: &[u8]) -> Option<u8> {
    member
        .iter()
        .copied()
        .find(|&b| !(b == b'\t' || (0x20..=0x7E).contains(&b)))
}

/// `header` without its members that hold a byte no header may hold (see [`unsafe_byte`]), as
/// text, and an error naming that byte for each member left out: for a reader of text
/// (OpenTelemetry's), which would otherwise get it with U+FFFD and pass that on as sent.
/// Not public API.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "opentelemetry")] {
/// let (safe, errors) = context_local::baggage::__safe_members(b"a=1,b=\xff,c=2");
/// assert_eq!(safe, "a=1,c=2");
/// assert!(errors[0].to_string().contains("0xFF"));
/// # }
/// ```
#[cfg(feature = "opentelemetry")]
#[doc(hidden)]
pub fn __safe_members(header: &[u8]) -> (String, Vec<BaggageError>) {
    let mut safe = String::with_capacity(header.len());
    let mut errors = Vec::new();
    for member in header.split(|&b| b == b',') {
        match (unsafe_byte(member), std::str::from_utf8(member)) {
            (None, Ok(text)) => {
                if !safe.is_empty() {
                    safe.push(',');
                }
                safe.push_str(text);
            }
            (byte, _) => errors.push(BaggageError::new(
                shown(trim_ows(member)),
                Problem::BadValueByte {
                    byte: byte.unwrap_or_default(),
                },
            )),
        }
    }
    (safe, errors)
}

/// A baggage-octet: printable ASCII but space, `"`, `,`, `;` and `\`.
fn is_value_byte(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// Optional whitespace (space and tab) off both ends.
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A member as the header shows it, for error messages: lossy, and at most 64 characters.
pub(crate) fn shown(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    match s.char_indices().nth(64) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.into_owned(),
    }
}

/// Calls `member(key, decoded value, properties)` for every well-formed member of `headers`
/// (all values of the header, in order; `properties` is what followed the first `;`, as sent),
/// and records what is wrong with the others in `errors`.
pub(crate) fn parse<'h>(
    headers: impl IntoIterator<Item = &'h [u8]>,
    mut member: impl FnMut(&str, String, &str),
    errors: &mut Vec<BaggageError>,
) {
    let mut members = 0usize;
    let mut bytes = 0usize;
    let mut dropped = 0usize;
    for header in headers {
        for raw in header.split(|&b| b == b',') {
            let trimmed = trim_ows(raw);
            if trimmed.is_empty() {
                continue; // tolerated: empty list members (`a=1,,b=2`, a trailing comma)
            }
            bytes += raw.len() + usize::from(bytes > 0);
            members += 1;
            if members > MAX_MEMBERS || bytes > MAX_BYTES {
                dropped += 1;
                continue;
            }
            match parse_member(trimmed) {
                Ok((key, value, properties)) => member(key, value, properties),
                Err(problem) => errors.push(BaggageError::new(shown(trimmed), problem)),
            }
        }
    }
    if dropped > 0 {
        errors.push(BaggageError::new(
            String::new(),
            Problem::OverLimit { dropped },
        ));
    }
}

/// One trimmed member: its key, decoded value and properties.
pub(crate) fn parse_member(raw: &[u8]) -> Result<(&str, String, &str), Problem> {
    let (pair, properties) = match raw.iter().position(|&b| b == b';') {
        Some(semi) => (&raw[..semi], &raw[semi + 1..]),
        None => (raw, &[][..]),
    };
    // Properties are passed on as sent, if they are text; otherwise they are dropped.
    let properties = std::str::from_utf8(trim_ows(properties)).unwrap_or("");
    let eq = pair
        .iter()
        .position(|&b| b == b'=')
        .ok_or(Problem::NoEquals)?;
    let key = trim_ows(&pair[..eq]);
    if key.is_empty() || !key.iter().all(|&b| is_token_byte(b)) {
        return Err(Problem::BadKey);
    }
    let value = decode(trim_ows(&pair[eq + 1..]))?;
    // Every token byte is ASCII.
    let key = std::str::from_utf8(key).map_err(|_| Problem::BadKey)?;
    Ok((key, value, properties))
}

/// The key of one trimmed member, if it has a token key before its `=` (whatever follows).
pub(crate) fn member_key(raw: &[u8]) -> Option<&str> {
    let end = raw.iter().position(|&b| b == b'=' || b == b';')?;
    let key = trim_ows(&raw[..end]);
    if raw[end] != b'=' || !is_token(key) {
        return None;
    }
    // Every token byte is ASCII.
    std::str::from_utf8(key).ok()
}

/// Checks one trimmed member against the W3C grammar only — a token key, `=`, a value of
/// baggage-octets, well-formed properties — and returns its key. Nothing is decoded: `%zz` or
/// `%FF` are valid grammar, and what a value decodes to is its receiver's business.
pub(crate) fn check_member(raw: &[u8]) -> Result<&str, Problem> {
    let (pair, properties) = match raw.iter().position(|&b| b == b';') {
        Some(semi) => (&raw[..semi], &raw[semi + 1..]),
        None => (raw, &[][..]),
    };
    let eq = pair
        .iter()
        .position(|&b| b == b'=')
        .ok_or(Problem::NoEquals)?;
    let key = trim_ows(&pair[..eq]);
    if !is_token(key) {
        return Err(Problem::BadKey);
    }
    let value = trim_ows(&pair[eq + 1..]);
    if let Some(&byte) = value.iter().find(|&&b| !is_value_byte(b)) {
        return Err(Problem::BadValueByte { byte });
    }
    if !properties_ok(properties) {
        return Err(Problem::BadProperty);
    }
    // Every token byte is ASCII.
    std::str::from_utf8(key).map_err(|_| Problem::BadKey)
}

/// Whether `properties` (what follows a member's first `;`) are each `key` or `key=value`
/// (OWS around both and `=`; a token key; a value of baggage-octets), as W3C writes them: a
/// strict reader may refuse the whole header for one that is not (the W3C grammar has no
/// other form), so such a member is not passed on. Empty ones (`k=v;`, `;;`) are tolerated,
/// like empty members.
pub(crate) fn properties_ok(properties: &[u8]) -> bool {
    properties.split(|&b| b == b';').all(|property| {
        let property = trim_ows(property);
        let (key, value) = match property.iter().position(|&b| b == b'=') {
            Some(eq) => (trim_ows(&property[..eq]), trim_ows(&property[eq + 1..])),
            None => (property, &[][..]),
        };
        property.is_empty() || (is_token(key) && value.iter().all(|&b| is_value_byte(b)))
    })
}

/// Percent-decodes a value, checking it is made of baggage-octets and decodes to UTF-8.
fn decode(raw: &[u8]) -> Result<String, Problem> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if !is_value_byte(b) {
            return Err(Problem::BadValueByte { byte: b });
        }
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let hex = |j: usize| raw.get(j).and_then(|&h| (h as char).to_digit(16));
        match (hex(i + 1), hex(i + 2)) {
            (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
            _ => return Err(Problem::BadPercent),
        }
        i += 3;
    }
    String::from_utf8(out).map_err(|_| Problem::NotUtf8)
}

/// Whether `b` must be percent-encoded in a value: it is not a baggage-octet, or it is `%`, or
/// `=` (allowed by W3C, but some readers — `opentelemetry_sdk`'s — split a member on every
/// `=`; `%3D` reads the same everywhere).
pub(crate) fn needs_encoding(b: u8) -> bool {
    !is_value_byte(b) || b == b'%' || b == b'='
}

/// Appends `value` percent-encoded (see [`needs_encoding`]).
pub(crate) fn encode_value(value: &str, out: &mut String) {
    for &b in value.as_bytes() {
        if !needs_encoding(b) {
            out.push(b as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Appends `metadata` (OpenTelemetry's text of a member's properties, `;`-separated, values
/// decoded) as W3C properties: `;key` or `;key=value` with the value percent-encoded, so that
/// no `,` or `=` in it can make a member of its own and no control character reaches the
/// header. A property whose key is not a token cannot be written as one: it is left out
/// (returns how many were).
#[cfg(feature = "opentelemetry")]
pub(crate) fn encode_properties(metadata: &str, out: &mut String) -> usize {
    let mut dropped = 0;
    for property in metadata.split(';') {
        let property = trim_ows_str(property);
        if property.is_empty() {
            continue;
        }
        let (key, value) = match property.find('=') {
            Some(eq) => (
                trim_ows_str(&property[..eq]),
                Some(trim_ows_str(&property[eq + 1..])),
            ),
            None => (property, None),
        };
        if !is_token(key.as_bytes()) {
            dropped += 1;
            continue;
        }
        out.push(';');
        out.push_str(key);
        if let Some(value) = value {
            out.push('=');
            encode_value(value, out);
        }
    }
    dropped
}

/// The properties of a received member (as sent, after the first `;`) as OpenTelemetry
/// metadata: `key` or `key=value` joined by `;`, values percent-decoded (as
/// `opentelemetry_sdk` does). A property whose key is not a token or whose value is not
/// well-formed (bytes, percent-encoding, UTF-8) is left out, the others kept.
#[cfg(feature = "opentelemetry")]
pub(crate) fn decode_properties(raw: &str) -> String {
    let mut out = String::new();
    for property in raw.split(';') {
        let property = trim_ows(property.as_bytes());
        if property.is_empty() {
            continue;
        }
        let (key, value) = match property.iter().position(|&b| b == b'=') {
            Some(eq) => (
                trim_ows(&property[..eq]),
                Some(trim_ows(&property[eq + 1..])),
            ),
            None => (property, None),
        };
        let value = match value.map(decode) {
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => continue,
            None => None,
        };
        // A token is ASCII, so it is UTF-8.
        let Some(key) = std::str::from_utf8(key)
            .ok()
            .filter(|k| is_token(k.as_bytes()))
        else {
            continue;
        };
        if !out.is_empty() {
            out.push(';');
        }
        out.push_str(key);
        if let Some(value) = value {
            out.push('=');
            out.push_str(&value);
        }
    }
    out
}

#[cfg(feature = "opentelemetry")]
fn trim_ows_str(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// A header being written: members joined by `,`, within the W3C limits.
pub(crate) struct Header {
    pub(crate) out: String,
    members: usize,
    pub(crate) dropped: usize,
}

impl Header {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Header {
            out: String::with_capacity(capacity),
            members: 0,
            dropped: 0,
        }
    }

    /// Appends one member (written by `write`, which says whether there is one) within the
    /// W3C limits; counts it as dropped otherwise.
    pub(crate) fn push(&mut self, write: impl FnOnce(&mut String) -> bool) {
        let mark = self.out.len();
        if mark > 0 {
            self.out.push(',');
        }
        if !write(&mut self.out) {
            self.out.truncate(mark);
        } else if self.members >= MAX_MEMBERS || self.out.len() > MAX_BYTES {
            self.out.truncate(mark);
            self.dropped += 1;
        } else {
            self.members += 1;
        }
    }
}

/// A value to encode, in `Display` form, percent-encoded as it is written.
pub(crate) struct Encoding<'a>(pub(crate) &'a mut String);

impl fmt::Write for Encoding<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        encode_value(s, self.0);
        Ok(())
    }
}
