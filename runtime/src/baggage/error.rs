//! What is wrong with an extracted baggage header.

use std::fmt;

use super::limits::{MAX_BYTES, MAX_MEMBERS};
use crate::{AccessError, AccessErrorKind};

/// One problem found while extracting baggage: a malformed or over-limit member, or a value
/// that its local could not parse. The other members still apply.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use context_local::{baggage::Propagator, Local};
///
/// static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
/// static SHARD: Local<u32> = Local::named("SHARD").baggage("shard");
///
/// let propagator = Propagator::new().with(&TENANT).with(&SHARD);
/// let headers = HashMap::from([("baggage".to_string(), "tenant=acme,shard=x,=oops".to_string())]);
/// let extracted = propagator.extract(&headers);
/// assert_eq!(extracted.errors().len(), 2); // `shard` is not a u32; `=oops` has no key
/// assert_eq!(extracted.snapshot().run(|| TENANT.get()).as_deref(), Some("acme"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BaggageError {
    member: String,
    problem: Problem,
}

/// Why a member was not applied.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum Problem {
    NoEquals,
    BadKey,
    BadValueByte {
        byte: u8,
    },
    BadPercent,
    /// A property (after `;`) that is neither `key` nor `key=value` (token key, value of
    /// baggage-octets): reported when such a member is not passed on.
    BadProperty,
    NotUtf8,
    OverLimit {
        dropped: usize,
    },
    Parse {
        key: String,
        local: &'static str,
        message: String,
    },
    /// `inject` could not read the local (e.g. it is inside the local's `with_mut`).
    Unreadable {
        key: String,
        local: &'static str,
        error: AccessError,
    },
    /// A struct carried per field came with some of its members but not this one.
    Missing {
        key: String,
        local: &'static str,
    },
}

impl BaggageError {
    pub(crate) fn new(member: String, problem: Problem) -> Self {
        Self { member, problem }
    }

    /// The member as the header showed it (lossy UTF-8, cut at 64 characters); empty when the
    /// error is about the header as a whole.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use context_local::baggage::Propagator;
    ///
    /// let headers = HashMap::from([("baggage".to_string(), "novalue".to_string())]);
    /// let extracted = Propagator::new().extract(&headers);
    /// assert_eq!(extracted.errors()[0].member(), "novalue");
    /// ```
    pub fn member(&self) -> &str {
        &self.member
    }

    /// The baggage key of the value the problem is about, if it is about one: its local could
    /// not parse it, [`inject`](super::Propagator::inject) could not read it, or it is missing
    /// for a struct carried per field.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use context_local::{baggage::Propagator, Local};
    ///
    /// static SHARD: Local<u32> = Local::named("SHARD").baggage("shard");
    ///
    /// let headers = HashMap::from([("baggage".to_string(), "shard=many".to_string())]);
    /// let extracted = Propagator::new().with(&SHARD).extract(&headers);
    /// assert_eq!(extracted.errors()[0].key(), Some("shard"));
    /// ```
    pub fn key(&self) -> Option<&str> {
        match &self.problem {
            Problem::Parse { key, .. }
            | Problem::Unreadable { key, .. }
            | Problem::Missing { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The name of the context local the problem is about, if it is about one: a value that
    /// did not parse, a value [`inject`](super::Propagator::inject) could not read, a member
    /// missing for a struct carried per field.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use context_local::{baggage::Propagator, Local};
    ///
    /// static SHARD: Local<u32> = Local::named("SHARD").baggage("shard");
    /// let propagator = Propagator::new().with(&SHARD);
    ///
    /// let headers = HashMap::from([("baggage".to_string(), "shard=many".to_string())]);
    /// assert_eq!(propagator.extract(&headers).errors()[0].local(), Some("SHARD"));
    ///
    /// // `inject` cannot read a value that is being changed.
    /// SHARD.set(1);
    /// let mut headers = HashMap::new();
    /// let err = SHARD.with_mut(|_| propagator.inject(&mut headers)).unwrap_err();
    /// assert_eq!(err.local(), Some("SHARD"));
    /// ```
    pub fn local(&self) -> Option<&'static str> {
        match &self.problem {
            Problem::Parse { local, .. }
            | Problem::Unreadable { local, .. }
            | Problem::Missing { local, .. } => Some(local),
            _ => None,
        }
    }
}

impl fmt::Display for BaggageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.member;
        match &self.problem {
            Problem::NoEquals => write!(f, "baggage member `{m}` has no `=`"),
            Problem::BadKey => write!(f, "baggage member `{m}` has an empty or invalid key"),
            Problem::BadProperty => write!(
                f,
                "baggage member `{m}` has a property that is neither `key` nor `key=value` (a token key, a value of baggage-octets)"
            ),
            Problem::BadValueByte { byte } => write!(
                f,
                "baggage member `{m}`: byte 0x{byte:02X} is not allowed in a value (percent-encode it)"
            ),
            Problem::BadPercent => write!(f, "baggage member `{m}`: `%` is not followed by two hex digits"),
            Problem::NotUtf8 => write!(f, "baggage member `{m}`: the decoded value is not UTF-8"),
            Problem::OverLimit { dropped } => write!(
                f,
                "baggage over the W3C limits ({} members, {} bytes): {dropped} members dropped",
                MAX_MEMBERS,
                MAX_BYTES
            ),
            Problem::Parse { key, local, message } => write!(
                f,
                "baggage `{key}` for context local `{local}`: {message}"
            ),
            Problem::Unreadable { key, local, error } => {
                write!(f, "baggage `{key}` not injected: {error}")?;
                if error.kind() == AccessErrorKind::BorrowedMut {
                    write!(
                        f,
                        " (`inject` was called inside `{local}`'s `with_mut`: inject after it returns)"
                    )?;
                }
                Ok(())
            }
            Problem::Missing { key, local } => write!(
                f,
                "baggage `{key}` for context local `{local}` is missing while other members of it came: `{local}` was not restored"
            ),
        }
    }
}

impl std::error::Error for BaggageError {}
