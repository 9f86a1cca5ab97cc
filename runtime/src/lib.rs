//! The runtime of [`context-local`](https://docs.rs/context-local): per-context storage for
//! Werkzeug-style context locals, usable on its own without the proc macros.
//!
//! - [`Local<T>`]: one value per context (Werkzeug's `Local`, Python's `threading.local`).
//! - [`LocalStack<T>`]: a stack per context, releasing the context's entry when the last element
//!   is popped; [`StackGuard`] pops exactly its own value.
//! - [`LocalProxy`]: a `Copy` handle forwarding to a local's value or a stack's top.
//! - [`LocalManager`] and [`Release`]: release many locals at the end of a request.
//! - [`Context`] and [`ContextId`]: every thread is a context; explicit contexts can be entered
//!   by schedulers, test harnesses and async executors.
//!
//! # Example
//!
//! ```
//! use context_local::{Context, Local, LocalStack};
//!
//! static USER: Local<String> = Local::named("USER");
//! static SPANS: LocalStack<&str> = LocalStack::named("SPANS");
//!
//! USER.set("main".into());
//! let task = Context::new();
//! task.run(|| {
//!     USER.set("task".into());
//!     SPANS.scope("handler", || assert_eq!(SPANS.top(), Some("handler")));
//! });
//! assert_eq!(USER.get().as_deref(), Some("main"));
//! assert_eq!(task.run(|| USER.get()).as_deref(), Some("task"));
//! ```
//!
//! # How it is stored
//!
//! Each context owns a table of slots indexed by a per-local index; the current context is a
//! pointer in a thread-local. Reading a bound local is one thread-local load, one index load and
//! two dependent loads: no lock, no hashing, no allocation. Values are dropped with their context
//! (thread exit, or [`Context`] drop) and never seen by another context, even one that reuses
//! the same [`ContextId`].

#![deny(missing_docs)]

pub mod baggage;
mod context;
mod error;
mod explicit;
mod inherit;
mod local;
#[cfg(all(test, loom))]
mod loom_tests;
mod manager;
mod proxy;
mod stack;
mod storage;
mod sync;
mod task;
mod waits;

/// The guards' `!Send` markers: public only so that the compiler's errors print their names,
/// which say what to use instead of a guard held across `.await`.
#[doc(hidden)]
pub use context::UseInContextNotAContextGuardAcrossAwait;
pub use context::{Context, ContextGuard, ContextId, EnterError};
pub use error::{AccessError, AccessErrorKind};
pub use inherit::{thread, Snapshot};
pub use local::{ContextLocal, Local};
pub use manager::{CleanupGuard, LocalManager, Release};
pub use proxy::LocalProxy;
#[doc(hidden)]
pub use stack::UseScopeFutureNotAStackGuardAcrossAwait;
pub use stack::{LocalStack, StackGuard};
pub use task::{FutureExt, InContext, LocalScope, StackScope};

/// Diagnostics for the project's own tests, benchmarks and examples. Not public API: no
/// stability guarantees.
#[doc(hidden)]
pub mod __diagnostics {
    /// Number of live contexts (threads that used a local, plus explicit contexts).
    pub fn live_contexts() -> usize {
        crate::context::live_contexts()
    }

    /// Whether this process uses the asymmetric (membarrier) fence, so that the holders' hot
    /// paths run without a hardware fence. `false` means every mutation pays a full fence.
    pub fn uses_asymmetric_fence() -> bool {
        crate::sync::is_asymmetric()
    }
}
