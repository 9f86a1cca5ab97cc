//! The W3C Baggage header: parsing (hostile input) and encoding.
//!
//! `baggage: key1=value1;property,key2=value2` — list members separated by `,`, each a token
//! key, `=`, and a percent-encoded value made of baggage-octets, optionally followed by
//! `;`-separated properties (tolerated and ignored here). At most [`MAX_MEMBERS`] members and
//! [`MAX_BYTES`] bytes are read; what lies beyond is reported, never read.

use std::fmt::{self, Write as _};

use super::error::{BaggageError, Problem};

/// W3C Baggage: members a header may carry.
pub const MAX_MEMBERS: usize = 64;
/// W3C Baggage: bytes a header may have (all `baggage` headers together).
pub const MAX_BYTES: usize = 8192;

/// A `tchar` of RFC 9110: what a key is made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A baggage-octet: printable ASCII but space, `"`, `,`, `;` and `\`.
fn is_value_byte(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// Optional whitespace (space and tab) off both ends.
fn trim_ows(mut s: &[u8]) -> &[u8] {
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
fn parse_member(raw: &[u8]) -> Result<(&str, String, &str), Problem> {
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

/// The key of a raw member of an existing header (for merging), if it has one.
pub(crate) fn raw_key(raw: &str) -> Option<&str> {
    let eq = raw.find('=')?;
    Some(raw[..eq].trim_matches([' ', '\t']))
}

/// A value to encode, in `Display` form, percent-encoded as it is written.
pub(crate) struct Encoding<'a>(pub(crate) &'a mut String);

impl fmt::Write for Encoding<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        encode_value(s, self.0);
        Ok(())
    }
}
