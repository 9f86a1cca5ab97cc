//! One local a propagator carries: its keys and how its value is written and read, without
//! the value's type, made in `const` so that a propagator can be a `static`.

use std::sync::Arc;

use super::codec::Header;
use super::fields::BaggageFields;
use super::value::{encode_into, BaggageValue};
use crate::context::table::Frozen;
use crate::{AccessError, AccessErrorKind, Local};

/// One context local a [`Propagator`](super::Propagator) carries, with its baggage keys: made
/// by [`Local::carried`] (a local declared with [`Local::baggage`]) or
/// [`Local::carried_fields`] (a struct whose fields travel as members of their own), both
/// `const`, for [`Propagator::of`](super::Propagator::of).
///
/// # Examples
///
/// ```
/// use context_local::baggage::{Carried, Propagator};
/// use context_local::Local;
///
/// static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
/// static CARRIED: Carried = TENANT.carried();
/// assert_eq!(CARRIED.keys(), ["tenant"]);
/// assert_eq!(CARRIED.name(), "TENANT");
///
/// // In a `static` (the list must live for ever):
/// static PROPAGATOR: Propagator = Propagator::of(&[TENANT.carried()]);
/// assert_eq!(PROPAGATOR.keys().collect::<Vec<_>>(), ["tenant"]);
/// ```
#[derive(Clone, Copy)]
pub struct Carried {
    pub(crate) keys: &'static [&'static str],
    pub(crate) ops: Ops,
}

/// How the value is reached: one member, or one member per field.
#[derive(Clone, Copy)]
pub(crate) enum Ops {
    Value(&'static dyn ValueOps),
    Fields(&'static dyn FieldsOps),
}

/// Why a carried value could not be restored: per key index, a message, or `None` when the
/// member is missing.
pub(crate) type Rejected = Vec<(usize, Option<String>)>;

/// A value for a snapshot: (local index, local serial, frozen value).
pub(crate) type Restored = (usize, u64, Frozen);

pub(crate) trait ValueOps: Sync {
    fn name(&self) -> &'static str;
    fn inject(&self, key: &str, header: &mut Header) -> Result<(), AccessError>;
    fn extract(&self, text: &str) -> Result<Restored, String>;
}

pub(crate) trait FieldsOps: Sync {
    fn name(&self) -> &'static str;
    fn inject(&self, keys: &[&str], header: &mut Header) -> Result<(), AccessError>;
    fn extract(&self, texts: &[&str]) -> Result<Restored, Rejected>;
}

/// Unbound (also: the thread's context is gone) means nothing to send; anything else (a
/// borrow) means the value exists and could not be read, which the caller must hear about.
fn nothing_bound_is_ok(result: Result<(), AccessError>) -> Result<(), AccessError> {
    match result {
        Err(e)
            if matches!(
                e.kind(),
                AccessErrorKind::Unbound | AccessErrorKind::Destroyed
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

impl<T: BaggageValue + Clone + Send + Sync + 'static> ValueOps for Local<T> {
    fn name(&self) -> &'static str {
        Local::name(self)
    }

    fn inject(&self, key: &str, header: &mut Header) -> Result<(), AccessError> {
        nothing_bound_is_ok(self.try_with(|v| {
            header.push(|out| {
                out.push_str(key);
                out.push('=');
                encode_into(v, out);
                true
            });
        }))
    }

    fn extract(&self, text: &str) -> Result<Restored, String> {
        let value = T::decode(text)?;
        let (index, serial) = self.storage_key();
        Ok((index, serial, Arc::new(Some(value)) as Frozen))
    }
}

impl<T: BaggageFields + Clone + Send + Sync + 'static> FieldsOps for Local<T> {
    fn name(&self) -> &'static str {
        Local::name(self)
    }

    fn inject(&self, keys: &[&str], header: &mut Header) -> Result<(), AccessError> {
        nothing_bound_is_ok(self.try_with(|v| {
            for (index, key) in keys.iter().enumerate() {
                header.push(|out| {
                    out.push_str(key);
                    out.push('=');
                    encode_into(&Field(v, index), out);
                    true
                });
            }
        }))
    }

    fn extract(&self, texts: &[&str]) -> Result<Restored, Rejected> {
        let value = T::decode_fields(texts).map_err(|errors| {
            errors
                .into_iter()
                .map(|(i, m)| (i, Some(m)))
                .collect::<Rejected>()
        })?;
        let (index, serial) = self.storage_key();
        Ok((index, serial, Arc::new(Some(value)) as Frozen))
    }
}

/// One field of a value, as a `BaggageValue` (for `encode_into`'s in-place encoding).
struct Field<'a, T>(&'a T, usize);

