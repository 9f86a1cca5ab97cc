//! `Propagator`: chosen locals into a `baggage` header, and back into a `Snapshot`.

use std::fmt;

use super::carrier::{Extractor, Injector};
use super::codec::{self, MAX_BYTES, MAX_MEMBERS};
use super::error::{BaggageError, Problem};
use super::value::{encode_into, BaggageValue};
use crate::context::inherit::{Frame, Frozen};
use crate::error::fail;
use crate::{Local, Snapshot};

/// The header name.
pub const HEADER: &str = "baggage";

/// Decodes a value's text into (local index, local serial, frozen value) for a snapshot.
type ExtractFn = dyn Fn(&str) -> Result<(usize, u64, Frozen), String> + Send + Sync;

/// One local the propagator carries, type-erased.
struct Carried {
    key: &'static str,
    name: &'static str,
    /// Appends the current value, percent-encoded; `false` if the local is unbound here.
    inject: Box<dyn Fn(&mut String) -> bool + Send + Sync>,
    /// The value for a snapshot, from its decoded text: (local index, local serial, value).
    extract: Box<ExtractFn>,
}

/// Carries chosen context locals to other services as W3C Baggage (the `baggage` header), and
/// restores them there into a [`Snapshot`] for the request to fork.
///
/// List the locals with [`with`](Self::with); each was declared with its baggage key
/// ([`Local::baggage`], `#[context_local(baggage = "key")]`). [`inject`](Self::inject) writes
/// their current values into an outgoing request's headers; [`extract`](Self::extract) reads
/// an incoming request's headers, treating them as hostile: the W3C limits (64 members, 8192
/// bytes), percent-decoding, properties tolerated, unknown keys ignored, malformed members and
/// values that do not parse reported while the valid ones still apply, never a panic. With
/// feature `opentelemetry` it is also an OpenTelemetry `TextMapPropagator`.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use context_local::{baggage::Propagator, Local};
///
/// static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
/// static REQUEST_ID: Local<u64> = Local::named("REQUEST_ID").baggage("request-id");
///
/// let propagator = Propagator::new().with(&TENANT).with(&REQUEST_ID);
///
/// // Service A, calling service B:
/// TENANT.set("acme corp".into());
/// REQUEST_ID.set(7);
/// let mut headers = HashMap::new();
/// propagator.inject(&mut headers).unwrap();
/// assert_eq!(headers["baggage"], "tenant=acme%20corp,request-id=7");
///
/// // Service B, handling it: the same locals, restored for this request.
/// let extracted = propagator.extract(&headers);
/// assert!(extracted.errors().is_empty());
/// let seen = extracted.snapshot().run(|| (TENANT.get(), REQUEST_ID.get()));
/// assert_eq!(seen, (Some("acme corp".to_string()), Some(7)));
/// ```
#[derive(Default)]
pub struct Propagator {
    carried: Vec<Carried>,
}

impl Propagator {
    /// A propagator that carries nothing yet.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::baggage::Propagator;
    /// assert_eq!(Propagator::new().keys().count(), 0);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Also carries `local`, under the key it was declared with.
    ///
    /// # Panics
    ///
    /// If `local` has no baggage key, or another carried local has the same key; the message
    /// names the local.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{baggage::Propagator, Local};
    ///
    /// static USER: Local<String> = Local::named("USER").baggage("user");
    /// let propagator = Propagator::new().with(&USER);
    /// assert_eq!(propagator.keys().collect::<Vec<_>>(), ["user"]);
    /// ```
    #[track_caller]
    pub fn with<T>(mut self, local: &'static Local<T>) -> Self
    where
        T: BaggageValue + Clone + Send + Sync + 'static,
    {
        let Some(key) = local.baggage_key() else {
            fail(format_args!(
                "context local `{}` has no baggage key: declare it with `.baggage(\"key\")`",
                local.name()
            ));
        };
        if let Some(other) = self.carried.iter().find(|c| c.key == key) {
            fail(format_args!(
                "context locals `{}` and `{}` both use the baggage key `{key}`",
                other.name,
                local.name()
            ));
        }
        self.carried.push(Carried {
            key,
            name: local.name(),
            inject: Box::new(move |out| local.try_with(|v| encode_into(v, out)).is_ok()),
            extract: Box::new(move |text| {
                let value = T::decode(text)?;
                let (index, serial) = local.storage_key();
                Ok((index, serial, std::sync::Arc::new(Some(value)) as Frozen))
            }),
        });
        self
    }

    /// The baggage keys carried, in the order given.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::baggage::Propagator;
    /// assert!(Propagator::new().keys().next().is_none());
    /// ```
    pub fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.carried.iter().map(|c| c.key)
    }

