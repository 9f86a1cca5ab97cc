//! `Propagator`: chosen locals into a `baggage` header, and back into a `Snapshot`.

use std::fmt;

use super::carried::Carried;
use super::carrier::{Extractor, Injector};
use super::codec::{self, Header};
use super::error::{BaggageError, Problem};
use super::fields::BaggageFields;
use super::value::BaggageValue;
use crate::context::frame::Frame;
use crate::error::fail;
use crate::{Local, Snapshot};

/// The header name.
pub const HEADER: &str = "baggage";

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
/// A struct can also send chosen fields as members of their own
/// ([`with_fields`](Self::with_fields)), and a propagator can be built in `const`, for a
/// `static` without `LazyLock` ([`of`](Self::of)). Cloning one is cheap (the list of carried
/// locals: none of their values).
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
#[derive(Clone)]
pub struct Propagator {
    carried: List,
}

/// The carried locals: a `const` list ([`Propagator::of`]) until one is added at run time.
#[derive(Clone)]
enum List {
    Static(&'static [Carried]),
    Owned(Vec<Carried>),
}

impl Default for Propagator {
    fn default() -> Self {
        Self::new()
    }
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
    pub const fn new() -> Self {
        Self {
            carried: List::Owned(Vec::new()),
        }
    }

    /// A propagator carrying `carried` ([`Local::carried`], [`Local::carried_fields`]), made
    /// in `const`: usable as a `static` without `LazyLock`. (In a `static` the list itself
    /// lives for ever; at run time, build with [`with`](Self::with) instead.)
    ///
    /// # Panics
    ///
    /// If two of the locals use the same baggage key — at compile time in a `static`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use context_local::{baggage::Propagator, Local};
    ///
    /// static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
    /// static REQUEST_ID: Local<u64> = Local::named("REQUEST_ID").baggage("request-id");
    /// static PROPAGATOR: Propagator = Propagator::of(&[TENANT.carried(), REQUEST_ID.carried()]);
    ///
    /// TENANT.set("acme".into());
    /// REQUEST_ID.set(3);
    /// let mut headers = HashMap::new();
    /// PROPAGATOR.inject(&mut headers).unwrap();
    /// assert_eq!(headers["baggage"], "tenant=acme,request-id=3");
    /// ```
    ///
    /// Two locals under one key do not compile:
    ///
    /// ```compile_fail
    /// use context_local::{baggage::Propagator, Local};
    ///
    /// static A: Local<String> = Local::named("A").baggage("tenant");
    /// static B: Local<String> = Local::named("B").baggage("tenant");
    /// static PROPAGATOR: Propagator = Propagator::of(&[A.carried(), B.carried()]);
    /// ```
    pub const fn of(carried: &'static [Carried]) -> Self {
        let mut i = 0;
        while i < carried.len() {
            let mut j = i + 1;
            while j < carried.len() {
                assert!(
                    !shares_a_key(&carried[i], &carried[j]),
                    "two carried context locals use the same baggage key"
                );
                j += 1;
            }
            i += 1;
        }
        Self {
            carried: List::Static(carried),
        }
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
    pub fn with<T>(self, local: &'static Local<T>) -> Self
    where
        T: BaggageValue + Clone + Send + Sync + 'static,
    {
        if local.baggage_key().is_none() {
            fail(format_args!(
                "context local `{}` has no baggage key: declare it with `.baggage(\"key\")`",
                local.name()
            ));
        }
        self.add(local.carried())
    }

    /// Also carries `local`, a struct whose chosen fields travel as members of their own
    /// ([`BaggageFields`]; `#[baggage = "key"]` on the fields of a `#[context_local]` struct):
    /// `tenant=acme,request-id=r-3`, readable by services in any language. The receiving side
    /// restores the struct when every one of its members came and parsed (the fields that do
    /// not travel get what the struct's `decode_fields` gives them: `Default::default()` for
    /// `#[context_local]`); when only some came, each missing one is reported and the struct
    /// is not restored.
    ///
    /// # Panics
    ///
    /// If `local` is not inheritable, its keys are not all different HTTP tokens, or another
    /// carried local uses one of them; the message names the locals.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use context_local::baggage::{BaggageFields, BaggageValue, Propagator};
    /// use context_local::Local;
    ///
    /// // What `#[context_local]` generates for `#[baggage = "key"]` on the fields.
    /// #[derive(Clone, Debug, PartialEq)]
    /// struct Request { tenant: String, id: u64, user: Option<String> }
    ///
    /// impl BaggageFields for Request {
    ///     const KEYS: &'static [&'static str] = &["tenant", "request-id"];
    ///     fn encode_field(&self, index: usize, out: &mut String) {
    ///         if index == 0 { self.tenant.encode(out) } else { self.id.encode(out) }
    ///     }
    ///     fn decode_fields(texts: &[&str]) -> Result<Self, Vec<(usize, String)>> {
    ///         let tenant = String::decode(texts[0]).map_err(|e| vec![(0, e)])?;
    ///         let id = u64::decode(texts[1]).map_err(|e| vec![(1, e)])?;
    ///         Ok(Request { tenant, id, user: None })
    ///     }
    /// }
    ///
    /// static REQUEST: Local<Request> = Local::named("REQUEST").inheritable();
    /// let propagator = Propagator::new().with_fields(&REQUEST);
    ///
    /// REQUEST.set(Request { tenant: "acme".into(), id: 3, user: Some("ada".into()) });
    /// let mut headers = HashMap::new();
    /// propagator.inject(&mut headers).unwrap();
    /// assert_eq!(headers["baggage"], "tenant=acme,request-id=3");
    ///
    /// let extracted = propagator.extract(&headers);
    /// let restored = extracted.snapshot().run(|| REQUEST.get());
    /// assert_eq!(restored, Some(Request { tenant: "acme".into(), id: 3, user: None }));
    ///
    /// // Only some of its members: reported, not restored half-filled.
    /// let headers = HashMap::from([("baggage".to_string(), "tenant=acme".to_string())]);
    /// let extracted = propagator.extract(&headers);
    /// assert_eq!(extracted.errors()[0].key(), Some("request-id"));
    /// assert_eq!(extracted.snapshot().run(|| REQUEST.get()), None);
    /// ```
    #[track_caller]
    pub fn with_fields<T>(self, local: &'static Local<T>) -> Self
    where
        T: BaggageFields + Clone + Send + Sync + 'static,
    {
        if !local.is_inheritable() {
            fail(format_args!(
                "context local `{}` is carried per field, so it must be inheritable: declare it with `.inheritable()`",
                local.name()
            ));
        }
        if let Some(key) = T::KEYS.iter().find(|k| !codec::is_token(k.as_bytes())) {
            fail(format_args!(
                "context local `{}`: baggage key {key:?} is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~)",
                local.name()
            ));
        }
        if let Some((_, key)) = T::KEYS
            .iter()
            .enumerate()
            .find(|(i, k)| T::KEYS[..*i].contains(k))
        {
            fail(format_args!(
                "context local `{}` uses the baggage key `{key}` for two fields",
                local.name()
            ));
        }
        self.add(local.carried_fields())
    }

    /// Adds `carried`, after checking its keys against the others.
    #[track_caller]
    fn add(mut self, carried: Carried) -> Self {
        for key in carried.keys() {
            if let Some(other) = self.list().iter().find(|c| c.keys().contains(key)) {
                fail(format_args!(
                    "context locals `{}` and `{}` both use the baggage key `{key}`",
                    other.name(),
                    carried.name()
                ));
            }
        }
        match &mut self.carried {
            List::Owned(list) => list.push(carried),
            List::Static(list) => {
                let mut owned = list.to_vec();
                owned.push(carried);
                self.carried = List::Owned(owned);
            }
        }
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
        self.list().iter().flat_map(|c| c.keys().iter().copied())
    }

    /// Writes the current values of the carried locals into `carrier`'s `baggage` header.
    /// Members of an existing header with other keys are kept (so this composes with other
    /// baggage); unbound locals are left out. A `HashMap` carrier may hold the header under
    /// several spellings (`baggage`, `Baggage`): their members are kept in the byte order of
    /// the names, and one `baggage` entry is left.
    ///
    /// # Errors
    ///
    /// The first of these problems (the header is written all the same, without what the
    /// problem is about):
    /// - a carried local cannot be read here — `inject` runs inside its `with_mut` (the error
    ///   names the local: [`BaggageError::local`]); its member is left out, and so is a member
    ///   under its key from the existing header, which is not its current value;
    /// - a member of the existing header is malformed (no `=`, a key that is not a token, a
    ///   value that is not percent-encoded baggage-octets) or has a byte that may not be sent
    ///   in a header (a control character such as CR or LF, or not ASCII): it is left out —
    ///   a receiver could not read it, and it is not this service's to repair;
    /// - the header would exceed the W3C limits (64 members, 8192 bytes): the members that
    ///   fit are written, the error says how many were left out.
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
        let mut bad_member = None;
        // Members of other parties are kept as sent if a receiver can read them; one that is
        // malformed, or would break the header, is not passed on.
        let others: Vec<&str> = existing
            .iter()
            .flat_map(|value| value.split(|&b| b == b','))
            .filter_map(|m| match self.passed_on(m) {
                Ok(kept) => kept,
                Err(error) => {
                    bad_member.get_or_insert(error);
                    None
                }
            })
            .collect();
        let (out, dropped, unreadable) = self.header_after(others);
        if !out.is_empty() {
            carrier.set(HEADER, out);
        } else if had_header {
            // Only stale members of ours were there: none may survive as current.
            carrier.remove(HEADER);
        }
        if let Some(e) = unreadable.or(bad_member) {
            return Err(e);
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
        // (carried index, key index, decoded value) of the members for carried locals.
        let mut found: Vec<(usize, usize, String)> = Vec::new();
        let list = self.list();
        codec::parse(
            headers,
            |key, value, properties| match find(list, key) {
                Some((c, k)) => found.push((c, k, value)),
                None => other(key, value, properties),
            },
            &mut errors,
        );
        let mut restore = |carried: &Carried, texts: &[Option<&str>]| match carried.extract(texts) {
            Ok((index, serial, frozen)) => frame.put(index, serial, frozen),
            Err(rejected) => {
                for (k, message) in rejected {
                    let key = carried.keys()[k];
                    let (member, problem) = match message {
                        Some(message) => (
                            codec::shown(format!("{key}={}", texts[k].unwrap_or("")).as_bytes()),
                            Problem::Parse {
                                key: key.to_string(),
                                local: carried.name(),
                                message,
                            },
                        ),
                        None => (
                            String::new(),
                            Problem::Missing {
                                key: key.to_string(),
                                local: carried.name(),
                            },
                        ),
                    };
                    errors.push(BaggageError::new(member, problem));
                }
            }
        };
        // A local of one member: every member is tried in order, so the last valid one wins
        // and each invalid one is reported.
        for (c, _, value) in &found {
            if !list[*c].per_field() {
                restore(&list[*c], &[Some(value)]);
            }
        }
        // A struct carried per field: rebuilt once, from the last member of each key.
        let mut texts: Vec<Option<&str>> = Vec::new();
        for (c, carried) in list.iter().enumerate() {
            if !carried.per_field() || !found.iter().any(|f| f.0 == c) {
                continue;
            }
            texts.clear();
            texts.resize(carried.keys().len(), None);
            for (_, k, value) in found.iter().filter(|f| f.0 == c) {
                texts[*k] = Some(value);
            }
            restore(carried, &texts);
        }
        Extracted {
            snapshot: Snapshot::from_frame(frame),
            errors,
        }
    }
}

impl Propagator {
    /// The carried locals.
    fn list(&self) -> &[Carried] {
        match &self.carried {
            List::Static(list) => list,
            List::Owned(list) => list,
        }
    }

    /// What becomes of `raw`, a member of another party's header, when injecting: kept
    /// (trimmed), left out because it is empty or under a carried key (its value is stale), or
    /// an error because it does not follow the W3C grammar (a receiver cannot read it) or would
    /// break the header (a control character such as CR LF, or not ASCII). Its value is not
    /// decoded: what it decodes to is for its receiver to judge.
    fn passed_on<'m>(&self, raw: &'m [u8]) -> Result<Option<&'m str>, BaggageError> {
        let trimmed = codec::trim_ows(raw);
        // A stale member of ours is replaced whatever its value holds: not an error.
        if codec::member_key(trimmed).is_some_and(|key| self.carries(key)) {
            return Ok(None);
        }
        if let Some(byte) = codec::unsafe_byte(trimmed) {
            return Err(BaggageError::new(
                codec::shown(trimmed),
                Problem::BadValueByte { byte },
            ));
        }
        if trimmed.is_empty() {
            return Ok(None);
        }
        match codec::check_member(trimmed) {
            Err(problem) => Err(BaggageError::new(codec::shown(trimmed), problem)),
            // Printable ASCII, so it is text.
            Ok(_) => Ok(std::str::from_utf8(trimmed).ok()),
        }
    }

    /// Whether `key` is one of the carried keys.
    pub(crate) fn carries(&self, key: &str) -> bool {
        find(self.list(), key).is_some()
    }

    /// The header value for the current values of the carried locals, after `others` (members
    /// already encoded), within the W3C limits; how many members did not fit; and the first
    /// local that could not be read (it is left out).
    pub(crate) fn header_after<'a>(
        &self,
        others: impl IntoIterator<Item = &'a str>,
    ) -> (String, usize, Option<BaggageError>) {
        // Room for typical members up front: one allocation for the whole header.
        let mut header = Header::with_capacity(64 * (self.list().len() + 1));
        for raw in others {
            header.push(|out| {
                out.push_str(raw);
                true
            });
        }
        let mut unreadable = None;
        for c in self.list() {
            if let Err(error) = c.inject(&mut header) {
                unreadable.get_or_insert_with(|| {
                    BaggageError::new(
                        String::new(),
                        Problem::Unreadable {
                            key: c.keys().join(","),
                            local: c.name(),
                            error,
                        },
                    )
                });
            }
        }
        (header.out, header.dropped, unreadable)
    }
}

/// The carried local with `key` and the index of `key` among its keys.
fn find(list: &[Carried], key: &str) -> Option<(usize, usize)> {
    list.iter()
        .enumerate()
        .find_map(|(c, carried)| Some((c, carried.keys().iter().position(|k| *k == key)?)))
}

/// Whether `a` and `b` have a key in common, in `const`.
const fn shares_a_key(a: &Carried, b: &Carried) -> bool {
    let (a, b) = (a.keys(), b.keys());
    let mut i = 0;
    while i < a.len() {
        let mut j = 0;
        while j < b.len() {
            if super::carried::same(a[i], b[j]) {
                return true;
            }
            j += 1;
        }
        i += 1;
    }
    false
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

    /// With `errors` reported after its own (for the facade's OpenTelemetry extraction). Not
    /// public API.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::baggage::Propagator;
    /// let a = Propagator::new().extract_headers([b"broken".as_slice()]);
    /// let b = Propagator::new().extract_headers([b"k=%zz".as_slice()]);
    /// assert_eq!(a.__and_errors(b.errors().to_vec()).errors().len(), 2);
    /// ```
    #[doc(hidden)]
    pub fn __and_errors(mut self, errors: Vec<BaggageError>) -> Self {
        self.errors.extend(errors);
        self
    }
}