impl<T: BaggageFields> BaggageValue for Field<'_, T> {
    fn encode(&self, out: &mut String) {
        self.0.encode_field(self.1, out);
    }

    fn decode(_: &str) -> Result<Self, String> {
        Err("a field alone is never decoded".to_string())
    }
}

impl Carried {
    /// The name of the local (for messages).
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::Local;
    /// static N: Local<u8> = Local::named("N").baggage("n");
    /// assert_eq!(N.carried().name(), "N");
    /// ```
    pub fn name(&self) -> &'static str {
        match self.ops {
            Ops::Value(ops) => ops.name(),
            Ops::Fields(ops) => ops.name(),
        }
    }

    /// The baggage keys the local travels under: one, or one per carried field.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::Local;
    /// static N: Local<u8> = Local::named("N").baggage("n");
    /// assert_eq!(N.carried().keys(), ["n"]);
    /// ```
    pub const fn keys(&self) -> &'static [&'static str] {
        self.keys
    }

    /// Whether the value travels as one member per field.
    pub(crate) fn per_field(&self) -> bool {
        matches!(self.ops, Ops::Fields(_))
    }

    /// Writes the current value's members.
    pub(crate) fn inject(&self, header: &mut Header) -> Result<(), AccessError> {
        match self.ops {
            Ops::Value(ops) => ops.inject(self.keys[0], header),
            Ops::Fields(ops) => ops.inject(self.keys, header),
        }
    }

    /// The value from the texts of its members (`None`: missing), at least one present.
    pub(crate) fn extract(&self, texts: &[Option<&str>]) -> Result<Restored, Rejected> {
        let missing: Rejected = texts
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_none())
            .map(|(i, _)| (i, None))
            .collect();
        if !missing.is_empty() {
            return Err(missing);
        }
        let texts: Vec<&str> = texts.iter().flatten().copied().collect();
        match self.ops {
            Ops::Value(ops) => ops.extract(texts[0]).map_err(|m| vec![(0, Some(m))]),
            Ops::Fields(ops) => ops.extract(&texts),
        }
    }
}

impl std::fmt::Debug for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Carried")
            .field("name", &self.name())
            .field("keys", &self.keys)
            .finish()
    }
}

/// Whether `key` is an HTTP token (RFC 9110), in `const`.
pub(crate) const fn is_token(key: &str) -> bool {
    let bytes = key.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let token = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        if !token {
            return false;
        }
        i += 1;
    }
    true
}

/// `a == b`, in `const`.
pub(crate) const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether two of `keys` are the same, in `const`.
pub(crate) const fn has_duplicate(keys: &[&str]) -> bool {
    let mut i = 0;
    while i < keys.len() {
        let mut j = i + 1;
        while j < keys.len() {
            if same(keys[i], keys[j]) {
                return true;
            }
            j += 1;
        }
        i += 1;
    }
    false
}