    /// Writes the current values of the carried locals into `carrier`'s `baggage` header.
    /// Members of an existing header with other keys are kept (so this composes with other
    /// baggage); unbound locals are left out.
    ///
    /// # Errors
    ///
    /// When the header would exceed the W3C limits (64 members, 8192 bytes): the members that
    /// fit are written, the error says how many were left out.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use context_local::{baggage::Propagator, Local};
    ///
    /// static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
    ///
    /// let mut headers = HashMap::from([("baggage".to_string(), "other=1".to_string())]);
    /// TENANT.set("a,b".into());
    /// Propagator::new().with(&TENANT).inject(&mut headers).unwrap();
    /// assert_eq!(headers["baggage"], "other=1,tenant=a%2Cb");
    /// ```
    pub fn inject(&self, carrier: &mut impl Injector) -> Result<(), BaggageError> {
        let existing = carrier.get_all(HEADER);
        let had_header = !existing.is_empty();
        // Members of other parties are kept as sent; a member that is not even text is
        // malformed, and is not passed on.
        let others: Vec<&str> = existing
            .iter()
            .flat_map(|value| value.split(|&b| b == b','))
            .filter_map(|m| std::str::from_utf8(m).ok())
            .map(|m| m.trim_matches([' ', '\t']))
            .filter(|m| !m.is_empty() && !codec::raw_key(m).is_some_and(|k| self.carries(k)))
            .collect();
        let (out, dropped) = self.header_after(others);
        if !out.is_empty() {
            carrier.set(HEADER, out);
        } else if had_header {
            // Only stale members of ours were there: none may survive as current.
            carrier.remove(HEADER);
        }
        if dropped > 0 {
            return Err(BaggageError::new(
                String::new(),
                Problem::OverLimit { dropped },
            ));
        }
        Ok(())
    }

    /// Reads `carrier`'s `baggage` headers into a [`Snapshot`] holding the carried locals'
    /// values, for the request to fork ([`Snapshot::fork`], [`Snapshot::run`], or
    /// `fut.in_context(snapshot.fork())`), and the problems found on the way.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use context_local::{baggage::Propagator, Local};
    ///
    /// static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
    ///
    /// let headers = HashMap::from([("baggage".to_string(), "tenant=acme;ttl=5, unknown=1".to_string())]);
    /// let extracted = Propagator::new().with(&TENANT).extract(&headers);
    /// assert!(extracted.errors().is_empty()); // the property and the unknown key are fine
    /// assert_eq!(extracted.snapshot().run(|| TENANT.get()).as_deref(), Some("acme"));
    /// ```
    pub fn extract(&self, carrier: &impl Extractor) -> Extracted {
        self.extract_headers(carrier.get_all(HEADER))
    }

