//! Tokio tasks that start in a child context (feature `tokio`).
//!
//! `tokio::spawn` starts a task with nothing of its parent's: tokio's own task-locals are not
//! inherited (tokio #2396, #6659). These start the child in a child context
//! ([`Context::child`](crate::Context::child)), captured at the call: it sees the caller's
//! inheritable locals and stacks as they are then, and its own writes stay its own. With
//! feature `tracing`, the child also runs inside the caller's current `tracing` span.
//!
//! A task spawned with plain `tokio::spawn` (or served without `tower::ContextLayer`) runs in
//! its worker thread's own context, which every such task on that worker shares. Declare
//! request values explicit-only ([`Local::explicit_only`](crate::Local::explicit_only),
//! `#[context_local(explicit_only)]`) and a `set` there panics at once, naming the local and
//! the fix; for the others,
//! [`thread::bound_in_own_context`](crate::thread::bound_in_own_context) in `on_thread_park`
//! finds a value left on a worker:
//!
//! ```
//! use context_local::{thread, FutureExt, Local};
//!
//! static REQUEST_ID: Local<u64> = Local::named("REQUEST_ID"); // not explicit-only
//!
//! let rt = tokio::runtime::Builder::new_multi_thread()
//!     .worker_threads(1)
//!     .on_thread_park(|| {
//!         let left = thread::bound_in_own_context();
//!         // In a service: `debug_assert!(left.is_empty(), ...)` or a metric.
//!         if !left.is_empty() {
//!             eprintln!("request values left on a worker thread: {left:?}");
//!         }
//!     })
//!     .build()
//!     .unwrap();
//! rt.block_on(async {
//!     // Right: a context of its own; nothing is left on the worker.
//!     tokio::spawn(async { REQUEST_ID.set(1) }.in_new_context()).await.unwrap();
//!     // Wrong: set in the worker's own context; the park hook reports `["REQUEST_ID"]`.
//!     tokio::spawn(async { REQUEST_ID.set(2) }).await.unwrap();
//! });
//! ```

use std::future::Future;

use tokio::task::JoinHandle;

use crate::span::CurrentSpan;
use crate::{FutureExt, Snapshot};

/// [`tokio::spawn`], with the task running in a child of the caller's context.
///
/// # Panics
///
/// As [`tokio::spawn`] (outside a runtime), and as [`Snapshot::capture`].
///
/// # Examples
///
/// ```
/// use context_local::Local;
///
/// static REQUEST_ID: Local<u64> = Local::named("REQUEST_ID").inheritable();
///
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// rt.block_on(async {
///     REQUEST_ID.set(7);
///     let child = context_local::tokio::spawn(async { REQUEST_ID.get() });
///     REQUEST_ID.set(8); // after the spawn: the child keeps 7
///     assert_eq!(child.await.unwrap(), Some(7));
/// });
/// ```
#[track_caller]
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    // Feature `tracing`: the task also runs inside the caller's current span.
    #[cfg(feature = "tracing")]
    let future = tracing::Instrument::in_current_span(future);
    tokio::spawn(future.in_child_context())
}

/// [`tokio::task::spawn_blocking`], with `f` running in a child of the caller's context.
///
/// # Panics
///
/// As [`tokio::task::spawn_blocking`], and as [`Snapshot::capture`].
///
/// # Examples
///
/// ```
/// use context_local::Local;
///
/// static TENANT: Local<&str> = Local::named("TENANT").inheritable();
///
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// rt.block_on(async {
///     TENANT.set("acme");
///     let seen = context_local::tokio::spawn_blocking(|| TENANT.get()).await.unwrap();
///     assert_eq!(seen, Some("acme"));
/// });
/// ```
#[track_caller]
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    tokio::task::spawn_blocking(Snapshot::capture().wrap(CurrentSpan::capture().wrap(f)))
}
