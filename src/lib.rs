//! Werkzeug's context locals — `Local`, `LocalStack`, `LocalProxy`, `LocalManager` — for Rust:
//! per-context values that are sound, leak-free and as fast as a hand-rolled `thread_local!`.
//!
//! A *context* is what Werkzeug's `ident` names: by default every OS thread is one, and a
//! program can create explicit [`Context`]s and enter them (a scheduler, a test harness, an
//! async executor). A [`Local`] holds one value per context, a [`LocalStack`] a stack per
//! context, a [`LocalProxy`] forwards to either, and a [`LocalManager`] releases a set of them
//! at the end of a request.
//!
//! | Werkzeug / Flask | context-local |
//! |---|---|
//! | `Local()`, `local.x = v`, `local.x` | [`Local::set`], [`Local::with`] / [`Local::get`] |
//! | `release_local(local)` | [`Local::release`] |
//! | `LocalStack().push/pop/top` | [`LocalStack::push`], [`LocalStack::pop`], [`LocalStack::top`] |
//! | `LocalProxy(local, "name")` | [`Local::proxy`]`().`[`map`](LocalProxy::map)`(..)` |
//! | `LocalManager([...]).cleanup()` | [`LocalManager::cleanup`] |
//! | `make_middleware` | [`LocalManager::scope`] |
//! | `__ident_func__` (greenlets) | [`Context::new`] + [`Context::run`] |
//!
//! Two macros declare them in one line: [`#[context_local]`](macro@context_local) makes a
//! struct a per-context value with static accessors (`Request::set`, `Request::with`, ...), and
//! [`context_stack!`] declares named per-context stacks.
//!
//! # Example
//!
//! ```
//! use context_local::{Local, LocalManager, LocalProxy, LocalStack};
//!
//! static USER: Local<String> = Local::named("USER");
//! static REQUESTS: LocalStack<u64> = LocalStack::named("REQUESTS");
//! static REQUEST_ID: LocalProxy<u64> = REQUESTS.proxy();
//!
//! fn handler() -> String {
//!     format!("request {} for {}", REQUEST_ID, USER.with(|u| u.clone()))
//! }
//!
//! let manager = LocalManager::new([&USER as _, &REQUESTS as _]);
//! let reply = manager.scope(|| {
//!     USER.set("ada".into());
//!     REQUESTS.push(42);
//!     handler()
//! });
//! assert_eq!(reply, "request 42 for ada");
//! assert!(!USER.is_set() && REQUESTS.is_empty());
//! ```

#![deny(missing_docs)]

pub use context_local_runtime::{
    live_contexts, uses_asymmetric_fence, AccessError, AccessErrorKind, CleanupGuard, Context,
    ContextGuard, ContextId, ContextLocal, EnterError, Local, LocalManager, LocalProxy, LocalStack,
    Release, StackGuard,
};

pub use context_local_macros::{context_local, context_stack};

/// Items used by the code the macros generate. Not public API: no stability guarantees.
#[doc(hidden)]
pub mod __private {
    pub use context_local_runtime::*;
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