impl<T: BaggageValue + Clone + Send + Sync + 'static> Local<T> {
    /// This local, for a [`Propagator`](super::Propagator) built in `const`
    /// ([`Propagator::of`](super::Propagator::of)): a `static` propagator needs no `LazyLock`.
    ///
    /// # Panics
    ///
    /// If the local has no baggage key ([`baggage`](Self::baggage)) — at compile time in a
    /// `static`.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{baggage::Propagator, Local};
    ///
    /// static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
    /// static SHARD: Local<u32> = Local::named("SHARD").baggage("shard");
    /// static PROPAGATOR: Propagator = Propagator::of(&[TENANT.carried(), SHARD.carried()]);
    ///
    /// assert_eq!(PROPAGATOR.keys().collect::<Vec<_>>(), ["tenant", "shard"]);
    /// ```
    pub const fn carried(&'static self) -> Carried {
        let keys = match &self.baggage {
            Some(key) => std::slice::from_ref(key),
            None => panic!(
                "a carried context local needs a baggage key: declare it with `.baggage(\"key\")`"
            ),
        };
        Carried {
            keys,
            ops: Ops::Value(self),
        }
    }
}

impl<T: BaggageFields + Clone + Send + Sync + 'static> Local<T> {
    /// This local, whose value's fields travel as members of their own
    /// ([`BaggageFields`]), for [`Propagator::of`](super::Propagator::of) (in `const`) or
    /// [`Propagator::with_fields`](super::Propagator::with_fields).
    ///
    /// # Panics
    ///
    /// If the local is not [`inheritable`](Self::inheritable) (the extracted value must reach
    /// the request's forks), or the keys of `T` are not all different HTTP tokens — at
    /// compile time in a `static`.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::baggage::{BaggageFields, BaggageValue, Propagator};
    /// use context_local::Local;
    ///
    /// #[derive(Clone)]
    /// struct Request { tenant: String, user: String }
    ///
    /// impl BaggageFields for Request {
    ///     const KEYS: &'static [&'static str] = &["tenant"];
    ///     fn encode_field(&self, _: usize, out: &mut String) {
    ///         self.tenant.encode(out)
    ///     }
    ///     fn decode_fields(texts: &[&str]) -> Result<Self, Vec<(usize, String)>> {
    ///         Ok(Request { tenant: texts[0].to_string(), user: String::new() })
    ///     }
    /// }
    ///
    /// static REQUEST: Local<Request> = Local::named("REQUEST").inheritable();
    /// static PROPAGATOR: Propagator = Propagator::of(&[REQUEST.carried_fields()]);
    /// assert_eq!(PROPAGATOR.keys().collect::<Vec<_>>(), ["tenant"]);
    /// ```
    pub const fn carried_fields(&'static self) -> Carried {
        assert!(
            self.is_inheritable(),
            "a context local carried per field must be inheritable: declare it with `.inheritable()`"
        );
        let keys = T::KEYS;
        let mut i = 0;
        while i < keys.len() {
            assert!(
                is_token(keys[i]),
                "a baggage key must be an HTTP token: letters, digits and !#$%&'*+-.^_`|~"
            );
            i += 1;
        }
        assert!(!has_duplicate(keys), "two fields use the same baggage key");
        Carried {
            keys,
            ops: Ops::Fields(self),
        }
    }
}

// Here rather than in `local.rs`, so that `local` does not depend on `baggage`.
impl<T: BaggageValue + Clone + Send + Sync + 'static> Local<T> {
    /// Makes this local travel to other services as W3C Baggage under `key`, with a
    /// [`baggage::Propagator`](crate::baggage::Propagator) that lists it; it is also
    /// [`inheritable`](Self::inheritable) (an extracted value reaches the request's children).
    ///
    /// # Panics
    ///
    /// If `key` is not an HTTP token (letters, digits and ``!#$%&'*+-.^_`|~``) — at compile time
    /// when the local is a `static`.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{baggage::Propagator, Local};
    ///
    /// static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
    /// assert_eq!(TENANT.baggage_key(), Some("tenant"));
    /// let propagator = Propagator::new().with(&TENANT);
    /// # let _ = propagator;
    /// ```
    pub const fn baggage(self, key: &'static str) -> Self {
        assert!(!key.is_empty(), "a baggage key must not be empty");
        assert!(
            is_token(key),
            "a baggage key must be an HTTP token: letters, digits and !#$%&'*+-.^_`|~"
        );
        let mut this = self.inheritable();
        this.baggage = Some(key);
        this
    }
}
