//! `ContextId`: what names a context.

use std::fmt;

/// Identifies a context: by default each thread is one; [`Context::new`](crate::Context::new) makes explicit ones.
///
/// Ids are small and dense and may be reused once a context is gone, but a context never sees
/// another context's values, whatever its id.
///
/// # Examples
///
/// ```
/// use context_local::{Context, ContextId};
///
/// let here = ContextId::current();
/// let other = std::thread::spawn(ContextId::current).join().unwrap();
/// assert_ne!(here, other); // both are alive at the same time, so they differ
///
/// let ctx = Context::new();
/// assert_eq!(ctx.run(ContextId::current), ctx.id());
/// assert_eq!(ContextId::current(), here);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContextId(pub(crate) u32);

impl ContextId {
    /// The id as a number (dense, small, reused after the context is gone).
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::ContextId;
    /// let n: u32 = ContextId::current().as_u32();
    /// # let _ = n;
    /// ```
    pub const fn as_u32(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContextId({})", self.0)
    }
}

impl fmt::Display for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}
