//! What is wrong with an extracted baggage header.

use std::fmt;

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
    NotUtf8,
    OverLimit {
        dropped: usize,
    },
    Parse {
        key: String,
        local: &'static str,
        message: String,
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

    /// The baggage key whose value its local could not parse, if that is the problem.
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
            Problem::Parse { key, .. } => Some(key),
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
            Problem::BadValueByte { byte } => write!(
                f,
                "baggage member `{m}`: byte 0x{byte:02X} is not allowed in a value (percent-encode it)"
            ),
            Problem::BadPercent => write!(f, "baggage member `{m}`: `%` is not followed by two hex digits"),
            Problem::NotUtf8 => write!(f, "baggage member `{m}`: the decoded value is not UTF-8"),
            Problem::OverLimit { dropped } => write!(
                f,
                "baggage over the W3C limits ({} members, {} bytes): {dropped} members dropped",
                super::MAX_MEMBERS,
                super::MAX_BYTES
            ),
            Problem::Parse { key, local, message } => write!(
                f,
                "baggage `{key}` for context local `{local}`: {message}"
            ),
        }
    }
}

impl std::error::Error for BaggageError {}
