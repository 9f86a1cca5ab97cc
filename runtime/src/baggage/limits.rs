//! The W3C Baggage limits: what extraction reads at most (the rest is reported, never read)
//! and what injection writes at most. Their own file because the parser and the errors that
//! report an excess both need them.

/// W3C Baggage: members a header may carry.
///
/// # Examples
///
/// ```
/// assert_eq!(context_local::baggage::MAX_MEMBERS, 64);
/// ```
pub const MAX_MEMBERS: usize = 64;

/// W3C Baggage: bytes a header may have (all `baggage` headers together).
///
/// # Examples
///
/// ```
/// assert_eq!(context_local::baggage::MAX_BYTES, 8192);
/// ```
pub const MAX_BYTES: usize = 8192;
