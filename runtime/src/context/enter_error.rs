//! `EnterError`: a context could not be entered.

use std::fmt;

use super::ContextId;

/// Why a [`Context`](crate::Context) could not be entered.
///
/// A context's values belong to whoever has it entered, so it may be entered by one thread, once,
/// at a time.
///
/// # Examples
///
/// ```
/// use context_local::Context;
///
/// let ctx = Context::new();
/// let _inside = ctx.enter();
/// assert!(ctx.try_enter().is_err()); // already entered (here, by this very thread)
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnterError {
    pub(crate) id: ContextId,
}

impl fmt::Display for EnterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "context {:?} is already entered", self.id)
    }
}

impl std::error::Error for EnterError {}
