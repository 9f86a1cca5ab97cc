//! Where baggage is written to and read from: header maps and string maps.

use std::collections::HashMap;
use std::hash::BuildHasher;

/// Something headers can be written into: what [`Propagator::inject`](super::Propagator::inject)
/// takes. Implemented for `HashMap<String, String>` and (feature `http`) `http::HeaderMap`;
/// implement it for a message queue's metadata, a gRPC map, ...
///
/// # Examples
///
/// ```
/// use context_local::baggage::{Injector, Propagator};
/// use context_local::Local;
///
/// // A carrier of your own: a list of (name, value) pairs.
/// struct Pairs(Vec<(String, String)>);
/// impl Injector for Pairs {
///     fn get_all(&self, name: &str) -> Vec<&[u8]> {
///         self.0.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_bytes()).collect()
///     }
///     fn set(&mut self, name: &str, value: String) {
///         self.remove(name);
///         self.0.push((name.to_string(), value));
///     }
///     fn remove(&mut self, name: &str) {
///         self.0.retain(|(n, _)| n != name);
///     }
/// }
///
/// static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
/// TENANT.set("acme".into());
/// let mut pairs = Pairs(Vec::new());
/// Propagator::new().with(&TENANT).inject(&mut pairs).unwrap();
/// assert_eq!(pairs.0, [("baggage".to_string(), "tenant=acme".to_string())]);
/// ```
pub trait Injector {
    /// Every current value of header `name` (lower case), in order, so that members of other
    /// parties are kept.
    fn get_all(&self, name: &str) -> Vec<&[u8]>;
    /// Sets header `name` (lower case) to `value`, replacing every value it had.
    fn set(&mut self, name: &str, value: String);
    /// Removes header `name` (lower case).
    fn remove(&mut self, name: &str);
}

/// Something headers can be read from: what [`Propagator::extract`](super::Propagator::extract)
/// takes. Values are bytes: a network header need not be UTF-8.
///
/// # Examples
///
/// ```
/// use context_local::baggage::Extractor;
///
/// struct One(&'static [u8]);
/// impl Extractor for One {
///     fn get_all(&self, name: &str) -> Vec<&[u8]> {
///         if name == "baggage" { vec![self.0] } else { Vec::new() }
///     }
/// }
/// assert_eq!(One(b"k=v").get_all("baggage"), [b"k=v".as_slice()]);
/// ```
pub trait Extractor {
    /// Every value of header `name` (lower case), in order.
    fn get_all(&self, name: &str) -> Vec<&[u8]>;
}

/// Keys are matched ignoring ASCII case (header names are case-insensitive).
impl<S: BuildHasher> Injector for HashMap<String, String, S> {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        Extractor::get_all(self, name)
    }

    fn set(&mut self, name: &str, value: String) {
        Injector::remove(self, name);
        self.insert(name.to_string(), value);
    }

    fn remove(&mut self, name: &str) {
        self.retain(|k, _| !k.eq_ignore_ascii_case(name));
    }
}

/// Keys are matched ignoring ASCII case (header names are case-insensitive). A map holding
/// several spellings (`baggage`, `Baggage`, `BAGGAGE`) gives all their values, ordered by the
/// byte order of the keys — not the map's, which changes from map to map — as if they were
/// several headers of that name (the W3C rule). Upper-case letters sort first, so the
/// all-lower-case spelling comes last, and on a key that appears in several of them its member
/// wins (of duplicates the last one wins).
impl<S: BuildHasher> Extractor for HashMap<String, String, S> {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        let mut all: Vec<(&String, &String)> = self
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .collect();
        if all.len() > 1 {
            all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        }
        all.into_iter().map(|(_, v)| v.as_bytes()).collect()
    }
}

#[cfg(feature = "http")]
impl Injector for http::HeaderMap {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        Extractor::get_all(self, name)
    }

    fn remove(&mut self, name: &str) {
        http::HeaderMap::remove(self, name);
    }

    fn set(&mut self, name: &str, value: String) {
        // Encoded values are visible ASCII, so this cannot fail; a value that could (written by
        // another propagator) is left out rather than sent broken, and so is the old value,
        // which is not current.
        match (
            http::header::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            (Ok(name), Ok(value)) => {
                self.insert(name, value);
            }
            _ => {
                http::HeaderMap::remove(self, name);
            }
        }
    }
}

#[cfg(feature = "http")]
impl Extractor for http::HeaderMap {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        http::HeaderMap::get_all(self, name)
            .iter()
            .map(http::HeaderValue::as_bytes)
            .collect()
    }
}