    /// Like [`extract`](Self::extract), from the raw values of the `baggage` header.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{baggage::Propagator, Local};
    ///
    /// static SHARD: Local<u16> = Local::named("SHARD").baggage("shard");
    ///
    /// let extracted = Propagator::new().with(&SHARD).extract_headers([b"shard=3".as_slice()]);
    /// assert_eq!(extracted.snapshot().run(|| SHARD.get()), Some(3));
    /// ```
    pub fn extract_headers<'h>(&self, headers: impl IntoIterator<Item = &'h [u8]>) -> Extracted {
        self.extract_with(headers, |_, _, _| {})
    }

    /// Extraction, handing the members with keys it does not carry to `other`.
    pub(crate) fn extract_with<'h>(
        &self,
        headers: impl IntoIterator<Item = &'h [u8]>,
        mut other: impl FnMut(&str, String, &str),
    ) -> Extracted {
        let mut frame = Frame::default();
        let mut errors = Vec::new();
        let mut found = Vec::new();
        codec::parse(
            headers,
            |key, value, properties| match self.carried.iter().find(|c| c.key == key) {
                Some(c) => found.push((c, value)),
                None => other(key, value, properties),
            },
            &mut errors,
        );
        for (c, value) in found {
            match (c.extract)(&value) {
                Ok((index, serial, frozen)) => frame.put(index, serial, frozen),
                Err(message) => errors.push(BaggageError::new(
                    codec::shown(format!("{}={value}", c.key).as_bytes()),
                    Problem::Parse {
                        key: c.key.to_string(),
                        local: c.name,
                        message,
                    },
                )),
            }
        }
        Extracted {
            snapshot: Snapshot::from_frame(frame),
            errors,
        }
    }
}

impl Propagator {
    /// Whether `key` is one of the carried keys.
    pub(crate) fn carries(&self, key: &str) -> bool {
        self.carried.iter().any(|c| c.key == key)
    }

    /// The header value for the current values of the carried locals, after `others` (members
    /// already encoded), within the W3C limits; and how many members did not fit.
    pub(crate) fn header_after<'a>(
        &self,
        others: impl IntoIterator<Item = &'a str>,
    ) -> (String, usize) {
        // Room for typical members up front: one allocation for the whole header.
        let mut out = String::with_capacity(64 * (self.carried.len() + 1));
        let mut members = 0;
        let mut dropped = 0;
        for raw in others {
            push_member(&mut out, &mut members, &mut dropped, |out| {
                out.push_str(raw);
                true
            });
        }
        for c in &self.carried {
            push_member(&mut out, &mut members, &mut dropped, |out| {
                out.push_str(c.key);
                out.push('=');
                (c.inject)(out)
            });
        }
        (out, dropped)
    }
}

/// Appends one member (written by `write`, which says whether there is one) within the W3C
/// limits; counts it as dropped otherwise.
fn push_member(
    out: &mut String,
    members: &mut usize,
    dropped: &mut usize,
    write: impl FnOnce(&mut String) -> bool,
) {
    let mark = out.len();
    if mark > 0 {
        out.push(',');
    }
    if !write(out) {
        out.truncate(mark);
    } else if *members >= MAX_MEMBERS || out.len() > MAX_BYTES {
        out.truncate(mark);
        *dropped += 1;
    } else {
        *members += 1;
    }
}

impl fmt::Debug for Propagator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Propagator")
            .field("keys", &self.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What [`Propagator::extract`] found: a [`Snapshot`] with every valid carried value, and the
/// problems with the rest.
///
/// # Examples
///
/// ```
/// use context_local::baggage::Propagator;
///
/// let extracted = Propagator::new().extract_headers([b"a=1,broken".as_slice()]);
/// assert!(extracted.snapshot().is_empty());
/// assert_eq!(extracted.errors().len(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct Extracted {
    snapshot: Snapshot,
    errors: Vec<BaggageError>,
}

impl Extracted {
    /// The carried values that were valid.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::baggage::Propagator;
    /// assert!(Propagator::new().extract_headers([]).snapshot().is_empty());
    /// ```
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The snapshot, owned.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::baggage::Propagator;
    /// let snapshot = Propagator::new().extract_headers([]).into_snapshot();
    /// assert!(snapshot.is_empty());
    /// ```
    pub fn into_snapshot(self) -> Snapshot {
        self.snapshot
    }

    /// What was wrong with the other members (empty when all was well).
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::baggage::Propagator;
    /// let extracted = Propagator::new().extract_headers([b"k=%zz".as_slice()]);
    /// assert!(extracted.errors()[0].to_string().contains("hex"));
    /// ```
    pub fn errors(&self) -> &[BaggageError] {
        &self.errors
    }
}
